"""NVIDIA GPUs and MIG instances, read in-process through NVML (the `pynvml` module of nvidia-ml-py).

NVML is initialised lazily, on the first `discover()` or `sample()`, so importing this module
never needs a driver. Devices are identified by UUID: a whole GPU as `GPU-...`, and a GPU in MIG
mode is handed out as its instances (`MIG-...`), never as itself. Reading degrades per field and
per device, as nvitop and gpustat do: a field NVML does not support (utilisation of a MIG slice,
power on some boards) is None and named in the sample's errors while the others are read; a GPU
that falls off the bus spoils only its own sample, and its handle is looked up again by UUID on
the next sample. Written against nvidia-ml-py 13.x; `nvidia-smi` is never run (7-20 ms a call,
against well under a millisecond for an NVML query).
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..devices import BackendUnavailable, Device, Sample

log = logging.getLogger(__name__)

# pynvml ships no type hints: the module (or a fake of it) is handled as Any, and every value
# read from it is converted to a plain Python type before it leaves this module.
NVMLModule = Any

# Not a driver-wide failure, only this field of this device: leave it None and read the rest.
# Any other NVML error (GPU lost, unknown, reset required...) spoils the whole device's sample.
_FIELD_ERROR_NAMES = (
    "NVML_ERROR_NOT_SUPPORTED",
    "NVML_ERROR_NO_PERMISSION",
    "NVML_ERROR_FUNCTION_NOT_FOUND",  # an older driver than the binding
    "NVML_ERROR_NO_DATA",
    "NVML_ERROR_NOT_READY",
)

_CONTAINER_HINT = (
    "run the monitor with the NVIDIA container runtime (NVIDIA_DRIVER_CAPABILITIES=utility)"
)

_DRIVER_HINT = "check the NVIDIA driver on the host (nvidia-smi there should list the GPUs)"


def parse_cuda_version(encoded: int) -> tuple[int, int]:
    """NVML's CUDA version number (1000 * major + 10 * minor, e.g. 12040) as (major, minor)."""
    return encoded // 1000, (encoded % 1000) // 10


