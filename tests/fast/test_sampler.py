"""The sampler's counters: busy seconds integrate utilisation over time; gaps invent nothing
(a missing reading, and a stretch of failing samples: test_a_sampling_outage_...)."""

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


class OutageBackend(ScriptedBackend):
    """Full load, but `sample()` raises while `down` is set (a driver that stops answering)."""

    def __init__(self):
        super().__init__([[1.0]])
        self.down = False

    def sample(self):
        if self.down:
            self.calls += 1
            raise RuntimeError("NVML: GPU is lost")
        return super().sample()


def test_a_sampling_outage_counts_as_unmeasured_not_as_measured_time():
    """Samples every 5 s; the backend raises for 30 minutes in the middle. The outage must add
    neither sampled nor busy seconds: only the 10 s before it and the 10 s after it count."""
    clock = Clock()
    backend = OutageBackend()
    sampler = Sampler(backend, interval=5.0, clock=clock)

    def tick():  # what the sampling thread does each interval
        try:
            sampler.step()
        except RuntimeError:
            pass
        clock.now += 5.0

    for _ in range(3):  # t = 0, 5, 10: 10 s measured
        tick()
    backend.down = True
    while clock.now < 10 + 1800:
        tick()
    backend.down = False
    for _ in range(3):  # the first sample after the outage restarts the count; then 10 s
        tick()
    state = sampler.states()["GPU-0"]
    assert state.sampled_seconds == pytest.approx(20.0)
    assert state.busy_seconds == pytest.approx(20.0)


def test_one_missed_sample_is_bridged():
    """A single failure (10 s between good samples, within the cap) is still measured."""
    clock = Clock()
    sampler = Sampler(ScriptedBackend([[0.5]]), interval=5.0, clock=clock)
    sampler.step()
    clock.now = 10.0
    sampler.step()
    assert sampler.states()["GPU-0"].sampled_seconds == pytest.approx(10.0)


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
