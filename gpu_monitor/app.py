"""The monitor's HTTP service: a JupyterHub service under /services/gpu-monitor/.

Routes (relative to the service prefix):

    GET    api/health               no authentication; {"status": "ok"}, or 503 with what is wrong
                                    with the database (for the healthcheck)
    GET    api/devices              any hub user or service allowed to use the service
    GET    api/allocations          one's own; everyone's with scope custom:gpu-monitor:read-all
    GET    api/allocations/{id}     one's own, or any with read-all; 404 otherwise
    POST   api/allocations          scope custom:gpu-monitor:allocate (the hub; admins)
    DELETE api/allocations/{id}     scope custom:gpu-monitor:allocate
    GET    metrics                  scope custom:gpu-monitor:read-all (names users)
    GET    /                        a small status page (the full dashboard is a later issue)

Authentication is the hub's (`HubOAuth`): API tokens in an `Authorization: token ...` header,
or the service's OAuth cookie for people in a browser. Requests that change state must carry a
token header: a cookie alone never allocates or releases (no cross-site request forgery).
Everything that blocks (PostgreSQL, Docker, rendering metrics) runs in a thread pool; the event
loop only parses, checks and answers.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable, TypeVar

from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from sqlalchemy.exc import DBAPIError, OperationalError
from tornado import web

from .accounting import account, to_csv
from .allocator import Allocation, AllocationRequest, Decision, Granted, Policy, Refused
from .dashboard import STATIC, render_dashboard
from .devices import Device
from .loops import every
from .metrics import MonitorCollector, render
from .sampler import CounterDeltas, DeviceState, Sampler
from .contract import SCOPE_ALLOCATE, SCOPE_READ_ALL
from .store import HEALTH_TIMEOUT_SECONDS, AllocationStore, is_busy

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_BODY_BYTES = 4096  # an allocation request is a few dozen bytes
# What the HTTP server reads of any request body at all (larger: the connection is dropped),
# and what it buffers per connection. The allocation API refuses more than MAX_BODY_BYTES with
# 413 from the Content-Length, before reading the body or asking the hub who is asking; other
# routes take no body. So a flood of large bodies costs at most this much per connection.
MAX_READ_BYTES = 64 * 1024
MAX_BUFFER_BYTES = 256 * 1024
MAX_NAME_LENGTH = 255
REQUEST_FIELDS: dict[str, type] = {"user": str, "server": str, "profile": str, "count": int, "groups": list}
MAX_GROUPS = 256
# C0 controls and DEL: a NUL makes psycopg2 refuse the whole statement, the others have no
# place in a user, server, profile or group name (and forge log lines)
CONTROL_CHARACTERS = frozenset(map(chr, [*range(0x20), 0x7F]))
ALLOCATION_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"


class BadRequest(Exception):
    """A request the API refuses with 400 (or `status`); `str()` is the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_allocation_request(body: bytes) -> AllocationRequest:
    """The body of `POST api/allocations`, strictly: a JSON object with `user` and `count`,
    optionally `server` ("" = default server) and `profile`; nothing else."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted", 413)
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object like {"user": "ada", "count": 1}')
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"the fields are {', '.join(sorted(REQUEST_FIELDS))}")
    for name in ("user", "count"):
        if name not in data:
            raise BadRequest(f"field {name!r} is required")
    for name, kind in REQUEST_FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            what = {int: "whole number", str: "string", list: "list of strings"}[kind]
            raise BadRequest(f"field {name!r} must be a {what}, not {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_NAME_LENGTH:
            raise BadRequest(f"field {name!r} is longer than {MAX_NAME_LENGTH} characters")
        for text in (value if isinstance(value, list) else [value]):
            if isinstance(text, str) and not CONTROL_CHARACTERS.isdisjoint(text):
                raise BadRequest(f"field {name!r} contains a control character (U+0000-U+001F or U+007F)")
    if not data["user"]:
        raise BadRequest("field 'user' must not be empty")
    groups = data.get("groups", [])
    if len(groups) > MAX_GROUPS or not all(isinstance(g, str) and 0 < len(g) <= MAX_NAME_LENGTH for g in groups):
        raise BadRequest(f"field 'groups' must list at most {MAX_GROUPS} non-empty names of at most "
                         f"{MAX_NAME_LENGTH} characters")
    return AllocationRequest(user=data["user"], server=data.get("server", ""),
                             profile=data.get("profile", ""), count=data["count"],
                             groups=tuple(sorted(set(groups))))


@dataclass
class HostInfo:
    backend: str
    driver_version: str | None = None
    cuda_driver_version: tuple[int, int] | None = None

    def to_json(self) -> dict[str, Any]:
        cuda = self.cuda_driver_version
        return {"backend": self.backend, "driver_version": self.driver_version,
                "cuda_driver_version": f"{cuda[0]}.{cuda[1]}" if cuda else None}


class AllocationBatcher:
    """Group commit for allocations: requests that arrive while a transaction is running wait
    for it, then are decided together in the next one (`AllocationStore.allocate_many`).

    Deciding is cheap (about a millisecond); a transaction's round trips to PostgreSQL and its
    lock are what cost. One transaction in flight per monitor, however many requests: under a
    burst the p99 latency is a few transactions, not one transaction per request queued ahead.
    """

    MAX_BATCH = 256

    def __init__(self, monitor: Monitor) -> None:
        self.monitor = monitor
        self._queue: list[tuple[AllocationRequest, asyncio.Future[Decision]]] = []
        self._draining = False

    async def submit(self, request: AllocationRequest) -> Decision:
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._queue.append((request, future))
        if not self._draining:
            self._draining = True
            asyncio.create_task(self._drain())
        return await future

    async def _drain(self) -> None:
        m = self.monitor
        try:
            while self._queue:
                batch, self._queue = self._queue[:self.MAX_BATCH], self._queue[self.MAX_BATCH:]
                try:
                    decisions = await m.run(m.store.allocate_many, [r for r, _ in batch], m.devices, m.policy,
                                            None, m.unavailable)
                except Exception as e:  # noqa: BLE001 - answered below, one way or the other
                    if is_busy(e) and m.busy_since is None:
                        m.busy_since = time.time()
                    if len(batch) == 1 or not _may_be_one_requests_fault(e):
                        for _, future in batch:
                            if not future.done():
                                future.set_exception(e)
                        continue
                    log.warning("a batch of %d allocations failed (%s: %s); deciding each alone",
                                len(batch), type(e).__name__, str(e).splitlines()[0] if str(e) else "")
                    for request, future in batch:
                        await self._decide_alone(request, future)
                    continue
                m.busy_since = None
                for (_, future), decision in zip(batch, decisions):
                    if not future.done():
                        future.set_result(decision)
        finally:
            self._draining = False

    async def _decide_alone(self, request: AllocationRequest, future: asyncio.Future[Decision]) -> None:
        m = self.monitor
        try:
            decision = (await m.run(m.store.allocate_many, [request], m.devices, m.policy, None,
                                    m.unavailable))[0]
        except Exception as e:  # noqa: BLE001 - this request's own error
            if not future.done():
                future.set_exception(e)
        else:
            if not future.done():
                future.set_result(decision)


def _may_be_one_requests_fault(error: Exception) -> bool:
    """False for errors of the database as a whole (connection lost, timeouts): deciding a
    batch's requests one by one would only repeat them."""
    return not isinstance(error, OperationalError)


