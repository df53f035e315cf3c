"""The metrics collector: base units, no fake zeros, no stale series, and text Prometheus parses."""

import pytest
from prometheus_client.parser import text_string_to_metric_families

from gpu_monitor.allocator import Allocation
from gpu_monitor.devices import Device, Sample
from gpu_monitor.metrics import MonitorCollector, render
from gpu_monitor.sampler import DeviceState

GiB = 2**30

GPU0 = Device(uuid="GPU-0000", index=0, kind="gpu", name="NVIDIA A100", memory_total_bytes=80 * GiB)
GPU1 = Device(uuid="GPU-1111", index=1, kind="gpu", name="NVIDIA A100", memory_total_bytes=80 * GiB)
MIG = Device(uuid="MIG-2222", index=2, kind="mig", name="1g.10gb", memory_total_bytes=10 * GiB,
             parent_uuid="GPU-1111")
SLICE = Device(uuid="cpu-slice-0", index=3, kind="cpu-slice", name="CPU slice 0-3")

FULL = Sample(uuid="GPU-0000", timestamp=1700000000.0, utilization_ratio=0.75,
              memory_used_bytes=12 * GiB, temperature_celsius=61.0, power_watts=215.5)
NO_POWER = Sample(uuid="GPU-1111", timestamp=1700000000.0, utilization_ratio=0.25,
                  memory_used_bytes=GiB, temperature_celsius=40.0, power_watts=None,
                  errors=("power_watts: NVML_ERROR_NOT_SUPPORTED",))
NOTHING = Sample(uuid="cpu-slice-0", timestamp=1700000000.0, errors=("utilization_ratio: gone",))


def alloc(id, user, *uuids, server=""):
    return Allocation(id=id, user=user, server=server, profile="default", device_uuids=uuids,
                      created_at=1700000000.0)


class World:
    """What the collector reads; tests change it between scrapes as the monitor would."""

    def __init__(self, devices=(), states=None, allocations=()):
        self.devices = list(devices)
        self.states = dict(states or {})
        self.allocations = list(allocations)

    def collector(self):
        return MonitorCollector(lambda: self.devices, lambda: dict(self.states),
                                lambda: list(self.allocations))


def scrape(world):
    """Render and parse the exposition: {(sample name, sorted labels): value}."""
    text = render(world.collector()).decode()
    series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in series, f"duplicate series {key}"
            series[key] = s.value
    return series


def value(series, name, /, **labels):
    return series.get((name, tuple(sorted(labels.items()))))


def names_for(series, uuid):
    return {name for name, labels in series if ("uuid", uuid) in labels}


def test_exposition_parses_with_types():
    world = World([GPU0], {GPU0.uuid: DeviceState(FULL, busy_seconds=3.0, sampled_seconds=4.0)})
    families = {f.name: f.type for f in text_string_to_metric_families(render(world.collector()).decode())}
    assert families == {
        "gpuhub_gpu_info": "gauge",
        "gpuhub_gpu_allocated": "gauge",
        "gpuhub_gpu_memory_total_bytes": "gauge",
        "gpuhub_gpu_utilization_ratio": "gauge",
        "gpuhub_gpu_memory_used_bytes": "gauge",
        "gpuhub_gpu_temperature_celsius": "gauge",
        "gpuhub_gpu_power_watts": "gauge",
        "gpuhub_gpu_last_sample_timestamp_seconds": "gauge",
        "gpuhub_gpu_sample_errors": "gauge",
        "gpuhub_gpu_busy_seconds": "counter",
        "gpuhub_gpu_sampled_seconds": "counter",
        "gpuhub_user_allocated_devices": "gauge",
    }


G0 = {"uuid": "GPU-0000", "index": "0"}
BASE_UNIT_CASES = {
    "utilisation is a ratio, not a percentage": ("gpuhub_gpu_utilization_ratio", 0.75),
    "memory used in bytes": ("gpuhub_gpu_memory_used_bytes", 12 * GiB),
    "memory total in bytes": ("gpuhub_gpu_memory_total_bytes", 80 * GiB),
    "temperature in degrees Celsius": ("gpuhub_gpu_temperature_celsius", 61.0),
    "power in watts, not milliwatts": ("gpuhub_gpu_power_watts", 215.5),
    "busy seconds counter": ("gpuhub_gpu_busy_seconds_total", 3.0),
    "sampled seconds counter": ("gpuhub_gpu_sampled_seconds_total", 4.0),
    "sample time in epoch seconds": ("gpuhub_gpu_last_sample_timestamp_seconds", 1700000000.0),
    "a full sample has no errors": ("gpuhub_gpu_sample_errors", 0),
    "a free device reads 0 allocated": ("gpuhub_gpu_allocated", 0),
}


