"""Camb's two ``language`` fields (issue 22): a BCP-47 tag or the legacy integer id, on /tts and /tts-stream.

``/tts`` sends the integer id, mapped from a tag; ``/tts-stream`` sends the tag, mapped from an id.
An unknown tag is refused when the DAG is parsed, naming the nearest valid ones; the emulator, as
strict as the vendor (an integer on ``/tts``, a tag on ``/tts-stream``), accepts what is sent.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.exceptions import TtsInvalidRequestError
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator
from airflow_provider_tts.vendors import camb_languages
from airflow_provider_tts.vendors.camb import CambAi, validate_stream_fields
from tests.conftest import ConnFactory
from tests.operators.conftest import ti_context
from tests.operators.test_submit import FakeTI, StateStore

TTS = {"text": "Hello from the emulator", "voice_id": 20303}
STREAM = {"text": "Hello from the emulator", "voice_id": 20303}


def tts_language(value: Any) -> Any:
    return CambAi.validate_create("tts", {**TTS, "language": value})["language"]


def stream_language(value: Any) -> Any:
    return validate_stream_fields({**STREAM, "language": value})["language"]


# ------------------------------------------------------------------------------------ the table


def test_table_matches_the_installed_camb_sdk() -> None:
    enums = pytest.importorskip("camb.types.language_enums")
    stream = pytest.importorskip("camb.text_to_speech.types.create_stream_tts_request_payload_language")
    sdk = {member.name.lower().replace("_", "-"): member.value for member in enums.Languages}
    assert dict(camb_languages.LEGACY_IDS) == sdk
    literal = typing.get_args(stream.CreateStreamTtsRequestPayloadLanguage)[0]
    assert set(typing.get_args(literal)) <= set(camb_languages.STREAM_TAGS)
    assert set(typing.get_args(literal)) >= camb_languages.STREAM_ONLY_TAGS


def test_table_is_one_to_one() -> None:
    assert len(set(camb_languages.LEGACY_IDS.values())) == len(camb_languages.LEGACY_IDS)
    assert camb_languages.LEGACY_IDS["en-us"] == 1
    assert camb_languages.TAG_BY_ID[1] == "en-us"


# ----------------------------------------------------------------------------------------- /tts


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        (1, 1),
        ("1", 1),  # what a template renders
        (111, 111),
        ("en-us", 1),
        ("EN-US", 1),
        ("en_US", 1),
        (" pt-BR ", 111),
        ("zh-CN-henan", 140),
        ("fil-ph", 72),
        ("en-uk", 35),  # the stream list's name for en-gb
    ],
)
def test_tts_takes_an_integer_or_a_tag_and_sends_the_integer(given: Any, sent: int) -> None:
    assert tts_language(given) == sent


def test_tts_unknown_tag_names_what_arrived_and_the_nearest_tags() -> None:
    with pytest.raises(TtsInvalidRequestError) as info:
        tts_language("en-xx")
    message = str(info.value)
    assert "language" in message
    assert "'en-xx'" in message
    assert "nearest: 'en-us'" in message
    with pytest.raises(TtsInvalidRequestError, match=r"nearest: 'fr-be', 'fr-ca', 'fr-ch', 'fr-fr'"):
        tts_language("fr")
    with pytest.raises(TtsInvalidRequestError, match=r"'english' is not a language in Camb's list; expected a BCP-47"):
        tts_language("english")


def test_tts_stream_only_tag_says_where_it_belongs() -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"'as-in' has no legacy /tts language id.*/tts-stream only"):
        tts_language("as-in")


def test_tts_integer_rules_are_unchanged() -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"language: Input should be greater than or equal to 1"):
        tts_language(0)


# ---------------------------------------------------------------------------------- /tts-stream


@pytest.mark.parametrize(
    ("given", "sent"),
    [
        ("en-us", "en-us"),
        ("EN-us", "en-us"),
        ("en_US", "en-us"),
        ("as-in", "as-in"),
        ("en-gb", "en-gb"),
        (1, "en-us"),
        ("1", "en-us"),
        (111, "pt-br"),
        (35, "en-uk"),  # the SDK's stream list spells British English en-uk
    ],
)
def test_stream_takes_a_tag_or_a_legacy_id_and_sends_the_tag(given: Any, sent: str) -> None:
    assert stream_language(given) == sent


def test_stream_unknown_tag_names_the_nearest_tags() -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"'pt-xx' is not a language in Camb's list \(nearest: 'pt-br'"):
        stream_language("pt-xx")


def test_stream_unknown_integer_and_bad_shape_are_refused() -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"language: .*BCP-47.*999 is not one of the legacy integer ids"):
        stream_language(999)
    with pytest.raises(TtsInvalidRequestError, match=r"language: String should match pattern"):
        stream_language("english (us)")
    with pytest.raises(TtsInvalidRequestError, match=r"language: Input should be a valid string"):
        stream_language(True)


# ------------------------------------------------------------------------- operators, parse time


def test_operators_map_or_refuse_at_construction(tmp_path: Path) -> None:
    dest = f"file://{tmp_path}/"
    CambTtsToStorageOperator(task_id="a", destination=dest, text="hi", voice_id=1, language="EN-us")
    with pytest.raises(TtsInvalidRequestError, match=r"'en-xx'.*nearest: 'en-us'"):
        CambTtsToStorageOperator(task_id="b", destination=dest, text="hi", voice_id=1, language="en-xx")
    with pytest.raises(TtsInvalidRequestError, match=r"'en-xx'.*nearest: 'en-us'"):
        CambTtsBatchToStorageOperator(
            task_id="c", destination=dest, items=["hi"], defaults={"voice_id": 1, "language": "en-xx"}
        )
    stream = CambTtsStreamToStorageOperator(
        task_id="d",
        destination=dest,
        text="hello",
        voice_id=1,
        language=1,  # type: ignore[arg-type]
    )
    assert stream.stream_body()["language"] == "en-us"
    with pytest.raises(TtsInvalidRequestError, match=r"'en-xx'.*nearest: 'en-us'"):
        CambTtsStreamToStorageOperator(task_id="e", destination=dest, text="hello", voice_id=1, language="en-xx")


def test_templated_language_is_checked_after_rendering(tmp_path: Path) -> None:
    op = CambTtsToStorageOperator(
        task_id="a", destination=f"file://{tmp_path}/", text="hi", voice_id=1, language="{{ params.lang }}"
    )
    op.language = "DE_de"  # as if rendered
    assert CambAi.validate_create("tts", op.create_fields())["language"] == 31


# ------------------------------------------------------------------------------ against the emulator


def test_tts_tag_reaches_the_emulator_as_the_integer(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = CambTtsToStorageOperator(
        task_id="speak",
        tts_conn_id=make_conn("camb_ai"),
        destination=f"file://{tmp_path}/",
        text="Hello from the emulator",
        voice_id=20303,
        language="EN_us",
        deferrable=False,
        poll_interval=0.05,
    )
    result = op.execute({"ti": FakeTI(task_id="speak"), "task_state_store": StateStore()})
    assert emu.task_info(result["tts_task_id"])["body"]["language"] == 1
    assert (tmp_path / Path(result["uri"]).name).stat().st_size == result["size_bytes"]


def test_stream_integer_reaches_the_emulator_as_the_tag(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    conn = make_conn("camb_ai")

    def run(language: Any) -> dict[str, Any]:
        return CambTtsStreamToStorageOperator(  # type: ignore[no-any-return]
            task_id="speak",
            tts_conn_id=conn,
            destination=f"file://{tmp_path}/",
            text="Hello from the emulator",
            voice_id=20303,
            language=language,
            output_format="wav",
        ).execute(ti_context())

    first = run(1)
    assert first["cached"] is False
    # "EN-US" is the same request as 1: same body, same file, served from the cache, paid once.
    again = run("EN-US")
    assert (again["cached"], again["uri"], again["fingerprint"]) == (True, first["uri"], first["fingerprint"])
    assert emu.stats()["requests_by_endpoint"].get("stream", 0) == 1
