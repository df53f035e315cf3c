"""What every handler shares: logs without query strings (`PathOnlyLog`), errors as JSON with
a sentence (`JSONErrorHandler`), and the hub's authentication and scope checks
(`MonitorHandler`). Handlers reach the service through `self.monitor` (the `Monitor` in the
application's settings), never through the background jobs."""

from __future__ import annotations

import json
import logging
from typing import Any

from jupyterhub.services.auth import HubOAuthCallbackHandler, HubOAuthenticated
from sqlalchemy.exc import DBAPIError
from tornado import web

from ..monitor import Monitor
from ..store import is_busy


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
