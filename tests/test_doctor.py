"""`maison-slack doctor`: run as a user would (`python -m maison_slack doctor`, a real process
configured by environment variables) against the Slack, Daytona and Anthropic doubles, through
the real slack_sdk, daytona SDK and aiohttp clients.

Each broken setup must fail its own row with a fix that names what to do, exit 1 (2 for a
configuration that does not load), and never print a secret.
"""

from __future__ import annotations

import asyncio
import os
import sys

import pytest

from maison_slack.slack import doctor as doctor_module
from maison_slack.slack.doctor import Outcome, manifest_bot_scopes
from tests.bot_harness import BotEnv, bot_env  # noqa: F401
from tests.doubles.daytona import SnapshotSpec
from tests.doubles.slack import BOT_SCOPES

CREDENTIALS = ("SLACK_BOT_TOKEN", "SLACK_APP_TOKEN", "DAYTONA_API_KEY", "ANTHROPIC_API_KEY")
ROWS = ("configuration", "Slack bot token", "Slack bot scopes", "Slack app token", "Daytona API key",
        "Daytona region", "Daytona snapshot", "Daytona Secrets", "Anthropic API key")


async def run_maison(bot_env: BotEnv, *args: str, **env: str | None) -> tuple[int, str]:
    """`python -m maison_slack <args>` with the doubles' environment, `env` applied on top (None
    unsets); its exit code and its stdout and stderr together."""
    environ = {**os.environ, **bot_env.env(), "COLUMNS": "150"}
    for name, value in env.items():
        if value is None:
            environ.pop(name, None)
        else:
            environ[name] = value
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "maison_slack", *args, env=environ,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    try:
        output, _ = await asyncio.wait_for(process.communicate(), timeout=45)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    text = output.decode()
    leaked = [name for name in CREDENTIALS
              for value in {environ.get(name), bot_env.env()[name]} if value and value in text]
    assert not leaked, f"{leaked} printed:\n{text}"
    assert "Traceback" not in text, text
    assert process.returncode is not None
    return process.returncode, text


async def run_doctor(bot_env: BotEnv, **env: str | None) -> tuple[int, dict[str, tuple[str, str]], str]:
    code, text = await run_maison(bot_env, "doctor", **env)
    return code, table(text), text


