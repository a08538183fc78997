#!/usr/bin/env python
"""Load benchmark: the bot answering many Slack threads at once, as the people in them see it.

    python bench/load_bench.py                      # 5, 20 and 50 concurrent threads
    python bench/load_bench.py --quick              # smoke run: 3 threads, 5-second answers
    python bench/load_bench.py --revision HEAD      # the committed bot, not the working tree

For each scale N the benchmark starts, in this process, the Slack, Daytona and Anthropic
doubles of `tests/doubles/`, and the bot as a subprocess (`python -m maison_slack`, configured
like `tests/bot_harness.BotEnv.env()`), so the bot's own CPU time and peak RSS can be read from
`/proc/<pid>/stat` and `/proc/<pid>/status`. Sandboxes run the real Claude Code CLI, whose
requests the Anthropic double answers. Then N people mention the bot within about a second,
each in a new thread, and the benchmark waits until every reply is final.

Workload: every prompt carries its thread's number (`LOADBENCH-7`) and the Anthropic double
answers it with one text block streamed as small `text_delta`s, one every `--chunk-interval`
(150 ms) for about `--answer-seconds`. Each chunk is one word that names its thread and its
position (`t07w0042`), so an answer can be checked word for word and every chunk's emit time
(the double's `emitted` log) is known per thread.

Why these figures (p50 / p95 / max over the threads):

* ack latency: Slack redelivers an event that is not acked within 3 s; a bot busy with 50
  runs must still ack at once (both envelopes of each mention: `app_mention` and `message`).
* time to placeholder: mention -> the bot's first message in the thread (the "I'm on it").
* time to first visible text: mention -> first version of the thread whose visible text has
  the answer's first word. It contains sandbox creation and Claude Code's start-up; the
  phase rows split it (mention -> Claude's request reaches the Anthropic double; first chunk
  sent -> first chunk visible).
* visible-update cadence: the gaps between successive successful `chat.postMessage` /
  `chat.update` calls that changed what the thread shows (status line or text), from the
  placeholder to the final edit; per thread the median gap and the longest gap (a long gap is
  a reply that looks stuck). Also counted: replies that showed any of the answer before the
  final edit (under load an answer may only ever appear whole).
* final answer latency: the Anthropic double sending the answer's last chunk -> the edit that
  shows the footer (`:white_check_mark: ...`), i.e. how long the finished answer waits.
* `chat.update` calls per minute and 429s: Slack allows ~50 a minute for the whole app (the
  double enforces it), so under load edits must be shared, not lost.
* bot CPU seconds (utime + stime of the bot and its children) and peak RSS (VmHWM).

Everything is computed from what the Slack double recorded (`SlackDouble.calls`: method, args,
time, ok; its messages; `envelopes` and `acks`) and the Anthropic double's `emitted`; the
visible text of a version is rendered from the call's arguments with the double's own
`visible_text`. All timestamps are `CLOCK_MONOTONIC` (`time.monotonic()` in the Slack double,
`time.perf_counter()` in the Anthropic double; the script checks they are one clock).

Placeholders: the Slack double, like Slack, limits `chat.postMessage` to ~1 per second per
channel with bursts of 5. With 50 threads in one channel, time to placeholder would measure
that limit rather than the bot, so threads are spread over channels, `--threads-per-channel`
(default 5, the burst) per channel: 1, 4 and 10 channels at 5, 20 and 50 threads.

Results go to stdout and (except with `--quick`) to `bench/LOAD_RESULTS.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import math
import os
import platform
import re
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stream_bench import clean_env, percentile  # the same loopback-only environment for every benchmark

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "bench" / "LOAD_RESULTS.md"

PROMPT_TAG = re.compile(r"LOADBENCH-(\d+)")
WORD = re.compile(r"\bt(\d+)w(\d+)\b")
FOOTER = ":white_check_mark:"  # the final edit of a successful run shows this footer
WARNING = ":warning:"  # a run that failed ends with this instead
USER = "U0ALICE"
#: SSE frames of a one-block answer around its text deltas: message_start, ping,
#: content_block_start, content_block_stop, message_delta, message_stop. The double sleeps
#: `delay` before every frame but the first.
FRAMES_AROUND_TEXT = 6
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL) .*")


# ============================================================================ workload


@dataclass(frozen=True)
class Workload:
    """N threads, each answered with one streamed text of distinct, numbered words."""

    threads: int
    answer_seconds: float
    chunk_interval: float
    threads_per_channel: int
    spread: float  # seconds over which the N mentions are sent

    @property
    def chunks(self) -> int:
        return max(1, round(self.answer_seconds / self.chunk_interval) - (FRAMES_AROUND_TEXT - 1))

    @property
    def channels(self) -> int:
        return math.ceil(self.threads / self.threads_per_channel)

    def channel(self, thread: int) -> str:
        return f"C0LOAD{thread // self.threads_per_channel:03d}"

    def _words(self, thread: int) -> list[str]:
        # Fixed widths, so the answers of every scale have the same length (up to 1,000 threads).
        tw, iw = max(3, len(str(self.threads - 1))), max(4, len(str(self.chunks)))
        return [f"t{thread:0{tw}d}w{i:0{iw}d}" for i in range(1, self.chunks + 1)]

    @property
    def chunk_size(self) -> int:
        """One word plus its space per `text_delta` (all words of a run have one length)."""
        return len(self._words(0)[0]) + 1

    def answer(self, thread: int) -> str:
        return " ".join(self._words(thread))

    def first_word(self, thread: int) -> str:
        return self._words(thread)[0]

    def prompt(self, thread: int) -> str:
        return f"LOADBENCH-{thread}: please write your answer."

    def describe_answer(self) -> str:
        seconds = (self.chunks + FRAMES_AROUND_TEXT - 1) * self.chunk_interval
        return (f"one text block of {self.chunks} words ({len(self.answer(0)):,} characters), one `text_delta` "
                f"per word every {self.chunk_interval * 1000:g} ms (streamed over ~{seconds:.1f} s)")

    def describe(self) -> str:
        return (f"{self.threads} threads started by mentions within {self.spread:g} s, "
                f"{self.threads_per_channel} per channel ({self.channels} channel(s)); each answer is "
                + self.describe_answer())


class Responder:
    """The Anthropic double's responder: a thread's own streamed answer to its prompt."""

    def __init__(self, workload: Workload) -> None:
        self.workload = workload
        self.requests: dict[int, list[float]] = defaultdict(list)  # thread -> perf_counter of each request

    def __call__(self, body: dict[str, Any]) -> Any:
        from tests.doubles.anthropic import Text, Turn, default_responder, last_user_text

        match = PROMPT_TAG.search(last_user_text(body))
        if match is None:
            return default_responder(body)
        thread = int(match.group(1))
        self.requests[thread].append(time.perf_counter())
        return Turn([Text(self.workload.answer(thread))], chunk_size=self.workload.chunk_size,
                    delay=self.workload.chunk_interval)


# ============================================================================ the bot process


def bot_env(slack: Any, daytona: Any, anthropic: Any, db_path: Path) -> dict[str, str]:
    """The environment the tests give the bot (`tests.bot_harness.BotEnv.env()`): the doubles."""
    from tests.bot_harness import BotEnv  # imported late: from the tree under test (`--revision`)

    return BotEnv(slack, daytona, anthropic, db_path, settings=None).env()  # type: ignore[arg-type]


def _stat_fields(pid: int) -> list[str]:
    raw = Path(f"/proc/{pid}/stat").read_text()
    return raw[raw.rfind(")") + 2:].split()  # fields from 3 (state) on; comm may hold spaces


def _children(pid: int) -> list[int]:
    found: list[int] = []
    with contextlib.suppress(OSError):
        for tid in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    return found


def cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, of its reaped children (cutime + cstime) and of its live descendants."""
    fields = _stat_fields(pid)
    total = sum(int(fields[i]) for i in (11, 12, 13, 14)) / CLK_TCK  # utime stime cutime cstime
    for child in _children(pid):
        with contextlib.suppress(OSError, ValueError):
            total += cpu_seconds(child)
    return total


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class BotProcess:
    """`python -m maison_slack` with its log in a file; sampled while alive, stopped by its pid."""

    def __init__(self, proc: asyncio.subprocess.Process, log_path: Path) -> None:
        self.proc = proc
        self.log_path = log_path
        self.cpu = 0.0
        self.rss_mb = 0.0
        self._sampler = asyncio.ensure_future(self._sample_forever())

    @classmethod
    async def start(cls, env: dict[str, str], source: Path, workdir: Path) -> BotProcess:
        log_path = workdir / "bot.log"
        with open(log_path, "wb") as log:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "maison_slack", cwd=str(source), env=env,
                stdin=asyncio.subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl+C reaches the benchmark, which stops the bot itself
            )
        return cls(proc, log_path)

    @property
    def alive(self) -> bool:
        return self.proc.returncode is None

    def sample(self) -> None:
        with contextlib.suppress(OSError, ValueError, IndexError):
            self.cpu = cpu_seconds(self.proc.pid)
            self.rss_mb = peak_rss_mb(self.proc.pid)

    async def _sample_forever(self) -> None:
        while self.alive:
            self.sample()
            await asyncio.sleep(0.5)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        return ""

    def log_problems(self) -> Counter[str]:
        """The bot's WARNING / ERROR lines, counted by kind (numbers and ids replaced by `N`)."""
        counts: Counter[str] = Counter()
        with contextlib.suppress(OSError):
            for line in self.log_path.read_text(errors="replace").splitlines():
                match = LOG_PROBLEM.search(line)
                if match:
                    counts[re.sub(r"\d+(\.\d+)?", "N", match.group(0))[:160]] += 1
        return counts

    async def stop(self, timeout: float = 30) -> None:
        """SIGTERM (the bot shuts down cleanly), then SIGKILL if it takes longer than `timeout`."""
        if self.alive:
            self.sample()
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), timeout)
            except asyncio.TimeoutError:
                print(f"  the bot did not stop within {timeout:g} s: killing pid {self.proc.pid}", flush=True)
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
        self._sampler.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._sampler


