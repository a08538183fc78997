#!/usr/bin/env python
"""Load benchmark: the bot's three reply modes side by side, many threads at once, as people see them.

    python bench/load_bench.py                      # 5, 20 and 50 threads, each in modes edits, native, auto
    python bench/load_bench.py --quick              # smoke run: 4 threads, 5-second answers, every mode
    python bench/load_bench.py --modes edits        # one mode only (comma-separated: edits,native,auto)
    python bench/load_bench.py --revision HEAD      # the committed bot, not the working tree

Reply modes (the bot's `MAISON_STREAMING`, set per run; a bot that does not know it ignores it):

* `edits`: a placeholder (`chat.postMessage`) edited as the answer grows (`chat.update`). The
  baseline: the other modes are given as ratios to it.
* `native`: the answer streamed into a Slack streaming message (`chat.startStream`, then
  `chat.appendStream` with `markdown_text` / `task_update` chunks, `chat.stopStream`), the status
  shown under the thread with `assistant.threads.setStatus` before text arrives
  (../shared/reference/slack.md §9, §13-§16).
* `auto`: native in DMs (channel ids starting with `D`), edits in channel threads.

For each scale N and mode the benchmark starts, in this process, the Slack, Daytona and Anthropic
doubles of `tests/doubles/`, and a fresh bot as a subprocess (`python -m maison_slack`, configured
like `tests/bot_harness.BotEnv.env()` plus `MAISON_STREAMING=<mode>`), so the bot's own CPU time
and peak RSS can be read from `/proc/<pid>/stat` and `/proc/<pid>/status`. Sandboxes run the real
Claude Code CLI, whose requests the Anthropic double answers. Then N people write to the bot
within about a second, each starting a thread of their own, and the benchmark waits until every
reply is final.

Workload mix (the same in every mode, so the modes are comparable): `--dm-share` (default half)
of the N people write to the bot in their own DM (`D0LOAD007`; a plain message, no mention
needed), the others mention it in a channel, each starting a new thread there; DM and channel
threads alternate in the order they are sent. Every thread has its own person (`U0LOAD007`), who
is the viewer the figures are measured for: in a channel thread only the stream's recipient sees a
native stream arrive live (reference §13.2), so "visible" means visible to the thread's author.

Every prompt carries its thread's number (`LOADBENCH-7`) and the Anthropic double answers it
with one text block streamed as small `text_delta`s, one every `--chunk-interval` (150 ms) for
about `--answer-seconds`. Each chunk is one word that names its thread and its position
(`t007w0042`), so an answer can be checked word for word and every chunk's emit time (the
double's `emitted` log) is known per thread.

What a thread shows, at every moment: its bot replies (deleted ones until their deletion),
each as the author saw it then (the Slack double's `visible_to(message, author, at)`, which
reads `Message.versions` and, for a stream, its state: live to the recipient and in DMs, first
chunk only to other channel members until it stops), joined, plus the thread's status line
(`status_history`, the double's record of `assistant.threads.setStatus`, cleared by a reply or
expiry). A *visible update* is a moment where that changed (changes less than 50 ms apart, such as a
stream's start and the status line it clears, count as one).

Why these figures (p50 / p95 / max over the threads):

* ack latency: Slack redelivers an event that is not acked within 3 s; a bot busy with 50
  runs must still ack at once (a mention has two envelopes, `app_mention` and `message`; a DM one).
* time to first response: message -> the first thing the bot shows in the thread (a placeholder,
  a status line or a stream).
* time to first visible text: message -> the first moment the author sees the answer's first
  word. It contains sandbox creation and Claude Code's start-up; the phase rows split it
  (message -> Claude's request reaches the Anthropic double; first chunk sent -> visible).
* visible updates per thread per minute: (visible states - 1) / (first response -> final answer),
  i.e. how lively the reply looks; and the longest gap between visible updates per thread (a long
  gap is a reply that looks stuck).
* final answer latency: the Anthropic double sending the answer's last chunk -> the author seeing
  the footer (`:white_check_mark: ...`), i.e. how long the finished answer waits.
* API calls per method per minute and 429s, for the methods a reply uses (`chat.postMessage`,
  `chat.update`, `chat.startStream`, `chat.appendStream`, `chat.stopStream`,
  `assistant.threads.setStatus`, `reactions.*`): the Slack double enforces Slack's limits
  (`chat.update` ~50/min and `chat.startStream` / `chat.stopStream` ~20/min for the whole app,
  reference §16), so under load updates must be shared, not lost.
* bot CPU seconds (utime + stime of the bot and its children) and peak RSS (VmHWM).
* correctness: at the end every thread shows its whole answer word for word, each word exactly
  once and in order (a streamed answer may span several messages after a rollover), nothing of
  another thread, and the footer; a bystander of a channel thread sees the same final text; Claude
  Code got exactly one request per prompt.

Everything is computed from what the doubles recorded (`SlackDouble.calls`: method, args, time,
ok; messages with their `versions` and stream state; deleted messages; status changes;
`envelopes` and `acks`; the Anthropic double's `emitted`). All timestamps are `CLOCK_MONOTONIC`
(`time.monotonic()` in the Slack double, `time.perf_counter()` in the Anthropic double; the
script checks they are one clock).

Channels: the Slack double, like Slack, limits `chat.postMessage` to ~1 per second per channel
with bursts of 5. With 25 channel threads in one channel, time to first response would measure
that limit rather than the bot, so channel threads are spread over channels,
`--threads-per-channel` (default 5, the burst) per channel. Each DM is a channel of its own.

Results go to stdout and (except with `--quick`) to `bench/LOAD_RESULTS.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
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
CUT = re.compile(r"(?<=[0-9a-z])\n(?=[0-9a-z])")  # two messages joined inside a word
FOOTER = ":white_check_mark:"  # the final state of a successful run shows this footer
WARNING = ":warning:"  # a run that failed ends with this instead
BYSTANDER = "U0BYSTANDER"  # another member of every channel: what does the channel see at the end?
MODES = ("edits", "native", "auto")
BASELINE = "edits"
#: The methods a reply uses, always shown in the API-call tables (others are shown if called).
REPLY_METHODS = ("chat.postMessage", "chat.update", "chat.startStream", "chat.appendStream", "chat.stopStream",
                 "assistant.threads.setStatus", "reactions.add", "reactions.remove")
#: SSE frames of a one-block answer around its text deltas: message_start, ping,
#: content_block_start, content_block_stop, message_delta, message_stop. The double sleeps
#: `delay` before every frame but the first.
FRAMES_AROUND_TEXT = 6
#: Changes of what a thread shows less than this many seconds apart are one visible update (a reply
#: posted and the status line it clears; a message edited and its continuation posted).
SIMULTANEOUS = 0.05
CLK_TCK = os.sysconf("SC_CLK_TCK")
LOG_PROBLEM = re.compile(r"\b(WARNING|ERROR|CRITICAL) .*")


# ============================================================================ workload


@dataclass(frozen=True)
class Workload:
    """N threads (part in DMs, part in channel threads), each answered with one streamed text of
    distinct, numbered words."""

    threads: int
    answer_seconds: float
    chunk_interval: float
    threads_per_channel: int
    spread: float  # seconds over which the N first messages are sent
    dm_share: float = 0.5  # fraction of the threads that are DMs

    @property
    def chunks(self) -> int:
        return max(1, round(self.answer_seconds / self.chunk_interval) - (FRAMES_AROUND_TEXT - 1))

    def is_dm(self, thread: int) -> bool:
        """DM and channel threads interleaved evenly (thread 1 is the first DM at a share of 1/2)."""
        per_mille = round(self.dm_share * 1000)
        return (thread + 1) * per_mille // 1000 > thread * per_mille // 1000

    @property
    def dms(self) -> int:
        return sum(self.is_dm(i) for i in range(self.threads))

    @property
    def channels(self) -> int:
        """Channels (not DMs) the channel threads are spread over."""
        return math.ceil((self.threads - self.dms) / self.threads_per_channel)

    def channel(self, thread: int) -> str:
        if self.is_dm(thread):
            return f"D0LOAD{thread:03d}"  # the DM of this thread's person with the bot
        rank = sum(not self.is_dm(i) for i in range(thread))  # among the channel threads
        return f"C0LOAD{rank // self.threads_per_channel:03d}"

    @staticmethod
    def user(thread: int) -> str:
        return f"U0LOAD{thread:03d}"

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

    def describe_mix(self) -> str:
        return (f"{self.dms} in DMs (a plain message, one DM per person) and {self.threads - self.dms} in channel "
                f"threads (a mention starting a new thread, {self.threads_per_channel} per channel, "
                f"{self.channels} channel(s)), interleaved")

    def describe(self) -> str:
        return (f"{self.threads} threads started within {self.spread:g} s, {self.describe_mix()}; each answer is "
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
    """What one thread showed its author at one moment."""

    time: float
    text: str  # every bot reply of the thread as the author saw it then, joined
    status: str  # the status line under the thread (assistant.threads.setStatus), "" if none

    @property
    def shown(self) -> tuple[str, str]:
        return self.text, self.status


# Doubles of older revisions (`--revision`) have no streaming surface: what a message shows is then
# its last version, and there is no status line.
def _stream(msg: Any) -> Any:
    return getattr(msg, "stream", None)


def _visible(slack: Any, msg: Any, viewer: str, at: float | None = None) -> str:
    """What `viewer` saw of `msg` at `at` (default: now): the double's `visible_to`."""
    if hasattr(slack, "visible_to"):
        return str(slack.visible_to(msg, viewer, at=at))
    t = time.monotonic() if at is None else at
    return next((text for when, text in reversed(msg.versions) if when <= t), "")


