"""A local double of the Anthropic Messages API, good enough for the real Claude Code CLI.

No test machine can reach Anthropic, yet the tests run the *real* Claude Code CLI (inside the
Daytona double's sandboxes, or directly). The CLI talks to whatever ``ANTHROPIC_BASE_URL``
points at, so this module serves that URL from the test's own event loop.

The wire format copies what the real API sends and what the real CLI was verified to accept
(``../shared/reference/claude-code.md`` §2, captures in
``../shared/reference/claude-code-captures/``):

* ``POST /v1/messages?beta=true`` with ``"stream": true`` → ``200 text/event-stream``, frames
  ``event: NAME\\ndata: JSON\\n\\n`` in the order message_start, ping, per block
  (content_block_start, content_block_delta…, content_block_stop), message_delta, message_stop.
* errors → ``{"type":"error","error":{"type":…,"message":…},"request_id":…}`` with the real
  status codes (401 authentication_error, 429 rate_limit_error + ``retry-after``, 500 api_error,
  529 overloaded_error, 404 not_found_error, 400 invalid_request_error).

What the double answers is decided per request by ``AnthropicDouble.responder`` (a plain or
async function of the parsed request body). The default reproduces the capturing double used
for the reference captures, so a test can drive the CLI with magic words in the prompt
(``TOOL``, ``THINK``, ``RECALL``, ``ERROR500``).

Usage::

    async with AnthropicDouble() as api:
        api.responder = lambda body: Turn([Text("hi there")])
        env = {"ANTHROPIC_BASE_URL": api.url, "ANTHROPIC_API_KEY": api.api_key, ...}
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Union

import pytest_asyncio
from aiohttp import web

log = logging.getLogger(__name__)

DEFAULT_API_KEY = "sk-ant-test-key"
HELLO_TEXT = "Hello from the fake Anthropic server."
SYSTEM_REMINDER_PREFIX = "<system-reminder>"
#: Size of the ``input_json_delta`` pieces, as in the captures.
TOOL_INPUT_CHUNK = 15
#: Models listed by ``GET /v1/models``; the first is the CLI 2.1.332 default.
MODELS = ("claude-opus-5-5", "claude-sonnet-4-6", "claude-haiku-4-5")


# --------------------------------------------------------------------------------------------
# Reply model: what a responder returns
# --------------------------------------------------------------------------------------------


@dataclass
class Text:
    """A text content block, streamed as ``text_delta`` frames of ``Turn.chunk_size`` chars."""

    text: str


@dataclass
class Thinking:
    """A thinking block: ``thinking_delta`` frames, then one ``signature_delta``.

    The CLI replays the block (with its signature) in later requests, so the signature
    must be present even though nobody verifies it.
    """

    text: str
    signature: str = "fake-signature"


@dataclass
class ToolUse:
    """A tool call; the input is streamed as ``input_json_delta`` pieces of ~15 chars.

    ``id`` defaults to a fresh ``toolu_fakeNNNN``; the CLI echoes it in the tool_result.
    """

    name: str
    input: dict[str, Any]
    id: str | None = None


Block = Union[Text, Thinking, ToolUse]


def _default_usage() -> dict[str, int]:
    return {"input_tokens": 10, "output_tokens": 5}


@dataclass
class Turn:
    """One successful assistant message.

    ``stop_reason`` defaults to ``"tool_use"`` when a ToolUse block is present (the CLI only
    executes tools on that stop reason) and ``"end_turn"`` otherwise. ``delay`` is slept
    between SSE frames so tests can watch output arrive progressively. ``usage`` is what
    the final ``message_delta`` reports (the CLI computes cost and the result's usage from
    it); ``message_start`` reports ``output_tokens: 1`` like the real API.
    """

    blocks: list[Block]
    stop_reason: str | None = None
    chunk_size: int = 12
    delay: float = 0.0
    usage: dict[str, int] = field(default_factory=_default_usage)

    def resolved_stop_reason(self) -> str:
        if self.stop_reason is not None:
            return self.stop_reason
        return "tool_use" if any(isinstance(b, ToolUse) for b in self.blocks) else "end_turn"


@dataclass
class ApiError:
    """An HTTP error in the real API's error shape.

    The CLI retries 5xx/429/529 (``CLAUDE_CODE_MAX_RETRIES``) and then ends the run with
    ``is_error: true``; tests set the retry count to 0.
    """

    status: int = 500
    error_type: str = "api_error"
    message: str = "fake internal error"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def overloaded(cls) -> ApiError:
        return cls(529, "overloaded_error", "Overloaded")

    @classmethod
    def rate_limited(cls, retry_after: int = 1) -> ApiError:
        return cls(
            429,
            "rate_limit_error",
            "Number of request tokens has exceeded your per-minute rate limit",
            {"retry-after": str(retry_after)},
        )

    @classmethod
    def unauthorized(cls, message: str = "invalid x-api-key") -> ApiError:
        return cls(401, "authentication_error", message)


@dataclass
class Hang:
    """Start a stream (message_start, ping, then ``text`` if any) and never finish it.

    The handler returns once the client disconnects or the double stops; meant for cancel
    tests (e.g. the CLI killed mid-turn). ``RecordedRequest.disconnected`` tells which.
    """

    text: str = ""
    chunk_size: int = 12


Reply = Union[Turn, ApiError, Hang]
#: A responder may return a Reply, a bare string (→ ``Turn([Text(s)])``), or an awaitable.
Responder = Callable[[dict[str, Any]], Union[Reply, str, Awaitable[Union[Reply, str]]]]


@dataclass
class RecordedRequest:
    """One HTTP request as the double saw it.

    ``headers`` has lower-case names (HTTP headers are case-insensitive; the CLI sends
    lower-case anyway). ``body`` is the parsed JSON or None. ``time`` is ``time.time()``,
    ``perf`` is ``time.perf_counter()`` (for latency maths against ``emitted``).
    ``status`` is filled in once the double has answered; ``disconnected`` is True when the
    client went away before the response was complete.
    """

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: dict[str, Any] | None
    time: float
    perf: float
    status: int | None = None
    disconnected: bool = False


# --------------------------------------------------------------------------------------------
# Request-body helpers (the CLI's bodies have quirks; see reference §2.3)
# --------------------------------------------------------------------------------------------


def _prompt_text(content: Any) -> str | None:
    """The prompt of one user message: a plain string, or its last non-reminder text block.

    The CLI puts ``<system-reminder>`` blocks *before* the prompt in the first user message,
    so the last qualifying text block is the prompt. None if the message has none (e.g. a
    message that only carries tool_result blocks).
    """
    if isinstance(content, str):
        return content
    if not isinstance(content, list):
        return None
    for block in reversed(content):
        if isinstance(block, dict) and block.get("type") == "text":
            text = block.get("text", "")
            if not text.startswith(SYSTEM_REMINDER_PREFIX):
                return text
    return None


def _user_messages(body: dict[str, Any]) -> list[dict[str, Any]]:
    messages = body.get("messages") or []
    return [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]


def last_user_text(body: dict[str, Any]) -> str:
    """The prompt text of the last ``role:"user"`` message ("" if it has none).

    Never use ``messages[-1]`` or concatenated user text: the CLI adds a ``role:"system"``
    message and ``<system-reminder>`` blocks.
    """
    users = _user_messages(body)
    if not users:
        return ""
    return _prompt_text(users[-1].get("content")) or ""


def user_prompts(body: dict[str, Any]) -> list[str]:
    """Every user prompt in the conversation, oldest first (tool_result-only turns skipped).

    With ``--continue``/``--resume`` the CLI replays earlier turns, so ``user_prompts(body)``
    of the new request is ``[*earlier_prompts, new_prompt]``.
    """
    prompts = []
    for message in _user_messages(body):
        text = _prompt_text(message.get("content"))
        if text is not None:
            prompts.append(text)
    return prompts


def _tool_results(body: dict[str, Any]) -> list[dict[str, Any]]:
    users = _user_messages(body)
    if not users or not isinstance(users[-1].get("content"), list):
        return []
    return [
        b for b in users[-1]["content"] if isinstance(b, dict) and b.get("type") == "tool_result"
    ]


def has_tool_result(body: dict[str, Any]) -> bool:
    """True if the last user message carries a tool_result (i.e. this is a follow-up turn)."""
    return bool(_tool_results(body))


def tool_result_text(body: dict[str, Any]) -> str:
    """The text of the last user message's first tool_result (string or list-of-blocks)."""
    results = _tool_results(body)
    if not results:
        return ""
    content = results[0].get("content", "")
    if isinstance(content, list):
        return "".join(
            b.get("text", "") for b in content if isinstance(b, dict) and b.get("type") == "text"
        )
    return str(content)


