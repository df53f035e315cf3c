"""The GPU policy, accounting and idle reclaim in the real stack (CPU slices): limits refuse
with their reason, shared devices admit N and refuse N+1, accounting survives a restart, an
idle server is noticed and stopped. Each test that changes the policy recreates the monitor
(and the hub, which reads whether idle reclaim is on) with its file, and puts the default back."""

from __future__ import annotations

import contextlib
import time

import pytest

from ..harness.stack import PROJECT, wait_for
from .helpers import allocations, monitor, recreated

pytestmark = pytest.mark.docker


@contextlib.contextmanager
def policy(stack, text: str, services=("gpu-monitor",)):
    path = stack.workdir / f"gpu-policy-{time.monotonic_ns()}.yaml"
    path.write_text(text)
    path.chmod(0o644)
    with recreated(stack, services, {"GPUHUB_POLICY": str(path)}):
        yield path


def grant(stack, user: str, count: int = 1, **extra):
    return monitor(stack, "POST", "api/allocations", json={"user": user, "count": count, "profile": "opencl", **extra})


def release_all(stack):
    for a in allocations(stack):
        monitor(stack, "DELETE", f"api/allocations/{a['id']}")


def test_limits_refuse_with_their_reason_through_the_api_and_the_hub(stack):
    with policy(stack, "max_gpus_per_user: 1\ngroups: {students: {max_gpus_per_user: 0}}\n"):
        try:
            assert grant(stack, "lim-ada").status_code == 201
            r = grant(stack, "lim-ada", server="second")
            assert r.status_code == 503 and r.json()["code"] == "over_user_limit", r.text
            assert "the limit is 1 per user and you already hold 1" in r.json()["message"]
            r = grant(stack, "lim-bob", groups=["students"])
            assert r.status_code == 503 and r.json()["code"] == "over_group_limit", r.text
            # through the hub: the spawner passes the person's hub groups
            stack.api("POST", "users/bob")
            stack.api("POST", "groups/students")
            assert stack.api("POST", "groups/students/users", json={"users": ["bob"]}).status_code == 200
            r = stack.start_server("bob", {"profile": "opencl", "gpus": 1})
            assert r.status_code == 503, r.text
            assert "your group 'students' allows 0 per user" in r.json()["message"]
            assert f"{PROJECT}-bob" not in stack.user_containers()
        finally:
            stack.api("DELETE", "groups/students")
            release_all(stack)


def test_a_shared_device_admits_n_servers_and_refuses_the_next(stack):
    with policy(stack, "sharing: {cpu-slice: {shared: 2}}\n"):
        try:
            granted = [grant(stack, f"share-{i}") for i in range(4)]
            assert [r.status_code for r in granted] == [201] * 4, [r.text for r in granted]
            per_device = {}
            for r in granted:
                uuid = r.json()["devices"][0]["uuid"]
                per_device[uuid] = per_device.get(uuid, 0) + 1
            assert sorted(per_device.values()) == [2, 2]  # spread: an idle device before a seat
            r = grant(stack, "share-4")
            assert r.status_code == 503 and r.json()["code"] == "none_free", r.text
            data = monitor(stack, "GET", "api/devices").json()
            assert [d["seats"] for d in data["devices"]] == [2, 2] and data["free"] == 0
        finally:
            release_all(stack)


