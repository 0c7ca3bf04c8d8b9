"""How many status requests per second the emulator sustains, so provider benchmarks that poll it
measure the provider rather than the emulator.

The emulator runs as a subprocess (its CLI, as integration tests use it), 1,000 tasks are created
through the control API (half finished, half still pending, both vendors), and this process polls
``GET /apis/tts/{id}`` and ``GET /api/get/{id}`` over keep-alive connections with many requests in
flight. The emulator process's CPU time is read from /proc (or psutil) to show how close to
saturation it ran. Both the default asyncio loop and uvloop (when installed) are measured.

    .venv/bin/python benchmarks/emulator_throughput.py [--seconds 10] [--concurrency 128]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._report import table, write_section

API_KEY = "tts-emulator-key"
TARGET = 3000


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux) or psutil."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        import psutil

        times = psutil.Process(pid).cpu_times()
        return float(times.user + times.system)


def start_emulator(uvloop: bool) -> tuple[subprocess.Popen[str], dict[str, str]]:
    cmd = [
        sys.executable,
        "-m",
        "airflow_provider_tts.emulator",
        "--port",
        "0",
        "--delay",
        "0",
        "--audio-engine",
        "tones",
        "--print-json",
    ]
    if uvloop:
        cmd.append("--uvloop")
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True, env=env)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise RuntimeError("the emulator did not start")
    return proc, json.loads(line)


async def create_tasks(session: aiohttp.ClientSession, url: str, count: int) -> list[str]:
    """Half Camb, half Revid; every other task pending for an hour, the rest already finished."""
    paths = []
    for i in range(count):
        api = "camb_ai" if i % 2 == 0 else "revid_tts"
        delay = 0 if (i // 2) % 2 == 0 else 3600
        body = {"api": api, "kind": "tts", "delay": delay, "text": "Benchmark task"}
        async with session.post(f"{url}/_emulator/tasks", json=body) as resp:
            resp.raise_for_status()
            task_id = (await resp.json())["task_id"]
        paths.append(f"{url}/apis/tts/{task_id}" if api == "camb_ai" else f"{url}/api/get/{task_id}")
    return paths


async def hammer(paths: list[str], seconds: float, concurrency: int) -> dict[str, Any]:
    connector = aiohttp.TCPConnector(limit=concurrency)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, headers={"x-api-key": API_KEY}) as session:
        # Warm-up: renders the finished Revid tasks' audio (for their duration) and opens connections.
        async def fetch(path: str) -> None:
            async with session.get(path) as resp:
                await resp.read()

        await asyncio.gather(*(fetch(p) for p in paths[: max(concurrency, len(paths))]))
        deadline = time.perf_counter() + seconds

        async def worker(offset: int) -> None:
            nonlocal errors
            i = offset
            while True:
                start = time.perf_counter()
                if start >= deadline:
                    return
                try:
                    async with session.get(paths[i % len(paths)]) as resp:
                        await resp.read()
                        if resp.status not in (200, 202):
                            errors += 1
                except aiohttp.ClientError:
                    errors += 1
                latencies.append(time.perf_counter() - start)
                i += concurrency

        began = time.perf_counter()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.perf_counter() - began
    latencies.sort()
    return {
        "requests": len(latencies),
        "elapsed": elapsed,
        "errors": errors,
        "p50_ms": statistics.median(latencies) * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99)] * 1000,
    }


async def measure(uvloop: bool, tasks: int, seconds: float, concurrency: int) -> dict[str, Any]:
    proc, urls = start_emulator(uvloop)
    try:
        url = urls["url"]
        async with aiohttp.ClientSession() as control:
            paths = await create_tasks(control, url, tasks)
            before = await (await control.get(f"{url}/_emulator/stats")).json()
            cpu0, wall0 = cpu_seconds(proc.pid), time.perf_counter()
            result = await hammer(paths, seconds, concurrency)
            cpu1, wall1 = cpu_seconds(proc.pid), time.perf_counter()
            after = await (await control.get(f"{url}/_emulator/stats")).json()
        result["rps"] = result["requests"] / result["elapsed"]
        result["server_cpu_pct"] = 100 * (cpu1 - cpu0) / (wall1 - wall0)
        # CPU per request is robust to a busy machine; 1/that is what one saturated core could serve.
        result["cpu_us_per_request"] = 1e6 * (cpu1 - cpu0) / max(1, result["requests"])
        result["capacity_rps"] = 1e6 / max(1e-9, result["cpu_us_per_request"])
        result["connections"] = after["connections"] - before["connections"]
        result["server_counted"] = after["requests_total"] - before["requests_total"]
        return result
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()


def uvloop_installed() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


def run_client(coro: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run the client on uvloop when available: the client, not the emulator, is the usual bottleneck."""
    if uvloop_installed():
        import uvloop

        loop = uvloop.new_event_loop()
    else:
        loop = asyncio.new_event_loop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--concurrency", type=int, default=128)
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()

    loops = [False, True] if uvloop_installed() else [False]
    rows = []
    results = []
    for use_uvloop in loops:
        result = run_client(measure(use_uvloop, args.tasks, args.seconds, args.concurrency))
        results.append(result)
        name = "uvloop" if use_uvloop else "asyncio"
        print(
            f"{name}: {result['rps']:.0f} req/s, p50 {result['p50_ms']:.1f} ms, p99 {result['p99_ms']:.1f} ms, "
            f"emulator CPU {result['server_cpu_pct']:.0f}% ({result['cpu_us_per_request']:.0f} us/request, "
            f"~{result['capacity_rps']:.0f} req/s per core), errors {result['errors']}, "
            f"connections {result['connections']}",
            flush=True,
        )
        rows.append(
            [
                f"emulator on {name}" + (" (`--uvloop`)" if use_uvloop else " (default)"),
                f"**{result['rps']:,.0f}**",
                f"{result['p50_ms']:.1f}",
                f"{result['p99_ms']:.1f}",
                f"{result['server_cpu_pct']:.0f}%",
                f"{result['cpu_us_per_request']:.0f}",
                f"{result['capacity_rps']:,.0f}",
                f"{result['requests']:,}",
                result["errors"],
                result["connections"],
            ]
        )
    best = max(r["rps"] for r in results)
    headers = [
        "server",
        "req/s",
        "p50 ms",
        "p99 ms",
        "emulator CPU",
        "CPU µs/request",
        "req/s per core (est.)",
        "requests",
        "errors",
        "TCP connections",
    ]
    body = (
        f"{args.tasks:,} tasks (both vendors, half finished, half pending) polled for {args.seconds:g} s per row "
        f"with {args.concurrency} concurrent keep-alive requests from one aiohttp client (on uvloop) on the same "
        "machine. Client and emulator share the 2 CPUs, so the client's own cost caps the measured rate; "
        f"target: at least {TARGET:,} status requests/s.\n\n"
        + table(headers, rows)
        + f"\nResult: {'meets' if best >= TARGET else 'MISSES'} the target ({best:,.0f} req/s at best). "
        "`emulator CPU` is the emulator process's CPU time over wall time (100% = one core); "
        "`req/s per core` is 1 / (CPU per request), what the emulator could serve with a core to itself, "
        "a figure that a busy machine disturbs less than the raw rate; "
        "`TCP connections` is the emulator's own count, equal to the client's pool size when keep-alive works.\n"
    )
    if not args.no_write:
        write_section(
            "emulator-throughput",
            "Emulator: status requests per second",
            ".venv/bin/python benchmarks/emulator_throughput.py",
            body,
        )
    return 0 if best >= TARGET else 1


if __name__ == "__main__":
    sys.exit(main())
