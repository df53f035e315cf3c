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

Running containers without an allocation (adoption). A running container whose allocation id
is not held (released by a race: the container was created after a round listed none, or
someone released it by hand) uses devices the allocator would hand out again. It is adopted:
its allocation is held again, with the same id, for its (user, server, profile) and the devices
its `org.gpuhub.devices` label names, when nobody else holds them (each device has a free seat,
`seats`, after this plan's releases) and its (user, server) holds no other allocation. When it
cannot be adopted (its devices now belong to someone else, its devices are unknown, two running
containers claim the id), its devices go into `unavailable`: the allocator offers them to no
one until the container is gone, and a warning says what to stop. The monitor cannot stop it
(its Docker API refuses), so a person must. The store adopts under the allocation lock and
checks again (`adoption_refusal`, the same rule), so an adoption never takes a seat that a
grant took meanwhile.

Warnings are what the plan does not fix: a running container that cannot be adopted, whose
devices or (user, server) differ from its allocation's, an allocation held by two running
containers, a running container the hub does not list. Stopping a user's running container is
left to a person.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Mapping
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
    # device UUIDs from the org.gpuhub.devices label; None: no such label (unknown devices)
    device_ids: tuple[str, ...] | None
    profile: str = ""  # org.gpuhub.profile
    id: str = ""  # Docker's container id ("" in tables of cases: the name is used)


@dataclass(frozen=True)
class Step:
    """One thing to do (or to tell an operator), and why, in a sentence fit for a log."""

    target: str  # an allocation id or a container name
    reason: str


@dataclass(frozen=True)
class Adoption:
    """Hold `allocation` again for the running container `target` that uses its devices."""

    target: str  # the container's name
    reason: str
    allocation: Allocation


@dataclass(frozen=True)
class Plan:
    release: tuple[Step, ...] = ()  # allocation ids to release
    remove_containers: tuple[Step, ...] = ()  # stopped containers to remove
    warnings: tuple[Step, ...] = ()  # container names; not fixed automatically
    adopt: tuple[Adoption, ...] = ()  # running containers whose allocation to hold again
    # devices running containers use without holding them, which cannot be adopted: the
    # allocator must not offer them
    unavailable: frozenset[str] = frozenset()

    @property
    def adopted_names(self) -> tuple[str, ...]:
        return tuple(step.target for step in self.adopt)

    @property
    def released_ids(self) -> tuple[str, ...]:
        return tuple(step.target for step in self.release)

    @property
    def removed_names(self) -> tuple[str, ...]:
        return tuple(step.target for step in self.remove_containers)


def _who(user: str, server: str) -> str:
    return f"{user}/{server}" if server else f"{user} (default server)"


def adoption_refusal(candidate: Allocation, held: Iterable[Allocation], seats: Mapping[str, int]) -> str | None:
    """Why `candidate` (a running container's allocation) cannot be held again beside `held`,
    or None if it can. `seats`: every device this monitor hands out, and how many allocations
    may hold it at once."""
    held = list(held)
    if any(a.id == candidate.id for a in held):
        return f"allocation {candidate.id} is held already"
    if not candidate.device_uuids:
        return "its devices are not known (no org.gpuhub.devices label)"
    unknown = sorted(set(candidate.device_uuids) - set(seats))
    if unknown:
        return f"this monitor does not hand out its devices {unknown}"
    for a in held:
        if (a.user, a.server) == (candidate.user, candidate.server):
            return f"{_who(a.user, a.server)} holds another allocation, {a.id}"
    holders = Counter(uuid for a in held for uuid in a.device_uuids)
    taken = sorted(uuid for uuid in set(candidate.device_uuids) if holders[uuid] >= seats[uuid])
    if taken:
        return f"its devices {taken} are held by another allocation"
    return None


def plan(
    allocations: Iterable[Allocation],
    containers: Iterable[ContainerView],
    hub_servers: set[tuple[str, str]] | None,
    now: float,
    grace_seconds: float,
    seats: Mapping[str, int] | None = None,
) -> Plan:
    """Decide what to release, adopt and remove; see the module docstring for the rules.
    `seats`: the devices this monitor hands out and how many allocations may hold each (None:
    every device a container names, exclusive)."""
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
    if seats is None:
        seats = {uuid: 1 for c in labelled for uuid in c.device_ids or ()}
    adopt: list[Adoption] = []
    adopted_ids: set[str] = set()
    unavailable: set[str] = set()
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
        elif c.device_ids is not None and set(own.device_uuids) != set(c.device_ids):
            problem = (f"its devices {sorted(c.device_ids)} differ from allocation {own.id}'s "
                       f"{sorted(own.device_uuids)}")
        if c.running:
            who = f"running container of {_who(c.user, c.server)}"
            if own is None:
                candidate = Allocation(c.allocation_id, c.user, c.server, c.profile,
                                       tuple(c.device_ids or ()), now)
                refusal = adoption_refusal(candidate, [*still_held.values(), *(a.allocation for a in adopt)],
                                           seats)
                if len(running_by_id[c.allocation_id]) > 1 or c.allocation_id in adopted_ids:
                    refusal = (f"{len(running_by_id[c.allocation_id])} running containers carry "
                               f"allocation {c.allocation_id}")
                if refusal is None:
                    adopt.append(Adoption(c.name, f"{who}: {problem}; holding it again for its devices "
                                                  f"{sorted(candidate.device_uuids)}", candidate))
                    adopted_ids.add(c.allocation_id)
                    continue
                unavailable.update(u for u in c.device_ids or () if u in seats)
                warnings.append(Step(c.name, f"{who}: {problem} and it cannot be held again: {refusal}; "
                                             f"its devices are offered to no one until it is gone. "
                                             f"Stop it: docker stop {c.name}"))
            elif problem:
                unavailable.update(u for u in c.device_ids or () if u in seats and u not in own.device_uuids)
                warnings.append(Step(c.name, f"{who}: {problem}"))
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
    return Plan(tuple(release), tuple(remove), tuple(warnings), tuple(adopt), frozenset(unavailable))
