"""The batch operators: N items, one deferral, per-item record and manifest (issue 15).

Against the emulator over loopback (and moto for s3://): every class stores its batch; the task
defers once, and the trigger row names the record, not the ids; a failed item is a manifest row,
and a retry pays only for the items that failed retryably; a lost create answer is never resent;
bad input fails before any request; one 429 pauses every request of the batch; a re-run costs
nothing.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import shutil
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.batch import STATE_FOLDER
from airflow_provider_tts.cache import CACHE_FOLDER
from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.exceptions import (
    TtsBatchItemsFailedError,
    TtsBatchItemsFailedPermanentlyError,
    TtsConfigError,
)
from airflow_provider_tts.operators.batch import (
    BaseTextBatchToStorageOperator,
    CambTextToSoundBatchToStorageOperator,
    CambTtsBatchToStorageOperator,
    RevidSrtToSpeechBatchToStorageOperator,
    RevidTtsBatchToStorageOperator,
)
from airflow_provider_tts.triggers.batch import BATCH_TRIGGER_CLASSPATH, TtsBatchTrigger
from tests.conftest import ConnFactory
from tests.operators.test_submit import SRT

CAMB_DEFAULTS = {"voice_id": 20303, "language": 1}


def context(try_number: int = 1, run_id: str = "manual__1") -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="nightly", task_id="speak_all", run_id=run_id, map_index=-1, try_number=try_number)
    return {"ti": ti}


def batch(cls: type[BaseTextBatchToStorageOperator], conn_id: str, folder: Path, **kw: Any) -> Any:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    return cls(task_id="speak_all", tts_conn_id=conn_id, destination=folder.as_uri() + "/", **kw)


def manifest(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (folder / "manifest.jsonl").read_text().splitlines()]


def creates(emu: Any) -> int:
    return sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values())


def created_texts(emu: Any) -> list[str]:
    return [str((task.get("body") or {}).get("text")) for task in emu.tasks()]


# The SRT case repeats one request under a second file name: two files, one payment.
CASES = [
    (CambTtsBatchToStorageOperator, "camb_ai", ["One river.", "Two birds.", "Three trains."], CAMB_DEFAULTS),
    (CambTextToSoundBatchToStorageOperator, "camb_ai", ["rain on a roof", "a bell"], {"duration": 1}),
    (RevidTtsBatchToStorageOperator, "revid_tts", ["One river.", {"text": "Two birds.", "key": "birds"}], {}),
    (RevidSrtToSpeechBatchToStorageOperator, "revid_tts", [SRT, {"srt": SRT, "file_name": "welcome"}], {}),
]


@pytest.mark.parametrize(("cls", "api", "items", "defaults"), CASES, ids=lambda c: getattr(c, "__name__", None))
def test_every_class_stores_its_batch_and_a_manifest_row_per_item(
    cls: Any, api: str, items: list[Any], defaults: dict[str, Any], emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    result = batch(cls, make_conn(api), tmp_path, items=items, defaults=defaults).execute(context())
    rows = manifest(tmp_path)
    assert result["items"] == result["stored"] == len(items)
    assert result["failed"] == 0
    assert [row["index"] for row in rows] == list(range(1, len(items) + 1))
    for row in rows:
        stored = Path(row["file"].removeprefix("file://"))
        assert row["status"] == "stored"
        assert hashlib.sha256(stored.read_bytes()).hexdigest() == row["sha256"]
        assert stored.stat().st_size == row["size_bytes"]
        assert row["tts_task_id"] is None  # not in the manifest unless asked (manifest_task_ids=True)
    assert creates(emu) == len({row["fingerprint"] for row in rows})  # one payment per distinct request
    assert not (tmp_path / STATE_FOLDER).exists()  # the wait list goes when the task ends
    assert "rows" not in result
    assert len(json.dumps(result)) < 1000


def test_names_follow_keys_file_names_and_the_request_never_the_position(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    items = ["1. The river wakes up slowly.", {"text": "x", "key": "intro"}, {"text": "y", "file_name": "outro"}]
    batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=items).execute(context())
    rows = manifest(tmp_path)
    names = [Path(row["file"]).name for row in rows]
    digest = rows[0]["fingerprint"].removeprefix("sha256:")
    assert names == [f"{digest[:16]}.wav", "intro.wav", "outro.wav"]  # no word of the text by default
    assert [row["key"] for row in rows] == [digest[:16], "intro", "outro"]


def test_words_style_names_carry_the_first_words_and_the_request(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    texts = ["1. The river wakes up slowly."]
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=texts, file_names="words")
    op.execute(context())
    [row] = manifest(tmp_path)
    assert Path(row["file"]).name == f"the-river-wakes-up-slowly-{row['fingerprint'].removeprefix('sha256:')[:8]}.wav"


def test_a_rerun_pays_for_nothing_and_an_edited_text_pays_once(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    texts = [f"Sentence number {n}." for n in range(12)]
    batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS).execute(context())
    again = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS)
    assert again.execute(context(run_id="manual__2"))["cached"] == 12
    assert creates(emu) == 12
    texts[3] = "An edited sentence."
    edited = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS)
    result = edited.execute(context(run_id="manual__3"))
    assert (result["cached"], result["stored"], creates(emu)) == (11, 1, 13)


def test_the_task_defers_once_and_the_trigger_row_names_the_record_not_the_ids(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    texts = [f"Deferred sentence {n}." for n in range(30)]
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    trigger = deferred.value.trigger
    assert isinstance(trigger, TtsBatchTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == BATCH_TRIGGER_CLASSPATH
    row = json.dumps(kwargs)
    assert len(row) < 1000
    assert not any(task["task_id"] in row for task in emu.tasks())
    assert (tmp_path / STATE_FOLDER).is_dir()

    async def first_event() -> Any:
        async for event in TtsBatchTrigger(**kwargs).run():
            return event.payload
        return None

    event = asyncio.run(first_event())
    assert event["status"] == "done"
    assert event["succeeded"] == 30
    fresh = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=True)
    result = getattr(fresh, deferred.value.method_name)(context(), event=event)
    assert result["stored"] == 30
    assert creates(emu) == 30


def test_a_resume_without_a_wait_list_starts_the_try_over_and_pays_nothing_twice(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """Airflow 3.0 calls the resume method again, with the old event, on the retry of a try that failed
    after resuming: the wait list is gone by then, so the retry starts over from the request cache."""
    conn = make_conn("camb_ai")
    texts = ["First line.", "Second line.", "Third line."]
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=True)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    old_event = {"status": "done", "pending": 0, "succeeded": 3, "failed": 0, "errors": 0}
    shutil.rmtree(tmp_path / STATE_FOLDER)  # what the failed try's end removed
    fresh = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=False)
    result = getattr(fresh, deferred.value.method_name)(context(try_number=2), event=old_event)
    assert result["stored"] + result["cached"] == 3
    assert result["failed"] == 0
    assert creates(emu) == 3  # the first try's tasks, re-attached from the request cache


def test_a_failed_item_is_a_row_and_the_retry_pays_only_for_the_retryable_one(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """Item 1's create is refused with 429s beyond the transport's retries (nothing created: sent again
    in the same try, and stored); item 2's vendor task fails retryably (the first create that reaches
    the vendor; paid, and a retry may pay again); item 3 is harmful content (failed for good). Try 1
    stores the other four and fails; try 2 pays for item 2 only, reports item 3 again without paying,
    and fails permanently."""
    conn = make_conn("camb_ai", max_retries=0)
    texts = [f"Item {n}." for n in range(1, 7)]
    texts[2] = "Item 3. [emu:outcome=error,reason=HARMFUL_CONTENT_DETECTED]"
    # Item 1's create (items go one at a time, in order); with no transport retry, the batch sends
    # it again after the others. (A backoff would lend the slot, so a retry would meet another item.)
    emu.inject("429", count=1, endpoint="create")
    emu.script_next("camb_ai", "tts", outcome="error", reason="INTERNAL_ERROR")  # the first create processed
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS,
               max_active_requests=1)  # fmt: skip
    with pytest.raises(TtsBatchItemsFailedError) as first:
        op.execute(context())
    assert not isinstance(first.value, TtsBatchItemsFailedPermanentlyError)
    rows = manifest(tmp_path)
    assert [row["status"] for row in rows] == ["stored", "failed", "failed", "stored", "stored", "stored"]
    assert rows[1]["retryable"] is True
    assert "INTERNAL_ERROR" in rows[1]["error"]
    assert rows[2]["retryable"] is False
    assert "HARMFUL_CONTENT_DETECTED" in rows[2]["error"]
    assert creates(emu) == 6  # the 429s created nothing; every item was created once

    with pytest.raises(TtsBatchItemsFailedPermanentlyError):
        op.execute(context(try_number=2))
    rows = manifest(tmp_path)
    assert [row["status"] for row in rows] == ["cached", "stored", "failed", "cached", "cached", "cached"]
    assert creates(emu) == 7  # item 2 again, nothing else

    tolerant = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS,
                     max_failed_items=1)  # fmt: skip
    assert tolerant.execute(context(try_number=3))["failed"] == 1
    assert creates(emu) == 7


def test_a_create_refused_with_nothing_created_is_sent_again_in_the_same_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai", max_retries=0)
    emu.inject("429", count=2, endpoint="create")  # every first create of the round, then one of the second
    result = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=["One.", "Two."], defaults=CAMB_DEFAULTS,
                   max_active_requests=1).execute(context())  # fmt: skip
    assert (result["stored"], result["failed"], creates(emu)) == (2, 0, 2)


@pytest.mark.parametrize("kind", ["html_200", "500"])
def test_a_transient_fault_on_one_download_is_retried_in_the_task_not_lost(
    kind: str, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """A storage host's maintenance page served with HTTP 200 passes the transport (a 200) and only the
    audio check refuses it; a 500 that outlives the transport's retries ends one download too. Both are
    transient: the item is downloaded again in the same try, so ``max_failed_items`` never turns a
    glitch into a missing file (the mapped store gets the same from its task retries)."""
    conn = make_conn("revid_tts", max_retries=1)
    texts = [f"Download {n}." for n in range(1, 4)]
    emu.inject(kind, count=2 if kind == "500" else 1, endpoint="storage")
    op = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=texts, max_active_requests=1)
    result = op.execute(context())
    assert (result["stored"], result["failed"]) == (3, 0)
    assert [row["status"] for row in manifest(tmp_path)] == ["stored"] * 3
    assert creates(emu) == 3


@pytest.mark.parametrize("policy", ["fail", "resubmit"])
def test_a_lost_create_answer_is_never_resent_unless_asked(
    policy: str, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")
    texts = ["First.", "Second.", "Third."]
    emu.inject("502", count=1, endpoint="create")  # after sending: the vendor may have created it
    op = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=texts, max_active_requests=1,
               on_uncertain_submit=policy)  # fmt: skip
    with pytest.raises(TtsBatchItemsFailedError):
        op.execute(context())
    first = manifest(tmp_path)[0]
    assert first["status"] == "failed"
    assert "may have created" in first["error"]
    sent = emu.stats()["requests_by_endpoint"]
    if policy == "fail":
        with pytest.raises(TtsBatchItemsFailedPermanentlyError):
            op.execute(context(try_number=2))
        assert manifest(tmp_path)[0]["status"] == "failed"
        assert emu.stats()["requests_by_endpoint"].get("create") == sent.get("create")
    else:
        assert op.execute(context(try_number=2))["failed"] == 0
        assert manifest(tmp_path)[0]["status"] == "stored"


def test_a_retry_reattaches_to_tasks_still_pending_at_the_deadline(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    texts = ["Quick one.", "Slow one. [emu:delay=inf]"]
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, timeout=1,
               manifest_task_ids=True)  # fmt: skip
    with pytest.raises(TtsBatchItemsFailedError):
        op.execute(context())
    slow = manifest(tmp_path)[1]
    assert slow["status"] == "failed"
    assert slow["retryable"] is True
    assert "PENDING" in slow["error"]
    emu.end_pending(slow["tts_task_id"])
    assert op.execute(context(try_number=2))["failed"] == 0
    assert manifest(tmp_path)[1]["tts_task_id"] == slow["tts_task_id"]
    assert creates(emu) == 2


@pytest.mark.parametrize(
    ("items", "defaults", "expected"),
    [
        (["ok", 7], CAMB_DEFAULTS, "item 2 is a int"),
        (["ok", {"text": "dup", "key": "a"}, {"text": "dup2", "key": "a"}], CAMB_DEFAULTS, "repeats key 'a'"),
        (
            [{"text": "a", "key": "intro"}, {"text": "b", "file_name": "intro.flac"}],
            CAMB_DEFAULTS,
            "would be stored as 'intro.flac' like item 1",
        ),
        (["ok", {"text": "x", "file_name": "../up"}], CAMB_DEFAULTS, "'../up' contains a path separator"),
        (["ok", {"text": "x", "voice_id": "not-a-voice"}], CAMB_DEFAULTS, "item 2"),
        (["no voice"], {"language": 1}, "item 1"),
        ([], CAMB_DEFAULTS, "got no items"),
    ],
)
def test_bad_items_fail_before_any_request_or_write(
    items: list[Any], defaults: dict[str, Any], expected: str, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), tmp_path, items=items, defaults=defaults)
    with pytest.raises(TtsConfigError, match=expected.replace("(", r"\(")):
        op.execute(context())
    assert emu.stats()["requests_total"] == 0
    assert list(tmp_path.iterdir()) == []


def test_a_mistyped_default_fails_when_the_dag_is_parsed(tmp_path: Path) -> None:
    with pytest.raises(TtsConfigError, match="'voice_idd'"):
        CambTtsBatchToStorageOperator(task_id="t", items=["x"], defaults={"voice_idd": 1}, destination="file:///x/")
    with pytest.raises(TtsConfigError, match="exactly one of items"):
        CambTtsBatchToStorageOperator(task_id="t", destination="file:///x/")


def test_a_connection_of_the_other_vendor_is_refused_before_paying(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = batch(CambTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=["x"], defaults=CAMB_DEFAULTS)
    with pytest.raises(TtsConfigError, match="needs a camb_ai connection"):
        op.execute(context())
    assert emu.stats()["creates"] == {}


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".txt"])
def test_items_from_a_file(suffix: str, emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    source = tmp_path / f"items{suffix}"
    if suffix == ".jsonl":
        source.write_text('"One."\n{"text": "Two.", "key": "two"}\n\n')
    elif suffix == ".csv":
        source.write_text("key,text\none,One.\ntwo,Two.\n")
    else:
        source.write_text("One.\nTwo.\n")
    out = tmp_path / "out"
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), out, items_path=source.as_uri())
    assert op.execute(context())["stored"] == 2
    assert sorted(created_texts(emu)) == ["One.", "Two."]


def test_one_429_pauses_every_request_of_the_batch(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    """The first create gets 429 with ``Retry-After: 1``: no create of the batch starts before that second is over."""
    emu.inject("429", count=1, endpoint="create")
    texts = [f"Paced {n}." for n in range(8)]
    op = batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), tmp_path, items=texts, defaults=CAMB_DEFAULTS,
               max_active_requests=1)  # fmt: skip
    op.execute(context())
    log = [entry for entry in emu.requests() if entry.get("endpoint") == "create"]
    limited = next(i for i, entry in enumerate(log) if entry.get("status") == 429)
    after = [entry["time"] for entry in log[limited + 1 :]]
    assert after
    assert min(after) - log[limited]["time"] >= 0.95
    assert op.hook.pacer.pauses == 1


def test_the_cache_entries_hold_no_secret_and_no_task_id_once_stored(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    texts = ["a.", "b. [emu:outcome=error,reason=HARMFUL_CONTENT_DETECTED]", "c. [emu:outcome=error]"]
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS)
    with pytest.raises(TtsBatchItemsFailedError):
        op.execute(context())
    entries = [json.loads(path.read_text()) for path in (tmp_path / CACHE_FOLDER).glob("*.json")]
    # Stored, refused for good (not sent again), and a retryable vendor failure released (paid anew by a retry).
    assert sorted(entry["state"] for entry in entries) == ["rejected", "stored"]
    for entry in entries:
        text = json.dumps(entry)
        assert "sk-" not in text
        assert "TEST" not in text
        assert "tts_task_id" not in entry  # a task id grants the audio at some vendors: dropped once stored
    assert not (tmp_path / STATE_FOLDER).exists()  # no wait list is left behind by a failed try either


def test_s3_destination(emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, s3: Any) -> None:
    texts = [f"Cloud sentence {n}." for n in range(5)]
    op = CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=make_conn("camb_ai"), destination=f"s3://{bucket}/audio/",
        dest_conn_id=aws_conn, items=texts, defaults=CAMB_DEFAULTS, deferrable=False, poll_interval=0.05,
    )  # fmt: skip
    assert op.execute(context())["stored"] == 5
    keys = {obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket)["Contents"]}
    assert "audio/manifest.jsonl" in keys
    assert not any(STATE_FOLDER in key for key in keys)
    rows = [json.loads(line) for line in s3.get_object(Bucket=bucket, Key="audio/manifest.jsonl")["Body"].iter_lines()]
    for row in rows:
        body = s3.get_object(Bucket=bucket, Key=row["file"].removeprefix(f"s3://{bucket}/"))["Body"].read()
        assert hashlib.sha256(body).hexdigest() == row["sha256"]
    assert s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []) == []
    again = CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=op.tts_conn_id, destination=f"s3://{bucket}/audio/",
        dest_conn_id=aws_conn, items=texts, defaults=CAMB_DEFAULTS, deferrable=False, poll_interval=0.05,
    )  # fmt: skip
    assert again.execute(context(run_id="manual__2"))["cached"] == 5
    assert creates(emu) == 5


def test_the_wait_polls_oldest_first_so_each_task_is_asked_about_once_after_it_ended(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """While the vendor works, a round asks about the oldest pending task only, not every item:
    40 tasks pending ~1 s, polled every 0.1 s, cost ~10 polls each before (a full round each time).

    The number of rounds follows the wall time (a busy machine submits more slowly, so the oldest
    waits through more rounds), so the bound counts the rounds the run had time for instead of
    assuming an idle machine's ~10; a full round each time would still be ~40 polls per round."""
    emu.configure(default_delay=1.0)
    texts = [f"Sentence number {i} of the nightly batch." for i in range(40)]
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=texts,
               max_active_requests=4, poll_interval=0.1)  # fmt: skip
    started = time.monotonic()
    result = op.execute(context())
    rounds = math.ceil((time.monotonic() - started) / 0.1)
    assert result["stored"] == 40
    polls = sum(emu.stats()["polls_by_task"].values())
    print(f"status polls: {polls} in at most {rounds} rounds")
    # Each task: about one poll after it ended, whose status (and audio URL) its store uses; plus
    # one poll of the oldest per round while it was pending (about 10 rounds on an idle machine).
    assert polls <= 40 + rounds + 5, (polls, rounds)


