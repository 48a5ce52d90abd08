from otel_ingest.cli import main

raise SystemExit(main())
