"""Native streaming replies: Slack's `chat.startStream` / `appendStream` / `stopStream`.

Acceptance tests driven through the real bot, slack-bolt, the daytona SDK and the real Claude
Code CLI against the doubles. `Settings.streaming` picks the surface: "auto" streams natively in
DMs and edits messages in channel threads, "native" streams everywhere, "edits" never streams.
A native reply posts no placeholder: a thread status (`assistant.threads.setStatus`) until the
first text or tool call, then one streamed message per run (a new one when Slack expired the
old one, or when the bot rolls over proactively), finished by `chat.stopStream` with a footer
and the feedback row. Rules of the Slack surface: ../shared/reference/slack.md §9 (methods,
chunks), §13 (expiry, who sees what, stop), §14 (chunk and block shapes), §15 (status), §16
(rate tiers).

Time is injected as in the other bot tests: answers that stream for seconds, a stream that
expires mid-answer, a 429 with Retry-After, a `chat.startStream` that takes 2 s, a person
pressing Slack's own Stop, two follow-ups at once. Assertions are on what each person saw
(`viewer_history`, `visible_to`), on the Web API calls the double logged, on SQLite and on the
sandbox's processes.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from typing import Any

from maison_slack.slack.config import load_settings
from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import (
    Hang,
    Text,
    Thinking,
    ToolUse,
    Turn,
    has_tool_result,
    last_user_text,
    user_prompts,
)
from tests.doubles.slack import ApiCall, Message, SlackDouble, visible_text
from tests.test_bot_lifecycle import claude_processes, store

DM = "D0ALICE"
BOB_DM = "D0BOB"
TEAM = SlackDouble.team_id
RUN_TIMEOUT = 30
FINAL_STATES = ("done", "failed", "stopped", "interrupted")
STREAM_METHODS = ("chat.startStream", "chat.appendStream", "chat.stopStream")


# -- helpers: answers that can be checked word by word --------------------------------------------


def words(prefix: str, count: int) -> list[str]:
    """`count` distinct fixed-width words (`prefix` + 3 digits): a lost or repeated piece shows."""
    return [f"{prefix}{n:03d}" for n in range(count)]


def slow_answer(tokens: list[str], seconds: float, chunk_size: int = 10) -> Turn:
    """A text answer Claude streams over about `seconds` (one SSE frame every `delay`)."""
    text = " ".join(tokens)
    frames = max(1, len(text) // chunk_size)
    return Turn([Text(text)], chunk_size=chunk_size, delay=seconds / frames)


def answer_text(msg: Message) -> str:
    """The answer part of what a message shows: its text blocks (no footer, task list or task
    cards); the `text` fallback only when it has none."""
    if msg.markdown_text:
        return msg.markdown_text
    parts: list[str] = []
    for block in msg.blocks:
        kind = block.get("type")
        if kind == "markdown":
            parts.append(block.get("text", ""))
        elif kind == "section" and isinstance(block.get("text"), dict):
            parts.append(block["text"].get("text", ""))
        elif kind == "rich_text":
            parts.append(visible_text(Message(channel="", ts="", user="", blocks=[block])))
    has_text_blocks = any(b.get("type") in ("markdown", "section", "rich_text") for b in msg.blocks)
    return "".join(parts) if has_text_blocks else msg.text


def tokens_in(messages: list[Message], prefix: str) -> list[str]:
    """The `prefix` words of the messages' answer text, in order, whatever the split points and
    whitespace at the joins between messages."""
    joined = re.sub(r"\s+", "", "".join(answer_text(m) for m in messages))
    return re.findall(rf"{re.escape(prefix)}\d{{3}}", joined)


# -- helpers: what people see ------------------------------------------------------------------------


def bot_messages(env: BotEnv, channel: str, thread_ts: str) -> list[Message]:
    return [m for m in env.slack.thread(channel, thread_ts)[1:] if m.is_bot]


def streams(env: BotEnv, channel: str, thread_ts: str) -> list[Message]:
    found = env.slack.stream_messages(channel, thread_ts)
    for msg in found:
        assert msg.stream is not None
        msg.stream.refresh()
    return found


def still_streaming(env: BotEnv, channel: str, thread_ts: str) -> list[Message]:
    return [m for m in streams(env, channel, thread_ts) if m.stream is not None and m.stream.streaming]


def has_feedback_row(msg: Message) -> bool:
    return any(
        b.get("type") == "context_actions"
        and any(e.get("type") == "feedback_buttons" and e.get("action_id") == "maison_feedback"
                for e in b.get("elements") or [])
        for b in msg.blocks
    )


def footer_of(msg: Message) -> str:
    """The text of the message's context blocks (footer, task list)."""
    return " ".join(e.get("text", "") for b in msg.blocks if b.get("type") == "context"
                    for e in b.get("elements") or [] if isinstance(e, dict))


def texts(history: list[tuple[float, str]]) -> list[str]:
    return [text for _, text in history]