# ============================================================================ what the thread showed


@dataclass
class View:
    """What one thread showed (every bot reply, joined) right after one successful call."""

    time: float
    text: str
    running: bool  # some reply still shows a button (the Stop button while running)


def _arg(args: dict[str, Any], key: str) -> Any:
    value = args.get(key)
    if isinstance(value, str) and key in ("blocks", "attachments"):
        with contextlib.suppress(ValueError):
            return json.loads(value)
    return value


def rendered(args: dict[str, Any], previous: Any | None) -> Any:
    """The message a chat.postMessage / chat.update call leaves, as the double's `Message`."""
    from tests.doubles.slack import Message

    text, blocks, markdown_text = _arg(args, "text"), _arg(args, "blocks"), _arg(args, "markdown_text")
    msg = Message(channel="", ts="", user="")
    if previous is not None:  # chat.update without blocks keeps them
        msg.text, msg.blocks, msg.markdown_text = previous.text, previous.blocks, previous.markdown_text
    if markdown_text:
        msg.markdown_text, msg.text, msg.blocks = str(markdown_text), "", []
        return msg
    msg.markdown_text = None
    if text is not None:
        msg.text = str(text)
    if isinstance(blocks, list):
        msg.blocks = blocks
    return msg


def thread_views(slack: Any, channel: str, thread_ts: str) -> list[View]:
    """The thread as shown after each successful bot post/update in it, oldest first.

    A successful `chat.postMessage` into the thread creates the next bot reply (the double
    stores them in call order); `chat.update` calls edit a reply by its ts.
    """
    from tests.doubles.slack import visible_text

    reply_ts = [m.ts for m in slack.thread(channel, thread_ts) if m.is_bot and m.ts != thread_ts]
    current: dict[str, Any] = {}
    views: list[View] = []
    posted = 0
    for call in list(slack.calls):
        if not call.ok or _arg(call.args, "channel") != channel:
            continue
        if call.method == "chat.postMessage" and _arg(call.args, "thread_ts") == thread_ts:
            if posted >= len(reply_ts):
                continue  # a post whose message was deleted since
            ts = reply_ts[posted]
            posted += 1
            current[ts] = rendered(call.args, None)
        elif call.method == "chat.update" and _arg(call.args, "ts") in current:
            ts = _arg(call.args, "ts")
            current[ts] = rendered(call.args, current[ts])
        else:
            continue
        shown = [current[ts] for ts in reply_ts if ts in current]
        text = "\n".join(visible_text(m) for m in shown)
        running = any(b.get("type") == "actions" for m in shown for b in m.blocks)
        views.append(View(call.time, text, running))
    return views


