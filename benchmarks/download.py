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
#: s3:// target of the operator against the in-memory copy (``HttpToS3Operator``'s way), large files.
S3_TARGET = 1.0
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


def s3_requests(endpoint: str, reset: bool = False) -> dict[str, int]:
    """The moto server's request counts by S3 operation (``benchmarks/download_moto.py``); optionally zeroed."""
    req = urllib.request.Request(
        f"{endpoint}/_bench/{'reset' if reset else 'requests'}", method="POST" if reset else "GET"
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        counts: dict[str, int] = json.loads(resp.read())
    return counts


def describe_requests(counts: dict[str, int], files: int = 1) -> str:
    """``PutObject 1, HeadObject 1, ...`` per file; writes first."""
    from benchmarks.download_moto import WRITES

    order = sorted(counts, key=lambda op: (op not in WRITES, op))
    return ", ".join(f"{op} {counts[op] / files:g}" for op in order)


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
    parser.add_argument(
        "--small", type=int, default=None, help="files in the many-small-files rows (default 1000; 0: none)"
    )
    parser.add_argument("--no-large", action="store_true", help="only the many-small-files rows (no BENCHMARKS.md)")
    parser.add_argument("--rounds", type=int, default=10, help="paired rounds of the many-small-files rows")
    parser.add_argument("--parallel", default="1,8", help="workers per method in the many-small-files rows")
    parser.add_argument(
        "--profile", default="", help="cProfile file of one operator worker's last round (1 in parallel)"
    )
    parser.add_argument("--profile-method", default="operator", help="the method --profile profiles")
    args = parser.parse_args()
    sizes = [8 * MiB, 32 * MiB] if args.quick else [512 * MiB, 2048 * MiB]
    if args.sizes:
        sizes = [int(part) * MiB for part in args.sizes.split(",")]
    repeat = args.repeat or (1 if args.quick else 7)
    small = args.small if args.small is not None else (40 if args.quick else 1000)
    if args.no_large:
        sizes = []

    scratch = scratch_dir()
    logs = {"emulator": scratch / "emulator.log", "moto": scratch / "moto.log"}
    env = dict(os.environ, **AWS_ENV, PYTHONPATH=str(REPO))
    env.setdefault("AIRFLOW_HOME", str(scratch / "airflow-home"))
    env["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    rows: list[list[object]] = []
    small_rows: list[list[object]] = []
    small_notes: list[str] = []
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
                rows += bench_size(size, task["task_id"], url, env, scratch, s3, repeat, checks, moto["endpoint"])
                print(table(HEADERS, rows[-5:]), flush=True)
            if small:
                parallels = tuple(int(p) for p in args.parallel.split(","))
                small_rows, small_notes = bench_small(
                    small, args.rounds, emu, env, scratch, s3, moto["endpoint"], args.profile, parallels,
                    args.profile_method,
                )  # fmt: skip
                print(table(SMALL_HEADERS, small_rows), flush=True)
            s3.delete_bucket(Bucket=BUCKET)
    except BaseException:
        for name, log in logs.items():
            if log.exists():
                print(f"--- last lines of the {name}'s log ---\n" + "\n".join(log.read_text().splitlines()[-15:]))
        raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)

    body = describe(rows, checks, repeat, filesystem_of(REPO))
    if small_rows:
        body += "\n" + describe_small(small_rows, small_notes)
    print(body)
    if not (args.quick or args.sizes or args.no_large):
        cmd = ".venv/bin/python benchmarks/download.py"
        if args.repeat is not None:
            cmd += f" --repeat {args.repeat}"
        if args.small is not None:
            cmd += f" --small {args.small}"
        if args.rounds != 10:
            cmd += f" --rounds {args.rounds}"
        write_section("download", TITLE, cmd, body)
        print("Section 'download' written to BENCHMARKS.md")


HEADERS = [
    "file",
    "destination",
    "method",
    "MiB/s",
    "vs curl (file://), vs in memory (s3://)",
    "peak RSS MiB",
    "RSS increase MiB",
    "CPU s/GiB",
    "note",
]
TITLE = "Audio download to storage: throughput and memory (TtsAudioToStorageOperator)"


def bench_size(
    size: int,
    task_id: str,
    url: str,
    env: dict[str, str],
    scratch: Path,
    s3: Any,
    repeat: int,
    checks: list[str],
    moto: str,
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

    s3_runs: dict[str, list[dict[str, Any]]] = {"operator": [], "in_memory_s3": [], "upload_fileobj_s3": []}
    s3_counts: dict[str, dict[str, int]] = {}
    for i in range(repeat):  # the three one after another, each repeat: a ratio pairs runs a minute apart
        for method in s3_runs:
            key = f"audio/{method}-{size}-{i}.wav"
            dest = {"dest": f"s3://{BUCKET}/{key}", "dest_conn_id": AWS_CONN_ID, "reset_url": f"{moto}/_bench/reset"}
            given = {"tts_conn_id": TTS_CONN_ID, "tts_task_id": task_id} if method == "operator" else {"url": url}
            s3_requests(moto, reset=True)
            result = run_worker(method, env, **dest, **given)
            s3_counts.setdefault(method, s3_requests(moto))
            assert s3.head_object(Bucket=BUCKET, Key=key)["ContentLength"] == size
            listed = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]]
            assert listed == [key], f"temporary left in the bucket: {listed}"
            s3.delete_object(Bucket=BUCKET, Key=key)
            freed()
            s3_runs[method].append(result)
    same_sha = {r["sha256"] for r in runs["operator"] + s3_runs["operator"]} == {runs["operator"][0]["sha256"]}
    checks.append(f"{label}: sha256 identical in every file:// and s3:// operator run: {same_sha}")

    every = [("file:// operator", r) for r in runs["operator"]] + [("curl", r) for r in runs["curl"]]
    every += [(f"s3:// {method}", r) for method, rs in s3_runs.items() for r in rs]
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
    # Each s3:// operator run against the in-memory run right after it, as file:// against curl.
    s3_ratios = [rate(o) / rate(m) for o, m in zip(s3_runs["operator"], s3_runs["in_memory_s3"], strict=True)]
    s3_ratio = statistics.median(s3_ratios)
    checks.append(
        f"{label}: s3:// operator/in-memory ratio of each pair: {', '.join(f'{r:.2f}' for r in s3_ratios)}; "
        f"median {s3_ratio:.2f}x"
    )
    for method, rs in s3_runs.items():
        how = "`requests.get().content` + `S3Hook.load_bytes`; " if method == "in_memory_s3" else ""
        note = f"{spread(rs)}; {how}S3 requests: {describe_requests(s3_counts[method])}".lstrip("; ")
        rows.append([label, "s3://", SMALL_METHODS[method], f"{statistics.median(rate(r) for r in rs):,.0f}",
                     f"{s3_ratio:.2f}x" if method == "operator" else "",
                     mib(max(r["peak"] for r in rs)), mib(max(r["peak"] - r["rss_before"] for r in rs)), cpu(rs),
                     note])  # fmt: skip
    return rows


