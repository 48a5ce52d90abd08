# syntax=docker/dockerfile:1
# otel-ingest: an OTLP/HTTP endpoint that appends telemetry to Delta tables.
#   docker build -t otel-ingest .
#   docker run --rm -p 127.0.0.1:4318:4318 -v otel-data:/data otel-ingest
# Every setting is an OTEL_INGEST_* environment variable (see README.md).
# The container listens on 0.0.0.0, so it needs a token file (docs/security.md):
#   docker run ... -v $PWD/tokens.toml:/data/tokens.toml:ro -e OTEL_INGEST_TOKENS=/data/tokens.toml otel-ingest
# Without one it refuses to start, unless OTEL_INGEST_INSECURE_NO_AUTH=true is set.

# Stage 1: the project and all of its dependencies as wheels.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY schemas/ schemas/
COPY otel_ingest/ otel_ingest/
RUN pip wheel --wheel-dir /wheels .

# Stage 2: the runtime, with only the installed wheels (no build tools, no sources).
FROM python:3.11-slim
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels /wheels/otel_ingest-*.whl
RUN groupadd --system --gid 10001 otel \
    && useradd --system --uid 10001 --gid otel --home-dir /data --no-create-home --shell /usr/sbin/nologin otel \
    && mkdir -p /data \
    && chown otel:otel /data
USER 10001:10001
WORKDIR /data
ENV OTEL_INGEST_HOST=0.0.0.0 OTEL_INGEST_WAREHOUSE=/data/warehouse
VOLUME /data
EXPOSE 4318
# SIGTERM (docker stop) commits what was accepted before exiting; give it time: docker stop -t 40.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=30s --timeout=5s CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:4318/healthz', timeout=4)"]
CMD ["otel-ingest", "serve"]