def wait_in_order(hook: Any, ids: list[str], concurrency: int) -> dict[str, Any] | None:
    """``wait_for_all`` over ``ids`` submitted in that order, polled every 0.1 s; the hook closed after."""
    from airflow_provider_tts.batch.trigger import wait_for_all
    from airflow_provider_tts.waiting import WaitPolicy

    async def run() -> dict[str, Any] | None:
        try:
            return await wait_for_all(hook, "tts", {tid: float(n) for n, tid in enumerate(ids)},
                                      policy=WaitPolicy(poll_interval=0.1), started_at=0.0, deadline=None,
                                      concurrency=concurrency,
                                      log=SimpleNamespace(info=print, warning=print))  # fmt: skip
        finally:
            await hook.aclose()

    return asyncio.run(run())


def test_one_slow_answer_does_not_hold_back_the_polls_of_the_other_items(emu: Any, make_conn: ConnFactory) -> None:
    """After the oldest ended, polls go out with ``concurrency`` in flight as a sliding window: one
    answer that takes 1.5 s (the vendor's, simulated around the real hook) holds back no other poll.
    In groups that waited for their slowest, 15 of these 20 polls waited for it."""
    from airflow_provider_tts.hooks.tts import TtsHook

    ids = [emu.create_task("camb_ai", "tts", delay=0) for _ in range(20)]
    slow = ids[2]
    asked: dict[str, float] = {}

    class SlowOnce(TtsHook):
        async def aget_task_status(self, tts_task_id: str, kind: str = "tts") -> Any:
            asked[tts_task_id] = asyncio.get_running_loop().time()
            if tts_task_id == slow:
                await asyncio.sleep(1.5)
            return await super().aget_task_status(tts_task_id, kind)

    event = wait_in_order(SlowOnce(make_conn("camb_ai")), ids, concurrency=4)
    assert event == {"status": "done", "pending": 0, "succeeded": 20, "failed": 0, "errors": 0}
    late = [tid for tid in ids if asked[tid] - asked[slow] >= 1.0]
    assert late == []


