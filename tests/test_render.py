"""Unit tests for maison_slack.slack.render (pure functions, no Slack)."""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

import pytest

from maison_slack.slack.render import (
    Redactor,
    footer,
    mentioned_user_ids,
    slack_to_plain,
    split_markdown,
    tool_status,
)

# ---------------------------------------------------------------------------
# An independent, deliberately simple fence tracker used to check the pieces.
# ---------------------------------------------------------------------------

_OPEN = re.compile(r"([ \t]*)(`{3,}|~{3,})(.*)")
_CLOSE = re.compile(r"[ \t]*(`{3,}|~{3,})[ \t]*")


@dataclass(frozen=True)
class Fence:
    indent: str
    marker: str
    reopen: str  # marker + info + "\n"


def fence_states(text: str) -> list[tuple[int, int, Fence]]:
    """[(inside_from, inside_to, fence)]: a split at p in [from, to] is in code."""
    out: list[tuple[int, int, Fence]] = []
    pos = 0
    current: tuple[int, Fence] | None = None
    for raw in re.findall(r"[^\n]*\n|[^\n]+$", text):
        line = raw[:-1] if raw.endswith("\n") else raw
        line = line.rstrip("\r")
        if current is None:
            m = _OPEN.fullmatch(line)
            if m and not (m.group(2)[0] == "`" and "`" in m.group(3)):
                fence = Fence(m.group(1), m.group(2), m.group(2) + m.group(3).rstrip() + "\n")
                current = (pos + len(raw), fence)
        else:
            m = _CLOSE.fullmatch(line)
            marker = current[1].marker
            if m and m.group(1)[0] == marker[0] and len(m.group(1)) >= len(marker):
                out.append((current[0], pos, current[1]))
                current = None
        pos += len(raw)
    if current is not None:
        out.append((current[0], len(text), current[1]))
    return out


def fence_at(states: list[tuple[int, int, Fence]], pos: int) -> Fence | None:
    for lo, hi, fence in states:
        if lo <= pos <= hi:
            return fence
    return None


_TRAILING_FENCE = re.compile(r"(\n?)([ \t]*)(`{3,}|~{3,})\Z")


def unfence(pieces: list[str], text: str) -> bool:
    """True if removing added fence lines from ``pieces`` gives back ``text``.

    A piece that starts inside a code block must start with the block's
    reopen line; a piece that ends inside one (except the last) must end with
    a closing fence. Tried exhaustively, since "x\\n```" can be either body
    "x" + "\\n```" or body "x\\n" + "```".
    """
    states = fence_states(text)

    @lru_cache(maxsize=None)
    def go(i: int, pos: int) -> bool:
        if i == len(pieces):
            return pos == len(text)
        piece = pieces[i]
        last = i == len(pieces) - 1
        fence = fence_at(states, pos) if pos > 0 else None
        if fence is not None:
            if not piece.startswith(fence.reopen):
                return False
            rest = piece[len(fence.reopen) :]
        else:
            rest = piece
        options: list[tuple[str, tuple[str, str] | None]] = [(rest, None)]
        m = _TRAILING_FENCE.search(rest)
        if m and not last:
            options.append((rest[: m.start()], (m.group(2), m.group(3))))
            if m.group(1):
                options.append((rest[: m.start() + 1], (m.group(2), m.group(3))))
        for body, closing in options:
            if not body or not text.startswith(body, pos):
                continue
            end = pos + len(body)
            inside = fence_at(states, end)
            if last:
                if closing is None and end == len(text) and go(i + 1, end):
                    return True
                continue
            if closing is None:
                if inside is None and go(i + 1, end):
                    return True
            elif (
                inside is not None
                and closing[1] == inside.marker
                and closing[0] in ("", inside.indent)
                and go(i + 1, end)
            ):
                return True
        return False

    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))
    return go(0, 0)


