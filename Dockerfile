# otel-ingest: an OTLP/HTTP endpoint that appends telemetry to Delta tables.
# Builds with any Docker (no BuildKit, no `# syntax=` line): docker build -t otel-ingest .
#
# The container listens on 0.0.0.0:4318 as uid 10001 and keeps its warehouse in /data, so it
# needs a token file. Make one with the image itself (the token is printed on stderr, only its
# SHA-256 goes into the file), then run:
#   docker run --rm otel-ingest tokens new claude-team 'main.telemetry.claude_*' > tokens.toml
#   docker run -d --name otel-ingest -p 4318:4318 -v otel-data:/data \
#       -v "$PWD/tokens.toml:/etc/otel-ingest/tokens.toml:ro" -e OTEL_INGEST_TOKENS=/etc/otel-ingest/tokens.toml \
#       -e OTEL_INGEST_CREATE_TABLES=main.telemetry.claude otel-ingest
# Without a token file, on a trusted network only:
#   docker run -d -p 127.0.0.1:4318:4318 -v otel-data:/data otel-ingest --insecure-no-auth
# A bind-mounted /data must be writable by uid 10001 (chown -R 10001 /srv/otel-data), and the
# token file readable by it. Every setting is an OTEL_INGEST_* variable or a flag after the
# image name (README.md). Stop with `docker stop -t 40` so the last commit can finish.
# The Python dependencies are pinned with hashes in requirements/image.txt (README "Container"
# says how to refresh it); pyproject.toml keeps ranges.

# Stage 1: a virtual environment holding the pinned dependencies and the project.
FROM python:3.11-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_ROOT_USER_ACTION=ignore
# A C compiler builds the native decoder (docs/decoder.md); the runtime stage has none.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/otel-ingest
WORKDIR /src
COPY requirements/image.txt requirements/image.txt
RUN /opt/otel-ingest/bin/pip install --require-hashes --no-deps -r requirements/image.txt
COPY pyproject.toml README.md hatch_build.py ./
COPY schemas/ schemas/
COPY otel_ingest/ otel_ingest/
# hatchling comes pinned from the lock, so the build needs no unpinned download.
RUN /opt/otel-ingest/bin/pip install --no-deps --no-build-isolation --no-index . \
    && /opt/otel-ingest/bin/pip uninstall --yes hatchling pathspec pluggy trove-classifiers packaging \
    && /opt/otel-ingest/bin/pip check

# Stage 2: the runtime: the environment only (no build tools, no sources).
FROM python:3.11-slim
ENV PATH=/opt/otel-ingest/bin:$PATH PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN groupadd --system --gid 10001 otel \
    && useradd --system --uid 10001 --gid otel --home-dir /data --no-create-home --shell /usr/sbin/nologin otel \
    && mkdir -p /data \
    && chown otel:otel /data
COPY --from=builder /opt/otel-ingest /opt/otel-ingest
COPY deploy/docker-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
USER 10001:10001
WORKDIR /data
# OTEL_INGEST_IN_CONTAINER only changes messages: they name variables and host folders.
ENV OTEL_INGEST_HOST=0.0.0.0 OTEL_INGEST_WAREHOUSE=/data/warehouse OTEL_INGEST_IN_CONTAINER=1
VOLUME /data
EXPOSE 4318
# SIGTERM (docker stop) commits what was accepted before exiting; give it time: docker stop -t 40.
STOPSIGNAL SIGTERM
# Healthy ~5 s after start; failures in the first 20 s do not count. (--start-interval would
# need Docker Engine 25+, so it is not used.)
HEALTHCHECK --interval=5s --timeout=3s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('OTEL_INGEST_PORT', '4318'), timeout=2)"]
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["serve"]
