"""Grants and rate limits of the token file, in process (issue 10: seeded bugs that survived).

Grants are glob patterns matched with ``fnmatch`` (``*``, ``?``, ``[...]`` anywhere),
against the whole lower-cased name: a pattern that is a prefix of a longer name does
not match it. Rate-limit state survives a token-file reload for principals whose limits
did not change, and starts afresh for those whose limits did. The token file is a real
file on disk, re-read by the real ``Authenticator``.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

from otel_ingest import auth
from otel_ingest.auth import Authenticator, Principal, TokenBucket, bearer_token
from otel_ingest.errors import Forbidden, RateLimited, Unauthorized
from otel_ingest.tables import TableName

TOKEN = "a-token-of-at-least-16-chars"
OTHER = "another-token-16-chars-long"


@pytest.mark.parametrize(
    ("pattern", "table", "granted"),
    [
        ("main.telemetry.claude_*", "main.telemetry.claude_otel_logs", True),
        ("main.telemetry.claude_otel_log?", "main.telemetry.claude_otel_logs", True),
        ("main.telemetry.claude_otel_log?", "main.telemetry.claude_otel_log", False),
        ("main.telemetry.[cg]*_otel_logs", "main.telemetry.gemini_otel_logs", True),
        ("main.telemetry.[cg]*_otel_logs", "main.telemetry.codex_otel_logs", True),
        ("main.telemetry.[!c]*_otel_logs", "main.telemetry.codex_otel_logs", False),
        ("main.*.claude_otel_logs", "main.telemetry.claude_otel_logs", True),
        ("main.*.claude_otel_logs", "main.telemetry.claude_otel_spans", False),
        ("*_otel_spans", "dev.x.codex_otel_spans", True),
        # A pattern without wildcards is a whole name, not a prefix of longer names.
        ("main.telemetry.claude", "main.telemetry.claude_otel_logs", False),
        ("main.telemetry.claude_otel_logs", "main.telemetry.claude_otel_logs", True),
        ("main.telemetry.claude_otel_logs", "main.telemetry.claude_otel_logs_v2", False),
        ("main.telemetry.*", "main.telemetryx.a", False),
        ("MAIN.Telemetry.*", "main.telemetry.a", True),  # patterns are lower-cased on load
    ],
)
def test_grant_patterns_are_globs_over_the_whole_name(tmp_path: Path, pattern: str, table: str, granted: bool) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = ["{pattern}"]\n')
    authenticator = Authenticator(str(path))
    principal = authenticator.authenticate(f"Bearer {TOKEN}")
    assert principal.may_write(TableName.parse(table)) is granted
    if granted:
        authenticator.authorize(principal, TableName.parse(table))
    else:
        with pytest.raises(Forbidden, match="may not write table"):
            authenticator.authorize(principal, TableName.parse(table))


def _limits_file(path: Path, requests_per_second: float, other_rps: float = 1) -> None:
    path.write_text(
        f'[[principals]]\nname = "steady"\ntoken = "{TOKEN}"\ntables = ["*"]\n'
        f"requests_per_second = {requests_per_second}\nburst_seconds = 1\n\n"
        f'[[principals]]\nname = "changing"\ntoken = "{OTHER}"\ntables = ["*"]\n'
        f"requests_per_second = {other_rps}\nburst_seconds = 1\n"
    )


def _reload(authenticator: Authenticator, path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Load the rewritten file now, as the app's watcher task does within a second."""
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    asyncio.run(authenticator.reload())


