"""What a run shows in its thread, whichever way it reaches Slack.

A run's reply is Claude's answer, the tool calls it made (a task list), a status line and, at
the end, a footer and the 👍/👎 row. `Reply` keeps that state and the parts both ways of
showing it share; `reply_edits.EditedReply` shows it by editing messages (`chat.update`, what
everyone in a channel thread sees live), `reply_stream.StreamedReply` through Slack's streaming
API (`chat.startStream`/`appendStream`/`stopStream`, live for one viewer:
../shared/reference/slack.md §13.2). `choose` picks per thread (`MAISON_STREAMING`).
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.budget import Budgets
from maison_slack.slack.markup import escape_mrkdwn, neutralize_broadcasts
from maison_slack.slack.redact import Redactor

logger = logging.getLogger(__name__)

STOP_ACTION = "maison_stop"
FEEDBACK_ACTION = "maison_feedback"
#: An error (a crash, Claude Code's stderr) is shown up to this many characters: its start and end.
_ERROR_MAX = 1500
#: Tool calls shown in a reply's task list (the last ones); a context element holds 3,000 characters.
_SHOWN_TASKS = 6
_FINAL_ATTEMPTS = 4
#: A task's one-line result (a failing command's first line of output) is cut here.
_OUTPUT_MAX = 120

#: Errors that will not go away for this message: stop editing it and post the answer anew.
MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"})
#: Errors that will not go away for this channel: stop posting there (the answer stays in SQLite).
CHANNEL_GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel", "channel_is_archived"})

def streams_natively(mode: str, channel: str) -> bool:
    """`auto` streams where the one live viewer is everyone who watches: a DM with the bot (and
    the assistant container, which lives in it); channel threads get edits, which every member
    sees as they happen (../shared/reference/slack.md §13.2)."""
    return mode == "native" or (mode == "auto" and channel.startswith("D"))


@dataclass
class Task:
    """One tool call of the run, as the reply's task list shows it."""

    line: str
    state: str = "running"  # running, done or failed
    output: str = ""  # one line of its result


