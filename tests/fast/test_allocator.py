"""The allocator's pure core: tables of named cases, no clock, no database, no sleeps."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, replace

import pytest

from gpu_monitor.allocator import (
    Allocation,
    AllocationRequest,
    Decision,
    Granted,
    Ledger,
    Policy,
    Refused,
    decide,
    with_free_at,
)
from gpu_monitor.devices import LOCAL_NODE, Device, Node

NOW = 1_700_000_000.0
EXCLUSIVE = Policy()


def gpu(index: int) -> Device:
    return Device(uuid=f"GPU-{index}", index=index, kind="gpu", name="Test GPU")


def mig(parent: int, slot: int, index: int) -> Device:
    return Device(
        uuid=f"MIG-{parent}-{slot}", index=index, kind="mig", name="1g.10gb",
        parent_uuid=f"GPU-{parent}",
    )


def held(id: str, user: str, server: str, *uuids: str, profile: str = "cuda") -> Allocation:
    return Allocation(id, user, server, profile, tuple(uuids), NOW - 60)


def ask(user: str, count: int, server: str = "", profile: str = "cuda", groups=()) -> AllocationRequest:
    return AllocationRequest(user=user, server=server, profile=profile, count=count, groups=tuple(groups))


TWO = [gpu(0), gpu(1)]
FOUR = [gpu(3), gpu(1), gpu(0), gpu(2)]  # out of order: choice must go by index
# GPU 0 split into two MIG instances (the parent is listed too, as NVML lists it), GPU 1 whole.
MIG_HOST = [gpu(0), mig(0, 1, 2), mig(0, 2, 3), gpu(1)]


@dataclass(frozen=True)
class Grant:
    uuids: tuple[str, ...]
    existing: bool = False


@dataclass(frozen=True)
class Refusal:
    code: str
    says: str  # a fragment the reason must contain
    allocation_id: str | None = None  # a conflict names what the server holds


CASES: dict[str, tuple[list[Device], Policy, list[Allocation], AllocationRequest, Grant | Refusal]] = {
    "exclusive grant, lowest index first": (
        FOUR, EXCLUSIVE, [], ask("alice", 2), Grant(("GPU-0", "GPU-1")),
    ),
    "skips held devices": (
        FOUR, EXCLUSIVE, [held("a1", "bob", "", "GPU-0", "GPU-2")], ask("alice", 2),
        Grant(("GPU-1", "GPU-3")),
    ),
    "exhaustion names counts, not users": (
        FOUR, EXCLUSIVE, [held("a1", "bob", "lab", "GPU-0", "GPU-1", "GPU-2")], ask("alice", 2),
        Refusal("none_free", "2 GPU(s) requested, 1 free (3 of 4 in use)"),
    ),
    "nothing on a host with no devices": (
        [], EXCLUSIVE, [], ask("alice", 1), Refusal("bad_request", "this host has 0 in all"),
    ),
    "same (user, server) again: same allocation back": (
        FOUR, EXCLUSIVE, [held("a1", "alice", "", "GPU-2")], ask("alice", 1),
        Grant(("GPU-2",), existing=True),
    ),
    "same (user, server) with another count: conflict": (
        FOUR, EXCLUSIVE, [held("a1", "alice", "", "GPU-2")], ask("alice", 2),
        Refusal("conflict", "your default server already holds 1 GPU(s)", allocation_id="a1"),
    ),
    "same (user, server) with another profile: conflict": (
        FOUR, EXCLUSIVE, [held("a1", "alice", "big", "GPU-2")], ask("alice", 1, "big", "opencl"),
        Refusal("conflict", "server 'big' already holds 1 GPU(s) for profile 'cuda'", allocation_id="a1"),
    ),
    "same user, other server: other devices": (
        FOUR, EXCLUSIVE, [held("a1", "alice", "", "GPU-0")], ask("alice", 1, server="second"),
        Grant(("GPU-1",)),
    ),
    "site-wide user limit counts all servers": (
        FOUR, Policy(max_gpus_per_user=2), [held("a1", "alice", "", "GPU-0")],
        ask("alice", 2, server="second"),
        Refusal("over_user_limit", "limit is 2 per user and you already hold 1"),
    ),
    "user limit reached exactly is fine": (
        FOUR, Policy(max_gpus_per_user=2), [held("a1", "alice", "", "GPU-0")],
        ask("alice", 1, server="second"), Grant(("GPU-1",)),
    ),
    "user limit ignores other users": (
        FOUR, Policy(max_gpus_per_user=1), [held("a1", "bob", "", "GPU-0")], ask("alice", 1),
        Grant(("GPU-1",)),
    ),
    "profile limit in one request": (
        FOUR, Policy(max_gpus_per_profile={"cuda": 1}), [], ask("alice", 2),
        Refusal("over_profile_limit", "profile 'cuda' allows 1 per user"),
    ),
    "profile limit counts the user's other servers in that profile": (
        FOUR, Policy(max_gpus_per_profile={"cuda": 2}), [held("a1", "alice", "", "GPU-0", "GPU-1")],
        ask("alice", 1, server="second"),
        Refusal("over_profile_limit", "you already hold 2 with it"),
    ),
    "profile limit ignores other profiles": (
        FOUR, Policy(max_gpus_per_profile={"cuda": 1}),
        [held("a1", "alice", "", "GPU-0", profile="opencl")], ask("alice", 1, server="second"),
        Grant(("GPU-1",)),
    ),
    "profile limit 0 forbids GPUs": (
        FOUR, Policy(max_gpus_per_profile={"cuda": 0}), [], ask("alice", 1),
        Refusal("over_profile_limit", "allows 0 per user"),
    ),
    "group limit counts all of the user's servers": (
        FOUR, Policy(max_gpus_per_group={"students": 1}), [held("a1", "alice", "", "GPU-0")],
        ask("alice", 1, server="second", groups=["students"]),
        Refusal("over_group_limit", "your group 'students' allows 1 per user and you already hold 1"),
    ),
    "of several limited groups the largest limit applies": (
        FOUR, Policy(max_gpus_per_group={"students": 1, "staff": 3}), [held("a1", "alice", "", "GPU-0")],
        ask("alice", 2, server="second", groups=["students", "staff"]), Grant(("GPU-1", "GPU-2")),
    ),
    "a group without a limit sets none": (
        FOUR, Policy(max_gpus_per_group={"students": 1}), [], ask("alice", 2, groups=["staff"]),
        Grant(("GPU-0", "GPU-1")),
    ),
    "the site-wide limit caps a generous group": (
        FOUR, Policy(max_gpus_per_user=1, max_gpus_per_group={"staff": 4}), [],
        ask("alice", 2, groups=["staff"]),
        Refusal("over_user_limit", "limit is 1 per user"),
    ),
    "shared device: an idle one first": (
        TWO, Policy(share={"gpu": 2}), [held("a1", "bob", "", "GPU-0")], ask("alice", 1),
        Grant(("GPU-1",)),
    ),
    "shared device: a free seat when none is idle": (
        TWO, Policy(share={"gpu": 2}),
        [held("a1", "bob", "", "GPU-0"), held("a2", "carol", "", "GPU-1", "GPU-0")],
        ask("alice", 1), Grant(("GPU-1",)),
    ),
    "shared device: never twice in one allocation": (
        [gpu(0)], Policy(share={"gpu": 4}), [], ask("alice", 2),
        Refusal("bad_request", "2 GPU(s) requested, but this host has 1 in all"),
    ),
    "share applies per kind": (
        [gpu(0), Device("CPU-0", 1, "cpu-slice", "cores 0-3", cpuset="0-3")],
        Policy(share={"cpu-slice": 2}),
        [held("a1", "bob", "", "GPU-0"), held("a2", "carol", "", "CPU-0")], ask("alice", 1),
        Grant(("CPU-0",)),
    ),
    "MIG instances are separate devices; their GPU is not given whole": (
        MIG_HOST, EXCLUSIVE, [held("a1", "bob", "", "MIG-0-1")], ask("alice", 2),
        Grant(("GPU-1", "MIG-0-2")),
    ),
    "MIG host counts instances, not the split GPU": (
        MIG_HOST, EXCLUSIVE, [], ask("alice", 4),
        Refusal("bad_request", "this host has 3 in all"),
    ),
    "count 0 needs no allocation": (
        FOUR, EXCLUSIVE, [], ask("alice", 0), Refusal("bad_request", "at least 1"),
    ),
    "negative count": (FOUR, EXCLUSIVE, [], ask("alice", -1), Refusal("bad_request", "not -1")),
    "more than the host has": (
        FOUR, EXCLUSIVE, [], ask("alice", 5), Refusal("bad_request", "this host has 4 in all"),
    ),
    "huge count": (
        FOUR, EXCLUSIVE, [], ask("alice", 10**5000), Refusal("bad_request", "at most 1024"),
    ),
    "bool count": (FOUR, EXCLUSIVE, [], ask("alice", True), Refusal("bad_request", "whole number")),
    "float count": (
        FOUR, EXCLUSIVE, [], ask("alice", 1.0), Refusal("bad_request", "whole number"),  # type: ignore[arg-type]
    ),
    "no user": (FOUR, EXCLUSIVE, [], ask("", 1), Refusal("bad_request", "user name")),
}


@pytest.mark.parametrize("devices, policy, allocations, request_, expected", CASES.values(), ids=CASES.keys())
def test_decide(devices, policy, allocations, request_, expected):
    decision = decide(request_, devices, allocations, policy, NOW, "new")
    if isinstance(expected, Grant):
        assert isinstance(decision, Granted), decision
        assert (decision.allocation.device_uuids, decision.existing) == (expected.uuids, expected.existing)
        if expected.existing:
            assert decision.allocation in allocations  # returned unchanged
        else:
            assert decision.allocation == Allocation(
                "new", request_.user, request_.server, request_.profile, expected.uuids, NOW
            )
    else:
        assert isinstance(decision, Refused), decision
        assert decision.code == expected.code
        assert expected.says in decision.reason
        assert (decision.allocation_id, decision.free_at) == (expected.allocation_id, None)
        for other in allocations:
            if other.user != request_.user:
                assert other.user not in decision.reason
                assert not other.server or other.server not in decision.reason


@pytest.mark.parametrize(
    "code, status",
    [("bad_request", 400), ("conflict", 409), ("none_free", 503), ("over_user_limit", 503)],
)
def test_http_status(code, status):
    assert Refused("why", code).http_status == status


# Sequences: each step asks or releases; the state is carried from step to step the way the
# store would carry it in PostgreSQL.


class Run:
    """Applies decisions to a list of allocations, as the store would inside its lock."""

    def __init__(self, devices: list[Device], policy: Policy = EXCLUSIVE) -> None:
        self.devices, self.policy = devices, policy
        self.allocations: tuple[Allocation, ...] = ()
        self.ids = 0

    def ask(self, request: AllocationRequest) -> Decision:
        self.ids += 1
        decision = decide(request, self.devices, self.allocations, self.policy, NOW + self.ids, f"a{self.ids}")
        if isinstance(decision, Granted) and not decision.existing:
            self.allocations += (decision.allocation,)
        return decision

    def release(self, allocation_id: str) -> Allocation | None:
        """As the store's DELETE: the allocation removed, or None if it was not held."""
        released = next((a for a in self.allocations if a.id == allocation_id), None)
        self.allocations = tuple(a for a in self.allocations if a.id != allocation_id)
        return released


