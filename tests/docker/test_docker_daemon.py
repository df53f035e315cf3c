"""The Docker daemon restarts under the running stack (issue "Survive faults", item 6). Marked
`last`: it stops every container on the machine, so it runs after every other test of the
session, the browser tier's included (tests/conftest.py moves it to the end).

Without live-restore (this machine's default), stopping dockerd stops every container. What
comes back by itself: the services with `restart: unless-stopped` (proxy, hub, db, monitor,
demo provider). What does not: user servers (DockerSpawner creates them with auto-remove, so they
are gone); the hub notices at its next poll, marks them stopped, and their devices are released.
With `"live-restore": true` in /etc/docker/daemon.json, containers keep running through a
daemon restart (README, "GPUs" and "What survives what").

Runs only where bin/setup-host started dockerd itself (CI machines and fresh hosts without a
service manager): restarting a daemon that systemd manages is not this suite's business, and
that case is reported as a skip with its reason, never as a pass.
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from ..harness.stack import PROJECT, ROOT, wait_for
from .helpers import allocations

pytestmark = [pytest.mark.docker, pytest.mark.reliability, pytest.mark.last]


def dockerd_started_by_setup_host() -> bool:
    out = subprocess.run(["pgrep", "-x", "dockerd"], capture_output=True, text=True).stdout.split()
    if len(out) != 1 or os.geteuid() != 0:
        return False
    with open(f"/proc/{out[0]}/cmdline", "rb") as f:
        args = f.read().split(b"\0")
    parent = open(f"/proc/{out[0]}/stat").read().split()[3]
    systemd = parent == "1" and os.path.exists("/run/systemd/system")
    return args[0].endswith(b"dockerd") and not systemd


def test_a_docker_daemon_restart_brings_the_services_back_and_frees_the_lost_servers_devices(stack):
    if not dockerd_started_by_setup_host():
        pytest.skip("dockerd is managed by the system here; this test restarts only a daemon bin/setup-host started")
    r = stack.start_server("carol", {"profile": "opencl", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    assert len(allocations(stack, "carol")) == 1
    live_restore = "true" in subprocess.run(["docker", "info", "-f", "{{.LiveRestoreEnabled}}"],
                                            capture_output=True, text=True).stdout
    subprocess.run(["pkill", "-x", "dockerd"], check=True)
    stopped = time.monotonic()
    wait_for(lambda: subprocess.run(["pgrep", "-x", "dockerd"]).returncode != 0, 60, what="dockerd to stop")
    subprocess.run([str(ROOT / "bin" / "setup-host")], check=True, capture_output=True, timeout=300)
    stack.wait_hub(timeout=180)
    back = time.monotonic() - stopped
    # the test provider has no restart policy; everything else came back by itself
    stack.compose("up", "-d", "--wait", "test-oidc", "demo-oidc")
    if live_restore:
        assert stack.api("GET", "users/carol").json()["servers"][""]["ready"]
        stack.stop_server("carol")
    else:
        assert f"{PROJECT}-carol" not in stack.user_containers()  # auto-removed with the daemon's stop
        wait_for(lambda: not stack.api("GET", "users/carol").json()["servers"], 90, what="the hub noticing")
    wait_for(lambda: allocations(stack, "carol") == [], 60, what="carol's device released")
    print(f"\ndocker daemon restart (live-restore {'on' if live_restore else 'off'}): hub reachable again "
          f"{back:.1f} s after the daemon was stopped; the lost server's device released")
    # and the hub still starts servers
    r = stack.start_server("carol", {"profile": "minimal", "gpus": 0})
    assert r.status_code in (201, 202), r.text
    stack.stop_server("carol")
