# The reference configuration for gpuhub's benchmarks: jupyterhub-deploy-docker's basic example
# (DockerSpawner, SQLite in /data, the hub reached by its service name) with its
# NativeAuthenticator swapped for GenericOAuthenticator against an OIDC mock. Everything not
# set here is JupyterHub's, DockerSpawner's and OAuthenticator's default: configurable-http-proxy
# started by the hub, Spawner.http_timeout/start_timeout, the single-user image's own command.
#
# Changed from the basic example, and why:
#   - image gpuhub-ref/singleuser (singleuser.Dockerfile here: JupyterLab and the single-user
#     server at gpuhub's versions, pip's defaults), home mounted at /home/jovyan like gpuhub's;
#   - container and volume names prefixed gpuhub-ref- (shared machine: ours are recognisable);
#   - login by GenericOAuthenticator + allow_all (the example's NativeAuthenticator needs a
#     sign-up per user; a login burst needs an OIDC provider like gpuhub's);
#   - a "bench" service whose API token (read from a file, a compose secret) has the admin role,
#     so that benchmarks can create users, start servers and reach them through the proxy;
#   - DockerSpawner.debug (True in the example) left at its default False: debug logging in
#     every single-user server is a debugging aid, not what gpuhub is compared with.
import os
from pathlib import Path

c = get_config()  # noqa: F821

c.JupyterHub.spawner_class = "dockerspawner.DockerSpawner"
c.DockerSpawner.image = os.environ["DOCKER_NOTEBOOK_IMAGE"]
c.DockerSpawner.use_internal_ip = True
c.DockerSpawner.network_name = os.environ["DOCKER_NETWORK_NAME"]
c.DockerSpawner.prefix = "gpuhub-ref"  # containers gpuhub-ref-<user>
notebook_dir = os.environ.get("DOCKER_NOTEBOOK_DIR", "/home/jovyan")
c.DockerSpawner.notebook_dir = notebook_dir
c.DockerSpawner.volumes = {"gpuhub-ref-home-{username}": notebook_dir}
c.DockerSpawner.remove = True

c.JupyterHub.hub_ip = "hub"
c.JupyterHub.hub_port = 8080
c.JupyterHub.cookie_secret_file = "/data/jupyterhub_cookie_secret"
c.JupyterHub.db_url = "sqlite:////data/jupyterhub.sqlite"

c.JupyterHub.authenticator_class = "generic-oauth"
c.GenericOAuthenticator.client_id = os.environ["OAUTH_CLIENT_ID"]
c.GenericOAuthenticator.client_secret = os.environ["OAUTH_CLIENT_SECRET"]
c.GenericOAuthenticator.oauth_callback_url = os.environ["OAUTH_CALLBACK_URL"]
c.GenericOAuthenticator.authorize_url = os.environ["OIDC_AUTHORIZE_URL"]
c.GenericOAuthenticator.token_url = os.environ["OIDC_TOKEN_URL"]
c.GenericOAuthenticator.userdata_url = os.environ["OIDC_USERINFO_URL"]
c.GenericOAuthenticator.username_claim = "sub"
c.GenericOAuthenticator.scope = ["openid"]
c.Authenticator.allow_all = True

c.JupyterHub.services = [{"name": "bench", "api_token": Path("/run/secrets/api_token").read_text().strip()}]
c.JupyterHub.load_roles = [{"name": "admin", "services": ["bench"]}]
