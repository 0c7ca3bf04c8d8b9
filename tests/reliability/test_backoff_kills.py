"""A worker killed while a refused create waits for its resend: the next try pays once (RELIABILITY R15).

A 429 or 503 on a create proves nothing was created, and the transport resends it after a backoff.
The chaos run (D3, second full run) found 7 texts left "uncertain" with 0 creates at the vendor:
each kill landed in that backoff, while the batch's request-cache claim or the one-task operator's
submit record still said "a create may be in flight". Now the marker is dropped before the sleep
and taken again before the resend, so only a request actually on the wire is in doubt.

The kill is emulated in-process by a :class:`Killed` raised where the worker would have died: a
``BaseException`` that no ``except Exception`` of ours catches, as a SIGKILL runs no handler. In
the backoff: tenacity's sleep raises it. In flight: ``requests``' adapter raises it after the
vendor answered the create (the vendor created the task; the answer never reached us). Only
library code is patched; the emulator is real, over loopback.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests.adapters
import tenacity.nap

from airflow_provider_tts.exceptions import TtsBatchItemsFailedPermanentlyError, TtsSubmitUncertainError
from airflow_provider_tts.operators.batch import RevidTtsBatchToStorageOperator
from airflow_provider_tts.operators.long_text import CambTtsLongTextToStorageOperator
from airflow_provider_tts.operators.text_to_storage import CambTtsToStorageOperator, RevidTtsToStorageOperator
from airflow_provider_tts.transport import retry
from airflow_provider_tts.transport.retry import Pacer
from tests.conftest import FIELDS, ConnFactory
from tests.operators.test_batch import batch, context, creates, manifest
from tests.operators.test_submit import FakeTI, Ledger


class Killed(BaseException):
    """The worker's death, in-process: not an ``Exception``, so nothing of ours handles it."""


def _die(*_: Any) -> None:
    raise Killed


