"""Slack's AI streaming and status surface, for the Slack double in ``tests/doubles/slack.py``.

``SlackDouble`` mixes in ``StreamingMixin``: it answers ``chat.startStream``,
``chat.appendStream`` and ``chat.stopStream``, gives ``assistant.threads.setStatus`` its
lifecycle (set, cleared, replaced by a reply, expired), validates the ``context_actions`` feedback
row, and lets a test play the human side of these features (``stop_stream_by_user``,
``click_feedback``) and look at them per viewer (``visible_to``, ``viewer_history``,
``thread_status``, ``status_history``). Every rule names its source in
``../shared/reference/slack.md``; what the reference leaves open is marked *assumption*.

How a streamed message is kept: one ``Message`` of the bot, posted by ``chat.startStream`` (so it
is echoed to the app like any bot post), with ``Message.stream`` holding a ``StreamState``. Its
``text`` is all the streamed Markdown so far (the text of the stop answer in Slack's method docs)
and its ``blocks`` are what the recipient sees: a ``markdown`` block per run of text, a
``task_card`` per task (``timeline``) or one ``plan`` block (``plan``), the ``blocks`` chunks, then
the stop ``blocks``, rendered by ``render_stream`` (block shapes: reference §14). Every append is
stamped into ``Message.versions`` (what the recipient saw, and when), without an ``edited`` mark:
appending is not editing. ``chat.update`` on the stream's ``ts`` is an ordinary edit (reference
§11 item 10, §13.1).

Error names the reference does not spell out (``invalid_chunks``, ``no_text`` for an empty
append, ``user_not_found``, ``message_not_found``) are taken from the error lists of Slack's
method pages (https://docs.slack.dev/reference/methods/chat.startStream, ``.../chat.appendStream``,
``.../chat.stopStream``); which check Slack runs first is not documented anywhere.

This module imports nothing from ``slack.py`` at import time (``slack.py`` imports it at its top):
the shared primitives (``_Fail``, argument and block helpers) are fetched through ``_core()``.
"""

from __future__ import annotations

import asyncio
import copy
import re
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.doubles.slack import Message, SlackDouble

__all__ = [
    "STATUS_EXPIRY",
    "STREAM_EXPIRY",
    "STREAM_RATE_LIMITS",
    "StatusChange",
    "StreamState",
    "StreamingMixin",
    "card_text",
    "context_actions_errors",
    "render_stream",
]

# --------------------------------------------------------------------------------------
# Limits and constants
# --------------------------------------------------------------------------------------
#: Seconds from ``chat.startStream`` until Slack ends the stream, appends or not
#: (../shared/reference/slack.md §13.1: "about 5 minutes after chat.startStream").
STREAM_EXPIRY = 300.0
#: Seconds a thread status stays without a new message from the app (reference §15, §9.7).
STATUS_EXPIRY = 120.0
MAX_STREAM_MARKDOWN = 12_000  # markdown_text per call and per markdown_text chunk (§9.2, §14)
MAX_CHUNK_BLOCKS = 50  # blocks sent through `blocks` chunks, per message (§14)
MAX_LOADING_MESSAGES = 10  # setStatus loading_messages (§9.7, §15)
MAX_CONTEXT_ACTIONS_ELEMENTS = 5  # context_actions elements (§14)
MAX_FEEDBACK_TEXT = 75  # feedback / icon button text (§14)
MAX_FEEDBACK_VALUE = 2_000  # feedback / icon button value (§14)
MAX_VISIBLE_TO_USER_IDS = 10  # icon_button visible_to_user_ids (§14)
TASK_STATUSES = ("pending", "in_progress", "complete", "error")  # §9.4, §14
SESSION_STATUSES = ("active", "processing", "suspended", "closed")  # §13.3
TASK_DISPLAY_MODES = ("timeline", "plan")  # §9.2, §14
CHUNK_TYPES = ("markdown_text", "plan_update", "task_update", "blocks")  # §9.4

#: Requests per minute (reference §16, §6): start/stop Tier 2, append Tier 4; setStatus is
#: "special", ≈60/min **per thread/DM** (the double keys its bucket per thread).
STREAM_RATE_LIMITS: dict[str, int] = {
    "chat.startStream": 20,
    "chat.appendStream": 100,
    "chat.stopStream": 20,
    "assistant.threads.setStatus": 60,
}


def _core() -> Any:
    """``tests.doubles.slack``, imported on first use (it imports this module at its top)."""
    from tests.doubles import slack

    return slack


def _fail(error: str, *messages: str) -> Exception:
    """Slack's ``{"ok": false, "error": ...}``, with ``[ERROR]`` lines like Slack adds for schemas."""
    extra: dict[str, Any] = {}
    if messages:
        extra = {"errors": list(messages), "response_metadata": {"messages": [f"[ERROR] {m}" for m in messages]}}
    return _core()._Fail(error, **extra)  # type: ignore[no-any-return]