# -- helpers: Web API calls ----------------------------------------------------------------------


def calls(env: BotEnv, method: str, channel: str | None = None) -> list[ApiCall]:
    found = [c for c in env.slack.calls if c.method == method]
    if channel is not None:
        key = "channel_id" if method == "assistant.threads.setStatus" else "channel"
        found = [c for c in found if c.args.get(key) == channel]
    return found


def chunks_of(call: ApiCall) -> list[dict[str, Any]]:
    raw = call.args.get("chunks")
    if isinstance(raw, str):
        raw = json.loads(raw)
    chunks = list(raw or [])
    if call.args.get("markdown_text"):
        chunks.append({"type": "markdown_text", "text": call.args["markdown_text"]})
    return chunks


def task_updates(env: BotEnv, channel: str) -> list[dict[str, Any]]:
    """Every task_update chunk the bot sent to `channel` (start, append, stop), in order."""
    sent = sorted((c for c in env.slack.calls if c.method in STREAM_METHODS and c.args.get("channel") == channel),
                  key=lambda c: c.time)
    return [chunk for call in sent for chunk in chunks_of(call) if chunk.get("type") == "task_update"]


def status_at(env: BotEnv, channel: str, thread_ts: str, when: float) -> str:
    """The status line under the thread at `when` (time.monotonic())."""
    shown = ""
    for change in env.slack.status_history(channel, thread_ts):
        if change.time <= when:
            shown = change.status
    return shown


# -- helpers: runs ----------------------------------------------------------------------------------


async def run_states(env: BotEnv, channel: str, thread_ts: str) -> list[str]:
    async with store(env) as db:
        return [run.state for run in await db.runs(channel, thread_ts)]


async def wait_states(env: BotEnv, channel: str, thread_ts: str, expected: list[str],
                      timeout: float = RUN_TIMEOUT) -> None:
    async def match() -> bool:
        return await run_states(env, channel, thread_ts) == expected
    try:
        await env.slack.wait_for(match, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"runs are {await run_states(env, channel, thread_ts)}, expected {expected}") from None


async def settled(env: BotEnv, channel: str, thread_ts: str, runs: int = 1, timeout: float = RUN_TIMEOUT) -> None:
    """`runs` runs of the thread have ended and no stream of the thread is live any more."""
    async def done() -> bool:
        states = await run_states(env, channel, thread_ts)
        return (len(states) == runs and all(s in FINAL_STATES for s in states)
                and not still_streaming(env, channel, thread_ts))
    try:
        await env.slack.wait_for(done, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"not settled: runs {await run_states(env, channel, thread_ts)}, live streams "
                             f"{[m.ts for m in still_streaming(env, channel, thread_ts)]}") from None
    await asyncio.sleep(0.2)  # anything sent after the end would show by now


async def run_ids(env: BotEnv, channel: str, thread_ts: str) -> list[int]:
    async with store(env) as db:
        return [run.id for run in await db.runs(channel, thread_ts)]


async def sandbox_id_of(env: BotEnv, channel: str, thread_ts: str) -> str:
    async with store(env) as db:
        session = await db.get_session(channel, thread_ts)
    assert session is not None and session.sandbox_id, session
    return session.sandbox_id


async def first_stream(env: BotEnv, channel: str, thread_ts: str, contains: str = "") -> Message:
    def find() -> Message | None:
        return next((m for m in streams(env, channel, thread_ts) if contains in m.text), None)
    return await env.slack.wait_for(find, timeout=RUN_TIMEOUT)


async def dm(env: BotEnv, text: str, thread_ts: str | None = None) -> str:
    return await env.slack.post_message(ALICE, DM, text, thread_ts=thread_ts)


def assert_ends_well(messages: list[Message], footer: str = ":white_check_mark:") -> None:
    """The footer and the feedback row are on the last message of the reply, and only there."""
    assert messages, "no reply at all"
    *earlier, last = messages
    assert footer in visible_text(last), visible_text(last)
    assert has_feedback_row(last), last.blocks
    for msg in earlier:
        assert footer not in visible_text(msg), f"footer on an earlier message {msg.ts}: {visible_text(msg)}"
        assert not has_feedback_row(msg), f"feedback row on an earlier message {msg.ts}"


# -- 0. the setting ----------------------------------------------------------------------------------


def test_streaming_settings_are_read_from_the_environment():
    base = {"SLACK_BOT_TOKEN": "xoxb-1", "SLACK_APP_TOKEN": "xapp-1", "DAYTONA_API_KEY": "d",
            "ANTHROPIC_API_KEY": "a"}
    default = load_settings(base)
    assert (default.streaming, default.stream_rollover) == ("auto", 240)
    chosen = load_settings({**base, "MAISON_STREAMING": "native", "MAISON_STREAM_ROLLOVER": "120"})
    assert (chosen.streaming, chosen.stream_rollover) == ("native", 120)
    assert load_settings({**base, "MAISON_STREAMING": "edits"}).streaming == "edits"


