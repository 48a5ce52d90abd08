#!/bin/sh
# The image's entry point: `docker run IMAGE [ARGS]`.
#   no arguments, or flags first (--insecure-no-auth)  ->  otel-ingest serve ARGS
#   an otel-ingest command (tokens new ..., maintain ...) ->  otel-ingest ARGS
#   a program on PATH (otel-ingest ..., sh, python ...)  ->  that program
set -e
if [ "$#" -eq 0 ] || [ "${1#-}" != "$1" ]; then
    set -- otel-ingest serve "$@"
elif ! command -v "$1" >/dev/null 2>&1; then
    set -- otel-ingest "$@"
fi
exec "$@"
