"""One name per concept (issue 22): ``request_retry`` reaches every class's transport; the old
``retry`` still works with a deprecation warning on the operators, the sensor and the hooks, and
the triggers keep ``retry`` as their row's key without one."""

from __future__ import annotations

import asyncio
import warnings
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from airflow.exceptions import AirflowProviderDeprecationWarning

from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.exceptions import TtsConfigError, TtsServerError
from airflow_provider_tts.hooks.tts import CambAiHook, RevidTtsHook, TtsHook
from airflow_provider_tts.operators.batch import (
    CambTextToSoundBatchToStorageOperator,
    CambTtsBatchToStorageOperator,
    RevidSrtToSpeechBatchToStorageOperator,
    RevidTtsBatchToStorageOperator,
)
from airflow_provider_tts.operators.text_to_storage import (
    CambTextToSoundToStorageOperator,
    CambTtsToStorageOperator,
    RevidSrtToSpeechToStorageOperator,
    RevidTtsToStorageOperator,
)
from airflow_provider_tts.operators.tts import (
    CambTtsStreamToStorageOperator,
    TtsAudioToStorageOperator,
    TtsSubmitOperator,
)
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from airflow_provider_tts.triggers.batch import TtsBatchTrigger
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import ConnFactory

#: One retry per request, no wait: a connection's default (5 retries) would show as 6 requests.
OVERRIDES = {"max_retries": 1, "backoff": 0, "max_backoff": 0}
SRT = "1\n00:00:00,000 --> 00:00:01,000\nHello\n"

#: Every class that takes the per-request retry overrides: (name, api, build(conn_id, folder, **retry)).
Build = Callable[..., Any]
BUILDERS: list[tuple[str, str, Build]] = [
    ("TtsSubmitOperator", "camb_ai", lambda c, f, **r: TtsSubmitOperator(task_id="t", tts_conn_id=c, text="hi", **r)),
    ("TtsAudioToStorageOperator", "revid_tts",
     lambda c, f, **r: TtsAudioToStorageOperator(task_id="t", tts_conn_id=c, tts_task_id="x", destination=f, **r)),
    ("CambTtsToStorageOperator", "camb_ai", lambda c, f, **r: CambTtsToStorageOperator(
        task_id="t", tts_conn_id=c, text="hello", voice_id=20303, language="en-us", destination=f, **r)),
    ("CambTextToSoundToStorageOperator", "camb_ai", lambda c, f, **r: CambTextToSoundToStorageOperator(
        task_id="t", tts_conn_id=c, prompt="rain", destination=f, **r)),
    ("RevidTtsToStorageOperator", "revid_tts",
     lambda c, f, **r: RevidTtsToStorageOperator(task_id="t", tts_conn_id=c, text="hello", destination=f, **r)),
    ("RevidSrtToSpeechToStorageOperator", "revid_tts",
     lambda c, f, **r: RevidSrtToSpeechToStorageOperator(task_id="t", tts_conn_id=c, srt=SRT, destination=f, **r)),
    ("CambTtsStreamToStorageOperator", "camb_ai", lambda c, f, **r: CambTtsStreamToStorageOperator(
        task_id="t", tts_conn_id=c, text="hello there", language="en-us", voice_id=20303, destination=f, **r)),
    ("CambTtsBatchToStorageOperator", "camb_ai", lambda c, f, **r: CambTtsBatchToStorageOperator(
        task_id="t", tts_conn_id=c, items=["hello"], defaults={"voice_id": 20303, "language": 1}, destination=f, **r)),
    ("CambTextToSoundBatchToStorageOperator", "camb_ai", lambda c, f, **r: CambTextToSoundBatchToStorageOperator(
        task_id="t", tts_conn_id=c, items=["rain"], destination=f, **r)),
    ("RevidTtsBatchToStorageOperator", "revid_tts", lambda c, f, **r: RevidTtsBatchToStorageOperator(
        task_id="t", tts_conn_id=c, items=["hello"], destination=f, **r)),
    ("RevidSrtToSpeechBatchToStorageOperator", "revid_tts", lambda c, f, **r: RevidSrtToSpeechBatchToStorageOperator(
        task_id="t", tts_conn_id=c, items=[SRT], destination=f, **r)),
    ("TtsTaskSensor", "camb_ai", lambda c, f, **r: TtsTaskSensor(task_id="t", tts_conn_id=c, tts_task_id="x", **r)),
    ("TtsHook", "revid_tts", lambda c, f, **r: TtsHook(c, **r)),
    ("CambAiHook", "camb_ai", lambda c, f, **r: CambAiHook(c, **r)),
    ("RevidTtsHook", "revid_tts", lambda c, f, **r: RevidTtsHook(c, **r)),
]  # fmt: skip
IDS = [name for name, _, _ in BUILDERS]


def _hook(obj: Any) -> TtsHook:
    return obj if isinstance(obj, TtsHook) else obj.hook


def _status_requests_until_given_up(emu: Any, hook: TtsHook, api: str) -> int:
    """Status requests one poll makes against a status endpoint that answers 503 every time."""
    task_id = emu.create_task(api, "tts", delay=60)
    emu.inject("503", count=20, endpoint="status")
    before = emu.stats()["requests_by_endpoint"].get("status", 0)
    with pytest.raises(TtsServerError, match="HTTP 503"):
        hook.get_task_status(task_id, "tts")
    return int(emu.stats()["requests_by_endpoint"]["status"]) - before


