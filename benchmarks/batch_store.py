"""The batch's store phase to s3:// at 1,000 and 10,000 items, beside boto3 ``upload_fileobj`` in a thread pool.

A batch (``CambTtsBatchToStorageOperator``, ``deferrable=False``, ``max_active_requests`` 8) runs in
this process against the emulator (its own process, ``--delay 0``: every task is finished at its
first poll) and a moto S3 server (``benchmarks/download_moto.py``, its own process, counting
requests). Only the store phase is measured: from the start of the worker's wait
(``StorePhase._store_while_waiting``: the tasks, all finished, are polled, and each item is stored
the moment its poll says it ended: the download and the atomic write, then its request cache entry)
to the end of ``StorePhase._finish`` (the manifest), the code of ``airflow_provider_tts/batch/store.py``;
its wall time and this process's CPU time (user + system, all threads; the servers are other
processes). Submitting runs before it, unmeasured.

The anchor stores the same finished tasks' audio the way a user would by hand, once just before
the store phase and once just after (its row sums both; a load that drifts weighs on both sides
alike): boto3 ``upload_fileobj`` from a ``requests`` stream, 8 threads, one boto3 client shared and
one ``requests`` session per thread, the audio URLs known in advance (no status request: the
batch's poll per item is part of what it pays, and the table says so).

Both download equally ready audio. The emulator renders each task's audio in the background when
the task is created, and keeps rendered audio in an LRU (64 MiB by default). Run as it was before
issue 24, a store phase started with ~900 of 1,000 renders still queued, and audio evicted before
its download was rendered again on both sides, in different amounts. So no phase starts before the
emulator's background renders are done (``audio.background`` and ``audio.rendering`` of
``GET /_emulator/stats`` at 0, waited for unmeasured), and its render cache (``--audio-cache-mb``)
holds every item's audio of the largest batch, so none is rendered again at download. The renders
the emulator made during each phase are counted and shown (0 when fair).

    .venv/bin/python benchmarks/batch_store.py                 # 1,000 and 10,000; BENCHMARKS.md section
    .venv/bin/python benchmarks/batch_store.py --items 200     # a smoke run, BENCHMARKS.md untouched
    .venv/bin/python benchmarks/batch_store.py --items 1000 --audio-cache-mb 64 --no-settle  # as measured before
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import random
import resource
import shutil
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks._report import table, write_section
from benchmarks.download import (
    API_KEY,
    AWS_CONN_ID,
    AWS_ENV,
    BUCKET,
    TTS_CONN_ID,
    describe_requests,
    process,
    remove_prefix,
    s3_requests,
    scratch_dir,
)

REPO = Path(__file__).resolve().parent.parent
THREADS = 8
#: The emulator's render cache per item of the largest batch: a task's PCM and its FLAC each take an
#: entry (22,050 Hz, mean 10 s: ~0.45 MB each), so ~0.9 MB; 1 MB leaves a margin.
CACHE_MB_PER_ITEM = 1.0
HEADERS = ["items", "method", "files/s", "CPU ms per item", "vs upload_fileobj (files/s)", "S3 requests per item",
           "load (1 min)"]  # fmt: skip


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def process_cpu(pid: int) -> float:
    """User + system seconds of another process (all its threads), from procfs."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class EmulatorProbe:
    """The servers seen from outside: the emulator's audio renders (control API), its and moto's CPU time."""

    def __init__(self, url: str, pid: int, moto_pid: int) -> None:
        self.url, self.pid, self.moto_pid = url, pid, moto_pid

    def audio(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"{self.url}/_emulator/stats", timeout=60) as resp:
            audio: dict[str, Any] = json.loads(resp.read())["audio"]
        return audio

    def snapshot(self) -> dict[str, Any]:
        audio = self.audio()
        return {"renders": sum(audio["renders"].values()), "evictions": audio["evictions"],
                "background": audio["background"], "cpu": process_cpu(self.pid),
                "moto_cpu": process_cpu(self.moto_pid)}  # fmt: skip

    def settle(self, timeout: float = 3600.0) -> float:
        """Wait until no audio is being rendered (the creates' background renders done); seconds waited."""
        began = time.perf_counter()
        while True:
            audio = self.audio()
            if audio["background"] == 0 and audio["rendering"] == 0:
                return time.perf_counter() - began
            if time.perf_counter() - began > timeout:
                raise RuntimeError(f"the emulator still renders after {timeout:.0f} s: {audio}")
            time.sleep(0.5)