# --------------------------------------------------------------------------------------
# Records
# --------------------------------------------------------------------------------------
@dataclass
class StreamState:
    """The stream behind one ``chat.startStream`` message (``Message.stream``).

    ``state`` is ``"streaming"`` from ``chat.startStream`` until ``chat.stopStream``
    (``"stopped"``), the user's stop (``"stopped_by_user"``, §13.3) or Slack's expiry
    (``"expired"``, §13.1); ``ended`` is when that happened (``time.monotonic()``, like
    ``Message.versions``). Expiry is applied lazily (``refresh``) but dated exactly.
    """

    channel: str
    thread_ts: str
    recipient_user_id: str | None
    recipient_team_id: str | None
    task_display_mode: str
    started: float
    expires_at: float
    idle_expiry: float | None = None
    ts: str = ""
    last_activity: float = 0.0
    state: str = "streaming"
    ended: float | None = None
    stopped_by: str | None = None  # user who pressed stop (stop_stream_by_user)
    session_status: str | None = None  # chat.stopStream session_status (default "active", §13.3)
    #: Render order: {"kind": "text", "text"} | {"kind": "task", "id"} | {"kind": "plan"}
    #: | {"kind": "blocks", "blocks"}.
    parts: list[dict[str, Any]] = field(default_factory=list)
    tasks: dict[str, dict[str, Any]] = field(default_factory=dict)  # id -> latest task_update
    plan_title: str | None = None
    chunk_blocks: int = 0
    stop_blocks: list[dict[str, Any]] = field(default_factory=list)
    appends: int = 0  # successful chat.appendStream calls

    @property
    def streaming(self) -> bool:
        return self.state == "streaming"

    @property
    def markdown(self) -> str:
        """All Markdown streamed so far, concatenated as sent."""
        return "".join(p["text"] for p in self.parts if p["kind"] == "text")

    def deadline(self) -> float:
        """When Slack ends this stream if nothing else does (§13.1: absolute; idle optional)."""
        if self.idle_expiry is None:
            return self.expires_at
        return min(self.expires_at, self.last_activity + self.idle_expiry)

    def refresh(self, now: float | None = None) -> bool:
        """Apply Slack's expiry if it is due; True if the stream has just expired."""
        if self.state != "streaming":
            return False
        deadline = self.deadline()
        if (time.monotonic() if now is None else now) >= deadline:
            self.state, self.ended = "expired", deadline
            return True
        return False

    def live_at(self, t: float) -> bool:
        return self.started <= t and (self.ended is None or t < self.ended)


@dataclass
class StatusChange:
    """One change of the status line under a thread (``assistant.threads.setStatus``, §15).

    ``reason``: ``"set"`` (a non-empty status, also a refresh with the same text),
    ``"cleared"`` (``status=""``), ``"posted"`` (the app posted in the thread), ``"expired"``
    (no message for ``status_expiry`` seconds). ``status`` is ``""`` for the last three.
    """

    time: float
    status: str
    loading_messages: list[str] | None
    reason: str


# --------------------------------------------------------------------------------------
# Validation (chunks, context_actions)
# --------------------------------------------------------------------------------------
def _chunk_errors(chunk: Any, ptr: str) -> list[str]:
    """Schema errors of one chunk (fields per reference §9.4 and §14)."""
    if not isinstance(chunk, dict) or chunk.get("type") not in CHUNK_TYPES:
        return [f"unknown or missing chunk type [json-pointer:{ptr}/type]"]
    kind = chunk["type"]

    def string(key: str, *, required: bool = True, non_empty: bool = True) -> list[str]:
        value = chunk.get(key)
        if value is None:
            return [f"missing required field: {key} [json-pointer:{ptr}/{key}]"] if required else []
        if not isinstance(value, str) or (non_empty and not value):
            return [f"must be a non-empty string [json-pointer:{ptr}/{key}]"]
        return []

    if kind == "markdown_text":
        return string("text", non_empty=False)
    if kind == "plan_update":
        return string("title")
    if kind == "blocks":
        ok = isinstance(chunk.get("blocks"), list)
        return [] if ok else [f"must provide an array [json-pointer:{ptr}/blocks]"]
    errors = string("id") + string("title")  # task_update
    if chunk.get("status") not in TASK_STATUSES:
        errors.append(f"must be one of {'|'.join(TASK_STATUSES)} [json-pointer:{ptr}/status]")
    errors += string("details", required=False, non_empty=False) + string("output", required=False, non_empty=False)
    sources = chunk.get("sources")
    if sources is not None:
        if not isinstance(sources, list):
            errors.append(f"must provide an array [json-pointer:{ptr}/sources]")
        else:
            for j, src in enumerate(sources):
                ok = isinstance(src, dict) and src.get("type") == "url"
                ok = ok and all(isinstance(src.get(k), str) and src[k] for k in ("url", "text"))
                if not ok:
                    errors.append(f"must be a url source {{type, url, text}} [json-pointer:{ptr}/sources/{j}]")
    return errors