def settled(slack: Any, channel: str, thread_ts: str) -> bool:
    """The thread shows a final reply: the footer, or a warning with no Stop button left."""
    from tests.doubles.slack import visible_text

    replies = [m for m in slack.thread(channel, thread_ts) if m.is_bot and m.ts != thread_ts]
    text = "\n".join(visible_text(m) for m in replies)
    running = any(b.get("type") == "actions" for m in replies for b in m.blocks)
    return FOOTER in text or (WARNING in text and not running)


# ============================================================================ measuring one scale


@dataclass
class ThreadResult:
    index: int
    channel: str
    ts: str
    mentioned: float
    acks: list[float] = field(default_factory=list)  # seconds, both envelopes of the mention
    placeholder: float | None = None
    first_text: float | None = None
    gaps: list[float] = field(default_factory=list)  # between visible changes, placeholder -> final
    streamed: bool = False  # part of the answer was visible before the final edit
    final_latency: float | None = None
    to_request: float | None = None  # mention -> Claude's request at the Anthropic double
    chunk_to_visible: float | None = None  # first chunk emitted -> first visible text
    failure: str | None = None


@dataclass
class ScaleResult:
    workload: Workload
    threads: list[ThreadResult]
    wall: float  # first mention -> last thread settled (or timeout)
    update_calls: int
    update_ok: int
    update_429: int
    update_peak_minute: int
    rate_limited: Counter[str]
    all_acks: list[float]
    redelivered: int
    unacked: int
    bot_cpu_load: float
    bot_cpu_total: float
    bot_rss_mb: float
    bot_log: Counter[str]  # WARNING / ERROR lines by kind
    doubles_cpu: float
    sandbox_cpu: float
    requests_per_thread: Counter[int]

    @property
    def failures(self) -> list[ThreadResult]:
        return [t for t in self.threads if t.failure]


def emitted_by_thread(emitted: list[tuple[float, str]]) -> dict[int, list[float]]:
    """Emit time of every answer chunk, per thread (each chunk is one `tNNwNNNN` word)."""
    times: dict[int, list[float]] = defaultdict(list)
    for stamp, delta in emitted:
        for thread, _ in WORD.findall(delta):
            times[int(thread)].append(stamp)
    return times


def check_answer(workload: Workload, thread: int, final_text: str) -> str | None:
    """None if the final reply holds the whole answer and nothing from another thread."""
    if " ".join(workload.answer(thread).split()) not in " ".join(final_text.split()):
        shown = {int(i) for t, i in WORD.findall(final_text) if int(t) == thread}
        return f"incomplete answer ({len(shown)}/{workload.chunks} words shown)"
    strangers = {int(t) for t, _ in WORD.findall(final_text)} - {thread}
    if strangers:
        return f"words of other threads shown: {sorted(strangers)[:5]}"
    return None


