"""A reply shown by editing messages: a placeholder, then `chat.update` as Claude writes.

Every member of a channel thread sees each edit as it lands, which is why channel threads get
this way (`reply.streams_natively`). Slack allows about 50 `chat.update` calls a minute for the
whole app, shared by every thread, so edits are coalesced: a reply re-renders at most every
`min_interval` seconds, each edit takes a token from the workspace's `chat.update` budget
(slack/budget.py: finals first, then text, least recently updated thread first), and only
messages whose content changed are sent. The final render always lands (429s are retried by
slack_sdk's own handler, after `Retry-After`). An answer longer than one message continues in
further thread replies, up to `max_messages`; a longer one is cut there and attached whole as
`answer.md` when the run ends.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from slack_sdk.errors import SlackApiError

from maison_slack.slack.budget import Priority
from maison_slack.slack.markdown import split_markdown
from maison_slack.slack.reply import MESSAGE_GONE, Reply, feedback_buttons, stop_button

logger = logging.getLogger(__name__)

#: Seconds after a status-only edit before the next edit (status changes come in short bursts).
_STATUS_PAUSE = 0.2


class EditedReply(Reply):
    """The messages that show one run, edited as it goes."""

    def __init__(self, *args: Any, min_interval: float = 1.5, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._min_interval = min_interval
        self._synced_text = ""  # the answer text as of the last complete sync
        self._sent: list[tuple[str, str]] = []  # (ts, rendered payload) per message

    @property
    def ts(self) -> str | None:
        """The placeholder's ts (the first message of the reply)."""
        return self._sent[0][0] if self._sent else None

    async def start(self, status: str) -> None:
        """Post the placeholder at once and begin streaming edits."""
        self._status = status
        await self._sync(final=False)
        self._flusher = asyncio.create_task(self._flush_loop(), name=f"reply-{self._run_id}")

    async def _deliver_final(self) -> None:
        await self._sync(final=True)

    @property
    def truncated(self) -> bool:
        """The answer is longer than `max_messages` messages: Slack shows the start of it."""
        return len(self._pieces()) > self._max_messages

    async def _flush_loop(self) -> None:
        while not self.channel_gone:
            await self._dirty.wait()
            self._dirty.clear()
            synced = self._synced_text
            try:
                await self._sync(final=False)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # whatever it is, the loop lives on: the next change renders again
                logger.warning("Live update of run %s failed: %s", self._run_id, exc)
                self._dirty.set()
            # The interval paces the answer's edits; after a status-only edit ("Thinking…") the
            # first words of the answer must not wait for it.
            await asyncio.sleep(self._min_interval if self._synced_text != synced else _STATUS_PAUSE)

    def _pieces(self) -> list[str]:
        return split_markdown(self._shown(self._body())) or [""]

    def _render(self) -> list[tuple[str, list[dict[str, Any]]]]:
        pieces = self._pieces()
        if len(pieces) > self._max_messages:  # the rest goes into answer.md when the run ends
            pieces = pieces[: self._max_messages]
            more = "attached below as `answer.md`" if not self._running else "will be attached as `answer.md`"
            pieces[-1] += f"\n\n_… the answer goes on: it is too long for Slack, the full text {more}._"
        context = self._context()
        rendered = []
        for index, piece in enumerate(pieces):
            blocks: list[dict[str, Any]] = [{"type": "markdown", "text": piece}] if piece.strip() else []
            last = index == len(pieces) - 1
            if last and context:
                blocks.append(context)
            if last:
                blocks.append(stop_button(self._run_id) if self._running else feedback_buttons(self._run_id))
            rendered.append((self._fallback(piece), blocks))
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
                if not await self._budgets["chat.update"].acquire(self.key, priority):
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
        if self._refused(exc):
            return True
        error = exc.response.get("error")
        if error in MESSAGE_GONE:
            logger.warning("Run %s: message %d is gone (%s); posting the answer anew", self._run_id, index, error)
            del self._sent[index:]
            return True
        return False
