"""TtsSubmitOperator: every kind, validation before any request, and no second payment on retry.

The paying-once tests run with both ledgers of :mod:`airflow_provider_tts.submissions`: the task
state store (Airflow 3.3+), and, forced by a context without ``task_state_store`` as on Airflow
3.0-3.2, the Airflow Variable fallback. Both are in-memory stand-ins with the calls the operator
makes; the real store and real Variables through the API server are exercised on real Airflow
processes in ``tests/slow/test_submit_durability.py``.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

import pytest

from airflow_provider_tts import submissions
from airflow_provider_tts.compat import AirflowFailException, TaskDeferred
from airflow_provider_tts.exceptions import (
    TtsAuthError,
    TtsConfigError,
    TtsConnectionError,
    TtsInvalidRequestError,
    TtsServerError,
    TtsSubmitUncertainError,
    TtsTaskFailedError,
)
from airflow_provider_tts.operators.tts import TtsSubmitOperator
from airflow_provider_tts.submissions import SubmitIdentity
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import FIELDS, PAIRS, TEST_KEY, ConnFactory

SRT = "1\n00:00:00,000 --> 00:00:01,000\nHello\n\n2\n00:00:01,200 --> 00:00:02,000\nagain\n"


class StateStore(dict[str, Any]):
    """The calls the operator makes on Airflow's task_state_store, kept in memory for unit tests."""

    def set(self, key: str, value: Any, **_: Any) -> None:
        self[key] = value

    def delete(self, key: str) -> None:
        self.pop(key, None)


class MemoryVariables:
    """``airflow.sdk.Variable``'s get/set/delete, kept in memory (outside a task runner there is no API server)."""

    def __init__(self) -> None:
        self.values: dict[str, str] = {}
        self.descriptions: dict[str, str | None] = {}

    def get(self, key: str, default: Any = None) -> Any:
        return self.values.get(key, default)

    def set(self, key: str, value: str, description: str | None = None) -> None:
        self.values[key] = value
        self.descriptions[key] = description

    def delete(self, key: str) -> None:
        self.values.pop(key, None)


@dataclass
class FakeTI:
    dag_id: str = "daily_audio"
    run_id: str = "scheduled__2026-12-01T00:00:00+00:00"
    task_id: str = "submit"
    map_index: int = -1
    try_number: int = 1


class Ledger:
    """One ledger of either kind, and the contexts a task instance's tries would see with it."""

    def __init__(self, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
        self.kind = kind
        self.store = StateStore()
        self.variables = MemoryVariables()
        monkeypatch.setattr(submissions, "variable_api", lambda: self.variables)

    def context(self, ti: FakeTI | None = None) -> dict[str, Any]:
        ti = ti or FakeTI()
        if self.kind == "task_state_store":
            return {"task_state_store": self.store, "ti": ti}
        return {"ti": ti}  # as on Airflow 3.0-3.2: no task_state_store in the context

    def record(self, ti: FakeTI | None = None) -> dict[str, Any] | None:
        if self.kind == "task_state_store":
            value = self.store.get("tts_submit")
            return None if value is None else dict(value)
        identity = SubmitIdentity.from_context({"ti": ti or FakeTI()})
        assert identity is not None
        raw = self.variables.values.get(f"tts_submit.{identity.digest()[:40]}")
        return None if raw is None else dict(json.loads(raw))


@pytest.fixture(params=["task_state_store", "variable"])
def ledger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    return Ledger(request.param, monkeypatch)


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


def _creates(emu: Any) -> int:
    return int(emu.stats()["requests_by_endpoint"].get("create", 0))


def _first_try(op: TtsSubmitOperator, context: dict[str, Any]) -> str:
    """A try that submitted, deferred, and then ended without success (its trigger failed, its worker died).

    Only such a try leaves a retry to come; one that succeeds ends the task instance.
    """
    op.wait, op.deferrable = True, True
    with pytest.raises(TaskDeferred) as info:
        op.execute(context)
    return str(info.value.kwargs["tts_task_id"])


def test_retry_reattaches_instead_of_paying_twice(emu: Any, make_conn: ConnFactory, ledger: Ledger) -> None:
    conn_id = make_conn("camb_ai")
    emu.script_next("camb_ai", "tts", delay=60)  # still pending when the retry comes
    first = _first_try(_op(conn_id, "tts", **FIELDS["camb_ai/tts"]), ledger.context())
    record = ledger.record()
    assert record is not None
    assert record["tts_task_id"] == first
    assert record["fingerprint"].startswith("sha256:")
    again = _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context(FakeTI(try_number=2)))
    assert again == first
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 1


