"""gpuhub.monitor_client against real HTTP on 127.0.0.1: the fake monitor of the hub's tests
(tests/fakes/monitor_api.py) for the API's answers, and a server of canned answers for what a
monitor, or a proxy in its place, may also send (an error page, a body that is not JSON)."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest
from tornado import netutil, web
from tornado.httpserver import HTTPServer

from gpuhub.monitor_client import AllocationRequest, Devices, Grant, Host, MonitorClient, MonitorUnavailable, Refusal

from ..aio import run_async
from ..fakes.monitor_api import NVML_HOST, AllocationTimeoutMonitor, FakeMonitor

TOKEN = "t" * 32


def request(user: str = "alice", count: int = 1, server: str = "") -> AllocationRequest:
    return AllocationRequest(user=user, server=server, profile="cuda", count=count, groups=("physics",))


class CannedMonitor:
    """Answers every request for a path with the (status, content type, body) given for it, a
    404 page for any other path, and records (method, path, headers, body) in `requests`."""

    def __init__(self, answers: dict[str, tuple[int, str, str]]):
        self.answers = answers
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.url = ""

    async def __aenter__(self) -> CannedMonitor:
        canned = self

        class Handler(web.RequestHandler):
            def answer(self, path: str) -> None:
                canned.requests.append((self.request.method or "", path, dict(self.request.headers),
                                        self.request.body))
                status, content_type, body = canned.answers.get(path, (404, "text/html", "<h1>404</h1>"))
                self.set_status(status)
                self.set_header("Content-Type", content_type)
                self.finish(body)

            get = post = delete = answer

        app = web.Application([(r"/services/gpu-monitor/(.*)", Handler)])
        sockets = netutil.bind_sockets(0, "127.0.0.1")
        self._server = HTTPServer(app)
        self._server.add_sockets(sockets)
        self.url = f"http://127.0.0.1:{sockets[0].getsockname()[1]}/services/gpu-monitor/"
        return self

    async def __aexit__(self, *exc: Any) -> None:
        self._server.stop()
        await self._server.close_all_connections()


def json_answer(status: int, body: dict[str, Any]) -> tuple[int, str, str]:
    return status, "application/json", json.dumps(body)


def client(url: str, timeout: float = 5) -> MonitorClient:
    return MonitorClient(url, TOKEN, timeout)


# ---- the API's answers, from the fake monitor ---------------------------------------------------

def test_host_facts_come_from_api_host_alone():
    events: list[str] = []

    async def scenario():
        async with FakeMonitor(host=NVML_HOST, events=events) as monitor:
            return await client(monitor.url).host()

    assert run_async(scenario()) == Host(backend="nvml", driver_version="580.65.06", cuda_driver_version="13.0")
    assert events == ["monitor GET api/host"]


def test_devices_count_what_is_free():
    async def scenario():
        async with FakeMonitor(devices=3) as monitor:
            monitor.add("bob", "", monitor.device_uuids[:1])
            return await client(monitor.url).devices()

    devices = run_async(scenario())
    assert isinstance(devices, Devices)
    assert (devices.total, devices.free, devices.host.backend) == (3, 2, "cpu-slices")


def test_a_grant_and_the_same_request_again():
    async def scenario():
        async with FakeMonitor(devices=2) as monitor:
            c = client(monitor.url)
            return await c.allocate(request(count=2)), await c.allocate(request(count=2))

    first, again = run_async(scenario())
    assert isinstance(first, Grant) and isinstance(again, Grant)
    assert (first.existing, again.existing) == (False, True) and first.id == again.id
    assert [d["uuid"] for d in first.devices] == ["GPU-00000000-fake", "GPU-00000001-fake"]
    assert first.allocation["user"] == "alice"


def test_another_size_for_the_same_server_is_a_conflict_naming_the_allocation_held():
    async def scenario():
        async with FakeMonitor(devices=2) as monitor:
            held = monitor.add("alice", "", monitor.device_uuids[:2])
            return held["id"], await client(monitor.url).allocate(request(count=1))

    held, refusal = run_async(scenario())
    assert isinstance(refusal, Refusal)
    assert (refusal.status, refusal.code, refusal.allocation_id) == (409, "conflict", held)
    assert f"already holds allocation {held}" in refusal.message


def test_none_free_is_a_refusal_with_the_monitors_sentence():
    async def scenario():
        async with FakeMonitor(devices=1) as monitor:
            monitor.add("bob", "", monitor.device_uuids)
            return await client(monitor.url).allocate(request())

    refusal = run_async(scenario())
    assert refusal == Refusal(status=503, code="none_free", message="0 of 1 devices free")


def test_releasing_twice_is_harmless():
    async def scenario():
        async with FakeMonitor() as monitor:
            c = client(monitor.url)
            grant = await c.allocate(request())
            assert isinstance(grant, Grant)
            answers = await c.release(grant.id), await c.release(grant.id)
            return answers, monitor.allocations

    answers, left = run_async(scenario())
    assert answers == (None, None) and left == {}


def test_requests_carry_the_token_and_the_request_as_json():
    async def scenario():
        async with CannedMonitor({"api/allocations": json_answer(201, {"id": "a1", "devices": []})}) as monitor:
            await client(monitor.url).allocate(request(server="gpu"))
            return monitor.requests

    [(method, path, headers, body)] = run_async(scenario())
    assert (method, path) == ("POST", "api/allocations")
    assert headers["Authorization"] == f"token {TOKEN}"
    assert json.loads(body) == {"user": "alice", "server": "gpu", "profile": "cuda", "count": 1,
                                "groups": ["physics"]}


def test_a_kind_of_node_travels_as_a_json_object():
    async def scenario():
        async with CannedMonitor({"api/allocations": json_answer(201, {"id": "a1", "devices": []})}) as monitor:
            await client(monitor.url).allocate(
                AllocationRequest("alice", "", "cuda", 1, node_labels=(("gpu", "a100"), ("large-memory", ""))))
            return monitor.requests

    [(_, _, _, body)] = run_async(scenario())
    assert json.loads(body)["node_labels"] == {"gpu": "a100", "large-memory": ""}


def test_a_node_travels_only_when_asked_for():
    async def scenario():
        async with CannedMonitor({"api/allocations": json_answer(201, {"id": "a1", "devices": []})}) as monitor:
            await client(monitor.url).allocate(AllocationRequest("alice", "", "cuda", 1, node="k3x9"))
            await client(monitor.url).allocate(AllocationRequest("bob", "", "cuda", 1))
            return monitor.requests

    [(_, _, _, first), (_, _, _, second)] = run_async(scenario())
    assert json.loads(first)["node"] == "k3x9" and "node" not in json.loads(second)


# ---- answers that are not the API's -------------------------------------------------------------

ANSWERED = {
    # the monitor's own JSON error, even as a 502-504: it did answer
    "JSON 503 without a code": (json_answer(503, {"status": 503, "message": "database busy"}),
                                Refusal(status=503, message="database busy")),
    "JSON 502": (json_answer(502, {"message": "upstream"}), Refusal(status=502, message="upstream")),
    "forbidden": (json_answer(403, {"status": 403, "message": "not allowed"}),
                  Refusal(status=403, message="not allowed")),
    "no message": (json_answer(400, {"status": 400}), Refusal(status=400, message="monitor answered 400")),
    "a page that is not JSON": ((500, "text/html", "<p>oops</p>"), Refusal(status=500, message="<p>oops</p>")),
    "JSON that is not an object": ((400, "application/json", "[1]"), Refusal(status=400, message="[1]")),
}


@pytest.mark.parametrize("answer, refusal", ANSWERED.values(), ids=ANSWERED.keys())
def test_what_the_monitor_answered_is_a_refusal(answer, refusal):
    async def scenario():
        async with CannedMonitor({"api/allocations": answer, "api/allocations/a1": answer}) as monitor:
            c = client(monitor.url)
            return await c.allocate(request()), await c.release("a1")

    assert run_async(scenario()) == (refusal, refusal)


NOT_ANSWERED = {
    "a proxy's 502 page": (502, "text/html", "<h1>Bad Gateway</h1>"),
    "a proxy's 504 text": (504, "text/plain", "Gateway Timeout"),
}


@pytest.mark.parametrize("answer", NOT_ANSWERED.values(), ids=NOT_ANSWERED.keys())
def test_a_gateway_error_page_is_a_monitor_that_did_not_answer(answer):
    async def scenario():
        async with CannedMonitor({path: answer for path in ("api/host", "api/devices", "api/allocations",
                                                            "api/allocations/a1")}) as monitor:
            c = client(monitor.url)
            for call in (c.host, c.devices, lambda: c.allocate(request()), lambda: c.release("a1")):
                with pytest.raises(MonitorUnavailable, match="the GPU monitor did not answer"):
                    await call()

    run_async(scenario())


def test_host_or_devices_refused_is_a_monitor_that_cannot_be_used():
    forbidden = json_answer(403, {"status": 403, "message": "not allowed"})

    async def scenario():
        async with CannedMonitor({"api/host": forbidden, "api/devices": forbidden}) as monitor:
            c = client(monitor.url)
            for call in (c.host, c.devices):
                with pytest.raises(MonitorUnavailable, match="the GPU monitor answered 403: not allowed"):
                    await call()

    run_async(scenario())


def test_a_monitor_that_is_down_did_not_answer():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    async def scenario():
        with pytest.raises(MonitorUnavailable, match="the GPU monitor did not answer"):
            await client(f"http://127.0.0.1:{port}/services/gpu-monitor/").allocate(request())

    run_async(scenario())


def test_a_monitor_that_answers_too_late_did_not_answer():
    async def scenario():
        async with AllocationTimeoutMonitor() as monitor:
            with pytest.raises(MonitorUnavailable, match="the GPU monitor did not answer"):
                await client(monitor.url, timeout=0.3).allocate(request())

    run_async(scenario())
