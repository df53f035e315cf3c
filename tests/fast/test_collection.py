"""`pytest` alone (the fast tier) needs only tests/requirements-fast.txt: the docker and browser
tiers' clients (tests/requirements.txt) must not be imported just to collect the suite."""

import os
import subprocess
import sys

from ..conftest import ROOT

# in tests/requirements.txt only; requests comes with jupyterhub (hub/requirements.txt)
TIER_ONLY = ("websocket", "playwright", "schemathesis", "hypothesis", "mypy")

COLLECT_WITHOUT = f"""
import importlib.abc, sys
class Missing(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {TIER_ONLY!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
sys.meta_path.insert(0, Missing())
import pytest
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"]))
"""


def test_the_fast_tier_collects_without_the_other_tiers_requirements():
    # installed plugins (schemathesis registers one) would import the blocked modules themselves
    env = {**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"}
    r = subprocess.run([sys.executable, "-c", COLLECT_WITHOUT], cwd=ROOT, env=env, capture_output=True, text=True,
                       timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "error" not in r.stdout.lower().splitlines()[-1], r.stdout[-3000:]
