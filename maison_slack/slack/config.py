"""The bot's configuration, read only from environment variables.

Every problem is collected, so a user fixing their setup sees them all at once.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field

DEFAULT_INSTRUCTIONS = (
    "You are Maison, working for a team in a Slack thread. You run inside a disposable Daytona sandbox "
    "where you have full permissions: install what you need and run anything. Your reply is shown in "
    "Slack, so keep it readable; the people in the thread can fetch a file from the sandbox by writing "
    "`file <path>`, so mention the paths of files you create. Several people may share this thread; "
    "each message says who wrote it when more than one person has spoken."
)


class ConfigError(Exception):
    """The environment does not configure the bot; `problems` lists every issue."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Settings:
    slack_bot_token: str
    slack_app_token: str
    daytona_api_key: str
    anthropic_api_key: str
    slack_api_url: str = "https://slack.com/api/"
    daytona_api_url: str | None = None
    daytona_target: str | None = None
    anthropic_base_url: str | None = None
    db_path: str = "maison.db"
    snapshot: str = "daytona-small"
    instructions: str = DEFAULT_INSTRUCTIONS
    idle_timeout: float = 1800.0
    reap_interval: float = 60.0
    run_timeout: float = 1800.0
    require_mention: bool = False
    allowed_users: frozenset[str] = field(default_factory=frozenset)
    allowed_channels: frozenset[str] = field(default_factory=frozenset)
    model: str | None = None
    instance: str = "default"
    edits_per_minute: int = 45
    edit_interval: float = 1.5
    max_queued: int = 20
    max_file_mb: int = 100
    max_reply_messages: int = 8
    drain_seconds: float = 5.0

    def secrets(self) -> list[str]:
        """Values that must never appear in anything the bot posts."""
        return [self.slack_bot_token, self.slack_app_token, self.daytona_api_key, self.anthropic_api_key]

    def allowed(self, user_id: str, channel: str) -> bool:
        return (not self.allowed_users or user_id in self.allowed_users) and (
            not self.allowed_channels or channel in self.allowed_channels
        )


def _ids(value: str) -> frozenset[str]:
    return frozenset(part for part in re.split(r"[\s,]+", value) if part)


def load_settings(env: Mapping[str, str]) -> Settings:
    """Build `Settings` from `env`, or raise `ConfigError` naming every problem."""
    problems: list[str] = []

    def required(name: str, prefix: str | None = None) -> str:
        value = env.get(name, "").strip()
        if not value:
            problems.append(f"{name} is not set")
        elif prefix and not value.startswith(prefix):
            problems.append(f"{name} must start with {prefix!r}")
        return value

    def number(name: str, default: float, minimum: float) -> float:
        raw = env.get(name, "").strip()
        if not raw:
            return default
        try:
            value = float(raw)
        except ValueError:
            problems.append(f"{name} must be a number, not {raw!r}")
            return default
        if value < minimum:
            problems.append(f"{name} must be at least {minimum:g}")
        return value

    def url(name: str) -> str | None:
        raw = env.get(name, "").strip()
        if raw and not re.match(r"^https?://[^\s/]+", raw):
            problems.append(f"{name} must be an http(s) URL, not {raw!r}")
        return raw or None

    def flag(name: str) -> bool:
        raw = env.get(name, "").strip().lower()
        if raw not in ("", "0", "1", "true", "false", "yes", "no"):
            problems.append(f"{name} must be true or false, not {raw!r}")
        return raw in ("1", "true", "yes")

    settings = dict(
        slack_bot_token=required("SLACK_BOT_TOKEN", "xoxb-"),
        slack_app_token=required("SLACK_APP_TOKEN", "xapp-"),
        daytona_api_key=required("DAYTONA_API_KEY"),
        anthropic_api_key=required("ANTHROPIC_API_KEY"),
        slack_api_url=url("SLACK_API_URL") or Settings.slack_api_url,
        daytona_api_url=url("DAYTONA_API_URL"),
        daytona_target=env.get("DAYTONA_TARGET", "").strip() or None,
        anthropic_base_url=url("ANTHROPIC_BASE_URL"),
        db_path=env.get("MAISON_DB", "").strip() or Settings.db_path,
        snapshot=env.get("MAISON_SNAPSHOT", "").strip() or Settings.snapshot,
        instructions=env.get("MAISON_INSTRUCTIONS", "").strip() or DEFAULT_INSTRUCTIONS,
        idle_timeout=number("MAISON_IDLE_TIMEOUT", Settings.idle_timeout, 1),
        reap_interval=number("MAISON_REAP_INTERVAL", Settings.reap_interval, 0.1),
        run_timeout=number("MAISON_RUN_TIMEOUT", Settings.run_timeout, 1),
        require_mention=flag("MAISON_REQUIRE_MENTION"),
        allowed_users=_ids(env.get("MAISON_ALLOWED_USERS", "")),
        allowed_channels=_ids(env.get("MAISON_ALLOWED_CHANNELS", "")),
        model=env.get("MAISON_MODEL", "").strip() or None,
        instance=env.get("MAISON_INSTANCE", "").strip() or Settings.instance,
        edits_per_minute=int(number("MAISON_EDITS_PER_MINUTE", Settings.edits_per_minute, 1)),
        edit_interval=number("MAISON_EDIT_INTERVAL", Settings.edit_interval, 0),
        max_queued=int(number("MAISON_MAX_QUEUED", Settings.max_queued, 1)),
        max_file_mb=int(number("MAISON_MAX_FILE_MB", Settings.max_file_mb, 1)),
        max_reply_messages=int(number("MAISON_MAX_REPLY_MESSAGES", Settings.max_reply_messages, 1)),
        drain_seconds=number("MAISON_DRAIN_SECONDS", Settings.drain_seconds, 0),
    )
    if problems:
        raise ConfigError(problems)
    if not settings["slack_api_url"].endswith("/"):
        settings["slack_api_url"] += "/"
    return Settings(**settings)