def validate_chunks(raw: Any) -> list[dict[str, Any]]:
    """Slack's checks on a ``chunks`` argument; returns the chunks, ``blocks`` chunks validated.

    * not an array, an unknown ``type`` or a malformed chunk → ``invalid_chunks`` (Slack's error
      list for ``chat.appendStream``; *assumption*: Slack rejects an unknown type, the SDK only
      skips it client-side, reference §9.4/§14);
    * a ``markdown_text`` chunk over 12,000 characters → ``msg_too_long`` ("per chunk", §14; §9.2);
    * ``blocks`` chunks go through the message block checks (``invalid_blocks``, §8).
    """
    if not isinstance(raw, list):
        raise _fail("invalid_chunks", "must provide an array [json-pointer:/chunks]")
    errors: list[str] = []
    for i, chunk in enumerate(raw):
        errors += _chunk_errors(chunk, f"/chunks/{i}")
    if errors:
        raise _fail("invalid_chunks", *errors)
    out: list[dict[str, Any]] = []
    for chunk in raw:
        if chunk["type"] == "markdown_text" and len(chunk["text"]) > MAX_STREAM_MARKDOWN:
            raise _fail("msg_too_long")
        if chunk["type"] == "blocks":
            chunk = {**chunk, "blocks": _core()._validate_blocks(chunk["blocks"])}
        out.append(copy.deepcopy(chunk))
    return out


def context_actions_errors(block: dict[str, Any], ptr: str, action_ids: set[str]) -> list[str]:
    """Schema errors of a ``context_actions`` block (the feedback row, reference §14).

    ≤ 5 elements, each ``feedback_buttons`` (``action_id`` and both ``positive_button`` /
    ``negative_button`` required; button ``text`` plain_text ≤ 75, ``value`` required ≤ 2000) or
    ``icon_button`` (``icon`` and ``text`` required, ``value`` ≤ 2000, ``accessibility_label``
    ≤ 75, ``visible_to_user_ids`` ≤ 10). Called by ``slack._block_errors``, so it applies to
    ``chat.postMessage``, ``chat.update`` and ``chat.stopStream`` blocks alike.
    """
    core = _core()
    elements = block.get("elements")
    if not isinstance(elements, list) or not elements:
        return [f"must provide at least 1 item [json-pointer:{ptr}/elements]"]
    if len(elements) > MAX_CONTEXT_ACTIONS_ELEMENTS:
        return [f"must provide no more than 5 items [json-pointer:{ptr}/elements]"]
    errors: list[str] = []
    for j, el in enumerate(elements):
        eptr = f"{ptr}/elements/{j}"
        if not isinstance(el, dict) or el.get("type") not in ("feedback_buttons", "icon_button"):
            errors.append(f"failed to match all allowed schemas [json-pointer:{eptr}]")
            continue
        errors += core._element_errors(el, eptr, action_ids)  # action_id length and uniqueness
        if el["type"] == "feedback_buttons":
            if not isinstance(el.get("action_id"), str) or not el["action_id"]:
                errors.append(f"must provide action_id [json-pointer:{eptr}/action_id]")
            for key in ("positive_button", "negative_button"):
                button = el.get(key)
                if not isinstance(button, dict):
                    errors.append(f"must provide an object [json-pointer:{eptr}/{key}]")
                    continue
                errors += core._text_errors(button.get("text"), f"{eptr}/{key}/text", MAX_FEEDBACK_TEXT, True)
                value = button.get("value")
                if not isinstance(value, str) or not value or len(value) > MAX_FEEDBACK_VALUE:
                    errors.append(f"must provide a string of 1-2000 characters [json-pointer:{eptr}/{key}/value]")
        else:
            if not isinstance(el.get("icon"), str) or not el["icon"]:
                errors.append(f"must provide icon [json-pointer:{eptr}/icon]")
            errors += core._text_errors(el.get("text"), f"{eptr}/text", MAX_FEEDBACK_TEXT, True)
            value = el.get("value")
            if value is not None and (not isinstance(value, str) or len(value) > MAX_FEEDBACK_VALUE):
                errors.append(f"must be less than 2001 characters [json-pointer:{eptr}/value]")
            label = el.get("accessibility_label")
            if label is not None and (not isinstance(label, str) or len(label) > MAX_FEEDBACK_TEXT):
                errors.append(f"must be less than 76 characters [json-pointer:{eptr}/accessibility_label]")
            users = el.get("visible_to_user_ids")
            if users is not None and (not isinstance(users, list) or len(users) > MAX_VISIBLE_TO_USER_IDS):
                errors.append(f"must provide no more than 10 items [json-pointer:{eptr}/visible_to_user_ids]")
    return errors


# --------------------------------------------------------------------------------------
# Rendering
# --------------------------------------------------------------------------------------
def _rich_text(text: str) -> dict[str, Any]:
    return {"type": "rich_text", "elements": [{"type": "rich_text_section",
                                               "elements": [{"type": "text", "text": text}]}]}  # fmt: skip


