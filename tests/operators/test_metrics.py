"""Metrics reach a real StatsD listener: the names, values and tags of docs/metrics.md.

A UDP socket bound on 127.0.0.1 is the StatsD server. A worker process (``_metrics_worker``) is
started with ``AIRFLOW__METRICS__STATSD_ON`` and the socket's port in its environment, as a worker
or triggerer of a deployment would be, and runs the operators, a trigger and the hook against the
emulator; Airflow's own ``Stats`` sends the datagrams (InfluxDB-style tags, so the tags travel in
plain StatsD lines). A second worker gets a StatsD client whose every send fails: its tasks succeed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts import metrics
from tests.conftest import ConnFactory
from tests.operators._metrics_worker import TEXT, UNPAID

REPO = Path(__file__).resolve().parents[2]
DOCS = REPO / "docs" / "metrics.md"

#: ``airflow.tts.poll,vendor=camb_ai,kind=tts,state=pending:1|c`` -> name, tags, value, type.
DATAGRAM = re.compile(r"^(?P<name>[^,:]+)(?P<tags>(?:,[^,=:]+=[^,:]+)*):(?P<value>[-0-9.]+)\|(?P<type>c|ms|g)$")


@pytest.fixture
def listener() -> Any:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.5)
    try:
        yield sock
    finally:
        sock.close()


def _run_worker(spec: dict[str, Any], port: int, **metrics_conf: str) -> dict[str, Any]:
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])]),
        AIRFLOW__METRICS__STATSD_ON="True",
        AIRFLOW__METRICS__STATSD_HOST="127.0.0.1",
        AIRFLOW__METRICS__STATSD_PORT=str(port),
        AIRFLOW__METRICS__STATSD_PREFIX="airflow",
        AIRFLOW__METRICS__STATSD_INFLUXDB_ENABLED="True",
        **{f"AIRFLOW__METRICS__{key.upper()}": value for key, value in metrics_conf.items()},
    )
    done = subprocess.run(
        [sys.executable, "-m", "tests.operators._metrics_worker", json.dumps(spec)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def _datagrams(sock: socket.socket) -> list[dict[str, Any]]:
    """Every datagram of this provider the listener holds (each one StatsD line), parsed; Airflow's own are left out."""
    parsed = []
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            data = sock.recv(65536)
        except TimeoutError:
            break
        for line in data.decode().splitlines():
            match = DATAGRAM.match(line)
            assert match, f"not a StatsD line: {line!r}"
            if not match["name"].startswith("airflow.tts."):
                continue
            tags = dict(pair.split("=", 1) for pair in match["tags"].split(",") if pair)
            parsed.append({"name": match["name"], "tags": tags, "value": float(match["value"]),
                           "type": match["type"]})  # fmt: skip
    return parsed


def _total(grams: list[dict[str, Any]], name: str, **tags: str) -> float:
    return sum(g["value"] for g in grams if g["name"] == f"airflow.{name}" and tags.items() <= g["tags"].items())


def _ok(result: Any) -> dict[str, Any]:
    assert isinstance(result, dict), result
    assert "error" not in result, result
    return result


