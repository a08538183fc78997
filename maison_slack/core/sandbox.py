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
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import shlex
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from daytona import AsyncDaytona, AsyncSandbox, DaytonaFileNotFoundError, FileUpload, SessionExecuteRequest

from maison_slack.core.daytona_calls import call
from maison_slack.core.errors import ClaudeNotFoundError, MaisonError, RunTimeoutError, SandboxGoneError
from maison_slack.core.events import StreamEvent, StreamParser

logger = logging.getLogger(__name__)

RUN_SCRIPT = r"""#!/usr/bin/env bash
# One Claude Code run for maison-slack. $1 is the run directory, the rest are claude's
# arguments. The prompt comes from a file on stdin, never from the command line.
run_dir=$1
shift
export PATH="$HOME/.maison/npm/bin:$PATH"  # where Maison installs Claude Code if the image lacks it
echo "$$" > "$run_dir/pid"
claude "$@" < "$run_dir/prompt" 2> "$run_dir/stderr" | tee "$run_dir/out.jsonl"
rc=${PIPESTATUS[0]}
echo "$rc" > "$run_dir/exit_code"
if [ -s "$run_dir/stderr" ]; then cat "$run_dir/stderr" >&2; fi
exit "$rc"
"""

#: Kills the run's whole process session (Claude and the tools it started).
#: Returns only once they are gone: TERM, up to 2 s of grace, then KILL.
KILL_SCRIPT = (
    'pid=$(cat {run_dir}/pid 2>/dev/null) || exit 0; [ -n "$pid" ] || exit 0; '
    'kill -TERM -- -"$pid" 2>/dev/null; pkill -TERM -s "$pid" 2>/dev/null; '
    'for _ in $(seq 20); do pgrep -s "$pid" >/dev/null || exit 0; sleep 0.1; done; '
    'kill -KILL -- -"$pid" 2>/dev/null; pkill -KILL -s "$pid" 2>/dev/null; '
    'for _ in $(seq 20); do pgrep -s "$pid" >/dev/null || exit 0; sleep 0.1; done; true'
)

CLAUDE_FLAGS = (
    "-p", "--output-format", "stream-json", "--verbose",
    "--include-partial-messages", "--dangerously-skip-permissions",
)

_POLL_CHUNK_BYTES = 1 << 20
_UUID = re.compile(r"^[0-9a-fA-F-]{36}$")
_SAFE_ARG = re.compile(r"^[A-Za-z0-9._:/@\[\]-]+$")


@dataclass
class _Run:
    """The state of one `stream()` call."""

    run_id: str
    run_dir: str
    parser: StreamParser = field(default_factory=StreamParser)
    queue: asyncio.Queue[StreamEvent | None] = field(default_factory=asyncio.Queue)
    cmd_id: str | None = None
    offset: int = 0  # bytes of out.jsonl already received
    stderr: list[str] = field(default_factory=list)
    saw_result: bool = False
    cancelled_by: str | None = None
    finished: bool = False
    killing: asyncio.Lock = field(default_factory=asyncio.Lock)  # held while a kill is in progress

    def emit_stdout(self, text: str) -> None:
        self.offset += len(text.encode("utf-8"))
        for event in self.parser.feed(text):
            self.saw_result |= event.type == "result"
            self.queue.put_nowait(event)


