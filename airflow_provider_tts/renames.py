"""Arguments renamed so that none collides with Airflow's own names (issue 22).

Each old spelling keeps working with an ``AirflowProviderDeprecationWarning`` naming the new one;
giving both is a :class:`~airflow_provider_tts.exceptions.TtsConfigError`. Every class that took an
old spelling goes through :func:`renamed`, so they all warn and refuse alike:

=================  =================  ===================================================
old spelling       new spelling       why
=================  =================  ===================================================
``retry``          ``request_retry``  per HTTP request; Airflow's ``retries`` is per task
``wait_timeout``   ``timeout``        the sensor's (and Airflow's) name for the deadline
=================  =================  ===================================================

(``poll_interval`` is the interval's name everywhere; the sensor also takes Airflow's
``poke_interval`` for it, which is not deprecated.) The old spellings stay parameters of the
signatures, so ``.partial()``, ``.expand()`` and ``default_args`` keep taking them too.

The triggers take ``request_retry`` as well, but their rows keep the key ``retry``: see
:func:`stored_request_retry`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from typing import Any

from airflow_provider_tts.exceptions import TtsConfigError

#: What ``request_retry`` (formerly ``retry``) may override of the connection's retry settings.
REQUEST_RETRY_KEYS = ("max_retries", "backoff", "max_backoff")


def deprecation_category() -> type[Warning]:
    """Airflow's warning class for a provider's deprecations (plain ``DeprecationWarning`` without it)."""
    try:
        from airflow.exceptions import AirflowProviderDeprecationWarning
    except ImportError:  # pragma: no cover - airflow-core always provides it on Airflow 3
        return DeprecationWarning
    return AirflowProviderDeprecationWarning


def renamed(owner: str, new: str, value: Any, old: str, legacy: Any, *, hint: str = "", stacklevel: int = 3) -> Any:
    """``value`` (given as ``new``), or ``legacy`` (given as the deprecated ``old``) with a warning.

    None means "not given" for both. ``owner`` is the class name the messages quote; ``hint`` is
    added to the warning (what the argument is, so the new name makes sense).
    """
    if legacy is None:
        return value
    warnings.warn(
        f"{owner}({old}=...) is deprecated; use {new}=...{hint}", deprecation_category(), stacklevel=stacklevel
    )
    if value is not None:
        raise TtsConfigError(f"{owner}: give {new} or the deprecated {old}, not both")
    return legacy


def request_retry_overrides(
    owner: str, request_retry: Mapping[str, Any] | None, retry: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """The per-request retry overrides from ``request_retry``, or from the deprecated ``retry``.

    A copy (None when nothing is overridden); its keys are checked by the hook that uses them.
    """
    value = renamed(
        owner,
        "request_retry",
        request_retry,
        "retry",
        retry,
        hint=f" (overrides of each HTTP request's retries: {', '.join(REQUEST_RETRY_KEYS)}; "
        "the task's own retries stay Airflow's retries=)",
        stacklevel=4,
    )
    return dict(value) if value else None


def stored_request_retry(
    owner: str, request_retry: Mapping[str, Any] | None, retry: Mapping[str, Any] | None
) -> dict[str, Any] | None:
    """A trigger's overrides from ``request_retry``, or from ``retry``, the key its row stores.

    Trigger rows outlive upgrades and are read by whichever release runs the triggerer, so the
    triggers keep writing ``retry`` (as 0.1 did) and take it back without a warning: a row written
    before or after the rename deserializes alike. Code constructing a trigger may use either name.
    """
    if request_retry is not None and retry is not None:
        raise TtsConfigError(f"{owner}: give request_retry or retry (the trigger row's key for it), not both")
    value = request_retry if request_retry is not None else retry
    return dict(value) if value else None
