"""`api/allocations` and `api/allocations/{id}`: list, grant, read and release allocations.
Grants go through the monitor's batcher (group commit); the body is parsed by requests.py."""

from __future__ import annotations

import logging
import time
from typing import Any

from tornado import web

from ..allocator import Granted, Refused
from ..contract import SCOPE_ALLOCATE, SCOPE_READ_ALL
from ..requests import MAX_BODY_BYTES, BadRequest, parse_allocation_request
from .base import MonitorHandler

# the name of the module this came from (app.py): the service's log lines stay as they were
log = logging.getLogger("gpu_monitor.app")


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
            if decision.free_at is not None:  # an idle server is due to be stopped
                body["free_at"] = decision.free_at
            if decision.allocation_id is not None:  # a conflict: what the server holds
                body["allocation_id"] = decision.allocation_id
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
