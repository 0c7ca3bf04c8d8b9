"""Permanent failures end a wait within one poll interval of appearing, with the vendor's words, no retries.

Each wait is a :class:`TtsTaskTrigger` driven directly with a 1 s poll interval, on a task that
turns into the failure at a known moment: a vendor status (Camb ``PAYMENT_REQUIRED``, ``ERROR``,
``TIMEOUT``; Revid ``failed``) when the task's delay runs out; ``not_found`` when the vendor
forgets the task (``Emulator.reset``) after the not-found grace; an HTTP 401, 403 or 422 (a key
revoked, a permission withdrawn, a request the API now rejects) when it is injected. The time
from that moment to the event is measured, and the emulator counts the requests: one poll after
the failure appears, never a retry of it.
"""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest
import requests

from airflow_provider_tts.compat import AirflowFailException
from airflow_provider_tts.emulator import FaultConfig
from airflow_provider_tts.emulator.config import PERMANENT_FAULT_KINDS, TRANSIENT_FAULT_KINDS
from airflow_provider_tts.exceptions import (
    TtsAuthError,
    TtsPermanentTaskFailedError,
    TtsRejectedRequestError,
    TtsTaskFailedError,
    error_from_event,
)
from airflow_provider_tts.triggers.tts import TtsTaskTrigger, status_from_event
from tests.conftest import TEST_KEY, ConnFactory
from tests.reliability.conftest import drive

POLL = 1.0
#: How long after a poll falls due its answer may take on loopback (scheduling, one request).
LATENCY = 0.3
APPEARS_AFTER = 1.2  # seconds into the wait: just after a poll, so detection waits for almost a whole interval

# (api, kind, emulator spec, vendor status, failure, vendor's words, retryable)
STATUS_FAILURES = [
    ("camb_ai", kind, spec, vendor_status, failure, words, retryable)
    for kind in ("tts", "text-to-sound")
    for spec, vendor_status, failure, words, retryable in [
        ({"outcome": "payment_required", "reason": "NO_CREDITS"}, "PAYMENT_REQUIRED", "payment_required",
         "Insufficient credits for this operation", False),
        ({"outcome": "error", "reason": "INTERNAL_ERROR"}, "ERROR", "error", "INTERNAL_ERROR", True),
        ({"outcome": "error", "reason": "HARMFUL_CONTENT_DETECTED"}, "ERROR", "content_rejected",
         "HARMFUL_CONTENT_DETECTED", False),
        ({"outcome": "timeout", "reason": "SOURCE_TOO_LONG"}, "TIMEOUT", "vendor_timeout",
         "Task processing exceeded the allowed time", False),
    ]
] + [
    ("revid_tts", kind, {"outcome": "failed", "reason": "voice engine crashed"}, "failed", "error",
     "voice engine crashed", True)
    for kind in ("tts", "srt-to-speech")
]  # fmt: skip


def _trigger(conn_id: str, task_id: str, kind: str, **kw: Any) -> TtsTaskTrigger:
    trigger = TtsTaskTrigger(
        tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, poll_interval=POLL, deadline=time.time() + 60, **kw
    )
    return TtsTaskTrigger(**trigger.serialize()[1])


async def _warm_up(emu: Any, conns: dict[str, str]) -> None:
    """One finished wait per connection first (connection lookup, first session): then each timed
    wait polls at 0, 1, 2 s after it starts, and a failure appearing at 1.2 s waits almost a whole
    interval to be seen, the worst case."""
    for api, conn_id in conns.items():
        await drive(_trigger(conn_id, emu.create_task(api, "tts", delay=0), "tts"))


async def _timed(trigger: TtsTaskTrigger) -> tuple[dict[str, Any], float]:
    (event,) = await drive(trigger)
    return event, time.monotonic()


