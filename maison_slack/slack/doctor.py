"""`maison-slack doctor`: check the configuration and every service before relying on them.

A bot started with a wrong token or key fails late and far from the cause: a mention nobody
answers, a sandbox that never starts, a run that ends in a 401 inside the sandbox. The doctor
asks each service the cheapest question that proves a setting works, read-only wherever the
service allows it, and prints one table: check · result · fix. The repositories channels set
(`/maison config repo`, read from the bot's database without changing it) are tried with
`MAISON_GIT_TOKEN`. Checks of different services run concurrently; each waits at most
`CHECK_TIMEOUT` seconds.

Exit code: 0 if no check failed (skipped ones do not fail), 1 if one failed, 2 if the
configuration does not load (the bot itself exits 2 then too).

No secret is printed: results name teams, hosts, ids and HTTP statuses, never a token or a key,
and the whole output is redacted against every secret the bot holds (`Settings.secrets`) before
it is printed, in case a service echoes one back in an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import textwrap
from collections.abc import Awaitable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiohttp
from daytona import AsyncDaytona, DaytonaConfig, DaytonaError, ListSandboxesQuery
from daytona_api_client_async import OrganizationsApi
from daytona_api_client_async.exceptions import ApiException
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from maison_slack.core import git
from maison_slack.core.snapshots import choose_snapshot, find_snapshot, state_of
from maison_slack.core.maison import CLAUDE_CODE_VERSION
from maison_slack.core.credentials import CUSTOM_HEADERS, api_host, custom_headers, secret_name
from maison_slack.core.daytona_calls import status_of
from maison_slack.slack.channel_config import split_repo
from maison_slack.slack.config import ConfigError, Settings, load_settings, print_config_problems
from maison_slack.slack.redact import Redactor
from maison_slack.storage import read_channel_setting

#: Seconds one check (or one service's dependent steps) may take before it counts as failed.
CHECK_TIMEOUT = 10.0

CONFIGURATION = "configuration"
SLACK_BOT_TOKEN = "Slack bot token"
SLACK_SCOPES = "Slack bot scopes"
SLACK_SOCKET_MODE = "Slack app token"
DAYTONA_KEY = "Daytona API key"
DAYTONA_REGION = "Daytona region"
DAYTONA_SNAPSHOT = "Daytona snapshot"
DAYTONA_SECRETS = "Daytona Secrets"
ANTHROPIC_KEY = "Anthropic API key"
REPOSITORY = "Repository"

DAYTONA_DEFAULT_URL = "https://app.daytona.io/api"
ANTHROPIC_DEFAULT_URL = "https://api.anthropic.com"
ANTHROPIC_VERSION = "2023-06-01"
#: Where the app's manifest is looked for: next to the package (a checkout or an editable
#: install), then the current directory (`pip install .` run from the checkout).
MANIFEST_PLACES = (Path(__file__).resolve().parents[2] / "manifest.yml", Path("manifest.yml"))

#: Slack errors that mean the token itself is no good (Slack's method pages; ../shared/reference/slack.md §6).
_BAD_TOKEN_ERRORS = frozenset({"invalid_auth", "not_authed", "token_revoked", "token_expired",
                               "account_inactive", "not_allowed_token_type"})
#: Snapshot states on the way to `active` (../shared/reference/daytona.md §16.2).
_SNAPSHOT_BUILDING = frozenset({"pending", "building", "pulling", "snapshotting"})

_UNREACHABLE_SLACK = "check the network, and SLACK_API_URL if it is set (default https://slack.com/api/)"
_UNREACHABLE_DAYTONA = "check the network, and DAYTONA_API_URL if it is set (default https://app.daytona.io/api)"
_UNREACHABLE_ANTHROPIC = "check the network, and ANTHROPIC_BASE_URL if it is set"


class Outcome(Enum):
    PASSED = "ok"
    FAILED = "FAIL"
    SKIPPED = "skip"


@dataclass(frozen=True)
class Result:
    """One row of the table. `fix` says what to do, and is empty unless the check failed."""

    check: str
    outcome: Outcome
    detail: str
    fix: str = ""


def passed(check: str, detail: str) -> Result:
    return Result(check, Outcome.PASSED, detail)


def failed(check: str, detail: str, fix: str) -> Result:
    return Result(check, Outcome.FAILED, detail, fix)


def skipped(check: str, detail: str) -> Result:
    return Result(check, Outcome.SKIPPED, detail)


async def guarded(checks: Sequence[str], work: Awaitable[list[Result]], fix: str) -> list[Result]:
    """`work`'s rows, or, if it raised or took longer than `CHECK_TIMEOUT`, a failure of the
    first of `checks` (with `fix`) and the others skipped: after an unanswered call nothing
    that depends on it can be known."""
    try:
        return await asyncio.wait_for(work, CHECK_TIMEOUT)
    except asyncio.TimeoutError:
        detail = f"no answer within {CHECK_TIMEOUT:g} s"
    except Exception as exc:  # a client library's failure is a finding to report, not a crash
        detail = f"{type(exc).__name__}: {exc}".strip()
    return [failed(checks[0], detail, fix), *(skipped(check, f"{checks[0]} failed") for check in checks[1:])]


# -- the manifest's bot scopes ---------------------------------------------------------------------


def manifest_bot_scopes(text: str) -> list[str]:
    """`oauth_config.scopes.bot` of a Slack app manifest, without a YAML library.

    The project has no YAML dependency and the doctor needs one list, so this reads just the
    YAML that list is written in: nested `key:` mappings, then the list as `- item` lines
    (indented or not) or as a flow sequence `[a, b]`; `#` comments and quotes are dropped.
    """
    wanted = ["oauth_config", "scopes", "bot"]
    path: list[tuple[int, str]] = []  # (indent, key) of the mappings enclosing the current line
    scopes: list[str] = []
    for raw in text.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", raw).rstrip()
        content = line.lstrip(" ")
        if not content or content.startswith(("---", "...")):
            continue
        indent = len(line) - len(content)
        if content == "-" or content.startswith("- "):
            while path and path[-1][0] > indent:  # a sequence may sit at its key's own indent
                path.pop()
            if [key for _, key in path] == wanted:
                scopes.append(_scalar(content[1:]))
            continue
        key, colon, value = content.partition(":")
        if not colon:
            continue
        while path and path[-1][0] >= indent:
            path.pop()
        key, value = _scalar(key), value.strip()
        if not value:
            path.append((indent, key))
        elif [k for _, k in path] + [key] == wanted and value.startswith("["):
            scopes.extend(_scalar(item) for item in value.strip("[]").split(",") if item.strip())
    return [scope for scope in scopes if scope]


def _scalar(text: str) -> str:
    return text.strip().strip("'\"").strip()


def find_manifest(places: Iterable[Path] = MANIFEST_PLACES) -> Path | None:
    return next((place for place in places if place.is_file()), None)


# -- Slack -----------------------------------------------------------------------------------------


async def check_slack_bot(settings: Settings, manifest: Path | None) -> list[Result]:
    """The bot token (`auth.test`) and its scopes against the manifest's bot scopes."""
    return await guarded((SLACK_BOT_TOKEN, SLACK_SCOPES), _slack_bot(settings, manifest), _UNREACHABLE_SLACK)


