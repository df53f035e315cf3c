"""Request bodies are capped where they are read: `POST api/allocations` refuses a body over
4 KiB with 413 from its Content-Length, before reading it and before asking the hub who is
asking (the hub is a spy here that must not be called). The handler runs for real on a
loopback port; the flood through the whole stack is in tests/docker/test_monitor.py."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
from tornado import web

from gpu_monitor.app import MAX_BUFFER_BYTES, MAX_READ_BYTES
from gpu_monitor.handlers.allocations import AllocationsHandler

from ..aio import run_async


class SpyHubAuth:
    """Counts the token checks; answers 'nobody' (so a small body ends in 401)."""

    def __init__(self):
        self.asked = 0

    async def get_user(self, handler, sync=False):
        self.asked += 1
        return None


class SpyAllocationsHandler(AllocationsHandler):
    spy = SpyHubAuth()

    @property
    def hub_auth(self):
        return self.spy


def _exchange(port: int, head: bytes, body_size: int, chunk: int = 65536) -> tuple[bytes, int, float]:
    """Send `head`, then up to `body_size` bytes of body; return the answer's first line, how
    much of the body the server took before answering or closing, and how long that took."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
        c.sendall(head)
        sent = 0
        try:
            while sent < body_size:
                sent += c.send(b" " * min(chunk, body_size - sent))
        except OSError:
            pass
        try:
            answer = c.recv(4096)
        except OSError:
            answer = b""
    return answer.split(b"\r\n", 1)[0], sent, time.monotonic() - started


async def _serve(fn):
    SpyAllocationsHandler.spy = SpyHubAuth()
    app = web.Application([(r"/api/allocations", SpyAllocationsHandler)], monitor=None)
    server = app.listen(0, address="127.0.0.1", max_body_size=MAX_READ_BYTES, max_buffer_size=MAX_BUFFER_BYTES)
    port = next(iter(server._sockets.values())).getsockname()[1]
    try:
        return await asyncio.get_running_loop().run_in_executor(None, fn, port)
    finally:
        server.stop()


def test_an_8_mib_body_is_refused_413_without_reading_it_or_asking_the_hub():
    size = 8 * 1024 * 1024
    head = f"POST /api/allocations HTTP/1.1\r\nHost: x\r\nContent-Length: {size}\r\n\r\n".encode()
    line, sent, took = run_async(_serve(lambda port: _exchange(port, head, size)))
    assert line == b"HTTP/1.1 413 the body is 8388608 bytes; at most 4096 are accepted"
    assert SpyAllocationsHandler.spy.asked == 0
    assert sent < size  # the server closed the connection instead of taking it all
    assert took < 5


def test_a_chunked_body_is_capped_too():
    head = b"POST /api/allocations HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"

    def send(port):
        chunk = b"%x\r\n%s\r\n" % (32768, b" " * 32768)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as c:
            c.sendall(head)
            try:
                for _ in range(64):  # 2 MiB offered
                    c.sendall(chunk)
                c.sendall(b"0\r\n\r\n")
            except OSError:
                return b"closed"
            try:
                return c.recv(4096).split(b"\r\n", 1)[0] or b"closed"
            except OSError:
                return b"closed"

    answer = run_async(_serve(send))
    # past the server's 64 KiB read limit tornado stops reading (400 "chunked body too large"
    # or a closed connection); nothing beyond the limit is buffered
    assert answer == b"closed" or answer.startswith((b"HTTP/1.1 413", b"HTTP/1.1 400")), answer
    assert SpyAllocationsHandler.spy.asked <= 1


def test_a_small_body_goes_on_to_authentication():
    body = b'{"user": "a", "count": 1}'
    head = f"POST /api/allocations HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    line, _, _ = run_async(_serve(lambda port: _exchange(port, head, 0)))
    assert line.startswith(b"HTTP/1.1 401")
    assert SpyAllocationsHandler.spy.asked == 1


@pytest.mark.parametrize("length", ["4097", "-1", "abc"])
def test_a_content_length_over_the_cap_or_not_a_number_is_413(length):
    head = f"POST /api/allocations HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n\r\n".encode()
    line, _, _ = run_async(_serve(lambda port: _exchange(port, head, 0)))
    # tornado itself refuses a malformed Content-Length (400) before any handler runs
    assert line.startswith(b"HTTP/1.1 413") or line.startswith(b"HTTP/1.1 400"), line
    assert SpyAllocationsHandler.spy.asked == 0
