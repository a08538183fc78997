"""The team's code (issue 9): channel settings, repositories cloned by the bot onto a branch of
the thread's own, `diff` and `push`, the thread's earlier messages as context, models, and
spending caps with `/maison cost`.

Through the real bot, slack-bolt, the daytona SDK and Claude Code against the doubles; the
repositories live on a loopback git host (`tests/doubles/git_host.py`) that sandboxes reach
through the Daytona double's git toolbox and egress proxy, with GitHub's answers to bad tokens.
"""

from __future__ import annotations

import asyncio
import subprocess
from pathlib import Path

import pytest

from maison_slack.core.git import compare_url
from tests.bot_harness import ALICE, BOB, CHANNEL, BotEnv, bot, bot_env  # noqa: F401
from tests.doubles.anthropic import Text, ToolUse, Turn, default_responder, last_user_text, system_text
from tests.doubles.git_host import GitHost
from tests.doubles.slack import visible_text
from tests.test_bot_lifecycle import (
    final_reply, requests_with, said, sandbox_of, session_row, store, wait_run_states)

TOKEN = "ghp_T0KEN5ECRETvalue0123456789abcdef"
REPO = "team/app"
README = "# app\nREPO-CANARY-7731\n"


def serve(env: BotEnv, host: GitHost, *, private: bool = False, **repo) -> str:
    """A repository on the git host, reachable from sandboxes by its name; its clone URL."""
    env.daytona.hosts[host.hostname] = host.ip
    host.create_repo(REPO, {"README.md": README, "src/app.py": "print('v1')\n"}, private=private, **repo)
    return host.url(REPO)


def run_git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout.strip()


async def configure(env: BotEnv, user: str, text: str) -> str:
    """`/maison config …` as `user`; what that person is told (ephemeral)."""
    before = len(env.slack.ephemerals(CHANNEL, user))
    await env.slack.slash_command(user, CHANNEL, f"config {text}".strip())
    found = await env.slack.wait_for(lambda: env.slack.ephemerals(CHANNEL, user)[before:], timeout=10)
    return found[0].text


def announcements(env: BotEnv) -> list[str]:
    return [m.text for m in env.slack.messages(CHANNEL) if m.is_bot and not m.is_reply and ":gear:" in m.text]


async def mention_and_wait(env: BotEnv, text: str, user: str = ALICE, thread_ts: str | None = None) -> tuple[str, str]:
    """A mention; the thread ts and the finished reply's visible text."""
    ts = await env.slack.mention(user, CHANNEL, text, thread_ts=thread_ts)
    reply = await final_reply(env, thread_ts or ts, after=ts if thread_ts else None)
    return thread_ts or ts, visible_text(reply)


def edit_and_commit(marker: str) -> list:
    """Claude's turns: change the README and add a file, commit the first locally, answer."""
    command = ("echo 'line from Claude' >> README.md && git commit -qam 'Claude: README' && "
               "mkdir -p docs && echo 'new doc' > docs/new.md")
    return [Turn([Text("Changing things."), ToolUse("Bash", {"command": command})]),
            Turn([Text(marker)])]


def script(env: BotEnv, *turns: Turn) -> None:
    queue = list(turns)
    env.anthropic.responder = lambda body: queue.pop(0) if queue else default_responder(body)


# -- 1. channel settings -----------------------------------------------------------------------


