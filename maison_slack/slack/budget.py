"""The budgets of Slack's Web API methods, each shared fairly by every thread.

Slack allows about 50 `chat.update` calls a minute for the whole app (../shared/reference/slack.md
§6, §16), whatever the number of threads; every other method has a budget of its own
(`chat.appendStream` Tier 4, `chat.startStream`/`chat.stopStream` Tier 2, reactions Tier 3/2),
and the budgets add up: a bot streaming some replies and editing others uses both. First come,
first served let whoever asked first
take the budget: status-only edits ("Thinking…") went out while other threads' answers waited,
and a run's final edit queued behind everyone's progress. So each edit asks with a priority and
its thread, and the next token goes to:

1. a run's final render (`FINAL`): it never loses its place;
2. then answer text (`TEXT`), the thread updated least recently first, so every thread's text
   moves at the same pace (a reply coalesces what piled up meanwhile into one edit);
3. status-only changes (`STATUS`) only when nobody else waits: otherwise they are refused at
   once, and the reply shows its latest status with its next text edit.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import heapq
import itertools
import time
from collections.abc import Hashable, Mapping

from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.http_retry.request import HttpRequest
from slack_sdk.http_retry.response import HttpResponse
from slack_sdk.http_retry.state import RetryState


class Priority(enum.IntEnum):
    FINAL = 0
    TEXT = 1
    STATUS = 2


class MethodBudget:
    """A token bucket (`per_minute` calls, bursts of up to `burst`) with fair, prioritised grants,
    closed while a 429's `Retry-After` runs.

    slack_sdk's retry handler delays only the request that got the 429; `pause` keeps every
    other reply's edits out of the window too.
    """

    def __init__(self, per_minute: int, burst: int = 5) -> None:
        self._rate = per_minute / 60.0
        self._capacity = float(burst)
        self._tokens = float(burst)
        self._updated = time.monotonic()
        self._paused_until = 0.0
        self._last_served: dict[Hashable, float] = {}
        self._waiting: list[tuple[int, float, int]] = []  # heap of (priority, last served, ticket)
        self._tickets = itertools.count()
        self._changed = asyncio.Condition()

    def pause(self, seconds: float) -> None:
        """No edit leaves before `seconds` from now (a 429's Retry-After)."""
        self._paused_until = max(self._paused_until, time.monotonic() + seconds)

    async def acquire(self, thread: Hashable = None, priority: Priority = Priority.FINAL) -> bool:
        """Wait for this edit's turn and take a token. A `STATUS` edit does not wait: it gets
        False unless a token is free now and nobody else waits."""
        if priority is Priority.STATUS:
            if self._waiting or self._wait_time() > 0:
                return False
            self._take(thread)
            return True
        entry = (int(priority), self._last_served.get(thread, 0.0), next(self._tickets))
        async with self._changed:
            heapq.heappush(self._waiting, entry)
            try:
                while True:
                    wait = self._wait_time()
                    if self._waiting[0] == entry and wait <= 0:
                        heapq.heappop(self._waiting)
                        self._take(thread)
                        self._changed.notify_all()  # the next in line becomes the head
                        return True
                    # The head sleeps until a token is due; the others until the head changes.
                    timeout = wait if self._waiting[0] == entry else None
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout)
                    except asyncio.TimeoutError:
                        pass
            except BaseException:
                if entry in self._waiting:  # cancelled while waiting: leave the line
                    self._waiting.remove(entry)
                    heapq.heapify(self._waiting)
                    self._changed.notify_all()
                raise

    def _wait_time(self) -> float:
        """Seconds until the next token may leave (0 if one may leave now)."""
        now = time.monotonic()
        self._tokens = min(self._capacity, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if now < self._paused_until:
            return self._paused_until - now
        return 0.0 if self._tokens >= 1 else (1 - self._tokens) / self._rate

    def _take(self, thread: Hashable) -> None:
        self._tokens -= 1
        self._last_served[thread] = time.monotonic()
        if len(self._last_served) > 10_000:  # threads come and go: forget the oldest
            for old in sorted(self._last_served, key=self._last_served.__getitem__)[:5_000]:
                del self._last_served[old]


#: Calls a minute per method for the whole app: Slack's tiers (../shared/reference/slack.md §16)
#: with headroom, since Slack's "50+" is a floor we must not test.
TIERS: dict[str, int] = {
    "chat.update": 45,
    "chat.startStream": 16,
    "chat.stopStream": 16,
    "chat.appendStream": 90,
    "reactions.add": 40,
    "reactions.remove": 15,
}


class Budgets:
    """One `MethodBudget` per Web API method, the one place every visible update asks."""

    def __init__(self, per_minute: Mapping[str, int] = TIERS) -> None:
        self._budgets = {method: MethodBudget(limit) for method, limit in per_minute.items()}

    def __getitem__(self, method: str) -> MethodBudget:
        return self._budgets[method]

    def pause(self, method: str, seconds: float) -> None:
        """A 429 on `method`: none of its calls leaves before `Retry-After`."""
        budget = self._budgets.get(method)
        if budget is not None:
            budget.pause(seconds)


class RateLimitHandler(AsyncRateLimitErrorRetryHandler):
    """slack_sdk's 429 retry after `Retry-After`, with two additions: a 429 also closes that
    method's budget for every reply (slack_sdk only delays the request that got it), and a
    reaction is skipped, never retried (👀 and ⏳ are decoration: retrying them in a burst is a
    429 storm that helps nobody)."""

    def __init__(self, budgets: Budgets, max_retry_count: int = 5) -> None:
        super().__init__(max_retry_count=max_retry_count)
        self._budgets = budgets

    async def _can_retry_async(self, *, state: RetryState, request: HttpRequest,
                               response: HttpResponse | None = None, error: Exception | None = None) -> bool:
        if "/reactions." in request.url:
            return False
        return await super()._can_retry_async(state=state, request=request, response=response, error=error)

    async def prepare_for_next_attempt_async(self, *, state: RetryState, request: HttpRequest,
                                             response: HttpResponse | None = None,
                                             error: Exception | None = None) -> None:
        if response is not None:
            values = next((v for k, v in response.headers.items() if k.lower() == "retry-after"), ["1"])
            with contextlib.suppress(ValueError, IndexError):
                self._budgets.pause(request.url.rstrip("/").rsplit("/", 1)[-1], float(values[0]))
        await super().prepare_for_next_attempt_async(state=state, request=request, response=response, error=error)
