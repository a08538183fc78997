"""The team's code (issue 9) against time, not only faults: a slow git host, a slow or
rate-limited Slack, two people doing things at the same moment, and the bot killed mid-way.

`test_team_code.py` proves the feature works when everything answers at once. Here each test
stretches one moment — a clone that hangs while the bot is SIGKILLed or someone says `stop`,
two `push`es or two `/maison config`s racing, a 429 on the diff's upload, a slow or failing
`conversations.replies` when the bot joins a conversation, a budget set while prompts wait,
a restart between a thread's runs, a fork — and asserts what people see afterwards: thread
messages, ephemerals, files in the sandbox, branches on the git host and rows in SQLite.

Same machinery as the acceptance tests: the real bot (in-process, or as a real process that is
SIGKILLed), slack-bolt, the daytona SDK and Claude Code against the doubles, and a loopback
git host whose `slow()` holds a repo's upload-pack/receive-pack POSTs (`held` says when a
clone is under way, so nothing here sleeps to synchronise).
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import (
    Text, ToolUse, Turn, default_responder, has_tool_result, last_user_text, tool_result_text)
from tests.doubles.git_host import GitHost
from tests.doubles.slack import Message, visible_text
from tests.test_bot_lifecycle import (
    bot_replies, final_reply, has_stop_button, requests_with, said, sandbox_of, session_row, store,
    wait_run_states)
from tests.test_team_code import (
    REPO, TOKEN, announcements, configure, edit_and_commit, mention_and_wait, run_git, script, serve)

CANARY = "REPO-CANARY-7731"  # in the README `serve` puts in the repository


# -- helpers ---------------------------------------------------------------------------------------


def branch_of(thread_ts: str) -> str:
    return f"maison/{thread_ts.replace('.', '-')}"


def bash_for(commands: dict[str, str]):
    """A responder: a prompt containing one of `commands`' markers runs that Bash command; the
    turn after a tool result reports it; anything else is the default responder's."""
    def responder(body: dict[str, Any]) -> Any:
        if has_tool_result(body):
            return Turn([Text(f"Tool finished: {tool_result_text(body)[-80:]}")])
        prompt = last_user_text(body)
        for marker, command in commands.items():
            if marker in prompt:
                return Turn([Text("Running it."), ToolUse("Bash", {"command": command})])
        return default_responder(body)
    return responder


def tool_outputs(env: BotEnv, since: int = 0) -> list[str]:
    """The Bash outputs Claude Code sent back to the API, in order (from request `since` on)."""
    return [tool_result_text(r.body) for r in env.anthropic.requests[since:] if r.body and has_tool_result(r.body)]


def clones_started(host: GitHost) -> int:
    """How many clones (or fetches) of the repo began: each starts with this advertisement."""
    return sum(r.method == "GET" and r.path == f"/{REPO}.git/info/refs?service=git-upload-pack" for r in host.requests)


async def bot_says(env: BotEnv, thread_ts: str, fragments: tuple[str, ...], after: str | None = None,
                   timeout: float = 20) -> Message:
    """The first bot message in the thread with one of `fragments`; a clear failure if none comes."""
    def find() -> Message | None:
        return next((m for m in bot_replies(env, thread_ts, after)
                     if any(f in visible_text(m) for f in fragments)), None)
    try:
        return await env.slack.wait_for(find, timeout=timeout)
    except TimeoutError:
        seen = [visible_text(m) for m in bot_replies(env, thread_ts, after)]
        raise AssertionError(f"nothing with {fragments} in the thread after {timeout} s "
                             f"(the request was lost silently); the bot said: {seen}") from None


async def restart_after_kill(env: BotEnv) -> None:
    """Start the bot in-process once the killed process's connection is gone."""
    await env.slack.wait_for(lambda: not env.slack.connected, timeout=10)
    opened = env.slack.connections_opened
    await env.start()
    await env.slack.wait_connected(10, total=opened + 1)


