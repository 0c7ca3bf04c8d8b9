"""TtsAudioToStorageOperator storing to ``s3://`` on a real S3-compatible server (moto, server mode).

The moto server listens on loopback (session fixture ``moto_endpoint``); the operator reaches it
through the Amazon provider's ``aws`` connection (``endpoint_url`` in its extra) and s3fs, exactly
as it would reach AWS. What ended up in the bucket is read back with boto3.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_tts.exceptions import TtsConfigError, TtsConnectionError, TtsProtocolError
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from airflow_provider_tts.storing import STORE_ATTEMPTS
from tests.conftest import PAIRS, ConnFactory
from tests.operators.conftest import kill_when, run_worker, ti_context, without_content_length

EXTENSIONS = {"audio/flac": ".flac", "audio/wav": ".wav"}


#: A folder destination's default file name: ``<dag_id>-<task_id>`` of the running task instance
#: (what ``ti_context()`` gives), the operator's task id alone outside Airflow (an empty context).
TI_NAME = "tts_dag-download"
NAME = "download"


def _op(conn_id: str, tts_task_id: str, destination: Any, kind: str = "tts", **kw: Any) -> TtsAudioToStorageOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    return TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=conn_id, tts_task_id=tts_task_id, kind=kind, destination=destination, **kw
    )


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _uploads(s3: Any, bucket: str) -> list[dict[str, Any]]:
    """Multipart uploads still in progress (what a killed or abandoned upload leaves behind)."""
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


def _body(s3: Any, bucket: str, key: str) -> bytes:
    data: bytes = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    return data


def _versions(s3: Any, bucket: str, key: str) -> int:
    return len([v for v in s3.list_object_versions(Bucket=bucket, Prefix=key).get("Versions", []) if v["Key"] == key])


@pytest.fixture
def versioned(s3: Any, bucket: str) -> str:
    """The bucket with versioning on: every write of a key makes a version, so writes can be counted."""
    s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    return bucket


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_every_pair_downloads_into_a_bucket_folder(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, api: str, kind: str
) -> None:
    task_id = emu.create_task(api, kind, delay=0)
    result = _op(make_conn(api), task_id, f"s3://{bucket}/audio/{kind}/", kind, dest_conn_id=aws_conn).execute(
        ti_context()
    )
    key = f"audio/{kind}/{TI_NAME}{EXTENSIONS[result['content_type']]}"
    assert _keys(s3, bucket) == [key]  # no temporary object beside it
    assert _uploads(s3, bucket) == []
    data = _body(s3, bucket, key)
    assert result == {
        "uri": f"s3://{bucket}/{key}",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": result["content_type"],
        "duration_seconds": result["duration_seconds"],
        "tts_task_id": task_id,
        "fingerprint": None,  # a task id says nothing of its request
        "cached": False,
        "characters": None,  # ... nor of what was spent on it: nothing, by this task
        "requests": 0,
        "credits": None,
        "estimated_credits": None,
    }
    assert result["duration_seconds"] > 0
    assert data[:4] == (b"fLaC" if result["content_type"] == "audio/flac" else b"RIFF")
    json.dumps(result)


def test_literal_key_and_multipart_size(emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str) -> None:
    # 20 MiB: more than two 8 MiB upload parts, so the temporary is a real multipart upload.
    size = 20 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    uri = f"s3://{bucket}/a/b/rain.wav"
    result = _op(make_conn("camb_ai"), task_id, uri, "text-to-sound", dest_conn_id=aws_conn).execute(ti_context())
    assert result["uri"] == uri
    assert result["size_bytes"] == size
    assert _keys(s3, bucket) == ["a/b/rain.wav"]
    assert hashlib.sha256(_body(s3, bucket, "a/b/rain.wav")).hexdigest() == result["sha256"]
    assert _uploads(s3, bucket) == []


def test_object_storage_path_destination_with_its_own_conn(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str
) -> None:
    task_id = emu.create_task("revid_tts", "srt-to-speech", delay=0)
    destination = ObjectStoragePath(f"s3://{bucket}/subs/{task_id}.wav", conn_id=aws_conn)
    result = _op(make_conn("revid_tts"), task_id, destination, "srt-to-speech").execute({})
    assert result["uri"] == f"s3://{bucket}/subs/{task_id}.wav"  # no connection id in the URI
    assert hashlib.sha256(_body(s3, bucket, f"subs/{task_id}.wav")).hexdigest() == result["sha256"]
    assert emu.storage_key_leaks() == []


@pytest.mark.parametrize(("api", "kind", "endpoint"), [("camb_ai", "tts", "result"), ("revid_tts", "tts", "storage")])
def test_dropped_download_leaves_no_object_and_no_upload(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, api: str, kind: str, endpoint: str
) -> None:
    task_id = emu.create_task(api, kind, delay=0)
    emu.inject("drop", 1, endpoint=endpoint)
    with pytest.raises(TtsConnectionError):
        _op(make_conn(api), task_id, f"s3://{bucket}/audio/", kind, dest_conn_id=aws_conn).execute(ti_context())
    assert _keys(s3, bucket) == []
    assert _uploads(s3, bucket) == []


def test_failure_after_uploaded_parts_aborts_the_upload(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, versioned: str
) -> None:
    # Over the cap only after 24 MiB were streamed: parts were already uploaded. The upload is
    # aborted, never completed: in a versioned bucket not even a deleted version of the temporary.
    bucket = versioned
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=40 * 1024**2)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/x.wav", "text-to-sound", dest_conn_id=aws_conn)
    op.max_bytes = 24 * 1024**2

    with pytest.MonkeyPatch.context() as mp:
        without_content_length(mp)
        with pytest.raises(TtsProtocolError, match="exceeded"):
            op.execute(ti_context())
    assert _keys(s3, bucket) == []
    assert _uploads(s3, bucket) == []
    listing = s3.list_object_versions(Bucket=bucket)
    assert listing.get("Versions", []) == listing.get("DeleteMarkers", []) == []


def test_announced_size_over_the_cap_writes_nothing(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str
) -> None:
    task_id = emu.create_task("revid_tts", "tts", delay=0, audio_bytes=300_000)
    op = _op(make_conn("revid_tts"), task_id, f"s3://{bucket}/", max_bytes=100_000, dest_conn_id=aws_conn)
    with pytest.raises(TtsProtocolError, match="cap"):
        op.execute({})
    assert _keys(s3, bucket) == []
    assert _uploads(s3, bucket) == []


def test_missing_bucket_fails_before_any_request(emu: Any, make_conn: ConnFactory, aws_conn: str) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    for destination in ("s3://no-such-bucket-x1/audio/", "s3://no-such-bucket-x1/a.flac"):
        with pytest.raises(TtsStorageError, match=r"bucket s3://no-such-bucket-x1 does not exist"):
            _op(make_conn("camb_ai"), task_id, destination, dest_conn_id=aws_conn).execute({})
    assert emu.stats()["requests_total"] == 0  # not even a status poll, let alone the audio


def test_missing_bucket_after_deferral_fails_before_the_download(
    emu: Any, make_conn: ConnFactory, aws_conn: str
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    status = _op(make_conn("camb_ai"), task_id, "file:///unused/").hook.get_task_status(task_id)
    op = _op(make_conn("camb_ai"), task_id, "s3://no-such-bucket-x2/", dest_conn_id=aws_conn)
    with pytest.raises(TtsStorageError, match="does not exist"):
        op.execute_complete({}, {"status": "success", "task_status": status.to_xcom()})
    assert emu.stats()["requests_by_endpoint"].get("result", 0) == 0


# ------------------------------------------------------------------------- killed worker


def test_killed_upload_leaves_no_object_and_the_retry_cleans_up(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, tmp_path: Path
) -> None:
    conn_id = make_conn("camb_ai")
    size = 48 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    key = f"audio/{TI_NAME}.wav"
    run_id = "scheduled__2026-01-01"
    op = _op(conn_id, task_id, f"s3://{bucket}/audio/", "text-to-sound", dest_conn_id=aws_conn)
    ready = tmp_path / "ready"
    proc = run_worker(
        {
            "tts_conn_id": conn_id,
            "tts_task_id": task_id,
            "kind": "text-to-sound",
            "destination": f"s3://{bucket}/audio/",
            "dest_conn_id": aws_conn,
            "run_id": run_id,
            "ready_file": str(ready),
            "pause_after_bytes": 20 * 1024**2,
            "pause_seconds": 2.0,
        }
    )

    def parts_uploaded() -> bool:
        if not ready.exists():
            return False
        uploads = [u for u in _uploads(s3, bucket) if u["Key"] == key]
        if not uploads:
            return False
        parts = s3.list_parts(Bucket=bucket, Key=key, UploadId=uploads[0]["UploadId"]).get("Parts", [])
        return len(parts) >= 2

    def nothing_visible_yet() -> None:
        assert _keys(s3, bucket) == []

    kill_when(parts_uploaded, proc, nothing_visible_yet)

    # Killed mid-upload: no object at all; only the unfinished upload, on the destination key itself.
    assert _keys(s3, bucket) == []
    assert [u["Key"] for u in _uploads(s3, bucket)] == [key]

    # The retry (same task instance, try 2) aborts that leftover upload and stores the audio.
    result = op.execute(ti_context(run_id, try_number=2))
    assert result["size_bytes"] == size
    assert _keys(s3, bucket) == [key]
    assert hashlib.sha256(_body(s3, bucket, key)).hexdigest() == result["sha256"]
    assert _uploads(s3, bucket) == []


# -------------------------------------------------------------------------------- re-runs


def test_skip_if_identical_does_not_rewrite(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, versioned: str
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{versioned}/", dest_conn_id=aws_conn)
    first = op.execute(ti_context())
    key = f"{TI_NAME}.flac"
    head = s3.head_object(Bucket=versioned, Key=key)
    time.sleep(1.1)  # LastModified has one-second resolution
    assert op.execute(ti_context()) == first
    again = s3.head_object(Bucket=versioned, Key=key)
    assert (again["ETag"], again["LastModified"]) == (head["ETag"], head["LastModified"])
    assert _versions(s3, versioned, key) == 1  # one write in all
    assert _keys(s3, versioned) == [key]


def test_replace_rewrites(emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, versioned: str) -> None:
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    op = _op(
        make_conn("revid_tts"), task_id, f"s3://{versioned}/speech.wav", overwrite="replace", dest_conn_id=aws_conn
    )
    first = op.execute({})
    assert op.execute({}) == first
    assert _versions(s3, versioned, "speech.wav") == 2
    assert _keys(s3, versioned) == ["speech.wav"]


def test_replace_into_a_known_folder_is_one_put_and_nothing_else(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    # What is already there does not matter to ``replace``: no HEAD, the PutObject is the only request.
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/audio/", overwrite="replace", dest_conn_id=aws_conn)
    first = op.execute(ti_context())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        assert op.execute(ti_context()) == first
    assert [r.split("?")[0] for r in _requests(caplog, bucket)] == [f"PUT /{bucket}/audio/{TI_NAME}.flac"]


def test_fail_policy_raises_before_downloading(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="speech.flac", Body=b"already here")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    with pytest.raises(TtsConfigError, match="already exists"):  # not retryable: a retry finds the same object
        _op(
            make_conn("camb_ai"), task_id, f"s3://{bucket}/speech.flac", overwrite="fail", dest_conn_id=aws_conn
        ).execute({})
    assert emu.stats()["requests_by_endpoint"].get("result", 0) == 0
    assert _body(s3, bucket, "speech.flac") == b"already here"


# -------------------------------------------------------------------------------- outlets


def test_outlets_for_s3(emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str) -> None:
    literal = f"s3://{bucket}/speech.flac"
    assert _op("c", "t", literal, dest_conn_id=aws_conn).outlets == [Asset(literal)]

    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/audio/", dest_conn_id=aws_conn, asset_alias="speech")
    assert op.outlets == [AssetAlias(name="speech")]
    events = OutletEventAccessors()
    result = op.execute({"outlet_events": events})
    alias_events = events[AssetAlias(name="speech")].asset_alias_events
    assert [e.dest_asset_key.uri for e in alias_events] == [result["uri"]] == [f"s3://{bucket}/audio/{NAME}.flac"]


# ------------------------------------------------------------- written once: requests per file


def _requests(caplog: pytest.LogCaptureFixture, bucket: str) -> list[str]:
    """``METHOD /path?query`` of every request the moto server logged for ``bucket`` (werkzeug's access log)."""
    import re

    seen = []
    for record in caplog.records:
        match = re.search(r'"(?:\x1b\[[0-9;]*m)*([A-Z]+) (/[^ ]*) HTTP', record.getMessage())
        if record.name == "werkzeug" and match and match.group(2).lstrip("/").startswith(bucket):
            seen.append(f"{match.group(1)} {match.group(2)}")
    return seen


def _writes(requests: list[str]) -> list[str]:
    return [r for r in requests if r.split()[0] in ("PUT", "POST", "DELETE")]


def test_a_new_file_is_one_put_with_its_sha256_in_metadata(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/audio/", dest_conn_id=aws_conn)
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        result = op.execute(ti_context())
    requests = _requests(caplog, bucket)
    key = f"audio/{TI_NAME}.flac"
    # One write (the PutObject of the destination key itself, sent only if nothing is there: no
    # temporary, no copy, no delete, no HEAD first); one HeadBucket (asked once per process).
    assert _writes(requests) == [f"PUT /{bucket}/{key}"], requests
    assert [r.split("?")[0] for r in requests] == [f"HEAD /{bucket}", f"PUT /{bucket}/{key}"]
    head = s3.head_object(Bucket=bucket, Key=key)
    assert head["Metadata"] == {"sha256": result["sha256"]}
    assert head["ContentType"] == "audio/flac"
    assert _keys(s3, bucket) == [key]


def test_every_further_new_file_into_a_folder_is_one_put(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, caplog: pytest.LogCaptureFixture
) -> None:
    # The bucket is known to exist after the first file: no listing, no HeadBucket for the others;
    # a new small file under ``skip_if_identical`` is one conditional PutObject, no HEAD.
    conn = make_conn("camb_ai")
    for name in ("one", "two"):
        task_id = emu.create_task("camb_ai", "tts", delay=0)
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="werkzeug"):
            _op(conn, task_id, f"s3://{bucket}/audio/", file_name=name, dest_conn_id=aws_conn).execute(ti_context())
    requests = [r.split("?")[0] for r in _requests(caplog, bucket)]
    assert requests == [f"PUT /{bucket}/audio/two.flac"]
    assert _keys(s3, bucket) == ["audio/one.flac", "audio/two.flac"]


def test_a_bucket_deleted_after_it_was_checked_fails_clearly_and_is_asked_again(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, caplog: pytest.LogCaptureFixture
) -> None:
    name = f"tts-gone-{time.time_ns()}"
    s3.create_bucket(Bucket=name)
    conn = make_conn("camb_ai")
    _op(conn, emu.create_task("camb_ai", "tts", delay=0), f"s3://{name}/", dest_conn_id=aws_conn).execute(ti_context())
    s3.delete_object(Bucket=name, Key=f"{TI_NAME}.flac")
    s3.delete_bucket(Bucket=name)
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    with pytest.raises(TtsStorageError, match=rf"writing s3://.*{name}/{TI_NAME}\.flac failed: FileNotFoundError"):
        _op(conn, task_id, f"s3://{name}/", dest_conn_id=aws_conn).execute(ti_context())
    # Forgotten: the next file asks again, and is refused before any request to the API.
    before = emu.stats()["requests_total"]
    with pytest.raises(TtsStorageError, match=rf"bucket s3://{name} does not exist"):
        _op(conn, task_id, f"s3://{name}/", dest_conn_id=aws_conn).execute(ti_context())
    assert emu.stats()["requests_total"] == before


def test_multipart_parts_are_uploaded_several_at_once(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str
) -> None:
    # Parts 1 and 2 must be in flight together to pass the barrier: one part at a time breaks it.
    import threading

    from airflow_provider_tts.storage import s3 as storage_s3

    assert storage_s3.s3_call(ObjectStoragePath(f"s3://{bucket}/", conn_id=aws_conn)) is not None
    client = storage_s3._CLIENTS[aws_conn]
    barrier = threading.Barrier(2, timeout=30)
    met: list[int] = []

    def hold(params: dict[str, Any], **_: Any) -> None:
        number = int(params["PartNumber"])
        if number in (1, 2):
            barrier.wait()
            met.append(number)

    client.meta.events.register("provide-client-params.s3.UploadPart", hold, unique_id="tts-test-hold")
    try:
        task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=20 * 1024**2)
        op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/rain.wav", "text-to-sound", dest_conn_id=aws_conn)
        result = op.execute(ti_context())
    finally:
        client.meta.events.unregister("provide-client-params.s3.UploadPart", unique_id="tts-test-hold")
    assert sorted(met) == [1, 2]
    assert hashlib.sha256(_body(s3, bucket, "rain.wav")).hexdigest() == result["sha256"]
    assert s3.head_object(Bucket=bucket, Key="rain.wav")["ETag"].endswith('-3"')  # 8 + 8 + 4 MiB
    assert _uploads(s3, bucket) == []


