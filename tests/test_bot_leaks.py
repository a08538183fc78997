"""Secrets stay out of Slack, and the bot token stays with Slack: leaks found, driven end to end.

Each test is a leak that was found in the real bot (real slack-bolt, daytona SDK and Claude Code
CLI against the doubles) and must not come back. The bots here keep Claude Code's credentials in
the sandbox's environment (`MAISON_KEY_IN_SANDBOX=env`), the worst case: whatever Claude runs can
print them, so only the bot's redaction stands between them and the channel.
"""

from __future__ import annotations

import base64
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest_asyncio
from aiohttp import web
from yarl import URL

from maison_slack.slack.attachments import Attachments
from tests.bot_harness import ALICE, CHANNEL, BotEnv, bot_env  # noqa: F401
from tests.doubles.anthropic import ApiError, Text, ToolUse, Turn, has_tool_result, scripted, tool_result_text
from tests.doubles.slack import visible_text
from tests.test_bot_conversation import context, everything_shown, markdown, versions, wait_settled
from tests.test_bot_lifecycle import RUN_TIMEOUT, bot_replies, final_reply, said, sandbox_of, start_thread

#: Long enough that a status line cut at 80 characters falls inside it.
KEY = "sk-ant-api03-Qx7vR2mP9tL4wK8zHc3nB6yD1fJ5gS0aE2uW7iO4pL9kM3xN8qT6rV1bZ5cY0dF-AAAA"


#: A complete broadcast or user-group mention, as Slack reads it.
BROADCAST = re.compile(r"<!(here|channel|everyone|subteam\^)[^<>]*>")


def shows_part_of(shown: str, secret: str, size: int = 10) -> bool:
    """Whether any `size` consecutive characters of `secret` are in `shown`."""
    return any(secret[i : i + size] in shown for i in range(len(secret) - size + 1))


async def start_leaky(env: BotEnv) -> BotEnv:
    """The bot with `KEY` as its Anthropic key, put into sandboxes' environment."""
    env.anthropic.api_key = KEY
    await env.start(anthropic_api_key=KEY, key_in_sandbox="env")
    return env


@pytest_asyncio.fixture
async def bot(bot_env: BotEnv) -> AsyncIterator[BotEnv]:
    yield await start_leaky(bot_env)


def echo_tool_output(body: dict) -> Turn:
    """Claude repeats what its tool printed, whole (as it may when asked to)."""
    return Turn([Text(tool_result_text(body))]) if has_tool_result(body) else Turn([Text("nothing ran")])


# -- files: any encoding ------------------------------------------------------------------------


async def posted_file(env: BotEnv, thread_ts: str, path: str) -> bytes:
    after = await env.slack.post_message(ALICE, CHANNEL, f"file {path}", thread_ts=thread_ts)
    posted = await env.slack.wait_for(
        lambda: next((m for m in bot_replies(env, thread_ts, after) if m.files), None), timeout=RUN_TIMEOUT)
    content = env.slack.file_content(posted.files[0]["id"])
    assert content is not None
    return content


async def test_file_command_masks_the_key_in_a_file_that_is_not_utf8(bot):
    ts, _ = await start_thread(bot, "make a key file")
    home = bot.daytona.sandbox(await sandbox_of(bot, ts)).home
    (home / "key.bin").write_bytes(b"\xff" + KEY.encode() + b"\n")

    content = await posted_file(bot, ts, "key.bin")

    assert content == b"\xff[redacted]\n"


async def test_file_command_masks_a_base64_encoded_key(bot):
    ts, _ = await start_thread(bot, "make an encoded key file")
    home = bot.daytona.sandbox(await sandbox_of(bot, ts)).home
    for offset in range(3):  # the key at each of base64's three alignments
        (home / f"env{offset}.b64").write_bytes(base64.b64encode(b"K" * offset + b"ANTHROPIC_API_KEY=" + KEY.encode()))

    for offset in range(3):
        content = await posted_file(bot, ts, f"env{offset}.b64")
        assert b"[redacted]" in content
        decoded = base64.b64decode(content.replace(b"[redacted]", b"") + b"===", validate=False)
        assert not shows_part_of(decoded.decode("latin-1"), KEY)


