"""Hooks of one connection in one process share its transport: one pooled connection to the vendor.

A hook per task is Airflow's pattern; where one process runs many of them (``airflow dags test``, a
PythonOperator's loop, the benchmarks' warm workers), a transport per hook opened a new connection
for every file. Counted by the emulator over real loopback sockets: how many TCP connections it
accepted.
"""

from __future__ import annotations

import os
from typing import Any

from airflow_provider_tts.hooks.tts import TtsHook
from airflow_provider_tts.transport import Pacer, shared
from tests.conftest import FIELDS, ConnFactory

KIND = "text-to-sound"


def _store_once(hook: TtsHook, task_id: str) -> int:
    status = hook.get_task_status(task_id, KIND)
    with hook.open_audio(status) as audio:
        return sum(len(chunk) for chunk in audio.iter_chunks(65536))


def _finished_task(emu: Any, conn_id: str) -> str:
    task_id = TtsHook(conn_id).submit(KIND, **FIELDS[f"camb_ai/{KIND}"])
    emu.end_pending(task_id)
    return task_id


def test_hooks_of_one_connection_reuse_one_vendor_connection(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    task_id = _finished_task(emu, conn_id)
    before = emu.stats()["connections"]
    sizes = [_store_once(TtsHook(conn_id), task_id) for _ in range(5)]
    assert len(set(sizes)) == 1
    assert sizes[0] > 1000
    assert emu.stats()["connections"] == before  # the submitting hook's connection, kept
    # a hook's close leaves the connection to the others
    hook = TtsHook(conn_id)
    _store_once(hook, task_id)
    hook.close()
    _store_once(TtsHook(conn_id), task_id)
    assert emu.stats()["connections"] == before


def test_another_connection_or_an_edited_one_gets_its_own(emu: Any, make_conn: ConnFactory) -> None:
    first = make_conn("camb_ai")
    task_id = _finished_task(emu, first)
    before = emu.stats()["connections"]
    _store_once(TtsHook(make_conn("camb_ai")), task_id)  # another connection id, same account
    _store_once(TtsHook(make_conn("camb_ai", read_timeout=7)), task_id)  # other settings
    assert emu.stats()["connections"] == before + 2
    assert TtsHook(first)._sync is TtsHook(first)._sync
    assert TtsHook(first)._sync is not TtsHook(make_conn("camb_ai", read_timeout=7))._sync


def test_a_hook_with_a_pacer_of_its_own_has_its_own_connections(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    task_id = _finished_task(emu, conn_id)
    before = emu.stats()["connections"]
    hook = TtsHook(conn_id)
    hook.pacer = Pacer()
    _store_once(hook, task_id)
    assert not hook._sync.shared
    assert hook._sync is not TtsHook(conn_id)._sync
    assert emu.stats()["connections"] == before + 1
    hook.close()  # its own: closed
    adapter: Any = hook._sync.session.adapters["http://"]
    assert not adapter.poolmanager.pools


def test_a_forked_child_does_not_use_its_parents_sockets(emu: Any, make_conn: ConnFactory) -> None:
    conn_id = make_conn("camb_ai")
    task_id = _finished_task(emu, conn_id)
    assert shared._SHARED  # the parent's, with a pooled connection
    before = emu.stats()["connections"]
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: a task process forked by a worker
        try:
            inherited = len(shared._SHARED)
            stored = _store_once(TtsHook(conn_id), task_id)
            os.write(write, f"{inherited} {stored}".encode())
        finally:
            os._exit(0)
    os.close(write)
    answer = os.read(read, 100).decode()
    os.waitpid(pid, 0)
    os.close(read)
    in_child, stored_in_child = answer.split()
    assert in_child == "0"
    assert int(stored_in_child) > 1000
    assert emu.stats()["connections"] == before + 1  # the child's own
    _store_once(TtsHook(conn_id), task_id)  # and the parent's still works
    assert emu.stats()["connections"] == before + 1


def test_connections_idle_for_a_minute_are_not_reused(emu: Any, make_conn: ConnFactory) -> None:
    # As the async client: a create sent on a connection the vendor is just closing would be
    # uncertain (maybe processed), so a long-idle pool is closed before the next hook uses it.
    conn_id = make_conn("camb_ai")
    task_id = _finished_task(emu, conn_id)
    before = emu.stats()["connections"]
    _store_once(TtsHook(conn_id), task_id)
    assert emu.stats()["connections"] == before
    TtsHook(conn_id)._sync.last_used -= shared.IDLE_CLOSE_SECONDS + 1
    _store_once(TtsHook(conn_id), task_id)
    assert emu.stats()["connections"] == before + 1
