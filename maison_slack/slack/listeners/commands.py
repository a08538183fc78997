"""`/maison`: start a session, list sessions, status, cost, channel settings, help. Slack allows
it outside threads only."""

from __future__ import annotations

import time
from typing import Any

from slack_bolt.async_app import AsyncAck, AsyncApp, AsyncRespond
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError
from maison_slack.slack.bot import HELP, REFUSAL, Services
from maison_slack.slack.channel_config import NAMES, announcement, describe, parse_setting
from maison_slack.slack.markup import neutralize_broadcasts, slack_to_plain
from maison_slack.slack.runs import Prompt


def register(app: AsyncApp, services: Services) -> None:
    @app.command("/maison")
    @services.in_flight.track
    async def on_maison(ack: AsyncAck, command: dict[str, Any], client: AsyncWebClient, respond: AsyncRespond) -> None:
        text = (command.get("text") or "").strip()
        user, channel = command["user_id"], command["channel_id"]
        word = text.lower()
        if word in ("", "help"):
            await ack(response_type="ephemeral", text=HELP)
        elif not services.settings.allowed(user, channel):
            await ack(response_type="ephemeral", text=REFUSAL)
        elif word == "list":
            await ack(response_type="ephemeral", text=await list_sessions(services, channel))
        elif word == "status":
            await ack(response_type="ephemeral", text="Checking…")
            await respond(response_type="ephemeral", replace_original=True, text=await status(services))
        elif word == "cost":
            await ack(response_type="ephemeral", text=await services.conversations.spending.report())
        elif word == "config" or word.startswith("config "):
            await ack()  # within Slack's 3 s, whatever the announcement in the channel costs
            await respond(response_type="ephemeral", text=await configure(services, client, user, channel, text[6:]))
        else:
            await ack()
            await start_session(services, client, respond, user, channel, text)


def _age(seconds: float) -> str:
    minutes = int(seconds // 60)
    return f"{minutes // 60}h {minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m"


async def list_sessions(services: Services, channel: str) -> str:
    sessions = await services.store.sessions_in_channel(channel)
    if not sessions:
        return "No live sessions in this channel. Mention me or use `/maison <task>` to start one."
    lines = ["*Sessions in this channel:*"]
    for session in sessions:
        key = (session.channel, session.thread_ts)
        thread = services.conversations.describe(key)
        state = thread or f"idle {_age(time.time() - session.last_active_at)}"
        link = f"https://slack.com/archives/{session.channel}/p{session.thread_ts.replace('.', '')}"
        lines.append(f"• <{link}|thread> started by <@{session.started_by}> — {state}")
    return "\n".join(lines)


async def status(services: Services) -> str:
    counts = services.conversations.counts()
    sessions = await services.store.sessions_with_sandbox()
    lines = [f"*Maison status:* {len(sessions)} session(s) with a sandbox, "
             f"{counts['running']} run(s) running, {counts['queued']} queued."]
    pool = services.sandboxes.pool
    if pool.size:
        lines.append(f"Warm pool: {pool.ready} of {pool.size} sandbox(es) ready for new threads.")
    try:
        sandboxes = await services.sandboxes.list()
    except MaisonError as exc:
        lines.append(f"Daytona could not be reached: {exc}")
    else:
        states: dict[str, int] = {}
        for sandbox in sandboxes:
            states[sandbox.state] = states.get(sandbox.state, 0) + 1
        summary = ", ".join(f"{n} {state}" for state, n in sorted(states.items())) or "none"
        lines.append(f"Sandboxes: {summary}.")
    return "\n".join(lines)


async def configure(services: Services, client: AsyncWebClient, user: str, channel: str, arguments: str) -> str:
    """`/maison config [<name> <value>|unset]`: show the channel's settings, or change one and
    tell the channel who changed what. Returns what the person who typed it sees."""
    name, _, raw = arguments.strip().partition(" ")
    name = name.lower()
    store, settings = services.store, services.settings
    if not name:
        return describe(await store.channel_settings(channel), settings)
    if name not in NAMES:
        return f"There is no setting {name!r}. " + ", ".join(f"`/maison config {n} {h}`" for n, h in NAMES.items())
    if not settings.may_configure(user, channel):
        return "Only the bot's admins (MAISON_ADMINS) may change this channel's settings."
    try:
        value = parse_setting(name, raw)
    except ValueError as exc:
        return str(exc)
    if not await store.set_channel_setting(channel, name, value, user):
        return f"Nothing changed: the {name} setting already is what you asked."
    try:
        await client.chat_postMessage(channel=channel, text=services.conversations.notices.safe(
            announcement(user, name, value)))
    except SlackApiError as exc:  # saved all the same; the person is told the channel was not
        return f"Saved, but I could not tell the channel ({exc.response.get('error')}): invite me with `/invite @Maison`."
    return "Saved."


async def start_session(services: Services, client: AsyncWebClient, respond: AsyncRespond, user: str, channel: str,
                        text: str) -> None:
    """Post the task in the channel, attributed to its author; its thread becomes the session."""
    prompt = slack_to_plain(text, services.users.known())
    try:
        # Quoted line by line (a quote ends at a newline); "<!channel> deploy is broken" must not
        # make the bot notify the channel on the author's behalf.
        quoted = "\n".join(f">{line}" for line in neutralize_broadcasts(text).splitlines())
        posted = await client.chat_postMessage(channel=channel, text=f"<@{user}> asked Maison:\n{quoted}")
    except SlackApiError as exc:
        hint = " Invite me first: `/invite @Maison`." if exc.response.get("error") == "not_in_channel" else ""
        await respond(response_type="ephemeral", text=f"I could not post in this channel ({exc.response.get('error')}).{hint}")
        return
    ts = posted["ts"]
    await services.conversations.submit(Prompt(channel=channel, thread_ts=ts, user=user, text=prompt, message_ts=ts))