def test_retry_after_a_failed_task_submits_afresh(emu: Any, make_conn: ConnFactory, ledger: Ledger) -> None:
    conn_id = make_conn("revid_tts")
    emu.script_next("revid_tts", "tts", outcome="failed", reason="engine crashed", delay=0)
    first = _first_try(_op(conn_id, "tts", text="hi"), ledger.context())
    second = _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(try_number=2)))
    assert second != first
    assert emu.stats()["creates"]["revid_tts"]["tts"] == 2


def test_a_changed_request_submits_afresh(emu: Any, make_conn: ConnFactory, ledger: Ledger) -> None:
    """Issue 9.2: a task cleared after its text was edited must not re-attach to the old audio."""
    conn_id = make_conn("camb_ai")
    emu.script_next("camb_ai", "tts", delay=60)
    first = _first_try(_op(conn_id, "tts", **FIELDS["camb_ai/tts"]), ledger.context())
    edited = {**FIELDS["camb_ai/tts"], "text": "The corrected text"}
    second = _first_try(_op(conn_id, "tts", **edited), ledger.context(FakeTI(try_number=2)))
    assert second != first
    assert emu.task_info(second)["body"]["text"] == "The corrected text"
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 2
    # The same request in another spelling (a string voice id, rendered from a template) is the same request.
    respelled = {**edited, "voice_id": str(edited["voice_id"])}
    third = _op(conn_id, "tts", **respelled).execute(ledger.context(FakeTI(try_number=3)))
    assert third == second


def test_an_unchanged_request_cleared_after_success_reattaches_on_the_task_state_store(
    emu: Any, make_conn: ConnFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger("task_state_store", monkeypatch)
    conn_id = make_conn("camb_ai")
    first = _op(conn_id, "tts", wait=True, deferrable=False, **FIELDS["camb_ai/tts"]).execute(ledger.context())
    again = _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context(FakeTI(try_number=2)))
    assert again == first
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 1


def test_reattach_honours_the_not_found_grace(emu: Any, make_conn: ConnFactory, ledger: Ledger) -> None:
    """A task the vendor has not indexed yet is re-attached to, not paid for again."""
    conn_id = make_conn("revid_tts")
    emu.script_next("revid_tts", "tts", delay=60, not_found_for=60)
    first = _first_try(_op(conn_id, "tts", text="hi"), ledger.context())
    again = _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(try_number=2)))
    assert again == first
    assert emu.stats()["creates"]["revid_tts"]["tts"] == 1


def test_a_502_after_sending_fails_without_retry_and_the_retry_does_not_pay(
    emu: Any, make_conn: ConnFactory, ledger: Ledger
) -> None:
    """Issue 9.1: was a retryable TtsServerError, and Airflow's retry created a second task."""
    conn_id = make_conn("revid_tts")
    emu.inject("502", endpoint="create")
    with pytest.raises(TtsSubmitUncertainError) as info:
        _op(conn_id, "tts", text="hi").execute(ledger.context())
    assert isinstance(info.value, AirflowFailException)  # fails the task without using up retries
    assert isinstance(info.value.__cause__, TtsServerError)
    message = str(info.value)
    reference = SubmitIdentity.from_context({"ti": FakeTI()}).client_reference()  # type: ignore[union-attr]
    for words in ("HTTP 502", "may have created, and billed", "dashboard", reference, "on_uncertain_submit='resubmit'"):
        assert words in message
    assert TEST_KEY not in message
    record = ledger.record()
    assert record is not None
    assert "tts_task_id" not in record  # the intent stays: the outcome is unknown
    with pytest.raises(TtsSubmitUncertainError, match="An earlier try of this task never recorded the answer"):
        _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(try_number=2)))
    assert _creates(emu) == 1


