"""A 200,000-character text into one file: peak memory, wall time, and what a re-run pays.

For each vendor (RevidAPI: WAV parts; Camb.ai ``/tts``: FLAC parts, joined through ``soundfile``),
three runs of the long-text operator against the emulator over loopback, into one file:// folder:

1. the first run (every part paid for);
2. the same text again (nothing paid; the file is joined again from the stored parts);
3. one paragraph edited (only its parts paid for).

Each run is its own worker process, so its peak RSS (``VmHWM``) is the operator's alone: the
emulator, which renders and holds the audio, runs in this process. The emulator speaks at its
tone engine's pace (0.06 s per character, parts up to 180 s), so the joined file is as long as the
text would be read aloud: over three hours, hundreds of MB, joined one block at a time.

Usage::

    .venv/bin/python benchmarks/long_text.py           # figures into BENCHMARKS.md (long-text section)
    .venv/bin/python benchmarks/long_text.py --quick   # 20,000 characters; BENCHMARKS.md untouched
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks._report import table, write_section

KEY = "bench-key-long-text"
CLASSES = {
    "revid_tts": "RevidTtsLongTextToStorageOperator",
    "camb_ai": "CambTtsLongTextToStorageOperator",
}


def chapter(characters: int, edited: bool = False) -> str:
    """Paragraphs of varied sentences up to ``characters``; ``edited`` changes one sentence of paragraph 7."""
    paragraphs, total, p = [], 0, 0
    while total < characters:
        sentences = [
            f"In paragraph {p}, sentence {s} tells how the {('river', 'road', 'rail', 'wind')[s % 4]} ran "
            f"past {1000 + 37 * s:,} trees, e.g. oaks and elms, for {3.5 + s / 10} miles; then it turned."
            for s in range(8 + p % 9)
        ]
        if edited and p == 7:
            sentences[2] = "This sentence was edited after the first run, and nothing else was."
        paragraphs.append(" ".join(sentences))
        total += len(paragraphs[-1]) + 2
        p += 1
    return "\n\n".join(paragraphs)


def peak_rss_kib() -> int:
    """This process's peak RSS (``VmHWM``): unlike ``ru_maxrss``, it starts afresh at ``exec``, so a
    worker started by a big parent does not inherit the parent's figure."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def worker(spec: dict[str, Any]) -> None:
    """One run of the operator in this process; prints its figures as JSON."""
    import logging
    from types import SimpleNamespace

    logging.disable(logging.WARNING)
    import airflow_provider_tts.operators.long_text as module

    baseline = peak_rss_kib()
    cls = getattr(module, CLASSES[spec["api"]])
    defaults = {"voice_id": 20303, "language": 1} if spec["api"] == "camb_ai" else {}
    op = cls(
        task_id="chapter", tts_conn_id=spec["conn_id"], destination=spec["folder"], text=spec["text"],
        defaults=defaults, deferrable=False, poll_interval=0.2, max_active_requests=8, captions=["srt"],
    )  # fmt: skip
    ti = SimpleNamespace(dag_id="bench", task_id="chapter", run_id="r", map_index=-1, try_number=1)
    started = time.perf_counter()
    result = op.execute({"ti": ti})
    wall = time.perf_counter() - started
    peak = peak_rss_kib()
    print(json.dumps({"wall": wall, "peak_kib": peak, "baseline_kib": baseline, "result": result}))


def run(api: str, conn_id: str, folder: str, text: str, env: dict[str, str]) -> dict[str, Any]:
    spec = {"api": api, "conn_id": conn_id, "folder": folder, "text": text}
    out = subprocess.run(
        [sys.executable, __file__, "--worker"], input=json.dumps(spec), env=env, capture_output=True, text=True,
        check=False,
    )  # fmt: skip
    if out.returncode:
        raise SystemExit(out.stderr[-3000:])
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="20,000 characters; BENCHMARKS.md untouched")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)  # the run's spec on stdin
    args = parser.parse_args()
    if args.worker:
        worker(json.loads(sys.stdin.read()))
        return
    characters = 20_000 if args.quick else 200_000
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig

    config = EmulatorConfig(default_delay=0.0, default_not_found_for=0.0, audio_engine="tones", max_audio_seconds=180)
    texts = {"first run": chapter(characters), "same text again": chapter(characters)}
    texts["one paragraph edited"] = chapter(characters, edited=True)
    rows = []
    with Emulator(api_key=KEY, config=config) as emu, tempfile.TemporaryDirectory(prefix="tts-long-bench-") as tmp:
        env = dict(os.environ)
        for api in CLASSES:
            conn_id = f"{api}_bench_long"
            extra = {"status_base_url": emu.revid_status_base_url} if api == "revid_tts" else {}
            host = emu.revid_base_url if api == "revid_tts" else emu.camb_base_url
            env[f"AIRFLOW_CONN_{conn_id.upper()}"] = json.dumps(
                {"conn_type": api, "host": host, "password": KEY, "extra": extra}
            )
            folder = Path(tmp) / api
            folder.mkdir()
            for label, text in texts.items():
                before = sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values())
                figures = run(api, conn_id, folder.as_uri() + "/", text, env)
                created = sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values()) - before
                result = figures["result"]
                rows.append([
                    f"{api} ({result['content_type']})", label, f"{len(text):,}", result["parts"], created,
                    f"{result['duration_seconds'] / 3600:.2f} h", f"{result['size_bytes'] / 2**20:.0f} MiB",
                    f"{figures['wall']:.1f}", f"{figures['baseline_kib'] / 1024:.0f}",
                    f"{figures['peak_kib'] / 1024:.0f}",
                ])  # fmt: skip
                print(rows[-1], flush=True)
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    body = table(
        ["vendor (joined format)", "run", "characters", "parts", "creates", "audio", "file", "wall s",
         "RSS after imports MiB", "peak RSS MiB"],
        rows,
    )  # fmt: skip
    body += (
        "\nHow it was measured: the emulator runs in the benchmark's process (tone engine, tasks ready at once, "
        "parts up to 180 s of audio, 0.06 s per character), each run of `execute()` in a fresh worker process "
        "whose peak RSS (`VmHWM`) is the last column; *RSS after imports* is that process's peak before `execute()` "
        "(Python, Airflow's SDK and the provider). A part is at most the vendor's limit (RevidAPI 2,000, Camb.ai "
        "3,000 characters); paragraphs are hard boundaries, so the edited paragraph makes one new part. The joined "
        "file is written to a local temporary one 1 MiB block (WAV) or 65,536 frames (FLAC, through soundfile) at "
        "a time, then streamed into the file:// destination by the storage writer; the difference between the "
        "two RSS columns is what the run itself held. Camb.ai's first run is mostly the emulator encoding 3.3 h of "
        "FLAC in pure Python (in the benchmark's process), not the operator; its re-runs show the join itself. "
        f"Machine shared (2 CPUs); load average at the end: {load}.\n"
    )
    if not args.quick:
        write_section("long-text", "A 200,000-character text into one file", ".venv/bin/python benchmarks/long_text.py",
                      body)  # fmt: skip
    print(body)


if __name__ == "__main__":
    main()