def test_a_poll_asleep_in_its_backoff_lends_its_place_to_the_next_polls(emu: Any, make_conn: ConnFactory) -> None:
    """``concurrency`` bounds polls at work, not polls sleeping out a retry's backoff: with one, task 2's
    poll is refused (503) and waits 2 s before its retry; tasks 3 and 4 are asked meanwhile. Before,
    the sleeping poll held the only place, and at 1,000 items with 10 % faults the wait saw items end
    ~40 a second (``benchmarks/batch_vs_mapped.py``)."""
    from airflow_provider_tts.hooks.tts import TtsHook

    ids = [emu.create_task("camb_ai", "tts", delay=0) for _ in range(4)]

    class RefusedOnce(TtsHook):
        async def aget_task_status(self, tts_task_id: str, kind: str = "tts") -> Any:
            if tts_task_id == ids[1] and not refused:
                refused.append(tts_task_id)
                emu.inject("503", count=1, endpoint="status")
            return await super().aget_task_status(tts_task_id, kind)

    refused: list[str] = []

    hook = RefusedOnce(make_conn("camb_ai"), request_retry={"backoff": 2.0, "max_backoff": 2.0})
    event = wait_in_order(hook, ids, concurrency=1)
    assert event == {"status": "done", "pending": 0, "succeeded": 4, "failed": 0, "errors": 0}
    asked = [(next(n for n, tid in enumerate(ids) if tid in e["path"]) + 1, e["status"])
             for e in emu.requests() if e["endpoint"] == "status"]  # fmt: skip
    assert asked == [(1, 200), (2, 503), (3, 200), (4, 200), (2, 200)]


