"""Idle sandboxes are stopped, not deleted, and wake up with their work (issue 10, item 3).

After `MAISON_IDLE_TIMEOUT` a thread's sandbox is stopped (Daytona may archive it); a message
within `MAISON_RETENTION` wakes it with its files and Claude's conversation; only then is it
deleted for good. Before the stop the thread is warned, with a Keep button that starts the idle
period again. Driven through the real bot, slack-bolt, the daytona SDK and Claude Code against
the doubles; time is injected (a slow stop racing a message, an archived sandbox).
"""

from __future__ import annotations

import asyncio
import time

from daytona import AsyncDaytona, DaytonaConfig

from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot_env  # noqa: F401
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import (
    deleted,
    final_reply,
    requests_with,
    said,
    sandbox_of,
    session_row,
    start_thread,
    wait_run_states,
)
from tests.doubles.anthropic import user_prompts

SANDBOX_STOP = r"^/api/sandbox/[^/]+/stop$"


async def leave_a_file(env: BotEnv, thread_ts: str, text: str = "kept work") -> str:
    """A file in the thread's sandbox, as Claude's earlier work would leave it."""
    sandbox_id = await sandbox_of(env, thread_ts)
    (env.daytona.sandbox(sandbox_id).home / "notes.txt").write_text(text)
    return sandbox_id


async def stopped(env: BotEnv, sandbox_id: str, timeout: float = 10) -> None:
    await env.slack.wait_for(lambda: env.daytona.sandbox(sandbox_id).state == "stopped", timeout=timeout)


async def test_an_idle_sandbox_is_stopped_and_a_message_wakes_it_with_files_and_conversation(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2)
    ts, _ = await start_thread(bot_env, "remember HERON")
    sandbox_id = await leave_a_file(bot_env, ts)

    notice = await said(bot_env, ts, "was stopped after")
    await stopped(bot_env, sandbox_id)
    assert "send a message to wake it up" in visible_text(notice) and "24 h" in visible_text(notice)
    session = await session_row(bot_env, ts)
    assert session.sandbox_id == sandbox_id and session.stopped  # kept, not deleted
    await asyncio.sleep(1.0)  # more sweeps: a stopped sandbox is not stopped again, nor deleted
    assert not deleted(bot_env, sandbox_id)
    assert [m for m in bot_env.slack.thread(CHANNEL, ts) if "was stopped after" in visible_text(m)] == [notice]

    after = await bot_env.slack.post_message(BOB, CHANNEL, "what did I ask you? WOKEN", thread_ts=ts)
    reply = await final_reply(bot_env, ts, after=after)

    assert ":white_check_mark:" in visible_text(reply) and "earlier context" not in visible_text(reply)
    assert any("Waking up the sandbox" in text for _, text in reply.versions), reply.versions
    assert bot_env.daytona.sandbox(sandbox_id).state == "started"
    assert (bot_env.daytona.sandbox(sandbox_id).home / "notes.txt").read_text() == "kept work"
    (body,) = requests_with(bot_env, "WOKEN")
    assert user_prompts(body)[0] == "remember HERON"  # the conversation went on
    assert not (await session_row(bot_env, ts)).stopped


async def test_an_archived_sandbox_is_restored_by_a_message(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2)
    ts, _ = await start_thread(bot_env, "remember EGRET")
    sandbox_id = await leave_a_file(bot_env, ts, "archived work")
    await stopped(bot_env, sandbox_id)
    async with AsyncDaytona(DaytonaConfig(api_key=bot_env.daytona.api_key, api_url=bot_env.daytona.api_url)) as daytona:
        await (await daytona.get(sandbox_id)).archive()  # what Daytona does to a stopped sandbox
    await bot_env.slack.wait_for(lambda: bot_env.daytona.sandbox(sandbox_id).state == "archived", timeout=10)

    after = await bot_env.slack.post_message(ALICE, CHANNEL, "back from lunch ARCHIVED", thread_ts=ts)
    reply = await final_reply(bot_env, ts, after=after)

    assert ":white_check_mark:" in visible_text(reply)
    assert (bot_env.daytona.sandbox(sandbox_id).home / "notes.txt").read_text() == "archived work"
    (body,) = requests_with(bot_env, "ARCHIVED")
    assert user_prompts(body)[0] == "remember EGRET"


