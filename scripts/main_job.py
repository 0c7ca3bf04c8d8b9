"""The main job: the batch audio pipeline on a real, embedded Airflow, with no account and no network.

It starts the emulator of both vendor APIs, starts Airflow 3 locally (scheduler, triggerer,
dag-processor and api-server as separate processes; SQLite; LocalExecutor) with the repository's
``example_dags``, triggers ``example_tts_batch`` (50 texts, dynamic task mapping, downloads that
wait in the triggerer), shows progress, and leaves playable audio plus ``manifest.json`` in
``./output/batch/``. Everything it started is stopped at the end, also on Ctrl-C or failure.

Run it with ``make run``.
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

OUTPUT = ROOT / "output"
DAG_ID = "example_tts_batch"


def say(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def main() -> int:
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig
    from tools.local_airflow import LocalAirflow

    started = time.monotonic()
    batch_dir = OUTPUT / "batch"
    if batch_dir.exists():
        shutil.rmtree(batch_dir)
    batch_dir.mkdir(parents=True)
    workdir = Path(tempfile.mkdtemp(prefix="tts-main-job-"))
    with Emulator(config=EmulatorConfig(default_delay=3.0)) as emu:
        say(f"emulator of Camb.ai and RevidAPI listening on {emu.url} (key {emu.api_key!r}, no account needed)")
        conns = {
            "AIRFLOW_CONN_CAMB_AI_DEFAULT": {
                "conn_type": "camb_ai",
                "host": emu.camb_base_url,
                "password": emu.api_key,
            },
            "AIRFLOW_CONN_REVID_TTS_DEFAULT": {
                "conn_type": "revid_tts",
                "host": emu.revid_base_url,
                "password": emu.api_key,
                "extra": {"status_base_url": emu.revid_status_base_url},
            },
        }
        env = {name: json.dumps(value) for name, value in conns.items()}
        env["TTS_EXAMPLE_OUTPUT"] = OUTPUT.as_uri() + "/"
        airflow = LocalAirflow(workdir / "home", ROOT / "example_dags", parallelism=8, env=env, log=None)
        try:
            say("starting Airflow (scheduler, triggerer, dag-processor, api-server; SQLite, LocalExecutor)...")
            airflow.start(timeout=300)
            say(f"Airflow is up at {airflow.api_url}")
            airflow.wait_for_dag(DAG_ID)
            run_id = airflow.trigger(DAG_ID)  # writes to TTS_EXAMPLE_OUTPUT/batch/ = ./output/batch/
            say(f"triggered {DAG_ID} ({run_id}): 50 texts -> submit -> wait in the triggerer -> store")
            last: dict[str, Any] = {}

            def progress(_: dict[str, Any]) -> None:
                counts: dict[str, Counter[str]] = {}
                for ti in airflow.task_instances(DAG_ID, run_id):
                    counts.setdefault(ti["task_id"], Counter())[ti["state"] or "none"] += 1
                summary = {task: dict(states) for task, states in counts.items()}
                if summary != last:
                    last.clear()
                    last.update(summary)
                    parts = [
                        f"{task}: " + ", ".join(f"{n} {state}" for state, n in sorted(states.items()))
                        for task, states in summary.items()
                    ]
                    say("  " + " | ".join(parts))

            run = airflow.wait_for_run(DAG_ID, run_id, timeout=900, on_poll=progress, poll_interval=1.0)
            if run["state"] != "success":
                say(airflow.describe_run(DAG_ID, run_id))
                return 1
        finally:
            say("stopping Airflow...")
            airflow.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    manifest = json.loads((batch_dir / "manifest.json").read_text())
    total = sum(item["size_bytes"] for item in manifest["items"])
    seconds = sum(item["duration_seconds"] or 0 for item in manifest["items"])
    say(f"{manifest['count']} audio files ({total / 1e6:.1f} MB, {seconds:.0f} s of audio) in {batch_dir}")
    say(f"manifest: {batch_dir / 'manifest.json'}")
    say(f"first file: {manifest['items'][0]['uri']}")
    say(f"done in {time.monotonic() - started:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
