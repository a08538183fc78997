"""Calling Daytona: transient failures retried, every failure translated to a `MaisonError`.

The SDK does not retry 429 or 5xx (one request each), so a busy control plane would
otherwise surface as a failed Slack reply.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TypeVar

from daytona import (
    DaytonaBadRequestError,
    DaytonaConnectionError,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
    DaytonaTimeoutError,
)

from maison_slack.core.errors import MaisonError, SandboxGoneError, SandboxStoppedError, SandboxUnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
_MAX_RETRY_AFTER = 30.0


def translate(exc: Exception, doing: str) -> MaisonError:
    """Map a Daytona SDK error to the `MaisonError` a caller can act on."""
    if isinstance(exc, MaisonError):
        return exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # File uploads and downloads raise the base `DaytonaError` whatever the status: look at it too.
    status = getattr(exc, "status_code", None)
    if isinstance(exc, DaytonaNotFoundError) or status == 404:
        return SandboxGoneError(f"{doing}: the sandbox no longer exists ({message})")
    if (isinstance(exc, DaytonaBadRequestError) or status == 400) and "is the sandbox started" in message.lower():
        return SandboxStoppedError(f"{doing}: the sandbox is stopped")
    return SandboxUnavailableError(f"{doing}: {message}")


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, (DaytonaRateLimitError, DaytonaConnectionError)):
        return True
    if isinstance(exc, DaytonaTimeoutError):
        return False  # a command that ran out of time will do so again
    return isinstance(exc, DaytonaError) and exc.status_code in _TRANSIENT_STATUSES


def _retry_delay(exc: Exception, attempt: int) -> float:
    headers = getattr(exc, "headers", None) or {}
    for key, value in headers.items():
        if key.lower() == "retry-after":
            try:
                return min(float(value), _MAX_RETRY_AFTER)
            except (TypeError, ValueError):
                break
    return min(0.5 * 2**attempt, 8.0)


async def call(doing: str, operation: Callable[[], Awaitable[T]], *, attempts: int = 4, retry: bool = True) -> T:
    """Run one Daytona operation; retry transient failures if `retry` (idempotent, or a 429)."""
    for attempt in range(attempts):
        try:
            return await operation()
        except (DaytonaError, asyncio.TimeoutError) as exc:
            rate_limited = isinstance(exc, DaytonaRateLimitError)
            last = attempt == attempts - 1
            if last or not _is_transient(exc) or not (retry or rate_limited):
                raise translate(exc, doing) from exc
            delay = _retry_delay(exc, attempt)
            logger.warning("%s failed (%s); retrying in %.1fs", doing, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