# -- 1. a DM answer streams natively -----------------------------------------------------------------


async def test_a_dm_answer_streams_natively_and_progressively(bot):
    """A ~7.5-s answer in a DM: no placeholder, one streamed message that the reader sees grow
    (≥ 8 states, text coalesced about every 0.7 s, not one call per delta), thinking never shown
    as text, the footer and feedback row at the end, every word exactly once."""
    tokens = words("p", 150)
    bot.anthropic.responder = lambda body: Turn(
        [Thinking("PRIVATETHOUGHT about the question"), Text(" ".join(tokens))],
        chunk_size=10, delay=7.5 / 75)
    ts = await dm(bot, "explain something at length")
    await settled(bot, DM, ts)

    (msg,) = bot_messages(bot, DM, ts)
    assert msg.stream is not None and msg.stream.state == "stopped", "not one streamed message, stopped by the bot"
    assert not [c for c in calls(bot, "chat.postMessage", DM)], "a native reply posts no placeholder"
    assert tokens_in([msg], "p") == tokens

    seen = bot.slack.viewer_history(msg, ALICE)
    assert len(seen) >= 8, f"Alice saw only {len(seen)} states of a 7.5-s answer"
    grown = [len(tokens_in([Message(channel="", ts="", user="", markdown_text=t)], "p")) for t in texts(seen)]
    assert grown == sorted(grown), f"the text shrank at some point: {grown}"
    assert grown[0] < len(tokens) / 2 and seen[-1][0] - seen[0][0] >= 4, "the text did not arrive progressively"
    assert_ends_well([msg])

    appends = [c for c in calls(bot, "chat.appendStream", DM) if c.ok]
    span = msg.stream.ended - msg.stream.started
    assert len(appends) <= span / 0.5 + 3, f"{len(appends)} appends in {span:.1f} s: text is not coalesced"
    assert not [m for m in bot.slack.rate_limited if m in STREAM_METHODS], bot.slack.rate_limited

    everything = " ".join(repr(c.args) for c in bot.slack.calls if c.method != "assistant.threads.setStatus")
    assert "PRIVATETHOUGHT" not in everything, "thinking was shown as text"
    await wait_states(bot, DM, ts, ["done"])


async def test_the_status_shows_before_the_text_and_is_cleared_after(bot):
    """Starting, then the sandbox (which takes 3 s here), then Claude thinking: each shown as
    the thread's status, none as message text; gone once the text shows and after the run."""
    bot.daytona.inject("POST", r"^/api/sandbox/?$", None, delay=3.0)
    tokens = words("s", 30)
    bot.anthropic.responder = lambda body: slow_answer(tokens, 2)
    ts = await dm(bot, "a short question")
    await settled(bot, DM, ts)

    (msg,) = bot_messages(bot, DM, ts)
    assert msg.stream is not None
    history = bot.slack.status_history(DM, ts)
    before = [c for c in history if c.time < msg.stream.started]
    shown = [c.status for c in before if c.reason == "set"]
    assert shown, f"no status before the first text: {history}"
    assert any("Creating a sandbox" in s for s in shown), shown
    assert any("Thinking" in s for s in shown), shown
    assert any(c.loading_messages for c in before if c.reason == "set"), "no loading_messages"
    # When the first text shows, the status is gone (a stream start is a post, or setStatus "").
    first_text = next(when for when, text in msg.versions if text.strip())
    assert status_at(bot, DM, ts, first_text + 0.05) == "", history
    assert bot.slack.thread_status(DM, ts) == "", "the status outlived the run"
    # The status never was message text.
    for _, text in msg.versions:
        assert "Creating a sandbox" not in text and "Starting" not in text, text
    assert tokens_in([msg], "s") == tokens


async def test_tool_calls_are_tasks_that_complete_or_fail(bot):
    bot.anthropic.responder = lambda body: _tool_script(body)
    ts = await dm(bot, "try two commands")
    await settled(bot, DM, ts)

    (msg,) = bot_messages(bot, DM, ts)
    cards = {b["task_id"]: b for b in msg.blocks if b.get("type") == "task_card"}
    assert set(cards) == {"toolu_01OKAY", "toolu_02FAIL"}, msg.blocks
    assert cards["toolu_01OKAY"]["status"] == "complete" and cards["toolu_02FAIL"]["status"] == "error"
    updates = task_updates(bot, DM)
    for task_id, command in (("toolu_01OKAY", "echo fine"), ("toolu_02FAIL", "cat missing-file.txt")):
        mine = [u for u in updates if u["id"] == task_id]
        assert mine and mine[-1]["status"] in ("complete", "error"), mine
        if task_id == "toolu_01OKAY":  # it runs for 1 s: long enough to be sent as running first
            assert mine[0]["status"] == "in_progress", mine
        for update in mine:
            assert command in update["title"] and "\n" not in update["title"], update
        output = mine[-1].get("output")
        assert output and "\n" not in output.strip(), f"the ended task has no one-line output: {mine[-1]}"
    # Alice watched the first command run, then end.
    seen = texts(bot.slack.viewer_history(msg, ALICE))
    assert any("[in_progress]" in t and "echo fine" in t for t in seen), seen
    assert visible_text(msg).index("Checking.") < visible_text(msg).index("One worked, one did not.")
    assert_ends_well([msg])
    await wait_states(bot, DM, ts, ["done"])