def _status_history(slack: Any, channel: str, thread_ts: str) -> list[Any]:
    return list(slack.status_history(channel, thread_ts)) if hasattr(slack, "status_history") else []


def _thread_status(slack: Any, channel: str, thread_ts: str) -> str:
    return str(slack.thread_status(channel, thread_ts)) if hasattr(slack, "thread_status") else ""


def bot_replies(slack: Any, channel: str, thread_ts: str) -> list[tuple[Any, float]]:
    """The bot's replies in a thread, deleted ones included, each with when it was deleted
    (`inf` if it is still there), in the order they were posted."""
    deleted_at = {str(c.args.get("ts")): c.done or c.time for c in list(slack.calls)
                  if c.method == "chat.delete" and c.ok and c.args.get("channel") == channel}
    live = [(m, math.inf) for m in slack.thread(channel, thread_ts) if m.is_bot and m.ts != thread_ts]
    gone = [(m, deleted_at.get(m.ts, -math.inf)) for m in list(getattr(slack, "deleted", []))
            if m.channel == channel and m.thread_ts == thread_ts and m.is_bot and m.ts != thread_ts]
    return sorted(live + gone, key=lambda pair: float(pair[0].ts))


def thread_views(slack: Any, channel: str, thread_ts: str, viewer: str) -> list[View]:
    """The thread as `viewer` saw it at every moment something in it changed, oldest first.

    The moments: each version of each bot reply (a post, an edit, a stream's start, appends and
    stop), a stream's end (when a channel's other members get to see it whole), a deletion and
    each change of the status line. Text per reply is the double's `visible_to(message, viewer, at)`.
    """
    replies = bot_replies(slack, channel, thread_ts)
    statuses = _status_history(slack, channel, thread_ts)
    points: set[float] = {s.time for s in statuses}
    for msg, gone in replies:
        points.update(when for when, _ in msg.versions)
        stream = _stream(msg)
        if stream is not None and stream.ended is not None:
            points.add(stream.ended)
        if math.isfinite(gone):
            points.add(gone)
    views: list[View] = []
    for t in sorted(points):
        texts = [_visible(slack, msg, viewer, t) for msg, gone in replies
                 if msg.versions and msg.versions[0][0] <= t < gone]
        status = next((s.status for s in reversed(statuses) if s.time <= t), "")
        views.append(View(t, "\n".join(texts), status))
    return views


def shown_now(slack: Any, channel: str, thread_ts: str, viewer: str) -> tuple[str, bool]:
    """(what `viewer` sees of the thread's bot replies now, whether a reply still runs: a Stop
    button or a stream not stopped yet)."""
    replies = [m for m in slack.thread(channel, thread_ts) if m.is_bot and m.ts != thread_ts]
    text = "\n".join(_visible(slack, m, viewer) for m in replies)
    running = any(b.get("type") == "actions" for m in replies for b in m.blocks) or \
        any(_stream(m) is not None and _stream(m).streaming for m in replies)
    return text, running


