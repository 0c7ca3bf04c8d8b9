"""Configuration of the emulator: vocabulary, global defaults and fault injection.

Everything here is a frozen dataclass so a configuration can be shared between the server thread
and the thread that drives a test without locks: changing it means swapping the whole object.
The same objects are built from JSON by the control API (``from_mapping``) so the in-process
Python API and the HTTP control API cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_API_KEY = "tts-emulator-key"
"""The key every vendor endpoint accepts unless another one is configured."""

CAMB = "camb_ai"
REVID = "revid_tts"
APIS: tuple[str, ...] = (CAMB, REVID)

KINDS: dict[str, tuple[str, ...]] = {
    CAMB: ("tts", "text-to-sound"),
    REVID: ("tts", "srt-to-speech"),
}

OUTCOMES: dict[str, tuple[str, ...]] = {
    CAMB: ("success", "error", "timeout", "payment_required", "unknown_status", "not_found"),
    REVID: ("success", "failed", "not_found", "late_visible", "unknown_status"),
}

# Each vendor names failure differently; accepting the other's word keeps markers forgiving.
OUTCOME_ALIASES: dict[str, dict[str, str]] = {
    CAMB: {"failed": "error", "fail": "error"},
    REVID: {"error": "failed", "fail": "failed"},
}

#: Transient faults: a well-behaved client retries them. Random faults draw only from these.
TRANSIENT_FAULT_KINDS: tuple[str, ...] = (
    "429",
    "429_no_retry_after",
    "429_http_date",
    "500",
    "502",
    "503",
    "504",
    "html",
    "html_200",
    "drop",
    "reset",
    "slow",
    "malformed_json",
)

#: Permanent HTTP errors in the vendor's own shape, for ``Emulator.inject`` only: ``401`` (the key was
#: revoked mid-wait), ``403`` (the key lost a permission), ``422`` (the API rejects the request). A
#: client must not retry them, so the first one ends a wait; a random rate of them would measure
#: nothing but the rate, which is why ``FaultConfig.kinds`` never picks them.
PERMANENT_FAULT_KINDS: tuple[str, ...] = ("401", "403", "422")

#: Every fault kind ``Emulator.inject`` accepts.
FAULT_KINDS: tuple[str, ...] = TRANSIENT_FAULT_KINDS + PERMANENT_FAULT_KINDS

#: ``stream`` is Camb's ``/tts-stream``: a create whose response body is the audio.
FAULT_ENDPOINTS: tuple[str, ...] = ("create", "status", "result", "storage", "stream")

AUDIO_ENGINES: tuple[str, ...] = ("auto", "espeak", "tones")

URL_KEYS: tuple[str, ...] = ("file_url", "output_url", "url")
CREATE_RESPONSES: tuple[str, ...] = ("object", "array", "immediate")
STATUS_HTTP: tuple[str, ...] = ("mirror", "always_200")
RESULT_KEYS: tuple[str, ...] = ("response", "result")
DURATION_KEYS: tuple[str, ...] = ("duration", "audio_duration")


class ConfigError(ValueError):
    """A configuration or task specification that cannot be honoured.

    Raised eagerly (at construction) so a typo in a test fails where it was written rather than
    as a confusing vendor response later.
    """


def _choice(name: str, value: object, allowed: Iterable[str]) -> str:
    options = tuple(allowed)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{name} must be one of {', '.join(options)}; got {value!r}")
    return value


def _non_negative(name: str, value: object, *, allow_inf: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a number; got {value!r}")
    number = float(value)
    if math.isnan(number) or number < 0 or (math.isinf(number) and not allow_inf):
        raise ConfigError(f"{name} must be a finite number >= 0; got {value!r}")
    return number


@dataclass(frozen=True)
class FaultConfig:
    """Random HTTP-level misbehaviour.

    ``rate`` is the probability that a request to one of ``endpoints`` fails with one of ``kinds``
    (picked uniformly). ``seed`` makes the sequence reproducible. Deterministic one-off failures
    are injected with ``Emulator.inject`` instead; those take precedence over random ones.

    ``kinds`` holds transient kinds only: permanent ones (``PERMANENT_FAULT_KINDS``) are
    injection-only, so they are left out of a list that also names transient kinds (such as the
    full ``FAULT_KINDS``), and a list naming nothing else is an error.
    """

    rate: float = 0.0
    kinds: tuple[str, ...] = TRANSIENT_FAULT_KINDS
    seed: int | None = None
    endpoints: frozenset[str] = frozenset({"status", "result", "storage"})
    retry_after: str = "1"
    slow_seconds: float = 5.0

    def __post_init__(self) -> None:
        rate = _non_negative("rate", self.rate)
        if rate > 1:
            raise ConfigError(f"rate must be within [0, 1]; got {self.rate!r}")
        object.__setattr__(self, "rate", rate)
        kinds = tuple(self.kinds)
        if not kinds:
            raise ConfigError("kinds must name at least one fault kind")
        for kind in kinds:
            _choice("fault kind", kind, FAULT_KINDS)
        kinds = tuple(kind for kind in kinds if kind not in PERMANENT_FAULT_KINDS)
        if not kinds:
            raise ConfigError(
                f"random faults must include a transient kind; {', '.join(PERMANENT_FAULT_KINDS)} "
                "can only be injected (Emulator.inject or POST /_emulator/inject)"
            )
        object.__setattr__(self, "kinds", kinds)
        endpoints = frozenset(self.endpoints)
        for endpoint in endpoints:
            _choice("fault endpoint", endpoint, FAULT_ENDPOINTS)
        object.__setattr__(self, "endpoints", endpoints)
        if self.seed is not None and (isinstance(self.seed, bool) or not isinstance(self.seed, int)):
            raise ConfigError(f"seed must be an integer or null; got {self.seed!r}")
        if not isinstance(self.retry_after, str):
            raise ConfigError(f"retry_after must be a string; got {self.retry_after!r}")
        object.__setattr__(self, "slow_seconds", _non_negative("slow_seconds", self.slow_seconds))

    @classmethod
    def from_mapping(cls, data: Mapping[str, Any]) -> FaultConfig:
        """Build from JSON-ish input; ``kinds``/``endpoints`` may be lists or comma-separated strings."""
        unknown = set(data) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ConfigError(f"unknown fault setting(s): {', '.join(sorted(unknown))}")
        values = dict(data)
        for key in ("kinds", "endpoints"):
            if key in values:
                raw = values[key]
                if isinstance(raw, str):
                    raw = [part.strip() for part in raw.split(",") if part.strip()]
                if not isinstance(raw, (list, tuple, set, frozenset)):
                    raise ConfigError(f"{key} must be a list or a comma-separated string")
                values[key] = tuple(raw) if key == "kinds" else frozenset(raw)
        if "retry_after" in values and isinstance(values["retry_after"], (int, float)):
            values["retry_after"] = str(values["retry_after"])
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view, as returned by the control API."""
        return {
            "rate": self.rate,
            "kinds": list(self.kinds),
            "seed": self.seed,
            "endpoints": sorted(self.endpoints),
            "retry_after": self.retry_after,
            "slow_seconds": self.slow_seconds,
        }


