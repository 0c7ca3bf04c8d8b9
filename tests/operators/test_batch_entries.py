"""The batch's request cache entries are written beside its store threads (RELIABILITY BA20).

An item's audio is stored by a store thread, which hands the entry (the request's "stored" state)
to ``EntryWrites`` and takes its next item. What that must not change: an entry that cannot be
written is a retryable failed row, never a silent success a re-run would pay for again; at most
twice the entry threads wait to be written, so a kill leaves a bounded number of items stored but
recorded as submitted; and every entry is written before the manifest.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.batch.store import EntryWrites
from airflow_provider_tts.cache import RequestCache
from airflow_provider_tts.exceptions import TtsBatchItemsFailedError
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from tests.conftest import ConnFactory
from tests.operators.test_batch import CAMB_DEFAULTS, context


def _batch(conn: str, folder: Path, texts: list[str], **kw: Any) -> CambTtsBatchToStorageOperator:
    return CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=conn, destination=folder.as_uri() + "/", items=texts,
        defaults=CAMB_DEFAULTS, poll_interval=0.05, deferrable=False, **kw,
    )  # fmt: skip


def test_an_entry_that_cannot_be_written_fails_its_row_and_the_retry_pays_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Entry sentence {n}." for n in range(6)]
    stored = RequestCache.stored
    refused: list[str] = []

    def refuse_one(self: RequestCache, fingerprint: str, *args: Any, **kwargs: Any) -> None:
        if not refused:
            refused.append(fingerprint)
            raise TtsStorageError("could not write the request cache entry x: PermissionError: denied")
        stored(self, fingerprint, *args, **kwargs)

    monkeypatch.setattr(RequestCache, "stored", refuse_one)
    with pytest.raises(TtsBatchItemsFailedError, match=r"1 of 6 items failed.*request cache entry could not be"):
        _batch(conn, tmp_path, texts).execute(context())
    rows = [json.loads(line) for line in (tmp_path / "manifest.jsonl").read_text().splitlines()]
    assert sorted(row["status"] for row in rows) == ["failed"] + ["stored"] * 5
    failed = next(row for row in rows if row["status"] == "failed")
    assert (failed["retryable"], failed["error"].endswith("a retry records it without paying again")) == (True, True)
    assert len(list(tmp_path.glob("*.flac"))) == 6  # its audio is stored all the same

    monkeypatch.setattr(RequestCache, "stored", stored)
    result = _batch(conn, tmp_path, texts).execute(context(try_number=2))
    assert (result["stored"], result["cached"], result["failed"]) == (1, 5, 0)  # waited on the paid task again
    assert len(emu.tasks()) == 6  # one create per text, across both tries
    third = _batch(conn, tmp_path, texts).execute(context(run_id="manual__2"))
    assert (third["cached"], len(emu.tasks())) == (6, 6)  # the entry is written now: a re-run is all cache


def test_at_most_twice_the_entry_threads_wait_and_every_entry_is_written_before_wait_returns() -> None:
    release = threading.Event()
    started: list[str] = []
    written: list[str] = []
    lock = threading.Lock()

    def slow_stored(fingerprint: str, path: Any, stored: Any) -> None:
        with lock:
            started.append(fingerprint)
        release.wait(10)
        with lock:
            written.append(fingerprint)

    plan: Any = SimpleNamespace(cache=SimpleNamespace(stored=slow_stored))
    entries = EntryWrites(2)
    handed: list[int] = []

    def store_thread() -> None:
        for n in range(10):
            entries.record(plan, SimpleNamespace(index=n, fingerprint=f"fp{n}"), Path(f"/x/{n}"), None)  # type: ignore[arg-type]
            handed.append(n)

    producer = threading.Thread(target=store_thread)
    producer.start()
    deadline = time.monotonic() + 10
    while (len(handed), len(started)) != (4, 2) and time.monotonic() < deadline:
        time.sleep(0.01)
    producer.join(0.2)  # the fifth hand-over waits (2 being written, 2 queued), however long this waits
    assert producer.is_alive()
    assert (len(handed), len(started), written) == (4, 2, [])
    release.set()
    producer.join(10)
    entries.wait()
    assert sorted(written) == sorted(f"fp{n}" for n in range(10))


def test_a_failed_entry_fails_only_a_stored_row_and_an_interruption_is_raised() -> None:
    def stored(fingerprint: str, path: Any, stored: Any) -> None:
        if fingerprint == "bad":
            raise TtsStorageError("could not write the request cache entry e: OSError: full")
        if fingerprint == "stop":
            raise KeyboardInterrupt

    plan: Any = SimpleNamespace(cache=SimpleNamespace(stored=stored))
    entries = EntryWrites(2)
    for n, fp in enumerate(["ok", "bad"]):
        entries.record(plan, SimpleNamespace(index=n, fingerprint=fp), Path("/x/a.wav"), None)  # type: ignore[arg-type]
    rows = {"0": {"status": "stored", "file": "file:///x/a.wav"}, "1": {"status": "stored", "file": "file:///x/b.wav"}}
    entries.fail_unrecorded(rows)
    assert rows["0"]["status"] == "stored"
    assert (rows["1"]["status"], rows["1"]["retryable"]) == ("failed", True)
    assert rows["1"]["error"].startswith("stored file:///x/b.wav, but its request cache entry could not be written")

    interrupted = EntryWrites(1)
    interrupted.record(plan, SimpleNamespace(index=0, fingerprint="stop"), Path("/x/a.wav"), None)  # type: ignore[arg-type]
    with pytest.raises(KeyboardInterrupt):
        interrupted.fail_unrecorded({"0": {"status": "stored", "file": "file:///x/a.wav"}})
