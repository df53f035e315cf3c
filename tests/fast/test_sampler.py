"""The sampler's counters: busy seconds integrate utilisation over time; gaps invent nothing."""

import threading

import pytest

from gpu_monitor.devices import Sample
from gpu_monitor.sampler import Sampler


class ScriptedBackend:
    """A backend that returns the utilisation readings it was given, one list per call."""

    name = "scripted"

    def __init__(self, readings):
        self.readings = list(readings)
        self.calls = 0
        self.called = threading.Event()

    def discover(self):
        return []

    def sample(self):
        ratios = self.readings[min(self.calls, len(self.readings) - 1)]
        self.calls += 1
        self.called.set()
        if isinstance(ratios, Exception):
            raise ratios
        return [Sample(uuid=f"GPU-{i}", timestamp=0.0, utilization_ratio=r) for i, r in enumerate(ratios)]

    def close(self):
        pass


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


CASES = {
    "steady half load": ([[0.5], [0.5], [0.5]], [0, 10, 20], 10.0, 20.0),
    "ramp from idle to full: trapezoid": ([[0.0], [1.0]], [0, 10], 5.0, 10.0),
    "missing reading keeps counters": ([[1.0], [None], [1.0]], [0, 10, 20], 10.0, 10.0),
    "first sample only starts the clock": ([[1.0]], [0], 0.0, 0.0),
}


@pytest.mark.parametrize("readings, times, busy, sampled", CASES.values(), ids=CASES.keys())
def test_busy_seconds(readings, times, busy, sampled):
    clock = Clock()
    sampler = Sampler(ScriptedBackend(readings), clock=clock)
    for t in times:
        clock.now = t
        sampler.step()
    state = sampler.states()["GPU-0"]
    assert state.busy_seconds == pytest.approx(busy)
    assert state.sampled_seconds == pytest.approx(sampled)


def test_each_device_counts_on_its_own():
    clock = Clock()
    sampler = Sampler(ScriptedBackend([[1.0, 0.0], [1.0, 0.0]]), clock=clock)
    sampler.step()
    clock.now = 4
    sampler.step()
    states = sampler.states()
    assert (states["GPU-0"].busy_seconds, states["GPU-1"].busy_seconds) == (4.0, 0.0)


def test_background_thread_survives_a_failing_sample_and_stops():
    backend = ScriptedBackend([RuntimeError("NVML hiccup"), [0.25]])
    sampler = Sampler(backend, interval=0.01)
    sampler.start()
    try:
        for _ in range(200):
            if backend.calls >= 3:
                break
            backend.called.wait(1)
            backend.called.clear()
    finally:
        sampler.stop()
    assert backend.calls >= 3
    assert sampler.states()["GPU-0"].last.utilization_ratio == 0.25
