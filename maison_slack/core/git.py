"""The project in a sandbox as a git repository: cloned, diffed, committed and pushed.

Claude works and commits locally but holds no credential: the network operations (clone and
push) are made by the caller through Daytona's git toolbox, with the credentials in the body of
that one call (../shared/reference/daytona.md §18). The daemon uses them in memory and writes
them nowhere — not in the remote URL, `.git/config`, a credential store or a command line — so
nothing Claude runs can find them. (Daytona Secrets would not help: they substitute only plain
header values, and git sends the token inside Basic auth.)

Without a repository the work dir itself becomes one when the session starts, so `diff` works
for every thread.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar
from urllib.parse import quote, urlsplit

from daytona import (
    DaytonaGitAuthFailedError,
    DaytonaGitBranchNotFoundError,
    DaytonaGitPushRejectedError,
    DaytonaGitRemoteRejectedError,
    DaytonaGitRepoNotFoundError,
    DaytonaGitTransportFailedError,
)

from maison_slack.core.daytona_calls import call
from maison_slack.core.errors import MaisonError
from maison_slack.core.sandbox import MaisonSandbox

T = TypeVar("T")

#: Claude's own local commits need an identity; it is not a credential.
CLAUDE_IDENTITY = ("Claude", "noreply@anthropic.com")
#: Outside a repository the work dir is the sandbox's home: its dot-files (caches, Claude Code's
#: own state, `.maison/`) and installed packages are not the work.
_HOME_EXCLUDES = "/.*\nnode_modules/\n"
_SHA = re.compile(r"^[0-9a-f]{40}$")
_BRANCH = re.compile(r"^(?!.*\.\.)(?!.*//)(?!/)[A-Za-z0-9._/-]{1,100}(?<![/.])$")


class GitError(MaisonError):
    """A git operation failed; the message says why in words a person can act on."""


@dataclass(frozen=True)
class GitCredentials:
    """What the bot sends with a clone or push; never stored in the sandbox."""

    username: str
    password: str = field(repr=False)


@dataclass(frozen=True)
class Checkout:
    """The session's project: where it is, the branch it works on and where it started."""

    path: str  #: relative to the work dir ("." for the work dir itself); Claude's cwd
    branch: str  #: the session's own branch
    base: str  #: the commit the session started from: `diff` shows the changes since
    url: str | None = None  #: the repository it was cloned from, if any
    base_branch: str | None = None  #: the branch it was cloned from


def check_url(url: str) -> str:
    """The repository URL, or `ValueError` saying what is wrong with it. Only HTTP(S) URLs: the
    bot clones with a token over HTTPS, and a token in the URL would end up in the sandbox."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("https", "http") or not parts.hostname:
        raise ValueError(f"Not an HTTPS git URL: {url!r} (use the repository's https://… clone URL)")
    if parts.username or parts.password:
        raise ValueError("Do not put credentials in the repository URL: set MAISON_GIT_TOKEN where the bot runs")
    if not parts.path.strip("/") or parts.query or parts.fragment:
        raise ValueError(f"Not a repository URL: {url!r}")
    return url.strip()


def check_branch(name: str) -> str:
    """A branch name git accepts and a shell word cannot abuse, or `ValueError`."""
    if not _BRANCH.match(name) or name.endswith(".lock"):
        raise ValueError(f"Not a branch name: {name!r}")
    return name


def repo_name(url: str) -> str:
    """The directory a clone of `url` gets: its last path segment, without `.git`."""
    name = urlsplit(url).path.rstrip("/").rsplit("/", 1)[-1].removesuffix(".git")
    return re.sub(r"[^A-Za-z0-9._-]", "-", name).lstrip(".") or "repo"


def default_username(url: str) -> str:
    """The user name hosts expect with an access token (GitHub ignores it; the others do not)."""
    host = (urlsplit(url).hostname or "").lower()
    if "gitlab" in host:
        return "oauth2"
    if "bitbucket" in host:
        return "x-token-auth"
    return "x-access-token"


def compare_url(url: str, base_branch: str | None, branch: str) -> str | None:
    """A link to open a pull/merge request of `branch`, for GitHub, GitLab and Bitbucket URL
    shapes; None for other hosts."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    project = parts.path.strip("/").removesuffix(".git")
    root = f"https://{parts.netloc}/{project}"
    base = quote(base_branch or "main", safe="")
    head = quote(branch, safe="")
    if "github" in host:
        return f"{root}/compare/{base}...{head}?expand=1"
    if "gitlab" in host:
        return f"{root}/-/compare/{base}...{head}"
    if "bitbucket" in host:
        return f"{root}/branches/compare/{head}%0D{base}"
    return None