class UsageRecorder:
    """Every `interval` seconds: what each device did since the last time (the sampler's
    cumulative busy and sampled seconds) goes to every allocation holding it, per hour, and
    each device's utilisation and memory become a point of its per-minute history."""

    def __init__(self, monitor: Monitor, interval: float) -> None:
        self.monitor = monitor
        self.interval = interval
        self._grown = CounterDeltas()

    def deltas(self, states: dict[str, DeviceState], allocations: list[Allocation], now: float
               ) -> tuple[list[tuple[str, float, float, float]], list[tuple[str, float, float | None, float | None]]]:
        hour = now - now % 3600
        minute = now - now % 60
        usage: dict[str, list[float]] = {}
        points = []
        for uuid, (busy, sampled) in self._grown.take(states).items():
            state = states[uuid]
            if sampled <= 0:
                continue
            points.append((uuid, minute, busy / sampled if state.last.utilization_ratio is not None else None,
                           None if state.last.memory_used_bytes is None else float(state.last.memory_used_bytes)))
            for a in allocations:
                if uuid in a.device_uuids:
                    total = usage.setdefault(a.id, [0.0, 0.0])
                    total[0] += busy
                    total[1] += sampled
        return [(a, hour, b, s) for a, (b, s) in usage.items()], points

    async def flush(self) -> None:
        m = self.monitor
        allocations = await m.run(m.store.list)
        usage, points = self.deltas(m.sampler.states(), allocations, time.time())
        await m.run(m.store.record_usage, usage, points)

    async def run_forever(self) -> None:
        await every(self.interval, self.flush, "writing usage")


