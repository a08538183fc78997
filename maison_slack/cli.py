"""`maison-cli`: chat with Claude Code running in a Daytona sandbox, from a terminal."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import os
import sys
from typing import TextIO

from maison_slack.core.credentials import CREDENTIAL_NAMES, CUSTOM_HEADERS, SecretsUnavailableError
from maison_slack.core.errors import MaisonError
from maison_slack.core.events import StreamEvent
from maison_slack.core.maison import Maison
from maison_slack.core.sandbox import MaisonSandbox
from maison_slack.core.summary import describe_tool, run_cost, run_model, run_stats

EXIT_OK, EXIT_RUN_FAILED, EXIT_CONFIG = 0, 1, 2
QUIT_WORDS = {"quit", "exit", ":q"}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="maison-cli", description="Run Claude Code in a Daytona sandbox.")
    parser.add_argument("-p", "--prompt", help="run one prompt and exit (default: interactive chat)")
    parser.add_argument("--instructions", help="text appended to Claude Code's system prompt")
    parser.add_argument("--snapshot", default="daytona-small", help="Daytona snapshot (default: %(default)s)")
    parser.add_argument("--debug", action="store_true", help="print every raw event")
    parser.add_argument("--key-in-sandbox", action="store_true",
                        help="put the API key in the sandbox's environment instead of a Daytona Secret "
                             "(for organizations without Secrets; anything Claude runs can then read it)")
    return parser.parse_args(argv)


def missing_configuration(env: dict[str, str]) -> list[str]:
    missing = []
    if not env.get("DAYTONA_API_KEY") and not (env.get("DAYTONA_JWT_TOKEN") and env.get("DAYTONA_ORGANIZATION_ID")):
        missing.append("DAYTONA_API_KEY")
    if not env.get("ANTHROPIC_API_KEY"):
        missing.append("ANTHROPIC_API_KEY")
    return missing


class Terminal:
    """Renders events: text as it streams, tool calls as short lines, errors on stderr."""

    def __init__(self, out: TextIO, err: TextIO, debug: bool) -> None:
        self.out, self.err, self.debug = out, err, debug
        self.color = out.isatty()
        self._at_line_start = True

    def _write(self, text: str) -> None:
        if text:
            self.out.write(text)
            self.out.flush()
            self._at_line_start = text.endswith("\n")

    def _line(self, text: str) -> None:
        if not self._at_line_start:
            self._write("\n")
        self._write(text + "\n")

    def _dim(self, text: str) -> str:
        return f"\033[2m{text}\033[0m" if self.color else text

    def show(self, event: StreamEvent) -> None:
        if self.debug:
            print(f"[{event.type}] {event.data}", file=self.err, flush=True)
        if event.type == "text":
            self._write(event.content)
        elif event.type == "thinking" and self.color:
            self._write(self._dim(event.content))
        elif event.type == "tool_use":
            self._line(self._dim(f"▸ {describe_tool(event.content, event.data.get('input'))}"))
        elif event.type == "result":
            self.result(event)
        elif event.type == "stderr" and self.debug:
            print(f"[stderr] {event.content}", file=self.err, flush=True)

    def result(self, event: StreamEvent) -> None:
        if not self._at_line_start:
            self._write("\n")
        data = event.data
        if event.is_error:
            print(f"maison-cli: the run failed: {event.content or data.get('subtype')}", file=self.err, flush=True)
        stats = run_stats(data.get("duration_ms"), data.get("num_turns"), run_cost(data), run_model(data))
        if stats:
            print(self._dim(f"({stats})"), file=self.err, flush=True)


@contextlib.asynccontextmanager
async def spinner(message: str, stream: TextIO):
    """Show that something is happening while the sandbox is created."""
    if not stream.isatty():
        print(f"{message}…", file=stream, flush=True)
        yield lambda text: print(f"  {text}", file=stream, flush=True)
        return
    status = [message]

    async def spin() -> None:
        for frame in itertools.cycle("⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"):
            stream.write(f"\r\033[K{frame} {status[0]}…")
            stream.flush()
            await asyncio.sleep(0.1)

    task = asyncio.create_task(spin())
    try:
        yield lambda text: status.__setitem__(0, text)
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        stream.write("\r\033[K")
        stream.flush()


class LineReader:
    """Reads stdin lines without blocking the event loop (TTY or pipe).

    Reads the file descriptor directly: Python's buffered `sys.stdin` could hold lines the
    event loop never hears about.
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = b""
        self._eof = False

    async def read_line(self, prompt: str) -> str | None:
        """The next line without its newline, or None at end of input."""
        sys.stdout.write(prompt)
        sys.stdout.flush()
        while b"\n" not in self._buffer and not self._eof:
            await self._fill()
        if not self._buffer and self._eof:
            return None
        line, _, self._buffer = self._buffer.partition(b"\n")
        return line.decode("utf-8", errors="replace")

    async def _fill(self) -> None:
        loop = asyncio.get_running_loop()
        readable: asyncio.Future[None] = loop.create_future()
        loop.add_reader(self._fd, lambda: readable.done() or readable.set_result(None))
        try:
            await readable
        finally:
            loop.remove_reader(self._fd)
        data = os.read(self._fd, 65536)
        self._buffer += data
        self._eof = not data


