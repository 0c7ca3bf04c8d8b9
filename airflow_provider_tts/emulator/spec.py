"""What a task should do: outcome, timing, audio and response variants, plus the magic-marker grammar.

Three ways exist to choose a task's behaviour (the Python API, the control HTTP API and markers in the
submitted text). All three funnel through :func:`build_spec`, so they accept the same keys with the
same validation, and a marker typo is rejected exactly like a bad keyword argument.

Marker grammar (case-sensitive ``emu:`` prefix, anywhere inside any string field of a create body)::

    marker  := "[emu:" entry ("," entry)* "]"
    entry   := key "=" value          (spaces around key and value are ignored)
    value   := any characters except "," "[" "]"

Keys: ``outcome``, ``delay`` (seconds, float or ``inf``), ``reason``, ``audio_bytes`` (integer,
optional suffix K/M/G = KiB/MiB/GiB), ``audio_format`` (``flac``|``wav``), ``not_found_for`` (seconds),
``pending_polls`` (the first N status polls answer pending whatever the time: deterministic waits),
and the per-vendor variant keys in :data:`VARIANT_KEYS`. Several markers merge left to right. Markers
are removed from the text before audio is synthesised.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from .config import (
    APIS,
    CAMB,
    CREATE_RESPONSES,
    DURATION_KEYS,
    KINDS,
    OUTCOME_ALIASES,
    OUTCOMES,
    RESULT_KEYS,
    REVID,
    STATUS_HTTP,
    URL_KEYS,
    ConfigError,
)

MIN_WAV_BYTES = 44
MAX_WAV_BYTES = 0xFFFFFFFF

MARKER_RE = re.compile(r"\[emu:([^\[\]]*)\]")


class SpecError(ConfigError):
    """A task specification (keyword arguments, control JSON or marker) that makes no sense."""


def _as_str(key: str, value: object) -> str:
    if not isinstance(value, str) or not value:
        raise SpecError(f"{key} must be a non-empty string; got {value!r}")
    return value


def _as_bool(key: str, value: object) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("1", "true", "yes", "on"):
            return True
        if lowered in ("0", "false", "no", "off"):
            return False
    raise SpecError(f"{key} must be a boolean; got {value!r}")


def _as_seconds(key: str, value: object) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise SpecError(f"{key} must be a number of seconds; got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SpecError(f"{key} must be a number of seconds; got {value!r}")
    number = float(value)
    if math.isnan(number) or number < 0:
        raise SpecError(f"{key} must be >= 0; got {value!r}")
    return number


_SIZE_SUFFIX = {
    "": 1,
    "K": 1024,
    "KB": 1024,
    "KIB": 1024,
    "M": 1024**2,
    "MB": 1024**2,
    "MIB": 1024**2,
    "G": 1024**3,
    "GB": 1024**3,
    "GIB": 1024**3,
}


def _as_size(key: str, value: object) -> int:
    if isinstance(value, str):
        match = re.fullmatch(r"\s*(\d+)\s*([A-Za-z]*)\s*", value)
        if not match or match.group(2).upper() not in _SIZE_SUFFIX:
            raise SpecError(f"{key} must be a byte count like 1048576 or 50M; got {value!r}")
        value = int(match.group(1)) * _SIZE_SUFFIX[match.group(2).upper()]
    if isinstance(value, bool) or not isinstance(value, int):
        raise SpecError(f"{key} must be an integer byte count; got {value!r}")
    if not MIN_WAV_BYTES <= value <= MAX_WAV_BYTES:
        raise SpecError(f"{key} must be between {MIN_WAV_BYTES} and {MAX_WAV_BYTES}; got {value}")
    return value


def _as_count(key: str, value: object) -> int:
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 1_000_000:
        raise SpecError(f"{key} must be a whole number from 0 to 1000000; got {value!r}")
    return value


def _one_of(*allowed: str) -> Callable[[str, object], object]:
    def check(key: str, value: object) -> object:
        if value not in allowed:
            raise SpecError(f"{key} must be one of {', '.join(allowed)}; got {value!r}")
        return value

    return check


VARIANT_KEYS: dict[str, dict[str, Callable[[str, object], object]]] = {
    CAMB: {
        "url_key": _one_of(*URL_KEYS),
        "unknown_value": _as_str,
    },
    REVID: {
        "create_response": _one_of(*CREATE_RESPONSES),
        "status_http": _one_of(*STATUS_HTTP),
        "wrap_array": _as_bool,
        "result_key": _one_of(*RESULT_KEYS),
        "duration_key": _one_of(*DURATION_KEYS),
        "status_synonyms": _as_bool,
        "unknown_value": _as_str,
    },
}
"""Per-task overrides of the matching ``EmulatorConfig`` fields (``camb_*`` / ``revid_*``)."""

BASE_KEYS = ("outcome", "delay", "reason", "audio_bytes", "audio_format", "not_found_for", "pending_polls")


@dataclass(frozen=True)
class TaskSpec:
    """The resolved behaviour of one task; ``None`` fields fall back to the live ``EmulatorConfig``."""

    outcome: str = "success"
    delay: float | None = None
    reason: str | None = None
    audio_bytes: int | None = None
    audio_format: str | None = None
    not_found_for: float | None = None
    pending_polls: int | None = None
    variants: tuple[tuple[str, object], ...] = ()

    def variant(self, name: str) -> object | None:
        """The per-task override of variant ``name``, or ``None`` to use the global config."""
        for key, value in self.variants:
            if key == name:
                return value
        return None

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view (``inf`` delays become the string ``"inf"``)."""
        return {
            "outcome": self.outcome,
            "delay": _json_seconds(self.delay),
            "reason": self.reason,
            "audio_bytes": self.audio_bytes,
            "audio_format": self.audio_format,
            "not_found_for": _json_seconds(self.not_found_for),
            "pending_polls": self.pending_polls,
            "variants": dict(self.variants),
        }


