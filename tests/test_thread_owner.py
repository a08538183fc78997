"""One owner per thread: the reaper, Stop, restarts and shutdowns all go through it.

Regression tests for the rest of issue 6, driven through the real bot, slack-bolt, the daytona
SDK and the real Claude Code CLI against the doubles, with *time* injected: a sandbox delete
that takes 2 s, a Slack post that takes 2 s, a connection dropped mid-edit, a shutdown while a
listener is still claiming its message, a SIGKILL with prompts waiting.
"""

from __future__ import annotations

import asyncio
import sqlite3

from maison_slack.storage import MIGRATIONS
from tests.bot_harness import ALICE, BOB, CHANNEL, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import Hang, Text, Turn, last_user_text
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import (
    RUN_TIMEOUT,
    bot_replies,
    claude_processes,
    deleted,
    final_reply,
    has_stop_button,
    hanging_run,
    live_reply,
    said,
    sandbox_of,
    start_thread,
    stop_value,
    store,
    wait_run_states,
)
from tests.test_bot_threads import echo, prompts_in_arrival_order

SANDBOX_DELETE = r"^/api/sandbox/[^/]+$"


# -- the reaper asks the owner -----------------------------------------------------------------------


async def test_a_message_during_a_slow_reaper_delete_is_answered_in_a_fresh_sandbox(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2, retention=0)
    ts, _ = await start_thread(bot_env, "remember OSPREY")
    first = await sandbox_of(bot_env, ts)
    bot_env.daytona.inject("DELETE", SANDBOX_DELETE, None, delay=2.0)
    # Wait until the reaper's delete is in flight, then write: the old design checked "busy",
    # then awaited the delete, and the new run found its sandbox gone.
    await bot_env.slack.wait_for(lambda: not bot_env.daytona.faults, timeout=10)  # the order is taken
    assert bot_env.daytona.sandbox(first).state == "started"
    after = await bot_env.slack.post_message(BOB, CHANNEL, "still there? AFTERREAP", thread_ts=ts)

    reply = await final_reply(bot_env, ts, after=after)
    text = visible_text(reply)
    assert ":white_check_mark:" in text and "earlier context is gone" in text, text
    assert deleted(bot_env, first) and await sandbox_of(bot_env, ts) != first
    notice = await said(bot_env, ts, ":zzz:")
    assert float(notice.ts) < float(reply.ts)  # the deletion is told before the answer
    await wait_run_states(bot_env, ts, ["done", "done"])


async def test_idle_owners_are_dropped_from_memory(bot_env):
    app = await bot_env.start(idle_timeout=1, reap_interval=0.2, retention=0)
    threads = [(await start_thread(bot_env, f"thread {n}"))[0] for n in range(3)]
    for ts in threads:  # an owner keeps its thread's sandbox handle until the sandbox is reaped
        await said(bot_env, ts, ":zzz:")
    await bot_env.slack.wait_for(lambda: len(app.conversations.threads) == 0, timeout=5)


# -- Stop in every state ----------------------------------------------------------------------------


async def test_stop_while_the_sandbox_is_being_created(bot):
    bot.daytona.inject("POST", r"^/api/sandbox/?$", None, delay=2.0)
    ts = await bot.slack.mention(ALICE, CHANNEL, "NEVERANSWERED build it")
    reply = await live_reply(bot, ts)  # "Starting…" / "Creating a sandbox…", with its Stop button
    await bot.slack.click(BOB, CHANNEL, reply.ts, "maison_stop", value=stop_value(reply))

    stopped = await bot.slack.wait_for(lambda: not has_stop_button(reply) and reply, timeout=RUN_TIMEOUT)
    assert f"Stopped by <@{BOB}>" in visible_text(stopped)
    await wait_run_states(bot, ts, ["stopped"])
    assert not [r for r in bot.anthropic.requests if "NEVERANSWERED" in last_user_text(r.body or {})]
    assert claude_processes(bot, await sandbox_of(bot, ts)) == []


# -- live replies cannot get stuck -----------------------------------------------------------------------