async def run_prompt(sandbox: MaisonSandbox, terminal: Terminal, prompt: str, instructions: str | None,
                     continue_conversation: bool) -> bool:
    """Stream one prompt; returns whether the run succeeded."""
    ok = True
    stream = sandbox.stream(prompt, instructions=instructions, continue_conversation=continue_conversation)
    try:
        async for event in stream:
            terminal.show(event)
            if event.type == "result":
                ok = not event.is_error
    finally:
        await stream.aclose()
    return ok


def secret_prefix() -> str:
    """Secret names of this user's credentials: named after a digest of them, so two people of
    one organization never overwrite each other's key (and no name reveals whose it is)."""
    values = "\0".join(os.environ.get(name, "") for name in (*CREDENTIAL_NAMES, CUSTOM_HEADERS))
    return "cli_" + hashlib.sha256(values.encode()).hexdigest()[:12]


async def chat(args: argparse.Namespace) -> int:
    terminal = Terminal(sys.stdout, sys.stderr, args.debug)
    async with spinner("Creating a sandbox", sys.stderr) as progress:
        sandbox = await Maison.create_sandbox_for_claude(
            snapshot=args.snapshot, on_progress=progress, secret_prefix=None if args.key_in_sandbox else secret_prefix())
    print(f"Sandbox {sandbox.id} ready.", file=sys.stderr, flush=True)
    try:
        if args.prompt is not None:
            ok = await run_prompt(sandbox, terminal, args.prompt, args.instructions, False)
            return EXIT_OK if ok else EXIT_RUN_FAILED
        print("Type a message for Claude; 'quit' or Ctrl+C deletes the sandbox and exits.", file=sys.stderr)
        turns = 0
        reader = LineReader(sys.stdin.fileno())
        while True:
            line = await reader.read_line("\nYou: ")
            if line is None or line.strip().lower() in QUIT_WORDS:
                return EXIT_OK
            if not line.strip():
                continue
            await run_prompt(sandbox, terminal, line, args.instructions, continue_conversation=turns > 0)
            turns += 1
    finally:
        print("\nDeleting the sandbox…", file=sys.stderr, flush=True)
        await asyncio.shield(sandbox.close())


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    missing = missing_configuration(dict(os.environ))
    if missing:
        print(f"maison-cli: missing configuration: {', '.join(missing)} (set them in the environment)",
              file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    try:
        code = asyncio.run(chat(args))
    except KeyboardInterrupt:
        code = 130
    except SecretsUnavailableError as exc:
        print(f"maison-cli: error: {exc} Or run with --key-in-sandbox (the key is then readable in the sandbox).",
              file=sys.stderr)
        code = EXIT_CONFIG
    except (MaisonError, ValueError) as exc:
        print(f"maison-cli: error: {exc}", file=sys.stderr)
        code = EXIT_RUN_FAILED
    sys.exit(code)


if __name__ == "__main__":
    main()
