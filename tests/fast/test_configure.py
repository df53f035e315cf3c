"""The assembled JupyterHub configuration, checked on an empty traitlets Config (as TLJH does)."""

import os

import pytest
from traitlets.config import Config

from gpu_monitor.contract import SCOPE_ALLOCATE, SCOPE_READ_ALL
from gpu_monitor.contract import SERVICE_NAME as MONITOR_SERVICE
from gpuhub.auth import authenticator_config, mutable_username_warning
from gpuhub.configure import ALLOCATOR_SERVICE, DEMO_NOTICE, OPERATOR_SERVICE, configure
from gpuhub.settings import ConfigError, load_settings


def configured(environ) -> Config:
    c = Config()
    configure(c, load_settings(environ))
    return c


def test_hub_keeps_servers_and_uses_traefik_and_postgres(environ):
    c = configured(environ)
    assert c.JupyterHub.cleanup_servers is False
    assert c.JupyterHub.proxy_class == "gpuhub.proxy.TraefikFileProxy"  # traefik_file, gpuhub.proxy
    assert c.TraefikFileProviderProxy.should_start is False
    assert c.TraefikFileProviderProxy.traefik_api_password == "ab" * 32
    assert c.JupyterHub.db_url.startswith("postgresql+psycopg2://jupyterhub@db:5432/jupyterhub?passfile=")
    # the password is read by libpq from the pgpass file, never put in the URL JupyterHub logs
    assert "dbpass" not in c.JupyterHub.db_url
    assert c.JupyterHub.upgrade_db is True
    assert c.CryptKeeper["keys"] == [bytes.fromhex("ab" * 32)]
    assert c.JupyterHub.spawner_class == "gpuhub.spawner.GPUDockerSpawner"
    assert c.DockerSpawner.network_name == "gpuhub-users"
    assert c.DockerSpawner.volumes == {"gpuhub-home-{username}": "/home/jovyan"}
    assert c.DockerSpawner.prefix == "gpuhub"  # servers gpuhub-<user>
    # names resolved afresh by the hub's HTTP client (a replaced task's new address: gpu_monitor.dns)
    assert type(c.JupyterHubHTTPClient.connector_options["resolver"]).__name__ == "SystemResolver"


def test_servers_and_homes_are_named_after_the_deployment(environ):
    """Two stacks on one daemon (a test stack beside a production hub) share no container and
    no home volume."""
    c = configured({**environ, "GPUHUB_DEPLOYMENT": "gpuhub-test"})
    assert c.DockerSpawner.prefix == "gpuhub-test"
    assert c.DockerSpawner.volumes == {"gpuhub-test-home-{username}": "/home/jovyan"}
    assert c.GPUDockerSpawner.deployment == "gpuhub-test"


def test_on_a_swarm_servers_are_services_and_each_node_pulls_their_image(environ):
    assert configured(environ).DockerSpawner.pull_policy == "ifnotpresent"
    c = configured({**environ, "GPUHUB_SWARM": "true"})
    assert c.JupyterHub.spawner_class == "gpuhub.swarm_spawner.GPUSwarmSpawner"
    assert c.DockerSpawner.pull_policy == "skip"
    from gpuhub.spawner import GPUDockerSpawner
    from gpuhub.swarm_spawner import GPUSwarmSpawner
    # the GPUDockerSpawner section configures it too (a subclass)
    assert issubclass(GPUSwarmSpawner, GPUDockerSpawner)


def test_generic_oidc_login(environ):
    c = configured(environ)
    assert c.JupyterHub.authenticator_class.__name__ == "GenericOAuthenticator"
    auth = c.GenericOAuthenticator
    assert auth.allowed_users == {"alice", "bob"}
    assert auth.admin_users == {"alice"}
    assert auth.allow_all is False
    assert auth.oauth_callback_url == "https://localhost/hub/oauth_callback"
    assert auth.token_url == "https://id.example.org/token"
    assert "template_vars" not in c.JupyterHub


def test_demo_mode_shows_a_notice_and_admits_only_the_demo_user(environ):
    c = configured({k: v for k, v in environ.items() if k != "GPUHUB_AUTHENTICATOR"} |
                   {"GPUHUB_ALLOWED_USERS": "", "GPUHUB_ADMIN_USERS": ""})
    assert c.JupyterHub.template_vars["announcement"] == DEMO_NOTICE
    assert c.GenericOAuthenticator.allowed_users == {"demo"}
    assert c.GenericOAuthenticator.allow_all is False


