"""Start, drive and read one trigger process of the triggerer benchmarks, whatever triggers it runs.

Split from ``_trigger_scale_runs.py`` (the emulator, sampling, the poke-mode sensor) so that
``trigger_scale.py`` (N ``TtsTaskTrigger``s) and ``batch_trigger_scale.py`` (one ``TtsBatchTrigger``,
and N ``TtsTaskTrigger``s to compare) create tasks, start, kill and measure their processes with the
same code: :func:`drive` does it for any trigger process speaking the workers' JSON-lines protocol.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from benchmarks._trigger_scale_runs import (
    ASYNC_CHILDREN,
    CONN_ID,
    ROOT,
    Emulator,
    RunResult,
    Sample,
    create_tasks,
    emulator_stats,
    log,
    nofile_limit,
    percentile,
    raise_nofile,
    sample,
    steady_state,
    worker_env,
)


class Worker:
    """One trigger process: JSON lines on its stdout, commands on its stdin."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    async def read(self, expected: str, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = await asyncio.wait_for(self.proc.stdout.readline(), timeout)
        if not line:
            raise RuntimeError(f"the trigger process exited before '{expected}' (code {await self.proc.wait()})")
        message: dict[str, Any] = json.loads(line)
        if message.get("event") != expected:
            raise RuntimeError(f"expected '{expected}' from the trigger process, got {message!r:.200}")
        return message

    def send(self, payload: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(payload) + "\n").encode())

    async def end(self) -> None:
        """SIGKILL the process if it still runs (by its pid), and reap it."""
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.kill()
            await self.proc.wait()


async def start_worker(cmd: list[str], env: dict[str, str]) -> Worker:
    """Start a trigger process (recorded, so :func:`stop_all` ends it if the driver is interrupted)."""
    proc = await asyncio.create_subprocess_exec(
        *cmd,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        env=env,
        preexec_fn=raise_nofile,
        limit=64 << 20,  # the "done" message of 10,000 waits is one long line
    )
    ASYNC_CHILDREN.append(proc)
    return Worker(proc)


@dataclass
class Drive:
    """What one driven trigger process reported, and what the emulator counted around its run.

    With a restart, ``first`` is the process that was killed, and ``ready``/``started``/``done`` and
    the samples belong to the one started after it.
    """

    tasks: list[list[Any]]
    ready: dict[str, Any]
    started: dict[str, Any]
    done: dict[str, Any]
    before: dict[str, Any]
    after: dict[str, Any]
    samples: list[Sample]
    notes: list[str]
    first: dict[str, Any] | None = None  # the killed process: {"started", "killed", "spawned"} wall times


async def drive(
    emulator: Emulator,
    n: int,
    cmd: list[str],
    command: Callable[[list[list[Any]], float], dict[str, Any]],
    *,
    args: argparse.Namespace,
    workdir: Path,
    lead: dict[str, float],
    rng: random.Random,
    label: str,
    spread: float = 0.0,
    restart_after: float | None = None,
) -> Drive:
    """Run one trigger process over N fresh emulator tasks, from its start to its ``done`` message.

    Shared by every kind of trigger process: ``cmd`` starts it and ``command(tasks, run_timeout)``
    is what it is told once the tasks exist (written files included). With ``restart_after``, the
    process is SIGKILLed that many seconds after its triggers started and a fresh one is started at
    once with the same command, as a triggerer that died is replaced and re-creates the triggers
    from their rows.
    """
    url = emulator.url
    interval = float(args.poll_interval)
    notes: list[str] = []
    first = None
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=64)) as control:
        async with control.post(f"{url}/_emulator/reset") as resp:
            resp.raise_for_status()
        env = worker_env(emulator, workdir)
        worker = await start_worker(cmd, env)
        try:
            # The tasks are created while the trigger process imports Airflow. Each completes
            # task_seconds after the planned start of the triggers plus a random phase within one
            # poll interval, so completions are spread over the poll schedule like real ones.
            began = time.time()
            plan_start = began + max(lead["ready"], n / lead["rate"]) + 1.5
            # With a spread, trigger i starts polling i/N of the spread later, and its task is due that
            # much later too: waits deferred at different times, out of step with each other.
            offsets = [spread * i / n for i in range(n)]
            completions = [plan_start + o + args.task_seconds + rng.uniform(0, interval) for o in offsets]
            tasks = await create_tasks(control, url, completions)
            for row, offset in zip(tasks, offsets, strict=True):
                row.append(offset)
            lead["rate"] = max(200.0, 0.8 * n / (time.time() - began))
            ready = await worker.read("ready", timeout=120)
            lead["ready"] = max(lead["ready"] * 0.5, time.time() - began)
            await asyncio.sleep(max(0.0, plan_start - time.time()))
            if time.time() > plan_start + 1:
                notes.append(f"triggers started {time.time() - plan_start:.1f} s after plan")
            before = await emulator_stats(control, url)
            last_completion = float(max(row[1] for row in tasks))

            def timeout() -> float:
                return last_completion - time.time() + 4 * interval + 60

            worker.send(command(tasks, timeout()))
            started = await worker.read("started", timeout=120)
            if restart_after is not None:
                await asyncio.sleep(max(0.0, started["time"] + restart_after - time.time()))
                killed = time.time()
                await worker.end()  # SIGKILL: no on_kill, no cleanup, as when a triggerer host dies
                spawned = time.time()
                worker = await start_worker(cmd, env)
                first = {"started": started["time"], "killed": killed, "spawned": spawned}
                ready = await worker.read("ready", timeout=120)
                worker.send(command(tasks, timeout()))
                started = await worker.read("started", timeout=120)
            log(
                f"  {n:,} {label} created in {started['create_seconds']:.2f} s; baseline RSS "
                f"{ready['baseline_rss'] / 2**20:.0f} MB; tasks finish in "
                f"{min(row[1] for row in tasks) - time.time():.0f}-{last_completion - time.time():.0f} s"
            )
            samples: list[Sample] = []
            assert emulator.proc is not None
            ps_worker, ps_emulator = psutil.Process(worker.proc.pid), psutil.Process(emulator.proc.pid)
            sampler = asyncio.create_task(sample(control, url, ps_worker, ps_emulator, samples))
            try:
                done = await worker.read("done", timeout=timeout() + 120)
            finally:
                sampler.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await sampler
            after = await emulator_stats(control, url)
            await asyncio.wait_for(worker.proc.wait(), 30)
        finally:
            await worker.end()
    return Drive(tasks, ready, started, done, before, after, samples, notes, first)