async def _slack_bot(settings: Settings, manifest: Path | None) -> list[Result]:
    client = AsyncWebClient(token=settings.slack_bot_token, base_url=settings.slack_api_url)
    try:
        response = await client.auth_test()
    except SlackApiError as exc:
        error = _slack_error(exc)
        return [failed(SLACK_BOT_TOKEN, f"Slack refused it ({error})", _bot_token_fix(error)),
                skipped(SLACK_SCOPES, "the bot token does not work")]
    who = (f"bot @{response.get('user')} ({response.get('user_id')}) in {response.get('team')} "
           f"({response.get('team_id')})")
    granted = _header(response.headers, "x-oauth-scopes")
    return [passed(SLACK_BOT_TOKEN, f"works: {who}"),
            scopes_result(None if granted is None else _split(granted), manifest)]


def scopes_result(granted: list[str] | None, manifest: Path | None) -> Result:
    """Every bot scope manifest.yml asks for must be granted: without one, a feature of the bot
    fails only when someone uses it (reactions, files, names)."""
    if manifest is None:
        places = ", ".join(str(place) for place in MANIFEST_PLACES)
        return skipped(SLACK_SCOPES, f"manifest.yml not found ({places}): scopes not compared")
    if granted is None:
        return skipped(SLACK_SCOPES, "Slack did not name the token's scopes (no x-oauth-scopes header)")
    wanted = manifest_bot_scopes(manifest.read_text(encoding="utf-8"))
    if not wanted:
        return skipped(SLACK_SCOPES, f"{manifest} lists no bot scopes (oauth_config.scopes.bot): none compared")
    missing = [scope for scope in wanted if scope not in granted]
    if missing:
        return failed(SLACK_SCOPES, f"missing {', '.join(missing)} (manifest.yml asks for {len(wanted)})",
                      "add them under OAuth & Permissions → Scopes → Bot Token Scopes (or update the app "
                      "from manifest.yml), then reinstall the app to the workspace")
    return passed(SLACK_SCOPES, f"all {len(wanted)} bot scopes of manifest.yml granted")


