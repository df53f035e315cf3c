"""Settings: every variable validated, every refusal names the variable (table of cases)."""

import pytest

from gpuhub.settings import ConfigError, load_settings


def test_generic_provider_loads(environ):
    s = load_settings(environ)
    assert s.authenticator == "generic"
    assert s.oauth.client_secret == "s3cret"
    assert s.allowed_users == {"alice", "bob"}
    assert s.admin_users == {"alice"}
    assert s.public_url == "https://localhost/"
    assert s.oauth_callback_url == "https://localhost/hub/oauth_callback"
    assert not s.demo


def test_empty_environment_is_demo_mode_for_demo_user_only():
    s = load_settings({})
    assert s.demo
    assert s.allowed_users == {"demo"} and s.admin_users == {"demo"}
    assert not s.allow_all
    assert s.oauth.authorize_url == "http://localhost:9400/oauth2/authorize"
    assert s.oauth.token_url == "http://demo-oidc:9400/oauth2/token"


def test_domain_and_port_make_the_public_url(environ):
    s = load_settings({**environ, "DOMAIN": "hub.example.org", "GPUHUB_HTTPS_PORT": "8443"})
    assert s.public_url == "https://hub.example.org:8443/"


def test_secret_is_not_in_repr(environ):
    assert "s3cret" not in repr(load_settings(environ))


REFUSALS = {
    "unknown authenticator": ({"GPUHUB_AUTHENTICATOR": "ldap"}, "GPUHUB_AUTHENTICATOR", "unknown value"),
    "no allow rule": ({"GPUHUB_ALLOWED_USERS": ""}, "GPUHUB_ALLOWED_USERS", "no one is allowed"),
    "blank allow rule": ({"GPUHUB_ALLOWED_USERS": " , "}, "GPUHUB_ALLOWED_USERS", "no one is allowed"),
    "missing client id": ({"OAUTH_CLIENT_ID": ""}, "OAUTH_CLIENT_ID", "is required"),
    "missing client secret file": ({"OAUTH_CLIENT_SECRET_FILE": "/nonexistent/x"}, "OAUTH_CLIENT_SECRET_FILE", "does not exist"),
    "missing token url": ({"OIDC_TOKEN_URL": ""}, "OIDC_TOKEN_URL", "is required for GPUHUB_AUTHENTICATOR=generic"),
    "url without scheme": ({"OIDC_AUTHORIZE_URL": "id.example.org"}, "OIDC_AUTHORIZE_URL", "expected an http(s) URL"),
    "bad bool": ({"GPUHUB_ALLOW_ALL": "maybe"}, "GPUHUB_ALLOW_ALL", "expected true or false"),
    "bad port": ({"GPUHUB_HTTPS_PORT": "70000"}, "GPUHUB_HTTPS_PORT", "TCP port"),
    "azuread without tenant": ({"GPUHUB_AUTHENTICATOR": "azuread"}, "AZUREAD_TENANT_ID", "tenant"),
    "groups on google": ({"GPUHUB_AUTHENTICATOR": "google", "GPUHUB_ALLOWED_GROUPS": "x"}, "GPUHUB_ALLOWED_GROUPS", "not supported"),  # noqa: E501
    "demo on all interfaces": ({"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_LISTEN": "0.0.0.0"}, "GPUHUB_LISTEN", "demo login"),
    "demo with allow all": ({"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_ALLOW_ALL": "true"}, "GPUHUB_ALLOW_ALL", "demo"),
    # the users' network (docker-compose.yml, images/netpolicy)
    "isolation not a bool": ({"GPUHUB_SERVER_TO_SERVER": "yes"}, "GPUHUB_SERVER_TO_SERVER", "true or false"),
    "subnet with host bits": ({"GPUHUB_USERS_SUBNET": "10.9.0.1/16"}, "GPUHUB_USERS_SUBNET", "host bits set"),
    "subnet not an address": ({"GPUHUB_USERS_SUBNET": "users"}, "GPUHUB_USERS_SUBNET", "IPv4 subnet"),
    "range outside the subnet": ({"GPUHUB_USERS_IP_RANGE": "10.0.0.0/24"}, "GPUHUB_USERS_IP_RANGE", "not inside"),
    "hub outside the subnet": ({"GPUHUB_USERS_HUB_IP": "10.0.0.2"}, "GPUHUB_USERS_HUB_IP", "not a host address"),
    "hub on the gateway": ({"GPUHUB_USERS_HUB_IP": "10.213.240.1"}, "GPUHUB_USERS_HUB_IP", "gateway"),
    "proxy among servers": ({"GPUHUB_USERS_PROXY_IP": "10.213.248.9"}, "GPUHUB_USERS_PROXY_IP", "inside GPUHUB_USERS_IP_RANGE"),
    "proxy on the hub's address": ({"GPUHUB_USERS_PROXY_IP": "10.213.240.2"}, "GPUHUB_USERS_PROXY_IP", "also GPUHUB_USERS_HUB_IP"),  # noqa: E501
    "proxy not an address": ({"GPUHUB_USERS_PROXY_IP": "proxy"}, "GPUHUB_USERS_PROXY_IP", "IPv4 address"),
}