def check_pieces(text: str, pieces: list[str], limit: int) -> None:
    assert all(len(p) <= limit for p in pieces), [len(p) for p in pieces]
    assert all(p.strip() for p in pieces)
    assert unfence(pieces, text)
    # Every piece but the last renders with its code blocks closed.
    for p in pieces[:-1]:
        assert fence_at(fence_states(p), len(p)) is None, p


# ---------------------------------------------------------------------------
# split_markdown
# ---------------------------------------------------------------------------


class TestSplitMarkdownBasics:
    def test_empty(self) -> None:
        assert split_markdown("") == []

    @pytest.mark.parametrize("text", [" ", "\n\n", " \t\n  \n", "\u3000"])
    def test_whitespace_only(self, text: str) -> None:
        assert split_markdown(text) == []
        assert split_markdown(text * 50, limit=10) == []

    def test_short_text_is_returned_unchanged(self) -> None:
        text = "  Hello *world*\n\n```py\nx = 1\n```\n"
        assert split_markdown(text) == [text]

    def test_exactly_limit_fits(self) -> None:
        text = "a" * 100
        assert split_markdown(text, limit=100) == [text]

    def test_one_over_limit_splits(self) -> None:
        text = "a" * 101
        pieces = split_markdown(text, limit=100)
        assert pieces == ["a" * 100, "a"]

    def test_default_limit(self) -> None:
        text = "\n\n".join(f"Paragraph {i}. " + "lorem ipsum " * 80 for i in range(40))
        pieces = split_markdown(text)
        assert len(pieces) > 1
        check_pieces(text, pieces, 11_000)
        assert "".join(pieces) == text  # no code, nothing added

    @pytest.mark.parametrize("limit", [0, -5])
    def test_invalid_limit(self, limit: int) -> None:
        with pytest.raises(ValueError):
            split_markdown("abc", limit=limit)

    def test_tiny_limit_still_works(self) -> None:
        text = "ab cd\n```\nxy\n```\n"
        for limit in (1, 2, 3, 5):
            pieces = split_markdown(text, limit=limit)
            assert all(0 < len(p) <= limit and p.strip() for p in pieces)


