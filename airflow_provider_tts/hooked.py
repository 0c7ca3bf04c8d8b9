"""The ``hook`` every operator and sensor of the provider calls its vendor through, declared once.

:class:`TtsHookMixin` gives a task its :class:`~airflow_provider_tts.hooks.tts.TtsHook`, made on
first use from the task's ``tts_conn_id`` and ``request_retry``. No operator is defined here.
"""

from __future__ import annotations

from functools import cached_property
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from airflow_provider_tts.hooks.tts import TtsHook


class TtsHookMixin:
    """``self.hook``: the task's :class:`~airflow_provider_tts.hooks.tts.TtsHook`, made on first use.

    A ``cached_property``: one hook (one HTTP session) for the rest of the task's run, kept in the
    instance's ``__dict__`` and never in a template field, so it is not rendered or serialized with
    the DAG. The hook module is imported then, not when a DAG file imports the operator. A class
    that needs more on its hook overrides :meth:`_make_hook`.
    """

    if TYPE_CHECKING:
        tts_conn_id: str
        request_retry: dict[str, Any] | None

    @cached_property
    def hook(self) -> TtsHook:
        return self._make_hook()

    def _make_hook(self) -> TtsHook:
        from airflow_provider_tts.hooks.tts import TtsHook

        return TtsHook(tts_conn_id=self.tts_conn_id, request_retry=self.request_retry)

    def _pool_for_threads(self, threads: int) -> None:
        """Size the hook's HTTP connection pool for ``threads`` threads calling it at once.

        requests' default pool keeps 10 connections per host and drops the rest after use, so more
        threads than that would open (and close) a connection per call.
        """
        from requests.adapters import HTTPAdapter

        session = self.hook.get_conn()
        adapter = HTTPAdapter(pool_connections=4, pool_maxsize=threads)
        session.mount("http://", adapter)
        session.mount("https://", adapter)