@pytest.mark.parametrize("change, variable, words", REFUSALS.values(), ids=REFUSALS.keys())
def test_bad_settings_are_refused_naming_the_variable(environ, change, variable, words):
    with pytest.raises(ConfigError) as info:
        load_settings({**environ, **change})
    assert info.value.variable == variable
    assert words in str(info.value)
    assert str(info.value).startswith(f"{variable}: ")


# Every numeric setting the hub reads, with a valid value (the monitor's are gpu_monitor/gpu_monitor/settings.py's).
NUMERIC = {"GPUHUB_HTTPS_PORT": "8443", "GPUHUB_CULL_IDLE_SECONDS": "600", "GPUHUB_START_CONCURRENCY": "4"}
NOT_A_NUMBER = ("nan", "NaN", "inf", "-inf", "+inf", "Infinity", "1e309", "1e3", "1.5", "-1", "0x10", "²", "١٢", "8443 s")


def test_every_numeric_setting_is_in_the_table():
    """A new numeric setting declared in gpuhub/settings.py joins NUMERIC, and so the table below."""
    from gpu_monitor import env
    from gpuhub.settings import SETTINGS

    numeric = {s.name for s in SETTINGS
               if s.parse is env.port or getattr(s.parse, "__qualname__", "").startswith(("whole_number.", "number."))}
    assert numeric == set(NUMERIC)


@pytest.mark.parametrize("variable", NUMERIC)
@pytest.mark.parametrize("value", NOT_A_NUMBER)
def test_numeric_settings_refuse_non_finite_and_non_integer_values(environ, variable, value):
    assert load_settings({**environ, variable: NUMERIC[variable]})  # the valid value is accepted
    with pytest.raises(ConfigError) as info:
        load_settings({**environ, variable: value})
    assert info.value.variable == variable
    assert str(info.value).startswith(f"{variable}: expected ") and repr(value) in str(info.value)


def test_empty_client_secret_file_is_refused(environ, tmp_path):
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(ConfigError, match="is empty"):
        load_settings({**environ, "OAUTH_CLIENT_SECRET_FILE": str(tmp_path / "empty")})


# each accepted variant, and what it must have set (not only "no exception")
ALLOWED = {
    "groups only": ({"GPUHUB_ALLOWED_USERS": "", "GPUHUB_ALLOWED_GROUPS": "lab"},
                    {"allowed_users": frozenset(), "allowed_groups": {"lab"}, "allow_all": False}),
    "allow all, deliberately": ({"GPUHUB_ALLOWED_USERS": "", "GPUHUB_ALLOW_ALL": "yes"},
                                {"allowed_users": frozenset(), "allow_all": True}),
    "github orgs": ({"GPUHUB_AUTHENTICATOR": "github", "GPUHUB_ALLOWED_GROUPS": "my-org"},
                    {"authenticator": "github", "allowed_groups": {"my-org"}}),
    "loopback listen in demo": ({"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_LISTEN": "::1"},
                                {"authenticator": "demo", "listen": "::1", "admin_users": {"alice"}}),
    # the users' network is only checked here (docker-compose.yml and netpolicy use it): accepted
    # means no ConfigError
    "servers may talk": ({"GPUHUB_SERVER_TO_SERVER": "true"}, {"authenticator": "generic"}),
    "another users' subnet": ({"GPUHUB_USERS_SUBNET": "10.20.0.0/16", "GPUHUB_USERS_IP_RANGE": "10.20.128.0/17",
                               "GPUHUB_USERS_HUB_IP": "10.20.0.10", "GPUHUB_USERS_PROXY_IP": "10.20.0.11"},
                              {"authenticator": "generic"}),
    "port and culler": ({"GPUHUB_HTTPS_PORT": " 8443 ", "GPUHUB_CULL_IDLE_SECONDS": "3600"},
                        {"https_port": 8443, "cull_idle_seconds": 3600}),
}


@pytest.mark.parametrize("change, expected", ALLOWED.values(), ids=ALLOWED.keys())
def test_accepted_variants(environ, change, expected):
    s = load_settings({**environ, **change})
    assert {name: getattr(s, name) for name in expected} == expected
