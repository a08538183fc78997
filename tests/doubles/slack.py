"""A local double of Slack (Web API + Socket Mode) for driving the real slack-bolt clients.

Why a double and not mocks: the bot talks to Slack through ``slack_sdk.AsyncWebClient`` and
``slack_bolt``'s ``AsyncSocketModeHandler``. Patching those hides exactly the bugs that hurt
in production (wrong ack timing, duplicate mention events, 429s, block limits, the bot reacting
to its own echo). So the tests run the *unpatched* clients against this server, which speaks
the same wire format, returns the same status codes and error strings, enforces the same limits
and fails the same way as Slack does (see ``../shared/reference/slack.md``).

Layout of one ``SlackDouble`` (a single aiohttp server on 127.0.0.1, random port):

* ``POST|GET /api/<method>``     Web API. HTTP 200 + JSON ``{"ok": ...}``; HTTP 429 when rate-limited.
* ``GET /link/?ticket=...``      Socket Mode WebSocket; tickets come from ``apps.connections.open``.
* ``POST /upload/v1/<id>``       raw upload target of ``files.getUploadURLExternal`` (files v2).
* ``GET /files-pri/...``         ``url_private`` / ``url_private_download`` (Bearer bot token).
* ``POST /commands/...``, ``POST /actions/...``  ``response_url`` targets (``respond()``).

Tests drive the human side with the async helpers (``mention``, ``post_message``,
``edit_message``, ``delete_message``, ``slash_command``, ``click`` ...) and assert on what a user
would see (``thread``, ``visible_text``, ``ephemerals``, ``Message.versions`` with their times) or
on protocol facts (``acks``, ``rate_limited``, ``calls``). Slowness and failures that Slack
produces only now and then (a slow ``reactions.add``, a 429 or 503 on ``chat.update``, a 413 on
an upload) are scheduled with ``SlackDouble.inject``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import copy
import inspect
import json
import math
import mimetypes
import re
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from http import HTTPStatus
from typing import Any
from urllib.parse import quote, quote_plus

import pytest_asyncio
from aiohttp import WSMsgType, web

from tests.doubles.slack_streaming import (  # chat.*Stream, setStatus lifecycle, feedback row
    STATUS_EXPIRY,
    STREAM_EXPIRY,
    STREAM_RATE_LIMITS,
    StreamingMixin,
    StreamState,
    card_text,
    context_actions_errors,
)

__all__ = [
    "Ack",
    "ApiCall",
    "Envelope",
    "Ephemeral",
    "Finding",
    "Message",
    "ResponseUrlPost",
    "SlackDouble",
    "ThreadStatus",
    "Upload",
    "broadcasts_in",
    "secret_forms",
    "slack_double",
]

PROXY_ENV_VARS = ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy")

# --------------------------------------------------------------------------------------
# Limits (reference §8). Kept as module constants so tests can build payloads at the edge.
# --------------------------------------------------------------------------------------
MAX_TEXT = 40_000  # chat.* `text`: msg_too_long above
MAX_BLOCKS = 50  # blocks per message: invalid_blocks above
MAX_MARKDOWN_TOTAL = 12_000  # all `markdown` blocks of one message together: msg_blocks_too_long
MAX_MARKDOWN_BLOCK = 12_000  # one `markdown` block: invalid_blocks
MAX_MARKDOWN_TEXT = 12_000  # `markdown_text` argument: msg_too_long
MAX_SECTION_TEXT = 3_000
MAX_SECTION_FIELDS = 10
MAX_FIELD_TEXT = 2_000
MAX_HEADER_TEXT = 150
MAX_CONTEXT_ELEMENTS = 10
MAX_ACTIONS_ELEMENTS = 25
MAX_BLOCK_ID = 255
MAX_ACTION_ID = 255
MAX_BUTTON_TEXT = 75
MAX_BUTTON_VALUE = 2_000
SLASH_ACK_DEADLINE = 3.0  # seconds; a later ack is ignored by Slack ("operation_timeout")
MAX_EVENT_RETRIES = 3
RESPONSE_URL_USES = 5
MAX_WEBSOCKETS = 10
#: The bot scopes an app installed from the repository's manifest.yml is granted; Slack names a
#: token's scopes in the ``x-oauth-scopes`` header of every Web API answer (reference §3, §11).
BOT_SCOPES = ("app_mentions:read", "channels:history", "groups:history", "im:history", "chat:write",
              "commands", "reactions:write", "files:read", "files:write", "users:read", "users:read.email")
#: An app-level token's scopes (the one the README has you generate).
APP_TOKEN_SCOPES = ("connections:write",)

#: Rate tiers per method, requests per minute (reference §6; Java SDK MethodsRateLimits).
TIER_1, TIER_2, TIER_3, TIER_4 = 1, 20, 50, 100
DEFAULT_RATE_LIMITS: dict[str, int] = {
    "apps.connections.open": TIER_1,
    "auth.test": 600,  # "special"; Bolt calls it once per concurrent first request
    "chat.postMessage": 60,  # special: ~1 message / second / channel (keyed per channel)
    "chat.update": TIER_3,
    "chat.delete": TIER_3,
    "chat.postEphemeral": TIER_4,
    "chat.getPermalink": TIER_4,
    "reactions.add": TIER_3,
    "reactions.remove": TIER_2,
    "conversations.replies": TIER_3,
    "conversations.history": TIER_3,
    "conversations.info": TIER_3,
    "users.info": TIER_4,
    "files.getUploadURLExternal": TIER_4,
    "files.completeUploadExternal": TIER_4,
    "assistant.threads.setStatus": 600,  # special; STREAM_RATE_LIMITS makes it 60/min per thread
}

_KNOWN_MESSAGE_BLOCKS = {
    "section", "divider", "image", "actions", "context", "header", "rich_text", "file", "video",
    "markdown", "table", "context_actions",
}  # fmt: skip

CANNED_USERS: dict[str, dict[str, str]] = {
    "U0ALICE": {"name": "alice", "real_name": "Alice Example"},
    "U0BOB": {"name": "bob", "real_name": "Bob Example"},
}


# --------------------------------------------------------------------------------------
# Records the tests assert on
# --------------------------------------------------------------------------------------
@dataclass
class Message:
    """One channel message as Slack stores it (human or bot). Mutated in place by edits."""

    channel: str
    ts: str
    user: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    markdown_text: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    reactions: dict[str, list[str]] = field(default_factory=dict)  # name -> users, in order
    thread_ts: str | None = None  # set on replies (parent ts) and on parents that have replies
    parent_user_id: str | None = None
    reply_count: int = 0
    reply_users: list[str] = field(default_factory=list)
    latest_reply: str | None = None
    bot_id: str | None = None
    app_id: str | None = None
    client_msg_id: str | None = None
    subtype: str | None = None
    reply_broadcast: bool = False
    metadata: dict[str, Any] | None = None
    edited: dict[str, str] | None = None  # {"user", "ts"} of the last edit
    edits: list[dict[str, Any]] = field(default_factory=list)  # previous versions, oldest first
    #: (time.monotonic(), visible text) of the post and of every edit, oldest first: what a user
    #: saw and when, so tests can measure time to first text and the gaps between updates.
    versions: list[tuple[float, str]] = field(default_factory=list)
    #: Set on a ``chat.startStream`` message: its streaming state (``slack_streaming.py``).
    stream: StreamState | None = None

    @property
    def is_reply(self) -> bool:
        return self.thread_ts is not None and self.thread_ts != self.ts

    @property
    def is_bot(self) -> bool:
        return self.bot_id is not None

    def snapshot(self) -> dict[str, Any]:
        """Content of this version (kept in ``edits`` before an update)."""
        return {
            "text": self.text,
            "blocks": copy.deepcopy(self.blocks),
            "markdown_text": self.markdown_text,
            "edited": self.edited,
        }

    def record_version(self) -> None:
        """Append the current visible text to ``versions``, stamped now."""
        self.versions.append((time.monotonic(), visible_text(self)))


@dataclass
class Ephemeral:
    """An ephemeral message: seen by one user, never stored in the channel, never an event."""

    channel: str
    user: str
    ts: str
    text: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)
    markdown_text: str | None = None
    thread_ts: str | None = None
    source: str = "chat.postEphemeral"  # or "ack" / "response_url"


@dataclass
class Envelope:
    """One Socket Mode envelope and its delivery state (same envelope_id on every retry)."""

    envelope_id: str
    type: str
    payload: dict[str, Any]
    accepts_response_payload: bool
    retry_attempt: int = 0
    retry_reason: str = ""
    created: float = field(default_factory=time.monotonic)
    first_sent: float | None = None
    sent_at: float | None = None  # last delivery attempt; None = waiting for a connection
    acked: bool = False
    given_up: bool = False
    retries_enabled: bool = True  # Slack retries events_api only

    def frame(self) -> dict[str, Any]:
        return {
            "envelope_id": self.envelope_id,
            "type": self.type,
            "accepts_response_payload": self.accepts_response_payload,
            "retry_attempt": self.retry_attempt,
            "retry_reason": self.retry_reason,
            "payload": self.payload,
        }


@dataclass
class Ack:
    """An ack frame from the app. ``latency`` is measured from the first delivery."""

    envelope_id: str
    time: float  # time.monotonic() at receipt
    latency: float
    payload: dict[str, Any] | None
    retry_attempt: int  # attempt number the envelope was at when the ack arrived
    late: bool = False  # slash command acked after 3 s: Slack ignored it


@dataclass
class ApiCall:
    """Log entry of one Web API request, with the outcome.

    ``time`` is when the request arrived and ``done`` when its response was ready (both
    ``time.monotonic()``), so an injected or real slowness shows as ``done - time``.
    """

    method: str
    args: dict[str, Any]
    time: float
    status: int = 200  # HTTP status of the response
    ok: bool = True
    error: str | None = None  # Slack's error string, if the body carried one
    done: float | None = None  # None while the call is still being answered


@dataclass
class ResponseUrlPost:
    """A POST to a ``response_url`` handed out with a slash command or an action."""

    kind: str  # "commands" | "actions"
    hook_id: str
    payload: dict[str, Any]
    time: float
    status: int


@dataclass
class ThreadStatus:
    """An ``assistant.threads.setStatus`` call (the "is thinking..." line under a thread)."""

    channel: str
    thread_ts: str
    status: str
    loading_messages: list[str] | None
    time: float


@dataclass
class _StoredFile:
    meta: dict[str, Any]
    content: bytes | None = None
    expected_length: int | None = None


@dataclass
class Upload:
    """One body the app POSTed to a files v2 upload target (``files.getUploadURLExternal``)."""

    file_id: str
    filename: str
    data: bytes
    time: float


@dataclass
class _Hook:
    kind: str
    channel: str
    user: str
    uses: int = 0
    created: float = field(default_factory=time.monotonic)
    message_ts: str | None = None  # original message of an action (replace/delete_original)
    thread_ts: str | None = None


class _Connection:
    """One accepted WebSocket. Sends are serialised; ``draining`` = disconnect was sent."""

    def __init__(self, ws: web.WebSocketResponse, ticket: str, number: int) -> None:
        self.ws = ws
        self.ticket = ticket
        self.number = number
        self.draining = False
        self.lock = asyncio.Lock()

    @property
    def usable(self) -> bool:
        return not self.draining and not self.ws.closed

    async def send(self, frame: dict[str, Any]) -> bool:
        async with self.lock:
            if self.ws.closed:
                return False
            try:
                await self.ws.send_str(json.dumps(frame))
            except (ConnectionError, RuntimeError):
                return False
            return True


class _Bucket:
    """Token bucket: ``capacity`` calls at once, refilled at ``per_minute``/60 per second."""

    def __init__(self, per_minute: int, capacity: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(max(1, capacity))
        self.tokens = self.capacity
        self.last = time.monotonic()

    def take(self) -> float | None:
        """Consume one token; return None if allowed, else seconds until one is available."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return None
        return (1.0 - self.tokens) / self.rate if self.rate > 0 else 60.0