@pytest.mark.parametrize("size", [300_000, 20 * 1024**2], ids=["single-put", "multipart"])
def test_skip_if_identical_costs_one_head_and_no_download(
    emu: Any,
    make_conn: ConnFactory,
    aws_conn: str,
    s3: Any,
    versioned: str,
    caplog: pytest.LogCaptureFixture,
    size: int,
) -> None:
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{versioned}/rain.wav", "text-to-sound", dest_conn_id=aws_conn)
    first = op.execute(ti_context())
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="werkzeug"):
        assert op.execute(ti_context()) == first
    requests = _requests(caplog, versioned)
    assert [r for r in requests if r.startswith("HEAD ")] == [f"HEAD /{versioned}/rain.wav"]
    assert not [r for r in requests if r.startswith("GET /" + versioned + "/rain.wav")]  # never read back
    completed = [r for r in requests if "uploadId" in r and "POST" in r]
    assert completed == [], requests  # no CompleteMultipartUpload
    # A small file is first sent only if nothing is there (refused here: no version made), then the HEAD.
    puts = [r.split("?")[0] for r in requests if r.startswith("PUT ") and "partNumber" not in r]
    assert puts == ([f"PUT /{versioned}/rain.wav"] if size <= 8 * 1024**2 else []), requests
    assert _versions(s3, versioned, "rain.wav") == 1
    assert _uploads(s3, versioned) == []  # a multipart upload of the same bytes was aborted, not completed


