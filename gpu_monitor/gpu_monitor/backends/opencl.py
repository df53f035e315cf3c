"""OpenCL discovery: every platform and device the ICD loader shows (NVIDIA's, PoCL's, ...).

What it is for: telling what OpenCL code in a container will find, and on hosts whose
accelerators only OpenCL knows, listing them. It does not hand devices out: Docker can restrict
a container to NVIDIA GPUs (by UUID, the NVML backend) or to CPU cores (the CPU-slice backend),
but not to an arbitrary OpenCL device, so the service allocates through those two and uses this
one for discovery only (`GPUHUB_MONITOR_BACKEND` does not offer it).

Identity: a device that reports `CL_DEVICE_UUID_KHR` (NVIDIA's driver does, and it is the GPU's
NVML UUID) gets `GPU-<that uuid>`, so it lines up with the NVML backend's device; any other gets
a stable `OCL-` uuid5 of its platform, name and position. OpenCL has no utilisation query, so a
sample says so in `errors` instead of reporting a number it does not have.
"""

from __future__ import annotations

import importlib
import time
import uuid
from collections.abc import Callable
from typing import Any

from ..devices import BackendUnavailable, Device, Sample

OPENCL_NAMESPACE = uuid.UUID("0d7f3b8e-52c4-4f0e-9b61-8a3c2e1f6d47")
_NO_UTILIZATION = "utilization: OpenCL has no utilisation query"


def _uuid_khr(device: Any, cl: Any) -> str | None:
    """The device's UUID from cl_khr_device_uuid, formatted as NVML formats GPU UUIDs."""
    if "cl_khr_device_uuid" not in (device.extensions or ""):
        return None
    # pyopencl may not name the query; its number is CL_DEVICE_UUID_KHR from cl_ext.h
    param = getattr(cl.device_info, "UUID_KHR", 0x106A)
    try:
        raw = bytes(device.get_info(param))
    except Exception:  # noqa: BLE001 - an ICD that lists the extension but fails the query
        return None
    if len(raw) != 16 or not any(raw):
        return None
    return str(uuid.UUID(bytes=raw))


def _device_type(bits: int, cl: Any) -> str:
    kinds = [name.lower() for name in ("GPU", "CPU", "ACCELERATOR") if bits & getattr(cl.device_type, name)]
    return ",".join(kinds) or "other"


class OpenCLBackend:
    name = "opencl"

    def __init__(self, cl: Any = None, clock: Callable[[], float] = time.time):
        self._cl = cl
        self._clock = clock
        self._devices: list[Device] = []

    def _module(self) -> Any:
        if self._cl is None:
            try:
                self._cl = importlib.import_module("pyopencl")
            except ImportError as e:
                raise BackendUnavailable(
                    "the Python package pyopencl is not installed: pip install pyopencl "
                    "(and an ICD such as pocl-opencl-icd, or NVIDIA's driver)") from e
        return self._cl

    def discover(self) -> list[Device]:
        cl = self._module()
        try:
            platforms = cl.get_platforms()
        except cl.Error as e:
            # the ICD loader answers "no platforms" (CL_PLATFORM_NOT_FOUND_KHR) when no vendor
            # file in /etc/OpenCL/vendors loads
            raise BackendUnavailable(
                f"no OpenCL platform ({e}): install an ICD (pocl-opencl-icd for the CPU; on an "
                "NVIDIA host /etc/OpenCL/vendors/nvidia.icd naming libnvidia-opencl.so.1)") from e
        devices: list[Device] = []
        for p_index, platform in enumerate(platforms):
            try:
                found = platform.get_devices()
            except cl.Error:  # a platform with no devices of any type raises DEVICE_NOT_FOUND
                continue
            for d_index, device in enumerate(found):
                khr = _uuid_khr(device, cl)
                ident = (f"GPU-{khr}" if khr else "OCL-" + str(uuid.uuid5(
                    OPENCL_NAMESPACE, f"{platform.name}/{device.name}/{p_index}/{d_index}")))
                devices.append(Device(
                    uuid=ident,
                    index=len(devices),
                    kind="opencl",
                    name=device.name.strip(),
                    memory_total_bytes=int(device.global_mem_size),
                    attributes={
                        "platform": platform.name.strip(),
                        "vendor": device.vendor.strip(),
                        "type": _device_type(device.type, cl),
                        "compute_units": str(device.max_compute_units),
                        "driver_version": device.driver_version.strip(),
                    },
                ))
        self._devices = devices
        return list(devices)

    def sample(self) -> list[Sample]:
        now = self._clock()
        return [Sample(uuid=d.uuid, timestamp=now, errors=(_NO_UTILIZATION,)) for d in self._devices]

    def close(self) -> None:
        self._devices = []