def _bot_token_fix(error: str) -> str:
    if error in _BAD_TOKEN_ERRORS:
        return ("SLACK_BOT_TOKEN is revoked or wrong: reinstall the app (Install App) and copy the Bot User "
                "OAuth Token (xoxb-…)")
    if error == "ratelimited":
        return "Slack rate-limited the check: run the doctor again in a minute"
    return "check SLACK_BOT_TOKEN (Install App → Bot User OAuth Token) and SLACK_API_URL"


async def check_socket_mode(settings: Settings) -> list[Result]:
    """The app token opens a Socket Mode connection, as the bot's does at start: the URL from
    `apps.connections.open`, then the WebSocket and Slack's `hello` on it.

    The connection is closed at once. Should the bot be running, Slack may hand this short-lived
    connection an event; unacknowledged, it is sent again after 3 s (../shared/reference/slack.md §5.1).
    """
    return await guarded((SLACK_SOCKET_MODE,), _socket_mode(settings), _UNREACHABLE_SLACK)


async def _socket_mode(settings: Settings) -> list[Result]:
    client = AsyncWebClient(base_url=settings.slack_api_url)
    try:
        response = await client.apps_connections_open(app_token=settings.slack_app_token)
    except SlackApiError as exc:
        error = _slack_error(exc)
        return [failed(SLACK_SOCKET_MODE, f"apps.connections.open refused ({error})", _app_token_fix(error))]
    return [await _first_frame(str(response["url"]))]


async def _first_frame(url: str) -> Result:
    """Open the Socket Mode WebSocket and judge Slack's first frame: `hello`, or a `disconnect`
    whose reason says why not (../shared/reference/slack.md §4.1, §4.6)."""
    async with aiohttp.ClientSession(trust_env=True) as session:
        try:
            async with session.ws_connect(url, autoping=True) as ws:
                message = await ws.receive()
                await ws.close()
        except aiohttp.WSServerHandshakeError as exc:
            return failed(SLACK_SOCKET_MODE, f"Slack refused the WebSocket (HTTP {exc.status})",
                          "turn on Socket Mode (app settings → Socket Mode) and run the doctor again")
    frame = _json_object(message.data) if message.type == aiohttp.WSMsgType.TEXT else {}
    if frame.get("type") == "hello":
        app_id = (frame.get("connection_info") or {}).get("app_id", "?")
        return passed(SLACK_SOCKET_MODE, f"Socket Mode works: connected, hello received (app {app_id})")
    if frame.get("type") == "disconnect" and frame.get("reason") == "link_disabled":
        return failed(SLACK_SOCKET_MODE, "Slack closed the connection: Socket Mode is turned off (link_disabled)",
                      "turn on Socket Mode: app settings (api.slack.com/apps) → Socket Mode → Enable")
    if frame.get("type") == "disconnect":
        reason = frame.get("reason", "?")
        fix = ("the app has 10 open connections, Slack's limit: stop other copies of the bot"
               if reason == "too_many_websockets" else "run the doctor again; if it persists, check Slack's status")
        return failed(SLACK_SOCKET_MODE, f"Slack closed the connection at once ({reason})", fix)
    return failed(SLACK_SOCKET_MODE, "the WebSocket closed without Slack's hello",
                  "turn on Socket Mode (app settings → Socket Mode) and check that nothing between this "
                  "machine and Slack blocks WebSockets")


