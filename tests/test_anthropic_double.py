"""The Anthropic Messages API double, checked against the real Claude Code CLI.

The CLI binary runs directly as a subprocess here (no sandbox), pointed at the double via
``ANTHROPIC_BASE_URL``. Both live in the test's event loop, hence asyncio subprocesses:
a blocking ``subprocess.run`` would starve the server the CLI is waiting on.

A second group talks raw HTTP to the double to pin the wire details the CLI does not
exercise (error shapes, non-streaming replies, side endpoints, big streams).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.claude_cli import ensure_claude_cli
from tests.doubles.anthropic import (
    HELLO_TEXT,
    AnthropicDouble,
    ApiError,
    Hang,
    Text,
    Thinking,
    ToolUse,
    Turn,
    anthropic_double,  # noqa: F401  (fixture; tests/conftest.py may register it too)
    has_tool_result,
    last_user_text,
    system_text,
    user_prompts,
)

CLI_TIMEOUT = 60.0


@pytest.fixture(scope="session")
def cli_bin_dir() -> Path:
    """Directory of the pinned ``claude`` binary (installed once into the user cache)."""
    return ensure_claude_cli()


@dataclass
class CliRun:
    rc: int
    events: list[dict[str, Any]]
    stderr: str

    @property
    def result(self) -> dict[str, Any]:
        results = [e for e in self.events if e.get("type") == "result"]
        assert len(results) == 1, f"expected one result line, got {self.events!r} / {self.stderr}"
        return results[0]

    def deltas(self, kind: str) -> list[dict[str, Any]]:
        """The ``delta`` objects of the forwarded content_block_delta events of one kind."""
        return [
            e["event"]["delta"]
            for e in self.events
            if e.get("type") == "stream_event"
            and e["event"].get("type") == "content_block_delta"
            and e["event"]["delta"].get("type") == kind
        ]


def cli_env(
    double: AnthropicDouble, tmp_path: Path, bin_dir: Path, api_key: str | None
) -> dict[str, str]:
    home, scratch = tmp_path / "home", tmp_path / "scratch"
    home.mkdir(exist_ok=True)
    scratch.mkdir(exist_ok=True)
    return {
        **os.environ,
        "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
        "ANTHROPIC_BASE_URL": double.url,
        "ANTHROPIC_API_KEY": api_key if api_key is not None else str(double.api_key),
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
        "IS_SANDBOX": "1",  # root + --dangerously-skip-permissions is refused otherwise
        "HOME": str(home),
        "CLAUDE_CODE_TMPDIR": str(scratch),
    }


async def start_claude(
    double: AnthropicDouble,
    tmp_path: Path,
    bin_dir: Path,
    prompt: str,
    *extra: str,
    api_key: str | None = None,
) -> asyncio.subprocess.Process:
    workdir = tmp_path / "work"
    workdir.mkdir(exist_ok=True)
    return await asyncio.create_subprocess_exec(
        str(bin_dir / "claude"),
        "-p", prompt,
        "--output-format", "stream-json", "--verbose", "--include-partial-messages",
        "--dangerously-skip-permissions",
        *extra,
        cwd=workdir,
        env=cli_env(double, tmp_path, bin_dir, api_key),
        stdin=asyncio.subprocess.DEVNULL,  # an open stdin pipe costs 3 s per run
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def run_claude(
    double: AnthropicDouble,
    tmp_path: Path,
    bin_dir: Path,
    prompt: str,
    *extra: str,
    api_key: str | None = None,
) -> CliRun:
    proc = await start_claude(double, tmp_path, bin_dir, prompt, *extra, api_key=api_key)
    try:
        out, err = await asyncio.wait_for(proc.communicate(), CLI_TIMEOUT)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    events = []
    for line in out.decode().splitlines():
        try:
            events.append(json.loads(line))
        except ValueError:
            pass  # tolerate non-JSON lines, as consumers must
    assert proc.returncode is not None
    return CliRun(proc.returncode, events, err.decode())


# ---- real CLI against the double --------------------------------------------------------


async def test_text_reply_arrives_as_deltas(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    text = "The quick brown fox jumps over the lazy dog, then naps."
    anthropic_double.responder = lambda body: Turn([Text(text)], chunk_size=8)

    run = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "hi")

    assert run.rc == 0, run.stderr
    pieces = [d["text"] for d in run.deltas("text_delta")]
    assert len(pieces) == 7 and "".join(pieces) == text
    assert run.result["is_error"] is False and run.result["result"] == text
    (request,) = anthropic_double.requests
    assert request.query == "beta=true" and request.body is not None
    assert request.body["stream"] is True
    assert request.headers["x-api-key"] == anthropic_double.api_key
    assert request.headers["anthropic-version"] == "2023-06-01"
    assert last_user_text(request.body) == "hi"
    start = next(e for e in run.events if e.get("type") == "stream_event")["event"]
    assert start["type"] == "message_start"
    assert start["message"]["model"] == request.body["model"]
    assert [t for _, t in anthropic_double.emitted] == pieces


async def test_tool_use_runs_and_result_comes_back(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    run = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "please use a TOOL")

    assert run.rc == 0, run.stderr
    assert (tmp_path / "work" / "hello.txt").read_text() == "hi\n"
    first, second = anthropic_double.requests
    assert first.body is not None and second.body is not None
    assert not has_tool_result(first.body) and has_tool_result(second.body)
    tool_uses = [d["partial_json"] for d in run.deltas("input_json_delta")]
    assert json.loads("".join(tool_uses))["command"] == "echo hi > hello.txt"
    assert run.result["result"] == "Tool finished: (Bash completed with no output)"
    assert run.result["num_turns"] == 2


async def test_thinking_streams_thinking_deltas(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    run = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "THINK please")

    assert run.rc == 0, run.stderr
    thoughts = "".join(d["thinking"] for d in run.deltas("thinking_delta"))
    assert thoughts == "Let me think about this briefly."
    assert [d["signature"] for d in run.deltas("signature_delta")] == ["fake-signature"]
    assert run.result["result"] == "Thought about it: 42."


async def test_continue_replays_earlier_prompts(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    first = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "THINK please")
    second = await run_claude(
        anthropic_double, tmp_path, cli_bin_dir, "RECALL what I said", "--continue"
    )

    assert first.rc == second.rc == 0
    body = anthropic_double.requests[-1].body
    assert body is not None
    assert user_prompts(body) == ["THINK please", "RECALL what I said"]
    replayed = [m for m in body["messages"] if m["role"] == "assistant"][0]["content"]
    assert replayed[0]["type"] == "thinking" and replayed[0]["signature"] == "fake-signature"
    assert second.result["result"] == 'I was sent 1 earlier user prompts: ["THINK please"]'
    assert second.result["session_id"] == first.result["session_id"]


async def test_append_system_prompt_reaches_the_api(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    run = await run_claude(
        anthropic_double, tmp_path, cli_bin_dir, "hi", "--append-system-prompt", "MARKER-42"
    )

    assert run.rc == 0, run.stderr
    assert run.result["result"] == HELLO_TEXT
    body = anthropic_double.requests[0].body
    assert body is not None and system_text(body).rstrip().endswith("MARKER-42")


async def test_api_error_ends_the_run_with_is_error(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    run = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "ERROR500 now")

    assert run.rc == 1
    assert run.result["is_error"] is True and run.result["api_error_status"] == 500
    assert "fake internal error" in run.result["result"]
    assert [r.status for r in anthropic_double.requests] == [500]


async def test_wrong_api_key_is_rejected(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    run = await run_claude(anthropic_double, tmp_path, cli_bin_dir, "hi", api_key="sk-ant-wrong")

    assert run.rc == 1
    assert run.result["is_error"] is True
    assert "Invalid API key" in run.result["result"]
    assert [r.status for r in anthropic_double.requests] == [401]


async def test_killing_the_cli_mid_stream_is_seen_as_a_disconnect(
    anthropic_double: AnthropicDouble, tmp_path: Path, cli_bin_dir: Path
) -> None:
    anthropic_double.responder = lambda body: Hang("Working on it")
    proc = await start_claude(anthropic_double, tmp_path, cli_bin_dir, "take forever")
    try:
        deadline = time.monotonic() + CLI_TIMEOUT
        while len(anthropic_double.emitted) < 2 and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert [t for _, t in anthropic_double.emitted] == ["Working on i", "t"]
    finally:
        proc.kill()
        await proc.communicate()
    for _ in range(100):
        if anthropic_double.requests[0].disconnected:
            break
        await asyncio.sleep(0.02)
    assert anthropic_double.requests[0].disconnected


# ---- raw HTTP: wire details -------------------------------------------------------------


def api_headers(double: AnthropicDouble, **extra: str) -> dict[str, str]:
    return {"x-api-key": str(double.api_key), "anthropic-version": "2023-06-01", **extra}


def message_body(prompt: str = "hi", stream: bool = True) -> dict[str, Any]:
    return {
        "model": "claude-test-1",
        "max_tokens": 100,
        "stream": stream,
        "messages": [{"role": "user", "content": prompt}],
    }


def parse_sse(raw: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for frame in raw.split("\n\n"):
        if frame:
            event_line, data_line = frame.split("\n")
            assert event_line.startswith("event: ") and data_line.startswith("data: ")
            yield event_line[7:], json.loads(data_line[6:])


async def test_sse_wire_format(anthropic_double: AnthropicDouble) -> None:
    anthropic_double.responder = lambda body: Turn(
        [
            Thinking("hmm"),
            Text("abcdefghijklmnopqrstuvwxyz"),
            ToolUse("Bash", {"command": "ls -la /"}),
        ]
    )
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{anthropic_double.url}/v1/messages?beta=true",
            json=message_body(),
            headers=api_headers(anthropic_double),
        ) as resp:
            assert resp.status == 200
            assert resp.headers["Content-Type"] == "text/event-stream; charset=utf-8"
            assert resp.headers["Transfer-Encoding"] == "chunked"
            assert resp.headers["request-id"].startswith("req_fake")
            frames = list(parse_sse(await resp.text()))

    names = [name for name, _ in frames]
    assert names[:2] == ["message_start", "ping"]
    assert names[-2:] == ["message_delta", "message_stop"]
    assert all(data["type"] == name for name, data in frames)
    message = frames[0][1]["message"]
    assert message["model"] == "claude-test-1" and message["id"].startswith("msg_fake")
    assert message["usage"]["output_tokens"] == 1
    starts = [d["content_block"] for n, d in frames if n == "content_block_start"]
    assert [b["type"] for b in starts] == ["thinking", "text", "tool_use"]
    assert starts[2]["id"].startswith("toolu_fake") and starts[2]["input"] == {}
    deltas = [d for n, d in frames if n == "content_block_delta"]
    text = "".join(d["delta"]["text"] for d in deltas if d["index"] == 1)
    assert text == "abcdefghijklmnopqrstuvwxyz"
    assert [len(d["delta"]["text"]) for d in deltas if d["index"] == 1] == [12, 12, 2]
    partial = [d["delta"]["partial_json"] for d in deltas if d["index"] == 2]
    assert json.loads("".join(partial)) == {"command": "ls -la /"} and len(partial[0]) == 15
    assert frames[-2][1]["delta"] == {"stop_reason": "tool_use", "stop_sequence": None}
    assert frames[-2][1]["usage"] == {"output_tokens": 5}


async def test_non_streaming_reply(anthropic_double: AnthropicDouble) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{anthropic_double.url}/v1/messages",
            json=message_body("THINK", stream=False),
            headers=api_headers(anthropic_double),
        ) as resp:
            assert resp.status == 200
            message = await resp.json()
    assert message["type"] == "message" and message["model"] == "claude-test-1"
    assert [b["type"] for b in message["content"]] == ["thinking", "text"]
    assert message["stop_reason"] == "end_turn"


@pytest.mark.parametrize(
    ("reply", "status", "error_type", "header"),
    [
        (ApiError(), 500, "api_error", None),
        (ApiError.overloaded(), 529, "overloaded_error", None),
        (ApiError.rate_limited(7), 429, "rate_limit_error", ("retry-after", "7")),
    ],
)
async def test_scripted_errors(
    anthropic_double: AnthropicDouble,
    reply: ApiError,
    status: int,
    error_type: str,
    header: tuple[str, str] | None,
) -> None:
    anthropic_double.responder = lambda body: reply
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{anthropic_double.url}/v1/messages?beta=true",
            json=message_body(),
            headers=api_headers(anthropic_double),
        ) as resp:
            body = await resp.json()
    assert resp.status == status
    assert body["type"] == "error" and body["error"]["type"] == error_type
    assert body["request_id"] == resp.headers["request-id"]
    if header:
        assert resp.headers[header[0]] == header[1]


async def test_auth_and_side_endpoints(anthropic_double: AnthropicDouble) -> None:
    url = anthropic_double.url
    async with aiohttp.ClientSession() as http:
        async def post(path: str, headers: dict[str, str], body: Any) -> tuple[int, Any]:
            async with http.post(url + path, json=body, headers=headers) as resp:
                return resp.status, await resp.json()

        wrong_key = api_headers(anthropic_double, **{"x-api-key": "nope"})
        status, body = await post("/v1/messages", wrong_key, message_body())
        assert (status, body["error"]) == (
            401, {"type": "authentication_error", "message": "invalid x-api-key"}
        )
        no_key = {"anthropic-version": "2023-06-01"}
        status, body = await post("/v1/messages", no_key, message_body())
        assert status == 401
        bearer = {**no_key, "authorization": f"Bearer {anthropic_double.api_key}"}
        status, body = await post("/v1/messages", bearer, message_body(stream=False))
        assert status == 200
        status, body = await post("/v1/messages", api_headers(anthropic_double), {"model": "m"})
        assert status == 400 and body["error"]["type"] == "invalid_request_error"
        headers = api_headers(anthropic_double)
        status, body = await post("/v1/messages/count_tokens", headers, message_body())
        assert status == 200 and body["input_tokens"] > 0
        status, body = await post("/v1/complete", api_headers(anthropic_double), {})
        assert status == 404 and body["error"]["type"] == "not_found_error"

        async with http.head(url + "/api/hello") as resp:
            assert resp.status == 200
        async with http.get(url + "/v1/models", headers=api_headers(anthropic_double)) as resp:
            models = await resp.json()
        assert resp.status == 200 and models["data"][0]["type"] == "model"

    assert [r.path for r in anthropic_double.other_requests][-3:] == [
        "/v1/complete", "/api/hello", "/v1/models"
    ]
    assert len(anthropic_double.requests) == 4
    anthropic_double.reset()
    assert not anthropic_double.requests and not anthropic_double.other_requests


async def test_long_turn_streams_2000_chunks_quickly(anthropic_double: AnthropicDouble) -> None:
    text = "".join(f"{i:04d}" + "x" * 1020 for i in range(2000))  # 2,000 chunks of 1 KiB
    anthropic_double.responder = lambda body: Turn([Text(text)], chunk_size=1024)
    received = 0
    started = time.perf_counter()
    async with aiohttp.ClientSession() as http:
        async with http.post(
            f"{anthropic_double.url}/v1/messages",
            json=message_body(),
            headers=api_headers(anthropic_double),
        ) as resp:
            async for chunk in resp.content.iter_any():
                received += len(chunk)
    elapsed = time.perf_counter() - started

    assert len(anthropic_double.emitted) == 2000
    assert "".join(t for _, t in anthropic_double.emitted) == text
    stamps = [t for t, _ in anthropic_double.emitted]
    assert stamps == sorted(stamps)
    assert received > len(text)
    assert elapsed < 5.0, f"2,000 frames took {elapsed:.2f} s"
