"""Claude Code's credentials as Daytona Secrets, so the real values never enter a sandbox.

A sandbox created with `secrets={ENV: secret name}` sees only an opaque placeholder
(`dtn_secret_…`) in `ENV`; Daytona's egress proxy puts the real value into request *headers*
bound for the Secret's `hosts`, and nowhere else (../shared/reference/daytona.md §14). Claude
Code sends its credentials in headers (`x-api-key`, `Authorization: Bearer …`,
../shared/reference/claude-code.md), so it works unchanged, while `printenv` or a `curl` to
any other host only ever shows the placeholder.

`ANTHROPIC_CUSTOM_HEADERS` is a list of `Name: value` lines, not one value: each header whose
name says it carries a credential gets a Secret of its own, and the sandbox gets the same lines
with the placeholders in them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from daytona import AsyncDaytona, CreateSecretParams, Secret, UpdateSecretParams

from maison_slack.core.daytona_calls import call, status_of
from maison_slack.core.errors import MaisonError

#: Variables that carry a credential of Claude Code's (../shared/reference/claude-code.md §9).
CREDENTIAL_NAMES = ("ANTHROPIC_API_KEY", "ANTHROPIC_AUTH_TOKEN", "CLAUDE_CODE_OAUTH_TOKEN")
CUSTOM_HEADERS = "ANTHROPIC_CUSTOM_HEADERS"
ANTHROPIC_HOST = "api.anthropic.com"
#: Custom headers whose value is a credential, by name (`X-Api-Key`, `Authorization`, `X-Team-Token`…).
_CREDENTIAL_HEADER = re.compile(r"key|token|auth|secret|password|cookie|session", re.IGNORECASE)


class SecretsUnavailableError(MaisonError):
    """This Daytona organization cannot use Secrets (API key without the permission, plan, or
    a Daytona without the Secrets API)."""


@dataclass
class SandboxCredentials:
    """What a sandbox gets instead of the real credentials."""

    #: Environment variable → name of the Daytona Secret whose placeholder it holds.
    secrets: dict[str, str] = field(default_factory=dict)
    #: Plain variables that only hold placeholders (the custom headers' lines).
    env: dict[str, str] = field(default_factory=dict)


def custom_headers(text: str) -> list[tuple[str, str]]:
    """The `Name: value` lines of `ANTHROPIC_CUSTOM_HEADERS` (each value may be a credential)."""
    pairs = (line.partition(":") for line in text.splitlines())
    return [(name.strip(), value.strip()) for name, colon, value in pairs if colon and value.strip()]


def api_host(base_url: str | None) -> str:
    """The host Claude Code sends its credentials to: `ANTHROPIC_BASE_URL`'s, or Anthropic's."""
    return (urlsplit(base_url).hostname if base_url else None) or ANTHROPIC_HOST


def secret_name(prefix: str, env_name: str) -> str:
    """A valid Secret name (`^[a-zA-Z_][a-zA-Z0-9_-]*$`) for one credential of one bot instance."""
    return re.sub(r"[^a-zA-Z0-9_-]", "_", f"maison_{prefix}_{env_name}".lower())


async def store_credentials(values: Mapping[str, str], *, prefix: str, hosts: list[str],
                            daytona: AsyncDaytona) -> SandboxCredentials:
    """Make sure a Secret holds each credential in `values` (current value, allowed only for
    `hosts`), and return what sandboxes should get instead of the values.

    `values` holds any of `CREDENTIAL_NAMES` and `CUSTOM_HEADERS`. Raises
    `SecretsUnavailableError` when the organization cannot use Secrets.
    """
    credentials = SandboxCredentials()
    for env_name, value in values.items():
        if not value:
            continue
        if env_name == CUSTOM_HEADERS:
            lines = []
            for number, (name, header_value) in enumerate(custom_headers(value)):
                if not _CREDENTIAL_HEADER.search(name):  # e.g. `X-Trace: on`: no Secret would scrub "on"
                    lines.append(f"{name}: {header_value}")
                    continue
                secret = secret_name(prefix, f"header_{number}")
                placeholder = await ensure_secret(secret, header_value, hosts, daytona=daytona)
                # Daytona substitutes only the placeholders of Secrets mounted in the sandbox:
                # mount it under a variable of its own, and put its placeholder in the header line.
                credentials.secrets[f"MAISON_HEADER_{number}"] = secret
                lines.append(f"{name}: {placeholder}")
            credentials.env[CUSTOM_HEADERS] = "\n".join(lines)
        else:
            name = secret_name(prefix, env_name)
            await ensure_secret(name, value, hosts, daytona=daytona)
            credentials.secrets[env_name] = name
    return credentials


async def ensure_secret(name: str, value: str, hosts: list[str], *, daytona: AsyncDaytona) -> str:
    """Create the Secret `name`, or bring its value and hosts up to date; returns its placeholder.

    Always with `hosts`: a Secret without hosts is substituted toward any destination.
    """
    try:
        existing = await _find_secret(name, daytona)
        if existing is None:
            try:
                secret = await call(f"Creating the Daytona Secret {name}", lambda: daytona.secret.create(
                    CreateSecretParams(name=name, value=value, hosts=hosts,
                                       description="maison-slack: Claude Code credential")), retry=False)
                return secret.placeholder
            except MaisonError as exc:
                if status_of(exc) != 409:
                    raise
                existing = await _find_secret(name, daytona)  # another bot made it meanwhile
                if existing is None:
                    raise
        secret = await call(f"Updating the Daytona Secret {name}", lambda: daytona.secret.update(
            existing.id, UpdateSecretParams(value=value, hosts=hosts)))
        return secret.placeholder
    except MaisonError as exc:
        if status_of(exc) in (401, 403, 404):
            raise SecretsUnavailableError(
                f"Daytona refused to manage Secrets (HTTP {status_of(exc)}). The Daytona API key needs the "
                "permission to manage Secrets, and the organization a plan that has them."
            ) from exc
        raise


async def _find_secret(name: str, daytona: AsyncDaytona) -> Secret | None:
    """The Secret named exactly `name` (the API's name filter matches parts of names)."""
    cursor = None
    while True:
        page = await call("Listing Daytona Secrets",
                          lambda: daytona.secret.list(cursor=cursor, limit=200, name=name))
        found = next((s for s in page.items if s.name == name), None)
        if found is not None or page.next_cursor is None:
            return found
        cursor = page.next_cursor

