"""A thread's project: the repository its sandbox starts from, and `diff` and `push`.

When a thread gets a sandbox, its project is made before Claude starts: the repository (the
message's `--repo`, the thread's own, or the channel's) cloned onto a branch of the thread's
own, or, without one, the work dir made a git repository. SQLite keeps where it is and the
commit it started from. The bot does git's network operations with `MAISON_GIT_TOKEN` sent
per call (`core/git.py`); Claude commits locally and cannot push. `diff` and `push` are jobs
of the thread's owner, so they see what the run before them left.
"""

from __future__ import annotations

import re

from maison_slack.core import git
from maison_slack.core.errors import MaisonError
from maison_slack.core.git import Checkout, GitCredentials, PatchTooLargeError
from maison_slack.core.sandbox import MaisonSandbox
from maison_slack.slack.config import Settings
from maison_slack.slack.notices import Notices
from maison_slack.slack.owner import ThreadKey, ThreadOwner
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.slack.users import UserNames
from maison_slack.storage import DONE, Session, Store

#: Claude's co-authorship trailer on commits pushed from a thread.
CO_AUTHOR = "Co-Authored-By: Claude <noreply@anthropic.com>"
_SUBJECT_MAX = 72


def thread_branch(thread_ts: str) -> str:
    """The thread's own branch: `maison/<thread ts>`, unique per channel and readable."""
    return "maison/" + thread_ts.replace(".", "-")


def checkout_of(session: Session) -> Checkout | None:
    """The thread's project as SQLite has it, once it was made."""
    if not (session.project and session.branch and session.base_commit):
        return None
    return Checkout(path=session.project, branch=session.branch, base=session.base_commit, url=session.repo_url,
                    base_branch=session.base_branch)


def commit_message(answer: str | None, user_name: str) -> str:
    """A commit message from Claude's last answer: the summary it ends with (its last paragraph;
    what came before was said while working) — first line as the subject, the rest as the body —
    who asked, and Claude as co-author."""
    summary = re.split(r"\n\s*\n", (answer or "").strip())[-1]
    lines = [re.sub(r"^[#>*\-\s]+|[*_`]", "", line).strip() for line in summary.splitlines()]
    lines = [line for line in lines if line]
    subject = lines[0] if lines else "Work from a Slack thread"
    if len(subject) > _SUBJECT_MAX:
        subject = subject[: _SUBJECT_MAX - 1].rstrip() + "…"
    body = "\n".join(lines[1:8])
    return "\n\n".join(filter(None, [subject, body, f"Pushed from Slack by {user_name}.", CO_AUTHOR]))


