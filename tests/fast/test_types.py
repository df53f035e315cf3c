"""The monitor's own code carries type hints, and mypy checks them in the fast tier."""

import subprocess
import sys

import pytest

from ..conftest import ROOT


def test_gpu_monitor_type_checks():
    pytest.importorskip("mypy", reason="mypy is not installed (tests/requirements-fast.txt)")
    r = subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--ignore-missing-imports",
                        "gpu_monitor"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
