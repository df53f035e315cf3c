"""Reconciliation's pure core: a table of named cases, no Docker, no hub, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gpu_monitor.allocator import Allocation
from gpu_monitor.reconcile import ContainerView, Plan, adoption_refusal, plan

NOW = 1_700_000_000.0
GRACE = 120.0


def alloc(id: str, user: str, server: str, *uuids: str, age: float = 600) -> Allocation:
    return Allocation(id, user, server, "cuda", tuple(uuids), NOW - age)


def running(name: str, id: str | None, user: str, server: str, *uuids: str) -> ContainerView:
    return ContainerView(name, id, user, server, True, tuple(uuids))


def stopped(name: str, id: str | None, user: str, server: str, *uuids: str) -> ContainerView:
    return ContainerView(name, id, user, server, False, tuple(uuids))


ALICE = alloc("a1", "alice", "", "GPU-0")
ALICE_YOUNG = alloc("a1", "alice", "", "GPU-0", age=5)
BOB_ML = alloc("b1", "bob", "ml", "GPU-1")
BOB_VIZ = alloc("b2", "bob", "viz", "GPU-2")


@dataclass(frozen=True)
class Case:
    allocations: tuple[Allocation, ...]
    containers: tuple[ContainerView, ...]
    hub: set[tuple[str, str]] | None
    released: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    warned: tuple[str, ...] = ()
    adopted: tuple[str, ...] = ()
    unavailable: frozenset[str] = frozenset()
    seats: dict[str, int] | None = None


GPUS = {f"GPU-{i}": 1 for i in range(6)}


CASES: dict[str, Case] = {
    "running container keeps its allocation": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0"),), {("alice", "")},
    ),
    "running container keeps it even when the hub does not list the server": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0"),), set(),
        warned=("jupyter-alice",),
    ),
    "killed container, past the grace: released": Case((ALICE,), (), None, released=("a1",)),
    "killed container, within the grace: kept": Case((ALICE_YOUNG,), (), None),
    "spawn in progress (no container yet, young allocation): kept": Case(
        (ALICE_YOUNG,), (), {("alice", "")},
    ),
    "slow spawn past the grace that the hub lists as pending: kept": Case(
        (ALICE,), (), {("alice", "")},
    ),
    "hub says stopped and no container: released": Case((ALICE,), (), set(), released=("a1",)),
    "hub unavailable: decides from Docker alone (killed container released)": Case(
        (ALICE,), (), None, released=("a1",),
    ),
    "hub unavailable: decides from Docker alone (running container kept)": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0"),), None,
    ),
    "stopped container with a stale allocation id: removed": Case(
        (), (stopped("jupyter-alice", "gone", "alice", "", "GPU-0"),), None,
        removed=("jupyter-alice",),
    ),
    "stopped container whose allocation is released now: released and removed together": Case(
        (ALICE,), (stopped("jupyter-alice", "a1", "alice", "", "GPU-0"),), set(),
        released=("a1",), removed=("jupyter-alice",),
    ),
    "stopped container, allocation still held, same devices (restart under way): kept": Case(
        (ALICE,), (stopped("jupyter-alice", "a1", "alice", "", "GPU-0"),), {("alice", "")},
    ),
    "stopped container, allocation held, within the grace: kept": Case(
        (ALICE_YOUNG,), (stopped("jupyter-alice", "a1", "alice", "", "GPU-0"),), None,
    ),
    "stopped container whose devices differ from its allocation's: removed": Case(
        (ALICE,), (stopped("jupyter-alice", "a1", "alice", "", "GPU-3"),), {("alice", "")},
        removed=("jupyter-alice",),
    ),
    "stopped container carrying another server's allocation id: removed": Case(
        (BOB_ML,), (stopped("jupyter-bob-viz", "b1", "bob", "viz", "GPU-1"),), {("bob", "ml")},
        removed=("jupyter-bob-viz",),
    ),
    "container without an allocation label: ignored, holds nothing": Case(
        (ALICE,), (running("jupyter-alice", None, "alice", "", "GPU-0"),
                   stopped("jupyter-carol", None, "carol", "", "GPU-5")), None,
        released=("a1",),
    ),
    "two servers of one user are independent": Case(
        (BOB_ML, BOB_VIZ), (running("jupyter-bob-ml", "b1", "bob", "ml", "GPU-1"),),
        {("bob", "ml")},
        released=("b2",),
    ),
    "running container whose allocation nobody holds, devices free: adopted": Case(
        (), (running("jupyter-alice", "gone", "alice", "", "GPU-0"),), None,
        adopted=("jupyter-alice",), seats=GPUS,
    ),
    "running container whose devices another allocation holds now: not adopted, devices blocked": Case(
        (BOB_ML,), (running("jupyter-alice", "gone", "alice", "", "GPU-1"),
                    running("jupyter-bob-ml", "b1", "bob", "ml", "GPU-1")), {("bob", "ml")},
        warned=("jupyter-alice",), unavailable=frozenset({"GPU-1"}), seats=GPUS,
    ),
    "running container whose other devices are free is still not adopted in part": Case(
        (BOB_ML,), (running("jupyter-alice", "gone", "alice", "", "GPU-0", "GPU-1"),
                    running("jupyter-bob-ml", "b1", "bob", "ml", "GPU-1")), {("bob", "ml")},
        warned=("jupyter-alice",), unavailable=frozenset({"GPU-0", "GPU-1"}), seats=GPUS,
    ),
    "a shared device with a free seat: adopted beside its other holder": Case(
        (BOB_ML,), (running("jupyter-alice", "gone", "alice", "", "GPU-1"),
                    running("jupyter-bob-ml", "b1", "bob", "ml", "GPU-1")), {("bob", "ml")},
        adopted=("jupyter-alice",), seats={**GPUS, "GPU-1": 2},
    ),
    "its (user, server) holds another allocation: not adopted, devices blocked": Case(
        (alloc("a2", "alice", "", "GPU-4", age=5),), (running("jupyter-alice", "gone", "alice", "", "GPU-0"),),
        None, warned=("jupyter-alice",), unavailable=frozenset({"GPU-0"}), seats=GPUS,
    ),
    "no devices label: cannot be adopted, warned": Case(
        (), (ContainerView("jupyter-alice", "gone", "alice", "", True, None),), None,
        warned=("jupyter-alice",), seats=GPUS,
    ),
    "devices this monitor does not hand out: not adopted, nothing to block": Case(
        (), (running("jupyter-alice", "gone", "alice", "", "GPU-elsewhere"),), None,
        warned=("jupyter-alice",), seats=GPUS,
    ),
    "two running containers claim one unheld id: neither adopted, both blocked": Case(
        (), (running("jupyter-alice", "gone", "alice", "", "GPU-0"),
             running("jupyter-alice-copy", "gone", "alice", "", "GPU-1")), None,
        warned=("jupyter-alice", "jupyter-alice-copy"), unavailable=frozenset({"GPU-0", "GPU-1"}), seats=GPUS,
    ),
    "two unheld containers want one device: the first by name is adopted, the other blocked": Case(
        (), (running("jupyter-alice", "x1", "alice", "", "GPU-0"),
             running("jupyter-carol", "x2", "carol", "", "GPU-0")), None,
        adopted=("jupyter-alice",), warned=("jupyter-carol",), unavailable=frozenset({"GPU-0"}), seats=GPUS,
    ),
    "devices freed by a release in the same round can be adopted": Case(
        (alloc("c1", "carol", "", "GPU-0"),), (running("jupyter-alice", "gone", "alice", "", "GPU-0"),), set(),
        released=("c1",), adopted=("jupyter-alice",), seats=GPUS,
    ),
    "stopped container without a devices label, its allocation held: kept": Case(
        (ALICE,), (ContainerView("jupyter-alice", "a1", "alice", "", False, None),), {("alice", "")},
    ),
    "running container with a device beside its allocation's: kept, warned, that device blocked": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0", "GPU-1"),), None,
        warned=("jupyter-alice",), unavailable=frozenset({"GPU-1"}),
    ),
    "one allocation held by two running containers: kept and both warned": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0"),
                   running("jupyter-alice-copy", "a1", "alice", "", "GPU-0")), None,
        warned=("jupyter-alice", "jupyter-alice-copy"),
    ),
    "nothing at all: nothing to do": Case((), (), None),
}


@pytest.mark.parametrize("name", CASES)
def test_plan(name: str) -> None:
    case = CASES[name]
    result = plan(case.allocations, case.containers, case.hub, NOW, GRACE, case.seats)
    assert result.released_ids == case.released
    assert result.removed_names == case.removed
    assert tuple(step.target for step in result.warnings) == case.warned
    assert result.adopted_names == case.adopted
    assert result.unavailable == case.unavailable
    for step in result.release + result.remove_containers + result.warnings + result.adopt:
        assert step.reason  # every action comes with a sentence for the log


def test_an_adopted_allocation_is_the_containers_own():
    c = ContainerView("jupyter-bob-ml", "gone", "bob", "ml", True, ("GPU-2", "GPU-3"), profile="cuda")
    (adoption,) = plan([], [c], None, NOW, GRACE, GPUS).adopt
    assert adoption.allocation == Allocation("gone", "bob", "ml", "cuda", ("GPU-2", "GPU-3"), NOW)
    assert "not held" in adoption.reason


def test_a_blocked_container_is_named_with_what_to_do():
    c = running("jupyter-alice", "gone", "alice", "", "GPU-1")
    (warning,) = plan([BOB_ML], [c], {("bob", "ml")}, NOW, GRACE, GPUS).warnings
    assert "held by another allocation" in warning.reason and "docker stop jupyter-alice" in warning.reason


def test_adoption_refusal_is_the_rule_the_store_checks_again_under_its_lock():
    mine = Allocation("x", "alice", "", "cuda", ("GPU-0",), NOW)
    assert adoption_refusal(mine, [], GPUS) is None
    assert "held already" in adoption_refusal(mine, [mine], GPUS)
    assert "held by another" in adoption_refusal(mine, [alloc("b", "bob", "", "GPU-0")], GPUS)
    assert adoption_refusal(mine, [alloc("b", "bob", "", "GPU-0")], {"GPU-0": 2}) is None
    assert "another allocation" in adoption_refusal(mine, [alloc("b", "alice", "", "GPU-1")], GPUS)


def test_grace_boundary_is_inclusive() -> None:
    """At exactly `grace_seconds` old, an allocation with no container is released."""
    exact = alloc("a1", "alice", "", "GPU-0", age=GRACE)
    assert plan([exact], [], None, NOW, GRACE).released_ids == ("a1",)


def test_order_of_input_does_not_matter() -> None:
    allocations = [BOB_VIZ, ALICE, BOB_ML]
    first = plan(allocations, [], None, NOW, GRACE)
    second = plan(list(reversed(allocations)), [], None, NOW, GRACE)
    assert first == second
    assert first.released_ids == ("a1", "b1", "b2")


def test_reasons_name_the_server_and_the_hub_state() -> None:
    result = plan([BOB_ML], [stopped("jupyter-bob-ml", "b1", "bob", "ml", "GPU-1")], None, NOW,
                  GRACE)
    assert "bob/ml" in result.release[0].reason
    assert "unreachable" in result.release[0].reason
    assert "stale devices" in result.remove_containers[0].reason


def test_negative_grace_is_refused() -> None:
    with pytest.raises(ValueError, match="grace_seconds"):
        plan([], [], None, NOW, -1)


def test_empty_plan_is_the_default() -> None:
    assert plan([], [], set(), NOW, GRACE) == Plan()