def test_a_read_timeout_after_the_vendor_created_the_task_is_uncertain(
    emu: Any, make_conn: ConnFactory, ledger: Ledger
) -> None:
    conn_id = make_conn("camb_ai", read_timeout=0.5)
    emu.set_faults(slow_seconds=1.5)
    emu.inject("slow", endpoint="create")  # answers after the client gave up, and creates the task anyway
    with pytest.raises(TtsSubmitUncertainError, match="read timed out") as info:
        _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context())
    assert isinstance(info.value.__cause__, TtsConnectionError)
    assert "reference id" not in str(info.value)  # Camb.ai stores no caller reference
    deadline = time.monotonic() + 10
    while emu.stats()["tasks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.stats()["creates"] == {"camb_ai": {"tts": 1}}  # the vendor did create (and bill) it
    with pytest.raises(TtsSubmitUncertainError):
        _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context(FakeTI(try_number=2)))
    assert emu.stats()["creates"] == {"camb_ai": {"tts": 1}}


def test_resubmit_on_purpose_pays_again(emu: Any, make_conn: ConnFactory, ledger: Ledger) -> None:
    conn_id = make_conn("revid_tts")
    emu.inject("502", endpoint="create")
    with pytest.raises(TtsServerError) as info:  # stays retryable: Airflow's retry is what resubmits
        _op(conn_id, "tts", text="hi", on_uncertain_submit="resubmit").execute(ledger.context())
    assert not isinstance(info.value, AirflowFailException)
    task_id = _op(conn_id, "tts", text="hi", on_uncertain_submit="resubmit").execute(
        ledger.context(FakeTI(try_number=2))
    )
    assert (ledger.record() or {}).get("tts_task_id", task_id) == task_id
    assert _creates(emu) == 2


def test_a_create_that_provably_created_nothing_leaves_no_intent(
    emu: Any, make_conn: ConnFactory, ledger: Ledger
) -> None:
    conn_id = make_conn("camb_ai")
    emu.inject("401", endpoint="create")
    with pytest.raises(TtsAuthError):
        _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context())
    assert ledger.record() is None
    task_id = _op(conn_id, "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context(FakeTI(try_number=2)))
    assert emu.task_info(task_id) is not None


def test_revid_reference_is_stable_per_task_instance_and_caller_id_wins(
    emu: Any, make_conn: ConnFactory, ledger: Ledger
) -> None:
    conn_id = make_conn("revid_tts")
    emu.script_next("revid_tts", "tts", outcome="failed", reason="engine crashed", delay=0)
    first = _first_try(_op(conn_id, "tts", text="hi"), ledger.context(FakeTI(try_number=1)))
    second = _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(try_number=2)))
    ids = {emu.task_info(t)["body"]["id"] for t in (first, second)}
    assert len(ids) == 1  # never the try number
    (reference,) = ids
    assert re.fullmatch(r"airflow-[0-9a-f]{32}", reference)
    mapped = _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(map_index=3)))
    assert emu.task_info(mapped)["body"]["id"] != reference
    own = _op(conn_id, "tts", text="hi", caller_id="row-17").execute(ledger.context(FakeTI(task_id="other")))
    assert emu.task_info(own)["body"]["id"] == "row-17"
    camb = _op(make_conn("camb_ai"), "tts", **FIELDS["camb_ai/tts"]).execute(ledger.context(FakeTI(task_id="c")))
    assert "id" not in emu.task_info(camb)["body"]


