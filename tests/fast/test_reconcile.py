"""Reconciliation's pure core: a table of named cases, no Docker, no hub, no clock."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from gpu_monitor.allocator import Allocation
from gpu_monitor.reconcile import ContainerView, Plan, plan

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
    "running container whose allocation nobody holds: warned, not touched": Case(
        (), (running("jupyter-alice", "gone", "alice", "", "GPU-0"),), None,
        warned=("jupyter-alice",),
    ),
    "running container with devices other than its allocation's: kept and warned": Case(
        (ALICE,), (running("jupyter-alice", "a1", "alice", "", "GPU-0", "GPU-1"),), None,
        warned=("jupyter-alice",),
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
    result = plan(case.allocations, case.containers, case.hub, NOW, GRACE)
    assert result.released_ids == case.released
    assert result.removed_names == case.removed
    assert tuple(step.target for step in result.warnings) == case.warned
    for step in result.release + result.remove_containers + result.warnings:
        assert step.reason  # every action comes with a sentence for the log


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
