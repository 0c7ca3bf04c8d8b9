"""The one-task operators: text to stored audio in one task, typed per vendor and kind.

Against the emulator over loopback: each class submits its kind, waits (in the worker, or deferred
to the trigger and resumed as a fresh instance) and stores; a retry after a failed store re-attaches
to the task its first try paid for; fields are exactly the vendor's documented body, and a wrong
one fails when the DAG is parsed, or, when templated, after rendering and before any request.
"""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.exceptions import TtsConfigError, TtsError, TtsInvalidRequestError
from airflow_provider_tts.operators.submitting import create_field_name
from airflow_provider_tts.operators.text_to_storage import (
    BaseTextToStorageOperator,
    CambTextToSoundToStorageOperator,
    CambTtsToStorageOperator,
    RevidSrtToSpeechToStorageOperator,
    RevidTtsToStorageOperator,
)
from airflow_provider_tts.storing import STORE_ATTEMPTS
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import FIELDS, ConnFactory
from tests.operators.test_submit import SRT, FakeTI, Ledger, StateStore

CLASSES: dict[str, type[BaseTextToStorageOperator]] = {
    "camb_ai/tts": CambTtsToStorageOperator,
    "camb_ai/text-to-sound": CambTextToSoundToStorageOperator,
    "revid_tts/tts": RevidTtsToStorageOperator,
    "revid_tts/srt-to-speech": RevidSrtToSpeechToStorageOperator,
}


@pytest.fixture(params=["task_state_store", "variable"])
def ledger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    return Ledger(request.param, monkeypatch)


def _op(cls: type[BaseTextToStorageOperator], conn_id: str, destination: str, **kw: Any) -> BaseTextToStorageOperator:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    return cls(task_id="speak", tts_conn_id=conn_id, destination=destination, **kw)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _creates(emu: Any) -> int:
    return sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values())


@pytest.mark.parametrize("pair", list(CLASSES))
def test_each_class_submits_waits_and_stores_in_one_task(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, pair: str
) -> None:
    api, kind = pair.split("/")
    op = _op(CLASSES[pair], make_conn(api), f"file://{tmp_path}/", **FIELDS[pair])
    result = op.execute({"ti": FakeTI(task_id="speak"), "task_state_store": StateStore()})
    stored = tmp_path / Path(result["uri"]).name
    assert result["uri"] == f"file://{stored}"
    assert result["sha256"] == _sha256(stored)
    assert result["size_bytes"] == stored.stat().st_size
    assert set(result) >= {"uri", "size_bytes", "sha256", "content_type", "duration_seconds", "tts_task_id"}
    info = emu.task_info(result["tts_task_id"])
    assert (info["api"], info["kind"]) == (api, kind)
    assert emu.stats()["creates"] == {api: {kind: 1}}


