"""Fake model providers for the gateway tests: Anthropic Messages, OpenAI Responses and Chat
Completions, and Gemini generateContent, streaming included, on one loopback port.

Run as ``python tests/fake_providers.py PORT``. Answers are a pure function of the request,
so a test can call the fake directly and through the gateway and compare the bytes.
Every answer carries known usage, cache and reasoning tokens included (``USAGE``).

The requested model picks a behaviour:

* ``…-fail500``: HTTP 500 with the provider's error body;
* ``…-hang``: never answers (upstream timeout);
* ``…-reset``: a stream that breaks after its first events (connection reset mid-stream);
* ``…-stall``: a stream that stops sending after its first events;
* ``…-slow``: each event 50 ms apart (client disconnect tests);
* anything else: a normal answer. If the request offers tools and holds no tool result
  yet, the answer is a call of a file-reading tool on the path named in the prompt.

``GET /_requests`` returns what was received (method, path, query, headers, body);
``GET /_stats`` counts requests, and answers cancelled by a client hang-up.
Keys: Anthropic ``x-api-key``, OpenAI ``Authorization: Bearer``, Gemini
``x-goog-api-key`` must equal ``FAKE_KEY`` (else 401 quoting the key sent, as some
providers do: the gateway must not pass that on).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

FAKE_KEY = os.environ.get("FAKE_KEY", "sk-fake-provider-key-0123456789abcdef")

USAGE = {
    "anthropic": {"input": 11, "cache_write": 7, "cache_read": 5, "output": 13},
    "responses": {"input": 31, "cached": 17, "output": 19, "reasoning": 8},
    "chat": {"prompt": 41, "cached": 9, "completion": 23, "reasoning": 6},
    "gemini": {"prompt": 53, "cached": 21, "candidates": 29, "thoughts": 12},
}

received: list[dict[str, Any]] = []
stats = {"requests": 0, "cancelled": 0, "completed": 0}


def sse(event: str | None, data: Any) -> bytes:
    text = json.dumps(data, separators=(",", ":"))
    return (f"event: {event}\n" if event else "").encode() + f"data: {text}\n\n".encode()


def _behaviour(model: str) -> str:
    for name in ("fail500", "hang", "reset", "stall", "slow"):
        if model.endswith("-" + name):
            return name
    return "ok"


def _text_of(value: Any) -> str:
    """All strings inside a request document, joined (to find the prompt's file path)."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text_of(v) for v in value.values())
    if isinstance(value, list):
        return " ".join(_text_of(v) for v in value)
    return ""


def _path_in(document: Any) -> str:
    match = re.search(r"(/[\w./-]*gateway-probe\.txt)", _text_of(document))
    return match.group(1) if match else "/tmp/gateway-probe.txt"


def _has_tool_result(document: Any) -> bool:
    text = json.dumps(document)
    return any(
        marker in text for marker in ('"tool_result"', '"function_call_output"', '"functionResponse"', '"role": "tool"')
    )


def _tool_names(document: dict[str, Any]) -> list[str]:
    names = []
    for tool in document.get("tools") or []:
        if not isinstance(tool, dict):
            continue
        if "name" in tool:
            names.append(tool["name"])
        elif isinstance(tool.get("function"), dict):
            names.append(tool["function"].get("name", ""))
        for declaration in tool.get("functionDeclarations") or tool.get("function_declarations") or []:
            names.append(declaration.get("name", ""))
    return names


READ_TOOLS = ("Read", "read_file", "shell", "exec_command", "shell_command", "ReadFile")


def _tool_call(document: dict[str, Any]) -> tuple[str, dict[str, Any]] | None:
    """The tool call the fake makes: reading the probe file, with the tool found."""
    if _has_tool_result(document):
        return None
    names = _tool_names(document)
    path = _path_in(document)
    for name in READ_TOOLS:
        if name in names:
            if name == "Read":
                return name, {"file_path": path}
            if name in ("read_file", "ReadFile"):
                return name, {"absolute_path": path, "file_path": path}
            if name == "exec_command":
                return name, {"cmd": f"cat {path}"}
            if name == "shell_command":
                return name, {"command": f"cat {path}"}
            return name, {"command": ["cat", path]}
    return None


def _reply_text(document: Any) -> str:
    if _has_tool_result(document):
        match = re.search(r"probe-content-[0-9a-f]+", json.dumps(document))
        return f"The file says {match.group(0) if match else 'nothing'}. DONE"
    return "Hello from the fake provider. DONE"


async def _hang() -> None:
    """Never send: wait on an event nobody sets, until the task is cancelled (inside a
    StreamingResponse, Starlette cancels it when the client hangs up)."""
    await asyncio.Event().wait()


async def _hang_until_disconnect(request: Request) -> None:
    """Never answer, until the client (the gateway, timing out) hangs up: an upstream that
    hangs, not one that is merely slow. Waiting on an event alone would outlive the
    connection, and uvicorn's shutdown waits for every handler: the test's teardown then
    sat out Process.stop's 30 s before killing the fake."""
    while (await request.receive())["type"] != "http.disconnect":
        pass
    stats["cancelled"] += 1


async def _emit(events: list[bytes], behaviour: str) -> AsyncIterator[bytes]:
    try:
        for index, event in enumerate(events):
            if behaviour in ("reset", "stall") and index == 2:
                if behaviour == "stall":
                    await _hang()
                raise ConnectionResetError("fake provider resets the stream")
            if behaviour == "slow":
                await asyncio.sleep(0.05)
            # Split each event in two writes: the gateway must not rely on event-aligned chunks.
            middle = len(event) // 2
            yield event[:middle]
            yield event[middle:]
        stats["completed"] += 1
    except asyncio.CancelledError:
        stats["cancelled"] += 1
        raise


def _stream(events: list[bytes], behaviour: str) -> StreamingResponse:
    return StreamingResponse(_emit(events, behaviour), media_type="text/event-stream")


# ---- Anthropic ---------------------------------------------------------------------------------


def anthropic_messages(document: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    u = USAGE["anthropic"]
    model = document.get("model", "")
    start_usage = {
        "input_tokens": u["input"],
        "cache_creation_input_tokens": u["cache_write"],
        "cache_read_input_tokens": u["cache_read"],
        "output_tokens": 1,
    }
    message = {
        "id": "msg_fake01",
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": [],
        "stop_reason": None,
        "stop_sequence": None,
        "usage": start_usage,
    }
    call = _tool_call(document)
    events = [sse("message_start", {"type": "message_start", "message": message})]
    # A thinking block with a signature and a field no client knows: both must pass untouched.
    events += [
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 0,
                "content_block": {"type": "thinking", "thinking": "", "signature": ""},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "thinking_delta", "thinking": "Let me think. "},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"},
            },
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0, "x_unknown_field": {"kept": True}}),
        b": a comment line the gateway must pass on\n\n",
        sse("ping", {"type": "ping"}),
    ]
    content: list[dict[str, Any]] = [
        {"type": "thinking", "thinking": "Let me think. ", "signature": "EqQBCgIYAhIM1gbcDa9GJwZA"}
    ]
    if call is not None:
        name, arguments = call
        events += [
            sse(
                "content_block_start",
                {
                    "type": "content_block_start",
                    "index": 1,
                    "content_block": {"type": "tool_use", "id": "toolu_fake01", "name": name, "input": {}},
                },
            ),
            sse(
                "content_block_delta",
                {
                    "type": "content_block_delta",
                    "index": 1,
                    "delta": {"type": "input_json_delta", "partial_json": json.dumps(arguments)},
                },
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
        content.append({"type": "tool_use", "id": "toolu_fake01", "name": name, "input": arguments})
        stop = "tool_use"
    else:
        text = _reply_text(document)
        events += [
            sse(
                "content_block_start",
                {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
            ),
            sse(
                "content_block_delta",
                {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": text}},
            ),
            sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        ]
        content.append({"type": "text", "text": text})
        stop = "end_turn"
    events += [
        sse(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": stop, "stop_sequence": None},
                "usage": {"output_tokens": u["output"]},
            },
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
    whole = {**message, "content": content, "stop_reason": stop, "usage": {**start_usage, "output_tokens": u["output"]}}
    return events, whole


# ---- OpenAI Responses ------------------------------------------------------------------------------


def openai_responses(document: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    u = USAGE["responses"]
    usage = {
        "input_tokens": u["input"],
        "input_tokens_details": {"cached_tokens": u["cached"]},
        "output_tokens": u["output"],
        "output_tokens_details": {"reasoning_tokens": u["reasoning"]},
        "total_tokens": u["input"] + u["output"],
    }
    call = _tool_call(document)
    base = {
        "id": "resp_fake01",
        "object": "response",
        "created_at": 1700000000,
        "model": document.get("model"),
        "status": "in_progress",
        "output": [],
        "usage": None,
    }
    if call is not None:
        name, arguments = call
        item: dict[str, Any] = {
            "type": "function_call",
            "id": "fc_fake01",
            "call_id": "call_fake01",
            "name": name,
            "arguments": json.dumps(arguments),
            "status": "completed",
        }
    else:
        item = {
            "type": "message",
            "id": "msg_fake01",
            "role": "assistant",
            "status": "completed",
            "content": [{"type": "output_text", "text": _reply_text(document), "annotations": []}],
        }
    completed = {**base, "status": "completed", "output": [item], "usage": usage}
    events = [
        sse("response.created", {"type": "response.created", "sequence_number": 0, "response": base}),
        sse("response.in_progress", {"type": "response.in_progress", "sequence_number": 1, "response": base}),
        sse(
            "response.output_item.added",
            {
                "type": "response.output_item.added",
                "sequence_number": 2,
                "output_index": 0,
                "item": {**item, "status": "in_progress"},
            },
        ),
    ]
    if item["type"] == "message":
        events.append(
            sse(
                "response.output_text.delta",
                {
                    "type": "response.output_text.delta",
                    "sequence_number": 3,
                    "item_id": "msg_fake01",
                    "output_index": 0,
                    "content_index": 0,
                    "delta": item["content"][0]["text"],
                },
            )
        )
    events += [
        sse(
            "response.output_item.done",
            {"type": "response.output_item.done", "sequence_number": 4, "output_index": 0, "item": item},
        ),
        sse("response.completed", {"type": "response.completed", "sequence_number": 5, "response": completed}),
    ]
    return events, completed


# ---- OpenAI Chat Completions --------------------------------------------------------------------------


def openai_chat(document: dict[str, Any]) -> tuple[list[bytes], dict[str, Any]]:
    u = USAGE["chat"]
    usage = {
        "prompt_tokens": u["prompt"],
        "completion_tokens": u["completion"],
        "total_tokens": u["prompt"] + u["completion"],
        "prompt_tokens_details": {"cached_tokens": u["cached"]},
        "completion_tokens_details": {"reasoning_tokens": u["reasoning"]},
    }
    include_usage = (document.get("stream_options") or {}).get("include_usage") is True
    model = document.get("model")
    call = _tool_call(document)
    head = {"id": "chatcmpl-fake01", "object": "chat.completion.chunk", "created": 1700000000, "model": model}
    extra = {"usage": None} if include_usage else {}
    chunks = [
        {
            **head,
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
            **extra,
        }
    ]
    if call is not None:
        name, arguments = call
        chunks.append(
            {
                **head,
                "choices": [
                    {
                        "index": 0,
                        "delta": {
                            "tool_calls": [
                                {
                                    "index": 0,
                                    "id": "call_fake01",
                                    "type": "function",
                                    "function": {"name": name, "arguments": json.dumps(arguments)},
                                }
                            ]
                        },
                        "finish_reason": None,
                    }
                ],
                **extra,
            }
        )
        message: dict[str, Any] = {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_fake01",
                    "type": "function",
                    "function": {"name": name, "arguments": json.dumps(arguments)},
                }
            ],
        }
        finish = "tool_calls"
    else:
        text = _reply_text(document)
        for word in text.split(" "):
            chunks.append(
                {**head, "choices": [{"index": 0, "delta": {"content": word + " "}, "finish_reason": None}], **extra}
            )
        message = {"role": "assistant", "content": "".join(w + " " for w in text.split(" "))}
        finish = "stop"
    chunks.append({**head, "choices": [{"index": 0, "delta": {}, "finish_reason": finish}], **extra})
    if include_usage:
        chunks.append({**head, "choices": [], "usage": usage})
    events = [sse(None, chunk) for chunk in chunks] + [b"data: [DONE]\n\n"]
    whole = {
        "id": "chatcmpl-fake01",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": usage,
    }
    return events, whole


# ---- Gemini ----------------------------------------------------------------------------------


def gemini_generate(document: dict[str, Any], model: str) -> tuple[list[bytes], dict[str, Any]]:
    u = USAGE["gemini"]
    metadata = {
        "promptTokenCount": u["prompt"],
        "cachedContentTokenCount": u["cached"],
        "candidatesTokenCount": u["candidates"],
        "thoughtsTokenCount": u["thoughts"],
        "totalTokenCount": u["prompt"] + u["candidates"] + u["thoughts"],
    }
    call = _tool_call(document)
    if call is not None:
        name, arguments = call
        parts: list[dict[str, Any]] = [{"functionCall": {"name": name, "args": arguments}}]
    else:
        parts = [{"text": _reply_text(document)}]
    first = {
        "candidates": [{"content": {"role": "model", "parts": [{"text": "Thinking", "thought": True}]}, "index": 0}],
        "usageMetadata": {"promptTokenCount": u["prompt"], "totalTokenCount": u["prompt"]},
        "modelVersion": model,
        "responseId": "fake01",
    }
    last = {
        "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}],
        "usageMetadata": metadata,
        "modelVersion": model,
        "responseId": "fake01",
    }
    events = [
        sse(None, first),
        sse(
            None,
            {
                **first,
                "candidates": [{"content": {"role": "model", "parts": [{"text": "...", "thought": True}]}, "index": 0}],
            },
        ),
        sse(None, last),
    ]
    whole = {**last, "candidates": [{"content": {"role": "model", "parts": parts}, "finishReason": "STOP", "index": 0}]}
    return events, whole


# ---- the app ----------------------------------------------------------------------------------


def _error(provider: str, status: int, message: str) -> JSONResponse:
    if provider == "anthropic":
        body: dict[str, Any] = {
            "type": "error",
            "error": {"type": "api_error" if status >= 500 else "authentication_error", "message": message},
        }
    elif provider == "google":
        body = {
            "error": {"code": status, "message": message, "status": "INTERNAL" if status >= 500 else "UNAUTHENTICATED"}
        }
    else:
        body = {
            "error": {
                "message": message,
                "type": "server_error" if status >= 500 else "invalid_request_error",
                "param": None,
                "code": None if status >= 500 else "invalid_api_key",
            }
        }
    return JSONResponse(body, status_code=status)


async def handle(request: Request) -> Response:
    stats["requests"] += 1
    raw = await request.body()
    received.append(
        {
            "method": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": base64.b64encode(raw).decode(),
        }
    )
    path = request.url.path
    if path.startswith("/v1/messages"):
        provider, key = "anthropic", request.headers.get("x-api-key")
    elif path.startswith(("/v1beta/", "/v1/models/")):
        provider, key = "google", request.headers.get("x-goog-api-key")
    else:
        provider, key = "openai", (request.headers.get("authorization") or "").removeprefix("Bearer ")
    if key != FAKE_KEY:
        return _error(provider, 401, f"Invalid API key: {key}")
    document = json.loads(raw) if raw else {}
    gemini = re.match(r"^/v1(?:beta)?/models/([^/:]+):(\w+)$", path)
    model = gemini.group(1) if gemini else document.get("model", "")
    behaviour = _behaviour(model)
    if behaviour == "fail500":
        return _error(provider, 500, "The fake provider failed.")
    if behaviour == "hang":
        await _hang_until_disconnect(request)
        return Response(status_code=499)
    if path == "/v1/messages/count_tokens":
        return JSONResponse({"input_tokens": 42})
    if path == "/v1/messages":
        events, whole = anthropic_messages(document)
        stream = document.get("stream") is True
    elif path.endswith("/responses"):
        events, whole = openai_responses(document)
        stream = document.get("stream") is True
    elif path.endswith("/chat/completions"):
        events, whole = openai_chat(document)
        stream = document.get("stream") is True
    elif gemini:
        if gemini.group(2) == "countTokens":
            return JSONResponse({"totalTokens": 42})
        events, whole = gemini_generate(document, model)
        stream = gemini.group(2) == "streamGenerateContent"
        if stream and request.query_params.get("alt") != "sse":
            return JSONResponse([json.loads(e.split(b"data: ", 1)[1]) for e in events])
    else:
        return JSONResponse({"error": {"message": f"fake: no route {path}"}}, status_code=404)
    if stream:
        return _stream(events, behaviour)
    return Response(
        json.dumps(whole, separators=(",", ":")), media_type="application/json", headers={"request-id": "req_fake01"}
    )


async def requests_seen(request: Request) -> Response:
    return JSONResponse(received)


async def stats_seen(request: Request) -> Response:
    return JSONResponse(stats)


app = Starlette(
    routes=[
        Route("/_requests", requests_seen),
        Route("/_stats", stats_seen),
        Route("/{path:path}", handle, methods=["GET", "POST"]),
    ]
)


if __name__ == "__main__":
    import uvicorn

    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning")
