"""One download in a fresh process, for ``benchmarks/download.py``: time, peak RSS, baseline RSS.

Methods:

* ``operator`` — ``TtsAudioToStorageOperator(..., deferrable=False).execute(context)``: one status
  poll, then the audio streamed from the emulator into ``--dest`` (``file://`` or ``s3://``) through
  the provider's storage layer (temporary beside the destination, hashed, moved into place).
* ``in_memory_s3`` — what the Amazon provider's ``HttpToS3Operator`` does: ``requests.get(url).content``
  (the whole body in memory), then ``S3Hook.load_bytes``.
* ``upload_fileobj_s3`` — ``aws s3 cp``-style streaming: boto3 ``upload_fileobj`` reading straight
  from the HTTP response (``requests`` with ``stream=True``), its default transfer settings.
* ``serve`` — a warm worker for the many-small-files rows: ``--inner`` (``operator``,
  ``operator_replace`` — the operator with ``overwrite="replace"`` —, ``in_memory_s3`` or
  ``upload_fileobj_s3``, or either with ``_polled``: the URL learnt from the task's status first) once
  per entry of each list it is sent on stdin (a JSON file of
  ``{"task_id", "url", "dest"}``), one after another; ``benchmarks/download.py`` keeps 1 or 8 of these
  per method and sends each method's workers a list at the same moment, method after method, round
  after round.
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


RESET_URL = ""


def wait_for_start() -> float:
    """Sleep until ``--start-at`` (after the warm-up); returns how late the start is, in seconds.

    With ``--reset-url`` the S3 server's request counter is zeroed first, so the warm-up's own
    requests (building the storage client, checking the bucket) are not counted against the method.
    """
    if RESET_URL:
        import urllib.request

        with urllib.request.urlopen(urllib.request.Request(RESET_URL, method="POST"), timeout=30):
            pass
    delay = START_AT - time.time()
    if delay > 0:
        time.sleep(delay)
    return max(0.0, -delay)


def execute_as_task_runner(op: Any, context: Any) -> Any:
    """``op.execute(context)`` the way Airflow's task runner calls it: with the operator set as the one running.

    Called any other way, ``BaseOperator.execute``'s guard logs a warning ("cannot be called outside
    of the Task Runner") through structlog on every call: a cost no deployed task pays, which the
    anchors do not pay either.
    """
    from airflow.sdk.bases.operator import ExecutorSafeguard

    token = ExecutorSafeguard.tracker.set(op)
    try:
        return op.execute(context)
    finally:
        ExecutorSafeguard.tracker.reset(token)


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
    ti = SimpleNamespace(dag_id="bench", task_id="download", run_id=args.dest, map_index=-1, try_number=1)
    context = {"ti": ti}
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
    result = execute_as_task_runner(op, context)
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
    late = wait_for_start()
    rss0, peak0, cpu0 = rss_bytes(), peak_bytes(), cpu_seconds()
    began = time.perf_counter()
    size = in_memory_s3_one(hook, requests, args.url, args.dest, args.key)
    seconds = time.perf_counter() - began
    return {
        "bytes": size,
        "seconds": seconds,
        "late": late,
        "cpu": cpu_seconds() - cpu0,
        "rss_before": rss0,
        "peak_before": peak0,
        "peak": peak_bytes(),
    }


def in_memory_s3_one(hook: Any, requests: Any, url: str, dest: str, key: str) -> int:
    """What HttpToS3Operator does: the whole body in memory, then ``S3Hook.load_bytes``."""
    bucket, _, name = dest.removeprefix("s3://").partition("/")
    response = requests.get(url, headers={"x-api-key": key}, timeout=(10, 300))
    response.raise_for_status()
    data = response.content
    hook.load_bytes(data, key=name, bucket_name=bucket, replace=True)
    return len(data)


def polled_url(http: Any, entry: dict[str, str], key: str) -> str:
    """The audio URL the way a hand-written pipeline learns it: the task's status, then its run id.

    ``http`` is ``requests`` (a new connection per call, as ``requests.get``) or a session. The
    result URL's form is Camb.ai's text-to-sound result (``entry["url"]`` is one, for the base).
    """
    base = entry["url"].split("/text-to-sound-result/")[0]
    response = http.get(f"{base}/text-to-sound/{entry['task_id']}", headers={"x-api-key": key}, timeout=(10, 60))
    response.raise_for_status()
    status = response.json()
    if status.get("status") != "SUCCESS":
        raise RuntimeError(f"task {entry['task_id']} is {status.get('status')!r}, not finished")
    return f"{base}/text-to-sound-result/{status['run_id']}?output_type=raw_bytes"


def sensed(entry: dict[str, str]) -> dict[str, Any]:
    """The succeeded status a ``TtsTaskSensor`` returns for ``entry``'s task (its XCom), run id and all.

    Read from the result URL the anchors are handed (Camb.ai's text-to-sound result names its run
    id), so the operator is handed what they are, without a status request in this process.
    """
    run_id = int(entry["url"].split("/text-to-sound-result/")[1].split("?")[0])
    return {"api": "camb_ai", "kind": "text-to-sound", "tts_task_id": entry["task_id"], "state": "succeeded",
            "vendor_status": "SUCCESS", "run_id": run_id}  # fmt: skip


def upload_fileobj_one(client: Any, session: Any, url: str, dest: str, key: str) -> int:
    """``aws s3 cp``-style: boto3's managed upload reading from the HTTP stream as it arrives."""
    bucket, _, name = dest.removeprefix("s3://").partition("/")
    with session.get(url, headers={"x-api-key": key}, timeout=(10, 300), stream=True) as response:
        response.raise_for_status()
        response.raw.decode_content = False
        client.upload_fileobj(response.raw, bucket, name)
        return int(response.headers["content-length"])


