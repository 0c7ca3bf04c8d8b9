"""The emulator's mutable state: tasks, scripted outcomes, injected faults, counters and logs.

The server thread mutates it per request while a test thread scripts tasks and reads stats, so every
access goes through one lock. Critical sections are a few dictionary operations, which keeps the
uncontended lock cheap enough for thousands of requests per second. The Python API (``Emulator``)
and the HTTP control API both call the methods here and nothing else, so they cannot disagree.

Memory stays bounded apart from the tasks themselves: counters instead of lists, and fixed-size
deques for the request and storage logs.
"""

from __future__ import annotations

import dataclasses
import itertools
import random
import threading
import time
import uuid
from collections import Counter, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .audio import AudioSource
from .config import APIS, CAMB, FAULT_ENDPOINTS, FAULT_KINDS, EmulatorConfig, FaultConfig
from .spec import SpecError, TaskSpec, build_spec, check_api_kind

# Phases a task can be in at a given moment; vendor handlers translate them into status bodies.
PENDING = "pending"
UNKNOWN = "unknown"  # the undocumented status string of the ``unknown_status`` outcome
NOT_FOUND = "not_found"
SUCCESS = "success"

_MAX_KEYS_SEEN = 100


@dataclass(eq=False)
class Task:
    """One vendor task. ``created`` is ``time.monotonic()``; phases are computed from it on demand."""

    task_id: str
    api: str
    kind: str
    spec: TaskSpec
    created: float
    source: AudioSource
    run_id: int | None = None
    caller_id: object = None
    origin: str = "http"
    body: Any = None
    polls: int = 0
    duration: float | None = None  # cached once the audio has been rendered

    def delay(self, config: EmulatorConfig) -> float:
        return config.default_delay if self.spec.delay is None else self.spec.delay

    def phase(self, config: EmulatorConfig, now: float | None = None) -> str:
        """``pending``/``unknown``/``not_found``/``success`` or the terminal failure outcome."""
        elapsed = (time.monotonic() if now is None else now) - self.created
        outcome = self.spec.outcome
        if self.spec.pending_polls is not None and self.polls <= self.spec.pending_polls and outcome != "not_found":
            return PENDING
        if outcome == "not_found":
            return NOT_FOUND
        delay = self.delay(config)
        if outcome == "late_visible":
            hidden = config.default_not_found_for if self.spec.not_found_for is None else self.spec.not_found_for
            if elapsed < hidden:
                return NOT_FOUND
            return PENDING if elapsed < delay else SUCCESS
        if elapsed < delay:
            return UNKNOWN if outcome == "unknown_status" else PENDING
        if outcome == "unknown_status":
            return SUCCESS
        return outcome

    def info(self, config: EmulatorConfig) -> dict[str, Any]:
        """JSON-able description for the control API and tests (includes the create body)."""
        return {
            "task_id": self.task_id,
            "api": self.api,
            "kind": self.kind,
            "run_id": self.run_id,
            "origin": self.origin,
            "phase": self.phase(config),
            "age_seconds": round(time.monotonic() - self.created, 3),
            "polls": self.polls,
            "spec": self.spec.to_dict(),
            "caller_id": self.caller_id,
            "body": self.body,
            "duration": self.duration,
        }


@dataclass
class _Injection:
    kind: str
    remaining: int
    endpoint: str
    api: str | None


@dataclass
class _Counters:
    started: float = field(default_factory=time.monotonic)
    requests_total: int = 0
    by_endpoint: Counter[str] = field(default_factory=Counter)
    by_status: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    creates: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: ``/tts-stream`` answers sent whole, per text: a stream has no task, and it is paid when answered.
    streams: Counter[str] = field(default_factory=Counter)
    polls_unknown: int = 0
    #: Requests a ``slow`` fault holds, counted once their whole body arrived: from then on the
    #: vendor has the request, whatever the client does (a test may kill it then, not before).
    slow_held: Counter[str] = field(default_factory=Counter)
    max_concurrent: int = 0
    connections: int = 0
    storage_requests: int = 0
    storage_with_key: int = 0
    storage_keys_seen: list[str] = field(default_factory=list)