def settled(slack: Any, channel: str, thread_ts: str, viewer: str) -> bool:
    """The thread shows `viewer` a final reply: the footer, or a warning with nothing running."""
    text, running = shown_now(slack, channel, thread_ts, viewer)
    return FOOTER in text or (WARNING in text and not running)


# ============================================================================ measuring one run


@dataclass
class ThreadResult:
    index: int
    channel: str
    ts: str
    user: str  # the author: the viewer every figure is measured for
    dm: bool
    mentioned: float
    acks: list[float] = field(default_factory=list)  # seconds, every envelope of the first message
    first_response: float | None = None  # -> first bot message or status line
    first_text: float | None = None  # -> the author sees the answer's first word
    gaps: list[float] = field(default_factory=list)  # between visible changes, first response -> final
    updates_per_min: float | None = None  # (visible states - 1) per minute, first response -> final
    streamed: bool = False  # part of the answer was visible before the final state
    path: str = ""  # "streamed" (chat.startStream), "whole" (one message, only at the end) or "edited"
    messages: int = 0  # bot messages in the thread at the end
    final_latency: float | None = None
    to_request: float | None = None  # message -> Claude's request at the Anthropic double
    chunk_to_visible: float | None = None  # first chunk emitted -> first visible text
    status_left: str = ""  # the status line still shown after the final answer
    blank: float = 0.0  # seconds the thread showed nothing (no reply, no status) after the first response
    failure: str | None = None

    @property
    def kind(self) -> str:
        return "DM" if self.dm else "channel"

    @property
    def native(self) -> bool:
        return self.path == "streamed"


@dataclass
class MethodStats:
    calls: int = 0
    limited: int = 0  # answered 429
    failed: Counter[str] = field(default_factory=Counter)  # other errors, by Slack's error string
    peak_minute: int = 0  # most calls in any 60 s


@dataclass
class RunResult:
    workload: Workload
    mode: str
    threads: list[ThreadResult]
    wall: float  # first message -> last thread settled (or timeout)
    methods: dict[str, MethodStats]
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

    @property
    def label(self) -> str:
        return f"{self.workload.threads} threads, {self.mode}"

    def per_minute(self, method: str) -> float:
        stats = self.methods.get(method)
        return (stats.calls if stats else 0) / (self.wall / 60)

    @property
    def limited(self) -> int:
        return sum(s.limited for s in self.methods.values())

    @property
    def reply_calls_per_minute(self) -> float:
        return sum(self.per_minute(m) for m in REPLY_METHODS)


def emitted_by_thread(emitted: list[tuple[float, str]]) -> dict[int, list[float]]:
    """Emit time of every answer chunk, per thread (each chunk is one `tNNNwNNNN` word)."""
    times: dict[int, list[float]] = defaultdict(list)
    for stamp, delta in emitted:
        for thread, _ in WORD.findall(delta):
            times[int(thread)].append(stamp)
    return times


def _excerpt(text: str, at: int, width: int = 40) -> str:
    return repr(text[max(0, at - width):at + width])


def check_answer(workload: Workload, thread: int, final_text: str) -> str | None:
    """None if `final_text` holds the whole answer word for word, each word exactly once and in
    order, and nothing from another thread; else what is wrong, precisely."""
    found = [(int(t), int(i)) for t, i in WORD.findall(final_text)]
    strangers = sorted({t for t, _ in found} - {thread})
    if strangers:
        return f"words of other threads shown: {strangers[:5]}"
    mine = [i for _, i in found]
    expected = list(range(1, workload.chunks + 1))
    answer = workload.answer(thread)
    if mine == expected and answer in " ".join(final_text.split()):
        return None
    counts = Counter(mine)
    missing = sorted(set(expected) - set(counts))
    repeated = sorted(i for i, n in counts.items() if n > 1)
    cut = CUT.search(final_text)
    if cut and [int(i) for t, i in WORD.findall(CUT.sub("", final_text))] == expected:  # whole once glued
        return f"a word cut in two across messages at {_excerpt(final_text, cut.start())}"
    if missing or repeated:
        parts = []
        if missing:
            parts.append(f"{len(missing)}/{workload.chunks} words missing (first: w{missing[0]})")
        if repeated:
            parts.append(f"{len(repeated)} words shown more than once (first: w{repeated[0]}, "
                         f"{counts[repeated[0]]}×)")
        return "answer not shown exactly once: " + ", ".join(parts)
    if mine != expected:
        wrong = next(k for k, (a, b) in enumerate(zip(mine, expected)) if a != b)
        return f"answer's words out of order from word {wrong + 1}"
    # Every word once and in order, but not the answer's text: something sits inside the
    # answer (e.g. a word cut in two at a message boundary, or markup between words).
    flat = " ".join(final_text.split())
    start = flat.find(workload.first_word(thread))
    at = next((start + k for k, (a, b) in enumerate(zip(flat[start:], answer)) if a != b), start)
    return f"answer's text altered at {_excerpt(flat, at)}"


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
    replies = [m for m, gone in bot_replies(slack, result.channel, result.ts) if not math.isfinite(gone)]
    streamed = any(_stream(m) is not None for m, _ in bot_replies(slack, result.channel, result.ts))
    result.messages = len(replies)
    result.status_left = _thread_status(slack, result.channel, result.ts)
    views = thread_views(slack, result.channel, result.ts, result.user)
    start = next((i for i, v in enumerate(views) if v.text.strip() or v.status), None)
    if start is None:
        result.failure = "no reply"
        return
    result.first_response = views[start].time - result.mentioned
    shown = next((v.text for v in views if v.text.strip()), "")
    result.path = "streamed" if streamed else "whole" if FOOTER in shown or WARNING in shown else "edited"
    first_word = workload.first_word(result.index)
    first = next((i for i, v in enumerate(views) if first_word in v.text), None)
    final = next((i for i, v in enumerate(views) if FOOTER in v.text), None)
    if first is not None:
        result.first_text = views[first].time - result.mentioned
        if chunks:
            result.chunk_to_visible = views[first].time - chunks[0]
    end = len(views) - 1 if final is None else final
    changes = [views[start]]
    for view in views[start + 1:end + 1]:
        if view.shown == changes[-1].shown:
            continue
        if view.time - changes[-1].time < SIMULTANEOUS:  # e.g. a stream's start and the status it clears
            changes[-1] = View(changes[-1].time, view.text, view.status)
        else:
            changes.append(view)
    result.gaps = [b.time - a.time for a, b in zip(changes, changes[1:])]
    blanks = [b.time - a.time for a, b in zip(views[start:end], views[start + 1:end + 1])
              if not a.text.strip() and not a.status]
    result.blank = sum(b for b in blanks if b >= SIMULTANEOUS)  # not a status cleared by the reply itself
    span = changes[-1].time - changes[0].time
    if span > 0:
        result.updates_per_min = (len(changes) - 1) / (span / 60)
    result.streamed = first is not None and first != final
    text, running = shown_now(slack, result.channel, result.ts, result.user)
    if final is None:
        result.failure = "no final reply" if running else \
            f"ended without the footer: {text.strip().splitlines()[-1][:120] if text.strip() else '(empty)'}"
        return
    if chunks:
        result.final_latency = views[final].time - chunks[-1]
    if len(requests) != 1:
        result.failure = f"{len(requests)} Claude requests for one prompt"
    elif len(chunks) != workload.chunks:
        result.failure = f"{len(chunks)}/{workload.chunks} chunks sent by the Anthropic double"
    elif FOOTER not in text:
        result.failure = "the footer was shown, then taken away"
    else:
        result.failure = check_answer(workload, result.index, text)
    unstopped = [m for m in replies if _stream(m) is not None and _stream(m).streaming]
    if result.failure is None and unstopped:
        result.failure = f"{len(unstopped)} streamed message(s) never stopped (Slack would expire them)"
    if result.failure is None and not result.dm:
        seen, _ = shown_now(slack, result.channel, result.ts, BYSTANDER)
        if seen != text:
            words = len(WORD.findall(seen))
            result.failure = (f"another member of the channel sees a different final reply ({words} answer words, "
                              f"{'with' if FOOTER in seen else 'without'} the footer)")


