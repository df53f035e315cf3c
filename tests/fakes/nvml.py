"""FakeNVML: the NVML calls of `pynvml`, over GPUs described in Python, that fail like NVML does.

Only the library calls are faked. Constants and exception classes come from the real `pynvml`
(nvidia-ml-py), so the code under test meets the same `NVMLError_*` classes and codes it meets
on a GPU host. A call the fake does not implement raises AttributeError rather than pretending.

How it fails, by construction or later on:
- `init_error=NVML_ERROR_LIBRARY_NOT_FOUND` (or any code): `nvmlInit()` raises it, as on a host
  without the driver library or with the kernel driver unloaded.
- `lose_gpu(uuid)`: every call on that GPU (or MIG instance) raises GPU_IS_LOST, as when a GPU
  falls off the bus; `recover_gpu(uuid)` brings it back under a new handle, and the old handle
  stays lost, so only code that looks the UUID up again reads it.
- `unsupported={(uuid, field)}`: that field raises NOT_SUPPORTED on that device;
  `field_errors={(uuid, field): code}` raises any other code. Fields: name, memory,
  utilization, temperature, power.
- MIG instances never report utilisation (NOT_SUPPORTED), as on real MIG slices.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import pynvml  # type: ignore[import-untyped]

GiB = 1024**3


@dataclass
class FakeGPU:
    """One GPU, or one MIG instance when listed in another FakeGPU's `mig_slots`."""

    uuid: str
    name: str = "NVIDIA Fake GPU"
    memory_total: int = 16 * GiB
    memory_used: int = 1 * GiB
    utilization_percent: int = 0
    temperature_celsius: int = 40
    power_milliwatts: int = 50_000
    # MIG mode is on when this is not None; None entries are empty slots (NOT_FOUND).
    mig_slots: list[FakeGPU | None] | None = None


@dataclass(frozen=True)
class FakeHandle:
    uuid: str
    generation: int  # a handle from before a GPU was lost stays lost