async def test_channel_settings_are_set_shown_unset_and_announced(bot_env, git_host):
    await bot_env.start(admins=frozenset({ALICE}))
    url = serve(bot_env, git_host)
    shown = await configure(bot_env, BOB, "")
    assert "Repository: none" in shown and "no daily cap" in shown

    assert await configure(bot_env, ALICE, f"repo {url} dev") == "Saved."
    assert await configure(bot_env, ALICE, "model claude-sonnet-4-5") == "Saved."
    assert await configure(bot_env, ALICE, "budget 12.5") == "Saved."
    assert await configure(bot_env, ALICE, "instructions Run `make test` before answering.") == "Saved."
    said_in_channel = "\n".join(announcements(bot_env))
    assert f"<@{ALICE}> set this channel's repository to {url} (branch `dev`)" in said_in_channel
    assert "model to `claude-sonnet-4-5`" in said_in_channel and "daily budget to $12.50" in said_in_channel
    assert "instructions for Claude:\n>Run `make test` before answering." in said_in_channel

    shown = await configure(bot_env, BOB, "")
    assert f"Repository: {url} (branch `dev`)" in shown and "Model: claude-sonnet-4-5" in shown
    assert "Daily budget: $12.50 per day" in shown and "make test" in shown

    # Only admins change settings; a refusal changes nothing and announces nothing.
    count = len(announcements(bot_env))
    assert "Only the bot's admins" in await configure(bot_env, BOB, "model opus")
    assert len(announcements(bot_env)) == count
    # Bad values are refused with what is wrong.
    assert "greater than 0" in await configure(bot_env, ALICE, "budget -3")
    assert "Not an HTTPS git URL" in await configure(bot_env, ALICE, "repo git@github.com:team/app.git")
    assert "credentials in the repository URL" in await configure(bot_env, ALICE, "repo https://u:pw@github.com/a/b")
    assert "no setting 'colour'" in await configure(bot_env, ALICE, "colour blue")
    assert "Nothing changed" in await configure(bot_env, ALICE, "budget 12.5")

    assert await configure(bot_env, ALICE, "model unset") == "Saved."
    assert f"<@{ALICE}> removed this channel's model setting." in announcements(bot_env)[-1]
    assert "Model: Claude Code's default (the bot's default)" in await configure(bot_env, BOB, "")
    async with store(bot_env) as db:
        assert await db.channel_settings(CHANNEL) == {
            "repo": f"{url} dev", "budget": "12.5", "instructions": "Run `make test` before answering."}


async def test_config_answers_in_time_when_slack_is_slow_to_take_the_announcement(bot):
    """Slack ignores a slash command not acked within 3 s: the announcement (a chat.postMessage
    that takes 4 s here) must not hold the ack."""
    bot.slack.inject("chat.postMessage", delay=4.0)
    ack = await bot.slack.slash_command(ALICE, CHANNEL, "config budget 3")
    assert not ack.late and ack.latency < 3.0
    await bot.slack.wait_for(lambda: announcements(bot), timeout=10)
    assert (await bot.slack.wait_for(lambda: bot.slack.ephemerals(CHANNEL, ALICE), timeout=10))[-1].text == "Saved."


# -- 2. repositories ---------------------------------------------------------------------------


async def test_a_thread_starts_with_the_channels_repo_on_its_own_branch(bot, git_host):
    url = serve(bot, git_host)
    await configure(bot, ALICE, f"repo {url}")
    script(bot, Turn([ToolUse("Bash", {"command": "cat README.md && git branch --show-current"})]),
           Turn([Text("Read it.")]))

    ts, reply = await mention_and_wait(bot, "what does the README say?")

    assert ":white_check_mark:" in reply
    tool_output = [r.body for r in bot.anthropic.requests if r.body and "REPO-CANARY-7731" in str(r.body["messages"])]
    assert tool_output, "Claude did not read the repository's README from its working directory"
    branch = f"maison/{ts.replace('.', '-')}"
    assert branch in str(tool_output[0]["messages"])
    assert f"{url} is checked out" in system_text(tool_output[0]) and branch in system_text(tool_output[0])
    session = await session_row(bot, ts)
    assert (session.repo_url, session.base_branch, session.branch) == (url, "main", branch)
    clone = bot.daytona.sandbox(session.sandbox_id).home / "app"
    assert run_git(clone, "branch", "--show-current") == branch
    assert session.base_commit == run_git(clone, "rev-parse", "HEAD")