# -- 1. killed mid-clone -----------------------------------------------------------------------------


@pytest.mark.parametrize("chosen", ["--repo in the mention", "the channel's repo"])
async def test_a_bot_killed_mid_clone_shows_it_and_the_next_message_clones_again_beside(bot_env, git_host, chosen):
    """The bot is SIGKILLed while the thread's first clone hangs on the git host, and restarts.
    The repository is the one the first message named (`--repo`), or the channel's."""
    url = serve(bot_env, git_host)
    git_host.slow(REPO, 30, count=1)  # the first clone hangs (ended by the host's stop at teardown)
    option = f"--repo {url} " if chosen.startswith("--repo") else ""
    async with bot_env.process():  # SIGKILLed on leaving
        if not option:
            assert await configure(bot_env, ALICE, f"repo {url}") == "Saved."
        ts = await bot_env.slack.mention(ALICE, CHANNEL, f"{option}KILLCLONE-1 read the README")
        await bot_env.slack.wait_for(lambda: git_host.held, timeout=30)  # the clone is under way
        sandbox_id = await sandbox_of(bot_env, ts)
    home = bot_env.daytona.sandbox(sandbox_id).home
    partial = home / "app"
    assert (partial / ".git").is_dir() and not (partial / "README.md").exists(), "no partial clone to test with"

    await restart_after_kill(bot_env)

    cut = await final_reply(bot_env, ts)
    assert "interrupted" in visible_text(cut).lower() and ":white_check_mark:" not in visible_text(cut)
    await wait_run_states(bot_env, ts, ["interrupted"])
    assert requests_with(bot_env, "KILLCLONE-1") == []

    bot_env.anthropic.responder = bash_for({"KILLCLONE-2": "cat README.md; pwd; git branch --show-current"})
    mark = len(bot_env.anthropic.requests)
    after = await bot_env.slack.post_message(ALICE, CHANNEL, "KILLCLONE-2 what does the README say?", thread_ts=ts)
    reply = visible_text(await final_reply(bot_env, ts, after=after))

    assert ":white_check_mark:" in reply, f"the follow-up failed: {reply}"
    assert clones_started(git_host) == 2, "the thread did not clone again"
    (output,) = tool_outputs(bot_env, mark)
    session = await session_row(bot_env, ts)
    assert session.repo_url == url
    assert CANARY in output and branch_of(ts) in output and session.project in output
    clone = home / Path(session.project).name
    assert clone != partial, "the thread's project is the directory of the cut clone"
    assert (clone / "README.md").read_text().endswith(f"{CANARY}\n")
    assert run_git(clone, "branch", "--show-current") == session.branch == branch_of(ts)
    # Nothing was cloned on top of the partial clone: it is as the kill left it.
    assert not (partial / "README.md").exists()
    await wait_run_states(bot_env, ts, ["interrupted", "done"])


# -- 2. two pushes at once ---------------------------------------------------------------------------


async def test_two_pushes_at_the_same_time_land_one_commit_and_both_are_answered(bot_env, git_host):
    await bot_env.start(git_token=TOKEN)
    git_host.add_user("x-access-token", TOKEN)
    url = serve(bot_env, git_host)
    script(bot_env, *edit_and_commit("Documented the app. TWOPUSH-DONE"))
    ts, reply = await mention_and_wait(bot_env, f"--repo {url} document the app")
    assert "TWOPUSH-DONE" in reply
    git_host.slow(REPO, 1, service="git-receive-pack", count=1)  # the first push is still on the wire

    first, second = await asyncio.gather(bot_env.slack.post_message(ALICE, CHANNEL, "push", thread_ts=ts),
                                         bot_env.slack.post_message(BOB, CHANNEL, "push", thread_ts=ts))
    since = min(first, second, key=float)

    def answers() -> list[Message] | None:
        found = [m for m in bot_replies(bot_env, ts, since) if "push" in visible_text(m)]
        return found if len(found) >= 2 else None
    notices = [visible_text(m) for m in await bot_env.slack.wait_for(answers, timeout=30)]

    assert git_host.held, "the pushes did not overlap"
    assert not [n for n in notices if ":warning:" in n or "Could not" in n], notices
    assert all(":rocket:" in n for n in notices), notices
    assert {who for who in (ALICE, BOB) if any(f"<@{who}>" in n for n in notices)} == {ALICE, BOB}
    assert sum("new commit" in n for n in notices) == 1, notices
    top, claudes, initial, *rest = git_host.log(REPO, branch_of(ts))
    assert rest == [], "more than one new commit on the branch"
    assert top["author_name"] in ("alice", "bob") and top["message"].startswith("Documented the app.")
    assert (claudes["author_name"], initial["author_name"]) == ("Claude", "Repo Owner")
    assert git_host.branches(REPO) == ["main", branch_of(ts)]


