#!/usr/bin/env python
"""Streaming benchmark: this library vs the original `claude-maison==0.1.0`, in one run.

    pip install -e '.[test]' && python bench/stream_bench.py

Both libraries stream the same long Claude Code run (the real CLI, inside the Daytona double's
sandboxes, answered by the Anthropic double) and we measure, for each:

* bytes moved out of the sandbox: the Daytona double's `toolbox_bytes_out` (HTTP bodies and
  log WebSocket frames of the toolbox), from just before `stream()` to its last event;
* the size of Claude Code's stream-json output file, read from the sandbox's disk, and the
  ratio of the two (transfer amplification: 1.0 means each byte crossed once);
* toolbox requests, over the same window;
* event latency: from the Anthropic double writing a text chunk (`emitted`) to the library
  yielding the event that carries it, p50 / p95 over all chunks.

Workload: one assistant turn of N text content blocks (default 2,000 of ~1 KB, ~2 MB), each a
single `text_delta`, paced by the double's per-frame delay. The CLI writes one `assistant`
event per content block, so the original (which only sees whole blocks) gets each chunk as
early as it can; this library sees the `text_delta` stream events. Each chunk starts with a
unique marker (`[c0042]`) that matches a yielded event to its emit time.

Each library runs in its own process (a "driver": this same file with `--driver`), so neither
shares an event loop with the doubles. The original runs from its own virtualenv
(`~/.cache/maison-slack/bench-venv`, created on first use with `claude-maison==0.1.0` and the
daytona SDK version installed here; that one-time pip install is the only non-loopback
traffic). It is constructed directly on a sandbox made with the SDK, skipping its install step.

Timestamps: the double stamps `emitted` with `time.perf_counter()`, the drivers use
`time.monotonic()`; on Linux both are `clock_gettime(CLOCK_MONOTONIC)`, one system-wide clock.
The script checks that (and cross-checks the driver's clock) before comparing them.

Results go to stdout and to `bench/RESULTS.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MARKER = re.compile(r"\[c(\d{4,})\]")
PROMPT = "STREAMBENCH: write the long answer, please."
PROTO = "@@bench "  # prefix of the driver's protocol lines on stdout
ORIGINAL_REQUIREMENT = "claude-maison==0.1.0"

REPO = Path(__file__).resolve().parent.parent
RESULTS_MD = REPO / "bench" / "RESULTS.md"
DEFAULT_BENCH_VENV = Path.home() / ".cache" / "maison-slack" / "bench-venv"

#: Words for the chunk filler: varied text, not one repeated byte.
_WORDS = (
    "sandbox stream event latency bytes daytona claude output token chunk block socket "
    "poll file write read delta marker thread slack reply answer code tool result run"
).split()


def chunk_text(index: int, size: int) -> str:
    """Chunk `index`: its marker, then ~`size` characters of words (ASCII, no newline)."""
    parts = [f"[c{index:04d}]"]
    length = len(parts[0])
    k = index * 7
    while length < size - 1:
        word = _WORDS[k % len(_WORDS)]
        k += 3 + index % 5
        parts.append(word)
        length += len(word) + 1
    return " ".join(parts)[: size - 1] + " "


def clean_env() -> dict[str, str]:
    """This process's environment without proxies or service configuration (loopback only)."""
    env = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("DAYTONA_", "ANTHROPIC_", "SLACK_", "MAISON_", "CLAUDE_CODE_"))
        and name.lower() not in ("http_proxy", "https_proxy", "all_proxy")
    }
    env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
    return env


# ============================================================================ driver (child)
# Runs inside the library's own environment: imports only that library and the daytona SDK.


def _say(kind: str, **data: Any) -> None:
    sys.stdout.write(PROTO + json.dumps({"kind": kind, **data}) + "\n")
    sys.stdout.flush()


async def _wait_for(word: str) -> None:
    line = await asyncio.to_thread(sys.stdin.readline)
    if line.strip() != word:
        raise SystemExit(f"driver: expected {word!r} from the benchmark, got {line!r}")


