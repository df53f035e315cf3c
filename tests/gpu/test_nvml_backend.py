"""NVMLBackend on a real NVIDIA GPU: discovery by UUID, and a CuPy load seen in its samples.

Cross-checked against pynvml called directly (never nvidia-smi). Prints what the GPU reported
and the cost of one sample per device, the figure docs/ quotes.
"""

from __future__ import annotations

import statistics
import threading
import time

import pytest

from gpu_monitor.backends.nvml import NVMLBackend

LOAD_SECONDS = 3.0


@pytest.fixture
def backend():
    backend = NVMLBackend()
    yield backend
    backend.close()


def _pynvml_view():
    """{uuid: (memory total, MIG mode on)} for every GPU, read with pynvml directly."""
    import pynvml

    pynvml.nvmlInit()
    try:
        view = {}
        for i in range(pynvml.nvmlDeviceGetCount()):
            handle = pynvml.nvmlDeviceGetHandleByIndex(i)
            try:
                mig = pynvml.nvmlDeviceGetMigMode(handle)[0] == pynvml.NVML_DEVICE_MIG_ENABLE
            except pynvml.NVMLError_NotSupported:
                mig = False
            view[pynvml.nvmlDeviceGetUUID(handle)] = (pynvml.nvmlDeviceGetMemoryInfo(handle).total, mig)
        return view
    finally:
        pynvml.nvmlShutdown()


def test_discovery_finds_the_gpus_by_uuid(backend):
    devices = backend.discover()
    print(f"\ndriver {backend.driver_version}, CUDA {backend.cuda_driver_version}")
    for d in devices:
        print(f"  {d.kind} {d.index} {d.uuid} {d.name!r} {d.memory_total_bytes} B parent={d.parent_uuid}")
    assert devices
    assert backend.driver_version and backend.cuda_driver_version >= (11, 0)
    for d in devices:
        assert d.uuid.startswith({"gpu": "GPU-", "mig": "MIG-"}[d.kind])
        assert d.docker_device_id == d.uuid
        assert d.memory_total_bytes and d.memory_total_bytes > 0
    expected = _pynvml_view()
    whole = {uuid: total for uuid, (total, mig) in expected.items() if not mig}
    assert {d.uuid: d.memory_total_bytes for d in devices if d.kind == "gpu"} == whole
    assert {d.parent_uuid for d in devices if d.kind == "mig"} <= {
        uuid for uuid, (_, mig) in expected.items() if mig
    }


def _cuda_uuid(cupy) -> str | None:
    """The NVML UUID of CuPy's current device, when CuPy reports it."""
    raw = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id).get("uuid")
    if not raw:
        return None
    h = (raw.encode("latin-1") if isinstance(raw, str) else bytes(raw)).hex()
    return f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"


def test_a_cupy_load_shows_in_utilization(backend):
    cupy = pytest.importorskip("cupy")
    devices = backend.discover()
    if any(d.kind == "mig" for d in devices):
        pytest.skip("MIG instances do not report utilisation; this check needs a whole GPU")

    started, stop = threading.Event(), threading.Event()
    failure: list[BaseException] = []

    def load():
        try:
            a = cupy.random.random((8192, 8192), dtype=cupy.float32)
            deadline = time.monotonic() + LOAD_SECONDS
            while time.monotonic() < deadline and not stop.is_set():
                for _ in range(4):
                    a = a @ a
                    a /= cupy.abs(a).max()
                cupy.cuda.Device().synchronize()
                started.set()
        except BaseException as e:  # reported by the main thread
            failure.append(e)
            started.set()

    thread = threading.Thread(target=load, name="cupy-load")
    thread.start()
    try:
        assert started.wait(60), "the CuPy load did not start"
        assert not failure, failure
        uuid = _cuda_uuid(cupy)
        target = uuid if uuid in {d.uuid for d in devices} else devices[0].uuid
        samples = []
        deadline = time.monotonic() + LOAD_SECONDS
        while time.monotonic() < deadline and thread.is_alive():
            samples.append(next(s for s in backend.sample() if s.uuid == target))
            time.sleep(0.2)  # NVML's utilisation period is 1/6 s to 1 s
    finally:
        stop.set()
        thread.join()
    assert not failure, failure

    print(f"\nload on {target} (CuPy says {uuid})")
    for s in samples:
        print(f"  util={s.utilization_ratio} mem={s.memory_used_bytes} temp={s.temperature_celsius} "
              f"power={s.power_watts} errors={s.errors}")
    assert samples and all(s.errors == () for s in samples)
    assert max(s.utilization_ratio for s in samples) > 0


def test_the_cost_of_one_sample_per_device(backend):
    devices = backend.discover()
    backend.sample()  # warm
    costs = []
    for _ in range(50):
        t0 = time.perf_counter()
        backend.sample()
        costs.append(time.perf_counter() - t0)
    per_device = statistics.median(costs) / len(devices)
    print(f"\nsample(): median {statistics.median(costs) * 1e3:.3f} ms for {len(devices)} device(s), "
          f"{per_device * 1e3:.3f} ms per device (min {min(costs) * 1e3:.3f} ms, "
          f"max {max(costs) * 1e3:.3f} ms)")
    assert per_device < 0.007  # cheaper than one nvidia-smi call (7-20 ms), or NVML is misused
