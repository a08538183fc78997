"""Pure text helpers between Claude Code and Slack.

Claude answers in standard Markdown, which the bot posts in Slack ``markdown``
blocks (12,000 chars cumulative per message), and users write in Slack's
escaped markup, which Claude should see as plain text. Everything here is
deterministic and free of I/O so it can be unit tested without Slack.
"""

from __future__ import annotations

import bisect
import math
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "Redactor",
    "escape_mrkdwn",
    "footer",
    "mentioned_user_ids",
    "slack_to_plain",
    "split_markdown",
    "tool_status",
]

# ---------------------------------------------------------------------------
# split_markdown
# ---------------------------------------------------------------------------

# An opening code fence: optional indentation (Claude nests fences in list
# items), 3+ backticks or tildes, then an optional info string.
_FENCE_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")
_FENCE_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")
_HEADING = re.compile(r"[ ]{0,3}#{1,6}(?=[ \t\r\n]|\Z)")
_NON_WS = re.compile(r"\S")
_SPACE_RUN = re.compile(r"[ \t]+")


@dataclass(frozen=True)
class _Fence:
    """A fenced code block, as offsets into the text being split."""

    open_start: int  # start of the opening fence line
    open_end: int  # just after the opening line (and its newline)
    close_start: int  # start of the closing line; len(text) if never closed
    close_end: int  # just after the closing line; len(text) if never closed
    indent: str  # indentation of the opening line
    marker: str  # the fence itself, e.g. "```" or "~~~~"
    reopen: str  # line that reopens the block in a new piece, with "\n"


def _line_spans(text: str) -> list[tuple[int, int, int]]:
    """(start, end without newline, end with newline) for each "\\n" line.

    str.splitlines() is not used: it also breaks on \\r, \\x0c, \\u2028...,
    which Markdown does not treat as line ends.
    """
    spans: list[tuple[int, int, int]] = []
    pos, n = 0, len(text)
    while pos < n:
        nl = text.find("\n", pos)
        if nl == -1:
            spans.append((pos, n, n))
            break
        spans.append((pos, nl, nl + 1))
        pos = nl + 1
    return spans


def _scan(text: str) -> tuple[list[_Fence], list[tuple[int, int, int]], list[bool]]:
    """Find fenced code blocks (CommonMark rules, lenient on indentation).

    Returns the fences, the line spans, and per line whether it is inside or
    part of a fence (so headings in code are not taken for split points).
    """
    spans = _line_spans(text)
    fences: list[_Fence] = []
    in_code = [False] * len(spans)
    current: tuple[int, int, str, str, str] | None = None
    for idx, (start, end, end_nl) in enumerate(spans):
        line = text[start:end].rstrip("\r")
        if current is None:
            m = _FENCE_OPEN.fullmatch(line)
            if m is None:
                continue
            indent, marker, info = m.group(1), m.group(2), m.group(3)
            if marker[0] == "`" and "`" in info:
                continue  # an inline code span such as ```x```, not a fence
            reopen = marker + info.rstrip() + "\n"
            current = (start, end_nl, indent, marker, reopen)
            in_code[idx] = True
        else:
            in_code[idx] = True
            m = _FENCE_CLOSE.fullmatch(line)
            marker = current[3]
            if m and m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker):
                fences.append(_Fence(current[0], current[1], start, end_nl, *current[2:]))
                current = None
    if current is not None:  # unclosed: the block runs to the end of the text
        fences.append(_Fence(current[0], current[1], len(text), len(text), *current[2:]))
    return fences, spans, in_code


