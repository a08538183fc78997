#!/usr/bin/env python
"""First-reply benchmark: how soon a new thread (or a woken one) shows Claude's answer, for four
kinds of sandbox and for a thread with a repository, side by side in one run.

    python bench/first_reply_bench.py               # every kind, 3 times each; writes FIRST_REPLY_RESULTS.md
    python bench/first_reply_bench.py --quick       # smoke run: 1 time each, shorter install and restore
    python bench/first_reply_bench.py --kinds warm  # some kinds only (comma-separated)
    python bench/first_reply_bench.py --mode native # the reply streamed (MAISON_STREAMING), not edited

The kinds of sandbox the first answer waits for:

* `cold`: a new sandbox from a snapshot without Claude Code (`MAISON_SNAPSHOT` names it), so the
  bot installs it (`maison_slack.core.maison.INSTALL_SCRIPT`). The snapshot's PATH has a fake
  `npm` that, like `tests/test_snapshot.py`'s `fake_claude_dir`, puts the real CLI under the
  `--prefix` it is given, after `--install-seconds` (a download's time).
* `pinned`: a new sandbox from the snapshot `maison-slack snapshot` builds
  (`maison_slack.core.snapshots.PINNED_SNAPSHOT`), built in the Daytona double first by running
  `python -m maison_slack snapshot` with the doubles' settings, as a user would; the bot then
  chooses it by itself.
* `warm`: `MAISON_WARM_POOL=2`; the benchmark waits until `/maison status` says the pool is
  full, then mentions the bot (and waits for the pool to refill before the next time). The
  members come from the pinned snapshot, registered in the double directly.
* `repo`: `warm` again, each mention starting with `--repo <url>`: the bot clones the repository
  through Daytona's git toolbox before Claude starts (`maison_slack.core.git.clone`), where
  `warm` makes the work dir a repository (`git init`). The repository (`REPO_FILES` files of
  code-like text, ≈`REPO_BYTES` bytes, `REPO_COMMITS` commits, the same every run) is served by
  a loopback git host started by the benchmark (`tests/doubles/git_host.GitHost`), which the
  sandboxes reach by name through their egress proxy. A warm pool member rather than a new
  sandbox, so that the sandbox costs next to nothing and the difference to `warm` is the
  repository's alone, whatever sandbox creation is assumed to take.
* `archived`: a thread answered once, whose sandbox the bot stopped when idle
  (`MAISON_IDLE_TIMEOUT`, `MAISON_REAP_INTERVAL` small), then archived through the daytona SDK
  (what Daytona does to a stopped sandbox), then a follow-up in that thread, which wakes it.

For each kind the benchmark starts, in this process, fresh Slack, Daytona and Anthropic doubles
of `tests/doubles/` and a fresh bot as a subprocess (`python -m maison_slack`, configured like
`tests/bot_harness.BotEnv.env()`, through `load_bench`'s helpers), then sends `--repeat` prompts,
one after the other; each waits until the previous reply is final (`cold`: staggered by
`--stagger` seconds, see below). Sandboxes run the real Claude Code CLI against the Anthropic
double, which answers each prompt (`LOADBENCH-7`) with a short text streamed as `text_delta`s,
one word (`t007w0001`) every 150 ms, as in `load_bench.py`.

Latencies of the Daytona double (its knobs, `tests/doubles/daytona.py`): a new sandbox spends
`--create-delay` in `creating` and `--start-delay` in `starting`; an archived sandbox's start
takes `--restore-delay` (the double has one `start_delay` for every transition, so the benchmark
sets it to the restore figure while a follow-up wakes its sandbox, and back once it is started).
../shared/reference/daytona.md gives no production figure for creation or start (§6.3 measures
only the double) and, for restoring an archived sandbox, only a field report of 10–40 min for
≈10 GB ones (§20.2); ../shared/reference/claude-code.md §1 gives none for `npm install` of the
CLI (a ≈32 KB wrapper plus a ≈400 MB native package). So the defaults are assumptions, said as
such in the results.

Figures, per kind, p50 / max over the repeats (all from what the doubles recorded, on one
monotonic clock):

* mention → Claude's request: the bot's work before Claude runs (sandbox, install, CLI start-up);
* mention → Claude's first token: when the Anthropic double sent the answer's first `text_delta`;
* mention → first visible text: the first moment the thread's author sees the answer's first
  word (`load_bench.measure_thread`: the Slack double's messages, their `versions` and
  `visible_to`);
* overhead = first visible text − Claude's first token (the bot's streaming path);
* ratios of the p50s to `cold`;
* `repo` against `warm` (ratio and difference of the p50s), and each clone's own duration: the
  `git clone` the Daytona double's git toolbox ran in the thread's sandbox (`time_clones`).

The issue's goal: with the warm pool, the first visible text comes no later than 1 s after
Claude's own first token, checked on every warm repeat. The double answers at once by default
(`--ttft 0`: the first `text_delta` 0.45 s after the request); a real model takes longer, and
when the first token falls relative to the reply's previous edit decides how long an edited
reply holds it back, so the warm kind runs again with the answer starting later
(`--ttft-sweep`, default 1 s), and the goal is checked on those runs too. Each run also says how
long before its first visible text the thread last changed (*previous change → first visible*).

`cold` repeats are staggered (`--stagger`, default 5 s) rather than run one after the other: the
install wait is a sleep in the sandbox, costing no CPU, so three sequential cold runs would spend
a minute doing nothing. The stagger keeps the parts that use CPU apart (the CLI's start and
answer take about 3 s); the results say whether any two cold runs' Claude requests came closer
than that.

Results go to stdout and (except with `--quick`) to `bench/FIRST_REPLY_RESULTS.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from load_bench import (
    BOLT_TOKEN_WARNING,
    FOOTER,
    WARNING,
    BotProcess,
    Responder,
    ThreadResult,
    Workload,
    bot_env,
    check_clocks,
    emitted_by_thread,
    machine,
    measure_thread,
    source_revision,
    thread_views,
    wait_connected,
)
from stream_bench import clean_env, percentile

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "bench" / "FIRST_REPLY_RESULTS.md"

KINDS = ("cold", "pinned", "warm", "repo", "archived")
BASELINE = "cold"
POOLED = ("warm", "repo")  # the kinds whose threads take a warm pool member
REPO_BASELINE = "warm"  # `repo` without a repository: what its ratio is to
MODES = ("edits", "native", "auto")
CHANNEL = "C0FIRST"  # one channel thread per prompt; they never run at once (cold: staggered)
COLD_SNAPSHOT = "maison-bench-no-claude"
WARM_POOL = 2
IDLE_TIMEOUT = 2.0  # MAISON_IDLE_TIMEOUT of the `archived` kind (seconds; the bot's minimum is 1)
REAP_INTERVAL = 0.5  # MAISON_REAP_INTERVAL of the `archived` kind
GOAL = 1.0  # seconds: warm pool, first visible text − Claude's first token
CHUNK_INTERVAL = 0.15  # seconds between the Anthropic double's SSE frames (one word each)
STOP_NOTICE = "was stopped after"  # the bot's notice when it stops an idle thread's sandbox
WAKING = "Waking up the sandbox"  # the status a woken thread's reply shows first
CREATING = "Creating a sandbox"  # the status of a reply whose thread gets a new sandbox
CLONING = "Cloning"  # the status of a reply whose thread's repository is being cloned
REPO_NAME = "bench/app"  # owner/repo on the benchmark's git host
REPO_FILES = 300
REPO_BYTES = 3_000_000  # the checkout's size, about: files of 2–20 KB
REPO_COMMITS = 40  # the first with every file, then each changing a few lines of a few files
REPO_SEED = 9  # the same repository, contents and commit ids, every run


# ============================================================================ one measured prompt


@dataclass
class Sample:
    """One prompt of one kind: the thread as `load_bench` measures it, and where it ran."""

    kind: str
    repeat: int
    thread: ThreadResult
    prompt_ts: str  # the message answered (a new thread's ts, or the follow-up's)
    sandbox: str = ""  # id of the sandbox that answered
    snapshot: str = ""  # the snapshot it was made from
    pooled: bool = False  # taken from the warm pool (it was a ready member at the mention)
    woken: bool = False  # the reply said it was waking the sandbox up
    said_creating: bool = False  # the reply said it was creating a sandbox
    said_cloning: bool = False  # the reply said it was cloning the repository
    clone: float | None = None  # `repo`: the `git clone` in its sandbox, seconds
    first_token: float | None = None  # mention -> Claude's first text_delta sent
    answered: float | None = None  # mention -> the reply's final state (footer or warning)
    paced: float | None = None  # the thread's previous visible change -> the first visible text
    note: str = ""  # what is not as the kind expects

    @property
    def overhead(self) -> float | None:
        """First visible text − Claude's first token."""
        t = self.thread
        return t.first_text - self.first_token if t.first_text is not None and self.first_token is not None else None

    @property
    def problem(self) -> str:
        return "; ".join(filter(None, [self.thread.failure, self.note]))


