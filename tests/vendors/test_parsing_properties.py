"""Property tests: whatever a server sends, a parser returns a valid status or a documented error."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from airflow_provider_tts.exceptions import TtsError, TtsProtocolError
from airflow_provider_tts.status import TtsTaskStatus
from airflow_provider_tts.vendors.base import ApiResponse
from tests._vendor_fixtures import camb, revid

TID = "550e8400-e29b-41d4-a716-446655440000"
VENDORS = {"camb_ai": (camb(), ("tts", "text-to-sound")), "revid_tts": (revid(), ("tts", "srt-to-speech"))}

_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=30)
#: Mostly the vocabulary the vendors use, so the search reaches deep branches, plus noise.
_vocab = st.sampled_from(
    [
        "status",
        "run_id",
        "code",
        "task_id",
        "response",
        "result",
        "audio_url",
        "duration",
        "audio_duration",
        "message",
        "error",
        "exception_reason",
        "PENDING",
        "SUCCESS",
        "ERROR",
        "TIMEOUT",
        "PAYMENT_REQUIRED",
        "processing",
        "completed",
        "failed",
        "not_found",
        "success",
        "error",
        TID,
        "http://s/a.wav",
        "ftp://x",
    ]
)
_json = st.recursive(
    _scalars | _vocab,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_vocab | st.text(max_size=8), inner, max_size=5),
    max_leaves=12,
)
_http = st.sampled_from([200, 200, 200, 202, 400, 401, 403, 404, 422, 429, 500, 502, 503, 504])
_ctype = st.sampled_from(["application/json", "text/html", "text/plain", ""])


def _check(vendor_name: str, kind_index: int, http: int, body: bytes, ctype: str) -> None:
    vendor, kinds = VENDORS[vendor_name]
    kind = kinds[kind_index]
    response = ApiResponse(http, {"content-type": ctype}, body, "https://example.invalid/x")
    try:
        status = vendor.parse_status(kind, TID, response)  # type: ignore[arg-type]
    except TtsProtocolError:
        return
    except TtsError:
        # HTTP-level errors are only for responses that are not 200.
        assert http != 200
        return
    assert isinstance(status, TtsTaskStatus)
    assert status.tts_task_id == TID
    assert status.kind == kind
    TtsTaskStatus.model_validate(status.to_xcom())  # the XCom form round-trips


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(st.sampled_from(list(VENDORS)), st.integers(0, 1), _http, _json, _ctype)
def test_any_json_gives_a_status_or_a_documented_error(
    vendor_name: str, kind_index: int, http: int, data: Any, ctype: str
) -> None:
    _check(vendor_name, kind_index, http, json.dumps(data).encode(), ctype)


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(VENDORS)), st.integers(0, 1), _http, st.binary(max_size=200), _ctype)
def test_any_bytes_give_a_status_or_a_documented_error(
    vendor_name: str, kind_index: int, http: int, body: bytes, ctype: str
) -> None:
    _check(vendor_name, kind_index, http, body, ctype)


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(list(VENDORS)), st.integers(0, 1), st.sampled_from([200, 201, 202, 400, 422, 500]), _json)
def test_any_submit_answer_gives_an_id_or_a_documented_error(
    vendor_name: str, kind_index: int, http: int, data: Any
) -> None:
    vendor, kinds = VENDORS[vendor_name]
    response = ApiResponse(http, {"content-type": "application/json"}, json.dumps(data).encode(), "https://x/y")
    try:
        submission = vendor.parse_submit(kinds[kind_index], response)  # type: ignore[arg-type]
    except TtsError:
        return
    assert submission.tts_task_id
