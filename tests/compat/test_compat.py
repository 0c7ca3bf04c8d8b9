"""The names the package takes from compat.py work on the Airflow this test runs on (every CI minor).

Both names below moved between minors: ``mask_secret`` is exported by ``airflow.sdk.log`` only from
3.0.6 on, and ``get_hook_lineage_collector`` reached ``airflow.sdk.lineage`` only in 3.2. Importing
them from their 3.3 homes failed every store task on 3.0 and 3.1 (the hook masks the key first, the
store reports its file to the lineage collector last), which only the real-Airflow runs showed.
"""

from __future__ import annotations

import pytest

from airflow_provider_tts import compat


def test_mask_secret_registers_the_key_with_the_masker_this_airflow_uses() -> None:
    compat.mask_secret("sk-compat-test-secret")


def test_the_hook_lineage_collector_accepts_an_output_asset() -> None:
    collector = compat.get_hook_lineage_collector()
    assert callable(collector.add_output_asset)


def test_features_names_the_running_airflow() -> None:
    assert compat.features()["airflow"] == compat.AIRFLOW_VERSION


class _TriggererComms:
    """Like the triggerer's channel to its supervisor: a synchronous send that bridges to async."""

    def send(self, msg: object) -> None:
        from asgiref.sync import async_to_sync

        async def deliver() -> None:
            return None

        async_to_sync(deliver)()  # raises inside a running event loop, as in the triggerer


async def test_mask_secret_inside_a_running_event_loop_still_masks(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the triggerer calls it: on 3.0 Airflow's own ``mask_secret`` raised here (AsyncToSync)."""
    from airflow.sdk.execution_time import task_runner

    secret = "sk-compat-test-secret-in-a-loop"
    monkeypatch.setattr(task_runner, "SUPERVISOR_COMMS", _TriggererComms(), raising=False)
    compat.mask_secret(secret)
    assert secret not in str(compat._process_masker().redact(f"key={secret}"))