def _tool_script(body: dict[str, Any]) -> Turn:
    """Text and a command that works (and takes 1 s), then one that fails, then text."""
    results = sum(1 for m in body.get("messages") or [] if m.get("role") == "user"
                  and isinstance(m.get("content"), list)
                  and any(isinstance(b, dict) and b.get("type") == "tool_result" for b in m["content"]))
    if results == 0:
        return Turn([Text("Checking."), ToolUse("Bash", {"command": "echo fine; sleep 1"},
                                                id="toolu_01OKAY")])
    if results == 1:
        return Turn([ToolUse("Bash", {"command": "cat missing-file.txt"}, id="toolu_02FAIL")])
    return Turn([Text("One worked, one did not.")])


async def test_a_failure_before_claude_ran_is_one_ordinary_message(bot):
    bot.daytona.create_fails(500)
    ts = await dm(bot, "this will fail")
    await wait_states(bot, DM, ts, ["failed"])
    await asyncio.sleep(0.3)

    (msg,) = bot_messages(bot, DM, ts)
    assert msg.stream is None and ":warning:" in visible_text(msg), visible_text(msg)
    assert not [c for c in bot.slack.calls if c.method in STREAM_METHODS]
    assert bot.slack.thread_status(DM, ts) == ""


async def test_a_workspace_that_refuses_streaming_gets_the_answer_and_then_edits(bot):
    """Slack answers `not_allowed` to chat.startStream (a surface or plan without streaming,
    ../shared/reference/slack.md §9.7): the answer is posted whole when it is done, with footer
    and feedback, and the next reply uses edits, with no more tries at streaming."""
    bot.slack.inject("chat.startStream", error="not_allowed")
    tokens = words("r", 40)
    bot.anthropic.responder = lambda body: slow_answer(tokens, 2)
    ts = await dm(bot, "stream, if Slack lets you")
    await settled(bot, DM, ts)

    (msg,) = bot_messages(bot, DM, ts)
    assert msg.stream is None and tokens_in([msg], "r") == tokens
    assert_ends_well([msg])
    assert len(calls(bot, "chat.startStream")) == 1

    await dm(bot, "and again", thread_ts=ts)
    await settled(bot, DM, ts, runs=2)
    *_, second = bot_messages(bot, DM, ts)
    assert second.stream is None and len(second.versions) > 1, "the next reply was not edited"
    assert tokens_in([second], "r") == tokens
    assert len(calls(bot, "chat.startStream")) == 1


# -- 2. streams that end before the answer ----------------------------------------------------------


async def test_a_stream_that_expires_mid_answer_loses_nothing(bot):
    """Slack ends each stream 2.5 s after its start, in a ~7-s answer with a tool call early on:
    the bot seals each expired message with chat.update (the text Slack accepted, its task list
    as lines now that the cards are gone) and goes on in a new streamed message; every word
    once, the footer on the last message only."""
    bot.slack.stream_expiry = 2.5
    tokens = words("e", 100)

    def responder(body: dict[str, Any]) -> Turn:
        if has_tool_result(body):
            return slow_answer(tokens[10:], 6)
        return Turn([Text(" ".join(tokens[:10]) + " "),
                     ToolUse("Bash", {"command": "echo sealed-task"}, id="toolu_03SEAL")], chunk_size=10, delay=0.03)

    bot.anthropic.responder = responder
    ts = await dm(bot, "a long answer please")
    await settled(bot, DM, ts)

    shown = bot_messages(bot, DM, ts)
    assert len(shown) >= 3, [visible_text(m)[:30] for m in shown]
    assert all(m.stream is not None for m in shown), "a continuation that is not a stream"
    assert [c for c in bot.slack.calls if c.error == "message_not_in_streaming_state"], "no stream expired"
    assert tokens_in(shown, "e") == tokens, "words lost or repeated across the messages"
    assert_ends_well(shown)
    first = shown[0]
    assert first.stream is not None and first.stream.state == "expired", first.stream
    for msg in shown[:-1]:
        assert msg.stream is not None
        if msg.stream.state == "expired":  # sealed: an edit turns the broken pill into a message
            sealed = [c for c in calls(bot, "chat.update", DM) if c.ok and c.args.get("ts") == msg.ts]
            assert sealed, f"expired message {msg.ts} was never sealed with chat.update"
            assert msg.edited is not None
    assert re.search(r"✓ [^\n]*sealed-task", footer_of(first)), f"the sealed message lost its task: {first.blocks}"
    await wait_states(bot, DM, ts, ["done"])