class Monitor:
    """What the handlers share: devices, sampler, store, policy and the thread pool."""

    def __init__(self, devices: list[Device], host: HostInfo, sampler: Sampler,
                 store: AllocationStore, policy: Policy, workers: int = 8,
                 flush_seconds: float = 60.0) -> None:
        self.devices = devices
        self.by_uuid = {d.uuid: d for d in devices}
        self.host = host
        self.sampler = sampler
        self.store = store
        self.policy = policy
        self.executor = ThreadPoolExecutor(workers, thread_name_prefix="gpu-monitor")
        self.allocations = AllocationBatcher(self)
        self.usage = UsageRecorder(self, flush_seconds)
        self.idle: Any = None  # an idle.IdleReclaimer once the service runs; None in tests
        # devices running containers use without an allocation (set by each reconcile round):
        # never granted while they are
        self.unavailable: frozenset[str] = frozenset()
        # when allocations began to time out waiting for a lock (None: the last one did not)
        self.busy_since: float | None = None
        # the health check's own thread: a pool full of waiting allocations must not delay it
        self._health_executor = ThreadPoolExecutor(1, thread_name_prefix="gpu-monitor-health")
        self._health: asyncio.Future[Any] | None = None

    async def database_health(self) -> tuple[bool, str]:
        """(ok, sentence) about PostgreSQL, within HEALTH_TIMEOUT_SECONDS and a little more.
        Checks that arrive while one is in flight share it (no pile-up when the database hangs)."""
        loop = asyncio.get_running_loop()
        if self._health is None or self._health.done():
            self._health = loop.run_in_executor(self._health_executor, self.store.health)
        try:
            health = await asyncio.wait_for(asyncio.shield(self._health), HEALTH_TIMEOUT_SECONDS + 1)
        except asyncio.TimeoutError:
            return False, f"the database does not answer within {HEALTH_TIMEOUT_SECONDS + 1:g} s"
        if not health.ok:
            return False, health.message
        if self.busy_since is not None:
            return False, ("database busy: allocations have been giving up waiting for the allocation lock "
                           f"since {time.strftime('%H:%M:%S UTC', time.gmtime(self.busy_since))}; look for a "
                           "session holding it in pg_stat_activity (state 'idle in transaction')")
        return True, "ok"

    def seats(self) -> dict[str, int]:
        """Every device that can be handed out, and how many allocations may hold it at once."""
        parents = {d.parent_uuid for d in self.devices if d.parent_uuid}
        return {d.uuid: self.policy.seats(d.kind) for d in self.devices if d.uuid not in parents}

    def notice(self, allocation_id: str) -> dict[str, float] | None:
        n = self.idle.notices.get(allocation_id) if self.idle is not None else None
        return None if n is None else {"idle_since": n.idle_since, "reclaim_at": n.reclaim_at}

    def soonest_reclaim(self) -> float | None:
        if self.idle is None or not self.idle.notices:
            return None
        return min(n.reclaim_at for n in self.idle.notices.values())

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args))

    def allocation_json(self, a: Allocation) -> dict[str, Any]:
        devices = []
        for uuid in a.device_uuids:
            d = self.by_uuid.get(uuid)
            devices.append({"uuid": uuid, "index": d.index if d else None, "kind": d.kind if d else None,
                            "name": d.name if d else None,
                            "docker_device_id": d.docker_device_id if d else None,
                            "cpuset": d.cpuset if d else None,
                            "cores": int(d.attributes.get("cores", 0)) if d and d.kind == "cpu-slice" else None})
        return {"id": a.id, "user": a.user, "server": a.server, "profile": a.profile,
                "devices": devices, "created_at": a.created_at}

    def devices_json(self, allocations: list[Allocation], viewer: str | None) -> dict[str, Any]:
        states: dict[str, DeviceState] = self.sampler.states()
        holders: dict[str, list[Allocation]] = {}
        for a in allocations:
            for uuid in a.device_uuids:
                holders.setdefault(uuid, []).append(a)
        parents = {d.parent_uuid for d in self.devices if d.parent_uuid}
        rows = []
        free = 0
        for d in sorted(self.devices, key=lambda d: (d.index, d.uuid)):
            held = holders.get(d.uuid, [])
            seats = self.policy.seats(d.kind)
            allocatable = d.uuid not in parents
            unavailable = d.uuid in self.unavailable
            is_free = allocatable and len(held) < seats and not unavailable
            free += is_free
            state = states.get(d.uuid)
            last = state.last if state else None
            rows.append({
                "uuid": d.uuid, "index": d.index, "kind": d.kind, "name": d.name,
                "memory_total_bytes": d.memory_total_bytes, "parent_uuid": d.parent_uuid,
                "allocatable": allocatable, "seats": seats, "holders": len(held), "free": is_free,
                "unavailable": unavailable,
                "mine": viewer is not None and any(a.user == viewer for a in held),
                "utilization_ratio": last.utilization_ratio if last else None,
                "memory_used_bytes": last.memory_used_bytes if last else None,
                "temperature_celsius": last.temperature_celsius if last else None,
                "power_watts": last.power_watts if last else None,
                "sampled_at": last.timestamp if last else None,
                "sample_errors": list(last.errors) if last else [],
                "busy_seconds": state.busy_seconds if state else 0.0,
                "sampled_seconds": state.sampled_seconds if state else 0.0,
            })
        allocatable_total = sum(1 for r in rows if r["allocatable"])
        return {"host": self.host.to_json(), "total": allocatable_total, "free": free, "devices": rows}

    def close(self) -> None:
        self.executor.shutdown(wait=False, cancel_futures=True)
        self._health_executor.shutdown(wait=False, cancel_futures=True)


