"""A loopback git hosting double: git smart HTTP, authenticated like GitHub.

Tests that clone, push or pull from a sandbox need a git remote they control. ``GitHost``
serves bare repositories under a temp dir over plain HTTP on 127.0.0.1 by running the real
``git http-backend`` CGI once per request, so the client side (the sandbox's real ``git``,
behind the Daytona double's egress proxy) speaks the exact protocol it speaks to GitHub:
v2 ``info/refs`` advertisement, ``git-upload-pack`` / ``git-receive-pack`` POSTs, gzip'd
request bodies (passed through untouched; http-backend inflates them itself).

Access control follows GitHub's answers for HTTPS git operations, because code under test
reacts to them (and the Daytona daemon maps them to ``DaytonaGit*Error`` classes):

* read of a **public** repo: anonymous is fine; credentials are never asked for, so git
  never sends them (git only answers a 401);
* read of a **private or missing** repo without credentials: **401** with
  ``WWW-Authenticate: Basic realm="GitHub"`` (GitHub does not reveal whether it exists);
* wrong credentials: **401** ("Invalid username or token…");
* valid credentials but a missing repo, or a private one the user may not see: **404**
  "Repository not found." (the same answer for both);
* push (``service=git-receive-pack`` advertisement and the POST): credentials are required
  even for a public repo (401 otherwise); a user without write access: **403**
  "Permission to team/app.git denied to <user>.".

Users authenticate with HTTP Basic ``username:token``. Every request lands in ``requests``
(method, path with query, the username presented — valid or not — or None), so a test can
assert which credentials reached the host. Helpers read the bare repos directly
(``branches``, ``log``, ``checkout``) or change them behind a clone's back (``commit``,
``decline_pushes``). They run git synchronously: they are quick, local and meant for test
setup and assertions.

Time: ``slow(name, seconds, service=…, count=…)`` makes the host wait before answering the
next `count` git-upload-pack (clone, fetch) or git-receive-pack (push) POSTs of a repo, as a
slow or overloaded host does; a request so held is in ``held`` from the moment it waits, so a
test can wait for "the clone is under way" instead of sleeping.

Sandboxes reach the host by name: ``url(name)`` is ``http://git.example.test:<port>/…``
(``hostname`` is configurable) and a test maps it with
``daytona_double.hosts[host.hostname] = host.ip``; a name that resolves nowhere else also
proves the traffic went through the sandbox's egress proxy. ``url(name, loopback=True)``
is for the test process itself.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import logging
import os
import re
import shutil
import signal
import subprocess
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import pytest_asyncio
from aiohttp import web

log = logging.getLogger(__name__)

GIT = shutil.which("git") or "/usr/bin/git"
#: Author and committer of every commit the host makes itself (fixed, so tests can tell them
#: apart from commits pushed from a sandbox).
OWNER_NAME, OWNER_EMAIL = "Repo Owner", "owner@example.com"
#: Fixed dates make the host's own commits reproducible.
OWNER_DATE = "2024-01-01T00:00:00+00:00"
READ_CHUNK = 65536
#: owner/repo as GitHub accepts them (no ".git" suffix: `url` adds it).
REPO_NAME = re.compile(r"^[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+$")
#: /owner/repo[.git]/rest — GitHub serves a repo with or without the ".git" suffix.
GIT_PATH = re.compile(r"^/(?P<owner>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+?)(?:\.git)?(?P<rest>/.*)$")
#: Request headers that never become CGI variables (credentials stay with the host).
NOT_CGI = frozenset({"authorization", "content-type", "content-length", "proxy-authorization"})


def _http_backend() -> Path:
    """`git-http-backend` lives in git's exec path (e.g. /usr/lib/git-core), not on PATH."""
    exec_path = subprocess.run([GIT, "--exec-path"], capture_output=True, text=True, check=True).stdout.strip()
    return Path(exec_path) / "git-http-backend"


class GitRequest(NamedTuple):
    """One request the host received: method, path with query string, username presented."""

    method: str
    path: str
    username: str | None


@dataclass
class GitUser:
    """A user of the host. `repos`: the repos it collaborates on (None = all of them)."""

    username: str
    token: str
    write: bool = True
    repos: frozenset[str] | None = None

    def collaborates(self, repo: HostedRepo) -> bool:
        return self.repos is None or repo.name in self.repos

    def can_see(self, repo: HostedRepo) -> bool:
        return not repo.private or self.collaborates(repo)

    def can_push(self, repo: HostedRepo) -> bool:
        return self.write and self.collaborates(repo)


