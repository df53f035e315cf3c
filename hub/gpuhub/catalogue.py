"""The operator's catalogue of every variable gpuhub reads: config/gpuhub.env.example and the
README's configuration table are generated from it, and a fast test (tests/fast/test_catalogue.py)
checks that they, the compose file and the settings modules agree with it.

What a variable means to the services that parse it (name, parser, default) is declared once in
gpuhub/settings.py or gpu_monitor/gpu_monitor/settings.py; what it means to the operator (why set it, who
reads it, its default in words) is written here, once. Variables that docker-compose.yml fixes
are listed with the default of their declaration, so the example file cannot drift from it.

    python -m gpuhub.catalogue env-example > config/gpuhub.env.example
    python -m gpuhub.catalogue readme-table   # the table under README.md "## Configuration"
"""

from __future__ import annotations

import re
import sys
import textwrap
from dataclasses import dataclass

from gpu_monitor import settings as monitor_settings
from gpu_monitor.env import Setting

from . import providers as P
from . import settings as hub_settings

RULE = "# " + "-" * 93


@dataclass(frozen=True)
class Entry:
    """Variables documented together: one comment, then `NAME=` for each."""

    variables: list[str]
    help: tuple[str, ...]  # the comment's lines, the last saying: who reads it · default · required?
    gap: bool = True  # a blank line after it


@dataclass(frozen=True)
class Section:
    title: str
    entries: list[Entry]


@dataclass(frozen=True)
class Fixed:
    """A variable docker-compose.yml sets for a service: its value is the declaration's default."""

    setting: Setting
    readers: str
    note: str
    compose_value: str | None = None  # what docker-compose.yml sets, where not the default

    @property
    def value(self) -> str:
        return self.compose_value if self.compose_value is not None else str(self.setting.default)


@dataclass(frozen=True)
class Row:
    """A line of the README's table (Markdown): what is set, its default, what it does."""

    what: str
    default: str
    text: str

    @property
    def variables(self) -> list[str]:
        return re.findall(r"`([A-Z][A-Z0-9_]+)`", self.what)


def group_meanings() -> list[str]:
    """What GPUHUB_ALLOWED_GROUPS means for each provider, from the provider records."""
    meanings = [f"{name}: {p.group_meaning}" if p.groups else f"{name}: not supported (list users instead)"
                for name, p in P.PROVIDERS.items()]
    return textwrap.wrap("GPUHUB_ALLOWED_GROUPS means: " + "; ".join(meanings) + ".", 95)