def measure_thread(result: ThreadResult, workload: Workload, slack: Any, chunks: list[float],
                   requests: list[float]) -> None:
    """Fill in one thread's figures from the doubles' records."""
    result.acks = [
        slack.acks[env.envelope_id].latency
        for env in slack.envelopes.values()
        if env.envelope_id in slack.acks
        and (env.payload.get("event") or {}).get("ts") == result.ts
        and (env.payload.get("event") or {}).get("channel") == result.channel
    ]
    if requests:
        result.to_request = requests[0] - result.mentioned
    views = thread_views(slack, result.channel, result.ts)
    if not views:
        result.failure = "no reply"
        return
    result.placeholder = views[0].time - result.mentioned
    first_word = workload.first_word(result.index)
    first = next((i for i, v in enumerate(views) if first_word in v.text), None)
    final = next((i for i, v in enumerate(views) if FOOTER in v.text), None)
    if first is not None:
        result.first_text = views[first].time - result.mentioned
        if chunks:
            result.chunk_to_visible = views[first].time - chunks[0]
    end = len(views) - 1 if final is None else final
    changes = [views[0]] + [b for a, b in zip(views[:end], views[1:end + 1]) if b.text != a.text]
    result.gaps = [b.time - a.time for a, b in zip(changes, changes[1:])]
    result.streamed = first is not None and first != final
    if final is None:
        last = views[-1].text
        result.failure = "no final reply" if views[-1].running else \
            f"ended without the footer: {last.strip().splitlines()[-1][:120] if last.strip() else '(empty)'}"
        return
    if chunks:
        result.final_latency = views[final].time - chunks[-1]
    if len(requests) != 1:
        result.failure = f"{len(requests)} Claude requests for one prompt"
    elif len(chunks) != workload.chunks:
        result.failure = f"{len(chunks)}/{workload.chunks} chunks sent by the Anthropic double"
    else:
        result.failure = check_answer(workload, result.index, views[final].text)


def update_rate(slack: Any, start: float, end: float) -> tuple[int, int, int, int]:
    """chat.update calls in [start, end]: (all, ok, 429s, most in any 60-second window)."""
    calls = [c for c in slack.calls if c.method == "chat.update" and start <= c.time <= end]
    times = sorted(c.time for c in calls)
    peak, low = 0, 0
    for high, stamp in enumerate(times):
        while times[low] < stamp - 60:
            low += 1
        peak = max(peak, high - low + 1)
    return len(calls), sum(c.ok for c in calls), sum(c.status == 429 for c in calls), peak


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


@contextlib.asynccontextmanager
async def doubles(responder: Responder, claude_bin: Path) -> AsyncIterator[tuple[Any, Any, Any]]:
    """The three doubles, started; stopping Daytona's kills every sandbox process."""
    from tests.doubles.anthropic import AnthropicDouble
    from tests.doubles.daytona import DaytonaDouble, SnapshotSpec
    from tests.doubles.slack import SlackDouble

    async with SlackDouble() as slack, \
            DaytonaDouble(snapshots={"daytona-small": SnapshotSpec(path=[str(claude_bin)])}) as daytona, \
            AnthropicDouble(responder=responder) as anthropic:
        yield slack, daytona, anthropic


async def wait_connected(slack: Any, bot: BotProcess, timeout: float) -> None:
    """Wait for the bot's Socket Mode connection; fail at once if the bot exits instead."""
    try:
        await slack.wait_for(lambda: slack.connected or not bot.alive, timeout)
    except TimeoutError:
        pass
    if not slack.connected:
        why = f"exited with code {bot.proc.returncode}" if not bot.alive else f"did not connect within {timeout:g} s"
        raise RuntimeError(f"the bot {why}; its log ends with:\n{bot.log_tail()}")


async def wait_settled(slack: Any, bot: BotProcess, threads: list[ThreadResult], timeout: float) -> float:
    """Wait until every thread shows a final reply; return when the last one did (monotonic)."""
    deadline = time.monotonic() + timeout
    pending = {t.index: t for t in threads}
    last_report = time.monotonic()
    last_settled = time.monotonic()
    while pending and time.monotonic() < deadline and bot.alive:
        for index, thread in list(pending.items()):
            if settled(slack, thread.channel, thread.ts):
                del pending[index]
                last_settled = time.monotonic()
        if time.monotonic() - last_report >= 15:
            last_report = time.monotonic()
            print(f"  {len(threads) - len(pending)}/{len(threads)} replies final after "
                  f"{last_report - threads[0].mentioned:.0f} s", flush=True)
        await asyncio.sleep(0.25)
    if pending and not bot.alive:
        print(f"  the bot exited (code {bot.proc.returncode}) with {len(pending)} threads unfinished:\n"
              f"{bot.log_tail()}", flush=True)
    elif pending:
        print(f"  timed out after {timeout:.0f} s with {len(pending)} threads unfinished", flush=True)
    return last_settled if not pending else time.monotonic()