async def drive(cfg: dict[str, Any]) -> None:
    from daytona import AsyncDaytona, CreateSandboxFromSnapshotParams, DaytonaConfig

    impl = cfg["impl"]
    client = AsyncDaytona(DaytonaConfig(api_key=cfg["daytona_key"], api_url=cfg["daytona_url"]))
    env = dict(cfg["sandbox_env"])
    sandbox: Any = None
    try:
        if impl == "ours":
            from maison_slack import Maison

            sandbox = await Maison.create_sandbox_for_claude(
                anthropic_api_key=cfg["anthropic_key"], env_vars=env, daytona=client
            )
            sandbox_id = sandbox.id
            events_of = _ours_markers
        else:
            import maison

            raw = await client.create(CreateSandboxFromSnapshotParams(snapshot=cfg["snapshot"], env_vars=env))
            sandbox = maison.MaisonSandbox(raw, client, cfg["anthropic_key"])
            sandbox_id = raw.id
            events_of = _original_markers
        _say("ready", sandbox_id=sandbox_id, monotonic=time.monotonic(),
             clock=time.get_clock_info("monotonic").implementation)
        await _wait_for("GO")

        received: list[tuple[float, list[str]]] = []
        kinds: dict[str, int] = {}
        result: dict[str, Any] = {}
        started = time.monotonic()

        async def consume() -> None:
            async for event in sandbox.stream(PROMPT):
                now = time.monotonic()
                kinds[event.type] = kinds.get(event.type, 0) + 1
                markers = events_of(event)
                if markers:
                    received.append((now, markers))
                elif event.type == "result":
                    result.update(is_error=bool(event.data.get("is_error")), subtype=event.data.get("subtype"))
                elif event.type == "stderr":
                    result["stderr"] = str(event.data.get("content", ""))[-500:]

        await asyncio.wait_for(consume(), cfg["stream_timeout"])
        _say("end", received=received, kinds=kinds, result=result, seconds=time.monotonic() - started)
        await _wait_for("CLOSE")
    finally:
        if sandbox is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sandbox.close(), 30)
        with contextlib.suppress(Exception):
            await client.close()


def _ours_markers(event: Any) -> list[str]:
    """This library: text events (one per `text_delta`)."""
    return MARKER.findall(event.content) if event.type == "text" else []


def _original_markers(event: Any) -> list[str]:
    """The original: `assistant` events, whose text blocks carry the chunks."""
    if event.type != "assistant":
        return []
    content = (event.data.get("message") or {}).get("content")
    if not isinstance(content, list):
        return []
    found: list[str] = []
    for block in content:
        if isinstance(block, dict) and block.get("type") == "text":
            found += MARKER.findall(str(block.get("text", "")))
    return found


# ============================================================================ benchmark (parent)


def bench_python(venv_dir: Path, daytona_version: str) -> Path:
    """The original library's interpreter, creating its virtualenv once."""
    python = venv_dir / "bin" / "python"
    check = (
        "import importlib.metadata as m, maison; "
        f"assert m.version('claude-maison') == '0.1.0' and m.version('daytona') == '{daytona_version}'"
    )
    if python.exists() and subprocess.run([str(python), "-c", check], capture_output=True, timeout=60).returncode == 0:
        return python
    print(f"Creating {venv_dir} with {ORIGINAL_REQUIREMENT} (one-time)…", flush=True)
    shutil.rmtree(venv_dir, ignore_errors=True)
    venv_dir.parent.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv_dir)], check=True, timeout=300)
    subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check",
         ORIGINAL_REQUIREMENT, f"daytona=={daytona_version}"],
        check=True, timeout=900,
    )
    subprocess.run([str(python), "-c", check], check=True, timeout=60)
    return python