def _s3_client(conn_id: str) -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=conn_id).get_conn()


def run_upload_fileobj_s3(args: argparse.Namespace) -> dict[str, Any]:
    import requests

    client = _s3_client(args.dest_conn_id)
    session = requests.Session()
    late = wait_for_start()
    rss0, peak0, cpu0 = rss_bytes(), peak_bytes(), cpu_seconds()
    began = time.perf_counter()
    size = upload_fileobj_one(client, session, args.url, args.dest, args.key)
    return {
        "bytes": size,
        "seconds": time.perf_counter() - began,
        "late": late,
        "cpu": cpu_seconds() - cpu0,
        "rss_before": rss0,
        "peak_before": peak0,
        "peak": peak_bytes(),
    }


def prepare_many(args: argparse.Namespace, first_dest: str) -> Any:
    """Warm ``--inner`` up (imports, clients, the first operator's construction); return its per-file call."""
    from types import SimpleNamespace

    import requests

    one: Any
    if args.inner in ("operator", "operator_replace", "operator_handed"):
        from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
        from airflow_provider_tts.storage import destination_path, s3_call

        # The storage client built, like the anchors' (not the bucket check: that is the operator's
        # first request into the bucket, counted).
        s3_call(destination_path(first_dest, args.dest_conn_id))

        def build(entry: dict[str, str]) -> TtsAudioToStorageOperator:
            handed: Any = entry["task_id"]
            if args.inner == "operator_handed" and "url" in entry:
                handed = sensed(entry)
            return TtsAudioToStorageOperator(
                task_id="download", tts_conn_id=args.tts_conn_id, tts_task_id=handed,
                kind="text-to-sound", destination=entry["dest"], dest_conn_id=args.dest_conn_id, deferrable=False,
                # One task instance stores many files here: name each (the default is per task instance).
                file_name=entry["task_id"],
                overwrite="replace" if args.inner == "operator_replace" else "skip_if_identical",
            )  # fmt: skip

        # Warm-up, like the anchors' client set-up: an operator's first construction loads Airflow's
        # provider registry (its default outlet is an Asset, whose URI is normalised by the providers).
        build({"task_id": "warm-up", "dest": first_dest})

        def one(entry: dict[str, str]) -> int:
            op = build(entry)
            ti = SimpleNamespace(
                dag_id="bench", task_id="download", run_id=entry["task_id"], map_index=-1, try_number=1
            )
            return int(execute_as_task_runner(op, {"ti": ti})["size_bytes"])
    elif args.inner.startswith("in_memory_s3"):
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        hook = S3Hook(aws_conn_id=args.dest_conn_id)
        hook.get_conn()

        def one(entry: dict[str, str]) -> int:
            url = polled_url(requests, entry, args.key) if args.inner.endswith("_polled") else entry["url"]
            return in_memory_s3_one(hook, requests, url, entry["dest"], args.key)
    else:
        client, session = _s3_client(args.dest_conn_id), requests.Session()

        def one(entry: dict[str, str]) -> int:
            url = polled_url(session, entry, args.key) if args.inner.endswith("_polled") else entry["url"]
            return upload_fileobj_one(client, session, url, entry["dest"], args.key)

    return one


