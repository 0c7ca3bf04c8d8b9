"""Where a deployment lets the provider read items and write audio: the ``[tts]`` configuration.

A DAG whose destination or items file comes from a run's ``conf`` (or from any value a user can
influence) would let whoever may trigger it make a worker read any file the worker can read (its
lines sent to the vendor) or write wherever the worker may write. Airflow's own object storage has
no notion of allowed places, so the provider checks, before anything is read, requested or
written, that the URI is under one of the prefixes the deployment allows:

.. code-block:: ini

    [tts]
    allowed_destinations = s3://audio-bucket/tts/, file:///data/audio/
    allowed_items_paths = s3://audio-bucket/inbox/

(or ``AIRFLOW__TTS__ALLOWED_DESTINATIONS``...). Empty, the default, allows every URI, as before.
Paths are compared after ``..`` segments are collapsed, and on the local disk after symbolic
links are resolved, so neither leads out of an allowed folder. Declared in the provider info
(``config``), so ``airflow config list`` shows the options with their descriptions.
"""

from __future__ import annotations

import os
import posixpath
from typing import Any

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.storage.schemes import LOCAL_SCHEMES

SECTION = "tts"
DESTINATIONS = "allowed_destinations"
ITEMS_PATHS = "allowed_items_paths"


def _normal(uri: str) -> str:
    """``scheme://path`` with ``..`` collapsed (local paths with symbolic links resolved), no trailing slash."""
    scheme, sep, rest = uri.partition("://")
    if not sep:
        scheme, rest = "file", uri
    scheme = scheme.lower()
    if scheme in LOCAL_SCHEMES:
        path = os.path.realpath("/" + rest.lstrip("/"))
        return f"file://{path.rstrip('/') or '/'}"
    return f"{scheme}://{posixpath.normpath('/' + rest.lstrip('/')).lstrip('/').rstrip('/')}"


def allowed(option: str) -> tuple[str, ...]:
    """The normalised prefixes of ``[tts] <option>``; empty when every URI is allowed."""
    from airflow_provider_tts.compat import conf

    raw = conf.get(SECTION, option, fallback="") or ""
    return tuple(_normal(part.strip()) for part in raw.replace("\n", ",").split(",") if part.strip())


def confine(uri: Any, option: str, *, what: str) -> None:
    """Raise :class:`TtsConfigError` when ``uri`` is outside every prefix of ``[tts] <option>``."""
    prefixes = allowed(option)
    if not prefixes:
        return
    target = _normal(str(uri))
    if any(target == prefix or target.startswith(prefix.rstrip("/") + "/") for prefix in prefixes):
        return
    raise TtsConfigError(
        f"{what} {target} is outside what this deployment allows ([{SECTION}] {option}: {', '.join(prefixes)}); "
        "nothing was read, requested or written"
    )
