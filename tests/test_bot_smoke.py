"""Smoke test of the bot harness: a mention gets a streamed answer in its thread."""

from __future__ import annotations

from tests.bot_harness import ALICE, CHANNEL, bot, bot_env  # noqa: F401
from tests.doubles.slack import visible_text


async def test_mention_gets_an_answer(bot):
    ts = await bot.slack.mention(ALICE, CHANNEL, f"<@{bot.slack.bot_user_id}> say hello")

    def answered():
        replies = bot.slack.thread(CHANNEL, ts)[1:]
        return replies and "Hello from the fake Anthropic server." in visible_text(replies[0]) and not any(
            b.get("type") == "actions" for b in replies[0].blocks)

    await bot.slack.wait_for(answered, timeout=30)