async def mention_all(slack: Any, workload: Workload) -> list[ThreadResult]:
    """N people mention the bot, each starting a thread, evenly over `workload.spread` seconds."""
    threads: list[ThreadResult] = []
    for index in range(workload.threads):
        channel = workload.channel(index)
        mentioned = time.monotonic()
        ts = await slack.mention(USER, channel, workload.prompt(index))
        threads.append(ThreadResult(index, channel, ts, mentioned))
        await asyncio.sleep(workload.spread / workload.threads)
    return threads


@dataclass
class CpuMark:
    """CPU seconds so far of the bot, this process (the doubles) and this process's reaped children."""

    bot: float
    doubles: float
    children: float

    @classmethod
    def now(cls, bot: BotProcess) -> CpuMark:
        bot.sample()
        return cls(bot.cpu, self_cpu(), children_cpu())


def summarize(workload: Workload, threads: list[ThreadResult], slack: Any, anthropic: Any, responder: Responder,
              bot: BotProcess, before: CpuMark, after: CpuMark, end: float) -> ScaleResult:
    chunks = emitted_by_thread(list(anthropic.emitted))
    for thread in threads:
        measure_thread(thread, workload, slack, sorted(chunks.get(thread.index, [])),
                       responder.requests.get(thread.index, []))
    calls, ok, limited, peak = update_rate(slack, threads[0].mentioned, end)
    envelopes = [e for e in slack.envelopes.values() if e.created <= end]  # not the bot's shutdown
    return ScaleResult(
        workload=workload,
        threads=threads,
        wall=end - threads[0].mentioned,
        update_calls=calls,
        update_ok=ok,
        update_429=limited,
        update_peak_minute=peak,
        rate_limited=Counter(c.method for c in slack.calls if c.status == 429 and c.time <= end),
        all_acks=[slack.acks[e.envelope_id].latency for e in envelopes if e.envelope_id in slack.acks],
        redelivered=sum(1 for e in envelopes if e.retry_attempt > 0),
        unacked=sum(1 for e in envelopes if e.envelope_id not in slack.acks),
        bot_cpu_load=after.bot - before.bot,
        bot_cpu_total=after.bot,
        bot_rss_mb=bot.rss_mb,
        bot_log=bot.log_problems(),
        doubles_cpu=after.doubles - before.doubles,
        sandbox_cpu=after.children - before.children,
        requests_per_thread=Counter(len(v) for v in responder.requests.values()),
    )


async def run_scale(workload: Workload, args: argparse.Namespace, claude_bin: Path) -> ScaleResult:
    """One fresh set of doubles, bot and database; N threads; the figures."""
    responder = Responder(workload)
    workdir = Path(tempfile.mkdtemp(prefix="maison-load-"))
    keep = False
    try:
        async with doubles(responder, claude_bin) as (slack, daytona, anthropic):
            env = clean_env()
            env.update(bot_env(slack, daytona, anthropic, workdir / "maison.db"))
            env.update(dict(item.split("=", 1) for item in args.bot_env))
            env["PYTHONPATH"] = str(args.source)
            bot = await BotProcess.start(env, args.source, workdir)
            try:
                await wait_connected(slack, bot, 60)
                await asyncio.sleep(1.0)  # let the bot finish starting (reaper, recovery) before timing
                before = CpuMark.now(bot)
                threads = await mention_all(slack, workload)
                timeout = args.timeout or 120 + 2 * workload.answer_seconds + 6 * workload.threads
                end = await wait_settled(slack, bot, threads, timeout)
                await asyncio.sleep(0.5)  # the echoes of the last edits get acked
                after = CpuMark.now(bot)
            except BaseException as exc:
                keep = not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))  # errors: keep the log
                raise
            finally:
                await bot.stop()
            result = summarize(workload, threads, slack, anthropic, responder, bot, before, after, end)
            keep = bool(result.failures)
            return result
    finally:
        if keep:
            print(f"  bot log and database kept in {workdir}", flush=True)
        else:
            shutil.rmtree(workdir, ignore_errors=True)


# ============================================================================ reporting


def _s(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.2f} s"


def _ms(value: float) -> str:
    return "–" if math.isnan(value) else f"{value * 1000:.0f} ms" if value < 10 else f"{value:.1f} s"


def _row(name: str, values: list[float], fmt: Any = _s) -> str:
    return f"| {name} | {fmt(percentile(values, 50))} | {fmt(percentile(values, 95))} | " \
           f"{fmt(max(values) if values else float('nan'))} | {len(values)} |"


def _collect(threads: list[ThreadResult], name: str) -> list[float]:
    return [v for t in threads if (v := getattr(t, name)) is not None]


