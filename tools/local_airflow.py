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
  is cached there too (see ``bytecode_cache``/``reuse_migrated_db``): a warm ``start()`` neither migrates
  a database nor compiles Airflow's imports from source.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import secrets
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import TracebackType

import psutil
import requests

from tools.airflow_processes import (
    _airflow_cmd,
    _alive,
    _cache_dir,
    _free_port,
    _name,
    _parent_death_signal,
    _Proc,
    _signal_all,
    _tree,
)
from tools.airflow_rest import (
    _POLL,
    JSON,
    TERMINAL_RUN_STATES,
    AirflowRestClient,
    LocalAirflowError,
    _candidate_dag_files,
    _parse_time,
    _tail,
)

__all__ = ["COMPONENTS", "JSON", "TERMINAL_RUN_STATES", "AirflowRestClient", "LocalAirflow", "LocalAirflowError"]

_LOG = logging.getLogger(__name__)

#: Every component the harness knows how to start, in start order.
COMPONENTS: tuple[str, ...] = ("api-server", "scheduler", "dag-processor", "triggerer")

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
# Components that are safe to SIGKILL early on stop, and whose graceful exit is known to dawdle:
# * api-server: stateless; after uvicorn's graceful shutdown CPython spends seconds CPU-bound finalizing.
# * triggerer: with a trigger still running, its trigger-runner subprocess sometimes takes the full 10 s
#   SIGINT escalation delay to be reaped (Airflow 3.3); triggers live in the DB and get adopted by the next
#   triggerer anyway.
_GRACE_CAPS = {"api-server": 1.5, "triggerer": 3.0}


class LocalAirflow(AirflowRestClient):
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
        (seconds of CPU) every time. A home that already has a DB is always migrated in place.
    :param bytecode_cache: let the children cache compiled bytecode in ``$TMPDIR/local-airflow-<uid>/pycache``
        (``PYTHONPYCACHEPREFIX``, overriding an inherited ``PYTHONDONTWRITEBYTECODE``). Without ``.pyc``
        files every Airflow process compiles its imports from source, which costs each several times its
        import time.
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

    def _authenticate(self) -> None:
        """Send an admin token with every REST call where all-admins mode still wants one.

        With ``simple_auth_manager_all_admins`` Airflow 3.2+ (and 3.0.1-3.0.6) treat a request without
        a token as an admin's; 3.0.0 and 3.1 answer 401 and instead hand out an admin token, without
        credentials, at ``/auth/token``. The token is asked for only after such a 401.
        """
        probe = self._session.get(f"{self.api_url}/api/v2/dags", params={"limit": 1}, timeout=15)
        if probe.status_code != 401:
            return
        resp = self._session.get(f"{self.api_url}/auth/token", timeout=15)
        if resp.status_code not in (200, 201):
            raise LocalAirflowError(f"REST API wants a token and /auth/token answered {resp.status_code}")
        self._session.headers["Authorization"] = f"Bearer {resp.json()['access_token']}"

    def _wait_healthy(self, components: Iterable[str], deadline: float) -> None:
        pending = set(components)
        while pending:
            self._check_alive()
            health = self._try_get("/monitor/health")
            if health is not None:
                for component in list(pending):
                    if component == "api-server":
                        self._warm_up_execution_api()
                        self._authenticate()
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

        The first request to ``/execution/`` is slow (versioned routes are built lazily); without this the
        first task of the first run would pay for it. ``/health/ping`` also reports whether JWT validation works.
        """
        resp = self._session.get(f"{self.api_url}/execution/health/ping", timeout=60)
        body = resp.json() if resp.ok else {}
        if not resp.ok or body.get("failing"):
            raise LocalAirflowError(f"Execution API unhealthy: HTTP {resp.status_code} {resp.text[:1000]}")

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

    def _component_tails(self, components: Iterable[str], lines: int = 25) -> str:
        parts = []
        for component in dict.fromkeys(components):
            if component in self._procs:
                p = self._procs[component]
                state = "running" if p.running() else f"exited {p.popen.returncode}"
                parts.append(f"--- {p.log_path.name} ({state}) ---\n{_tail(self.component_log(component), lines)}")
        return "\n".join(parts)
