"""Buttons (interactivity): Stop on a running reply, the feedback row under an answer, and Keep
on the notice that an idle sandbox will be stopped."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.bot import REFUSAL, Services
from maison_slack.slack.idle import KEEP_ACTION
from maison_slack.slack.reply import FEEDBACK_ACTION, STOP_ACTION


def register(app: AsyncApp, services: Services) -> None:
    @app.action(STOP_ACTION)
    @services.in_flight.track
    async def on_stop(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body["container"]["channel_id"]
        if not services.settings.allowed(user, channel):
            await client.chat_postEphemeral(channel=channel, user=user, text=REFUSAL)
            return
        if not await services.conversations.stop_run(int(action["value"]), user):
            await client.chat_postEphemeral(channel=channel, user=user, text="That run has already finished.")

    @app.action(FEEDBACK_ACTION)
    @services.in_flight.track
    async def on_feedback(ack: AsyncAck, body: dict[str, Any], action: dict[str, Any],
                          client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        channel = (body.get("channel") or {}).get("id") or body["container"]["channel_id"]
        value, _, run_id = str(action.get("value") or "").partition(":")
        if value not in ("good", "bad") or not run_id.isdigit():
            return  # not a button of ours
        await services.store.record_feedback(int(run_id), user, value)
        thread_ts = (body.get("container") or {}).get("thread_ts")
        await client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts,
                                        text="Thanks, your feedback on this answer is recorded.")

    @app.action(KEEP_ACTION)
    @services.in_flight.track
    async def on_keep(ack: AsyncAck, body: dict[str, Any], client: AsyncWebClient) -> None:
        await ack()
        user = body["user"]["id"]
        container = body.get("container") or {}
        channel = (body.get("channel") or {}).get("id") or container["channel_id"]
        thread_ts = container.get("thread_ts") or (body.get("message") or {}).get("thread_ts")
        if not services.settings.allowed(user, channel):
            await client.chat_postEphemeral(channel=channel, user=user, text=REFUSAL)
            return
        outcome = await services.conversations.idle.keep((channel, thread_ts)) if thread_ts else "gone"
        if outcome != "kept":
            text = ("The sandbox is already stopped: send a message in the thread to wake it up." if outcome == "stopped"
                    else "This thread has no sandbox any more.")
            await client.chat_postEphemeral(channel=channel, user=user, thread_ts=thread_ts, text=text)
            return
        # The notice loses its button and says who kept the sandbox.
        kept = f":pushpin: <@{user}> kept this thread's sandbox: it stays for another idle period."
        await client.chat_update(channel=channel, ts=container.get("message_ts") or body["message"]["ts"], text=kept,
                                 blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": kept}}])
