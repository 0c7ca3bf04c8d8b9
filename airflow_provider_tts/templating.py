"""Whether an operator argument is known when the DAG is parsed, or only once the task renders it.

Operators check literal arguments in ``__init__``, so a mistake fails when the DAG is parsed;
an argument that Airflow renders later (a Jinja template string, an ``XComArg``) is checked after
rendering, before anything is paid for. These two predicates draw that line; neither imports
Airflow.
"""

from __future__ import annotations

from typing import Any


def templated(value: Any) -> bool:
    """Not a literal string: a Jinja template string, or any value that is not a string at all."""
    return not isinstance(value, str) or "{{" in value or "{%" in value


def rendered_later(value: Any) -> bool:
    """A template string or an XComArg: its value is only known when the task runs."""
    if isinstance(value, str):
        return "{{" in value or "{%" in value
    return not isinstance(value, (int, float, bool, dict, list, type(None)))
