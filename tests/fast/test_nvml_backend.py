"""NVMLBackend against FakeNVML: discovery by UUID, MIG, startup errors, per-field and per-device
degradation. The exceptions are pynvml's own classes; only the library calls are faked."""

from __future__ import annotations

import sys

import pynvml
import pytest

from gpu_monitor.backends.nvml import NVMLBackend, parse_cuda_version
from gpu_monitor.devices import Backend, BackendUnavailable

from ..fakes.nvml import FakeGPU, FakeNVML, GiB


def gpu(uuid: str, **fields) -> FakeGPU:
    return FakeGPU(uuid=uuid, **fields)


def backend_for(nvml: FakeNVML, now: float = 1000.0) -> NVMLBackend:
    backend: Backend = NVMLBackend(nvml=nvml, clock=lambda: now)
    assert isinstance(backend, NVMLBackend)
    return backend


# -- discovery ------------------------------------------------------------------------------

MIG_A = gpu("MIG-a0", name="NVIDIA A100 MIG 3g.20gb", memory_total=20 * GiB)
MIG_B = gpu("MIG-a2", name="NVIDIA A100 MIG 1g.5gb", memory_total=5 * GiB)

DISCOVERY_CASES = [
    pytest.param(
        FakeNVML([gpu("GPU-aaa", memory_total=16 * GiB), gpu("GPU-bbb", memory_total=24 * GiB)]),
        [("GPU-aaa", "gpu", 0, 16 * GiB, None), ("GPU-bbb", "gpu", 1, 24 * GiB, None)],
        id="two GPUs by UUID with memory",
    ),
    pytest.param(
        FakeNVML([gpu("GPU-a100", mig_slots=[MIG_A, None, MIG_B]), gpu("GPU-plain")]),
        [
            ("MIG-a0", "mig", 0, 20 * GiB, "GPU-a100"),
            ("MIG-a2", "mig", 2, 5 * GiB, "GPU-a100"),
            ("GPU-plain", "gpu", 1, 16 * GiB, None),
        ],
        id="a MIG GPU is handed out as its instances, empty slots skipped",
    ),
    pytest.param(
        FakeNVML([gpu("GPU-a100", mig_slots=[None, None]), gpu("GPU-plain")]),
        [("GPU-plain", "gpu", 1, 16 * GiB, None)],
        id="MIG mode without instances hands out nothing",
    ),
    pytest.param(
        FakeNVML([gpu("GPU-aaa")], unsupported={("GPU-aaa", "memory")}),
        [("GPU-aaa", "gpu", 0, None, None)],
        id="memory not supported leaves the total unknown",
    ),
    pytest.param(FakeNVML([]), [], id="driver without GPUs"),
]


@pytest.mark.parametrize("nvml, expected", DISCOVERY_CASES)
def test_discovery(nvml, expected):
    devices = backend_for(nvml).discover()
    assert [(d.uuid, d.kind, d.index, d.memory_total_bytes, d.parent_uuid) for d in devices] == expected
    assert all(d.docker_device_id == d.uuid for d in devices)


def test_discovery_skips_a_lost_gpu_and_keeps_the_others():
    nvml = FakeNVML([gpu("GPU-lost"), gpu("GPU-ok")])
    nvml.lose_gpu("GPU-lost")
    assert [d.uuid for d in backend_for(nvml).discover()] == ["GPU-ok"]


def test_discovery_names_and_attributes():
    nvml = FakeNVML([gpu("GPU-a100", name="NVIDIA A100", mig_slots=[MIG_A])])
    nvml.field_errors[("MIG-a0", "name")] = pynvml.NVML_ERROR_NOT_SUPPORTED
    (mig,) = backend_for(nvml).discover()
    assert mig.name == "NVIDIA GPU"  # a name NVML cannot give does not stop discovery
    assert mig.attributes == {"mig_slot": "0", "parent_index": "0"}


def test_driver_and_cuda_versions_are_exposed():
    backend = backend_for(FakeNVML([gpu("GPU-aaa")], cuda_driver_version=12040))
    assert (backend.driver_version, backend.cuda_driver_version) == (None, None)
    backend.discover()
    assert backend.driver_version == "580.82.07"
    assert backend.cuda_driver_version == (12, 4)


@pytest.mark.parametrize(
    "encoded, expected",
    [
        pytest.param(13000, (13, 0), id="13.0"),
        pytest.param(12040, (12, 4), id="12.4"),
        pytest.param(12080, (12, 8), id="12.8"),
        pytest.param(11020, (11, 2), id="11.2"),
    ],
)
def test_cuda_driver_version_parsing(encoded, expected):
    assert parse_cuda_version(encoded) == expected


# -- startup errors -------------------------------------------------------------------------

@pytest.mark.parametrize(
    "code, says",
    [
        pytest.param(
            pynvml.NVML_ERROR_LIBRARY_NOT_FOUND,
            ["libnvidia-ml.so.1 not found", "install the NVIDIA driver",
             "NVIDIA container runtime", "NVIDIA_DRIVER_CAPABILITIES=utility"],
            id="library missing",
        ),
        pytest.param(
            pynvml.NVML_ERROR_DRIVER_NOT_LOADED,
            ["kernel driver is not loaded", "lsmod | grep nvidia"],
            id="driver not loaded",
        ),
        pytest.param(
            pynvml.NVML_ERROR_LIB_RM_VERSION_MISMATCH,
            ["differ in version", "reboot"],
            id="library and kernel driver versions differ",
        ),
        pytest.param(
            pynvml.NVML_ERROR_NO_PERMISSION, ["/dev/nvidia", "NVIDIA container runtime"],
            id="no permission on the device files",
        ),
        pytest.param(pynvml.NVML_ERROR_UNKNOWN, ["Unknown Error", "check the NVIDIA driver"],
                     id="anything else"),
    ],
)
def test_startup_error_names_the_fix(code, says):
    backend = backend_for(FakeNVML([gpu("GPU-aaa")], init_error=code))
    for call in (backend.discover, backend.sample):
        with pytest.raises(BackendUnavailable) as raised:
            call()
        for words in says:
            assert words in str(raised.value)
        assert isinstance(raised.value.__cause__, pynvml.NVMLError)
    backend.close()  # nothing was initialised: nothing to shut down