PREAMBLE = '# gpuhub configuration. Copy this file to `.env` next to docker-compose.yml and edit it;\n# Docker Compose reads `.env` and passes each value to the services named below.\n# An empty value means "not set". With no `.env` at all the stack starts in a local demo\n# mode (bundled test login, https://localhost only), which is safe but not for real use.\n#\n# Format of each entry:  who reads it · default · required?\n# Secrets are never put here: they live in files under ./secrets/ (mode 600), see below.\n'
SECTIONS = [
    Section('Where the hub is reached', [
        Entry(['DOMAIN'],
              ("Public DNS name of the hub. With ACME_EMAIL also set, Traefik obtains a Let's Encrypt",
               'certificate for it (ports 80 and 443 must be reachable from the internet).',
               'proxy, hub, init · default: localhost (self-signed certificate) · optional'),
              gap=True),
        Entry(['ACME_EMAIL'],
              ("E-mail address for Let's Encrypt (expiry notices). Set both DOMAIN and ACME_EMAIL, or neither.",
               'proxy · default: none · required with DOMAIN'),
              gap=True),
        Entry(['ACME_CA_SERVER'],
              ("ACME directory URL. Use Let's Encrypt's staging directory while testing a new setup:",
               'https://acme-staging-v02.api.letsencrypt.org/directory',
               'proxy · default: https://acme-v02.api.letsencrypt.org/directory · optional'),
              gap=True),
        Entry(['LEGO_CA_CERTIFICATES'],
              ('Extra CA certificates (a file path inside the proxy container) Traefik trusts when talking to',
               "the ACME server: only for a private ACME CA (the tests use Let's Encrypt's pebble).",
               'proxy · default: none · optional'),
              gap=True),
        Entry(['GPUHUB_USER_SUBDOMAINS'],
              ("Per-user subdomains: every user's server on a host of its own (alice.user.localhost, or",
               "alice.<DOMAIN>), so that a page a user serves never runs in the hub's origin; the hub and the",
               'GPU monitor stay on the main host. Without DOMAIN it needs nothing more (browsers resolve',
               '*.localhost to this machine; the local certificate names *.user.localhost). With DOMAIN it',
               "needs a wildcard DNS record *.<DOMAIN> and a wildcard certificate, which Let's Encrypt issues",
               'only over DNS-01: set ACME_DNS_PROVIDER too, or the init service refuses to start.',
               'hub, init, proxy · default: true without DOMAIN, false with DOMAIN · optional'),
              gap=True),
        Entry(['ACME_DNS_PROVIDER'],
              ("Let's Encrypt's DNS-01 challenge instead of HTTP-01: the DNS provider's name as Traefik",
               '(lego) knows it, e.g. cloudflare, route53, gandiv5, ovh, rfc2136, httpreq, exec',
               '(https://go-acme.github.io/lego/dns/). Needed for GPUHUB_USER_SUBDOMAINS with DOMAIN, and for',
               'hosts whose port 80 is closed.',
               'proxy, hub, init · default: none (HTTP-01) · optional'),
              gap=True),
        Entry(['ACME_DNS_ENV', 'ACME_DNS_SECRETS'],
              ("The provider's settings, as an env file (config/acme-dns.env.example): credentials named as",
               '<VAR>_FILE=/run/gpuhub/acme-dns/<file>, the files themselves in ACME_DNS_SECRETS (chmod 600),',
               'so that no credential shows in `docker inspect`.',
               'compose (proxy) · defaults: ./config/acme-dns.env (if it exists), ./secrets/acme-dns · optional'),
              gap=True),
        Entry(['ACME_DNS_RESOLVERS', 'ACME_DNS_PROPAGATION_CHECKS'],
              ("DNS servers Traefik asks to see the challenge record before telling Let's Encrypt (host:port,",
               'comma separated), e.g. 1.1.1.1:53 where the local resolver hides the public zone; and false',
               "to skip that check (a DNS server lego cannot query; the tests' DNS server).",
               "proxy · defaults: the system's resolvers, true · optional"),
              gap=True),
        Entry(['GPUHUB_LISTEN'],
              ("Host address the proxy's ports are bound to. 127.0.0.1 keeps the hub private to this",
               'machine (required by the demo login); 0.0.0.0 serves every interface.',
               'compose (ports), hub · default: 127.0.0.1 · optional'),
              gap=True),
        Entry(['GPUHUB_HTTPS_PORT', 'GPUHUB_HTTP_PORT'],
              ('Host ports for HTTPS and for HTTP (which only redirects to HTTPS and answers ACME challenges).',
               'compose (ports), hub (GPUHUB_HTTPS_PORT builds the public URL) · defaults: 443 and 80 · optional'),
              gap=True),
    ]),
    Section('Login (OAuthenticator)', [
        Entry(['GPUHUB_AUTHENTICATOR'],
              ('Which provider people log in with: demo, generic (any OpenID Connect provider: Keycloak,',
               'Authentik, Okta, Dex, ...), github, gitlab, google, azuread. Anything but demo switches the',
               'demo provider off.',
               'hub, init, demo-oidc · default: demo · optional'),
              gap=True),
        Entry(['OAUTH_CLIENT_ID'],
              ("The OAuth application's client id. Register the callback URL",
               'https://<DOMAIN>/hub/oauth_callback with the provider.',
               'hub · default: none · required unless demo'),
              gap=True),
        Entry(['OAUTH_CLIENT_SECRET_FILE'],
              ('The client secret is read from a file, not from this file: put it in',
               './secrets/oauth_client_secret (chmod 600). OAUTH_CLIENT_SECRET_FILE is its path inside the',
               'hub container; leave the default unless you mount it elsewhere.',
               'hub · default: /run/gpuhub/secrets/oauth_client_secret · required unless demo'),
              gap=True),
        Entry(['OIDC_AUTHORIZE_URL', 'OIDC_TOKEN_URL', 'OIDC_USERINFO_URL'],
              ("generic: the provider's endpoints (see its /.well-known/openid-configuration).",
               'hub · default: none · required for generic'),
              gap=False),
        Entry(['OIDC_USERNAME_CLAIM'],
              ('generic and azuread: the claim that becomes the username. The defaults, sub (generic) and oid',
               '(azuread), are stable and unique; names like preferred_username can change hands or be shared',
               '(README.md, "Usernames"). Hubs set up before sub was the generic default used',
               'preferred_username: set it here to keep their usernames.',
               'hub · defaults: sub (generic), oid (azuread) · optional'),
              gap=False),
        Entry(['OIDC_GROUPS_CLAIM', 'OIDC_SCOPES'],
              ('generic: claim that holds the groups, requested scopes.',
               'hub · defaults: groups, "openid profile email" · optional'),
              gap=True),
        Entry(['GITLAB_URL'],
              ("gitlab: a self-hosted GitLab's URL.  hub · default: https://gitlab.com · optional",),
              gap=False),
        Entry(['AZUREAD_TENANT_ID'],
              ('azuread: your directory (tenant) id.  hub · default: none · required for azuread',),
              gap=True),
        Entry(['GPUHUB_DEMO_PORT'],
              ('Loopback port of the bundled demo login provider (demo mode only; never published beyond',
               '127.0.0.1). compose, hub · default: 9400 · optional'),
              gap=True),
        Entry(['GPUHUB_ALLOWED_USERS', 'GPUHUB_ALLOWED_GROUPS'],
              ('Who may log in, comma-separated. At least one of these must be set for a real provider,',
               'otherwise the hub refuses to start (it never opens to everyone by omission).',
               *group_meanings(),
               'hub · default: none (demo: "demo") · one of them required unless demo'),
              gap=True),
        Entry(['GPUHUB_ALLOW_ALL'],
              ('Admit every account the provider knows (e.g. every GitHub user!). Only if you mean it.',
               'hub · default: false · optional'),
              gap=True),
        Entry(['GPUHUB_ADMIN_USERS'],
              ('Hub administrators, comma-separated user names.  hub · default: none (demo: "demo") · optional',),
              gap=True),
    ]),
    Section('Automation', [
        Entry(['GPUHUB_API_TOKEN_FILE'],
              ('An operator API token with admin rights on the hub REST API (https://<host>/hub/api/) is',
               'read from ./secrets/api_token if that file exists (at least 32 characters, chmod 600), e.g.',
               '    mkdir -p secrets && openssl rand -hex 32 > secrets/api_token && chmod 600 secrets/api_token',
               'Use it as "Authorization: token <value>". GPUHUB_API_TOKEN_FILE is the path inside the hub.',
               'hub · default: /run/gpuhub/secrets/api_token · optional'),
              gap=True),
        Entry(['GPUHUB_OPERATOR_SECRETS'],
              ('The host directory mounted read-only into the hub at /run/gpuhub/secrets, holding the files',
               'you supply: api_token and oauth_client_secret (each chmod 600).',
               'compose · default: ./secrets · optional'),
              gap=True),
    ]),
    Section('Images and profiles', [
        Entry(['GPUHUB_VERSION'],
              ('Tag of the images this stack builds (gpuhub/hub, gpuhub/singleuser-base, ...).',
               'compose · default: latest · optional'),
              gap=True),
        Entry(['GPUHUB_CUDA_MAJOR'],
              ("CUDA major version of the CUDA profile's image: 13 needs a host driver >= 580; choose 12 for",
               'hosts with CUDA 12 drivers (larger image, older PyTorch). compose (build arg) · default: 13'),
              gap=True),
        Entry(['GPUHUB_BASE_IMAGE'],
              ('Base image of every image gpuhub builds.  compose (build arg) · default: debian:bookworm-slim',),
              gap=True),
        Entry(['GPUHUB_BUILD_CA'],
              ('CA bundle (a host file) that image builds use for downloads, as the BuildKit secret "ca": set',
               "it where outbound TLS is re-signed by a local CA and the host's bundle is elsewhere (RHEL:",
               '/etc/pki/tls/certs/ca-bundle.crt). compose · default: /etc/ssl/certs/ca-certificates.crt'),
              gap=True),
        Entry(['GPUHUB_PROFILES_FILE'],
              ('The profile file, inside the hub container (./config is mounted at /srv/gpuhub/config).',
               'hub, init · default: /srv/gpuhub/config/profiles.yaml · optional'),
              gap=True),
        Entry(['GPUHUB_USER_NETWORK'],
              ('Docker network the single-user containers join (created by compose under this name).',
               'compose, hub · default: gpuhub-users · optional'),
              gap=True),
        Entry(['GPUHUB_DEPLOYMENT'],
              ('Name of this deployment, put on every user container as the label org.gpuhub.deployment: the',
               'GPU monitor reconciles and counts only containers of its own deployment, so two gpuhub stacks',
               "on one Docker daemon do not take each other's containers for their own. It also names user",
               'servers (<deployment>-<user>) and home volumes (<deployment>-home-<user>): changing it later',
               'gives everyone a new, empty home (copy the old volumes over, README "Backup and restore"). Lowercase letters,',
               "digits, '-' and '_'. Checked by init. The Compose project name is Compose's own setting",
               "(COMPOSE_PROJECT_NAME or `docker compose -p`; gpuhub by this file's top-level `name`).",
               'compose, hub, init, gpu-monitor · default: the Compose project name · optional'),
              gap=True),
        Entry(['GPUHUB_USERS_SUBNET', 'GPUHUB_USERS_IP_RANGE', 'GPUHUB_USERS_HUB_IP', 'GPUHUB_USERS_PROXY_IP'],
              ('Addresses of that network. Servers get theirs from GPUHUB_USERS_IP_RANGE; the hub and the proxy',
               'have fixed ones outside it, which the network policy (service netpolicy) lets talk with servers',
               "while servers cannot open connections to one another. The default lies outside Docker's own",
               'default address pools (172.17-31.x.x, 192.168.x.x), so networks Docker numbers itself never',
               'take it. Change them together where it is used on the host or your LAN (compose refuses',
               'overlapping subnets). Checked',
               'by init. compose, netpolicy, init · defaults: 10.213.240.0/20, 10.213.248.0/21, 10.213.240.2,',
               '10.213.240.3 · optional'),
              gap=True),
        Entry(['GPUHUB_SERVER_TO_SERVER'],
              ("true lets user servers connect to one another directly (Docker's inter-container traffic on,",
               'no rules set): only where Docker does not manage iptables (rootless Docker, "iptables": false,',
               'its nftables backend) and the netpolicy service stops saying so. Servers still refuse requests',
               "without their owner's credentials. compose, netpolicy, init · default: false · optional"),
              gap=True),
    ]),
    Section('GPU monitor (service gpu-monitor; see docs/monitor.md)', [
        Entry(['GPUHUB_MONITOR_BACKEND'],
              ('Where devices come from: nvml (NVIDIA GPUs and MIG instances; add docker-compose.gpu.yml),',
               'cpu-slices (disjoint core sets as PoCL devices), or auto (NVML if a driver answers, else CPU',
               'slices). With nvml and no driver the monitor stops with a line saying what to install.',
               'gpu-monitor · default: auto · optional'),
              gap=True),
        Entry(['GPUHUB_CPU_SLICES'],
              ("How many disjoint slices of the host's cores to hand out when there is no GPU (at most the",
               'number of CPUs; leftover cores stay unused). gpu-monitor · default: 2 · optional'),
              gap=True),
        Entry(['GPUHUB_NODE_NAME'],
              ("This host's name among the nodes whose devices the monitor hands out (letters, digits, . _ -).",
               'One host is one node, named local; renaming it strands the allocations held under the old name',
               'until their servers stop. gpu-monitor · default: local · optional'),
              gap=True),
        Entry(['GPUHUB_NODE_TIMEOUT_SECONDS'],
              ("A node whose agent has not reported for this long is lost: its devices are offered to no one until",
               'it reports again (agents report every GPUHUB_MONITOR_SAMPLE_SECONDS; at least twice that).',
               'gpu-monitor · default: 30 · optional'),
              gap=True),
        Entry(['GPUHUB_SWARM'],
              ("true on a Docker Swarm (docs/scale-out.md): the hub starts each server as a Swarm service on the",
               "node of its devices, and the monitor reads Swarm's node list (through its filtered Docker API) so",
               'that a drained node gets no new servers, a node Swarm reports down is lost, and a ready node',
               'without a monitor agent says so. hub, gpu-monitor · default: false · optional'),
              gap=True),
        Entry(['GPUHUB_NODE_LABELS'],
              ('What kind of node this host is, for profiles that ask for one (node_labels in profiles.yaml):',
               'comma-separated labels, e.g. gpu=a100,large-memory (a label without = has the value "").',
               'gpu-monitor · default: none · optional'),
              gap=True),
        Entry(['GPUHUB_POLICY'],
              ('The GPU policy file on the host: limits per person, profile and group, sharing per device',
               'kind, idle reclaim (documented in the file). compose · default: ./config/gpu-policy.yaml'),
              gap=True),
        Entry(['GPUHUB_MONITOR_FLUSH_SECONDS'],
              ('Seconds between writes of usage (per allocation, per hour) and device history (per minute)',
               'to PostgreSQL: at most this much is lost if the monitor dies. gpu-monitor · default: 60'),
              gap=True),
        Entry(['GPUHUB_MONITOR_RECONCILE_SECONDS', 'GPUHUB_MONITOR_GRACE_SECONDS'],
              ('Seconds between reconciliations with Docker and the hub, and how old an allocation without a',
               "running container must be before it is freed (the hub's own poll, every 30 s, usually frees it",
               'first). gpu-monitor · defaults: 60 and 120 · optional'),
              gap=True),
        Entry(['GPUHUB_CULL_IDLE_SECONDS'],
              ('Stop servers with no activity for this many seconds (jupyterhub-idle-culler, run by the hub;',
               'activity = browser or API traffic to the server, kernels running). 0 or empty: off. Devices of a',
               'stopped server are released. See also idle_reclaim in the policy file (idle GPUs, not idle',
               'people). hub · default: off · optional'),
              gap=True),
        Entry(['GPUHUB_START_CONCURRENCY'],
              ('How many servers may be starting at once (container created until it answers HTTP); the others',
               'wait their turn, in order, with a message on the spawn page, and hold no device while they',
               "wait. The wait counts against the hub's 300 s start timeout. 0: no limit. hub · default: 2 per",
               'CPU (measured best for a burst of logins, docs/BENCHMARKS.md) · optional'),
              gap=True),
        Entry(['GPUHUB_MONITOR_SAMPLE_SECONDS'],
              ('Seconds between device samples (NVML in-process, or /proc/stat). gpu-monitor · default: 5',),
              gap=True),
    ]),
    Section('Several hosts: gpuhub on a Docker Swarm (bin/swarm-deploy, docs/scale-out.md)', [
        Entry(['GPUHUB_REGISTRY'],
              ('The registry every node pulls gpuhub\'s images from (host:port); `bin/swarm-deploy --push`',
               'pushes them there. Required on a swarm; profiles.yaml names the single-user images by it too.',
               'swarm · default: none'),
              gap=True),
        Entry(['GPUHUB_PUBLIC_REGISTRY'],
              ("Where the nodes pull PostgreSQL's and Traefik's images from (a mirror, for nodes without",
               'Docker Hub). swarm · default: docker.io/library · optional'),
              gap=True),
        Entry(['GPUHUB_DOCKER_SOCKET'],
              ("The manager's Docker socket, given to the hub (which creates the servers' services) and to",
               "the monitor's filtered Docker API. swarm · default: /var/run/docker.sock · optional"),
              gap=True),
        Entry(['GPUHUB_DOCKER_NETNS_DIR'],
              ("Each node's directory of Docker's network namespaces (its exec root's netns), given",
               "read-only to the netpolicy task on that node, which keeps servers on the users' overlay",
               'from one another there. Swarm templates such as {{.Node.Hostname}} are allowed.',
               'swarm · default: /var/run/docker/netns · optional'),
              gap=True),
    ]),
    Section('Memory limits', [
        Entry(['GPUHUB_HUB_MEM_LIMIT', 'GPUHUB_DB_MEM_LIMIT', 'GPUHUB_MONITOR_MEM_LIMIT', 'GPUHUB_PROXY_MEM_LIMIT'],
              ("Memory limits of the long-running services (Docker's units: 512m, 1g, ...); a service that",
               'reaches its limit is killed and restarted by Docker. Measured idle with 20 servers: hub',
               '112 MiB (186 MiB at most in a burst of 100 logins), PostgreSQL 42, monitor 88, proxy 23 MiB',
               '(docs/BENCHMARKS.md); raise them for hundreds of people. The small services (netpolicy,',
               'monitor-docker, demo-oidc) have fixed limits in docker-compose.yml.',
               'compose · defaults: 1g, 1g, 512m, 512m · optional'),
              gap=True),
    ]),
]


