"""The OS processes of a local Airflow deployment: one record per process, and the process-tree helpers.

Split from :mod:`tools.local_airflow` (which re-exports these names): everything here is about
processes and ports, nothing about Airflow's API.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import IO

import psutil


class _Proc:
    """One OS process of one component."""

    def __init__(self, component: str, index: int, popen: subprocess.Popen[bytes], log_path: Path, fh: IO[bytes]):
        self.component = component
        self.index = index
        self.popen = popen
        self.log_path = log_path
        self.fh = fh
        self.started_at = datetime.now(UTC)
        self.expected_alive = True

    def running(self) -> bool:
        return self.popen.poll() is None


def _cache_dir() -> Path:
    """Per-user cache shared by all harness instances (migrated DB template, bytecode); no secrets in it."""
    path = Path(tempfile.gettempdir()) / f"local-airflow-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    return path


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _airflow_cmd() -> list[str]:
    exe = Path(sys.executable).parent / "airflow"
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "airflow"]


def _parent_death_signal() -> Callable[[], None] | None:
    """A preexec_fn asking Linux to SIGTERM the child when the spawning thread dies (main thread only)."""
    if not sys.platform.startswith("linux") or threading.current_thread() is not threading.main_thread():
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def preexec() -> None:
        prctl(pr_set_pdeathsig, sigterm)

    return preexec


def _tree(proc: _Proc) -> list[psutil.Process]:
    try:
        root = psutil.Process(proc.popen.pid)
        return [root, *root.children(recursive=True)]
    except psutil.Error:
        return []


def _alive(p: psutil.Process) -> bool:
    try:
        return bool(p.is_running()) and p.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _name(p: psutil.Process) -> str:
    try:
        return " ".join(p.cmdline())[:80] or str(p.name())
    except psutil.Error:
        return "?"


def _signal_all(procs: Iterable[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.Error, OSError):
            p.send_signal(sig)
