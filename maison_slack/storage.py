"""SQLite storage for the Slack bot: one module, all the SQL.

Sessions map a Slack thread to its sandbox and Claude conversation; runs record each
prompt's life; handled events make Slack's at-least-once delivery start a run exactly once.
WAL mode lets the reaper read while a run writes; `PRAGMA user_version` versions the schema.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite

MIGRATIONS: Sequence[str] = (
    # 1: the first schema
    """
    CREATE TABLE sessions (
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        sandbox_id TEXT,
        claude_session_id TEXT,
        started_by TEXT NOT NULL,
        participants TEXT NOT NULL DEFAULT '[]',
        context_note TEXT,
        created_at REAL NOT NULL,
        last_active_at REAL NOT NULL,
        PRIMARY KEY (channel, thread_ts)
    );
    CREATE INDEX sessions_by_sandbox ON sessions (sandbox_id);
    CREATE TABLE runs (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        channel TEXT NOT NULL,
        thread_ts TEXT NOT NULL,
        user_id TEXT NOT NULL,
        prompt_ts TEXT NOT NULL,
        reply_ts TEXT,
        state TEXT NOT NULL,
        error TEXT,
        cost_usd REAL,
        duration_ms REAL,
        num_turns INTEGER,
        created_at REAL NOT NULL,
        finished_at REAL
    );
    CREATE INDEX runs_by_thread ON runs (channel, thread_ts);
    CREATE INDEX runs_by_state ON runs (state);
    CREATE TABLE handled_events (
        key TEXT PRIMARY KEY,
        created_at REAL NOT NULL
    );
    CREATE INDEX handled_events_by_age ON handled_events (created_at);
    """,
    # 2: a queued run keeps its prompt, so a restart can run it; a run keeps its answer, so an
    # answer Slack would not take (channel archived, bot removed) is not lost
    """
    ALTER TABLE runs ADD COLUMN prompt TEXT;
    ALTER TABLE runs ADD COLUMN files TEXT NOT NULL DEFAULT '[]';
    ALTER TABLE runs ADD COLUMN answer TEXT;
    """,
    # 3: what people thought of an answer (the feedback buttons), one vote per person per run
    """
    CREATE TABLE feedback (
        run_id INTEGER NOT NULL REFERENCES runs (id),
        user_id TEXT NOT NULL,
        value TEXT NOT NULL,
        created_at REAL NOT NULL,
        PRIMARY KEY (run_id, user_id)
    );
    """,
    # 4: an idle sandbox is stopped first and deleted later (its files and conversation are kept
    # meanwhile); a thread is warned, with a Keep button, before its sandbox is stopped
    """
    ALTER TABLE sessions ADD COLUMN stopped_at REAL;
    ALTER TABLE sessions ADD COLUMN warned_at REAL;
    """,
    # 5: the team's code and spend: settings per channel (repository, model, instructions,
    # budget); a thread's project in its sandbox (where, which branch, from which commit) and
    # model; the model of each run (its cost_usd is now this run's, not the conversation's)
    """
    CREATE TABLE channel_settings (
        channel TEXT NOT NULL,
        name TEXT NOT NULL,
        value TEXT NOT NULL,
        updated_by TEXT NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (channel, name)
    );
    ALTER TABLE sessions ADD COLUMN repo_url TEXT;
    ALTER TABLE sessions ADD COLUMN base_branch TEXT;
    ALTER TABLE sessions ADD COLUMN branch TEXT;
    ALTER TABLE sessions ADD COLUMN project TEXT;
    ALTER TABLE sessions ADD COLUMN base_commit TEXT;
    ALTER TABLE sessions ADD COLUMN model TEXT;
    ALTER TABLE runs ADD COLUMN model TEXT;
    CREATE INDEX runs_by_channel_time ON runs (channel, created_at);
    """,
)

#: Adds a user to a thread's participants in one statement: two people writing at once must not
#: overwrite each other's entry (a read-modify-write across awaits did).
_ADD_PARTICIPANT = (
    "UPDATE sessions SET participants = json_insert(participants, '$[#]', ?)"
    " WHERE channel = ? AND thread_ts = ?"
    " AND NOT EXISTS (SELECT 1 FROM json_each(sessions.participants) WHERE value = ?)"
)

def message_key(channel: str, ts: str) -> str:
    """A person's message, as claimed in `handled_events`: Slack delivers a mention twice
    (app_mention + message) and retries unacked envelopes; (channel, ts) makes it once."""
    return f"message:{channel}:{ts}"


#: Run states; the first two are "live".
QUEUED, RUNNING, DONE, FAILED, STOPPED, INTERRUPTED = "queued", "running", "done", "failed", "stopped", "interrupted"
#: A prompt not run because a spending cap was reached.
REFUSED = "refused"
LIVE_STATES = (QUEUED, RUNNING)


@dataclass
class Session:
    channel: str
    thread_ts: str
    sandbox_id: str | None
    claude_session_id: str | None
    started_by: str
    participants: list[str] = field(default_factory=list)
    context_note: str | None = None
    created_at: float = 0.0
    last_active_at: float = 0.0
    #: When the reaper stopped the sandbox; it counts only if nothing happened since.
    stopped_at: float | None = None
    warned_at: float | None = None
    #: The thread's project in its sandbox (`maison_slack.core.git.Checkout`), once made.
    repo_url: str | None = None
    base_branch: str | None = None
    branch: str | None = None
    project: str | None = None
    base_commit: str | None = None
    #: Set by `model <name>` in the thread: the model of its next runs.
    model: str | None = None

    @property
    def stopped(self) -> bool:
        """The bot stopped the sandbox for idleness and nobody has used the thread since."""
        return self.stopped_at is not None and self.stopped_at >= self.last_active_at

    @property
    def key(self) -> tuple[str, str]:
        return self.channel, self.thread_ts


@dataclass
class Run:
    id: int
    channel: str
    thread_ts: str
    user_id: str
    prompt_ts: str
    reply_ts: str | None
    state: str
    prompt: str | None = None
    files: list[dict[str, Any]] = field(default_factory=list)
    answer: str | None = None
    cost_usd: float | None = None
    model: str | None = None
    created_at: float = 0.0


@dataclass
class Spend:
    """Money spent, for `/maison cost`: by channel and day, and the threads that spent most."""

    by_channel_day: list[tuple[str, str, float, int]]  #: (channel, UTC day, USD, runs), newest day first
    top_threads: list[tuple[str, str, float, int]]  #: (channel, thread_ts, USD, runs), most first


async def read_channel_setting(path: str | Path, name: str) -> dict[str, str]:
    """One setting's value in every channel that set it, read without changing the database
    (read-only, no migration: a running bot of another version may own it); empty when there is
    no database yet, or it predates channel settings."""
    if not Path(path).exists():
        return {}
    try:
        async with aiosqlite.connect(f"file:{Path(path).resolve()}?mode=ro", uri=True) as db:
            async with db.execute("SELECT channel, value FROM channel_settings WHERE name = ?", (name,)) as cursor:
                return {channel: value for channel, value in await cursor.fetchall()}
    except aiosqlite.OperationalError:  # no such table
        return {}


class Store:
    """Async access to the bot's SQLite database: `async with await Store.open(path) as store:`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db
        # One connection serves every coroutine, and a transaction belongs to the connection:
        # without the lock, one writer's COMMIT would commit another's half-done transaction.
        self._write_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def _transaction(self) -> AsyncIterator[aiosqlite.Connection]:
        """Statements that commit together, or not at all."""
        async with self._write_lock:
            await self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                await self._db.rollback()
                raise
            await self._db.commit()

    async def _write(self, sql: str, params: Sequence[Any] = ()) -> int:
        """One statement in its own transaction; returns the number of rows it changed."""
        async with self._transaction() as db:
            cursor = await db.execute(sql, params)
            return cursor.rowcount

    @classmethod
    async def open(cls, path: str | Path) -> "Store":
        db = await aiosqlite.connect(str(path))
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA busy_timeout=5000")
        store = cls(db)
        await store._migrate()
        return store

    async def close(self) -> None:
        await self._db.close()

    async def __aenter__(self) -> "Store":
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _migrate(self) -> None:
        async with self._db.execute("PRAGMA user_version") as cursor:
            (version,) = await cursor.fetchone()
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            await self._db.executescript(f"BEGIN; {script}; PRAGMA user_version = {number}; COMMIT;")

    async def schema_version(self) -> int:
        async with self._db.execute("PRAGMA user_version") as cursor:
            return (await cursor.fetchone())[0]

    # -- exactly-once ----------------------------------------------------------------------

    async def claim_event(self, key: str, *, keep_seconds: float = 24 * 3600) -> bool:
        """True the first time `key` is seen: the caller handles it; False for a duplicate."""
        now = time.time()
        async with self._transaction() as db:
            await db.execute("DELETE FROM handled_events WHERE created_at < ?", (now - keep_seconds,))
            cursor = await db.execute("INSERT OR IGNORE INTO handled_events (key, created_at) VALUES (?, ?)",
                                      (key, now))
            return cursor.rowcount == 1

    # -- sessions --------------------------------------------------------------------------

    @staticmethod
    def _session(row: aiosqlite.Row) -> Session:
        return Session(
            channel=row["channel"], thread_ts=row["thread_ts"], sandbox_id=row["sandbox_id"],
            claude_session_id=row["claude_session_id"], started_by=row["started_by"],
            participants=json.loads(row["participants"]), context_note=row["context_note"],
            created_at=row["created_at"], last_active_at=row["last_active_at"],
            stopped_at=row["stopped_at"], warned_at=row["warned_at"], repo_url=row["repo_url"],
            base_branch=row["base_branch"], branch=row["branch"], project=row["project"],
            base_commit=row["base_commit"], model=row["model"],
        )

    async def get_session(self, channel: str, thread_ts: str) -> Session | None:
        async with self._db.execute(
            "SELECT * FROM sessions WHERE channel = ? AND thread_ts = ?", (channel, thread_ts)
        ) as cursor:
            row = await cursor.fetchone()
        return self._session(row) if row else None

    async def set_sandbox(self, channel: str, thread_ts: str, sandbox_id: str | None, *,
                          context_note: str | None = None) -> None:
        """Point a thread at a (new) sandbox, or at none; a new sandbox means a new conversation
        and a new project (made again from the thread's repository, which is kept)."""
        await self._write(
            "UPDATE sessions SET sandbox_id = ?, claude_session_id = NULL, context_note = ?, last_active_at = ?,"
            " project = NULL, base_commit = NULL WHERE channel = ? AND thread_ts = ?",
            (sandbox_id, context_note, time.time(), channel, thread_ts),
        )

    async def forget_sandbox(self, channel: str, thread_ts: str, sandbox_id: str, *, context_note: str) -> bool:
        """Unset a deleted sandbox, only if the thread still points at it (a new one may have
        been created meanwhile). Returns whether it did."""
        return await self._write(
            "UPDATE sessions SET sandbox_id = NULL, claude_session_id = NULL, context_note = ?, project = NULL,"
            " base_commit = NULL WHERE channel = ? AND thread_ts = ? AND sandbox_id = ?",
            (context_note, channel, thread_ts, sandbox_id),
        ) == 1

    async def fork_session(self, source: tuple[str, str], copy: tuple[str, str], sandbox_id: str,
                           user_id: str) -> None:
        """A new thread `copy` that continues `source`'s conversation in the sandbox `sandbox_id`
        (a fork of `source`'s): same Claude session, started by `user_id`."""
        now = time.time()
        await self._write(
            "INSERT INTO sessions (channel, thread_ts, sandbox_id, claude_session_id, started_by, participants,"
            " created_at, last_active_at, repo_url, base_branch, branch, project, base_commit, model)"
            " SELECT ?, ?, ?, claude_session_id, ?, json_array(?), ?, ?,"
            " repo_url, base_branch, branch, project, base_commit, model"
            " FROM sessions WHERE channel = ? AND thread_ts = ?",
            (*copy, sandbox_id, user_id, user_id, now, now, *source),
        )

    async def set_checkout(self, channel: str, thread_ts: str, *, project: str, branch: str, base_commit: str,
                           repo_url: str | None, base_branch: str | None) -> None:
        """Where the thread's project is in its sandbox, the branch it works on and its start."""
        await self._write(
            "UPDATE sessions SET project = ?, branch = ?, base_commit = ?, repo_url = ?, base_branch = ?"
            " WHERE channel = ? AND thread_ts = ?",
            (project, branch, base_commit, repo_url, base_branch, channel, thread_ts),
        )

    async def set_repo(self, channel: str, thread_ts: str, repo_url: str | None, base_branch: str | None) -> None:
        """The repository the thread works on, chosen before it is cloned: a clone cut short (a
        crash, a failure) is tried again from the same repository by the next message."""
        await self._write("UPDATE sessions SET repo_url = ?, base_branch = ? WHERE channel = ? AND thread_ts = ?",
                          (repo_url, base_branch, channel, thread_ts))

    async def set_thread_model(self, channel: str, thread_ts: str, model: str | None) -> None:
        await self._write("UPDATE sessions SET model = ? WHERE channel = ? AND thread_ts = ?",
                          (model, channel, thread_ts))

    async def set_claude_session(self, channel: str, thread_ts: str, claude_session_id: str | None) -> None:
        await self._write(
            "UPDATE sessions SET claude_session_id = ?, last_active_at = ? WHERE channel = ? AND thread_ts = ?",
            (claude_session_id, time.time(), channel, thread_ts),
        )

    async def touch(self, channel: str, thread_ts: str) -> None:
        await self._write("UPDATE sessions SET last_active_at = ? WHERE channel = ? AND thread_ts = ?",
                          (time.time(), channel, thread_ts))

    async def sessions_in_channel(self, channel: str) -> list[Session]:
        async with self._db.execute(
            "SELECT * FROM sessions WHERE channel = ? AND sandbox_id IS NOT NULL ORDER BY last_active_at DESC",
            (channel,),
        ) as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    async def sessions_with_sandbox(self) -> list[Session]:
        async with self._db.execute("SELECT * FROM sessions WHERE sandbox_id IS NOT NULL") as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    async def _quiet_sessions(self, condition: str, *args: Any) -> list[Session]:
        """Sessions with a sandbox and no queued or running run that meet `condition`."""
        async with self._db.execute(
            f"SELECT * FROM sessions s WHERE sandbox_id IS NOT NULL AND ({condition})"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.channel = s.channel AND r.thread_ts = s.thread_ts"
            "                 AND r.state IN (?, ?))",
            (*args, *LIVE_STATES),
        ) as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    async def idle_sessions(self, idle_before: float) -> list[Session]:
        """Sessions whose sandbox runs (not stopped by the reaper since their last activity),
        idle since `idle_before`."""
        return await self._quiet_sessions(
            "last_active_at < ? AND (stopped_at IS NULL OR stopped_at < last_active_at)", idle_before)

    async def sessions_to_warn(self, warn_before: float) -> list[Session]:
        """Running sandboxes idle since `warn_before` whose thread was not warned since."""
        return await self._quiet_sessions(
            "last_active_at < ? AND (stopped_at IS NULL OR stopped_at < last_active_at)"
            " AND (warned_at IS NULL OR warned_at < last_active_at)", warn_before)

    async def expired_sessions(self, stopped_before: float) -> list[Session]:
        """Sandboxes the reaper stopped before `stopped_before`, unused since."""
        return await self._quiet_sessions("stopped_at >= last_active_at AND stopped_at < ?", stopped_before)

    async def mark_stopped(self, channel: str, thread_ts: str, sandbox_id: str) -> None:
        await self._write("UPDATE sessions SET stopped_at = ? WHERE channel = ? AND thread_ts = ? AND sandbox_id = ?",
                          (time.time(), channel, thread_ts, sandbox_id))

    async def mark_warned(self, channel: str, thread_ts: str) -> None:
        await self._write("UPDATE sessions SET warned_at = ? WHERE channel = ? AND thread_ts = ?",
                          (time.time(), channel, thread_ts))

    # -- runs ------------------------------------------------------------------------------

    async def claim_prompt(self, event_key: str, channel: str, thread_ts: str, user_id: str, prompt_ts: str,
                           prompt: str, files: list[dict[str, Any]]) -> int | None:
        """Claim a person's message as a prompt, in one transaction: the event (exactly once), the
        session, the participant and a queued run holding the prompt.

        Returns the run id, or None for a duplicate delivery. One transaction means a crash at
        any point leaves either nothing (Slack redelivers) or a queued run that recovery runs;
        and the run id, given here, is the prompt's place in its thread.
        """
        now = time.time()
        async with self._transaction() as db:
            claimed = await db.execute("INSERT OR IGNORE INTO handled_events (key, created_at) VALUES (?, ?)",
                                       (event_key, now))
            if claimed.rowcount != 1:
                return None
            await db.execute(
                "INSERT OR IGNORE INTO sessions (channel, thread_ts, started_by, participants, created_at,"
                " last_active_at) VALUES (?, ?, ?, '[]', ?, ?)", (channel, thread_ts, user_id, now, now))
            await db.execute(_ADD_PARTICIPANT, (user_id, channel, thread_ts, user_id))
            cursor = await db.execute(
                "INSERT INTO runs (channel, thread_ts, user_id, prompt_ts, state, prompt, files, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (channel, thread_ts, user_id, prompt_ts, QUEUED, prompt, json.dumps(files), now))
        return int(cursor.lastrowid)

    async def start_run(self, run_id: int, reply_ts: str) -> None:
        await self._write("UPDATE runs SET state = ?, reply_ts = ? WHERE id = ?", (RUNNING, reply_ts, run_id))

    async def finish_run(self, run_id: int, state: str, *, error: str | None = None, cost_usd: float | None = None,
                         duration_ms: float | None = None, num_turns: int | None = None,
                         answer: str | None = None, model: str | None = None) -> None:
        """A run's end; `cost_usd` is what this run cost (not its conversation so far)."""
        await self._write(
            "UPDATE runs SET state = ?, error = ?, cost_usd = ?, duration_ms = ?, num_turns = ?, answer = ?,"
            " model = ?, finished_at = ? WHERE id = ?",
            (state, error, cost_usd, duration_ms, num_turns, answer, model, time.time(), run_id),
        )

    async def runs(self, channel: str, thread_ts: str) -> list[Run]:
        async with self._db.execute(
            "SELECT * FROM runs WHERE channel = ? AND thread_ts = ? ORDER BY id", (channel, thread_ts)
        ) as cursor:
            return [self._run(row) for row in await cursor.fetchall()]

    async def live_runs(self) -> list[Run]:
        async with self._db.execute("SELECT * FROM runs WHERE state IN (?, ?) ORDER BY id", LIVE_STATES) as cursor:
            return [self._run(row) for row in await cursor.fetchall()]

    # -- channel settings -------------------------------------------------------------------

    async def channel_settings(self, channel: str) -> dict[str, str]:
        async with self._db.execute("SELECT name, value FROM channel_settings WHERE channel = ?", (channel,)) as cursor:
            return {row["name"]: row["value"] for row in await cursor.fetchall()}

    async def set_channel_setting(self, channel: str, name: str, value: str | None, user_id: str) -> bool:
        """Set (or, with None, unset) one setting; returns whether anything changed."""
        if value is None:
            return await self._write("DELETE FROM channel_settings WHERE channel = ? AND name = ?",
                                     (channel, name)) == 1
        return await self._write(
            "INSERT INTO channel_settings (channel, name, value, updated_by, updated_at) VALUES (?, ?, ?, ?, ?)"
            " ON CONFLICT (channel, name) DO UPDATE SET value = excluded.value, updated_by = excluded.updated_by,"
            " updated_at = excluded.updated_at WHERE value != excluded.value",
            (channel, name, value, user_id, time.time())) == 1

    # -- spend -----------------------------------------------------------------------------

    async def thread_cost(self, channel: str, thread_ts: str) -> float:
        async with self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE channel = ? AND thread_ts = ?", (channel, thread_ts)
        ) as cursor:
            return float((await cursor.fetchone())[0])

    async def channel_cost(self, channel: str, since: float) -> float:
        """What the channel's runs started since `since` cost."""
        async with self._db.execute(
            "SELECT COALESCE(SUM(cost_usd), 0) FROM runs WHERE channel = ? AND created_at >= ?", (channel, since)
        ) as cursor:
            return float((await cursor.fetchone())[0])

    async def spend(self, since: float, *, top: int = 5) -> Spend:
        """Spend of runs started since `since`, by channel and UTC day, and the top threads."""
        async with self._db.execute(
            "SELECT channel, date(created_at, 'unixepoch') AS day, SUM(cost_usd) AS usd, COUNT(*) AS n FROM runs"
            " WHERE created_at >= ? AND cost_usd IS NOT NULL GROUP BY channel, day ORDER BY day DESC, usd DESC",
            (since,),
        ) as cursor:
            days = [(r["channel"], r["day"], float(r["usd"]), int(r["n"])) for r in await cursor.fetchall()]
        async with self._db.execute(
            "SELECT channel, thread_ts, SUM(cost_usd) AS usd, COUNT(*) AS n FROM runs"
            " WHERE created_at >= ? AND cost_usd IS NOT NULL GROUP BY channel, thread_ts ORDER BY usd DESC LIMIT ?",
            (since, top),
        ) as cursor:
            threads = [(r["channel"], r["thread_ts"], float(r["usd"]), int(r["n"])) for r in await cursor.fetchall()]
        return Spend(days, threads)

    # -- feedback --------------------------------------------------------------------------

    async def record_feedback(self, run_id: int, user_id: str, value: str) -> None:
        """A person's vote on a run's answer; a second click replaces their first."""
        await self._write("INSERT OR REPLACE INTO feedback (run_id, user_id, value, created_at) VALUES (?, ?, ?, ?)",
                          (run_id, user_id, value, time.time()))

    async def feedback(self, run_id: int) -> dict[str, str]:
        """Votes on a run's answer, by user id."""
        async with self._db.execute("SELECT user_id, value FROM feedback WHERE run_id = ?", (run_id,)) as cursor:
            return {row["user_id"]: row["value"] for row in await cursor.fetchall()}

    @staticmethod
    def _run(row: aiosqlite.Row) -> Run:
        return Run(id=row["id"], channel=row["channel"], thread_ts=row["thread_ts"], user_id=row["user_id"],
                   prompt_ts=row["prompt_ts"], reply_ts=row["reply_ts"], state=row["state"], prompt=row["prompt"],
                   files=json.loads(row["files"]), answer=row["answer"], cost_usd=row["cost_usd"],
                   model=row["model"], created_at=row["created_at"])
