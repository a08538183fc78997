"""Lifecycle of a thread's sandbox and runs, driven end to end as Slack would drive the bot.

Stop (button and word), reset, files in and out, the idle reaper and orphans, restarts on the
same database, and what SQLite holds afterwards. Everything real except the three services,
which are the doubles: assertions are on what a user sees in Slack, on SQLite rows and on
the Daytona double's sandboxes and processes.
"""

from __future__ import annotations

import asyncio
import sqlite3
from contextlib import asynccontextmanager
from typing import Any

from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

from maison_slack.storage import MIGRATIONS, Store
from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import Hang, Text, Turn, last_user_text, user_prompts
from tests.doubles.slack import Message, visible_text

RUN_TIMEOUT = 30


# -- helpers: what a user sees -----------------------------------------------------------------


def bot_replies(env: BotEnv, thread_ts: str, after: str | None = None) -> list[Message]:
    return [m for m in env.slack.thread(CHANNEL, thread_ts)[1:]
            if m.is_bot and (after is None or float(m.ts) > float(after))]


def has_stop_button(msg: Message) -> bool:
    return any(b.get("type") == "actions" for b in msg.blocks)


def stop_value(msg: Message) -> str:
    for block in msg.blocks:
        if block.get("type") == "actions":
            for element in block.get("elements", []):
                if element.get("action_id") == "maison_stop":
                    return element["value"]
    raise AssertionError(f"no Stop button in {msg.blocks}")


async def live_reply(env: BotEnv, thread_ts: str, after: str | None = None, contains: str = "") -> Message:
    """The run's reply while it runs: it has a Stop button (and `contains`)."""
    def running() -> Message | None:
        for m in bot_replies(env, thread_ts, after):
            if m.blocks and has_stop_button(m) and contains in visible_text(m):
                return m
        return None
    return await env.slack.wait_for(running, timeout=RUN_TIMEOUT)


async def final_reply(env: BotEnv, thread_ts: str, after: str | None = None) -> Message:
    """The first run reply (a message with blocks) after `after` that has finished (no Stop button)."""
    def finished() -> Message | None:
        for m in bot_replies(env, thread_ts, after):
            if m.blocks and not has_stop_button(m):
                return m
        return None
    return await env.slack.wait_for(finished, timeout=RUN_TIMEOUT)


async def said(env: BotEnv, thread_ts: str, fragment: str, after: str | None = None) -> Message:
    """A bot message in the thread whose visible text contains `fragment`."""
    def find() -> Message | None:
        return next((m for m in bot_replies(env, thread_ts, after) if fragment in visible_text(m)), None)
    return await env.slack.wait_for(find, timeout=RUN_TIMEOUT)


def requests_with(env: BotEnv, marker: str) -> list[dict[str, Any]]:
    """Bodies of the Anthropic requests whose latest prompt contains `marker`."""
    return [r.body for r in env.anthropic.requests if r.body and marker in last_user_text(r.body)]


def deleted(env: BotEnv, sandbox_id: str) -> bool:
    """Gone from Daytona, or being destroyed (deletion completes a moment later)."""
    record = env.daytona.sandboxes.get(sandbox_id)
    return record is None or record.state in ("destroying", "destroyed")


def claude_processes(env: BotEnv, sandbox_id: str) -> list[tuple[int, str]]:
    return [(pid, cmd) for pid, cmd in env.daytona.processes(sandbox_id) if "claude" in cmd]


# -- helpers: SQLite -----------------------------------------------------------------------------


@asynccontextmanager
async def store(env: BotEnv):
    opened = await Store.open(env.db_path)
    try:
        yield opened
    finally:
        await opened.close()


async def session_row(env: BotEnv, thread_ts: str):
    async with store(env) as db:
        return await db.get_session(CHANNEL, thread_ts)


async def run_states(env: BotEnv, thread_ts: str) -> list[str]:
    async with store(env) as db:
        return [run.state for run in await db.runs(CHANNEL, thread_ts)]


async def wait_run_states(env: BotEnv, thread_ts: str, expected: list[str], timeout: float = 10) -> None:
    async def match() -> bool:
        return await run_states(env, thread_ts) == expected
    try:
        await env.slack.wait_for(match, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"runs are {await run_states(env, thread_ts)}, expected {expected}") from None


async def sandbox_of(env: BotEnv, thread_ts: str) -> str:
    session = await session_row(env, thread_ts)
    assert session is not None and session.sandbox_id, f"thread {thread_ts} has no sandbox: {session}"
    return session.sandbox_id


