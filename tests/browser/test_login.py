"""What a person does in a browser: log in through the OpenID Connect provider, start a server
with a device from the spawn form, run code on it in JupyterLab, see it as theirs on the GPU
monitor's page, stop the server, log out; and a person the hub does
not allow is refused. Needs Docker and Chromium (marker `browser`)."""

import re
import subprocess

import pytest

# the browser tier's own dependency (tests/requirements.txt): `pytest` alone skips this module
pytest.importorskip("playwright", reason="tests/requirements.txt is not installed")
from playwright.sync_api import Page, Request, expect  # noqa: E402
from playwright.sync_api import TimeoutError as PlaywrightTimeout  # noqa: E402

from ..harness.stack import PROJECT  # noqa: E402
from .helpers import HUB, SERVER_START_MS, log_in_at_provider  # noqa: E402

pytestmark = pytest.mark.browser


def click_until_requested(page: Page, button, wanted, *, tries: int = 6, per_try_ms: int = 5_000):
    """Click `button` as a person does, and again when nothing happens, until the page sends a
    request `wanted(request)` accepts; return that request's response.

    JupyterHub's buttons (Stop My Server: an <a> without href) do nothing until the page's script
    (require.js, then home.js and its modules) has bound their handlers. A click before that is
    lost without a trace, and a test that then waits for the result waits in vain. So: wait
    until the page has stopped loading, then click until the request goes out."""
    try:
        page.wait_for_load_state("networkidle", timeout=30_000)
    except PlaywrightTimeout:
        pass  # a page that keeps polling: the clicks below still tell
    for _ in range(tries):
        expect(button).to_be_enabled()
        try:
            with page.expect_request(wanted, timeout=per_try_ms) as request:
                button.click()
        except PlaywrightTimeout:
            continue  # the handler was not bound yet
        response = request.value.response()  # the request went out: wait for its answer
        assert response is not None, f"{request.value.method} {request.value.url} failed: {request.value.failure}"
        return response
    raise AssertionError(f"clicking {button} {tries} times sent no request the test waited for")


def test_allowed_user_picks_opencl_runs_code_on_pocl_stops_and_logs_out(page: Page, stack, hub_user):
    user = hub_user("bob")
    page.goto(f"{HUB}/")
    log_in_at_provider(page, user)

    # back on the hub, logged in: the spawn form with the profiles, the default one chosen, and
    # what the GPU monitor has free (this host has no GPU: two CPU slices); the person picks
    # OpenCL with one device
    expect(page).to_have_url(f"{HUB}/hub/spawn")
    expect(page.get_by_role("heading", name="Server Options")).to_be_visible()
    expect(page.get_by_role("radio", name="Minimal (CPU only)")).to_be_checked()
    expect(page.get_by_text("PoCL on the CPU")).to_be_visible()
    expect(page.locator(".gpuhub-free")).to_have_text(re.compile(r"^2 of 2 CPU slices .* free right now\.$"))
    page.get_by_role("radio", name="OpenCL (PyOpenCL)").check()
    page.locator('select[name="gpus-opencl"]').select_option("1")
    expect(page.locator("nav")).to_contain_text(user)
    page.get_by_role("button", name="Start").click()

    # the progress page (shown when the start takes longer than the hub's slow_spawn_timeout,
    # 10 s), then JupyterLab
    expect(page).to_have_url(re.compile(rf"^{HUB}/user/{user}/lab"), timeout=SERVER_START_MS)

    # a new notebook from the Launcher; code runs in the user's container as jovyan
    page.locator('.jp-LauncherCard[data-category="Notebook"]').first.click(timeout=60_000)
    notebook = page.locator(".jp-NotebookPanel:visible")
    expect(page).to_have_url(re.compile(rf"/user/{user}/lab/tree/Untitled\d*\.ipynb"))
    # as a person would, wait for the kernel: a cell run before the notebook has one is dropped
    expect(page.locator(".jp-StatusBar-Widget").filter(has_text="Python 3 (ipykernel) | Idle")).to_be_visible(
        timeout=60_000)
    editor = notebook.locator(".jp-Cell .cm-content").first
    editor.click()
    # an OpenCL computation on the PoCL device, which names itself and its compute units: one
    # CPU slice, pinned to the container
    page.keyboard.type(
        "import os, getpass, numpy as np, pyopencl as cl, pyopencl.array as cla; "
        "ctx = cl.create_some_context(interactive=False); q = cl.CommandQueue(ctx); "
        "d = ctx.devices[0]; "
        "print(d.platform.name, '/', d.name, '/', int((2 * cla.to_device(q, np.arange(10, dtype=np.int32))).get().sum()), "
        "'/', getpass.getuser(), '/', d.max_compute_units, len(os.sched_getaffinity(0)), '/', os.environ['GPUHUB_DEVICES'])")
    page.keyboard.press("Shift+Enter")
    output = notebook.locator(".jp-OutputArea-output").first
    expect(output).to_have_text(re.compile(r"^Portable Computing Language / pthread-\S.* / 90 / jovyan / 1 1 / CPU-\S+\s*$"),
                                timeout=60_000)
    device = output.inner_text().split("/")[-1].strip()

    # the GPU monitor's page (a hub service; login through the hub) shows that device as theirs
    page.goto(f"{HUB}/services/gpu-monitor/")
    expect(page.get_by_role("heading", name="GPU monitor")).to_be_visible()
    expect(page.locator(f'tr[data-uuid="{device}"]')).to_have_attribute("data-state", "yours")
    expect(page.locator('tr[data-state="yours"]')).to_have_count(1)
    expect(page.get_by_text("Held by")).to_have_count(0)  # not an admin: no one's names

    # the hub's home page: stop the server, clicking as soon as the page shows the button (not
    # when it has loaded: its script binds the button's handler later; the helper waits for it)
    page.goto(f"{HUB}/hub/home", wait_until="domcontentloaded")

    def stop_request(request: Request) -> bool:
        return request.method == "DELETE" and request.url.split("?")[0] == f"{HUB}/hub/api/users/{user}/server"

    stopped = click_until_requested(page, page.get_by_role("button", name="Stop My Server"), stop_request)
    assert stopped.status in (202, 204), (stopped.status, stopped.text())
    expect(page.get_by_role("button", name="Start My Server")).to_be_visible(timeout=SERVER_START_MS)
    expect(page.get_by_role("button", name="Stop My Server")).to_be_hidden()
    expect(page.locator("#error-dialog")).to_be_hidden()

    # log out: the login page again, and the hub no longer knows this browser
    page.get_by_role("button", name="Logout").click()
    expect(page).to_have_url(re.compile(rf"^{HUB}/hub/login"))
    expect(page.get_by_role("button", name="Sign in with OpenID Connect")).to_be_visible()
    page.goto(f"{HUB}/hub/home")
    expect(page).to_have_url(re.compile(rf"^{HUB}/hub/login"))

    model = stack.api("GET", f"users/{user}").json()
    assert model["servers"] == {} and model["server"] is None, model
    assert f"{PROJECT}-{user}" not in stack.user_containers()
    # stopping gave the device back
    r = stack.session().get(f"{HUB}/services/gpu-monitor/api/allocations?user={user}", timeout=30)
    assert r.status_code == 200 and r.json() == {"allocations": []}, r.text


