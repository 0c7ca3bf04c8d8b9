"""Metrics through Airflow's ``Stats``: StatsD, Datadog or OpenTelemetry, whichever the deployment set up.

Every name starts with ``tts.`` (Airflow puts its own ``[metrics] statsd_prefix`` or ``otel_prefix``
in front, ``airflow`` by default); the table of names, types and tags is ``docs/metrics.md``, and
:data:`METRICS` below is the same table in code (a test keeps the two alike).

**Names are flat, the dimensions are tags** (vendor, kind, state, reason, ...), as Airflow 3 does
for its own newer metrics. Datadog (``statsd_datadog_enabled``), StatsD with InfluxDB-style tags
(``statsd_influxdb_enabled``: ``name,vendor=camb_ai:1|c``, which Telegraf and the StatsD exporter
read) and OpenTelemetry (``otel_on``) carry the tags; plain StatsD drops them, so there every
counter is the sum over all vendors and kinds. Only a small closed set of outcomes that a sum
would make meaningless is in the name itself (``tts.cache.hit`` / ``miss`` / ``copy``).

**Never in the way.** The Airflow ``Stats`` module is imported on the first emission, never when
this module is imported (DAG parsing stays cheap), and any failure of a metrics backend is caught
and logged once, at debug level: a metric never fails or slows a task beyond the backend's own
cost (a UDP datagram for StatsD).
"""

from __future__ import annotations

import importlib
import inspect
import logging
import time
from collections.abc import Mapping
from datetime import timedelta
from types import TracebackType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_tts.status import TtsTaskStatus

log = logging.getLogger(__name__)

#: Every metric: ``(name, type, tags, when it is emitted)``; ``docs/metrics.md`` is this table.
METRICS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("tts.create", "counter", ("vendor", "kind"),
     "a create call the vendor accepted (a paid request; kind `tts-stream` for Camb.ai's `/tts-stream`)"),
    ("tts.poll", "counter", ("vendor", "kind", "state"),
     "a status poll the vendor answered (sync and async paths: operators, sensor, triggers, batches)"),
    ("tts.request.duration", "timer", ("vendor", "kind", "endpoint", "outcome"),
     "one call to the vendor API, its retries included; `stream` until the audio's headers arrive"),
    ("tts.request.failed", "counter", ("vendor", "kind", "endpoint", "reason"),
     "a call to the vendor API that failed after its retries, by error class"),
    ("tts.task.failed", "counter", ("vendor", "kind", "reason"),
     "a wait judged the vendor task failed, by the vendor-neutral failure reason"),
    ("tts.characters", "counter", ("vendor", "kind"),
     "characters of text sent in an accepted create call (`text`, or the SRT cues' text)"),
    ("tts.credits", "counter", ("vendor", "kind"),
     "credits the vendor said it charged (Camb.ai's `X-Credits-Required` on `/tts-stream`)"),
    ("tts.storage.bytes", "counter", ("scheme", "written"),
     "bytes of audio streamed into storage (`written=false`: identical bytes were there, not rewritten)"),
    ("tts.storage.files", "counter", ("scheme", "written"), "audio files stored, as for `tts.storage.bytes`"),
    ("tts.cache.hit", "counter", ("vendor",), "the request cache found audio of this very request (no vendor call)"),
    ("tts.cache.miss", "counter", ("vendor",), "the request cache had no usable audio for the request"),
    ("tts.cache.copy", "counter", ("scheme",), "a cache hit copied under a new file name (also counted as a hit)"),
)  # fmt: skip

#: Vendor-neutral words for the errors a vendor call ends with (``reason`` of ``tts.request.failed``),
#: by exception class name: the first class of the error's MRO found here decides.
FAILURE_REASONS: Mapping[str, str] = {
    "TtsAuthError": "auth",
    "TtsRateLimitError": "rate_limited",
    "TtsServerError": "server_error",
    "TtsAudioUrlExpiredError": "url_expired",
    "TtsRejectedRequestError": "rejected",
    "TtsInvalidRequestError": "invalid_request",
    "TtsBlockedHostError": "blocked_host",
    "TtsConnectionError": "connection",
    "TtsProtocolError": "protocol",
    "TtsConfigError": "config",
    "TtsTransientApiError": "transient",
    "TtsApiError": "http_error",
    "TimeoutError": "timeout",
}

_stats: Any = None
_reported = False


def _backend() -> Any:
    """Airflow's ``Stats`` for this process (resolved once; imported on first use)."""
    global _stats
    if _stats is None:
        try:
            try:  # Airflow 3.2+: the task SDK's; ``airflow.stats`` still works there but warns
                stats: Any = importlib.import_module("airflow.sdk.observability.stats").Stats
            except ImportError:  # Airflow 3.0 and 3.1: configures itself from [metrics] when first used
                stats = importlib.import_module("airflow.stats").Stats
            else:
                _initialise(stats)
        except Exception as exc:
            _unavailable(exc)
            stats = _Disabled()
        _stats = stats
    return _stats


def _initialise(stats: Any) -> None:
    """Set up the SDK's ``Stats`` from ``[metrics]`` if nothing in this process has.

    Airflow 3.2+ sets it up where its own code runs (the task runner, the triggerer, the first
    deserialisation), but a process it did not start that way would drop every metric: its factory
    is unset, or the ``NoStatsLogger`` 3.2 puts there when ``Stats`` is used first. A backend that
    is set up (StatsD, Datadog, OpenTelemetry) is never replaced. 3.3 keeps the factory in its
    module (``_factory``), 3.2 on the class (``factory``); 3.2's factory builder takes the class,
    3.3's initialiser the legacy-names flag.
    """
    state = importlib.import_module(stats.__module__)
    factory = getattr(state, "_factory", None) or getattr(stats, "factory", None)
    if factory is not None and getattr(factory, "__name__", "") != "NoStatsLogger":
        return
    from airflow.sdk.configuration import conf
    from airflow.sdk.observability.metrics import stats_utils

    build: Any = stats_utils.get_stats_factory
    configured = build(stats) if inspect.signature(build).parameters else build()
    options = {}
    if "export_legacy_names" in inspect.signature(stats.initialize).parameters:
        options["export_legacy_names"] = conf.getboolean("metrics", "legacy_names_on", fallback=True)
    stats.initialize(factory=configured, **options)