# -- 3. a 429 on the diff's upload -------------------------------------------------------------------


@pytest.mark.parametrize("where", ["files.getUploadURLExternal", "upload"])
async def test_diff_gets_through_a_429_on_its_upload(bot, git_host, tmp_path, where):
    url = serve(bot, git_host)
    script(bot, *edit_and_commit(f"Changed the docs. DIFF429-{where}"))
    ts, _ = await mention_and_wait(bot, f"--repo {url} improve the docs")
    bot.slack.inject(where, status=429, retry_after=1)
    uploads = len(bot.slack.uploads_received)

    after = await bot.slack.post_message(BOB, CHANNEL, "diff", thread_ts=ts)
    posted = await bot_says(bot, ts, ("Changes since this thread started", "No changes", ":warning:"), after=after)

    assert "Changes since this thread started" in visible_text(posted), visible_text(posted)
    if where == "upload":
        assert len(bot.slack.uploads_received) - uploads == 2, "the upload was not refused, then sent again"
    else:
        assert where in bot.slack.rate_limited
    patch = bot.slack.file_content(posted.files[0]["id"])
    original = git_host.checkout(REPO, "main", tmp_path / "original")
    (tmp_path / "change.patch").write_bytes(patch)
    run_git(original, "apply", str(tmp_path / "change.patch"))
    assert (original / "docs/new.md").read_text() == "new doc\n"
    assert not [m for m in bot_replies(bot, ts, after) if ":warning:" in visible_text(m)]


# -- 4. the conversation a mention joins, read slowly or not at all --------------------------------


async def conversation(env: BotEnv, marker: str) -> str:
    """A thread where people talked without the bot; its ts. Waits until the bot has looked at
    each reply (it reads a young thread's first message to see whether it mentions the bot)."""
    root = await env.slack.post_message(BOB, CHANNEL, f"{marker}-0 the login page is broken")
    await env.slack.post_message(ALICE, CHANNEL, f"{marker}-1 since the deploy at noon", thread_ts=root)
    await env.slack.wait_for(lambda: len([c for c in env.slack.calls if c.method == "conversations.replies"
                                          and c.done]) >= 1, timeout=10)
    return root


def reading_context(args: dict[str, Any]) -> bool:
    """The bot's read of a thread's earlier messages (not its one-message look at a parent)."""
    return str(args.get("limit")) == "200"


async def test_a_slow_conversations_replies_delays_the_answer_but_keeps_the_context(bot):
    root = await conversation(bot, "SLOWCTX")
    bot.slack.inject("conversations.replies", delay=2.0, match=reading_context)

    _, reply = await mention_and_wait(bot, "SLOWCTX-ASK fix what they describe", thread_ts=root)

    assert ":white_check_mark:" in reply
    (call,) = [c for c in bot.slack.calls if c.method == "conversations.replies" and reading_context(c.args)]
    assert call.ok and call.done - call.time >= 2.0
    (body,) = requests_with(bot, "SLOWCTX-ASK")
    prompt = last_user_text(body)
    assert prompt.index("bob: SLOWCTX-0") < prompt.index("alice: SLOWCTX-1") < prompt.index("SLOWCTX-ASK")
    await wait_run_states(bot, root, ["done"])


