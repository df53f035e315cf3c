"""The GPU monitor's agents on a real Docker Swarm (three engines on this machine,
tests/harness/swarm.py), as a Swarm deployment runs them: the agent is a global service that
reports each node's devices to one PostgreSQL (a service on the manager) under Swarm's node id;
Swarm's node list (read from the manager's engine, as the monitor does with GPUHUB_SWARM) and
the agents' heartbeats decide each node's state (inventory.node_states). Tested: a node label
added with `docker node update` reaches the allocator, a drained node is drained and comes back,
a node whose engine stops is lost and comes back with the same devices, a ready node whose agent
is gone says so, and the other nodes stay up throughout."""

from __future__ import annotations

import secrets
import subprocess
import time

import docker
import pytest
import sqlalchemy as sa

from gpu_monitor.allocator import AllocationRequest, Granted, Policy, decide
from gpu_monitor.inventory import Inventory, node_states
from gpu_monitor.jobs.inventory_refresher import read_swarm_nodes
from gpu_monitor.store import AllocationStore

from ..harness.swarm import ROOT, Swarm, wait_until

pytestmark = pytest.mark.swarm

MONITOR_IMAGE = "gpuhub/gpu-monitor:latest"
DB_PORT = 55432  # published on the manager's address, for this process (as the monitor's API reaches it)
NODE_TIMEOUT = 6.0  # agents report every second
PREFIX = "gpuhub-swtest-agents"


def _host_docker(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=900, **kwargs)


class Cluster:
    def __init__(self, swarm: Swarm, store: AllocationStore, agent: str):
        self.swarm, self.store, self.agent = swarm, store, agent
        self.inventory = Inventory(store.engine)
        self.manager_api = docker.DockerClient(base_url=f"unix://{swarm.manager.sock}")

    def node_id(self, node) -> str:
        return self.swarm.node_ids[node.name]

    def states(self) -> dict[str, tuple[str, str]]:
        """{hostname: (state, reason)} as the monitor's API would decide them now."""
        records, _, _ = self.inventory.read()
        nodes = node_states(records, time.time(), NODE_TIMEOUT, read_swarm_nodes(self.manager_api))
        return {n.hostname: (n.state, n.reason) for n in nodes}

    def wait_state(self, hostname: str, state: str, timeout: float = 90) -> str:
        found = wait_until(lambda: (s := self.states().get(hostname)) and s[0] == state and s, timeout,
                           f"node {hostname} {state}")
        return found[1]  # the reason ("" when up)


@pytest.fixture(scope="module")
def cluster(swarm):
    if _host_docker("image", "inspect", MONITOR_IMAGE).returncode != 0:
        _host_docker("compose", "build", "gpu-monitor", cwd=ROOT, check=True)
    postgres, monitor = swarm.push("postgres:15"), swarm.push(MONITOR_IMAGE)
    manager = ["docker", "-H", f"unix://{swarm.manager.sock}"]
    password = secrets.token_hex(16)
    secret, network, db, agent = (f"{PREFIX}-{what}" for what in ("dbpw", "net", "db", "agent"))
    subprocess.run([*manager, "secret", "create", secret, "-"], input=password, text=True, check=True,
                   capture_output=True)
    store = None
    try:
        swarm.docker(swarm.manager, "network", "create", "--driver", "overlay", network)
        swarm.docker(swarm.manager, "node", "update", "--label-rm", "gpu", swarm.node_ids[swarm.gpu_node.name],
                     check=False)
        # DNS round robin: this kernel has no IPVS for a service's virtual IP (tests/harness/swarm.py)
        swarm.docker(swarm.manager, "service", "create", "--detach", "--quiet", "--name", db,
                     "--endpoint-mode", "dnsrr", "--network", network, "--constraint", "node.role==manager",
                     "--publish", f"mode=host,target=5432,published={DB_PORT}",
                     "--secret", f"source={secret},target=dbpw", "-e", "POSTGRES_USER=jupyterhub",
                     "-e", "POSTGRES_DB=jupyterhub", "-e", "POSTGRES_PASSWORD_FILE=/run/secrets/dbpw", postgres)
        url = sa.URL.create("postgresql+psycopg2", username="jupyterhub", password=password,
                            host=swarm.manager.address, port=DB_PORT, database="jupyterhub")
        store = AllocationStore.from_url(url)
        wait_until(lambda: store.migrate() is not None, 180, "PostgreSQL on the manager, migrated")
        # what the issue asks an operator to do for a GPU node: one label
        swarm.docker(swarm.manager, "node", "update", "--label-add", "gpu=fake-h100",
                     swarm.node_ids[swarm.gpu_node.name])
        swarm.docker(swarm.manager, "service", "create", "--detach", "--quiet", "--name", agent, "--mode", "global",
                     "--network", network, "--secret", f"source={secret},target=dbpw",
                     "--hostname", "{{.Node.Hostname}}", "-e", "GPUHUB_NODE_NAME={{.Node.ID}}",
                     "-e", f"GPUHUB_DB_HOST={db}", "-e", "GPUHUB_DB_PASSWORD_FILE=/run/secrets/dbpw",
                     "-e", "GPUHUB_MONITOR_BACKEND=cpu-slices", "-e", "GPUHUB_CPU_SLICES=1",
                     "-e", "GPUHUB_MONITOR_SAMPLE_SECONDS=1", "--stop-grace-period", "2s",
                     monitor, "python3", "-m", "gpu_monitor", "agent")
        yield Cluster(swarm, store, agent)
    finally:
        swarm.docker(swarm.manager, "node", "update", "--label-rm", "gpu", swarm.node_ids[swarm.gpu_node.name],
                     check=False)
        swarm.docker(swarm.manager, "service", "rm", agent, db, check=False)
        wait_until(lambda: swarm.docker(swarm.manager, "network", "rm", network, check=False).returncode == 0,
                   60, f"network {network} removed")
        swarm.docker(swarm.manager, "secret", "rm", secret, check=False)
        if store is not None:
            store.dispose()