def _candidates(
    text: str,
    fences: list[_Fence],
    spans: list[tuple[int, int, int]],
    in_code: list[bool],
    in_fence_line: Callable[[int], bool],
) -> tuple[list[int], list[int], list[int]]:
    """Split positions by preference: paragraph, line, word.

    A position p means "the next piece starts at text[p]". Whitespace stays
    at the end of the earlier piece so each piece starts with content.
    """
    n = len(text)
    para: set[int] = set()
    line: set[int] = set()
    word: set[int] = set()
    prev_blank = False
    for idx, (start, end, _) in enumerate(spans):
        blank = not text[start:end].strip()
        if start > 0:
            line.add(start)
            if not blank and prev_blank:
                para.add(start)
            elif not in_code[idx] and _HEADING.match(text, start):
                para.add(start)
        prev_blank = blank
    for f in fences:
        # Around a code block is as good as a paragraph break. Just inside it
        # would leave an empty code block behind: never split there.
        if f.open_start > 0:
            para.add(f.open_start)
        if f.close_start < f.close_end < n:
            para.add(f.close_end)
        for empty_block in (f.open_end, f.close_start):
            para.discard(empty_block)
            line.discard(empty_block)
    for m in _SPACE_RUN.finditer(text):
        s, e = m.span()
        if e < n and s > 0 and text[s - 1] != "\n" and not text[e].isspace():
            if not in_fence_line(e):  # e.g. the space in "```py title=x"
                word.add(e)
    return sorted(para), sorted(line - para), sorted(word - line - para)