async def test_a_private_repo_clones_with_the_token_which_stays_out_of_the_sandbox_and_slack(bot_env, git_host):
    await bot_env.start(git_token=TOKEN)
    git_host.add_user("x-access-token", TOKEN)
    url = serve(bot_env, git_host, private=True)
    script(bot_env, Turn([ToolUse("Bash", {"command": "cat README.md; env; git config --list; "
                                                      "cat ~/.git-credentials 2>/dev/null; git push 2>&1"})]),
           Turn([Text("Looked around.")]))

    ts, reply = await mention_and_wait(bot_env, f"--repo {url} look around")

    assert ":white_check_mark:" in reply
    assert any("REPO-CANARY-7731" in str(r.body["messages"]) for r in bot_env.anthropic.requests if r.body)
    assert ("x-access-token" in {r.username for r in git_host.requests})
    root = bot_env.daytona.sandbox(await sandbox_of(bot_env, ts)).root
    leaks = [p for p in root.rglob("*") if p.is_file() and not p.is_symlink() and TOKEN.encode() in p.read_bytes()]
    assert leaks == [], f"the git token is in the sandbox: {leaks}"
    assert bot_env.slack.scan_for({"git token": TOKEN}) == []
    assert all(TOKEN not in str(r.body) for r in bot_env.anthropic.requests if r.body)
    # Claude's own `git push` had no credential: the host saw no push.
    assert git_host.branches(REPO) == ["main"]


@pytest.mark.parametrize("case, expected", [
    ("wrong token", "refused the credentials"),
    ("missing repo", "repository was not found"),
    ("missing branch", "branch does not exist"),
    ("not a URL", "Not an HTTPS git URL"),
])
async def test_a_clone_failure_is_explained_and_claude_does_not_start(bot_env, git_host, case, expected):
    await bot_env.start(git_token="ghp_wrong" if case == "wrong token" else TOKEN)
    git_host.add_user("x-access-token", TOKEN)
    url = serve(bot_env, git_host, private=True)
    option = {"wrong token": f"--repo {url}", "missing repo": f"--repo {git_host.url('team/nope')}",
              "missing branch": f"--repo {url} --branch nope", "not a URL": "--repo ftp://example.com/x"}[case]

    ts, reply = await mention_and_wait(bot_env, f"{option} MARKER-CLONE-FAIL do it")

    assert expected in reply and ":white_check_mark:" not in reply
    assert requests_with(bot_env, "MARKER-CLONE-FAIL") == [], "Claude ran although the clone failed"
    assert TOKEN not in reply


# -- 3. getting the work out -------------------------------------------------------------------


async def test_diff_posts_a_patch_that_applies_to_the_original(bot, git_host, tmp_path):
    url = serve(bot, git_host)
    script(bot, *edit_and_commit("Updated the README and added docs/new.md. DIFF-DONE"))
    ts, reply = await mention_and_wait(bot, f"--repo {url} improve the docs")
    assert "DIFF-DONE" in reply

    after = await bot.slack.post_message(BOB, CHANNEL, "diff", thread_ts=ts)
    posted = await said(bot, ts, "Changes since this thread started", after=after)

    assert "2 files" in posted.text and posted.files
    patch = bot.slack.file_content(posted.files[0]["id"])
    original = git_host.checkout(REPO, "main", tmp_path / "original")
    (tmp_path / "change.patch").write_bytes(patch)
    run_git(original, "apply", "--check", str(tmp_path / "change.patch"))
    run_git(original, "apply", str(tmp_path / "change.patch"))
    assert (original / "README.md").read_text() == README + "line from Claude\n"
    assert (original / "docs/new.md").read_text() == "new doc\n"


