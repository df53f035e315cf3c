"""CPU slices: disjoint core sets as devices, stable UUIDs, utilisation from /proc/stat deltas."""

import pytest

from gpu_monitor.backends.cpu_slices import CPUSliceBackend, format_cpuset, read_proc_stat, split_cpus
from gpu_monitor.devices import BackendUnavailable

SPLITS = {
    "two cores, two slices": ([0, 1], 2, [[0], [1]]),
    "eight cores, three slices (two left over)": (list(range(8)), 3, [[0, 1], [2, 3], [4, 5]]),
    "unordered affinity": ([3, 1, 2, 0], 2, [[0, 1], [2, 3]]),
    "one slice takes all": ([0, 1, 2], 1, [[0, 1, 2]]),
}


@pytest.mark.parametrize("cpus, slices, expected", SPLITS.values(), ids=SPLITS.keys())
def test_split_cpus(cpus, slices, expected):
    parts = split_cpus(cpus, slices)
    assert parts == expected
    flat = [c for part in parts for c in part]
    assert len(flat) == len(set(flat))  # disjoint


@pytest.mark.parametrize("slices, words", [(0, "at least 1"), (3, "has 2 usable CPU(s): set it to 2 or fewer")])
def test_impossible_slicing_says_what_to_set(slices, words):
    with pytest.raises(BackendUnavailable, match=words.replace("(", r"\(").replace(")", r"\)")):
        split_cpus([0, 1], slices)


@pytest.mark.parametrize("cpus, text", [([0], "0"), ([0, 1, 2, 5], "0-2,5"), ([4, 6, 7], "4,6-7")])
def test_format_cpuset(cpus, text):
    assert format_cpuset(cpus) == text


def test_devices_have_stable_uuids_and_cpusets():
    first = CPUSliceBackend(2, cpus=[0, 1, 2, 3], machine_id="m1", stat_reader=dict).discover()
    again = CPUSliceBackend(2, cpus=[0, 1, 2, 3], machine_id="m1", stat_reader=dict).discover()
    other_host = CPUSliceBackend(2, cpus=[0, 1, 2, 3], machine_id="m2", stat_reader=dict).discover()
    assert [d.uuid for d in first] == [d.uuid for d in again]
    assert not {d.uuid for d in first} & {d.uuid for d in other_host}
    assert [(d.index, d.kind, d.cpuset) for d in first] == [(0, "cpu-slice", "0-1"), (1, "cpu-slice", "2-3")]
    assert all(d.uuid.startswith("CPU-") for d in first)


def test_utilisation_is_the_busy_share_of_the_slice_cores_between_samples():
    readings = iter([
        {0: (0, 100), 1: (0, 100), 2: (0, 100), 3: (0, 100)},
        {0: (100, 200), 1: (50, 200), 2: (0, 200), 3: (0, 200)},  # slice 0: 150/200 busy; slice 1 idle
    ])
    backend = CPUSliceBackend(2, cpus=[0, 1, 2, 3], machine_id="m", stat_reader=lambda: next(readings),
                              clock=lambda: 1000.0)
    backend.discover()
    samples = backend.sample()
    assert [s.utilization_ratio for s in samples] == [0.75, 0.0]
    assert all(s.timestamp == 1000.0 and not s.errors for s in samples)


def test_a_failed_read_is_reported_per_device_not_raised():
    calls = iter([{0: (0, 1)}, OSError("permission denied")])

    def reader():
        value = next(calls)
        if isinstance(value, Exception):
            raise value
        return value

    backend = CPUSliceBackend(1, cpus=[0], machine_id="m", stat_reader=reader)
    backend.discover()
    (sample,) = backend.sample()
    assert sample.utilization_ratio is None and "permission denied" in sample.errors[0]


def test_reads_this_hosts_proc_stat():
    counters = read_proc_stat()
    assert counters and all(total >= busy >= 0 for busy, total in counters.values())