_FAILURES: tuple[tuple[type[Exception], str], ...] = (
    (DaytonaGitAuthFailedError, "the git host refused the credentials (check MAISON_GIT_TOKEN, and "
                                "MAISON_GIT_USERNAME where the host needs it)"),
    (DaytonaGitRepoNotFoundError, "the repository was not found (check the URL, and that MAISON_GIT_TOKEN "
                                  "can see it)"),
    (DaytonaGitBranchNotFoundError, "that branch does not exist in the repository"),
    (DaytonaGitPushRejectedError, "the remote branch has commits this one does not have (push rejected)"),
    (DaytonaGitRemoteRejectedError, "the git host refused the push (no write permission, or a protected "
                                    "branch or hook)"),
    (DaytonaGitTransportFailedError, "the git host could not be reached"),
)


async def _git(doing: str, operation: Callable[[], Awaitable[T]]) -> T:
    """One git toolbox call: a git failure becomes a `GitError` that says why; the rest is
    Daytona's (`call` retries a 429, never a clone or push that may have happened)."""

    async def explained() -> T:
        try:
            return await operation()
        except Exception as exc:
            for kind, why in _FAILURES:
                if isinstance(exc, kind):
                    raise GitError(f"{doing}: {why}.") from exc
            raise

    return await call(doing, explained, retry=False)


async def _script(sandbox: MaisonSandbox, doing: str, script: str, cwd: str, timeout: int = 120) -> str:
    """A fixed git script run in `cwd` (relative to the work dir); its output, or `GitError`
    with its last lines."""
    where = MaisonSandbox.path(await sandbox.work_directory(), cwd)
    code, output = await sandbox.run_setup(script, timeout=timeout, cwd=where)
    if code != 0:
        raise GitError(f"{doing} failed: {output.strip()[-500:]}")
    return output.strip()


#: The fixed scripts run in the project (`{…}` are filled with quoted values the bot made).
IDENTITY = f"git config user.name {shlex.quote(CLAUDE_IDENTITY[0])} && git config user.email {CLAUDE_IDENTITY[1]}"
HEAD_SCRIPT = f"{IDENTITY} && git rev-parse HEAD"
INIT_SCRIPT = (
    "git init -q -b {branch} && "
    f"printf %s {shlex.quote(_HOME_EXCLUDES)} >> .git/info/exclude && {IDENTITY} && "
    "{{ git add -A || true; }} && git commit -q --allow-empty -m 'Session start' && git rev-parse HEAD"
)
DIFF_SCRIPT = (
    'index=$(mktemp) && cp "$(git rev-parse --git-dir)/index" "$index" 2>/dev/null; '
    'GIT_INDEX_FILE="$index" git add -A && GIT_INDEX_FILE="$index" git diff --cached --binary '
    '{base} > {out}; status=$?; rm -f "$index"; exit $status'
)
COUNT_SCRIPT = "git rev-list --count {base}..HEAD"
#: Where a clone goes: `{path}`, or `{path}-2`… when that exists (a clone cut short by a crash,
#: or files of the thread's from before it had a repository): never into or over anything.
FREE_PATH_SCRIPT = 'p={path}; n=1; while [ -e "$p" ]; do n=$((n + 1)); p={path}-$n; done; printf %s "$p"'


