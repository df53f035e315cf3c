"""Who gets which device: a pure decision from the state it is given, with no I/O.

`decide()` takes a request, the devices, the allocations that exist, the policy and the time,
and answers `Granted` or `Refused`. Nothing here reads a clock, a database, Docker or NVML, so
every rule is tested as a table of cases, and restarting the monitor is simply calling
`decide()` again with the allocations read back from storage.

How the store must call it (this is what makes "a hundred simultaneous requests for two free
devices grant exactly two" hold): decisions are serialised. In one PostgreSQL transaction,
take a lock that every allocating transaction takes (`SELECT pg_advisory_xact_lock(<key>)`,
or `SELECT ... FROM allocator_lock FOR UPDATE` on a single row), read the current
allocations, call `decide()`, INSERT the allocation if it is granted and not `existing`, and
COMMIT, which drops the lock. A `UNIQUE (user_name, server_name)` constraint backs up the
idempotency rule. Releasing is a plain `DELETE ... WHERE id = ...`: deleting nothing is fine.
With one agent per node later, the same global lock still works (user limits span nodes);
device UUIDs keep identities unambiguous across nodes.

Rules, in the order they are checked:

1. The request must be well formed: a user name and a whole number of devices, from 1 to
   `MAX_COUNT`.
   A server without GPUs needs no allocation, so a count of 0 is a bad request rather than
   an empty grant that the store would have to remember not to store.
2. Idempotency: if (user, server) already holds an allocation, the same request (same count
   and profile) gets it back unchanged (`existing=True`); a different one is refused with
   code "conflict" (HTTP 409): silently returning a set that differs from what was asked
   would give a container the wrong number of GPUs. Release first, then ask again: the
   refusal names the allocation held (`Refused.allocation_id`).
3. A count larger than the devices this host could ever give one server is a bad request
   (HTTP 400), not "none free" (HTTP 503): waiting would not help.
4. Limits, per user across all their servers: `Policy.max_gpus_per_profile` (devices held
   under that profile), `Policy.max_gpus_per_group` (devices held in all; of the user's groups
   that have a limit, the largest applies) and `Policy.max_gpus_per_user` (devices held in
   all, site-wide: it caps the group limit too).
5. Nodes: one server runs on one node, so all its devices come from one node. A request with
   `node_labels` (a profile asking for a kind of node) considers only nodes carrying all of
   them; none does: a bad request naming them. A count larger than the largest such node could
   ever give is a bad request too. Only nodes in state "up" offer devices: a drained node keeps
   what it holds and gets nothing new, a lost node or one without an agent is offered to no one
   (their devices count as neither free nor in use in the refusal's figures). A request with
   `node` (a server that must go back to the node holding its home) considers that node only;
   a node no agent ever reported is a bad request.
6. Capacity: a device of kind K can be held by `Policy.share[K]` allocations at once
   (default 1: exclusive). One allocation never holds the same device twice. A GPU whose MIG
   instances are listed among the devices is handed out only as those instances. A device in
   `unavailable` (a running container uses it without holding it: see reconcile.py) is never
   free, whatever its seats.

Node choice (`Policy.placement`): "pack" takes the node with the fewest free devices that still
fit the request, keeping whole nodes free for the large requests that need them; "spread" takes
the node with the most, so that servers share a node's CPUs, memory and PCIe as little as
possible. Ties go to the node id, so a decision never depends on the order it is given things.
Device choice on the node is deterministic: least-shared devices first (an idle device before a
seat on a shared one), then by index, then by UUID. No attempt is made to keep a multi-device grant on
one MIG parent; MIG instances of one GPU have neighbouring indexes, so they mostly are.

When a device is likely to free up (`Refused.free_at`) is not decided here: `decide()` knows
no idle notices. The allocation batcher (batcher.py), which does, adds it to a "none free"
refusal with `with_free_at()`. A per-profile time limit would be another source of it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Literal, TypeAlias

from .devices import LOCAL_NODE, Device, Node

Placement: TypeAlias = Literal["pack", "spread"]
PLACEMENTS: tuple[Placement, ...] = ("pack", "spread")

RefusalCode = Literal[
    "bad_request", "conflict", "over_user_limit", "over_profile_limit", "over_group_limit",
    "none_free"
]

# What the HTTP API answers for each refusal: the caller's fault, a clash with what it
# already holds, or a wait for capacity.
HTTP_STATUS: dict[RefusalCode, int] = {
    "bad_request": 400,
    "conflict": 409,
    "over_user_limit": 503,
    "over_profile_limit": 503,
    "over_group_limit": 503,
    "none_free": 503,
}

# Far above any host; stops absurd counts before they reach a reason or a sum.
MAX_COUNT = 1024


@dataclass(frozen=True)
class Allocation:
    id: str
    user: str
    server: str  # "" is the user's default server
    profile: str
    device_uuids: tuple[str, ...]
    created_at: float  # seconds since the epoch
    node: str = LOCAL_NODE  # the Node.id its devices are on, where its server runs


@dataclass(frozen=True)
class AllocationRequest:
    user: str
    server: str
    profile: str
    count: int
    groups: tuple[str, ...] = ()  # the user's hub groups, for group limits and accounting
    # a kind of node (the profile's node_labels): only nodes with all of these labels
    node_labels: tuple[tuple[str, str], ...] = ()
    # one node only (its Node.id): where the server's home volume is, on a swarm without shared homes
    node: str = ""


@dataclass(frozen=True)
class Policy:
    max_gpus_per_user: int | None = None  # site-wide, over all of a user's servers
    max_gpus_per_profile: dict[str, int] = field(default_factory=dict)  # per user
    # per user, by hub group: a member of several limited groups gets the largest limit
    max_gpus_per_group: dict[str, int] = field(default_factory=dict)
    share: dict[str, int] = field(default_factory=dict)  # device kind -> servers per device
    placement: Placement = "pack"  # which node, when several can serve a request

    def __post_init__(self) -> None:
        if self.placement not in PLACEMENTS:
            raise ValueError(f"placement must be one of {', '.join(PLACEMENTS)}, not {self.placement!r}")
        # A bad policy is an operator's mistake: stop at startup with a sentence, not later.
        if self.max_gpus_per_user is not None and self.max_gpus_per_user < 0:
            raise ValueError(f"max_gpus_per_user must be 0 or more, not {self.max_gpus_per_user}")
        for profile, limit in self.max_gpus_per_profile.items():
            if limit < 0:
                raise ValueError(
                    f"max_gpus_per_profile[{profile!r}] must be 0 or more, not {limit}"
                )
        for group, limit in self.max_gpus_per_group.items():
            if limit < 0:
                raise ValueError(f"max_gpus_per_group[{group!r}] must be 0 or more, not {limit}")
        for kind, seats in self.share.items():
            if seats < 1:
                raise ValueError(f"share[{kind!r}] must be 1 (exclusive) or more, not {seats}")

    def seats(self, kind: str) -> int:
        """How many allocations may hold one device of this kind at once."""
        return self.share.get(kind, 1)


@dataclass(frozen=True)
class Granted:
    allocation: Allocation
    existing: bool  # True: (user, server) already held it; nothing new to store


@dataclass(frozen=True)
class Refused:
    reason: str  # a sentence for the person; never names other users or their servers
    code: RefusalCode
    allocation_id: str | None = None  # "conflict": what (user, server) holds now
    free_at: float | None = None  # "none free": when a device is likely to be free (epoch s)

    @property
    def http_status(self) -> int:
        return HTTP_STATUS[self.code]


Decision: TypeAlias = Granted | Refused


def decide(
    request: AllocationRequest,
    devices: Sequence[Device],
    allocations: Sequence[Allocation],
    policy: Policy,
    now: float,
    new_id: str,
    unavailable: frozenset[str] = frozenset(),
    nodes: Sequence[Node] | None = None,
) -> Decision:
    """Grant `request.count` devices to (user, server) or say why not. See the module's rules.

    `new_id` names the allocation if a new one is granted; `now` becomes its `created_at`.
    `nodes`: the hosts the devices are on (`Device.node`); None: each is up, without labels.
    A device whose node is not among `nodes` is offered to no one. (A batch of requests is
    decided on one `Ledger`, which this builds for a single one.)
    """
    return Ledger(devices, allocations, policy, unavailable, nodes).decide(request, now, new_id)


class Ledger:
    """Who holds what, counted once from the devices and allocations and kept up to date as
    grants are recorded: a batch of requests is decided one after another on one ledger, each
    seeing the grants of those before it (`record`), at a cost that grows with the number of
    nodes, not with devices times allocations. `decide()` gives the same answers as building a
    new ledger for every request (tests/fast/test_allocator.py checks both ways)."""

    def __init__(self, devices: Sequence[Device], allocations: Sequence[Allocation], policy: Policy,
                 unavailable: frozenset[str] = frozenset(), nodes: Sequence[Node] | None = None) -> None:
        self.policy = policy
        self.nodes = list(nodes) if nodes is not None else [Node(n) for n in sorted({d.node for d in devices})]
        self.usable = _allocatable(devices)
        self.by_uuid = {d.uuid: d for d in self.usable}
        self.offering = {n.id for n in self.nodes if n.state == "up"}
        self.usable_on: Counter[str] = Counter(d.node for d in self.usable)
        self.holders: Counter[str] = Counter(uuid for a in allocations for uuid in a.device_uuids)
        self.held: dict[tuple[str, str], Allocation] = {(a.user, a.server): a for a in allocations}
        self.user_total: Counter[str] = Counter()
        self.user_profile: Counter[tuple[str, str]] = Counter()
        for a in allocations:
            self.user_total[a.user] += len(a.device_uuids)
            self.user_profile[(a.user, a.profile)] += len(a.device_uuids)
        # per node that offers devices: those with a free seat, in no particular order
        self.free_on: dict[str, list[Device]] = {}
        for d in self.usable:
            if d.node in self.offering and self._has_seat(d) and d.uuid not in unavailable:
                self.free_on.setdefault(d.node, []).append(d)

    def _has_seat(self, d: Device) -> bool:
        return self.holders[d.uuid] < self.policy.seats(d.kind)

    def record(self, allocation: Allocation) -> None:
        """A grant now held: its devices' seats taken, its holder's counts grown."""
        self.held[(allocation.user, allocation.server)] = allocation
        self.user_total[allocation.user] += len(allocation.device_uuids)
        self.user_profile[(allocation.user, allocation.profile)] += len(allocation.device_uuids)
        for uuid in allocation.device_uuids:
            self.holders[uuid] += 1
            d = self.by_uuid.get(uuid)
            if d is not None and not self._has_seat(d) and d in self.free_on.get(d.node, ()):
                self.free_on[d.node].remove(d)

    def decide(self, request: AllocationRequest, now: float, new_id: str) -> Decision:
        """As `decide()` (the module's rules), on what this ledger holds now. Records nothing."""
        count = request.count
        # bool is an int to Python, but "gpus": true is a mistake, not one GPU.
        if not isinstance(count, int) or isinstance(count, bool):
            return Refused(f"the number of GPUs must be a whole number, not {count!r}", "bad_request")
        if not request.user:
            return Refused("an allocation needs a user name", "bad_request")
        if count < 1:
            return Refused(
                f"the number of GPUs must be at least 1, not {count}; a server without GPUs "
                "needs no allocation",
                "bad_request",
            )
        if count > MAX_COUNT:  # checked before formatting: str() of a 5000-digit int raises
            return Refused(f"the number of GPUs must be at most {MAX_COUNT}", "bad_request")

        held = self.held.get((request.user, request.server))
        if held is not None:
            return _repeat(request, held)

        kind = set(self.usable_on)
        if request.node_labels:
            wanted = dict(request.node_labels)
            kind = {n.id for n in self.nodes if n.has_labels(wanted)}
            if not kind:
                return Refused(f"no node has the label(s) {_labels(wanted)}"
                               + (f" that profile {request.profile!r} asks for" if request.profile else ""),
                               "bad_request")
        if request.node:
            if request.node not in {n.id for n in self.nodes}:
                return Refused(f"node {request.node!r} is not known to the GPU monitor (no agent ever reported it)",
                               "bad_request")
            if request.node_labels and request.node not in kind:
                return Refused(f"node {request.node} does not have the label(s) {_labels(dict(request.node_labels))}"
                               + (f" that profile {request.profile!r} asks for" if request.profile else ""),
                               "bad_request")
            kind = {request.node}
        sizes = [self.usable_on[n] for n in kind if self.usable_on[n]]
        largest = max(sizes, default=0)
        if count > largest:
            if request.node:
                return Refused(f"{count} GPU(s) requested, but node {request.node} has {largest}", "bad_request")
            if len(sizes) <= 1 and not request.node_labels:
                return Refused(f"{count} GPU(s) requested, but this host has {largest} in all", "bad_request")
            return Refused(
                f"{count} GPU(s) requested, but a server runs on one node and the largest"
                f"{' such' if request.node_labels else ''} node has {largest}",
                "bad_request",
            )

        refusal = self._over_a_limit(request)
        if refusal is not None:
            return refusal

        free_on = {n: there for n, there in self.free_on.items() if n in kind and there}
        fitting = [n for n, there in free_on.items() if len(there) >= count]
        if not fitting:
            usable = sum(sizes)
            offered = sum(self.usable_on[n] for n in kind if n in self.offering)
            free = sum(len(there) for there in free_on.values())
            away = usable - offered
            figures = (f"{free} free ({offered - free} of {usable} in use"
                       + (f", {away} on nodes drained or down" if away else "") + ")")
            if free >= count:  # enough in all, but no node has that many
                figures += f", at most {max(len(t) for t in free_on.values())} on one node"
            return Refused(f"{count} GPU(s) requested, {figures}; try again when one is released", "none_free")
        if self.policy.placement == "spread":
            node = min(fitting, key=lambda n: (-len(free_on[n]), n))
        else:
            node = min(fitting, key=lambda n: (len(free_on[n]), n))
        chosen = sorted(free_on[node], key=lambda d: (self.holders[d.uuid], d.index, d.uuid))[:count]
        return Granted(Allocation(id=new_id, user=request.user, server=request.server, profile=request.profile,
                                  device_uuids=tuple(d.uuid for d in chosen), created_at=now, node=node),
                       existing=False)

    def _over_a_limit(self, request: AllocationRequest) -> Refused | None:
        count, policy = request.count, self.policy
        profile_limit = policy.max_gpus_per_profile.get(request.profile)
        if profile_limit is not None:
            in_profile = self.user_profile[(request.user, request.profile)]
            if in_profile + count > profile_limit:
                return Refused(
                    f"{count} GPU(s) requested, but profile {request.profile!r} allows "
                    f"{profile_limit} per user and you already hold {in_profile} with it",
                    "over_profile_limit",
                )
        held_by_me = self.user_total[request.user]
        group_limits = {g: policy.max_gpus_per_group[g] for g in request.groups if g in policy.max_gpus_per_group}
        if group_limits:
            group, group_limit = max(group_limits.items(), key=lambda item: (item[1], item[0]))
            if held_by_me + count > group_limit:
                return Refused(
                    f"{count} GPU(s) requested, but your group {group!r} allows {group_limit} per "
                    f"user and you already hold {held_by_me}",
                    "over_group_limit",
                )
        if policy.max_gpus_per_user is not None and held_by_me + count > policy.max_gpus_per_user:
            return Refused(
                f"{count} GPU(s) requested, but the limit is {policy.max_gpus_per_user} per "
                f"user and you already hold {held_by_me}",
                "over_user_limit",
            )
        return None


def with_free_at(refused: Refused, free_at: float) -> Refused:
    """`refused` also saying when a device is likely to be free: an idle server is due to be
    stopped at `free_at`. Formats the given time; reads no clock."""
    when = time.strftime("%H:%M UTC", time.gmtime(free_at))
    return replace(refused, free_at=free_at, reason=f"{refused.reason}; the soonest device is likely to be "
                                                    f"free at {when} (an idle server is due to stop)")


def _repeat(request: AllocationRequest, held: Allocation) -> Decision:
    if (len(held.device_uuids), held.profile) == (request.count, request.profile):
        return Granted(held, existing=True)
    server = f"server {request.server!r}" if request.server else "your default server"
    return Refused(
        f"{server} already holds {len(held.device_uuids)} GPU(s) for profile "
        f"{held.profile!r}; release them before asking for {request.count} for profile "
        f"{request.profile!r}",
        "conflict",
        allocation_id=held.id,
    )


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))


def _allocatable(devices: Iterable[Device]) -> list[Device]:
    # A GPU split into MIG instances is given out as its instances, never whole.
    devices = list(devices)
    parents = {d.parent_uuid for d in devices if d.parent_uuid}
    return [d for d in devices if d.uuid not in parents]