def _app_token_fix(error: str) -> str:
    if error == "not_allowed_token_type":
        return ("SLACK_APP_TOKEN is not an app-level token: Basic Information → App-Level Tokens → Generate "
                "(scope connections:write), copy the xapp-… token")
    if error == "missing_scope":
        return ("the app-level token lacks connections:write: generate one with that scope (Basic "
                "Information → App-Level Tokens) and set SLACK_APP_TOKEN to it")
    if error in _BAD_TOKEN_ERRORS:
        return ("SLACK_APP_TOKEN is revoked or wrong: Basic Information → App-Level Tokens → Generate (scope "
                "connections:write), copy the xapp-… token")
    if error == "ratelimited":
        return "Slack rate-limited the check: run the doctor again in a minute"
    return ("enable Socket Mode (app settings → Socket Mode) and use an app-level token with connections:write "
            "(Basic Information → App-Level Tokens)")


def _slack_error(exc: SlackApiError) -> str:
    """Slack's error code, or the HTTP status of an answer that was not Slack JSON (a 5xx page)."""
    data = exc.response.data if isinstance(exc.response.data, dict) else {}
    return str(data.get("error") or f"HTTP {exc.response.status_code}")


# -- Daytona ---------------------------------------------------------------------------------------


async def check_daytona(settings: Settings) -> list[Result]:
    """The API key first (nothing else can be known without it), then region, snapshot and
    Secrets concurrently. Only reads: nothing is created or changed."""
    dependents = (DAYTONA_REGION, DAYTONA_SNAPSHOT, DAYTONA_SECRETS)
    try:
        daytona = AsyncDaytona(DaytonaConfig(api_key=settings.daytona_api_key, api_url=settings.daytona_api_url,
                                             target=settings.daytona_target))
    except DaytonaError as exc:
        return [failed(DAYTONA_KEY, str(exc), "check DAYTONA_API_KEY and DAYTONA_API_URL"),
                *(skipped(check, "no Daytona client") for check in dependents)]
    try:
        key = await guarded((DAYTONA_KEY,), _daytona_key(daytona, settings), _UNREACHABLE_DAYTONA)
        if key[0].outcome is not Outcome.PASSED:
            return [*key, *(skipped(check, "the Daytona API key does not work") for check in dependents)]
        rest = await asyncio.gather(
            guarded((DAYTONA_REGION,), _daytona_region(daytona, settings.daytona_target), _UNREACHABLE_DAYTONA),
            guarded((DAYTONA_SNAPSHOT,), _daytona_snapshot(daytona, settings.snapshot), _UNREACHABLE_DAYTONA),
            guarded((DAYTONA_SECRETS,), _daytona_secrets(daytona, settings), _UNREACHABLE_DAYTONA),
        )
        return [*key, *(row for rows in rest for row in rows)]
    finally:
        with contextlib.suppress(Exception, asyncio.TimeoutError):
            await asyncio.wait_for(daytona.close(), CHECK_TIMEOUT)


async def _daytona_key(daytona: AsyncDaytona, settings: Settings) -> list[Result]:
    """Listing one sandbox: the cheapest authenticated call of the SDK."""
    try:
        async with contextlib.aclosing(daytona.list(ListSandboxesQuery(limit=1))) as sandboxes:
            async for _ in sandboxes:
                break
    except (DaytonaError, ApiException) as exc:
        status = status_of(exc)
        if status == 401:
            return [failed(DAYTONA_KEY, "Daytona refused it (HTTP 401)",
                           "DAYTONA_API_KEY is revoked or wrong: create a key (Daytona dashboard → API Keys) "
                           "and set DAYTONA_API_KEY to it")]
        if status == 403:
            return [failed(DAYTONA_KEY, "the key may not list sandboxes (HTTP 403)",
                           "give the key the sandbox permissions (Daytona dashboard → API Keys), or create one "
                           "that has them")]
        raise
    return [passed(DAYTONA_KEY, f"works ({_host(settings.daytona_api_url or DAYTONA_DEFAULT_URL)})")]


async def _daytona_region(daytona: AsyncDaytona, target: str | None) -> list[Result]:
    """`DAYTONA_TARGET` must name a region the organization may use: Daytona resolves it by
    name or id when a sandbox is created, and refuses the creation otherwise."""
    if not target:
        return [passed(DAYTONA_REGION, "DAYTONA_TARGET not set: your organization's default region")]
    # The SDK has no call for regions; its generated client has (GET /regions,
    # listAvailableRegions), on the SDK's own authenticated API client (daytona 0.226).
    try:
        regions = await OrganizationsApi(daytona._api_client).list_available_regions()
    except ApiException as exc:
        if status_of(exc) == 404:
            return [skipped(DAYTONA_REGION, f"this Daytona API lists no regions: DAYTONA_TARGET={target} not checked")]
        raise
    names = sorted({region.name for region in regions})
    if any(target in (region.id, region.name) for region in regions):
        return [passed(DAYTONA_REGION, f"{target} is available to your organization")]
    return [failed(DAYTONA_REGION,
                   f"DAYTONA_TARGET={target} is not a region your organization can use "
                   f"(available: {', '.join(names) or 'none'})",
                   "set DAYTONA_TARGET to one of the available regions, or unset it for your default region")]


