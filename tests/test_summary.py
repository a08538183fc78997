"""Unit tests for maison_slack.core.summary: tool calls and run figures in plain words."""

from __future__ import annotations

import pytest

from maison_slack.core.summary import ToolCall, describe_tool, run_cost, run_model, run_stats


class TestDescribeTool:
    """The plain words; tests/test_markup.py checks the same calls rendered as mrkdwn."""

    @pytest.mark.parametrize(
        "name, tool_input, expected",
        [
            ("Bash", {"command": "npm test"}, ToolCall("Running", "npm test")),
            ("Bash", {"description": "Run tests"}, ToolCall("Running a command:", "Run tests")),
            ("Bash", {"command": "  ", "description": ""}, ToolCall("Running a command")),
            ("Edit", {"file_path": "/home/daytona/app.py"}, ToolCall("Editing", "app.py")),
            ("NotebookEdit", {"notebook_path": "/n/nb.ipynb"}, ToolCall("Editing", "nb.ipynb")),
            ("Write", {"file_path": "C:\\work\\x.txt"}, ToolCall("Writing", "x.txt")),
            ("Read", {"file_path": "/a/dir/"}, ToolCall("Reading", "dir")),
            ("Read", {"file_path": "/"}, ToolCall("Reading a file")),
            ("LS", {"path": "/home/daytona/src"}, ToolCall("Listing", "src")),
            ("LS", {}, ToolCall("Listing files")),
            ("Grep", {"pattern": "`foo` <b>"}, ToolCall("Searching for", "`foo` <b>")),
            ("WebFetch", {"url": "https://x.y/a?b=1"}, ToolCall("Fetching", "https://x.y/a?b=1")),
            ("WebSearch", {"query": "slack limits"}, ToolCall("Searching the web for", "slack limits")),
            ("TodoWrite", {"todos": []}, ToolCall("Updating the plan")),
            ("Task", {"subagent_type": "reviewer"}, ToolCall("Running a subagent:", "reviewer")),
            ("Agent", {}, ToolCall("Running a subagent")),
            (" mcp__github__create_issue ", {}, ToolCall("Using", "mcp__github__create_issue")),
            ("", {}, ToolCall("Using a tool")),
        ],
    )
    def test_examples(self, name: str, tool_input: dict[str, object], expected: ToolCall) -> None:
        assert describe_tool(name, tool_input) == expected

    def test_subject_is_first_line_marked_when_more_follow(self) -> None:
        assert describe_tool("Bash", {"command": "\n  cd app  \nnpm test"}) == ToolCall("Running", "cd app …")

    def test_subject_shortened(self) -> None:
        subject = describe_tool("Bash", {"command": "echo " + "a" * 200 + "\nmore"}).subject
        assert len(subject) == 80 and subject.endswith("a…")

    def test_str_is_plain_text(self) -> None:
        assert str(ToolCall("Running", "npm test")) == "Running npm test"
        assert str(ToolCall("Updating the plan")) == "Updating the plan"

    def test_odd_input_never_raises(self) -> None:
        class Exploding(dict):  # type: ignore[type-arg]
            def get(self, key: object, default: object = None) -> object:
                raise RuntimeError("boom")

        assert describe_tool("Bash", Exploding()) == ToolCall("Using a tool")
        assert describe_tool(["Bash"], {"command": "ls"}) == ToolCall("Using a tool")


class TestRunStats:
    def test_example(self) -> None:
        assert run_stats(12_345, 3, 0.0123) == "12.3s · 3 turns · $0.0123"

    def test_singular_turn(self) -> None:
        assert run_stats(None, 1, None) == "1 turn"
        assert run_stats(None, 0, None) == "0 turns"

    @pytest.mark.parametrize(
        "ms, expected",
        [
            (0, "0.0s"),
            (49, "0.0s"),
            (940, "0.9s"),
            (960, "1.0s"),
            (1_000, "1.0s"),
            (59_900, "59.9s"),
            (59_960, "1m 00s"),
            (60_000, "1m 00s"),
            (125_000, "2m 05s"),
            (3_599_000, "59m 59s"),
            (3_600_000, "1h 00m 00s"),
            (3_725_000, "1h 02m 05s"),
        ],
    )
    def test_durations(self, ms: float, expected: str) -> None:
        assert run_stats(ms, None, None) == expected

    def test_missing_parts_omitted(self) -> None:
        assert run_stats(None, None, None) == ""
        assert run_stats(2_000, None, None) == "2.0s"
        assert run_stats(None, None, 0.5) == "$0.5000"
        assert run_stats(2_000, None, 0.01) == "2.0s · $0.0100"

    def test_costs(self) -> None:
        assert run_stats(None, None, 0) == "$0.0000"
        assert run_stats(None, None, 1.5) == "$1.50"
        assert run_stats(None, None, 12.5) == "$12.50"
        assert run_stats(None, None, 0.99994) == "$0.9999"

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -1, "12", True])
    def test_bad_values_omitted(self, bad: object) -> None:
        assert run_stats(bad, None, None) == ""  # type: ignore[arg-type]
        assert run_stats(None, bad, None) == ""  # type: ignore[arg-type]
        assert run_stats(None, None, bad) == ""  # type: ignore[arg-type]


def test_run_cost_is_this_runs_not_the_conversations():
    """A resumed run's `total_cost_usd` counts the whole conversation; `model_usage_since_last_result`
    only this run (../shared/reference/claude-code.md §9.4)."""
    resumed = {"total_cost_usd": 0.00028, "model_usage_since_last_result": {
        "claude-opus-5-5": {"costUSD": 0.00014}, "claude-haiku-5-5": {"costUSD": 0.00001}}}
    assert run_cost(resumed) == pytest.approx(0.00015)
    assert run_cost({"total_cost_usd": 0.00014}) == 0.00014  # an older CLI: the only figure there is
    assert run_cost({"total_cost_usd": "junk"}) is None
    assert run_model(resumed) == "claude-opus-5-5"  # the one that cost most
    assert run_model({"modelUsage": {"claude-opus-4-8[1m]": {"costUSD": 0.1}}}) == "claude-opus-4-8"
    assert run_model({}) is None
    assert run_stats(1000, 1, 0.00014, "claude-opus-5-5") == "1.0s · 1 turn · $0.0001 · claude-opus-5-5"