def check_clocks() -> str:
    """The double's `emitted` (perf_counter) and the drivers' monotonic() must be one clock."""
    perf = time.get_clock_info("perf_counter").implementation
    mono = time.get_clock_info("monotonic").implementation
    if perf != mono or "CLOCK_MONOTONIC" not in mono:
        raise SystemExit(f"perf_counter ({perf}) and monotonic ({mono}) differ: latencies would be meaningless")
    drift = abs(time.perf_counter() - time.monotonic())
    if drift > 0.001:
        raise SystemExit(f"perf_counter and monotonic differ by {drift:.6f}s in this process")
    return mono


def percentile(values: list[float], q: float) -> float:
    """Inclusive linear-interpolation percentile (q in 0..100); NaN for no values."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    pos = (len(ordered) - 1) * q / 100
    low = int(pos)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (pos - low)


class Driver:
    """One library's driver process and its line protocol."""

    def __init__(self, proc: asyncio.subprocess.Process, name: str) -> None:
        self.proc = proc
        self.name = name
        self.stderr = bytearray()
        self._stderr_task = asyncio.ensure_future(self._collect_stderr())

    async def _collect_stderr(self) -> None:
        assert self.proc.stderr is not None
        while chunk := await self.proc.stderr.read(65536):
            self.stderr += chunk
            del self.stderr[: max(0, len(self.stderr) - 20000)]

    async def expect(self, kind: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"{self.name}: no {kind!r} within {timeout:g}s")
            line = await asyncio.wait_for(self.proc.stdout.readline(), remaining)
            if not line:
                await asyncio.sleep(0.2)  # let stderr drain
                raise RuntimeError(f"{self.name} driver exited before {kind!r}:\n{self.tail()}")
            text = line.decode(errors="replace")
            if not text.startswith(PROTO):
                continue
            message = json.loads(text[len(PROTO):])
            if message["kind"] == kind:
                return message

    async def send(self, word: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(word.encode() + b"\n")
        await self.proc.stdin.drain()

    def tail(self) -> str:
        return "\n".join(self.stderr.decode(errors="replace").strip().splitlines()[-30:])

    async def finish(self, timeout: float = 60) -> None:
        """Wait for the driver to exit; kill it (by its own pid) if it does not."""
        try:
            await asyncio.wait_for(self.proc.wait(), timeout)
        except asyncio.TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._stderr_task, 5)


def output_file(daytona: Any, impl: str, sandbox_id: str) -> Path:
    """Claude Code's stream-json file on the sandbox's disk (absolute paths are host paths)."""
    record = daytona.sandbox(sandbox_id)
    if impl == "ours":
        found = sorted(record.home.glob(".maison/runs/*/out.jsonl"))
        if len(found) != 1:
            raise RuntimeError(f"expected one run dir in {record.home}/.maison/runs, found {found}")
        return found[0]
    for session in record.sessions.values():
        for command in session.commands.values():
            match = re.search(r"> (/tmp/maison-[0-9a-f]+\.jsonl)", command.command)
            if match:
                return Path(match.group(1))
    raise RuntimeError("the original's output file is not named in any session command")


