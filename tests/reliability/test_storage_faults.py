"""Storage faults: a refused S3 write, a full disk, an unreachable store — clear errors, nothing partial left.

Each test runs :class:`TtsAudioToStorageOperator` end to end (status poll, streaming download from
the emulator, write) and then looks at the destination itself: no object or file where the audio
was to go, no temporary beside it, no multipart upload left open, an existing file untouched.

* S3 refusing writes: a loopback proxy in front of the moto server passes reads and deletes
  through and answers every write (``PutObject``, ``CreateMultipartUpload``, ``UploadPart``...)
  with S3's own ``403 AccessDenied``, as a bucket policy denying ``s3:PutObject`` would.
* A full local disk, two ways: a worker process whose file-size limit (``RLIMIT_FSIZE``, with
  ``SIGXFSZ`` ignored) is smaller than the audio, so its writes fail with ``EFBIG``; and, where the
  test may mount one (root), a 1 MiB tmpfs, so they fail with ``ENOSPC``.
* A destination bucket that does not exist is refused before any request
  (``tests/operators/test_audio_to_storage_s3.py::test_missing_bucket_*``); an S3 endpoint that
  does not answer at all is refused here, also before the download.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.storage import TtsStorageError
from tests.conftest import ConnFactory
from tests.operators.conftest import ti_context
from tests.reliability.conftest import ROOT, subprocess_env

ACCESS_DENIED = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
    b"<Message>Access Denied</Message><RequestId>refusing-proxy</RequestId></Error>"
)
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


def _op(conn_id: str, task_id: str, destination: str, kind: str = "tts", **kw: Any) -> TtsAudioToStorageOperator:
    return TtsAudioToStorageOperator(
        task_id="download", tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, destination=destination,
        deferrable=False, poll_interval=0.05, **kw,
    )  # fmt: skip


def _files(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------------------ S3 refuses writes


class _RefusingProxy(BaseHTTPRequestHandler):
    """Forwards S3 requests to moto, except writes, which get ``403 AccessDenied``.

    With ``allow_parts = n`` a multipart upload may start and its first ``n`` parts get through:
    the refusal then comes mid-stream, after data was already uploaded.
    """

    protocol_version = "HTTP/1.1"
    upstream: tuple[str, int] = ("127.0.0.1", 0)
    refused: list[str] = []
    allow_parts = 0

    def log_message(self, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _is_refused(self) -> bool:
        query = parse_qs(urlsplit(self.path).query, keep_blank_values=True)
        if self.command == "PUT":  # PutObject, UploadPart, CopyObject
            return int(query.get("partNumber", ["0"])[0]) not in range(1, self.allow_parts + 1)
        if self.command == "POST":  # CreateMultipartUpload, CompleteMultipartUpload; DeleteObjects passes
            return "delete" not in query and not ("uploads" in query and self.allow_parts)
        return False

    def _handle(self) -> None:
        body = self._body()
        if self._is_refused():
            self.refused.append(f"{self.command} {self.path}")
            self.send_response(403)
            self.send_header("Content-Type", "application/xml")
            self.send_header("Content-Length", str(len(ACCESS_DENIED)))
            self.end_headers()
            self.wfile.write(ACCESS_DENIED)
            return
        conn = http.client.HTTPConnection(*self.upstream, timeout=30)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP | {"expect"}}
            conn.request(self.command, self.path, body=body or None, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            self.send_response(resp.status)
            for key, value in resp.getheaders():
                if key.lower() not in _HOP_BY_HOP | {"content-length"}:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)
        finally:
            conn.close()

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _handle


@pytest.fixture
def refusing_s3(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[str, list[str]]]:
    """An ``aws`` connection id whose S3 endpoint refuses writes; and the list of refused requests.

    Parametrize indirectly with the number of multipart parts to let through (default 0).
    """
    parts = urlsplit(moto_endpoint)
    refused: list[str] = []
    attrs = {"upstream": (parts.hostname, parts.port), "refused": refused, "allow_parts": getattr(request, "param", 0)}
    handler = type("Proxy", (_RefusingProxy,), attrs)
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    endpoint = f"http://127.0.0.1:{server.server_address[1]}"
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}}  # fmt: skip
    # A connection id of its own: Airflow caches one filesystem per (scheme, connection id).
    conn_id = f"aws_refusing_{server.server_address[1]}"
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(conn))
    try:
        yield conn_id, refused
    finally:
        server.shutdown()
        server.server_close()


def _keys(s3: Any, bucket: str) -> list[str]:
    return sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket).get("Contents", []))


def _uploads(s3: Any, bucket: str) -> list[Any]:
    return list(s3.list_multipart_uploads(Bucket=bucket).get("Uploads", []))


@pytest.mark.parametrize(
    ("size", "name", "refusing_s3"),
    [
        (200_000, "single PUT", 0),
        (20 * 1024**2, "multipart upload, refused at its start", 0),
        (20 * 1024**2, "multipart upload, refused at part 2 of 3", 1),
    ],
    indirect=["refusing_s3"],
    ids=["put", "multipart-start", "multipart-part-2"],
)
def test_s3_refusing_the_write_is_a_clear_error_and_leaves_nothing(
    emu: Any,
    make_conn: ConnFactory,
    refusing_s3: tuple[str, list[str]],
    s3: Any,
    bucket: str,
    size: int,
    name: str,
) -> None:
    conn_id, refused = refusing_s3
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    destination = f"s3://{bucket}/refused/{task_id}.wav"
    with pytest.raises(TtsStorageError) as info:
        _op(make_conn("camb_ai"), task_id, destination, "text-to-sound", dest_conn_id=conn_id).execute(ti_context())
    message = str(info.value)
    assert f"{bucket}/refused/{task_id}.wav" in message  # names the destination
    assert "PermissionError" in message or "Access Denied" in message or "AccessDenied" in message, message
    assert refused, "the proxy never saw a write"
    assert _keys(s3, bucket) == []  # neither the object nor its temporary
    assert _uploads(s3, bucket) == []  # and no multipart upload left open
    print(f"\nFIGURE S3 refusing a {name} of {size} bytes: {refused} refused; {message[-100:]}")


def test_unreachable_s3_fails_before_the_download(
    emu: Any, make_conn: ConnFactory, monkeypatch: pytest.MonkeyPatch, moto_endpoint: str
) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    conn = {"conn_type": "aws", "login": "testing", "password": "testing",
            "extra": {"endpoint_url": f"http://127.0.0.1:{port}", "region_name": "us-east-1",
                      "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 1}}}  # fmt: skip
    monkeypatch.setenv("AIRFLOW_CONN_AWS_DOWN", json.dumps(conn))
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    with pytest.raises(TtsStorageError, match=r"destination bucket s3://tts-down-bucket") as info:
        _op(make_conn("revid_tts"), task_id, "s3://tts-down-bucket/a.wav", dest_conn_id="aws_down").execute({})
    assert emu.stats()["requests_total"] == 0  # refused before even polling the task
    print(f"\nFIGURE unreachable S3: {str(info.value)[:100]}; 0 requests to the API")


# ------------------------------------------------------------------------------- full local disk

DISK_WORKER = textwrap.dedent(
    """
    import json, resource, signal, sys
    from types import SimpleNamespace
    from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
    spec = json.loads(sys.argv[1])
    op = TtsAudioToStorageOperator(task_id="download", tts_conn_id=spec["conn_id"], tts_task_id=spec["task_id"],
                                   kind="tts", destination=spec["destination"], deferrable=False, overwrite="replace")
    ti = SimpleNamespace(dag_id="tts_dag", task_id="download", run_id="manual__1", map_index=-1)
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
    resource.setrlimit(resource.RLIMIT_FSIZE, (spec["limit"], spec["limit"]))
    try:
        result = op.execute({"ti": ti})
    except Exception as exc:
        print(json.dumps({"error": type(exc).__name__, "message": str(exc)}))
    else:
        print(json.dumps({"result": result}))
    """
)


@pytest.mark.parametrize("existing", [False, True], ids=["new file", "over an existing file"])
def test_full_disk_is_a_clear_error_and_leaves_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, existing: bool
) -> None:
    conn_id = make_conn("revid_tts")
    env_name = f"AIRFLOW_CONN_{conn_id.upper()}"
    import os

    task_id = emu.create_task("revid_tts", "tts", delay=0, audio_bytes=3 * 1024**2)
    folder = tmp_path / "disk"
    folder.mkdir()
    final = folder / f"{task_id}.wav"
    if existing:
        final.write_bytes(b"RIFF old audio that must survive")
    spec = {"conn_id": conn_id, "task_id": task_id, "destination": final.as_uri(), "limit": 1024**2}
    proc = subprocess.run(
        [sys.executable, "-c", DISK_WORKER, json.dumps(spec)],
        cwd=ROOT,
        env=subprocess_env(**{env_name: os.environ[env_name]}),
        capture_output=True,
        text=True,
        timeout=400,  # a bound against a hang, not a timing assertion: imports alone take a minute under load
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    outcome = json.loads(proc.stdout.strip().splitlines()[-1])
    assert outcome.get("error") == "TtsStorageError", outcome
    assert str(final) in outcome["message"]  # names the destination
    assert "File too large" in outcome["message"] or "EFBIG" in outcome["message"], outcome["message"]
    if existing:
        assert _files(folder) == [final.name]
        assert final.read_bytes() == b"RIFF old audio that must survive"
    else:
        assert _files(folder) == []  # no destination, no temporary
    print(f"\nFIGURE full disk (RLIMIT_FSIZE 1 MiB, 3 MiB audio, {'existing' if existing else 'new'} file): "
          f"{outcome['message'][-90:]}; files left: {_files(folder)}")  # fmt: skip


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 1 MiB tmpfs mounted for the test; skipped where mounting is not allowed."""
    mount = tmp_path / "tmpfs"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode(errors='replace').strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_full_tmpfs_is_a_clear_error_and_leaves_nothing(emu: Any, make_conn: ConnFactory, tiny_tmpfs: Path) -> None:
    task_id = emu.create_task("camb_ai", "tts", delay=0, audio_bytes=4 * 1024**2)
    with pytest.raises(TtsStorageError) as info:
        _op(make_conn("camb_ai"), task_id, f"{tiny_tmpfs.as_uri()}/audio/").execute(ti_context())
    message = str(info.value)
    assert f"{tiny_tmpfs}/audio/tts_dag-download.wav" in message  # the default name: dag and task id
    assert "No space left on device" in message, message
    assert _files(tiny_tmpfs) == []
    print(f"\nFIGURE full tmpfs (1 MiB, 4 MiB audio): {message[-80:]}; files left: {_files(tiny_tmpfs)}")