def test_a_create_asleep_in_its_backoff_lends_its_place_to_the_next_items(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """``max_active_requests`` bounds requests at work, not sleepers: with one, the first create is
    refused (503, so nothing was created) and its retry waits 2 s; the two other items are created
    meanwhile, and the refused one is sent again after them. Before, every item waited behind it."""
    emu.configure(default_delay=0)
    emu.inject("503", count=1, endpoint="create")
    op = batch(RevidTtsBatchToStorageOperator, make_conn("revid_tts"), tmp_path, items=["One.", "Two.", "Three."],
               max_active_requests=1, request_retry={"backoff": 2.0, "max_backoff": 2.0})  # fmt: skip
    assert op.execute(context())["stored"] == 3
    sent = [(e["time"], e["status"]) for e in emu.requests() if e["endpoint"] == "create"]
    assert [status for _, status in sent] == [503, 202, 202, 202]
    assert creates(emu) == 3
    age = {task["body"]["text"]: task["age_seconds"] for task in emu.tasks()}
    assert age["Two."] > age["Three."] > age["One."]  # the others went first, in order ...
    assert sent[3][0] - sent[0][0] >= 1.9  # ... while the refused one slept out its full backoff


def test_waiting_in_the_worker_stores_each_item_with_the_status_that_said_it_ended(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """A deferrable batch whose tasks end within ``wait_before_defer`` never defers: each item is
    stored when its poll says it ended, with that poll's audio URL, so no task is asked about twice
    (before: one more status request per item at store time)."""
    emu.configure(default_delay=0)
    texts = [f"Sentence {n} of a short batch." for n in range(12)]
    op = batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), tmp_path, items=texts, defaults=CAMB_DEFAULTS,
               deferrable=True, wait_before_defer=300, max_active_requests=4)  # fmt: skip
    result = op.execute(context())  # no TaskDeferred
    assert (result["stored"], result["cached"], result["failed"], result["requests"]) == (12, 0, 0, 12)
    assert [row["status"] for row in manifest(tmp_path)] == ["stored"] * 12
    assert sorted(emu.stats()["polls_by_task"].values()) == [1] * 12
    assert creates(emu) == 12
    assert not (tmp_path / STATE_FOLDER).exists()


