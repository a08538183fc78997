"""The bot's configuration, read only from environment variables.

Every problem is collected, so a user fixing their setup sees them all at once.
"""

from __future__ import annotations

import math
import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TextIO

from maison_slack.core.credentials import CUSTOM_HEADERS, api_host, custom_headers
from maison_slack.core.maison import FORWARDED_ENV_PREFIXES

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
    snapshot: str | None = None  # None: the pinned snapshot if built, else Daytona's default
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
    key_in_sandbox: str = "secret"
    allowed_domains: tuple[str, ...] = ()
    streaming: str = "auto"
    retention: float = 86400.0
    warm_pool: int = 0
    preview_seconds: int = 8 * 3600
    claude_version: str = "snapshot"  # or "pinned": install the tested version where it differs
    stream_rollover: float = 240.0
    #: Who may change channel settings (`/maison config`); empty: anyone allowed to use the bot.
    admins: frozenset[str] = field(default_factory=frozenset)
    #: Sent with each clone and push through Daytona's git API, never stored in a sandbox.
    git_token: str | None = None
    git_username: str | None = None
    #: Spending caps in USD; None: no cap.
    max_run_usd: float | None = None
    max_thread_usd: float | None = None
    max_channel_daily_usd: float | None = None
    #: A thread's earlier messages given to Claude with the first prompt: at most this many…
    context_messages: int = 20
    #: …and this many characters.
    context_chars: int = 8000

    def secrets(self, environ: Mapping[str, str] = os.environ) -> list[str]:
        """Values that must never appear in anything the bot posts: its own tokens and keys, and
        every credential among the Claude Code settings it forwards into sandboxes.

        Those settings are read from `environ`, the process environment, because that is where
        sandboxes get them from (`maison_slack.core.maison.sandbox_env`).
        """
        forwarded = [value for name, value in environ.items()
                     if name.startswith(FORWARDED_ENV_PREFIXES) and _CREDENTIAL_WORDS & set(name.split("_"))]
        headers = [value for _, value in custom_headers(environ.get(CUSTOM_HEADERS, ""))]
        return [self.slack_bot_token, self.slack_app_token, self.daytona_api_key, self.anthropic_api_key,
                *([self.git_token] if self.git_token else []), *forwarded, *headers]

    def may_configure(self, user_id: str, channel: str) -> bool:
        """Whether the user may change the channel's settings (`MAISON_ADMINS`)."""
        return self.allowed(user_id, channel) and (not self.admins or user_id in self.admins)

    def allowed(self, user_id: str, channel: str) -> bool:
        return (not self.allowed_users or user_id in self.allowed_users) and (
            not self.allowed_channels or channel in self.allowed_channels
        )


#: A forwarded setting whose name has one of these words holds a credential (ANTHROPIC_API_KEY,
#: ANTHROPIC_AUTH_TOKEN, CLAUDE_CODE_OAUTH_TOKEN, CLAUDE_CODE_OAUTH_REFRESH_TOKEN, …).
_CREDENTIAL_WORDS = frozenset({"KEY", "TOKEN", "SECRET", "PASSWORD", "PASSPHRASE"})

_DOMAIN = re.compile(r"^(\*\.)?([a-z0-9]([a-z0-9-]*[a-z0-9])?\.)+[a-z]{2,}$")


def _is_domain(name: str) -> bool:
    """A name Daytona's domain allow-list takes: labels and an alphabetic top-level domain (no
    IP address, no `localhost`), optionally after one leading `*.`."""
    return bool(_DOMAIN.match(name))