def scale_table(r: ScaleResult) -> str:
    """The Markdown report of one scale: per-thread percentiles, then totals."""
    t = r.threads
    ok = len(t) - len(r.failures)
    minutes = r.wall / 60
    limited = ", ".join(f"{m} {n}" for m, n in sorted(r.rate_limited.items())) or "none"
    load = r.bot_cpu_load + r.doubles_cpu + r.sandbox_cpu
    failures = Counter(f.failure for f in r.failures)
    lines = [
        f"### {r.workload.threads} concurrent threads",
        "",
        "| Per thread | p50 | p95 | max | threads |",
        "|---|---:|---:|---:|---:|",
        _row("Ack latency (both envelopes of each mention)", [a for x in t for a in x.acks], _ms),
        _row("Time to placeholder (mention → first bot message)", _collect(t, "placeholder")),
        _row("Time to first visible text", _collect(t, "first_text")),
        _row("… of which mention → Claude's request at the API", _collect(t, "to_request")),
        _row("… of which first chunk sent → visible", _collect(t, "chunk_to_visible")),
        _row("Visible updates per thread (placeholder → final)", [len(x.gaps) + 1 for x in t if x.placeholder is not None], _n),
        _row("Visible-update gap, median per thread", [statistics.median(x.gaps) for x in t if x.gaps]),
        _row("Visible-update gap, longest per thread", [max(x.gaps) for x in t if x.gaps]),
        _row("Final answer latency (last chunk sent → footer shown)", _collect(t, "final_latency")),
        "",
        "| Totals | |",
        "|---|---|",
        f"| Answers complete and correct | {ok}/{len(t)} |",
        f"| Replies that showed part of the answer before the final edit | {sum(x.streamed for x in t)}/{len(t)} |",
        f"| Wall time (first mention → last final reply) | {r.wall:.1f} s |",
        f"| `chat.update` calls | {r.update_calls} ({r.update_calls / minutes:.1f}/min average, at most "
        f"{r.update_peak_minute} in any 60 s); {r.update_ok} ok, {r.update_429} answered 429 |",
        f"| 429s received, by method | {limited} |",
        f"| Ack latency, all {len(r.all_acks)} envelopes (incl. echoes of the bot's own messages) | "
        f"p95 {_ms(percentile(r.all_acks, 95))}, max {_ms(max(r.all_acks, default=float('nan')))}; "
        f"{r.redelivered} redelivered, {r.unacked} never acked |",
        f"| Bot CPU during the load | {r.bot_cpu_load:.1f} s ({100 * r.bot_cpu_load / r.wall:.0f}% of one core over "
        f"the wall time); {r.bot_cpu_total:.1f} s including start-up |",
        f"| Bot peak RSS (VmHWM) | {r.bot_rss_mb:.0f} MB |",
        f"| Doubles (this process) CPU / sandbox processes (Claude Code CLI) CPU | {r.doubles_cpu:.1f} s / "
        f"{r.sandbox_cpu:.1f} s (all together {load / r.wall:.2f} cores busy on average, of {os.cpu_count()}) |",
        f"| Bot log | {_problems(r.bot_log)} |",
    ]
    if failures:
        lines.append(f"| Failures | {'; '.join(f'{n}× {why}' for why, n in failures.most_common())} |")
    return "\n".join(lines)


def _problems(log: Counter[str]) -> str:
    if not log:
        return "no warnings or errors"
    shown = "; ".join(f"{n}× `{kind.replace('|', '/')}`" for kind, n in log.most_common(4))
    more = sum(log.values()) - sum(n for _, n in log.most_common(4))
    return shown + (f"; {more} more" if more else "")


