"""Runs under stress: cancels in every phase, abandoned runs, huge output lines, Retry-After.

Same setup as test_core.py: the real daytona SDK and the real Claude Code CLI against the
local doubles.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from maison_slack import Maison, MaisonSandbox
from tests.doubles.anthropic import Hang, Text, Turn
from tests.doubles.daytona import DaytonaDouble, SessionCommand
from tests.test_core import claude_processes, collect, maison_env, wait_gone  # noqa: F401, F811 (a fixture)


async def fault_consumed(daytona: DaytonaDouble) -> None:
    """Wait until every injected fault has been served."""
    while daytona.faults:
        await asyncio.sleep(0.01)


def drop_log_streams(daytona: DaytonaDouble, sandbox_id: str) -> None:
    """Cut the sandbox's log WebSockets without a close frame, as a failing proxy would."""
    for ws in list(daytona.sandbox(sandbox_id).websockets):
        ws._dd_transport.abort()  # the double keeps the transport for exactly this


def session_commands(daytona: DaytonaDouble, sandbox_id: str) -> list[SessionCommand]:
    return [cmd for session in daytona.sandbox(sandbox_id).sessions.values() for cmd in session.commands.values()]


async def test_cancel_while_the_prompt_upload_waits_out_a_429(maison_env):
    daytona, anthropic = maison_env
    async with await Maison.create_sandbox_for_claude() as sandbox:
        await collect(sandbox.stream("hi"))  # the run script is installed: the next upload is the prompt's
        launched, requests = len(session_commands(daytona, sandbox.id)), len(anthropic.requests)
        daytona.inject("POST", r"/files/bulk-upload", 429, headers={"Retry-After": "20"})

        async def cancel_during_the_retry_wait() -> bool:
            await fault_consumed(daytona)
            assert sandbox.running
            return await sandbox.cancel("stopped by test")

        started = time.monotonic()
        events, cancelled = await asyncio.gather(collect(sandbox.stream("never runs")), cancel_during_the_retry_wait())
        assert cancelled
        assert time.monotonic() - started < 10, "the cancel must not wait out the Retry-After"
        assert [e.type for e in events] == ["result"]
        assert events[0].data["subtype"] == "cancelled" and "stopped by test" in events[0].content
        assert events[0].data["session_id"] == sandbox.claude_session_id
        # Claude never ran: nothing launched, no process, not a single API request.
        assert len(session_commands(daytona, sandbox.id)) == launched
        assert not claude_processes(daytona, sandbox.id)
        assert len(anthropic.requests) == requests
        assert not sandbox.running and not await sandbox.cancel()


async def test_cancel_while_the_launch_is_in_flight_stops_the_script_before_claude(maison_env):
    daytona, anthropic = maison_env
    async with await Maison.create_sandbox_for_claude() as sandbox:
        # A 429 on the launch keeps it in flight (retried after Retry-After) while we cancel:
        # the kill reaches the sandbox before the command does, so only the marker can stop it.
        daytona.inject("POST", r"/process/session/[^/]+/exec", 429, headers={"Retry-After": "2"})

        async def cancel_during_the_launch() -> bool:
            await fault_consumed(daytona)
            return await sandbox.cancel("stopped by test")

        events, cancelled = await asyncio.gather(collect(sandbox.stream("never runs")), cancel_during_the_launch())
        assert cancelled
        result = next(e for e in events if e.type == "result")
        assert result.data["subtype"] == "cancelled" and result.data["exit_code"] == 143
        [command] = session_commands(daytona, sandbox.id)
        assert "run.sh" in command.command and command.exit_code == 143
        assert not claude_processes(daytona, sandbox.id)
        assert anthropic.requests == []


async def test_kill_stale_runs_stops_what_a_crashed_client_left_running(maison_env):
    daytona, anthropic = maison_env
    anthropic.responder = lambda body: Hang(text="working " * 5)
    crashed = await Maison.create_sandbox_for_claude()
    stream = crashed.stream("take your time")
    restarted: MaisonSandbox | None = None
    try:
        async for event in stream:
            if event.type == "text":
                break
        assert claude_processes(daytona, crashed.id)
        assert await crashed.kill_stale_runs() == 0, "a client's own run is not stale"
        assert claude_processes(daytona, crashed.id)

        # The bot restarts: a new client attaches and finds the old run still going.
        restarted = await Maison.attach(crashed.id)
        assert await restarted.kill_stale_runs() == 1
        assert not claude_processes(daytona, crashed.id)
        assert await restarted.kill_stale_runs() == 0
    finally:
        await stream.aclose()
        if restarted is not None:
            await restarted.close()
        await crashed.close()


