"""The gateway against fake providers: byte-identical pass-through, exact usage rows,
inference rows, upstream failures, grants and refusals, keys that never leak."""

from __future__ import annotations

import json
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import polars as pl
import pytest
from gateway_support import ALICE, BOB, FAKE_KEY, PRINCIPALS, Fake, GatewayProcess, endpoints_toml

from otel_ingest.auth import TokenFileError, load_token_file
from otel_ingest.gateway.config import parse_config
from otel_ingest.gateway.grants import check_grants
from support import wait_until

USAGE_TABLE = "main.ai_gateway.usage"
INFERENCE_TABLE = "main.ai_gateway.inference"


@pytest.fixture(scope="module")
def gateway(fake: Fake, tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewayProcess]:
    down = "http://127.0.0.1:9"  # discard port: nothing listens, connections are refused
    extra = f"""
[[endpoints]]
name = "down"
provider = "anthropic"
base_url = "{down}"
api_key_env = "GW_TEST_PROVIDER_KEY"
models = ["claude-down-*"]

[[endpoints]]
name = "no-key"
provider = "openai"
base_url = "{fake.url}/v1"
api_key_env = "GW_TEST_UNSET_KEY"
models = ["gpt-nokey"]
"""
    # "down" must win over "claude" for claude-down-*: endpoints match in file order.
    process = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        extra + endpoints_toml(fake.url),
        gateway="max_body_bytes = 200_000",
    )
    yield process
    process.stop()


# (route path, body, client headers, direct path on the fake, direct headers)
def _anthropic(stream: bool, model: str = "claude-sonnet-4-5") -> dict[str, Any]:
    body = {"model": model, "max_tokens": 100, "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    return {
        "path": "/anthropic/v1/messages?beta=true",
        "direct": "/v1/messages?beta=true",
        "body": body,
        "headers": {
            "x-api-key": ALICE,
            "anthropic-version": "2023-06-01",
            "anthropic-beta": "interleaved-thinking-2025-05-14",
            "x-claude-code-session-id": "session-42",
            "user-agent": "claude-cli/2.1.197 (external, cli)",
        },
        "direct_headers": {"x-api-key": FAKE_KEY, "anthropic-version": "2023-06-01"},
        "usage": {
            "input_tokens": 23,
            "cache_read_input_tokens": 5,
            "cache_creation_input_tokens": 7,
            "output_tokens": 13,
            "reasoning_output_tokens": None,
        },
        "api_type": "messages",
    }


def _responses(stream: bool) -> dict[str, Any]:
    return {
        "path": "/openai/v1/responses",
        "direct": "/v1/responses",
        "body": {"model": "gpt-5-codex", "stream": stream, "input": "hi"},
        "headers": {
            "authorization": f"Bearer {ALICE}",
            "session-id": "codex-session-7",
            "originator": "codex_cli_rs",
            "user-agent": "codex_cli_rs/0.171.0",
        },
        "direct_headers": {"authorization": f"Bearer {FAKE_KEY}"},
        "usage": {
            "input_tokens": 31,
            "cache_read_input_tokens": 17,
            "cache_creation_input_tokens": 0,
            "output_tokens": 19,
            "reasoning_output_tokens": 8,
        },
        "api_type": "responses",
    }