PROVIDERS = {
    "github": ({"GPUHUB_AUTHENTICATOR": "github", "GPUHUB_ALLOWED_GROUPS": "lab-org"},
               "GitHubOAuthenticator", {"allowed_organizations": {"lab-org"}}),
    "gitlab": ({"GPUHUB_AUTHENTICATOR": "gitlab", "GITLAB_URL": "https://git.example.org", "GPUHUB_ALLOWED_GROUPS": "lab"},
               "GitLabOAuthenticator", {"gitlab_url": "https://git.example.org", "allowed_gitlab_groups": {"lab"}}),
    "google": ({"GPUHUB_AUTHENTICATOR": "google"}, "GoogleOAuthenticator", {"allowed_users": {"alice", "bob"}}),
    "azuread": ({"GPUHUB_AUTHENTICATOR": "azuread", "AZUREAD_TENANT_ID": "t-1", "GPUHUB_ALLOWED_GROUPS": "g1"},
                "AzureAdOAuthenticator", {"tenant_id": "t-1", "allowed_groups": {"g1"}, "manage_groups": True}),
    "generic groups": ({"GPUHUB_ALLOWED_GROUPS": "gpu-users", "OIDC_GROUPS_CLAIM": "roles"},
                       "GenericOAuthenticator", {"allowed_groups": {"gpu-users"}, "auth_state_groups_key": "oauth_user.roles"}),
}


@pytest.mark.parametrize("change, cls, expected", PROVIDERS.values(), ids=PROVIDERS.keys())
def test_each_provider_is_selected_and_configured(environ, change, cls, expected):
    settings = load_settings({**environ, **change})
    klass, traits = authenticator_config(settings)
    assert klass.__name__ == cls
    for name, value in expected.items():
        assert traits[name] == value
    # the traits are real, settable traits of that class: instantiate it with them
    authenticator = klass(**traits)
    for name, value in expected.items():
        assert getattr(authenticator, name) == value
    assert authenticator.allow_all is False
    assert authenticator.enable_auth_state is True and authenticator.refresh_pre_spawn is False


# the claim that becomes the username, per provider, and why (README, "Usernames")
USERNAME_CLAIMS = {
    # OpenID Connect: `sub` is the only claim the specification makes stable and unique
    "generic": ({}, "GenericOAuthenticator", "sub"),
    "generic, claim chosen": ({"OIDC_USERNAME_CLAIM": "preferred_username"}, "GenericOAuthenticator",
                              "preferred_username"),
    # the object id: OAuthenticator's default is `name`, the display name, which two people share
    "azuread": ({"GPUHUB_AUTHENTICATOR": "azuread", "AZUREAD_TENANT_ID": "t-1"}, "AzureAdOAuthenticator", "oid"),
    "azuread, claim chosen": ({"GPUHUB_AUTHENTICATOR": "azuread", "AZUREAD_TENANT_ID": "t-1",
                               "OIDC_USERNAME_CLAIM": "upn"}, "AzureAdOAuthenticator", "upn"),
    "github": ({"GPUHUB_AUTHENTICATOR": "github"}, "GitHubOAuthenticator", "login"),
    "github ignores the OIDC claim": ({"GPUHUB_AUTHENTICATOR": "github", "OIDC_USERNAME_CLAIM": "sub"},
                                      "GitHubOAuthenticator", "login"),
    "gitlab": ({"GPUHUB_AUTHENTICATOR": "gitlab"}, "GitLabOAuthenticator", "username"),
    "google": ({"GPUHUB_AUTHENTICATOR": "google"}, "GoogleOAuthenticator", "email"),
    "demo": ({"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_ALLOWED_USERS": "", "GPUHUB_ADMIN_USERS": ""},
             "GenericOAuthenticator", "sub"),
}


@pytest.mark.parametrize("change, cls, claim", USERNAME_CLAIMS.values(), ids=USERNAME_CLAIMS.keys())
def test_each_provider_takes_the_username_from_its_intended_claim(environ, monkeypatch, change, cls, claim):
    # OAuthenticator's own default follows this variable: gpuhub's choice must not
    monkeypatch.setenv("OAUTH2_USERNAME_KEY", "name")
    c = configured({**environ, **change})
    assert c.JupyterHub.authenticator_class.__name__ == cls
    assert c[cls].username_claim == claim
    authenticator = c.JupyterHub.authenticator_class(config=c)
    assert authenticator.username_claim == claim
    # two people with the same display name get two usernames (with the defaults; the operator
    # who chose preferred_username gets what it gives: here, one for both)
    people = [{"name": "Alex Kim", "email": f"alex.kim{n}@example.org", "preferred_username": "alex",
               "sub": f"sub-{n}", "oid": f"0000000{n}-aaaa-bbbb-cccc-dddddddddddd", "upn": f"alex{n}@example.org",
               "login": f"alexkim{n}", "username": f"alex.kim{n}"} for n in (1, 2)]
    names = {authenticator.user_info_to_username(person) for person in people}
    assert len(names) == (1 if claim == "preferred_username" else 2), names


