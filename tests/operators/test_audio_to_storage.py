"""TtsAudioToStorageOperator against the emulator, storing to ``file://``.

Everything goes over real loopback sockets: the emulator for the vendor APIs and storage host, a
tiny canned HTTP server (``audio_server``) for responses the emulator cannot give (a short body, no
Content-Length, redirects to other schemes). The kill test runs the operator in a subprocess.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
from pathlib import Path
from typing import Any

import pytest
from airflow.sdk import Asset, AssetAlias, ObjectStoragePath
from airflow.sdk.execution_time.context import OutletEventAccessors

from airflow_provider_tts import storage
from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.exceptions import (
    TtsConfigError,
    TtsConnectionError,
    TtsError,
    TtsPermanentTaskFailedError,
    TtsProtocolError,
    TtsTaskFailedError,
    TtsWaitTimeoutError,
)
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from airflow_provider_tts.status import TtsTaskStatus
from airflow_provider_tts.storage import TtsStorageError, store_stream
from airflow_provider_tts.storing import STORE_ATTEMPTS
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import PAIRS, TEST_KEY, ConnFactory
from tests.operators.conftest import kill_when, run_worker, ti_context

EXTENSIONS = {"audio/flac": ".flac", "audio/wav": ".wav"}
MAGIC = {"audio/flac": b"fLaC", "audio/wav": b"RIFF"}


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


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _all_files(root: Path) -> list[str]:
    """Every file under ``root``, hidden ones (temporaries) included, relative to it."""
    if not root.exists():
        return []
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


def _partials(root: Path) -> list[str]:
    return [name for name in _all_files(root) if name.endswith(".partial")]


def _audio_requests(emu: Any) -> int:
    by_endpoint = emu.stats()["requests_by_endpoint"]
    return int(by_endpoint.get("result", 0)) + int(by_endpoint.get("storage", 0))


def _succeeded(url: str, task_id: str = "rv-1") -> dict[str, Any]:
    """A success event for a Revid task whose audio lives at ``url`` (what the trigger would send)."""
    status = TtsTaskStatus(
        api="revid_tts",
        kind="tts",
        tts_task_id=task_id,
        state="succeeded",
        vendor_status="completed",
        audio_url=url,
        duration_seconds=1.5,
    )
    return {"status": "success", "tts_task_id": task_id, "task_status": status.to_xcom()}


async def _first_event(trigger: TtsTaskTrigger) -> dict[str, Any]:
    async for event in trigger.run():
        return dict(event.payload)
    raise AssertionError("the trigger yielded no event")


# ------------------------------------------------------------------------------ downloads


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_every_pair_downloads_into_a_folder(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, kind: str
) -> None:
    task_id = emu.create_task(api, kind, delay=0)
    folder = tmp_path / "audio" / "out"  # does not exist yet: created
    result = _op(make_conn(api), task_id, f"file://{folder}/", kind).execute(ti_context())

    content_type = result["content_type"]
    assert content_type in EXTENSIONS
    stored = folder / f"{TI_NAME}{EXTENSIONS[content_type]}"
    assert _all_files(folder) == [stored.name]  # no temporary left beside it
    data = stored.read_bytes()
    assert data[:4] == MAGIC[content_type]
    assert result == {
        "uri": f"file://{stored}",
        "size_bytes": len(data),
        "sha256": hashlib.sha256(data).hexdigest(),
        "content_type": content_type,
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
    json.dumps(result)  # XCom-able


def test_camb_tts_is_flac_and_revid_is_wav(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    camb = emu.create_task("camb_ai", "tts", delay=0)
    revid = emu.create_task("revid_tts", "tts", delay=0)
    assert _op(make_conn("camb_ai"), camb, f"file://{tmp_path}/").execute({})["uri"].endswith(f"/{NAME}.flac")
    assert _op(make_conn("revid_tts"), revid, f"file://{tmp_path}/").execute({})["uri"].endswith(f"/{NAME}.wav")


def test_literal_file_destination(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0)
    target = tmp_path / "a" / "b" / "rain.sound"  # the name is the caller's, whatever the content type
    result = _op(make_conn("camb_ai"), task_id, f"file://{target}", "text-to-sound").execute({})
    assert result["uri"] == f"file://{target}"
    assert result["sha256"] == _sha256(target)
    assert result["size_bytes"] == target.stat().st_size
    assert _all_files(target.parent) == ["rain.sound"]


def test_object_storage_path_destination(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("revid_tts", "srt-to-speech", delay=0)
    target = tmp_path / "subs.wav"
    op = _op(make_conn("revid_tts"), task_id, ObjectStoragePath(f"file://{target}"), "srt-to-speech")
    result = op.execute({})
    assert result["uri"] == f"file://{target}"
    assert result["sha256"] == _sha256(target)
    assert result["duration_seconds"] > 0


def test_duration_from_the_wav_header_matches_the_file(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    # Camb reports no duration: it comes from the header of the bytes on their way through.
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=44 + 22050 * 2 * 3)
    result = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", "text-to-sound").execute({})
    data = Path(result["uri"].removeprefix("file://")).read_bytes()
    assert storage.audio_duration(data[:65536]) == pytest.approx(result["duration_seconds"])
    assert result["duration_seconds"] == pytest.approx(3.0, rel=0.01)


def test_revid_download_never_sends_the_key(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn_id = make_conn("revid_tts")
    for kind in ("tts", "srt-to-speech"):
        task_id = emu.create_task("revid_tts", kind, delay=0)
        _op(conn_id, task_id, f"file://{tmp_path}/", kind).execute({})
    assert len(emu.storage_requests()) >= 2
    assert emu.storage_key_leaks() == []


# -------------------------------------------------------------------------------- waiting


def test_pending_task_is_polled_then_downloaded(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0, pending_polls=2)
    result = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/").execute({})
    assert emu.stats()["polls_by_task"][task_id] == 3
    assert result["sha256"] == _sha256(tmp_path / f"{NAME}.flac")


def test_deferrable_defers_then_downloads_on_resume(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn_id = make_conn("revid_tts")
    task_id = emu.create_task("revid_tts", "tts", delay=0, pending_polls=2)
    retry = {"max_retries": 2}
    op = _op(conn_id, task_id, f"file://{tmp_path}/out/", deferrable=True, wait_timeout=600, request_retry=retry)
    before = time.time()
    with pytest.raises(TaskDeferred) as info:
        op.execute(ti_context())
    assert _all_files(tmp_path / "out") == []
    assert _audio_requests(emu) == 0

    deferred = info.value
    assert deferred.method_name == "execute_complete"
    trigger = deferred.trigger
    assert isinstance(trigger, TtsTaskTrigger)
    classpath, kwargs = trigger.serialize()
    assert classpath == "airflow_provider_tts.triggers.tts.TtsTaskTrigger"
    assert kwargs["tts_conn_id"] == conn_id
    assert kwargs["tts_task_id"] == task_id
    assert kwargs["kind"] == "tts"
    assert kwargs["retry"] == {"max_retries": 2}
    assert kwargs["poll_interval"] == 0.05
    assert before + 599 <= kwargs["deadline"] <= time.time() + 600
    assert kwargs["deadline"] - kwargs["started_at"] == pytest.approx(600)
    assert TEST_KEY not in json.dumps(kwargs)

    event = asyncio.run(_first_event(TtsTaskTrigger(**kwargs)))  # the triggerer's half
    assert event["status"] == "success"
    result = op.execute_complete(ti_context(), event)
    stored = tmp_path / "out" / f"{TI_NAME}.wav"
    assert result["uri"] == f"file://{stored}"
    assert result["sha256"] == _sha256(stored)
    assert result["duration_seconds"] > 0


def test_deferrable_finished_task_downloads_without_deferring(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0)
    result = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", "text-to-sound", deferrable=True).execute({})
    assert result["sha256"] == _sha256(tmp_path / f"{NAME}.wav")
    assert emu.stats()["polls_by_task"][task_id] == 1


FAILURES = [
    ("camb_ai", "tts", {"outcome": "error"}, TtsTaskFailedError),
    ("camb_ai", "tts", {"outcome": "error", "reason": "HARMFUL_CONTENT_DETECTED"}, TtsPermanentTaskFailedError),
    ("camb_ai", "text-to-sound", {"outcome": "timeout"}, TtsPermanentTaskFailedError),
    ("camb_ai", "tts", {"outcome": "payment_required"}, TtsPermanentTaskFailedError),
    ("camb_ai", "tts", {"outcome": "not_found"}, TtsPermanentTaskFailedError),
    ("revid_tts", "tts", {"outcome": "failed"}, TtsTaskFailedError),
    ("revid_tts", "srt-to-speech", {"outcome": "not_found"}, TtsPermanentTaskFailedError),
]


@pytest.mark.parametrize(("api", "kind", "spec", "expected"), FAILURES, ids=lambda v: str(v))
def test_failed_task_fails_like_the_sensor_before_writing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, kind: str, spec: dict[str, Any], expected: type
) -> None:
    conn_id = make_conn(api)
    grace = {"not_found_grace": 0}

    def raised(call: Any) -> type:
        with pytest.raises(TtsError) as info:
            call()
        return type(info.value)

    sensor_task = emu.create_task(api, kind, delay=0, **spec)
    sensor = TtsTaskSensor(
        task_id="wait", tts_conn_id=conn_id, tts_task_id=sensor_task, kind=kind, poke_interval=0.05, **grace
    )
    sensor_class = raised(lambda: sensor.execute({}))
    assert sensor_class is expected

    # In the worker: already failed, and failing after a wait.
    for pending in (None, 1):
        task_id = emu.create_task(api, kind, delay=0, pending_polls=pending, **spec)
        op = _op(conn_id, task_id, f"file://{tmp_path}/out/", kind, **grace)
        assert raised(lambda op=op: op.execute({})) is sensor_class

    # Deferred: the trigger's failure event, fed back to execute_complete. (A task that is not
    # found fails at the check before deferring; its trigger event is judged the same way.)
    task_id = emu.create_task(api, kind, delay=0, pending_polls=1, **spec)
    op = _op(conn_id, task_id, f"file://{tmp_path}/out/", kind, deferrable=True, **grace)
    failed_at_check: type | None = None
    try:
        op.execute({})
    except TaskDeferred as deferred:
        trigger = deferred.trigger
    except TtsError as exc:
        failed_at_check = type(exc)
        trigger = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, **grace)
    else:
        raise AssertionError("neither deferred nor failed")
    assert failed_at_check in ((None,) if spec["outcome"] != "not_found" else (sensor_class,))
    event = asyncio.run(_first_event(trigger))
    assert event["status"] == "failed"
    assert raised(lambda: op.execute_complete({}, event)) is sensor_class

    assert _all_files(tmp_path / "out") == []
    assert _audio_requests(emu) == 0


def test_wait_timeout_raises_before_writing(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=3600)
    op = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/out/", wait_timeout=0.3)
    with pytest.raises(TtsWaitTimeoutError):
        op.execute({})
    assert _all_files(tmp_path / "out") == []


@pytest.mark.parametrize(
    "event",
    [
        None,
        {},
        {"status": "bogus"},
        {"status": "success", "task_status": {"state": "succeeded"}},
        {"status": "success", "task_status": None},
        {
            "status": "success",
            "task_status": {
                "api": "camb_ai",
                "kind": "tts",
                "tts_task_id": "t",
                "state": "failed",
                "vendor_status": "ERROR",
                "retryable": True,
            },
        },
        {"status": "error", "error_type": "TtsAuthError", "message": "bad key"},
        {"status": "timeout", "message": "still pending"},
    ],
)
def test_bad_event_is_an_error(emu: Any, make_conn: ConnFactory, tmp_path: Path, event: Any) -> None:
    op = _op(make_conn("camb_ai"), "t", f"file://{tmp_path}/out/", deferrable=True)
    with pytest.raises(TtsError):
        op.execute_complete({}, event)
    assert _all_files(tmp_path / "out") == []
    assert _audio_requests(emu) == 0


# ------------------------------------------------------------------- atomic, failure cleanup


@pytest.mark.parametrize(("api", "kind", "endpoint"), [("camb_ai", "tts", "result"), ("revid_tts", "tts", "storage")])
def test_dropped_download_leaves_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, kind: str, endpoint: str
) -> None:
    task_id = emu.create_task(api, kind, delay=0)
    emu.inject("drop", 1, endpoint=endpoint)
    with pytest.raises(TtsConnectionError, match="broke off"):
        _op(make_conn(api), task_id, f"file://{tmp_path}/out/", kind).execute(ti_context())
    assert emu.stats()["faults_by_kind"]["drop"] == 1
    assert _all_files(tmp_path / "out") == []  # neither the destination nor a temporary


def test_failure_keeps_an_existing_destination_intact(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    target = tmp_path / "keep.wav"
    target.write_bytes(b"previous version")
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    emu.inject("drop", 1, endpoint="storage")
    with pytest.raises(TtsConnectionError):
        _op(make_conn("revid_tts"), task_id, f"file://{target}", overwrite="replace").execute({})
    assert target.read_bytes() == b"previous version"
    assert _all_files(tmp_path) == ["keep.wav"]


def test_write_failure_mid_download_is_a_storage_error_and_leaves_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The disk fills up after 1 MiB: the error becomes a storage error and the temporary goes.
    import errno

    written = 0
    real_write_all = storage.writers._write_all

    def write_all(out: Any, chunk: bytes, step: int) -> None:
        nonlocal written
        written += len(chunk)
        if written > 1024**2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write_all(out, chunk, step)

    monkeypatch.setattr(storage.writers, "_write_all", write_all)
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=8 * 1024**2)
    with pytest.raises(TtsStorageError, match="No space left on device"):
        _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/out/", "text-to-sound").execute(ti_context())
    assert _all_files(tmp_path / "out") == []


def test_short_body_against_content_length_is_an_error(
    make_conn: ConnFactory, audio_server: Any, tmp_path: Path
) -> None:
    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/out/", deferrable=True)
    with pytest.raises((TtsConnectionError, TtsProtocolError)):
        op.execute_complete({}, _succeeded(f"{audio_server.url}/short?n=200000"))
    assert _all_files(tmp_path / "out") == []


def test_store_rejects_a_stream_shorter_than_announced(tmp_path: Path) -> None:
    # The transport enforces Content-Length too; the store checks on its own, whatever the source.
    path = ObjectStoragePath(f"file://{tmp_path}/x.wav")
    with pytest.raises(TtsProtocolError, match="announced 1001 bytes, sent 1000"):
        store_stream(
            iter([b"x" * 1000]),
            path,
            temp_name=".x.partial",
            content_type="audio/wav",
            content_length=1001,
            tts_task_id="t",
        )
    assert _all_files(tmp_path) == []


def test_announced_size_over_the_cap_fails_before_writing(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=300_000)
    op = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/out/", "text-to-sound", max_bytes=100_000)
    with pytest.raises(TtsProtocolError, match="over the 100000-byte cap"):
        op.execute({})
    assert _all_files(tmp_path / "out") == []


def test_unsized_body_over_the_cap_fails_while_writing(
    make_conn: ConnFactory, audio_server: Any, tmp_path: Path
) -> None:
    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/out/", max_bytes=100_000, chunk_bytes=16384)
    with pytest.raises(TtsProtocolError, match="exceeded the 100000-byte cap"):
        op.execute_complete({}, _succeeded(f"{audio_server.url}/unsized?n=1000000"))
    assert _all_files(tmp_path / "out") == []


def test_unsized_body_under_the_cap_is_stored(make_conn: ConnFactory, audio_server: Any, tmp_path: Path) -> None:
    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/")
    result = op.execute_complete({}, _succeeded(f"{audio_server.url}/unsized?n=50000"))
    assert result["size_bytes"] == 50000
    assert result["sha256"] == _sha256(tmp_path / f"{NAME}.wav")
    assert result["duration_seconds"] == 1.5  # the vendor's figure wins over the header's


@pytest.mark.parametrize("url", ["ftp://files.example/a.wav", "file:///etc/passwd", "s3://bucket/a.wav", "//x/a"])
def test_non_http_audio_url_is_refused_before_any_request(make_conn: ConnFactory, tmp_path: Path, url: str) -> None:
    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/out/")
    with pytest.raises(TtsProtocolError, match="refusing audio_url"):
        op.execute_complete({}, _succeeded(url))
    assert _all_files(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("content_type", "extension"),
    [
        ("audio/mpeg", ".mp3"),
        ("audio/x-wav", ".wav"),
        ("audio/wav", ".wav"),
        ("audio/flac", ".flac"),
        ("AUDIO/FLAC; charset=binary", ".flac"),
        ("application/octet-stream", ".wav"),  # untyped: the first bytes say RIFF/WAVE
        ("binary/octet-stream", ".wav"),
        ("audio/x-unheard-of", ".bin"),
    ],
)
def test_folder_file_extension_follows_the_content_type(
    make_conn: ConnFactory,
    audio_server: Any,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    content_type: str,
    extension: str,
) -> None:
    from urllib.parse import quote

    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tts.storage"):
        result = op.execute_complete({}, _succeeded(f"{audio_server.url}/wav?n=1000&ct={quote(content_type)}"))
    assert result["uri"] == f"file://{tmp_path}/{NAME}{extension}"
    assert _all_files(tmp_path) == [f"{NAME}{extension}"]
    warned = [r for r in caplog.records if "Unknown audio content type" in r.getMessage()]
    assert bool(warned) == (extension == ".bin")


def test_redirect_to_another_scheme_is_refused(make_conn: ConnFactory, audio_server: Any, tmp_path: Path) -> None:
    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/out/")
    with pytest.raises(TtsProtocolError, match="non-http"):
        op.execute_complete({}, _succeeded(f"{audio_server.url}/redirect?to=file:///etc/passwd"))
    assert _all_files(tmp_path / "out") == []


def test_redirect_to_http_is_followed_without_the_key(
    make_conn: ConnFactory, audio_server: Any, tmp_path: Path
) -> None:
    audio_server.headers_seen.clear()
    target = f"{audio_server.url}/wav?n=40000"
    result = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/").execute_complete(
        {}, _succeeded(f"{audio_server.url}/redirect?to={target}")
    )
    assert result["size_bytes"] == 40000
    assert len(audio_server.headers_seen) == 2
    assert all("x-api-key" not in headers for headers in audio_server.headers_seen)


# ------------------------------------------------------------------------- killed worker


def test_killed_download_leaves_no_destination_and_the_retry_overwrites_its_temporary(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn_id = make_conn("camb_ai")
    size = 64 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    folder = tmp_path / "out"
    final = folder / f"{TI_NAME}.wav"
    ready = tmp_path / "ready"
    run_id = "scheduled__2026-01-01"
    op = _op(conn_id, task_id, f"file://{folder}/", "text-to-sound")
    temp = folder / op._temp_name(ti_context(run_id), final.name)
    proc = run_worker(
        {
            "tts_conn_id": conn_id,
            "tts_task_id": task_id,
            "kind": "text-to-sound",
            "destination": f"file://{folder}/",
            "run_id": run_id,
            "ready_file": str(ready),
            "pause_after_bytes": 8 * 1024**2,
            "pause_seconds": 2.0,
        }
    )

    def nothing_visible_yet() -> None:
        assert not final.exists()

    kill_when(
        lambda: ready.exists() and temp.exists() and temp.stat().st_size >= 8 * 1024**2, proc, nothing_visible_yet
    )

    # Killed mid-way: no destination; only the temporary, hidden and named for this task instance.
    assert not final.exists()
    assert _all_files(folder) == [temp.name]
    assert 0 < temp.stat().st_size < size

    # The retry (same dag, task, run, map index) writes the same temporary and moves it into place.
    result = op.execute(ti_context(run_id))
    assert result["size_bytes"] == size == final.stat().st_size
    assert result["sha256"] == _sha256(final)
    assert _all_files(folder) == [final.name]


# -------------------------------------------------------------------------------- re-runs


def test_skip_if_identical_does_not_rewrite(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn_id = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(conn_id, task_id, f"file://{tmp_path}/")  # skip_if_identical is the default
    first = op.execute(ti_context())
    stored = tmp_path / f"{TI_NAME}.flac"
    before = stored.stat()
    time.sleep(0.01)
    second = op.execute(ti_context())
    after = stored.stat()
    assert second == first
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)
    assert _all_files(tmp_path) == [stored.name]


def test_skip_if_identical_replaces_different_content(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    stale = tmp_path / f"{NAME}.wav"
    stale.write_bytes(b"RIFF stale")
    result = _op(make_conn("revid_tts"), task_id, f"file://{tmp_path}/").execute({})
    assert result["sha256"] == _sha256(stale) != hashlib.sha256(b"RIFF stale").hexdigest()


def test_replace_rewrites(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", overwrite="replace")
    first = op.execute({})
    stored = tmp_path / f"{NAME}.flac"
    inode = stored.stat().st_ino
    assert op.execute({}) == first
    assert stored.stat().st_ino != inode  # a new file was moved into place
    assert _all_files(tmp_path) == [stored.name]


def test_fail_policy_raises_before_downloading(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn_id = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    target = tmp_path / "speech.flac"
    target.write_bytes(b"already here")
    # Refused before anything is requested, and not retryable: the next try would find the same file.
    with pytest.raises(TtsConfigError, match="already exists"):
        _op(conn_id, task_id, f"file://{target}", overwrite="fail").execute({})
    assert _audio_requests(emu) == 0
    assert target.read_bytes() == b"already here"

    # In a folder the extension follows the audio: a file of that name with any audio extension is in the way.
    _op(conn_id, task_id, f"file://{tmp_path}/").execute({})
    stored = tmp_path / f"{NAME}.flac"
    mtime = stored.stat().st_mtime_ns
    requests = _audio_requests(emu)
    with pytest.raises(TtsConfigError, match="already holds"):
        _op(conn_id, task_id, f"file://{tmp_path}/", overwrite="fail").execute({})
    assert _audio_requests(emu) == requests
    assert stored.stat().st_mtime_ns == mtime
    assert _partials(tmp_path) == []


# ------------------------------------------------------------ errors before anything is written


@pytest.mark.parametrize(
    ("destination", "message"),
    [
        ("relative/audio.wav", "has no scheme"),
        ("/abs/audio.wav", "has no scheme"),
        ("nosuch://bucket/audio.wav", "no filesystem is registered for scheme 'nosuch'"),
        ("", "rendered to ''"),
        ("   ", "rendered to"),
        (None, "rendered to None"),
    ],
)
def test_bad_destination_fails_before_any_request(
    emu: Any, make_conn: ConnFactory, destination: Any, message: str
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, "file:///placeholder/")
    op.destination = destination
    with pytest.raises(TtsConfigError, match=re.escape(message)):
        op.execute({})
    assert emu.stats()["requests_total"] == 0


def test_template_rendering_empty_fails_before_any_request(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), "{{ params.task }}", "{{ params.dest }}")
    context: dict[str, Any] = {"params": {"task": task_id, "dest": ""}}
    op.render_template_fields(context)
    assert (op.tts_task_id, op.destination) == (task_id, "")
    with pytest.raises(TtsConfigError, match="destination rendered to ''"):
        op.execute(context)

    op = _op(make_conn("camb_ai"), "{{ params.task }}", "{{ params.dest }}")
    context = {"params": {"task": "", "dest": f"file://{tmp_path}/"}}
    op.render_template_fields(context)
    with pytest.raises(TtsConfigError, match="tts_task_id rendered to ''"):
        op.execute(context)
    assert emu.stats()["requests_total"] == 0
    assert _all_files(tmp_path) == []


def test_templated_destination_renders(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, "file://{{ params.root }}/{{ params.name }}.flac")
    context: dict[str, Any] = {"params": {"root": str(tmp_path), "name": "rendered"}}
    op.render_template_fields(context)
    assert op.execute(context)["uri"] == f"file://{tmp_path}/rendered.flac"


def test_bad_arguments_fail_at_parse_time() -> None:
    with pytest.raises(TtsConfigError, match="overwrite"):
        TtsAudioToStorageOperator(task_id="d", tts_task_id="t", destination="file:///x/", overwrite="sometimes")  # type: ignore[arg-type]
    with pytest.raises(TtsConfigError, match="kind"):
        TtsAudioToStorageOperator(task_id="d", tts_task_id="t", destination="file:///x/", kind="music")
    with pytest.raises(TtsConfigError, match="max_bytes"):
        TtsAudioToStorageOperator(task_id="d", tts_task_id="t", destination="file:///x/", max_bytes=0)


# -------------------------------------------------------------------------------- outlets


def test_literal_destination_is_an_asset_outlet(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    uri = f"file://{tmp_path}/speech.flac"
    op = _op("c", "t", uri)
    assert op.outlets == [Asset(uri)]
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, uri)
    events = OutletEventAccessors()
    assert op.execute({"outlet_events": events})["uri"] == uri
    assert all(not accessor.asset_alias_events for accessor in events._dict.values())


@pytest.mark.parametrize(
    "destination", ["file://{{ params.root }}/speech.flac", "file://{{ params.root }}/", "file://ROOT/"]
)
def test_runtime_destination_is_an_alias_filled_by_execute(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, destination: str
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    op = _op(make_conn("camb_ai"), task_id, destination.replace("ROOT", str(tmp_path)), asset_alias="tts/speech")
    assert op.outlets == [AssetAlias(name="tts/speech")]
    context: dict[str, Any] = {"params": {"root": str(tmp_path)}, "outlet_events": OutletEventAccessors()}
    op.render_template_fields(context)
    result = op.execute(context)
    alias_events = context["outlet_events"][AssetAlias(name="tts/speech")].asset_alias_events
    assert [e.dest_asset_key.uri for e in alias_events] == [result["uri"]]
    assert alias_events[0].source_alias_name == "tts/speech"


# ------------------------------------------------------------------------------- progress


def test_progress_is_logged_with_bytes_percent_and_rate(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(storage.store, "PROGRESS_LOG_INTERVAL", 0.0)  # every chunk, instead of every 5 s
    size = 4 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    with caplog.at_level(logging.INFO, logger="airflow_provider_tts.storage"):
        _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", "text-to-sound").execute({})
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("Downloaded ")]
    assert lines
    pattern = re.compile(rf"Downloaded (\d+) of {size} bytes \((\d+)%\) at [\d.]+ MiB/s")
    assert all(pattern.fullmatch(line) for line in lines), lines
    done = [int(pattern.fullmatch(line).group(1)) for line in lines]  # type: ignore[union-attr]
    assert done == sorted(done)
    assert done[-1] == size


def test_progress_is_rate_limited(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(storage.store, "PROGRESS_LOG_INTERVAL", 3600.0)
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=4 * 1024**2)
    with caplog.at_level(logging.INFO, logger="airflow_provider_tts.storage"):
        _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/", "text-to-sound").execute({})
    assert not [r for r in caplog.records if r.getMessage().startswith("Downloaded ")]
    assert [r for r in caplog.records if r.getMessage().startswith("Stored ")]


# ------------------------------------------------------------------ one write path per filesystem


@pytest.mark.parametrize(
    ("uri", "mode"),
    [
        ("file:///data/a.wav", "rename"),
        ("s3://bucket/a.wav", "direct"),
        ("gs://bucket/a.wav", "direct"),
        ("gcs://bucket/a.wav", "direct"),
        ("abfs://container/a.wav", "direct"),
        ("az://container/a.wav", "direct"),
        ("memory://scratch/a.wav", "copy"),
        ("sftp://host/a.wav", "copy"),
    ],
)
def test_the_write_mode_is_decided_per_scheme(uri: str, mode: str) -> None:
    from types import SimpleNamespace

    path: Any = SimpleNamespace(protocol=uri.split("://")[0])
    assert storage.write_mode(path) == mode


@pytest.fixture
def memory_scheme(monkeypatch: pytest.MonkeyPatch) -> Any:
    """``memory://`` registered as an Airflow filesystem: a store with no atomic rename (the copy mode)."""
    from fsspec.implementations.memory import MemoryFileSystem

    from tests._airflow import registered_filesystems

    fs = MemoryFileSystem()
    monkeypatch.setitem(registered_filesystems(), "memory", lambda conn_id, options=None: fs)
    yield fs
    fs.rm("/", recursive=True)


