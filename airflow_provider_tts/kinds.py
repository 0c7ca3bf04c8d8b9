"""The kinds of remote task, in a module of their own so a DAG parse can check one cheaply.

The generic operators refuse an unknown ``kind`` when they are built; that needs this tuple, not
the status model of :mod:`airflow_provider_tts.status` (a pydantic model, and its serializers),
which is only needed once a task runs. :mod:`~airflow_provider_tts.status` re-exports both names.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["tts", "text-to-sound", "srt-to-speech"]

KINDS: tuple[Kind, ...] = ("tts", "text-to-sound", "srt-to-speech")
