"""A running maison-slack bot wired to the three doubles, for end-to-end bot tests.

`bot_env` starts the bot in-process (real slack-bolt Socket Mode client, real daytona SDK,
real Claude Code CLI in the Daytona double's sandboxes) and stops it after the test.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest_asyncio

from maison_slack.slack.app import MaisonApp
from maison_slack.slack.config import Settings, load_settings
from tests.doubles.anthropic import AnthropicDouble
from tests.doubles.daytona import DaytonaDouble
from tests.doubles.slack import SlackDouble

CHANNEL = "C0CHAN"
ALICE, BOB = "U0ALICE", "U0BOB"


@dataclass
class BotEnv:
    slack: SlackDouble
    daytona: DaytonaDouble
    anthropic: AnthropicDouble
    db_path: Path
    settings: Settings
    app: MaisonApp | None = None

    async def start(self, **overrides: Any) -> MaisonApp:
        """Start (or restart) the bot; keyword arguments override settings fields."""
        if overrides:
            self.settings = dataclasses.replace(self.settings, **overrides)
        self.app = await MaisonApp.start(self.settings)
        await self.slack.wait_connected(10)
        return self.app

    async def stop(self) -> None:
        if self.app is not None:
            await self.app.stop()
            self.app = None

    async def restart(self) -> MaisonApp:
        await self.stop()
        return await self.start()

    @contextlib.asynccontextmanager
    async def process(self) -> AsyncIterator[None]:
        """The bot as a real process (`python -m maison_slack`), connected; SIGKILLed at the end,
        as a crash, an OOM kill or a hard deploy would end it."""
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "maison_slack", env={**os.environ, **self.env()},
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        try:
            await self.slack.wait_connected(20)
            yield
        finally:
            process.send_signal(signal.SIGKILL)
            await process.wait()

    def env(self) -> dict[str, str]:
        """The environment a user would set to point the bot at these doubles."""
        return {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_APP_TOKEN": self.slack.app_token,
            "SLACK_API_URL": self.slack.api_url,
            "DAYTONA_API_KEY": self.daytona.api_key,
            "DAYTONA_API_URL": self.daytona.api_url,
            "ANTHROPIC_API_KEY": self.anthropic.api_key,
            "ANTHROPIC_BASE_URL": self.anthropic.url,
            "CLAUDE_CODE_MAX_RETRIES": "0",
            "MAISON_DB": str(self.db_path),
            "MAISON_EDIT_INTERVAL": "0.2",
        }


@pytest_asyncio.fixture
async def bot_env(slack_double, daytona_double, anthropic_double, tmp_path, monkeypatch) -> AsyncIterator[BotEnv]:
    """The doubles and settings for a bot; call `await bot_env.start()` to run it."""
    env = BotEnv(slack_double, daytona_double, anthropic_double, tmp_path / "maison.db", settings=None)  # type: ignore[arg-type]
    # Claude Code settings are forwarded into sandboxes from the bot's environment.
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
    env.settings = load_settings(env.env())
    try:
        yield env
    finally:
        await env.stop()


@pytest_asyncio.fixture
async def bot(bot_env: BotEnv) -> AsyncIterator[BotEnv]:
    """A started bot."""
    await bot_env.start()
    yield bot_env
