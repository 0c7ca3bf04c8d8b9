"""What this Airflow offers: the one place that knows how Airflow 3.0, 3.1, 3.2 and 3.3 differ.

The package supports every Airflow 3 minor. The names it needs moved between them (``BaseHook``
and the exceptions arrived in ``airflow.sdk`` after 3.0; ``airflow.sdk.configuration`` and
``airflow.sdk.io.fs`` too) and some features only exist on newer minors (the ``task_state_store``
and ``ResumableJobMixin`` of 3.3, ``BaseTrigger.on_kill`` of 3.3, ``BaseHook.aget_connection`` of
3.1). Every other module imports those names from here, so the rest of the code never compares
version numbers: each name is looked up where the newest Airflow keeps it, then where older ones
did, and each feature flag is found by looking for the feature itself.

Where Airflow's own shim package (``apache-airflow-providers-common-compat``, its ``sdk`` module)
already maps a name to its home on each minor, the name comes from there: the exceptions,
``BaseHook``, ``conf`` and the hook lineage collector. What it does not cover stays here: the
feature flags, ``has_fs``, a ``mask_secret`` that is safe inside the triggerer's event loop on 3.0,
``aget_connection`` for 3.0's ``BaseHook``, and the ``dag.test()`` helpers.

Two lookups are deferred to their first call: on 3.0, ``airflow.io`` (``has_fs``) and
``airflow.lineage.hook`` import some 500 modules, ``aiohttp`` among them, which a DAG file that
only declares operators must not pay for at parse time.

The version string is exported for messages and reports only; no decision is made on it.

Why the exceptions must come from the right place: the task runner of each minor catches its own
classes (``AirflowFailException`` fails a task without retries only if it is the class that
runner imports). On 3.1+ ``airflow.exceptions`` re-exports the ``airflow.sdk.exceptions`` classes;
on 3.0 only ``airflow.exceptions`` has them.
"""

from __future__ import annotations

import importlib
import logging
import sys
from typing import TYPE_CHECKING, Any

from airflow import __version__ as AIRFLOW_VERSION

__all__ = [
    "AIRFLOW_VERSION",
    "HAS_ASYNC_GET_CONNECTION",
    "HAS_RESUMABLE_JOB_MIXIN",
    "HAS_TASK_STATE_STORE",
    "HAS_TRIGGER_ON_KILL",
    "AirflowException",
    "AirflowFailException",
    "AirflowNotFoundException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "BaseHook",
    "TaskDeferred",
    "bucket_of",
    "conf",
    "conn_id_of",
    "features",
    "get_hook_lineage_collector",
    "has_fs",
    "in_dag_test",
    "mask_secret",
    "omit_secrets_from_dag_test_log",
]


log = logging.getLogger(__name__)


def _optional(name: str, *modules: str) -> Any:
    """``name`` from the first of ``modules`` that has it (newest location first), else ``None``."""
    for module in modules:
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError):
            continue
    return None


def _first(name: str, *modules: str) -> Any:
    """``name`` from the first of ``modules`` that has it; an ``ImportError`` naming them all otherwise."""
    found = _optional(name, *modules)
    if found is None:
        raise ImportError(f"none of {', '.join(modules)} provides {name}; is this Airflow 3?")
    return found


if TYPE_CHECKING:
    # mypy checks against the newest Airflow, where every name lives in the Task SDK.
    from airflow.sdk import BaseHook
    from airflow.sdk.configuration import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowNotFoundException,
        AirflowSensorTimeout,
        AirflowSkipException,
        TaskDeferred,
    )
    from airflow.sdk.io.fs import has_fs
    from airflow.sdk.lineage import get_hook_lineage_collector
    from airflow.sdk.log import mask_secret