def default_source(api: str, kind: str, text: str, duration: float | None) -> AudioSource:
    """The audio of a task made without a create request (Python or control API)."""
    if kind == "text-to-sound":
        return AudioSource("sound", text=text, seconds=8.0 if duration is None else duration)
    return AudioSource("speech", text=text)


class State:
    """All mutable emulator state behind one lock (see the module docstring)."""

    def __init__(self, config: EmulatorConfig) -> None:
        self._lock = threading.Lock()
        self._config = config
        self._initial_faults = config.faults
        self._rng = random.Random(config.faults.seed)
        self._tasks: dict[str, Task] = {}
        self._runs: dict[int, Task] = {}
        self._run_ids = itertools.count(1001)
        self._scripts: dict[tuple[str, str], deque[TaskSpec]] = {}
        self._injections: list[_Injection] = []
        self._counters = _Counters()
        self._in_flight = 0  # vendor requests between begin() and finish(), for max_concurrent_requests
        self._log: deque[tuple[float, str, str, str, int | str, str | None, bool]] = deque(
            maxlen=config.request_log_size
        )
        self._storage_log: deque[dict[str, Any]] = deque(maxlen=config.storage_log_size)

    # -- configuration ---------------------------------------------------------------------

    @property
    def config(self) -> EmulatorConfig:
        return self._config

    def configure(self, config: EmulatorConfig) -> EmulatorConfig:
        """Swap the whole configuration (faults included); re-seeds the fault RNG if faults changed."""
        with self._lock:
            if config.faults != self._config.faults:
                self._rng = random.Random(config.faults.seed)
            if config.request_log_size != self._log.maxlen:
                self._log = deque(self._log, maxlen=config.request_log_size)
            if config.storage_log_size != self._storage_log.maxlen:
                self._storage_log = deque(self._storage_log, maxlen=config.storage_log_size)
            self._config = config
            return config

    def set_faults(self, faults: FaultConfig) -> FaultConfig:
        self.configure(dataclasses.replace(self._config, faults=faults))
        return faults

    # -- tasks -------------------------------------------------------------------------------

    def _new_task(
        self, api: str, kind: str, spec: TaskSpec, source: AudioSource, origin: str, body: Any, caller_id: object
    ) -> Task:
        task = Task(
            task_id=str(uuid.uuid4()),
            api=api,
            kind=kind,
            spec=spec,
            created=time.monotonic(),
            source=source,
            run_id=next(self._run_ids) if api == CAMB else None,
            caller_id=caller_id,
            origin=origin,
            body=body,
        )
        self._tasks[task.task_id] = task
        if task.run_id is not None:
            self._runs[task.run_id] = task
        return task

    def create_task(
        self,
        api: object,
        kind: object,
        values: Mapping[str, object],
        *,
        text: str | None = None,
        duration: float | None = None,
        origin: str = "python",
    ) -> Task:
        """A task that exists without a vendor create request (not counted as a create)."""
        api, kind = check_api_kind(api, kind)
        spec = build_spec(api, kind, values)
        if duration is not None and (
            isinstance(duration, bool) or not isinstance(duration, (int, float)) or not 0 < duration <= 10
        ):
            raise SpecError(f"duration must be a number in (0, 10]; got {duration!r}")
        with self._lock:
            label = text if text is not None else f"Emulator task number {len(self._tasks) + 1}"
            source = default_source(api, kind, label, duration)
            return self._new_task(api, kind, spec, source, origin, None, None)

    def create_from_request(
        self, api: str, kind: str, marker_values: Mapping[str, str], source: AudioSource, body: Any, caller_id: object
    ) -> Task:
        """A vendor create: consumes the next scripted spec (if any), markers override it, counts it.

        The spec is validated before the scripted entry is consumed, so a bad marker leaves the
        script queue untouched.
        """
        with self._lock:
            queue = self._scripts.get((api, kind))
            scripted = queue[0] if queue else None
            spec = build_spec(api, kind, marker_values, base=scripted)
            if queue:
                queue.popleft()
            self._counters.creates[(api, kind)] += 1
            return self._new_task(api, kind, spec, source, "http", body, caller_id)

    def count_stream(self, text: str) -> None:
        """A ``/tts-stream`` answer was sent whole for ``text`` (what the vendor charges for)."""
        with self._lock:
            self._counters.streams[text] += 1

    def streams(self) -> dict[str, int]:
        """``{text: /tts-stream answers sent whole}`` since the start (or the last reset)."""
        with self._lock:
            return dict(self._counters.streams)

    def script(self, api: object, kind: object, values: Mapping[str, object]) -> int:
        """Queue a spec for the next vendor create of (api, kind); returns the queue length."""
        api, kind = check_api_kind(api, kind)
        spec = build_spec(api, kind, values)
        with self._lock:
            queue = self._scripts.setdefault((api, kind), deque())
            queue.append(spec)
            return len(queue)

    def task(self, task_id: str) -> Task | None:
        with self._lock:
            return self._tasks.get(task_id)

    def end_pending(self, task_id: str) -> bool:
        """Age a delay-based task past its delay, so its next poll sees its outcome; False if unknown."""
        with self._lock:
            task = self._tasks.get(task_id)
            if task is None:
                return False
            delay = task.delay(self._config)
            if delay != float("inf"):
                task.created = min(task.created, time.monotonic() - delay)
            else:
                task.spec = dataclasses.replace(task.spec, delay=0.0)
            return True

    def run(self, run_id: int) -> Task | None:
        with self._lock:
            return self._runs.get(run_id)

    def tasks(self) -> list[Task]:
        with self._lock:
            return list(self._tasks.values())

    # -- faults ------------------------------------------------------------------------------

    def inject(self, kind: object, count: object = 1, endpoint: object = "status", api: object = None) -> None:
        """Make the next ``count`` requests to ``endpoint`` (``any`` = every endpoint) fail as ``kind``."""
        if not isinstance(kind, str) or kind not in FAULT_KINDS:
            raise SpecError(f"fault kind must be one of {', '.join(FAULT_KINDS)}; got {kind!r}")
        if not isinstance(endpoint, str) or endpoint not in (*FAULT_ENDPOINTS, "any"):
            raise SpecError(f"endpoint must be one of {', '.join(FAULT_ENDPOINTS)} or any; got {endpoint!r}")
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise SpecError(f"count must be a positive integer; got {count!r}")
        if api is not None and (not isinstance(api, str) or api not in APIS):
            raise SpecError(f"api must be one of {', '.join(APIS)} or null; got {api!r}")
        with self._lock:
            self._injections.append(_Injection(kind, count, endpoint, api))

    def begin(self, endpoint: str, api: str, poll_id: str | None = None) -> str | None:
        """Count an incoming vendor request and decide whether it fails, and how.

        ``poll_id`` is the task id of a status request: every such request counts as a poll of
        that task, faulted or not, because the client did ask. Injected faults are consumed first
        (FIFO among those matching), then the random rate applies. Called before any other
        processing, so a faulted create never creates.
        """
        with self._lock:
            counters = self._counters
            counters.requests_total += 1
            counters.by_endpoint[endpoint] += 1
            self._in_flight += 1
            counters.max_concurrent = max(counters.max_concurrent, self._in_flight)
            if poll_id is not None:
                task = self._tasks.get(poll_id)
                if task is None:
                    counters.polls_unknown += 1
                else:
                    task.polls += 1
            if endpoint not in FAULT_ENDPOINTS:
                return None
            for index, inj in enumerate(self._injections):
                if inj.endpoint in (endpoint, "any") and inj.api in (None, api):
                    inj.remaining -= 1
                    if inj.remaining <= 0:
                        del self._injections[index]
                    counters.faults[inj.kind] += 1
                    return inj.kind
            faults = self._config.faults
            if faults.rate and endpoint in faults.endpoints and self._rng.random() < faults.rate:
                kind = self._rng.choice(faults.kinds)
                counters.faults[kind] += 1
                return kind
            return None

    def finish(
        self, method: str, path: str, endpoint: str, status: int | str, fault: str | None, key_present: bool
    ) -> None:
        """Record the outcome of a vendor request (status counters and the bounded log)."""
        with self._lock:
            self._in_flight -= 1
            self._counters.by_status[str(status)] += 1
            self._log.append((time.time(), method, path, endpoint, status, fault, key_present))

    def hold(self, endpoint: str) -> None:
        """Count a request a ``slow`` fault now holds, its body read in full (``slow_held_by_endpoint``)."""
        with self._lock:
            self._counters.slow_held[endpoint] += 1

    def count_control(self) -> None:
        with self._lock:
            self._counters.by_endpoint["control"] += 1

    def count_connection(self) -> None:
        with self._lock:
            self._counters.connections += 1

    def record_storage(self, method: str, path: str, api_key: str | None, authorization: bool) -> None:
        """Remember whether a storage request carried ``x-api-key`` (it never should)."""
        with self._lock:
            counters = self._counters
            counters.storage_requests += 1
            if api_key is not None:
                counters.storage_with_key += 1
                if api_key not in counters.storage_keys_seen and len(counters.storage_keys_seen) < _MAX_KEYS_SEEN:
                    counters.storage_keys_seen.append(api_key)
            self._storage_log.append(
                {
                    "time": time.time(),
                    "method": method,
                    "path": path,
                    "api_key_present": api_key is not None,
                    "api_key": api_key,
                    "authorization_present": authorization,
                }
            )

    # -- reading -----------------------------------------------------------------------------

    def storage_log(self) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(entry) for entry in self._storage_log]

    def request_log(self, limit: int | None = None) -> list[dict[str, Any]]:
        with self._lock:
            entries = list(self._log)
        if limit is not None:
            entries = entries[-limit:] if limit > 0 else []
        keys = ("time", "method", "path", "endpoint", "status", "fault", "api_key_present")
        return [dict(zip(keys, entry, strict=True)) for entry in entries]

    def stats(self) -> dict[str, Any]:
        """A plain, JSON-able snapshot of every counter (see ``Emulator.stats``)."""
        with self._lock:
            c = self._counters
            # Sparse, like a Counter: an (api, kind) that was never created is absent, not 0.
            creates: dict[str, dict[str, int]] = {}
            for (api, kind), count in c.creates.items():
                creates.setdefault(api, {})[kind] = count
            scripted = {f"{api}/{kind}": len(q) for (api, kind), q in self._scripts.items() if q}
            return {
                "uptime_seconds": round(time.monotonic() - c.started, 3),
                "requests_total": c.requests_total,
                "requests_by_endpoint": dict(c.by_endpoint),
                "requests_by_status": dict(c.by_status),
                "max_concurrent_requests": c.max_concurrent,
                "slow_held_by_endpoint": dict(c.slow_held),
                "faults_total": sum(c.faults.values()),
                "faults_by_kind": dict(c.faults),
                "pending_injections": [dataclasses.asdict(inj) for inj in self._injections],
                "creates": creates,
                "creates_total": sum(c.creates.values()),
                "scripted": scripted,
                "tasks": len(self._tasks),
                "polls_by_task": {t.task_id: t.polls for t in self._tasks.values() if t.polls},
                "polls_total": sum(t.polls for t in self._tasks.values()) + c.polls_unknown,
                "polls_unknown_task": c.polls_unknown,
                "connections": c.connections,
                "storage_requests": c.storage_requests,
                "storage_requests_with_api_key": c.storage_with_key,
                "storage_api_keys_seen": list(c.storage_keys_seen),
                "storage_log": [dict(entry) for entry in self._storage_log],
            }

    def reset(self) -> None:
        """Forget tasks, scripts, injections, counters and logs; restore the start-up fault config.

        Run ids keep increasing so an id from before the reset can never alias a new run.
        """
        with self._lock:
            self._tasks.clear()
            self._runs.clear()
            self._scripts.clear()
            self._injections.clear()
            self._counters = _Counters()
            self._log.clear()
            self._storage_log.clear()
            self._config = dataclasses.replace(self._config, faults=self._initial_faults)
            self._rng = random.Random(self._initial_faults.seed)
