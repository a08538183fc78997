"""The conversation a mention joins: earlier messages of the thread, given to Claude once.

When the bot is mentioned in a thread where people already talked, the first prompt carries
their last messages (bounded in number and characters), so "@Maison fix what Ana describes
above" works. Only people's messages: the bot's own and other apps' are left out.
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.slack.markup import slack_to_plain
from maison_slack.slack.users import UserNames

logger = logging.getLogger(__name__)

#: Pages of `conversations.replies` read at most (Slack returns up to 1000 per page).
_MAX_PAGES = 5
_PERSON_SUBTYPES = (None, "file_share", "thread_broadcast")


async def earlier_messages(client: AsyncWebClient, users: UserNames, channel: str, thread_ts: str, before_ts: str,
                           *, max_messages: int, max_chars: int) -> str:
    """The thread's messages from people before `before_ts`, oldest first, as "Name: text"
    lines: the last `max_messages`, then the oldest dropped (and the oldest kept cut at its
    start) until they fit in `max_chars`. "" if there are none, or they could not be read."""
    if max_messages <= 0 or max_chars <= 0:
        return ""
    messages: list[dict] = []
    cursor: str | None = None
    try:
        for _ in range(_MAX_PAGES):
            page = await client.conversations_replies(channel=channel, ts=thread_ts, limit=200, cursor=cursor)
            messages += [m for m in page.get("messages") or [] if float(m.get("ts") or 0) < float(before_ts)]
            cursor = (page.get("response_metadata") or {}).get("next_cursor")
            if not page.get("has_more") or not cursor:
                break
    except SlackApiError as exc:
        logger.warning("Could not read the earlier messages of thread %s/%s: %s", channel, thread_ts, exc)
        return ""
    people = [m for m in messages if m.get("user") and not m.get("bot_id") and m.get("subtype") in _PERSON_SUBTYPES
              and (m.get("text") or "").strip()][-max_messages:]
    lines = [f"{await users.name(m['user'])}: {slack_to_plain(m['text'], users.known())}" for m in people]
    kept: list[str] = []
    room = max_chars
    for line in reversed(lines):
        if room <= 0:
            break
        kept.append(line if len(line) <= room else "…" + line[-(room - 1):])
        room -= len(line) + 1
    return "\n".join(reversed(kept))