def test_operators_trigger_and_hook_send_documented_metrics_to_statsd(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, listener: socket.socket
) -> None:
    camb, revid, bad = make_conn("camb_ai"), make_conn("revid_tts"), make_conn("camb_ai", key="sk-wrong")
    revid_task = emu.create_task("revid_tts", "tts", delay=0.2)
    spec = {"camb": camb, "revid": revid, "folder": str(tmp_path), "failing": True, "revid_task": revid_task,
            "bad_conn": bad}  # fmt: skip
    results = _run_worker(spec, listener.getsockname()[1])
    grams = _datagrams(listener)

    speak, again, stream = _ok(results["speak"]), _ok(results["speak_again"]), _ok(results["stream"])
    assert (speak["cached"], again["cached"], stream["cached"]) == (False, True, False)
    assert results["payment"]["error"] == "TtsPermanentTaskFailedError"
    assert [event["status"] for event in results["trigger"]] == ["success"]
    assert results["bad_key"]["error"] == "TtsAuthError"
    assert results["metrics_log"] == []  # nothing failed on the way

    print(f"FIGURE metrics: {len(grams)} datagrams, {len({g['name'] for g in grams})} names; "
          f"creates {_total(grams, 'tts.create'):.0f}, polls {_total(grams, 'tts.poll'):.0f}, "
          f"bytes {_total(grams, 'tts.storage.bytes'):.0f}")  # fmt: skip
    names = {g["name"].removeprefix("airflow.") for g in grams}
    documented = {name for name, *_ in metrics.METRICS}
    assert names <= documented, names - documented
    assert names == documented  # every metric is emitted by this run
    for gram in grams:
        name = gram["name"].removeprefix("airflow.")
        [(_, kind, tags, _)] = [m for m in metrics.METRICS if m[0] == name]
        assert set(gram["tags"]) == set(tags), gram
        assert gram["type"] == {"counter": "c", "timer": "ms"}[kind], gram

    # Creates the vendor accepted: the paid tts task, the unpaid one, the stream (the cache hit made none).
    assert _total(grams, "tts.create", vendor="camb_ai", kind="tts") == 2
    assert _total(grams, "tts.create", vendor="camb_ai", kind="tts-stream") == 1
    assert _total(grams, "tts.create", vendor="revid_tts") == 0
    assert _total(grams, "tts.characters", kind="tts") == len(TEXT) + len(UNPAID)
    assert _total(grams, "tts.characters", kind="tts-stream") == len(TEXT)
    assert _total(grams, "tts.credits", vendor="camb_ai", kind="tts-stream") == stream["credits"] > 0
    assert _total(grams, "tts.credits", kind="tts") == 0  # Camb's task API states none

    # Polls: the sync waits (Camb) and the trigger's async wait (Revid), by normalised state.
    assert _total(grams, "tts.poll", vendor="camb_ai", kind="tts", state="succeeded") >= 1
    assert _total(grams, "tts.poll", vendor="camb_ai", kind="tts", state="failed") == 1
    assert _total(grams, "tts.poll", vendor="revid_tts", kind="tts", state="succeeded") == 1
    assert _total(grams, "tts.task.failed", vendor="camb_ai", kind="tts", reason="payment_required") == 1
    assert _total(grams, "tts.task.failed") == 1

    # Vendor latency: every call timed, in milliseconds; the refused key is a failed create.
    timers = [g for g in grams if g["name"] == "airflow.tts.request.duration"]
    assert {(g["tags"]["endpoint"], g["tags"]["outcome"]) for g in timers} == {
        ("create", "ok"), ("status", "ok"), ("stream", "ok"), ("create", "error"),
    }  # fmt: skip
    assert all(0 < g["value"] < 60_000 for g in timers)
    assert _total(grams, "tts.request.failed", vendor="camb_ai", kind="tts", endpoint="create", reason="auth") == 1
    assert _total(grams, "tts.request.failed") == 1

    # Storage: the two downloads written (the copy is the cache's); bytes as the results say.
    assert _total(grams, "tts.storage.files", scheme="file", written="true") == 2
    assert _total(grams, "tts.storage.bytes", scheme="file", written="true") == speak["size_bytes"] + stream[
        "size_bytes"]  # fmt: skip
    # The cache: misses before each paid request, one hit, served by a copy under the new name.
    assert _total(grams, "tts.cache.miss", vendor="camb_ai") == 3
    assert _total(grams, "tts.cache.hit", vendor="camb_ai") == 1
    assert _total(grams, "tts.cache.copy", scheme="file") == 1


def test_a_broken_metrics_backend_does_not_fail_a_task(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, listener: socket.socket
) -> None:
    spec = {"camb": make_conn("camb_ai"), "revid": make_conn("revid_tts"), "folder": str(tmp_path)}
    results = _run_worker(
        spec, listener.getsockname()[1], statsd_custom_client_path="tests.operators._metrics_worker.BrokenStatsClient"
    )
    assert _ok(results["speak"])["cached"] is False
    assert _ok(results["speak_again"])["cached"] is True
    assert _ok(results["stream"])["size_bytes"] > 0
    assert (tmp_path / "tts" / "a.flac").stat().st_size == results["speak"]["size_bytes"]
    # Logged once, at debug level, however many metrics were dropped.
    assert len(results["metrics_log"]) == 1
    assert "Metrics are not emitted (OSError: the metrics backend is broken)" in results["metrics_log"][0]
    assert _datagrams(listener) == []
    print(f"FIGURE broken metrics backend: 3 tasks stored, {len(results['metrics_log'])} debug line")


def test_characters_and_failure_reasons() -> None:
    from airflow_provider_tts.exceptions import TtsAuthError, TtsConnectionError, TtsRateLimitError

    assert metrics.count_characters({"text": "héllo"}) == 5
    assert metrics.count_characters({"subtitles": [{"text": "ab"}, {"text": "cde"}, {"start": "x"}]}) == 5
    assert metrics.count_characters({"prompt": "rain"}) == metrics.count_characters(None) == 0
    assert metrics.failure_reason(TtsAuthError("no")) == "auth"
    assert metrics.failure_reason(TtsRateLimitError("slow down")) == "rate_limited"
    assert metrics.failure_reason(TtsConnectionError("reset")) == "connection"
    assert metrics.failure_reason(KeyError("bug")) == "error"


def test_docs_list_every_metric_with_its_type_and_tags() -> None:
    text = DOCS.read_text()
    rows = {
        cells[0].strip("` "): (cells[1].strip(), {t.strip("` ") for t in cells[2].split(",") if t.strip()})
        for line in text.splitlines()
        if line.startswith("| `tts.") and (cells := [c.strip() for c in line.strip("|").split("|")])
    }
    assert rows == {name: (kind, set(tags)) for name, kind, tags, _ in metrics.METRICS}