def during(before: dict[str, Any], after: dict[str, Any], n: int) -> dict[str, Any]:
    """What the emulator did between two snapshots: renders, evictions, CPU ms per item."""
    return {"renders": after["renders"] - before["renders"], "evictions": after["evictions"] - before["evictions"],
            "background_at_start": before["background"],
            "cpu_ms": 1000 * (after["cpu"] - before["cpu"]) / n,
            "moto_cpu_ms": 1000 * (after["moto_cpu"] - before["moto_cpu"]) / n}  # fmt: skip


def describe_emulator(side: dict[str, Any]) -> str:
    return (f"{side['renders']:,} renders ({side['evictions']:,} evictions), "
            f"{side['background_at_start']:,} background renders pending at the start, "
            f"CPU ms per item: emulator {side['cpu_ms']:.1f}, moto {side['moto_cpu_ms']:.1f}")  # fmt: skip


#: Where a store thread's time per item goes (``stage_times``): the stage, then what it is.
STAGES = {
    "open_audio": "`open_audio` (the audio GET's response headers)",
    "stream_audio_into": "the audio's body and PutObject",
}
#: Timed like the stages, but on threads of its own (``batch.store.EntryWrites``), not a store thread's.
ENTRY_STAGE = ("stored", "the request cache entry's PutObject, on the entry threads")


@contextmanager
def stage_times() -> Iterator[dict[str, float]]:
    """Seconds the store threads spent in each of ``STAGES`` and in whole items (``row``), summed over threads.

    The three calls each item's store makes, timed by wrapping them (a few microseconds per call)
    while the batch runs: ``TtsHook.open_audio``, ``stream_audio_into`` as ``batch/store.py`` calls
    it, ``RequestCache.stored``; ``row`` is ``StorePhase._row``, an item's whole time in its thread.
    """
    from airflow_provider_tts.batch import store
    from airflow_provider_tts.cache import RequestCache
    from airflow_provider_tts.hooks.tts import TtsHook

    totals = dict.fromkeys([*STAGES, ENTRY_STAGE[0], "row"], 0.0)
    lock = threading.Lock()

    def timed(name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                with lock:
                    totals[name] += time.perf_counter() - began

        return wrapper

    targets: list[tuple[Any, str, str]] = [(TtsHook, "open_audio", "open_audio"), (store, "stream_audio_into",
        "stream_audio_into"), (RequestCache, "stored", "stored"), (store.StorePhase, "_row", "row")]  # fmt: skip
    saved = [(owner, attr, getattr(owner, attr)) for owner, attr, _ in targets]
    for owner, attr, name in targets:
        setattr(owner, attr, timed(name, getattr(owner, attr)))
    try:
        yield totals
    finally:
        for owner, attr, original in saved:
            setattr(owner, attr, original)


def describe_stages(totals: dict[str, float], seconds: float, n: int) -> str:
    """Per item, the store threads' milliseconds by stage, and how long they were idle."""
    per = {name: 1000 * value / n for name, value in totals.items()}
    other = per["row"] - sum(per[name] for name in STAGES)
    idle = 1000 * (THREADS * seconds - totals["row"]) / n
    parts = [f"{STAGES[name]} {per[name]:.1f}" for name in STAGES]
    return (f"{per['row']:.1f} ms of a store thread per item: " + ", ".join(parts) + f", the rest {other:.1f}; "
            f"the {THREADS} threads were idle {idle:.1f} ms per item; {ENTRY_STAGE[1]} "
            f"{per[ENTRY_STAGE[0]]:.1f} ms per item")  # fmt: skip


def texts(n: int, seed: int) -> list[str]:
    """``n`` distinct texts of 40-280 characters: 2.4-17 s of the emulator's tones, 120 KB-800 KB of audio."""
    rng = random.Random(seed)
    words = ["the", "quick", "brown", "fox", "jumps", "over", "a", "lazy", "dog", "while", "seven", "stars"]
    out = []
    for i in range(n):
        length = rng.randint(40, 280)
        text = f"Item {seed}-{i}."
        while len(text) < length:
            text += " " + rng.choice(words)
        out.append(text[:length].rstrip() + ".")
    return out


def run_batch(
    n: int, folder: str, seed: int, settle: bool, before: Callable[[list[str]], None] | None = None
) -> dict[str, Any]:
    """One batch of ``n`` items into ``folder``; its store phase's wall and CPU time, and its manifest rows.

    ``settle``: before the store phase starts, wait (unmeasured) until the emulator renders nothing.
    ``before``: called with the batch's vendor task ids (all finished) just before the store phase
    starts; the benchmark runs the anchor there, so the two phases bracket nothing but each other.
    """
    from airflow_provider_tts.batch.store import StorePhase
    from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator

    op = CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=TTS_CONN_ID, destination=folder, dest_conn_id=AWS_CONN_ID,
        items=texts(n, seed), defaults={"voice_id": 20303, "language": 1},
        deferrable=False, poll_interval=0.05, max_active_requests=THREADS, manifest_task_ids=True,
    )  # fmt: skip
    measured: dict[str, Any] = {}
    finish, store_while_waiting = StorePhase._finish, StorePhase._store_while_waiting

    def start(task_ids: list[str] | None = None) -> None:
        if "cpu0" not in measured:
            if settle:
                measured["settled_seconds"] = EMULATOR[0].settle()
            if before is not None and task_ids is not None:
                before(task_ids)
            measured["emulator_before"] = EMULATOR[0].snapshot()
            measured["load_before"] = os.getloadavg()[0]
            measured["requests_before"] = s3_requests(MOTO[0], reset=True)
            measured["cpu0"], measured["began"] = cpu_seconds(), time.perf_counter()

    async def timed_wait(*args: Any, **kwargs: Any) -> Any:
        waits = args[3]  # (context, plan, trigger, waits, ...): {fingerprint: (task id, submitted at)}
        start([task_id for task_id, _ in waits.values()])
        return await store_while_waiting(op, *args, **kwargs)

    def timed(*args: Any, **kwargs: Any) -> dict[str, Any]:
        start()
        try:
            return finish(op, *args, **kwargs)
        finally:
            measured["seconds"] = time.perf_counter() - measured["began"]
            measured["cpu"] = cpu_seconds() - measured["cpu0"]
            measured["requests"] = s3_requests(MOTO[0])
            measured["load"] = os.getloadavg()[0]
            measured["emulator"] = during(measured["emulator_before"], EMULATOR[0].snapshot(), n)

    op._store_while_waiting = timed_wait  # type: ignore[method-assign]
    op._finish = timed  # type: ignore[method-assign]
    ti = SimpleNamespace(dag_id="bench", task_id="speak_all", run_id=f"bench-{n}-{seed}", map_index=-1, try_number=1)
    began = time.perf_counter()
    with stage_times() as stages:
        summary = op.execute({"ti": ti})  # type: ignore[arg-type,typeddict-item]
    measured["stages"] = stages
    measured["total_seconds"] = time.perf_counter() - began
    assert summary["stored"] == n, {k: v for k, v in summary.items() if k != "files"}
    measured["summary"] = summary
    return measured