@pytest.mark.parametrize("fault", ["error ratelimited", "429 twice"])
async def test_a_failing_conversations_replies_does_not_cost_the_mention(bot, fault):
    marker = "FAILCTX" if fault.startswith("error") else "RLCTX"
    root = await conversation(bot, marker)
    if fault == "error ratelimited":
        bot.slack.inject("conversations.replies", error="ratelimited", match=reading_context)
    else:
        bot.slack.inject("conversations.replies", status=429, retry_after=1, count=2, match=reading_context)

    _, reply = await mention_and_wait(bot, f"{marker}-ASK fix what they describe", thread_ts=root)

    assert ":white_check_mark:" in reply
    (body,) = requests_with(bot, f"{marker}-ASK")
    prompt = last_user_text(body)
    assert prompt.rstrip().endswith(f"{marker}-ASK fix what they describe")
    if fault == "error ratelimited":  # Slack said no: answered without the earlier messages
        assert f"{marker}-0" not in prompt and f"{marker}-1" not in prompt
    else:  # slack_sdk waits out Retry-After twice: the context survives
        assert bot.slack.rate_limited.count("conversations.replies") == 2
        assert f"alice: {marker}-1" in prompt
    await wait_run_states(bot, root, ["done"])


# -- 5. two settings at the same moment --------------------------------------------------------------


async def test_two_people_change_different_settings_at_the_same_moment(bot, git_host):
    url = serve(bot, git_host)
    # Both announcements are slow, so both changes are in flight together.
    bot.slack.inject("chat.postMessage", delay=1.0, count=2, match=lambda args: ":gear:" in str(args.get("text")))

    told = await asyncio.gather(configure(bot, ALICE, f"repo {url}"), configure(bot, BOB, "model sonnet"))

    assert told == ["Saved.", "Saved."]
    said_in_channel = "\n".join(await bot.slack.wait_for(lambda: len(announcements(bot)) >= 2 and announcements(bot)))
    assert f"<@{ALICE}> set this channel's repository to {url}" in said_in_channel
    assert f"<@{BOB}> set this channel's model to `sonnet`" in said_in_channel
    shown = await configure(bot, BOB, "")
    assert f"Repository: {url}" in shown and "Model: sonnet" in shown
    async with store(bot) as db:
        assert await db.channel_settings(CHANNEL) == {"repo": url, "model": "sonnet"}


# -- 6. stop during a hanging clone ------------------------------------------------------------------


async def test_stop_while_the_clone_hangs_stops_the_run_before_claude(bot, git_host):
    url = serve(bot, git_host)
    git_host.slow(REPO, 3, count=1)
    ts = await bot.slack.mention(ALICE, CHANNEL, f"--repo {url} STOPCLONE-1 read the README")
    await bot.slack.wait_for(lambda: git_host.held, timeout=30)
    asked = time.monotonic()

    await bot.slack.post_message(ALICE, CHANNEL, "stop", thread_ts=ts)

    stopped = await final_reply(bot, ts)
    took = time.monotonic() - asked
    assert f"Stopped by <@{ALICE}>" in visible_text(stopped), visible_text(stopped)
    assert not has_stop_button(stopped)
    assert requests_with(bot, "STOPCLONE-1") == [], "Claude received the stopped prompt"
    await wait_run_states(bot, ts, ["stopped"])
    assert not [m for m in bot_replies(bot, ts) if "Nothing is running" in visible_text(m)]
    assert took < 15, f"the stop took {took:.1f} s"  # it waits for the clone (held 3 s), no longer

    bot.anthropic.responder = bash_for({"STOPCLONE-2": "cat README.md"})
    after = await bot.slack.post_message(ALICE, CHANNEL, "STOPCLONE-2 now read it", thread_ts=ts)
    reply = visible_text(await final_reply(bot, ts, after=after))
    assert ":white_check_mark:" in reply, reply
    assert any(CANARY in output for output in tool_outputs(bot))
    await wait_run_states(bot, ts, ["stopped", "done"])


