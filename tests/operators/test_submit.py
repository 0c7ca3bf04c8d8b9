"""TtsSubmitOperator: every kind, validation before any request, and no second payment on retry."""

from __future__ import annotations

from typing import Any

import pytest

from airflow_provider_tts.compat import AirflowFailException, TaskDeferred
from airflow_provider_tts.exceptions import TtsConfigError, TtsInvalidRequestError, TtsTaskFailedError
from airflow_provider_tts.operators.tts import TtsSubmitOperator
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import FIELDS, PAIRS, TEST_KEY, ConnFactory

SRT = "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,200 --> 00:00:02,000\nagain\n"


class StateStore(dict[str, Any]):
    """The two calls the operator makes on Airflow's task_state_store, kept in memory for unit tests.

    The real store is exercised by the end-to-end test on real Airflow processes.
    """

    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value


def _op(conn_id: str, kind: str, **fields: Any) -> TtsSubmitOperator:
    return TtsSubmitOperator(task_id="submit", tts_conn_id=conn_id, kind=kind, **fields)


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_submits_every_kind(emu: Any, make_conn: ConnFactory, api: str, kind: str) -> None:
    fields = dict(FIELDS[f"{api}/{kind}"])
    task_id = _op(make_conn(api), kind, **fields).execute({"task_state_store": StateStore()})
    info = emu.task_info(task_id)
    assert info["api"] == api
    assert info["kind"] == kind
    assert emu.stats()["creates"][api][kind] == 1


def test_srt_text_becomes_cues(emu: Any, make_conn: ConnFactory) -> None:
    task_id = _op(make_conn("revid_tts"), "srt-to-speech", srt=SRT, mode="merge").execute({})
    body = emu.task_info(task_id)["body"]
    assert body["subtitles"][1] == {"index": 2, "start": "00:00:01,200", "end": "00:00:02,000", "text": "again"}
    assert body["mode"] == "merge"


def test_caller_id_is_sent_as_id(emu: Any, make_conn: ConnFactory) -> None:
    task_id = _op(make_conn("revid_tts"), "tts", text="hi", caller_id="row-17").execute({})
    assert emu.task_info(task_id)["body"]["id"] == "row-17"


@pytest.mark.parametrize(
    ("api", "kind", "fields", "error", "fragment"),
    [
        ("camb_ai", "tts", {"text": "hi", "voice_id": 1}, TtsInvalidRequestError, "language"),
        ("camb_ai", "tts", {"text": "hi", "voice_id": 1, "language": 1, "speed": 1.0}, TtsInvalidRequestError, "speed"),
        ("camb_ai", "text-to-sound", {"prompt": "rain", "duration": 30}, TtsInvalidRequestError, "duration"),
        ("camb_ai", "srt-to-speech", {"srt": SRT}, TtsConfigError, "not supported by camb_ai"),
        ("revid_tts", "text-to-sound", {"prompt": "rain"}, TtsConfigError, "not supported by revid_tts"),
        ("revid_tts", "tts", {"text": "hi", "pitch": 40}, TtsInvalidRequestError, "pitch"),
        ("revid_tts", "srt-to-speech", {"srt": "1\n00:00 --> 00:01\nx"}, TtsInvalidRequestError, "SRT line 2"),
        ("revid_tts", "srt-to-speech", {"srt": SRT, "subtitles": []}, TtsConfigError, "not both"),
        ("revid_tts", "tts", {"text": "{{ params.t }}"}, TtsInvalidRequestError, "text"),
    ],
)
def test_bad_input_fails_before_any_request(
    emu: Any, make_conn: ConnFactory, api: str, kind: str, fields: dict[str, Any], error: type, fragment: str
) -> None:
    op = _op(make_conn(api), kind, **fields)
    if fields.get("text") == "{{ params.t }}":
        op.text = "   "  # what an empty template renders to
    with pytest.raises(error) as info:
        op.execute({"task_state_store": StateStore()})
    assert fragment in str(info.value)
    assert emu.stats()["requests_total"] == 0


@pytest.mark.parametrize(("field", "value"), [("text", ""), ("text", "  \n"), ("prompt", ""), ("srt", " ")])
def test_empty_literal_text_fails_at_parse_time(field: str, value: str) -> None:
    with pytest.raises(TtsConfigError, match="empty"):
        _op("c", "tts", **{field: value})


def test_unknown_kind_fails_at_parse_time() -> None:
    with pytest.raises(TtsConfigError, match="kind 'speech'"):
        _op("c", "speech", text="hi")


def test_retry_reattaches_instead_of_paying_twice(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    store = StateStore()
    emu.script_next("camb_ai", "tts", delay=60)  # still pending when the retry comes
    first = _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute({"task_state_store": store})
    assert store == {"tts_task_id": first}
    again = _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute({"task_state_store": store})
    assert again == first
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 1


def test_retry_after_a_failed_task_submits_afresh(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("revid_tts")
    store = StateStore()
    emu.script_next("revid_tts", "tts", outcome="failed", reason="engine crashed", delay=0)
    first = _op(conn_id, "tts", text="hi").execute({"task_state_store": store})
    second = _op(conn_id, "tts", text="hi").execute({"task_state_store": store})
    assert second != first
    assert store == {"tts_task_id": second}
    assert emu.stats()["creates"]["revid_tts"]["tts"] == 2


def test_wait_true_blocks_until_done_and_fails_like_the_sensor(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    emu.script_next("camb_ai", "tts", delay=0, pending_polls=2)
    op = _op(conn_id, "tts", wait=True, deferrable=False, **FIELDS["camb_ai/tts"])
    task_id = op.execute({"task_state_store": StateStore()})
    assert emu.stats()["polls_by_task"][task_id] == 3
    emu.script_next("camb_ai", "tts", outcome="payment_required", delay=0)
    with pytest.raises(TtsTaskFailedError) as info:
        _op(conn_id, "tts", wait=True, deferrable=False, **FIELDS["camb_ai/tts"]).execute({})
    assert isinstance(info.value, AirflowFailException)
    assert "PAYMENT_REQUIRED" in str(info.value)


def test_wait_true_deferrable_defers_then_returns_the_id(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("revid_tts")
    emu.script_next("revid_tts", "tts", delay=60)
    op = _op(conn_id, "tts", text="hi", wait=True, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute({"task_state_store": StateStore()})
    trigger = info.value.trigger
    assert isinstance(trigger, TtsTaskTrigger)
    _, kwargs = trigger.serialize()
    assert TEST_KEY not in repr(kwargs)
    status = {
        "api": "revid_tts",
        "kind": "tts",
        "tts_task_id": kwargs["tts_task_id"],
        "state": "succeeded",
        "vendor_status": "completed",
        "audio_url": "http://x/a.wav",
    }
    event = {"status": "success", "tts_task_id": kwargs["tts_task_id"], "task_status": status}
    assert info.value.kwargs == {"tts_task_id": kwargs["tts_task_id"]}
    result = op.execute_complete({}, event, **info.value.kwargs)
    assert result == kwargs["tts_task_id"]


def test_key_never_in_rendered_fields(emu: Any, make_conn: ConnFactory) -> None:
    op = _op(make_conn("camb_ai"), "tts", **FIELDS["camb_ai/tts"])
    op.execute({"task_state_store": StateStore()})
    assert all(TEST_KEY not in repr(getattr(op, name)) for name in op.template_fields)
