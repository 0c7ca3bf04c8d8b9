"""The runs of ``trigger_scale.py``: the emulator process, one trigger process per run, the poke-mode sensor.

Everything that starts, drives and measures a process lives here; the report and the command
line stay in ``trigger_scale.py`` (split along that seam, no behaviour changed). Every process
started here is recorded so that :func:`stop_all` can end it by its pid.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

import aiohttp
import psutil

from benchmarks.trigger_scale_variants import LABELS

ROOT = Path(__file__).resolve().parent.parent
API_KEY = "tts-emulator-key"
CONN_ID = "trigger_scale_bench"
#: File descriptors for both processes: one session per trigger at 10,000 waits needs one socket each.
NOFILE = 65536

T = TypeVar("T")

_CHILDREN: list[subprocess.Popen[Any]] = []
#: Trigger and sensor processes (asyncio subprocesses); killed by pid on the way out if still running.
ASYNC_CHILDREN: list[asyncio.subprocess.Process] = []
#: Where the child processes import the provider from (``--src``).
SRC = [str(ROOT)]


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def raise_nofile() -> None:
    """``preexec_fn`` of every child: the ``ulimit -n`` of a triggerer that holds thousands of sockets.

    Raising the hard limit needs CAP_SYS_RESOURCE, which a container's root may lack; then the soft
    limit goes up to the hard one.
    """
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (NOFILE, NOFILE))
    except (ValueError, OSError):
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        limit = NOFILE if hard == resource.RLIM_INFINITY else min(NOFILE, hard)
        with contextlib.suppress(ValueError, OSError):
            resource.setrlimit(resource.RLIMIT_NOFILE, (limit, hard))


def nofile_limit() -> int:
    return resource.getrlimit(resource.RLIMIT_NOFILE)[0]


def spawn(cmd: list[str], **kwargs: Any) -> subprocess.Popen[Any]:
    proc = subprocess.Popen(cmd, preexec_fn=raise_nofile, **kwargs)
    _CHILDREN.append(proc)
    return proc


def stop(proc: subprocess.Popen[Any], sig: int = signal.SIGINT, timeout: float = 10) -> None:
    """End a child this script started (by its pid only), escalating to SIGKILL."""
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    if proc in _CHILDREN:
        _CHILDREN.remove(proc)


def stop_all() -> None:
    for child in ASYNC_CHILDREN:
        if child.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child.pid, signal.SIGKILL)
    for proc in list(_CHILDREN):
        stop(proc, signal.SIGTERM, timeout=5)


def run_driver(main: Coroutine[Any, Any, T], workdir: Path, keep_logs: bool) -> T | None:
    """Run a benchmark driver's event loop; None when interrupted.

    Whatever happens (Ctrl-C, SIGTERM, an exception), every process the driver started is ended by
    its pid on the way out and the work directory is removed unless ``keep_logs``: a benchmark left
    behind would go on loading the machine that other work shares.
    """
    raise_nofile()
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    signal.signal(signal.SIGINT, signal.default_int_handler)  # also when started in the background
    try:
        return asyncio.run(main)
    except KeyboardInterrupt:
        log("interrupted; ending every process this benchmark started")
        return None
    finally:
        stop_all()
        if not keep_logs:
            shutil.rmtree(workdir, ignore_errors=True)


def cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (q in 0..100)."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]


# ------------------------------------------------------------------------------------------ emulator


@dataclass
class Emulator:
    """The emulator as a separate process, started with its CLI on uvloop."""

    workdir: Path
    task_seconds: float
    proc: subprocess.Popen[Any] | None = None
    url: str = ""

    def start(self) -> None:
        out = self.workdir / "emulator.out"
        cmd = [
            sys.executable,
            "-m",
            "airflow_provider_tts.emulator",
            "--port",
            "0",
            "--uvloop",
            "--print-json",
            "--audio-engine",
            "tones",
            "--delay",
            str(self.task_seconds),
            "--api-key",
            API_KEY,
        ]
        env = dict(os.environ, PYTHONPATH=SRC[0])
        with out.open("w") as stdout, (self.workdir / "emulator.err").open("w") as stderr:
            self.proc = spawn(cmd, stdout=stdout, stderr=stderr, env=env)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = out.read_text().split("\n", 1)[0]
            if line.strip():
                self.url = json.loads(line)["url"]
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"the emulator did not start: {(self.workdir / 'emulator.err').read_text()[-2000:]}")

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    @property
    def camb_base_url(self) -> str:
        return f"{self.url}/apis"


async def emulator_stats(session: aiohttp.ClientSession, url: str) -> dict[str, Any]:
    async with session.get(f"{url}/_emulator/stats") as resp:
        resp.raise_for_status()
        data: dict[str, Any] = await resp.json()
    data.pop("polls_by_task", None)
    data.pop("storage_log", None)
    return data


async def create_tasks(
    session: aiohttp.ClientSession, url: str, completions: list[float], concurrency: int = 32
) -> list[list[Any]]:
    """Create one Camb.ai task per planned completion time; return [task_id, completion, earliest].

    The delay is computed when each request is sent, and the task is created by the server between
    sending and receiving, so its completion lies in [send + delay, receive + delay]; the midpoint
    is recorded as the completion time (error: half a loopback round trip) and the lower bound is
    kept to detect an event that arrived before its task can have finished.
    """
    out: list[list[Any]] = [[] for _ in completions]
    queue = iter(range(len(completions)))

    async def creator() -> None:
        for i in queue:
            sent = time.time()
            delay = max(0.0, completions[i] - sent)
            body = {"api": "camb_ai", "kind": "tts", "delay": delay, "text": "Benchmark task"}
            async with session.post(f"{url}/_emulator/tasks", json=body) as resp:
                resp.raise_for_status()
                task_id = (await resp.json())["task_id"]
            received = time.time()
            out[i] = [task_id, (sent + received) / 2 + delay, sent + delay]

    await asyncio.gather(*(creator() for _ in range(concurrency)))
    return out


# --------------------------------------------------------------------------------------------- runs


class Sample(NamedTuple):
    """One observation of a run, every half second."""

    t: float  # wall clock
    cpu: float  # trigger process CPU seconds
    emulator_cpu: float  # emulator process CPU seconds
    rss: int  # trigger process RSS
    polls: int  # status requests the emulator has counted
    others: float  # CPU seconds of every other process on the machine (other work disturbs wall-time figures)


@dataclass
class RunResult:
    n: int
    strategy: str
    spread: float = 0.0  # seconds over which the triggers' first polls are spread (0: all at once)
    polls: int = 0
    connections: int = 0
    cpu_seconds: float = 0.0
    wall_seconds: float = 0.0
    steady_cores: float = float("nan")
    steady_cpu_per_1k: float = float("nan")
    steady_polls_per_s: float = float("nan")
    steady_window: tuple[float, float] = (0.0, 0.0)
    emulator_cores: float = float("nan")
    baseline_rss: int = 0
    peak_rss: int = 0
    late_p50: float = float("nan")
    late_p99: float = float("nan")
    late_max: float = float("nan")
    last_late: float = float("nan")  # last event minus last completion: when the whole set was known to be done
    events: int = 0
    missing: int = 0
    wrong: int = 0
    early: int = 0
    error_events: int = 0
    bad_responses: int = 0
    log_warnings: int = 0
    gc_collections: list[int] = field(default_factory=list)
    gc_seconds: float = 0.0
    lag_p99: float = float("nan")
    lag_max: float = float("nan")
    other_cores: float = float("nan")
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return LABELS[self.strategy] + (f", starts spread over {self.spread:g} s" if self.spread else "")

    @property
    def cpu_per_1k(self) -> float:
        return 1000 * self.cpu_seconds / self.polls if self.polls else float("nan")

    @property
    def rss_per_wait(self) -> float:
        return (self.peak_rss - self.baseline_rss) / self.n

    @property
    def errors(self) -> int:
        return self.missing + self.error_events + self.bad_responses + self.log_warnings

    @property
    def wrong_events(self) -> int:
        return self.wrong + self.early


def connection_json(emulator: Emulator) -> str:
    return json.dumps({"conn_type": "camb_ai", "host": emulator.camb_base_url, "password": API_KEY})


async def sample(
    control: aiohttp.ClientSession,
    url: str,
    worker: psutil.Process,
    emulator: psutil.Process,
    out: list[Sample],
) -> None:
    """Every half second, a :class:`Sample`; every five, a progress line."""
    last_print = 0.0
    me = psutil.Process()
    while True:
        try:
            stats = await emulator_stats(control, url)
            now = time.time()
            busy = machine_busy_seconds()
            cpu, emulator_cpu = cpu_seconds(worker), cpu_seconds(emulator)
            row = Sample(
                now, cpu, emulator_cpu, worker.memory_info().rss, stats["polls_total"],
                busy - cpu - emulator_cpu - cpu_seconds(me),
            )  # fmt: skip
        except (psutil.Error, aiohttp.ClientError):
            return
        if out and now - last_print >= 5:
            prev = out[max(0, len(out) - 10)]
            dt = now - prev.t
            log(
                f"    {row.polls:>7,} polls | trigger process {(row.cpu - prev.cpu) / dt:4.2f} cores, "
                f"{row.rss / 2**20:4.0f} MB | emulator {(row.emulator_cpu - prev.emulator_cpu) / dt:4.2f} cores | "
                f"{(row.polls - prev.polls) / dt:6.0f} polls/s | "
                f"other processes {(row.others - prev.others) / dt:4.2f} cores"
            )
            last_print = now
        out.append(row)
        await asyncio.sleep(0.5)


def machine_busy_seconds() -> float:
    """CPU seconds every CPU of the machine has spent not idle, since boot."""
    times = psutil.cpu_times()
    return float(sum(times) - times.idle - getattr(times, "iowait", 0.0))


def steady_state(
    result: RunResult,
    samples: list[Sample],
    started: float,
    first: float,
    interval: float,
    polls_before: int,
) -> None:
    """CPU while every trigger polls and none has finished, over whole rounds of polls.

    Triggers created together poll in rounds (every wait once per interval), and the rounds stay
    bunched, so a window cut at arbitrary times would hold a fraction of a round more or less than
    it should. The window therefore runs from the sample at which the emulator had counted N polls
    (every trigger resolved its connection and polled once) to the sample at which it had counted
    (k + 1) x N, for the largest k whose round completed before the first task could finish. When
    no whole round fits (the process cannot keep up), only the CPU in cores is reported, over the
    time from the first round (or the start) until the first task could finish.
    """
    last = first - 0.5
    n = result.n
    inside = [s for s in samples if s.t <= last]
    if len(inside) < 2:
        result.notes.append("no steady-state window: tasks too short")
        return
    opened = next((s for s in inside if s.polls - polls_before >= n), None)
    rounds = max((s.polls - polls_before) // n for s in inside)
    closed = next(s for s in inside if (s.polls - polls_before) // n >= rounds) if rounds >= 2 else None
    exact = opened is not None and closed is not None
    if opened is None or closed is None:
        opened = opened if opened is not None and opened.t < inside[-1].t else inside[0]
        closed = inside[-1]
        result.notes.append(
            "no whole round of polls completed between the first round and the first task's completion (the "
            "process could not keep up, or the tasks are too short), so only its CPU in cores "
            f"({closed.t - opened.t:.0f} s window) is shown"
        )
    dt = closed.t - opened.t
    result.steady_window = (opened.t - started, closed.t - started)
    result.steady_cores = (closed.cpu - opened.cpu) / dt
    result.emulator_cores = (closed.emulator_cpu - opened.emulator_cpu) / dt
    result.steady_polls_per_s = (closed.polls - opened.polls) / dt
    if exact:
        result.steady_cpu_per_1k = 1000 * (closed.cpu - opened.cpu) / (closed.polls - opened.polls)


# ------------------------------------------------------------------------------------------- poke


def worker_env(emulator: Emulator, workdir: Path) -> dict[str, str]:
    """The environment of a measured subprocess: its own Airflow home and the emulator's connection."""
    return dict(
        os.environ,
        AIRFLOW_HOME=str(workdir / "airflow-home"),
        PYTHONPATH=SRC[0],
        **{f"AIRFLOW_CONN_{CONN_ID.upper()}": connection_json(emulator)},
    )


