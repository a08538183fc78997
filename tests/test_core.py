"""The Maison core end to end: real daytona SDK + real Claude Code CLI + the local doubles."""

from __future__ import annotations

import asyncio
import json

import pytest
from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

from maison_slack import (
    ClaudeNotFoundError,
    InstallError,
    Maison,
    RunTimeoutError,
    SandboxGoneError,
)
from tests.doubles.anthropic import (
    ApiError,
    Hang,
    Text,
    Thinking,
    ToolUse,
    Turn,
    default_responder,
    has_tool_result,
    last_user_text,
    user_prompts,
)
from tests.doubles.daytona import SnapshotSpec


@pytest.fixture
def maison_env(monkeypatch, daytona_double, anthropic_double):
    """The environment a user of the library would set, pointing at the doubles."""
    monkeypatch.setenv("DAYTONA_API_KEY", daytona_double.api_key)
    monkeypatch.setenv("DAYTONA_API_URL", daytona_double.api_url)
    monkeypatch.setenv("ANTHROPIC_API_KEY", anthropic_double.api_key)
    monkeypatch.setenv("ANTHROPIC_BASE_URL", anthropic_double.url)
    monkeypatch.setenv("CLAUDE_CODE_MAX_RETRIES", "0")
    return daytona_double, anthropic_double


def commands_run(daytona, sandbox_id: str) -> list[str]:
    return [cmd.command for session in daytona.sandbox(sandbox_id).sessions.values() for cmd in session.commands.values()]


async def wait_gone(daytona, sandbox_id: str, timeout: float = 5) -> None:
    """Deleting is asynchronous in Daytona (state `destroying` first)."""
    for _ in range(int(timeout / 0.05)):
        if sandbox_id not in daytona.sandboxes:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandbox {sandbox_id} still exists")


def claude_processes(daytona, sandbox_id: str) -> list[str]:
    """Command lines of `claude` processes still alive in the sandbox."""
    return [cmd for _, cmd in daytona.processes(sandbox_id) if "claude" in cmd]


async def collect(stream) -> list:
    return [event async for event in stream]


async def test_create_stream_tool_read_continue_close(maison_env):
    daytona, anthropic = maison_env

    def responder(body):
        if has_tool_result(body):
            return Turn([Text("All done: out.txt is written.")])
        if "build it" in last_user_text(body):
            return Turn([Thinking("Plan: write the file with Bash."), Text("I'll write out.txt now, in a moment."),
                         ToolUse("Bash", {"command": "echo built > out.txt", "description": "write"})])
        return default_responder(body)

    anthropic.responder = responder
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        events = await collect(sandbox.stream("please build it"))
        kinds = [e.type for e in events if e.type != "system"]
        assert kinds.index("thinking") < kinds.index("text") < kinds.index("tool_use") < kinds.index("tool_result")
        assert kinds[-1] == "result" and not events[-1].is_error
        first_text = [e.content for e in events[: [e.type for e in events].index("tool_use")] if e.type == "text"]
        assert len(first_text) > 1 and "".join(first_text) == "I'll write out.txt now, in a moment."
        tool = next(e for e in events if e.type == "tool_use")
        assert tool.data["name"] == "Bash" and tool.data["input"]["command"] == "echo built > out.txt"
        assert "".join(e.content for e in events if e.type == "text").endswith("All done: out.txt is written.")
        assert await sandbox.read_file("out.txt") == "built\n"

        events = await collect(sandbox.stream("RECALL what I asked", continue_conversation=True))
        assert "please build it" in user_prompts(anthropic.requests[-1].body)
        assert events[-1].content.startswith("I was sent 1 earlier user prompts")

        # Neither the key nor user text ever reached a command line.
        for command in commands_run(daytona, sandbox.id):
            assert anthropic.api_key not in command and "build it" not in command
        assert daytona.sandbox(sandbox.id).env["ANTHROPIC_API_KEY"] == anthropic.api_key
    finally:
        await sandbox.close()
    await wait_gone(daytona, sandbox.id)
    async with AsyncDaytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.api_url)) as client:
        with pytest.raises(Exception, match="not found"):
            await client.get(sandbox.id)


async def test_missing_api_key_creates_nothing(maison_env, monkeypatch):
    daytona, _ = maison_env
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    with pytest.raises(ValueError, match="ANTHROPIC_API_KEY"):
        await Maison.create_sandbox_for_claude()
    assert daytona.sandboxes == {}


async def test_install_failure_deletes_the_sandbox(maison_env, tmp_path):
    daytona, _ = maison_env
    # An image without claude whose npm cannot reach a registry: the install must fail cleanly.
    daytona.snapshots["bare"] = SnapshotSpec(env={"npm_config_offline": "true",
                                                   "npm_config_cache": str(tmp_path / "empty-cache")})
    with pytest.raises(InstallError) as error:
        await Maison.create_sandbox_for_claude(snapshot="bare")
    assert isinstance(error.value, RuntimeError)
    assert "Could not install Claude Code" in str(error.value) and "ENOTCACHED" in str(error.value)
    await asyncio.gather(*(wait_gone(daytona, sandbox_id) for sandbox_id in list(daytona.sandboxes)))


async def test_claude_missing_is_a_clear_runtime_error(maison_env):
    daytona, _ = maison_env
    daytona.snapshots["bare"] = SnapshotSpec()
    async with AsyncDaytona(DaytonaConfig(api_key=daytona.api_key, api_url=daytona.api_url)) as client:
        raw = await client.create(CreateSandboxFromSnapshotParams(snapshot="bare"))
        sandbox = await Maison.attach(raw.id, daytona=client)
        with pytest.raises(ClaudeNotFoundError, match="claude binary was not found"):
            await collect(sandbox.stream("hi"))
        await sandbox.close()


