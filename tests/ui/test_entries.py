"""The Audio view's rows, filters, pages, totals and ranges, without a server (issue 28)."""

from __future__ import annotations

import json

import pytest

from airflow_provider_tts.ui.entries import (
    SINGLE,
    TaskOutput,
    failed_task_entry,
    find_file,
    manifest_entries,
    one_file_entry,
    page_of,
    parse_manifest,
    totals,
)
from airflow_provider_tts.ui.streaming import RangeNotSatisfiable, media_type_of, parse_range

ONE = {
    "uri": "s3://audio/briefings/briefing-2026-01-01.flac", "size_bytes": 1000, "sha256": "x",
    "content_type": "audio/flac", "duration_seconds": 30.0, "tts_task_id": "t", "fingerprint": "f", "cached": False,
    "characters": 120, "requests": 1, "credits": 7, "estimated_credits": None,
}  # fmt: skip
BATCH = {"items": 3, "stored": 1, "cached": 1, "failed": 1, "destination": "file:///data/batch/",
         "manifest": "file:///data/batch/manifest.jsonl"}  # fmt: skip
ROWS = [
    {"index": 0, "key": "a", "status": "stored", "file": "file:///data/batch/a.flac", "size_bytes": 10,
     "duration_seconds": 60.0, "characters": 50, "requests": 1, "credits": 3, "duplicate_of": None},
    {"index": 1, "key": "b", "status": "cached", "file": "file:///data/batch/b.flac", "size_bytes": 20,
     "duration_seconds": 30.0, "characters": 0, "requests": 0, "credits": 0, "duplicate_of": None},
    {"index": 2, "key": "c", "status": "failed", "file": None, "error": "rejected by the vendor: content",
     "characters": 40, "requests": 1, "credits": None, "duplicate_of": None},
    {"index": 3, "key": "a2", "status": "stored", "file": "file:///data/batch/a.flac", "size_bytes": 10,
     "duration_seconds": 60.0, "characters": 0, "requests": 0, "credits": 0, "duplicate_of": 0},
]  # fmt: skip


def _batch() -> TaskOutput:
    return TaskOutput("speak_all", -1, "RevidTtsBatchToStorageOperator", "success", BATCH)


def test_a_one_file_result_is_one_paid_row_named_by_its_file() -> None:
    entry = one_file_entry(TaskOutput("speak", 3, "CambTtsToStorageOperator", "success", ONE))
    assert entry["name"] == "briefing-2026-01-01.flac"
    assert (entry["status"], entry["format"], entry["vendor"], entry["credits"]) == ("stored", "flac", "Camb.ai", 7)
    assert (entry["task_id"], entry["map_index"], entry["index"]) == ("speak", 3, SINGLE)
    assert "uri" not in entry
    assert not any("s3://" in str(v) for v in entry.values())


def test_manifest_rows_keep_failures_with_their_reasons_and_totals_count_each_file_once() -> None:
    entries = manifest_entries(_batch(), ROWS)
    assert [e["status"] for e in entries] == ["stored", "cached", "failed", "stored"]
    assert entries[2]["error"].startswith("rejected by the vendor")
    assert entries[0]["vendor"] == "RevidAPI"
    total = totals(entries)
    assert (total["files"], total["seconds"], total["minutes"]) == (2, 90.0, 1.5)
    assert (total["stored"], total["cached"], total["failed"], total["credits"]) == (1, 1, 1, 3)
    assert total["characters"] == 90


def test_filters_and_pages_keep_the_totals_of_the_whole_run() -> None:
    entries = [*manifest_entries(_batch(), ROWS), failed_task_entry(TaskOutput("t", -1, "X", "failed", None))]
    failed = page_of(entries, status="failed")
    assert failed["total_entries"] == 2
    assert all(e["status"] == "failed" for e in failed["entries"])
    assert page_of(entries, status="audio")["total_entries"] == 3
    second = page_of(entries, page=2, per_page=2)
    assert [e["index"] for e in second["entries"]] == [2, 3]
    assert second["totals"] == totals(entries)
    with pytest.raises(ValueError, match="status must be one of"):
        page_of(entries, status="anything")


def test_only_recorded_files_inside_the_batch_folder_are_found() -> None:
    out = _batch()
    assert find_file(out, 0, ROWS) == "file:///data/batch/a.flac"
    assert find_file(out, 2, ROWS) is None  # failed: nothing stored
    assert find_file(out, 99, ROWS) is None
    escaping = [{"index": 0, "status": "stored", "file": "file:///data/batch/../../etc/passwd"}]
    assert find_file(out, 0, escaping) is None
    elsewhere = [{"index": 0, "status": "stored", "file": "file:///etc/passwd"}]
    assert find_file(out, 0, elsewhere) is None
    assert find_file(TaskOutput("speak", -1, "CambTtsToStorageOperator", "success", ONE), SINGLE, None) == ONE["uri"]


def test_a_broken_manifest_line_is_skipped() -> None:
    data = b"\n".join(json.dumps(row).encode() for row in ROWS[:2]) + b"\n{broken\n\n"
    assert [row["key"] for row in parse_manifest(data)] == ["a", "b"]


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("bytes=0-", (0, 999)),
        ("bytes=100-199", (100, 199)),
        ("bytes=900-5000", (900, 999)),
        ("bytes=-100", (900, 999)),
        ("bytes=-5000", (0, 999)),
        ("bytes=0-1,5-6", None),  # several ranges: the whole object
        ("items=0-1", None),
    ],
)
def test_ranges(header: str | None, expected: tuple[int, int] | None) -> None:
    assert parse_range(header, 1000) == expected


@pytest.mark.parametrize("header", ["bytes=1000-", "bytes=5-4", "bytes=-0"])
def test_unsatisfiable_ranges(header: str) -> None:
    with pytest.raises(RangeNotSatisfiable):
        parse_range(header, 1000)


def test_only_audio_has_a_media_type() -> None:
    assert media_type_of(b"fLaC\x00\x00\x00\x22") == "audio/flac"
    assert media_type_of(b"RIFF\x00\x00\x00\x00WAVEfmt ") == "audio/wav"
    assert media_type_of(b"[core]\nfernet_key") is None
