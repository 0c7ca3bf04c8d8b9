"""Local GCS and Azure Blob servers for the ``gs://`` and ``abfs://`` / ``az://`` storage tests.

* GCS: ``gcp-storage-emulator`` (pure Python, a dev dependency) in a subprocess on loopback
  (:mod:`tests.operators._gcs_server`), reached by gcsfs's ``GCSFileSystem`` through ``endpoint_url``.
* Azure: Azurite (``npm install -g azurite``; ``.ci/run`` installs it) in a subprocess on loopback,
  reached by adlfs's ``AzureBlobFileSystem`` through the connection string a ``wasb`` connection
  carries. Without ``azurite-blob`` on PATH the Azure tests are skipped locally; in CI (``CI`` set)
  they fail instead, so CI never passes by skipping them.

Neither Google's nor Microsoft's Airflow provider is installed (see README "Object stores"), so the
tests give Airflow the filesystem the way a deployment without them would, and the way the providers
hand theirs over: ``airflow.sdk.io.attach(protocol, conn_id, fs=...)`` under the connection ids a user
configures (``google_cloud_default``, ``wasb_default``). ``ObjectStoragePath("gs://…", conn_id=…)``
then resolves to it. Each server's access log goes to a file the tests read to count requests per
file, like the ``s3://`` tests read moto's.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]
GCS_CONN_ID = "google_cloud_default"
AZURE_CONN_ID = "wasb_default"
#: Azurite's documented development account (a public constant of the emulator, not a secret).
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_for_port(port: int, proc: subprocess.Popen[Any], log: Path, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited ({proc.returncode}): {log.read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"the server did not listen on {port} within {timeout} s: {log.read_text()[-2000:]}")


@dataclass
class Server:
    """A server subprocess on loopback and its access log (one ``METHOD /path?query`` per request)."""

    proc: subprocess.Popen[Any]
    port: int
    log: Path
    mark: int = 0

    def requests_since(self, mark: int) -> list[str]:
        """Request lines logged after ``mark`` (a :meth:`tell`), once the log has settled."""
        last = -1
        while True:  # Azurite writes its access log asynchronously: wait until it stops growing
            size = self.log.stat().st_size
            if size == last:
                break
            last = size
            time.sleep(0.15)
        with self.log.open("rb") as src:
            src.seek(mark)
            text = src.read().decode("utf-8", "replace")
        found = []
        for line in text.splitlines():
            match = re.search(r"\b(GET|PUT|POST|DELETE|HEAD|PATCH) (/\S*)", line)
            if match:
                found.append(f"{match.group(1)} {match.group(2)}")
        return found

    def tell(self) -> int:
        self.requests_since(0)  # settle first
        return self.log.stat().st_size

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start_gcs(workdir: Path) -> Server:
    port, log = free_port(), workdir / "gcs.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.operators._gcs_server", str(port)],
        cwd=REPO, env=dict(os.environ, PYTHONPATH=str(REPO)), stdout=log.open("wb"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    _wait_for_port(port, proc, log)
    return Server(proc, port, log)


def start_azurite(workdir: Path) -> Server:
    port, log = free_port(), workdir / "azurite.log"
    command = [
        "azurite-blob", "--blobHost", "127.0.0.1", "--blobPort", str(port),
        "--inMemoryPersistence", "--skipApiVersionCheck", "--loose", "--disableTelemetry",
    ]  # fmt: skip
    proc = subprocess.Popen(command, cwd=workdir, stdout=log.open("wb"), stderr=subprocess.STDOUT)
    _wait_for_port(port, proc, log)
    return Server(proc, port, log)


def azurite_connection_string(port: int) -> str:
    return (
        f"DefaultEndpointsProtocol=http;AccountName={AZURITE_ACCOUNT};AccountKey={AZURITE_KEY};"
        f"BlobEndpoint=http://127.0.0.1:{port}/{AZURITE_ACCOUNT};"
    )


def filesystem(kind: str, port: int) -> Any:
    """The fsspec filesystem a provider would build from its connection, pointed at the local server.

    GCS: gcsfs's JSON-API filesystem (``gcsfs.core``): ``gcsfs.GCSFileSystem`` is by default the
    experimental one that first asks a gRPC endpoint about each bucket, which no emulator serves.
    """
    if kind == "gcs":
        from gcsfs.core import GCSFileSystem

        return GCSFileSystem(endpoint_url=f"http://127.0.0.1:{port}", token="anon", project="tts-test")
    from adlfs import AzureBlobFileSystem

    return AzureBlobFileSystem(connection_string=azurite_connection_string(port))


def attach_filesystem(protocols: list[str], conn_id: str, kind: str, port: int) -> Any:
    """Attach the filesystem for ``protocols`` under ``conn_id``, as Airflow resolves a path's (see module doc)."""
    from airflow.sdk.io import attach

    fs = filesystem(kind, port)
    for protocol in protocols:
        store = attach(protocol=protocol, conn_id=conn_id, fs=fs)
        store.fs = fs  # an earlier test's store under the same alias: the server (port) is this one now
    return fs