def method_stats(slack: Any, start: float, end: float) -> dict[str, MethodStats]:
    """Web API calls made in [start, end], per method."""
    stats: dict[str, MethodStats] = defaultdict(MethodStats)
    times: dict[str, list[float]] = defaultdict(list)
    for call in list(slack.calls):
        if not start <= call.time <= end:
            continue
        s = stats[call.method]
        s.calls += 1
        times[call.method].append(call.time)
        if call.status == 429:
            s.limited += 1
        elif not call.ok:
            s.failed[call.error or f"HTTP {call.status}"] += 1
    for method, stamps in times.items():
        low = 0
        for high, stamp in enumerate(stamps):
            while stamps[low] < stamp - 60:
                low += 1
            stats[method].peak_minute = max(stats[method].peak_minute, high - low + 1)
    return dict(stats)


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
    """Wait until every thread shows its author a final reply; return when the last one did (monotonic)."""
    deadline = time.monotonic() + timeout
    pending = {t.index: t for t in threads}
    last_report = time.monotonic()
    last_settled = time.monotonic()
    while pending and time.monotonic() < deadline and bot.alive:
        for index, thread in list(pending.items()):
            if settled(slack, thread.channel, thread.ts, thread.user):
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


async def start_all(slack: Any, workload: Workload) -> list[ThreadResult]:
    """N people write to the bot, each starting a thread, evenly over `workload.spread` seconds:
    a plain message in their DM, or a mention in a channel."""
    threads: list[ThreadResult] = []
    for index in range(workload.threads):
        channel, user, dm = workload.channel(index), workload.user(index), workload.is_dm(index)
        mentioned = time.monotonic()
        if dm:
            ts = await slack.post_message(user, channel, workload.prompt(index))
        else:
            ts = await slack.mention(user, channel, workload.prompt(index))
        threads.append(ThreadResult(index, channel, ts, user, dm, mentioned))
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


