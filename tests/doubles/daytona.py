"""A local, faithful double of the Daytona service for tests that drive the real `daytona` SDK.

No test machine can reach Daytona, so the tests run the real SDK (0.226.1) against this
double: one aiohttp server on 127.0.0.1 serving

* the control plane under ``/api`` (sandboxes, state transitions, labels, intervals),
* socket.io events under ``/api/socket.io`` (without them every SDK state wait costs 1 s),
* the toolbox (the in-sandbox daemon, reached through the proxy) under ``/toolbox/{id}``,
* organization Secrets under ``/api/secret`` and per-sandbox secrets and network policy
  (§14, §15), enforced by one egress proxy per sandbox (``tests/doubles/egress.py``),
* read-only snapshot lookups (``/api/snapshots``, §16.2) and the organization's regions
  (``/api/regions``).

A sandbox is a temporary directory whose ``home/daytona`` is both the user home and the
work dir; commands are local subprocesses with a minimal environment. The wire contract
(status codes, DTO fields, error bodies, multipart layout, log WebSocket framing, session
semantics) follows ``../shared/reference/daytona.md``; where the double must choose,
it chooses what the real service does even when that is less convenient, because a double
that accepts what production rejects hides bugs.

Sandbox egress: every sandbox process gets ``http_proxy``/``HTTP_PROXY``/``https_proxy``/
``HTTPS_PROXY``/``ALL_PROXY``/``all_proxy`` pointing at its own ``EgressProxy`` and no
``NO_PROXY``, so even loopback traffic goes through it (verified with Claude Code 2.1.332 and
curl 7.88: both use it for ``http://127.0.0.1``, ``http://localhost`` and mapped names;
curl ignores upper-case ``HTTP_PROXY``; a ``NO_PROXY`` listing the host makes both bypass it).
The proxy substitutes Secret placeholders in request headers for matching hosts, scrubs
values from responses and enforces the network policy; ``DaytonaDouble.hosts`` maps test
names to loopback IPs, because the real ``domainAllowList`` only accepts domain names with an
alphabetic TLD (``127.0.0.1`` or ``localhost`` is a 400), so tests address the Anthropic double
as e.g. ``http://api.anthropic.test:<port>`` with ``hosts["api.anthropic.test"] = "127.0.0.1"``.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import grp
import ipaddress
import json
import logging
import math
import os
import pwd
import re
import secrets as random_tokens
import shutil
import signal
import stat
import tempfile
import time
import urllib.parse
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
import socketio
from aiohttp import web

from tests.doubles.egress import EgressPolicy, EgressProxy, EgressRequest, SecretBinding

log = logging.getLogger(__name__)

STDOUT_PREFIX = b"\x01\x01\x01"
STDERR_PREFIX = b"\x02\x02\x02"
DOWNLOAD_BOUNDARY = "DAYTONA-FILE-BOUNDARY"
NO_IP_MESSAGE = "no IP address found. Is the Sandbox started?"
BASE_PATH = ["/usr/local/bin", "/usr/bin", "/bin"]
READ_CHUNK = 65536
#: Proxy variables every sandbox process gets; curl reads only the lower-case http_proxy.
PROXY_VARS = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "ALL_PROXY", "all_proxy")
SECRET_NAME = re.compile(r"^[a-zA-Z_][a-zA-Z0-9_-]*$")
#: A Secret host: a hostname (IPv4 literals and single labels included) with an optional
#: single leading "*."; no scheme, port, path or inner wildcard (`common/secret.py:55-57`).
_LABEL = r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?"
SECRET_HOST = re.compile(rf"^(\*\.)?{_LABEL}(\.{_LABEL})*$", re.I)
#: The server's domainAllowList entry check (network-validation.util.ts): an alphabetic TLD,
#: so IP literals and single labels such as "localhost" are rejected.
ALLOWED_DOMAIN = re.compile(r"^(\*\.)?([a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?\.)+[a-zA-Z]{2,}$")
MAX_ALLOW_LIST = 10
SECRET_SORTS = ("name", "createdAt", "updatedAt")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


# --------------------------------------------------------------------------- helpers


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _iso(moment: dt.datetime) -> str:
    """ISO-8601 with millisecond precision and a Z, like the NestJS API."""
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def _api_error_body(request: web.Request, status: int, message: str) -> dict[str, Any]:
    """Error body of the control plane (NestJS all-exceptions filter)."""
    return {
        "path": request.path,
        "timestamp": _iso(_now()),
        "statusCode": status,
        "error": HTTPStatus(status).phrase,
        "message": message,
    }


def _daemon_error_body(
    request: web.Request, status: int, message: str, code: str, *, source: str | None = "DAYTONA_DAEMON"
) -> dict[str, Any]:
    """Error body of the daemon / proxy (common-go errors). The proxy sends no `source`."""
    body: dict[str, Any] = {
        "statusCode": status,
        "message": message,
        "code": code,
        "timestamp": _iso(_now()),
        "path": request.path,
        "method": request.method,
    }
    if source:
        body["source"] = source
    return body


def _code_for(status: int) -> str:
    return HTTPStatus(status).phrase.upper().replace(" ", "_").replace("-", "_")


class Reply(Exception):
    """Raised by handlers to short-circuit with a ready response (caught by a middleware)."""

    def __init__(self, response: web.StreamResponse) -> None:
        super().__init__(response.status)
        self.response = response


def api_error(request: web.Request, status: int, message: str) -> Reply:
    return Reply(web.json_response(_api_error_body(request, status, message), status=status))


def validation_error(request: web.Request, *messages: str) -> Reply:
    """400 from NestJS's global ValidationPipe: `message` is a list of class-validator
    messages, so the SDK (which only takes a string `message`) reports just "Bad Request"."""
    body = _api_error_body(request, 400, "")
    body["message"] = list(messages)
    return Reply(web.json_response(body, status=400))


def daemon_error(request: web.Request, status: int, message: str, code: str | None = None) -> Reply:
    body = _daemon_error_body(request, status, message, code or _code_for(status))
    return Reply(web.json_response(body, status=status))


def proxy_error(request: web.Request, status: int, message: str) -> Reply:
    body = _daemon_error_body(request, status, message, _code_for(status), source=None)
    return Reply(web.json_response(body, status=status))


async def _json_body(request: web.Request, *, toolbox: bool) -> dict[str, Any]:
    """Parse a JSON object body or answer 400 like the service would."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        body = None
    if not isinstance(body, dict):
        if toolbox:
            raise daemon_error(request, 400, "invalid request body", "BAD_REQUEST")
        raise api_error(request, 400, "Invalid request body")
    return body


def _kill_group(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)


def _marked_pids(sandbox_id: str) -> list[int]:
    """PIDs whose environment carries DAYTONA_SANDBOX_ID=<id> (stragglers that escaped their group)."""
    marker = f"DAYTONA_SANDBOX_ID={sandbox_id}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as fh:
                environ = fh.read()
        except OSError:
            continue
        if marker in environ.split(b"\0"):
            found.append(int(entry))
    return found


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", "rb") as fh:
            stat_line = fh.read()
    except OSError:
        return True
    return stat_line[stat_line.rfind(b")") + 2 : stat_line.rfind(b")") + 3] in (b"Z", b"X")


def _shell() -> str:
    return shutil.which("bash", path="/usr/bin:/bin") or "/bin/sh"


# --------------------------------------------------------------------------- records


@dataclass
class SnapshotSpec:
    """What an image provides: extra PATH dirs (e.g. where `claude` lives) and image env.

    `general`: one of Daytona's own snapshots (like `daytona-small`), which every organization
    can create sandboxes from and list, but not `GET` by name: the public server source
    (`SnapshotAccessGuard`) answers 404 unless the organization ids match. Some later servers
    let general snapshots through; the double keeps the stricter answer."""

    path: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    general: bool = False


@dataclass
class Fault:
    """What the next `count` requests matching method + path regex get: after `delay` seconds,
    a response with `status`, or (status None) the normal answer."""

    method: str
    path_regex: re.Pattern[str]
    status: int | None
    count: int
    body: dict[str, Any] | str | None
    headers: dict[str, str]
    delay: float = 0.0


class CommandLog:
    """The per-command log file of the daemon: marker-prefixed lines plus change notification."""

    def __init__(self) -> None:
        self.output = bytearray()
        self.stdout = bytearray()
        self.stderr = bytearray()
        self.done = False  # both streams drained and exit code known
        self.closed = False  # session deleted: followers end with close 1000
        self._changed = asyncio.Event()

    def append(self, prefix: bytes, data: bytes) -> None:
        self.output += prefix + data
        (self.stdout if prefix == STDOUT_PREFIX else self.stderr).extend(data)
        self._notify()

    def finish(self) -> None:
        self.done = True
        self._notify()

    def close(self) -> None:
        self.closed = True
        self._notify()

    def changed(self) -> asyncio.Event:
        """The event set at the next change; grab it *before* checking state to avoid races."""
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    def as_json(self) -> dict[str, str]:
        return {
            "output": self.output.decode("utf-8", "replace"),
            "stdout": self.stdout.decode("utf-8", "replace"),
            "stderr": self.stderr.decode("utf-8", "replace"),
        }