async def test_polling_reads_an_output_line_longer_than_its_chunk(maison_env):
    daytona, anthropic = maison_env
    daytona.inject("GET", r"/command/[^/]+/logs", 502)  # no WebSocket: the whole run is polled
    # Mixed 1- to 4-byte characters, so reads end mid-character as well as mid-line.
    text = ("long line ünï ☃ \U0001f600 " * 70_000)[:1_500_000]
    anthropic.responder = lambda body: Turn([Text(text)], chunk_size=len(text))
    async with await Maison.create_sandbox_for_claude() as sandbox:
        events = await collect(sandbox.stream("one huge answer", poll_interval=0.05))
        assert "".join(e.content for e in events if e.type == "text") == text
        result = events[-1]
        assert result.type == "result" and not result.is_error
        assert result.content == text
        assert result.data["session_id"] and result.data["session_id"] == sandbox.claude_session_id


async def test_polling_takes_over_exactly_where_a_dropped_websocket_stopped(maison_env, caplog):
    daytona, anthropic = maison_env
    text = "".join(f"{i}: ünïcødé ☃ \U0001f600\n" for i in range(60))
    anthropic.responder = lambda body: Turn([Text(text)], chunk_size=7, delay=0.01)
    async with await Maison.create_sandbox_for_claude() as sandbox:
        events, dropped = [], False
        async for event in sandbox.stream("tell me", poll_interval=0.05):
            events.append(event)
            if event.type == "text" and not dropped:
                drop_log_streams(daytona, sandbox.id)
                dropped = True
        assert dropped and "polling its output file instead" in caplog.text
        assert "".join(e.content for e in events if e.type == "text") == text  # nothing lost, nothing twice
        assert events[-1].type == "result" and events[-1].content == text


@pytest.mark.parametrize(
    ("route", "retry_after"),
    [
        ("/files/bulk-upload", 2),  # the SDK drops the headers of upload errors
        ("/files/bulk-download", 1),  # ...and the status of download errors
        ("/process/execute", 1),
        ("/files/info", 1),
    ],
)
async def test_toolbox_429_is_retried_after_retry_after(maison_env, route, retry_after):
    daytona, _ = maison_env
    async with await Maison.create_sandbox_for_claude() as sandbox:
        await sandbox.write_file("data/in.txt", "payload")
        method, operation, expected = {
            "/files/bulk-upload": ("POST", lambda: sandbox.write_file("data/out.txt", "written"), None),
            "/files/bulk-download": ("POST", lambda: sandbox.read_file("data/in.txt"), "payload"),
            "/process/execute": ("POST", lambda: sandbox.run_setup("echo ran", timeout=30), (0, "ran\n")),
            "/files/info": ("GET", lambda: sandbox.file_size("data/in.txt"), len("payload")),
        }[route]
        daytona.inject(method, route, 429, headers={"Retry-After": str(retry_after)})
        started = time.monotonic()
        assert await operation() == expected
        assert time.monotonic() - started >= retry_after
        assert not daytona.faults


async def test_file_size(maison_env):
    daytona, _ = maison_env
    async with await Maison.create_sandbox_for_claude() as sandbox:
        await sandbox.write_file("data/blob.bin", b"\0" * 123_456)
        assert await sandbox.file_size("data/blob.bin") == 123_456
        with pytest.raises(FileNotFoundError, match="data/missing"):
            await sandbox.file_size("data/missing")
        with pytest.raises(IsADirectoryError):
            await sandbox.file_size("data")
    await wait_gone(daytona, sandbox.id)


async def test_async_with_closes_the_sandbox_even_on_error(maison_env):
    daytona, _ = maison_env
    with pytest.raises(RuntimeError, match="boom"):
        async with await Maison.create_sandbox_for_claude() as sandbox:
            assert isinstance(sandbox, MaisonSandbox) and sandbox.id in daytona.sandboxes
            raise RuntimeError("boom")
    await wait_gone(daytona, sandbox.id)