class MonitorHubOAuth(HubOAuth):
    """HubOAuth that forgets a failed token check after NEGATIVE_CACHE_SECONDS.

    HubOAuth caches the hub's answer for a token, a refusal included, for `cache_max_age`. When
    the hub cannot look a token up (its database restarting), it refuses it like an unknown one;
    cached, that refusal would lock a valid token out for minutes after the hub is back. Known
    tokens stay cached for `cache_max_age` (people keep working through a short hub outage);
    refusals are remembered only briefly (so bogus tokens cannot make the monitor ask the hub
    on every request). Relies on `_check_hub_authorization` of jupyterhub 6.1 (pinned).
    """

    NEGATIVE_CACHE_SECONDS = 5.0

    async def _check_hub_authorization(self, url, api_token, cache_key=None, use_cache=True):  # type: ignore[no-untyped-def]
        refused = getattr(self, "_refused", None)
        if refused is None:
            refused = self._refused = {}
        if use_cache and cache_key is not None and time.monotonic() - refused.get(cache_key, -1e9) < self.NEGATIVE_CACHE_SECONDS:
            return None
        data = await super()._check_hub_authorization(url, api_token, cache_key, use_cache)
        if data is None and use_cache and cache_key is not None:
            self.cache.pop(cache_key, None)
            if len(refused) > 10_000:
                refused.clear()
            refused[cache_key] = time.monotonic()
        return data


class PathOnlyLog(web.RequestHandler):
    """Logs a request by method and path, never its query string: OAuth codes reach
    `oauth_callback?code=...`, and a browser may send `?token=`. Tornado's access log and its
    log of a refusal (an HTTPError with a log message) both use `_request_summary()`, which is the
    full URI; an uncaught exception adds the request's repr, which holds it too."""

    def _request_summary(self) -> str:
        return f"{self.request.method} {self.request.path} ({self.request.remote_ip})"

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        if isinstance(value, web.HTTPError):
            super().log_exception(typ, value, tb)
        else:
            logging.getLogger("tornado.application").error(
                "Uncaught exception %s", self._request_summary(), exc_info=(typ, value, tb))


class OAuthCallbackHandler(PathOnlyLog, HubOAuthCallbackHandler):
    pass


class StaticHandler(PathOnlyLog, web.StaticFileHandler):
    pass


