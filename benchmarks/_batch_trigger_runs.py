"""The runs of ``batch_trigger_scale.py``: one ``TtsBatchTrigger`` against N ``TtsTaskTrigger``s, and their restarts.

Every run goes through :func:`benchmarks._trigger_scale_drive.drive`, the code that drives the
triggerer-scale benchmark, so task creation, timing, process start, kill and measurement are the
same for both forms; only the trigger process differs (``batch_trigger_scale_worker.py`` or
``trigger_scale_worker.py``) and what is read from its ``done`` message.
"""

from __future__ import annotations

import argparse
import functools
import random
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from benchmarks._trigger_scale_drive import (
    Drive,
    drive,
    log_warnings,
    request_counts,
    task_command,
    task_worker_cmd,
)
from benchmarks._trigger_scale_runs import CONN_ID, ROOT, Emulator, nofile_limit, percentile

#: How the report names the two forms.
FORMS = {"batch": "one `TtsBatchTrigger`", "per-item": "N `TtsTaskTrigger`s (shared pool)"}


@dataclass
class Row:
    """One run's figures, per form; the resume fields only for a run whose first process was killed."""

    n: int
    form: str
    cpu_seconds: float = 0.0
    polls: int = 0
    baseline_rss: int = 0
    peak_rss: int = 0
    gc_seconds: float = 0.0
    late: float = float("nan")  # the event (per-item: the last event) minus the last task's completion
    late_p99: float = float("nan")  # per-item only: each event minus its own task's completion
    errors: int = 0
    wrong: int = 0
    lost: int = 0
    twice: int = 0
    unconfirmed: int = 0  # items counted as ended that no status request after their completion asked about
    other_cores: float = float("nan")
    event: str = ""
    killed_after: float = float("nan")  # seconds the killed process had run its trigger(s)
    to_first_request: float = float("nan")  # new process started -> first status request answered
    created_to_first_request: float = float("nan")  # trigger(s) built -> first status request answered
    to_all_polled: float = float("nan")  # new process started -> every item asked about once
    to_event: float = float("nan")  # new process started -> the (last) event
    notes: list[str] = field(default_factory=list)

    @property
    def cpu_ms_per_item(self) -> float:
        return 1000 * self.cpu_seconds / self.n

    @property
    def cpu_ms_per_request(self) -> float:
        return 1000 * self.cpu_seconds / self.polls if self.polls else float("nan")

    @property
    def requests_per_item(self) -> float:
        return self.polls / self.n

    @property
    def rss_kb_per_item(self) -> float:
        return (self.peak_rss - self.baseline_rss) / 1024 / self.n


async def measure(
    emulator: Emulator, n: int, form: str, args: argparse.Namespace, lead: dict[str, float], resume: bool
) -> Row:
    """One run of ``form`` over N fresh tasks; with ``resume``, its process is killed mid-wait and replaced."""
    tag = f"{form}-{n}{'-resume' if resume else ''}"
    log_file = Path(args.workdir) / f"triggers-{tag}.log"
    log_file.unlink(missing_ok=True)
    command: Callable[[list[list[Any]], float], dict[str, Any]]
    if form == "batch":
        cmd = batch_worker_cmd(log_file)
        command = BatchCommand(Path(args.workdir) / f"record-{tag}", args.poll_interval)
    else:
        cmd = task_worker_cmd("shared", args.poll_interval, log_file)
        command = functools.partial(task_command, Path(args.workdir) / f"tasks-{tag}.json")
    d = await drive(
        emulator,
        n,
        cmd,
        command,
        args=args,
        workdir=Path(args.workdir),
        lead=lead,
        rng=random.Random(n * 7919 + len(tag)),
        label=FORMS[form] + (" (restarted)" if resume else ""),
        restart_after=args.kill_after if resume else None,
    )
    row = Row(n=n, form=form, notes=list(d.notes))
    done = d.done
    row.polls, bad = request_counts(d.before, d.after)
    row.cpu_seconds, row.baseline_rss, row.peak_rss = done["cpu_seconds"], done["baseline_rss"], done["peak_rss"]
    row.gc_seconds = done["gc_seconds"]
    warnings, kinds = log_warnings(log_file)
    row.notes += kinds
    row.errors = bad + warnings
    last_completion = max(r[1] for r in d.tasks)
    if form == "batch":
        read_batch_done(row, done, d)
    else:
        row.lost, row.wrong = done["missing"], done["wrong_count"]
        row.twice = sum(1 for w in done["wrong"] if w.endswith("more than one event"))
        row.errors += done["error_count"]
        row.notes += done["wrong"][:3] + done["errors"][:3]
        got = [t for t in done["received"] if t is not None]
        if got and not row.lost:
            row.late = max(got) - last_completion
            row.late_p99 = percentile([t - r[1] for t, r in zip(done["received"], d.tasks, strict=True) if t], 99)
        row.event = f"{done['events']:,} events"
    if len(d.samples) >= 2:
        row.other_cores = (d.samples[-1].others - d.samples[0].others) / (d.samples[-1].t - d.samples[0].t)
    await read_request_log(row, d, emulator.url, form, args.confirm)
    return row