def test_rate_limit_state_survives_a_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An unrelated edit of the token file does not hand every principal a fresh burst;
    a principal whose limit changed starts afresh under its new limit."""
    path = tmp_path / "tokens.toml"
    _limits_file(path, 0.001, other_rps=0.001)  # one request, then none for ~17 minutes
    authenticator = Authenticator(str(path))
    for token in (TOKEN, OTHER):
        principal = authenticator.authenticate(f"Bearer {token}")
        authenticator.admit(principal)
        with pytest.raises(RateLimited):
            authenticator.admit(principal)

    _limits_file(path, 0.001, other_rps=0.002)  # only "changing" gets a new limit
    _reload(authenticator, path, monkeypatch)
    steady = authenticator.authenticate(f"Bearer {TOKEN}")
    changing = authenticator.authenticate(f"Bearer {OTHER}")
    assert [p.name for p in authenticator.principals] == ["steady", "changing"]
    assert changing.requests_per_second == 0.002
    with pytest.raises(RateLimited, match="'steady' is over its requests per second limit"):
        authenticator.admit(steady)
    authenticator.admit(changing)  # a new limit: a new, full bucket


def test_byte_rate_state_survives_a_reload(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.toml"
    text = (
        f'[[principals]]\nname = "b"\ntoken = "{TOKEN}"\ntables = ["*"]\nbytes_per_second = 1000\nburst_seconds = 1\n'
    )
    path.write_text(text)
    authenticator = Authenticator(str(path))
    principal = authenticator.authenticate(f"Bearer {TOKEN}")
    authenticator.admit(principal, 1000)
    with pytest.raises(RateLimited, match="bytes per second"):
        authenticator.admit(principal, 1000)
    path.write_text(text + '\n[[principals]]\nname = "new"\ntoken = "' + OTHER + '"\ntables = ["*"]\n')
    _reload(authenticator, path, monkeypatch)
    with pytest.raises(RateLimited, match="bytes per second"):
        authenticator.admit(authenticator.authenticate(f"Bearer {TOKEN}"), 1000)
    authenticator.authenticate(f"Bearer {OTHER}")  # the new principal is in force


def test_a_broken_reload_keeps_the_principals(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tokens.toml"
    _limits_file(path, 5)
    authenticator = Authenticator(str(path))
    path.write_text("[[principals]]\nname = 'x'\n")
    _reload(authenticator, path, monkeypatch)
    assert authenticator.authenticate(f"Bearer {TOKEN}").name == "steady"
    with pytest.raises(Unauthorized):
        authenticator.authenticate("Bearer not-a-token-anyone-has")


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    assert TokenBucket(rate=1, capacity=3).wait_for(3) == 0.0  # "0: it may be taken now"
    assert TokenBucket(rate=1, capacity=3).wait_for(1) == 0.0  # 0, not "2 s ago"
    principal = Principal(name="p", token_sha256=b"", tables=("*",), requests_per_second=2, burst_seconds=1.5)
    assert principal.requests is not None and principal.requests.capacity == 3
    for _ in range(3):
        Authenticator.admit(principal)
    with pytest.raises(RateLimited) as refused:
        Authenticator.admit(principal)
    assert 0 < refused.value.retry_after <= 0.5  # one token at 2 per second


def test_a_take_larger_than_the_bucket_is_allowed_from_full_and_leaves_debt() -> None:
    principal = Principal(name="p", token_sha256=b"", tables=("*",), bytes_per_second=100, burst_seconds=1)
    Authenticator.admit(principal, 250)  # bigger than the 100-byte bucket, but it is full
    with pytest.raises(RateLimited) as refused:
        Authenticator.admit(principal, 10)
    assert refused.value.retry_after > 1.5  # 150 bytes of debt plus 10, at 100 per second


@pytest.mark.parametrize(
    ("header", "token"),
    [
        ("Bearer abc", "abc"),
        ("bearer   abc  ", "abc"),
        ("Bearer%20abc", "abc"),
        ("BEARER%20a%2Fb", "a/b"),
        ("Basic abc", None),
        ("Bearer ", None),
        ("Bearer", None),
        ("", None),
        (None, None),
    ],
)
def test_bearer_token_forms(header: str | None, token: str | None) -> None:
    assert bearer_token(header) == token


class Clock:
    """A monotonic clock the test moves by hand: token buckets without waiting."""

    def __init__(self) -> None:
        self.now = 1000.0

    def monotonic(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr(auth, "time", fake)
    return fake


def test_buckets_refill_at_their_rate_up_to_their_capacity(clock: Clock) -> None:
    principal = Principal(name="p", token_sha256=b"", tables=("*",), requests_per_second=10, burst_seconds=1)
    for _ in range(10):
        Authenticator.admit(principal)
    with pytest.raises(RateLimited) as refused:
        Authenticator.admit(principal)
    assert refused.value.retry_after == pytest.approx(0.1)
    clock.now += 0.25  # 2.5 requests' worth
    Authenticator.admit(principal)
    Authenticator.admit(principal)
    with pytest.raises(RateLimited) as refused:
        Authenticator.admit(principal)
    assert refused.value.retry_after == pytest.approx(0.05)
    clock.now += 3600  # a long pause fills the bucket, but only to its capacity
    for _ in range(10):
        Authenticator.admit(principal)
    with pytest.raises(RateLimited):
        Authenticator.admit(principal)


def test_take_refills_before_taking(clock: Clock) -> None:
    """A full bucket left alone stays full: taking from it after a pause leaves capacity - taken."""
    bucket = TokenBucket(rate=10, capacity=10)
    clock.now += 100
    bucket.take(6)
    assert bucket.wait_for(5) == pytest.approx(0.1)
    assert bucket.wait_for(4) == 0.0


def test_byte_buckets_hold_burst_seconds_of_rate(clock: Clock) -> None:
    principal = Principal(name="p", token_sha256=b"", tables=("*",), bytes_per_second=100, burst_seconds=2)
    Authenticator.admit(principal, 150)
    Authenticator.admit(principal, 50)  # 200 bytes at once: two seconds of rate
    with pytest.raises(RateLimited):
        Authenticator.admit(principal, 1)


def test_any_of_several_patterns_grants(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = ["main.a.*", "main.b.x"]\n')
    principal = Authenticator(str(path)).authenticate(f"Bearer {TOKEN}")
    assert principal.may_write(TableName.parse("main.a.y"))
    assert principal.may_write(TableName.parse("main.b.x"))
    assert not principal.may_write(TableName.parse("main.b.y"))


def test_any_of_several_read_patterns_grants_reading(tmp_path: Path) -> None:
    """Read grants (the dashboard's) are globs like write grants: any one of them grants,
    matched against the lower-cased name; they grant no writing."""
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\nread = ["main.a.*", "main.b.x"]\n')
    principal = Authenticator(str(path)).authenticate(f"Bearer {TOKEN}")
    assert principal.may_read("main.a.y") and principal.may_read("Main.B.X")
    assert not principal.may_read("main.b.y")
    assert not principal.may_write(TableName.parse("main.a.y"))


def test_the_token_file_is_re_read_only_by_reload_and_only_when_changed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Requests never touch the file (the app's watcher task calls reload() once a second,
    off the event loop); reload() re-reads it only when its modification time changed."""
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "old"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    authenticator = Authenticator(str(path))
    caplog.set_level("INFO", logger="otel_ingest.auth")
    asyncio.run(authenticator.reload())  # unchanged: not re-read
    assert "Reloaded" not in caplog.text
    path.write_text(f'[[principals]]\nname = "new"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert authenticator.authenticate(f"Bearer {TOKEN}").name == "old"  # a request does not reload
    asyncio.run(authenticator.reload())
    assert authenticator.authenticate(f"Bearer {TOKEN}").name == "new"
    asyncio.run(authenticator.reload())
    assert caplog.text.count("Reloaded") == 1


def test_the_callers_check_refuses_a_token_file_at_start_and_on_reload(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """``check`` (the gateway's grant check) runs on every load: a file it refuses stops
    the start, and on reload keeps the principals loaded before."""

    def no_principal_named_bad(principals: list[Principal]) -> None:
        if any(p.name == "bad" for p in principals):
            raise auth.TokenFileError("Principal 'bad' is refused by the check.")

    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "bad"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    with pytest.raises(auth.TokenFileError, match="refused by the check"):
        Authenticator(str(path), check=no_principal_named_bad)
    path.write_text(f'[[principals]]\nname = "good"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    authenticator = Authenticator(str(path), check=no_principal_named_bad)
    path.write_text(f'[[principals]]\nname = "bad"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    asyncio.run(authenticator.reload())
    assert authenticator.authenticate(f"Bearer {TOKEN}").name == "good"
    assert "refused by the check" in caplog.text


def test_without_a_token_file_everyone_is_anonymous_and_unlimited() -> None:
    authenticator = Authenticator(None)
    for header in (None, "", "Bearer whatever-token-at-all"):
        principal = authenticator.authenticate(header)
        assert principal.name == "anonymous"
        assert principal.may_write(TableName.parse("any.schema.table"))
        for _ in range(1000):
            Authenticator.admit(principal)
            Authenticator.admit(principal, 10**9)


def test_a_missing_or_malformed_header_is_unauthorized(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    path.write_text(f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
    authenticator = Authenticator(str(path))
    for header in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(Unauthorized, match="no bearer token"):
            authenticator.authenticate(header)
    with pytest.raises(Unauthorized, match="not valid"):
        authenticator.authenticate("Bearer wrong-token-of-some-length")


# The token file's validation (auth._principal, load_token_file): every rule, in process.
# Each refused entry names the file, the entry and what to fix; each rule has an entry
# just inside it that must load.

GOOD = f'name = "p"\ntoken = "{TOKEN}"\ntables = ["*"]\n'
DIGEST = "ab" * 32


def _load(tmp_path: Path, text: str) -> list[Principal]:
    path = tmp_path / "tokens.toml"
    path.write_text(text)
    return auth.load_token_file(str(path))


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("principals = [1]\n", "principals[0] must be a table"),
        ("not toml [[[", "is not valid TOML"),
        ('[[principals]]\ntoken = "0123456789abcdef"\ntables = ["*"]\n', "principals[0] needs a name"),
        ('[[principals]]\nname = ""\ntoken = "0123456789abcdef"\ntables = ["*"]\n', "principals[0] needs a name"),
        ('[[principals]]\nname = 7\ntoken = "0123456789abcdef"\ntables = ["*"]\n', "principals[0] needs a name"),
        ('[[principals]]\nname = "p"\ntables = ["*"]\n', "'p' needs exactly one of token or token_sha256"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntoken_sha256 = "{DIGEST}"\ntables = ["*"]\n', "exactly one"),
        ('[[principals]]\nname = "p"\ntoken = "0123456789abcde"\ntables = ["*"]\n', "at least 16 characters"),
        ('[[principals]]\nname = "p"\ntoken = 1234567890123456789\ntables = ["*"]\n', "at least 16 characters"),
        (f'[[principals]]\nname = "p"\ntoken_sha256 = "{DIGEST[:-2]}"\ntables = ["*"]\n', "64 hex digits"),
        (f'[[principals]]\nname = "p"\ntoken_sha256 = "{DIGEST}ab"\ntables = ["*"]\n', "64 hex digits"),
        (f'[[principals]]\nname = "p"\ntoken_sha256 = "{"zz" * 32}"\ntables = ["*"]\n', "64 hex digits"),
        ('[[principals]]\nname = "p"\ntoken_sha256 = 5\ntables = ["*"]\n', "64 hex digits"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\n', "tables must be a list"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = "*"\n', "tables must be a list"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = [""]\n', "tables must be a list"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = ["*", 3]\n', "tables must be a list"),
        (f'[[principals]]\nname = "p"\ntoken = "{TOKEN}"\ntables = ["*", ""]\n', "tables must be a list"),
        (f"[[principals]]\n{GOOD}requests_per_second = 0\n", "requests_per_second must be a positive finite"),
        (f"[[principals]]\n{GOOD}bytes_per_second = -5\n", "bytes_per_second must be a positive finite"),
        (f"[[principals]]\n{GOOD}burst_seconds = nan\n", "burst_seconds must be a positive finite"),
        (f"[[principals]]\n{GOOD}requests_per_second = inf\n", "requests_per_second must be a positive finite"),
        (f"[[principals]]\n{GOOD}requests_per_second = true\n", "requests_per_second must be a positive finite"),
        (f'[[principals]]\n{GOOD}requests_per_second = "5"\n', "requests_per_second must be a positive finite"),
        (f"[[principals]]\n{GOOD}gateway = 5\n", "gateway must be a table"),
        (f'[[principals]]\n{GOOD}read = "main.*"\n', "read must be a list"),
        (f'[[principals]]\n{GOOD}read = [""]\n', "read must be a list"),
        (f'[[principals]]\n{GOOD}read = ["main.*", 1]\n', "read must be a list"),
        (f"[[principals]]\n{GOOD}rps = 1\n", "unknown keys ['rps']"),
        ("x = 1\n", "must hold at least one [[principals]] entry"),
        ("principals = []\n", "must hold at least one [[principals]] entry"),
        ('principals = "p"\n', "must hold at least one [[principals]] entry"),
        (
            f'[[principals]]\n{GOOD}\n[[principals]]\nname = "p"\ntoken = "{OTHER}"\ntables = ["*"]\n',
            "names a principal twice",
        ),
        (
            f'[[principals]]\n{GOOD}\n[[principals]]\nname = "q"\ntoken = "{TOKEN}"\ntables = ["*"]\n',
            "'p' and 'q' share a token",
        ),
    ],
)
def test_a_token_file_breaking_a_rule_is_refused_naming_it(tmp_path: Path, text: str, fragment: str) -> None:
    with pytest.raises(auth.TokenFileError) as refused:
        _load(tmp_path, text)
    assert fragment in str(refused.value)
    assert str(tmp_path / "tokens.toml") in str(refused.value)


def test_every_key_of_a_token_file_is_loaded(tmp_path: Path) -> None:
    principals = _load(
        tmp_path,
        f'[[principals]]\nname = "full"\ntoken = "{TOKEN[:16]}"\ntables = ["Main.Telemetry.*", "dev.x.y"]\n'
        'requests_per_second = 0.5\nbytes_per_second = 1000\nburst_seconds = 3\nread = ["MAIN.*"]\n'
        '[principals.gateway]\nendpoints = ["chat"]\n\n'
        f'[[principals]]\nname = "hashed"\ntoken_sha256 = "{DIGEST.upper()}"\ntables = ["*"]\n\n'
        '[[principals]]\nname = "reader"\ntoken_sha256 = "' + "cd" * 32 + '"\nread = ["*"]\n',
    )
    full, hashed, reader = principals
    fields = ("name", "token_sha256", "tables", "requests_per_second", "bytes_per_second", "burst_seconds", "read")
    assert [getattr(full, f) for f in fields] == [
        "full",
        auth._digest(TOKEN[:16]),
        ("main.telemetry.*", "dev.x.y"),
        0.5,
        1000.0,
        3.0,
        ("main.*",),
    ]
    assert full.gateway == {"endpoints": ["chat"]}
    assert full.requests is not None and full.requests.capacity == 1.5
    assert full.bytes is not None and full.bytes.capacity == 3000
    assert hashed.token_sha256 == bytes.fromhex(DIGEST)
    assert (hashed.requests_per_second, hashed.bytes_per_second, hashed.burst_seconds) == (None, None, 2.0)
    assert (hashed.gateway, hashed.read, hashed.requests, hashed.bytes) == (None, (), None, None)
    assert (reader.tables, reader.read) == ((), ("*",))  # read-only: no write grants needed
    authenticator = Authenticator(str(tmp_path / "tokens.toml"))
    assert authenticator.authenticate(f"Bearer {TOKEN[:16]}").name == "full"


def test_only_a_regular_token_file_is_read_and_never_blocks(tmp_path: Path) -> None:
    """A FIFO or a folder given as the token file is refused at once (opening a FIFO for
    reading would wait for a writer for ever); reading leaves no descriptor open."""
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path, fragment in [(fifo, "is not a regular file"), (tmp_path, "is not a regular file")]:
        with pytest.raises(auth.TokenFileError, match=fragment):
            auth.load_token_file(str(path))
    with pytest.raises(auth.TokenFileError, match=r"Cannot read token file .*missing\.toml: No such file"):
        auth.load_token_file(str(tmp_path / "missing.toml"))
    good = tmp_path / "tokens.toml"
    good.write_text(f"[[principals]]\n{GOOD}")
    auth.load_token_file(str(good))
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(50):
        assert [p.name for p in auth.load_token_file(str(good))] == ["p"]
    assert len(os.listdir("/proc/self/fd")) == before


def test_the_watcher_looks_at_the_token_file_once_a_second(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/security.md: the file is checked once a second. The watcher's sleeps are
    recorded (not waited for); each is followed by a reload that sees the new file."""
    path = tmp_path / "tokens.toml"
    path.write_text(f"[[principals]]\n{GOOD}")
    authenticator = Authenticator(str(path))
    slept: list[float] = []

    async def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 1:
            path.write_text(f'[[principals]]\nname = "renamed"\ntoken = "{TOKEN}"\ntables = ["*"]\n')
            stat = path.stat()
            os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
        elif len(slept) == 3:
            raise asyncio.CancelledError

    monkeypatch.setattr(auth.asyncio, "sleep", sleep)

    async def watch() -> None:
        with pytest.raises(asyncio.CancelledError):
            await authenticator.watch()

    asyncio.run(watch())
    assert slept == [1.0, 1.0, 1.0]
    assert authenticator.authenticate(f"Bearer {TOKEN}").name == "renamed"