def test_copy_mode_writes_a_temporary_then_moves_it_into_place(memory_scheme: Any) -> None:
    path = storage.destination_path("memory://scratch/a.wav", None)
    assert storage.write_mode(path) == "copy"
    moves: list[tuple[str, str]] = []
    real_mv = memory_scheme.mv
    memory_scheme.mv = lambda src, dst, **kw: (moves.append((src, dst)), real_mv(src, dst, **kw))[1]
    data = b"RIFF" + b"\0" * 70_000
    stored = store_stream(
        iter([data]), path, temp_name=".a.wav.x.partial", content_type="audio/wav", content_length=None,
        tts_task_id="t",
    )  # fmt: skip
    assert stored.sha256 == hashlib.sha256(data).hexdigest()
    assert moves == [("/scratch/.a.wav.x.partial", "/scratch/a.wav")]
    assert memory_scheme.cat("/scratch/a.wav") == data
    assert memory_scheme.ls("/scratch", detail=False) == ["/scratch/a.wav"]

    def broken() -> Any:
        yield data[:5000]
        raise OSError("disk on fire")

    with pytest.raises(TtsStorageError, match="disk on fire"):
        store_stream(broken(), path, temp_name=".a.wav.x.partial", content_type="audio/wav", content_length=None,
                     tts_task_id="t", overwrite="replace")  # fmt: skip
    assert memory_scheme.ls("/scratch", detail=False) == ["/scratch/a.wav"]  # no temporary left
    assert memory_scheme.cat("/scratch/a.wav") == data


