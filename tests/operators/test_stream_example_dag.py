"""``example_tts_stream`` through ``dag.test()`` against the emulator: run twice, pay once.

``dag.test()`` runs the real task runner (mapped tasks, templating, XCom) on a SQLite metadata
database in a subprocess; the emulator answers over loopback and counts the ``/tts-stream`` calls.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEY

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_tts_stream.py"
RUNNER = """
import importlib.util, json, sys
spec = importlib.util.spec_from_file_location("example_tts_stream", sys.argv[1])
module = importlib.util.module_from_spec(spec)
spec.loader.exec_module(module)
run = module.dag.test(run_conf=json.loads(sys.argv[2]))
print("RESULT", run.state)
"""


@pytest.fixture(scope="module")
def airflow_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    home = tmp_path_factory.mktemp("airflow-home")
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(EXAMPLE.parent),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    subprocess.run(
        [Path(sys.executable).with_name("airflow"), "db", "migrate"],
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )
    return env


def _run(env: dict[str, str], conf: dict[str, Any]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(EXAMPLE), json.dumps(conf)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert "RESULT success" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert TEST_KEY not in out.stdout + out.stderr


@pytest.mark.timeout(1500)  # two dag.test() runs; generous, as a loaded shared machine is slow
def test_second_run_pays_only_for_changed_texts(emu: Any, airflow_env: dict[str, str], tmp_path: Path) -> None:
    env = {
        **airflow_env,
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY}
        ),
        "TTS_EXAMPLE_OUTPUT": f"file://{tmp_path}/",  # the deployment decides where; the example uses stream/
    }
    texts = ["First line of tonight.", "Second line of tonight.", "Third line of tonight."]
    conf = {"texts": texts}
    _run(env, conf)
    assert emu.stats()["requests_by_endpoint"]["stream"] == 3
    first = json.loads((tmp_path / "stream" / "manifest.json").read_text())
    assert (first["vendor_calls"], first["served_from_cache"]) == (3, 0)
    assert first["credits_charged"] == sum(len(t) for t in texts)

    # The nightly re-run: two texts unchanged, one edited. Only the edited one is paid for.
    _run(env, {**conf, "texts": [*texts[:2], "A changed third line."]})
    assert emu.stats()["requests_by_endpoint"]["stream"] == 4
    second = json.loads((tmp_path / "stream" / "manifest.json").read_text())
    assert [r["cached"] for r in second["items"]] == [True, True, False]
    assert (second["vendor_calls"], second["served_from_cache"]) == (1, 2)
    assert [r["uri"] for r in second["items"]][:2] == [r["uri"] for r in first["items"]][:2]
    assert [r["credits"] for r in second["items"]][:2] == [0, 0]
    assert emu.stats()["creates_total"] == 0  # the legacy task API was never used
