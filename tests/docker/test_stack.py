"""The real stack: REST API over HTTPS through Traefik, a server that runs code, survives a hub
restart, and configuration that is refused with its message. Needs Docker (marker `docker`)."""

import ipaddress
import json
import socket
import ssl
import subprocess
import threading

import pytest
import requests

from ..harness.stack import PROJECT, ROOT, users_network, wait_for
from .helpers import REACH

pytestmark = pytest.mark.docker


def test_services_healthy_and_only_the_proxy_published(stack):
    ps = stack.compose("ps", "--format", "{{.Service}} {{.State}} {{.Health}} {{.Publishers}}").stdout
    lines = {line.split()[0]: line for line in ps.splitlines()}
    for service in ("db", "hub", "proxy"):
        assert "running" in lines[service] and "healthy" in lines[service], lines[service]
    # the proxy publishes on loopback only (the default GPUHUB_LISTEN); db and hub publish nothing
    assert stack.compose("port", "proxy", "443").stdout.strip() == "127.0.0.1:443"
    assert stack.compose("port", "proxy", "80").stdout.strip() == "127.0.0.1:80"
    for service in ("db", "hub"):
        published = subprocess.run(
            ["docker", "inspect", f"{stack.project}-{service}-1", "--format", "{{json .NetworkSettings.Ports}}"],
            capture_output=True, text=True, check=True).stdout
        assert "HostPort" not in published, (service, published)


@pytest.mark.filterwarnings("ignore:ssl.TLSVersion.TLSv1_1 is deprecated:DeprecationWarning")
def test_https_redirect_tls_and_hsts(stack):
    r = requests.get("http://localhost/hub/", allow_redirects=False, timeout=10)
    assert r.status_code in (301, 308) and r.headers["Location"].startswith("https://localhost/")
    r = requests.get("https://localhost/hub/login", verify=stack.cafile, timeout=10)
    assert r.status_code == 200
    assert "max-age=31536000" in r.headers["Strict-Transport-Security"]
    # TLS 1.1 is refused, TLS 1.2 accepted
    for version, accepted in ((ssl.TLSVersion.TLSv1_1, False), (ssl.TLSVersion.TLSv1_2, True)):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.load_verify_locations(stack.cafile)
        ctx.minimum_version = ctx.maximum_version = version
        if version == ssl.TLSVersion.TLSv1_1:
            ctx.set_ciphers("ALL:@SECLEVEL=0")  # let the client offer it; the server must refuse
        try:
            with socket.create_connection(("localhost", 443), timeout=5) as raw, \
                    ctx.wrap_socket(raw, server_hostname="localhost"):
                handshake = True
        except (ssl.SSLError, OSError):
            handshake = False
        assert handshake is accepted, version


def test_operator_token_is_admin_and_anonymous_is_refused(stack):
    assert stack.api("GET", "users").status_code == 200
    anonymous = requests.get(f"{stack.base_url}/hub/api/users", verify=stack.cafile, timeout=10)
    assert anonymous.status_code == 403
    forged = requests.get(f"{stack.base_url}/hub/api/users", verify=stack.cafile, timeout=10,
                          headers={"Authorization": "token " + "0" * 64})
    assert forged.status_code == 403


def test_access_log_redacts_credentials(stack):
    marker = "redaction-check-" + "7" * 24
    requests.get(f"{stack.base_url}/hub/api/user", verify=stack.cafile, timeout=10,
                 headers={"Authorization": f"token {marker}", "Cookie": f"jupyterhub-session-id={marker}"})
    stack.api("GET", "users")  # the operator's real token passes through the proxy too

    def logged():
        logs = stack.compose("logs", "--no-color", "proxy").stdout
        return logs if "/hub/api/user" in logs else None

    logs = wait_for(logged, 10, what="the request in the proxy's access log")
    assert marker not in logs and stack.token not in logs
    assert '"request_' not in logs  # no header is logged at all (test_hardening.py: the access log)