# -- 7. a budget set while prompts wait --------------------------------------------------------------


async def test_a_budget_set_while_prompts_wait_refuses_the_one_that_would_exceed_it(bot):
    ts, _ = await mention_and_wait(bot, "BUDGETQ-0 hello")
    await wait_run_states(bot, ts, ["done"])  # its cost is recorded with its end
    async with store(bot) as db:
        (first,) = await db.runs(CHANNEL, ts)
    cost = first.cost_usd
    assert cost, "a run must cost something for this test"
    release = asyncio.Event()

    async def slow_first(body: dict[str, Any]) -> Any:
        if "BUDGETQ-1" in last_user_text(body):
            await release.wait()
        return Turn([Text("Answered.")])

    bot.anthropic.responder = slow_first
    await bot.slack.post_message(ALICE, CHANNEL, "BUDGETQ-1 a long one", thread_ts=ts)
    await bot.slack.wait_for(lambda: requests_with(bot, "BUDGETQ-1"), timeout=30)
    await bot.slack.post_message(BOB, CHANNEL, "BUDGETQ-2 then this", thread_ts=ts)
    await bot.slack.post_message(ALICE, CHANNEL, "BUDGETQ-3 and this", thread_ts=ts)
    await wait_run_states(bot, ts, ["done", "running", "queued", "queued"])
    # Room for the run going on and the next one, not for a fourth run.
    assert await configure(bot, ALICE, f"budget {cost * 2.5}") == "Saved."

    release.set()

    refusal = await said(bot, ts, "daily budget")
    await wait_run_states(bot, ts, ["done", "done", "done", "refused"], timeout=30)
    assert "This channel has spent" in visible_text(refusal)
    assert "(set with `/maison config budget`), so I did not run this" in visible_text(refusal)
    assert requests_with(bot, "BUDGETQ-2") and requests_with(bot, "BUDGETQ-3") == []
    finished = [visible_text(m) for m in bot_replies(bot, ts) if m.blocks and ":white_check_mark:" in visible_text(m)]
    assert len(finished) == 3, finished


# -- 8. /maison with overrides -----------------------------------------------------------------------


async def test_slash_command_with_model_and_repo_starts_a_thread_on_that_repo_and_model(bot, git_host):
    url = serve(bot, git_host)
    bot.anthropic.responder = bash_for({"SLASHOVR": "cat README.md; git branch --show-current"})

    ack = await bot.slack.slash_command(ALICE, CHANNEL, f"--model sonnet --repo {url} SLASHOVR read the README")

    assert not ack.late
    root = await bot.slack.wait_for(lambda: next((m for m in bot.slack.messages(CHANNEL)
                                                  if m.is_bot and "SLASHOVR" in m.text), None))
    reply = visible_text(await final_reply(bot, root.ts))
    assert ":white_check_mark:" in reply, reply
    bodies = requests_with(bot, "SLASHOVR")
    assert bodies and {body["model"] for body in bodies} == {"claude-sonnet-5-5"}
    assert "--model" not in last_user_text(bodies[0]) and "--repo" not in last_user_text(bodies[0])
    session = await session_row(bot, root.ts)
    assert (session.repo_url, session.branch) == (url, branch_of(root.ts))
    clone = bot.daytona.sandbox(session.sandbox_id).home / "app"
    assert run_git(clone, "branch", "--show-current") == branch_of(root.ts)
    assert any(CANARY in output and branch_of(root.ts) in output for output in tool_outputs(bot))


# -- 9. a repo thread after a restart ----------------------------------------------------------------


