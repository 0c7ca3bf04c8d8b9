"""Download throughput and memory of TtsAudioToStorageOperator, against curl and an in-memory copy.

The emulator runs in its own process (its CLI) and serves WAV files of an exact size in constant
memory (tasks created through its control API, ``POST /_emulator/tasks`` with ``audio_bytes``). A
moto S3 server runs in another process on loopback. Each download runs in a fresh subprocess
(``benchmarks/download_worker.py``), so the peak RSS reported is that process's own:

* ``file://``: the operator's code path (``TtsAudioToStorageOperator.execute``, ``deferrable=False``)
  against ``curl -o`` to the same disk (the practical limit);
* ``s3://``: the operator's code path against the Amazon provider's ``HttpToS3Operator`` approach
  (``requests.get(url).content`` then ``S3Hook.load_bytes``), which holds the whole file in memory.

Files go to a scratch directory inside the repository (the same disk, never a tmpfs), are checked,
and removed after each run; every process started is stopped at the end.

    .venv/bin/python benchmarks/download.py            # 512 MiB and 2 GiB, figures into BENCHMARKS.md
    .venv/bin/python benchmarks/download.py --quick    # 8 and 32 MiB smoke run, BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._report import table, write_section

REPO = Path(__file__).resolve().parent.parent

API_KEY = "tts-emulator-key"
MiB = 1024**2
TTS_CONN_ID = "camb_bench"
AWS_CONN_ID = "aws_bench"
BUCKET = "tts-bench"
RSS_TARGET = 64 * MiB
#: Seconds between deleting one run's file and the next run starting to download (every worker
#: waits for that moment after its warm-up). This VM hands freed memory back to its host a few
#: seconds after it is freed (free page reporting), and page cache built on memory the host must
#: fault in again is written several times slower than on recently freed memory. Starting every run
#: at the same moment after the previous free gives every method the same page-cache conditions;
#: otherwise curl, which starts in milliseconds, would reuse the freed pages while Python, importing
#: Airflow for seconds, would not, and the comparison would measure start-up time.
SETTLE_SECONDS = 12.0
THROUGHPUT_TARGET = 0.8
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}


def filesystem_of(path: Path) -> str:
    """``df``'s view of the filesystem holding ``path`` (type and device), to show where files went."""
    out = subprocess.run(["df", "-T", str(path)], capture_output=True, text=True, check=False).stdout.split("\n")
    fields = out[1].split() if len(out) > 1 else []
    return f"{fields[0]} ({fields[1]})" if len(fields) > 1 else "unknown"


def scratch_dir() -> Path:
    """A scratch directory on the repository's disk; refuses a tmpfs (RAM would distort the figures)."""
    path = Path(tempfile.mkdtemp(prefix=".bench-download-", dir=REPO))
    if "tmpfs" in filesystem_of(path):
        shutil.rmtree(path)
        raise SystemExit(f"{REPO} is on a tmpfs; run the benchmark from a checkout on a real disk")
    return path


@contextmanager
def process(
    cmd: list[str], env: dict[str, str], name: str, log: Path
) -> Iterator[tuple[subprocess.Popen[str], dict[str, Any]]]:
    """Start a server process that prints one JSON line when ready; stop it (and only it) afterwards.

    Its stderr (moto logs every request there) goes to ``log``; the tail is shown if the run fails.
    """
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True, env=env, cwd=REPO)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"{name} did not start (exit code {proc.wait()})")
        yield proc, json.loads(line)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def http_json(method: str, url: str, body: dict[str, Any] | None = None) -> Any:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method)
    req.add_header("x-api-key", API_KEY)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())


#: When the previous run's file or object was deleted (see SETTLE_SECONDS).
_freed_at = [0.0]


def freed() -> None:
    _freed_at[0] = time.time()


def run_worker(method: str, env: dict[str, str], **options: str) -> dict[str, Any]:
    start_at = max(_freed_at[0] + SETTLE_SECONDS, time.time())
    cmd = [sys.executable, str(REPO / "benchmarks" / "download_worker.py"), method, "--start-at", str(start_at)]
    for name, value in options.items():
        cmd += [f"--{name.replace('_', '-')}", value]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO, check=False)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            result: dict[str, Any] = json.loads(line[len("RESULT ") :])
            result["load"] = os.getloadavg()[0]
            where = options["dest"].split("://")[0]
            print(
                f"  {method:>12} {where:>4} {result['bytes'] / MiB:6,.0f} MiB: "
                f"{result['bytes'] / MiB / result['seconds']:7,.0f} MiB/s, CPU "
                f"{result['cpu'] / (result['bytes'] / 1024**3):5.2f} s/GiB, load {result['load']:.1f}",
                flush=True,
            )
            return result
    raise RuntimeError(f"{method} failed (exit {done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")