class FakeNVML:
    """A stand-in for the `pynvml` module: pass it as `NVMLBackend(nvml=FakeNVML(...))`."""

    def __init__(
        self,
        gpus: Iterable[FakeGPU] = (),
        *,
        init_error: int | None = None,
        unsupported: Iterable[tuple[str, str]] = (),
        field_errors: Mapping[tuple[str, str], int] | None = None,
        driver_version: str = "580.82.07",
        cuda_driver_version: int = 13000,
    ):
        self.gpus = list(gpus)
        self.init_error = init_error
        self.field_errors = {key: pynvml.NVML_ERROR_NOT_SUPPORTED for key in unsupported}
        self.field_errors.update(field_errors or {})
        self.driver_version = driver_version
        self.cuda_driver_version = cuda_driver_version
        self.lost: set[str] = set()
        self.generations: dict[str, int] = {}
        self.initialised = 0  # nvmlInit() calls not yet matched by nvmlShutdown()
        self.calls: list[str] = []  # names of the NVML functions called, in order

    def __getattr__(self, name: str) -> Any:
        # Constants and exception classes are the real ones; functions must be faked below.
        if name.startswith(("NVML", "nvmlExceptionClass")):
            return getattr(pynvml, name)
        raise AttributeError(f"FakeNVML does not fake {name}")

    # -- failures, driven by a test -------------------------------------------------------

    def lose_gpu(self, uuid: str) -> None:
        self.lost.add(uuid)

    def recover_gpu(self, uuid: str) -> None:
        self.lost.discard(uuid)
        self.generations[uuid] = self.generations.get(uuid, 0) + 1

    # -- library lifecycle ----------------------------------------------------------------

    def nvmlInit(self) -> None:
        self._call("nvmlInit")
        if self.init_error is not None:
            raise pynvml.NVMLError(self.init_error)
        self.initialised += 1

    def nvmlShutdown(self) -> None:
        self._call("nvmlShutdown")
        self._check_initialised()
        self.initialised -= 1

    def nvmlSystemGetDriverVersion(self) -> str:
        self._call("nvmlSystemGetDriverVersion")
        self._check_initialised()
        return self.driver_version

    def nvmlSystemGetCudaDriverVersion_v2(self) -> int:
        self._call("nvmlSystemGetCudaDriverVersion_v2")
        self._check_initialised()
        return self.cuda_driver_version

    # -- handles --------------------------------------------------------------------------

    def nvmlDeviceGetCount(self) -> int:
        self._call("nvmlDeviceGetCount")
        self._check_initialised()
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, index: int) -> FakeHandle:
        self._call("nvmlDeviceGetHandleByIndex")
        self._check_initialised()
        if not 0 <= index < len(self.gpus):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return self._handle(self.gpus[index].uuid)

    def nvmlDeviceGetHandleByUUID(self, uuid: str) -> FakeHandle:
        self._call("nvmlDeviceGetHandleByUUID")
        self._check_initialised()
        if self._find(uuid) is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self._handle(uuid)

    def nvmlDeviceGetMigMode(self, handle: FakeHandle) -> list[int]:
        gpu = self._device(handle, "nvmlDeviceGetMigMode")
        if gpu.mig_slots is None:
            return [pynvml.NVML_DEVICE_MIG_DISABLE, pynvml.NVML_DEVICE_MIG_DISABLE]
        return [pynvml.NVML_DEVICE_MIG_ENABLE, pynvml.NVML_DEVICE_MIG_ENABLE]

    def nvmlDeviceGetMaxMigDeviceCount(self, handle: FakeHandle) -> int:
        gpu = self._device(handle, "nvmlDeviceGetMaxMigDeviceCount")
        return len(gpu.mig_slots or [])

    def nvmlDeviceGetMigDeviceHandleByIndex(self, handle: FakeHandle, index: int) -> FakeHandle:
        gpu = self._device(handle, "nvmlDeviceGetMigDeviceHandleByIndex")
        slots = gpu.mig_slots or []
        if not 0 <= index < len(slots):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        instance = slots[index]
        if instance is None:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_FOUND)
        return self._handle(instance.uuid)

    # -- fields ---------------------------------------------------------------------------

    def nvmlDeviceGetUUID(self, handle: FakeHandle) -> str:
        return self._device(handle, "nvmlDeviceGetUUID").uuid

    def nvmlDeviceGetName(self, handle: FakeHandle) -> str:
        return self._device(handle, "nvmlDeviceGetName", "name").name

    def nvmlDeviceGetMemoryInfo(self, handle: FakeHandle) -> SimpleNamespace:
        gpu = self._device(handle, "nvmlDeviceGetMemoryInfo", "memory")
        return SimpleNamespace(
            total=gpu.memory_total, used=gpu.memory_used, free=gpu.memory_total - gpu.memory_used
        )

    def nvmlDeviceGetUtilizationRates(self, handle: FakeHandle) -> SimpleNamespace:
        gpu = self._device(handle, "nvmlDeviceGetUtilizationRates", "utilization")
        if gpu.uuid.startswith("MIG-"):
            raise pynvml.NVMLError(pynvml.NVML_ERROR_NOT_SUPPORTED)
        return SimpleNamespace(gpu=gpu.utilization_percent, memory=0)

    def nvmlDeviceGetTemperature(self, handle: FakeHandle, sensor: int) -> int:
        gpu = self._device(handle, "nvmlDeviceGetTemperature", "temperature")
        if sensor != pynvml.NVML_TEMPERATURE_GPU:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_INVALID_ARGUMENT)
        return gpu.temperature_celsius

    def nvmlDeviceGetPowerUsage(self, handle: FakeHandle) -> int:
        return self._device(handle, "nvmlDeviceGetPowerUsage", "power").power_milliwatts

    # -- plumbing -------------------------------------------------------------------------

    def _call(self, name: str) -> None:
        self.calls.append(name)

    def _check_initialised(self) -> None:
        if self.initialised <= 0:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_UNINITIALIZED)

    def _handle(self, uuid: str) -> FakeHandle:
        if uuid in self.lost:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        return FakeHandle(uuid, self.generations.get(uuid, 0))

    def _find(self, uuid: str) -> FakeGPU | None:
        for gpu in self.gpus:
            if gpu.uuid == uuid:
                return gpu
            for instance in gpu.mig_slots or []:
                if instance is not None and instance.uuid == uuid:
                    return instance
        return None

    def _device(self, handle: FakeHandle, call: str, field: str | None = None) -> FakeGPU:
        self._call(call)
        self._check_initialised()
        gpu = self._find(handle.uuid)
        stale = handle.generation != self.generations.get(handle.uuid, 0)
        if gpu is None or handle.uuid in self.lost or stale:
            raise pynvml.NVMLError(pynvml.NVML_ERROR_GPU_IS_LOST)
        code = self.field_errors.get((handle.uuid, field)) if field else None
        if code is not None:
            raise pynvml.NVMLError(code)
        return gpu