@pytest.mark.parametrize("size", [300_000, 20 * 1024**2], ids=["single-put", "multipart"])
def test_skip_if_identical_recognises_an_object_written_without_metadata(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, versioned: str, size: int
) -> None:
    # Written by someone else (no sha256 metadata): its ETag (an MD5, per part for multipart)
    # proves the same bytes; a same-sized object with other bytes is replaced.
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    op = _op(make_conn("camb_ai"), task_id, f"s3://{versioned}/rain.wav", "text-to-sound", dest_conn_id=aws_conn)
    data = _body_of_task(op)
    import io

    from boto3.s3.transfer import TransferConfig

    config = TransferConfig(multipart_threshold=8 * 1024**2, multipart_chunksize=8 * 1024**2)
    s3.upload_fileobj(io.BytesIO(data), versioned, "rain.wav", Config=config)
    result = op.execute(ti_context())
    assert result["sha256"] == hashlib.sha256(data).hexdigest()
    assert _versions(s3, versioned, "rain.wav") == 1  # recognised: not rewritten

    s3.put_object(Bucket=versioned, Key="rain.wav", Body=b"\0" * size)  # same size, other bytes
    op.execute(ti_context())
    assert _versions(s3, versioned, "rain.wav") == 3
    assert hashlib.sha256(_body(s3, versioned, "rain.wav")).hexdigest() == result["sha256"]
    assert _uploads(s3, versioned) == []


