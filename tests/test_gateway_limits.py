"""Limits and budgets: refusals in each provider's format, shared by two replicas through a
real Redis (Debian's redis-server, started here on a free port), and the per-replica fallback."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from gateway_support import Fake, GatewayProcess, Process, endpoints_toml

from support import free_port, wait_until

CAROL = "carol-token-0123456789abcdef"  # 3 requests per minute
DAVE = "dave-token-0123456789abcdefg"  # 30 tokens per minute
ERIN = "erin-token-0123456789abcdefg"  # 0.00005 USD per day
FRANK = "frank-token-0123456789abcdef"  # no limits of its own
GINA = "gina-token-0123456789abcdefg"  # 3 requests per minute

PRINCIPALS = f"""
[[principals]]
name = "carol"
token = "{CAROL}"
tables = []
[principals.gateway]
endpoints = ["*"]
requests_per_minute = 3

[[principals]]
name = "dave"
token = "{DAVE}"
tables = []
[principals.gateway]
endpoints = ["*"]
tokens_per_minute = 30

[[principals]]
name = "erin"
token = "{ERIN}"
tables = []
[principals.gateway]
endpoints = ["*"]
usd_per_day = 0.00005

[[principals]]
name = "frank"
token = "{FRANK}"
tables = []
[principals.gateway]
endpoints = ["*"]

[[principals]]
name = "gina"
token = "{GINA}"
tables = []
[principals.gateway]
endpoints = ["*"]
requests_per_minute = 3
"""

LIMITED_ENDPOINT = """
[[endpoints]]
name = "limited"
provider = "openai"
base_url = "{url}/v1"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["limited-*"]
requests_per_minute = 2

