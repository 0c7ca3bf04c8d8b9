"""The trigger process of ``benchmarks/trigger_scale.py``: N triggers in one default asyncio event loop.

Started by the driver, one process per run, so CPU time and peak RSS belong to that run alone. It
does what a triggerer does with the triggers it picks up: builds the trigger objects and consumes
their ``run()`` async generators concurrently, recording when each event arrives and what it says.

Protocol: the process's original stdout carries one JSON object per line to the driver; file
descriptors 1 and 2 are pointed at a log file first, so the triggers' own log lines (Airflow's
logging, as configured in the triggerer) go there instead. The driver sends one JSON line on stdin
naming the task file once the emulator tasks exist.

    ready   {"event": "ready", "baseline_rss": bytes}      imports done, nothing created yet
    started {"event": "started", "time": t, ...}          every trigger created and scheduled
    done    {"event": "done", "received": [...], ...}     every run() finished (or timed out)
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def protocol_channel(log_file: str) -> Any:
    """Keep the real stdout for the driver; send everything else written to fd 1/2 to ``log_file``."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)
    return channel


def get_ready(conn_id: str, log_file: str, nofile: int) -> Callable[..., None]:
    """Set up a trigger process as a triggerer would be once its first trigger ran; say ``ready``.

    Shared with ``batch_trigger_scale_worker.py`` so both kinds of trigger process start from the
    same baseline (the RSS in ``ready`` includes Airflow, aiohttp and one resolved connection).
    Returns the function that sends one protocol message to the driver.
    """
    if nofile:  # also set by the driver's preexec_fn; the soft limit, up to the hard one
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        soft = nofile if hard == resource.RLIM_INFINITY else min(nofile, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    channel = protocol_channel(log_file)

    def send(**payload: Any) -> None:
        channel.write(json.dumps(payload) + "\n")
        channel.flush()

    # Everything a triggerer has loaded once its first trigger ran, so the baseline includes it.
    import aiohttp  # noqa: F401
    import psutil

    from airflow_provider_tts.hooks.tts import TtsHook

    async def warm_up() -> None:
        hook = TtsHook(tts_conn_id=conn_id)
        await hook.avendor()  # resolves the connection: secrets backends, vendor module, masker

    asyncio.run(warm_up())
    gc.collect()
    send(event="ready", baseline_rss=psutil.Process().memory_info().rss)
    return send


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--strategy", required=True)
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--nofile", type=int, default=0)
    args = parser.parse_args()
    send = get_ready(args.conn_id, args.log_file, args.nofile)
    from benchmarks.trigger_scale_variants import STRATEGIES

    trigger_class = STRATEGIES[args.strategy]
    command = json.loads(sys.stdin.readline())
    tasks: list[list[Any]] = json.loads(Path(command["task_file"]).read_text())
    run_timeout = float(command["run_timeout"])
    profile_to = os.environ.get("TTS_TRIGGER_PROFILE")  # where to dump a cProfile of the run, if set
    if not profile_to:
        asyncio.run(run(trigger_class, tasks, args, run_timeout, send))
        return 0
    import cProfile

    with cProfile.Profile() as profile:
        asyncio.run(run(trigger_class, tasks, args, run_timeout, send))
    profile.dump_stats(profile_to)
    return 0


class Probe:
    """What one run costs its process: CPU and wall time, peak RSS, GC passes and time, event-loop lag.

    Created just before the triggers, so the figures are the run's and not the imports'; shared
    with ``batch_trigger_scale_worker.py`` so per-item and batch runs are measured alike.
    """

    def __init__(self) -> None:
        import psutil

        self.gc_before = [s["collections"] for s in gc.get_stats()]
        self.gc_time = [0.0, 0.0]  # seconds spent in the cyclic garbage collector; start of the current pass
        gc.callbacks.append(self._on_gc)
        self.baseline_rss = psutil.Process().memory_info().rss
        self.lags: list[float] = []
        self.cpu0 = time.process_time()
        self.wall0 = time.time()
        self._watcher = asyncio.create_task(self._watch_loop())

    def _on_gc(self, phase: str, _info: dict[str, Any]) -> None:
        if phase == "start":
            self.gc_time[1] = time.process_time()
        else:
            self.gc_time[0] += time.process_time() - self.gc_time[1]

    async def _watch_loop(self) -> None:
        """How late a 100 ms timer fires: the event loop's responsiveness (GC pauses included)."""
        while True:
            before = time.perf_counter()
            await asyncio.sleep(0.1)
            self.lags.append(time.perf_counter() - before - 0.1)

    def figures(self) -> dict[str, Any]:
        """The run's figures so far, as the ``done`` message carries them; stops the lag watcher."""
        import psutil

        cpu1, wall1 = time.process_time(), time.time()
        self._watcher.cancel()
        lags = sorted(self.lags)
        gc_after = [s["collections"] for s in gc.get_stats()]
        return {
            "cpu_seconds": cpu1 - self.cpu0,
            "wall_seconds": wall1 - self.wall0,
            "baseline_rss": self.baseline_rss,
            "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
            "end_rss": psutil.Process().memory_info().rss,
            "gc_collections": [a - b for a, b in zip(gc_after, self.gc_before, strict=True)],
            "gc_seconds": self.gc_time[0],
            "loop_lag_p99": lags[int(0.99 * (len(lags) - 1))] if lags else None,
            "loop_lag_max": lags[-1] if lags else None,
        }


async def run(trigger_class: Any, tasks: list[list[Any]], args: Any, run_timeout: float, send: Any) -> None:
    n = len(tasks)
    received: list[float | None] = [None] * n
    events = [0] * n
    wrong: list[str] = []
    errors: list[str] = []
    probe = Probe()

    async def consume(i: int, trigger: Any) -> None:
        task_id = tasks[i][0]
        offset = tasks[i][3] if len(tasks[i]) > 3 else 0.0
        try:
            if offset:  # a wait deferred later than the first: its trigger starts running then
                await asyncio.sleep(offset)
            async for event in trigger.run():
                now = time.time()
                events[i] += 1
                if events[i] == 1:
                    received[i] = now
                payload = event.payload
                state = (payload.get("task_status") or {}).get("state") if isinstance(payload, dict) else None
                if (
                    not isinstance(payload, dict)
                    or payload.get("status") != "success"
                    or payload.get("tts_task_id") != task_id
                    or state != "succeeded"
                ):
                    wrong.append(f"{task_id}: {payload!r:.300}")
                if events[i] > 1:
                    wrong.append(f"{task_id}: more than one event")
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors.append(f"{task_id}: {type(exc).__name__}: {exc}"[:300])

    # As the triggerer does: build the trigger objects, then run each in its own asyncio task.
    triggers = [
        trigger_class(tts_conn_id=args.conn_id, tts_task_id=task_id, poll_interval=args.poll_interval)
        for task_id, *_ in tasks
    ]
    running = [asyncio.create_task(consume(i, trigger)) for i, trigger in enumerate(triggers)]
    del triggers
    send(event="started", time=time.time(), create_seconds=time.time() - probe.wall0, baseline_rss=probe.baseline_rss)
    _done, pending = await asyncio.wait(running, timeout=run_timeout)
    for task in pending:
        task.cancel()
    if pending:
        await asyncio.wait(pending, timeout=30)
    send(
        event="done",
        received=received,
        events=sum(events),
        missing=sum(1 for e in events if e == 0),
        timed_out=len(pending),
        wrong=wrong[:20],
        wrong_count=len(wrong),
        errors=errors[:20],
        error_count=len(errors),
        **probe.figures(),
    )


if __name__ == "__main__":
    sys.exit(main())
