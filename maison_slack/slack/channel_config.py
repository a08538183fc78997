"""A channel's settings (`/maison config`) and the per-message overrides (`--repo` …).

A channel can name the repository its threads start from, the model, extra instructions for
Claude and a daily budget. They live in SQLite (`Store.channel_settings`); the bot's
environment gives the defaults. A message can override the repository, branch and model for
the thread it starts (or, for the model, for that one run).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from maison_slack.core.git import check_branch, check_url
from maison_slack.core.sandbox import check_model
from maison_slack.core.summary import format_usd
from maison_slack.slack.config import Settings

#: What `/maison config <name> …` sets, and what each takes.
NAMES = {
    "repo": "<https URL> [branch]",
    "model": "<name>",
    "instructions": "<text>",
    "budget": "<USD per day>",
}
MAX_INSTRUCTIONS = 4000


@dataclass(frozen=True)
class ChannelConfig:
    """What a channel's new runs use: its own settings over the bot's defaults."""

    repo_url: str | None
    repo_branch: str | None
    model: str | None
    instructions: str | None  #: added to the bot's instructions
    daily_budget: float | None
    budget_source: str  #: where the daily budget comes from, for the message that cites it

    @classmethod
    def of(cls, values: dict[str, str], settings: Settings) -> ChannelConfig:
        url, branch = split_repo(values.get("repo", ""))
        budget = float(values["budget"]) if "budget" in values else settings.max_channel_daily_usd
        source = "set with `/maison config budget`" if "budget" in values else "MAISON_MAX_CHANNEL_DAILY_USD"
        return cls(repo_url=url, repo_branch=branch, model=values.get("model") or settings.model,
                   instructions=values.get("instructions"), daily_budget=budget, budget_source=source)


def split_repo(value: str) -> tuple[str | None, str | None]:
    """The URL and branch of a stored `repo` setting ("<url>" or "<url> <branch>")."""
    url, _, branch = value.partition(" ")
    return url or None, branch or None


def unlink(word: str) -> str:
    """A URL as typed, from Slack's link markup (`<https://…>` or `<https://…|label>`)."""
    return word.removeprefix("<").removesuffix(">").split("|")[0]


def parse_setting(name: str, raw: str) -> str | None:
    """The stored value of `/maison config <name> <raw>`; None for `unset`. Raises `ValueError`
    saying what is wrong."""
    raw = raw.strip()
    if raw.lower() == "unset":
        return None
    if not raw:
        raise ValueError(f"`/maison config {name} {NAMES[name]}` needs a value (or `unset`).")
    if name == "repo":
        url, *rest = raw.split()
        if len(rest) > 1:
            raise ValueError("`/maison config repo <https URL> [branch]` takes a URL and at most one branch.")
        url = check_url(unlink(url))
        return " ".join([url, *(check_branch(branch) for branch in rest)])
    if name == "model":
        return check_model(raw.strip("`"))
    if name == "budget":
        try:
            amount = float(raw.lstrip("$"))
        except ValueError:
            amount = math.nan
        if not (math.isfinite(amount) and amount > 0):
            raise ValueError(f"The budget is an amount in USD per day greater than 0, like `20` or `2.50`, not {raw!r}.")
        return repr(amount)
    if len(raw) > MAX_INSTRUCTIONS:
        raise ValueError(f"Instructions are limited to {MAX_INSTRUCTIONS} characters (these have {len(raw)}).")
    return raw


def describe(values: dict[str, str], settings: Settings) -> str:
    """`/maison config` without arguments: every setting, and where it comes from."""
    config = ChannelConfig.of(values, settings)
    repo = (f"{config.repo_url}" + (f" (branch `{config.repo_branch}`)" if config.repo_branch else "")
            if config.repo_url else "none: threads start in an empty sandbox")
    model = config.model or "Claude Code's default"
    budget = (f"{format_usd(config.daily_budget)} per day ({config.budget_source})" if config.daily_budget
              else "no daily cap")
    instructions = f"\n>{values['instructions']}" if "instructions" in values else " none besides the bot's"
    lines = ["*This channel's settings:*", f"• Repository: {repo}", f"• Model: {model}"
             + ("" if "model" in values else " (the bot's default)"),
             f"• Daily budget: {budget}", f"• Instructions:{instructions}"]
    caps = [f"{format_usd(amount)} per {what} ({name})" for amount, what, name in (
        (settings.max_run_usd, "run", "MAISON_MAX_RUN_USD"), (settings.max_thread_usd, "thread", "MAISON_MAX_THREAD_USD"))
        if amount]
    if caps:
        lines.append("• Also capped: " + ", ".join(caps))
    lines.append("Change one with `/maison config <repo|model|instructions|budget> <value>`, "
                 "or `/maison config <name> unset`.")
    return "\n".join(lines)


def announcement(user: str, name: str, value: str | None) -> str:
    """What the channel is told when someone changes a setting."""
    if value is None:
        return f":gear: <@{user}> removed this channel's {name} setting."
    if name == "repo":
        url, branch = split_repo(value)
        where = f"{url}" + (f" (branch `{branch}`)" if branch else "")
        return f":gear: <@{user}> set this channel's repository to {where}: new threads here start from it."
    if name == "budget":
        return f":gear: <@{user}> set this channel's daily budget to {format_usd(float(value))}."
    if name == "model":
        return f":gear: <@{user}> set this channel's model to `{value}` for new runs."
    return f":gear: <@{user}> set this channel's instructions for Claude:\n>" + value.replace("\n", "\n>")


@dataclass(frozen=True)
class Overrides:
    """`--repo`, `--branch` and `--model` typed before a task."""

    repo_url: str | None = None
    branch: str | None = None
    model: str | None = None


_OVERRIDE = re.compile(r"^\s*--(repo|branch|model)(?:\s+|=)(\S+)")


def parse_overrides(text: str) -> tuple[Overrides, str]:
    """The overrides at the start of `text` and the task after them. Only `--repo <url>`,
    `--branch <name>` and `--model <name>`, each once, before anything else: the first other
    word ends them, and stays part of the prompt with all that follows (so "--verbose" in a
    task, or a flag in the middle of one, is Claude's to read). Raises `ValueError` for an
    override whose value is not valid — a mistyped repository must not start work elsewhere."""
    found: dict[str, str] = {}
    rest = text
    while (match := _OVERRIDE.match(rest)) and match.group(1) not in found:
        name, value = match.group(1), unlink(match.group(2))
        found[name] = {"repo": check_url, "branch": check_branch, "model": check_model}[name](value)
        rest = rest[match.end():]
    return Overrides(repo_url=found.get("repo"), branch=found.get("branch"), model=found.get("model")), rest.strip()
