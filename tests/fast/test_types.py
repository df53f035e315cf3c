"""The monitor's own code, and the hub's modules written with full hints, carry type hints; mypy
checks them in the fast tier."""

import subprocess
import sys

import pytest

from ..conftest import ROOT

# the hub's modules that carry type hints throughout (the rest extend untyped JupyterHub classes)
TYPED_HUB_MODULES = ["hub/gpuhub/monitor_client.py", "hub/gpuhub/start_queue.py", "hub/gpuhub/settings.py",
                     "hub/gpuhub/catalogue.py", "hub/gpuhub/siteconfig.py"]


def mypy(*targets: str) -> subprocess.CompletedProcess:
    pytest.importorskip("mypy", reason="mypy is not installed (tests/requirements-fast.txt)")
    return subprocess.run([sys.executable, "-m", "mypy", "--no-error-summary", "--ignore-missing-imports",
                           *targets], cwd=ROOT, capture_output=True, text=True)


def test_gpu_monitor_type_checks():
    r = mypy("gpu_monitor/gpu_monitor")
    assert r.returncode == 0, r.stdout + r.stderr


def test_the_hubs_typed_modules_type_check():
    r = mypy(*TYPED_HUB_MODULES)
    assert r.returncode == 0, r.stdout + r.stderr