async def start_thread(env: BotEnv, text: str) -> tuple[str, Message]:
    """Alice mentions the bot; returns the thread ts and the finished reply."""
    ts = await env.slack.mention(ALICE, CHANNEL, text)
    reply = await final_reply(env, ts)
    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    return ts, reply


async def follow_up(env: BotEnv, thread_ts: str, text: str, user: str = ALICE, **kwargs: Any) -> Message:
    """A reply in the thread; returns the bot's finished reply to it."""
    ts = await env.slack.post_message(user, CHANNEL, text, thread_ts=thread_ts, **kwargs)
    return await final_reply(env, thread_ts, after=ts)


async def hanging_run(env: BotEnv, thread_ts: str | None, text: str) -> tuple[str, Message, str]:
    """Start a run that never finishes by itself; returns (thread ts, live reply, sandbox id)."""
    env.anthropic.responder = lambda body: Hang(text="Working on it")
    if thread_ts is None:
        thread_ts = after = await env.slack.mention(ALICE, CHANNEL, text)
    else:
        after = await env.slack.post_message(ALICE, CHANNEL, text, thread_ts=thread_ts)
    reply = await live_reply(env, thread_ts, after, contains="Working on it")
    sandbox_id = await sandbox_of(env, thread_ts)
    assert claude_processes(env, sandbox_id), env.daytona.processes(sandbox_id)
    return thread_ts, reply, sandbox_id


# -- 1. stop ------------------------------------------------------------------------------------


async def test_stop_button_kills_claude_and_says_who(bot):
    ts, reply, sandbox_id = await hanging_run(bot, None, "count to a million")
    value = stop_value(reply)
    async with store(bot) as db:
        (run,) = await db.runs(CHANNEL, ts)
    assert value == str(run.id) and run.state == "running"

    await bot.slack.click(BOB, CHANNEL, reply.ts, "maison_stop", value=value)

    stopped = await bot.slack.wait_for(lambda: not has_stop_button(reply) and reply, timeout=RUN_TIMEOUT)
    assert f"Stopped by <@{BOB}>" in visible_text(stopped)
    assert "Working on it" in visible_text(stopped)  # what Claude wrote so far stays
    assert claude_processes(bot, sandbox_id) == []
    await wait_run_states(bot, ts, ["stopped"])
    # The thread still works, in the same sandbox.
    bot.anthropic.responder = lambda body: Turn([Text("Back again.")])
    after = await follow_up(bot, ts, "are you there?")
    assert "Back again." in visible_text(after)
    assert await sandbox_of(bot, ts) == sandbox_id


async def test_stop_word_in_thread_kills_claude(bot):
    ts, reply, sandbox_id = await hanging_run(bot, None, "write a novel")

    await bot.slack.post_message(ALICE, CHANNEL, "stop", thread_ts=ts)

    stopped = await bot.slack.wait_for(lambda: not has_stop_button(reply) and reply, timeout=RUN_TIMEOUT)
    assert f"Stopped by <@{ALICE}>" in visible_text(stopped)
    assert claude_processes(bot, sandbox_id) == []
    await wait_run_states(bot, ts, ["stopped"])
    # "stop" was a command, not a prompt: Claude never saw it.
    assert not requests_with(bot, "stop")


async def test_stop_when_nothing_runs_says_so(bot):
    ts, _ = await start_thread(bot, "hello")
    after = await bot.slack.post_message(ALICE, CHANNEL, "stop", thread_ts=ts)
    await said(bot, ts, "Nothing is running", after=after)
    await wait_run_states(bot, ts, ["done"])


# -- 2. reset -------------------------------------------------------------------------------------


async def test_reset_deletes_the_sandbox_and_starts_fresh(bot):
    ts, _ = await start_thread(bot, "remember the word PELICAN")
    first = await sandbox_of(bot, ts)
    assert first in bot.daytona.sandboxes

    after = await bot.slack.post_message(ALICE, CHANNEL, "reset", thread_ts=ts)
    notice = await said(bot, ts, "reset this thread", after=after)
    assert "deleted" in visible_text(notice) and f"<@{ALICE}>" in visible_text(notice)
    await bot.slack.wait_for(lambda: first not in bot.daytona.sandboxes, timeout=10)
    session = await session_row(bot, ts)
    assert session.sandbox_id is None and session.claude_session_id is None

    reply = await follow_up(bot, ts, "what word? FRESHSTART")
    assert ":white_check_mark:" in visible_text(reply)
    second = await sandbox_of(bot, ts)
    assert second != first and second in bot.daytona.sandboxes
    (body,) = requests_with(bot, "FRESHSTART")
    assert user_prompts(body) == ["what word? FRESHSTART"]


