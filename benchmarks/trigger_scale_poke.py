"""One poke-mode sensor wait as a task process, for ``benchmarks/trigger_scale.py`` to measure its RSS.

In poke mode every wait occupies a worker slot and a whole Python process for its duration. This
script is that process, minus the scheduler: it imports what a task process imports (Airflow's task
runner and the provider's sensor), then, given a task id on stdin, runs
``TtsTaskSensor(mode="poke", deferrable=False).execute({})`` against that pending emulator task
until it succeeds. The driver samples its memory with psutil meanwhile.

Protocol: like ``trigger_scale_worker.py``, the original stdout carries JSON lines to the driver
(``ready`` after imports, ``done`` with the result); logs go to the log file.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--poll-interval", type=float, required=True)
    parser.add_argument("--log-file", required=True)
    args = parser.parse_args()
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    log_fd = os.open(args.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log_fd, 1)
    os.dup2(log_fd, 2)
    os.close(log_fd)

    import airflow.sdk.execution_time.task_runner  # noqa: F401  (what every task process loads)

    from airflow_provider_tts.sensors.tts import TtsTaskSensor

    channel.write(json.dumps({"event": "ready", "time": time.time()}) + "\n")
    task_id = sys.stdin.readline().strip()  # the driver creates the task once this process is ready
    cpu0 = time.process_time()
    sensor = TtsTaskSensor(
        task_id="wait_for_tts",
        tts_conn_id=args.conn_id,
        tts_task_id=task_id,
        mode="poke",
        deferrable=False,
        poke_interval=args.poll_interval,
        timeout=3600,
    )
    result = sensor.execute({})
    channel.write(
        json.dumps({"event": "done", "state": result.get("state"), "cpu_seconds": time.process_time() - cpu0}) + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
