"""The hostile-input suite: 1,000 generated hostile inputs through one bot, in a few minutes.

One bot (the real slack-bolt Socket Mode app, daytona SDK and Claude Code CLI against the
doubles) reads the corpus of `tests/hostile_corpus.py`: prompts (mentions and follow-ups),
`/maison` texts, attachments' names (and 200 KB contents), people's display names and `file`
paths, made of shell metacharacters, `$(…)`, backticks, control characters, bidi overrides,
huge texts, NUL-free binary-ish Unicode, Slack markup and broadcast mentions, path traversal,
secret bait and command look-alikes. Claude (the Anthropic double) plays along: it echoes every
prompt back, runs `env`, base64s and hex-dumps it, prints every secret the test knows in every
encoding, reads the attachments, writes files at hostile paths that people then fetch with
`file`, and answers 200 KB at a time; so secrets really flow towards Slack.

Pass, as the issue "Secrets stay out of the sandbox and out of Slack" asks:

* 0 commands executed outside Claude's own tool calls: every command line the Daytona double
  ran for the bot is one of the bot's fixed commands (with no canary, no hostile text in it),
  and no marker file appeared (each shell-flavoured input writes `<pwn>/<canary>` if a shell ever
  evaluates it; Claude's own tool call writes one on purpose, the positive control);
* 0 secrets in any Slack payload or upload (the Slack double scans every call, ack,
  response_url body and uploaded file for every secret in all its encodings);
* 0 broadcast pings in anything the bot sent;
* 0 lost or duplicated messages: every message a person sent is answered exactly once (a run
  that ends with ✅, one upload or one notice for `file`), in Slack and in SQLite;
* the bot alive throughout: its Socket Mode connection never drops, no listener or run crashes,
  and a last mention is answered.

Two phases: 1,000 inputs with Claude Code's credentials in Daytona Secrets (the default), and
200 inputs with `MAISON_KEY_IN_SANDBOX=env`, where Claude also dumps its environment into files
(`env`, base64, hex, `/proc/self/environ`, UTF-16, JSON, URL-encoded) that people fetch. The
figures are printed at the end of the pytest run (a "hostile-input suite" terminal summary
section), so CI shows them. `test_the_checks_are_not_blind` shows that every detector finds what
it looks for.

Bugs the suite found are pinned at the end of this file: fixed ones by regression tests, open
ones by strict xfail tests (which fail the run once the bug is fixed, so the marker gets
removed). Open bugs are kept out of the main phases until then. (The phases still let a thread's
first follow-up wait until its mention is claimed, keep lone surrogates out of display names and
have Claude dump its environment unwrapped (`base64 -w0`, `xxd -p | tr -d '\n'`), as they did
while those were open bugs; each has a test of its own now.)

Slack's rate limits stay as in the double, except `chat.update` (Tier 3, ~50/min for the whole
app): with ~90 runs streaming, that limit alone would make the suite take 7 minutes, and pacing
is not what it tests (`test_bot_threads` does). chat.postMessage keeps its ~1/s per channel, so
the threads are spread over 12 channels, one thread at a time per channel.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import logging
import re
import secrets as random_tokens
import shlex
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
import pytest_asyncio

from maison_slack.core import git
from maison_slack.core.maison import CLAUDE_CODE_VERSION, INSTALL_SCRIPT
from maison_slack.core.sandbox import KILL_RUN_FUNCTION, KILL_STALE_SCRIPT
from maison_slack.slack.bot import parse_thread_command
from maison_slack.slack.config import load_settings
from maison_slack.slack.markup import slack_to_plain
from maison_slack.storage import LIVE_STATES
from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot_env  # noqa: F401
from tests.doubles.anthropic import Text, ToolUse, Turn, has_tool_result, tool_result_text, user_prompts
from tests.doubles.daytona import DaytonaDouble, SnapshotSpec
from tests.doubles.slack import CANNED_USERS, Message, visible_text
from tests.hostile_corpus import (
    CANARY,
    NESTED_BROADCASTS,
    HostileInput,
    generate,
    has_surrogate,
    huge_content,
    slack_escape,
    summary,
)

CHANNELS = [f"C0HOST{n:02d}" for n in range(1, 13)]
HOSTILE_USERS = [f"U0H{n:03d}" for n in range(1, 41)]
WAIT = 60  # seconds for one step under load (2 cores, shared)
ACT = re.compile(r"ACT-(\w+)-TCA")



def directive(action: str) -> str:
    return f"ACT-{action}-TCA"


# -- the Daytona double, recording every command it runs for the bot ----------------------------------


class RecordingDaytona(DaytonaDouble):
    """The Daytona double, also keeping every `process/execute` command (session commands are
    kept by the double itself, in `SandboxRecord.sessions`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.executed: list[tuple[str, str]] = []  # (sandbox id, command)
        self.session_commands: list[tuple[str, str]] = []
        self.homes: set[str] = set()  # work dirs of every sandbox a command ran in

    def _note(self, request, command: Any, log: list[tuple[str, str]]) -> None:  # noqa: ANN001
        sandbox_id = request.match_info.get("sandbox_id", "?")
        if sandbox_id in self.sandboxes:
            self.homes.add(str(self.sandboxes[sandbox_id].home))
        log.append((sandbox_id, str(command)))

    async def _execute(self, request):  # type: ignore[override]
        try:
            body = await request.json()
            command = body.get("command") if isinstance(body, dict) else None
        except ValueError:
            command = None
        self._note(request, command, self.executed)
        return await super()._execute(request)

    async def _session_exec(self, request):  # type: ignore[override]
        try:
            body = await request.json()
            command = body.get("command") if isinstance(body, dict) else None
        except ValueError:
            command = None
        self._note(request, command, self.session_commands)
        return await super()._session_exec(request)


@pytest_asyncio.fixture
async def daytona_double(claude_bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[RecordingDaytona]:
    """This module's Daytona double: the plugin's, recording commands."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    double = RecordingDaytona(snapshots={"daytona-small": SnapshotSpec(path=[str(claude_bin_dir)])})
    await double.start()
    try:
        yield double
    finally:
        await double.stop()


def bot_command_patterns(work_dirs: set[str]) -> list[re.Pattern[str]]:
    """Every command line the bot itself builds (maison_slack/core/sandbox.py, core/maison.py)."""
    dirs = "|".join(re.escape(shlex.quote(d)) for d in sorted(work_dirs)) or "(?!)"
    run_dir = rf"(?:{'|'.join(re.escape(d) for d in sorted(work_dirs)) or '(?!)'})/\.maison/runs/\d{{8}}-\d{{6}}-[0-9a-f]{{8}}"
    flags = r"-p --output-format stream-json --verbose --include-partial-messages --dangerously-skip-permissions"
    return [re.compile(p, re.DOTALL) for p in (
        re.escape('PATH="$HOME/.maison/npm/bin:$PATH" command -v claude'),
        *(re.escape(INSTALL_SCRIPT.format(version=CLAUDE_CODE_VERSION, pin=pin)) for pin in (0, 1)),
        re.escape("bash -c 'exec 3<>/dev/tcp/127.0.0.1/") + r"\d+" + re.escape(
            "' >/dev/null 2>&1 && echo open || echo closed"),
        re.escape(KILL_STALE_SCRIPT),
        re.escape(KILL_RUN_FUNCTION) + rf"kill_run {run_dir}",
        rf"cd (?:{dirs})(?:/[\w.-]+)? && setsid --wait bash (?:{dirs})/\.maison/run\.sh {run_dir} {flags}"
        rf"(?: --resume [0-9a-f-]{{36}}| --continue)?(?: --fork-session)?"
        rf"(?: --append-system-prompt-file {run_dir}/instructions)?"
        rf"(?: --model [A-Za-z0-9._:/@\[\]-]+)?(?: --max-budget-usd [0-9.]+)?",
        # the thread's git repository (maison_slack/core/git.py): made, and its head read
        re.escape(git.INIT_SCRIPT.format(branch="BRANCH")).replace("BRANCH", r"maison/\d+-\d+"),
        re.escape(git.HEAD_SCRIPT),
        re.escape(git.FREE_PATH_SCRIPT.format(path="PATH")).replace("PATH", rf"(?:{dirs})/[\w.-]+"),
        rf"tail -c \+\d+ {run_dir}/out\.jsonl 2>/dev/null \| head -c \d+ \| base64 -w0",
        rf"cat {run_dir}/stderr 2>/dev/null",
    )]


# -- secrets ------------------------------------------------------------------------------------------


def make_secrets() -> dict[str, str]:
    """Fresh values for every secret the bot holds or forwards; one has &, +, / and = so that its
    mrkdwn-escaped and URL-encoded forms differ from it."""
    hexa = random_tokens.token_hex
    return {
        "SLACK_BOT_TOKEN": f"xoxb-{random_tokens.randbelow(10**12):012d}-{random_tokens.randbelow(10**13):013d}-{hexa(12)}",
        "SLACK_APP_TOKEN": f"xapp-1-A0FAKE-{random_tokens.randbelow(10**13):013d}-{hexa(32)}",
        "DAYTONA_API_KEY": f"dtn_{hexa(32)}",
        "ANTHROPIC_API_KEY": f"sk-ant-api03-{random_tokens.token_urlsafe(60)}",
        "ANTHROPIC_AUTH_TOKEN": f"at+{hexa(8)}/{hexa(8)}&{hexa(8)}={hexa(4)}",
        "CLAUDE_CODE_OAUTH_TOKEN": f"sk-ant-oat01-{random_tokens.token_urlsafe(48)}",
    }


def use_secrets(env: BotEnv, secrets: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    """Give the doubles and the bot these secrets (the extra credentials are forwarded from the
    bot's environment, as a user would set them)."""
    env.slack.bot_token = secrets["SLACK_BOT_TOKEN"]
    env.slack.app_token = secrets["SLACK_APP_TOKEN"]
    env.daytona.api_key = secrets["DAYTONA_API_KEY"]
    env.anthropic.api_key = secrets["ANTHROPIC_API_KEY"]
    env.anthropic.auth_token = secrets["ANTHROPIC_AUTH_TOKEN"]
    monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", secrets["ANTHROPIC_AUTH_TOKEN"])
    monkeypatch.setenv("CLAUDE_CODE_OAUTH_TOKEN", secrets["CLAUDE_CODE_OAUTH_TOKEN"])
    env.settings = load_settings(env.env())
    assert set(secrets.values()) <= set(env.settings.secrets()), "the bot does not know all its secrets"


def leak_block(secrets: dict[str, str]) -> str:
    """Every secret in every encoding the issue names, as Claude might print them."""
    lines = []
    for name, value in secrets.items():
        raw = value.encode()
        lines += [
            f"{name}={value}",
            f'{{"{name.lower()}": {json.dumps(value)}}}',
            f"mrkdwn: {slack_escape(value)}",
            f"hex: {binascii.hexlify(raw).decode()} HEX: {binascii.hexlify(raw).decode().upper()}",
            f"url: https://evil.test/?t={quote(value, safe='')}&u={quote_plus(value)}",
            "b64: " + " ".join(base64.b64encode(b"k" * n + raw + b"\n").decode() for n in range(3)),
            "b64url: " + " ".join(base64.urlsafe_b64encode(b"xy"[:n] + raw).decode() for n in range(3)),
            f"Authorization: Bearer {value}",
        ]
    return "\n".join(lines)


# -- Claude ---------------------------------------------------------------------------------------------


class Claude:
    """The Anthropic double's responder: every reply echoes the prompt, then does what the prompt's
    directive (`ACT-<action>-TCA`) says. Records the commands it had Claude Code run."""

    def __init__(self, secrets: dict[str, str], pwn: Path, pool: list[str]) -> None:
        self.secrets = secrets
        self.pwn = pwn
        self.pool = pool  # hostile texts, for long answers and files
        self.paths: dict[str, str] = {}  # canary -> path Claude writes when asked
        self.tool_commands: list[str] = []
        self.scripts: dict[str, str] = {}  # action -> a fixed Bash command a test sets
        self.seen_canaries: set[str] = set()
        self.requests = 0
        self.tool_results = 0

    def __call__(self, body: dict[str, Any]) -> Turn:
        self.requests += 1
        prompts = user_prompts(body)
        prompt = prompts[-1] if prompts else ""
        self.seen_canaries.update(CANARY.findall(prompt))
        found = ACT.search(prompt)
        action = found.group(1) if found else "echo"
        if has_tool_result(body):
            self.tool_results += 1
            tail = "\n" + leak_block(self.secrets) if action == "leak" else ""
            return Turn([Text(f"The command printed:\n{tool_result_text(body)}{tail}")], chunk_size=4000)
        echo = Text(f"You wrote:\n{prompt}\n")
        if action == "echo":
            return Turn([echo], chunk_size=2000)
        if action == "big":
            return Turn([echo, Text(self.big_text(200_000))], chunk_size=25_000)
        command = self.command(action, prompt)
        self.tool_commands.append(command)
        return Turn([echo, ToolUse("Bash", {"command": command, "description": f"do {action}"})], chunk_size=2000)

    def big_text(self, size: int) -> str:
        """`size` characters of hostile texts, with every secret (in every encoding) at the start,
        in the middle and at the end."""
        out, length, n = [leak_block(self.secrets)], 0, 0
        while length < size:
            piece = self.pool[n % len(self.pool)][:3000]
            out.append(piece)
            length += len(piece) + 1
            n += 1
            if length >= size // 2 > length - len(piece) - 1:
                out.append(leak_block(self.secrets))
        out.append(leak_block(self.secrets))
        return "\n".join(out)

    def command(self, action: str, prompt: str) -> str:
        q = shlex.quote
        if action in self.scripts:
            return self.scripts[action]
        if action == "env":
            return ("env; echo ---; tr '\\0' '\\n' < /proc/self/environ; echo ---; env | base64 -w0; echo; "
                    "env | xxd -p | tr -d '\\n'; echo")
        if action == "leak":
            return f"printf '%s\\n' {q(leak_block(self.secrets))} | tee leak.txt | head -c 100000"
        if action == "status":  # the prompt itself in the command, so in the status line
            return f"printf '%s\\n' {q(prompt[:20_000])} | wc -c"
        if action == "files":
            return ('ls -la uploads; for f in uploads/*; do printf "== %s\\n" "$f"; head -c 40000 -- "$f"; echo; '
                    'done')
        if action == "control":
            return f"touch {q(str(self.pwn / 'CLAUDE-CONTROL'))} && echo control-done"
        if action == "write":
            listed = re.search(r"WRITE=([K9Z0-9,]*)", prompt)
            wanted = [c for c in (listed.group(1) if listed else "").split(",") if c in self.paths]
            parts = []
            for n, canary in enumerate(wanted):
                path = self.paths[canary]
                content = f"{path}\n{leak_block(self.secrets)}\n{self.pool[n % len(self.pool)][:2000]}"
                body = f"printf '%s\\n' {q(content)}; env; env | base64 -w0; echo"
                if n == 0 and "BIG" in prompt:  # one 200 KB file
                    body = f"for i in $(seq 100); do printf '%s\\n' {q(content)}; done; env"
                parent = path.rsplit("/", 1)[0] if "/" in path.strip("/") else "."
                parts.append(f"{{ mkdir -p -- {q(parent)} && {{ {body}; }} > {q(path)}; }} 2>&1 | head -c 300")
            return "\n".join(parts) + "\necho written"
        raise AssertionError(f"unknown action {action}")


# -- the plan: which input goes where -----------------------------------------------------------------


@dataclass
class Thread:
    number: int
    channel: str
    slash: bool
    starter: list[HostileInput]
    follow_user: str
    follow: list[HostileInput]
    follow_action: str
    files: list[HostileInput] = field(default_factory=list)
    extra: list[HostileInput] = field(default_factory=list)  # huge prompts, one message each
    paths: list[HostileInput] = field(default_factory=list)
    burst: bool = False
    control: bool = False


def plan(inputs: list[HostileInput], channels: list[str] = CHANNELS) -> list[Thread]:
    """One thread per display name (its owner writes the thread's follow-up), half started with a
    mention (6 prompt inputs), half with `/maison` (the slash inputs); the other prompts go in
    the follow-ups, 8 attachments on every mention thread's follow-up, the `file` paths 6 or so
    per thread, each huge prompt in a message of its own."""
    by_kind: dict[str, list[HostileInput]] = defaultdict(list)
    for item in inputs:
        by_kind[item.kind].append(item)
    count = len(by_kind["display_name"])
    assert count <= len(HOSTILE_USERS) and count % 2 == 0
    prompts = [i for i in by_kind["prompt"] if len(i.text) <= 5000]
    huge = [i for i in by_kind["prompt"] if len(i.text) > 5000]
    slash, names, paths = by_kind["slash"], by_kind["file_name"], by_kind["file_path"]
    actions = ["leak", "env", "status", "echo", "big", "leak", "env", "status", "echo", "echo"]
    half, per_mention = count // 2, 6
    threads = []
    for n in range(count):
        is_slash, k = n % 2 == 1, n // 2
        threads.append(Thread(
            number=n, channel=channels[n % len(channels)], slash=is_slash,
            starter=slash[k * len(slash) // half:(k + 1) * len(slash) // half] if is_slash
            else prompts[k * per_mention:(k + 1) * per_mention],
            follow_user=HOSTILE_USERS[n], follow=[],
            follow_action="files" if not is_slash else actions[k % len(actions)],
            burst=n % 3 == 0, control=n == 0,
        ))
    for k, item in enumerate(prompts[half * per_mention:]):
        threads[k % count].follow.append(item)
    per_files = -(-len(names) // half)
    for k, item in enumerate(names):  # on the mention threads' follow-ups
        threads[(k // per_files) * 2].files.append(item)
    for k, item in enumerate(huge):
        threads[(5 * k + 3) % count].extra.append(item)
    for k, item in enumerate(paths):
        threads[k % count].paths.append(item)
    big_left = 3
    for thread in threads:  # at most three 200 KB answers
        if thread.follow_action == "big":
            if big_left:
                big_left -= 1
            else:
                thread.follow_action = "echo"
    return threads


def render(item: HostileInput) -> str:
    """What the person's Slack client sends for this input."""
    return item.text if item.markup else slack_escape(item.text)


# -- the run --------------------------------------------------------------------------------------------


@dataclass
class Ledger:
    """What people sent and what must come of it."""

    prompts: dict[tuple[str, str], str] = field(default_factory=dict)  # (channel, prompt ts) -> label
    threads: dict[tuple[str, str], int] = field(default_factory=dict)  # (channel, thread ts) -> runs expected
    files: list[tuple[str, str, str, str, bool]] = field(default_factory=list)  # channel, thread, ts, canary, upload?
    slash_missing: list[str] = field(default_factory=list)
    entry: Counter = field(default_factory=Counter)  # (kind, channel of entry) -> inputs
    messages: Counter = field(default_factory=Counter)  # channel of entry -> messages


class Suite:
    """Feeds the plan's threads to the bot, one thread at a time per channel, and keeps the ledger."""

    def __init__(self, env: BotEnv, claude: Claude, inputs: list[HostileInput], channels: list[str] = CHANNELS) -> None:
        self.env = env
        self.slack = env.slack
        self.claude = claude
        self.inputs = inputs
        self.ledger = Ledger()
        self.locks = {channel: asyncio.Lock() for channel in channels}

    @property
    def store(self):
        assert self.env.app is not None
        return self.env.app.store

    async def runs_done(self, channel: str, thread_ts: str, count: int) -> None:
        async def done() -> bool:
            rows = await self.store.runs(channel, thread_ts)
            replies = [m for m in self.slack.thread(channel, thread_ts)[1:] if m.is_bot]
            return len(rows) >= count and all(r.state not in LIVE_STATES for r in rows) and not any(
                any(b.get("type") == "actions" for b in m.blocks) for m in replies)
        try:
            await self.slack.wait_for(done, timeout=WAIT)
        except TimeoutError:
            rows = await self.store.runs(channel, thread_ts)
            raise AssertionError(f"thread {channel}/{thread_ts}: runs {[r.state for r in rows]}, {count} expected")

    async def prompt(self, channel: str, thread_ts: str | None, user: str, text: str, files=None, *,
                     entry: str, wait: bool = True) -> str:
        if thread_ts is None:
            ts = await self.slack.mention(user, channel, text, files=files)
            thread_ts = ts
        else:
            ts = await self.slack.post_message(user, channel, text, thread_ts=thread_ts, files=files)
        key = (channel, thread_ts)
        self.ledger.prompts[(channel, ts)] = entry
        self.ledger.threads[key] = self.ledger.threads.get(key, 0) + 1
        self.ledger.messages[entry] += 1
        if wait:
            await self.runs_done(channel, thread_ts, self.ledger.threads[key])
        return ts

    async def slash(self, channel: str, user: str, text: str, canary: str) -> str | None:
        await self.slack.slash_command(user, channel, text, timeout=WAIT)
        self.ledger.messages["/maison"] += 1

        def echoed() -> Message | None:
            return next((m for m in self.slack.messages(channel)
                         if m.is_bot and "asked Maison" in m.text and canary in m.text), None)
        try:
            echo = await self.slack.wait_for(echoed, timeout=WAIT)
        except TimeoutError:
            self.ledger.slash_missing.append(canary)
            return None
        key = (channel, echo.ts)
        self.ledger.prompts[key] = "/maison"
        self.ledger.threads[key] = self.ledger.threads.get(key, 0) + 1
        await self.runs_done(channel, echo.ts, 1)
        return echo.ts

    async def fetch_path(self, channel: str, thread_ts: str, path: str) -> Message:
        """`file <path>` for a path with a canary in it; returns the bot's answer."""
        canary = CANARY.search(path).group(0)
        ts = await self.slack.post_message(ALICE, channel, f"file `{slack_escape(path)}`", thread_ts=thread_ts)
        self.ledger.messages["file"] += 1

        def answer() -> Message | None:
            return next((m for m in self.slack.thread(channel, thread_ts) if m.is_bot and float(m.ts) > float(ts)
                         and canary in m.text and (m.files or not m.blocks)), None)
        found = await self.slack.wait_for(answer, timeout=WAIT)
        self.ledger.files.append((channel, thread_ts, ts, canary, bool(found.files)))
        return found

    async def fetch(self, channel: str, thread_ts: str, item: HostileInput) -> None:
        """`file <hostile path>`: one upload if the path names a file in the sandbox, else one notice."""
        text = f"file `{render(item)}`"
        assert self.env.app is not None
        command = parse_thread_command(slack_to_plain(text, self.env.app.services.users.known(), self.slack.bot_user_id))
        assert command is not None and command.name == "file", (item, text)
        session = await self.store.get_session(channel, thread_ts)
        home = self.env.daytona.sandbox(session.sandbox_id).home
        target = Path(command.argument) if command.argument.startswith("/") else home / command.argument
        try:
            upload = target.is_file()
        except OSError:  # a name too long to look up
            upload = False
        ts = await self.slack.post_message(ALICE, channel, text, thread_ts=thread_ts)
        self.ledger.files.append((channel, thread_ts, ts, item.canary, upload))
        self.ledger.messages["file"] += 1
        self.ledger.entry[("file_path", "file")] += 1

        def answered() -> bool:
            return any(m.is_bot and float(m.ts) > float(ts) and item.canary in m.text and (m.files or not m.blocks)
                       for m in self.slack.thread(channel, thread_ts))
        await self.slack.wait_for(answered, timeout=WAIT)

    async def thread(self, t: Thread) -> None:
        async with self.locks[t.channel]:
            try:
                await self._thread(t)
            except Exception as exc:
                raise AssertionError(f"thread {t.number} ({t.channel}, {'slash' if t.slash else 'mention'}): "
                                     f"{type(exc).__name__}: {exc}") from exc

    async def _thread(self, t: Thread) -> None:
        claude, ledger = self.claude, self.ledger
        written = [p for p in t.paths if p.written]
        for p in written:
            claude.paths[p.canary] = p.target or p.text
        big = "BIG" if t.number % 13 == 1 else ""
        head = f"{directive('write')} WRITE={','.join(p.canary for p in written) or 'none'} {big}\n"
        # 1. the starter: a mention, or /maison
        if t.slash:
            text = head + "\n".join(render(i) for i in t.starter)
            ledger.entry.update(("slash", "/maison") for _ in t.starter)
            thread_ts = await self.slash(t.channel, ALICE, text, t.starter[0].canary)
            if thread_ts is None:
                return
        else:
            text = head + "\n".join(render(i) for i in t.starter)
            ledger.entry.update(("prompt", "mention") for _ in t.starter)
            thread_ts = await self.prompt(t.channel, None, ALICE, text, entry="mention", wait=not t.burst)
            if t.burst:  # the follow-up goes in while the starter runs, once the thread exists (see
                # test_a_reply_handled_before_its_threads_mention_runs_after_it)
                await self.slack.wait_for(lambda: self.store.get_session(t.channel, thread_ts), timeout=WAIT)
        # 2. a follow-up by a person with a hostile display name, with attachments
        files = []
        for k, item in enumerate(t.files):
            content = huge_content(item.n) if k == 0 and t.number % 10 == 0 else (
                f"{item.text}\n{claude.pool[item.n % len(claude.pool)][:500]}\n".encode("utf-8", "surrogatepass"))
            files.append(self.slack.add_hosted_file(item.text, content, t.follow_user))
        cc = f" cc <@{HOSTILE_USERS[(t.number + 1) % len(HOSTILE_USERS)]}> <@{ALICE}>"
        text = directive(t.follow_action) + cc + "\n" + "\n".join(render(i) for i in t.follow)
        ledger.entry.update(("prompt", "follow-up") for _ in t.follow)
        ledger.entry.update(("file_name", "upload") for _ in t.files)
        ledger.entry[("display_name", "profile")] += 1
        await self.prompt(t.channel, thread_ts, t.follow_user, text, files, entry="follow-up")
        if t.burst:  # the follow-up was queued behind the starter: both must be done
            await self.runs_done(t.channel, thread_ts, ledger.threads[(t.channel, thread_ts)])
        # 3. huge prompts, and the positive control of the marker files
        for item in t.extra:
            ledger.entry[("prompt", "follow-up")] += 1
            await self.prompt(t.channel, thread_ts, ALICE, directive("echo") + "\n" + render(item), entry="follow-up")
        if t.control:
            await self.prompt(t.channel, thread_ts, ALICE, directive("control") + " touch the control file",
                              entry="follow-up")
        # 4. `file <hostile path>`, one at a time
        for item in t.paths:
            await self.fetch(t.channel, thread_ts, item)


# -- checks ---------------------------------------------------------------------------------------------


def first_version(msg: Message) -> dict[str, Any]:
    return msg.edits[0] if msg.edits else msg.snapshot()


def is_placeholder(msg: Message) -> bool:
    """The first message of a run's reply (posted as "Starting…")."""
    blocks = first_version(msg)["blocks"]
    return any(e.get("text") == "Starting…" for b in blocks if b.get("type") == "context" for e in b["elements"])


async def lost_and_duplicated(suite: Suite) -> tuple[list[str], list[str]]:
    """Messages with no answer, and messages answered more than once (Slack and SQLite)."""
    slack, store, ledger = suite.slack, suite.store, suite.ledger
    lost: list[str] = [f"/maison {c}: never posted" for c in ledger.slash_missing]
    duplicated: list[str] = []
    for (channel, thread_ts), expected in ledger.threads.items():
        rows = await store.runs(channel, thread_ts)
        thread = slack.thread(channel, thread_ts)
        placeholders = [m for m in thread[1:] if m.is_bot and m.blocks and is_placeholder(m)]
        if len(placeholders) > len(rows):
            duplicated.append(f"{channel}/{thread_ts}: {len(placeholders)} replies for {len(rows)} runs")
        if len(rows) > expected:
            duplicated.append(f"{channel}/{thread_ts}: {len(rows)} runs for {expected} prompts")
        elif len(rows) < expected:
            lost.append(f"{channel}/{thread_ts}: {len(rows)} runs for {expected} prompts")
        per_prompt = Counter(r.prompt_ts for r in rows)
        for prompt_ts, n in per_prompt.items():
            if n > 1:
                duplicated.append(f"{channel}/{prompt_ts}: {n} runs")
            if (channel, prompt_ts) not in ledger.prompts:
                duplicated.append(f"{channel}/{prompt_ts}: a run for a message nobody sent")
        # A run's reply is its placeholder and the continuations posted before the next run's
        # placeholder; its final state (✅, no Stop button) is on the last of them.
        shown = [m for m in thread[1:] if m.is_bot and m.blocks]
        starts = [k for k, m in enumerate(shown) if is_placeholder(m)] + [len(shown)]
        replies = {shown[a].ts: shown[a:b] for a, b in zip(starts, starts[1:])}
        for row in rows:
            last = (replies.get(row.reply_ts or "") or [None])[-1]
            text = visible_text(last) if last else ""
            running = last is not None and any(b.get("type") == "actions" for b in last.blocks)
            if row.state != "done" or running or ":white_check_mark:" not in text:
                lost.append(f"{channel}/{row.prompt_ts}: run {row.state}, reply ends {text[-200:]!r}")
    answered = {(c, r.prompt_ts) for (c, t) in ledger.threads for r in await store.runs(c, t)}
    for (channel, ts), entry in ledger.prompts.items():
        if (channel, ts) not in answered:
            lost.append(f"{entry} {channel}/{ts}: no run")
    for channel, thread_ts, ts, canary, upload in ledger.files:
        answers = [m for m in slack.thread(channel, thread_ts)
                   if m.is_bot and float(m.ts) > float(ts) and canary in m.text and (m.files or not m.blocks)]
        if not answers:
            lost.append(f"file {canary}: no answer")
        elif len(answers) > 1:
            duplicated.append(f"file {canary}: {len(answers)} answers")
        elif bool(answers[0].files) != upload:
            lost.append(f"file {canary}: {'upload' if upload else 'notice'} expected, got {answers[0].text[:200]!r}")
    unacked = [e.envelope_id for e in slack.envelopes.values() if not e.acked or e.given_up]
    if unacked:
        lost.append(f"{len(unacked)} envelopes never acked")
    return lost, duplicated


def foreign_commands(daytona: RecordingDaytona, pwn: Path) -> tuple[list[str], int]:
    """Commands run for the bot that are not its own fixed ones (or hold a canary), and marker
    files that a shell wrote for a hostile input; and how many commands were checked. (Claude's
    own tool calls are run by Claude Code inside the sandbox: Daytona never sees them.)"""
    work_dirs = daytona.homes | {str(sb.home) for sb in daytona.sandboxes.values()}
    patterns = bot_command_patterns(work_dirs)
    commands = [c for _, c in daytona.executed] + [c for _, c in daytona.session_commands]
    recorded = {c for _, c in daytona.session_commands}
    for sb in daytona.sandboxes.values():  # the double's own record of session commands, as a cross-check
        for session in sb.sessions.values():
            commands += [c.command for c in session.commands.values() if c.command not in recorded]
    foreign = [c for c in commands if not any(p.fullmatch(c) for p in patterns) or CANARY.search(c)]
    markers = sorted(p.name for p in pwn.iterdir()) if pwn.exists() else []
    claude_markers = {"CLAUDE-CONTROL"}
    foreign += [f"marker file {name}" for name in markers if name not in claude_markers]
    return foreign, len(commands)


# -- figures, printed at the end of the run ---------------------------------------------------------------


FIGURES: dict[str, list[str]] = {}


class _FiguresReporter:
    def pytest_terminal_summary(self, terminalreporter) -> None:  # noqa: ANN001
        if not FIGURES:
            return
        terminalreporter.section("hostile-input suite")
        for name, lines in FIGURES.items():
            for line in lines:
                terminalreporter.write_line(f"[{name}] {line}")


def report(request: pytest.FixtureRequest, name: str, lines: list[str]) -> None:
    FIGURES[name] = lines
    manager = request.config.pluginmanager
    if not manager.has_plugin("hostile-figures"):
        manager.register(_FiguresReporter(), "hostile-figures")


class ErrorLog(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors() -> Iterator[ErrorLog]:
    handler = ErrorLog()
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield handler
    finally:
        root.removeHandler(handler)


async def watch_connection(env: BotEnv, drops: list[float], stop: asyncio.Event) -> int:
    samples = 0
    while not stop.is_set():
        samples += 1
        if not env.slack.connected:
            drops.append(time.monotonic())
        try:
            await asyncio.wait_for(stop.wait(), 0.2)
        except asyncio.TimeoutError:
            pass
    return samples


# -- one run of the suite ---------------------------------------------------------------------------------


@dataclass
class Phase:
    name: str
    env: BotEnv
    suite: Suite
    claude: Claude
    inputs: list[HostileInput]
    secrets: dict[str, str]
    pwn: Path
    threads: list[Thread]
    started: float
    failures: list[BaseException] = field(default_factory=list)
    drops: list[float] = field(default_factory=list)
    samples: int = 0


async def run_phase(name: str, env: BotEnv, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, *, count: int,
                    seed: int, key_in_sandbox: str, channels: list[str] = CHANNELS, after=None) -> Phase:
    """Start the bot with fresh secrets and feed it `count` generated inputs; `after(phase)` runs
    extra steps before the last mention (the bot's liveness check)."""
    started = time.monotonic()
    pwn = tmp_path / "pwned"
    pwn.mkdir()
    inputs = generate(str(pwn), count=count, seed=seed)
    secrets = make_secrets()
    use_secrets(env, secrets, monkeypatch)
    for user, item in zip(HOSTILE_USERS, [i for i in inputs if i.kind == "display_name"]):
        monkeypatch.setitem(CANNED_USERS, user, {"name": item.text, "real_name": item.text})
    claude = Claude(secrets, pwn, [i.text for i in inputs if len(i.text) < 5000 and not has_surrogate(i.text)])
    env.anthropic.responder = claude
    env.slack.rate_limits["chat.update"] = 600  # see the module docstring
    await env.start(edits_per_minute=500, edit_interval=0.5, key_in_sandbox=key_in_sandbox)
    suite = Suite(env, claude, inputs, channels)
    phase = Phase(name, env, suite, claude, inputs, secrets, pwn, plan(inputs, channels), started)
    stop = asyncio.Event()
    watcher = asyncio.create_task(watch_connection(env, phase.drops, stop))
    results = await asyncio.gather(*(suite.thread(t) for t in phase.threads), return_exceptions=True)
    phase.failures = [r for r in results if isinstance(r, BaseException)]
    if after is not None:
        try:
            await after(phase)
        except Exception as exc:
            phase.failures.append(exc)
    # Alive: a last mention, after everything, is answered.
    await suite.prompt(CHANNEL, None, ALICE, directive("echo") + " still alive? ALIVECHECK", entry="canary")
    stop.set()
    phase.samples = await watcher
    return phase


def redaction_masks(slack) -> tuple[int, int]:  # noqa: ANN001
    """How many payloads and uploads show the bot's mask: proof that secrets did flow."""
    payloads = sum("[redacted]" in json.dumps(payload, ensure_ascii=False) for _, payload in slack.bot_payloads())
    uploads = sum(b"[redacted]" in data or "[redacted]".encode("utf-16-le") in data for _, data in slack.bot_uploads())
    return payloads, uploads


async def verdict(phase: Phase, request: pytest.FixtureRequest, errors: ErrorLog) -> dict[str, list[Any]]:
    """Check the pass criteria; print the figures (end of the pytest run); return the problems."""
    env, suite, claude, inputs = phase.env, phase.suite, phase.claude, phase.inputs
    feeding = time.monotonic() - phase.started
    lost, duplicated = await lost_and_duplicated(suite)
    findings = env.slack.scan_for(phase.secrets, fragment=16)
    pings = env.slack.broadcast_pings()
    foreign, checked = foreign_commands(env.daytona, phase.pwn)
    scanned = env.slack.scanned()
    masked_payloads, masked_uploads = redaction_masks(env.slack)
    delivered = Counter(i.kind for i in inputs if i.kind != "file_path" and i.canary in claude.seen_canaries)
    expected_delivery = Counter(i.kind for i in inputs if i.kind != "file_path")
    crashes = [r for r in errors.records if r.name.startswith(("maison_slack", "slack_bolt", "slack_sdk"))]
    rate_limited = Counter(env.slack.rate_limited)
    files = Counter("upload" if upload else "notice" for *_, upload in suite.ledger.files)
    launches = sum("/.maison/run.sh " in c for _, c in env.daytona.session_commands)
    control = (phase.pwn / "CLAUDE-CONTROL").exists()
    duration = time.monotonic() - phase.started
    report(request, phase.name, [
        f"inputs {len(inputs)}: {summary(inputs)}",
        "inputs by channel of entry: " + ", ".join(f"{k} via {c} {n}" for (k, c), n in sorted(suite.ledger.entry.items())),
        "messages sent: " + ", ".join(f"{k} {n}" for k, n in sorted(suite.ledger.messages.items()))
        + f"; threads {len(phase.threads)} in {len(suite.locks)} channels; runs {sum(suite.ledger.threads.values())}; "
        f"`file` answers: {files['upload']} uploads, {files['notice']} notices",
        "inputs that reached Claude: " + ", ".join(f"{k} {delivered[k]}/{n}" for k, n in sorted(expected_delivery.items())),
        f"scanned: {scanned['payloads']} payloads ({scanned['payload_chars'] / 1e6:.1f} M chars), {scanned['uploads']} "
        f"uploads ({scanned['upload_bytes'] / 1e6:.2f} MB), for {len(phase.secrets)} secrets in all encodings; "
        f"the bot's [redacted] mask is in {masked_payloads} payloads and {masked_uploads} uploads",
        f"SECRETS FOUND {len(findings)} | BROADCAST PINGS {len(pings)} | LOST {len(lost)} | DUPLICATED {len(duplicated)} "
        f"| FOREIGN COMMANDS {len(foreign)}",
        f"commands checked {checked} (Claude Code launches {launches}); Claude's own tool calls {len(claude.tool_commands)}, "
        f"its control marker {'seen' if control else 'MISSING'}",
        f"bot alive: connection down in {len(phase.drops)} of {phase.samples} samples, connections opened "
        f"{env.slack.connections_opened}, errors logged {len(crashes)}, step failures {len(phase.failures)}",
        f"429s (retried by the bot): {dict(rate_limited) or 'none'}",
        f"duration {duration:.1f} s (feeding {feeding:.1f} s, checking {duration - feeding:.1f} s)",
    ])
    problems = {
        "step failures": [f"{type(f).__name__}: {f}"[:500] for f in phase.failures],
        "secrets in Slack": findings,
        "broadcast pings": pings,
        "lost": lost,
        "duplicated": duplicated,
        "foreign commands": [c[:300] for c in foreign],
        "positive control missing": [] if control else ["Claude's own `touch` did not run"],
        "tool calls without results": [] if claude.tool_results >= len(claude.tool_commands) > 0 else
        [f"{claude.tool_results} results for {len(claude.tool_commands)} calls"],
        "connection drops": [f"{len(phase.drops)} samples down, {env.slack.connections_opened} connections"]
        if phase.drops or env.slack.connections_opened != 1 else [],
        "errors logged": [f"{r.name}: {r.getMessage()[:300]}" for r in crashes],
        "inputs that never reached Claude": [f"{k}: {delivered[k]} of {n}" for k, n in expected_delivery.items()
                                             if delivered[k] != n],
        "nothing was redacted (did secrets flow?)": [] if masked_payloads and masked_uploads else
        [f"{masked_payloads} payloads, {masked_uploads} uploads"],
    }
    return {name: found for name, found in problems.items() if found}


def explain(problems: dict[str, list[Any]]) -> str:
    return "\n".join(f"{name} ({len(found)}): " + "\n    ".join(map(str, found[:8])) for name, found in problems.items())


# -- the suite --------------------------------------------------------------------------------------------


async def test_a_thousand_hostile_inputs(bot_env, monkeypatch, tmp_path, request, errors):
    """The issue's suite: 1,000 inputs, Claude Code's credentials in Daytona Secrets (the default)."""
    phase = await run_phase("1,000 inputs, key in Daytona Secrets", bot_env, monkeypatch, tmp_path,
                            count=1000, seed=20260613, key_in_sandbox="secret")
    assert len(phase.inputs) == 1000
    problems = await verdict(phase, request, errors)
    assert not problems, explain(problems)


#: Files Claude writes from its environment, each a usual way to dump or encode it (unwrapped:
#: wrapped dumps are a known bug, see `test_known_bug_wrapped_dumps_of_the_environment_leak_the_key`).
DUMPS = {
    "K9Z9901-env.txt": "env",
    "K9Z9902-env.b64": "env | base64 -w0",
    "K9Z9903-env.b64url": "env | base64 -w0 | tr '+/' '-_'",
    "K9Z9904-env.hex": "env | xxd -p | tr -d '\\n'",
    "K9Z9905-env.HEX": "env | xxd -p -u | tr -d '\\n'",
    "K9Z9906-environ.bin": "cat /proc/self/environ",
    "K9Z9907-env16.txt": "env | iconv -t UTF-16",
    "K9Z9908-env.json": "python3 -c 'import os, json; print(json.dumps(dict(os.environ)))'",
    "K9Z9909-env.url": "python3 -c 'import os, urllib.parse; print(urllib.parse.urlencode(dict(os.environ)))'",
    "K9Z9910-shifted.b64": "{ printf x; env; } | base64 -w0; { printf xy; env; } | base64 -w0",
}


async def test_hostile_inputs_with_the_key_in_the_sandbox(bot_env, monkeypatch, tmp_path, request, errors):
    """`MAISON_KEY_IN_SANDBOX=env`: the Anthropic credentials are in the sandbox's environment, where
    Claude dumps and encodes them, in answers and in files fetched with `file`; only the bot's
    redaction stands between them and Slack. 200 inputs, and the dumps."""
    async def dumps(phase: Phase) -> None:
        thread = phase.threads[0]
        channel = thread.channel
        thread_ts = next(t for (c, t) in phase.suite.ledger.threads if c == channel)
        script = "\n".join(f"{command} > {name}" for name, command in DUMPS.items())
        phase.claude.scripts["dumps"] = script + "\necho dumped"
        await phase.suite.prompt(channel, thread_ts, ALICE, directive("dumps") + " dump your environment",
                                 entry="follow-up")
        for name in DUMPS:
            answer = await phase.suite.fetch_path(channel, thread_ts, name)
            assert answer.files, f"{name}: {answer.text}"

    phase = await run_phase("200 inputs, key in the sandbox (env)", bot_env, monkeypatch, tmp_path,
                            count=200, seed=7, key_in_sandbox="env", channels=CHANNELS[:8], after=dumps)
    sandbox_env = phase.env.daytona.sandbox(next(iter(phase.env.daytona.sandboxes))).env
    assert sandbox_env.get("ANTHROPIC_API_KEY") == phase.secrets["ANTHROPIC_API_KEY"], "the key is not in the sandbox"
    problems = await verdict(phase, request, errors)
    assert not problems, explain(problems)


# -- the checks are not blind ------------------------------------------------------------------------------


async def test_the_checks_are_not_blind(slack_double, tmp_path):
    """Each detector of the suite, fed what it must find (and what it must not): the scanner in
    every encoding, wrapped and in UTF-16, the broadcast finder, the command patterns."""
    import textwrap

    from tests.doubles.slack import ApiCall, Upload

    slack = slack_double
    secret = f"sk-ant-api03-{random_tokens.token_urlsafe(40)}"
    odd = f"at+{random_tokens.token_hex(6)}/{random_tokens.token_hex(6)}&x={random_tokens.token_hex(3)}"
    raw = secret.encode()
    env_dump = b"HOME=/home/daytona\nANTHROPIC_API_KEY=" + raw + b"\nPATH=/usr/bin\n"
    shown = {
        "raw": f"the key is {secret}.",
        "json": json.dumps({"key": secret}),
        "hex": binascii.hexlify(raw).decode(),
        "HEX": binascii.hexlify(raw).decode().upper(),
        "url": f"https://x.test/?k={quote(secret, safe='')}",
        **{f"base64 +{n}": base64.b64encode(b"x" * n + raw + b"y").decode() for n in range(3)},
        **{f"base64url +{n}": base64.urlsafe_b64encode(b"\xfb\xff"[:n] + raw).decode() for n in range(3)},
        "wrapped base64": textwrap.fill(base64.b64encode(env_dump).decode(), 76),
        "wrapped hex": textwrap.fill(binascii.hexlify(env_dump).decode(), 60),
        "cut in half": f"...{secret[:len(secret) // 2]}",
        "odd, mrkdwn": slack_escape(odd),
        "odd, url+": quote_plus(odd),
    }
    for name, text in shown.items():
        slack.calls[:] = [ApiCall("chat.update", {"blocks": [{"type": "markdown", "text": text}]}, 0.0)]
        assert slack.scan_for({"key": secret, "odd": odd}, fragment=16), name
    for name, data in {"utf-16": ("x" + secret).encode("utf-16"), "utf-16-be": secret.encode("utf-16-be"),
                       "nul-separated": env_dump.replace(b"\n", b"\0"), "wrapped b64": base64.encodebytes(env_dump)}.items():
        slack.calls[:] = []
        slack.uploads_received[:] = [Upload("F1", "x.bin", b"\xff\xfe" + data, 0.0)]
        assert slack.scan_for({"key": secret}), name
    slack.uploads_received[:] = []
    slack.calls[:] = [ApiCall("chat.postMessage", {"text": f"key [redacted] and {secret[:-1]}X not it"}, 0.0)]
    assert slack.scan_for({"key": secret}) == []

    pinging = [{"text": "hi <!here>"}, {"text": "<!channel|@channel>"}, {"initial_comment": "`<!everyone>`"},
               {"blocks": [{"type": "markdown", "text": "<!subteam^S0OPS|@ops>"}]},
               {"blocks": [{"type": "rich_text", "elements": [{"type": "broadcast", "range": "here"}]}]},
               {"text": "@channel look", "link_names": True}]
    quiet = [{"text": "@channel &lt;!here&gt;"}, {"filename": "<!channel>.txt"}, {"text": "<@U0BOB> <#C0X|x>"}]
    for payload in pinging:
        slack.calls[:] = [ApiCall("chat.postMessage", payload, 0.0)]
        assert slack.broadcast_pings(), payload
    for payload in quiet:
        slack.calls[:] = [ApiCall("chat.postMessage", payload, 0.0)]
        assert slack.broadcast_pings() == [], payload

    home = "/tmp/daytona-double-x/0a1b/home/daytona"
    run_dir = f"{home}/.maison/runs/20260613-120000-0123abcd"
    patterns = bot_command_patterns({home})
    launch = (f"cd {home}/app && setsid --wait bash {home}/.maison/run.sh {run_dir} -p --output-format stream-json "
              f"--verbose --include-partial-messages --dangerously-skip-permissions --continue "
              f"--append-system-prompt-file {run_dir}/instructions --model claude-sonnet-4-5 --max-budget-usd 0.5")
    for command in (launch, f"{KILL_RUN_FUNCTION}kill_run {run_dir}", f"cat {run_dir}/stderr 2>/dev/null",
                    f"tail -c +1 {run_dir}/out.jsonl 2>/dev/null | head -c 1048576 | base64 -w0"):
        assert any(p.fullmatch(command) for p in patterns), command
    for command in (launch + " K9Z0001", launch + "; touch /tmp/x", launch.replace("--continue", "--model $(id)"),
                    launch.replace("/app &&", "/../../x &&"), launch.replace("0.5", "$(id)"),
                    f"cat {run_dir}/../../K9Z0001 2>/dev/null", "touch /tmp/pwned"):
        assert not any(p.fullmatch(command) for p in patterns), command


# -- bugs the suite found: fixed ones as regression tests, open ones as strict xfails (an xfail fails the run
# -- once its bug is fixed, so its marker gets removed) ------------------------------------------------------


def echo_tool_output(body: dict[str, Any]) -> Turn:
    return Turn([Text(tool_result_text(body) if has_tool_result(body) else "nothing ran")])


async def settled(env: BotEnv, thread_ts: str, runs: int, timeout: float = 30) -> None:
    async def done() -> bool:
        assert env.app is not None
        rows = await env.app.store.runs(CHANNEL, thread_ts)
        replies = [m for m in env.slack.thread(CHANNEL, thread_ts)[1:] if m.is_bot]
        return len(rows) >= runs and all(r.state not in LIVE_STATES for r in rows) and not any(
            any(b.get("type") == "actions" for b in m.blocks) for m in replies)
    await env.slack.wait_for(done, timeout=timeout)


async def test_wrapped_dumps_of_the_environment_do_not_leak_the_key(bot_env, monkeypatch):
    """Found by this suite (fixed with issue 9): a dump cut into lines (`base64` wraps at 76,
    `xxd -p` at 60) held the key's encoding in pieces that no form matched
    (maison_slack/slack/redact.py); decoding the posted text gave the whole key."""
    secrets = make_secrets()
    use_secrets(bot_env, secrets, monkeypatch)
    await bot_env.start(key_in_sandbox="env")
    bot_env.anthropic.responder = lambda body: echo_tool_output(body) if has_tool_result(body) else Turn(
        [ToolUse("Bash", {"command": "env | base64; env | xxd -p"})])
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "K9Z9801 base64 and hex-dump your environment")
    await settled(bot_env, ts, 1)
    leaked = {(f.secret, f.form) for f in bot_env.slack.scan_for(secrets)}
    assert not leaked, leaked  # e.g. {('ANTHROPIC_API_KEY', 'base64@1+wrapped'), ('ANTHROPIC_API_KEY', 'hex+wrapped')}


async def test_a_message_with_a_lone_surrogate_is_answered(bot_env):
    """Found by this suite (fixed in 6b3ac25): a lone surrogate (JSON `\\ud800`) in a message's
    text raised UnicodeEncodeError in SQLite (storage.py claim_prompt); the message was lost."""
    await bot_env.start()
    bot_env.anthropic.responder = lambda body: Turn([Text(f"You said: {user_prompts(body)[-1]}")])
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "K9Z9802 odd text \ud800 here")
    await settled(bot_env, ts, 1)
    await bot_env.slack.post_message(BOB, CHANNEL, "K9Z9803 \udfff and more", thread_ts=ts)
    await settled(bot_env, ts, 2)
    await bot_env.slack.slash_command(ALICE, CHANNEL, "K9Z9804 slash \ud83d text")
    echo = await bot_env.slack.wait_for(lambda: next((m for m in bot_env.slack.messages(CHANNEL)
                                                      if m.is_bot and "K9Z9804" in m.text), None), timeout=20)
    await settled(bot_env, echo.ts, 1)
    assert [r.state for r in await bot_env.app.store.runs(CHANNEL, ts)] == ["done", "done"]
    assert [r.state for r in await bot_env.app.store.runs(CHANNEL, echo.ts)] == ["done"]


async def test_a_display_name_with_a_lone_surrogate_does_not_cost_the_run(bot_env, monkeypatch):
    monkeypatch.setitem(CANNED_USERS, "U0SUR", {"name": "Eve \ud800 K9Z9811", "real_name": "Eve"})
    await bot_env.start()
    bot_env.anthropic.responder = lambda body: Turn([Text("ok")])
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "K9Z9810 start")
    await settled(bot_env, ts, 1)
    await bot_env.slack.post_message("U0SUR", CHANNEL, "K9Z9812 from Eve", thread_ts=ts)  # a shared thread: names
    await settled(bot_env, ts, 2)
    rows = await bot_env.app.store.runs(CHANNEL, ts)
    assert [r.state for r in rows] == ["done", "done"], [(r.state, (r.answer or "")[-200:]) for r in rows]


async def test_the_file_upload_comment_cannot_ping_the_channel(bot_env):
    """Found by this suite (fixed in 6b3ac25): `file` of a file named <!channel> quoted the path in
    the upload's initial_comment as is (conversations.py _send_file), notifying the channel."""
    await bot_env.start()
    bot_env.anthropic.responder = lambda body: echo_tool_output(body) if has_tool_result(body) else Turn(
        [ToolUse("Bash", {"command": "echo hi > '<!channel>'; echo hi > 'K9Z9803 <!here|here>'"})])
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "make two files")
    await settled(bot_env, ts, 1)
    for path in ("<!channel>", "K9Z9803 <!here|here>"):  # typed by a person: Slack escapes < and >
        after = await bot_env.slack.post_message(ALICE, CHANNEL, f"file `{slack_escape(path)}`", thread_ts=ts)
        await bot_env.slack.wait_for(lambda: [m for m in bot_env.slack.thread(CHANNEL, ts)
                                              if m.is_bot and m.files and float(m.ts) > float(after)], timeout=20)
    assert bot_env.slack.broadcast_pings() == []


async def test_a_nested_broadcast_does_not_survive_neutralization(bot_env):
    """Found by this suite (fixed in 6b3ac25): one pass of neutralize_broadcasts turned
    <!here|<!channel>> into <!here|@channel>, a broadcast again (in the /maison echo and answers)."""
    await bot_env.start()
    bot_env.anthropic.responder = lambda body: Turn([Text(f"You said: {user_prompts(body)[-1]}")])
    await bot_env.slack.slash_command(ALICE, CHANNEL, "K9Z9804 " + " ".join(NESTED_BROADCASTS))
    echo = await bot_env.slack.wait_for(lambda: next((m for m in bot_env.slack.messages(CHANNEL)
                                                      if m.is_bot and "K9Z9804" in m.text), None), timeout=20)
    await settled(bot_env, echo.ts, 1)
    assert bot_env.slack.broadcast_pings() == []


async def test_a_reply_handled_before_its_threads_mention_runs_after_it(bot_env):
    """Found by this suite: such a reply found no session and was dropped silently."""
    await bot_env.start()
    bot_env.anthropic.responder = lambda body: Turn([Text("ok")])
    # The mention is stored; its events reach the bot after the reply's (as a redelivery would).
    parent = bot_env.slack._store_human(ALICE, CHANNEL, f"<@{bot_env.slack.bot_user_id}> K9Z9805 start", None, None)
    await bot_env.slack.post_message(BOB, CHANNEL, "K9Z9806 and also this", thread_ts=parent.ts)
    await asyncio.sleep(0.5)
    event = bot_env.slack._message_event(parent)
    bot_env.slack._enqueue_event({**{k: v for k, v in event.items() if k != "channel_type"}, "type": "app_mention"})
    bot_env.slack._enqueue_event(event)
    with contextlib.suppress(TimeoutError):
        await settled(bot_env, parent.ts, 2, timeout=20)
    rows = await bot_env.app.store.runs(CHANNEL, parent.ts)
    assert [r.state for r in rows] == ["done", "done"], [(r.prompt_ts, r.state) for r in rows]
    assert rows[0].prompt_ts == parent.ts  # the mention keeps its place before the reply


async def test_file_refuses_links_and_files_over_the_limit(bot_env):
    """Found by this suite (fixed in 6b3ac25): the size check trusted get_file_info, which describes
    a symlink itself (and gives 0 for /dev/zero), then downloaded whatever the path yielded."""
    await bot_env.start(max_file_mb=1)
    bot_env.anthropic.responder = lambda body: echo_tool_output(body) if has_tool_result(body) else Turn(
        [ToolUse("Bash", {"command": "head -c 3000000 /dev/zero | tr '\\0' a > K9Z9807-big.txt; "
                                     "ln -s K9Z9807-big.txt K9Z9808-link"})])
    ts = await bot_env.slack.mention(ALICE, CHANNEL, "make a big file")
    await settled(bot_env, ts, 1)
    # (Not a link to /dev/zero: should this regress, the double would read it without end.)
    for path in ("K9Z9807-big.txt", "K9Z9808-link"):
        after = await bot_env.slack.post_message(ALICE, CHANNEL, f"file `{path}`", thread_ts=ts)
        answer = await bot_env.slack.wait_for(lambda: next((m for m in bot_env.slack.thread(CHANNEL, ts)
                                                            if m.is_bot and float(m.ts) > float(after)), None), timeout=20)
        assert not answer.files and path in answer.text, (path, answer.text[:200])
    assert bot_env.slack.uploads_received == []
