"""A worker process that runs a batch operator's ``execute``, to be killed mid-batch or measured.

Run as ``python -m tests.operators._batch_worker SPEC_JSON``. The spec names the connection (as an
``AIRFLOW_CONN_*`` value), the destination, the items (a list, or ``count`` generated texts) and
the task-instance identity. ```pause_after_creates`` / ``pause_after_stores`` make it deterministic
*where* it is when the test kills it: every create call (or store) after that many is made, then
stalls ``pause_seconds`` before its result reaches the operator, and ``ready_file`` is written;
so the kill lands when vendor tasks exist whose ids were never recorded (or files half-way
through the store phase). Everything else is the operator's own code path. On exit it
prints one JSON line: the result (or the error) and the peak RSS.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any


def _pause_after(target: Any, name: str, after: int, ready: Path, pause: float) -> None:
    """Calls beyond the first ``after`` do their work, then stall before returning it (the worst moment)."""
    original = getattr(target, name)
    done = {"n": 0}
    lock = threading.Lock()

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        result = original(*args, **kwargs)
        with lock:
            done["n"] += 1
            late = done["n"] > after
        if late:
            if not ready.exists():
                ready.write_text(str(done["n"]))
            time.sleep(pause)
        return result

    setattr(target, name, wrapper)


def peak_rss_mib() -> float:
    """This process's own peak RSS: ``VmHWM`` of its memory map.

    Not ``ru_maxrss``: Linux carries that over ``fork`` and ``exec``, so a worker started by a test
    process that has grown during a long session would report the test process's size.
    """
    try:
        with open("/proc/self/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(spec: dict[str, Any]) -> None:
    from airflow_provider_tts.batch import store as store_module
    from airflow_provider_tts.operators import batch as batch_module
    from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator

    os.environ["AIRFLOW_CONN_BATCH_TTS"] = spec["connection"]
    ready = Path(spec.get("ready_file", "/dev/null"))
    pause = float(spec.get("pause_seconds", 3600))
    if "pause_after_creates" in spec:
        _pause_after(batch_module.BaseTextBatchToStorageOperator, "_create", spec["pause_after_creates"], ready, pause)
    if "pause_after_stores" in spec:
        _pause_after(store_module, "stream_audio_into", spec["pause_after_stores"], ready, pause)
    items = spec.get("items") or [f"Text {n} [emu:audio_bytes=200]" for n in range(spec["count"])]
    op = RevidTtsBatchToStorageOperator(
        task_id="speak_all",
        tts_conn_id="batch_tts",
        items=items,
        destination=spec["destination"],
        deferrable=False,
        poll_interval=float(spec.get("poll_interval", 0.1)),
        max_active_requests=int(spec.get("max_active_requests", 8)),
        max_failed_items=spec.get("max_failed_items", 0),
        on_uncertain_submit=spec.get("on_uncertain_submit", "fail"),
    )
    ti = SimpleNamespace(dag_id="nightly", task_id="speak_all", run_id="manual__1", map_index=-1,
                         try_number=int(spec.get("try_number", 1)))  # fmt: skip
    try:
        outcome: dict[str, Any] = {"result": op.execute({"ti": ti})}  # type: ignore[arg-type]
    except Exception as exc:
        outcome = {"error": f"{type(exc).__name__}: {exc}"}
    outcome["peak_rss_mib"] = peak_rss_mib()
    print(json.dumps(outcome), flush=True)


if __name__ == "__main__":
    main(json.loads(sys.argv[1]))
