"""The reaper: a timer that asks idle threads to be warned, stopped and deleted (`idle.py`),
and deletes orphans.

Idle means no run for `idle_timeout` seconds; a thread with a running or queued run is never
touched. Orphans are sandboxes labelled as this bot's that SQLite does not know (e.g. after a
crash between creating a sandbox and recording it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from maison_slack.slack.config import Settings
from maison_slack.slack.conversations import Conversations
from maison_slack.slack.pool import POOL_LABEL
from maison_slack.slack.sandboxes import THREAD_LABEL, Sandboxes, parse_thread_label
from maison_slack.storage import Store

logger = logging.getLogger(__name__)


class Reaper:
    def __init__(self, *, store: Store, sandboxes: Sandboxes, conversations: Conversations, settings: Settings) -> None:
        self._store = store
        self._sandboxes = sandboxes
        self._idle = conversations.idle
        self._settings = settings
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
            await asyncio.sleep(self._settings.reap_interval)
            try:
                await self.sweep()
            except Exception:  # keep reaping: one bad sweep must not end the timer
                logger.exception("Reaper sweep failed")

    async def sweep(self) -> None:
        now = time.time()
        idle_before = now - self._settings.idle_timeout
        warn_before = idle_before + self._idle.warning_ahead
        for session in await self._store.sessions_to_warn(warn_before):
            if session.last_active_at >= idle_before:  # past that, it is stopped below: no warning
                await self._idle.warn(session, warn_before)
        for session in await self._store.idle_sessions(idle_before):
            if await self._idle.stop(session, idle_before):
                logger.info("Idle sandbox %s of thread %s stopped", session.sandbox_id, session.key)
        for session in await self._store.expired_sessions(now - self._settings.retention):
            if await self._idle.expire(session, now - self._settings.retention):
                logger.info("Stopped sandbox %s of thread %s deleted", session.sandbox_id, session.key)
        await self.reap_orphans()

    async def reap_orphans(self) -> None:
        # A sandbox listed here and unknown to SQLite when `known` is read afterwards is either an
        # orphan or being created right now; its thread's owner tells which.
        sandboxes = await self._sandboxes.list()
        known = {s.sandbox_id for s in await self._store.sessions_with_sandbox()}
        for sandbox in sandboxes:
            if sandbox.id in known or sandbox.state in ("destroyed", "destroying"):
                continue
            if sandbox.labels.get(POOL_LABEL) and self._sandboxes.pool.spares(sandbox.id):
                continue
            await self._idle.delete_if_orphan(parse_thread_label(sandbox.labels.get(THREAD_LABEL)), sandbox.id)