def uuids(decision: Decision) -> tuple[str, ...] | str:
    return decision.allocation.device_uuids if isinstance(decision, Granted) else decision.code


SHARE = {
    "exclusive: 1 server per device": (1, ["GPU-0", "none_free"]),
    "shared by 2": (2, ["GPU-0", "GPU-0", "none_free"]),
    "shared by 3": (3, ["GPU-0", "GPU-0", "GPU-0", "none_free"]),
}


@pytest.mark.parametrize("seats, outcomes", SHARE.values(), ids=SHARE.keys())
def test_shared_device_admits_n_and_refuses_the_next(seats, outcomes):
    run = Run([gpu(0)], Policy(share={"gpu": seats}))
    got = [uuids(run.ask(ask(f"user{i}", 1))) for i in range(len(outcomes))]
    assert got == [(o,) if o.startswith("GPU") else o for o in outcomes]


def test_release_then_reallocate():
    run = Run(TWO)
    first = run.ask(ask("alice", 2))
    assert uuids(run.ask(ask("bob", 1))) == "none_free"
    assert isinstance(first, Granted)
    assert run.release(first.allocation.id) == first.allocation
    assert uuids(run.ask(ask("bob", 1))) == ("GPU-0",)


def test_release_twice_and_unknown_ids_are_harmless():
    run = Run(TWO)
    first = run.ask(ask("alice", 1))
    second = run.ask(ask("bob", 1))
    assert isinstance(first, Granted) and isinstance(second, Granted)
    assert run.release(first.allocation.id) == first.allocation
    assert run.release(first.allocation.id) is None
    assert run.release("never-existed") is None
    assert run.allocations == (second.allocation,)