else:
    from airflow.providers.common.compat import sdk as _shims

    AirflowException = _shims.AirflowException
    AirflowFailException = _shims.AirflowFailException
    AirflowNotFoundException = _shims.AirflowNotFoundException
    AirflowSensorTimeout = _shims.AirflowSensorTimeout
    AirflowSkipException = _shims.AirflowSkipException
    TaskDeferred = _shims.TaskDeferred
    conf = _shims.conf

    def has_fs(scheme: str) -> bool:
        """Whether Airflow has a filesystem for ``scheme`` (``airflow.sdk.io.fs``; ``airflow.io`` on 3.0)."""
        found: bool = _first("has_fs", "airflow.sdk.io.fs", "airflow.io")(scheme)
        return found

    def get_hook_lineage_collector() -> Any:
        """Airflow's hook lineage collector (the Task SDK's from 3.2, ``airflow.lineage.hook`` before)."""
        return _shims.get_hook_lineage_collector()

    # The secret masker the task runner's log pipeline reads: airflow.sdk.log exports it on 3.0.6+, the
    # earlier 3.0 patches only have it in the Task SDK's secrets_masker module (the same function).
    _mask_secret = _first("mask_secret", "airflow.sdk.log", "airflow.sdk.execution_time.secrets_masker")

    def mask_secret(secret: Any, name: str | None = None) -> None:
        """Airflow's ``mask_secret``, safe inside a running event loop on every minor.

        3.1+ registers the secret with this process's masker first and tells the supervisor after,
        ignoring a failure to tell it. 3.0 tells the supervisor first, synchronously, which raises
        ``RuntimeError`` (AsyncToSync inside an event loop) in the triggerer, before the local masker
        learns the secret: every deferred wait failed there. The local registration is kept then.
        """
        try:
            _mask_secret(secret, name)
        except RuntimeError:
            masker = _process_masker()
            if masker is None:
                log.warning("Could not register a secret with this process's log masker (no masker found)")
                return
            masker.add_mask(secret, name)

    def _process_masker() -> Any:
        """This process's secret masker, looked up when needed (a private name, so it may move).

        None when this Airflow keeps it nowhere known: masking then relies on Airflow's public
        ``mask_secret`` alone, and the package still imports.
        """
        getter = _optional(
            "_secrets_masker", "airflow.sdk._shared.secrets_masker", "airflow.sdk.execution_time.secrets_masker"
        )
        return getter() if callable(getter) else None

    _BaseHook = _shims.BaseHook

#: ``BaseHook.aget_connection`` exists (3.1+): connections are looked up without blocking the loop.
HAS_ASYNC_GET_CONNECTION: bool = hasattr(_first("BaseHook", "airflow.sdk", "airflow.hooks.base"), "aget_connection")


#: ``airflow.sdk.ResumableJobMixin`` exists (3.3+). The submit operator does not use it: its own
#: ledger (:mod:`airflow_provider_tts.submissions`) works on every minor; reported for diagnostics.
HAS_RESUMABLE_JOB_MIXIN: bool = _optional("ResumableJobMixin", "airflow.sdk") is not None


def _context_has_task_state_store() -> bool:
    try:
        from airflow.sdk.definitions.context import Context
    except ImportError:
        return False
    return "task_state_store" in getattr(Context, "__annotations__", {})


#: Task instances get ``context["task_state_store"]`` (3.3+): a per-task-instance store that survives retries.
HAS_TASK_STATE_STORE: bool = _context_has_task_state_store()


if not TYPE_CHECKING:
    if HAS_ASYNC_GET_CONNECTION:
        BaseHook = _BaseHook
    else:

        class BaseHook(_BaseHook):
            """Airflow 3.0's ``BaseHook`` plus the ``aget_connection`` that 3.1 added.

            The 3.0 triggerer answers connection requests through ``async_to_sync`` on its event loop,
            so the synchronous lookup must run in ``sync_to_async``'s worker thread, never on the loop
            itself (that would deadlock) and never in a plain thread (that would start a second loop).
            """

            @classmethod
            async def aget_connection(cls, conn_id: str) -> Any:
                from asgiref.sync import sync_to_async

                return await sync_to_async(cls.get_connection)(conn_id)


def has_supervisor() -> bool:
    """Whether a task supervisor (real or ``dag.test()``'s in-process one) serves this process.

    Variables are read and written through it; outside a task runner (``operator.execute()`` called
    directly) Airflow 3.0 fails with an ImportError and 3.1+ answers "not found", so callers that
    can do without a Variable ask first. Read at run time, never at import.
    """
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(task_runner, "SUPERVISOR_COMMS", None) is not None


def in_dag_test() -> bool:
    """Whether this task runs inside ``dag.test()`` / ``airflow dags test`` (the in-process supervisor).

    Every minor runs such a task with an in-process stand-in for the supervisor; a deployment's task
    process talks to a real one over a socket. Read at run time, never at import.
    """
    task_runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    comms = getattr(task_runner, "SUPERVISOR_COMMS", None)
    return type(comms).__name__ == "InProcessSupervisorComms"