@dataclass
class Store:
    """One object store under test: its scheme, connection, server, and a way to look inside."""

    scheme: str
    conn_id: str
    server: Server
    fs: Any
    bucket: str = ""
    made: list[str] = field(default_factory=list)

    def new_bucket(self) -> str:
        name = f"tts-{uuid.uuid4().hex[:16]}"
        self.fs.mkdir(name)
        self.fs.invalidate_cache()
        self.made.append(name)
        return name

    def uri(self, key: str = "") -> str:
        return f"{self.scheme}://{self.bucket}/{key}"

    def keys(self) -> list[str]:
        self.fs.invalidate_cache()
        found = self.fs.find(self.bucket)
        return sorted(str(name).partition("/")[2] for name in found)

    def info(self, key: str) -> dict[str, Any]:
        self.fs.invalidate_cache()
        return dict(self.fs.info(f"{self.bucket}/{key}"))

    def body(self, key: str) -> bytes:
        return bytes(self.fs.cat_file(f"{self.bucket}/{key}"))

    def version(self, key: str) -> str:
        """What changes with every write of ``key``: GCS's generation, Azure's ETag."""
        info = self.info(key)
        return str(info.get("generation") or info.get("etag"))

    def put(self, key: str, data: bytes) -> None:
        self.fs.pipe_file(f"{self.bucket}/{key}", data)
        self.fs.invalidate_cache()

    def mark(self) -> int:
        return self.server.tell()

    def requests(self, mark: int) -> list[str]:
        """This bucket's requests since ``mark``, query strings dropped (``METHOD /path``)."""
        seen = []
        for line in self.server.requests_since(mark):
            method, target = line.split(" ", 1)
            if f"/{self.bucket}" in target.split("?")[0] or f"name={self.bucket}" in target:
                seen.append(f"{method} {target.split('?')[0]}")
        return seen


def azurite_missing() -> str | None:
    if shutil.which("azurite-blob"):
        return None
    reason = "azurite is not installed (npm install -g azurite; .ci/run installs it)"
    if os.environ.get("CI"):
        pytest.fail(f"{reason}: CI must run the Azure storage tests")
    return reason


def _serving(start: Callable[[Path], Server], prefix: str) -> Iterator[Server]:
    with tempfile.TemporaryDirectory(prefix=prefix) as workdir:
        server = start(Path(workdir))
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    yield from _serving(start_gcs, "tts-gcs-")


@pytest.fixture(scope="session")
def azurite_server() -> Iterator[Server]:
    reason = azurite_missing()
    if reason:
        pytest.skip(reason)
    yield from _serving(start_azurite, "tts-azurite-")


#: The schemes under test, each with the connection a user configures and the protocols that share it.
STORES = {
    "gs": ("gcs", GCS_CONN_ID, ["gs", "gcs"]),
    "abfs": ("azure", AZURE_CONN_ID, ["abfs", "az"]),
    "az": ("azure", AZURE_CONN_ID, ["abfs", "az"]),
}


@pytest.fixture(params=["gs", "abfs"])
def store(request: pytest.FixtureRequest) -> Iterator[Store]:
    """A fresh bucket (container) on the GCS emulator or Azurite, with its filesystem attached."""
    kind, conn_id, protocols = STORES[request.param]
    server: Server = request.getfixturevalue("gcs_server" if kind == "gcs" else "azurite_server")
    fs = attach_filesystem(protocols, conn_id, kind, server.port)
    found = Store(request.param, conn_id, server, fs)
    found.bucket = found.new_bucket()
    from airflow_provider_tts.storage.s3 import KNOWN_BUCKETS

    yield found
    KNOWN_BUCKETS.clear()
    for name in found.made:
        # GCS may answer 409 while a killed test's upload session is open: the server is in memory anyway.
        with contextlib.suppress(Exception):
            fs.rm(name, recursive=True)
