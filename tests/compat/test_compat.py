"""The names the package takes from compat.py work on the Airflow this test runs on (every CI minor).

Both names below moved between minors: ``mask_secret`` is exported by ``airflow.sdk.log`` only from
3.0.6 on, and ``get_hook_lineage_collector`` reached ``airflow.sdk.lineage`` only in 3.2. Importing
them from their 3.3 homes failed every store task on 3.0 and 3.1 (the hook masks the key first, the
store reports its file to the lineage collector last), which only the real-Airflow runs showed.
"""

from __future__ import annotations

from airflow_provider_tts import compat


def test_mask_secret_registers_the_key_with_the_masker_this_airflow_uses() -> None:
    compat.mask_secret("sk-compat-test-secret")


def test_the_hook_lineage_collector_accepts_an_output_asset() -> None:
    collector = compat.get_hook_lineage_collector()
    assert callable(collector.add_output_asset)


def test_features_names_the_running_airflow() -> None:
    assert compat.features()["airflow"] == compat.AIRFLOW_VERSION
