"""Spending caps and receipts: what a thread or channel may still spend, and `/maison cost`.

Each run's cost is Claude Code's own figure for that run, kept in SQLite when it ends. The caps
are checked when a prompt is about to run (not when it is queued: the runs before it count),
so a prompt refused here has cost nothing. The per-run cap is Claude Code's `--max-budget-usd`.
"""

from __future__ import annotations

import datetime as dt
import time

from maison_slack.core.summary import format_usd
from maison_slack.slack.channel_config import ChannelConfig
from maison_slack.slack.config import Settings
from maison_slack.slack.notices import duration
from maison_slack.storage import Store

#: How far back `/maison cost` looks.
REPORT_DAYS = 7


def day_start(now: float) -> float:
    """Midnight UTC of the day `now` falls in: channel budgets are per UTC day."""
    day = dt.datetime.fromtimestamp(now, dt.timezone.utc).date()
    return dt.datetime.combine(day, dt.time(), dt.timezone.utc).timestamp()


class Spending:
    """Asks SQLite what was spent, against the caps of the settings and the channel."""

    def __init__(self, settings: Settings, store: Store) -> None:
        self._settings = settings
        self._store = store

    async def refusal(self, channel: str, thread_ts: str, config: ChannelConfig) -> str | None:
        """Why a prompt in this thread may not run now, naming the cap and when it resets; None
        when it may."""
        cap = self._settings.max_thread_usd
        if cap is not None:
            spent = await self._store.thread_cost(channel, thread_ts)
            if spent >= cap:
                return (f"This thread has spent {format_usd(spent)}, its limit is "
                        f"{format_usd(cap)} (MAISON_MAX_THREAD_USD), so I did not run this. The thread limit does "
                        "not reset: start a new thread to go on.")
        if config.daily_budget is not None:
            now = time.time()
            midnight = day_start(now)
            spent = await self._store.channel_cost(channel, midnight)
            if spent >= config.daily_budget:
                return (f"This channel has spent {format_usd(spent)} today, its daily budget is "
                        f"{format_usd(config.daily_budget)} ({config.budget_source}), so I did not run this. The "
                        f"budget resets at midnight UTC, in {duration(midnight + 86400 - now)}.")
        return None

    def run_budget_note(self) -> str:
        """What a run stopped by its own budget says."""
        cap = self._settings.max_run_usd
        amount = format_usd(cap) if cap is not None else "its budget"
        return f":money_with_wings: Stopped: this run reached its budget of {amount} (MAISON_MAX_RUN_USD)"

    async def report(self) -> str:
        """`/maison cost`: spend by channel and day over the last days, and the top threads."""
        since = day_start(time.time()) - (REPORT_DAYS - 1) * 86400
        spend = await self._store.spend(since)
        if not spend.by_channel_day:
            return f"No run has cost anything in the last {REPORT_DAYS} days."
        total = sum(usd for *_, usd, _ in spend.by_channel_day)
        lines = [f"*Spend over the last {REPORT_DAYS} days (UTC): {format_usd(total)}*"]
        lines += [f"• {day} <#{channel}>: {format_usd(usd)} ({runs} run{'s' * (runs != 1)})"
                  for channel, day, usd, runs in spend.by_channel_day]
        lines.append("*Top threads:*")
        lines += [f"• <https://slack.com/archives/{channel}/p{thread_ts.replace('.', '')}|thread> in <#{channel}>: "
                  f"{format_usd(usd)} ({runs} run{'s' * (runs != 1)})"
                  for channel, thread_ts, usd, runs in spend.top_threads]
        return "\n".join(lines)