def test_same_request_twice_after_release_is_a_new_allocation():
    run = Run(TWO)
    first = run.ask(ask("alice", 1))
    assert isinstance(first, Granted)
    run.release(first.allocation.id)
    again = run.ask(ask("alice", 1))
    assert isinstance(again, Granted) and not again.existing
    assert again.allocation.id != first.allocation.id


def test_hundred_requests_for_two_free_devices_grant_exactly_two():
    # The store serialises decisions (see the allocator's docstring), so simultaneous requests
    # reach decide() one after another: this is what they see.
    run = Run([gpu(0), gpu(1), gpu(2)])
    run.ask(ask("owner", 1))  # GPU-0 busy: two free of three
    decisions = [run.ask(ask(f"user{i}", 1)) for i in range(100)]
    granted = [d for d in decisions if isinstance(d, Granted)]
    assert sorted(d.allocation.device_uuids for d in granted) == [("GPU-1",), ("GPU-2",)]
    assert {d.code for d in decisions if isinstance(d, Refused)} == {"none_free"}
    assert len(run.allocations) == 3


def test_hundred_repeats_of_one_request_grant_once():
    run = Run(TWO)
    decisions = [run.ask(ask("alice", 1, server="lab")) for _ in range(100)]
    assert len({d.allocation for d in decisions if isinstance(d, Granted)}) == 1
    assert [d.existing for d in decisions if isinstance(d, Granted)] == [False] + [True] * 99
    assert len(run.allocations) == 1


