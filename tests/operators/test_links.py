"""Operator extra links (issue 25): the URL per scheme, how it is kept, and every storing operator keeping it.

The URL building is pure and tested per scheme; the S3 region and endpoint come from an ``aws``
connection (env vars here, nothing is called); the storing operators run against the emulator over
loopback (and moto for s3://) with a task instance that records its XCom pushes. The real
api-server answering ``.../links`` is ``tests/slow/test_links.py``.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.sdk import DAG, ObjectStoragePath

from airflow_provider_tts.get_provider_info import get_provider_info
from airflow_provider_tts.links import (
    BatchManifestLink,
    PersistedLink,
    StoredAudioLink,
    link_for,
    s3_console_facts,
    storage_url,
)
from airflow_provider_tts.operators.batch import BaseTextBatchToStorageOperator, CambTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import (
    BaseTextToStorageOperator,
    RevidTtsToStorageOperator,
)
from airflow_provider_tts.operators.tts import (
    CambTtsStreamToStorageOperator,
    TtsAudioToStorageOperator,
    TtsSubmitOperator,
)
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from tests._airflow import dag_serialization
from tests.conftest import TEST_KEY, ConnFactory
from tests.operators.test_submit import StateStore

CONSOLE = "https://console.aws.amazon.com/s3"


@pytest.mark.parametrize(
    ("uri", "kwargs", "expected"),
    [
        ("s3://bkt/audio/a.wav", {}, f"{CONSOLE}/object/bkt?prefix=audio/a.wav"),
        (
            "s3://bkt/audio/a.wav",
            {"region": "eu-west-1"},
            "https://eu-west-1.console.aws.amazon.com/s3/object/bkt?region=eu-west-1&prefix=audio/a.wav",
        ),
        ("s3a://bkt/a b/c+d#e.wav", {}, f"{CONSOLE}/object/bkt?prefix=a%20b/c%2Bd%23e.wav"),
        ("s3://bkt/out", {"folder": True}, f"{CONSOLE}/buckets/bkt?prefix=out/"),
        ("s3://bkt/out/", {"folder": True}, f"{CONSOLE}/buckets/bkt?prefix=out/"),
        ("s3://bkt", {"folder": True}, f"{CONSOLE}/buckets/bkt"),
        (
            "s3://bkt/a.wav",
            {"region": "cn-north-1"},
            "https://cn-north-1.console.amazonaws.cn/s3/object/bkt?region=cn-north-1&prefix=a.wav",
        ),
        (
            "s3://bkt/a.wav",
            {"region": "us-gov-west-1"},
            "https://us-gov-west-1.console.amazonaws-us-gov.com/s3/object/bkt?region=us-gov-west-1&prefix=a.wav",
        ),
        # Not AWS (MinIO, LocalStack, moto): no console to point at, the URI itself.
        ("s3://bkt/a.wav", {"endpoint_url": "http://127.0.0.1:9000", "region": "us-east-1"}, "s3://bkt/a.wav"),
        ("gs://bkt/audio/a b.wav", {}, "https://console.cloud.google.com/storage/browser/_details/bkt/audio/a%20b.wav"),
        ("gcs://bkt/out/", {"folder": True}, "https://console.cloud.google.com/storage/browser/bkt/out"),
        ("abfs://container/audio/a.wav", {}, "abfs://container/audio/a.wav"),
        ("az://container/out", {"folder": True}, "az://container/out"),
        ("file:///data/audio/a b#1.wav", {}, "file:///data/audio/a%20b%231.wav"),
        ("local:///data/audio/a.wav", {}, "file:///data/audio/a.wav"),
        ("/data/audio/a.wav", {}, "file:///data/audio/a.wav"),
        ("file:///data/out", {"folder": True}, "file:///data/out"),
        ("memory://bkt/a.wav", {}, "memory://bkt/a.wav"),
    ],
)
def test_the_url_of_each_scheme(uri: str, kwargs: dict[str, Any], expected: str) -> None:
    assert storage_url(uri, **kwargs) == expected


def test_region_and_endpoint_come_from_the_s3_connection(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_AWS_EU", json.dumps({"conn_type": "aws", "extra": {"region_name": "eu-west-1"}}))
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_MINIO",
        json.dumps({"conn_type": "aws", "password": "s3cr3t", "extra": {"endpoint_url": "http://127.0.0.1:9000"}}),
    )
    assert s3_console_facts("aws_eu") == ("eu-west-1", None)
    assert s3_console_facts("aws_minio") == (None, "http://127.0.0.1:9000")
    assert s3_console_facts("no_such_connection") == (None, None)
    eu = link_for(ObjectStoragePath("s3://bkt/audio/a.wav", conn_id="aws_eu"))
    assert eu == "https://eu-west-1.console.aws.amazon.com/s3/object/bkt?region=eu-west-1&prefix=audio/a.wav"
    minio = link_for(ObjectStoragePath("s3://bkt/out", conn_id="aws_minio"), folder=True)
    assert minio == "s3://bkt/out"  # no connection id, no credentials


class RecordingTI:
    """A task instance that records what it pushes to XCom."""

    dag_id, task_id, run_id, map_index, try_number = "links", "speak", "manual__1", -1, 1

    def __init__(self) -> None:
        self.pushed: dict[str, Any] = {}

    def xcom_push(self, key: str, value: Any) -> None:
        self.pushed[key] = value


def test_persist_keeps_the_url_on_the_operator_and_pushes_it(tmp_path: Path) -> None:
    op = SimpleNamespace(do_xcom_push=True)
    ti = RecordingTI()
    url = StoredAudioLink.persist({"ti": ti}, op, ObjectStoragePath(f"file://{tmp_path}/a.wav"))  # type: ignore[arg-type]
    assert url == f"file://{tmp_path}/a.wav"
    assert ti.pushed == {"tts_link_stored_audio": url}
    assert StoredAudioLink().get_link(op, ti_key=ti) == url  # type: ignore[arg-type]
    assert StoredAudioLink().xcom_key == "tts_link_stored_audio"
    assert BatchManifestLink().get_link(op, ti_key=ti) != url  # its own key


def test_without_do_xcom_push_the_task_runner_still_gets_the_url(tmp_path: Path) -> None:
    op = SimpleNamespace(do_xcom_push=False)
    ti = RecordingTI()
    url = StoredAudioLink.persist({"ti": ti}, op, ObjectStoragePath(f"file://{tmp_path}/a.wav"))  # type: ignore[arg-type]
    assert ti.pushed == {}
    assert StoredAudioLink().get_link(op, ti_key=ti) == url  # type: ignore[arg-type]


def test_a_failed_push_never_fails_the_task(tmp_path: Path) -> None:
    class BrokenTI(RecordingTI):
        def xcom_push(self, key: str, value: Any) -> None:
            raise RuntimeError("supervisor gone")

    op = SimpleNamespace(do_xcom_push=True)
    url = StoredAudioLink.persist({"ti": BrokenTI()}, op, ObjectStoragePath(f"file://{tmp_path}/a.wav"))  # type: ignore[arg-type]
    assert StoredAudioLink().get_link(op, ti_key=RecordingTI()) == url  # type: ignore[arg-type]


def test_get_link_reads_the_xcom_when_the_operator_kept_nothing_and_never_raises(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from airflow.providers.common.compat import sdk as shims

    asked: list[str] = []

    def get_value(*, ti_key: Any, key: str) -> Any:
        asked.append(key)
        return "https://console.cloud.google.com/storage/browser/_details/b/a.wav"

    monkeypatch.setattr(shims.XCom, "get_value", get_value)
    op = SimpleNamespace()
    assert StoredAudioLink().get_link(op, ti_key=RecordingTI()).endswith("/b/a.wav")  # type: ignore[arg-type]
    assert asked == ["tts_link_stored_audio"]

    def broken(**_: Any) -> Any:
        raise RuntimeError("no supervisor")

    monkeypatch.setattr(shims.XCom, "get_value", broken)
    assert StoredAudioLink().get_link(op, ti_key=RecordingTI()) == ""  # type: ignore[arg-type]
    monkeypatch.setattr(shims.XCom, "get_value", lambda **_: None)
    assert StoredAudioLink().get_link(op, ti_key=RecordingTI()) == ""  # type: ignore[arg-type]


def test_every_storing_operator_lists_the_link_and_the_provider_declares_it() -> None:
    for cls in (TtsAudioToStorageOperator, CambTtsStreamToStorageOperator, BaseTextToStorageOperator,
                *BaseTextToStorageOperator.__subclasses__()):  # fmt: skip
        assert [type(link) for link in cls.operator_extra_links] == [StoredAudioLink], cls
    for cls in (BaseTextBatchToStorageOperator, *BaseTextBatchToStorageOperator.__subclasses__()):
        assert [type(link) for link in cls.operator_extra_links] == [StoredAudioLink, BatchManifestLink], cls
    assert not TtsSubmitOperator.operator_extra_links
    assert not TtsTaskSensor.operator_extra_links
    declared = get_provider_info()["extra-links"]
    assert declared == [f"airflow_provider_tts.links.{c.__name__}" for c in PersistedLink.__subclasses__()]


def test_the_serialized_dag_carries_each_links_name_and_xcom_key(tmp_path: Path) -> None:
    """What the api-server knows of a link: its name and XCom key, from the serialized DAG."""
    with DAG("links", schedule=None) as dag:
        CambTtsStreamToStorageOperator(task_id="stream", text="Hello there", language="en-us", voice_id=1,
                                       destination=f"file://{tmp_path}/")  # fmt: skip
        CambTtsBatchToStorageOperator.partial(
            task_id="mapped", items=["a b c"], defaults={"voice_id": 1, "language": 1}
        ).expand(destination=[f"file://{tmp_path}/x/"])
    serialization = dag_serialization()
    encoded = serialization.to_dict(dag)
    tasks = {t["__var"]["task_id"]: t["__var"] for t in encoded["dag"]["tasks"]}
    assert tasks["stream"]["_operator_extra_links"] == {"Stored audio": "tts_link_stored_audio"}
    assert tasks["mapped"]["_operator_extra_links"] == {
        "Stored audio": "tts_link_stored_audio",
        "Batch manifest": "tts_link_batch_manifest",
    }
    restored = serialization.from_dict(encoded)
    assert sorted(restored.get_task("mapped").extra_links) == ["Batch manifest", "Stored audio"]


# --- every storing operator keeps the link of what it stored (a cache hit too) ---------------------------


def _context(run_id: str = "manual__1") -> tuple[dict[str, Any], RecordingTI]:
    ti = RecordingTI()
    ti.run_id = run_id
    return {"ti": ti, "task_state_store": StateStore()}, ti


def test_one_task_operator_links_the_stored_file_then_the_cache_hit(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")

    def op(task_id: str) -> RevidTtsToStorageOperator:
        return RevidTtsToStorageOperator(task_id=task_id, tts_conn_id=conn, text="Hello there", engine="edge",
                                         destination=f"file://{tmp_path}/out dir/", poll_interval=0.05,
                                         deferrable=False)  # fmt: skip

    context, ti = _context()
    result = op("speak").execute(context)
    assert ti.pushed == {"tts_link_stored_audio": Path(result["uri"][len("file://") :]).as_uri()}
    assert "%20" in ti.pushed["tts_link_stored_audio"]
    context, ti = _context("manual__2")
    again = op("speak_again").execute(context)
    assert again["cached"] is True
    assert ti.pushed == {"tts_link_stored_audio": Path(again["uri"][len("file://") :]).as_uri()}
    assert TEST_KEY not in json.dumps(ti.pushed)


def test_stream_operator_links_the_stored_file_and_the_cache_hit(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    kw = {"text": "Streamed and linked.", "language": "en-us", "voice_id": 20303, "tts_conn_id": conn}
    context, ti = _context()
    first = CambTtsStreamToStorageOperator(task_id="stream", destination=f"file://{tmp_path}/", **kw).execute(context)
    assert ti.pushed == {"tts_link_stored_audio": first["uri"]}
    context, ti = _context("manual__2")
    named = CambTtsStreamToStorageOperator(task_id="stream", destination=f"file://{tmp_path}/", file_name="named",
                                           **kw).execute(context)  # fmt: skip
    assert named["cached"] is True
    assert named["uri"] != first["uri"]
    assert ti.pushed == {"tts_link_stored_audio": named["uri"]}  # the copy this task made, not the first file


def test_audio_to_storage_operator_links_an_s3_object_without_credentials(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    context, ti = _context()
    op = TtsAudioToStorageOperator(task_id="store", tts_task_id=task_id, tts_conn_id=conn, kind="tts",
                                   destination=f"s3://{bucket}/audio/", dest_conn_id=aws_conn, poll_interval=0.05,
                                   deferrable=False)  # fmt: skip
    result = op.execute(context)
    # The moto connection has its own endpoint: not AWS, so the link is the URI, without the connection id.
    assert ti.pushed == {"tts_link_stored_audio": result["uri"]}
    assert result["uri"].startswith(f"s3://{bucket}/audio/")
    assert aws_conn not in result["uri"]
    # The region and endpoint were read once, with the storage client: a link never reads the connection again.
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    monkeypatch.setattr(S3Hook, "conn_config", property(lambda _: pytest.fail("the connection was read again")))
    assert link_for(ObjectStoragePath(result["uri"], conn_id=aws_conn)) == result["uri"]


def test_batch_operator_links_its_folder_and_its_manifest(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = CambTtsBatchToStorageOperator(task_id="speak_all", tts_conn_id=make_conn("camb_ai"), items=["One.", "Two."],
                                       defaults={"voice_id": 20303, "language": 1}, destination=f"file://{tmp_path}/b/",
                                       deferrable=False, poll_interval=0.05)  # fmt: skip
    context, ti = _context()
    result = op.execute(context)
    assert ti.pushed == {
        "tts_link_stored_audio": (tmp_path / "b").as_uri(),
        "tts_link_batch_manifest": (tmp_path / "b" / "manifest.jsonl").as_uri(),
    }
    assert result["manifest"] == ti.pushed["tts_link_batch_manifest"]