def _chat(stream: bool, route: str = "cursor") -> dict[str, Any]:
    body: dict[str, Any] = {"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "hi"}]}
    if stream:
        body["stream_options"] = {"include_usage": True}
    return {
        "path": f"/{route}/v1/chat/completions",
        "direct": "/v1/chat/completions",
        "body": body,
        "headers": {"authorization": f"Bearer {ALICE}"},
        "direct_headers": {"authorization": f"Bearer {FAKE_KEY}"},
        "usage": {
            "input_tokens": 41,
            "cache_read_input_tokens": 9,
            "cache_creation_input_tokens": 0,
            "output_tokens": 23,
            "reasoning_output_tokens": 6,
        },
        "api_type": "chat_completions",
    }


def _gemini(stream: bool) -> dict[str, Any]:
    verb = "streamGenerateContent?alt=sse" if stream else "generateContent"
    return {
        "path": f"/gemini/v1beta/models/gemini-2.5-flash:{verb}",
        "direct": f"/v1beta/models/gemini-2.5-flash:{verb}",
        "body": {"contents": [{"role": "user", "parts": [{"text": "hi"}]}]},
        "headers": {"authorization": f"Bearer {ALICE}", "user-agent": "GeminiCLI/0.61.0 (linux; x64)"},
        "direct_headers": {"x-goog-api-key": FAKE_KEY},
        "usage": {
            "input_tokens": 53,
            "cache_read_input_tokens": 21,
            "cache_creation_input_tokens": 0,
            "output_tokens": 41,
            "reasoning_output_tokens": 12,
        },
        "api_type": "generate_content",
    }


CASES = {
    "anthropic-stream": _anthropic(True),
    "anthropic-json": _anthropic(False),
    "responses-stream": _responses(True),
    "responses-json": _responses(False),
    "chat-stream": _chat(True),
    "chat-json": _chat(False, "openai"),
    "gemini-sse": _gemini(True),
    "gemini-json": _gemini(False),
}


def _post(url: str, case: dict[str, Any], path_key: str = "path", headers_key: str = "headers") -> httpx.Response:
    return httpx.post(
        url + case[path_key], content=json.dumps(case["body"]).encode(), headers=case[headers_key], timeout=30
    )


@pytest.mark.parametrize("name", list(CASES))
def test_pass_through_is_byte_identical_and_usage_is_exact(name: str, fake: Fake, gateway: GatewayProcess) -> None:
    case = CASES[name]
    direct = _post(fake.url, case, "direct", "direct_headers")
    through = _post(gateway.url, case)
    assert through.status_code == direct.status_code == 200
    assert through.content == direct.content  # every byte, thinking signatures and unknown fields included
    assert through.headers["content-type"] == direct.headers["content-type"]
    request_id = through.headers["x-gateway-request-id"]
    row = gateway.row(USAGE_TABLE, request_id)
    for column, value in case["usage"].items():
        assert row[column] == value, column
    assert row["total_tokens"] == case["usage"]["input_tokens"] + case["usage"]["output_tokens"]
    assert row["status_code"] == 200 and row["error"] is None
    assert row["requester"] == "alice"
    assert row["api_type"] == case["api_type"]
    assert row["streaming"] == name.endswith(("stream", "sse"))
    assert row["latency_ms"] >= row["ttfb_ms"] >= 0


def test_upstream_receives_the_provider_key_and_the_agents_headers(fake: Fake, gateway: GatewayProcess) -> None:
    case = _anthropic(True)
    response = _post(gateway.url, case)
    assert response.status_code == 200
    seen = fake.requests()[-1]
    headers = dict(seen["headers"])
    assert seen["path"] == "/v1/messages" and seen["query"] == "beta=true"
    assert headers["x-api-key"] == FAKE_KEY  # the gateway's key, not the client's token
    assert ALICE not in json.dumps(seen)
    assert headers["anthropic-version"] == "2023-06-01"
    assert headers["anthropic-beta"] == "interleaved-thinking-2025-05-14"
    assert headers["x-claude-code-session-id"] == "session-42"
    assert headers["user-agent"].startswith("claude-cli/")
    import base64

    assert base64.b64decode(seen["body"]) == json.dumps(case["body"]).encode()  # the body is not re-serialised
    row = gateway.row(USAGE_TABLE, response.headers["x-gateway-request-id"])
    assert row["agent"] == "claude_code" and row["session_id"] == "session-42"
    assert row["endpoint_name"] == "claude" and row["destination_model"] == "claude-sonnet-4-5"
    assert row["cost_usd"] > 0 and row["cost_source"].startswith("genai-prices")


def test_codex_and_gemini_calls_are_attributed(gateway: GatewayProcess) -> None:
    codex = _post(gateway.url, _responses(True))
    gemini = _post(gateway.url, _gemini(True))
    row = gateway.row(USAGE_TABLE, codex.headers["x-gateway-request-id"])
    assert (row["agent"], row["session_id"]) == ("codex", "codex-session-7")
    assert gateway.row(USAGE_TABLE, gemini.headers["x-gateway-request-id"])["agent"] == "gemini_cli"


def test_chat_stream_without_include_usage_still_records_usage(fake: Fake, gateway: GatewayProcess) -> None:
    """The gateway adds stream_options.include_usage and keeps the extra chunk from the client."""
    body = {"model": "gpt-4o", "stream": True, "messages": [{"role": "user", "content": "hi"}]}
    raw = json.dumps(body).encode()
    through = httpx.post(
        f"{gateway.url}/cursor/v1/chat/completions", content=raw, headers={"authorization": f"Bearer {ALICE}"}
    )
    sent = json.loads(__import__("base64").b64decode(fake.requests()[-1]["body"]))
    assert sent["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in sent.items() if k != "stream_options"} == body
    with_usage = httpx.post(
        f"{fake.url}/v1/chat/completions",
        content=json.dumps(sent).encode(),
        headers={"authorization": f"Bearer {FAKE_KEY}"},
    )
    events = with_usage.content.split(b"\n\n")
    usage_chunks = [e for e in events if b'"choices":[]' in e]
    assert len(usage_chunks) == 1
    assert through.content == with_usage.content.replace(usage_chunks[0] + b"\n\n", b"")
    assert b'"choices":[]' not in through.content
    row = gateway.row(USAGE_TABLE, through.headers["x-gateway-request-id"])
    assert (row["input_tokens"], row["output_tokens"], row["cache_read_input_tokens"]) == (41, 23, 9)


def test_openai_python_client_as_cursor(gateway: GatewayProcess) -> None:
    """The openai package stands in for Cursor: streaming chat and the model listing."""
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=f"{gateway.url}/cursor/v1", api_key=ALICE, max_retries=0)
    models = [m.id for m in client.models.list()]
    assert "gpt" in models and "claude" not in models  # only chat-completions endpoints
    stream = client.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}], stream=True)
    text = "".join(chunk.choices[0].delta.content or "" for chunk in stream if chunk.choices)
    assert "DONE" in text
    completion = client.chat.completions.create(model="local-llama", messages=[{"role": "user", "content": "hi"}])
    assert completion.usage is not None and completion.usage.prompt_tokens == 41

    def local_row() -> dict[str, Any] | None:
        frame = gateway.table(USAGE_TABLE)
        rows = [] if frame.is_empty() else frame.to_dicts()
        return next((r for r in rows if r["destination_model"] == "local-llama"), None)

    row = wait_until(local_row, "usage row of local-llama")
    # config prices: (32 plain × 1 + 9 cache × 0.5 + 23 × 2) / 1e6
    assert row["cost_source"] == "config"
    assert row["cost_usd"] == pytest.approx((32 * 1.0 + 9 * 0.5 + 23 * 2.0) / 1e6)
    assert row["agent"] == "openai_sdk"