async def _daytona_snapshot(daytona: AsyncDaytona, configured: str | None) -> list[Result]:
    """The snapshot new sandboxes use (`MAISON_SNAPSHOT`, else the pinned one if built, else
    Daytona's default) must exist and be active: Daytona refuses to create a sandbox from a
    snapshot that is not (`Snapshot <name> is <state>`)."""
    name, pinned = await choose_snapshot(daytona, configured)
    snapshot = await find_snapshot(daytona, name)
    if snapshot is None:
        return [failed(DAYTONA_SNAPSHOT, f"no snapshot named {name!r} in your organization or Daytona's",
                       "set MAISON_SNAPSHOT to a snapshot listed in the Daytona dashboard (Snapshots), or create "
                       f"{name!r} there; unset, the bot uses the snapshot `maison-slack snapshot` builds, else daytona-small")]
    whose = "one of Daytona's" if snapshot.general else "your organization's"
    state = state_of(snapshot)
    if state == "active" and pinned:
        return [passed(DAYTONA_SNAPSHOT, f"{name} is active ({whose}): sandboxes run Claude Code {CLAUDE_CODE_VERSION}")]
    if state == "active":
        return [passed(DAYTONA_SNAPSHOT, f"{name} is active ({whose}); sandboxes run the Claude Code it has "
                                         f"(`maison-slack snapshot` builds one with {CLAUDE_CODE_VERSION})")]
    if state in _SNAPSHOT_BUILDING:
        return [failed(DAYTONA_SNAPSHOT, f"{name} is not ready yet ({state})",
                       "wait until it is active (Daytona dashboard → Snapshots), then run the doctor again")]
    if state == "inactive":
        return [failed(DAYTONA_SNAPSHOT, f"{name} is inactive (unused for two weeks)",
                       "activate it: Daytona dashboard → Snapshots → Activate")]
    reason = f": {snapshot.error_reason}" if snapshot.error_reason else ""
    return [failed(DAYTONA_SNAPSHOT, f"{name} is {state}{reason}",
                   "rebuild it, or set MAISON_SNAPSHOT to a snapshot that is active")]


async def _daytona_secrets(daytona: AsyncDaytona, settings: Settings) -> list[Result]:
    """Whether this organization lets the key use Secrets, which the bot needs at start unless
    `MAISON_KEY_IN_SANDBOX=env` (see `Sandboxes.prepare`).

    Read-only: listing the bot's Secrets. The bot then creates or updates them, a write that
    only starting the bot can try without changing anything here; the result says so.
    """
    if settings.key_in_sandbox == "env":
        return [skipped(DAYTONA_SECRETS, "MAISON_KEY_IN_SANDBOX=env: the key goes into each sandbox's environment")]
    prefix = secret_name(settings.instance, "")
    try:
        page = await daytona.secret.list(limit=200, name=prefix)
    except (DaytonaError, ApiException) as exc:
        status = status_of(exc)
        if status in (401, 403, 404):  # what the bot's start treats as "no Secrets" (credentials.py)
            return [failed(DAYTONA_SECRETS, f"Daytona refused to list Secrets (HTTP {status}): the bot would "
                                            "not start",
                           "give the Daytona API key the permission to manage Secrets (the organization's plan "
                           "must have them), or set MAISON_KEY_IN_SANDBOX=env to put the key in each sandbox's "
                           "environment instead (readable by anything Claude runs there)")]
        raise
    ours = sorted(secret.name for secret in page.items if secret.name.startswith(prefix))
    held = f"this bot's: {', '.join(ours)}" if ours else "none of this bot's yet"
    return [passed(DAYTONA_SECRETS, f"available ({held}); creating or updating one is a write, tried when "
                                    "the bot starts")]


# -- Anthropic -------------------------------------------------------------------------------------


