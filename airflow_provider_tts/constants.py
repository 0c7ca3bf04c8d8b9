"""The provider's fixed names that a DAG parse checks against, in a module that imports nothing.

An operator refuses an unknown ``kind`` and fills in a vendor's default connection id when it is
built; that needs these names, not the modules that own the rest of those facts: the status model
of :mod:`airflow_provider_tts.status` (a pydantic model and its serializers) and the connection
parsing of :mod:`airflow_provider_tts.connection` (its settings dataclasses), needed once a task
runs. Both modules re-export their names from here.
"""

from __future__ import annotations

from typing import Literal

Kind = Literal["tts", "text-to-sound", "srt-to-speech"]

KINDS: tuple[Kind, ...] = ("tts", "text-to-sound", "srt-to-speech")

#: Connection type of each vendor, and the default connection id DAG authors get.
DEFAULT_CONN_IDS = {"camb_ai": "camb_ai_default", "revid_tts": "revid_tts_default"}
