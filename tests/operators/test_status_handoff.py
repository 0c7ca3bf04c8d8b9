"""A sensor's status handed to ``TtsAudioToStorageOperator`` as ``tts_task_id`` (``sensor.output``).

The sensor's last poll already read where the audio is. Handed that status, the operator fetches
the audio without asking the vendor's status endpoint again (Camb.ai's run id is all a result needs);
a RevidAPI URL, whose signature XCom leaves out, is polled for afresh as any status from XCom is.
Against the emulator over loopback, counting its requests per endpoint.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from tests.conftest import PAIRS, ConnFactory
from tests.operators.conftest import ti_context


def _sensed(emu: Any, conn_id: str, kind: str, task_id: str) -> dict[str, Any]:
    """What a ``TtsTaskSensor`` pushes to XCom for ``task_id``, polling the emulator as a DAG would."""
    sensor = TtsTaskSensor(task_id="wait", tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, poke_interval=0.05)
    status = sensor.execute(ti_context())
    assert isinstance(status, dict)
    assert status["state"] == "succeeded"
    return status


def _op(conn_id: str, kind: str, handed: Any, destination: str) -> TtsAudioToStorageOperator:
    return TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=conn_id, tts_task_id=handed, kind=kind, destination=destination,
        deferrable=False, poll_interval=0.05,
    )  # fmt: skip


def _requests(emu: Any) -> dict[str, int]:
    return dict(emu.stats()["requests_by_endpoint"])


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_the_sensors_status_is_stored_without_asking_camb_again(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, kind: str
) -> None:
    conn_id = make_conn(api)
    task_id = emu.create_task(api, kind, delay=0, pending_polls=1)
    handed = _sensed(emu, conn_id, kind, task_id)
    polls_by_the_sensor = emu.stats()["polls_by_task"][task_id]
    before = _requests(emu)

    result = _op(conn_id, kind, handed, f"file://{tmp_path}/").execute(ti_context())

    # Camb.ai: the run id is all its result endpoint needs. RevidAPI: the URL came through XCom without
    # its signature (TtsTaskStatus), so one poll fetches it signed again.
    expected_polls = 0 if api == "camb_ai" else 1
    assert emu.stats()["polls_by_task"][task_id] - polls_by_the_sensor == expected_polls
    after = _requests(emu)
    assert {k: after[k] - before.get(k, 0) for k in after if after[k] != before.get(k, 0)}.keys() <= {
        "status", "result", "storage"
    }  # fmt: skip
    stored = Path(result["uri"].removeprefix("file://"))
    assert result["tts_task_id"] == task_id
    assert result["sha256"] == hashlib.sha256(stored.read_bytes()).hexdigest()


def test_a_pending_status_handed_over_is_waited_for_as_its_id(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn_id = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0, pending_polls=2)
    pending = {"api": "camb_ai", "kind": "tts", "tts_task_id": task_id, "state": "pending", "vendor_status": "PENDING"}
    result = _op(conn_id, "tts", pending, f"file://{tmp_path}/").execute(ti_context())
    assert emu.stats()["polls_by_task"][task_id] == 3  # two pending answers, then the success
    assert result["tts_task_id"] == task_id


@pytest.mark.parametrize(
    ("handed", "expected"),
    [
        ({"tts_task_id": "t-1"}, r"not a task status \(.*TtsTaskStatus"),
        ({"api": "camb_ai", "kind": "tts", "tts_task_id": "t-1", "state": "done", "vendor_status": "x"},
         r"not a task status \(.*state"),
        ({"api": "camb_ai", "kind": "tts", "tts_task_id": "t-1", "state": "succeeded", "vendor_status": "SUCCESS"},
         r"not a task status \(.*run_id or an audio_url"),
        ({"api": "revid_tts", "kind": "tts", "tts_task_id": "t-1", "state": "succeeded", "vendor_status": "completed",
          "audio_url": "http://127.0.0.1:1/a.wav"}, r"status of a revid_tts 'tts' task \('t-1'\).*camb_ai 'tts'"),
        ({"api": "camb_ai", "kind": "text-to-sound", "tts_task_id": "t-1", "state": "succeeded",
          "vendor_status": "SUCCESS", "run_id": 7}, r"camb_ai 'text-to-sound' task .*camb_ai 'tts'"),
    ],
    ids=["no-fields", "unknown-state", "success-without-audio", "other-vendor", "other-kind"],
)  # fmt: skip
def test_a_mapping_that_is_not_this_tasks_status_is_refused_before_any_request(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, handed: dict[str, Any], expected: str
) -> None:
    conn_id = make_conn("camb_ai")
    before = _requests(emu)
    with pytest.raises(TtsConfigError, match=expected):
        _op(conn_id, "tts", handed, f"file://{tmp_path}/out/").execute(ti_context())
    assert _requests(emu) == before
    assert not (tmp_path / "out").exists()
