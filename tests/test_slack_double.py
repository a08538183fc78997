"""The Slack double, driven by the REAL slack-bolt / slack_sdk clients (no patching).

These tests pin the behaviours the bot relies on: acks, the double mention events, the echo
of the bot's own posts, redelivery, 429 + Retry-After, message limits, files v2, slash
commands, reconnects, and the faults and timings tests schedule (``inject``, ``delete_message``,
``Message.versions``). If one of them fails, either the double or the clients changed.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.doubles.slack import PROXY_ENV_VARS, SlackDouble, slack_double  # noqa: F401

# slack_sdk reads HTTP(S)_PROXY and ignores NO_PROXY: loopback traffic must not go to a proxy.
for _var in PROXY_ENV_VARS:
    os.environ.pop(_var, None)

CHANNEL = "C0CHAN"


@asynccontextmanager
async def bolt(
    double: SlackDouble, setup: Callable[[AsyncApp], None] | None = None
) -> AsyncIterator[AsyncApp]:
    """An AsyncApp connected over Socket Mode to the double; the handler is always closed.

    ``setup`` registers listeners before connecting (needed when envelopes are already queued).
    """
    client = AsyncWebClient(token=double.bot_token, base_url=double.api_url)
    app = AsyncApp(client=client)
    if setup is not None:
        setup(app)
    handler = AsyncSocketModeHandler(app, app_token=double.app_token)
    try:
        await handler.connect_async()
        await double.wait_connected(5)
        yield app
    finally:
        await handler.close_async()


def web_client(double: SlackDouble) -> AsyncWebClient:
    return AsyncWebClient(token=double.bot_token, base_url=double.api_url)


async def test_mention_is_acked_fast_and_reply_lands_in_thread(slack_double: SlackDouble) -> None:
    seen: list[str] = []

    async with bolt(slack_double) as app:

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any], say: Any) -> None:
            seen.append("app_mention")
            await say(text="on it", thread_ts=event["ts"])

        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            seen.append(f"message:{event.get('bot_id')}")

        ts = await slack_double.mention("U0ALICE", CHANNEL, "refactor the parser")
        thread = await slack_double.wait_for(
            lambda: len(t := slack_double.thread(CHANNEL, ts)) == 2 and t
        )
        await slack_double.wait_for(lambda: len(slack_double.acks) >= 3)  # 2 events + echo

    parent, reply = thread
    assert parent.user == "U0ALICE" and "<@U0BOT>" in parent.text and parent.reply_count == 1
    assert reply.user == "U0BOT" and reply.bot_id == "B0BOT" and reply.thread_ts == ts
    assert slack_double.visible_text(reply) == "on it"
    # one stored message, two events with different event_ids, both acked quickly
    events = [f["payload"] for f in slack_double.frames_sent if f["type"] == "events_api"]
    human = [p for p in events if p["event"]["ts"] == ts]
    assert sorted(p["event"]["type"] for p in human) == ["app_mention", "message"]
    assert len({p["event_id"] for p in human}) == 2
    assert len(slack_double.messages(CHANNEL)) == 2
    for ack in slack_double.acks.values():
        assert ack.latency < 1.0 and ack.payload is None
    # the bot's echo was acked but Bolt dropped it (IgnoringSelfEvents)
    assert seen.count("app_mention") == 1 and "message:B0BOT" not in seen


async def test_own_post_is_echoed_and_ignored_by_bolt(slack_double: SlackDouble) -> None:
    handled: list[dict[str, Any]] = []
    async with bolt(slack_double) as app:

        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            handled.append(event)

        resp = await app.client.chat_postMessage(channel=CHANNEL, text="hello")
        assert resp["message"]["bot_id"] == "B0BOT" and resp["message"]["user"] == "U0BOT"
        echo = await slack_double.wait_for(
            lambda: [f for f in slack_double.frames_sent if f["payload"]["event"]["ts"] == resp["ts"]]
        )
        await slack_double.wait_acked(echo[0]["envelope_id"], 3)
        event = echo[0]["payload"]["event"]
        assert event["type"] == "message" and "subtype" not in event
        assert event["bot_id"] == "B0BOT" and event["app_id"] == "A0FAKE"
        # an edit echoes message_changed, also acked and ignored
        await app.client.chat_update(channel=CHANNEL, ts=resp["ts"], text="hello again")
        changed = await slack_double.wait_for(
            lambda: [f for f in slack_double.frames_sent
                     if f["payload"]["event"].get("subtype") == "message_changed"]  # fmt: skip
        )
        await slack_double.wait_acked(changed[0]["envelope_id"], 3)
    assert handled == []
    msg = slack_double.message(CHANNEL, resp["ts"])
    assert msg is not None and msg.text == "hello again" and msg.edits[0]["text"] == "hello"


async def test_unacked_envelope_is_redelivered() -> None:
    async with SlackDouble(redelivery_timeout=0.2) as double, bolt(double):
        # no listener for reaction_added -> Bolt answers 404 -> no ack -> Slack retries
        env_id = await double.send_event(
            {"type": "reaction_added", "user": "U0ALICE", "reaction": "eyes",
             "item": {"type": "message", "channel": CHANNEL, "ts": "1.000001"},
             "event_ts": "1700000000.000100"}  # fmt: skip
        )
        await double.wait_for(lambda: double.envelopes[env_id].given_up, 5)
        attempts = [
            (f["retry_attempt"], f["retry_reason"]) for f in double.frames_sent if f["envelope_id"] == env_id
        ]
    assert attempts == [(0, ""), (1, "timeout"), (2, "timeout"), (3, "timeout")]
    assert env_id not in double.acks


async def test_chat_update_burst_gets_429_and_retry_handler_absorbs_it() -> None:
    async with SlackDouble(rate_limits={"chat.update": 60}, burst=3) as double:
        client = web_client(double)
        posted = await client.chat_postMessage(channel=CHANNEL, text="v0")
        for i in range(3):
            await client.chat_update(channel=CHANNEL, ts=posted["ts"], text=f"v{i + 1}")
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="too fast")
        assert err.value.response.status_code == 429
        assert err.value.response["error"] == "ratelimited"
        retry_after = err.value.response.headers["Retry-After"]
        assert retry_after.isdigit() and int(retry_after) >= 1
        assert double.rate_limited == ["chat.update"]

        client.retry_handlers.append(AsyncRateLimitErrorRetryHandler(max_retry_count=3))
        started = time.monotonic()
        resp = await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="final")
        assert resp["ok"] and time.monotonic() - started >= 0.5
        msg = double.message(CHANNEL, posted["ts"])
        assert msg is not None and msg.text == "final"
        assert [e["text"] for e in msg.edits] == ["v0", "v1", "v2", "v3"]


async def test_message_limits_are_enforced() -> None:
    # many calls in a row: lift the per-channel postMessage limit for this test
    async with SlackDouble(burst=50) as slack_double:
        await _check_limits(slack_double)


async def _check_limits(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)

    async def error_of(method: str, **kwargs: Any) -> str:
        with pytest.raises(SlackApiError) as err:
            await client.api_call(method, json=kwargs)
        assert err.value.response.status_code == 200
        return str(err.value.response["error"])

    md = {"type": "markdown", "text": "x" * 7000}
    assert await error_of("chat.postMessage", channel=CHANNEL, text="x" * 40_001) == "msg_too_long"
    assert await error_of("chat.postMessage", channel=CHANNEL, text="t", blocks=[md, md]) == (
        "msg_blocks_too_long"
    )
    big = {"type": "markdown", "text": "x" * 12_001}
    assert await error_of("chat.postMessage", channel=CHANNEL, text="t", blocks=[big]) == "invalid_blocks"
    section = {"type": "section", "text": {"type": "mrkdwn", "text": "x" * 3001}}
    assert await error_of("chat.postMessage", channel=CHANNEL, text="t", blocks=[section]) == (
        "invalid_blocks"
    )
    many = [{"type": "divider"}] * 51
    assert await error_of("chat.postMessage", channel=CHANNEL, text="t", blocks=many) == "invalid_blocks"
    assert await error_of("chat.postMessage", channel=CHANNEL, markdown_text="x" * 12_001) == "msg_too_long"
    assert await error_of("chat.postMessage", channel=CHANNEL, text="a", markdown_text="b") == (
        "markdown_text_conflict"
    )
    assert await error_of("chat.postMessage", channel=CHANNEL) == "no_text"
    assert await error_of("no.such_method") == "unknown_method"

    ok = await client.chat_postMessage(channel=CHANNEL, text="fallback", blocks=[md])
    assert slack_double.visible_text(slack_double.message(CHANNEL, ok["ts"])) == md["text"]  # type: ignore[arg-type]
    # chat.update applies the cumulative markdown limit to the edited message too
    assert await error_of("chat.update", channel=CHANNEL, ts=ok["ts"], blocks=[md, md]) == (
        "msg_blocks_too_long"
    )
    # a human message cannot be edited by the bot
    human_ts = await slack_double.post_message("U0BOB", CHANNEL, "mine")
    assert await error_of("chat.update", channel=CHANNEL, ts=human_ts, text="x") == "cant_update_message"
    assert await error_of("chat.update", channel=CHANNEL, ts="1.000000", text="x") == "message_not_found"
    bad = AsyncWebClient(token="xoxb-wrong", base_url=slack_double.api_url)
    with pytest.raises(SlackApiError) as err:
        await bad.auth_test()
    assert err.value.response["error"] == "invalid_auth"


async def test_files_upload_v2_into_thread_and_private_download(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    root = await slack_double.post_message("U0ALICE", CHANNEL, "please attach the log")
    resp = await client.files_upload_v2(
        channel=CHANNEL, thread_ts=root, content=b"line 1\nline 2\n", filename="run.log",
        initial_comment="here it is",
    )  # fmt: skip
    file_id = resp["file"]["id"]
    thread = slack_double.thread(CHANNEL, root)
    assert [m.user for m in thread] == ["U0ALICE", "U0BOT"]
    assert thread[1].files[0]["id"] == file_id and thread[1].text == "here it is"
    assert slack_double.file_content(file_id) == b"line 1\nline 2\n"

    human_file = slack_double.add_file("notes.txt", b"hello", user="U0ALICE")
    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {slack_double.bot_token}"}
        async with http.get(human_file["url_private_download"], headers=auth) as r:
            assert r.status == 200 and await r.read() == b"hello"
        async with http.get(human_file["url_private"]) as r:  # no token: Slack's sign-in page
            assert r.content_type == "text/html"


async def test_slash_command_acked_with_ephemeral_payload(slack_double: SlackDouble) -> None:
    async with bolt(slack_double) as app:

        @app.command("/maison")
        async def on_command(ack: Any, command: dict[str, Any], respond: Any) -> None:
            await ack(response_type="ephemeral", text=f"got `{command['text']}`")
            await respond(text="done", response_type="ephemeral")

        ack = await slack_double.slash_command("U0ALICE", CHANNEL, "status")
        await slack_double.wait_for(lambda: slack_double.responses)
    assert ack.latency < 3.0 and not ack.late
    assert ack.payload == {"text": "got `status`", "response_type": "ephemeral"}
    # Bolt sends the ack frame from a 10 ms polling loop, so respond() may win the race
    sources = {e.text: e.source for e in slack_double.ephemerals(CHANNEL, "U0ALICE")}
    assert sources == {"got `status`": "ack", "done": "response_url"}
    assert slack_double.messages(CHANNEL) == []  # ephemerals never become channel messages
    assert slack_double.responses[0].status == 200


async def test_button_click_reaches_action_listener(slack_double: SlackDouble) -> None:
    clicked: list[str] = []
    async with bolt(slack_double) as app:

        @app.action("approve")
        async def on_approve(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            clicked.append(body["actions"][0]["value"])

        blocks = [{"type": "actions", "block_id": "b1", "elements": [
            {"type": "button", "action_id": "approve", "value": "yes",
             "text": {"type": "plain_text", "text": "Approve"}}]}]  # fmt: skip
        posted = await app.client.chat_postMessage(channel=CHANNEL, text="approve?", blocks=blocks)
        env_id = await slack_double.click("U0ALICE", CHANNEL, posted["ts"], "approve", "yes")
        ack = await slack_double.wait_acked(env_id, 3)
        await slack_double.wait_for(lambda: clicked)
    assert ack.payload is None and clicked == ["yes"]


async def test_disconnect_then_reconnect_and_next_envelope_delivered(slack_double: SlackDouble) -> None:
    mentions: list[str] = []
    async with bolt(slack_double) as app:

        @app.event("app_mention")
        async def on_mention(event: dict[str, Any]) -> None:
            mentions.append(event["ts"])

        @app.event("message")
        async def on_message() -> None:
            pass

        await slack_double.disconnect("refresh_requested")
        await slack_double.wait_connected(5, total=2)
        ts = await slack_double.mention("U0BOB", CHANNEL, "still there?")
        await slack_double.wait_for(lambda: mentions == [ts], 5)
        opens = [c for c in slack_double.calls if c.method == "apps.connections.open"]
    assert len(opens) == 2 and slack_double.connections_opened == 2


async def test_web_api_surface(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    root = await slack_double.post_message("U0ALICE", CHANNEL, "hi")
    reply = await client.chat_postMessage(channel=CHANNEL, thread_ts=root, markdown_text="**bold**")
    await client.reactions_add(channel=CHANNEL, name="eyes", timestamp=root)
    with pytest.raises(SlackApiError) as err:
        await client.reactions_add(channel=CHANNEL, name="eyes", timestamp=root)
    assert err.value.response["error"] == "already_reacted"
    await client.reactions_remove(channel=CHANNEL, name="eyes", timestamp=root)
    with pytest.raises(SlackApiError) as err:
        await client.reactions_remove(channel=CHANNEL, name="eyes", timestamp=root)
    assert err.value.response["error"] == "no_reaction"

    replies = await client.conversations_replies(channel=CHANNEL, ts=root)
    assert [m["ts"] for m in replies["messages"]] == [root, reply["ts"]]
    assert replies["messages"][0]["reply_count"] == 1
    assert replies["messages"][1]["parent_user_id"] == "U0ALICE"
    history = await client.conversations_history(channel=CHANNEL)
    assert [m["ts"] for m in history["messages"]] == [root]
    assert (await client.users_info(user="U0ALICE"))["user"]["name"] == "alice"
    assert (await client.conversations_info(channel=CHANNEL))["channel"]["is_member"] is True
    link = await client.chat_getPermalink(channel=CHANNEL, message_ts=reply["ts"])
    assert f"thread_ts={root}" in link["permalink"]
    await client.assistant_threads_setStatus(channel_id=CHANNEL, thread_ts=root, status="thinking")
    assert slack_double.statuses[0].status == "thinking"

    await client.chat_postEphemeral(channel=CHANNEL, user="U0BOB", text="only you", thread_ts=root)
    assert [e.text for e in slack_double.ephemerals(user="U0BOB")] == ["only you"]
    assert len(slack_double.thread(CHANNEL, root)) == 2

    await client.chat_delete(channel=CHANNEL, ts=reply["ts"])
    assert [m.ts for m in slack_double.thread(CHANNEL, root)] == [root]
    assert slack_double.message(CHANNEL, root).reply_count == 0  # type: ignore[union-attr]
    with pytest.raises(SlackApiError) as err:
        await client.chat_delete(channel=CHANNEL, ts=root)
    assert err.value.response["error"] == "cant_delete_message"
    ts_values = [m.ts for m in slack_double.messages(CHANNEL)]
    assert all(len(t.split(".")[1]) == 6 for t in ts_values)


async def test_warning_disconnect_and_event_queued_before_connect(slack_double: SlackDouble) -> None:
    got: list[str] = []
    # sent while no app is connected: delivered once a connection exists
    early = await slack_double.post_message("U0ALICE", CHANNEL, "anyone?")

    def setup(app: AsyncApp) -> None:
        @app.event("message")
        async def on_message(event: dict[str, Any]) -> None:
            got.append(event["ts"])

    async with bolt(slack_double, setup):
        await slack_double.wait_for(lambda: early in got, 5)
        await slack_double.disconnect("warning", grace=5)
        await slack_double.wait_connected(5, total=2)
        late = await slack_double.post_message("U0ALICE", CHANNEL, "still?")
        await slack_double.wait_for(lambda: late in got, 5)
    assert got == [early, late]


async def test_injected_delay_holds_only_the_matching_call(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    root = await slack_double.post_message("U0ALICE", CHANNEL, "review this")
    slack_double.inject("reactions.add", delay=1.0, match=lambda args: args.get("name") == "eyes")

    async def timed(name: str) -> float:
        started = time.monotonic()
        await client.reactions_add(channel=CHANNEL, name=name, timestamp=root)
        return time.monotonic() - started

    slow, fast = await asyncio.gather(timed("eyes"), timed("white_check_mark"))
    assert slow >= 1.0 and fast < 0.5
    # after the wait the call was handled normally, and the log shows when each one finished
    msg = slack_double.message(CHANNEL, root)
    assert msg is not None and set(msg.reactions) == {"eyes", "white_check_mark"}
    calls = {c.args["name"]: c for c in slack_double.calls if c.method == "reactions.add"}
    eyes, check = calls["eyes"], calls["white_check_mark"]
    assert eyes.ok and check.ok and eyes.status == check.status == 200
    assert eyes.done is not None and check.done is not None
    assert eyes.done - eyes.time >= 1.0 and check.done < eyes.done


async def test_injected_errors_surface_as_slack_raises_them(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    posted = await client.chat_postMessage(channel=CHANNEL, text="working…")

    slack_double.inject("chat.update", error="internal_error")
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v1")
    assert err.value.response.status_code == 200 and err.value.response["error"] == "internal_error"
    assert (slack_double.calls[-1].ok, slack_double.calls[-1].error) == (False, "internal_error")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v1")  # count=1: used up

    slack_double.inject("chat.update", status=429, retry_after=7, count=2)
    for _ in range(2):
        with pytest.raises(SlackApiError) as err:
            await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v2")
        assert err.value.response.status_code == 429 and err.value.response["error"] == "ratelimited"
        assert err.value.response.headers["Retry-After"] == "7"
    assert slack_double.rate_limited == ["chat.update", "chat.update"]

    slack_double.inject("chat.postMessage", status=503)
    with pytest.raises(SlackApiError) as err:
        await client.chat_postMessage(channel=CHANNEL, text="hello?")
    assert err.value.response.status_code == 503 and err.value.response.data == {}
    assert slack_double.calls[-1].status == 503 and not slack_double.calls[-1].ok
    msg = slack_double.message(CHANNEL, posted["ts"])
    assert msg is not None and msg.text == "v1" and len(slack_double.messages(CHANNEL)) == 1


async def test_injected_disconnect_is_a_dropped_connection(slack_double: SlackDouble) -> None:
    """No HTTP answer at all: the client raises aiohttp's own error, not a Slack error."""
    client = web_client(slack_double)  # slack_sdk's default: one retry after a connection error
    posted = await client.chat_postMessage(channel=CHANNEL, text="working…")
    slack_double.inject("chat.update", disconnect=True, count=2)
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="lost")
    assert (slack_double.calls[-1].ok, slack_double.calls[-1].error) == (False, "disconnected")
    assert slack_double.message(CHANNEL, posted["ts"]).text == "working…"  # it had no effect
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="v1")  # the next call goes through
    assert slack_double.message(CHANNEL, posted["ts"]).text == "v1"


