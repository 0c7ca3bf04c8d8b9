"""Run a real, multi-process Airflow 3 deployment on this machine and drive it through the REST API.

:class:`LocalAirflow` starts ``airflow scheduler``, ``airflow triggerer``, ``airflow dag-processor`` and
``airflow api-server`` as separate OS processes (SQLite metadata DB, ``LocalExecutor``) inside a private
``AIRFLOW_HOME``, waits until they are healthy and the DAG files are parsed, and talks to the deployment
only through the public REST API (``/api/v2``), exactly as an operator would::

    with LocalAirflow(tmp_path / "home", dags_folder, log=print) as af:
        af.wait_for_dag("my_dag")
        run_id = af.trigger("my_dag", conf={"x": 1})
        run = af.wait_for_run("my_dag", run_id, timeout=120)
        assert run["state"] == "success", af.describe_run("my_dag", run_id)

Design notes (see also ``environment()``):

* All configuration is passed through ``AIRFLOW__*`` environment variables; the generated secrets (JWT
  secret shared by every component, fernet key, api secret key) exist only in memory and in the
  children's environments. An *empty* ``airflow.cfg`` is created in the home so Airflow does not write
  its default config file (which would contain freshly generated secrets).
* REST authentication: the ``SimpleAuthManager`` runs with ``simple_auth_manager_all_admins=True``, so
  every request is an admin request and no token is needed. The API only listens on 127.0.0.1.
* Every component is started in its own session (``start_new_session``) with stdout+stderr going to
  ``<home>/logs/<component>-<n>.log`` (``n`` counts restarts), and carries a per-instance marker
  environment variable. :meth:`LocalAirflow.stop` sends SIGTERM to each component's main process (each
  shuts its own children down; the api-server goes last), SIGKILLs every remaining descendant (psutil)
  after a grace period, and finally sweeps for any process still in one of the components' sessions or
  carrying the marker (task processes move to their own process groups, so group signals are not enough).
* On Linux the components get ``PR_SET_PDEATHSIG=SIGTERM`` (when started from the main thread), so even
  if the controlling Python process is SIGKILLed they shut down instead of lingering.
* Every port is picked free at construction: the api-server (127.0.0.1) and the log servers of the
  scheduler (LocalExecutor) and triggerer (instead of the fixed 8793/8794), so deployments can run side by
  side.
* Child processes cache bytecode under ``$TMPDIR/local-airflow-<uid>/pycache`` and a freshly migrated DB
  is cached there too (see ``bytecode_cache``/``reuse_migrated_db``): a warm ``start()`` takes ~12 s on
  2 cores instead of ~30 s.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import ctypes
import hashlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import psutil
import requests

__all__ = ["COMPONENTS", "TERMINAL_RUN_STATES", "LocalAirflow", "LocalAirflowError"]

_LOG = logging.getLogger(__name__)

JSON = dict[str, Any]

#: Every component the harness knows how to start, in start order.
COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")

#: Dag run states after which nothing more will happen.
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

_COMMANDS: dict[str, tuple[str, ...]] = {
    "scheduler": ("scheduler",),
    "triggerer": ("triggerer",),
    "dag-processor": ("dag-processor",),
    "api-server": ("api-server",),
}

# component -> (key in /api/v2/monitor/health, heartbeat field)
_HEARTBEATS: dict[str, tuple[str, str]] = {
    "scheduler": ("scheduler", "latest_scheduler_heartbeat"),
    "triggerer": ("triggerer", "latest_triggerer_heartbeat"),
    "dag-processor": ("dag_processor", "latest_dag_processor_heartbeat"),
}

_INSTANCE_ENV = "LOCAL_AIRFLOW_INSTANCE_ID"
_SIMPLE_AUTH_MANAGER = "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
# Inherited variables that would make the children something other than the deployment we describe.
_BLOCKED_ENV_PREFIXES = ("AIRFLOW__", "_AIRFLOW", "PYTEST_")
_BLOCKED_ENV = frozenset({"AIRFLOW_HOME", "AIRFLOW_CONFIG"})
_PAGE = 100
# Components that are safe to SIGKILL early on stop, and whose graceful exit is known to dawdle:
# * api-server: stateless; after uvicorn's graceful shutdown (~0.1 s) CPython spends ~4 s CPU-bound finalizing.
# * triggerer: with a trigger still running, its trigger-runner subprocess sometimes takes the full 10 s
#   SIGINT escalation delay to be reaped (Airflow 3.3); triggers live in the DB and get adopted by the next
#   triggerer anyway.
_GRACE_CAPS = {"api-server": 1.5, "triggerer": 3.0}
_POLL = 0.5


class LocalAirflowError(RuntimeError):
    """The deployment failed to start, a component died, or a wait timed out (message has diagnostics)."""


class _Proc:
    """One OS process of one component."""

    def __init__(self, component: str, index: int, popen: subprocess.Popen[bytes], log_path: Path, fh: IO[bytes]):
        self.component = component
        self.index = index
        self.popen = popen
        self.log_path = log_path
        self.fh = fh
        self.started_at = datetime.now(UTC)
        self.expected_alive = True

    def running(self) -> bool:
        return self.popen.poll() is None


class LocalAirflow:
    """A real Airflow 3 deployment (separate scheduler/triggerer/dag-processor/api-server processes).

    :param home: private ``AIRFLOW_HOME`` (created; holds the SQLite DB, ``airflow.cfg`` and all logs).
    :param dags_folder: folder the ``dags-folder`` bundle (``LocalDagBundle``) reads.
    :param parallelism: ``[core] parallelism``, i.e. LocalExecutor worker slots.
    :param env: extra environment for every child, applied last (e.g. ``AIRFLOW_CONN_*`` connections or
        any ``AIRFLOW__SECTION__KEY`` override, including the harness defaults).
    :param log: progress callback (one line per call); defaults to this module's logger at INFO.
    :param components: which components :meth:`start` launches; ``api-server`` is mandatory because the
        harness talks to the deployment only over REST.
    :param stop_grace: seconds between SIGTERM and SIGKILL in :meth:`stop`.
    :param reuse_migrated_db: copy a freshly migrated, empty metadata DB cached per Airflow version (in
        ``$TMPDIR/local-airflow-<uid>/``; it holds no secrets) instead of running ``airflow db migrate``
        (~7 s) every time. A home that already has a DB is always migrated in place.
    :param bytecode_cache: let the children cache compiled bytecode in ``$TMPDIR/local-airflow-<uid>/pycache``
        (``PYTHONPYCACHEPREFIX``, overriding an inherited ``PYTHONDONTWRITEBYTECODE``). Without ``.pyc``
        files every Airflow process compiles its imports from source: ~4.5 s instead of ~1.6 s apiece.
    """

    def __init__(
        self,
        home: Path,
        dags_folder: Path,
        *,
        parallelism: int = 1,
        env: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        components: Iterable[str] = COMPONENTS,
        stop_grace: float = 10.0,
        reuse_migrated_db: bool = True,
        bytecode_cache: bool = True,
    ) -> None:
        self.components: tuple[str, ...] = tuple(components)
        unknown = sorted(set(self.components) - set(COMPONENTS))
        if unknown:
            raise ValueError(f"unknown components {unknown}; known: {COMPONENTS}")
        if "api-server" not in self.components:
            raise ValueError("the api-server component is required (the harness only talks REST)")
        if parallelism < 1:
            raise ValueError("parallelism must be >= 1")
        self.home = Path(home).resolve()
        self.dags_folder = Path(dags_folder).resolve()
        self.parallelism = parallelism
        self.stop_grace = stop_grace
        self.reuse_migrated_db = reuse_migrated_db
        self.bytecode_cache = bytecode_cache
        self._extra_env = dict(env or {})
        self._log = log or _LOG.info
        self.port = _free_port()
        self._log_ports = (_free_port(), _free_port())
        self.api_url = f"http://127.0.0.1:{self.port}"
        #: wall-clock seconds of notable steps (``migrate``, ``start``, ``run:<dag_id>/<run_id>``...)
        self.timings: dict[str, float] = {}
        self._instance_id = uuid.uuid4().hex
        self._jwt_secret = secrets.token_urlsafe(64)  # >= 64 bytes: no InsecureKeyLengthWarning
        self._api_secret = secrets.token_urlsafe(32)
        self._fernet_key = base64.urlsafe_b64encode(os.urandom(32)).decode()
        self._procs: dict[str, _Proc] = {}  # current process per component
        self._all_procs: list[_Proc] = []  # every process ever started (restarts included)
        self._counters: dict[str, int] = {}
        self._session = requests.Session()
        self._started = False

    # ------------------------------------------------------------------ lifecycle

    def environment(self) -> dict[str, str]:
        """The complete environment every child process gets (secrets included: keep it in memory)."""
        env = {k: v for k, v in os.environ.items() if not (k in _BLOCKED_ENV or k.startswith(_BLOCKED_ENV_PREFIXES))}
        bin_dir = str(Path(sys.executable).parent)
        env["PATH"] = os.pathsep.join([bin_dir, env.get("PATH", "")])
        if self.bytecode_cache:
            env.pop("PYTHONDONTWRITEBYTECODE", None)
            env["PYTHONPYCACHEPREFIX"] = str(_cache_dir() / "pycache")
        env.update(
            {
                "AIRFLOW_HOME": str(self.home),
                "AIRFLOW_CONFIG": str(self.home / "airflow.cfg"),
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{self.home / 'airflow.db'}",
                "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
                "AIRFLOW__CORE__PARALLELISM": str(self.parallelism),
                "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
                "AIRFLOW__CORE__DAGS_FOLDER": str(self.dags_folder),
                "AIRFLOW__CORE__FERNET_KEY": self._fernet_key,
                # REST without login: every caller is admin (the API binds to 127.0.0.1 only).
                "AIRFLOW__CORE__AUTH_MANAGER": _SIMPLE_AUTH_MANAGER,
                "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
                # Task processes (LocalExecutor) and the triggerer reach the Execution API on the api-server.
                "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.api_url}/execution/",
                # New versions of a rewritten DAG file become visible quickly (default 30 s).
                "AIRFLOW__CORE__MIN_SERIALIZED_DAG_UPDATE_INTERVAL": "2",
                "AIRFLOW__API__HOST": "127.0.0.1",
                "AIRFLOW__API__PORT": str(self.port),
                "AIRFLOW__API__BASE_URL": self.api_url,
                "AIRFLOW__API__WORKERS": "1",
                "AIRFLOW__API__SECRET_KEY": self._api_secret,
                # Tokens for task workloads are signed by the scheduler and checked by the api-server.
                "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret,
                # Airflow 3.0 signs an unset issuer as `"iss": []`, which PyJWT >= 2.10 refuses (every REST
                # call then fails with HTTP 500); 3.1 fixed it. A named issuer works on every minor.
                "AIRFLOW__API_AUTH__JWT_ISSUER": "local-airflow",
                # Fast DAG discovery: look for new files every 1-2 s, re-parse changed ones every 10 s.
                "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "2",
                "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "1",
                "AIRFLOW__DAG_PROCESSOR__MIN_FILE_PROCESS_INTERVAL": "10",
                "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_STORAGE_PATH": str(self.home / "dag_bundles"),
                "AIRFLOW__SCHEDULER__SCHEDULER_IDLE_SLEEP_TIME": "0.5",
                # A SIGKILLed triggerer's triggers are adopted by a new one after 10 s instead of 30 s.
                "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
                # The task supervisor only notices its task process has exited after a select() timeout of up
                # to this many seconds, holding the executor slot meanwhile (default 5 s per task!).
                "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "1",
                "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(self.home / "logs"),
                # Log servers of the LocalExecutor (scheduler) and the triggerer: free ports instead of the
                # fixed 8793/8794, so concurrent deployments don't clash.
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(self._log_ports[0]),
                "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(self._log_ports[1]),
                "AIRFLOW__LOGGING__COLORED_CONSOLE_LOG": "False",
                "PYTHONUNBUFFERED": "1",
                "NO_COLOR": "1",
                _INSTANCE_ENV: self._instance_id,
            }
        )
        env.update(self._extra_env)
        return env

    def start(self, timeout: float = 180.0, *, wait_for_parse: bool = True) -> None:
        """Migrate the DB, start the components and wait until the deployment is usable.

        Waits for the api-server, for a fresh heartbeat of every other component, and (``wait_for_parse``)
        until every file of the dags folder that Airflow's heuristic considers a DAG file (and that a root
        ``.airflowignore`` does not exclude) shows up as a DAG or as an import error. On any failure,
        including ``KeyboardInterrupt``, everything started so far is stopped before re-raising.
        """
        if self._started:
            raise LocalAirflowError("already started")
        self._started = True
        t0 = time.monotonic()
        deadline = t0 + timeout
        atexit.register(self.stop)
        try:
            self.home.mkdir(parents=True, exist_ok=True, mode=0o700)
            (self.home / "logs").mkdir(exist_ok=True)
            # An existing (even empty) airflow.cfg stops Airflow from writing its defaults + fresh secrets.
            (self.home / "airflow.cfg").touch(exist_ok=True)
            self.dags_folder.mkdir(parents=True, exist_ok=True)
            self._log(f"local-airflow: home={self.home} api={self.api_url} parallelism={self.parallelism}")
            self._prepare_db(deadline)
            self.timings["migrate"] = time.monotonic() - t0
            for component in self.components:
                self._spawn(component)
            self._wait_healthy(self.components, deadline)
            if wait_for_parse:
                self._wait_parsed(deadline)
        except BaseException:
            self.stop()
            raise
        self.timings["start"] = time.monotonic() - t0
        self._log(f"local-airflow: ready in {self.timings['start']:.1f}s")

    def stop(self, grace: float | None = None) -> None:
        """Stop every process this deployment started (SIGTERM, then SIGKILL after ``grace``). Idempotent.

        The api-server goes last: running tasks and the triggerer's runner talk to its Execution API while
        they shut down (with the api-server gone they sit in HTTP retries until SIGKILLed).
        """
        grace = self.stop_grace if grace is None else grace
        procs = list(self._all_procs)
        alive = [p for p in procs if p.running()]
        t0 = time.monotonic()
        # uvicorn's graceful shutdown waits for open keep-alive connections: drop ours first.
        self._session.close()
        try:
            if alive:
                self._log(f"local-airflow: stopping {', '.join(p.component for p in alive)}")
                self._terminate([p for p in alive if p.component != "api-server"], grace)
                self._terminate([p for p in alive if p.component == "api-server"], grace)
        finally:
            leftovers = self.processes()
            if leftovers:
                self._log(f"local-airflow: killing {len(leftovers)} leftover process(es)")
                _signal_all(leftovers, signal.SIGKILL)
                psutil.wait_procs(leftovers, timeout=5)
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=5)
                p.fh.close()
            atexit.unregister(self.stop)
            if alive:
                self.timings["stop"] = time.monotonic() - t0
                self._log(f"local-airflow: stopped in {self.timings['stop']:.1f}s")

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ components

    def kill(self, component: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a component, e.g. to simulate a crash.

        SIGKILL goes to the component's whole process tree (its process group and every descendant: for
        the scheduler that includes the LocalExecutor workers and their task processes, for the triggerer
        its trigger-runner subprocess), like losing the machine or container; returns once all are dead.
        Any other signal goes to the component's main process only, as an orchestrator would deliver it.
        The component is then considered intentionally down (see :meth:`restart`).
        """
        proc = self._require(component)
        proc.expected_alive = False
        if sig != signal.SIGKILL:
            if proc.running():
                proc.popen.send_signal(sig)
        else:
            tree = _tree(proc)
            if proc.running():
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.popen.pid, sig)
            _signal_all(tree, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.popen.wait(timeout=10)
            psutil.wait_procs(tree[1:], timeout=10)
        self._log(f"local-airflow: sent {signal.Signals(sig).name} to {component} (pid {proc.popen.pid})")

    def restart(self, component: str, timeout: float = 120.0) -> None:
        """Start a new process of ``component`` (stopping a still-running old one first) and wait until healthy."""
        self.command(component)  # raises ValueError for an unknown component
        old = self._procs.get(component)
        if old is not None and old.running():
            old.expected_alive = False
            self._terminate([old], self.stop_grace)
        deadline = time.monotonic() + timeout
        self._spawn(component)
        self._wait_healthy((component,), deadline)
        self._log(f"local-airflow: {component} restarted (pid {self.pid(component)})")

    def command(self, component: str) -> tuple[str, ...]:
        """The ``airflow`` sub-command that runs ``component`` (a hook: subclasses add components)."""
        try:
            return _COMMANDS[component]
        except KeyError:
            raise ValueError(f"unknown component {component!r}") from None

    def component_environment(self, component: str) -> dict[str, str]:
        """The environment of one component's process (a hook: subclasses vary it per process)."""
        return self.environment()

    def pid(self, component: str) -> int:
        """PID of the current process of ``component``."""
        return self._require(component).popen.pid

    def component_log(self, component: str, index: int | None = None) -> str:
        """Output of the current (or the ``index``-th, 1-based) process of ``component``."""
        n = index if index is not None else self._require(component).index
        path = self.home / "logs" / f"{component}-{n}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def processes(self) -> list[psutil.Process]:
        """Every live process of this deployment, including orphans that left the process tree.

        A process is ours if it lives in the session of a component we started (task processes create
        their own process group but keep the session) or carries this instance's marker environment
        variable (``setproctitle``, used by the api-server and executor workers, garbles
        ``/proc/<pid>/environ``, hence both checks).
        """
        sessions = {p.popen.pid: p.started_at.timestamp() - 5 for p in self._all_procs}
        found: list[psutil.Process] = []
        me = os.getpid()
        for proc in psutil.process_iter():
            if proc.pid == me or not _alive(proc):
                continue
            try:
                sid = os.getsid(proc.pid)
                in_session = sid in sessions and proc.create_time() >= sessions[sid]
                if in_session or proc.environ().get(_INSTANCE_ENV) == self._instance_id:
                    found.append(proc)
            except (psutil.Error, OSError):
                continue
        return found

    def run_cli(self, *args: str, timeout: float = 120.0, name: str = "cli") -> str:
        """Run ``airflow <args>`` against this deployment; return its output, raise with it on failure."""
        path = self.home / "logs" / f"{name}.log"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("ab") as fh:
            start = fh.tell()
            popen = subprocess.Popen(
                [*_airflow_cmd(), *args],
                env=self.environment(),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                rc = popen.wait(timeout=timeout)
            except BaseException:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(popen.pid, signal.SIGKILL)
                popen.wait()
                raise
        with path.open("rb") as fh:
            fh.seek(start)
            output = fh.read().decode(errors="replace")
        if rc != 0:
            raise LocalAirflowError(f"`airflow {' '.join(args)}` exited with {rc}:\n{_tail(output, 60)}")
        return output

    # ------------------------------------------------------------------ REST

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        ok: Iterable[int] = (200,),
        timeout: float = 30.0,
    ) -> Any:
        """Call ``/api/v2<path>``; return the decoded JSON, raise :class:`LocalAirflowError` otherwise."""
        url = f"{self.api_url}/api/v2{path}"
        try:
            resp = self._session.request(
                method,
                url,
                params=dict(params or {}),
                json=json_body,
                timeout=timeout,
                headers={"Accept": "application/json"},
            )
        except requests.RequestException as exc:
            raise LocalAirflowError(f"{method} {path} failed: {exc}") from exc
        if resp.status_code not in set(ok):
            raise LocalAirflowError(f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:2000]}")
        return resp.json() if resp.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120.0, *, unpause: bool = True) -> JSON:
        """Wait until ``dag_id`` is parsed and visible over REST, unpause it, and return its JSON.

        Fails early (instead of at the timeout) when all DAG files have been processed and one that mentions
        ``dag_id`` has an import error.
        """
        deadline = time.monotonic() + timeout
        t0 = time.monotonic()
        while True:
            self._check_alive()
            dag = self._try_get(f"/dags/{_q(dag_id)}")
            if dag is not None and not dag.get("is_stale"):
                if unpause and dag.get("is_paused"):
                    dag = self.request("PATCH", f"/dags/{_q(dag_id)}", json_body={"is_paused": False})
                self._log(f"local-airflow: dag {dag_id} ready after {time.monotonic() - t0:.1f}s")
                return dict(dag)
            # Fail fast if every DAG file has been processed and one that mentions dag_id failed to import.
            missing, errors = self._parse_status()
            if not missing:
                for err in errors:
                    if dag_id in self._dag_file_text(str(err.get("filename", ""))):
                        raise LocalAirflowError(
                            f"DAG {dag_id!r}: import error in {err.get('filename')}:\n{err.get('stack_trace')}"
                        )
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"DAG {dag_id!r} not visible after {timeout:.0f}s.\n{_format_import_errors(errors)}\n"
                    + self._component_tails(("dag-processor",))
                )
            time.sleep(_POLL)

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None, run_id: str | None = None) -> str:
        """Create a manual dag run (``logical_date`` null) and return its ``dag_run_id``."""
        body: JSON = {"logical_date": None, "conf": dict(conf or {})}
        if run_id is not None:
            body["dag_run_id"] = run_id
        run = self.request("POST", f"/dags/{_q(dag_id)}/dagRuns", json_body=body)
        new_id = str(run["dag_run_id"])
        self._log(f"local-airflow: triggered {dag_id} run {new_id}")
        return new_id

    def wait_for_run(
        self,
        dag_id: str,
        run_id: str,
        timeout: float,
        on_poll: Callable[[JSON], None] | None = None,
        *,
        poll_interval: float = _POLL,
        log_tasks: bool = False,
    ) -> JSON:
        """Poll until the run is ``success``/``failed`` and return its JSON (the caller judges the state).

        ``on_poll`` gets the dag run JSON on every poll; ``log_tasks`` also reports every change of the task
        state counts through the ``log`` callback (progress output for long runs). Raises
        :class:`LocalAirflowError` with task states, task log tails and component log tails on timeout, or
        as soon as a component dies unexpectedly.
        """
        t0 = time.monotonic()
        deadline = t0 + timeout
        last_state: str | None = None
        last_tasks = ""
        while True:
            try:
                self._check_alive()
            except LocalAirflowError as exc:
                raise LocalAirflowError(f"{exc}\n{self._safe_describe(dag_id, run_id)}") from None
            run = self._try_get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")
            if run is not None:
                if on_poll is not None:
                    on_poll(run)
                state = str(run.get("state"))
                if state != last_state:
                    self._log(f"local-airflow: {dag_id} {run_id}: {state} (+{time.monotonic() - t0:.1f}s)")
                    last_state = state
                if log_tasks:
                    with contextlib.suppress(LocalAirflowError):
                        tasks = _summarise_states(self.task_instances(dag_id, run_id))
                        if tasks != last_tasks:
                            self._log(f"local-airflow: {dag_id} tasks: {tasks} (+{time.monotonic() - t0:.1f}s)")
                            last_tasks = tasks
                if state in TERMINAL_RUN_STATES:
                    self.timings[f"run:{dag_id}/{run_id}"] = time.monotonic() - t0
                    return dict(run)
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"run {dag_id}/{run_id} not finished after {timeout:.0f}s (state {last_state}).\n"
                    + self._safe_describe(dag_id, run_id)
                )
            time.sleep(poll_interval)

    def task_instances(self, dag_id: str, run_id: str) -> list[JSON]:
        """All task instances of the run, mapped ones included (one per map index), sorted by task and index."""
        tis = self._get_all(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances", "task_instances")
        return sorted(tis, key=lambda ti: (str(ti.get("task_id")), int(ti.get("map_index", -1))))

    def task_log(self, dag_id: str, run_id: str, task_id: str, try_number: int = 1, map_index: int = -1) -> str:
        """The task's log (including trigger log lines) for ``try_number``, rendered as plain text lines."""
        path = f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/logs/{try_number}"
        params: dict[str, Any] = {"full_content": "true", "map_index": map_index}
        lines: list[str] = []
        for _ in range(20):
            page = self.request("GET", path, params=params)
            content = page.get("content") or []
            lines.extend(_format_log_entry(entry) for entry in content)
            token = page.get("continuation_token")
            if not token or not content:
                break
            params["token"] = token
        return "\n".join(lines)

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value", map_index: int = -1) -> Any:
        """The (JSON-decoded) value of one XCom entry."""
        entry = self.request(
            "GET",
            f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}/taskInstances/{_q(task_id)}/xcomEntries/{_q(key)}",
            params={"map_index": map_index},
        )
        return entry.get("value")

    def import_errors(self) -> list[JSON]:
        """Current DAG import errors (``filename``, ``stack_trace``...)."""
        return self._get_all("/importErrors", "import_errors")

    def describe_run(self, dag_id: str, run_id: str, *, log_lines: int = 30, max_logs_per_task: int = 3) -> str:
        """Human-readable diagnosis of a run: task states, log tails of unsuccessful tasks, component log tails."""
        out: list[str] = []
        run = self._try_get(f"/dags/{_q(dag_id)}/dagRuns/{_q(run_id)}")
        dag = self._try_get(f"/dags/{_q(dag_id)}")
        out.append(
            f"dag run {dag_id}/{run_id}: state={run and run.get('state')} dag is_paused={dag and dag.get('is_paused')}"
        )
        by_task: dict[str, list[JSON]] = {}
        for ti in self.task_instances(dag_id, run_id):
            by_task.setdefault(str(ti["task_id"]), []).append(ti)
        for task_id, tis in by_task.items():
            if len(tis) > 1 or int(tis[0].get("map_index", -1)) >= 0:
                out.append(f"  {task_id}: {len(tis)} mapped instances, {_summarise_states(tis)}")
            unsuccessful = [ti for ti in tis if ti.get("state") != "success"]
            for ti in unsuccessful if len(tis) == 1 else unsuccessful[:max_logs_per_task]:
                index = int(ti.get("map_index", -1))
                label = task_id + (f"[{index}]" if index >= 0 else "")
                out.append(f"  {label}: {ti.get('state')} (try {ti.get('try_number')})")
                if int(ti.get("try_number") or 0) > 0:
                    with contextlib.suppress(Exception):
                        text = self.task_log(dag_id, run_id, task_id, int(ti["try_number"]), index)
                        out.append(_indent(_tail(text, log_lines), "    | "))
            if len(tis) == 1 and not unsuccessful:
                out.append(f"  {task_id}: success (try {tis[0].get('try_number')})")
        errors = self._import_errors_or_empty()
        if errors:
            out.append(_format_import_errors(errors))
        out.append(self._component_tails(tuple(self._procs)))
        return "\n".join(out)

    # ------------------------------------------------------------------ internals

    def _prepare_db(self, deadline: float) -> None:
        db = self.home / "airflow.db"
        template = self._db_template() if self.reuse_migrated_db else None
        fresh = not db.exists()
        if fresh and template is not None and template.exists():
            shutil.copyfile(template, db)
            self._log(f"local-airflow: db copied from migrated template {template}")
            return
        t0 = time.monotonic()
        self.run_cli("db", "migrate", timeout=max(1.0, deadline - time.monotonic()), name="db-migrate")
        self._log(f"local-airflow: db migrated in {time.monotonic() - t0:.1f}s")
        if fresh and template is not None:
            partial = template.with_name(f"{template.name}.{uuid.uuid4().hex}.tmp")
            try:
                # The backup API gives a consistent single-file copy even if a WAL file is around.
                with (
                    contextlib.closing(sqlite3.connect(db)) as src,
                    contextlib.closing(sqlite3.connect(partial)) as dst,
                ):
                    src.backup(dst)
                os.replace(partial, template)  # atomic: concurrent harnesses never see half a file
            finally:
                partial.unlink(missing_ok=True)

    def _db_template(self) -> Path:
        """Cache key: installed Airflow distributions plus any ``AIRFLOW__*`` overrides given by the caller."""
        key = sorted(
            (d.metadata["Name"] or "", d.version)
            for d in importlib.metadata.distributions()
            if (d.metadata["Name"] or "").lower().startswith("apache-airflow")
        )
        overrides = sorted((k, v) for k, v in self._extra_env.items() if k.startswith("AIRFLOW__"))
        digest = hashlib.sha256(json.dumps([key, overrides]).encode()).hexdigest()[:16]
        return _cache_dir() / f"migrated-{digest}.db"

    def _spawn(self, component: str) -> _Proc:
        n = self._counters.get(component, 0) + 1
        self._counters[component] = n
        log_path = self.home / "logs" / f"{component}-{n}.log"
        fh = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                [*_airflow_cmd(), *self.command(component)],
                env=self.component_environment(component),
                cwd=self.home,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_parent_death_signal(),
            )
        except BaseException:
            fh.close()
            raise
        proc = _Proc(component, n, popen, log_path, fh)
        self._procs[component] = proc
        self._all_procs.append(proc)
        self._log(f"local-airflow: started {component} pid={popen.pid} log={log_path.name}")
        return proc

    def _require(self, component: str) -> _Proc:
        try:
            return self._procs[component]
        except KeyError:
            raise LocalAirflowError(f"component {component!r} was never started") from None

    def _check_alive(self) -> None:
        for p in self._procs.values():
            if p.expected_alive and not p.running():
                p.expected_alive = False
                raise LocalAirflowError(
                    f"{p.component} (pid {p.popen.pid}) exited with code {p.popen.returncode}; "
                    f"{p.log_path}:\n{_tail(self.component_log(p.component), 40)}"
                )

    def _terminate(self, procs: list[_Proc], grace: float) -> None:
        if not procs:
            return
        descendants = [d for p in procs for d in _tree(p)[1:]]
        t0 = time.monotonic()
        for p in procs:
            p.expected_alive = False
            # Only the main process: each component shuts its own children down in order. Signalling the
            # whole group makes e.g. the triggerer's runner stop on its own, and the triggerer then waits
            # out a 10 s escalation delay for it.
            if p.running():
                p.popen.send_signal(signal.SIGTERM)
        try:
            # Roots are reaped through Popen (keeps their exit codes); descendants are watched with psutil.
            while True:
                elapsed = time.monotonic() - t0
                running = [p for p in procs if p.running()]
                if not running and not any(_alive(d) for d in descendants):
                    return
                if elapsed >= grace:
                    break
                for p in running:
                    if elapsed >= min(grace, _GRACE_CAPS.get(p.component, grace)):
                        _signal_all(_tree(p), signal.SIGKILL)
                time.sleep(0.1)
        finally:
            # After the grace period, or at once on KeyboardInterrupt: SIGKILL whatever is left, including
            # children spawned meanwhile.
            survivors = [d for d in descendants if _alive(d)]
            for p in procs:
                if p.running():
                    survivors.extend(_tree(p))
            if survivors:
                names = ", ".join(f"{_name(d)}[{d.pid}]" for d in survivors)
                self._log(f"local-airflow: still alive {time.monotonic() - t0:.1f}s after SIGTERM, SIGKILL: {names}")
                _signal_all(survivors, signal.SIGKILL)
            for p in procs:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.popen.wait(timeout=5)
            roots = {p.popen.pid for p in procs}
            psutil.wait_procs([d for d in survivors if d.pid not in roots], timeout=5)

    def _try_get(self, path: str, params: Mapping[str, Any] | None = None) -> Any:
        """GET that returns None on 404 and on transient trouble (connection refused, 5xx, timeouts)."""
        try:
            resp = self._session.get(f"{self.api_url}/api/v2{path}", params=dict(params or {}), timeout=15)
        except requests.RequestException:
            return None
        if resp.status_code != 200:
            return None
        try:
            return resp.json()
        except ValueError:
            return None

    def _get_all(self, path: str, key: str) -> list[JSON]:
        items: list[JSON] = []
        while True:
            page = self.request("GET", path, params={"limit": _PAGE, "offset": len(items)})
            batch = list(page.get(key) or [])
            items.extend(batch)
            if not batch or len(items) >= int(page.get("total_entries", 0)):
                return items

    def _import_errors_or_empty(self) -> list[JSON]:
        try:
            return self.import_errors()
        except LocalAirflowError:
            return []

    def _wait_healthy(self, components: Iterable[str], deadline: float) -> None:
        pending = set(components)
        while pending:
            self._check_alive()
            health = self._try_get("/monitor/health")
            if health is not None:
                for component in list(pending):
                    if component == "api-server":
                        self._warm_up_execution_api()
                        pending.discard(component)
                        self._log(f"local-airflow: api-server up on {self.api_url}")
                        continue
                    key, field = _HEARTBEATS[component]
                    info = health.get(key) or {}
                    beat = _parse_time(info.get(field))
                    started = self._procs[component].started_at
                    if (
                        info.get("status") == "healthy"
                        and beat is not None
                        and beat.timestamp() >= started.timestamp() - 1
                    ):
                        pending.discard(component)
                        self._log(f"local-airflow: {component} healthy")
            if not pending:
                return
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"not healthy in time: {sorted(pending)}; last /monitor/health: {json.dumps(health)}\n"
                    + self._component_tails((*pending, "api-server"))
                )
            time.sleep(_POLL)

    def _warm_up_execution_api(self) -> None:
        """Check the Execution API (which tasks and the triggerer use) and pay its lazy set-up cost now.

        The first request to ``/execution/`` takes ~3 s (versioned routes are built lazily); without this the
        first task of the first run would pay it. ``/health/ping`` also reports whether JWT validation works.
        """
        resp = self._session.get(f"{self.api_url}/execution/health/ping", timeout=60)
        body = resp.json() if resp.ok else {}
        if not resp.ok or body.get("failing"):
            raise LocalAirflowError(f"Execution API unhealthy: HTTP {resp.status_code} {resp.text[:1000]}")

    def _parse_status(self) -> tuple[list[Path], list[JSON]]:
        """(DAG files not yet reported as a DAG or an import error, current import errors)."""
        candidates = _candidate_dag_files(self.dags_folder)
        seen: set[str] = set()
        try:
            for dag in self._get_all("/dags", "dags"):
                seen.update(str(dag.get(k)) for k in ("fileloc", "relative_fileloc"))
            errors = self.import_errors()
        except LocalAirflowError:
            return candidates, []
        seen.update(self._normalise_error_filename(str(e.get("filename"))) for e in errors)
        rel = self.dags_folder
        return [f for f in candidates if str(f) not in seen and f.relative_to(rel).as_posix() not in seen], errors

    def _wait_parsed(self, deadline: float) -> None:
        if "dag-processor" not in self._procs:
            return
        while True:
            self._check_alive()
            missing, errors = self._parse_status()
            if not missing:
                count = len(_candidate_dag_files(self.dags_folder))
                self._log(f"local-airflow: dags folder parsed ({count} file(s), {len(errors)} import error(s))")
                for err in errors:
                    self._log(f"local-airflow: import error in {err.get('filename')}:\n{err.get('stack_trace')}")
                return
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    "the dag-processor did not report these files as DAGs or import errors in time "
                    f"(if they hold no DAG, list them in {self.dags_folder / '.airflowignore'} "
                    f"or start(wait_for_parse=False)): {[str(m) for m in missing]}\n"
                    + self._component_tails(("dag-processor",))
                )
            time.sleep(_POLL)

    def _normalise_error_filename(self, filename: str) -> str:
        path = Path(filename)
        return str(path if path.is_absolute() else self.dags_folder / path)

    def _dag_file_text(self, filename: str) -> str:
        path = Path(self._normalise_error_filename(filename))
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def _component_tails(self, components: Iterable[str], lines: int = 25) -> str:
        parts = []
        for component in dict.fromkeys(components):
            if component in self._procs:
                p = self._procs[component]
                state = "running" if p.running() else f"exited {p.popen.returncode}"
                parts.append(f"--- {p.log_path.name} ({state}) ---\n{_tail(self.component_log(component), lines)}")
        return "\n".join(parts)

    def _safe_describe(self, dag_id: str, run_id: str) -> str:
        try:
            return self.describe_run(dag_id, run_id)
        except Exception as exc:  # the API itself may be what broke
            return f"(could not describe run: {exc})\n{self._component_tails(tuple(self._procs))}"