async def run_one(impl: str, python: Path, daytona: Any, anthropic: Any, args: argparse.Namespace,
                  chunks: int) -> dict[str, Any]:
    sandbox_env = {
        "ANTHROPIC_BASE_URL": anthropic.url,
        "IS_SANDBOX": "1",
        "CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC": "1",
        "CLAUDE_CODE_MAX_RETRIES": "0",
    }
    cfg = {
        "impl": impl,
        "daytona_url": daytona.api_url,
        "daytona_key": daytona.api_key,
        "anthropic_key": anthropic.api_key,
        "snapshot": "daytona-small",
        "sandbox_env": sandbox_env,
        "stream_timeout": args.stream_timeout,
    }
    env = clean_env()
    env.pop("PYTHONPATH", None)
    if impl == "ours":
        env["PYTHONPATH"] = str(REPO)  # this checkout, whatever else is installed
    before_spawn = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        str(python), str(Path(__file__).resolve()), "--driver", json.dumps(cfg),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        cwd=str(REPO), env=env, limit=64 * 1024 * 1024,
    )
    driver = Driver(proc, impl)
    extra_files: list[Path] = []
    try:
        ready = await driver.expect("ready", args.setup_timeout)
        got_ready = time.perf_counter()
        if not (before_spawn <= ready["monotonic"] <= got_ready) or ready["clock"] != time.get_clock_info(
            "perf_counter"
        ).implementation:
            raise RuntimeError(f"{impl} driver's clock is not this process's perf_counter clock: {ready}")
        sandbox_id = ready["sandbox_id"]

        daytona.reset_metrics()
        anthropic.reset()
        await driver.send("GO")
        end = await driver.expect("end", args.stream_timeout + 30)
        bytes_out, requests = daytona.toolbox_bytes_out, daytona.toolbox_requests
        emitted = list(anthropic.emitted)
        out_path = output_file(daytona, impl, sandbox_id)
        out_size = out_path.stat().st_size
        if impl != "ours":
            extra_files = [out_path.with_suffix(suffix) for suffix in (".jsonl", ".err", ".done")]
        await driver.send("CLOSE")
        await driver.finish()
    except BaseException:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await driver.finish(10)
        print(f"--- {impl} driver stderr (tail) ---\n{driver.tail()}", file=sys.stderr)
        raise
    finally:
        for path in extra_files:  # the original writes to the (host's) /tmp
            with contextlib.suppress(OSError):
                path.unlink()

    emitted_at: dict[str, float] = {}
    for stamp, delta in emitted:
        for marker in MARKER.findall(delta):
            emitted_at.setdefault(marker, stamp)
    received_at: dict[str, float] = {}
    for stamp, markers in end["received"]:
        for marker in markers:
            received_at.setdefault(marker, stamp)
    latencies = [(received_at[m] - emitted_at[m]) * 1000 for m in emitted_at if m in received_at]
    emit_times = sorted(emitted_at.values())
    return {
        "impl": impl,
        "bytes_out": bytes_out,
        "out_size": out_size,
        "amplification": bytes_out / out_size if out_size else float("nan"),
        "requests": requests,
        "p50": percentile(latencies, 50),
        "p95": percentile(latencies, 95),
        "max": max(latencies) if latencies else float("nan"),
        "min": min(latencies) if latencies else float("nan"),
        "matched": len(latencies),
        "emitted": len(emitted_at),
        "chunks": chunks,
        "stream_seconds": end["seconds"],
        "emit_seconds": emit_times[-1] - emit_times[0] if len(emit_times) > 1 else 0.0,
        "result": end["result"],
        "kinds": end["kinds"],
    }


def _mb(n: float) -> str:
    return f"{n / 1e6:,.2f} MB"


