"""Per-user subdomains (GPUHUB_USER_SUBDOMAINS): the default, its refusals, what JupyterHub is
told, the routes Traefik gets, and the local certificate's names (tables of named cases)."""

import datetime as dt
import socket
import ssl
import threading

import pytest
from cryptography import x509
from jupyterhub.app import JupyterHub
from jupyterhub_traefik_proxy.traefik_utils import generate_rule
from traitlets.config import Config

from gpuhub.configure import configure
from gpuhub.settings import ConfigError, load_settings
from gpuhub.subdomains import SubdomainHook, certificate_names, users_domain
from gpuhub.tls import needs_certificate, write_localhost_certificate

DNS01 = {"ACME_DNS_PROVIDER": "cloudflare"}

DEFAULTS = {
    # name: (change, subdomains on?)
    "no DOMAIN: on (demo, localhost)": ({}, True),
    "DOMAIN: off (wildcard DNS and DNS-01 are the operator's)": ({"DOMAIN": "hub.example.org"}, False),
    "off when asked": ({"GPUHUB_USER_SUBDOMAINS": "false"}, False),
    "DOMAIN with DNS-01 and asked": ({"DOMAIN": "hub.example.org", "GPUHUB_USER_SUBDOMAINS": "true", **DNS01}, True),
    "DOMAIN with DNS-01, not asked: still off": ({"DOMAIN": "hub.example.org", **DNS01}, False),
    "IP address, off when asked": ({"DOMAIN": "192.0.2.7", "GPUHUB_USER_SUBDOMAINS": "no"}, False),
}


@pytest.mark.parametrize("change, on", DEFAULTS.values(), ids=DEFAULTS.keys())
def test_the_default_and_explicit_values(environ, change, on):
    assert load_settings({**environ, **change}).user_subdomains is on


REFUSALS = {
    "IP address": ({"DOMAIN": "192.0.2.7", "GPUHUB_USER_SUBDOMAINS": "true", **DNS01},
                   "is on, but DOMAIN=192.0.2.7 is an IP address"),
    "IPv6 address": ({"DOMAIN": "2001:db8::1", "GPUHUB_USER_SUBDOMAINS": "true", **DNS01}, "is an IP address"),
    "Let's Encrypt over HTTP-01 only": ({"DOMAIN": "hub.example.org", "GPUHUB_USER_SUBDOMAINS": "true"},
                                        "is on, which needs a certificate for *.hub.example.org"),
    "not a boolean": ({"GPUHUB_USER_SUBDOMAINS": "sometimes"}, "expected true or false"),
}


@pytest.mark.parametrize("change, words", REFUSALS.values(), ids=REFUSALS.keys())
def test_settings_that_cannot_work_are_refused_naming_the_variable(environ, change, words):
    with pytest.raises(ConfigError) as e:
        load_settings({**environ, **change})
    assert e.value.variable == "GPUHUB_USER_SUBDOMAINS" and words in e.value.message
    assert "GPUHUB_USER_SUBDOMAINS=false" in e.value.message or "true or false" in e.value.message


HOSTS = {
    # name: (change, subdomain_host, alice's host)
    "localhost": ({}, "https://localhost", "alice.user.localhost"),
    "localhost, other port": ({"GPUHUB_HTTPS_PORT": "8443"}, "https://localhost:8443", "alice.user.localhost"),
    "a domain": ({"DOMAIN": "hub.example.org", "GPUHUB_USER_SUBDOMAINS": "true", **DNS01},
                 "https://hub.example.org", "alice.hub.example.org"),
}


@pytest.mark.parametrize("change, subdomain_host, alice", HOSTS.values(), ids=HOSTS.keys())
def test_jupyterhub_puts_users_on_their_hosts_and_services_on_the_hubs(environ, change, subdomain_host, alice):
    c = Config()
    configure(c, load_settings({**environ, **change}))
    assert c.JupyterHub.subdomain_host == subdomain_host
    assert c.JupyterHub.cookie_host_prefix_enabled is True
    # what JupyterHub makes of it (the app is only configured, not started)
    app = JupyterHub(config=c)
    hub_host = subdomain_host.split("://")[1].split(":")[0]
    assert app.domain == hub_host
    assert app.subdomain_hook("alice", app.domain, "user") == alice
    assert app.subdomain_hook("gpu-monitor", app.domain, "service") == hub_host
    # a name that is no DNS label gets JupyterHub's own escaping, still under the users' domain
    assert app.subdomain_hook("at@example.org", app.domain, "user").endswith("." + alice.split(".", 1)[1])
    assert app.hub_routespec == "/"  # the hub answers every host: it redirects what it should not serve
    # the route jupyterhub-traefik-proxy writes for alice's server (User.proxy_spec)
    assert generate_rule(f"{alice}/user/alice/") == (
        f"Host(`{alice}`) && ( PathPrefix(`/user/alice/`) || Path(`/user/alice`) )")