@contextlib.contextmanager
def killed_in_backoff() -> Iterator[None]:
    """The worker dies in the transport's next backoff sleep (tenacity's own ``time.sleep``)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=_die))
        yield


@contextlib.contextmanager
def killed_waiting_for_the_pacer() -> Iterator[None]:
    """A pause is on (another request's ``Retry-After``): the next vendor request waits 5 s for its
    turn of the connection's pacer, and the worker dies in that wait."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(Pacer, "_start_in", lambda self: 5.0)
        patch.setattr(retry, "time", SimpleNamespace(sleep=_die, monotonic=time.monotonic))
        yield


@contextlib.contextmanager
def killed_in_flight(create: int) -> Iterator[None]:
    """The worker dies once the vendor has answered the ``create``-th create request (1-based) of the block."""
    original = requests.adapters.HTTPAdapter.send
    sent = 0

    def send(self: requests.adapters.HTTPAdapter, request: requests.PreparedRequest, **kw: Any) -> Any:
        nonlocal sent
        response = original(self, request, **kw)
        if request.method == "POST":  # the create is the only POST these operators send
            sent += 1
            if sent == create:
                response.close()
                raise Killed
        return response

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(requests.adapters.HTTPAdapter, "send", send)
        yield


# ------------------------------------------------------------------------------------ one-task


@pytest.fixture(params=["task_state_store", "variable"])
def ledger(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Ledger:
    return Ledger(request.param, monkeypatch)


def _one_task(conn_id: str, folder: Path) -> Any:
    return CambTtsToStorageOperator(task_id="submit", tts_conn_id=conn_id, destination=folder.as_uri() + "/",
                                    deferrable=False, poll_interval=0.05, **FIELDS["camb_ai/tts"])  # fmt: skip


@pytest.mark.parametrize("fault", ["429_no_retry_after", "503"])
def test_one_task_killed_in_a_refused_creates_backoff_pays_once_on_the_next_try(
    fault: str, emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: Ledger
) -> None:
    conn_id = make_conn("camb_ai")
    emu.inject(fault, count=1, endpoint="create")
    with killed_in_backoff(), pytest.raises(Killed):
        _one_task(conn_id, tmp_path).execute(ledger.context())
    assert ledger.record() is None  # nothing was created, and nothing says otherwise
    result = _one_task(conn_id, tmp_path).execute(ledger.context(FakeTI(try_number=2)))
    assert emu.stats()["creates"] == {"camb_ai": {"tts": 1}}
    assert (tmp_path / Path(result["uri"]).name).stat().st_size == result["size_bytes"] > 0


def test_one_task_killed_waiting_for_its_pacer_turn_pays_once_on_the_next_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: Ledger
) -> None:
    """The submit record is saved before the create, and let go while the create waits out a pause."""
    conn_id = make_conn("camb_ai")
    with killed_waiting_for_the_pacer(), pytest.raises(Killed):
        _one_task(conn_id, tmp_path).execute(ledger.context())
    assert ledger.record() is None
    result = _one_task(conn_id, tmp_path).execute(ledger.context(FakeTI(try_number=2)))
    assert emu.stats()["creates"] == {"camb_ai": {"tts": 1}}
    assert (tmp_path / Path(result["uri"]).name).stat().st_size == result["size_bytes"] > 0


def test_one_task_killed_while_the_resent_create_is_in_flight_stays_uncertain(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: Ledger
) -> None:
    """The unchanged guarantee (R5'): the record is back before the resend, so a kill during it is in doubt."""
    conn_id = make_conn("revid_tts")
    emu.inject("503", count=1, endpoint="create")

    def op() -> Any:
        return RevidTtsToStorageOperator(task_id="submit", tts_conn_id=conn_id, destination=tmp_path.as_uri() + "/",
                                         deferrable=False, poll_interval=0.05, text="hi")  # fmt: skip

    with killed_in_flight(create=2), pytest.raises(Killed):
        op().execute(ledger.context())
    record = ledger.record()
    assert record is not None
    assert "tts_task_id" not in record
    with pytest.raises(TtsSubmitUncertainError):
        op().execute(ledger.context(FakeTI(try_number=2)))
    assert emu.stats()["creates"] == {"revid_tts": {"tts": 1}}
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------------------- batch


def one_item_batch(conn: str, folder: Path) -> Any:
    """A batch of one item: an in-process "kill" ends only its own thread, a real one the whole batch."""
    return batch(RevidTtsBatchToStorageOperator, conn, folder, items=["Only."], max_active_requests=1)


def test_batch_killed_in_a_refused_creates_backoff_pays_once_on_the_next_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")
    emu.inject("429_no_retry_after", count=1, endpoint="create")

    with killed_in_backoff(), pytest.raises(Killed):
        one_item_batch(conn, tmp_path).execute(context())
    assert creates(emu) == 0
    result = one_item_batch(conn, tmp_path).execute(context(try_number=2))
    assert (result["stored"], result["failed"], creates(emu)) == (1, 0, 1)
    [row] = manifest(tmp_path)
    assert row["status"] == "stored"
    assert Path(row["file"].removeprefix("file://")).stat().st_size == row["size_bytes"] > 0


def test_batch_killed_waiting_for_its_pacer_turn_pays_once_on_the_next_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """The claim is taken before the create, and let go while the create waits out a pause."""
    conn = make_conn("revid_tts")
    with killed_waiting_for_the_pacer(), pytest.raises(Killed):
        one_item_batch(conn, tmp_path).execute(context())
    assert creates(emu) == 0
    result = one_item_batch(conn, tmp_path).execute(context(try_number=2))
    assert (result["stored"], result["failed"], creates(emu)) == (1, 0, 1)


def test_batch_killed_while_the_resent_create_is_in_flight_stays_uncertain(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("revid_tts")
    emu.inject("503", count=1, endpoint="create")

    with killed_in_flight(create=2), pytest.raises(Killed):
        one_item_batch(conn, tmp_path).execute(context())
    with pytest.raises(TtsBatchItemsFailedPermanentlyError):
        one_item_batch(conn, tmp_path).execute(context(try_number=2))
    [row] = manifest(tmp_path)
    assert row["status"] == "failed"
    assert "may have created" in row["error"]
    assert creates(emu) == 1


def test_a_claim_another_run_took_during_the_backoff_is_not_resent(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    """Run A's create is refused; while A sleeps, run B claims, pays and stores the same text into the
    same folder. A's resend finds the claim taken: A sends nothing more, and re-attaches to B's audio."""
    conn = make_conn("revid_tts")
    emu.inject("503", count=1, endpoint="create")
    other = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=["Shared."], manifest_name="other.jsonl")

    def run_b(_: float) -> None:
        patch.undo()  # B's own backoffs, if any, sleep normally
        assert other.execute(context(run_id="manual__2"))["stored"] == 1

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tenacity.nap, "time", SimpleNamespace(sleep=run_b))
        result = batch(RevidTtsBatchToStorageOperator, conn, tmp_path, items=["Shared."]).execute(context())
    assert (result["failed"], creates(emu)) == (0, 1)
    assert emu.stats()["requests_by_endpoint"]["create"] == 2  # A's refused one and B's: A never resent


# ----------------------------------------------------------------------------------- long text


def test_a_long_text_part_killed_in_its_backoff_pays_once_on_the_next_try(
    emu: Any, make_conn: ConnFactory, tmp_path: Path
) -> None:
    conn = make_conn("camb_ai")
    emu.inject("503", count=1, endpoint="create")

    def op() -> Any:
        return CambTtsLongTextToStorageOperator(
            task_id="chapter", tts_conn_id=conn, destination=tmp_path.as_uri() + "/", text="One part.\n\nTwo part.",
            defaults={"voice_id": 20303, "language": 1}, deferrable=False, poll_interval=0.05, max_active_requests=1,
        )  # fmt: skip

    with killed_in_backoff(), pytest.raises(Killed):
        op().execute(context())
    result = op().execute(context(try_number=2))
    assert result["parts"] == result["parts_paid"] == creates(emu)
    assert (tmp_path / Path(result["uri"]).name).stat().st_size == result["size_bytes"] > 0
