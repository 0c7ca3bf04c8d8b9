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
import json
import logging
import re
from collections.abc import Iterator
from typing import Any

import pytest

from airflow_provider_tts.batch.submit import SubmitPhase
from airflow_provider_tts.cache import CACHE_FOLDER, SNAPSHOT_NAME, RequestCache
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
    if base.endswith(f"/.tts-cache/{SNAPSHOT_NAME}"):
        return "snapshot"
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


# ---------------------------------------------------------------------------------------------- snapshot
# A batch of many items keeps its entries' bytes in one snapshot object too, which a listing must
# vouch for entry by entry (RELIABILITY RC9): a try that starts over after a kill reads one object,
# not a GET per entry (chaos finding (2), RELIABILITY D3).
MANY = 40  # over SNAPSHOT_MIN_ENTRIES: below it, a GET each is cheaper than a snapshot


class _Killed(BaseException):
    """What a SIGKILL of the worker does to the try, as far as the next try can tell."""


def test_a_rerun_of_many_items_reads_one_snapshot_not_a_get_per_entry(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, caplog: pytest.LogCaptureFixture, marked: None
) -> None:
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Snapshot sentence {n}." for n in range(MANY)]
    assert _batch(conn, bucket, aws_conn, texts).execute(context())["stored"] == MANY
    submit, store = _phases(caplog, bucket)
    # Saved at the end of each phase: after the claims and task ids, after the stored states.
    assert (submit["PUT snapshot"], store["PUT snapshot"]) == (1, 1)
    caplog.clear()
    assert _batch(conn, bucket, aws_conn, texts).execute(context(run_id="manual__2"))["cached"] == MANY
    submit, _ = _phases(caplog, bucket)
    assert submit == {"LIST": 2, "GET snapshot": 1}  # was a GET per entry: 40
    assert len(emu.tasks()) == MANY


def test_a_retry_after_a_kill_mid_store_reads_only_the_entries_changed_since_the_snapshot(
    emu: Any,
    make_conn: ConnFactory,
    aws_conn: str,
    bucket: str,
    caplog: pytest.LogCaptureFixture,
    marked: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The first try is killed as its 11th item is to be recorded stored (and records nothing after).
    The retry takes every entry the snapshot still vouches for from it, pays for nothing, and
    stores the rest."""
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Killed snapshot sentence {n}." for n in range(MANY)]
    stored = RequestCache.stored
    calls = []

    def stored_until_killed(self: RequestCache, *args: Any, **kwargs: Any) -> None:
        calls.append(1)
        if len(calls) > 10:
            raise _Killed
        stored(self, *args, **kwargs)

    monkeypatch.setattr(RequestCache, "stored", stored_until_killed)
    with pytest.raises(_Killed):
        _batch(conn, bucket, aws_conn, texts, max_active_requests=8).execute(context())
    monkeypatch.setattr(RequestCache, "stored", stored)
    caplog.clear()
    result = _batch(conn, bucket, aws_conn, texts).execute(context(try_number=2))
    assert (result["stored"] + result["cached"], len(emu.tasks())) == (MANY, MANY)  # nothing paid twice
    submit, _ = _phases(caplog, bucket)
    assert submit["GET snapshot"] == 1
    assert submit["GET entry"] <= 10  # only those written since the snapshot; before: all 40


def test_a_snapshot_is_believed_only_where_the_listing_vouches_for_each_entry(
    emu: Any,
    make_conn: ConnFactory,
    aws_conn: str,
    bucket: str,
    s3: Any,
    caplog: pytest.LogCaptureFixture,
    marked: None,
) -> None:
    """An entry rewritten since the snapshot (here: the vendor refused it) is read and obeyed; a
    damaged snapshot is ignored with a warning, every entry read and a new snapshot saved."""
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Vouched sentence {n}." for n in range(MANY)]
    _batch(conn, bucket, aws_conn, texts).execute(context())
    prefix = f"audio/{CACHE_FOLDER}/"
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=prefix)["Contents"])
    entry_key = next(k for k in keys if k.endswith(".json"))
    entry = json.loads(s3.get_object(Bucket=bucket, Key=entry_key)["Body"].read())
    entry.update(state="rejected", reason="HARMFUL_CONTENT_DETECTED (written by another run)")
    s3.put_object(Bucket=bucket, Key=entry_key, Body=json.dumps(entry).encode())
    caplog.clear()
    again = _batch(conn, bucket, aws_conn, texts, max_failed_items=1).execute(context(run_id="manual__2"))
    assert (again["cached"], again["failed"]) == (MANY - 1, 1)  # the snapshot said stored; the entry says not
    submit, _ = _phases(caplog, bucket)
    assert (submit["GET snapshot"], submit["GET entry"]) == (1, 1)

    s3.put_object(Bucket=bucket, Key=f"{prefix}{SNAPSHOT_NAME}", Body=b"not a snapshot")
    caplog.clear()
    third = _batch(conn, bucket, aws_conn, texts, max_failed_items=1).execute(context(run_id="manual__3"))
    assert (third["cached"], third["failed"]) == (MANY - 1, 1)
    assert any("Ignoring the request cache snapshot" in r.getMessage() for r in caplog.records)
    submit, _ = _phases(caplog, bucket)
    assert (submit["GET entry"], submit["PUT snapshot"]) == (MANY, 1)  # read one by one, then saved again
    assert len(emu.tasks()) == MANY
