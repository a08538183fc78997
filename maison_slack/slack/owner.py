"""One owner per Slack thread: the only place a thread's live state is kept and changed.

Everything that touches a thread's sandbox — a prompt's run, `reset`, `file`, the reaper's idle
deletion, an orphan check — is a job posted to the thread's owner, and the owner runs its jobs
one at a time, in the order they were posted. So two runs never share a sandbox, a prompt
queued during a deletion waits for it and gets a fresh sandbox, and nobody needs flags to
coordinate with anybody else: they ask the owner.

Stop is the one thing that does not wait in line (it would wait behind the run it stops): it
changes the owner's state at once, and the run reads that state.

Owners live in `Threads`, which drops an owner as soon as it has nothing to do and no sandbox
handle, so memory does not grow with every thread ever seen (a thread's sandbox handle goes
when the reaper deletes the sandbox, so idle owners do not outlive the idle timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from maison_slack.core.errors import SandboxGoneError
from maison_slack.core.sandbox import MaisonSandbox

logger = logging.getLogger(__name__)

ThreadKey = tuple[str, str]
T = TypeVar("T")


class ThreadState(enum.Enum):
    """Where a thread's current run is. Only the owner changes it."""

    IDLE = "idle"  # no run (jobs such as `file` or a deletion may still run)
    STARTING = "starting"  # a run is preparing: sandbox, attachments; Claude not launched yet
    RUNNING = "running"  # Claude is launched
    STOPPING = "stopping"  # someone pressed Stop; the run ends as "stopped"


class ThreadOwner:
    """A thread's state and its serial executor."""

    def __init__(self, key: ThreadKey, on_idle: Callable[["ThreadOwner"], None]) -> None:
        self.key = key
        self.state = ThreadState.IDLE
        self.run_id: int | None = None
        self.stopped_by: str | None = None
        #: Prompts accepted and not yet started (limited by `MAISON_MAX_QUEUED`).
        self.waiting = 0
        #: The thread's sandbox while the bot holds it; None means "look it up in SQLite".
        self.sandbox: MaisonSandbox | None = None
        self._jobs: asyncio.Queue[tuple[Callable[[], Awaitable[object]], asyncio.Future[object]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._on_idle = on_idle

    # -- what others ask ----------------------------------------------------------------------

    @property
    def busy(self) -> bool:
        """A run is going on or waiting, or a job is queued or running."""
        return self.state is not ThreadState.IDLE or self.waiting > 0 or self._working

    @property
    def _working(self) -> bool:
        return self._worker is not None and not self._worker.done()

    def post(self, job: Callable[[], Awaitable[T]]) -> asyncio.Future[T]:
        """Run `job` after every job posted before it; the future gets its result.

        The place in line is fixed here, synchronously, so callers may await whatever they like
        afterwards (reactions, notices) without changing the order.
        """
        done: asyncio.Future[T] = asyncio.get_running_loop().create_future()
        self._jobs.put_nowait((job, done))  # type: ignore[arg-type]
        if not self._working:
            self._worker = asyncio.create_task(self._work(), name=f"thread-{self.key[0]}-{self.key[1]}")
        return done

    async def stop(self, user: str) -> bool:
        """Stop the current run, in any state before it ends. False when nothing runs.

        Stopped while starting, Claude is never launched (the run checks the state just before
        launching); stopped while running, Claude and its tools are killed.
        """
        if self.state not in (ThreadState.STARTING, ThreadState.RUNNING):
            return self.state is ThreadState.STOPPING
        launched = self.state is ThreadState.RUNNING
        self.state, self.stopped_by = ThreadState.STOPPING, user
        if launched and self.sandbox is not None:
            await self.sandbox.cancel(f"stopped by {user}")
        return True

    def describe(self) -> str | None:
        """"running", "running, 2 queued"…, or None when nothing runs or waits."""
        parts = [self.state.value] if self.state is not ThreadState.IDLE else []
        if self.waiting:
            parts.append(f"{self.waiting} queued")
        return ", ".join(parts) or None

    # -- what the run calls -----------------------------------------------------------------------

    def begin_run(self, run_id: int) -> None:
        self.waiting -= 1
        self.state, self.run_id, self.stopped_by = ThreadState.STARTING, run_id, None

    def launch(self) -> bool:
        """Claude is about to start: False if a Stop came first (then it must not start)."""
        if self.state is ThreadState.STOPPING:
            return False
        self.state = ThreadState.RUNNING
        return True

    def end_run(self) -> None:
        self.state, self.run_id = ThreadState.IDLE, None

    async def live_sandbox(self) -> MaisonSandbox | None:
        """The sandbox held in memory if Daytona still has it started (it may have auto-stopped,
        or someone deleted it, since the last run); otherwise forget it."""
        if self.sandbox is not None:
            with contextlib.suppress(SandboxGoneError):
                if await self.sandbox.refresh_state() == "started":
                    return self.sandbox
            self.sandbox = None
        return None

    # -- the executor ------------------------------------------------------------------------------

    async def _work(self) -> None:
        try:
            while not self._jobs.empty():
                job, done = self._jobs.get_nowait()
                if done.cancelled():
                    continue
                try:
                    result = await job()
                except asyncio.CancelledError:
                    done.cancel()
                    raise
                except Exception as exc:  # jobs report their own failures; this is a bug: keep serving
                    logger.exception("A job of thread %s failed", self.key)
                    if not done.done():
                        done.set_exception(exc)
                        done.exception()  # retrieved: nobody may be waiting for it
                else:
                    if not done.done():
                        done.set_result(result)
        finally:
            while not self._jobs.empty():  # cancelled (shutdown): nobody waits forever
                self._jobs.get_nowait()[1].cancel()
            if self.state is ThreadState.IDLE and not self.waiting and self.sandbox is None:
                self._on_idle(self)

    async def cancel(self) -> None:
        """Shutdown: cancel the job in progress (its run is marked interrupted) and the rest."""
        if self._working:
            assert self._worker is not None
            self._worker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._worker


class Threads:
    """Every thread's owner, made on first use and dropped when idle."""

    def __init__(self) -> None:
        self._owners: dict[ThreadKey, ThreadOwner] = {}

    def owner(self, key: ThreadKey) -> ThreadOwner:
        owner = self._owners.get(key)
        if owner is None:
            owner = self._owners[key] = ThreadOwner(key, self._drop)
        return owner

    def get(self, key: ThreadKey) -> ThreadOwner | None:
        return self._owners.get(key)

    def find_run(self, run_id: int) -> ThreadOwner | None:
        return next((o for o in self._owners.values() if o.run_id == run_id), None)

    def all(self) -> list[ThreadOwner]:
        return list(self._owners.values())

    def __len__(self) -> int:
        return len(self._owners)

    def _drop(self, owner: ThreadOwner) -> None:
        if self._owners.get(owner.key) is owner:
            del self._owners[owner.key]

    async def close(self) -> None:
        for owner in self.all():
            await owner.cancel()
