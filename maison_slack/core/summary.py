"""What a Claude Code run is doing and what it cost, in words any front end can show.

Slack and `maison-cli` both name tool calls ("Running npm test") and end a run with its figures
("12.3s · 3 turns · $0.0123"). The wording lives here, as plain text, so the two say the same
thing; each front end only adds its own markup.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

__all__ = ["ToolCall", "describe_tool", "format_usd", "run_cost", "run_model", "run_stats"]

#: A subject longer than this is cut: a tool line must stay one short line whatever the model sent.
_SUBJECT_MAX = 80


class ToolCall(NamedTuple):
    """What one tool call does: an action and, when the input names one, its subject.

    The subject is a literal from the tool input (a command, a file name, a pattern), except
    after an action ending in a colon ("Running a subagent:"), where it is a description
    Claude wrote; front ends may show literals as code and descriptions as text.
    """

    action: str
    subject: str = ""

    def __str__(self) -> str:
        """Plain text, e.g. "Running npm test" or "Updating the plan"."""
        return f"{self.action} {self.subject}" if self.subject else self.action


class _Rule(NamedTuple):
    """How to describe one tool."""

    action: str  # shown before the subject, e.g. "Editing"
    keys: tuple[str, ...]  # input fields that may hold the subject; the first given one wins
    fallback: str  # the whole description when no field gives a subject
    is_path: bool = False  # the subject is a path: only its last component says anything


_FILE_KEYS = ("file_path", "notebook_path")
_EDIT = _Rule("Editing", _FILE_KEYS, "Editing a file", is_path=True)
_READ = _Rule("Reading", _FILE_KEYS, "Reading a file", is_path=True)
_SEARCH = _Rule("Searching for", ("pattern",), "Searching the code")
_SUBAGENT = _Rule("Running a subagent:", ("description", "subagent_type"), "Running a subagent")

# Claude Code's built-in tools and the fields of their `tool_use` input that name what they act
# on (an example block: ../shared/reference/claude-code.md §3.4). Any other tool (MCP servers',
# ones added later) is "Using <name>".
_RULES: dict[str, _Rule] = {
    "Bash": _Rule("Running", ("command",), "Running a command"),
    "Edit": _EDIT,
    "MultiEdit": _EDIT,
    "NotebookEdit": _EDIT,
    "Write": _Rule("Writing", ("file_path",), "Writing a file", is_path=True),
    "Read": _READ,
    "NotebookRead": _READ,
    "LS": _Rule("Listing", ("path",), "Listing files", is_path=True),
    "Glob": _SEARCH,
    "Grep": _SEARCH,
    "WebFetch": _Rule("Fetching", ("url",), "Fetching a web page"),
    "WebSearch": _Rule("Searching the web for", ("query",), "Searching the web"),
    "TodoWrite": _Rule("Updating the plan", (), "Updating the plan"),
    "Task": _SUBAGENT,
    "Agent": _SUBAGENT,
}


def describe_tool(name: Any, tool_input: Any, redact: Callable[[str], str] | None = None) -> ToolCall:
    """What a tool call does, e.g. Bash {"command": "npm test"} -> ToolCall("Running", "npm test").

    `redact` masks secrets in what the input says, before anything is shortened: a secret cut
    in half no longer matches, and its first half would be shown. Never raises: tool inputs
    come from the model and may be missing or oddly typed, and a progress line is never worth
    a crashed run.
    """
    try:
        return _describe(name, tool_input, redact or (lambda text: text))
    except Exception:  # defensive, see above
        return ToolCall("Using a tool")


def _describe(name: Any, tool_input: Any, redact: Callable[[str], str]) -> ToolCall:
    tool = name.strip() if isinstance(name, str) else ""
    rule = _RULES.get(tool)
    if rule is None:
        label = _first_line(redact(tool))
        return ToolCall("Using", label) if label else ToolCall("Using a tool")
    value = _text(_field(tool_input, *rule.keys), redact)
    subject = _first_line(_basename(value) if rule.is_path else value)
    if subject:
        return ToolCall(rule.action, subject)
    if tool == "Bash":  # no command: the description Claude gave it still says something
        description = _first_line(_text(_field(tool_input, "description"), redact))
        if description:
            return ToolCall("Running a command:", description)
    return ToolCall(rule.fallback)


def _text(value: Any, redact: Callable[[str], str]) -> str:
    """``value`` redacted when it is a string; anything else says nothing."""
    return redact(value) if isinstance(value, str) else ""


def _first_line(value: str) -> str:
    """First non-empty line of ``value``, cut to _SUBJECT_MAX, " …" when more lines follow."""
    lines = [line.strip() for line in value.strip().splitlines()]
    if not lines or not lines[0]:
        return ""
    first = lines[0]
    if len(first) > _SUBJECT_MAX:
        return first[: _SUBJECT_MAX - 1].rstrip() + "…"
    return first + " …" if len(lines) > 1 else first


def _basename(path: str) -> str:
    """Last path component; the sandbox's absolute paths are just noise."""
    trimmed = path.strip().rstrip("/\\")
    return re.split(r"[/\\]", trimmed)[-1] if trimmed else ""