async def test_too_large_upload_fails_files_upload_v2(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    slack_double.inject("upload", status=413)
    with pytest.raises(SlackRequestError, match=r"Failed to upload a file \(status: 413"):
        await client.files_upload_v2(channel=CHANNEL, content=b"x" * 1024, filename="big.log")
    assert "files.completeUploadExternal" not in [c.method for c in slack_double.calls]
    assert slack_double.messages(CHANNEL) == []
    # the order is used up: the same upload now goes through
    await client.files_upload_v2(channel=CHANNEL, content=b"x" * 1024, filename="big.log")
    assert len(slack_double.messages(CHANNEL)) == 1


async def test_human_deletes_the_placeholder_then_update_fails(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    root = await slack_double.post_message("U0ALICE", CHANNEL, "fix the build")
    placeholder = await client.chat_postMessage(channel=CHANNEL, thread_ts=root, text="working…")
    await slack_double.delete_message(CHANNEL, placeholder["ts"])
    with pytest.raises(SlackApiError) as err:
        await client.chat_update(channel=CHANNEL, ts=placeholder["ts"], text="done")
    assert err.value.response["error"] == "message_not_found"
    assert [m.ts for m in slack_double.thread(CHANNEL, root)] == [root]
    assert [m.ts for m in slack_double.deleted] == [placeholder["ts"]]
    await slack_double.wait_for(
        lambda: [e for e in slack_double.envelopes.values()
                 if e.payload["event"].get("deleted_ts") == placeholder["ts"]]  # fmt: skip
    )
    with pytest.raises(ValueError):
        await slack_double.delete_message(CHANNEL, placeholder["ts"])


async def test_versions_time_what_the_user_saw(slack_double: SlackDouble) -> None:
    client = web_client(slack_double)
    posted = await client.chat_postMessage(channel=CHANNEL, text="working…")
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="step 1")
    md = {"type": "markdown", "text": "**done**"}
    await client.chat_update(channel=CHANNEL, ts=posted["ts"], text="fallback", blocks=[md])
    msg = slack_double.message(CHANNEL, posted["ts"])
    assert msg is not None
    times = [t for t, _ in msg.versions]
    assert [text for _, text in msg.versions] == ["working…", "step 1", "**done**"]  # blocks win
    assert times == sorted(times) and len(set(times)) == 3
    assert [e["text"] for e in msg.edits] == ["working…", "step 1"]  # unchanged for old users