class TestSplitMarkdownBoundaries:
    def test_prefers_paragraph_boundary(self) -> None:
        para1 = "First paragraph line one.\nline two of it."
        para2 = "Second paragraph " + "x" * 20
        text = para1 + "\n\n" + para2
        pieces = split_markdown(text, limit=len(para1) + 10)
        assert pieces == [para1 + "\n\n", para2]

    def test_whitespace_stays_with_earlier_piece(self) -> None:
        text = "a" * 30 + "\n\n\n\n" + "b" * 30
        pieces = split_markdown(text, limit=40)
        assert pieces == ["a" * 30 + "\n\n\n\n", "b" * 30]

    def test_prefers_line_over_word(self) -> None:
        text = "alpha beta gamma\ndelta epsilon zeta eta theta"
        pieces = split_markdown(text, limit=30)
        assert pieces[0] == "alpha beta gamma\n"
        assert "".join(pieces) == text

    def test_word_boundary_when_no_line_break(self) -> None:
        text = "one two three four five six seven eight nine ten"
        pieces = split_markdown(text, limit=20)
        assert "".join(pieces) == text
        for p in pieces:
            assert len(p) <= 20
            assert not p[0].isspace()  # every piece starts with a word
        assert all(p.endswith(" ") for p in pieces[:-1])  # words never cut

    def test_hard_split_of_long_line(self) -> None:
        text = "intro\n" + "x" * 250 + "\nend"
        pieces = split_markdown(text, limit=100)
        check_pieces(text, pieces, 100)
        assert "".join(pieces) == text
        assert max(len(p) for p in pieces) == 100

    def test_small_paragraph_not_preferred_over_full_piece(self) -> None:
        # The only paragraph break is near the start: taking it would waste
        # almost a whole message, so a later line break wins.
        text = "Hi.\n\n" + "\n".join("line %02d of the body" % i for i in range(20))
        pieces = split_markdown(text, limit=200)
        assert len(pieces[0]) > 150
        assert "".join(pieces) == text

    def test_early_paragraph_beats_hard_split(self) -> None:
        text = "short para\n\n" + "y" * 300
        pieces = split_markdown(text, limit=100)
        assert pieces[0] == "short para\n\n"
        assert "".join(pieces) == text

    def test_heading_is_a_good_split_point(self) -> None:
        body = "\n".join("text line %d" % i for i in range(8))
        text = body + "\n## Next section\n" + body
        pieces = split_markdown(text, limit=len(body) + 30)
        assert pieces[1].startswith("## Next section")

    def test_pieces_never_start_with_blank_remainder(self) -> None:
        text = "x" * 100 + "\n"
        pieces = split_markdown(text, limit=100)
        assert all(p.strip() for p in pieces)
        assert "".join(pieces) == text

    def test_giant_whitespace_run_is_dropped(self) -> None:
        text = "start" + " " * 500 + "end"
        pieces = split_markdown(text, limit=50)
        assert all(p.strip() and len(p) <= 50 for p in pieces)
        joined = "".join(pieces)
        assert joined.startswith("start") and joined.endswith("end")
        assert joined.replace(" ", "") == "startend"

    def test_trailing_whitespace_beyond_limit_dropped(self) -> None:
        text = "content " + "\n" * 300
        pieces = split_markdown(text, limit=50)
        assert len(pieces) == 1 and pieces[0].startswith("content")

    def test_leading_whitespace_kept_when_it_fits(self) -> None:
        text = "\n\n  hello " + "w " * 60
        pieces = split_markdown(text, limit=50)
        assert "".join(pieces) == text

    def test_unicode_counts_code_points(self) -> None:
        text = "日本語のテキスト😀 " * 100
        pieces = split_markdown(text, limit=64)
        assert "".join(pieces) == text
        assert all(len(p) <= 64 for p in pieces)

    def test_crlf_text(self) -> None:
        text = "para one\r\nline\r\n\r\n```sh\r\n" + "echo hi\r\n" * 30 + "```\r\nafter"
        pieces = split_markdown(text, limit=80)
        check_pieces(text, pieces, 80)