async def check_anthropic(settings: Settings, environ: Mapping[str, str]) -> list[Result]:
    """The key with the smallest request there is: `GET /v1/models?limit=1`. It costs nothing,
    needs no model name (which could be retired, or a Claude Code alias the API does not know)
    and is refused with the same 401 as a message would be."""
    return await guarded((ANTHROPIC_KEY,), _anthropic(settings, environ), _UNREACHABLE_ANTHROPIC)


async def _anthropic(settings: Settings, environ: Mapping[str, str]) -> list[Result]:
    base = (settings.anthropic_base_url or ANTHROPIC_DEFAULT_URL).rstrip("/")
    host = api_host(settings.anthropic_base_url)
    # What Claude Code sends (../shared/reference/claude-code.md §2.1-2.2): the key as
    # x-api-key, and ANTHROPIC_CUSTOM_HEADERS, which a gateway may require.
    headers = {**dict(custom_headers(environ.get(CUSTOM_HEADERS, ""))),
               "x-api-key": settings.anthropic_api_key, "anthropic-version": ANTHROPIC_VERSION}
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.get(f"{base}/v1/models", params={"limit": "1"}, headers=headers) as response:
            status, body = response.status, _json_object(await response.text())
    if status == 200:
        return [passed(ANTHROPIC_KEY, f"works ({host})")]
    error = body.get("error") if isinstance(body.get("error"), dict) else {}
    said = f"HTTP {status} {error.get('type', '')}".strip()
    if status == 401:
        return [failed(ANTHROPIC_KEY, f"{host} refused it ({said})",
                       "ANTHROPIC_API_KEY is revoked or wrong: create a key at console.anthropic.com → API Keys "
                       "and set ANTHROPIC_API_KEY to it")]
    if status == 403:
        return [failed(ANTHROPIC_KEY, f"the key may not use the API ({said})",
                       "check the key and its workspace at console.anthropic.com (disabled key, or no access)")]
    if status == 404:
        return [failed(ANTHROPIC_KEY, f"{base} has no /v1/models ({said})",
                       "ANTHROPIC_BASE_URL must be the API's root (scheme://host[:port], without /v1): Claude "
                       "Code appends /v1/messages")]
    if status == 429 or status >= 500:
        return [failed(ANTHROPIC_KEY, f"{host} is busy ({said}): the key was not checked",
                       "run the doctor again in a minute")]
    return [failed(ANTHROPIC_KEY, f"{host} answered {said}: {error.get('message', '')}".rstrip(": "),
                   "check ANTHROPIC_API_KEY and ANTHROPIC_BASE_URL")]


# -- running and printing --------------------------------------------------------------------------


async def check_repositories(settings: Settings) -> list[Result]:
    """Each channel's repository (from the bot's database, if there is one) with the git token:
    the first request of a clone, `GET <url>/info/refs?service=git-upload-pack`, made from this
    machine. It proves the token may read the repository; whether it may push shows at `push`."""
    stored = await read_channel_setting(settings.db_path, "repo")
    repositories = {channel: url for channel, value in stored.items() if (url := split_repo(value)[0])}
    return [row for rows in await asyncio.gather(*(
        guarded((f"{REPOSITORY} ({channel})",), _repository(settings, channel, url), f"check that {_host(url)} "
                "is reachable from here")
        for channel, url in sorted(repositories.items()))) for row in rows]


async def _repository(settings: Settings, channel: str, url: str) -> list[Result]:
    check = f"{REPOSITORY} ({channel})"
    token = settings.git_token
    auth = aiohttp.BasicAuth(settings.git_username or git.default_username(url), token) if token else None
    async with aiohttp.ClientSession(trust_env=True) as session:
        async with session.get(url.rstrip("/") + "/info/refs", params={"service": "git-upload-pack"},
                               auth=auth) as response:
            status = response.status
    how = "with MAISON_GIT_TOKEN" if token else "without a token (`push` needs MAISON_GIT_TOKEN)"
    if status == 200:
        return [passed(check, f"{url} can be cloned {how}")]
    if status in (401, 403):
        return [failed(check, f"{_host(url)} refused {'the token' if token else 'to serve it without a token'} "
                              f"(HTTP {status})",
                       "set MAISON_GIT_TOKEN to a token that may read the repository (and MAISON_GIT_USERNAME "
                       "if the host needs one)")]
    if status == 404:
        return [failed(check, f"{url} was not found (HTTP 404)",
                       f"check the URL (`/maison config repo` in {channel}), and that the token can see it")]
    return [failed(check, f"{_host(url)} answered HTTP {status}", "run the doctor again in a minute")]


