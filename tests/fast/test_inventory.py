"""Nodes and their agents without a database: which nodes are up (`inventory.node_states`), what
an agent registers and reports (jobs/agent.py) over an inventory kept in memory, and the counters
of a restarted agent. The same against PostgreSQL: tests/docker/test_store.py."""

from __future__ import annotations

import pytest

from gpu_monitor.__main__ import main
from gpu_monitor.devices import Device, Node, Sample
from gpu_monitor.inventory import NodeRecord, node_states
from gpu_monitor.jobs.agent import Agent
from gpu_monitor.monitor import HostInfo
from gpu_monitor.sampler import CounterDeltas, DeviceState
from gpu_monitor.settings import ConfigError, load_settings

from ..aio import run_async

HOST = HostInfo("cpu-slices")


def record(node: str, seen_at: float, **labels: str) -> NodeRecord:
    return NodeRecord(node, f"host-{node}", labels, HOST, agent_started_at=0.0, seen_at=seen_at)


def test_a_node_is_up_while_its_agent_reports_and_lost_after_the_timeout():
    nodes = node_states([record("b", 100.0), record("a", 69.0, gpu="a100"), record("c", 70.0)], now=100.0, timeout=30)
    assert [(n.id, n.state) for n in nodes] == [("a", "lost"), ("b", "up"), ("c", "up")]
    assert nodes[0] == Node("a", "host-a", {"gpu": "a100"}, "lost", "no report from its agent for 31 s (more than 30 s)")
    assert nodes[0].labels == {"gpu": "a100"}


def test_counters_that_went_down_are_a_restarted_agents_and_count_from_zero():
    deltas = CounterDeltas()
    sample = Sample("GPU-0", 0.0, 0.5)
    assert deltas.take({"GPU-0": DeviceState(sample, 10.0, 20.0)}) == {"GPU-0": (0.0, 0.0)}
    assert deltas.take({"GPU-0": DeviceState(sample, 15.0, 30.0)}) == {"GPU-0": (5.0, 10.0)}
    # the agent restarted: its counters began again at 0 and have grown to (1, 4) since
    assert deltas.take({"GPU-0": DeviceState(sample, 1.0, 4.0)}) == {"GPU-0": (1.0, 4.0)}
    assert deltas.take({"GPU-0": DeviceState(sample, 2.0, 6.0)}) == {"GPU-0": (1.0, 2.0)}


class MemoryInventory:
    """The inventory's rules over dicts: a device is the first reporting node's."""

    def __init__(self):
        self.nodes: dict[str, float] = {}
        self.owner: dict[str, str] = {}
        self.readings: dict[str, DeviceState] = {}

    def register(self, node_id, hostname, labels, host, devices, started_at, now):
        self.nodes[node_id] = now
        refused = {d.uuid: self.owner[d.uuid] for d in devices if self.owner.get(d.uuid, node_id) != node_id}
        for d in devices:
            self.owner.setdefault(d.uuid, node_id)
        return refused

    def report(self, node_id, states, now):
        if node_id not in self.nodes:
            return False
        self.nodes[node_id] = now
        self.readings.update({u: s for u, s in states.items() if self.owner.get(u) == node_id})
        return True


def _agent(inventory, node, devices, states):
    return Agent(inventory, node, f"host-{node}", {}, HOST, devices, lambda: states, interval=1.0, clock=lambda: 50.0)


def test_an_agent_reports_only_the_devices_no_other_node_has_and_says_which(caplog):
    inventory = MemoryInventory()
    mine = [Device("CPU-a", 0, "cpu-slice", "cores 0-1"), Device("CPU-b", 1, "cpu-slice", "cores 2-3")]
    state = DeviceState(Sample("CPU-a", 50.0, 0.25), 1.0, 2.0)
    first = _agent(inventory, "n1", mine[:1], {"CPU-a": state})
    second = _agent(inventory, "n2", mine, {"CPU-a": DeviceState(Sample("CPU-a", 50.0, 0.99)),
                                            "CPU-b": DeviceState(Sample("CPU-b", 50.0, 0.5))})
    run_async(first.report())
    run_async(second.report())
    assert second.refused == {"CPU-a": "n1"}
    assert inventory.readings["CPU-a"] == state  # n1's, never n2's
    assert set(inventory.readings) == {"CPU-a", "CPU-b"}
    assert any("device CPU-a is already reported by node n1: not offered from node n2" in r.getMessage()
               for r in caplog.records)


def test_an_agent_whose_node_was_removed_registers_again():
    inventory = MemoryInventory()
    agent = _agent(inventory, "n1", [Device("CPU-a", 0, "cpu-slice", "c")], {})
    run_async(agent.report())
    del inventory.nodes["n1"]  # an operator removed the node's row
    run_async(agent.report())
    assert "n1" in inventory.nodes and agent.registered


def test_the_node_timeout_must_outlast_two_reports_and_names_are_checked():
    with pytest.raises(ConfigError, match="GPUHUB_NODE_TIMEOUT_SECONDS: 9 s is less than twice "
                                          "GPUHUB_MONITOR_SAMPLE_SECONDS"):
        load_settings({"GPUHUB_NODE_TIMEOUT_SECONDS": "9", "GPUHUB_MONITOR_SAMPLE_SECONDS": "5"})
    with pytest.raises(ConfigError, match="GPUHUB_NODE_NAME: 'gpu 2' is not a node name"):
        load_settings({"GPUHUB_NODE_NAME": "gpu 2"})
    assert load_settings({}).node_name == "local"
    assert load_settings({"GPUHUB_NODE_NAME": "8ag3kd0qcwzdc35yeuvt4kh5b"}).node_name == "8ag3kd0qcwzdc35yeuvt4kh5b"


