"""maison-slack: run Claude Code from Slack, one Daytona sandbox per thread.

The library (`Maison`, `MaisonSandbox`, `StreamEvent`) runs Claude Code in a sandbox and
knows nothing of Slack; the Slack bot lives in `maison_slack.slack`.
"""

from maison_slack.core.credentials import SandboxCredentials, SecretsUnavailableError
from maison_slack.core.errors import (
    ClaudeNotFoundError,
    InstallError,
    MaisonError,
    RunTimeoutError,
    SandboxGoneError,
    SandboxStoppedError,
    SandboxUnavailableError,
)
from maison_slack.core.events import StreamEvent
from maison_slack.core.maison import Maison
from maison_slack.core.sandbox import MaisonSandbox

__all__ = [
    "ClaudeNotFoundError",
    "InstallError",
    "Maison",
    "MaisonError",
    "MaisonSandbox",
    "RunTimeoutError",
    "SandboxCredentials",
    "SandboxGoneError",
    "SandboxStoppedError",
    "SandboxUnavailableError",
    "SecretsUnavailableError",
    "StreamEvent",
]
