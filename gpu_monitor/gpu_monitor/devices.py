"""The types every part of the monitor shares: what a device is, and what a sample of it says.

A device is identified by a stable UUID (NVML's `GPU-...`/`MIG-...`, or a synthetic one for CPU
slices and OpenCL devices), never by an index: indexes change between boots and containers.
A sample holds what could be read; a field that could not be read is None and named in
`errors`, so one lost or unsupported field never hides the others.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypeAlias

# The node of a single-host deployment (and of every device and allocation made before nodes
# were recorded): `GPUHUB_NODE_NAME` renames it.
LOCAL_NODE = "local"

# What a node's devices are offered for. up: new allocations. drained (the operator's `docker
# node update --availability drain`): what it holds stays held, nothing new. lost (its engine
# or network is gone) and no-agent (no monitor agent reports it): offered to no one.
NodeState: TypeAlias = Literal["up", "drained", "lost", "no-agent"]
NODE_STATES: tuple[NodeState, ...] = ("up", "drained", "lost", "no-agent")


@dataclass(frozen=True)
class Node:
    """A host whose devices the monitor hands out: one on a single host, one per Swarm node."""

    id: str  # stable: Swarm's node id, or LOCAL_NODE (GPUHUB_NODE_NAME) on a single host
    hostname: str = ""
    labels: Mapping[str, str] = field(default_factory=dict, compare=False)
    state: NodeState = "up"
    reason: str = ""  # why a node is not up, for the dashboard and refusals' logs

    def __post_init__(self) -> None:
        if self.state not in NODE_STATES:
            raise ValueError(f"node state must be one of {', '.join(NODE_STATES)}, not {self.state!r}")

    def has_labels(self, wanted: Mapping[str, str]) -> bool:
        return all(self.labels.get(key) == value for key, value in wanted.items())


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
    node: str = LOCAL_NODE  # the Node.id of the host that has it
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
