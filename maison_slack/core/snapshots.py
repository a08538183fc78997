"""The sandbox image: a Daytona snapshot with the pinned Claude Code, built from a declarative
`Image`, and which snapshot new sandboxes use.

Daytona's default snapshot carries *some* Claude Code version, and one without it costs a
minute of installing in every new sandbox. `build_snapshot` makes one snapshot with Node.js,
git, common build tools and exactly `CLAUDE_CODE_VERSION`; `choose_snapshot` prefers it when it
exists (../shared/reference/daytona.md §16).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

from daytona import AsyncDaytona, CreateSnapshotParams, DaytonaError, Image
from daytona.common.snapshot import Snapshot

from maison_slack.core.daytona_calls import call, status_of
from maison_slack.core.maison import CLAUDE_CODE_VERSION

#: The snapshot `build_snapshot` makes; its name says which Claude Code it carries.
PINNED_SNAPSHOT = f"maison-claude-code-{CLAUDE_CODE_VERSION}"
#: Daytona's own default, used when the pinned snapshot was not built.
DEFAULT_SNAPSHOT = "daytona-small"


def claude_image(version: str = CLAUDE_CODE_VERSION) -> Image:
    """Node.js, git, ripgrep and build tools (the base brings gcc and make), and Claude Code."""
    return Image.debian_slim("3.12").run_commands(
        "apt-get update && apt-get install -y --no-install-recommends git curl ca-certificates nodejs npm ripgrep"
        " && rm -rf /var/lib/apt/lists/*",
        f"npm install -g --no-audit --no-fund @anthropic-ai/claude-code@{version}",
    )


async def find_snapshot(daytona: AsyncDaytona, name: str) -> Snapshot | None:
    """The snapshot a sandbox created from `name` would use, or None.

    `snapshot.get` surely finds the organization's own snapshots only: for Daytona's general
    ones (`daytona-small`…) the public server source answers 404 to anyone but its admins,
    though sandboxes are made from them. Those are found in the list, which holds both.
    """
    try:
        return await daytona.snapshot.get(name)
    except DaytonaError as exc:
        if status_of(exc) != 404:
            raise
    page = 1
    while True:
        listed = await daytona.snapshot.list(page=page, limit=200)
        found = next((s for s in listed.items if name in (s.name, s.id)), None)
        if found is not None or page >= listed.total_pages:
            return found
        page += 1


def state_of(snapshot: Snapshot) -> str:
    return str(getattr(snapshot.state, "value", snapshot.state))


async def choose_snapshot(daytona: AsyncDaytona, configured: str | None) -> tuple[str, bool]:
    """The snapshot new sandboxes use, and whether it is the pinned one: `configured`
    (`MAISON_SNAPSHOT`) if set, else the pinned snapshot if it was built and is active, else
    Daytona's default."""
    if configured:
        return configured, configured == PINNED_SNAPSHOT
    pinned = await call("Looking for the pinned snapshot", lambda: find_snapshot(daytona, PINNED_SNAPSHOT))
    if pinned is not None and state_of(pinned) == "active":
        return PINNED_SNAPSHOT, True
    return DEFAULT_SNAPSHOT, False


async def build_snapshot(daytona: AsyncDaytona, *, on_logs: Callable[[str], None], name: str = PINNED_SNAPSHOT,
                         rebuild: bool = False, timeout: float = 3600) -> Snapshot:
    """Build `name` from `claude_image()`, the build's log going to `on_logs` as it runs. An
    active snapshot of that name is kept unless `rebuild`; a broken one is replaced."""
    existing = await call("Looking for the snapshot", lambda: find_snapshot(daytona, name))
    if existing is not None and state_of(existing) == "active" and not rebuild:
        on_logs(f"Snapshot {name} exists and is active; use --rebuild to build it again.")
        return existing
    if existing is not None:
        on_logs(f"Deleting snapshot {name} ({state_of(existing)}) to build it again")
        await call("Deleting the snapshot", lambda: daytona.snapshot.delete(existing))
        await _gone(daytona, name)
    params = CreateSnapshotParams(name=name, image=claude_image())
    return await call("Building the snapshot",
                      lambda: daytona.snapshot.create(params, on_logs=on_logs, timeout=timeout), retry=False)


async def _gone(daytona: AsyncDaytona, name: str, timeout: float = 120) -> None:
    """Wait until Daytona has removed the snapshot (its name is free again)."""
    deadline = time.monotonic() + timeout
    while await find_snapshot(daytona, name) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"Snapshot {name} is still being removed after {timeout:g}s")
        await asyncio.sleep(1)