README_TABLE = [
    Row('`GPUHUB_AUTHENTICATOR`',
        '`demo`',
        '`generic` (any OIDC provider), `github`, `gitlab`, `google`, `azuread`, or `demo`'),
    Row('`OAUTH_CLIENT_ID`',
        '–',
        "the OAuth app's client id (required unless demo)"),
    Row('`secrets/oauth_client_secret`',
        '–',
        'file with the client secret, chmod 600 (required unless demo; path: `OAUTH_CLIENT_SECRET_FILE`)'),
    Row('`OIDC_AUTHORIZE_URL`, `OIDC_TOKEN_URL`, `OIDC_USERINFO_URL`',
        '–',
        "`generic`: the provider's endpoints (required)"),
    Row('`OIDC_USERNAME_CLAIM`',
        '`sub` (generic), `oid` (azuread)',
        '`generic`, `azuread`: the claim that becomes the username ([Usernames](#usernames))'),
    Row('`OIDC_GROUPS_CLAIM`, `OIDC_SCOPES`',
        '`groups`, `openid profile email`',
        '`generic`: claims and scopes'),
    Row('`GITLAB_URL`',
        '`https://gitlab.com`',
        '`gitlab`: a self-hosted GitLab'),
    Row('`AZUREAD_TENANT_ID`',
        '–',
        '`azuread`: the directory id (required)'),
    Row('`GPUHUB_ALLOWED_USERS`, `GPUHUB_ALLOWED_GROUPS`',
        '–',
        'who may log in; at least one is required for a real provider'),
    Row('`GPUHUB_ALLOW_ALL`',
        '`false`',
        'admit every account the provider knows, deliberately'),
    Row('`GPUHUB_ADMIN_USERS`',
        '– (demo: `demo`)',
        'hub administrators'),
    Row('`DOMAIN`, `ACME_EMAIL`',
        '–',
        "public name and Let's Encrypt contact; set both or neither"),
    Row('`ACME_CA_SERVER`',
        "Let's Encrypt production",
        "e.g. Let's Encrypt staging while you test"),
    Row('`GPUHUB_USER_SUBDOMAINS`',
        '`true` without `DOMAIN`, `false` with it',
        "every user's server on a host of its own (below)"),
    Row('`ACME_DNS_PROVIDER`, `ACME_DNS_ENV`, `ACME_DNS_SECRETS`',
        '–, `./config/acme-dns.env`, `./secrets/acme-dns`',
        "Let's Encrypt over DNS-01 (needed for the wildcard): the provider, its settings, its credential files"),
    Row('`ACME_DNS_RESOLVERS`, `ACME_DNS_PROPAGATION_CHECKS`',
        'system resolvers, `true`',
        'where Traefik checks the challenge record before asking for validation; `false` skips the check'),
    Row('`GPUHUB_LISTEN`',
        '`127.0.0.1`',
        'host address of the published ports; `0.0.0.0` for a public hub'),
    Row('`GPUHUB_HTTPS_PORT`, `GPUHUB_HTTP_PORT`',
        '`443`, `80`',
        'host ports'),
    Row('`GPUHUB_DEMO_PORT`',
        '`9400`',
        'loopback port of the demo provider'),
    Row('`GPUHUB_OPERATOR_SECRETS`',
        '`./secrets`',
        'host directory with `api_token` and `oauth_client_secret`'),
    Row('`GPUHUB_API_TOKEN_FILE`',
        '`/run/gpuhub/secrets/api_token`',
        "the operator token's path inside the hub"),
    Row('`GPUHUB_PROFILES_FILE`',
        '`/srv/gpuhub/config/profiles.yaml`',
        'image profiles (`config/profiles.yaml`)'),
    Row('`GPUHUB_USER_NETWORK`',
        '`gpuhub-users`',
        'the Docker network of user servers'),
    Row('`GPUHUB_DEPLOYMENT`',
        "the Compose project's name (`gpuhub`)",
        "names user servers `<deployment>-<user>` and home volumes `<deployment>-home-<user>`, and labels every user container `org.gpuhub.deployment`; the GPU monitor counts only its own deployment's containers, so stacks sharing a Docker daemon keep apart. Changing it later gives everyone a new, empty home volume (copy the old ones over, as in [Backup and restore](#backup-and-restore))"),
    Row('`GPUHUB_USERS_SUBNET`, `GPUHUB_USERS_IP_RANGE`, `GPUHUB_USERS_HUB_IP`, `GPUHUB_USERS_PROXY_IP`',
        '`10.213.240.0/20`, `10.213.248.0/21`, `.2`, `.3` of the subnet',
        "that network's addresses: servers get theirs from the range; the hub and proxy have fixed ones the network policy lets talk with servers (change them together if the subnet is taken)"),
    Row('`GPUHUB_SERVER_TO_SERVER`',
        '`false`',
        '`true` lets servers connect to one another (only where Docker does not manage iptables)'),
    Row('`GPUHUB_VERSION`, `GPUHUB_BASE_IMAGE`',
        '`latest`, `debian:bookworm-slim`',
        'tag and base of the images built here'),
    Row('`GPUHUB_CUDA_MAJOR`',
        '`13`',
        "CUDA of the CUDA profile's image: 13 (driver ≥ 580) or 12"),
    Row('`GPUHUB_BUILD_CA`',
        '`/etc/ssl/certs/ca-certificates.crt`',
        'CA bundle image builds use for downloads (see below)'),
    Row('`GPUHUB_MONITOR_BACKEND`',
        '`auto`',
        '`nvml`, `cpu-slices`, or `auto` (NVML if a driver answers, else CPU slices)'),
    Row('`GPUHUB_CPU_SLICES`',
        '`2`',
        'how many disjoint core sets to hand out where there is no GPU'),
    Row('`GPUHUB_NODE_NAME`, `GPUHUB_NODE_TIMEOUT_SECONDS`',
        '`local`, `30`',
        "this host's node name; how long a node's agent may stay silent before its devices are offered to no one"),
    Row('`GPUHUB_SWARM`',
        '`false`',
        "on a Docker Swarm: servers as services on their devices' node; node states (drained, down, no agent) from Swarm's node list"),
    Row('`GPUHUB_REGISTRY`',
        'none',
        'on a swarm: the registry every node pulls gpuhub\'s images from (required there)'),
    Row('`GPUHUB_PUBLIC_REGISTRY`, `GPUHUB_DOCKER_SOCKET`',
        '`docker.io/library`, `/var/run/docker.sock`',
        "on a swarm: where nodes pull PostgreSQL and Traefik from; the manager's Docker socket"),
    Row('`GPUHUB_DOCKER_NETNS_DIR`',
        '`/var/run/docker/netns`',
        "on a swarm: each node's Docker network namespaces, where netpolicy keeps servers on the overlay apart"),
    Row('`GPUHUB_NODE_LABELS`',
        'none',
        "what kind of node this host is (`gpu=a100,large-memory`), for profiles' `node_labels`"),
    Row('`GPUHUB_POLICY`',
        '`./config/gpu-policy.yaml`',
        'the GPU policy: limits per person, profile and group; exclusive or shared devices; idle reclaim'),
    Row('`GPUHUB_MONITOR_RECONCILE_SECONDS`, `GPUHUB_MONITOR_GRACE_SECONDS`',
        '`60`, `120`',
        'how often the monitor compares allocations with Docker, and how old an allocation without a container must be before it is freed'),
    Row('`GPUHUB_MONITOR_SAMPLE_SECONDS`',
        '`5`',
        'device sampling interval'),
    Row('`GPUHUB_MONITOR_FLUSH_SECONDS`',
        '`60`',
        'how often usage and device history are written to PostgreSQL'),
    Row('`GPUHUB_CULL_IDLE_SECONDS`',
        '– (off)',
        'stop servers without activity for this long (jupyterhub-idle-culler)'),
    Row('`GPUHUB_START_CONCURRENCY`',
        '2 per CPU',
        'servers starting at once; the others wait in order, holding no device (0: no limit)'),
]