def render(ours: dict[str, Any], orig: dict[str, Any], meta: dict[str, Any]) -> tuple[str, str]:
    """(plain-text table, Markdown) of the same figures."""
    def ok(flag: bool) -> str:
        return "✅" if flag else "❌"

    rows = [
        ("Bytes moved from the sandbox", _mb(ours["bytes_out"]), _mb(orig["bytes_out"]), ""),
        ("Claude Code output file (stream-json)", _mb(ours["out_size"]), _mb(orig["out_size"]), ""),
        ("Transfer amplification (moved / file)", f"{ours['amplification']:.3f}×", f"{orig['amplification']:.2f}×",
         f"≤ 1.1 {ok(ours['amplification'] <= 1.1)}"),
        ("Toolbox requests", f"{ours['requests']:,}", f"{orig['requests']:,}", ""),
        ("Event latency p50", f"{ours['p50']:.1f} ms", f"{orig['p50']:.1f} ms", f"≤ 50 ms {ok(ours['p50'] <= 50)}"),
        ("Event latency p95", f"{ours['p95']:.1f} ms", f"{orig['p95']:.1f} ms", f"≤ 150 ms {ok(ours['p95'] <= 150)}"),
        ("Event latency min / max", f"{ours['min']:.1f} / {ours['max']:.1f} ms",
         f"{orig['min']:.1f} / {orig['max']:.1f} ms", ""),
        ("Chunks received / emitted", f"{ours['matched']:,} / {ours['emitted']:,}",
         f"{orig['matched']:,} / {orig['emitted']:,}", f"{ours['chunks']:,}"),
        ("Chunks emitted over", f"{ours['emit_seconds']:.1f} s", f"{orig['emit_seconds']:.1f} s", ""),
        ("Stream duration (stream() call)", f"{ours['stream_seconds']:.1f} s", f"{orig['stream_seconds']:.1f} s", ""),
    ]
    ratios = (
        "Original ÷ this library: "
        f"bytes moved {orig['bytes_out'] / ours['bytes_out']:.1f}×, "
        f"amplification {orig['amplification'] / ours['amplification']:.1f}×, "
        f"toolbox requests {orig['requests'] / max(1, ours['requests']):.1f}×, "
        f"latency p50 {orig['p50'] / ours['p50']:.1f}×, p95 {orig['p95'] / ours['p95']:.1f}×"
    )
    header = ("Metric", "this library", f"original ({ORIGINAL_REQUIREMENT})", "target (ours)")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(4)]
    line = lambda r: "  ".join(str(c).ljust(w) for c, w in zip(r, widths)).rstrip()  # noqa: E731
    text = "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows), "", ratios])

    md = [
        "# Streaming benchmark: maison-slack vs claude-maison 0.1.0",
        "",
        f"Generated by `python bench/stream_bench.py` on {meta['date']} ({meta['host']}).",
        "",
        f"Workload: one Claude Code run (real CLI {meta['cli']}) answering with {meta['chunks']:,} text "
        f"content blocks of {meta['chunk_bytes']:,} bytes ({_mb(meta['chunks'] * meta['chunk_bytes'])} of text), "
        f"each one `text_delta`, paced {meta['delay'] * 1000:g} ms per SSE frame "
        f"(~{meta['per_chunk_ms']:.1f} ms per chunk as emitted), served by the Anthropic double; sandboxes "
        f"from the Daytona double, driven through the real daytona SDK {meta['daytona']}. Each library "
        "runs in its own process; the original from its own virtualenv, constructed directly on a "
        "sandbox (its install step skipped).",
        "",
        "| Metric | this library | original (claude-maison 0.1.0) | target (ours) |",
        "|---|---:|---:|---|",
        *(f"| {r[0]} | {r[1]} | {r[2]} | {r[3]} |" for r in rows),
        "",
        f"**{ratios}.**",
        "",
        "How to read it:",
        "",
        "* *Bytes moved* is everything the toolbox sent back (HTTP bodies and log WebSocket frames) "
        "from just before `stream()` to its last event; *output file* is Claude Code's stream-json "
        "file on the sandbox's disk at that point. This library runs Claude Code with "
        "`--include-partial-messages`, so its file holds each chunk twice (the delta, then the whole "
        "block) and is about twice the original's; amplification compares each library with its own file.",
        "* *Latency* runs from the Anthropic double writing a chunk's SSE frame to the library yielding "
        "the event carrying it: for this library the `text` event of the `text_delta`, for the "
        "original the `assistant` event of the content block (the earliest it can see that text). "
        "Both clocks are `CLOCK_MONOTONIC`. The figure includes Claude Code's own processing, which "
        "is the same for both.",
        "* The original re-downloads the whole output file every 0.3 s, so its bytes grow with the "
        "square of the output: for a file growing steadily over T seconds its amplification is about "
        "T / 0.6 s (here ~{:.0f}× for a {:.1f} s run; a real run lasting minutes makes it hundreds). This "
        "library follows the command's log over one WebSocket: each byte crosses once, whatever the "
        "duration.".format(orig["amplification"], orig["stream_seconds"]),
        "* *Chunks emitted over* is how long the Anthropic double took to send the chunks; the "
        "double waits for Claude Code to read each frame, so it also shows how fast the CLI kept up "
        "(it writes more with `--include-partial-messages`).",
        "",
    ]
    return text, "\n".join(md)