@pytest.mark.parametrize("resume_kwargs", [True, False], ids=["deferral-kwargs", "dag-test-drops-kwargs"])
def test_deferred_wait_resumes_as_a_fresh_instance_with_the_submitted_id(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: Ledger, resume_kwargs: bool
) -> None:
    """Resumed with the deferral's kwargs (a triggerer) or without them (``dag.test()`` drops them)."""
    conn_id = make_conn("revid_tts")
    srt_op = _op(RevidSrtToSpeechToStorageOperator, conn_id, f"file://{tmp_path}/", srt=SRT, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        srt_op.execute(ledger.context())
    deferred = info.value
    assert deferred.method_name == "execute_complete"
    tts_task_id = deferred.kwargs["tts_task_id"]
    assert emu.task_info(tts_task_id)["body"]["subtitles"][1]["text"] == "again"
    trigger_kwargs = deferred.trigger.serialize()[1]
    assert (trigger_kwargs["tts_task_id"], trigger_kwargs["kind"]) == (tts_task_id, "srt-to-speech")

    async def first_event() -> dict[str, Any]:
        async for event in TtsTaskTrigger(**trigger_kwargs).run():
            return dict(event.payload)
        raise AssertionError("no event")

    # The worker that resumes builds the operator anew from the DAG: it never saw the id.
    resumed = _op(RevidSrtToSpeechToStorageOperator, conn_id, f"file://{tmp_path}/", srt=SRT, deferrable=True)
    kwargs = deferred.kwargs if resume_kwargs else {}
    result = resumed.execute_complete(ledger.context(), asyncio.run(first_event()), **kwargs)
    assert result["tts_task_id"] == tts_task_id
    assert _sha256(tmp_path / Path(result["uri"]).name) == result["sha256"]
    assert emu.stats()["creates"]["revid_tts"]["srt-to-speech"] == 1


def test_a_retry_after_a_failed_store_reattaches_and_pays_once(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: Ledger
) -> None:
    conn_id = make_conn("camb_ai", max_retries=0)
    # every download of the first try fails (a glitch alone is downloaded again within the try)
    emu.inject("502", count=STORE_ATTEMPTS, endpoint="result", api="camb_ai")
    first = _op(CambTtsToStorageOperator, conn_id, f"file://{tmp_path}/", **FIELDS["camb_ai/tts"])
    with pytest.raises(TtsError):
        first.execute(ledger.context())
    assert list(tmp_path.iterdir()) == []
    record = ledger.record()
    assert record is not None
    assert record["tts_task_id"]

    retry = _op(CambTtsToStorageOperator, conn_id, f"file://{tmp_path}/", **FIELDS["camb_ai/tts"])
    result = retry.execute(ledger.context(FakeTI(try_number=2)))
    assert result["tts_task_id"] == record["tts_task_id"]
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 1
    assert _sha256(tmp_path / Path(result["uri"]).name) == result["sha256"]


def test_arguments_are_exactly_the_documented_fields_of_each_vendor_and_kind() -> None:
    for cls in CLASSES.values():
        declared = [
            name
            for name, param in inspect.signature(cls.__init__).parameters.items()
            if param.kind is inspect.Parameter.KEYWORD_ONLY
        ]
        assert list(cls.request_field_names) == declared
        fields = {create_field_name(name) for name in declared}
        assert fields == set(cls.vendor.create_model(cls.tts_kind).model_fields), cls.__name__
        assert set(cls.template_fields) == {"destination", "file_name", "tts_conn_id", "dest_conn_id", *declared}


def test_a_mistyped_field_fails_when_the_operator_is_declared() -> None:
    with pytest.raises(TypeError, match=r"Invalid arguments were passed to RevidTtsToStorageOperator(.|\n)*voice_idd"):
        RevidTtsToStorageOperator(task_id="speak", text="hi", voice_idd=3, destination="file:///tmp/x/")
    # A field of another vendor or kind is just as unknown here.
    with pytest.raises(TypeError, match=r"Invalid arguments(.|\n)*'prompt'"):
        CambTtsToStorageOperator(task_id="speak", text="hi", voice_id=1, language=1, prompt="x", destination="/x/")
    # A typo in a required field is named too (Airflow alone would only call voice_id missing).
    with pytest.raises(
        TypeError, match=r"'voice_idd' \(did you mean 'voice_id'\?\)\. Its camb_ai tts fields are: text,"
    ):
        CambTtsToStorageOperator(task_id="speak", text="hi", voice_idd=1, language=1, destination="file:///tmp/x/")
    # Wait settings taken from **kwargs, and Airflow's own arguments, are not typos.
    RevidTtsToStorageOperator(task_id="ok", text="hi", destination="/x/", slow_after=5, retries=2, wait_timeout=9)
    with pytest.raises(TypeError, match="unexpected keyword argument 'kind'"):
        RevidTtsToStorageOperator(task_id="speak", text="hi", kind="tts", destination="file:///tmp/x/")


def test_a_bad_literal_value_fails_when_the_operator_is_declared() -> None:
    with pytest.raises(TtsInvalidRequestError, match=r"gender: Input should be 0, 1, 2 or 9 \(got 5\)"):
        CambTtsToStorageOperator(
            task_id="speak", text="{{ params.t }}", voice_id=1, language=1, gender=5, destination="/x/"
        )
    with pytest.raises(TtsInvalidRequestError, match="duration"):
        CambTextToSoundToStorageOperator(task_id="speak", prompt="rain", duration=30, destination="file:///tmp/x/")
    with pytest.raises(TtsInvalidRequestError, match="line"):
        RevidSrtToSpeechToStorageOperator(task_id="speak", srt="1\nnot a time\nHello\n", destination="file:///tmp/x/")
    with pytest.raises(TtsConfigError, match="on_uncertain_submit"):
        RevidTtsToStorageOperator(task_id="speak", text="hi", on_uncertain_submit="maybe", destination="file:///x/")
    # What is only known after rendering is left for then: these declare fine.
    RevidSrtToSpeechToStorageOperator(task_id="srt", srt="{{ params.srt }}", destination="file:///tmp/x/")
    CambTtsToStorageOperator(task_id="tts", text="hi", voice_id="{{ params.voice }}", language=1, destination="/x/")


def test_templated_values_are_checked_after_rendering_before_any_request(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = _op(
        CambTtsToStorageOperator,
        make_conn("camb_ai"),
        f"file://{tmp_path}/",
        text="{{ params.text }}",
        voice_id="{{ params.voice }}",
        language=1,
    )
    op.render_template_fields({"params": {"text": "Hello", "voice": "not-a-number"}})
    assert op.voice_id == "not-a-number"
    with pytest.raises(TtsInvalidRequestError, match="voice_id"):
        op.execute({"ti": FakeTI(), "task_state_store": StateStore()})
    assert emu.stats()["requests_total"] == 0
    assert list(tmp_path.iterdir()) == []


def test_a_connection_of_the_other_vendor_is_refused_before_anything_is_paid(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = _op(RevidTtsToStorageOperator, make_conn("camb_ai"), f"file://{tmp_path}/", text="hi")
    with pytest.raises(TtsConfigError, match="is a camb_ai connection; RevidTtsToStorageOperator needs a revid_tts"):
        op.execute({"ti": FakeTI(), "task_state_store": StateStore()})
    assert _creates(emu) == 0


def test_a_destination_that_cannot_be_written_fails_before_anything_is_paid(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    existing = tmp_path / "daily.flac"
    existing.write_bytes(b"yesterday")
    op = _op(
        CambTtsToStorageOperator, make_conn("camb_ai"), f"file://{existing}", overwrite="fail", **FIELDS["camb_ai/tts"]
    )
    with pytest.raises(TtsConfigError, match="already exists and overwrite='fail'"):
        op.execute({"ti": FakeTI(), "task_state_store": StateStore()})
    assert emu.stats()["requests_total"] == 0
    assert existing.read_bytes() == b"yesterday"


def test_file_name_is_inherited_from_the_storage_operator(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    """``file_name`` is the storage operator's: no re-declaration, extension from the audio."""
    op = _op(
        CambTtsToStorageOperator,
        make_conn("camb_ai"),
        f"file://{tmp_path}/",
        file_name="briefing",
        **FIELDS["camb_ai/tts"],
    )
    result = op.execute({"ti": FakeTI(task_id="speak"), "task_state_store": StateStore()})
    name = Path(result["uri"]).name
    assert name.startswith("briefing.")
    assert name != "briefing."
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == [name]


def test_a_bad_literal_file_name_fails_when_the_one_task_operator_is_declared(tmp_path: Path) -> None:
    with pytest.raises(TtsConfigError, match=r"file_name '\.\./up' contains a path separator"):
        _op(CambTtsToStorageOperator, "camb", f"file://{tmp_path}/", file_name="../up", **FIELDS["camb_ai/tts"])
