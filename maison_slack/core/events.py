"""Turn Claude Code's `--output-format stream-json` lines into `StreamEvent`s.

The CLI (with `--include-partial-messages`) reports text twice: as `text_delta` stream events
while Claude writes, and again as a whole block in an `assistant` event. We stream the deltas
and drop the repeat, but keep whole blocks that had no deltas (e.g. the CLI's synthetic
"API Error" message), so no text is lost and none is delivered twice.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

logger = logging.getLogger(__name__)

@dataclass
class StreamEvent:
    """One thing that happened in a Claude Code run.

    `type` is one of thinking, text, tool_use, tool_result, result, system, stderr (or an
    unknown raw type, passed through unchanged), `data` the raw
    JSON the event came from (for `tool_use` and `tool_result`: the content block, with the
    event's `session_id`), and `content` the text it carries.
    """

    type: str
    data: dict[str, Any] = field(default_factory=dict)
    content: str = ""

    @property
    def is_error(self) -> bool:
        """True for a `result` that reports a failed run."""
        return self.type == "result" and bool(self.data.get("is_error"))


def _result_text(content: Any) -> str:
    """A tool_result's content is a string or a list of content blocks."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(
            block.get("text", "") for block in content if isinstance(block, dict) and block.get("type") == "text"
        )
    return ""


class StreamParser:
    """Incremental NDJSON parser: feed it text chunks (not lines), get events back."""

    def __init__(self) -> None:
        self._buffer = ""
        self._streamed_messages: set[str] = set()
        self._current_message_id: str | None = None

    def feed(self, chunk: str) -> list[StreamEvent]:
        self._buffer += chunk
        if "\n" not in chunk:
            return []
        *lines, self._buffer = self._buffer.split("\n")
        events: list[StreamEvent] = []
        for line in lines:
            events.extend(self.parse_line(line))
        return events

    def finish(self) -> list[StreamEvent]:
        """Parse a last line that had no newline (a run cut short)."""
        rest, self._buffer = self._buffer, ""
        return self.parse_line(rest)

    def parse_line(self, line: str) -> list[StreamEvent]:
        line = line.strip()
        if not line:
            return []
        try:
            raw = json.loads(line)
        except ValueError:
            logger.warning("Skipping a line of Claude Code output that is not JSON: %.200r", line)
            return []
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            logger.warning("Skipping a line of Claude Code output without a type: %.200r", line)
            return []
        handler = {
            "stream_event": self._stream_event,
            "assistant": self._assistant,
            "user": self._user,
            "system": lambda r: [StreamEvent("system", r, str(r.get("subtype", "")))],
            "result": self._result,
        }.get(raw["type"])
        if handler is None:
            return [StreamEvent(raw["type"], raw, "")]
        try:
            return handler(raw)
        except (AttributeError, KeyError, TypeError):
            logger.warning("Skipping a malformed %s event: %.200r", raw["type"], line)
            return []

    def _stream_event(self, raw: dict[str, Any]) -> list[StreamEvent]:
        event = raw.get("event") or {}
        kind = event.get("type")
        if kind == "message_start":
            self._current_message_id = (event.get("message") or {}).get("id")
            return []
        if kind != "content_block_delta":
            return []
        delta = event.get("delta") or {}
        message_id = raw.get("api_message_id") or self._current_message_id
        if delta.get("type") == "text_delta":
            self._streamed_messages.add(message_id)
            return [StreamEvent("text", raw, delta.get("text", ""))]
        if delta.get("type") == "thinking_delta":
            self._streamed_messages.add(message_id)
            return [StreamEvent("thinking", raw, delta.get("thinking", ""))]
        return []

    def _assistant(self, raw: dict[str, Any]) -> list[StreamEvent]:
        message = raw.get("message") or {}
        already_streamed = message.get("id") in self._streamed_messages
        events: list[StreamEvent] = []
        for block in message.get("content") or []:
            kind = block.get("type")
            if kind == "tool_use":
                data = {**block, "session_id": raw.get("session_id"), "parent_tool_use_id": raw.get("parent_tool_use_id")}
                events.append(StreamEvent("tool_use", data, block.get("name", "")))
            elif kind == "text" and not already_streamed:
                events.append(StreamEvent("text", raw, block.get("text", "")))
            elif kind == "thinking" and not already_streamed:
                events.append(StreamEvent("thinking", raw, block.get("thinking", "")))
        return events

    def _user(self, raw: dict[str, Any]) -> list[StreamEvent]:
        content = (raw.get("message") or {}).get("content")
        if not isinstance(content, list):
            return []
        return [
            StreamEvent(
                "tool_result",
                {**block, "session_id": raw.get("session_id"), "tool_use_result": raw.get("tool_use_result")},
                _result_text(block.get("content")),
            )
            for block in content
            if isinstance(block, dict) and block.get("type") == "tool_result"
        ]

    @staticmethod
    def _result(raw: dict[str, Any]) -> list[StreamEvent]:
        text = raw.get("result")
        if not isinstance(text, str):
            text = "; ".join(str(e) for e in raw.get("errors") or [])
        return [StreamEvent("result", raw, text)]