async def run_checks(settings: Settings, environ: Mapping[str, str]) -> list[Result]:
    """Every service check, concurrently (they share nothing); rows in a fixed order."""
    groups = await asyncio.gather(
        check_slack_bot(settings, find_manifest()),
        check_socket_mode(settings),
        check_daytona(settings),
        check_anthropic(settings, environ),
        check_repositories(settings),
    )
    return [row for rows in groups for row in rows]


def configuration_row(settings: Settings) -> Result:
    where = "Daytona Secrets" if settings.key_in_sandbox == "secret" else "each sandbox's environment"
    return passed(CONFIGURATION, f"loads: instance {settings.instance}, snapshot {settings.snapshot or 'automatic'}, "
                                 f"Anthropic credentials in {where}")


def render(results: Sequence[Result], width: int | None = None) -> str:
    """The table, its result and fix columns wrapped to the terminal, then a summary line."""
    width = width or shutil.get_terminal_size((120, 24)).columns
    check_width = max(len("check"), *(len(r.check) for r in results))
    room = max(width - check_width - 4, 60)
    result_width = room // 2
    lines = []
    for check, result, fix in [("check", "result", "fix"),
                               *((r.check, f"{r.outcome.value:<4} {r.detail}", r.fix) for r in results)]:
        left = _wrap(result, result_width)
        right = _wrap(fix, room - result_width)
        for number in range(max(len(left), len(right))):
            cells = (check if number == 0 else "", _at(left, number), _at(right, number))
            lines.append(f"{cells[0]:<{check_width}}  {cells[1]:<{result_width}}  {cells[2]}".rstrip())
    failures = [r.check for r in results if r.outcome is Outcome.FAILED]
    skips = sum(r.outcome is Outcome.SKIPPED for r in results)
    summary = (f"{len(failures)} of {len(results)} checks failed: {', '.join(failures)}." if failures
               else f"All {len(results) - skips} checks passed" + (f" ({skips} skipped)." if skips else "."))
    return "\n".join([*lines, "", summary])


def exit_code(results: Iterable[Result]) -> int:
    return 1 if any(r.outcome is Outcome.FAILED for r in results) else 0


def main(environ: Mapping[str, str] = os.environ) -> int:
    """Run the doctor, print the table (redacted), and return the exit code."""
    # The table is the output: library warnings (retries, reconnects) would only interleave
    # with it, and nothing a library logs must risk carrying a credential to the terminal.
    logging.disable(logging.CRITICAL)
    try:
        settings = load_settings(environ)
    except ConfigError as exc:
        report = io.StringIO()
        print_config_problems(exc, "maison-slack doctor: the bot cannot start", file=report)
        rows = [failed(CONFIGURATION, f"{len(exc.problems)} problem(s), listed below",
                       "set these environment variables (see README.md)")]
        redactor = Redactor(_credentials_in(environ))
        print(redactor.redact(f"{render(rows)}\n\n{report.getvalue()}").rstrip())
        return 2
    results = [configuration_row(settings), *asyncio.run(run_checks(settings, environ))]
    print(Redactor(settings.secrets(environ)).redact(render(results)))
    return exit_code(results)


def _credentials_in(environ: Mapping[str, str]) -> list[str]:
    """The secrets of an environment whose configuration does not load (no `Settings` to ask)."""
    names = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DAYTONA_API_KEY", "ANTHROPIC_API_KEY")
    return Settings(*(environ.get(name, "") for name in names)).secrets(environ)


def _wrap(text: str, width: int) -> list[str]:
    return textwrap.wrap(text, width, break_long_words=False, break_on_hyphens=False) or [""]


def _at(items: Sequence[str], index: int) -> str:
    return items[index] if index < len(items) else ""


def _split(scopes: str) -> list[str]:
    return [scope.strip() for scope in scopes.split(",") if scope.strip()]


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    """A response header, whatever case the server or client library gave its name."""
    found = next((value for key, value in headers.items() if key.lower() == name), None)
    if isinstance(found, (list, tuple)):
        found = ",".join(str(value) for value in found)
    return None if found is None else str(found)


def _json_object(text: str | bytes) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except (TypeError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def _host(url: str) -> str:
    """A URL's host and port, never its user info (a URL may carry credentials)."""
    parts = urlsplit(url)
    return f"{parts.hostname}:{parts.port}" if parts.port else str(parts.hostname)
