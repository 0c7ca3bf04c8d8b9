"""One trigger running as two copies at once: one terminal outcome, one object at the destination.

In a deployment with several triggerers, two copies of one trigger can poll at the same time: between a
triggerer's death (or stall) and the adoption of its triggers by another, and in Airflow's known
re-assignment races. Each copy is re-created from the same trigger row (``serialize()`` kwargs), as the
triggerer does. This test runs two such copies concurrently against the emulator, through injected
transient faults, and checks that:

* each copy ends with exactly one event, and both events are the same terminal outcome (same status,
  same task, same audio URL): neither copy's polling disturbs the other's (no shared mutable state, no
  consumed-once answers);
* Airflow resumes only a task instance that is still deferred on the trigger (``Trigger.submit_event``
  selects ``state == deferred``), so the second event of a pair is dropped. Even if both were delivered,
  the second resume would leave the destination as it is: the storage operator's default
  ``overwrite="skip_if_identical"`` finds the same bytes and rewrites nothing — one object, one version,
  no temporary, no open multipart upload.

The race itself on a real two-triggerer deployment is exercised by ``test_distributed_batch.py``.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from airflow_provider_tts.emulator import FaultConfig
from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import ConnFactory
from tests.operators.conftest import ti_context

BUCKET = "tts-trigger-copies"
FAULTS = FaultConfig(
    rate=0.2,
    kinds=("429", "500", "502", "503", "504", "html", "reset", "malformed_json"),
    endpoints=frozenset({"status"}),
    retry_after="0.05",
    seed=11,
)


async def _events(trigger: TtsTaskTrigger) -> list[dict[str, Any]]:
    return [event.payload async for event in trigger.run()]


@pytest.mark.parametrize("api", ["revid_tts", "camb_ai"])
def test_two_copies_of_one_trigger_end_in_one_outcome_and_one_object(
    api: str, emu: Any, make_conn: ConnFactory, s3: Any, moto_endpoint: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    conn_id = make_conn(api)
    fields: dict[str, Any] = (
        {"text": "Two copies [emu:delay=1.5]", "engine": "edge"}
        if api == "revid_tts"
        else {"text": "Two copies [emu:delay=1.5]", "voice_id": 20303, "language": 1}
    )
    tts_task_id = TtsHook(tts_conn_id=conn_id).submit("tts", **fields)
    emu.set_faults(FAULTS)
    row = TtsTaskTrigger(
        tts_conn_id=conn_id, tts_task_id=tts_task_id, kind="tts", poll_interval=0.1, slow_poll_interval=0.2
    ).serialize()[1]

    async def both() -> list[list[dict[str, Any]]]:
        return list(await asyncio.gather(*(_events(TtsTaskTrigger(**row)) for _ in range(2))))

    first, second = asyncio.run(both())
    assert len(first) == len(second) == 1, (first, second)
    assert first[0] == second[0]
    assert first[0]["status"] == "success"
    polls = emu.stats()["polls_by_task"][tts_task_id]
    faults = sum(emu.stats()["faults_by_kind"].values())
    print(f"FIGURE two copies ({api}): {polls} polls between them, {faults} injected faults, 1 outcome")

    # Delivering both events (which Airflow does not do) still leaves exactly one object.
    emu.set_faults(rate=0.0)
    s3.create_bucket(Bucket=BUCKET)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_COPIES",
        json.dumps({"conn_type": "aws", "login": "testing", "password": "testing",
                    "extra": {"endpoint_url": moto_endpoint, "region_name": "us-east-1"}}),
    )  # fmt: skip
    prefix = f"{api}/"
    op = TtsAudioToStorageOperator(
        task_id="store",
        tts_conn_id=conn_id,
        tts_task_id=tts_task_id,
        kind="tts",
        destination=f"s3://{BUCKET}/{prefix}",
        dest_conn_id="aws_copies",
        deferrable=True,
    )
    results = [op.execute_complete(ti_context(), event) for event in (first[0], second[0])]
    assert results[0] == results[1]
    listing = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    keys = [v["Key"] for v in listing.get("Versions", [])]
    assert len(keys) == 1, keys
    assert keys[0].startswith(f"{prefix}tts_dag-download.")  # named after the task instance (ti_context)
    assert not s3.list_multipart_uploads(Bucket=BUCKET).get("Uploads")
