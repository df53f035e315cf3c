"""Idle reclaim needs the hub to have given the monitor's token the `servers` scope, which the
hub does only if the policy it read when it started enables reclaim. A fake hub on a loopback
port answers `GET user` with the scopes of each case."""

from __future__ import annotations

import json
import socket
import time
import types

import pytest
from tornado import web

from gpu_monitor.__main__ import check_reclaim_scope
from gpu_monitor.allocator import Allocation
from gpu_monitor.devices import Sample
from gpu_monitor.env import ConfigError
from gpu_monitor.idle import Notices
from gpu_monitor.jobs.idle_reclaimer import IdleReclaimer
from gpu_monitor.policy import IdleReclaim
from gpu_monitor.sampler import DeviceState

from ..aio import run_async

WITHOUT = ["list:users", "read:servers", "access:services!service=gpu-monitor"]
WITH = WITHOUT + ["servers", "delete:servers"]


class FakeHubUser(web.RequestHandler):
    def get(self):
        self.settings["asked"].append(self.request.headers.get("Authorization"))
        self.finish(json.dumps({"kind": "service", "name": "gpu-monitor", "scopes": self.settings["scopes"]}))


async def _with_hub(scopes, fn):
    asked: list = []
    server = web.Application([(r"/hub/api/user", FakeHubUser)], scopes=scopes, asked=asked).listen(0, "127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    try:
        return await fn(f"http://127.0.0.1:{port}/hub/api"), asked
    finally:
        server.stop()


def test_the_monitor_refuses_to_start_beside_a_hub_that_did_not_grant_the_scope():
    with pytest.raises(ConfigError) as info:
        run_async(_with_hub(WITHOUT, lambda url: check_reclaim_scope(url, "t" * 40)))
    message = str(info.value)
    assert message.startswith("GPUHUB_POLICY: idle_reclaim is enabled")
    assert "docker compose restart hub gpu-monitor" in message and "\n" not in message


def test_it_starts_when_the_hub_granted_the_scope():
    _, asked = run_async(_with_hub(WITH, lambda url: check_reclaim_scope(url, "t" * 40)))
    assert asked == ["token " + "t" * 40]


def test_it_starts_when_the_hub_does_not_answer_yet():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    run_async(check_reclaim_scope(f"http://127.0.0.1:{port}/hub/api", "t" * 40))


def _idle_monitor():
    now = time.time()
    held = [Allocation("a1", "ada", "", "opencl", ("CPU-0",), now - 7200)]
    state = DeviceState(Sample("CPU-0", now, utilization_ratio=0.0), busy_seconds=0.0, sampled_seconds=60.0)

    async def run(fn, *args):
        return fn(*args)

    return types.SimpleNamespace(run=run, store=types.SimpleNamespace(list=lambda: held),
                                 sampler=types.SimpleNamespace(states=lambda: {"CPU-0": state}),
                                 notices=Notices())


@pytest.mark.parametrize("scopes, noticed", [(WITHOUT, False), (WITH, True)], ids=["hub refuses", "hub allows"])
def test_notices_only_while_the_hub_confirms_the_scope(scopes, noticed):
    policy = IdleReclaim(enabled=True, notice_after_minutes=1, stop_after_minutes=600)

    monitor = _idle_monitor()

    async def check(url):
        reclaimer = IdleReclaimer(monitor, policy, url, "t" * 40, interval=30)
        reclaimer.started -= 7200  # the monitor has watched for two hours
        reclaimer.activity = lambda: {"CPU-0": 0.0}
        await reclaimer.once()
        return reclaimer

    reclaimer, _ = run_async(_with_hub(scopes, check))
    assert bool(reclaimer.notices) is noticed
    assert reclaimer.may_stop is noticed
    assert bool(monitor.notices) is noticed  # where the API reads them


def test_the_api_reads_the_notices_the_reclaimer_wrote():
    from gpu_monitor.allocator import Policy
    from gpu_monitor.idle import Notice
    from gpu_monitor.monitor import HostInfo, Monitor

    monitor = Monitor([], HostInfo("cpu-slices"), store=None, policy=Policy())  # type: ignore[arg-type]
    try:
        assert monitor.notice("a1") is None and monitor.soonest_reclaim() is None
        monitor.notices.replace({"a1": Notice(idle_since=100.0, reclaim_at=700.0),
                                 "a2": Notice(idle_since=50.0, reclaim_at=650.0)})
        assert monitor.notice("a1") == {"idle_since": 100.0, "reclaim_at": 700.0}
        assert monitor.notice("a3") is None
        assert monitor.soonest_reclaim() == 650.0
        monitor.notices.replace({})
        assert monitor.soonest_reclaim() is None
    finally:
        monitor.close()