async def bench(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(REPO))
    os.environ.clear()
    os.environ.update(clean_env())
    from importlib.metadata import version

    from tests.claude_cli import CLAUDE_CODE_VERSION, ensure_claude_cli
    from tests.doubles.anthropic import AnthropicDouble, Text, Turn, default_responder, last_user_text
    from tests.doubles.daytona import DaytonaDouble, SnapshotSpec

    clock = check_clocks()
    daytona_version = version("daytona")
    original_python = bench_python(Path(args.bench_venv), daytona_version)
    bin_dir = ensure_claude_cli()

    turn = Turn(
        [Text(chunk_text(i, args.chunk_bytes)) for i in range(args.chunks)],
        chunk_size=args.chunk_bytes + 1,  # one text_delta per block
        delay=args.delay,
    )

    def responder(body: dict[str, Any]) -> Any:
        return turn if "STREAMBENCH" in last_user_text(body) else default_responder(body)

    results: dict[str, dict[str, Any]] = {}
    async with DaytonaDouble(snapshots={"daytona-small": SnapshotSpec(path=[str(bin_dir)])}) as daytona, \
            AnthropicDouble(responder=responder) as anthropic:
        for impl, python in (("ours", Path(sys.executable)), ("original", original_python)):
            print(f"Streaming {args.chunks:,} chunks through {impl}…", flush=True)
            results[impl] = await asyncio.wait_for(
                run_one(impl, python, daytona, anthropic, args, args.chunks),
                args.setup_timeout + args.stream_timeout + 120,
            )
            r = results[impl]
            print(f"  done in {r['stream_seconds']:.1f} s, {r['matched']}/{r['chunks']} chunks, result {r['result']}",
                  flush=True)

    ours, orig = results["ours"], results["original"]
    for r in (ours, orig):
        if r["matched"] != args.chunks or r["result"].get("is_error", True):
            print(f"WARNING: {r['impl']} saw {r['matched']}/{args.chunks} chunks; result {r['result']}; "
                  f"events {r['kinds']}", file=sys.stderr)
        if r["min"] < 0:
            print(f"WARNING: {r['impl']} yielded a chunk {-r['min']:.1f} ms before it was emitted: clock problem",
                  file=sys.stderr)
    meta = {
        "date": time.strftime("%Y-%m-%d"),
        "host": f"{platform.system()} {platform.machine()}, Python {platform.python_version()}, {clock}",
        "cli": CLAUDE_CODE_VERSION,
        "daytona": daytona_version,
        "chunks": args.chunks,
        "chunk_bytes": args.chunk_bytes,
        "delay": args.delay,
        "per_chunk_ms": 1000 * ours["emit_seconds"] / max(1, args.chunks - 1),
    }
    text, md = render(ours, orig, meta)
    print()
    print(text)
    if args.write:
        RESULTS_MD.write_text(md)
        print(f"\nWrote {RESULTS_MD.relative_to(REPO)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chunks", type=int, default=2000, help="text chunks (content blocks)")
    parser.add_argument("--chunk-bytes", type=int, default=1024, help="bytes per chunk")
    parser.add_argument("--delay", type=float, default=0.001,
                        help="seconds the Anthropic double sleeps before each SSE frame (3 frames per chunk)")
    parser.add_argument("--setup-timeout", type=float, default=180)
    parser.add_argument("--stream-timeout", type=float, default=300)
    parser.add_argument("--bench-venv", default=str(DEFAULT_BENCH_VENV), help="virtualenv for the original")
    parser.add_argument("--no-write", dest="write", action="store_false", help="do not write bench/RESULTS.md")
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.driver:
        asyncio.run(drive(json.loads(args.driver)))
    else:
        asyncio.run(bench(args))


if __name__ == "__main__":
    main()