@dataclass
class KindResult:
    kind: str
    ttft: float = 0.0  # the model's time to first token in this run (`--ttft`)
    samples: list[Sample] = field(default_factory=list)
    seconds: float = 0.0  # wall time of the kind, doubles and bot start included
    setup: str = ""  # what was done before the measured prompts, and how long it took
    repo: ServedRepo | None = None  # `repo`: the repository its mentions name
    bot_log: Counter[str] = field(default_factory=Counter)
    error: str | None = None  # the kind could not be measured at all

    def values(self, name: str) -> list[float]:
        found = [getattr(s, name) if hasattr(s, name) else getattr(s.thread, name) for s in self.samples]
        return [v for v in found if v is not None]

    @property
    def ok(self) -> int:
        return sum(not s.problem for s in self.samples)


# ============================================================================ the doubles, per kind


class ModelResponder(Responder):
    """`load_bench`'s responder, with the model's time to first token: the answer's stream
    starts `ttft` seconds after the request (the double sends its frames `CHUNK_INTERVAL` apart)."""

    def __init__(self, workload: Workload, ttft: float) -> None:
        super().__init__(workload)
        self.ttft = ttft

    async def __call__(self, body: dict[str, Any]) -> Any:  # type: ignore[override]
        turn = super().__call__(body)  # records the request's time
        if self.ttft:
            await asyncio.sleep(self.ttft)
        return turn


def fake_npm_dir(workdir: Path, claude_bin: Path, seconds: float) -> Path:
    """A snapshot's tools without `claude`: an `npm` whose `install` takes `seconds`, then puts
    the real (pinned) CLI under the prefix it is given, as npm would after a download."""
    tools = workdir / "no-claude-tools"
    tools.mkdir()
    npm = tools / "npm"
    npm.write_text(
        "#!/bin/sh\n# npm install -g --prefix DIR ... @anthropic-ai/claude-code@VERSION, after a download's time\n"
        'prefix=""; for arg in "$@"; do [ "$previous" = --prefix ] && prefix="$arg"; previous="$arg"; done\n'
        f"sleep {seconds:g}\n"
        f'mkdir -p "$prefix/bin" && ln -sf "{claude_bin / "claude"}" "$prefix/bin/claude" && echo "added 2 packages"\n')
    npm.chmod(0o755)
    return tools


@contextlib.asynccontextmanager
async def kind_doubles(kind: str, args: argparse.Namespace, claude_bin: Path, responder: Responder,
                       workdir: Path) -> AsyncIterator[tuple[Any, Any, Any]]:
    """Fresh doubles for one kind; stopping Daytona's kills every sandbox process."""
    from maison_slack.core.snapshots import PINNED_SNAPSHOT
    from tests.doubles.anthropic import AnthropicDouble
    from tests.doubles.daytona import DaytonaDouble, SnapshotSpec
    from tests.doubles.slack import SlackDouble

    # The first snapshot's PATH is also what a snapshot built through the API gets (the double
    # does not run the Dockerfile): there the real `claude` lives.
    snapshots = {"daytona-small": SnapshotSpec(path=[str(claude_bin)])}
    if kind == "cold":
        snapshots[COLD_SNAPSHOT] = SnapshotSpec(path=[str(fake_npm_dir(workdir, claude_bin, args.install_seconds))])
    elif kind in (*POOLED, "archived"):  # what `maison-slack snapshot` leaves, registered directly
        snapshots[PINNED_SNAPSHOT] = SnapshotSpec(path=[str(claude_bin)])
    async with SlackDouble() as slack, \
            DaytonaDouble(snapshots=snapshots, create_delay=args.create_delay, start_delay=args.start_delay,
                          build_seconds=args.build_seconds) as daytona, \
            AnthropicDouble(responder=responder) as anthropic:
        yield slack, daytona, anthropic


def kind_env(kind: str, args: argparse.Namespace, base: dict[str, str]) -> dict[str, str]:
    """The bot's environment for a kind: the doubles (`BotEnv.env()`) plus the kind's settings."""
    env = {**base, "PYTHONPATH": str(REPO), "MAISON_STREAMING": args.mode}
    if args.edit_interval is None:
        env.pop("MAISON_EDIT_INTERVAL", None)  # the bot's own default, as deployed
    else:
        env["MAISON_EDIT_INTERVAL"] = f"{args.edit_interval:g}"
    if kind == "cold":
        env["MAISON_SNAPSHOT"] = COLD_SNAPSHOT
    elif kind in POOLED:
        env["MAISON_WARM_POOL"] = str(WARM_POOL)
    elif kind == "archived":
        env["MAISON_IDLE_TIMEOUT"] = f"{IDLE_TIMEOUT:g}"
        env["MAISON_REAP_INTERVAL"] = f"{REAP_INTERVAL:g}"
    return env


async def build_pinned_snapshot(env: dict[str, str]) -> str:
    """`python -m maison_slack snapshot`, as a user runs it, against the doubles; its last line."""
    started = time.monotonic()
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "maison_slack", "snapshot", cwd=str(REPO), env=env,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        out, _ = await asyncio.wait_for(process.communicate(), 120)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = out.decode(errors="replace").strip()
    if process.returncode != 0 or "is active" not in text:
        raise RuntimeError(f"`maison-slack snapshot` failed (exit {process.returncode}):\n{text[-1500:]}")
    return f"`maison-slack snapshot` built it in {time.monotonic() - started:.1f} s"