async def test_dropped_connections_during_edits_do_not_stick_the_reply(bot):
    """Not a Slack error: the connection is dropped (aiohttp raises), again and again."""
    bot.anthropic.responder = lambda body: Turn([Text("word " * 200 + "THEEND")], chunk_size=20, delay=0.02)
    bot.slack.inject("chat.update", disconnect=True, count=6)  # slack_sdk retries once: 3 failures surface
    ts = await bot.slack.mention(ALICE, CHANNEL, "write a lot")

    reply = await final_reply(bot, ts)
    text = visible_text(reply)
    assert "THEEND" in text and ":white_check_mark:" in text, text
    assert [c for c in bot.slack.calls if c.error == "disconnected"]
    await wait_run_states(bot, ts, ["done"])


async def test_a_continuation_in_flight_when_the_run_ends_is_posted_once(bot):
    """The edit loop is cancelled (the run ended) while the continuation's chat.postMessage is
    in flight for 2 s: it must land once and be edited, never posted a second time."""
    answer = "PART1 " + "lorem ipsum " * 1000 + "PART2 " + "dolor " * 200 + "THEEND"
    bot.anthropic.responder = lambda body: Turn([Text(answer)], chunk_size=4000)
    bot.slack.inject("chat.postMessage", delay=2.0, match=lambda a: "PART2" in str(a.get("blocks")))
    ts = await bot.slack.mention(ALICE, CHANNEL, "write two messages")

    def done():
        return next((m for m in bot_replies(bot, ts) if "THEEND" in visible_text(m) and not has_stop_button(m)), None)

    await bot.slack.wait_for(done, timeout=RUN_TIMEOUT)
    await wait_run_states(bot, ts, ["done"])
    await asyncio.sleep(0.5)  # anything posted twice would show by now
    continuations = [m for m in bot_replies(bot, ts) if "PART2" in visible_text(m)]
    assert len(continuations) == 1, [m.ts for m in continuations]
    assert ":white_check_mark:" in visible_text(continuations[0])


# -- limits ------------------------------------------------------------------------------------------------


async def test_a_long_answer_is_capped_and_attached_as_answer_md(bot_env):
    await bot_env.start(max_reply_messages=2)
    answer = " ".join(f"SECTION{n:03d} " + "text " * 400 for n in range(12)) + " THEEND"  # ~24 KB: 3+ messages
    bot_env.anthropic.responder = lambda body: Turn([Text(answer)], chunk_size=5000)
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "write a book")

    attached = await bot_env.slack.wait_for(
        lambda: next((m for m in bot_replies(bot_env, ts) if m.files), None), timeout=RUN_TIMEOUT)
    (meta,) = attached.files
    assert meta["name"] == "answer.md"
    content = bot_env.slack.file_content(meta["id"]).decode()
    assert "SECTION000" in content and "SECTION011" in content and content.rstrip().endswith("THEEND")
    await wait_run_states(bot_env, ts, ["done"])
    shown = [m for m in bot_replies(bot_env, ts) if m.blocks]
    assert len(shown) == 2, [visible_text(m)[:40] for m in shown]
    assert "answer.md" in visible_text(shown[-1]) and ":white_check_mark:" in visible_text(shown[-1])
    assert "THEEND" not in "".join(visible_text(m) for m in shown)


async def test_the_answer_stays_in_sqlite_when_the_channel_is_archived_mid_run(bot):
    bot.anthropic.responder = lambda body: Turn([Text("KEEPME " * 50)], chunk_size=20, delay=0.02)
    bot.slack.inject("chat.update", error="is_archived", count=50)
    ts = await bot.slack.mention(ALICE, CHANNEL, "answer into the void")

    await wait_run_states(bot, ts, ["done"], timeout=RUN_TIMEOUT)
    async with store(bot) as db:
        (run,) = await db.runs(CHANNEL, ts)
    assert run.answer is not None and run.answer.count("KEEPME") == 50
    refused = [c for c in bot.slack.calls if c.error == "is_archived"]
    assert len(refused) == 1, "it went on editing a channel Slack refuses"