H, M = hub_settings, monitor_settings
FIXED_TITLE = ("Set by docker-compose.yml for the services; listed so that every variable is documented.\n"
               "Change them only if you change the compose file to match.")
FIXED = [
    Fixed(H.SECRETS_DIR, "hub, init", "generated secrets (volume hub-secrets)"),
    Fixed(H.CERTS_DIR, "init", "the local certificate (volume certs)"),
    Fixed(M.DB_HOST, "hub, init, gpu-monitor", "the database's host"),
    Fixed(H.DB_NAME, "hub, init", "the database"),
    Fixed(H.DB_USER, "hub, init", "the database user"),
    Fixed(M.DB_PASSWORD_FILE, "hub, init, gpu-monitor, db", "generated (volume db-password)"),
    Fixed(H.PROXY_API_URL, "hub", "Traefik's API entrypoint (bound to the edge network only)"),
    Fixed(H.TRAEFIK_RULES_FILE, "hub", "routes file Traefik watches"),
    Fixed(P.DEMO_OIDC_URL, "hub", "the demo provider, as the hub reaches it"),
    Fixed(P.DEMO_OIDC_PUBLIC_URL, "hub", "the demo provider, as a browser reaches it",
          "http://localhost:${GPUHUB_DEMO_PORT:-9400}"),
    Fixed(H.MONITOR_URL, "hub", "the monitor's API"),
    Fixed(H.FORM_TEMPLATES_DIR, "hub", "config/templates/: a site's options_form.html, searched before gpuhub's"),
    Fixed(H.MONITOR_SECRETS_DIR, "hub, init", "the monitor's token (volume monitor-secrets)"),
    Fixed(M.TOKEN_FILE, "gpu-monitor", "its own API token"),
    Fixed(M.HUB_API_URL, "gpu-monitor", "the hub's REST API"),
    Fixed(M.DOCKER_URL, "gpu-monitor", "the Docker API: monitor-docker, which filters it", "tcp://monitor-docker:2375"),
    Fixed(M.POLICY_FILE, "hub, init, gpu-monitor", "where $GPUHUB_POLICY is mounted"),
]
# Compose's own; documented so that every variable the compose file reads is
COMPOSE_OWN = {"COMPOSE_PROJECT_NAME": "the project name (`name:` or `-p`), set by Compose (default gpuhub)"}


