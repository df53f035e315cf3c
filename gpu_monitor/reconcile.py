"""Reconciliation: which allocations no server holds any more, as a pure decision.

`plan()` compares the allocations the store holds with the containers Docker reports (and,
when it answers, the hub's list of servers that run or are starting) and says what to release,
which stopped containers to remove, and what looks wrong but is not safe to fix automatically.
It reads no clock, Docker or HTTP; the shell calls it once at start and then every
`interval` seconds, applies the plan (release = the store's idempotent DELETE; remove = Docker
`remove` of a container that is still stopped) and logs the reasons.

Rules, for each allocation (allocations and containers are matched by the
`org.gpuhub.allocation` label; containers without it hold nothing and are ignored):

1. A RUNNING container carrying its id holds it: it is never released, whatever the hub says.
   Releasing it would let the allocator hand devices that are in use to someone else.
2. Younger than `grace_seconds`: kept. A spawn in progress has its allocation before Docker
   has a container, so "no container" means nothing until the grace has passed.
3. The hub lists its (user, server) as running or pending: kept. The hub is the only one who
   knows a slow spawn (image pull) is still on its way. `hub_servers=None` (hub unreachable)
   means "no opinion": decisions then come from Docker alone, so a hub outage can neither keep
   devices forever nor release anything on its word. The hub's word only ever keeps; it never
   releases on its own (a hub that forgets a server whose container still runs is rule 1).
4. Otherwise: released.

The time bound. A container killed behind the hub's back frees its devices within
`grace_seconds + interval` after it died, provided the hub has noticed by then (JupyterHub
polls each spawner every `Spawner.poll_interval`, 30 s by default, and on seeing the container
gone stops the server, which releases directly; this rule is the backstop). In general the
bound is `max(grace_seconds, hub poll_interval) + interval`; with the hub down it is
`grace_seconds + interval`. Suggested settings: grace 120 s, interval 60 s, so three minutes.
The grace should exceed the time from allocating to `docker create` when the hub is down;
with the hub up, pending spawns are protected by rule 3 however slow they are.

Stopped containers. DockerSpawner restarts an existing container with the device request it
was created with. A stopped container is therefore removed when its restart would use devices
nobody holds for it: its allocation id is not held after this plan (released now, or long
ago), the allocation belongs to another (user, server), or its devices differ from the
allocation's. A stopped container whose allocation is still held, for its own (user, server)
and with the same devices, is kept: a server being restarted, or stopped and not yet released,
restarts correctly with it. Device ids are compared as sets of device UUIDs; the Docker
adapter maps DeviceRequests ids and cpusets back to UUIDs through the device table.

Warnings are what the plan does not fix: a running container whose allocation id nobody
holds (its devices may be handed out again), whose devices or (user, server) differ from its
allocation's, an allocation held by two running containers, a running container the hub does
not list. Stopping a user's running container is left to a person.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from .allocator import Allocation


@dataclass(frozen=True)
class ContainerView:
    """One gpuhub container as the Docker adapter reports it."""

    name: str
    allocation_id: str | None  # the org.gpuhub.allocation label; None: no GPU allocation
    user: str  # org.gpuhub.user
    server: str  # org.gpuhub.server; "" is the default server
    running: bool
    device_ids: tuple[str, ...]  # device UUIDs behind its DeviceRequests / cpuset


@dataclass(frozen=True)
class Step:
    """One thing to do (or to tell an operator), and why, in a sentence fit for a log."""

    target: str  # an allocation id or a container name
    reason: str


@dataclass(frozen=True)
class Plan:
    release: tuple[Step, ...] = ()  # allocation ids to release
    remove_containers: tuple[Step, ...] = ()  # stopped containers to remove
    warnings: tuple[Step, ...] = ()  # container names; not fixed automatically

    @property
    def released_ids(self) -> tuple[str, ...]:
        return tuple(step.target for step in self.release)

    @property
    def removed_names(self) -> tuple[str, ...]:
        return tuple(step.target for step in self.remove_containers)


def _who(user: str, server: str) -> str:
    return f"{user}/{server}" if server else f"{user} (default server)"


def plan(
    allocations: Iterable[Allocation],
    containers: Iterable[ContainerView],
    hub_servers: set[tuple[str, str]] | None,
    now: float,
    grace_seconds: float,
) -> Plan:
    """Decide what to release and remove; see the module docstring for the rules."""
    if grace_seconds < 0:
        raise ValueError(f"grace_seconds must be 0 or more, not {grace_seconds}")
    held = {a.id: a for a in allocations}
    labelled = sorted((c for c in containers if c.allocation_id is not None), key=lambda c: c.name)
    running_by_id: dict[str, list[ContainerView]] = defaultdict(list)
    for c in labelled:
        if c.running:
            assert c.allocation_id is not None
            running_by_id[c.allocation_id].append(c)

    release: list[Step] = []
    for a in sorted(held.values(), key=lambda a: a.id):
        if running_by_id.get(a.id):
            continue
        age = now - a.created_at
        if age < grace_seconds:
            continue
        if hub_servers is not None and (a.user, a.server) in hub_servers:
            continue
        hub = "the hub is unreachable" if hub_servers is None else "the hub lists no such server"
        release.append(Step(a.id, (
            f"no running container holds the allocation of {_who(a.user, a.server)} "
            f"(age {age:.0f} s, grace {grace_seconds:.0f} s) and {hub}"
        )))

    still_held = {k: v for k, v in held.items() if k not in {s.target for s in release}}
    remove: list[Step] = []
    warnings: list[Step] = []
    for c in labelled:
        assert c.allocation_id is not None
        own = still_held.get(c.allocation_id)
        problem = None
        if own is None:
            problem = f"allocation {c.allocation_id} is not held"
        elif (own.user, own.server) != (c.user, c.server):
            problem = f"allocation {own.id} belongs to {_who(own.user, own.server)}"
        elif set(own.device_uuids) != set(c.device_ids):
            problem = (f"its devices {sorted(c.device_ids)} differ from allocation {own.id}'s "
                       f"{sorted(own.device_uuids)}")
        if c.running:
            if problem:
                warnings.append(Step(c.name, f"running container of {_who(c.user, c.server)}: "
                                             f"{problem}"))
            elif len(running_by_id[c.allocation_id]) > 1:
                warnings.append(Step(c.name, f"allocation {c.allocation_id} is held by "
                                             f"{len(running_by_id[c.allocation_id])} running "
                                             "containers"))
            elif hub_servers is not None and (c.user, c.server) not in hub_servers:
                warnings.append(Step(c.name, f"running container of {_who(c.user, c.server)} "
                                             "that the hub does not list"))
        elif problem:
            remove.append(Step(c.name, f"stopped container of {_who(c.user, c.server)} would "
                                       f"restart with stale devices: {problem}"))
    return Plan(tuple(release), tuple(remove), tuple(warnings))