async def test_reset_while_running_stops_then_deletes(bot):
    ts, reply, sandbox_id = await hanging_run(bot, None, "long job")
    after = await bot.slack.post_message(ALICE, CHANNEL, "reset", thread_ts=ts)
    await said(bot, ts, "reset this thread", after=after)
    assert not has_stop_button(reply) and "Stopped by" in visible_text(reply)
    assert deleted(bot, sandbox_id)
    await wait_run_states(bot, ts, ["stopped"])


# -- 3. files ----------------------------------------------------------------------------------


async def test_attached_file_is_copied_into_the_sandbox(bot):
    ts, _ = await start_thread(bot, "I will send you data")
    content = b"name,score\nalice,3\nbob,5\n"
    file = bot.slack.add_file("scores.csv", content, ALICE)

    reply = await follow_up(bot, ts, "sum the scores ATTACHED", files=[file])

    assert ":white_check_mark:" in visible_text(reply)
    sandbox_id = await sandbox_of(bot, ts)
    copied = bot.daytona.sandbox(sandbox_id).home / "uploads" / "scores.csv"
    assert copied.read_bytes() == content
    (body,) = requests_with(bot, "ATTACHED")
    assert "uploads/scores.csv" in last_user_text(body)


async def test_file_only_message_is_a_prompt(bot):
    ts, _ = await start_thread(bot, "hi")
    file = bot.slack.add_file("notes.txt", b"some notes\n", ALICE)
    reply = await follow_up(bot, ts, "", files=[file])
    assert ":white_check_mark:" in visible_text(reply)
    sandbox_id = await sandbox_of(bot, ts)
    assert (bot.daytona.sandbox(sandbox_id).home / "uploads" / "notes.txt").read_bytes() == b"some notes\n"
    assert requests_with(bot, "uploads/notes.txt")


async def test_file_command_posts_a_sandbox_file(bot):
    ts, _ = await start_thread(bot, "make a report")
    sandbox_id = await sandbox_of(bot, ts)
    report = bot.daytona.sandbox(sandbox_id).home / "out" / "report.md"
    report.parent.mkdir(parents=True)
    report.write_bytes(b"# Report\nall good\n")

    after = await bot.slack.post_message(ALICE, CHANNEL, "file out/report.md", thread_ts=ts)

    posted = await bot.slack.wait_for(
        lambda: next((m for m in bot_replies(bot, ts, after) if m.files), None), timeout=RUN_TIMEOUT)
    (meta,) = posted.files
    assert meta["name"] == "report.md"
    assert bot.slack.file_content(meta["id"]) == b"# Report\nall good\n"

    after = await bot.slack.post_message(ALICE, CHANNEL, "file nope/missing.txt", thread_ts=ts)
    missing = await said(bot, ts, "nope/missing.txt", after=after)
    assert "no file" in visible_text(missing).lower() and not missing.files
    # Neither command was a prompt.
    await wait_run_states(bot, ts, ["done"])


# -- 4. reaper -----------------------------------------------------------------------------------


async def test_reaper_deletes_idle_sandbox_and_next_message_starts_fresh(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2, retention=0)
    ts, _ = await start_thread(bot_env, "remember OSPREY")
    first = await sandbox_of(bot_env, ts)

    notice = await said(bot_env, ts, ":zzz:")
    assert "earlier context" in visible_text(notice)
    assert deleted(bot_env, first)
    session = await session_row(bot_env, ts)
    assert session.sandbox_id is None and session.context_note == "reaped" and session.claude_session_id is None

    reply = await follow_up(bot_env, ts, "which bird? AFTERREAP")
    text = visible_text(reply)
    assert ":white_check_mark:" in text and "earlier context is gone" in text
    second = await sandbox_of(bot_env, ts)
    assert second != first
    (body,) = requests_with(bot_env, "AFTERREAP")
    assert user_prompts(body) == ["which bird? AFTERREAP"]