def table(text: str) -> dict[str, tuple[str, str]]:
    """check -> (result, fix), each cell's wrapped lines joined, read at the header's columns."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("check "))
    result_at, fix_at = lines[start].index("result"), lines[start].index("fix")
    rows: dict[str, list[list[str]]] = {}
    check = ""
    for line in lines[start + 1:]:
        if not line.strip():
            break
        if line[:result_at].strip():
            check = line[:result_at].strip()
            rows[check] = [[], []]
        rows[check][0].append(line[result_at:fix_at].strip())
        rows[check][1].append(line[fix_at:].strip())
    return {name: (" ".join(filter(None, r)), " ".join(filter(None, f))) for name, (r, f) in rows.items()}


def outcome(row: tuple[str, str]) -> str:
    return row[0].split(" ", 1)[0]


def assert_only_failure(rows: dict[str, tuple[str, str]], check: str, *in_fix: str) -> tuple[str, str]:
    """`check` failed, with a fix naming each of `in_fix`; no other row failed."""
    assert outcome(rows[check]) == "FAIL", rows[check]
    for words in in_fix:
        assert words in rows[check][1], rows[check]
    others = {name: row for name, row in rows.items() if name != check and outcome(row) == "FAIL"}
    assert not others, others
    return rows[check]


# -- a good setup ----------------------------------------------------------------------------------


async def test_a_good_setup_passes_every_check_and_changes_nothing(bot_env):
    code, rows, text = await run_doctor(bot_env, DAYTONA_TARGET=bot_env.daytona.target)

    assert code == 0, text
    assert tuple(rows) == ROWS
    assert all(outcome(row) == "ok" and not row[1] for row in rows.values()), text
    assert "bot @maison (U0BOT) in Fake Team (T0FAKE)" in rows["Slack bot token"][0]
    assert f"all {len(BOT_SCOPES)} bot scopes of manifest.yml granted" in rows["Slack bot scopes"][0]
    assert "hello received (app A0FAKE)" in rows["Slack app token"][0]
    assert "daytona-small is active (one of Daytona's)" in rows["Daytona snapshot"][0]
    assert f"{bot_env.daytona.target} is available" in rows["Daytona region"][0]
    assert f"All {len(ROWS)} checks passed." in text
    # Read-only: no sandbox, no Secret, no message; one Socket Mode connection, closed again.
    assert bot_env.daytona.sandboxes == {} and bot_env.daytona.secrets == {}
    assert not any(call.method.startswith(("chat.", "reactions.")) for call in bot_env.slack.calls)
    assert bot_env.slack.connections_opened == 1 and not bot_env.slack.connected
    assert [r.path for r in bot_env.anthropic.other_requests] == ["/v1/models"] and not bot_env.anthropic.requests


async def test_an_organization_snapshot_is_found_directly(bot_env):
    bot_env.daytona.snapshots["team-image"] = SnapshotSpec()

    code, rows, text = await run_doctor(bot_env, MAISON_SNAPSHOT="team-image")

    assert code == 0, text
    assert "team-image is active (your organization's)" in rows["Daytona snapshot"][0]


# -- Slack -----------------------------------------------------------------------------------------


async def test_a_wrong_bot_token_fails_with_how_to_get_the_right_one(bot_env):
    code, rows, text = await run_doctor(bot_env, SLACK_BOT_TOKEN="xoxb-revoked-0000000000")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Slack bot token", "reinstall the app", "Bot User OAuth Token")
    assert "invalid_auth" in result
    assert outcome(rows["Slack bot scopes"]) == "skip"


async def test_a_missing_scope_is_named_with_the_fix(bot_env):
    bot_env.slack.bot_scopes.remove("files:write")

    code, rows, text = await run_doctor(bot_env)

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Slack bot scopes", "Bot Token Scopes", "reinstall the app")
    assert "missing files:write" in result


async def test_a_wrong_app_token_fails_with_how_to_generate_one(bot_env):
    code, rows, text = await run_doctor(bot_env, SLACK_APP_TOKEN="xapp-revoked-0000000000")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Slack app token", "App-Level Tokens", "connections:write")
    assert "apps.connections.open refused (invalid_auth)" in result
    assert bot_env.slack.connections_opened == 0


async def test_socket_mode_turned_off_is_named(bot_env):
    bot_env.slack.socket_mode_enabled = False

    code, rows, text = await run_doctor(bot_env)

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Slack app token", "Socket Mode → Enable")
    assert "Socket Mode is turned off (link_disabled)" in result


# -- Daytona ---------------------------------------------------------------------------------------


async def test_a_wrong_daytona_key_fails_and_the_rest_of_daytona_is_skipped(bot_env):
    code, rows, text = await run_doctor(bot_env, DAYTONA_API_KEY="dtn-revoked-0000000000")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Daytona API key", "DAYTONA_API_KEY", "API Keys")
    assert "HTTP 401" in result
    for check in ("Daytona region", "Daytona snapshot", "Daytona Secrets"):
        assert outcome(rows[check]) == "skip", rows[check]


async def test_a_missing_snapshot_fails_with_the_setting_to_change(bot_env):
    code, rows, text = await run_doctor(bot_env, MAISON_SNAPSHOT="no-such-snapshot")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Daytona snapshot", "MAISON_SNAPSHOT")
    assert "no snapshot named 'no-such-snapshot'" in result


async def test_a_region_the_organization_cannot_use_names_the_ones_it_can(bot_env):
    code, rows, text = await run_doctor(bot_env, DAYTONA_TARGET="mars")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Daytona region", "DAYTONA_TARGET")
    assert f"available: {bot_env.daytona.target}" in result


async def test_secrets_unavailable_fails_and_names_the_fallback(bot_env):
    bot_env.daytona.inject("GET", r"^/api/secret", 403)

    code, rows, text = await run_doctor(bot_env)

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Daytona Secrets", "permission to manage Secrets",
                                    "MAISON_KEY_IN_SANDBOX=env")
    assert "HTTP 403" in result
    assert bot_env.daytona.faults == []  # the refused call was made

    # With the fallback chosen, Secrets are not needed and not asked for.
    bot_env.daytona.inject("*", r"^/api/secret", 403)
    code, rows, text = await run_doctor(bot_env, MAISON_KEY_IN_SANDBOX="env")
    assert code == 0, text
    assert outcome(rows["Daytona Secrets"]) == "skip"
    assert len(bot_env.daytona.faults) == 1


# -- Anthropic -------------------------------------------------------------------------------------


async def test_a_wrong_anthropic_key_fails_with_where_to_create_one(bot_env):
    code, rows, text = await run_doctor(bot_env, ANTHROPIC_API_KEY="sk-ant-revoked-0000000000")

    assert code == 1, text
    result, _ = assert_only_failure(rows, "Anthropic API key", "ANTHROPIC_API_KEY", "console.anthropic.com")
    assert "refused it (HTTP 401 authentication_error)" in result


# -- configuration and the command line -------------------------------------------------------------


async def test_a_configuration_that_does_not_load_exits_2_listing_every_problem(bot_env):
    code, text = await run_maison(bot_env, "doctor", SLACK_BOT_TOKEN=None, DAYTONA_API_KEY=None,
                                  MAISON_ALLOWED_USERS=",")

    assert code == 2, text
    assert "FAIL 3 problem(s), listed below" in table(text)["configuration"][0]
    for problem in ("SLACK_BOT_TOKEN is not set", "DAYTONA_API_KEY is not set",
                    "MAISON_ALLOWED_USERS is set but names no user"):
        assert f"  - {problem}" in text, text
    assert bot_env.slack.calls == [] and bot_env.anthropic.other_requests == []


async def test_help_lists_the_bot_and_the_doctor(bot_env):
    code, text = await run_maison(bot_env, "--help")

    assert code == 0, text
    assert "run " in text and "doctor " in text and "the default" in text


async def test_without_a_command_it_still_runs_the_bot(bot_env):
    async with bot_env.process():
        assert bot_env.slack.connected


# -- parts -----------------------------------------------------------------------------------------


def test_the_manifest_parser_reads_the_bot_scopes_only():
    with open("manifest.yml", encoding="utf-8") as manifest:
        assert manifest_bot_scopes(manifest.read()) == list(BOT_SCOPES)
    yaml = ("oauth_config:\n  redirect_urls:\n    - https://x.example\n  scopes:\n    user:\n      - search:read\n"
            "    bot:\n    - 'chat:write'   # indentless\n    - commands\nsettings:\n  bot: [nope]\n")
    assert manifest_bot_scopes(yaml) == ["chat:write", "commands"]
    assert manifest_bot_scopes("oauth_config:\n  scopes:\n    bot: [chat:write, \"users:read\"]\n") == [
        "chat:write", "users:read"]


async def test_a_check_without_an_answer_fails_in_time_and_skips_what_depends_on_it(monkeypatch):
    monkeypatch.setattr(doctor_module, "CHECK_TIMEOUT", 0.05)

    async def hangs() -> list:
        await asyncio.sleep(5)
        return []

    first, second = await doctor_module.guarded(("A", "B"), hangs(), "check the network")

    assert (first.outcome, first.detail, first.fix) == (Outcome.FAILED, "no answer within 0.05 s", "check the network")
    assert (second.outcome, second.detail) == (Outcome.SKIPPED, "A failed")


@pytest.mark.parametrize("width", [80, 200])
def test_the_table_keeps_every_word_at_any_width(width):
    rows = [doctor_module.failed("Slack bot scopes", "missing files:write, users:read (manifest.yml asks for 10)",
                                 "add them under OAuth & Permissions → Scopes → Bot Token Scopes, then reinstall"),
            doctor_module.passed("Anthropic API key", "works (api.anthropic.com)")]

    text = doctor_module.render(rows, width=width)

    parsed = table(text)
    assert parsed["Slack bot scopes"] == (f"FAIL {rows[0].detail}", rows[0].fix)
    assert parsed["Anthropic API key"] == ("ok   works (api.anthropic.com)", "")
    assert text.endswith("1 of 2 checks failed: Slack bot scopes.")


# -- the channels' repositories (issue 9) ------------------------------------------------------------


async def set_channel_repo(bot_env: BotEnv, channel: str, url: str) -> None:
    """As `/maison config repo` leaves it in the bot's database."""
    from maison_slack.storage import Store
    async with await Store.open(bot_env.db_path) as store:
        await store.set_channel_setting(channel, "repo", url, "U0ALICE")


