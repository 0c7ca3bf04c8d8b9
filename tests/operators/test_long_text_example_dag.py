"""``example_tts_long_text`` through ``dag.test()`` against the emulator: one file, then an edit pays one part.

The same runner as ``example_tts_stream``'s test (a subprocess with its own SQLite metadata
database, triggers run inline); the emulator counts the create calls.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEY
from tests.operators.test_stream_example_dag import RUNNER
from tests.operators.test_stream_example_dag import airflow_env as airflow_env

EXAMPLE = Path(__file__).resolve().parents[2] / "example_dags" / "example_tts_long_text.py"


def run_example(env: dict[str, str], conf: dict[str, Any]) -> None:
    out = subprocess.run(
        [sys.executable, "-c", RUNNER, str(EXAMPLE), json.dumps(conf)], env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert "RESULT success" in out.stdout, out.stdout[-3000:] + out.stderr[-3000:]
    assert TEST_KEY not in out.stdout + out.stderr


def creates(emu: Any) -> int:
    return sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values())


@pytest.mark.timeout(1500)
def test_the_example_narrates_a_chapter_and_an_edit_pays_one_part(
    emu: Any, airflow_env: dict[str, str], tmp_path: Path
) -> None:
    env = {
        **airflow_env,
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY}
        ),
        "TTS_EXAMPLE_OUTPUT": f"file://{tmp_path}/",
    }
    paragraphs = [f"Paragraph {n}. " + "The tide came in and went out again. " * 30 for n in range(5)]
    run_example(env, {"text": "\n\n".join(paragraphs), "name": "tides"})
    folder = tmp_path / "long-text"
    assert sorted(p.name for p in folder.iterdir() if not p.name.startswith(".")) == [
        "tides.flac", "tides.srt", "tides.timing.json", "tides.vtt",
    ]  # fmt: skip
    first = creates(emu)
    assert first == len(json.loads((folder / "tides.timing.json").read_text())["parts"]) == 5
    paragraphs[3] = paragraphs[3].replace("Paragraph 3.", "Paragraph three, now edited.")
    run_example(env, {"text": "\n\n".join(paragraphs), "name": "tides"})
    assert creates(emu) == first + 1
