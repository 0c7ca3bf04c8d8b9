"""DAG-parse cost: the modules a DAG file imports must not pull in aiohttp, the audio library or the emulator.

The scheduler's DAG processor imports every DAG file over and over; the async client is only
needed inside the triggerer, and the emulator only in tests and demos.
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys

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
