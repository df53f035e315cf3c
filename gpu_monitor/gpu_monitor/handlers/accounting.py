"""`GET api/accounting`: GPU-hours per user or group over a period (accounting.py does the
arithmetic)."""

from __future__ import annotations

import datetime
import math
import time

from tornado import web

from ..accounting import account, to_csv
from ..contract import SCOPE_READ_ALL
from .base import MonitorHandler


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
        value = value.replace(tzinfo=datetime.UTC)
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