async def test_diff_works_without_a_repository(bot):
    ts, _ = await mention_and_wait(bot, "TOOL make a file")  # Claude writes hello.txt

    after = await bot.slack.post_message(ALICE, CHANNEL, "diff", thread_ts=ts)
    posted = await said(bot, ts, "Changes since this thread started", after=after)

    patch = bot.slack.file_content(posted.files[0]["id"]).decode()
    assert "+++ b/hello.txt" in patch and "+hi" in patch
    assert ".maison" not in patch and ".claude" not in patch


async def test_a_diff_over_the_file_limit_is_refused_with_its_size(bot_env):
    await bot_env.start(max_file_mb=1)
    script(bot_env, Turn([ToolUse("Bash", {"command": "head -c 3000000 /dev/urandom | base64 > big.txt"})]),
           Turn([Text("Made a big file.")]))
    ts, _ = await mention_and_wait(bot_env, "make a big file")

    after = await bot_env.slack.post_message(ALICE, CHANNEL, "diff", thread_ts=ts)
    notice = await said(bot_env, ts, "The diff is", after=after)

    assert "files posted here are limited to 1 MB (MAISON_MAX_FILE_MB)" in notice.text
    assert not [m for m in bot_env.slack.thread(CHANNEL, ts) if m.files]


async def test_push_commits_as_the_person_and_pushes_the_threads_branch(bot_env, tmp_path):
    async with GitHost(tmp_path / "host", hostname="github.example.test") as host:
        await bot_env.start(git_token=TOKEN)
        host.add_user("x-access-token", TOKEN)
        url = serve(bot_env, host, private=True)
        script(bot_env, *edit_and_commit("Refreshed the README for new contributors."))
        ts, _ = await mention_and_wait(bot_env, f"--repo {url} refresh the README")

        after = await bot_env.slack.post_message(BOB, CHANNEL, "push", thread_ts=ts)
        posted = await said(bot_env, ts, "pushed", after=after)

        branch = f"maison/{ts.replace('.', '-')}"
        assert branch in host.branches(REPO)
        top, claudes, initial = host.log(REPO, branch)[:3]
        assert (top["author_name"], top["author_email"]) == ("bob", "bob@example.com")
        assert top["message"].startswith("Refreshed the README for new contributors.")
        assert top["message"].endswith("Co-Authored-By: Claude <noreply@anthropic.com>")
        assert (claudes["author_name"], claudes["message"]) == ("Claude", "Claude: README")
        assert initial["author_name"] == "Repo Owner"
        expected = compare_url(url, "main", branch)
        assert expected and f"<{expected}|Open a pull request>" in posted.text
        assert f"/team/app/compare/main...maison%2F{ts.replace('.', '-')}?expand=1" in expected
        assert bot_env.slack.scan_for({"git token": TOKEN}) == []

        # Nothing new since: said so, nothing pushed.
        after = await bot_env.slack.post_message(BOB, CHANNEL, "push", thread_ts=ts)
        pushed_again = await said(bot_env, ts, "pushed", after=after)
        assert "new commit" not in pushed_again.text


async def test_push_waits_for_the_run_in_progress(bot_env, git_host):
    """`push` sent while Claude still works: it runs after the run, with the run's changes."""
    await bot_env.start(git_token=TOKEN)
    git_host.add_user("x-access-token", TOKEN)
    url = serve(bot_env, git_host)
    release = asyncio.Event()

    async def slow(body):
        if "SLOW-EDIT" in last_user_text(body):
            await release.wait()
        return default_responder(body)

    ts, _ = await mention_and_wait(bot_env, f"--repo {url} hello")
    bot_env.anthropic.responder = slow
    await bot_env.slack.post_message(ALICE, CHANNEL, "TOOL SLOW-EDIT write hello.txt", thread_ts=ts)
    await bot_env.slack.wait_for(lambda: requests_with(bot_env, "SLOW-EDIT"), timeout=30)
    after = await bot_env.slack.post_message(BOB, CHANNEL, "push", thread_ts=ts)
    await asyncio.sleep(1)
    assert f"maison/{ts.replace('.', '-')}" not in git_host.branches(REPO)
    release.set()

    await said(bot_env, ts, "pushed", after=after)
    pushed = git_host.checkout(REPO, f"maison/{ts.replace('.', '-')}", bot_env.db_path.parent / "pushed")
    assert (pushed / "hello.txt").read_text() == "hi\n"