def _n(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def summary_table(results: list[ScaleResult]) -> str:
    header = ("| Threads | Correct | Ack p95 | Placeholder p95 | First text p50 / p95 | Update gap (median) p50 "
              "| Longest gap max | Final latency p50 / p95 | `chat.update`/min | 429s | Bot CPU | Bot peak RSS |")
    lines = [header, "|" + "---:|" * 12]
    for r in results:
        t = r.threads
        first, final = _collect(t, "first_text"), _collect(t, "final_latency")
        lines.append(
            f"| {r.workload.threads} | {len(t) - len(r.failures)}/{len(t)} "
            f"| {_ms(percentile([a for x in t for a in x.acks], 95))} "
            f"| {_s(percentile(_collect(t, 'placeholder'), 95))} "
            f"| {_s(percentile(first, 50))} / {_s(percentile(first, 95))} "
            f"| {_s(percentile([statistics.median(x.gaps) for x in t if x.gaps], 50))} "
            f"| {_s(max((max(x.gaps) for x in t if x.gaps), default=float('nan')))} "
            f"| {_s(percentile(final, 50))} / {_s(percentile(final, 95))} "
            f"| {r.update_calls / (r.wall / 60):.1f} | {sum(r.rate_limited.values())} "
            f"| {r.bot_cpu_load:.1f} s | {r.bot_rss_mb:.0f} MB |"
        )
    return "\n".join(lines)


def observations(results: list[ScaleResult]) -> list[str]:
    """A few facts read off the figures (where the time goes, limits hit)."""
    notes: list[str] = []
    for r in results:
        t = r.threads
        req, vis = percentile(_collect(t, "to_request"), 50), percentile(_collect(t, "chunk_to_visible"), 50)
        final = percentile(_collect(t, "final_latency"), 50)
        busy = (r.bot_cpu_load + r.doubles_cpu + r.sandbox_cpu) / r.wall
        note = (f"{r.workload.threads} threads: Claude's request reached the API {_s(req)} after the mention (p50: "
                f"sandbox creation + Claude Code start-up), the first chunk became visible {_s(vis)} after it was "
                f"sent, and the finished answer showed {_s(final)} after its last chunk (p50). "
                f"{r.update_calls} `chat.update` calls in {r.wall:.0f} s ({r.update_calls / (r.wall / 60):.0f}/min; "
                f"at most {r.update_peak_minute} in any 60 s, where Slack allows {slack_limits()['update']} after a "
                f"burst of {slack_limits()['burst']}); "
                f"{busy:.2f} of {os.cpu_count()} cores busy on average "
                f"(Claude Code CLIs {r.sandbox_cpu:.0f} s, doubles {r.doubles_cpu:.0f} s, bot {r.bot_cpu_load:.0f} s CPU).")
        if r.rate_limited:
            note += " 429s: " + ", ".join(f"{m} ×{n}" for m, n in sorted(r.rate_limited.items())) + "."
        if r.redelivered:
            note += f" {r.redelivered} envelopes were redelivered (acked too late)."
        if set(r.requests_per_thread) - {1}:
            note += f" Claude requests per prompt: {dict(r.requests_per_thread)}."
        notes.append(note)
    return notes


def machine() -> str:
    return (f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores")


def slack_limits() -> dict[str, int]:
    """The Slack double's limits that shape this workload (requests per minute, burst)."""
    import inspect

    from tests.doubles.slack import DEFAULT_RATE_LIMITS, SlackDouble

    burst = inspect.signature(SlackDouble.__init__).parameters["burst"].default
    return {"update": DEFAULT_RATE_LIMITS["chat.update"], "post": DEFAULT_RATE_LIMITS["chat.postMessage"],
            "reactions": DEFAULT_RATE_LIMITS["reactions.add"], "burst": burst}


def channel_choice(workload: Workload) -> str:
    limits = slack_limits()
    return (f"Channels: {workload.threads_per_channel} threads per channel, because the Slack double (like Slack) "
            f"allows `chat.postMessage` {limits['post']}/min per channel with bursts of {limits['burst']}: that many "
            "placeholders post at once, more in one channel would wait for the limit (429 + Retry-After), and the "
            "time to placeholder would measure the limit rather than the bot.")


def export_revision(revision: str) -> tuple[Path, str]:
    """`git archive` of `revision` of this repository into a temporary directory; (directory, full sha)."""
    sha = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--verify", f"{revision}^{{commit}}"],
                         capture_output=True, text=True, timeout=30, check=True).stdout.strip()
    target = Path(tempfile.mkdtemp(prefix="maison-load-src-"))
    archive = subprocess.run(["git", "-C", str(REPO), "archive", "--format=tar", sha],
                             capture_output=True, timeout=120, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(target, filter="data")
    return target, sha


def source_revision(args: argparse.Namespace) -> str:
    """Where the bot came from: a commit (`--revision`), or a directory with its git state."""
    if args.revision:
        return f"commit {args.revision_sha[:10]} (`--revision {args.revision}`, without uncommitted changes)"
    source = args.source
    try:
        commit = subprocess.run(["git", "-C", str(source), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(source), "status", "--porcelain", "--", "maison_slack"],
                               capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return f"a copy named `{source.name}` (not a git checkout)"  # never a machine path in the results
    return f"the working tree at {commit}" + (" with uncommitted changes to `maison_slack/`" if dirty else "")


def markdown(results: list[ScaleResult], args: argparse.Namespace, cli_version: str) -> str:
    w = results[0].workload
    limits = slack_limits()
    overrides = ", ".join(f"`{item}`" for item in args.bot_env) or "none"
    parts = [
        "# Load benchmark: maison-slack under concurrent threads",
        "",
        f"Generated by `python bench/load_bench.py {' '.join(sys.argv[1:])}`".rstrip() +
        f" on {time.strftime('%Y-%m-%d %H:%M')} ({machine()}).",
        "",
        f"Workload, per scale (one fresh bot, doubles and database each): N threads started by mentions within "
        f"{w.spread:g} s, each answered with {w.describe_answer()}. Scales: "
        f"{', '.join(str(r.workload.threads) for r in results)} threads.",
        "",
        f"The bot, from {source_revision(args)}, runs as `python -m maison_slack` in a subprocess, "
        f"configured like the tests' `BotEnv.env()` (`MAISON_EDIT_INTERVAL=0.2`, other settings at their "
        f"defaults; overrides: {overrides}), against the Slack, Daytona and Anthropic doubles of `tests/doubles/` "
        f"in the benchmark's process; sandboxes run the real Claude Code CLI {cli_version}. The Slack double "
        f"enforces Slack's limits: `chat.update` {limits['update']}/min for the app, `reactions.add` "
        f"{limits['reactions']}/min, `chat.postMessage` {limits['post']}/min per channel, bursts of {limits['burst']}.",
        "",
        channel_choice(w),
        "",
        "## Summary",
        "",
        summary_table(results),
        "",
        *(f"* {note}" for note in observations(results)),
        "",
        "## Per scale",
        "",
    ]
    for r in results:
        parts += [scale_table(r), ""]
    parts += [
        "## How to read it",
        "",
        "* Latencies are per thread, p50 / p95 / max over the threads of a scale (ack latency: over both "
        "envelopes of every mention). Times come from the doubles' own records on one monotonic clock.",
        "* *Time to first visible text* is mention → the first version of the thread showing the answer's first "
        "word; the two *of which* rows split it into the bot's work before Claude runs (sandbox, CLI start-up) "
        "and the streaming path (CLI → bot → `chat.update`).",
        "* *Visible-update gap*: gaps between successive successful posts/edits that changed what the thread "
        "shows (status line or answer), from the placeholder to the final edit; per thread its median and its "
        "longest gap. A reply whose answer only appears in the final edit did not visibly stream.",
        "* *Final answer latency*: the Anthropic double sending the answer's last chunk → the edit showing the "
        "footer. It includes Claude Code finishing the run and the bot waiting for its edit budget.",
        "* *Correct* means the final reply shows every word of that thread's answer, in order, and no word of "
        "another thread, with the success footer; Claude Code got exactly one request per prompt.",
        "",
    ]
    return "\n".join(parts)


# ============================================================================ main


def check_clocks() -> None:
    """The Anthropic double stamps with perf_counter(), the Slack double with monotonic()."""
    perf, mono = time.get_clock_info("perf_counter").implementation, time.get_clock_info("monotonic").implementation
    if perf != mono or abs(time.perf_counter() - time.monotonic()) > 0.001:
        raise SystemExit(f"perf_counter ({perf}) and monotonic ({mono}) are different clocks here")


async def bench(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(args.source))
    os.environ.clear()
    os.environ.update(clean_env())  # the SDKs and the CLI must reach only the doubles
    from tests.claude_cli import CLAUDE_CODE_VERSION, ensure_claude_cli

    check_clocks()
    task = asyncio.current_task()
    assert task is not None
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
    claude_bin = ensure_claude_cli()
    results: list[ScaleResult] = []
    for count in args.threads:
        workload = Workload(count, args.answer_seconds, args.chunk_interval, args.threads_per_channel, args.spread)
        print(f"\n== {workload.describe()}\n   {channel_choice(workload)}", flush=True)
        started = time.monotonic()
        result = await run_scale(workload, args, claude_bin)
        results.append(result)
        print(f"  done in {time.monotonic() - started:.0f} s\n\n{scale_table(result)}", flush=True)
        for failure in result.failures[:5]:
            print(f"  thread {failure.index} ({failure.channel} {failure.ts}): {failure.failure}")

    print("\n## Summary\n\n" + summary_table(results) + "\n")
    for note in observations(results):
        print(f"* {note}")
    if args.write:
        RESULTS_MD.write_text(markdown(results, args, CLAUDE_CODE_VERSION))
        print(f"\nWrote {RESULTS_MD.relative_to(REPO)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", default="5,20,50", help="concurrent thread counts, comma-separated (%(default)s)")
    parser.add_argument("--answer-seconds", type=float, default=20, help="how long each answer streams (%(default)s)")
    parser.add_argument("--chunk-interval", type=float, default=0.15,
                        help="seconds between the Anthropic double's SSE frames, one word each (%(default)s)")
    parser.add_argument("--threads-per-channel", type=int, default=5, help="mentions per channel (%(default)s)")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds over which the mentions are sent")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds to wait for the replies per scale (default: 120 + 2 × answer + 6 × threads)")
    parser.add_argument("--bot-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the bot, e.g. MAISON_EDIT_INTERVAL=1.5 (repeatable)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path, default=REPO,
                       help="checkout whose bot and doubles to run (default: this one, as it is on disk)")
    where.add_argument("--revision", help="run the bot and doubles of this commit of the repository instead "
                                          "(exported with `git archive` to a temporary directory)")
    parser.add_argument("--quick", action="store_true", help="smoke run: 3 threads, 5-second answers, no file")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write bench/LOAD_RESULTS.md (default: yes, except with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.answer_seconds = "3", min(args.answer_seconds, 5)
    args.threads = [int(n) for n in str(args.threads).split(",") if n.strip()]
    if not args.threads or min(args.threads) < 1 or args.threads_per_channel < 1:
        parser.error("--threads and --threads-per-channel must be positive")
    if any("=" not in item for item in args.bot_env):
        parser.error("--bot-env takes NAME=VALUE")
    args.write = not args.quick if args.write is None else args.write
    args.source = args.source.resolve()
    return args


def main() -> None:
    args = parse_args()
    exported: Path | None = None
    args.revision_sha = ""
    if args.revision:
        exported, args.revision_sha = export_revision(args.revision)
        args.source = exported
    try:
        asyncio.run(bench(args))
    except (KeyboardInterrupt, asyncio.CancelledError):
        print("\nInterrupted: every process and server the benchmark started is stopped.", file=sys.stderr)
        sys.exit(130)
    finally:
        if exported is not None:
            shutil.rmtree(exported, ignore_errors=True)


if __name__ == "__main__":
    main()