MUTABLE_WARNINGS = {
    "generic: sub": ({}, None),
    "generic: preferred_username": ({"OIDC_USERNAME_CLAIM": "preferred_username"},
                                    "'preferred_username' claim (GPUHUB_AUTHENTICATOR=generic), which can change hands: "
                                    "GPUHUB_ADMIN_USERS and GPUHUB_ALLOWED_USERS"),
    "azuread: oid": ({"GPUHUB_AUTHENTICATOR": "azuread", "AZUREAD_TENANT_ID": "t-1"}, None),
    "github, allowed users": ({"GPUHUB_AUTHENTICATOR": "github"}, "'login' claim"),
    "gitlab, admins only": ({"GPUHUB_AUTHENTICATOR": "gitlab", "GPUHUB_ALLOWED_USERS": "",
                             "GPUHUB_ALLOWED_GROUPS": "lab"}, "which can change hands: GPUHUB_ADMIN_USERS name"),
    "github, organisations only": ({"GPUHUB_AUTHENTICATOR": "github", "GPUHUB_ALLOWED_USERS": "",
                                    "GPUHUB_ADMIN_USERS": "", "GPUHUB_ALLOWED_GROUPS": "lab"}, None),
    "google": ({"GPUHUB_AUTHENTICATOR": "google"}, "'email' claim"),
    "demo": ({"GPUHUB_AUTHENTICATOR": "demo", "GPUHUB_ALLOWED_USERS": "", "GPUHUB_ADMIN_USERS": ""}, None),
}


@pytest.mark.parametrize("change, words", MUTABLE_WARNINGS.values(), ids=MUTABLE_WARNINGS.keys())
def test_a_mutable_username_claim_with_named_people_is_warned_about(environ, caplog, change, words):
    settings = load_settings({**environ, **change})
    warning = mutable_username_warning(settings)
    assert (warning is None) if words is None else (words in warning), warning
    with caplog.at_level("WARNING", logger="JupyterHub"):
        configure(Config(), settings)
    logged = [r.getMessage() for r in caplog.records if "can change hands" in r.getMessage()]
    assert logged == ([] if words is None else [f"gpuhub: {warning}"])


def test_operator_token_becomes_an_admin_service(environ, tmp_path):
    token = tmp_path / "api_token"
    token.write_text("f" * 64)
    os.chmod(token, 0o600)
    c = configured({**environ, "GPUHUB_API_TOKEN_FILE": str(token)})
    services = {s["name"]: s for s in c.JupyterHub.services}
    assert services[OPERATOR_SERVICE] == {"name": OPERATOR_SERVICE, "api_token": "f" * 64}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["admin"] == {"name": "admin", "services": [OPERATOR_SERVICE]}
    # the operator's token also manages GPU allocations
    assert roles["gpu-monitor-admin"]["services"] == [OPERATOR_SERVICE]


def test_no_operator_token_file_means_no_operator_service(environ):
    c = configured(environ)
    assert OPERATOR_SERVICE not in {s["name"] for s in c.JupyterHub.services}
    assert "admin" not in {r["name"] for r in c.JupyterHub.load_roles}


def test_gpu_monitor_service_and_who_may_allocate(environ):
    c = configured(environ)
    services = {s["name"]: s for s in c.JupyterHub.services}
    monitor = services[MONITOR_SERVICE]
    assert monitor["url"] == "http://gpu-monitor:8000"
    assert monitor["api_token"] == "ef" * 32
    assert monitor["oauth_redirect_uri"] == "/services/gpu-monitor/oauth_callback"
    assert services[ALLOCATOR_SERVICE]["api_token"] == "cd" * 32
    assert c.GPUDockerSpawner.monitor_token == "cd" * 32
    assert c.GPUDockerSpawner.monitor_url == "http://gpu-monitor:8000/services/gpu-monitor/"
    assert set(c.JupyterHub.custom_scopes) == {SCOPE_ALLOCATE, SCOPE_READ_ALL}
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    # users may open the monitor, nothing more; only the spawner's token and admins allocate
    assert roles["user"]["scopes"] == ["self", "access:services!service=gpu-monitor"]
    allocating = {name for name, r in roles.items() if SCOPE_ALLOCATE in r["scopes"]}
    assert allocating == {"gpu-allocator", "gpu-monitor-admin"}
    assert roles["gpu-allocator"]["services"] == [ALLOCATOR_SERVICE]
    assert roles["gpu-monitor-admin"]["users"] == ["alice"]
    # the monitor's own token reads which servers run, and nothing else
    assert roles["gpu-monitor-service"]["scopes"] == ["list:users", "read:servers"]


