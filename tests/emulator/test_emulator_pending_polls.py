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


def test_end_pending_lets_a_held_task_finish_at_its_next_poll() -> None:
    """``end_pending``: a task held pending (long or endless delay) finishes when the test says so."""
    import pytest
    import requests

    from airflow_provider_tts.emulator import Emulator

    with Emulator() as emu:
        held = emu.create_task("camb_ai", "tts", delay=3600)
        endless = emu.create_task("revid_tts", "tts", delay=float("inf"))
        headers = {"x-api-key": emu.api_key}

        def status(path: str, task_id: str) -> str:
            return str(requests.get(emu.url + path + task_id, headers=headers, timeout=5).json()["status"])

        assert status("/apis/tts/", held) == "PENDING"
        assert status("/api/get/", endless) == "processing"
        emu.end_pending(held, endless)
        assert status("/apis/tts/", held) == "SUCCESS"
        assert status("/api/get/", endless) == "completed"
        with pytest.raises(KeyError, match="no-such-task"):
            emu.end_pending("no-such-task")
