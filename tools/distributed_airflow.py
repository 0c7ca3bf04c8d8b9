"""Run Airflow 3's distributed engine on this machine: PostgreSQL, Redis, CeleryExecutor, two workers, two triggerers.

:class:`DistributedAirflow` is a :class:`~tools.local_airflow.LocalAirflow` whose metadata DB is a private
PostgreSQL server and whose executor is the ``CeleryExecutor`` with a private Redis as its broker. Besides
the api-server, scheduler and dag-processor it starts ``workers`` Celery workers and ``triggerers``
triggerers, each a separate process tree, as a real deployment spreads them over hosts::

    with DistributedAirflow(tmp_path, dags_folder, env=connections, log=print) as af:
        af.wait_for_dag("my_dag")
        run_id = af.trigger("my_dag")
        af.kill("worker-1")            # SIGKILL one Celery worker's whole process tree
        af.wait_for_run("my_dag", run_id, timeout=300)

Everything about process handling (spawning in own sessions, SIGTERM/SIGKILL on stop, ``kill``, the REST
helpers) is :class:`LocalAirflow`'s; this class adds the two servers and the extra components.

Design notes:

* Component names: ``api-server``, ``scheduler``, ``dag-processor``, ``triggerer-1`` .. ``triggerer-N``,
  ``worker-1`` .. ``worker-N``. Each process reports its component name as its host name (``[core]
  hostname_callable`` = :func:`component_hostname`), so ``task_instance.hostname`` says which worker ran a
  try and ``job.hostname`` which triggerer a job is: on several hosts that is what the real names do.
  Celery workers get ``--celery-hostname worker-N@%h`` and consume the ``default`` queue plus a queue named
  after themselves (a per-host queue, as Airflow deployments route host-pinned work).
* Every process has its own log-server port (the workers' and triggerers' ``serve-logs`` would clash on
  8793/8794 on one host); all write into one ``base_log_folder``, which plays the shared log volume.
* PostgreSQL runs from Debian's binaries (``/usr/lib/postgresql/<v>/bin``) on a data directory created with
  ``initdb`` for this instance only, ``trust`` authentication, listening on 127.0.0.1 and a free port. As
  root it runs as the ``postgres`` user (PostgreSQL refuses root); its data directory then lives in a
  ``mkdtemp`` directory owned by that user, because a pytest ``tmp_path`` is not traversable by it. Durability
  is switched off (``fsync=off``): the cluster is thrown away afterwards and a test should not wait on disk
  flushes. ``pg_stat_statements`` is loaded so benchmarks can count queries.
* Redis runs without persistence (no RDB, no AOF) on 127.0.0.1 and a free port.
* The Celery result backend is the same PostgreSQL database (``db+postgresql://``), as in Airflow's
  documented docker-compose deployment.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import IO, Any

import requests

from tools.airflow_processes import _cache_dir, _free_port
from tools.airflow_rest import _parse_time
from tools.local_airflow import LocalAirflow, LocalAirflowError

__all__ = [
    "CELERY_EXECUTOR",
    "QUICK_FAILURE_DETECTION",
    "DistributedAirflow",
    "component_hostname",
    "find_postgres_bin",
]

CELERY_EXECUTOR = "airflow.providers.celery.executors.celery_executor.CeleryExecutor"
#: ``AIRFLOW__*`` settings under which a killed component is noticed within seconds, not Airflow's
#: minutes: what a test or the chaos run that kills workers and triggerers passes to the deployment.
QUICK_FAILURE_DETECTION = {
    # A triggerer whose heartbeat is older than this is dead and its triggers go to another (default 30 s).
    "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
    "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
    # A task whose worker died stops heartbeating; it is failed (and retried) after this (default 300 s).
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "30",
    "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "5",
    # A message a dead worker (or Redis) had but never started leaves its task queued: re-queued after
    # this; a task legitimately queued longer (busy workers) is re-queued too.
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT": "120",
    "AIRFLOW__SCHEDULER__TASK_QUEUED_TIMEOUT_CHECK_INTERVAL": "15",
}
#: Environment variable that names a process's component; read by :func:`component_hostname`.
HOSTNAME_ENV = "DISTRIBUTED_AIRFLOW_HOSTNAME"
_BASE_COMPONENTS = ("api-server", "scheduler", "dag-processor")
_REPO_ROOT = Path(__file__).resolve().parents[1]


def component_hostname() -> str:
    """``[core] hostname_callable`` of every process: its component name, as distinct hosts would report."""
    return os.environ.get(HOSTNAME_ENV) or socket.getfqdn()


def find_postgres_bin() -> Path | None:
    """Debian's PostgreSQL server binaries (the newest installed major version), or None."""
    root = Path("/usr/lib/postgresql")
    versions = sorted((p for p in root.glob("*/bin") if (p / "postgres").exists()), key=lambda p: int(p.parent.name))
    return versions[-1] if versions else None


