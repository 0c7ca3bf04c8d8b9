"""Test-wide setup: a private AIRFLOW_HOME, so tests never touch ~/airflow or a real deployment."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_HOME = Path(tempfile.gettempdir()) / f"airflow-provider-tts-tests-{os.getuid()}"
_HOME.mkdir(parents=True, exist_ok=True)
os.environ.setdefault("AIRFLOW_HOME", str(_HOME))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
