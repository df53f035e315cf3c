"""gpuhub's test suite, in tiers.

- fast (default, no marker): pure code of the `gpuhub` package; no Docker, under a minute.
- docker (`-m docker`): builds the images and runs the real stack with Docker Compose.
- browser (`-m browser`): Playwright driving Debian's Chromium through the real stack.
- gpu (`tests/gpu/`, `-m gpu`): needs an NVIDIA GPU; skipped, and said so, elsewhere.
- swarm (`tests/swarm/`, `-m swarm`): a Docker Swarm of three engines on this machine, one of them
  a simulated GPU node, with a registry (tests/harness/swarm.py); needs root and dockerd, no GPU.

`pytest` alone runs the fast tier (see pyproject.toml, [tool.pytest.ini_options]). `bin/test` runs every tier.

Fixture catalogue (shared ones; each tier's conftest lists its own):
- `environ`: a minimal valid hub environment (dict) for settings tests, with secret files
  created under tmp_path.
- `stack` (session): the real stack, started once by Docker Compose as project gpuhub-test
  with a test OIDC provider (tests/harness/stack.py); torn down at the end. Its logs, and every user
  container's, are saved under test-artifacts/<test name>/ when a test using it fails.
- `subdomains` (module): the stack switched to per-user subdomains (GPUHUB_USER_SUBDOMAINS=true)
  for one module, and `*.localhost` resolving to 127.0.0.1 in this process; switched back after
  it (tests/docker/test_subdomains.py, tests/browser/test_subdomains.py).
"""

import socket
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def environ(tmp_path):
    """A valid environment for a generic-OIDC hub, with its files under tmp_path."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name in ("cookie_secret", "crypt_key", "proxy_api_password"):
        (secrets / name).write_text("ab" * 32)
    (secrets / "gpu_allocator_token").write_text("cd" * 32)
    monitor_secrets = tmp_path / "monitor-secrets"
    monitor_secrets.mkdir()
    (monitor_secrets / "api_token").write_text("ef" * 32)
    (tmp_path / "db_password").write_text("dbpass")
    (secrets / "pgpass").write_text("db:5432:jupyterhub:jupyterhub:dbpass\n")
    client_secret = tmp_path / "oauth_client_secret"
    client_secret.write_text("s3cret")
    return {
        "GPUHUB_AUTHENTICATOR": "generic",
        "OAUTH_CLIENT_ID": "gpuhub",
        "OAUTH_CLIENT_SECRET_FILE": str(client_secret),
        "OIDC_AUTHORIZE_URL": "https://id.example.org/authorize",
        "OIDC_TOKEN_URL": "https://id.example.org/token",
        "OIDC_USERINFO_URL": "https://id.example.org/userinfo",
        "GPUHUB_ALLOWED_USERS": "alice,bob",
        "GPUHUB_ADMIN_USERS": "alice",
        "GPUHUB_PROFILES_FILE": str(ROOT / "config" / "profiles.yaml"),
        "GPUHUB_POLICY_FILE": str(ROOT / "config" / "gpu-policy.yaml"),
        "GPUHUB_SECRETS_DIR": str(secrets),
        "GPUHUB_MONITOR_SECRETS_DIR": str(monitor_secrets),
        "GPUHUB_DB_PASSWORD_FILE": str(tmp_path / "db_password"),
        "GPUHUB_API_TOKEN_FILE": str(tmp_path / "no_api_token"),
    }


def last_at_the_end(items: list) -> list:
    """`items` with those marked `last` moved to the end; each part keeps its order."""
    last = [item for item in items if item.get_closest_marker("last") is not None]
    return [item for item in items if item.get_closest_marker("last") is None] + last


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    """Tests marked `last` (tests/docker/test_docker_daemon.py restarts the Docker daemon) run
    after every other test of the session, whatever their file names: `bin/test` runs every tier
    in one pytest, which collects them in folder order (browser, docker, fast). After the other
    plugins' reordering (trylast), so that nothing moves them back."""
    items[:] = last_at_the_end(items)


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item, call):
    report = yield
    setattr(item, f"rep_{report.when}", report)
    return report


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    from .harness.stack import start_stack

    started = start_stack(tmp_path_factory.mktemp("stack"))
    try:
        yield started
    finally:
        started.down()


@pytest.fixture(scope="module")
def subdomains(stack):
    """The stack with GPUHUB_USER_SUBDOMAINS=true, and `*.localhost` resolving to 127.0.0.1 in
    this process (as browsers do); put back as it was afterwards."""
    real_getaddrinfo = socket.getaddrinfo

    def getaddrinfo(host, *args, **kwargs):
        if isinstance(host, str) and host.endswith(".localhost"):
            host = "127.0.0.1"
        return real_getaddrinfo(host, *args, **kwargs)

    on = {"GPUHUB_USER_SUBDOMAINS": "true"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", getaddrinfo)
        try:
            stack.compose("run", "--rm", "--no-deps", "-T", "init", env=on)
            stack.compose("up", "-d", "--no-deps", "--wait", "proxy", "hub", "gpu-monitor", env=on)
            stack.wait_hub()
            yield stack
        finally:
            for user in ("alice",):
                if stack.api("GET", f"users/{user}").json().get("servers"):
                    stack.stop_server(user)
            stack.compose("up", "-d", "--no-deps", "--wait", "proxy", "hub", "gpu-monitor")
            stack.wait_hub()


@pytest.fixture(autouse=True)
def _logs_on_failure(request):
    """A failed test's stack or swarm logs (their `dump_logs`), kept in test-artifacts/."""
    yield
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.failed:
        for name in ("stack", "swarm"):
            if name in request.fixturenames:
                request.getfixturevalue(name).dump_logs(request.node.name)