[[endpoints]]
name = "closed"
provider = "openai"
base_url = "{url}/v1"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["closed-*"]
requests_per_minute = 0.001
"""


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not installed (.ci/run installs Debian's redis-server)")
    folder = tmp_path_factory.mktemp("redis")
    port = free_port()
    process = Process(
        [server, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
        folder / "redis.log",
        port,
    )
    yield f"redis://127.0.0.1:{port}/0"
    process.stop()


@pytest.fixture(scope="module")
def replicas(fake: Fake, redis_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[GatewayProcess]]:
    folder = tmp_path_factory.mktemp("replicas")
    endpoints = endpoints_toml(fake.url, LIMITED_ENDPOINT.format(url=fake.url))
    started = [
        GatewayProcess(folder, endpoints, gateway=f'redis_url = "{redis_url}"', principals=PRINCIPALS) for _ in range(2)
    ]
    yield started
    for process in started:
        process.stop()


def _anthropic(url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/anthropic/v1/messages",
        json={"model": "claude-sonnet-4-5", "max_tokens": 10, "stream": True, "messages": []},
        headers={"x-api-key": token, "anthropic-version": "2023-06-01"},
        timeout=30,
    )


def _openai(url: str, token: str, model: str = "gpt-5") -> httpx.Response:
    return httpx.post(
        f"{url}/openai/v1/responses",
        json={"model": model, "input": "hi", "stream": True},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )


def _gemini(url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/gemini/v1beta/models/gemini-2.5-flash:generateContent",
        json={"contents": []},
        headers={"x-goog-api-key": token},
        timeout=30,
    )


def _chat(url: str, token: str) -> httpx.Response:
    return httpx.post(
        f"{url}/cursor/v1/chat/completions",
        json={"model": "local-llama", "messages": []},
        headers={"authorization": f"Bearer {token}"},
        timeout=30,
    )


def _assert_refusal_format(response: httpx.Response, dialect: str) -> None:
    assert response.status_code == 429
    assert int(response.headers["retry-after"]) >= 1
    body: dict[str, Any] = response.json()
    if dialect == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] == "rate_limit_error"
    elif dialect == "openai":
        assert body["error"]["code"] == "rate_limit_exceeded"
    else:
        assert body["error"]["status"] == "RESOURCE_EXHAUSTED" and body["error"]["code"] == 429


def test_two_replicas_together_stay_within_requests_per_minute(replicas: list[GatewayProcess], fake: Fake) -> None:
    before = fake.stats()["requests"]
    started = time.monotonic()
    calls = [_anthropic, _openai, _gemini] * 3
    responses = [(call.__name__.strip("_"), call(replicas[i % 2].url, CAROL)) for i, call in enumerate(calls)]
    elapsed = time.monotonic() - started
    passed = [r for _, r in responses if r.status_code == 200]
    # 3 per minute, refilled continuously: one more may pass for every 20 s the calls took.
    assert 3 <= len(passed) <= 3 + int(elapsed // 20)
    assert fake.stats()["requests"] - before == len(passed)  # refusals never reached the provider
    refused = {name: r for name, r in responses if r.status_code != 200}
    assert set(refused) == {"anthropic", "openai", "gemini"}
    for name, response in refused.items():
        _assert_refusal_format(response, "google" if name == "gemini" else name)


def test_tokens_per_minute_are_settled_with_real_usage(replicas: list[GatewayProcess]) -> None:
    first = _anthropic(replicas[0].url, DAVE)  # 23 input + 13 output = 36 > 30: the bucket goes into debt
    assert first.status_code == 200
    # Settling happens after the call; the other replica then sees the debt.
    refused = wait_until(lambda: (r := _gemini(replicas[1].url, DAVE)).status_code == 429 and r, "TPM refusal")
    _assert_refusal_format(refused, "google")
    assert "tokens per minute" in refused.json()["error"]["message"]


def test_daily_budget_in_usd(replicas: list[GatewayProcess]) -> None:
    first = _chat(replicas[1].url, ERIN)  # config prices: 8.25e-5 USD, over the 5e-5 budget
    assert first.status_code == 200
    refused = wait_until(lambda: (r := _chat(replicas[0].url, ERIN)).status_code == 429 and r, "budget refusal")
    _assert_refusal_format(refused, "openai")
    assert "budget" in refused.json()["error"]["message"]
    # The budget resets at midnight UTC: retry-after says when.
    assert int(refused.headers["retry-after"]) <= 86400


def test_endpoint_limit_holds_for_everyone_together(replicas: list[GatewayProcess]) -> None:
    statuses = [_openai(replicas[i % 2].url, FRANK, "limited-model").status_code for i in range(5)]
    assert statuses.count(200) == 2 and statuses.count(429) == 3


def test_a_refused_call_takes_no_request_from_the_other_limits(replicas: list[GatewayProcess]) -> None:
    """Admission is all or nothing: the 'closed' endpoint (a bucket that never holds a whole
    request) refuses gina's calls, and none of them takes from her own 3 per minute."""
    for i in range(5):
        response = _openai(replicas[i % 2].url, GINA, "closed-model")
        _assert_refusal_format(response, "openai")
        assert "endpoint:closed" in response.json()["error"]["message"]
    statuses = [_openai(replicas[i % 2].url, GINA, "gpt-4o").status_code for i in range(3)]
    assert statuses == [200, 200, 200]


def test_without_redis_each_replica_takes_its_share(fake: Fake, tmp_path: Path) -> None:
    """Redis unreachable: each of 2 replicas enforces half of carol's 3 per minute (1.5)."""
    dead = f"redis://127.0.0.1:{free_port()}/0"
    process = GatewayProcess(
        tmp_path, endpoints_toml(fake.url), gateway=f'redis_url = "{dead}"\nreplicas = 2', principals=PRINCIPALS
    )
    try:
        statuses = [_anthropic(process.url, CAROL).status_code for _ in range(4)]
        assert statuses[0] == 200 and statuses.count(200) == 1, statuses
        assert process.metric("otel_ingest_gateway_limit_fallbacks_total") >= 4
        assert "Redis is unreachable" in process.log()
    finally:
        process.stop()


def test_redis_server_started_by_the_tests_is_real(redis_url: str) -> None:
    port = redis_url.rsplit(":", 1)[1].split("/")[0]
    cli = shutil.which("redis-cli")
    if cli is None:
        pytest.skip("redis-cli is not installed")
    keys = subprocess.run([cli, "-p", port, "--scan", "--pattern", "gw:*"], capture_output=True, text=True, check=True)
    assert "gw:requests_per_minute:principal:carol" in keys.stdout
