"""Per-user subdomains in the real stack (GPUHUB_USER_SUBDOMAINS=true; the test stack otherwise
runs with them off): alice's server answers on alice.user.localhost with the local CA's
wildcard certificate, and not on the hub's host; the hub's login cookie stays on the hub's host;
JupyterLab logs in on its own host; the hub and the GPU monitor's dashboard still work. And
with DOMAIN, Let's Encrypt's wildcard over DNS-01, for real against pebble.

The module turns subdomains on once (the `subdomains` fixture, tests/conftest.py: init writes the
wildcard certificate; the proxy and the hub are recreated) and off again at the end.
`*.localhost` names resolve to 127.0.0.1 in browsers (RFC 6761) but not through this machine's
resolver, so these tests resolve them themselves.
"""

from __future__ import annotations

import http.cookiejar
import os
import re
import secrets
import socket
import ssl
import subprocess
import time

import pytest
import requests
from cryptography import x509

from ..harness.stack import wait_for
from .helpers import empty_acme_store, recreated, write_pebble_config

pytestmark = pytest.mark.docker

HUB = "https://localhost"
ALICE = "https://alice.user.localhost"
PROVIDER = "http://localhost:9401"
MINIMAL = {"profile": "minimal", "gpus": 0}


def browser_like_session(stack) -> requests.Session:
    """A session whose cookies go where a browser's would: a cookie without Domain only to the
    host that set it (Python's default policy also sends it to that host's subdomains)."""
    s = requests.Session()
    s.trust_env = False
    s.verify = stack.cafile
    s.cookies.set_policy(http.cookiejar.DefaultCookiePolicy(
        strict_ns_domain=http.cookiejar.DefaultCookiePolicy.DomainStrictNonDomain))
    return s


def set_cookies(response: requests.Response) -> list[str]:
    """Every Set-Cookie header along a response's redirects, as sent."""
    return [h for r in (*response.history, response) for h in r.raw.headers.getlist("Set-Cookie")]


def log_in(s: requests.Session, user: str) -> requests.Response:
    """Through the test OIDC provider, as the browser tier does with its form."""
    r = s.get(f"{HUB}/hub/oauth_login", timeout=30)
    assert r.url.startswith(f"{PROVIDER}/oauth2/authorize?"), r.url
    return s.post(r.url, data={"sub": user}, timeout=60)


def served_certificate(name: str) -> x509.Certificate:
    """The certificate the proxy serves for `name` (SNI), unverified: the test checks its issuer."""
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection(("127.0.0.1", 443), timeout=5) as raw, \
            context.wrap_socket(raw, server_hostname=name) as tls:
        return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))