class _Server:
    """One of the deployment's servers (PostgreSQL, Redis): a process outside Airflow's components."""

    def __init__(self, name: str, popen: subprocess.Popen[bytes], fh: IO[bytes], log_path: Path) -> None:
        self.name = name
        self.popen = popen
        self.fh = fh
        self.log_path = log_path

    def stop(self, sig: int, timeout: float) -> None:
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(sig)
            try:
                self.popen.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)
        self.fh.close()


class DistributedAirflow(LocalAirflow):
    """Airflow with CeleryExecutor, a PostgreSQL metadata DB, a Redis broker, N workers and N triggerers.

    :param root: private folder: ``root/home`` is ``AIRFLOW_HOME`` (logs included); server logs go to
        ``root/home/logs`` too (``postgres.log``, ``redis.log``).
    :param dags_folder: folder the DAG bundle reads.
    :param workers: number of Celery workers (``worker-1`` ..).
    :param triggerers: number of triggerers (``triggerer-1`` ..).
    :param worker_concurrency: Celery pool size of each worker (task slots per worker).
    :param parallelism: ``[core] parallelism``: task instances the scheduler keeps queued or running.
    :param env: extra environment for every Airflow process, applied last.
    :param log: progress callback.
    :param stop_grace: seconds between SIGTERM and SIGKILL in :meth:`stop`.
    """

    def __init__(
        self,
        root: Path,
        dags_folder: Path,
        *,
        workers: int = 2,
        triggerers: int = 2,
        worker_concurrency: int = 4,
        parallelism: int = 16,
        env: Mapping[str, str] | None = None,
        log: Callable[[str], None] | None = None,
        stop_grace: float = 10.0,
    ) -> None:
        if workers < 1 or triggerers < 1:
            raise ValueError(f"need at least one worker and one triggerer; got {workers=} {triggerers=}")
        if worker_concurrency < 1:
            raise ValueError(f"worker_concurrency must be >= 1; got {worker_concurrency}")
        self.root = Path(root).resolve()
        super().__init__(
            self.root / "home",
            dags_folder,
            parallelism=parallelism,
            env=env,
            log=log,
            components=_BASE_COMPONENTS,
            stop_grace=stop_grace,
            reuse_migrated_db=False,
        )
        self.workers = tuple(f"worker-{i}" for i in range(1, workers + 1))
        self.triggerers = tuple(f"triggerer-{i}" for i in range(1, triggerers + 1))
        self.components = (*_BASE_COMPONENTS, *self.triggerers, *self.workers)
        self.worker_concurrency = worker_concurrency
        self.pg_port = _free_port()
        self.redis_port = _free_port()
        self._component_log_ports = {c: _free_port() for c in (*self.triggerers, *self.workers)}
        self._servers: dict[str, _Server] = {}
        self._pg_dir: Path | None = None
        self._pg_bin = find_postgres_bin()

    # ------------------------------------------------------------------ configuration

    @property
    def sql_alchemy_conn(self) -> str:
        """The metadata DB URL (no password: ``trust`` authentication on 127.0.0.1)."""
        return f"postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow"

    @property
    def broker_url(self) -> str:
        return f"redis://127.0.0.1:{self.redis_port}/0"

    def environment(self) -> dict[str, str]:
        env = super().environment()
        pythonpath = [str(_REPO_ROOT), *filter(None, [env.get("PYTHONPATH")])]
        defaults = {
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.sql_alchemy_conn,
            "AIRFLOW__CORE__EXECUTOR": CELERY_EXECUTOR,
            "AIRFLOW__CELERY__BROKER_URL": self.broker_url,
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:{self.pg_port}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            # Every process names itself after its component (see component_hostname): needs this repo
            # on the import path of each process, like a plugin would be installed on every host.
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": f"{__name__}.component_hostname",
            "PYTHONPATH": os.pathsep.join(pythonpath),
        }
        env.update(defaults)
        # The caller's overrides win over the defaults above, as in LocalAirflow.
        env.update(self._extra_env)
        return env

    def component_environment(self, component: str) -> dict[str, str]:
        env = self.environment()
        env[HOSTNAME_ENV] = component
        port = self._component_log_ports.get(component)
        if port is not None:
            key = "TRIGGER" if component.startswith("triggerer-") else "WORKER"
            env[f"AIRFLOW__LOGGING__{key}_LOG_SERVER_PORT"] = str(port)
        return env

    def command(self, component: str) -> tuple[str, ...]:
        if component in self.triggerers:
            return ("triggerer",)
        if component in self.workers:
            return (
                "celery",
                "worker",
                "--celery-hostname",
                f"{component}@%h",
                "--queues",
                f"default,{component}",
                "--concurrency",
                str(self.worker_concurrency),
            )
        return super().command(component)

    # ------------------------------------------------------------------ lifecycle

    def start(self, timeout: float = 240.0, *, wait_for_parse: bool = True) -> None:
        """Start PostgreSQL and Redis, migrate the DB, start every component and wait until all are healthy."""
        super().start(timeout, wait_for_parse=wait_for_parse)

    def stop(self, grace: float | None = None) -> None:
        """Stop the Airflow components (:meth:`LocalAirflow.stop`), then Redis and PostgreSQL. Idempotent."""
        try:
            super().stop(grace)
        finally:
            redis = self._servers.pop("redis", None)
            if redis is not None:
                redis.stop(signal.SIGTERM, 10)
            postgres = self._servers.pop("postgres", None)
            if postgres is not None:
                postgres.stop(signal.SIGINT, 15)  # "fast" shutdown: ends sessions, no waiting for clients
            if self._pg_dir is not None:
                shutil.rmtree(self._pg_dir, ignore_errors=True)
                self._pg_dir = None

    def _prepare_db(self, deadline: float) -> None:
        """Start both servers with a migrated metadata DB.

        ``initdb`` plus ``airflow db migrate`` are the slowest part of a start; the first deployment keeps a
        copy of its freshly migrated, cleanly shut down data directory in the per-user cache (keyed by the
        Airflow distributions, the PostgreSQL version and the caller's ``AIRFLOW__*`` overrides; it holds no
        secret) and later ones start from a copy of it.
        """
        t0 = time.monotonic()
        self._start_redis(deadline)
        template = self._pg_template()
        if template.is_dir():
            self._start_postgres(deadline, template=template)
            self._log(f"local-airflow: postgres :{self.pg_port} from migrated template {template} in "
                      f"{time.monotonic() - t0:.1f}s; redis :{self.redis_port}")  # fmt: skip
            return
        self._start_postgres(deadline)
        self._log(
            f"local-airflow: postgres :{self.pg_port} and redis :{self.redis_port} up in {time.monotonic() - t0:.1f}s"
        )
        t0 = time.monotonic()
        self.run_cli("db", "migrate", timeout=max(1.0, deadline - time.monotonic()), name="db-migrate")
        self._log(f"local-airflow: db migrated in {time.monotonic() - t0:.1f}s")
        # A clean shutdown makes the copy a consistent cluster; then start again on the original.
        self._servers.pop("postgres").stop(signal.SIGINT, 30)
        assert self._pg_dir is not None
        partial = template.with_name(f"{template.name}.{uuid.uuid4().hex}.tmp")
        try:
            shutil.copytree(self._pg_dir / "data", partial, symlinks=True)
            with contextlib.suppress(OSError):
                os.rename(partial, template)  # atomic; a concurrent harness may have won the race
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        self._run_postgres(deadline)

    def _pg_template(self) -> Path:
        """Cache key: PostgreSQL's major version, the installed Airflow distributions, ``[database]`` overrides.

        Other ``AIRFLOW__*`` overrides (a test's heartbeat thresholds...) do not change the migrated schema,
        so they share one template.
        """
        dists = sorted(
            (d.metadata["Name"] or "", d.version)
            for d in importlib.metadata.distributions()
            if (d.metadata["Name"] or "").lower().startswith("apache-airflow")
        )
        overrides = sorted((k, v) for k, v in self._extra_env.items() if k.startswith("AIRFLOW__DATABASE__"))
        digest = hashlib.sha256(json.dumps([dists, overrides]).encode()).hexdigest()[:16]
        return _cache_dir() / f"pg{self._pg_version()}-{digest}"

    def _pg_version(self) -> str:
        assert self._pg_bin is not None
        return self._pg_bin.parent.name

    def _wait_healthy(self, components: Iterable[str], deadline: float) -> None:
        pending = list(components)
        base = [c for c in pending if c in _BASE_COMPONENTS]
        if base:
            super()._wait_healthy(base, deadline)
        for component in pending:
            if component in self.triggerers:
                self._wait_triggerer(component, deadline)
            elif component in self.workers:
                self._wait_worker(component, deadline)

    def _warm_up_execution_api(self) -> None:
        """As :class:`LocalAirflow`'s, but patient: seven Airflow processes start at once here, and on a
        loaded 2-core machine the api-server's first Execution API request can take longer than one timeout."""
        for attempt in range(4):
            try:
                super()._warm_up_execution_api()
                return
            except requests.Timeout:
                if attempt == 3:
                    raise
                self._log("local-airflow: Execution API slow to answer its first request; asking again")

    def _wait_triggerer(self, component: str, deadline: float) -> None:
        started = self._require(component).started_at.timestamp() - 1
        while True:
            self._check_alive()
            jobs = self.triggerer_jobs()
            if any(j["hostname"] == component and j["alive"] and j["heartbeat"] >= started for j in jobs):
                self._log(f"local-airflow: {component} healthy")
                return
            if time.monotonic() > deadline:
                raise LocalAirflowError(
                    f"{component} has no fresh heartbeat in time; jobs: {jobs}\n" + self._component_tails((component,))
                )
            time.sleep(0.5)

    def _wait_worker(self, component: str, deadline: float) -> None:
        # Celery logs "<hostname> ready." once it consumes its queues.
        marker = f"{component}@"
        while True:
            self._check_alive()
            if any(marker in line and "ready." in line for line in self.component_log(component).splitlines()):
                self._log(f"local-airflow: {component} ready")
                return
            if time.monotonic() > deadline:
                raise LocalAirflowError(f"{component} not ready in time\n" + self._component_tails((component,)))
            time.sleep(0.5)

    # ------------------------------------------------------------------ servers

    def _server_env(self) -> dict[str, str]:
        """A minimal environment for the servers: no Airflow secrets, no instance marker."""
        return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}

    def _spawn_server(self, name: str, argv: list[str], *, user: str | None = None) -> _Server:
        log_path = self.home / "logs" / f"{name}.log"
        fh = log_path.open("ab")
        try:
            popen = subprocess.Popen(
                argv,
                env=self._server_env(),
                cwd=self._pg_dir if user else self.home,
                stdin=subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                user=user,
                group=pwd.getpwnam(user).pw_gid if user else None,
                extra_groups=[] if user else None,
            )
        except BaseException:
            fh.close()
            raise
        server = _Server(name, popen, fh, log_path)
        self._servers[name] = server
        return server

    def _pg_user(self) -> str | None:
        """PostgreSQL refuses to run as root: run it as ``postgres`` then."""
        if os.getuid() != 0:
            return None
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            raise LocalAirflowError("running as root needs a 'postgres' user to run PostgreSQL as") from None
        return "postgres"

    def _start_postgres(self, deadline: float, template: Path | None = None) -> None:
        """A new cluster in a private directory: a copy of ``template``, or ``initdb`` plus an empty DB."""
        if self._pg_bin is None:
            raise LocalAirflowError("PostgreSQL server binaries not found under /usr/lib/postgresql/*/bin")
        user = self._pg_user()
        self._pg_dir = Path(tempfile.mkdtemp(prefix="distributed-airflow-pg-"))
        data = self._pg_dir / "data"
        if template is not None:
            shutil.copytree(template, data, symlinks=True)
        if user is not None:
            entry = pwd.getpwnam(user)
            for path in (self._pg_dir, *([data, *data.rglob("*")] if template is not None else [])):
                os.chown(path, entry.pw_uid, entry.pw_gid, follow_symlinks=False)
        if template is not None:
            data.chmod(0o700)
            self._run_postgres(deadline)
            return
        initdb = subprocess.run(
            [str(self._pg_bin / "initdb"), "-D", str(data), "-U", "airflow", "--auth=trust", "-E", "UTF8",
             "--no-sync", "--no-instructions"],
            env=self._server_env(), cwd=self._pg_dir, capture_output=True, user=user,
            group=pwd.getpwnam(user).pw_gid if user else None, extra_groups=[] if user else None,
            timeout=max(1.0, deadline - time.monotonic()), check=False,
        )  # fmt: skip
        if initdb.returncode != 0:
            raise LocalAirflowError(
                f"initdb failed ({initdb.returncode}):\n{initdb.stdout.decode()}{initdb.stderr.decode()}"
            )
        self._run_postgres(deadline, create_db=True)

    def _run_postgres(self, deadline: float, *, create_db: bool = False) -> None:
        """Start the server on the cluster in ``self._pg_dir`` and wait until it accepts connections."""
        assert self._pg_bin is not None
        assert self._pg_dir is not None
        data = self._pg_dir / "data"
        settings = {
            "listen_addresses": "127.0.0.1",
            "port": str(self.pg_port),
            "unix_socket_directories": str(self._pg_dir),
            # Throw-away cluster: no durability, so no test waits on disk flushes.
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            # api-server, scheduler, dag-processor, triggerers and every worker slot hold pooled connections.
            "max_connections": "400",
            "shared_preload_libraries": "pg_stat_statements",
            "pg_stat_statements.track": "all",
        }
        argv = [str(self._pg_bin / "postgres"), "-D", str(data)]
        for key, value in settings.items():
            argv += ["-c", f"{key}={value}"]
        self._spawn_server("postgres", argv, user=self._pg_user())
        while True:
            try:
                with contextlib.closing(self.pg_connect("postgres")) as conn:
                    conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
                    with conn.cursor() as cur:
                        cur.execute("CREATE DATABASE airflow" if create_db else "SELECT 1")
                break
            except Exception as exc:  # not accepting connections yet
                self._check_server("postgres")
                if time.monotonic() > deadline:
                    raise LocalAirflowError(f"PostgreSQL not up in time: {exc}") from exc
                time.sleep(0.2)
        if create_db:
            self.pg_query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")

    def _start_redis(self, deadline: float) -> None:
        exe = shutil.which("redis-server")
        if exe is None:
            raise LocalAirflowError("redis-server not found (Debian package redis-server)")
        redis_dir = self.root / "redis"
        redis_dir.mkdir(parents=True, exist_ok=True)
        argv = [exe, "--bind", "127.0.0.1", "--port", str(self.redis_port), "--save", "", "--appendonly", "no",
                "--dir", str(redis_dir), "--daemonize", "no", "--protected-mode", "yes"]  # fmt: skip
        self._spawn_server("redis", argv)
        while True:
            try:
                if self.redis_client().ping():
                    return
            except Exception as exc:
                self._check_server("redis")
                if time.monotonic() > deadline:
                    raise LocalAirflowError(f"Redis not up in time: {exc}") from exc
                time.sleep(0.1)

    def restart_server(self, name: str, sig: int = signal.SIGTERM, timeout: float = 120.0) -> float:
        """Stop ``postgres`` or ``redis`` with ``sig``, start it again on the same port and data; return the downtime.

        What a database failover or a broker restart looks like to Airflow: every open connection breaks at
        once, the port refuses connections until the new process accepts them, and the components must
        reconnect on their own. PostgreSQL keeps its data directory (``SIGTERM``: smart shutdown, which
        waits for clients, so it is sent as ``SIGINT``, PostgreSQL's fast shutdown; ``SIGKILL``: a crash,
        recovered from the WAL on start). Redis has no persistence here, so a restart loses every message
        in its queues, as a broker without AOF does: Airflow must notice the lost tasks by itself.
        """
        if name not in ("postgres", "redis"):
            raise ValueError(f"unknown server {name!r}; known: postgres, redis")
        server = self._servers.pop(name)
        t0 = time.monotonic()
        if name == "postgres" and sig == signal.SIGTERM:
            sig = signal.SIGINT  # PostgreSQL's SIGTERM waits for every client to leave: never, here
        server.stop(sig, 30)
        deadline = time.monotonic() + timeout
        if name == "postgres":
            self._run_postgres(deadline)
        else:
            self._start_redis(deadline)
        downtime = time.monotonic() - t0
        self._log(f"local-airflow: {name} restarted after {signal.Signals(sig).name}, down {downtime:.1f}s")
        return downtime

    def dead_components(self) -> list[str]:
        """Components whose current process is not running (a supervisor would restart them).

        Includes one that :meth:`kill` ended and nobody restarted yet, and one whose death another call
        already reported (``_check_alive`` marks it as expected to be down when it raises).
        """
        return [c for c, p in self._procs.items() if not p.running()]

    def _check_server(self, name: str) -> None:
        server = self._servers[name]
        if server.popen.poll() is not None:
            text = server.log_path.read_text(errors="replace")
            raise LocalAirflowError(f"{name} exited with {server.popen.returncode}:\n{text[-3000:]}")

    # ------------------------------------------------------------------ inspection

    def pg_connect(self, dbname: str = "airflow") -> Any:
        """A psycopg2 connection to the metadata DB (or another database of the cluster)."""
        import psycopg2

        return psycopg2.connect(host="127.0.0.1", port=self.pg_port, user="airflow", dbname=dbname, connect_timeout=5)

    def pg_query(self, sql: str, params: Iterable[Any] = ()) -> list[tuple[Any, ...]]:
        """Run one statement on the metadata DB; return its rows (``[]`` for statements without any)."""
        with contextlib.closing(self.pg_connect()) as conn, conn, conn.cursor() as cur:
            cur.execute(sql, tuple(params))
            return list(cur.fetchall()) if cur.description else []

    def pg_dump(self, path: Path) -> Path:
        """Dump the whole metadata DB as plain SQL into ``path`` (what an operator would back up)."""
        assert self._pg_bin is not None
        with path.open("wb") as fh:
            subprocess.run(
                [str(self._pg_bin / "pg_dump"), "-h", "127.0.0.1", "-p", str(self.pg_port), "-U", "airflow",
                 "--no-owner", "airflow"],
                stdout=fh, stderr=subprocess.PIPE, env=self._server_env(), check=True, timeout=120,
            )  # fmt: skip
        return path

    def redis_client(self) -> Any:
        """A redis-py client of the broker."""
        import redis

        return redis.Redis(host="127.0.0.1", port=self.redis_port, socket_timeout=5)

    def triggerer_jobs(self) -> list[dict[str, Any]]:
        """Every triggerer job: ``id``, ``hostname`` (its component), ``state``, ``heartbeat`` (epoch), ``alive``."""
        try:
            rows = self.pg_query(
                "SELECT id, hostname, state, latest_heartbeat, end_date FROM job WHERE job_type = 'TriggererJob'"
            )
        except Exception:
            return []
        jobs = []
        for job_id, hostname, state, beat, end in rows:
            when = _parse_time(beat.isoformat()) if beat is not None else None
            jobs.append(
                {"id": job_id, "hostname": hostname, "state": state, "heartbeat": when.timestamp() if when else 0.0,
                 "alive": state == "running" and end is None}
            )  # fmt: skip
        return jobs

    def triggers_by_triggerer(self) -> dict[str, set[int]]:
        """Trigger ids per owning triggerer component (``""``: not assigned to any)."""
        names = {j["id"]: j["hostname"] for j in self.triggerer_jobs()}
        owned: dict[str, set[int]] = {}
        for trigger_id, triggerer_id in self.pg_query("SELECT id, triggerer_id FROM trigger"):
            owned.setdefault(names.get(triggerer_id, "") if triggerer_id is not None else "", set()).add(trigger_id)
        return owned

    def server_logs(self) -> dict[str, Path]:
        """Log file of each server (``postgres``, ``redis``)."""
        return {name: self.home / "logs" / f"{name}.log" for name in ("postgres", "redis")}