class Projects:
    """Makes a thread's project in its sandbox and gets the work out of it."""

    def __init__(self, *, settings: Settings, store: Store, sandboxes: Sandboxes, notices: Notices,
                 users: UserNames) -> None:
        self._settings = settings
        self._store = store
        self._sandboxes = sandboxes
        self._notices = notices
        self._users = users

    def credentials(self, url: str | None) -> GitCredentials | None:
        """`MAISON_GIT_TOKEN` for this host's clone or push; None without a token."""
        if not (url and self._settings.git_token):
            return None
        return GitCredentials(self._settings.git_username or git.default_username(url), self._settings.git_token)

    async def prepare(self, owner: ThreadOwner, sandbox: MaisonSandbox, url: str | None,
                      branch: str | None) -> Checkout:
        """Clone `url` (its `branch`) onto the thread's branch, or without a URL make the work
        dir a repository; then remember it. Raises `GitError` saying why a clone failed."""
        new_branch = thread_branch(owner.key[1])
        if url:
            checkout = await git.clone(sandbox, url, branch=branch, new_branch=new_branch,
                                       credentials=self.credentials(url))
        else:
            checkout = await git.init(sandbox, branch=new_branch)
        await self._remember(owner.key, checkout)
        return checkout

    async def _remember(self, key: ThreadKey, checkout: Checkout) -> None:
        await self._store.set_checkout(*key, project=checkout.path, branch=checkout.branch, base_commit=checkout.base,
                                       repo_url=checkout.url, base_branch=checkout.base_branch)

    async def fork(self, copy: MaisonSandbox, key: ThreadKey) -> None:
        """A forked thread (its session copied from its parent's) works on a branch of its own."""
        session = await self._store.get_session(*key)
        checkout = checkout_of(session) if session is not None else None
        if checkout is not None:
            await self._remember(key, await git.branch_off(copy, checkout, thread_branch(key[1])))

    async def _checkout(self, owner: ThreadOwner, what: str) -> tuple[MaisonSandbox, Checkout] | None:
        """The thread's sandbox and project, or None after telling the thread there is none."""
        session = await self._store.get_session(*owner.key)
        checkout = checkout_of(session) if session is not None else None
        sandbox = await self._sandboxes.of_thread(owner, session) if checkout is not None else None
        if sandbox is None or checkout is None:
            await self._notices.say(owner.key, f"This thread has no work yet, so there is nothing to {what}.")
            return None
        return sandbox, checkout

    async def diff(self, owner: ThreadOwner) -> None:
        """`diff`: every change since the thread started, as a `.patch` file in the thread."""
        key = owner.key
        try:
            found = await self._checkout(owner, "diff")
            if found is None:
                return
            sandbox, checkout = found
            patch = await git.diff(sandbox, checkout, max_bytes=self._settings.max_file_mb * 1024 * 1024)
        except PatchTooLargeError as exc:
            await self._notices.say(key, f"The diff is {exc.size / 1024 / 1024:.1f} MB; files posted here are "
                                         f"limited to {self._settings.max_file_mb} MB (MAISON_MAX_FILE_MB).")
            return
        except MaisonError as exc:
            await self._notices.say(key, f":warning: Could not make the diff: {exc}")
            return
        if not patch.strip():
            await self._notices.say(key, "No changes since this thread started.")
            return
        name = checkout.branch.replace("/", "-") + ".patch"
        files = len(re.findall(rb"^diff --git ", patch, re.MULTILINE))
        await self._notices.upload(key, patch, name, f"Changes since this thread started ({files} file"
                                                     f"{'s' * (files != 1)}); apply with `git apply {name}`.",
                                   what="the diff")

    async def push(self, owner: ThreadOwner, user: str) -> None:
        """`push`: commit what is uncommitted as the person who asked (Claude co-author), push the
        thread's branch, and post it with a link to open a pull request."""
        key = owner.key
        try:
            found = await self._checkout(owner, "push")
            if found is None:
                return
            sandbox, checkout = found
            if checkout.url is None:
                await self._notices.say(key, "This thread has no repository to push to: it started without one. "
                                             "Send `diff` for a patch, or set one for new threads with "
                                             "`/maison config repo <https URL>`.")
                return
            name, email = await self._users.author(user)
            answers = [run.answer for run in await self._store.runs(*key) if run.state == DONE and run.answer]
            committed = await git.commit(sandbox, checkout, commit_message(answers[-1] if answers else None, name),
                                         name, email)
            if committed is None and not await git.unpushed(sandbox, checkout):
                await self._notices.say(key, "Nothing to push: no changes since this thread started.")
                return
            await git.push(sandbox, checkout, self.credentials(checkout.url))
        except MaisonError as exc:
            await self._notices.say(key, f":warning: Could not push: {exc}")
            return
        compare = git.compare_url(checkout.url, checkout.base_branch, checkout.branch)
        where = f"<{compare}|Open a pull request>" if compare else f"Branch `{checkout.branch}` on {checkout.url}"
        await self._notices.say(key, f":rocket: <@{user}> pushed `{checkout.branch}`"
                                     + (f" (new commit `{committed[:8]}`)" if committed else "") + f". {where}.")
