"""One result shape (issue 22): every storing operator returns the same keys, whatever happened.

Against the emulator over loopback: each single-file storing operator on a fresh store and on a
request-cache hit (and a copy of cached audio under a new name) returns exactly
:data:`~airflow_provider_tts.results.STORED_FILE_KEYS`; a batch returns
:data:`~airflow_provider_tts.results.BATCH_RESULT_KEYS`, with its files' URIs up to the bound; and
docs/results.md, the one table, names exactly those keys.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts import results
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator, TtsAudioToStorageOperator
from airflow_provider_tts.results import BATCH_RESULT_KEYS, STORED_FILE_KEYS
from tests.conftest import FIELDS, ConnFactory
from tests.operators.conftest import ti_context
from tests.operators.test_batch import CAMB_DEFAULTS, batch, context, creates, manifest
from tests.operators.test_submit import FakeTI, StateStore
from tests.operators.test_text_to_storage import CLASSES
from tests.operators.test_text_to_storage import _op as one_task

DOCS = Path(__file__).resolve().parents[2] / "docs" / "results.md"


def _check_file(result: dict[str, Any], *, cached: bool) -> None:
    """The exact keys, in order, JSON values only, the file as described, ``cached`` and ``credits`` agreeing."""
    assert list(result) == list(STORED_FILE_KEYS)
    assert json.loads(json.dumps(result)) == result
    stored = Path(result["uri"].removeprefix("file://"))
    assert stored.stat().st_size == result["size_bytes"]
    assert hashlib.sha256(stored.read_bytes()).hexdigest() == result["sha256"]
    assert result["cached"] is cached
    if cached:
        assert (result["credits"], result["tts_task_id"]) == (0, None)


def _one_task_context(task_id: str = "speak") -> dict[str, Any]:
    return {"ti": FakeTI(task_id=task_id), "task_state_store": StateStore()}


@pytest.mark.parametrize("pair", list(CLASSES))
def test_one_task_operators_return_the_shape_fresh_cached_and_copied(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, pair: str
) -> None:
    api, _ = pair.split("/")
    conn, folder = make_conn(api), f"file://{tmp_path}/"
    fresh = one_task(CLASSES[pair], conn, folder, **FIELDS[pair]).execute(_one_task_context())
    _check_file(fresh, cached=False)
    assert fresh["tts_task_id"]
    assert fresh["fingerprint"].startswith("sha256:")
    assert fresh["credits"] is None  # the task APIs do not say what they charged

    hit = one_task(CLASSES[pair], conn, folder, **FIELDS[pair]).execute(_one_task_context())
    _check_file(hit, cached=True)
    assert (hit["uri"], hit["fingerprint"], hit["sha256"]) == (fresh["uri"], fresh["fingerprint"], fresh["sha256"])

    copied = one_task(CLASSES[pair], conn, folder, file_name="again", **FIELDS[pair]).execute(_one_task_context())
    _check_file(copied, cached=True)
    assert (copied["uri"] != fresh["uri"], copied["sha256"]) == (True, fresh["sha256"])
    assert sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values()) == 1


def test_the_stream_operator_returns_the_shape_fresh_cached_and_copied(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")

    def stream(**kw: Any) -> dict[str, Any]:
        op = CambTtsStreamToStorageOperator(
            task_id="speak", tts_conn_id=conn, destination=f"file://{tmp_path}/", text="Paid for once, returned alike.",
            language="en-us", voice_id=20303, output_format="wav", **kw,
        )  # fmt: skip
        result: dict[str, Any] = op.execute(ti_context())
        return result

    fresh = stream()
    _check_file(fresh, cached=False)
    assert fresh["tts_task_id"] is None
    assert isinstance(fresh["credits"], int)
    hit = stream()
    _check_file(hit, cached=True)
    copied = stream(file_name="again")
    _check_file(copied, cached=True)
    assert fresh["fingerprint"] == hit["fingerprint"] == copied["fingerprint"]
    assert copied["uri"] != fresh["uri"]


def test_the_storage_operator_returns_the_shape_with_no_request_known(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    for _ in range(2):  # the second store finds the identical file there (skip_if_identical)
        op = TtsAudioToStorageOperator(
            task_id="store", tts_task_id=task_id, tts_conn_id=conn, destination=f"file://{tmp_path}/",
            deferrable=False, poll_interval=0.05,
        )  # fmt: skip
        result = op.execute(ti_context())
        _check_file(result, cached=False)
        assert (result["tts_task_id"], result["fingerprint"], result["credits"]) == (task_id, None, None)


def test_the_batch_result_lists_the_files_up_to_the_bound(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = make_conn("camb_ai")
    texts = ["One river.", "Two birds.", "Three trains."]
    first = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=texts, defaults=CAMB_DEFAULTS)
    result = first.execute(context())
    assert list(result) == list(BATCH_RESULT_KEYS)
    assert result["files"] == [row["file"] for row in manifest(tmp_path)]  # item order
    assert result["files_truncated"] is False

    monkeypatch.setattr(results, "BATCH_RESULT_FILES", 2)
    again = batch(CambTtsBatchToStorageOperator, conn, tmp_path, items=[*texts, "Four lamps."], defaults=CAMB_DEFAULTS)
    result = again.execute(context(run_id="manual__2"))
    assert list(result) == list(BATCH_RESULT_KEYS)
    assert (result["stored"], result["cached"], creates(emu)) == (1, 3, 4)
    assert result["files"] == [row["file"] for row in manifest(tmp_path)][:2]  # cached and stored alike
    assert result["files_truncated"] is True


def test_the_one_table_names_exactly_the_keys() -> None:
    keys = re.findall(r"^\| `(\w+)` \|", DOCS.read_text(), flags=re.MULTILINE)
    assert sorted(keys) == sorted(set(STORED_FILE_KEYS) | set(BATCH_RESULT_KEYS))