async def test_proactive_rollover_continues_in_a_new_stream(bot_env):
    await bot_env.start(stream_rollover=1.5)
    tokens = words("r", 80)
    bot_env.anthropic.responder = lambda body: slow_answer(tokens, 5.5)
    ts = await dm(bot_env, "a long answer please")
    await settled(bot_env, DM, ts)

    shown = bot_messages(bot_env, DM, ts)
    assert len(shown) >= 3, [visible_text(m)[:30] for m in shown]
    failed = [(c.method, c.error) for c in bot_env.slack.calls if c.error and c.method in (*STREAM_METHODS, "chat.update")]
    assert not failed, f"a proactive rollover should meet no refused call: {failed}"
    for msg in shown:
        assert msg.stream is not None and msg.stream.state == "stopped", (msg.ts, msg.stream and msg.stream.state)
        lived = msg.stream.ended - msg.stream.started
        assert lived <= 1.5 + 1.5, f"stream {msg.ts} lived {lived:.1f} s with a 1.5-s rollover"
    for before, after in zip(shown, shown[1:]):  # stop, then the next start
        assert before.stream.ended <= after.stream.started
    assert len(calls(bot_env, "chat.startStream", DM)) == len(shown)
    assert tokens_in(shown, "r") == tokens
    assert_ends_well(shown)


# -- 3. stop -------------------------------------------------------------------------------------------


async def test_slacks_own_stop_kills_claude_within_a_second(bot):
    bot.anthropic.responder = lambda body: Hang(text="Working on it")
    ts = await dm(bot, "count to a million")
    msg = await first_stream(bot, DM, ts, contains="Working on it")
    sandbox_id = await sandbox_id_of(bot, DM, ts)
    assert claude_processes(bot, sandbox_id)

    pressed = time.monotonic()
    await bot.slack.stop_stream_by_user(DM, msg.ts, ALICE)
    await bot.slack.wait_for(lambda: not claude_processes(bot, sandbox_id), timeout=5)
    took = time.monotonic() - pressed
    assert took <= 1.0, f"Claude still ran {took:.2f} s after Slack's Stop"
    await wait_states(bot, DM, ts, ["stopped"])

    await bot.slack.wait_for(lambda: f"Stopped by <@{ALICE}>" in visible_text(msg), timeout=5)
    assert "Working on it" in visible_text(msg)
    assert len(bot_messages(bot, DM, ts)) == 1, "the stop is told in the stopped message, not a new one"

    # The thread goes on, in the same sandbox, with a new stream.
    bot.anthropic.responder = lambda body: slow_answer(["Back again."] + words("b", 20), 1.5)
    await dm(bot, "are you there?", thread_ts=ts)
    await settled(bot, DM, ts, runs=2)
    assert await run_states(bot, DM, ts) == ["stopped", "done"]
    again = bot_messages(bot, DM, ts)[-1]
    assert again is not msg and again.stream is not None and "Back again." in visible_text(again)
    assert await sandbox_id_of(bot, DM, ts) == sandbox_id


async def test_an_append_refused_as_stopped_by_user_stops_the_run(bot):
    """The agent_session_stopped event never arrives (Slack did not send it); the next append
    answers `stopped_by_user`: the run stops, and the answer does not go on in a new message."""
    tokens = words("u", 200)
    bot.anthropic.responder = lambda body: slow_answer(tokens, 20)
    ts = await dm(bot, "write a lot")
    msg = await first_stream(bot, DM, ts, contains="u010")
    sandbox_id = await sandbox_id_of(bot, DM, ts)

    bot.slack.not_member.add(DM)  # only to swallow the event: the double sends none then
    try:
        assert await bot.slack.stop_stream_by_user(DM, msg.ts, ALICE) is None
    finally:
        bot.slack.not_member.discard(DM)
    pressed = time.monotonic()

    await bot.slack.wait_for(lambda: not claude_processes(bot, sandbox_id), timeout=10)
    took = time.monotonic() - pressed
    # The refusal is seen at the next append (every 0.7 s); the kill then gives Claude up to 2 s
    # after SIGTERM before SIGKILL (core/sandbox.py KILL_RUN_FUNCTION). A loaded 2-core CI machine
    # once took 2.75 s for the two: the bound is their sum plus a margin, not a guess.
    assert took <= 0.7 + 2.0 + 0.8, f"Claude still ran {took:.2f} s after the append was refused"
    await wait_states(bot, DM, ts, ["stopped"])
    assert [c for c in calls(bot, "chat.appendStream", DM) if c.error == "stopped_by_user"]
    assert len(streams(bot, DM, ts)) == 1, "the answer went on in a new stream after the user stopped it"
    assert still_streaming(bot, DM, ts) == []


