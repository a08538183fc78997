"""Split Claude's Markdown answers into pieces Slack will post.

Claude answers in standard Markdown, which the bot posts in Slack ``markdown`` blocks; those
hold 12,000 characters in total per message (../shared/reference/slack.md §8), so a long
answer goes out as several messages, each of which must render on its own. Pure and free of
I/O so it can be unit tested without Slack.
"""

from __future__ import annotations

import bisect
import re
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["split_markdown"]

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