# -- forwarded Claude Code settings ----------------------------------------------------------------


async def test_forwarded_credentials_printed_by_claude_are_redacted(bot_env, monkeypatch):
    forwarded = {
        "ANTHROPIC_AUTH_TOKEN": "auth-token-Hj4kL9mN2pQ7rS1t",
        "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-Vw3xY8zA5bC0dE6f",
        "ANTHROPIC_CUSTOM_HEADERS": "X-Gateway-Key: gw-Gh2jK7lM4nP9qR3s\nX-Trace: on",
    }
    for name, value in forwarded.items():  # the bot forwards these from its own environment
        monkeypatch.setenv(name, value)
    bot = await start_leaky(bot_env)
    bot.anthropic.responder = scripted(
        Turn([ToolUse("Bash", {"command": "env | grep -E '^(ANTHROPIC|CLAUDE_CODE)_' | sort"})]),
        then=echo_tool_output,
    )

    ts = await bot.slack.mention(ALICE, CHANNEL, "show me your environment")
    (reply,) = await wait_settled(bot, ts)

    answer = markdown(reply)
    # The values reached the sandbox and Claude printed them: the bot masked every one.
    for line in ("ANTHROPIC_API_KEY=[redacted]", "ANTHROPIC_AUTH_TOKEN=[redacted]",
                 "ANTHROPIC_CUSTOM_HEADERS=X-Gateway-Key: [redacted]"):
        assert line in answer, answer
    # Claude Code keeps its OAuth token from the commands it runs; Claude may still write it.
    bot.anthropic.responder = lambda body: Turn([Text(f"The token is {forwarded['CLAUDE_CODE_OAUTH_TOKEN']}.")])
    after = await bot.slack.post_message(ALICE, CHANNEL, "and the OAuth token?", thread_ts=ts)
    assert markdown(await final_reply(bot, ts, after=after)) == "The token is [redacted]."
    shown = everything_shown(bot.slack)
    for secret in (KEY, "auth-token-Hj4kL9mN2pQ7rS1t", "sk-ant-oat01-Vw3xY8zA5bC0dE6f", "gw-Gh2jK7lM4nP9qR3s"):
        assert not shows_part_of(shown, secret, size=8), secret


# -- status lines --------------------------------------------------------------------------------


async def test_a_status_line_never_shows_part_of_a_long_key(bot):
    command = f"sleep 2; curl -s -H 'x-api-key: xxxxxxxxxxx{KEY}' http://127.0.0.1:9/ || true"
    bot.anthropic.responder = scripted(Turn([ToolUse("Bash", {"command": command})]), Turn([Text("Done.")]))

    ts = await bot.slack.mention(ALICE, CHANNEL, "call the API by hand")
    (reply,) = await wait_settled(bot, ts)

    statuses = [context(v) for v in versions(reply)]
    assert any("x-api-key: xxxxxxxxxxx[redacted]" in s for s in statuses), statuses
    assert not shows_part_of(everything_shown(bot.slack), KEY)


# -- the bot token goes to Slack only ---------------------------------------------------------------


@asynccontextmanager
async def foreign_host() -> AsyncIterator[tuple[str, list[dict[str, str]]]]:
    """A server that is not Slack; yields its base URL and the headers of every request it got."""
    seen: list[dict[str, str]] = []

    async def serve(request: web.Request) -> web.Response:
        seen.append(dict(request.headers))
        return web.Response(body=b"whatever you asked for")

    app = web.Application()
    app.router.add_get("/{path:.*}", serve)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", seen
    finally:
        await runner.cleanup()


