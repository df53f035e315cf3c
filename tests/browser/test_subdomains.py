"""Per-user subdomains in Chromium (which resolves every *.localhost name to the loopback
address itself): a person logs in on the hub's host, starts a server and lands in JupyterLab on
their own host; a script on that page cannot read the hub's API, and the browser keeps the hub's
login cookie for the hub's host only; the monitor's dashboard still works. Needs Docker and
Chromium (marker `browser`); the stack is switched to GPUHUB_USER_SUBDOMAINS=true for this
module (the `subdomains` fixture, tests/conftest.py)."""

import re

import pytest

pytest.importorskip("playwright", reason="tests/requirements.txt is not installed")
from playwright.sync_api import Page, expect  # noqa: E402

from .helpers import HUB, SERVER_START_MS, log_in_at_provider  # noqa: E402

pytestmark = pytest.mark.browser


def test_jupyterlab_on_the_users_own_host_cannot_read_the_hub(page: Page, subdomains, hub_user):
    user = hub_user("bob")
    own_host = f"https://{user}.user.localhost"
    page.goto(f"{HUB}/")
    log_in_at_provider(page, user)
    expect(page).to_have_url(f"{HUB}/hub/spawn")
    page.get_by_role("button", name="Start").click()  # the default profile, Minimal
    expect(page).to_have_url(re.compile(rf"^{re.escape(own_host)}/user/{user}/lab"), timeout=SERVER_START_MS)
    # JupyterLab is up (its menu bar; not the launcher, which a workspace saved by an earlier
    # session of the same person, such as test_login's, replaces with its open notebook)
    expect(page.get_by_role("menuitem", name="File")).to_be_visible(timeout=60_000)

    # what the browser would send to the user's host: its server's cookie, none of the hub's
    cookies = {c["name"]: c for c in page.context.cookies(f"{own_host}/user/{user}/")}
    assert f"__Host-jupyterhub-user-{user}" in cookies, cookies
    assert not [name for name in cookies if "hub-login" in name], cookies
    hub_login = [c for c in page.context.cookies(f"{HUB}/hub/") if c["name"] == "__Host-jupyterhub-hub-login"]
    assert len(hub_login) == 1 and hub_login[0]["domain"] == "localhost", hub_login  # host-only

    # a script on the user's page reaching for the hub with the person's credentials: refused by
    # the browser (another origin, no CORS), where on one origin it would read the answer
    outcome = page.evaluate("""() => fetch('https://localhost/hub/api/user', {credentials: 'include'})
        .then(r => r.text().then(t => 'read ' + r.status + ' ' + t), e => 'refused: ' + e)""")
    assert outcome.startswith("refused"), outcome

    # the hub and the GPU monitor's dashboard on the hub's host, as before
    page.goto(f"{HUB}/services/gpu-monitor/")
    expect(page).to_have_url(f"{HUB}/services/gpu-monitor/")
    expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible()
    expect(page.locator("#status")).to_have_text(re.compile(r"^Updated "))
    # the hub's link to the server (a path on the hub's host) leads to the user's host
    page.goto(f"{HUB}/hub/home")
    page.locator("#start").click()
    expect(page).to_have_url(re.compile(rf"^{re.escape(own_host)}/user/{user}/"))
