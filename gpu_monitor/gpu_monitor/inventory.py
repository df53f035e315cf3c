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


def node_states(records: Sequence[NodeRecord], now: float, timeout: float) -> list[Node]:
    """Each node, up while its agent reported within `timeout` seconds, lost otherwise. Pure."""
    nodes = []
    for r in sorted(records, key=lambda r: r.id):
        silent = now - r.seen_at
        if silent > timeout:
            nodes.append(Node(r.id, r.hostname, dict(r.labels), "lost",
                              f"no report from its agent for {silent:.0f} s (more than {timeout:g} s)"))
        else:
            nodes.append(Node(r.id, r.hostname, dict(r.labels)))
    return nodes


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

