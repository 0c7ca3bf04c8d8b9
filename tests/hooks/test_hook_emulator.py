"""TtsHook against the emulator over real loopback sockets: statuses, faults, retries, secrets."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import pytest

from airflow_provider_tts.exceptions import (
    TtsAudioUrlExpiredError,
    TtsAuthError,
    TtsConnectionError,
    TtsRateLimitError,
    TtsRejectedRequestError,
    TtsServerError,
)
from airflow_provider_tts.hooks.tts import TtsHook, TtsTaskStatus
from airflow_provider_tts.vendors.base import ApiRequest
from tests.conftest import FIELDS, PAIRS, TEST_KEY, ConnFactory

MAGIC = {"audio/flac": b"fLaC", "audio/wav": b"RIFF", "audio/x-wav": b"RIFF"}


def _wait_done(hook: TtsHook, task_id: str, kind: str, timeout: float = 10) -> TtsTaskStatus:
    deadline = time.monotonic() + timeout
    while True:
        status = hook.get_task_status(task_id, kind)
        if status.is_terminal() or time.monotonic() > deadline:
            return status
        time.sleep(0.1)


def _status_async(conn_id: str, task_id: str, kind: str, **hook_kw: Any) -> TtsTaskStatus:
    async def go() -> TtsTaskStatus:
        hook = TtsHook(conn_id, **hook_kw)
        try:
            return await hook.aget_task_status(task_id, kind)
        finally:
            await hook.aclose()

    return asyncio.run(go())


@pytest.mark.parametrize(("api", "kind"), PAIRS)
def test_submit_poll_and_stream_audio(emu: Any, make_conn: ConnFactory, api: str, kind: str) -> None:
    hook = TtsHook(make_conn(api))
    task_id = hook.submit(kind, **FIELDS[f"{api}/{kind}"])
    assert hook.get_task_status(task_id, kind).state == "pending"
    status = _wait_done(hook, task_id, kind)
    assert status.state == "succeeded", status
    assert _status_async(hook.tts_conn_id, task_id, kind) == status
    with hook.open_audio(status) as audio:
        body = b"".join(audio.iter_chunks(4096))
    assert audio.content_length == len(body) > 1000
    assert body[:4] == MAGIC[audio.content_type]
    assert emu.stats()["creates"][api][kind] == 1
    assert emu.storage_key_leaks() == []


CAMB_OUTCOMES = [
    ("error", "HARMFUL_CONTENT_DETECTED", "failed", False, "content_rejected"),
    ("error", "INTERNAL_ERROR", "failed", True, "error"),
    ("timeout", None, "failed", False, "vendor_timeout"),
    ("payment_required", None, "failed", False, "payment_required"),
    ("not_found", None, "failed", False, "not_found"),
    ("unknown_status", None, "pending", None, None),
]
REVID_OUTCOMES = [
    ("failed", "voice engine crashed", "failed", True, "error"),
    ("not_found", None, "failed", False, "not_found"),
    ("unknown_status", None, "pending", None, None),
]


@pytest.mark.parametrize(("api", "kind"), PAIRS)
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_every_documented_outcome(emu: Any, make_conn: ConnFactory, api: str, kind: str, mode: str) -> None:
    conn_id = make_conn(api)
    for outcome, reason, state, retryable, failure in CAMB_OUTCOMES if api == "camb_ai" else REVID_OUTCOMES:
        # An undocumented status lasts for the task's delay, then the task succeeds.
        delay = 60 if outcome == "unknown_status" else 0
        task_id = emu.create_task(api, kind, outcome=outcome, reason=reason, delay=delay)
        if mode == "sync":
            status = TtsHook(conn_id).get_task_status(task_id, kind)
        else:
            status = _status_async(conn_id, task_id, kind)
        assert (status.state, status.retryable, status.failure) == (state, retryable, failure), outcome
        if reason:
            assert reason in (status.message or "")


@pytest.mark.parametrize(
    "variant",
    [
        {"status_http": "always_200"},
        {"wrap_array": True},
        {"result_key": "result", "duration_key": "audio_duration"},
        {"status_synonyms": True},
    ],
)
def test_revid_variants_parse_the_same(emu: Any, make_conn: ConnFactory, variant: dict[str, Any]) -> None:
    conn_id = make_conn("revid_tts")
    hook = TtsHook(conn_id)
    task_id = emu.create_task("revid_tts", "tts", delay=0, **variant)
    status = hook.get_task_status(task_id, "tts")
    assert status.state == "succeeded"
    assert status.audio_url
    assert status.duration_seconds
    assert status.duration_seconds > 0
    failed = emu.create_task("revid_tts", "tts", outcome="failed", reason="x", delay=0, **variant)
    assert hook.get_task_status(failed, "tts").state == "failed"
    pending = emu.create_task("revid_tts", "tts", delay=60, **variant)
    assert hook.get_task_status(pending, "tts").state == "pending"


TRANSIENT = [
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
]


@pytest.mark.parametrize("fault", TRANSIENT)
@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_transient_faults_are_retried(emu: Any, make_conn: ConnFactory, fault: str, mode: str, api: str) -> None:
    emu.set_faults(retry_after="0.05", slow_seconds=1.0)
    conn_id = make_conn(api, read_timeout=0.3, retry_max_backoff=0.5)
    kind = "tts"
    task_id = emu.create_task(api, kind, delay=0)
    emu.inject(fault, count=2, endpoint="status")
    status = (
        TtsHook(conn_id).get_task_status(task_id, kind) if mode == "sync" else _status_async(conn_id, task_id, kind)
    )
    assert status.state == "succeeded"
    assert emu.stats()["requests_by_endpoint"]["status"] == 3  # two faults, one success: two retries


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retries_are_bounded(emu: Any, make_conn: ConnFactory, mode: str) -> None:
    conn_id = make_conn("camb_ai", max_retries=2)
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    emu.inject("503", count=10, endpoint="status")

    def poll() -> TtsTaskStatus:
        if mode == "sync":
            return TtsHook(conn_id).get_task_status(task_id, "tts")
        return _status_async(conn_id, task_id, "tts")

    with pytest.raises(TtsServerError, match="HTTP 503"):
        poll()
    assert emu.stats()["requests_by_endpoint"]["status"] == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_retry_after_is_honoured(emu: Any, make_conn: ConnFactory, mode: str) -> None:
    emu.set_faults(retry_after="1")
    conn_id = make_conn("revid_tts", retry_backoff=0.01, retry_max_backoff=5)
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    emu.inject("429", count=1, endpoint="status")
    started = time.monotonic()
    if mode == "sync":
        TtsHook(conn_id).get_task_status(task_id, "tts")
    else:
        _status_async(conn_id, task_id, "tts")
    assert time.monotonic() - started >= 0.95


def test_retry_after_is_capped_by_max_backoff(emu: Any, make_conn: ConnFactory) -> None:
    emu.set_faults(retry_after="30")
    conn_id = make_conn("camb_ai", retry_max_backoff=0.2)
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    emu.inject("429", count=1, endpoint="status")
    started = time.monotonic()
    assert TtsHook(conn_id).get_task_status(task_id, "tts").state == "succeeded"
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
@pytest.mark.parametrize("mode", ["sync", "async"])
def test_bad_key_is_not_retried(emu: Any, make_conn: ConnFactory, api: str, mode: str) -> None:
    conn_id = make_conn(api, key="sk-wrong")
    before = emu.stats()["requests_total"]
    if api == "revid_tts":
        emu.configure(require_key_on_status=True)
    task_id = "0c5ba7d0-0000-4000-8000-000000000000"

    def poll() -> TtsTaskStatus:
        if mode == "sync":
            return TtsHook(conn_id).get_task_status(task_id, "tts")
        return _status_async(conn_id, task_id, "tts")

    with pytest.raises(TtsAuthError, match="HTTP 401"):
        poll()
    assert emu.stats()["requests_total"] - before == 1


def test_422_is_not_retried(emu: Any, make_conn: ConnFactory) -> None:
    hook = TtsHook(make_conn("camb_ai"))
    # Bypass the hook's own validation to see what the policy does with the vendor's 422.
    req = ApiRequest("POST", f"{emu.camb_base_url}/tts", what="raw create", json={"voice_id": 1}, idempotent=False)
    with pytest.raises(TtsRejectedRequestError, match="422"):
        hook._sync.call(req, lambda resp: hook.vendor.parse_submit("tts", resp))
    assert emu.stats()["requests_total"] == 1


def test_403_from_storage_is_not_retried_as_is_but_with_one_fresh_url(emu: Any, make_conn: ConnFactory) -> None:
    # Issue 9.4: this used to be a TtsAuthError "(check the connection's API key)" after one request.
    emu.configure(revid_url_ttl=0.0)  # the audio URL has expired by the time it is fetched
    hook = TtsHook(make_conn("revid_tts"))
    status = hook.get_task_status(emu.create_task("revid_tts", "tts", delay=0), "tts")
    time.sleep(0.05)
    with pytest.raises(TtsAudioUrlExpiredError, match="403"):
        hook.open_audio(status)
    assert len(emu.storage_requests()) == 2


def test_create_retried_only_when_not_processed(emu: Any, make_conn: ConnFactory) -> None:
    hook = TtsHook(make_conn("camb_ai"))
    fields = FIELDS["camb_ai/tts"]
    emu.inject("503", count=1, endpoint="create")  # "unavailable": safe to resend
    assert hook.submit("tts", **fields)
    assert emu.stats()["creates"]["camb_ai"]["tts"] == 1
    for fault, error in [("500", TtsServerError), ("drop", TtsConnectionError), ("malformed_json", Exception)]:
        emu.inject(fault, count=1, endpoint="create")  # may have been processed: never resend
        before = emu.stats()["requests_by_endpoint"].get("create", 0)
        with pytest.raises(error):
            hook.submit("tts", **fields)
        assert emu.stats()["requests_by_endpoint"]["create"] - before == 1, fault


def test_rate_limit_exhaustion_names_the_status(emu: Any, make_conn: ConnFactory) -> None:
    emu.set_faults(retry_after="0")
    conn_id = make_conn("camb_ai", max_retries=1)
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    emu.inject("429", count=5, endpoint="status")
    with pytest.raises(TtsRateLimitError) as info:
        TtsHook(conn_id).get_task_status(task_id, "tts")
    assert info.value.http_status == 429
    assert task_id in str(info.value)


def test_connections_are_reused(emu: Any, make_conn: ConnFactory) -> None:
    hook = TtsHook(make_conn("camb_ai"))
    task_id = emu.create_task("camb_ai", "tts", delay=60)
    before = emu.stats()["connections"]
    for _ in range(10):
        hook.get_task_status(task_id, "tts")
    assert emu.stats()["connections"] - before == 1

    async def many() -> None:
        async_hook = TtsHook(hook.tts_conn_id)
        try:
            for _ in range(10):
                await async_hook.aget_task_status(task_id, "tts")
        finally:
            await async_hook.aclose()

    before = emu.stats()["connections"]
    asyncio.run(many())
    assert emu.stats()["connections"] - before == 1


def test_key_never_logged_nor_sent_to_storage(
    emu: Any, make_conn: ConnFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    emu.set_faults(retry_after="0")
    messages: list[str] = []
    for api, kind in PAIRS:
        hook = TtsHook(make_conn(api))
        assert hook.test_connection()[0]
        emu.inject("429", count=1, endpoint="status")
        task_id = hook.submit(kind, **FIELDS[f"{api}/{kind}"])
        status = _wait_done(hook, task_id, kind)
        with hook.open_audio(status) as audio:
            for _ in audio.iter_chunks():
                pass
        messages += [repr(hook.vendor.settings), repr(status)]
        try:
            TtsHook(make_conn(api, key=TEST_KEY + "-wrong")).get_task_status(task_id, kind)
        except Exception as exc:
            messages.append(str(exc))
    assert TEST_KEY not in caplog.text
    assert all(TEST_KEY not in m for m in messages)
    assert emu.storage_key_leaks() == []
    assert len(emu.storage_requests()) == 2  # the two Revid downloads reached storage, without the key


def test_presigned_file_url_is_fetched_without_the_key(emu: Any, make_conn: ConnFactory) -> None:
    hook = TtsHook(make_conn("camb_ai"))
    status = hook.get_task_status(emu.create_task("camb_ai", "tts", delay=0), "tts")
    original = hook.vendor.audio_request
    hook.vendor.audio_request = lambda s: ApiRequest(  # type: ignore[method-assign]
        "GET", original(s).url, what="audio", params={"output_type": "file_url"}
    )
    with hook.open_audio(status) as audio:
        body = b"".join(audio.iter_chunks())
    assert body[:4] == b"fLaC"
    assert "/storage/" in audio.url
    assert len(emu.storage_requests()) == 1
    assert emu.storage_key_leaks() == []


def test_unknown_status_warns_once(emu: Any, make_conn: ConnFactory, caplog: pytest.LogCaptureFixture) -> None:
    from airflow_provider_tts.vendors.base import warn_unknown_status

    warn_unknown_status.seen.clear()
    hook = TtsHook(make_conn("camb_ai"))
    task_id = emu.create_task("camb_ai", "tts", outcome="unknown_status", delay=60)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            assert hook.get_task_status(task_id, "tts").state == "pending"
    assert sum("undocumented status" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_test_connection(emu: Any, make_conn: ConnFactory, api: str) -> None:
    ok, message = TtsHook(make_conn(api)).test_connection()
    assert ok, message
    ok, message = TtsHook(make_conn(api, key="sk-wrong")).test_connection()
    assert not ok
    assert "401" in message
    assert sum(emu.stats()["creates"].get(api, {}).values()) == 0  # the probe never creates a task


@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_test_connection_sends_only_gets_and_says_what_it_verified(emu: Any, make_conn: ConnFactory, api: str) -> None:
    # Issue 9.7: the Revid key check POSTed to the paid create endpoint, which a lenient backend could bill.
    ok, message = TtsHook(make_conn(api)).test_connection()
    assert ok, message
    assert [r["method"] for r in emu.requests()] == ["GET"]
    assert emu.requests()[0]["endpoint"] == "status"
    if api == "revid_tts":
        assert "creates no task" in message
        assert "first submit" in message


def test_test_connection_unreachable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_DEAD",
        '{"conn_type": "camb_ai", "host": "http://127.0.0.1:9/apis", "password": "k", '
        '"extra": {"max_retries": 0, "connect_timeout": 1}}',
    )
    ok, message = TtsHook("dead").test_connection()
    assert not ok
    assert "127.0.0.1" in message or "Connection" in message


def test_unsupported_kind_fails_before_any_request(emu: Any, make_conn: ConnFactory) -> None:
    from airflow_provider_tts.exceptions import TtsConfigError

    hook = TtsHook(make_conn("revid_tts"))
    with pytest.raises(TtsConfigError, match="text-to-sound"):
        hook.submit("text-to-sound", prompt="rain")
    with pytest.raises(TtsConfigError, match="tts_task_id"):
        hook.get_task_status("../admin", "tts")
    assert emu.stats()["requests_total"] == 0