async def test_reaper_never_reaps_a_running_thread(bot_env):
    await bot_env.start(idle_timeout=1, reap_interval=0.2, retention=0)
    ts, reply, sandbox_id = await hanging_run(bot_env, None, "very long task")

    await asyncio.sleep(2.5)  # more than idle_timeout + several sweeps

    assert sandbox_id in bot_env.daytona.sandboxes
    assert claude_processes(bot_env, sandbox_id)
    assert has_stop_button(reply)
    assert not any(":zzz:" in visible_text(m) for m in bot_replies(bot_env, ts))
    assert (await session_row(bot_env, ts)).sandbox_id == sandbox_id


async def test_reaper_deletes_orphans_but_not_known_sandboxes(bot_env):
    # Created directly with the SDK, unknown to SQLite: left behind, e.g., by a crash mid-creation.
    async with AsyncDaytona(DaytonaConfig(api_key=bot_env.daytona.api_key,
                                          api_url=bot_env.daytona.api_url)) as daytona:
        orphan = await daytona.create(CreateSandboxFromSnapshotParams(
            snapshot="daytona-small",
            labels={"app": "maison-slack", "maison-instance": "default", "maison-thread": "C0X-1.2"}))
        other_app = await daytona.create(CreateSandboxFromSnapshotParams(
            snapshot="daytona-small", labels={"app": "something-else"}))
        other_instance = await daytona.create(CreateSandboxFromSnapshotParams(
            snapshot="daytona-small",
            labels={"app": "maison-slack", "maison-instance": "staging", "maison-thread": "C0X-1.3"}))
    await bot_env.start(idle_timeout=3600, reap_interval=0.2)
    ts, _ = await start_thread(bot_env, "hello")  # created while the reaper sweeps
    known = await sandbox_of(bot_env, ts)

    await bot_env.slack.wait_for(lambda: deleted(bot_env, orphan.id), timeout=10)
    await asyncio.sleep(0.6)  # a few more sweeps
    assert not deleted(bot_env, known)
    assert not deleted(bot_env, other_app.id)
    assert not deleted(bot_env, other_instance.id)
    # The thread is untouched by the sweeps: it still answers in its sandbox.
    await follow_up(bot_env, ts, "still fine?")
    assert await sandbox_of(bot_env, ts) == known


# -- 5. restart ----------------------------------------------------------------------------------


async def test_restart_reuses_the_sandbox_and_conversation(bot):
    ts, _ = await start_thread(bot, "remember HERON please")
    sandbox_id = await sandbox_of(bot, ts)

    await bot.restart()

    reply = await follow_up(bot, ts, "what did I ask? AFTERRESTART")
    assert ":white_check_mark:" in visible_text(reply)
    assert "earlier context" not in visible_text(reply)
    assert await sandbox_of(bot, ts) == sandbox_id
    assert list(bot.daytona.sandboxes) == [sandbox_id]
    (body,) = requests_with(bot, "AFTERRESTART")
    assert user_prompts(body)[0] == "remember HERON please"


async def test_auto_stopped_sandbox_is_started_again_after_restart(bot):
    ts, _ = await start_thread(bot, "remember EGRET")
    sandbox_id = await sandbox_of(bot, ts)
    await bot.restart()
    bot.daytona.auto_stop(sandbox_id)
    assert bot.daytona.sandbox(sandbox_id).state == "stopped"

    reply = await follow_up(bot, ts, "still there? AFTERSTOP")

    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    assert bot.daytona.sandbox(sandbox_id).state == "started"
    assert await sandbox_of(bot, ts) == sandbox_id
    (body,) = requests_with(bot, "AFTERSTOP")
    assert user_prompts(body)[0] == "remember EGRET"


async def test_auto_stopped_sandbox_is_started_again_without_restart(bot):
    ts, _ = await start_thread(bot, "remember IBIS")
    sandbox_id = await sandbox_of(bot, ts)
    bot.daytona.auto_stop(sandbox_id)

    reply = await follow_up(bot, ts, "still there? STOPPEDLIVE")

    assert ":white_check_mark:" in visible_text(reply), visible_text(reply)
    assert bot.daytona.sandbox(sandbox_id).state == "started"
    assert await sandbox_of(bot, ts) == sandbox_id
    (body,) = requests_with(bot, "STOPPEDLIVE")
    assert user_prompts(body)[0] == "remember IBIS"


