"""Token usage from each provider's own usage fields, read from the bytes as they pass.

A ``Tap`` sees every chunk of an upstream response on its way to the client. It never
changes a byte (the one exception: ``ChatUsageStripper``). For event streams it splits
the bytes into server-sent events and parses only the events that carry usage:

=============  ==========================================================================
Anthropic      ``message_start.message.usage`` then ``message_delta.usage`` (input_tokens
               excludes cache_read_input_tokens and cache_creation_input_tokens)
Responses      ``response.completed`` (or ``.incomplete``/``.failed``) ``.response.usage``;
               input includes cached_tokens, output includes reasoning_tokens
Chat           the last chunk's ``usage`` (only with ``stream_options.include_usage``)
Gemini         the last ``usageMetadata``: promptTokenCount includes
               cachedContentTokenCount; candidatesTokenCount excludes thoughtsTokenCount
=============  ==========================================================================

``Usage`` is normalised to one convention: ``input_tokens`` is every input token, cache
included; ``output_tokens`` is every output token, reasoning included. So cache tokens are
never billed as plain input, and reasoning is never counted twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from otel_ingest.gateway.config import Provider

ApiType = str  # "messages", "responses", "chat_completions", "generate_content", ...


@dataclass
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_read_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_output_tokens: int | None = None

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def anthropic_usage(usage: dict[str, Any], previous: Usage | None = None) -> Usage:
    """``usage`` of a Messages response or of ``message_start``/``message_delta`` (whose
    fields, when present, replace the earlier ones: they are cumulative)."""
    base = previous or Usage()
    plain = _int(usage["input_tokens"]) if "input_tokens" in usage else None
    read = _int(usage["cache_read_input_tokens"]) if "cache_read_input_tokens" in usage else None
    write = _int(usage["cache_creation_input_tokens"]) if "cache_creation_input_tokens" in usage else None
    old_plain = base.input_tokens - base.cache_read_input_tokens - base.cache_creation_input_tokens
    read = base.cache_read_input_tokens if read is None else read
    write = base.cache_creation_input_tokens if write is None else write
    plain = old_plain if plain is None else plain
    output = _int(usage["output_tokens"]) if "output_tokens" in usage else base.output_tokens
    return Usage(
        input_tokens=plain + read + write,
        output_tokens=output,
        cache_read_input_tokens=read,
        cache_creation_input_tokens=write,
        reasoning_output_tokens=None,  # the Messages API does not report thinking tokens apart
    )


def responses_usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("input_tokens_details") or {}
    output_details = usage.get("output_tokens_details") or {}
    return Usage(
        input_tokens=_int(usage.get("input_tokens")),
        output_tokens=_int(usage.get("output_tokens")),
        cache_read_input_tokens=_int(details.get("cached_tokens")),
        # OpenAI does not report cache writes; some compatible servers do.
        cache_creation_input_tokens=_int(details.get("cache_write_tokens") or details.get("cache_creation_tokens")),
        reasoning_output_tokens=_int(output_details.get("reasoning_tokens")) if output_details else None,
    )


def chat_usage(usage: dict[str, Any]) -> Usage:
    details = usage.get("prompt_tokens_details") or {}
    output_details = usage.get("completion_tokens_details") or {}
    return Usage(
        input_tokens=_int(usage.get("prompt_tokens")),
        output_tokens=_int(usage.get("completion_tokens")),
        cache_read_input_tokens=_int(details.get("cached_tokens")),
        cache_creation_input_tokens=_int(details.get("cache_write_tokens")),
        reasoning_output_tokens=_int(output_details.get("reasoning_tokens")) if output_details else None,
    )


def gemini_usage(metadata: dict[str, Any]) -> Usage:
    thoughts = metadata.get("thoughtsTokenCount")
    return Usage(
        input_tokens=_int(metadata.get("promptTokenCount")) + _int(metadata.get("toolUsePromptTokenCount")),
        output_tokens=_int(metadata.get("candidatesTokenCount")) + _int(thoughts),
        cache_read_input_tokens=_int(metadata.get("cachedContentTokenCount")),
        reasoning_output_tokens=_int(thoughts) if thoughts is not None else None,
    )


def usage_of_body(api_type: ApiType, document: Any) -> Usage | None:
    """Usage of a whole (non-streamed) JSON response."""
    if isinstance(document, list) and document:  # streamGenerateContent without alt=sse: a JSON array
        document = document[-1]
    if not isinstance(document, dict):
        return None
    if api_type == "messages" and isinstance(document.get("usage"), dict):
        return anthropic_usage(document["usage"])
    if api_type == "responses" and isinstance(document.get("usage"), dict):
        return responses_usage(document["usage"])
    if api_type == "chat_completions" and isinstance(document.get("usage"), dict):
        return chat_usage(document["usage"])
    if api_type == "generate_content" and isinstance(document.get("usageMetadata"), dict):
        return gemini_usage(document["usageMetadata"])
    return None


class EventSplitter:
    """Finds server-sent events in a byte stream without looking at every byte in Python.

    ``complete`` returns the part of the stream that ends on an event boundary (the rest
    waits for the next chunk); ``spans`` locates, in that region, either every event or
    only the events containing one of some marker strings — found with ``bytes.find``, so
    a stream of thousands of text deltas costs a few C-level scans per chunk.
    """

    def __init__(self) -> None:
        self._tail = b""
        self.separator: bytes | None = None

    def complete(self, chunk: bytes) -> bytes:
        data = self._tail + chunk if self._tail else chunk
        if self.separator is None:
            lf, crlf = data.find(b"\n\n"), data.find(b"\r\n\r\n")
            if lf < 0 and crlf < 0:
                self._tail = data
                return b""
            self.separator = b"\r\n\r\n" if crlf >= 0 and (lf < 0 or crlf < lf) else b"\n\n"
        cut = data.rfind(self.separator)
        if cut < 0:
            self._tail = data
            return b""
        end = cut + len(self.separator)
        self._tail = data[end:]
        return data[:end]

    def rest(self) -> bytes:
        rest, self._tail = self._tail, b""
        return rest

    def spans(self, region: bytes, markers: tuple[bytes, ...] | None) -> list[tuple[int, int]]:
        """(start, end) of the events of ``region`` (all, or those holding a marker), in order."""
        separator = self.separator or b"\n\n"
        size = len(separator)
        if markers is None:
            spans, start = [], 0
            for part in region.split(separator)[:-1]:
                spans.append((start, start + len(part) + size))
                start += len(part) + size
            return spans
        found = set()
        for marker in markers:
            position = region.find(marker)
            while position >= 0:
                start = region.rfind(separator, 0, position)
                start = 0 if start < 0 else start + size
                end = region.find(separator, position)
                end = len(region) if end < 0 else end + size
                found.add((start, end))
                position = region.find(marker, end)
        return sorted(found)


# What an event must contain to matter for usage or errors, per API.
MARKERS: dict[str, tuple[bytes, ...]] = {
    "messages": (b"message_start", b"message_delta", b"event: error"),
    "responses": (
        b"response.completed",
        b"response.incomplete",
        b"response.failed",
        b"event: error",
        b'"type":"error"',
    ),
    "chat_completions": (b'"usage"', b'"error"'),
    "generate_content": (b"usageMetadata", b'"error"'),
}


def parse_event(raw: bytes) -> tuple[str, bytes]:
    """(event name, data) of one server-sent event."""
    name = ""
    data: list[bytes] = []
    for line in raw.splitlines():
        if line.startswith(b"data:"):
            data.append(line[6:] if line[5:6] == b" " else line[5:])
        elif line.startswith(b"event:"):
            name = line[6:].strip().decode("utf-8", "replace")
    return name, b"\n".join(data)


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


class Tap:
    """Reads usage (and, when asked, the whole response) from the bytes passing through."""

    def __init__(self, api_type: ApiType, streaming: bool, collect_limit: int = 0) -> None:
        self.api_type = api_type
        self.streaming = streaming
        self.usage: Usage | None = None
        self.error: str | None = None  # a provider error seen inside the stream
        self.collect_limit = collect_limit  # bytes of response kept for the inference table
        self.collected: list[bytes] = []
        self.collected_bytes = 0
        self.truncated = False
        self.total_bytes = 0
        self._splitter = EventSplitter()
        self._body: list[bytes] = []

    def feed(self, chunk: bytes) -> bytes:
        """Look at ``chunk``; returns the bytes to forward (``chunk`` itself, here)."""
        self.total_bytes += len(chunk)
        if self.streaming:
            region = self._splitter.complete(chunk)
            if region:
                if self.collect_limit and not self.truncated:
                    self._keep(region)  # re-assembled after the call, off the relay's path
                for start, end in self._spans(region):
                    self._event(region[start:end])
        else:
            self._body.append(chunk)
        return chunk

    def _spans(self, region: bytes) -> list[tuple[int, int]]:
        return self._splitter.spans(region, MARKERS.get(self.api_type, ()))

    def finish(self) -> bytes:
        """Called once the upstream response ended; returns bytes still to forward."""
        if self.streaming:
            rest = self._splitter.rest()
            if rest.strip():
                self._event(rest)
                if self.collect_limit and not self.truncated:
                    self._keep(rest)
        else:
            body = b"".join(self._body)
            document = _json(body)
            self.usage = usage_of_body(self.api_type, document)
            if self.collect_limit:
                self._keep(body)
        return b""

    def _keep(self, data: bytes) -> None:
        room = self.collect_limit - self.collected_bytes
        if len(data) > room:
            self.truncated = True
            data = data[: max(room, 0)]
        if data:
            self.collected.append(data)
            self.collected_bytes += len(data)

    def _event(self, raw: bytes) -> None:
        name, data = parse_event(raw)
        if not data or data == b"[DONE]":
            return
        api = self.api_type
        document: Any = None
        if api == "messages":
            if name in ("message_start", "message_delta", "error") or (not name and b'"usage"' in data):
                document = _json(data)
                if isinstance(document, dict):
                    if document.get("type") == "message_start":
                        usage = (document.get("message") or {}).get("usage")
                        if isinstance(usage, dict):
                            self.usage = anthropic_usage(usage)
                    elif document.get("type") == "message_delta" and isinstance(document.get("usage"), dict):
                        self.usage = anthropic_usage(document["usage"], self.usage)
                    elif document.get("type") == "error":
                        self.error = json.dumps(document.get("error"))[:500]
        elif api == "responses":
            if name in ("response.completed", "response.incomplete", "response.failed", "error") or (
                not name and (b'"response.completed"' in data or b'"response.failed"' in data)
            ):
                document = _json(data)
                if isinstance(document, dict):
                    response = document.get("response")
                    if isinstance(response, dict) and isinstance(response.get("usage"), dict):
                        self.usage = responses_usage(response["usage"])
                    if document.get("type") in ("response.failed", "error"):
                        failure = (response or {}).get("error") if isinstance(response, dict) else document
                        self.error = json.dumps(failure)[:500]
        elif api == "chat_completions":
            if b'"usage"' in data and b'"usage":null' not in data and b'"usage": null' not in data:
                document = _json(data)
                if isinstance(document, dict) and isinstance(document.get("usage"), dict):
                    self.usage = chat_usage(document["usage"])
            elif data.startswith(b'{"error"'):
                self.error = data[:500].decode("utf-8", "replace")
        elif api == "generate_content":
            if b"usageMetadata" in data:
                document = _json(data)
                if isinstance(document, dict) and isinstance(document.get("usageMetadata"), dict):
                    self.usage = gemini_usage(document["usageMetadata"])
            elif b'"error"' in data[:20]:
                self.error = data[:500].decode("utf-8", "replace")

    def response_text(self) -> str | None:
        """The response for the inference table: the body, or the stream re-assembled (call
        it off the event loop: it parses every event kept)."""
        if self.streaming and self.collected:
            assembler = Assembler(self.api_type)
            stream = b"".join(self.collected)
            splitter = EventSplitter()
            region = splitter.complete(stream)
            events = [region[a:b] for a, b in splitter.spans(region, None)] if region else []
            rest = splitter.rest()
            if rest.strip():
                events.append(rest)
            for event in events:
                name, data = parse_event(event)
                if data and data != b"[DONE]":
                    assembler.add(name, _json(data))
            return json.dumps(assembler.result(), separators=(",", ":"))[: self.collect_limit]
        if not self.collected:
            return None
        return b"".join(self.collected).decode("utf-8", "replace")


class ChatUsageStripper(Tap):
    """A Chat Completions stream for which the gateway asked ``include_usage`` that the
    client did not: the usage-only chunk (``choices: []``) is read and not forwarded.
    The only place where the gateway changes bytes of a response; see docs/gateway.md."""

    def __init__(self, collect_limit: int = 0) -> None:
        super().__init__("chat_completions", True, collect_limit)

    def feed(self, chunk: bytes) -> bytes:
        self.total_bytes += len(chunk)
        region = self._splitter.complete(chunk)
        out, kept = [], 0
        for start, end in self._spans(region) if region else ():
            event = region[start:end]
            self._event(event)
            if self._is_usage_only(event):
                out.append(region[kept:start])
                kept = end
        out.append(region[kept:])
        return b"".join(out)

    def finish(self) -> bytes:
        rest = self._splitter.rest()
        if rest.strip():
            self._event(rest)
            if self._is_usage_only(rest):
                return b""
        return rest

    @staticmethod
    def _is_usage_only(event: bytes) -> bool:
        if b'"usage"' not in event or b'"choices":[]' not in event.replace(b" ", b""):
            return False
        document = _json(parse_event(event)[1])
        return isinstance(document, dict) and document.get("choices") == [] and isinstance(document.get("usage"), dict)


class Assembler:
    """Re-assembles a streamed response into the provider's non-streamed response shape."""

    def __init__(self, api_type: ApiType) -> None:
        self.api_type = api_type
        self.document: dict[str, Any] = {}
        self.blocks: dict[int, dict[str, Any]] = {}
        self.choices: dict[int, dict[str, Any]] = {}
        self.parts: list[dict[str, Any]] = []

    def add(self, name: str, event: Any) -> None:
        if not isinstance(event, dict):
            return
        kind = event.get("type", name)
        if self.api_type == "messages":
            self._anthropic(kind, event)
        elif self.api_type == "responses":
            if kind in ("response.completed", "response.incomplete", "response.failed"):
                self.document = event.get("response") or {}
        elif self.api_type == "chat_completions":
            self._chat(event)
        elif self.api_type == "generate_content":
            self._gemini(event)

    def _anthropic(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "message_start":
            self.document = dict(event.get("message") or {})
        elif kind == "content_block_start":
            self.blocks[event.get("index", 0)] = dict(event.get("content_block") or {})
        elif kind == "content_block_delta":
            block = self.blocks.setdefault(event.get("index", 0), {})
            delta = event.get("delta") or {}
            for source, target in (
                ("text", "text"),
                ("thinking", "thinking"),
                ("signature", "signature"),
                ("partial_json", "_json"),
            ):
                if source in delta:
                    block[target] = block.get(target, "") + str(delta[source])
        elif kind == "message_delta":
            self.document.update(event.get("delta") or {})
            if isinstance(event.get("usage"), dict):
                self.document["usage"] = {**(self.document.get("usage") or {}), **event["usage"]}

    def _chat(self, event: dict[str, Any]) -> None:
        for key in ("id", "model", "created", "system_fingerprint"):
            if key in event:
                self.document[key] = event[key]
        if isinstance(event.get("usage"), dict):
            self.document["usage"] = event["usage"]
        for choice in event.get("choices") or []:
            index = choice.get("index", 0)
            merged = self.choices.setdefault(index, {"index": index, "message": {"role": "assistant"}})
            delta = choice.get("delta") or {}
            message = merged["message"]
            if delta.get("content"):
                message["content"] = (message.get("content") or "") + delta["content"]
            for call in delta.get("tool_calls") or []:
                calls = message.setdefault("tool_calls", [])
                position = call.get("index", 0)
                while len(calls) <= position:
                    calls.append({"type": "function", "function": {"name": "", "arguments": ""}})
                target = calls[position]
                if "id" in call:
                    target["id"] = call["id"]
                function = call.get("function") or {}
                target["function"]["name"] += function.get("name") or ""
                target["function"]["arguments"] += function.get("arguments") or ""
            if choice.get("finish_reason"):
                merged["finish_reason"] = choice["finish_reason"]

    def _gemini(self, event: dict[str, Any]) -> None:
        for key in ("modelVersion", "responseId", "usageMetadata"):
            if key in event:
                self.document[key] = event[key]
        for candidate in event.get("candidates") or []:
            for part in (candidate.get("content") or {}).get("parts") or []:
                last = self.parts[-1] if self.parts else None
                if (
                    last is not None
                    and set(part) <= {"text", "thought"}
                    and set(last) <= {"text", "thought"}
                    and "text" in part
                    and "text" in last
                    and part.get("thought") == last.get("thought")
                ):
                    last["text"] += part["text"]
                else:
                    self.parts.append(dict(part))
            if candidate.get("finishReason"):
                self.document["finishReason"] = candidate["finishReason"]

    def result(self) -> dict[str, Any]:
        if self.api_type == "messages":
            content = []
            for _, block in sorted(self.blocks.items()):
                if "_json" in block:
                    raw = block.pop("_json")
                    try:
                        block["input"] = json.loads(raw) if raw else {}
                    except ValueError:
                        block["input"] = raw
                content.append(block)
            return {**self.document, "content": content}
        if self.api_type == "chat_completions":
            return {
                **self.document,
                "object": "chat.completion",
                "choices": [c for _, c in sorted(self.choices.items())],
            }
        if self.api_type == "generate_content":
            finish = self.document.pop("finishReason", None)
            candidate: dict[str, Any] = {"content": {"role": "model", "parts": self.parts}}
            if finish:
                candidate["finishReason"] = finish
            return {"candidates": [candidate], **self.document}
        return self.document


def tap_for(provider: Provider, api_type: ApiType, streaming: bool, strip_usage: bool, collect: int) -> Tap:
    if strip_usage:
        return ChatUsageStripper(collect)
    return Tap(api_type, streaming, collect)