def test_a_batch_stores_what_ended_while_it_waited_and_defers_only_the_rest(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """``wait_before_defer``: what ends within it is stored in the worker; the task then defers once,
    for the rest only (the record lists them alone), and the resumed task writes every row: the early
    ones as stored, with what they cost (a request cache hit would say "cached", spent nothing)."""
    emu.configure(default_delay=0)
    conn = make_conn("camb_ai")
    texts = [f"Quick sentence {n}." for n in range(5)] + [f"Slow sentence {n}. [emu:delay=inf]" for n in range(3)]
    # One create at a time: submission order is item order, so the quick ones are the oldest.
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=True,
               wait_before_defer=1.0, max_active_requests=1)  # fmt: skip
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context())
    slow = [task["task_id"] for task in emu.tasks() if "Slow" in str((task.get("body") or {}).get("text"))]
    quick = [task["task_id"] for task in emu.tasks() if task["task_id"] not in slow]
    _, kwargs = deferred.value.trigger.serialize()
    record = json.loads(next((tmp_path / STATE_FOLDER).rglob("pending.json")).read_text())
    assert sorted(task_id for task_id, _ in record["pending"].values()) == sorted(slow)
    assert sorted(record["done"]) == ["1", "2", "3", "4", "5"]
    assert len(list(tmp_path.glob("*.flac"))) == 5  # stored before the deferral

    emu.end_pending(*slow)

    async def first_event() -> Any:
        async for event in TtsBatchTrigger(**kwargs).run():
            return event.payload
        return None

    event = asyncio.run(first_event())
    assert (event["status"], event["succeeded"]) == ("done", 3)
    fresh = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS, deferrable=True)
    result = getattr(fresh, deferred.value.method_name)(context(), event=event)
    assert (result["stored"], result["cached"], result["failed"], result["requests"]) == (8, 0, 0, 8)
    assert [row["status"] for row in manifest(tmp_path)] == ["stored"] * 8
    assert all(emu.stats()["polls_by_task"][task_id] == 1 for task_id in quick)
    assert creates(emu) == 8


