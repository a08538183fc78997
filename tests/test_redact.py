"""Unit tests for maison_slack.slack.redact: secrets never reach Slack."""

from __future__ import annotations

import base64
from urllib.parse import quote, quote_plus

import pytest

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

    def test_bytes_not_utf8_redacted(self) -> None:
        r = Redactor(["sk-ant-123456789"])
        assert r.redact_bytes(b"\xff" + b"sk-ant-123456789") == b"\xff[redacted]"
        png = b"\x89PNG\r\n\x1a\n\xff sk-ant-123456789 \x00\x01"
        assert r.redact_bytes(png) == b"\x89PNG\r\n\x1a\n\xff [redacted] \x00\x01"

    def test_bytes_binary_without_secret_unchanged(self) -> None:
        data = bytes(range(256)) * 4
        assert Redactor(["sk-ant-123456789"]).redact_bytes(data) == data

    @pytest.mark.parametrize("codec", ["utf-16-le", "utf-16-be", "utf-16"])
    def test_bytes_utf16(self, codec: str) -> None:
        data = "key = sk-ant-123456789\n".encode(codec)
        redacted = Redactor(["sk-ant-123456789"]).redact_bytes(data)
        assert redacted.decode(codec) == "key = [redacted]\n"

    def test_bytes_encoded_forms(self) -> None:
        data = b"A=" + base64.b64encode(b"xx" + KEY.encode() + b"yy") + b"\nB=" + KEY.encode().hex().encode()
        redacted = Redactor([KEY]).redact_bytes(data)
        assert redacted.count(b"[redacted]") == 2 and KEY.encode().hex().encode() not in redacted

    def test_bytes_empty(self) -> None:
        assert Redactor(["sk-ant-123456789"]).redact_bytes(b"") == b""


KEY = "sk-ant-api03-Zq9/x+Yw_0123456789abcdef"


def _base64_leaks(text: str, secret: str) -> bool:
    """Whether `text` still holds base64 that decodes to the secret, at any alignment."""
    for start in range(4):
        chunk = "".join(c for c in text[start:] if c.isalnum() or c in "+/-_")
        chunk = chunk[: len(chunk) // 4 * 4].replace("-", "+").replace("_", "/")
        if secret.encode() in base64.b64decode(chunk, validate=False):
            return True
    return False


class TestEncodedForms:
    """Claude can print a secret encoded (`base64 .env`, `xxd -p`, a URL): each form is masked."""

    @pytest.mark.parametrize("prefix", [b"", b"a", b"ab", b"abc", b"user:", b"long prefix of some bytes "])
    @pytest.mark.parametrize("encode", [base64.b64encode, base64.urlsafe_b64encode])
    def test_base64_at_every_offset_of_a_longer_stream(self, prefix: bytes, encode) -> None:
        stream = encode(prefix + KEY.encode() + b" and more bytes after it").decode()
        assert _base64_leaks(stream, KEY)  # the check itself finds the secret before redaction
        redacted = Redactor([KEY]).redact(f"config: {stream}")
        assert "[redacted]" in redacted
        assert not _base64_leaks(redacted, KEY)

    def test_base64_of_the_secret_alone(self) -> None:
        encoded = base64.b64encode(KEY.encode()).decode()
        assert "[redacted]" in Redactor([KEY]).redact(encoded)
        assert not _base64_leaks(Redactor([KEY]).redact(encoded), KEY)

    def test_hex_both_cases(self) -> None:
        r = Redactor([KEY])
        hexed = KEY.encode().hex()
        assert r.redact(f"{hexed} {hexed.upper()}") == "[redacted] [redacted]"

    def test_url_encoded(self) -> None:
        r = Redactor([KEY])
        assert r.redact(f"https://x.test/?k={quote(KEY, safe='')}&y=1") == "https://x.test/?k=[redacted]&y=1"
        assert r.redact(f"https://x.test/?k={quote_plus(KEY)}") == "https://x.test/?k=[redacted]"

    def test_streaming_holds_back_the_start_of_any_form(self) -> None:
        r = Redactor([KEY])
        for form in (KEY, KEY.encode().hex(), quote(KEY, safe="")):
            shown = r.redact_streaming("Here: " + form[:12])
            assert shown == "Here: "
        assert r.redact_streaming("plain words!") == "plain words!"
        assert r.redact_streaming("plain words") == "plain word"  # "s" may begin "sk-ant-…"
        assert r.redact_streaming(f"Here: {KEY} and sk-") == "Here: [redacted] and "


class TestWrappedDumps:
    """`base64` and `xxd -p` cut their output into lines: the encoded secret is in pieces."""

    SECRET = "sk-ant-api03-" + "x7Q" * 30

    @pytest.mark.parametrize("width", [60, 76])
    def test_a_wrapped_encoding_is_masked_with_its_breaks(self, width: int) -> None:
        dump = ("PATH=/usr/bin\nANTHROPIC_API_KEY=" + self.SECRET + "\nHOME=/root\n").encode()
        for encoded in (base64.b64encode(dump).decode(), dump.hex()):
            wrapped = "\n".join(encoded[i:i + width] for i in range(0, len(encoded), width)) + "\n"
            redacted = Redactor([self.SECRET]).redact(wrapped)
            assert "[redacted]" in redacted
            joined = redacted.replace("\n", "").replace("[redacted]", "")
            assert self.SECRET.encode().hex() not in joined and base64.b64encode(self.SECRET.encode())[4:40].decode() not in joined
            assert redacted.startswith(encoded[:8]) and redacted.endswith("\n")  # the rest is kept

    def test_bytes_and_crlf_too(self) -> None:
        hexed = self.SECRET.encode().hex()
        wrapped = b"\r\n".join(hexed[i:i + 60].encode() for i in range(0, len(hexed), 60))
        assert Redactor([self.SECRET]).redact_bytes(b"dump:\r\n" + wrapped) == b"dump:\r\n[redacted]"

    def test_streaming_holds_back_a_wrapped_beginning(self) -> None:
        hexed = self.SECRET.encode().hex()
        growing = "key:\n" + hexed[:60] + "\n" + hexed[60:90]
        assert Redactor([self.SECRET]).redact_streaming(growing) == "key:\n"
