"""What the listeners share: settings, storage, conversations, and the words people type."""

from __future__ import annotations

import asyncio
import functools
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from maison_slack.slack.config import Settings
from maison_slack.slack.conversations import Conversations
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.slack.users import UserNames
from maison_slack.storage import Store

logger = logging.getLogger(__name__)
Listener = TypeVar("Listener", bound=Callable[..., Awaitable[None]])

REFUSAL = "Sorry, you are not allowed to use Maison here. Ask the person who runs it to add you."

HELP = """*Maison runs Claude Code for your team, one sandbox per thread.*
• Mention me with a task: `@Maison fix the failing test` — the thread becomes a session with its own sandbox.
• Reply in the thread to continue the conversation; anyone in the channel can join in.
• Before the task, `--repo <https URL>`, `--branch <name>` and `--model <name>` override the channel's settings for this message: `@Maison --model sonnet --branch dev fix the flaky test`.
• In a thread: `stop` stops the running task, `reset` deletes the sandbox and starts over, `file <path>` posts a file from the sandbox (one path, or a path in backticks), `preview <port>` posts a link to a server running in the sandbox, `fork` copies the thread (sandbox and conversation) into a new one to try another direction, `diff` posts the changes as a patch, `push` commits them and pushes the thread's branch, `model <name>` (or `model default`) sets the model of the next answers.
• `/maison <task>` starts a session, `/maison list` shows this channel's sessions, `/maison status` shows what is running, `/maison cost` shows what runs cost.
• `/maison config` shows this channel's settings; `/maison config repo <https URL> [branch]`, `model <name>`, `instructions <text>` and `budget <USD per day>` change them, and `/maison config <name> unset` removes one.
Idle sandboxes are stopped (you are warned first, with a Keep button) and wake up with their files when you write again; stopped ones are deleted after a while."""

#: `file <path>` only when the argument is one path-like token or a path in backticks: "file a bug
#: report about…" and "get the failing tests green" are prompts, not commands.
_FILE_COMMAND = re.compile(r"^file\s+(?:`([^`\n]+)`|([\w./~@+=,:-]+))$", re.IGNORECASE)
#: `preview <port>`: a port number and nothing else ("preview the page" is a prompt).
_PREVIEW_COMMAND = re.compile(r"^preview\s+:?(\d{1,5})$", re.IGNORECASE)
#: `model <name>`: an alias Claude Code knows or an id with a digit ("model the data" and
#: "model everything" are prompts); ../shared/reference/claude-code.md §9.5.
_MODEL_COMMAND = re.compile(
    r"^model\s+`?((?:default|best|opus|sonnet|haiku|fable|opusplan)(?:\[1m\])?"
    r"|(?=[^`\s]*\d)[A-Za-z][A-Za-z0-9._:/@\[\]-]{0,99})`?$", re.IGNORECASE)


@dataclass
class ThreadCommand:
    """A control word typed in a thread instead of a prompt."""

    name: str
    argument: str = ""


def parse_thread_command(text: str) -> ThreadCommand | None:
    """`stop`, `reset`, `help`, `fork`, `diff`, `push`, `file <path>`, `preview <port>` or
    `model <name>`, typed alone; anything else is a prompt.

    Only unambiguous words are commands: "restart" or "get …" could be a task for Claude, and
    taking a task for a command (deleting the sandbox, say) loses the person's request.
    """
    words = text.strip()
    lowered = words.lower().rstrip("!.")
    if lowered in ("stop", "reset", "help", "fork", "diff", "push"):
        return ThreadCommand(lowered)
    model = _MODEL_COMMAND.match(words)
    if model:
        return ThreadCommand("model", model.group(1))
    preview = _PREVIEW_COMMAND.match(words)
    if preview and 1 <= int(preview.group(1)) <= 65535:
        return ThreadCommand("preview", preview.group(1))
    match = _FILE_COMMAND.match(words)
    if match:
        return ThreadCommand("file", (match.group(1) or match.group(2)).strip())
    return None


class InFlight:
    """Counts listeners that are running, so a shutdown can let them finish claiming.

    Bolt acks an event and then runs its listener as a task of its own; once acked, Slack will
    not send it again, so a shutdown that closed the database under a listener lost the message.
    """

    def __init__(self) -> None:
        self._running = 0
        self._idle = asyncio.Event()
        self._idle.set()

    def track(self, listener: Listener) -> Listener:
        @functools.wraps(listener)  # Bolt reads the parameter names through __wrapped__
        async def tracked(*args: Any, **kwargs: Any) -> None:
            self._running += 1
            self._idle.clear()
            try:
                await listener(*args, **kwargs)
            finally:
                self._running -= 1
                if not self._running:
                    self._idle.set()

        return tracked  # type: ignore[return-value]

    async def drain(self, timeout: float) -> None:
        """Wait up to `timeout` seconds for the running listeners to end."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except asyncio.TimeoutError:
            logger.warning("%d listener(s) still running after %.0f s; shutting down anyway", self._running, timeout)


@dataclass
class Services:
    """What every listener needs, built once by the app and handed to each `register`."""

    settings: Settings
    store: Store
    conversations: Conversations
    sandboxes: Sandboxes
    users: UserNames
    in_flight: InFlight = field(default_factory=InFlight)