# ---------------------------------------------------------------------- helpers


def _cache_dir() -> Path:
    """Per-user cache shared by all harness instances (migrated DB template, bytecode); no secrets in it."""
    path = Path(tempfile.gettempdir()) / f"local-airflow-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _airflow_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "airflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the spawning thread dies (main thread only)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return preexec


def _tree(proc: _Proc) -> list[psutil.Process]:
    try:
        root = psutil.Process(proc.popen.pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running()) and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80] or str(p.name())
    except psutil.Error:
        return "?"


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.send_signal(sig)


def _candidate_dag_files(folder: Path) -> list[Path]:
    """Files Airflow's default heuristic would parse (mentions "airflow" and "dag"/"asset")."""
    ignore = _ignore_spec(folder)
    found: list[Path] = []
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and d != "__pycache__")
        for name in sorted(files):
            path = Path(root) / name
            rel = path.relative_to(folder).as_posix()
            if not name.endswith(".py") or (ignore is not None and ignore(rel)):
                continue
            try:
                content = path.read_bytes().lower()
            except OSError:
                continue
            if b"airflow" in content and (b"dag" in content or b"asset" in content):
                found.append(path)
    return found


def _ignore_spec(folder: Path) -> Callable[[str], bool] | None:
    ignore_file = folder / ".airflowignore"
    if not ignore_file.is_file():
        return None
    try:
        import pathspec  # a dependency of Airflow itself
    except ImportError:  # pragma: no cover
        return None
    lines = [line.split("#", 1)[0].strip() for line in ignore_file.read_text().splitlines()]
    spec = pathspec.PathSpec.from_lines("gitwildmatch", [line for line in lines if line])
    return lambda rel: bool(spec.match_file(rel))


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