async def test_a_stopped_sandbox_is_deleted_for_good_after_the_retention(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2, retention=1.5)
    ts, _ = await start_thread(bot_env, "remember IBIS")
    sandbox_id = await sandbox_of(bot_env, ts)
    await said(bot_env, ts, "was stopped after")
    gone = await said(bot_env, ts, "deleted for good")
    assert deleted(bot_env, sandbox_id)
    session = await session_row(bot_env, ts)
    assert session.sandbox_id is None and session.context_note == "reaped"

    after = await bot_env.slack.post_message(ALICE, CHANNEL, "still there? FRESH", thread_ts=ts)
    reply = await final_reply(bot_env, ts, after=after)
    assert "earlier context is gone" in visible_text(reply) and float(gone.ts) < float(reply.ts)
    assert await sandbox_of(bot_env, ts) != sandbox_id


async def test_the_keep_button_starts_the_idle_period_again(bot_env):
    await bot_env.start(idle_timeout=4, reap_interval=0.2)
    ts, _ = await start_thread(bot_env, "remember KITE")
    sandbox_id = await sandbox_of(bot_env, ts)
    warning = await said(bot_env, ts, "will be stopped in about")  # 2 s before the stop, at 2 s idle
    assert any(b.get("type") == "actions" for b in warning.blocks)

    envelope = await bot_env.slack.click(BOB, CHANNEL, warning.ts, "maison_keep", value="keep")
    await bot_env.slack.wait_acked(envelope)
    kept_at = time.monotonic()
    await bot_env.slack.wait_for(lambda: "kept this thread's sandbox" in visible_text(bot_env.slack.message(CHANNEL, warning.ts)), timeout=5)
    assert not any(b.get("type") == "actions" for b in bot_env.slack.message(CHANNEL, warning.ts).blocks)

    await asyncio.sleep(3.0)  # past the original stop time (4 s after the run), before the new one
    assert bot_env.daytona.sandbox(sandbox_id).state == "started"
    await stopped(bot_env, sandbox_id)  # then the new idle period ends: warned again, stopped
    assert time.monotonic() - kept_at >= 3.5
    warnings = [m for m in bot_env.slack.thread(CHANNEL, ts) if "will be stopped in about" in visible_text(m)]
    assert len(warnings) == 1  # the kept one says "kept" now; the second warning is new
    await wait_run_states(bot_env, ts, ["done"])


async def test_a_message_during_a_slow_stop_wakes_the_sandbox_again(bot_env):
    """The stop takes 2 s at Daytona; a message sent meanwhile waits for it, then wakes the
    sandbox: answered in the same sandbox, with its conversation, the stop notice first."""
    await bot_env.start(idle_timeout=1, reap_interval=0.2)
    ts, _ = await start_thread(bot_env, "remember PLOVER")
    sandbox_id = await sandbox_of(bot_env, ts)
    bot_env.daytona.inject("POST", SANDBOX_STOP, None, delay=2.0)
    await bot_env.slack.wait_for(lambda: not bot_env.daytona.faults, timeout=10)  # the stop is in flight
    after = await bot_env.slack.post_message(BOB, CHANNEL, "wait for me SLOWSTOP", thread_ts=ts)

    reply = await final_reply(bot_env, ts, after=after)
    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    assert await sandbox_of(bot_env, ts) == sandbox_id
    assert bot_env.daytona.sandbox(sandbox_id).state == "started"
    (body,) = requests_with(bot_env, "SLOWSTOP")
    assert user_prompts(body)[0] == "remember PLOVER"
    notice = await said(bot_env, ts, "was stopped after")
    assert float(notice.ts) < float(reply.ts)
    await wait_run_states(bot_env, ts, ["done", "done"])
