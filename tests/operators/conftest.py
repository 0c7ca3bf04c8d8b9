"""Fixtures for the storage operator's tests: a real S3-compatible server on loopback, and helpers.

The S3 server is moto in server mode (``ThreadedMotoServer``) bound to 127.0.0.1 on a free port,
started once per session; boto3, s3fs and the Amazon provider's ``aws`` connection all talk to it
over real sockets through ``endpoint_url``. Every AWS setting points at dummies (no credentials
files, no instance-metadata lookups), so nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

#: The Amazon provider connection the tests use for ``s3://`` destinations.
AWS_CONN_ID = "aws_test"

AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SECURITY_TOKEN": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:PORT`` of a moto S3 server started for this session (and the AWS env)."""
    from moto.server import ThreadedMotoServer

    with pytest.MonkeyPatch.context() as mp:
        for name, value in AWS_ENV.items():
            mp.setenv(name, value)
        server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
        server.start()
        try:
            _, port = server.get_host_and_port()
            endpoint = f"http://127.0.0.1:{port}"
            mp.setenv(
                f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}",
                json.dumps(
                    {
                        "conn_type": "aws",
                        "login": "testing",
                        "password": "testing",
                        "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"},
                    }
                ),
            )
            yield endpoint
        finally:
            server.stop()


@pytest.fixture
def aws_conn(moto_endpoint: str) -> str:
    """Id of an ``aws`` connection (env var) whose ``endpoint_url`` is the loopback moto server."""
    return AWS_CONN_ID


@pytest.fixture(scope="session")
def s3(moto_endpoint: str) -> Any:
    """A boto3 S3 client on the moto server, to inspect what the operator stored."""
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=moto_endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@pytest.fixture
def bucket(s3: Any) -> Iterator[str]:
    """A fresh, empty bucket per test; emptied (objects and unfinished uploads) and removed afterwards."""
    name = f"tts-{uuid.uuid4().hex[:16]}"
    s3.create_bucket(Bucket=name)
    yield name
    for upload in s3.list_multipart_uploads(Bucket=name).get("Uploads", []):
        s3.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    listing = s3.list_object_versions(Bucket=name)  # every version, for buckets a test made versioned
    for entry in listing.get("Versions", []) + listing.get("DeleteMarkers", []):
        s3.delete_object(Bucket=name, Key=entry["Key"], VersionId=entry["VersionId"])
    for obj in s3.list_objects_v2(Bucket=name).get("Contents", []):
        s3.delete_object(Bucket=name, Key=obj["Key"])
    s3.delete_bucket(Bucket=name)


def ti_context(run_id: str = "manual__1", try_number: int = 1, **extra: Any) -> dict[str, Any]:
    """A minimal task context whose ``ti`` fixes the temporary's name (dag, task, run, map index) and try."""
    from types import SimpleNamespace

    ti = SimpleNamespace(dag_id="tts_dag", task_id="download", run_id=run_id, map_index=-1, try_number=try_number)
    return {"ti": ti, **extra}


#: What a storage host behind a login wall answers with status 200 (``/html`` of ``audio_server``).
LOGIN_PAGE = b"<!DOCTYPE html>\n<html><head><title>Sign in</title></head><body><form>Password</form></body></html>\n"


@pytest.fixture(scope="session")
def audio_server() -> Iterator[Any]:
    """A tiny loopback HTTP server with misbehaving audio responses; ``.url`` and ``.headers_seen``.

    * ``/wav?n=N`` — a valid WAV of N bytes with Content-Length;
    * ``/short?n=N`` — announces N bytes, sends half, closes (a Content-Length mismatch);
    * ``/unsized?n=N`` — a WAV of N bytes with no Content-Length (body ends at close);
    * ``/redirect?to=URL`` — 302 to URL (any scheme);
    * ``/html`` — an HTML login page with status 200 (``ct`` defaults to ``text/html`` there);
    * ``ct=TYPE`` on any audio path sets its Content-Type (default ``audio/wav``).
    """
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from urllib.parse import parse_qs, urlsplit

    from airflow_provider_tts.emulator.audio import SizedWav

    headers_seen: list[dict[str, str]] = []

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_message(self, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            parts = urlsplit(self.path)
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            headers_seen.append({k.lower(): v for k, v in self.headers.items()})
            n = int(query.get("n", "65536"))
            if parts.path == "/redirect":
                self.send_response(302)
                self.send_header("Location", query["to"])
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = b"".join(bytes(c) for c in SizedWav(n, 22050).chunks())
            if parts.path == "/html":
                body = LOGIN_PAGE
            self.send_response(200)
            self.send_header("Content-Type", query.get("ct", "text/html" if parts.path == "/html" else "audio/wav"))
            if parts.path in ("/wav", "/html"):
                self.send_header("Content-Length", str(len(body)))
            elif parts.path == "/short":
                self.send_header("Content-Length", str(n))
                body = body[: n // 2]
            elif parts.path != "/unsized":
                self.send_error(404)
                return
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    from types import SimpleNamespace

    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_address[1]}", headers_seen=headers_seen)
    finally:
        server.shutdown()
        server.server_close()


def run_worker(spec: dict[str, Any]) -> subprocess.Popen[str]:
    """Run ``tests/operators/_download_worker.py`` (the operator, killable mid-download) with ``spec``."""
    import tempfile

    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Output to a file, not a pipe: a pipe nobody reads until the end could fill up and stall the worker.
    output = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed by the test after the worker ends)
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.operators._download_worker", json.dumps(spec)],
        cwd=REPO,
        env=env,
        stdout=output,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.output = output  # type: ignore[attr-defined]
    return proc


def wait_until(condition: Any, proc: subprocess.Popen[str], timeout: float = 240.0) -> None:
    """Poll ``condition`` until it holds; fail (with the worker's stderr) if the worker exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            proc.output.seek(0)  # type: ignore[attr-defined]
            err = proc.output.read()  # type: ignore[attr-defined]
            raise AssertionError(f"the worker exited ({proc.returncode}) before the condition held:\n{err[-3000:]}")
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            proc.output.seek(0)  # type: ignore[attr-defined]
            err = proc.output.read()  # type: ignore[attr-defined]
            raise AssertionError(f"timed out waiting for the worker; its output:\n{err[-3000:]}")
        time.sleep(0.02)


def kill_when(condition: Any, proc: subprocess.Popen[str], before_kill: Any = None) -> None:
    """Wait until ``condition`` holds in the worker, run ``before_kill``, SIGKILL it; always reap it."""
    import signal

    try:
        wait_until(condition, proc)
        if before_kill is not None:
            before_kill()
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        proc.output.close()  # type: ignore[attr-defined]
    assert proc.returncode == -signal.SIGKILL


def without_content_length(mp: pytest.MonkeyPatch) -> None:
    """Make every audio stream look as if the server had sent no Content-Length (the cap applies late)."""
    from airflow_provider_tts.hooks.tts import TtsHook

    real_open = TtsHook.open_audio

    def unsized(self: Any, status: Any) -> Any:
        stream = real_open(self, status)
        stream.content_length = None
        return stream

    mp.setattr(TtsHook, "open_audio", unsized)
