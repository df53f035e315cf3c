"""The monitor agent of a node that simulates a GPU node (the swarm tier's sw3,
tests/harness/swarm.py): `python -m gpu_monitor agent` with FakeNVML in place of NVIDIA's driver
library, reporting the GPUs whose UUIDs are in GPUHUB_FAKE_GPU_UUIDS (comma-separated; the ones
that node's engine advertises to Swarm). Everything else is the real agent: its database, its
sampler, its heartbeat. Run only by tests/swarm/simulated-gpus.yml, never on a real node."""

from __future__ import annotations

import os
import sys

import gpu_monitor.__main__ as monitor_main
from tests.fakes.nvml import FakeGPU, FakeNVML


def main() -> int:
    uuids = [u for u in os.environ.get("GPUHUB_FAKE_GPU_UUIDS", "").split(",") if u]
    if not uuids:
        print("nvml_agent: set GPUHUB_FAKE_GPU_UUIDS to the simulated GPUs' UUIDs", file=sys.stderr)
        return 2
    fake = FakeNVML([FakeGPU(uuid, name="Simulated GPU (FakeNVML)") for uuid in uuids])
    real_backend = monitor_main.NVMLBackend
    monitor_main.NVMLBackend = lambda: real_backend(nvml=fake)  # what choose_backend() builds
    return monitor_main.main(["agent"])


if __name__ == "__main__":
    sys.exit(main())