def test_bad_spawn_options_are_refused_before_any_container(stack):
    stack.api("POST", "users/bob")
    cases = {
        "arbitrary image": {"image": "debian:bookworm-slim"},
        "unknown profile": {"profile": "bitcoin"},
        "negative gpus": {"profile": "minimal", "gpus": -1},
        "too many gpus": {"profile": "minimal", "gpus": 4},
    }
    for name, options in cases.items():
        r = stack.api("POST", "users/bob/server", json=options)
        assert r.status_code == 400, (name, r.status_code, r.text)
        assert r.json()["message"], name
        assert not stack.api("GET", "users/bob").json()["servers"], name
    assert f"{PROJECT}-bob" not in subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"],
                                              capture_output=True, text=True).stdout


def test_spawn_run_code_survive_hub_restart_stop(stack):
    r = stack.start_server("alice", {"profile": "minimal", "gpus": 0})
    assert r.status_code in (201, 202), r.text
    model = stack.api("GET", "users/alice").json()["servers"][""]
    assert model["ready"] and model["user_options"] == {"profile": "minimal", "gpus": 0}

    out = stack.run_code("alice", "import os, getpass; print(getpass.getuser(), os.environ['NVIDIA_VISIBLE_DEVICES'], 6 * 7)")
    assert out.split() == ["jovyan", "void", "42"]

    # the container: labelled, hardened, on the users' network only
    inspect = subprocess.run(["docker", "inspect", f"{PROJECT}-alice", "--format",
                              "{{json .Config.Labels}}|{{.HostConfig.CapDrop}}|{{.HostConfig.Privileged}}|{{json .NetworkSettings.Networks}}"],  # noqa: E501
                             capture_output=True, text=True, check=True).stdout
    labels, capdrop, privileged, networks = inspect.split("|")
    assert '"org.gpuhub.user":"alice"' in labels and '"org.gpuhub.profile":"minimal"' in labels
    assert capdrop == "[ALL]" and privileged == "false"
    assert list(__import__("json").loads(networks)) == ["gpuhub-test-users"]

    # what the README's security section promises, checked from inside the user's server
    reach = stack.run_code("alice", (
        REACH + "import os\n"
        "print(os.path.exists('/var/run/docker.sock'), reach('hub', 8081), reach('db', 5432),"
        " reach('proxy', 8099), open('/proc/self/status').read().split('CapEff:')[1].split()[0])"))
    docker_socket, hub_api, database, proxy_api, capabilities = reach.split()
    assert docker_socket == "False"
    assert hub_api == "open"  # the single-user server must reach the hub's API
    assert database == "gaierror"  # not on the database network: the name does not even resolve
    assert capabilities == "0000000000000000"
    # servers may reach the proxy on 80 and 443 only: the network policy drops the rest (a
    # timeout); Traefik's API entrypoint also listens on the edge network only (test_hardening.py)
    assert proxy_api == "TimeoutError"

    container_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", f"{PROJECT}-alice"],
                                  capture_output=True, text=True, check=True).stdout.strip()
    stack.compose("restart", "hub")
    stack.wait_hub()
    wait_for(lambda: stack.api("GET", "users/alice").json()["servers"][""]["ready"], 60,
             what="alice's server ready after the hub restart")
    same = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", f"{PROJECT}-alice"],
                          capture_output=True, text=True, check=True).stdout.strip()
    assert same == container_id, "the hub restart replaced the user's container"
    assert stack.run_code("alice", "print('still here')").strip() == "still here"

    stack.stop_server("alice")
    assert f"{PROJECT}-alice" not in stack.user_containers()
    gone = stack.session().get(f"{stack.base_url}/user/alice/api/status", timeout=10, allow_redirects=False)
    assert gone.status_code != 200