def one_line(text: str, limit: int = _OUTPUT_MAX) -> str:
    """The first non-empty line of `text`, cut to `limit` characters."""
    line = next((part.strip() for part in text.splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def feedback_buttons(run_id: int) -> dict[str, Any]:
    """Slack's 👍/👎 row under a final answer (../shared/reference/slack.md §14); the value says
    which run and which button, so a click needs nothing else to be recorded."""
    def button(text: str, value: str) -> dict[str, Any]:
        return {"text": {"type": "plain_text", "text": text, "emoji": True}, "value": f"{value}:{run_id}",
                "accessibility_label": f"Mark this answer {value}"}

    return {
        "type": "context_actions",
        "block_id": f"maison_feedback_{run_id}",
        "elements": [{"type": "feedback_buttons", "action_id": FEEDBACK_ACTION,
                      "positive_button": button("Good answer", "good"),
                      "negative_button": button("Bad answer", "bad")}],
    }


def stop_button(run_id: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"maison_controls_{run_id}",
        "elements": [{
            "type": "button", "action_id": STOP_ACTION, "value": str(run_id), "style": "danger",
            "text": {"type": "plain_text", "text": "Stop"},
        }],
    }


class Reply(abc.ABC):
    """The state of one run's reply. Call `start()`, then `append`/`set_status`/tasks, then
    `finish()`, which always delivers the final state (or keeps it in `text` for SQLite)."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, *, run_id: int, budgets: Budgets,
                 redactor: Redactor, max_messages: int = 8) -> None:
        self._client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._run_id = run_id
        self._budgets = budgets
        self._redactor = redactor
        self._max_messages = max_messages
        self._text = ""
        self._notice = ""
        self._status = ""
        self._tasks: dict[str, Task] = {}  # tool calls by id, in the order they began
        self._running = True
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        #: Slack refuses every message in this channel now (deleted, archived, bot removed).
        self.channel_gone = False

    @property
    def key(self) -> tuple[str, str]:
        return self.channel, self.thread_ts

    @property
    @abc.abstractmethod
    def ts(self) -> str | None:
        """The reply's first message, once there is one."""

    @property
    @abc.abstractmethod
    def truncated(self) -> bool:
        """The answer is longer than `max_messages` messages hold: it goes into `answer.md`."""

    @abc.abstractmethod
    async def start(self, status: str) -> None:
        """Show the first status and begin showing changes (in `self._flusher`)."""

    @abc.abstractmethod
    async def _deliver_final(self) -> None:
        """Show the final state; raises what a retry may cure."""

    async def _settle(self) -> None:
        """After the final state landed: what else the thread must lose or keep (a status)."""

    async def finish(self, footer: str, *, error: str | None = None) -> None:
        """Show the final state (answer, error, footer, 👍/👎; no Stop). Always lands: a few short
        retries for transient failures (a permanent one is handled at once), so a dead message
        never holds the thread's queue for long."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._conclude(footer, error)
        for attempt in range(_FINAL_ATTEMPTS):
            try:
                await self._deliver_final()
                break
            except Exception as exc:  # network timeouts too, not only Slack's own errors
                logger.warning("Final update of reply %s failed (%s), attempt %d", self._run_id, exc, attempt + 1)
                await asyncio.sleep(min(2**attempt, 4))
        else:
            logger.error("Could not deliver the final reply of run %s", self._run_id)
            return
        await self._settle()
        if self.truncated:
            await self._attach_full_answer()

    def notice(self, text: str) -> None:
        """A line shown above Claude's answer (e.g. that earlier context is gone)."""
        self._notice = text
        self._dirty.set()

    def append(self, text: str) -> None:
        self._text += text
        self._dirty.set()

    def withdraw(self, tail: str) -> None:
        """Remove `tail` from the end of the answer, e.g. an error that will be shown as such."""
        tail, text = tail.strip(), self._text.rstrip()
        if tail and text.endswith(tail):
            self._text = text[: -len(tail)]
            self._dirty.set()

    def set_status(self, status: str) -> None:
        if status != self._status:
            self._status = status
            self._dirty.set()

    def start_task(self, task_id: str, line: str) -> None:
        """A tool call began: shown as "⏳ <line>" in the reply's task list."""
        self._tasks[task_id] = Task(line)
        self._dirty.set()

    def end_task(self, task_id: str, *, ok: bool, output: str = "") -> None:
        """A tool call ended: "✓" or "✗" in the task list, with a line of its result."""
        task = self._tasks.get(task_id)
        if task is not None and task.state == "running":
            task.state = "done" if ok else "failed"
            task.output = one_line(self._redactor.redact(output))
            self._dirty.set()

    @property
    def text(self) -> str:
        """The answer as it stands (kept in SQLite when Slack cannot show it)."""
        return self._text

    # -- shared by both ways of showing it ------------------------------------------------------

    def _conclude(self, footer: str, error: str | None) -> None:
        """The final state: no longer running, the error (if any) after the answer, the footer
        as the status line."""
        self._running = False
        if error:
            answer = self._text.rstrip() + "\n\n" if self._text.strip() else ""
            self._text = f"{answer}:warning: {self._shorten(error)}"
        self._status = footer

    def _body(self) -> str:
        """The answer with the notice above it, as raw text."""
        return (f"_{self._notice}_\n\n" if self._notice else "") + self._text

    def _shown(self, body: str) -> str:
        """`body` fit to show: secrets masked (while running, a tail that may be the start of one
        is held back) and no broadcast ping. Whether a `markdown` block notifies for
        <!channel> is undocumented (../shared/reference/slack.md §18): never risk it."""
        redacted = self._redactor.redact_streaming(body) if self._running else self._redactor.redact(body)
        return neutralize_broadcasts(redacted)

    def _fallback(self, piece: str) -> str:
        """A message's `text` (notifications, clients without blocks). It is mrkdwn, so
        Claude's "<!channel>" must not ping anyone: escaped."""
        return (escape_mrkdwn(piece.strip()) or self._redactor.redact(self._status) or "…")[:2900]

    def _shorten(self, error: str) -> str:
        """`error` redacted, then cut to its start and end. Redacting first matters: a secret
        cut in two no longer matches, and the half left would be shown."""
        error = self._redactor.redact(error)
        if len(error) <= _ERROR_MAX:
            return error
        return error[: _ERROR_MAX // 3] + " … " + error[-2 * _ERROR_MAX // 3 :]

    def _task_list(self, ids: Iterable[str] | None = None) -> str:
        """The last tool calls (of `ids`, default all) with their states; calls still running
        when the run ended failed."""
        icons = {"running": "⏳" if self._running else "✗", "done": "✓", "failed": "✗"}
        tasks = list(self._tasks.values()) if ids is None else [self._tasks[i] for i in ids if i in self._tasks]
        lines = [f"{icons[t.state]} {self._redactor.redact(t.line)}" for t in tasks[-_SHOWN_TASKS:]]
        if len(tasks) > _SHOWN_TASKS:
            lines.insert(0, f"_… {len(tasks) - _SHOWN_TASKS} earlier_")
        return "\n".join(lines)

    def _context(self, *, tasks: bool = True) -> dict[str, Any] | None:
        """The small print under the answer: the task list and the status line (or footer)."""
        parts = [self._task_list() if tasks else "", self._redactor.redact(self._status)]
        elements = [{"type": "mrkdwn", "text": text} for text in parts if text]
        return {"type": "context", "elements": elements} if elements else None

    def _refused(self, exc: SlackApiError) -> bool:
        """Slack refuses the channel for good: stop posting (the answer stays in SQLite)."""
        error = exc.response.get("error")
        if error in CHANNEL_GONE:
            logger.error("Run %s: Slack refuses the channel (%s); the answer stays in SQLite", self._run_id, error)
            self.channel_gone = True
        return self.channel_gone

    async def _attach_full_answer(self) -> None:
        """Upload the whole (redacted) answer as `answer.md` in the thread; a failure is said there."""
        if self.channel_gone:
            return
        body = self._redactor.redact(self._text)
        try:
            await self._client.files_upload_v2(channel=self.channel, thread_ts=self.thread_ts, content=body.encode(),
                                               filename="answer.md", title="answer.md",
                                               initial_comment="The full answer, too long for Slack messages:")
        except Exception as exc:  # Slack error, 413, network: the thread is told, the answer stays in SQLite
            logger.warning("Run %s: could not upload answer.md: %s", self._run_id, exc)
            with contextlib.suppress(Exception):
                await self._client.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread_ts,
                    text=":warning: The answer is too long for Slack messages and attaching it as `answer.md` failed.")