def test_off_means_one_origin_as_before(environ):
    c = Config()
    configure(c, load_settings({**environ, "GPUHUB_USER_SUBDOMAINS": "false"}))
    assert "subdomain_host" not in c.JupyterHub and "cookie_host_prefix_enabled" not in c.JupyterHub


def test_the_hook_is_readable_in_a_log():
    assert repr(SubdomainHook("user.localhost")) == "SubdomainHook(users_domain='user.localhost')"


@pytest.mark.parametrize("host, domain", [("localhost", "user.localhost"), ("gpuhub", "user.gpuhub"),
                                          ("hub.example.org", "hub.example.org")])
def test_a_wildcard_needs_two_labels_after_its_star(host, domain):
    assert users_domain(host) == domain


@pytest.mark.parametrize("change, names", [
    ({}, ("localhost", "*.user.localhost")),
    ({"GPUHUB_USER_SUBDOMAINS": "false"}, ("localhost",)),
    ({"DOMAIN": "hub.example.org", "GPUHUB_USER_SUBDOMAINS": "true", **DNS01},
     ("hub.example.org", "localhost", "*.hub.example.org")),
], ids=["localhost", "off", "domain"])
def test_the_local_certificate_names(environ, change, names):
    assert certificate_names(load_settings({**environ, **change})) == names


def _verifies(cert_dir, server_name: str) -> bool:
    """A TLS handshake with a server holding cert_dir's certificate, checked as browsers do
    (OpenSSL's host name rules) against the local CA."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_dir / "local.crt", cert_dir / "local.key")
    listener = socket.create_server(("127.0.0.1", 0))

    def accept():
        conn, _ = listener.accept()
        try:
            server.wrap_socket(conn, server_side=True).close()
        except (ssl.SSLError, OSError):
            conn.close()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    client = ssl.create_default_context(cafile=str(cert_dir / "local-ca.crt"))
    try:
        with socket.create_connection(listener.getsockname(), timeout=5) as raw, \
                client.wrap_socket(raw, server_hostname=server_name):
            return True
    except ssl.SSLCertVerificationError:
        return False
    finally:
        thread.join(5)
        listener.close()


def test_the_wildcard_verifies_for_user_hosts_and_a_single_label_one_would_not(tmp_path, environ):
    names = certificate_names(load_settings(environ))
    write_localhost_certificate(tmp_path, tmp_path / "ca.key", names)
    assert _verifies(tmp_path, "localhost")
    assert _verifies(tmp_path, "alice.user.localhost")
    assert not _verifies(tmp_path, "alice.localhost")  # not named, and `*.localhost` would not help:
    bare = tmp_path / "bare"
    write_localhost_certificate(bare, tmp_path / "ca.key", ("localhost", "*.localhost"))
    assert not _verifies(bare, "alice.localhost")  # OpenSSL refuses a wildcard over a whole TLD


def test_a_certificate_missing_a_wanted_name_is_rewritten(tmp_path):
    cert = tmp_path / "local.crt"
    write_localhost_certificate(tmp_path, tmp_path / "ca.key", ("localhost",))
    assert not needs_certificate(cert, names=("localhost",))
    assert needs_certificate(cert, names=("localhost", "*.user.localhost"))
    write_localhost_certificate(tmp_path, tmp_path / "ca.key", ("localhost", "*.user.localhost"))
    assert not needs_certificate(cert, names=("localhost",))  # a name more does no harm
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=340)
    assert needs_certificate(cert, now=later, names=("localhost",))  # renewal still applies
    san = x509.load_pem_x509_certificate(cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "*.user.localhost"]


def test_a_service_route_whose_spec_changed_is_replaced_not_lost():
    """JupyterHub's route check finds a service's route by name only (gpuhub.proxy)."""
    from types import SimpleNamespace

    from jupyterhub_traefik_proxy.fileprovider import TraefikFileProviderProxy

    from gpuhub.proxy import TraefikFileProxy, moved_service_routes

    monitor = SimpleNamespace(server=object(), proxy_spec="localhost/services/gpu-monitor/")
    stopped = SimpleNamespace(server=None, proxy_spec="localhost/services/other/")
    routes = {
        "/": {"data": {"hub": True}},
        "/services/gpu-monitor/": {"data": {"service": "gpu-monitor"}},  # before the switch
        "/services/other/": {"data": {"service": "other"}},
        "alice.user.localhost/user/alice/": {"data": {"user": "alice"}},
    }
    services = {"gpu-monitor": monitor, "other": stopped}
    assert moved_service_routes(routes, services) == ["/services/gpu-monitor/"]
    routes["localhost/services/gpu-monitor/"] = routes.pop("/services/gpu-monitor/")
    assert moved_service_routes(routes, services) == []
    assert issubclass(TraefikFileProxy, TraefikFileProviderProxy)