def test_opencl_profile_spawns_and_computes_on_pocl(stack):
    r = stack.start_server("carol", {"profile": "opencl", "gpus": "0"})
    assert r.status_code in (201, 202), r.text
    try:
        out = stack.run_code("carol", (
            "import os, pyopencl as cl, pyopencl.array as cla, numpy as np\n"
            "ctx = cl.create_some_context(interactive=False); q = cl.CommandQueue(ctx)\n"
            "x = np.arange(1000, dtype=np.float32)\n"
            "print(ctx.devices[0].platform.name, '|', float((2 * cla.to_device(q, x)).get().sum()), '|',\n"
            "      os.environ['NVIDIA_VISIBLE_DEVICES'], '|', os.environ['GPUHUB_PROFILE'])"))
        platform, total, visible, profile = [part.strip() for part in out.split("|")]
        assert platform == "Portable Computing Language"
        assert float(total) == 2 * sum(range(1000))
        assert (visible, profile) == ("void", "opencl")
        labels = subprocess.run(["docker", "inspect", f"{PROJECT}-carol", "--format", "{{json .Config.Labels}}"],
                                capture_output=True, text=True, check=True).stdout
        assert '"org.gpuhub.profile":"opencl"' in labels
    finally:
        stack.stop_server("carol")


def test_spawn_progress_shows_each_step(stack):
    """The spawn page follows /progress: it must show our steps, not a bare spinner."""
    stack.api("POST", "users/carol")
    started = {}
    spawn = threading.Thread(target=lambda: started.update(
        r=stack.api("POST", "users/carol/server", json={"profile": "opencl", "gpus": 1})))
    spawn.start()
    try:
        wait_for(lambda: stack.api("GET", "users/carol").json()["servers"].get("", {}).get("pending") == "spawn",
                 30, interval=0.05, what="carol's spawn pending")
        events = []
        with stack.session().get(f"{stack.base_url}/hub/api/users/carol/server/progress",
                                 stream=True, timeout=120) as r:
            for line in r.iter_lines(decode_unicode=True):
                if line.startswith("data:"):
                    events.append(json.loads(line[5:]))
                    if events[-1].get("ready") or events[-1].get("failed"):
                        break
        spawn.join(120)
        messages = [e["message"] for e in events]
        assert any("Creating the container" in m for m in messages), messages
        # the allocation is a step of its own, and names what was given
        assert any(m == "Allocating 1 device(s) from the GPU monitor" for m in messages), messages
        assert any(m.startswith("Allocated: CPU slice") for m in messages), messages
        assert events[-1].get("ready") is True, events[-1]
        progress = [e["progress"] for e in events if "progress" in e]
        assert progress == sorted(progress) and progress[-1] == 100, progress
        assert started["r"].status_code in (201, 202)
    finally:
        spawn.join(120)
        stack.stop_server("carol")


REFUSED_CONFIG = {
    "real provider without allow rule": (
        "init", {"GPUHUB_ALLOWED_USERS": ""},
        "gpuhub: configuration error: GPUHUB_ALLOWED_USERS: no one is allowed to log in"),
    "unknown provider": (
        "hub", {"GPUHUB_AUTHENTICATOR": "myspace"},
        "gpuhub: configuration error: GPUHUB_AUTHENTICATOR: unknown value 'myspace'"),
    "generic without token url": (
        "hub", {"OIDC_TOKEN_URL": ""},
        "gpuhub: configuration error: OIDC_TOKEN_URL: is required for GPUHUB_AUTHENTICATOR=generic"),
    "demo exposed to the network": (
        "init", {"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_LISTEN": "0.0.0.0"},
        "gpuhub: configuration error: GPUHUB_LISTEN: is 0.0.0.0, but the demo login"),
    "unknown monitor backend": (
        "gpu-monitor", {"GPUHUB_MONITOR_BACKEND": "cuda"},
        "gpu-monitor: configuration error: GPUHUB_MONITOR_BACKEND: unknown value 'cuda'; choose one of auto, nvml, cpu-slices"),
    "nvml demanded on a host without a driver": (
        "gpu-monitor", {"GPUHUB_MONITOR_BACKEND": "nvml"}, "gpu-monitor: no devices: NVIDIA driver library"),
    "domain without acme e-mail": (
        "proxy", {"DOMAIN": "hub.example.org"},
        "gpuhub proxy: configuration error: ACME_EMAIL: is required with DOMAIN=hub.example.org"),
    "per-user subdomains with Let's Encrypt over HTTP-01": (
        "init", {"DOMAIN": "hub.example.org", "ACME_EMAIL": "ops@example.org", "GPUHUB_USER_SUBDOMAINS": "true"},
        "gpuhub: configuration error: GPUHUB_USER_SUBDOMAINS: is on, which needs a certificate for *.hub.example.org"),
    "per-user subdomains under an IP address": (
        "init", {"DOMAIN": "192.0.2.7", "GPUHUB_USER_SUBDOMAINS": "true", "ACME_DNS_PROVIDER": "cloudflare"},
        "gpuhub: configuration error: GPUHUB_USER_SUBDOMAINS: is on, but DOMAIN=192.0.2.7 is an IP address"),
}