@dataclass
class SessionCommand:
    id: str
    command: str
    run_async: bool
    suppress_input_echo: bool
    log: CommandLog = field(default_factory=CommandLog)
    exit_code: int | None = None
    process: asyncio.subprocess.Process | None = None
    task: asyncio.Task[None] | None = None

    def as_json(self) -> dict[str, Any]:
        return {"id": self.id, "command": self.command, "exitCode": self.exit_code}


@dataclass
class Session:
    """A daemon session. The real daemon keeps one shell per session; the double runs one
    subprocess per command and carries the working directory and exported variables from
    one command to the next through state files, so `cd` / `export` persist as they do."""

    id: str
    state_dir: Path
    commands: dict[str, SessionCommand] = field(default_factory=dict)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    ended: bool = False  # a command ran `exit`/`exec`: the real session shell is gone
    deleted: bool = False

    def as_json(self) -> dict[str, Any]:
        return {"sessionId": self.id, "commands": [c.as_json() for c in self.commands.values()]}


@dataclass
class SecretRecord:
    """An organization Secret. `value` is write-only on the wire: no DTO carries it."""

    id: str
    name: str
    value: str
    placeholder: str
    hosts: list[str]
    description: str | None = None
    created_at: dt.datetime = field(default_factory=_now)
    updated_at: dt.datetime = field(default_factory=_now)

    def dto(self) -> dict[str, Any]:
        dto: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "createdAt": _iso(self.created_at),
            "updatedAt": _iso(self.updated_at),
            "placeholder": self.placeholder,
            "hosts": list(self.hosts),
        }
        if self.description is not None:
            dto["description"] = self.description
        return dto

    def binding(self) -> SecretBinding:
        return SecretBinding(self.name, self.placeholder, self.value, tuple(self.hosts))


@dataclass
class SandboxRecord:
    """Server-side state of one sandbox; `root` is its temp dir, `home` its home/work dir."""

    id: str
    name: str
    root: Path
    snapshot: str
    spec: SnapshotSpec
    env: dict[str, str]
    labels: dict[str, str]
    target: str
    user: str = "daytona"
    public: bool = False
    network_block_all: bool = False
    network_allow_list: str | None = None
    domain_allow_list: str | None = None
    #: Mounted Secrets, env var -> Secret name (as sent on create / update_secrets).
    secrets: dict[str, str] = field(default_factory=dict)
    #: Env var -> placeholder, what processes see; kept in step with `secrets`.
    secret_env: dict[str, str] = field(default_factory=dict)
    #: Substitution works only if the sandbox had Secrets when it (last) started (§14.3).
    secrets_live: bool = False
    #: Fault: the egress never substitutes, as for Agenta's "stuck" fresh sandboxes (§14.3).
    substitution_broken: bool = False
    egress: EgressProxy | None = None
    state: str = "starting"
    desired_state: str = "started"
    auto_stop_interval: int = 15
    auto_archive_interval: int = 10080
    auto_delete_interval: int = -1
    created_at: dt.datetime = field(default_factory=_now)
    updated_at: dt.datetime = field(default_factory=_now)
    last_activity: float = 0.0  # loop time
    stopped_at: float = 0.0  # loop time
    sessions: dict[str, Session] = field(default_factory=dict)
    procs: set[asyncio.subprocess.Process] = field(default_factory=set)
    websockets: set[web.WebSocketResponse] = field(default_factory=set)

    @property
    def home(self) -> Path:
        return self.root / "home" / "daytona"

    @property
    def tmp(self) -> Path:
        return self.root / "tmp"

    @property
    def daemon_dir(self) -> Path:
        return self.root / "daemon"

    def resolve(self, path: str) -> Path:
        """Relative paths resolve against the work dir; absolute ones are used as given."""
        return Path(path) if os.path.isabs(path) else self.home / path

    def base_env(self) -> dict[str, str]:
        env = {
            "PATH": ":".join([*self.spec.path, *BASE_PATH]),
            "HOME": str(self.home),
            "TMPDIR": str(self.tmp),
            "LANG": "C.UTF-8",
            "DAYTONA_SANDBOX_ID": self.id,
        }
        env.update(self.spec.env)
        env.update(self.env)
        env.update(self.secret_env)  # a Secret wins over a plain env var of the same name
        if self.egress is not None:
            # Everything, loopback included, must go through the sandbox's egress proxy.
            env.update(dict.fromkeys(PROXY_VARS, self.egress.url))
            env.pop("NO_PROXY", None)
            env.pop("no_proxy", None)
        env["DAYTONA_SANDBOX_ID"] = self.id  # the marker processes() relies on
        return env


# --------------------------------------------------------------------------- the double


