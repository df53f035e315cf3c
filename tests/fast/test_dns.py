"""JupyterHub's HTTP client in the hub and the monitor resolves names afresh (gpu_monitor.dns):
on a swarm a service's name is its task's address, which a restart changes, and aiodns kept
Docker's answer for 600 s (the monitor then asked a restarted hub's old address, found
2026-12-07). What a replaced task looks like on a swarm is tests/swarm/test_swarm_stack.py's."""

import socket

from jupyterhub.httpclient import JupyterHubHTTPClient
from tornado import web

from gpu_monitor.dns import SystemResolver, connector_options

from ..aio import run_async


def test_the_resolver_is_built_without_a_loop_and_asks_the_system_every_time(monkeypatch):
    resolver = SystemResolver()  # as traitlets config builds it: no event loop runs yet
    answers = iter(["10.98.0.5", "10.98.0.9"])  # the hub's task, then its replacement

    def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
        assert host == "hub"
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (next(answers), port))]

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)

    async def twice():
        return [(await resolver.resolve("hub", 8081))[0]["host"] for _ in range(2)]

    assert run_async(twice()) == ["10.98.0.5", "10.98.0.9"]


def test_jupyterhubs_client_with_these_options_reaches_a_server_by_name():
    class Hello(web.RequestHandler):
        def get(self):
            self.write("hello")

    async def fetch() -> str:
        server = web.Application([("/", Hello)]).listen(0, "127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        # as the monitor sets it (gpu_monitor.__main__): the one instance's options serve every loop's
        client = JupyterHubHTTPClient.instance()
        client.connector_options = connector_options()
        try:
            response = await client.fetch(f"http://localhost:{port}/")
            assert isinstance(client._session.connector._resolver, SystemResolver)
            return await response.text()
        finally:
            await client.close()  # clears the instance too
            server.stop()

    assert run_async(fetch()) == "hello"
