"""The Audio view of a 10,000-item batch run: how long the api-server takes to answer a page, and a browser to show it.

A real deployment (``tools/local_airflow.py``: scheduler, triggerer, dag-processor, api-server) runs a
real ``RevidTtsBatchToStorageOperator`` of 2 items against the emulator. Its manifest is then replaced
by a synthetic one of 10,000 rows (3 % failed with a reason, the rest stored, each row naming its own
file, a hard link to a real stored file), so the view reads exactly what a 10,000-item run leaves
without paying for 10,000 vendor calls. Measured:

* ``GET /tts-audio/entries`` (page 1, the last page, the failed filter; 100 rows a page), repeated;
* the page in headless Chromium (when installed): from navigation start to the first page of rows
  rendered with the run's totals (``performance.now()`` when the page has drawn them).

Usage::

    .venv/bin/python benchmarks/audio_view.py            # figures into BENCHMARKS.md (audio-view section)
    .venv/bin/python benchmarks/audio_view.py --quick    # 5 repetitions; BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import requests

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import table, write_section

ITEMS = 10_000
FAILED_EVERY = 33  # about 3 %
DAG_ID = "tts_audio_view_bench"
KEY = "bench-key-audio-view"
DAG = """
import os
from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator

with DAG(dag_id="{dag_id}", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC"), catchup=False):
    RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        items=["The first text of the batch.", "The second text of the batch."],
        destination=os.environ["TTS_BENCH_OUTPUT"] + "batch/",
        deferrable=True,
        poll_interval=1,
        timeout=timedelta(minutes=5),
    )
"""


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


def synthesize(folder: Path, manifest: Path) -> None:
    """Replace the 2-item manifest by 10,000 rows, each with a file of its own (hard links of a real one)."""
    real = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    source = Path(real[0]["file"][len("file://") :])
    rows = []
    for index in range(1, ITEMS + 1):
        key = f"item-{index:05d}"
        if index % FAILED_EVERY == 0:
            rows.append({**real[0], "index": index, "key": key, "status": "failed", "file": None, "size_bytes": None,
                         "sha256": None, "duration_seconds": None, "error": "vendor status failed: TTS engine failed",
                         "credits": None})  # fmt: skip
            continue
        target = folder / f"{key}{source.suffix}"
        if not target.exists():
            os.link(source, target)
        rows.append({**real[0], "index": index, "key": key, "status": "stored", "file": target.as_uri()})
    manifest.write_text("".join(json.dumps(row, separators=(",", ":")) + "\n" for row in rows))


def timed_get(url: str, params: dict[str, Any], repeat: int) -> tuple[list[float], dict[str, Any]]:
    session = requests.Session()
    times, body = [], {}
    for _ in range(repeat):
        started = time.perf_counter()
        answer = session.get(url, params=params, timeout=60)
        answer.raise_for_status()
        body = answer.json()
        times.append(time.perf_counter() - started)
    return times, body


def browser_load(url: str, profile: Path, repeat: int) -> list[float] | None:
    """Seconds from navigation start to the first page of rows drawn, per fresh navigation; None without chromium."""
    from tests.slow.cdp import Chromium, chromium_executable

    executable = chromium_executable()
    if executable is None:
        return None
    times = []
    with Chromium(executable, profile) as browser:
        browser.send("Page.enable")
        for _ in range(repeat):
            browser.send("Page.navigate", url="about:blank")
            browser.send("Page.navigate", url=url)
            loaded = browser.wait_for("window.ttsAudioViewLoadedAt", timeout=60)
            times.append(float(loaded) / 1000)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 repetitions; BENCHMARKS.md untouched")
    args = parser.parse_args()
    repeat = 5 if args.quick else 20

    from airflow_provider_tts.emulator import Emulator, EmulatorConfig
    from tools.local_airflow import LocalAirflow

    with tempfile.TemporaryDirectory(prefix="audio-view-bench-") as tmp, Emulator(
        api_key=KEY, config=EmulatorConfig(default_delay=1, audio_engine="tones")
    ) as emulator:  # fmt: skip
        root = Path(tmp)
        dags, output = root / "dags", root / "output"
        dags.mkdir()
        output.mkdir()
        (dags / "bench.py").write_text(DAG.format(dag_id=DAG_ID))
        env = {
            "TTS_BENCH_OUTPUT": output.as_uri() + "/",
            "AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(
                {
                    "conn_type": "revid_tts",
                    "host": emulator.revid_base_url,
                    "password": KEY,
                    "extra": {"status_base_url": emulator.revid_status_base_url, "max_retries": 0},
                }
            ),
        }
        if not any(ep.name == "tts_audio_view" for ep in _entry_points()):
            env["AIRFLOW__CORE__LAZY_DISCOVER_PROVIDERS"] = "False"
        with LocalAirflow(root / "home", dags, parallelism=2, env=env, log=print) as airflow:
            airflow.wait_for_dag(DAG_ID)
            run_id = airflow.trigger(DAG_ID)
            assert airflow.wait_for_run(DAG_ID, run_id, timeout=300)["state"] == "success"
            result = airflow.xcom(DAG_ID, run_id, "speak_all")
            manifest = Path(result["manifest"][len("file://") :])
            synthesize(manifest.parent, manifest)
            url = f"{airflow.api_url}/tts-audio/entries"
            base = {"dag_id": DAG_ID, "run_id": run_id, "per_page": 100}
            load_before = _uptime()
            rows = []
            for label, extra in (
                ("page 1", {}),
                ("last page (100)", {"page": 100}),
                ("failed only", {"status": "failed"}),
            ):
                times, body = timed_get(url, {**base, **extra}, repeat)
                returned = f"{len(body['entries'])} of {body['total_entries']}"
                median, worst = _ms(statistics.median(times)), _ms(max(times))
                rows.append([f"`GET /tts-audio/entries` {label}", repeat, median, worst, returned])
            totals = body["totals"]
            page_url = f"{airflow.api_url}/tts-audio/view?dag_id={DAG_ID}&run_id={requests.utils.quote(run_id)}"
            browser = browser_load(page_url, root / "profile", max(3, repeat // 4))
            if browser is not None:
                rows.append(["page in headless Chromium, navigation to rows drawn", len(browser),
                             _ms(statistics.median(browser)), _ms(max(browser)), "100 rows"])  # fmt: skip
            load_after = _uptime()
    worst = max(float(r[3]) for r in rows) / 1000
    body_md = (
        f"A real `RevidTtsBatchToStorageOperator` run whose manifest was replaced by {ITEMS:,} rows "
        f"({totals['failed']} failed with a reason, {totals['files']:,} stored files, "
        f"{totals['minutes']} min of audio), "
        "on a real deployment (`tools/local_airflow.py`: SQLite, LocalExecutor, one api-server worker). "
        "Each request reads the whole manifest through `ObjectStoragePath`, builds every row, totals them and "
        "returns one page of 100.\n\n"
        + table(["what", "runs", "median ms", "worst ms", "rows returned"], rows)
        + f"\nTarget: under 2 s. Worst: {worst:.2f} s: **{'met' if worst < 2 else 'NOT met'}**.\n\n"
        f"Load before: `{load_before}`  \nLoad after: `{load_after}`\n"
    )
    print(body_md)
    if not args.quick:
        write_section("audio-view", "Audio view: a 10,000-item batch run", "python benchmarks/audio_view.py", body_md)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f}"


def _entry_points() -> Any:
    import importlib.metadata

    return importlib.metadata.entry_points(group="airflow.plugins")


if __name__ == "__main__":
    main()