def task_urls(task_ids: list[str]) -> list[tuple[str, str]]:
    """Finished tasks as (task id, audio URL): what the anchor downloads (not timed)."""
    from airflow_provider_tts.hooks.tts import TtsHook

    hook = TtsHook(tts_conn_id=TTS_CONN_ID)
    out = []
    for task_id in task_ids:
        status = hook.get_task_status(task_id, "tts")
        req = hook.vendor.audio_request(status)
        query = "&".join(f"{k}={v}" for k, v in (req.params or {}).items())
        out.append((task_id, f"{req.url}?{query}" if query else req.url))
    return out


def manifest_task_ids(manifest_key: str, s3: Any) -> list[str]:
    body = s3.get_object(Bucket=BUCKET, Key=manifest_key)["Body"].read().decode()
    return [json.loads(line)["tts_task_id"] for line in body.splitlines() if line.strip()]


def both(first: dict[str, Any], second: dict[str, Any]) -> dict[str, Any]:
    """Two anchor runs over the same items as one: times, CPU, requests and renders summed."""
    requests = {k: first["requests"].get(k, 0) + second["requests"].get(k, 0)
                for k in {*first["requests"], *second["requests"]}}  # fmt: skip
    emulator = {
        k: first["emulator"][k] + second["emulator"][k] for k in ("renders", "evictions", "background_at_start")
    }
    return {"seconds": first["seconds"] + second["seconds"], "cpu": first["cpu"] + second["cpu"],
            "bytes": first["bytes"] + second["bytes"], "requests": requests, "load_before": first["load_before"],
            "load": second["load"], "settled_seconds": first["settled_seconds"] + second["settled_seconds"],
            "emulator": {**emulator, **{k: (first["emulator"][k] + second["emulator"][k]) / 2
                                        for k in ("cpu_ms", "moto_cpu_ms")}},
            "runs": [first, second]}  # fmt: skip