def test_missing_python_binding_names_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    with pytest.raises(BackendUnavailable, match="pip install nvidia-ml-py"):
        NVMLBackend().discover()


# -- sampling -------------------------------------------------------------------------------

FULL = dict(memory_used=3 * GiB, utilization_percent=42, temperature_celsius=61,
            power_milliwatts=123_456)


def test_sample_reads_every_field():
    (sample,) = backend_for(FakeNVML([gpu("GPU-aaa", **FULL)]), now=1234.5).sample()
    assert sample.uuid == "GPU-aaa" and sample.timestamp == 1234.5
    assert sample.utilization_ratio == pytest.approx(0.42)
    assert sample.memory_used_bytes == 3 * GiB
    assert sample.temperature_celsius == 61.0
    assert sample.power_watts == pytest.approx(123.456)
    assert sample.errors == ()


@pytest.mark.parametrize(
    "field, attribute",
    [
        pytest.param("power", "power_watts", id="power not supported"),
        pytest.param("utilization", "utilization_ratio", id="utilization not supported"),
        pytest.param("temperature", "temperature_celsius", id="temperature not supported"),
        pytest.param("memory", "memory_used_bytes", id="memory not supported"),
    ],
)
def test_an_unsupported_field_is_none_and_named_while_the_others_are_read(field, attribute):
    nvml = FakeNVML([gpu("GPU-aaa", **FULL)], unsupported={("GPU-aaa", field)})
    (sample,) = backend_for(nvml).sample()
    assert getattr(sample, attribute) is None
    assert sample.errors == (f"{field}: not supported",)
    others = {"power_watts", "utilization_ratio", "temperature_celsius", "memory_used_bytes"} - {attribute}
    assert all(getattr(sample, name) is not None for name in others)


def test_a_field_without_permission_is_named_with_nvmls_reason():
    nvml = FakeNVML([gpu("GPU-aaa", **FULL)],
                    field_errors={("GPU-aaa", "power"): pynvml.NVML_ERROR_NO_PERMISSION})
    (sample,) = backend_for(nvml).sample()
    assert sample.power_watts is None and sample.temperature_celsius is not None
    assert sample.errors == ("power: Insufficient Permissions",)


def test_a_mig_instance_has_no_utilization_but_its_other_fields():
    nvml = FakeNVML([gpu("GPU-a100", mig_slots=[gpu("MIG-a0", **FULL)])])
    (sample,) = backend_for(nvml).sample()
    assert sample.uuid == "MIG-a0"
    assert sample.utilization_ratio is None
    assert sample.errors == ("utilization: not supported",)
    assert sample.memory_used_bytes == 3 * GiB


def test_a_lost_gpu_spoils_only_its_own_sample_and_is_read_again_once_back():
    nvml = FakeNVML([gpu("GPU-lost", **FULL), gpu("GPU-ok", **FULL)])
    backend = backend_for(nvml)
    backend.discover()
    nvml.lose_gpu("GPU-lost")

    for _ in range(2):  # still lost on the second sample: its UUID is looked up and fails
        lost, ok = backend.sample()
        assert (lost.uuid, lost.errors) == ("GPU-lost", ("device: GPU is lost",))
        assert (lost.utilization_ratio, lost.memory_used_bytes, lost.temperature_celsius,
                lost.power_watts) == (None,) * 4
        assert ok.errors == () and ok.utilization_ratio == pytest.approx(0.42)

    nvml.recover_gpu("GPU-lost")  # back under a new handle: the old one stays lost
    lost, ok = backend.sample()
    assert lost.errors == () and lost.memory_used_bytes == 3 * GiB
    assert nvml.calls.count("nvmlDeviceGetHandleByUUID") == 2
    backend.sample()
    assert nvml.calls.count("nvmlDeviceGetHandleByUUID") == 2  # the new handle is kept


def test_an_unknown_error_on_one_field_spoils_the_device_not_the_others():
    nvml = FakeNVML([gpu("GPU-bad", **FULL), gpu("GPU-ok", **FULL)],
                    field_errors={("GPU-bad", "temperature"): pynvml.NVML_ERROR_UNKNOWN})
    bad, ok = backend_for(nvml).sample()
    assert bad.errors == ("device: Unknown Error",)
    assert bad.utilization_ratio is None and bad.memory_used_bytes is None
    assert ok.errors == () and ok.temperature_celsius == 61.0


# -- lifecycle ------------------------------------------------------------------------------

def test_nvml_is_initialised_lazily_once_and_close_is_idempotent():
    nvml = FakeNVML([gpu("GPU-aaa")])
    backend = backend_for(nvml)
    backend.close()
    assert nvml.calls == []  # nothing touched before first use
    backend.discover()
    backend.sample()
    backend.discover()
    assert nvml.calls.count("nvmlInit") == 1
    backend.close()
    backend.close()
    assert nvml.calls.count("nvmlShutdown") == 1 and nvml.initialised == 0
    assert [s.errors for s in backend.sample()] == [()]  # used again: initialised again
    assert nvml.initialised == 1
