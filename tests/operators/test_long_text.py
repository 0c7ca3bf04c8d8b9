"""Long texts into one file (issue 27), against the emulator over loopback.

Each vendor's long text becomes one file that reference decoders read, as long as the sum of its
parts; a re-run pays for nothing and an edited paragraph pays only for its own parts; a failed or
mismatched part leaves no file (and an existing one intact); the deferral and a retry re-attach.
"""

from __future__ import annotations

import asyncio
import io
import json
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from airflow_provider_tts.compat import TaskDeferred
from airflow_provider_tts.exceptions import TtsBatchItemsFailedError, TtsConfigError
from airflow_provider_tts.longtext.operator import PARTS_FOLDER
from airflow_provider_tts.operators.long_text import (
    CambTtsLongTextToStorageOperator,
    CambTtsStreamLongTextToStorageOperator,
    RevidTtsLongTextToStorageOperator,
)
from airflow_provider_tts.srt import parse_srt
from airflow_provider_tts.triggers.batch import TtsBatchTrigger
from tests.conftest import ConnFactory
from tests.emulator.audio_checks import read_wav

CAMB_DEFAULTS = {"voice_id": 20303, "language": 1}


def context(try_number: int = 1) -> dict[str, Any]:
    ti = SimpleNamespace(dag_id="book", task_id="chapter", run_id="manual__1", map_index=-1, try_number=try_number)
    return {"ti": ti}


def creates(emu: Any) -> int:
    return sum(n for kinds in emu.stats()["creates"].values() for n in kinds.values())


def chapter(paragraphs: int, sentences: int = 12, tag: str = "") -> list[str]:
    return [
        " ".join(
            f"Paragraph {p}{tag}, sentence {s}: the river ran on past 1,000 trees, e.g. oaks." for s in range(sentences)
        )
        for p in range(paragraphs)
    ]


def long_text(cls: type[Any], api: str, make_conn: ConnFactory, folder: Path, text: str, **kw: Any) -> Any:
    kw.setdefault("deferrable", False)
    kw.setdefault("poll_interval", 0.05)
    if cls is CambTtsLongTextToStorageOperator:
        kw.setdefault("defaults", CAMB_DEFAULTS)
    return cls(task_id="chapter", tts_conn_id=make_conn(api), destination=folder.as_uri() + "/", text=text, **kw)


