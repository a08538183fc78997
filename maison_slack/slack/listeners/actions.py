"""Buttons (interactivity): Stop on a running reply, and the feedback row under an answer."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.bot import REFUSAL, Services
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
