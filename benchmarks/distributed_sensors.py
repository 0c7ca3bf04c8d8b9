"""Deferred vs reschedule-mode sensors on Airflow's distributed engine: what waiting costs where.

On the deployment of ``tools/distributed_airflow.py`` (PostgreSQL, Redis, CeleryExecutor, two Celery workers,
two triggerers, api-server, scheduler, dag-processor) the same N vendor tasks are waited for twice, by N
mapped ``TtsTaskSensor`` instances: once deferrable (the waits run in the two triggerers), once in
``mode="reschedule"`` (every poke is a task run on a Celery worker). Each vendor task finishes
``--pending`` seconds after the run is triggered; both forms poll every ``--interval`` seconds.

Per form it reports the wall time from trigger to the run's end, the CPU seconds of the scheduler, the
workers (their whole process trees: Celery pool, task supervisors, task processes) and the triggerers,
the triggerers' peak RSS, and the metadata DB's load (``pg_stat_database`` transactions and row
operations, ``pg_stat_statements`` statement count) over the run. Not part of CI::

    .venv/bin/python benchmarks/distributed_sensors.py --sensors 1000

On 2 shared cores a full 1,000 takes long (every sensor start is a task process); ``--sensors`` scales it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from benchmarks._batch_measure import tree_cpu
from benchmarks._report import table, write_section
from tools.distributed_airflow import DistributedAirflow

KEY = "bench-distributed-key"

DAG_FILE = '''
"""Benchmark DAGs: N mapped TtsTaskSensor waits, deferrable or in reschedule mode."""
from __future__ import annotations

from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_tts.sensors.tts import TtsTaskSensor
from airflow_provider_tts.waiting import WaitPolicy

INTERVAL = __INTERVAL__

for mode in ("deferred", "reschedule"):
    with DAG(
        dag_id=f"bench_{mode}",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        params={"ids": Param([], type="array")},
        max_active_tasks=100_000,
    ):

        @task
        def ids(params: dict[str, Any] | None = None) -> list[str]:
            return list((params or {})["ids"])

        TtsTaskSensor.partial(
            task_id="wait",
            tts_conn_id="revid_tts_default",
            kind="tts",
            deferrable=mode == "deferred",
            mode="reschedule" if mode == "reschedule" else "poke",
            # By name (slow_poll_interval=...) the policy's fields do not pass partial()'s check.
            wait_policy=WaitPolicy(poll_interval=INTERVAL, slow_poll_interval=INTERVAL),
            timeout=3600,
        ).expand(tts_task_id=ids())
'''


def _tree_rss(pid: int) -> int:
    try:
        root = psutil.Process(pid)
        return sum(p.memory_info().rss for p in [root, *root.children(recursive=True)])
    except psutil.Error:
        return 0


class _RssSampler(threading.Thread):
    def __init__(self, pids: list[int]) -> None:
        super().__init__(daemon=True)
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(1.0):
            for pid in self.pids:
                self.peak[pid] = max(self.peak[pid], _tree_rss(pid))


def _db_counters(af: DistributedAirflow) -> dict[str, int]:
    row = af.pg_query(
        "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, tup_fetched "
        "FROM pg_stat_database WHERE datname = 'airflow'"
    )[0]
    statements = af.pg_query("SELECT coalesce(sum(calls), 0) FROM pg_stat_statements")[0][0]
    names = ("transactions", "inserted", "updated", "deleted", "fetched")
    return {**dict(zip(names, (int(v) for v in row), strict=True)), "statements": int(statements)}


def measure(af: DistributedAirflow, emu: Emulator, mode: str, sensors: int, pending: float) -> dict[str, Any]:
    dag_id = f"bench_{mode}"
    af.wait_for_dag(dag_id)
    groups = {
        "scheduler": [af.pid("scheduler")],
        "workers": [af.pid(w) for w in af.workers],
        "triggerers": [af.pid(t) for t in af.triggerers],
    }
    sampler = _RssSampler(groups["triggerers"])
    ids = [emu.create_task("revid_tts", "tts", delay=pending) for _ in range(sensors)]
    af.pg_query("SELECT pg_stat_statements_reset()")
    time.sleep(1)  # pg_stat_database lags by up to its flush interval
    db0 = _db_counters(af)
    cpu0 = {name: tree_cpu(pids) for name, pids in groups.items()}
    sampler.start()
    t0 = time.monotonic()
    run_id = af.trigger(dag_id, conf={"ids": ids})
    run = af.wait_for_run(dag_id, run_id, timeout=7200, poll_interval=2, log_tasks=True)
    wall = time.monotonic() - t0
    cpu1 = {name: tree_cpu(pids) for name, pids in groups.items()}
    sampler.stop.set()
    sampler.join()
    time.sleep(1)
    db1 = _db_counters(af)
    tis = [ti for ti in af.task_instances(dag_id, run_id) if ti["task_id"] == "wait"]
    (reschedules,) = af.pg_query(
        "SELECT count(*) FROM task_reschedule tr JOIN task_instance ti ON tr.ti_id = ti.id "
        "WHERE ti.dag_id = %s AND ti.run_id = %s",
        (dag_id, run_id),
    )[0]
    polls = emu.stats()["polls_by_task"]
    # Worker task runs: a reschedule-mode sensor runs once plus once per reschedule; a deferred one
    # runs to defer and again to resume (its first check sees the task pending: ``pending`` is
    # chosen far longer than the time to start all sensors).
    worker_runs = sensors + int(reschedules) if mode == "reschedule" else 2 * sensors
    return {
        "mode": mode,
        "state": run["state"],
        "sensors": sensors,
        "succeeded": sum(ti["state"] == "success" for ti in tis),
        "task_runs": worker_runs,
        "vendor_polls": sum(polls.get(i, 0) for i in ids),
        "wall_s": round(wall, 1),
        "cpu_s": {name: round(cpu1[name] - cpu0[name], 1) for name in groups},
        "triggerer_peak_rss_mb": [round(v / 2**20) for v in sampler.peak.values()],
        "db": {k: db1[k] - db0[k] for k in db0},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sensors", type=int, default=1000)
    parser.add_argument("--pending", type=float, default=60.0, help="seconds each vendor task stays pending")
    parser.add_argument("--interval", type=float, default=10.0, help="poll / poke interval of both forms")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-distributed-"))
    dags = work / "dags"
    dags.mkdir()
    (dags / "bench_sensors.py").write_text(DAG_FILE.replace("__INTERVAL__", repr(args.interval)))
    results = []
    with Emulator(api_key=KEY, config=EmulatorConfig(default_delay=args.pending)) as emu:
        conn = {"conn_type": "revid_tts", "host": emu.revid_base_url, "password": KEY,
                "extra": {"status_base_url": emu.revid_status_base_url}}  # fmt: skip
        env = {"AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(conn)}
        af = DistributedAirflow(
            work / "deployment", dags, worker_concurrency=8, parallelism=32, env=env, log=print, stop_grace=5
        )
        with af:
            for mode in ("deferred", "reschedule"):
                result = measure(af, emu, mode, args.sensors, args.pending)
                print(json.dumps(result), flush=True)
                results.append(result)
    rows = [
        [r["mode"], f"{r['succeeded']}/{r['sensors']}", r["task_runs"], r["vendor_polls"], r["wall_s"],
         r["cpu_s"]["scheduler"], r["cpu_s"]["workers"], r["cpu_s"]["triggerers"],
         " + ".join(map(str, r["triggerer_peak_rss_mb"])),
         r["db"]["transactions"], r["db"]["statements"],
         r["db"]["inserted"] + r["db"]["updated"] + r["db"]["deleted"], r["db"]["fetched"]]
        for r in results
    ]  # fmt: skip
    headers = ["form", "succeeded", "worker task runs", "vendor polls", "wall s", "scheduler CPU s", "workers CPU s",
               "triggerers CPU s",
               "triggerer peak RSS MB", "DB transactions", "DB statements", "rows written", "rows read"]  # fmt: skip
    body = (
        f"{args.sensors} mapped `TtsTaskSensor` waits on vendor tasks pending {args.pending:.0f} s, polled every "
        f"{args.interval:.0f} s; CeleryExecutor, 2 workers x 8 slots, 2 triggerers, PostgreSQL, Redis, all on "
        "this machine. CPU is seconds of each component's process tree over the run (workers: Celery pools, "
        "supervisors and task processes).\n\n" + table(headers, rows)
    )
    print(body)
    if not args.no_write:
        cmd = (
            f".venv/bin/python benchmarks/distributed_sensors.py --sensors {args.sensors} "
            f"--pending {args.pending:g} --interval {args.interval:g}"
        )
        write_section("distributed", "Deferred vs reschedule sensors on the distributed engine", cmd, body)


if __name__ == "__main__":
    main()
