"""GPU tier: runs only on a machine with an NVIDIA GPU and its driver (no Docker needed).

Everything here is marked `gpu` (deselected by bin/test). On a machine without an NVIDIA
driver the whole tier is skipped with the reason NVML gave, so it is never counted as passed.
See tests/gpu/README.md for how to run it and what it needs.
"""

import pytest


def _nvml_reason() -> str | None:
    try:
        import pynvml  # nvidia-ml-py
    except ImportError:
        return "nvidia-ml-py is not installed"
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as e:
        return f"no NVIDIA driver (NVML: {e})"
    try:
        if pynvml.nvmlDeviceGetCount() == 0:
            return "NVML sees no GPU"
    finally:
        pynvml.nvmlShutdown()
    return None


def pytest_collection_modifyitems(config, items):
    here = __file__.rsplit("/", 1)[0]
    reason = None
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(pytest.mark.gpu)
            reason = reason or _nvml_reason() or ""
            if reason:
                item.add_marker(pytest.mark.skip(reason=f"GPU tier: {reason}"))


@pytest.fixture
def nvidia_icd(tmp_path, monkeypatch):
    """pyopencl, and the ICD loader pointed at the vendor file the OpenCL image ships, so it
    finds NVIDIA's OpenCL library. Skips (with the reason) where pyopencl is not installed."""
    import importlib.util
    from pathlib import Path

    if importlib.util.find_spec("pyopencl") is None:
        pytest.skip("pyopencl is not installed here: carry its wheel (tests/gpu/README.md)")
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    icd = Path(__file__).resolve().parents[2] / "images" / "opencl" / "nvidia.icd"
    (vendors / "nvidia.icd").write_text(icd.read_text())
    monkeypatch.setenv("OCL_ICD_VENDORS", str(vendors))
    monkeypatch.setenv("POCL_CACHE_DIR", str(tmp_path / "pocl"))
    return vendors