class MaisonSandbox:
    """A Daytona sandbox with Claude Code, ready to stream runs.

    Make one with `Maison.create_sandbox_for_claude()` or `Maison.attach()`.
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
        self._session = f"maison-{uuid.uuid4().hex[:12]}"
        self._lock = asyncio.Lock()
        self._run: _Run | None = None
        #: Claude Code's conversation id; `continue_conversation=True` resumes it.
        self.claude_session_id = claude_session_id

    @property
    def id(self) -> str:
        return self._sandbox.id

    @property
    def state(self) -> str:
        return str(getattr(self._sandbox.state, "value", self._sandbox.state))

    async def refresh_state(self) -> str:
        """Ask Daytona for the sandbox's state now; raises `SandboxGoneError` if it no longer exists."""
        await call("Checking the sandbox", self._sandbox.refresh_data)
        return self.state

    @property
    def running(self) -> bool:
        return self._run is not None and not self._run.finished

    async def _prepare(self) -> str:
        """Once per object: find the work dir, install the run script, check for `claude`."""
        if self._work_dir is not None:
            return self._work_dir
        work_dir = await call("Reading the sandbox's work dir", self._sandbox.get_work_dir)
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
        self._work_dir = work_dir
        return work_dir

    def _claude_args(self, run: _Run, instructions: str | None, continue_conversation: bool) -> list[str]:
        args = list(CLAUDE_FLAGS)
        if continue_conversation:
            if self.claude_session_id and _UUID.match(self.claude_session_id):
                args += ["--resume", self.claude_session_id]
            else:
                args.append("--continue")
        if instructions:
            args += ["--append-system-prompt-file", f"{run.run_dir}/instructions"]
        if self._model:
            if not _SAFE_ARG.match(self._model):
                raise ValueError(f"Not a model name: {self._model!r}")
            args += ["--model", self._model]
        return args

    async def stream(
        self,
        prompt: str,
        instructions: str | None = None,
        continue_conversation: bool = False,
        poll_interval: float = 0.3,
        *,
        timeout: float | None = None,
    ) -> AsyncIterator[StreamEvent]:
        """Run Claude Code on `prompt` and yield its events as they happen.

        `instructions` are appended to Claude Code's system prompt. `continue_conversation`
        resumes this sandbox's conversation so Claude keeps the earlier context.
        `poll_interval` paces the fallback polling used only when log streaming fails.
        `timeout` (default: the sandbox's `run_timeout`) kills the run and raises
        `RunTimeoutError`. Every run ends with one `result` event (synthesised when Claude
        Code exits without one, e.g. when cancelled), then a `stderr` event if there was any.
        Closing the iterator early kills the run.
        """
        async with self._lock:
            work_dir = await self._prepare()
            run_id = f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:8]}"
            run = _Run(run_id=run_id, run_dir=f"{work_dir}/.maison/runs/{run_id}")
            uploads = [FileUpload(prompt.encode("utf-8"), f"{run.run_dir}/prompt")]
            if instructions:
                uploads.append(FileUpload(instructions.encode("utf-8"), f"{run.run_dir}/instructions"))
            await call("Uploading the prompt", lambda: self._sandbox.fs.upload_files(uploads))
            command = (
                f"cd {shlex.quote(work_dir)} && setsid --wait bash .maison/run.sh {shlex.quote(run.run_dir)} "
                + shlex.join(self._claude_args(run, instructions, continue_conversation))
            )
            response = await call(
                "Starting Claude Code",
                lambda: self._sandbox.process.execute_session_command(
                    self._session, SessionExecuteRequest(command=command, run_async=True)
                ),
                retry=False,
            )
            run.cmd_id = response.cmd_id
            self._run = run
            pump = asyncio.create_task(self._pump(run, poll_interval), name=f"maison-pump-{run_id}")
            limit = timeout if timeout is not None else self._run_timeout
            deadline = None if limit is None else asyncio.get_running_loop().time() + limit
            try:
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
                    yield event
                await pump  # re-raise a failure of the pump
            finally:
                if not run.finished:
                    await self._kill(run, "closed")
                if not pump.done():
                    pump.cancel()
                    with contextlib.suppress(asyncio.CancelledError, MaisonError):
                        await pump
                self._run = None

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
        """Read out.jsonl from the received offset until the command has exited and all is read."""
        logger.info("Polling run %s from byte %d", run.run_id, run.offset)
        exit_code: int | None = None
        while True:
            command = (
                f"tail -c +{run.offset + 1} {shlex.quote(run.run_dir)}/out.jsonl 2>/dev/null "
                f"| head -c {_POLL_CHUNK_BYTES}"
            )
            response = await call("Reading Claude's output", lambda: self._sandbox.process.exec(command, timeout=60))
            text = response.result or ""
            complete = text[: text.rfind("\n") + 1]
            if complete:
                run.emit_stdout(complete)
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
        for event in run.parser.finish():
            run.saw_result |= event.type == "result"
            run.queue.put_nowait(event)
        stderr = "".join(run.stderr).strip()
        if not run.saw_result:
            if run.cancelled_by:
                text = f"Run stopped ({run.cancelled_by})."
                subtype = "cancelled"
            else:
                tail = f": {stderr[-2000:]}" if stderr else ""
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
        run.cancelled_by = run.cancelled_by or reason
        async with run.killing:
            try:
                await call(
                    "Stopping Claude Code",
                    lambda: self._sandbox.process.exec(KILL_SCRIPT.format(run_dir=shlex.quote(run.run_dir)), timeout=30),
                )
            except MaisonError as exc:
                logger.warning("Could not kill run %s: %s", run.run_id, exc)

    async def cancel(self, reason: str = "cancelled") -> bool:
        """Kill the running Claude Code process, if any. The stream then ends with a
        `result` event of subtype `cancelled`. Returns whether a run was running."""
        run = self._run
        if run is None or run.finished:
            return False
        await self._kill(run, reason)
        return True

    async def read_file(self, path: str) -> str:
        """Read a text file from the sandbox (relative paths: from the work dir)."""
        return (await self.read_bytes(path)).decode("utf-8", errors="replace")

    async def read_bytes(self, path: str) -> bytes:
        try:
            return await call(f"Reading {path}", lambda: self._sandbox.fs.download_file(path))
        except MaisonError as exc:
            if isinstance(exc.__cause__, DaytonaFileNotFoundError):
                raise FileNotFoundError(f"No such file in the sandbox: {path}") from exc
            raise

    async def write_file(self, path: str, content: bytes | str) -> None:
        """Write a file into the sandbox, creating parent directories."""
        data = content.encode("utf-8") if isinstance(content, str) else content
        await call(f"Writing {path}", lambda: self._sandbox.fs.upload_file(data, path))

    async def run_setup(self, script: str, *, timeout: int) -> tuple[int, str]:
        """Run a fixed setup script (no user text!) and return its exit code and output."""
        result = await call("Setting up the sandbox", lambda: self._sandbox.process.exec(script, timeout=timeout))
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
