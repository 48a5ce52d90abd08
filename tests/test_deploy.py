"""deploy/: the nginx configuration in front of three replicas (run for real with Debian's
nginx), and the Kubernetes example (validated against the Kubernetes schemas offline)."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import socket
import subprocess
import time
import tomllib
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import kubernetes_validate
import pytest
import yaml
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord

from otel_ingest.config import OPTIONS
from support import Server, free_port, read_table, table_path

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"
NGINX_CONF = DEPLOY / "nginx" / "otel-ingest.conf"
TABLES = [f"main.scale.team{i}_otel_logs" for i in range(6)]
DEFAULT_TABLE = "main.scale.fallback_otel_logs"  # for requests without the table header
REQUESTS_PER_TABLE = 12
RECORDS_PER_REQUEST = 20
PROTOBUF = {"content-type": "application/x-protobuf"}


@pytest.fixture
def nginx_binary() -> str:
    found = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
    if found is None:
        pytest.skip("nginx is not installed (.ci/run installs Debian's nginx: apt-get install -y nginx)")
    return found


def _logs_request(tag: str) -> bytes:
    """A logs export whose record bodies are unique (tag/n), so duplicates and losses show up."""
    request = ExportLogsServiceRequest()
    records = request.resource_logs.add().scope_logs.add().log_records
    for n in range(RECORDS_PER_REQUEST):
        records.append(
            LogRecord(time_unix_nano=1_700_000_000_000_000_000 + n, body=AnyValue(string_value=f"{tag}/{n}"))
        )
    return request.SerializeToString()


def _render(template: str, replicas: list[Server], port: int) -> str:
    """deploy/nginx/otel-ingest.conf with the example replicas and port replaced by loopback ones."""
    servers = re.findall(r"^\s*server \S+:4318", template, re.MULTILINE)
    assert len(servers) == len(replicas), servers
    for line, replica in zip(servers, replicas, strict=True):
        template = template.replace(line, f"    server 127.0.0.1:{replica.port}", 1)
    assert template.count("listen 4318;") == 1
    return template.replace("listen 4318;", f"listen 127.0.0.1:{port};")


class Nginx:
    """nginx in the foreground with everything (pid, logs, temp files) under one folder."""

    def __init__(self, binary: str, folder: Path, site: str, port: int) -> None:
        folder.mkdir()
        self.port = port
        (folder / "otel-ingest.conf").write_text(site)
        temp = "\n".join(
            f"  {kind}_temp_path {folder}/{kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
        )
        (folder / "nginx.conf").write_text(
            f"""daemon off;