def test_the_command_line_is_the_service_or_the_agent(capsys):
    assert main(["agents"]) == 2
    assert "usage: python -m gpu_monitor [agent]" in capsys.readouterr().err


def swarm_node(node: str, availability: str = "active", status: str = "ready", **labels: str):
    from gpu_monitor.inventory import SwarmNode

    return SwarmNode(node, f"swarm-{node}", labels, availability, status)


SWARM_CASES = {
    "ready and reporting: up, Swarm's name and labels over the agent's": (
        record("a", 100.0, gpu="a100", zone="1"), swarm_node("a", zone="2"),
        ("up", "", "swarm-a", {"gpu": "a100", "zone": "2"})),
    "drained: keeps what it holds, gets nothing new": (
        record("a", 100.0), swarm_node("a", availability="drain"), ("drained", "drained in Swarm", "swarm-a", {})),
    "paused counts as drained": (
        record("a", 100.0), swarm_node("a", availability="pause"), ("drained", "paused in Swarm", "swarm-a", {})),
    "Swarm says down: lost, whatever the agent said last": (
        record("a", 100.0), swarm_node("a", status="down"), ("lost", "Swarm reports it down", "swarm-a", {})),
    "ready but the agent is silent: no agent": (
        record("a", 50.0), swarm_node("a"), ("no-agent", "its monitor agent has not reported for 50 s", "swarm-a", {})),
    "drained, its agent stopped by the drain: still drained": (
        record("a", 10.0), swarm_node("a", availability="drain"), ("drained", "drained in Swarm", "swarm-a", {})),
    "a down node that is also drained is lost": (
        record("a", 100.0), swarm_node("a", availability="drain", status="down"), ("lost", "down", "swarm-a", {})),
}


@pytest.mark.parametrize("rec, swarm, expected", SWARM_CASES.values(), ids=SWARM_CASES.keys())
def test_what_swarm_says_of_a_node_decides_its_state(rec, swarm, expected):
    [node] = node_states([rec], now=100.0, timeout=30, swarm=[swarm])
    state, reason, hostname, labels = expected
    assert (node.state, node.hostname, dict(node.labels)) == (state, hostname, labels)
    assert reason in node.reason


def test_a_swarm_node_without_an_agent_is_listed_with_no_devices_to_offer():
    nodes = node_states([record("a", 100.0)], now=100.0, timeout=30,
                        swarm=[swarm_node("a"), swarm_node("c", gpu="h100"), swarm_node("b", status="down")])
    assert [(n.id, n.state, n.reason) for n in nodes] == [
        ("a", "up", ""), ("b", "lost", "Swarm reports it down"),
        ("c", "no-agent", "no monitor agent has reported from this node")]
    assert nodes[2].labels == {"gpu": "h100"}


def test_swarm_nodes_are_read_from_the_engines_node_list():
    from types import SimpleNamespace

    from gpu_monitor.inventory import SwarmNode
    from gpu_monitor.jobs.inventory_refresher import read_swarm_nodes

    # the fields of `GET /nodes` the monitor reads, as Docker 20.10 answers (abridged); the
    # real list is read on the test swarm (tests/swarm)
    answer = [{"ID": "8ag3kd0qcwzdc35yeuvt4kh5b", "Description": {"Hostname": "gpu-1"},
               "Spec": {"Labels": {"gpu": "a100"}, "Role": "worker", "Availability": "drain"},
               "Status": {"State": "ready", "Addr": "10.99.0.12"}},
              {"ID": "x1", "Description": {"Hostname": "gpu-2"}, "Spec": {"Role": "worker", "Availability": "active"},
               "Status": {"State": "down", "Message": "heartbeat failure"}}]
    docker = SimpleNamespace(api=SimpleNamespace(nodes=lambda: answer))
    assert read_swarm_nodes(docker) == [
        SwarmNode("8ag3kd0qcwzdc35yeuvt4kh5b", "gpu-1", {"gpu": "a100"}, "drain", "ready"),
        SwarmNode("x1", "gpu-2", {}, "active", "down", "heartbeat failure")]


def test_a_node_back_from_down_is_not_up_on_a_heartbeat_from_before_until_its_agent_reports():
    """Measured on the test swarm (2026-12-07): a worker's engine stopped and started again was
    "up" for 3 s on its agent's last heartbeat from before it went down, then "no-agent" until
    the restarted agent registered, and a start in those 3 s was placed there and refused."""
    from gpu_monitor.jobs.inventory_refresher import InventoryRefresher

    refresher = InventoryRefresher(None, None, interval=1, node_timeout=30)
    before = [record("a", 90.0)]
    refresher._track_returns(before, [swarm_node("a")])
    assert refresher._awaiting_report == {}  # never seen down: heartbeats decide as before
    refresher._track_returns(before, [swarm_node("a", status="down")])
    [node] = node_states(before, now=100.0, timeout=30, swarm=[swarm_node("a", status="down")],
                         awaiting_report=refresher._awaiting_report)
    assert node.state == "lost"
    refresher._track_returns(before, [swarm_node("a")])  # ready again, the same old heartbeat
    [node] = node_states(before, now=100.0, timeout=30, swarm=[swarm_node("a")],
                         awaiting_report=refresher._awaiting_report)
    assert (node.state, node.reason) == ("no-agent", "back after Swarm reported it down; its monitor agent "
                                                     "has not reported since")
    after = [record("a", 90.5)]  # the restarted agent's first report (whatever its clock says)
    refresher._track_returns(after, [swarm_node("a")])
    assert refresher._awaiting_report == {}
    [node] = node_states(after, now=100.0, timeout=30, swarm=[swarm_node("a")],
                         awaiting_report=refresher._awaiting_report)
    assert node.state == "up"
