"""The Audio view's plugin: registered by the provider, cheap to import, inert on Airflow 3.0 (issue 28)."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

from airflow_provider_tts.get_provider_info import get_provider_info
from airflow_provider_tts.ui import plugin


def test_the_provider_registers_the_plugin() -> None:
    (entry,) = get_provider_info()["plugins"]
    module, _, name = entry["plugin-class"].rpartition(".")
    assert (module, name) == (plugin.__name__, plugin.TtsAudioViewPlugin.__name__)
    assert plugin.TtsAudioViewPlugin.name == entry["name"]


def test_an_entry_point_loads_the_plugin_in_every_deployment() -> None:
    """Airflow loads a provider info's plugins only with ``lazy_discover_providers = False``."""
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    entry = pyproject["project"]["entry-points"]["airflow.plugins"]["tts_audio_view"]
    assert entry == f"{plugin.__name__}:{plugin.TtsAudioViewPlugin.__name__}"


def test_views_on_a_run_and_a_task_instance_or_nothing_on_3_0() -> None:
    views = plugin.TtsAudioViewPlugin.external_views
    if not plugin.HAS_EXTERNAL_VIEWS:  # Airflow 3.0: no place in the UI; the extra links stand in
        assert views == []
        assert plugin.TtsAudioViewPlugin.fastapi_apps == []
        return
    assert {v["destination"] for v in views} == {"dag_run", "task_instance"}
    assert all(v["href"].startswith(plugin.URL_PREFIX + "/view?dag_id={DAG_ID}&run_id={RUN_ID}") for v in views)
    (app,) = plugin.TtsAudioViewPlugin.fastapi_apps
    assert app["url_prefix"] == plugin.URL_PREFIX


def test_importing_the_plugin_builds_no_app() -> None:
    """Every component loads plugins (workers, the DAG processor): the routes are built on first request."""
    probe = (
        "import sys, airflow_provider_tts.ui.plugin as p;"
        "print(sorted(m for m in sys.modules if m.startswith('airflow_provider_tts.ui.api')))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=120)
    assert "airflow_provider_tts.ui.api" not in out.stdout.strip().splitlines()[-1]
