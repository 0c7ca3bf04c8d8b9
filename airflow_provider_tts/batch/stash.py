"""Where a batch keeps the vendor task ids it paid for but could not write into the request cache.

A paid task id must reach the next try, or that try would pay again: when the request cache will
not take it, :class:`IdStash` keeps it in the task instance's own ledger (the task state store on
Airflow 3.3+, an Airflow Variable below; none outside a task runner, where the ids are only
logged), and the next try writes it into the request cache before anything else.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from airflow_provider_tts.compat import has_supervisor
from airflow_provider_tts.submissions import variable_api

if TYPE_CHECKING:
    from airflow.sdk import Context

    from airflow_provider_tts.cache import RequestCache
    from airflow_provider_tts.submissions import SubmitIdentity


class IdStash:
    """Paid task ids the request cache would not take, kept in the task's ledger until the next try.

    The task state store on Airflow 3.3+, an Airflow Variable per task instance below (the ledgers
    of :mod:`airflow_provider_tts.submissions`). The next try writes them into the request cache
    first, then forgets them.
    """

    KEY = "tts_batch_unsaved"

    def __init__(self, context: Context, identity: SubmitIdentity | None) -> None:
        self.store = context.get("task_state_store")
        # Outside a task runner there is no supervisor to reach Variables through: no stash then.
        usable = self.store is None and identity is not None and has_supervisor()
        self.variables = variable_api() if usable else None
        self.key = self.KEY if self.store is not None else f"{self.KEY}.{identity.digest()[:40] if identity else ''}"

    @property
    def where(self) -> str:
        return (
            f"the task state store (key {self.key!r})" if self.store is not None else f"Airflow Variable {self.key!r}"
        )

    def save(self, ids: Mapping[str, str]) -> str:
        value = json.dumps(dict(ids), sort_keys=True)
        if self.store is not None:
            self.store.set(self.key, value)
        elif self.variables is not None:
            self.variables.set(self.key, value, description="airflow-provider-tts: paid task ids awaiting the next try")
        else:
            return "no ledger (outside a task): the ids are in the log above"
        return self.where

    def restore(self, request_cache: RequestCache) -> None:
        """Write stashed ids into the cache (as submitted), then forget them."""
        if self.store is None and self.variables is None:
            return
        raw: Any = self.store.get(self.key) if self.store is not None else self.variables.get(self.key, None)  # type: ignore[union-attr]
        if raw is None:
            return
        ids: Any = json.loads(raw) if isinstance(raw, str) else raw
        for fingerprint, task_id in dict(ids).items():
            request_cache.submitted(str(fingerprint), str(task_id))
        if self.store is not None:
            self.store.delete(self.key)
        else:
            self.variables.delete(self.key)  # type: ignore[union-attr]
