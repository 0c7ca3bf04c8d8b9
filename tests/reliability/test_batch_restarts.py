"""A batch worker killed mid-batch: the retry pays for nothing twice and loses no item (issue 15).

The worker is a real process (``tests/operators/_batch_worker.py``) running the batch operator
against the emulator over loopback; it is SIGKILLed at a deterministic point, then a second
process runs the task's next try on the same record and folder.

* Killed mid-submit, at the worst moment (vendor tasks created whose ids never reached the
  record): no text is created twice; the items whose answer was lost (at most
  ``max_active_requests``) are manifest rows that say the vendor may have created them; every
  other item is stored.
* Killed mid-store: the retry creates nothing, re-attaches to every task and stores every item.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEY

REPO = Path(__file__).resolve().parents[2]
COUNT = 24
ACTIVE = 4


def emulator_with_delay(delay: float) -> Any:
    """An emulator whose tasks finish ``delay`` seconds after their create (a context manager)."""
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig

    return Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=delay))


@pytest.fixture
def slow_emu() -> Iterator[Any]:
    with emulator_with_delay(0.2) as emulator:
        yield emulator


def _spec(emu: Any, folder: Path, **extra: Any) -> dict[str, Any]:
    connection = {
        "conn_type": "revid_tts",
        "host": emu.revid_base_url,
        "password": TEST_KEY,
        "extra": {"retry_backoff": 0.01, "status_base_url": emu.revid_status_base_url},
    }
    return {"connection": json.dumps(connection), "destination": folder.as_uri() + "/", "count": COUNT,
            "max_active_requests": ACTIVE, "max_failed_items": None, **extra}  # fmt: skip


def _run(spec: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "tests.operators._batch_worker", json.dumps(spec)],
        cwd=REPO, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    assert lines, done.stderr[-3000:]
    return dict(json.loads(lines[-1]))


def _kill_when_ready(spec: dict[str, Any], ready: Path) -> None:
    worker = subprocess.Popen(
        [sys.executable, "-m", "tests.operators._batch_worker", json.dumps(spec)],
        cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while not ready.exists():
            assert worker.poll() is None, "the worker ended before reaching the kill point"
            assert time.monotonic() < deadline, "the worker never reached the kill point"
            time.sleep(0.05)
    finally:
        with contextlib.suppress(ProcessLookupError):  # it may have ended on its own (the assert says so)
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait()


def _texts_created(emu: Any) -> Counter[str]:
    return Counter(str((task.get("body") or {}).get("text")) for task in emu.tasks())


def _manifest(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def test_killed_mid_submit_the_retry_creates_nothing_twice(slow_emu: Any, tmp_path: Path) -> None:
    folder, ready = tmp_path / "out", tmp_path / "ready"
    _kill_when_ready(_spec(slow_emu, folder, pause_after_creates=8, ready_file=str(ready)), ready)
    before = sum(_texts_created(slow_emu).values())
    assert 8 < before < COUNT

    outcome = _run(_spec(slow_emu, folder, try_number=2))
    created = _texts_created(slow_emu)
    assert max(created.values()) == 1, "a text was paid for twice"
    assert len(created) <= COUNT
    rows = _manifest(folder)
    assert len(rows) == COUNT
    assert outcome["result"]["items"] == COUNT
    lost = [row for row in rows if row["status"] == "failed"]
    assert all("may have created" in row["error"] and row["retryable"] is False for row in lost)
    assert len(lost) <= ACTIVE  # only the creates in flight when the worker died
    stored = [row for row in rows if row["status"] == "stored"]
    assert len(stored) + len(lost) == COUNT
    assert not list(folder.glob(".*.partial"))


def test_killed_mid_store_the_retry_reattaches_and_stores_every_item(slow_emu: Any, tmp_path: Path) -> None:
    folder, ready = tmp_path / "out", tmp_path / "ready"
    _kill_when_ready(_spec(slow_emu, folder, pause_after_stores=6, ready_file=str(ready)), ready)
    assert sum(_texts_created(slow_emu).values()) == COUNT

    outcome = _run(_spec(slow_emu, folder, try_number=2))
    assert outcome["result"]["failed"] == 0, outcome
    assert sum(_texts_created(slow_emu).values()) == COUNT  # nothing paid for again
    rows = _manifest(folder)
    assert [row["status"] for row in rows].count("failed") == 0
    assert len(rows) == COUNT
    assert {row["status"] for row in rows} <= {"stored", "cached"}
    assert not (folder / ".tts-batch").exists() or not list((folder / ".tts-batch").rglob("*.json"))


def test_a_worker_reports_its_own_peak_memory_not_its_parents() -> None:
    """Linux carries ``ru_maxrss`` over fork and exec: a worker started late in a long test session
    reported the session's 786 MiB as its own. The worker reads its memory map's ``VmHWM`` instead."""
    ballast = bytearray(300 * 1024 * 1024)
    ballast[::4096] = b"\x01" * len(ballast[::4096])  # touch every page: the parent's RSS is > 300 MiB
    code = "from tests.operators._batch_worker import peak_rss_mib; print(peak_rss_mib())"
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert float(done.stdout) < 200
    del ballast
