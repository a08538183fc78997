"""Shared fixtures: the three service doubles, each a reusable pytest plugin."""

from __future__ import annotations

import os

import pytest

pytest_plugins = [
    "tests.doubles.egress",
    "tests.doubles.daytona",
    "tests.doubles.anthropic",
    "tests.doubles.slack",
    "tests.doubles.git_host",  # the `git_host` fixture: a git remote for sandboxes
]

# slack_sdk ignores NO_PROXY and the Daytona SDK honours proxies: keep loopback traffic local.
for _name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
    os.environ.pop(_name, None)
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost"


@pytest.fixture(autouse=True)
def _no_real_services(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may reach a real service through configuration leaking from the host."""
    for name in list(os.environ):
        if name.startswith(("DAYTONA_", "ANTHROPIC_", "SLACK_", "MAISON_", "CLAUDE_CODE_")):
            monkeypatch.delenv(name, raising=False)
