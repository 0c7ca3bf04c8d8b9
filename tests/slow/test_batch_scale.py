"""10,000 items in one batch task: the worker's memory stays under a fixed ceiling (issue 15).

A real worker process (``tests/operators/_batch_worker.py``) runs a 10,000-item batch against the
emulator, whose tasks finish at once and whose audio is tiny (the claim is about per-item state,
not audio bytes, which are streamed in constant memory by ``store_stream``). What the worker keeps
per item is one compact row in each phase (plan, record, manifest); the texts are not kept. The
ceiling is Airflow's own import footprint plus that per-item state, with headroom; the figure is
printed and recorded in RELIABILITY.md.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.reliability.test_batch_restarts import _manifest, _run, _spec, emulator_with_delay

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

ITEMS = 10_000
#: MiB. An Airflow worker process that imported the provider peaks near 150 MiB on its own.
CEILING_MIB = 256


@pytest.fixture
def instant_emu() -> Iterator[Any]:
    with emulator_with_delay(0) as emulator:
        yield emulator


def test_ten_thousand_items_in_one_task_stay_under_the_memory_ceiling(instant_emu: Any, tmp_path: Path) -> None:
    folder = tmp_path / "out"
    outcome = _run(_spec(instant_emu, folder, count=ITEMS, max_active_requests=8, max_failed_items=0))
    print(f"\nFIGURE batch of {ITEMS} items: worker peak RSS {outcome['peak_rss_mib']:.0f} MiB")
    assert outcome["result"]["stored"] == ITEMS, outcome
    assert sum(n for kinds in instant_emu.stats()["creates"].values() for n in kinds.values()) == ITEMS
    rows = _manifest(folder)
    assert len(rows) == ITEMS
    assert {row["status"] for row in rows} == {"stored"}
    assert outcome["peak_rss_mib"] < CEILING_MIB
