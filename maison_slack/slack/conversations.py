"""Threads as shared Claude Code conversations.

Each Slack thread with a session has one sandbox and one Claude conversation. Everything that
uses a thread's sandbox runs through the thread's job queue, one job at a time, so two runs
never execute at once in one sandbox and queued prompts run in the order they arrived.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackRequestError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError, SandboxGoneError, SandboxStoppedError
from maison_slack.core.events import StreamEvent
from maison_slack.core.sandbox import MaisonSandbox
from maison_slack.slack.config import Settings
from maison_slack.core.summary import run_stats
from maison_slack.slack.markup import tool_status
from maison_slack.slack.redact import Redactor
from maison_slack.slack.reply import EditBudget, LiveReply
from maison_slack.slack.sandboxes import Sandboxes, thread_label
from maison_slack.storage import DONE, FAILED, INTERRUPTED, RUNNING, STOPPED, Run, Store

logger = logging.getLogger(__name__)

QUEUED_REACTION = "hourglass_flowing_sand"
ACK_REACTION = "eyes"
MAX_ATTACHMENT_BYTES = 50 * 1024 * 1024
TOO_BIG_ATTACHMENT = f"it is over the {MAX_ATTACHMENT_BYTES // (1024 * 1024)} MB limit for attachments"

NOTES = {
    "reaped": "This thread's sandbox was deleted after being idle, so this is a fresh one: earlier context is gone.",
    "gone": "This thread's sandbox no longer exists (it was deleted outside the bot), so this is a fresh one: "
            "earlier context is gone.",
}

Job = Callable[[], Awaitable[None]]
ThreadKey = tuple[str, str]


@dataclass
class Prompt:
    """A message from a person that Claude should answer."""

    channel: str
    thread_ts: str
    user: str
    text: str
    message_ts: str
    files: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _Thread:
    """What the bot holds in memory about a thread while it is in use."""

    queue: asyncio.Queue[Job] = field(default_factory=asyncio.Queue)
    worker: asyncio.Task[None] | None = None
    sandbox: MaisonSandbox | None = None
    run_id: int | None = None
    queued: int = 0
    stopped_by: str | None = None


class UserNames:
    """Display names for attribution, from `users.info`, cached."""

    def __init__(self, client: AsyncWebClient) -> None:
        self._client = client
        self._names: dict[str, str] = {}

    async def name(self, user_id: str) -> str:
        if user_id not in self._names:
            try:
                user = (await self._client.users_info(user=user_id))["user"]
                profile = user.get("profile") or {}
                self._names[user_id] = profile.get("display_name") or user.get("real_name") or user.get("name") or user_id
            except SlackApiError as exc:
                logger.warning("users.info %s failed: %s", user_id, exc)
                return user_id
        return self._names[user_id]

    def known(self) -> dict[str, str]:
        return dict(self._names)


async def _complete(work: Awaitable[None]) -> None:
    """Await `work` to its end even if cancelled meanwhile (shutdown): the database closes after."""
    task = asyncio.ensure_future(work)
    try:
        await asyncio.shield(task)
    except asyncio.CancelledError:
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.shield(task)
        raise


def describe_error(exc: BaseException) -> str:
    if isinstance(exc, MaisonError):
        return str(exc)
    return f"Something went wrong inside maison-slack ({type(exc).__name__}: {exc})."


class Conversations:
    """Runs prompts in their thread's sandbox and streams the answers into Slack."""

    def __init__(self, *, settings: Settings, store: Store, client: AsyncWebClient, sandboxes: Sandboxes,
                 users: UserNames, budget: EditBudget) -> None:
        self._settings = settings
        self._store = store
        self._client = client
        self._sandboxes = sandboxes
        self._users = users
        self._budget = budget
        self._redactor = Redactor(settings.secrets())
        self._threads: dict[ThreadKey, _Thread] = {}
        self._creating: set[str] = set()
        self._tasks: set[asyncio.Future[None]] = set()
        self._http: aiohttp.ClientSession | None = None

    # -- what the listeners call -------------------------------------------------------------

    async def submit(self, prompt: Prompt) -> bool:
        """Queue a prompt in its thread; it runs after whatever the thread is already doing.

        The prompt's place is fixed here, before any Slack call: the rows are written and the
        job queued first, and the reactions (👀, or ⏳ when it waits) are sent afterwards in
        the background, so a slow or rate-limited `reactions.add` can never reorder prompts.
        Returns False (and says so in the thread) when the thread's queue is full.
        """
        key = (prompt.channel, prompt.thread_ts)
        await self._store.create_session(prompt.channel, prompt.thread_ts, prompt.user)
        thread = self._threads.setdefault(key, _Thread())
        if thread.queued >= self._settings.max_queued:
            self._background(self._say(key, f"<@{prompt.user}>, {thread.queued} messages are already waiting in "
                                            "this thread, so I did not queue this one. Send it again once the "
                                            f"queue is shorter (the limit is {self._settings.max_queued})."))
            return False
        thread.queued += 1  # counted before the awaits below, so a burst cannot overshoot the limit
        await self._store.add_participant(prompt.channel, prompt.thread_ts, prompt.user)
        run_id = await self._store.add_run(prompt.channel, prompt.thread_ts, prompt.user, prompt.message_ts)
        waits = thread.run_id is not None or thread.queued > 1
        self._enqueue(key, lambda: self._run(key, run_id, prompt, waited=waits))
        self._background(self._react(prompt.channel, prompt.message_ts, QUEUED_REACTION if waits else ACK_REACTION))
        return True

    def _background(self, work: Awaitable[None]) -> None:
        """Slack calls nobody waits for (reactions, notices): owned, logged, cancelled at close."""
        task = asyncio.ensure_future(work)
        self._tasks.add(task)

        def done(finished: asyncio.Future[None]) -> None:
            self._tasks.discard(task)
            if not finished.cancelled() and finished.exception() is not None:
                logger.warning("A background Slack call failed: %s", finished.exception())

        task.add_done_callback(done)

    def busy(self, key: ThreadKey) -> bool:
        thread = self._threads.get(key)
        return thread is not None and (thread.run_id is not None or thread.queued > 0)

    async def stop(self, key: ThreadKey, user: str) -> bool:
        """Stop the thread's running Claude process; queued prompts still run."""
        thread = self._threads.get(key)
        if thread is None or thread.run_id is None:
            return False
        thread.stopped_by = user
        if thread.sandbox is not None:
            await thread.sandbox.cancel(f"stopped by {user}")
        return True

    async def stop_run(self, run_id: int, user: str) -> bool:
        for key, thread in self._threads.items():
            if thread.run_id == run_id:
                return await self.stop(key, user)
        return False

    async def reset(self, key: ThreadKey, user: str) -> None:
        """Delete the thread's sandbox (after stopping its run); the next message starts fresh."""
        await self.stop(key, user)
        self._enqueue(key, lambda: self._reset(key, user))

    async def send_file(self, key: ThreadKey, path: str) -> None:
        """Upload a file from the thread's sandbox into the thread; every failure is said there."""
        channel, thread_ts = key
        limit = self._settings.max_file_mb * 1024 * 1024
        try:
            sandbox = await self._sandbox_if_any(key)
            if sandbox is None:
                await self._say(key, "This thread has no sandbox yet, so there is no file to fetch.")
                return
            size = await sandbox.file_size(path)
            if size > limit:  # never read hundreds of MB into memory to find out Slack refuses them
                await self._say(key, f"`{path}` is {size / 1024 / 1024:.1f} MB; `file` posts files up to "
                                     f"{self._settings.max_file_mb} MB (MAISON_MAX_FILE_MB).")
                return
            data = await sandbox.read_bytes(path)
        except IsADirectoryError:
            await self._say(key, f"`{path}` is a directory; `file` posts one file.")
            return
        except FileNotFoundError:
            await self._say(key, f"There is no file `{path}` in the sandbox.")
            return
        except MaisonError as exc:
            await self._say(key, f":warning: Could not read `{path}`: {exc}")
            return
        data = self._redactor.redact_bytes(data)
        name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
        try:
            await self._client.files_upload_v2(channel=channel, thread_ts=thread_ts, content=data, filename=name,
                                               title=name, initial_comment=f"`{path}` from the sandbox")
        except SlackApiError as exc:
            await self._say(key, f":warning: Could not upload `{path}` to Slack: {exc.response.get('error')}")
        except (SlackRequestError, aiohttp.ClientError, asyncio.TimeoutError) as exc:  # e.g. a 413 on the upload
            logger.warning("Upload of %s failed: %s", path, exc)
            await self._say(key, f":warning: Slack did not accept `{path}` ({len(data) / 1024 / 1024:.1f} MB): "
                                 "the upload failed.")

    def describe(self, key: ThreadKey) -> str | None:
        """"running", "running, 2 queued"…, or None when the thread is idle."""
        thread = self._threads.get(key)
        if thread is None or not self.busy(key):
            return None
        parts = ["running"] if thread.run_id is not None else []
        if thread.queued:
            parts.append(f"{thread.queued} queued")
        return ", ".join(parts)

    def counts(self) -> dict[str, int]:
        running = sum(1 for t in self._threads.values() if t.run_id is not None)
        queued = sum(t.queued for t in self._threads.values())
        return {"running": running, "queued": queued}

    def forget_sandbox(self, key: ThreadKey) -> None:
        """The sandbox was deleted elsewhere (the reaper): attach or create anew next time."""
        thread = self._threads.get(key)
        if thread is not None:
            thread.sandbox = None

    def creating_labels(self) -> set[str]:
        """Thread labels of sandboxes being created right now (not yet in SQLite)."""
        return set(self._creating)

    async def recover_interrupted(self) -> None:
        """After a restart (even a SIGKILL): end the runs that were cut off, where people see them.

        Claude may still be running in the sandbox (nothing killed it): kill it first, so a
        follow-up never runs beside it. The partial answer stays in Slack: only the Stop
        button goes, and the notice is added below it.
        """
        notice = ":warning: Interrupted: the bot restarted before this run finished. Send your message again to retry."
        for run in await self._store.live_runs():
            if run.state == RUNNING:
                await self._kill_left_behind(run.channel, run.thread_ts)
            try:
                if not (run.reply_ts and await self._close_reply(run, notice)):
                    await self._say((run.channel, run.thread_ts), notice)
            except SlackApiError as exc:
                logger.warning("Could not mark run %s as interrupted in Slack: %s", run.id, exc)
            await self._store.finish_run(run.id, INTERRUPTED, error="the bot restarted")

    async def _kill_left_behind(self, channel: str, thread_ts: str) -> None:
        session = await self._store.get_session(channel, thread_ts)
        if session is None or session.sandbox_id is None:
            return
        try:
            sandbox = await self._sandboxes.attach(session.sandbox_id, session.claude_session_id)
            killed = await sandbox.kill_stale_runs()
        except MaisonError as exc:
            logger.warning("Could not check sandbox %s for runs left behind: %s", session.sandbox_id, exc)
            return
        self._threads.setdefault((channel, thread_ts), _Thread()).sandbox = sandbox
        if killed:
            logger.info("Killed %d Claude run(s) left behind in sandbox %s", killed, sandbox.id)

    async def _close_reply(self, run: Run, notice: str) -> bool:
        """Remove the run's Stop button from whichever message of its reply holds it, and add
        `notice` there, keeping the text. False if that message cannot be found."""
        response = await self._client.conversations_replies(
            channel=run.channel, ts=run.thread_ts, oldest=run.reply_ts, inclusive=True, limit=100)
        controls = f"maison_controls_{run.id}"
        for message in response.get("messages") or []:
            blocks = message.get("blocks") or []
            if not any(b.get("block_id") == controls for b in blocks):
                continue
            kept = [b for b in blocks if b.get("block_id") != controls and b.get("type") != "context"]
            kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": notice}]})
            await self._budget.acquire()
            await self._client.chat_update(channel=run.channel, ts=message["ts"], text=message.get("text") or notice,
                                           blocks=kept)
            return True
        return False

    async def close(self) -> None:
        """Cancel every worker; their runs are killed and marked interrupted."""
        workers = [t.worker for t in self._threads.values() if t.worker is not None and not t.worker.done()]
        for worker in workers:
            worker.cancel()
        for worker in workers:
            with contextlib.suppress(asyncio.CancelledError):
                await worker
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._http is not None:
            await self._http.close()

    # -- the thread's job queue --------------------------------------------------------------

    def _enqueue(self, key: ThreadKey, job: Job) -> None:
        thread = self._threads.setdefault(key, _Thread())
        thread.queue.put_nowait(job)
        if thread.worker is None or thread.worker.done():
            thread.worker = asyncio.create_task(self._work(key, thread), name=f"thread-{key[0]}-{key[1]}")

    async def _work(self, key: ThreadKey, thread: _Thread) -> None:
        while not thread.queue.empty():
            job = thread.queue.get_nowait()
            try:
                await job()
            except asyncio.CancelledError:
                raise
            except Exception:  # a job reports its own failures; this is a bug, keep serving
                logger.exception("A job of thread %s failed", key)

    # -- one run -----------------------------------------------------------------------------

    async def _run(self, key: ThreadKey, run_id: int, prompt: Prompt, *, waited: bool = False) -> None:
        thread = self._threads[key]
        thread.queued -= 1
        thread.run_id, thread.stopped_by = run_id, None
        reply = LiveReply(self._client, prompt.channel, prompt.thread_ts, run_id=run_id, budget=self._budget,
                          redactor=self._redactor, min_interval=self._settings.edit_interval)
        state, error, usage = FAILED, None, {}
        try:
            if waited:  # reactions.remove is a tier 2 method: no call for nothing
                self._background(self._unreact(prompt.channel, prompt.message_ts, QUEUED_REACTION))
            # The row says "running" before the first side effect, so after a crash at any
            # point the database says what was in flight (recovery then tells the thread).
            await self._store.start_run(run_id, "")
            await reply.start("Starting…")
            await self._store.start_run(run_id, reply.ts or "")
            sandbox = await self._sandbox_for(key, reply)
            text = await self._prompt_text(prompt, sandbox, run_id)
            if thread.stopped_by:  # stopped while the sandbox was being prepared
                state = STOPPED
                await reply.finish(f":octagonal_sign: Stopped by <@{thread.stopped_by}>")
                return
            reply.set_status("Thinking…")
            result = await self._stream(sandbox, text, reply)
            if sandbox.claude_session_id:
                await self._store.set_claude_session(prompt.channel, prompt.thread_ts, sandbox.claude_session_id)
            state, error, usage = await self._conclude(reply, result, thread.stopped_by)
        except asyncio.CancelledError:
            state, error = INTERRUPTED, "the bot is shutting down"
            await asyncio.shield(reply.finish("", error="Interrupted: the bot is shutting down. Send your message again later."))
            raise
        except (MaisonError, SlackApiError, aiohttp.ClientError, OSError) as exc:
            if isinstance(exc, (SandboxGoneError, SandboxStoppedError)):
                thread.sandbox = None  # attach (and start) it again next time
            error = f"Slack error: {exc.response.get('error')}" if isinstance(exc, SlackApiError) else describe_error(exc)
            logger.warning("Run %s failed: %s", run_id, error)
            await reply.finish("", error=error)
        except Exception as exc:
            logger.exception("Run %s crashed", run_id)
            error = describe_error(exc)
            await reply.finish("", error=error)
        finally:
            thread.run_id = None

            async def record_end() -> None:
                await self._store.finish_run(run_id, state, error=error, **usage)
                await self._store.touch(prompt.channel, prompt.thread_ts)

            await _complete(record_end())

    async def _stream(self, sandbox: MaisonSandbox, text: str, reply: LiveReply) -> StreamEvent | None:
        result: StreamEvent | None = None
        events = sandbox.stream(text, instructions=self._settings.instructions,
                                continue_conversation=sandbox.claude_session_id is not None)
        try:
            async for event in events:
                if event.type == "text":
                    reply.append(event.content)
                    reply.set_status("Writing…")
                elif event.type in ("thinking", "tool_result"):
                    reply.set_status("Thinking…")
                elif event.type == "tool_use":
                    reply.set_status(tool_status(event.content, event.data.get("input") or {}))
                elif event.type == "result":
                    result = event
        finally:
            await events.aclose()
        return result

    async def _conclude(self, reply: LiveReply, result: StreamEvent | None,
                        stopped_by: str | None) -> tuple[str, str | None, dict[str, Any]]:
        """Write the final state of the reply; returns (run state, error, usage for SQLite)."""
        if result is None:
            await reply.finish("", error="Claude Code ended without a result.")
            return FAILED, "no result", {}
        data = result.data
        usage = {"cost_usd": data.get("total_cost_usd"), "duration_ms": data.get("duration_ms"),
                 "num_turns": data.get("num_turns")}
        stats = run_stats(usage["duration_ms"], usage["num_turns"], usage["cost_usd"])
        if data.get("subtype") == "cancelled":
            who = f" by <@{stopped_by}>" if stopped_by else ""
            await reply.finish(" · ".join(filter(None, [f":octagonal_sign: Stopped{who}", stats])))
            return STOPPED, None, usage
        if result.is_error:
            detail = result.content or data.get("subtype")
            reply.withdraw(result.content)  # Claude Code also prints API errors as its answer
            error = f"Claude Code reported an error: {detail}"
            await reply.finish(stats, error=error)
            return FAILED, error, usage
        await reply.finish(":white_check_mark: " + stats if stats else ":white_check_mark: Done")
        return DONE, None, usage

    async def _sandbox_if_any(self, key: ThreadKey) -> MaisonSandbox | None:
        thread = self._threads.setdefault(key, _Thread())
        if thread.sandbox is None:
            session = await self._store.get_session(*key)
            if session is None or session.sandbox_id is None:
                return None
            thread.sandbox = await self._sandboxes.attach(session.sandbox_id, session.claude_session_id)
        return thread.sandbox

    async def _sandbox_for(self, key: ThreadKey, reply: LiveReply) -> MaisonSandbox:
        """The thread's sandbox: the one in memory, re-attached from SQLite, or a new one."""
        thread = self._threads[key]
        if thread.sandbox is not None:
            # Daytona may have auto-stopped it, or someone deleted it, since the last run.
            with contextlib.suppress(SandboxGoneError):
                if await thread.sandbox.refresh_state() == "started":
                    return thread.sandbox
            thread.sandbox = None
        session = await self._store.get_session(*key)
        assert session is not None
        note = NOTES.get(session.context_note or "")
        if session.sandbox_id:
            reply.set_status("Waking up the sandbox…")
            try:
                thread.sandbox = await self._sandboxes.attach(session.sandbox_id, session.claude_session_id)
                return thread.sandbox
            except SandboxGoneError:
                note = NOTES["gone"]
        reply.set_status("Creating a sandbox…")
        label = thread_label(*key)
        self._creating.add(label)
        try:
            sandbox = await self._sandboxes.create(*key)
            await self._store.set_sandbox(*key, sandbox.id)
        finally:
            self._creating.discard(label)
        if note:
            reply.notice(note)
        thread.sandbox = sandbox
        return sandbox

    async def _prompt_text(self, prompt: Prompt, sandbox: MaisonSandbox, run_id: int) -> str:
        """The prompt as Claude sees it: who is asking (in shared threads) and attached files."""
        text = prompt.text
        session = await self._store.get_session(prompt.channel, prompt.thread_ts)
        if session is not None and len(session.participants) > 1:
            text = f"Message from {await self._users.name(prompt.user)} (<@{prompt.user}>):\n{text}"
            # Messages from the time one person was alone here were sent without a name.
            starter = session.participants[0]
            earlier = [r for r in await self._store.runs(prompt.channel, prompt.thread_ts) if r.id < run_id]
            if earlier and all(r.user_id == starter for r in earlier):
                text = (f"(Until now only {await self._users.name(starter)} (<@{starter}>) "
                        f"wrote in this thread.)\n{text}")
        paths: list[str] = []
        for file in prompt.files:
            try:
                paths.append(await self._copy_attachment(file, sandbox, taken=paths))
            except Exception as exc:  # one bad file must not cost the whole prompt
                name = file.get("name") or file.get("id") or "a file"
                reason = str(exc) if isinstance(exc, (ValueError, MaisonError)) else f"download failed ({exc})"
                logger.warning("Could not copy attachment %s: %s", name, reason)
                text += f"\n\n(The attached file {name!r} could not be copied into the sandbox: {reason}.)"
                self._background(self._say((prompt.channel, prompt.thread_ts),
                                           f":warning: Could not copy `{name}` into the sandbox: {reason}. "
                                           "Claude goes on without it."))
        if paths:
            text += "\n\nAttached files, copied into the sandbox: " + ", ".join(paths)
        return text

    async def _copy_attachment(self, file: dict[str, Any], sandbox: MaisonSandbox, *, taken: list[str]) -> str:
        """Copy one attachment into `uploads/`, keeping its name (any script) and never
        overwriting another file of the same prompt with the same name."""
        url = file.get("url_private_download") or file.get("url_private")
        if not url:
            raise ValueError("Slack gave no download link for it")
        if (file.get("size") or 0) > MAX_ATTACHMENT_BYTES:
            raise ValueError(TOO_BIG_ATTACHMENT)
        name = re.sub(r"[^\w.() +-]+", "_", file.get("name") or "").strip("._ ")[:120] or file.get("id") or "file"
        path = f"uploads/{name}"
        if path in taken:
            stem, dot, suffix = name.rpartition(".")
            path = f"uploads/{stem}-{file.get('id')}.{suffix}" if dot and stem else f"uploads/{name}-{file.get('id')}"
        if self._http is None:  # one session for every download, with timeouts
            self._http = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=300, sock_connect=10, sock_read=60))
        headers = {"Authorization": f"Bearer {self._settings.slack_bot_token}"}
        data = bytearray()
        async with self._http.get(url, headers=headers) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_chunked(1 << 16):  # capped: never more than the limit
                data += chunk
                if len(data) > MAX_ATTACHMENT_BYTES:
                    raise ValueError(TOO_BIG_ATTACHMENT)
        await sandbox.write_file(path, bytes(data))
        return path

    async def _reset(self, key: ThreadKey, user: str) -> None:
        thread = self._threads[key]
        session = await self._store.get_session(*key)
        if session is None or session.sandbox_id is None:
            await self._say(key, "This thread has no sandbox to reset.")
            return
        try:
            await self._sandboxes.delete(session.sandbox_id)
        except MaisonError as exc:
            await self._say(key, f":warning: Could not delete the sandbox: {exc}")
            return
        thread.sandbox = None
        await self._store.set_sandbox(*key, None)
        await self._say(key, f":broom: <@{user}> reset this thread: its sandbox is deleted and the next message "
                             "starts a fresh one.")

    # -- small Slack helpers -------------------------------------------------------------------

    async def _say(self, key: ThreadKey, text: str) -> None:
        await self._client.chat_postMessage(channel=key[0], thread_ts=key[1], text=self._redactor.redact(text))

    async def _react(self, channel: str, ts: str, name: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self._client.reactions_add(channel=channel, timestamp=ts, name=name)

    async def _unreact(self, channel: str, ts: str, name: str) -> None:
        with contextlib.suppress(SlackApiError):
            await self._client.reactions_remove(channel=channel, timestamp=ts, name=name)