@pytest.mark.parametrize(
    "name", ["anthropic-stream", "responses-stream", "chat-stream", "gemini-sse", "anthropic-json"]
)
def test_inference_rows_hold_the_request_and_the_reassembled_response(
    name: str, fake: Fake, gateway: GatewayProcess
) -> None:
    case = CASES[name]
    through = _post(gateway.url, case)
    row = gateway.row(INFERENCE_TABLE, through.headers["x-gateway-request-id"])
    assert row["request"] == json.dumps(case["body"])
    assert row["status_code"] == 200 and row["requester"] == "alice"
    assert row["sampling_fraction"] == 1.0 and row["logging_error_codes"] == []
    response = json.loads(row["response"])
    # The same call without streaming: what the re-assembled stream must say.
    whole_case = {**case, "body": {**case["body"], "stream": False}}
    if name == "gemini-sse":
        whole_case = {**case, "direct": case["direct"].replace("streamGenerateContent?alt=sse", "generateContent")}
    whole = _post(fake.url, whole_case, "direct", "direct_headers").json()
    if name.startswith(("anthropic", "responses")):
        assert response == whole
    elif name == "chat-stream":
        assert response["choices"][0]["message"]["content"] == whole["choices"][0]["message"]["content"]
        assert response["usage"] == whole["usage"]
    else:
        text = [p["text"] for p in response["candidates"][0]["content"]["parts"] if not p.get("thought")]
        assert text == [p["text"] for p in whole["candidates"][0]["content"]["parts"]]
        assert response["usageMetadata"] == whole["usageMetadata"]


def test_model_listings_in_each_format(gateway: GatewayProcess) -> None:
    anthropic = httpx.get(f"{gateway.url}/anthropic/v1/models", headers={"x-api-key": BOB}).json()
    assert [m["id"] for m in anthropic["data"]] == ["claude"]  # bob may use only "claude"
    openai = httpx.get(f"{gateway.url}/openai/v1/models", headers={"authorization": f"Bearer {ALICE}"}).json()
    assert openai["object"] == "list" and {"gpt", "local"} <= {m["id"] for m in openai["data"]}
    gemini = httpx.get(f"{gateway.url}/gemini/v1beta/models", headers={"x-goog-api-key": ALICE}).json()
    assert gemini["models"][0]["name"] == "models/gemini"


