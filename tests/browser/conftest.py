"""Browser tier: Playwright (Python, sync API) driving Debian's Chromium through the real stack.

Fixtures:
- `page`: a fresh Chromium (its own user-data dir under tmp_path, so no cookies or cache carry
  over between tests) with one page open. On failure, a full-page screenshot and the page's
  HTML are kept in test-artifacts/<test name>/, beside the compose logs tests/conftest.py saves.
- `hub_user`: factory; `hub_user("bob")` makes sure bob has no running server before the test
  and stops it afterwards, so a failed test leaves no server for the next one (the docker tier
  checks bob has none); on failure it first saves the logs, the user containers' included.

TLS: the browser ignores certificate errors; the docker tier verifies the proxy's certificate
against the stack's local CA.

HTTP/1.1 only (--disable-http2): Chromium runs on the Docker host itself, and when a user
container starts or stops, its veth interface comes and goes. Chromium takes that for a network
change and closes every HTTP/2 session with net::ERR_NETWORK_CHANGED, aborting requests in
flight: "Stop My Server" then shows "API request failed (0): error" although the hub stopped
the server (Traefik logs the DELETE as 499). In-flight HTTP/1.1 requests survive such a change.
A browser on another machine never sees this.
"""

from __future__ import annotations

import pytest

from ..harness.stack import ARTIFACTS, wait_for

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-quic",
    "--disable-sync",
    "--disable-http2",  # see the module docstring
]
TIMEOUT_MS = 30_000  # default for actions and expect(); slow steps pass their own


@pytest.fixture(scope="session")
def playwright():
    # imported here, not at the top: this conftest is loaded whenever pytest collects tests/,
    # and `pytest` alone (the fast tier) must not need Playwright (tests/requirements.txt)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


@pytest.fixture
def page(playwright, stack, request, tmp_path):
    from playwright.sync_api import expect

    expect.set_options(timeout=TIMEOUT_MS)
    context = playwright.chromium.launch_persistent_context(
        str(tmp_path / "chromium-profile"),
        executable_path=CHROMIUM,
        args=CHROMIUM_ARGS,
        headless=True,
        ignore_https_errors=True,
        viewport={"width": 1280, "height": 900},
    )
    context.set_default_timeout(TIMEOUT_MS)
    page = context.pages[0] if context.pages else context.new_page()
    try:
        yield page
    finally:
        report = getattr(request.node, "rep_call", None)
        if report is not None and report.failed:
            target = ARTIFACTS / request.node.name
            target.mkdir(parents=True, exist_ok=True)
            for n, p in enumerate(context.pages):
                try:
                    p.screenshot(path=str(target / f"page{n}.png"), full_page=True, timeout=15_000)
                    (target / f"page{n}.html").write_text(f"<!-- {p.url} -->\n{p.content()}")
                except Exception as e:  # noqa: BLE001 - keep what can be kept
                    (target / f"page{n}.error.txt").write_text(f"{p.url}\n{e!r}\n")
        context.close()


@pytest.fixture
def hub_user(stack, request):
    users = []

    def no_server(name: str) -> str:
        users.append(name)
        _stop_if_running(stack, name)
        return name

    yield no_server
    report = getattr(request.node, "rep_call", None)
    if users and report is not None and report.failed:
        stack.dump_logs(request.node.name)  # while the user containers, and their logs, still exist
    for name in users:
        _stop_if_running(stack, name)


def _stop_if_running(stack, name: str) -> None:
    def settled():  # a server still starting cannot be stopped yet (the hub answers 400)
        r = stack.api("GET", f"users/{name}")
        return r if r.status_code != 200 or r.json()["servers"].get("", {}).get("pending") != "spawn" else None

    r = wait_for(settled, 180, what=f"{name}'s server start to finish")
    if r.status_code == 200 and r.json()["servers"]:
        stack.stop_server(name)
