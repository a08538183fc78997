"""The Slack double's AI streaming and status surface, driven by the REAL slack_sdk / slack-bolt.

``chat.startStream`` / ``chat.appendStream`` / ``chat.stopStream`` (argument rules, text vs
chunks, the 12,000-character limit, expiry, stop by the app and by the user), who sees what of a
stream in a channel thread, ``assistant.threads.setStatus`` (set, cleared by a reply, expiry), the
rate tiers of these methods and the feedback row. Rules and their sources:
``tests/doubles/slack_streaming.py`` (``../shared/reference/slack.md`` §9, §13-§16).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.models.blocks import ContextActionsBlock, FeedbackButtonObject, FeedbackButtonsElement
from slack_sdk.models.messages.chunk import MarkdownTextChunk, PlanUpdateChunk, TaskUpdateChunk

from tests.doubles.slack import PROXY_ENV_VARS, SlackDouble, slack_double  # noqa: F401
from tests.test_slack_double import bolt, web_client

for _var in PROXY_ENV_VARS:
    os.environ.pop(_var, None)

CHANNEL = "C0CHAN"
DM = "D0ALICE"
ALICE, BOB = "U0ALICE", "U0BOB"
TEAM = SlackDouble.team_id
#: For tests that make many calls on purpose: lift the stream tiers (tested on their own below).
GENEROUS = {"chat.startStream": 6000, "chat.appendStream": 6000, "chat.stopStream": 6000,
            "assistant.threads.setStatus": 6000}  # fmt: skip
FEEDBACK = [
    {
        "type": "context_actions",
        "block_id": "fb",
        "elements": [
            {
                "type": "feedback_buttons",
                "action_id": "feedback",
                "positive_button": {"text": {"type": "plain_text", "text": "Good"}, "value": "good"},
                "negative_button": {"text": {"type": "plain_text", "text": "Bad"}, "value": "bad"},
            }
        ],
    }
]




def to(user: str = ALICE) -> dict[str, str]:
    """The recipient arguments a channel stream needs."""
    return {"recipient_user_id": user, "recipient_team_id": TEAM}


async def error_of(call: Awaitable[Any]) -> str:
    with pytest.raises(SlackApiError) as err:
        await call
    return str(err.value.response["error"])


async def root(double: SlackDouble, channel: str = CHANNEL) -> str:
    return await double.post_message(ALICE, channel, "please refactor the parser")


def stream_calls(double: SlackDouble) -> list[tuple[str, str | None]]:
    return [(c.method, c.error) for c in double.calls if c.method.endswith("Stream")]


async def test_start_stream_argument_errors() -> None:
    async with SlackDouble(rate_limits=GENEROUS) as double:
        client = web_client(double)
        ts = await root(double)
        start: Callable[..., Awaitable[Any]] = client.chat_startStream
        assert await error_of(start(channel=CHANNEL, thread_ts=None, **to())) == "invalid_arguments"
        assert await error_of(start(channel=CHANNEL, thread_ts="1.000001", **to())) == "invalid_thread_ts"
        assert await error_of(start(channel=CHANNEL, thread_ts=ts)) == "missing_recipient_user_id"
        assert (await error_of(start(channel=CHANNEL, thread_ts=ts, recipient_user_id=ALICE))
                == "missing_recipient_team_id")  # fmt: skip
        assert (await error_of(start(channel=CHANNEL, thread_ts=ts, recipient_team_id=TEAM))
                == "missing_recipient_user_id")  # fmt: skip
        assert (await error_of(start(channel=CHANNEL, thread_ts=ts, recipient_user_id="alice",
                                     recipient_team_id=TEAM)) == "user_not_found")  # fmt: skip
        assert (await error_of(start(channel=CHANNEL, thread_ts=ts, task_display_mode="list", **to()))
                == "invalid_arguments")  # fmt: skip
        other = await root(double, "C0OTHER")
        double.not_member.add("C0OTHER")
        assert await error_of(start(channel="C0OTHER", thread_ts=other, **to())) == "not_in_channel"
        assert double.stream_messages(CHANNEL) == []  # no failed call left a message behind

        # a DM needs no recipient (reference §13.2: "required when streaming to channels")
        dm_root = await root(double, DM)
        resp = await start(channel=DM, thread_ts=dm_root, markdown_text="hi")
        assert resp["ok"] and resp["channel"] == DM and resp["ts"]
        # a reply's ts names its thread
        reply = await double.post_message(BOB, CHANNEL, "me too", thread_ts=ts)
        resp = await start(channel=CHANNEL, thread_ts=reply, markdown_text="x", **to(BOB))
        msg = double.message(CHANNEL, resp["ts"])
        assert msg is not None and msg.thread_ts == ts and msg.stream is not None
        assert msg.stream.recipient_user_id == BOB and msg.stream.recipient_team_id == TEAM


async def test_markdown_text_and_chunks_build_the_message() -> None:
    async with SlackDouble(rate_limits=GENEROUS) as double:
        client = web_client(double)
        thread = await root(double)
        ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="Looking at ",
                                            **to()))["ts"]  # fmt: skip
        await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="`parser.py`.")
        await client.chat_appendStream(
            channel=CHANNEL,
            ts=ts,
            chunks=[TaskUpdateChunk(id="t1", title="Run tests", status="in_progress", details="pytest -q"),
                    MarkdownTextChunk(text="\n\nTests are running.")],  # fmt: skip
        )
        # same id: title/status replace, details append (reference §14 field notes)
        await client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[
            {"type": "task_update", "id": "t1", "title": "Run tests", "status": "complete",
             "details": " -x", "output": "3 passed"},
            {"type": "blocks", "blocks": [{"type": "divider"}]}])  # fmt: skip

        # argument errors change nothing
        both = client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="a",
                                        chunks=[MarkdownTextChunk(text="b")])  # fmt: skip
        assert await error_of(both) == "invalid_arguments"
        assert await error_of(client.chat_appendStream(channel=CHANNEL, ts=ts)) == "no_text"
        assert await error_of(client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="")) == "no_text"
        assert await error_of(client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[])) == "no_text"
        with pytest.raises(SlackApiError) as err:
            await client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[
                {"type": "task_update", "id": "t2", "title": "Lint", "status": "done"}])  # fmt: skip
        assert err.value.response["error"] == "invalid_chunks"
        assert "status" in err.value.response["response_metadata"]["messages"][0]
        unknown = client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[{"type": "image", "url": "x"}])
        assert await error_of(unknown) == "invalid_chunks"
        no_title = client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[{"type": "plan_update"}])
        assert await error_of(no_title) == "invalid_chunks"
        bad_block = client.chat_appendStream(channel=CHANNEL, ts=ts,
                                             chunks=[{"type": "blocks", "blocks": [{"type": "nope"}]}])  # fmt: skip
        assert await error_of(bad_block) == "invalid_blocks"
        fifty = [{"type": "divider"}] * 50
        too_many = client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[{"type": "blocks", "blocks": fifty}])
        assert await error_of(too_many) == "invalid_blocks"  # 1 + 50 chunk blocks > 50 (§14)

        msg = double.message(CHANNEL, ts)
        assert msg is not None and msg.stream is not None and msg.stream.appends == 3
        assert msg.text == "Looking at `parser.py`.\n\nTests are running."
        assert [b["type"] for b in msg.blocks] == ["markdown", "task_card", "markdown", "divider"]
        card = msg.blocks[1]
        assert (card["task_id"], card["status"]) == ("t1", "complete")
        visible = double.visible_text(msg)
        assert visible.startswith("Looking at `parser.py`.\n[complete] Run tests\npytest -q -x\n3 passed\n")
        assert visible.endswith("Tests are running.")
        assert msg.edited is None  # appending is not editing
        # what the Web API returns for it
        replies = await client.conversations_replies(channel=CHANNEL, ts=thread)
        assert replies["messages"][1]["text"] == msg.text and replies["messages"][1]["bot_id"] == "B0BOT"

        # plan mode: every task in one plan block, titled by plan_update
        ts2 = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, task_display_mode="plan", **to(),
                                             chunks=[PlanUpdateChunk(title="Fix the parser")]))["ts"]  # fmt: skip
        await client.chat_appendStream(channel=CHANNEL, ts=ts2, chunks=[
            TaskUpdateChunk(id="a", title="Read", status="complete"),
            TaskUpdateChunk(id="b", title="Patch", status="in_progress")])  # fmt: skip
        plan = double.message(CHANNEL, ts2)
        assert plan is not None and [b["type"] for b in plan.blocks] == ["plan"]
        assert [t["task_id"] for t in plan.blocks[0]["tasks"]] == ["a", "b"]
        assert double.visible_text(plan) == "Fix the parser\n[complete] Read\n[in_progress] Patch"


async def test_markdown_text_limit_is_12000_characters_per_call_and_per_chunk() -> None:
    async with SlackDouble(rate_limits=GENEROUS) as double:
        client = web_client(double)
        thread = await root(double)
        over = client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="x" * 12_001, **to())
        assert await error_of(over) == "msg_too_long"
        ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="a" * 12_000,
                                            **to()))["ts"]  # fmt: skip
        long_append = client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="b" * 12_001)
        assert await error_of(long_append) == "msg_too_long"
        chunk = client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=[MarkdownTextChunk(text="c" * 12_001)])
        assert await error_of(chunk) == "msg_too_long"
        stop = client.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text="d" * 12_001)
        assert await error_of(stop) == "msg_too_long"
        # the limit is per call / per chunk, not per message
        await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="b" * 12_000)
        two = [MarkdownTextChunk(text="c" * 7_000), MarkdownTextChunk(text="d" * 7_000)]
        await client.chat_appendStream(channel=CHANNEL, ts=ts, chunks=two)
        await client.chat_stopStream(channel=CHANNEL, ts=ts)
        msg = double.message(CHANNEL, ts)
        assert msg is not None and len(msg.text) == 38_000
        assert msg.stream is not None and msg.stream.state == "stopped"


async def test_stream_expires_and_keeps_what_was_appended() -> None:
    async with SlackDouble(stream_expiry=0.5) as double:
        client = web_client(double)
        thread = await root(double)
        ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="a", **to()))["ts"]
        await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="b")
        helper = await client.chat_stream(channel=CHANNEL, thread_ts=thread, buffer_size=1, **to())
        await helper.append(markdown_text="first")  # starts the helper's stream
        await asyncio.sleep(0.55)

        late = client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="c")
        assert await error_of(late) == "message_not_in_streaming_state"
        assert await error_of(client.chat_stopStream(channel=CHANNEL, ts=ts)) == "message_not_in_streaming_state"
        msg = double.message(CHANNEL, ts)
        assert msg is not None and msg.stream is not None and msg.stream.state == "expired"
        assert msg.stream.ended == pytest.approx(msg.stream.started + 0.5)
        assert double.visible_text(msg) == "ab"
        assert double.visible_to(msg, ALICE) == double.visible_to(msg, BOB) == "ab"

        # the SDK helper raises on its next flush; .ts is there for the chat.update fallback (§13.1)
        assert await error_of(helper.append(markdown_text=" second")) == "message_not_in_streaming_state"
        assert await error_of(helper.stop()) == "message_not_in_streaming_state"
        assert helper.ts is not None
        await client.chat_update(channel=CHANNEL, ts=helper.ts, markdown_text="first second (complete)")
        fallback = double.message(CHANNEL, helper.ts)
        assert fallback is not None and double.visible_text(fallback) == "first second (complete)"
        assert fallback.edited is not None


async def test_idle_expiry_when_configured() -> None:
    async with SlackDouble(stream_expiry=30, stream_idle_expiry=0.3) as double:
        client = web_client(double)
        ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=await root(double), **to()))["ts"]
        for word in ("keep ", "it ", "alive ", "longer "):  # 0.48 s in all, gaps well under 0.3 s
            await asyncio.sleep(0.12)
            await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=word)
        await asyncio.sleep(0.35)
        late = client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="too late")
        assert await error_of(late) == "message_not_in_streaming_state"
        msg = double.message(CHANNEL, ts)
        assert msg is not None and msg.text == "keep it alive longer " and msg.stream is not None
        assert msg.stream.ended == pytest.approx(msg.stream.last_activity + 0.3)


async def test_stopped_or_unknown_or_plain_messages_refuse_appends(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    thread = await root(slack_double)
    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="done", **to()))["ts"]
    bad_status = client.chat_stopStream(channel=CHANNEL, ts=ts, session_status="finished")
    assert await error_of(bad_status) == "invalid_arguments"
    bad_metadata = client.chat_stopStream(channel=CHANNEL, ts=ts, metadata="[1]")  # type: ignore[arg-type]
    assert await error_of(bad_metadata) == "invalid_metadata_format"
    stopped = await client.chat_stopStream(channel=CHANNEL, ts=ts, markdown_text=".", session_status="closed",
                                           metadata={"event_type": "turn", "event_payload": {"n": 1}})  # fmt: skip
    assert stopped["ts"] == ts and stopped["message"]["text"] == "done."
    assert stopped["message"]["metadata"]["event_type"] == "turn"
    msg = slack_double.message(CHANNEL, ts)
    assert msg is not None and msg.stream is not None and msg.stream.session_status == "closed"

    def append_to(ts: str) -> Awaitable[Any]:
        return client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="x")

    assert await error_of(append_to(ts)) == "message_not_in_streaming_state"
    assert await error_of(client.chat_stopStream(channel=CHANNEL, ts=ts)) == "message_not_in_streaming_state"
    plain = await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="plain")
    assert await error_of(append_to(plain["ts"])) == "message_not_in_streaming_state"
    assert await error_of(append_to("1.000001")) == "message_not_found"
    ts2 = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="gone", **to()))["ts"]
    await slack_double.delete_message(CHANNEL, ts2)
    assert await error_of(append_to(ts2)) == "message_not_found"


async def test_recipient_sees_live_text_others_see_first_chunk_until_stop(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    thread = await root(slack_double)
    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="Hello", **to()))["ts"]
    msg = slack_double.message(CHANNEL, ts)
    assert msg is not None
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" world")
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="!")
    assert slack_double.visible_to(msg, ALICE) == "Hello world!"
    assert slack_double.visible_to(msg, BOB) == "Hello"
    await client.chat_stopStream(channel=CHANNEL, ts=ts, blocks=FEEDBACK)
    assert slack_double.visible_to(msg, BOB) == slack_double.visible_to(msg, ALICE) == "Hello world!"

    alice = slack_double.viewer_history(msg, ALICE)
    bob = slack_double.viewer_history(msg, BOB)
    assert [text for _, text in alice] == ["Hello", "Hello world", "Hello world!"]
    assert [text for _, text in bob] == ["Hello", "Hello world!"]
    assert msg.stream is not None and bob[1][0] == msg.stream.ended
    assert [t for t, _ in alice] == sorted(t for t, _ in alice)

    # an empty start: others see nothing until the first content arrives, then only that
    ts2 = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, **to()))["ts"]
    msg2 = slack_double.message(CHANNEL, ts2)
    assert msg2 is not None and slack_double.visible_to(msg2, BOB) == ""
    await client.chat_appendStream(channel=CHANNEL, ts=ts2, markdown_text="First")
    await client.chat_appendStream(channel=CHANNEL, ts=ts2, markdown_text=" and more")
    assert slack_double.visible_to(msg2, BOB) == "First"
    assert slack_double.visible_to(msg2, ALICE) == "First and more"

    # in a DM the one person there is the live viewer, recipient or not
    dm_thread = await root(slack_double, DM)
    dm_ts = (await client.chat_startStream(channel=DM, thread_ts=dm_thread, markdown_text="a"))["ts"]
    await client.chat_appendStream(channel=DM, ts=dm_ts, markdown_text="b")
    dm_msg = slack_double.message(DM, dm_ts)
    assert dm_msg is not None and slack_double.visible_to(dm_msg, ALICE) == "ab"


async def test_chat_stream_helper_buffers_then_stops_with_feedback_row(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    thread = await root(slack_double)
    stream = await client.chat_stream(channel=CHANNEL, thread_ts=thread, buffer_size=20, **to())
    assert await stream.append(markdown_text="Short ") is None  # buffered: no call yet
    assert stream_calls(slack_double) == [] and stream.ts is None
    await stream.append(markdown_text="text crossing the buffer")  # flush -> chat.startStream
    assert stream.ts is not None
    await stream.append(markdown_text=" tail")  # buffered again
    await stream.append(chunks=[TaskUpdateChunk(id="t1", title="Run tests", status="complete")])  # flush now
    await stream.stop(markdown_text=" Done.", blocks=FEEDBACK)
    assert stream_calls(slack_double) == [("chat.startStream", None), ("chat.appendStream", None),
                                          ("chat.stopStream", None)]  # fmt: skip
    msg = slack_double.message(CHANNEL, stream.ts)
    assert msg is not None and msg.text == "Short text crossing the buffer tail Done."
    assert [b["type"] for b in msg.blocks] == ["markdown", "task_card", "markdown", "context_actions"]
    assert msg.blocks[-1]["elements"][0]["type"] == "feedback_buttons"
    # another member: the first chunk, then the finished message (its last chunk included)
    bob = slack_double.viewer_history(msg, BOB)
    assert [text for _, text in bob] == ["Short text crossing the buffer", slack_double.visible_text(msg)]
    assert len(slack_double.viewer_history(msg, ALICE)) == 3
    with pytest.raises(SlackRequestError):
        await stream.append(markdown_text="more")

    # stop() without any flush starts an empty stream and stops it with the buffer (§9.3)
    one_shot = await client.chat_stream(channel=CHANNEL, thread_ts=thread, **to())
    await one_shot.append(markdown_text="All in one go.")
    await one_shot.stop()
    assert one_shot.ts is not None
    done = slack_double.message(CHANNEL, one_shot.ts)
    assert done is not None and done.text == "All in one go." and done.stream is not None
    assert [text for _, text in done.versions] == ["", "All in one go."]


async def test_user_stops_the_stream_app_gets_agent_session_stopped(slack_double: SlackDouble) -> None:
    events: list[dict[str, Any]] = []
    async with bolt(slack_double) as app:

        @app.event("agent_session_stopped")
        async def on_stopped(event: dict[str, Any]) -> None:
            events.append(event)

        thread = await root(slack_double)
        ts = (await app.client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="Working",
                                                **to()))["ts"]  # fmt: skip
        await app.client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=" on it")
        env_id = await slack_double.stop_stream_by_user(CHANNEL, ts, ALICE)
        assert env_id is not None
        await slack_double.wait_acked(env_id, 3)
        await slack_double.wait_for(lambda: events, 3)

        append = app.client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="more")
        assert await error_of(append) == "stopped_by_user"
        assert await error_of(app.client.chat_stopStream(channel=CHANNEL, ts=ts)) == "stopped_by_user"
        slack_double.user_stop_error = "message_not_in_streaming_state"  # the other reported answer
        append = app.client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="more")
        assert await error_of(append) == "message_not_in_streaming_state"

    event = events[0]
    assert event["type"] == "agent_session_stopped" and event["channel"] == CHANNEL
    assert event["thread_ts"] == thread and event["user"] == ALICE and event["event_ts"]
    assert event["streaming_message_ts"] == [ts]
    msg = slack_double.message(CHANNEL, ts)
    assert msg is not None and msg.stream is not None
    assert (msg.stream.state, msg.stream.stopped_by) == ("stopped_by_user", ALICE)
    assert slack_double.visible_to(msg, BOB) == "Working on it"  # finalized for everyone
    with pytest.raises(ValueError):
        await slack_double.stop_stream_by_user(CHANNEL, ts, ALICE)


async def test_set_status_lifecycle() -> None:
    async with SlackDouble(rate_limits=GENEROUS) as double:
        client = web_client(double)
        thread = await root(double)

        async def status(text: str, **kw: Any) -> None:
            await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=thread, status=text, **kw)

        await status("is thinking…", loading_messages=["Reading the code…", "Running tests…"])
        assert double.thread_status(CHANNEL, thread) == "is thinking…"
        reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="first answer")
        assert double.thread_status(CHANNEL, thread) == ""  # a reply clears it
        await status("is running tests…")
        await client.chat_update(channel=CHANNEL, ts=reply["ts"], text="first answer, edited")
        assert double.thread_status(CHANNEL, thread) == "is running tests…"  # an edit does not
        await status("")
        assert double.thread_status(CHANNEL, thread) == ""
        double.status_expiry = 0.2  # 2 minutes in Slack; short only for this step
        await status("is waiting…")
        await asyncio.sleep(0.25)
        assert double.thread_status(CHANNEL, thread) == ""
        double.status_expiry = 120.0
        await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=reply["ts"], status="again")
        assert double.thread_status(CHANNEL, thread) == "again"  # a reply's ts names its thread
        await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="streamed", **to())
        assert double.thread_status(CHANNEL, thread) == ""  # a streamed reply is a reply

        history = double.status_history(CHANNEL, thread)
        assert [(c.reason, c.status) for c in history] == [
            ("set", "is thinking…"), ("posted", ""), ("set", "is running tests…"), ("cleared", ""),
            ("set", "is waiting…"), ("expired", ""), ("set", "again"), ("posted", "")]  # fmt: skip
        assert history[0].loading_messages == ["Reading the code…", "Running tests…"]
        assert history[5].time == pytest.approx(history[4].time + 0.2)

        eleven = [f"step {i}" for i in range(11)]
        assert await error_of(status("busy", loading_messages=eleven)) == "invalid_arguments"
        no_status = client.api_call("assistant.threads.setStatus", json={"channel_id": CHANNEL, "thread_ts": thread})
        assert await error_of(no_status) == "invalid_arguments"
        # the call log keeps every accepted call, "" included (unchanged behaviour)
        calls = [s.status for s in double.statuses]
        assert calls == ["is thinking…", "is running tests…", "", "is waiting…", "again"]


async def test_stream_and_status_rate_tiers_answer_429_with_retry_after() -> None:
    async with SlackDouble() as double:  # Slack's tiers (reference §16), default burst
        client = web_client(double)
        thread = await root(double)
        ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="go", **to()))["ts"]
        outcomes: list[str] = []
        retry_after: list[str] = []
        for i in range(14):  # Tier 4: 100/min, bursts of 10
            try:
                await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text=f" {i}")
                outcomes.append("ok")
            except SlackApiError as err:
                assert err.response.status_code == 429
                assert err.response["error"] == "ratelimited"
                retry_after.append(err.response.headers["Retry-After"])
                outcomes.append("429")
        assert outcomes[:10] == ["ok"] * 10 and "429" in outcomes[10:]
        assert all(r.isdigit() and int(r) >= 1 for r in retry_after)
        msg = double.message(CHANNEL, ts)
        assert msg is not None and msg.stream is not None and msg.stream.appends == outcomes.count("ok")

        for _ in range(4):  # Tier 2: 20/min, bursts of 5 (one start already spent)
            await client.chat_startStream(channel=CHANNEL, thread_ts=thread, **to())
        with pytest.raises(SlackApiError) as err:
            await client.chat_startStream(channel=CHANNEL, thread_ts=thread, **to())
        assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"].isdigit()

        # setStatus: special, per thread — another thread has its own allowance
        other = await root(double)
        for _ in range(5):
            await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=thread, status="busy")
        with pytest.raises(SlackApiError) as err:
            await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=thread, status="busy")
        assert err.value.response.status_code == 429
        await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=other, status="busy")
        assert double.rate_limited.count("chat.appendStream") == outcomes.count("429")
        assert "chat.startStream" in double.rate_limited and "assistant.threads.setStatus" in double.rate_limited


async def test_inject_works_for_stream_methods(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    thread = await root(slack_double)
    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="a", **to()))["ts"]
    slack_double.inject("chat.appendStream", status=429, retry_after=7)
    with pytest.raises(SlackApiError) as err:
        await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="b")
    assert err.value.response.status_code == 429 and err.value.response.headers["Retry-After"] == "7"
    slack_double.inject("chat.stopStream", error="message_not_in_streaming_state")
    assert await error_of(client.chat_stopStream(channel=CHANNEL, ts=ts)) == "message_not_in_streaming_state"
    await client.chat_appendStream(channel=CHANNEL, ts=ts, markdown_text="c")  # the faults are used up
    await client.chat_stopStream(channel=CHANNEL, ts=ts)
    msg = slack_double.message(CHANNEL, ts)
    assert msg is not None and msg.text == "ac" and msg.stream is not None and msg.stream.state == "stopped"


async def test_feedback_row_is_validated_everywhere() -> None:
    async with SlackDouble(rate_limits={**GENEROUS, "chat.postMessage": 6000}) as slack_double:
        await _feedback_row_checks(slack_double)


async def _feedback_row_checks(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    thread = await root(slack_double)
    sdk_row = ContextActionsBlock(block_id="fb2", elements=[FeedbackButtonsElement(
        action_id="fb", positive_button=FeedbackButtonObject(text="Good", value="good"),
        negative_button=FeedbackButtonObject(text="Bad", value="bad"))])  # fmt: skip
    posted = await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="answer", blocks=[sdk_row])
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="answer", blocks=FEEDBACK)

    def row(**element: Any) -> list[dict[str, Any]]:
        el = {**FEEDBACK[0]["elements"][0], **element}
        return [{"type": "context_actions", "elements": [{k: v for k, v in el.items() if v is not None}]}]

    bad_rows = [
        row(negative_button=None),
        row(action_id=None),
        row(positive_button={"text": {"type": "mrkdwn", "text": "*Good*"}, "value": "good"}),
        row(positive_button={"text": {"type": "plain_text", "text": "G" * 76}, "value": "good"}),
        row(negative_button={"text": {"type": "plain_text", "text": "Bad"}}),
        [{"type": "context_actions", "elements": []}],
        [{"type": "context_actions", "elements": [{"type": "button", "text": {"type": "plain_text", "text": "x"}}]}],
        [{"type": "context_actions", "elements": [
            {"type": "icon_button", "icon": "trash", "text": {"type": "plain_text", "text": "Delete"},
             "action_id": f"i{i}"} for i in range(6)]}],  # fmt: skip
    ]
    for blocks in bad_rows:
        with pytest.raises(SlackApiError) as err:
            await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="x", blocks=blocks)
        assert err.value.response["error"] == "invalid_blocks", blocks
        assert "json-pointer:/blocks/0" in err.value.response["response_metadata"]["messages"][0]
    icon_ok = [{"type": "context_actions", "elements": [
        {"type": "icon_button", "icon": "trash", "text": {"type": "plain_text", "text": "Delete"},
         "action_id": "del", "value": "x", "visible_to_user_ids": [ALICE]}]}]  # fmt: skip
    await client.chat_postMessage(channel=CHANNEL, thread_ts=thread, text="x", blocks=icon_ok)

    ts = (await client.chat_startStream(channel=CHANNEL, thread_ts=thread, markdown_text="a", **to()))["ts"]
    assert await error_of(client.chat_stopStream(channel=CHANNEL, ts=ts, blocks=bad_rows[0])) == "invalid_blocks"
    msg = slack_double.message(CHANNEL, ts)
    assert msg is not None and msg.stream is not None and msg.stream.streaming  # the failed stop did nothing
    await client.chat_stopStream(channel=CHANNEL, ts=ts, blocks=FEEDBACK)
    assert msg.blocks[-1] == FEEDBACK[0]


async def test_feedback_click_reaches_bolt_action_listener(slack_double: SlackDouble) -> None:
    clicked: list[tuple[dict[str, Any], dict[str, Any]]] = []
    async with bolt(slack_double) as app:

        @app.action("feedback")
        async def on_feedback(ack: Any, body: dict[str, Any], action: dict[str, Any]) -> None:
            await ack()
            clicked.append((action, body))

        thread = await root(slack_double)
        stream = await app.client.chat_stream(channel=CHANNEL, thread_ts=thread, **to())
        await stream.append(markdown_text="Here is the fix.")
        await stream.stop(blocks=FEEDBACK)
        assert stream.ts is not None
        env_id = await slack_double.click_feedback(BOB, CHANNEL, stream.ts, positive=False)
        ack = await slack_double.wait_acked(env_id, 3)
        await slack_double.wait_for(lambda: clicked, 3)
        good = await slack_double.click_feedback(ALICE, CHANNEL, stream.ts)
        await slack_double.wait_acked(good, 3)
        await slack_double.wait_for(lambda: len(clicked) == 2, 3)
    assert ack.payload is None
    action, body = clicked[0]
    assert action["type"] == "feedback_buttons" and action["action_id"] == "feedback"
    assert action["block_id"] == "fb" and action["value"] == "bad" and action["text"]["text"] == "Bad"
    assert action["action_ts"]
    assert body["type"] == "block_actions" and body["user"]["id"] == BOB
    assert body["container"]["message_ts"] == stream.ts and body["container"]["thread_ts"] == thread
    assert body["message"]["blocks"][-1]["type"] == "context_actions"
    assert clicked[1][0]["value"] == "good" and clicked[1][1]["user"]["id"] == ALICE
    with pytest.raises(ValueError):
        await slack_double.click_feedback(BOB, CHANNEL, thread)  # no feedback row there


async def test_bolt_set_status_and_say_stream_on_a_channel_mention(slack_double: SlackDouble) -> None:
    done = asyncio.Event()
    async with bolt(slack_double) as app:

        @app.event("app_mention")
        async def on_mention(set_status: Any, say_stream: Any) -> None:
            await set_status(status="is thinking…", loading_messages=["Reading the code…"])
            streamer = await say_stream(buffer_size=1)
            await streamer.append(markdown_text="On it.")
            await streamer.append(markdown_text=" Done.")
            await streamer.stop(blocks=FEEDBACK)
            done.set()

        thread = await slack_double.mention(ALICE, CHANNEL, "refactor the parser")
        await asyncio.wait_for(done.wait(), 5)

    [msg] = slack_double.stream_messages(CHANNEL)
    assert msg.stream is not None and msg.thread_ts == thread
    assert (msg.stream.recipient_user_id, msg.stream.recipient_team_id) == (ALICE, TEAM)
    assert [c.reason for c in slack_double.status_history(CHANNEL, thread)] == ["set", "posted"]
    alice = slack_double.viewer_history(msg, ALICE)
    bob = slack_double.viewer_history(msg, BOB)
    assert [text for _, text in alice] == [text for _, text in bob] == ["On it.", "On it. Done."]
    assert alice[1][0] < bob[1][0] == msg.stream.ended  # Bob saw the rest only once it stopped
