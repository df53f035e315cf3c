"""Prometheus metrics for the monitor, built from current state each time they are scraped.

`MonitorCollector` owns no metric objects: on every scrape it calls the three callables it was
given (devices, sampler states, allocations) and turns what they return into metric families.
So a released allocation, or a device that went away, simply has no series at the next scrape;
nothing has to remember to remove a label set (prometheus/client_python's custom-collector
model). Values are in base units (ratio, bytes, seconds, watts, degrees Celsius); per-device
series carry only `uuid` and `index`, and `gpuhub_gpu_info` carries the rest once, to be joined
on `uuid`. A field the last sample could not read has no series for that device rather than a
fake zero.

The callables run on the scraping thread: they must be quick, in-memory reads (the sampler's
`states()` is; allocations should come from a cached copy, not a database round trip), and the
HTTP layer should call `render()` off the event loop.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .allocator import Allocation
from .devices import Device, Sample
from .sampler import DeviceState

DEVICE_LABELS = ["uuid", "index"]
INFO_LABELS = ["uuid", "index", "kind", "name", "parent_uuid"]

# (metric name, help, unit, how to read the value from a sample); None means "no series".
SAMPLE_GAUGES: list[tuple[str, str, str, Callable[[Sample], float | None]]] = [
    ("gpuhub_gpu_utilization_ratio", "Device utilisation in the last sample, 0..1.", "ratio",
     lambda s: s.utilization_ratio),
    ("gpuhub_gpu_memory_used_bytes", "Device memory in use in the last sample.", "bytes",
     lambda s: s.memory_used_bytes),
    ("gpuhub_gpu_temperature_celsius", "Device temperature in the last sample.", "celsius",
     lambda s: s.temperature_celsius),
    ("gpuhub_gpu_power_watts", "Device power draw in the last sample.", "watts",
     lambda s: s.power_watts),
]


class MonitorCollector(Collector):
    """Reads devices, sampler states and allocations at scrape time and yields their metrics."""

    def __init__(
        self,
        devices: Callable[[], Iterable[Device]],
        states: Callable[[], dict[str, DeviceState]],
        allocations: Callable[[], Iterable[Allocation]],
    ) -> None:
        self._devices = devices
        self._states = states
        self._allocations = allocations

    def collect(self) -> Iterator[Metric]:
        devices = sorted(self._devices(), key=lambda d: (d.index, d.uuid))
        states = self._states()
        allocations = list(self._allocations())

        info = GaugeMetricFamily("gpuhub_gpu_info", "Device identity; always 1. Join on uuid.",
                                 labels=INFO_LABELS)
        memory_total = GaugeMetricFamily("gpuhub_gpu_memory_total_bytes", "Device memory in all.",
                                         labels=DEVICE_LABELS, unit="bytes")
        sample_gauges = [(GaugeMetricFamily(name, doc, labels=DEVICE_LABELS, unit=unit), read)
                         for name, doc, unit, read in SAMPLE_GAUGES]
        sample_time = GaugeMetricFamily(
            "gpuhub_gpu_last_sample_timestamp_seconds",
            "When the last sample of the device was taken, in seconds since the epoch.",
            labels=DEVICE_LABELS, unit="seconds")
        sample_errors = GaugeMetricFamily(
            "gpuhub_gpu_sample_errors", "Fields the last sample of the device could not read.",
            labels=DEVICE_LABELS)
        busy = CounterMetricFamily(
            "gpuhub_gpu_busy_seconds",
            "Utilisation integrated over time since the monitor started (busy / sampled = mean).",
            labels=DEVICE_LABELS, unit="seconds")
        sampled = CounterMetricFamily(
            "gpuhub_gpu_sampled_seconds", "Time covered by gpuhub_gpu_busy_seconds_total.",
            labels=DEVICE_LABELS, unit="seconds")
        allocated = GaugeMetricFamily(
            "gpuhub_gpu_allocated",
            "Allocations holding the device: 0 free, 1 held, more on a shared device.",
            labels=DEVICE_LABELS)
        per_user = GaugeMetricFamily(
            "gpuhub_user_allocated_devices", "Devices a user holds, over all their servers.",
            labels=["user"])

        holders: Counter[str] = Counter()
        held_by_user: Counter[str] = Counter()
        for allocation in allocations:
            holders.update(set(allocation.device_uuids))
            held_by_user[allocation.user] += len(allocation.device_uuids)

        for device in devices:
            labels = [device.uuid, str(device.index)]
            info.add_metric([device.uuid, str(device.index), device.kind, device.name,
                             device.parent_uuid or ""], 1)
            allocated.add_metric(labels, holders[device.uuid])
            if device.memory_total_bytes is not None:
                memory_total.add_metric(labels, device.memory_total_bytes)
            state = states.get(device.uuid)
            if state is None:
                continue  # not sampled yet: no readings to report
            for family, read in sample_gauges:
                value = read(state.last)
                if value is not None:
                    family.add_metric(labels, value)
            sample_time.add_metric(labels, state.last.timestamp)
            sample_errors.add_metric(labels, len(state.last.errors))
            busy.add_metric(labels, state.busy_seconds)
            sampled.add_metric(labels, state.sampled_seconds)

        for user, count in sorted(held_by_user.items()):
            per_user.add_metric([user], count)

        yield info
        yield allocated
        yield memory_total
        for family, _ in sample_gauges:
            yield family
        yield sample_time
        yield sample_errors
        yield busy
        yield sampled
        yield per_user


def render(collector: Collector) -> bytes:
    """The Prometheus text exposition of one collector, for the HTTP layer to serve.

    A private registry keeps the process-wide default one (and whatever else registered there)
    out of the monitor's output, and lets tests render several collectors side by side.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return generate_latest(registry)