class JSONErrorHandler(PathOnlyLog):
    """Every error as JSON with a sentence: a wrong method, an unknown path, a bad request."""

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        messages = {401: "authentication required: log in through the hub or send an API token",
                    403: "not allowed: this needs a scope your token does not have",
                    404: "not found"}
        message = messages.get(status_code, self._reason)
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, DBAPIError):
            # PostgreSQL away (restart, outage) or held up (a lock or statement timeout): a
            # retryable answer with a sentence, no traceback
            status_code = 503
            self.set_status(503)
            message = ("database busy: the allocation could not get its lock in time; try again shortly"
                       if is_busy(exc) else "the database is not answering; try again shortly")
        if isinstance(exc, web.HTTPError) and exc.reason and exc.reason not in ("Unauthorized", "Forbidden"):
            message = exc.reason
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps({"status": status_code, "message": message}))


class NotFoundHandler(JSONErrorHandler):
    def prepare(self) -> None:
        raise web.HTTPError(404)


class MonitorHandler(HubOAuthenticated, JSONErrorHandler):
    """JSON errors, hub authentication without blocking the event loop, scope checks."""

    @property
    def monitor(self) -> Monitor:
        return self.settings["monitor"]

    async def prepare(self) -> None:
        # HubAuth.get_user(sync=True) would block the loop on the hub's API; ask asynchronously
        # and let tornado's `current_user` read the result.
        try:
            model = await self.hub_auth.get_user(self, sync=False)
        except web.HTTPError as e:
            if e.status_code < 500:
                raise
            # HubAuth could not reach the hub to check the token: say so, as a retryable 503
            raise web.HTTPError(503, reason="the hub does not answer, so the request's token "
                                            "cannot be checked; try again shortly") from None
        if model:
            try:
                model = self.check_hub_user(model)
            except Exception:  # UserNotAllowed: authenticated, but not allowed to use the service
                model = None
                self._not_allowed = True
        self._hub_auth_user_cache = model

    def get_current_user(self) -> dict[str, Any] | None:
        return getattr(self, "_hub_auth_user_cache", None)

    def require_user(self) -> dict[str, Any]:
        user = self.current_user
        if not user:
            if getattr(self, "_not_allowed", False):
                raise web.HTTPError(403, reason="Forbidden")
            raise web.HTTPError(401, reason="Unauthorized")
        return user

    def has_scope(self, scope: str) -> bool:
        user = self.current_user or {}
        return scope in set(user.get("scopes", ()))

    def require_scope(self, scope: str) -> dict[str, Any]:
        user = self.require_user()
        if not self.has_scope(scope):
            raise web.HTTPError(403, log_message=f"{user.get('kind')} {user.get('name')} lacks {scope}")
        return user

    def require_token_header(self) -> None:
        if not self.request.headers.get("Authorization"):
            raise web.HTTPError(403, log_message="state change without an API token header")

    def viewer(self) -> str | None:
        user = self.current_user or {}
        return user.get("name") if user.get("kind", "user") == "user" else None

    def write_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(data))

class HealthHandler(JSONErrorHandler):
    """200 {"status": "ok"} when the service and its database answer; 503 with a sentence when
    PostgreSQL does not answer or a session has held the allocation lock too long."""

    async def get(self) -> None:
        ok, message = await self.settings["monitor"].database_health()
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": "ok"} if ok else {"status": 503, "message": message}))


class DevicesHandler(MonitorHandler):
    async def get(self) -> None:
        self.require_user()
        allocations = await self.monitor.run(self.monitor.store.list)
        self.write_json(self.monitor.devices_json(allocations, self.viewer()))


