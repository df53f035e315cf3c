"""Samples a backend in a background thread and keeps what the API and metrics read.

Reading NVML or /proc blocks, so it never runs on the event loop: a daemon thread calls
`backend.sample()` every `interval` seconds. For each device it keeps the last sample and
cumulative counters: busy seconds (utilisation integrated over the time between samples, so a
scrape every 30 s still accounts for every interval in between) and sampled seconds (the time
those integrals cover; their ratio is the mean utilisation). Readers take a consistent copy.

A gap counts as unmeasured. When sampling fails (NVML error, a stalled thread) the next good
sample is more than `MAX_GAP_INTERVALS` intervals after the previous one: nothing is integrated
across it, so a 30-minute outage is neither 30 minutes measured nor 30 minutes idle (idle reclaim
and accounting see no evidence), and counting starts again from that sample.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from .devices import Backend, Sample

log = logging.getLogger(__name__)

# Integrate between two samples at most this many intervals apart (one missed sample is
# bridged by the trapezoid; longer gaps are not measurements).
MAX_GAP_INTERVALS = 3.0


@dataclass(frozen=True)
class DeviceState:
    last: Sample
    busy_seconds: float = 0.0
    sampled_seconds: float = 0.0


class Sampler:
    def __init__(self, backend: Backend, interval: float = 5.0, clock: Callable[[], float] = time.monotonic):
        self.backend = backend
        self.interval = interval
        self._clock = clock
        self._lock = threading.Lock()
        self._states: dict[str, DeviceState] = {}
        self._last_at: float | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def step(self) -> None:
        """Take one sample of every device and fold it into the counters."""
        samples = self.backend.sample()
        now = self._clock()
        elapsed = 0.0 if self._last_at is None else max(0.0, now - self._last_at)
        if elapsed > MAX_GAP_INTERVALS * self.interval:
            log.warning("no sample of %s for %.0f s; that gap counts as unmeasured", self.backend.name, elapsed)
            elapsed = 0.0
        with self._lock:
            for sample in samples:
                state = self._states.get(sample.uuid)
                if state is None:
                    self._states[sample.uuid] = DeviceState(last=sample)
                    continue
                if sample.utilization_ratio is None or elapsed == 0.0:
                    # No reading: keep the counters, do not invent busy time.
                    self._states[sample.uuid] = replace(state, last=sample)
                    continue
                # Trapezoid between the previous reading and this one where both exist.
                previous = state.last.utilization_ratio
                ratio = sample.utilization_ratio if previous is None else (previous + sample.utilization_ratio) / 2
                self._states[sample.uuid] = DeviceState(
                    last=sample,
                    busy_seconds=state.busy_seconds + ratio * elapsed,
                    sampled_seconds=state.sampled_seconds + elapsed,
                )
            self._last_at = now

    def states(self) -> dict[str, DeviceState]:
        with self._lock:
            return dict(self._states)

    def start(self) -> None:
        if self._thread is not None:
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name="gpu-monitor-sampler", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.step()
            except Exception:  # noqa: BLE001 - a bad reading must not end sampling
                log.exception("sampling %s failed; trying again in %.0f s", self.backend.name, self.interval)
            self._stop.wait(self.interval)


class CounterDeltas:
    """How much each device's cumulative counters grew since the previous `take()`: (busy
    seconds, sampled seconds). The first call for a device only sets its starting point (0, 0).
    Each periodic reader (usage writes, idle checks) keeps its own, so they never disturb each
    other.

    Counters that went down belong to a new sampler (its node's agent restarted and counts from
    0 again): all they hold grew since then."""

    def __init__(self) -> None:
        self._last: dict[str, tuple[float, float]] = {}

    def take(self, states: dict[str, DeviceState]) -> dict[str, tuple[float, float]]:
        grown = {}
        for uuid, state in states.items():
            busy, sampled = state.busy_seconds, state.sampled_seconds
            busy0, sampled0 = self._last.get(uuid, (busy, sampled))
            if busy < busy0 or sampled < sampled0:  # a restarted agent's counters
                busy0 = sampled0 = 0.0
            self._last[uuid] = (busy, sampled)
            grown[uuid] = (busy - busy0, sampled - sampled0)
        return grown