_LOG_KEYS_HIDDEN = frozenset(
    {"timestamp", "level", "event", "logger", "filename", "lineno"}
    | {"dag_id", "run_id", "task_id", "map_index", "try_number", "ti_id"}
)


def _format_log_entry(entry: Any) -> str:
    """One structured task-log entry as ``<timestamp> [<level>] <event> key=value...``."""
    if not isinstance(entry, dict):
        return str(entry)
    parts = [str(entry["timestamp"])] if entry.get("timestamp") else []
    if entry.get("level"):
        parts.append(f"[{entry['level']}]")
    parts.append(str(entry.get("event", "")))
    parts.extend(
        f"{k}={v if isinstance(v, str) else json.dumps(v, default=str)}"
        for k, v in entry.items()
        if k not in _LOG_KEYS_HIDDEN and k != "error_detail"
    )
    if "error_detail" in entry:
        parts.append(_format_error_detail(entry["error_detail"]))
    return " ".join(parts)


def _summarise_states(tis: Iterable[JSON]) -> str:
    counts: dict[str, int] = {}
    for ti in tis:
        state = str(ti.get("state") or "none")
        counts[state] = counts.get(state, 0) + 1
    return ", ".join(f"{n} {state}" for state, n in sorted(counts.items())) or "no task instances"


def _format_error_detail(detail: Any) -> str:
    """Render the structured exception of a task-log entry like a (shortened) Python traceback."""
    if not isinstance(detail, list):
        return json.dumps(detail, default=str)
    parts = []
    for exc in detail:
        if not isinstance(exc, dict):
            parts.append(str(exc))
            continue
        frames = [f for f in exc.get("frames") or [] if isinstance(f, dict)][-4:]
        parts.extend(f"\n    File {f.get('filename')}:{f.get('lineno')} in {f.get('name')}" for f in frames)
        parts.append(f"\n  {exc.get('exc_type')}: {exc.get('exc_value')}")
    return "".join(parts)


def _format_import_errors(errors: list[JSON]) -> str:
    if not errors:
        return "no import errors"
    return "\n".join(
        f"import error in {e.get('filename')}:\n{_indent(str(e.get('stack_trace')), '  ')}" for e in errors
    )


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


def _indent(text: str, prefix: str) -> str:
    return "\n".join(prefix + line for line in text.splitlines())


def _q(segment: str) -> str:
    return quote(segment, safe="")