@dataclass
class HostedRepo:
    name: str  # owner/repo
    path: Path  # the bare repository
    private: bool


class GitHost:
    """Git smart HTTP on 127.0.0.1 (aiohttp, port 0) in front of bare repos under `root`.

    Args:
        root: where the bare repos live (created if missing); ``<root>/<owner>/<repo>.git``.
        hostname: the name `url` uses; tests map it to `ip` in the Daytona double's `hosts`.
        realm: the Basic realm of 401 answers (GitHub's is "GitHub").
        request_timeout: seconds one http-backend run may take before it is killed.
    """

    ip = "127.0.0.1"

    def __init__(
        self,
        root: Path,
        *,
        hostname: str = "git.example.test",
        realm: str = "GitHub",
        request_timeout: float = 60.0,
    ) -> None:
        self.root = Path(root)
        self.hostname = hostname
        self.realm = realm
        self.request_timeout = request_timeout
        self.port = 0
        self.requests: list[GitRequest] = []
        self.users: dict[str, GitUser] = {}
        self.repos: dict[str, HostedRepo] = {}
        self._backend = _http_backend()
        self._runner: web.AppRunner | None = None
        self._procs: set[asyncio.subprocess.Process] = set()
        #: `slow` orders: (repo, service) → [seconds, uses left (None: every request)].
        self._slow: dict[tuple[str, str], list] = {}
        #: Requests `slow` held, in the order they started waiting (they stay listed afterwards).
        self.held: list[GitRequest] = []
        self._stopping: asyncio.Event | None = None

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> GitHost:
        self.root.mkdir(parents=True, exist_ok=True)
        self._stopping = asyncio.Event()
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # auto_decompress=False: git gzips large request bodies and says so in
        # Content-Encoding; http-backend inflates them itself, so they must arrive as sent.
        self._runner = web.AppRunner(app, handle_signals=False, access_log=None, auto_decompress=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.ip, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        """Kill every running http-backend (and its upload/receive-pack), end the waits of
        `slow` (503), close the server."""
        if self._stopping is not None:
            self._stopping.set()
        for proc in list(self._procs):
            _kill_group(proc)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> GitHost:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ----------------------------------------------------------------- setup helpers

    def url(self, name: str, *, loopback: bool = False) -> str:
        """Clone URL of `name`: by host name (for sandboxes) or by loopback IP (for the test)."""
        host = self.ip if loopback else self.hostname
        return f"http://{host}:{self.port}/{name}.git"

    def add_user(
        self, username: str, token: str, *, write: bool = True, repos: list[str] | None = None
    ) -> GitUser:
        """A user authenticating as ``username:token``, collaborator on `repos` (None = all):
        it sees those (private ones included) and, with `write`, may push to them; any other
        public repo is read-only for it (push: 403), any other private one "not found"."""
        user = GitUser(username, token, write, frozenset(repos) if repos is not None else None)
        self.users[username] = user
        return user

    def create_repo(
        self,
        name: str,
        files: Mapping[str, str | bytes] | None = None,
        *,
        private: bool = False,
        default_branch: str = "main",
        branches: Mapping[str, Mapping[str, str | bytes]] | None = None,
    ) -> Path:
        """A bare repo `name` ("owner/repo") whose default branch has one commit holding `files`
        (default: a README); each entry of `branches` is a branch off it with one more commit
        adding/overwriting those files. All commits are the host owner's. Returns the bare path."""
        if not REPO_NAME.fullmatch(name) or name.endswith(".git"):
            raise ValueError(f"repo name must be owner/repo, got {name!r}")
        if name in self.repos:
            raise ValueError(f"repo {name} already exists")
        bare = self.root / f"{name}.git"
        bare.parent.mkdir(parents=True, exist_ok=True)
        self._git("init", "--quiet", "--bare", f"--initial-branch={default_branch}", str(bare))
        initial = files if files is not None else {"README.md": f"# {name}\n"}
        stream = _commit_record(f"refs/heads/{default_branch}", "Initial commit", initial, mark=1)
        for branch, branch_files in (branches or {}).items():
            stream += _commit_record(f"refs/heads/{branch}", f"Add {branch} changes", branch_files, parent=":1")
        self._git("--git-dir", str(bare), "fast-import", "--quiet", stdin=stream)
        self.repos[name] = HostedRepo(name, bare, private)
        return bare

    def commit(self, name: str, branch: str, files: Mapping[str, str | bytes], message: str = "Host change") -> str:
        """Add a commit by the owner on top of `branch` of `name` (a collaborator pushing behind
        a clone's back); returns its sha."""
        git_dir = str(self._repo(name).path)
        ref = f"refs/heads/{branch}"
        self._git("--git-dir", git_dir, "fast-import", "--quiet",
                  stdin=_commit_record(ref, message, files, parent=f"{ref}^0"))
        return self._git("--git-dir", git_dir, "rev-parse", ref).strip()

    def decline_pushes(self, name: str, message: str = "Pushes are disabled on this repository.") -> None:
        """Install a pre-receive hook that refuses every push to `name` with `message` (like a
        protected branch or a push rule): the client sees ``[remote rejected]``."""
        hook = self._repo(name).path / "hooks" / "pre-receive"
        hook.write_text(f"#!/bin/sh\necho {_sh_quote(message)} >&2\nexit 1\n")
        hook.chmod(0o755)

    def slow(self, name: str, seconds: float, *, service: str = "git-upload-pack", count: int | None = None) -> None:
        """Wait `seconds` before answering the next `count` (None: every one until changed)
        POSTs of `service` to `name`: ``"git-upload-pack"`` serves clones and fetches (with
        protocol v2 a clone POSTs twice: ls-refs, then fetch; the first is held), and
        ``"git-receive-pack"`` pushes. The wait comes after authorization, before git runs,
        so the client has connected and waits for its answer (a clone has made its directory
        by then). A held request is appended to `held` when its wait starts. ``seconds=0``
        removes the order; stopping the host ends every wait with a 503."""
        if service not in ("git-upload-pack", "git-receive-pack"):
            raise ValueError(f"service must be git-upload-pack or git-receive-pack, not {service!r}")
        if count is not None and count < 1:
            raise ValueError("count must be at least 1 (or None)")
        self._repo(name)
        if seconds <= 0:
            self._slow.pop((name, service), None)
        else:
            self._slow[(name, service)] = [float(seconds), count]

    # ----------------------------------------------------------------- inspection helpers

    def branches(self, name: str) -> list[str]:
        """Branch names of the bare repo, sorted."""
        out = self._git("--git-dir", str(self._repo(name).path), "for-each-ref", "--format=%(refname)", "refs/heads")
        return [line.removeprefix("refs/heads/") for line in out.splitlines() if line]

    def log(self, name: str, ref: str) -> list[dict[str, str]]:
        """Commits reachable from `ref`, newest first: sha, author/committer name and email,
        message (without the trailing newline)."""
        fmt = "%H%x1f%an%x1f%ae%x1f%cn%x1f%ce%x1f%B%x1e"
        out = self._git("--git-dir", str(self._repo(name).path), "log", f"--format={fmt}", ref, "--")
        keys = ("sha", "author_name", "author_email", "committer_name", "committer_email", "message")
        commits = []
        for record in out.split("\x1e"):
            record = record.lstrip("\n")
            if record:
                commits.append(dict(zip(keys, record.split("\x1f"), strict=True)))
                commits[-1]["message"] = commits[-1]["message"].rstrip("\n")
        return commits

    def checkout(self, name: str, ref: str, dest: Path) -> Path:
        """A working copy of `name` at `ref` (branch or sha) in `dest`, for asserting files or
        running ``git apply --check``; `dest` must not exist or be empty."""
        repo = self._repo(name)
        sha = self._git("--git-dir", str(repo.path), "rev-parse", "--verify", f"{ref}^{{commit}}").strip()
        self._git("clone", "--quiet", "--no-checkout", str(repo.path), str(dest))
        self._git("-C", str(dest), "checkout", "--quiet", "--detach", sha)
        return Path(dest)

    # ----------------------------------------------------------------- internals

    def _repo(self, name: str) -> HostedRepo:
        try:
            return self.repos[name]
        except KeyError:
            raise KeyError(f"no repo {name} on the git host") from None

    def _base_env(self) -> dict[str, str]:
        """Git isolated from the machine's and the user's config (credential helpers,
        signing, hooks paths…) and from any GIT_* variable of the test process."""
        return {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(self.root),
            "LANG": "C.UTF-8",
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_CONFIG_GLOBAL": os.devnull,
            "GIT_TERMINAL_PROMPT": "0",
        }

    def _env(self) -> dict[str, str]:
        """`_base_env` with the owner's identity, so git never guesses one (reflogs)."""
        return {**self._base_env(), "GIT_COMMITTER_NAME": OWNER_NAME, "GIT_COMMITTER_EMAIL": OWNER_EMAIL}

    def _git(self, *args: str, stdin: bytes | None = None) -> str:
        result = subprocess.run([GIT, *args], input=stdin, capture_output=True, env=self._env(), timeout=60)
        if result.returncode != 0:
            raise RuntimeError(f"git {' '.join(args)} failed ({result.returncode}): {result.stderr.decode().strip()}")
        return result.stdout.decode()

    def _credentials(self, request: web.Request) -> tuple[str | None, GitUser | None, bool]:
        """(username presented, the user if the credentials are valid, credentials presented)."""
        header = request.headers.get("Authorization")
        if header is None:
            return None, None, False
        scheme, _, encoded = header.partition(" ")
        if scheme.lower() != "basic":
            return None, None, True
        try:
            username, _, token = base64.b64decode(encoded.strip(), validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            return None, None, True
        user = self.users.get(username)
        return username, (user if user is not None and user.token == token else None), True

    def _authorize(self, request: web.Request, name: str, push: bool) -> tuple[web.Response | None, GitUser | None]:
        """(GitHub's refusal or None, the authenticated user or None); records the request."""
        username, user, presented = self._credentials(request)
        self.requests.append(GitRequest(request.method, request.path_qs, username))
        repo = self.repos.get(name)
        if presented and user is None:
            return self._unauthorized(
                "Invalid username or token. Password authentication is not supported for Git operations.\n"
            ), None
        if user is None and (push or repo is None or repo.private):
            return self._unauthorized(""), None
        if repo is None or (user is not None and not user.can_see(repo)):
            return web.Response(status=404, text="Repository not found.\n", content_type="text/plain"), user
        if push and user is not None and not user.can_push(repo):
            text = f"Permission to {name}.git denied to {user.username}.\n"
            return web.Response(status=403, text=text, content_type="text/plain"), user
        return None, user

    def _unauthorized(self, text: str) -> web.Response:
        return web.Response(
            status=401, text=text, content_type="text/plain",
            headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
        )  # fmt: skip

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        match = GIT_PATH.fullmatch(request.path)
        if match is None:
            self.requests.append(GitRequest(request.method, request.path_qs, self._credentials(request)[0]))
            return web.Response(status=404, text="Not Found\n", content_type="text/plain")
        name = f"{match['owner']}/{match['repo']}"
        rest = match["rest"]
        push = rest == "/git-receive-pack" or (
            rest == "/info/refs" and request.query.get("service") == "git-receive-pack"
        )
        refusal, user = self._authorize(request, name, push)
        if refusal is not None:
            return refusal
        if request.method == "POST" and not await self._wait_if_slow(name, rest.lstrip("/")):
            return web.Response(status=503, text="Service Unavailable\n", content_type="text/plain")
        env = self._cgi_env(request, f"/{name}.git{rest}", user.username if user else None)
        try:
            async with asyncio.timeout(self.request_timeout):
                return await self._run_backend(request, env)
        except TimeoutError:
            log.warning("git host: %s %s timed out", request.method, request.path_qs)
            raise

    async def _wait_if_slow(self, name: str, service: str) -> bool:
        """The wait `slow` ordered for this request, if any; False when a stop ended it."""
        order = self._slow.get((name, service))
        if order is None:
            return True
        seconds, left = order
        if left is not None:
            order[1] = left - 1
            if order[1] == 0:
                del self._slow[(name, service)]
        self.held.append(self.requests[-1])  # `_authorize` has just recorded it
        assert self._stopping is not None
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
        return not self._stopping.is_set()

    def _cgi_env(self, request: web.Request, path_info: str, remote_user: str | None) -> dict[str, str]:
        """RFC 3875 variables for http-backend. REMOTE_USER is set for authenticated requests
        (`_authorize` demands them for pushes): `http.receivepack` defaults to enabled exactly
        when it is set, so receive-pack runs for authorized pushers only."""
        env = self._base_env()  # http-backend names the pusher in reflogs itself
        env.update(
            {
                "GIT_PROJECT_ROOT": str(self.root),
                "GIT_HTTP_EXPORT_ALL": "1",
                "GATEWAY_INTERFACE": "CGI/1.1",
                "SERVER_PROTOCOL": f"HTTP/{request.version.major}.{request.version.minor}",
                "SERVER_NAME": self.hostname,
                "SERVER_PORT": str(self.port),
                "REQUEST_METHOD": request.method,
                "PATH_INFO": path_info,
                "QUERY_STRING": request.query_string,
                "REMOTE_ADDR": request.remote or "",
                "CONTENT_TYPE": request.headers.get("Content-Type", ""),
            }
        )
        if "Content-Length" in request.headers and "chunked" not in request.headers.get("Transfer-Encoding", ""):
            env["CONTENT_LENGTH"] = request.headers["Content-Length"]
        if remote_user is not None:
            env["REMOTE_USER"] = remote_user
        for key, value in request.headers.items():
            if key.lower() not in NOT_CGI:
                env["HTTP_" + key.upper().replace("-", "_")] = value  # Git-Protocol, Content-Encoding…
        return env

    async def _run_backend(self, request: web.Request, env: dict[str, str]) -> web.StreamResponse:
        """One http-backend run: body streamed in, CGI headers parsed, body streamed out."""
        proc = await asyncio.create_subprocess_exec(
            str(self._backend), env=env, cwd=str(self.root),
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=True,
        )  # fmt: skip
        self._procs.add(proc)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        feeder = asyncio.ensure_future(_feed(request, proc.stdin))
        errors = asyncio.ensure_future(proc.stderr.read())
        try:
            status, reason, headers = await _cgi_head(proc.stdout)
            response = web.StreamResponse(status=status, reason=reason)
            for key, value in headers:
                response.headers.add(key, value)
            await response.prepare(request)
            while data := await proc.stdout.read(READ_CHUNK):
                await response.write(data)
            await response.write_eof()
            await proc.wait()
            stderr = await errors
            if proc.returncode or stderr.strip():
                log.debug("git http-backend %s: exit %s %s", env["PATH_INFO"], proc.returncode, stderr.decode()[-2000:])
            return response
        finally:
            if proc.returncode is None:
                _kill_group(proc)
                await proc.wait()
            for task in (feeder, errors):
                task.cancel()
            await asyncio.gather(feeder, errors, return_exceptions=True)
            self._procs.discard(proc)


async def _feed(request: web.Request, stdin: asyncio.StreamWriter) -> None:
    """Stream the request body (as sent, gzip included) into the CGI's stdin, then close it.
    http-backend may stop reading early (e.g. when it refuses): that is not an error."""
    try:
        async for chunk in request.content.iter_chunked(READ_CHUNK):
            stdin.write(chunk)
            await stdin.drain()
    except (BrokenPipeError, ConnectionResetError):
        pass
    finally:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError, RuntimeError):
            stdin.close()


async def _cgi_head(stdout: asyncio.StreamReader) -> tuple[int, str, list[tuple[str, str]]]:
    """The CGI response head: a `Status:` line (default 200) and the other headers; a CGI that
    ends before its blank line is a 502, as a web server answers for a broken gateway."""
    status, reason, headers = 200, "OK", []
    while True:
        raw = await stdout.readline()
        if not raw:
            return 502, "Bad Gateway", [("Content-Type", "text/plain")]
        line = raw.rstrip(b"\r\n")
        if not line:
            return status, reason, headers
        key, _, value = line.decode("latin-1").partition(":")
        value = value.strip()
        if key.lower() == "status":
            code, _, reason = value.partition(" ")
            status = int(code)
        else:
            headers.append((key, value))


def _commit_record(
    ref: str, message: str, files: Mapping[str, str | bytes], *, mark: int | None = None, parent: str | None = None
) -> bytes:
    """One `git fast-import` commit by the owner at the fixed date: a whole repo is built by
    one process instead of a dozen porcelain calls (this machine pays ~70 ms per git run)."""
    when = f"{int(dt.datetime.fromisoformat(OWNER_DATE).timestamp())} +0000"
    ident = f"{OWNER_NAME} <{OWNER_EMAIL}> {when}"
    out = [f"commit {ref}\n".encode()]
    if mark is not None:
        out.append(f"mark :{mark}\n".encode())
    out.append(f"author {ident}\ncommitter {ident}\n".encode())
    out.append(_data(message.encode()))
    if parent is not None:
        out.append(f"from {parent}\n".encode())
    for path, content in files.items():
        if "\n" in path or path.startswith('"'):
            raise ValueError(f"unsupported file name {path!r}")
        out.append(f"M 100644 inline {path}\n".encode())
        out.append(_data(content.encode() if isinstance(content, str) else content))
    out.append(b"\n")
    return b"".join(out)


def _data(payload: bytes) -> bytes:
    return b"data %d\n%s\n" % (len(payload), payload)


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    """http-backend runs upload-pack/receive-pack as children in its group: kill them all."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)


def _sh_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


@pytest_asyncio.fixture
async def git_host(tmp_path: Path) -> AsyncIterator[GitHost]:
    """A started `GitHost` under the test's tmp dir (no repos, no users), stopped afterwards.
    Map its name for sandboxes with ``daytona_double.hosts[git_host.hostname] = git_host.ip``."""
    async with GitHost(tmp_path / "git-host") as host:
        yield host

