"""The GPU monitor's dashboard in Chromium, as a person and as an admin: live device states,
history charts, who holds what (admins only: a person never sees another's name), accounting
with its CSV. Screenshots of both views are kept in test-artifacts/ as the issue asks."""

from __future__ import annotations

import re

import pytest

# the browser tier's own dependency (tests/requirements.txt): `pytest` alone skips this module
pytest.importorskip("playwright", reason="tests/requirements.txt is not installed")
from playwright.sync_api import Page, expect  # noqa: E402

from ..harness.stack import ARTIFACTS
from .helpers import HUB, log_in_at_provider

pytestmark = pytest.mark.browser

DASHBOARD = f"{HUB}/services/gpu-monitor/"


@pytest.fixture
def someone_holds_a_device(stack):
    s = stack.session()
    r = s.post(f"{DASHBOARD}api/allocations", json={"user": "dash-other", "count": 1, "profile": "opencl",
                                                      "groups": ["physics"]}, timeout=30)
    assert r.status_code == 201, r.text
    yield r.json()
    s.delete(f"{DASHBOARD}api/allocations/{r.json()['id']}", timeout=30)


def open_dashboard(page: Page, user: str) -> None:
    page.goto(f"{HUB}/")
    log_in_at_provider(page, user)
    expect(page).to_have_url(f"{HUB}/hub/spawn")
    page.goto(DASHBOARD)  # the service logs the person in through the hub (OAuth, no prompt)
    expect(page).to_have_url(DASHBOARD)
    expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible()
    # the script has taken over: the status line says when it last updated
    expect(page.locator("#status")).to_have_text(re.compile(r"^Updated "))


def test_a_person_sees_every_device_and_no_one_elses_name(page: Page, stack, hub_user, someone_holds_a_device):
    user = hub_user("bob")
    open_dashboard(page, user)
    rows = page.locator("#devices-body tr")
    expect(rows).to_have_count(2)
    held = someone_holds_a_device["devices"][0]["uuid"]
    expect(page.locator(f'tr[data-uuid="{held}"]')).to_have_attribute("data-state", "in use")
    expect(page.locator('tr[data-state="free"]')).to_have_count(1)
    expect(page.locator("#summary")).to_contain_text("1 of 2 device(s) free · backend cpu-slices")
    # the one node of a single host, as the script renders it: up, labelled, one of two free
    node = page.locator('#nodes-body tr[data-node="local"]')
    expect(node).to_have_attribute("data-state", "up")
    expect(node).to_contain_text("cpu=pocl")
    expect(node).to_contain_text("1 of 2")
    # utilisation is live, as a bar with its percentage
    expect(rows.first.locator(".bar")).to_have_count(1)
    # history: one chart pair per device
    expect(page.locator("#charts figure")).to_have_count(2)
    # no admin sections, and the holder's name appears nowhere
    expect(page.locator("#allocations")).to_have_count(0)
    expect(page.locator("#accounting")).to_have_count(0)
    assert "dash-other" not in page.content()
    page.get_by_role("button", name="Last day").click()
    expect(page.get_by_role("button", name="Last day")).to_have_attribute("aria-pressed", "true")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-user.png"), full_page=True)


def test_an_admin_sees_who_holds_what_and_the_accounting(page: Page, stack, hub_user, someone_holds_a_device):
    user = hub_user("alice")  # GPUHUB_ADMIN_USERS in the test stack
    open_dashboard(page, user)
    held = someone_holds_a_device["devices"][0]["uuid"]
    expect(page.locator(f'tr[data-uuid="{held}"] td').last).to_have_text("dash-other")
    allocation = page.locator(f'tr[data-allocation="{someone_holds_a_device["id"]}"]')
    expect(allocation.locator("td").first).to_have_text("dash-other")
    expect(allocation.locator("td").nth(1)).to_have_text("opencl")
    # accounting for the last 7 days, by user, then by group
    expect(page.locator("#accounting-body tr").filter(has_text="dash-other")).to_have_count(1)
    page.locator('select[name="by"]').select_option("group")
    page.get_by_role("button", name="Show").click()
    expect(page.locator("#accounting-body tr").filter(has_text="physics")).to_have_count(1)
    expect(page.locator("#accounting-csv")).to_have_attribute("href", re.compile(r"format=csv"))
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard-admin.png"), full_page=True)
