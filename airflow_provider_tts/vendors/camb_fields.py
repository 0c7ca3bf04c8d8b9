"""Camb.ai's documented request bodies, as pydantic models that forbid unknown keys.

Apart from :mod:`.camb` so that importing the vendor (every operator module does, for its class
attributes) builds no model: defining nine pydantic classes costs a DAG parse several milliseconds
even with ``defer_build``. They are imported when a create body is first validated.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from airflow_provider_tts.constants import Kind
from airflow_provider_tts.vendors import camb_languages
from airflow_provider_tts.vendors.base import NonEmptyText
from airflow_provider_tts.vendors.camb import DEFAULT_STREAM_FORMAT, StreamFormat


class _CambTtsFields(BaseModel):
    """Documented body of ``POST /tts`` (legacy async TTS)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    text: NonEmptyText = Field(description="the words to speak")
    voice_id: int = Field(description="an integer voice id from Camb's voice list, e.g. 20303")
    language: int = Field(ge=1, description="a BCP-47 tag such as 'en-us', or Camb's integer language id, e.g. 1")
    gender: Literal[0, 1, 2, 9] | None = None
    age: int | None = Field(default=None, ge=0, le=150)
    project_name: str | None = None
    project_description: str | None = None
    folder_id: int | None = None

    @field_validator("language", mode="before")
    @classmethod
    def _language_tag_to_id(cls, value: Any) -> Any:
        # /tts takes only the integer id on the wire; a tag is mapped from Camb's language list.
        return camb_languages.legacy_language_id(value)


class _CambTextToSoundFields(BaseModel):
    """Documented body of ``POST /text-to-sound``."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    prompt: NonEmptyText = Field(description="a description of the sound, e.g. 'rain on a tin roof'")
    duration: float | None = Field(default=None, gt=0, le=10)
    audio_type: Literal["sound", "music"] | None = None
    project_name: str | None = None
    project_description: str | None = None
    folder_id: int | None = None


class _StreamOutputConfiguration(BaseModel):
    """``output_configuration`` of ``/tts-stream`` (the SDK's ``StreamTtsOutputConfiguration``)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    format: StreamFormat = DEFAULT_STREAM_FORMAT
    duration: float | None = Field(default=None, gt=0, le=600)
    apply_enhancement: bool | None = None
    sample_rate: Literal[8000, 16000, 22050, 24000, 32000, 44100, 48000] | None = None


class _StreamVoiceSettings(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    enhance_reference_audio_quality: bool | None = None
    maintain_source_accent: bool | None = None
    apply_ref_loudness_norm: bool | None = None
    speaking_rate: float | None = Field(default=None, gt=0, le=4)


class _StreamInferenceOptions(BaseModel):
    """Ranges as the SDK's docstring states them."""

    model_config = ConfigDict(extra="forbid", defer_build=True)
    stability: float | None = Field(default=None, ge=0, le=1)
    temperature: float | None = Field(default=None, ge=0.01, le=4)
    inference_steps: int | None = Field(default=None, ge=1, le=1000)
    speaker_similarity: float | None = Field(default=None, ge=0, le=1)
    localize_speaker_weight: float | None = Field(default=None, ge=0, le=1)
    acoustic_quality_boost: bool | None = None


class CambTtsStreamFields(BaseModel):
    """Documented body of ``POST /tts-stream`` (Camb's recommended, synchronous TTS).

    Strict where the vendor documents a rule (text of 3-3000 characters, a BCP-47 language string
    from Camb's list, an integer voice id, the listed output formats); unknown keys are refused so a
    misspelt option fails here, before it is paid for, rather than being ignored by the vendor. A
    legacy integer language id is mapped to its tag. ``voice_id`` is required: the SDK refuses a
    call without it for Camb's own provider.
    """

    model_config = ConfigDict(extra="forbid", strict=False, defer_build=True)
    text: str = Field(min_length=3, max_length=3000)
    language: str = Field(
        pattern=camb_languages.BCP47_PATTERN, description="BCP-47 tag such as en-us (a legacy integer id is mapped)"
    )
    voice_id: int = Field(ge=0)
    speech_model: Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9.\-]{0,63}$")] | None = None
    user_instructions: str | None = Field(default=None, max_length=3000)
    enhance_named_entities_pronunciation: bool | None = None
    output_configuration: _StreamOutputConfiguration = Field(default_factory=_StreamOutputConfiguration)
    voice_settings: _StreamVoiceSettings | None = None
    inference_options: _StreamInferenceOptions | None = None

    @field_validator("text")
    @classmethod
    def _text_not_blank(cls, value: str) -> str:
        if len(value.strip()) < 3:
            raise ValueError("text must have at least 3 characters that are not whitespace")
        return value

    @field_validator("language", mode="before")
    @classmethod
    def _language_is_a_tag(cls, value: Any) -> Any:
        return camb_languages.stream_language_tag(value)


#: The create body of each task kind (:attr:`.Vendor.create_fields_module` points here).
FIELDS: dict[Kind, type[BaseModel]] = {"tts": _CambTtsFields, "text-to-sound": _CambTextToSoundFields}
