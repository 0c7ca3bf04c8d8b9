"""``gs://`` and ``abfs://`` / ``az://`` proven like ``s3://``: the storage tests against local servers.

The GCS emulator and Azurite run on loopback (:mod:`tests.operators.object_stores`); the operators
reach them through the fsspec filesystems Airflow's Google and Azure providers build from
``google_cloud_default`` and ``wasb_default`` (gcsfs, adlfs), attached under those connection ids.
Each test runs once per store; what ended up in the bucket is read back through the filesystem, and
the requests per file are read from the server's access log.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest

from airflow_provider_tts.batch import STATE_FOLDER
from airflow_provider_tts.cache import SNAPSHOT_NAME
from airflow_provider_tts.exceptions import TtsConfigError, TtsConnectionError, TtsProtocolError
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from tests.conftest import ConnFactory
from tests.operators.conftest import kill_when, run_worker, ti_context, without_content_length
from tests.operators.object_stores import STORES, Store, attach_filesystem, azurite_server, gcs_server, store
from tests.operators.test_batch import CAMB_DEFAULTS, context, creates
from tests.operators.test_request_cache import claim_race

__all__ = ["azurite_server", "gcs_server", "store"]  # fixtures, imported for pytest to find

TI_NAME = "tts_dag-download"


def _op(conn_id: str, tts_task_id: str, destination: Any, store: Store, **kw: Any) -> TtsAudioToStorageOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    kw.setdefault("kind", "tts")
    return TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=conn_id, tts_task_id=tts_task_id, destination=destination,
        dest_conn_id=store.conn_id, **kw,
    )  # fmt: skip


def _metadata(store: Store, key: str) -> dict[str, str]:
    return {k: v for k, v in (store.info(key).get("metadata") or {}).items() if k != "is_directory"}


def _writes(requests: list[str]) -> list[str]:
    return [r for r in requests if r.split()[0] in ("PUT", "POST", "PATCH", "DELETE")]


# ------------------------------------------------------------------ folders, written once


def test_a_folder_receives_the_file_written_once_with_its_sha256(
    emu: Any, make_conn: ConnFactory, store: Store
) -> None:
    conn = make_conn("camb_ai")
    first = _op(conn, emu.create_task("camb_ai", "tts", delay=0), store.uri("audio/"), store, file_name="one")
    result = first.execute(ti_context())
    key = "audio/one.flac"
    assert result["uri"] == store.uri(key)  # no connection id in the URI
    assert store.keys() == [key]  # no temporary beside it
    assert hashlib.sha256(store.body(key)).hexdigest() == result["sha256"]
    assert _metadata(store, key) == {"sha256": result["sha256"]}
    info = store.info(key)
    assert (info.get("contentType") or info["content_settings"]["content_type"]) == "audio/flac"

    # Every further file into the known folder: one metadata request (is something there?) and the
    # write itself; no bucket check, no listing, no temporary, no copy, no read-back.
    mark = store.mark()
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    _op(conn, task_id, store.uri("audio/"), store, file_name="two").execute(ti_context())
    requests = store.requests(mark)
    reads = [r for r in requests if r not in _writes(requests)]
    assert len(reads) == 1, requests
    assert len(_writes(requests)) == 1, requests  # GCS one multipart upload, Azure one Put Blob
    assert store.keys() == ["audio/one.flac", "audio/two.flac"]


@pytest.mark.parametrize("form", ["string with slash", "string without slash", "ObjectStoragePath"])
def test_an_existing_prefix_is_a_folder_however_it_is_given(
    emu: Any, make_conn: ConnFactory, store: Store, form: str
) -> None:
    from airflow.sdk import ObjectStoragePath

    store.put("audio/old.wav", b"RIFF")
    destination: Any = {
        "string with slash": store.uri("audio/"),
        "string without slash": store.uri("audio"),
        "ObjectStoragePath": ObjectStoragePath(store.uri("audio/"), conn_id=store.conn_id),
    }[form]
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    result = _op(make_conn("revid_tts"), task_id, destination, store).execute(ti_context())
    assert result["uri"] == store.uri(f"audio/{TI_NAME}.wav")
    assert store.keys() == ["audio/old.wav", f"audio/{TI_NAME}.wav"]


def test_the_az_scheme_shares_the_azure_connection(emu: Any, make_conn: ConnFactory, request: Any) -> None:
    kind, conn_id, protocols = STORES["az"]
    server = request.getfixturevalue("azurite_server")
    fs = attach_filesystem(protocols, conn_id, kind, server.port)
    az = Store("az", conn_id, server, fs)
    az.bucket = az.new_bucket()
    try:
        task_id = emu.create_task("camb_ai", "tts", delay=0)
        result = _op(make_conn("camb_ai"), task_id, az.uri("speech/"), az).execute(ti_context())
        assert result["uri"] == az.uri(f"speech/{TI_NAME}.flac")
        assert az.keys() == [f"speech/{TI_NAME}.flac"]
    finally:
        fs.rm(az.bucket, recursive=True)


def test_missing_bucket_fails_before_any_request(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    for key in ("audio/", "a.flac"):
        destination = f"{store.scheme}://no-such-bucket-x1/{key}"
        with pytest.raises(TtsStorageError, match=rf"bucket {store.scheme}://no-such-bucket-x1 does not exist"):
            _op(make_conn("camb_ai"), task_id, destination, store).execute({})
    assert emu.stats()["requests_total"] == 0


def test_a_scheme_with_no_filesystem_is_a_clear_error(emu: Any, make_conn: ConnFactory) -> None:
    with pytest.raises(TtsConfigError, match=r"no filesystem is registered for scheme 'gs'.*attach"):
        TtsAudioToStorageOperator(
            task_id="download", tts_conn_id=make_conn("camb_ai"), tts_task_id="t", kind="tts",
            destination="gs://bucket/audio/", dest_conn_id="nobody_attached_this", deferrable=False,
        ).execute({})  # fmt: skip


# ------------------------------------------------------------------------- overwrite policies


def test_skip_if_identical_does_not_rewrite(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, store.uri(), store)
    first = op.execute(ti_context())
    key = f"{TI_NAME}.flac"
    version = store.version(key)
    time.sleep(1.1)  # Azure's Last-Modified (and so its ETag) has one-second resolution
    mark = store.mark()
    assert op.execute(ti_context()) == first
    assert _writes(store.requests(mark)) == []  # one metadata request, no write, no read-back
    assert len(store.requests(mark)) == 1
    assert store.version(key) == version
    assert store.keys() == [key]


def test_skip_if_identical_replaces_other_bytes(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    store.put("speech.wav", b"RIFF stale audio of another day")
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    result = _op(make_conn("revid_tts"), task_id, store.uri("speech.wav"), store).execute({})
    assert hashlib.sha256(store.body("speech.wav")).hexdigest() == result["sha256"]


def test_replace_rewrites(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    op = _op(make_conn("revid_tts"), task_id, store.uri("speech.wav"), store, overwrite="replace")
    first = op.execute({})
    version = store.version("speech.wav")
    time.sleep(1.1)
    assert op.execute({}) == first
    assert store.version("speech.wav") != version
    assert store.keys() == ["speech.wav"]


def test_replace_into_a_known_folder_is_the_write_and_nothing_else(
    emu: Any, make_conn: ConnFactory, store: Store
) -> None:
    op = _op(make_conn("camb_ai"), emu.create_task("camb_ai", "tts", delay=0), store.uri("audio/"), store,
             overwrite="replace")  # fmt: skip
    first = op.execute(ti_context())
    mark = store.mark()
    assert op.execute(ti_context()) == first
    requests = store.requests(mark)
    assert requests == _writes(requests), requests
    assert len(requests) == 1, requests


def test_fail_policy_raises_before_downloading(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    store.put("speech.flac", b"already here")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    with pytest.raises(TtsConfigError, match="already exists"):
        _op(make_conn("camb_ai"), task_id, store.uri("speech.flac"), store, overwrite="fail").execute({})
    assert emu.stats()["requests_by_endpoint"].get("result", 0) == 0
    assert store.body("speech.flac") == b"already here"


# ------------------------------------------------------------------------ nothing partial


@pytest.mark.parametrize(("api", "endpoint"), [("camb_ai", "result"), ("revid_tts", "storage")])
def test_dropped_download_leaves_nothing_and_sends_nothing(
    emu: Any, make_conn: ConnFactory, store: Store, api: str, endpoint: str
) -> None:
    task_id = emu.create_task(api, "tts", delay=0)
    emu.inject("drop", 1, endpoint=endpoint)
    mark = store.mark()
    with pytest.raises(TtsConnectionError):
        _op(make_conn(api), task_id, store.uri("audio/"), store).execute(ti_context())
    assert store.keys() == []
    assert _writes(store.requests(mark)) == []  # a small file is sent only once it was checked whole


def test_failure_after_uploaded_blocks_publishes_nothing(emu: Any, make_conn: ConnFactory, store: Store) -> None:
    # Over the cap only after 24 MiB were streamed: blocks were already sent (a GCS resumable
    # session, Azure staged blocks). Nothing is published: no object, not even an empty one.
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=40 * 1024**2)
    op = _op(make_conn("camb_ai"), task_id, store.uri("x.wav"), store, kind="text-to-sound")
    op.max_bytes = 24 * 1024**2

    mark = store.mark()
    with pytest.MonkeyPatch.context() as mp:
        without_content_length(mp)
        with pytest.raises(TtsProtocolError, match="exceeded"):
            op.execute(ti_context())
    assert len(_writes(store.requests(mark))) >= 2  # blocks really were sent before the failure
    assert store.keys() == []


def test_a_killed_upload_publishes_nothing_and_the_retry_stores(
    emu: Any, make_conn: ConnFactory, store: Store, tmp_path: Path
) -> None:
    conn_id = make_conn("camb_ai")
    size = 40 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    key = f"audio/{TI_NAME}.wav"
    run_id = "scheduled__2026-01-01"
    ready = tmp_path / "ready"
    kind, _, protocols = STORES[store.scheme]
    mark = store.mark()
    proc = run_worker(
        {
            "tts_conn_id": conn_id, "tts_task_id": task_id, "kind": "text-to-sound",
            "destination": store.uri("audio/"), "dest_conn_id": store.conn_id, "run_id": run_id,
            "ready_file": str(ready), "pause_after_bytes": 20 * 1024**2, "pause_seconds": 2.0,
            "attach": [protocols, store.conn_id, kind, store.server.port],
        }
    )  # fmt: skip

    def nothing_visible_yet() -> None:
        assert store.keys() == []

    kill_when(lambda: ready.exists() and len(_writes(store.requests(mark))) >= 2, proc, nothing_visible_yet)
    assert store.keys() == []  # killed mid-upload: nothing at all is visible

    op = _op(conn_id, task_id, store.uri("audio/"), store, kind="text-to-sound")
    result = op.execute(ti_context(run_id, try_number=2))
    assert result["size_bytes"] == size
    assert store.keys() == [key]
    assert hashlib.sha256(store.body(key)).hexdigest() == result["sha256"]
    assert _metadata(store, key) == {"sha256": result["sha256"]}  # a large object is recognised too


# ------------------------------------------------------------------- the batch and the cache


def _run_batch(make_conn: ConnFactory, store: Store, folder: str, texts: list[str], run_id: str) -> dict[str, Any]:
    op = CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=make_conn("camb_ai"), destination=store.uri(folder),
        dest_conn_id=store.conn_id, items=texts, defaults=CAMB_DEFAULTS, deferrable=False, poll_interval=0.05,
    )  # fmt: skip
    result: dict[str, Any] = op.execute(context(run_id=run_id))
    return result


def test_a_batch_is_stored_and_a_rerun_is_served_by_the_request_cache(
    emu: Any, make_conn: ConnFactory, store: Store
) -> None:
    texts = [f"Cloud sentence {n}." for n in range(5)]

    def run(run_id: str) -> dict[str, Any]:
        return _run_batch(make_conn, store, "audio/", texts, run_id)

    assert run("manual__1")["stored"] == 5
    keys = store.keys()
    assert "audio/manifest.jsonl" in keys
    assert not any(STATE_FOLDER in key for key in keys)
    rows = [json.loads(line) for line in store.body("audio/manifest.jsonl").splitlines()]
    assert len(rows) == 5
    for row in rows:
        key = row["file"].removeprefix(store.uri())
        assert hashlib.sha256(store.body(key)).hexdigest() == row["sha256"]
        assert _metadata(store, key) == {"sha256": row["sha256"]}
    mark = store.mark()
    assert run("manual__2")["cached"] == 5
    assert creates(emu) == 5  # the rerun paid for nothing
    # The cache checked each stored file by the sha256 in its metadata: no audio was read back
    # (its own small JSON entries are read, nothing else).
    audio_reads = [r for r in store.requests(mark) if r.startswith("GET") and r.endswith((".flac", ".wav"))]
    assert [r for r in audio_reads if "/download/" in r or r.startswith("GET /devstoreaccount1")] == []


def test_of_two_claims_at_once_exactly_one_wins(store: Store) -> None:
    """The request cache's claim is a create-if-absent: GCS ``ifGenerationMatch=0``, Azure ``If-None-Match: *``."""
    from airflow.sdk import ObjectStoragePath

    path = ObjectStoragePath(store.uri("claims/one.json"), conn_id=store.conn_id)
    assert sorted(claim_race(path)) == [False] * 7 + [True]


def test_a_rerun_of_many_items_takes_the_entries_the_listing_vouches_for_from_the_snapshot(
    emu: Any, make_conn: ConnFactory, store: Store
) -> None:
    """RC16 on GCS (``md5Hash``) and Azure (``content_md5``) as on S3 (ETag): one read, not one per entry."""
    texts = [f"Snapshot cloud sentence {n}." for n in range(40)]
    assert _run_batch(make_conn, store, "many/", texts, "manual__1")["stored"] == 40
    mark = store.mark()
    assert _run_batch(make_conn, store, "many/", texts, "manual__2")["cached"] == 40
    reads = [unquote(r.split()[1]).partition("?")[0] for r in store.requests(mark) if r.startswith("GET")]
    cache_reads = [r.rpartition("/.tts-cache/")[2] for r in reads if "/.tts-cache/" in r]
    assert cache_reads == [SNAPSHOT_NAME]  # was a GET per entry: 40
    assert creates(emu) == 40