@web.stream_request_body
class AllocationsHandler(MonitorHandler):
    """Reads its body itself (`stream_request_body`): tornado would otherwise buffer the whole
    body, up to the server's limit, before `prepare` could look at who is asking."""

    async def prepare(self) -> None:
        self._body = bytearray()
        self._too_long = False
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.strip().isdigit() or int(length) > MAX_BODY_BYTES):
            raise web.HTTPError(413, reason=f"the body is {length.strip()[:20]} bytes; at most "
                                            f"{MAX_BODY_BYTES} are accepted")
        await super().prepare()

    def data_received(self, chunk: bytes) -> None:
        # a chunked body (no Content-Length): keep at most MAX_BODY_BYTES + 1 of it
        if len(self._body) <= MAX_BODY_BYTES:
            self._body += chunk[:MAX_BODY_BYTES + 1 - len(self._body)]

    async def get(self) -> None:
        self.require_user()
        if self.has_scope(SCOPE_READ_ALL):
            user = self.get_argument("user", None)
        else:
            user = self.viewer() or ""  # a service without read-all holds nothing itself
        m = self.monitor
        allocations = await m.run(m.store.list, user)
        usage = await m.run(m.store.usage_totals, [a.id for a in allocations])
        rows = []
        for a in allocations:
            row = m.allocation_json(a)
            busy, sampled = usage.get(a.id, (0.0, 0.0))
            row["busy_seconds"], row["sampled_seconds"] = busy, sampled
            row["idle_notice"] = m.notice(a.id)
            rows.append(row)
        self.write_json({"allocations": rows})

    async def post(self) -> None:
        self.require_scope(SCOPE_ALLOCATE)
        self.require_token_header()
        try:
            request = parse_allocation_request(bytes(self._body))
        except BadRequest as e:
            raise web.HTTPError(e.status, reason=str(e)) from None
        m = self.monitor
        started = time.perf_counter()
        decision = await m.allocations.submit(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        if isinstance(decision, Refused):
            log.info("refused %s/%s %d device(s): %s (%.1f ms)", request.user, request.server,
                     request.count, decision.code, elapsed_ms)
            body: dict[str, Any] = {"status": decision.http_status, "code": decision.code,
                                    "message": decision.reason}
            if decision.code == "none_free" and (free_at := m.soonest_reclaim()) is not None:
                # an idle server is due to be stopped: say when its device is likely to be free
                body["free_at"] = free_at
                body["message"] += (f"; the soonest device is likely to be free at "
                                    f"{time.strftime('%H:%M UTC', time.gmtime(free_at))} (an idle server is due to stop)")
            if decision.code == "conflict":
                held = [a for a in await m.run(m.store.list, request.user) if a.server == request.server]
                if held:
                    body["allocation_id"] = held[0].id
            self.write_json(body, decision.http_status)
            return
        assert isinstance(decision, Granted)
        a = decision.allocation
        if not decision.existing:
            log.info("granted %s to %s/%s (profile %s, %.1f ms)", ",".join(a.device_uuids), a.user,
                     a.server, a.profile, elapsed_ms)
        self.write_json(m.allocation_json(a), 200 if decision.existing else 201)


class AllocationHandler(MonitorHandler):
    async def get(self, allocation_id: str) -> None:
        self.require_user()
        a = await self.monitor.run(self.monitor.store.get, allocation_id)
        if a is None or not (self.has_scope(SCOPE_READ_ALL) or a.user == self.viewer()):
            # the same answer for "not there" and "not yours": ids of others are not confirmed
            raise web.HTTPError(404, reason=f"no allocation {allocation_id} that you can see")
        self.write_json(self.monitor.allocation_json(a))

    async def delete(self, allocation_id: str) -> None:
        self.require_scope(SCOPE_ALLOCATE)
        self.require_token_header()
        a = await self.monitor.run(self.monitor.store.release, allocation_id)
        if a is None:
            raise web.HTTPError(404, reason=f"no allocation {allocation_id} (already released?)")
        log.info("released %s of %s/%s", allocation_id, a.user, a.server)
        self.write_json(self.monitor.allocation_json(a))


WINDOWS = {"hour": 3600, "day": 86400}


class HistoryHandler(MonitorHandler):
    """Per-device utilisation and memory, one point a minute, for the last hour or day. Names
    no one: every user may read it."""

    async def get(self) -> None:
        self.require_user()
        window = self.get_argument("window", "hour")
        if window not in WINDOWS:
            raise web.HTTPError(400, reason=f"window must be one of {', '.join(WINDOWS)}, not {window[:40]!r}")
        points = await self.monitor.run(self.monitor.store.device_history, time.time() - WINDOWS[window])
        devices: dict[str, list[list[float | None]]] = {}
        for uuid, minute, util, memory in points:
            devices.setdefault(uuid, []).append([minute, util, memory])
        self.write_json({"window": window, "devices": devices})


def _instant(text: str, name: str) -> float:
    """An ISO 8601 date or time (UTC unless it says otherwise), or seconds since the epoch."""
    try:
        seconds = float(text)
    except ValueError:
        pass
    else:
        if not math.isfinite(seconds):  # "nan", "inf": floats, not instants
            raise web.HTTPError(400, reason=f"{name} must be a finite number of epoch seconds, not {text[:40]!r}")
        return seconds
    try:
        value = datetime.datetime.fromisoformat(text)
    except ValueError:
        raise web.HTTPError(400, reason=f"{name} must be an ISO 8601 date/time or epoch seconds, not {text[:40]!r}") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=datetime.timezone.utc)
    return value.timestamp()


