"""The nodes and their devices, as each node's agent reports them into PostgreSQL.

One monitor API serves a whole cluster, but devices are found and read where they are: every
node runs an agent (jobs/agent.py; on a single host the monitor runs it for its own node) that
writes its node and devices once (`Inventory.register`) and then, every sampling interval, the
devices' last readings and cumulative counters and the node's heartbeat (`Inventory.report`).
The API reads it all back every interval (`Inventory.read`, jobs/inventory_refresher.py) and
decides from the heartbeats which nodes are up (`node_states`, pure).

A device belongs to the node that reported it first. Another node reporting the same UUID (a
cloned disk image, two agents given one node name) is refused for that device, named in its
log, and offered from nowhere else: `register` returns it, nothing changes. Devices a node no
longer reports (a GPU taken out, fewer CPU slices) are dropped from the inventory at its next
registration; allocations holding them stay until released, as on one host.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Engine

from .devices import Device, Node, Sample
from .monitor import HostInfo
from .sampler import DeviceState
from .store import SCHEMA, devices_table, nodes_table

# The reading columns `report` writes for each device, in this order.
_READING = ("sampled_at", "utilization_ratio", "memory_used_bytes", "temperature_celsius", "power_watts",
            "sample_errors", "busy_seconds", "sampled_seconds")


@dataclass(frozen=True)
class NodeRecord:
    """A node as its agent last described it."""

    id: str
    hostname: str
    labels: Mapping[str, str]
    host: HostInfo
    agent_started_at: float
    seen_at: float  # the agent's last report


@dataclass(frozen=True)
class SwarmNode:
    """A node as Swarm's managers see it (`docker node ls`): on a swarm, the node's agent reports
    under Swarm's node id."""

    id: str
    hostname: str
    labels: Mapping[str, str]
    availability: str  # active, pause or drain (the operator's `docker node update --availability`)
    status: str  # ready, down, disconnected or unknown (Swarm's heartbeat)
    message: str = ""


def node_states(records: Sequence[NodeRecord], now: float, timeout: float,
                swarm: Sequence[SwarmNode] | None = None,
                awaiting_report: Mapping[str, float] | None = None) -> list[Node]:
    """Each node's state, from its agent's heartbeat and, on a swarm, what Swarm says of it. Pure.

    - lost: Swarm reports the node down (its engine stopped, its network cut), or, without
      Swarm, its agent has not reported for `timeout` seconds;
    - drained: the operator drained or paused it; what it holds stays held until released,
      nothing new goes there (whether its agent still reports or not: a drain stops it too);
    - no-agent: Swarm has the node ready and active but no agent reports from it (never, or
      not within `timeout`: the agent is down), or the node is back after Swarm reported it down
      and its agent has not reported since (`awaiting_report`: node id -> the heartbeat it had
      when it came back; an agent restarts with its node's engine, and a heartbeat from before
      the node went down says nothing about now);
    - up: otherwise.
    A node's labels are its agent's (GPUHUB_NODE_LABELS) with Swarm's node labels over them.
    """
    swarm_by_id = {n.id: n for n in swarm} if swarm is not None else None
    nodes = []
    for r in records:
        silent = now - r.seen_at
        quiet = silent > timeout
        s = swarm_by_id.get(r.id) if swarm_by_id is not None else None
        labels = {**r.labels, **(s.labels if s else {})}
        hostname = s.hostname if s else r.hostname
        if s is not None and s.status != "ready":
            nodes.append(Node(r.id, hostname, labels, "lost",
                              f"Swarm reports it {s.status}" + (f" ({s.message})" if s.message else "")))
        elif s is not None and s.availability != "active":
            # before the heartbeat: draining a node stops the agent's task there too
            nodes.append(Node(r.id, hostname, labels, "drained",
                              f"{'drained' if s.availability == 'drain' else 'paused'} in Swarm: what it holds stays "
                              "held until released, new servers go elsewhere"))
        elif quiet and s is not None:
            nodes.append(Node(r.id, hostname, labels, "no-agent",
                              f"its monitor agent has not reported for {silent:.0f} s (more than {timeout:g} s)"))
        elif s is not None and r.id in (awaiting_report or {}) and r.seen_at <= (awaiting_report or {})[r.id]:
            nodes.append(Node(r.id, hostname, labels, "no-agent",
                              "back after Swarm reported it down; its monitor agent has not reported since"))
        elif quiet:
            nodes.append(Node(r.id, hostname, labels, "lost",
                              f"no report from its agent for {silent:.0f} s (more than {timeout:g} s)"))
        else:
            nodes.append(Node(r.id, hostname, labels))
    known = {r.id for r in records}
    for s in swarm or ():
        if s.id not in known:
            nodes.append(Node(s.id, s.hostname, dict(s.labels), "lost" if s.status != "ready" else "no-agent",
                              f"Swarm reports it {s.status}" if s.status != "ready"
                              else "no monitor agent has reported from this node"))
    return sorted(nodes, key=lambda n: n.id)


def _cuda(host: HostInfo) -> str | None:
    cuda = host.cuda_driver_version
    return f"{cuda[0]}.{cuda[1]}" if cuda else None