@dataclass
class _Fault:
    """One ``SlackDouble.inject`` order: how the next ``remaining`` matching calls behave."""

    method: str  # Web API method, or "upload" for the files v2 upload target
    remaining: int
    delay: float
    error: str | None
    status: int | None
    retry_after: int
    match: Callable[[dict[str, Any]], bool] | None
    disconnect: bool = False


class _Disconnect(Exception):
    """Raised by ``_answer`` for an injected dropped connection: no HTTP response at all."""


class _Fail(Exception):
    """Raised by method handlers: becomes HTTP 200 ``{"ok": false, "error": ...}``."""

    def __init__(self, error: str, **extra: Any) -> None:
        super().__init__(error)
        self.error = error
        self.extra = extra


# --------------------------------------------------------------------------------------
# Argument helpers: form/query values are strings, JSON values may be anything
# --------------------------------------------------------------------------------------
def _arg_str(args: dict[str, Any], key: str) -> str | None:
    value = args.get(key)
    if value is None:
        return None
    if isinstance(value, (dict, list)):
        raise _Fail("invalid_array_arg")
    return str(value)


def _arg_bool(args: dict[str, Any], key: str) -> bool:
    value = args.get(key)
    if isinstance(value, bool):
        return value
    return str(value).lower() in ("1", "true") if value is not None else False


def _arg_json(args: dict[str, Any], key: str, error: str) -> Any:
    """Decode a JSON-encoded argument (form) or pass a JSON-body value through."""
    value = args.get(key)
    if isinstance(value, str):
        if value == "":
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise _Fail(error) from None
    return value


def _text_errors(obj: Any, ptr: str, max_len: int, plain_only: bool = False) -> list[str]:
    allowed = ("plain_text",) if plain_only else ("plain_text", "mrkdwn")
    if not isinstance(obj, dict) or obj.get("type") not in allowed:
        return [f"must provide an object with type {'|'.join(allowed)} [json-pointer:{ptr}]"]
    text = obj.get("text")
    if not isinstance(text, str):
        return [f"must provide a string [json-pointer:{ptr}/text]"]
    if len(text) == 0:
        return [f"must be more than 0 characters [json-pointer:{ptr}/text]"]
    if len(text) > max_len:
        return [f"must be less than {max_len + 1} characters [json-pointer:{ptr}/text]"]
    return []


def _element_errors(el: Any, ptr: str, action_ids: set[str]) -> list[str]:
    if not isinstance(el, dict) or not isinstance(el.get("type"), str):
        return [f"must provide an object with a type [json-pointer:{ptr}]"]
    errors: list[str] = []
    action_id = el.get("action_id")
    if action_id is not None:
        if not isinstance(action_id, str) or len(action_id) > MAX_ACTION_ID:
            errors.append(f"must be less than 256 characters [json-pointer:{ptr}/action_id]")
        elif action_id in action_ids:
            errors.append(f"action_id already exists [json-pointer:{ptr}/action_id]")
        else:
            action_ids.add(action_id)
    if el["type"] == "button":
        errors += _text_errors(el.get("text"), f"{ptr}/text", MAX_BUTTON_TEXT, plain_only=True)
        value = el.get("value")
        if value is not None and (not isinstance(value, str) or len(value) > MAX_BUTTON_VALUE):
            errors.append(f"must be less than 2001 characters [json-pointer:{ptr}/value]")
        if el.get("style") not in (None, "primary", "danger"):
            errors.append(f"must be one of primary|danger [json-pointer:{ptr}/style]")
    return errors


def _block_errors(blocks: list[Any]) -> list[str]:
    """Schema errors for message blocks, in Slack's ``[json-pointer:...]`` style."""
    errors: list[str] = []
    block_ids: set[str] = set()
    action_ids: set[str] = set()
    for i, block in enumerate(blocks):
        ptr = f"/blocks/{i}"
        if not isinstance(block, dict) or block.get("type") not in _KNOWN_MESSAGE_BLOCKS:
            errors.append(f"failed to match all allowed schemas [json-pointer:{ptr}]")
            continue
        kind = block["type"]
        block_id = block.get("block_id")
        if block_id is not None and kind != "markdown":  # markdown blocks drop block_id
            if not isinstance(block_id, str) or len(block_id) > MAX_BLOCK_ID:
                errors.append(f"must be less than 256 characters [json-pointer:{ptr}/block_id]")
            elif block_id in block_ids:
                errors.append(f"duplicate block_id [json-pointer:{ptr}/block_id]")
            else:
                block_ids.add(block_id)
        if kind == "section":
            if block.get("text") is None and not block.get("fields"):
                errors.append(f"must provide text or fields [json-pointer:{ptr}]")
            if block.get("text") is not None:
                errors += _text_errors(block["text"], f"{ptr}/text", MAX_SECTION_TEXT)
            fields = block.get("fields")
            if fields is not None:
                if not isinstance(fields, list) or len(fields) > MAX_SECTION_FIELDS:
                    errors.append(f"must provide no more than 10 items [json-pointer:{ptr}/fields]")
                else:
                    for j, f in enumerate(fields):
                        errors += _text_errors(f, f"{ptr}/fields/{j}", MAX_FIELD_TEXT)
            if block.get("accessory") is not None:
                errors += _element_errors(block["accessory"], f"{ptr}/accessory", action_ids)
        elif kind == "header":
            errors += _text_errors(block.get("text"), f"{ptr}/text", MAX_HEADER_TEXT, True)
        elif kind == "markdown":
            text = block.get("text")
            if not isinstance(text, str) or not text:
                errors.append(f"must provide a non-empty string [json-pointer:{ptr}/text]")
            elif len(text) > MAX_MARKDOWN_BLOCK:
                errors.append(f"must be less than 12001 characters [json-pointer:{ptr}/text]")
        elif kind == "context":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                errors.append(f"must provide at least 1 item [json-pointer:{ptr}/elements]")
            elif len(elements) > MAX_CONTEXT_ELEMENTS:
                errors.append(f"must provide no more than 10 items [json-pointer:{ptr}/elements]")
            else:
                for j, el in enumerate(elements):
                    if isinstance(el, dict) and el.get("type") == "image":
                        continue
                    errors += _text_errors(el, f"{ptr}/elements/{j}", MAX_SECTION_TEXT)
        elif kind == "actions":
            elements = block.get("elements")
            if not isinstance(elements, list) or not elements:
                errors.append(f"must provide at least 1 item [json-pointer:{ptr}/elements]")
            elif len(elements) > MAX_ACTIONS_ELEMENTS:
                errors.append(f"must provide no more than 25 items [json-pointer:{ptr}/elements]")
            else:
                for j, el in enumerate(elements):
                    errors += _element_errors(el, f"{ptr}/elements/{j}", action_ids)
        elif kind == "image":
            if not block.get("image_url") and not block.get("slack_file"):
                errors.append(f"must provide image_url or slack_file [json-pointer:{ptr}]")
            alt = block.get("alt_text")
            if not isinstance(alt, str) or not alt or len(alt) > 2000:
                errors.append(f"must provide alt_text (1-2000 chars) [json-pointer:{ptr}/alt_text]")
        elif kind == "rich_text":
            if not isinstance(block.get("elements"), list):
                errors.append(f"must provide an array [json-pointer:{ptr}/elements]")
        elif kind == "context_actions":  # the feedback row (slack_streaming.py)
            errors += context_actions_errors(block, ptr, action_ids)
    return errors


def _validate_blocks(blocks: Any) -> list[dict[str, Any]]:
    """Apply Slack's block limits; raise ``_Fail`` with Slack's error strings."""
    if not isinstance(blocks, list):
        raise _Fail("invalid_blocks_format")
    if len(blocks) > MAX_BLOCKS:
        msg = "no more than 50 items allowed [json-pointer:/blocks]"
        raise _Fail("invalid_blocks", errors=[msg], response_metadata={"messages": [f"[ERROR] {msg}"]})
    errors = _block_errors(blocks)
    if errors:
        raise _Fail(
            "invalid_blocks",
            errors=errors,
            response_metadata={"messages": [f"[ERROR] {e}" for e in errors]},
        )
    total = sum(len(b.get("text", "")) for b in blocks if b.get("type") == "markdown")
    if total > MAX_MARKDOWN_TOTAL:
        raise _Fail("msg_blocks_too_long")
    return [
        {k: v for k, v in b.items() if not (b["type"] == "markdown" and k == "block_id")}
        for b in blocks
    ]


def _rich_text_from(text: str) -> list[dict[str, Any]]:
    """The rich_text block a Slack client attaches to a typed message (mentions as users)."""
    elements: list[dict[str, Any]] = []
    pos = 0
    for m in re.finditer(r"<@([UW][A-Z0-9]+)>", text):
        if m.start() > pos:
            elements.append({"type": "text", "text": text[pos : m.start()]})
        elements.append({"type": "user", "user_id": m.group(1)})
        pos = m.end()
    if pos < len(text):
        elements.append({"type": "text", "text": text[pos:]})
    block_id = base64.b32encode(uuid.uuid4().bytes[:3]).decode().rstrip("=")[:5]
    return [
        {
            "type": "rich_text",
            "block_id": block_id,
            "elements": [{"type": "rich_text_section", "elements": elements}],
        }
    ]


def _rich_text_plain(elements: list[Any]) -> str:
    out: list[str] = []
    for el in elements:
        if not isinstance(el, dict):
            continue
        if el.get("type") == "text":
            out.append(str(el.get("text", "")))
        elif el.get("type") == "user":
            out.append(f"<@{el.get('user_id')}>")
        elif el.get("type") == "link":
            out.append(str(el.get("text") or el.get("url", "")))
        elif el.get("type") == "emoji":
            out.append(f":{el.get('name')}:")
        elif isinstance(el.get("elements"), list):
            out.append(_rich_text_plain(el["elements"]))
    return "".join(out)


def visible_text(msg: Message | Ephemeral) -> str:
    """What a user sees: blocks rendered to text when present, else the ``text`` fallback.

    Slack shows ``blocks`` instead of ``text`` when a message has blocks (``text`` is then
    only the notification / screen-reader fallback), and ``markdown_text`` is the body itself.
    """
    if msg.markdown_text:
        return msg.markdown_text
    parts: list[str] = []
    for block in msg.blocks:
        kind = block.get("type")
        if kind == "markdown":
            parts.append(block.get("text", ""))
        elif kind in ("section", "header"):
            if isinstance(block.get("text"), dict):
                parts.append(block["text"].get("text", ""))
            for f in block.get("fields") or []:
                parts.append(f.get("text", ""))
        elif kind == "context":
            parts += [e.get("text", "") for e in block.get("elements", []) if "text" in e]
        elif kind == "rich_text":
            parts.append(_rich_text_plain(block.get("elements", [])))
        elif kind in ("task_card", "plan"):  # streamed task/plan cards (slack_streaming.py)
            parts.append(card_text(block))
    if parts:
        return "\n".join(parts)
    return msg.text


