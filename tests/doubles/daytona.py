"""A local, faithful double of the Daytona service for tests that drive the real `daytona` SDK.

No test machine can reach Daytona, so the tests run the real SDK (0.226.1) against this
double: one aiohttp server on 127.0.0.1 serving

* the control plane under ``/api`` (sandboxes, state transitions, labels, intervals),
* socket.io events under ``/api/socket.io`` (without them every SDK state wait costs 1 s),
* the toolbox (the in-sandbox daemon, reached through the proxy) under ``/toolbox/{id}``,
* organization Secrets under ``/api/secret`` and per-sandbox secrets and network policy
  (§14, §15), enforced by one egress proxy per sandbox (``tests/doubles/egress.py``),
* snapshots: lookups (``/api/snapshots``), builds from a declarative ``Image`` with their
  states and streamed build log, and deletion (§16); the organization's regions (``/api/regions``),
* forks (§20.1): a fork is a copy of the source's directory tree, relocated so that paths
  recorded inside it (Claude Code's ``~/.claude/projects/<cwd slug>``…) name the fork's own
  root, as they would in a real same-path copy-on-write clone,
* preview links (§19), signed and unsigned, served path-based by the same server and proxied
  to ``127.0.0.1:<port>``, where a server started in a sandbox (a local process) listens.
* the git toolbox (§18): ``TB/git/...`` runs the real ``git`` in the sandbox's tree with the
  environment its processes get, so clones and pushes go through its egress proxy and network
  policy; ``tests/doubles/git_host.py`` is a remote to talk to.

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
import base64
import contextlib
import datetime as dt
import grp
import hashlib
import hmac
import ipaddress
import json
import logging
import math
import os
import pwd
import re
import secrets as random_tokens
import shlex
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

import aiohttp
import pytest
import pytest_asyncio
import socketio
from aiohttp import web
from yarl import URL

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
#: Snapshot (and image) names the server accepts (`snapshot.service.ts` IMAGE_NAME_REGEX).
IMAGE_NAME = re.compile(r"^[a-zA-Z0-9_.\-:]+(/[a-zA-Z0-9_.\-:]+)*(@sha256:[a-f0-9]{64})?$")
#: Signed preview URL lifetime bounds and default, in seconds (§19).
SIGNED_PREVIEW_DEFAULT, SIGNED_PREVIEW_MAX = 60, 24 * 60 * 60
#: The proxy's auth cookie lifetime after a successful signed-token visit (server v0.190 proxy).
PREVIEW_COOKIE = "daytona-sandbox-auth-"
PREVIEW_COOKIE_MAX_AGE = 3600
#: Tokens: nanoid's URL alphabet without "_" and "-", lower-cased (server v0.190).
TOKEN_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyz"
#: Headers a proxy does not forward (RFC 9110 §7.6.1, as Go's httputil.ReverseProxy).
HOP_BY_HOP = frozenset(
    h.lower()
    for h in ("Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
              "TE", "Trailer", "Transfer-Encoding", "Upgrade")
)
#: Dockerfile instructions that become a BuildKit step ("[n/m] RUN …"); the others only set metadata.
BUILD_STEPS = ("FROM", "RUN", "COPY", "ADD", "WORKDIR")

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


def _token(length: int) -> str:
    return "".join(random_tokens.choice(TOKEN_ALPHABET) for _ in range(length))


# --------------------------------------------------------------------------- records


@dataclass
class SnapshotSpec:
    """What an image provides: extra PATH dirs (e.g. where `claude` lives) and image env.

    `general`: one of Daytona's own snapshots (like `daytona-small`), which every organization
    can create sandboxes from and list, but not `GET` by name: the public server source
    (`SnapshotAccessGuard`) answers 404 unless the organization ids match. Some later servers
    let general snapshots through; the double keeps the stricter answer.

    Snapshots built through the API (`daytona.snapshot.create`, §16) also carry their `id`,
    `state` (pending → building → active | error | build_failed, removing once deleted),
    `error_reason` and the `dockerfile` the SDK generated from the `Image` (so a test can check
    what the image pins); `image_name` is set for snapshots made from a registry image."""

    path: list[str] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict)
    general: bool = False
    id: str | None = None
    state: str = "active"
    error_reason: str | None = None
    dockerfile: str | None = None
    image_name: str | None = None


@dataclass
class BuildFailure:
    """How the next build(s) fail (`DaytonaDouble.fail_builds`)."""

    step: str | None  # a substring of the failing instruction; None = the last RUN
    state: str  # "error" (a Dockerfile step failed) or "build_failed" (the runner refused the build)
    reason: str | None
    output: list[str]
    count: int


class BuildLog:
    """A snapshot's build log as the runner writes it: lines appended, followers notified."""

    def __init__(self) -> None:
        self.data = bytearray()
        self.done = False
        self._changed = asyncio.Event()

    def append(self, line: str) -> None:
        self.data += (line.rstrip("\n") + "\n").encode()
        self._notify()

    def finish(self) -> None:
        self.done = True
        self._notify()

    def changed(self) -> asyncio.Event:
        return self._changed

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()


@dataclass
class SnapshotBuild:
    """Server-side details of a snapshot created through `POST /snapshots`."""

    name: str
    build_info: dict[str, Any] | None  # {"dockerfileContent", "contextHashes"}
    region: str
    cpu: int
    gpu: int
    mem: int
    disk: int
    created_at: dt.datetime = field(default_factory=_now)
    updated_at: dt.datetime = field(default_factory=_now)
    runner: str | None = None  # set when a runner takes the build (leaves `pending`)
    size: float | None = None
    entrypoint: list[str] | None = None
    seen_building: asyncio.Event = field(default_factory=asyncio.Event)
    log: BuildLog = field(default_factory=BuildLog)
    task: asyncio.Task[None] | None = None

    @property
    def snapshot_ref(self) -> str | None:
        """`generateBuildInfoHash` of the server: sha256 of the Dockerfile + sorted context hashes."""
        if self.build_info is None:
            return None
        combined = self.build_info["dockerfileContent"] + "".join(sorted(self.build_info.get("contextHashes") or []))
        return f"daytona-{hashlib.sha256(combined.encode()).hexdigest()}:daytona"


