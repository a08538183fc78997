"""Unit tests for maison_slack.slack.redact: secrets never reach Slack."""

from __future__ import annotations

from maison_slack.slack.redact import Redactor


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

    def test_bytes_utf8_text_redacted(self) -> None:
        r = Redactor(["sk-ant-123456789"])
        assert r.redact_bytes("clé=sk-ant-123456789\n".encode()) == "clé=[redacted]\n".encode()

    def test_bytes_binary_unchanged(self) -> None:
        data = b"\x89PNG\r\n\x1a\n\xff" + b"sk-ant-123456789"
        assert Redactor(["sk-ant-123456789"]).redact_bytes(data) == data

    def test_bytes_empty(self) -> None:
        assert Redactor(["sk-ant-123456789"]).redact_bytes(b"") == b""
