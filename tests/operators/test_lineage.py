"""Assets and lineage of TtsAudioToStorageOperator: one stable asset, the destination as the only output.

Stores run against the emulator over loopback, into ``file://`` and the moto S3 server. What
Airflow does with the declared outlets and the emitted events on a real deployment (registration
at parse time, downstream DAGs, warnings, the OpenLineage event) is in ``tests/slow/test_assets.py``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pendulum
import pytest
from airflow.sdk import DAG, Asset, AssetAlias, ObjectStoragePath, TaskGroup
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_tts import compat
from airflow_provider_tts.lineage import dataset_name, default_asset_name
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from tests._airflow import lineage_module
from tests.conftest import ConnFactory

START = pendulum.datetime(2026, 1, 1, tz="UTC")
#: Where this Airflow keeps its hook lineage collector (airflow.sdk.lineage from 3.2, airflow.lineage.hook before).
_LINEAGE = lineage_module()
HookLineageCollector = _LINEAGE.HookLineageCollector


def _op(conn_id: str, tts_task_id: str, destination: Any, **kw: Any) -> TtsAudioToStorageOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    return TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=conn_id, tts_task_id=tts_task_id, destination=destination, **kw
    )


@pytest.fixture
def collector(monkeypatch: pytest.MonkeyPatch) -> Any:
    """Airflow's real hook lineage collector, active as when a lineage reader (OpenLineage) is installed.

    Without a registered reader Airflow hands out a no-op collector; ``ObjectStoragePath`` and the
    operator look the collector up at call time (Airflow's module and compat.py), so this one sees
    everything they report.
    """
    active = HookLineageCollector()
    monkeypatch.setattr(_LINEAGE, "get_hook_lineage_collector", lambda: active)
    monkeypatch.setattr(compat, "get_hook_lineage_collector", lambda: active)
    return active


# ----------------------------------------------------------------------- declared outlets


@pytest.mark.parametrize(
    ("destination", "expected"),
    [
        ("file:///data/audio/speech.flac", Asset("file:///data/audio/speech.flac")),
        ("file:///data/audio/", Asset("file:///data/audio/")),  # the folder, not a file in it
        ("s3://bucket/audio/", Asset("s3://bucket/audio/")),
        ("{{ params.destination }}", Asset(name="tts-audio/d/store")),
        ("file://{{ params.root }}/audio/", Asset(name="tts-audio/d/store")),
    ],
)
def test_one_stable_asset_is_declared_plain_and_mapped(destination: str, expected: Asset) -> None:
    """The same asset whether the task is mapped or not: no alias, nothing per file or per run."""
    with DAG("d", schedule=None, start_date=START):
        plain = TtsAudioToStorageOperator(task_id="store", tts_task_id="t", destination=destination)
    with DAG("d", schedule=None, start_date=START):
        mapped = TtsAudioToStorageOperator.partial(task_id="store", destination=destination).expand(
            tts_task_id=["a", "b"]
        )
    assert plain.outlets == [expected]
    assert mapped.outlets == [expected]  # before the fix: [] (partial() filled in outlets=[])


def test_mapped_outlets_reach_the_serialized_dag_and_every_unmapped_instance() -> None:
    """What the scheduler registers and what each mapped instance emits on are the same asset."""
    from tests._airflow import dag_serialization

    DagSerialization = dag_serialization()

    with DAG("d", schedule=None, start_date=START) as dag:
        mapped = TtsAudioToStorageOperator.partial(task_id="store", destination="{{ params.destination }}").expand(
            tts_task_id=["a", "b"]
        )
    serialized = DagSerialization.from_dict(DagSerialization.to_dict(dag)).get_task("store")
    # 3.0 deserializes outlets to Asset objects, later minors keep the encoded dicts.
    names = [o["__var"]["name"] if isinstance(o, dict) else o.name for o in serialized.outlets]
    assert names == ["tts-audio/d/store"]
    # Unmapping builds the operator from the partial arguments: the outlet travels with them.
    unmapped = TtsAudioToStorageOperator(**{**mapped.partial_kwargs, "task_id": "store"}, tts_task_id="a")
    assert unmapped.outlets == [Asset(name="tts-audio/d/store")]


def test_destination_given_to_expand_uses_the_stable_name_and_groups_prefix_it() -> None:
    with DAG("d", schedule=None, start_date=START), TaskGroup("batch"):
        mapped = TtsAudioToStorageOperator.partial(task_id="store").expand(
            tts_task_id=["a", "b"], destination=["file:///x/a.wav", "file:///x/b.wav"]
        )
        single = TtsAudioToStorageOperator(task_id="one", tts_task_id="t", destination="{{ params.d }}")
    assert mapped.outlets == [Asset(name="tts-audio/d/batch.store")]
    assert single.outlets == [Asset(name="tts-audio/d/batch.one")]
    assert default_asset_name(None, "t") == "tts-audio/t"


def test_object_storage_path_destination_is_its_own_asset() -> None:
    op = TtsAudioToStorageOperator(task_id="s", tts_task_id="t", destination=ObjectStoragePath("file:///data/a/"))
    assert [o.uri for o in op.outlets] == ["file:///data/a"]


def test_explicit_outlets_are_kept_also_when_mapped() -> None:
    mine = Asset(name="daily_audio")
    with DAG("d", schedule=None, start_date=START):
        plain = TtsAudioToStorageOperator(task_id="a", tts_task_id="t", destination="file:///x/", outlets=[mine])
        none = TtsAudioToStorageOperator(task_id="b", tts_task_id="t", destination="file:///x/", outlets=[])
        mapped = TtsAudioToStorageOperator.partial(task_id="c", destination="file:///x/", outlets=[mine]).expand(
            tts_task_id=["a"]
        )
        alias = TtsAudioToStorageOperator.partial(task_id="e", destination="file:///x/", asset_alias="per-file").expand(
            tts_task_id=["a"]
        )
    assert plain.outlets == [mine]
    assert none.outlets == []
    assert mapped.outlets == [mine]
    assert alias.outlets == [AssetAlias(name="per-file")]


# ----------------------------------------------------------------------------- events


@pytest.mark.parametrize("destination", ["file://ROOT/", "file://ROOT/speech.flac", "file://{{ params.root }}/"])
def test_each_store_emits_one_event_on_the_declared_asset_with_the_file_in_extra(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, destination: str
) -> None:
    """No asset is created per file (that made the AssetModel warnings): the file is in the extra."""
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, destination.replace("ROOT", str(tmp_path)))
    (declared,) = op.outlets
    events = OutletEventAccessors()
    context: dict[str, Any] = {"params": {"root": str(tmp_path)}, "outlet_events": events}
    op.render_template_fields(context)
    result = op.execute(context)
    assert list(events) == [declared]
    assert events[declared].asset_alias_events == []
    assert events[declared].extra == {
        "uri": result["uri"],
        "size_bytes": result["size_bytes"],
        "sha256": result["sha256"],
        "content_type": "audio/flac",
        "duration_seconds": result["duration_seconds"],
        "tts_task_id": task_id,
        "kind": "tts",
    }
    assert Path(result["uri"].removeprefix("file://")).stat().st_size == result["size_bytes"]


def test_opt_in_alias_gets_the_file_asset_with_the_same_extra(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", asset_alias="tts/per-file")
    events = OutletEventAccessors()
    result = op.execute({"outlet_events": events})
    (event,) = events[AssetAlias(name="tts/per-file")].asset_alias_events
    assert event.dest_asset_key.uri == result["uri"]
    assert event.extra["sha256"] == result["sha256"]


# ------------------------------------------------------------------ hook lineage collector


def _uris(infos: Any) -> list[str]:
    return sorted(info.asset.uri for info in infos)


def test_the_destination_is_reported_as_an_output(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, collector: HookLineageCollector
) -> None:
    """Reported by the operator itself, whatever the storage layer does (move, rename, direct upload)."""
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    result = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/").execute({})
    assert result["uri"] in _uris(collector.collected_assets.outputs)


@pytest.mark.parametrize("destination", ["file://ROOT/", "file://ROOT/speech.flac"])
def test_only_the_destination_is_in_the_hook_lineage(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, collector: HookLineageCollector, destination: str
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    result = _op(make_conn("camb_ai"), task_id, destination.replace("ROOT", str(tmp_path))).execute({})
    collected = collector.collected_assets
    assert _uris(collected.inputs) == []
    assert set(_uris(collected.outputs)) == {result["uri"]}


# ---------------------------------------------------------------------------- OpenLineage


@pytest.mark.parametrize(
    ("uri", "namespace", "name"),
    [
        ("file:///data/audio/a.wav", "file", "/data/audio/a.wav"),
        ("file://nas1/data/a.wav", "file://nas1", "/data/a.wav"),
        ("s3://bucket/audio/a.wav", "s3://bucket", "audio/a.wav"),
        ("s3a://bucket/a.wav", "s3://bucket", "a.wav"),
        ("gcs://bucket/k/a.wav", "gs://bucket", "k/a.wav"),
        ("sftp://host:22/srv/a.wav", "sftp://host:22", "srv/a.wav"),
    ],
)
def test_dataset_names_follow_the_openlineage_naming_spec(uri: str, namespace: str, name: str) -> None:
    assert dataset_name(uri) == (namespace, name)


def test_openlineage_facets_on_complete_for_file(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    from openlineage.client.serde import Serde

    task_id = emu.create_task("revid_tts", "tts", delay=0)
    op = _op(make_conn("revid_tts"), task_id, f"file://{tmp_path}/")
    result = op.execute({})
    lineage = op.get_openlineage_facets_on_complete(None)
    assert lineage.inputs == []
    (output,) = lineage.outputs
    assert (output.namespace, output.name) == ("file", result["uri"].removeprefix("file://"))
    assert output.outputFacets["outputStatistics"].size == result["size_bytes"]
    facets = {name: Serde.to_dict(facet) for name, facet in lineage.run_facets.items()}
    assert facets["externalQuery"]["externalQueryId"] == task_id
    assert facets["externalQuery"]["source"] == "revid_tts"
    assert {k: v for k, v in facets["ttsJob"].items() if not k.startswith("_")} == {
        "api": "revid_tts",
        "kind": "tts",
        "ttsTaskId": task_id,
        "audioDurationSeconds": result["duration_seconds"],
        "contentType": result["content_type"],
    }


def test_openlineage_facets_on_complete_for_s3(emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/audio/", dest_conn_id=aws_conn)
    result = op.execute({})
    (output,) = op.get_openlineage_facets_on_complete(None).outputs
    assert (output.namespace, output.name) == (f"s3://{bucket}", f"audio/{Path(result['uri']).name}")


def test_nothing_stored_means_no_datasets_and_no_connection_lookup() -> None:
    """On a failed task the OpenLineage provider asks too: no datasets, and no hook built for it."""
    op = TtsAudioToStorageOperator(task_id="s", tts_conn_id="no_such_conn", tts_task_id="t", destination="file:///x/")
    lineage = op.get_openlineage_facets_on_complete(None)
    assert (lineage.inputs, lineage.outputs, lineage.run_facets) == ([], [], {})
