"""CambTtsStreamToStorageOperator against the emulator: file:// and s3://, bad input, cut bodies, the cache.

Everything goes over loopback: the emulator's ``/tts-stream`` and, for s3://, the moto server.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts import cache
from airflow_provider_tts.exceptions import (
    TtsConfigError,
    TtsConnectionError,
    TtsInvalidRequestError,
    TtsProtocolError,
    TtsServerError,
)
from airflow_provider_tts.fingerprint import fingerprint_hex, request_fingerprint
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from airflow_provider_tts.vendors.camb import validate_stream_fields
from tests.conftest import TEST_KEY, ConnFactory
from tests.operators.conftest import ti_context

TEXT = "Every night the same texts, paid for once."


def _op(conn_id: str, destination: Any, **kw: Any) -> CambTtsStreamToStorageOperator:
    kw.setdefault("text", TEXT)
    kw.setdefault("language", "en-us")
    kw.setdefault("voice_id", 20303)
    kw.setdefault("output_format", "wav")
    kw.setdefault("task_id", "speak")
    return CambTtsStreamToStorageOperator(tts_conn_id=conn_id, destination=destination, **kw)


def _streams(emu: Any) -> int:
    return int(emu.stats()["requests_by_endpoint"].get("stream", 0))


def _entries(folder: Path) -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted((folder / cache.CACHE_FOLDER).glob("*.json"))]


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def test_folder_destination_named_by_fingerprint_then_served_from_cache(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    first = _op(conn, f"file://{tmp_path}/out/").execute(ti_context())
    fp = request_fingerprint(
        "camb_ai",
        "tts-stream",
        validate_stream_fields(
            {"text": TEXT, "language": "en-us", "voice_id": 20303, "output_configuration": {"format": "wav"}}
        ),
    )
    name = f"{fingerprint_hex(fp)[:16]}.wav"
    assert first["uri"] == f"file://{tmp_path}/out/{name}"
    assert first["fingerprint"] == fp
    assert first["cached"] is False
    assert first["credits"] == len(TEXT)
    assert first["tts_task_id"] is None
    assert first["content_type"] == "audio/wav"
    stored = tmp_path / "out" / name
    assert stored.read_bytes()[:4] == b"RIFF"
    assert first["size_bytes"] == stored.stat().st_size
    assert first["duration_seconds"] > 0
    [entry] = _entries(tmp_path / "out")
    assert entry["fingerprint"] == fp
    assert (entry["state"], entry["file"], entry["size_bytes"]) == ("stored", name, first["size_bytes"])
    assert TEST_KEY not in json.dumps(entry)
    assert _streams(emu) == 1

    again = _op(conn, f"file://{tmp_path}/out/", task_id="speak_again").execute(ti_context(run_id="manual__2"))
    assert _streams(emu) == 1  # nothing paid the second time
    assert again["cached"] is True
    assert again["credits"] == 0
    assert {k: again[k] for k in ("uri", "size_bytes", "sha256", "content_type")} == {
        k: first[k] for k in ("uri", "size_bytes", "sha256", "content_type")
    }
    assert [f for f in _files(tmp_path / "out") if not f.startswith(cache.CACHE_FOLDER)] == [name]


def test_a_different_request_is_a_different_object_and_a_new_call(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    a = _op(conn, f"file://{tmp_path}/").execute(ti_context())
    b = _op(conn, f"file://{tmp_path}/", voice_id=7).execute(ti_context())
    c = _op(conn, f"file://{tmp_path}/", output_format="flac").execute(ti_context())
    assert len({a["uri"], b["uri"], c["uri"]}) == 3
    assert c["uri"].endswith(".flac")
    assert _streams(emu) == 3


def test_only_reuse_cached_decides_paying_overwrite_decides_writing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    _op(conn, f"file://{tmp_path}/").execute(ti_context())
    assert _op(conn, f"file://{tmp_path}/", reuse_cached=False).execute(ti_context())["cached"] is False
    assert _op(conn, f"file://{tmp_path}/", overwrite="replace").execute(ti_context())["cached"] is True
    assert _streams(emu) == 2


def test_cache_misses_when_the_object_no_longer_matches_its_sidecar(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    target = tmp_path / "a.wav"
    _op(conn, f"file://{target}").execute(ti_context())
    target.write_bytes(b"RIFF-truncated")  # someone replaced the audio behind the sidecar's back
    result = _op(conn, f"file://{target}").execute(ti_context())
    assert result["cached"] is False
    assert _streams(emu) == 2
    [entry] = (target.parent / cache.CACHE_FOLDER).glob("*.json")
    entry.write_text("{not json")  # an entry decides a payment: unreadable is an error, not a silent miss
    with pytest.raises(TtsStorageError, match="Delete it"):
        _op(conn, f"file://{target}").execute(ti_context())
    assert _streams(emu) == 2


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"text": "Hi"}, "text"),
        ({"text": "x" * 3001}, "text"),
        ({"language": "999"}, "language"),
        ({"language": "en-xx"}, "language"),
        ({"language": "english (us)"}, "language"),
        ({"voice_id": "twenty"}, "voice_id"),
        ({"output_format": "ogg"}, "output_configuration.format"),
        ({"output_configuration": {"format": "wav", "sample_rate": 12345}}, "output_configuration.sample_rate"),
        ({"inference_options": {"temperature": 9}}, "inference_options.temperature"),
        ({"voice_settings": {"speed": 2}}, "voice_settings.speed"),
    ],
)
def test_bad_input_fails_before_any_request(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, change: dict[str, Any], field: str
) -> None:
    conn = make_conn("camb_ai")
    # A templated text defers validation to execute(); a literal one fails at construction already.
    op = _op(conn, f"file://{tmp_path}/", **{**change, "text": "{{ params.t }}"})
    op.text = change.get("text", TEXT)  # as if rendered
    with pytest.raises(TtsInvalidRequestError, match=rf"{re.escape(field)}: .*got"):
        op.execute(ti_context())
    assert _streams(emu) == 0
    assert _files(tmp_path) == []


def test_literal_bad_input_fails_when_the_dag_is_parsed(make_conn: ConnFactory, tmp_path: Path) -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"language: .*BCP-47"):
        _op("unused", f"file://{tmp_path}/", language=999)


def test_contradicting_format_arguments_are_refused(tmp_path: Path) -> None:
    with pytest.raises(TtsConfigError, match="contradicts"):
        _op("unused", f"file://{tmp_path}/", output_format="wav", output_configuration={"format": "flac"})


def test_revid_connection_is_refused_before_any_request(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("revid_tts")
    with pytest.raises(TtsConfigError, match="no streaming TTS call"):
        _op(conn, f"file://{tmp_path}/").execute(ti_context())
    assert emu.stats()["requests_total"] == 0


def test_body_cut_mid_stream_leaves_nothing_and_is_not_resent(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")
    emu.inject("drop", endpoint="stream")
    with pytest.raises(TtsConnectionError, match="broke off"):
        _op(conn, f"file://{tmp_path}/out/").execute(ti_context())
    assert _streams(emu) == 1  # bytes were generated: resending would pay twice
    assert _files(tmp_path / "out") == []  # no audio, no temporary, no sidecar


@pytest.mark.parametrize("fault", ["500", "502", "504", "reset", "malformed_json", "html_200"])
def test_ambiguous_failures_are_not_resent(emu: Any, make_conn: ConnFactory, tmp_path: Path, fault: str) -> None:
    conn = make_conn("camb_ai")
    emu.inject(fault, endpoint="stream")
    with pytest.raises((TtsServerError, TtsConnectionError, TtsProtocolError)):
        _op(conn, f"file://{tmp_path}/").execute(ti_context())
    assert _streams(emu) == 1
    assert _files(tmp_path) == []


@pytest.mark.parametrize("fault", ["429", "503"])
def test_provably_unprocessed_failures_are_resent(emu: Any, make_conn: ConnFactory, tmp_path: Path, fault: str) -> None:
    conn = make_conn("camb_ai")
    emu.inject(fault, endpoint="stream")
    result = _op(conn, f"file://{tmp_path}/").execute(ti_context())
    assert result["cached"] is False
    assert _streams(emu) == 2


def test_connection_never_opened_is_resent(make_conn: ConnFactory, tmp_path: Path, monkeypatch: Any) -> None:
    """A refused connection sent nothing, so a resend cannot pay twice: the retries run, then it fails clearly."""
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    monkeypatch.setenv(
        "AIRFLOW_CONN_CAMB_CLOSED",
        json.dumps(
            {
                "conn_type": "camb_ai",
                "host": f"http://127.0.0.1:{port}/apis",
                "password": TEST_KEY,
                "extra": {"retry_backoff": 0.01, "max_retries": 2},
            }
        ),
    )
    attempts: list[int] = []
    from airflow_provider_tts.transport import retry  # the module whose retry loop looks it up

    real = retry.is_retryable

    def counting(exc: BaseException, idempotent: bool) -> bool:
        attempts.append(1)
        verdict = real(exc, idempotent)
        assert verdict is True  # never opened: safe to resend although the call is not idempotent
        return verdict

    monkeypatch.setattr(retry, "is_retryable", counting)
    with pytest.raises(TtsConnectionError):
        _op("camb_closed", f"file://{tmp_path}/").execute(ti_context())
    assert len(attempts) >= 2
    assert _files(tmp_path) == []


def test_s3_destination_and_cache(emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, s3: Any) -> None:
    conn = make_conn("camb_ai")
    first = _op(conn, f"s3://{bucket}/speech/", dest_conn_id=aws_conn, output_format="flac").execute(ti_context())
    key = first["uri"].split(f"s3://{bucket}/", 1)[1]
    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
    assert body[:4] == b"fLaC"
    assert len(body) == first["size_bytes"]
    keys = sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"])
    [entry_key] = [k for k in keys if k.startswith(f"speech/{cache.CACHE_FOLDER}/")]
    entry = json.loads(s3.get_object(Bucket=bucket, Key=entry_key)["Body"].read())
    assert entry["fingerprint"] == first["fingerprint"]
    assert entry["etag"] == s3.head_object(Bucket=bucket, Key=key)["ETag"].strip('"')  # from the PUT, no extra HEAD
    again = _op(conn, f"s3://{bucket}/speech/", dest_conn_id=aws_conn, output_format="flac").execute(ti_context())
    assert again["cached"] is True
    assert _streams(emu) == 1
    assert sorted(o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]) == keys


def test_s3_cut_mid_stream_leaves_nothing(
    emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, s3: Any
) -> None:
    conn = make_conn("camb_ai")
    emu.inject("drop", endpoint="stream")
    with pytest.raises(TtsConnectionError):
        _op(conn, f"s3://{bucket}/speech/", dest_conn_id=aws_conn).execute(ti_context())
    assert s3.list_objects_v2(Bucket=bucket).get("Contents", []) == []


def test_fingerprint_name_refuses_non_hex() -> None:
    with pytest.raises(ValueError, match="hex fingerprint"):
        cache.fingerprint_name("../../etc/passwd-0123456789", ".wav")


def test_a_folder_written_by_0_1_is_adopted_not_paid_again(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    """0.1 named the file after the fingerprint and wrote a ``<file>.tts.json`` sidecar: it is found and adopted."""
    import hashlib

    conn = make_conn("camb_ai")
    first = _op(conn, f"file://{tmp_path}/").execute(ti_context())
    name = Path(first["uri"]).name
    for entry in (tmp_path / cache.CACHE_FOLDER).glob("*.json"):  # back to what 0.1 left
        entry.unlink()
    sidecar = {"version": 1, "fingerprint": first["fingerprint"], "size_bytes": first["size_bytes"],
               "sha256": first["sha256"], "content_type": "audio/wav"}  # fmt: skip
    (tmp_path / f"{name}.tts.json").write_text(json.dumps(sidecar))
    again = _op(conn, f"file://{tmp_path}/").execute(ti_context(run_id="manual__2"))
    assert (again["cached"], _streams(emu)) == (True, 1)
    assert [e["state"] for e in _entries(tmp_path)] == ["stored"]  # adopted: the next run reads it directly
    (tmp_path / name).write_bytes(b"RIFF" + b"\0" * (first["size_bytes"] - 4))  # same size, other bytes
    assert hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() != first["sha256"]
    assert _op(conn, f"file://{tmp_path}/").execute(ti_context(run_id="manual__3"))["cached"] is False
    assert _streams(emu) == 2