def test_vendor_status_failures_end_within_one_poll_interval(emu: Any, make_conn: ConnFactory) -> None:
    conns = {api: make_conn(api) for api in ("camb_ai", "revid_tts")}

    async def all_cases() -> list[tuple[str, float, float, dict[str, Any]]]:
        await _warm_up(emu, conns)
        started, tasks = [], []
        for api, kind, spec, *_ in STATUS_FAILURES:
            task_id = emu.create_task(api, kind, delay=APPEARS_AFTER, audio_bytes=4096, **spec)
            appears = time.monotonic() + APPEARS_AFTER
            started.append((task_id, appears, time.monotonic()))
            tasks.append(asyncio.ensure_future(_timed(_trigger(conns[api], task_id, kind))))
        done = await asyncio.gather(*tasks)
        return [(tid, appears, t0, {"event": ev, "ended": end}) for (tid, appears, t0), (ev, end) in
                zip(started, done, strict=True)]  # fmt: skip

    results = asyncio.run(all_cases())
    polls = emu.stats()["polls_by_task"]
    polls = {tid: polls[tid] for tid, *_ in results}
    for (api, kind, _, vendor_status, failure, words, retryable), (tid, appears, _, got) in zip(
        STATUS_FAILURES, results, strict=True
    ):
        event, ended = got["event"], got["ended"]
        case = f"{api}/{kind}/{vendor_status}/{failure}"
        assert event["status"] == "failed", (case, event)
        status = event["task_status"]
        assert (status["vendor_status"], status["failure"], status["retryable"]) == (vendor_status, failure, retryable)
        assert words in status["message"], (case, status)
        assert 0 <= ended - appears <= POLL + LATENCY, (case, ended - appears)
        # One request per poll, no retries: polls at 0, 1, 2 s for a failure appearing at 1.2 s.
        assert polls[tid] <= math.ceil(APPEARS_AFTER / POLL) + 1, (case, polls[tid])
        with pytest.raises(TtsTaskFailedError) as info:  # what the sensor / operator raise on resume
            status_from_event(event, tid)
        assert vendor_status in str(info.value)
        assert words in str(info.value)
        assert isinstance(info.value, TtsPermanentTaskFailedError) is (not retryable)
    assert emu.stats()["requests_by_endpoint"]["status"] == sum(polls.values()) + 2  # + the warm-up polls
    lags = [got["ended"] - appears for _, appears, _, got in results]
    print(
        f"\nFIGURE vendor-status failures: {len(results)} waits, ended {min(lags):.2f}-{max(lags):.2f} s after "
        f"the failure appeared (poll interval {POLL} s), max {max(polls.values())} requests per wait"
    )


@pytest.mark.parametrize(("api", "vendor_status"), [("camb_ai", "NOT_FOUND"), ("revid_tts", "not_found")])
def test_task_forgotten_by_the_vendor_ends_within_one_poll_interval(
    emu: Any, make_conn: ConnFactory, api: str, vendor_status: str
) -> None:
    conn_id = make_conn(api)

    async def scenario() -> tuple[dict[str, Any], float, float]:
        await _warm_up(emu, {api: conn_id})
        task_id = emu.create_task(api, "tts", delay=60)
        wait = asyncio.ensure_future(_timed(_trigger(conn_id, task_id, "tts", not_found_grace=0.5)))
        await asyncio.sleep(APPEARS_AFTER)
        await asyncio.to_thread(emu.reset)  # the vendor loses the task (expired, purged)
        appears = time.monotonic()
        event, ended = await wait
        return event, appears, ended

    event, appears, ended = asyncio.run(scenario())
    assert event["status"] == "failed"
    assert event["task_status"]["vendor_status"] == vendor_status
    assert event["task_status"]["failure"] == "not_found"
    assert "not found" in event["task_status"]["message"].lower()
    assert 0 <= ended - appears <= POLL + LATENCY
    assert emu.stats()["polls_unknown_task"] == 1  # exactly one poll after it vanished (counters were reset)
    with pytest.raises(TtsPermanentTaskFailedError, match=vendor_status):
        status_from_event(event, event["tts_task_id"])
    print(f"\nFIGURE {api} not_found: ended {ended - appears:.2f} s after the task vanished, 1 request after")