def test_every_nodes_agent_reports_its_devices_under_swarms_node_id(cluster):
    swarm = cluster.swarm
    ids = {node.hostname: cluster.node_id(node) for node in swarm.nodes}
    assert len(set(ids.values())) == 3
    wait_until(lambda: {r.id for r in cluster.inventory.read()[0]} == set(ids.values()), 180,
               "an agent's report from each of the three nodes")
    records, devices, _ = cluster.inventory.read()
    assert {r.id: r.hostname for r in records} == {v: k for k, v in ids.items()}
    # one CPU slice on each node, each its own UUID (its node's host name makes it)
    assert sorted(d.node for d in devices) == sorted(ids.values())
    assert len({d.uuid for d in devices}) == 3
    # readings travel from each node
    wait_until(lambda: len(cluster.inventory.read()[2]) == 3, 60, "a reading of every node's slice")
    assert {state for state, _ in cluster.states().values()} == {"up"}
    # the label an operator put on the GPU node reaches the allocator
    nodes = node_states(records, time.time(), NODE_TIMEOUT, read_swarm_nodes(cluster.manager_api))
    gpu = ids[swarm.gpu_node.hostname]
    assert next(n for n in nodes if n.id == gpu).labels == {"gpu": "fake-h100", "gpuhub.node": "sw3"}
    decision = decide(AllocationRequest("ada", "", "cuda", 1, node_labels=(("gpu", "fake-h100"),)), devices, [],
                      Policy(), time.time(), "a1", nodes=nodes)
    assert isinstance(decision, Granted) and decision.allocation.node == gpu


def test_a_drained_node_is_drained_and_comes_back_when_active(cluster):
    swarm, worker = cluster.swarm, cluster.swarm.workers[0]
    node_id = cluster.node_id(worker)
    swarm.docker(swarm.manager, "node", "update", "--availability", "drain", node_id)
    try:
        reason = cluster.wait_state(worker.hostname, "drained", timeout=30)
        assert "drained in Swarm" in reason
        # the drain stopped the agent's task there too; the node stays drained, not "no agent"
        time.sleep(NODE_TIMEOUT + 1)
        assert cluster.states()[worker.hostname][0] == "drained"
        assert {cluster.states()[n.hostname][0] for n in swarm.nodes if n != worker} == {"up"}
    finally:
        swarm.docker(swarm.manager, "node", "update", "--availability", "active", node_id)
    cluster.wait_state(worker.hostname, "up", timeout=120)


def test_a_node_whose_engine_stops_is_lost_and_back_with_the_same_devices(cluster):
    swarm, worker = cluster.swarm, cluster.swarm.workers[0]
    node_id = cluster.node_id(worker)
    before = sorted(d.uuid for d in cluster.inventory.read()[1] if d.node == node_id)
    stopped = time.monotonic()
    swarm.stop_engine(worker)
    try:
        reason = cluster.wait_state(worker.hostname, "lost", timeout=120)
        print(f"\n{worker.hostname} lost {time.monotonic() - stopped:.1f} s after its engine stopped: {reason}")
        assert {cluster.states()[n.hostname][0] for n in swarm.nodes if n != worker} == {"up"}
    finally:
        swarm.start_engine(worker)
    started = time.monotonic()
    cluster.wait_state(worker.hostname, "up", timeout=180)
    print(f"{worker.hostname} up again {time.monotonic() - started:.1f} s after its engine started")
    assert sorted(d.uuid for d in cluster.inventory.read()[1] if d.node == node_id) == before


def test_a_ready_node_whose_agent_is_gone_says_so(cluster):
    swarm, worker = cluster.swarm, cluster.swarm.workers[-1]
    away = f"node.hostname!={worker.hostname}"
    swarm.docker(swarm.manager, "service", "update", "--detach", "--quiet", "--constraint-add", away, cluster.agent)
    try:
        reason = cluster.wait_state(worker.hostname, "no-agent", timeout=60)
        assert "its monitor agent has not reported for" in reason
    finally:
        swarm.docker(swarm.manager, "service", "update", "--detach", "--quiet", "--constraint-rm", away,
                     cluster.agent)
    cluster.wait_state(worker.hostname, "up", timeout=120)