# ============================================================================ the repository (`repo`)


@dataclass
class ServedRepo:
    """The repository every `repo` mention names, and how long each sandbox's clone of it took."""

    url: str
    files: int
    size: int  # bytes checked out
    commits: int
    pack: int  # bytes of the host's packed repository: about what a clone transfers
    clones: dict[str, float] = field(default_factory=dict)  # sandbox id -> seconds of its `git clone`

    def describe(self) -> str:
        return (f"`{REPO_NAME}` ({self.files} files, {self.size / 1e6:.1f} MB checked out, {self.commits} commits, "
                f"a {self.pack / 1e6:.1f} MB pack)")


#: What the repository's files are made of: identifiers and keywords, so that they compress and
#: delta like code rather than like random bytes.
WORDS = ("def", "return", "self", "if", "else", "for", "in", "not", "None", "await", "async", "import", "from",
         "class", "value", "result", "items", "config", "request", "response", "user", "thread", "sandbox",
         "count", "name", "path", "error", "=", "==", "+", "(", ")", ":", "[", "]", "0", "1", "True", "False")
PACKAGES = ("api", "core", "storage", "web", "jobs", "cli", "tests")


def code_text(rng: random.Random, size: int) -> str:
    """About `size` bytes of indented lines of `WORDS`, drawn from `rng`."""
    lines, total = [], 0
    while total < size:
        line = "    " * rng.randrange(4) + " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        lines.append(line)
        total += len(line) + 1
    return "\n".join(lines) + "\n"


def repo_history() -> list[dict[str, str]]:
    """The repository's commits, oldest first, as the files each writes: the first writes all
    `REPO_FILES` (sizes spread over 2–20 KB, ≈`REPO_BYTES` in all), each later one rewrites a few
    lines in one to six of them, as a project's history does. Seeded: the same every run."""
    rng = random.Random(REPO_SEED)
    weights = [rng.uniform(1, 10) for _ in range(REPO_FILES)]
    sizes = [round(REPO_BYTES * w / sum(weights)) for w in weights]
    files = {f"src/{PACKAGES[i % len(PACKAGES)]}/module_{i:03d}.py": code_text(rng, size)
             for i, size in enumerate(sizes)}
    commits = [dict(files)]
    for _ in range(REPO_COMMITS - 1):
        changed = {}
        for path in rng.sample(sorted(files), rng.randint(1, 6)):
            lines = files[path].splitlines()
            at = rng.randrange(len(lines))
            lines[at:at + rng.randint(0, 8)] = code_text(rng, 300).splitlines()
            changed[path] = files[path] = "\n".join(lines) + "\n"
        commits.append(changed)
    return commits


@contextlib.asynccontextmanager
async def served_repo(workdir: Path, daytona: Any) -> AsyncIterator[ServedRepo]:
    """A loopback git host serving the repository, mapped in the sandboxes' DNS, packed as a
    hosting service keeps it; every clone the Daytona double runs is timed into its record."""
    from tests.doubles.git_host import GIT, GitHost

    commits = repo_history()
    async with GitHost(workdir / "git-host") as host:
        daytona.hosts[host.hostname] = host.ip
        bare = host.create_repo(REPO_NAME, commits[0])
        for number, files in enumerate(commits[1:], 2):
            host.commit(REPO_NAME, "main", files, f"Change {number}")
        subprocess.run([GIT, "--git-dir", str(bare), "repack", "-a", "-d", "-q"], check=True, timeout=120)
        latest = {path: text for commit in commits for path, text in commit.items()}  # as checked out
        size = sum(len(text.encode()) for text in latest.values())
        repo = ServedRepo(host.url(REPO_NAME), len(latest), size, len(commits),
                          sum(f.stat().st_size for f in (bare / "objects" / "pack").glob("*.pack")))
        time_clones(daytona, repo.clones)
        yield repo


def time_clones(daytona: Any, clones: dict[str, float]) -> None:
    """Record in `clones` how long each sandbox's `git clone` ran (sandbox id -> seconds): the
    clone alone (the pack fetched through the sandbox's egress proxy, the files checked out),
    without the toolbox request around it or the bot's other steps (choosing the directory,
    making the thread's branch). The double keeps no timings and the bot is not instrumented, so
    the double's git runner is wrapped: its handlers look it up on each call."""
    run = daytona._git

    async def timed(request: Any, sandbox: Any, args: list[str], **options: Any) -> str:
        started = time.monotonic()
        output = await run(request, sandbox, args, **options)
        if options.get("op") == "git clone":
            clones[sandbox.id] = time.monotonic() - started
        return output

    daytona._git = timed


# ============================================================================ talking to the bot


def reply_state(slack: Any, thread: ThreadResult, prompt_ts: str) -> tuple[str, bool, list[Any]]:
    """The bot's replies in the thread after `prompt_ts`, as the author sees them now: (text,
    whether one still runs: a Stop button or a stream not stopped, the messages). Other buttons
    (the idle warning's Keep) are not a run."""
    from maison_slack.slack.reply import STOP_ACTION

    replies = [m for m in slack.thread(thread.channel, thread.ts) if m.is_bot and float(m.ts) > float(prompt_ts)]
    text = "\n".join(str(slack.visible_to(m, thread.user)) for m in replies)
    running = any(e.get("action_id") == STOP_ACTION for m in replies for b in m.blocks for e in b.get("elements", [])) \
        or any(getattr(m, "stream", None) is not None and m.stream.streaming for m in replies)
    return text, running, replies


async def until(what: str, check: Callable[[], Any], bot: BotProcess, timeout: float) -> Any:
    """Poll `check` until it is truthy; fail with `what` on a timeout or if the bot exits."""
    deadline = time.monotonic() + timeout
    while bot.alive:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not after {timeout:g} s; the bot's log ends with:\n{bot.log_tail(12)}")
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{what}: the bot exited (code {bot.proc.returncode}); its log ends with:\n{bot.log_tail()}")


async def ask(slack: Any, workload: Workload, index: int, thread_ts: str | None = None,
              text: str | None = None) -> tuple[ThreadResult, str]:
    """Thread `index`'s person writes to the bot: a mention starting a thread, or a follow-up in
    `thread_ts`. Returns the thread (timed from now) and the message's ts."""
    user, prompt = workload.user(index), text or workload.prompt(index)
    mentioned = time.monotonic()
    if thread_ts is None:
        ts = thread = await slack.mention(user, CHANNEL, prompt)
    else:
        ts, thread = await slack.post_message(user, CHANNEL, prompt, thread_ts=thread_ts), thread_ts
    return ThreadResult(index, CHANNEL, thread, user, False, mentioned), ts


async def answered(slack: Any, bot: BotProcess, thread: ThreadResult, prompt_ts: str, timeout: float) -> float:
    """Wait for the reply to `prompt_ts` to be final; seconds since the prompt."""
    def final() -> bool:
        text, running, _ = reply_state(slack, thread, prompt_ts)
        return not running and (FOOTER in text or WARNING in text)

    await until(f"the reply to thread {thread.index}", final, bot, timeout)
    return time.monotonic() - thread.mentioned