async def test_the_channels_repositories_are_checked_with_the_git_token(bot_env, git_host):
    git_host.add_user("x-access-token", "ghp_doctor_token_1234567890")
    git_host.create_repo("team/app", private=True)
    await set_channel_repo(bot_env, "C0GOOD", git_host.url("team/app", loopback=True))
    await set_channel_repo(bot_env, "C0GONE", git_host.url("team/gone", loopback=True))
    before = bot_env.db_path.read_bytes()

    code, rows, text = await run_doctor(bot_env, DAYTONA_TARGET=bot_env.daytona.target,
                                        MAISON_GIT_TOKEN="ghp_doctor_token_1234567890")

    assert code == 1, text
    assert rows["Repository (C0GOOD)"][0].startswith("ok") and "with MAISON_GIT_TOKEN" in rows["Repository (C0GOOD)"][0]
    assert_only_failure(rows, "Repository (C0GONE)", "check the URL", "C0GONE")
    assert "ghp_doctor_token_1234567890" not in text
    assert bot_env.db_path.read_bytes() == before  # read-only
    assert {r.username for r in git_host.requests} == {"x-access-token"}

    code, rows, text = await run_doctor(bot_env, DAYTONA_TARGET=bot_env.daytona.target, MAISON_GIT_TOKEN="ghp_wrong")
    assert "refused the token (HTTP 401)" in rows["Repository (C0GOOD)"][0]
    assert "MAISON_GIT_TOKEN" in rows["Repository (C0GOOD)"][1]
