"""The monitor's view of a real NVIDIA machine: allocation by UUID over the GPUs NVML finds, and
OpenCL discovery on NVIDIA's platform lining up with NVML (no Docker needed)."""

from __future__ import annotations

from gpu_monitor.allocator import AllocationRequest, Granted, Policy, Refused, decide
from gpu_monitor.backends.nvml import NVMLBackend


def test_two_allocations_land_on_different_gpus_or_the_second_is_refused():
    backend = NVMLBackend()
    try:
        devices = backend.discover()
    finally:
        backend.close()
    parents = {d.parent_uuid for d in devices if d.parent_uuid}
    allocatable = [d for d in devices if d.uuid not in parents]
    assert allocatable, devices
    first = decide(AllocationRequest("ada", "", "cuda", 1), devices, [], Policy(), now=1.0, new_id="a1")
    assert isinstance(first, Granted)
    second = decide(AllocationRequest("bob", "", "cuda", 1), devices, [first.allocation], Policy(),
                    now=2.0, new_id="a2")
    print(f"\n{len(allocatable)} allocatable device(s): {[d.uuid for d in allocatable]}")
    if len(allocatable) >= 2:
        assert isinstance(second, Granted)
        assert second.allocation.device_uuids != first.allocation.device_uuids
        # whatever Docker needs to name them: the UUIDs NVML gave, MIG-... for MIG instances
        for uuid in first.allocation.device_uuids + second.allocation.device_uuids:
            assert uuid.startswith(("GPU-", "MIG-"))
    else:
        assert isinstance(second, Refused) and second.code == "none_free", second
    assert backend.cuda_driver_version is not None and backend.cuda_driver_version[0] >= 11
    print(f"driver {backend.driver_version}, CUDA {backend.cuda_driver_version}")


def test_opencl_discovery_finds_the_nvidia_gpus(nvidia_icd):
    from gpu_monitor.backends.opencl import OpenCLBackend

    found = OpenCLBackend().discover()
    nvml = NVMLBackend()
    try:
        gpus = [d for d in nvml.discover() if d.kind == "gpu"]
    finally:
        nvml.close()
    nvidia = [d for d in found if d.attributes["platform"].startswith("NVIDIA")]
    print(f"\nOpenCL: {[(d.uuid, d.name) for d in nvidia]}\nNVML: {[(d.uuid, d.name) for d in gpus]}")
    assert len(nvidia) == len(gpus)
    assert all(d.attributes["type"] == "gpu" for d in nvidia)
    # where the driver reports cl_khr_device_uuid, the ids are NVML's
    with_uuid = [d.uuid for d in nvidia if d.uuid.startswith("GPU-")]
    assert set(with_uuid) <= {d.uuid for d in gpus}
