"""N texts to audio files two ways on one real Airflow: mapped submit + store per text, or one batch task.

Issue 15's benchmark. One deployment, the two example DAGs as shipped, the same N texts, one after
the other:

* **mapped**: ``example_tts_batch`` (a ``TtsSubmitOperator`` and a deferrable
  ``TtsAudioToStorageOperator`` mapped over the texts, then a manifest task): 2 N + 3 task instances;
* **batch**: ``example_tts_batch_one_task`` (one ``RevidTtsBatchToStorageOperator`` reading the texts
  from a ``.txt`` file, one per line): one task instance, one deferral.

The deployment is ``tools/distributed_airflow.py``: PostgreSQL, Redis, CeleryExecutor with two workers
of 8 slots, two triggerers, scheduler, dag-processor, api-server, each its own process tree, as
production runs Airflow. It costs more than ``tools/local_airflow.py`` (SQLite, LocalExecutor), but
SQLite serialises every write of 16 concurrent task processes, which would inflate the mapped side for
a reason production does not have, and PostgreSQL counts the rows written (``pg_stat_database``).

The emulator keeps each vendor task pending ``--pending`` s after its create and answers ``--faults`` of
status, result and storage requests with a random transient fault (every transient kind), and the same
share of create calls with a 429 or 503 (the faults that prove the vendor did not process the call; a
create whose answer was lost ends that item by design, R9, and would measure the fault rate instead).
Audio is the emulator's tone melodies (espeak would spend the same shared cores on synthesis).

Per form: wall time from the trigger call to the run's end, task instances, worker / scheduler /
triggerer CPU seconds (whole process trees, reaped task processes included), metadata DB rows written
(``tup_inserted + tup_updated + tup_deleted``, Celery's result rows included), vendor requests per text,
peak worker RSS (both workers' trees summed, and the largest single process). Checks: every text's file
has the same sha256 in both forms and matches its manifest row, and each form created exactly one
vendor task per text (counted at the emulator). Not part of CI::

    .venv/bin/python benchmarks/batch_vs_mapped.py --texts 1000

On 2 shared cores the mapped side of 1,000 texts (2,003 task instances) takes tens of minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from airflow_provider_tts.emulator import Emulator, EmulatorConfig, FaultConfig
from benchmarks._batch_measure import CreateFaults, RssSampler, tree_cpu
from benchmarks._report import table, write_section
from tools.airflow_rest import _parse_time
from tools.distributed_airflow import DistributedAirflow

KEY = "bench-batch-key"
REPO = Path(__file__).resolve().parents[1]
EXAMPLES = REPO / "example_dags"
FORMS = {"mapped": "example_tts_batch", "batch": "example_tts_batch_one_task"}
#: Fault kinds the emulator draws for status, result and storage: every transient kind.
SEED = 20261202


def texts(n: int) -> list[str]:
    """N distinct texts in the examples' style: the 50 example sentences, varied by a take number."""
    base = [line.split(". ", 1)[-1] for line in (EXAMPLES / "data" / "batch_texts.txt").read_text().splitlines()]
    return [f"{base[i % len(base)].rstrip('.')}, take {i // len(base) + 1}." for i in range(n)]


def shipped(form: str, name: str) -> str:
    """A setting as the form's example DAG file ships it (its first ``name=value,`` line), for the report."""
    found = re.search(rf"^\s+{name}=([^,\s)]+),", (EXAMPLES / f"{FORMS[form]}.py").read_text(), re.M)
    return found.group(1) if found else "?"


def log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def _db_counters(af: DistributedAirflow) -> dict[str, int]:
    row = af.pg_query(
        "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted "
        "FROM pg_stat_database WHERE datname = 'airflow'"
    )[0]
    return dict(zip(("transactions", "inserted", "updated", "deleted"), (int(v) for v in row), strict=True))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _local(uri: str) -> Path:
    return Path(uri.removeprefix("file://"))