def test_count_tokens_pass_through(gateway: GatewayProcess) -> None:
    headers = {"x-api-key": ALICE, "anthropic-version": "2023-06-01"}
    body = {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}]}
    assert httpx.post(f"{gateway.url}/anthropic/v1/messages/count_tokens", json=body, headers=headers).json() == {
        "input_tokens": 42
    }
    gemini = httpx.post(
        f"{gateway.url}/gemini/v1beta/models/gemini-2.5-flash:countTokens",
        json={"contents": []},
        headers={"x-goog-api-key": ALICE},
    )
    assert gemini.json() == {"totalTokens": 42}


# ---- refusals: before any upstream call ---------------------------------------------------------------


def _refused(fake: Fake, call: Any) -> httpx.Response:
    before = fake.stats()["requests"]
    response: httpx.Response = call()
    assert fake.stats()["requests"] == before, "a refused call reached the provider"
    return response


@pytest.mark.parametrize(
    ("path", "headers", "body", "check"),
    [
        ("/anthropic/v1/messages", {"x-api-key": BOB}, {"model": "gpt-4o"}, None),
        (
            "/openai/v1/responses",
            {"authorization": f"Bearer {BOB}"},
            {"model": "gpt-5"},
            lambda b: b["error"]["code"] == "model_not_permitted",
        ),
        (
            "/gemini/v1beta/models/gemini-2.5-pro:generateContent",
            {"x-goog-api-key": BOB},
            {"contents": []},
            lambda b: b["error"]["status"] == "PERMISSION_DENIED",
        ),
    ],
)
def test_no_grant_is_403_in_the_providers_format(
    path: str, headers: dict[str, str], body: dict[str, Any], check: Any, fake: Fake, gateway: GatewayProcess
) -> None:
    response = _refused(fake, lambda: httpx.post(gateway.url + path, json=body, headers=headers))
    if check is None:  # bob asked the anthropic route for a model no anthropic endpoint serves
        assert response.status_code == 404
        assert response.json()["error"]["type"] == "not_found_error"
        bob_claude = httpx.post(
            f"{gateway.url}/anthropic/v1/messages",
            json={"model": "claude-x", "messages": []},
            headers={"x-api-key": BOB, "anthropic-version": "2023-06-01"},
        )
        assert bob_claude.status_code == 200
        return
    assert response.status_code == 403
    assert check(response.json())


def test_ingest_only_principal_has_no_gateway_access(fake: Fake, gateway: GatewayProcess) -> None:
    response = _refused(
        fake,
        lambda: httpx.post(
            f"{gateway.url}/anthropic/v1/messages",
            json={"model": "claude-x"},
            headers={"x-api-key": "ingest-only-token-0123456789", "anthropic-version": "2023-06-01"},
        ),
    )
    assert response.status_code == 403
    assert response.json()["error"]["type"] == "permission_error"


def test_unknown_token_route_and_model_are_refused_before_upstream(fake: Fake, gateway: GatewayProcess) -> None:
    bad = _refused(
        fake,
        lambda: httpx.post(
            f"{gateway.url}/anthropic/v1/messages",
            json={"model": "claude-x"},
            headers={"x-api-key": "not-a-token-at-all-0000"},
        ),
    )
    assert bad.status_code == 401 and bad.json()["error"]["type"] == "authentication_error"
    route = _refused(
        fake,
        lambda: httpx.post(
            f"{gateway.url}/openai/v1/embeddings",
            json={"model": "gpt-4o"},
            headers={"authorization": f"Bearer {ALICE}"},
        ),
    )
    assert route.status_code == 404 and route.json()["error"]["code"] == "unknown_url"
    model = _refused(
        fake,
        lambda: httpx.post(
            f"{gateway.url}/gemini/v1beta/models/claude-x:generateContent", json={}, headers={"x-goog-api-key": ALICE}
        ),
    )
    assert model.status_code == 404 and model.json()["error"]["status"] == "NOT_FOUND"
    no_model = _refused(
        fake,
        lambda: httpx.post(
            f"{gateway.url}/openai/v1/responses", json={"input": "hi"}, headers={"authorization": f"Bearer {ALICE}"}
        ),
    )
    assert no_model.status_code == 400


