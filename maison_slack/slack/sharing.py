"""What a thread gets out of its sandbox: files (`file`), links to a running server (`preview`)
and a copy of the whole thread to try another direction (`fork`).

Each is a job of the thread's owner (`owner.py`), so it runs after the run that made what it
shares; every failure is said in the thread.
"""

from __future__ import annotations

import contextlib
import logging
import time

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError, NotARegularFileError
from maison_slack.core.sandbox import MaisonSandbox
from maison_slack.slack.config import Settings
from maison_slack.slack.notices import Notices, duration
from maison_slack.slack.owner import ThreadKey, ThreadOwner, Threads
from maison_slack.slack.projects import Projects
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.storage import Store

logger = logging.getLogger(__name__)


class Sharing:
    def __init__(self, *, settings: Settings, store: Store, client: AsyncWebClient, sandboxes: Sandboxes,
                 notices: Notices, projects: Projects) -> None:
        self._settings = settings
        self._projects = projects
        self._store = store
        self._client = client
        self._sandboxes = sandboxes
        self._notices = notices

    async def send_file(self, owner: ThreadOwner, path: str) -> None:
        """`file <path>`: the file, redacted, uploaded into the thread; every failure said there."""
        key, limit = owner.key, self._settings.max_file_mb * 1024 * 1024
        try:
            sandbox = await self._sandbox(owner)
            if sandbox is None:
                await self._notices.say(key, "This thread has no sandbox yet, so there is no file to fetch.")
                return
            size = await sandbox.file_size(path)
            if size > limit:  # never read hundreds of MB into memory to find out Slack refuses them
                await self._notices.say(key, f"`{path}` is {size / 1024 / 1024:.1f} MB; `file` posts files up to "
                                            f"{self._settings.max_file_mb} MB (MAISON_MAX_FILE_MB).")
                return
            data = await sandbox.read_bytes(path)
        except IsADirectoryError:
            await self._notices.say(key, f"`{path}` is a directory; `file` posts one file.")
            return
        except NotARegularFileError:
            await self._notices.say(key, f"`{path}` is a link or a device, not a regular file; `file` posts regular "
                                        "files (ask for the file a link points to).")
            return
        except FileNotFoundError:
            await self._notices.say(key, f"There is no file `{path}` in the sandbox.")
            return
        except MaisonError as exc:
            await self._notices.say(key, f":warning: Could not read `{path}`: {exc}")
            return
        name = path.rstrip("/").rsplit("/", 1)[-1] or "file"
        await self._notices.upload(key, data, name, f"`{path}` from the sandbox", what=f"`{path}`")

    async def _sandbox(self, owner: ThreadOwner) -> MaisonSandbox | None:
        return await self._sandboxes.of_thread(owner, await self._store.get_session(*owner.key))

    async def preview(self, owner: ThreadOwner, port: int) -> None:
        """`preview <port>`: a signed link to what listens on `port`, or why there is none."""
        key = owner.key
        try:
            sandbox = await self._sandbox(owner)
            if sandbox is None:
                await self._notices.say(key, "This thread has no sandbox yet, so there is nothing to preview.")
                return
            if not await sandbox.listening(port):
                await self._notices.say(key, f"Nothing listens on port {port} in the sandbox. Ask Claude to start "
                                             f"the server (in the background), then send `preview {port}` again.")
                return
            url = await sandbox.preview_url(port, self._settings.preview_seconds)
        except MaisonError as exc:
            await self._notices.say(key, f":warning: Could not make a preview link for port {port}: {exc}")
            return
        seconds = self._settings.preview_seconds
        until = time.strftime("%H:%M UTC", time.gmtime(time.time() + seconds))
        await self._notices.say(key, f":link: <{url}|Preview of port {port}> — the link works until {until} "
                                     f"({duration(seconds)}); anyone who has it can open the page.")

    async def fork(self, owner: ThreadOwner, user: str, threads: Threads) -> None:
        """`fork`: a new thread in the channel with a copy of this one's sandbox (files) and of
        Claude's conversation; both go on independently from here."""
        channel, thread_ts = key = owner.key
        try:
            sandbox = await self._sandbox(owner)
            if sandbox is None:
                await self._notices.say(key, "This thread has no sandbox yet: there is nothing to fork.")
                return
            copy = await sandbox.fork()
        except MaisonError as exc:
            await self._notices.say(key, f":warning: Daytona could not fork this thread's sandbox: {exc}")
            return
        new_key: ThreadKey | None = None
        try:
            source = (await self._client.chat_getPermalink(channel=channel, message_ts=thread_ts))["permalink"]
            parent = await self._client.chat_postMessage(channel=channel, text=(
                f":fork_and_knife: <@{user}> forked <{source}|a thread> here: this thread has a copy of its "
                "sandbox and conversation. Reply here to go on in the copy; the original is unchanged."))
            new_key = (channel, parent["ts"])
            await self._store.fork_session(key, new_key, copy.id, user)
            await self._projects.fork(copy, new_key)
            await copy.set_labels(self._sandboxes.labels_for(*new_key))
            threads.owner(new_key).sandbox = copy
            link = (await self._client.chat_getPermalink(channel=channel, message_ts=parent["ts"]))["permalink"]
        except (SlackApiError, MaisonError) as exc:
            logger.warning("Fork of %s failed after the sandbox was copied: %s", key, exc)
            await self._notices.say(key, f":warning: The fork could not be set up: {exc}")
            if new_key is None or await self._store.get_session(*new_key) is None:
                with contextlib.suppress(MaisonError):
                    await self._sandboxes.delete(copy.id)  # no thread points at it
            return
        await self._notices.say(key, f":fork_and_knife: <@{user}> forked this thread: <{link}|the copy>.")