async def test_slacks_stop_answered_as_not_in_streaming_state_ends_the_answer_there(bot):
    """Slack is reported to answer `message_not_in_streaming_state` (not `stopped_by_user`) on a
    stream the user stopped (../shared/reference/slack.md §13.3). After the user's Stop that is
    no expiry: the answer must not go on in a new streamed message."""
    bot.slack.user_stop_error = "message_not_in_streaming_state"
    tokens = words("n", 150)
    bot.anthropic.responder = lambda body: slow_answer(tokens, 15)
    ts = await dm(bot, "write a lot")
    msg = await first_stream(bot, DM, ts, contains="n010")
    sandbox_id = await sandbox_id_of(bot, DM, ts)

    await bot.slack.stop_stream_by_user(DM, msg.ts, ALICE)
    await bot.slack.wait_for(lambda: not claude_processes(bot, sandbox_id), timeout=5)
    await wait_states(bot, DM, ts, ["stopped"])
    await settled(bot, DM, ts, timeout=10)

    assert streams(bot, DM, ts) == [msg], [visible_text(m)[:40] for m in streams(bot, DM, ts)]
    assert bot_messages(bot, DM, ts) == [msg], "the answer went on after the user's Stop"
    assert f"Stopped by <@{ALICE}>" in visible_text(msg)


async def test_the_stop_word_stops_a_native_stream_in_a_channel(bot_env):
    await bot_env.start(streaming="native")
    bot_env.anthropic.responder = lambda body: Hang(text="Working on it")
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "write a novel")
    msg = await first_stream(bot_env, CHANNEL, ts, contains="Working on it")
    sandbox_id = await sandbox_id_of(bot_env, CHANNEL, ts)

    said = time.monotonic()
    await bot_env.slack.post_message(BOB, CHANNEL, "stop", thread_ts=ts)
    await bot_env.slack.wait_for(lambda: not claude_processes(bot_env, sandbox_id), timeout=5)
    assert time.monotonic() - said <= 1.5
    await wait_states(bot_env, CHANNEL, ts, ["stopped"])
    await settled(bot_env, CHANNEL, ts)

    assert msg.stream is not None and msg.stream.state == "stopped", "the stream was not finished by the bot"
    assert f"Stopped by <@{BOB}>" in visible_text(msg) and "Working on it" in visible_text(msg)
    assert bot_messages(bot_env, CHANNEL, ts) == [msg]
    # "stop" was a command, not a prompt: Claude never saw it.
    assert not [r for r in bot_env.anthropic.requests if last_user_text(r.body or {}) == "stop"]


# -- 4. rate limits ---------------------------------------------------------------------------------


#: A call that reaches Slack this soon after the 429 left the bot before the 429 came back: no
#: client can hold it back, so it does not count as a call inside the window.
IN_FLIGHT = 0.05


async def test_no_append_goes_out_inside_a_429s_retry_after(bot):
    """Two DMs stream at once; one append gets a 429 with Retry-After: 3. slack_sdk delays only
    the request that got it: the other reply must not append inside the window either."""
    alice_words, bob_words = words("ta", 80), words("tb", 80)
    bot.anthropic.responder = lambda body: slow_answer(
        alice_words if "ALICEASKS" in last_user_text(body) else bob_words, 6)
    alice_ts = await dm(bot, "stream for a while ALICEASKS")
    bob_ts = await bot.slack.post_message(BOB, BOB_DM, "stream for a while BOBASKS")

    def both_appending() -> bool:
        return all([c for c in calls(bot, "chat.appendStream", channel) if c.ok] for channel in (DM, BOB_DM))

    await bot.slack.wait_for(both_appending, timeout=RUN_TIMEOUT)
    bot.slack.inject("chat.appendStream", status=429, retry_after=3)
    await asyncio.gather(settled(bot, DM, alice_ts), settled(bot, BOB_DM, bob_ts))

    appends = calls(bot, "chat.appendStream")
    limited = [c for c in appends if c.status == 429]
    assert limited, "the injected 429 was never hit"
    hit = limited[0]
    assert hit.done is not None
    inside = [(c.args.get("channel"), round(c.time - hit.done, 3)) for c in appends
              if hit.done + IN_FLIGHT < c.time < hit.done + 3]
    assert not inside, f"chat.appendStream calls inside the Retry-After window: {inside}"
    assert tokens_in(bot_messages(bot, DM, alice_ts), "ta") == alice_words
    assert tokens_in(bot_messages(bot, BOB_DM, bob_ts), "tb") == bob_words
    assert_ends_well(bot_messages(bot, DM, alice_ts))
    assert_ends_well(bot_messages(bot, BOB_DM, bob_ts))


# -- 5. feedback -----------------------------------------------------------------------------------------