def test_body_over_the_limit_is_413(fake: Fake, gateway: GatewayProcess) -> None:
    big = {"model": "claude-x", "messages": [{"role": "user", "content": "x" * 300_000}]}
    headers = {"x-api-key": ALICE, "anthropic-version": "2023-06-01"}
    response = _refused(fake, lambda: httpx.post(f"{gateway.url}/anthropic/v1/messages", json=big, headers=headers))
    assert response.status_code == 413 and response.json()["error"]["type"] == "request_too_large"

    def chunked() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for start in range(0, len(data), 10_000):
            yield data[start : start + 10_000]

    streamed = _refused(
        fake, lambda: httpx.post(f"{gateway.url}/anthropic/v1/messages", content=chunked(), headers=headers)
    )
    assert streamed.status_code == 413


# ---- upstream failures -------------------------------------------------------------------------------


def test_upstream_5xx_passes_through_and_is_recorded(fake: Fake, gateway: GatewayProcess) -> None:
    case = _responses(False)
    case["body"]["model"] = "gpt-5-fail500"
    direct = _post(fake.url, case, "direct", "direct_headers")
    through = _post(gateway.url, case)
    assert through.status_code == 500 and through.content == direct.content
    row = gateway.row(USAGE_TABLE, through.headers["x-gateway-request-id"])
    assert row["status_code"] == 500 and "upstream HTTP 500" in row["error"]


def test_upstream_down_is_502_in_the_providers_format(gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{gateway.url}/anthropic/v1/messages",
        json={"model": "claude-down-1", "messages": []},
        headers={"x-api-key": ALICE},
        timeout=30,
    )
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "api_error"
    assert "could not be reached" in response.json()["error"]["message"]


def test_upstream_timeout_is_504_and_nothing_hangs(gateway: GatewayProcess) -> None:
    response = httpx.post(
        f"{gateway.url}/gemini/v1beta/models/gemini-x-hang:generateContent",
        json={},
        headers={"x-goog-api-key": ALICE},
        timeout=30,
    )
    assert response.status_code == 504
    assert response.json()["error"]["status"] == "DEADLINE_EXCEEDED"


@pytest.mark.parametrize(("name", "marker"), [("reset", b"broke the connection"), ("stall", b"stopped sending")])
def test_stream_broken_midway_ends_with_a_provider_error_event(
    name: str, marker: bytes, gateway: GatewayProcess
) -> None:
    case = _anthropic(True, f"claude-x-{name}")
    response = _post(gateway.url, case)
    assert response.status_code == 200  # headers were sent before the break
    assert response.content.startswith(b"event: message_start")
    last = response.content.rstrip(b"\n").split(b"\n\n")[-1]
    assert last.startswith(b"event: error\ndata: ")
    error = json.loads(last.split(b"data: ", 1)[1])
    assert error["type"] == "error" and error["error"]["type"] == "api_error"
    assert marker in last
    row = gateway.row(USAGE_TABLE, response.headers["x-gateway-request-id"])
    assert marker.decode() in row["error"]
    assert row["input_tokens"] == 23  # what message_start reported before the break


def test_client_disconnect_cancels_the_upstream_call(fake: Fake, gateway: GatewayProcess) -> None:
    before = fake.stats()["cancelled"]
    case = _anthropic(True, "claude-x-slow")
    with httpx.stream(
        "POST", gateway.url + case["path"], content=json.dumps(case["body"]).encode(), headers=case["headers"]
    ) as response:
        request_id = response.headers["x-gateway-request-id"]
        next(response.iter_raw())
    wait_until(lambda: fake.stats()["cancelled"] > before, "the fake provider to see the cancellation")
    row = gateway.row(USAGE_TABLE, request_id)
    assert row["status_code"] == 499 and "cancelled" in row["error"]


def test_client_leaving_before_the_providers_answer_cancels_the_upstream_call(
    fake: Fake, gateway: GatewayProcess
) -> None:
    before = fake.stats()["cancelled"]
    with pytest.raises(httpx.ReadTimeout):  # the client gives up long before the endpoint's 3 s
        httpx.post(
            f"{gateway.url}/anthropic/v1/messages",
            json={"model": "claude-x-hang", "messages": []},
            headers={"x-api-key": ALICE},
            timeout=httpx.Timeout(30, read=0.3),
        )
    wait_until(lambda: fake.stats()["cancelled"] > before, "the fake provider to see the connection close")

    def left() -> dict[str, Any] | None:  # the only call of this module to claude-x-hang
        frame = gateway.table(USAGE_TABLE)
        rows = [] if frame.is_empty() else frame.filter(pl.col("destination_model") == "claude-x-hang").to_dicts()
        return rows[0] if rows else None

    row = wait_until(left, "the usage row of the call the client left")
    assert row["status_code"] == 499 and "cancelled" in row["error"]


