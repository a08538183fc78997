"""A warm pool: sandboxes created ahead of time, so a new thread's first answer does not wait
for one (`MAISON_WARM_POOL`).

Daytona's own warm pools do not serve creations that set environment variables or Secrets
(../shared/reference/daytona.md §17), and every thread's sandbox has both, so the pool is the
bot's: members are made exactly like a thread's sandbox, labelled as pool members, and a new
thread takes one (relabelled for its thread) while a background task makes the next.
Members left by an earlier run of the bot are taken back at start; on a clean shutdown the pool
is deleted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from maison_slack.core.errors import MaisonError, SandboxGoneError
from maison_slack.core.sandbox import MaisonSandbox

logger = logging.getLogger(__name__)

POOL_LABEL = "maison-pool"
#: After a failed creation the pool waits this long before it tries again (Daytona may be down).
_RETRY_SECONDS = 10.0


class WarmPool:
    """`size` started sandboxes kept ready. `create()` makes one with the pool label."""

    def __init__(self, size: int, create: Callable[[], Awaitable[MaisonSandbox]]) -> None:
        self.size = size
        self._create = create
        self._ready: list[MaisonSandbox] = []
        self._wanted = asyncio.Event()
        self._filler: asyncio.Task[None] | None = None
        self._creating = False

    @property
    def ready(self) -> int:
        return len(self._ready)

    def spares(self, sandbox_id: str) -> bool:
        """Whether the orphan sweep must leave this pool-labelled sandbox alone: it is a member,
        or one is being created right now (its id is not known until the creation returns)."""
        return self._creating or any(member.id == sandbox_id for member in self._ready)

    def start(self, adopted: list[MaisonSandbox]) -> None:
        """Keep the pool full from now on, starting from members an earlier run left."""
        self._ready = adopted[: self.size]
        if self.size:
            self._wanted.set()
            self._filler = asyncio.create_task(self._fill(), name="maison-warm-pool")

    async def take(self, labels: dict[str, str]) -> MaisonSandbox | None:
        """A ready member, labelled `labels` now (a thread's), or None if none is ready."""
        while self._ready:
            member = self._ready.pop(0)
            self._wanted.set()
            try:
                if await member.refresh_state() != "started":  # Daytona stopped it (auto-stop)
                    raise SandboxGoneError(f"pool sandbox {member.id} is {member.state}")
                await member.set_labels(labels)
                return member
            except MaisonError as exc:
                logger.warning("Warm pool sandbox %s is not usable (%s); deleting it", member.id, exc)
                with contextlib.suppress(MaisonError):
                    await member.close()
        return None

    async def _fill(self) -> None:
        """The owned background task: one creation at a time until the pool is full."""
        while True:
            await self._wanted.wait()
            while len(self._ready) < self.size:
                self._creating = True
                try:
                    self._ready.append(await self._create())
                except asyncio.CancelledError:
                    raise
                except Exception as exc:  # Daytona down or out of quota: try later, never crash
                    logger.warning("Could not fill the warm pool: %s", exc)
                    await asyncio.sleep(_RETRY_SECONDS)
                finally:
                    self._creating = False
            self._wanted.clear()

    async def close(self) -> None:
        """Stop filling and delete the ready members (a clean shutdown)."""
        if self._filler is not None:
            self._filler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._filler
        members, self._ready = self._ready, []
        results = await asyncio.gather(*(member.close() for member in members), return_exceptions=True)
        for member, result in zip(members, results):
            if isinstance(result, BaseException):
                logger.warning("Could not delete warm pool sandbox %s: %s", member.id, result)
