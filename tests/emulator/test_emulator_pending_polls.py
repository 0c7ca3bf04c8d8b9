"""``pending_polls``: deterministic waits for tests that must see a task pending first."""

from __future__ import annotations


def test_pending_polls_make_waits_deterministic() -> None:
    """``pending_polls=N``: the first N polls answer pending even after the delay has passed."""
    import requests

    from airflow_provider_tts.emulator import Emulator

    with Emulator() as emu:
        for api, path in (("camb_ai", "/apis/tts/"), ("revid_tts", "/api/get/")):
            task_id = emu.create_task(api, "tts", delay=0, pending_polls=2)
            headers = {"x-api-key": emu.api_key}
            states = [requests.get(emu.url + path + task_id, headers=headers, timeout=5).json() for _ in range(3)]
            statuses = [s["status"] for s in states]
            assert statuses[:2] == (["PENDING"] * 2 if api == "camb_ai" else ["processing"] * 2)
            assert statuses[2] in ("SUCCESS", "completed")