class _Disabled:
    """What emits when Airflow's stats could not be set up: nothing (asked once per process)."""

    def incr(self, *args: Any, **kwargs: Any) -> None:
        return None

    def timing(self, *args: Any, **kwargs: Any) -> None:
        return None


def _unavailable(exc: BaseException) -> None:
    global _reported
    if not _reported:
        _reported = True
        log.debug("Metrics are not emitted (%s: %s); the tasks are not affected", type(exc).__name__, exc)


def incr(name: str, count: int = 1, tags: Mapping[str, str] | None = None) -> None:
    """Add ``count`` to the counter ``name``; nothing when ``count`` is not positive."""
    if count <= 0:
        return
    try:
        _backend().incr(name, count, tags=dict(tags) if tags else None)
    except Exception as exc:
        _unavailable(exc)


def timing(name: str, seconds: float, tags: Mapping[str, str] | None = None) -> None:
    """Record ``seconds`` under the timer ``name`` (sent in milliseconds, as Airflow's timers are)."""
    try:
        _backend().timing(name, timedelta(seconds=seconds), tags=dict(tags) if tags else None)
    except Exception as exc:
        _unavailable(exc)


def failure_reason(exc: BaseException) -> str:
    """The ``reason`` tag of an error: see :data:`FAILURE_REASONS`; ``error`` for anything else."""
    for cls in type(exc).__mro__:
        if cls.__name__ in FAILURE_REASONS:
            return FAILURE_REASONS[cls.__name__]
    return "error"


class RequestTimer:
    """Times one vendor call (``with``); on an exception also counts ``tts.request.failed``.

    The exception itself always goes on; a cancelled call (``asyncio.CancelledError``, a
    ``BaseException``) records nothing.
    """

    __slots__ = ("_started", "tags")

    def __init__(self, vendor: str, kind: str, endpoint: str) -> None:
        self.tags = {"vendor": vendor, "kind": kind, "endpoint": endpoint}
        self._started = 0.0

    def __enter__(self) -> RequestTimer:
        self._started = time.monotonic()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc is not None and not isinstance(exc, Exception):
            return
        elapsed = time.monotonic() - self._started
        timing("tts.request.duration", elapsed, {**self.tags, "outcome": "ok" if exc is None else "error"})
        if exc is not None:
            incr("tts.request.failed", 1, {**self.tags, "reason": failure_reason(exc)})


def timed(vendor: str, kind: str, endpoint: str) -> RequestTimer:
    """``with timed("camb_ai", "tts", "create"): ...``: ``tts.request.duration`` (and failures) of one call."""
    return RequestTimer(vendor, kind, endpoint)


def created(vendor: str, kind: str, body: Any = None, *, credits: Any = None) -> None:
    """A create call was accepted: ``tts.create``, and the characters of ``body`` and any stated credits."""
    tags = {"vendor": vendor, "kind": kind}
    incr("tts.create", 1, tags)
    incr("tts.characters", count_characters(body), tags)
    if isinstance(credits, str):
        credits = int(credits.strip()) if credits.strip().isdigit() else None
    if isinstance(credits, int) and not isinstance(credits, bool):
        incr("tts.credits", credits, tags)


def polled(status: TtsTaskStatus) -> None:
    """A status poll was answered: ``tts.poll`` by the normalised state."""
    incr("tts.poll", 1, {"vendor": status.api, "kind": status.kind, "state": status.state})


def task_failed(status: TtsTaskStatus) -> None:
    """A wait judged the task failed: ``tts.task.failed`` by the vendor-neutral failure reason."""
    incr("tts.task.failed", 1, {"vendor": status.api, "kind": status.kind, "reason": status.failure or "error"})


def stored(scheme: str, size_bytes: int, *, written: bool = True) -> None:
    """Audio was stored: ``tts.storage.files`` and ``tts.storage.bytes``."""
    tags = {"scheme": scheme or "file", "written": "true" if written else "false"}
    incr("tts.storage.files", 1, tags)
    incr("tts.storage.bytes", size_bytes, tags)


def cache(result: str, *, vendor: str | None = None, scheme: str | None = None) -> None:
    """A request-cache lookup or copy: ``result`` is ``hit``, ``miss`` or ``copy``."""
    tags = {"vendor": vendor} if vendor else {"scheme": scheme or "file"}
    incr(f"tts.cache.{result}", 1, tags)


def count_characters(body: Any) -> int:
    """Characters of text a create body asks the vendor to speak: its ``text``, or its cues' text."""
    if not isinstance(body, Mapping):
        return 0
    text = body.get("text")
    if isinstance(text, str):
        return len(text)
    cues = body.get("subtitles")
    if isinstance(cues, list):
        return sum(len(cue["text"]) for cue in cues if isinstance(cue, Mapping) and isinstance(cue.get("text"), str))
    return 0


__all__ = [
    "FAILURE_REASONS",
    "METRICS",
    "RequestTimer",
    "cache",
    "count_characters",
    "created",
    "failure_reason",
    "incr",
    "polled",
    "stored",
    "task_failed",
    "timed",
    "timing",
]