def stored_audio(form: str, folder: Path, n: int) -> tuple[dict[int, str], int, list[dict[str, Any]]]:
    """``{text index: sha256 of its file}`` read from the files, how many manifest rows disagreed, failed rows."""
    hashes: dict[int, str] = {}
    mismatches = 0
    failed: list[dict[str, Any]] = []
    if form == "mapped":
        manifest = json.loads((folder / "manifest.json").read_text())
        rows = [(i, item) for i, item in enumerate(manifest["items"])]
        uris = {i: item["uri"] for i, item in rows}
    else:
        lines = (folder / "manifest.jsonl").read_text().splitlines()
        rows = [(int(row["index"]) - 1, row) for row in map(json.loads, lines)]
        uris = {i: row["file"] for i, row in rows if row.get("status") in ("stored", "cached")}
        failed = [row for _, row in rows if row.get("status") not in ("stored", "cached")]
    for i, row in rows:
        if i not in uris or not 0 <= i < n:
            continue
        path = _local(uris[i])
        if not path.is_absolute():
            path = folder / path
        if path.exists():
            hashes[i] = _sha256(path)
            mismatches += hashes[i] != row.get("sha256")
    return hashes, mismatches, failed


def creates_per_text(emu: Emulator, known: set[str], all_texts: list[str]) -> Counter[int]:
    """How many vendor tasks were created for each text index since ``known`` was taken."""
    index = {text: i for i, text in enumerate(all_texts)}
    counts: Counter[int] = Counter()
    for task in emu.tasks():
        if task["task_id"] in known:
            continue
        text = (task.get("body") or {}).get("text")
        counts[index.get(str(text), -1)] += 1
    return counts


def timeline(emu: Emulator, known: set[str], t0: float, end: float, pending: float) -> dict[str, Any]:
    """Where a form's wall time went, from the emulator's own clock (seconds after the trigger call).

    The floor no design can beat is the slowest item's own time: its vendor task's pending time
    (create to ready, the emulator's delay) plus its download (the last successful storage request
    for it, start to answer). ``excess_s`` is the wall time over that floor (target: <= 10 s).
    Phases: ``first_create``/``last_create`` (submit), ``last_ready`` (the last vendor task could
    answer done), ``first_download``/``last_download`` (store) and ``end`` (the run's end).
    """
    now = time.time()
    tasks = [task for task in emu.tasks() if task["task_id"] not in known]
    created = {task["task_id"]: now - float(task["age_seconds"]) for task in tasks}
    delay = {task["task_id"]: (task["spec"].get("delay") if task["spec"].get("delay") is not None else pending)
             for task in tasks}  # fmt: skip
    starts: dict[str, float] = {}
    for entry in emu.storage_requests():
        if entry["time"] >= t0:
            starts[Path(str(entry["path"]).split("?")[0]).stem] = float(entry["time"])
    downloads: dict[str, float] = {}
    ends: list[float] = []
    for entry in emu.requests():
        if entry["endpoint"] != "storage" or entry["time"] < t0 or entry["status"] != 200:
            continue
        name = Path(str(entry["path"]).split("?")[0]).stem
        ends.append(float(entry["time"]))
        if name in starts:
            downloads[name] = max(float(entry["time"]) - starts[name], 0.0)
    floor = max((float(delay[t]) + downloads.get(t, 0.0) for t in created), default=0.0)
    ready = [created[t] + float(delay[t]) for t in created]

    def at(value: float | None) -> float | None:
        return None if value is None else round(value - t0, 1)

    return {
        "floor_s": round(floor, 1),
        "excess_s": round(end - t0 - floor, 1),
        "first_create": at(min(created.values(), default=None)),
        "last_create": at(max(created.values(), default=None)),
        "last_ready": at(max(ready, default=None)),
        "first_download": at(min(starts.values(), default=None)),
        "last_download": at(max(ends, default=None)),
        "end": at(end),
    }