def stored_and_read_back(allocations: tuple[Allocation, ...]) -> tuple[Allocation, ...]:
    """What a restart sees: rows written, then read back (JSON-ish, lists for tuples)."""
    rows = [asdict(a) for a in allocations]
    return tuple(Allocation(**{**row, "device_uuids": tuple(row["device_uuids"])}) for row in rows)


RESTART = {
    "exclusive": (FOUR, EXCLUSIVE),
    "shared by 2 with a user limit": (FOUR, Policy(max_gpus_per_user=2, share={"gpu": 2})),
    "MIG": (MIG_HOST, Policy(max_gpus_per_profile={"cuda": 2})),
}


@pytest.mark.parametrize("devices, policy", RESTART.values(), ids=RESTART.keys())
def test_restart_from_stored_allocations_decides_as_before(devices, policy):
    before = Run(devices, policy)
    for request in [ask("alice", 1), ask("bob", 2, "lab"), ask("carol", 1)]:
        before.ask(request)
    before.release("a2")

    after = Run(devices, policy)  # a restarted monitor: nothing in memory but what was stored
    after.allocations, after.ids = stored_and_read_back(before.allocations), before.ids
    assert after.allocations == before.allocations

    later = [ask("alice", 1), ask("alice", 2, "second"), ask("bob", 2, "lab"), ask("dave", 3), ask("erin", 1)]
    assert [before.ask(r) for r in later] == [after.ask(r) for r in later]
    assert before.allocations == after.allocations