def sandbox_of(daytona: Any, thread: ThreadResult) -> Any:
    """The double's record of the thread's sandbox (the bot labels it with its thread)."""
    from maison_slack.slack.sandboxes import THREAD_LABEL, thread_label

    label = thread_label(thread.channel, thread.ts)
    return next((sb for sb in daytona.sandboxes.values() if sb.labels.get(THREAD_LABEL) == label), None)


def pool_members(daytona: Any) -> set[str]:
    from maison_slack.slack.pool import POOL_LABEL

    return {sb.id for sb in daytona.sandboxes.values() if sb.labels.get(POOL_LABEL) and sb.state == "started"}


async def pool_full(slack: Any, daytona: Any, bot: BotProcess, timeout: float = 60) -> None:
    """The warm pool is full as the bot says it (`/maison status`), not only as Daytona sees it:
    a member is ready once the bot has checked its Claude Code."""
    await until("a full warm pool in Daytona", lambda: len(pool_members(daytona)) >= WARM_POOL, bot, timeout)
    want = f"Warm pool: {WARM_POOL} of {WARM_POOL}"
    deadline = time.monotonic() + timeout
    said = ""
    while time.monotonic() < deadline:
        seen = len(slack.ephemerals(CHANNEL, "U0ADMIN"))
        await slack.slash_command("U0ADMIN", CHANNEL, "status")
        status = await until("the status", lambda: [e for e in slack.ephemerals(CHANNEL, "U0ADMIN")[seen:]
                                                     if "Maison status" in slack.visible_text(e)], bot, 10)
        said = slack.visible_text(status[-1])
        if want in said:
            return
        await asyncio.sleep(0.5)
    raise RuntimeError(f"the bot never said {want!r}; it said {said!r}")


# ============================================================================ the kinds


Driver = Callable[[Any, Any, BotProcess, Workload, list[int], argparse.Namespace, KindResult],
                  Awaitable[list[Sample]]]


async def one_at_a_time(slack: Any, daytona: Any, bot: BotProcess, workload: Workload, indices: list[int],
                        args: argparse.Namespace, result: KindResult) -> list[Sample]:
    """`pinned` (and `warm` and `repo`, which wait for a full pool before each): a new thread
    each time; `repo`'s mentions name its repository (`--repo`)."""
    samples = []
    for repeat, index in enumerate(indices):
        ready: set[str] = set()
        if result.kind in POOLED:
            await pool_full(slack, daytona, bot)
            ready = pool_members(daytona)
        text = f"--repo {result.repo.url} {workload.prompt(index)}" if result.repo else None
        thread, ts = await ask(slack, workload, index, text=text)
        sample = Sample(result.kind, repeat, thread, ts)
        sample.answered = await answered(slack, bot, thread, ts, args.timeout)
        record_sandbox(sample, slack, daytona, ready)
        samples.append(sample)
    return samples


async def cold(slack: Any, daytona: Any, bot: BotProcess, workload: Workload, indices: list[int],
               args: argparse.Namespace, result: KindResult) -> list[Sample]:
    """New threads `--stagger` seconds apart: their sandboxes install Claude Code meanwhile."""
    samples = []
    for repeat, index in enumerate(indices):
        if repeat:
            await asyncio.sleep(args.stagger)
        thread, ts = await ask(slack, workload, index)
        samples.append(Sample(result.kind, repeat, thread, ts))

    async def finish(sample: Sample) -> None:
        sample.answered = await answered(slack, bot, sample.thread, sample.prompt_ts,
                                         args.timeout + args.install_seconds + args.stagger * len(indices))
        record_sandbox(sample, slack, daytona, set())

    await asyncio.gather(*(finish(s) for s in samples))
    return samples


async def archived(slack: Any, daytona: Any, bot: BotProcess, workload: Workload, indices: list[int],
                   args: argparse.Namespace, result: KindResult) -> list[Sample]:
    """Threads answered once, stopped by the bot when idle, archived through the SDK; then a
    follow-up in each, one at a time, wakes its sandbox."""
    from daytona import AsyncDaytona, DaytonaConfig

    started = time.monotonic()
    firsts = [await ask(slack, workload, index, text=f"FIRSTREPLY-SETUP-{index}: hello") for index in indices]
    for thread, ts in firsts:
        await answered(slack, bot, thread, ts, args.timeout)
    sandboxes = {thread.index: sandbox_of(daytona, thread).id for thread, _ in firsts}

    def stopped() -> bool:  # the sandbox stopped and the thread told (so the bot recorded it)
        return all(daytona.sandbox(sid).state == "stopped" for sid in sandboxes.values()) and all(
            STOP_NOTICE in reply_state(slack, thread, ts)[0] for thread, ts in firsts)

    await until("the idle sandboxes stopped by the bot", stopped, bot, IDLE_TIMEOUT + 30)
    async with AsyncDaytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.api_url)) as client:
        for sid in sandboxes.values():
            await (await client.get(sid)).archive()  # what Daytona does to a stopped sandbox
    await until("the sandboxes archived", lambda: all(daytona.sandbox(sid).state == "archived"
                                                      for sid in sandboxes.values()), bot, 30)
    result.setup = (f"{len(firsts)} thread(s) answered, stopped by the bot after {IDLE_TIMEOUT:g} s idle and "
                    f"archived in {time.monotonic() - started:.1f} s")

    samples = []
    for repeat, (first, _) in enumerate(firsts):
        sid = sandboxes[first.index]
        daytona.start_delay = args.restore_delay  # only this start is a restore from the archive
        try:
            thread, ts = await ask(slack, workload, first.index, thread_ts=first.ts)
            await until("the archived sandbox started", lambda: daytona.sandbox(sid).state == "started", bot,
                        args.timeout + args.restore_delay)
        finally:
            daytona.start_delay = args.start_delay
        sample = Sample(result.kind, repeat, thread, ts)
        sample.answered = await answered(slack, bot, thread, ts, args.timeout + args.restore_delay)
        record_sandbox(sample, slack, daytona, set())
        if sample.sandbox != sid:
            sample.note = f"answered in sandbox {sample.sandbox[:8]}, not the archived {sid[:8]}"
        samples.append(sample)
    return samples


DRIVERS: dict[str, Driver] = {"cold": cold, "pinned": one_at_a_time, "warm": one_at_a_time, "repo": one_at_a_time,
                              "archived": archived}


