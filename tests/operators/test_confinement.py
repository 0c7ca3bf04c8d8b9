"""A deployment confines where the operators read items and write audio (``[tts]``), before anything happens.

Each storing operator is pointed outside the allowed prefixes, directly, through ``..`` and through
a symbolic link: refused with the option named, no request made, nothing written. Inside, it works.
"""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.confinement import DESTINATIONS, ITEMS_PATHS, allowed, confine
from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.operators.batch import CambTtsBatchToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator, TtsAudioToStorageOperator
from tests.conftest import ConnFactory

CTX = {"ti": SimpleNamespace(dag_id="d", task_id="t", run_id="r", map_index=-1, try_number=1)}


@pytest.fixture
def allowed_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "allowed"
    root.mkdir()
    monkeypatch.setenv("AIRFLOW__TTS__ALLOWED_DESTINATIONS", f"{root.as_uri()}/, s3://audio-bucket/tts/")
    monkeypatch.setenv("AIRFLOW__TTS__ALLOWED_ITEMS_PATHS", f"{root.as_uri()}/inbox/")
    return root


def _outside(tmp_path: Path, root: Path) -> list[str]:
    (tmp_path / "elsewhere").mkdir(exist_ok=True)
    link = root / "escape"
    if not link.exists():
        os.symlink(tmp_path / "elsewhere", link)
    return [(tmp_path / "elsewhere").as_uri() + "/", f"{root.as_uri()}/../elsewhere/", f"{link.as_uri()}/"]


def test_prefixes_are_read_when_needed_and_normalised(allowed_root: Path) -> None:
    assert allowed(DESTINATIONS) == (f"file://{allowed_root}", "s3://audio-bucket/tts")
    confine(f"{allowed_root.as_uri()}/a/b.wav", DESTINATIONS, what="destination")
    confine("s3://audio-bucket/tts/nightly/", DESTINATIONS, what="destination")
    for refused in ("s3://audio-bucket/tts-other/x.wav", "s3://audio-bucket/tts/../secrets/x", "s3://other/tts/"):
        with pytest.raises(TtsConfigError, match=r"\[tts\] allowed_destinations"):
            confine(refused, DESTINATIONS, what="destination")


def test_without_configuration_everything_is_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW__TTS__ALLOWED_DESTINATIONS", raising=False)
    assert allowed(DESTINATIONS) == ()
    confine("file:///anywhere/at/all", DESTINATIONS, what="destination")


@pytest.mark.parametrize("which", [0, 1, 2], ids=["elsewhere", "dot-dot", "symlink"])
def test_every_storing_operator_refuses_a_destination_outside(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, allowed_root: Path, which: int
) -> None:
    destination = _outside(tmp_path, allowed_root)[which]
    conn = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)
    operators = [
        TtsAudioToStorageOperator(task_id="t", tts_conn_id=conn, tts_task_id=task_id, destination=destination),
        CambTtsToStorageOperator(
            task_id="t", tts_conn_id=conn, text="Hello.", voice_id=1, language=1, destination=destination
        ),
        CambTtsStreamToStorageOperator(
            task_id="t", tts_conn_id=conn, text="Hello.", language="en-us", voice_id=1, destination=destination
        ),
        CambTtsBatchToStorageOperator(
            task_id="t",
            tts_conn_id=conn,
            items=["Hello."],
            destination=destination,
            defaults={"voice_id": 1, "language": 1},
        ),
    ]
    requests_before = emu.stats()["requests_total"]
    for operator in operators:
        with pytest.raises(TtsConfigError, match=r"allowed_destinations"):
            operator.execute(CTX)
    assert emu.stats()["requests_total"] == requests_before
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_an_items_file_outside_is_not_read(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, allowed_root: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("a line that must never reach the vendor\n")
    op = CambTtsBatchToStorageOperator(
        task_id="t", tts_conn_id=make_conn("camb_ai"), items_path=secret.as_uri(),
        destination=allowed_root.as_uri() + "/", defaults={"voice_id": 1, "language": 1},
    )  # fmt: skip
    with pytest.raises(TtsConfigError, match=r"allowed_items_paths"):
        op.execute(CTX)
    assert emu.stats()["requests_total"] == 0


def test_inside_the_allowed_prefixes_it_works(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, allowed_root: Path
) -> None:
    inbox = allowed_root / "inbox"
    inbox.mkdir()
    (inbox / "texts.txt").write_text("One.\nTwo.\n")
    op = CambTtsBatchToStorageOperator(task_id="t", tts_conn_id=make_conn("camb_ai"),
                                       items_path=(inbox / "texts.txt").as_uri(),
                                       destination=allowed_root.as_uri() + "/out/", deferrable=False,
                                       poll_interval=0.05, defaults={"voice_id": 1, "language": 1})  # fmt: skip
    assert op.execute(CTX)["stored"] == 2
    assert ITEMS_PATHS == "allowed_items_paths"