class TestSplitMarkdownFences:
    def test_splits_between_blocks_not_inside(self) -> None:
        code = "```python\nprint('hi')\n```\n"
        text = "Intro text here.\n\n" + code + "\nOutro text follows here."
        pieces = split_markdown(text, limit=len(code) + 5)
        assert pieces == ["Intro text here.\n\n", code + "\n", "Outro text follows here."]
        assert split_markdown(text, limit=len(code) + 20)[0].endswith(code + "\n")

    def test_close_and_reopen_with_info_string(self) -> None:
        lines = [f"print({i})" for i in range(50)]
        text = "Here:\n\n```python\n" + "\n".join(lines) + "\n```\n\nDone."
        pieces = split_markdown(text, limit=120)
        check_pieces(text, pieces, 120)
        assert len(pieces) > 2
        for p in pieces[:-1]:
            if "print(" in p:
                assert p.rstrip().endswith("```")
        for p in pieces[1:]:
            if "print(" in p:
                assert p.startswith("```python\n")
        # Inside code, splits fall on line boundaries: no line is cut.
        for p in pieces:
            for ln in p.splitlines():
                assert ln in lines or not ln.startswith("print")

    def test_closing_fence_on_its_own_line(self) -> None:
        text = "```\n" + "a\n" * 200 + "```"
        for p in split_markdown(text, limit=50):
            assert p.startswith("```\n")
            assert p.endswith("\n```")
            assert len(p) <= 50

    def test_long_line_in_code_is_hard_split(self) -> None:
        text = "```js\n" + "z" * 200 + "\n```\n"
        pieces = split_markdown(text, limit=60)
        check_pieces(text, pieces, 60)
        assert pieces[0].startswith("```js\n") and pieces[0].endswith("\n```")
        assert pieces[1].startswith("```js\n")

    def test_tilde_and_long_backtick_fences(self) -> None:
        for opener, closer in (("~~~text", "~~~"), ("````md", "````")):
            inner = "```python\nnot a real fence\n```\n" * 6
            text = f"{opener}\n{inner}{closer}\nafter"
            pieces = split_markdown(text, limit=70)
            check_pieces(text, pieces, 70)
            for p in pieces[1:]:
                if "not a real" in p:
                    assert p.startswith(opener + "\n")

    def test_indented_fence_in_list_closes_with_same_indent(self) -> None:
        code = "".join(f"   x{i} = {i}\n" for i in range(30))
        text = "1. Step one:\n   ```bash\n" + code + "   ```\n2. Done"
        pieces = split_markdown(text, limit=100)
        check_pieces(text, pieces, 100)
        assert pieces[0].endswith("\n   ```")  # closed inside the list item
        assert pieces[1].startswith("```bash\n")  # reopened at top level
        assert pieces[1].endswith("\n```")

    def test_unclosed_fence_at_end(self) -> None:
        text = "Partial answer:\n```python\n" + "y = 2\n" * 40
        pieces = split_markdown(text, limit=80)
        check_pieces(text, pieces, 80)
        assert pieces[-1].startswith("```python\n")
        assert not pieces[-1].endswith("```")

    def test_inline_triple_backticks_are_not_fences(self) -> None:
        text = "Use ```x``` inline. " * 20
        pieces = split_markdown(text, limit=60)
        assert "".join(pieces) == text

    def test_reopen_line_counts_towards_limit(self) -> None:
        info = "python title=very_long_info_string"
        text = f"```{info}\n" + "v = 1\n" * 100 + "```"
        pieces = split_markdown(text, limit=120)
        check_pieces(text, pieces, 120)
        assert all(len(p) <= 120 for p in pieces)
        assert all(p.startswith(f"```{info}\n") for p in pieces)

    def test_huge_info_string_is_left_alone(self) -> None:
        text = "```" + "i" * 40 + "\n" + "code\n" * 30 + "```"
        pieces = split_markdown(text, limit=60)
        assert all(p.strip() and len(p) <= 60 for p in pieces)
        assert "".join(pieces) == text  # no reopen that could not fit

    def test_blank_lines_in_code(self) -> None:
        text = "```\n" + "block\n\n\n" * 40 + "```\nend"
        pieces = split_markdown(text, limit=64)
        check_pieces(text, pieces, 64)


_WORDS = [
    "the", "sandbox", "café", "naïve", "日本語", "😀", "👩‍💻", "Ωmega", "x", "`code`",
    "**bold**", "_it_", "[link](https://example.com)", "a&b", "<tag>", "Straße",
]
_INFOS = ["", "python", "js", "bash", "c++", "diff title=x"]