async def test_feedback_buttons_are_under_the_answer_and_clicks_are_recorded(bot):
    bot.anthropic.responder = lambda body: Turn([Text("Here is the answer.")])
    ts = await dm(bot, "a question")
    await settled(bot, DM, ts)
    (msg,) = bot_messages(bot, DM, ts)
    assert_ends_well([msg])
    assert "Here is the answer." in visible_text(msg)
    (run_id,) = await run_ids(bot, DM, ts)

    good = await bot.slack.click_feedback(ALICE, DM, msg.ts, positive=True)
    bad = await bot.slack.click_feedback(BOB, DM, msg.ts, positive=False)
    for envelope in (good, bad):
        ack = await bot.slack.wait_acked(envelope, 3)
        assert ack.latency < 1.0

    async def recorded() -> dict[str, str] | None:
        async with store(bot) as db:
            votes = await db.feedback(run_id)
        return votes if len(votes) == 2 else None

    assert await bot.slack.wait_for(recorded, timeout=5) == {ALICE: "good", BOB: "bad"}
    thanks = await bot.slack.wait_for(lambda: bot.slack.ephemerals(DM, ALICE), timeout=5)
    assert "Thanks" in thanks[0].text


# -- 6. auto mode: DMs stream, channel threads edit -------------------------------------------------------


async def test_auto_mode_streams_in_a_dm_and_edits_in_a_channel(bot):
    def responder(body: dict[str, Any]) -> Turn:
        marker = "DMSIDE" if "DMSIDE" in user_prompts(body)[-1] else "CHSIDE"
        if has_tool_result(body):
            return Turn([Text(f"Listed for {marker}.")])
        return Turn([Text("Listing."), ToolUse("Bash", {"command": "ls -la; sleep 1"})])

    bot.anthropic.responder = responder
    dm_ts, channel_ts = await asyncio.gather(dm(bot, "DMSIDE list files"),
                                             bot.slack.mention(ALICE, CHANNEL, "CHSIDE list files"))
    await asyncio.gather(settled(bot, DM, dm_ts), settled(bot, CHANNEL, channel_ts))

    # The DM: one streamed message, its task done.
    (streamed,) = bot_messages(bot, DM, dm_ts)
    assert streamed.stream is not None and "Listed for DMSIDE." in visible_text(streamed)
    (card,) = [b for b in streamed.blocks if b.get("type") == "task_card"]
    assert card["status"] == "complete" and "ls -la" in card["title"]
    assert not calls(bot, "chat.postMessage", DM)

    # The channel: a placeholder edited into the answer, the task list in a context block.
    (edited,) = bot_messages(bot, CHANNEL, channel_ts)
    assert edited.stream is None and not bot.slack.stream_messages(CHANNEL)
    assert not calls(bot, "chat.startStream", CHANNEL)
    assert [c for c in calls(bot, "chat.update", CHANNEL) if c.ok], "the channel reply was never edited"
    assert "Listed for CHSIDE." in visible_text(edited)
    assert re.search(r"✓ [^\n]*ls -la", footer_of(edited)), footer_of(edited)
    earlier = [v for v in edited.edits if any(b.get("type") == "actions" for b in v["blocks"])]
    assert earlier, "the channel reply never showed a Stop button while it ran"


async def test_edits_mode_edits_even_in_a_dm(bot_env):
    await bot_env.start(streaming="edits")
    bot_env.anthropic.responder = lambda body: Turn([Text("Edited, not streamed.")])
    ts = await dm(bot_env, "a question")
    await settled(bot_env, DM, ts)
    (msg,) = bot_messages(bot_env, DM, ts)
    assert msg.stream is None and not [c for c in bot_env.slack.calls if c.method in STREAM_METHODS]
    assert "Edited, not streamed." in visible_text(msg) and ":white_check_mark:" in visible_text(msg)
    assert any(any(b.get("type") == "actions" for b in v["blocks"]) for v in msg.edits), "no Stop button while it ran"


# -- 7. native mode in a channel thread ---------------------------------------------------------------------


async def test_native_in_a_channel_only_the_recipient_sees_the_text_live(bot_env):
    await bot_env.start(streaming="native")
    tokens = words("c", 60)
    bot_env.anthropic.responder = lambda body: slow_answer(tokens, 4)
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "explain")
    msg = await first_stream(bot_env, CHANNEL, ts)
    await bot_env.slack.wait_for(lambda: len(bot_env.slack.viewer_history(msg, ALICE)) >= 3, timeout=RUN_TIMEOUT)
    assert msg.stream is not None and msg.stream.streaming
    first_chunk = next(t for t in texts(bot_env.slack.viewer_history(msg, ALICE)) if t)
    assert bot_env.slack.visible_to(msg, BOB) == first_chunk  # while it streams, Bob sees the first chunk
    assert bot_env.slack.visible_to(msg, ALICE) != first_chunk
    await settled(bot_env, CHANNEL, ts)

    (start,) = calls(bot_env, "chat.startStream", CHANNEL)
    assert (start.args.get("recipient_user_id"), start.args.get("recipient_team_id")) == (ALICE, TEAM)
    alice = texts(bot_env.slack.viewer_history(msg, ALICE))
    bob = [t for t in texts(bot_env.slack.viewer_history(msg, BOB)) if t]
    assert len(alice) >= 4, alice
    assert bob == [first_chunk, visible_text(msg)], "Bob saw more than the first chunk before the end"
    assert tokens_in([msg], "c") == tokens
    assert_ends_well([msg])

    # Bob's follow-up streams to Bob.
    bot_env.anthropic.responder = lambda body: slow_answer(["For Bob."] + words("f", 20), 1.5)
    await bot_env.slack.post_message(BOB, CHANNEL, "and for me?", thread_ts=ts)
    await settled(bot_env, CHANNEL, ts, runs=2)
    starts = calls(bot_env, "chat.startStream", CHANNEL)
    assert len(starts) == 2 and starts[1].args.get("recipient_user_id") == BOB
    assert "For Bob." in visible_text(bot_messages(bot_env, CHANNEL, ts)[-1])