BAD_POLICY = {
    "negative user limit": (dict(max_gpus_per_user=-1), "max_gpus_per_user must be 0 or more"),
    "negative profile limit": (dict(max_gpus_per_profile={"cuda": -2}), "max_gpus_per_profile['cuda']"),
    "share of 0": (dict(share={"gpu": 0}), "share['gpu'] must be 1 (exclusive) or more"),
}


@pytest.mark.parametrize("kwargs, says", BAD_POLICY.values(), ids=BAD_POLICY.keys())
def test_bad_policy_is_refused_at_startup(kwargs, says):
    with pytest.raises(ValueError, match="^" + re.escape(says)):
        Policy(**kwargs)


def test_a_device_a_running_container_uses_without_an_allocation_is_never_granted():
    """reconcile.plan()'s `unavailable`: such a device counts as in use, whatever its seats."""
    taken = frozenset({gpu(0).uuid})
    first = decide(ask("ada", 1), TWO, [], EXCLUSIVE, now=NOW, new_id="n1", unavailable=taken)
    assert isinstance(first, Granted) and first.allocation.device_uuids == (gpu(1).uuid,)
    second = decide(ask("bob", 1), TWO, [first.allocation], Policy(share={"gpu": 4}), now=NOW, new_id="n2",
                    unavailable=taken)
    assert uuids(second) == (gpu(1).uuid,)  # a shared seat on the other device, never GPU 0
    none = decide(ask("bob", 1), TWO, [first.allocation], EXCLUSIVE, now=NOW, new_id="n2", unavailable=taken)
    assert isinstance(none, Refused) and none.code == "none_free" and "0 free (2 of 2 in use)" in none.reason


def test_a_refusal_with_free_at_says_when_in_utc():
    none = Refused("1 GPU(s) requested, 0 free (2 of 2 in use); try again when one is released", "none_free")
    at = 1_700_003_640.0  # 23:14 UTC
    later = with_free_at(none, at)
    assert (later.code, later.free_at, later.allocation_id) == ("none_free", at, None)
    assert later.reason == (none.reason + "; the soonest device is likely to be free at 23:14 UTC "
                            "(an idle server is due to stop)")


# ---- several nodes: one server's devices on one node, placement, labels, node states ---------


def on(node: str, index: int, kind: str = "gpu") -> Device:
    return Device(uuid=f"{node}-{kind}-{index}", index=index, kind=kind, name="Test GPU", node=node)


# two nodes of four GPUs and one of two, listed out of order
CLUSTER = [on("n2", 1), on("n1", 0), on("n3", 1), on("n1", 1), on("n2", 0), on("n1", 2), on("n3", 0),
           on("n1", 3), on("n2", 2), on("n2", 3)]
NODES = [Node("n1", labels={"gpu": "a100"}), Node("n2", labels={"gpu": "h100", "large-memory": ""}),
         Node("n3", labels={"gpu": "a100"})]


def heldon(id: str, user: str, node: str, *uuids: str) -> Allocation:
    return Allocation(id, user, "", "cuda", tuple(uuids), NOW - 60, node=node)