async def run_one(
    emulator: Emulator,
    n: int,
    strategy: str,
    spread: float,
    args: argparse.Namespace,
    workdir: Path,
    lead: dict[str, float],
) -> RunResult:
    result = RunResult(n=n, strategy=strategy, spread=spread)
    interval = float(args.poll_interval)
    log_file = workdir / f"triggers-{n}-{strategy}-{spread:g}.log"
    log_file.unlink(missing_ok=True)
    task_file = workdir / f"tasks-{n}-{strategy}-{spread:g}.json"
    d = await drive(
        emulator,
        n,
        task_worker_cmd(strategy, interval, log_file),
        lambda tasks, run_timeout: task_command(task_file, tasks, run_timeout),
        args=args,
        workdir=workdir,
        lead=lead,
        rng=random.Random(n * 7919 + len(strategy)),
        label=f"triggers ({strategy})",
        spread=spread,
    )
    tasks, done, before, after = d.tasks, d.done, d.before, d.after
    result.notes += d.notes
    result.polls, result.bad_responses = request_counts(before, after)
    result.connections = after["connections"] - before["connections"]
    result.cpu_seconds = done["cpu_seconds"]
    result.wall_seconds = done["wall_seconds"]
    result.baseline_rss = done["baseline_rss"]
    result.peak_rss = done["peak_rss"]
    result.events = done["events"]
    result.missing = done["missing"]
    result.wrong = done["wrong_count"]
    result.error_events = done["error_count"]
    result.gc_collections = done["gc_collections"]
    result.gc_seconds = done["gc_seconds"]
    result.lag_p99 = done["loop_lag_p99"] if done["loop_lag_p99"] is not None else float("nan")
    result.lag_max = done["loop_lag_max"] if done["loop_lag_max"] is not None else float("nan")
    for message in done["wrong"][:3] + done["errors"][:3]:
        result.notes.append(message)
    lateness = []
    for (_task_id, completion, earliest, _offset), got in zip(tasks, done["received"], strict=True):
        if got is None:
            continue
        if got < earliest - 0.001:
            result.early += 1
        lateness.append(got - completion)
    result.late_p50 = percentile(lateness, 50)
    result.late_p99 = percentile(lateness, 99)
    result.late_max = max(lateness) if lateness else float("nan")
    if result.missing == 0 and tasks:
        result.last_late = max(r for r in done["received"] if r is not None) - max(row[1] for row in tasks)
    result.log_warnings, kinds = log_warnings(log_file)
    result.notes += kinds
    samples = d.samples
    steady_state(result, samples, d.started["time"], min(row[1] for row in tasks), interval, before["polls_total"])
    if len(samples) >= 2:
        result.other_cores = (samples[-1].others - samples[0].others) / (samples[-1].t - samples[0].t)
    return result


def task_worker_cmd(strategy: str, interval: float, log_file: Path) -> list[str]:
    """The command line of a ``trigger_scale_worker.py`` process: one ``TtsTaskTrigger`` (variant) per task."""
    return [
        sys.executable,
        str(ROOT / "benchmarks" / "trigger_scale_worker.py"),
        "--strategy",
        strategy,
        "--conn-id",
        CONN_ID,
        "--poll-interval",
        str(interval),
        "--log-file",
        str(log_file),
        "--nofile",
        str(nofile_limit()),
    ]


def task_command(task_file: Path, tasks: list[list[Any]], run_timeout: float) -> dict[str, Any]:
    """What a ``trigger_scale_worker.py`` process is told: the tasks (in a file: 10,000 rows) and how long to run."""
    task_file.write_text(json.dumps(tasks))
    return {"task_file": str(task_file), "run_timeout": run_timeout}


def request_counts(before: dict[str, Any], after: dict[str, Any]) -> tuple[int, int]:
    """(status requests, non-200 responses) the emulator counted between two stats snapshots."""
    statuses = {
        k: after["requests_by_status"].get(k, 0) - before["requests_by_status"].get(k, 0)
        for k in after["requests_by_status"]
    }
    return after["polls_total"] - before["polls_total"], sum(v for k, v in statuses.items() if k != "200")


def log_warnings(log_file: Path) -> tuple[int, list[str]]:
    """Warning and error lines a trigger process logged, and the two commonest kinds (ids masked)."""
    text = log_file.read_text(errors="replace") if log_file.exists() else ""
    warnings = re.findall(r"\[(?:warning|error|critical)\s*\]\s*(.*)", text)
    if not warnings:
        return 0, []
    # What went wrong, once per kind: task ids masked so that repeats of one message count together.
    masked = (re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}", "<id>", w) for w in warnings)
    kinds = Counter(re.sub(r"\b(Poll|retry) \d+", r"\1 <n>", w)[:160] for w in masked)
    return len(warnings), [f"{count:,} log lines like: {kind}" for kind, count in kinds.most_common(2)]