# --------------------------------------------------------------------------------------
# Scanning what the app sent: secrets (in their usual encodings) and broadcast mentions
# --------------------------------------------------------------------------------------
@dataclass
class Finding:
    """A secret, or a broadcast mention, found in something the app sent to Slack.

    ``secret`` is the name the test gave the secret (never its value); ``form`` says how it was
    written (``raw``, ``mrkdwn``, ``hex``, ``HEX``, ``url``, ``url+``, ``json``, ``base64@1``,
    ``base64url@2``, ``utf-16``, ``fragment``; ``+wrapped`` when it only shows once whitespace
    is taken out, as in ``base64`` or ``xxd -p`` output cut into lines); ``where`` names the
    payload (``chat.update#12 blocks[0].text``, ``upload F0123 answer.md``, ``response_url#2 text``,
    ``ack <envelope> text``); ``excerpt`` is the text around it with the secret itself masked.
    """

    secret: str
    form: str
    where: str
    excerpt: str


def _base64_cores(data: bytes) -> dict[str, str]:
    """The characters of base64 (and base64url) that hold only ``data``'s bits, for ``data`` at
    each of the three offsets it can have in a longer encoded stream."""
    cores: dict[str, str] = {}
    for offset in range(3):
        encoded = base64.b64encode(bytes(offset) + data).decode("ascii")
        first = -(-offset * 8 // 6)  # characters before hold bits of the bytes before
        last = (offset + len(data)) * 8 // 6  # characters from here on hold bits of the bytes after
        core = encoded[first:last]
        cores[f"base64@{offset}"] = core
        cores[f"base64url@{offset}"] = core.translate(str.maketrans("+/", "-_"))
    return cores


def secret_forms(value: str) -> dict[str, str]:
    """The ways ``value`` may be written in text the app sends: as is, escaped for mrkdwn, in
    JSON, hex (lower and upper case), URL-encoded, and base64/base64url at any offset.
    Form name -> text; a text that two forms share is kept under the first name."""
    raw = value.encode("utf-8")
    hexed = binascii.hexlify(raw).decode("ascii")
    candidates = {
        "raw": value,
        "mrkdwn": value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"),
        "json": json.dumps(value)[1:-1],
        "hex": hexed,
        "HEX": hexed.upper(),
        "url": quote(value, safe=""),
        "url/": quote(value),
        "url+": quote_plus(value, safe=""),
        **_base64_cores(raw),
    }
    forms: dict[str, str] = {}
    for name, text in candidates.items():
        if text and text not in forms.values():
            forms[name] = text
    return forms


_WHITESPACE = re.compile(r"\s+")
_WHITESPACE_BYTES = re.compile(rb"\s+")


def _excerpt(text: str, start: int, end: int, width: int = 30) -> str:
    return (text[max(0, start - width) : start] + "«SECRET»" + text[end : end + width]).replace("\n", "⏎")


def _scan_text(text: str, secrets: Mapping[str, dict[str, str]], where: str,
               fragments: Mapping[str, list[str]]) -> list[Finding]:
    found: list[Finding] = []
    compact = _WHITESPACE.sub("", text)
    for name, forms in secrets.items():
        hit = False
        for form, pattern in forms.items():
            pos = text.find(pattern)
            if pos != -1:
                found.append(Finding(name, form, where, _excerpt(text, pos, pos + len(pattern))))
                hit = True
                break
            pos = compact.find(pattern) if compact is not text else -1
            if pos != -1:
                found.append(Finding(name, form + "+wrapped", where, _excerpt(compact, pos, pos + len(pattern))))
                hit = True
                break
        if not hit:
            for piece in fragments.get(name, ()):
                pos = text.find(piece)
                if pos != -1:
                    found.append(Finding(name, "fragment", where, _excerpt(text, pos, pos + len(piece))))
                    break
    return found


def _scan_bytes(data: bytes, secrets: Mapping[str, dict[str, str]], where: str,
                fragments: Mapping[str, list[str]]) -> list[Finding]:
    """Bytes in any encoding: each form's UTF-8 bytes, and the raw value in UTF-16 (either byte
    order: the value's interior, zero bytes included, is the same in both)."""
    found: list[Finding] = []
    compact = _WHITESPACE_BYTES.sub(b"", data)
    for name, forms in secrets.items():
        patterns = {form: text.encode("utf-8") for form, text in forms.items()}
        patterns["utf-16"] = forms["raw"].encode("utf-16-le")[:-1]
        hit = next(((form, data.find(p), p) for form, p in patterns.items() if data.find(p) != -1), None)
        suffix = ""
        if hit is None:
            hit = next(((form, compact.find(p), p) for form, p in patterns.items() if compact.find(p) != -1), None)
            suffix = "+wrapped"
            data_seen = compact
        else:
            data_seen = data
        if hit is not None:
            form, pos, pattern = hit
            text = data_seen.decode("latin-1")
            found.append(Finding(name, form + suffix, where, _excerpt(text, pos, pos + len(pattern))))
            continue
        for piece in fragments.get(name, ()):
            pos = data.find(piece.encode("utf-8"))
            if pos != -1:
                found.append(Finding(name, "fragment", where,
                                     _excerpt(data.decode("latin-1"), pos, pos + len(piece))))
                break
    return found


def _leaves(value: Any, path: str = "") -> Iterator[tuple[str, str]]:
    """(path, string) of every string in a JSON-like value, keys included."""
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield f"{path}.{key}" if path else str(key), str(key)
            yield from _leaves(item, f"{path}.{key}" if path else str(key))
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from _leaves(item, f"{path}[{index}]")
    elif isinstance(value, (bytes, bytearray)):
        yield path, bytes(value).decode("utf-8", "replace")
    elif value is not None and not isinstance(value, (bool, int, float)):
        yield path, str(value)


#: A broadcast or user-group mention as Slack reads it in mrkdwn: ``<!here>``, ``<!channel>``,
#: ``<!everyone>``, legacy ``<!group>``, with an optional ``|label``, or ``<!subteam^S…>``.
BROADCAST = re.compile(r"<!(?:here|channel|everyone|group)(?:\|[^<>]*)?>|<!subteam\^[^<>]*>")
_BARE_BROADCAST = re.compile(r"(?<![\w@])@(?:here|channel|everyone)\b")
#: Keys whose strings Slack renders as message text (mrkdwn or markdown): where a mention pings.
_TEXT_KEYS = frozenset({"text", "markdown_text", "initial_comment", "pretext", "fallback"})


def _broadcasts_in_value(value: Any, where: str, link_names: bool) -> list[Finding]:
    found: list[Finding] = []

    def walk(item: Any, path: str, key: str | None) -> None:
        if isinstance(item, dict):
            if item.get("type") in ("broadcast", "usergroup"):  # rich_text elements that notify
                found.append(Finding("broadcast", f"rich_text {item.get('type')}", f"{where} {path}",
                                     json.dumps(item)[:80]))
            for k, v in item.items():
                walk(v, f"{path}.{k}" if path else str(k), str(k))
        elif isinstance(item, (list, tuple)):
            for index, v in enumerate(item):
                walk(v, f"{path}[{index}]", key)
        elif isinstance(item, str) and key in _TEXT_KEYS:
            for match in BROADCAST.finditer(item):
                found.append(Finding("broadcast", match.group(0), f"{where} {path}",
                                     item[max(0, match.start() - 30) : match.end() + 30].replace("\n", "⏎")))
            if link_names:
                for match in _BARE_BROADCAST.finditer(item):
                    found.append(Finding("broadcast", f"link_names {match.group(0)}", f"{where} {path}",
                                         item[max(0, match.start() - 30) : match.end() + 30].replace("\n", "⏎")))

    walk(value, "", None)
    return found


def broadcasts_in(payload: Any, where: str = "") -> list[Finding]:
    """Broadcast and user-group mentions that would notify in one message payload (the app's
    arguments, an ack or response_url body): markup in text fields, rich_text broadcast and
    usergroup elements, and bare ``@channel`` when the payload asks for ``link_names``/``parse=full``."""
    link_names = False
    if isinstance(payload, dict):
        link_names = str(payload.get("link_names", "")).lower() in ("1", "true") or payload.get("parse") == "full"
    return _broadcasts_in_value(payload, where, link_names)


# --------------------------------------------------------------------------------------
# The double
# --------------------------------------------------------------------------------------
class SlackDouble(StreamingMixin):
    """Slack Web API + Socket Mode on one loopback port, with a message store.

    Args:
        redelivery_timeout: seconds before an unacked ``events_api`` envelope is redelivered
            (Slack: 3 s). Retries carry ``retry_attempt`` + 1 and ``retry_reason="timeout"``,
            at most 3 of them.
        rate_limits: per-method overrides of requests per minute (see ``DEFAULT_RATE_LIMITS``);
            ``chat.postMessage`` is counted per channel.
        burst: bucket capacity: how many calls of one method may go through back to back
            (methods allowed >= 100/min get at least a tenth of their per-minute rate).
        slash_ack_deadline: an ack for a slash command later than this is ignored (Slack: 3 s).
        stream_expiry, stream_idle_expiry, status_expiry: lifetimes of a ``chat.startStream``
            stream (Slack: ≈300 s) and of a thread status (Slack: 120 s); see ``StreamingMixin``.
    """

    bot_token = "xoxb-test-token"
    app_token = "xapp-test-token"
    team_id = "T0FAKE"
    team_domain = "fake"
    bot_user_id = "U0BOT"
    bot_id = "B0BOT"
    app_id = "A0FAKE"
    bot_name = "maison"

    def __init__(
        self,
        *,
        redelivery_timeout: float = 3.0,
        rate_limits: dict[str, int] | None = None,
        burst: int = 5,
        slash_ack_deadline: float = SLASH_ACK_DEADLINE,
        stream_expiry: float = STREAM_EXPIRY,
        stream_idle_expiry: float | None = None,
        status_expiry: float = STATUS_EXPIRY,
    ) -> None:
        self.redelivery_timeout = redelivery_timeout
        self.rate_limits = {**DEFAULT_RATE_LIMITS, **STREAM_RATE_LIMITS, **(rate_limits or {})}
        self.burst = burst
        self.slash_ack_deadline = slash_ack_deadline

        self.port: int | None = None
        self.api_url = ""
        self.base_url = ""

        # observable state
        self.calls: list[ApiCall] = []
        self.rate_limited: list[str] = []
        self.acks: dict[str, Ack] = {}
        self.envelopes: dict[str, Envelope] = {}
        self.frames_sent: list[dict[str, Any]] = []
        self.responses: list[ResponseUrlPost] = []
        self.statuses: list[ThreadStatus] = []
        self.deleted: list[Message] = []
        self.connections_opened = 0
        self.not_member: set[str] = set()  # channels the bot is not in
        #: Scopes the bot token was granted (``x-oauth-scopes``); a test removes one to model
        #: an app installed before that scope was added to its configuration.
        self.bot_scopes: list[str] = list(BOT_SCOPES)
        #: False models an app whose Socket Mode is turned off: a new WebSocket gets Slack's
        #: ``disconnect`` with reason ``link_disabled`` (reference §4.6) instead of ``hello``,
        #: and is closed. (Whether Slack refuses ``apps.connections.open`` first is not
        #: documented; ``inject("apps.connections.open", error=...)`` covers that case.)
        self.socket_mode_enabled = True

        self._channels: dict[str, list[Message]] = {}
        self._index: dict[tuple[str, str], Message] = {}
        self._ephemerals: list[Ephemeral] = []
        self._files: dict[str, _StoredFile] = {}
        self._uploads: dict[str, str] = {}  # upload id -> file id
        #: Every body the app sent to an upload target, in order, whatever the answer was.
        self.uploads_received: list[Upload] = []
        self._url_names: dict[str, str] = {}  # file id -> the name its links carry (add_hosted_file)
        self._hooks: dict[str, _Hook] = {}
        self._tickets: dict[str, bool] = {}  # ticket -> used
        self._connections: list[_Connection] = []
        self._buckets: dict[str, _Bucket] = {}
        self._faults: list[_Fault] = []
        self._last_us = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._runner: web.AppRunner | None = None
        self._redeliver_task: asyncio.Task[None] | None = None
        self._changed = asyncio.Event()

        self._methods: dict[str, Callable[[dict[str, Any], str], Awaitable[dict[str, Any]]]] = {
            "auth.test": self._auth_test,
            "apps.connections.open": self._apps_connections_open,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "reactions.add": self._reactions_add,
            "reactions.remove": self._reactions_remove,
            "conversations.replies": self._conversations_replies,
            "conversations.history": self._conversations_history,
            "conversations.info": self._conversations_info,
            "users.info": self._users_info,
            "files.getUploadURLExternal": self._files_get_upload_url,
            "files.completeUploadExternal": self._files_complete_upload,
            "assistant.threads.setStatus": self._assistant_set_status,
        }
        self._init_streaming(
            stream_expiry=stream_expiry, stream_idle_expiry=stream_idle_expiry, status_expiry=status_expiry
        )

    # ---------------------------------------------------------------- lifecycle
    async def start(self) -> SlackDouble:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_get("/link/", self._handle_ws)
        app.router.add_get("/link", self._handle_ws)
        app.router.add_post("/upload/v1/{upload_id}", self._handle_upload)
        app.router.add_get("/files-pri/{file_key}/download/{name}", self._handle_download)
        app.router.add_get("/files-pri/{file_key}/{name}", self._handle_download)
        app.router.add_get("/signin", self._handle_signin)
        app.router.add_post("/commands/{team}/{hook}/{secret}", self._handle_response_url)
        app.router.add_post("/actions/{team}/{hook}/{secret}", self._handle_response_url)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, shutdown_timeout=1.0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.api_url = f"{self.base_url}/api/"
        self._redeliver_task = asyncio.create_task(self._redelivery_loop())
        return self

    async def stop(self) -> None:
        if self._redeliver_task is not None:
            self._redeliver_task.cancel()
            await asyncio.gather(self._redeliver_task, return_exceptions=True)
            self._redeliver_task = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for conn in list(self._connections):
            await conn.ws.close(code=1001, message=b"server shutdown")
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> SlackDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def _spawn(self, coro: Awaitable[Any]) -> None:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _touch(self) -> None:
        self._changed.set()

    # ---------------------------------------------------------------- faults on demand
    def inject(
        self,
        method: str,
        *,
        count: int = 1,
        delay: float = 0.0,
        error: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        match: Callable[[dict[str, Any]], bool] | None = None,
        disconnect: bool = False,
    ) -> None:
        """Make the next ``count`` calls of ``method`` whose arguments satisfy ``match`` slow or fail.

        Slack is sometimes slow and sometimes refuses a call; the bot must survive both, and a
        test cannot wait for Slack to do it by chance. ``method`` is a Web API method
        (``"reactions.add"``, ``"chat.update"`` ...; ``match`` gets the merged query/form/JSON
        arguments) or ``"upload"``, the raw files v2 upload target ``POST /upload/v1/<id>``
        (``match`` gets ``{"upload_id", "file_id", "filename"}``).

        * ``delay``: seconds that pass before the call is handled; only that request waits
          (aiohttp answers every request in its own task). Without ``error``/``status`` the call
          then proceeds normally (auth already passed; rate limits are checked after the wait).
        * ``error``: HTTP 200 ``{"ok": false, "error": error}``, logged as failed in ``calls``;
          slack_sdk raises ``SlackApiError`` with ``response["error"] == error``.
        * ``status=429``: exactly a real rate limit: HTTP 429 ``{"ok": false, "error":
          "ratelimited"}`` with ``Retry-After: <retry_after or 1>``, logged in ``rate_limited``.
        * other ``status`` on a Web API method: that status with an HTML error page, since Slack's
          front end answers 5xx without JSON (slack-ruby-client PR #307, python-slack-sdk #718);
          slack_sdk raises ``SlackApiError`` with ``response.status_code == status`` and empty
          ``response.data``.
        * ``status`` on ``"upload"`` (e.g. 413, what Slack answers a too-large upload): that status
          with a ``text/plain`` reason phrase. ``files_upload_v2`` then raises
          ``slack_sdk.errors.SlackRequestError("Failed to upload a file (status: 413, body:
          <reason phrase>, filename: ..., title: ...)")`` (not ``SlackApiError``) and never calls
          ``files.completeUploadExternal``: nothing is shared.
        * ``disconnect`` (Web API methods): the connection is closed without any HTTP response,
          as when a proxy or load balancer drops it; aiohttp raises ``ServerDisconnectedError``
          (not a Slack error) once slack_sdk's connection-error retries are used up. The call
          is logged with ``error == "disconnected"``; it has no effect.

        Orders apply in FIFO order: a call takes the oldest unused order that fits it.
        """
        if count < 1:
            raise ValueError("count must be at least 1")
        if error is not None and status is not None:
            raise ValueError("give error (HTTP 200 ok:false) or status, not both")
        if status is not None and not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an error status")
        if error is not None and method == "upload":
            raise ValueError("the upload target has no Slack error body; inject a status instead")
        if disconnect and (error is not None or status is not None or method == "upload"):
            raise ValueError("disconnect is a Web API fault of its own: no error, no status")
        self._faults.append(_Fault(method, count, delay, error, status, retry_after or 1, match, disconnect))

    def _take_fault(self, method: str, args: dict[str, Any]) -> _Fault | None:
        """Consume one use of the oldest order for this call, if any."""
        for fault in self._faults:
            if fault.method == method and (fault.match is None or fault.match(args)):
                fault.remaining -= 1
                if fault.remaining == 0:
                    self._faults.remove(fault)
                return fault
        return None

    # ---------------------------------------------------------------- ids and clocks
    def _next_ts(self) -> str:
        """Strictly increasing ``"<epoch>.<6 digits>"`` (Slack's message ids)."""
        self._last_us = max(int(time.time() * 1_000_000), self._last_us + 1)
        return f"{self._last_us // 1_000_000}.{self._last_us % 1_000_000:06d}"

    @staticmethod
    def _event_id() -> str:
        return "Ev" + uuid.uuid4().hex[:10].upper()

    @staticmethod
    def _file_id() -> str:
        return "F" + uuid.uuid4().hex[:10].upper()

    @staticmethod
    def channel_type(channel: str) -> str:
        return {"C": "channel", "G": "group", "D": "im"}.get(channel[:1], "channel")

    @staticmethod
    def channel_name(channel: str) -> str:
        return channel.lower()

    # ---------------------------------------------------------------- store accessors
    def messages(self, channel: str) -> list[Message]:
        """Every stored message of a channel (top-level and replies), in ts order."""
        return list(self._channels.get(channel, []))

    def message(self, channel: str, ts: str) -> Message | None:
        return self._index.get((channel, ts))

    def thread(self, channel: str, thread_ts: str) -> list[Message]:
        """Parent followed by its replies, in order."""
        return [
            m for m in self._channels.get(channel, []) if m.ts == thread_ts or m.thread_ts == thread_ts
        ]

    def ephemerals(self, channel: str | None = None, user: str | None = None) -> list[Ephemeral]:
        return [
            e
            for e in self._ephemerals
            if (channel is None or e.channel == channel) and (user is None or e.user == user)
        ]

    visible_text = staticmethod(visible_text)

    def file_content(self, file_id: str) -> bytes | None:
        stored = self._files.get(file_id)
        return stored.content if stored else None

    # ---------------------------------------------------------------- what the app sent, scanned
    def bot_payloads(self) -> Iterator[tuple[str, Any]]:
        """(where, payload) of everything the app sent Slack as a message or a call: the
        arguments of every Web API call (answered, refused or rate-limited alike), every ack
        payload and every response_url body. Uploaded file bodies are in ``bot_uploads``."""
        for number, call in enumerate(list(self.calls)):
            yield f"{call.method}#{number}", call.args
        for envelope_id, ack in list(self.acks.items()):
            if ack.payload:
                yield f"ack {envelope_id}", ack.payload
        for number, post in enumerate(list(self.responses)):
            yield f"response_url#{number}", post.payload

    def bot_uploads(self) -> Iterator[tuple[str, bytes]]:
        """(where, bytes) of every file body the app uploaded."""
        for upload in list(self.uploads_received):
            yield f"upload {upload.file_id} {upload.filename}", upload.data

    def scan_for(self, secrets: Mapping[str, str] | Iterable[str], *, fragment: int | None = None) -> list[Finding]:
        """Every secret found in anything the app sent to Slack, in any of its usual forms
        (``secret_forms``; also with whitespace taken out, as wrapped ``base64``/``xxd -p``
        output shows them; and UTF-16 in uploads).

        ``secrets`` maps a name to a value (or is a list of values, named ``secret#N``). With
        ``fragment``, any ``fragment`` consecutive characters of a value count too (a secret cut
        in two by truncation still shows its half). Findings name the secret, not its value.
        """
        named = dict(secrets) if isinstance(secrets, Mapping) else {f"secret#{n}": v for n, v in enumerate(secrets)}
        named = {name: value for name, value in named.items() if value}
        forms = {name: secret_forms(value) for name, value in named.items()}
        fragments = {name: [value[i : i + fragment] for i in range(len(value) - fragment + 1)]
                     for name, value in named.items()} if fragment else {}
        found: list[Finding] = []
        for where, payload in self.bot_payloads():
            for path, text in _leaves(payload):
                found += _scan_text(text, forms, f"{where} {path}", fragments)
        for where, data in self.bot_uploads():
            found += _scan_bytes(data, forms, where, fragments)
        return found

    def broadcast_pings(self) -> list[Finding]:
        """Every broadcast or user-group mention that would notify, in anything the app sent
        (see ``broadcasts_in``)."""
        found: list[Finding] = []
        for where, payload in self.bot_payloads():
            found += broadcasts_in(payload, where)
        return found

    def scanned(self) -> dict[str, int]:
        """How much ``scan_for`` / ``broadcast_pings`` look at: payloads, uploads and their bytes."""
        payloads = list(self.bot_payloads())
        return {
            "payloads": len(payloads),
            "payload_chars": sum(len(text) for _, payload in payloads for _, text in _leaves(payload)),
            "uploads": len(self.uploads_received),
            "upload_bytes": sum(len(u.data) for u in self.uploads_received),
        }

    def message_dict(self, msg: Message) -> dict[str, Any]:
        """The message as the Web API returns it (conversations.*, chat.* ``message``)."""
        out: dict[str, Any] = {"type": "message", "ts": msg.ts, "user": msg.user, "text": msg.text}
        if msg.markdown_text is not None:
            out["text"] = msg.markdown_text
        if msg.subtype:
            out["subtype"] = msg.subtype
        if msg.client_msg_id:
            out["client_msg_id"] = msg.client_msg_id
        if msg.bot_id:
            out["bot_id"] = msg.bot_id
            out["app_id"] = msg.app_id
            out["bot_profile"] = self._bot_profile()
        out["team"] = self.team_id
        if msg.blocks:
            out["blocks"] = copy.deepcopy(msg.blocks)
        if msg.files:
            out["files"] = copy.deepcopy(msg.files)
            out["upload"] = False
        if msg.thread_ts:
            out["thread_ts"] = msg.thread_ts
        if msg.is_reply:
            out["parent_user_id"] = msg.parent_user_id
        elif msg.reply_count:
            out["reply_count"] = msg.reply_count
            out["reply_users_count"] = len(msg.reply_users)
            out["reply_users"] = list(msg.reply_users)
            out["latest_reply"] = msg.latest_reply
            out["is_locked"] = False
            out["subscribed"] = False
        if msg.edited:
            out["edited"] = dict(msg.edited)
        if msg.reactions:
            out["reactions"] = [
                {"name": n, "users": list(u), "count": len(u)} for n, u in msg.reactions.items()
            ]
        if msg.metadata:
            out["metadata"] = copy.deepcopy(msg.metadata)
        return out

    def _bot_profile(self) -> dict[str, Any]:
        return {
            "id": self.bot_id,
            "app_id": self.app_id,
            "name": self.bot_name,
            "icons": {"image_48": f"{self.base_url}/static/bot_48.png"},
            "deleted": False,
            "updated": 1700000000,
            "team_id": self.team_id,
        }

    def _store(self, msg: Message) -> Message:
        self._channels.setdefault(msg.channel, []).append(msg)
        self._index[(msg.channel, msg.ts)] = msg
        msg.record_version()
        if msg.is_reply:
            parent = self._index[(msg.channel, msg.thread_ts or "")]
            parent.thread_ts = parent.ts
            parent.reply_count += 1
            parent.latest_reply = msg.ts
            if msg.user not in parent.reply_users:
                parent.reply_users.append(msg.user)
        self._touch()
        return msg

    def _resolve_thread(self, channel: str, thread_ts: str | None) -> tuple[str | None, str | None]:
        """(thread root ts, root user). A reply's ts resolves to its parent, like Slack."""
        if not thread_ts:
            return None, None
        target = self._index.get((channel, thread_ts))
        if target is None:
            # Deliberately strict: the exact behaviour of Slack here is unverified, and a bot
            # replying into a thread that does not exist has a bug either way.
            raise _Fail("invalid_thread_ts")
        if target.is_reply:
            target = self._index[(channel, target.thread_ts or "")]
        return target.ts, target.user

    def _live(self, channel: str, ts: str) -> Message | None:
        """The message at (channel, ts) unless it is gone (a tombstone counts as gone)."""
        msg = self._index.get((channel, ts))
        return None if msg is None or msg.subtype == "tombstone" else msg

    def _edit(self, msg: Message, user: str, change: Callable[[Message], None]) -> dict[str, Any]:
        """Apply ``change`` as one edit by ``user``; return the ``message_changed`` event.

        Every edit path (``chat.update``, ``replace_original``, a human editing) must keep the
        old version in ``edits``, stamp ``edited`` and time the new visible version alike;
        delivering the event is left to the caller because humans' and the bot's edits reach
        the app at different moments.
        """
        before = self.message_dict(msg)
        msg.edits.append(msg.snapshot())
        change(msg)
        event_ts = self._next_ts()
        msg.edited = {"user": user, "ts": event_ts}
        msg.record_version()
        self._touch()
        return self._changed_event(msg, before, event_ts)

    # ---------------------------------------------------------------- HTTP: Web API
    async def _read_args(self, request: web.Request) -> tuple[dict[str, Any], bool]:
        """Merge query string, form and JSON body; also say whether the body was JSON."""
        args: dict[str, Any] = dict(request.query)
        is_json = False
        if request.method == "POST" and request.can_read_body:
            ctype = request.content_type
            if ctype == "application/json":
                try:
                    body = await request.json()
                except ValueError:
                    raise _Fail("invalid_json") from None
                if not isinstance(body, dict):
                    raise _Fail("invalid_json")
                args.update(body)
                is_json = True
            elif ctype in ("application/x-www-form-urlencoded", "multipart/form-data"):
                form = await request.post()
                args.update({k: v for k, v in form.items() if isinstance(v, str)})
        return args, is_json

    @staticmethod
    def _json(body: dict[str, Any], status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
        return web.json_response(body, status=status, headers=headers)

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            args, is_json = await self._read_args(request)
        except _Fail as fail:
            return self._json({"ok": False, "error": fail.error})
        auth = request.headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            token = auth[7:].strip()
        else:  # Slack does not read a token from a JSON body, only from the header
            token = "" if is_json else _arg_str(args, "token") or ""
        call = ApiCall(method=method, args=args, time=time.monotonic())
        self.calls.append(call)
        try:
            response = await self._answer(call, token)
        except _Disconnect:
            call.ok, call.error, call.status, call.done = False, "disconnected", 0, time.monotonic()
            assert request.transport is not None
            request.transport.close()
            raise web.HTTPException() from None  # nothing is written: the transport is gone
        call.status, call.done = response.status, time.monotonic()
        self._touch()
        return response

    async def _answer(self, call: ApiCall, token: str) -> web.Response:
        """Slack's answer to one Web API call; failures are also written onto ``call``."""
        handler = self._methods.get(call.method)
        if handler is None:
            return self._fail(call, "unknown_method", req_method=call.method)
        auth_error = self._auth_error(call.method, token)
        if auth_error is not None:
            return self._fail(call, auth_error)
        fault = self._take_fault(call.method, call.args)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.disconnect:
                raise _Disconnect
            if fault.error is not None:
                return self._fail(call, fault.error)
            if fault.status is not None:
                return self._http_error(call, fault.status, fault.retry_after)
        wait = self._rate_check(call.method, call.args)
        if wait is not None:
            return self._http_error(call, 429, max(1, math.ceil(wait)))
        try:
            result = await handler(call.args, token)
        except _Fail as err:
            return self._fail(call, err.error, **err.extra)
        scopes = APP_TOKEN_SCOPES if token == self.app_token else self.bot_scopes
        return self._json({"ok": True, **result}, headers={"x-oauth-scopes": ",".join(scopes)})

    def _auth_error(self, method: str, token: str) -> str | None:
        """Slack's error for a missing or wrong token (app tokens only open connections)."""
        if not token:
            return "not_authed"
        if method == "apps.connections.open":
            if token == self.bot_token:
                return "not_allowed_token_type"
            return None if token == self.app_token else "invalid_auth"
        if token == self.app_token:
            return "not_allowed_token_type"
        return None if token == self.bot_token else "invalid_auth"

    def _fail(self, call: ApiCall, error: str, **extra: Any) -> web.Response:
        """HTTP 200 ``{"ok": false, "error": ...}``: how Slack reports almost every failure."""
        call.ok, call.error = False, error
        return self._json({"ok": False, "error": error, **extra})

    def _http_error(self, call: ApiCall, status: int, retry_after: int) -> web.Response:
        """A non-200 Web API answer: the rate limit, or an error page from Slack's front end."""
        call.ok = False
        if status == 429:
            call.error = "ratelimited"
            self.rate_limited.append(call.method)
            return self._json(
                {"ok": False, "error": "ratelimited"},
                status=429,
                headers={"Retry-After": str(retry_after)},
            )
        phrase = f"{status} {HTTPStatus(status).phrase}"
        page = f"<html><head><title>{phrase}</title></head><body><h1>{phrase}</h1></body></html>"
        return web.Response(status=status, text=page, content_type="text/html")

    def _rate_check(self, method: str, args: dict[str, Any]) -> float | None:
        per_minute = self.rate_limits.get(method, TIER_3)
        key = method
        if method == "chat.postMessage":
            key = f"{method}:{args.get('channel')}"
        elif method == "assistant.threads.setStatus":  # special: per thread (reference §15, §16)
            key = f"{method}:{args.get('channel_id')}:{args.get('thread_ts')}"
        bucket = self._buckets.get(key)
        if bucket is None:
            # generous methods (>= 100/min) tolerate bigger bursts than `burst`
            capacity = self.burst if per_minute < 100 else max(self.burst, per_minute // 10)
            bucket = self._buckets[key] = _Bucket(per_minute, capacity)
        return bucket.take()

    def _channel_arg(self, args: dict[str, Any], key: str = "channel") -> str:
        channel = _arg_str(args, key)
        if not channel:
            raise _Fail("channel_not_found")
        if channel[:1] in ("U", "W"):  # posting to a user id opens the DM with them
            channel = "D" + channel[1:]
        if channel[:1] not in ("C", "G", "D") or not re.fullmatch(r"[A-Z0-9]+", channel):
            raise _Fail("channel_not_found")
        return channel

    def _content_args(
        self, args: dict[str, Any], *, require: bool = True
    ) -> tuple[str | None, list[dict[str, Any]] | None, str | None]:
        """(text, blocks, markdown_text) after Slack's checks; None = argument absent."""
        text = _arg_str(args, "text")
        markdown_text = _arg_str(args, "markdown_text")
        raw_blocks = _arg_json(args, "blocks", "invalid_blocks_format")
        attachments = _arg_json(args, "attachments", "invalid_attachments")
        if markdown_text and (text or raw_blocks is not None):
            raise _Fail("markdown_text_conflict")
        if markdown_text is not None and len(markdown_text) > MAX_MARKDOWN_TEXT:
            raise _Fail("msg_too_long")
        blocks = _validate_blocks(raw_blocks) if raw_blocks is not None else None
        if text is not None and len(text) > MAX_TEXT:
            raise _Fail("msg_too_long")
        if require and not (text or blocks or markdown_text or attachments):
            raise _Fail("no_text")
        return text, blocks, markdown_text

    # ---------------------------------------------------------------- methods
    async def _auth_test(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        return {
            "url": f"https://{self.team_domain}.slack.com/",
            "team": "Fake Team",
            "user": self.bot_name,
            "team_id": self.team_id,
            "user_id": self.bot_user_id,
            "bot_id": self.bot_id,
            "is_enterprise_install": False,
        }

    async def _apps_connections_open(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        ticket = str(uuid.uuid4())
        self._tickets[ticket] = False
        return {"url": f"ws://127.0.0.1:{self.port}/link/?ticket={ticket}&app_id={self.app_id}"}

    async def _chat_post_message(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        if channel in self.not_member:
            raise _Fail("not_in_channel")
        text, blocks, markdown_text = self._content_args(args)
        thread_ts, parent_user = self._resolve_thread(channel, _arg_str(args, "thread_ts"))
        broadcast = bool(thread_ts) and _arg_bool(args, "reply_broadcast")
        metadata = _arg_json(args, "metadata", "invalid_metadata_format")
        msg = self._post_as_bot(
            channel,
            text=text or "",
            blocks=blocks or [],
            markdown_text=markdown_text,
            thread_ts=thread_ts,
            parent_user=parent_user,
            broadcast=broadcast,
            metadata=metadata,
        )
        return {"channel": channel, "ts": msg.ts, "message": self.message_dict(msg)}

    def _post_as_bot(
        self,
        channel: str,
        *,
        text: str = "",
        blocks: list[dict[str, Any]] | None = None,
        markdown_text: str | None = None,
        thread_ts: str | None = None,
        parent_user: str | None = None,
        broadcast: bool = False,
        files: list[dict[str, Any]] | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> Message:
        subtype = "thread_broadcast" if broadcast else ("file_share" if files else None)
        msg = self._store(
            Message(
                channel=channel,
                ts=self._next_ts(),
                user=self.bot_user_id,
                text=text,
                blocks=list(blocks or []),
                markdown_text=markdown_text,
                files=list(files or []),
                thread_ts=thread_ts,
                parent_user_id=parent_user,
                bot_id=self.bot_id,
                app_id=self.app_id,
                subtype=subtype,
                reply_broadcast=broadcast,
                metadata=metadata if isinstance(metadata, dict) else None,
            )
        )
        # Slack echoes the bot's own post to the app (message.* subscriptions), after the
        # API response; Bolt's IgnoringSelfEvents must ack and drop it.
        self._spawn(self._deliver_later(self._message_event(msg)))
        self._bot_posted(channel, thread_ts)  # a reply clears the thread status (reference §15)
        return msg

    async def _deliver_later(self, event: dict[str, Any]) -> None:
        await asyncio.sleep(0)
        if event.get("channel") in self.not_member:
            return
        self._enqueue_event(event)

    async def _chat_update(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        ts = _arg_str(args, "ts") or ""
        msg = self._live(channel, ts)
        if msg is None:
            raise _Fail("message_not_found")
        if msg.user != self.bot_user_id:
            raise _Fail("cant_update_message")
        text, blocks, markdown_text = self._content_args(args, require=False)
        if text is None and blocks is None and markdown_text is None and "attachments" not in args:
            raise _Fail("no_text")

        def change(m: Message) -> None:
            if markdown_text is not None:
                m.markdown_text, m.text, m.blocks = markdown_text, "", []
                return
            m.markdown_text = None
            if text is not None:
                m.text = text
            if blocks is not None:  # omitted keeps the old blocks; [] clears them
                m.blocks = blocks

        self._spawn(self._deliver_later(self._edit(msg, self.bot_user_id, change)))
        return {"channel": channel, "ts": ts, "text": msg.markdown_text or msg.text,
                "message": self.message_dict(msg)}  # fmt: skip

    async def _chat_delete(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        ts = _arg_str(args, "ts") or ""
        msg = self._live(channel, ts)
        if msg is None:
            raise _Fail("message_not_found")
        if msg.user != self.bot_user_id:
            raise _Fail("cant_delete_message")
        self._delete(msg)
        return {"channel": channel, "ts": ts}

    def _delete(self, msg: Message) -> None:
        before = self.message_dict(msg)
        self.deleted.append(copy.deepcopy(msg))
        if not msg.is_reply and msg.reply_count:
            # A parent with replies stays as a tombstone so the thread remains reachable.
            msg.subtype, msg.text, msg.blocks, msg.markdown_text, msg.files = (
                "tombstone", "This message was deleted.", [], None, [])  # fmt: skip
        else:
            self._channels[msg.channel].remove(msg)
            del self._index[(msg.channel, msg.ts)]
            if msg.is_reply:
                parent = self._index.get((msg.channel, msg.thread_ts or ""))
                if parent is not None:
                    parent.reply_count -= 1
                    replies = [m for m in self.thread(msg.channel, parent.ts) if m.is_reply]
                    parent.latest_reply = replies[-1].ts if replies else None
        event = {
            "type": "message",
            "subtype": "message_deleted",
            "hidden": True,
            "deleted_ts": msg.ts,
            "channel": msg.channel,
            "previous_message": before,
            "event_ts": self._next_ts(),
            "channel_type": self.channel_type(msg.channel),
        }
        event["ts"] = event["event_ts"]
        self._touch()
        self._spawn(self._deliver_later(event))

    async def _chat_post_ephemeral(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        user = _arg_str(args, "user")
        if not user:
            raise _Fail("invalid_arguments")
        if not re.fullmatch(r"[UW][A-Z0-9]+", user):
            raise _Fail("user_not_found")
        if channel in self.not_member:
            raise _Fail("not_in_channel")
        text, blocks, markdown_text = self._content_args(args)
        thread_ts, _ = self._resolve_thread(channel, _arg_str(args, "thread_ts"))
        ts = self._next_ts()
        self._ephemerals.append(
            Ephemeral(channel, user, ts, text or "", blocks or [], markdown_text, thread_ts)
        )
        self._touch()
        return {"message_ts": ts}

    async def _chat_get_permalink(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        ts = _arg_str(args, "message_ts") or ""
        msg = self._index.get((channel, ts))
        if msg is None:
            raise _Fail("message_not_found")
        link = f"https://{self.team_domain}.slack.com/archives/{channel}/p{ts.replace('.', '')}"
        if msg.is_reply:
            link += f"?thread_ts={msg.thread_ts}&cid={channel}"
        return {"channel": channel, "permalink": link}

    def _reaction_target(self, args: dict[str, Any]) -> tuple[Message, str]:
        channel = self._channel_arg(args)
        name = (_arg_str(args, "name") or "").strip(":")
        if not name or not re.fullmatch(r"[a-z0-9_+'\-]+(::skin-tone-[2-6])?", name):
            raise _Fail("invalid_name")
        msg = self._index.get((channel, _arg_str(args, "timestamp") or ""))
        if msg is None:
            raise _Fail("message_not_found")
        return msg, name

    async def _reactions_add(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.setdefault(name, [])
        if self.bot_user_id in users:
            raise _Fail("already_reacted")
        users.append(self.bot_user_id)
        return {}

    async def _reactions_remove(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        msg, name = self._reaction_target(args)
        users = msg.reactions.get(name, [])
        if self.bot_user_id not in users:
            raise _Fail("no_reaction")
        users.remove(self.bot_user_id)
        if not users:
            del msg.reactions[name]
        return {}

    @staticmethod
    def _page(items: list[Any], args: dict[str, Any], default_limit: int) -> tuple[list[Any], str]:
        try:
            limit = int(args.get("limit") or default_limit)
        except ValueError:
            raise _Fail("invalid_limit") from None
        limit = max(1, min(limit, 1000))
        cursor = _arg_str(args, "cursor")
        start = 0
        if cursor:
            try:
                start = int(base64.b64decode(cursor).decode().split(":", 1)[1])
            except (ValueError, IndexError):
                raise _Fail("invalid_cursor") from None
        page = items[start : start + limit]
        nxt = start + limit
        next_cursor = base64.b64encode(f"next_ts:{nxt}".encode()).decode() if nxt < len(items) else ""
        return page, next_cursor

    @staticmethod
    def _ts_window(msgs: list[Message], args: dict[str, Any]) -> list[Message]:
        oldest, latest = args.get("oldest"), args.get("latest")
        inclusive = _arg_bool(args, "inclusive")

        def keep(m: Message) -> bool:
            t = float(m.ts)
            if oldest and (t < float(oldest) or (t == float(oldest) and not inclusive)):
                return False
            return not (latest and (t > float(latest) or (t == float(latest) and not inclusive)))

        return [m for m in msgs if keep(m)]

    async def _conversations_replies(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        ts = _arg_str(args, "ts")
        if not ts:
            raise _Fail("invalid_arguments")
        msg = self._index.get((channel, ts))
        if msg is None:
            raise _Fail("thread_not_found")
        msgs = [msg] if msg.is_reply else self.thread(channel, ts)
        if len(msgs) > 1:
            msgs = msgs[:1] + self._ts_window(msgs[1:], args)
        page, next_cursor = self._page(msgs, args, 1000)
        return {
            "messages": [self.message_dict(m) for m in page],
            "has_more": bool(next_cursor),
            "response_metadata": {"next_cursor": next_cursor},
        }

    async def _conversations_history(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        msgs = [m for m in self._channels.get(channel, []) if not m.is_reply or m.reply_broadcast]
        msgs = list(reversed(self._ts_window(msgs, args)))  # newest first
        page, next_cursor = self._page(msgs, args, 100)
        return {
            "messages": [self.message_dict(m) for m in page],
            "has_more": bool(next_cursor),
            "pin_count": 0,
            "response_metadata": {"next_cursor": next_cursor},
        }

    async def _conversations_info(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args)
        kind = self.channel_type(channel)
        info: dict[str, Any] = {
            "id": channel,
            "created": 1700000000,
            "is_archived": False,
            "is_channel": kind == "channel",
            "is_group": kind == "group",
            "is_im": kind == "im",
            "is_mpim": False,
            "is_private": kind != "channel",
            "is_member": channel not in self.not_member,
            "context_team_id": self.team_id,
        }
        if kind == "im":
            info["user"] = "U" + channel[1:]
        else:
            info["name"] = self.channel_name(channel)
        return {"channel": info}

    def user_profile(self, user_id: str) -> dict[str, Any]:
        """users.info ``user`` object: canned users, the bot, or a default for any U…/W…."""
        is_bot = user_id == self.bot_user_id
        canned = CANNED_USERS.get(user_id, {})
        name = self.bot_name if is_bot else canned.get("name", user_id.lower())
        real = canned.get("real_name", name)
        return {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "real_name": real,
            "deleted": False,
            "is_bot": is_bot,
            "is_admin": False,
            "is_app_user": False,
            "tz": "Europe/Paris",
            "tz_offset": 3600,
            "profile": {
                "real_name": real,
                "display_name": name,
                "email": None if is_bot else f"{name}@example.com",
                "bot_id": self.bot_id if is_bot else None,
                "team": self.team_id,
            },
        }

    async def _users_info(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        user = _arg_str(args, "user") or ""
        if not re.fullmatch(r"[UW][A-Z0-9]+", user):
            raise _Fail("user_not_found")
        return {"user": self.user_profile(user)}

    # ---------------------------------------------------------------- files
    def _file_meta(self, file_id: str, name: str, user: str, size: int, title: str | None) -> dict[str, Any]:
        key = f"{self.team_id}-{file_id}"
        mimetype = mimetypes.guess_type(name)[0] or "application/octet-stream"
        ext = name.rsplit(".", 1)[-1].lower() if "." in name else "binary"
        now = int(time.time())
        return {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title or name,
            "mimetype": mimetype,
            "filetype": ext,
            "pretty_type": ext.upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": size,
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "username": "",
            "url_private": f"{self.base_url}/files-pri/{key}/{name}",
            "url_private_download": f"{self.base_url}/files-pri/{key}/download/{name}",
            "permalink": f"https://{self.team_domain}.slack.com/files/{user}/{file_id}/{name}",
        }

    def add_file(self, name: str, content: bytes, user: str = "U0ALICE") -> dict[str, Any]:
        """A file a human uploaded; put the returned dict into ``files=`` of a helper."""
        file_id = self._file_id()
        meta = self._file_meta(file_id, name, user, len(content), None)
        self._files[file_id] = _StoredFile(meta, content)
        return copy.deepcopy(meta)

    def add_hosted_file(self, name: str, content: bytes, user: str = "U0ALICE") -> dict[str, Any]:
        """``add_file`` for any name (``/``, ``?``, ``#``, braces, control characters…): the links
        carry a slug of it instead, as Slack's links do (``my report.txt`` → ``my_report.txt``),
        while ``name`` stays as given. Downloads of these links serve the file."""
        meta = self.add_file(name, content, user)
        key = f"{self.team_id}-{meta['id']}"
        slug = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._")[:80] or "file"
        self._url_names[meta["id"]] = slug
        for stored in (meta, self._files[meta["id"]].meta):
            stored["url_private"] = f"{self.base_url}/files-pri/{key}/{slug}"
            stored["url_private_download"] = f"{self.base_url}/files-pri/{key}/download/{slug}"
        return meta

    async def _files_get_upload_url(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        filename = _arg_str(args, "filename")
        length = _arg_str(args, "length")
        if not filename or not length or not length.isdigit():
            raise _Fail("invalid_arguments")
        file_id = self._file_id()
        upload_id = uuid.uuid4().hex
        meta = self._file_meta(file_id, filename, self.bot_user_id, int(length), None)
        self._files[file_id] = _StoredFile(meta, None, int(length))
        self._uploads[upload_id] = file_id
        return {"upload_url": f"{self.base_url}/upload/v1/{upload_id}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        file_id = self._uploads.get(request.match_info["upload_id"])
        if file_id is None:
            return web.Response(status=404, text="Not Found", content_type="text/plain")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            part = next((v for v in form.values() if hasattr(v, "file")), None)
            data = part.file.read() if part is not None else b""  # type: ignore[union-attr]
        else:
            data = await request.read()
        stored = self._files[file_id]
        self.uploads_received.append(Upload(file_id, stored.meta["name"], data, time.monotonic()))
        upload = {"upload_id": request.match_info["upload_id"], "file_id": file_id,
                  "filename": stored.meta["name"]}  # fmt: skip
        fault = self._take_fault("upload", upload)
        if fault is not None:
            await asyncio.sleep(fault.delay)
            if fault.status is not None:  # the upload target speaks text/plain, errors included
                return web.Response(
                    status=fault.status,
                    text=HTTPStatus(fault.status).phrase,
                    content_type="text/plain",
                    headers={"Retry-After": str(fault.retry_after)} if fault.status == 429 else None,
                )
        stored.content = data
        stored.meta["size"] = len(data)
        return web.Response(status=200, text=f"OK - {len(data)}", content_type="text/plain")

    async def _files_complete_upload(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        items = _arg_json(args, "files", "invalid_arguments")
        if not isinstance(items, list) or not items:
            raise _Fail("invalid_arguments")
        channel_arg = _arg_str(args, "channel_id") or (_arg_str(args, "channels") or "").split(",")[0]
        thread_arg = _arg_str(args, "thread_ts")
        if thread_arg and not channel_arg:
            raise _Fail("invalid_arguments")
        metas: list[dict[str, Any]] = []
        for item in items:
            stored = self._files.get(str(item.get("id"))) if isinstance(item, dict) else None
            if stored is None or stored.content is None:
                raise _Fail("file_not_found")
            if item.get("title"):
                stored.meta["title"] = item["title"]
            metas.append(stored.meta)
        if channel_arg:
            channel = self._channel_arg({"channel": channel_arg})
            if channel in self.not_member:
                raise _Fail("not_in_channel")
            thread_ts, parent_user = self._resolve_thread(channel, thread_arg)
            comment = _arg_str(args, "initial_comment") or ""
            if len(comment) > MAX_TEXT:
                raise _Fail("msg_too_long")
            self._post_as_bot(
                channel,
                text=comment,
                thread_ts=thread_ts,
                parent_user=parent_user,
                files=[copy.deepcopy(m) for m in metas],
            )
        return {"files": [{"id": m["id"], "title": m["title"]} for m in metas]}

    async def _handle_download(self, request: web.Request) -> web.StreamResponse:
        auth = request.headers.get("Authorization", "")
        if auth != f"Bearer {self.bot_token}":
            # Real Slack answers a tokenless url_private fetch with a redirect to its sign-in
            # page: the client ends up with HTML and status 200, the classic "corrupt file" bug.
            raise web.HTTPFound(f"/signin?redir={request.path}")
        key = request.match_info["file_key"]
        file_id = key.split("-", 1)[-1]
        stored = self._files.get(file_id)
        names = (stored.meta["name"], self._url_names.get(file_id)) if stored is not None else ()
        if stored is None or stored.content is None or request.match_info["name"] not in names:
            return web.Response(status=404, text="file not found", content_type="text/plain")
        return web.Response(body=stored.content, content_type=stored.meta["mimetype"])

    async def _handle_signin(self, request: web.Request) -> web.Response:
        html = "<!DOCTYPE html><html><head><title>Slack</title></head><body>Sign in to Slack</body></html>"
        return web.Response(text=html, content_type="text/html")

    async def _assistant_set_status(self, args: dict[str, Any], token: str) -> dict[str, Any]:
        channel = self._channel_arg(args, "channel_id")
        thread_ts = _arg_str(args, "thread_ts")
        status = args.get("status")
        if not thread_ts or status is None:
            raise _Fail("invalid_arguments")
        loading = _arg_json(args, "loading_messages", "invalid_arguments")
        self._status_update(channel, thread_ts, str(status), loading)  # checks + lifecycle
        self.statuses.append(
            ThreadStatus(channel, thread_ts, str(status), loading, time.monotonic())
        )
        return {}

    # ---------------------------------------------------------------- response_url
    def _new_hook(self, kind: str, channel: str, user: str, **kw: Any) -> str:
        hook_id = str(uuid.uuid4().int % 10**13)
        self._hooks[hook_id] = _Hook(kind, channel, user, **kw)
        return f"{self.base_url}/{kind}/{self.team_id}/{hook_id}/{uuid.uuid4().hex[:24]}"

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        hook_id = request.match_info["hook"]
        kind = request.path.split("/")[1]
        hook = self._hooks.get(hook_id)
        try:
            payload = await request.json()
        except ValueError:
            payload = {}
        if not isinstance(payload, dict):
            payload = {}
        if hook is None:
            status, body = 404, "no_active_hooks"
        elif hook.uses >= RESPONSE_URL_USES or time.monotonic() - hook.created > 1800:
            status, body = 404, "used_url"
        else:
            hook.uses += 1
            status, body = 200, "ok"
            try:
                self._apply_response(hook, payload, source="response_url")
            except _Fail as err:
                status, body = 400, err.error
        self.responses.append(ResponseUrlPost(kind, hook_id, payload, time.monotonic(), status))
        self._touch()
        return web.Response(status=status, text=body, content_type="text/plain")

    def _apply_response(self, hook: _Hook, payload: dict[str, Any], source: str) -> None:
        """What a user sees after an ack payload or a response_url POST."""
        if hook.kind == "actions" and hook.message_ts:
            original = self._index.get((hook.channel, hook.message_ts))
            if payload.get("delete_original") and original is not None:
                self._delete(original)
                return
            if payload.get("replace_original") and original is not None:
                text, blocks, markdown_text = self._content_args(payload)

                def replace(m: Message) -> None:
                    m.text, m.markdown_text, m.blocks = text or "", markdown_text, blocks or []

                self._spawn(self._deliver_later(self._edit(original, self.bot_user_id, replace)))
                return
        if not any(payload.get(k) for k in ("text", "blocks", "markdown_text", "attachments")):
            return
        text, blocks, markdown_text = self._content_args(payload)
        thread_ts = payload.get("thread_ts") or hook.thread_ts
        if payload.get("response_type") == "in_channel":
            root, parent_user = self._resolve_thread(hook.channel, thread_ts)
            self._post_as_bot(hook.channel, text=text or "", blocks=blocks or [],
                              markdown_text=markdown_text, thread_ts=root, parent_user=parent_user)  # fmt: skip
        else:
            self._ephemerals.append(
                Ephemeral(hook.channel, hook.user, self._next_ts(), text or "", blocks or [],
                          markdown_text, thread_ts, source=source)  # fmt: skip
            )
            self._touch()

    # ---------------------------------------------------------------- Socket Mode
    async def _handle_ws(self, request: web.Request) -> web.StreamResponse:
        ticket = request.query.get("ticket", "")
        if self._tickets.get(ticket, True):  # unknown or already used
            return web.Response(status=401, text="invalid or used ticket")
        self._tickets[ticket] = True
        ws = web.WebSocketResponse()  # autoping=True: PONGs echo the client's PING payload
        await ws.prepare(request)
        self.connections_opened += 1
        conn = _Connection(ws, ticket, self.connections_opened)
        self._connections.append(conn)
        try:
            if not self.socket_mode_enabled:
                await conn.send({"type": "disconnect", "reason": "link_disabled",
                                 "debug_info": {"host": "applink-double"}})  # fmt: skip
                await ws.close()
                return ws
            live = [c for c in self._connections if not c.ws.closed]
            await conn.send(
                {
                    "type": "hello",
                    "num_connections": len(live),
                    "debug_info": {
                        "host": "applink-double",
                        "build_number": 10,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
            if len(live) > MAX_WEBSOCKETS:
                await conn.send({"type": "disconnect", "reason": "too_many_websockets",
                                 "debug_info": {"host": "applink-double"}})  # fmt: skip
                await ws.close()
                return ws
            self._touch()
            self._flush_pending()
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_client_frame(msg.data)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            if conn in self._connections:
                self._connections.remove(conn)
            self._touch()
        return ws

    def _active(self) -> _Connection | None:
        usable = [c for c in self._connections if c.usable]
        return usable[-1] if usable else None

    @property
    def connected(self) -> bool:
        return self._active() is not None

    def _on_client_frame(self, data: str) -> None:
        try:
            frame = json.loads(data)
        except ValueError:
            return
        if not isinstance(frame, dict) or "envelope_id" not in frame:
            return
        env = self.envelopes.get(str(frame["envelope_id"]))
        if env is None or env.acked:
            return
        now = time.monotonic()
        env.acked = True
        latency = now - (env.first_sent or now)
        payload = frame.get("payload") if isinstance(frame.get("payload"), dict) else None
        late = env.type == "slash_commands" and latency > self.slash_ack_deadline
        self.acks[env.envelope_id] = Ack(env.envelope_id, now, latency, payload, env.retry_attempt, late)
        if env.type == "slash_commands" and payload and not late:
            hook = _Hook("commands", env.payload["channel_id"], env.payload["user_id"])
            try:
                self._apply_response(hook, payload, source="ack")
            except _Fail:
                pass  # Slack shows the user an error; nothing is posted
        self._touch()

    def _flush_pending(self) -> None:
        for env in self.envelopes.values():
            if not env.acked and not env.given_up and env.sent_at is None:
                self._spawn(self._transmit(env))

    async def _transmit(self, env: Envelope) -> None:
        conn = self._active()
        if conn is None:
            env.sent_at = None
            return
        now = time.monotonic()
        env.sent_at = now
        if env.first_sent is None:
            env.first_sent = now
        frame = env.frame()
        if await conn.send(frame):
            self.frames_sent.append(frame)
        else:
            env.sent_at = None
        self._touch()

    async def _redelivery_loop(self) -> None:
        """Redeliver unacked events like Slack: after the timeout, retry_attempt + 1, max 3."""
        while True:
            await asyncio.sleep(min(0.05, self.redelivery_timeout / 4))
            now = time.monotonic()
            for env in list(self.envelopes.values()):
                if env.acked or env.given_up or env.sent_at is None:
                    continue
                if now - env.sent_at < self.redelivery_timeout:
                    continue
                if not env.retries_enabled or env.retry_attempt >= MAX_EVENT_RETRIES:
                    env.given_up = True
                    self._touch()
                    continue
                env.retry_attempt += 1
                env.retry_reason = "timeout"
                env.sent_at = None
                await self._transmit(env)

    async def send_envelope(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
    ) -> str:
        """Queue an envelope for the app (pushed now if connected) and return its id."""
        envelope_id = self._enqueue(type, payload, accepts_response_payload=accepts_response_payload)
        await asyncio.sleep(0)
        return envelope_id

    async def send_event(self, event: dict[str, Any]) -> str:
        """Send an ``events_api`` envelope around ``event``; return the envelope id."""
        envelope_id = self._enqueue_event(event)
        await asyncio.sleep(0)
        return envelope_id

    def _enqueue(
        self,
        type: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool | None = None,
    ) -> str:
        if accepts_response_payload is None:
            accepts_response_payload = type == "slash_commands" or (
                type == "interactive" and payload.get("type") in ("view_submission", "block_suggestion")
            )
        env = Envelope(
            envelope_id=str(uuid.uuid4()),
            type=type,
            payload=payload,
            accepts_response_payload=accepts_response_payload,
            retries_enabled=type == "events_api",
        )
        self.envelopes[env.envelope_id] = env
        self._spawn(self._transmit(env))
        return env.envelope_id

    def _enqueue_event(self, event: dict[str, Any]) -> str:
        """Wrap an inner event in the ``event_callback`` payload and queue it."""
        payload = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "context_team_id": self.team_id,
            "context_enterprise_id": None,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": self._event_id(),
            "event_time": int(time.time()),
            "authorizations": [
                {
                    "enterprise_id": None,
                    "team_id": self.team_id,
                    "user_id": self.bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": "4-" + base64.b64encode(json.dumps({"et": event.get("type")}).encode()).decode(),
        }
        return self._enqueue("events_api", payload)

    async def disconnect(self, reason: str = "refresh_requested", grace: float | None = None) -> None:
        """Send ``disconnect`` to the live connections; close them after ``grace`` seconds.

        ``warning`` keeps the old socket open (default 10 s, like Slack) so an overlapping
        client could finish; other reasons close it after 1 s. Envelopes are not sent on a
        socket that got a disconnect; unacked ones are redelivered on the next connection.
        """
        if grace is None:
            grace = 10.0 if reason == "warning" else 1.0
        for conn in [c for c in self._connections if c.usable]:
            conn.draining = True
            await conn.send({"type": "disconnect", "reason": reason,
                             "debug_info": {"host": "applink-double"}})  # fmt: skip
            self._spawn(self._close_later(conn, grace))

    async def _close_later(self, conn: _Connection, grace: float) -> None:
        await asyncio.sleep(grace)
        if not conn.ws.closed:
            await conn.ws.close(code=1000)

    async def wait_connected(self, timeout: float = 5.0, *, total: int = 1) -> None:
        """Wait for a usable connection, and at least ``total`` connections opened so far."""
        await self.wait_for(lambda: self.connected and self.connections_opened >= total, timeout)

    # ---------------------------------------------------------------- event builders
    def _message_event(self, msg: Message) -> dict[str, Any]:
        event = self.message_dict(msg)
        for key in ("reply_count", "reply_users", "reply_users_count", "latest_reply",
                    "is_locked", "subscribed", "reactions"):  # fmt: skip
            event.pop(key, None)
        if event.get("thread_ts") == msg.ts:  # a parent event carries no thread_ts
            del event["thread_ts"]
        event["channel"] = msg.channel
        event["event_ts"] = msg.ts
        event["channel_type"] = self.channel_type(msg.channel)
        return event

    def _changed_event(self, msg: Message, before: dict[str, Any], event_ts: str) -> dict[str, Any]:
        return {
            "type": "message",
            "subtype": "message_changed",
            "message": self.message_dict(msg),
            "previous_message": before,
            "channel": msg.channel,
            "hidden": True,
            "ts": event_ts,
            "event_ts": event_ts,
            "channel_type": self.channel_type(msg.channel),
        }

    def _store_human(
        self, user: str, channel: str, text: str, thread_ts: str | None, files: list[dict[str, Any]] | None
    ) -> Message:
        try:
            root, parent_user = self._resolve_thread(channel, thread_ts)
        except _Fail:
            raise ValueError(f"no message {thread_ts} in {channel}") from None
        if len(text) > MAX_TEXT:
            raise ValueError("a Slack client cannot send more than 40,000 characters")
        return self._store(
            Message(
                channel=channel,
                ts=self._next_ts(),
                user=user,
                text=text,
                blocks=_rich_text_from(text) if text else [],
                files=[copy.deepcopy(f) for f in files or []],
                thread_ts=root,
                parent_user_id=parent_user,
                client_msg_id=str(uuid.uuid4()),
                subtype="file_share" if files else None,
            )
        )

    # ---------------------------------------------------------------- test-driver helpers
    async def post_message(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """A human posts a message; the app gets a ``message`` event (if the bot is a member)."""
        msg = self._store_human(user, channel, text, thread_ts, files)
        if channel not in self.not_member:
            self._enqueue_event(self._message_event(msg))
        await asyncio.sleep(0)
        return msg.ts

    async def mention(
        self,
        user: str,
        channel: str,
        text: str,
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
    ) -> str:
        """A human mentions the bot: one stored message, TWO events (app_mention + message).

        That is what Slack does when the app subscribes to both and the bot is in the channel;
        the two events have different event_ids but the same (channel, ts).
        """
        mention = f"<@{self.bot_user_id}>"
        if mention not in text:
            text = f"{mention} {text}"
        msg = self._store_human(user, channel, text, thread_ts, files)
        if channel not in self.not_member:
            message_event = self._message_event(msg)
            app_mention = {k: v for k, v in message_event.items()
                           if k not in ("channel_type", "subtype", "upload")}  # fmt: skip
            app_mention["type"] = "app_mention"
            self._enqueue_event(app_mention)
            self._enqueue_event(message_event)
        await asyncio.sleep(0)
        return msg.ts

    async def edit_message(self, user: str, channel: str, ts: str, text: str) -> None:
        """A human edits their message: the app gets ``message_changed``."""
        msg = self._index[(channel, ts)]
        if msg.user != user:
            raise ValueError("users can only edit their own messages")

        def retype(m: Message) -> None:
            m.text, m.blocks = text, _rich_text_from(text)

        event = self._edit(msg, user, retype)
        if channel not in self.not_member:
            self._enqueue_event(event)
        await asyncio.sleep(0)

    async def delete_message(self, channel: str, ts: str) -> None:
        """A person deletes a message, any message (their own, or the bot's as an admin would).

        The case this exists for: someone deletes the bot's placeholder while the bot is still
        editing it. The message goes (a parent with replies stays as a tombstone), the app gets
        ``message_deleted``, and a later ``chat.update`` of it fails with ``message_not_found``,
        as in Slack.
        """
        msg = self._live(channel, ts)
        if msg is None:
            raise ValueError(f"no message {ts} in {channel}")
        self._delete(msg)
        await asyncio.sleep(0)

    async def slash_command(
        self,
        user: str,
        channel: str,
        text: str,
        command: str = "/maison",
        timeout: float = 5.0,
    ) -> Ack:
        """Run a slash command and wait for the app's ack (raises TimeoutError if none)."""
        username = CANNED_USERS.get(user, {}).get("name", user.lower())
        payload = {
            "token": "legacy-verification-token",
            "team_id": self.team_id,
            "team_domain": self.team_domain,
            "channel_id": channel,
            "channel_name": "directmessage" if channel.startswith("D") else self.channel_name(channel),
            "user_id": user,
            "user_name": username,
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": self._new_hook("commands", channel, user),
            "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:32]}",
        }
        envelope_id = self._enqueue("slash_commands", payload)
        return await self.wait_acked(envelope_id, timeout)

    async def click(
        self,
        user: str,
        channel: str,
        message_ts: str,
        action_id: str,
        value: str | None = None,
        thread_ts: str | None = None,
    ) -> str:
        """A human clicks a button in a message: ``block_actions`` interactive envelope."""
        msg = self._index.get((channel, message_ts))
        message = self.message_dict(msg) if msg else {}
        thread_ts = thread_ts or (msg.thread_ts if msg and msg.is_reply else None)
        action: dict[str, Any] = {"type": "button", "action_id": action_id, "block_id": "",
                                  "text": {"type": "plain_text", "text": action_id}}  # fmt: skip
        for block in msg.blocks if msg else []:
            elements = list(block.get("elements") or []) + ([block["accessory"]] if "accessory" in block else [])
            for el in elements:
                if isinstance(el, dict) and el.get("action_id") == action_id:
                    action = {k: v for k, v in el.items() if k in ("type", "action_id", "text", "value", "style")}
                    action["block_id"] = block.get("block_id", "")
        if value is not None:
            action["value"] = value
        return await self._send_block_action(user, channel, message_ts, thread_ts, message, action)

    async def _send_block_action(self, user: str, channel: str, message_ts: str, thread_ts: str | None,
                                 message: dict[str, Any], action: dict[str, Any]) -> str:
        """The ``block_actions`` interactive envelope of one click on an element of a message."""
        action["action_ts"] = f"{time.time():.6f}"
        container: dict[str, Any] = {"type": "message", "message_ts": message_ts,
                                     "channel_id": channel, "is_ephemeral": False}  # fmt: skip
        if thread_ts:
            container["thread_ts"] = thread_ts
        username = CANNED_USERS.get(user, {}).get("name", user.lower())
        payload = {
            "type": "block_actions",
            "user": {"id": user, "username": username, "name": username, "team_id": self.team_id},
            "api_app_id": self.app_id,
            "token": "legacy-verification-token",
            "container": container,
            "trigger_id": f"{int(time.time())}.{uuid.uuid4().int % 10**12}.{uuid.uuid4().hex[:32]}",
            "team": {"id": self.team_id, "domain": self.team_domain},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel, "name": self.channel_name(channel)},
            "message": message,
            "state": {"values": {}},
            "response_url": self._new_hook(
                "actions", channel, user, message_ts=message_ts, thread_ts=thread_ts
            ),
            "actions": [action],
        }
        envelope_id = self._enqueue("interactive", payload)
        await asyncio.sleep(0)
        return envelope_id

    async def wait_for(self, predicate: Callable[[], Any], timeout: float = 10.0) -> Any:
        """Poll ``predicate`` (sync or async) until truthy; return its value."""
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if inspect.isawaitable(value):
                value = await value
            if value:
                return value
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"condition not met within {timeout}s")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), min(0.05, remaining))
            except asyncio.TimeoutError:
                pass

    async def wait_acked(self, envelope_id: str, timeout: float = 5.0) -> Ack:
        ack: Ack = await self.wait_for(lambda: self.acks.get(envelope_id), timeout)
        return ack


@pytest_asyncio.fixture
async def slack_double(monkeypatch: Any) -> AsyncIterator[SlackDouble]:
    """A started ``SlackDouble`` (stopped after the test); proxies cleared for loopback."""
    for var in PROXY_ENV_VARS:
        monkeypatch.delenv(var, raising=False)
    async with SlackDouble() as double:
        yield double