def visible(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


CASES = [(CambTtsLongTextToStorageOperator, "camb_ai", "flac"), (RevidTtsLongTextToStorageOperator, "revid_tts", "wav")]


@pytest.mark.parametrize(("cls", "api", "fmt"), CASES, ids=["camb", "revid"])
def test_a_long_text_becomes_one_file_as_long_as_its_parts(
    cls: Any, api: str, fmt: str, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    import soundfile as sf

    text = "\n\n".join(chapter(4))
    op = long_text(cls, api, make_conn, tmp_path, text, max_part_characters=500, silence_seconds=0.25,
                   captions=["srt", "vtt"])  # fmt: skip
    result = op.execute(context())
    audio = tmp_path / f"book-chapter.{fmt}"
    assert visible(tmp_path) == sorted([audio.name, "book-chapter.timing.json", "book-chapter.srt", "book-chapter.vtt"])
    assert result["uri"] == audio.as_uri()
    assert result["parts"] == result["parts_paid"] == creates(emu) > 4
    assert result["cached"] is False
    timing = json.loads((tmp_path / "book-chapter.timing.json").read_text())
    parts = timing["parts"]
    # The parts' files, decoded one by one, and the joined file, decoded whole, agree within a frame.
    manifest = [json.loads(line) for line in (tmp_path / PARTS_FOLDER / "book-chapter" / "manifest.jsonl").open()]
    part_seconds = [sf.info(row["file"].removeprefix("file://")).duration for row in manifest]
    info = sf.info(str(audio))
    assert timing["silence_seconds"] == pytest.approx(0.25, abs=1 / info.samplerate)  # whole frames of silence
    expected = sum(part_seconds) + timing["silence_seconds"] * (len(parts) - 1)
    assert abs(info.duration - expected) <= 1 / info.samplerate
    assert result["duration_seconds"] == pytest.approx(expected, abs=1 / info.samplerate)
    assert [p["duration_seconds"] for p in parts] == pytest.approx(part_seconds, abs=1e-6)
    if fmt == "flac" and shutil.which("flac"):
        subprocess.run(["flac", "-t", "-s", str(audio)], check=True)
    if fmt == "wav":
        read_wav(audio.read_bytes())  # RIFF and data sizes match the file
    # The sidecar maps the text: parts in order, offsets into the text, starts adding up.
    assert [text[p["start_char"] : p["end_char"]] for p in parts] == [p["text"] for p in parts]
    assert parts[1]["start_seconds"] == pytest.approx(
        parts[0]["duration_seconds"] + timing["silence_seconds"], abs=1e-5
    )
    cues = parse_srt((tmp_path / "book-chapter.srt").read_text())
    assert len(cues) == len(parts)
    assert (tmp_path / "book-chapter.vtt").read_text().startswith("WEBVTT")


def test_editing_one_paragraph_of_40000_characters_pays_only_for_its_parts(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    paragraphs = chapter(40, sentences=14)
    text = "\n\n".join(paragraphs)
    assert len(text) >= 40_000
    first = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, text).execute(context())
    paid = creates(emu)
    assert first["parts_paid"] == paid == first["parts"]
    again = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, text).execute(context())
    assert creates(emu) == paid  # a re-run pays nothing
    assert again["cached"] is True
    assert again["sha256"] == first["sha256"]
    paragraphs[20] = paragraphs[20].replace("sentence 3:", "sentence three, edited:")
    edited = "\n\n".join(paragraphs)
    third = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, edited).execute(context())
    changed = creates(emu) - paid
    assert 1 <= changed <= 2  # only the edited paragraph's parts (a paragraph is at most two)
    assert third["parts_paid"] == third["requests"] == changed
    assert third["characters"] < 2 * 2000
    assert third["fingerprint"] != first["fingerprint"]  # (the emulator's audio may not hear the edit)
    timing = json.loads((tmp_path / "book-chapter.timing.json").read_text())
    assert sum("edited" in part["text"] for part in timing["parts"]) == 1
    print(f"FIGURE long text {len(text)} characters, {first['parts']} parts: first run {paid} creates, "
          f"re-run 0, one paragraph edited {changed}")  # fmt: skip


def test_a_failed_part_leaves_no_file_and_the_task_fails(emu: Any, make_conn: ConnFactory, tmp_path: Path) -> None:
    text = "A good first paragraph.\n\nA second one that fails. [emu:outcome=failed]\n\nA third."
    op = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, text)
    with pytest.raises(Exception, match="1 of 3 items failed"):
        op.execute(context())
    assert visible(tmp_path) == []


