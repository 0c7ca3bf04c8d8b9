"""Measuring helpers of ``benchmarks/batch_vs_mapped.py``: CPU and RSS of process trees, create faults.

Kept apart from the script so it reads as the experiment: what is run, in which order, what is compared.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator, Sequence

import psutil

from airflow_provider_tts.emulator import Emulator

#: Faults a create (or ``/tts-stream``) call can get that prove the vendor did not process it, so the
#: client may resend it and still pay once. Any other fault on a create (a 500, a dropped connection)
#: leaves the outcome unknown and, by design, ends that item without a second create (RELIABILITY R9);
#: a stream cut mid-body was charged and is not resent (R12): drawing those at random would measure the
#: rate, not the forms or the recovery.
CREATE_FAULT_KINDS: tuple[str, ...] = ("429", "429_no_retry_after", "429_http_date", "503")


def processes(pids: Sequence[int]) -> Iterator[psutil.Process]:
    """These processes and all their live descendants (a vanished one is skipped)."""
    for pid in pids:
        try:
            root = psutil.Process(pid)
            yield root
            yield from root.children(recursive=True)
        except psutil.Error:
            continue


def tree_cpu(pids: Sequence[int]) -> float:
    """CPU seconds of these processes and all their live descendants, reaped children included.

    A reaped child's time reaches its parent's ``children_*`` only once the parent waited for it,
    which every component here does for its task processes.
    """
    total = 0.0
    for proc in processes(pids):
        try:
            t = proc.cpu_times()
        except psutil.Error:
            continue
        total += t.user + t.system + t.children_user + t.children_system
    return total


class RssSampler(threading.Thread):
    """Once a second: the RSS of the given trees summed, and the largest single process in them.

    The sum is what the workers' hosts must hold (Celery pools included); the largest process is,
    during a batch, the one task process holding the whole batch, the figure a memory ceiling is about.
    """

    def __init__(self, pids: Sequence[int], interval: float = 1.0) -> None:
        super().__init__(daemon=True)
        self.pids = list(pids)
        self.interval = interval
        self.peak_total = 0
        self.peak_process = 0
        self.stop = threading.Event()

    def sample(self) -> None:
        total = 0
        for proc in processes(self.pids):
            try:
                rss = proc.memory_info().rss
            except psutil.Error:
                continue
            total += rss
            self.peak_process = max(self.peak_process, rss)
        self.peak_total = max(self.peak_total, total)

    def run(self) -> None:
        self.sample()
        while not self.stop.wait(self.interval):
            self.sample()


class CreateFaults(threading.Thread):
    """Answer about ``rate`` of the emulator's ``endpoint`` calls with a fault from :data:`CREATE_FAULT_KINDS`.

    ``endpoint`` is ``create`` (the task APIs) or ``stream`` (``/tts-stream``): the calls that pay.
    The emulator's random faults share one list of kinds across endpoints, so they serve status,
    result and storage; paying calls are faulted here instead, by keeping one injection armed after a
    random (geometric) number of clean creates. Watching the counters every ``interval`` seconds
    can only lengthen a gap, so the achieved rate is at most ``rate``: ``injected`` says what it was.
    """

    def __init__(self, emu: Emulator, rate: float, seed: int, interval: float = 0.05, endpoint: str = "create") -> None:
        super().__init__(daemon=True)
        self.emu = emu
        self.endpoint = endpoint
        self.rate = rate
        self.interval = interval
        self.rng = random.Random(seed)
        self.injected = 0
        self.stop = threading.Event()

    def _creates(self) -> int:
        return int(self.emu.stats()["requests_by_endpoint"].get(self.endpoint, 0))

    def _gap(self) -> int:
        """Clean creates before the next fault: geometric with mean ``1 / rate - 1``."""
        gap = 0
        while self.rng.random() >= self.rate:
            gap += 1
        return gap

    def run(self) -> None:
        if self.rate <= 0:
            return
        armed_at: int | None = None  # create count when the armed injection was set
        next_at = self._creates() + self._gap()
        while not self.stop.wait(self.interval):
            creates = self._creates()
            if armed_at is not None:
                if creates > armed_at:  # the armed fault answered a create
                    armed_at = None
                    next_at = creates + self._gap()
                continue
            if creates >= next_at:
                self.emu.inject(self.rng.choice(CREATE_FAULT_KINDS), count=1, endpoint=self.endpoint)
                self.injected += 1
                armed_at = creates