def test_variable_record_is_deleted_on_success_and_kept_otherwise(
    emu: Any, make_conn: ConnFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The fallback's bound: a record lives until its task instance succeeds."""
    ledger = Ledger("variable", monkeypatch)
    conn_id = make_conn("revid_tts")
    emu.script_next("revid_tts", "tts", delay=60)
    op = _op(conn_id, "tts", text="hi", wait=True, deferrable=True)
    with pytest.raises(TaskDeferred) as info:
        op.execute(ledger.context())
    (key,) = ledger.variables.values
    assert "daily_audio" in (ledger.variables.descriptions[key] or "")
    assert TEST_KEY not in ledger.variables.values[key]
    task_id = info.value.kwargs["tts_task_id"]
    failed = {"status": "failed", "tts_task_id": task_id, "task_status": _revid_status(task_id, "failed")}
    with pytest.raises(TtsTaskFailedError):
        op.execute_complete(ledger.context(), failed, **info.value.kwargs)
    assert ledger.record() is not None  # a retry still needs it
    done = {"status": "success", "tts_task_id": task_id, "task_status": _revid_status(task_id, "succeeded")}
    assert op.execute_complete(ledger.context(), done, **info.value.kwargs) == task_id
    assert ledger.variables.values == {}
    _op(conn_id, "tts", text="hi").execute(ledger.context(FakeTI(run_id="other_run")))
    assert ledger.variables.values == {}  # wait=False succeeds at once: nothing left either


def _revid_status(task_id: str, state: str) -> dict[str, Any]:
    return {
        "api": "revid_tts",
        "kind": "tts",
        "tts_task_id": task_id,
        "state": state,
        "vendor_status": "completed" if state == "succeeded" else "failed",
        "audio_url": "http://x/a.wav" if state == "succeeded" else None,
        "retryable": True if state == "failed" else None,
        "failure": "error" if state == "failed" else None,
    }


def test_the_ledger_is_chosen_by_what_the_context_offers(monkeypatch: pytest.MonkeyPatch) -> None:
    store = StateStore()
    identity = SubmitIdentity.from_context({"ti": FakeTI()})
    assert isinstance(
        submissions.select_ledger({"task_state_store": store}, identity), submissions.TaskStateStoreLedger
    )
    assert isinstance(submissions.select_ledger({"ti": FakeTI()}, identity), submissions.VariableLedger)
    assert submissions.select_ledger({}, None) is None


def test_the_operator_imports_without_the_3_3_only_mixin() -> None:
    """Airflow 3.0-3.2 have no ResumableJobMixin: importing the operators must not need it."""
    code = (
        "import sys; sys.modules['airflow.sdk.bases.resumablejobmixin'] = None\n"
        "from airflow_provider_tts.operators.tts import TtsSubmitOperator\n"
        "assert 'ResumableJobMixin' not in [c.__name__ for c in TtsSubmitOperator.__mro__]\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]


def test_missing_required_fields_are_named_and_no_value_is_cut_mid_quote(emu: Any, make_conn: ConnFactory) -> None:
    """Issue 16.3: the error named no missing field and printed ``(got {'text': 'hi'...`` cut at 60 chars."""
    with pytest.raises(TtsInvalidRequestError) as info:
        _op(make_conn("camb_ai"), "tts", text="Hello " * 40).execute({})
    message = str(info.value)
    assert "missing required fields: voice_id (an integer voice id" in message
    assert "language (a BCP-47 tag such as 'en-us', or Camb's integer language id, e.g. 1)" in message
    assert "Hello" not in message  # the valid text is not quoted at all
    with pytest.raises(TtsInvalidRequestError) as info:
        _op(make_conn("camb_ai"), "tts", text="hi", voice_id="v" * 300, language=1).execute({})
    quoted = re.search(r"\(got (.*)\)$", str(info.value))
    assert quoted is not None
    assert quoted.group(1).startswith("'")
    assert quoted.group(1).endswith("'")  # balanced, shortened in the middle
    assert len(quoted.group(1)) < 80
    assert emu.stats()["requests_total"] == 0


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