def nodes(**states: str) -> list[Node]:
    return [Node(n.id, labels=n.labels, state=states.get(n.id, "up")) for n in NODES]  # type: ignore[arg-type]


def with_labels(request: AllocationRequest, **labels: str) -> AllocationRequest:
    return AllocationRequest(request.user, request.server, request.profile, request.count, request.groups,
                             tuple(sorted(labels.items())))


def on_node(request: AllocationRequest, node: str) -> AllocationRequest:
    return replace(request, node=node)


NODE_CASES: dict[str, tuple[Policy, list[Node], list[Allocation], AllocationRequest, Grant | Refusal, str | None]] = {
    "pack: the node with the fewest free that fit": (
        EXCLUSIVE, NODES, [], ask("alice", 1), Grant(("n3-gpu-0",)), "n3",
    ),
    "pack: a node too small for the request is passed over": (
        EXCLUSIVE, NODES, [], ask("alice", 3), Grant(("n1-gpu-0", "n1-gpu-1", "n1-gpu-2")), "n1",
    ),
    "pack: a busier node first once it has fewer free": (
        EXCLUSIVE, NODES, [heldon("a1", "bob", "n2", "n2-gpu-0", "n2-gpu-1", "n2-gpu-2")], ask("alice", 1),
        Grant(("n2-gpu-3",)), "n2",
    ),
    "spread: the node with the most free, ties to the lowest id": (
        Policy(placement="spread"), NODES, [], ask("alice", 1), Grant(("n1-gpu-0",)), "n1",
    ),
    "spread: away from the busy node": (
        Policy(placement="spread"), NODES, [heldon("a1", "bob", "n1", "n1-gpu-0")], ask("alice", 2),
        Grant(("n2-gpu-0", "n2-gpu-1")), "n2",
    ),
    "labels: only nodes that carry them": (
        EXCLUSIVE, NODES, [], with_labels(ask("alice", 1), gpu="h100"), Grant(("n2-gpu-0",)), "n2",
    ),
    "labels: a label without a value": (
        Policy(placement="spread"), NODES, [], with_labels(ask("alice", 1), **{"large-memory": ""}),
        Grant(("n2-gpu-0",)), "n2",
    ),
    "labels: all of them, on one node": (
        EXCLUSIVE, NODES, [], with_labels(ask("alice", 1), gpu="a100", **{"large-memory": ""}),
        Refusal("bad_request", "no node has the label(s) gpu=a100, large-memory= that profile 'cuda' asks for"),
        None,
    ),
    "labels: more than the largest such node": (
        EXCLUSIVE, NODES, [], with_labels(ask("alice", 5), gpu="a100"),
        Refusal("bad_request", "5 GPU(s) requested, but a server runs on one node and the largest such node has 4"),
        None,
    ),
    "more than any one node has is a bad request, not a wait": (
        EXCLUSIVE, NODES, [], ask("alice", 5),
        Refusal("bad_request", "a server runs on one node and the largest node has 4"), None,
    ),
    "enough free in all, but not on one node": (
        EXCLUSIVE, NODES,
        [heldon("a1", "bob", "n1", "n1-gpu-0", "n1-gpu-1", "n1-gpu-2"),
         heldon("a2", "carol", "n2", "n2-gpu-0", "n2-gpu-1", "n2-gpu-2"),
         heldon("a3", "dave", "n3", "n3-gpu-0")],
        ask("alice", 2), Refusal("none_free", "3 free (7 of 10 in use), at most 1 on one node"), None,
    ),
    "a drained node gets nothing new": (
        EXCLUSIVE, nodes(n3="drained"), [], ask("alice", 1), Grant(("n1-gpu-0",)), "n1",
    ),
    "a lost node is offered to no one": (
        EXCLUSIVE, nodes(n1="lost", n2="lost"), [heldon("a1", "bob", "n3", "n3-gpu-0")], ask("alice", 2),
        Refusal("none_free", "1 free (1 of 10 in use, 8 on nodes drained or down)"), None,
    ),
    "a node without an agent is offered to no one": (
        EXCLUSIVE, nodes(n1="no-agent", n2="no-agent"), [], with_labels(ask("alice", 1), gpu="a100"),
        Grant(("n3-gpu-0",)), "n3",
    ),
    "node: that node only, even against the policy's choice": (
        EXCLUSIVE, NODES, [], on_node(ask("alice", 1), "n1"), Grant(("n1-gpu-0",)), "n1",
    ),
    "node: full, refused with that node's figures, though others have free devices": (
        EXCLUSIVE, NODES, [heldon("a1", "bob", "n3", "n3-gpu-0", "n3-gpu-1")], on_node(ask("alice", 1), "n3"),
        Refusal("none_free", "1 GPU(s) requested, 0 free (2 of 2 in use)"), None,
    ),
    "node: lost, nothing offered while it is away": (
        EXCLUSIVE, nodes(n3="lost"), [], on_node(ask("alice", 1), "n3"),
        Refusal("none_free", "0 free (0 of 2 in use, 2 on nodes drained or down)"), None,
    ),
    "node: more than it has is a bad request": (
        EXCLUSIVE, NODES, [], on_node(ask("alice", 3), "n3"),
        Refusal("bad_request", "3 GPU(s) requested, but node n3 has 2"), None,
    ),
    "node: one no agent reported": (
        EXCLUSIVE, NODES, [], on_node(ask("alice", 1), "n9"),
        Refusal("bad_request", "node 'n9' is not known to the GPU monitor"), None,
    ),
    "node: with a profile's labels it lacks": (
        EXCLUSIVE, NODES, [], on_node(with_labels(ask("alice", 1), gpu="h100"), "n1"),
        Refusal("bad_request", "node n1 does not have the label(s) gpu=h100 that profile 'cuda' asks for"), None,
    ),
    "node: with a profile's labels it has": (
        EXCLUSIVE, NODES, [], on_node(with_labels(ask("alice", 1), gpu="a100"), "n1"), Grant(("n1-gpu-0",)), "n1",
    ),
    "the limits count across nodes": (
        Policy(max_gpus_per_user=2), NODES, [heldon("a1", "alice", "n1", "n1-gpu-0"),
                                              Allocation("a2", "alice", "lab", "cuda", ("n2-gpu-0",), NOW, "n2")],
        ask("alice", 1, server="third"), Refusal("over_user_limit", "limit is 2 per user and you already hold 2"),
        None,
    ),
}