async def test_an_attachment_linked_to_another_host_gets_no_token(bot):
    ts, _ = await start_thread(bot, "I will send you a file")
    async with foreign_host() as (base_url, seen):
        file = {**bot.slack.add_file("notes.txt", b"from Slack", ALICE)}
        # As an external file's url_private would: any host (../shared/reference/slack.md §17).
        file["url_private"] = file["url_private_download"] = f"{base_url}/files-pri/T0FAKE-F1/notes.txt"

        after = await bot.slack.post_message(ALICE, CHANNEL, "read the NOTES", thread_ts=ts, files=[file])
        reply = await final_reply(bot, ts, after=after)

        assert seen == [], f"the foreign host was asked for the file: {seen}"
        assert ":white_check_mark:" in visible_text(reply)  # the run went on without the file
        notice = await said(bot, ts, "Could not copy `notes.txt`", after=after)
        assert "not stored on Slack" in visible_text(notice)
    uploads = bot.daytona.sandbox(await sandbox_of(bot, ts)).home / "uploads"
    assert not (uploads / "notes.txt").exists()


def test_which_links_get_the_bot_token():
    attachments = Attachments("xoxb-token", "http://127.0.0.1:4000/api/")

    def gets_token(link: str) -> bool:
        return attachments.is_slack(URL(link))

    assert gets_token("https://files.slack.com/files-pri/T1-F1/a.txt")
    assert gets_token("https://files.slack-gov.com/files-pri/T1-F1/a.txt")
    assert gets_token("http://127.0.0.1:4000/files-pri/T1-F1/a.txt")  # the configured API's origin
    for link in ("http://files.slack.com/files-pri/T1-F1/a.txt",  # not https
                 "https://files.slack.com.evil.test/a.txt",
                 "https://evilslack.com/a.txt",
                 "https://files.slack.com@evil.test/a.txt",
                 "http://127.0.0.1:4001/files-pri/T1-F1/a.txt",  # same host, another server
                 "https://docs.google.com/document/d/1"):
        assert not gets_token(link), link


# -- broadcasts ---------------------------------------------------------------------------------------


async def test_the_maison_echo_does_not_ping_the_channel(bot):
    await bot.slack.slash_command(ALICE, CHANNEL, "<!channel> deploy is broken, ask <!subteam^S0OPS|@ops>")

    echo = await bot.slack.wait_for(
        lambda: next((m for m in bot.slack.messages(CHANNEL) if m.is_bot and "asked Maison" in m.text), None),
        timeout=RUN_TIMEOUT)
    assert not BROADCAST.search(echo.text)
    assert echo.text == f"<@{ALICE}> asked Maison:\n>@channel deploy is broken, ask @ops"
    await final_reply(bot, echo.ts)


async def test_claude_and_file_names_cannot_ping_the_channel(bot):
    bot.anthropic.responder = lambda body: Turn([Text("Telling <!channel>, <!here> and <!subteam^S0OPS|@ops>.")])
    ts = await bot.slack.mention(ALICE, CHANNEL, "tell everyone")
    (reply,) = await wait_settled(bot, ts)
    assert markdown(reply) == "Telling @channel, @here and @ops."

    # `file `<!channel>`` as typed in Slack (which escapes what people type) names a path that
    # the bot quotes back.
    after = await bot.slack.post_message(ALICE, CHANNEL, "file `&lt;!channel&gt;`", thread_ts=ts)
    notice = await said(bot, ts, "There is no file", after=after)
    assert not BROADCAST.search(notice.text)
    pings = [v for m in bot_replies(bot, ts) for v in versions(m) if BROADCAST.search(repr(v))]
    assert not pings, pings  # not even while the answer streamed in


# -- errors ---------------------------------------------------------------------------------------------


async def test_a_long_error_is_redacted_then_cut(bot):
    message = "upstream failure: " + "details " * 500 + f"key was {KEY} " + "end of the dump"
    bot.anthropic.responder = lambda body: ApiError(500, "api_error", message)

    ts = await bot.slack.mention(ALICE, CHANNEL, "fail loudly")
    (reply,) = await wait_settled(bot, ts)

    shown = markdown(reply)
    assert ":warning: Claude Code reported an error" in shown and "end of the dump" in shown
    assert len(shown) < 2000
    assert not shows_part_of(everything_shown(bot.slack), KEY)
