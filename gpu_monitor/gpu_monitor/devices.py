"""The types every part of the monitor shares: what a device is, and what a sample of it says.

A device is identified by a stable UUID (NVML's `GPU-...`/`MIG-...`, or a synthetic one for CPU
slices and OpenCL devices), never by an index: indexes change between boots and containers.
A sample holds what could be read; a field that could not be read is None and named in
`errors`, so one lost or unsupported field never hides the others.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True)
class Device:
    uuid: str
    index: int
    kind: str  # "gpu", "mig", "opencl" or "cpu-slice"
    name: str
    memory_total_bytes: int | None = None
    parent_uuid: str | None = None  # the GPU a MIG instance belongs to
    # How a container is given this device: NVIDIA device ids for Docker's device_requests,
    # or a cpuset for a CPU slice.
    docker_device_id: str | None = None
    cpuset: str | None = None
    attributes: dict[str, str] = field(default_factory=dict, compare=False)


@dataclass(frozen=True)
class Sample:
    uuid: str
    timestamp: float  # seconds since the epoch
    utilization_ratio: float | None = None  # 0..1
    memory_used_bytes: int | None = None
    temperature_celsius: float | None = None
    power_watts: float | None = None
    errors: tuple[str, ...] = ()  # names of the fields that could not be read, with why


class BackendUnavailable(Exception):
    """A backend cannot run on this host; `str()` says why and what to install or check."""


class Backend(Protocol):
    name: str

    def discover(self) -> list[Device]:
        """The devices this backend can hand out. May raise BackendUnavailable."""
        ...

    def sample(self) -> list[Sample]:
        """One reading of every discovered device. Blocking: call it from a worker thread."""
        ...

    def close(self) -> None: ...
