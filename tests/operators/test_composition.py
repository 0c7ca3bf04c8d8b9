"""Composing submit, sensor and store: ``submitted=`` instead of repeating the connection id and kind.

Parse-time only (no requests): what a downstream task reads from its upstream ``TtsSubmitOperator``,
that it survives DAG serialization, and that contradictions are refused naming both values.
"""

from __future__ import annotations

import json
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor

START = pendulum.datetime(2026, 1, 1, tz="UTC")


def _submit(**kw: Any) -> TtsSubmitOperator:
    return TtsSubmitOperator(task_id="submit", tts_conn_id="revid_tts_x", kind="srt-to-speech", srt="{{ x }}", **kw)


def test_sensor_and_store_take_connection_kind_and_id_from_the_submit() -> None:
    from tests._airflow import dag_serialization

    DagSerialization = dag_serialization()
    with DAG("composed", schedule=None, start_date=START) as dag:
        submit = _submit()
        wait = TtsTaskSensor(task_id="wait", submitted=submit, poll_interval=7)
        store = TtsAudioToStorageOperator(task_id="store", submitted=submit, destination="file:///tmp/out/")
    for task in (wait, store):
        assert (task.tts_conn_id, task.kind) == ("revid_tts_x", "srt-to-speech")
        assert task.upstream_task_ids == {"submit"}
        assert "xcom_pull(task_ids='submit'" in str(task.tts_task_id)
    assert wait.poke_interval == 7.0
    restored = DagSerialization.from_dict(json.loads(json.dumps(DagSerialization.to_dict(dag))))
    assert restored.task_dict["store"].kind == "srt-to-speech"
    assert restored.task_dict["wait"].tts_conn_id == "revid_tts_x"


def test_the_old_names_still_work_with_their_defaults() -> None:
    wait = TtsTaskSensor(task_id="wait", tts_task_id="abc")
    store = TtsAudioToStorageOperator(task_id="store", tts_task_id="abc", kind="text-to-sound", destination="/x/")
    assert (wait.tts_conn_id, wait.kind) == ("camb_ai_default", "tts")
    assert (store.tts_conn_id, store.kind) == ("camb_ai_default", "text-to-sound")


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({}, "needs tts_task_id (the vendor's task id) or submitted"),
        ({"submitted": "submit"}, "submitted must be the TtsSubmitOperator whose task to wait for, got str"),
        ({"with_submit": True, "tts_task_id": "abc"}, "give tts_task_id or submitted, not both"),
        (
            {"with_submit": True, "kind": "tts"},
            "kind='tts' contradicts kind='srt-to-speech' of the submit task 'submit'",
        ),
        ({"with_submit": True, "tts_conn_id": "other"}, "tts_conn_id='other' contradicts tts_conn_id='revid_tts_x'"),
    ],
)
def test_contradictions_fail_at_parse_time(kwargs: dict[str, Any], fragment: str) -> None:
    if kwargs.pop("with_submit", False):
        kwargs["submitted"] = _submit()
    with pytest.raises(TtsConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TtsTaskSensor(task_id="wait", **kwargs)
    with pytest.raises(TtsConfigError, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        TtsAudioToStorageOperator(task_id="store", destination="file:///tmp/out/", **kwargs)


def test_a_mapped_submit_is_refused_with_the_way_to_map_the_store() -> None:
    with DAG("mapped", schedule=None, start_date=START):
        submit = TtsSubmitOperator.partial(task_id="submit", kind="tts").expand(text=["a", "b"])
        with pytest.raises(TtsConfigError, match=r"map this task too, with \.expand\(tts_task_id=submit\.output\)"):
            TtsAudioToStorageOperator(task_id="store", submitted=submit, destination="file:///tmp/out/")  # type: ignore[arg-type]
