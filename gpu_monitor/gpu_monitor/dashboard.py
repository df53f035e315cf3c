"""The dashboard page's first render (server side, so it reads without JavaScript); the live
updates, charts and the accounting form are static/dashboard.js. Every text from the API or
the database is escaped here; the script only sets textContent."""

from __future__ import annotations

import html
from pathlib import Path
from typing import Any

from .allocator import Allocation

STATIC = Path(__file__).resolve().parent / "static"


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _pct(x: float | None) -> str:
    return "–" if x is None else f"{x * 100:.0f} %"


def device_state(device: dict[str, Any], node_state: str) -> str:
    """What the dashboard says of a device (static/dashboard.js says the same)."""
    if device["mine"]:
        return "yours"
    if device["free"]:
        return "free"
    if not device["allocatable"]:
        return "split (MIG)"
    if node_state != "up" and not device["holders"]:
        return f"node {node_state}"
    return "in use"


def render_nodes(nodes: list[dict[str, Any]]) -> str:
    """One row per node: its name, state (and why), labels, free devices."""
    rows = []
    for n in nodes:
        name = n["id"] + (f" ({n['hostname']})" if n["hostname"] and n["hostname"] != n["id"] else "")
        state = n["state"] + (f": {n['reason']}" if n["reason"] else "")
        labels = ", ".join(f"{k}={v}" if v else k for k, v in sorted(n["labels"].items()))
        rows.append(f'<tr data-node="{_e(n["id"])}" data-state="{_e(n["state"])}"><td>{_e(name)}</td>'
                    f'<td class="state">{_e(state)}</td><td>{_e(labels)}</td><td>{n["free"]} of {n["total"]}</td></tr>')
    return "".join(rows)


def render_dashboard(data: dict[str, Any], allocations: list[Allocation], admin: bool, prefix: str,
                     viewer: str, xsrf: str) -> str:
    holders: dict[str, list[str]] = {}
    for a in allocations:
        for uuid in a.device_uuids:
            holders.setdefault(uuid, []).append(f"{a.user}/{a.server}" if a.server else a.user)
    node_state = {n["id"]: n["state"] for n in data["nodes"]}
    rows = []
    for d in data["devices"]:
        state = device_state(d, node_state.get(d["node"], "no-agent"))
        who = f"<td>{_e(', '.join(holders.get(d['uuid'], [])))}</td>" if admin else ""
        rows.append(
            f'<tr data-uuid="{_e(d["uuid"])}" data-state="{_e(state)}"><td>{d["index"]}</td><td>{_e(d["name"])}</td>'
            f'<td class="state">{_e(state)}</td><td>{_pct(d["utilization_ratio"])}</td><td>–</td><td>–</td><td>–</td>{who}</tr>')
    held_by = "<th>Held by</th>" if admin else ""
    admin_sections = ""
    if admin:
        admin_sections = """
<section id="allocations"><h2>Allocations</h2>
<table><thead><tr>
<th>Server</th><th>Profile</th><th>Devices</th><th>Since</th><th>Held for</th><th>Busy while held</th></tr></thead>
<tbody id="allocations-body"></tbody></table><p id="allocations-empty" class="muted" hidden>No device is allocated.</p></section>
<section id="accounting"><h2>Accounting</h2>
<form id="accounting-form"><label>From <input type="date" name="start"></label><label>To <input type="date" name="end"></label>
<label>By <select name="by"><option value="user">user</option><option value="group">group</option></select></label>
<button type="submit">Show</button> <a id="accounting-csv" href="#">CSV</a></form>
<p class="muted">Period: <span id="accounting-period">the last 7 days</span>. GPU-hours are device-hours held;
idle = measured while held at no utilisation; unmeasured = held while the monitor was not sampling.</p>
<table><thead><tr>
<th>Name</th><th>Allocations</th><th>GPU-hours</th><th>Busy hours</th><th>Idle hours</th><th>Unmeasured hours</th></tr></thead>
<tbody id="accounting-body"></tbody></table></section>"""
    host = data["host"]
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1"><title>GPU monitor</title>
<noscript><meta http-equiv="refresh" content="10"></noscript>
<link rel="stylesheet" href="{_e(prefix)}static/dashboard.css"></head>
<body><main id="gpuhub-dashboard" data-base="{_e(prefix)}" data-admin="{'true' if admin else 'false'}" data-xsrf="{_e(xsrf)}">
<h1>GPU monitor</h1>
<p><span id="summary">{data['free']} of {data['total']} device(s) free · backend {_e(host['backend'])}</span>
· signed in as {_e(viewer)}{' (admin)' if admin else ''} · <a href="/hub/home">back to the hub</a>
· <span id="status" class="muted"></span></p>
<table id="nodes"><thead><tr><th>Node</th><th>State</th><th>Labels</th><th>Free</th></tr></thead>
<tbody id="nodes-body">{render_nodes(data['nodes'])}</tbody></table>
<table id="devices"><thead><tr>
<th>#</th><th>Device</th><th>State</th><th>Utilisation</th><th>Memory</th><th>Temperature</th><th>Power</th>{held_by}</tr></thead>
<tbody id="devices-body">{''.join(rows)}</tbody></table>
<section><h2>History</h2>
<p><button type="button" data-window="hour" aria-pressed="true">Last hour</button>
<button type="button" data-window="day" aria-pressed="false">Last day</button>
<span class="muted">one point a minute: utilisation (top), memory (bottom)</span></p>
<div id="charts"></div></section>{admin_sections}
<script src="{_e(prefix)}static/dashboard.js"></script>
</body></html>"""
