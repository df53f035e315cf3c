"""`GET api/health` reports the database: it answers, it does not, it hangs, or a session has
held the allocation lock too long. The handler runs for real (tornado on a loopback port); the
store is faked (the real check runs against PostgreSQL in tests/docker/test_store.py)."""

from __future__ import annotations

import json
import threading
import time

import pytest
from tornado import web
from tornado.httpclient import AsyncHTTPClient

from gpu_monitor.allocator import Policy
from gpu_monitor.handlers.health import HealthHandler
from gpu_monitor.monitor import HostInfo, Monitor
from gpu_monitor.store import DatabaseHealth

from ..aio import run_async


class StoreWithHealth:
    def __init__(self, health: DatabaseHealth | None = None, hang: float = 0.0):
        self._health = health or DatabaseHealth(True, "ok")
        self.hang = hang
        self.released = threading.Event()

    def health(self) -> DatabaseHealth:
        if self.hang:
            self.released.wait(self.hang)
        return self._health


async def _get(store, busy_since=None) -> tuple[int, dict, float]:
    monitor = Monitor([], HostInfo("cpu-slices"), store=store, policy=Policy())  # type: ignore[arg-type]
    monitor.busy_since = busy_since
    app = web.Application([(r"/api/health", HealthHandler)], monitor=monitor)
    server = app.listen(0, address="127.0.0.1")
    port = next(iter(server._sockets.values())).getsockname()[1]
    try:
        started = time.monotonic()
        r = await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/api/health", raise_error=False, request_timeout=20)
        return r.code, json.loads(r.body), time.monotonic() - started
    finally:
        server.stop()
        monitor.close()


def test_healthy_when_the_database_answers():
    code, body, _ = run_async(_get(StoreWithHealth()))
    assert (code, body) == (200, {"status": "ok"})


def test_503_with_the_stores_sentence_when_it_is_unhappy():
    sentence = "database busy: PostgreSQL session 42 (psql, idle in transaction) has held the allocation lock"
    code, body, _ = run_async(_get(StoreWithHealth(DatabaseHealth(False, sentence))))
    assert code == 503 and body["message"] == sentence


def test_503_within_a_few_seconds_when_the_database_hangs():
    store = StoreWithHealth(hang=30)
    try:
        code, body, took = run_async(_get(store))
    finally:
        store.released.set()
    assert code == 503 and "does not answer within" in body["message"]
    assert took < 4.5  # the compose healthcheck gives up after 5 s


def test_503_while_allocations_time_out_on_the_lock():
    code, body, _ = run_async(_get(StoreWithHealth(), busy_since=time.time() - 30))
    assert code == 503 and body["message"].startswith("database busy")


@pytest.mark.parametrize("sqlstate, words", [("55P03", "database busy"), ("57014", "database busy"),
                                               ("08006", "not answering")])
def test_a_lock_timeout_is_a_503_database_busy(sqlstate, words):
    from sqlalchemy.exc import OperationalError

    from gpu_monitor.handlers.base import JSONErrorHandler

    class Orig(Exception):
        pgcode = sqlstate

    class Probe(JSONErrorHandler):
        def get(self):
            raise OperationalError("SELECT pg_advisory_xact_lock(1)", {}, Orig("canceling statement due to lock timeout"))

    async def go():
        server = web.Application([(r"/", Probe)]).listen(0, address="127.0.0.1")
        port = next(iter(server._sockets.values())).getsockname()[1]
        try:
            return await AsyncHTTPClient().fetch(f"http://127.0.0.1:{port}/", raise_error=False)
        finally:
            server.stop()

    r = run_async(go())
    assert r.code == 503 and words in json.loads(r.body)["message"]
