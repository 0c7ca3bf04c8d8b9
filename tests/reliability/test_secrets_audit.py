"""The secrets audit itself, on a synthetic Airflow home; and where the key goes on the wire.

The audit of a real deployment (every example DAG run on real Airflow processes, then the metadata
DB and every log searched) is the last test of ``tests/slow/test_example_dags.py``; these tests
make sure the audit finds a key wherever one could hide, so its clean verdict there means something.
"""

from __future__ import annotations

import base64
import gzip
import json
import logging
import sqlite3
import zlib
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from airflow_provider_tts.operators.tts import TtsAudioToStorageOperator, TtsSubmitOperator
from airflow_provider_tts.sensors.tts import TtsTaskSensor
from tests.conftest import FIELDS, PAIRS, TEST_KEY
from tests.operators.conftest import ti_context
from tests.reliability.conftest import define_conn
from tests.reliability.secrets_audit import audit_deployment, audit_emulator, needles

CLEAN = "nothing secret here"


def _home(tmp_path: Path, leaks: dict[str, Any]) -> Path:
    """An Airflow-like home: metadata tables and log files, with ``leaks`` placed where named."""
    home = tmp_path / "home"
    logs = home / "logs"
    (logs / "dag_id=d" / "run_id=r" / "task_id=t").mkdir(parents=True)
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("CREATE TABLE trigger (id INTEGER PRIMARY KEY, classpath TEXT, kwargs TEXT)")
        db.execute("CREATE TABLE xcom (key TEXT, value BLOB)")
        db.execute("CREATE TABLE rendered_task_instance_fields (dag_id TEXT, rendered_fields TEXT)")
        db.execute("CREATE TABLE task_instance (id TEXT, note TEXT)")
        db.execute("CREATE TABLE serialized_dag (dag_id TEXT, data_compressed BLOB)")
        db.execute("CREATE TABLE connection (conn_id TEXT, password TEXT)")
        kwargs = {"tts_conn_id": "camb_ai_default", "tts_task_id": "abc", "secret": leaks.get("trigger", CLEAN)}
        db.execute("INSERT INTO trigger (classpath, kwargs) VALUES (?, ?)", ("x.TtsTaskTrigger", json.dumps(kwargs)))
        db.execute("INSERT INTO xcom VALUES (?, ?)", ("return_value", json.dumps(leaks.get("xcom", CLEAN)).encode()))
        db.execute("INSERT INTO rendered_task_instance_fields VALUES (?, ?)", ("d", json.dumps(leaks.get("rtif", {}))))
        db.execute("INSERT INTO task_instance VALUES (?, ?)", ("ti-1", leaks.get("note", CLEAN)))
        dag = zlib.compress(json.dumps({"dag": leaks.get("serialized_dag", CLEAN)}).encode())
        db.execute("INSERT INTO serialized_dag VALUES (?, ?)", ("d", dag))
        db.execute("INSERT INTO connection VALUES (?, ?)", ("camb_ai_default", leaks.get("connection", CLEAN)))
    (logs / "dag_id=d" / "run_id=r" / "task_id=t" / "attempt=1.log").write_text(
        "\n".join(json.dumps({"event": e}) for e in ["start", leaks.get("task_log", CLEAN), "done"]) + "\n"
    )
    (logs / "triggerer-1.log").write_text(f"trigger fired\n{leaks.get('triggerer_log', CLEAN)}\n")
    (logs / "old.log.gz").write_bytes(gzip.compress(leaks.get("gz_log", CLEAN).encode()))
    return home


def test_a_clean_home_is_clean_and_was_really_scanned(tmp_path: Path) -> None:
    summary: dict[str, int] = {}
    assert audit_deployment(_home(tmp_path, {}), TEST_KEY, summary=summary) == []
    assert summary["databases"] == 1
    assert summary["tables"] == 6
    assert summary["rows"] == 6
    assert summary["files"] == 3


