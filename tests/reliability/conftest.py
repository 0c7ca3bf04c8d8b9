"""Fixtures for the reliability suite: an emulator in its own process, connections, trigger drivers.

The S3 fixtures (a loopback moto server, a fresh bucket per test, the ``aws`` connection) are the
operator tests' own, imported here rather than duplicated.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests

from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import TEST_KEY
from tests.operators.conftest import AWS_CONN_ID, AWS_ENV, aws_conn, bucket, moto_endpoint, s3

__all__ = ["AWS_CONN_ID", "AWS_ENV", "aws_conn", "bucket", "moto_endpoint", "s3"]

ROOT = Path(__file__).resolve().parents[2]


def subprocess_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python process: this one's, with the repository importable."""
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "PYTHONPATH": path, "PYTHONDONTWRITEBYTECODE": "1", **extra}


class CliEmulator:
    """``python -m airflow_provider_tts.emulator`` in its own process, steered through its control API.

    A separate process, as a vendor is: the waits under test and the server answering them do not
    share one interpreter's lock, so the figures measure the client rather than the contention.
    """

    def __init__(self, *args: str, api_key: str = TEST_KEY) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "airflow_provider_tts.emulator", "--port", "0", "--print-json",
             "--api-key", api_key, "--audio-engine", "tones", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=subprocess_env(),
        )  # fmt: skip
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            stderr = self.proc.stderr.read() if self.proc.stderr else ""
            raise RuntimeError(f"the emulator did not start: {stderr[-2000:]}")
        urls = json.loads(line)
        self.url: str = urls["url"]
        self.camb_base_url: str = urls["camb_base_url"]
        self.revid_base_url: str = urls["revid_base_url"]
        self.revid_status_base_url: str = urls["revid_status_base_url"]
        self.control = f"{self.url}/_emulator"
        self._http = requests.Session()

    def _call(self, method: str, path: str, body: Any = None) -> Any:
        resp = self._http.request(method, f"{self.control}/{path}", json=body, timeout=30)
        resp.raise_for_status()
        return resp.json()

    def create_task(self, api: str, kind: str, **spec: Any) -> str:
        return str(self._call("POST", "tasks", {"api": api, "kind": kind, **spec})["task_id"])

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", "stats")
        return result

    def stop(self) -> None:
        self._http.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def cli_emulator() -> Iterator[Callable[..., CliEmulator]]:
    """Start emulator processes with the given command-line arguments; all stopped afterwards."""
    started: list[CliEmulator] = []

    def start(*args: str) -> CliEmulator:
        emulator = CliEmulator(*args)
        started.append(emulator)
        return emulator

    yield start
    for emulator in started:
        emulator.stop()


def conn_json(api: str, base_url: str, status_base_url: str | None, key: str = TEST_KEY, **extra: Any) -> str:
    """The ``AIRFLOW_CONN_*`` JSON of a connection to an emulator."""
    if api == "revid_tts" and status_base_url is not None:
        extra.setdefault("status_base_url", status_base_url)
    return json.dumps({"conn_type": api, "host": base_url, "password": key, "extra": extra})


def define_conn(monkeypatch: pytest.MonkeyPatch, conn_id: str, emu: Any, api: str, **extra: Any) -> str:
    """Define connection ``conn_id`` (env var) to ``emu`` (an Emulator or a CliEmulator)."""
    base = emu.camb_base_url if api == "camb_ai" else emu.revid_base_url
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", conn_json(api, base, emu.revid_status_base_url, **extra))
    return conn_id


async def drive(trigger: TtsTaskTrigger) -> list[dict[str, Any]]:
    """Run a trigger to its end as the triggerer does; the payloads of every event it yielded."""
    return [event.payload async for event in trigger.run()]
