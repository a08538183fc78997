"""Unit tests for maison_slack.slack.channel_config: the words of `/maison config` and of the
per-message overrides, parsed strictly (a mistyped override must not start work elsewhere, and
anything that is not one stays part of the task)."""

from __future__ import annotations

import pytest

from maison_slack.slack.bot import parse_thread_command
from maison_slack.slack.channel_config import Overrides, parse_overrides, parse_setting

URL = "https://github.com/acme/api.git"


@pytest.mark.parametrize("text, overrides, task", [
    (f"--repo {URL} --branch dev --model sonnet fix it", Overrides(URL, "dev", "sonnet"), "fix it"),
    (f"--model=opus --repo=<{URL}> fix it", Overrides(URL, None, "opus"), "fix it"),
    ("fix it --model sonnet", Overrides(), "fix it --model sonnet"),  # only before the task
    ("--verbose output please", Overrides(), "--verbose output please"),  # not one of ours
    ("--model opus --model haiku go", Overrides(model="opus"), "--model haiku go"),  # each once
    ("--model sonnet", Overrides(model="sonnet"), ""),
])
def test_overrides_before_the_task(text: str, overrides: Overrides, task: str) -> None:
    assert parse_overrides(text) == (overrides, task)


@pytest.mark.parametrize("text, error", [
    ("--repo git@github.com:acme/api.git fix", "Not an HTTPS git URL"),
    ("--repo https://me:token@github.com/acme/api fix", "credentials in the repository URL"),
    ("--branch ../../etc fix", "Not a branch name"),
    ("--branch $(id) fix", "Not a branch name"),
    ("--model $(id) fix", "Not a model name"),
    ("--model -p fix", "Not a model name"),
])
def test_an_override_that_is_not_valid_is_refused(text: str, error: str) -> None:
    with pytest.raises(ValueError, match=error.replace("(", r"\(").replace(")", r"\)").replace("$", r"\$")):
        parse_overrides(text)


def test_settings_values() -> None:
    assert parse_setting("repo", f"<{URL}> release/2.0") == f"{URL} release/2.0"
    assert parse_setting("repo", "unset") is None
    assert parse_setting("budget", "$7") == "7.0"
    assert parse_setting("model", "`claude-opus-5-5`") == "claude-opus-5-5"
    assert parse_setting("instructions", "Use pnpm, not npm.") == "Use pnpm, not npm."
    for name, raw in (("repo", f"{URL} a b"), ("budget", "0"), ("budget", "lots"), ("model", "two words"),
                      ("instructions", "x" * 4001), ("model", "")):
        with pytest.raises(ValueError):
            parse_setting(name, raw)


@pytest.mark.parametrize("text, command", [
    ("diff", "diff"), ("push", "push"), ("Push!", "push"), ("model sonnet", "model"),
    ("model claude-sonnet-4-5", "model"), ("model default", "model"),
    ("push the fix to main", None), ("model the data as a graph", None), ("model everything", None),
    ("diff between these files?", None),
])
def test_thread_words(text: str, command: str | None) -> None:
    parsed = parse_thread_command(text)
    assert (parsed.name if parsed else None) == command