async def measure_poke(emulator: Emulator, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    """One poke-mode sensor task process: its RSS while it waits, and its CPU per poll."""
    env = worker_env(emulator, workdir)
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks" / "trigger_scale_poke.py"),
        "--conn-id",
        CONN_ID,
        "--poll-interval",
        str(args.poll_interval),
        "--log-file",
        str(workdir / "poke.log"),
    ]
    proc = await asyncio.create_subprocess_exec(
        *cmd, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env, preexec_fn=raise_nofile
    )
    ASYNC_CHILDREN.append(proc)
    assert proc.stdout is not None
    assert proc.stdin is not None
    rss: list[int] = []
    uss: list[int] = []
    try:
        async with aiohttp.ClientSession() as control:
            async with control.post(f"{emulator.url}/_emulator/reset") as resp:
                resp.raise_for_status()
            if not await asyncio.wait_for(proc.stdout.readline(), 120):
                raise RuntimeError("the poke-mode sensor process exited early")
            # The process has imported everything; now give it a task pending for poke_seconds.
            body = {"api": "camb_ai", "kind": "tts", "delay": args.poke_seconds, "text": "Benchmark task"}
            async with control.post(f"{emulator.url}/_emulator/tasks", json=body) as resp:
                resp.raise_for_status()
                task_id = (await resp.json())["task_id"]
            before = await emulator_stats(control, emulator.url)
            proc.stdin.write(f"{task_id}\n".encode())
            ps = psutil.Process(proc.pid)
            reader = asyncio.create_task(proc.stdout.readline())
            while not reader.done():
                with contextlib.suppress(psutil.Error):
                    info = ps.memory_full_info()
                    rss.append(info.rss)
                    uss.append(info.uss)
                await asyncio.wait({reader}, timeout=0.2)
            done = json.loads(reader.result() or b"{}")
            after = await emulator_stats(control, emulator.url)
        await asyncio.wait_for(proc.wait(), 30)
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
    polls = after["polls_total"] - before["polls_total"]
    return {
        "peak_rss": max(rss) if rss else 0,
        "peak_uss": max(uss) if uss else 0,
        "state": done.get("state"),
        "polls": polls,
        "cpu_seconds": done.get("cpu_seconds", float("nan")),
    }