async def test_sandbox_deleted_behind_the_bots_back_after_restart(bot):
    ts, _ = await start_thread(bot, "remember CRANE")
    sandbox_id = await sandbox_of(bot, ts)
    await bot.restart()
    bot.daytona.delete_behind_back(sandbox_id)

    reply = await follow_up(bot, ts, "hello again GONEAFTER")

    text = visible_text(reply)
    assert ":white_check_mark:" in text and "earlier context is gone" in text, text
    new = await sandbox_of(bot, ts)
    assert new != sandbox_id and new in bot.daytona.sandboxes
    (body,) = requests_with(bot, "GONEAFTER")
    assert user_prompts(body) == ["hello again GONEAFTER"]


async def test_sandbox_deleted_behind_the_bots_back_without_restart(bot):
    ts, _ = await start_thread(bot, "remember STORK")
    sandbox_id = await sandbox_of(bot, ts)
    bot.daytona.delete_behind_back(sandbox_id)

    reply = await follow_up(bot, ts, "hello again GONELIVE")

    text = visible_text(reply)
    assert ":white_check_mark:" in text and "earlier context is gone" in text, text
    new = await sandbox_of(bot, ts)
    assert new != sandbox_id and new in bot.daytona.sandboxes
    (body,) = requests_with(bot, "GONELIVE")
    assert user_prompts(body) == ["hello again GONELIVE"]


async def test_run_cut_off_by_a_restart_shows_as_interrupted(bot):
    ts, reply, sandbox_id = await hanging_run(bot, None, "endless work")

    await bot.stop()

    text = visible_text(reply)
    assert not has_stop_button(reply) and "Thinking" not in text and "interrupted" in text.lower(), text
    assert claude_processes(bot, sandbox_id) == []
    assert await run_states(bot, ts) == ["interrupted"]

    await bot.start()
    bot.anthropic.responder = lambda body: Turn([Text("Resumed fine.")])
    after = await follow_up(bot, ts, "try again")
    assert "Resumed fine." in visible_text(after)
    await wait_run_states(bot, ts, ["interrupted", "done"])


async def test_run_left_running_by_a_crash_is_marked_interrupted_on_start(bot_env):
    """A crash leaves a "running" row and a placeholder with a Stop button; startup repairs both."""
    await bot_env.start()
    ts, reply, sandbox_id = await hanging_run(bot_env, None, "crash me")
    # Simulate the crash's leftovers: the process dies without updating Slack or SQLite.
    app = bot_env.app
    await app.handler.close_async()
    await app.reaper.stop()
    async with store(bot_env) as db:
        (run,) = await db.runs(CHANNEL, ts)
    snapshot = list(reply.blocks)
    await app.conversations.close()
    await app.sandboxes.close()
    await app.store.close()
    bot_env.app = None
    # Put back what a crashed bot would have left behind.
    reply.blocks = snapshot
    with sqlite3.connect(bot_env.db_path) as db:
        db.execute("UPDATE runs SET state = 'running', error = NULL WHERE id = ?", (run.id,))

    await bot_env.start()

    fixed = await bot_env.slack.wait_for(lambda: not has_stop_button(reply) and reply, timeout=10)
    assert "interrupted" in visible_text(fixed).lower()
    assert await run_states(bot_env, ts) == ["interrupted"]


# -- 6. SQLite ------------------------------------------------------------------------------------


async def test_database_schema_version_and_wal(bot):
    await start_thread(bot, "hello")
    with sqlite3.connect(bot.db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS) >= 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0].lower() == "wal"
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert {"sessions", "runs", "handled_events"} <= tables
    # Re-opening (a restart) keeps the version and does not re-run migrations.
    await bot.restart()
    with sqlite3.connect(bot.db_path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_sandbox_creation_failure_leaves_consistent_rows(bot):
    bot.daytona.create_fails(500)
    ts = await bot.slack.mention(ALICE, CHANNEL, "this will fail")

    reply = await final_reply(bot, ts)

    assert ":warning:" in visible_text(reply)
    await wait_run_states(bot, ts, ["failed"])
    session = await session_row(bot, ts)
    assert session is not None and session.sandbox_id is None and session.claude_session_id is None
    assert bot.daytona.sandboxes == {}
    with sqlite3.connect(bot.db_path) as db:
        (error, finished) = db.execute("SELECT error, finished_at FROM runs").fetchone()
    assert error and finished is not None

    # The next message in the thread works.
    again = await follow_up(bot, ts, "try again please")
    assert ":white_check_mark:" in visible_text(again)
    assert await sandbox_of(bot, ts) in bot.daytona.sandboxes
    await wait_run_states(bot, ts, ["failed", "done"])
