"""Unit tests for maison_slack.slack.config: allow-lists fail closed, and the redaction set."""

from __future__ import annotations

import pytest

from maison_slack.slack.app import main
from maison_slack.slack.config import ConfigError, Settings, load_settings

REQUIRED = {
    "SLACK_BOT_TOKEN": "xoxb-bot-token-123",
    "SLACK_APP_TOKEN": "xapp-app-token-123",
    "DAYTONA_API_KEY": "dtn_daytona-key-123",
    "ANTHROPIC_API_KEY": "sk-ant-api-key-123",
}


def problems(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as raised:
        load_settings({**REQUIRED, **env})
    return raised.value.problems


class TestAllowLists:
    def test_unset_or_empty_allows_everyone(self) -> None:
        for env in ({}, {"MAISON_ALLOWED_USERS": "", "MAISON_ALLOWED_CHANNELS": ""}):
            settings = load_settings({**REQUIRED, **env})
            assert settings.allowed_users == frozenset() and settings.allowed_channels == frozenset()
            assert settings.allowed("U0ANYONE", "C0ANY")

    def test_ids_separated_by_commas_or_whitespace(self) -> None:
        settings = load_settings({**REQUIRED, "MAISON_ALLOWED_USERS": "U0ALICE, W0BOB\n U1",
                                  "MAISON_ALLOWED_CHANNELS": "C0DEV,G0PRIVATE D0DM"})
        assert settings.allowed_users == {"U0ALICE", "W0BOB", "U1"}
        assert settings.allowed_channels == {"C0DEV", "G0PRIVATE", "D0DM"}
        assert settings.allowed("W0BOB", "D0DM") and not settings.allowed("U0EVE", "C0DEV")

    @pytest.mark.parametrize("value", [",", " ", ", ,\n"])
    def test_a_list_that_names_nobody_is_an_error(self, value: str) -> None:
        assert problems(MAISON_ALLOWED_USERS=value) == [
            "MAISON_ALLOWED_USERS is set but names no user; unset it to allow everyone"]
        assert problems(MAISON_ALLOWED_CHANNELS=value) == [
            "MAISON_ALLOWED_CHANNELS is set but names no channel; unset it to allow everyone"]

    @pytest.mark.parametrize("bad", ["u0alice", "alice", "@alice", "<@U0ALICE>", "C0DEV", "U", "U0-ALICE"])
    def test_a_malformed_user_id_is_an_error(self, bad: str) -> None:
        (problem,) = problems(MAISON_ALLOWED_USERS=f"U0ALICE,{bad}")
        assert problem.startswith(f"MAISON_ALLOWED_USERS: {bad!r} is not a Slack user id")

    @pytest.mark.parametrize("bad", ["#general", "general", "c0dev", "U0ALICE", "C"])
    def test_a_malformed_channel_id_is_an_error(self, bad: str) -> None:
        (problem,) = problems(MAISON_ALLOWED_CHANNELS=f"C0DEV {bad}")
        assert problem.startswith(f"MAISON_ALLOWED_CHANNELS: {bad!r} is not a Slack channel id")

    def test_every_problem_is_listed_and_the_bot_exits_2(self, monkeypatch: pytest.MonkeyPatch,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
        for name, value in {**REQUIRED, "MAISON_ALLOWED_USERS": ",", "MAISON_ALLOWED_CHANNELS": "dev"}.items():
            monkeypatch.setenv(name, value)
        with pytest.raises(SystemExit) as exited:
            main([])
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert "MAISON_ALLOWED_USERS is set but names no user" in err
        assert "MAISON_ALLOWED_CHANNELS: 'dev' is not a Slack channel id" in err


class TestSecrets:
    def settings(self) -> Settings:
        return load_settings(REQUIRED)

    def test_the_bots_own_tokens_and_keys(self) -> None:
        assert set(self.settings().secrets({})) == set(REQUIRED.values())

    def test_every_forwarded_credential(self) -> None:
        environ = {
            "ANTHROPIC_AUTH_TOKEN": "auth-token-123456",
            "CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-abcdef",
            "CLAUDE_CODE_OAUTH_REFRESH_TOKEN": "sk-ant-ort01-abcdef",
            "ANTHROPIC_FOUNDRY_API_KEY": "foundry-key-123456",
            "ANTHROPIC_CUSTOM_HEADERS": "X-Gateway-Key: gw-secret-123456\nX-Team:  platform-team \nnot a header",
        }
        secrets = self.settings().secrets(environ)
        for value in ("auth-token-123456", "sk-ant-oat01-abcdef", "sk-ant-ort01-abcdef", "foundry-key-123456",
                      "gw-secret-123456", "platform-team"):
            assert value in secrets

    def test_settings_that_are_no_credentials_stay_readable(self) -> None:
        environ = {
            "ANTHROPIC_MODEL": "claude-sonnet-4-5-20250929",
            "ANTHROPIC_BASE_URL": "https://gateway.example.com",
            "CLAUDE_CODE_MAX_OUTPUT_TOKENS": "128000000",
            "GITHUB_TOKEN": "ghp_not-forwarded-123",  # not forwarded into sandboxes
        }
        assert set(self.settings().secrets(environ)) == set(REQUIRED.values())

    def test_read_from_the_process_environment_by_default(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("ANTHROPIC_AUTH_TOKEN", "from-the-environment-123")
        assert "from-the-environment-123" in self.settings().secrets()


class TestTeamSettings:
    """Issue 9: who may change channel settings, the git token, spending caps."""

    def test_admins_change_settings_only_when_listed(self) -> None:
        settings = load_settings({**REQUIRED, "MAISON_ADMINS": "U0ALICE"})
        assert settings.may_configure("U0ALICE", "C0DEV") and not settings.may_configure("U0BOB", "C0DEV")
        assert load_settings(REQUIRED).may_configure("U0BOB", "C0DEV")
        assert problems(MAISON_ADMINS="alice") == [
            "MAISON_ADMINS: 'alice' is not a Slack user id (like U024BE7LH or W024BE7LH: uppercase letters and digits)"]

    def test_an_admin_outside_the_allow_list_may_not_configure(self) -> None:
        settings = load_settings({**REQUIRED, "MAISON_ADMINS": "U0ALICE", "MAISON_ALLOWED_USERS": "U0BOB"})
        assert not settings.may_configure("U0ALICE", "C0DEV")

    @pytest.mark.parametrize("name", ["MAISON_MAX_RUN_USD", "MAISON_MAX_THREAD_USD", "MAISON_MAX_CHANNEL_DAILY_USD"])
    def test_caps_are_amounts_above_zero(self, name: str) -> None:
        assert getattr(load_settings({**REQUIRED, name: "$2.50"}), name.removeprefix("MAISON_").lower()) == 2.5
        assert getattr(load_settings(REQUIRED), name.removeprefix("MAISON_").lower()) is None
        for bad in ("0", "-1", "ten", "nan", "inf"):
            assert problems(**{name: bad}) == [
                f"{name} must be an amount in USD greater than 0, like 5 or 0.50, not {bad!r}"]

    def test_the_git_token_is_redacted(self) -> None:
        settings = load_settings({**REQUIRED, "MAISON_GIT_TOKEN": "glpat-secret-token-value"})
        assert "glpat-secret-token-value" in settings.secrets({})