async def clone(sandbox: MaisonSandbox, url: str, *, branch: str | None, new_branch: str,
                credentials: GitCredentials | None, timeout: float = 900) -> Checkout:
    """Clone `url` (its `branch`, else its default one) into the work dir, onto `new_branch`,
    and make it the sandbox's project (Claude's cwd). A clone that takes longer than `timeout`
    seconds (a host that hangs) fails: the SDK itself sets no deadline on git calls."""
    path = await _script(sandbox, "Choosing the clone's directory",
                         FREE_PATH_SCRIPT.format(path=shlex.quote(repo_name(url))), ".")
    user, password = (credentials.username, credentials.password) if credentials else (None, None)
    git = sandbox.toolbox.git
    doing = f"Cloning {url}" + (f" (branch {branch})" if branch else "")
    await _git(doing, lambda: git.clone(url, path, branch=branch, username=user, password=password,
                                        request_timeout=timeout))
    status = await _git("Reading the clone", lambda: git.status(path))
    base_branch = branch or status.current_branch
    await _git("Creating the session's branch", lambda: git.create_branch(path, new_branch))
    await _git("Switching to the session's branch", lambda: git.checkout_branch(path, new_branch))
    base = await _script(sandbox, "Reading the clone", HEAD_SCRIPT, path)
    sandbox.project = path
    return Checkout(path=path, branch=new_branch, base=base.splitlines()[-1], url=url, base_branch=base_branch)


async def branch_off(sandbox: MaisonSandbox, checkout: Checkout, new_branch: str) -> Checkout:
    """The same project on a new branch from where it is now (a forked thread's own branch)."""
    await _git("Creating the branch", lambda: sandbox.toolbox.git.create_branch(checkout.path, new_branch))
    await _git("Switching branch", lambda: sandbox.toolbox.git.checkout_branch(checkout.path, new_branch))
    return Checkout(path=checkout.path, branch=new_branch, base=checkout.base, url=checkout.url,
                    base_branch=checkout.base_branch)


async def init(sandbox: MaisonSandbox, *, branch: str) -> Checkout:
    """No repository: the work dir becomes one, with what it holds now as the first commit (and
    stays Claude's cwd)."""
    script = INIT_SCRIPT.format(branch=shlex.quote(check_branch(branch)))
    base = await _script(sandbox, "Making the work dir a git repository", script, ".")
    sandbox.project = "."
    return Checkout(path=".", branch=branch, base=base.splitlines()[-1])


class PatchTooLargeError(GitError):
    """The patch is larger than the caller takes; `size` says how large, in bytes."""

    def __init__(self, size: int) -> None:
        super().__init__(f"The patch is {size / 1024 / 1024:.1f} MB")
        self.size = size


async def diff(sandbox: MaisonSandbox, checkout: Checkout, max_bytes: int) -> bytes:
    """Every change since the session started — Claude's commits, uncommitted and new files —
    as a patch that `git apply` takes on the original. Staged through a copy of the index, so
    what Claude staged is left as it was. `PatchTooLargeError` past `max_bytes` (checked in the
    sandbox: a patch of build output must not be downloaded to find out)."""
    if not _SHA.match(checkout.base):
        raise GitError(f"The session's start commit is unknown ({checkout.base!r})")
    out = MaisonSandbox.path(await sandbox.work_directory(), ".maison/diff.patch")
    await _script(sandbox, "Computing the diff", DIFF_SCRIPT.format(base=checkout.base, out=shlex.quote(out)),
                  checkout.path)
    size = await sandbox.file_size(out)
    if size > max_bytes:
        raise PatchTooLargeError(size)
    return await sandbox.read_bytes(out)


async def commit(sandbox: MaisonSandbox, checkout: Checkout, message: str, author: str, email: str) -> str | None:
    """Commit everything uncommitted as `author`; the new commit's id, or None if there was
    nothing to commit."""
    git = sandbox.toolbox.git
    status = await _git("Reading the changes", lambda: git.status(checkout.path))
    if not status.file_status:
        return None
    await _git("Staging the changes", lambda: git.add(checkout.path, ["."]))
    response = await _git("Committing", lambda: git.commit(checkout.path, message, author, email))
    return str(response.sha)


async def unpushed(sandbox: MaisonSandbox, checkout: Checkout) -> int:
    """How many commits the session's branch has since it started."""
    output = await _script(sandbox, "Counting the commits", COUNT_SCRIPT.format(base=checkout.base), checkout.path)
    return int(output.splitlines()[-1])


async def push(sandbox: MaisonSandbox, checkout: Checkout, credentials: GitCredentials | None,
               timeout: float = 900) -> None:
    """Push the session's branch to the repository it was cloned from (within `timeout` seconds)."""
    user, password = (credentials.username, credentials.password) if credentials else (None, None)
    await _git("Pushing", lambda: sandbox.toolbox.git.push(checkout.path, username=user, password=password,
                                                           branch=checkout.branch, remote="origin",
                                                           set_upstream=True, request_timeout=timeout))
