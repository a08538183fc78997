"""The stream-json parser against verbatim output of the real CLI (tests/fixtures/captures)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from maison_slack.core.events import StreamParser

CAPTURES = Path(__file__).parent / "fixtures" / "captures"


def parse(name: str, chunk_size: int | None = None) -> list:
    text = (CAPTURES / name).read_text()
    parser = StreamParser()
    events = []
    step = chunk_size or len(text)
    for i in range(0, len(text), step):
        events.extend(parser.feed(text[i : i + step]))
    return events + parser.finish()


def final_assistant_text(name: str) -> str:
    texts = []
    for line in (CAPTURES / name).read_text().splitlines():
        raw = json.loads(line)
        if raw["type"] == "assistant":
            texts += [b["text"] for b in raw["message"]["content"] if b["type"] == "text"]
    return "".join(texts)


@pytest.mark.parametrize("chunk_size", [None, 1, 7, 4096])
def test_text_arrives_as_deltas_once(chunk_size):
    events = parse("02_text_partial.jsonl", chunk_size)
    texts = [e for e in events if e.type == "text"]
    assert len(texts) > 1, "text must stream as several deltas"
    assert "".join(e.content for e in texts) == final_assistant_text("02_text_partial.jsonl")
    assert [e.type for e in events][-1] == "result"
    assert events[-1].content == "Hello from the fake Anthropic server."


@pytest.mark.parametrize("name", ["03_tool_partial.jsonl", "v2.1.197_03_tool_partial.jsonl"])
def test_tool_round_trip_in_order(name):
    events = parse(name)
    kinds = [e.type for e in events if e.type != "system"]
    first_tool = kinds.index("tool_use")
    assert "text" in kinds[:first_tool]
    assert kinds[first_tool + 1] == "tool_result"
    assert "text" in kinds[first_tool + 2 :]
    assert kinds[-1] == "result"
    tool = events[[e.type for e in events].index("tool_use")]
    assert tool.data["name"] == "Bash" and tool.data["input"]["command"] == "echo hi > hello.txt"
    assert "".join(e.content for e in events if e.type == "text") == final_assistant_text(name)


def test_thinking_deltas():
    events = parse("05_thinking_partial.jsonl")
    thinking = "".join(e.content for e in events if e.type == "thinking")
    assert thinking == "Let me think about this briefly."
    assert "".join(e.content for e in events if e.type == "text") == "Thought about it: 42."


def test_api_error_text_is_kept_and_result_is_error():
    events = parse("09_api_error.jsonl")
    text = "".join(e.content for e in events if e.type == "text")
    assert text.startswith("API Error: 500")
    assert events[-1].type == "result" and events[-1].is_error


def test_error_result_without_result_key_uses_errors():
    events = parse("21_resume_unknown_id.jsonl")
    assert events[-1].is_error and "No conversation found" in events[-1].content


def test_malformed_partial_and_unknown_lines_never_crash():
    parser = StreamParser()
    events = parser.feed('not json\n{"type": 3}\n[1,2]\n{"type":"rate_limit_event","x":1}\n{"type":"assistant","message":5}\n')
    events += parser.feed('{"type":"result","is_error":false,"result":"ok"}')
    events += parser.finish()
    assert [e.type for e in events] == ["rate_limit_event", "result"]
    assert events[-1].content == "ok"


def test_truncated_last_line_is_dropped_cleanly():
    parser = StreamParser()
    assert [e.type for e in parser.feed('{"type":"system","subtype":"init"}\n{"type":"resu')] == ["system"]
    assert parser.finish() == []