@pytest.mark.parametrize("policy, node_list, allocations, request_, expected, node", NODE_CASES.values(),
                         ids=NODE_CASES.keys())
def test_decide_across_nodes(policy, node_list, allocations, request_, expected, node):
    decision = decide(request_, CLUSTER, allocations, policy, NOW, "new", nodes=node_list)
    if isinstance(expected, Grant):
        assert isinstance(decision, Granted), decision
        assert decision.allocation.device_uuids == expected.uuids
        assert decision.allocation.node == node
        assert {d.node for d in CLUSTER if d.uuid in expected.uuids} == {node}
    else:
        assert isinstance(decision, Refused), decision
        assert decision.code == expected.code
        assert expected.says in decision.reason


def test_decisions_do_not_depend_on_the_order_nodes_and_devices_come_in():
    for policy in (EXCLUSIVE, Policy(placement="spread")):
        outcomes = set()
        for turn in range(6):
            devices = CLUSTER[turn:] + CLUSTER[:turn]
            node_list = NODES[turn % 3:] + NODES[:turn % 3]
            held: list[Allocation] = []
            for i in range(4):  # a few grants in a row, each seeing the ones before
                d = decide(ask(f"u{i}", 2), devices, held, policy, NOW, f"a{i}", nodes=node_list)
                assert isinstance(d, Granted)
                held.append(d.allocation)
            outcomes.add(tuple((a.node, a.device_uuids) for a in held))
        assert len(outcomes) == 1