def _body_of_task(op: TtsAudioToStorageOperator) -> bytes:
    status = op.hook.get_task_status(op.tts_task_id, op.kind)
    with op.hook.open_audio(status) as audio:
        return b"".join(audio.iter_chunks())


def test_a_failed_write_keeps_the_old_object_and_leaves_no_upload(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str
) -> None:
    s3.put_object(Bucket=bucket, Key="keep.wav", Body=b"RIFF previous version")
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=20 * 1024**2)
    emu.inject("drop", 1, endpoint="result")
    op = _op(make_conn("camb_ai"), task_id, f"s3://{bucket}/keep.wav", "text-to-sound", dest_conn_id=aws_conn)
    with pytest.raises(TtsConnectionError):
        op.execute(ti_context())
    assert _body(s3, bucket, "keep.wav") == b"RIFF previous version"
    assert _uploads(s3, bucket) == []


# ------------------------------------------------------------------- folders given either way


@pytest.mark.parametrize("form", ["string with slash", "string without slash", "ObjectStoragePath"])
def test_an_existing_prefix_is_a_folder_however_it_is_given(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, form: str
) -> None:
    s3.put_object(Bucket=bucket, Key="audio/earlier.flac", Body=b"fLaC")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    destination: Any = {
        "string with slash": f"s3://{bucket}/audio/",
        "string without slash": f"s3://{bucket}/audio",
        "ObjectStoragePath": ObjectStoragePath(f"s3://{bucket}/audio/", conn_id=aws_conn),
    }[form]
    result = _op(make_conn("camb_ai"), task_id, destination, dest_conn_id=aws_conn).execute(ti_context())
    key = f"audio/{TI_NAME}.flac"
    assert result["uri"] == f"s3://{bucket}/{key}"
    assert _keys(s3, bucket) == sorted(["audio/earlier.flac", key])
    assert s3.head_object(Bucket=bucket, Key=key)["ContentLength"] == result["size_bytes"]


# ------------------------------------------------------------------------ a 200 that is not audio


@pytest.mark.parametrize(("api", "endpoint"), [("camb_ai", "result"), ("revid_tts", "storage")])
def test_an_html_page_with_status_200_is_not_stored(
    emu: Any, make_conn: ConnFactory, aws_conn: str, s3: Any, bucket: str, api: str, endpoint: str
) -> None:
    task_id = emu.create_task(api, "tts", delay=0)
    emu.inject("html_200", STORE_ATTEMPTS, endpoint=endpoint)  # every download of the try: a page, never stored
    with pytest.raises(TtsProtocolError, match=r"got text/html starting with '<!DOCTYPE html>") as info:
        _op(make_conn(api), task_id, f"s3://{bucket}/audio/", dest_conn_id=aws_conn).execute(ti_context())
    assert "nothing was stored" in str(info.value)
    assert _keys(s3, bucket) == []
    assert _uploads(s3, bucket) == []