def test_missing_monitor_token_stops_the_hub_with_the_variable(environ, tmp_path):
    (tmp_path / "monitor-secrets" / "api_token").unlink()
    with pytest.raises(ConfigError, match="GPUHUB_MONITOR_SECRETS_DIR"):
        configured(environ)


@pytest.mark.parametrize("mode, content, words", [
    (0o644, "f" * 64, "readable by others"),
    (0o600, "short", "shorter than 32"),
])
def test_bad_operator_token_files_are_refused(environ, tmp_path, mode, content, words):
    token = tmp_path / "api_token"
    token.write_text(content)
    os.chmod(token, mode)
    with pytest.raises(ConfigError, match=words):
        configured({**environ, "GPUHUB_API_TOKEN_FILE": str(token)})


def test_the_monitor_may_stop_servers_only_when_idle_reclaim_is_on(environ, tmp_path):
    policy = tmp_path / "gpu-policy.yaml"
    policy.write_text("idle_reclaim: {enabled: true}\n")
    roles = {r["name"]: r for r in configured({**environ, "GPUHUB_POLICY_FILE": str(policy)}).JupyterHub.load_roles}
    assert roles["gpu-monitor-service"]["scopes"] == ["list:users", "read:servers", "servers"]
    policy.write_text("idle_reclaim: {enabled: false}\n")
    roles = {r["name"]: r for r in configured({**environ, "GPUHUB_POLICY_FILE": str(policy)}).JupyterHub.load_roles}
    assert roles["gpu-monitor-service"]["scopes"] == ["list:users", "read:servers"]


def test_idle_culler_runs_only_when_asked(environ):
    assert "idle-culler" not in {s["name"] for s in configured(environ).JupyterHub.services}
    c = configured({**environ, "GPUHUB_CULL_IDLE_SECONDS": "3600"})
    culler = {s["name"]: s for s in c.JupyterHub.services}["idle-culler"]
    assert culler["command"][1:] == ["-m", "jupyterhub_idle_culler", "--timeout=3600"]
    roles = {r["name"]: r for r in c.JupyterHub.load_roles}
    assert roles["idle-culler"]["scopes"] == ["list:users", "read:users:activity", "read:servers", "delete:servers"]
    with pytest.raises(ConfigError, match="GPUHUB_CULL_IDLE_SECONDS: expected a whole number"):
        configured({**environ, "GPUHUB_CULL_IDLE_SECONDS": "1h"})



def test_traefik_api_hash_is_cheap_to_check(environ):
    """Traefik checks the API password's bcrypt hash on every route poll of a spawn."""
    import bcrypt

    c = configured(environ)
    hashed = c.TraefikFileProviderProxy.traefik_api_hashed_password
    assert hashed.startswith("$2b$04$")
    assert bcrypt.checkpw(c.TraefikFileProviderProxy.traefik_api_password.encode(), hashed.encode())


def test_servers_start_a_few_at_a_time_and_may_wait_their_turn(environ, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    c = configured(environ)
    assert c.GPUDockerSpawner.start_concurrency == 4
    assert configured({**environ, "GPUHUB_START_CONCURRENCY": "1"}).GPUDockerSpawner.start_concurrency == 1
    assert configured({**environ, "GPUHUB_START_CONCURRENCY": "0"}).GPUDockerSpawner.start_concurrency == 0  # no limit
    # the queue's wait counts against start_timeout (bench/login_burst.py: 100 people within 85 s)
    assert c.Spawner.start_timeout >= 300 and c.Spawner.http_timeout == 60


def test_a_sites_form_template_is_looked_for_in_config_templates(environ, tmp_path):
    c = Config()
    configure(c, load_settings({**environ, "GPUHUB_FORM_TEMPLATES_DIR": str(tmp_path / "templates")}))
    assert c.GPUDockerSpawner.additional_options_form_template_paths == [str(tmp_path / "templates")]
    c = Config()
    configure(c, load_settings(environ))
    assert c.GPUDockerSpawner.additional_options_form_template_paths == ["/srv/gpuhub/config/templates"]
