"""Table-driven tests of both vendors' parsers over every documented body and listed variant."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from airflow_provider_tts.exceptions import (
    TtsAuthError,
    TtsInvalidRequestError,
    TtsProtocolError,
    TtsRateLimitError,
    TtsRejectedRequestError,
    TtsServerError,
)
from airflow_provider_tts.vendors.base import ApiResponse, parse_retry_after, warn_unknown_status
from tests._vendor_fixtures import camb, resp, revid

TID = "550e8400-e29b-41d4-a716-446655440000"
HTML = b"<html><head><title>502 Bad Gateway</title></head><body><center>nginx</center></body></html>"

# ------------------------------------------------------------------------------------------ Camb.ai

CAMB_STATES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"status": "PENDING", "run_id": None}, {"state": "pending", "vendor_status": "PENDING"}),
    ({"status": "PENDING"}, {"state": "pending"}),
    ({"status": "SUCCESS", "run_id": 123}, {"state": "succeeded", "run_id": 123}),
    ({"status": "SUCCESS", "run_id": "77"}, {"state": "succeeded", "run_id": 77}),
    (
        {"status": "SUCCESS", "run_id": 5, "exception_reason": None, "message": None, "extra": [1]},
        {"state": "succeeded", "run_id": 5},
    ),
    (
        {"status": "TIMEOUT", "run_id": None},
        {"state": "failed", "retryable": False, "failure": "vendor_timeout"},
    ),
    (
        {"status": "PAYMENT_REQUIRED"},
        {"state": "failed", "retryable": False, "failure": "payment_required"},
    ),
    (
        {"status": "ERROR", "exception_reason": "HARMFUL_CONTENT_DETECTED"},
        {"state": "failed", "retryable": False, "failure": "content_rejected", "message": "HARMFUL_CONTENT_DETECTED"},
    ),
    (
        {"status": "ERROR", "exception_reason": "SOURCE_TOO_LONG", "message": "too long"},
        {"state": "failed", "retryable": False, "message": "SOURCE_TOO_LONG; too long"},
    ),
    (
        {"status": "ERROR", "exception_reason": "INTERNAL_ERROR"},
        {"state": "failed", "retryable": True, "failure": "error"},
    ),
    ({"status": "ERROR"}, {"state": "failed", "retryable": True, "message": "no reason given"}),
    (
        {"status": "ERROR", "message": {"code": 7, "why": "gpu"}},
        {"state": "failed", "retryable": True},
    ),
]


@pytest.mark.parametrize("kind", ["tts", "text-to-sound"])
@pytest.mark.parametrize(("body", "expected"), CAMB_STATES)
def test_camb_documented_statuses(kind: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    status = camb().parse_status(kind, TID, resp(200, body))  # type: ignore[arg-type]
    assert status.api == "camb_ai"
    assert status.kind == kind
    assert status.tts_task_id == TID
    for key, value in expected.items():
        assert getattr(status, key) == value, key
    assert status.vendor_status == body["status"]
    if status.state == "failed":
        assert status.message


def test_camb_message_object_is_stringified() -> None:
    status = camb().parse_status("tts", TID, resp(200, {"status": "ERROR", "message": {"why": "gpu"}}))
    assert status.message is not None
    assert "gpu" in status.message


def test_unknown_status_is_pending_and_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    warn_unknown_status.seen.clear()
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            status = camb().parse_status("tts", TID, resp(200, {"status": "QUEUED_FOR_GPU"}))
            assert status.state == "pending"
            assert status.vendor_status == "QUEUED_FOR_GPU"
    warnings = [r for r in caplog.records if "QUEUED_FOR_GPU" in r.getMessage()]
    assert len(warnings) == 1


def test_camb_404_is_a_not_found_state() -> None:
    status = camb().parse_status("tts", TID, resp(404, {"detail": "Task not found"}))
    assert (status.state, status.failure, status.retryable) == ("failed", "not_found", False)


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (resp(200, {"status": "SUCCESS"}), TtsProtocolError, "run_id"),
        (resp(200, {"status": "SUCCESS", "run_id": True}), TtsProtocolError, "run_id"),
        (resp(200, {"status": "SUCCESS", "run_id": -1}), TtsProtocolError, "run_id"),
        (resp(200, {"run_id": 1}), TtsProtocolError, "'status'"),
        (resp(200, {"status": 3}), TtsProtocolError, "'status'"),
        (resp(200, [{"status": "PENDING"}]), TtsProtocolError, "'status'"),
        (resp(200, b'{"status": "PEND'), TtsProtocolError, "JSON"),
        (resp(200, HTML, "text/html"), TtsProtocolError, "HTML page"),
        (resp(401, {"detail": "Invalid API key"}), TtsAuthError, "Invalid API key"),
        (resp(401, {"error": "Unauthorized", "status": 401}), TtsAuthError, "Unauthorized"),
        (resp(403, {"detail": "Forbidden"}), TtsAuthError, "Forbidden"),
        (
            resp(422, {"detail": [{"loc": ["path", "task_id"], "msg": "bad id", "type": "value_error"}]}),
            TtsRejectedRequestError,
            "path.task_id: bad id",
        ),
        (resp(429, {"detail": "slow down"}, retry_after="3"), TtsRateLimitError, "slow down"),
        (resp(502, HTML, "text/html"), TtsServerError, "HTML page"),
        (resp(500, {"detail": "boom"}), TtsServerError, "boom"),
        (resp(503, b"", "text/plain"), TtsServerError, "503"),
    ],
)
def test_camb_errors_name_what_arrived(response: ApiResponse, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        camb().parse_status("tts", TID, response)
    assert fragment in str(info.value)
    assert TID in str(info.value)


def test_retry_after_is_carried() -> None:
    with pytest.raises(TtsRateLimitError) as info:
        camb().parse_status("tts", TID, resp(429, {}, retry_after="7"))
    assert info.value.retry_after == 7.0
    assert info.value.http_status == 429


def test_retry_after_forms() -> None:
    assert parse_retry_after("2") == 2.0
    assert parse_retry_after("0.5") == 0.5
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # in the past: retry now
    import time
    from email.utils import formatdate

    ahead = parse_retry_after(formatdate(time.time() + 30, usegmt=True))
    assert ahead is not None
    assert 25 <= ahead <= 31


# ---------------------------------------------------------------------------------------- RevidAPI

PROCESSING = {"code": 202, "task_id": TID, "status": "processing", "message": "Task is being processed"}
COMPLETED = {
    "code": 200,
    "task_id": TID,
    "status": "completed",
    "response": {"audio_url": "https://storage.example.com/audio/output.mp3", "duration": 3.5},
    "message": "success",
}
NOT_FOUND = {"code": 404, "task_id": TID, "status": "not_found", "message": "Task not found"}
FAILED = {
    "code": 500,
    "task_id": TID,
    "status": "failed",
    "message": "Task processing failed",
    "error": "Error details",
}


def _variants(body: dict[str, Any]) -> list[tuple[int, Any]]:
    """The documented body under every listed transport variant: mirrored or 200, object or array."""
    return [(body["code"], body), (200, body), (body["code"], [body]), (200, [body])]


@pytest.mark.parametrize("kind", ["tts", "srt-to-speech"])
@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (PROCESSING, {"state": "pending", "vendor_status": "processing"}),
        (
            COMPLETED,
            {"state": "succeeded", "audio_url": COMPLETED["response"]["audio_url"], "duration_seconds": 3.5},
        ),
        (NOT_FOUND, {"state": "failed", "failure": "not_found", "retryable": False}),
        (FAILED, {"state": "failed", "retryable": True, "message": "Task processing failed; Error details"}),
    ],
)
def test_revid_documented_bodies_in_every_variant(kind: str, body: dict[str, Any], expected: dict[str, Any]) -> None:
    for http_status, payload in _variants(body):
        status = revid().parse_status(kind, TID, resp(http_status, payload))  # type: ignore[arg-type]
        assert status.api == "revid_tts"
        assert status.kind == kind
        for key, value in expected.items():
            assert getattr(status, key) == value, (http_status, key)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (
            {"code": 200, "task_id": TID, "status": "completed", "result": {"audio_url": "http://s/a.wav"}},
            {"audio_url": "http://s/a.wav", "duration_seconds": None},
        ),
        (
            {"status": "completed", "result": {"audio_url": "http://s/a.wav", "audio_duration": 2}},
            {"duration_seconds": 2.0},
        ),
        (
            {"status": "success", "response": {"audio_url": "http://s/a.wav", "duration": "4.25"}},
            {"state": "succeeded", "vendor_status": "success", "duration_seconds": 4.25},
        ),
        ({"status": "error", "error": "engine down"}, {"state": "failed", "message": "engine down"}),
        (
            {"status": "completed", "response": {"audio_url": "http://s/a", "duration": "n/a"}},
            {"duration_seconds": None},
        ),
    ],
)
def test_revid_listed_variants(body: dict[str, Any], expected: dict[str, Any]) -> None:
    status = revid().parse_status("tts", TID, resp(200, body))
    for key, value in expected.items():
        assert getattr(status, key) == value, key


@pytest.mark.parametrize(
    ("response", "error", "fragment"),
    [
        (resp(200, {"status": "completed", "response": {}}), TtsProtocolError, "audio_url"),
        (resp(200, {"status": "completed", "response": {"audio_url": "ftp://x/a"}}), TtsProtocolError, "http(s)"),
        (resp(200, {"status": "completed", "response": "http://x/a"}), TtsProtocolError, "audio_url"),
        (resp(200, {**PROCESSING, "task_id": "another-task"}), TtsProtocolError, "another-task"),
        (resp(200, [PROCESSING, PROCESSING]), TtsProtocolError, "2 items"),
        (resp(200, []), TtsProtocolError, "0 items"),
        (resp(200, {"code": 200}), TtsProtocolError, "'status'"),
        (resp(200, b"not json at all"), TtsProtocolError, "JSON"),
        (resp(200, HTML, "text/html"), TtsProtocolError, "HTML"),
        (resp(500, {"error": "internal"}), TtsServerError, "internal"),
        (resp(500, HTML, "text/html"), TtsServerError, "HTML"),
        (resp(502, FAILED), TtsServerError, "502"),
        (resp(404, {"detail": "Not Found"}), TtsRejectedRequestError, "Not Found"),
        (resp(401, {"error": "bad key", "status": 401}), TtsAuthError, "bad key"),
        (resp(429, {"status": "error", "code": 429}, retry_after="1"), TtsRateLimitError, "429"),
        (resp(500, {"code": 500, "status": "error", "message": "Internal Server Error"}), TtsServerError, "500"),
        (resp(404, {"code": 404, "status": "not_found", "task_id": "other"}), TtsRejectedRequestError, "404"),
    ],
)
def test_revid_errors_name_what_arrived(response: ApiResponse, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error) as info:
        revid().parse_status("tts", TID, response)
    assert fragment in str(info.value)


# ------------------------------------------------------------------------------------------ submit


def test_camb_submit_parsing() -> None:
    assert camb().parse_submit("tts", resp(200, {"task_id": "abc-1"})).tts_task_id == "abc-1"
    with pytest.raises(TtsProtocolError, match="task_id"):
        camb().parse_submit("tts", resp(200, {"id": "abc-1"}))
    with pytest.raises(TtsRejectedRequestError, match="text: field required"):
        camb().parse_submit(
            "tts", resp(422, {"detail": [{"loc": ["body", "text"], "msg": "field required", "type": "missing"}]})
        )


@pytest.mark.parametrize(
    "body",
    [
        {"code": 202, "task_id": TID, "id": "mine", "message": "processing"},
        [{"code": 202, "task_id": TID, "id": "mine", "message": "processing"}],
    ],
)
def test_revid_submit_object_or_array(body: Any) -> None:
    submission = revid().parse_submit("tts", resp(202, body))
    assert submission.tts_task_id == TID
    assert submission.status is None


def test_revid_submit_finished_at_once_keeps_the_audio() -> None:
    submission = revid().parse_submit("srt-to-speech", resp(200, [COMPLETED]))
    assert submission.status is not None
    assert submission.status.state == "succeeded"
    assert submission.status.audio_url == COMPLETED["response"]["audio_url"]
    assert submission.status.kind == "srt-to-speech"


def test_submitted_task_id_is_validated() -> None:
    with pytest.raises(Exception, match="tts_task_id"):
        revid().parse_submit("tts", resp(202, {"task_id": "../../etc/passwd"}))


# ---------------------------------------------------------------------------------- submit fields


@pytest.mark.parametrize(
    ("vendor", "kind", "fields", "fragment"),
    [
        ("camb", "tts", {"voice_id": 1, "language": 1}, "text"),
        ("camb", "tts", {"text": "   ", "voice_id": 1, "language": 1}, "text"),
        ("camb", "tts", {"text": "hi", "voice_id": 1, "language": "en-xx"}, "language"),
        ("camb", "tts", {"text": "hi", "voice_id": 1, "language": 1, "gender": 5}, "gender"),
        ("camb", "tts", {"text": "hi", "voice_id": 1, "language": 1, "colour": "red"}, "colour"),
        ("camb", "text-to-sound", {"prompt": "rain", "duration": 11}, "duration"),
        ("camb", "text-to-sound", {"prompt": "rain", "audio_type": "noise"}, "audio_type"),
        ("revid", "tts", {"text": "hi", "speed": 3}, "speed"),
        ("revid", "tts", {"text": "hi", "pitch": -21}, "pitch"),
        ("revid", "tts", {"text": "hi", "engine": "polly"}, "engine"),
        ("revid", "tts", {"text": "hi", "webhook_url": "ftp://x"}, "webhook_url"),
        ("revid", "srt-to-speech", {}, "exactly one"),
        ("revid", "srt-to-speech", {"subtitles": []}, "subtitles"),
        (
            "revid",
            "srt-to-speech",
            {"subtitles": [{"index": 1, "start": "0:00:01", "end": "00:00:02,000", "text": "a"}]},
            "start",
        ),
    ],
)
def test_submit_fields_rejected_before_sending(vendor: str, kind: str, fields: dict[str, Any], fragment: str) -> None:
    unit = camb() if vendor == "camb" else revid()
    with pytest.raises(TtsInvalidRequestError) as info:
        unit.submit_request(kind, fields)  # type: ignore[arg-type]
    assert fragment in str(info.value)


def test_submit_requests_carry_documented_bodies() -> None:
    req = camb().submit_request("tts", {"text": " Hello ", "voice_id": "20303", "language": 1})
    assert (req.method, req.url, req.idempotent) == ("POST", "https://client.camb.ai/apis/tts", False)
    assert req.json == {"text": "Hello", "voice_id": 20303, "language": 1}
    req = revid().submit_request(
        "srt-to-speech",
        {"subtitles": [{"index": 1, "start": "00:00:00,000", "end": "00:00:01,500", "text": "Hi"}], "mode": "merge"},
    )
    assert req.url == "https://api.revidapi.com/paid/srt-to-speech/merge"
    assert req.json["subtitles"][0]["end"] == "00:00:01,500"


def test_status_and_audio_urls() -> None:
    assert camb().status_request("text-to-sound", TID).url == f"https://client.camb.ai/apis/text-to-sound/{TID}"
    assert revid().status_request("srt-to-speech", TID).url == f"https://tts.revidapi.com/api/get/{TID}"
    ok = camb().parse_status("text-to-sound", TID, resp(200, {"status": "SUCCESS", "run_id": 9}))
    req = camb().audio_request(ok)
    assert req.url == "https://client.camb.ai/apis/text-to-sound-result/9"
    assert req.authenticated
    done = revid().parse_status("tts", TID, resp(200, COMPLETED))
    req = revid().audio_request(done)
    assert req.url == COMPLETED["response"]["audio_url"]
    assert not req.authenticated


@pytest.mark.parametrize("key", ["output_url", "file_url", "url"])
def test_file_url_keys_accepted(key: str) -> None:
    assert camb().file_url_from(resp(200, {key: "https://s3.example/x.flac?sig=1"}), "audio") == (
        "https://s3.example/x.flac?sig=1"
    )


def test_file_url_json_without_url_is_a_protocol_error() -> None:
    with pytest.raises(TtsProtocolError, match="output_url"):
        camb().file_url_from(resp(200, {"detail": "nope"}), "audio")
