"""Restarts: the vendor API going away mid-wait, and a worker SIGKILLed mid-submit.

Killing the triggerer mid-wait (a new one adopts the trigger, the deadline is not reset) is proven
on real Airflow processes in ``tests/slow/test_real_airflow_sensors.py``; killing the worker
mid-download (no partial object at the destination, the retry overwrites its own temporary) in
``tests/operators/test_audio_to_storage.py`` and ``test_audio_to_storage_s3.py``.

The emulator restart keeps the emulator's task store (the same :class:`Emulator` object is
stopped and started again on the same port), which is what a vendor's API restart looks like: the
servers go, the tasks stay. A vendor that *forgets* a task is a different event, a ``not_found``
failure, covered here and in ``test_permanent_failures.py``.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from airflow_provider_tts.emulator import Emulator, EmulatorConfig
from airflow_provider_tts.exceptions import TtsSubmitUncertainError
from airflow_provider_tts.operators.tts import TtsSubmitOperator
from airflow_provider_tts.submissions import SubmitIdentity
from airflow_provider_tts.triggers.tts import TtsTaskTrigger
from tests.conftest import FIELDS, PAIRS, TEST_KEY, ConnFactory
from tests.reliability.conftest import ROOT, conn_json, define_conn, drive, subprocess_env

APIS = ("camb_ai", "revid_tts")
FAST_RETRY = {"max_retries": 3, "retry_backoff": 0.2, "retry_max_backoff": 1.0, "read_timeout": 2}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def fixed_port_emulator() -> Iterator[Emulator]:
    """An emulator on a fixed port, so it can be stopped and started again at the same address."""
    emu = Emulator(port=_free_port(), api_key=TEST_KEY, config=EmulatorConfig(default_delay=1, audio_engine="tones"))
    emu.start()
    try:
        yield emu
    finally:
        emu.stop()


def _trigger(conn_id: str, task_id: str, kind: str, **kw: Any) -> TtsTaskTrigger:
    trigger = TtsTaskTrigger(tts_conn_id=conn_id, tts_task_id=task_id, kind=kind, **kw)
    return TtsTaskTrigger(**trigger.serialize()[1])  # as the triggerer rebuilds it from the row


# ----------------------------------------------------------------------------- emulator restart


def test_emulator_restart_mid_wait_loses_no_wait(
    fixed_port_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All four kinds wait through a 3 s outage of the API and end in success, none in error."""
    emu = fixed_port_emulator
    conns = {api: define_conn(monkeypatch, f"restart_{api}", emu, api, **FAST_RETRY) for api in APIS}
    tasks = [(api, kind, emu.create_task(api, kind, delay=5, audio_bytes=4096)) for api, kind in PAIRS]
    port = emu.port

    async def scenario() -> tuple[list[list[dict[str, Any]]], float]:
        started = time.monotonic()
        waits = [
            asyncio.ensure_future(drive(_trigger(conns[api], tid, kind, poll_interval=0.5, deadline=time.time() + 60)))
            for api, kind, tid in tasks
        ]
        await asyncio.sleep(1.0)
        await asyncio.to_thread(emu.stop)
        down = time.monotonic()
        await asyncio.sleep(3.0)
        await asyncio.to_thread(emu.start)
        assert emu.port == port
        results = await asyncio.gather(*waits)
        return results, down - started

    results, stopped_after = asyncio.run(scenario())
    assert stopped_after < 2.5  # the outage really was mid-wait (tasks take 5 s)
    for (_, kind, tid), events in zip(tasks, results, strict=True):
        assert len(events) == 1
        assert events[0]["status"] == "success", events
        assert events[0]["task_status"]["tts_task_id"] == tid
        assert events[0]["task_status"]["kind"] == kind
    polls = emu.stats()["polls_by_task"]  # the emulator's counters survive its restart
    assert all(1 <= polls.get(tid, 0) <= 12 for _, _, tid in tasks), polls
    print(
        f"\nFIGURE emulator restart: {len(tasks)} waits (all four kinds) through a 3 s outage: "
        f"{sum(e[0]['status'] == 'success' for e in results)} success, 0 error; "
        f"{min(polls[t] for *_, t in tasks)}-{max(polls[t] for *_, t in tasks)} requests per wait"
    )