def test_user_not_allowed_is_refused_and_gets_nothing(page: Page, stack):
    user = "mallory"  # the provider knows her; GPUHUB_ALLOWED_USERS does not

    page.goto(f"{HUB}/")
    with page.expect_response(lambda r: r.url.startswith(f"{HUB}/hub/oauth_callback?")) as callback:
        log_in_at_provider(page, user, predefined=True)
    assert callback.value.status == 403

    expect(page).to_have_url(re.compile(rf"^{HUB}/hub/oauth_callback\?"))
    expect(page.get_by_role("heading", level=1)).to_have_text(
        "403 : Sorry, you are not currently authorized to use this hub. Please contact the hub administrator.")
    expect(page.get_by_role("button", name="Logout")).to_have_count(0)

    # not logged in: the hub sends her to the login page
    page.goto(f"{HUB}/hub/home")
    expect(page).to_have_url(re.compile(rf"^{HUB}/hub/login"))

    # and the hub never created her: no user, no server, no container
    r = stack.api("GET", f"users/{user}")
    assert r.status_code == 404, r.text
    assert user not in [u["name"] for u in stack.api("GET", "users").json()]
    names = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                           capture_output=True, text=True, check=True).stdout.split()
    assert f"{PROJECT}-{user}" not in names


def test_when_no_device_is_free_the_spawn_page_says_so(page: Page, stack, hub_user):
    """Both devices held by others: the form says none is free, and asking anyway ends on a
    readable refusal, not a spinner; nothing is started."""
    s = stack.session()
    monitor = f"{HUB}/services/gpu-monitor/api/allocations"
    holders = []
    try:
        for i in range(2):
            r = s.post(monitor, json={"user": f"holder-{i}", "count": 1, "profile": "opencl"}, timeout=30)
            assert r.status_code == 201, r.text
            holders.append(r.json()["id"])
        user = hub_user("bob")
        page.goto(f"{HUB}/")
        log_in_at_provider(page, user)
        expect(page).to_have_url(f"{HUB}/hub/spawn")
        expect(page.locator(".gpuhub-free")).to_have_text(re.compile(r"^0 of 2 CPU slices .* free right now\.$"))
        page.get_by_role("radio", name="OpenCL (PyOpenCL)").check()
        page.locator('select[name="gpus-opencl"]').select_option("1")
        page.get_by_role("button", name="Start").click()
        expect(page.get_by_text(re.compile(
            r"No GPU for this server: 1 GPU\(s\) requested, 0 free \(2 of 2 in use\)"))).to_be_visible(timeout=60_000)
        assert stack.api("GET", f"users/{user}").json()["servers"] == {}
        assert f"{PROJECT}-{user}" not in stack.user_containers()
    finally:
        for allocation in holders:
            s.delete(f"{monitor}/{allocation}", timeout=30)
