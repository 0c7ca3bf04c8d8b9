"""The submit procedure's names under the import path the operators and the sensor use.

The procedure itself (validate, record the intent, pay once, re-attach on a retry) is
:mod:`airflow_provider_tts.submitting`, which imports no operator; :func:`from_submitted`, which
reads a downstream task's ids from its upstream ``TtsSubmitOperator``, lives beside that operator
in :mod:`airflow_provider_tts.operators.submit`.
"""

from __future__ import annotations

from airflow_provider_tts.operators.submit import from_submitted
from airflow_provider_tts.submitting import (
    UNCERTAIN_SUBMIT_POLICIES,
    SubmitOnce,
    UncertainSubmitPolicy,
    check_uncertain_policy,
    create_field_name,
    create_fields,
)

__all__ = [
    "UNCERTAIN_SUBMIT_POLICIES",
    "SubmitOnce",
    "UncertainSubmitPolicy",
    "check_uncertain_policy",
    "create_field_name",
    "create_fields",
    "from_submitted",
]
