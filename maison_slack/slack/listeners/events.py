"""Messages: mentions start sessions, thread replies continue them; Slack's own Stop (Events API)."""

from __future__ import annotations

import logging
import time
from typing import Any

from slack_bolt.async_app import AsyncApp, AsyncBoltContext
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.bot import HELP, REFUSAL, Services, ThreadCommand, parse_thread_command
from maison_slack.slack.runs import Prompt
from maison_slack.storage import message_key
from maison_slack.slack.markup import slack_to_plain

logger = logging.getLogger(__name__)

#: Message subtypes that are a person writing; the rest (edits, joins, bots…) are ignored.
USER_SUBTYPES = (None, "file_share", "thread_broadcast")


def register(app: AsyncApp, services: Services) -> None:
    async def on_mention(event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext) -> None:
        await handle_message(services, event, client, context.bot_user_id, mentioned=True)

    async def on_message(event: dict[str, Any], client: AsyncWebClient, context: AsyncBoltContext) -> None:
        # Subscribed to every message subtype so each is acked; Slack would redeliver the rest.
        await handle_message(services, event, client, context.bot_user_id, mentioned=False)

    async def on_stopped_in_slack(event: dict[str, Any], client: AsyncWebClient) -> None:
        """Slack's own Stop on a streamed reply (../shared/reference/slack.md §13.3): the same as
        our Stop button. Slack has already stopped the stream; the run must stop too."""
        channel, user = event.get("channel") or "", event.get("user") or ""
        if not services.settings.allowed(user, channel):
            await client.chat_postEphemeral(channel=channel, user=user, text=REFUSAL, thread_ts=event.get("thread_ts"))
            return
        await services.conversations.stop((channel, event.get("thread_ts") or ""), user)

    app.event("app_mention")(services.in_flight.track(on_mention))
    app.event("message")(services.in_flight.track(on_message))
    app.event("agent_session_stopped")(services.in_flight.track(on_stopped_in_slack))


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
        if services.settings.require_mention:
            return
        session = await services.store.get_session(channel, thread_ts)
        if session is None and not (event.get("thread_ts") and await claim_parent_first(
                services, client, channel, thread_ts, bot_user_id, event.get("channel_type"))):
            return
    plain = slack_to_plain(text, services.users.known(), bot_user_id)
    command = parse_thread_command(plain) if event.get("thread_ts") or direct else None
    if services.settings.allowed(user, channel) and command is None and (plain or event.get("files")):
        # The claim (exactly once: a mention is delivered twice, and retried) fixes its place.
        await services.conversations.submit(Prompt(channel=channel, thread_ts=thread_ts, user=user, text=plain,
                                                   message_ts=ts, files=list(event.get("files") or [])))
        return
    if not await services.store.claim_event(message_key(channel, ts)):
        return
    if not services.settings.allowed(user, channel):
        await client.chat_postEphemeral(channel=channel, user=user, text=REFUSAL,
                                        thread_ts=event.get("thread_ts"))
    elif command is not None:
        await run_thread_command(services, client, (channel, thread_ts), user, command)
    else:
        await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=HELP)


#: How long after a thread's first message its replies may arrive before the mention itself.
_YOUNG_THREAD_SECONDS = 120


async def claim_parent_first(services: Services, client: AsyncWebClient, channel: str, thread_ts: str,
                             bot_user_id: str | None, channel_type: str | None) -> bool:
    """A reply in a thread the bot does not know yet: is its first message a mention of the bot
    that is still on its way (Slack does not order events, and a reply can be sent in the same
    instant)? Then handle that mention now, so it keeps its place before this reply, and say
    whether the thread is a session now. Only young threads are looked at: one
    `conversations.replies` call, not one per reply in every thread of every channel.
    """
    if not bot_user_id or time.time() - float(thread_ts) > _YOUNG_THREAD_SECONDS:
        return False
    try:
        response = await client.conversations_replies(channel=channel, ts=thread_ts, limit=1)
    except SlackApiError as exc:
        logger.warning("Could not read the first message of thread %s/%s: %s", channel, thread_ts, exc)
        return False
    parent = next((m for m in response.get("messages") or [] if m.get("ts") == thread_ts), None)
    if parent is None or f"<@{bot_user_id}>" not in (parent.get("text") or ""):
        return False
    mention = {key: value for key, value in parent.items() if key != "thread_ts"}  # as its own event has it
    await handle_message(services, {**mention, "channel": channel, "channel_type": channel_type}, client,
                         bot_user_id, mentioned=True)  # claimed once, whichever delivery comes first
    return await services.store.get_session(channel, thread_ts) is not None


async def run_thread_command(services: Services, client: AsyncWebClient, key: tuple[str, str], user: str, command: ThreadCommand) -> None:
    channel, thread_ts = key
    if command.name == "stop":
        if not await services.conversations.stop(key, user):
            await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text="Nothing is running here.")
    elif command.name == "reset":
        await services.conversations.reset(key, user)
    elif command.name == "file":
        services.conversations.send_file(key, command.argument)
    elif command.name == "preview":
        services.conversations.preview(key, int(command.argument))
    elif command.name == "fork":
        services.conversations.fork(key, user)
    elif command.name == "diff":
        services.conversations.diff(key)
    elif command.name == "push":
        services.conversations.push(key, user)
    elif command.name == "model":
        model = None if command.argument.lower() == "default" else command.argument
        await services.conversations.set_model(key, user, model)
    else:
        await client.chat_postMessage(channel=channel, thread_ts=thread_ts, text=HELP)