def test_rename_mode_never_goes_through_object_storage_path_move(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # ObjectStoragePath.move and .open record hook lineage: the temporary would become an input asset.
    def refuse(*args: Any, **kwargs: Any) -> Any:
        raise AssertionError("the write path must not use ObjectStoragePath.move/open")

    monkeypatch.setattr(ObjectStoragePath, "move", refuse)
    monkeypatch.setattr(ObjectStoragePath, "open", refuse)
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    result = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/").execute(ti_context())
    assert result["sha256"] == _sha256(tmp_path / f"{TI_NAME}.flac")


# --------------------------------------------------------------- folders, however they are given


@pytest.mark.parametrize("form", ["string with slash", "string without slash", "ObjectStoragePath"])
def test_an_existing_folder_receives_the_file_however_it_is_given(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, form: str
) -> None:
    # ObjectStoragePath("file:///…/audio/") loses its slash: the file used to be moved INTO the
    # folder under its temporary name while the XCom said file:///…/audio.
    folder = tmp_path / "audio"
    folder.mkdir()
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    destination: Any = {
        "string with slash": f"file://{folder}/",
        "string without slash": f"file://{folder}",
        "ObjectStoragePath": ObjectStoragePath(f"file://{folder}/"),
    }[form]
    result = _op(make_conn("camb_ai"), task_id, destination).execute(ti_context())
    final = folder / f"{TI_NAME}.flac"
    assert result["uri"] == f"file://{final}"
    assert _all_files(folder) == [final.name]
    assert result["size_bytes"] == final.stat().st_size
    assert result["sha256"] == _sha256(final)


def test_a_folder_where_the_file_should_go_is_refused_and_left_alone(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    (tmp_path / f"{TI_NAME}.flac").mkdir()
    (tmp_path / f"{TI_NAME}.flac" / "inside.txt").write_text("keep")
    with pytest.raises(TtsStorageError, match="is a folder"):
        _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/").execute(ti_context())
    assert _all_files(tmp_path) == [f"{TI_NAME}.flac/inside.txt"]


# ------------------------------------------------------------------------ a 200 that is not audio


@pytest.mark.parametrize(("api", "endpoint"), [("camb_ai", "result"), ("revid_tts", "storage")])
def test_an_html_page_with_status_200_is_not_stored(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, endpoint: str
) -> None:
    task_id = emu.create_task(api, "tts", delay=0)
    emu.inject("html_200", STORE_ATTEMPTS, endpoint=endpoint)  # every download of the try: a page, never stored
    with pytest.raises(TtsProtocolError, match=r"got text/html starting with '<!DOCTYPE html>") as info:
        _op(make_conn(api), task_id, f"file://{tmp_path}/out/").execute(ti_context())
    assert "nothing was stored" in str(info.value)
    assert _all_files(tmp_path / "out") == []


@pytest.mark.parametrize(
    ("api", "endpoint", "kind"),
    [("camb_ai", "result", "html_200"), ("camb_ai", "result", "malformed_json"), ("revid_tts", "storage", "html_200")],
)
def test_one_glitched_download_is_tried_again_in_the_same_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, api: str, endpoint: str, kind: str
) -> None:
    """The task is paid and done: a maintenance page or garbled answer at download time costs no Airflow retry.

    Found by the chaos run (RELIABILITY D3): with every transient fault kind, one-task operators failed
    tries on a 200 maintenance page at the result URL, sharing the retry budget with worker losses.
    """
    task_id = emu.create_task(api, "tts", delay=0)
    emu.inject(kind, 1, endpoint=endpoint)
    result = _op(make_conn(api), task_id, f"file://{tmp_path}/out/").execute(ti_context())
    assert result["tts_task_id"] == task_id
    assert _all_files(tmp_path / "out") == [Path(result["uri"]).name]
    assert emu.stats()["creates_total"] == 0  # nothing paid again: the download alone was repeated


@pytest.mark.parametrize("content_type", ["text/html", "text/plain", "application/octet-stream", "application/xml"])
def test_a_login_page_is_refused_whatever_its_content_type(
    make_conn: ConnFactory, audio_server: Any, tmp_path: Path, content_type: str
) -> None:
    from urllib.parse import quote

    op = _op(make_conn("revid_tts"), "rv-1", f"file://{tmp_path}/out/")
    with pytest.raises(TtsProtocolError, match=rf"got {re.escape(content_type)} starting with '<!DOCTYPE html>"):
        op.execute_complete({}, _succeeded(f"{audio_server.url}/html?ct={quote(content_type)}"))
    assert _all_files(tmp_path / "out") == []


# ------------------------------------------------------------- names that contradict the content


@pytest.mark.parametrize(
    ("name", "stored"),
    [("daily.mp3", False), ("daily.wav", False), ("daily.flac", True), ("daily", True), ("daily.audio", True)],
)
def test_an_extension_that_contradicts_the_audio_is_refused_before_writing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, name: str, stored: bool
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)  # Camb tts audio is FLAC
    op = _op(make_conn("camb_ai"), task_id, f"file://{tmp_path}/{name}")
    if stored:
        assert op.execute(ti_context())["uri"] == f"file://{tmp_path}/{name}"
        assert _all_files(tmp_path) == [name]
        return
    with pytest.raises(TtsConfigError, match=rf"destination '{re.escape(name)}' says .* audio/flac \(\.flac\)"):
        op.execute(ti_context())
    assert _all_files(tmp_path) == []


def test_skip_if_identical_with_other_bytes_replaces_them_and_says_so(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    target = tmp_path / "daily.flac"
    target.write_bytes(b"fLaC yesterday's audio")
    with caplog.at_level(logging.WARNING, logger="airflow_provider_tts.storage"):
        result = _op(make_conn("camb_ai"), task_id, f"file://{target}").execute(ti_context())
    assert result["sha256"] == _sha256(target)
    assert any("held other bytes" in r.getMessage() and result["sha256"] in r.getMessage() for r in caplog.records)
