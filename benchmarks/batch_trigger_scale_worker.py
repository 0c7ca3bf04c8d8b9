"""The trigger process of ``benchmarks/batch_trigger_scale.py``: one ``TtsBatchTrigger``, as a triggerer runs it.

The batch counterpart of ``trigger_scale_worker.py``, and started, set up and measured the same way
(its :func:`get_ready` and :class:`Probe`), so the two kinds of run differ only in the triggers.
The driver sends the trigger's *serialized* form (classpath and kwargs, as the row in the metadata
database holds it) and the process builds the trigger from that, as Airflow re-creates a trigger
after a triggerer restart: a resumed run is the same command sent to a fresh process.

Protocol (JSON lines on the original stdout; the command on stdin):

    ready   {"event": "ready", "baseline_rss": bytes}      imports done, connection resolved
    started {"event": "started", "time": t, ...}          the trigger object built and its run() scheduled
    done    {"event": "done", "events": [...], ...}       run() finished (or timed out)
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--conn-id", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--nofile", type=int, default=0)
    args = parser.parse_args()
    from benchmarks.trigger_scale_worker import get_ready

    send = get_ready(args.conn_id, args.log_file, args.nofile)
    command = json.loads(sys.stdin.readline())
    asyncio.run(run(command["classpath"], command["kwargs"], float(command["run_timeout"]), send))
    return 0


async def run(classpath: str, kwargs: dict[str, Any], run_timeout: float, send: Any) -> None:
    from benchmarks.trigger_scale_worker import Probe

    probe = Probe()
    events: list[dict[str, Any]] = []
    received: list[float] = []
    errors: list[str] = []
    module, _, name = classpath.rpartition(".")
    trigger = getattr(importlib.import_module(module), name)(**kwargs)

    async def consume() -> None:
        try:
            async for event in trigger.run():
                received.append(time.time())
                events.append(event.payload)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}"[:300])

    running = asyncio.create_task(consume())
    send(event="started", time=time.time(), create_seconds=time.time() - probe.wall0, baseline_rss=probe.baseline_rss)
    done, _pending = await asyncio.wait({running}, timeout=run_timeout)
    if not done:
        # Airflow cancels the run() of a trigger it stops; on_kill is for the task being cleared.
        running.cancel()
        await asyncio.wait({running}, timeout=30)
    send(
        event="done",
        events=events,
        received=received,
        timed_out=not done,
        errors=errors,
        **probe.figures(),
    )


if __name__ == "__main__":
    sys.exit(main())