# --------------------------------------------------------------- never a partial object in sight


class _Watcher(threading.Thread):
    """Looks at the destination while a download runs: (size of the destination, temporary in progress)."""

    def __init__(self, look: Any) -> None:
        super().__init__(daemon=True)
        self.look = look
        self.seen: list[tuple[int | None, bool]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(0.001):
            self.seen.append(self.look())


@pytest.mark.parametrize("scheme", ["file", "s3"])
def test_the_destination_is_never_seen_partial(
    emu: Any,
    make_conn: ConnFactory,
    tmp_path: Path,
    scheme: str,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Watched throughout a download, the destination is absent, then complete: never in between."""
    from airflow_provider_tts.transport import AudioStream

    size = 24 * 1024**2
    task_id = emu.create_task("camb_ai", "text-to-sound", delay=0, audio_bytes=size)
    real_chunks = AudioStream.iter_chunks

    def paced(self: AudioStream, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        for chunk in real_chunks(self, chunk_size):
            yield chunk
            time.sleep(0.02)  # a slow network: the download lasts long enough to be watched

    monkeypatch.setattr(AudioStream, "iter_chunks", paced)
    if scheme == "file":
        folder = tmp_path / "out"
        final = folder / f"{task_id}.wav"
        destination, kw = final.as_uri(), {}

        # Each look reads the destination first and the temporary second: the temporary still
        # there *after* a complete destination was seen would be a real overlap; the other order
        # would also see a rename that happened between the two reads.
        def look() -> tuple[int | None, bool]:
            try:
                dest: int | None = final.stat().st_size
            except FileNotFoundError:
                dest = None
            return dest, any(folder.glob(".*.partial"))
    else:
        s3, bucket = request.getfixturevalue("s3"), request.getfixturevalue("bucket")
        destination, kw = f"s3://{bucket}/out/{task_id}.wav", {"dest_conn_id": request.getfixturevalue("aws_conn")}

        def look() -> tuple[int | None, bool]:
            try:
                dest: int | None = int(s3.head_object(Bucket=bucket, Key=f"out/{task_id}.wav")["ContentLength"])
            except s3.exceptions.ClientError:
                dest = None
            return dest, bool(s3.list_multipart_uploads(Bucket=bucket).get("Uploads"))

    watcher = _Watcher(look)
    watcher.start()
    try:
        result = _op(make_conn("camb_ai"), task_id, destination, "text-to-sound", **kw).execute(ti_context())
    finally:
        watcher.stop.set()
        watcher.join()
    assert result["size_bytes"] == size
    sizes = {dest for dest, _ in watcher.seen}
    mid_download = sum(1 for dest, temp in watcher.seen if temp)
    assert mid_download >= 5, "the watcher never caught the download in progress"
    assert sizes <= {None, size}, sorted(s for s in sizes if s is not None)  # absent or complete, never partial
    assert all(dest is None for dest, temp in watcher.seen if temp)  # nothing at the destination meanwhile
    print(
        f"\nFIGURE never partial ({scheme}://, {size} bytes): {len(watcher.seen)} looks, {mid_download} while the "
        f"temporary was being written, 0 saw a partial destination"
    )