@pytest.mark.parametrize(("name", "api", "build"), BUILDERS, ids=IDS)
def test_request_retry_reaches_the_transport(
    name: str, api: str, build: Build, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn_id = make_conn(api, retry_backoff=0)  # the connection would retry 5 times
    with warnings.catch_warnings():
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)  # the new name warns about nothing
        obj = build(conn_id, f"{tmp_path.as_uri()}/", request_retry=OVERRIDES)
    if not isinstance(obj, TtsHook):
        assert obj.request_retry == OVERRIDES
    assert _status_requests_until_given_up(emu, _hook(obj), api) == 2  # one request and one retry


@pytest.mark.parametrize(("name", "api", "build"), BUILDERS, ids=IDS)
def test_the_old_retry_still_works_and_warns(
    name: str, api: str, build: Build, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn_id = make_conn(api, retry_backoff=0)
    with pytest.warns(
        AirflowProviderDeprecationWarning, match=rf"{name}\(retry=\.\.\.\) is deprecated; use request_retry="
    ):
        obj = build(conn_id, f"{tmp_path.as_uri()}/", retry=OVERRIDES)
    if not isinstance(obj, TtsHook):
        assert obj.request_retry == obj.retry == OVERRIDES  # the old attribute still reads
    assert _status_requests_until_given_up(emu, _hook(obj), api) == 2


@pytest.mark.parametrize(("name", "api", "build"), BUILDERS, ids=IDS)
def test_both_spellings_at_once_are_refused(name: str, api: str, build: Build, tmp_path: Path) -> None:
    with (
        pytest.warns(AirflowProviderDeprecationWarning),
        pytest.raises(TtsConfigError, match=f"{name}: give request_retry or the deprecated retry, not both"),
    ):
        build("any_conn", f"{tmp_path.as_uri()}/", request_retry=OVERRIDES, retry=OVERRIDES)


def test_partial_still_takes_the_old_spelling(tmp_path: Path) -> None:
    # The old name stays a parameter: Airflow's .partial() checks names against the signatures.
    mapped = TtsAudioToStorageOperator.partial(task_id="t", destination=f"{tmp_path.as_uri()}/", retry=OVERRIDES)
    mapped.expand(tts_task_id=["a", "b"])
    renamed = TtsAudioToStorageOperator.partial(
        task_id="u", destination=f"{tmp_path.as_uri()}/", request_retry=OVERRIDES
    )
    renamed.expand(tts_task_id=["a"])


# ------------------------------------------------------------------------------------ triggers


def test_the_task_trigger_keeps_retry_as_its_row_key_without_a_warning(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai", retry_backoff=0)
    trigger = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id="abc", request_retry=OVERRIDES)
    _, row = trigger.serialize()
    assert row["retry"] == OVERRIDES  # the row's key since 0.1: read alike by any release
    assert "request_retry" not in row
    with warnings.catch_warnings():  # the triggerer passes the row's key back: no warning
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)
        again = TtsTaskTrigger(**row)
    assert again.request_retry == again.retry == OVERRIDES
    assert again.serialize() == trigger.serialize()
    assert _status_requests_until_given_up(emu, again._hook(), "camb_ai") == 2
    with pytest.raises(TtsConfigError, match="not both"):
        TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id="abc", request_retry=OVERRIDES, retry=OVERRIDES)


def test_the_batch_trigger_keeps_retry_as_its_row_key_and_hands_it_to_its_hook(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import airflow_provider_tts.hooks.tts as hooks

    conn_id = make_conn("camb_ai", retry_backoff=0)
    op = CambTtsBatchToStorageOperator(
        task_id="speak_all", tts_conn_id=conn_id, items=["One river."], defaults={"voice_id": 20303, "language": 1},
        destination=f"{tmp_path.as_uri()}/", deferrable=True, poll_interval=0.05, request_retry=OVERRIDES,
    )  # fmt: skip
    ti = SimpleNamespace(dag_id="nightly", task_id="speak_all", run_id="manual__1", map_index=-1, try_number=1)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({"ti": ti})
    _, row = deferred.value.trigger.serialize()
    assert row["retry"] == OVERRIDES
    assert "request_retry" not in row

    made: list[TtsHook] = []

    class Recorded(TtsHook):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            made.append(self)

    monkeypatch.setattr(hooks, "TtsHook", Recorded)

    async def first_event() -> Any:
        async for event in TtsBatchTrigger(**row).run():
            return event.payload
        return None

    with warnings.catch_warnings():
        warnings.simplefilter("error", AirflowProviderDeprecationWarning)
        assert asyncio.run(first_event())["status"] == "done"
    (hook,) = made
    assert hook.retry_overrides == OVERRIDES
    assert _status_requests_until_given_up(emu, hook, "camb_ai") == 2


def test_the_batch_operators_take_the_old_wait_timeout_too() -> None:
    from airflow_provider_tts.batch.operator import DEFAULT_BATCH_TIMEOUT

    def build(**kw: Any) -> Any:
        return RevidTtsBatchToStorageOperator(task_id="t", items=["a"], destination="file:///tmp/x/", **kw)

    assert build().timeout == DEFAULT_BATCH_TIMEOUT
    with pytest.warns(AirflowProviderDeprecationWarning, match="use timeout="):
        assert build(wait_timeout=60).timeout == 60.0  # refused as an unknown argument before
    with pytest.warns(AirflowProviderDeprecationWarning), pytest.raises(TtsConfigError, match="not both"):
        build(timeout=60, wait_timeout=60)
