"""The git doubles, driven by the real `daytona` SDK (`sandbox.git.*`): the Daytona double's git
toolbox runs real git in the sandbox, through its egress proxy, against `GitHost` (git smart
HTTP with GitHub's answers). If these pass, code that clones, commits and pushes from a
sandbox can be tested end to end, failures included (status codes → `DaytonaGit*Error`)."""

from __future__ import annotations

import asyncio
import subprocess
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from daytona import (
    AsyncDaytona,
    AsyncSandbox,
    CreateSandboxFromSnapshotParams,
    DaytonaBadRequestError,
    DaytonaConfig,
    DaytonaError,
)
from daytona.common.errors import (
    DaytonaGitAuthFailedError,
    DaytonaGitBranchExistsError,
    DaytonaGitBranchNotFoundError,
    DaytonaGitDirtyWorktreeError,
    DaytonaGitMergeConflictError,
    DaytonaGitPushRejectedError,
    DaytonaGitRemoteRejectedError,
    DaytonaGitRepoNotFoundError,
    DaytonaGitTransportFailedError,
)

from tests.doubles.daytona import DaytonaDouble
from tests.doubles.git_host import OWNER_EMAIL, GitHost

TOKEN = "ghp_alice_token_0123456789abcdef"
READER_TOKEN = "ghp_reader_token_fedcba9876543210"
AUTHOR, EMAIL = "Maison Bot", "bot@maison.example"


@pytest.fixture(autouse=True)
def _no_proxy(monkeypatch: pytest.MonkeyPatch) -> None:
    # The SDK's aiohttp session uses trust_env=True.
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest_asyncio.fixture
async def host(git_host: GitHost) -> GitHost:
    git_host.create_repo(
        "team/app",
        files={"README.md": "# app\n", "src/app.py": "print('hello')\n"},
        branches={"dev": {"dev.txt": "dev work\n"}},
    )
    git_host.create_repo("team/secret", files={"secret.txt": "classified\n"}, private=True)
    git_host.add_user("alice", TOKEN)
    git_host.add_user("reader", READER_TOKEN, write=False)
    return git_host


@pytest_asyncio.fixture
async def double(host: GitHost) -> AsyncIterator[DaytonaDouble]:
    async with DaytonaDouble() as d:
        d.hosts[host.hostname] = host.ip  # the sandboxes' DNS: the host is reachable by name
        yield d


@pytest_asyncio.fixture
async def client(double: DaytonaDouble) -> AsyncIterator[AsyncDaytona]:
    async with AsyncDaytona(DaytonaConfig(api_key=double.api_key, api_url=double.api_url)) as daytona:
        yield daytona


@pytest_asyncio.fixture
async def sandbox(client: AsyncDaytona) -> AsyncSandbox:
    return await client.create(CreateSandboxFromSnapshotParams(snapshot="daytona-small"))