async def test_a_repo_thread_after_a_restart_runs_in_the_clone_and_diffs(bot, git_host, tmp_path):
    url = serve(bot, git_host)
    script(bot, *edit_and_commit("Changed the docs. RESTARTREPO-DONE"))
    ts, reply = await mention_and_wait(bot, f"--repo {url} improve the docs")
    assert "RESTARTREPO-DONE" in reply

    await bot.restart()

    bot.anthropic.responder = bash_for({"RESTARTREPO-PWD": "pwd"})
    mark = len(bot.anthropic.requests)
    after = await bot.slack.post_message(ALICE, CHANNEL, "RESTARTREPO-PWD where are you?", thread_ts=ts)
    assert ":white_check_mark:" in visible_text(await final_reply(bot, ts, after=after))
    (output,) = tool_outputs(bot, mark)
    assert output.strip().endswith("/app"), output

    after = await bot.slack.post_message(BOB, CHANNEL, "diff", thread_ts=ts)
    posted = await bot_says(bot, ts, ("Changes since this thread started", "No changes", "nothing to diff",
                                      ":warning:"), after=after)
    assert "Changes since this thread started" in visible_text(posted) and "2 files" in visible_text(posted)
    original = git_host.checkout(REPO, "main", tmp_path / "original")
    (tmp_path / "change.patch").write_bytes(bot.slack.file_content(posted.files[0]["id"]))
    run_git(original, "apply", str(tmp_path / "change.patch"))
    assert (original / "docs/new.md").read_text() == "new doc\n"


# -- 10. fork of a repo thread -----------------------------------------------------------------------


async def test_a_fork_works_and_pushes_on_its_own_branch(bot_env, git_host):
    await bot_env.start(git_token=TOKEN)
    git_host.add_user("x-access-token", TOKEN)
    url = serve(bot_env, git_host)
    script(bot_env, *edit_and_commit("Changed the docs. FORKREPO-DONE"))
    parent, _ = await mention_and_wait(bot_env, f"--repo {url} improve the docs")

    after = await bot_env.slack.post_message(ALICE, CHANNEL, "fork", thread_ts=parent)
    await bot_says(bot_env, parent, ("forked this thread", ":warning:"), after=after, timeout=30)
    (copy,) = [m for m in bot_env.slack.messages(CHANNEL) if m.is_bot and not m.is_reply and "forked" in m.text]
    fork = copy.ts
    assert (await session_row(bot_env, fork)).branch == branch_of(fork)
    assert await sandbox_of(bot_env, fork) != await sandbox_of(bot_env, parent)

    bot_env.anthropic.responder = bash_for({"FORKREPO-BRANCH": "git branch --show-current"})
    mark = len(bot_env.anthropic.requests)
    after = await bot_env.slack.post_message(BOB, CHANNEL, "FORKREPO-BRANCH which branch?", thread_ts=fork)
    assert ":white_check_mark:" in visible_text(await final_reply(bot_env, fork, after=after))
    (output,) = tool_outputs(bot_env, mark)
    assert output.strip() == branch_of(fork)

    after = await bot_env.slack.post_message(BOB, CHANNEL, "push", thread_ts=fork)
    pushed = visible_text(await bot_says(bot_env, fork, ("pushed", "push"), after=after, timeout=30))
    assert f"pushed `{branch_of(fork)}`" in pushed, pushed
    assert git_host.branches(REPO) == ["main", branch_of(fork)], "the fork pushed another branch"
    assert git_host.log(REPO, branch_of(fork))[1]["message"] == "Claude: README"
    # The parent is untouched: its clone stays on its own branch (the project is kept relative
    # to the work dir, so the fork's copy is the one that moved).
    parent_clone = bot_env.daytona.sandbox(await sandbox_of(bot_env, parent)).home / "app"
    assert run_git(parent_clone, "branch", "--show-current") == branch_of(parent)