def record_sandbox(sample: Sample, slack: Any, daytona: Any, ready: set[str]) -> None:
    """Which sandbox answered, and whether it is what the kind means."""
    from maison_slack.core.snapshots import PINNED_SNAPSHOT

    record = sandbox_of(daytona, sample.thread)
    if record is None:
        sample.note = "no sandbox labelled with the thread"
        return
    sample.sandbox, sample.snapshot, sample.pooled = record.id, record.snapshot, record.id in ready
    _, _, replies = reply_state(slack, sample.thread, sample.prompt_ts)
    statuses = [s.status for s in slack.status_history(sample.thread.channel, sample.thread.ts)
                if s.time >= sample.thread.mentioned]  # the status line of a streamed reply
    shown = [text for m in replies for _, text in m.versions] + statuses
    sample.woken = any(WAKING in text for text in shown)
    sample.said_creating = any(CREATING in text for text in shown)
    sample.said_cloning = any(CLONING in text for text in shown)
    expected = {"cold": COLD_SNAPSHOT}.get(sample.kind, PINNED_SNAPSHOT)
    if record.snapshot != expected:
        sample.note = f"sandbox made from {record.snapshot}, not {expected}"
    elif sample.kind in POOLED and not sample.pooled:
        sample.note = "the thread did not get a warm pool member"
    elif sample.kind == "archived" and not sample.woken:
        sample.note = "the reply never said it was waking the sandbox up"


# ============================================================================ one kind


def measure(samples: list[Sample], workload: Workload, slack: Any, anthropic: Any, responder: Responder,
            repo: ServedRepo | None) -> None:
    """Fill in the figures of every sample from what the doubles recorded."""
    chunks = emitted_by_thread(list(anthropic.emitted))
    for sample in samples:
        if repo is not None:
            sample.clone = repo.clones.get(sample.sandbox)
            if sample.clone is None:
                sample.note = "; ".join(filter(None, [sample.note, "no `git clone` of the repository in its sandbox"]))
        index = sample.thread.index
        emitted = sorted(chunks.get(index, []))
        measure_thread(sample.thread, workload, slack, emitted, responder.requests.get(index, []))
        if emitted:
            sample.first_token = emitted[0] - sample.thread.mentioned
        if sample.thread.first_text is not None:  # what the author saw change last before it (edit, status)
            t = sample.thread
            shown = t.mentioned + t.first_text
            before = [v.time for v in thread_views(slack, t.channel, t.ts, t.user) if t.mentioned <= v.time < shown]
            sample.paced = shown - max(before) if before else None