SMALL_HEADERS = [
    "files",
    "in parallel",
    "method",
    "files/s (median round)",
    "vs in memory",
    "vs upload_fileobj",
    "CPU ms per file",
    "S3 requests per file",
    "writes per file",
]
SMALL_METHODS = {
    "operator": "operator",
    "operator_replace": 'operator, `overwrite="replace"`',
    "operator_handed": "operator, handed the sensor's status (`sensor.output`)",
    "in_memory_s3": "in memory (HttpToS3Operator)",
    "upload_fileobj_s3": "boto3 `upload_fileobj` from the stream",
    "in_memory_s3_polled": "in memory, after the status GET that gives its URL",
    "upload_fileobj_s3_polled": "boto3 `upload_fileobj`, after the status GET that gives its URL",
}
#: Anchor pairs: handed the audio URL, and the same after the status request a hand-written pipeline
#: sends to learn it (the operator sends one per file: it is given a task id, not a URL).
POLLED_ANCHORS = {"in_memory_s3": "in_memory_s3_polled", "upload_fileobj_s3": "upload_fileobj_s3_polled"}
#: Seconds between sending a method's workers their lists and their common start (the lists are
#: read and parsed before it, so the start is the same for every worker).
SMALL_START_SECONDS = 0.5


class _Workers:
    """Warm ``download_worker.py serve`` processes, ``parallel`` per method; stopped (closed stdin) at the end."""

    def __init__(self, methods: list[str], parallel: int, first_dest: dict[str, str], env: dict[str, str]) -> None:
        self.procs: dict[str, list[subprocess.Popen[str]]] = {}
        for method in methods:
            cmd = [sys.executable, str(REPO / "benchmarks" / "download_worker.py"), "serve", "--inner", method]
            cmd += ["--dest", first_dest[method], "--dest-conn-id", AWS_CONN_ID, "--tts-conn-id", TTS_CONN_ID]
            self.procs[method] = [
                subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, env=env, cwd=REPO)
                for _ in range(parallel)
            ]
        for procs in self.procs.values():
            for proc in procs:
                self._line(proc, "READY")

    def run(self, method: str, lists: list[Path], profile: str = "") -> tuple[float, list[dict[str, Any]]]:
        """Every worker of ``method`` stores its list from one common start; returns the start and results."""
        start_at = time.time() + SMALL_START_SECONDS
        procs = self.procs[method]
        for i, (proc, path) in enumerate(zip(procs, lists, strict=True)):
            assert proc.stdin is not None
            order = {"list": str(path), "start_at": start_at, "profile": profile if i == 0 else ""}
            proc.stdin.write(json.dumps(order) + "\n")
            proc.stdin.flush()
        results = [json.loads(self._line(proc, "RESULT ")[len("RESULT ") :]) for proc in procs]
        return start_at, results

    @staticmethod
    def _line(proc: subprocess.Popen[str], prefix: str) -> str:
        """The worker's next stdout line starting with ``prefix`` (logging may print others before it)."""
        assert proc.stdout is not None
        while line := proc.stdout.readline():
            if line.startswith(prefix):
                return line
        raise RuntimeError(f"worker {proc.args[3:5]} ended (exit {proc.poll()}) before {prefix.strip()}")

    def close(self) -> None:
        for procs in self.procs.values():
            for proc in procs:
                if proc.stdin is not None:
                    proc.stdin.close()
        for procs in self.procs.values():
            for proc in procs:
                try:
                    proc.wait(timeout=60)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def small_tasks(n: int, emu: dict[str, Any], seed: int = 13) -> list[tuple[str, str, int]]:
    """``n`` finished emulator tasks of 150 KB-1 MB WAVs (sizes drawn with a fixed seed): task id, URL, size."""
    import random

    rng = random.Random(seed)
    tasks = []
    for _ in range(n):
        size = rng.randint(150_000, 1_000_000)
        task = http_json(
            "POST",
            f"{emu['control_url']}/tasks",
            {"api": "camb_ai", "kind": "text-to-sound", "delay": 0, "audio_bytes": size},
        )
        run_id = http_json("GET", f"{emu['camb_base_url']}/text-to-sound/{task['task_id']}")["run_id"]
        url = f"{emu['camb_base_url']}/text-to-sound-result/{run_id}?output_type=raw_bytes"
        tasks.append((task["task_id"], url, size))
    return tasks


