"""One DAG per sensor mode, each waiting on one task of every kind; run with ``dag.test()``.

Used by ``tests/sensors/test_sensor_modes.py``: ``python sensor_modes.py MODE CONF_JSON``.
"""

from __future__ import annotations

import datetime
import json
import sys

from airflow.sdk import DAG

from airflow_provider_tts.sensors.tts import TtsTaskSensor

MODES = {"poke": ("poke", False), "reschedule": ("reschedule", False), "deferrable": ("poke", True)}
KINDS = {"camb_tts": "tts", "camb_sound": "text-to-sound", "revid_tts": "tts", "revid_srt": "srt-to-speech"}

for name, (mode, deferrable) in MODES.items():
    with DAG(f"sensor_modes_{name}", schedule=None, start_date=datetime.datetime(2026, 1, 1)) as dag:
        for key, kind in KINDS.items():
            TtsTaskSensor(
                task_id=f"wait_{key}",
                tts_conn_id="{{ params.conns['" + key.split("_")[0] + "'] }}",
                tts_task_id="{{ params.tasks['" + key + "'] }}",
                kind=kind,
                mode=mode,
                deferrable=deferrable,
                poke_interval=0.5,
                timeout=600,  # generous: a busy CI machine runs dag.test() slowly
                params={"conns": {}, "tasks": {}},
            )
    globals()[f"dag_{name}"] = dag

if __name__ == "__main__":
    run = globals()[f"dag_{sys.argv[1]}"].test(run_conf=json.loads(sys.argv[2]))
    print("RESULT", run.state, json.dumps({ti.task_id: ti.state for ti in run.get_task_instances()}))