def run_anchor(urls: list[tuple[str, str]], prefix: str, settle: bool) -> dict[str, Any]:
    """``upload_fileobj`` from a ``requests`` stream per item, ``THREADS`` at once, shared client and session."""
    import requests
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    local = threading.local()

    def one(entry: tuple[str, str]) -> int:
        session = getattr(local, "session", None)
        if session is None:
            session = local.session = requests.Session()
        task_id, url = entry
        with session.get(url, headers={"x-api-key": API_KEY}, timeout=(10, 300), stream=True) as response:
            response.raise_for_status()
            response.raw.decode_content = False
            client.upload_fileobj(response.raw, BUCKET, f"{prefix}{task_id}.wav")
            return int(response.headers["content-length"])

    settled = EMULATOR[0].settle() if settle else 0.0
    emulator_before = EMULATOR[0].snapshot()
    load_before = os.getloadavg()[0]
    s3_requests(MOTO[0], reset=True)
    cpu0, began = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(THREADS) as pool:
        total = sum(pool.map(one, urls))
    seconds, cpu = time.perf_counter() - began, cpu_seconds() - cpu0
    return {"seconds": seconds, "cpu": cpu, "bytes": total, "requests": s3_requests(MOTO[0]),
            "load_before": load_before, "load": os.getloadavg()[0], "settled_seconds": settled,
            "emulator": during(emulator_before, EMULATOR[0].snapshot(), len(urls))}  # fmt: skip


def how_measured() -> str:
    """The module docstring's method paragraphs as one Markdown paragraph (for BENCHMARKS.md)."""
    paragraphs = (__doc__ or "").split("\n\n")[1:4]
    return " ".join(" ".join(p.split()) for p in paragraphs).replace("``", "`")


