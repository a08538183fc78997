"""What the listeners share: settings, storage, conversations, and the words people type."""

from __future__ import annotations

import re
from dataclasses import dataclass

from maison_slack.slack.config import Settings
from maison_slack.slack.conversations import Conversations, UserNames
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.storage import Store

REFUSAL = "Sorry, you are not allowed to use Maison here. Ask the person who runs it to add you."

HELP = """*Maison runs Claude Code for your team, one sandbox per thread.*
• Mention me with a task: `@Maison fix the failing test` — the thread becomes a session with its own sandbox.
• Reply in the thread to continue the conversation; anyone in the channel can join in.
• In a thread: `stop` stops the running task, `reset` deletes the sandbox and starts over, `file <path>` posts a file from the sandbox.
• `/maison <task>` starts a session, `/maison list` shows this channel's sessions, `/maison status` shows what is running.
Idle sandboxes are deleted automatically; the next message in the thread starts a fresh one."""

_FILE_COMMAND = re.compile(r"^(?:file|get)\s+(\S.*)$", re.IGNORECASE | re.DOTALL)


@dataclass
class ThreadCommand:
    """A control word typed in a thread instead of a prompt."""

    name: str
    argument: str = ""


def parse_thread_command(text: str) -> ThreadCommand | None:
    """`stop`, `reset`, `help` or `file <path>`, typed alone; anything else is a prompt."""
    words = text.strip()
    lowered = words.lower().rstrip("!.")
    if lowered in ("stop", "cancel"):
        return ThreadCommand("stop")
    if lowered in ("reset", "restart"):
        return ThreadCommand("reset")
    if lowered == "help":
        return ThreadCommand("help")
    match = _FILE_COMMAND.match(words)
    if match and "\n" not in match.group(1).strip():
        return ThreadCommand("file", match.group(1).strip().strip("`"))
    return None


@dataclass
class Bot:
    settings: Settings
    store: Store
    conversations: Conversations
    sandboxes: Sandboxes
    users: UserNames
