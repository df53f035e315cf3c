"""The swarm tier (`-m swarm`): gpuhub's ground for running across Docker Swarm nodes, three
engines on this machine (tests/harness/swarm.py). Needs root and dockerd; no GPU.

Fixtures:
- `swarm` (module): the running `Swarm`, torn down after each module (not at the session's end:
  the docker tier's last test restarts the host's dockerd and needs it to be the only one; a new
  swarm costs about 25 s); the daemons' and registry's logs go to test-artifacts/<test name>/ when
  a test using it fails.
- `debian` (module): debian:bookworm-slim pushed to the swarm's registry; its reference for the nodes.
- `services`: a factory `services(name_prefix, *docker_service_create_args) -> name` whose
  services (and `services.network(...)` networks) are removed after the test.
"""

import os
import shutil

import pytest

from ..harness.swarm import Swarm, unique, wait_until


@pytest.fixture(scope="module")
def swarm():
    if os.geteuid() != 0:
        pytest.skip("the swarm tier needs root (network namespaces, a bridge, iptables, extra dockerd)")
    if shutil.which("dockerd") is None:
        pytest.skip("the swarm tier needs dockerd (Debian's docker.io; bin/setup-host installs it)")
    with Swarm() as started:
        yield started


@pytest.fixture(scope="module")
def debian(swarm):
    return swarm.push("debian:bookworm-slim")


class Services:
    """Services and networks a test creates on the swarm, removed after it."""

    def __init__(self, swarm: Swarm):
        self.swarm = swarm
        self.names: list[str] = []
        self.networks: list[str] = []

    def __call__(self, prefix: str, *args: str) -> str:
        name = unique(f"gpuhub-swtest-{prefix}")
        self.names.append(name)
        # sleep and servers do not handle SIGTERM: a short grace keeps removal quick
        self.swarm.docker(self.swarm.manager, "service", "create", "--detach", "--quiet", "--name", name,
                          "--stop-grace-period", "1s", *args)
        return name

    def network(self, prefix: str, *args: str) -> str:
        name = unique(f"gpuhub-swtest-{prefix}")
        self.networks.append(name)
        self.swarm.docker(self.swarm.manager, "network", "create", "--driver", "overlay", *args, name)
        return name

    def remove(self, name: str) -> None:
        self.swarm.docker(self.swarm.manager, "service", "rm", name, check=False)
        self.names.remove(name)

    def remove_all(self) -> None:
        if self.names:
            self.swarm.docker(self.swarm.manager, "service", "rm", *self.names, check=False)
        for network in self.networks:
            # a network stays in use until the removed services' tasks are gone
            wait_until(lambda net=network: self.swarm.docker(self.swarm.manager, "network", "rm", net,
                                                             check=False).returncode == 0,
                       60, f"network {network} removed")


@pytest.fixture
def services(swarm):
    made = Services(swarm)
    try:
        yield made
    finally:
        made.remove_all()

