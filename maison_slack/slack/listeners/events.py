"""Messages: mentions start sessions, thread replies continue them (Events API)."""

from __future__ import annotations

from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.bot import HELP, REFUSAL, Services, parse_thread_command
from maison_slack.slack.conversations import Prompt
from maison_slack.slack.markup import slack_to_plain

#: Message subtypes that are a person writing; the rest (edits, joins, bots…) are ignored.
USER_SUBTYPES = (None, "file_share", "thread_broadcast")


def register(app: AsyncApp, services: Services) -> None:
    async def on_mention(event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await handle_message(services, event, client, context.bot_user_id, mentioned=True)

    async def on_message(event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext) -> None:
        # Subscribed to every message subtype so each is acked; Slack would redeliver the rest.
        await handle_message(services, event, client, context.bot_user_id, mentioned=False)

    app.event("app_mention")(on_mention)
    app.event("message")(on_message)


async def handle_message(services: Services, event: dict[str, Any], client: AsyncWebClient, bot_user_id: str | None,
                         *, mentioned: bool) -> None:
    """One person's message, delivered once or several times (mention + message, retries)."""
    if event.get("subtype") not in USER_SUBTYPES or event.get("bot_id") or not event.get("user"):
        return
    channel, ts, user = event["channel"], event["ts"], event["user"]
    text = event.get("text") or ""
    thread_ts = event.get("thread_ts") or ts
    mentioned = mentioned or bool(bot_user_id and f"<@{bot_user_id}>" in text)
    direct = event.get("channel_type") == "im" or channel.startswith("D")
    if not (mentioned or direct):
        session = await services.store.get_session(channel, thread_ts)
        if session is None or services.settings.require_mention:
            return
    # Slack delivers a mention twice (app_mention + message) and retries unacked envelopes:
    # the message's (channel, ts) is what makes a run exactly once.
    if not await services.store.claim_event(f"message:{channel}:{ts}"):
        return
    if not services.settings.allowed(user, channel):
        await client.chat_postEphemeral(channel=channel, user=user, text=REFUSAL,
                                        thread_ts=event.get("thread_ts"))
        return
    plain = slack_to_plain(text, services.users.known(), bot_user_id)
    key = (channel, thread_ts)
    command = parse_thread_command(plain) if event.get("thread_ts") or direct else None
    if command is None and not plain and not event.get("files"):
        await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=HELP)
        return
    if command is not None:
        await run_thread_command(services, client, key, user, command)
        return
    await services.conversations.submit(Prompt(channel=channel, thread_ts=thread_ts, user=user, text=plain,
                                          message_ts=ts, files=list(event.get("files") or [])))


async def run_thread_command(services: Services, client: AsyncWebClient, key: tuple[str, str], user: str, command: Any) -> None:
    channel, thread_ts = key
    if command.name == "stop":
        if not await services.conversations.stop(key, user):
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text="Nothing is running here.")
    elif command.name == "reset":
        await services.conversations.reset(key, user)
    elif command.name == "file":
        await services.conversations.send_file(key, command.argument)
    else:
        await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=HELP)
