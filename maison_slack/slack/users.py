"""Display names of Slack users, for attribution in shared threads."""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

logger = logging.getLogger(__name__)


class UserNames:
    """Display names (and emails, for commit authors) from `users.info`, cached for the bot's
    lifetime."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._names: dict[str, str] = {}
        self._emails: dict[str, str] = {}

    async def name(self, user_id: str) -> str:
        if user_id not in self._names:
            try:
                user = (await self._client.users_info(user=user_id))["user"]
            except SlackApiError as exc:
                logger.warning("users.info %s failed: %s", user_id, exc)
                return user_id
            profile = user.get("profile") or {}
            self._names[user_id] = profile.get("display_name") or user.get("real_name") or user.get("name") or user_id
            if profile.get("email"):  # only with the users:read.email scope
                self._emails[user_id] = profile["email"]
        return self._names[user_id]

    async def author(self, user_id: str) -> tuple[str, str]:
        """Name and email for a commit made on the person's behalf; without their email (a
        workspace that does not share it) an address that names them and reaches nobody."""
        name = await self.name(user_id)
        return name, self._emails.get(user_id) or f"{user_id.lower()}@users.slack.invalid"

    def known(self) -> dict[str, str]:
        return dict(self._names)