# ---- keys never leak ------------------------------------------------------------------------------------


def test_provider_keys_never_leak(fake: Fake, gateway: GatewayProcess, tmp_path: Path) -> None:
    # The provider refuses a key and quotes it in its error body: the client must not see it.
    bad_key_gateway = GatewayProcess(
        tmp_path / "badkey",
        endpoints_toml(fake.url),
        env={"GW_TEST_PROVIDER_KEY": "sk-wrong-key-that-must-not-leak-42"},
    )
    try:
        response = httpx.post(
            f"{bad_key_gateway.url}/openai/v1/responses",
            json={"model": "gpt-5", "input": "hi"},
            headers={"authorization": f"Bearer {ALICE}"},
        )
        assert response.status_code == 502
        assert "sk-wrong-key" not in response.text
        assert "GW_TEST_PROVIDER_KEY" in response.json()["error"]["message"]
        row = bad_key_gateway.row(USAGE_TABLE, response.headers["x-gateway-request-id"])
        assert row["status_code"] == 502 and "refused the gateway's key" in row["error"]
    finally:
        bad_key_gateway.stop()
    missing = httpx.post(
        f"{gateway.url}/openai/v1/responses",
        json={"model": "gpt-nokey", "input": "hi"},
        headers={"authorization": f"Bearer {ALICE}"},
    )
    assert missing.status_code == 503 and "GW_TEST_UNSET_KEY" in missing.text
    # Every call so far: logs, tables and the config never hold a key.
    for process in (gateway, bad_key_gateway):
        wait_until(lambda p=process: not p.table(USAGE_TABLE).is_empty(), "usage rows")
        texts = [process.log()]
        for table in (USAGE_TABLE, INFERENCE_TABLE):
            frame = process.table(table)
            texts.append(json.dumps(frame.to_dicts(), default=str))
        for path in process.warehouse.rglob("*"):
            if path.is_file() and path.suffix in (".json", ".parquet", ".toml", ".log"):
                texts.append(path.read_bytes().decode("latin-1"))
        for text in texts:
            assert FAKE_KEY not in text
            assert "sk-wrong-key-that-must-not-leak-42" not in text
            assert ALICE not in text  # nor the client tokens


# ---- logging never breaks a call ---------------------------------------------------------------------