def system_text(body: dict[str, Any]) -> str:
    """The top-level ``system`` prompt as one string (blocks joined by newlines).

    ``--append-system-prompt X`` ends up at the end of the last block. The environment
    info the CLI sends as a ``role:"system"`` *message* is not included.
    """
    system = body.get("system")
    if isinstance(system, str):
        return system
    if isinstance(system, list):
        return "\n".join(b.get("text", "") for b in system if isinstance(b, dict))
    return ""


# --------------------------------------------------------------------------------------------
# Default responder: the capturing double of the reference captures (INDEX.md)
# --------------------------------------------------------------------------------------------


def default_responder(body: dict[str, Any]) -> Reply:
    """Reply like the double that produced the reference captures.

    tool_result → "Tool finished: <60 chars>"; TOOL → text + Bash ``echo hi > hello.txt``;
    THINK → thinking + "Thought about it: 42."; RECALL → lists earlier prompts (proves
    history replay); ERROR500 → HTTP 500 api_error; anything else → the hello text.
    """
    if has_tool_result(body):
        return Turn([Text(f"Tool finished: {tool_result_text(body)[:60]}")])
    prompt = last_user_text(body)
    if "TOOL" in prompt:
        return Turn(
            [
                Text("I'll create the file."),
                ToolUse(
                    "Bash", {"command": "echo hi > hello.txt", "description": "Create hello.txt"}
                ),
            ]
        )
    if "THINK" in prompt:
        return Turn([Thinking("Let me think about this briefly."), Text("Thought about it: 42.")])
    if "RECALL" in prompt:
        earlier = user_prompts(body)[:-1]
        listing = json.dumps(earlier)
        return Turn([Text(f"I was sent {len(earlier)} earlier user prompts: {listing}")])
    if "ERROR500" in prompt:
        return ApiError()
    return Turn([Text(HELLO_TEXT)])