@pytest.mark.security
def test_lets_encrypt_over_dns01_issues_one_wildcard_certificate_for_the_user_hosts(stack):
    """DOMAIN with GPUHUB_USER_SUBDOMAINS=true and ACME_DNS_PROVIDER, for real: Traefik orders
    gpuhub.test and *.gpuhub.test from pebble (Let's Encrypt's test server) over DNS-01; its
    DNS provider (lego's httpreq, its password read from a file in ACME_DNS_SECRETS as any
    provider's credentials are) sets the TXT records in pebble-challtestsrv, where pebble
    checks them. User hosts then get the wildcard, not a certificate each."""
    pebble = stack.workdir / "pebble-dns"
    secrets_dir = pebble / "acme-dns"
    secrets_dir.mkdir(parents=True, exist_ok=True)
    write_pebble_config(pebble, "pebble-dns")
    password = secrets_dir / "httpreq_password"
    password.write_text(secrets.token_hex(16))
    # the operator's files, not the proxy's (uid 0 of its container): mode 600 in a 700 directory
    password.chmod(0o600)
    secrets_dir.chmod(0o700)
    for path in (secrets_dir, password):
        os.chown(path, 1000, 1000)
    # the provider's settings as an operator writes them (config/acme-dns.env.example)
    (pebble / "acme-dns.env").write_text(
        "HTTPREQ_ENDPOINT=http://acme-dns-adapter:8080\nHTTPREQ_USERNAME=gpuhub\n"
        "HTTPREQ_PASSWORD_FILE=/run/gpuhub/acme-dns/httpreq_password\n")
    env = {"GPUHUB_TEST_PEBBLE_DIR": str(pebble), "ACME_DNS_SECRETS": str(secrets_dir)}
    stack.compose("--profile", "acme-dns", "up", "-d", "--build", "pebble-dns", "challtestsrv", "acme-dns-adapter",
                  env=env, timeout=600)
    acme = {**env, "DOMAIN": "gpuhub.test", "ACME_EMAIL": "ops@gpuhub.test", "GPUHUB_USER_SUBDOMAINS": "true",
            "ACME_CA_SERVER": "https://pebble-dns:14000/dir", "LEGO_CA_CERTIFICATES": "/pebble/local-ca.crt",
            "ACME_DNS_PROVIDER": "httpreq", "ACME_DNS_ENV": str(pebble / "acme-dns.env"),
            "ACME_DNS_RESOLVERS": "challtestsrv:8053", "ACME_DNS_PROPAGATION_CHECKS": "false"}
    # the HTTP-01 test (test_hardening.py) leaves its gpuhub.test certificate, from another
    # pebble, which Traefik would serve until it has the wildcard
    empty_acme_store(stack)
    try:
        with recreated(stack, ("proxy",), acme):
            started = time.monotonic()
            try:
                cert = wait_for(lambda: (c := served_certificate("gpuhub.test")) and "Pebble" in c.issuer.rfc4514_string()
                                and c, 120, interval=1, what="a certificate from pebble over DNS-01 for gpuhub.test")
            except TimeoutError as e:  # what lego said is in the proxy's log
                proxy = subprocess.run(["docker", "logs", f"{stack.project}-proxy-1"], capture_output=True, text=True)
                lines = [line for line in (proxy.stdout + proxy.stderr).splitlines() if "RequestPath" not in line]
                raise AssertionError(f"{e}; the proxy's log:\n" + "\n".join(lines[-30:])) from None
            took = time.monotonic() - started
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
                .get_values_for_type(x509.DNSName)
            assert sorted(names) == ["*.gpuhub.test", "gpuhub.test"]
            for user_host in ("alice.gpuhub.test", "bob.gpuhub.test"):
                assert served_certificate(user_host).serial_number == cert.serial_number, user_host
            adapter = stack.compose("--profile", "acme-dns", "logs", "--no-color", "acme-dns-adapter", env=env).stdout
            assert "/present _acme-challenge.gpuhub.test. (authorised)" in adapter, adapter
            assert "refused" not in adapter, adapter
            stored = stack.compose("exec", "-T", "proxy", "cat", "/letsencrypt/acme.json").stdout
            assert "*.gpuhub.test" in stored  # kept in the acme volume, renewed from there
            inspect = subprocess.run(["docker", "inspect", f"{stack.project}-proxy-1"], capture_output=True,
                                     text=True, check=True).stdout
            assert password.read_text() not in inspect  # the credential is a file, not the environment
            print(f"\nDNS-01: pebble's wildcard certificate {names} served {took:.1f} s after the proxy started; "
                  f"issuer {cert.issuer.rfc4514_string()}")
    finally:
        stack.compose("--profile", "acme-dns", "rm", "-sf", "pebble-dns", "challtestsrv", "acme-dns-adapter", env=env)