@dataclass(frozen=True)
class EmulatorConfig:
    """Global behaviour. Every ``camb_*``/``revid_*`` response variant can also be set per task.

    ``audio_base_url`` is where result/storage URLs point; ``{host}`` and ``{port}`` are replaced
    by the listening address, so ``"http://localhost:{port}"`` gives a storage host whose name
    differs from the API's ``127.0.0.1`` even with a free port picked at start.
    """

    default_delay: float = 2.0
    default_not_found_for: float = 1.0
    audio_engine: str = "auto"
    sample_rate: int = 22050
    max_audio_seconds: float = 20.0
    max_srt_seconds: float = 300.0
    #: Memory for rendered audio (an LRU; a task's PCM and its encoding each take an entry, ~0.9 MB
    #: for a 10 s tone). Audio evicted before it is downloaded is rendered again: a benchmark that
    #: downloads N tasks' audio sizes this to about N MB so the download never waits for synthesis.
    audio_cache_mb: int = 64
    # Camb.ai
    camb_tts_format: str = "flac"
    camb_tts_url_key: str = "output_url"
    camb_sound_url_key: str = "file_url"
    camb_auth_error_shape: str = "detail"
    #: Answer ``output_type=raw_bytes`` with the ``file_url`` JSON (a pre-signed, expiring storage
    #: URL) instead of the bytes, so clients' handling of Camb's file URLs can be tested.
    camb_result_as_file_url: bool = False
    camb_unknown_status: str = "QUEUED"
    # RevidAPI
    revid_create_response: str = "object"
    revid_status_http: str = "mirror"
    revid_wrap_array: bool = False
    revid_result_key: str = "response"
    revid_duration_key: str = "duration"
    revid_status_synonyms: bool = False
    revid_unknown_status: str = "queued"
    revid_invalid_status: int = 422
    require_key_on_status: bool = False
    # Storage
    audio_base_url: str | None = None
    presigned_url_ttl: float = 300.0
    revid_url_ttl: float | None = None
    storage_error_body: str = "xml"
    # Machinery
    faults: FaultConfig = field(default_factory=FaultConfig)
    request_log_size: int = 1000
    storage_log_size: int = 1000
    shutdown_timeout: float = 0.5

    def __post_init__(self) -> None:
        for name in ("default_delay", "default_not_found_for", "presigned_url_ttl", "shutdown_timeout"):
            object.__setattr__(self, name, _non_negative(name, getattr(self, name)))
        for name in ("max_audio_seconds", "max_srt_seconds"):
            if _non_negative(name, getattr(self, name)) < 0.5:
                raise ConfigError(f"{name} must be at least 0.5")
        if self.revid_url_ttl is not None:
            object.__setattr__(self, "revid_url_ttl", _non_negative("revid_url_ttl", self.revid_url_ttl))
        _choice("audio_engine", self.audio_engine, AUDIO_ENGINES)
        if self.sample_rate not in (8000, 16000, 22050, 24000, 44100, 48000):
            raise ConfigError(f"sample_rate must be a common PCM rate; got {self.sample_rate!r}")
        _choice("camb_tts_format", self.camb_tts_format, ("flac", "wav"))
        _choice("camb_tts_url_key", self.camb_tts_url_key, URL_KEYS)
        _choice("camb_sound_url_key", self.camb_sound_url_key, URL_KEYS)
        _choice("camb_auth_error_shape", self.camb_auth_error_shape, ("detail", "error"))
        _choice("revid_create_response", self.revid_create_response, CREATE_RESPONSES)
        _choice("revid_status_http", self.revid_status_http, STATUS_HTTP)
        _choice("revid_result_key", self.revid_result_key, RESULT_KEYS)
        _choice("revid_duration_key", self.revid_duration_key, DURATION_KEYS)
        _choice("storage_error_body", self.storage_error_body, ("xml", "json"))
        for name in ("camb_unknown_status", "revid_unknown_status"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"{name} must be a non-empty string")
        if self.revid_invalid_status not in (400, 422):
            raise ConfigError(f"revid_invalid_status must be 400 or 422; got {self.revid_invalid_status!r}")
        for name in ("revid_wrap_array", "revid_status_synonyms", "require_key_on_status", "camb_result_as_file_url"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be a boolean")
        for name in ("request_log_size", "storage_log_size", "audio_cache_mb"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{name} must be a positive integer")
        if self.audio_base_url is not None and not self.audio_base_url.startswith(("http://", "https://")):
            raise ConfigError(f"audio_base_url must be an http(s) URL; got {self.audio_base_url!r}")
        if not isinstance(self.faults, FaultConfig):
            raise ConfigError("faults must be a FaultConfig")

    def replace(self, **changes: Any) -> EmulatorConfig:
        """A copy with ``changes`` applied (validated like a fresh config)."""
        unknown = set(changes) - {f.name for f in dataclasses.fields(self)}
        if unknown:
            raise ConfigError(f"unknown config field(s): {', '.join(sorted(unknown))}")
        return dataclasses.replace(self, **changes)

    def updated_from_mapping(self, data: Mapping[str, Any]) -> EmulatorConfig:
        """Apply a JSON partial update (the control API's ``POST /_emulator/config``)."""
        changes = dict(data)
        if "faults" in changes:
            changes["faults"] = FaultConfig.from_mapping(changes["faults"])
        return self.replace(**changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able view of every field."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = value.to_dict() if isinstance(value, FaultConfig) else value
        return out