def _field(tool_input: Any, *keys: str) -> Any:
    """First value given among ``keys``; tolerates a non-dict input."""
    if not isinstance(tool_input, Mapping):
        return None
    for key in keys:
        value = tool_input.get(key)
        if value not in (None, ""):
            return value
    return None


def format_usd(amount: float) -> str:
    """Dollars as people read them: cents above $1, tenths of a cent below (runs cost little)."""
    return f"${amount:.4f}" if amount < 1 else f"${amount:.2f}"


def run_cost(result: Mapping[str, Any]) -> float | None:
    """What this run cost, from Claude Code's `result`. `total_cost_usd` counts the whole
    conversation when a run resumes one; `model_usage_since_last_result` only this run
    (../shared/reference/claude-code.md §9.4), so it wins when present."""
    since = result.get("model_usage_since_last_result")
    if isinstance(since, Mapping) and since:
        costs = [_number(usage.get("costUSD")) for usage in since.values() if isinstance(usage, Mapping)]
        if costs and all(cost is not None for cost in costs):
            return sum(cost for cost in costs if cost is not None)
    return _number(result.get("total_cost_usd"))


def run_model(result: Mapping[str, Any]) -> str | None:
    """The model this run used (the one that cost most, when a run used several)."""
    for key in ("model_usage_since_last_result", "modelUsage"):
        usage = result.get(key)
        if isinstance(usage, Mapping) and usage:
            name = max(usage, key=lambda model: _number((usage[model] or {}).get("costUSD")) or 0.0)
            return re.sub(r"\[1m\]$", "", str(name))
    return None


def run_stats(duration_ms: float | None, num_turns: int | None, cost_usd: float | None,
              model: str | None = None) -> str:
    """A finished run's figures, e.g. "12.3s · 3 turns · $0.0123 · claude-opus-5-5".

    Claude Code's `result` message (../shared/reference/claude-code.md §3.7) may lack any of these,
    so missing or nonsensical values are left out rather than shown as zero.
    """
    parts: list[str] = []
    duration = _number(duration_ms)
    if duration is not None:
        parts.append(_duration(duration))
    turns = _number(num_turns)
    if turns is not None:
        count = int(turns)
        parts.append(f"{count} turn" if count == 1 else f"{count} turns")
    cost = _number(cost_usd)
    if cost is not None:
        parts.append(format_usd(cost))
    if model:
        parts.append(model)
    return " · ".join(parts)


def _number(value: Any) -> float | None:
    """A finite, non-negative number, or None (bools and junk count as missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _duration(ms: float) -> str:
    """Tenths of a second under a minute (short runs differ there), whole seconds above."""
    tenths = round(ms / 100)
    if tenths < 600:
        return f"{tenths / 10:.1f}s"
    total = round(ms / 1000)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{minutes}m {seconds:02d}s"
