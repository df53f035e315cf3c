"""CPU slices: what the monitor hands out on a host without accelerators (CI, laptops).

The host's CPUs are cut into a configured number of disjoint, contiguous core sets. Each slice
is a device: a container given it is pinned to those cores with a cpuset, and PoCL inside the
OpenCL image shows it as one OpenCL device. Allocation, exhaustion, release and reconciliation
are therefore exercised for real where no GPU exists. Utilisation is read from /proc/stat
(per-CPU busy time between two samples, averaged over the slice's cores).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from ..devices import BackendUnavailable, Device, Sample

# Names UUIDs of CPU slices (uuid5): stable for the same machine and core set across restarts.
SLICE_NAMESPACE = uuid.UUID("4f0c2a52-6b8e-4b8e-9d55-3f1d1c1e8a10")

# /proc/stat per-CPU fields: user nice system idle iowait irq softirq steal guest guest_nice
_IDLE_FIELDS = (3, 4)


def format_cpuset(cpus: Sequence[int]) -> str:
    """[0, 1, 2, 5] -> "0-2,5" (the cpuset syntax Docker and the kernel read)."""
    runs: list[list[int]] = []
    for cpu in sorted(cpus):
        if runs and cpu == runs[-1][1] + 1:
            runs[-1][1] = cpu
        else:
            runs.append([cpu, cpu])
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in runs)


def split_cpus(cpus: Sequence[int], slices: int) -> list[list[int]]:
    """Disjoint contiguous slices of equal size; leftover cores (cpus % slices) stay unused."""
    if slices < 1:
        raise BackendUnavailable(f"GPUHUB_CPU_SLICES must be at least 1, got {slices}")
    if slices > len(cpus):
        raise BackendUnavailable(
            f"GPUHUB_CPU_SLICES={slices} but this host has {len(cpus)} usable CPU(s): "
            f"set it to {len(cpus)} or fewer"
        )
    size = len(cpus) // slices
    ordered = sorted(cpus)
    return [ordered[i * size:(i + 1) * size] for i in range(slices)]


def read_proc_stat(path: str = "/proc/stat") -> dict[int, tuple[int, int]]:
    """Per CPU: (busy jiffies, total jiffies)."""
    counters: dict[int, tuple[int, int]] = {}
    for line in Path(path).read_text().splitlines():
        name, *values = line.split()
        if not name.startswith("cpu") or name == "cpu":
            continue
        numbers = [int(v) for v in values[:8]]
        idle = sum(numbers[i] for i in _IDLE_FIELDS)
        counters[int(name[3:])] = (sum(numbers) - idle, sum(numbers))
    return counters


class CPUSliceBackend:
    name = "cpu-slices"

    def __init__(self, slices: int, cpus: Sequence[int] | None = None, machine_id: str | None = None,
                 stat_reader: Callable[[], dict[int, tuple[int, int]]] = read_proc_stat,
                 clock: Callable[[], float] = time.time):
        self._cpus = sorted(cpus if cpus is not None else os.sched_getaffinity(0))
        self._slices = slices
        self._machine_id = machine_id if machine_id is not None else _machine_id()
        self._read = stat_reader
        self._clock = clock
        self._devices: list[Device] = []
        self._previous: dict[int, tuple[int, int]] = {}

    def discover(self) -> list[Device]:
        devices = []
        for index, cores in enumerate(split_cpus(self._cpus, self._slices)):
            cpuset = format_cpuset(cores)
            devices.append(Device(
                uuid="CPU-" + str(uuid.uuid5(SLICE_NAMESPACE, f"{self._machine_id}/{cpuset}")),
                index=index,
                kind="cpu-slice",
                name=f"CPU slice {index} (cores {cpuset})",
                cpuset=cpuset,
                attributes={"cores": str(len(cores)), "opencl": "PoCL pthread"},
            ))
        self._devices = devices
        self._previous = self._read()
        return list(devices)

    def sample(self) -> list[Sample]:
        now = self._clock()
        try:
            current = self._read()
        except OSError as e:
            return [Sample(uuid=d.uuid, timestamp=now, errors=(f"utilization: {e}",)) for d in self._devices]
        samples = []
        for device in self._devices:
            cores = _parse_cpuset(device.cpuset or "")
            busy = total = 0
            for core in cores:
                if core in current and core in self._previous:
                    busy += current[core][0] - self._previous[core][0]
                    total += current[core][1] - self._previous[core][1]
            if total > 0:
                samples.append(Sample(uuid=device.uuid, timestamp=now, utilization_ratio=min(1.0, busy / total)))
            else:
                samples.append(Sample(uuid=device.uuid, timestamp=now,
                                      errors=("utilization: no time passed since the last sample",)))
        self._previous = current
        return samples

    def close(self) -> None:
        self._devices = []


def _parse_cpuset(cpuset: str) -> list[int]:
    cores: list[int] = []
    for part in filter(None, cpuset.split(",")):
        first, _, last = part.partition("-")
        cores.extend(range(int(first), int(last or first) + 1))
    return cores


def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            return Path(path).read_text().strip()
        except OSError:
            continue
    return os.uname().nodename
