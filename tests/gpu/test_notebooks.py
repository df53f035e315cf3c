"""The images' smoke notebooks on a real NVIDIA GPU: the GPU path must run and be checked.

The notebooks are the ones the images ship (images/*/smoke/); here they run in this Python,
which must have the same libraries (torch, cupy, pyopencl). No Docker on the GPU machines.
"""

import os
from pathlib import Path

from ..smoke import run_notebook_in_process

IMAGES = Path(__file__).resolve().parents[2] / "images"


def test_cuda_notebook_runs_cupy_and_torch_on_the_gpu():
    result = run_notebook_in_process(IMAGES / "cuda" / "smoke" / "cuda.ipynb")
    assert result["path"] == "gpu", result
    assert result["ok"] is True, result
    assert result["checks"] and all(c["ok"] for c in result["checks"].values()), result


def test_opencl_notebook_uses_the_nvidia_platform(nvidia_icd):
    result = run_notebook_in_process(IMAGES / "opencl" / "smoke" / "opencl.ipynb")
    assert result["platform"].startswith("NVIDIA"), result
    assert result["path"] == "gpu", result
    assert result["ok"] is True, result
    assert os.environ["OCL_ICD_VENDORS"] == str(nvidia_icd)
