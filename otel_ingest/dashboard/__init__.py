"""``otel-ingest dashboard``: a web page and the JSON API behind it over the usage model
(otel_ingest.usage), served by its own process so that queries never slow ingestion."""