async def test_hostile_prompt_arrives_byte_for_byte(maison_env):
    daytona, anthropic = maison_env
    hostile = "'\"$(touch pwned) `touch pwned2` ${HOME} \\n\n\tünïcødé ☃ \U0001f600 -- --help\n; rm -rf / #"
    prompt = hostile + ("x" * 1000 + "\n") * 200
    assert len(prompt.encode()) > 200_000
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        events = await collect(sandbox.stream(prompt, instructions="Answer as a pirate. $(touch pwned3)"))
        assert not events[-1].is_error
        body = anthropic.requests[-1].body
        assert last_user_text(body) == prompt
        home = daytona.sandbox(sandbox.id).home
        assert not any((home / name).exists() for name in ("pwned", "pwned2", "pwned3"))
        system = json.dumps(body["system"])
        assert "Answer as a pirate. $(touch pwned3)" in system
    finally:
        await sandbox.close()


async def test_api_error_is_an_error_result(maison_env):
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        events = await collect(sandbox.stream("ERROR500 please"))
        assert events[-1].type in ("result", "stderr")
        result = next(e for e in events if e.type == "result")
        assert result.is_error and "API Error" in result.content
    finally:
        await sandbox.close()


async def test_cancel_kills_claude(maison_env):
    daytona, anthropic = maison_env
    anthropic.responder = lambda body: Hang(text="working on it " * 5)
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        events, seen_running = [], False
        async for event in sandbox.stream("take your time"):
            events.append(event)
            if event.type == "text" and not seen_running:
                seen_running = bool(claude_processes(daytona, sandbox.id))
                assert seen_running, "claude should be running while it streams"
                assert await sandbox.cancel("stopped by test")
        result = next(e for e in events if e.type == "result")
        assert result.data["subtype"] == "cancelled" and result.is_error
        assert "stopped by test" in result.content
        assert not claude_processes(daytona, sandbox.id)
        assert not await sandbox.cancel()  # nothing left to cancel
    finally:
        await sandbox.close()


async def test_closing_the_iterator_kills_claude(maison_env):
    daytona, anthropic = maison_env
    anthropic.responder = lambda body: Hang(text="still going " * 5)
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        stream = sandbox.stream("take your time")
        async for event in stream:
            if event.type == "text":
                break
        await stream.aclose()
        assert not claude_processes(daytona, sandbox.id)
        assert not sandbox.running
    finally:
        await sandbox.close()


async def test_run_time_limit(maison_env):
    daytona, anthropic = maison_env
    anthropic.responder = lambda body: Hang()
    sandbox = await Maison.create_sandbox_for_claude(run_timeout=3)
    try:
        with pytest.raises(RunTimeoutError):
            await collect(sandbox.stream("never ends"))
        assert not claude_processes(daytona, sandbox.id)
    finally:
        await sandbox.close()


async def test_sandbox_deleted_mid_stream(maison_env):
    daytona, anthropic = maison_env
    anthropic.responder = lambda body: Hang(text="halfway there " * 3)
    sandbox = await Maison.create_sandbox_for_claude()
    with pytest.raises(SandboxGoneError):
        async for event in sandbox.stream("long task"):
            if event.type == "text" and sandbox.id in daytona.sandboxes:
                daytona.delete_behind_back(sandbox.id)
    await sandbox.close()  # already gone: closing is still fine


async def test_stopped_sandbox_is_started_on_attach(maison_env):
    daytona, _ = maison_env
    sandbox = await Maison.create_sandbox_for_claude()
    await collect(sandbox.stream("hi"))
    daytona.auto_stop(sandbox.id)
    await asyncio.sleep(0.1)
    assert daytona.sandbox(sandbox.id).state == "stopped"
    again = await Maison.attach(sandbox.id, claude_session_id=sandbox.claude_session_id)
    try:
        assert daytona.sandbox(sandbox.id).state == "started"
        events = await collect(again.stream("RECALL", continue_conversation=True))
        assert events[-1].content.startswith("I was sent 1 earlier user prompts")
    finally:
        await again.close()
        await sandbox.close()


async def test_attach_to_a_deleted_sandbox_is_a_typed_error(maison_env):
    daytona, _ = maison_env
    sandbox = await Maison.create_sandbox_for_claude()
    await sandbox.close()
    with pytest.raises(SandboxGoneError):
        await Maison.attach(sandbox.id)


async def test_log_stream_failure_falls_back_to_polling(maison_env):
    daytona, anthropic = maison_env
    daytona.inject("GET", r"/command/[^/]+/logs", 502)
    anthropic.responder = lambda body: Turn([Text("polled " * 20)], delay=0.01)
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        events = await collect(sandbox.stream("hi", poll_interval=0.05))
        assert "".join(e.content for e in events if e.type == "text") == "polled " * 20
        assert events[-1].type == "result" and not events[-1].is_error
    finally:
        await sandbox.close()


async def test_rate_limited_toolbox_call_is_retried(maison_env):
    daytona, _ = maison_env
    sandbox = await Maison.create_sandbox_for_claude()
    try:
        daytona.inject("POST", r"/files/bulk-upload", 429, headers={"Retry-After": "1"})
        events = await collect(sandbox.stream("hi"))
        assert events[-1].content == "Hello from the fake Anthropic server."
    finally:
        await sandbox.close()