def test_the_oldest_waiting_task_is_polled_when_it_is_expected_done_then_less_often_until_the_schedule(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Once one task ended 10 s after its submission, a task submitted 0.1 s after it is polled
    ``HURRY_GAP`` later, not a whole interval (5 s) later; one that is still pending then is polled
    again 0.5, 1 and 2 s later, then goes back to the schedule. A scripted hook and a recording
    sleep: no clock is raced."""
    from airflow_provider_tts.batch import trigger as module
    from airflow_provider_tts.status import TtsTaskStatus
    from airflow_provider_tts.waiting import WaitPolicy

    answers = {"t1": ["succeeded"], "t2": ["pending", "succeeded"], "t3": ["pending"] * 5 + ["succeeded"]}
    slept: list[float] = []

    class Scripted:
        async def aget_task_status(self, tts_task_id: str, kind: str = "tts") -> TtsTaskStatus:
            state = answers[tts_task_id].pop(0)
            run = 1 if state == "succeeded" else None
            return TtsTaskStatus(api="camb_ai", kind="tts", tts_task_id=tts_task_id, state=state, vendor_status=state,
                                 run_id=run)  # fmt: skip

    async def recording_sleep(delay: float) -> None:
        slept.append(delay)

    monkeypatch.setattr(module.asyncio, "sleep", recording_sleep)
    now = module.time.time()
    pending = {"t1": now - 10.0, "t2": now - 9.9, "t3": now - 9.8}
    event = asyncio.run(module.wait_for_all(Scripted(), "tts", pending, policy=WaitPolicy(poll_interval=5),
                                            started_at=now, deadline=None, concurrency=1,
                                            log=SimpleNamespace(info=print, warning=print)))  # fmt: skip
    assert event == {"status": "done", "pending": 0, "succeeded": 3, "failed": 0, "errors": 0}
    assert len(slept) == 6
    assert slept[0] <= module.HURRY_GAP + 0.01  # t2: expected done 0.1 s on, polled HURRY_GAP later
    assert slept[1] <= module.HURRY_GAP + 0.01  # t3: its own first hurried poll (it misses)
    assert slept[2:5] == [module.HURRY_GAP, 2 * module.HURRY_GAP, 4 * module.HURRY_GAP]  # t3: sooner, less so
    assert slept[5] > 4.0  # t3 after HURRY_TRIES: back on the 5 s schedule
