"""The usage tap reads the same usage however the stream is cut into chunks, with LF or CRLF
event separators, and forwards every byte unchanged (the Chat usage stripper drops exactly the
usage-only chunk)."""

from __future__ import annotations

from typing import Any

import fake_providers as fp
from hypothesis import given, settings
from hypothesis import strategies as st

from otel_ingest.gateway.usage import ChatUsageStripper, Tap, Usage

STREAMS: dict[str, tuple[str, bytes, Usage]] = {
    "messages": (
        "messages",
        b"".join(fp.anthropic_messages({"model": "m"})[0]),
        Usage(23, 13, 5, 7, None),
    ),
    "responses": ("responses", b"".join(fp.openai_responses({"model": "m"})[0]), Usage(31, 19, 17, 0, 8)),
    "chat": (
        "chat_completions",
        b"".join(fp.openai_chat({"model": "m", "stream_options": {"include_usage": True}})[0]),
        Usage(41, 23, 9, 0, 6),
    ),
    "gemini": ("generate_content", b"".join(fp.gemini_generate({}, "m")[0]), Usage(53, 41, 21, 0, 12)),
}


def _cut(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, start = [], 0
    for point in [*points, len(data)]:
        pieces.append(data[start:point])
        start = point
    return [p for p in pieces if p]


def _run(tap: Tap, pieces: list[bytes]) -> bytes:
    out = b"".join(tap.feed(piece) for piece in pieces)
    return out + tap.finish()


@settings(max_examples=200, deadline=None)
@given(
    name=st.sampled_from(list(STREAMS)),
    cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=30),
    crlf=st.booleans(),
    collect=st.sampled_from([0, 1 << 20, 100]),
)
def test_usage_is_the_same_however_the_stream_is_cut(name: str, cuts: list[int], crlf: bool, collect: int) -> None:
    api_type, stream, expected = STREAMS[name]
    if crlf:
        stream = stream.replace(b"\n", b"\r\n")
    tap = Tap(api_type, True, collect)
    assert _run(tap, _cut(stream, cuts)) == stream
    assert tap.usage == expected
    if collect:
        text = tap.response_text()
        assert text is not None and len(text) <= collect
        assert tap.truncated == (collect < len(stream))


@settings(max_examples=100, deadline=None)
@given(cuts=st.lists(st.integers(min_value=0, max_value=100_000), max_size=30))
def test_stripper_drops_only_the_usage_chunk(cuts: list[int]) -> None:
    _, stream, expected = STREAMS["chat"]
    events = stream.split(b"\n\n")
    usage_events = [e for e in events if b'"choices":[]' in e]
    assert len(usage_events) == 1
    tap = ChatUsageStripper()
    assert _run(tap, _cut(stream, cuts)) == stream.replace(usage_events[0] + b"\n\n", b"")
    assert tap.usage == expected


def test_reassembled_anthropic_stream_equals_the_whole_message() -> None:
    events, whole = fp.anthropic_messages({"model": "m", "tools": [{"name": "Read"}], "messages": []})
    tap = Tap("messages", True, 1 << 20)
    _run(tap, events)
    import json

    document: Any = json.loads(tap.response_text() or "null")
    assert document == whole  # tool_use input parsed back from its JSON deltas