async def run_kind(kind: str, args: argparse.Namespace, claude_bin: Path, workload: Workload,
                   indices: list[int]) -> KindResult:
    """Fresh doubles, bot and database; the kind's prompts; the figures."""
    result = KindResult(kind, args.ttft)
    started = time.monotonic()
    responder = ModelResponder(workload, args.ttft)
    workdir = Path(tempfile.mkdtemp(prefix="maison-first-reply-"))
    keep = False
    try:
        async with kind_doubles(kind, args, claude_bin, responder, workdir) as (slack, daytona, anthropic), \
                served_repo(workdir, daytona) if kind == "repo" else contextlib.nullcontext() as repo:
            if repo is not None:
                result.repo = repo
                result.setup = (f"repository {repo.describe()} made and served (doubles started) in "
                                f"{time.monotonic() - started:.1f} s")
            base = clean_env()
            base.update(bot_env(slack, daytona, anthropic, workdir / "maison.db"))
            env = kind_env(kind, args, base)
            if kind == "pinned":
                result.setup = await build_pinned_snapshot(env)
            bot = await BotProcess.start(env, REPO, workdir)
            try:
                await wait_connected(slack, bot, 60)
                await asyncio.sleep(1.0)  # let the bot finish starting (reaper, recovery, pool) before timing
                samples = await DRIVERS[kind](slack, daytona, bot, workload, indices, args, result)
            except BaseException as exc:
                keep = not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))  # errors: keep the log
                raise
            finally:
                await bot.stop()
            measure(samples, workload, slack, anthropic, responder, repo)
            result.samples = samples
            result.bot_log = bot.log_problems()
            keep = any(s.problem for s in samples) or bool(result.bot_log.keys() - {BOLT_TOKEN_WARNING})
    finally:
        result.seconds = time.monotonic() - started
        if keep:
            print(f"  bot log and database kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    return result


# ============================================================================ reporting


def _s(value: float | None) -> str:
    return "–" if value is None or math.isnan(value) else f"{value:.2f} s"


def _p50_max(values: list[float]) -> str:
    return f"{_s(percentile(values, 50))} / {_s(max(values) if values else None)}" if values else "–"


def _ratio(value: float, base: float) -> str:
    return "–" if math.isnan(value) or math.isnan(base) or base == 0 else f"{value / base:.2f}×"


#: The figures of the summary, per kind: (column, Sample attribute or ThreadResult field).
FIGURES = [
    ("Mention → Claude's request", "to_request"),
    ("Mention → Claude's first token", "first_token"),
    ("Mention → first visible text", "first_text"),
    ("Overhead: first visible text − first token", "overhead"),
]


def describe_kind(kind: str, args: argparse.Namespace) -> str:
    return {
        "cold": f"new sandbox, snapshot without Claude Code (installed, {args.install_seconds:g} s)",
        "pinned": "new sandbox from the pinned snapshot",
        "warm": f"warm pool member (`MAISON_WARM_POOL={WARM_POOL}`)",
        "repo": f"warm pool member, `--repo` cloned first ({REPO_FILES} files, ≈{REPO_BYTES / 1e6:g} MB, "
                f"{REPO_COMMITS} commits)",
        "archived": f"archived sandbox woken by a follow-up (restore {args.restore_delay:g} s)",
    }[kind]


def summary_table(results: list[KindResult], args: argparse.Namespace) -> str:
    lines = ["| Kind | Sandbox | Correct | " + " | ".join(f"{name} p50 / max" for name, _ in FIGURES) + " |",
             "|---|---|---:|" + "---:|" * len(FIGURES)]
    for r in results:
        if r.error:
            lines.append(f"| {r.kind} | {describe_kind(r.kind, args)} | **failed** |" + " – |" * len(FIGURES))
            continue
        cells = [_p50_max(r.values(attr)) for _, attr in FIGURES]
        lines.append(f"| {r.kind} | {describe_kind(r.kind, args)} | {r.ok}/{len(r.samples)} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def ratio_table(results: list[KindResult]) -> str:
    """p50s of each kind as multiples of cold's."""
    base = next((r for r in results if r.kind == BASELINE and not r.error), None)
    if base is None:
        return ""
    names = [(name, attr) for name, attr in FIGURES if attr != "overhead"]
    lines = ["| Kind | " + " | ".join(f"{name} (p50, × cold)" for name, _ in names) + " |",
             "|---|" + "---:|" * len(names)]
    for r in results:
        if r.error or r is base:
            continue
        cells = [_ratio(percentile(r.values(attr), 50), percentile(base.values(attr), 50)) for _, attr in names]
        lines.append(f"| {r.kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def repo_table(results: list[KindResult]) -> str:
    """`repo` against `REPO_BASELINE` of the same run: what the repository adds to each figure,
    and the clone's own part of it."""
    repo = next((r for r in results if r.kind == "repo" and not r.error and r.samples), None)
    base = next((r for r in results if r.kind == REPO_BASELINE and not r.error and r.samples), None)
    if repo is None or base is None:
        return ""
    lines = [f"| Figure | `{REPO_BASELINE}` (no repository) p50 / max | `repo` p50 / max | `repo` ÷ `{REPO_BASELINE}` "
             f"(p50) | `repo` − `{REPO_BASELINE}` (p50) |", "|---|---:|---:|---:|---:|"]
    for name, attr in [*FIGURES[:3], ("Mention → final reply", "answered")]:
        ours, theirs = percentile(repo.values(attr), 50), percentile(base.values(attr), 50)
        lines.append(f"| {name} | {_p50_max(base.values(attr))} | {_p50_max(repo.values(attr))} "
                     f"| {_ratio(ours, theirs)} | {_s(ours - theirs)} |")
    lines.append(f"| The clone alone (`git clone` in the sandbox) | – | {_p50_max(repo.values('clone'))} "
                 "| – | – |")
    return "\n".join(lines)


def runs_table(results: list[KindResult]) -> str:
    lines = ["| Kind | `--ttft` | # | Sandbox | Snapshot | Pool member | Woken | → request | → first token "
             "| → first visible | Overhead | Previous change → first visible | → final reply | Problem |",
             "|---|---:|---:|---|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        for s in r.samples:
            t = s.thread
            lines.append(f"| {s.kind} | {r.ttft:g} s | {s.repeat + 1} | `{s.sandbox[:8]}` | `{s.snapshot}` "
                         f"| {'yes' if s.pooled else 'no'} | {'yes' if s.woken else 'no'} | {_s(t.to_request)} "
                         f"| {_s(s.first_token)} | {_s(t.first_text)} | {_s(s.overhead)} | {_s(s.paced)} "
                         f"| {_s(s.answered)} | {s.problem or '–'} |")
    return "\n".join(lines)


def goal(results: list[KindResult]) -> tuple[bool | None, list[str]]:
    """The issue's goal: warm pool, first visible text ≤ 1 s after Claude's own first token, in
    every warm run (at every `--ttft` measured)."""
    warm = [r for r in results if r.kind == "warm" and not r.error and r.samples]
    if not warm:
        return None, [f"Goal (warm pool: first visible text ≤ {GOAL:g} s after Claude's first token): not measured."]
    lines, verdicts = [], []
    for r in warm:
        overheads = r.values("overhead")
        holds = len(overheads) == len(r.samples) and all(v <= GOAL for v in overheads) and r.ok == len(r.samples)
        verdicts.append(holds)
        lines.append(f"with the model's first token {r.ttft:g} s after its request: **{'holds' if holds else 'fails'}**"
                     f" (overhead p50 {_s(percentile(overheads, 50))}, max {_s(max(overheads) if overheads else None)},"
                     f" {len(overheads)} run(s))")
    holds = all(verdicts)
    return holds, [f"Goal (warm pool: first visible text ≤ {GOAL:g} s after Claude's first token, every run): "
                   f"**{'holds' if holds else 'does not hold'}** — " + "; ".join(lines) + "."]


def ttft_table(results: list[KindResult]) -> str:
    """The warm runs side by side, by the model's time to first token."""
    warm = sorted((r for r in results if r.kind == "warm" and not r.error), key=lambda r: r.ttft)
    if len(warm) < 2:
        return ""
    lines = ["| Model's first token after its request (`--ttft`) | " + " | ".join(
        f"{name} p50 / max" for name, _ in FIGURES[1:]) + " | Goal (≤ 1 s) |", "|---:|" + "---:|" * len(FIGURES)]
    for r in warm:
        overheads = r.values("overhead")
        ok = len(overheads) == len(r.samples) and all(v <= GOAL for v in overheads) and r.ok == len(r.samples)
        lines.append(f"| {r.ttft:g} s (+ {3 * CHUNK_INTERVAL:g} s of frames) | "
                     + " | ".join(_p50_max(r.values(attr)) for _, attr in FIGURES[1:]) + f" | {'✅' if ok else '❌'} |")
    return "\n".join(lines)


def notes(results: list[KindResult], args: argparse.Namespace) -> list[str]:
    from maison_slack.slack.config import Settings

    interval = Settings.edit_interval if args.edit_interval is None else args.edit_interval
    found = []
    for r in results:
        if r.error:
            found.append(f"`{r.kind}` (`--ttft {r.ttft:g}`) could not be measured: {r.error}")
            continue
        label = f"`{r.kind}`" + (f" (`--ttft {r.ttft:g}`)" if r.ttft != args.ttft else "")
        line = f"{label}: {r.seconds:.0f} s in all (doubles and bot start included)"
        if r.setup:
            line += f"; before the prompts: {r.setup}"
        problems = {k: n for k, n in r.bot_log.items() if k != BOLT_TOKEN_WARNING}
        if problems:
            line += "; bot log: " + "; ".join(f"{n}× `{k.replace('|', '/')}`" for k, n in
                                              sorted(problems.items(), key=lambda kv: -kv[1])[:4])
        else:
            line += "; no warnings or errors in the bot's log"
        found.append(line + ".")
        paced = [s.paced for s in r.samples if s.paced is not None]
        if args.mode != "native" and paced and all(abs(v - interval) < 0.1 for v in paced):
            found.append(f"{label}: in every run the first visible text came {_s(min(paced))}–{_s(max(paced))} "
                         f"after the thread's previous visible change, i.e. one edit interval ({interval:g} s) "
                         "later: the text waited for the reply's edit pacing, not for Claude.")
        if r.kind in POOLED and any(s.said_creating for s in r.samples):
            found.append(f"{label}: {sum(s.said_creating for s in r.samples)}/{len(r.samples)} replies said "
                         f"\"{CREATING}…\" although the thread took a ready pool member.")
        if r.repo is not None:
            clones = ", ".join(_s(s.clone) for s in r.samples)
            found.append(f"{label}: the clones took {clones} in the sandbox; {sum(s.said_cloning for s in r.samples)}"
                         f"/{len(r.samples)} replies showed \"{CLONING} …\" to their author before the answer.")
        if r.kind == "cold" and len(r.samples) > 1:
            ordered = sorted(r.samples, key=lambda s: s.thread.mentioned)
            gaps = [(b.thread.mentioned + b.thread.to_request) - (a.thread.mentioned + a.answered)
                    for a, b in zip(ordered, ordered[1:])
                    if a.answered is not None and b.thread.to_request is not None]
            if gaps:
                found.append(f"`cold` runs were staggered by {args.stagger:g} s: the next run's Claude request came "
                             f"{min(gaps):.1f} s (at least) after the previous reply was final"
                             + (" — **they overlapped**, so the later figures include the earlier run's CPU use."
                                if min(gaps) < 0 else ", so their CPU-using parts did not overlap."))
    return found


def settings_lines(args: argparse.Namespace, interval: float) -> list[str]:
    from maison_slack.core.snapshots import PINNED_SNAPSHOT

    edit = (f"`MAISON_EDIT_INTERVAL` unset (the bot's default, {interval:g} s between edits of a reply)"
            if args.edit_interval is None else f"`MAISON_EDIT_INTERVAL={args.edit_interval:g}`")
    return [
        f"* Reply mode `MAISON_STREAMING={args.mode}`, channel threads (one mention starts each), {edit}; other "
        "settings as the tests' `BotEnv.env()` gives them (`CLAUDE_CODE_MAX_RETRIES=0`), defaults otherwise.",
        f"* {args.repeat} prompt(s) per kind; each answered with 8 words, one `text_delta` every "
        f"{CHUNK_INTERVAL * 1000:g} ms (real Claude Code CLI in the sandboxes, Anthropic double behind it); the "
        f"answer's stream starts {args.ttft:g} s after Claude's request (`--ttft`), its first `text_delta` "
        f"{3 * CHUNK_INTERVAL:g} s later.",
        f"* Daytona double: `create_delay={args.create_delay:g}` s in `creating`, then `start_delay="
        f"{args.start_delay:g}` s in `starting` (a new sandbox is started ≈{args.create_delay + args.start_delay:g} s "
        f"after the create; stops and archiving take `start_delay` too); an archived sandbox's start takes "
        f"{args.restore_delay:g} s; snapshot builds `build_seconds={args.build_seconds:g}` (not timed).",
        f"* `cold`: snapshot `{COLD_SNAPSHOT}`, whose PATH has no `claude` and an `npm` that installs the real CLI in "
        f"{args.install_seconds:g} s; repeats staggered by {args.stagger:g} s.",
        f"* `pinned`: `{PINNED_SNAPSHOT}`, built with `maison-slack snapshot`; `warm`, `repo` and `archived` use it too "
        "(registered in the double directly).",
        f"* `warm`: `MAISON_WARM_POOL={WARM_POOL}`, full (`/maison status`) before each mention.",
        f"* `repo`: `warm`, each mention starting with `--repo <url>` of a repository on a loopback git host "
        "(`tests/doubles/git_host.GitHost`: git's smart HTTP, reached by name through the sandbox's egress proxy), "
        f"generated the same every run ({REPO_FILES} files of code-like text, ≈{REPO_BYTES / 1e6:g} MB, "
        f"{REPO_COMMITS} commits, repacked as a host keeps it); the bot clones it with the Daytona double's git "
        "toolbox (the real `git` in the sandbox) before Claude starts, where `warm` makes the work dir a "
        "repository (`git init`). A pool member, so that the difference to `warm` is the repository's, whatever "
        "sandbox creation takes.",
        f"* `archived`: `MAISON_IDLE_TIMEOUT={IDLE_TIMEOUT:g}`, `MAISON_REAP_INTERVAL={REAP_INTERVAL:g}`; each thread "
        "answered once, its sandbox stopped by the bot, archived with the daytona SDK (`sandbox.archive()`), then "
        "a follow-up in the thread.",
    ]


ASSUMPTIONS = [
    "Sandbox creation and start: ../shared/reference/daytona.md gives no production latency (§6.3 times only the "
    "double; for snapshot sandboxes the production API may block up to 30 s waiting for `started`). The "
    "`--create-delay` / `--start-delay` defaults (≈1.5 s to a started sandbox) are assumed.",
    "Restoring an archived sandbox: ../shared/reference/daytona.md §20.2 says it grows with size and cites a field "
    "report of 10–40 min for ≈10 GB sandboxes; a fresh thread's sandbox is far smaller, and `--restore-delay` is "
    "an assumed figure for it. The double has no `restoring` state (§20.2: `restoring → starting → started`): "
    "the archived sandbox spends the restore time in `starting`.",
    "Installing Claude Code: ../shared/reference/claude-code.md §1 gives the packages (a ≈32 KB wrapper and a "
    "≈400 MB native binary) but no install time; `--install-seconds` is assumed (a 400 MB download and "
    "unpack). Node.js is on the snapshot (the bot would install it too, with apt, where it is missing).",
    "Claude Code's start-up on this 2-core machine is real (the CLI runs); ../shared/reference/claude-code.md §7 "
    "measured 0.27–0.30 s to its first event on 16 cores with a warm page cache.",
    "Cloning a repository: ../shared/reference/daytona.md §18 gives the git toolbox's calls but no timing. The git "
    "host here is on the loopback interface, over plain HTTP: no TLS, no network round trips, no bandwidth limit, "
    "so the clone is git's own work (the host packing, the sandbox's `git` unpacking and checking out); a clone "
    "from GitHub adds those, and the pack's download, in proportion to the repository's size.",
]


def render(results: list[KindResult], sweep: list[KindResult], args: argparse.Namespace,
           context: dict[str, str]) -> str:
    _, verdict = goal(results + sweep)
    parts = [
        "# First-reply benchmark: time to Claude's first visible words, by kind of sandbox",
        "",
        f"Generated by `{' '.join(['python', 'bench/first_reply_bench.py', *sys.argv[1:]])}`"
        + f" on {context['date']} ({machine()}; load average {context['load']} before the run"
        + (f", {context['load_note']}" if context.get("load_note") else "") + ").",
        "",
        f"The bot, from {context['source']}, runs as `python -m maison_slack` in a subprocess against the Slack, "
        f"Daytona and Anthropic doubles of `tests/doubles/`, fresh for each kind; sandboxes run the real Claude "
        f"Code CLI {context['cli']}.",
        "",
        "## Settings",
        "",
        *settings_lines(args, float(context["edit_interval"])),
        "",
        "## Assumptions",
        "",
        *(f"* {a}" for a in ASSUMPTIONS),
        "",
        "## Results",
        "",
        summary_table(results, args),
        "",
        *verdict,
        "",
    ]
    ratios = ratio_table(results)
    if ratios:
        parts += ["### Ratios to `cold`", "", ratios, ""]
    with_repo = repo_table(results)
    if with_repo:
        served = next(r.repo for r in results if r.repo is not None)
        parts += [f"### A repository's cost: `repo` against `{REPO_BASELINE}`", "",
                  f"Both take a ready pool member; `repo`'s thread clones {served.describe()} before "
                  f"Claude starts, `{REPO_BASELINE}`'s makes its work dir a repository (`git init`). *The clone "
                  "alone* is the `git clone` the Daytona double's git toolbox ran in the sandbox; the rest of the "
                  "difference is the bot's other steps around it (the clone's directory, the thread's branch, "
                  "reading the start commit: toolbox calls and a script) less `git init`, and Claude Code starting "
                  "in a larger repository. The first visible text adds the reply's edit pacing to that (see "
                  "*Previous change → first visible* under *Every run*).", "", with_repo, ""]
    by_ttft = ttft_table(results + sweep)
    if by_ttft:
        parts += ["### Warm pool, by the model's time to first token", "",
                  "The same `warm` kind again with the Anthropic double starting its answer later after Claude's "
                  "request (`--ttft-sweep`), since the overhead depends on when the first token falls relative to "
                  "the reply's previous edit (see *Previous change → first visible* under *Every run*).", "",
                  by_ttft, ""]
    parts += ["### Notes", "", *(f"* {n}" for n in notes(results + sweep, args)), "",
              "### Every run", "", runs_table(results + sweep), "",
              "## How to read it", "",
              "* Times run from the person's message (the mention, or the follow-up in a woken thread) on the "
              "benchmark's monotonic clock, the one the Slack double stamps messages with and the Anthropic double "
              "stamps its frames with.",
              "* *Claude's request*: the Anthropic double receiving Claude Code's request; before it, the bot's work "
              "(placeholder, sandbox creation or wake-up, install where needed, the run's start in the sandbox) "
              "and the CLI's own start-up.",
              "* *Claude's first token*: the double sending the answer's first `text_delta` (three SSE frames, "
              f"{CHUNK_INTERVAL * 1000:g} ms apart, after the request).",
              "* *First visible text*: the first moment the thread's author sees the answer's first word, from "
              "the Slack double's record of every message version (`visible_to`).",
              "* *Overhead*: first visible text − Claude's first token: Claude Code writing the event, the "
              "sandbox's log stream, the bot's edit pacing and Slack.",
              "* *Previous change → first visible*: how long before the first visible text the thread last changed "
              "for its author (the placeholder, a status edit or status line); a value equal to the edit interval "
              "means the text waited for the reply's edit pacing.",
              "* *Correct*: the reply shows the whole answer, word for word, with the success footer; one Claude "
              "request per prompt; the sandbox is of the kind (snapshot, pool member, the same sandbox woken).",
              ""]
    return "\n".join(parts)


# ============================================================================ main


async def bench(args: argparse.Namespace, claude_bin: Path, load_before: str) -> None:
    """Every kind (then the warm runs of `--ttft-sweep`), one after the other; the report."""
    from maison_slack.slack.config import Settings
    from tests.claude_cli import CLAUDE_CODE_VERSION

    stop = asyncio.current_task().cancel  # type: ignore[union-attr]
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop)  # stops the bot and doubles in order
    workload = Workload(len(KINDS) * args.repeat, args.answer_seconds, CHUNK_INTERVAL, 1, 0.0, 0.0)
    results, sweep = [], []
    runs = [(kind, args.ttft) for kind in args.kinds]
    runs += [("warm", ttft) for ttft in args.ttft_sweep if "warm" in args.kinds and ttft != args.ttft]
    for kind, ttft in runs:
        position = KINDS.index(kind)
        indices = [position * args.repeat + r for r in range(args.repeat)]
        print(f"\n-- {kind}: {describe_kind(kind, args)}, {args.repeat}×, model's first token {ttft:g} s after "
              "its request", flush=True)
        try:
            result = await run_kind(kind, argparse.Namespace(**{**vars(args), "ttft": ttft}), claude_bin, workload,
                                    indices)
        except Exception as exc:  # the other kinds still count
            print(f"  failed: {exc}", flush=True)
            result = KindResult(kind, ttft, error=str(exc).splitlines()[0].removesuffix("; the bot's log ends with:"))
        (results if ttft == args.ttft else sweep).append(result)
        for s in result.samples:
            print(f"  #{s.repeat + 1}: request {_s(s.thread.to_request)}, first token {_s(s.first_token)}, "
                  f"first visible text {_s(s.thread.first_text)}, overhead {_s(s.overhead)}"
                  + (f" — {s.problem}" if s.problem else ""), flush=True)
    context = {
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load": load_before,
        "load_note": args.load_note,
        "source": source_revision(args),
        "cli": CLAUDE_CODE_VERSION,
        "edit_interval": str(Settings.edit_interval),
    }
    print("\n" + summary_table(results, args) + "\n")
    print(goal(results + sweep)[1][0] + "\n")
    for table in (ratio_table(results), repo_table(results), ttft_table(results + sweep)):
        if table:
            print(table + "\n")
    for note in notes(results + sweep, args):
        print(f"* {note}")
    if args.write:
        RESULTS_MD.write_text(render(results, sweep, args, context))
        print(f"\nWrote {RESULTS_MD.relative_to(REPO)}")


#: The benchmark's durations, in seconds: (option, default, default with --quick, what it is).
SECONDS: list[tuple[str, float, float, str]] = [
    ("--install-seconds", 20, 5, "the fake npm's install of Claude Code in a cold sandbox (assumed)"),
    ("--create-delay", 1.0, 1.0, "a new sandbox in `creating` (assumed)"),
    ("--start-delay", 0.5, 0.5, "a sandbox in `starting`, and every other transition (assumed)"),
    ("--restore-delay", 10, 3, "an archived sandbox's start (assumed)"),
    ("--build-seconds", 1.0, 1.0, "the pinned snapshot's build in the double (not timed)"),
    ("--stagger", 5.0, 5.0, "between the cold mentions"),
    ("--answer-seconds", 2.0, 2.0, "each answer's stream, SSE frames included"),
    ("--ttft", 0.0, 0.0, "the model's wait before its answer starts streaming"),
    ("--timeout", 60, 60, "the longest wait for a reply"),
]


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--kinds", default=",".join(KINDS), help="kinds of sandbox, comma-separated (%(default)s)")
    parser.add_argument("--repeat", type=int, default=None, help="prompts per kind (default 3; 1 with --quick)")
    parser.add_argument("--mode", choices=MODES, default="edits",
                        help="MAISON_STREAMING: edits (the placeholder's edits, default), native or auto")
    for option, full, quick, what in SECONDS:
        parser.add_argument(option, type=float, default=None, metavar="SECONDS",
                            help=f"{what} (default {full:g}" + (f"; {quick:g} with --quick)" if quick != full else ")"))
    parser.add_argument("--ttft-sweep", default="1.0",
                        help="more warm runs with these --ttft values, comma-separated (%(default)s; '' for none)")
    parser.add_argument("--edit-interval", type=float, default=None,
                        help="MAISON_EDIT_INTERVAL (default: unset, the bot's own default; the tests use 0.2)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 1 prompt per kind, shorter waits, no file")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write bench/FIRST_REPLY_RESULTS.md (default: yes, except with --quick)")
    parser.add_argument("--load-note", default="", help="a note on the machine's load, for the results file")
    args = parser.parse_args(argv)
    for option, full, quick, _ in SECONDS:
        name = option[2:].replace("-", "_")
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if not args.kinds or set(args.kinds) - set(KINDS) or len(set(args.kinds)) != len(args.kinds):
        parser.error(f"--kinds takes distinct kinds out of {','.join(KINDS)}")
    args.kinds = [k for k in KINDS if k in args.kinds]  # always in the same order, cold (the baseline) first
    args.repeat = args.repeat if args.repeat is not None else 1 if args.quick else 3
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    args.write = not args.quick if args.write is None else args.write
    args.ttft_sweep = [float(v) for v in args.ttft_sweep.split(",") if v.strip()]
    args.revision, args.source = None, REPO  # for load_bench.source_revision
    return args


def main() -> None:
    args = parse_args()
    load_before = " / ".join(f"{v:.2f}" for v in os.getloadavg())
    # This process (the doubles, the SDK archiving sandboxes) and its children reach only the doubles.
    environment = clean_env()
    os.environ.clear()
    os.environ.update(environment)
    sys.path.insert(0, str(REPO))
    from tests.claude_cli import ensure_claude_cli

    check_clocks()
    try:
        asyncio.run(bench(args, ensure_claude_cli(), load_before))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted: every process and server the benchmark started is stopped.", file=sys.stderr)
        sys.exit(130)


if __name__ == "__main__":
    main()