def omit_secrets_from_dag_test_log() -> None:
    """Keep the body of ``MaskSecret`` messages out of a ``dag.test()`` run's log, before a lookup.

    In ``airflow dags test`` the task talks to an in-process stand-in for the supervisor, and on
    every minor that stand-in logs each message it is sent at debug level, body included; on 3.0
    the CLI's log is not even filtered by level. Fetching a connection makes Airflow send
    ``MaskSecret(value=<password>)``, so the API key reached the console. The real supervisor omits
    that body; this gives the stand-in's logger the same rule (only ``MaskSecret`` bodies are
    replaced, every other line is logged as before). It changes nothing outside a ``dag.test()``
    run, and is idempotent. Called by the hook before it asks Airflow for a connection.
    """
    if not in_dag_test():
        return
    comms = sys.modules["airflow.sdk.execution_time.task_runner"].SUPERVISOR_COMMS
    log = getattr(comms, "log", None)
    if log is not None and not isinstance(log, _MaskSecretBodyOmitted):
        comms.log = _MaskSecretBodyOmitted(log)


class _MaskSecretBodyOmitted:
    """A structlog logger proxy that logs a ``MaskSecret`` message as its type, never its value."""

    def __init__(self, wrapped: Any) -> None:
        self._wrapped = wrapped

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._wrapped, name)
        if not callable(attr) or name.startswith("_"):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            args = tuple(_omit_secret_body(value) for value in args)
            kwargs = {key: _omit_secret_body(value) for key, value in kwargs.items()}
            result = attr(*args, **kwargs)
            return _MaskSecretBodyOmitted(result) if name == "bind" else result

        return call


def _omit_secret_body(value: Any) -> Any:
    return "MaskSecret(body omitted)" if type(value).__name__ == "MaskSecret" else value


def attached_fs(scheme: str, conn_id: str | None) -> bool:
    """Whether a filesystem was attached for ``scheme`` and ``conn_id`` (``attach(..., fs=...)``).

    Airflow resolves an ``ObjectStoragePath`` through the store attached under ``<scheme>-<conn_id>``
    (``<scheme>`` without a connection) before asking the providers, so a filesystem attached there
    serves a scheme no installed provider registers (gcsfs without the Google provider, adlfs
    without the Azure one). Looked up by alias only: ``attach`` then registers nothing new.
    """
    attach = _first("attach", "airflow.sdk.io.store", "airflow.io.store")
    try:
        store = attach(alias=f"{scheme}-{conn_id}" if conn_id else scheme)
    except ValueError:
        return False
    return "fs" in vars(store)  # given to attach(), not one a provider would still have to build


def conn_id_of(path: Any) -> str | None:
    """The connection id an ``ObjectStoragePath`` was made with.

    universal-pathlib 0.3 (Airflow 3.2+) exposes it as ``path.conn_id``; under 0.2 (3.0, 3.1) it
    is only in ``storage_options``. Reading only the attribute gave None for every connection there.
    """
    conn_id = getattr(path, "conn_id", None)
    if conn_id is None:
        conn_id = (getattr(path, "storage_options", None) or {}).get("conn_id")
    return conn_id


def bucket_of(path: Any) -> str:
    """The bucket (container) of an ``ObjectStoragePath``, without the connection id.

    ``ObjectStoragePath.bucket`` is the URL's netloc, and under universal-pathlib 0.2 (Airflow 3.0
    and 3.1) that still holds the connection id as user info (``aws_default@bucket``); under 0.3 it
    does not. The first segment of ``.path`` is the bare bucket under both.
    """
    return str(path.path).lstrip("/").split("/", 1)[0]


def _trigger_has_on_kill() -> bool:
    """``BaseTrigger.on_kill`` exists (3.3+): Airflow tells a trigger that its task was killed or cleared.

    Looked up on first use, not at import: ``airflow.triggers.base`` builds pydantic models (about
    8 ms), and a DAG file that only imports an operator or the sensor never needs it.
    """
    from airflow.triggers.base import BaseTrigger

    return callable(getattr(BaseTrigger, "on_kill", None))


def __getattr__(name: str) -> Any:
    if name == "HAS_TRIGGER_ON_KILL":
        return _trigger_has_on_kill()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


if TYPE_CHECKING:
    HAS_TRIGGER_ON_KILL: bool


def features() -> dict[str, Any]:
    """What this Airflow offers, as one JSON-friendly dict (for logs, bug reports and the CI matrix)."""
    return {
        "airflow": AIRFLOW_VERSION,
        "task_state_store": HAS_TASK_STATE_STORE,
        "resumable_job_mixin": HAS_RESUMABLE_JOB_MIXIN,
        "trigger_on_kill": _trigger_has_on_kill(),
        "async_get_connection": HAS_ASYNC_GET_CONNECTION,
    }


if __name__ == "__main__":  # `python -m airflow_provider_tts.compat`: what CI prints before each minor's tests
    import json
    import sys

    sys.stdout.write(json.dumps(features()) + "\n")
