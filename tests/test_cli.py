"""`maison-cli` as a user runs it: a subprocess, configured by the environment, against the doubles."""

from __future__ import annotations

import asyncio
import os
import re
import sys

import pytest


@pytest.fixture
def cli_env(daytona_double, anthropic_double):
    env = {key: value for key, value in os.environ.items() if key in ("PATH", "HOME", "LANG", "TMPDIR")}
    env.update({
        "DAYTONA_API_KEY": daytona_double.api_key,
        "DAYTONA_API_URL": daytona_double.api_url,
        "ANTHROPIC_API_KEY": anthropic_double.api_key,
        "ANTHROPIC_BASE_URL": anthropic_double.url,
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "NO_PROXY": "127.0.0.1,localhost",
    })
    return env


async def run_cli(env: dict[str, str], *args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "maison_slack.cli", *args, env=env,
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(stdin), timeout=90)
    return process.returncode, out.decode(), err.decode()


async def wait_all_gone(daytona) -> None:
    for _ in range(100):
        if not daytona.sandboxes:
            return
        await asyncio.sleep(0.05)
    raise AssertionError(f"sandboxes left: {list(daytona.sandboxes)}")


async def test_one_prompt_streams_text_and_tool_lines(cli_env, daytona_double):
    code, out, err = await run_cli(cli_env, "-p", "please use a TOOL")
    assert code == 0, err
    assert "I'll create the file." in out
    assert "▸ Running echo hi > hello.txt" in out
    assert "Tool finished" in out
    assert re.search(r"^\(\d+\.\ds · 2 turns · \$\d+\.\d{4} · claude-[a-z0-9-]+\)$", err, re.MULTILINE), err
    assert "Creating a sandbox" in err and "Traceback" not in err
    await wait_all_gone(daytona_double)


async def test_interactive_chat_keeps_context_and_quits(cli_env, daytona_double, anthropic_double):
    code, out, err = await run_cli(cli_env, stdin=b"hi there\nRECALL what I said\nquit\n")
    assert code == 0, err
    assert "Hello from the fake Anthropic server." in out
    assert 'I was sent 1 earlier user prompts: ["hi there"]' in out
    assert len(anthropic_double.requests) == 2
    await wait_all_gone(daytona_double)


async def test_failed_run_exits_non_zero(cli_env, daytona_double):
    code, out, err = await run_cli(cli_env, "-p", "ERROR500 now")
    assert code == 1
    assert "the run failed" in err and "Traceback" not in err
    await wait_all_gone(daytona_double)


async def test_missing_configuration_is_one_clear_message():
    env = {"PATH": os.environ["PATH"]}
    code, out, err = await run_cli(env, "-p", "hi")
    assert code == 2
    assert "DAYTONA_API_KEY" in err and "ANTHROPIC_API_KEY" in err
    assert "Traceback" not in err
