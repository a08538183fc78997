"""Unit tests for maison_slack.slack.markup: mrkdwn out (status lines), plain text in."""

from __future__ import annotations

import pytest

from maison_slack.slack.markup import escape_mrkdwn, neutralize_broadcasts, slack_to_plain, tool_status
from maison_slack.slack.redact import Redactor


class TestToolStatus:
    def test_bash(self) -> None:
        assert tool_status("Bash", {"command": "npm test"}) == "Running `npm test`"

    def test_bash_first_line_only(self) -> None:
        status = tool_status("Bash", {"command": "cd app\nnpm test"})
        assert status.startswith("Running `cd app")
        assert "npm test" not in status and "\n" not in status

    def test_bash_truncated(self) -> None:
        status = tool_status("Bash", {"command": "echo " + "a" * 200})
        inner = status[len("Running `") : -1]
        assert inner.endswith("…")
        assert len(inner) <= 80

    def test_bash_backticks_do_not_break_code(self) -> None:
        status = tool_status("Bash", {"command": "echo `date` && ls"})
        assert status.startswith("Running `") and status.endswith("`")
        assert status[len("Running `") : -1].count("`") == 0
        assert "date" in status

    def test_bash_without_command(self) -> None:
        assert tool_status("Bash", {}) == "Running a command"
        assert tool_status("Bash", {"description": "Run tests"}) == "Running a command: Run tests"

    @pytest.mark.parametrize("tool", ["Edit", "MultiEdit"])
    def test_edit(self, tool: str) -> None:
        assert tool_status(tool, {"file_path": "/home/daytona/app.py"}) == "Editing `app.py`"

    def test_write_read(self) -> None:
        assert tool_status("Write", {"file_path": "/a/b/x"}) == "Writing `x`"
        assert tool_status("Read", {"file_path": "x"}) == "Reading `x`"
        assert tool_status("Read", {"file_path": "/a/dir/"}) == "Reading `dir`"
        assert tool_status("NotebookEdit", {"notebook_path": "/n/nb.ipynb"}) == "Editing `nb.ipynb`"

    def test_file_tools_without_path(self) -> None:
        assert tool_status("Edit", {}) == "Editing a file"
        assert tool_status("Write", {"file_path": None}) == "Writing a file"
        assert tool_status("Read", {"file_path": 42}) == "Reading a file"
        assert tool_status("Read", {"file_path": "/"}) == "Reading a file"

    @pytest.mark.parametrize("tool", ["Glob", "Grep"])
    def test_search(self, tool: str) -> None:
        assert tool_status(tool, {"pattern": "**/*.py"}) == "Searching for `**/*.py`"
        assert tool_status(tool, {}) == "Searching the code"

    def test_grep_pattern_with_backtick(self) -> None:
        status = tool_status("Grep", {"pattern": "`foo`"})
        assert status.count("`") == 2

    def test_web_fetch(self) -> None:
        assert tool_status("WebFetch", {"url": "https://x.y/a?b=1"}) == "Fetching <https://x.y/a?b=1>"
        odd = tool_status("WebFetch", {"url": "not a url>"})
        assert "<" not in odd and "not a url" in odd
        assert tool_status("WebFetch", {}) == "Fetching a web page"

    def test_web_search(self) -> None:
        status = tool_status("WebSearch", {"query": "slack markdown block limits"})
        assert status.startswith("Searching the web for")
        assert "slack markdown block limits" in status
        assert tool_status("WebSearch", {}) == "Searching the web"

    def test_todo(self) -> None:
        assert tool_status("TodoWrite", {"todos": []}) == "Updating the plan"

    @pytest.mark.parametrize("tool", ["Task", "Agent"])
    def test_subagent(self, tool: str) -> None:
        status = tool_status(tool, {"description": "Find the bug", "prompt": "..."})
        assert status == "Running a subagent: Find the bug"
        assert tool_status(tool, {}) == "Running a subagent"

    def test_input_cannot_ping_or_break_markup(self) -> None:
        assert tool_status("Bash", {"command": "echo <!channel> & done"}) == "Running `echo &lt;!channel&gt; &amp; done`"
        assert tool_status("Task", {"description": "Check <@U1>"}) == "Running a subagent: Check &lt;@U1&gt;"

    def test_other_tools(self) -> None:
        assert tool_status("mcp__github__create_issue", {}) == "Using `mcp__github__create_issue`"
        assert tool_status("We`ird", {}).count("`") == 2

    @pytest.mark.parametrize(
        "name, tool_input",
        [
            ("Bash", None),
            ("Bash", "npm test"),
            ("Bash", {"command": ["npm", "test"]}),
            ("Bash", {"command": "   \n  "}),
            ("Edit", {"file_path": {"x": 1}}),
            ("WebFetch", {"url": 3}),
            ("Task", {"description": None}),
            (None, {}),
            ("", {}),
            (42, []),
        ],
    )
    def test_never_raises(self, name: object, tool_input: object) -> None:
        status = tool_status(name, tool_input)  # type: ignore[arg-type]
        assert isinstance(status, str) and status
        assert "\n" not in status

    def test_all_statuses_are_single_short_lines(self) -> None:
        long = "x" * 500 + "\nmore"
        for tool, key in [
            ("Bash", "command"), ("Edit", "file_path"), ("Glob", "pattern"),
            ("WebSearch", "query"), ("Task", "description"), ("WebFetch", "url"),
        ]:
            status = tool_status(tool, {key: long})
            assert "\n" not in status
            assert len(status) < 120


