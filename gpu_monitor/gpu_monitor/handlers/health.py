"""`GET api/health`: the service and its database, for the compose healthcheck. No
authentication: it names no one."""

from __future__ import annotations

import json

from .base import JSONErrorHandler


class HealthHandler(JSONErrorHandler):
    """200 {"status": "ok"} when the service and its database answer; 503 with a sentence when
    PostgreSQL does not answer or a session has held the allocation lock too long."""

    async def get(self) -> None:
        ok, message = await self.settings["monitor"].database_health()
        self.set_status(200 if ok else 503)
        self.set_header("Content-Type", "application/json")
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps({"status": "ok"} if ok else {"status": 503, "message": message}))
