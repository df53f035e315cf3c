"""What the browser tier's modules share: the hub's and the test provider's addresses, how long
a spawn may take, and logging in on the provider's page. Imported by the test modules after their
`importorskip("playwright")`."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

HUB = "https://localhost"
PROVIDER = "http://localhost:9401"
SERVER_START_MS = 120_000  # the spawn: container creation and JupyterLab answering


def log_in_at_provider(page: Page, user: str, *, predefined: bool = False) -> None:
    """From anywhere on the hub while logged out: the hub's login page, then the provider's."""
    expect(page).to_have_url(re.compile(rf"^{HUB}/hub/login"))
    page.get_by_role("button", name="Sign in with OpenID Connect").click()
    expect(page).to_have_url(re.compile(rf"^{PROVIDER}/oauth2/authorize\?"))
    expect(page.get_by_role("heading", name="Authorize Client")).to_be_visible()
    if predefined:
        page.get_by_role("button", name=user, exact=True).click()
    else:
        page.locator('input[name="sub"]').fill(user)
        page.get_by_role("button", name="Authorize", exact=True).click()
