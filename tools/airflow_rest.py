"""Talking to a running Airflow 3 deployment through its public REST API (``/api/v2``) only.

:class:`AirflowRestClient` is the half of :class:`tools.local_airflow.LocalAirflow` that triggers
runs, waits for DAGs and runs, reads task instances, logs and XComs, and describes a failed run;
the other half starts and stops the processes. Split along that seam so each file reads on its
own; :mod:`tools.local_airflow` re-exports every public name.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import requests

if TYPE_CHECKING:
    from tools.airflow_processes import _Proc

JSON = dict[str, Any]

#: Dag run states after which nothing more will happen.
TERMINAL_RUN_STATES = frozenset({"success", "failed"})

_PAGE = 100
_POLL = 0.5

#: Answers of the api-server that a later identical request may not get (a locked SQLite database
#: on a loaded machine gives a 500; a restarting component a 502/503).
TRANSIENT_STATUS = frozenset({500, 502, 503, 504})
#: Seconds a request is retried after a transient failure (see :meth:`AirflowRestClient.request`).
RETRY_FOR = 60.0


def _transient(exc: LocalAirflowError) -> bool:
    """Whether ``request`` failed on trouble a repeat may not meet (no answer, or a transient status)."""
    text = str(exc)
    return " failed: " in text.split("\n", 1)[0] or any(f"-> HTTP {code}" in text for code in TRANSIENT_STATUS)


class LocalAirflowError(RuntimeError):
    """The deployment failed to start, a component died, or a wait timed out (message has diagnostics)."""


class AirflowRestClient:
    """REST calls against ``api_url``; mixed into :class:`~tools.local_airflow.LocalAirflow`.

    Needs from the class it is mixed into: ``api_url``, a ``requests.Session`` in ``_session``,
    the ``_log`` callback, the ``timings`` dict, ``dags_folder``, the current processes in
    ``_procs``, and ``_check_alive()`` / ``_component_tails()`` (process state for diagnostics).
    """

    api_url: str
    dags_folder: Path
    timings: dict[str, float]
    _session: requests.Session
    _log: Callable[[str], None]
    _procs: dict[str, _Proc]

    def _check_alive(self) -> None:
        raise NotImplementedError

    def _component_tails(self, components: Iterable[str], lines: int = 25) -> str:
        raise NotImplementedError

    def request(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, Any] | None = None,
        json_body: Any = None,
        ok: Iterable[int] = (200,),
        timeout: float = 30.0,
        retry_for: float | None = None,
    ) -> Any:
        """Call ``/api/v2<path>``; return the decoded JSON, raise :class:`LocalAirflowError` otherwise.

        A transient failure (no connection, a timeout, HTTP 500/502/503/504) is tried again for up to
        ``retry_for`` seconds (default :data:`RETRY_FOR` for every method but POST, 0 for POST): on a
        loaded machine the api-server's SQLite database is locked now and then and a request fails
        with a 500 that the next attempt does not see. A POST is only repeated where the caller made
        it safe to repeat (see :meth:`trigger`), so the default for it is to fail at once.
        """
        url = f"{self.api_url}/api/v2{path}"
        accepted = set(ok)
        budget = (0.0 if method.upper() == "POST" else RETRY_FOR) if retry_for is None else retry_for
        give_up = time.monotonic() + budget
        pause = 0.25
        while True:
            problem: str
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
                problem = f"{method} {path} failed: {exc}"
            else:
                if resp.status_code in accepted:
                    return resp.json() if resp.content else None
                problem = f"{method} {path} -> HTTP {resp.status_code}: {resp.text[:2000]}"
                if resp.status_code not in TRANSIENT_STATUS:
                    raise LocalAirflowError(problem)
            if time.monotonic() + pause > give_up:
                raise LocalAirflowError(problem)
            self._log(f"local-airflow: {problem.splitlines()[0][:200]}; trying again in {pause:.2f}s")
            time.sleep(pause)
            pause = min(pause * 2, 5.0)

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
        """Create a manual dag run (``logical_date`` null) and return its ``dag_run_id``.

        The run id is chosen here when not given, which makes the POST safe to repeat after a
        transient failure: a 409 on a repeat means the earlier attempt created the run.
        """
        run_id = run_id or f"manual__{datetime.now(UTC).isoformat()}_{uuid.uuid4().hex[:8]}"
        body: JSON = {"logical_date": None, "conf": dict(conf or {}), "dag_run_id": run_id}
        attempt = 0
        while True:
            attempt += 1
            try:
                self.request(
                    "POST", f"/dags/{_q(dag_id)}/dagRuns", json_body=body, ok=(200, 409) if attempt > 1 else (200,)
                )
                break
            except LocalAirflowError as exc:
                if attempt >= 5 or not _transient(exc):
                    raise
                time.sleep(attempt)
        self._log(f"local-airflow: triggered {dag_id} run {run_id}")
        return run_id

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

    def _normalise_error_filename(self, filename: str) -> str:
        path = Path(filename)
        return str(path if path.is_absolute() else self.dags_folder / path)

    def _dag_file_text(self, filename: str) -> str:
        path = Path(self._normalise_error_filename(filename))
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def _safe_describe(self, dag_id: str, run_id: str) -> str:
        try:
            return self.describe_run(dag_id, run_id)
        except Exception as exc:  # the API itself may be what broke
            return f"(could not describe run: {exc})\n{self._component_tails(tuple(self._procs))}"


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
