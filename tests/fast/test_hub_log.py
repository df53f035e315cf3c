"""No query string in the hub's or the monitor's log. The hub: JupyterHub's application logging,
configured as configure() sets it (gpuhub.logs), and a real tornado request refused with a logged
HTTPError, which tornado logs with its full URI (`400 GET /hub/oauth_callback?code=...`). The
monitor: its real tornado application (make_app) with jupyterhub's OAuth callback, its access log
and its refusals."""

from __future__ import annotations

import logging

import pytest
from jupyterhub.app import JupyterHub
from tornado import httpclient, httpserver, netutil, web
from traitlets.config import Config

from gpu_monitor.app import make_app
from gpu_monitor.hubauth import MonitorHubOAuth
from gpuhub.configure import configure
from gpuhub.logs import without_query_strings
from gpuhub.settings import load_settings

from ..aio import run_async

CODE, TOKEN = "SECRETCODE" + "b" * 8, "SECRETTOKEN" + "a" * 8


class OAuthCallback(web.RequestHandler):
    """Refuses as OAuthenticator's callback does when the state cookie is missing."""

    def get(self):
        raise web.HTTPError(400, "OAuth state missing from cookies")


class Crash(web.RequestHandler):
    def get(self):
        raise RuntimeError("boom")


async def _requests(paths: list[str], app: web.Application | None = None) -> None:
    sockets = netutil.bind_sockets(0, "127.0.0.1")
    port = sockets[0].getsockname()[1]
    app = app or web.Application([("/hub/oauth_callback", OAuthCallback), ("/crash", Crash)])
    server = httpserver.HTTPServer(app)
    server.add_sockets(sockets)
    client = httpclient.AsyncHTTPClient(force_instance=True)
    try:
        for path in paths:
            await client.fetch(f"http://127.0.0.1:{port}{path}", raise_error=False)
    finally:
        client.close()
        server.stop()


def test_tornados_logged_refusals_reach_the_hubs_log_without_their_query_string(environ, capsys):
    c = Config()
    configure(c, load_settings(environ))
    hub = JupyterHub(config=c)
    hub.init_logging()
    try:
        run_async(_requests([f"/hub/oauth_callback?code={CODE}&state=x", f"/crash?token={TOKEN}"]))
    finally:
        for handler in hub.log.handlers:
            handler.flush()
    log = capsys.readouterr().err
    # the lines are there (the filter drops nothing), and what identifies the request is kept
    assert "400 GET /hub/oauth_callback?[query removed]" in log, log
    assert "OAuth state missing from cookies" in log and "Uncaught exception GET /crash?[query removed]" in log, log
    assert CODE not in log and TOKEN not in log, log


def test_the_monitors_log_names_paths_without_their_query_string(caplog):
    prefix = "/services/gpu-monitor/"
    hub_auth = MonitorHubOAuth.instance(api_token="t" * 32, api_url="http://127.0.0.1:9/hub/api/",
                                        hub_prefix="/hub/", base_url=prefix,
                                        oauth_client_id="service-gpu-monitor",
                                        oauth_redirect_uri=f"{prefix}oauth_callback")
    try:
        app = make_app(None, hub_auth, prefix, cookie_secret=b"s" * 32)  # type: ignore[arg-type]
        with caplog.at_level(logging.INFO):
            run_async(_requests([f"{prefix}oauth_callback?code={CODE}&state=x",  # no state cookie: 403
                                 f"{prefix}oauth_callback?error=access_denied&code={CODE}",  # the hub's error: 400
                                 f"{prefix}static/nothing.js?token={TOKEN}",  # 404
                                 f"{prefix}no/such/route?token={TOKEN}"], app))
    finally:
        MonitorHubOAuth.clear_instance()
    log = caplog.text
    # each request is logged, by its path
    for status, path in ((403, "oauth_callback"), (400, "oauth_callback"), (404, "static/nothing.js"),
                         (404, "no/such/route")):
        assert f"{status} GET {prefix}{path} (127.0.0.1)" in log, log
    assert "oauth state does not match" in log, log
    assert CODE not in log and TOKEN not in log, log


@pytest.mark.parametrize("text, expected", [
    ("400 GET /hub/oauth_callback?code=abc&state=d (10.0.0.1) 2ms",
     "400 GET /hub/oauth_callback?[query removed] (10.0.0.1) 2ms"),
    ("uri='/user/a/api/kernels?token=abc', version='HTTP/1.1'",
     "uri='/user/a/api/kernels?[query removed]', version='HTTP/1.1'"),
    ("https://localhost/hub/login?next=%2Fhub%2F",
     "https://localhost/hub/login?[query removed]"),
    ("Is the server ready? It is=yes", "Is the server ready? It is=yes"),
    ("no query /hub/home?", "no query /hub/home?"),
    ("two: /a?x=1 and /b?y=2;z=3", "two: /a?[query removed] and /b?[query removed]"),
])
def test_without_query_strings(text, expected):
    assert without_query_strings(text) == expected
