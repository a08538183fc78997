"""What a thread gets out of its sandbox besides files (issue 10, items 4 and 5): `preview <port>`
posts a signed, expiring link to a server running in the sandbox; `fork` copies the thread —
sandbox files and Claude's conversation — into a new thread. Through the real bot, slack-bolt,
the daytona SDK and Claude Code against the doubles (the Daytona double signs and proxies
preview links, and forks sandboxes by copying them).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import sys
from collections.abc import AsyncIterator

import aiohttp

from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import user_prompts
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import final_reply, requests_with, said, sandbox_of, session_row, start_thread

FORK = r"^/api/sandbox/[^/]+/fork$"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.asynccontextmanager
async def web_server(env: BotEnv, sandbox_id: str, port: int) -> AsyncIterator[None]:
    """A dev server in the sandbox, as Claude would start one: serving its work dir on `port`."""
    home = env.daytona.sandbox(sandbox_id).home
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", cwd=home,
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
    try:
        for _ in range(100):
            with contextlib.suppress(OSError):
                _, writer = await asyncio.open_connection("127.0.0.1", port)
                writer.close()
                break
            await asyncio.sleep(0.05)
        yield
    finally:
        process.kill()
        await process.wait()


def link_in(text: str) -> str:
    match = re.search(r"<(http[^|>]+)\|Preview of port", text)
    assert match, text
    return match.group(1)


async def test_preview_links_to_a_server_in_the_sandbox_and_expires(bot_env):
    await bot_env.start(preview_seconds=3)
    ts, _ = await start_thread(bot_env, "make a page")
    sandbox_id = await sandbox_of(bot_env, ts)
    (bot_env.daytona.sandbox(sandbox_id).home / "index.html").write_text("<h1>PREVIEWED PAGE</h1>")
    port = free_port()
    async with web_server(bot_env, sandbox_id, port):
        after = await bot_env.slack.post_message(BOB, CHANNEL, f"preview {port}", thread_ts=ts)
        notice = await said(bot_env, ts, "Preview of port", after=after)
        url = link_in(notice.text)
        assert "anyone who has it can open the page" in visible_text(notice)
        async with aiohttp.ClientSession() as http:
            async with http.get(url) as response:
                assert response.status == 200 and "PREVIEWED PAGE" in await response.text()
            await asyncio.sleep(3.5)
            # An expired link sends the visitor to Daytona's login (../shared/reference/daytona.md §19).
            async with http.get(url, allow_redirects=False) as response:
                assert response.status == 307, "the link still works after it expired"


async def test_preview_of_a_port_where_nothing_listens_says_so(bot):
    ts, _ = await start_thread(bot, "hello")
    port = free_port()
    after = await bot.slack.post_message(ALICE, CHANNEL, f"preview {port}", thread_ts=ts)
    notice = await said(bot, ts, f"Nothing listens on port {port}", after=after)
    assert "Preview of port" not in visible_text(notice)


async def test_fork_copies_the_sandbox_and_the_conversation_into_a_new_thread(bot):
    ts, _ = await start_thread(bot, "remember CORMORANT")
    original = await sandbox_of(bot, ts)
    (bot.daytona.sandbox(original).home / "plan.md").write_text("step 1")

    after = await bot.slack.post_message(BOB, CHANNEL, "fork", thread_ts=ts)
    told = await said(bot, ts, "forked this thread", after=after)
    parent = await bot.slack.wait_for(lambda: next((m for m in bot.slack.messages(CHANNEL)
                                                   if m.is_bot and "forked" in visible_text(m)), None), timeout=10)
    assert f"<@{BOB}>" in visible_text(parent) and f"<@{BOB}>" in visible_text(told)
    copy = await sandbox_of(bot, parent.ts)
    assert copy != original
    assert (bot.daytona.sandbox(copy).home / "plan.md").read_text() == "step 1"
    assert bot.daytona.sandbox(copy).labels.get("maison-thread") == f"{CHANNEL}-{parent.ts}"
    assert (await session_row(bot, parent.ts)).started_by == BOB

    # The copy goes on with the original's conversation; the two are independent from here.
    reply = await final_reply(bot, parent.ts, after=await bot.slack.post_message(
        BOB, CHANNEL, "in the fork FORKDIRECTION", thread_ts=parent.ts))
    assert ":white_check_mark:" in visible_text(reply)
    (body,) = requests_with(bot, "FORKDIRECTION")
    assert user_prompts(body)[0] == "remember CORMORANT"
    back = await final_reply(bot, ts, after=await bot.slack.post_message(
        ALICE, CHANNEL, "in the original ORIGINALDIRECTION", thread_ts=ts))
    assert ":white_check_mark:" in visible_text(back)
    (body,) = requests_with(bot, "ORIGINALDIRECTION")
    assert "FORKDIRECTION" not in " ".join(user_prompts(body))
    assert await sandbox_of(bot, ts) == original


async def test_a_fork_daytona_refuses_is_explained_and_leaves_no_thread(bot):
    ts, _ = await start_thread(bot, "hello")
    bot.daytona.inject("POST", FORK, 422, body={"statusCode": 422, "message": "Forking is not supported for this "
                                                "sandbox", "error": "Unprocessable Entity"})
    after = await bot.slack.post_message(ALICE, CHANNEL, "fork", thread_ts=ts)
    notice = await said(bot, ts, "could not fork", after=after)
    assert "Forking is not supported" in visible_text(notice)
    assert not [m for m in bot.slack.messages(CHANNEL) if m.is_bot and "forked" in visible_text(m)]
