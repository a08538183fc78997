"""A reply streamed through Slack's agent surface, the way Slack's own sample agents answer.

No placeholder: until the first text or tool call, the thread shows a status ("is thinking…",
`assistant.threads.setStatus`). Then the answer is one streamed message (slack_sdk's
`chat_stream()`: `chat.startStream`, `chat.appendStream`, `chat.stopStream`): text appended
about every `APPEND_INTERVAL` seconds, each tool call a task (in progress → complete / error with
a line of its result), and at the end the footer and the 👍/👎 row as the stop's blocks
(../shared/reference/slack.md §9, §14). Every call takes a token of its method's budget
(`slack/budget.py`): appends are Tier 4, starts and stops Tier 2.

Three facts shape the rest (../shared/reference/slack.md §13):

* A stream dies about 5 minutes after it starts, however much text still flows. A message older
  than `rollover` seconds is stopped and the answer goes on in a new one. If Slack ends a stream
  first (`message_not_in_streaming_state`), that message is sealed with `chat.update` showing
  what it accepted, and the answer goes on in a new one: the reply keeps, per message, exactly
  the text Slack accepted, so nothing is lost or shown twice.
* Appended text cannot be taken back. Only text that is final is appended: secrets masked (a
  tail that may be the start of one is held back), broadcasts neutralised, no half-written `<…>`.
  Should the final answer still differ from what was streamed (an error Claude Code also printed
  as its answer is withdrawn), the messages are corrected with `chat.update` at the end.
* A person can stop the stream in Slack. An append refused with `stopped_by_user` calls
  `on_stopped` (the run stops, as with our Stop button); `agent_session_stopped` does the same
  through its listener.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_chat_stream import AsyncChatStream

from maison_slack.slack.budget import Priority
from maison_slack.slack.markdown import split_markdown
from maison_slack.slack.reply import Reply, feedback_buttons

logger = logging.getLogger(__name__)

#: Seconds between appends of one reply: text appears about this fast while few threads run.
APPEND_INTERVAL = 0.7
#: Characters of text per streamed message: Slack takes 12,000 per call (§9.2); room for a note.
MESSAGE_LIMIT = 11_000
#: setStatus is limited to about one call a second per thread (§16); a status disappears two
#: minutes after it was set unless renewed (§15).
STATUS_INTERVAL = 1.5
STATUS_RENEWAL = 90.0

#: The stream is over (Slack expired it, or it was stopped): append and stop are refused (§13).
STREAM_OVER = frozenset({"message_not_in_streaming_state", "streaming_state_conflict"})
STOPPED_BY_USER = "stopped_by_user"
#: Streaming is not available here (scope, surface, plan): seen in the field (§9.7).
UNSUPPORTED = frozenset({"missing_scope", "not_allowed", "channel_type_not_supported", "not_allowed_token_type",
                         "unknown_method", "method_deprecated"})
_TOO_LONG = "\n\n_… the answer goes on: it is too long for Slack, the full text is attached below as `answer.md`._"

_TASK_STATUS = {"running": "in_progress", "done": "complete", "failed": "error"}


@dataclass
class Segment:
    """One streamed message of the reply and exactly the text Slack accepted into it."""

    stream: AsyncChatStream
    started: float = field(default_factory=time.monotonic)
    shown: str = ""
    tasks: list[str] = field(default_factory=list)  # ids of the tool calls shown in it
    state: str = "live"  # live; ended (stopped or sealed: shows `shown`); dead (needs a seal); final

    @property
    def ts(self) -> str:
        return self.stream.ts or ""


def _cut(text: str, room: int) -> str:
    """The start of `text` that fits in `room` characters, ending at a line or word if it can."""
    if len(text) <= room:
        return text
    for separator in ("\n", " "):
        at = text.rfind(separator, 0, room)
        if at > room // 2:
            return text[: at + 1]
    return text[:room]


class StreamedReply(Reply):
    """One run's answer as streamed messages. In a channel, Slack needs the one person who sees
    it live (`recipient`, the prompt's author) and their workspace (`workspace()`, §13.2)."""

    def __init__(self, *args: Any, recipient: str | None, workspace: Callable[[], Awaitable[str]],
                 rollover: float, on_stopped: Callable[[], None],
                 on_first_message: Callable[[str], Awaitable[None]], on_unsupported: Callable[[], None],
                 **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._on_unsupported = on_unsupported
        self._on_first_message = on_first_message
        self._recipient = recipient
        self._workspace = workspace
        self._rollover = rollover
        self._on_stopped = on_stopped
        self._segments: list[Segment] = []
        self._task_states: dict[str, str] = {}  # what each task's card shows
        self._status_shown = ""
        self._status_at = -STATUS_INTERVAL
        self._status_refused = False
        self._halted = False  # stopped in Slack: nothing more is streamed
        self._overflow = False  # text beyond `max_messages` messages
        self._unsupported = False  # this workspace or channel refuses streaming: post at the end

    @property
    def ts(self) -> str | None:
        return self._segments[0].ts if self._segments else None

    @property
    def truncated(self) -> bool:
        """More text than `max_messages` messages hold: the rest goes into `answer.md`."""
        return self._overflow

    async def start(self, status: str) -> None:
        """Show the status at once and begin streaming."""
        self._status = status
        await self._sync_status()
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"reply-{self._run_id}")

    async def _settle(self) -> None:
        if self._status_shown and not self.channel_gone:  # appends and edits do not clear it (§15)
            self._status = ""
            with contextlib.suppress(Exception):
                await self._sync_status(force=True)

    # -- while the run goes on ----------------------------------------------------------------

    async def _flush_loop(self) -> None:
        while not self.channel_gone:
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), self._next_deadline())
            self._dirty.clear()
            try:
                await self._sync_status()
                await self._push(final=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the loop lives on: the next change sends again
                logger.warning("Live update of run %s failed: %s", self._run_id, exc)
                self._dirty.set()
            await asyncio.sleep(APPEND_INTERVAL)

    def _next_deadline(self) -> float:
        """Seconds until something is due without a change: a status renewal or a rollover."""
        due = STATUS_RENEWAL if self._status_shown else 3600.0
        live = self._live()
        if live is not None:
            due = min(due, live.started + self._rollover - time.monotonic())
        return max(due, 0.1)

    async def _sync_status(self, *, force: bool = False) -> None:
        """Show the wanted status in the thread, renewed before Slack drops it; at most one call
        per `STATUS_INTERVAL`. A workspace that refuses it (scope, surface) keeps the rest."""
        now = time.monotonic()
        renew = self._status_shown and now - self._status_at > STATUS_RENEWAL
        if self._status_refused or (self._status == self._status_shown and not renew) or self.channel_gone:
            return
        if not self._status and not self._segments and not force:
            return  # the first message clears it (§15); cleared earlier, the thread would look idle
        if not force and now - self._status_at < STATUS_INTERVAL:
            self._dirty.set()
            return
        status = self._redactor.redact(self._status)
        try:
            await self._client.assistant_threads_setStatus(
                channel_id=self.channel, thread_ts=self.thread_ts, status=status,
                loading_messages=[status] if status else None)
        except SlackApiError as exc:
            if not self._refused(exc):
                logger.warning("Run %s: Slack refuses the thread status (%s); going on without it",
                               self._run_id, exc.response.get("error"))
                self._status_refused = True
            return
        self._status_shown, self._status_at = self._status, now

    def _streamable(self, *, final: bool) -> str:
        """The answer as far as it may be appended for good."""
        text = self._shown(self._body())
        if not final:
            start = text.rfind("<")
            if start != -1 and ">" not in text[start:]:
                text = text[:start]  # a link or mention still being written
        return text

    def _emitted(self) -> str:
        return "".join(segment.shown for segment in self._segments)

    def _live(self) -> Segment | None:
        return self._segments[-1] if self._segments and self._segments[-1].state == "live" else None

    def _task_chunks(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(id, state, task_update chunk) for each tool call whose card changed."""
        changes = []
        for task_id, task in self._tasks.items():
            state = task.state if self._running or task.state != "running" else "failed"
            if self._task_states.get(task_id) == state:
                continue
            # A card's title is plain text: the backticks of the task list's mrkdwn would show.
            title = self._redactor.redact(task.line).replace("`", "")[:256]
            chunk = {"type": "task_update", "id": task_id, "title": title, "status": _TASK_STATUS[state]}
            if task.output and state != "running":
                chunk["output"] = task.output
            changes.append((task_id, state, chunk))
        return changes

    async def _push(self, *, final: bool) -> None:
        """Stream the new text and task changes: into the live message, or a new one when there
        is none, it is full, or it is about to expire."""
        for segment in self._segments:
            if segment.state == "dead":
                await self._seal(segment)
        live = self._live()
        if live is not None and self._aged(live) and len(self._segments) < self._max_messages:
            await self._end(live)  # before Slack ends it: the next text starts a new message
        display = self._streamable(final=final)
        emitted = self._emitted()
        new = display[len(emitted):] if display.startswith(emitted) else ""  # else: corrected at the end
        tasks = self._task_chunks()
        while (new or tasks) and not self._halted and not self.channel_gone:
            segment = self._live()
            full = segment is not None and len(segment.shown) >= MESSAGE_LIMIT
            if segment is None or full:
                if len(self._segments) >= self._max_messages:
                    self._overflow = self._overflow or bool(new)  # the rest goes into answer.md
                    return
                if segment is not None:
                    await self._end(segment)
                    segment = None
            piece = _cut(new, MESSAGE_LIMIT - (len(segment.shown) if segment else 0))
            if not await self._send(segment, piece, tasks, Priority.FINAL if final else Priority.TEXT):
                return  # refused: the state says why (expired, stopped, gone); the next push goes on
            new, tasks = new[len(piece):], []

    def _aged(self, segment: Segment) -> bool:
        return time.monotonic() - segment.started >= self._rollover

    async def _send(self, segment: Segment | None, piece: str, tasks: list[tuple[str, str, dict[str, Any]]],
                    priority: Priority) -> bool:
        """Start a new streamed message with `piece` and `tasks`, or append them to `segment`;
        False if Slack refused."""
        # Text first: what Claude wrote before a tool call (it says why it makes it).
        chunks = ([{"type": "markdown_text", "text": piece}] if piece else []) + [chunk for _, _, chunk in tasks]
        starting = segment is None
        if segment is None:
            segment = Segment(await self._client.chat_stream(
                channel=self.channel, thread_ts=self.thread_ts, buffer_size=1, recipient_user_id=self._recipient,
                recipient_team_id=await self._workspace() if self._recipient else None))
        await self._budgets["chat.startStream" if starting else "chat.appendStream"].acquire(self.key, priority)
        # Text goes as a chunk, never through the helper's buffer: a failed call would leave it
        # there, and the retry would send it twice (§13.1). A call once sent is seen through and
        # recorded even if the run ends meanwhile: what Slack shows must be what the reply knows.
        call = asyncio.ensure_future(segment.stream.append(chunks=chunks))
        try:
            await asyncio.shield(call)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await call
                self._record(segment, starting, piece, tasks)
            raise
        except SlackApiError as exc:
            self._stream_refused(None if starting else segment, exc)
            return False
        self._record(segment, starting, piece, tasks)
        if starting and len(self._segments) == 1:
            await self._on_first_message(segment.ts)
        return True

    def _record(self, segment: Segment, starting: bool, piece: str,
                tasks: list[tuple[str, str, dict[str, Any]]]) -> None:
        """Slack accepted `piece` and `tasks` into `segment`."""
        if starting:
            self._segments.append(segment)
            self._status_shown = ""  # a new message in the thread clears its status (§15)
        segment.shown += piece
        for task_id, state, _ in tasks:
            segment.tasks.append(task_id)
            self._task_states[task_id] = state

    def _stream_refused(self, segment: Segment | None, exc: SlackApiError) -> None:
        """What a refused start, append or stop means for the reply; raises what is not Slack's
        final word (the caller retries)."""
        if self._refused(exc):
            return
        error = exc.response.get("error")
        if segment is None and error in UNSUPPORTED:
            logger.warning("Run %s: Slack refuses streaming here (%s); the answer is posted when it is done",
                           self._run_id, error)
            self._unsupported = self._halted = True
            self._on_unsupported()
        elif segment is not None and error == STOPPED_BY_USER:
            segment.state, self._halted = "dead", True
            self._on_stopped()
        elif segment is not None and error in STREAM_OVER:
            logger.info("Run %s: Slack ended streamed message %s (%s); going on in a new one",
                        self._run_id, segment.ts, error)
            segment.state = "dead"
            self._dirty.set()
        elif segment is not None and error == "message_not_found":  # deleted: its text is sent again
            logger.warning("Run %s: streamed message %s is gone; sending its part anew", self._run_id, segment.ts)
            self._segments.remove(segment)
            for task_id in segment.tasks:
                self._task_states.pop(task_id, None)
            self._dirty.set()
        else:
            raise exc

    async def _end(self, segment: Segment, blocks: list[dict[str, Any]] | None = None,
                   chunks: list[dict[str, Any]] | None = None) -> bool:
        """Stop a live message (with the final `blocks`, if given); False if it was already over."""
        await self._budgets["chat.stopStream"].acquire(self.key, Priority.FINAL if blocks else Priority.TEXT)
        try:
            await segment.stream.stop(chunks=chunks or None, blocks=blocks)
        except SlackApiError as exc:
            self._stream_refused(segment, exc)
            return False
        segment.state = "final" if blocks else "ended"
        return True

    async def _seal(self, segment: Segment, text: str | None = None, *, last: bool = False) -> None:
        """Show `text` (default: what the message accepted) as an ordinary message with
        `chat.update`: an expired stream stays a broken pill until edited (§13.1)."""
        text = segment.shown if text is None else text
        tasks = self._task_list(segment.tasks)
        context = [{"type": "mrkdwn", "text": part}
                   for part in (tasks, self._redactor.redact(self._status) if last else "") if part]
        blocks: list[dict[str, Any]] = [{"type": "markdown", "text": text}] if text.strip() else []
        if context:
            blocks.append({"type": "context", "elements": context})
        if last:
            blocks.append(feedback_buttons(self._run_id))
        fallback = self._fallback(text)
        await self._budgets["chat.update"].acquire(self.key, Priority.FINAL)
        try:
            await self._client.chat_update(channel=self.channel, ts=segment.ts, text=fallback, blocks=blocks)
        except SlackApiError as exc:
            if self._refused(exc) or exc.response.get("error") in ("message_not_found", "cant_update_message"):
                segment.state = "ended"
                return
            raise
        segment.shown, segment.state = text, "final" if last else "ended"

    # -- the end ----------------------------------------------------------------------------------

    def _closing(self) -> list[dict[str, Any]]:
        """The blocks under the final answer: the footer (and the task list when the cards are
        gone) and the feedback row."""
        status = self._redactor.redact(self._status)
        blocks: list[dict[str, Any]] = []
        if status:
            blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
        blocks.append(feedback_buttons(self._run_id))
        return blocks

    async def _deliver_final(self) -> None:
        if self.channel_gone:
            return
        display = self._streamable(final=True)
        if not self._segments and (self._unsupported or (len(display) <= MESSAGE_LIMIT and not self._tasks)):
            await self._post_final(display)
            return
        if not self._halted:
            await self._push(final=True)
        last = self._segments[-1] if self._segments else None
        if last is None or self.channel_gone:
            return
        if last.state == "live" and display.startswith(self._emitted()):
            tasks = self._task_chunks()
            chunks = [chunk for _, _, chunk in tasks]
            if self.truncated:
                chunks.append({"type": "markdown_text", "text": _TOO_LONG})
            if await self._end(last, blocks=self._closing(), chunks=chunks):
                self._record(last, False, "", tasks)
                return
        await self._correct(display)

    async def _correct(self, display: str) -> None:
        """Edit every message whose text is not its part of the final answer (and the last one,
        to carry the footer): after an expiry, a Stop in Slack, or a withdrawn error."""
        last = self._segments[-1]
        if last.state == "live":
            await self._end(last)  # a live stream is not edited: stop it first
        offset = 0
        for segment in self._segments:
            is_last = segment is last
            part = display[offset:] if is_last else display[offset:offset + len(segment.shown)]
            offset += len(segment.shown)
            if is_last and len(part) > MESSAGE_LIMIT:
                part, self._overflow = _cut(part, MESSAGE_LIMIT) + _TOO_LONG, True
            if is_last or segment.state == "dead" or part != segment.shown:
                await self._seal(segment, part, last=is_last)

    async def _post_final(self, text: str) -> None:
        """The whole reply as ordinary messages: a run that ended before it streamed anything
        (one message, no stream to open), or one in a workspace that refuses streaming."""
        pieces = split_markdown(text) or [""]
        if len(pieces) > self._max_messages:
            pieces, self._overflow = pieces[: self._max_messages], True
            pieces[-1] += _TOO_LONG
        context = self._context()
        for index, piece in enumerate(pieces):
            blocks: list[dict[str, Any]] = [{"type": "markdown", "text": piece}] if piece.strip() else []
            if index == len(pieces) - 1:
                blocks += [context, feedback_buttons(self._run_id)] if context else [feedback_buttons(self._run_id)]
            try:
                await self._client.chat_postMessage(channel=self.channel, thread_ts=self.thread_ts,
                                                    text=self._fallback(piece), blocks=blocks)
            except SlackApiError as exc:
                if not self._refused(exc):
                    raise
                return
            self._status_shown = ""  # a reply clears the status (§15)