def documented() -> set[str]:
    """Every variable the catalogue documents."""
    names = {v for section in SECTIONS for entry in section.entries for v in entry.variables}
    return names | {f.setting.name for f in FIXED} | set(COMPOSE_OWN)


def declared() -> dict[str, Setting]:
    """Every variable a Python service parses, by name (one declaration each)."""
    found: dict[str, Setting] = {}
    for s in (*hub_settings.SETTINGS, *monitor_settings.SETTINGS):
        if found.setdefault(s.name, s) is not s:
            raise AssertionError(f"{s.name} is declared twice")
    return found


def env_example() -> str:
    out = [PREAMBLE]
    for section in SECTIONS:
        out += [RULE, *(f"# {line}" for line in section.title.split("\n")), RULE, ""]
        for entry in section.entries:
            out += [f"# {line}" if line else "#" for line in entry.help]
            out += [f"{v}=" for v in entry.variables]
            if entry.gap:
                out.append("")
    out += [RULE, *(f"# {line}" for line in FIXED_TITLE.split("\n")), RULE]
    width = max(len(f"{f.setting.name}={f.value}") for f in FIXED)
    for name, note in COMPOSE_OWN.items():
        out.append(f"# {name:<{width}}  compose: {note}")
    for f in FIXED:
        out.append(f"# {f'{f.setting.name}={f.value}':<{width}}  {f.readers}: {f.note}")
    return "\n".join(out) + "\n"


def readme_table() -> str:
    lines = ["| variable | default | what it does |", "| --- | --- | --- |"]
    lines += [f"| {r.what} | {r.default} | {r.text} |" for r in README_TABLE]
    return "\n".join(lines) + "\n"


def main(argv: list[str]) -> int:
    what = {"env-example": env_example, "readme-table": readme_table}
    if len(argv) != 1 or argv[0] not in what:
        print(f"usage: python -m gpuhub.catalogue {{{'|'.join(what)}}}", file=sys.stderr)
        return 2
    sys.stdout.write(what[argv[0]]())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
