"""`maison-slack`: the Socket Mode app. This file only builds the parts and wires them up."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from collections.abc import Sequence

from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncServerErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.credentials import SecretsUnavailableError
from maison_slack.core.errors import MaisonError
from maison_slack.slack import doctor, listeners, snapshot
from maison_slack.slack.bot import Services
from maison_slack.slack.config import ConfigError, Settings, load_settings, print_config_problems
from maison_slack.slack.conversations import Conversations
from maison_slack.slack.reaper import Reaper
from maison_slack.slack.recovery import Recovery
from maison_slack.slack.budget import TIERS, Budgets, RateLimitHandler
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.slack.users import UserNames
from maison_slack.storage import Store

logger = logging.getLogger("maison_slack")


class MaisonApp:
    """The running bot: Bolt app, Socket Mode connection, conversations and reaper."""

    def __init__(self, settings: Settings, store: Store, client: AsyncWebClient, budgets: Budgets) -> None:
        self.settings = settings
        self.store = store
        self.sandboxes = Sandboxes(settings)
        users = UserNames(client)
        self.conversations = Conversations(
            settings=settings, store=store, client=client, sandboxes=self.sandboxes, users=users,
            budgets=budgets,
        )
        self.reaper = Reaper(store=store, sandboxes=self.sandboxes, conversations=self.conversations,
                             settings=settings)
        self.recovery = Recovery(store=store, client=client, sandboxes=self.sandboxes,
                                 conversations=self.conversations, budgets=budgets)
        self.app = AsyncApp(client=client)
        self.services = Services(settings, store, self.conversations, self.sandboxes, users)
        listeners.register(self.app, self.services)
        self.handler = AsyncSocketModeHandler(self.app, app_token=settings.slack_app_token)

    @classmethod
    async def start(cls, settings: Settings) -> "MaisonApp":
        """Open the database, keep the credentials in Daytona Secrets, recover from a restart,
        start the reaper, connect to Slack."""
        store = await Store.open(settings.db_path)
        budgets = Budgets({**TIERS, "chat.update": settings.edits_per_minute})
        client = AsyncWebClient(
            token=settings.slack_bot_token,
            base_url=settings.slack_api_url,
            retry_handlers=[
                AsyncConnectionErrorRetryHandler(),
                RateLimitHandler(budgets, max_retry_count=5),
                AsyncServerErrorRetryHandler(max_retry_count=2),
            ],
        )
        bot = cls(settings, store, client, budgets)
        try:
            await bot.sandboxes.prepare()
        except BaseException:
            await bot.sandboxes.close()
            await store.close()
            raise
        await bot.recovery.recover()
        await bot.sandboxes.start_pool()
        bot.reaper.start()
        await bot.handler.connect_async()
        logger.info("maison-slack is connected (database %s)", settings.db_path)
        return bot

    async def stop(self) -> None:
        """Disconnect first (no new events), let the listeners already running claim and queue
        their messages (bounded), then end runs, the reaper and connections. Prompts still
        queued stay in SQLite and run after the next start."""
        await self.handler.close_async()
        self.conversations.hold()
        await self.services.in_flight.drain(self.settings.drain_seconds)
        await self.reaper.stop()
        await self.conversations.close()
        await self.sandboxes.close()
        await self.store.close()


async def serve(settings: Settings) -> None:
    bot = await MaisonApp.start(settings)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stopping.set)
    try:
        await stopping.wait()
    finally:
        logger.info("Shutting down")
        await bot.stop()


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """`maison-slack [run | doctor | snapshot]`: no command runs the bot, as it always has (Procfile)."""
    parser = argparse.ArgumentParser(
        prog="maison-slack",
        description="Run Claude Code from Slack, one Daytona sandbox per thread. Configured by environment "
                    "variables (see README.md).")
    commands = parser.add_subparsers(dest="command", title="commands", metavar="{run,doctor,snapshot}")
    commands.add_parser("run", help="run the bot (the default when no command is given)")
    build = commands.add_parser("snapshot", help="build the Daytona snapshot with the pinned Claude Code, which "
                                                 "new sandboxes then use (needs only the Daytona settings)")
    build.add_argument("--rebuild", action="store_true", help="build it again even if it exists")
    commands.add_parser("doctor", help="check the configuration, Slack, Daytona and Anthropic, print a table "
                                       "and exit: 0 if every check passes, 1 if one fails, 2 if the "
                                       "configuration does not load")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    """Entry point of `maison-slack` and `python -m maison_slack`."""
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "doctor":
        sys.exit(doctor.main())
    if args.command == "snapshot":
        sys.exit(snapshot.main(rebuild=args.rebuild))
    run()


def run() -> None:
    """Run the bot until SIGINT or SIGTERM; exit 2 on a setup problem, 1 on a service failure."""
    try:
        settings = load_settings(os.environ)
    except ConfigError as exc:
        print_config_problems(exc)
        sys.exit(2)
    logging.basicConfig(level=os.environ.get("MAISON_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(serve(settings))
    except KeyboardInterrupt:
        pass
    except SecretsUnavailableError as exc:  # a setup problem, like the configuration's
        print(f"maison-slack: cannot start: {exc}", file=sys.stderr)
        sys.exit(2)
    except MaisonError as exc:
        print(f"maison-slack: cannot start: {exc}", file=sys.stderr)
        sys.exit(1)
