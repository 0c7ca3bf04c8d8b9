"""Chaos on the distributed engine: kill anything at any time, lose nothing, pay once (issue 26).

One command (``make chaos``, options below) starts the CeleryExecutor + PostgreSQL + Redis deployment of
``tools/distributed_airflow.py`` (2 workers, 2 triggerers), the vendor emulator with injected faults and an
S3 server (moto, loopback), and triggers three runs at once (``tools/chaos_dags.py``):

* a batch of ``--batch`` texts in one task (RevidAPI, one deferral);
* ``--one-task`` mapped one-task operators (Camb ``/tts``: submit, wait in the triggerer, store);
* ``--stream`` mapped ``/tts-stream`` texts (Camb).

``--faults`` of status, result and storage requests are answered with a random transient fault (every
transient kind), and the same share of create and ``/tts-stream`` calls with a 429 or 503 (the faults that
prove the vendor did not process the call; a lost create answer ends its item by design, R9, and a stream
cut mid-body was charged and is not resent, R12). Meanwhile a chaos loop SIGKILLs a
random worker or triggerer (its whole process tree) every ``--kill-every`` seconds and restarts it, and
restarts PostgreSQL (fast shutdown) and Redis (its queues are lost: no persistence) once each, mid-run. A
component that exits on its own (a scheduler losing its database, say) is restarted as a supervisor
(systemd, Kubernetes) would; those restarts are counted apart, by name, because each is a finding.

At the end every run must have succeeded (within its Airflow retries), and:

* every text was created exactly once at the vendor (counted by the emulator per text; a ``/tts-stream``
  is one request whose body is the audio, so its "create" is a stream answered 200);
* every text is stored exactly once, byte-identical to what the emulator serves for it, listed in its
  manifest; nothing else in the folders but the request cache's entries: no temporary, no partial object,
  no open multipart upload;
* the API key is in no table or ``pg_dump`` of PostgreSQL, no Redis key, no log or file of the deployment,
  and never reached the storage host.

Figures (wall time, kills, restarts, creates per text, retries used, load) are printed, as a JSON line and
as a RELIABILITY.md row. The chaos loop's seed is printed; ``--seed`` replays the same sequence of victims::

    .venv/bin/python tools/chaos.py --batch 1000 --one-task 300 --stream 50 --faults 0.2 --kill-every 30

``tests/slow/test_chaos.py`` runs a short version of the same (fewer texts, 3 kills, one PostgreSQL and
one Redis restart) in CI.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import random
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import requests

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from airflow_provider_tts.cache_snapshot import SNAPSHOT_NAME  # noqa: E402
from airflow_provider_tts.emulator import Emulator, EmulatorConfig, FaultConfig  # noqa: E402
from benchmarks._batch_measure import CreateFaults  # noqa: E402
from tests.reliability.secrets_audit import audit_deployment, audit_postgres, audit_redis  # noqa: E402
from tools.distributed_airflow import QUICK_FAILURE_DETECTION, DistributedAirflow  # noqa: E402
from tools.local_airflow import LocalAirflowError  # noqa: E402

KEY = "sk-CHAOS-5d1e-never-log-me"
BUCKET = "tts-chaos"
DAGS = {"batch": "chaos_batch", "one-task": "chaos_one_task", "stream": "chaos_stream"}
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
#: A death noticed well within the run (Airflow's defaults are minutes), plus what continuous chaos needs.
DEPLOYMENT_ENV = {
    **QUICK_FAILURE_DETECTION,
    # A queued task is re-queued only twice by default, then Airflow FAILS it without using its retries
    # (found by the first full run: 13 tasks failed so). Under continuous chaos every kill loses prefetched
    # messages, so a task can be lost more than twice; a deployment that loses workers often needs this higher.
    "AIRFLOW__SCHEDULER__NUM_STUCK_IN_QUEUED_RETRIES": "10",
    # A message lost with Redis or with a killed worker's prefetch leaves its task queued until this timeout
    # re-sends it: with 120 s (+ a 15 s check) a short run spent 2-4 of its minutes waiting so. Here
    # parallelism equals the workers' slots, so a task queued 45 s is lost, not waiting for a slot.
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "45",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "5",
    # 16 task processes parsing the DAG file at once on 2 busy cores can pass the 30 s default, which
    # reschedules the task ("Dag not found during start up"): slow, not wrong, and not what is tested.
    "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
}


@dataclasses.dataclass
class ChaosConfig:
    """Sizes and disturbances of one chaos run (the defaults are issue 26's full run)."""

    batch: int = 1000
    one_task: int = 300
    stream: int = 50
    faults: float = 0.20
    kill_every: float = 30.0
    #: Stop killing after this many kills (None: until every run has ended).
    max_kills: int | None = None
    #: Seconds after the trigger at which PostgreSQL / Redis are restarted (None: never).
    postgres_at: float | None = 90.0
    redis_at: float | None = 200.0
    seed: int = dataclasses.field(default_factory=lambda: random.SystemRandom().randrange(2**31))
    #: Seconds each vendor task stays pending.
    pending: float = 15.0
    timeout: float = 5400.0
    retries: int = 8
    worker_concurrency: int = 8


def _log(message: str) -> None:
    print(f"{time.strftime('%H:%M:%S')} {message}", flush=True)


def chaos_texts(kind: str, n: int) -> list[str]:
    """``n`` distinct texts of one kind; distinct across kinds too, so creates count per text."""
    return [f"Chaos {kind} text {i + 1}: the quick brown fox jumps over the lazy dog." for i in range(n)]


class ChaosLoop(threading.Thread):
    """SIGKILL a random worker or triggerer every ``kill_every`` s and restart it; restart the servers once.

    Between disturbances it acts as the deployment's supervisor: a component that exited on its own is
    restarted, and recorded in ``self_exits`` (a finding, unlike the kills). Every action is logged with
    its time since the start, and errors of the harness itself end the loop and are kept in ``error``.
    """

    def __init__(self, af: DistributedAirflow, config: ChaosConfig, started: float) -> None:
        super().__init__(daemon=True, name="chaos-loop")
        self.af = af
        self.config = config
        self.started = started
        self.rng = random.Random(config.seed)
        self.stop = threading.Event()
        self.kills: list[tuple[float, str]] = []
        self.server_restarts: list[tuple[float, str, float]] = []
        self.self_exits: list[tuple[float, str]] = []
        self.error: BaseException | None = None

    def _elapsed(self) -> float:
        return time.monotonic() - self.started

    def supervise(self) -> None:
        """Restart every component that died on its own (what systemd or Kubernetes would do)."""
        for component in self.af.dead_components():
            _log(f"chaos: {component} exited on its own at {self._elapsed():.0f} s; restarting it")
            self.self_exits.append((round(self._elapsed(), 1), component))
            self.af.restart(component, timeout=300)

    def _server_due(self, name: str, at: float | None) -> bool:
        done = any(r[1] == name for r in self.server_restarts)
        return at is not None and not done and self._elapsed() >= at

    def run(self) -> None:
        victims = (*self.af.workers, *self.af.triggerers)
        next_kill = self.config.kill_every
        while not self.stop.wait(1.0):
            try:
                self.supervise()
                for name, at in (("postgres", self.config.postgres_at), ("redis", self.config.redis_at)):
                    if self._server_due(name, at):
                        at_s = round(self._elapsed(), 1)
                        down = self.af.restart_server(name, signal.SIGTERM)
                        self.server_restarts.append((at_s, name, round(down, 1)))
                        _log(f"chaos: {name} restarted at {at_s} s (down {down:.1f} s)")
                limit = self.config.max_kills
                if self._elapsed() >= next_kill and (limit is None or len(self.kills) < limit):
                    victim = self.rng.choice(victims)
                    at_s = round(self._elapsed(), 1)
                    next_kill = at_s + self.config.kill_every
                    self.af.kill(victim)
                    self.kills.append((at_s, victim))
                    _log(f"chaos: kill {len(self.kills)}: SIGKILLed {victim} at {at_s} s")
                    self.af.restart(victim, timeout=300)
            except LocalAirflowError as exc:
                # Another component died while this one restarted (a restart waits on all being alive):
                # the next round's supervise() restarts it. Not the harness failing.
                _log(f"chaos: {type(exc).__name__}: {str(exc).splitlines()[0]}; supervising")
            except BaseException as exc:  # the harness failed, not the system under test: report it
                self.error = exc
                _log(f"chaos: loop failed: {type(exc).__name__}: {exc}")
                return


def _bucket_keys(s3: Any, prefix: str) -> list[str]:
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
    return sorted(obj["Key"] for page in pages for obj in page.get("Contents", []))


def _key_of(uri: str) -> str:
    """The object key of an ``s3://bucket/key`` URI (or a key relative to the bucket as is)."""
    return uri.split(f"s3://{BUCKET}/", 1)[-1]


def _folder_leftovers(keys: list[str], folder: str, listed: set[str], manifests: set[str]) -> list[str]:
    """Keys in ``folder`` that are neither listed audio, a manifest, nor a request-cache entry or snapshot."""
    allowed_cache = f"{folder}.tts-cache/"
    snapshot = f"{allowed_cache}{SNAPSHOT_NAME}"
    return [
        k
        for k in keys
        if k not in listed
        and k not in manifests
        and k != snapshot
        and not (k.startswith(allowed_cache) and k.endswith(".json"))
    ]


class Served:
    """What the emulator serves for a vendor task or a stream, fetched over HTTP with the key."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu
        self.http = requests.Session()
        self.http.headers["x-api-key"] = KEY
        self.storage = requests.Session()  # the storage host is a third party: it never gets the key
        #: (vendor, text) -> the vendor task made for it (the check of one create per text comes first)
        self.task_of = {(str(t["api"]), str((t.get("body") or {}).get("text"))): str(t["task_id"]) for t in emu.tasks()}

    def revid(self, text: str, suffix: str) -> bytes:
        task_id = self.task_of[("revid_tts", text)]
        resp = self.storage.get(f"{self.emu.url}/storage/revid/{task_id}{suffix}", timeout=60)
        resp.raise_for_status()
        return resp.content

    def camb(self, text: str) -> bytes:
        task_id = self.task_of[("camb_ai", text)]
        status = self.http.get(f"{self.emu.camb_base_url}/tts/{task_id}", timeout=60)
        status.raise_for_status()
        result = self.http.get(f"{self.emu.camb_base_url}/tts-result/{status.json()['run_id']}", timeout=60)
        result.raise_for_status()
        return result.content

    def stream(self, text: str) -> bytes:
        body = {"text": text, "language": "en-us", "voice_id": 20303, "output_configuration": {"format": "flac"}}
        # The stream injector may have left its fault armed for a stream that never came (it arms the
        # next one in advance): a 429 or 503 made nothing, so ask again.
        for _ in range(3):
            resp = self.http.post(f"{self.emu.camb_base_url}/tts-stream", json=body, timeout=60)
            if resp.status_code not in (429, 503):
                break
        resp.raise_for_status()
        return resp.content


def check_storage(
    s3: Any,
    emu: Emulator,
    texts: dict[str, list[str]],
    problems: list[str],
    forms: set[str],
    batch_uncertain: Collection[int] = (),
) -> dict[str, int]:
    """Every text of ``forms`` stored once, byte-identical to what the emulator serves, nothing else left behind.

    A form whose run did not succeed has no manifest: its folder must still hold nothing but audio (at most
    one object per text) and request-cache entries. The batch is the exception: a batch that failed only
    by uncertain submits (``batch_uncertain``, its manifest's row indexes) wrote its manifest, and every
    other row of it must be stored as if it had succeeded.
    """
    served = Served(emu)
    stored_count: dict[str, int] = {}
    sha = lambda data: hashlib.sha256(data).hexdigest()  # noqa: E731
    if batch_uncertain:
        forms = forms | {"batch"}
    for form in set(texts) - forms:
        keys = _bucket_keys(s3, f"{form}/")
        audio = [k for k in keys if not k.startswith(f"{form}/.tts-cache/")]
        if len(audio) > len(texts[form]) or any(not k.endswith((".wav", ".flac", ".mp3")) for k in audio):
            problems.append(f"{form}: {len(audio)} objects besides the cache for {len(texts[form])} texts: {audio[:5]}")
        stored_count[form] = len(audio)
    # batch: manifest.jsonl, one row per text (its file relative to the folder or a URI)
    folder = "batch/"
    if "batch" not in forms:
        folder = ""
    keys = _bucket_keys(s3, folder) if folder else []
    lines = _get(s3, f"{folder}manifest.jsonl").decode().splitlines() if folder else []
    rows = [json.loads(line) for line in lines if line.strip()]
    listed: set[str] = set()
    by_index = {int(r["index"]): r for r in rows}
    if folder and sorted(by_index) != list(range(1, len(texts["batch"]) + 1)):
        problems.append(f"batch manifest: rows {len(rows)} for {len(texts['batch'])} texts")
    for row in rows:
        if row.get("status") not in ("stored", "cached"):
            if int(row["index"]) in batch_uncertain:
                continue
            problems.append(f"batch manifest row {row.get('index')}: {row.get('status')} {row.get('error')}")
            continue
        key = _key_of(row["file"]) if row["file"].startswith("s3://") else folder + row["file"]
        listed.add(key)
        data = _get(s3, key)
        text = texts["batch"][int(row["index"]) - 1]
        want = served.revid(text, Path(key).suffix)
        if not sha(data) == row.get("sha256") == sha(want):
            problems.append(f"batch: {key} differs from what the emulator served for {text!r}")
    if folder:
        leftovers = _folder_leftovers(keys, folder, listed, {f"{folder}manifest.jsonl"})
        problems += [f"batch: left behind {k}" for k in leftovers]
        stored_count["batch"] = len(listed)
    # one-task and stream: manifest.json written by the DAG from each task's result
    for form in sorted({"one-task", "stream"} & forms):
        folder = f"{form}/"
        keys = _bucket_keys(s3, folder)
        manifest = json.loads(_get(s3, f"{folder}manifest.json"))
        items = manifest["items"]
        if [item["text"] for item in items] != texts[form]:
            problems.append(f"{form} manifest: texts differ from the run's ({len(items)} rows)")
        listed = set()
        for item in items:
            key = _key_of(item["uri"])
            if key in listed:
                problems.append(f"{form}: two texts stored as {key}")
            listed.add(key)
            data = _get(s3, key)
            want = served.camb(item["text"]) if form == "one-task" else served.stream(item["text"])
            if not sha(data) == item.get("sha256") == sha(want):
                problems.append(f"{form}: {key} differs from what the emulator served for {item['text']!r}")
        problems += [
            f"{form}: left behind {k}" for k in _folder_leftovers(keys, folder, listed, {f"{folder}manifest.json"})
        ]
        stored_count[form] = len(listed)
    uploads = s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads") or []
    problems += [f"open multipart upload {u['Key']}" for u in uploads]
    return stored_count


def _get(s3: Any, key: str) -> bytes:
    return bytes(s3.get_object(Bucket=BUCKET, Key=key)["Body"].read())


def creates_per_text(emu: Emulator, texts: dict[str, list[str]], streams_ok: Counter[str]) -> dict[str, Counter[int]]:
    """``{form: Counter(creates per text -> number of texts)}`` from the emulator's tasks and streams."""
    created: Counter[tuple[str, str]] = Counter()
    for task in emu.tasks():
        api = "batch" if task.get("api") == "revid_tts" else "one-task"
        created[(api, str((task.get("body") or {}).get("text")))] += 1
    out: dict[str, Counter[int]] = {}
    for form, form_texts in texts.items():
        counts = streams_ok if form == "stream" else Counter({t: created[(form, t)] for t in form_texts})
        out[form] = Counter(counts.get(t, 0) for t in form_texts)
    return out


# ---------------------------------------------------------------------------------------------- the run


@contextlib.contextmanager
def _moto() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    saved = {k: os.environ.get(k) for k in AWS_ENV}
    os.environ.update(AWS_ENV)
    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # one line per S3 request otherwise
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        _, port = server.get_host_and_port()
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def run_chaos(config: ChaosConfig, work: Path, log: Callable[[str], None] = _log) -> dict[str, Any]:
    """One chaos run; returns the figures and ``problems`` (empty when every end check held)."""
    import boto3

    log(f"chaos: seed {config.seed} (replay with --seed {config.seed})")
    texts = {
        "batch": chaos_texts("batch", config.batch),
        "one-task": chaos_texts("one-task", config.one_task),
        "stream": chaos_texts("stream", config.stream),
    }
    dags = work / "dags"
    dags.mkdir(parents=True, exist_ok=True)
    shutil.copy(REPO / "tools" / "chaos_dags.py", dags / "chaos_dags.py")
    items = work / "items.txt"
    items.write_text("\n".join(texts["batch"]) + "\n")
    faults = FaultConfig(rate=config.faults, endpoints=frozenset({"status", "result", "storage"}), seed=config.seed,
                         retry_after="0.2")  # fmt: skip
    emu_config = EmulatorConfig(default_delay=config.pending, audio_engine="tones", faults=faults,
                                request_log_size=200_000, storage_log_size=1)  # fmt: skip
    problems: list[str] = []
    with _moto() as endpoint, Emulator(api_key=KEY, config=emu_config) as emu:
        s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        extra = {"retry_backoff": 0.2, "retry_max_backoff": 2}
        conns = {
            "AIRFLOW_CONN_REVID_TTS_DEFAULT": {"conn_type": "revid_tts", "host": emu.revid_base_url, "password": KEY,
                                               "extra": {**extra, "status_base_url": emu.revid_status_base_url}},
            "AIRFLOW_CONN_CAMB_AI_DEFAULT": {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": KEY,
                                             "extra": extra},
            "AIRFLOW_CONN_AWS_CHAOS": {"conn_type": "aws", "login": "testing", "password": "testing",
                                       "extra": {"endpoint_url": endpoint, "region_name": "us-east-1"}},
        }  # fmt: skip
        env = {name: json.dumps(value) for name, value in conns.items()} | AWS_ENV | DEPLOYMENT_ENV
        env |= {"CHAOS_OUTPUT": f"s3://{BUCKET}/", "CHAOS_DEST_CONN_ID": "aws_chaos", "CHAOS_ITEMS": items.as_uri(),
                "CHAOS_RETRIES": str(config.retries),
                "CHAOS_BATCH_MAX_ACTIVE_REQUESTS": str(BATCH_MAX_ACTIVE_REQUESTS)}  # fmt: skip
        af = DistributedAirflow(work / "deployment", dags, workers=2, triggerers=2,
                                worker_concurrency=config.worker_concurrency,
                                # no more queued than the workers' slots: "queued" then means "lost", not "waiting"
                                parallelism=2 * config.worker_concurrency, env=env, log=log,
                                stop_grace=5)  # fmt: skip
        # The paying calls get only faults that prove nothing was paid (429, 503): any other leaves the
        # outcome unknown, which by design (R5', R12) is a human's call, not a retry's.
        injectors = [CreateFaults(emu, config.faults, seed=config.seed + n, endpoint=endpoint)
                     for n, endpoint in enumerate(("create", "stream"))]  # fmt: skip
        with af:
            for dag_id in DAGS.values():
                af.wait_for_dag(dag_id)
            for injector in injectors:
                injector.start()
            started = time.monotonic()
            runs = {
                "batch": af.trigger(DAGS["batch"]),
                "one-task": af.trigger(DAGS["one-task"], conf={"texts": texts["one-task"]}),
                "stream": af.trigger(DAGS["stream"], conf={"texts": texts["stream"]}),
            }
            log(f"chaos: triggered {runs}")
            loop = ChaosLoop(af, config, started)
            loop.start()
            states = _wait_for_runs(af, runs, loop, config.timeout, log)
            loop.stop.set()
            loop.join()
            wall = time.monotonic() - started
            for injector in injectors:
                injector.stop.set()
                injector.join()
            if loop.error is not None:
                problems.append(f"chaos loop failed: {type(loop.error).__name__}: {loop.error}")
            with contextlib.suppress(Exception):
                loop.supervise()  # the audits below read the servers; the components may be down
            figures = _figures(af, emu, runs, states, loop, wall, texts, config)
            batch_uncertain = _batch_uncertain_rows(s3) if states["batch"] != "success" else []
            uncertain, other_failures = _failed_tasks(af, runs, batch_uncertain)
            figures["uncertain_submits"] = {form: len(v) for form, v in uncertain.items() if v}
            in_flight = BATCH_MAX_ACTIVE_REQUESTS * figures["retries_used"].get("batch", 0)
            if len(uncertain.get("batch", ())) > in_flight:
                problems.append(f"batch: {len(uncertain['batch'])} uncertain submits, more than the {in_flight} "
                                "create calls its killed tries could have had in flight")  # fmt: skip
            for form, state in states.items():
                if state != "success" and (other_failures.get(form) or not uncertain.get(form)):
                    problems.append(f"{form} run ended {state}: {af._safe_describe(DAGS[form], runs[form])}")
                elif state != "success":
                    log(f"chaos: {form} failed only by uncertain submits (R5', by design): {uncertain[form]}")
            for form, counts in figures["creates_per_text"].items():
                allowed_missing = len(uncertain.get(form, ()))
                if any(int(n) > 1 for n in counts) or counts.get("0", 0) > allowed_missing:
                    problems.append(f"{form}: creates per text {counts} (exactly 1 for every text; 0 only for "
                                    f"{allowed_missing} uncertain submits)")  # fmt: skip
            problems += [f"storage host saw the key: {leak}" for leak in emu.storage_key_leaks()]
            emu.set_faults(rate=0.0)
            try:
                succeeded = {form for form, state in states.items() if state == "success"}
                figures["stored"] = check_storage(
                    s3, emu, texts, problems, succeeded, batch_uncertain if uncertain.get("batch") else ()
                )
            except Exception as exc:
                problems.append(f"storage check failed: {type(exc).__name__}: {exc}")
            pg_findings, pg_summary = audit_postgres(af, KEY, work / "airflow.sql")
            redis_findings, redis_keys = audit_redis(af, KEY)
            file_summary: dict[str, int] = {}
            file_findings = audit_deployment(af.home, KEY, summary=file_summary)
            problems += pg_findings + redis_findings + file_findings
            figures["key_audit"] = {"postgres": pg_summary, "redis_keys": redis_keys, "files": file_summary}
    figures["problems"] = problems
    return figures


def _failed_tasks(
    af: DistributedAirflow, runs: dict[str, str], batch_uncertain: Sequence[int] = ()
) -> tuple[dict[str, list[str]], dict[str, list[str]]]:
    """Failed task instances per form: those whose last try raised ``TtsSubmitUncertainError``, and the others.

    A worker killed while a create call is in flight leaves it unknown whether the vendor created (and
    billed) the task; neither vendor has an idempotency key or a way to look a task up by the caller's
    reference, so the retry refuses to send it again (R5') and the task fails for a human to look at: pay
    at most once wins over finishing. Those are counted apart; any other failure is a problem. The batch
    task says so per item (BA4): it counts as uncertain, one entry per row of ``batch_uncertain``, when
    those rows are its only failures (``TtsBatchItemsFailedPermanentlyError`` with ``max_failed_items=0``).
    """
    uncertain: dict[str, list[str]] = {}
    other: dict[str, list[str]] = {}
    for form, run_id in runs.items():
        for ti in af.task_instances(DAGS[form], run_id):
            if ti["state"] != "failed":
                continue
            name = f"{ti['task_id']}[{ti.get('map_index', -1)}]"
            folder = af.home / "logs" / f"dag_id={DAGS[form]}" / f"run_id={run_id}" / f"task_id={ti['task_id']}"
            if int(ti.get("map_index", -1)) >= 0:
                folder = folder / f"map_index={ti['map_index']}"
            log_file = folder / f"attempt={ti['try_number']}.log"
            text = log_file.read_text(errors="replace") if log_file.exists() else ""
            if "TtsSubmitUncertainError" in text:
                uncertain.setdefault(form, []).append(name)
            elif form == "batch" and batch_uncertain and "TtsBatchItemsFailedPermanentlyError" in text:
                uncertain.setdefault(form, []).extend(f"{name} row {index}" for index in batch_uncertain)
            else:
                other.setdefault(form, []).append(name)
    return uncertain, other


#: The batch's ``max_active_requests`` (given to ``chaos_dags``): a killed try leaves at most this many unanswered.
BATCH_MAX_ACTIVE_REQUESTS = 8
#: What the batch's manifest says of an item whose create call's answer was lost (in every ``uncertain_message``).
UNCERTAIN_ROW = "may have created (and billed) it"


def _batch_uncertain_rows(s3: Any) -> list[int]:
    """The failed batch's manifest rows that are uncertain submits, or none when any row failed otherwise.

    Empty too when there is no manifest (the batch failed before writing one): then its failure is a
    problem like any other.
    """
    try:
        lines = _get(s3, "batch/manifest.jsonl").decode().splitlines()
    except Exception:
        return []
    failed = [json.loads(line) for line in lines if line.strip()]
    failed = [row for row in failed if row.get("status") not in ("stored", "cached")]
    if any(UNCERTAIN_ROW not in str(row.get("error")) for row in failed):
        return []
    return [int(row["index"]) for row in failed]


def _wait_for_runs(
    af: DistributedAirflow, runs: dict[str, str], loop: ChaosLoop, timeout: float, log: Callable[[str], None]
) -> dict[str, str]:
    """Poll the runs until each ended; tolerate the API being down while PostgreSQL or a component restarts."""
    deadline = time.monotonic() + timeout
    states = dict.fromkeys(runs, "queued")
    last_report = 0.0
    while time.monotonic() < deadline:
        for form, run_id in runs.items():
            if states[form] in ("success", "failed"):
                continue
            with contextlib.suppress(Exception):
                states[form] = str(af.request("GET", f"/dags/{DAGS[form]}/dagRuns/{run_id}")["state"])
        if all(s in ("success", "failed") for s in states.values()):
            return states
        if loop.error is not None or not loop.is_alive():
            with contextlib.suppress(Exception):
                loop.supervise()
        if time.monotonic() - last_report > 60:
            last_report = time.monotonic()
            counts = {}
            for form, run_id in runs.items():
                with contextlib.suppress(Exception):
                    counts[form] = dict(Counter(str(ti["state"]) for ti in af.task_instances(DAGS[form], run_id)))
            log(f"chaos: {states} tasks {counts} kills {len(loop.kills)}")
        time.sleep(3)
    return states


def _figures(
    af: DistributedAirflow,
    emu: Emulator,
    runs: dict[str, str],
    states: dict[str, str],
    loop: ChaosLoop,
    wall: float,
    texts: dict[str, list[str]],
    config: ChaosConfig,
) -> dict[str, Any]:
    tries: dict[str, int] = {}
    retried: dict[str, int] = {}
    for form, run_id in runs.items():
        tis = af.task_instances(DAGS[form], run_id)
        tries[form] = sum(int(ti.get("try_number") or 1) for ti in tis)
        retried[form] = sum(max(0, int(ti.get("try_number") or 1) - 1) for ti in tis)
    stats = emu.stats()
    streams_ok: Counter[str] = Counter(emu.streams())
    stream_requests = int(stats["requests_by_endpoint"].get("stream", 0))
    creates = creates_per_text(emu, texts, streams_ok)
    return {
        "seed": config.seed,
        "texts": {form: len(t) for form, t in texts.items()},
        "faults": config.faults,
        "states": states,
        "wall_s": round(wall, 1),
        "kills": len(loop.kills),
        "kill_log": loop.kills,
        "server_restarts": loop.server_restarts,
        "supervisor_restarts": loop.self_exits,
        "creates_per_text": {form: {str(k): v for k, v in sorted(c.items())} for form, c in creates.items()},
        "stream_requests": stream_requests,
        "tries": tries,
        "retries_used": retried,
        "injected_faults": stats["faults_total"],
        "load_avg": [round(x, 1) for x in os.getloadavg()],
    }


def reliability_row(figures: dict[str, Any], command: str) -> str:
    """The figures as the text of a RELIABILITY.md figures cell."""
    t = figures["texts"]
    creates = "; ".join(f"{form} {c}" for form, c in figures["creates_per_text"].items())
    restarts = ", ".join(f"{name} at {at:.0f} s (down {down:.1f} s)" for at, name, down in figures["server_restarts"])
    return (
        f"{t['batch']} batch + {t['one-task']} one-task + {t['stream']} stream texts, {figures['faults']:.0%} faults: "
        f"{', '.join(f'{k} {v}' for k, v in figures['states'].items())} in {figures['wall_s']:.0f} s; "
        f"{figures['kills']} kills, {restarts}; supervisor restarts {figures['supervisor_restarts'] or 'none'}; "
        f"creates per text (creates: texts) {creates}; retries used {figures['retries_used']}; "
        f"load {figures['load_avg']}; seed {figures['seed']}; `{command}`"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    defaults = ChaosConfig()
    parser.add_argument("--batch", type=int, default=defaults.batch, help="texts of the one-task batch")
    parser.add_argument("--one-task", type=int, default=defaults.one_task, help="mapped one-task operators")
    parser.add_argument("--stream", type=int, default=defaults.stream, help="mapped /tts-stream texts")
    parser.add_argument("--faults", type=float, default=defaults.faults, help="share of vendor requests faulted")
    parser.add_argument("--kill-every", type=float, default=defaults.kill_every, help="seconds between kills")
    parser.add_argument("--max-kills", type=int, default=None, help="stop killing after this many")
    parser.add_argument("--postgres-at", type=float, default=defaults.postgres_at, help="s after trigger; <0: never")
    parser.add_argument("--redis-at", type=float, default=defaults.redis_at, help="s after trigger; <0: never")
    parser.add_argument("--seed", type=int, default=None, help="the chaos loop's seed (printed when not given)")
    parser.add_argument("--timeout", type=float, default=defaults.timeout, help="seconds before giving up")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures to this file")
    parser.add_argument("--keep", action="store_true", help="keep the deployment's folder (logs) and print it")
    args = parser.parse_args()
    config = ChaosConfig(
        batch=args.batch, one_task=args.one_task, stream=args.stream, faults=args.faults, kill_every=args.kill_every,
        max_kills=args.max_kills, postgres_at=args.postgres_at if args.postgres_at >= 0 else None,
        redis_at=args.redis_at if args.redis_at >= 0 else None, timeout=args.timeout,
        **({"seed": args.seed} if args.seed is not None else {}),
    )  # fmt: skip
    work = Path(tempfile.mkdtemp(prefix="tts-chaos-"))
    try:
        figures = run_chaos(config, work)
    finally:
        if args.keep:
            print(f"deployment folder kept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    command = " ".join(["tools/chaos.py", *sys.argv[1:]]) + f" --seed {config.seed}" * (args.seed is None)
    print(json.dumps(figures, default=str))
    print("RELIABILITY figures: " + reliability_row(figures, command))
    if args.json is not None:
        args.json.write_text(json.dumps(figures, indent=2, default=str))
    if figures["problems"]:
        print("PROBLEMS:\n" + "\n".join(f"- {p}" for p in figures["problems"]))
        sys.exit(1)
    print("chaos: every end check held")


if __name__ == "__main__":
    main()
