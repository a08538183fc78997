"""A live reply: Claude's answer streamed into Slack by editing messages.

Slack allows about 50 `chat.update` calls a minute for the whole app, shared by every thread,
so edits are coalesced: a reply re-renders at most every `min_interval` seconds, each edit
takes a token from the workspace-wide `MethodBudget` (slack/budget.py: finals first, then text,
least recently updated thread first), and only messages whose content changed are sent. The final render always lands (429s are retried by slack_sdk's own handler, after
`Retry-After`). An answer longer than one message continues in further thread replies, up to
`max_messages`; a longer one is cut there and attached whole as `answer.md` when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.budget import MethodBudget, Priority
from maison_slack.slack.markdown import split_markdown
from maison_slack.slack.markup import escape_mrkdwn, neutralize_broadcasts
from maison_slack.slack.redact import Redactor

logger = logging.getLogger(__name__)

STOP_ACTION = "maison_stop"
FEEDBACK_ACTION = "maison_feedback"
_FINAL_ATTEMPTS = 4
#: An error (a crash, Claude Code's stderr) is shown up to this many characters: its start and end.
_ERROR_MAX = 1500

#: Errors that will not go away for this message: stop editing it and post the answer anew.
MESSAGE_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed", "msg_too_long"})
#: Errors that will not go away for this channel: stop posting there (the answer stays in SQLite).
CHANNEL_GONE = frozenset({"channel_not_found", "is_archived", "not_in_channel", "channel_is_archived"})


class RateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry after `Retry-After`, with two exceptions: a `chat.update` 429 also
    closes the `MethodBudget` for every reply, and a reaction is skipped, never retried (👀 and ⏳
    are decoration: retrying them in a burst is a 429 storm that helps nobody)."""

    def __init__(self, budget: MethodBudget, max_retry_count: int = 5) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._budget = budget

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if "/reactions." in request.url:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        if response is not None and request.url.rstrip("/").endswith("/chat.update"):
            values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
            with contextlib.suppress(ValueError, IndexError):
                self._budget.pause(float(values[0]))
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)


#: Tool calls shown in a reply's task list (the last ones); a context element holds 3,000 characters.
_SHOWN_TASKS = 6


@dataclass
class Task:
    """One tool call of the run, as the reply's task list shows it."""

    line: str
    state: str = "running"  # running, done or failed


def _feedback_buttons(run_id: int) -> dict[str, Any]:
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


def _stop_button(run_id: int) -> dict[str, Any]:
    return {
        "type": "actions",
        "block_id": f"maison_controls_{run_id}",
        "elements": [{
            "type": "button", "action_id": STOP_ACTION, "value": str(run_id), "style": "danger",
            "text": {"type": "plain_text", "text": "Stop"},
        }],
    }