class Inventory:
    """Nodes and devices in PostgreSQL (tables of store.py, revision 0004). Blocking: call from a
    thread."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def register(self, node_id: str, hostname: str, labels: Mapping[str, str], host: HostInfo,
                 devices: Sequence[Device], started_at: float, now: float) -> dict[str, str]:
        """Write this node and its devices, in one transaction; returns {uuid: the other node
        that has it} for each device refused because another node reported it first. The
        node's other devices are forgotten (it no longer has them), and the counters of its
        own start again from 0 (a new agent's)."""
        node_row = {"id": node_id, "hostname": hostname, "labels": dict(labels), "backend": host.backend,
                    "driver_version": host.driver_version, "cuda_driver_version": _cuda(host),
                    "agent_started_at": started_at, "seen_at": now}
        with self.engine.begin() as conn:
            insert = postgresql.insert(nodes_table).values(node_row)
            conn.execute(insert.on_conflict_do_update(
                index_elements=[nodes_table.c.id], set_={k: insert.excluded[k] for k in node_row if k != "id"}))
            mine: set[str] = set()
            if devices:
                rows: builtins.list[dict[str, object]] = [{
                         "uuid": d.uuid, "node": node_id, "index": d.index, "kind": d.kind, "name": d.name,
                         "memory_total_bytes": d.memory_total_bytes, "parent_uuid": d.parent_uuid,
                         "docker_device_id": d.docker_device_id, "cpuset": d.cpuset,
                         "attributes": dict(d.attributes), "sampled_at": None, "utilization_ratio": None,
                         "memory_used_bytes": None, "temperature_celsius": None, "power_watts": None,
                         "sample_errors": [], "busy_seconds": 0.0, "sampled_seconds": 0.0} for d in devices]
                insert = postgresql.insert(devices_table).values(rows)
                # only a row of this very node is updated: another node's device stays theirs
                upsert = insert.on_conflict_do_update(
                    index_elements=[devices_table.c.uuid],
                    set_={k: insert.excluded[k] for k in rows[0] if k != "uuid"},
                    where=devices_table.c.node == insert.excluded.node,
                ).returning(devices_table.c.uuid)
                mine = set(conn.execute(upsert).scalars())
            refused = dict(conn.execute(
                sa.select(devices_table.c.uuid, devices_table.c.node)
                .where(devices_table.c.uuid.in_([d.uuid for d in devices if d.uuid not in mine]))).all())
            conn.execute(sa.delete(devices_table).where(devices_table.c.node == node_id,
                                                        devices_table.c.uuid.not_in(mine)))
        return refused  # type: ignore[return-value]

    def report(self, node_id: str, states: Mapping[str, DeviceState], now: float) -> bool:
        """The node's heartbeat and its devices' readings, in one round trip. False when the
        node's row is gone (an operator removed it): register again."""
        values = []
        for uuid, s in states.items():
            last = s.last
            values.append((uuid, last.timestamp, last.utilization_ratio, last.memory_used_bytes,
                           last.temperature_celsius, last.power_watts, list(last.errors), s.busy_seconds,
                           s.sampled_seconds))
        sql = f"UPDATE {SCHEMA}.nodes SET seen_at = %s WHERE id = %s"
        params: list[object] = [now, node_id]
        if values:
            rows = ", ".join(["(%s, %s::float8, %s::float8, %s::bigint, %s::float8, %s::float8, %s::text[], "
                              "%s::float8, %s::float8)"] * len(values))
            sets = ", ".join(f"{c} = v.{c}" for c in _READING)
            sql = (f"{sql}; UPDATE {SCHEMA}.devices AS d SET {sets} FROM (VALUES {rows}) "
                   f"AS v(uuid, {', '.join(_READING)}) WHERE d.uuid = v.uuid AND d.node = %s")
            params += [x for row in values for x in row] + [node_id]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(sql, tuple(params))
            seen = conn.execute(sa.select(nodes_table.c.seen_at).where(nodes_table.c.id == node_id)).scalar()
        return seen is not None

    def read(self) -> tuple[builtins.list[NodeRecord], builtins.list[Device], dict[str, DeviceState]]:
        """Every node, every device and the devices' last states, in one snapshot."""
        n, d = nodes_table.c, devices_table.c
        with self.engine.begin() as conn:
            conn.exec_driver_sql("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
            node_rows = conn.execute(sa.select(nodes_table).order_by(n.id)).all()
            device_rows = conn.execute(sa.select(devices_table).order_by(d.node, d.index, d.uuid)).all()
        records = [NodeRecord(r.id, r.hostname, dict(r.labels),
                              HostInfo(r.backend, r.driver_version,
                                       tuple(int(x) for x in r.cuda_driver_version.split("."))  # type: ignore[arg-type]
                                       if r.cuda_driver_version else None),
                              r.agent_started_at, r.seen_at) for r in node_rows]
        devices, states = [], {}
        for r in device_rows:
            m = r._mapping  # ("index" is also a method of the row tuple)
            devices.append(Device(m["uuid"], m["index"], m["kind"], m["name"], m["memory_total_bytes"],
                                  m["parent_uuid"], m["docker_device_id"], m["cpuset"], m["node"],
                                  dict(m["attributes"])))
            if r.sampled_at is not None:
                states[r.uuid] = DeviceState(
                    Sample(r.uuid, r.sampled_at, r.utilization_ratio, r.memory_used_bytes, r.temperature_celsius,
                           r.power_watts, tuple(r.sample_errors)),
                    r.busy_seconds, r.sampled_seconds)
        return records, devices, states

