"""The warm pool (issue 10, item 2): `MAISON_WARM_POOL=N` started sandboxes wait, made like a
thread's; a new thread takes one instead of creating, and the pool refills in the background.
Pool members are never taken for orphans, show in `/maison status`, and are deleted on a clean
shutdown (a crash leaves them for the next start to take back). Through the real bot, slack-bolt,
the daytona SDK and Claude Code against the doubles.
"""

from __future__ import annotations

import asyncio

from tests.bot_harness import ALICE, CHANNEL, BotEnv, bot_env  # noqa: F401
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import deleted, final_reply, sandbox_of, start_thread

POOL = "maison-pool"
THREAD = "maison-thread"


def pool_members(env: BotEnv) -> list[str]:
    return sorted(sb.id for sb in env.daytona.sandboxes.values()
                  if sb.labels.get(POOL) and sb.state == "started")


async def full_pool(env: BotEnv, size: int, timeout: float = 20) -> list[str]:
    """The pool's members once the bot counts them ready (as `/maison status` says): Daytona
    shows a member started before the bot has checked its Claude Code."""
    def full() -> list[str] | None:
        ready = env.app is None or env.app.sandboxes.pool.ready == size
        return pool_members(env) if ready and len(pool_members(env)) == size else None
    return await env.slack.wait_for(full, timeout=timeout)


async def test_a_new_thread_takes_a_ready_sandbox_and_the_pool_refills(bot_env):
    await bot_env.start(warm_pool=2, reap_interval=0.2)
    ready = await full_pool(bot_env, 2)
    # Made like a thread's sandbox: same snapshot, Secrets, and the bot's instance label.
    member = bot_env.daytona.sandbox(ready[0])
    assert member.labels.get("maison-instance") == "default" and member.secrets
    await asyncio.sleep(0.6)  # sweeps of the reaper: members are not orphans
    assert pool_members(bot_env) == ready

    ts, reply = await start_thread(bot_env, "quick one")
    assert ":white_check_mark:" in visible_text(reply)
    taken = await sandbox_of(bot_env, ts)
    assert taken in ready
    assert bot_env.daytona.sandbox(taken).labels.get(THREAD) == f"{CHANNEL}-{ts}"
    assert not bot_env.daytona.sandbox(taken).labels.get(POOL)
    refilled = await full_pool(bot_env, 2)
    assert taken not in refilled and set(ready) - {taken} <= set(refilled)

    await bot_env.slack.slash_command(ALICE, CHANNEL, "status")
    status = await bot_env.slack.wait_for(
        lambda: [e for e in bot_env.slack.ephemerals(CHANNEL, ALICE) if "Maison status" in e.text], timeout=10)
    assert "Warm pool: 2 of 2" in status[0].text

    await bot_env.stop()  # a clean shutdown deletes the pool, not the thread's sandbox
    assert all(deleted(bot_env, sid) for sid in refilled)
    assert not deleted(bot_env, taken)


async def test_two_threads_at_once_with_one_ready_sandbox(bot_env):
    """One member, two mentions together: one thread takes it, the other gets a new sandbox;
    both are answered, in different sandboxes."""
    await bot_env.start(warm_pool=1)
    (ready,) = await full_pool(bot_env, 1)
    first, second = await asyncio.gather(bot_env.slack.mention(ALICE, CHANNEL, "one"),
                                         bot_env.slack.mention(ALICE, CHANNEL, "two"))
    for ts in (first, second):
        assert ":white_check_mark:" in visible_text(await final_reply(bot_env, ts))
    sandboxes = {await sandbox_of(bot_env, first), await sandbox_of(bot_env, second)}
    assert len(sandboxes) == 2 and ready in sandboxes


async def test_pool_members_left_by_a_sigkill_are_taken_back_at_start(bot_env, monkeypatch):
    monkeypatch.setenv("MAISON_WARM_POOL", "2")
    async with bot_env.process():  # the bot as a real process, SIGKILLed at the end
        ready = await full_pool(bot_env, 2)
    await bot_env.start(warm_pool=2, reap_interval=0.2)
    await asyncio.sleep(0.6)  # sweeps of the reaper and the pool's refill
    assert pool_members(bot_env) == ready  # taken back, not deleted as orphans, none made


async def test_a_member_stopped_by_daytona_is_not_handed_out(bot_env):
    await bot_env.start(warm_pool=1)
    (ready,) = await full_pool(bot_env, 1)
    bot_env.daytona.auto_stop(ready)
    ts, reply = await start_thread(bot_env, "after a long quiet night")
    assert ":white_check_mark:" in visible_text(reply)
    assert await sandbox_of(bot_env, ts) != ready
    await bot_env.slack.wait_for(lambda: deleted(bot_env, ready), timeout=10)