@pytest.mark.parametrize("service, change, message", REFUSED_CONFIG.values(), ids=REFUSED_CONFIG.keys())
def test_bad_configuration_stops_the_service_with_its_message(stack, service, change, message):
    # `compose run` gives its container the service's fixed address on the users' network, which
    # the running hub and proxy hold: spare addresses (in the subnet, outside the servers' range)
    subnet = ipaddress.IPv4Network(stack.env["GPUHUB_USERS_SUBNET"])
    spare = {"GPUHUB_USERS_HUB_IP": str(subnet.network_address + 9), "GPUHUB_USERS_PROXY_IP": str(subnet.network_address + 10)}
    r = stack.compose("run", "--rm", "--no-deps", "-T", service, check=False, env={**spare, **change}, timeout=120)
    assert r.returncode != 0
    lines = [line for line in (r.stdout + r.stderr).splitlines()
             if "configuration error" in line or "no devices" in line]
    assert len(lines) == 1 and lines[0].startswith(message), r.stdout + r.stderr


def test_demo_mode_needs_no_configuration(tmp_path):
    """A second stack with no settings at all (only other ports, and a users' network that no
    gpuhub on this host holds) comes up in demo mode."""
    import os
    project = ["docker", "compose", "-p", "gpuhub-demo-test", "--project-directory", str(ROOT)]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GPUHUB_", "OAUTH_", "OIDC_"))}
    env.update(GPUHUB_HTTPS_PORT="8443", GPUHUB_HTTP_PORT="8080", GPUHUB_DEMO_PORT="9402",
               GPUHUB_OPERATOR_SECRETS=str(tmp_path))
    # not the default subnet: a gpuhub on this host may hold it, running or stopped with
    # `docker compose down` (which keeps the users' network while servers are on it)
    subprocess.run([*project, "down", "-v", "--remove-orphans"], env=env, capture_output=True, timeout=300)
    env.update(users_network("gpuhub-demo-test-users", "10.213.208.0/20"))
    try:
        up = subprocess.run([*project, "up", "-d", "--wait"], env=env, capture_output=True, text=True, timeout=600)
        assert up.returncode == 0, up.stderr[-3000:]
        ca = subprocess.run([*project, "exec", "-T", "proxy", "cat", "/certs/local-ca.crt"], env=env,
                            capture_output=True, text=True, check=True).stdout
        (tmp_path / "ca.crt").write_text(ca)
        https = requests.Session()
        https.trust_env, https.verify = False, str(tmp_path / "ca.crt")
        # `up --wait` already waited for the hub through the proxy; poll anyway, with a deadline
        login = wait_for(lambda: (r := https.get("https://localhost:8443/hub/login", timeout=10)).ok and r, 60,
                         what="demo hub's login page through the proxy")
        assert "Demo mode" in login.text
        redirect = https.get("https://localhost:8443/hub/oauth_login", timeout=10, allow_redirects=False)
        assert redirect.status_code == 302
        assert redirect.headers["Location"].startswith("http://localhost:9402/oauth2/authorize?")
        assert requests.get("http://127.0.0.1:9402/.well-known/openid-configuration", timeout=10).status_code == 200
        ports = subprocess.run([*project, "port", "proxy", "443"], env=env, capture_output=True, text=True).stdout
        assert ports.strip() == "127.0.0.1:8443"
    finally:
        subprocess.run([*project, "down", "-v", "--remove-orphans"], env=env, capture_output=True, timeout=300)