worker_processes 1;
pid {folder}/nginx.pid;
error_log {folder}/error.log info;
{"user root;" if os.geteuid() == 0 else ""}
events {{ worker_connections 512; }}
http {{
  access_log {folder}/access.log;
{temp}
  include {folder}/otel-ingest.conf;
}}
"""
        )
        self.error_log = folder / "error.log"
        with (folder / "stderr.log").open("wb") as stderr:
            self.process = subprocess.Popen(
                [binary, "-p", str(folder), "-c", str(folder / "nginx.conf"), "-e", str(self.error_log)],
                stdout=subprocess.DEVNULL,
                stderr=stderr,
            )
        self.folder = folder

    def wait_ready(self, url: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"nginx exited with {self.process.returncode}: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    pass
                if httpx.get(f"{url}/healthz", timeout=5).status_code == 200:
                    return
            except (OSError, httpx.HTTPError):
                pass
            time.sleep(0.05)
        raise RuntimeError(f"nginx did not answer in {timeout} s: {self.log()}")

    def log(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.folder.glob("*.log"))

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


@pytest.fixture
def replicas(tmp_path: Path) -> Iterator[list[Server]]:
    """Three replicas sharing one local warehouse; the first creates the tables at start-up."""
    warehouse = tmp_path / "warehouse"
    prefixes = ",".join(name.removesuffix("_otel_logs") for name in [*TABLES, DEFAULT_TABLE])
    common = ["--default-logs-table", DEFAULT_TABLE, "--maintenance-interval", "0"]
    started: list[Server] = []
    try:
        started.append(Server(warehouse, *common, "--create-tables", prefixes))
        started += [Server(warehouse, *common) for _ in range(2)]
        yield started
    finally:
        for server in started:
            server.stop()


def _metric(text: str, name: str) -> dict[str, float]:
    """{table: value} of one Prometheus counter in a /metrics answer."""
    values: dict[str, float] = {}
    for table, value in re.findall(rf'^{name}\{{table="([^"]+)"\}} (\S+)$', text, re.MULTILINE):
        values[table] = float(value)
    return values


def _writers(warehouse: Path, name: str) -> set[str]:
    """The Delta application ids (one per writing process) that committed to a table."""
    ids = set()
    for commit in (table_path(warehouse, name) / "_delta_log").glob("*.json"):
        for line in commit.read_text().splitlines():
            action = json.loads(line)
            if "txn" in action:
                ids.add(action["txn"]["appId"])
    return ids


def test_nginx_sends_each_table_to_one_replica(tmp_path: Path, nginx_binary: str, replicas: list[Server]) -> None:
    """deploy/nginx/otel-ingest.conf before three replicas sharing one warehouse: every row
    lands exactly once, each table is committed by one replica only, and no commit is retried."""
    port = free_port()
    nginx = Nginx(nginx_binary, tmp_path / "nginx", _render(NGINX_CONF.read_text(), replicas, port), port)
    url = f"http://127.0.0.1:{port}"
    try:
        nginx.wait_ready(url)
        jobs = [(table, f"{table}/{r}") for table in TABLES for r in range(REQUESTS_PER_TABLE)]
        jobs += [(None, f"{DEFAULT_TABLE}/{r}") for r in range(REQUESTS_PER_TABLE)]
        # Interleave tables so that every replica has concurrent work.
        jobs.sort(key=lambda job: (int(job[1].rsplit("/", 1)[1]), job[1]))

        def send(job: tuple[str | None, str]) -> int:
            table, tag = job
            headers = {**PROTOBUF, **({"x-databricks-uc-table-name": table} if table else {})}
            body = _logs_request(tag)
            # Every third request is chunked, as Claude Code and Codex send them.
            content: bytes | Iterator[bytes] = iter([body[:100], body[100:]]) if hash(tag) % 3 == 0 else body
            with httpx.Client(base_url=url, timeout=120) as client:
                return client.post("/api/2.0/otel/v1/logs", content=content, headers=headers).status_code

        began = time.monotonic()
        with ThreadPoolExecutor(max_workers=12) as pool:
            statuses = Counter(pool.map(send, jobs))
        print(f"{len(jobs)} requests through nginx in {time.monotonic() - began:.1f} s")
        problems = [line for line in nginx.log().splitlines() if "[info]" not in line and "[notice]" not in line]
        assert statuses == Counter({200: len(jobs)}), (statuses, problems[-20:])
    finally:
        nginx.stop()

    warehouse = replicas[0].warehouse
    for name in [*TABLES, DEFAULT_TABLE]:
        bodies = read_table(warehouse, name).get_column("body").to_list()
        expected = [f"{name}/{r}/{n}" for r in range(REQUESTS_PER_TABLE) for n in range(RECORDS_PER_REQUEST)]
        assert sorted(bodies) == sorted(expected), name  # no loss, no duplicate
        assert len(_writers(warehouse, name)) == 1, f"{name} was committed by more than one process"

    # Each replica's own count: a table's rows were all written by one replica, and no
    # replica ever retried a commit (a lost race for the Delta log would be retried).
    writers: dict[str, list[tuple[int, float]]] = {name: [] for name in [*TABLES, DEFAULT_TABLE]}
    retries = 0.0
    for index, replica in enumerate(replicas):
        text = replica.ops.get("/metrics").text
        for name, rows in _metric(text, "otel_ingest_rows_written_total").items():
            writers[name].append((index, rows))
        retries += sum(_metric(text, "otel_ingest_commit_retries_total").values())
    expected_rows = float(REQUESTS_PER_TABLE * RECORDS_PER_REQUEST)
    assert all(len(w) == 1 and w[0][1] == expected_rows for w in writers.values()), writers
    assert retries == 0
    print(f"tables per replica: {dict(Counter(w[0][0] for w in writers.values()))}")


# --- Kubernetes example -------------------------------------------------------------------------

K8S = DEPLOY / "k8s"
CRD_KINDS = {"HTTPRoute", "BackendTrafficPolicy"}  # not in the Kubernetes schemas; checked by hand below


def _manifests() -> dict[str, dict[str, Any]]:
    """Every object in deploy/k8s, by kind (each kind appears once)."""
    objects: dict[str, dict[str, Any]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            assert document["kind"] not in objects, document["kind"]
            objects[document["kind"]] = document
    return objects


def test_kubernetes_objects_match_the_api_schemas() -> None:
    """Strict validation against the Kubernetes OpenAPI schemas shipped in kubernetes-validate
    (offline); no cluster here, so the manifests are marked "not run" in their comments."""
    version = kubernetes_validate.latest_version()
    objects = _manifests()
    assert set(objects) == {"Secret", "Deployment", "Service", "Ingress", "CronJob", *CRD_KINDS}
    for kind, document in objects.items():
        if kind not in CRD_KINDS:
            kubernetes_validate.validate(document, version, strict=True)
    # The validator is live: a misspelt field fails.
    broken = copy.deepcopy(objects["Deployment"])
    broken["spec"]["template"]["spec"]["containers"][0]["readinesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, version, strict=True)


def test_kubernetes_example_routes_each_table_to_one_pod() -> None:
    objects = _manifests()
    pod = objects["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "ops"}
    assert {"name": "ops", "containerPort": 9318, "protocol": "TCP"} in container["ports"]
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"][0]["containerPort"] == 4318
    assert pod["terminationGracePeriodSeconds"] > 30  # the server drains for up to 30 s
    # Every OTEL_INGEST_* variable is a real setting, and the token file is where it is mounted.
    known = {option.env for option in OPTIONS}
    assert env["OTEL_INGEST_OPS_HOST"] == "0.0.0.0"  # the kubelet probes /readyz from outside the pod
    assert {name for name in env if name.startswith("OTEL_INGEST_")} <= known
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert Path(env["OTEL_INGEST_TOKENS"]).parent == Path(mounts["tokens"])
    tokens = tomllib.loads(objects["Secret"]["stringData"][Path(env["OTEL_INGEST_TOKENS"]).name])
    assert tokens["principals"] and all("token" not in p for p in tokens["principals"])
    assert env["OTEL_INGEST_MAINTENANCE_INTERVAL"] == "0"  # the CronJob maintains

    service = objects["Service"]
    assert service["spec"]["selector"] == objects["Deployment"]["spec"]["selector"]["matchLabels"]
    ingress = objects["Ingress"]
    assert ingress["metadata"]["annotations"]["nginx.ingress.kubernetes.io/upstream-hash-by"] == (
        "$http_x_databricks_uc_table_name"
    )
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend["name"] == service["metadata"]["name"]
    route = objects["HTTPRoute"]
    assert route["spec"]["rules"][0]["backendRefs"][0] == {"name": service["metadata"]["name"], "port": 4318}
    policy = objects["BackendTrafficPolicy"]["spec"]
    assert policy["targetRefs"][0]["name"] == route["metadata"]["name"]
    assert policy["loadBalancer"]["type"] == "ConsistentHash"
    assert policy["loadBalancer"]["consistentHash"] == {
        "type": "Header",
        "header": {"name": "X-Databricks-UC-Table-Name"},
    }

    job = objects["CronJob"]["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    (maintainer,) = job["containers"]
    assert job["securityContext"]["runAsUser"] == 10001
    assert maintainer["image"] == container["image"]
    job_env = {item["name"]: item.get("value") for item in maintainer["env"]}
    assert job_env["OTEL_INGEST_WAREHOUSE"] == env["OTEL_INGEST_WAREHOUSE"]
    prefixes = env["OTEL_INGEST_CREATE_TABLES"].split(",")
    script = " ".join(maintainer["args"])
    assert all(f"otel-ingest maintain {prefix}" in script for prefix in prefixes)
