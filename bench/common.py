"""What several benchmarks repeat, in one place: the repository's root, progress lines, and the
commit and machine a report names. What a benchmark measures stays in its own script.

Standard library only: image_sizes.py runs with the system's python3.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def log(message: str) -> None:
    """A progress line on stderr, "bench: <message>", apart from the report on stdout."""
    print(f"bench: {message}", file=sys.stderr, flush=True)


def output(*argv: str, timeout: float = 30) -> str:
    """What `argv` prints, run in the repository's root, without trailing whitespace; "?" if it
    cannot run. For facts a report names (versions, the machine), not for measurements."""
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, cwd=REPO).stdout.rstrip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def git_commit() -> str:
    """The checked-out commit, abbreviated."""
    return output("git", "rev-parse", "--short", "HEAD")


def cpu_model(default: str, timeout: float = 30) -> str:
    """The CPU's model name as lscpu gives it, or `default`."""
    return next((line.split(":", 1)[1].strip() for line in output("lscpu", timeout=timeout).splitlines()
                 if line.startswith("Model name")), default)


def this_machine() -> str:
    """How a report names the machine it ran on: "this 2-CPU machine (x86_64, Linux 6.1.0)"."""
    return f"this {os.cpu_count()}-CPU machine ({platform.machine()}, {platform.system()} {platform.release()})"