@dataclass
class SignedPreview:
    """A signed preview token (the server keeps `port:token -> sandbox id` in redis with a TTL)."""

    sandbox_id: str
    port: int
    expires_at: float  # time.monotonic()


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
    #: The sandbox this one was forked from (§20.1); a parent with live forks cannot be deleted.
    parent_id: str | None = None
    #: The standard preview token (`get_preview_link`); a new one at every start (§19).
    auth_token: str = field(default_factory=lambda: _token(32))
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
        start_delay: seconds a sandbox spends in each transitional state (starting, stopping,
            forking…); also a snapshot build's wait for a runner (`pending`) and its removal.
        create_delay: seconds a new sandbox spends in `creating` before `starting`; 0 (the
            default) skips `creating` and a create answers `starting`, as the double always did.
            The reference gives no production creation or start latency (§6.3 only measures
            the double), so both defaults stay small to keep the suite fast.
        build_seconds: how long a snapshot build (§16) runs in `building`, its log lines spread
            over it (default 0.3). A build also stays `building` until the API has reported it
            `building` once (at most 2 s more): real builds take minutes, so the SDK, which polls
            every second and streams the log only after it has seen `building`, always sees
            one run; a fast double must not skip from `pending` to `active` between two polls.
        built_snapshot_path: PATH dirs of snapshots built through the API. The double does not
            run the Dockerfile; by default a built snapshot gets the PATH of the first snapshot
            given in `snapshots` (in the fixtures, where the real `claude` lives) and the
            Dockerfile's `ENV` values.
        forkable: whether `fork` works (§20.1). The v0.190 server forks only `linux-vm` and
            `windows` sandboxes (others: 422 "Forking is not supported for this sandbox") and
            whether 0.226's still does is unverified; the double allows forks by default although
            its DTOs say `container`. Set False for the 422 (also settable on the instance).
        autostop_seconds_per_minute: if set, idle auto-stop/auto-delete run on a clock where
            one Daytona minute lasts that many seconds (e.g. 0.1).

    Secrets and egress (§14, §15): `secrets` (id → `SecretRecord`, values included),
    `secret_named(name)`, `sandbox_secrets(sandbox_id)` (env var → Secret name); `hosts`
    (name → loopback IP: the sandboxes' DNS, e.g. ``hosts["api.anthropic.test"] = "127.0.0.1"``);
    `egress_log` / `egress_requests(sandbox_id)` (each request as it left, after substitution);
    `egress_proxy_url(sandbox_id)`; `break_substitution(sandbox_id)` (a stuck sandbox).

    Previews (§19): `signed_previews` ((port, token) → `SignedPreview`); preview URLs are
    path-based, ``http://127.0.0.1:<double port>/preview/<port>-<token or sandbox id>[/path]``,
    for the real ``https://<port>-<token>.<proxy domain>[/path]``. Snapshot builds (§16):
    `fail_builds(...)`; a built snapshot is `snapshots[name]` (with its `dockerfile`).

    Git (§18): clone, status, add, commit, push, pull, branches (list/create/delete) and
    checkout run real git in the sandbox (`git_timeout` bounds each run); serve repos with
    ``tests/doubles/git_host.GitHost`` and map its name: ``hosts[host.hostname] = host.ip``.
    """

    organization_id = "00000000-0000-4000-8000-00000000d0d0"

    def __init__(
        self,
        api_key: str = "dtn-test-key",
        *,
        snapshots: dict[str, SnapshotSpec] | None = None,
        start_delay: float = 0.05,
        create_delay: float = 0.0,
        build_seconds: float = 0.3,
        built_snapshot_path: list[str] | None = None,
        forkable: bool = True,
        autostop_seconds_per_minute: float | None = None,
        target: str = "us",
    ) -> None:
        self.api_key = api_key
        self.snapshots = snapshots if snapshots is not None else {"daytona-small": SnapshotSpec(general=True)}
        self.start_delay = start_delay
        self.create_delay = create_delay
        self.build_seconds = build_seconds
        first = next(iter(self.snapshots.values()), None)
        self.built_snapshot_path = list(built_snapshot_path if built_snapshot_path is not None
                                        else first.path if first is not None else [])
        self.forkable = forkable
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
        self.signed_previews: dict[tuple[int, str], SignedPreview] = {}
        self._builds: dict[str, SnapshotBuild] = {}  # by snapshot id
        self._build_failures: list[BuildFailure] = []
        self._cookie_key = random_tokens.token_bytes(32)  # signs the proxy's auth cookies
        self._http: aiohttp.ClientSession | None = None  # the preview proxy's upstream client

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
        # Upstream client of the preview proxy: bodies pass through as sent (no decompression),
        # no cookies kept, no proxy variables, redirects returned to the client.
        self._http = aiohttp.ClientSession(
            auto_decompress=False, cookie_jar=aiohttp.DummyCookieJar(), trust_env=False,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10),
        )
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
        for build in self._builds.values():
            build.log.finish()  # ends build-log followers
        await self._reap_commands(list(self.sandboxes.values()))
        if self._sio is not None:
            with contextlib.suppress(Exception):
                await self._sio.shutdown()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._http is not None:
            await self._http.close()
            self._http = None
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

    def fail_builds(
        self,
        step: str | None = None,
        *,
        state: str = "error",
        reason: str | None = None,
        output: list[str] | None = None,
        count: int = 1,
    ) -> None:
        """The next `count` snapshot builds fail (§16).

        `state="error"` (default): a Dockerfile step fails while building, which in the v0.190
        server ends the snapshot in `error` with the runner's build error as `errorReason`
        (`snapshot.manager.ts` handleCheckInitialRunnerSnapshot); `step` is a substring of the
        failing instruction (default: the last RUN), `output` the lines it printed, and the
        reason defaults to BuildKit's ``process "/bin/sh -c <cmd>" did not complete
        successfully: exit code: 1``. `state="build_failed"`: the runner refused the build
        request (`processBuildOnRunner`), with `reason` (default "Request failed with status
        code 500", an axios message) and no log. Both default reasons are assumptions: the
        exact `errorReason` text of the 0.226 service is unverified."""
        if state not in ("error", "build_failed"):
            raise ValueError("state must be 'error' or 'build_failed'")
        self._build_failures.append(BuildFailure(step, state, reason, list(output or []), count))

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

    def _later(
        self, sb: SandboxRecord, expected: str, action: Callable[[], None], *, delay: float | None = None
    ) -> None:
        """Run `action` after `delay` (default start_delay) if the sandbox is still in `expected` state."""

        async def run() -> None:
            await asyncio.sleep(self.start_delay if delay is None else delay)
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
        # Preview URLs authenticate themselves (token, cookie); the login page is public.
        public = path.startswith(("/preview/", "/oidc/"))
        try:
            response = (
                await self._injected(request)
                or (None if public else self._unauthorized(request))
                or await handler(request)
            )
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
                web.get(api + "/{id}/ports/{port}/signed-preview-url", self._signed_preview_url),
                web.post(api + "/{id}/ports/{port}/signed-preview-url/{token}/expire", self._expire_signed_preview),
                web.post(api + "/{id}/fork", self._fork),
                web.get("/api/snapshots", self._snapshot_list),
                web.post("/api/snapshots", self._snapshot_create),
                web.get("/api/snapshots/{id}", self._snapshot_get),
                web.delete("/api/snapshots/{id}", self._snapshot_delete),
                web.get("/api/snapshots/{id}/build-logs-url", self._snapshot_logs_url),
                web.get("/snapshots/{id}/build-logs", self._snapshot_logs),  # on the proxy
                web.route("*", "/preview/{target}", self._preview_proxy),
                web.route("*", "/preview/{target}/{tail:.*}", self._preview_proxy),
                web.get("/oidc/authorize", self._login_page),
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
                web.post(tb + "/git/clone", self._git_clone),
                web.get(tb + "/git/status", self._git_status),
                web.post(tb + "/git/add", self._git_add),
                web.post(tb + "/git/commit", self._git_commit),
                web.post(tb + "/git/push", self._git_push),
                web.post(tb + "/git/pull", self._git_pull),
                web.get(tb + "/git/branches", self._git_branches),
                web.post(tb + "/git/branches", self._git_create_branch),
                web.delete(tb + "/git/branches", self._git_delete_branch),
                web.post(tb + "/git/checkout", self._git_checkout),
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
        requested = body.get("snapshot") or next(iter(self.snapshots))
        snapshot = self._snapshot_name(requested)
        if snapshot is None:
            raise api_error(
                request, 400, f"Snapshot {requested} not found. Did you add it through the Daytona Dashboard?"
            )
        if self.snapshots[snapshot].state != "active":
            raise api_error(request, 400, f"Snapshot {requested} is {self.snapshots[snapshot].state}")
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
        if self.create_delay > 0:
            sb.state = "creating"

            def starting() -> None:
                self._set_state(sb, "starting")
                self._later(sb, "starting", lambda: self._set_state(sb, "started", desired="started"))

            self._later(sb, "creating", starting, delay=self.create_delay)
        else:
            self._later(sb, "starting", lambda: self._set_state(sb, "started", desired="started"))
        self._emit("sandbox.created", self._dto(sb))
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
        if sb.state == "forking":  # `pending` while the runner forks it
            raise api_error(request, 409, "Sandbox state change in progress")
        if any(child.parent_id == sb.id and child.desired_state != "destroyed" for child in self.sandboxes.values()):
            # server v0.190 `sandbox.service.ts` destroy(): a BadRequestError
            raise api_error(
                request, 400, "Cannot delete sandbox which has active fork children. The forks must be deleted first."
            )
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
        sb.auth_token = _token(32)  # the standard preview token changes at every start (§19)
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

    # ----------------------------------------------------------------- preview links (§19)

    def _preview_base(self, port: int | str, key: str) -> str:
        """Path-based stand-in for the real ``https://{port}-{key}.{proxy domain}``: same server,
        ``/preview/{port}-{key}``, then the page's own path. Links a page makes relative to its
        root (``href="/app.js"``) escape the prefix, which a host-based URL would not."""
        return f"http://127.0.0.1:{self.port}/preview/{port}-{key}"

    async def _preview_url(self, request: web.Request) -> web.Response:
        """`get_preview_link`: `{sandboxId, url, token}`; the token (send it as
        `X-Daytona-Preview-Token`) is the sandbox's, and changes at every start."""
        sb = self._find(request, request.match_info["id"])
        port = request.match_info["port"]
        return web.json_response({"sandboxId": sb.id, "url": self._preview_base(port, sb.id), "token": sb.auth_token})

    async def _signed_preview_url(self, request: web.Request) -> web.Response:
        """`create_signed_preview_url` (../shared/reference/daytona.md §19; server v0.190
        `getSignedPortPreviewUrl`): port 1–65535, `expiresInSeconds` 1–86400 (default 60), then the sandbox;
        a 16-character lower-case token bound to that port, stored with its TTL; survives restarts. A
        non-integer `expiresInSeconds` is a 400 here (v0.190 would hand NaN on to redis: a 500)."""
        port = _as_int(request.match_info["port"])
        if port is None or not 1 <= port <= 65535:
            raise api_error(request, 400, "Invalid port")
        raw = request.query.get("expiresInSeconds")
        expires = SIGNED_PREVIEW_DEFAULT if raw is None else _as_int(raw)
        if expires is None or not 1 <= expires <= SIGNED_PREVIEW_MAX:
            raise api_error(request, 400, "expiresInSeconds must be between 1 second and 24 hours")
        sb = self._find(request, request.match_info["id"])
        token = _token(16)
        self.signed_previews[(port, token)] = SignedPreview(sb.id, port, time.monotonic() + expires)
        return web.json_response(
            {"sandboxId": sb.id, "port": port, "token": token, "url": self._preview_base(port, token)}
        )

    async def _expire_signed_preview(self, request: web.Request) -> web.Response:
        """`expire_signed_preview_url`: 200, no body. Like the server (a redis DEL of
        `port:token`), an unknown token is no error, and the token need not be this sandbox's."""
        self._find(request, request.match_info["id"])
        port = _as_int(request.match_info["port"])
        if port is not None:
            self.signed_previews.pop((port, request.match_info["token"]), None)
        return web.Response(status=200)

    async def _preview_proxy(self, request: web.Request) -> web.StreamResponse:
        """The preview proxy (../shared/reference/daytona.md §19; server v0.190 `apps/proxy`, runner and
        daemon `/proxy/{port}`): authenticate, then forward method, path, query, headers (hop-by-hop ones
        dropped, ``Host: localhost:<port>``, ``X-Forwarded-For``/``-Host`` added) and body to
        ``127.0.0.1:<port>``, and stream the answer back unchanged.

        Without valid credentials the proxy redirects (307) to the Daytona login page, as it does for an
        expired or revoked signed token; a successful signed-token visit sets a one-hour auth cookie that
        keeps working after the token expires. Nothing listening → 502 with an empty body; a stopped sandbox
        → 400 "no IP address found…". Proxied requests count as activity unless
        `X-Daytona-Skip-Last-Activity-Update: true`. Not modelled: the browser warning page (browser
        User-Agents only), WebSockets."""
        match = re.fullmatch(r"(\d{1,5})-([A-Za-z0-9-]+)", request.match_info["target"])
        if match is None:
            raise proxy_error(request, 404, "not found")
        port, key = int(match.group(1)), match.group(2)
        headers = request.headers.copy()
        query = request.query_string
        sandbox_id, cookie = self._preview_auth(request, port, key, headers)
        if sandbox_id is None:
            return self._login_redirect(request, key)
        if "DAYTONA_SANDBOX_AUTH_KEY" in request.query:
            query = urllib.parse.urlencode(
                sorted((k, v) for k, v in request.query.items() if k != "DAYTONA_SANDBOX_AUTH_KEY")
            )
        sb = self.sandboxes.get(sandbox_id)
        activity = sb.last_activity if sb is not None else 0.0
        sb = self._running_sandbox(request, sb)
        if headers.get("X-Daytona-Skip-Last-Activity-Update") == "true":
            sb.last_activity = activity
        headers.popall("X-Daytona-Skip-Last-Activity-Update", None)
        path = request.raw_path.partition("?")[0][len(f"/preview/{request.match_info['target']}"):]
        if not path.startswith("/"):
            path = "/" + path
        return await self._forward(request, port, path, query, headers, cookie)

    def _preview_auth(
        self, request: web.Request, port: int, key: str, headers: Any
    ) -> tuple[str | None, tuple[str, str] | None]:
        """The proxy's `Authenticate`, in its order: public sandbox, API key, preview token
        (header, then query), auth cookie, signed token. Returns (sandbox id or None, cookie to
        set); credential headers are removed from what is forwarded."""
        sb = self.sandboxes.get(key)
        if sb is not None and sb.public:
            return key, None
        authorization = headers.get("Authorization", "")
        if authorization.startswith("Bearer ") and sb is not None and authorization[7:].strip() == self.api_key:
            headers.popall("Authorization")
            return key, None
        preview_token = headers.get("X-Daytona-Preview-Token")
        headers.popall("X-Daytona-Preview-Token", None)
        if sb is not None and sb.auth_token in (preview_token, request.query.get("DAYTONA_SANDBOX_AUTH_KEY")):
            return key, None
        cookie_value = request.cookies.get(PREVIEW_COOKIE + key)
        if cookie_value is not None and (from_cookie := self._cookie_sandbox(PREVIEW_COOKIE + key, cookie_value)):
            return from_cookie, None
        signed = self.signed_previews.get((port, key))
        if signed is not None and signed.expires_at <= time.monotonic():
            del self.signed_previews[(port, key)]  # the redis key has expired
            signed = None
        if signed is None:
            return None, None
        return signed.sandbox_id, (PREVIEW_COOKIE + key, self._cookie_for(PREVIEW_COOKIE + key, signed.sandbox_id))

    def _cookie_for(self, name: str, sandbox_id: str) -> str:
        """A signed, timestamped cookie value (gorilla/securecookie with MaxAge 3600 in the proxy)."""
        payload = base64.urlsafe_b64encode(f"{sandbox_id}|{int(time.time())}".encode()).decode()
        signature = hmac.new(self._cookie_key, f"{name}|{payload}".encode(), hashlib.sha256).hexdigest()
        return f"{payload}.{signature}"

    def _cookie_sandbox(self, name: str, value: str) -> str | None:
        payload, _, signature = value.partition(".")
        expected = hmac.new(self._cookie_key, f"{name}|{payload}".encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(signature, expected):
            return None
        try:
            sandbox_id, _, issued = base64.urlsafe_b64decode(payload.encode()).decode().partition("|")
            fresh = time.time() - int(issued) <= PREVIEW_COOKIE_MAX_AGE
        except (ValueError, UnicodeDecodeError):
            return None
        return sandbox_id if fresh else None

    def _login_redirect(self, request: web.Request, key: str) -> web.Response:
        """What the proxy does when every credential failed on a preview host: 307 to the OIDC
        login (`getAuthUrl`), with `returnTo` in the state. The double's login page stands in
        for Daytona's identity provider."""
        state = base64.urlsafe_b64encode(
            json.dumps({"state": _token(22), "returnTo": str(request.url), "sandboxId": key}).encode()
        ).decode()
        query = urllib.parse.urlencode(
            {
                "audience": "https://api.daytona.double",
                "client_id": "daytona-proxy",
                "code_challenge": base64.urlsafe_b64encode(random_tokens.token_bytes(32)).decode().rstrip("="),
                "code_challenge_method": "S256",
                "redirect_uri": f"http://127.0.0.1:{self.port}/callback",
                "response_type": "code",
                "scope": "openid profile",
                "state": state,
            }
        )
        location = f"http://127.0.0.1:{self.port}/oidc/authorize?{query}"
        body = f'<a href="{location.replace("&", "&amp;")}">Temporary Redirect</a>.\n\n'  # Go's http.Redirect
        return web.Response(status=307, text=body, content_type="text/html", headers={"Location": location})

    async def _login_page(self, request: web.Request) -> web.Response:
        return web.Response(
            text="<!doctype html><title>Log in | Daytona</title><h1>Log in to Daytona</h1>\n", content_type="text/html"
        )

    async def _forward(
        self, request: web.Request, port: int, path: str, query: str, headers: Any, cookie: tuple[str, str] | None
    ) -> web.StreamResponse:
        """Send the request to ``127.0.0.1:<port>`` and stream the answer back."""
        assert self._http is not None
        listed = {h.strip().lower() for h in headers.get("Connection", "").split(",") if h.strip()}
        forwarded: list[tuple[str, str]] = [
            (k, v) for k, v in headers.items()
            if k.lower() not in HOP_BY_HOP and k.lower() not in listed and k.lower() not in ("host", "content-length")
        ]  # fmt: skip
        client = request.remote or "127.0.0.1"
        prior = headers.get("X-Forwarded-For")
        forwarded = [(k, v) for k, v in forwarded if k.lower() != "x-forwarded-for"]
        forwarded += [
            ("Host", f"localhost:{port}"),
            ("X-Forwarded-For", f"{prior}, {client}" if prior else client),
            ("X-Forwarded-Host", request.host),
        ]
        body = await request.read() if request.body_exists else None
        target = URL(f"http://127.0.0.1:{port}{path}" + (f"?{query}" if query else ""), encoded=True)
        try:
            upstream = await self._http.request(
                request.method, target, headers=forwarded, data=body, allow_redirects=False,
                skip_auto_headers=("User-Agent", "Accept", "Accept-Encoding", "Content-Type"),
            )  # fmt: skip
        except (aiohttp.ClientError, OSError) as exc:
            log.info("preview proxy: %s %s: %s", request.method, target, exc)
            return web.Response(status=502)  # the daemon's ReverseProxy ErrorHandler: empty body
        async with upstream:
            response = web.StreamResponse(status=upstream.status, reason=upstream.reason)
            upstream_listed = {h.strip().lower() for h in upstream.headers.get("Connection", "").split(",")}
            for name, value in upstream.headers.items():
                if name.lower() not in HOP_BY_HOP and name.lower() not in upstream_listed:
                    response.headers.add(name, value)
            if cookie is not None:
                response.set_cookie(cookie[0], cookie[1], max_age=PREVIEW_COOKIE_MAX_AGE, path="/", httponly=True)
            await response.prepare(request)
            try:
                async for chunk in upstream.content.iter_any():
                    await response.write(chunk)
                await response.write_eof()
            except (aiohttp.ClientError, ConnectionError) as exc:
                log.info("preview proxy: %s %s: stream ended early: %s", request.method, target, exc)
        return response

    # ----------------------------------------------------------------- fork (§20.1)

    async def _fork(self, request: web.Request) -> web.Response:
        """`POST /sandbox/{idOrName}/fork` (../shared/reference/daytona.md §20.1; server v0.190
        `forkSandbox`): 422 for a class that cannot fork (knob `forkable`), 400 unless the source is
        `started`, 409 for a taken name. The new sandbox takes the source's snapshot, user, env, labels,
        visibility, intervals, network settings and Secrets (v0.190 copies networkBlockAll/networkAllowList;
        that domainAllowList and Secrets carry over too is an assumption), is answered in `creating` and
        reaches `started` after start_delay, while the source is `forking` for as long. Its files are a copy
        of the source's at the time of the request (the daemon's sessions are not: a fork starts with no
        process)."""
        src = self._find(request, request.match_info["id"])
        body = await _json_body(request, toolbox=False)
        if not self.forkable:
            raise api_error(request, 422, "Forking is not supported for this sandbox")
        if src.state != "started":
            raise api_error(request, 400, "Sandbox must be in started state to fork")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise validation_error(request, "name must be a string")
        fork_id = str(uuid.uuid4())
        name = name or fork_id
        if any(s.name == name for s in self.sandboxes.values()):
            raise api_error(request, 409, "Sandbox with this name already exists")
        assert self._base_dir is not None
        fork = SandboxRecord(
            id=fork_id,
            name=name,
            root=self._base_dir / fork_id,
            snapshot=src.snapshot,
            spec=src.spec,
            env=dict(src.env),
            labels=dict(src.labels),
            target=src.target,
            user=src.user,
            public=src.public,
            network_block_all=src.network_block_all,
            network_allow_list=src.network_allow_list,
            domain_allow_list=src.domain_allow_list,
            secrets=dict(src.secrets),
            secret_env=dict(src.secret_env),
            secrets_live=bool(src.secrets),
            state="creating",
            auto_stop_interval=src.auto_stop_interval,
            auto_archive_interval=src.auto_archive_interval,
            auto_delete_interval=src.auto_delete_interval,
            parent_id=src.id,
        )
        self._set_state(src, "forking")
        self.sandboxes[fork_id] = fork
        fork.last_activity = asyncio.get_running_loop().time()
        try:
            await asyncio.to_thread(_clone_root, src.root, fork.root)
            fork.egress = await EgressProxy(
                fork_id, lambda: self._egress_policy(fork), hosts=self.hosts, record=self.egress_log.append
            ).start()
        except Exception:
            log.exception("fork of %s failed", src.id)
            self.sandboxes.pop(fork_id, None)
            shutil.rmtree(fork.root, ignore_errors=True)
            if src.state == "forking":
                self._set_state(src, "started")
            raise api_error(request, 500, "An unexpected error occurred.") from None
        self._emit("sandbox.created", self._dto(fork))
        self._later(src, "forking", lambda: self._set_state(src, "started"))
        self._later(fork, "creating", lambda: self._set_state(fork, "started", desired="started"))
        return web.json_response(self._dto(fork))

    # ----------------------------------------------------------------- snapshots (§16) and regions

    @staticmethod
    def _snapshot_id(name: str, spec: SnapshotSpec) -> str:
        return spec.id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"daytona-double/snapshot/{name}"))

    def _snapshot_name(self, id_or_name: str) -> str | None:
        if id_or_name in self.snapshots:
            return id_or_name
        return next((n for n, s in self.snapshots.items() if self._snapshot_id(n, s) == id_or_name), None)

    def _snapshot_dto(self, name: str, spec: SnapshotSpec) -> dict[str, Any]:
        """SnapshotDto with every required field (`daytona_api_client_async/models/snapshot_dto.py`)."""
        snapshot_id = self._snapshot_id(name, spec)
        build = self._builds.get(snapshot_id)
        if build is None:
            created = "2026-01-01T00:00:00.000Z"
            return {
                "id": snapshot_id,
                "organizationId": None if spec.general else self.organization_id,
                "general": spec.general,
                "name": name,
                "imageName": f"daytonaio/{name}:double",
                "state": spec.state,
                "size": 1,
                "entrypoint": ["sleep", "infinity"],
                "cpu": 1,
                "gpu": 0,
                "mem": 1,
                "disk": 3,
                "errorReason": spec.error_reason,
                "createdAt": created,
                "updatedAt": created,
                "lastUsedAt": None,
                "sourceSandboxId": None,
                "regionIds": [self.target],
            }
        dto: dict[str, Any] = {
            "id": snapshot_id,
            "organizationId": self.organization_id,
            "general": False,
            "name": name,
            "state": spec.state,
            "size": build.size,
            "entrypoint": build.entrypoint,
            "cpu": build.cpu,
            "gpu": build.gpu,
            "mem": build.mem,
            "disk": build.disk,
            "errorReason": spec.error_reason,
            "createdAt": _iso(build.created_at),
            "updatedAt": _iso(build.updated_at),
            "lastUsedAt": None,
            "sourceSandboxId": None,
            "regionIds": [build.region],
            "sandboxClass": "container",
        }
        if spec.image_name:
            dto["imageName"] = spec.image_name
        if build.runner:
            dto["initialRunnerId"] = build.runner
        if build.build_info is not None:
            dto["buildInfo"] = {
                **build.build_info,
                "createdAt": _iso(build.created_at),
                "updatedAt": _iso(build.created_at),
                "snapshotRef": build.snapshot_ref,
            }
            dto["ref"] = f"registry.daytona.double/daytona/{build.snapshot_ref}"
        return dto

    def _reported(self, name: str, spec: SnapshotSpec) -> dict[str, Any]:
        """The DTO the API answers; a build reported `building` may now end (see build_seconds)."""
        build = self._builds.get(self._snapshot_id(name, spec))
        if build is not None and spec.state == "building":
            build.seen_building.set()
        return self._snapshot_dto(name, spec)

    async def _snapshot_get(self, request: web.Request) -> web.Response:
        """`GET /snapshots/{idOrName}`: the organization's own snapshots only (see SnapshotSpec)."""
        wanted = request.match_info["id"]
        for name, spec in self.snapshots.items():
            if not spec.general and wanted in (name, self._snapshot_id(name, spec)):
                return web.json_response(self._reported(name, spec))
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
        items = [self._reported(name, spec) for name, spec in ordered]
        return web.json_response({"items": items[(page - 1) * limit : page * limit], "total": len(items),
                                  "page": page, "totalPages": math.ceil(len(items) / limit)})

    async def _snapshot_create(self, request: web.Request) -> web.Response:
        """`POST /snapshots` (`snapshot.create`, ../shared/reference/daytona.md §16.2; server v0.190
        `snapshot.controller.ts` and `createFromBuildInfo` / `createFromPull`): 200 SnapshotDto in
        `pending`; then a runner takes it (start_delay) and it is `building` (a Dockerfile: log lines over
        build_seconds, BuildKit style) or `pulling` (an image name), then `active`, or `error` /
        `build_failed` as `fail_builds` says. The double runs no Dockerfile: a built snapshot gets
        `built_snapshot_path` and the Dockerfile's `ENV`s."""
        body = await _json_body(request, toolbox=False)
        name = body.get("name")
        if not isinstance(name, str) or not name:
            raise validation_error(request, "name must be a string")
        build_info = body.get("buildInfo")
        image_name = body.get("imageName")
        if build_info is not None:
            if not isinstance(build_info, dict) or not isinstance(build_info.get("dockerfileContent"), str):
                raise validation_error(request, "buildInfo.dockerfileContent must be a string")
            if image_name:
                raise api_error(request, 400, "Cannot specify an image name when using a build info entry")
            if body.get("entrypoint"):
                raise api_error(request, 400, "Cannot specify an entrypoint when using a build info entry")
        elif not image_name:
            raise api_error(request, 400, "Must specify an image name when not using a build info entry")
        for key in ("cpu", "gpu", "memory", "disk"):
            if body.get(key) is not None and (not isinstance(body[key], int) or isinstance(body[key], bool)):
                raise validation_error(request, f"{key} must be an integer number")
        region = str(body.get("regionId") or "").strip() or self.target
        if region != self.target:
            raise api_error(request, 404, "Region not found")
        if not IMAGE_NAME.fullmatch(name):
            raise api_error(
                request, 400, "Invalid snapshot name format. May contain letters, digits, dots, colons, and dashes"
            )
        if image_name and (problem := _image_name_problem(str(image_name))):
            raise api_error(request, 400, problem)
        if name in self.snapshots:
            raise api_error(request, 409, f'Snapshot with name "{name}" already exists for this organization')
        dockerfile = build_info["dockerfileContent"] if build_info is not None else None
        spec = SnapshotSpec(
            path=list(self.built_snapshot_path),
            env=_dockerfile_env(dockerfile) if dockerfile else {},
            id=str(uuid.uuid4()),
            state="pending",
            dockerfile=dockerfile,
            image_name=str(image_name) if image_name else None,
        )
        build = SnapshotBuild(
            name=name,
            build_info=None if build_info is None else {
                "dockerfileContent": dockerfile, "contextHashes": list(build_info.get("contextHashes") or [])
            },
            region=region,
            cpu=int(body.get("cpu") or 1),
            gpu=int(body.get("gpu") or 0),
            mem=int(body.get("memory") or 1),
            disk=int(body.get("disk") or 3),
            entrypoint=_dockerfile_entrypoint(dockerfile) if dockerfile else body.get("entrypoint"),
        )  # fmt: skip
        assert spec.id is not None
        self.snapshots[name] = spec
        self._builds[spec.id] = build
        failure = self._take_build_failure() if build_info is not None else None
        build.task = self._spawn(self._run_build(spec, build, failure))
        return web.json_response(self._snapshot_dto(name, spec))

    def _take_build_failure(self) -> BuildFailure | None:
        if not self._build_failures:
            return None
        failure = self._build_failures[0]
        failure.count -= 1
        if failure.count <= 0:
            self._build_failures.pop(0)
        return failure

    def _snapshot_state(self, spec: SnapshotSpec, build: SnapshotBuild, state: str, reason: str | None = None) -> None:
        spec.state = state
        spec.error_reason = reason
        build.updated_at = _now()

    async def _run_build(self, spec: SnapshotSpec, build: SnapshotBuild, failure: BuildFailure | None) -> None:
        await asyncio.sleep(self.start_delay)  # until a runner takes it (`handleSnapshotStatePending`)
        build.runner = "double-runner"
        if build.build_info is None:
            self._snapshot_state(spec, build, "pulling")
            await asyncio.sleep(self.build_seconds)
            build.size = 1.0
            self._snapshot_state(spec, build, "active")
            return
        self._snapshot_state(spec, build, "building")
        if failure is not None and failure.state == "build_failed":
            self._snapshot_state(spec, build, "build_failed", failure.reason or "Request failed with status code 500")
            build.log.finish()
            return
        assert spec.dockerfile is not None
        lines, error = _buildkit_log(spec.dockerfile, failure)
        pause = self.build_seconds / max(len(lines), 1)
        for line in lines:
            build.log.append(line)
            await asyncio.sleep(pause)
        # Not over before the API has shown it running once (see `build_seconds`).
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(build.seen_building.wait(), 2.0)
        if error is not None:
            self._snapshot_state(spec, build, "error", error)
        else:
            build.size = 1.0
            self._snapshot_state(spec, build, "active")
        build.log.finish()

    async def _snapshot_delete(self, request: web.Request) -> web.Response:
        """`DELETE /snapshots/{id}` (`snapshot.delete`): an id only (ParseUUIDPipe), 200 without
        a body; the snapshot is `removing`, then gone after start_delay. Sandboxes made from it
        keep running; new ones are refused ("Snapshot X is removing")."""
        wanted = request.match_info["id"]
        try:
            uuid.UUID(wanted)
        except ValueError:
            raise api_error(request, 400, "Validation failed (uuid is expected)") from None
        name = next((n for n, s in self.snapshots.items() if self._snapshot_id(n, s) == wanted), None)
        if name is None or self.snapshots[name].general:
            raise api_error(request, 404, f"Snapshot {wanted} not found")
        spec = self.snapshots[name]
        build = self._builds.get(wanted)
        if build is not None:
            if build.task is not None:
                build.task.cancel()
            build.log.finish()
        spec.state = "removing"

        async def remove() -> None:
            await asyncio.sleep(self.start_delay)
            if self.snapshots.get(name) is spec:
                del self.snapshots[name]
            self._builds.pop(wanted, None)

        self._spawn(remove())
        return web.Response(status=200)

    async def _snapshot_logs_url(self, request: web.Request) -> web.Response:
        """`GET /snapshots/{id}/build-logs-url` → `{"url"}` on the proxy, once a runner has the
        build (the server waits up to 30 s for one)."""
        wanted = request.match_info["id"]
        build = self._builds.get(wanted)
        if build is None:
            if self._snapshot_name(wanted) is None:
                raise api_error(request, 404, f"Snapshot {wanted} not found")
            raise api_error(request, 404, f"Snapshot {wanted} has no build info")
        if build.build_info is None:
            raise api_error(request, 404, f"Snapshot {wanted} has no build info")
        deadline = time.monotonic() + 30
        while build.runner is None:
            if time.monotonic() > deadline:
                raise api_error(request, 404, f"Timeout waiting for build runner assignment for snapshot {wanted}")
            await asyncio.sleep(0.05)
        return web.json_response({"url": f"http://127.0.0.1:{self.port}/snapshots/{wanted}/build-logs"})

    async def _snapshot_logs(self, request: web.Request) -> web.StreamResponse:
        """`GET <proxy>/snapshots/{id}/build-logs[?follow=true]` (the runner's `GetBuildLogs`):
        `application/octet-stream`, the log so far, then (follow) each line as it is written,
        ending when the build does."""
        build = self._builds.get(request.match_info["id"])
        if build is None:
            raise proxy_error(request, 404, f"Snapshot {request.match_info['id']} not found")
        if build.runner is None:
            raise proxy_error(request, 400, "snapshot has no initial runner")
        follow = request.query.get("follow") == "true"
        response = web.StreamResponse(headers={"Content-Type": "application/octet-stream"})
        await response.prepare(request)
        offset = 0
        try:
            while True:
                changed = build.log.changed()
                if offset < len(build.log.data):
                    chunk = bytes(build.log.data[offset:])
                    offset += len(chunk)
                    await response.write(chunk)
                    continue
                if build.log.done or not follow:
                    break
                await changed.wait()
            await response.write_eof()
        except ConnectionError:
            pass
        return response

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
        return self._running_sandbox(request, self.sandboxes.get(request.match_info["sandbox_id"]))

    def _running_sandbox(self, request: web.Request, sb: SandboxRecord | None) -> SandboxRecord:
        """What the runner's proxy answers for a sandbox's container (toolbox and previews): 404
        when gone, 400 without an IP (not running). The proxy does not look at the state, so a
        source keeps answering while it is `forking`."""
        if sb is None or sb.state in ("destroying", "destroyed", "archived"):
            raise proxy_error(request, 404, "sandbox container not found")
        if sb.state not in ("started", "forking"):
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

    # ----------------------------------------------------------------- toolbox: git (§18)
    #
    # Each call runs the real `git` (the daemon shells out to it for clone/push/pull) as a
    # process of the sandbox: its directory tree, its environment (egress proxy variables, so
    # the network policy applies), tracked in `procs` so a stop kills it. Failures become the
    # daemon's error bodies, classified from git's output like the daemon's `cli_errors.go`.

    #: Seconds one git run may take before it is killed: 502 GIT_TRANSPORT_FAILED for a
    #: remote operation, 500 otherwise (the reference gives no daemon limit; the double bounds
    #: every run so that a hanging remote cannot hang a test). Settable per instance.
    git_timeout: float = 120.0

    async def _git_request(self, request: web.Request, *required: str) -> tuple[SandboxRecord, dict[str, Any]]:
        """The sandbox (proxy checks first, as for every toolbox call) and a validated body:
        known fields of the wrong JSON type, missing/empty required ones, and ref-like values
        that git would read as an option are a 400 (gin's binding would refuse the first two)."""
        sb = self._toolbox_sandbox(request)
        body = await _json_body(request, toolbox=True)
        for key, value in body.items():
            expected = GIT_FIELDS.get(key)
            if expected is None or value is None:
                continue
            wrong = not isinstance(value, expected) or (expected is int and isinstance(value, bool))
            if expected is list:
                wrong = wrong or not all(isinstance(item, str) for item in value)
            if wrong:
                raise daemon_error(request, 400, f"invalid request body: {key} has the wrong type", "BAD_REQUEST")
        for key in required:
            if body.get(key) in (None, ""):
                raise daemon_error(request, 400, f"invalid request body: {key} is required", "BAD_REQUEST")
        for key in GIT_REF_FIELDS:
            if isinstance(body.get(key), str) and body[key].startswith("-"):
                raise daemon_error(request, 400, f"invalid {key}: {body[key]}", "BAD_REQUEST")
        return sb, body

    def _git_query(self, request: web.Request) -> tuple[SandboxRecord, Path]:
        """Sandbox and repository of a GET (`?path=`)."""
        sb = self._toolbox_sandbox(request)
        raw = request.query.get("path", "")
        if not raw:
            raise daemon_error(request, 400, "path is required", "BAD_REQUEST")
        return sb, self._git_repo(request, sb, raw)

    @staticmethod
    def _git_repo(request: web.Request, sb: SandboxRecord, raw: str) -> Path:
        """The repository at `raw`, which must be its top level: the daemon opens the path as a
        repository (go-git `PlainOpen`, no search upwards), so a plain directory or a
        subdirectory of a repository is "repository does not exist"."""
        repo = sb.resolve(raw)
        if not (repo / ".git").exists():
            raise daemon_error(request, 400, f"repository does not exist: {raw}", "BAD_REQUEST")
        return repo

    def _git_askpass(self) -> Path:
        """The daemon's GIT_ASKPASS helper, outside every sandbox's tree; it holds no secret."""
        assert self._base_dir is not None
        script = self._base_dir / "git-askpass.sh"
        if not script.exists():
            script.write_text(GIT_ASKPASS_SCRIPT)
            script.chmod(0o700)
        return script

    async def _git(
        self,
        request: web.Request,
        sb: SandboxRecord,
        args: list[str],
        *,
        cwd: Path,
        op: str,
        rules: tuple[GitRule, ...] = (),
        auth: tuple[str, str] | None = None,
        env: dict[str, str] | None = None,
        check: bool = True,
    ) -> str:
        """Run ``git <args>`` as the daemon does and return its stdout; with `check`, a failure
        raises the daemon's error. Credentials reach git only through its own environment and
        the askpass helper (never the URL, argv, `.git/config` or a file), for this run only."""
        run_env = sb.base_env()
        for key in GIT_MANAGED_ENV:
            run_env.pop(key, None)
        # The test machine's /etc/gitconfig is not the sandbox image's (it may name credential
        # helpers or proxies of its own); the sandbox's ~/.gitconfig still applies, as in production.
        run_env.update({"GIT_TERMINAL_PROMPT": "0", "GIT_CONFIG_NOSYSTEM": "1", **(env or {})})
        if auth is not None:
            run_env.update({"GIT_ASKPASS": str(self._git_askpass()), "GIT_USERNAME": auth[0], "GIT_PASSWORD": auth[1]})
        remote = GIT_TRANSPORT in rules
        egress_mark = len(self.egress_log)
        proc = await self._spawn_process(sb, ["git", *args], cwd=cwd, env=run_env, stdin=asyncio.subprocess.DEVNULL)
        try:
            out, err = await asyncio.wait_for(proc.communicate(), timeout=self.git_timeout)
        except asyncio.TimeoutError:
            status, code = (502, GIT_TRANSPORT.code) if remote else (500, "INTERNAL_SERVER_ERROR")
            raise daemon_error(request, status, f"{op} timed out after {self.git_timeout:g}s", code) from None
        finally:
            if proc.returncode is None:  # timed out, or the request was cancelled
                _kill_group(proc.pid)
                await proc.wait()
            sb.procs.discard(proc)
        if check and proc.returncode != 0:
            output = _redact((out + err).decode("utf-8", "replace"), auth)[-GIT_OUTPUT_TAIL:]
            blocked = remote and any(
                entry.sandbox_id == sb.id and entry.outcome in ("blocked", "refused", "upstream-error")
                for entry in self.egress_log[egress_mark:]
            )
            # Production fails to resolve or connect where the double's egress refuses.
            rule = GIT_TRANSPORT if blocked else next((r for r in rules if r.pattern.search(output)), None)
            status, code = (rule.status, rule.code) if rule else (400, "BAD_REQUEST")
            raise daemon_error(request, status, f"{op} exited with status {proc.returncode}: {output.strip()}", code)
        return out.decode("utf-8", "replace")

    async def _git_current_branch(self, request: web.Request, sb: SandboxRecord, repo: Path) -> str:
        """The checked-out branch ("" when HEAD is detached), born or not."""
        args = ["symbolic-ref", "--quiet", "--short", "HEAD"]
        return (await self._git(request, sb, args, cwd=repo, op="git symbolic-ref", check=False)).strip()

    async def _git_clone(self, request: web.Request) -> web.Response:
        """`--single-branch` (the branch asked for, else the remote's default), `depth` when
        positive, then a detached checkout of `commit_id`. Into an existing non-empty
        directory git refuses: 400."""
        sb, body = await self._git_request(request, "url", "path")
        depth = body.get("depth")
        if depth is not None and depth < 0:
            raise daemon_error(request, 400, "invalid request body: depth must not be negative", "BAD_REQUEST")
        dest = sb.resolve(body["path"])
        args = [*(["-c", "http.sslVerify=false"] if body.get("insecure_skip_tls") else []), "clone", "--single-branch"]
        if body.get("branch"):
            args += ["--branch", body["branch"]]
        if depth:
            args += ["--depth", str(depth)]
        args += ["--", body["url"], str(dest)]
        await self._git(request, sb, args, cwd=sb.home, op="git clone", rules=GIT_CLONE, auth=_git_auth(body))
        if body.get("commit_id"):
            args = ["checkout", "--quiet", "--detach", body["commit_id"], "--"]
            await self._git(request, sb, args, cwd=dest, op="git checkout", rules=GIT_CHECKOUT)
        return web.Response(status=200)

    async def _git_status(self, request: web.Request) -> web.Response:
        sb, repo = self._git_query(request)
        args = ["--no-optional-locks", "status", "--porcelain=v2", "--branch", "-z", "--untracked-files=all"]
        return web.json_response(_git_status_dto(await self._git(request, sb, args, cwd=repo, op="git status")))

    async def _git_add(self, request: web.Request) -> web.Response:
        sb, body = await self._git_request(request, "path")
        if not isinstance(body.get("files"), list):
            raise daemon_error(request, 400, "invalid request body: files is required", "BAD_REQUEST")
        repo = self._git_repo(request, sb, body["path"])
        await self._git(request, sb, ["add", "--", *body["files"]], cwd=repo, op="git add")
        return web.Response(status=200)

    async def _git_commit(self, request: web.Request) -> web.Response:
        """`author`/`email` are both author and committer. Nothing to commit without
        `allow_empty` fails as git does (exit 1, "nothing to commit…"): 400 with its message."""
        sb, body = await self._git_request(request, "path", "message", "author", "email")
        repo = self._git_repo(request, sb, body["path"])
        identity = {
            "GIT_AUTHOR_NAME": body["author"], "GIT_AUTHOR_EMAIL": body["email"],
            "GIT_COMMITTER_NAME": body["author"], "GIT_COMMITTER_EMAIL": body["email"],
        }  # fmt: skip
        args = ["commit", "--quiet", "-m", body["message"], *(["--allow-empty"] if body.get("allow_empty") else [])]
        await self._git(request, sb, args, cwd=repo, op="git commit", env=identity)
        sha = await self._git(request, sb, ["rev-parse", "HEAD"], cwd=repo, op="git rev-parse")
        return web.json_response({"hash": sha.strip()})

    async def _git_push(self, request: web.Request) -> web.Response:
        """`branch` (default: the current one) to the same name on `remote` (default origin);
        `set_upstream` records it as the upstream. Already up to date is a success."""
        sb, body = await self._git_request(request, "path")
        repo = self._git_repo(request, sb, body["path"])
        branch = body.get("branch") or await self._git_current_branch(request, sb, repo)
        if not branch:
            raise daemon_error(request, 404, "git push: you are not currently on a branch", "GIT_BRANCH_NOT_FOUND")
        ref = f"refs/heads/{branch}"
        args = ["push", *(["--set-upstream"] if body.get("set_upstream") else []), body.get("remote") or "origin"]
        await self._git(request, sb, [*args, f"{ref}:{ref}"], cwd=repo, op="git push", rules=GIT_PUSH,
                        auth=_git_auth(body))  # fmt: skip
        return web.Response(status=200)

    async def _git_pull(self, request: web.Request) -> web.Response:
        """Fast-forward only, like the daemon's go-git pull: a pull that would need a merge
        fails (409 GIT_MERGE_CONFLICT) instead of creating a merge commit."""
        sb, body = await self._git_request(request, "path")
        repo = self._git_repo(request, sb, body["path"])
        args = ["pull", "--ff-only", "--no-rebase"]
        if body.get("branch"):
            args += [body.get("remote") or "origin", body["branch"]]
        elif body.get("remote"):
            args.append(body["remote"])
        await self._git(request, sb, args, cwd=repo, op="git pull", rules=GIT_PULL, auth=_git_auth(body))
        return web.Response(status=200)

    async def _git_branches(self, request: web.Request) -> web.Response:
        """Local branches, and `current` ("" when detached; the unborn branch of a fresh repo)."""
        sb, repo = self._git_query(request)
        args = ["for-each-ref", "--format=%(refname)", "refs/heads"]
        out = await self._git(request, sb, args, cwd=repo, op="git for-each-ref")
        branches = [line.removeprefix("refs/heads/") for line in out.splitlines() if line]
        return web.json_response({"branches": branches, "current": await self._git_current_branch(request, sb, repo)})

    async def _git_create_branch(self, request: web.Request) -> web.Response:
        """Create the branch at HEAD **and check it out** (the daemon's CreateBranch is a go-git
        checkout with Create: true); local changes are carried over. 201."""
        sb, body = await self._git_request(request, "path", "name")
        repo = self._git_repo(request, sb, body["path"])
        args = ["checkout", "--quiet", "-b", body["name"]]
        await self._git(request, sb, args, cwd=repo, op="git checkout", rules=GIT_CREATE_BRANCH)
        return web.Response(status=201)

    async def _git_checkout(self, request: web.Request) -> web.Response:
        """A branch or commit (`--` so a file of that name is never restored instead); local
        changes that the switch would overwrite: 409 GIT_DIRTY_WORKTREE."""
        sb, body = await self._git_request(request, "path", "branch")
        repo = self._git_repo(request, sb, body["path"])
        args = ["checkout", "--quiet", body["branch"], "--"]
        await self._git(request, sb, args, cwd=repo, op="git checkout", rules=GIT_CHECKOUT)
        return web.Response(status=200)

    async def _git_delete_branch(self, request: web.Request) -> web.Response:
        """Unconditional, merged or not (as the daemon's DeleteBranch); git refuses to delete
        the checked-out branch: 400. 204."""
        sb, body = await self._git_request(request, "path", "name")
        repo = self._git_repo(request, sb, body["path"])
        await self._git(request, sb, ["branch", "-D", body["name"]], cwd=repo, op="git branch",
                        rules=GIT_DELETE_BRANCH)  # fmt: skip
        return web.Response(status=204)


# --------------------------------------------------------------------------- git toolbox (§18)

#: The daemon's GIT_ASKPASS helper (server `apps/daemon/pkg/git/cli.go`): it answers git's
#: prompts from the git process's own environment, so credentials stay in memory.
GIT_ASKPASS_SCRIPT = """#!/bin/sh
case "$1" in
  Username*) printf '%s' "$GIT_USERNAME" ;;
  Password*) printf '%s' "$GIT_PASSWORD" ;;
esac
"""
#: Variables the daemon sets itself for each git run; values inherited from the sandbox's
#: env would otherwise leak credentials in or out of a call.
GIT_MANAGED_ENV = ("GIT_ASKPASS", "SSH_ASKPASS", "GIT_TERMINAL_PROMPT", "GIT_USERNAME", "GIT_PASSWORD")
#: Characters of git's output kept in an error message (the daemon keeps a bounded tail).
GIT_OUTPUT_TAIL = 4000
#: Body fields of the git requests and their JSON types (snake_case, no aliases, §18).
GIT_FIELDS: dict[str, type] = {
    "url": str, "path": str, "branch": str, "commit_id": str, "username": str, "password": str,
    "insecure_skip_tls": bool, "depth": int, "files": list, "message": str, "author": str,
    "email": str, "allow_empty": bool, "remote": str, "set_upstream": bool, "name": str,
}  # fmt: skip
#: Fields git would take for an option if they began with "-".
GIT_REF_FIELDS = ("branch", "name", "remote", "commit_id")


@dataclass(frozen=True)
class GitRule:
    """One failure class: git output matching `pattern` (case-insensitive) → status + code.
    The codes are the ones SDK 0.226 maps to ``DaytonaGit*Error`` with ``source:
    DAYTONA_DAEMON``; the patterns follow the daemon's `classifyCLIError`."""

    status: int
    code: str
    pattern: re.Pattern[str]


def _git_rule(status: int, code: str, *alternatives: str) -> GitRule:
    return GitRule(status, code, re.compile("|".join(alternatives), re.I))


GIT_TRANSPORT = _git_rule(
    502, "GIT_TRANSPORT_FAILED", r"could not resolve (host|proxy)", r"failed to connect to",
    r"couldn't connect to server", r"connection (refused|timed out)", r"operation timed out",
    r"ssl certificate problem", r"empty reply from server", r"returned error: 50[234]",
)  # fmt: skip
GIT_AUTH = _git_rule(
    401, "GIT_AUTH_FAILED", r"authentication failed", r"invalid username or password",
    r"could not read (username|password)", r"terminal prompts disabled", r"returned error: 401",
)  # fmt: skip
#: A refusal by the remote once authenticated: HTTP 403 (no write access), a hook, a rule.
GIT_REMOTE_REJECTED = _git_rule(422, "GIT_REMOTE_REJECTED", r"returned error: 403", r"\[remote rejected\]")
GIT_REPO_NOT_FOUND = _git_rule(
    404, "GIT_REPO_NOT_FOUND", r"repository not found", r"repository '[^']*' not found",
    r"returned error: 404", r"does not appear to be a git repository",
)  # fmt: skip
GIT_DIRTY = _git_rule(
    409, "GIT_DIRTY_WORKTREE", r"would be overwritten by", r"please commit your changes or stash them"
)
#: Rules per operation, most specific first; anything else is a 400 BAD_REQUEST.
GIT_REMOTE = (GIT_TRANSPORT, GIT_AUTH, GIT_REMOTE_REJECTED, GIT_REPO_NOT_FOUND)
GIT_CLONE = (
    *GIT_REMOTE,
    _git_rule(404, "GIT_BRANCH_NOT_FOUND", r"not found in upstream", r"could not find remote branch"),
)
GIT_PUSH = (
    *GIT_REMOTE,
    _git_rule(404, "GIT_BRANCH_NOT_FOUND", r"src refspec .* does not match any"),
    _git_rule(409, "GIT_PUSH_REJECTED", r"\[rejected\]", r"non-fast-forward", r"fetch first", r"stale info"),
)
GIT_PULL = (
    *GIT_REMOTE,
    _git_rule(404, "GIT_BRANCH_NOT_FOUND", r"couldn't find remote ref"),
    GIT_DIRTY,
    _git_rule(409, "GIT_MERGE_CONFLICT", r"not possible to fast-forward", r"automatic merge failed", r"conflict \("),
)
GIT_CHECKOUT = (
    _git_rule(404, "GIT_BRANCH_NOT_FOUND", r"invalid reference", r"did not match any", r"reference is not a tree"),
    GIT_DIRTY,
)
GIT_CREATE_BRANCH = (_git_rule(409, "GIT_BRANCH_EXISTS", r"a branch named '[^']*' already exists"),)
GIT_DELETE_BRANCH = (_git_rule(404, "GIT_BRANCH_NOT_FOUND", r"branch '[^']*' not found"),)
#: `git status --porcelain=v2` XY letters → the daemon's file status names (§18).
GIT_FILE_STATUS = {
    ".": "Unmodified", "M": "Modified", "T": "Modified", "A": "Added", "D": "Deleted",
    "R": "Renamed", "C": "Copied", "U": "Updated but unmerged", "?": "Untracked",
}  # fmt: skip


def _git_auth(body: dict[str, Any]) -> tuple[str, str] | None:
    """Basic credentials of a call: used only when both are given, as the daemon does."""
    username, password = body.get("username"), body.get("password")
    return (username, password) if isinstance(username, str) and isinstance(password, str) else None


def _redact(text: str, auth: tuple[str, str] | None) -> str:
    """Credentials out of git's output before it becomes an error message (as the daemon)."""
    for secret in auth or ():
        if secret:
            text = text.replace(secret, "***")
    return text


def _git_status_dto(raw: str) -> dict[str, Any]:
    """The GitStatus DTO from ``git status --porcelain=v2 --branch -z``: untracked files are
    Untracked in both columns, a rename's `extra` is its old name, `upstream` is "" and
    ahead/behind 0 without an upstream, a detached HEAD reports currentBranch "HEAD"."""
    fields = raw.split("\0")
    head, upstream, ahead, behind, files = "", "", 0, 0, []
    index = 0
    while index < len(fields):
        entry = fields[index]
        index += 1
        if entry.startswith("# branch.head "):
            head = entry.removeprefix("# branch.head ")
        elif entry.startswith("# branch.upstream "):
            upstream = entry.removeprefix("# branch.upstream ")
        elif entry.startswith("# branch.ab "):
            plus, minus = entry.removeprefix("# branch.ab ").split()
            ahead, behind = int(plus), -int(minus)
        elif entry[:2] in ("1 ", "2 ", "u ", "? "):
            kind = entry[0]
            extra = ""
            if kind == "?":
                xy, name = "??", entry[2:]
            else:
                parts = entry.split(" ", {"1": 8, "2": 9, "u": 10}[kind])
                xy, name = parts[1], parts[-1]
                if kind == "2":
                    extra = fields[index]  # the original path follows as its own field
                    index += 1
                elif kind == "u":
                    xy = "UU"
            files.append({
                "name": name, "staging": GIT_FILE_STATUS[xy[0]], "worktree": GIT_FILE_STATUS[xy[1]], "extra": extra,
            })  # fmt: skip
    detached = head == "(detached)"
    return {
        "currentBranch": "HEAD" if detached else head,
        "fileStatus": files,
        "ahead": ahead,
        "behind": behind,
        "branchPublished": bool(upstream),
        "upstream": upstream,
        "detached": detached,
    }


# --------------------------------------------------------------------------- module helpers


def _split_list(value: str | None) -> list[str] | None:
    """A comma-separated allow list → its non-empty, trimmed entries (None if unset)."""
    if value is None:
        return None
    return [entry.strip() for entry in value.split(",") if entry.strip()]


def _as_int(raw: str) -> int | None:
    """An integer path/query parameter, or None (the server's checks then answer 400)."""
    return int(raw) if re.fullmatch(r"-?\d+", raw.strip()) else None


def _image_name_problem(name: str) -> str | None:
    """`validateImageName` of the server (snapshots from a registry image)."""
    if "@sha256:" in name:
        image, _, digest = name.partition("@sha256:")
        if not image or not re.fullmatch(r"[a-f0-9]{64}", digest):
            return "Invalid digest format. Must be image@sha256:64_hex_characters"
        return None
    if ":" not in name or name.endswith(":") or re.search(r":\s*$", name):
        return "Image name must include a tag (e.g., ubuntu:22.04) or digest (@sha256:...)"
    if name.endswith(":latest"):
        return 'Images with tag ":latest" are not allowed'
    if not IMAGE_NAME.fullmatch(name):
        return ("Invalid image name format. Must be lowercase, may contain digits, dots, dashes, "
                "and single slashes between components")
    return None


def _dockerfile_instructions(dockerfile: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of each Dockerfile instruction, continuation lines joined."""
    result: list[tuple[str, str]] = []
    pending = ""
    for raw in dockerfile.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        keyword, _, args = (pending + line).partition(" ")
        pending = ""
        result.append((keyword.upper(), args.strip()))
    if pending:
        keyword, _, args = pending.partition(" ")
        result.append((keyword.upper(), args.strip()))
    return result


def _dockerfile_env(dockerfile: str) -> dict[str, str]:
    """The image env the Dockerfile's `ENV k=v …` (or legacy `ENV k v`) lines set."""
    env: dict[str, str] = {}
    for keyword, args in _dockerfile_instructions(dockerfile):
        if keyword != "ENV":
            continue
        try:
            words = shlex.split(args)
        except ValueError:
            continue
        if words and "=" not in words[0]:
            env[words[0]] = " ".join(words[1:])
            continue
        for word in words:
            key, sep, value = word.partition("=")
            if sep:
                env[key] = value
    return env


def _dockerfile_entrypoint(dockerfile: str) -> list[str] | None:
    """The last `ENTRYPOINT` (exec or shell form), as the server reads it at create."""
    entrypoint = None
    for keyword, args in _dockerfile_instructions(dockerfile):
        if keyword == "ENTRYPOINT":
            try:
                parsed = json.loads(args)
            except json.JSONDecodeError:
                parsed = None
            entrypoint = [str(a) for a in parsed] if isinstance(parsed, list) else ["/bin/sh", "-c", args]
    return entrypoint


def _full_image(image: str) -> str:
    """Docker's normalized reference, as BuildKit prints it (python:3.12 → docker.io/library/python:3.12)."""
    first = image.split("/")[0]
    if image == "scratch" or ("/" in image and ("." in first or ":" in first or first == "localhost")):
        return image
    return f"docker.io/{image}" if "/" in image else f"docker.io/library/{image}"


def _buildkit_log(dockerfile: str, failure: BuildFailure | None) -> tuple[list[str], str | None]:
    """The build log the runner writes with BuildKit (server v0.190 `image_build_session.go`:
    ``#n <vertex>`` when a vertex starts, the step's output, ``ERROR: <error>``), and the
    error of a failing step. The double runs no step, so steps print nothing unless
    `failure.output` says so."""
    instructions = _dockerfile_instructions(dockerfile)
    steps = [(keyword, args) for keyword, args in instructions if keyword in BUILD_STEPS]
    base = next((args.split()[0] for keyword, args in instructions if keyword == "FROM" and args), "scratch")
    failing = None
    if failure is not None and steps:
        runs = [i for i, (keyword, _) in enumerate(steps) if keyword == "RUN"]
        last = runs[-1] if runs else len(steps) - 1
        failing = last if failure.step is None else next(
            (i for i, (keyword, args) in enumerate(steps) if failure.step in f"{keyword} {args}"), last
        )
    lines = [
        "#1 [internal] load build definition from Dockerfile",
        f"#2 [internal] load metadata for {_full_image(base)}",
        "#3 [internal] load .dockerignore",
    ]
    number = 3
    for index, (keyword, args) in enumerate(steps):
        number += 1
        shown = f"FROM {_full_image(args.split()[0])}" if keyword == "FROM" and args else f"{keyword} {args}"
        lines.append(f"#{number} [{index + 1}/{len(steps)}] {shown}")
        if failure is not None and index == failing:
            lines.extend(failure.output)
            reason = failure.reason or f'process "/bin/sh -c {args}" did not complete successfully: exit code: 1'
            lines.append(f"ERROR: {reason}")
            return lines, reason
    lines.append(f"#{number + 1} exporting to image")
    return lines, None


def _claude_slug(path: str) -> str:
    """Claude Code's project directory name for a cwd: every non-alphanumeric char → "-"."""
    return re.sub(r"[^a-zA-Z0-9]", "-", path)


def _clone_root(src: Path, dst: Path) -> None:
    """A fork's files: the source's tree (not the daemon's session state; no FIFOs, sockets or
    devices), then every mention of the source's root — in file contents, symlink targets and
    names, also as Claude Code's project slug — rewritten to the fork's root. Both roots are
    ``<base>/<uuid>``, so the rewrite keeps every file's length (binaries stay intact).

    A real fork is a same-path copy-on-write clone, where none of this is needed: the rewrite
    is what makes the double's copy equivalent (a resumed Claude conversation, a virtualenv…)."""

    def ignore(directory: str, names: list[str]) -> set[str]:
        skipped = {"daemon"} if Path(directory) == src else set()
        for name in names:
            try:
                mode = os.lstat(os.path.join(directory, name)).st_mode
            except OSError:
                skipped.add(name)
                continue
            if not (stat.S_ISDIR(mode) or stat.S_ISREG(mode) or stat.S_ISLNK(mode)):
                skipped.add(name)
        return skipped

    try:
        shutil.copytree(src, dst, symlinks=True, ignore=ignore)
    except shutil.Error as exc:  # files that vanished or could not be read while copying
        log.warning("fork of %s: %d file(s) not copied: %s", src, len(exc.args[0]), exc.args[0][:3])
    _relocate(dst, str(src), str(dst))
    for sub in ("home/daytona", "tmp", "daemon"):
        (dst / sub).mkdir(parents=True, exist_ok=True)


def _relocate(root: Path, old: str, new: str) -> None:
    pairs = [(old.encode(), new.encode()), (_claude_slug(old).encode(), _claude_slug(new).encode())]
    old_slug, new_slug = _claude_slug(old), _claude_slug(new)
    for dirpath, dirnames, filenames in os.walk(root, topdown=False):
        for name in [*filenames, *dirnames]:
            path = os.path.join(dirpath, name)
            try:
                if os.path.islink(path):
                    target = os.readlink(path)
                    if old in target:
                        os.unlink(path)
                        os.symlink(target.replace(old, new), path)
                elif name in filenames:
                    _rewrite(path, pairs)
                if old_slug in name:
                    os.rename(path, os.path.join(dirpath, name.replace(old_slug, new_slug)))
            except OSError as exc:
                log.warning("fork: could not relocate %s: %s", path, exc)


def _rewrite(path: str, pairs: list[tuple[bytes, bytes]]) -> None:
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode) or info.st_size > 256 * 1024 * 1024:
        return
    with open(path, "rb") as fh:
        data = fh.read()
    if not any(old in data for old, _ in pairs):
        return
    for old, new in pairs:
        data = data.replace(old, new)
    mode = stat.S_IMODE(info.st_mode)
    if not mode & stat.S_IWUSR:
        os.chmod(path, mode | stat.S_IWUSR)
    with open(path, "r+b") as fh:
        fh.write(data)
        fh.truncate()
    os.chmod(path, mode)
    os.utime(path, ns=(info.st_atime_ns, info.st_mtime_ns))


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
    """A started double whose default snapshot "daytona-small" has `claude` on its PATH, as
    have the snapshots built through the API (`built_snapshot_path` defaults to it).

    NO_PROXY is set because the SDK's aiohttp session uses trust_env=True."""
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    double = DaytonaDouble(snapshots={"daytona-small": SnapshotSpec(path=[str(claude_bin_dir)], general=True)})
    await double.start()
    try:
        yield double
    finally:
        await double.stop()
