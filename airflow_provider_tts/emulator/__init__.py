"""Local emulator of the Camb.ai and RevidAPI text-to-speech job APIs.

It exists so the provider (hook, triggers, sensors, operators) can be tested end to end, offline and
deterministically, including the awkward parts of the real services: slow jobs, every documented
failure status, undocumented response variants, rate limiting and broken connections.

One aiohttp server on one address serves every vendor host:

* Camb.ai under ``/apis`` (connection host ``Emulator.camb_base_url``),
* RevidAPI create calls under ``/paid`` and status under ``/api``
  (``Emulator.revid_base_url`` and ``Emulator.revid_status_base_url``),
* a stand-in third-party storage host under ``/storage`` that records whether the API key leaked,
* a control API under ``/_emulator`` (see :mod:`.control`).

Every vendor endpoint checks ``x-api-key`` against the configured key, by default
``DEFAULT_API_KEY = "tts-emulator-key"``.

Task behaviour is chosen by ``Emulator.create_task``/``Emulator.script_next``, by the control API,
or by a marker in the submitted text such as ``[emu:outcome=error,reason=HARMFUL_CONTENT_DETECTED]``
(grammar in :mod:`.spec`). Faults are configured with :class:`FaultConfig` or ``Emulator.inject``.

Outcomes (a task shows PENDING/``processing`` for its ``delay``, then the outcome):

* Camb.ai: ``success``, ``error`` (``reason`` -> ``exception_reason``, default ``INTERNAL_ERROR``),
  ``timeout``, ``payment_required``, ``not_found`` (status answers 404 ``{"detail": "Task not
  found"}``, as does any unknown task id), ``unknown_status`` (the undocumented status ``QUEUED``,
  or ``unknown_value``, *instead of* PENDING during the delay, then SUCCESS; ``delay=inf`` makes
  it last forever).
* RevidAPI: ``success``, ``failed`` (``reason`` -> ``error``), ``not_found`` (forever),
  ``late_visible`` (not_found for ``not_found_for`` seconds, then processing until ``delay``, then
  completed), ``unknown_status`` (``queued`` with code 202 during the delay, then completed).
  By default the HTTP status line mirrors the body's ``code``: a failed task answers HTTP 500.

Decisions worth knowing when testing a client against it:

* Faults are applied before anything else, so a faulted create never creates; ``slow`` is the
  exception: it delays, then handles the request normally (the task *is* created even if the
  client timed out meanwhile).
* aiohttp clients resend an idempotent request once after a disconnect, so one injected ``reset``
  on a GET is invisible to them: inject two to make one surface.
* ``stats()["creates"]`` is sparse (never-created pairs are absent); ``polls_by_task`` counts every
  status request naming the task, faulted or not; control API calls are counted only under
  ``requests_by_endpoint["control"]`` and never appear in ``requests_total`` or the request log.
* ``audio_bytes=N`` always yields a WAV of exactly N bytes (even where FLAC is the default).
* A task's audio is rendered in the background when it is created (two threads), so its
  download rarely waits; thousands of creates queue thousands of renders, though, and rendered
  audio sits in an LRU of ``audio_cache_mb`` (default 64 MiB, ~70 ten-second tasks): audio
  evicted before its download is rendered again. ``stats()["audio"]`` shows ``background``
  renders not yet done, ``renders`` made and ``evictions``; a benchmark waits for ``background``
  to be 0 and sizes ``audio_cache_mb`` (``--audio-cache-mb``) to ~1 MB per task it downloads.
* Validation is about as strict as the vendors: Camb.ai integers accept ``1``, ``1.0`` and ``"1"``
  (pydantic's lax mode) but ``language="en-us"`` is a 422; a form-encoded body is a 422.

Run standalone with ``python -m airflow_provider_tts.emulator --help``. Only the standard library
and aiohttp are imported, so it starts fast and never pulls in Airflow.
"""

from __future__ import annotations

from .config import (
    APIS,
    DEFAULT_API_KEY,
    FAULT_ENDPOINTS,
    FAULT_KINDS,
    KINDS,
    OUTCOMES,
    ConfigError,
    EmulatorConfig,
    FaultConfig,
)
from .emulator import Emulator
from .spec import VARIANT_KEYS, SpecError

__all__ = [
    "APIS",
    "DEFAULT_API_KEY",
    "FAULT_ENDPOINTS",
    "FAULT_KINDS",
    "KINDS",
    "OUTCOMES",
    "VARIANT_KEYS",
    "ConfigError",
    "Emulator",
    "EmulatorConfig",
    "FaultConfig",
    "SpecError",
]
