"""The images' smoke notebooks on a real NVIDIA GPU: the GPU path must run and be checked.

The notebooks are the ones the images ship (images/*/smoke/); here they run in this Python,
which must have the same libraries (torch, cupy, pyopencl). No Docker on the GPU machines.
"""

import importlib.util
import os
from pathlib import Path

import pytest

from ..smoke import run_notebook_in_process

IMAGES = Path(__file__).resolve().parents[2] / "images"


def test_cuda_notebook_runs_cupy_and_torch_on_the_gpu():
    result = run_notebook_in_process(IMAGES / "cuda" / "smoke" / "cuda.ipynb")
    assert result["path"] == "gpu", result
    assert result["ok"] is True, result
    assert result["checks"] and all(c["ok"] for c in result["checks"].values()), result


def test_opencl_notebook_uses_the_nvidia_platform(tmp_path, monkeypatch):
    if importlib.util.find_spec("pyopencl") is None:
        pytest.skip("pyopencl is not installed here: carry its wheel (tests/gpu/README.md)")
    # The same ICD file the OpenCL image ships, so the loader finds NVIDIA's library.
    vendors = tmp_path / "vendors"
    vendors.mkdir()
    (vendors / "nvidia.icd").write_text((IMAGES / "opencl" / "nvidia.icd").read_text())
    monkeypatch.setenv("OCL_ICD_VENDORS", str(vendors))
    monkeypatch.setenv("POCL_CACHE_DIR", str(tmp_path / "pocl"))
    result = run_notebook_in_process(IMAGES / "opencl" / "smoke" / "opencl.ipynb")
    assert result["platform"].startswith("NVIDIA"), result
    assert result["path"] == "gpu", result
    assert result["ok"] is True, result
    assert os.environ["OCL_ICD_VENDORS"] == str(vendors)
