"""Camb.ai ``/tts-stream`` vs the legacy submit -> wait -> download path, and the request cache.

Two questions, both on the emulator over loopback:

1. Per item, how soon is the first byte of audio in storage, and how long until the file is
   complete, for ``/tts-stream`` against the legacy ``POST /tts`` -> poll ``GET /tts/{id}`` ->
   ``GET /tts-result/{run}`` path, at equal audio length (texts of the same length, each rendered
   once, so neither path profits from the emulator's render cache)?
2. A batch of 200 texts through ``CambTtsStreamToStorageOperator``, then again with 10 % of the
   texts changed: how many vendor calls does the second run make (it must be 20), and how long
   does it take against the first?

Usage::

    .venv/bin/python benchmarks/tts_stream.py           # figures into BENCHMARKS.md (tts-stream section)
    .venv/bin/python benchmarks/tts_stream.py --quick   # 5 items, 20-text batch; BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import table, write_section

KEY = "bench-key-tts-stream"
CONN_ID = "camb_bench_stream"
#: Poll interval of the legacy path here. Far below the operator's default (5 s), so the figure
#: shows the cost of the extra round trips, not of a deliberately patient poll schedule.
LEGACY_POLL = 0.1


def _texts(prefix: str, n: int) -> list[str]:
    # Same length for every item and both paths: the emulator's speech length follows the text.
    return [f"{prefix} item {i:04d}: the quick brown fox jumps over the lazy dog." for i in range(n)]


def _ctx(run: str) -> dict[str, Any]:
    from types import SimpleNamespace

    return {"ti": SimpleNamespace(dag_id="bench", task_id="speak", run_id=run, map_index=-1)}


def per_item(hook: Any, out: Path, n: int) -> dict[str, list[float]]:
    """Time to first byte stored and end-to-end seconds for each path, items interleaved."""
    from airflow.sdk import ObjectStoragePath

    from airflow_provider_tts.storage import store_stream

    figures: dict[str, list[float]] = {"stream_ttfb": [], "stream_e2e": [], "legacy_ttfb": [], "legacy_e2e": []}
    sizes: dict[str, list[int]] = {"stream": [], "legacy": []}
    stream_texts, legacy_texts = _texts("S", n + 1), _texts("L", n + 1)
    for i in range(n + 1):  # item 0 warms up both paths (imports, connections) and is not counted
        for path_name in ("stream", "legacy"):
            first: list[float] = []
            target = ObjectStoragePath(f"file://{out}/{path_name}-{i}.wav")
            started = time.perf_counter()

            def mark(_size: int, first: list[float] = first) -> None:
                if not first:
                    first.append(time.perf_counter())

            if path_name == "stream":
                audio = hook.open_tts_stream(
                    text=stream_texts[i], language="en-us", voice_id=1, output_configuration={"format": "wav"}
                )
            else:
                task_id = hook.submit("tts", text=legacy_texts[i], voice_id=1, language=1)
                while (status := hook.get_task_status(task_id, "tts")).state == "pending":
                    time.sleep(LEGACY_POLL)
                audio = hook.open_audio(status)
            with audio:
                stored = store_stream(
                    audio.iter_chunks(256 * 1024),
                    target,
                    temp_name=f".{target.name}.partial",
                    content_type=audio.content_type,
                    content_length=audio.content_length,
                    tts_task_id=path_name,
                    on_chunk=mark,
                )
            done = time.perf_counter()
            if i == 0:
                continue
            figures[f"{path_name}_ttfb"].append(first[0] - started)
            figures[f"{path_name}_e2e"].append(done - started)
            sizes[path_name].append(stored.size_bytes)
    assert statistics.mean(sizes["stream"]) == statistics.mean(sizes["legacy"]), sizes  # equal audio length
    return figures


def batch(emu: Any, out: Path, n: int) -> list[dict[str, Any]]:
    """Run ``n`` texts through the operator, then again with 10 % changed; vendor calls and wall time."""
    from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator

    texts = _texts("B", n)
    changed = list(texts)
    for i in range(0, n, 10):  # every tenth text changes: 10 %
        changed[i] = texts[i].replace("lazy", "busy")
    rows = []
    for label, run_texts in (("first run", texts), ("second run, 10 % changed", changed)):
        before = int(emu.stats()["requests_by_endpoint"].get("stream", 0))
        started = time.perf_counter()
        cached = 0
        for i, text in enumerate(run_texts):
            op = CambTtsStreamToStorageOperator(
                task_id=f"speak_{i}",
                tts_conn_id=CONN_ID,
                text=text,
                language="en-us",
                voice_id=1,
                output_format="wav",
                destination=f"file://{out}/batch/",
            )
            cached += bool(op.execute(_ctx(label))["cached"])
        wall = time.perf_counter() - started
        calls = int(emu.stats()["requests_by_endpoint"].get("stream", 0)) - before
        rows.append({"run": label, "texts": n, "vendor_calls": calls, "served_from_cache": cached, "wall": wall})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="5 items and a 20-text batch; BENCHMARKS.md untouched")
    args = parser.parse_args()
    items, batch_size = (5, 20) if args.quick else (30, 200)

    logging.disable(logging.WARNING)  # per-item INFO logs and "outside the Task Runner" warnings
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig
    from airflow_provider_tts.hooks.tts import TtsHook

    # WAV on both paths, so equal text length gives byte-for-byte equal audio length.
    config = EmulatorConfig(default_delay=0.0, default_not_found_for=0.0, audio_engine="tones", camb_tts_format="wav")
    with Emulator(api_key=KEY, config=config) as emu, tempfile.TemporaryDirectory(prefix="tts-stream-bench-") as tmp:
        os.environ[f"AIRFLOW_CONN_{CONN_ID.upper()}"] = json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": KEY}
        )
        hook = TtsHook(tts_conn_id=CONN_ID)
        per = per_item(hook, Path(tmp), items)
        runs = batch(emu, Path(tmp), batch_size)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    def ms(values: list[float]) -> str:
        return f"{statistics.median(values) * 1000:.0f} (p90 {sorted(values)[int(len(values) * 0.9) - 1] * 1000:.0f})"

    per_rows = [
        ["`/tts-stream` (one request)", ms(per["stream_ttfb"]), ms(per["stream_e2e"])],
        [
            f"legacy `/tts` -> poll every {LEGACY_POLL:g} s -> `/tts-result`",
            ms(per["legacy_ttfb"]),
            ms(per["legacy_e2e"]),
        ],
    ]
    first = runs[0]["wall"]
    batch_rows: list[list[object]] = []
    for r in runs:
        ratio = f"{r['wall'] / first:.2f}"
        batch_rows.append([r["run"], r["texts"], r["vendor_calls"], r["served_from_cache"], f"{r['wall']:.2f}", ratio])
    body = (
        f"Per item ({items} items per path, interleaved, after one warm-up item each; median and p90, ms):\n\n"
        + table(["path", "first byte stored", "file complete"], per_rows)
        + f"\nBatch of {batch_size} texts through `CambTtsStreamToStorageOperator` (folder destination, cache on):\n\n"
        + table(["run", "texts", "vendor calls", "served from cache", "wall s", "vs first run"], batch_rows)
        + (
            "\nHow it was measured: the emulator runs in the same process (a thread), with tasks ready at once "
            "(`default_delay=0`), WAV on both paths and the tone engine (no espeak), so the figures are the "
            "client's and the protocol's, not a vendor's synthesis time. Every item has its own text of the same "
            "length (equal audio length, each rendered once). *First byte stored* is from the start of the item "
            "until the first chunk was written to the temporary beside the destination (`store_stream`'s "
            "`on_chunk`); *file complete* until the file was moved into place. The legacy path is "
            "`TtsHook.submit` -> `get_task_status` every {poll} s -> `open_audio`, through the same "
            "`store_stream`; the real operator polls every 5 s, so on a real vendor its wait is longer still. The"
            " batch runs the operator's `execute()` sequentially in one process into a file:// folder; the second"
            " run changes every tenth text. The machine is shared (2 CPUs); load average at the end: {load}."
        ).format(poll=f"{LEGACY_POLL:g}", load=load)
    )
    print(body)
    if not args.quick:
        write_section(
            "tts-stream",
            "Camb.ai /tts-stream vs submit-wait-download, and the request cache",
            ".venv/bin/python benchmarks/tts_stream.py",
            body,
        )
        print("Section 'tts-stream' written to BENCHMARKS.md")
    if runs[1]["vendor_calls"] != batch_size // 10:
        raise SystemExit(f"expected {batch_size // 10} vendor calls on the second run, got {runs[1]['vendor_calls']}")


if __name__ == "__main__":
    main()