def git(repo: Path, *args: str) -> str:
    """Read a sandbox clone from the test process (the sandbox is a local directory)."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(repo), "GIT_CONFIG_NOSYSTEM": "1"}
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, env=env, check=True).stdout


async def test_public_clone_is_single_branch_on_the_default_branch(
    host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox
) -> None:
    await sandbox.git.clone(host.url("team/app"), "app")
    repo = double.sandbox(sandbox.id).home / "app"
    assert (repo / "README.md").read_text() == "# app\n"
    assert (repo / "src/app.py").exists() and not (repo / "dev.txt").exists()
    assert git(repo, "for-each-ref", "--format=%(refname)").split() == [
        "refs/heads/main", "refs/remotes/origin/HEAD", "refs/remotes/origin/main",
    ]  # fmt: skip
    branches = await sandbox.git.branches("app")
    assert (branches.branches, branches.current) == (["main"], "main")
    status = await sandbox.git.status("app")
    assert (status.current_branch, status.file_status, status.ahead, status.behind) == ("main", [], 0, 0)
    assert (status.branch_published, status.upstream, status.detached) == (True, "origin/main", False)
    # Anonymous all the way, through the sandbox's egress proxy, by the mapped name.
    assert {r.username for r in host.requests} == {None}
    assert any(e.host == host.hostname and e.status == 200 for e in double.egress_requests(sandbox.id))


async def test_clone_of_a_branch_and_shallow(host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    record = double.sandbox(sandbox.id)
    shallow = record.tmp / "shallow"  # an absolute sandbox path
    await sandbox.git.clone(host.url("team/app"), "dev", branch="dev")
    await sandbox.git.clone(host.url("team/app"), str(shallow), branch="dev", depth=1)
    assert (record.home / "dev/dev.txt").read_text() == "dev work\n"
    assert (await sandbox.git.branches("dev")).branches == ["dev"]
    assert git(record.home / "dev", "rev-list", "--count", "HEAD").strip() == "2"
    assert git(shallow, "rev-list", "--count", "HEAD").strip() == "1"
    assert (await sandbox.git.status(str(shallow))).current_branch == "dev"


async def test_private_clone_uses_the_token_for_that_call_only(
    host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox
) -> None:
    await sandbox.git.clone(host.url("team/secret"), "secret", username="alice", password=TOKEN)
    record = double.sandbox(sandbox.id)
    repo = record.home / "secret"
    assert (repo / "secret.txt").read_text() == "classified\n"
    assert git(repo, "config", "remote.origin.url").strip() == host.url("team/secret")
    assert [r.username for r in host.requests][:2] == [None, "alice"]  # asked for after the 401
    for path in record.root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            assert TOKEN.encode() not in path.read_bytes(), path
    # Nothing remembers it: the next call without credentials is anonymous again.
    with pytest.raises(DaytonaGitAuthFailedError):
        await sandbox.git.pull("secret")


async def test_clone_failures_map_to_the_sdk_errors(host: GitHost, sandbox: AsyncSandbox) -> None:
    secret = host.url("team/secret")
    with pytest.raises(DaytonaGitAuthFailedError) as wrong:
        await sandbox.git.clone(secret, "a", username="alice", password="ghp_wrong")
    assert wrong.value.status_code == 401 and "ghp_wrong" not in str(wrong.value)
    with pytest.raises(DaytonaGitAuthFailedError):
        await sandbox.git.clone(secret, "b")  # no credentials for a private repo
    with pytest.raises(DaytonaGitRepoNotFoundError) as missing:
        await sandbox.git.clone(host.url("team/nope"), "c", username="alice", password=TOKEN)
    assert missing.value.status_code == 404
    host.add_user("outsider", "ghp_outsider", repos=[])  # valid, but no access: "not found" too
    with pytest.raises(DaytonaGitRepoNotFoundError):
        await sandbox.git.clone(secret, "c", username="outsider", password="ghp_outsider")
    with pytest.raises(DaytonaGitBranchNotFoundError):
        await sandbox.git.clone(host.url("team/app"), "d", branch="nope")
    with pytest.raises(DaytonaGitTransportFailedError) as unreachable:
        await sandbox.git.clone("http://nowhere.example.test/team/app.git", "e")
    assert unreachable.value.status_code == 502
    with pytest.raises(DaytonaGitTransportFailedError):  # mapped name, nothing listening
        await sandbox.git.clone(f"http://{host.hostname}:1/team/app.git", "f")
    await sandbox.git.clone(host.url("team/app"), "g")
    with pytest.raises(DaytonaBadRequestError, match="already exists and is not an empty directory"):
        await sandbox.git.clone(host.url("team/app"), "g")
    with pytest.raises(DaytonaBadRequestError, match="repository does not exist"):
        await sandbox.git.status("nowhere")


async def test_blocked_egress_is_a_transport_failure(host: GitHost, client: AsyncDaytona) -> None:
    sandbox = await client.create(
        CreateSandboxFromSnapshotParams(snapshot="daytona-small", domain_allow_list="api.anthropic.test")
    )
    with pytest.raises(DaytonaGitTransportFailedError):
        await sandbox.git.clone(host.url("team/app"), "app")
    assert host.requests == []


async def test_branch_commit_push_round_trip(host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    await sandbox.git.clone(host.url("team/secret"), "secret", username="alice", password=TOKEN)
    repo = double.sandbox(sandbox.id).home / "secret"
    await sandbox.git.create_branch("secret", "feature")  # created and checked out
    assert (await sandbox.git.branches("secret")).current == "feature"
    with pytest.raises(DaytonaGitBranchExistsError):
        await sandbox.git.create_branch("secret", "feature")
    await sandbox.git.checkout_branch("secret", "main")
    await sandbox.git.checkout_branch("secret", "feature")
    (repo / "notes.md").write_text("from the sandbox\n")
    await sandbox.git.add("secret", ["notes.md"])
    commit = await sandbox.git.commit("secret", "Add notes", AUTHOR, EMAIL)
    assert commit.sha == git(repo, "rev-parse", "HEAD").strip()

    await sandbox.git.push("secret", username="alice", password=TOKEN, set_upstream=True)
    assert host.branches("team/secret") == ["feature", "main"]
    head = host.log("team/secret", "feature")[0]
    assert head == {
        "sha": commit.sha, "author_name": AUTHOR, "author_email": EMAIL,
        "committer_name": AUTHOR, "committer_email": EMAIL, "message": "Add notes",
    }  # fmt: skip
    assert host.log("team/secret", "feature")[1]["author_email"] == OWNER_EMAIL
    # set_upstream configures the upstream, but a single-branch clone fetches only `main`:
    # with no remote-tracking ref for `feature`, git (and so the status) reports none.
    assert git(repo, "config", "branch.feature.merge").strip() == "refs/heads/feature"
    status = await sandbox.git.status("secret")
    assert (status.current_branch, status.upstream, status.branch_published) == ("feature", "", False)
    patch = git(repo, "format-patch", "--stdout", "main")
    work = host.checkout("team/secret", "main", repo.parent / "check")
    subprocess.run(["git", "-C", str(work), "apply", "--check"], input=patch, text=True, check=True)

    await sandbox.git.checkout_branch("secret", "main")
    await sandbox.git.delete_branch("secret", "feature")
    assert (await sandbox.git.branches("secret")).branches == ["main"]
    with pytest.raises(DaytonaGitBranchNotFoundError):
        await sandbox.git.checkout_branch("secret", "feature")
    with pytest.raises(DaytonaBadRequestError, match="nothing to commit"):
        await sandbox.git.commit("secret", "Nothing", AUTHOR, EMAIL)
    assert (await sandbox.git.commit("secret", "Empty", AUTHOR, EMAIL, allow_empty=True)).sha


async def test_push_refusals(host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    await sandbox.git.clone(host.url("team/secret"), "secret", username="alice", password=TOKEN)
    await sandbox.git.clone(host.url("team/app"), "app")
    home = double.sandbox(sandbox.id).home
    for name in ("secret", "app"):
        (home / name / "change.txt").write_text("change\n")
        await sandbox.git.add(name, ["."])
        await sandbox.git.commit(name, "Change", AUTHOR, EMAIL)

    with pytest.raises(DaytonaGitAuthFailedError):
        await sandbox.git.push("secret")  # the clone's token was not kept
    with pytest.raises(DaytonaGitAuthFailedError):
        await sandbox.git.push("app")  # pushing needs credentials even to a public repo
    with pytest.raises(DaytonaGitRemoteRejectedError, match=r"denied to \*\*\*") as denied:
        await sandbox.git.push("app", username="reader", password=READER_TOKEN)
    assert denied.value.status_code == 422

    host.commit("team/secret", "main", {"other.txt": "someone else\n"})
    with pytest.raises(DaytonaGitPushRejectedError) as rejected:
        await sandbox.git.push("secret", username="alice", password=TOKEN)
    assert rejected.value.status_code == 409
    with pytest.raises(DaytonaGitMergeConflictError):  # diverged: a pull cannot fast-forward
        await sandbox.git.pull("secret", username="alice", password=TOKEN)

    host.decline_pushes("team/app", "Branch main is protected.")
    with pytest.raises(DaytonaGitRemoteRejectedError, match="protected"):
        await sandbox.git.push("app", username="alice", password=TOKEN)
    assert ("POST", "/team/app.git/git-receive-pack", "alice") in host.requests


async def test_pull_fast_forwards(host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    await sandbox.git.clone(host.url("team/app"), "app")
    sha = host.commit("team/app", "main", {"pulled.txt": "new upstream\n"})
    await sandbox.git.pull("app")
    repo = double.sandbox(sandbox.id).home / "app"
    assert (repo / "pulled.txt").read_text() == "new upstream\n"
    assert git(repo, "rev-parse", "HEAD").strip() == sha


async def test_status_and_dirty_checkout(host: GitHost, double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    await sandbox.git.clone(host.url("team/app"), "app")
    repo = double.sandbox(sandbox.id).home / "app"
    (repo / "README.md").write_text("# changed\n")
    (repo / "src/new.py").write_text("new\n")
    (repo / "staged.txt").write_text("staged\n")
    await sandbox.git.add("app", ["staged.txt"])
    status = await sandbox.git.status("app")
    by_name = {f.name: (f.staging.value, f.worktree.value) for f in status.file_status}
    assert by_name == {
        "README.md": ("Unmodified", "Modified"),
        "src/new.py": ("Untracked", "Untracked"),
        "staged.txt": ("Added", "Unmodified"),
    }
    await sandbox.git.create_branch("app", "topic")
    (repo / "README.md").write_text("# committed on topic\n")
    await sandbox.git.add("app", ["README.md"])
    await sandbox.git.commit("app", "Topic", AUTHOR, EMAIL)
    (repo / "README.md").write_text("# uncommitted\n")
    with pytest.raises(DaytonaGitDirtyWorktreeError):
        await sandbox.git.checkout_branch("app", "main")
    assert (await sandbox.git.status("app")).ahead == 0  # topic has no upstream


async def test_two_sandboxes_clone_at_once(host: GitHost, double: DaytonaDouble, client: AsyncDaytona) -> None:
    first, second = await asyncio.gather(
        *(client.create(CreateSandboxFromSnapshotParams(snapshot="daytona-small")) for _ in range(2))
    )
    await asyncio.gather(
        first.git.clone(host.url("team/app"), "app"),
        second.git.clone(host.url("team/secret"), "app", username="alice", password=TOKEN),
    )
    assert (double.sandbox(first.id).home / "app/README.md").exists()
    assert (double.sandbox(second.id).home / "app/secret.txt").exists()


async def test_git_on_a_stopped_sandbox_fails_like_any_toolbox_call(host: GitHost, sandbox: AsyncSandbox) -> None:
    await sandbox.stop()
    with pytest.raises(DaytonaError, match="Is the Sandbox started") as stopped:
        await sandbox.git.clone(host.url("team/app"), "app")
    assert stopped.value.status_code == 400 and host.requests == []


async def test_a_hanging_remote_is_cut_off_and_git_killed(double: DaytonaDouble, sandbox: AsyncSandbox) -> None:
    held: list[asyncio.StreamWriter] = []

    async def never_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # read the request, answer nothing

    server = await asyncio.start_server(never_answer, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    double.hosts["hang.example.test"] = "127.0.0.1"
    double.git_timeout = 1.0
    try:
        with pytest.raises(DaytonaGitTransportFailedError, match="timed out"):
            await sandbox.git.clone(f"http://hang.example.test:{port}/team/app.git", "app")
        for _ in range(50):  # SIGKILL is delivered asynchronously to git's helper processes
            if not double.processes(sandbox.id):
                break
            await asyncio.sleep(0.02)
        assert double.processes(sandbox.id) == []
    finally:
        for writer in held:
            writer.transport.abort()
        server.close()
        await server.wait_closed()