def measure(
    af: DistributedAirflow, emu: Emulator, form: str, all_texts: list[str], work: Path, timeout: float
) -> dict[str, Any]:
    dag_id = FORMS[form]
    af.wait_for_dag(dag_id)
    destination = work / "out" / ("batch" if form == "mapped" else "batch-one-task")
    conf: dict[str, Any] = {}
    if form == "mapped":
        conf = {"texts": all_texts}
    else:
        (work / "texts.txt").write_text("\n".join(all_texts) + "\n")  # the deployment's TTS_EXAMPLE_ITEMS
    groups = {
        "scheduler": [af.pid("scheduler")],
        "workers": [af.pid(w) for w in af.workers],
        "triggerers": [af.pid(t) for t in af.triggerers],
    }
    known = {task["task_id"] for task in emu.tasks()}
    pending = float(emu.config.default_delay)
    stats0 = emu.stats()
    time.sleep(1.5)  # pg_stat_database lags by up to its flush interval
    db0 = _db_counters(af)
    cpu0 = {name: tree_cpu(pids) for name, pids in groups.items()}
    sampler = RssSampler(groups["workers"])
    sampler.start()
    t0 = time.time()
    run_id = af.trigger(dag_id, conf=conf)
    last = [0.0]

    def progress(run: dict[str, Any]) -> None:
        if time.monotonic() - last[0] > 60:
            last[0] = time.monotonic()
            counts = Counter(ti["state"] for ti in af.task_instances(dag_id, run_id))
            log(f"{form}: {run['state']} {dict(counts)} after {time.time() - t0:.0f} s")

    run = af.wait_for_run(dag_id, run_id, timeout=timeout, on_poll=progress, poll_interval=2)
    cpu1 = {name: tree_cpu(pids) for name, pids in groups.items()}
    sampler.stop.set()
    sampler.join()
    time.sleep(1.5)
    db1 = _db_counters(af)
    stats1 = emu.stats()
    end = _parse_time(run.get("end_date"))
    wall = (end.timestamp() if end else time.time()) - t0
    phases = timeline(emu, known, t0, t0 + wall, pending)
    tis = af.task_instances(dag_id, run_id)
    creates = creates_per_text(emu, known, all_texts)
    hashes, manifest_mismatches, failed_rows = stored_audio(form, destination, len(all_texts))
    n = len(all_texts)
    requests = stats1["requests_total"] - stats0["requests_total"]
    by_endpoint = {
        k: v - stats0["requests_by_endpoint"].get(k, 0)
        for k, v in stats1["requests_by_endpoint"].items()
        if v - stats0["requests_by_endpoint"].get(k, 0)
    }
    return {
        "form": form,
        "dag_id": dag_id,
        "state": run["state"],
        "texts": n,
        "task_instances": len(tis),
        "ti_states": dict(Counter(str(ti["state"]) for ti in tis)),
        "tries": sum(int(ti.get("try_number") or 0) for ti in tis),
        "wall_s": round(wall, 1),
        "cpu_s": {name: round(cpu1[name] - cpu0[name], 1) for name in groups},
        "db": {k: db1[k] - db0[k] for k in db0},
        "requests": requests,
        "requests_by_endpoint": by_endpoint,
        "faults": stats1["faults_total"] - stats0["faults_total"],
        "peak_workers_rss_mb": round(sampler.peak_total / 2**20),
        "peak_process_rss_mb": round(sampler.peak_process / 2**20),
        "files": len(hashes),
        "manifest_mismatches": manifest_mismatches,
        "failed_rows": failed_rows[:10],
        "texts_with_one_create": sum(1 for i in range(n) if creates.get(i) == 1),
        "creates": sum(creates.values()),
        "load_5min": round(os.getloadavg()[1], 1),
        "phases": phases,
        "_hashes": hashes,
    }


