"""The workspace-wide edit budget: who gets the next `chat.update` when many replies want one.

Real time with a fast rate (600 edits a minute: a token every 0.1 s), so each test takes well
under a second; ordering, not timing, is asserted.
"""

from __future__ import annotations

import asyncio
import time

from maison_slack.slack.budget import MethodBudget, Priority


async def drain_burst(budget: MethodBudget) -> None:
    """Use up the initial burst, so the next grants are one token at a time."""
    for _ in range(5):
        assert await budget.acquire("warm-up", Priority.FINAL)


async def test_finals_first_then_text_least_recently_served_first():
    budget = MethodBudget(per_minute=600, burst=5)
    await budget.acquire("B", Priority.TEXT)  # B was served a moment ago, A never
    await drain_burst(budget)
    order: list[str] = []

    async def edit(name: str, thread: str, priority: Priority) -> None:
        await budget.acquire(thread, priority)
        order.append(name)

    tasks = [asyncio.create_task(edit("B text", "B", Priority.TEXT))]
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(edit("A text", "A", Priority.TEXT)))
    await asyncio.sleep(0)
    tasks.append(asyncio.create_task(edit("C final", "C", Priority.FINAL)))
    await asyncio.gather(*tasks)
    assert order == ["C final", "A text", "B text"]


async def test_a_status_only_edit_is_refused_while_others_wait_and_granted_when_free():
    budget = MethodBudget(per_minute=600, burst=5)
    await drain_burst(budget)
    waiting = asyncio.create_task(budget.acquire("A", Priority.TEXT))
    await asyncio.sleep(0)
    assert await budget.acquire("B", Priority.STATUS) is False  # contended: shown with B's next text
    await waiting
    await asyncio.sleep(0.15)  # a token is free and nobody waits
    assert await budget.acquire("B", Priority.STATUS) is True


async def test_no_grant_inside_a_pause_and_a_cancelled_waiter_leaves_the_line():
    budget = MethodBudget(per_minute=600, burst=5)
    budget.pause(0.3)
    started = time.monotonic()
    gone = asyncio.create_task(budget.acquire("A", Priority.FINAL))
    await asyncio.sleep(0.05)
    gone.cancel()
    assert await budget.acquire("B", Priority.TEXT)
    assert time.monotonic() - started >= 0.3