class DaytonaDouble:
    """The Daytona control plane, event stream and toolbox on one local port.

    Args:
        api_key: the only Bearer token accepted (API, toolbox and socket.io CONNECT).
        snapshots: image name -> SnapshotSpec; creating from any other name fails with 400.
        start_delay: seconds a sandbox spends in each transitional state (starting, stopping…).
        autostop_seconds_per_minute: if set, idle auto-stop/auto-delete run on a clock where
            one Daytona minute lasts that many seconds (e.g. 0.1).

    Secrets and egress (§14, §15): `secrets` (id → `SecretRecord`, values included),
    `secret_named(name)`, `sandbox_secrets(sandbox_id)` (env var → Secret name); `hosts`
    (name → loopback IP: the sandboxes' DNS, e.g. ``hosts["api.anthropic.test"] = "127.0.0.1"``);
    `egress_log` / `egress_requests(sandbox_id)` (each request as it left, after substitution);
    `egress_proxy_url(sandbox_id)`; `break_substitution(sandbox_id)` (a stuck sandbox).
    """

    organization_id = "00000000-0000-4000-8000-00000000d0d0"

    def __init__(
        self,
        api_key: str = "dtn-test-key",
        *,
        snapshots: dict[str, SnapshotSpec] | None = None,
        start_delay: float = 0.05,
        autostop_seconds_per_minute: float | None = None,
        target: str = "us",
    ) -> None:
        self.api_key = api_key
        self.snapshots = snapshots if snapshots is not None else {"daytona-small": SnapshotSpec(general=True)}
        self.start_delay = start_delay
        self.autostop_seconds_per_minute = autostop_seconds_per_minute
        self.target = target
        self.sandboxes: dict[str, SandboxRecord] = {}
        self.secrets: dict[str, SecretRecord] = {}  # by id
        #: The sandboxes' DNS: name -> loopback IP, read by the egress proxies at each request.
        self.hosts: dict[str, str] = {}
        #: Every request any sandbox sent through its egress proxy, oldest first.
        self.egress_log: list[EgressRequest] = []
        self.faults: list[Fault] = []
        self.toolbox_bytes_out = 0
        self.toolbox_requests = 0
        self.port = 0
        self._base_dir: Path | None = None
        self._runner: web.AppRunner | None = None
        self._sio: socketio.AsyncServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._closed_egress: list[EgressProxy] = []  # of destroyed sandboxes, awaited in stop()

    # ----------------------------------------------------------------- lifecycle

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def toolbox_proxy_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/toolbox"

    async def start(self) -> DaytonaDouble:
        self._base_dir = Path(tempfile.mkdtemp(prefix="daytona-double-"))
        app = web.Application(middlewares=[self._middleware], client_max_size=1024**3)
        self._sio = socketio.AsyncServer(
            async_mode="aiohttp", transports=["websocket"], cors_allowed_origins="*", logger=False
        )
        self._sio.on("connect", self._on_sio_connect)
        self._sio.attach(app, socketio_path="api/socket.io")
        self._add_routes(app)
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        if self.autostop_seconds_per_minute:
            self._spawn(self._idle_loop())
        return self

    async def stop(self) -> None:
        """Kill every process of every sandbox, close the server, remove the temp dirs."""
        for sb in list(self.sandboxes.values()):
            self._shutdown_sandbox(sb)
            if sb.egress is not None:
                await sb.egress.close()
        for egress in self._closed_egress:
            await egress.close()
        self._closed_egress.clear()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._reap_commands(list(self.sandboxes.values()))
        if self._sio is not None:
            with contextlib.suppress(Exception):
                await self._sio.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        self.sandboxes.clear()
        if self._base_dir is not None:
            shutil.rmtree(self._base_dir, ignore_errors=True)
            self._base_dir = None

    async def __aenter__(self) -> DaytonaDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- test helpers

    def sandbox(self, sandbox_id: str) -> SandboxRecord:
        """The live record of a sandbox (KeyError if deleted)."""
        return self.sandboxes[sandbox_id]

    def processes(self, sandbox_id: str) -> list[tuple[int, str]]:
        """(pid, cmdline) of live processes carrying DAYTONA_SANDBOX_ID=<id>."""
        result = []
        for pid in _marked_pids(sandbox_id):
            if _is_zombie(pid):
                continue
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as fh:
                    cmdline = fh.read().replace(b"\0", b" ").decode("utf-8", "replace").strip()
            except OSError:
                continue
            result.append((pid, cmdline))
        return result

    def secret_named(self, name: str) -> SecretRecord:
        """The Secret called `name` (KeyError if none), value included."""
        for secret in self.secrets.values():
            if secret.name == name:
                return secret
        raise KeyError(name)

    def sandbox_secrets(self, sandbox_id: str) -> dict[str, str]:
        """The Secrets mounted in a sandbox: env var -> Secret name."""
        return dict(self.sandboxes[sandbox_id].secrets)

    def egress_proxy_url(self, sandbox_id: str) -> str:
        """The sandbox's egress proxy, for a test that wants to send through it directly."""
        egress = self.sandboxes[sandbox_id].egress
        assert egress is not None
        return egress.url

    def egress_requests(self, sandbox_id: str | None = None) -> list[EgressRequest]:
        """What went through the egress proxies (of one sandbox, or all), oldest first."""
        return [r for r in self.egress_log if sandbox_id is None or r.sandbox_id == sandbox_id]

    def break_substitution(self, sandbox_id: str) -> None:
        """From now on this sandbox's egress sends placeholders unchanged, as the ≈3 % of
        fresh production sandboxes that never substitute (§14.3); a new sandbox works."""
        self.sandboxes[sandbox_id].substitution_broken = True

    def auto_stop(self, sandbox_id: str) -> None:
        """Emulate Daytona's idle auto-stop: processes die, state `stopped`, event emitted."""
        sb = self.sandboxes[sandbox_id]
        old = sb.state
        self._shutdown_sandbox(sb)
        if sb.auto_delete_interval == 0:
            self._destroy(sb, old)
            return
        self._set_state(sb, "stopped", desired="stopped", old=old)

    def delete_behind_back(self, sandbox_id: str) -> None:
        """The sandbox vanishes as if deleted elsewhere (dashboard, another client)."""
        sb = self.sandboxes[sandbox_id]
        old = sb.state
        self._shutdown_sandbox(sb)
        self._destroy(sb, old)

    def inject(
        self,
        method: str,
        path_regex: str,
        status: int | None,
        *,
        count: int = 1,
        body: dict[str, Any] | str | None = None,
        headers: dict[str, str] | None = None,
        delay: float = 0.0,
    ) -> None:
        """The next `count` requests matching (method, regex searched in the URL path) get this
        response. Without a body, the real error body shape of that route is used.

        `delay` seconds pass first, for that request only (each request is its own task), to
        reproduce a slow service, e.g. a sandbox delete that takes seconds. `status=None` means
        "delay, then answer normally": `inject("DELETE", r"^/api/sandbox/[^/]+$", None, delay=2.0)`.
        """
        if status is None and (body is not None or headers):
            raise ValueError("body and headers need a status; status=None answers normally")
        self.faults.append(
            Fault(method.upper(), re.compile(path_regex), status, count, body, dict(headers or {}), delay)
        )

    def create_fails(self, status: int = 500, *, count: int = 1, body: dict[str, Any] | str | None = None) -> None:
        """Convenience: the next `count` sandbox creations fail with `status`."""
        self.inject("POST", r"^/api/sandbox/?$", status, count=count, body=body)

    def reset_metrics(self) -> None:
        self.toolbox_bytes_out = 0
        self.toolbox_requests = 0

    # ----------------------------------------------------------------- internals: tasks & events

    def _spawn(self, coro: Awaitable[Any]) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _on_sio_connect(self, sid: str, environ: dict[str, Any], auth: Any = None) -> bool:
        """Accept only the API key in the CONNECT auth payload, as the real gateway does."""
        return isinstance(auth, dict) and auth.get("token") == self.api_key

    def _emit(self, event: str, data: dict[str, Any]) -> None:
        if self._sio is not None:
            self._spawn(self._sio.emit(event, data))

    def _set_state(self, sb: SandboxRecord, state: str, *, desired: str | None = None, old: str | None = None) -> None:
        old_state = sb.state if old is None else old
        sb.state = state
        if desired:
            sb.desired_state = desired
        sb.updated_at = _now()
        sb.last_activity = asyncio.get_running_loop().time()
        if state == "stopped":
            sb.stopped_at = sb.last_activity
        self._emit(
            "sandbox.state.updated",
            {"sandbox": self._dto(sb), "oldState": old_state, "newState": state},
        )

    def _later(self, sb: SandboxRecord, expected: str, action: Callable[[], None]) -> None:
        """Run `action` after start_delay if the sandbox is still in `expected` state."""

        async def run() -> None:
            await asyncio.sleep(self.start_delay)
            if self.sandboxes.get(sb.id) is sb and sb.state == expected:
                action()

        self._spawn(run())

    def _destroy(self, sb: SandboxRecord, old_state: str) -> None:
        """Forget the sandbox (later GET → 404) and remove its files."""
        self.sandboxes.pop(sb.id, None)
        if sb.egress is not None:
            sb.egress.abort()  # synchronously: a task could be cancelled by stop() before it ran
            self._closed_egress.append(sb.egress)
            sb.egress = None
        sb.state = "destroyed"
        sb.desired_state = "destroyed"
        self._emit("sandbox.state.updated", {"sandbox": self._dto(sb), "oldState": old_state, "newState": "destroyed"})
        shutil.rmtree(sb.root, ignore_errors=True)

    def _shutdown_sandbox(self, sb: SandboxRecord) -> None:
        """What stopping a container does: every process dies, sessions and log sockets drop."""
        for proc in list(sb.procs):
            _kill_group(proc.pid)
        # SIGKILL is delivered asynchronously: a stopped container has no live process, so wait
        # (briefly, bounded) until the kernel has really ended them all.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            stragglers = [pid for pid in _marked_pids(sb.id) if not _is_zombie(pid)]
            if not stragglers:
                break
            for pid in stragglers:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.002)
        for session in sb.sessions.values():
            session.deleted = True
            for command in session.commands.values():
                command.log.close()
        sb.sessions.clear()
        for ws in list(sb.websockets):
            # The container is gone: the proxy drops the connection (no clean close).
            transport = getattr(ws, "_dd_transport", None)
            if transport is not None:
                transport.abort()
        sb.websockets.clear()

    async def _reap_commands(self, sandboxes: list[SandboxRecord]) -> None:
        """Wait (briefly) for killed processes so no transport outlives the double."""
        procs = [p for sb in sandboxes for p in sb.procs if p.returncode is None]
        if procs:
            await asyncio.wait([asyncio.ensure_future(p.wait()) for p in procs], timeout=5)

    async def _idle_loop(self) -> None:
        """Daytona's auto-stop / auto-delete crons, on a compressed clock."""
        scale = float(self.autostop_seconds_per_minute or 0)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(min(0.05, max(scale / 4, 0.01)))
            now = loop.time()
            for sb in list(self.sandboxes.values()):
                if sb.websockets:
                    sb.last_activity = now  # an open log stream counts as activity
                if sb.state == "started" and sb.auto_stop_interval > 0:
                    if now - sb.last_activity > sb.auto_stop_interval * scale:
                        self.auto_stop(sb.id)
                elif sb.state == "stopped" and sb.auto_delete_interval > 0:
                    if now - sb.stopped_at > sb.auto_delete_interval * scale:
                        self._destroy(sb, "stopped")

    # ----------------------------------------------------------------- DTOs

    def _dto(self, sb: SandboxRecord, *, list_item: bool = False) -> dict[str, Any]:
        """Sandbox DTO with every required field (SandboxListItem omits env and kvm)."""
        dto: dict[str, Any] = {
            "id": sb.id,
            "organizationId": self.organization_id,
            "name": sb.name,
            "snapshot": sb.snapshot,
            "user": sb.user,
            "env": dict(sb.env),
            "labels": dict(sb.labels),
            "public": sb.public,
            "networkBlockAll": sb.network_block_all,
            "networkAllowList": sb.network_allow_list,
            "domainAllowList": sb.domain_allow_list,
            "kvm": False,
            "target": sb.target,
            "cpu": 1,
            "gpu": 0,
            "memory": 1,
            "disk": 3,
            "state": sb.state,
            "desiredState": sb.desired_state,
            "errorReason": None,
            "recoverable": False,
            "backupState": "None",
            "autoStopInterval": sb.auto_stop_interval,
            "autoArchiveInterval": sb.auto_archive_interval,
            "autoDeleteInterval": sb.auto_delete_interval,
            "autoPauseInterval": 0,
            "createdAt": _iso(sb.created_at),
            "updatedAt": _iso(sb.updated_at),
            "lastActivityAt": _iso(sb.updated_at),
            "sandboxClass": "container",
            "daemonVersion": "double-0.226.1",
            "runnerId": "double-runner",
            "volumes": [],
            "toolboxProxyUrl": self.toolbox_proxy_url,
        }
        if list_item:
            del dto["env"], dto["kvm"]
        for key in ("networkAllowList", "domainAllowList"):
            if dto[key] is None:
                del dto[key]  # optional fields: absent when unset
        return dto

    # ----------------------------------------------------------------- middleware

    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Fault injection, auth, toolbox metrics, and `Reply` short-circuits."""
        path = request.path
        if path.startswith("/api/socket.io"):
            return await handler(request)
        toolbox = path.startswith("/toolbox/")
        if toolbox:
            self.toolbox_requests += 1
        try:
            response = await self._injected(request) or self._unauthorized(request) or await handler(request)
        except Reply as reply:
            response = reply.response
        if toolbox and isinstance(response, web.Response) and response.body is not None:
            body = response.body
            if isinstance(body, (bytes, bytearray)):
                self.toolbox_bytes_out += len(body)
        return response

    async def _injected(self, request: web.Request) -> web.Response | None:
        for fault in self.faults:
            if fault.method in (request.method, "*") and fault.path_regex.search(request.path):
                fault.count -= 1
                if fault.count <= 0:
                    self.faults.remove(fault)
                await asyncio.sleep(fault.delay)
                return None if fault.status is None else self._fault_response(request, fault.status, fault)
        return None

    def _fault_response(self, request: web.Request, status: int, fault: Fault) -> web.Response:
        headers = dict(fault.headers)
        body = fault.body
        if isinstance(body, str):
            content_type = headers.pop("Content-Type", None) or (
                "text/html" if body.lstrip().startswith("<") else "text/plain"
            )
            return web.Response(status=status, text=body, content_type=content_type, headers=headers)
        if body is None:
            message = {
                429: "ThrottlerException: Too Many Requests",
                500: "An unexpected error occurred.",
            }.get(status, HTTPStatus(status).phrase)
            if request.path.startswith("/toolbox/"):
                body = _daemon_error_body(request, status, message, _code_for(status), source=None)
            else:
                body = _api_error_body(request, status, message)
        return web.json_response(body, status=status, headers=headers)

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") == f"Bearer {self.api_key}":
            return None
        if request.path.startswith("/toolbox/"):
            body = _daemon_error_body(request, 401, "Unauthorized", "UNAUTHORIZED", source=None)
        else:
            body = _api_error_body(request, 401, "Unauthorized")
        return web.json_response(body, status=401)

    # ----------------------------------------------------------------- routes

    def _add_routes(self, app: web.Application) -> None:
        api = "/api/sandbox"
        tb = "/toolbox/{sandbox_id}"
        session = tb + "/process/session/{session_id}"
        app.router.add_routes(
            [
                web.post("/api/secret", self._secret_create),
                web.get("/api/secret/paginated", self._secret_list_paginated),  # before {id}
                web.get("/api/secret", self._secret_list),
                web.get("/api/secret/{id}", self._secret_get),
                web.patch("/api/secret/{id}", self._secret_update),
                web.delete("/api/secret/{id}", self._secret_delete),
                web.put(api + "/{id}/secrets", self._sandbox_secrets_update),
                web.get(api + "/{id}/secrets", self._sandbox_secrets_resolve),
                web.post(api + "/{id}/network-settings", self._network_settings),
                web.post(api, self._create),
                web.get(api, self._list),
                web.get(api + "/{id}", self._get),
                web.delete(api + "/{id}", self._delete),
                web.post(api + "/{id}/start", self._start),
                web.post(api + "/{id}/stop", self._stop),
                web.post(api + "/{id}/archive", self._archive),
                web.put(api + "/{id}/labels", self._labels),
                web.post(api + "/{id}/{kind:autostop|autoarchive|autodelete}/{n}", self._interval),
                web.post(api + "/{id}/last-activity", self._last_activity),
                web.get(api + "/{id}/toolbox-proxy-url", self._toolbox_url),
                web.get(api + "/{id}/ports/{port}/preview-url", self._preview_url),
                web.get("/api/snapshots", self._snapshot_list),
                web.get("/api/snapshots/{id}", self._snapshot_get),
                web.get("/api/regions", self._regions),
                web.get(tb + "/user-home-dir", self._home_dir),
                web.get(tb + "/work-dir", self._home_dir),
                web.post(tb + "/process/execute", self._execute),
                web.post(tb + "/process/session", self._session_create),
                web.get(tb + "/process/session", self._session_list),
                web.get(session, self._session_get),
                web.delete(session, self._session_delete),
                web.post(session + "/exec", self._session_exec),
                web.get(session + "/command/{command_id}", self._command_get),
                web.get(session + "/command/{command_id}/logs", self._command_logs),
                web.post(session + "/command/{command_id}/input", self._command_input),
                web.get(tb + "/files", self._files_list),
                web.delete(tb + "/files", self._files_delete),
                web.get(tb + "/files/info", self._files_info),
                web.post(tb + "/files/folder", self._files_folder),
                web.post(tb + "/files/bulk-download", self._bulk_download),
                web.post(tb + "/files/bulk-upload", self._bulk_upload),
            ]
        )

    # ----------------------------------------------------------------- control plane

    def _find(self, request: web.Request, id_or_name: str) -> SandboxRecord:
        sb = self.sandboxes.get(id_or_name)
        if sb is None:
            sb = next((s for s in self.sandboxes.values() if s.name == id_or_name), None)
        if sb is None:
            raise api_error(request, 404, f"Sandbox with ID or name {id_or_name} not found")
        return sb

    async def _create(self, request: web.Request) -> web.Response:
        body = await _json_body(request, toolbox=False)
        if body.get("buildInfo") or body.get("image"):
            raise api_error(request, 400, "Image-based sandboxes are not supported by the Daytona double")
        snapshot = body.get("snapshot") or next(iter(self.snapshots))
        if snapshot not in self.snapshots:
            raise api_error(
                request, 400, f"Snapshot {snapshot} not found. Did you add it through the Daytona Dashboard?"
            )
        sandbox_id = str(uuid.uuid4())
        name = body.get("name") or sandbox_id
        if any(s.name == name for s in self.sandboxes.values()):
            raise api_error(request, 409, f"Sandbox with name {name} already exists")
        intervals = self._create_intervals(request, body)
        if body.get("outboundProxyUrl"):
            raise api_error(request, 400, "outboundProxyUrl is not supported by the Daytona double")
        mounts = self._secret_mounts(request, body.get("secrets"))
        network = self._network_fields(request, body)
        assert self._base_dir is not None
        sb = SandboxRecord(
            id=sandbox_id,
            name=name,
            root=self._base_dir / sandbox_id,
            snapshot=snapshot,
            spec=self.snapshots[snapshot],
            env={str(k): str(v) for k, v in (body.get("env") or {}).items()},
            labels={str(k): str(v) for k, v in (body.get("labels") or {}).items()},
            target=body.get("target") or self.target,
            user=body.get("user") or "daytona",
            public=bool(body.get("public", False)),
            network_block_all=bool(body.get("networkBlockAll", False)),
            network_allow_list=network.get("networkAllowList"),
            domain_allow_list=network.get("domainAllowList"),
            **intervals,
        )
        self._mount(sb, mounts)
        sb.secrets_live = bool(mounts)
        sb.egress = await EgressProxy(
            sandbox_id, lambda: self._egress_policy(sb), hosts=self.hosts, record=self.egress_log.append
        ).start()
        for directory in (sb.home, sb.tmp, sb.daemon_dir):
            directory.mkdir(parents=True, exist_ok=True)
        sb.last_activity = asyncio.get_running_loop().time()
        self.sandboxes[sandbox_id] = sb
        self._emit("sandbox.created", self._dto(sb))
        self._later(sb, "starting", lambda: self._set_state(sb, "started", desired="started"))
        return web.json_response(self._dto(sb), status=200)

    @staticmethod
    def _create_intervals(request: web.Request, body: dict[str, Any]) -> dict[str, int]:
        result = {}
        for key, attr, default, minimum in (
            ("autoStopInterval", "auto_stop_interval", 15, 0),
            ("autoArchiveInterval", "auto_archive_interval", 10080, 0),
            ("autoDeleteInterval", "auto_delete_interval", -1, -1),
        ):
            value = body.get(key, default)
            if not isinstance(value, int) or value < minimum:
                raise api_error(request, 400, f"{key} must be an integer >= {minimum}")
            result[attr] = value
        return result

    async def _list(self, request: web.Request) -> web.Response:
        query = request.query
        items = sorted(self.sandboxes.values(), key=lambda s: s.created_at, reverse=True)
        if "labels" in query:
            try:
                wanted = json.loads(query["labels"])
            except json.JSONDecodeError:
                raise api_error(request, 400, "Invalid labels JSON") from None
            if not isinstance(wanted, dict):
                raise api_error(request, 400, "Invalid labels JSON")
            items = [s for s in items if all(s.labels.get(k) == v for k, v in wanted.items())]
        if "id" in query:
            items = [s for s in items if s.id.startswith(query["id"])]
        if "name" in query:
            items = [s for s in items if query["name"] in s.name]
        states = [v for raw in query.getall("states", []) for v in raw.split(",") if v]
        if states:
            items = [s for s in items if s.state in states]
        try:
            limit = int(query.get("limit", "100"))
            offset = int(query.get("cursor") or "0")
        except ValueError:
            raise api_error(request, 400, "Invalid limit or cursor") from None
        if limit < 1 or offset < 0:
            raise api_error(request, 400, "Invalid limit or cursor")
        page = items[offset : offset + limit]
        next_cursor = str(offset + limit) if offset + limit < len(items) else None
        return web.json_response(
            {"items": [self._dto(s, list_item=True) for s in page], "nextCursor": next_cursor}
        )

    async def _get(self, request: web.Request) -> web.Response:
        return web.json_response(self._dto(self._find(request, request.match_info["id"])))

    async def _delete(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        if sb.state != "destroying":
            old = sb.state
            self._shutdown_sandbox(sb)
            self._set_state(sb, "destroying", desired="destroyed", old=old)
            self._later(sb, "destroying", lambda: self._destroy(sb, "destroying"))
        return web.json_response(self._dto(sb))

    async def _start(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        if sb.state == "started":
            return web.json_response(self._dto(sb))
        if sb.state not in ("stopped", "archived"):
            raise api_error(request, 400, "State change in progress")
        sb.secrets_live = bool(sb.secrets)  # a restart is what makes newly attached Secrets work
        self._set_state(sb, "starting", desired="started")
        self._later(sb, "starting", lambda: self._set_state(sb, "started"))
        return web.json_response(self._dto(sb))

    async def _stop(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        if sb.state != "started":
            raise api_error(request, 400, "Sandbox is not started")
        self._shutdown_sandbox(sb)
        self._set_state(sb, "stopping", desired="stopped")

        def finish() -> None:
            if sb.auto_delete_interval == 0:  # ephemeral: straight to destroyed
                self._destroy(sb, "stopping")
            else:
                self._set_state(sb, "stopped")

        self._later(sb, "stopping", finish)
        return web.json_response(self._dto(sb))

    async def _archive(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        if sb.state != "stopped":
            raise api_error(request, 400, "Sandbox is not stopped")
        self._set_state(sb, "archiving", desired="archived")
        self._later(sb, "archiving", lambda: self._set_state(sb, "archived"))
        return web.json_response(self._dto(sb))

    async def _labels(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        body = await _json_body(request, toolbox=False)
        labels = body.get("labels")
        if not isinstance(labels, dict):
            raise api_error(request, 400, "labels must be an object")
        sb.labels = {str(k): str(v) for k, v in labels.items()}
        sb.updated_at = _now()
        return web.json_response({"labels": dict(sb.labels)})

    async def _interval(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        kind = request.match_info["kind"]
        try:
            value = int(request.match_info["n"])
        except ValueError:
            raise api_error(request, 400, "Validation failed (numeric string is expected)") from None
        minimum = -1 if kind == "autodelete" else 0
        if value < minimum:
            raise api_error(request, 400, f"Invalid {kind} interval")
        attr = {"autostop": "auto_stop_interval", "autoarchive": "auto_archive_interval"}.get(
            kind, "auto_delete_interval"
        )
        setattr(sb, attr, value)
        sb.updated_at = _now()
        return web.json_response(self._dto(sb))

    async def _last_activity(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        sb.last_activity = asyncio.get_running_loop().time()
        return web.Response(status=201)

    async def _toolbox_url(self, request: web.Request) -> web.Response:
        self._find(request, request.match_info["id"])
        return web.json_response({"url": self.toolbox_proxy_url})

    async def _preview_url(self, request: web.Request) -> web.Response:
        sb = self._find(request, request.match_info["id"])
        port = request.match_info["port"]
        return web.json_response(
            {"sandboxId": sb.id, "url": f"http://127.0.0.1:{self.port}/preview/{port}-{sb.id}", "token": "preview-token"}
        )

    # ----------------------------------------------------------------- snapshots and regions (read-only)

    def _snapshot_dto(self, name: str, spec: SnapshotSpec) -> dict[str, Any]:
        """SnapshotDto with every required field (`daytona_api_client_async/models/snapshot_dto.py`)."""
        created = "2026-01-01T00:00:00.000Z"
        return {
            "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"daytona-double/snapshot/{name}")),
            "organizationId": None if spec.general else self.organization_id,
            "general": spec.general,
            "name": name,
            "imageName": f"daytonaio/{name}:double",
            "state": "active",
            "size": 1,
            "entrypoint": ["sleep", "infinity"],
            "cpu": 1,
            "gpu": 0,
            "mem": 1,
            "disk": 3,
            "errorReason": None,
            "createdAt": created,
            "updatedAt": created,
            "lastUsedAt": None,
            "sourceSandboxId": None,
            "regionIds": [self.target],
        }

    async def _snapshot_get(self, request: web.Request) -> web.Response:
        """`GET /snapshots/{idOrName}`: the organization's own snapshots only (see SnapshotSpec)."""
        wanted = request.match_info["id"]
        for name, spec in self.snapshots.items():
            dto = self._snapshot_dto(name, spec)
            if not spec.general and wanted in (name, dto["id"]):
                return web.json_response(dto)
        raise api_error(request, 404, f"Snapshot with ID or name {wanted} not found")

    async def _snapshot_list(self, request: web.Request) -> web.Response:
        """`GET /snapshots?page=&limit=`: the organization's snapshots, then the general ones."""
        try:
            page = int(request.query.get("page", "1"))
            limit = int(request.query.get("limit", "10"))
        except ValueError:
            raise validation_error(request, "page must be an integer", "limit must be an integer") from None
        if page < 1 or not 1 <= limit <= 200:
            raise validation_error(request, "page must not be less than 1", "limit must not be greater than 200")
        ordered = sorted(self.snapshots.items(), key=lambda item: (item[1].general, item[0]))
        items = [self._snapshot_dto(name, spec) for name, spec in ordered]
        return web.json_response({"items": items[(page - 1) * limit : page * limit], "total": len(items),
                                  "page": page, "totalPages": math.ceil(len(items) / limit)})

    async def _regions(self, request: web.Request) -> web.Response:
        """`GET /regions` (listAvailableRegions): the regions this organization may use; here
        the double's one `target`, a shared region whose id is its name."""
        created = "2026-01-01T00:00:00.000Z"
        return web.json_response([{"id": self.target, "name": self.target, "organizationId": None,
                                   "regionType": "shared", "createdAt": created, "updatedAt": created}])

    # ----------------------------------------------------------------- secrets (§14)

    def _secret(self, request: web.Request) -> SecretRecord:
        secret = self.secrets.get(request.match_info["id"])
        if secret is None:
            raise api_error(request, 404, f"Secret with ID {request.match_info['id']} not found")
        return secret

    @staticmethod
    def _secret_fields(body: dict[str, Any], *, create: bool) -> list[str]:
        """class-validator messages for a CreateSecret / UpdateSecret body (empty = valid)."""
        problems = []
        if create:
            name = body.get("name")
            if not isinstance(name, str):
                problems.append("name must be a string")
            elif not SECRET_NAME.fullmatch(name):
                problems.append(f"name must match {SECRET_NAME.pattern} regular expression")
        if create or "value" in body:
            value = body.get("value")
            if not isinstance(value, str):
                problems.append("value must be a string")
            elif not value:
                problems.append("value should not be empty")
        if body.get("description") is not None and not isinstance(body["description"], str):
            problems.append("description must be a string")
        hosts = body.get("hosts")
        if hosts is not None:
            if not isinstance(hosts, list):
                problems.append("hosts must be an array")
            elif not all(isinstance(h, str) and SECRET_HOST.fullmatch(h) for h in hosts):
                problems.append(
                    "each value in hosts must be a hostname or a *. wildcard, without scheme, port or path"
                )
        return problems

    async def _secret_create(self, request: web.Request) -> web.Response:
        body = await _json_body(request, toolbox=False)
        problems = self._secret_fields(body, create=True)
        if problems:
            raise validation_error(request, *problems)
        name = body["name"]
        if any(s.name == name for s in self.secrets.values()):
            raise api_error(request, 409, f"Secret with name {name} already exists")
        secret = SecretRecord(
            id=str(uuid.uuid4()),
            name=name,
            value=body["value"],
            placeholder=f"dtn_secret_{random_tokens.token_hex(16)}",
            hosts=list(body.get("hosts") or []),
            description=body.get("description"),
        )
        self.secrets[secret.id] = secret
        return web.json_response(secret.dto(), status=201)

    def _filtered_secrets(self, request: web.Request) -> list[SecretRecord]:
        query = request.query
        problems = []
        sort = query.get("sort", "createdAt")
        if sort not in SECRET_SORTS:
            problems.append(f"sort must be one of the following values: {', '.join(SECRET_SORTS)}")
        order = query.get("order", "desc")
        if order not in ("asc", "desc"):
            problems.append("order must be one of the following values: asc, desc")
        if problems:
            raise validation_error(request, *problems)
        items = list(self.secrets.values())
        if query.get("name"):
            items = [s for s in items if query["name"].lower() in s.name.lower()]
        key = {"name": lambda s: s.name, "createdAt": lambda s: s.created_at, "updatedAt": lambda s: s.updated_at}
        return sorted(items, key=key[sort], reverse=order == "desc")

    async def _secret_list_paginated(self, request: web.Request) -> web.Response:
        raw_limit = request.query.get("limit", "100")
        if not re.fullmatch(r"\d+", raw_limit) or not 1 <= int(raw_limit) <= 200:
            raise validation_error(request, "limit must not be less than 1", "limit must not be greater than 200")
        limit = int(raw_limit)
        cursor = request.query.get("cursor") or "0"
        if not cursor.isdigit():
            raise api_error(request, 400, "Invalid cursor")
        items = self._filtered_secrets(request)
        offset = int(cursor)
        next_cursor = str(offset + limit) if offset + limit < len(items) else None
        page = [s.dto() for s in items[offset : offset + limit]]
        return web.json_response({"items": page, "total": len(items), "nextCursor": next_cursor})

    async def _secret_list(self, request: web.Request) -> web.Response:
        return web.json_response([s.dto() for s in self._filtered_secrets(request)])

    async def _secret_get(self, request: web.Request) -> web.Response:
        return web.json_response(self._secret(request).dto())

    async def _secret_update(self, request: web.Request) -> web.Response:
        """PATCH: only the keys sent change; a new value keeps the placeholder (§14.3)."""
        secret = self._secret(request)
        body = await _json_body(request, toolbox=False)
        problems = self._secret_fields(body, create=False)
        if problems:
            raise validation_error(request, *problems)
        if "value" in body:
            secret.value = body["value"]
        if "description" in body:
            secret.description = body["description"]
        if body.get("hosts") is not None:
            secret.hosts = list(body["hosts"])
        secret.updated_at = _now()
        return web.json_response(secret.dto())

    async def _secret_delete(self, request: web.Request) -> web.Response:
        """Unverified in production: what a sandbox that mounts a deleted Secret sees. The double
        stops substituting it and leaves it out of the env of processes started afterwards."""
        secret = self._secret(request)
        del self.secrets[secret.id]
        for sb in self.sandboxes.values():
            if secret.name in sb.secrets.values():
                self._mount(sb, sb.secrets)
        return web.Response(status=204)

    def _secret_mounts(self, request: web.Request, raw: Any) -> dict[str, str]:
        """`secrets: [{ENV: secretName}, …]` → {ENV: name}. Unknown names are a 400, like an
        unknown snapshot on create: the request is invalid, nothing is created."""
        if raw is None:
            return {}
        if not isinstance(raw, list) or not all(
            isinstance(item, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in item.items())
            for item in raw
        ):
            raise validation_error(request, "secrets must be an array of {ENV_VAR: secretName} objects")
        mounts = {env: name for item in raw for env, name in item.items()}
        known = {s.name for s in self.secrets.values()}
        for name in mounts.values():
            if name not in known:
                raise api_error(request, 400, f"Secret {name} not found")
        return mounts

    def _mount(self, sb: SandboxRecord, mounts: dict[str, str]) -> None:
        by_name = {s.name: s for s in self.secrets.values()}
        sb.secrets = dict(mounts)
        sb.secret_env = {env: by_name[name].placeholder for env, name in mounts.items() if name in by_name}

    def _egress_policy(self, sb: SandboxRecord) -> EgressPolicy:
        by_name = {s.name: s for s in self.secrets.values()}
        mounted = [by_name[name].binding() for name in sb.secrets.values() if name in by_name]
        live = sb.secrets_live and not sb.substitution_broken
        return EgressPolicy(
            substitute=mounted if live else [],
            scrub=mounted,
            block_all=sb.network_block_all,
            domain_allow_list=_split_list(sb.domain_allow_list),
            network_allow_list=[ipaddress.IPv4Network(n, strict=False) for n in networks]
            if (networks := _split_list(sb.network_allow_list)) is not None
            else None,
        )

    async def _sandbox_secrets_update(self, request: web.Request) -> web.Response:
        """PUT replaces the whole mounted set. New placeholders reach processes started after
        it; substitution starts at once unless the sandbox started without Secrets (§14.3)."""
        sb = self._find(request, request.match_info["id"])
        body = await _json_body(request, toolbox=False)
        if "secrets" not in body:
            raise validation_error(request, "secrets must be an array")
        self._mount(sb, self._secret_mounts(request, body["secrets"]))
        sb.updated_at = _now()
        return web.json_response(self._dto(sb))

    async def _sandbox_secrets_resolve(self, request: web.Request) -> web.Response:
        """`GET /sandbox/{id}/secrets` returns the plaintext values (§14.2, purpose unverified)."""
        sb = self._find(request, request.match_info["id"])
        by_name = {s.name: s for s in self.secrets.values()}
        return web.json_response(
            [
                {"env": env, "placeholder": by_name[name].placeholder, "value": by_name[name].value,
                 "hosts": list(by_name[name].hosts)}
                for env, name in sb.secrets.items()
                if name in by_name
            ]
        )

    # ----------------------------------------------------------------- network policy (§15)

    @staticmethod
    def _network_fields(request: web.Request, body: dict[str, Any]) -> dict[str, str | None]:
        """Validate networkAllowList / domainAllowList as the server does (400, string message);
        "" or only commas clears a list (stored as None)."""
        result: dict[str, str | None] = {}
        if body.get("networkBlockAll") is not None and not isinstance(body["networkBlockAll"], bool):
            raise validation_error(request, "networkBlockAll must be a boolean value")
        for key in ("networkAllowList", "domainAllowList"):
            if key not in body or body[key] is None:
                continue
            value = body[key]
            if not isinstance(value, str):
                raise validation_error(request, f"{key} must be a string")
            entries = _split_list(value) or []
            if key == "networkAllowList":
                for entry in entries:
                    _check_cidr(request, entry)
                if len(entries) > MAX_ALLOW_LIST:
                    raise api_error(
                        request, 400, f"Network allow list cannot contain more than {MAX_ALLOW_LIST} networks"
                    )
            else:
                for entry in entries:
                    if not ALLOWED_DOMAIN.fullmatch(entry):
                        raise api_error(request, 400, f'Invalid domain: "{entry}". Must be a valid domain name')
                if len(entries) > MAX_ALLOW_LIST:
                    raise api_error(
                        request, 400, f"Domain allow list cannot contain more than {MAX_ALLOW_LIST} domains"
                    )
            result[key] = value if entries else None
        return result

    async def _network_settings(self, request: web.Request) -> web.Response:
        """Applied at once to the running sandbox (§15.2): `networkBlockAll: true` blocks and
        clears the lists, `false` alone restores egress and clears them; a list implies not
        blocking all."""
        sb = self._find(request, request.match_info["id"])
        body = await _json_body(request, toolbox=False)
        fields = self._network_fields(request, body)
        block = body.get("networkBlockAll")
        lists_sent = [k for k in ("networkAllowList", "domainAllowList") if body.get(k) is not None]
        if block is True:
            sb.network_block_all, sb.network_allow_list, sb.domain_allow_list = True, None, None
        elif block is False and not lists_sent:
            sb.network_block_all, sb.network_allow_list, sb.domain_allow_list = False, None, None
        if lists_sent and block is not True:
            sb.network_block_all = False
            if "networkAllowList" in lists_sent:
                sb.network_allow_list = fields.get("networkAllowList")
            if "domainAllowList" in lists_sent:
                sb.domain_allow_list = fields.get("domainAllowList")
        sb.updated_at = _now()
        return web.json_response(self._dto(sb))

    # ----------------------------------------------------------------- toolbox: common

    def _toolbox_sandbox(self, request: web.Request) -> SandboxRecord:
        """Resolve the sandbox behind a toolbox URL the way the proxy does, and bump activity."""
        sb = self.sandboxes.get(request.match_info["sandbox_id"])
        if sb is None or sb.state in ("destroying", "destroyed", "archived"):
            raise proxy_error(request, 404, "sandbox container not found")
        if sb.state != "started":
            raise proxy_error(request, 400, NO_IP_MESSAGE)
        sb.last_activity = asyncio.get_running_loop().time()
        return sb

    async def _spawn_process(
        self, sb: SandboxRecord, argv: list[str], *, cwd: Path, env: dict[str, str], stdin: int
    ) -> asyncio.subprocess.Process:
        """Start a process in its own group (so it can be killed as a whole) and track it."""
        proc = await asyncio.create_subprocess_exec(
            *argv,
            cwd=str(cwd),
            env=env,
            stdin=stdin,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )
        sb.procs.add(proc)
        return proc

    async def _home_dir(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        return web.json_response({"dir": str(sb.home)})

    # ----------------------------------------------------------------- toolbox: process/execute

    async def _execute(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        body = await _json_body(request, toolbox=True)
        command = body.get("command")
        if not isinstance(command, str) or not command.strip():
            raise daemon_error(request, 400, "command is required", "BAD_REQUEST")
        cwd = sb.resolve(body["cwd"]) if body.get("cwd") else sb.home
        if not cwd.is_dir():
            raise daemon_error(request, 400, f"chdir {cwd}: no such file or directory", "BAD_REQUEST")
        env = sb.base_env()
        env.update({str(k): str(v) for k, v in (body.get("envs") or {}).items()})
        timeout = body.get("timeout")
        proc = await asyncio.create_subprocess_exec(
            _shell(), "-c", command,
            cwd=str(cwd), env=env, stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        sb.procs.add(proc)
        try:
            output, _ = await asyncio.wait_for(proc.communicate(), timeout=timeout if timeout else None)
        except asyncio.TimeoutError:
            _kill_group(proc.pid)
            await proc.wait()
            raise daemon_error(request, 408, "command execution timeout", "PROCESS_EXECUTION_TIMEOUT") from None
        finally:
            sb.procs.discard(proc)
        code = proc.returncode if proc.returncode is not None and proc.returncode >= 0 else -1
        return web.json_response({"exitCode": code, "result": output.decode("utf-8", "replace")})

    # ----------------------------------------------------------------- toolbox: sessions

    def _session(self, request: web.Request, sb: SandboxRecord) -> Session:
        session = sb.sessions.get(request.match_info["session_id"])
        if session is None:
            raise daemon_error(request, 404, "session not found", "NOT_FOUND")
        return session

    def _command(self, request: web.Request, session: Session) -> SessionCommand:
        command = session.commands.get(request.match_info["command_id"])
        if command is None:
            raise daemon_error(request, 404, "command not found", "NOT_FOUND")
        return command

    async def _session_create(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        body = await _json_body(request, toolbox=True)
        session_id = body.get("sessionId")
        if not isinstance(session_id, str) or not session_id:
            raise daemon_error(request, 400, "sessionId is required", "BAD_REQUEST")
        if session_id in sb.sessions:
            raise daemon_error(request, 409, "session already exists", "CONFLICT")
        state_dir = sb.daemon_dir / "sessions" / uuid.uuid4().hex
        state_dir.mkdir(parents=True)
        (state_dir / "cwd").write_text(str(sb.home))
        sb.sessions[session_id] = Session(id=session_id, state_dir=state_dir)
        return web.Response(status=201)

    async def _session_list(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        return web.json_response([s.as_json() for s in sb.sessions.values()])

    async def _session_get(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        return web.json_response(self._session(request, sb).as_json())

    async def _session_delete(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        session = self._session(request, sb)
        del sb.sessions[session.id]
        session.deleted = True
        for command in session.commands.values():
            if command.process is not None:
                _kill_group(command.process.pid)
            command.log.close()
        return web.Response(status=204)

    async def _session_exec(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        session = self._session(request, sb)
        body = await _json_body(request, toolbox=True)
        text = body.get("command")
        if not isinstance(text, str) or not text.strip():
            raise daemon_error(request, 400, "command cannot be empty", "BAD_REQUEST")
        if session.ended:
            raise daemon_error(request, 410, "session process has exited", "SESSION_ENDED")
        run_async = bool(body.get("runAsync") or body.get("async"))
        command = SessionCommand(
            id=str(uuid.uuid4()),
            command=text,
            run_async=run_async,
            suppress_input_echo=bool(body.get("suppressInputEcho")),
        )
        session.commands[command.id] = command
        command.task = self._spawn(self._run_session_command(sb, session, command))
        if run_async:
            return web.json_response({"cmdId": command.id}, status=202)
        while not command.log.done:
            if session.deleted:
                raise daemon_error(request, 400, "session cancelled", "BAD_REQUEST")
            await command.log.changed().wait()
        return web.json_response({"cmdId": command.id, **command.log.as_json(), "exitCode": command.exit_code})

    async def _run_session_command(self, sb: SandboxRecord, session: Session, command: SessionCommand) -> None:
        """Run one session command after the previous ones, like the daemon's session shell."""
        async with session.lock:
            if session.ended or session.deleted:
                return  # the real session shell is gone: the command never runs
            state = session.state_dir
            (state / f"{command.id}.sh").write_text(command.command)
            cwd = Path((state / "cwd").read_text().strip() or sb.home)
            if not cwd.is_dir():
                cwd = sb.home
            proc = await self._spawn_process(
                sb,
                [_shell(), "-c", _session_wrapper(state, command.id)],
                cwd=cwd,
                env=sb.base_env(),
                stdin=asyncio.subprocess.PIPE if command.run_async else asyncio.subprocess.DEVNULL,
            )
            command.process = proc
            assert proc.stdout is not None and proc.stderr is not None
            await asyncio.gather(
                _label_lines(proc.stdout, STDOUT_PREFIX, command.log),
                _label_lines(proc.stderr, STDERR_PREFIX, command.log),
            )
            returncode = await proc.wait()
            sb.procs.discard(proc)
            if proc.stdin is not None:
                proc.stdin.close()
            exit_file = state / f"{command.id}.exit"
            if exit_file.exists():
                command.exit_code = int(exit_file.read_text().strip() or "0")
            elif returncode < 0:
                command.exit_code = 128 - returncode  # killed by a signal, as `$?` reports it
            else:
                # `exit`/`exec` in a session command ends the real session shell: the exit
                # code is never written, so followers and sync exec hang there too.
                session.ended = True
                log.warning(
                    "session %s: command %s ended the session shell (exit/exec); "
                    "the real daemon never reports its exit code",
                    session.id,
                    command.id,
                )
                return
            command.log.finish()

    async def _command_get(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        command = self._command(request, self._session(request, sb))
        return web.json_response(command.as_json())

    async def _command_input(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        session = self._session(request, sb)
        if session.ended:
            raise daemon_error(request, 410, "session process has exited", "SESSION_ENDED")
        command = self._command(request, session)
        if command.exit_code is not None:
            raise daemon_error(
                request,
                410,
                f"command has already completed with exit code {command.exit_code}",
                "COMMAND_ALREADY_COMPLETED",
            )
        body = await _json_body(request, toolbox=True)
        data = str(body.get("data", ""))
        if not data.endswith("\n"):
            data += "\n"  # the daemon ensures a newline for `read`
        stdin = command.process.stdin if command.process is not None else None
        if stdin is None or stdin.is_closing():
            raise daemon_error(request, 500, "failed to open input pipe", "INTERNAL_SERVER_ERROR")
        stdin.write(data.encode())
        with contextlib.suppress(ConnectionError):
            await stdin.drain()
        if not command.suppress_input_echo:
            command.log.append(STDOUT_PREFIX, data.encode())
        return web.Response(status=204)

    async def _command_logs(self, request: web.Request) -> web.StreamResponse:
        sb = self._toolbox_sandbox(request)
        command = self._command(request, self._session(request, sb))
        if request.headers.get("Upgrade", "").lower() != "websocket":
            return web.json_response(command.log.as_json())
        follow = request.query.get("follow") == "true"
        return await self._stream_logs(request, sb, command.log, follow=follow)

    async def _stream_logs(
        self, request: web.Request, sb: SandboxRecord, cmd_log: CommandLog, *, follow: bool
    ) -> web.WebSocketResponse:
        """Replay the log, then push new bytes as lines complete; close 1000 at the end.

        A reader task keeps consuming frames so aiohttp answers the client's heartbeat
        pings (the SDK drops a socket after ~30 s without PONG)."""
        ws = web.WebSocketResponse(autoping=True)
        await ws.prepare(request)
        ws._dd_transport = request.transport  # type: ignore[attr-defined]  # for abrupt drops
        sb.websockets.add(ws)
        reader = asyncio.ensure_future(_drain_incoming(ws))
        offset = 0
        try:
            while True:
                changed = cmd_log.changed()
                if offset < len(cmd_log.output):
                    chunk = bytes(cmd_log.output[offset:])
                    offset += len(chunk)
                    await ws.send_bytes(chunk)
                    self.toolbox_bytes_out += len(chunk)
                    continue
                if cmd_log.done or cmd_log.closed or not follow:
                    break
                waiter = asyncio.ensure_future(changed.wait())
                await asyncio.wait({waiter, reader}, return_when=asyncio.FIRST_COMPLETED)
                waiter.cancel()
                if reader.done():
                    break  # the client went away
            await ws.close(code=1000)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            reader.cancel()
            sb.websockets.discard(ws)
            sb.last_activity = asyncio.get_running_loop().time()
        return ws

    # ----------------------------------------------------------------- toolbox: files

    async def _files_list(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        target = sb.resolve(request.query.get("path") or str(sb.home))
        depth = int(request.query.get("depth") or "1")
        if not target.exists():
            raise daemon_error(request, 404, f"file not found: {target}", "FILE_NOT_FOUND")
        if not target.is_dir():
            raise daemon_error(request, 400, f"not a directory: {target}", "INVALID_FILE_PATH")
        return web.json_response(_list_dir(target, depth))

    async def _files_info(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        raw = request.query.get("path", "")
        target = sb.resolve(raw)
        if not raw or not target.exists():
            raise daemon_error(request, 404, f"file not found: {raw}", "FILE_NOT_FOUND")
        return web.json_response(_file_info(target))

    async def _files_folder(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        raw = request.query.get("path", "")
        if not raw:
            raise daemon_error(request, 400, "path is required", "BAD_REQUEST")
        try:
            mode = int(request.query.get("mode") or "755", 8)
        except ValueError:
            raise daemon_error(request, 400, "invalid mode", "BAD_REQUEST") from None
        try:
            sb.resolve(raw).mkdir(mode=mode, parents=True, exist_ok=True)
        except OSError as exc:
            raise daemon_error(request, 400, str(exc), "BAD_REQUEST") from None
        return web.Response(status=201)

    async def _files_delete(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        raw = request.query.get("path", "")
        target = sb.resolve(raw)
        if not raw or not (target.exists() or target.is_symlink()):
            raise daemon_error(request, 404, f"file not found: {raw}", "FILE_NOT_FOUND")
        if target.is_dir() and not target.is_symlink():
            if request.query.get("recursive") != "true":
                raise daemon_error(
                    request, 400, "cannot delete directory without recursive flag", "BAD_REQUEST"
                )
            shutil.rmtree(target)
        else:
            target.unlink()
        return web.Response(status=204)

    async def _bulk_download(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        body = await _json_body(request, toolbox=True)
        paths = body.get("paths")
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise daemon_error(request, 400, "paths must be a list of strings", "BAD_REQUEST")
        parts = [_download_part(request, sb, p) for p in paths]
        payload = b"".join(parts) + f"--{DOWNLOAD_BOUNDARY}--\r\n".encode()
        return web.Response(
            status=200,
            body=payload,
            headers={"Content-Type": f"multipart/form-data; boundary={DOWNLOAD_BOUNDARY}"},
        )

    async def _bulk_upload(self, request: web.Request) -> web.Response:
        sb = self._toolbox_sandbox(request)
        try:
            reader = await request.multipart()
        except (AssertionError, ValueError, KeyError):
            return web.json_response({"errors": ["request is not multipart/form-data"]}, status=400)
        destinations: dict[str, str] = {}
        contents: dict[str, bytes] = {}
        async for part in reader:
            name = part.name or ""
            match = re.fullmatch(r"files\[(\d+)\]\.(path|file)", name)
            if match is None:
                continue
            index, kind = match.groups()
            data = bytes(await part.read())  # type: ignore[union-attr]
            if kind == "path":
                destinations[index] = data.decode()
            else:
                contents[index] = data
                if index not in destinations and getattr(part, "filename", None):
                    destinations[index] = urllib.parse.unquote(part.filename)  # type: ignore[union-attr]
        return self._store_uploads(sb, destinations, contents)

    @staticmethod
    def _store_uploads(sb: SandboxRecord, destinations: dict[str, str], contents: dict[str, bytes]) -> web.Response:
        files, errors = [], []
        for index in sorted(contents, key=int):
            destination = destinations.get(index)
            if not destination:
                errors.append(f"files[{index}]: missing path")
                continue
            target = sb.resolve(destination)
            try:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(contents[index])
            except OSError as exc:
                errors.append(f"{destination}: {exc.strerror or exc}")
                continue
            files.append({"path": destination, "bytes": len(contents[index])})
        if errors:
            return web.json_response({"files": files, "errors": errors}, status=400)
        return web.json_response({"files": files})


# --------------------------------------------------------------------------- module helpers


def _split_list(value: str | None) -> list[str] | None:
    """A comma-separated allow list → its non-empty, trimmed entries (None if unset)."""
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _check_cidr(request: web.Request, network: str) -> None:
    """The server's networkAllowList entry check (network-validation.util.ts)."""
    address, slash, prefix = network.partition("/")
    try:
        ipaddress.IPv4Address(address)
    except ValueError:
        raise api_error(
            request, 400, f'Invalid IP address: "{address}" in network "{network}". Must be a valid IPv4 address'
        ) from None
    if not slash or not prefix:
        raise api_error(request, 400, f'Invalid network format: "{network}". Missing CIDR prefix length (e.g., /24)')
    if not prefix.isdigit() or not 0 <= int(prefix) <= 32:
        raise api_error(request, 400, f"Invalid CIDR prefix length: {network}. Prefix must be between 0 and 32")


def _session_wrapper(state: Path, command_id: str) -> str:
    """Shell text that runs one session command the way the daemon's session shell would:
    restore the exported env, source the command file, record `$?`, save cwd/env for the
    next command. No exit-code file means the command ran `exit` (the shell is gone)."""
    s = _sh_quote(str(state))
    return (
        f"__dd_state={s}\n"
        'if [ -f "$__dd_state/env" ]; then . "$__dd_state/env"; fi\n'
        '__dd_save() { pwd > "$__dd_state/cwd" 2>/dev/null; export -p > "$__dd_state/env" 2>/dev/null; }\n'
        "trap __dd_save EXIT\n"
        f'. "$__dd_state/{command_id}.sh"\n'
        "__dd_ec=$?\n"
        f'echo "$__dd_ec" > "$__dd_state/{command_id}.exit"\n'
        'exit "$__dd_ec"\n'
    )


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


async def _label_lines(stream: asyncio.StreamReader, prefix: bytes, cmd_log: CommandLog) -> None:
    """The daemon's labeler: each complete line goes to the log with its marker as soon as it
    arrives; a partial last line is flushed at EOF with a "\\n" appended."""
    pending = bytearray()
    while chunk := await stream.read(READ_CHUNK):
        searched = len(pending)  # only the new bytes can hold a newline
        pending += chunk
        cut = pending.rfind(b"\n", searched)
        if cut < 0:
            continue
        complete = bytes(pending[: cut + 1])
        del pending[: cut + 1]
        for line in complete[:-1].split(b"\n"):
            cmd_log.append(prefix, line + b"\n")
    if pending:
        cmd_log.append(prefix, bytes(pending) + b"\n")


async def _drain_incoming(ws: web.WebSocketResponse) -> None:
    """Consume client frames so aiohttp's autoping answers heartbeat PINGs."""
    with contextlib.suppress(Exception):
        async for _ in ws:
            pass


def _download_part(request: web.Request, sb: SandboxRecord, requested: str) -> bytes:
    """One multipart part: the file (name="file") or a daemon error (name="error"); the
    filename echoes the requested path verbatim because the SDK matches parts by it."""
    target = sb.resolve(requested)
    error: tuple[int, str, str] | None = None
    data = b""
    if not (target.exists() or target.is_symlink()):
        error = (404, f"file not found: {requested}", "FILE_NOT_FOUND")
    elif target.is_dir():
        error = (400, f"path is a directory: {requested}", "INVALID_FILE_PATH")
    else:
        try:
            data = target.read_bytes()
        except PermissionError:
            error = (403, f"permission denied: {requested}", "FILE_ACCESS_DENIED")
        except OSError as exc:
            error = (500, f"failed to read file: {exc.strerror or exc}", "FILE_READ_FAILED")
    quoted = requested.replace("\\", "\\\\").replace('"', '\\"')
    encoded = urllib.parse.quote(requested, safe="")
    disposition = f'filename="{quoted}"; filename*=utf-8\'\'{encoded}'
    if error is not None:
        status, message, code = error
        body = _daemon_error_body(request, status, message, code)
        body["path"] = requested
        data = json.dumps(body).encode()
        headers = (
            "Content-Type: application/json; charset=utf-8\r\n"
            f'Content-Disposition: form-data; name="error"; {disposition}\r\n'
        )
    else:
        headers = (
            "Content-Type: application/octet-stream\r\n"
            f'Content-Disposition: form-data; name="file"; {disposition}\r\n'
            f"Content-Length: {len(data)}\r\n"
        )
    return f"--{DOWNLOAD_BOUNDARY}\r\n{headers}\r\n".encode() + data + b"\r\n"


def _go_time(moment: dt.datetime) -> str:
    """Go's time.String() layout, which the daemon uses for the deprecated modTime."""
    return moment.strftime("%Y-%m-%d %H:%M:%S.") + f"{moment.microsecond * 1000:09d} +0000 UTC"


def _file_info(path: Path) -> dict[str, Any]:
    st = path.lstat() if path.is_symlink() else path.stat()
    modified = dt.datetime.fromtimestamp(st.st_mtime, dt.timezone.utc)
    try:
        owner = pwd.getpwuid(st.st_uid).pw_name
    except KeyError:
        owner = str(st.st_uid)
    try:
        group = grp.getgrgid(st.st_gid).gr_name
    except KeyError:
        group = str(st.st_gid)
    return {
        "name": path.name,
        "path": str(path),
        "size": st.st_size,
        "mode": stat.filemode(st.st_mode),
        "modTime": _go_time(modified),
        "modifiedAt": modified.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "isDir": stat.S_ISDIR(st.st_mode),
        "owner": owner,
        "group": group,
        "permissions": f"{stat.S_IMODE(st.st_mode):04o}",
    }


def _list_dir(directory: Path, depth: int) -> list[dict[str, Any]]:
    entries = []
    for child in sorted(directory.iterdir()):
        entries.append(_file_info(child))
        if depth > 1 and child.is_dir() and not child.is_symlink():
            entries.extend(_list_dir(child, depth - 1))
    return entries


# --------------------------------------------------------------------------- pytest fixtures


@pytest.fixture(scope="session")
def claude_bin_dir() -> Path:
    """Directory holding the real Claude Code CLI (installed once into a cache)."""
    from tests.claude_cli import ensure_claude_cli

    return ensure_claude_cli()


@pytest_asyncio.fixture
async def daytona_double(claude_bin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[DaytonaDouble]:
    """A started double whose default snapshot "daytona-small" has `claude` on its PATH.

    NO_PROXY is set because the SDK's aiohttp session uses trust_env=True."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    double = DaytonaDouble(snapshots={"daytona-small": SnapshotSpec(path=[str(claude_bin_dir)], general=True)})
    await double.start()
    try:
        yield double
    finally:
        await double.stop()
