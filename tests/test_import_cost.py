"""DAG-parse cost: the modules a DAG file imports must not pull in aiohttp, the audio library or the emulator.

The scheduler's DAG processor imports every DAG file over and over; the async client is only
needed inside the triggerer, and the emulator only in tests and demos.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

PARSE_TIME_MODULES = [
    "airflow_provider_tts",
    "airflow_provider_tts.hooks.tts",
    "airflow_provider_tts.sensors.tts",
    "airflow_provider_tts.operators.tts",
    "airflow_provider_tts.operators.long_text",
]

PROBE = """
import sys
import airflow.sdk  # what any DAG file already pays for
before = set(sys.modules)
import {module}
added = set(sys.modules) - before
heavy = sorted(m for m in added if m.split('.')[0] in ('aiohttp', 'soundfile', 'numpy')
               or m.startswith('airflow_provider_tts.emulator'))
print(heavy)
"""


@pytest.mark.parametrize("module", PARSE_TIME_MODULES)
def test_module_does_not_import_aiohttp_or_emulator(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"{module} is added by a later issue")
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(module=module)], capture_output=True, text=True, check=True, timeout=120
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


DEFERRED = (
    "airflow_provider_tts.vendors.camb",  # request models: built on first use
    "airflow_provider_tts.vendors.revid",
    "airflow_provider_tts.transport.sync",
    "airflow_provider_tts.transport.aio",
    "airflow_provider_tts.transport.hosts",
    "airflow_provider_tts.hooks.tts",
)

PROBE_DEFERRED = """
import sys
import airflow.sdk
import airflow_provider_tts.operators.tts, airflow_provider_tts.sensors.tts
print(sorted(m for m in {deferred!r} if m in sys.modules))
"""


def test_the_submit_store_and_sensor_modules_defer_the_vendor_models_and_the_http_layer() -> None:
    """What a DAG file with the generic operators and the sensor pays at parse: no vendor request
    model, no HTTP transport, no hook; they are imported when a task runs. Counted in modules, not
    milliseconds, so it holds on a busy machine."""
    out = subprocess.run(
        [sys.executable, "-c", PROBE_DEFERRED.format(deferred=DEFERRED)],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    assert out.stdout.strip().splitlines()[-1] == "[]"


PROBE_TIME = """
import time
started = time.perf_counter()
import airflow.sdk
sdk = time.perf_counter()
import airflow_provider_tts.operators.tts, airflow_provider_tts.sensors.tts
done = time.perf_counter()
print(sdk - started, done - sdk)
"""
#: What the generic operators and the sensor may add to ``import airflow.sdk``, as a share of it.
#: Measured (BENCHMARKS.md "DAG-parse import cost"): 17-22 ms against 1,000-1,300 ms, about 1.6 %
#: on every minor; 4 % is twice that, and still 40-50 ms, far below the 52 ms of before.
PARSE_SHARE_LIMIT = 0.04


def test_the_operator_and_sensor_modules_cost_a_small_share_of_airflow_sdk(tmp_path: Path) -> None:
    """A DAG file pays this on every parse. Timed in fresh interpreters as a deployment runs them
    (bytecode cached, here under ``tmp_path``), the fastest of five against the fastest of five
    ``import airflow.sdk`` of the same interpreters: a busy machine slows both alike."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(tmp_path)
    runs = []
    for _ in range(6):  # the first one writes the bytecode
        out = subprocess.run(
            [sys.executable, "-c", PROBE_TIME], capture_output=True, text=True, check=True, timeout=300, env=env
        )
        runs.append(tuple(float(x) for x in out.stdout.strip().splitlines()[-1].split()))
    sdk = min(r[0] for r in runs[1:])
    provider = min(r[1] for r in runs[1:])
    assert provider <= PARSE_SHARE_LIMIT * sdk, (
        f"the operator and sensor modules took {provider * 1000:.1f} ms on top of airflow.sdk's "
        f"{sdk * 1000:.0f} ms ({provider / sdk:.1%}); the limit is {PARSE_SHARE_LIMIT:.0%}"
    )