def mib(n: float) -> str:
    return f"{n / MiB:,.0f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="8 and 32 MiB, one run each; BENCHMARKS.md untouched")
    parser.add_argument("--repeat", type=int, default=None, help="runs per file:// method (default 7; quick 1)")
    parser.add_argument("--sizes", help="comma-separated sizes in MiB instead of the defaults (no BENCHMARKS.md)")
    args = parser.parse_args()
    sizes = [8 * MiB, 32 * MiB] if args.quick else [512 * MiB, 2048 * MiB]
    if args.sizes:
        sizes = [int(part) * MiB for part in args.sizes.split(",")]
    repeat = args.repeat or (1 if args.quick else 7)

    scratch = scratch_dir()
    logs = {"emulator": scratch / "emulator.log", "moto": scratch / "moto.log"}
    env = dict(os.environ, **AWS_ENV, PYTHONPATH=str(REPO))
    env.setdefault("AIRFLOW_HOME", str(scratch / "airflow-home"))
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    rows: list[list[object]] = []
    checks: list[str] = []
    try:
        emulator_cmd = [sys.executable, "-m", "airflow_provider_tts.emulator", "--port", "0", "--delay", "0"]
        emulator_cmd += ["--audio-engine", "tones", "--print-json"]
        moto_env = dict(env, TMPDIR=str(scratch))  # what moto spools to disk stays on this disk too
        moto_cmd = [sys.executable, str(REPO / "benchmarks" / "download_moto.py")]
        with (
            process(emulator_cmd, env, "the emulator", logs["emulator"]) as (_, emu),
            process(moto_cmd, moto_env, "the moto server", logs["moto"]) as (_, moto),
        ):
            import boto3

            s3 = boto3.client(
                "s3",
                endpoint_url=moto["endpoint"],
                region_name="us-east-1",
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
            )
            s3.create_bucket(Bucket=BUCKET)
            env[f"AIRFLOW_CONN_{TTS_CONN_ID.upper()}"] = json.dumps(
                {"conn_type": "camb_ai", "host": emu["camb_base_url"], "password": API_KEY}
            )
            env[f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}"] = json.dumps(
                {
                    "conn_type": "aws",
                    "login": "testing",
                    "password": "testing",
                    "extra": {
                        "endpoint_url": moto["endpoint"],
                        "region_name": "us-east-1",
                        # moto completes and copies multi-GiB uploads in Python: minutes, not seconds;
                        # botocore's default 60 s read timeout would retry (and break) them.
                        "config_kwargs": {"read_timeout": 1200, "retries": {"max_attempts": 1}},
                    },
                }
            )
            freed()  # the first run waits like the others
            for size in sizes:
                task = http_json(
                    "POST",
                    f"{emu['control_url']}/tasks",
                    {"api": "camb_ai", "kind": "text-to-sound", "delay": 0, "audio_bytes": size},
                )
                run_id = http_json("GET", f"{emu['camb_base_url']}/text-to-sound/{task['task_id']}")["run_id"]
                url = f"{emu['camb_base_url']}/text-to-sound-result/{run_id}?output_type=raw_bytes"
                rows += bench_size(size, task["task_id"], url, env, scratch, s3, repeat, checks)
                print(table(HEADERS, rows[-4:]), flush=True)
            s3.delete_bucket(Bucket=BUCKET)
    except BaseException:
        for name, log in logs.items():
            if log.exists():
                print(f"--- last lines of the {name}'s log ---\n" + "\n".join(log.read_text().splitlines()[-15:]))
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    body = describe(rows, checks, repeat, filesystem_of(REPO))
    print(body)
    if not (args.quick or args.sizes):
        write_section("download", TITLE, ".venv/bin/python benchmarks/download.py", body)
        print("Section 'download' written to BENCHMARKS.md")


HEADERS = ["file", "destination", "method", "MiB/s", "vs curl", "peak RSS MiB", "RSS increase MiB", "CPU s/GiB", "note"]
TITLE = "Audio download to storage: throughput and memory (TtsAudioToStorageOperator)"