class AccountingHandler(MonitorHandler):
    """GPU-hours, busy and idle hours per user or group over a period (default: the last 7
    days), as JSON or CSV. Admins (read-all) only: it names everyone."""

    async def get(self) -> None:
        self.require_scope(SCOPE_READ_ALL)
        now = time.time()
        end = _instant(self.get_argument("end"), "end") if self.get_argument("end", None) else now
        start = (_instant(self.get_argument("start"), "start") if self.get_argument("start", None)
                 else end - 7 * 86400)
        by = self.get_argument("by", "user")
        fmt = self.get_argument("format", "json")
        if by not in ("user", "group") or fmt not in ("json", "csv"):
            raise web.HTTPError(400, reason="by must be user or group, format json or csv")
        if end <= start:
            raise web.HTTPError(400, reason="the period must end after it starts")
        rows = await self.monitor.run(self.monitor.store.history, start, end)
        table = account(rows, start, end, now, by)
        if fmt == "csv":
            self.set_header("Content-Type", "text/csv; charset=utf-8")
            self.set_header("Content-Disposition", f'attachment; filename="gpu-accounting-by-{by}.csv"')
            self.finish(to_csv(table))
            return
        self.write_json({"start": start, "end": end, "by": by, "rows": table})


class MetricsHandler(MonitorHandler):
    async def get(self) -> None:
        self.require_scope(SCOPE_READ_ALL)
        m = self.monitor
        allocations = await m.run(m.store.list)
        collector = MonitorCollector(lambda: m.devices, m.sampler.states, lambda: allocations)
        body = await m.run(render, collector)
        self.set_header("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
        self.finish(body)


class DashboardHandler(MonitorHandler):
    """The dashboard: every device's state, utilisation, memory, temperature and power, which
    are yours, history charts for the last hour or day; admins also see who holds what, since
    when and how busy, and the accounting. Rendered on the server once (readable without
    JavaScript), then kept live by static/dashboard.js."""

    async def get(self) -> None:
        if not self.current_user:
            if getattr(self, "_not_allowed", False):
                raise web.HTTPError(403)
            self.redirect(self.get_login_url())
            return
        m = self.monitor
        allocations = await m.run(m.store.list)
        data = m.devices_json(allocations, self.viewer())
        admin = self.has_scope(SCOPE_READ_ALL)
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.set_header("Content-Security-Policy",
                        "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'")
        # The page's script reads the API with the login cookie; JupyterHub accepts a cookie on
        # such (fetch) requests only with this XSRF token in a header.
        xsrf = self.xsrf_token
        self.finish(render_dashboard(data, allocations, admin, self.settings["prefix"],
                                     (self.current_user or {}).get("name", ""),
                                     xsrf.decode() if isinstance(xsrf, bytes) else str(xsrf)))


def make_app(monitor: Monitor, hub_auth: HubOAuth, prefix: str, cookie_secret: bytes) -> web.Application:
    """`hub_auth` must be the `HubOAuth.instance()` singleton: jupyterhub's own callback handler
    finds it that way."""
    p = prefix.rstrip("/")
    return web.Application(
        [
            (rf"{p}/api/health", HealthHandler),
            (rf"{p}/api/devices", DevicesHandler),
            (rf"{p}/api/allocations", AllocationsHandler),
            (rf"{p}/api/allocations/({ALLOCATION_ID})", AllocationHandler),
            (rf"{p}/api/history", HistoryHandler),
            (rf"{p}/api/accounting", AccountingHandler),
            (rf"{p}/metrics", MetricsHandler),
            (rf"{p}/oauth_callback", OAuthCallbackHandler),
            (rf"{p}/static/(.*)", StaticHandler, {"path": str(STATIC)}),
            (rf"{p}/?", DashboardHandler),
        ],
        monitor=monitor,
        prefix=prefix,
        cookie_secret=cookie_secret,
        login_url=hub_auth.login_url,
        default_handler_class=NotFoundHandler,
        xsrf_cookies=False,  # state changes require a token header instead (see MonitorHandler)
    )

