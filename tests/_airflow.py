"""What the tests need from Airflow that moved between minors: one lookup each, newest home first.

The package's own lookups live in :mod:`airflow_provider_tts.compat`; these are the names only the
tests use (serialization, the filesystem registry), so a test never imports a 3.3-only path directly
and every test runs on every minor CI checks.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_tts.compat import _first, _optional


def dag_serialization() -> Any:
    """The class that turns a DAG into the scheduler's JSON and back (``SerializedDAG`` before 3.2)."""
    return _optional("DagSerialization", _SERIALIZATION) or _first("SerializedDAG", _SERIALIZATION)


_SERIALIZATION = "airflow.serialization.serialized_objects"


def registered_filesystems() -> Any:
    """Airflow's scheme -> filesystem factory registry (``airflow.sdk.io.fs`` from 3.1, ``airflow.io`` on 3.0)."""
    return _first("_register_filesystems", "airflow.sdk.io.fs", "airflow.io")()


def lineage_module() -> Any:
    """The module of Airflow's hook lineage collector (``airflow.sdk.lineage`` from 3.2, else in airflow.lineage)."""
    import importlib

    for name in ("airflow.sdk.lineage", "airflow.lineage.hook"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(module, "HookLineageCollector"):
            return module
    raise ImportError("no hook lineage module in this Airflow")