# Slack ids are uppercase letters and digits after a letter that says what they name.
_USER_ID = re.compile(r"[UW][A-Z0-9]+")
_CHANNEL_ID = re.compile(r"[CGD][A-Z0-9]+")


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

    def choice(name: str, choices: tuple[str, ...]) -> str:
        raw = env.get(name, "").strip().lower() or choices[0]
        if raw not in choices:
            problems.append(f"{name} must be one of {', '.join(choices)}, not {raw!r}")
        return raw

    def domains(name: str) -> tuple[str, ...]:
        """Daytona's domain allow-list: at most 10 domains, one of them the Anthropic API's."""
        raw = env.get(name, "")
        found = tuple(part.lower() for part in re.split(r"[\s,]+", raw) if part)
        if raw.strip() and not found:
            problems.append(f"{name} is set but names no domain")
        for domain in found:
            if not _is_domain(domain):
                problems.append(f"{name}: {domain!r} is not a domain (example.com or *.example.com)")
        if len(found) > 9:
            problems.append(f"{name} names {len(found)} domains; Daytona allows 10, one of them the Anthropic API's")
        return found

    def ids(name: str, pattern: re.Pattern[str], kind: str, example: str) -> frozenset[str]:
        """An allow-list of Slack ids. Unset allows everyone, so one that is set but names nobody,
        or holds something that is no id, is an error rather than read as unset (fail closed)."""
        raw = env.get(name, "")
        found = frozenset(part for part in re.split(r"[\s,]+", raw) if part)
        if raw and not found:
            problems.append(f"{name} is set but names no {kind}; unset it to allow everyone")
        for part in sorted(found):
            if not pattern.fullmatch(part):
                problems.append(f"{name}: {part!r} is not a Slack {kind} id (like {example}: uppercase "
                                "letters and digits)")
        return found

    def money(name: str) -> float | None:
        """A spending cap in USD: unset for none, else more than 0 (Claude Code refuses a zero budget)."""
        raw = env.get(name, "").strip().lstrip("$")
        if not raw:
            return None
        try:
            value = float(raw)
        except ValueError:
            value = math.nan
        if not (math.isfinite(value) and value > 0):
            problems.append(f"{name} must be an amount in USD greater than 0, like 5 or 0.50, not {raw!r}")
            return None
        return value

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
        snapshot=env.get("MAISON_SNAPSHOT", "").strip() or None,
        instructions=env.get("MAISON_INSTRUCTIONS", "").strip() or DEFAULT_INSTRUCTIONS,
        idle_timeout=number("MAISON_IDLE_TIMEOUT", Settings.idle_timeout, 1),
        reap_interval=number("MAISON_REAP_INTERVAL", Settings.reap_interval, 0.1),
        run_timeout=number("MAISON_RUN_TIMEOUT", Settings.run_timeout, 1),
        require_mention=flag("MAISON_REQUIRE_MENTION"),
        allowed_users=ids("MAISON_ALLOWED_USERS", _USER_ID, "user", "U024BE7LH or W024BE7LH"),
        allowed_channels=ids("MAISON_ALLOWED_CHANNELS", _CHANNEL_ID, "channel", "C024BE91L, G… or D…"),
        model=env.get("MAISON_MODEL", "").strip() or None,
        instance=env.get("MAISON_INSTANCE", "").strip() or Settings.instance,
        edits_per_minute=int(number("MAISON_EDITS_PER_MINUTE", Settings.edits_per_minute, 1)),
        edit_interval=number("MAISON_EDIT_INTERVAL", Settings.edit_interval, 0),
        max_queued=int(number("MAISON_MAX_QUEUED", Settings.max_queued, 1)),
        max_file_mb=int(number("MAISON_MAX_FILE_MB", Settings.max_file_mb, 1)),
        max_reply_messages=int(number("MAISON_MAX_REPLY_MESSAGES", Settings.max_reply_messages, 1)),
        drain_seconds=number("MAISON_DRAIN_SECONDS", Settings.drain_seconds, 0),
        key_in_sandbox=choice("MAISON_KEY_IN_SANDBOX", ("secret", "env")),
        allowed_domains=domains("MAISON_ALLOWED_DOMAINS"),
        streaming=choice("MAISON_STREAMING", ("auto", "native", "edits")),
        retention=number("MAISON_RETENTION", Settings.retention, 0),
        warm_pool=int(number("MAISON_WARM_POOL", Settings.warm_pool, 0)),
        claude_version=choice("MAISON_CLAUDE_VERSION", ("snapshot", "pinned")),
        # Daytona signs preview links for 1 s to 24 h (../shared/reference/daytona.md §19).
        preview_seconds=int(number("MAISON_PREVIEW_SECONDS", Settings.preview_seconds, 1)),
        # Slack ends a stream about 5 minutes after it starts (../shared/reference/slack.md §13.1).
        stream_rollover=number("MAISON_STREAM_ROLLOVER", Settings.stream_rollover, 1),
        admins=ids("MAISON_ADMINS", _USER_ID, "user", "U024BE7LH or W024BE7LH"),
        git_token=env.get("MAISON_GIT_TOKEN", "").strip() or None,
        git_username=env.get("MAISON_GIT_USERNAME", "").strip() or None,
        max_run_usd=money("MAISON_MAX_RUN_USD"),
        max_thread_usd=money("MAISON_MAX_THREAD_USD"),
        max_channel_daily_usd=money("MAISON_MAX_CHANNEL_DAILY_USD"),
        context_messages=int(number("MAISON_CONTEXT_MESSAGES", Settings.context_messages, 0)),
        context_chars=int(number("MAISON_CONTEXT_CHARS", Settings.context_chars, 0)),
    )
    if settings["preview_seconds"] > 86400:
        problems.append("MAISON_PREVIEW_SECONDS must be at most 86400: Daytona signs preview links for 24 h at most")
    base_host = api_host(settings["anthropic_base_url"])
    if settings["allowed_domains"] and not _is_domain(base_host):  # it joins the allow-list
        problems.append(f"MAISON_ALLOWED_DOMAINS needs ANTHROPIC_BASE_URL to name a domain, not {base_host!r}: "
                        "Daytona's allow-list takes domain names only")
    if problems:
        raise ConfigError(problems)
    if not settings["slack_api_url"].endswith("/"):
        settings["slack_api_url"] += "/"
    return Settings(**settings)


def print_config_problems(error: ConfigError, who: str = "maison-slack: cannot start",
                          file: TextIO | None = None) -> None:
    """Tell the user every problem at once and where the variables are described.

    One text for the bot's start and `maison-slack doctor`, so both say the same thing; `who`
    opens the first line.
    """
    out = file if file is not None else sys.stderr
    print(f"{who}, the configuration has problems:", file=out)
    for problem in error.problems:
        print(f"  - {problem}", file=out)
    print("Set these environment variables (see README.md) and start again.", file=out)
