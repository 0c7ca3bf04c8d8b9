"""S3 requests of a batch's store phase, counted per operation and object (issue 24): no regression.

The store phase writes each item's audio (one PutObject) and its request cache entry in its stored
state (one PutObject), then the manifest; it reads no cache entry and asks no HEAD of any object:
the submit phase hands over what it read or wrote of each request's entry, and a deferring try
writes it into the wait list, so the resumed task reads nothing again. Before, every item cost a
GET of its entry more (and every cached item a GET and a HEAD, read once by the submit phase and
again by the store phase). A re-run confirms each cached item's audio by the plan's listing of the
folder, which on S3 carries the size and ETag a HEAD would answer: one GET per item in all.

The requests are moto's own access log (werkzeug), as in ``test_audio_to_storage_s3.py``; the end
of the submit phase is marked in the same log (a request's line is logged before its answer is
sent, so every request the submit phase made is above the mark). Counts, never times.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_tts.batch.submit import SubmitPhase
from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.triggers.batch import TtsBatchTrigger
from tests.conftest import ConnFactory
from tests.operators.test_batch import CAMB_DEFAULTS, context

MARK = "test-mark: the submit phase returned"
N = 5


def _kind(path: str) -> str:
    """What a request's path names: the bucket, a listing, a cache entry, the wait list, the manifest or audio."""
    base, _, query = path.partition("?")
    if "/" not in base.strip("/"):
        return "LIST" if query else "bucket"
    if "/.tts-cache/" in base:
        return "entry"
    if "/.tts-batch/" in base:
        return "wait list"
    return "manifest" if base.endswith("/manifest.jsonl") else "audio"


def _phases(caplog: pytest.LogCaptureFixture, bucket: str) -> list[collections.Counter[str]]:
    """Requests to ``bucket`` as ``"METHOD kind"`` counts, split at each mark (a LIST is its own kind)."""
    phases: list[collections.Counter[str]] = [collections.Counter()]
    for record in caplog.records:
        message = record.getMessage()
        if message == MARK:
            phases.append(collections.Counter())
            continue
        match = re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/[^ ]*) HTTP', message)
        if record.name == "werkzeug" and match and match.group(2).lstrip("/").startswith(bucket):
            kind = _kind(match.group(2))
            phases[-1]["LIST" if kind == "LIST" else f"{match.group(1)} {kind}"] += 1
    return phases


@pytest.fixture
def marked(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[None]:
    """Mark the end of every submit phase in moto's log; capture that log."""
    submit_all = SubmitPhase._submit_all

    def submit_then_mark(self: Any, *args: Any, **kwargs: Any) -> Any:
        outcomes = submit_all(self, *args, **kwargs)
        logging.getLogger("werkzeug").info(MARK)
        return outcomes

    monkeypatch.setattr(SubmitPhase, "_submit_all", submit_then_mark)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        yield


def _batch(conn: str, bucket: str, aws_conn: str, texts: list[str], **kw: Any) -> CambTtsBatchToStorageOperator:
    kw.setdefault("deferrable", False)
    return CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=conn, destination=f"s3://{bucket}/audio/", dest_conn_id=aws_conn,
        items=texts, defaults=CAMB_DEFAULTS, poll_interval=0.05, **kw,
    )  # fmt: skip


def test_the_store_phase_is_two_puts_per_item_and_a_rerun_reads_each_entry_once(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, caplog: pytest.LogCaptureFixture, marked: None
) -> None:
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Counted sentence {n}." for n in range(N)]
    assert _batch(conn, bucket, aws_conn, texts).execute(context())["stored"] == N
    submit, store = _phases(caplog, bucket)
    # Submit: a claim and the task id per request (claimed before paying, recorded after); the folder
    # and the cache folder listed once each (s3fs lists each one's parent too while they do not exist).
    assert {k: v for k, v in submit.items() if k not in ("LIST", "HEAD bucket")} == {"PUT entry": 2 * N}
    assert submit["LIST"] <= 4
    # Store: the audio and the entry's stored state per item; the manifest; the (absent) wait list removed.
    assert store == {"PUT audio": N, "PUT entry": N, "PUT manifest": 1, "DELETE wait list": 1}

    caplog.clear()
    assert _batch(conn, bucket, aws_conn, texts).execute(context(run_id="manual__2"))["cached"] == N
    submit, store = _phases(caplog, bucket)
    # The re-run's submit phase reads each entry (one GET) and confirms its audio by the folder's listing
    # (S3 lists the size and ETag a HEAD would answer): the folder and the cache folder, one LIST each ...
    assert submit == {"LIST": 2, "GET entry": N}
    # ... and its store phase uses those hits as they are.
    assert store == {"PUT manifest": 1, "DELETE wait list": 1}


def test_a_resumed_batch_reads_no_cache_entry_and_heads_no_audio(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, caplog: pytest.LogCaptureFixture, marked: None
) -> None:
    """A deferring batch of 2 cached and 3 new items: the wait list carries the cached rows and the
    waited-for entries' owner and credits, so the resumed task's requests are its own writes."""
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Deferred counted sentence {n}." for n in range(N)]
    _batch(conn, bucket, aws_conn, texts[:2]).execute(context(run_id="manual__0"))
    op = _batch(conn, bucket, aws_conn, texts, deferrable=True)
    caplog.clear()
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    _, kwargs = deferred.value.trigger.serialize()

    async def first_event() -> Any:
        async for event in TtsBatchTrigger(**kwargs).run():
            return event.payload
        return None

    event = asyncio.run(first_event())
    caplog.clear()
    fresh = _batch(conn, bucket, aws_conn, texts, deferrable=True)
    result = getattr(fresh, deferred.value.method_name)(context(), event=event)
    assert (result["stored"], result["cached"], result["requests"]) == (N - 2, 2, N - 2)
    (resume,) = _phases(caplog, bucket)
    per_item = {k: v for k, v in resume.items() if k.endswith(("entry", "audio"))}
    assert per_item == {"PUT audio": N - 2, "PUT entry": N - 2}
    assert resume["PUT manifest"] == 1
    assert resume["GET wait list"] == 1


def test_audio_replaced_by_other_bytes_of_its_size_is_no_hit_whatever_the_listing_says(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, s3: Any
) -> None:
    """The listing confirms a hit only when it shows the recorded size and ETag; other bytes of the
    same size list another ETag, so the audio is asked about (HEAD) and paid for again (RC4)."""
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = ["Kept sentence.", "Replaced sentence."]
    rows = _batch(conn, bucket, aws_conn, texts, manifest_task_ids=True).execute(context())
    assert rows["stored"] == 2
    key = rows["files"][1].removeprefix(f"s3://{bucket}/")
    size = s3.head_object(Bucket=bucket, Key=key)["ContentLength"]
    s3.put_object(Bucket=bucket, Key=key, Body=b"\0" * size)
    again = _batch(conn, bucket, aws_conn, texts).execute(context(run_id="manual__2"))
    assert (again["cached"], again["stored"], len(emu.tasks())) == (1, 1, 3)