HTTP_FAILURES = {
    "401": (TtsAuthError, 401, "API key revoked"),
    "403": (TtsAuthError, 403, "does not have permission"),
    "422": (TtsRejectedRequestError, 422, "rejected by the emulator"),
}


@pytest.mark.parametrize("fault", sorted(HTTP_FAILURES))
def test_http_permanent_errors_end_within_one_poll_interval_without_retries(
    emu: Any, make_conn: ConnFactory, fault: str
) -> None:
    error_class, http_status, words = HTTP_FAILURES[fault]
    apis = ("camb_ai", "revid_tts")
    conns = {api: make_conn(api) for api in apis}

    async def scenario() -> dict[str, tuple[dict[str, Any], float, float]]:
        await _warm_up(emu, conns)
        waits = {api: (conns[api], emu.create_task(api, "tts", delay=60)) for api in apis}
        futures = {api: asyncio.ensure_future(_timed(_trigger(c, t, "tts"))) for api, (c, t) in waits.items()}
        await asyncio.sleep(APPEARS_AFTER)
        for api in apis:  # from now on every status request answers with the error, 20 times over
            emu.inject(fault, count=20, endpoint="status", api=api)
        appears = time.monotonic()
        out = {}
        for api, future in futures.items():
            event, ended = await future
            out[api] = (event, appears, ended)
        return out

    results = asyncio.run(scenario())
    left = {inj["api"]: inj["remaining"] for inj in emu.stats()["pending_injections"]}
    for api, (event, appears, ended) in results.items():
        assert event["status"] == "error", event
        assert event["error_type"] == error_class.__name__
        assert event["http_status"] == http_status
        assert event["retryable"] is False
        assert words in event["message"], event["message"]
        assert f"HTTP {http_status}" in event["message"]
        assert 0 <= ended - appears <= POLL + LATENCY, (api, ended - appears)
        assert left[api] == 19, "the error was retried"  # exactly one request met it
        exc = error_from_event(event)
        assert isinstance(exc, error_class)
        assert isinstance(exc, AirflowFailException)  # fails the Airflow task without using up retries
        assert words in str(exc)
        assert TEST_KEY not in str(exc)
        print(f"\nFIGURE {api} HTTP {fault}: ended {ended - appears:.2f} s after it appeared, 1 request, 0 retries")


# ------------------------------------------------------------- the emulator's permanent fault kinds


@pytest.mark.parametrize("fault", PERMANENT_FAULT_KINDS)
@pytest.mark.parametrize("api", ["camb_ai", "revid_tts"])
def test_emulator_permanent_faults_speak_the_vendor_error_shape(emu: Any, api: str, fault: str) -> None:
    task_id = emu.create_task(api, "tts", delay=0)
    url = f"{emu.camb_base_url}/tts/{task_id}" if api == "camb_ai" else f"{emu.revid_status_base_url}/get/{task_id}"
    emu.inject(fault, endpoint="status")
    resp = requests.get(url, headers={"x-api-key": TEST_KEY}, timeout=5)
    assert resp.status_code == int(fault)
    body = resp.json()
    if api == "camb_ai":
        assert isinstance(body["detail"], list if fault == "422" else str)
    else:
        assert body["code"] == int(fault)
        assert body["status"] == "error"
        assert "task_id" not in body  # an error about the request, never a task state
    assert requests.get(url, headers={"x-api-key": TEST_KEY}, timeout=5).status_code == 200


def test_random_faults_never_draw_a_permanent_kind() -> None:
    assert set(FaultConfig().kinds) == set(TRANSIENT_FAULT_KINDS)
    assert FaultConfig(kinds=("503", "401")).kinds == ("503",)
    with pytest.raises(ValueError, match="can only be injected"):
        FaultConfig(kinds=("401", "403"))