@pytest.mark.parametrize("case, expected", [
    ("read-only token", "refused the push"),
    ("remote moved on", "push rejected"),
    ("no repository", "no repository to push to"),
])
async def test_a_push_failure_is_explained(bot_env, git_host, case, expected):
    await bot_env.start(git_token=TOKEN)
    git_host.add_user("x-access-token", TOKEN, write=case != "read-only token")
    url = serve(bot_env, git_host)
    script(bot_env, *edit_and_commit("first"))
    ts, _ = await mention_and_wait(bot_env, "hello" if case == "no repository" else f"--repo {url} edit")
    branch = f"maison/{ts.replace('.', '-')}"
    if case == "remote moved on":
        after = await bot_env.slack.post_message(ALICE, CHANNEL, "push", thread_ts=ts)
        await said(bot_env, ts, "pushed", after=after)
        git_host.commit(REPO, branch, {"CHANGELOG": "someone else\n"})
        script(bot_env, Turn([ToolUse("Bash", {"command": "echo more >> README.md"})]), Turn([Text("more")]))
        await mention_and_wait(bot_env, "more", thread_ts=ts)

    after = await bot_env.slack.post_message(ALICE, CHANNEL, "push", thread_ts=ts)
    notice = await said(bot_env, ts, "push", after=after)

    assert expected in notice.text and ":rocket:" not in notice.text


def test_compare_links_for_the_big_hosts():
    assert compare_url("https://github.com/a/b.git", "main", "maison/1-2") == \
        "https://github.com/a/b/compare/main...maison%2F1-2?expand=1"
    assert compare_url("https://gitlab.com/group/sub/b.git", "dev", "maison/1-2") == \
        "https://gitlab.com/group/sub/b/-/compare/dev...maison%2F1-2"
    assert compare_url("https://bitbucket.org/ws/b.git", "main", "maison/1-2") == \
        "https://bitbucket.org/ws/b/branches/compare/maison%2F1-2%0Dmain"
    assert compare_url("https://git.example.com/a/b.git", "main", "maison/1-2") is None


# -- 4. thread context -------------------------------------------------------------------------


async def test_a_mention_in_a_conversation_gives_claude_the_earlier_messages(bot_env):
    await bot_env.start(context_messages=3, context_chars=2000)
    root = await bot_env.slack.post_message(BOB, CHANNEL, "CTX-0 the first, too old to be kept")
    for n, user in ((1, ALICE), (2, BOB), (3, ALICE)):
        await bot_env.slack.post_message(user, CHANNEL, f"CTX-{n} message {n} about the login bug", thread_ts=root)

    await mention_and_wait(bot_env, "CTX-ASK fix what they describe", thread_ts=root)

    (body,) = requests_with(bot_env, "CTX-ASK")
    prompt = last_user_text(body)
    assert "CTX-0" not in prompt, "more than context_messages earlier messages were sent"
    assert prompt.index("alice: CTX-1") < prompt.index("bob: CTX-2") < prompt.index("alice: CTX-3")
    assert prompt.rstrip().endswith("CTX-ASK fix what they describe")


# -- 5. models ---------------------------------------------------------------------------------


def models_for(env: BotEnv, marker: str) -> set[str]:
    return {body["model"] for body in requests_with(env, marker)}


