"""`maison-slack snapshot`: build the Daytona snapshot new sandboxes use by default, with the
Claude Code version maison-slack is tested with (`maison_slack.core.snapshots`).

It needs only the Daytona settings (`DAYTONA_API_KEY`, and `DAYTONA_API_URL` / `DAYTONA_TARGET`
when used); the build's log is printed as it runs.
"""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Mapping

from daytona import AsyncDaytona, DaytonaConfig

from maison_slack.core.errors import MaisonError
from maison_slack.core.maison import CLAUDE_CODE_VERSION
from maison_slack.core.snapshots import PINNED_SNAPSHOT, build_snapshot, state_of


async def build(env: Mapping[str, str], rebuild: bool) -> int:
    config = DaytonaConfig(api_key=env["DAYTONA_API_KEY"], api_url=env.get("DAYTONA_API_URL") or None,
                           target=env.get("DAYTONA_TARGET") or None)
    print(f"Building snapshot {PINNED_SNAPSHOT}: Node.js, git, build tools and Claude Code {CLAUDE_CODE_VERSION}",
          flush=True)
    async with AsyncDaytona(config) as daytona:
        try:
            snapshot = await build_snapshot(daytona, on_logs=lambda line: print(line, flush=True), rebuild=rebuild)
        except (MaisonError, TimeoutError) as exc:
            print(f"maison-slack snapshot: the build failed: {exc}", file=sys.stderr)
            return 1
    print(f"Snapshot {snapshot.name} is {state_of(snapshot)}. New sandboxes use it unless MAISON_SNAPSHOT names "
          "another; restart the bot to pick it up.", flush=True)
    return 0


def main(rebuild: bool = False, env: Mapping[str, str] = os.environ) -> int:
    if not env.get("DAYTONA_API_KEY", "").strip():
        print("maison-slack snapshot: DAYTONA_API_KEY is not set (see README.md).", file=sys.stderr)
        return 2
    return asyncio.run(build(env, rebuild))
