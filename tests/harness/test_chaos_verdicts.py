"""The chaos run's verdict on a batch that a kill left with uncertain submits (BA4, R5').

A worker killed during the batch's submit phase leaves the create calls it had in flight
unanswered; the retry refuses to pay for them again, writes its manifest and fails the task
(``max_failed_items=0``). That is the designed outcome, as it is for a one-task operator's
``TtsSubmitUncertainError``, so the harness must count those rows as uncertain submits and nothing
else, and still hold every other row to "stored once, byte-identical". A real run meets this only
when a kill lands in the submit phase (it did once, on a loaded machine); here the harness's two
readers are given what such a run leaves: its manifest and its task log.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from airflow_provider_tts.batch.manifest import uncertain_message
from tools.chaos import UNCERTAIN_ROW, _batch_uncertain_rows, _failed_tasks

#: What the batch writes in the manifest for an item whose create call's answer was lost.
UNCERTAIN = uncertain_message({"owner": "try-1"}, "try-1")


class _Bucket:
    """``get_object`` of a bucket holding only the given keys (a missing one raises, as boto3's would)."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict[str, Any]:
        return {"Body": io.BytesIO(self.objects[Key])}


def _manifest(*rows: dict[str, Any]) -> _Bucket:
    return _Bucket({"batch/manifest.jsonl": b"".join(json.dumps(row).encode() + b"\n" for row in rows)})


def test_the_phrase_is_the_batchs_own() -> None:
    assert UNCERTAIN_ROW in UNCERTAIN
    assert UNCERTAIN_ROW in uncertain_message({"owner": "another", "error": "ReadTimeout"}, "try-1")


def test_rows_failed_only_as_uncertain_submits_are_counted() -> None:
    s3 = _manifest(
        {"index": 1, "status": "stored"},
        {"index": 2, "status": "failed", "error": UNCERTAIN},
        {"index": 3, "status": "cached"},
        {"index": 4, "status": "failed", "error": UNCERTAIN},
    )
    assert _batch_uncertain_rows(s3) == [2, 4]


def test_any_other_failure_makes_none_of_them_excusable() -> None:
    s3 = _manifest(
        {"index": 1, "status": "failed", "error": UNCERTAIN},
        {"index": 2, "status": "failed", "error": "HTTP 500 from the storage host"},
    )
    assert _batch_uncertain_rows(s3) == []


def test_no_manifest_is_no_excuse() -> None:
    assert _batch_uncertain_rows(_Bucket({})) == []


def _deployment(tmp_path: Path, log_text: str) -> Any:
    run_id = "manual__1"
    folder = tmp_path / "logs" / "dag_id=chaos_batch" / f"run_id={run_id}" / "task_id=speak_all"
    folder.mkdir(parents=True)
    (folder / "attempt=2.log").write_text(log_text)
    ti = {"state": "failed", "task_id": "speak_all", "map_index": -1, "try_number": 2}
    return SimpleNamespace(home=tmp_path, task_instances=lambda dag_id, run: [ti] if dag_id == "chaos_batch" else [])


def test_a_batch_failed_by_its_uncertain_rows_counts_one_per_row(tmp_path: Path) -> None:
    af = _deployment(tmp_path, "TtsBatchItemsFailedPermanentlyError: 2 of 60 items failed (max_failed_items=0)")
    uncertain, other = _failed_tasks(af, {"batch": "manual__1"}, [7, 9])
    assert uncertain == {"batch": ["speak_all[-1] row 7", "speak_all[-1] row 9"]}
    assert other == {}


def test_a_batch_failed_otherwise_is_a_problem(tmp_path: Path) -> None:
    af = _deployment(tmp_path, "TtsStorageError: could not write the manifest")
    uncertain, other = _failed_tasks(af, {"batch": "manual__1"}, [7])
    assert uncertain == {}
    assert other == {"batch": ["speak_all[-1]"]}
    # and items failed for another reason leave no rows to excuse it with
    af = _deployment(tmp_path / "b", "TtsBatchItemsFailedPermanentlyError: 1 of 60 items failed")
    assert _failed_tasks(af, {"batch": "manual__1"}, []) == ({}, {"batch": ["speak_all[-1]"]})