def bench_size(
    size: int, task_id: str, url: str, env: dict[str, str], scratch: Path, s3: Any, repeat: int, checks: list[str]
) -> list[list[object]]:
    label = f"{size // MiB:,} MiB" if size < 1024**3 else f"{size / 1024**3:g} GiB"
    out_dir = scratch / "out"
    out_dir.mkdir(exist_ok=True)
    runs: dict[str, list[dict[str, Any]]] = {"operator": [], "curl": []}
    for i in range(repeat):  # interleaved, so both see the same machine state
        target = out_dir / f"op-{i}.wav"
        result = run_worker("operator", env, dest=f"file://{target}", tts_conn_id=TTS_CONN_ID, tts_task_id=task_id)
        assert result["bytes"] == size == target.stat().st_size, result
        target.unlink()
        freed()
        runs["operator"].append(result)
        target = out_dir / f"curl-{i}.wav"
        result = run_worker("curl", env, dest=f"file://{target}", url=url)
        assert result["bytes"] == size, result
        target.unlink()
        freed()
        runs["curl"].append(result)
    assert not list(out_dir.iterdir()), "a temporary was left behind"

    key = f"audio/op-{size}.wav"
    op_s3 = run_worker(
        "operator",
        env,
        dest=f"s3://{BUCKET}/{key}",
        dest_conn_id=AWS_CONN_ID,
        tts_conn_id=TTS_CONN_ID,
        tts_task_id=task_id,
    )
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    assert [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]] == [key], "temporary left in the bucket"
    s3.delete_object(Bucket=BUCKET, Key=key)
    freed()
    same_sha = {r["sha256"] for r in runs["operator"]} == {op_s3["sha256"]}
    checks.append(f"{label}: sha256 identical in every file:// and s3:// operator run: {same_sha}")

    key = f"audio/mem-{size}.wav"
    mem_s3 = run_worker("in_memory_s3", env, dest=f"s3://{BUCKET}/{key}", dest_conn_id=AWS_CONN_ID, url=url)
    assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
    s3.delete_object(Bucket=BUCKET, Key=key)
    freed()
    every = [("file:// operator", r) for r in runs["operator"]] + [("curl", r) for r in runs["curl"]]
    every += [("s3:// operator", op_s3), ("in memory", mem_s3)]
    late = [f"{name} {r['late']:.1f} s" for name, r in every if r["late"] > 0.5]
    if late:
        checks.append(f"{label}: started late (warm-up longer than the pause): {', '.join(late)}")

    def rate(r: dict[str, Any]) -> float:
        return float(r["bytes"]) / MiB / float(r["seconds"])

    def cpu(rs: list[dict[str, Any]]) -> str:
        return f"{statistics.median(float(r['cpu']) / (float(r['bytes']) / 1024**3) for r in rs):.2f}"

    def spread(rs: list[dict[str, Any]]) -> str:
        rates = sorted(rate(r) for r in rs)
        return f"median of {len(rates)}, range {rates[0]:,.0f} to {rates[-1]:,.0f}" if len(rates) > 1 else ""

    curl_rate = statistics.median(rate(r) for r in runs["curl"])
    op_rate = statistics.median(rate(r) for r in runs["operator"])
    # Each operator run is compared with the curl run right after it (same machine state), and the
    # median of those ratios is reported: steadier than a ratio of medians on a shared machine.
    ratios = [rate(o) / rate(c) for o, c in zip(runs["operator"], runs["curl"], strict=True)]
    ratio = statistics.median(ratios)
    checks.append(
        f"{label}: file:// operator/curl ratio of each pair: {', '.join(f'{r:.2f}' for r in ratios)}; "
        f"1-minute load average during the runs: "
        f"{min(r['load'] for r in runs['operator'] + runs['curl']):.1f} to "
        f"{max(r['load'] for r in runs['operator'] + runs['curl']):.1f}"
    )
    rows: list[list[object]] = []
    op_peak = max(r["peak"] for r in runs["operator"])
    op_increase = max(r["peak"] - r["rss_before"] for r in runs["operator"])
    rows.append([label, "file://", "operator", f"{op_rate:,.0f}", f"{ratio:.2f}x", mib(op_peak),
                 mib(op_increase), cpu(runs["operator"]), spread(runs["operator"])])  # fmt: skip
    curl_peak = max(r["peak"] for r in runs["curl"])
    rows.append([label, "file://", "`curl -o`", f"{curl_rate:,.0f}", "1.00x", mib(curl_peak), "—",
                 cpu(runs["curl"]), f"{spread(runs['curl'])}; curl's own RSS and CPU".lstrip("; ")])  # fmt: skip
    stream_rate = op_s3["bytes"] / MiB / (op_s3["seconds"] - op_s3["move_seconds"])
    move = (
        f"streaming {stream_rate:,.0f} MiB/s, then {op_s3['move_seconds']:.1f} s server-side copy of the "
        "temporary into place"
    )
    rows.append([label, "s3://", "operator", f"{rate(op_s3):,.0f}", "", mib(op_s3["peak"]),
                 mib(op_s3["peak"] - op_s3["rss_before"]), cpu([op_s3]), move])  # fmt: skip
    how = "`requests.get().content` + `S3Hook.load_bytes`"
    rows.append([label, "s3://", "in memory (HttpToS3Operator)", f"{rate(mem_s3):,.0f}", "", mib(mem_s3["peak"]),
                 mib(mem_s3["peak"] - mem_s3["rss_before"]), cpu([mem_s3]), how])  # fmt: skip
    return rows


