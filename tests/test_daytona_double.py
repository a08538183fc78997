"""The Daytona double, driven by the real `daytona` SDK: if these pass, the wire contract the
rest of the suite relies on holds (status codes, DTOs, events, streaming, errors)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable

import pytest
import pytest_asyncio
from daytona import (
    AsyncDaytona,
    CreateSandboxFromSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaError,
    DaytonaFileNotFoundError,
    DaytonaNotFoundError,
    DaytonaProcessExecutionTimeoutError,
    DaytonaRateLimitError,
    DaytonaServiceUnavailableError,
    ListSandboxesQuery,
    SessionExecuteRequest,
)

from tests.doubles.daytona import DaytonaDouble, SnapshotSpec


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's aiohttp session uses trust_env=True.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest_asyncio.fixture
async def double() -> AsyncIterator[DaytonaDouble]:
    async with DaytonaDouble(snapshots={"daytona-small": SnapshotSpec(env={"IMAGE_VAR": "from-image"})}) as d:
        yield d


@pytest_asyncio.fixture
async def client(double: DaytonaDouble) -> AsyncIterator[AsyncDaytona]:
    async with AsyncDaytona(DaytonaConfig(api_key=double.api_key, api_url=double.api_url)) as daytona:
        yield daytona


def params(**kwargs: object) -> CreateSandboxFromSnapshotParams:
    return CreateSandboxFromSnapshotParams(snapshot="daytona-small", **kwargs)


async def test_lifecycle_exec_stop_start_delete(double: DaytonaDouble, client: AsyncDaytona) -> None:
    started = time.monotonic()
    sandbox = await client.create(params(env_vars={"SECRET": "s3"}, labels={"suite": "double"}))
    assert time.monotonic() - started < 0.5, "socket.io events should make the state wait fast"
    assert sandbox.state == "started"
    record = double.sandbox(sandbox.id)
    assert record.env == {"SECRET": "s3"}
    assert await sandbox.get_user_home_dir() == str(record.home)

    res = await sandbox.process.exec('echo "$SECRET $IMAGE_VAR $PWD"; echo err >&2; exit 3')
    assert res.exit_code == 3
    assert res.result == f"s3 from-image {record.home}\nerr\n"

    await sandbox.stop()
    assert sandbox.state == "stopped"
    with pytest.raises(DaytonaBadRequestError, match="no IP address found"):
        await sandbox.process.exec("true")

    await sandbox.start()
    assert (await sandbox.process.exec("echo back")).result == "back\n"

    await sandbox.delete()
    await asyncio.sleep(double.start_delay * 3)
    with pytest.raises(DaytonaNotFoundError):
        await client.get(sandbox.id)


async def test_session_follow_streams_while_running(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    await sandbox.process.create_session("s1")
    cmd = await sandbox.process.execute_session_command(
        "s1",
        SessionExecuteRequest(
            command="echo one; sleep 0.3; printf partial >&2; sleep 0.3; echo two", run_async=True
        ),
    )
    first_line = asyncio.Event()
    out: list[str] = []
    err: list[str] = []

    def on_stdout(chunk: str) -> None:
        out.append(chunk)
        first_line.set()

    follow = asyncio.create_task(
        sandbox.process.get_session_command_logs_async("s1", cmd.cmd_id, on_stdout, err.append)
    )
    await asyncio.wait_for(first_line.wait(), 0.25)
    assert "".join(out) == "one\n"
    running = await sandbox.process.get_session_command("s1", cmd.cmd_id)
    assert running.exit_code is None

    await asyncio.wait_for(follow, 5)
    assert "".join(out) == "one\ntwo\n"
    assert "".join(err) == "partial\n"  # partial line flushed at EOF with a newline
    done = await sandbox.process.get_session_command("s1", cmd.cmd_id)
    assert done.exit_code == 0
    logs = await sandbox.process.get_session_command_logs("s1", cmd.cmd_id)
    assert (logs.stdout, logs.stderr) == ("one\ntwo\n", "partial\n")


async def test_session_state_persists_and_sync_exec(client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    await sandbox.process.create_session("s")
    await sandbox.process.execute_session_command(
        "s", SessionExecuteRequest(command="mkdir -p sub && cd sub && export X=42")
    )
    res = await sandbox.process.execute_session_command(
        "s", SessionExecuteRequest(command='echo "X=$X in $(basename $PWD)"; echo oops >&2')
    )
    assert res.exit_code == 0
    assert res.stdout == "X=42 in sub\n"
    assert res.stderr == "oops\n"
    session = await sandbox.process.get_session("s")
    assert len(session.commands) == 2
    await sandbox.process.delete_session("s")
    with pytest.raises(DaytonaNotFoundError):
        await sandbox.process.get_session("s")


async def test_files_round_trip_and_errors(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    await sandbox.fs.upload_file(b"payload-123", "data/out.txt")
    home = double.sandbox(sandbox.id).home
    assert (home / "data" / "out.txt").read_bytes() == b"payload-123"
    assert await sandbox.fs.download_file("data/out.txt") == b"payload-123"
    assert await sandbox.fs.download_file(str(home / "data/out.txt")) == b"payload-123"
    names = [f.name for f in await sandbox.fs.list_files("data")]
    assert names == ["out.txt"]
    with pytest.raises(DaytonaFileNotFoundError):
        await sandbox.fs.download_file("data/missing.txt")
    await sandbox.fs.delete_file("data/out.txt")
    with pytest.raises(DaytonaFileNotFoundError):
        await sandbox.fs.get_file_info("data/out.txt")


async def test_exec_timeout_kills_the_process_group(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    with pytest.raises(DaytonaProcessExecutionTimeoutError):
        await sandbox.process.exec("sleep 30 & sleep 30", timeout=1)
    assert double.processes(sandbox.id) == []


async def test_auto_stop_kills_processes(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    await sandbox.process.create_session("s")
    await sandbox.process.execute_session_command("s", SessionExecuteRequest(command="sleep 30", run_async=True))
    await asyncio.sleep(0.1)
    assert any("sleep 30" in cmdline for _, cmdline in double.processes(sandbox.id))
    double.auto_stop(sandbox.id)
    assert double.processes(sandbox.id) == []
    await asyncio.sleep(0.1)
    assert sandbox.state == "stopped"  # via the socket.io event, without a GET
    with pytest.raises(DaytonaBadRequestError):
        await sandbox.process.exec("true")


async def test_injected_errors_and_auth(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    double.inject("GET", r"^/api/sandbox/", 429, headers={"Retry-After": "1"})
    with pytest.raises(DaytonaRateLimitError):
        await client.get(sandbox.id)
    assert (await client.get(sandbox.id)).id == sandbox.id
    double.inject("POST", r"/process/execute$", 503, body="<html>upstream down</html>")
    with pytest.raises(DaytonaServiceUnavailableError):
        await sandbox.process.exec("true")
    with pytest.raises(DaytonaBadRequestError, match="Snapshot nope not found"):
        await client.create(CreateSandboxFromSnapshotParams(snapshot="nope"))
    async with AsyncDaytona(DaytonaConfig(api_key="wrong", api_url=double.api_url)) as intruder:
        with pytest.raises(DaytonaAuthenticationError):
            await intruder.get(sandbox.id)


async def test_list_by_labels(client: AsyncDaytona) -> None:
    a = await client.create(params(labels={"thread": "a"}))
    await client.create(params(labels={"thread": "b"}))
    found = [s.id async for s in client.list(ListSandboxesQuery(labels={"thread": "a"}, limit=1))]
    assert found == [a.id]
    everything = [s.id async for s in client.list(ListSandboxesQuery(limit=1))]
    assert len(everything) == 2


async def test_claude_is_on_the_sandbox_path(daytona_double: DaytonaDouble) -> None:
    async with AsyncDaytona(DaytonaConfig(api_key=daytona_double.api_key, api_url=daytona_double.api_url)) as d:
        sandbox = await d.create(params())
        res = await sandbox.process.exec("claude --version")
        assert res.exit_code == 0, res.result
        assert res.result.startswith("2.1.332")
        with pytest.raises(DaytonaError):
            await sandbox.process.exec("true", cwd="/definitely/missing")


async def test_injected_delay_slows_only_the_matching_call(double: DaytonaDouble, client: AsyncDaytona) -> None:
    doomed = await client.create(params())
    other = await client.create(params())
    double.inject("DELETE", rf"^/api/sandbox/{doomed.id}$", None, delay=1.0)

    async def timed(call: Awaitable[object]) -> float:
        started = time.monotonic()
        await call
        return time.monotonic() - started

    slow, fast = await asyncio.gather(timed(doomed.delete()), timed(client.get(other.id)))
    assert slow >= 1.0 and fast < 0.5
    await asyncio.sleep(double.start_delay * 3)
    with pytest.raises(DaytonaNotFoundError):  # after the wait the delete was handled normally
        await client.get(doomed.id)

    double.inject("GET", rf"^/api/sandbox/{other.id}$", 503, delay=0.3)  # slow, then failing
    started = time.monotonic()
    with pytest.raises(DaytonaServiceUnavailableError):
        await client.get(other.id)
    assert time.monotonic() - started >= 0.3
    with pytest.raises(ValueError):
        double.inject("GET", r"^/api/sandbox/", None, body="no status, no body")