def test_accounting_totals_survive_a_restart(stack):
    r = grant(stack, "acct-ada", groups=["ml", "staff"])
    assert r.status_code == 201, r.text
    started = time.time()
    # a few usage writes (every 2 s in the test stack), and released well before the grace (5 s) after
    # which reconciliation frees an allocation that no container holds (as this one)
    time.sleep(3.5)
    assert monitor(stack, "DELETE", f"api/allocations/{r.json()['id']}").status_code == 200
    held = time.time() - started
    stack.compose("restart", "gpu-monitor")
    stack.wait_hub()
    wait_for(lambda: monitor(stack, "GET", "api/health").status_code == 200, 60, what="monitor back")

    rows = {row["name"]: row for row in monitor(stack, "GET", "api/accounting").json()["rows"]}
    ada = rows["acct-ada"]
    assert ada["allocations"] == 1
    assert ada["gpu_hours"] * 3600 == pytest.approx(held, abs=1.5)
    # measured while held: most of it (the last moments before the release may be unwritten)
    assert 0 < ada["sampled_hours"] * 3600 <= ada["gpu_hours"] * 3600 + 0.1
    assert ada["idle_hours"] + ada["busy_hours"] == pytest.approx(ada["sampled_hours"])
    groups = {row["name"] for row in monitor(stack, "GET", "api/accounting?by=group").json()["rows"]}
    assert {"ml", "staff"} <= groups
    csv = monitor(stack, "GET", "api/accounting?format=csv")
    assert csv.headers["Content-Type"].startswith("text/csv")
    assert any(line.startswith("acct-ada,1,") for line in csv.text.splitlines())
    # a normal user may not read it
    r = monitor(stack, "GET", "api/accounting", token="")
    assert r.status_code in (401, 403)
    bad = monitor(stack, "GET", "api/accounting?start=yesterday")
    assert bad.status_code == 400 and "ISO 8601" in bad.json()["message"]
    bad = monitor(stack, "GET", "api/accounting?start=nan")
    assert bad.status_code == 400 and "finite" in bad.json()["message"]


def test_an_idle_server_gets_a_notice_then_is_stopped_and_its_device_freed(stack):
    # CPU slices show whole-core utilisation, which other work on this busy machine drives up: here
    # anything short of a fully busy core counts as idle
    text = ("idle_reclaim: {enabled: true, below_utilization: 1.0, notice_after_minutes: 0.05, "
            "stop_after_minutes: 0.3}\n")
    with policy(stack, text, services=("gpu-monitor", "hub")):
        r = stack.start_server("carol", {"profile": "opencl", "gpus": 1})
        assert r.status_code in (201, 202), r.text
        try:
            noticed = wait_for(lambda: [a for a in allocations(stack, "carol") if a["idle_notice"]], 30,
                               what="an idle notice on carol's allocation")
            notice = noticed[0]["idle_notice"]
            assert notice["reclaim_at"] - notice["idle_since"] == pytest.approx(18)
            # with every device held, a refusal says when the idle one is due to come back
            other = grant(stack, "busy-elsewhere")
            assert other.status_code == 201, other.text
            refused = grant(stack, "waiting")
            monitor(stack, "DELETE", f"api/allocations/{other.json()['id']}")
            assert refused.status_code == 503, refused.text
            assert refused.json()["free_at"] == pytest.approx(notice["reclaim_at"])
            assert "the soonest device is likely to be free at" in refused.json()["message"]
            started = time.monotonic()
            wait_for(lambda: not stack.api("GET", "users/carol").json()["servers"], 60, what="carol's server stopped")
            print(f"\nidle reclaim: notice seen, server stopped {time.monotonic() - started:.1f} s later")
            assert allocations(stack, "carol") == []
            assert f"{PROJECT}-carol" not in stack.user_containers()
            logs = stack.compose("logs", "--no-color", "gpu-monitor").stdout
            assert "idle reclaim: stopped carol/" in logs
        finally:
            if stack.api("GET", "users/carol").json().get("servers"):
                stack.stop_server("carol")


def test_the_idle_culler_stops_an_idle_server_and_its_device_is_freed(stack):
    with recreated(stack, ("hub",), {"GPUHUB_CULL_IDLE_SECONDS": "10"}):
        r = stack.start_server("carol", {"profile": "opencl", "gpus": 1})
        assert r.status_code in (201, 202), r.text
        started = time.monotonic()
        try:
            assert len(allocations(stack, "carol")) == 1
            # idle for 10 s, checked every 5 s (jupyterhub-idle-culler's default: timeout / 2)
            wait_for(lambda: not stack.api("GET", "users/carol").json()["servers"], 60,
                     what="the idle culler stopping carol's server")
            print(f"\nidle culler (timeout 10 s): server stopped {time.monotonic() - started:.1f} s after its start")
            assert allocations(stack, "carol") == []
            assert "idle-culler" in stack.compose("logs", "--no-color", "hub").stdout
        finally:
            if stack.api("GET", "users/carol").json().get("servers"):
                stack.stop_server("carol")
