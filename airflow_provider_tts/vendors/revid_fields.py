"""RevidAPI's documented request bodies, as pydantic models that forbid unknown keys.

Apart from :mod:`.revid` for the reason :mod:`.camb_fields` gives: importing the vendor builds no
model; a create body's first validation imports them.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator

from airflow_provider_tts.constants import Kind
from airflow_provider_tts.vendors.base import NonEmptyText

HttpUrl = Annotated[str, StringConstraints(strip_whitespace=True, pattern=r"^https?://[^\s/?#]+\S*$")]
SrtTime = Annotated[str, StringConstraints(pattern=r"^\d{2}:[0-5]\d:[0-5]\d,\d{3}$")]


class _RevidTtsFields(BaseModel):
    """Documented body of ``POST /paid/text-to-speech``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    text: NonEmptyText = Field(description="the words to speak")
    engine: Literal["edge", "capcut", "google"] | None = None
    voice_id: int | None = None
    voice: str | None = None
    speed: float | None = Field(default=None, ge=0.5, le=2.0)
    pitch: float | None = Field(default=None, ge=-20, le=20)
    webhook_url: HttpUrl | None = None
    id: str | None = None


class Subtitle(BaseModel):
    """One SRT cue as RevidAPI's SRT-to-speech V1 body takes it."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    index: int = Field(ge=0)
    start: SrtTime
    end: SrtTime
    text: NonEmptyText


class _RevidSrtFields(BaseModel):
    """Both documented versions of ``POST /paid/srt-to-speech/merge``: V1 cues or V2 ``srt_url``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    subtitles: list[Subtitle] | None = Field(default=None, min_length=1)
    srt_url: HttpUrl | None = None
    video_url: HttpUrl | None = None
    engine: Literal["edge", "capcut", "google"] | None = None
    voice_id: int | None = None
    voice: str | None = None
    speed: float | None = Field(default=None, ge=0.5, le=2.0)
    audio_name: str | None = None
    mode: Literal["merge", "timeline"] | None = None
    add_silence: float | None = Field(default=None, ge=0)
    output_format: Literal["mp4", "mp3", "wav"] | None = None
    webhook_url: HttpUrl | None = None
    id: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> _RevidSrtFields:
        if (self.subtitles is None) == (self.srt_url is None):
            raise ValueError("give exactly one of 'subtitles' (a list of cues) or 'srt_url'")
        return self


#: The create body of each task kind (:attr:`.Vendor.create_fields_module` points here).
FIELDS: dict[Kind, type[BaseModel]] = {"tts": _RevidTtsFields, "srt-to-speech": _RevidSrtFields}