# -- 8. time ----------------------------------------------------------------------------------------------


async def test_a_chat_start_stream_that_takes_two_seconds(bot):
    """Text keeps coming while the start is in flight: it lands once, in the one stream."""
    bot.slack.inject("chat.startStream", delay=2.0)
    tokens = words("d", 60)
    bot.anthropic.responder = lambda body: slow_answer(tokens, 4)
    ts = await dm(bot, "answer while Slack is slow")
    await settled(bot, DM, ts)

    assert len(calls(bot, "chat.startStream", DM)) == 1, "the stream was started twice"
    (msg,) = bot_messages(bot, DM, ts)
    assert msg.stream is not None and msg.stream.state == "stopped"
    assert tokens_in([msg], "d") == tokens
    assert not [c for c in bot.slack.calls if c.method in STREAM_METHODS and not c.ok]
    assert_ends_well([msg])


async def test_stop_while_chat_start_stream_is_in_flight(bot):
    """Stop during a 2-s chat.startStream: Claude dies at once, and the stream, once it lands,
    is finished (not left live until Slack expires it)."""
    bot.slack.inject("chat.startStream", delay=2.0)
    bot.anthropic.responder = lambda body: Hang(text="Working on it")
    ts = await dm(bot, "a long job")
    await bot.slack.wait_for(lambda: [c for c in calls(bot, "chat.startStream", DM) if c.done is None],
                             timeout=RUN_TIMEOUT)
    sandbox_id = await sandbox_id_of(bot, DM, ts)
    said = time.monotonic()
    await dm(bot, "stop", thread_ts=ts)
    await bot.slack.wait_for(lambda: not claude_processes(bot, sandbox_id), timeout=5)
    assert time.monotonic() - said <= 1.0, "the kill waited for Slack"
    # The start lands 2 s after it was sent, whatever the bot did meanwhile.
    await bot.slack.wait_for(lambda: all(c.done for c in calls(bot, "chat.startStream", DM)), timeout=5)
    await settled(bot, DM, ts, timeout=5)

    assert await run_states(bot, DM, ts) == ["stopped"]
    shown = bot_messages(bot, DM, ts)
    assert len(shown) == 1 and shown[0].stream is not None, [visible_text(m) for m in shown]
    assert shown[0].stream.state == "stopped"
    assert f"Stopped by <@{ALICE}>" in visible_text(shown[0]) and "Working on it" in visible_text(shown[0])


async def test_two_follow_ups_at_once_in_a_dm_thread_get_a_stream_each_in_order(bot):
    def echo(body: dict[str, Any]) -> Turn:
        found = re.findall(r"STEP\d\d", last_user_text(body))
        if not found:
            return Turn([Text("ok")])
        step = found[-1]
        return Turn([Text(f"answer to {step} " + " ".join(words(step.lower(), 20)))], chunk_size=10, delay=0.03)

    bot.anthropic.responder = echo
    ts = await dm(bot, "hello STEP01")
    await settled(bot, DM, ts)
    await asyncio.gather(dm(bot, "then STEP02", thread_ts=ts), dm(bot, "and STEP03", thread_ts=ts))
    await settled(bot, DM, ts, runs=3)

    assert await run_states(bot, DM, ts) == ["done", "done", "done"]
    seen = [re.findall(r"STEP\d\d", last_user_text(r.body or {})) for r in bot.anthropic.requests]
    assert [s[-1] for s in seen if s] == ["STEP01", "STEP02", "STEP03"]
    shown = bot_messages(bot, DM, ts)
    assert len(shown) == 3 and all(m.stream is not None for m in shown), [visible_text(m)[:30] for m in shown]
    for msg, step in zip(shown, ("STEP01", "STEP02", "STEP03")):
        assert f"answer to {step}" in visible_text(msg)
        assert tokens_in([msg], step.lower()) == words(step.lower(), 20)
        assert_ends_well([msg])
    for before, after in zip(shown, shown[1:]):  # one run at a time: a stream ends before the next starts
        assert before.stream.ended is not None and before.stream.ended <= after.stream.started
