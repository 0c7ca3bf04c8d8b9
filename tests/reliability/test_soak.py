"""Soak: many waits through 30 % injected transient faults, each ending exactly as its task does.

Every wait is a :class:`TtsTaskTrigger` re-created from its own ``serialize()`` kwargs (as the
triggerer re-creates it from the trigger row) and driven in one event loop, the way the triggerer
runs them. The emulator runs in its own process and answers 30 % of status requests with a fault,
drawn uniformly from every transient kind: 429 with a ``Retry-After`` in seconds, as an HTTP date
and without one; 500, 502, 503, 504; an nginx HTML page (502) and an HTML maintenance page (200);
a body cut off mid-response; a TCP reset; a response slower than the client's read timeout; and
truncated JSON. Tasks are spread over all four (vendor, kind) pairs with every outcome, so each
wrong answer is observable: a task that succeeds must end in ``success`` (no false failure, no
``error``), one that fails in ``failed`` with the vendor's status (no false success), one that
never finishes in ``timeout`` at its deadline.

Size: ``TTS_SOAK_WAITS`` waits, ``TTS_SOAK_CONCURRENCY`` of them at a time. The default, what CI
runs, is 1,000 waits (about 20 s on 2 cores); the full form, ``make soak``, is
``TTS_SOAK_WAITS=10000 .venv/bin/pytest tests/reliability/test_soak.py -q -s`` (about 2.5 min).
``TTS_SOAK_REPORT=path.json`` also writes the figures there; they are always written to
``soak.json`` in the test's tmp dir and printed.

The request bound. The emulator counts every status request naming a task. A wait of ``T``
seconds polls at most ``floor(T / poll_interval) + 1`` times (it sleeps a full interval between
polls); each poll makes at most ``max_retries + 1`` attempts; each attempt reaches the server at
most twice (aiohttp resends an idempotent request once when a reused keep-alive connection turns
out dead). So no wait may exceed ``(floor(T / p) + 1) * (max_retries + 1) * 2`` requests; a poll
loop without a sleep would exceed it by orders of magnitude.
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import random
import statistics
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from airflow_provider_tts.emulator.config import TRANSIENT_FAULT_KINDS
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.reliability.conftest import CliEmulator, define_conn, drive

WAITS = int(os.environ.get("TTS_SOAK_WAITS", "1000"))
CONCURRENCY = int(os.environ.get("TTS_SOAK_CONCURRENCY", "100"))
SEED = int(os.environ.get("TTS_SOAK_SEED", "20261121"))
FAULT_RATE = 0.3

POLL = 0.2  # seconds between polls
READ_TIMEOUT = 0.4  # the client's; the "slow" fault answers after SLOW_SECONDS, so it always bites
SLOW_SECONDS = 1.0
RETRY_AFTER = "0.3"  # the 429 fault's Retry-After; 429_http_date says about 2 s, capped by MAX_BACKOFF
MAX_RETRIES = 5
BACKOFF = 0.05
MAX_BACKOFF = 1.0
MAX_CONSECUTIVE_ERRORS = 5
NOT_FOUND_GRACE = 1.5
NEVER_DEADLINE = 2.0  # seconds given to tasks that never finish: they must end in timeout
DEADLINE = 120.0  # seconds given to every other task: generous, so a timeout would be a false failure

#: Worst case of one poll: every attempt times out (slow) and every retry waits the longest backoff.
ONE_POLL_WORST = (MAX_RETRIES + 1) * READ_TIMEOUT + MAX_RETRIES * MAX_BACKOFF

PAIRS = [("camb_ai", "tts"), ("camb_ai", "text-to-sound"), ("revid_tts", "tts"), ("revid_tts", "srt-to-speech")]


@dataclass(frozen=True)
class Outcome:
    """What the emulator task does, and the one event that is right for it."""

    name: str  # label in the figures
    spec: dict[str, Any]
    expect: str  # success | failed | timeout
    vendor_status: str | None = None
    failure: str | None = None
    message: str | None = None


CAMB = [
    (45, Outcome("success", {"outcome": "success"}, "success", "SUCCESS")),
    (10, Outcome("undocumented-then-success", {"outcome": "unknown_status"}, "success", "SUCCESS")),
    (8, Outcome("error", {"outcome": "error", "reason": "INTERNAL_ERROR"}, "failed", "ERROR", "error",
                "INTERNAL_ERROR")),
    (7, Outcome("harmful", {"outcome": "error", "reason": "HARMFUL_CONTENT_DETECTED"}, "failed", "ERROR",
                "content_rejected", "HARMFUL_CONTENT_DETECTED")),
    (8, Outcome("timeout", {"outcome": "timeout"}, "failed", "TIMEOUT", "vendor_timeout")),
    (8, Outcome("payment", {"outcome": "payment_required"}, "failed", "PAYMENT_REQUIRED", "payment_required")),
    (7, Outcome("not-found", {"outcome": "not_found"}, "failed", "NOT_FOUND", "not_found")),
    (7, Outcome("never", {"outcome": "success", "delay": "inf"}, "timeout", "PENDING")),
]  # fmt: skip
REVID = [
    (45, Outcome("success", {"outcome": "success"}, "success", "completed")),
    (8, Outcome("undocumented-then-success", {"outcome": "unknown_status"}, "success", "completed")),
    (12, Outcome("late-visible", {"outcome": "late_visible", "not_found_for": 0.5}, "success", "completed")),
    (15, Outcome("failed", {"outcome": "failed", "reason": "engine crashed"}, "failed", "failed", "error",
                 "engine crashed")),
    (10, Outcome("not-found", {"outcome": "not_found"}, "failed", "not_found", "not_found")),
    (10, Outcome("never", {"outcome": "success", "delay": "inf"}, "timeout", "processing")),
]  # fmt: skip


@dataclass
class Wait:
    index: int
    api: str
    kind: str
    outcome: Outcome
    delay: float
    task_id: str = ""
    started: float = 0.0
    ended: float = 0.0
    deadline: float = 0.0
    events: list[dict[str, Any]] = field(default_factory=list)
    crash: str | None = None
    requests: int = 0


def plan(n: int, seed: int) -> list[Wait]:
    rng = random.Random(seed)
    waits = []
    for i in range(n):
        api, kind = PAIRS[i % len(PAIRS)]
        table = CAMB if api == "camb_ai" else REVID
        outcome = rng.choices([o for _, o in table], weights=[w for w, _ in table])[0]
        waits.append(Wait(i, api, kind, outcome, delay=round(rng.uniform(0.3, 1.5), 3)))
    return waits


def verdict(wait: Wait) -> str:
    """``correct`` or what went wrong: crash, lost, error, false_failure, false_success, wrong_detail."""
    if wait.crash is not None:
        return "crash"
    if len(wait.events) != 1:
        return "lost"
    event = wait.events[0]
    status, expect = event.get("status"), wait.outcome.expect
    if status == "error":
        return "error"
    if status != expect:
        return "false_success" if status == "success" else "false_failure"
    if status == "timeout" and event.get("task_status") is None:
        # Every poll before the deadline failed (rare at 30 % faults, not impossible): no status to carry.
        in_time = wait.deadline <= wait.ended <= wait.deadline + ONE_POLL_WORST + 1
        return "correct" if event.get("tts_task_id") == wait.task_id and in_time else "wrong_detail"
    ts = event.get("task_status") or {}
    if event.get("tts_task_id") != wait.task_id or ts.get("tts_task_id") != wait.task_id:
        return "wrong_detail"
    if ts.get("vendor_status") != wait.outcome.vendor_status or ts.get("kind") != wait.kind:
        return "wrong_detail"
    if status == "success" and not (ts.get("run_id") is not None or ts.get("audio_url")):
        return "wrong_detail"
    if status == "failed":
        if ts.get("failure") != wait.outcome.failure:
            return "wrong_detail"
        if wait.outcome.message and wait.outcome.message not in (ts.get("message") or ""):
            return "wrong_detail"
    if status == "timeout" and not wait.deadline <= wait.ended <= wait.deadline + ONE_POLL_WORST + 1:
        return "wrong_detail"
    return "correct"


def request_bound(wait: Wait) -> int:
    return (math.floor((wait.ended - wait.started) / POLL) + 1) * (MAX_RETRIES + 1) * 2


async def run_waits(emu: CliEmulator, conn_ids: dict[str, str], waits: list[Wait]) -> None:
    gate = asyncio.Semaphore(CONCURRENCY)
    async with aiohttp.ClientSession() as control:

        async def one(wait: Wait) -> None:
            async with gate:
                spec = {"delay": wait.delay, "audio_bytes": 4096, **wait.outcome.spec}
                body = {"api": wait.api, "kind": wait.kind, **spec}
                async with control.post(f"{emu.control}/tasks", json=body) as resp:
                    resp.raise_for_status()
                    wait.task_id = (await resp.json())["task_id"]
                wait.started = time.time()
                wait.deadline = wait.started + (NEVER_DEADLINE if wait.outcome.expect == "timeout" else DEADLINE)
                trigger = TtsTaskTrigger(
                    tts_conn_id=conn_ids[wait.api],
                    tts_task_id=wait.task_id,
                    kind=wait.kind,
                    deadline=wait.deadline,
                    started_at=wait.started,
                    poll_interval=POLL,
                    slow_poll_interval=2 * POLL,
                    slow_after=30,
                    not_found_grace=NOT_FOUND_GRACE,
                    max_consecutive_errors=MAX_CONSECUTIVE_ERRORS,
                )
                # What the triggerer runs is rebuilt from the row: only the serialized kwargs survive.
                trigger = TtsTaskTrigger(**trigger.serialize()[1])
                try:
                    wait.events = await drive(trigger)
                except Exception as exc:  # a crash of the trigger is a finding, not a test error
                    wait.crash = f"{type(exc).__name__}: {exc}"
                wait.ended = time.time()

        await asyncio.gather(*(one(w) for w in waits))


def figures(waits: list[Wait], stats: dict[str, Any], wall: float) -> dict[str, Any]:
    verdicts = Counter(verdict(w) for w in waits)
    requests = [w.requests for w in waits]
    durations = [w.ended - w.started for w in waits]
    timeouts = [w.ended - w.deadline for w in waits if w.outcome.expect == "timeout" and w.events]
    status_requests = stats["requests_by_endpoint"].get("status", 0)
    return {
        "waits": len(waits),
        "concurrency": CONCURRENCY,
        "seed": SEED,
        "fault_rate_configured": FAULT_RATE,
        "correct": verdicts["correct"],
        "lost": verdicts["lost"],
        "false_failures": verdicts["false_failure"],
        "false_successes": verdicts["false_success"],
        "error_events": verdicts["error"],
        "trigger_crashes": verdicts["crash"],
        "wrong_detail": verdicts["wrong_detail"],
        "expected": dict(Counter(w.outcome.expect for w in waits)),
        "outcomes": dict(Counter(f"{w.api}/{w.outcome.name}" for w in waits)),
        "events": dict(Counter(w.events[0]["status"] for w in waits if len(w.events) == 1)),
        "status_requests": status_requests,
        "faults_total": stats["faults_total"],
        "fault_rate_measured": round(stats["faults_total"] / max(status_requests, 1), 4),
        "faults_by_kind": dict(sorted(stats["faults_by_kind"].items())),
        "requests_per_wait_max": max(requests),
        "requests_per_wait_mean": round(statistics.fmean(requests), 2),
        "request_bound_violations": sum(w.requests > request_bound(w) for w in waits),
        "request_bound_of_longest_wait": max(request_bound(w) for w in waits),
        "wait_seconds_mean": round(statistics.fmean(durations), 3),
        "wait_seconds_max": round(max(durations), 3),
        "timeout_lateness_seconds_max": round(max(timeouts), 3) if timeouts else None,
        "connections": stats["connections"],
        "wall_seconds": round(wall, 1),
        "settings": {
            "poll_interval": POLL,
            "read_timeout": READ_TIMEOUT,
            "slow_seconds": SLOW_SECONDS,
            "max_retries": MAX_RETRIES,
            "retry_backoff": BACKOFF,
            "retry_max_backoff": MAX_BACKOFF,
            "retry_after": RETRY_AFTER,
            "not_found_grace": NOT_FOUND_GRACE,
            "max_consecutive_errors": MAX_CONSECUTIVE_ERRORS,
            "fault_kinds": list(TRANSIENT_FAULT_KINDS),
        },
    }


@pytest.mark.timeout(max(300, 2 * WAITS))
def test_soak_every_wait_ends_right_through_30_percent_faults(
    cli_emulator: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    emu: CliEmulator = cli_emulator(
        "--uvloop",
        "--fault-rate", str(FAULT_RATE),
        "--fault-kinds", ",".join(TRANSIENT_FAULT_KINDS),
        "--fault-endpoints", "status",
        "--retry-after", RETRY_AFTER,
        "--slow-seconds", str(SLOW_SECONDS),
        "--seed", str(SEED),
    )  # fmt: skip
    extra = {
        "read_timeout": READ_TIMEOUT,
        "connect_timeout": 2,
        "max_retries": MAX_RETRIES,
        "retry_backoff": BACKOFF,
        "retry_max_backoff": MAX_BACKOFF,
    }
    conn_ids = {api: define_conn(monkeypatch, f"soak_{api}", emu, api, **extra) for api in ("camb_ai", "revid_tts")}
    waits = plan(WAITS, SEED)

    started = time.monotonic()
    asyncio.run(run_waits(emu, conn_ids, waits))
    wall = time.monotonic() - started

    stats = emu.stats()
    for wait in waits:
        wait.requests = stats["polls_by_task"].get(wait.task_id, 0)
    result = figures(waits, stats, wall)
    text = json.dumps(result, indent=2)
    (tmp_path / "soak.json").write_text(text)
    if report := os.environ.get("TTS_SOAK_REPORT"):
        Path(report).parent.mkdir(parents=True, exist_ok=True)
        Path(report).write_text(text)
    print(f"\nsoak figures ({tmp_path / 'soak.json'}):\n{text}")

    wrong = [{**asdict(w), "outcome": w.outcome.name, "verdict": verdict(w)} for w in waits if verdict(w) != "correct"]
    assert wrong == [], json.dumps(wrong[:5], indent=1, default=str)
    assert result["correct"] == WAITS
    over = [(w.task_id, w.requests, request_bound(w)) for w in waits if w.requests > request_bound(w)]
    assert over == [], over
    assert all(w.requests >= 1 for w in waits)
    # The faults really happened, at the configured rate, and every kind was drawn.
    assert abs(result["fault_rate_measured"] - FAULT_RATE) < 0.05
    assert set(result["faults_by_kind"]) == set(TRANSIENT_FAULT_KINDS)
