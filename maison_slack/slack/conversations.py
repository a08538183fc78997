"""Threads as shared Claude Code conversations: what listeners, the reaper and recovery ask.

Each request becomes a job for the thread's owner (`slack/owner.py`), which runs its jobs one
at a time in the order they were posted; a prompt's place is its run id, fixed in SQLite when
the message is claimed. Runs themselves are `slack/runs.py`.
"""

from __future__ import annotations

import logging

from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError
from maison_slack.slack.attachments import Attachments
from maison_slack.slack.config import Settings
from maison_slack.slack.idle import IdleThreads
from maison_slack.slack.notices import ACK_REACTION, QUEUED_REACTION, Notices
from maison_slack.slack.owner import ThreadKey, ThreadOwner, Threads
from maison_slack.slack.redact import Redactor
from maison_slack.slack.budget import Budgets
from maison_slack.slack.projects import Projects
from maison_slack.slack.runs import Prompt, Runner
from maison_slack.slack.spending import Spending
from maison_slack.slack.sharing import Sharing
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.slack.users import UserNames
from maison_slack.storage import Run, Store, message_key

logger = logging.getLogger(__name__)


class Conversations:
    """Runs prompts in their thread's sandbox and streams the answers into Slack."""

    def __init__(self, *, settings: Settings, store: Store, client: AsyncWebClient, sandboxes: Sandboxes,
                 users: UserNames, budgets: Budgets) -> None:
        self._settings = settings
        self._store = store
        self._sandboxes = sandboxes
        self.redactor = Redactor(settings.secrets())
        self.notices = Notices(client, self.redactor, budgets)
        self._client = client
        self._attachments = Attachments(settings.slack_bot_token, settings.slack_api_url)
        self._projects = Projects(settings=settings, store=store, sandboxes=sandboxes, notices=self.notices,
                                  users=users)
        #: Spending caps, and `/maison cost`.
        self.spending = Spending(settings, store)
        self._runner = Runner(settings=settings, store=store, client=client, sandboxes=sandboxes, users=users,
                              budgets=budgets, redactor=self.redactor, notices=self.notices,
                              attachments=self._attachments, projects=self._projects, spending=self.spending)
        self.threads = Threads()
        #: What the reaper asks of idle threads, and the Keep button.
        self.idle = IdleThreads(settings=settings, store=store, sandboxes=sandboxes, threads=self.threads,
                                notices=self.notices)
        self._sharing = Sharing(settings=settings, store=store, client=client, sandboxes=sandboxes,
                                notices=self.notices, projects=self._projects)
        self._holding = False

    # -- prompts -----------------------------------------------------------------------------

    async def submit(self, prompt: Prompt) -> bool:
        """Claim a person's message and queue it in its thread. False for a duplicate delivery.

        Its place is fixed by the claim (one SQLite transaction: event, session, participant,
        queued run with the prompt), before any Slack call; the reaction (👀, or ⏳ when it
        waits) goes out afterwards in the background and can never reorder prompts.
        """
        owner = self.threads.owner(prompt.key)
        if owner.waiting >= self._settings.max_queued:
            if await self._store.claim_event(message_key(prompt.channel, prompt.message_ts)):
                self.notices.later(self.notices.say(prompt.key, (
                    f"<@{prompt.user}>, {owner.waiting} messages are already waiting in this thread, so I did "
                    f"not queue this one. Send it again once the queue is shorter (the limit is "
                    f"{self._settings.max_queued}).")))
            return True
        waits = owner.busy  # before this prompt counts: does it wait behind something?
        owner.waiting += 1  # counted before the await below, so a burst cannot overshoot the limit
        try:
            run_id = await self._store.claim_prompt(message_key(prompt.channel, prompt.message_ts), prompt.channel, prompt.thread_ts, prompt.user,
                                                    prompt.message_ts, prompt.text, prompt.files)
        except BaseException:
            owner.waiting -= 1
            raise
        if run_id is None or self._holding:
            owner.waiting -= 1  # a duplicate; or shutting down: the claimed run starts after the restart
            return run_id is not None
        # No await since the claim returned: runs are posted in run id (claim) order.
        owner.post(lambda: self._runner.run(owner, run_id, prompt, waited=waits))
        reaction = QUEUED_REACTION if waits else ACK_REACTION
        self.notices.later(self.notices.react(prompt.channel, prompt.message_ts, reaction))
        return True

    def resume(self, run: Run) -> None:
        """A prompt claimed before a restart and never started: queue it again, in its place."""
        prompt = Prompt(channel=run.channel, thread_ts=run.thread_ts, user=run.user_id, text=run.prompt or "",
                        message_ts=run.prompt_ts, files=run.files)
        owner = self.threads.owner(prompt.key)
        owner.waiting += 1
        owner.post(lambda: self._runner.run(owner, run.id, prompt, waited=True))

    # -- stop, reset, file -------------------------------------------------------------------

    async def stop(self, key: ThreadKey, user: str) -> bool:
        """Stop the thread's current run, in any state; queued prompts still run."""
        owner = self.threads.get(key)
        return owner is not None and await owner.stop(user)

    async def stop_run(self, run_id: int, user: str) -> bool:
        owner = self.threads.find_run(run_id)
        return owner is not None and await owner.stop(user)

    async def reset(self, key: ThreadKey, user: str) -> None:
        """Stop the run, then (after it has ended) delete the sandbox; the next message starts fresh."""
        owner = self.threads.owner(key)
        await owner.stop(user)
        owner.post(lambda: self._reset(owner, user))

    async def _reset(self, owner: ThreadOwner, user: str) -> None:
        session = await self._store.get_session(*owner.key)
        if session is None or session.sandbox_id is None:
            await self.notices.say(owner.key, "This thread has no sandbox to reset.")
            return
        try:
            await self._sandboxes.delete(session.sandbox_id)
        except MaisonError as exc:
            await self.notices.say(owner.key, f":warning: Could not delete the sandbox: {exc}")
            return
        owner.sandbox = None
        await self._store.set_sandbox(*owner.key, None)
        await self.notices.say(owner.key, f":broom: <@{user}> reset this thread: its sandbox is deleted and the "
                                          "next message starts a fresh one.")

    # -- what a thread gets out of its sandbox (`sharing.py`), in line with its other jobs ---------

    def send_file(self, key: ThreadKey, path: str) -> None:
        """Upload a file from the thread's sandbox into the thread (after the run that writes it)."""
        owner = self.threads.owner(key)
        owner.post(lambda: self._sharing.send_file(owner, path))

    def preview(self, key: ThreadKey, port: int) -> None:
        """Post a signed link to a port of the thread's sandbox."""
        owner = self.threads.owner(key)
        owner.post(lambda: self._sharing.preview(owner, port))

    def fork(self, key: ThreadKey, user: str) -> None:
        """Copy the thread's sandbox and conversation into a new thread."""
        owner = self.threads.owner(key)
        owner.post(lambda: self._sharing.fork(owner, user, self.threads))

    def diff(self, key: ThreadKey) -> None:
        """Post the thread's changes since it started as a patch."""
        owner = self.threads.owner(key)
        owner.post(lambda: self._projects.diff(owner))

    def push(self, key: ThreadKey, user: str) -> None:
        """Commit the thread's changes as `user` and push its branch."""
        owner = self.threads.owner(key)
        owner.post(lambda: self._projects.push(owner, user))

    async def set_model(self, key: ThreadKey, user: str, model: str | None) -> None:
        """`model <name>`: the model of the thread's next runs (None: the channel's again). The
        runs already queued use it too: a run reads it when it starts."""
        session = await self._store.get_session(*key)
        if session is None:
            await self.notices.say(key, "This thread is not a session yet: mention me with a task first "
                                        "(`--model <name>` before the task chooses the model).")
            return
        await self._store.set_thread_model(*key, model)
        await self.notices.say(key, f":gear: <@{user}> set the model of this thread's next answers to `{model}`."
                               if model else f":gear: <@{user}> set this thread back to the channel's model.")

    # -- what people see in /maison ---------------------------------------------------------------

    def describe(self, key: ThreadKey) -> str | None:
        """"running", "starting, 2 queued"…, or None when the thread is idle."""
        owner = self.threads.get(key)
        return owner.describe() if owner is not None else None

    def counts(self) -> dict[str, int]:
        owners = self.threads.all()
        return {"running": sum(1 for o in owners if o.run_id is not None), "queued": sum(o.waiting for o in owners)}

    def hold(self) -> None:
        """Shutting down: from now on, prompts are claimed (kept in SQLite) but not started; they
        run after the next start, as recovery finds them queued."""
        self._holding = True

    async def close(self) -> None:
        """Cancel every thread's job: a run in progress is marked interrupted, queued prompts
        stay queued in SQLite and run after the restart."""
        await self.threads.close()
        await self.notices.close()
        await self._attachments.close()

