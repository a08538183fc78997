"""Mask known secrets in anything the bot posts to Slack.

Claude may echo environment values (API keys, tokens) into its answer, its tool output or a
file it is asked to send; masking them here is the last line of defence before Slack.
"""

from __future__ import annotations

from collections.abc import Iterable

from maison_slack.slack.markup import escape_mrkdwn

__all__ = ["Redactor"]

# Shorter values are not masked: they would shred ordinary words.
_MIN_SECRET = 8


class Redactor:
    """Masks the given secrets in text bound for Slack, raw or mrkdwn-escaped.

    The escaped form counts too because text may be escaped (`escape_mrkdwn`) before it is
    redacted, which turns a secret holding &, < or > into a different string.
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

    def redact_bytes(self, data: bytes) -> bytes:
        """`redact` for a file's contents: UTF-8 text is redacted, other bytes pass unchanged.

        Binary files (images, archives) cannot be searched as text; masking bytes in them
        would only corrupt them.
        """
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            return data
        return self.redact(text).encode("utf-8")
