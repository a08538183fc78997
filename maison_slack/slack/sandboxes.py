"""The bot's view of sandboxes: one per Slack thread, made and found through the Maison core."""

from __future__ import annotations

import logging

from daytona import AsyncDaytona, DaytonaConfig

from maison_slack.core.credentials import SandboxCredentials, SecretsUnavailableError, api_host
from maison_slack.core.errors import MaisonError
from maison_slack.core.maison import CLAUDE_CODE_VERSION, Maison, SandboxInfo
from maison_slack.core.snapshots import DEFAULT_SNAPSHOT, choose_snapshot
from maison_slack.core.sandbox import MaisonSandbox
from maison_slack.slack.config import Settings
from maison_slack.slack.owner import ThreadOwner
from maison_slack.slack.pool import POOL_LABEL, WarmPool
from maison_slack.storage import Session

logger = logging.getLogger(__name__)

THREAD_LABEL = "maison-thread"
INSTANCE_LABEL = "maison-instance"


def thread_label(channel: str, thread_ts: str) -> str:
    return f"{channel}-{thread_ts}"


def parse_thread_label(label: str | None) -> tuple[str, str] | None:
    """The thread a sandbox was made for, from its label (Slack ids and ts have no "-")."""
    channel, dash, thread_ts = (label or "").partition("-")
    return (channel, thread_ts) if dash and channel and thread_ts else None