def test_a_vendor_that_forgets_the_task_is_a_not_found_failure_not_a_hang(
    fixed_port_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fresh emulator on the same port has no record of the task: the wait fails with not_found."""
    emu = fixed_port_emulator
    conn = define_conn(monkeypatch, "forgetful", emu, "revid_tts", **FAST_RETRY)
    tid = emu.create_task("revid_tts", "tts", delay=60)

    started = time.time()

    async def scenario() -> list[dict[str, Any]]:
        wait = asyncio.ensure_future(
            drive(_trigger(conn, tid, "tts", poll_interval=0.3, not_found_grace=1.0, deadline=time.time() + 60))
        )
        await asyncio.sleep(0.6)
        await asyncio.to_thread(emu.reset)  # the vendor lost every task
        return await asyncio.wait_for(wait, 10)

    (event,) = asyncio.run(scenario())
    after_grace = time.time() - (started + 1.0)
    assert after_grace <= 0.3 + 0.3  # the first poll after the grace period ends it
    print(f"\nFIGURE forgotten task: failed/not_found {after_grace:.2f} s after the 1 s grace period (poll 0.3 s)")
    assert event["status"] == "failed"
    assert event["task_status"]["failure"] == "not_found"
    assert event["task_status"]["vendor_status"] == "not_found"


def _deadline_while_down(emu: Emulator, conn: str, tid: str, outage: float) -> tuple[dict[str, Any] | None, float]:
    """Stop the emulator 0.5 s into a wait whose deadline is 2 s away; return the event and its lateness."""

    async def scenario() -> tuple[dict[str, Any] | None, float]:
        deadline = time.time() + 2.0
        wait = asyncio.ensure_future(drive(_trigger(conn, tid, "tts", poll_interval=0.5, deadline=deadline)))
        await asyncio.sleep(0.5)
        await asyncio.to_thread(emu.stop)
        try:
            # Give it the deadline plus 2 s; a wait still running then has overrun its deadline.
            (event,) = await asyncio.wait_for(asyncio.shield(wait), deadline + 2.0 - time.time())
            return event, time.time() - deadline
        except TimeoutError:
            late = time.time() - deadline
            wait.cancel()
            return None, late
        finally:
            await asyncio.sleep(max(0.0, outage - 2.5))
            await asyncio.to_thread(emu.start)

    return asyncio.run(scenario())


def test_deadline_holds_while_the_api_is_down(fixed_port_emulator: Emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """With short retries, a deadline passing during an outage gives ``timeout`` at the deadline."""
    emu = fixed_port_emulator
    conn = define_conn(monkeypatch, "deadline_fast", emu, "camb_ai", **FAST_RETRY)
    tid = emu.create_task("camb_ai", "tts", delay=float("inf"))
    event, late = _deadline_while_down(emu, conn, tid, outage=4.0)
    assert event is not None, f"no event {late:.1f} s after the deadline"
    assert event["status"] == "timeout", event
    assert -0.05 <= late < 2.0
    print(f"\nFIGURE deadline during an outage (short retries): timeout {late:.2f} s after the deadline")


def test_deadline_holds_while_the_api_is_down_with_default_retries(
    fixed_port_emulator: Emulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu = fixed_port_emulator
    conn = define_conn(monkeypatch, "deadline_default", emu, "camb_ai")  # the connection's default retry policy
    tid = emu.create_task("camb_ai", "tts", delay=float("inf"))
    event, late = _deadline_while_down(emu, conn, tid, outage=4.0)
    assert event is not None, f"no event {late:.1f} s after the deadline"
    assert event["status"] == "timeout", event
    assert late < 2.0
    print(f"\nFIGURE deadline during an outage (default retries): timeout {late:.2f} s after the deadline")


# ------------------------------------------------------------------------ worker killed mid-submit


class FileStateStore:
    """A task state store kept in a JSON file, so two processes (a killed try and its retry) share it.

    Airflow's real store lives in the metadata DB; the operator calls ``get``, ``set`` and ``delete``.
    """

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        return json.loads(self.path.read_text()) if self.path.exists() else {}

    def _write(self, data: dict[str, Any]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def get(self, key: str, default: Any = None) -> Any:
        return self._load().get(key, default)

    def set(self, key: str, value: Any, **_: Any) -> None:
        self._write({**self._load(), key: value})

    def delete(self, key: str) -> None:
        self._write({k: v for k, v in self._load().items() if k != key})


class FileVariables(FileStateStore):
    """``airflow.sdk.Variable``'s get/set/delete on the same kind of file: the Airflow 3.0-3.2 ledger."""

    def set(self, key: str, value: Any, description: str | None = None, **_: Any) -> None:
        super().set(key, value)


@dataclass(frozen=True)
class TI:
    """The part of a running task instance the operator reads; the same for both tries but the try number."""

    dag_id: str = "restarts"
    run_id: str = "manual__2026-12-02"
    task_id: str = "submit"
    map_index: int = -1
    try_number: int = 1


def ledger_context(ledger: str, store: str | Path, try_number: int = 1) -> dict[str, Any]:
    """A task's context with either ledger: the task state store (3.3+), or Variables (no store, as below 3.3)."""
    if ledger == "task_state_store":
        return {"task_state_store": FileStateStore(str(store)), "ti": TI(try_number=try_number)}
    from airflow_provider_tts import submissions

    variables = FileVariables(str(store))
    submissions.variable_api = lambda: variables  # type: ignore[assignment]  # no API server outside a task runner
    return {"ti": TI(try_number=try_number)}


WORKER = textwrap.dedent(
    """
    import json, sys
    from airflow_provider_tts.operators.tts import TtsSubmitOperator
    from tests.reliability.test_restarts import ledger_context
    spec = json.loads(sys.argv[1])
    op = TtsSubmitOperator(task_id="submit", tts_conn_id=spec["conn_id"], kind=spec["kind"], **spec["fields"],
                           wait=spec.get("wait", False), deferrable=False)
    print(op.execute(ledger_context(spec.get("ledger", "task_state_store"), spec["store"])), flush=True)
    """
)


def _worker(conn_id: str, conn: str, store: Path, **spec: Any) -> subprocess.Popen[str]:
    env = subprocess_env(**{f"AIRFLOW_CONN_{conn_id.upper()}": conn})
    body = json.dumps({"conn_id": conn_id, "store": str(store), **spec})
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, body],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _until(condition: Any, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if proc.poll() is not None:
            raise AssertionError(f"the worker exited early ({proc.returncode}): {proc.communicate()[1][-3000:]}")
        assert time.monotonic() < deadline, "timed out waiting for the worker"
        time.sleep(0.02)


def _kill(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=10)
    assert proc.returncode == -signal.SIGKILL


@pytest.mark.parametrize("ledger", ["task_state_store", "variable"])
def test_worker_killed_while_waiting_after_submit_does_not_pay_twice(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: str
) -> None:
    """The id is stored once the create returns: a worker killed after that re-attaches on retry."""
    conn_id = make_conn("camb_ai")
    conn = conn_json("camb_ai", emu.camb_base_url, None, retry_backoff=0.01, read_timeout=5)
    store = tmp_path / "store.json"
    emu.script_next("camb_ai", "tts", delay=4)
    proc = _worker(conn_id, conn, store, kind="tts", fields=FIELDS["camb_ai/tts"], wait=True, ledger=ledger)
    _until(lambda: store.exists() and emu.stats()["polls_total"] >= 1, proc)  # submitted, now waiting
    _kill(proc)
    (record,) = json.loads(store.read_text()).values()
    first = json.loads(record)["tts_task_id"] if isinstance(record, str) else record["tts_task_id"]
    again = TtsSubmitOperator(task_id="submit", tts_conn_id=conn_id, kind="tts", **FIELDS["camb_ai/tts"]).execute(
        ledger_context(ledger, store, try_number=2)
    )
    assert again == first
    assert emu.stats()["creates"] == {"camb_ai": {"tts": 1}}
    print(f"\nFIGURE [{ledger}] worker SIGKILLed while waiting after the create: the retry re-attached, 1 create")


@pytest.mark.parametrize("ledger", ["task_state_store", "variable"])
def test_worker_killed_mid_submit_does_not_pay_twice(
    emu: Any, make_conn: ConnFactory, tmp_path: Path, ledger: str
) -> None:
    """R5' (was BUG-1, a strict xfail): the intent is recorded before the call, so the retry knows.

    The retry cannot know whether the vendor created the task, so it neither pays again nor
    pretends: it fails without using up retries, quoting the reference id RevidAPI stored.
    """
    conn_id = make_conn("revid_tts")
    conn = conn_json("revid_tts", emu.revid_base_url, emu.revid_status_base_url, retry_backoff=0.01, read_timeout=30)
    store = tmp_path / "store.json"
    emu.set_faults(slow_seconds=2.0)
    emu.inject("slow", endpoint="create")  # the vendor takes 2 s to answer the create, then creates anyway
    proc = _worker(conn_id, conn, store, kind="tts", fields={"text": "Hello"}, ledger=ledger)
    # The vendor has it once the whole request arrived: counting it at its headers let a busy machine
    # kill the worker between urllib3's two sends (headers, then body), and nothing was created.
    _until(lambda: emu.stats()["slow_held_by_endpoint"].get("create", 0) == 1, proc)
    _kill(proc)
    deadline = time.monotonic() + 10
    while emu.stats()["tasks"] == 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert emu.stats()["creates"] == {"revid_tts": {"tts": 1}}  # the killed try's create did go through
    (created,) = emu.tasks()
    reference = SubmitIdentity.from_context({"ti": TI()}).client_reference()  # type: ignore[union-attr]
    assert created["body"]["id"] == reference  # findable vendor-side
    retry = TtsSubmitOperator(task_id="submit", tts_conn_id=conn_id, kind="tts", text="Hello")
    with pytest.raises(TtsSubmitUncertainError) as info:
        retry.execute(ledger_context(ledger, store, try_number=2))
    assert reference in str(info.value)
    assert emu.stats()["creates"] == {"revid_tts": {"tts": 1}}, "the retry paid for a second task"
    assert emu.stats()["requests_by_endpoint"]["create"] == 1
    print(f"\nFIGURE [{ledger}] worker SIGKILLed mid-create: 1 create in all; the retry failed with {info.value}")
