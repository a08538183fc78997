"""Calling Daytona: transient failures retried, every failure translated to a `MaisonError`.

The SDK does not retry 429 or 5xx (one request each), so a busy control plane would
otherwise surface as a failed Slack reply.

Where this SDK (0.226) leaves the HTTP status and headers of a failure depends on the call
(../shared/reference/daytona.md §10, checked against the double in tests/test_core_runs.py):
* generated-client calls (control plane, `process.exec`, sessions, `fs.get_file_info`): a
  `DaytonaError` subclass carrying `status_code` and `headers`;
* downloads: a plain `DaytonaError` with `status_code=None`; the status and headers are on
  the aiohttp `ClientResponseError` further down its cause chain;
* Secrets (`daytona.secret.*`): the generated client's own `ApiException` (with `status`), not
  a `DaytonaError`: that service has no error interception in this SDK;
* uploads (`fs.upload_file(s)`): a plain `DaytonaError` with `status_code` but **no headers**
  and no cause (`daytona/_async/filesystem.py`, `upload_files`); the aiohttp response, with
  its headers, is only referenced by the SDK's frame in the traceback. `_retry_after` looks
  there last, so an upload 429 still honours Retry-After.
"""

from __future__ import annotations

import asyncio
import email.utils
import logging
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping
from typing import Any, TypeVar

import aiohttp
from daytona import (
    DaytonaBadRequestError,
    DaytonaConnectionError,
    DaytonaError,
    DaytonaNotFoundError,
    DaytonaRateLimitError,
    DaytonaTimeoutError,
)

from daytona_api_client_async.exceptions import ApiException

from maison_slack.core.errors import MaisonError, SandboxGoneError, SandboxStoppedError, SandboxUnavailableError

logger = logging.getLogger(__name__)
T = TypeVar("T")

_TRANSIENT_STATUSES = {429, 500, 502, 503, 504}
_MAX_RETRY_AFTER = 30.0


def _chain(exc: BaseException) -> Iterator[BaseException]:
    """`exc` and the exceptions it was raised from (the SDK re-wraps errors up to twice)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        yield current
        current = current.__cause__ or current.__context__


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of a failure: `status_code` on SDK errors, `status` on the
    generated client's `ApiException` and aiohttp's `ClientResponseError`."""
    for link in _chain(exc):
        status = getattr(link, "status_code", None) or getattr(link, "status", None)
        if isinstance(status, int):
            return status
    return None


def translate(exc: Exception, doing: str) -> MaisonError:
    """Map a Daytona SDK error to the `MaisonError` a caller can act on."""
    if isinstance(exc, MaisonError):
        return exc
    message = getattr(exc, "message", None) or str(exc) or type(exc).__name__
    # File uploads and downloads raise the base `DaytonaError` whatever the status: look at it too.
    status = status_of(exc)
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
    return isinstance(exc, (DaytonaError, ApiException)) and status_of(exc) in _TRANSIENT_STATUSES


def _header_sets(exc: BaseException) -> Iterator[Mapping[str, Any]]:
    """Every set of response headers a failure carries, most direct first (see the module doc)."""
    links = list(_chain(exc))
    for link in links:
        headers = getattr(link, "headers", None)
        if headers:
            yield headers
    for link in links:  # uploads: only the SDK frame that raised still holds the response
        tb = link.__traceback__
        while tb is not None:
            for value in tb.tb_frame.f_locals.values():
                if isinstance(value, aiohttp.ClientResponse):
                    yield value.headers
            tb = tb.tb_next


def _parse_retry_after(value: str) -> float | None:
    """Retry-After is either delay-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        return max(email.utils.parsedate_to_datetime(value).timestamp() - time.time(), 0.0)
    except (TypeError, ValueError):
        return None


def _retry_after(exc: BaseException) -> float | None:
    for headers in _header_sets(exc):
        for key, value in headers.items():
            if key.lower() == "retry-after":
                return _parse_retry_after(str(value))
    return None


def _retry_delay(exc: Exception, attempt: int) -> float:
    retry_after = _retry_after(exc) if status_of(exc) in (429, 503) else None
    if retry_after is not None:
        return min(retry_after, _MAX_RETRY_AFTER)
    return min(0.5 * 2**attempt, 8.0)


async def call(doing: str, operation: Callable[[], Awaitable[T]], *, attempts: int = 4, retry: bool = True) -> T:
    """Run one Daytona operation; retry transient failures if `retry` (idempotent, or a 429).

    A 429 is retried even when `retry` is False: the request was refused, not executed.
    """
    for attempt in range(attempts):
        try:
            return await operation()
        except (DaytonaError, ApiException, asyncio.TimeoutError) as exc:
            rate_limited = isinstance(exc, DaytonaRateLimitError) or status_of(exc) == 429
            last = attempt == attempts - 1
            if last or not _is_transient(exc) or not (retry or rate_limited):
                raise translate(exc, doing) from exc
            delay = _retry_delay(exc, attempt)
            logger.warning("%s failed (%s); retrying in %.1fs", doing, exc, delay)
            await asyncio.sleep(delay)
    raise AssertionError("unreachable")
