"""The benchmarks (bench/) cannot run here (they need Docker and take long), but a broken import
or command line must not wait for the next `bin/bench`: every module imports, every script
answers `--help` run as bin/bench runs it (`python -m bench.NAME` from the repository's root,
gpuhub's packages on PYTHONPATH), and none edits sys.path."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys

import pytest

from ..conftest import ROOT

MODULES = sorted(path.stem for path in (ROOT / "bench").glob("*.py") if path.stem != "__init__")
SCRIPTS = [name for name in MODULES if 'if __name__ == "__main__":' in (ROOT / "bench" / f"{name}.py").read_text()]


def test_the_benchmarks_are_found():
    assert {"run_all", "proxy_compare", "login_burst", "docs_section"} <= set(MODULES)
    assert "run_all" in SCRIPTS and "docs_section" not in SCRIPTS


@pytest.mark.parametrize("name", MODULES)
def test_every_bench_module_imports(name):
    importlib.import_module(f"bench.{name}")


@pytest.mark.parametrize("name", MODULES)
def test_no_bench_module_edits_sys_path(name):
    assert "sys.path" not in (ROOT / "bench" / f"{name}.py").read_text()


def test_every_script_answers_help_as_bin_bench_runs_it():
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "hub"), str(ROOT / "gpu_monitor")])}
    running = {name: subprocess.Popen([sys.executable, "-m", f"bench.{name}", "--help"], cwd=ROOT, env=env,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for name in SCRIPTS}  # at once: each takes a second or so to import
    failed = {}
    for name, proc in running.items():
        out, err = proc.communicate(timeout=120)
        if proc.returncode != 0 or not out.startswith("usage:"):
            failed[name] = (proc.returncode, err[-1000:])
    assert failed == {}