@pytest.mark.parametrize("name, expected", BASE_UNIT_CASES.values(), ids=BASE_UNIT_CASES.keys())
def test_values_in_base_units(name, expected):
    world = World([GPU0], {GPU0.uuid: DeviceState(FULL, busy_seconds=3.0, sampled_seconds=4.0)})
    assert value(scrape(world), name, **G0) == pytest.approx(expected)


def test_info_carries_kind_and_name_and_other_series_do_not():
    world = World([GPU1, MIG], {GPU1.uuid: DeviceState(NO_POWER)})
    series = scrape(world)
    assert value(series, "gpuhub_gpu_info", uuid="MIG-2222", index="2", kind="mig", name="1g.10gb",
                 parent_uuid="GPU-1111") == 1
    assert value(series, "gpuhub_gpu_info", uuid="GPU-1111", index="1", kind="gpu",
                 name="NVIDIA A100", parent_uuid="") == 1
    for name, labels in series:
        if name != "gpuhub_gpu_info" and name != "gpuhub_user_allocated_devices":
            assert {k for k, _ in labels} == {"uuid", "index"}, name


MISSING_CASES = {
    "unsupported power: no power series, the rest stay": (
        GPU1, NO_POWER, {"gpuhub_gpu_power_watts"}, {"gpuhub_gpu_utilization_ratio",
                                                     "gpuhub_gpu_memory_used_bytes",
                                                     "gpuhub_gpu_temperature_celsius"}),
    "nothing readable: no readings, counters and errors stay": (
        SLICE, NOTHING, {"gpuhub_gpu_utilization_ratio", "gpuhub_gpu_memory_used_bytes",
                         "gpuhub_gpu_temperature_celsius", "gpuhub_gpu_power_watts",
                         "gpuhub_gpu_memory_total_bytes"},
        {"gpuhub_gpu_busy_seconds_total", "gpuhub_gpu_sample_errors", "gpuhub_gpu_info"}),
    "not sampled yet: identity and allocation only": (
        GPU0, None, {"gpuhub_gpu_utilization_ratio", "gpuhub_gpu_busy_seconds_total",
                     "gpuhub_gpu_sample_errors", "gpuhub_gpu_last_sample_timestamp_seconds"},
        {"gpuhub_gpu_info", "gpuhub_gpu_allocated", "gpuhub_gpu_memory_total_bytes"}),
}


@pytest.mark.parametrize("device, sample, absent, present", MISSING_CASES.values(), ids=MISSING_CASES.keys())
def test_a_field_that_was_not_read_has_no_series(device, sample, absent, present):
    states = {} if sample is None else {device.uuid: DeviceState(sample)}
    names = names_for(scrape(World([device], states)), device.uuid)
    assert not names & absent, "a missing reading must not be exported as a zero"
    assert present <= names


def test_sample_errors_counts_unread_fields():
    world = World([GPU1], {GPU1.uuid: DeviceState(NO_POWER)})
    assert value(scrape(world), "gpuhub_gpu_sample_errors", uuid="GPU-1111", index="1") == 1


def test_a_state_for_an_unknown_device_is_not_exported():
    world = World([], {GPU0.uuid: DeviceState(FULL)})
    assert names_for(scrape(world), GPU0.uuid) == set()


ALLOCATION_CASES = {
    "nothing held": ([], {"GPU-0000": 0, "GPU-1111": 0, "MIG-2222": 0}, {}),
    "one user, one device": ([alloc("a", "alice", "GPU-0000")],
                             {"GPU-0000": 1, "GPU-1111": 0, "MIG-2222": 0}, {"alice": 1}),
    "one user, two servers": ([alloc("a", "alice", "GPU-0000"),
                               alloc("b", "alice", "GPU-1111", "MIG-2222", server="big")],
                              {"GPU-0000": 1, "GPU-1111": 1, "MIG-2222": 1}, {"alice": 3}),
    "shared device with two holders": ([alloc("a", "alice", "GPU-0000"), alloc("b", "bob", "GPU-0000")],
                                       {"GPU-0000": 2, "GPU-1111": 0, "MIG-2222": 0},
                                       {"alice": 1, "bob": 1}),
    "allocation of a device that went away counts for the user only": (
        [alloc("a", "carol", "GPU-gone")], {"GPU-0000": 0, "GPU-1111": 0, "MIG-2222": 0}, {"carol": 1}),
}


