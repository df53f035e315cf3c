"""The monitor's real application (make_app, MonitorHubOAuth) on a loopback port, behind a fake
hub that answers `GET user` for a few tokens: `api/host`, and the refusals of
`POST api/allocations` as JSON. The store is faked (the real one runs in the docker tier)."""

from __future__ import annotations

import json
import time

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from gpu_monitor.allocator import Granted, Policy, decide
from gpu_monitor.app import make_app
from gpu_monitor.contract import ACCESS_SCOPE, SCOPE_ALLOCATE, SERVICE_PREFIX
from gpu_monitor.devices import Device
from gpu_monitor.hubauth import MonitorHubOAuth
from gpu_monitor.idle import Notice
from gpu_monitor.monitor import HostInfo, Monitor

from ..aio import run_async

# token -> what the hub says its owner is (a token it does not know: 403, as the hub answers)
TOKENS = {
    "ada-token": {"kind": "user", "name": "ada", "scopes": [ACCESS_SCOPE]},
    "spawner-token": {"kind": "service", "name": "gpuhub-spawner", "scopes": [ACCESS_SCOPE, SCOPE_ALLOCATE]},
    "stranger-token": {"kind": "user", "name": "eve", "scopes": ["read:users"]},  # no access to the monitor
}
NVML = HostInfo("nvml", "535.104.05", (12, 2))
GPU = Device("GPU-0", 0, "gpu", "Test GPU")


class FakeHubUser(web.RequestHandler):
    def get(self):
        model = TOKENS.get(self.request.headers.get("Authorization", "").removeprefix("token "))
        if model is None:
            raise web.HTTPError(403)
        self.finish(json.dumps(model))


class StoreThatIsNotAsked:
    def __getattr__(self, name):
        raise AssertionError(f"api/host must not use the store ({name})")


class StoreThatDecides:
    """`allocate_many` as the store decides, over allocations in memory; counts every call."""

    def __init__(self, held=()):
        self.held = list(held)
        self.calls: list[str] = []

    def allocate_many(self, requests, devices, policy, now=None, unavailable=frozenset(), nodes=None):
        self.calls.append("allocate_many")
        decisions = []
        for r in requests:
            d = decide(r, devices, self.held, policy, now=time.time(), new_id=f"id-{len(self.held)}")
            if isinstance(d, Granted) and not d.existing:
                self.held.append(d.allocation)
            decisions.append(d)
        return decisions

    def __getattr__(self, name):
        self.calls.append(name)
        raise AssertionError(f"a refusal needs no other store call ({name})")


async def _ask(monitor: Monitor, requests: list[tuple[str, str, str | None, bytes | None]]) -> list[tuple[int, object]]:
    """(method, path under the prefix, token, body) each; (status, JSON body) each."""
    hub = web.Application([(r"/hub/api/user", FakeHubUser)]).listen(0, address="127.0.0.1")
    hub_port = next(iter(hub._sockets.values())).getsockname()[1]
    hub_auth = MonitorHubOAuth.instance(api_token="m" * 32, api_url=f"http://127.0.0.1:{hub_port}/hub/api",
                                        hub_prefix="/hub/", base_url=SERVICE_PREFIX,
                                        oauth_client_id="service-gpu-monitor",
                                        oauth_redirect_uri=f"{SERVICE_PREFIX}oauth_callback",
                                        access_scopes={ACCESS_SCOPE})
    server = make_app(monitor, hub_auth, SERVICE_PREFIX, cookie_secret=b"s" * 32).listen(0, address="127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    client = AsyncHTTPClient(force_instance=True)
    answers = []
    try:
        for method, path, token, body in requests:
            headers = {"Authorization": f"token {token}"} if token else {}
            r = await client.fetch(f"http://127.0.0.1:{port}{SERVICE_PREFIX}{path}", method=method, body=body,
                                   headers=headers, raise_error=False, request_timeout=20)
            answers.append((r.code, json.loads(r.body)))
    finally:
        client.close()
        server.stop()
        hub.stop()
        MonitorHubOAuth.clear_instance()
        monitor.close()
    return answers


def _monitor(store, host=NVML, devices=(GPU,)) -> Monitor:
    return Monitor(list(devices), host, store=store, policy=Policy())  # type: ignore[arg-type]


HOSTS = {
    "nvml": (NVML, {"backend": "nvml", "driver_version": "535.104.05", "cuda_driver_version": "12.2"}),
    "cpu slices": (HostInfo("cpu-slices"), {"backend": "cpu-slices", "driver_version": None,
                                            "cuda_driver_version": None}),
}


@pytest.mark.parametrize("host, expected", HOSTS.values(), ids=HOSTS.keys())
def test_api_host_answers_the_host_alone_to_users_and_services(host, expected):
    answers = run_async(_ask(_monitor(StoreThatIsNotAsked(), host), [
        ("GET", "api/host", "ada-token", None), ("GET", "api/host", "spawner-token", None)]))
    assert answers == [(200, expected), (200, expected)]


def test_api_host_needs_a_token_the_hub_accepts_for_the_monitor():
    (none, unknown, stranger) = run_async(_ask(_monitor(StoreThatIsNotAsked()), [
        ("GET", "api/host", None, None), ("GET", "api/host", "forged-token", None),
        ("GET", "api/host", "stranger-token", None)]))
    assert none[0] == 401 and unknown[0] == 401 and stranger[0] == 403
    assert all(set(body) == {"status", "message"} for _, body in (none, unknown, stranger))


def _request(user: str, count: int) -> bytes:
    return json.dumps({"user": user, "server": "", "profile": "cuda", "count": count}).encode()


def test_a_conflict_names_the_allocation_held_without_asking_the_store_again():
    store = StoreThatDecides()
    monitor = _monitor(store)
    (granted, conflict) = run_async(_ask(monitor, [
        ("POST", "api/allocations", "spawner-token", _request("ada", 1)),
        ("POST", "api/allocations", "spawner-token", _request("ada", 2))]))
    assert granted[0] == 201
    assert conflict == (409, {"status": 409, "code": "conflict", "allocation_id": granted[1]["id"],
                              "message": "your default server already holds 1 GPU(s) for profile 'cuda'; release "
                                         "them before asking for 2 for profile 'cuda'"})
    assert store.calls == ["allocate_many", "allocate_many"]


def test_none_free_says_when_an_idle_servers_device_is_due_back():
    store = StoreThatDecides()
    monitor = _monitor(store)
    due = 1_700_003_640.0  # 23:14 UTC
    monitor.notices.replace({"id-0": Notice(idle_since=due - 600, reclaim_at=due)})
    (granted, refused) = run_async(_ask(monitor, [
        ("POST", "api/allocations", "spawner-token", _request("ada", 1)),
        ("POST", "api/allocations", "spawner-token", _request("bob", 1))]))
    assert granted[0] == 201
    assert refused == (503, {"status": 503, "code": "none_free", "free_at": due,
                             "message": "1 GPU(s) requested, 0 free (1 of 1 in use); try again when one is "
                                        "released; the soonest device is likely to be free at 23:14 UTC (an idle "
                                        "server is due to stop)"})