def describe(rows: list[list[object]], checks: list[str], repeat: int, disk: str) -> str:
    def number(cell: object) -> float:
        return float(str(cell).rstrip("x").replace(",", ""))

    op_rows = [r for r in rows if r[2] == "operator"]
    worst_increase = max(number(r[6]) for r in op_rows)  # RSS increase column
    worst_ratio = min(number(r[4]) for r in op_rows if r[1] == "file://")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    verdict = [
        f"- Peak RSS increase of the operator, worst case: {worst_increase:,.0f} MiB "
        f"(target < {RSS_TARGET // MiB} MiB whatever the size): **{'met' if worst_increase < 64 else 'NOT met'}**.",
        f"- file:// throughput of the operator, worst case: {worst_ratio:.2f}x curl's "
        f"(target ≥ {THROUGHPUT_TARGET}x; median of the paired ratios): "
        f"**{'met' if worst_ratio >= THROUGHPUT_TARGET else 'NOT met'}**.",
    ]
    return (
        table(HEADERS, rows) + "\n" + "\n".join(verdict) + "\n\n" + "\n".join(f"- {c}" for c in checks) + "\n\n"
        f"How it was measured: the emulator (`python -m airflow_provider_tts.emulator`) and a moto S3 server "
        f"(`benchmarks/download_moto.py`) each run in their own process on loopback; the emulator streams a "
        f"WAV of exactly the given size (Camb.ai `text-to-sound-result`, with the API key). Every download "
        f"runs in a fresh process (`benchmarks/download_worker.py`). *Operator* is "
        f"`TtsAudioToStorageOperator.execute` with `deferrable=False`: one status poll, the streamed download "
        f"(256 KiB chunks, sha256 and size on the way through, a writer thread at most 1 MiB behind, 16 KiB "
        f"writes on file://) into a temporary beside the destination, then "
        f"the move into place (a rename on file://; on s3:// an 8 MiB-part multipart upload, then a "
        f"server-side copy and delete, included in the time). *RSS increase* is `ru_maxrss` at the end minus "
        f"the resident size just before the download, after imports and after the connections and storage "
        f"client were set up; *peak RSS* is the whole process's. curl's peak is its own (`RUSAGE_CHILDREN` "
        f"of a wrapper). *CPU s/GiB* is the user + system time of the download (all threads), per GiB. "
        f"Every worker, after its warm-up, starts downloading exactly {SETTLE_SECONDS:g} s after the "
        f"previous run's file was deleted, so curl and the operator find the page cache in the same state "
        f"(this VM returns freed memory to its host a few seconds after it is freed, and writing into memory "
        f"the host must fault back in is several times slower; without a common start, curl, which starts "
        f"in milliseconds, would reuse the pages the previous run freed while Python, importing Airflow "
        f"for seconds, would not). file:// rows are the median of "
        f"{repeat} interleaved runs (peaks: the maximum), and *vs curl* is the median of the ratios of each "
        f"operator run to the curl run that followed it. s3:// rows are single runs whose rate is moto's, a "
        f"Python server: it re-reads the whole source object for every 50 MiB part of the server-side copy "
        f"(`UploadPartCopy`), so the copy into place grows with the square of the size there, not on S3. "
        f"Files were written to {disk}, then deleted. The machine is shared (2 CPUs for the emulator, the "
        f"download and the disk writes); load average at the end: {load}.\n"
    )


if __name__ == "__main__":
    main()
