"""The sandbox image (issue 10, item 1): `maison-slack snapshot` builds a Daytona snapshot with
the pinned Claude Code from a declarative Image, the bot uses it by default, and a sandbox whose
`claude` is another version is logged once or, with `MAISON_CLAUDE_VERSION=pinned`, gets the
pinned one under $HOME. Through the real daytona SDK against the Daytona double (snapshot builds
with their states and logs), the bot and the real Claude Code CLI.
"""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path

from maison_slack.core.maison import CLAUDE_CODE_VERSION
from maison_slack.core.snapshots import PINNED_SNAPSHOT
from tests.bot_harness import BotEnv, bot_env  # noqa: F401
from tests.doubles.daytona import SnapshotSpec
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import sandbox_of, start_thread


async def maison_slack(env: BotEnv, *args: str, drop: tuple[str, ...] = ()) -> tuple[int, str]:
    """`python -m maison_slack <args>` as a user runs it, with the doubles' settings."""
    environ = {k: v for k, v in {**os.environ, **env.env()}.items() if k not in drop}
    process = await asyncio.create_subprocess_exec(sys.executable, "-m", "maison_slack", *args, env=environ,
                                                   stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    out, _ = await asyncio.wait_for(process.communicate(), 60)
    return process.returncode or 0, out.decode()


def fake_claude_dir(tmp_path: Path, real_bin: Path) -> Path:
    """A snapshot's tools where `claude` is an older Claude Code, and `npm install` puts the real
    (pinned) CLI under the prefix it is given, as npm would after a download."""
    tools = tmp_path / "old-tools"
    tools.mkdir()
    (tools / "claude").write_text("#!/bin/sh\necho '2.0.1 (Claude Code)'\n")
    (tools / "npm").write_text(
        "#!/bin/sh\n# npm install -g --prefix DIR ... @anthropic-ai/claude-code@VERSION\n"
        'prefix=""; while [ $# -gt 0 ]; do [ "$1" = --prefix ] && prefix="$2"; shift; done\n'
        f'mkdir -p "$prefix/bin" && ln -sf "{real_bin / "claude"}" "$prefix/bin/claude"\n')
    for tool in tools.iterdir():
        tool.chmod(0o755)
    return tools


async def test_a_sandbox_with_another_claude_code_is_logged_once(bot_env, tmp_path, claude_bin_dir, caplog):
    bot_env.daytona.snapshots["old-claude"] = SnapshotSpec(path=[str(fake_claude_dir(tmp_path, claude_bin_dir))])
    caplog.set_level(logging.INFO, logger="maison_slack")
    await bot_env.start(snapshot="old-claude")
    # The fake `claude` cannot answer: the point is what the bot says about it, once.
    await asyncio.gather(bot_env.slack.mention("U0ALICE", "C0CHAN", "one"),
                         bot_env.slack.mention("U0ALICE", "C0CHAN", "two"))
    await bot_env.slack.wait_for(lambda: len([s for s in bot_env.daytona.sandboxes.values()]) >= 2, timeout=20)
    await asyncio.sleep(1)
    warnings = [r.getMessage() for r in caplog.records if "not " + CLAUDE_CODE_VERSION in r.getMessage()]
    assert len(warnings) == 1 and "2.0.1" in warnings[0] and "MAISON_CLAUDE_VERSION=pinned" in warnings[0]
    assert any("snapshot old-claude" in r.getMessage() for r in caplog.records)


async def test_pinned_installs_the_tested_claude_code_under_home(bot_env, tmp_path, claude_bin_dir, caplog):
    bot_env.daytona.snapshots["old-claude"] = SnapshotSpec(path=[str(fake_claude_dir(tmp_path, claude_bin_dir))])
    caplog.set_level(logging.INFO, logger="maison_slack")
    await bot_env.start(snapshot="old-claude", claude_version="pinned")
    ts, reply = await start_thread(bot_env, "hello from the pinned version")
    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    home = bot_env.daytona.sandbox(await sandbox_of(bot_env, ts)).home
    assert (home / ".maison" / "npm" / "bin" / "claude").exists()
    assert not [r for r in caplog.records if "not " + CLAUDE_CODE_VERSION in r.getMessage()]


async def test_snapshot_command_needs_the_daytona_key(bot_env):
    code, out = await maison_slack(bot_env, "snapshot", drop=("DAYTONA_API_KEY",))
    assert code == 2 and "DAYTONA_API_KEY is not set" in out


async def test_the_snapshot_is_built_with_logs_and_used_by_the_bot(bot_env):
    code, out = await maison_slack(bot_env, "snapshot")
    assert code == 0, out
    assert f"Claude Code {CLAUDE_CODE_VERSION}" in out and f"Snapshot {PINNED_SNAPSHOT} is active" in out
    assert "building" in out.lower()  # the build's own log, shown as it ran
    code, again = await maison_slack(bot_env, "snapshot")
    assert code == 0 and "exists and is active" in again

    await bot_env.start()
    ts, reply = await start_thread(bot_env, "hello from the pinned snapshot")
    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    assert bot_env.daytona.sandbox(await sandbox_of(bot_env, ts)).snapshot == PINNED_SNAPSHOT
