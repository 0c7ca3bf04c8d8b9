"""The provider metadata validates against the schema shipped inside apache-airflow-core."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from importlib import resources
from importlib.metadata import entry_points

import jsonschema
import pytest

from airflow_provider_tts.get_provider_info import get_provider_info


def test_validates_against_airflow_schema() -> None:
    schema = json.loads(resources.files("airflow").joinpath("provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_entry_point_is_registered() -> None:
    eps = [ep for ep in entry_points(group="apache_airflow_provider") if ep.value.startswith("airflow_provider_tts")]
    assert len(eps) == 1
    assert eps[0].load() is get_provider_info


def test_every_declared_class_and_module_imports() -> None:
    info = get_provider_info()
    for section in ("hooks", "triggers", "sensors", "operators"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                try:
                    importlib.import_module(module)
                except ModuleNotFoundError as exc:  # declared ahead of the issue that adds it
                    pytest.skip(f"{module} not written yet: {exc}")
    for conn in info["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert hook.conn_name_attr == "tts_conn_id"
    for link in info["extra-links"]:
        module, _, name = link.rpartition(".")
        assert getattr(importlib.import_module(module), name).name


def test_both_connection_forms_relabel_the_key_and_declare_extras() -> None:
    types = {c["connection-type"]: c for c in get_provider_info()["connection-types"]}
    assert set(types) == {"camb_ai", "revid_tts"}
    for conn in types.values():
        assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API key"
        assert {"connect_timeout", "read_timeout", "max_retries"} <= set(conn["conn-fields"])
    assert "status_base_url" in types["revid_tts"]["conn-fields"]
    assert "status_base_url" not in types["camb_ai"]["conn-fields"]


def test_airflow_providers_manager_sees_the_provider() -> None:
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            "from airflow.providers_manager import ProvidersManager as P;"
            "p = P(); print('RESULT', 'airflow-provider-tts' in p.providers,"
            " sorted(k for k in p.hooks if k in ('camb_ai', 'revid_tts')))",
        ],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    )
    result = [line for line in out.stdout.splitlines() if line.startswith("RESULT")]
    assert result == ["RESULT True ['camb_ai', 'revid_tts']"]


def test_each_connection_type_has_its_own_hook_class_declaring_it() -> None:
    from airflow_provider_tts.connection import DEFAULT_CONN_IDS
    from airflow_provider_tts.hooks.tts import TtsHook

    classes = []
    for conn in get_provider_info()["connection-types"]:
        module, _, name = conn["hook-class-name"].rpartition(".")
        hook = getattr(importlib.import_module(module), name)
        assert issubclass(hook, TtsHook)
        assert hook.conn_type == conn["connection-type"]
        assert hook.default_conn_name == DEFAULT_CONN_IDS[conn["connection-type"]]
        assert hook.hook_name == conn["hook-name"]
        assert hook().tts_conn_id == hook.default_conn_name
        classes.append(hook)
    assert len(set(classes)) == len(classes)