def store_list(one: Any, entries: list[dict[str, str]], start_at: float, profile: str = "") -> dict[str, Any]:
    """Store ``entries`` one after another from ``start_at``; files, bytes, CPU-s, end time (optionally profiled)."""
    delay = start_at - time.time()
    if delay > 0:
        time.sleep(delay)
    late = max(0.0, -delay)
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile(time.process_time)  # CPU time: what a busy machine disturbs least
        profiler.enable()
    cpu0 = cpu_seconds()
    total = sum(one(entry) for entry in entries)
    cpu = cpu_seconds() - cpu0
    ended = time.time()
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    return {"files": len(entries), "bytes": total, "ended_at": ended, "late": late, "cpu": cpu, "peak": peak_bytes()}


def run_serve(args: argparse.Namespace) -> dict[str, Any]:
    """Warm up once, print ``READY``, then store one list per stdin line, printing a ``RESULT`` line each.

    A stdin line is ``{"list": PATH, "start_at": EPOCH, "profile": PATH or ""}``; end of input ends the
    worker. One warm process per method serves every round of ``benchmarks/download.py``'s
    many-small-files rows, so the rounds can interleave the methods without paying an Airflow import
    each time.
    """
    one = prepare_many(args, args.dest)
    print("READY", flush=True)
    for line in sys.stdin:
        order = json.loads(line)
        entries = json.loads(Path(order["list"]).read_text())
        result = store_list(one, entries, float(order["start_at"]), order.get("profile", ""))
        print("RESULT " + json.dumps(result), flush=True)
    return {"done": True}


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
    parser.add_argument("method", choices=("operator", "in_memory_s3", "upload_fileobj_s3", "serve", "curl"))
    parser.add_argument("--inner", default="operator", help="with serve: the method used for each file")
    parser.add_argument("--dest", default="")
    parser.add_argument("--dest-conn-id")
    parser.add_argument("--tts-conn-id", default="camb_bench")
    parser.add_argument("--tts-task-id")
    parser.add_argument("--url")
    parser.add_argument("--key", default="tts-emulator-key")
    parser.add_argument("--chunk-bytes", type=int, default=None, help="the operator's chunk_bytes (default its own)")
    parser.add_argument("--start-at", type=float, default=0.0, help="epoch seconds to start downloading at")
    parser.add_argument("--reset-url", default="", help="POSTed to after the warm-up (zeroes the S3 request count)")
    args = parser.parse_args()
    global START_AT, RESET_URL
    START_AT = args.start_at
    RESET_URL = args.reset_url
    runner = {
        "operator": run_operator,
        "in_memory_s3": run_in_memory_s3,
        "upload_fileobj_s3": run_upload_fileobj_s3,
        "serve": run_serve,
        "curl": run_curl,
    }[args.method]
    result = runner(args)
    sys.stdout.flush()
    print("RESULT " + json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
