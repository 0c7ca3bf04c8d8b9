"""Request validation for the vendor create calls, in each vendor's own error style.

Camb.ai is a FastAPI service, so its 422 bodies follow pydantic v2 (``{"detail": [{"type", "loc",
"msg", "input"}]}``). RevidAPI's error shape is undocumented; a plain ``{"code", "status", "message",
"errors"}`` object is used. Validation is deliberately about as strict as the vendors: a hook that
sends the wrong type should find out here, not in production.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

from .audio import AudioSource, Segment
from .spec import strip_markers

ErrorList = list[dict[str, Any]]

_SRT_TIME = re.compile(r"^(\d{1,2}):([0-5]\d):([0-5]\d),(\d{3})$")
_INT_STR = re.compile(r"^\s*[-+]?\d+\s*$")
_MISSING = object()


# ---------------------------------------------------------------------------------------------
# Camb.ai (pydantic-style errors)


def _err(loc: str, typ: str, msg: str, value: object) -> dict[str, Any]:
    return {"type": typ, "loc": ["body", loc], "msg": msg, "input": value}


def _check_int(errors: ErrorList, name: str, value: object) -> None:
    if isinstance(value, bool):
        errors.append(_err(name, "int_type", "Input should be a valid integer", value))
    elif isinstance(value, int):
        return
    elif isinstance(value, float):
        if not value.is_integer():
            errors.append(
                _err(
                    name,
                    "int_from_float",
                    "Input should be a valid integer, got a number with a fractional part",
                    value,
                )
            )
    elif isinstance(value, str):
        if not _INT_STR.match(value):
            errors.append(
                _err(
                    name, "int_parsing", "Input should be a valid integer, unable to parse string as an integer", value
                )
            )
    else:
        errors.append(_err(name, "int_type", "Input should be a valid integer", value))


def _check_str(errors: ErrorList, name: str, value: object, *, min_length: int = 0) -> None:
    if not isinstance(value, str):
        errors.append(_err(name, "string_type", "Input should be a valid string", value))
    elif len(value.strip()) < min_length:
        errors.append(_err(name, "string_too_short", f"String should have at least {min_length} character", value))


def _not_object(body: object) -> ErrorList:
    return [
        {
            "type": "model_attributes_type",
            "loc": ["body"],
            "msg": "Input should be a valid dictionary or object to extract fields from",
            "input": body,
        }
    ]


def validate_camb_tts(body: object) -> ErrorList:
    """``POST /tts``: text, voice_id and language (an integer id) are required."""
    if not isinstance(body, Mapping):
        return _not_object(body)
    errors: ErrorList = []
    for name in ("text", "voice_id", "language"):
        if body.get(name) is None:
            errors.append(_err(name, "missing", "Field required", dict(body)))
    if body.get("text") is not None:
        _check_str(errors, "text", body["text"], min_length=1)
    for name in ("voice_id", "language", "age", "folder_id"):
        if body.get(name) is not None:
            _check_int(errors, name, body[name])
    gender = body.get("gender")
    if gender is not None:
        before = len(errors)
        _check_int(errors, "gender", gender)
        if len(errors) == before and int(gender) not in (0, 1, 2, 9):  # type: ignore[call-overload]
            errors.append(_err("gender", "enum", "Input should be 0, 1, 2 or 9", gender))
    for name in ("project_name", "project_description"):
        if body.get(name) is not None:
            _check_str(errors, name, body[name])
    return errors


def validate_camb_sound(body: object) -> ErrorList:
    """``POST /text-to-sound``: prompt required; duration in (0, 10]; audio_type sound|music."""
    if not isinstance(body, Mapping):
        return _not_object(body)
    errors: ErrorList = []
    if body.get("prompt") is None:
        errors.append(_err("prompt", "missing", "Field required", dict(body)))
    else:
        _check_str(errors, "prompt", body["prompt"], min_length=1)
    duration = body.get("duration")
    if duration is not None:
        if isinstance(duration, bool) or not isinstance(duration, (int, float)) or not math.isfinite(duration):
            errors.append(_err("duration", "float_type", "Input should be a valid number", duration))
        elif duration <= 0:
            errors.append(_err("duration", "greater_than", "Input should be greater than 0", duration))
        elif duration > 10:
            errors.append(_err("duration", "less_than_equal", "Input should be less than or equal to 10", duration))
    audio_type = body.get("audio_type")
    if audio_type is not None and audio_type not in ("sound", "music"):
        errors.append(_err("audio_type", "enum", "Input should be 'sound' or 'music'", audio_type))
    for name in ("project_name", "project_description"):
        if body.get(name) is not None:
            _check_str(errors, name, body[name])
    if body.get("folder_id") is not None:
        _check_int(errors, "folder_id", body["folder_id"])
    return errors


def camb_source(kind: str, body: Mapping[str, Any]) -> AudioSource:
    """The audio a valid Camb.ai create body asks for (music ignores ``duration``, as documented)."""
    if kind == "tts":
        return AudioSource("speech", text=strip_markers(body["text"]))
    audio_type = body.get("audio_type") or "sound"
    duration = body.get("duration")
    seconds = 8.0 if duration is None or audio_type == "music" else float(duration)
    return AudioSource(audio_type, text=strip_markers(body["prompt"]), seconds=seconds)


# ---------------------------------------------------------------------------------------------
# RevidAPI


def _field(errors: ErrorList, name: str, message: str) -> None:
    errors.append({"field": name, "message": message})


def _number_in(errors: ErrorList, body: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = body.get(name, _MISSING)
    if value is _MISSING or value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        _field(errors, name, "must be a number")
    elif not low <= value <= high:
        _field(errors, name, f"must be between {low:g} and {high:g}")


def _optional(errors: ErrorList, body: Mapping[str, Any], name: str, types: tuple[type, ...], what: str) -> None:
    value = body.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, types)):
        _field(errors, name, f"must be {what}")


def _choice(errors: ErrorList, body: Mapping[str, Any], name: str, allowed: tuple[str, ...]) -> None:
    value = body.get(name)
    if value is not None and value not in allowed:
        _field(errors, name, f"must be one of {', '.join(allowed)}")


def _webhook(errors: ErrorList, body: Mapping[str, Any]) -> None:
    url = body.get("webhook_url")
    if url is not None and (not isinstance(url, str) or not url.startswith(("http://", "https://"))):
        _field(errors, "webhook_url", "must be an http(s) URL")


def validate_revid_tts(body: object) -> ErrorList:
    """``POST /paid/text-to-speech``."""
    if not isinstance(body, Mapping):
        return [{"field": "body", "message": "must be a JSON object"}]
    errors: ErrorList = []
    text = body.get("text")
    if not isinstance(text, str) or not text.strip():
        _field(errors, "text", "is required and must be a non-empty string")
    _choice(errors, body, "engine", ("edge", "capcut", "google"))
    _optional(errors, body, "voice_id", (int,), "an integer")
    _optional(errors, body, "voice", (str,), "a string")
    _number_in(errors, body, "speed", 0.5, 2.0)
    _number_in(errors, body, "pitch", -20, 20)
    _webhook(errors, body)
    _optional(errors, body, "id", (str, int), "a string")
    return errors


def parse_srt_time(value: object) -> float | None:
    """``HH:MM:SS,mmm`` to seconds, or ``None`` when malformed."""
    if not isinstance(value, str):
        return None
    match = _SRT_TIME.match(value)
    if not match:
        return None
    hours, minutes, seconds, millis = (int(part) for part in match.groups())
    return hours * 3600 + minutes * 60 + seconds + millis / 1000


def validate_revid_srt(body: object) -> ErrorList:
    """``POST /paid/srt-to-speech/merge``: V1 (``subtitles`` list) or V2 (``srt_url``)."""
    if not isinstance(body, Mapping):
        return [{"field": "body", "message": "must be a JSON object"}]
    errors: ErrorList = []
    if "subtitles" in body:
        subtitles = body["subtitles"]
        if not isinstance(subtitles, list) or not subtitles:
            _field(errors, "subtitles", "must be a non-empty list")
        else:
            for i, sub in enumerate(subtitles):
                where = f"subtitles[{i}]"
                if not isinstance(sub, Mapping):
                    _field(errors, where, "must be an object")
                    continue
                index = sub.get("index")
                if isinstance(index, bool) or not isinstance(index, int):
                    _field(errors, f"{where}.index", "is required and must be an integer")
                start, end = parse_srt_time(sub.get("start")), parse_srt_time(sub.get("end"))
                if start is None:
                    _field(errors, f"{where}.start", "is required in HH:MM:SS,mmm format")
                if end is None:
                    _field(errors, f"{where}.end", "is required in HH:MM:SS,mmm format")
                if start is not None and end is not None and end < start:
                    _field(errors, f"{where}.end", "must not be before start")
                text = sub.get("text")
                if not isinstance(text, str) or not text.strip():
                    _field(errors, f"{where}.text", "is required and must be a non-empty string")
        _optional(errors, body, "voice_id", (int,), "an integer")
        _number_in(errors, body, "speed", 0.5, 2.0)
        _optional(errors, body, "audio_name", (str,), "a string")
        _choice(errors, body, "mode", ("merge", "timeline"))
        _number_in(errors, body, "add_silence", 0, 60)
    elif "srt_url" in body:
        url = body["srt_url"]
        if not isinstance(url, str) or not url.strip():
            _field(errors, "srt_url", "must be a non-empty URL string")
        _optional(errors, body, "video_url", (str,), "a string")
        _choice(errors, body, "engine", ("edge", "capcut", "google"))
        _optional(errors, body, "voice", (str,), "a string")
        _choice(errors, body, "output_format", ("mp4", "mp3", "wav"))
    else:
        _field(errors, "subtitles", "either subtitles (V1) or srt_url (V2) is required")
    _webhook(errors, body)
    _optional(errors, body, "id", (str, int), "a string")
    return errors


def revid_source(kind: str, body: Mapping[str, Any]) -> AudioSource:
    """TTS speaks the text; SRT V1 places each subtitle on its timeline; V2 gets a short placeholder."""
    if kind == "tts":
        return AudioSource("speech", text=strip_markers(body["text"]))
    subtitles = body.get("subtitles")
    if not subtitles:
        return AudioSource("speech", text="Subtitle audio")
    segments = []
    for sub in subtitles:
        start = parse_srt_time(sub["start"])
        end = parse_srt_time(sub["end"])
        assert start is not None  # validated before
        assert end is not None
        segments.append(Segment(start, end, strip_markers(sub["text"])))
    segments.sort(key=lambda seg: seg.start)
    silence = float(body.get("add_silence") or 0)
    total = max(seg.end for seg in segments) + silence
    return AudioSource("timeline", seconds=total, segments=tuple(segments))


# ---------------------------------------------------------------------------------------------
# Camb.ai /tts-stream

#: ``output_configuration.format`` values of ``/tts-stream`` (the SDK's ``OutputFormat``).
CAMB_STREAM_FORMATS: tuple[str, ...] = (
    "wav",
    "flac",
    "mp3",
    "adts",
    "pcm_s16le",
    "pcm_s16be",
    "pcm_s32le",
    "pcm_s32be",
    "pcm_f32le",
    "pcm_f32be",
)
_BCP47 = re.compile(r"^[A-Za-z]{2,3}(-[A-Za-z0-9]{2,8})*$")
_STREAM_KEYS = frozenset(
    {
        "text",
        "language",
        "voice_id",
        "speech_model",
        "user_instructions",
        "enhance_named_entities_pronunciation",
        "output_configuration",
        "voice_settings",
        "inference_options",
    }
)


def validate_camb_stream(body: object) -> ErrorList:
    """``POST /tts-stream``: text of 3-3000 characters, a BCP-47 ``language`` string, an integer
    ``voice_id``, an ``output_configuration`` object whose ``format`` is one of the documented ones.

    Null optional fields are accepted (the SDK sends ``null`` for options the caller passed as
    None); unknown top-level keys are not checked, as FastAPI ignores them by default.
    """
    if not isinstance(body, Mapping):
        return _not_object(body)
    errors: ErrorList = []
    for name in ("text", "language", "voice_id"):
        if body.get(name) is None:
            errors.append(_err(name, "missing", "Field required", dict(body)))
    text = body.get("text")
    if text is not None:
        if not isinstance(text, str):
            errors.append(_err("text", "string_type", "Input should be a valid string", text))
        elif len(text) < 3:
            errors.append(_err("text", "string_too_short", "String should have at least 3 characters", text))
        elif len(text) > 3000:
            errors.append(_err("text", "string_too_long", "String should have at most 3000 characters", text))
    language = body.get("language")
    if language is not None and (not isinstance(language, str) or not _BCP47.match(language)):
        errors.append(_err("language", "enum", "Input should be a BCP-47 language code such as 'en-us'", language))
    if body.get("voice_id") is not None:
        _check_int(errors, "voice_id", body["voice_id"])
    if body.get("speech_model") is not None:
        _check_str(errors, "speech_model", body["speech_model"], min_length=1)
    config = body.get("output_configuration")
    if config is not None:
        if not isinstance(config, Mapping):
            errors.append(_err("output_configuration", "model_type", "Input should be an object", config))
        else:
            fmt = config.get("format")
            if fmt is not None and fmt not in CAMB_STREAM_FORMATS:
                errors.append(
                    {
                        "type": "enum",
                        "loc": ["body", "output_configuration", "format"],
                        "msg": "Input should be " + ", ".join(repr(f) for f in CAMB_STREAM_FORMATS),
                        "input": fmt,
                    }
                )
    for name in ("voice_settings", "inference_options"):
        value = body.get(name)
        if value is not None and not isinstance(value, Mapping):
            errors.append(_err(name, "model_type", "Input should be an object", value))
    return errors


def camb_stream_format(body: Mapping[str, Any]) -> str:
    """The requested output format; the vendor's default is mp3 (per the SDK)."""
    config = body.get("output_configuration") or {}
    return str(config.get("format") or "mp3")


def camb_stream_credits(body: Mapping[str, Any]) -> int:
    """What the emulator says a stream costs: one credit per character (its own rule; Camb publishes none)."""
    return len(str(body["text"]))
