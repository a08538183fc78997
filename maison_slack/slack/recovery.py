"""After a restart, even after a SIGKILL: end what was cut off and run what was waiting.

SQLite says what was in flight, because a run's row is written before each of its side effects
(`storage.claim_prompt`, then "running" before the placeholder is posted).
"""

from __future__ import annotations

import logging

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core.errors import MaisonError
from maison_slack.slack.conversations import Conversations
from maison_slack.slack.budget import Budgets
from maison_slack.slack.sandboxes import Sandboxes
from maison_slack.storage import INTERRUPTED, QUEUED, RUNNING, Run, Store

logger = logging.getLogger(__name__)

INTERRUPTED_NOTICE = (":warning: Interrupted: the bot restarted before this run finished. "
                      "Send your message again to retry.")


class Recovery:
    def __init__(self, *, store: Store, client: AsyncWebClient, sandboxes: Sandboxes, conversations: Conversations,
                 budgets: Budgets) -> None:
        self._store = store
        self._client = client
        self._sandboxes = sandboxes
        self._conversations = conversations
        self._budgets = budgets

    async def recover(self) -> None:
        """Runs that were running: kill what is left of them in the sandbox (so a follow-up never
        runs beside it), keep their partial answer, add the notice, mark them interrupted.
        Prompts claimed but never started: queue them again, in their original order."""
        for run in await self._store.live_runs():  # in id order: a thread's running run comes first
            if run.state == RUNNING:
                await self._interrupt(run)
            elif run.state == QUEUED and run.prompt is not None:
                self._conversations.resume(run)
            elif run.state == QUEUED:  # claimed by a version that did not keep prompts
                await self._store.finish_run(run.id, INTERRUPTED, error="the bot restarted")
                await self._say(run, f"<@{run.user_id}>, the bot restarted before your message could run, "
                                     "and it was not kept. Please send it again.")

    async def _interrupt(self, run: Run) -> None:
        await self._kill_left_behind(run)
        try:
            if not (run.reply_ts and await self._close_reply(run)):
                await self._say(run, INTERRUPTED_NOTICE)
        except SlackApiError as exc:
            logger.warning("Could not mark run %s as interrupted in Slack: %s", run.id, exc)
        await self._store.finish_run(run.id, INTERRUPTED, error="the bot restarted")

    async def _kill_left_behind(self, run: Run) -> None:
        session = await self._store.get_session(run.channel, run.thread_ts)
        if session is None or session.sandbox_id is None:
            return
        try:
            sandbox = await self._sandboxes.attach(session.sandbox_id, session.claude_session_id)
            killed = await sandbox.kill_stale_runs()
        except MaisonError as exc:
            logger.warning("Could not check sandbox %s for runs left behind: %s", session.sandbox_id, exc)
            return
        if killed:
            logger.info("Killed %d Claude run(s) left behind in sandbox %s", killed, sandbox.id)

    async def _close_reply(self, run: Run) -> bool:
        """Remove the run's Stop button from whichever message of its reply holds it, and add the
        notice there, keeping the text. False if that message cannot be found."""
        response = await self._client.conversations_replies(
            channel=run.channel, ts=run.thread_ts, oldest=run.reply_ts, inclusive=True, limit=100)
        controls = f"maison_controls_{run.id}"
        for message in response.get("messages") or []:
            blocks = message.get("blocks") or []
            if not any(b.get("block_id") == controls for b in blocks):
                continue
            kept = [b for b in blocks if b.get("block_id") != controls and b.get("type") != "context"]
            kept.append({"type": "context", "elements": [{"type": "mrkdwn", "text": INTERRUPTED_NOTICE}]})
            await self._budgets["chat.update"].acquire()
            await self._client.chat_update(channel=run.channel, ts=message["ts"],
                                           text=message.get("text") or INTERRUPTED_NOTICE, blocks=kept)
            return True
        # A streamed reply (no Stop button of ours): end its stream with the notice under it,
        # rather than leave it streaming until Slack expires it (../shared/reference/slack.md §13.1).
        try:
            await self._client.chat_stopStream(channel=run.channel, ts=run.reply_ts, blocks=[
                {"type": "context", "elements": [{"type": "mrkdwn", "text": INTERRUPTED_NOTICE}]}])
        except SlackApiError:
            return False  # not a live stream any more: the notice goes into the thread
        return True

    async def _say(self, run: Run, text: str) -> None:
        try:
            await self._conversations.notices.say((run.channel, run.thread_ts), text)
        except SlackApiError as exc:
            logger.warning("Could not post in thread %s/%s: %s", run.channel, run.thread_ts, exc)
