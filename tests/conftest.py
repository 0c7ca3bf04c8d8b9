"""Test-wide setup: a private AIRFLOW_HOME, so tests never touch ~/airflow or a real deployment."""

from __future__ import annotations

import os
import tempfile
from importlib.metadata import version as _version
from pathlib import Path

# One home per Airflow version: the CI matrix runs several minors on one machine, and a home written
# by one (its airflow.cfg, its SQLite schema) must not be read by another.
# `make test` runs the suite in pytest-xdist workers (PYTEST_XDIST_WORKER, set before this file is read):
# one home each, so two workers never write one task log or SQLite file at once.
_HOME = Path(tempfile.gettempdir()) / (
    f"airflow-provider-tts-tests-{os.getuid()}-af{_version('apache-airflow-core')}"
    + (f"-{os.environ['PYTEST_XDIST_WORKER']}" if os.environ.get("PYTEST_XDIST_WORKER") else "")
)
_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")


import json  # noqa: E402
from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

#: A recognisable key: tests search logs and requests for it.
TEST_KEY = "sk-TEST-7f3a9c-never-log-me"

#: (api, kind) pairs the vendors support, and the create fields each needs.
PAIRS = [("camb_ai", "tts"), ("camb_ai", "text-to-sound"), ("revid_tts", "tts"), ("revid_tts", "srt-to-speech")]
FIELDS: dict[str, dict[str, Any]] = {
    "camb_ai/tts": {"text": "Hello from the emulator", "voice_id": 20303, "language": 1},
    "camb_ai/text-to-sound": {"prompt": "gentle rain on a tin roof", "duration": 2},
    "revid_tts/tts": {"text": "Hello from the emulator", "engine": "edge"},
    "revid_tts/srt-to-speech": {
        "subtitles": [
            {"index": 1, "start": "00:00:00,000", "end": "00:00:01,000", "text": "Hello"},
            {"index": 2, "start": "00:00:01,200", "end": "00:00:02,000", "text": "again"},
        ]
    },
}


@pytest.fixture(autouse=True)
def _fresh_connection_lookups() -> Iterator[None]:
    """Tests reuse connection ids for new emulators: no test may see another's connection."""
    from airflow_provider_tts.hooks.connections import RESOLVED_CONNECTIONS

    RESOLVED_CONNECTIONS.clear()
    yield
    RESOLVED_CONNECTIONS.clear()


@pytest.fixture
def emu() -> Iterator[Any]:
    """A fresh emulator per test, on a free loopback port, tasks finishing after 0.3 s."""
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig

    with Emulator(api_key=TEST_KEY, config=EmulatorConfig(default_delay=0.3)) as emulator:
        yield emulator


ConnFactory = Callable[..., str]


@pytest.fixture
def make_conn(emu: Any, monkeypatch: pytest.MonkeyPatch) -> ConnFactory:
    """Define an Airflow connection to the emulator (env var) and return its id."""
    counter = iter(range(1_000_000))

    def make(api: str, *, key: str = TEST_KEY, **extra: Any) -> str:
        conn_id = f"{api}_test_{next(counter)}"
        extra = {"retry_backoff": 0.01, "retry_max_backoff": 2, "read_timeout": 5, **extra}
        if api == "camb_ai":
            host = emu.camb_base_url
        else:
            host = emu.revid_base_url
            extra.setdefault("status_base_url", emu.revid_status_base_url)
        monkeypatch.setenv(
            f"AIRFLOW_CONN_{conn_id.upper()}",
            json.dumps({"conn_type": api, "host": host, "password": key, "extra": extra}),
        )
        return conn_id

    return make


#: The real-Airflow tests CI runs on every older Airflow minor too, beside every unit and emulator test
#: (``make test-af3.x`` runs ``-m "not slow or matrix"``): what this Airflow offers (``tests/compat/``),
#: every operator family through one retry on a real deployment and under ``airflow dags test``
#: (``tests/slow/test_operator_families.py``), and a worker SIGKILLed after the create or mid-create with
#: the Variable ledger, the below-3.3 mechanism (the retry does not pay twice), and the extra links the
#: api-server serves for every storing operator (``tests/slow/test_links.py``), and the Audio view on the
#: api-server, its auth and a browser (``tests/slow/test_audio_view.py``; skipped on 3.0, which has no UI
#: plugins). Node id prefixes, so the test files themselves need no marker.
MATRIX_TESTS = (
    "tests/compat/",
    "tests/slow/test_operator_families.py",
    "tests/slow/test_links.py",
    "tests/slow/test_audio_view.py",
    "tests/reliability/test_restarts.py::test_worker_killed_while_waiting_after_submit_does_not_pay_twice[variable]",
    "tests/reliability/test_restarts.py::test_worker_killed_mid_submit_does_not_pay_twice[variable]",
)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "matrix: what CI runs on every older Airflow minor (MATRIX_TESTS)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.nodeid.startswith(MATRIX_TESTS):
            item.add_marker(pytest.mark.matrix)
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Whole files go to the workers in this order (`--dist loadfile`): the files that start real
        # Airflow (marked slow; minutes each) first, so the last minutes are short files filling in
        # beside them rather than one long file running alone. Within a file the order is unchanged.
        slow_files = {item.path for item in items if item.get_closest_marker("slow")}
        items.sort(key=lambda item: item.path not in slow_files)
