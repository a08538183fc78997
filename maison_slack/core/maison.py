"""`Maison`: create (or re-attach to) a Daytona sandbox that runs Claude Code."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig, DaytonaError, ListSandboxesQuery

from maison_slack.core.credentials import (
    CREDENTIAL_NAMES,
    CUSTOM_HEADERS,
    SandboxCredentials,
    api_host,
    store_credentials,
)
from maison_slack.core.daytona_calls import call, translate
from maison_slack.core.errors import InstallError, MaisonError, SandboxGoneError
from maison_slack.core.sandbox import MaisonSandbox

logger = logging.getLogger(__name__)

#: The Claude Code version installed into sandboxes that lack it (exact: see README).
CLAUDE_CODE_VERSION = "2.1.332"

#: Label that marks a sandbox as created by maison-slack (the reaper looks for it).
APP_LABEL = ("app", "maison-slack")

#: Host variables forwarded into new sandboxes when set (Claude Code's own configuration).
FORWARDED_ENV_PREFIXES = ("ANTHROPIC_", "CLAUDE_CODE_")
FORWARDED_ENV_NAMES = ("API_TIMEOUT_MS", "MAX_THINKING_TOKENS", "DISABLE_TELEMETRY", "DISABLE_AUTOUPDATER")

#: Always set: bypass-permissions is refused as root without IS_SANDBOX=1.
SANDBOX_ENV = {"IS_SANDBOX": "1", "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1"}

#: Installs into a prefix under $HOME (no sudo, nothing global); runs put its bin dir on PATH.
INSTALL_SCRIPT = (
    "export PATH=\"$HOME/.maison/npm/bin:$PATH\"; "
    "if command -v claude >/dev/null 2>&1; then "
    "  found=$(claude --version 2>/dev/null | head -n 1); "
    "  case \"$found\" in \"{version} \"*|\"{version}\") echo \"$found\"; exit 0;; esac; "
    "  if [ \"{pin}\" != 1 ]; then echo \"$found\"; exit 0; fi; "
    "  echo \"Claude Code $found is not {version}\"; "
    "fi; "
    "if ! command -v npm >/dev/null 2>&1; then "
    "  echo 'Installing Node.js'; "
    "  (curl -fsSL https://deb.nodesource.com/setup_22.x | sudo -E bash - && sudo apt-get install -y nodejs) 2>&1 "
    "  || exit 1; "
    "fi; "
    "echo 'Installing Claude Code {version}'; "
    "npm install -g --prefix \"$HOME/.maison/npm\" --no-audit --no-fund @anthropic-ai/claude-code@{version} 2>&1 "
    "|| exit 1; "
    "claude --version"
)

ProgressCallback = Callable[[str], None]


def sandbox_env(api_key: str | None, extra: Mapping[str, str] | None = None, *,
                credentials: SandboxCredentials | None = None) -> dict[str, str]:
    """The environment a new sandbox gets: Claude Code settings from this host, the key, extras.

    With `credentials`, no credential is copied from this host: they reach the sandbox only as
    Secret placeholders (`credentials.secrets`, set by Daytona) and placeholder-holding lines.
    """
    held_back = (*CREDENTIAL_NAMES, CUSTOM_HEADERS) if credentials is not None else ()
    env = {
        name: value
        for name, value in os.environ.items()
        if value and (name.startswith(FORWARDED_ENV_PREFIXES) or name in FORWARDED_ENV_NAMES)
        and name not in held_back
    }
    env.update(SANDBOX_ENV)
    if api_key:
        env["ANTHROPIC_API_KEY"] = api_key
    if credentials is not None:
        env.update(credentials.env)
    env.update(extra or {})
    return env


def _tail(text: str, lines: int = 20) -> str:
    return "\n".join((text or "").strip().splitlines()[-lines:])[-3000:]


class Maison:
    """Entry points of the library; every method is a static coroutine."""

    @staticmethod
    async def create_sandbox_for_claude(
        *,
        anthropic_api_key: str | None = None,
        snapshot: str = "daytona-small",
        name: str | None = None,
        labels: Mapping[str, str] | None = None,
        env_vars: Mapping[str, str] | None = None,
        auto_stop_interval: int = 15,
        auto_delete_interval: int = 24 * 60,
        daytona: AsyncDaytona | None = None,
        daytona_config: DaytonaConfig | None = None,
        claude_code_version: str = CLAUDE_CODE_VERSION,
        pin_claude_code: bool = False,
        create_timeout: float = 180,
        install_timeout: int = 900,
        run_timeout: float | None = None,
        model: str | None = None,
        on_progress: ProgressCallback | None = None,
        credentials: SandboxCredentials | None = None,
        secret_prefix: str | None = None,
        domain_allow_list: Sequence[str] | None = None,
    ) -> MaisonSandbox:
        """Create a sandbox with Claude Code installed and return it, ready to `stream()`.

        With `credentials` (from `Maison.store_credentials`), or with `secret_prefix` (which
        stores them first, under Secret names starting with it), the sandbox holds only Daytona
        Secret placeholders: the real key never enters it. Without either, the API key (default
        `$ANTHROPIC_API_KEY`) goes into the sandbox's environment (never a command line), where
        anything Claude runs can read it. `domain_allow_list` limits the sandbox's outbound
        traffic to those domains (Daytona allows at most 10). Intervals are in minutes: the
        sandbox stops after `auto_stop_interval` idle minutes and is deleted
        `auto_delete_interval` minutes after stopping, a safety net should the caller never
        `close()` it. Claude Code is installed (`claude_code_version`) where the snapshot lacks
        it; a snapshot's own other version is kept unless `pin_claude_code`, which installs that
        version under $HOME. `claude_code_found` on the result says which one runs. Raises
        `ValueError` without any credential (before anything is created) and `InstallError` (a
        `RuntimeError`) when the install fails, after deleting the sandbox.
        """
        api_key = None if credentials is not None else anthropic_api_key or os.environ.get("ANTHROPIC_API_KEY", "")
        if credentials is None and secret_prefix is None and not api_key:
            raise ValueError("An Anthropic API key is required: pass anthropic_api_key= or set ANTHROPIC_API_KEY.")
        progress = on_progress or (lambda message: None)
        owns_client = daytona is None
        client = daytona or _client(daytona_config)
        try:
            if secret_prefix is not None and credentials is None:
                progress("Storing the credentials in Daytona Secrets")
                credentials = await Maison.store_credentials(prefix=secret_prefix, anthropic_api_key=api_key,
                                                             daytona=client)
                api_key = None
            progress("Creating the sandbox")
            params = CreateSandboxFromSnapshotParams(
                snapshot=snapshot,
                name=name,
                labels={**(labels or {}), APP_LABEL[0]: APP_LABEL[1]},
                env_vars=sandbox_env(api_key, env_vars, credentials=credentials),
                secrets=credentials.secrets if credentials is not None else None,
                domain_allow_list=",".join(domain_allow_list) if domain_allow_list else None,
                auto_stop_interval=auto_stop_interval,
                auto_delete_interval=auto_delete_interval,
            )
            raw = await call(
                "Creating a Daytona sandbox", lambda: client.create(params, timeout=create_timeout), retry=False
            )
            sandbox = MaisonSandbox(raw, client, owns_client=owns_client, run_timeout=run_timeout, model=model)
        except BaseException:
            if owns_client:
                await client.close()
            raise
        try:
            progress("Checking for Claude Code")
            sandbox.claude_code_found = await _install_claude(sandbox, claude_code_version, pin_claude_code,
                                                              install_timeout, progress)
        except BaseException:
            await _discard(sandbox)
            raise
        return sandbox

    @staticmethod
    async def attach(
        sandbox_id: str,
        *,
        daytona: AsyncDaytona | None = None,
        daytona_config: DaytonaConfig | None = None,
        claude_session_id: str | None = None,
        run_timeout: float | None = None,
        model: str | None = None,
        start_timeout: float = 120,
        restore_timeout: float = 1800,
    ) -> MaisonSandbox:
        """Re-attach to an existing sandbox by id, starting it if it was stopped or archived.

        An archived sandbox's files come back from object storage first, which takes minutes for
        a large one (../shared/reference/daytona.md §20.2): `restore_timeout` applies then.

        Raises `SandboxGoneError` if it no longer exists (or is being destroyed). A client
        that replaces one that died mid-run should call `kill_stale_runs()` on the result:
        the dead client's Claude Code may still be running there.
        """
        owns_client = daytona is None
        client = daytona or _client(daytona_config)
        try:
            raw = await call(f"Finding sandbox {sandbox_id}", lambda: client.get(sandbox_id))
            state = str(getattr(raw.state, "value", raw.state))
            if state in ("destroyed", "destroying", "error", "build_failed"):
                raise SandboxGoneError(f"Sandbox {sandbox_id} is {state}")
            if state != "started":
                logger.info("Starting sandbox %s (was %s)", sandbox_id, state)
                timeout = restore_timeout if state == "archived" else start_timeout
                await call(f"Starting sandbox {sandbox_id}", lambda: raw.start(timeout=timeout))
        except BaseException:
            if owns_client:
                await client.close()
            raise
        return MaisonSandbox(
            raw, client, owns_client=owns_client, claude_session_id=claude_session_id,
            run_timeout=run_timeout, model=model,
        )


    @staticmethod
    async def store_credentials(
        *,
        prefix: str,
        anthropic_api_key: str | None = None,
        base_url: str | None = None,
        daytona: AsyncDaytona,
    ) -> SandboxCredentials:
        """Keep Claude Code's credentials in Daytona Secrets, for `create_sandbox_for_claude`.

        Takes the key (default `$ANTHROPIC_API_KEY`) and every other credential this host would
        forward (`ANTHROPIC_AUTH_TOKEN`, `CLAUDE_CODE_OAUTH_TOKEN`, `ANTHROPIC_CUSTOM_HEADERS`'
        values), stores each in a Secret named from `prefix` that Daytona substitutes only in
        request headers bound for the Anthropic API host (`base_url`'s host when given, default
        `$ANTHROPIC_BASE_URL`). Idempotent: run it at every start to keep the values current.
        Raises `SecretsUnavailableError` when the organization cannot use Secrets.
        """
        values = {name: os.environ.get(name, "") for name in (*CREDENTIAL_NAMES, CUSTOM_HEADERS)}
        if anthropic_api_key:
            values["ANTHROPIC_API_KEY"] = anthropic_api_key
        if not any(values[name] for name in CREDENTIAL_NAMES):
            raise ValueError("An Anthropic API key is required: pass anthropic_api_key= or set ANTHROPIC_API_KEY.")
        host = api_host(base_url or os.environ.get("ANTHROPIC_BASE_URL"))
        return await store_credentials(values, prefix=prefix, hosts=[host], daytona=daytona)

    @staticmethod
    async def list_sandboxes(labels: Mapping[str, str], *, daytona: AsyncDaytona) -> list[SandboxInfo]:
        """Sandboxes carrying all of `labels` (always including this project's label)."""
        query = ListSandboxesQuery(labels={**labels, APP_LABEL[0]: APP_LABEL[1]}, limit=100)

        async def collect() -> list[SandboxInfo]:
            found = []
            async for item in daytona.list(query):
                state = str(getattr(item.state, "value", item.state))
                found.append(SandboxInfo(item.id, dict(item.labels or {}), state))
            return found

        return await call("Listing sandboxes", collect)

    @staticmethod
    async def stop_sandbox(sandbox_id: str, *, daytona: AsyncDaytona, timeout: float = 120) -> bool:
        """Stop a sandbox by id, keeping its files (Daytona may archive it later: cheap storage,
        ../shared/reference/daytona.md §20.2); False if it was not running."""
        raw = await call(f"Finding sandbox {sandbox_id}", lambda: daytona.get(sandbox_id))
        if str(getattr(raw.state, "value", raw.state)) != "started":
            return False
        await call(f"Stopping sandbox {sandbox_id}", lambda: raw.stop(timeout=timeout))
        return True

    @staticmethod
    async def delete_sandbox(sandbox_id: str, *, daytona: AsyncDaytona) -> bool:
        """Delete a sandbox by id; False if it was already gone."""
        try:
            raw = await call(f"Finding sandbox {sandbox_id}", lambda: daytona.get(sandbox_id))
            await call(f"Deleting sandbox {sandbox_id}", lambda: daytona.delete(raw))
        except SandboxGoneError:
            return False
        return True


@dataclass(frozen=True)
class SandboxInfo:
    id: str
    labels: dict[str, str]
    state: str


def _client(config: DaytonaConfig | None) -> AsyncDaytona:
    try:
        return AsyncDaytona(config)
    except DaytonaError as exc:
        raise translate(exc, "Connecting to Daytona") from exc


async def _install_claude(sandbox: MaisonSandbox, version: str, pin: bool, timeout: int,
                          progress: ProgressCallback) -> str:
    """Install Node.js and Claude Code where missing (a snapshot may ship them), or where another
    version is there and `pin`; returns what `claude --version` says."""
    script = INSTALL_SCRIPT.format(version=version, pin=int(pin))
    try:
        exit_code, output = await sandbox.run_setup(script, timeout=timeout)
    except MaisonError as exc:
        raise InstallError(f"Could not install Claude Code in sandbox {sandbox.id}: {exc}") from exc
    if exit_code != 0:
        raise InstallError(
            f"Could not install Claude Code in sandbox {sandbox.id} (exit {exit_code}):\n{_tail(output)}"
        )
    found = _tail(output, 1).strip()
    progress(f"Claude Code ready ({found})")
    return found


async def _discard(sandbox: MaisonSandbox) -> None:
    """Delete a sandbox we could not finish setting up, never masking the original error."""
    try:
        await sandbox.close()
    except MaisonError as exc:
        logger.error("Could not delete sandbox %s after a failed setup: %s", sandbox.id, exc)