def test_a_full_cluster_serves_everyone_once_on_distinct_node_device_pairs():
    for policy in (EXCLUSIVE, Policy(placement="spread")):
        held: list[Allocation] = []
        for i in range(12):
            d = decide(ask(f"user{i}", 1), CLUSTER, held, policy, NOW, f"a{i}", nodes=NODES)
            if isinstance(d, Granted):
                held.append(d.allocation)
            else:
                assert d.code == "none_free" and "0 free (10 of 10 in use)" in d.reason
        pairs = [(a.node, a.device_uuids[0]) for a in held]
        assert len(held) == 10 and len(set(pairs)) == 10
        assert all(uuid.startswith(f"{node}-") for node, uuid in pairs)


def test_devices_of_a_node_that_is_not_listed_are_offered_to_no_one():
    decision = decide(ask("alice", 1), CLUSTER, [], EXCLUSIVE, NOW, "new", nodes=[Node("n3")])
    assert isinstance(decision, Granted) and decision.allocation.node == "n3"
    decision = decide(ask("alice", 3), CLUSTER, [], EXCLUSIVE, NOW, "new", nodes=[Node("n3")])
    assert isinstance(decision, Refused) and decision.code == "none_free"


def test_a_single_host_allocation_is_on_the_local_node():
    decision = decide(ask("alice", 1), FOUR, [], EXCLUSIVE, NOW, "new")
    assert isinstance(decision, Granted) and decision.allocation.node == LOCAL_NODE


def test_placement_and_node_states_are_checked():
    with pytest.raises(ValueError, match="placement must be one of pack, spread, not 'random'"):
        Policy(placement="random")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="node state must be one of up, drained, lost, no-agent"):
        Node("n1", state="gone")  # type: ignore[arg-type]


def test_a_batch_on_one_ledger_decides_as_a_fresh_decision_for_each_request():
    # What the store does (one Ledger per transaction, each grant recorded) against what the
    # rules say (decide() anew on everything held), over a long mixed run: the same answers.
    import random

    rng = random.Random(14)
    mig_cluster = CLUSTER + [Device("n1-gpu-0-mig", 9, "mig", "1g", parent_uuid="n1-gpu-0", node="n1")]
    for policy in (EXCLUSIVE, Policy(placement="spread", share={"gpu": 2}, max_gpus_per_user=3,
                                     max_gpus_per_group={"students": 1})):
        node_list = nodes(n3="drained")
        held: list[Allocation] = []
        outcomes = set()
        ledger = Ledger(mig_cluster, held, policy, frozenset({"n2-gpu-3"}), node_list)
        for i in range(200):
            groups = tuple(rng.sample(["students", "staff"], rng.randrange(3)))
            request = AllocationRequest(f"u{rng.randrange(12)}", rng.choice(["", "lab"]), rng.choice(["cuda", "cl"]),
                                        rng.choice([1, 1, 1, 2, 3, 5]), groups,
                                        rng.choice([(), (("gpu", "a100"),), (("gpu", "h100"),)]))
            fresh = decide(request, mig_cluster, held, policy, NOW, f"a{i}", frozenset({"n2-gpu-3"}), node_list)
            batched = ledger.decide(request, NOW, f"a{i}")
            assert batched == fresh, (i, request)
            outcomes.add("existing" if isinstance(fresh, Granted) and fresh.existing else
                         "granted" if isinstance(fresh, Granted) else fresh.code)
            if isinstance(fresh, Granted) and not fresh.existing:
                held.append(fresh.allocation)
                ledger.record(fresh.allocation)
        # the run went through grants, repeats and the refusals the state allows
        assert {"granted", "existing", "conflict", "none_free", "bad_request"} <= outcomes, outcomes
