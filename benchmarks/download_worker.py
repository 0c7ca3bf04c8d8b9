"""One download in a fresh process, for ``benchmarks/download.py``: time, peak RSS, baseline RSS.

Methods:

* ``operator`` — ``TtsAudioToStorageOperator(..., deferrable=False).execute(context)``: one status
  poll, then the audio streamed from the emulator into ``--dest`` (``file://`` or ``s3://``) through
  the provider's storage layer (temporary beside the destination, hashed, moved into place).
* ``in_memory_s3`` — what the Amazon provider's ``HttpToS3Operator`` does: ``requests.get(url).content``
  (the whole body in memory), then ``S3Hook.load_bytes``.
* ``curl`` — ``curl -s -o FILE`` as a child process (the practical limit for ``file://``); its
  peak RSS is read from ``RUSAGE_CHILDREN`` of this wrapper, which has no other children.

Everything a method needs is imported *before* the baseline is taken, so the baseline is the
process's resident size just before the download, and ``increase`` is the download's own cost:
``ru_maxrss`` at the end (the process's peak, which is never below the peak during the download)
minus that baseline. After its warm-up a worker waits for ``--start-at``, so every method starts
downloading at the same moment relative to the previous run, whatever its start-up time. ``cpu``
is the user + system time of the download (all threads; curl's own for curl). Prints one
``RESULT {json}`` line.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any


def rss_bytes() -> int:
    """Current resident set size, from /proc (Linux)."""
    import os

    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def peak_bytes(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_maxrss * 1024  # kilobytes on Linux


def cpu_seconds(who: int = resource.RUSAGE_SELF) -> float:
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def minor_faults(who: int = resource.RUSAGE_SELF) -> int:
    return resource.getrusage(who).ru_minflt


START_AT = 0.0


def wait_for_start() -> float:
    """Sleep until ``--start-at`` (after the warm-up); returns how late the start is, in seconds."""
    delay = START_AT - time.time()
    if delay > 0:
        time.sleep(delay)
    return max(0.0, -delay)


def run_operator(args: argparse.Namespace) -> dict[str, Any]:
    from types import SimpleNamespace

    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator

    move_seconds = 0.0
    original_move = ObjectStoragePath.move

    def timed_move(self: Any, *a: Any, **kw: Any) -> Any:  # only measures; the move is the operator's
        nonlocal move_seconds
        began = time.perf_counter()
        try:
            return original_move(self, *a, **kw)
        finally:
            move_seconds += time.perf_counter() - began

    ObjectStoragePath.move = timed_move  # type: ignore[method-assign]
    op = TtsAudioToStorageOperator(
        task_id="download",
        tts_conn_id=args.tts_conn_id,
        tts_task_id=args.tts_task_id,
        kind="text-to-sound",
        destination=args.dest,
        dest_conn_id=args.dest_conn_id,
        deferrable=False,
        overwrite="replace",
        **({"chunk_bytes": args.chunk_bytes} if args.chunk_bytes else {}),
    )
    context = {"ti": SimpleNamespace(dag_id="bench", task_id="download", run_id=args.dest, map_index=-1)}
    # Warm-up, not downloading: resolve both connections and build the storage client (s3fs and
    # its botocore session are tens of MiB of code and caches, the same whatever the file size).
    from airflow_provider_tts.storage import check_writable, destination_path

    check_writable(destination_path(args.dest, args.dest_conn_id))
    op.hook.vendor  # noqa: B018
    # The move records hook lineage, which loads Airflow's plugin manager (and with it much of
    # Airflow) on first use; a real worker has it loaded before any task runs.
    from airflow.sdk.lineage import get_hook_lineage_collector

    get_hook_lineage_collector()
    late = wait_for_start()
    rss0, peak0, cpu0, faults0 = rss_bytes(), peak_bytes(), cpu_seconds(), minor_faults()
    began = time.perf_counter()
    result = op.execute(context)  # type: ignore[arg-type]
    seconds = time.perf_counter() - began
    return {
        "late": late,
        "faults": minor_faults() - faults0,
        "cpu": cpu_seconds() - cpu0,
        "bytes": result["size_bytes"],
        "sha256": result["sha256"],
        "seconds": seconds,
        "move_seconds": move_seconds,
        "rss_before": rss0,
        "peak_before": peak0,
        "peak": peak_bytes(),
    }


def run_in_memory_s3(args: argparse.Namespace) -> dict[str, Any]:
    import requests
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id=args.dest_conn_id)
    hook.get_conn()  # client built before the baseline, like the imports
    bucket, _, key = args.dest.removeprefix("s3://").partition("/")
    late = wait_for_start()
    rss0, peak0, cpu0 = rss_bytes(), peak_bytes(), cpu_seconds()
    began = time.perf_counter()
    response = requests.get(args.url, headers={"x-api-key": args.key}, timeout=(10, 300))
    response.raise_for_status()
    data = response.content
    hook.load_bytes(data, key=key, bucket_name=bucket, replace=True)
    seconds = time.perf_counter() - began
    size = len(data)
    del data, response
    return {
        "bytes": size,
        "seconds": seconds,
        "late": late,
        "cpu": cpu_seconds() - cpu0,
        "rss_before": rss0,
        "peak_before": peak0,
        "peak": peak_bytes(),
    }


def run_curl(args: argparse.Namespace) -> dict[str, Any]:
    path = Path(args.dest.removeprefix("file://"))
    cmd = ["curl", "-s", "-f", "-o", str(path), "-H", f"x-api-key: {args.key}", args.url]
    late = wait_for_start()
    began = time.perf_counter()
    subprocess.run(cmd, check=True)
    seconds = time.perf_counter() - began
    return {
        "bytes": path.stat().st_size,
        "seconds": seconds,
        "late": late,
        "cpu": cpu_seconds(resource.RUSAGE_CHILDREN),
        "faults": minor_faults(resource.RUSAGE_CHILDREN),
        "peak": peak_bytes(resource.RUSAGE_CHILDREN),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=("operator", "in_memory_s3", "curl"))
    parser.add_argument("--dest", required=True)
    parser.add_argument("--dest-conn-id")
    parser.add_argument("--tts-conn-id", default="camb_bench")
    parser.add_argument("--tts-task-id")
    parser.add_argument("--url")
    parser.add_argument("--key", default="tts-emulator-key")
    parser.add_argument("--chunk-bytes", type=int, default=None, help="the operator's chunk_bytes (default its own)")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start downloading at")
    args = parser.parse_args()
    global START_AT
    START_AT = args.start_at
    runner = {"operator": run_operator, "in_memory_s3": run_in_memory_s3, "curl": run_curl}[args.method]
    result = runner(args)
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