def remove_prefix(s3: Any, prefix: str) -> int:
    """Delete every object under ``prefix``; how many there were."""
    keys: list[str] = []
    token: dict[str, str] = {}
    while True:
        stored = s3.list_objects_v2(Bucket=BUCKET, Prefix=prefix, MaxKeys=1000, **token)
        keys += [o["Key"] for o in stored.get("Contents", [])]
        if not stored.get("IsTruncated"):
            break
        token = {"ContinuationToken": stored["NextContinuationToken"]}
    for start in range(0, len(keys), 1000):
        s3.delete_objects(Bucket=BUCKET, Delete={"Objects": [{"Key": k} for k in keys[start : start + 1000]]})
    return len(keys)


def bench_small(
    n: int, rounds: int, emu: dict[str, Any], env: dict[str, str], scratch: Path, s3: Any, moto: str,
    profile: str = "", parallels: tuple[int, ...] = (1, 8), profile_method: str = "operator",
) -> tuple[list[list[object]], list[str]]:  # fmt: skip
    """``n`` files per method to s3:// in ``rounds`` paired rounds, by 1 and 8 workers per method.

    A busy shared machine changes speed from one minute to the next (the load average here moves
    between 1 and 10 within a run), so the methods are not run one after another: each round gives
    every method the next ``n / rounds`` files, methods back to back (their order rotated every
    round), and a method's rate is compared with the anchors' rates *of the same round*. The figure
    reported is the median of those per-round ratios, beside the CPU time per file of the workers
    themselves (user + system, all threads), which the load disturbs much less than a rate.
    """
    from benchmarks.download_moto import WRITES

    warm = 8  # files per method stored before the first round, not counted: first-use imports and caches
    tasks = small_tasks(n + warm, emu)
    warm_share, tasks = tasks[:warm], tasks[warm:]
    methods = list(SMALL_METHODS)
    per_round = max(1, n // rounds)
    rows: list[list[object]] = []
    notes: list[str] = []
    for parallel in parallels:
        first = {m: f"s3://{BUCKET}/small-{m}-{parallel}/" for m in methods}
        workers = _Workers(methods, parallel, first, env)
        rates: dict[str, list[float]] = {m: [] for m in methods}
        cpus: dict[str, list[float]] = {m: [] for m in methods}
        counts: dict[str, dict[str, int]] = {m: {} for m in methods}
        loads: list[float] = []
        try:
            for r in range(-1, rounds):  # round -1: the warm-up
                share = warm_share if r < 0 else tasks[r * per_round : (r + 1) * per_round]
                order = methods[r % len(methods) :] + methods[: r % len(methods)]
                for method in order:
                    entries = [
                        {"task_id": t, "url": u,
                         "dest": first[method] + ("" if method.startswith("operator") else f"{t}.wav")}
                        for t, u, _ in share
                    ]  # fmt: skip
                    lists = []
                    for i in range(parallel):
                        path = scratch / f"list-{method}-{parallel}-{i}.json"
                        path.write_text(json.dumps(entries[i::parallel]))
                        lists.append(path)
                    s3_requests(moto, reset=True)
                    last = parallel == 1 and r == rounds - 1
                    want = profile if (profile and method == profile_method and last) else ""
                    start_at, results = workers.run(method, lists, want)
                    if r < 0:
                        continue
                    for op, c in s3_requests(moto).items():
                        counts[method][op] = counts[method].get(op, 0) + c
                    elapsed = max(x["ended_at"] for x in results) - start_at
                    rates[method].append(len(share) / elapsed)
                    cpus[method].append(sum(x["cpu"] for x in results) / len(share))
                    loads.append(os.getloadavg()[0])
                if r < 0:
                    continue
                print(
                    f"  round {r + 1}/{rounds} x{parallel}: "
                    + ", ".join(f"{m} {rates[m][-1]:.1f}/s {1000 * cpus[m][-1]:.0f} ms" for m in methods)
                    + f", load {loads[-1]:.1f}",
                    flush=True,
                )
        finally:
            workers.close()
        done = per_round * rounds
        for method in methods:
            stored = remove_prefix(s3, first[method].removeprefix(f"s3://{BUCKET}/"))
            assert stored == done + warm, f"{method}: {stored} objects stored, expected {done + warm}"
        for method, label in SMALL_METHODS.items():
            vs_mem = [a / b for a, b in zip(rates[method], rates["in_memory_s3"], strict=True)]
            vs_fileobj = [a / b for a, b in zip(rates[method], rates["upload_fileobj_s3"], strict=True)]
            writes = sum(v for k, v in counts[method].items() if k in WRITES)
            rows.append([f"{done:,}", parallel, label, f"{statistics.median(rates[method]):,.1f}",
                         f"{statistics.median(vs_mem):.2f}x", f"{statistics.median(vs_fileobj):.2f}x",
                         f"{1000 * statistics.median(cpus[method]):.1f}",
                         describe_requests(counts[method], done), f"{writes / done:g}"])  # fmt: skip
        like_for_like = "; ".join(
            f"operator vs {SMALL_METHODS[polled]}: "
            + f"{statistics.median(a / b for a, b in zip(rates['operator'], rates[polled], strict=True)):.2f}x"
            for polled in POLLED_ANCHORS.values()
        )
        notes.append(
            f"{parallel} in parallel: {rounds} rounds of {per_round} files per method; 1-minute load average "
            f"{min(loads):.1f} to {max(loads):.1f}; operator/in-memory ratio per round: "
            + ", ".join(f"{a / b:.2f}" for a, b in zip(rates["operator"], rates["in_memory_s3"], strict=True))
            + f"; like for like (median of per-round ratios): {like_for_like}"
        )
    return rows, notes


def describe_small(rows: list[list[object]], notes: list[str]) -> str:
    return (
        table(SMALL_HEADERS, rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n\n"
        "Many small files: WAV files of 150 KB to 1 MB (sizes drawn with a fixed seed), stored to s3:// "
        "on the loopback moto server by 1 or 8 warm worker processes per method (`download_worker.py "
        "serve`), each storing its share one after another. *operator* is "
        "`TtsAudioToStorageOperator.execute` per file, called as Airflow's task runner calls it (a new "
        "operator each, folder destination, default `skip_if_identical`, first try): its status poll, "
        "download and write (one PutObject sent only if"
        ' nothing is at the key; a HEAD only when something is); *operator, `overwrite="replace"`* the '
        "same, unconditional; *operator, handed the sensor's status* the same, given as `tts_task_id` the "
        "succeeded status a `TtsTaskSensor` returns (the run id its last poll read) instead of the id, so it "
        "sends no status request: like for like with the URL-handed anchors; the first two anchors are "
        "handed the audio URLs and download them; the two "
        "*after the status GET* anchors are given the task id, as the operator is, and first ask the "
        "vendor's status endpoint for the run id that makes the URL (one `requests` GET and `.json()`, "
        "what a hand-written sensor's last poke or a PythonOperator does), then do the same. Paired "
        "rounds: each round every method stores the next share of files, methods back to back in a "
        "rotating order; *files/s* is the median over rounds (common start to the last worker's end), *vs"
        " in memory* and *vs upload_fileobj* the medians of the per-round ratios (both methods measured "
        "within the same minute), *CPU ms per file* the median over rounds of the workers' own user + "
        "system time divided by the files (the servers' CPU excluded: the same files for every method). "
        "S3 requests are counted by the moto server (`benchmarks/download_moto.py`) per operation and "
        "divided by the number of files."
        "\n"
    )


def describe(rows: list[list[object]], checks: list[str], repeat: int, disk: str) -> str:
    def number(cell: object) -> float:
        return float(str(cell).rstrip("x").replace(",", ""))

    op_rows = [r for r in rows if r[2] == "operator"]
    if not op_rows:
        return ""
    worst_increase = max(number(r[6]) for r in op_rows)  # RSS increase column
    worst_ratio = min(number(r[4]) for r in op_rows if r[1] == "file://")
    worst_s3 = min(number(r[4]) for r in op_rows if r[1] == "s3://")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    verdict = [
        f"- Peak RSS increase of the operator, worst case: {worst_increase:,.0f} MiB "
        f"(target < {RSS_TARGET // MiB} MiB whatever the size): **{'met' if worst_increase < 64 else 'NOT met'}**.",
        f"- file:// throughput of the operator, worst case: {worst_ratio:.2f}x curl's "
        f"(target ≥ {THROUGHPUT_TARGET}x; median of the paired ratios): "
        f"**{'met' if worst_ratio >= THROUGHPUT_TARGET else 'NOT met'}**.",
        f"- s3:// throughput of the operator, worst case: {worst_s3:.2f}x the in-memory copy's "
        f"(target ≥ {S3_TARGET}x; median of the paired ratios): **{'met' if worst_s3 >= S3_TARGET else 'NOT met'}**.",
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
        f"the move into place (a rename on file://); on s3:// the destination key is written directly (an "
        f"8 MiB-part multipart upload, up to 3 parts in flight through the connection's boto3 client, completed "
        f'at the end; no temporary, no copy; `overwrite="replace"`, so no HEAD). *boto3 upload_fileobj* '
        f"streams the HTTP response into boto3's managed upload (8 MiB parts, 10 threads). "
        f"*RSS increase* is `ru_maxrss` at the end minus "
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
        f"operator run to the curl run that followed it. s3:// rows are the median of {repeat} runs of each "
        f"method against moto, a Python server whose own speed bounds them (operator, in memory, "
        f"`upload_fileobj`, then again), and *vs in memory* the median of the ratios of each operator run to "
        f"the in-memory run that followed it: single runs moved this ratio by 10-15 % from one run to the "
        f"next; the S3 requests each method made (its first run) are counted by that server. "
        f"Files were written to {disk}, then deleted. The machine is shared (2 CPUs for the emulator, the "
        f"download and the disk writes); load average at the end: {load}.\n"
    )


if __name__ == "__main__":
    main()
