"""Slack's mrkdwn markup, both ways: plain text into it, and users' messages out of it.

Outgoing text that is not Markdown (status lines, fallbacks) is mrkdwn, where ``<...>`` is a
mention or a link, so anything literal must be escaped or a command like ``echo <!channel>``
would ping a whole channel (../shared/reference/slack.md §18). Incoming messages arrive in that
same escaped markup, which Claude should read as plain text. Pure and free of I/O.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from typing import Any

from maison_slack.core.summary import describe_tool

__all__ = ["escape_mrkdwn", "neutralize_broadcasts", "slack_to_plain", "tool_status"]

# A URL Slack can show as a link: no whitespace, nothing that would end the <...> early.
_URL = re.compile(r"https?://[^\s<>|`]+")
_URL_MAX = 300  # a longer one would crowd the status line; shown as code instead


def escape_mrkdwn(text: str) -> str:
    """Text shown literally in Slack mrkdwn (where <...> is a mention or link)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# A broadcast (<!here>, <!channel>, <!everyone>, legacy <!group>) or a user-group mention
# (<!subteam^S123|@team>), with its optional label.
_BROADCAST = re.compile(r"<!(here|channel|everyone|group|subteam\^[^<>|\n]*)(?:\|([^<>\n]*))?>")


def neutralize_broadcasts(text: str) -> str:
    """Slack markup from people or Claude, with every broadcast or user-group mention turned into
    plain words ("@channel", the group's label): the bot must not notify a whole channel or team
    because someone (or some text) said so. User mentions and links are kept.

    Bare "@channel" notifies nobody: the bot never posts with `link_names` (slack.md §18). The
    text stays as it was otherwise, escaped or not, so this suits mrkdwn and `markdown` blocks.
    """
    def plain(match: re.Match[str]) -> str:
        target, label = match.group(1), match.group(2)
        return "@" + (label or target.removeprefix("subteam^")).removeprefix("@")

    # Until nothing changes: a broadcast nested in another's label (<!here|<!channel>>) would
    # otherwise come out of one pass as a broadcast again.
    while True:
        neutral = _BROADCAST.sub(plain, text)
        if neutral == text:
            return neutral
        text = neutral


def tool_status(name: Any, tool_input: Any, redact: Callable[[str], str] | None = None) -> str:
    """One short mrkdwn line saying what Claude is doing with a tool, e.g. "Running `npm test`".

    The words come from `describe_tool`, which never raises on odd input, and masks secrets with
    `redact` before it shortens anything; here literals go in inline code, descriptions stay
    text, and both are escaped so they cannot ping anyone or break the line's markup.
    """
    redact = redact or (lambda text: text)
    call = describe_tool(name, tool_input, redact)
    url = _fetched_url(name, tool_input, redact)
    if url is not None:
        return f"{call.action} <{url}>"
    if not call.subject:
        return call.action
    if call.action.endswith(":"):  # a description Claude wrote, not a literal
        return f"{call.action} {escape_mrkdwn(call.subject)}"
    return f"{call.action} {_code(call.subject)}"


def _fetched_url(name: Any, tool_input: Any, redact: Callable[[str], str]) -> str | None:
    """The URL of a WebFetch call (redacted) when it can be shown whole as a link, else None."""
    if not (isinstance(name, str) and name.strip() == "WebFetch" and isinstance(tool_input, Mapping)):
        return None
    url = tool_input.get("url")
    url = redact(url).strip() if isinstance(url, str) else ""
    return url if _URL.fullmatch(url) and len(url) <= _URL_MAX else None


def _code(value: str) -> str:
    """Inline code that survives backticks in ``value``.

    Backticks would end the span early, and Slack's mrkdwn has no double-backtick spans, so
    they are shown as a look-alike (U+02CB). Slack reads ``<...>`` as a mention or link even
    in code, so &, < and > are escaped.
    """
    return "`" + escape_mrkdwn(value.replace("`", "\u02cb")) + "`"


# Slack escapes & < > in user text, so every <...> is markup: a user or
# channel mention, a special (!here, !subteam^…, !date^…) or a link.
_TOKEN = re.compile(r"<([@#!][^<>\n]*|[A-Za-z][A-Za-z0-9+.\-]*:[^<>\n]*)>")
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


_LONE_SURROGATE = re.compile("[\ud800-\udfff]")


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
    # JSON may carry a lone surrogate (\ud800), which no UTF-8 store or request can hold.
    return _LONE_SURROGATE.sub("\ufffd", "".join(out)).strip()
