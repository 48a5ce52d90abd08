"""An S3 endpoint for tests: moto's server, made atomic, with a request log.

``start_s3(folder)`` runs it in its own process on a free loopback port and returns an
``S3Server`` (endpoint, environment, storage options, the log of requests it served).
Tests that need faults put their own proxy in front of ``S3Server.endpoint``.

Why serialized: delta-rs commits on S3 with a conditional PUT (``If-None-Match: *`` on
``_delta_log/<version>.json``); exactly one of two writers racing for a version must win.
moto 5.2.5 checks "does the key exist" and then writes it without a lock, and its server
handles requests in threads, so under load two writers occasionally both "won" the same
version and one commit's rows vanished (once in ~2,400 races). Real S3 does this check
atomically. Running every request under one lock restores that guarantee, so a test on
this server passes or fails because of the code under test, not by chance.

Run as a script (``python tests/s3_server.py --port P --log FILE``) it serves until killed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs

import httpx

BUCKET = "otel-warehouse"
_HERE = Path(__file__).resolve().parent


class Serialized:
    """WSGI middleware: one request at a time, each logged as a JSON line after it is served.

    The log says what the store did: method, path, query, status and, for listings, how many
    keys the answer held, so tests can count the requests a commit makes."""

    def __init__(self, app: Callable[..., Iterable[bytes]], log: Path) -> None:
        self.app = app
        self.lock = threading.Lock()
        self.log = log.open("a", buffering=1)

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        captured: dict[str, Any] = {}

        def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Callable[[bytes], Any]:
            captured["status"], captured["headers"] = status, headers
            return lambda data: None

        with self.lock:
            # The whole answer is produced under the lock: moto writes the object while its
            # handler runs, so no other request sees the store half-way through.
            body = b"".join(self.app(environ, capture))
            query = parse_qs(environ.get("QUERY_STRING", ""))
            entry = {
                "method": environ["REQUEST_METHOD"],
                "path": environ.get("PATH_INFO", ""),
                "list": "list-type" in query,
                "prefix": query.get("prefix", [""])[0],
                "start_after": query.get("start-after", [""])[0],
                "status": int(captured["status"].split()[0]),
                "keys": body.count(b"<Key>") if "list-type" in query else 0,
            }
            self.log.write(json.dumps(entry) + "\n")
        start_response(captured["status"], captured["headers"])
        return [body]


def serve(port: int, log: Path) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, MotoRequestHandler, create_backend_app
    from werkzeug.serving import make_server

    app = Serialized(DomainDispatcherApplication(create_backend_app), log)
    server = make_server("127.0.0.1", port, app, threaded=True, request_handler=MotoRequestHandler)
    server.serve_forever()


@dataclass
class S3Server:
    """A running serialized moto S3 server with one bucket, ``BUCKET``."""

    endpoint: str
    log_path: Path
    process: subprocess.Popen[bytes]
    bucket: str = BUCKET
    _offset: int = field(default=0, repr=False)

    @property
    def env(self) -> dict[str, str]:
        """Environment variables that point AWS clients (and otel-ingest) at this server."""
        return {
            "AWS_ENDPOINT_URL": self.endpoint,
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_REGION": "us-east-1",
            "AWS_ALLOW_HTTP": "true",
        }

    def storage_options(self, endpoint: str | None = None) -> dict[str, str]:
        """delta-rs/polars storage options for this server (or a proxy at ``endpoint``)."""
        return {
            "aws_endpoint_url": endpoint or self.endpoint,
            "aws_access_key_id": "test",
            "aws_secret_access_key": "test",
            "aws_region": "us-east-1",
            "aws_allow_http": "true",
        }

    def requests(self) -> list[dict[str, Any]]:
        """Requests served since the last call (each a dict, see ``Serialized``)."""
        with self.log_path.open() as log:
            log.seek(self._offset)
            lines = log.readlines()
            self._offset = log.tell()
        return [json.loads(line) for line in lines if line.endswith("\n")]

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3(folder: Path, port: int | None = None) -> S3Server:
    """Start the server in its own process and create ``BUCKET``; ``folder`` holds its log."""
    from support import free_port

    port = port or free_port()
    log_path = folder / f"s3-{port}.log"
    log_path.touch()
    with (folder / f"s3-{port}.err").open("wb") as errors:
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--port", str(port), "--log", str(log_path)],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env={**os.environ, "PYTHONPATH": str(_HERE)},
        )
    server = S3Server(f"http://127.0.0.1:{port}", log_path, process)
    deadline = time.monotonic() + 30
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"the S3 server exited with {process.returncode}")
        try:
            # moto does not check signatures: an unsigned PUT creates the bucket.
            if httpx.put(f"{server.endpoint}/{BUCKET}", timeout=5).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise RuntimeError("the S3 server did not start in 30 s")
        time.sleep(0.1)
    server.requests()  # start counting after the bucket exists
    return server


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--log", type=Path, required=True)
    options = parser.parse_args()
    serve(options.port, options.log)