def _task_card(task: dict[str, Any]) -> dict[str, Any]:
    """A ``task_update`` as the ``task_card`` block it renders to (reference §14: ``task_id``,
    ``details``/``output`` as ``rich_text``)."""
    card: dict[str, Any] = {"type": "task_card", "task_id": task["id"], "title": task["title"],
                            "status": task["status"]}  # fmt: skip
    for key in ("details", "output"):
        if task.get(key):
            card[key] = _rich_text(task[key])
    if task.get("sources"):
        card["sources"] = copy.deepcopy(task["sources"])
    return card


def card_text(block: dict[str, Any]) -> str:
    """What a reader sees of a ``task_card`` or ``plan`` block, as plain lines.

    A task reads ``[status] title`` followed by its details and output lines; a plan reads its
    title followed by its tasks. (The double's own rendering; Slack draws cards, §14.)
    """
    if block.get("type") == "plan":
        lines = [str(block.get("title") or "")] if block.get("title") else []
        return "\n".join(lines + [card_text(t) for t in block.get("tasks") or [] if isinstance(t, dict)])
    lines = [f"[{block.get('status')}] {block.get('title')}"]
    for key in ("details", "output"):
        value = block.get(key)
        if isinstance(value, dict):
            text = _core()._rich_text_plain(value.get("elements") or [])
            if text:
                lines.append(text)
    return "\n".join(lines)


def _apply_chunk(stream: StreamState, chunk: dict[str, Any]) -> None:
    """Add one validated chunk to the stream, in order.

    Text concatenates as sent ("appended to the message received so far"). A ``task_update``
    with a known ``id`` replaces ``title``/``status``/``output``, appends ``details`` and extends
    ``sources`` (field notes in reference §14, unverified); a new ``id`` places a card where it
    first appears (``timeline``) or joins the single plan block (``plan``). ``plan_update`` sets
    the plan title, shown in ``plan`` mode only (*assumption*).
    """
    kind = chunk["type"]
    if kind == "markdown_text":
        if not chunk["text"]:
            return
        if stream.parts and stream.parts[-1]["kind"] == "text":
            stream.parts[-1]["text"] += chunk["text"]
        else:
            stream.parts.append({"kind": "text", "text": chunk["text"]})
    elif kind == "blocks":  # the 50-block budget is checked by _apply_chunks
        stream.chunk_blocks += len(chunk["blocks"])
        stream.parts.append({"kind": "blocks", "blocks": chunk["blocks"]})
    elif kind == "plan_update":
        stream.plan_title = chunk["title"]
        if stream.task_display_mode == "plan" and not any(p["kind"] == "plan" for p in stream.parts):
            stream.parts.append({"kind": "plan"})
    else:  # task_update
        task = stream.tasks.get(chunk["id"])
        if task is None:
            stream.tasks[chunk["id"]] = {k: copy.deepcopy(v) for k, v in chunk.items() if k != "type"}
            if stream.task_display_mode == "timeline":
                stream.parts.append({"kind": "task", "id": chunk["id"]})
            elif not any(p["kind"] == "plan" for p in stream.parts):
                stream.parts.append({"kind": "plan"})
            return
        task["title"], task["status"] = chunk["title"], chunk["status"]
        if chunk.get("details"):
            task["details"] = (task.get("details") or "") + chunk["details"]
        if chunk.get("output") is not None:
            task["output"] = chunk["output"]
        if chunk.get("sources"):
            task["sources"] = list(task.get("sources") or []) + copy.deepcopy(chunk["sources"])


def _apply_chunks(stream: StreamState, chunks: list[dict[str, Any]]) -> None:
    """Add a call's validated chunks; all or nothing (the only late check is the block count)."""
    extra = sum(len(c["blocks"]) for c in chunks if c["type"] == "blocks")
    if stream.chunk_blocks + extra > MAX_CHUNK_BLOCKS:
        raise _fail("invalid_blocks", "no more than 50 items allowed [json-pointer:/chunks/blocks]")
    for chunk in chunks:
        _apply_chunk(stream, chunk)


def render_stream(stream: StreamState) -> tuple[str, list[dict[str, Any]]]:
    """(``text``, ``blocks``) of the streamed message as its recipient sees it now (§14).

    Stop ``blocks`` come after everything streamed ("rendered after anything passed via chunks or
    markdown_text", §14).
    """
    blocks: list[dict[str, Any]] = []
    for part in stream.parts:
        if part["kind"] == "text":
            blocks.append({"type": "markdown", "text": part["text"]})
        elif part["kind"] == "task":
            blocks.append(_task_card(stream.tasks[part["id"]]))
        elif part["kind"] == "plan":
            blocks.append({"type": "plan", "title": stream.plan_title or "",
                           "tasks": [_task_card(t) for t in stream.tasks.values()]})  # fmt: skip
        else:
            blocks += copy.deepcopy(part["blocks"])
    blocks += copy.deepcopy(stream.stop_blocks)
    return stream.markdown, blocks


