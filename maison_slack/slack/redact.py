"""Mask known secrets in anything the bot posts to Slack.

Claude may echo environment values (API keys, tokens) into its answer, its tool output or a
file it is asked to send, as they are or encoded (`base64 .env`, `xxd -p`, a URL query);
masking them here is the last line of defence before Slack. Secrets are matched by value, never
by the name of a variable: `env`, a config file or a dump shows a value under any name.
"""

from __future__ import annotations

import base64
import binascii
import bisect
import re
from collections.abc import Iterable, Mapping
from typing import AnyStr
from urllib.parse import quote, quote_plus

from maison_slack.slack.markup import escape_mrkdwn

__all__ = ["Redactor"]

# Shorter values are not masked: they would shred ordinary words.
_MIN_SECRET = 8
_REPLACEMENT = "[redacted]"


def _base64_forms(data: bytes) -> set[str]:
    """The base64 (and base64url) text that encodes `data` wherever it sits in a longer stream.

    Base64 turns 3 bytes into 4 characters, so `data` at offset 0, 1 or 2 (mod 3) of the encoded
    stream gives three different texts. Only the characters made of `data`'s bits alone are the
    same in every stream, so those are matched; the character or two at each edge that mix in
    neighbouring bytes carry a few bits of the secret, not the secret.
    """
    forms: set[str] = set()
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        first = -(-offset * 8 // 6)  # the first character holding no bit of the bytes before
        last = (offset + len(data)) * 8 // 6  # the characters after hold bits of the bytes after
        core = encoded[first:last]
        forms |= {core, core.translate(str.maketrans("+/", "-_"))}
    return forms


def _text_forms(secret: str) -> set[str]:
    """How `secret` can appear in text: as is, mrkdwn-escaped (text may be escaped before it is
    redacted, which turns &, < and > into entities), and in the usual encodings."""
    raw = secret.encode("utf-8")
    hexed = binascii.hexlify(raw).decode("ascii")
    return {
        secret, escape_mrkdwn(secret),
        hexed, hexed.upper(),
        quote(secret, safe=""), quote(secret), quote_plus(secret, safe=""),
        *_base64_forms(raw),
    }


_BREAKS = {str: re.compile(r"[\r\n]+"), bytes: re.compile(rb"[\r\n]+")}


class _Unwrapped:
    """`data` with its line breaks taken out, and the way back to positions in `data`.

    Dumps are cut into lines (`base64` every 76 characters, `xxd -p` every 60), so an encoded
    secret in one is in pieces that no form matches; without the breaks it is whole again.
    """

    def __init__(self, data: AnyStr) -> None:
        breaks = [(m.start(), m.end()) for m in _BREAKS[type(data)].finditer(data)]
        self.text = _BREAKS[type(data)].sub(data[:0], data)
        self._starts: list[int] = []  # where each break was, in `text`
        self._removed: list[int] = []  # characters removed up to and with each break
        removed = 0
        for start, end in breaks:
            self._starts.append(start - removed)
            removed += end - start
            self._removed.append(removed)

    def original(self, pos: int) -> int:
        """Where the character at `pos` of `text` is in the data."""
        i = bisect.bisect_right(self._starts, pos)
        return pos + (self._removed[i - 1] if i else 0)


def _mask(data: AnyStr, patterns: Mapping[AnyStr, AnyStr]) -> AnyStr:
    """Replace every occurrence of every pattern with its replacement, also one cut by line
    breaks (the breaks inside it go with it).

    Overlapping occurrences are merged into one mask so no fragment of either survives;
    adjacent ones are masked separately.
    """
    # One search, in the text without its line breaks: it finds whole occurrences and cut ones
    # alike (a pattern that itself holds a break, unusual in a secret, is searched as written).
    unwrapped = _Unwrapped(data)
    breaks = _BREAKS[type(data)]
    spans: list[tuple[int, int, AnyStr]] = []
    for pattern, replacement in patterns.items():
        whole = breaks.search(pattern) is not None
        text = data if whole else unwrapped.text
        pos = text.find(pattern)
        while pos != -1:
            start = pos if whole else unwrapped.original(pos)
            end = pos + len(pattern) if whole else unwrapped.original(pos + len(pattern) - 1) + 1
            spans.append((start, end, replacement))
            pos = text.find(pattern, pos + 1)
    if not spans:
        return data
    spans.sort(key=lambda span: (span[0], -span[1]))
    pieces: list[AnyStr] = []
    pos = 0  # end of what is already masked or copied
    for start, end, replacement in spans:
        if start < pos:  # overlaps the mask before: widen it
            pos = max(pos, end)
            continue
        pieces += [data[pos:start], replacement]
        pos = end
    pieces.append(data[pos:])
    return data[:0].join(pieces)


def _partial_end(text: str, form: str) -> int:
    """Length of the longest end of `text` that is a beginning (not the whole) of `form`."""
    return next((n for n in range(min(len(form) - 1, len(text)), 0, -1) if text.endswith(form[:n])), 0)


class Redactor:
    """Masks the given secrets, in any of their usual forms, in text and bytes bound for Slack."""

    REPLACEMENT = _REPLACEMENT

    def __init__(self, secrets: Iterable[str | None]) -> None:
        kept = {s for s in secrets if isinstance(s, str) and len(s) >= _MIN_SECRET}
        forms = {form for secret in kept for form in _text_forms(secret)}
        self._text: dict[str, str] = dict.fromkeys(forms, _REPLACEMENT)
        self._bytes: dict[bytes, bytes] = {form.encode("utf-8"): _REPLACEMENT.encode() for form in forms}
        # A file need not be UTF-8. In UTF-16 an ASCII secret is its bytes with zero bytes
        # between them, the same in both byte orders (only the zero before or after differs);
        # that middle part is replaced by the mask's, so the file stays readable.
        utf16_mask = _REPLACEMENT.encode("utf-16-le")[:-1]
        self._bytes.update({s.encode("utf-16-le")[:-1]: utf16_mask for s in kept})

    def redact(self, text: str) -> str:
        """Replace every occurrence of every secret (in any of its forms) with "[redacted]"."""
        if not self._text or not text:
            return text
        return _mask(text, self._text)

    def redact_streaming(self, text: str) -> str:
        """`redact` for text that is still growing: a trailing piece that may be the start
        of a secret (the rest of which has not arrived yet) is held back."""
        text = self.redact(text)
        unwrapped = _Unwrapped(text)
        held = max((_partial_end(unwrapped.text, form) for form in self._text), default=0)
        return text[: unwrapped.original(len(unwrapped.text) - held)] if held else text

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` for a file's contents, whatever its encoding: the bytes are searched, not
        decoded text, so a file that is not valid UTF-8 (a binary, a key after a stray byte)
        is masked too. A binary holding a secret is damaged where the secret was: the secret
        matters more than the file."""
        if not self._bytes or not data:
            return data
        return _mask(data, self._bytes)
