"""Short messages and reactions in threads, and the background tasks that send them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.markup import neutralize_broadcasts
from maison_slack.slack.budget import Budgets, Priority
from maison_slack.slack.redact import Redactor

logger = logging.getLogger(__name__)

ThreadKey = tuple[str, str]

QUEUED_REACTION = "hourglass_flowing_sand"
ACK_REACTION = "eyes"


def duration(seconds: float) -> str:
    """"2 h", "1.5 h", "30 min": how long, in the words of a notice."""
    hours = seconds / 3600
    if hours >= 1:
        return f"{hours:g} h" if hours == int(hours) else f"{hours:.1f} h"
    return f"{max(1, round(seconds / 60))} min"


class Notices:
    """Posts the bot's own short messages (redacted, and never a broadcast: they quote file names
    and paths people wrote) and reactions.

    `later()` sends a call nobody waits for (a reaction, a notice): the task is owned here,
    its failure logged, and it is cancelled at `close()`.
    """

    def __init__(self, client: AsyncWebClient, redactor: Redactor, budgets: Budgets) -> None:
        self._client = client
        self._redactor = redactor
        self._budgets = budgets  # reactions.add is Tier 3, reactions.remove Tier 2
        self._tasks: set[asyncio.Future[None]] = set()

    def safe(self, text: str) -> str:
        """`text` the bot writes, made fit for Slack: no secret, no broadcast ping."""
        return neutralize_broadcasts(self._redactor.redact(text))

    async def say(self, key: ThreadKey, text: str, *, blocks: list[dict[str, Any]] | None = None) -> None:
        """Post `text` in the thread (`blocks`, if given, are the bot's own: shown instead)."""
        await self._client.chat_postMessage(channel=key[0], thread_ts=key[1], text=self.safe(text), blocks=blocks)

    async def upload(self, key: ThreadKey, data: bytes, name: str, comment: str, *, what: str) -> None:
        """Post a file in the thread, redacted (it comes from the sandbox); a refusal — Slack's, or
        a failed upload such as a 413 — is said in the thread, naming `what` was sent."""
        data = self._redactor.redact_bytes(data)
        try:
            await self._client.files_upload_v2(channel=key[0], thread_ts=key[1], content=data, filename=name,
                                               title=name, initial_comment=self.safe(comment))
        except SlackApiError as exc:
            await self.say(key, f":warning: Could not upload {what} to Slack: {exc.response.get('error')}")
        except (SlackRequestError, aiohttp.ClientError, asyncio.TimeoutError) as exc:
            logger.warning("Upload of %s failed: %s", name, exc)
            await self.say(key, f":warning: Slack did not accept {what} ({len(data) / 1024 / 1024:.1f} MB): "
                                "the upload failed.")

    async def react(self, channel: str, ts: str, name: str) -> None:
        """Decoration: skipped when the reactions budget is spent (a burst of follow-ups), and a
        refused or rate-limited reaction is not worth a retry or an error."""
        if not await self._budgets["reactions.add"].acquire(channel, Priority.STATUS):
            return
        with contextlib.suppress(SlackApiError):
            await self._client.reactions_add(channel=channel, timestamp=ts, name=name)

    async def unreact(self, channel: str, ts: str, name: str) -> None:
        if not await self._budgets["reactions.remove"].acquire(channel, Priority.STATUS):
            return
        with contextlib.suppress(SlackApiError):
            await self._client.reactions_remove(channel=channel, timestamp=ts, name=name)

    def later(self, work: Awaitable[None]) -> None:
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(finished: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            if not finished.cancelled() and finished.exception() is not None:
                logger.warning("A background Slack call failed: %s", finished.exception())

        task.add_done_callback(done)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