# --------------------------------------------------------------------------------------
# The mixin
# --------------------------------------------------------------------------------------
class StreamingMixin:
    """Streaming, status and feedback behaviour of ``SlackDouble`` (see the module docstring).

    Knobs (constructor arguments of ``SlackDouble``, also plain attributes a test may set):

    * ``stream_expiry`` (default 300 s): a stream ends this long after ``chat.startStream``,
      appends or not; then ``chat.appendStream`` and ``chat.stopStream`` answer
      ``message_not_in_streaming_state`` and the message keeps the text appended so far
      (reference §13.1). Read at ``chat.startStream``.
    * ``stream_idle_expiry`` (default ``None``, off): also end a stream this long after its last
      start/append ("expiry after an idle gap", also reported, §13.1).
    * ``status_expiry`` (default 120 s): a thread status disappears this long after it was set
      (§15).
    * ``user_stop_error`` (default ``"stopped_by_user"``): what ``chat.appendStream`` and
      ``chat.stopStream`` answer on a stream the user stopped. §13.3 names ``stopped_by_user``
      from third-party code (unverified) and says to handle ``message_not_in_streaming_state``
      the same way; set it to that to test the other branch.
    """

    stream_expiry: float
    stream_idle_expiry: float | None
    status_expiry: float
    user_stop_error: str = "stopped_by_user"

    def _init_streaming(
        self: SlackDouble,
        *,
        stream_expiry: float = STREAM_EXPIRY,
        stream_idle_expiry: float | None = None,
        status_expiry: float = STATUS_EXPIRY,
    ) -> None:
        """Called by ``SlackDouble.__init__`` once ``_methods`` exists: register the methods."""
        self.stream_expiry = stream_expiry
        self.stream_idle_expiry = stream_idle_expiry
        self.status_expiry = status_expiry
        self.user_stop_error = "stopped_by_user"
        self._status_log: dict[tuple[str, str], list[StatusChange]] = {}
        self._methods.update(
            {
                "chat.startStream": self._chat_start_stream,
                "chat.appendStream": self._chat_append_stream,
                "chat.stopStream": self._chat_stop_stream,
            }
        )

    # ------------------------------------------------------------ content of a call
    def _stream_input(self: SlackDouble, args: dict[str, Any], *, require: bool) -> list[dict[str, Any]]:
        """The chunks one start/append/stop call adds; every streamed byte passes here.

        * ``markdown_text`` (≤ 12,000 characters, else ``msg_too_long``: §9.2, §8) becomes one
          ``markdown_text`` chunk, which is what the SDK's ``chat_stream()`` sends (§9.3);
        * ``chunks`` per ``validate_chunks``;
        * both in one call → ``invalid_arguments`` (*assumption*: the reference documents them
          as alternatives and no client sends both; the double refuses the ambiguity);
        * ``require`` (``chat.appendStream``, where ``markdown_text`` is the required argument in
          Slack's method docs): nothing to append → ``no_text``.
        """
        core = _core()
        markdown_text = core._arg_str(args, "markdown_text")
        raw_chunks = core._arg_json(args, "chunks", "invalid_chunks")
        if markdown_text is not None and raw_chunks is not None:
            raise _fail("invalid_arguments", "pass markdown_text or chunks, not both")
        if markdown_text is not None:
            if len(markdown_text) > MAX_STREAM_MARKDOWN:
                raise _fail("msg_too_long")
            chunks = [{"type": "markdown_text", "text": markdown_text}]
        elif raw_chunks is not None:
            chunks = validate_chunks(raw_chunks)
        else:
            chunks = []
        empty = all(c["type"] == "markdown_text" and not c["text"] for c in chunks)
        if require and empty:
            raise _fail("no_text")
        return chunks

    def _streaming_message(self: SlackDouble, args: dict[str, Any]) -> tuple[Message, StreamState]:
        """The live stream named by ``channel`` + ``ts``, or Slack's error for it (§13.1, §13.3).

        Unknown or deleted ``ts`` → ``message_not_found``; a message that is not a stream, a
        stream the app stopped, or one Slack expired → ``message_not_in_streaming_state``; a
        stream the user stopped → ``user_stop_error``.
        """
        core = _core()
        channel = self._channel_arg(args)
        ts = core._arg_str(args, "ts")
        if not ts:
            raise _fail("invalid_arguments", "missing required field: ts")
        msg = self._live(channel, ts)
        if msg is None:
            raise _fail("message_not_found")
        stream = msg.stream
        if stream is None:
            raise _fail("message_not_in_streaming_state")
        stream.refresh()
        if stream.state == "stopped_by_user":
            raise _fail(self.user_stop_error)
        if not stream.streaming:
            raise _fail("message_not_in_streaming_state")
        return msg, stream

    def _rerender(self: SlackDouble, msg: Message) -> None:
        """Write the stream into the message and stamp a new version (what the recipient sees)."""
        assert msg.stream is not None
        msg.text, msg.blocks = render_stream(msg.stream)
        msg.markdown_text = None
        msg.record_version()
        self._touch()

    # ------------------------------------------------------------ Web API methods
    async def _chat_start_stream(self: SlackDouble, args: dict[str, Any], token: str) -> dict[str, Any]:
        """``chat.startStream`` (reference §9.2, §13.2).

        ``channel`` and ``thread_ts`` are required (a missing ``thread_ts`` → ``invalid_arguments``,
        an unknown one → ``invalid_thread_ts`` like every threaded post of the double); in a
        channel (``C…``/``G…``, not a DM) ``recipient_user_id`` and ``recipient_team_id`` are
        required → ``missing_recipient_user_id`` / ``missing_recipient_team_id`` (§13.2, §9.7); a
        recipient that is not a user id → ``user_not_found``; ``task_display_mode`` is
        ``timeline`` (default) or ``plan`` (§9.2, §14). Content is optional: the SDK's
        ``stop()`` starts an empty stream when nothing was flushed (§9.3). The message is posted
        as a bot reply (echoed to the app, clears the thread status like a reply, §15).
        Answer: ``{"channel", "ts"}``.
        """
        core = _core()
        channel = self._channel_arg(args)
        if channel in self.not_member:
            raise _fail("not_in_channel")
        thread_arg = core._arg_str(args, "thread_ts")
        if not thread_arg:
            raise _fail("invalid_arguments", "missing required field: thread_ts")
        thread_ts, parent_user = self._resolve_thread(channel, thread_arg)
        assert thread_ts is not None
        user = core._arg_str(args, "recipient_user_id")
        team = core._arg_str(args, "recipient_team_id")
        if self.channel_type(channel) != "im":
            if not user:
                raise _fail("missing_recipient_user_id")
            if not team:
                raise _fail("missing_recipient_team_id")
        if user and not re.fullmatch(r"[UW][A-Z0-9]+", user):
            raise _fail("user_not_found")
        mode = core._arg_str(args, "task_display_mode") or "timeline"
        if mode not in TASK_DISPLAY_MODES:
            raise _fail("invalid_arguments", "task_display_mode must be one of timeline|plan")
        chunks = self._stream_input(args, require=False)
        now = time.monotonic()
        stream = StreamState(
            channel=channel,
            thread_ts=thread_ts,
            recipient_user_id=user or None,
            recipient_team_id=team or None,
            task_display_mode=mode,
            started=now,
            expires_at=now + self.stream_expiry,
            idle_expiry=self.stream_idle_expiry,
            last_activity=now,
        )
        _apply_chunks(stream, chunks)
        text, blocks = render_stream(stream)
        msg = self._post_as_bot(channel, text=text, blocks=blocks, thread_ts=thread_ts, parent_user=parent_user)
        stream.ts = msg.ts
        msg.stream = stream
        return {"channel": channel, "ts": msg.ts}

    async def _chat_append_stream(self: SlackDouble, args: dict[str, Any], token: str) -> dict[str, Any]:
        """``chat.appendStream`` (reference §9.2, §13.1, §13.3): append to a live stream.

        Errors: see ``_stream_input`` (``no_text``, ``msg_too_long``, ``invalid_chunks``) and
        ``_streaming_message`` (``message_not_found``, ``message_not_in_streaming_state``,
        ``stopped_by_user``). Nothing is applied when a call fails. Answer: ``{"channel", "ts"}``.
        """
        chunks = self._stream_input(args, require=True)
        msg, stream = self._streaming_message(args)
        _apply_chunks(stream, chunks)
        stream.last_activity = time.monotonic()
        stream.appends += 1
        self._rerender(msg)
        return {"channel": msg.channel, "ts": msg.ts}

    async def _chat_stop_stream(self: SlackDouble, args: dict[str, Any], token: str) -> dict[str, Any]:
        """``chat.stopStream`` (reference §9.2, §13.1, §13.3, §14): finalize a live stream.

        Optional last content (``markdown_text`` or ``chunks``), ``blocks`` (≤ 50, rendered after
        the streamed content, checked like message blocks incl. the ``context_actions`` feedback
        row), ``metadata`` (an object, else ``invalid_metadata_format``) and ``session_status``
        (``active`` default | ``processing`` | ``suspended`` | ``closed``, else
        ``invalid_arguments``). Same state errors as ``chat.appendStream``. Answer:
        ``{"channel", "ts", "message"}`` (the shape of Slack's documented example).
        """
        core = _core()
        chunks = self._stream_input(args, require=False)
        raw_blocks = core._arg_json(args, "blocks", "invalid_blocks_format")
        blocks = core._validate_blocks(raw_blocks) if raw_blocks is not None else []
        metadata = core._arg_json(args, "metadata", "invalid_metadata_format")
        if metadata is not None and not isinstance(metadata, dict):
            raise _fail("invalid_metadata_format")
        session_status = core._arg_str(args, "session_status")
        if session_status is not None and session_status not in SESSION_STATUSES:
            raise _fail("invalid_arguments", "session_status must be one of active|processing|suspended|closed")
        msg, stream = self._streaming_message(args)
        _apply_chunks(stream, chunks)
        stream.stop_blocks = blocks
        stream.session_status = session_status or "active"
        if metadata is not None:
            msg.metadata = metadata
        self._rerender(msg)
        # ended at the final version: from then on everyone sees it (no in-between state)
        stream.state, stream.ended = "stopped", msg.versions[-1][0]
        return {"channel": msg.channel, "ts": msg.ts, "message": self.message_dict(msg)}

    # ------------------------------------------------------------ who sees what
    def _live_viewer(self: SlackDouble, stream: StreamState, user: str) -> bool:
        """Whether ``user`` sees the stream's text arrive live (§13.2).

        In a DM everyone in it does; in a channel thread only the recipient (and the bot).
        """
        return self.channel_type(stream.channel) == "im" or user in (stream.recipient_user_id, self.bot_user_id)

    def visible_to(self: SlackDouble, message: Message, user: str, at: float | None = None) -> str:
        """What ``user`` sees of ``message`` at ``at`` (``time.monotonic()``; default now).

        Any message: its visible text at that moment (``Message.versions``). A live stream in a
        channel thread (reference §13.2, field report agentconnect-md/agentconnect#1494, not in
        Slack's docs): the recipient sees every append; other members see the first content that
        arrived (the "first chunk") and nothing more until the stream is stopped — by the app or
        by the user — or expires; from then on everyone sees the message as it stands
        (*assumption* for expiry: the reference does not say what others see of an expired
        stream; the double shows them what was appended).
        """
        t = time.monotonic() if at is None else at
        stream = message.stream
        if stream is not None:
            stream.refresh()
        full = ""
        for when, text in message.versions:
            if when <= t:
                full = text
        if stream is None or self._live_viewer(stream, user) or not stream.live_at(t):
            return full
        for when, text in message.versions:
            if when > t:
                break
            if when >= stream.started and text:
                return text
        return ""

    def viewer_history(self: SlackDouble, message: Message, user: str) -> list[tuple[float, str]]:
        """Each distinct state ``user`` saw of ``message``: ``[(time.monotonic(), text), ...]``.

        Consecutive equal states are merged, so ``len()`` counts what changed before their eyes
        (for the recipient every append; for another member of a channel thread: the first chunk,
        then the final message). The end of a stream (stop or expiry) is a point in time too.
        """
        stream = message.stream
        if stream is not None:
            stream.refresh()
        points = {when for when, _ in message.versions}
        if stream is not None and stream.ended is not None:
            points.add(stream.ended)
        history: list[tuple[float, str]] = []
        for t in sorted(points):
            text = self.visible_to(message, user, at=t)
            if not history or history[-1][1] != text:
                history.append((t, text))
        return history

    def stream_messages(self: SlackDouble, channel: str, thread_ts: str | None = None) -> list[Message]:
        """The messages of ``channel`` (of one thread if given) that were streamed, in order."""
        msgs = self.thread(channel, thread_ts) if thread_ts else self.messages(channel)
        return [m for m in msgs if m.stream is not None]

    # ------------------------------------------------------------ the human side
    async def stop_stream_by_user(self: SlackDouble, channel: str, ts: str, user: str) -> str | None:
        """``user`` presses Slack's stop button on the stream at (``channel``, ``ts``).

        Per reference §13.3 the native stop control belongs to an agent session in ``processing``
        status (§9.6); the double does not model agent sessions and lets a test press it for any
        live stream. Every live stream of the app in that thread is stopped (state
        ``"stopped_by_user"``, ended now; everyone now sees it as it stands), and the app gets the
        event ``agent_session_stopped`` ``{"type", "channel", "thread_ts", "user", "event_ts",
        "streaming_message_ts": [ts of the streams Slack stopped]}`` (§13.3). Later
        ``chat.appendStream`` / ``chat.stopStream`` answer ``user_stop_error``. Returns the
        envelope id (``None`` if the bot is not in the channel, so no event is sent).
        """
        msg = self._live(channel, ts)
        if msg is None or msg.stream is None:
            raise ValueError(f"no streamed message {ts} in {channel}")
        msg.stream.refresh()
        if not msg.stream.streaming:
            raise ValueError(f"the stream {ts} is already {msg.stream.state}")
        thread_ts = msg.stream.thread_ts
        now = time.monotonic()
        stopped: list[str] = []
        for other in self.stream_messages(channel, thread_ts):
            assert other.stream is not None
            other.stream.refresh(now)
            if other.stream.streaming:
                other.stream.state, other.stream.ended, other.stream.stopped_by = "stopped_by_user", now, user
                stopped.append(other.ts)
        self._touch()
        if channel in self.not_member:
            return None
        event_ts = self._next_ts()
        envelope_id = self._enqueue_event(
            {
                "type": "agent_session_stopped",
                "channel": channel,
                "thread_ts": thread_ts,
                "user": user,
                "event_ts": event_ts,
                "streaming_message_ts": stopped,
            }
        )
        await asyncio.sleep(0)
        return envelope_id

    async def click_feedback(
        self: SlackDouble, user: str, channel: str, ts: str, positive: bool = True, action_id: str | None = None
    ) -> str:
        """``user`` clicks the positive or negative button of the feedback row of a message.

        The app gets a ``block_actions`` interactive envelope whose action is
        ``{"type": "feedback_buttons", "action_id", "block_id", "action_ts", "value", "text"}``
        with the clicked button's ``value`` and ``text`` (reference §14). The rest of the payload
        (user, container, channel, message, response_url ...) is the double's ``click`` payload,
        *assumed* identical for this element. ``action_id`` picks one of several feedback rows.
        """
        msg = self._live(channel, ts)
        found: tuple[dict[str, Any], dict[str, Any]] | None = None
        for block in msg.blocks if msg else []:
            if block.get("type") != "context_actions":
                continue
            for el in block.get("elements") or []:
                if el.get("type") == "feedback_buttons" and action_id in (None, el.get("action_id")):
                    found = found or (block, el)
        if msg is None or found is None:
            raise ValueError(f"no feedback buttons on message {ts} in {channel}")
        block, el = found
        button = el["positive_button" if positive else "negative_button"]
        action = {
            "type": "feedback_buttons",
            "action_id": el["action_id"],
            "block_id": block.get("block_id", ""),
            "value": button.get("value"),
            "text": copy.deepcopy(button.get("text")),
        }
        thread_ts = msg.thread_ts if msg.is_reply else None
        return await self._send_block_action(user, channel, ts, thread_ts, self.message_dict(msg), action)

    # ------------------------------------------------------------ thread status (setStatus)
    def _status_key(self: SlackDouble, channel: str, thread_ts: str) -> tuple[str, str]:
        """A reply's ts names its thread, as everywhere in the double."""
        msg = self._index.get((channel, thread_ts))
        if msg is not None and msg.is_reply and msg.thread_ts:
            return channel, msg.thread_ts
        return channel, thread_ts

    def _expire_status(self: SlackDouble, key: tuple[str, str], now: float) -> None:
        log = self._status_log.get(key)
        if log and log[-1].status and now >= log[-1].time + self.status_expiry:
            log.append(StatusChange(log[-1].time + self.status_expiry, "", None, "expired"))

    def _status_update(
        self: SlackDouble, channel: str, thread_ts: str, status: str, loading_messages: Any
    ) -> None:
        """Checks and lifecycle of ``assistant.threads.setStatus`` (reference §15, §9.7).

        ``loading_messages``: an array of ≤ 10 strings, else ``invalid_arguments`` (the limit is
        §9.7/§15; the error name is the double's). A non-empty ``status`` shows (or refreshes) the
        status and restarts its 2-minute timer; ``status=""`` clears it. Called by
        ``SlackDouble._assistant_set_status`` before it logs the call in ``statuses``.
        """
        if loading_messages is not None and (
            not isinstance(loading_messages, list)
            or len(loading_messages) > MAX_LOADING_MESSAGES
            or not all(isinstance(m, str) for m in loading_messages)
        ):
            raise _fail("invalid_arguments", "loading_messages must be an array of at most 10 strings")
        now = time.monotonic()
        key = self._status_key(channel, thread_ts)
        self._expire_status(key, now)
        log = self._status_log.setdefault(key, [])
        if status:
            log.append(StatusChange(now, status, list(loading_messages) if loading_messages else None, "set"))
        elif log and log[-1].status:
            log.append(StatusChange(now, "", None, "cleared"))
        self._touch()

    def _bot_posted(self: SlackDouble, channel: str, thread_ts: str | None) -> None:
        """The app posted in a thread: its status goes (reference §15, bolt-js#2340).

        Called from ``SlackDouble._post_as_bot`` — ``chat.postMessage``, a files v2 share, an
        ``in_channel`` response and ``chat.startStream`` (*assumption*: a streamed reply is a
        reply). ``chat.update`` and appends do not clear it (§15).
        """
        if not thread_ts:
            return
        now = time.monotonic()
        key = self._status_key(channel, thread_ts)
        self._expire_status(key, now)
        log = self._status_log.get(key)
        if log and log[-1].status:
            log.append(StatusChange(now, "", None, "posted"))

    def thread_status(self: SlackDouble, channel: str, thread_ts: str) -> str:
        """The status line shown under the thread now (``""`` if none)."""
        key = self._status_key(channel, thread_ts)
        self._expire_status(key, time.monotonic())
        log = self._status_log.get(key)
        return log[-1].status if log else ""

    def status_history(self: SlackDouble, channel: str, thread_ts: str) -> list[StatusChange]:
        """Every change of the thread's status line, oldest first (expiry dated when it fell due)."""
        key = self._status_key(channel, thread_ts)
        self._expire_status(key, time.monotonic())
        return list(self._status_log.get(key, []))
