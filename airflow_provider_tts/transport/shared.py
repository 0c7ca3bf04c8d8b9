"""The process's sync transports, one per connection, shared by every hook of it.

Where one process runs many tasks or hooks of a connection (``airflow dags test``, a loop in a
PythonOperator, the batch's threads), a transport per hook opened a new connection to the vendor
for each: a TCP handshake (on a real vendor a TLS one too), dearer than a small file's download.
"""

from __future__ import annotations

import os
import threading
import time
from collections import OrderedDict

from airflow_provider_tts.connection import ConnectionSettings
from airflow_provider_tts.transport.retry import Pacer
from airflow_provider_tts.transport.sync import SyncTransport

#: The process's transports, one per connection's settings (see :func:`shared_transport`); beyond
#: ``MAX_SHARED_TRANSPORTS`` the least recently used is dropped (closed when its last hook is gone).
_SHARED: OrderedDict[ConnectionSettings, SyncTransport] = OrderedDict()
_SHARED_LOCK = threading.Lock()
MAX_SHARED_TRANSPORTS = 64
#: Seconds a shared transport's pooled connections are kept unused (the async client's ``IDLE_TIMEOUT``).
IDLE_CLOSE_SECONDS = 60.0


def shared_transport(settings: ConnectionSettings, pacer: Pacer) -> SyncTransport:
    """The transport every hook of ``settings``' connection in this process uses, paced by ``pacer``.

    Keyed by the settings' whole value (key, origins, timeouts, retry and storage policy): an edited
    connection gets its own. ``pacer`` is the connection's in ``PACERS``. Sessions are thread-safe
    for this use (the batch shares one across its store threads). A forked child starts without
    these. Pooled connections idle for :data:`IDLE_CLOSE_SECONDS` are closed first, as the async
    client's are: a create sent on one the vendor is just closing could not be told apart from one
    it processed.
    """
    with _SHARED_LOCK:
        transport = _SHARED.get(settings)
        if transport is not None and time.monotonic() - transport.last_used > IDLE_CLOSE_SECONDS:
            transport.close()  # the sessions stay usable: their next requests connect afresh
        if transport is None:
            transport = SyncTransport(settings)
            transport.shared = True
            _SHARED[settings] = transport
            while len(_SHARED) > MAX_SHARED_TRANSPORTS:
                _SHARED.popitem(last=False)
        _SHARED.move_to_end(settings)
        transport.pacer = pacer  # the registry's current one (it may have forgotten an idle one)
    return transport


def _forget_shared_transports() -> None:
    global _SHARED_LOCK
    _SHARED_LOCK = threading.Lock()  # another thread of the parent may have held it at the fork
    _SHARED.clear()


os.register_at_fork(after_in_child=_forget_shared_transports)
