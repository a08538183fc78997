"""Acceptance tests of conversations with the bot, driven as Slack would drive it.

The real bot runs in-process against the Slack, Daytona and Anthropic doubles (the real
Claude Code CLI runs in the Daytona double's sandboxes). The tests assert what people in
Slack would see (thread messages and their edit history, reactions, ephemerals), plus the
SQLite rows and the doubles' state.
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from maison_slack.slack.bot import HELP, REFUSAL
from maison_slack.slack.config import load_settings
from maison_slack.storage import LIVE_STATES
from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import HELLO_TEXT, Text, ToolUse, Turn, last_user_text, scripted, user_prompts
from tests.doubles.slack import Message, SlackDouble

FOOTER = re.compile(r":white_check_mark: \d+(\.\d)?s · 1 turn · \$\d+\.\d{2,4}")
BLOCK_ERRORS = ("msg_too_long", "invalid_blocks", "msg_blocks_too_long", "invalid_blocks_format")


# -- what a user sees ------------------------------------------------------------------------


def is_running(msg: Message | dict[str, Any]) -> bool:
    """The message still shows the Stop button."""
    blocks = msg.blocks if isinstance(msg, Message) else msg["blocks"]
    return any(b.get("type") == "actions" for b in blocks)


def markdown(version: Message | dict[str, Any]) -> str:
    blocks = version.blocks if isinstance(version, Message) else version["blocks"]
    return "".join(b.get("text", "") for b in blocks if b.get("type") == "markdown")


def context(version: Message | dict[str, Any]) -> str:
    blocks = version.blocks if isinstance(version, Message) else version["blocks"]
    return " ".join(e.get("text", "") for b in blocks if b.get("type") == "context" for e in b["elements"])


def versions(msg: Message) -> list[dict[str, Any]]:
    """Every version of a message people could have seen, oldest first."""
    return [*msg.edits, msg.snapshot()]


def everything_shown(slack: SlackDouble) -> str:
    """All text of every version of every message and ephemeral, as one string."""
    parts: list[str] = []
    for msg in slack.messages(CHANNEL):
        parts += [repr(version) for version in versions(msg)]
    parts += [repr(e) for e in slack.ephemerals()]
    parts += [repr(r.payload) for r in slack.responses]
    return "\n".join(parts)


def bot_replies(slack: SlackDouble, thread_ts: str, channel: str = CHANNEL) -> list[Message]:
    return [m for m in slack.thread(channel, thread_ts) if m.is_bot and m.ts != thread_ts]


def mention_text(slack: SlackDouble, text: str) -> str:
    return f"<@{slack.bot_user_id}> {text}"


async def wait_settled(bot: BotEnv, thread_ts: str, runs: int = 1, timeout: float = 30,
                       channel: str = CHANNEL) -> list[Message]:
    """Wait until the thread has `runs` finished runs and no reply shows a Stop button."""
    assert bot.app is not None

    async def settled() -> list[Message] | None:
        rows = await bot.app.store.runs(channel, thread_ts)
        replies = bot_replies(bot.slack, thread_ts, channel)
        if len(rows) >= runs and all(r.state not in LIVE_STATES for r in rows) and replies \
                and not any(is_running(m) for m in replies):
            return replies
        return None

    return await bot.slack.wait_for(settled, timeout=timeout)


def prompt_requests(bot: BotEnv) -> list[Any]:
    return [r for r in bot.anthropic.requests if r.body and r.body.get("messages")]


# -- 1. streaming a slow answer --------------------------------------------------------------


async def test_mention_streams_a_slow_answer_into_the_placeholder(bot):
    answer = " ".join(f"w{i:04d}" for i in range(200))  # 1,199 chars: 60 frames of 20, ~3 s
    bot.anthropic.responder = lambda body: Turn([Text(answer)], delay=0.05, chunk_size=20)

    started = time.monotonic()
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "write a long answer"))
    await bot.slack.wait_for(lambda: bot_replies(bot.slack, ts), timeout=1.0)
    placeholder = bot_replies(bot.slack, ts)[0]
    assert time.monotonic() - started < 1.0
    assert is_running(placeholder)

    # Edits land while Claude is still writing, not only at the end.
    def streaming() -> bool:
        partial = [v for v in versions(placeholder) if 0 < len(markdown(v)) < len(answer)]
        return is_running(placeholder) and len(partial) >= 2
    await bot.slack.wait_for(streaming, timeout=15)

    replies = await wait_settled(bot, ts)
    assert replies == [placeholder]  # one message in the thread, edited in place
    assert markdown(placeholder) == answer
    # Every version shows a growing prefix of the answer, in order.
    shown = [markdown(v) for v in versions(placeholder)]
    assert all(answer.startswith(text) for text in shown)
    assert [len(t) for t in shown] == sorted(len(t) for t in shown)
    assert len({t for t in shown if 0 < len(t) < len(answer)}) >= 2
    assert FOOTER.search(context(placeholder)), context(placeholder)
    assert not is_running(placeholder)

    # Both envelopes of the mention (app_mention + message) were acked at once.
    envelopes = [e for e in bot.slack.envelopes.values() if e.payload.get("event", {}).get("ts") == ts]
    assert len(envelopes) == 2
    for envelope in envelopes:
        ack = bot.slack.acks[envelope.envelope_id]
        assert ack.latency < 1.0 and ack.retry_attempt == 0
    runs = await bot.app.store.runs(CHANNEL, ts)
    assert [(r.state, r.reply_ts) for r in runs] == [("done", placeholder.ts)]


async def test_tool_status_and_fallback_text_cannot_ping_the_channel(bot):
    command = "echo '<!channel> a&b' > note.txt; sleep 1"
    bot.anthropic.responder = scripted(
        Turn([Text("Telling <!channel> & co."), ToolUse("Bash", {"command": command})]),
        Turn([Text("Done: <!here> is escaped too.")]),
    )
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "note it"))
    (reply,) = await wait_settled(bot, ts)
    statuses = [context(v) for v in versions(reply)]
    assert "⏳ Running `echo '&lt;!channel&gt; a&amp;b' &gt; note.txt; sleep 1`" in statuses
    assert not any("<!" in s for s in statuses)
    # The notification text (mrkdwn) shows no broadcast either.
    assert all("<!" not in v["text"] for v in versions(reply))
    assert "Done: @here is escaped too." in reply.text
    assert markdown(reply).endswith("Done: @here is escaped too.")  # no broadcast in the markdown block either


async def test_tool_calls_show_as_a_task_list_that_completes_or_fails(bot):
    """Under the text: each tool call with ⏳ while it runs, then ✓ or ✗ (not only the last one)."""
    bot.anthropic.responder = scripted(
        Turn([Text("Checking."), ToolUse("Bash", {"command": "echo fine > ok.txt; sleep 1"})]),
        Turn([ToolUse("Bash", {"command": "cat missing-file.txt"})]),
        Turn([Text("One worked, one did not.")]),
    )
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "try two commands"))
    (reply,) = await wait_settled(bot, ts)
    shown = [context(v) for v in versions(reply)]
    assert any("⏳ Running `echo fine &gt; ok.txt; sleep 1`" in s for s in shown), shown
    final = context(reply)
    assert "✓ Running `echo fine &gt; ok.txt; sleep 1`" in final, final
    assert "✗ Running `cat missing-file.txt`" in final, final
    assert markdown(reply).endswith("One worked, one did not.")


# -- 2. a thread is one conversation in one sandbox ------------------------------------------


async def test_follow_up_continues_in_the_same_sandbox_and_threads_are_separate(bot):
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "remember the word papaya"))
    await wait_settled(bot, ts)
    assert len(bot.daytona.sandboxes) == 1

    await bot.slack.post_message(ALICE, CHANNEL, "RECALL what did I ask?", thread_ts=ts)  # no mention
    replies = await wait_settled(bot, ts, runs=2)
    assert len(replies) == 2
    assert "I was sent 1 earlier user prompts" in markdown(replies[1])
    assert "papaya" in markdown(replies[1])
    assert len(bot.daytona.sandboxes) == 1
    prompts = user_prompts(prompt_requests(bot)[-1].body)
    assert len(prompts) == 2 and "remember the word papaya" in prompts[0] and "RECALL" in prompts[1]

    other = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "RECALL anything?"))
    replies = await wait_settled(bot, other)
    assert "I was sent 0 earlier user prompts" in markdown(replies[0])
    assert len(bot.daytona.sandboxes) == 2
    first, second = [await bot.app.store.get_session(CHANNEL, t) for t in (ts, other)]
    assert first.sandbox_id and second.sandbox_id and first.sandbox_id != second.sandbox_id
    assert set(bot.daytona.sandboxes) == {first.sandbox_id, second.sandbox_id}


# -- 3. two people, one thread ---------------------------------------------------------------


async def test_two_people_in_a_thread_are_attributed_and_serialized(bot):
    slow = " ".join(f"a{i:03d}" for i in range(120))  # 60 frames of 10 chars, ~2 s
    seen: list[tuple[str, list[bool]]] = []  # (prompt, whether each earlier reply still ran)
    ts = ""

    def responder(body: dict[str, Any]) -> Turn:
        prompt = last_user_text(body)
        seen.append((prompt, [is_running(m) for m in bot_replies(bot.slack, ts)[:-1]]))
        if "first question" in prompt:
            return Turn([Text(slow)], delay=0.03, chunk_size=10)
        return Turn([Text("Answer for Bob." if "second" in prompt else "Answer for Alice.")])

    bot.anthropic.responder = responder
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "first question"))
    await bot.slack.wait_for(lambda: seen, timeout=15)  # Alice's run is streaming
    (first_reply,) = bot_replies(bot.slack, ts)

    bob_ts = await bot.slack.post_message(BOB, CHANNEL, "second question", thread_ts=ts)
    bob_message = bot.slack.message(CHANNEL, bob_ts)
    await bot.slack.wait_for(lambda: "hourglass_flowing_sand" in bob_message.reactions, timeout=5)
    alice_ts = await bot.slack.post_message(ALICE, CHANNEL, "third question", thread_ts=ts)
    alice_message = bot.slack.message(CHANNEL, alice_ts)
    await bot.slack.wait_for(lambda: "hourglass_flowing_sand" in alice_message.reactions, timeout=5)
    assert is_running(first_reply) and len(seen) == 1  # both wait for Alice's first run

    replies = await wait_settled(bot, ts, runs=3)
    assert [prompt.rsplit("\n", 1)[-1] for prompt, _ in seen] == ["first question", "second question",
                                                                    "third question"]
    assert [running for _, running in seen] == [[], [False], [False, False]], "runs overlapped"

    (first, _), (second, _), (third, _) = seen
    assert first == "first question"  # Alice alone: no name needed
    assert "Message from bob (<@U0BOB>)" in second and "only alice (<@U0ALICE>)" in second
    assert third.startswith("Message from alice (<@U0ALICE>)") and "Until now" not in third
    # Claude sees the whole shared conversation, each message attributed.
    assert user_prompts(prompt_requests(bot)[-1].body) == [first, second, third]

    thread = bot.slack.thread(CHANNEL, ts)
    assert [m.ts for m in thread] == [ts, first_reply.ts, bob_ts, alice_ts, replies[1].ts, replies[2].ts]
    assert [markdown(m) for m in replies] == [slow, "Answer for Bob.", "Answer for Alice."]
    assert all(FOOTER.search(context(m)) for m in replies)
    assert "hourglass_flowing_sand" not in bob_message.reactions | alice_message.reactions
    assert len(bot.daytona.sandboxes) == 1


# -- 4. /maison ------------------------------------------------------------------------------


async def test_slash_command_starts_lists_helps_and_reports_status(bot):
    ack = await bot.slack.slash_command(ALICE, CHANNEL, "build the thing please\nwith tests")
    assert ack.latency < 3.0 and not ack.late

    def posted() -> list[Message]:
        return [m for m in bot.slack.messages(CHANNEL) if m.is_bot and not m.is_reply]
    await bot.slack.wait_for(posted, timeout=5)
    (root,) = posted()
    assert root.text == f"<@{ALICE}> asked Maison:\n>build the thing please\n>with tests"  # all quoted
    replies = await wait_settled(bot, root.ts)
    assert markdown(replies[0]) == HELLO_TEXT and FOOTER.search(context(replies[0]))
    assert last_user_text(prompt_requests(bot)[-1].body) == "build the thing please\nwith tests"
    assert (await bot.app.store.get_session(CHANNEL, root.ts)).started_by == ALICE

    ack = await bot.slack.slash_command(ALICE, CHANNEL, "list")
    assert ack.latency < 3.0 and not ack.late
    assert ack.payload and ack.payload.get("response_type") == "ephemeral"
    assert root.ts.replace(".", "") in ack.payload["text"] and f"<@{ALICE}>" in ack.payload["text"]
    assert any(root.ts.replace(".", "") in e.text for e in bot.slack.ephemerals(CHANNEL, ALICE))

    ack = await bot.slack.slash_command(ALICE, CHANNEL, "help")
    assert ack.latency < 3.0 and ack.payload and ack.payload["text"] == HELP

    ack = await bot.slack.slash_command(ALICE, CHANNEL, "status")
    assert ack.latency < 3.0 and not ack.late
    status = await bot.slack.wait_for(
        lambda: [e for e in bot.slack.ephemerals(CHANNEL, ALICE) if "Maison status" in e.text], timeout=10)
    assert "1 session(s) with a sandbox" in status[0].text and "Sandboxes: 1 started" in status[0].text


# -- 5. exactly once -------------------------------------------------------------------------


async def test_duplicate_deliveries_start_exactly_one_run(bot):
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "only once please"))
    await bot.slack.wait_for(lambda: len(bot.slack.acks) >= 2, timeout=5)
    # Slack redelivers an envelope it thinks was lost: same event, retry_attempt 1.
    original = next(e for e in bot.slack.envelopes.values()
                    if e.payload.get("event", {}).get("ts") == ts and e.payload["event"]["type"] == "message")
    redelivered = bot.slack._enqueue("events_api", original.payload)  # sent once the loop turns
    bot.slack.envelopes[redelivered].retry_attempt = 1
    bot.slack.envelopes[redelivered].retry_reason = "timeout"
    await bot.slack.wait_acked(redelivered)
    frame = next(f for f in bot.slack.frames_sent if f["envelope_id"] == redelivered)
    assert frame["retry_attempt"] == 1 and frame["payload"]["event_id"] == original.payload["event_id"]
    await wait_settled(bot, ts)
    again = await bot.slack.send_envelope("events_api", original.payload)  # and after the run
    await bot.slack.wait_acked(again)
    await asyncio.sleep(1.0)  # time for a second run to show up, if there were one

    assert len(bot_replies(bot.slack, ts)) == 1
    assert len(prompt_requests(bot)) == 1
    assert len(await bot.app.store.runs(CHANNEL, ts)) == 1
    assert len(bot.daytona.sandboxes) == 1


# -- 6. long answers and rate limits ---------------------------------------------------------


def long_answer(chars: int) -> str:
    lines, n = [], 0
    while n < chars:
        line = f"Line {len(lines):05d}: the quick brown fox jumps over the lazy dog, again and again."
        if len(lines) % 10 == 9:
            line += "\n"  # paragraphs
        lines.append(line)
        n += len(line) + 1
    return "\n".join(lines)


async def test_60k_answer_lands_complete_across_messages(bot_env):
    # A Slack whose chat.update allowance is tiny, and a bot that edits faster than that.
    slack = await SlackDouble(rate_limits={"chat.update": 60}, burst=2).start()
    try:
        env = BotEnv(slack, bot_env.daytona, bot_env.anthropic, bot_env.db_path, settings=None)  # type: ignore[arg-type]
        env.settings = load_settings({**env.env(), "MAISON_EDITS_PER_MINUTE": "1000", "MAISON_EDIT_INTERVAL": "0.05"})
        answer = long_answer(60_000)
        env.anthropic.responder = lambda body: Turn([Text(answer)], delay=0.02, chunk_size=2_000)
        await env.start()
        try:
            ts = await slack.mention(ALICE, CHANNEL, mention_text(slack, "write a lot"))
            replies = await wait_settled(env, ts, timeout=60)
        finally:
            await env.stop()
    finally:
        await slack.stop()

    assert len(replies) >= 5
    assert [c.error for c in slack.calls if c.error in BLOCK_ERRORS] == []
    assert "chat.update" in slack.rate_limited  # 429s happened and were absorbed
    assert all(markdown(m) and len(markdown(m)) <= 12_000 for m in replies)
    assert all(len(m.text) <= 40_000 for m in replies)
    joined = "".join(markdown(m) for m in replies)
    assert re.sub(r"\s+", " ", joined).strip() == re.sub(r"\s+", " ", answer).strip()
    assert FOOTER.search(context(replies[-1]))
    assert not any(context(m) for m in replies[:-1])


# -- 7. failures are shown, and the next mention works --------------------------------------


async def test_errors_are_shown_and_the_next_mention_works(bot):
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "ERROR500 please"))
    (reply,) = await wait_settled(bot, ts)
    shown = markdown(reply)
    assert shown.startswith(":warning: Claude Code reported an error: API Error: 500 fake internal error"), shown
    assert shown.count("fake internal error") == 1  # said once, as the error
    assert (await bot.app.store.runs(CHANNEL, ts))[0].state == "failed"

    bot.daytona.create_fails(500)
    other = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "hello there"))
    (reply,) = await wait_settled(bot, other)
    assert markdown(reply).startswith(":warning: Creating a Daytona sandbox: Failed to create sandbox"), markdown(reply)
    assert (await bot.app.store.runs(CHANNEL, other))[0].state == "failed"
    assert (await bot.app.store.get_session(CHANNEL, other)).sandbox_id is None

    third = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "hello again"))
    (reply,) = await wait_settled(bot, third)
    assert markdown(reply) == HELLO_TEXT and FOOTER.search(context(reply))
    await bot.slack.post_message(ALICE, CHANNEL, "and now?", thread_ts=other)  # the failed thread retries
    replies = await wait_settled(bot, other, runs=2)
    assert markdown(replies[-1]) == HELLO_TEXT


# -- 8. secrets and access -------------------------------------------------------------------


async def test_the_anthropic_key_never_reaches_slack(bot):
    key = bot.anthropic.api_key
    assert key and len(key) >= 8
    prefix = "Here it is: "
    # The first frame stops inside the key and stays on screen for a while.
    text = f"{prefix}{key} and again `{key}`. Done."
    bot.anthropic.responder = lambda body: Turn([Text(text)], delay=0.5, chunk_size=len(prefix) + 8)
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "print your key"))
    (reply,) = await wait_settled(bot, ts)
    assert markdown(reply) == "Here it is: [redacted] and again `[redacted]`. Done."
    shown = everything_shown(bot.slack)
    assert key not in shown
    assert key[:8] not in shown, "a partial key was shown while streaming"


async def test_a_user_outside_the_allowed_list_is_refused(bot_env):
    await bot_env.start(allowed_users=frozenset({ALICE}))
    bot = bot_env
    ts = await bot.slack.mention(BOB, CHANNEL, mention_text(bot.slack, "let me in"))
    await bot.slack.wait_for(lambda: bot.slack.ephemerals(CHANNEL, BOB), timeout=5)
    await bot.slack.wait_for(lambda: len(bot.slack.acks) >= 2, timeout=5)
    (refusal,) = bot.slack.ephemerals(CHANNEL, BOB)
    assert refusal.text == REFUSAL
    assert bot_replies(bot.slack, ts) == []
    assert bot.daytona.sandboxes == {} and prompt_requests(bot) == []
    assert await bot.app.store.get_session(CHANNEL, ts) is None

    ack = await bot.slack.slash_command(BOB, CHANNEL, "do something")
    assert ack.payload and ack.payload["text"] == REFUSAL
    assert bot.daytona.sandboxes == {}

    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "hi"))  # Alice may
    (reply,) = await wait_settled(bot, ts)
    assert markdown(reply) == HELLO_TEXT


# -- 9. configuration ------------------------------------------------------------------------


def test_missing_configuration_lists_every_variable_and_exits_2(tmp_path: Path):
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "maison_slack"], env=env, cwd=Path(__file__).parent.parent,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    for name in ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DAYTONA_API_KEY", "ANTHROPIC_API_KEY"):
        assert name in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


async def test_feedback_buttons_under_every_final_answer_record_each_persons_vote(bot):
    ts = await bot.slack.mention(ALICE, CHANNEL, mention_text(bot.slack, "hello"))
    (reply,) = await wait_settled(bot, ts)
    assert [b["type"] for b in reply.blocks][-1] == "context_actions"

    (run,) = await bot.app.store.runs(CHANNEL, ts)

    async def recorded(votes: dict[str, str]) -> None:
        async def match() -> bool:
            return await bot.app.store.feedback(run.id) == votes
        await bot.slack.wait_for(match, timeout=10)

    await bot.slack.click_feedback(ALICE, CHANNEL, reply.ts, positive=True)
    await recorded({ALICE: "good"})
    await bot.slack.click_feedback(BOB, CHANNEL, reply.ts, positive=False)
    await bot.slack.click_feedback(ALICE, CHANNEL, reply.ts, positive=False)  # changed her mind
    await recorded({ALICE: "bad", BOB: "bad"})
    thanked = bot.slack.ephemerals(CHANNEL, BOB)
    assert thanked and "feedback" in thanked[-1].text