def _json_seconds(value: float | None) -> float | str | None:
    if value is not None and math.isinf(value):
        return "inf"
    return value


def check_api_kind(api: object, kind: object) -> tuple[str, str]:
    """Validate an (api, kind) pair, the first thing every entry point checks."""
    if api not in APIS:
        raise SpecError(f"api must be one of {', '.join(APIS)}; got {api!r}")
    assert isinstance(api, str)
    if kind not in KINDS[api]:
        raise SpecError(f"kind for {api} must be one of {', '.join(KINDS[api])}; got {kind!r}")
    assert isinstance(kind, str)
    return api, kind


def build_spec(api: str, kind: str, values: Mapping[str, object], base: TaskSpec | None = None) -> TaskSpec:
    """Validate ``values`` (typed or marker strings) on top of ``base`` for an (api, kind).

    ``None`` values are ignored, so optional keyword arguments can be passed through unchanged.
    """
    check_api_kind(api, kind)
    base = base or TaskSpec()
    outcome = base.outcome
    delay, reason = base.delay, base.reason
    audio_bytes, audio_format, not_found_for = base.audio_bytes, base.audio_format, base.not_found_for
    pending_polls = base.pending_polls
    variants = dict(base.variants)
    allowed_variants = VARIANT_KEYS[api]
    for key, value in values.items():
        if value is None:
            continue
        if key == "outcome":
            name = _as_str(key, value).strip().lower()
            name = OUTCOME_ALIASES[api].get(name, name)
            if name not in OUTCOMES[api]:
                raise SpecError(f"outcome for {api} must be one of {', '.join(OUTCOMES[api])}; got {value!r}")
            outcome = name
        elif key == "delay":
            delay = _as_seconds(key, value)
        elif key == "reason":
            reason = _as_str(key, value)
        elif key == "audio_bytes":
            audio_bytes = _as_size(key, value)
        elif key == "audio_format":
            fmt = _as_str(key, value).lower()
            allowed = ("flac", "wav") if (api, kind) == (CAMB, "tts") else ("wav",)
            if fmt not in allowed:
                raise SpecError(f"audio_format for {api}/{kind} must be one of {', '.join(allowed)}; got {value!r}")
            audio_format = fmt
        elif key == "not_found_for":
            not_found_for = _as_seconds(key, value)
        elif key == "pending_polls":
            pending_polls = _as_count(key, value)
        elif key in allowed_variants:
            variants[key] = allowed_variants[key](key, value)
        else:
            known = (*BASE_KEYS, *allowed_variants)
            raise SpecError(f"unknown setting {key!r} for {api}; known: {', '.join(known)}")
    return TaskSpec(
        outcome=outcome,
        delay=delay,
        reason=reason,
        audio_bytes=audio_bytes,
        audio_format=audio_format,
        not_found_for=not_found_for,
        pending_polls=pending_polls,
        variants=tuple(sorted(variants.items())),
    )


def parse_marker(content: str) -> dict[str, str]:
    """Split the inside of one ``[emu:...]`` marker into raw key/value strings."""
    out: dict[str, str] = {}
    for entry in content.split(","):
        if not entry.strip():
            continue
        key, sep, value = entry.partition("=")
        if not sep or not key.strip():
            raise SpecError(f"emulator marker entry {entry.strip()!r} is not key=value")
        out[key.strip()] = value.strip()
    return out


def _strings(value: object, depth: int = 0) -> Iterator[str]:
    if depth > 8:
        return
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _strings(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item, depth + 1)


def markers_in(body: object) -> dict[str, str]:
    """All marker settings found in any string of a create body, merged left to right."""
    found: dict[str, str] = {}
    for text in _strings(body):
        if "[emu:" not in text:
            continue
        for match in MARKER_RE.finditer(text):
            found.update(parse_marker(match.group(1)))
    return found


def strip_markers(text: str) -> str:
    """The text a human would have sent: markers removed, whitespace tidied."""
    if "[emu:" not in text:
        return text
    return " ".join(MARKER_RE.sub(" ", text).split())