def scripted(*replies: Reply | str, then: Responder = default_responder) -> Responder:
    """A responder that returns ``replies`` in order, one per request, then defers to ``then``."""
    queue = list(replies)

    def responder(body: dict[str, Any]) -> Any:
        return queue.pop(0) if queue else then(body)

    return responder


# --------------------------------------------------------------------------------------------
# The server
# --------------------------------------------------------------------------------------------


def _sse(event: str, data: dict[str, Any]) -> bytes:
    """One SSE frame, compact JSON like the real API."""
    payload = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return f"event: {event}\ndata: {payload}\n\n".encode()


def _chunks(text: str, size: int) -> Iterator[str]:
    """Slices of ``text``; linear in total size, so 2 MB turns stream cheaply."""
    size = max(1, size)
    for start in range(0, len(text), size):
        yield text[start : start + size]


class _ClientGone(Exception):
    """The client closed the connection while we were streaming."""


class AnthropicDouble:
    """An aiohttp server on 127.0.0.1 speaking the Messages API.

    ``url`` has no ``/v1`` suffix (the CLI appends ``/v1/messages?beta=true``). Requests
    must carry ``x-api-key: <api_key>`` or ``Authorization: Bearer <auth_token>`` (the CLI
    sends the latter for ``ANTHROPIC_AUTH_TOKEN``); anything else gets the real API's 401.
    ``api_key=None`` disables the check.

    Recordings: ``requests`` (every ``/v1/messages`` call, including rejected ones),
    ``other_requests`` (every other path: HEAD preflights, models, unknown paths) and
    ``emitted`` (``(perf_counter, delta_text)`` per content_block_delta frame, stamped after
    the frame was written and drained, for latency benchmarks). ``reset()`` clears them.
    """

    def __init__(
        self,
        api_key: str | None = DEFAULT_API_KEY,
        *,
        auth_token: str | None = None,
        responder: Responder | None = None,
    ) -> None:
        self.api_key = api_key
        self.auth_token = auth_token
        self.responder: Responder = responder or default_responder
        self.requests: list[RecordedRequest] = []
        self.other_requests: list[RecordedRequest] = []
        self.emitted: list[tuple[float, str]] = []
        self.port: int | None = None
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._stopping = asyncio.Event()

    # -- lifecycle ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("AnthropicDouble is not started")
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> AnthropicDouble:
        app = web.Application(client_max_size=64 * 1024 * 1024)  # long conversations are big
        app.router.add_route("HEAD", "/{tail:.*}", self._handle_head)
        app.router.add_post("/v1/messages", self._handle_messages)
        app.router.add_post("/v1/messages/count_tokens", self._handle_count_tokens)
        app.router.add_get("/v1/models", self._handle_models, allow_head=False)
        app.router.add_route("*", "/{tail:.*}", self._handle_unknown)
        # Short shutdown timeout: a Hang or slow Turn must not keep stop() waiting long.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server = site._server  # aiohttp has no public accessor for the bound port
        assert server is not None and server.sockets
        self.port = server.sockets[0].getsockname()[1]
        self._stopping.clear()
        log.info("Anthropic double listening on %s", self.url)
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AnthropicDouble:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    def reset(self) -> None:
        """Forget recorded requests and emitted frames (the responder is kept)."""
        self.requests.clear()
        self.other_requests.clear()
        self.emitted.clear()

    # -- small helpers -----------------------------------------------------------------------

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}_fake{next(self._ids):04d}"

    async def _record(self, request: web.Request) -> RecordedRequest:
        raw = await request.read()
        body: dict[str, Any] | None = None
        if raw:
            try:
                parsed = json.loads(raw)
                body = parsed if isinstance(parsed, dict) else None
            except ValueError:
                body = None
        return RecordedRequest(
            method=request.method,
            path=request.path,
            query=request.query_string,
            headers={k.lower(): v for k, v in request.headers.items()},
            body=body,
            time=time.time(),
            perf=time.perf_counter(),
        )

    def _error(self, record: RecordedRequest, error: ApiError) -> web.Response:
        request_id = self._next_id("req")
        record.status = error.status
        body = {
            "type": "error",
            "error": {"type": error.error_type, "message": error.message},
            "request_id": request_id,
        }
        headers = {"request-id": request_id, **error.headers}
        return web.json_response(body, status=error.status, headers=headers)

    def _auth_error(self, record: RecordedRequest) -> ApiError | None:
        """The 401 the real API would give for these credentials, or None if they are fine."""
        if self.api_key is None:
            return None
        key = record.headers.get("x-api-key")
        authorization = record.headers.get("authorization", "")
        if key is not None:
            return None if key == self.api_key else ApiError.unauthorized("invalid x-api-key")
        if authorization.lower().startswith("bearer "):
            token = authorization[7:].strip()
            accepted = {self.api_key, self.auth_token} - {None}
            return None if token in accepted else ApiError.unauthorized("Invalid bearer token")
        return ApiError.unauthorized("x-api-key header is required")

    def _check(self, record: RecordedRequest, *, required: tuple[str, ...]) -> ApiError | None:
        """Auth, version header and body validation, in the real API's order."""
        auth = self._auth_error(record)
        if auth is not None:
            return auth
        if "anthropic-version" not in record.headers:
            return ApiError(400, "invalid_request_error", "anthropic-version: header is required")
        if record.body is None:
            return ApiError(400, "invalid_request_error", "There was an error parsing the body")
        for key in required:
            if key not in record.body:
                return ApiError(400, "invalid_request_error", f"{key}: Field required")
        return None

    async def _reply_for(self, body: dict[str, Any]) -> Reply:
        try:
            reply = self.responder(body)
            if inspect.isawaitable(reply):
                reply = await reply
        except Exception as exc:  # a broken responder should fail the test visibly, not hang it
            log.exception("Anthropic double responder raised")
            return ApiError(500, "api_error", f"responder raised {exc!r}")
        if isinstance(reply, str):
            return Turn([Text(reply)])
        if not isinstance(reply, (Turn, ApiError, Hang)):
            return ApiError(500, "api_error", f"responder returned {reply!r}")
        return reply

    # -- handlers ----------------------------------------------------------------------------

    async def _handle_head(self, request: web.Request) -> web.Response:
        """Older CLIs (and newer ones without the nonessential-traffic flag) probe with HEAD."""
        self.other_requests.append(record := await self._record(request))
        record.status = 200
        return web.Response(status=200)

    async def _handle_models(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        self.other_requests.append(record)
        auth = self._auth_error(record)
        if auth is not None:
            return self._error(record, auth)
        data = [
            {
                "type": "model",
                "id": model,
                "display_name": model.replace("claude-", "Claude ").replace("-", " ").title(),
                "created_at": "2026-01-01T00:00:00Z",
            }
            for model in MODELS
        ]
        record.status = 200
        return web.json_response(
            {"data": data, "has_more": False, "first_id": data[0]["id"], "last_id": data[-1]["id"]}
        )

    async def _handle_count_tokens(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        self.other_requests.append(record)
        error = self._check(record, required=("model", "messages"))
        if error is not None:
            return self._error(record, error)
        assert record.body is not None
        size = len(json.dumps([record.body.get("system"), record.body["messages"]]))
        record.status = 200
        return web.json_response({"input_tokens": max(1, size // 4)})

    async def _handle_unknown(self, request: web.Request) -> web.Response:
        record = await self._record(request)
        self.other_requests.append(record)
        log.warning("Anthropic double: unknown endpoint %s %s", request.method, request.path_qs)
        return self._error(record, ApiError(404, "not_found_error", "Not Found"))

    async def _handle_messages(self, request: web.Request) -> web.StreamResponse:
        record = await self._record(request)
        self.requests.append(record)
        error = self._check(record, required=("model", "messages", "max_tokens"))
        if error is not None:
            return self._error(record, error)
        assert record.body is not None
        reply = await self._reply_for(record.body)
        if isinstance(reply, ApiError):
            return self._error(record, reply)
        model = str(record.body["model"])
        if record.body.get("stream"):
            return await self._stream(request, record, reply, model)
        if isinstance(reply, Hang):
            await self._wait_for_disconnect(request)
            record.disconnected = not self._stopping.is_set()
            return web.Response(status=499)  # never reaches the client; aiohttp wants one
        return self._json_message(record, reply, model)

    def _json_message(self, record: RecordedRequest, turn: Turn, model: str) -> web.Response:
        """The non-streaming answer: the whole message as one JSON object."""
        content: list[dict[str, Any]] = []
        for block in turn.blocks:
            if isinstance(block, Text):
                content.append({"type": "text", "text": block.text})
            elif isinstance(block, Thinking):
                content.append(
                    {"type": "thinking", "thinking": block.text, "signature": block.signature}
                )
            else:
                tool_id = block.id or self._next_id("toolu")
                content.append(
                    {"type": "tool_use", "id": tool_id, "name": block.name, "input": block.input}
                )
        request_id = self._next_id("req")
        message = {
            "id": self._next_id("msg"),
            "type": "message",
            "role": "assistant",
            "model": model,
            "content": content,
            "stop_reason": turn.resolved_stop_reason(),
            "stop_sequence": None,
            "usage": {
                "cache_creation_input_tokens": 0,
                "cache_read_input_tokens": 0,
                **turn.usage,
            },
        }
        record.status = 200
        return web.json_response(message, headers={"request-id": request_id})

    async def _wait_for_disconnect(self, request: web.Request) -> None:
        """Poll until the client is gone or the double stops.

        aiohttp does not cancel handlers on client disconnect (handler_cancellation is off),
        so the transport is watched instead.
        """
        while not self._stopping.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            try:
                await asyncio.wait_for(self._stopping.wait(), 0.05)
            except asyncio.TimeoutError:
                pass

    async def _stream(
        self, request: web.Request, record: RecordedRequest, reply: Turn | Hang, model: str
    ) -> web.StreamResponse:
        """Send one message as SSE, frame by frame (write + drain each, no big buffers)."""
        request_id = self._next_id("req")
        response = web.StreamResponse(
            status=200,
            headers={
                "Content-Type": "text/event-stream; charset=utf-8",
                "Cache-Control": "no-cache",
                "request-id": request_id,
            },
        )
        response.enable_chunked_encoding()
        await response.prepare(request)
        record.status = 200
        try:
            await self._stream_body(request, response, reply, model)
        except (_ClientGone, ConnectionError):
            record.disconnected = True
            log.info("Anthropic double: client disconnected during %s", record.path)
        return response

    async def _stream_body(
        self, request: web.Request, response: web.StreamResponse, reply: Turn | Hang, model: str
    ) -> None:
        delay = reply.delay if isinstance(reply, Turn) else 0.0
        first = True

        async def send(event: str, data: dict[str, Any], delta: str | None = None) -> None:
            nonlocal first
            if delay and not first:
                await asyncio.sleep(delay)
            first = False
            transport = request.transport
            if transport is None or transport.is_closing():
                raise _ClientGone
            await response.write(_sse(event, data))
            writer = getattr(response, "_payload_writer", None)  # write() only drains per 64 KiB
            if writer is not None:
                await writer.drain()
            if delta is not None:
                self.emitted.append((time.perf_counter(), delta))

        await send(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": self._next_id("msg"),
                    "type": "message",
                    "role": "assistant",
                    "model": model,
                    "content": [],
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {
                        "input_tokens": (reply.usage if isinstance(reply, Turn) else {}).get(
                            "input_tokens", 10
                        ),
                        "output_tokens": 1,
                        "cache_creation_input_tokens": 0,
                        "cache_read_input_tokens": 0,
                    },
                },
            },
        )
        await send("ping", {"type": "ping"})

        if isinstance(reply, Hang):
            if reply.text:
                await send(
                    "content_block_start",
                    {
                        "type": "content_block_start",
                        "index": 0,
                        "content_block": {"type": "text", "text": ""},
                    },
                )
                for piece in _chunks(reply.text, reply.chunk_size):
                    delta = {"type": "text_delta", "text": piece}
                    await send(
                        "content_block_delta",
                        {"type": "content_block_delta", "index": 0, "delta": delta},
                        piece,
                    )
            await self._wait_for_disconnect(request)
            if not self._stopping.is_set():
                raise _ClientGone
            return

        for index, block in enumerate(reply.blocks):
            await self._stream_block(send, index, block, reply.chunk_size)

        await send(
            "message_delta",
            {
                "type": "message_delta",
                "delta": {"stop_reason": reply.resolved_stop_reason(), "stop_sequence": None},
                "usage": {"output_tokens": reply.usage.get("output_tokens", 5)},
            },
        )
        await send("message_stop", {"type": "message_stop"})
        await response.write_eof()

    async def _stream_block(
        self,
        send: Callable[..., Awaitable[None]],
        index: int,
        block: Block,
        chunk_size: int,
    ) -> None:
        """content_block_start, the deltas of one block, content_block_stop."""

        def delta_frame(delta: dict[str, Any]) -> dict[str, Any]:
            return {"type": "content_block_delta", "index": index, "delta": delta}

        if isinstance(block, Text):
            start: dict[str, Any] = {"type": "text", "text": ""}
        elif isinstance(block, Thinking):
            start = {"type": "thinking", "thinking": "", "signature": ""}
        else:
            start = {
                "type": "tool_use",
                "id": block.id or self._next_id("toolu"),
                "name": block.name,
                "input": {},
            }
        await send(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": start},
        )

        if isinstance(block, Text):
            for piece in _chunks(block.text, chunk_size):
                await send(
                    "content_block_delta", delta_frame({"type": "text_delta", "text": piece}), piece
                )
        elif isinstance(block, Thinking):
            for piece in _chunks(block.text, chunk_size):
                await send(
                    "content_block_delta",
                    delta_frame({"type": "thinking_delta", "thinking": piece}),
                    piece,
                )
            await send(
                "content_block_delta",
                delta_frame({"type": "signature_delta", "signature": block.signature}),
                block.signature,
            )
        else:
            for piece in _chunks(json.dumps(block.input), TOOL_INPUT_CHUNK):
                await send(
                    "content_block_delta",
                    delta_frame({"type": "input_json_delta", "partial_json": piece}),
                    piece,
                )
        await send("content_block_stop", {"type": "content_block_stop", "index": index})


@pytest_asyncio.fixture
async def anthropic_double() -> AsyncIterator[AnthropicDouble]:
    """A started AnthropicDouble with the default responder, stopped after the test."""
    async with AnthropicDouble() as double:
        yield double