class NVMLBackend:
    """The Backend for NVIDIA GPUs. Pass `nvml` to use another module than `pynvml` (tests do)."""

    name = "nvml"

    def __init__(self, nvml: NVMLModule | None = None, clock: Callable[[], float] = time.time):
        self._nvml: NVMLModule | None = nvml
        self._clock = clock
        self._lock = threading.Lock()
        self._initialised = False
        self._devices: list[Device] = []
        self._handles: dict[str, Any] = {}  # uuid -> NVML handle; dropped when it goes bad
        self.driver_version: str | None = None  # e.g. "580.82.07"; set by the first discover()
        # The newest CUDA the driver supports, e.g. (13, 0): an image built for a newer CUDA
        # cannot run here. Set by the first discover().
        self.cuda_driver_version: tuple[int, int] | None = None

    # -- Backend protocol ------------------------------------------------------------------

    def discover(self) -> list[Device]:
        with self._lock:
            return self._discover()

    def sample(self) -> list[Sample]:
        with self._lock:
            if not self._initialised:
                self._discover()
            return [self._sample_device(device) for device in self._devices]

    def close(self) -> None:
        with self._lock:
            if not self._initialised:
                return
            self._initialised = False
            self._handles.clear()
            nvml = self._module()
            try:
                nvml.nvmlShutdown()
            except nvml.NVMLError as e:
                log.warning("NVML: shutdown failed: %s", e)

    # -- discovery ------------------------------------------------------------------------

    def _discover(self) -> list[Device]:
        nvml = self._init()
        devices: list[Device] = []
        handles: dict[str, Any] = {}
        try:
            count = int(nvml.nvmlDeviceGetCount())
        except nvml.NVMLError as e:
            raise BackendUnavailable(f"NVML could not count the GPUs ({e}): {_DRIVER_HINT}") from e
        for index in range(count):
            try:
                found = self._discover_gpu(index)
            except nvml.NVMLError as e:
                # An inaccessible or lost GPU must not hide the others.
                log.warning("NVML: skipping GPU %d: %s", index, e)
                continue
            for device, handle in found:
                devices.append(device)
                handles[device.uuid] = handle
        if not devices:
            log.warning("NVML: the driver is loaded but shows no GPU to hand out")
        self._devices, self._handles = devices, handles
        return list(devices)

    def _module(self) -> NVMLModule:
        if self._nvml is None:
            try:
                self._nvml = importlib.import_module("pynvml")
            except ImportError as e:
                raise BackendUnavailable(
                    "the Python package nvidia-ml-py (module pynvml) is not installed: "
                    "install it in the monitor's environment (pip install nvidia-ml-py)"
                ) from e
        return self._nvml

    def _init(self) -> NVMLModule:
        nvml = self._module()
        if self._initialised:
            return nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as e:
            raise BackendUnavailable(_init_failure(nvml, e)) from e
        self._initialised = True
        self.driver_version = self._optional(lambda: _text(nvml.nvmlSystemGetDriverVersion()))
        encoded = self._optional(lambda: int(nvml.nvmlSystemGetCudaDriverVersion_v2()))
        self.cuda_driver_version = None if encoded is None else parse_cuda_version(encoded)
        log.info("NVML: driver %s, CUDA %s", self.driver_version, self.cuda_driver_version)
        return nvml

    def _discover_gpu(self, index: int) -> list[tuple[Device, Any]]:
        """The GPU at NVML index `index`, or its MIG instances if it is partitioned."""
        nvml = self._module()
        handle = nvml.nvmlDeviceGetHandleByIndex(index)
        gpu = self._describe(handle, index, kind="gpu")
        if not self._mig_enabled(handle):
            return [(gpu, handle)]
        instances = []
        for slot in range(int(nvml.nvmlDeviceGetMaxMigDeviceCount(handle))):
            try:
                mig = nvml.nvmlDeviceGetMigDeviceHandleByIndex(handle, slot)
            except nvml.NVMLError as e:
                if e.value == nvml.NVML_ERROR_NOT_FOUND:  # an empty slot
                    continue
                raise
            device = self._describe(mig, slot, kind="mig", parent=gpu)
            instances.append((device, mig))
        if not instances:
            log.warning(
                "NVML: GPU %d (%s) is in MIG mode but has no MIG instances: nothing to hand out "
                "until instances are created (nvidia-smi mig -cgi ... -C)",
                index,
                gpu.uuid,
            )
        return instances

    def _describe(self, handle: Any, index: int, kind: str, parent: Device | None = None) -> Device:
        nvml = self._module()
        uuid = _text(nvml.nvmlDeviceGetUUID(handle))
        name = self._optional(lambda: _text(nvml.nvmlDeviceGetName(handle)))
        total = self._optional(lambda: int(nvml.nvmlDeviceGetMemoryInfo(handle).total))
        attributes = {"nvml_index": str(index)}
        if parent is not None:
            attributes = {"mig_slot": str(index), "parent_index": parent.attributes["nvml_index"]}
        return Device(
            uuid=uuid,
            index=index,
            kind=kind,
            name=name or "NVIDIA GPU",
            memory_total_bytes=total,
            parent_uuid=parent.uuid if parent else None,
            docker_device_id=uuid,
            attributes=attributes,
        )

    def _mig_enabled(self, handle: Any) -> bool:
        nvml = self._module()
        mode = self._optional(lambda: nvml.nvmlDeviceGetMigMode(handle)[0])  # [current, pending]
        return bool(mode == nvml.NVML_DEVICE_MIG_ENABLE)

    def _optional(self, read: Callable[[], Any]) -> Any:
        """`read()`, or None where NVML cannot give this field (other errors propagate)."""
        nvml = self._module()
        try:
            return read()
        except nvml.NVMLError as e:
            if not _is_field_error(nvml, e):
                raise
            return None

    # -- sampling -------------------------------------------------------------------------

    def _sample_device(self, device: Device) -> Sample:
        nvml = self._module()
        timestamp = self._clock()
        try:
            handle = self._handles.get(device.uuid)
            if handle is None:  # it failed earlier: it may be back
                handle = nvml.nvmlDeviceGetHandleByUUID(device.uuid)
                self._handles[device.uuid] = handle
            return self._read_fields(device.uuid, timestamp, handle)
        except nvml.NVMLError as e:
            # The device itself failed (lost, reset, unknown error): nothing read from it in
            # this pass can be trusted. Forget the handle: the next sample looks the UUID up.
            self._handles.pop(device.uuid, None)
            log.warning("NVML: %s (%s) could not be read: %s", device.uuid, device.name, e)
            return Sample(uuid=device.uuid, timestamp=timestamp, errors=(f"device: {e}",))

    def _read_fields(self, uuid: str, timestamp: float, handle: Any) -> Sample:
        nvml = self._module()
        errors: list[str] = []

        def field(name: str, read: Callable[[], Any]) -> Any:
            try:
                return read()
            except nvml.NVMLError as e:
                if not _is_field_error(nvml, e):
                    raise
                why = "not supported" if e.value == nvml.NVML_ERROR_NOT_SUPPORTED else str(e)
                errors.append(f"{name}: {why}")
                return None

        memory = field("memory", lambda: nvml.nvmlDeviceGetMemoryInfo(handle))
        return Sample(
            uuid=uuid,
            timestamp=timestamp,
            # The share of the last sample period (1/6 s to 1 s, by board) in which a kernel
            # ran: an instantaneous rate, not a busy-time counter.
            utilization_ratio=field(
                "utilization", lambda: int(nvml.nvmlDeviceGetUtilizationRates(handle).gpu) / 100
            ),
            memory_used_bytes=None if memory is None else int(memory.used),
            temperature_celsius=field(
                "temperature",
                lambda: float(nvml.nvmlDeviceGetTemperature(handle, nvml.NVML_TEMPERATURE_GPU)),
            ),
            power_watts=field("power", lambda: int(nvml.nvmlDeviceGetPowerUsage(handle)) / 1000),
            errors=tuple(errors),
        )


def _is_field_error(nvml: NVMLModule, e: Exception) -> bool:
    return getattr(e, "value", None) in {getattr(nvml, name) for name in _FIELD_ERROR_NAMES}


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _init_failure(nvml: NVMLModule, e: Any) -> str:
    """What to tell the operator when nvmlInit() fails: what is wrong and what to do."""
    if e.value == nvml.NVML_ERROR_LIBRARY_NOT_FOUND:
        return (
            "NVIDIA driver library libnvidia-ml.so.1 not found: on a GPU host install the NVIDIA "
            f"driver and {_CONTAINER_HINT}"
        )
    if e.value == nvml.NVML_ERROR_DRIVER_NOT_LOADED:
        return (
            "the NVIDIA kernel driver is not loaded: check `lsmod | grep nvidia` on the host, "
            f"load it or reboot after a driver install, and {_CONTAINER_HINT}"
        )
    if e.value == nvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH:
        return (
            "the NVIDIA driver library and the loaded kernel driver differ in version (a driver "
            "upgrade without a reboot): reboot the host or reload the nvidia kernel modules"
        )
    if e.value == nvml.NVML_ERROR_NO_PERMISSION:
        return (
            "no permission to open the NVIDIA devices (/dev/nvidiactl, /dev/nvidia*): "
            f"{_CONTAINER_HINT}"
        )
    return f"NVML could not be initialised ({e}): {_DRIVER_HINT}"
