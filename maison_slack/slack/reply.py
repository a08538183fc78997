"""A live reply: Claude's answer streamed into Slack by editing messages.

Slack allows about 50 `chat.update` calls a minute for the whole app, shared by every thread,
so edits are coalesced: a reply re-renders at most every `min_interval` seconds, each edit
takes a token from the workspace-wide `EditBudget`, and only messages whose content changed
are sent. The final render always lands (429s are retried by slack_sdk's own handler, after
`Retry-After`). An answer longer than one message continues in further thread replies.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.render import Redactor, escape_mrkdwn, split_markdown

logger = logging.getLogger(__name__)

STOP_ACTION = "maison_stop"
_FINAL_ATTEMPTS = 5


class EditBudget:
    """Token bucket shared by all replies: `per_minute` edits, bursts of up to `burst`."""

    def __init__(self, per_minute: int, burst: int = 5) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._lock = asyncio.Lock()

    async def acquire(self) -> None:
        async with self._lock:  # first come, first served: no reply starves
            while True:
                now = time.monotonic()
                self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
                self._updated = now
                if self._tokens >= 1:
                    self._tokens -= 1
                    return
                await asyncio.sleep((1 - self._tokens) / self._rate)


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
                 budget: EditBudget, redactor: Redactor, min_interval: float = 1.5) -> None:
        self._client = client
        self.channel = channel
        self.thread_ts = thread_ts
        self._run_id = run_id
        self._budget = budget
        self._redactor = redactor
        self._min_interval = min_interval
        self._text = ""
        self._notice = ""
        self._status = ""
        self._running = True
        self._sent: list[tuple[str, str]] = []  # (ts, rendered payload) per message
        self._dirty = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None

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

    @classmethod
    async def adopt(cls, client: AsyncWebClient, channel: str, thread_ts: str, reply_ts: str, **kwargs: Any) -> "LiveReply":
        """A reply for a message posted earlier (e.g. before a restart), to rewrite it."""
        reply = cls(client, channel, thread_ts, **kwargs)
        reply._sent = [(reply_ts, "")]
        return reply

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

    async def finish(self, footer: str, *, error: str | None = None) -> None:
        """Render the final state (answer, error, footer; no Stop button). Always lands."""
        if self._flusher is not None:
            self._flusher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._flusher
        self._running = False
        if error:
            self._text = (self._text.rstrip() + "\n\n" if self._text.strip() else "") + f":warning: {error}"
        self._status = footer
        for attempt in range(_FINAL_ATTEMPTS):
            try:
                await self._sync(final=True)
                return
            except SlackApiError as exc:
                logger.warning("Final update of reply %s failed (%s), attempt %d", self._run_id, exc, attempt + 1)
                await asyncio.sleep(min(2**attempt, 10))
        logger.error("Could not deliver the final reply of run %s", self._run_id)

    async def _flush_loop(self) -> None:
        while True:
            await self._dirty.wait()
            self._dirty.clear()
            try:
                await self._sync(final=False)
            except SlackApiError as exc:  # the next change (or finish) renders again
                logger.warning("Live update of run %s failed: %s", self._run_id, exc)
                self._dirty.set()
            await asyncio.sleep(self._min_interval)

    def _render(self) -> list[tuple[str, list[dict[str, Any]]]]:
        body = (f"_{self._notice}_\n\n" if self._notice else "") + self._text
        # While streaming, the end of the text may be the first half of a secret.
        redacted = self._redactor.redact_streaming(body) if self._running else self._redactor.redact(body)
        pieces = split_markdown(redacted) or [""]
        status = self._redactor.redact(self._status)
        rendered = []
        for index, piece in enumerate(pieces):
            blocks: list[dict[str, Any]] = [{"type": "markdown", "text": piece}] if piece.strip() else []
            last = index == len(pieces) - 1
            if last and status:
                blocks.append({"type": "context", "elements": [{"type": "mrkdwn", "text": status}]})
            if last and self._running:
                blocks.append(_stop_button(self._run_id))
            # `text` is mrkdwn (notifications): Claude's "<!channel>" must not ping anyone.
            fallback = (escape_mrkdwn(piece.strip()) or status or "…")[:2900]
            rendered.append((fallback, blocks))
        return rendered

    async def _sync(self, *, final: bool) -> None:
        """Send what changed since the last sync: edits, then new continuation messages."""
        for index, (fallback, blocks) in enumerate(self._render()):
            payload = repr((fallback, blocks))
            if index < len(self._sent):
                ts, previous = self._sent[index]
                if payload == previous:
                    continue
                await self._budget.acquire()
                await self._client.chat_update(channel=self.channel, ts=ts, text=fallback, blocks=blocks)
            else:
                response = await self._client.chat_postMessage(
                    channel=self.channel, thread_ts=self.thread_ts, text=fallback, blocks=blocks
                )
                ts = response["ts"]
                self._sent.append((ts, ""))
            self._sent[index] = (ts, payload)