def _random_text(rng: random.Random, limit: int) -> str:
    blocks: list[str] = []
    for _ in range(rng.randint(1, 14)):
        kind = rng.random()
        if kind < 0.35:
            words = [rng.choice(_WORDS) for _ in range(rng.randint(1, 60))]
            blocks.append(" ".join(words))
        elif kind < 0.45:
            blocks.append(rng.choice("abcé漢😀") * rng.randint(1, limit * 2))
        elif kind < 0.55:
            blocks.append("\n".join(f"- item {i} " + rng.choice(_WORDS) for i in range(rng.randint(1, 12))))
        elif kind < 0.6:
            blocks.append("#" * rng.randint(1, 3) + " Heading " + rng.choice(_WORDS))
        else:
            marker = rng.choice(["```", "```", "~~~", "````"])
            indent = rng.choice(["", "", "  ", "   "])
            lines = []
            for _ in range(rng.randint(0, 25)):
                r = rng.random()
                if r < 0.1:
                    lines.append("")
                elif r < 0.2:
                    lines.append("q" * rng.randint(1, limit * 2))
                elif r < 0.25:
                    lines.append("```python" if marker != "```" else "~~~")
                else:
                    lines.append(indent + "  ".join(rng.choice(_WORDS) for _ in range(rng.randint(1, 8))))
            body = "".join(line + "\n" for line in lines)
            closing = "" if rng.random() < 0.1 else indent + marker
            blocks.append(f"{indent}{marker}{rng.choice(_INFOS)}\n{body}{closing}")
    seps = ["\n", "\n\n", "\n\n\n", " \n", "\n \n"]
    text = ""
    for block in blocks:
        text += block + rng.choice(seps)
    if rng.random() < 0.5:
        text = text.rstrip("\n")
    if rng.random() < 0.2:
        text = "\n" + text
    return text


@pytest.mark.parametrize("seed", range(300))
def test_split_property(seed: int) -> None:
    rng = random.Random(seed)
    limit = rng.choice([60, 80, 128, 200, 400, 1000])
    text = _random_text(rng, limit)
    pieces = split_markdown(text, limit=limit)
    check_pieces(text, pieces, limit)
    if len(text) <= limit:
        assert pieces == [text]


def test_split_property_no_code_is_plain_concatenation() -> None:
    rng = random.Random(1234)
    for _ in range(200):
        limit = rng.randint(20, 300)
        text = "\n".join(
            " ".join(rng.choice(_WORDS) for _ in range(rng.randint(0, 40)))
            for _ in range(rng.randint(1, 30))
        )
        pieces = split_markdown(text, limit=limit)
        if text.strip():
            assert "".join(pieces) == text
        assert all(0 < len(p) <= limit and p.strip() for p in pieces)


# ---------------------------------------------------------------------------
# tool_status
# ---------------------------------------------------------------------------