class Sandboxes:
    """Creates, re-attaches, lists and deletes this bot's sandboxes, with one Daytona client."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._daytona = AsyncDaytona(DaytonaConfig(
            api_key=settings.daytona_api_key, api_url=settings.daytona_api_url, target=settings.daytona_target,
        ))
        self._labels = {INSTANCE_LABEL: settings.instance}
        self._credentials: SandboxCredentials | None = None
        self._snapshot = settings.snapshot or DEFAULT_SNAPSHOT
        self._version_told = False
        self.pool = WarmPool(settings.warm_pool, lambda: self._make({**self._labels, POOL_LABEL: "ready"}))

    @property
    def uses_secrets(self) -> bool:
        """New sandboxes get Claude Code's credentials as Daytona Secret placeholders only."""
        return self._credentials is not None

    async def prepare(self) -> None:
        """At startup: choose the snapshot (and say which Claude Code it brings), and store the
        credentials in Daytona Secrets (current values), unless `MAISON_KEY_IN_SANDBOX=env` asks
        for the plain key in each sandbox's environment.

        Raises `SecretsUnavailableError` (with what to do) when Secrets cannot be used and the
        fallback was not asked for: the bot must not quietly put the key where Claude can read it.
        """
        self._snapshot, pinned = await choose_snapshot(self._daytona, self._settings.snapshot)
        if pinned:
            logger.info("New sandboxes use snapshot %s: Claude Code %s", self._snapshot, CLAUDE_CODE_VERSION)
        elif self._settings.claude_version == "pinned":
            logger.info("New sandboxes use snapshot %s, with Claude Code %s installed where it has another "
                        "(MAISON_CLAUDE_VERSION=pinned)", self._snapshot, CLAUDE_CODE_VERSION)
        else:
            logger.info("New sandboxes use snapshot %s and the Claude Code it has (%s where it has none); "
                        "`maison-slack snapshot` builds one with Claude Code %s", self._snapshot, CLAUDE_CODE_VERSION,
                        CLAUDE_CODE_VERSION)
        if self._settings.key_in_sandbox == "env":
            logger.warning("MAISON_KEY_IN_SANDBOX=env: new sandboxes get the Anthropic key in their environment, "
                           "where any command Claude runs can read it")
            return
        try:
            self._credentials = await Maison.store_credentials(
                prefix=self._settings.instance, anthropic_api_key=self._settings.anthropic_api_key,
                base_url=self._settings.anthropic_base_url, daytona=self._daytona)
        except SecretsUnavailableError as exc:
            raise SecretsUnavailableError(
                f"{exc} To run anyway with the key in each sandbox's environment (readable by anything Claude "
                "runs there), set MAISON_KEY_IN_SANDBOX=env.") from exc
        logger.info("Claude Code's credentials are in Daytona Secrets %s, sent only to %s",
                    ", ".join(sorted(self._credentials.secrets.values())),
                    api_host(self._settings.anthropic_base_url))

    async def close(self) -> None:
        await self.pool.close()
        await self._daytona.close()

    async def start_pool(self) -> None:
        """Fill the warm pool from now on, taking back the ready members an earlier run left."""
        adopted = []
        if self.pool.size:
            try:
                for info in await self.list():
                    if info.labels.get(POOL_LABEL) and info.state == "started" and len(adopted) < self.pool.size:
                        adopted.append(await self.attach(info.id, None))
            except MaisonError as exc:  # the pool fills itself anyway; the sweep deletes the rest
                logger.warning("Could not take back the warm pool's sandboxes: %s", exc)
        self.pool.start(adopted)

    def labels_for(self, channel: str, thread_ts: str) -> dict[str, str]:
        """The labels of a thread's sandbox: this bot's, and which thread it serves."""
        return {**self._labels, THREAD_LABEL: thread_label(channel, thread_ts)}

    async def create(self, channel: str, thread_ts: str) -> MaisonSandbox:
        """A sandbox for the thread: a warm pool member if one is ready, else a new one."""
        labels = self.labels_for(channel, thread_ts)
        return await self.pool.take(labels) or await self._make(labels)

    async def _make(self, labels: dict[str, str]) -> MaisonSandbox:
        settings = self._settings
        extra_env = {"ANTHROPIC_BASE_URL": settings.anthropic_base_url} if settings.anthropic_base_url else {}
        # Daytona's own auto-stop/auto-delete are a safety net behind the bot's reaper.
        idle_minutes = max(1, int(settings.idle_timeout // 60) + 15)
        # With an allow-list, the Anthropic API host is always on it: Claude Code cannot work without.
        domains = [*settings.allowed_domains, api_host(settings.anthropic_base_url)] if settings.allowed_domains else None
        sandbox = await Maison.create_sandbox_for_claude(
            anthropic_api_key=settings.anthropic_api_key,
            credentials=self._credentials,
            domain_allow_list=domains,
            snapshot=self._snapshot,
            pin_claude_code=settings.claude_version == "pinned",
            labels=labels,
            env_vars=extra_env,
            auto_stop_interval=idle_minutes,
            # Minutes after a stop: the bot deletes at the end of `MAISON_RETENTION` itself.
            auto_delete_interval=int(settings.retention // 60) + 60,
            daytona=self._daytona,
            run_timeout=settings.run_timeout,
            model=settings.model,
        )
        if not self._version_told and not sandbox.claude_code_found.startswith(CLAUDE_CODE_VERSION):
            self._version_told = True  # once: every sandbox of this snapshot says the same
            logger.warning("Sandboxes run Claude Code %r, not %s (the version maison-slack is tested with); "
                           "MAISON_CLAUDE_VERSION=pinned installs %s in them", sandbox.claude_code_found,
                           CLAUDE_CODE_VERSION, CLAUDE_CODE_VERSION)
        return sandbox

    async def attach(self, sandbox_id: str, claude_session_id: str | None) -> MaisonSandbox:
        return await Maison.attach(
            sandbox_id, daytona=self._daytona, claude_session_id=claude_session_id,
            run_timeout=self._settings.run_timeout, model=self._settings.model,
        )

    async def attach_thread(self, session: Session) -> MaisonSandbox:
        """The thread's sandbox (started if it was stopped), with its conversation and project."""
        assert session.sandbox_id is not None
        sandbox = await self.attach(session.sandbox_id, session.claude_session_id)
        sandbox.project = session.project
        return sandbox

    async def of_thread(self, owner: ThreadOwner, session: Session | None) -> MaisonSandbox | None:
        """The thread's sandbox for a job between runs: the owner's, or re-attached from its
        session (and started if it was stopped); None if the thread has none."""
        if owner.sandbox is None:
            if session is None or session.sandbox_id is None:
                return None
            owner.sandbox = await self.attach_thread(session)
        return owner.sandbox

    async def stop(self, sandbox_id: str) -> bool:
        return await Maison.stop_sandbox(sandbox_id, daytona=self._daytona)

    async def delete(self, sandbox_id: str) -> bool:
        return await Maison.delete_sandbox(sandbox_id, daytona=self._daytona)

    async def list(self) -> list[SandboxInfo]:
        return await Maison.list_sandboxes(self._labels, daytona=self._daytona)
