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

from maison_slack.slack.conversations import Conversations
from maison_slack.slack.sandboxes import THREAD_LABEL, Sandboxes, parse_thread_label
from maison_slack.storage import Store

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(self, *, store: Store, sandboxes: Sandboxes, conversations: Conversations,
                 idle_timeout: float, interval: float) -> None:
        self._store = store
        self._sandboxes = sandboxes
        self._conversations = conversations
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
        idle_before = time.time() - self._idle_timeout
        for session in await self._store.idle_sessions(idle_before):
            # The thread's owner re-checks and deletes, so a new prompt never finds its sandbox gone.
            if await self._conversations.reap_if_idle(session, idle_before):
                logger.info("Reaped idle sandbox %s of thread %s", session.sandbox_id, session.key)

    async def reap_orphans(self) -> None:
        # A sandbox listed here and unknown to SQLite when `known` is read afterwards is either an
        # orphan or being created right now; its thread's owner tells which.
        sandboxes = await self._sandboxes.list()
        known = {s.sandbox_id for s in await self._store.sessions_with_sandbox()}
        for sandbox in sandboxes:
            if sandbox.id in known or sandbox.state in ("destroyed", "destroying"):
                continue
            await self._conversations.delete_if_orphan(parse_thread_label(sandbox.labels.get(THREAD_LABEL)),
                                                       sandbox.id)