@pytest.mark.parametrize("allocations, per_device, per_user", ALLOCATION_CASES.values(),
                         ids=ALLOCATION_CASES.keys())
def test_allocation_state(allocations, per_device, per_user):
    series = scrape(World([GPU0, GPU1, MIG], allocations=allocations))
    got_devices = {dict(labels)["uuid"]: v for (name, labels), v in series.items()
                   if name == "gpuhub_gpu_allocated"}
    got_users = {dict(labels)["user"]: v for (name, labels), v in series.items()
                 if name == "gpuhub_user_allocated_devices"}
    assert got_devices == per_device
    assert got_users == per_user
    assert "GPU-gone" not in {dict(labels).get("uuid") for _, labels in series}


def test_no_stale_series_after_a_release():
    world = World([GPU0, GPU1], allocations=[alloc("a", "alice", "GPU-0000"),
                                             alloc("b", "bob", "GPU-1111")])
    before = scrape(world)
    assert value(before, "gpuhub_user_allocated_devices", user="bob") == 1
    world.allocations = [a for a in world.allocations if a.id != "b"]  # bob's server stopped
    after = scrape(world)
    assert value(after, "gpuhub_user_allocated_devices", user="bob") is None
    assert value(after, "gpuhub_user_allocated_devices", user="alice") == 1
    assert value(after, "gpuhub_gpu_allocated", uuid="GPU-1111", index="1") == 0
    assert value(after, "gpuhub_gpu_allocated", uuid="GPU-0000", index="0") == 1


def test_no_stale_series_after_a_device_goes_away():
    world = World([GPU0, GPU1], {GPU0.uuid: DeviceState(FULL), GPU1.uuid: DeviceState(NO_POWER)})
    assert names_for(scrape(world), GPU1.uuid)
    world.devices = [GPU0]
    del world.states[GPU1.uuid]
    assert names_for(scrape(world), GPU1.uuid) == set()


def test_counters_are_monotonic_across_scrapes():
    world = World([GPU0], {GPU0.uuid: DeviceState(FULL, busy_seconds=3.0, sampled_seconds=4.0)})
    first = scrape(world)
    world.states[GPU0.uuid] = DeviceState(FULL, busy_seconds=10.5, sampled_seconds=14.0)
    second = scrape(world)
    for name in ("gpuhub_gpu_busy_seconds_total", "gpuhub_gpu_sampled_seconds_total"):
        assert value(second, name, **G0) >= value(first, name, **G0)
    assert value(second, "gpuhub_gpu_busy_seconds_total", **G0) == 10.5


def test_collector_reads_state_at_scrape_time_not_construction():
    world = World()
    collector = world.collector()
    assert b"gpuhub_gpu_info{" not in render(collector)
    world.devices = [GPU0]
    assert b'gpuhub_gpu_info{index="0"' in render(collector)


def test_the_grafana_dashboard_queries_only_metrics_the_monitor_exports():
    """docs/grafana-gpuhub.json: every metric its queries name is one the collector emits."""
    import json
    import re
    from pathlib import Path

    from gpu_monitor.allocator import Allocation
    from gpu_monitor.devices import Device, Sample
    from gpu_monitor.metrics import MonitorCollector, render
    from gpu_monitor.sampler import DeviceState

    dashboard = json.loads((Path(__file__).resolve().parents[2] / "docs" / "grafana-gpuhub.json").read_text())
    device = Device(uuid="GPU-0", index=0, kind="gpu", name="G", memory_total_bytes=10)
    sample = Sample("GPU-0", 1.0, utilization_ratio=0.5, memory_used_bytes=5, temperature_celsius=40.0, power_watts=100.0)
    exported = set(re.findall(r"^(gpuhub_\w+?)(?:\{| )", render(MonitorCollector(
        lambda: [device], lambda: {"GPU-0": DeviceState(sample, 1.0, 2.0)},
        lambda: [Allocation("a", "ada", "", "cuda", ("GPU-0",), 0.0)])).decode(), re.M))
    queried = {name for panel in dashboard["panels"] for target in panel["targets"]
               for name in re.findall(r"\bgpuhub_\w+", target["expr"])}
    assert queried and queried <= exported, queried - exported
