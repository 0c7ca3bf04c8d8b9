"""A worker process that runs the operators, a trigger and the hook with Airflow's metrics configured.

Run by ``tests/operators/test_metrics.py`` as ``python -m tests.operators._metrics_worker SPEC_JSON``,
with ``AIRFLOW__METRICS__*`` in its environment: Airflow's ``Stats`` reads ``[metrics]`` once per
process, so a fresh process is what a worker or a triggerer is, with nothing reset by hand. Prints
one JSON line: what each step returned or raised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from typing import Any

from statsd import StatsClient

TEXT = "Counted once, spoken once."
#: A create the emulator accepts and then fails (no credits left), told by its marker.
UNPAID = "Not paid for. [emu:outcome=payment_required]"


class BrokenStatsClient(StatsClient):  # type: ignore[misc]
    """A StatsD client that fails on every metric of this provider (a backend refusing them).

    Airflow's own metrics (it times loading the filesystems, for one) still go through: a client
    that failed on those would fail Airflow's code, before this provider's.
    """

    def _send_stat(self, stat: str, value: str, rate: float) -> None:
        if stat.startswith("tts."):
            raise OSError("the metrics backend is broken")
        super()._send_stat(stat, value, rate)


def _run(step: str, results: dict[str, Any], call: Any) -> None:
    try:
        results[step] = call()
    except Exception as exc:
        results[step] = {"error": type(exc).__name__, "message": str(exc)[:300]}


def main(spec: dict[str, Any]) -> None:
    from airflow_provider_tts.hooks.tts import TtsHook
    from airflow_provider_tts.operators.stream_to_storage import CambTtsStreamToStorageOperator
    from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
    from airflow_provider_tts.triggers.tts import TtsTaskTrigger
    from tests.operators.conftest import ti_context

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    metrics_log = logging.getLogger("airflow_provider_tts.metrics")
    metrics_log.setLevel(logging.DEBUG)
    metrics_log.addHandler(Collect())

    camb, revid, folder = spec["camb"], spec["revid"], spec["folder"]
    results: dict[str, Any] = {}

    def speak(task_id: str, destination: str, text: str = TEXT) -> Any:
        op = CambTtsToStorageOperator(task_id=task_id, tts_conn_id=camb, destination=destination, text=text,
                                      voice_id=20303, language="en-us", durable=False, deferrable=False,
                                      poll_interval=0.05)  # fmt: skip
        return op.execute(ti_context())  # type: ignore[arg-type]

    def stream() -> Any:
        op = CambTtsStreamToStorageOperator(
            task_id="stream", tts_conn_id=camb, destination=f"file://{folder}/stream/", text=TEXT, language="en-us",
            voice_id=20303, output_format="wav",
        )  # fmt: skip
        return op.execute(ti_context())  # type: ignore[arg-type]

    _run("speak", results, lambda: speak("speak", f"file://{folder}/tts/a.flac"))
    _run("speak_again", results, lambda: speak("again", f"file://{folder}/tts/b.flac"))  # a cache hit, copied
    _run("stream", results, stream)
    if spec.get("failing"):
        _run("payment", results, lambda: speak("payment", f"file://{folder}/failed/c.flac", text=UNPAID))
    if spec.get("revid_task"):
        trigger = TtsTaskTrigger(tts_conn_id=revid, tts_task_id=spec["revid_task"], kind="tts", poll_interval=0.05)

        async def wait() -> Any:
            return [event.payload async for event in trigger.run()]

        _run("trigger", results, lambda: asyncio.run(wait()))
    if spec.get("bad_conn"):
        hook = TtsHook(spec["bad_conn"])
        _run("bad_key", results, lambda: hook.submit("tts", text=TEXT, voice_id=20303, language=1))
    results["metrics_log"] = seen
    print(json.dumps(results), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
