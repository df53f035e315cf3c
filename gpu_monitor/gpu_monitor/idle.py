"""Idle reclaim, the decision: a server whose devices do nothing gets a notice, then is stopped.

`idle_step()` is the pure decision, called every check with each device's mean utilisation
since the previous check (None when it was not measured: no evidence is never idleness). An
allocation is active in a check if any of its devices was at or above the policy's
`below_utilization`; it is idle since the end of its last active check (or since it was
granted, or since the monitor started, whichever is later: a restarted monitor does not know
what happened while it was down). From `notice_after_minutes` of idleness on, it carries a
notice with the time it will be stopped (`reclaim_at`); at `stop_after_minutes` it is stopped
through the hub's API, which stops the container and, through the spawner, releases the
devices. `Notices` holds the notices of the last check: the idle reclaimer
(jobs/idle_reclaimer.py, the shell that samples, asks and stops) writes it, the API and the
allocation batcher read it through the `Monitor` that owns it.

Stopping needs the hub to have given the monitor's token the `servers` scope;
`reclaim_scope_problem()` says, from the scopes the hub reports, whether it has and what the
operator must do if not.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass

from .allocator import Allocation
from .policy import IdleReclaim

# Any of these lets a token stop every user's servers (JupyterHub expands `servers`).
STOP_SCOPES = frozenset({"servers", "delete:servers", "admin:servers"})
RESTART_BOTH = "docker compose restart hub gpu-monitor"


def reclaim_scope_problem(scopes: set[str]) -> str | None:
    """None if these scopes let the monitor stop servers; else the sentence for the operator."""
    if scopes & STOP_SCOPES:
        return None
    return ("idle_reclaim is enabled in the policy file, but the hub has not given the monitor's token "
            "the 'servers' scope it needs to stop idle servers (the hub reads the policy only when it "
            f"starts): restart the hub too: {RESTART_BOTH}")


@dataclass(frozen=True)
class Notice:
    idle_since: float
    reclaim_at: float


class Notices(Mapping[str, Notice]):
    """The notices of the last idle check, by allocation id; empty while idle reclaim is off
    or has not run yet. Replaced as a whole after each check, so readers never see half of one."""

    def __init__(self) -> None:
        self._by_id: dict[str, Notice] = {}

    def replace(self, notices: Mapping[str, Notice]) -> None:
        self._by_id = dict(notices)

    def soonest_reclaim(self) -> float | None:
        """When the first idle server is due to be stopped (None: none is)."""
        return min((n.reclaim_at for n in self._by_id.values()), default=None)

    def __getitem__(self, allocation_id: str) -> Notice:
        return self._by_id[allocation_id]

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_id)

    def __len__(self) -> int:
        return len(self._by_id)


def idle_step(
    allocations: Iterable[Allocation],
    activity: Mapping[str, float | None],
    last_active: Mapping[str, float],
    now: float,
    started: float,
    policy: IdleReclaim,
) -> tuple[dict[str, float], dict[str, Notice], list[Allocation]]:
    """(last active time per allocation, notices, allocations to stop now)."""
    active_at: dict[str, float] = {}
    notices: dict[str, Notice] = {}
    stop: list[Allocation] = []
    for a in allocations:
        readings = [activity.get(uuid) for uuid in a.device_uuids]
        busy = any(r is None or r >= policy.below_utilization for r in readings)
        since = now if busy else last_active.get(a.id, max(a.created_at, started))
        active_at[a.id] = since
        idle = now - since
        if not policy.enabled or idle < policy.notice_after_minutes * 60:
            continue
        notices[a.id] = Notice(idle_since=since, reclaim_at=since + policy.stop_after_minutes * 60)
        if idle >= policy.stop_after_minutes * 60:
            stop.append(a)
    return active_at, notices, stop
