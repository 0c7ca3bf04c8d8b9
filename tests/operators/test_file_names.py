"""File names in a folder destination: ``file_name`` (templated, checked), and a default stable across re-runs.

Both storing operators against the emulator over loopback, into ``file://`` folders.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.exceptions import TtsConfigError
from airflow_provider_tts.naming import check_file_name, default_stem
from airflow_provider_tts.operators.tts import CambTtsStreamToStorageOperator, TtsAudioToStorageOperator
from tests.conftest import ConnFactory

TEXT = "The night train hums a tune."


def _context(map_index: int = -1, run_id: str = "manual__1", **extra: Any) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="batch", task_id="store", run_id=run_id, map_index=map_index, try_number=1)
    return {"ti": ti, **extra}


def _store(conn_id: str, tts_task_id: str, destination: str, **kw: Any) -> TtsAudioToStorageOperator:
    return TtsAudioToStorageOperator(
        task_id="store", tts_conn_id=conn_id, tts_task_id=tts_task_id, destination=destination, deferrable=False, **kw
    )


def _files(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()) if root.exists() else []


def _requests(emu: Any) -> int:
    return int(emu.stats()["requests_total"])


def test_a_rerun_of_the_same_item_makes_no_second_file(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    # A re-run submits again (a new vendor task, the same text): the file used to be named after
    # the vendor's id, so every re-run added one; now the item's name is stable and
    # skip_if_identical finds the earlier file.
    conn = make_conn("camb_ai")
    first_task = emu.create_task("camb_ai", "tts", delay=0, text=TEXT)
    first = _store(conn, first_task, f"file://{tmp_path}/").execute(_context(map_index=7))
    stored = tmp_path / "batch-store-0007.flac"
    assert first["uri"] == f"file://{stored}"
    before = stored.stat()

    second_task = emu.create_task("camb_ai", "tts", delay=0, text=TEXT)
    second = _store(conn, second_task, f"file://{tmp_path}/").execute(_context(map_index=7, run_id="manual__2"))
    assert second["uri"] == first["uri"]
    assert second["sha256"] == first["sha256"]
    assert second["tts_task_id"] == second_task
    assert _files(tmp_path) == [stored.name]
    after = stored.stat()
    assert (after.st_ino, after.st_mtime_ns) == (before.st_ino, before.st_mtime_ns)  # not rewritten


def test_default_names_of_unmapped_and_mapped_items() -> None:
    assert default_stem(_context(), "ignored") == "batch-store"
    assert default_stem(_context(map_index=0), "ignored") == "batch-store-0000"
    assert default_stem(_context(map_index=12345), "ignored") == "batch-store-12345"
    assert default_stem({}, "store") == "store"  # outside Airflow: the operator's task id
    long = default_stem({"ti": SimpleNamespace(dag_id="d" * 250, task_id="t" * 250, map_index=3)}, "x")
    assert len(long.encode()) <= 200
    assert long.endswith("-0003")


def test_templated_file_name_gets_the_extension_of_the_audio(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    task_id = emu.create_task("revid_tts", "tts", delay=0)
    op = _store(
        make_conn("revid_tts"),
        task_id,
        f"file://{tmp_path}/",
        file_name="{{ '%02d' % (ti.map_index + 1) }}-{{ params.slug }}",
    )
    context = _context(map_index=2, params={"slug": "the-night-train"})
    op.render_template_fields(context)  # type: ignore[arg-type]
    result = op.execute(context)
    assert result["uri"] == f"file://{tmp_path}/03-the-night-train.wav"
    assert _files(tmp_path) == ["03-the-night-train.wav"]


def test_a_file_name_with_the_right_extension_is_kept_and_a_contradicting_one_refused(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    task_id = emu.create_task("camb_ai", "tts", delay=0)  # FLAC
    kept = _store(conn, task_id, f"file://{tmp_path}/", file_name="briefing.flac").execute(_context())
    assert kept["uri"] == f"file://{tmp_path}/briefing.flac"
    # "1. The river" does not end in an audio extension: the audio's is appended.
    dotted = _store(conn, task_id, f"file://{tmp_path}/", file_name="1. The river").execute(_context())
    assert dotted["uri"] == f"file://{tmp_path}/1. The river.flac"
    with pytest.raises(TtsConfigError, match=r"says \.mp3 but the audio is audio/flac"):
        _store(conn, task_id, f"file://{tmp_path}/", file_name="briefing.mp3").execute(_context())
    assert _files(tmp_path) == ["1. The river.flac", "briefing.flac"]  # no .mp3, no temporary


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "rendered to ''"),
        ("   ", "rendered to '   '"),
        ("sub/file", "path separator"),
        ("..", r"contains '\.\.'"),
        ("..\\evil", "path separator"),
        (".hidden", "starts with '.'"),
        ("tab\there", "control character"),
        ("x" * 201, "201 bytes long"),
    ],
)
def test_a_bad_rendered_name_fails_before_any_request(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, name: str, message: str
) -> None:
    op = _store(make_conn("camb_ai"), "any-task", f"file://{tmp_path}/", file_name="{{ params.name }}")
    context = _context(params={"name": name})
    op.render_template_fields(context)  # type: ignore[arg-type]
    with pytest.raises(TtsConfigError, match=message) as info:
        op.execute(context)
    assert "expected a plain file name" in str(info.value)
    assert _requests(emu) == 0
    assert _files(tmp_path) == []


def test_literal_mistakes_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(TtsConfigError, match="path separator"):
        TtsAudioToStorageOperator(task_id="s", tts_task_id="t", destination="file:///x/", file_name="a/b")
    with pytest.raises(TtsConfigError, match=r"contains '\.\.'"):
        CambTtsStreamToStorageOperator(
            task_id="s", text=TEXT, language="en-us", voice_id=1, destination="file:///x/", file_name="..."
        )
    assert check_file_name("  chapter-01\n") == "chapter-01"  # a template's stray whitespace is dropped


def test_file_name_with_a_file_destination_is_an_error(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    op = _store(make_conn("camb_ai"), "any-task", f"file://{tmp_path}/speech.flac", file_name="other")
    with pytest.raises(TtsConfigError, match="is a file; end the destination with '/'"):
        op.execute(_context())
    assert _requests(emu) == 0


def test_a_subclass_inherits_file_name() -> None:
    class OneTask(TtsAudioToStorageOperator):
        def __init__(self, *, text: str, **kwargs: Any) -> None:
            super().__init__(tts_task_id="later", **kwargs)
            self.text = text

    op = OneTask(task_id="s", text=TEXT, destination="file:///x/", file_name="{{ ds }}")
    assert op.file_name == "{{ ds }}"
    assert "file_name" in OneTask.template_fields


def _stream(conn_id: str, destination: str, **kw: Any) -> CambTtsStreamToStorageOperator:
    return CambTtsStreamToStorageOperator(
        task_id="speak", tts_conn_id=conn_id, text=TEXT, language="en-us", voice_id=20303, output_format="wav",
        destination=destination, **kw,
    )  # fmt: skip


def test_stream_file_name_is_used_and_the_cache_still_finds_it(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    first = _stream(conn, f"file://{tmp_path}/", file_name="night-train").execute(_context())
    assert first["uri"] == f"file://{tmp_path}/night-train.wav"
    again = _stream(conn, f"file://{tmp_path}/", file_name="night-train.wav").execute(_context(run_id="manual__2"))
    assert again["cached"] is True
    assert again["uri"] == first["uri"]
    assert emu.stats()["requests_by_endpoint"].get("stream", 0) == 1
    assert [f for f in _files(tmp_path) if not f.startswith(".")] == ["night-train.wav"]


def test_stream_file_name_contradicting_the_format_costs_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    with pytest.raises(TtsConfigError, match=r"says \.mp3 but the requested format is \.wav"):
        _stream(make_conn("camb_ai"), f"file://{tmp_path}/", file_name="night.mp3").execute(_context())
    assert _requests(emu) == 0
    assert _files(tmp_path) == []
