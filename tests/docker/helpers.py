"""What the docker tier's modules share: the GPU monitor's API through the proxy, a user's API
token, services recreated with other settings, the ACME test server's files, and the programs
the tests run inside containers (tests/fixtures/programs/, sent as text: `python3 -c` in a
service's container, or code for a user's kernel through `Stack.run_code`)."""

from __future__ import annotations

import contextlib
import json
import subprocess

from gpuhub.tls import write_localhost_certificate

from ..harness.stack import ROOT

MONITOR = "services/gpu-monitor"
PROGRAMS = ROOT / "tests" / "fixtures" / "programs"


def program(name: str) -> str:
    """The text of tests/fixtures/programs/<name>.py."""
    return (PROGRAMS / f"{name}.py").read_text()


# put before code for a user's kernel: reach(host, port) says 'open' or why not
REACH = program("reach")


def monitor(stack, method: str, path: str, token: str | None = None, **kwargs):
    """A request to the GPU monitor's API through the proxy, with the operator's token or `token`."""
    s = stack.session()
    if token is not None:
        s.headers["Authorization"] = f"token {token}"
    return s.request(method, f"{stack.base_url}/{MONITOR}/{path}", timeout=60, **kwargs)


def allocations(stack, user: str | None = None) -> list[dict]:
    r = monitor(stack, "GET", "api/allocations" + (f"?user={user}" if user else ""))
    assert r.status_code == 200, r.text
    return r.json()["allocations"]


def user_token(stack, user: str) -> str:
    stack.api("POST", f"users/{user}")
    r = stack.api("POST", f"users/{user}/tokens", json={"note": "gpuhub test", "expires_in": 3600})
    assert r.status_code in (200, 201), r.text
    return r.json()["token"]


@contextlib.contextmanager
def recreated(stack, services, env):
    """`services` recreated with `env` added, and recreated as they were afterwards."""
    try:
        stack.compose("up", "-d", "--no-deps", "--wait", *services, env=env)
        stack.wait_hub()
        yield
    finally:
        stack.compose("up", "-d", "--no-deps", "--wait", *services,
                      env={"GPUHUB_POLICY": str(ROOT / "config" / "gpu-policy.yaml")})
        stack.wait_hub()


def empty_acme_store(stack) -> None:
    """The proxy removed with its ACME store (the acme volume), so that a certificate another
    ACME test obtained is not served instead of the one this test orders."""
    stack.compose("rm", "-sf", "proxy")
    subprocess.run(["docker", "volume", "rm", f"{stack.project}_acme"], capture_output=True)


def write_pebble_config(directory, hostname: str) -> None:
    """pebble's configuration and TLS certificate (for `hostname`, from a CA of its own) in
    `directory`, which the pebble service mounts at /pebble, readable by its user."""
    write_localhost_certificate(directory, directory / "ca.key", (hostname,))
    (directory / "config.json").write_text(json.dumps({"pebble": {
        "listenAddress": "0.0.0.0:14000", "managementListenAddress": "0.0.0.0:15000",
        "certificate": "/pebble/local.crt", "privateKey": "/pebble/local.key",
        "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": False}}))
    for f in directory.iterdir():
        if f.is_file():  # a directory beside them (the DNS-01 test's credentials) keeps its x bit
            f.chmod(0o644)