@pytest.mark.parametrize(
    ("place", "value", "finding"),
    [
        ("trigger", TEST_KEY, "table trigger, column kwargs"),
        ("xcom", {"headers": {"x-api-key": TEST_KEY}}, "table xcom, column value"),
        ("rtif", {"text": f"key={TEST_KEY}"}, "table rendered_task_instance_fields, column rendered_fields"),
        ("note", f"debug: {TEST_KEY}", "table task_instance, column note"),
        ("serialized_dag", TEST_KEY, "table serialized_dag, column data_compressed"),  # zlib-compressed
        ("task_log", f"GET https://x/apis/tts/abc?key={TEST_KEY}", "logs/dag_id=d/run_id=r/task_id=t/attempt=1.log"),
        ("triggerer_log", f"headers={{'x-api-key': '{TEST_KEY}'}}", "logs/triggerer-1.log: line 2"),
        ("gz_log", TEST_KEY, "logs/old.log.gz"),
        ("note", base64.b64encode(f"user:{TEST_KEY}".encode()).decode(), "table task_instance, column note"),
    ],
)
def test_the_key_is_found_wherever_it_hides(tmp_path: Path, place: str, value: Any, finding: str) -> None:
    findings = audit_deployment(_home(tmp_path, {place: value}), TEST_KEY)
    assert len(findings) == 1, findings
    assert finding in findings[0]


def test_the_connection_table_is_where_the_key_may_be(tmp_path: Path) -> None:
    assert audit_deployment(_home(tmp_path, {"connection": TEST_KEY}), TEST_KEY) == []
    assert audit_deployment(_home(tmp_path / "2", {"connection": TEST_KEY}), TEST_KEY, allowed_tables=()) != []


def test_a_deleted_row_is_still_found_in_the_raw_database(tmp_path: Path) -> None:
    home = _home(tmp_path, {"trigger": TEST_KEY})
    with sqlite3.connect(home / "airflow.db") as db:
        db.execute("PRAGMA secure_delete = OFF")  # as SQLite builds without SECURE_DELETE behave
        db.execute("DELETE FROM trigger")  # the row is gone, its bytes linger in a free page
    findings = audit_deployment(home, TEST_KEY)
    assert findings == ["airflow.db: raw database bytes (a deleted row, free page or journal)"]


def test_needles_refuse_an_empty_key() -> None:
    with pytest.raises(ValueError, match="empty"):
        needles("")


# ------------------------------------------------------------------------- the key on the wire


def test_the_key_goes_only_to_the_vendor_api_in_a_header(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """Submit, wait (sensor, deferrable and not) and download every kind; audio on another host.

    The storage host is ``localhost`` while the API is ``127.0.0.1``: a different origin, as Revid's
    ``audio_url`` is. The key must never reach it, never be in a URL, a log record or an XCom value.
    (Camb's pre-signed ``file_url`` and redirects to other hosts: ``tests/hooks/test_hook_emulator.py``
    and ``tests/operators/test_audio_to_storage.py``.)
    """
    config = EmulatorConfig(default_delay=0.2, audio_engine="tones", audio_base_url="http://localhost:{port}")
    caplog.set_level(logging.DEBUG)
    with Emulator(api_key=TEST_KEY, config=config) as emu:
        conns = {api: define_conn(monkeypatch, f"wire_{api}", emu, api, retry_backoff=0.01) for api in ("camb_ai",
                 "revid_tts")}  # fmt: skip
        outputs: list[Any] = []
        for api, kind in PAIRS:
            submit = TtsSubmitOperator(task_id="submit", tts_conn_id=conns[api], kind=kind, **FIELDS[f"{api}/{kind}"])
            task_id = submit.execute({})
            sensor = TtsTaskSensor(task_id="wait", tts_conn_id=conns[api], tts_task_id=task_id, kind=kind,
                                   poke_interval=0.05, deferrable=False)  # fmt: skip
            outputs.append(sensor.execute({}))
            store = TtsAudioToStorageOperator(task_id="download", tts_conn_id=conns[api], tts_task_id=task_id,
                                              kind=kind, destination=f"{tmp_path.as_uri()}/{api}/")  # fmt: skip
            outputs.append(store.execute(ti_context()))
            outputs.append(TtsAudioToStorageOperator(
                task_id="d2", tts_conn_id=conns[api], tts_task_id=task_id, kind=kind, deferrable=True,
                destination=f"{tmp_path.as_uri()}/again/").execute(ti_context()))  # fmt: skip
        assert audit_emulator(emu, TEST_KEY) == []
        storage = emu.storage_requests()
        assert any(e["path"].startswith("/storage/revid/") for e in storage)  # the audio host was used
        assert all(not e["api_key_present"] for e in storage)
        vendor = [r for r in emu.requests() if r["endpoint"] in ("create", "status", "result")]
        assert vendor
        assert all(r["api_key_present"] for r in vendor)  # the API itself always gets it, in the header
        assert all(TEST_KEY not in r["path"] for r in emu.requests())
    assert TEST_KEY not in json.dumps(outputs)
    assert TEST_KEY not in caplog.text
    assert all(TEST_KEY not in r.getMessage() and TEST_KEY not in repr(r.args) for r in caplog.records)