class TestToolStatus:
    def test_bash(self) -> None:
        assert tool_status("Bash", {"command": "npm test"}) == "Running `npm test`"

    def test_bash_first_line_only(self) -> None:
        status = tool_status("Bash", {"command": "cd app\nnpm test"})
        assert status.startswith("Running `cd app")
        assert "npm test" not in status and "\n" not in status

    def test_bash_truncated(self) -> None:
        status = tool_status("Bash", {"command": "echo " + "a" * 200})
        inner = status[len("Running `") : -1]
        assert inner.endswith("…")
        assert len(inner) <= 80

    def test_bash_backticks_do_not_break_code(self) -> None:
        status = tool_status("Bash", {"command": "echo `date` && ls"})
        assert status.startswith("Running `") and status.endswith("`")
        assert status[len("Running `") : -1].count("`") == 0
        assert "date" in status

    def test_bash_without_command(self) -> None:
        assert tool_status("Bash", {}) == "Running a command"
        assert tool_status("Bash", {"description": "Run tests"}) == "Running a command: Run tests"

    @pytest.mark.parametrize("tool", ["Edit", "MultiEdit"])
    def test_edit(self, tool: str) -> None:
        assert tool_status(tool, {"file_path": "/home/daytona/app.py"}) == "Editing `app.py`"

    def test_write_read(self) -> None:
        assert tool_status("Write", {"file_path": "/a/b/x"}) == "Writing `x`"
        assert tool_status("Read", {"file_path": "x"}) == "Reading `x`"
        assert tool_status("Read", {"file_path": "/a/dir/"}) == "Reading `dir`"
        assert tool_status("NotebookEdit", {"notebook_path": "/n/nb.ipynb"}) == "Editing `nb.ipynb`"

    def test_file_tools_without_path(self) -> None:
        assert tool_status("Edit", {}) == "Editing a file"
        assert tool_status("Write", {"file_path": None}) == "Writing a file"
        assert tool_status("Read", {"file_path": 42}) == "Reading a file"
        assert tool_status("Read", {"file_path": "/"}) == "Reading a file"

    @pytest.mark.parametrize("tool", ["Glob", "Grep"])
    def test_search(self, tool: str) -> None:
        assert tool_status(tool, {"pattern": "**/*.py"}) == "Searching for `**/*.py`"
        assert tool_status(tool, {}) == "Searching the code"

    def test_grep_pattern_with_backtick(self) -> None:
        status = tool_status("Grep", {"pattern": "`foo`"})
        assert status.count("`") == 2

    def test_web_fetch(self) -> None:
        assert tool_status("WebFetch", {"url": "https://x.y/a?b=1"}) == "Fetching <https://x.y/a?b=1>"
        odd = tool_status("WebFetch", {"url": "not a url>"})
        assert "<" not in odd and "not a url" in odd
        assert tool_status("WebFetch", {}) == "Fetching a web page"

    def test_web_search(self) -> None:
        status = tool_status("WebSearch", {"query": "slack markdown block limits"})
        assert status.startswith("Searching the web for")
        assert "slack markdown block limits" in status
        assert tool_status("WebSearch", {}) == "Searching the web"

    def test_todo(self) -> None:
        assert tool_status("TodoWrite", {"todos": []}) == "Updating the plan"

    @pytest.mark.parametrize("tool", ["Task", "Agent"])
    def test_subagent(self, tool: str) -> None:
        status = tool_status(tool, {"description": "Find the bug", "prompt": "..."})
        assert status == "Running a subagent: Find the bug"
        assert tool_status(tool, {}) == "Running a subagent"

    def test_other_tools(self) -> None:
        assert tool_status("mcp__github__create_issue", {}) == "Using `mcp__github__create_issue`"
        assert tool_status("We`ird", {}).count("`") == 2

    @pytest.mark.parametrize(
        "name, tool_input",
        [
            ("Bash", None),
            ("Bash", "npm test"),
            ("Bash", {"command": ["npm", "test"]}),
            ("Bash", {"command": "   \n  "}),
            ("Edit", {"file_path": {"x": 1}}),
            ("WebFetch", {"url": 3}),
            ("Task", {"description": None}),
            (None, {}),
            ("", {}),
            (42, []),
        ],
    )
    def test_never_raises(self, name: object, tool_input: object) -> None:
        status = tool_status(name, tool_input)  # type: ignore[arg-type]
        assert isinstance(status, str) and status
        assert "\n" not in status

    def test_all_statuses_are_single_short_lines(self) -> None:
        long = "x" * 500 + "\nmore"
        for tool, key in [
            ("Bash", "command"), ("Edit", "file_path"), ("Glob", "pattern"),
            ("WebSearch", "query"), ("Task", "description"), ("WebFetch", "url"),
        ]:
            status = tool_status(tool, {key: long})
            assert "\n" not in status
            assert len(status) < 120


# ---------------------------------------------------------------------------
# footer
# ---------------------------------------------------------------------------


