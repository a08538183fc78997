"""SQLite storage for the Slack bot: one module, all the SQL.

Sessions map a Slack thread to its sandbox and Claude conversation; runs record each
prompt's life; handled events make Slack's at-least-once delivery start a run exactly once.
WAL mode lets the reaper read while a run writes; `PRAGMA user_version` versions the schema.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

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
)

#: Run states; the first two are "live".
QUEUED, RUNNING, DONE, FAILED, STOPPED, INTERRUPTED = "queued", "running", "done", "failed", "stopped", "interrupted"
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


@dataclass
class Run:
    id: int
    channel: str
    thread_ts: str
    user_id: str
    prompt_ts: str
    reply_ts: str | None
    state: str


class Store:
    """Async access to the bot's SQLite database: `async with await Store.open(path) as store:`."""

    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

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
        await self._db.execute("DELETE FROM handled_events WHERE created_at < ?", (now - keep_seconds,))
        cursor = await self._db.execute(
            "INSERT OR IGNORE INTO handled_events (key, created_at) VALUES (?, ?)", (key, now)
        )
        await self._db.commit()
        return cursor.rowcount == 1

    # -- sessions --------------------------------------------------------------------------

    @staticmethod
    def _session(row: aiosqlite.Row) -> Session:
        return Session(
            channel=row["channel"], thread_ts=row["thread_ts"], sandbox_id=row["sandbox_id"],
            claude_session_id=row["claude_session_id"], started_by=row["started_by"],
            participants=json.loads(row["participants"]), context_note=row["context_note"],
            created_at=row["created_at"], last_active_at=row["last_active_at"],
        )

    async def get_session(self, channel: str, thread_ts: str) -> Session | None:
        async with self._db.execute(
            "SELECT * FROM sessions WHERE channel = ? AND thread_ts = ?", (channel, thread_ts)
        ) as cursor:
            row = await cursor.fetchone()
        return self._session(row) if row else None

    async def create_session(self, channel: str, thread_ts: str, started_by: str) -> Session:
        now = time.time()
        await self._db.execute(
            "INSERT OR IGNORE INTO sessions (channel, thread_ts, started_by, participants, created_at, last_active_at)"
            " VALUES (?, ?, ?, '[]', ?, ?)",
            (channel, thread_ts, started_by, now, now),
        )
        await self._db.commit()
        session = await self.get_session(channel, thread_ts)
        assert session is not None
        return session

    async def add_participant(self, channel: str, thread_ts: str, user_id: str) -> None:
        """Add `user_id` to the thread's participants, in one statement: two people writing at
        once must not overwrite each other's entry (a read-modify-write across awaits did)."""
        await self._db.execute(
            "UPDATE sessions SET participants = json_insert(participants, '$[#]', ?)"
            " WHERE channel = ? AND thread_ts = ?"
            " AND NOT EXISTS (SELECT 1 FROM json_each(sessions.participants) WHERE value = ?)",
            (user_id, channel, thread_ts, user_id),
        )
        await self._db.commit()

    async def set_sandbox(self, channel: str, thread_ts: str, sandbox_id: str | None, *,
                          context_note: str | None = None) -> None:
        """Point a thread at a (new) sandbox, or at none; a new sandbox means a new conversation."""
        await self._db.execute(
            "UPDATE sessions SET sandbox_id = ?, claude_session_id = NULL, context_note = ?, last_active_at = ?"
            " WHERE channel = ? AND thread_ts = ?",
            (sandbox_id, context_note, time.time(), channel, thread_ts),
        )
        await self._db.commit()

    async def forget_sandbox(self, channel: str, thread_ts: str, sandbox_id: str, *, context_note: str) -> bool:
        """Unset a deleted sandbox, only if the thread still points at it (a new one may have
        been created meanwhile). Returns whether it did."""
        cursor = await self._db.execute(
            "UPDATE sessions SET sandbox_id = NULL, claude_session_id = NULL, context_note = ?"
            " WHERE channel = ? AND thread_ts = ? AND sandbox_id = ?",
            (context_note, channel, thread_ts, sandbox_id),
        )
        await self._db.commit()
        return cursor.rowcount == 1

    async def set_claude_session(self, channel: str, thread_ts: str, claude_session_id: str | None) -> None:
        await self._db.execute(
            "UPDATE sessions SET claude_session_id = ?, last_active_at = ? WHERE channel = ? AND thread_ts = ?",
            (claude_session_id, time.time(), channel, thread_ts),
        )
        await self._db.commit()

    async def touch(self, channel: str, thread_ts: str) -> None:
        await self._db.execute(
            "UPDATE sessions SET last_active_at = ? WHERE channel = ? AND thread_ts = ?",
            (time.time(), channel, thread_ts),
        )
        await self._db.commit()

    async def sessions_in_channel(self, channel: str) -> list[Session]:
        async with self._db.execute(
            "SELECT * FROM sessions WHERE channel = ? AND sandbox_id IS NOT NULL ORDER BY last_active_at DESC",
            (channel,),
        ) as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    async def sessions_with_sandbox(self) -> list[Session]:
        async with self._db.execute("SELECT * FROM sessions WHERE sandbox_id IS NOT NULL") as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    async def idle_sessions(self, idle_before: float) -> list[Session]:
        """Sessions with a sandbox, idle since `idle_before`, and no queued or running run."""
        async with self._db.execute(
            "SELECT * FROM sessions s WHERE sandbox_id IS NOT NULL AND last_active_at < ?"
            " AND NOT EXISTS (SELECT 1 FROM runs r WHERE r.channel = s.channel AND r.thread_ts = s.thread_ts"
            "                 AND r.state IN (?, ?))",
            (idle_before, *LIVE_STATES),
        ) as cursor:
            return [self._session(row) for row in await cursor.fetchall()]

    # -- runs ------------------------------------------------------------------------------

    async def add_run(self, channel: str, thread_ts: str, user_id: str, prompt_ts: str) -> int:
        cursor = await self._db.execute(
            "INSERT INTO runs (channel, thread_ts, user_id, prompt_ts, state, created_at) VALUES (?, ?, ?, ?, ?, ?)",
            (channel, thread_ts, user_id, prompt_ts, QUEUED, time.time()),
        )
        await self._db.commit()
        return int(cursor.lastrowid)

    async def start_run(self, run_id: int, reply_ts: str) -> None:
        await self._db.execute("UPDATE runs SET state = ?, reply_ts = ? WHERE id = ?", (RUNNING, reply_ts, run_id))
        await self._db.commit()

    async def finish_run(self, run_id: int, state: str, *, error: str | None = None, cost_usd: float | None = None,
                         duration_ms: float | None = None, num_turns: int | None = None) -> None:
        await self._db.execute(
            "UPDATE runs SET state = ?, error = ?, cost_usd = ?, duration_ms = ?, num_turns = ?, finished_at = ?"
            " WHERE id = ?",
            (state, error, cost_usd, duration_ms, num_turns, time.time(), run_id),
        )
        await self._db.commit()

    async def runs(self, channel: str, thread_ts: str) -> list[Run]:
        async with self._db.execute(
            "SELECT * FROM runs WHERE channel = ? AND thread_ts = ? ORDER BY id", (channel, thread_ts)
        ) as cursor:
            return [self._run(row) for row in await cursor.fetchall()]

    async def live_runs(self) -> list[Run]:
        async with self._db.execute("SELECT * FROM runs WHERE state IN (?, ?) ORDER BY id", LIVE_STATES) as cursor:
            return [self._run(row) for row in await cursor.fetchall()]

    @staticmethod
    def _run(row: aiosqlite.Row) -> Run:
        return Run(id=row["id"], channel=row["channel"], thread_ts=row["thread_ts"], user_id=row["user_id"],
                   prompt_ts=row["prompt_ts"], reply_ts=row["reply_ts"], state=row["state"])