class TestToolStatusRedaction:
    """Secrets are masked before the line is shortened: a cut secret no longer matches."""

    KEY = "sk-ant-api03-" + "k" * 60 + "-tail"
    redact = staticmethod(Redactor([KEY]).redact)

    def test_long_secret_leaves_no_fragment(self) -> None:
        command = f"curl -H 'x-api-key: xxxxxxxxxxx{self.KEY}' https://api.example.com/v1/messages"
        unredacted = tool_status("Bash", {"command": command})
        assert "sk-ant-api03-kkk" in unredacted  # what the bug showed: the first half of the key
        status = tool_status("Bash", {"command": command}, self.redact)
        assert "sk-ant" not in status and "kkkk" not in status
        assert status.startswith("Running `curl -H 'x-api-key: xxxxxxxxxxx[redacted]'")

    def test_secret_in_a_path_is_masked_before_the_basename(self) -> None:
        secret = "abc/def/ghi/jkl-0123456789"  # a path-like secret (base64 holds "/")
        status = tool_status("Read", {"file_path": f"/home/{secret}"}, Redactor([secret]).redact)
        assert status == "Reading `[redacted]`"

    def test_descriptions_labels_and_urls(self) -> None:
        assert self.KEY not in tool_status("Bash", {"description": f"use {self.KEY}"}, self.redact)
        assert "kkkk" not in tool_status(f"mcp__{self.KEY}", {}, self.redact)
        status = tool_status("WebFetch", {"url": f"https://x.test/?key={self.KEY}"}, self.redact)
        assert status == "Fetching <https://x.test/?key=[redacted]>"


class TestNeutralizeBroadcasts:
    @pytest.mark.parametrize(
        "text, expected",
        [
            ("<!channel> deploy is broken", "@channel deploy is broken"),
            ("<!here> and <!everyone>", "@here and @everyone"),
            ("<!here|here> <!channel|@channel>", "@here @channel"),
            ("<!group>", "@group"),
            ("ping <!subteam^S0123|@oncall> now", "ping @oncall now"),
            ("<!subteam^S0123>", "@S0123"),
        ],
    )
    def test_broadcasts_become_words(self, text: str, expected: str) -> None:
        assert neutralize_broadcasts(text) == expected

    def test_everything_else_is_kept(self) -> None:
        text = "ask <@U1> in <#C9|dev>: <https://a.b|doc> &lt;!channel&gt; <!date^1^{date}|today> a < b"
        assert neutralize_broadcasts(text) == text


def test_escape_mrkdwn() -> None:
    assert escape_mrkdwn("a <@U1> & <!here> > b") == "a &lt;@U1&gt; &amp; &lt;!here&gt; &gt; b"
    assert escape_mrkdwn("&amp;") == "&amp;amp;"  # already escaped text is escaped again


