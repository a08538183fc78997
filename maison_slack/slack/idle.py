"""Idle threads: warned, then their sandbox stopped, then deleted for good; and orphans.

A team that comes back to a thread after lunch should find its work. So an idle sandbox is not
deleted: `MAISON_IDLE_TIMEOUT` after the thread's last activity it is stopped (Daytona may
archive a stopped sandbox: cheap storage, ../shared/reference/daytona.md §20.2), and only
`MAISON_RETENTION` later deleted for good. A message in between wakes it with its files and
Claude's conversation (`runs.py`: "Waking up the sandbox…"). A few minutes before the stop the
thread gets a notice with a **Keep** button. `MAISON_RETENTION=0` deletes at once instead.

Every change is a job of the thread's owner (`owner.py`), re-checked there: a prompt that
arrives meanwhile waits for it, then finds the sandbox as the job left it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from slack_sdk.errors import SlackApiError

from maison_slack.core.errors import MaisonError
from maison_slack.slack.config import Settings
from maison_slack.slack.notices import Notices, duration
from maison_slack.slack.owner import ThreadKey, ThreadOwner, Threads
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.storage import Session, Store

logger = logging.getLogger(__name__)

KEEP_ACTION = "maison_keep"
#: How long before the stop a thread is warned (at most half the idle timeout).
WARNING_AHEAD = 300.0


class IdleThreads:
    """The reaper's requests to threads, each checked and done by the thread's owner."""

    def __init__(self, *, settings: Settings, store: Store, sandboxes: Sandboxes, threads: Threads,
                 notices: Notices) -> None:
        self._settings = settings
        self._store = store
        self._sandboxes = sandboxes
        self._threads = threads
        self._notices = notices

    @property
    def warning_ahead(self) -> float:
        return min(WARNING_AHEAD, self._settings.idle_timeout / 2)

    async def _ask(self, key: ThreadKey, job: Callable[[ThreadOwner], Awaitable[bool]]) -> bool:
        """Run `job` as the owner's next job, unless the thread is busy (then it is not idle)."""
        owner = self._threads.owner(key)
        if owner.busy:
            return False
        return await owner.post(lambda: job(owner))

    async def _still(self, owner: ThreadOwner, sandbox_id: str | None,
                     check: Callable[[Session], bool]) -> Session | None:
        """The thread's session if it still has `sandbox_id`, nothing waits, and `check` holds."""
        session = await self._store.get_session(*owner.key)
        if session is None or sandbox_id is None or session.sandbox_id != sandbox_id or owner.waiting:
            return None  # reset, replaced or used meanwhile
        return session if check(session) else None

    async def _say(self, key: ThreadKey, text: str, blocks: list[dict[str, Any]] | None = None) -> None:
        """A notice in the job, so it comes before the answer to a prompt that was waiting."""
        try:
            await self._notices.say(key, text, blocks=blocks)
        except SlackApiError as exc:
            logger.warning("Could not post a notice in %s: %s", key, exc)

    # -- warn, stop, delete ------------------------------------------------------------------------

    async def warn(self, session: Session, warn_before: float) -> bool:
        """Tell the thread its sandbox will be stopped soon, with a Keep button."""
        async def job(owner: ThreadOwner) -> bool:
            def due(s: Session) -> bool:
                return s.last_active_at < warn_before and (s.warned_at is None or s.warned_at < s.last_active_at)
            if await self._still(owner, session.sandbox_id, due) is None:
                return False
            text = (f":hourglass: This thread's sandbox will be stopped in about {duration(self.warning_ahead)} "
                    f"if nobody uses it{self._kept_for()}.")
            await self._store.mark_warned(*owner.key)
            await self._say(owner.key, text, blocks=[
                {"type": "section", "text": {"type": "mrkdwn", "text": text}},
                {"type": "actions", "block_id": "maison_keep", "elements": [{
                    "type": "button", "action_id": KEEP_ACTION, "value": "keep",
                    "text": {"type": "plain_text", "text": "Keep"}}]},
            ])
            return True

        return await self._ask(session.key, job)

    def _kept_for(self) -> str:
        if not self._settings.retention:
            return " (it is then deleted, with its files)"
        return f" (its files are kept for {duration(self._settings.retention)} after that)"

    async def stop(self, session: Session, idle_before: float) -> bool:
        """Stop (or, with no retention, delete) the sandbox of a thread idle since `idle_before`."""
        async def job(owner: ThreadOwner) -> bool:
            current = await self._still(owner, session.sandbox_id,
                                        lambda s: s.last_active_at < idle_before and not s.stopped)
            if current is None or current.sandbox_id is None:
                return False
            idle = duration(self._settings.idle_timeout)
            if not self._settings.retention:
                return await self._delete(owner, current.sandbox_id, f":zzz: This thread's sandbox was deleted after "
                                          f"{idle} without activity. Send a message to continue in a fresh "
                                          "sandbox (earlier context will be gone).")
            try:
                await self._sandboxes.stop(current.sandbox_id)
            except MaisonError as exc:
                logger.warning("Could not stop idle sandbox %s: %s", current.sandbox_id, exc)
                return False
            owner.sandbox = None  # attached (and started) again by the next run
            await self._store.mark_stopped(*owner.key, current.sandbox_id)
            await self._say(owner.key, f":zzz: This thread's sandbox was stopped after {idle} without activity. "
                                       f"Its files and the conversation are kept for "
                                       f"{duration(self._settings.retention)}: send a message to wake it up.")
            return True

        return await self._ask(session.key, job)

    async def expire(self, session: Session, stopped_before: float) -> bool:
        """Delete for good a sandbox stopped before `stopped_before` and not used since."""
        async def job(owner: ThreadOwner) -> bool:
            current = await self._still(owner, session.sandbox_id,
                                        lambda s: s.stopped and (s.stopped_at or 0) < stopped_before)
            if current is None or current.sandbox_id is None:
                return False
            return await self._delete(owner, current.sandbox_id, ":wastebasket: This thread's sandbox was deleted "
                                      f"for good after {duration(self._settings.retention)} stopped. Send a message "
                                      "to continue in a fresh sandbox (earlier context will be gone).")

        return await self._ask(session.key, job)

    async def _delete(self, owner: ThreadOwner, sandbox_id: str, notice: str) -> bool:
        try:
            await self._sandboxes.delete(sandbox_id)
        except MaisonError as exc:
            logger.warning("Could not delete idle sandbox %s: %s", sandbox_id, exc)
            return False
        owner.sandbox = None
        await self._store.forget_sandbox(*owner.key, sandbox_id, context_note="reaped")
        await self._say(owner.key, notice)
        return True

    async def keep(self, key: ThreadKey) -> str:
        """The Keep button: the idle period starts again. Says what became of the sandbox."""
        session = await self._store.get_session(*key)
        if session is None or session.sandbox_id is None:
            return "gone"
        if session.stopped:
            return "stopped"  # a message wakes it; keeping a stopped sandbox means nothing
        await self._store.touch(*key)
        return "kept"

    # -- orphans ---------------------------------------------------------------------------------

    async def delete_if_orphan(self, key: ThreadKey | None, sandbox_id: str) -> bool:
        """Delete a sandbox of this bot that its thread does not use (left by a crash between
        creating a sandbox and recording it). Asked of the thread's owner, which is busy while it
        creates one, so a sandbox being created is never taken for an orphan."""
        if key is None:
            return await self._delete_orphan(None, sandbox_id)
        return await self._ask(key, lambda owner: self._delete_orphan(key, sandbox_id))

    async def _delete_orphan(self, key: ThreadKey | None, sandbox_id: str) -> bool:
        if key is not None:
            session = await self._store.get_session(*key)
            if session is not None and session.sandbox_id == sandbox_id:
                return False
        logger.info("Deleting orphan sandbox %s (thread %s)", sandbox_id, key)
        try:
            await self._sandboxes.delete(sandbox_id)
        except MaisonError as exc:
            logger.warning("Could not delete orphan sandbox %s: %s", sandbox_id, exc)
            return False
        return True