class LiveReply:
    """The messages that show one run. Call `start()`, then `append`/`set_status`, then `finish()`."""

    def __init__(self, client: AsyncWebClient, channel: str, thread_ts: str, *, run_id: int,
                 budget: MethodBudget, redactor: Redactor, min_interval: float = 1.5, max_messages: int = 8) -> None:
        self._client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._run_id = run_id
        self._budget = budget
        self._redactor = redactor
        self._min_interval = min_interval
        self._max_messages = max_messages
        self._text = ""
        self._synced_text = ""  # the answer text as of the last complete sync
        self._notice = ""
        self._status = ""
        self._tasks: dict[str, Task] = {}  # tool calls by id, in the order they began
        self._running = True
        self._sent: list[tuple[str, str]] = []  # (ts, rendered payload) per message
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        #: Slack refuses every message in this channel now (deleted, archived, bot removed).
        self.channel_gone = False

    @property
    def ts(self) -> str | None:
        """The placeholder's ts (the first message of the reply)."""
        return self._sent[0][0] if self._sent else None

    async def start(self, status: str) -> str:
        """Post the placeholder at once and begin streaming edits."""
        self._status = status
        await self._sync(final=False)
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"reply-{self._run_id}")
        assert self.ts is not None
        return self.ts

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

    def end_task(self, task_id: str, *, ok: bool) -> None:
        """A tool call ended: "✓" or "✗" in the task list."""
        task = self._tasks.get(task_id)
        if task is not None and task.state == "running":
            task.state = "done" if ok else "failed"
            self._dirty.set()

    def _task_list(self) -> str:
        """The last tool calls with their states; calls still running when the run ended failed."""
        icons = {"running": "⏳" if self._running else "✗", "done": "✓", "failed": "✗"}
        tasks = list(self._tasks.values())
        lines = [f"{icons[t.state]} {self._redactor.redact(t.line)}" for t in tasks[-_SHOWN_TASKS:]]
        if len(tasks) > _SHOWN_TASKS:
            lines.insert(0, f"_… {len(tasks) - _SHOWN_TASKS} earlier_")
        return "\n".join(lines)

    async def finish(self, footer: str, *, error: str | None = None) -> None:
        """Render the final state (answer, error, footer; no Stop button). Always lands."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._running = False
        if error:
            answer = self._text.rstrip() + "\n\n" if self._text.strip() else ""
            self._text = f"{answer}:warning: {self._shorten(error)}"
        self._status = footer
        # Bounded: a few short retries for transient failures (a permanent one is handled in
        # `_sync` at once), so a dead message never holds the thread's queue for long.
        for attempt in range(_FINAL_ATTEMPTS):
            try:
                await self._sync(final=True)
                break
            except Exception as exc:  # network timeouts too, not only Slack's own errors
                logger.warning("Final update of reply %s failed (%s), attempt %d", self._run_id, exc, attempt + 1)
                await asyncio.sleep(min(2**attempt, 4))
        else:
            logger.error("Could not deliver the final reply of run %s", self._run_id)
            return
        if self.truncated:
            await self._attach_full_answer()

    def _shorten(self, error: str) -> str:
        """`error` redacted, then cut to its start and end. Redacting first matters: a secret
        cut in two no longer matches, and the half left would be shown."""
        error = self._redactor.redact(error)
        if len(error) <= _ERROR_MAX:
            return error
        return error[: _ERROR_MAX // 3] + " … " + error[-2 * _ERROR_MAX // 3 :]

    @property
    def truncated(self) -> bool:
        """The answer is longer than `max_messages` messages: Slack shows the start of it."""
        return len(self._pieces()) > self._max_messages

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

    @property
    def text(self) -> str:
        """The answer as it stands (kept in SQLite when Slack cannot show it)."""
        return self._text

    async def _flush_loop(self) -> None:
        while not self.channel_gone:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._sync(final=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is, the loop lives on: the next change renders again
                logger.warning("Live update of run %s failed: %s", self._run_id, exc)
                self._dirty.set()
            await asyncio.sleep(self._min_interval)

    def _pieces(self) -> list[str]:
        body = (f"_{self._notice}_\n\n" if self._notice else "") + self._text
        # While streaming, the end of the text may be the first half of a secret.
        redacted = self._redactor.redact_streaming(body) if self._running else self._redactor.redact(body)
        # Whether a `markdown` block notifies for <!channel> is undocumented (slack.md §18): never risk it.
        return split_markdown(neutralize_broadcasts(redacted)) or [""]

    def _render(self) -> list[tuple[str, list[dict[str, Any]]]]:
        pieces = self._pieces()
        if len(pieces) > self._max_messages:  # the rest goes into answer.md when the run ends
            pieces = pieces[: self._max_messages]
            more = "attached below as `answer.md`" if not self._running else "will be attached as `answer.md`"
            pieces[-1] += f"\n\n_… the answer goes on: it is too long for Slack, the full text {more}._"
        status = self._redactor.redact(self._status)
        context = [{"type": "mrkdwn", "text": text} for text in (self._task_list(), status) if text]
        rendered = []
        for index, piece in enumerate(pieces):
            blocks: list[dict[str, Any]] = [{"type": "markdown", "text": piece}] if piece.strip() else []
            last = index == len(pieces) - 1
            if last and context:
                blocks.append({"type": "context", "elements": context})
            if last and self._running:
                blocks.append(_stop_button(self._run_id))
            elif last:
                blocks.append(_feedback_buttons(self._run_id))
            # `text` is mrkdwn (notifications): Claude's "<!channel>" must not ping anyone.
            fallback = (escape_mrkdwn(piece.strip()) or status or "…")[:2900]
            rendered.append((fallback, blocks))
        return rendered

    async def _sync(self, *, final: bool) -> None:
        """Send what changed since the last sync: edits, then new continuation messages."""
        if self.channel_gone:
            return
        # Answer text that changed since the last sync outranks a status-only change, which
        # waits for a moment when the workspace's edit budget is not contended.
        priority = Priority.FINAL if final else Priority.TEXT if self._text != self._synced_text else Priority.STATUS
        for index, (fallback, blocks) in enumerate(self._render()):
            payload = repr((fallback, blocks))
            if index < len(self._sent):
                ts, previous = self._sent[index]
                if payload == previous:
                    continue
                if not await self._budget.acquire((self.channel, self.thread_ts), priority):
                    self._dirty.set()  # shown with the next text edit, or when the budget is free
                    return
                try:
                    await self._client.chat_update(channel=self.channel, ts=ts, text=fallback, blocks=blocks)
                except SlackApiError as exc:
                    if not self._give_up_on(index, exc):
                        raise
                    return await self._sync(final=final)  # post the rest anew (or nothing, channel gone)
            else:
                ts = await self._post(fallback, blocks)
            self._sent[index] = (ts, payload)
        self._synced_text = self._text

    async def _post(self, fallback: str, blocks: list[dict[str, Any]]) -> str:
        """Post a continuation message exactly once: if we are cancelled while the post is in
        flight, it still completes and is recorded, so the next sync edits it, never re-posts it."""
        post = asyncio.ensure_future(self._client.chat_postMessage(
            channel=self.channel, thread_ts=self.thread_ts, text=fallback, blocks=blocks))
        try:
            response = await asyncio.shield(post)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                self._sent.append(((await post)["ts"], ""))
            raise
        except SlackApiError as exc:
            self._give_up_on(len(self._sent), exc)
            raise
        self._sent.append((response["ts"], ""))
        return response["ts"]

    def _give_up_on(self, index: int, exc: SlackApiError) -> bool:
        """A permanent error for message `index`: forget it and the messages after it (the next
        sync posts their pieces anew, in order), or stop posting if the channel is gone."""
        error = exc.response.get("error")
        if error in CHANNEL_GONE:
            logger.error("Run %s: Slack refuses the channel (%s); the answer stays in SQLite", self._run_id, error)
            self.channel_gone = True
            return True
        if error in MESSAGE_GONE:
            logger.warning("Run %s: message %d is gone (%s); posting the answer anew", self._run_id, index, error)
            del self._sent[index:]
            return True
        return False
