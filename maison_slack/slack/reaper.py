"""The idle reaper: deletes sandboxes nobody has used for a while, and orphans.

Idle means no run for `idle_timeout` seconds; a thread with a running or queued run is never
reaped. Orphans are sandboxes labelled as this bot's that SQLite does not know (e.g. after a
crash between creating a sandbox and recording it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError
from maison_slack.slack.conversations import Conversations
from maison_slack.slack.sandboxes import THREAD_LABEL, Sandboxes
from maison_slack.storage import Store

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(self, *, store: Store, sandboxes: Sandboxes, conversations: Conversations, client: AsyncWebClient,
                 idle_timeout: float, interval: float) -> None:
        self._store = store
        self._sandboxes = sandboxes
        self._conversations = conversations
        self._client = client
        self._idle_timeout = idle_timeout
        self._interval = interval
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._loop(), name="maison-reaper")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _loop(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            try:
                await self.sweep()
            except Exception:  # keep reaping: one bad sweep must not end the timer
                logger.exception("Reaper sweep failed")

    async def sweep(self) -> None:
        await self.reap_idle()
        await self.reap_orphans()

    async def reap_idle(self) -> None:
        for session in await self._store.idle_sessions(time.time() - self._idle_timeout):
            key = (session.channel, session.thread_ts)
            if self._conversations.busy(key) or session.sandbox_id is None:
                continue
            try:
                await self._sandboxes.delete(session.sandbox_id)
            except MaisonError as exc:
                logger.warning("Could not reap sandbox %s: %s", session.sandbox_id, exc)
                continue
            self._conversations.forget_sandbox(key)
            if not await self._store.forget_sandbox(*key, session.sandbox_id, context_note="reaped"):
                continue  # the thread moved on to a new sandbox while this one was deleted
            logger.info("Reaped idle sandbox %s of thread %s", session.sandbox_id, key)
            minutes = max(1, round(self._idle_timeout / 60))
            text = (f":zzz: This thread's sandbox was deleted after {minutes} min without activity. "
                    "Send a message to continue in a fresh sandbox (earlier context will be gone).")
            try:
                await self._client.chat_postMessage(channel=session.channel, thread_ts=session.thread_ts, text=text)
            except SlackApiError as exc:
                logger.warning("Could not post the reap notice in %s: %s", key, exc)

    async def reap_orphans(self) -> None:
        # This order matters: a sandbox listed here is either still being created (its label is
        # in `creating`) or already recorded in SQLite when `known` is read afterwards.
        sandboxes = await self._sandboxes.list()
        creating = self._conversations.creating_labels()
        known = {s.sandbox_id for s in await self._store.sessions_with_sandbox()}
        for sandbox in sandboxes:
            if sandbox.id in known or sandbox.labels.get(THREAD_LABEL) in creating:
                continue
            if sandbox.state in ("destroyed", "destroying"):
                continue
            logger.info("Deleting orphan sandbox %s (%s)", sandbox.id, sandbox.labels.get(THREAD_LABEL))
            try:
                await self._sandboxes.delete(sandbox.id)
            except MaisonError as exc:
                logger.warning("Could not delete orphan sandbox %s: %s", sandbox.id, exc)