def summarize(workload: Workload, mode: str, threads: list[ThreadResult], slack: Any, anthropic: Any,
              responder: Responder, bot: BotProcess, before: CpuMark, after: CpuMark, end: float) -> RunResult:
    chunks = emitted_by_thread(list(anthropic.emitted))
    for thread in threads:
        measure_thread(thread, workload, slack, sorted(chunks.get(thread.index, [])),
                       responder.requests.get(thread.index, []))
    envelopes = [e for e in slack.envelopes.values() if e.created <= end]  # not the bot's shutdown
    return RunResult(
        workload=workload,
        mode=mode,
        threads=threads,
        wall=end - threads[0].mentioned,
        methods=method_stats(slack, threads[0].mentioned, end),
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


async def run_one(workload: Workload, mode: str, args: argparse.Namespace, claude_bin: Path) -> RunResult:
    """One fresh set of doubles, bot (in `mode`) and database; N threads; the figures."""
    responder = Responder(workload)
    workdir = Path(tempfile.mkdtemp(prefix="maison-load-"))
    keep = False
    try:
        async with doubles(responder, claude_bin) as (slack, daytona, anthropic):
            env = clean_env()
            env.update(bot_env(slack, daytona, anthropic, workdir / "maison.db"))
            env.update(dict(item.split("=", 1) for item in args.bot_env))
            env["MAISON_STREAMING"] = mode
            env["PYTHONPATH"] = str(args.source)
            bot = await BotProcess.start(env, args.source, workdir)
            try:
                await wait_connected(slack, bot, 60)
                await asyncio.sleep(1.0)  # let the bot finish starting (reaper, recovery) before timing
                before = CpuMark.now(bot)
                threads = await start_all(slack, workload)
                timeout = args.timeout or 120 + 2 * workload.answer_seconds + 6 * workload.threads
                end = await wait_settled(slack, bot, threads, timeout)
                with contextlib.suppress(TimeoutError):  # what Slack is still answering lands before measuring
                    await slack.wait_for(lambda: all(getattr(c, "done", 0) is not None for c in slack.calls), 10)
                await asyncio.sleep(0.5)  # the echoes of the last updates get acked
                after = CpuMark.now(bot)
            except BaseException as exc:
                keep = not isinstance(exc, (asyncio.CancelledError, KeyboardInterrupt))  # errors: keep the log
                raise
            finally:
                await bot.stop()
            result = summarize(workload, mode, threads, slack, anthropic, responder, bot, before, after, end)
            keep = bool(result.failures) or bool(result.bot_log.keys() - {BOLT_TOKEN_WARNING})
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


def _n(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.0f}"


def _f1(value: float) -> str:
    return "–" if math.isnan(value) else f"{value:.1f}"


def _row(name: str, values: list[float], fmt: Any = _s) -> str:
    return f"| {name} | {fmt(percentile(values, 50))} | {fmt(percentile(values, 95))} | " \
           f"{fmt(max(values) if values else float('nan'))} | {len(values)} |"


def _collect(threads: list[ThreadResult], name: str) -> list[float]:
    return [v for t in threads if (v := getattr(t, name)) is not None]


def _longest(threads: list[ThreadResult]) -> list[float]:
    return [max(t.gaps) for t in threads if t.gaps]


def _max(values: list[float]) -> float:
    return max(values) if values else float("nan")


def _p(values: list[float], q: float) -> float:
    return _max(values) if q == 100 else percentile(values, q)


#: The headline figures, compared across modes: (name, per-thread values, percentile, format);
#: lower is better for all but the updates per minute.
HEADLINES: list[tuple[str, Any, float, Any]] = [
    ("First text p50", lambda r: _collect(r.threads, "first_text"), 50, _s),
    ("First text p95", lambda r: _collect(r.threads, "first_text"), 95, _s),
    ("Updates/thread/min p50", lambda r: _collect(r.threads, "updates_per_min"), 50, _f1),
    ("Longest gap p50", lambda r: _longest(r.threads), 50, _s),
    ("Longest gap max", lambda r: _longest(r.threads), 100, _s),
    ("Final latency p50", lambda r: _collect(r.threads, "final_latency"), 50, _s),
    ("Final latency p95", lambda r: _collect(r.threads, "final_latency"), 95, _s),
]


def headline(r: RunResult, name: str) -> float:
    for label, values, q, _ in HEADLINES:
        if label == name:
            return _p(values(r), q)
    if name == "Reply API calls/min":
        return r.reply_calls_per_minute
    if name == "429s":
        return float(r.limited)
    raise KeyError(name)


def _ratio(value: float, base: float) -> str:
    if math.isnan(value) or math.isnan(base):
        return "–"
    if base == 0:
        return "=" if value == 0 else "∞"
    return f"{value / base:.2f}×"


def _paths(threads: list[ThreadResult]) -> str:
    whole = sum(t.path == "whole" for t in threads)
    return f"{sum(t.native for t in threads)}/{len(threads)}" + (f" (+{whole} whole)" if whole else "")


def native_count(threads: list[ThreadResult]) -> str:
    """Streamed replies (and replies posted whole at the end), DM / channel threads."""
    return f"{_paths([t for t in threads if t.dm])} / {_paths([t for t in threads if not t.dm])}"


EXPECTED_PATH = {"edits": "edited everywhere", "native": "streamed (or posted whole) everywhere",
                 "auto": "streamed (or posted whole) in DMs, edited in channel threads"}


def path_expected(mode: str, thread: ThreadResult) -> bool:
    """A native reply has no placeholder: streamed, or posted whole if it never got to stream."""
    native = mode == "native" or (mode == "auto" and thread.dm)
    return thread.path in (("streamed", "whole") if native else ("edited",))


def _calls_cell(r: RunResult, method: str) -> str:
    s = r.methods.get(method)
    if s is None or not s.calls:
        return "–"
    cell = f"{r.per_minute(method):.1f} (peak {s.peak_minute})"
    if s.limited:
        cell += f", **{s.limited}× 429**"
    if s.failed:
        cell += ", errors: " + ", ".join(f"{e} ×{n}" for e, n in s.failed.most_common())
    return cell


def run_table(r: RunResult) -> str:
    """The Markdown report of one run (one scale, one mode): per-thread percentiles, then totals."""
    t = r.threads
    ok = len(t) - len(r.failures)
    minutes = r.wall / 60
    load = r.bot_cpu_load + r.doubles_cpu + r.sandbox_cpu
    failures = Counter(re.sub(r"\d+", "N", f.failure or "") for f in r.failures)  # by kind, numbers aside
    methods = [m for m in REPLY_METHODS if m in r.methods] + sorted(set(r.methods) - set(REPLY_METHODS))
    calls = "; ".join(f"`{m}` {r.methods[m].calls} ({r.methods[m].calls / minutes:.1f}/min, peak "
                      f"{r.methods[m].peak_minute} in 60 s)" for m in methods)
    limited = ", ".join(f"`{m}` {s.limited}" for m, s in r.methods.items() if s.limited) or "none"
    errors = ", ".join(f"`{m}` {e} ×{n}" for m, s in r.methods.items() for e, n in s.failed.items()) or "none"
    left = [x for x in t if x.status_left]
    lines = [
        f"### {r.workload.threads} threads, mode `{r.mode}` ({r.workload.dms} DM, "
        f"{r.workload.threads - r.workload.dms} channel)",
        "",
        "| Per thread | p50 | p95 | max | threads |",
        "|---|---:|---:|---:|---:|",
        _row("Ack latency (every envelope of the first messages)", [a for x in t for a in x.acks], _ms),
        _row("Time to first response (message → first bot message or status line)", _collect(t, "first_response")),
        _row("Time to first visible text", _collect(t, "first_text")),
        _row("… of which message → Claude's request at the API", _collect(t, "to_request")),
        _row("… of which first chunk sent → visible", _collect(t, "chunk_to_visible")),
        _row("Visible updates per minute (first response → final)", _collect(t, "updates_per_min"), _f1),
        _row("Visible updates per thread (first response → final)", [len(x.gaps) + 1 for x in t
                                                                     if x.first_response is not None], _n),
        _row("Visible-update gap, median per thread", [statistics.median(x.gaps) for x in t if x.gaps]),
        _row("Visible-update gap, longest per thread", _longest(t)),
        _row("Final answer latency (last chunk sent → footer shown)", _collect(t, "final_latency")),
        _row("Time showing nothing at all (first response → final; no message, no status)",
             [x.blank for x in t if x.first_response is not None]),
        "",
        "| Totals | |",
        "|---|---|",
        f"| Answers complete and correct | {ok}/{len(t)} |",
        f"| Replies streamed with `chat.startStream` (+ posted whole at the end), DM / channel | {native_count(t)} |",
        f"| Replies that showed part of the answer before the final state | {sum(x.streamed for x in t)}/{len(t)} |",
        f"| Bot messages per thread at the end | "
        f"{', '.join(f'{n}: {c} threads' for n, c in sorted(Counter(x.messages for x in t).items()))} |",
        f"| Status line still shown after the final answer | {len(left)} threads"
        + (f" (`{left[0].status_left[:60]}`)" if left else "") + " |",
        f"| Wall time (first message → last final reply) | {r.wall:.1f} s |",
        f"| Web API calls (first message → last final reply) | {calls} |",
        f"| 429s received, by method | {limited} |",
        f"| Other errors, by method | {errors} |",
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


BOLT_TOKEN_WARNING = "WARNING slack_bolt.AsyncApp: As you gave `client` as well, `token` will be unused."


def _problems(log: Counter[str]) -> str:
    if not log:
        return "no warnings or errors"
    shown = "; ".join(f"{n}× `{kind.replace('|', '/')}`" for kind, n in log.most_common(4))
    more = sum(log.values()) - sum(n for _, n in log.most_common(4))
    return shown + (f"; {more} more" if more else "")


def summary_table(results: list[RunResult]) -> str:
    header = ("| Threads | Mode | Correct | Streamed, DM / channel | Live text | First response p95 "
              "| First text p50 / p95 / max | Updates/thread/min p50 | Longest gap p50 / max "
              "| Final latency p50 / p95 | Reply API calls/min | 429s | Bot CPU | Bot peak RSS |")
    lines = [header, "|---:|---|" + "---:|" * 12]
    for r in results:
        t = r.threads
        first, final, longest = _collect(t, "first_text"), _collect(t, "final_latency"), _longest(t)
        lines.append(
            f"| {r.workload.threads} | {r.mode} | {len(t) - len(r.failures)}/{len(t)} | {native_count(t)} "
            f"| {sum(x.streamed for x in t)}/{len(t)} "
            f"| {_s(percentile(_collect(t, 'first_response'), 95))} "
            f"| {_s(percentile(first, 50))} / {_s(percentile(first, 95))} / {_s(_max(first))} "
            f"| {_f1(percentile(_collect(t, 'updates_per_min'), 50))} "
            f"| {_s(percentile(longest, 50))} / {_s(_max(longest))} "
            f"| {_s(percentile(final, 50))} / {_s(percentile(final, 95))} "
            f"| {r.reply_calls_per_minute:.1f} | {r.limited} "
            f"| {r.bot_cpu_load:.1f} s | {r.bot_rss_mb:.0f} MB |"
        )
    return "\n".join(lines)


def ratio_table(results: list[RunResult]) -> str:
    """The headline figures of native and auto as multiples of edits (the baseline), per scale."""
    names = [name for name, *_ in HEADLINES] + ["Reply API calls/min"]
    lines = ["| Threads | Ratio | " + " | ".join(names) + " |", "|---:|---|" + "---:|" * len(names)]
    for count in sorted({r.workload.threads for r in results}):
        runs = {r.mode: r for r in results if r.workload.threads == count}
        base = runs.get(BASELINE)
        if base is None:
            continue
        for mode in MODES:
            if mode == BASELINE or mode not in runs:
                continue
            cells = [_ratio(headline(runs[mode], n), headline(base, n)) for n in names]
            lines.append(f"| {count} | {mode}/{BASELINE} | " + " | ".join(cells) + " |")
    return "\n".join(lines) if len(lines) > 2 else ""


def kind_table(results: list[RunResult]) -> str:
    """The headline figures per kind of thread (DM / channel thread): where auto differs from edits."""
    lines = ["| Threads | Mode | Kind | Streamed | First text p50 / p95 | Updates/thread/min p50 "
             "| Longest gap p50 / max | Final latency p50 / p95 |", "|---:|---|---|" + "---:|" * 5]
    for r in results:
        for dm in (True, False):
            t = [x for x in r.threads if x.dm == dm]
            if not t:
                continue
            first, final, longest = _collect(t, "first_text"), _collect(t, "final_latency"), _longest(t)
            lines.append(
                f"| {r.workload.threads} | {r.mode} | {t[0].kind} | {_paths(t)} "
                f"| {_s(percentile(first, 50))} / {_s(percentile(first, 95))} "
                f"| {_f1(percentile(_collect(t, 'updates_per_min'), 50))} "
                f"| {_s(percentile(longest, 50))} / {_s(_max(longest))} "
                f"| {_s(percentile(final, 50))} / {_s(percentile(final, 95))} |")
    return "\n".join(lines)


def calls_table(results: list[RunResult]) -> str:
    """Web API calls per minute (peak in any 60 s, 429s, errors) per method, a column per run."""
    seen = {m for r in results for m in r.methods}
    methods = list(REPLY_METHODS) + sorted(seen - set(REPLY_METHODS))
    lines = ["| Method | " + " | ".join(f"{r.workload.threads} {r.mode}" for r in results) + " |",
             "|---|" + "---:|" * len(results)]
    for method in methods:
        lines.append(f"| `{method}` | " + " | ".join(_calls_cell(r, method) for r in results) + " |")
    lines.append("| **reply methods, all** | " + " | ".join(
        f"{r.reply_calls_per_minute:.1f}" + (f", **{r.limited}× 429**" if r.limited else "") for r in results) + " |")
    return "\n".join(lines)


def observations(results: list[RunResult]) -> list[str]:
    """A few facts read off the figures (where the time goes, limits hit, the mode actually used)."""
    notes: list[str] = []
    for r in results:
        t = r.threads
        req, vis = percentile(_collect(t, "to_request"), 50), percentile(_collect(t, "chunk_to_visible"), 50)
        final = percentile(_collect(t, "final_latency"), 50)
        busy = (r.bot_cpu_load + r.doubles_cpu + r.sandbox_cpu) / r.wall
        note = (f"{r.label}: Claude's request reached the API {_s(req)} after the message (p50: sandbox creation "
                f"+ Claude Code start-up), the first chunk became visible {_s(vis)} after it was sent, and the "
                f"finished answer showed {_s(final)} after its last chunk (p50); "
                f"{busy:.2f} of {os.cpu_count()} cores busy on average (Claude Code CLIs {r.sandbox_cpu:.0f} s, "
                f"doubles {r.doubles_cpu:.0f} s, bot {r.bot_cpu_load:.0f} s CPU).")
        if r.limited:
            note += " 429s: " + ", ".join(f"{m} ×{s.limited}" for m, s in sorted(r.methods.items()) if s.limited) + "."
        wrong = [x for x in t if x.path and not path_expected(r.mode, x)]
        if wrong:
            got = Counter(f"{x.kind} {x.path}" for x in wrong)
            note += (f" **Mode not as asked**: {', '.join(f'{n}× {k}' for k, n in sorted(got.items()))} "
                     f"(expected for `{r.mode}`: {EXPECTED_PATH[r.mode]}).")
        whole = [x for x in t if x.path == "whole"]
        if whole:
            note += (f" {len(whole)} replies were posted whole at the end, nothing streamed before (their answer "
                     f"was finished before they could start a stream).")
        left = [x for x in t if x.status_left]
        if left:
            note += f" {len(left)} threads still showed a status line after the final answer."
        blank = [x.blank for x in t if x.blank > 0]
        if blank:
            note += (f" **{len(blank)} threads went blank** after their first response (no message, no status "
                     f"line) for up to {max(blank):.1f} s (p50 {statistics.median(blank):.1f} s).")
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

    from tests.doubles import slack

    limits = {**slack.DEFAULT_RATE_LIMITS, **getattr(slack, "STREAM_RATE_LIMITS", {})}
    burst = inspect.signature(slack.SlackDouble.__init__).parameters["burst"].default
    return {"update": limits["chat.update"], "post": limits["chat.postMessage"],
            "reactions": limits["reactions.add"], "burst": burst,
            "start": limits.get("chat.startStream", 0), "append": limits.get("chat.appendStream", 0),
            "stop": limits.get("chat.stopStream", 0), "status": limits.get("assistant.threads.setStatus", 0)}


def channel_choice(workload: Workload) -> str:
    limits = slack_limits()
    return (f"Channels: {workload.threads_per_channel} channel threads per channel, because the Slack double (like "
            f"Slack) allows `chat.postMessage` {limits['post']}/min per channel with bursts of {limits['burst']}: that "
            "many placeholders post at once, more in one channel would wait for the limit (429 + Retry-After), and the "
            "time to first response would measure the limit rather than the bot. Each DM is a channel of its own.")


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


def markdown(results: list[RunResult], args: argparse.Namespace, cli_version: str) -> str:
    w = results[0].workload
    limits = slack_limits()
    overrides = ", ".join(f"`{item}`" for item in args.bot_env) or "none"
    scales = sorted({r.workload.threads for r in results})
    parts = [
        "# Load benchmark: maison-slack's reply modes under concurrent threads",
        "",
        f"Generated by `python bench/load_bench.py {' '.join(sys.argv[1:])}`".rstrip() +
        f" on {time.strftime('%Y-%m-%d %H:%M')} ({machine()}).",
        "",
        f"Workload, per scale and mode (one fresh bot, doubles and database each): N threads started within "
        f"{w.spread:g} s, {w.dm_share:.0%} of them in DMs (a plain message, one DM per person), the others in "
        f"channel threads (a mention starting a new thread, {w.threads_per_channel} per channel), interleaved; "
        f"each answered with {w.describe_answer()}. Scales: {', '.join(map(str, scales))} threads; modes: "
        f"{', '.join(f'`{m}`' for m in args.modes)} (`MAISON_STREAMING`), the same workload in each.",
        "",
        f"The bot, from {source_revision(args)}, runs as `python -m maison_slack` in a subprocess, "
        f"configured like the tests' `BotEnv.env()` (`MAISON_EDIT_INTERVAL=0.2`, other settings at their "
        f"defaults; overrides: {overrides}) plus `MAISON_STREAMING`, against the Slack, Daytona and Anthropic "
        f"doubles of `tests/doubles/` in the benchmark's process; sandboxes run the real Claude Code CLI "
        f"{cli_version}. The Slack double enforces Slack's limits (../shared/reference/slack.md §6, §16): "
        f"`chat.update` {limits['update']}/min for the app, `chat.startStream` / `chat.stopStream` "
        f"{limits['start']} / {limits['stop']}/min, `chat.appendStream` {limits['append']}/min, "
        f"`assistant.threads.setStatus` {limits['status']}/min per thread, `reactions.add` {limits['reactions']}/min, "
        f"`chat.postMessage` {limits['post']}/min per channel; bursts of {limits['burst']} (more for methods "
        "allowing 100/min or more).",
        "",
        channel_choice(w),
        "",
        "## Summary",
        "",
        *(f"**Run failed**, no figures: {failed}\n" for failed in args.failed_runs),
        summary_table(results),
        "",
    ]
    ratios = ratio_table(results)
    if ratios:
        parts += [f"## Ratios to `{BASELINE}` (the baseline)", "",
                  "Below 1× is better for every figure but *Updates/thread/min* (more is livelier) and the API "
                  "calls (more calls, more of the app's shared limits used).", "", ratios, ""]
    parts += [
        "## By kind of thread", "",
        "`auto` streams in DMs and edits in channel threads, so it should match `native` on the DM rows and "
        "`edits` on the channel rows (up to the load the other half adds).", "",
        kind_table(results), "",
        "## Web API calls per minute", "",
        "Calls per minute over the wall time (first message → last final reply), the most in any 60 s, 429s "
        "and other errors.", "",
        calls_table(results), "",
        "## Notes", "",
        *(f"* {note}" for note in observations(results)),
        "",
        "## Per run",
        "",
    ]
    for r in results:
        parts += [run_table(r), ""]
    parts += [
        "## How to read it",
        "",
        "* Latencies are per thread, p50 / p95 / max over the threads of a run (ack latency: over every "
        "envelope of the first messages). Times come from the doubles' own records on one monotonic clock.",
        "* *Visible* means visible to the thread's author: each bot reply as the Slack double's "
        "`visible_to(message, author, at)` shows it (a native stream is live to its recipient and in DMs; other "
        "members of a channel see its first chunk until it stops, reference §13.2), plus the status line under "
        "the thread (`assistant.threads.setStatus`).",
        "* *Time to first visible text* is message → the first moment the author sees the answer's first word; "
        "the two *of which* rows split it into the bot's work before Claude runs (sandbox, CLI start-up) and "
        "the streaming path (CLI → bot → Slack).",
        "* *Visible updates per minute*: (states the author saw − 1) / (first response → final answer), per "
        "thread; a change of the status line counts, changes less than 50 ms apart count once. *Longest "
        "gap*: the longest time between two of those changes; a reply looks stuck meanwhile.",
        "* *Final answer latency*: the Anthropic double sending the answer's last chunk → the author seeing "
        "the footer. It includes Claude Code finishing the run and the bot waiting for its API budget.",
        "* *Correct* means the final reply (all bot messages of the thread, joined) shows every word of that "
        "thread's answer exactly once, in order, word for word, and no word of another thread, with the "
        "success footer; in a channel thread another member sees the same; Claude Code got exactly one request "
        "per prompt.",
        "* *Streamed, DM / channel*: replies that used `chat.startStream`, out of the DM and channel threads; "
        "*(+n whole)*: replies that were one message posted only at the end, with nothing before but the status "
        "line (a native reply whose answer was finished before it could start a stream). `edits` expects every "
        "reply edited (placeholder, then `chat.update`), `native` none, `auto` edited replies in channel threads "
        "only; a bot that does not know `MAISON_STREAMING` (an older `--revision`) edits in every mode. "
        "*Live text*: replies that showed part of the answer before the final state.",
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
    results: list[RunResult] = []
    for count in args.threads:
        workload = Workload(count, args.answer_seconds, args.chunk_interval, args.threads_per_channel, args.spread,
                            args.dm_share)
        print(f"\n== {workload.describe()}\n   {channel_choice(workload)}", flush=True)
        for mode in args.modes:
            print(f"\n-- mode {mode} (MAISON_STREAMING={mode})", flush=True)
            started = time.monotonic()
            try:
                result = await run_one(workload, mode, args, claude_bin)
            except Exception as exc:  # e.g. the bot did not start: the other runs still count
                print(f"  run failed: {exc}", flush=True)
                args.failed_runs.append(f"{count} threads, `{mode}`: {str(exc).splitlines()[0]}")
                continue
            results.append(result)
            print(f"  done in {time.monotonic() - started:.0f} s\n\n{run_table(result)}", flush=True)
            for failure in result.failures[:5]:
                print(f"  thread {failure.index} ({failure.kind} {failure.channel} {failure.ts}): {failure.failure}")

    if not results:
        raise SystemExit("no run completed")
    for failed in args.failed_runs:
        print(f"Run failed: {failed}")
    print("\n## Summary\n\n" + summary_table(results) + "\n")
    ratios = ratio_table(results)
    if ratios:
        print(f"## Ratios to {BASELINE}\n\n{ratios}\n")
    print("## By kind of thread\n\n" + kind_table(results) + "\n")
    print("## Web API calls per minute\n\n" + calls_table(results) + "\n")
    for note in observations(results):
        print(f"* {note}")
    if args.write:
        RESULTS_MD.write_text(markdown(results, args, CLAUDE_CODE_VERSION))
        print(f"\nWrote {RESULTS_MD.relative_to(REPO)}")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--threads", default="5,20,50", help="concurrent thread counts, comma-separated (%(default)s)")
    parser.add_argument("--modes", default=",".join(MODES),
                        help="reply modes to compare, run in this order at each scale (%(default)s); "
                             f"{BASELINE} is the baseline of the ratios")
    parser.add_argument("--dm-share", type=float, default=0.5,
                        help="fraction of the threads started in DMs, the rest in channel threads (%(default)s)")
    parser.add_argument("--answer-seconds", type=float, default=20, help="how long each answer streams (%(default)s)")
    parser.add_argument("--chunk-interval", type=float, default=0.15,
                        help="seconds between the Anthropic double's SSE frames, one word each (%(default)s)")
    parser.add_argument("--threads-per-channel", type=int, default=5,
                        help="channel threads per channel (%(default)s)")
    parser.add_argument("--spread", type=float, default=1.0, help="seconds over which the first messages are sent")
    parser.add_argument("--timeout", type=float, default=0,
                        help="seconds to wait for the replies per run (default: 120 + 2 × answer + 6 × threads)")
    parser.add_argument("--bot-env", action="append", default=[], metavar="NAME=VALUE",
                        help="extra environment for the bot, e.g. MAISON_EDIT_INTERVAL=1.5 (repeatable)")
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--source", type=Path, default=REPO,
                       help="checkout whose bot and doubles to run (default: this one, as it is on disk)")
    where.add_argument("--revision", help="run the bot and doubles of this commit of the repository instead "
                                          "(exported with `git archive` to a temporary directory; a bot without "
                                          "MAISON_STREAMING answers every mode with edits)")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: 4 threads (2 DM, 2 channel), 5-second answers, no file")
    parser.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                        help="write bench/LOAD_RESULTS.md (default: yes, except with --quick)")
    args = parser.parse_args(argv)
    if args.quick:
        args.threads, args.answer_seconds = "4", min(args.answer_seconds, 5)
    args.threads = [int(n) for n in str(args.threads).split(",") if n.strip()]
    if not args.threads or min(args.threads) < 1 or args.threads_per_channel < 1:
        parser.error("--threads and --threads-per-channel must be positive")
    args.modes = [m.strip() for m in str(args.modes).split(",") if m.strip()]
    if not args.modes or set(args.modes) - set(MODES) or len(set(args.modes)) != len(args.modes):
        parser.error(f"--modes takes distinct modes out of {','.join(MODES)}")
    if not 0 <= args.dm_share <= 1:
        parser.error("--dm-share is a fraction, 0 to 1")
    if any("=" not in item for item in args.bot_env):
        parser.error("--bot-env takes NAME=VALUE")
    if any(item.split("=", 1)[0] == "MAISON_STREAMING" for item in args.bot_env):
        parser.error("the reply mode is set by --modes, not --bot-env MAISON_STREAMING")
    args.write = not args.quick if args.write is None else args.write
    args.source = args.source.resolve()
    return args


def main() -> None:
    args = parse_args()
    exported: Path | None = None
    args.revision_sha = ""
    args.failed_runs = []
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