def test_calls_succeed_while_the_warehouse_is_unwritable(fake: Fake, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the warehouse should be")
    process = GatewayProcess(tmp_path / "gw", endpoints_toml(fake.url), gateway="log_buffer_rows = 3")
    # Point the warehouse under a file: every table creation fails.
    process.stop()
    config = next((tmp_path / "gw").glob("gateway-*.toml"))
    config.write_text(
        config.read_text().replace(f'warehouse = "{process.warehouse}"', f'warehouse = "{blocker}/warehouse"')
    )
    from gateway_support import Process

    port, ops_port = process.port, process.ops_port
    restarted = Process(
        [sys.executable, "-m", "otel_ingest", "gateway", str(config), "--port", str(port), "--ops-port", str(ops_port)],
        tmp_path / "restarted.log",
        port,
        {"GW_TEST_PROVIDER_KEY": FAKE_KEY},
    )
    restarted.wait_listening(ops_port)
    try:
        for _ in range(8):
            response = _post(restarted.url, _anthropic(True))
            assert response.status_code == 200 and b"message_stop" in response.content
        metrics = httpx.get(f"http://127.0.0.1:{ops_port}/metrics").text
        dropped = sum(
            float(line.rsplit(" ", 1)[1])
            for line in metrics.splitlines()
            if line.startswith("otel_ingest_gateway_log_rows_dropped_total")
        )
        assert dropped >= 8 * 2 - 2 * 3  # both tables hold at most 3 rows each
        wait_until(lambda: "buffer is full" in restarted.log_path.read_text(), "the drop to be logged")
    finally:
        restarted.stop()


# ---- the ops listener, and grants checked when the token file is loaded ------------------------


def test_metrics_are_served_only_on_the_ops_listener(gateway: GatewayProcess) -> None:
    public = httpx.get(f"{gateway.url}/metrics")
    assert public.status_code == 404  # an unknown route of the gateway, in OpenAI's format
    assert "otel_ingest_gateway" not in public.text
    assert public.json()["error"]["code"] == "unknown_url"
    assert httpx.get(f"{gateway.url}/healthz").status_code == 200  # liveness stays on the gateway port
    ops = httpx.get(f"{gateway.ops_url}/metrics")
    assert ops.status_code == 200
    assert "otel_ingest_gateway_calls_total" in ops.text
    assert httpx.get(f"{gateway.ops_url}/healthz").json() == {"status": "ok"}
    # The loopback ops listener answers only requests addressed to this machine (DNS rebinding).
    rebound = httpx.get(f"{gateway.ops_url}/metrics", headers={"host": "attacker.example"})
    assert rebound.status_code == 403
    assert "otel_ingest_gateway" not in rebound.text


BAD_GRANTS = {
    "unknown endpoint": ('endpoints = ["claude", "cluade-opus"]', "'cluade-opus' names no endpoint"),
    "pattern matching nothing": ('endpoints = ["mistral-*"]', "'mistral-*' names no endpoint"),
    "unclosed set": ('endpoints = ["claude-[opus"]', "'claude-[opus' is not an endpoint name or glob pattern"),
    "spaces": ('endpoints = ["claude, gpt"]', "'claude, gpt' is not an endpoint name or glob pattern"),
    "not a list": ('endpoints = "claude"', "endpoints must be a list"),
    "unknown key": ('endpoints = ["claude"]\nrequest_per_minute = 5', "unknown keys ['request_per_minute']"),
    "bad limit": ('endpoints = ["claude"]\nusd_per_day = -1', "usd_per_day must be a number above 0"),
}


def _bad_token_file(folder: Path, grant: str) -> Path:
    tokens = folder / "tokens.toml"
    tokens.write_text(
        f'[[principals]]\nname = "mallory"\ntoken = "{ALICE}"\ntables = []\n[principals.gateway]\n{grant}\n'
    )
    return tokens


@pytest.mark.parametrize("name", list(BAD_GRANTS))
def test_a_bad_gateway_grant_refuses_the_token_file(name: str, tmp_path: Path) -> None:
    grant, message = BAD_GRANTS[name]
    tokens = _bad_token_file(tmp_path, grant)
    config = parse_config(tomllib.loads(endpoints_toml("http://127.0.0.1:9")))
    with pytest.raises(TokenFileError) as refused:
        check_grants(load_token_file(str(tokens)), config.endpoints, str(tokens))
    assert "principal 'mallory'" in str(refused.value) and message in str(refused.value)
    assert str(tokens) in str(refused.value)  # names the file to fix


def test_a_bad_gateway_grant_stops_the_start_with_the_message(fake: Fake, tmp_path: Path) -> None:
    _bad_token_file(tmp_path, 'endpoints = ["claude", "cluade-opus"]')
    config = tmp_path / "gateway.toml"
    config.write_text(f'[gateway]\ntokens = "tokens.toml"\nwarehouse = "{tmp_path}/wh"\n{endpoints_toml(fake.url)}')
    result = subprocess.run(
        [sys.executable, "-m", "otel_ingest", "gateway", str(config), "--port", "0", "--ops-port", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert "principal 'mallory'" in result.stderr, result.stderr
    assert "'cluade-opus' names no endpoint of the gateway config; the endpoints are claude, gpt" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_reloaded_token_file_with_a_bad_grant_keeps_the_loaded_principals(fake: Fake, tmp_path: Path) -> None:
    process = GatewayProcess(tmp_path, endpoints_toml(fake.url))
    try:
        tokens = tmp_path / "tokens.toml"
        tokens.write_text(PRINCIPALS.replace('endpoints = ["claude"]', 'endpoints = ["claude-opus-typo"]'))
        wait_until(lambda: "'claude-opus-typo' names no endpoint" in process.log(), "the refused reload to be logged")
        assert "Keeping the 3 principals loaded before" in process.log()
        bob = httpx.post(
            f"{process.url}/anthropic/v1/messages",
            json={"model": "claude-x", "messages": []},
            headers={"x-api-key": BOB, "anthropic-version": "2023-06-01"},
            timeout=30,
        )
        assert bob.status_code == 200  # bob keeps the grant loaded before
    finally:
        process.stop()