def read_batch_done(row: Row, done: dict[str, Any], d: Drive) -> None:
    """The batch trigger's one event: right counts, nothing lost, nothing reported twice, not early."""
    events, received = done["events"], done["received"]
    row.errors += len(done["errors"]) + int(done["timed_out"])
    row.notes += done["errors"][:3]
    if not events:
        row.lost, row.event = row.n, "no event"
        return
    event = events[0]
    ended = sum(int(event.get(k) or 0) for k in ("succeeded", "failed", "errors"))
    row.lost = max(row.n - ended, 0) + int(event.get("pending") or 0)
    row.twice = max(ended - row.n, 0) + (len(events) - 1) * row.n
    row.wrong = int(event.get("status") != "done" or event.get("succeeded") != row.n)
    row.wrong += int(received[0] < max(r[2] for r in d.tasks) - 0.001)  # before the last task could have ended
    row.late = received[0] - max(r[1] for r in d.tasks)
    row.event = ", ".join(f"{k} {v}" for k, v in event.items() if k in ("status", "succeeded", "failed", "errors"))
    if row.wrong:
        row.notes.append(f"event {event!r:.300}")


async def read_request_log(row: Row, d: Drive, url: str, form: str, confirm: bool) -> None:
    """From the emulator's request log: when the restarted process first asked, and what was never confirmed.

    *Unconfirmed* items are those the trigger counted as ended with no status request after their
    completion: a count not backed by an answer would be a bug (for the per-item form the event
    itself says which task it is about, so it is checked for the batch form only).
    """
    if d.first is None and not (confirm and form == "batch"):
        return
    async with aiohttp.ClientSession() as control, control.get(f"{url}/_emulator/requests") as resp:
        resp.raise_for_status()
        entries: list[dict[str, Any]] = await resp.json()
    status = [(e["time"], e["path"].split("?")[0].rsplit("/", 1)[-1]) for e in entries if e["endpoint"] == "status"]
    if len(status) < row.polls:
        row.notes.append(f"the request log held {len(status):,} of {row.polls:,} status requests")
    if confirm and form == "batch":
        last_asked: dict[str, float] = {}
        for t, task_id in status:
            last_asked[task_id] = max(t, last_asked.get(task_id, 0.0))
        row.unconfirmed = sum(1 for task_id, _c, earliest, *_ in d.tasks if last_asked.get(task_id, 0.0) < earliest)
    if d.first is None:
        return
    spawned = d.first["spawned"]
    row.killed_after = d.first["killed"] - d.first["started"]
    after = [(t, task_id) for t, task_id in status if t >= spawned]
    if after:
        row.to_first_request = after[0][0] - spawned
        row.created_to_first_request = after[0][0] - d.started["time"]
        first_ask: dict[str, float] = {}
        for t, task_id in after:
            first_ask.setdefault(task_id, t)
        if len(first_ask) >= row.n:
            row.to_all_polled = max(first_ask.values()) - spawned
    got = [t for t in d.done["received"] if t is not None]
    if got:
        row.to_event = max(got) - spawned


def batch_worker_cmd(log_file: Path) -> list[str]:
    """The command line of a ``batch_trigger_scale_worker.py`` process."""
    worker = ROOT / "benchmarks" / "batch_trigger_scale_worker.py"
    return [
        sys.executable,
        str(worker),
        "--conn-id",
        CONN_ID,
        "--log-file",
        str(log_file),
        "--nofile",
        str(nofile_limit()),
    ]


class BatchCommand:
    """What a batch trigger process is told: the trigger's serialized form, as its row holds it.

    The first call writes the batch record (the tasks in creation order, which the trigger polls
    oldest first) and builds the trigger as the batch operator does; a restarted process gets the
    very same classpath and kwargs, as Airflow re-creates a trigger from its row.
    """

    def __init__(self, folder: Path, poll_interval: float) -> None:
        self.folder = folder
        self.poll_interval = poll_interval
        self.serialized: tuple[str, dict[str, Any]] | None = None

    def __call__(self, tasks: list[list[Any]], run_timeout: float) -> dict[str, Any]:
        if self.serialized is None:
            self.serialized = self.build(tasks)
        classpath, kwargs = self.serialized
        return {"classpath": classpath, "kwargs": kwargs, "run_timeout": run_timeout}

    def build(self, tasks: list[list[Any]]) -> tuple[str, dict[str, Any]]:
        from airflow_provider_tts.batch.operator import MAX_ACTIVE_REQUESTS
        from airflow_provider_tts.batch.record import BatchRecord
        from airflow_provider_tts.batch.trigger import TtsBatchTrigger

        now = time.time()
        record = BatchRecord.at(self.folder.as_uri(), None)
        waits = {f"item-{i:05d}": (row[0], now - (len(tasks) - i) * 1e-4) for i, row in enumerate(tasks)}
        record.save(waits, "benchmark", {})
        trigger = TtsBatchTrigger(
            tts_conn_id=CONN_ID,
            kind="tts",
            record_uri=record.where,
            deadline=now + 6 * 3600,  # the batch operator's default timeout
            started_at=now,
            concurrency=MAX_ACTIVE_REQUESTS,
            poll_interval=self.poll_interval,
        )
        return trigger.serialize()
