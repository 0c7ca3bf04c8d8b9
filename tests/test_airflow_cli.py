"""Airflow's own CLI sees the provider and tests both connection types against the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import TEST_KEY

AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@pytest.fixture
def cli_env(emu: Any, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path),
        "AIRFLOW__CORE__TEST_CONNECTION": "Enabled",
        "AIRFLOW_CONN_CAMB_AI_DEFAULT": json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": TEST_KEY}
        ),
        "AIRFLOW_CONN_REVID_TTS_DEFAULT": json.dumps(
            {"conn_type": "revid_tts", "host": emu.revid_base_url, "password": TEST_KEY,
             "extra": {"status_base_url": emu.revid_status_base_url}}
        ),
        "AIRFLOW_CONN_CAMB_BAD_KEY": json.dumps(
            {"conn_type": "camb_ai", "host": emu.camb_base_url, "password": "sk-wrong"}
        ),
    }  # fmt: skip


def _airflow(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([AIRFLOW, *args], env=env, capture_output=True, text=True, timeout=180)


def test_providers_list_shows_the_provider(cli_env: dict[str, str]) -> None:
    out = _airflow(cli_env, "providers", "list")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "airflow-provider-tts" in out.stdout


@pytest.mark.parametrize("conn_id", ["camb_ai_default", "revid_tts_default"])
def test_connections_test_succeeds_for_both_types(emu: Any, cli_env: dict[str, str], conn_id: str) -> None:
    out = _airflow(cli_env, "connections", "test", conn_id)
    assert "Connection success!" in out.stdout, out.stdout[-2000:] + out.stderr[-2000:]
    assert TEST_KEY not in out.stdout + out.stderr


def test_connections_test_reports_a_bad_key(emu: Any, cli_env: dict[str, str]) -> None:
    out = _airflow(cli_env, "connections", "test", "camb_bad_key")
    assert "Connection success!" not in out.stdout
    assert "401" in out.stdout + out.stderr


def test_providers_hooks_shows_one_class_per_connection_type_without_inconsistency(cli_env: dict[str, str]) -> None:
    # Issue 9.11: one class registered for both types made ProvidersManager log "Inconsistency!".
    out = _airflow(cli_env, "providers", "hooks", "--output", "json")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Inconsistency" not in out.stdout + out.stderr, (out.stdout + out.stderr)[-3000:]
    # Airflow 3.0 logs to stdout before the JSON: decode the document that starts with the first "[{".
    rows, _ = json.JSONDecoder().raw_decode(out.stdout[out.stdout.index("[{") :])
    hooks = {row["connection_type"]: row for row in rows}
    assert hooks["camb_ai"]["class"] == "airflow_provider_tts.hooks.tts.CambAiHook"
    assert hooks["revid_tts"]["class"] == "airflow_provider_tts.hooks.tts.RevidTtsHook"
