"""GPU-hours and idle time per user or group over a period: pure arithmetic on the stored
allocation history (`AllocationStore.history()`), so it survives restarts and is tested as a
table of cases.

For each allocation overlapping the period [start, end):
  * held device-hours: its devices × the part of [started_at, ended_at or now) inside the
    period (exact, from the history);
  * sampled and busy device-hours: from its hourly usage rows, each hour's share inside the
    period counted in proportion (usage within an hour is taken as uniform);
  * idle = sampled − busy: allocated, measured, and doing nothing;
  * unsampled = held − sampled: time nobody measured (the monitor was down, or the last
    minute not yet written).
A shared device's busy time is counted for each server sharing it: the devices cannot say which
server kept them busy. By group, an allocation counts for each group its user was in when it
was granted ("(no group)" if none).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterable, Mapping
from typing import Any

NO_GROUP = "(no group)"
FIELDS = ("name", "allocations", "gpu_hours", "sampled_hours", "busy_hours", "idle_hours", "unsampled_hours")


def _overlap(a0: float, a1: float, b0: float, b1: float) -> float:
    return max(0.0, min(a1, b1) - max(a0, b0))


def account(rows: Iterable[Mapping[str, Any]], start: float, end: float, now: float,
            by: str = "user") -> list[dict[str, Any]]:
    if by not in ("user", "group"):
        raise ValueError(f"by must be 'user' or 'group', not {by!r}")
    if end <= start:
        raise ValueError("the period must end after it starts")
    totals: dict[str, dict[str, Any]] = {}
    for row in rows:
        held_end = row["ended_at"] if row["ended_at"] is not None else now
        devices = len(row["device_uuids"])
        held = devices * _overlap(row["started_at"], held_end, start, end)
        sampled = busy = 0.0
        for hour, hour_busy, hour_sampled in row.get("usage", ()):
            share = _overlap(hour, hour + 3600, start, end) / 3600
            sampled += hour_sampled * share
            busy += hour_busy * share
        if held == 0 and sampled == 0:
            continue
        keys = [row["user_name"]] if by == "user" else (list(row["groups"]) or [NO_GROUP])
        for key in keys:
            t = totals.setdefault(key, {"name": key, "allocations": 0, "held": 0.0, "sampled": 0.0, "busy": 0.0})
            t["allocations"] += 1
            t["held"] += held
            t["sampled"] += sampled
            t["busy"] += busy
    result = []
    for key in sorted(totals):
        t = totals[key]
        result.append({
            "name": key,
            "allocations": t["allocations"],
            "gpu_hours": t["held"] / 3600,
            "sampled_hours": t["sampled"] / 3600,
            "busy_hours": t["busy"] / 3600,
            "idle_hours": max(0.0, t["sampled"] - t["busy"]) / 3600,
            "unsampled_hours": max(0.0, t["held"] - t["sampled"]) / 3600,
        })
    return result


def _cell(text: str) -> str:
    # a user name such as "=cmd|..." must not become a formula in a spreadsheet
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_csv(table: list[dict[str, Any]]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(FIELDS)
    for row in table:
        writer.writerow([_cell(row["name"]), row["allocations"]] + [f"{row[f]:.4f}" for f in FIELDS[2:]])
    return out.getvalue()