async def test_models_per_message_thread_and_channel(bot):
    ts, reply = await mention_and_wait(bot, "--model claude-sonnet-4-5 MODEL-A hello")
    assert models_for(bot, "MODEL-A") == {"claude-sonnet-4-5"}
    assert "--model" not in last_user_text(requests_with(bot, "MODEL-A")[0])
    assert "claude-sonnet-4-5" in reply  # the footer names the model

    await bot.slack.post_message(ALICE, CHANNEL, "model haiku", thread_ts=ts)
    await said(bot, ts, "set the model of this thread's next answers to `haiku`")
    await mention_and_wait(bot, "MODEL-B again", thread_ts=ts)
    assert models_for(bot, "MODEL-B") == {"claude-haiku-5-5"}

    await configure(bot, ALICE, "model sonnet")
    await mention_and_wait(bot, "MODEL-C new thread")
    assert models_for(bot, "MODEL-C") == {"claude-sonnet-5-5"}
    async with store(bot) as db:
        models = {run.prompt: run.model for run in await db.runs(CHANNEL, ts)}
    assert set(models.values()) == {"claude-sonnet-4-5", "claude-haiku-5-5"}


# -- 6. spending caps and receipts -------------------------------------------------------------


async def test_a_run_over_its_budget_is_stopped_and_says_so(bot_env):
    await bot_env.start(max_run_usd=0.0001)
    ts, reply = await mention_and_wait(bot_env, "hello")
    assert "reached its budget of $0.0001 (MAISON_MAX_RUN_USD)" in reply
    assert "Hello from the fake Anthropic server." in reply  # the answer is kept
    await wait_run_states(bot_env, ts, ["stopped"])


async def test_the_thread_cap_refuses_the_next_prompt_even_when_two_arrive_together(bot_env):
    await bot_env.start(max_thread_usd=0.0002)
    ts, first = await mention_and_wait(bot_env, "one")
    assert "thread total $0.0001" in first
    # Two follow-ups at once: the first takes the thread past its cap, the second is refused.
    await bot_env.slack.post_message(ALICE, CHANNEL, "CAP-TWO", thread_ts=ts)
    await bot_env.slack.post_message(BOB, CHANNEL, "CAP-THREE", thread_ts=ts)
    refusal = await said(bot_env, ts, "MAISON_MAX_THREAD_USD")
    assert "This thread has spent $0.0003, its limit is $0.0002" in visible_text(refusal)
    assert "start a new thread" in visible_text(refusal)
    assert requests_with(bot_env, "CAP-THREE") == []
    await wait_run_states(bot_env, ts, ["done", "done", "refused"])


async def test_the_channel_budget_refuses_and_cost_adds_up(bot):
    await configure(bot, ALICE, "budget 0.0002")
    await mention_and_wait(bot, "one")
    await mention_and_wait(bot, "--model sonnet two")
    ts, refused = await mention_and_wait(bot, "BUDGET-THREE three")
    async with store(bot) as db:
        costs = [run.cost_usd for s in await db.sessions_in_channel(CHANNEL) for run in await db.runs(CHANNEL, s.thread_ts)
                 if run.cost_usd]
    # Per run, not per conversation (../shared/reference/claude-code.md §9.4); sonnet is cheaper.
    assert len(costs) == 2 and costs[0] != costs[1] and sum(costs) >= 0.0002
    assert f"This channel has spent ${sum(costs):.4f} today, its daily budget is $0.0002" in refused
    assert "resets at midnight UTC" in refused and requests_with(bot, "BUDGET-THREE") == []

    ack = await bot.slack.slash_command(BOB, CHANNEL, "cost")
    report = ack.payload["text"]
    assert f"<#{CHANNEL}>: ${sum(costs):.4f} (2 runs)" in report
    assert f"Spend over the last 7 days (UTC): ${sum(costs):.4f}" in report and "Top threads" in report


async def test_options_without_a_task_are_refused_with_an_example(bot):
    ts, reply = await mention_and_wait(bot, "--model sonnet")
    assert "There is no task after the options" in reply and "Nothing was run" in reply
    assert not [r for r in bot.anthropic.requests if r.body and r.body.get("model") == "claude-sonnet-5-5"]