class TestSlackToPlain:
    def test_bot_mention_removed_with_whitespace(self) -> None:
        assert slack_to_plain("<@UBOT>   fix the tests", bot_user_id="UBOT") == "fix the tests"
        assert slack_to_plain("hey <@UBOT> please", bot_user_id="UBOT") == "hey please"
        assert slack_to_plain("thanks <@UBOT>", bot_user_id="UBOT") == "thanks"
        assert slack_to_plain("<@UBOT|maison>\nhi", bot_user_id="UBOT") == "hi"

    def test_bot_mention_kept_when_bot_unknown(self) -> None:
        assert slack_to_plain("<@UBOT> hi") == "@UBOT hi"

    def test_user_mentions(self) -> None:
        names = {"U123": "alice"}
        assert slack_to_plain("ask <@U123>", names) == "ask @alice"
        assert slack_to_plain("ask <@U999>", names) == "ask @U999"
        assert slack_to_plain("ask <@U999|bob>") == "ask @bob"
        assert slack_to_plain("ask <@W42>") == "ask @W42"

    def test_channels(self) -> None:
        assert slack_to_plain("see <#C123|general>") == "see #general"
        assert slack_to_plain("see <#C123>") == "see #C123"
        assert slack_to_plain("see <#C123|>") == "see #C123"

    def test_specials(self) -> None:
        assert slack_to_plain("<!here> deploy") == "@here deploy"
        assert slack_to_plain("<!channel>") == "@channel"
        assert slack_to_plain("<!everyone>") == "@everyone"
        assert slack_to_plain("<!here|@here>") == "@here"
        assert slack_to_plain("<!subteam^S1|@team> look") == "@team look"
        assert slack_to_plain("<!subteam^S1>") == "@S1"
        assert slack_to_plain("<!date^1392734382^{date}|Feb 18th>") == "Feb 18th"

    def test_links(self) -> None:
        assert slack_to_plain("<https://x.y|label>") == "label (https://x.y)"
        assert slack_to_plain("<https://x.y|https://x.y>") == "https://x.y"
        assert slack_to_plain("<https://x.y>") == "https://x.y"
        assert slack_to_plain("<http://example.com|example.com>") == "example.com"
        assert slack_to_plain("<mailto:a@b.c|a@b.c>") == "a@b.c"
        assert slack_to_plain("<mailto:a@b.c>") == "a@b.c"
        assert slack_to_plain("<mailto:a@b.c|Alice>") == "Alice (a@b.c)"

    def test_link_with_escaped_query(self) -> None:
        assert slack_to_plain("<https://x.y/?a=1&amp;b=2>") == "https://x.y/?a=1&b=2"
        assert slack_to_plain("<https://x.y|a &amp; b>") == "a & b (https://x.y)"

    def test_unescape_order(self) -> None:
        assert slack_to_plain("a &lt;b&gt; &amp; c") == "a <b> & c"
        assert slack_to_plain("&amp;lt;") == "&lt;"
        assert slack_to_plain("&amp;amp;") == "&amp;"

    def test_code_blocks_treated_the_same(self) -> None:
        text = "```\nif a &lt; b &amp;&amp; c &gt; d:\n    ping <@U1>\n```"
        assert slack_to_plain(text, {"U1": "ann"}) == "```\nif a < b && c > d:\n    ping @ann\n```"

    def test_names_are_not_unescaped(self) -> None:
        assert slack_to_plain("<@U1>", {"U1": "R&amp;D"}) == "@R&amp;D"

    def test_strips_and_preserves_inner_whitespace(self) -> None:
        assert slack_to_plain("  \n line one\n\n  line two \n") == "line one\n\n  line two"
        assert slack_to_plain("") == ""

    def test_mixed(self) -> None:
        text = "<@UBOT> ask <@U1> in <#C9|dev> about <https://a.b/c|the doc> &amp; <!here>"
        assert (
            slack_to_plain(text, {"U1": "@ann"}, "UBOT")
            == "ask @ann in #dev about the doc (https://a.b/c) & @here"
        )

    def test_plain_angle_text_untouched(self) -> None:
        assert slack_to_plain("a <b c") == "a <b c"