class TestFooter:
    def test_example(self) -> None:
        assert footer(12_345, 3, 0.0123) == "12.3s · 3 turns · $0.0123"

    def test_singular_turn(self) -> None:
        assert footer(None, 1, None) == "1 turn"
        assert footer(None, 0, None) == "0 turns"

    @pytest.mark.parametrize(
        "ms, expected",
        [
            (0, "0.0s"),
            (49, "0.0s"),
            (940, "0.9s"),
            (960, "1.0s"),
            (1_000, "1.0s"),
            (59_900, "59.9s"),
            (59_960, "1m 00s"),
            (60_000, "1m 00s"),
            (125_000, "2m 05s"),
            (3_599_000, "59m 59s"),
            (3_600_000, "1h 00m 00s"),
            (3_725_000, "1h 02m 05s"),
        ],
    )
    def test_durations(self, ms: float, expected: str) -> None:
        assert footer(ms, None, None) == expected

    def test_missing_parts_omitted(self) -> None:
        assert footer(None, None, None) == ""
        assert footer(2_000, None, None) == "2.0s"
        assert footer(None, None, 0.5) == "$0.5000"
        assert footer(2_000, None, 0.01) == "2.0s · $0.0100"

    def test_costs(self) -> None:
        assert footer(None, None, 0) == "$0.0000"
        assert footer(None, None, 1.5) == "$1.50"
        assert footer(None, None, 12.5) == "$12.50"
        assert footer(None, None, 0.99994) == "$0.9999"

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "12", True])
    def test_bad_values_omitted(self, bad: object) -> None:
        assert footer(bad, None, None) == ""  # type: ignore[arg-type]
        assert footer(None, bad, None) == ""  # type: ignore[arg-type]
        assert footer(None, None, bad) == ""  # type: ignore[arg-type]


# ---------------------------------------------------------------------------
# Redactor
# ---------------------------------------------------------------------------


class TestRedactor:
    def test_basic(self) -> None:
        r = Redactor(["sk-ant-123456789"])
        assert r.redact("key=sk-ant-123456789 done") == "key=[redacted] done"

    def test_every_occurrence(self) -> None:
        r = Redactor(["secret-token"])
        assert r.redact("secret-token secret-tokensecret-token") == "[redacted] [redacted][redacted]"

    def test_ignores_short_empty_none(self) -> None:
        r = Redactor([None, "", "short", "1234567"])
        text = "short 1234567 None"
        assert r.redact(text) == text

    def test_exactly_eight_chars_kept(self) -> None:
        assert Redactor(["12345678"]).redact("x12345678y") == "x[redacted]y"

    def test_longest_first(self) -> None:
        r = Redactor(["abcdefgh", "abcdefgh-ijkl"])
        assert r.redact("abcdefgh-ijkl / abcdefgh") == "[redacted] / [redacted]"

    def test_overlapping_secrets_leave_no_fragment(self) -> None:
        r = Redactor(["AAAABBBB", "BBBBCCCC"])
        assert r.redact("xAAAABBBBCCCCx") == "x[redacted]x"

    def test_slack_escaped(self) -> None:
        secret = "p&ss<wo>rd!"
        r = Redactor([secret])
        assert r.redact("raw p&ss<wo>rd! escaped p&amp;ss&lt;wo&gt;rd!") == "raw [redacted] escaped [redacted]"

    def test_generator_input_and_duplicates(self) -> None:
        r = Redactor(s for s in ["tok-12345678", "tok-12345678"])
        assert r.redact("tok-12345678") == "[redacted]"

    def test_no_secrets(self) -> None:
        assert Redactor([]).redact("anything") == "anything"
        assert Redactor(["abcdefghij"]).redact("") == ""

    def test_regex_metacharacters(self) -> None:
        r = Redactor(["a.b*c+d?(e)"])
        assert r.redact("a.b*c+d?(e) aXb*c+d?(e)") == "[redacted] aXb*c+d?(e)"


# ---------------------------------------------------------------------------
# slack_to_plain / mentioned_user_ids
# ---------------------------------------------------------------------------


