"""`MaisonSandbox`: run Claude Code in a Daytona sandbox and stream its events back.

How a run works, and why:
* The prompt and instructions are uploaded as files; a fixed script (`RUN_SCRIPT`) feeds the
  prompt to `claude` on stdin. No user text and no secret ever appears in a shell command
  (the API key is in the sandbox's environment, set at creation).
* The script runs as an async command of a Daytona session, in its own process session so
  that cancelling kills Claude and every tool process it started.
* Claude's stdout is `tee`d into `out.jsonl` in the sandbox and followed over Daytona's log
  WebSocket, so each byte crosses once, as soon as it is written. If the WebSocket fails, we
  poll the file from the byte offset already received: still linear, never a re-download.
* A run can be cancelled from the moment `stream()` starts: before the launch it is simply
  never launched; during and after it, a marker file and the pid file let `cancel()` and the
  run script agree, so Claude cannot start unseen (see `MaisonSandbox._launch`).
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import contextlib
import logging
import posixpath
import re
import shlex
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Iterable
from dataclasses import dataclass, field
from typing import Any

from daytona import AsyncDaytona, AsyncSandbox, DaytonaFileNotFoundError, FileUpload, SessionExecuteRequest

from maison_slack.core.daytona_calls import call
from maison_slack.core.errors import (
    ClaudeNotFoundError,
    MaisonError,
    NotARegularFileError,
    RunTimeoutError,
    SandboxGoneError,
    SandboxUnavailableError,
)
from maison_slack.core.events import StreamEvent, StreamParser

logger = logging.getLogger(__name__)

RUN_SCRIPT = r"""#!/usr/bin/env bash
# One Claude Code run for maison-slack. $1 is the run directory, the rest are claude's
# arguments. The prompt comes from a file on stdin, never from the command line.
run_dir=$1
shift
export PATH="$HOME/.maison/npm/bin:$PATH"  # where Maison installs Claude Code if the image lacks it
echo "$$" > "$run_dir/pid"
# A kill creates the cancel marker, then reads the pid; we write the pid, then look for the
# marker. Whichever comes second sees the other's file: a kill racing the launch either
# stops us here or finds our pid (see MaisonSandbox._launch).
if [ -e "$run_dir/cancel" ]; then echo 143 > "$run_dir/exit_code"; exit 143; fi
claude "$@" < "$run_dir/prompt" 2> "$run_dir/stderr" | tee "$run_dir/out.jsonl"
rc=${PIPESTATUS[0]}
echo "$rc" > "$run_dir/exit_code"
if [ -s "$run_dir/stderr" ]; then cat "$run_dir/stderr" >&2; fi
exit "$rc"
"""

#: `kill_run DIR`: stop the run in DIR for good. Creates the cancel marker first (the run
#: script's handshake), then kills the run's whole process session (Claude and the tools it
#: started): TERM, up to 2 s of grace, then KILL; returns only once they are gone.
#: Plain POSIX sh (no globs, no `$_`): Daytona runs `process.exec` commands with zsh.
KILL_RUN_FUNCTION = (
    'kill_run() { touch "$1/cancel" 2>/dev/null; '
    'leader=$(cat "$1/pid" 2>/dev/null) || return 0; [ -n "$leader" ] || return 0; '
    'kill -TERM -- -"$leader" 2>/dev/null; pkill -TERM -s "$leader" 2>/dev/null; '
    'for i in $(seq 20); do pgrep -s "$leader" >/dev/null || return 0; sleep 0.1; done; '
    'kill -KILL -- -"$leader" 2>/dev/null; pkill -KILL -s "$leader" 2>/dev/null; '
    'for i in $(seq 20); do pgrep -s "$leader" >/dev/null || return 0; sleep 0.1; done; }\n'
)

#: Kills every run under the work dir (the `cwd`) that is still alive although its script
#: never wrote an exit code, except the run named by $MAISON_KEEP_RUN; prints how many.
#: "Alive" means a process of the pid file's session still names the run id on its command
#: line (the run script and `tee` do): after a sandbox restart the pid may belong to another
#: process, and only this run's own processes may be killed.
KILL_STALE_SCRIPT = KILL_RUN_FUNCTION + (
    "killed=0\n"
    "for pid_file in $(find .maison/runs -mindepth 2 -maxdepth 2 -name pid 2>/dev/null); do\n"
    "  dir=${pid_file%/pid}; run=${dir##*/}\n"
    '  [ -e "$dir/exit_code" ] || [ "$run" = "$MAISON_KEEP_RUN" ] && continue\n'
    '  pid=$(cat "$pid_file" 2>/dev/null); [ -n "$pid" ] || continue\n'
    '  pgrep -s "$pid" -f -- "$run" >/dev/null 2>&1 || continue\n'
    '  kill_run "$dir"; killed=$((killed + 1))\n'
    "done\n"
    'echo "$killed"\n'
)

CLAUDE_FLAGS = (
    "-p", "--output-format", "stream-json", "--verbose",
    "--include-partial-messages", "--dangerously-skip-permissions",
)

_POLL_CHUNK_BYTES = 1 << 20
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")
_SAFE_ARG = re.compile(r"^[A-Za-z0-9._:/@\[\]-]+$")


def check_model(name: str) -> str:
    """A model name or alias as `claude --model` takes it (`sonnet`, `claude-opus-5-5`,
    `opus[1m]`), or `ValueError`: it becomes a command-line argument."""
    if not (0 < len(name) <= 100 and _SAFE_ARG.match(name)) or name.startswith("-"):
        raise ValueError(f"Not a model name: {name!r}")
    return name


@dataclass
class _Run:
    """The state of one `stream()` call, registered as soon as the call starts."""

    run_id: str
    run_dir: str = ""  # set once the work dir is known, before anything is uploaded
    parser: StreamParser = field(default_factory=StreamParser)
    queue: asyncio.Queue[StreamEvent | None] = field(default_factory=asyncio.Queue)
    cmd_id: str | None = None
    offset: int = 0  # bytes of out.jsonl already received, by either path
    decoder: codecs.IncrementalDecoder = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))
    stderr: list[str] = field(default_factory=list)
    saw_result: bool = False
    cancelled_by: str | None = None  # the mark: set by `_kill`, checked by `_launch`
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)  # wakes a pre-launch wait
    launching: bool = False  # the launch request may have reached Daytona: kills must happen there
    finished: bool = False
    killing: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while a kill is in progress

    def emit_stdout(self, text: str) -> None:
        """WebSocket path: the SDK decodes the bytes (holding back an incomplete character),
        so the UTF-8 length of `text` is exactly the bytes of out.jsonl it covers: Claude
        writes valid UTF-8. Polling can then resume from `offset` at a character boundary."""
        self.offset += len(text.encode("utf-8"))
        self.deliver(self.parser.feed(text))

    def emit_bytes(self, data: bytes, *, final: bool = False) -> None:
        """Polling path: raw bytes of out.jsonl from `offset`. The incremental decoder keeps a
        character split between two reads, and the parser a line split between many."""
        self.offset += len(data)
        self.deliver(self.parser.feed(self.decoder.decode(data, final)))

    def deliver(self, events: Iterable[StreamEvent]) -> None:
        for event in events:
            self.saw_result |= event.type == "result"
            self.queue.put_nowait(event)


class MaisonSandbox:
    """A Daytona sandbox with Claude Code, ready to stream runs.

    Make one with `Maison.create_sandbox_for_claude()` or `Maison.attach()`. It is an async
    context manager whose exit is `close()` (kill any run, delete the sandbox), so a sandbox
    meant to live only for a block cannot outlive it::

        async with await Maison.create_sandbox_for_claude() as sandbox:
            async for event in sandbox.stream("fix the tests"):
                ...
    """

    def __init__(
        self,
        sandbox: AsyncSandbox,
        daytona: AsyncDaytona,
        *,
        owns_client: bool = False,
        claude_session_id: str | None = None,
        run_timeout: float | None = None,
        model: str | None = None,
    ) -> None:
        self._sandbox = sandbox
        self._daytona = daytona
        self._owns_client = owns_client
        self._run_timeout = run_timeout
        self._model = model
        self._work_dir: str | None = None
        self._prepared = False
        self._session = f"maison-{uuid.uuid4().hex[:12]}"
        self._lock = asyncio.Lock()
        self._run: _Run | None = None
        #: Claude Code's conversation id; `continue_conversation=True` resumes it.
        self.claude_session_id = claude_session_id
        #: A fork's first run continues the copied conversation under an id of its own.
        self._fork_conversation = False
        #: What `claude --version` said when the sandbox was set up ("" if not checked).
        self.claude_code_found = ""
        #: Where Claude Code runs (its cwd, where it finds the project's CLAUDE.md), relative to
        #: the work dir; None for the work dir itself. Relative, because a fork or a restored
        #: sandbox may have it elsewhere. A conversation is resumed from the cwd it started in,
        #: so it must stay the same for a sandbox's life.
        self.project: str | None = None

    async def __aenter__(self) -> MaisonSandbox:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    @property
    def id(self) -> str:
        return self._sandbox.id

    @property
    def state(self) -> str:
        return str(getattr(self._sandbox.state, "value", self._sandbox.state))

    async def fork(self, timeout: float = 300) -> MaisonSandbox:
        """A copy-on-write copy of this sandbox, independent from then on: its files, and Claude's
        conversation, which the copy's next run continues under a new id (`--fork-session`).
        Daytona forks only some sandbox classes (../shared/reference/daytona.md §20.1)."""
        raw = await call("Forking the sandbox", lambda: self._sandbox.fork(timeout=timeout), retry=False)
        copy = MaisonSandbox(raw, self._daytona, claude_session_id=self.claude_session_id,
                             run_timeout=self._run_timeout, model=self._model)
        copy.project = self.project
        copy._fork_conversation = self.claude_session_id is not None
        return copy

    async def preview_url(self, port: int, seconds: int) -> str:
        """A signed link to `port` of the sandbox that anyone can open for `seconds`
        (../shared/reference/daytona.md §19)."""
        preview = await call("Creating a preview link",
                             lambda: self._sandbox.create_signed_preview_url(port, expires_in_seconds=seconds))
        return str(preview.url)

    async def listening(self, port: int) -> bool:
        """Whether something in the sandbox accepts connections on `port`."""
        script = f"bash -c 'exec 3<>/dev/tcp/127.0.0.1/{int(port)}' >/dev/null 2>&1 && echo open || echo closed"
        _, output = await self.run_setup(script, timeout=15)
        return output.strip().endswith("open")

    async def set_labels(self, labels: dict[str, str]) -> None:
        """Replace the sandbox's labels (what it is for, for whoever lists sandboxes)."""
        await call("Labelling the sandbox", lambda: self._sandbox.set_labels(labels))

    async def refresh_state(self) -> str:
        """Ask Daytona for the sandbox's state now; raises `SandboxGoneError` if it no longer exists."""
        await call("Checking the sandbox", self._sandbox.refresh_data)
        return self.state

    @property
    def running(self) -> bool:
        """Whether a `stream()` is in progress, from its start (upload, launch) to its end."""
        return self._run is not None and not self._run.finished

    @staticmethod
    def path(work_dir: str, relative: str | None) -> str:
        """`relative` (to the work dir) as an absolute path in the sandbox."""
        return posixpath.normpath(posixpath.join(work_dir, relative or "."))

    @property
    def toolbox(self) -> AsyncSandbox:
        """The SDK's sandbox, for core modules that use more of its toolbox (`core/git.py`)."""
        return self._sandbox

    async def work_directory(self) -> str:
        """The sandbox's work dir, under which `.maison/` holds the run script and the runs."""
        if self._work_dir is None:
            self._work_dir = await call("Reading the sandbox's work dir", self._sandbox.get_work_dir)
        return self._work_dir

    async def _prepare(self) -> str:
        """Once per object: install the run script, check for `claude`, open the session."""
        work_dir = await self.work_directory()
        if self._prepared:
            return work_dir
        await call(
            "Installing the run script",
            lambda: self._sandbox.fs.upload_file(RUN_SCRIPT.encode(), f"{work_dir}/.maison/run.sh"),
        )
        found = await call("Looking for claude", lambda: self._sandbox.process.exec(
            'PATH="$HOME/.maison/npm/bin:$PATH" command -v claude', timeout=60))
        if found.exit_code != 0:
            raise ClaudeNotFoundError(
                f"The claude binary was not found in sandbox {self.id}; install @anthropic-ai/claude-code there."
            )
        await call("Opening a Daytona session", lambda: self._sandbox.process.create_session(self._session), retry=False)
        self._prepared = True
        return work_dir

    def _claude_args(self, run: _Run, instructions: str | None, continue_conversation: bool, model: str | None,
                     max_budget_usd: float | None) -> list[str]:
        args = list(CLAUDE_FLAGS)
        if continue_conversation:
            if self.claude_session_id and _UUID.match(self.claude_session_id):
                args += ["--resume", self.claude_session_id]
            else:
                args.append("--continue")
            if self._fork_conversation:  # ../shared/reference/claude-code.md §9.3
                args.append("--fork-session")
        if instructions:
            args += ["--append-system-prompt-file", f"{run.run_dir}/instructions"]
        model = model or self._model
        if model:
            args += ["--model", check_model(model)]
        if max_budget_usd is not None:  # ../shared/reference/claude-code.md §9.1: per run, > 0
            if not max_budget_usd > 0:
                raise ValueError(f"A run's budget must be more than $0, not {max_budget_usd!r}")
            args += ["--max-budget-usd", f"{max_budget_usd:.6f}".rstrip("0").rstrip(".")]
        return args

    async def stream(
        self,
        prompt: str,
        instructions: str | None = None,
        continue_conversation: bool = False,
        poll_interval: float = 0.3,
        *,
        timeout: float | None = None,
        model: str | None = None,
        max_budget_usd: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run Claude Code on `prompt` and yield its events as they happen.

        `instructions` are appended to Claude Code's system prompt. `continue_conversation`
        resumes this sandbox's conversation so Claude keeps the earlier context.
        `poll_interval` paces the fallback polling used only when log streaming fails.
        `timeout` (default: the sandbox's `run_timeout`) kills the run and raises
        `RunTimeoutError`. Every run ends with one `result` event (synthesised when Claude
        Code exits without one, e.g. when cancelled), then a `stderr` event if there was any.
        `cancel()` works from the moment iteration starts, even before Claude is launched.
        Closing the iterator early kills the run. `model` (default: the sandbox's) is passed to
        `claude --model`; `max_budget_usd` to `--max-budget-usd`, which ends the run with an
        `error_max_budget_usd` result once this run has cost that much.
        """
        async with self._lock:
            run = _Run(run_id=f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}")
            self._run = run
            pump: asyncio.Task[None] | None = None
            try:
                args = (instructions, continue_conversation, model, max_budget_usd)
                if await self._launch(run, prompt, *args):
                    pump = asyncio.create_task(self._pump(run, poll_interval), name=f"maison-pump-{run.run_id}")
                else:
                    self._finish(run, None)  # cancelled before launch: only the synthesised result
                limit = timeout if timeout is not None else self._run_timeout
                deadline = None if limit is None else asyncio.get_running_loop().time() + limit
                while True:
                    remaining = None if deadline is None else deadline - asyncio.get_running_loop().time()
                    try:
                        event = await asyncio.wait_for(run.queue.get(), remaining)
                    except asyncio.TimeoutError:
                        await self._kill(run, "timeout")
                        raise RunTimeoutError(f"Claude Code ran longer than {limit:g}s and was stopped") from None
                    if event is None:
                        async with run.killing:  # a kill in progress completes before the run ends
                            pass
                        break
                    if event.type == "result" and event.data.get("session_id"):
                        self.claude_session_id = event.data["session_id"]
                        self._fork_conversation = False
                    yield event
                if pump is not None:
                    await pump  # re-raise a failure of the pump
            finally:
                if not run.finished:
                    await self._kill(run, "closed")
                if pump is not None and not pump.done():
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, MaisonError):
                        await pump
                self._run = None

    async def _launch(self, run: _Run, prompt: str, instructions: str | None, continue_conversation: bool,
                      model: str | None, max_budget_usd: float | None) -> bool:
        """Upload the prompt and start Claude Code, unless the run is cancelled first.

        Returns whether the run was launched. A cancel that lands before the launch request
        is sent just stops us here; one that lands while it is in flight or later must kill in
        the sandbox. Two Dekker-style handshakes make sure no launch goes unseen:
        * here, `launching` is set and the mark checked with no `await` in between, and
          `_kill` sets the mark before it reads `launching`: either we see the mark and never
          launch, or `_kill` sees `launching` and kills in the sandbox;
        * there, `kill_run` creates the cancel marker before it reads the pid file, and
          `RUN_SCRIPT` writes its pid before it looks for the marker: either the script
          exits without starting Claude, or the kill finds its pid — even when the kill
          reaches the sandbox before the launch request does.
        """
        work_dir = await self._prepare()
        if run.cancelled_by:
            return False
        run.run_dir = f"{work_dir}/.maison/runs/{run.run_id}"
        # "replace": a lone surrogate (from JSON, e.g. a display name) is not UTF-8; it must not cost the run.
        uploads = [FileUpload(prompt.encode("utf-8", "replace"), f"{run.run_dir}/prompt")]
        if instructions:
            uploads.append(FileUpload(instructions.encode("utf-8", "replace"), f"{run.run_dir}/instructions"))
        await self._until_cancelled(run, call("Uploading the prompt", lambda: self._sandbox.fs.upload_files(uploads)))
        if run.cancelled_by:
            return False
        command = (
            f"cd {shlex.quote(self.path(work_dir, self.project))} && "
            f"setsid --wait bash {shlex.quote(work_dir + '/.maison/run.sh')} {shlex.quote(run.run_dir)} "
            + shlex.join(self._claude_args(run, instructions, continue_conversation, model, max_budget_usd))
        )
        run.launching = True
        response = await call(
            "Starting Claude Code",
            lambda: self._sandbox.process.execute_session_command(
                self._session, SessionExecuteRequest(command=command, run_async=True)
            ),
            retry=False,
        )
        run.cmd_id = response.cmd_id
        if run.cancelled_by:
            # `_kill` has already run the kill in the sandbox, but a kill that failed only
            # logs a warning: now that the command certainly exists, make sure it is dead.
            await self._kill(run, run.cancelled_by)
        return True

    @staticmethod
    async def _until_cancelled(run: _Run, step: Awaitable[None]) -> None:
        """Await `step`, abandoning it as soon as the run is cancelled: a cancel must not wait
        out a Retry-After that `call` sleeps before retrying an upload nobody needs anymore."""
        task = asyncio.ensure_future(step)
        cancelled = asyncio.ensure_future(run.cancel_requested.wait())
        try:
            await asyncio.wait({task, cancelled}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            cancelled.cancel()
            if run.cancelled_by or not task.done():  # cancelled run, or stream() itself cancelled
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        if not run.cancelled_by:
            await task  # done: re-raise its failure

    async def _pump(self, run: _Run, poll_interval: float) -> None:
        """Move Claude's output into `run.queue`: push first, polling if push fails."""
        try:
            try:
                await self._sandbox.process.get_session_command_logs_async(
                    self._session, run.cmd_id, run.emit_stdout, run.stderr.append
                )
            except Exception as exc:  # any WebSocket failure: the file is still there to poll
                logger.warning("Following the run's log failed (%s); polling its output file instead", exc)
            exit_code = await self._exit_code(run)
            if exit_code is None:
                exit_code = await self._poll(run, poll_interval)
            self._finish(run, exit_code)
        finally:
            if not run.finished:  # failed: wake the consumer, which re-raises via `await pump`
                run.finished = True
                run.queue.put_nowait(None)

    async def _exit_code(self, run: _Run) -> int | None:
        command = await call(
            "Checking the run", lambda: self._sandbox.process.get_session_command(self._session, run.cmd_id)
        )
        return command.exit_code

    async def _poll(self, run: _Run, poll_interval: float) -> int:
        """Read out.jsonl from the received offset until the command has exited and all is read.

        Raw bytes, base64-encoded for the JSON response: the offset stays exact in bytes, and
        a chunk may end anywhere (mid-line, mid-character) since the run's decoder and parser
        carry the rest over, so a line longer than a chunk is just read in several."""
        logger.info("Polling run %s from byte %d", run.run_id, run.offset)
        exit_code: int | None = None
        while True:
            command = (
                f"tail -c +{run.offset + 1} {shlex.quote(run.run_dir)}/out.jsonl 2>/dev/null "
                f"| head -c {_POLL_CHUNK_BYTES} | base64 -w0"
            )
            response = await call("Reading Claude's output", lambda: self._sandbox.process.exec(command, timeout=60))
            data = base64.b64decode(response.result or "")
            if data:
                run.emit_bytes(data)
                continue
            if exit_code is not None:
                break
            exit_code = await self._exit_code(run)
            if exit_code is None:
                await asyncio.sleep(poll_interval)
        stderr = await call(
            "Reading Claude's stderr",
            lambda: self._sandbox.process.exec(f"cat {shlex.quote(run.run_dir)}/stderr 2>/dev/null", timeout=60),
        )
        if stderr.result:
            run.stderr.append(stderr.result)
        return exit_code

    def _finish(self, run: _Run, exit_code: int | None) -> None:
        run.emit_bytes(b"", final=True)
        run.deliver(run.parser.finish())
        stderr = "".join(run.stderr).strip()
        if not run.saw_result:
            if run.cancelled_by:
                text = f"Run stopped ({run.cancelled_by})."
                subtype = "cancelled"
            else:
                tail = f": {_last_lines(stderr, 2000)}" if stderr else ""
                text = f"Claude Code exited with code {exit_code} without a result{tail}"
                subtype = "error_no_result"
            data: dict[str, Any] = {"type": "result", "subtype": subtype, "is_error": True, "result": text,
                                    "exit_code": exit_code, "session_id": self.claude_session_id}
            run.queue.put_nowait(StreamEvent("result", data, text))
        if stderr:
            run.queue.put_nowait(StreamEvent("stderr", {"type": "stderr", "content": stderr}, stderr))
        run.finished = True
        run.queue.put_nowait(None)

    async def _kill(self, run: _Run, reason: str) -> None:
        """Mark the run cancelled and, once its launch may have reached Daytona, kill it there."""
        run.cancelled_by = run.cancelled_by or reason
        run.cancel_requested.set()
        if not run.launching:
            return  # `_launch` checks the mark before it starts anything
        async with run.killing:
            script = f"{KILL_RUN_FUNCTION}kill_run {shlex.quote(run.run_dir)}"
            try:
                await call("Stopping Claude Code", lambda: self._sandbox.process.exec(script, timeout=30))
            except MaisonError as exc:
                logger.warning("Could not kill run %s: %s", run.run_id, exc)

    async def cancel(self, reason: str = "cancelled") -> bool:
        """Stop the current run, in whatever phase it is: one not launched yet never starts
        Claude, a running one is killed. The stream then ends with a `result` event of
        subtype `cancelled`. Returns whether a run was in progress."""
        run = self._run
        if run is None or run.finished:
            return False
        await self._kill(run, reason)
        return True

    async def kill_stale_runs(self) -> int:
        """Kill the runs that clients which died left running here; return how many.

        A bot killed mid-run (SIGKILL, OOM, host crash) leaves Claude Code working, and
        spending, with nobody to read or stop it. A run counts as left behind when its
        script wrote a pid but no exit code and its processes still live. The run this
        object is streaming is spared, but not those of other clients: call this when no one
        else uses the sandbox, e.g. when a restarted bot attaches. Returns once they are gone.
        """
        work_dir = await self.work_directory()
        keep = {"MAISON_KEEP_RUN": self._run.run_id if self._run is not None else ""}
        response = await call(
            "Stopping abandoned runs",
            lambda: self._sandbox.process.exec(KILL_STALE_SCRIPT, cwd=work_dir, env=keep, timeout=300),
        )
        lines = (response.result or "").split()
        if response.exit_code != 0 or not lines or not lines[-1].isdigit():
            raise SandboxUnavailableError(f"Stopping abandoned runs failed: {(response.result or '')[-500:]}")
        return int(lines[-1])

    async def read_file(self, path: str) -> str:
        """Read a text file from the sandbox (relative paths: from the work dir)."""
        return (await self.read_bytes(path)).decode("utf-8", errors="replace")

    async def read_bytes(self, path: str) -> bytes:
        try:
            return await call(f"Reading {path}", lambda: self._sandbox.fs.download_file(path))
        except MaisonError as exc:
            _raise_if_missing(exc, path)
            raise

    async def file_size(self, path: str) -> int:
        """Size in bytes of a file in the sandbox (relative paths: from the work dir), so a
        caller can refuse a huge file before downloading it. Raises `FileNotFoundError` when
        there is no such file, `IsADirectoryError` for a directory and `NotARegularFileError`
        for a symlink, device or pipe (whose read could be anything, even endless)."""
        try:
            info = await call(f"Looking at {path}", lambda: self._sandbox.fs.get_file_info(path))
        except MaisonError as exc:
            _raise_if_missing(exc, path)
            raise
        if info.is_dir:
            raise IsADirectoryError(f"Not a file but a directory in the sandbox: {path}")
        if not info.mode.startswith("-"):  # a link, device or pipe: its size says nothing of what a read yields
            raise NotARegularFileError(f"Not a regular file in the sandbox: {path} ({info.mode})")
        return int(info.size)

    async def write_file(self, path: str, content: bytes | str) -> None:
        """Write a file into the sandbox, creating parent directories."""
        data = content.encode("utf-8") if isinstance(content, str) else content
        await call(f"Writing {path}", lambda: self._sandbox.fs.upload_file(data, path))

    async def run_setup(self, script: str, *, timeout: int, cwd: str | None = None) -> tuple[int, str]:
        """Run a fixed setup script (no user text!) and return its exit code and output."""
        result = await call("Setting up the sandbox",
                            lambda: self._sandbox.process.exec(script, cwd=cwd, timeout=timeout))
        return result.exit_code, result.result or ""

    async def close(self) -> None:
        """Kill any run and delete the sandbox. A sandbox already gone counts as closed."""
        try:
            if self._run is not None and not self._run.finished:
                await self._kill(self._run, "closed")
            with contextlib.suppress(SandboxGoneError):
                await call("Deleting the sandbox", lambda: self._daytona.delete(self._sandbox))
        finally:
            if self._owns_client:
                await self._daytona.close()


def _raise_if_missing(exc: MaisonError, path: str) -> None:
    """Turn Daytona's "no such file" into `FileNotFoundError`. Daemons that send no `source`
    get the status class (`DaytonaNotFoundError`) instead of `DaytonaFileNotFoundError`,
    hence the look at the error code too (../shared/reference/daytona.md §10.1)."""
    cause = exc.__cause__
    if isinstance(cause, DaytonaFileNotFoundError) or getattr(cause, "code", None) == "FILE_NOT_FOUND":
        raise FileNotFoundError(f"No such file in the sandbox: {path}") from exc


def _last_lines(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, cut between lines: a cut inside a line
    could leave part of a secret that redaction downstream no longer recognises."""
    if len(text) <= limit:
        return text
    return text[-limit:].partition("\n")[2] or "(its last line is too long to show)"