def test_a_server_answers_on_its_own_host_with_the_wildcard_certificate_and_not_on_the_hubs(subdomains):
    stack = subdomains
    token = {"Authorization": f"token {stack.token}"}
    with stack.running_server("alice", MINIMAL):
        server = stack.api("GET", "users/alice").json()["servers"][""]
        assert server["url"] == f"{ALICE}/user/alice/" and server["ready"], server
        rules = stack.compose("exec", "-T", "proxy", "cat", "/etc/traefik/dynamic/rules.yaml").stdout
        assert "Host(`alice.user.localhost`) && ( PathPrefix(`/user/alice/`)" in rules

        s = browser_like_session(stack)  # verifies the certificate against the local CA
        r = s.get(f"{ALICE}/user/alice/api", headers=token, timeout=30)
        assert r.status_code == 200 and "version" in r.json(), r.text
        names = x509.load_pem_x509_certificates(
            stack.compose("exec", "-T", "proxy", "cat", "/certs/local.crt").stdout.encode())[0].extensions \
            .get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
        assert "*.user.localhost" in names

        # on the hub's host the path belongs to the hub, which sends people to alice's host
        r = s.get(f"{HUB}/user/alice/api", headers=token, timeout=30, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"] == f"{HUB}/hub/user/alice/api", r.headers
        r = s.get(r.headers["Location"], headers=token, timeout=30, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].startswith(f"{ALICE}/user/alice/api"), r.headers
        # and another user's host does not reach alice's server either
        r = s.get("https://bob.user.localhost/user/alice/api", headers=token, timeout=30, allow_redirects=False)
        assert r.status_code == 302 and r.headers["Location"].startswith(f"{HUB}/hub/user/alice/"), r.headers
        print(f"\nsubdomains: alice's server at {ALICE}/user/alice/ (certificate names {names}); "
              f"{HUB}/user/alice/ redirects there through the hub")


def test_the_hubs_login_cookie_stays_on_its_host_and_jupyterlab_logs_in_on_its_own(subdomains):
    stack = subdomains
    s = browser_like_session(stack)
    login = log_in(s, "alice")
    assert login.status_code == 200 and login.url == f"{HUB}/hub/spawn", login.url
    hub_cookies = set_cookies(login)
    hub_login = [c for c in hub_cookies if c.startswith("__Host-jupyterhub-hub-login=")]
    assert len(hub_login) == 1, hub_cookies
    attributes = {a.strip().split("=")[0].lower() for a in hub_login[0].split(";")[1:]}
    # host-only (no Domain: never sent to, nor settable from, a user's host), Secure, Path=/
    assert "domain" not in attributes and {"secure", "httponly", "path"} <= attributes, hub_login
    assert "Path=/;" in hub_login[0] + ";"
    # the only cookie JupyterHub shares with subdomains, by design: the session id (an
    # identifier the hub ties tokens to for logout, no credential)
    shared = [c.split("=")[0] for c in hub_cookies if re.search(r";\s*Domain=", c, re.I)]
    assert set(shared) <= {"jupyterhub-session-id"}, hub_cookies

    with stack.running_server("alice", MINIMAL):
        # JupyterLab on alice's host logs her in through the hub's OAuth, on its own cookie
        lab = s.get(f"{ALICE}/user/alice/lab", timeout=60)
        assert lab.status_code == 200 and lab.url == f"{ALICE}/user/alice/lab", lab.url
        assert "JupyterLab" in lab.text
        # (Python's cookie jar files the dotless host `localhost` as `localhost.local`)
        hosts = {(c.name, c.domain.removesuffix(".local")) for c in s.cookies}
        assert ("__Host-jupyterhub-user-alice", "alice.user.localhost") in hosts, hosts
        assert ("__Host-jupyterhub-hub-login", "localhost") in hosts, hosts
        # what a request to alice's host carries: her server's cookie, no hub cookie
        prepared = s.prepare_request(requests.Request("GET", f"{ALICE}/user/alice/api"))
        assert "jupyterhub-hub-login" not in prepared.headers.get("Cookie", "")
        assert "__Host-jupyterhub-user-alice" in prepared.headers.get("Cookie", "")

        # the hub and the GPU monitor's dashboard (on the hub's host) still work
        assert s.get(f"{HUB}/hub/home", timeout=30).status_code == 200
        dashboard = s.get(f"{HUB}/services/gpu-monitor/", timeout=60)
        assert dashboard.status_code == 200 and dashboard.url == f"{HUB}/services/gpu-monitor/", dashboard.url
        devices = wait_for(lambda: (r := s.get(f"{HUB}/services/gpu-monitor/api/devices", timeout=30)).ok and r,
                           30, what="the monitor's devices with the dashboard's cookie")
        assert devices.json(), devices.text
        # the dashboard's login cookie is __Host- too: a user's host cannot toss one for it
        hosts = {(c.name, c.domain.removesuffix(".local"), c.path) for c in s.cookies}
        assert ("__Host-service-gpu-monitor", "localhost", "/") in hosts, hosts
        assert not [c for c in s.cookies if c.name == "service-gpu-monitor"], hosts
        print(f"\nsubdomains: hub cookies {[c.split(';')[0].split('=')[0] for c in hub_cookies]}; "
              f"JupyterLab at {lab.url} on its own cookie; dashboard {dashboard.status_code}")