def split_markdown(text: str, limit: int = 11_000) -> list[str]:
    """Split a Markdown answer into pieces of at most ``limit`` characters.

    Slack caps the markdown blocks of one message at 12,000 characters in
    total, so a long answer has to go out as several messages; the default
    leaves room for a footer. Splits fall on paragraph, then line, then word
    boundaries (a hard split only for a line with no room otherwise), preferring
    a split in the second half of the available room over a worse kind of
    split. A piece that ends inside a fenced code block gets a closing fence
    and the next piece reopens it with the same info string, so each message
    renders on its own; those lines count towards the limit.

    Removing the added fence lines and joining the pieces gives back ``text``,
    except whitespace that could only have formed a whitespace-only piece
    (runs of blank space longer than a whole piece, or trailing blank space),
    which is dropped because such a piece cannot be posted.
    """
    if limit < 1:
        raise ValueError("limit must be positive")
    if not text.strip():
        return []
    n = len(text)
    if n <= limit:
        return [text]

    all_fences, spans, in_code = _scan(text)
    # A fence whose reopen + close lines would eat most of a piece is left as
    # plain text: its pieces render imperfectly, but always fit.
    fences = [
        f
        for f in all_fences
        if len(f.reopen) + len(f.indent) + len(f.marker) + 2 <= limit // 2
    ]
    open_ends = [f.open_end for f in fences]
    # Fence lines themselves: a hard split there would break the fence.
    fence_lines = sorted(
        span
        for f in fences
        for span in ((f.open_start, f.open_end), (f.close_start, f.close_end))
        if span[0] < span[1]
    )
    line_starts = [span[0] for span in fence_lines]
    content_end = len(text.rstrip())  # text[b:] has content iff b < this

    def fence_at(pos: int) -> _Fence | None:
        """The code block a split at ``pos`` would be inside of."""
        i = bisect.bisect_right(open_ends, pos) - 1
        if i >= 0 and pos <= fences[i].close_start:
            return fences[i]
        return None

    def in_fence_line(pos: int) -> bool:
        i = bisect.bisect_right(line_starts, pos) - 1
        return i >= 0 and fence_lines[i][0] < pos < fence_lines[i][1]

    def closer(s: int, b: int) -> str:
        """Closing fence for a piece text[s:b] that ends inside a code block."""
        f = fence_at(b)
        if f is None:
            return ""
        # Same indentation as the opening line if it is in this piece (a code
        # block in a list item); a reopened block starts at column 0.
        indent = f.indent if f.open_start >= s else ""
        return ("" if text[b - 1] == "\n" else "\n") + indent + f.marker

    def fits(s: int, b: int, opener: str) -> bool:
        return len(opener) + (b - s) + len(closer(s, b)) <= limit

    para, line, word = _candidates(text, fences, spans, in_code, in_fence_line)

    pieces: list[str] = []
    s = 0
    while s < content_end:
        start_fence = fence_at(s)
        opener = start_fence.reopen if start_fence else ""
        room = limit - len(opener)
        if n - s <= room:
            pieces.append(opener + text[s:])
            break
        if content_end - s <= room and n - content_end >= room:
            # Trailing blank space too long for any piece: let it go.
            pieces.append(opener + text[s : s + room])
            break

        first = _NON_WS.search(text, s)
        lowest = max(s, first.start() if first else s) + 1  # no blank piece
        highest = min(s + room, content_end - 1)  # no blank remainder
        b = 0
        for floor in (max(lowest, s + room // 2), lowest):
            for cands in (para, line, word):
                i = bisect.bisect_right(cands, highest) - 1
                while i >= 0 and cands[i] >= floor:
                    if fits(s, cands[i], opener):
                        b = cands[i]
                        break
                    i -= 1
                if b:
                    break
            if b:
                break
        if not b:  # hard split: a single line with no room anywhere
            b = highest if highest > s else s + room
            while b > s + 1 and (not fits(s, b, opener) or in_fence_line(b)):
                b -= 1
        body = text[s:b]
        if body.strip():
            pieces.append(opener + body + closer(s, b))
        s = b
    return pieces


# ---------------------------------------------------------------------------
# tool_status
# ---------------------------------------------------------------------------

_STATUS_MAX = 80
_URL = re.compile(r"https?://[^\s<>|`]+")


def _first_line(value: Any, max_len: int = _STATUS_MAX) -> str:
    """First non-empty line of ``value``, cut to ``max_len`` with an ellipsis.

    A status line must stay one short line whatever the tool was given.
    """
    if not isinstance(value, str):
        return ""
    lines = [ln.strip() for ln in value.strip().splitlines()]
    if not lines or not lines[0]:
        return ""
    first = lines[0]
    if len(first) > max_len:
        return first[: max_len - 1].rstrip() + "…"
    if len(lines) > 1:
        return first + " …"
    return first


def _code(value: str) -> str:
    """Inline code that survives backticks in ``value``.

    Backticks would end the span early, and Slack's mrkdwn has no
    double-backtick spans, so they are shown as a look-alike (U+02CB).
    The status line is mrkdwn, which reads ``<...>`` as a mention or link
    even in code, so &, < and > are escaped.
    """
    return "`" + escape_mrkdwn(value.replace("`", "\u02cb")) + "`"


def _basename(path: Any) -> str:
    """Last path component; the sandbox's absolute paths are just noise."""
    if not isinstance(path, str):
        return ""
    trimmed = path.strip().rstrip("/\\")
    return re.split(r"[/\\]", trimmed)[-1] if trimmed else ""


def _field(tool_input: Any, *keys: str) -> Any:
    """First present value among ``keys``; tolerates a non-dict input."""
    if not isinstance(tool_input, Mapping):
        return None
    for key in keys:
        value = tool_input.get(key)
        if value not in (None, ""):
            return value
    return None


def _subject(verb: str, value: str, fallback: str) -> str:
    return f"{verb} {_code(value)}" if value else fallback


def tool_status(name: str, tool_input: dict[str, Any]) -> str:
    """One short Slack mrkdwn line saying what Claude is doing with a tool.

    Values from the tool input are escaped (&, <, >), so a command such as
    ``echo <!channel>`` can neither ping anyone nor break the line's markup.

    Shown while a turn runs so users see progress; it must never raise, since
    tool inputs come from the model and may be missing or oddly typed.
    """
    try:
        return _tool_status(name, tool_input)
    except Exception:  # defensive: a status line is never worth a crash
        return "Using a tool"


def _tool_status(name: Any, tool_input: Any) -> str:
    tool = name.strip() if isinstance(name, str) else ""
    if tool == "Bash":
        command = _first_line(_field(tool_input, "command"))
        if command:
            return f"Running {_code(command)}"
        description = _first_line(_field(tool_input, "description"))
        return f"Running a command: {escape_mrkdwn(description)}" if description else "Running a command"
    if tool in ("Edit", "MultiEdit", "NotebookEdit"):
        target = _basename(_field(tool_input, "file_path", "notebook_path"))
        return _subject("Editing", _first_line(target), "Editing a file")
    if tool == "Write":
        target = _basename(_field(tool_input, "file_path"))
        return _subject("Writing", _first_line(target), "Writing a file")
    if tool in ("Read", "NotebookRead"):
        target = _basename(_field(tool_input, "file_path", "notebook_path"))
        return _subject("Reading", _first_line(target), "Reading a file")
    if tool == "LS":
        target = _basename(_field(tool_input, "path"))
        return _subject("Listing", _first_line(target), "Listing files")
    if tool in ("Glob", "Grep"):
        pattern = _first_line(_field(tool_input, "pattern"))
        return _subject("Searching for", pattern, "Searching the code")
    if tool == "WebFetch":
        url = _field(tool_input, "url")
        url = url.strip() if isinstance(url, str) else ""
        if _URL.fullmatch(url) and len(url) <= 300:
            return f"Fetching <{url}>"
        return _subject("Fetching", _first_line(url), "Fetching a web page")
    if tool == "WebSearch":
        query = _first_line(_field(tool_input, "query"))
        return _subject("Searching the web for", query, "Searching the web")
    if tool == "TodoWrite":
        return "Updating the plan"
    if tool in ("Task", "Agent"):
        description = _first_line(_field(tool_input, "description", "subagent_type"))
        return f"Running a subagent: {escape_mrkdwn(description)}" if description else "Running a subagent"
    label = _first_line(tool)
    return f"Using {_code(label)}" if label else "Using a tool"


# ---------------------------------------------------------------------------
# footer
# ---------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    """A finite, non-negative number, or None (bools and junk count as missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if not math.isfinite(value) or value < 0:
        return None
    return float(value)


def _duration(ms: float) -> str:
    tenths = round(ms / 100)
    if tenths < 600:
        return f"{tenths / 10:.1f}s"
    total = round(ms / 1000)
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m {seconds:02d}s"
    return f"{minutes}m {seconds:02d}s"


def footer(duration_ms: float | None, num_turns: int | None, cost_usd: float | None) -> str:
    """Summary line after an answer, e.g. "12.3s · 3 turns · $0.0123".

    Claude Code's result message may lack any of these, so missing or
    nonsensical values are left out rather than shown as zero.
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
        parts.append(f"${cost:.4f}" if cost < 1 else f"${cost:.2f}")
    return " · ".join(parts)


# ---------------------------------------------------------------------------
# Redactor
# ---------------------------------------------------------------------------

_MIN_SECRET = 8


def escape_mrkdwn(text: str) -> str:
    """Text shown literally in Slack mrkdwn (where <...> is a mention or link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Redactor:
    """Masks known secrets (API keys, tokens) in text bound for Slack.

    Claude may echo environment values into its answer or tool output; this
    is the last line of defence before anything is posted. Short values are
    ignored because masking them would shred ordinary words.
    """

    REPLACEMENT = "[redacted]"

    def __init__(self, secrets: Iterable[str | None]) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET}
        variants = kept | {escape_mrkdwn(s) for s in kept}
        # Longest first, so a secret containing another is masked whole.
        self._secrets: tuple[str, ...] = tuple(sorted(variants, key=lambda s: (-len(s), s)))

    def redact(self, text: str) -> str:
        """Replace every occurrence of every secret with "[redacted]".

        Overlapping occurrences are merged into one mask so no fragment of
        either secret survives; adjacent ones are masked separately.
        """
        if not self._secrets or not text:
            return text
        spans: list[tuple[int, int]] = []
        for secret in self._secrets:
            pos = text.find(secret)
            while pos != -1:
                spans.append((pos, pos + len(secret)))
                pos = text.find(secret, pos + 1)
        if not spans:
            return text
        spans.sort()
        merged: list[list[int]] = []
        for start, end in spans:
            if merged and start < merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        out: list[str] = []
        pos = 0
        for start, end in merged:
            out.append(text[pos:start])
            out.append(self.REPLACEMENT)
            pos = end
        out.append(text[pos:])
        return "".join(out)

    def redact_streaming(self, text: str) -> str:
        """`redact` for text that is still growing: a trailing piece that may be the start
        of a secret (the rest of which has not arrived yet) is held back."""
        text = self.redact(text)
        held = True
        while held:  # what is left may end with the start of another secret
            held = False
            for secret in self._secrets:
                size = next((n for n in range(min(len(secret) - 1, len(text)), 0, -1)
                             if text.endswith(secret[:n])), 0)
                if size:
                    text, held = text[:-size], True
        return text


# ---------------------------------------------------------------------------
# Slack markup -> plain text
# ---------------------------------------------------------------------------

# Slack escapes & < > in user text, so every <...> is markup: a user or
# channel mention, a special (!here, !subteam^…, !date^…) or a link.
_TOKEN = re.compile(r"<([@#!][^<>\n]*|[A-Za-z][A-Za-z0-9+.\-]*:[^<>\n]*)>")
_USER_MENTION = re.compile(r"<@([A-Z0-9]+)(?:\|[^<>\n]*)?>")
_BROADCASTS = ("here", "channel", "everyone", "group")


def _unescape(text: str) -> str:
    """Undo Slack's escaping; &amp; last so "&amp;lt;" stays "&lt;"."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def _token_text(body: str, user_names: Mapping[str, str]) -> str:
    target, sep, label = body.partition("|")
    label = _unescape(label)
    kind = target[:1]
    if kind == "@":
        user_id = target[1:]
        name = user_names.get(user_id) or label or user_id
        return "@" + name.lstrip("@")
    if kind == "#":
        return "#" + (label.lstrip("#") or target[1:])
    if kind == "!":
        command, *args = target[1:].split("^")
        if command in _BROADCASTS:
            return "@" + command
        if label:
            return label  # subteam "@team", a date's fallback text, ...
        return "@" + (args[0] if command == "subteam" and args else command)
    url = _unescape(target)
    bare = re.sub(r"^(?:https?://|mailto:|tel:)", "", url, flags=re.IGNORECASE)
    if not sep or not label or label == url:
        return bare if url.lower().startswith(("mailto:", "tel:")) else url
    if label in (bare, bare.rstrip("/")):
        return label  # Slack auto-linked what the user typed, e.g. example.com
    return f"{label} ({bare if url.lower().startswith(('mailto:', 'tel:')) else url})"


def slack_to_plain(
    text: str,
    user_names: Mapping[str, str] | None = None,
    bot_user_id: str | None = None,
) -> str:
    """Turn a user's Slack message into the plain text Claude should read.

    Mentions become readable names, links show label and URL, the bot's own
    mention (which merely addressed it) is dropped, and Slack's HTML-style
    escaping is undone. Code blocks get the same treatment because Slack
    escapes inside them too.
    """
    names: Mapping[str, str] = user_names or {}
    out: list[str] = []
    pos = 0
    for m in _TOKEN.finditer(text):
        out.append(_unescape(text[pos : m.start()]))
        body = m.group(1)
        end = m.end()
        if bot_user_id and body.partition("|")[0] == "@" + bot_user_id:
            while end < len(text) and text[end].isspace():
                end += 1
        else:
            out.append(_token_text(body, names))
        pos = end
    out.append(_unescape(text[pos:]))
    return "".join(out).strip()


def mentioned_user_ids(text: str) -> list[str]:
    """User ids mentioned as <@U…> in ``text``, first occurrence order, unique."""
    return list(dict.fromkeys(_USER_MENTION.findall(text)))