# -- shutdown and restart --------------------------------------------------------------------------------


async def test_queued_prompts_run_after_a_restart_in_their_order(bot):
    ts, _, _ = await hanging_run(bot, None, "a long job")
    for step in ("STEP01", "STEP02", "STEP03"):
        await bot.slack.post_message(BOB, CHANNEL, f"then {step}", thread_ts=ts)
    await wait_run_states(bot, ts, ["running", "queued", "queued", "queued"])

    bot.anthropic.responder = echo
    await bot.restart()

    await wait_run_states(bot, ts, ["interrupted", "done", "done", "done"], timeout=90)
    assert prompts_in_arrival_order(bot) == ["STEP01", "STEP02", "STEP03"]


async def test_a_message_being_claimed_at_shutdown_runs_after_the_restart(bot):
    """SIGTERM while a listener is still working on an acked `/maison` (its post takes 2 s):
    the shutdown waits for it to claim the message, and the next start runs it."""
    bot.slack.inject("chat.postMessage", delay=2.0, match=lambda a: "asked Maison" in str(a.get("text")))
    await bot.slack.slash_command(ALICE, CHANNEL, "DRAINED please")
    await bot.slack.wait_for(lambda: any(c.method == "chat.postMessage" for c in bot.slack.calls), timeout=5)
    await bot.stop()

    (root,) = [m for m in bot.slack.messages(CHANNEL) if "asked Maison" in (m.text or "")]
    await wait_run_states(bot, root.ts, ["queued"])
    assert not bot.anthropic.requests  # held for the next start, not started and cut off

    bot.anthropic.responder = echo
    await bot.start()
    reply = await final_reply(bot, root.ts)
    assert ":white_check_mark:" in visible_text(reply)
    assert [r for r in bot.anthropic.requests if "DRAINED" in last_user_text(r.body or {})]


async def test_prompts_waiting_at_a_sigkill_run_after_the_restart(bot_env):
    """The bot runs as a real process, with a run going and two prompts waiting, and is killed."""
    bot_env.anthropic.responder = lambda body: Hang(text="Working on it")
    async with bot_env.process():  # SIGKILLed on leaving
        ts = await bot_env.slack.mention(ALICE, CHANNEL, "a long job")
        await live_reply(bot_env, ts, contains="Working on it")
        for step in ("STEP01", "STEP02"):
            await bot_env.slack.post_message(BOB, CHANNEL, f"then {step}", thread_ts=ts)
        await wait_run_states(bot_env, ts, ["running", "queued", "queued"])

    bot_env.anthropic.responder = echo
    await bot_env.start()

    await wait_run_states(bot_env, ts, ["interrupted", "done", "done"], timeout=90)
    assert prompts_in_arrival_order(bot_env) == ["STEP01", "STEP02"]
    assert claude_processes(bot_env, await sandbox_of(bot_env, ts)) == []


async def test_a_prompt_queued_by_the_previous_version_is_not_dropped_silently(bot_env):
    """Version 1 of the schema did not keep prompts: a run it left queued cannot be run again,
    so the upgrade migrates it and the thread is told to send the message again."""
    with sqlite3.connect(bot_env.db_path) as db:
        db.executescript(f"BEGIN; {MIGRATIONS[0]}; PRAGMA user_version = 1; COMMIT;")
    await bot_env.start()
    ts, _ = await start_thread(bot_env, "hello")
    await bot_env.stop()
    with sqlite3.connect(bot_env.db_path) as db:  # what version 1 left: a queued run, no prompt
        (version,) = db.execute("PRAGMA user_version").fetchone()
        db.execute("INSERT INTO runs (channel, thread_ts, user_id, prompt_ts, state, created_at)"
                   " VALUES (?, ?, ?, ?, 'queued', 0)", (CHANNEL, ts, BOB, ts))
    assert version == len(MIGRATIONS)

    await bot_env.start()

    told = await said(bot_env, ts, "send it again")
    assert f"<@{BOB}>" in told.text
    await wait_run_states(bot_env, ts, ["done", "interrupted"])
