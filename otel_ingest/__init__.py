"""otel-ingest: a self-hosted OTLP/HTTP endpoint that appends telemetry to Delta tables.

Data flows one way: HTTP (app) → wire (decode) → flatten (Arrow) → writer → Delta.
"""

__version__ = "0.1.0"