class TestSlackToPlain:
    def test_bot_mention_removed_with_whitespace(self) -> None:
        assert slack_to_plain("<@UBOT>   fix the tests", bot_user_id="UBOT") == "fix the tests"
        assert slack_to_plain("hey <@UBOT> please", bot_user_id="UBOT") == "hey please"
        assert slack_to_plain("thanks <@UBOT>", bot_user_id="UBOT") == "thanks"
        assert slack_to_plain("<@UBOT|maison>\nhi", bot_user_id="UBOT") == "hi"

    def test_bot_mention_kept_when_bot_unknown(self) -> None:
        assert slack_to_plain("<@UBOT> hi") == "@UBOT hi"

    def test_user_mentions(self) -> None:
        names = {"U123": "alice"}
        assert slack_to_plain("ask <@U123>", names) == "ask @alice"
        assert slack_to_plain("ask <@U999>", names) == "ask @U999"
        assert slack_to_plain("ask <@U999|bob>") == "ask @bob"
        assert slack_to_plain("ask <@W42>") == "ask @W42"

    def test_channels(self) -> None:
        assert slack_to_plain("see <#C123|general>") == "see #general"
        assert slack_to_plain("see <#C123>") == "see #C123"
        assert slack_to_plain("see <#C123|>") == "see #C123"

    def test_specials(self) -> None:
        assert slack_to_plain("<!here> deploy") == "@here deploy"
        assert slack_to_plain("<!channel>") == "@channel"
        assert slack_to_plain("<!everyone>") == "@everyone"
        assert slack_to_plain("<!here|@here>") == "@here"
        assert slack_to_plain("<!subteam^S1|@team> look") == "@team look"
        assert slack_to_plain("<!subteam^S1>") == "@S1"
        assert slack_to_plain("<!date^1392734382^{date}|Feb 18th>") == "Feb 18th"

    def test_links(self) -> None:
        assert slack_to_plain("<https://x.y|label>") == "label (https://x.y)"
        assert slack_to_plain("<https://x.y|https://x.y>") == "https://x.y"
        assert slack_to_plain("<https://x.y>") == "https://x.y"
        assert slack_to_plain("<http://example.com|example.com>") == "example.com"
        assert slack_to_plain("<mailto:a@b.c|a@b.c>") == "a@b.c"
        assert slack_to_plain("<mailto:a@b.c>") == "a@b.c"
        assert slack_to_plain("<mailto:a@b.c|Alice>") == "Alice (a@b.c)"

    def test_link_with_escaped_query(self) -> None:
        assert slack_to_plain("<https://x.y/?a=1&amp;b=2>") == "https://x.y/?a=1&b=2"
        assert slack_to_plain("<https://x.y|a &amp; b>") == "a & b (https://x.y)"

    def test_unescape_order(self) -> None:
        assert slack_to_plain("a &lt;b&gt; &amp; c") == "a <b> & c"
        assert slack_to_plain("&amp;lt;") == "&lt;"
        assert slack_to_plain("&amp;amp;") == "&amp;"

    def test_code_blocks_treated_the_same(self) -> None:
        text = "```\nif a &lt; b &amp;&amp; c &gt; d:\n    ping <@U1>\n```"
        assert slack_to_plain(text, {"U1": "ann"}) == "```\nif a < b && c > d:\n    ping @ann\n```"

    def test_names_are_not_unescaped(self) -> None:
        assert slack_to_plain("<@U1>", {"U1": "R&amp;D"}) == "@R&amp;D"

    def test_strips_and_preserves_inner_whitespace(self) -> None:
        assert slack_to_plain("  \n line one\n\n  line two \n") == "line one\n\n  line two"
        assert slack_to_plain("") == ""

    def test_mixed(self) -> None:
        text = "<@UBOT> ask <@U1> in <#C9|dev> about <https://a.b/c|the doc> &amp; <!here>"
        assert (
            slack_to_plain(text, {"U1": "@ann"}, "UBOT")
            == "ask @ann in #dev about the doc (https://a.b/c) & @here"
        )

    def test_plain_angle_text_untouched(self) -> None:
        assert slack_to_plain("a <b c") == "a <b c"


class TestMentionedUserIds:
    def test_order_and_unique(self) -> None:
        text = "<@U2> and <@U1|x> then <@U2> <#C1> <!here> <@W3>"
        assert mentioned_user_ids(text) == ["U2", "U1", "W3"]

    def test_none(self) -> None:
        assert mentioned_user_ids("no mentions @U1 here") == []
        assert mentioned_user_ids("") == []
