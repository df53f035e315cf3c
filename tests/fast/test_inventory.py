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