def _commit() -> str:
    """The provider code measured: this checkout's commit, marked when the work tree differs from it."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "airflow_provider_tts"],
                               capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (modified)" if dirty else "")


def _rows(result: dict[str, Any]) -> int:
    db = result["db"]
    return int(db["inserted"] + db["updated"] + db["deleted"])


def report(results: list[dict[str, Any]], args: argparse.Namespace, injected: int) -> str:
    by_form = {r["form"]: r for r in results}
    n = args.texts
    identical = 0
    if {"mapped", "batch"} <= by_form.keys():
        a, b = by_form["mapped"]["_hashes"], by_form["batch"]["_hashes"]
        identical = sum(1 for i in range(n) if i in a and a.get(i) == b.get(i))
    rows = []
    for r in results:
        rows.append([
            r["form"], r["state"], r["task_instances"], r["tries"], r["wall_s"], r["cpu_s"]["workers"],
            r["cpu_s"]["scheduler"], r["cpu_s"]["triggerers"], _rows(r), r["db"]["transactions"],
            round(r["requests"] / n, 2), r["phases"]["floor_s"], r["phases"]["excess_s"],
            f"{r['peak_workers_rss_mb']} / {r['peak_process_rss_mb']}",
            f"{r['files']}/{n}", f"{r['texts_with_one_create']}/{n}",
        ])  # fmt: skip
    headers = ["form", "run", "task instances", "task tries", "wall s", "workers CPU s", "scheduler CPU s",
               "triggerers CPU s", "DB rows written", "DB transactions", "vendor requests / text",
               "slowest item's own s (vendor + download)", "wall over it s",
               "peak worker RSS MB (all / largest process)", "files", "texts with exactly 1 create"]  # fmt: skip
    lines = [
        f"{n} texts, vendor tasks pending {args.pending:g} s, {args.faults:.0%} transient faults on status, "
        f"result and storage requests (every transient kind) and on create calls (429/503 only: {injected} "
        f"injected over both forms); the two example DAGs as shipped (mapped: submits "
        f"{shipped('mapped', 'max_active_tis_per_dagrun')} at a time, DAG "
        f"`max_active_tasks={shipped('mapped', 'max_active_tasks')}`; batch: "
        f"`max_active_requests={shipped('batch', 'max_active_requests')}`), one after the other on one deployment: "
        "CeleryExecutor, 2 workers x 8 slots, 2 triggerers, PostgreSQL, Redis, all on this machine. Wall: "
        "trigger call to the run's end. CPU: seconds of each component's process tree over the run "
        "(workers: Celery pools, supervisors and task processes). DB rows: `pg_stat_database` inserted + "
        "updated + deleted (Celery's result rows included). Provider code: "
        f"{_commit()}; machine load (5-min average at each form's end): "
        + ", ".join(f"{r['form']} {r['load_5min']}" for r in results)
        + ".",
        "",
        table(headers, rows),
    ]
    lines.append("")
    for r in results:
        p = r["phases"]
        lines.append(
            f"- {r['form']} timeline (s after the trigger call): creates {p['first_create']}-{p['last_create']}, "
            f"last vendor task ready {p['last_ready']}, downloads {p['first_download']}-{p['last_download']}, "
            f"run ended {p['end']}; wall over the slowest item's own time {p['excess_s']} s (target <= 10)."
        )
    for r in results:
        for row in r["failed_rows"]:
            error, retryable = row.get("error"), row.get("retryable")
            lines.append(f"- {r['form']}: item {row.get('key')} failed: {error} (retryable: {retryable})")
    if {"mapped", "batch"} <= by_form.keys():
        m, b = by_form["mapped"], by_form["batch"]

        def ratio(x: float, y: float) -> str:
            return f"{x / y:.1f}x" if y else "n/a"

        lines.append(
            f"Batch vs mapped: {ratio(m['cpu_s']['workers'], b['cpu_s']['workers'])} less worker CPU (target >= 10x), "
            f"{ratio(m['wall_s'], b['wall_s'])} less wall time (target >= 5x), "
            f"{ratio(m['cpu_s']['scheduler'], b['cpu_s']['scheduler'])} less scheduler CPU, "
            f"{ratio(_rows(m), _rows(b))} "
            f"fewer DB rows written. Audio: {identical}/{n} texts have the same sha256 in both forms; manifest "
            f"rows disagreeing with their file: mapped {m['manifest_mismatches']}, batch {b['manifest_mismatches']}. "
            f"Vendor creates: mapped {m['creates']}, batch {b['creates']} for {n} texts each."
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--pending", type=float, default=20.0, help="seconds each vendor task stays pending")
    parser.add_argument("--faults", type=float, default=0.10, help="share of vendor requests answered with a fault")
    parser.add_argument("--forms", default="batch,mapped", help="which forms, in this order")
    parser.add_argument("--timeout", type=float, default=5400.0, help="seconds per form before giving up")
    parser.add_argument("--no-write", action="store_true", help="print only; leave BENCHMARKS.md alone")
    args = parser.parse_args()
    forms = [f.strip() for f in args.forms.split(",") if f.strip()]
    unknown = sorted(set(forms) - set(FORMS))
    if unknown:
        parser.error(f"unknown forms {unknown}; known: {sorted(FORMS)}")
    all_texts = texts(args.texts)
    work = Path(tempfile.mkdtemp(prefix="bench-batch-"))
    dags = work / "dags"
    (dags / "data").mkdir(parents=True)
    for name in ("example_tts_batch.py", "example_tts_batch_one_task.py", "data/batch_texts.txt"):
        shutil.copy(EXAMPLES / name, dags / name)
    faults = FaultConfig(rate=args.faults, endpoints=frozenset({"status", "result", "storage"}), seed=SEED)
    config = EmulatorConfig(
        default_delay=args.pending,
        audio_engine="tones",
        faults=faults,
        request_log_size=400_000,
        storage_log_size=100_000,
        # About 1 MB per text: audio evicted before its download would be rendered again, on the
        # emulator's two render threads, and show up as the provider's store time (issue 24's
        # finding for batch_store.py).
        audio_cache_mb=max(64, args.texts),
    )
    results = []
    with Emulator(api_key=KEY, config=config) as emu:
        conn = {"conn_type": "revid_tts", "host": emu.revid_base_url, "password": KEY,
                "extra": {"status_base_url": emu.revid_status_base_url}}  # fmt: skip
        # Where the examples read and write is the deployment's choice, never a run's conf.
        env = {"AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(conn), "TTS_EXAMPLE_OUTPUT": (work / "out").as_uri() + "/",
               "TTS_EXAMPLE_ITEMS": (work / "texts.txt").as_uri()}  # fmt: skip
        af = DistributedAirflow(
            work / "deployment", dags, worker_concurrency=8, parallelism=32, env=env, log=log, stop_grace=5
        )
        injector = CreateFaults(emu, args.faults, seed=SEED)
        with af:
            injector.start()
            for form in forms:
                result = measure(af, emu, form, all_texts, work, args.timeout)
                log(json.dumps({k: v for k, v in result.items() if not k.startswith("_")}))
                log(f"emulator audio after {form}: {json.dumps(emu.stats().get('audio'))}")
                results.append(result)
            injector.stop.set()
            injector.join()
    body = report(results, args, injector.injected)
    print(body)
    if not args.no_write and {"mapped", "batch"} <= set(forms):
        cmd = (
            f".venv/bin/python benchmarks/batch_vs_mapped.py --texts {args.texts} --pending {args.pending:g} "
            f"--faults {args.faults:g}"
        )
        write_section("batch-vs-mapped", "Batch operator vs mapped tasks, N texts in one run", cmd, body)
    shutil.rmtree(work / "out", ignore_errors=True)


if __name__ == "__main__":
    main()
