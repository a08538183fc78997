"""The sandbox egress of the Daytona double: a forward HTTP proxy per sandbox, and an attacker.

Real Daytona puts an outbound proxy between a sandbox and the network
(``../shared/reference/daytona.md`` §14, §15). It swaps each mounted Secret's placeholder for
the real value in request *headers* bound for one of the Secret's ``hosts``, scrubs real
values out of responses, and enforces the sandbox's network policy (``networkBlockAll``,
``domainAllowList``, ``networkAllowList``). The double's sandboxes are local subprocesses, so
the double runs one ``EgressProxy`` per sandbox on 127.0.0.1 and points the sandbox's proxy
environment variables at it (``DaytonaDouble`` does that; this module knows nothing of
sandboxes beyond the ``EgressPolicy`` it is handed for each request).

What the double does differently from production, on purpose or by necessity:

* Production intercepts transparently (HTTPS, at the network layer); the double relies on
  the clients honouring ``http_proxy``/``HTTPS_PROXY``. A process that ignores them connects
  directly and gets **no** substitution: the placeholder reaches the server, which fails
  closed (the Anthropic double answers 401), so a test cannot pass by accident.
* Substitution and scrubbing happen on **plain HTTP** (absolute-form requests), because every
  test service is plain HTTP on loopback. ``CONNECT`` tunnels (HTTPS) are relayed untouched:
  the double cannot read TLS. Production documents header substitution on HTTPS traffic.
* Destinations must resolve to loopback: a sandbox of the double never reaches the network
  (502 otherwise). ``hosts`` (name → IP) is the sandboxes' DNS as the proxy sees it, so tests
  give local servers real-looking names (``api.anthropic.test``). Such a name resolves nowhere
  else, so a client that bypasses the proxy cannot even connect: it fails loudly.
* A request the network policy forbids gets **403** from the proxy (text body, nothing sent
  upstream). Production fails earlier (a name not on ``domainAllowList`` does not resolve; a
  blocked address does not connect), so code must not depend on that status — only on the
  request never arriving.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import socket
import time
import urllib.parse
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import pytest_asyncio
from aiohttp import web

log = logging.getLogger(__name__)

HEAD_LIMIT = 1024 * 1024
READ_CHUNK = 65536
#: Hop-by-hop headers (RFC 9110 §7.6.1) and the framing headers the proxy sets itself.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "proxy-connection",
        "keep-alive",
        "proxy-authorization",
        "proxy-authenticate",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "expect",
        "content-length",
    }
)


# --------------------------------------------------------------------------- policy


def host_matches(host: str, pattern: str) -> bool:
    """`host` (no port) against one Secret host or allow-list entry: exact (case-insensitive),
    or a single leading ``*.`` that matches subdomains only (``*.a.com`` ≠ ``a.com``, as a
    DNS wildcard would)."""
    host, pattern = host.lower().rstrip("."), pattern.lower().rstrip(".")
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


@dataclass(frozen=True)
class SecretBinding:
    """One mounted Secret as the proxy sees it. No `hosts` = substituted toward any host."""

    name: str
    placeholder: str
    value: str
    hosts: tuple[str, ...] = ()

    def allows(self, host: str) -> bool:
        return not self.hosts or any(host_matches(host, pattern) for pattern in self.hosts)


@dataclass
class EgressPolicy:
    """What one sandbox may do right now; asked for again at every request, so secret and
    network-setting updates apply to the next request."""

    substitute: list[SecretBinding] = field(default_factory=list)  # values the proxy may insert
    scrub: list[SecretBinding] = field(default_factory=list)  # values scrubbed from responses
    block_all: bool = False
    domain_allow_list: list[str] | None = None  # None = no list; [] cannot happen ("" clears)
    network_allow_list: list[ipaddress.IPv4Network] | None = None

    def refusal(self, host: str, ip: str | None) -> str | None:
        """Why a request to `host` (resolved to `ip`) is forbidden, or None.

        An allow list, when set, is a strict allow list ([issues] brightwave-inc/tidebreak#893);
        with both lists set a destination passes if either allows it (a newer server seen in a
        public fork rejects that combination outright; unverified, so the double accepts it)."""
        if self.block_all:
            return "all egress is blocked (networkBlockAll)"
        if self.domain_allow_list is None and self.network_allow_list is None:
            return None
        if self.domain_allow_list and any(host_matches(host, d) for d in self.domain_allow_list):
            return None
        if self.network_allow_list and ip is not None:
            address = ipaddress.ip_address(ip)
            if any(address in net for net in self.network_allow_list):
                return None
        return f"{host} is not on the sandbox's allow list"


@dataclass
class EgressRequest:
    """One request that reached a sandbox's egress proxy, as the proxy handled it.

    `headers` are what went upstream (after substitution), or what arrived when nothing went
    upstream; `substituted` names the Secrets whose value was put in."""

    sandbox_id: str
    method: str  # "CONNECT" for a tunnel
    url: str  # absolute URL as the sandbox sent it, or "host:port" for CONNECT
    host: str  # destination host without port, lower-case
    port: int
    headers: list[tuple[str, str]]
    body: bytes
    substituted: list[str] = field(default_factory=list)
    outcome: str = "forwarded"  # forwarded | tunnelled | blocked | refused | upstream-error
    status: int | None = None  # the status the sandbox got from the proxy/upstream
    time: float = field(default_factory=time.time)

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((v for k, v in self.headers if k.lower() == name), None)


# --------------------------------------------------------------------------- HTTP/1.1 plumbing


class _BadRequest(Exception):
    pass


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    """Bytes up to and including the blank line, or None at a clean EOF between messages."""
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial.strip():
            raise _BadRequest("truncated request head") from None
        return None
    except asyncio.LimitOverrunError:
        raise _BadRequest("request head too large") from None


def _parse_head(head: bytes) -> tuple[list[str], list[tuple[str, str]]]:
    lines = head.decode("latin-1").split("\r\n")
    start = lines[0].split(" ", 2)
    headers = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(":")
        if not colon or not name or name != name.strip():
            raise _BadRequest(f"malformed header line {line!r}")
        headers.append((name, value.strip()))
    return start, headers


def _get(headers: Iterable[tuple[str, str]], name: str) -> str | None:
    name = name.lower()
    return next((v for k, v in headers if k.lower() == name), None)


def _tokens(headers: Iterable[tuple[str, str]], name: str) -> set[str]:
    name = name.lower()
    return {t.strip().lower() for k, v in headers if k.lower() == name for t in v.split(",") if t.strip()}


async def _read_chunked(reader: asyncio.StreamReader) -> AsyncIterator[bytes]:
    """Decode a chunked body, yielding each chunk as soon as it is complete."""
    while True:
        line = await reader.readline()
        if not line.endswith(b"\n"):
            raise ConnectionError("EOF inside a chunked body")
        try:
            size = int(line.split(b";", 1)[0].strip(), 16)
        except ValueError:
            raise ConnectionError(f"bad chunk size line {line!r}") from None
        if size == 0:
            while (await reader.readline()) not in (b"\r\n", b"\n", b""):
                pass  # trailers are dropped
            return
        data = await reader.readexactly(size)
        await reader.readexactly(2)
        yield data


async def _read_body(reader: asyncio.StreamReader, headers: list[tuple[str, str]]) -> bytes:
    """A request body, whole (requests are small enough; framing is re-done upstream)."""
    if "chunked" in _tokens(headers, "transfer-encoding"):
        return b"".join([chunk async for chunk in _read_chunked(reader)])
    length = _get(headers, "content-length")
    if length is None:
        return b""
    try:
        size = int(length)
    except ValueError:
        raise _BadRequest(f"bad Content-Length {length!r}") from None
    return await reader.readexactly(size)


def _head_bytes(start_line: str, headers: Iterable[tuple[str, str]]) -> bytes:
    lines = [start_line, *(f"{k}: {v}" for k, v in headers), "", ""]
    return "\r\n".join(lines).encode("latin-1")


def _simple_response(status: int, reason: str, text: str, *, close: bool = True) -> bytes:
    body = text.encode()
    headers = [("Content-Type", "text/plain; charset=utf-8"), ("Content-Length", str(len(body)))]
    if close:
        headers.append(("Connection", "close"))
    return _head_bytes(f"HTTP/1.1 {status} {reason}", headers) + body


class Scrubber:
    """Replaces real Secret values by their placeholders in a byte stream.

    A value may straddle two chunks, so the longest tail that could start a value is held
    back until the next chunk — and only that: an SSE frame ending in a newline is passed on
    at once, which keeps streamed answers streaming."""

    def __init__(self, secrets: Iterable[SecretBinding]) -> None:
        self.pairs = [(s.value.encode(), s.placeholder.encode()) for s in secrets if s.value]
        self.pending = b""

    def feed(self, data: bytes) -> bytes:
        buf = self.pending + data
        for real, placeholder in self.pairs:
            buf = buf.replace(real, placeholder)
        keep = 0
        for real, _ in self.pairs:
            for size in range(min(len(real) - 1, len(buf)), keep, -1):
                if buf.endswith(real[:size]):
                    keep = size
                    break
        self.pending = buf[len(buf) - keep :]
        return buf[: len(buf) - keep]

    def flush(self) -> bytes:
        out, self.pending = self.pending, b""
        return out

    def text(self, value: str) -> str:
        for real, placeholder in self.pairs:
            value = value.replace(real.decode(), placeholder.decode())
        return value


# --------------------------------------------------------------------------- the proxy


class EgressProxy:
    """A forward HTTP/1.1 proxy on 127.0.0.1 for one sandbox.

    Args:
        sandbox_id: recorded with each request.
        policy: called at every request for the sandbox's current `EgressPolicy`.
        hosts: name → IP overrides (the sandbox's DNS), shared with the double and live.
        record: where each `EgressRequest` is appended.
    """

    def __init__(
        self,
        sandbox_id: str,
        policy: Callable[[], EgressPolicy],
        *,
        hosts: dict[str, str],
        record: Callable[[EgressRequest], None],
    ) -> None:
        self.sandbox_id = sandbox_id
        self.policy = policy
        self.hosts = hosts
        self.record = record
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> EgressProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, limit=HEAD_LIMIT)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def abort(self) -> None:
        """Stop listening and cut every open connection (the container is gone), at once."""
        if self._server is not None:
            self._server.close()
            self._server = None
        for task in list(self._connections):
            task.cancel()

    async def close(self) -> None:
        """`abort()`, then wait until every connection task has finished."""
        self.abort()
        await asyncio.gather(*self._connections, return_exceptions=True)

    # ----------------------------------------------------------------- connection loop

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._connections.add(task)
        try:
            while True:
                head = await _read_head(reader)
                if head is None:
                    break
                start, headers = _parse_head(head)
                if len(start) != 3 or not start[2].startswith("HTTP/1."):
                    raise _BadRequest(f"bad request line {start!r}")
                method, target, version = start
                if method.upper() == "CONNECT":
                    await self._tunnel(reader, writer, target, headers)
                    break
                if not await self._forward(reader, writer, method, target, version, headers):
                    break
        except _BadRequest as exc:
            with contextlib.suppress(ConnectionError):
                writer.write(_simple_response(400, "Bad Request", f"{exc}\n"))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        except Exception:  # a bug of the double: say so loudly, and still free the sandbox side
            log.exception("egress proxy of sandbox %s failed", self.sandbox_id)
        finally:
            self._connections.discard(task)
            writer.transport.abort()

    # ----------------------------------------------------------------- resolution & policy

    async def _refuse(self, entry: EgressRequest, status: int, reason: str, writer: asyncio.StreamWriter) -> None:
        """Answer a request the network policy (403) or the loopback rule (502) forbids."""
        entry.outcome, entry.status = ("blocked" if status == 403 else "refused"), status
        self.record(entry)
        writer.write(_simple_response(status, "Forbidden" if status == 403 else "Bad Gateway", reason + "\n"))
        await writer.drain()

    async def _resolve(self, host: str, port: int) -> str | None:
        """The loopback IP for `host`, or None. Never an address off this machine."""
        mapped = next((ip for name, ip in self.hosts.items() if name.lower() == host), None)
        candidates: list[str] = []
        if mapped:
            candidates = [mapped]
        else:
            try:
                candidates = [str(ipaddress.ip_address(host))]
            except ValueError:
                with contextlib.suppress(OSError):
                    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
                    candidates = [info[4][0] for info in infos]
        loopback = [ip for ip in candidates if ipaddress.ip_address(ip).is_loopback]
        return next((ip for ip in loopback if ":" not in ip), loopback[0] if loopback else None)

    async def _check(self, host: str, port: int) -> tuple[str | None, int, str]:
        """(ip, status, reason): status 0 = allowed; else the refusal to send."""
        ip = await self._resolve(host, port)
        refusal = self.policy().refusal(host, ip)
        if refusal is not None:
            return ip, 403, f"Blocked by the sandbox network policy: {refusal}"
        if ip is None:
            return None, 502, (
                f"Cannot reach {host}: the Daytona double only lets sandboxes reach loopback "
                "addresses (map test names with DaytonaDouble.hosts)"
            )
        return ip, 0, ""

    # ----------------------------------------------------------------- plain HTTP

    async def _forward(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        target: str,
        version: str,
        headers: list[tuple[str, str]],
    ) -> bool:
        """Forward one absolute-form request; True if the client connection stays open."""
        split = urllib.parse.urlsplit(target)
        if split.scheme.lower() != "http" or not split.hostname:
            raise _BadRequest(f"a forward proxy needs an absolute http:// URL, got {target!r}")
        host = split.hostname.lower()
        port = split.port or 80
        if "100-continue" in _tokens(headers, "expect"):
            # The upstream never sees Expect (the proxy reads the body first), so answer it
            # here; otherwise curl waits a second before sending a large body.
            writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
            await writer.drain()
        body = await _read_body(reader, headers)
        client_close = "close" in _tokens(headers, "connection") or (
            version == "HTTP/1.0" and "keep-alive" not in _tokens(headers, "connection")
        )
        entry = EgressRequest(self.sandbox_id, method, target, host, port, list(headers), body)

        ip, status, reason = await self._check(host, port)
        if status:
            await self._refuse(entry, status, reason, writer)
            return False

        policy = self.policy()
        upstream_headers, substituted = self._substitute(headers, host, policy)
        entry.headers, entry.substituted = upstream_headers, substituted
        raw_path = target[len(split.scheme) + 3 + len(split.netloc) :] or "/"
        if raw_path.startswith("?"):
            raw_path = "/" + raw_path
        framing = [("Connection", "close")]
        if body or _get(headers, "content-length") is not None or _get(headers, "transfer-encoding"):
            framing.insert(0, ("Content-Length", str(len(body))))
        if _get(upstream_headers, "host") is None:
            framing.insert(0, ("Host", split.netloc))
        try:
            up_reader, up_writer = await asyncio.open_connection(ip, port, limit=HEAD_LIMIT)
        except OSError as exc:
            entry.outcome, entry.status = "upstream-error", 502
            self.record(entry)
            writer.write(_simple_response(502, "Bad Gateway", f"Cannot connect to {host}:{port}: {exc}\n"))
            await writer.drain()
            return False
        self.record(entry)
        watcher = relay = None
        try:
            up_writer.write(_head_bytes(f"{method} {raw_path} HTTP/1.1", [*upstream_headers, *framing]) + body)
            await up_writer.drain()
            watcher = asyncio.ensure_future(_client_gone(reader, writer))
            relay = asyncio.ensure_future(
                self._relay_response(up_reader, writer, method, policy, entry, client_close)
            )
            done, _ = await asyncio.wait({watcher, relay}, return_when=asyncio.FIRST_COMPLETED)
            if relay not in done:  # the sandbox process went away: drop the upstream too
                return False
            return relay.result()
        finally:
            for task in (watcher, relay):
                if task is not None and not task.done():
                    task.cancel()
                    await asyncio.gather(task, return_exceptions=True)
            up_writer.transport.abort()

    @staticmethod
    def _substitute(
        headers: list[tuple[str, str]], host: str, policy: EgressPolicy
    ) -> tuple[list[tuple[str, str]], list[str]]:
        """Header values only (never names, URL or body), only for Secrets allowing `host`."""
        connection_listed = _tokens(headers, "connection")
        out, used = [], []
        for name, value in headers:
            lower = name.lower()
            if lower in HOP_BY_HOP or lower in connection_listed:
                continue
            for secret in policy.substitute:
                if secret.placeholder in value and secret.allows(host):
                    value = value.replace(secret.placeholder, secret.value)
                    if secret.name not in used:
                        used.append(secret.name)
            out.append((name, value))
        return out, used

    async def _relay_response(
        self,
        up: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        method: str,
        policy: EgressPolicy,
        entry: EgressRequest,
        client_close: bool,
    ) -> bool:
        """Copy the upstream response to the client, scrubbing real values, chunk by chunk."""
        try:
            while True:
                start, headers = _parse_head(await up.readuntil(b"\r\n\r\n"))
                status = int(start[1])
                if not 100 <= status < 200:
                    break
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, _BadRequest, ValueError, IndexError):
            entry.outcome, entry.status = "upstream-error", 502
            writer.write(_simple_response(502, "Bad Gateway", f"{entry.host} sent no valid response\n"))
            await writer.drain()
            return False
        entry.status = status
        scrub = Scrubber(policy.scrub)
        out_headers = [
            (k, scrub.text(v))
            for k, v in headers
            if k.lower() not in HOP_BY_HOP and k.lower() not in _tokens(headers, "connection")
        ]
        status_line = f"HTTP/1.1 {status} {start[2] if len(start) > 2 else ''}".rstrip()
        no_body = method.upper() == "HEAD" or status in (204, 304)
        chunked = "chunked" in _tokens(headers, "transfer-encoding")
        length = _get(headers, "content-length")

        if no_body:
            if length is not None:
                out_headers.append(("Content-Length", length))  # HEAD: the GET's length
            writer.write(_head_bytes(status_line, [*out_headers, *_closing(client_close)]))
            await writer.drain()
            return not client_close
        if not chunked and length is not None:
            body = scrub.feed(await up.readexactly(int(length))) + scrub.flush()
            framing = [("Content-Length", str(len(body))), *_closing(client_close)]
            writer.write(_head_bytes(status_line, [*out_headers, *framing]) + body)
            await writer.drain()
            return not client_close
        if chunked:
            framing = [("Transfer-Encoding", "chunked"), *_closing(client_close)]
            writer.write(_head_bytes(status_line, [*out_headers, *framing]))
            await writer.drain()
            async for chunk in _read_chunked(up):
                data = scrub.feed(chunk)
                if data:
                    writer.write(b"%x\r\n%s\r\n" % (len(data), data))
                    await writer.drain()
            tail = scrub.flush()
            writer.write((b"%x\r\n%s\r\n" % (len(tail), tail) if tail else b"") + b"0\r\n\r\n")
            await writer.drain()
            return not client_close
        # Close-delimited body: the only way to end it for the client is to close too.
        writer.write(_head_bytes(status_line, [*out_headers, ("Connection", "close")]))
        await writer.drain()
        while data := await up.read(READ_CHUNK):
            writer.write(scrub.feed(data))
            await writer.drain()
        writer.write(scrub.flush())
        await writer.drain()
        return False

    # ----------------------------------------------------------------- CONNECT

    async def _tunnel(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        target: str,
        headers: list[tuple[str, str]],
    ) -> None:
        """Relay bytes both ways without looking at them: the double cannot read TLS, so a
        tunnel gets the network policy but no Secret substitution or scrubbing."""
        host, _, port_text = target.rpartition(":")
        host = host.strip("[]").lower()
        try:
            port = int(port_text)
        except ValueError:
            raise _BadRequest(f"CONNECT needs host:port, got {target!r}") from None
        entry = EgressRequest(self.sandbox_id, "CONNECT", target, host, port, list(headers), b"")
        ip, status, reason = await self._check(host, port)
        if status:
            await self._refuse(entry, status, reason, writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(ip, port)
        except OSError as exc:
            entry.outcome, entry.status = "upstream-error", 502
            self.record(entry)
            writer.write(_simple_response(502, "Bad Gateway", f"Cannot connect to {target}: {exc}\n"))
            await writer.drain()
            return
        entry.outcome, entry.status = "tunnelled", 200
        self.record(entry)
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        try:
            await asyncio.gather(_pipe(reader, up_writer), _pipe(up_reader, writer))
        finally:
            up_writer.transport.abort()


def _closing(close: bool) -> list[tuple[str, str]]:
    return [("Connection", "close")] if close else []


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while data := await reader.read(READ_CHUNK):
            writer.write(data)
            await writer.drain()
    except ConnectionError:
        pass
    finally:
        with contextlib.suppress(OSError, RuntimeError):
            writer.write_eof()


async def _client_gone(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Return once the sandbox side of the connection is closed (EOF or transport lost).

    Nothing reads the client while a response streams, so its EOF is only seen by polling;
    50 ms is well under any test's patience and costs nothing measurable."""
    while not (reader.at_eof() or writer.transport.is_closing()):
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------- the attacker


@dataclass
class Hit:
    """One request the attacker received, exactly as it arrived."""

    method: str
    path: str  # path and query, raw
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return _get(self.headers, name)

    def text(self) -> str:
        """Everything the attacker learnt from this request, as one searchable string."""
        lines = [f"{self.method} {self.path}", *(f"{k}: {v}" for k, v in self.headers)]
        return "\n".join(lines) + "\n\n" + self.body.decode("utf-8", "replace")


class Attacker:
    """A recording HTTP server: where a compromised sandbox would send what it can read.

    It listens on **127.0.0.2** (all of 127/8 is loopback on Linux), so its address never
    equals a Secret host of ``127.0.0.1`` or a test name mapped to 127.0.0.1; give it a name
    with ``DaytonaDouble.hosts["evil.test"] = attacker.ip``. Every request is kept in
    ``hits``. It answers every path with 200 JSON echoing what it received
    (``{"method","path","headers","body"}``) and, as response headers, each received
    ``Authorization``/``x-api-key`` as ``X-Echo-Authorization``/``X-Echo-X-Api-Key`` — so used
    as an *allowed* upstream it shows what the proxy scrubs on the way back. ``GET
    /stream?n=N&delay=S`` streams N chunked lines (``line <i> <Authorization>``) S seconds
    apart; a client that leaves early lands in ``dropped``.
    """

    ip = "127.0.0.2"

    def __init__(self) -> None:
        self.hits: list[Hit] = []
        self.dropped: list[Hit] = []  # /stream requests whose client left before the end
        self.port = 0
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        return f"http://{self.ip}:{self.port}"

    def seen(self, needle: str) -> bool:
        """Whether `needle` appeared anywhere in any request (line, headers, body)."""
        return any(needle in hit.text() for hit in self.hits)

    async def start(self) -> Attacker:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/stream", self._stream)
        app.router.add_route("*", "/{tail:.*}", self._echo)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.ip, 0)
        await site.start()
        self.port = self._runner.addresses[0][1]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Attacker:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def _record(self, request: web.Request) -> Hit:
        headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers]
        hit = Hit(request.method, request.raw_path, headers, await request.read())
        self.hits.append(hit)
        return hit

    async def _echo(self, request: web.Request) -> web.Response:
        hit = await self._record(request)
        echoed: dict[str, Any] = {
            "method": hit.method,
            "path": hit.path,
            "headers": dict(hit.headers),
            "body": hit.body.decode("utf-8", "replace"),
        }
        headers = {
            f"X-Echo-{name}": value
            for name in ("Authorization", "X-Api-Key")
            if (value := hit.header(name)) is not None
        }
        return web.Response(text=json.dumps(echoed), content_type="application/json", headers=headers)

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        hit = await self._record(request)
        count = int(request.query.get("n", "3"))
        delay = float(request.query.get("delay", "0.2"))
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        for number in range(count):
            deadline = time.monotonic() + (delay if number else 0)
            while time.monotonic() < deadline:  # watch for the client leaving while idle
                if request.transport is None or request.transport.is_closing():
                    self.dropped.append(hit)
                    return response
                await asyncio.sleep(0.02)
            await response.write(f"line {number} {request.headers.get('Authorization', '')}\n".encode())
        await response.write_eof()
        return response


@pytest_asyncio.fixture
async def attacker() -> AsyncIterator[Attacker]:
    """A started `Attacker` on 127.0.0.2, stopped after the test."""
    async with Attacker() as server:
        yield server