#: The moto server's endpoint, once started.
MOTO: list[str] = [""]
#: The emulator, once started.
EMULATOR: list[EmulatorProbe] = []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", default="1000,10000", help="comma-separated batch sizes (default 1000,10000)")
    parser.add_argument("--audio-cache-mb", type=int, default=None,
                        help=f"the emulator's render cache (default {CACHE_MB_PER_ITEM:g} MB per item of the largest "
                             "batch, 64 minimum: no audio evicted)")  # fmt: skip
    parser.add_argument("--s3-latency-ms", type=float, default=0.0,
                        help="hold every S3 request this long in the moto server, as a store across a network "
                             "would (default 0: loopback; BENCHMARKS.md untouched otherwise)")  # fmt: skip
    parser.add_argument("--no-settle", action="store_true",
                        help="start each phase without waiting for the emulator's renders (as before)")  # fmt: skip
    args = parser.parse_args()
    sizes = [int(x) for x in args.items.split(",")]
    cache_mb = args.audio_cache_mb or max(64, round(CACHE_MB_PER_ITEM * max(sizes)))
    settle = not args.no_settle
    default_run = (
        args.items == parser.get_default("items") and args.audio_cache_mb is None and settle and not args.s3_latency_ms
    )
    scratch = scratch_dir()
    env = dict(os.environ, **AWS_ENV, PYTHONPATH=str(REPO))
    os.environ.update(AWS_ENV)
    os.environ.setdefault("AIRFLOW_HOME", str(scratch / "airflow-home"))
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    rows: list[list[object]] = []
    notes: list[str] = []
    try:
        emulator_cmd = [sys.executable, "-m", "airflow_provider_tts.emulator", "--port", "0", "--delay", "0"]
        emulator_cmd += ["--audio-engine", "tones", "--audio-cache-mb", str(cache_mb), "--print-json"]
        moto_cmd = [sys.executable, str(REPO / "benchmarks" / "download_moto.py")]
        moto_cmd += ["--latency-ms", str(args.s3_latency_ms)]
        with (
            process(emulator_cmd, env, "the emulator", scratch / "emulator.log") as (emu_proc, emu),
            process(moto_cmd, dict(env, TMPDIR=str(scratch)), "the moto server", scratch / "moto.log") as (
                moto_proc,
                moto,
            ),
        ):
            MOTO[0] = moto["endpoint"]
            EMULATOR[:] = [EmulatorProbe(emu["url"], emu_proc.pid, moto_proc.pid)]
            os.environ[f"AIRFLOW_CONN_{TTS_CONN_ID.upper()}"] = json.dumps(
                {"conn_type": "camb_ai", "host": emu["camb_base_url"], "password": API_KEY}
            )
            os.environ[f"AIRFLOW_CONN_{AWS_CONN_ID.upper()}"] = json.dumps(
                {"conn_type": "aws", "login": "testing", "password": "testing",
                 "extra": {"endpoint_url": moto["endpoint"], "region_name": "us-east-1"}}
            )  # fmt: skip
            import boto3

            s3 = boto3.client("s3", endpoint_url=moto["endpoint"], region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            for n in sizes:
                folder = f"batch-{n}/"
                print(f"batch of {n:,}: submitting and waiting (not measured), then the store phase", flush=True)
                prefix, anchors = f"anchor-{n}/", list[dict[str, Any]]()

                def anchor_run(task_ids: list[str], prefix: str = prefix, anchors: list[Any] = anchors) -> None:
                    anchors.append(run_anchor(task_urls(task_ids), prefix, settle=settle))
                    assert remove_prefix(s3, prefix) == len(task_ids)  # moto keeps objects in memory

                # With the emulator settled, the anchor runs just before and just after the store phase,
                # on the same audio: a load that drifts during the run weighs on both sides alike.
                batch = run_batch(n, f"s3://{BUCKET}/{folder}", seed=n, settle=settle,
                                  before=anchor_run if settle else None)  # fmt: skip
                task_ids = manifest_task_ids(f"{folder}manifest.jsonl", s3)
                stored = remove_prefix(s3, folder)  # moto keeps objects in memory: 4 GB at 10,000 items
                anchor_run(task_ids)
                anchor = both(*anchors) if len(anchors) == 2 else anchors[0]
                runs = len(anchors)
                size = anchor["bytes"] / n / runs
                b_rate, a_rate = n / batch["seconds"], runs * n / anchor["seconds"]
                rows.append([f"{n:,}", "batch store phase (`batch/store.py`)", f"{b_rate:,.1f}",
                             f"{1000 * batch['cpu'] / n:.1f}", f"{b_rate / a_rate:.2f}x",
                             describe_requests(batch["requests"], n),
                             f"{batch['load_before']:.1f} → {batch['load']:.1f}"])  # fmt: skip
                label = f"boto3 `upload_fileobj`, {THREADS} threads" + (", before and after" if runs > 1 else "")
                rows.append([f"{n:,}", label,
                             f"{a_rate:,.1f}", f"{1000 * anchor['cpu'] / n / runs:.1f}", "1.00x",
                             describe_requests(anchor["requests"], n * runs),
                             f"{anchor['load_before']:.1f} → {anchor['load']:.1f}"])  # fmt: skip
                notes.append(
                    f"{n:,} items: mean audio {size / 1000:,.0f} KB; the whole batch (submit, wait, store) took "
                    f"{batch['total_seconds']:,.1f} s (the anchor before it included), its store phase "
                    f"{batch['seconds']:,.1f} s; the anchor "
                    + " and ".join(
                        f"{run['seconds']:,.1f} s ({n / run['seconds']:,.1f} files/s)"
                        for run in anchor.get("runs", [anchor])
                    )
                    + f"; {stored - n} other objects (manifest, request cache) removed "
                    f"with the folder. Store phase: {describe_stages(batch['stages'], batch['seconds'], n)}. "
                    f"Emulator during the store phase: {describe_emulator(batch['emulator'])}; "
                    f"during the anchor{'s' if runs > 1 else ''}: {describe_emulator(anchor['emulator'])}"
                    f" (waited {batch.get('settled_seconds', 0.0):,.1f} s, unmeasured, for the creates' background "
                    "renders before the first measured phase)."
                )
                print(table(HEADERS, rows[-2:]), flush=True)
            s3.delete_bucket(Bucket=BUCKET)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = (
        table(HEADERS, rows) + "\n" + "\n".join(f"- {n}" for n in notes) + "\n\n"
        f"How it was measured: {how_measured()} *S3 requests* are counted by the moto "
        f"server per operation (the batch's include its request cache and manifest writes). *CPU ms per item* "
        f"is this process's user + system time over the phase, divided by the items: the figure a busy "
        f"machine disturbs least. "
        + (
            f"The moto server held every S3 request {args.s3_latency_ms:g} ms before answering it. "
            if args.s3_latency_ms
            else ""
        )
        + "The machine is shared (2 CPUs for the emulator, moto and the store); "
        f"load average at the end: {load}.\n"
    )
    print(body)
    if default_run:
        title = "The batch's store phase to s3:// at 1,000 and 10,000 items"
        write_section("batch-store", title, ".venv/bin/python benchmarks/batch_store.py", body)
        print("Section 'batch-store' written to BENCHMARKS.md")


if __name__ == "__main__":
    main()