def test_parts_that_do_not_match_fail_and_leave_the_existing_file_intact(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    paragraphs = ["The first paragraph is here.", "The second paragraph is here."]
    op = long_text(CambTtsLongTextToStorageOperator, "camb_ai", make_conn, tmp_path, "\n\n".join(paragraphs))
    before = (tmp_path / "book-chapter.flac").read_bytes() if op.execute(context()) else b""
    paragraphs[1] += " [emu:audio_format=wav]"  # one part now comes back as WAV
    op = long_text(CambTtsLongTextToStorageOperator, "camb_ai", make_conn, tmp_path, "\n\n".join(paragraphs))
    with pytest.raises(TtsConfigError, match=r"part 2 .* is wav but part 1 .* is flac"):
        op.execute(context())
    assert (tmp_path / "book-chapter.flac").read_bytes() == before
    assert visible(tmp_path) == ["book-chapter.flac", "book-chapter.timing.json"]


def test_one_deferral_for_every_part_then_a_fresh_instance_joins(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    text = "\n\n".join(chapter(3))
    conn = make_conn("camb_ai")

    def make(**kw: Any) -> Any:
        return CambTtsLongTextToStorageOperator(
            task_id="chapter", tts_conn_id=conn, destination=tmp_path.as_uri() + "/", text=text,
            defaults=CAMB_DEFAULTS, max_part_characters=400, poll_interval=0.05, **kw,
        )  # fmt: skip

    with pytest.raises(TaskDeferred) as deferred:
        make(deferrable=True).execute(context())
    _, kwargs = deferred.value.trigger.serialize()
    assert "text" not in json.dumps(kwargs)

    async def first_event() -> Any:
        async for event in TtsBatchTrigger(**kwargs).run():
            return event.payload
        return None

    event = asyncio.run(first_event())
    result = getattr(make(deferrable=True), deferred.value.method_name)(context(), event=event)
    assert result["parts_paid"] == creates(emu) == result["parts"]
    assert visible(tmp_path) == ["book-chapter.flac", "book-chapter.timing.json"]


def test_a_retry_reattaches_to_a_part_still_pending_and_pays_nothing_twice(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    text = "The quick part is first.\n\nThe slow part comes next. [emu:delay=inf]"
    op = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, text, timeout=1,
                   manifest_task_ids=True)  # fmt: skip
    with pytest.raises(TtsBatchItemsFailedError):
        op.execute(context())
    assert visible(tmp_path) == []  # no partial file at the destination
    rows = [json.loads(line) for line in (tmp_path / PARTS_FOLDER / "book-chapter" / "manifest.jsonl").open()]
    emu.end_pending(rows[1]["tts_task_id"])
    result = op.execute(context(try_number=2))
    assert creates(emu) == 2
    assert result["parts"] == 2
    assert (tmp_path / "book-chapter.wav").exists()


def test_overwrite_fail_refuses_an_existing_file_before_paying(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    (tmp_path / "book-chapter.wav").write_bytes(b"RIFF")
    op = long_text(RevidTtsLongTextToStorageOperator, "revid_tts", make_conn, tmp_path, "Some words here.",
                   overwrite="fail")  # fmt: skip
    with pytest.raises(TtsConfigError, match="already exists and overwrite='fail'; nothing was paid for"):
        op.execute(context())
    assert creates(emu) == 0


def test_bad_settings_fail_when_the_dag_is_parsed() -> None:
    with pytest.raises(TtsConfigError, match="word of 3001 characters"):
        CambTtsLongTextToStorageOperator(task_id="t", text="x" * 3001, destination="file:///tmp/x/")
    with pytest.raises(TtsConfigError, match="takes no items"):
        CambTtsLongTextToStorageOperator(task_id="t", text="Hi there.", destination="file:///tmp/x/", items=["x"])
    with pytest.raises(TtsConfigError, match="captions"):
        RevidTtsLongTextToStorageOperator(task_id="t", text="Hi there.", destination="file:///tmp/x/", captions=["ass"])
    with pytest.raises(TtsConfigError, match="max_part_characters"):
        RevidTtsLongTextToStorageOperator(task_id="t", text="Hi.", destination="file:///tmp/x/", max_part_characters=0)


# --- Camb.ai /tts-stream ------------------------------------------------------------------------


def stream_calls(emu: Any) -> int:
    return int(emu.stats()["requests_by_endpoint"].get("stream", 0))


@pytest.mark.parametrize("fmt", ["flac", "wav"])
def test_a_long_text_through_tts_stream_becomes_one_file_and_an_edit_pays_one_part(
    fmt: str, emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    import soundfile as sf

    conn = make_conn("camb_ai")
    paragraphs = chapter(4, sentences=10)

    def run(text: str) -> dict[str, Any]:
        op = CambTtsStreamLongTextToStorageOperator(
            task_id="chapter", tts_conn_id=conn, destination=tmp_path.as_uri() + "/", text=text, language="en-us",
            voice_id=20303, output_format=fmt, max_part_characters=500, captions=["vtt"],
        )  # fmt: skip
        return dict(op.execute(context()))

    first = run("\n\n".join(paragraphs))
    assert first["parts_paid"] == stream_calls(emu) == first["parts"] > 4
    assert first["manifest"] is None  # the same keys as the task-based long texts
    audio = tmp_path / f"book-chapter.{fmt}"
    manifestless = sorted(p.name for p in (tmp_path / PARTS_FOLDER / "book-chapter").iterdir() if p.suffix == f".{fmt}")
    parts = [tmp_path / PARTS_FOLDER / "book-chapter" / name for name in manifestless]
    info = sf.info(str(audio))
    assert abs(info.duration - sum(sf.info(str(p)).duration for p in parts)) <= 1 / info.samplerate
    if fmt == "flac" and shutil.which("flac"):
        subprocess.run(["flac", "-t", "-s", str(audio)], check=True)
    assert run("\n\n".join(paragraphs))["cached"] is True
    assert stream_calls(emu) == first["parts"]
    paragraphs[2] = paragraphs[2].replace("sentence 4:", "sentence four, edited:")
    edited = run("\n\n".join(paragraphs))
    assert stream_calls(emu) - first["parts"] == edited["parts_paid"] == 1
    assert visible(tmp_path) == sorted([audio.name, "book-chapter.timing.json", "book-chapter.vtt"])


def test_a_failed_stream_part_leaves_no_file_and_the_retry_streams_only_it(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai", max_retries=0)
    text = "\n\n".join(chapter(3, sentences=3))
    op = CambTtsStreamLongTextToStorageOperator(
        task_id="chapter", tts_conn_id=conn, destination=tmp_path.as_uri() + "/", text=text, language="en-us",
        voice_id=20303, max_active_requests=1,
    )  # fmt: skip
    emu.inject("500", count=1, endpoint="any", api="camb_ai")
    with pytest.raises(Exception, match="500"):
        op.execute(context())
    assert visible(tmp_path) == []
    calls = stream_calls(emu)
    result = op.execute(context(try_number=2))
    assert result["parts"] == 3
    assert stream_calls(emu) - calls == 1  # the two stored parts are not streamed again


def test_a_stream_file_name_contradicting_the_format_costs_nothing(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    op = CambTtsStreamLongTextToStorageOperator(
        task_id="chapter", tts_conn_id=make_conn("camb_ai"), destination=tmp_path.as_uri() + "/",
        file_name="chapter.mp3", text="A text of a few words.", language="en-us", voice_id=1,
    )  # fmt: skip
    with pytest.raises(TtsConfigError, match=r"says \.mp3 but the requested format is \.flac"):
        op.execute(context())
    assert stream_calls(emu) == 0


def test_stream_settings_that_cannot_work_fail_when_the_dag_is_parsed() -> None:
    kw = {"task_id": "t", "destination": "file:///tmp/x/", "language": "en-us", "voice_id": 1}
    with pytest.raises(TtsConfigError, match="cannot be joined"):
        CambTtsStreamLongTextToStorageOperator(text="Hello there.", output_format="pcm_s16le", **kw)
    with pytest.raises(TtsConfigError, match="at least 3"):
        CambTtsStreamLongTextToStorageOperator(text="Hi", **kw)
    with pytest.raises(TtsConfigError, match="language"):
        CambTtsStreamLongTextToStorageOperator(text="Hello there.", **{**kw, "language": 1.5})


@pytest.mark.parametrize(("cls", "api", "fmt"), CASES, ids=["camb", "revid"])
def test_s3_destination_a_file_uri_gets_the_joined_file_and_its_sidecars(
    cls: Any, api: str, fmt: str, emu: Any, make_conn: ConnFactory, aws_conn: str, bucket: str, s3: Any
) -> None:
    import soundfile as sf

    text = "\n\n".join(chapter(3, sentences=4))
    defaults = CAMB_DEFAULTS if api == "camb_ai" else {}
    op = cls(
        task_id="chapter", tts_conn_id=make_conn(api), destination=f"s3://{bucket}/books/one.{fmt}",
        dest_conn_id=aws_conn, text=text, defaults=defaults, deferrable=False, poll_interval=0.05,
    )  # fmt: skip
    result = op.execute(context())
    keys = sorted(obj["Key"] for obj in s3.list_objects_v2(Bucket=bucket)["Contents"])
    assert [k for k in keys if not k.startswith("books/.tts-parts/")] == sorted(
        ["books/one.timing.json", f"books/one.{fmt}"]
    )
    assert result["uri"] == f"s3://{bucket}/books/one.{fmt}"
    body = s3.get_object(Bucket=bucket, Key=f"books/one.{fmt}")["Body"].read()
    if fmt == "wav":
        read_wav(body)
    assert sf.info(io.BytesIO(body)).duration == pytest.approx(result["duration_seconds"], abs=1e-4)
    again = op.execute(context())
    assert again["cached"] is True
    assert creates(emu) == result["parts"] == 3
