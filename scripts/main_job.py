"""The main job: synthesise speech through the provider against the local emulator, into ./output/.

No account, no key, no network: the emulator serves both vendors' APIs on a loopback port. For
each vendor this submits a task with ``TtsHook``, polls it until it finishes (printing each status
change), and streams the audio into ``./output/``. Run it with ``make run``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OUTPUT = ROOT / "output"
os.environ.setdefault("AIRFLOW_HOME", str(Path(tempfile.gettempdir()) / "airflow-provider-tts-main-job"))

EXTENSIONS = {"audio/flac": ".flac", "audio/wav": ".wav", "audio/x-wav": ".wav", "audio/mpeg": ".mp3"}
JOBS = [
    (
        "camb_ai",
        "tts",
        {
            "text": "Hello from Airflow. This audio came from the Camb dot A I emulator.",
            "voice_id": 20303,
            "language": 1,
        },
    ),
    ("revid_tts", "tts", {"text": "And this one came from the Revid A P I emulator.", "engine": "edge"}),
]


def main() -> int:
    from airflow_provider_tts.emulator import Emulator, EmulatorConfig
    from airflow_provider_tts.hooks.tts import TtsHook

    started = time.monotonic()
    OUTPUT.mkdir(exist_ok=True)
    with Emulator(config=EmulatorConfig(default_delay=2.0)) as emu:
        print(f"emulator listening on {emu.url}", flush=True)
        os.environ["AIRFLOW_CONN_CAMB_AI_DEFAULT"] = json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": emu.api_key}
        )
        os.environ["AIRFLOW_CONN_REVID_TTS_DEFAULT"] = json.dumps(
            {
                "conn_type": "revid_tts",
                "host": emu.revid_base_url,
                "password": emu.api_key,
                "extra": {"status_base_url": emu.revid_status_base_url},
            }
        )
        for api, kind, fields in JOBS:
            hook = TtsHook(f"{api}_default")
            task_id = hook.submit(kind, **fields)
            print(f"[{api}] submitted {kind} task {task_id}", flush=True)
            last = None
            while True:
                status = hook.get_task_status(task_id, kind)
                if status.vendor_status != last:
                    print(
                        f"[{api}]   {status.vendor_status} ({status.state}) after {time.monotonic() - started:.1f} s",
                        flush=True,
                    )
                    last = status.vendor_status
                if status.is_terminal():
                    break
                time.sleep(0.5)
            if status.state != "succeeded":
                print(f"[{api}] task failed: {status.message}", file=sys.stderr)
                return 1
            with hook.open_audio(status) as audio:
                path = OUTPUT / f"{api}-{task_id}{EXTENSIONS.get(audio.content_type, '.bin')}"
                with path.open("wb") as out:
                    for chunk in audio.iter_chunks():
                        out.write(chunk)
            print(
                f"[{api}] saved {path.relative_to(ROOT)} ({path.stat().st_size} bytes, {audio.content_type})",
                flush=True,
            )
            hook.close()
    print(f"done in {time.monotonic() - started:.1f} s; audio is in {OUTPUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
