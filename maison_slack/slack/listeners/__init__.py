"""Bolt listeners, one module per Slack surface; `register` wires them all to an app."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from maison_slack.slack.bot import Bot
from maison_slack.slack.listeners import actions, commands, events


def register(app: AsyncApp, bot: Bot) -> None:
    events.register(app, bot)
    commands.register(app, bot)
    actions.register(app, bot)
