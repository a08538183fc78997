"""Unit tests for maison_slack.slack.markdown: long answers split into postable pieces."""

from __future__ import annotations

import random
import re
import sys
from dataclasses import dataclass
from functools import lru_cache

import pytest

from maison_slack.slack.markdown import split_markdown

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
