"""Paying exactly for what changed: the request cache at every edge the batch and the one-task operators meet.

Every test counts the vendor's creates on the emulator: the cache may only save money, and each edge
below once cost some (issue 21): identity by position, a cache that ignored the endpoint and trusted
sizes, a refusal paid for every night, names with audio extensions, refusals after paying, task ids
lost to a failing store, two runs at once.
"""

from __future__ import annotations

import csv
import hashlib
import json
import threading
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.batch import STATE_FOLDER
from airflow_provider_tts.cache import CACHE_FOLDER, Endpoint, RequestCache, cache_key
from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from airflow_provider_tts.exceptions import (
    TtsBatchItemsFailedPermanentlyError,
    TtsConfigError,
)
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator, RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from tests.conftest import TEST_KEY, ConnFactory
from tests.operators.test_batch import CAMB_DEFAULTS, batch, context, creates, manifest
from tests.operators.test_submit import StateStore

TEXTS = [f"Line {n} of the nightly file." for n in range(20)]


def _audio(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.suffix in (".wav", ".flac", ".mp3"))


def _csv(path: Path, rows: list[dict[str, Any]]) -> Path:
    with path.open("w", newline="") as out:
        writer = csv.DictWriter(out, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def _run(conn: str, folder: Path, run_id: str, **kw: Any) -> dict[str, Any]:
    kw.setdefault("defaults", CAMB_DEFAULTS)
    op = batch(CambTtsBatchToStorageOperator, conn, folder, **kw)
    result: dict[str, Any] = op.execute(context(run_id=run_id))
    return result


# ------------------------------------------------------------------------ identity is the request


def test_inserting_a_row_pays_for_it_alone_and_writes_no_second_file(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn, out = make_conn("camb_ai"), tmp_path / "out"
    source = _csv(tmp_path / "texts.csv", [{"text": t} for t in TEXTS])
    first = _run(conn, out, "r1", items_path=source.as_uri())
    assert (first["stored"], creates(emu)) == (20, 20)
    _csv(source, [{"text": "A new first line."}] + [{"text": t} for t in TEXTS])
    second = _run(conn, out, "r2", items_path=source.as_uri())
    assert (second["stored"], second["cached"], creates(emu)) == (1, 20, 21)
    assert len(_audio(out)) == 21  # every unchanged text kept its one file
    _csv(source, [{"text": t} for t in reversed(TEXTS[5:])])  # reordered, five removed
    third = _run(conn, out, "r3", items_path=source.as_uri())
    assert (third["cached"], creates(emu)) == (15, 21)
    assert len(_audio(out)) == 21


def test_the_same_text_twice_is_one_payment_and_one_file_with_a_row_per_position(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    result = _run(make_conn("camb_ai"), tmp_path, "r1", items=["Once.", "Twice.", "Once."])
    rows = manifest(tmp_path)
    assert (result["items"], creates(emu)) == (2, 2)
    assert [row["index"] for row in rows] == [1, 2, 3]
    assert rows[2]["file"] == rows[0]["file"]
    assert rows[2]["duplicate_of"] == 1


def test_a_key_or_file_name_with_an_audio_extension_is_found_again(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    items = [{"text": "Hello.", "key": "hello.flac"}, {"text": "Bye.", "file_name": "bye.flac"}]
    _run(conn, tmp_path, "r1", items=items)
    again = _run(conn, tmp_path, "r2", items=items)
    assert (again["cached"], creates(emu)) == (2, 2)
    assert _audio(tmp_path) == ["bye.flac", "hello.flac"]


def test_items_that_would_share_a_file_are_refused_before_paying(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    with pytest.raises(TtsConfigError, match=r"would be stored as 'intro\.flac' like item 1"):
        _run(make_conn("camb_ai"), tmp_path, "r1", items=[{"text": "a", "key": "intro"},
                                                          {"text": "b", "key": "intro.flac"}])  # fmt: skip
    assert emu.stats()["requests_total"] == 0


def test_a_renamed_item_is_copied_not_paid_again(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")
    _run(conn, tmp_path, "r1", items=[{"text": "The briefing.", "file_name": "monday"}])
    result = _run(conn, tmp_path, "r2", items=[{"text": "The briefing.", "file_name": "tuesday"}])
    assert (result["cached"], creates(emu)) == (1, 1)
    [monday, tuesday] = [tmp_path / name for name in _audio(tmp_path)]
    assert monday.read_bytes() == tuesday.read_bytes()


# ------------------------------------------------------------------------ a hit is the same request, confirmed


def test_another_endpoint_or_account_is_never_served_this_endpoints_audio(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    _run(make_conn("camb_ai"), tmp_path, "r1", items=["Made on the first emulator."])
    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=0.3)) as other:
        import os

        os.environ["AIRFLOW_CONN_CAMB_OTHER"] = json.dumps(
            {"conn_type": "camb_ai", "host": other.camb_base_url, "password": TEST_KEY,
             "extra": {"retry_backoff": 0.01, "read_timeout": 5}}
        )  # fmt: skip
        try:
            result = _run("camb_other", tmp_path, "r2", items=["Made on the first emulator."])
        finally:
            del os.environ["AIRFLOW_CONN_CAMB_OTHER"]
        assert result["stored"] == 1  # paid on its own endpoint
        assert sum(other.stats()["creates"].get("camb_ai", {}).values()) == 1
    a = Endpoint.of("camb_ai", "https://client.camb.ai/apis", "sk-account-a")
    b = Endpoint.of("camb_ai", "https://client.camb.ai/apis", "sk-account-b")
    assert cache_key("sha256:x", a) != cache_key("sha256:x", b)
    assert "sk-account" not in a.ident()


def test_other_bytes_of_the_same_size_are_not_a_hit(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")
    _run(conn, tmp_path, "r1", items=["Keep me."])
    [name] = _audio(tmp_path)
    size = (tmp_path / name).stat().st_size
    (tmp_path / name).write_bytes(b"RIFF" + b"\x01" * (size - 4))
    result = _run(conn, tmp_path, "r2", items=["Keep me."])
    assert (result["cached"], result["stored"], creates(emu)) == (0, 1, 2)
    row = manifest(tmp_path)[0]
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() == row["sha256"]


def test_reuse_cached_false_pays_for_everything_again(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")
    _run(conn, tmp_path, "r1", items=["One.", "Two."])
    assert _run(conn, tmp_path, "r2", items=["One.", "Two."], reuse_cached=False)["stored"] == 2
    assert creates(emu) == 4


def test_a_folder_written_by_0_1_is_adopted_and_not_paid_again(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """0.1 named files by position and wrote ``<file>.tts.json``: the next run finds them, in place."""
    conn = make_conn("camb_ai")
    _run(conn, tmp_path, "r1", items=["First text.", "Second text."])
    for row, legacy in zip(manifest(tmp_path), ["00001-first-text", "00002-second-text"], strict=True):
        old = Path(row["file"].removeprefix("file://"))
        renamed = old.with_name(legacy + old.suffix)
        old.rename(renamed)
        sidecar = {"version": 1, "fingerprint": row["fingerprint"], "size_bytes": row["size_bytes"],
                   "sha256": row["sha256"], "content_type": "audio/flac"}  # fmt: skip
        (tmp_path / f"{renamed.name}.tts.json").write_text(json.dumps(sidecar))
    for entry in (tmp_path / CACHE_FOLDER).glob("*.json"):
        entry.unlink()
    again = _run(conn, tmp_path, "r2", items=["First text.", "Second text."])
    assert (again["cached"], creates(emu)) == (2, 2)
    assert [Path(r["file"]).stem for r in manifest(tmp_path)] == ["00001-first-text", "00002-second-text"]
    assert len(_audio(tmp_path)) == 2


# ------------------------------------------------------------------------ what is not paid for again


def test_a_permanently_refused_item_is_not_paid_for_every_night_unless_asked(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    items = ["Fine.", "Bad. [emu:outcome=error,reason=HARMFUL_CONTENT_DETECTED]"]
    for night in ("n1", "n2"):
        with pytest.raises(TtsBatchItemsFailedPermanentlyError):
            _run(conn, tmp_path, night, items=items)
    assert creates(emu) == 2  # night 2 paid for nothing
    refused = manifest(tmp_path)[1]
    assert (refused["status"], refused["retryable"]) == ("failed", False)
    assert "HARMFUL_CONTENT_DETECTED" in refused["error"]
    assert "retry_failed_items=True" in refused["error"]
    with pytest.raises(TtsBatchItemsFailedPermanentlyError):
        _run(conn, tmp_path, "n3", items=items, retry_failed_items=True)
    assert creates(emu) == 3


def test_durable_false_is_refused_when_the_dag_is_parsed(make_conn: ConnFactory, tmp_path: Path) -> None:
    with pytest.raises(TtsConfigError, match="durable=False is not offered"):
        batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), tmp_path, items=["a."], durable=False)


# ------------------------------------------------------------------------ refusals before paying


@pytest.mark.parametrize("manifest_name", ["../escaped.jsonl", "sub/manifest.jsonl", ".hidden.jsonl"])
def test_a_manifest_name_outside_the_folder_is_refused_at_parse(
    make_conn: ConnFactory, tmp_path: Path, manifest_name: str
) -> None:
    with pytest.raises(TtsConfigError, match="manifest_name"):
        batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), tmp_path, items=["a."],
              manifest_name=manifest_name)  # fmt: skip


def test_overwrite_fail_refuses_before_paying_and_does_not_use_up_retries(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    (tmp_path / "intro.wav").write_bytes(b"RIFF-someone-elses")
    with pytest.raises(TtsConfigError, match=r"stored as 'intro\.wav', which .* already holds"):
        _run(make_conn("camb_ai"), tmp_path, "r1", items=[{"text": "Hi there.", "key": "intro"}], overwrite="fail")
    assert emu.stats()["requests_total"] == 0
    assert (tmp_path / "intro.wav").read_bytes() == b"RIFF-someone-elses"


def test_one_task_overwrite_fail_on_a_folder_refuses_before_paying(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    (tmp_path / "briefing.flac").write_bytes(b"yesterday")
    op = CambTtsToStorageOperator(task_id="speak", tts_conn_id=make_conn("camb_ai"), text="Hello.", voice_id=1,
                                  language=1, destination=tmp_path.as_uri() + "/", file_name="briefing",
                                  overwrite="fail", deferrable=False, poll_interval=0.05)  # fmt: skip
    with pytest.raises(TtsConfigError, match=r"already holds 'briefing\.flac'"):
        op.execute({"ti": SimpleNamespace(dag_id="d", task_id="speak", run_id="r", map_index=-1, try_number=1)})
    assert emu.stats()["requests_total"] == 0


# ------------------------------------------------------------------------ the record never loses a payment


def test_task_ids_the_cache_would_not_take_are_kept_and_stored_by_the_next_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = make_conn("camb_ai")
    store = StateStore()
    ti = SimpleNamespace(dag_id="nightly", task_id="speak_all", run_id="r1", map_index=-1, try_number=1)
    real = RequestCache.submitted

    def refuse(self: RequestCache, fingerprint: str, tts_task_id: str, **_: Any) -> None:
        raise TtsStorageError("the store refused the write")

    monkeypatch.setattr(RequestCache, "submitted", refuse)
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=["One.", "Two.", "Three."], defaults=CAMB_DEFAULTS)
    monkeypatch.setattr("airflow_provider_tts.batch.submit.RECORD_BACKOFF", 0.01)
    with pytest.raises(TtsStorageError, match="kept in the task state store"):
        op.execute({"ti": ti, "task_state_store": store})
    assert creates(emu) == 3
    monkeypatch.setattr(RequestCache, "submitted", real)
    ti.try_number = 2
    again = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=["One.", "Two.", "Three."],
                  defaults=CAMB_DEFAULTS)  # fmt: skip
    result = again.execute({"ti": ti, "task_state_store": store})
    assert (result["stored"], creates(emu)) == (3, 3)
    assert store == {}


def test_an_unreadable_wait_list_fails_the_try_instead_of_paying_again(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    op = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=["One.", "Two."], defaults=CAMB_DEFAULTS,
               deferrable=True)  # fmt: skip
    with pytest.raises(TaskDeferred):
        op.execute(context())
    [wait_list] = (tmp_path / STATE_FOLDER).rglob("pending.json")
    wait_list.write_text("{garbled")
    with pytest.raises(TtsStorageError, match="unreadable"):
        op.execute_complete(context(), {"status": "done", "pending": 0})
    assert creates(emu) == 2


def test_items_changed_while_the_task_waited_fail_clearly(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("One.\nTwo.\n")
    out = tmp_path / "out"
    op = batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), out, items_path=source.as_uri(),
               defaults=CAMB_DEFAULTS, deferrable=True)  # fmt: skip
    with pytest.raises(TaskDeferred):
        op.execute(context())
    source.write_text("One.\nAn edited two.\n")
    with pytest.raises(TtsConfigError, match="the items changed while this task instance ran"):
        op.execute_complete(context(), {"status": "done", "pending": 0})
    assert creates(emu) == 2


# ------------------------------------------------------------------------ two runs at once


def test_two_runs_into_one_folder_at_once_pay_once_per_text(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")
    texts = [f"Concurrent text {n}." for n in range(24)]
    emu.configure(default_delay=1.0)
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(run_id: str) -> None:
        try:
            results[run_id] = _run(conn, tmp_path, run_id, items=texts, max_active_requests=4)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(run_id,)) for run_id in ("scheduled", "manual")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=240)
    assert errors == []
    assert creates(emu) == 24
    for result in results.values():
        assert result["stored"] + result["cached"] == 24
    assert len(_audio(tmp_path)) == 24


# ------------------------------------------------------------------------ CSV and the one-task operators


def test_csv_cells_are_read_as_the_fields_types(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    source = _csv(tmp_path / "texts.csv", [{"text": "Zero one two.", "voice_id": "20303", "language": "1",
                                            "gender": "2", "key": "007"}])  # fmt: skip
    out = tmp_path / "out"
    batch(CambTtsBatchToStorageOperator, make_conn("camb_ai"), out, items_path=source.as_uri()).execute(context())
    [task] = emu.tasks()
    assert {k: task["body"][k] for k in ("voice_id", "language", "gender")} == {"voice_id": 20303, "language": 1,
                                                                                "gender": 2}  # fmt: skip
    assert manifest(out)[0]["key"] == "007"  # a key stays text


def test_revid_batches_are_cached_across_runs_whatever_client_reference_each_run_sends(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")
    for run_id in ("r1", "r2"):
        batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=["Same words."]).execute(context(run_id=run_id))
    assert creates(emu) == 1


def _one_task(conn: str, folder: Path, **kw: Any) -> CambTtsToStorageOperator:
    return CambTtsToStorageOperator(task_id="speak", tts_conn_id=conn, text="The daily briefing.", voice_id=1,
                                    language=1, destination=folder.as_uri() + "/", deferrable=False,
                                    poll_interval=0.05, **kw)  # fmt: skip


def test_the_one_task_operators_use_the_same_cache(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")

    def ctx(run_id: str) -> dict[str, Any]:
        ti = SimpleNamespace(dag_id="daily", task_id="speak", run_id=run_id, map_index=-1, try_number=1)
        return {"ti": ti, "task_state_store": StateStore()}

    first = _one_task(conn, tmp_path).execute(ctx("r1"))
    again = _one_task(conn, tmp_path).execute(ctx("r2"))  # a same-day re-run pays nothing
    assert (creates(emu), again["uri"], again["sha256"]) == (1, first["uri"], first["sha256"])
    renamed = _one_task(conn, tmp_path, file_name="briefing").execute(ctx("r3"))
    assert creates(emu) == 1  # the new name is a copy of the audio
    assert Path(renamed["uri"]).name.startswith("briefing.")
    assert _one_task(conn, tmp_path, reuse_cached=False).execute(ctx("r4"))["sha256"]
    assert creates(emu) == 2


@pytest.mark.parametrize("scheme", ["file", "s3"])
def test_of_two_claims_at_once_exactly_one_wins(scheme: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """The claim is a create-if-absent: a hard link locally, ``If-None-Match: *`` on S3."""
    from airflow.sdk import ObjectStoragePath

    if scheme == "s3":
        bucket, aws_conn = request.getfixturevalue("bucket"), request.getfixturevalue("aws_conn")
        path = ObjectStoragePath(f"s3://{bucket}/claims/one.json", conn_id=aws_conn)
    else:
        path = ObjectStoragePath(f"file://{tmp_path}/claims/one.json")
    assert sorted(claim_race(path)) == [False] * 7 + [True]


def claim_race(path: Any, claimants: int = 8) -> list[bool]:
    """What ``create_small`` answered each of ``claimants`` threads claiming ``path`` at the same moment."""
    from airflow_provider_tts.objects import create_small

    wins: list[bool] = []
    barrier = threading.Barrier(claimants)

    def claim(n: int) -> None:
        barrier.wait()
        wins.append(create_small(path, json.dumps({"claimant": n}).encode()))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(claimants)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return wins


def test_find_all_lists_the_entries_once_and_reads_only_those_that_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A 1,000-text first run read 1,000 absent entries one by one (105 s before its first create, found by
    the chaos run, RELIABILITY D3): one LIST now tells which exist, and only those are read."""
    from airflow.sdk import ObjectStoragePath

    cache = RequestCache(ObjectStoragePath(f"file://{tmp_path}/"), Endpoint.of("camb_ai", "https://x/apis", "k"), "o")
    fingerprints = [f"request-{i}" for i in range(50)]
    for fingerprint in fingerprints[:2]:
        assert cache.claim(fingerprint) is None
    reads: list[str] = []
    real_read = RequestCache.read

    def counting_read(self: RequestCache, fingerprint: str) -> Any:
        reads.append(fingerprint)
        return real_read(self, fingerprint)

    monkeypatch.setattr(RequestCache, "read", counting_read)
    found = cache.find_all(fingerprints)
    assert sorted(reads) == sorted(fingerprints[:2])
    assert [found[fp][1]["state"] for fp in fingerprints[:2]] == ["claimed", "claimed"]
    assert all(found[fp] == (None, None) for fp in fingerprints[2:])
