"""An auth manager for the Audio view's tests: Airflow's SimpleAuthManager, minus one DAG for one user.

The SimpleAuthManager lets every user with a role read every DAG. To show that the Audio view asks
the auth manager about *the DAG of the run* (not just "is someone logged in"), the user ``outsider``
(role viewer) may read every DAG but those whose id starts with ``tts_audio``. Configured by
``tests/slow/test_audio_view.py`` as ``[core] auth_manager``.
"""

from __future__ import annotations

from typing import Any

from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

HIDDEN_PREFIX = "tts_audio"
OUTSIDER = "outsider"


class DagScopedAuthManager(SimpleAuthManager):
    """SimpleAuthManager where ``outsider`` cannot read the ``tts_audio*`` DAGs."""

    def is_authorized_dag(self, *, method: Any, user: Any, access_entity: Any = None, details: Any = None) -> bool:
        dag_id = getattr(details, "id", None)
        if user.get_name() == OUTSIDER and dag_id and dag_id.startswith(HIDDEN_PREFIX):
            return False
        return bool(super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details))
