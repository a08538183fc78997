"""Bolt listeners, one module per Slack surface; `register` wires them all to an app."""

from __future__ import annotations

from slack_bolt.async_app import AsyncApp

from maison_slack.slack.bot import Services
from maison_slack.slack.listeners import actions, commands, events


def register(app: AsyncApp, services: Services) -> None:
    events.register(app, services)
    commands.register(app, services)
    actions.register(app, services)
