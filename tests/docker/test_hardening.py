"""Faults the stack must survive and abuse it must refuse (issue "Survive faults, refuse abuse"),
in the real stack. Each prints the figure it measured. Markers: docker, plus reliability or
security."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests
from cryptography import x509

from ..harness.stack import PROJECT, ROOT, USER_NETWORK, remove_home, wait_for
from .helpers import (
    REACH,
    allocations,
    empty_acme_store,
    monitor,
    program,
    recreated,
    user_token,
    write_pebble_config,
)

# the docker tier's own dependencies (tests/requirements.txt): without them `pytest` alone still
# collects the fast tier, and says this module was skipped
schemathesis = pytest.importorskip("schemathesis", reason="tests/requirements.txt is not installed")
hypothesis = pytest.importorskip("hypothesis", reason="tests/requirements.txt is not installed")

pytestmark = pytest.mark.docker

# the generated secrets, as the hub's container sees them (the operator token is the test's own)
SECRET_FILES = ("/srv/gpuhub/secrets/cookie_secret", "/srv/gpuhub/secrets/crypt_key",
                "/srv/gpuhub/secrets/proxy_api_password", "/srv/gpuhub/secrets/gpu_allocator_token",
                "/srv/gpuhub/monitor-secrets/api_token", "/run/gpuhub/db/password")


def project_containers() -> list[str]:
    out = subprocess.run(["docker", "ps", "--filter", f"label=com.docker.compose.project={PROJECT}",
                          "--format", "{{.Names}}"], capture_output=True, text=True, check=True).stdout
    return out.split()


def logs(container: str) -> str:
    out = subprocess.run(["docker", "logs", container], capture_output=True, text=True)
    return out.stdout + out.stderr


def command_lines(container: str) -> str:
    """Every process's command line in the container, read from the host (`docker top`), so it
    works whatever the image ships."""
    return subprocess.run(["docker", "top", container, "-o", "pid,args"], capture_output=True, text=True,
                          check=True).stdout


@pytest.mark.security
def test_no_secret_in_any_command_line_environment_or_log(stack):
    secrets = {path: stack.compose("exec", "-T", "hub", "cat", path).stdout.strip()
               for path in SECRET_FILES}
    secrets["operator token"] = stack.token
    assert all(len(value) >= 16 for value in secrets.values()), "a secret could not be read"
    with stack.running_server("carol", {"profile": "opencl", "gpus": 1}):
        containers = project_containers() + [f"{PROJECT}-carol"]
        server_token = subprocess.run(["docker", "exec", f"{PROJECT}-carol", "printenv", "JUPYTERHUB_API_TOKEN"],
                                      capture_output=True, text=True, check=True).stdout.strip()
        checked = 0
        for container in containers:
            where = {"command lines": command_lines(container),
                     "docker inspect": subprocess.run(["docker", "inspect", container], capture_output=True,
                                                      text=True, check=True).stdout,
                     "logs": logs(container)}
            for what, text in where.items():
                for name, value in secrets.items():
                    assert value not in text, f"{name} appears in {container}'s {what}"
                # a server's own token is in its own environment (JupyterHub's design), nowhere else
                if container != f"{PROJECT}-carol" or what != "docker inspect":
                    assert server_token not in text, f"carol's server token appears in {container}'s {what}"
                checked += 1
        print(f"\n{len(secrets) + 1} secrets checked in {checked} places ({len(containers)} containers)")


@pytest.mark.security
def test_the_monitor_reaches_docker_only_to_list_and_remove_stopped_containers(stack):
    """The monitor holds no Docker socket; its filtered API (monitor-docker) answers what the
    reconciler needs (list, remove a stopped container unforced) and the inventory's Swarm node
    list, and refuses everything else,
    inspect and every spelling of a forced removal included, before the daemon sees it."""
    mounts = subprocess.run(["docker", "inspect", f"{PROJECT}-gpu-monitor-1", "--format", "{{json .Mounts}}"],
                            capture_output=True, text=True, check=True).stdout
    assert "docker.sock" not in mounts
    running, stopped = f"{PROJECT}-filter-running", f"{PROJECT}-filter-stopped"
    for name in (running, stopped):
        subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    try:
        subprocess.run(["docker", "run", "-d", "--name", running, "--network", "none", "--label",
                        f"com.docker.compose.project={PROJECT}", "debian:bookworm-slim", "sleep", "600"],
                       capture_output=True, text=True, check=True)
        subprocess.run(["docker", "create", "--name", stopped, "--network", "none", "--label",
                        f"com.docker.compose.project={PROJECT}", "debian:bookworm-slim", "true"],
                       capture_output=True, text=True, check=True)
        # each call through the monitor's Docker API, from inside its container, and its status
        statuses = json.loads(stack.compose("exec", "-T", "gpu-monitor", "python3", "-c", program("docker_api_calls"),
                                            running, stopped).stdout)
        print(f"\nthe monitor's Docker API: {statuses}")
        assert [statuses.pop(k) for k in ("ping", "version", "list")] == [200, 200, 200]
        # Swarm's node list (the monitor reads which nodes are drained or down) goes through:
        # this engine is no swarm manager, so the daemon itself answers 503
        assert statuses.pop("swarm nodes") == 503
        allowed = [statuses.pop(k) for k in ("removal of a running one", "removal of a running one, as docker-py",
                                              "removal of a stopped one, as docker-py")]
        let_through = {name: status for name, status in statuses.items() if status != 403}
        assert let_through == {}, f"let through: {let_through}"
        # the daemon refuses to remove a running container unforced (409): the filter let it by
        assert allowed == [409, 409, 204], allowed
        assert subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", running], capture_output=True,
                              text=True).stdout.strip() == "true", "the running container was removed or stopped"
        assert subprocess.run(["docker", "inspect", stopped], capture_output=True).returncode != 0
    finally:
        for name in (running, stopped):
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
    assert stack.compose("ps", "--format", "{{.State}}", "hub").stdout.strip() == "running"


# What the proxy's access log may hold (proxy/entrypoint.sh), besides the logger's own fields.
ACCESS_LOG_FIELDS = {"StartUTC", "ClientHost", "RequestMethod", "RequestHost", "RequestPath", "RequestProtocol",
                     "DownstreamStatus", "DownstreamContentSize", "OriginStatus", "Duration", "RouterName",
                     "entryPointName", "level", "msg", "time"}


SECRETS_IN_REQUESTS = {"token": "SECRET123" + "a" * 8, "code": "SECRET456" + "b" * 8, "xsrf": "SECRET789" + "c" * 8,
                       "authorization": "SECRETAUTH" + "d" * 8, "referer": "SECRETREF" + "e" * 8,
                       "cookie": "SECRETCOOKIE" + "f" * 8}
IN_QUERY = ("token", "code")
REQUEST_PATHS = ("hub/oauth_callback", "hub/api/users", "hub/login", "user/carol/api/status", "no/such/route",
                 "services/gpu-monitor/oauth_callback", "services/gpu-monitor/api/devices")


def _requests_with_secrets(stack) -> None:
    """GET and POST to each of REQUEST_PATHS with ?token=&code= and every header carrying a secret,
    through the proxy (and port 80, which only redirects); the log lines are waited for."""
    secrets = SECRETS_IN_REQUESTS
    query = f"token={secrets['token']}&code={secrets['code']}&state=x"
    headers = {"X-XSRFToken": secrets["xsrf"], "Authorization": f"token {secrets['authorization']}",
               "Referer": f"https://localhost/hub/?code={secrets['referer']}",
               "Cookie": f"_xsrf={secrets['cookie']}"}
    s = requests.Session()
    s.trust_env, s.verify = False, stack.cafile
    for path in REQUEST_PATHS:
        s.get(f"{stack.base_url}/{path}?{query}", headers=headers, allow_redirects=False, timeout=30)
        s.post(f"{stack.base_url}/{path}?{query}", headers=headers, allow_redirects=False, timeout=30)
    requests.get(f"http://localhost/hub/login?{query}", headers=headers, allow_redirects=False, timeout=10)
    wait_for(lambda: all(f'"RequestPath":"/{path}' in logs(f"{PROJECT}-proxy-1") for path in REQUEST_PATHS), 20,
             what="the requests in the proxy's access log")


@pytest.mark.security
def test_the_access_log_holds_no_query_string_and_no_header(stack):
    """Query strings carry OAuth codes and ?token=, headers carry XSRF tokens and credentials:
    none of them may reach `docker logs` of the proxy; the hub logs no header either."""
    _requests_with_secrets(stack)
    proxy_log, hub_log = logs(f"{PROJECT}-proxy-1"), logs(f"{PROJECT}-hub-1")
    for name, value in SECRETS_IN_REQUESTS.items():
        assert value not in proxy_log, f"the {name} is in the proxy's log"
        if name not in IN_QUERY:
            assert value not in hub_log, f"the {name} is in the hub's log"
    entries = [json.loads(line) for line in proxy_log.splitlines() if line.startswith("{") and "RequestPath" in line]
    fields = set().union(*entries)
    assert fields <= ACCESS_LOG_FIELDS, f"fields beyond the allow-list: {fields - ACCESS_LOG_FIELDS}"
    assert not [e for e in entries if "?" in e["RequestPath"]]
    print(f"\naccess log: {len(entries)} entries, fields {sorted(fields)}; {len(SECRETS_IN_REQUESTS)} secrets in "
          f"query strings and headers, none in the proxy's log")


@pytest.mark.security
def test_the_hubs_and_the_monitors_logs_hold_no_query_string(stack):
    """Tornado logs the full URI of a request refused with an HTTPError that carries a log message
    ('OAuth state missing from cookies' on /hub/oauth_callback); both services log paths only."""
    _requests_with_secrets(stack)
    for service in ("hub", "gpu-monitor"):
        log = logs(f"{PROJECT}-{service}-1")
        leaked = [line for line in log.splitlines() if any(SECRETS_IN_REQUESTS[n] in line for n in IN_QUERY)]
        assert leaked == [], (service, leaked[:3])
        # the requests are logged (a log that lost them would pass the check above)
        assert "/oauth_callback" in log, (service, log[-2000:])


# Each long-running service: its user (empty: the image's root, explained in docker-compose.yml)
# and the only capabilities it keeps; every one drops all others, has no-new-privileges, a
# read-only root filesystem and memory and PID limits.
SERVICES = {
    "hub": ("", {"DAC_READ_SEARCH"}),
    "gpu-monitor": ("", {"DAC_READ_SEARCH"}),
    "db": ("", {"CHOWN", "DAC_OVERRIDE", "FOWNER", "SETUID", "SETGID"}),
    "proxy": ("", {"NET_BIND_SERVICE", "DAC_READ_SEARCH"}),
    "netpolicy": ("", {"NET_ADMIN", "NET_RAW"}),
    "monitor-docker": ("", set()),
    "demo-oidc": ("oidc", set()),
}


@pytest.mark.security
def test_every_service_runs_with_least_privilege_and_memory_limits(stack):
    figures = []
    for service, (user, caps) in SERVICES.items():
        container = f"{PROJECT}-{service}-1"
        (info,) = json.loads(subprocess.run(["docker", "inspect", container], capture_output=True, text=True,
                                            check=True).stdout)
        host = info["HostConfig"]
        assert info["Config"]["User"] == user, (service, info["Config"]["User"])
        assert host["CapDrop"] and {c.removeprefix("CAP_") for c in host["CapDrop"]} == {"ALL"}, (service, host["CapDrop"])
        assert {c.removeprefix("CAP_") for c in host["CapAdd"] or []} == caps, (service, host["CapAdd"])
        assert "no-new-privileges:true" in (host["SecurityOpt"] or []), service
        assert host["ReadonlyRootfs"] is True, service
        assert host["Privileged"] is False, service
        assert host["Memory"] > 0 and host["PidsLimit"] and host["PidsLimit"] > 0, (service, host["Memory"])
        used = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{.MemUsage}}", container],
                              capture_output=True, text=True, check=True).stdout.split("/")[0].strip()
        figures.append(f"{service} {used} of {host['Memory'] // 2**20} MiB, pids {host['PidsLimit']}")
    # PostgreSQL's entrypoint starts as root only to hand the data directory over: the server runs as postgres
    processes = subprocess.run(["docker", "top", f"{PROJECT}-db-1", "-o", "pid,uid,args"], capture_output=True,
                               text=True, check=True).stdout.splitlines()[1:]
    assert processes and all(line.split()[1] == "999" for line in processes), processes
    print("\n" + "; ".join(figures))


@pytest.mark.security
def test_init_gives_the_database_password_to_postgres_with_only_its_capabilities(stack, tmp_path):
    """init for real, with exactly the capabilities compose gives it, on empty directories (the
    stack's volumes are left alone): it writes every secret mode 600, the database password owned
    by PostgreSQL's uid (999), and a second run (files that exist, one of them not root's) works too."""
    # the running stack's: made by init at `up`, then read by PostgreSQL as its own user
    assert stack.compose("exec", "-T", "db", "stat", "-c", "%u:%g %a", "/run/gpuhub/db/password").stdout.split() == \
        ["999:999", "600"]
    mounts = {"secrets": "/srv/gpuhub/secrets", "db": "/run/gpuhub/db", "certs": "/srv/gpuhub/certs",
              "monitor": "/srv/gpuhub/monitor-secrets"}
    run = ["run", "--rm", "--no-deps", "-T"]
    for name, target in mounts.items():
        (tmp_path / name).mkdir(mode=0o700)
        run += ["-v", f"{tmp_path / name}:{target}"]
    for attempt in ("first", "second"):
        r = stack.compose(*run, "init", check=False, timeout=120)
        assert r.returncode == 0, (attempt, r.stdout + r.stderr)
    owners = {}
    for path in ("db/password", "secrets/pgpass", "secrets/cookie_secret", "secrets/crypt_key", "monitor/api_token",
                 "certs/local.key"):
        st = (tmp_path / path).stat()
        owners[path] = f"{st.st_uid}:{st.st_gid} {st.st_mode & 0o777:o}"
    print(f"\ninit on empty directories, twice: {owners}")
    assert owners.pop("db/password") == "999:999 600"
    assert set(owners.values()) == {"0:0 600"}, owners


@pytest.mark.security
def test_metrics_need_authentication(stack):
    anonymous = stack.session()
    del anonymous.headers["Authorization"]
    for path in ("hub/metrics", "services/gpu-monitor/metrics"):
        r = anonymous.get(f"{stack.base_url}/{path}", timeout=30, allow_redirects=False)
        assert r.status_code in (401, 403), (path, r.status_code)
        assert "gpuhub_" not in r.text and "jupyterhub_" not in r.text
        assert stack.session().get(f"{stack.base_url}/{path}", timeout=30).status_code == 200, path


@pytest.mark.security
def test_a_user_server_is_confined_and_cannot_reach_the_proxy_api(stack):
    with stack.running_server("carol", {"profile": "minimal", "gpus": 0}):
        host = json.loads(subprocess.run(["docker", "inspect", f"{PROJECT}-carol", "--format", "{{json .HostConfig}}"],
                                         capture_output=True, text=True, check=True).stdout)
        # the minimal profile's limits (config/profiles.yaml) and the spawner's hardening
        assert host["Memory"] == 2 * 1024**3
        cpus = host["NanoCpus"] / 1e9 or host["CpuQuota"] / host["CpuPeriod"]
        assert cpus == 1.0, host
        assert host["PidsLimit"] and host["PidsLimit"] <= 4096
        assert host["Privileged"] is False and host["CapDrop"] == ["ALL"]
        assert "no-new-privileges:true" in host["SecurityOpt"]
        assert not any("docker.sock" in bind for bind in host.get("Binds") or [])
        out = stack.run_code("carol", REACH + "print(reach('proxy', 8099), reach('proxy', 443), reach('hub', 8081))")
        proxy_api, proxy_https, hub_api = out.split()
        assert proxy_https == "open" and hub_api == "open"  # what a server needs
        assert proxy_api != "open", "Traefik's API is reachable from the users' network"


@pytest.mark.security
def test_no_server_can_connect_to_another_users_server(stack):
    """The users' network policy (service netpolicy): the hub and the proxy reach every server,
    servers reach the hub's API and the proxy's entrypoints, and not one another."""
    def address(container: str) -> str:
        return subprocess.run(["docker", "inspect", container, "--format",
                               f"{{{{(index .NetworkSettings.Networks \"{USER_NETWORK}\").IPAddress}}}}"],
                              capture_output=True, text=True, check=True).stdout.strip()

    minimal = {"profile": "minimal", "gpus": 0}
    with stack.running_server("carol", minimal), stack.running_server("dave", minimal):
        carol, dave = address(f"{PROJECT}-carol"), address(f"{PROJECT}-dave")
        assert carol and dave and carol != dave
        # both answer through the proxy: the proxy reaches each (and the hub saw them start)
        for user in ("carol", "dave"):
            assert stack.session().get(f"{stack.base_url}/user/{user}/api/status", timeout=30).status_code == 200
        code = REACH + f"print(reach({dave!r}, 8888), reach('hub', 8081), reach('proxy', 443))"
        started = time.monotonic()
        to_dave, hub_api, proxy_https = stack.run_code("carol", code).split()
        seconds = time.monotonic() - started
        # dave's server listens on 8888 (the proxy reaches it there); carol's cannot connect
        assert to_dave != "open", f"carol's server reached dave's at {dave}:8888"
        assert (hub_api, proxy_https) == ("open", "open")
        # the other way round too, and dave's own address from dave's server is fine (loopback)
        back = stack.run_code("dave", REACH + f"print(reach({carol!r}, 8888))").strip()
        assert back != "open", f"dave's server reached carol's at {carol}:8888"
        print(f"\nserver -> other server: {to_dave} (both ways), server -> hub:8081 {hub_api}, "
              f"-> proxy:443 {proxy_https}; three probes {seconds:.1f} s")


def _users_network() -> dict:
    (network,) = json.loads(subprocess.run(["docker", "network", "inspect", USER_NETWORK], capture_output=True,
                                           text=True, check=True).stdout)
    return network


def _host_address() -> str:
    """The host's address on its default route's interface (a lookup in the routing table only)."""
    dev = subprocess.run(["ip", "-4", "-o", "route", "show", "default"], capture_output=True, text=True,
                         check=True).stdout.split(" dev ")[1].split()[0]
    addr = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", dev], capture_output=True, text=True,
                          check=True).stdout.split(" inet ")[1].split("/")[0]
    return addr


def _netpolicy_rules(stack) -> str:
    """iptables -S and ip6tables -S of the variant that holds Docker's chains, read by netpolicy."""
    script = ("for t in iptables-nft iptables-legacy; do if $t -w -S DOCKER-USER >/dev/null 2>&1; then "
              "$t -w -S; echo '# ip6'; ip6${t#ip} -w -S; break; fi; done")
    return stack.compose("exec", "-T", "netpolicy", "sh", "-c", script).stdout


@pytest.mark.security
def test_a_server_reaches_neither_the_host_nor_private_networks(stack):
    """From a server's kernel: the host (its address, the users' bridge gateway, over IPv4 and the
    bridge's IPv6 link-local address) and other Docker networks are closed; the hub's API, the
    proxy and DNS still work. Link-local and private ranges are checked as rules (no packet is
    sent there)."""
    network = _users_network()
    assert network["EnableIPv6"] is False
    bridge = (network["Options"] or {}).get("com.docker.network.bridge.name") or f"br-{network['Id'][:12]}"
    # the gateway: the bridge's own address, the host's in the users' subnet
    gateway = subprocess.run(["ip", "-4", "-o", "addr", "show", "dev", bridge], capture_output=True, text=True,
                             check=True).stdout.split(" inet ")[1].split("/")[0]
    host = _host_address()
    listeners = []
    v4 = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    v4.bind(("0.0.0.0", 0))  # every host address; the kernel completes handshakes from the backlog
    v4.listen(16)
    listeners.append(v4)
    port = v4.getsockname()[1]
    link_local = subprocess.run(["ip", "-6", "-o", "addr", "show", "dev", bridge, "scope", "link"],
                                capture_output=True, text=True).stdout
    v6_target = ""
    if " inet6 " in link_local:
        v6_address = link_local.split(" inet6 ")[1].split("/")[0]
        v6 = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        v6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        v6.bind(("::", port))
        v6.listen(16)
        listeners.append(v6)
        v6_target = f"{v6_address}%eth0"
    other = f"{PROJECT}-published"
    subprocess.run(["docker", "rm", "-f", other], capture_output=True)
    try:
        # another stack's container on Docker's default bridge, its port published on every address
        subprocess.run(["docker", "run", "-d", "--name", other, "--label", f"com.docker.compose.project={PROJECT}",
                        "-p", "0:8000", "gpuhub/singleuser-base:latest", "python3", "-m", "http.server", "8000"],
                       capture_output=True, text=True, check=True)
        published = int(subprocess.run(["docker", "port", other, "8000/tcp"], capture_output=True, text=True,
                                       check=True).stdout.splitlines()[0].rsplit(":", 1)[1])
        other_ip = subprocess.run(["docker", "inspect", "-f", "{{.NetworkSettings.IPAddress}}", other],
                                  capture_output=True, text=True, check=True).stdout.strip()
        wait_for(lambda: socket.create_connection((other_ip, 8000), timeout=2).close() or True, 30,
                 what="the published container answering the host")
        with stack.running_server("carol", {"profile": "minimal", "gpus": 0}):
            targets = {"host address": (host, port), "bridge gateway": (gateway, port),
                       "published port of another container": (host, published),
                       "another Docker network": (other_ip, 8000)}
            if v6_target:
                targets["bridge's IPv6 link-local address"] = (v6_target, port)
            code = REACH + f"targets = {targets!r}\n" + program("network_probe")
            started = time.monotonic()
            result = json.loads(stack.run_code("carol", code, timeout=90))
            seconds = time.monotonic() - started
        print(f"\nfrom a server ({seconds:.1f} s): {result}")
        ipv6_inside = result.pop("ipv6 in the server")
        assert (result.pop("hub:8081"), result.pop("proxy:443"), result.pop("dns")) == ("open", "open", "resolved")
        reached = {name: how for name, how in result.items() if how == "open"}
        assert reached == {}, f"a server reached {reached}"
        print(f"IPv6 enabled inside the server: {ipv6_inside}; bridge link-local tested: {bool(v6_target)}")
    finally:
        subprocess.run(["docker", "rm", "-f", other], capture_output=True)
        for listener in listeners:
            listener.close()

    # what cannot be probed: the rules. Link-local (cloud metadata) and private ranges dropped for
    # forwarded traffic from the subnet; the host's INPUT closed to it; IPv6 from the bridge dropped.
    rules = _netpolicy_rules(stack)
    v4_rules, v6_rules = rules.split("# ip6")
    subnet = network["IPAM"]["Config"][0]["Subnet"]
    out_jump = [r for r in v4_rules.splitlines() if r.startswith(f"-A DOCKER-USER -s {subnet} ! -d {subnet} -j ")]
    host_jump = [r for r in v4_rules.splitlines() if r.startswith(f"-A INPUT -s {subnet} -j ")]
    assert len(out_jump) == 1 and len(host_jump) == 1, v4_rules
    out_chain, host_chain = out_jump[0].split()[-1], host_jump[0].split()[-1]
    out_rules = [r for r in v4_rules.splitlines() if r.startswith(f"-A {out_chain} ")]
    for private in ("169.254.0.0/16", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "100.64.0.0/10"):
        assert f"-A {out_chain} -d {private} -j DROP" in out_rules, (private, out_rules)
    assert [r for r in v4_rules.splitlines() if r.startswith(f"-A {host_chain} ")][-1] == f"-A {host_chain} -j DROP"
    v6_jumps = [r for r in v6_rules.splitlines() if f"-i {bridge} -j " in r]
    assert sorted(r.split()[1] for r in v6_jumps) == ["FORWARD", "INPUT"], v6_rules
    v6_chain = v6_jumps[0].split()[-1]
    assert f"-A {v6_chain} -j DROP" in v6_rules.splitlines(), v6_rules
    print(f"rules: {len(out_rules)} in {out_chain} (link-local, private and the host's networks dropped), "
          f"{host_chain} from INPUT, IPv6 from {bridge} dropped")


@pytest.mark.reliability
def test_after_a_proxy_restart_routes_come_back_within_the_bound(stack):
    with stack.running_server("carol", {"profile": "minimal", "gpus": 0}):
        s = stack.session()
        url = f"{stack.base_url}/user/carol/api/status"
        assert s.get(url, timeout=30).status_code == 200
        stack.compose("restart", "proxy")
        restarted = time.monotonic()
        wait_for(lambda: s.get(url, timeout=5).status_code == 200, 30, interval=0.2,
                 what="carol's server through the restarted proxy")
        print(f"\nproxy restart: routes back {time.monotonic() - restarted:.1f} s after `restart` returned (bound 30 s)")
        assert stack.api("GET", "/").status_code == 200


@pytest.mark.reliability
def test_a_database_outage_leaves_servers_running_and_everything_recovers(stack):
    r = stack.start_server("carol", {"profile": "opencl", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    s = stack.session()
    server = f"{stack.base_url}/user/carol/api/status"
    try:
        # Tokens are checked against the hub's database. The server and the monitor cache a
        # token's identity for minutes, so people already working carry on; the hub's own API
        # cannot check any token while PostgreSQL is away and answers with an error.
        assert s.get(server, timeout=10).status_code == 200
        # a token first used now: its identity stays cached in the monitor for 5 minutes
        admin = user_token(stack, "alice")
        assert monitor(stack, "GET", "api/devices", token=admin).status_code == 200
        stack.compose("stop", "db")
        down = time.monotonic()
        during = {"server": [], "hub": [], "monitor": []}
        while time.monotonic() - down < 30:
            during["server"].append(s.get(server, timeout=10).status_code)
            r = stack.api("GET", "users/carol")
            during["hub"].append(r.status_code)
            if r.status_code != 200:
                assert r.json()["message"], r.text
            r = monitor(stack, "GET", "api/devices", token=admin)
            during["monitor"].append(r.status_code)
            if r.status_code != 200:
                assert r.status_code == 503 and "database is not answering" in r.json()["message"], r.text
            time.sleep(2)
        assert set(during["server"]) == {200}, during  # the running server never noticed
        stack.compose("start", "db")
        back = time.monotonic()
        wait_for(lambda: stack.api("GET", "users/carol").status_code == 200, 60, what="the hub answering again")
        wait_for(lambda: monitor(stack, "GET", "api/devices").status_code == 200, 60, what="the monitor answering again")
        print(f"\ndatabase down 30 s: server answered {len(during['server'])}/{len(during['server'])}; hub "
              f"{sorted(set(during['hub']))}, monitor {sorted(set(during['monitor']))} meanwhile; both back "
              f"{time.monotonic() - back:.1f} s after PostgreSQL (no restart)")
        assert len(allocations(stack, "carol")) == 1
    finally:
        stack.compose("start", "db")
        wait_for(lambda: stack.api("GET", "users/carol").status_code == 200, 60, what="the hub")
        stack.stop_server("carol")
    assert allocations(stack, "carol") == []


ODD_NAMES = ["ünïcödé", "dot.name", "dot-2ename", "at@example.org", "x" * 120]


@pytest.mark.security
def test_odd_usernames_get_safe_distinct_names_and_working_routes(stack):
    names = {}
    try:
        for user in ODD_NAMES:
            assert stack.api("POST", f"users/{user}").status_code in (201, 409)
            r = stack.api("POST", f"users/{user}/server", json={"profile": "minimal", "gpus": 0})
            assert r.status_code in (201, 202), (user, r.text)
            wait_for(lambda user=user: stack.api("GET", f"users/{user}").json()["servers"].get("", {}).get("ready"), 120,
                     what=f"{user}'s server")
            out = subprocess.run(["docker", "ps", "--filter", f"label=org.gpuhub.user={user}",
                                  "--format", "{{.Names}} {{.Mounts}}"], capture_output=True, text=True,
                                 check=True).stdout.split()
            names[user] = out
            url = stack.api("GET", f"users/{user}").json()["servers"][""]["url"]
            assert stack.session().get(f"{stack.base_url}{url}api/status", timeout=30).status_code == 200, user
        containers = [n[0] for n in names.values()]
        assert len(set(containers)) == len(ODD_NAMES), names
        for name in containers:
            assert name.startswith(f"{PROJECT}-") and all(c.isalnum() or c in "-_." for c in name), name
        print(f"\ncontainers: {containers}")
    finally:
        for user in ODD_NAMES:
            if stack.api("GET", f"users/{user}").json().get("servers"):
                stack.stop_server(user)
            stack.api("DELETE", f"users/{user}")
        # only the home volumes of the containers this test made (<project>-<name> mounts
        # <project>-home-<name>)
        for container in (n[0] for n in names.values()):
            volume = f"{PROJECT}-home-" + container.removeprefix(f"{PROJECT}-")
            subprocess.run(["docker", "volume", "rm", "-f", volume], capture_output=True)
    assert stack.api("POST", "users/sl%2Fash").status_code >= 400


# ---- the monitor's API fuzzed from its OpenAPI description (schemathesis) -------------------

SCHEMA = schemathesis.openapi.from_path(str(ROOT / "gpu_monitor" / "gpu_monitor" / "openapi.yaml"))


@pytest.mark.security
@SCHEMA.parametrize()
@hypothesis.settings(max_examples=40, deadline=None, suppress_health_check=list(hypothesis.HealthCheck),
                     derandomize=True)
def test_the_monitor_api_fuzzed_never_fails_and_refusals_change_nothing(case, stack):
    s = stack.session()  # the operator's token: every scope, so the deepest paths are reached
    before = sorted(a["id"] for a in allocations(stack))
    response = case.call(base_url=f"{stack.base_url}/services/gpu-monitor", session=s, timeout=30,
                         verify=stack.cafile)
    assert response.status_code < 500, (case.method, case.formatted_path, response.status_code, response.text[:300])
    if response.status_code >= 400:
        # schemathesis' response: lower-case header names, each with a list of values
        assert response.headers.get("content-type", [""])[0].startswith("application/json"), (
            case.method, case.formatted_path, case.headers, response.status_code, dict(response.headers))
        assert response.json()["message"]
        assert sorted(a["id"] for a in allocations(stack)) == before, "a refused request changed the allocations"
    elif case.method == "POST" and response.status_code == 201:
        monitor(stack, "DELETE", f"api/allocations/{response.json()['id']}")


# ---- TLS, scanned with sslyze -------------------------------------------------------------------

WEAK = ("NULL", "EXPORT", "RC4", "3DES", "DES_CBC", "MD5", "ANON", "_CBC_")  # CBC: no AEAD, Lucky13 family


@pytest.mark.security
def test_tls_scan_finds_only_modern_protocols_and_ciphers(stack, tmp_path):
    sslyze = ROOT / ".venv-sslyze" / "bin" / "python"
    assert sslyze.exists(), "bin/test makes .venv-sslyze (tests/requirements-tls.txt)"
    out = tmp_path / "sslyze.json"
    subprocess.run([str(sslyze), "-m", "sslyze", "--quiet", f"--json_out={out}", "--sslv2", "--sslv3", "--tlsv1",
                    "--tlsv1_1", "--tlsv1_2", "--tlsv1_3", "--heartbleed", "--compression", "--http_headers",
                    "localhost:443"], check=True, capture_output=True, text=True, timeout=300)
    (server,) = json.loads(out.read_text())["server_scan_results"]
    assert server["scan_status"] == "COMPLETED", server.get("connectivity_error_trace")
    r = server["scan_result"]

    def accepted(name):
        attempt = r[name]
        assert attempt["status"] == "COMPLETED", (name, attempt.get("error_trace"))
        return [c["cipher_suite"]["name"] for c in attempt["result"]["accepted_cipher_suites"]]

    for old in ("ssl_2_0_cipher_suites", "ssl_3_0_cipher_suites", "tls_1_0_cipher_suites", "tls_1_1_cipher_suites"):
        assert accepted(old) == [], old
    tls12, tls13 = accepted("tls_1_2_cipher_suites"), accepted("tls_1_3_cipher_suites")
    assert tls12 and tls13
    weak = [c for c in tls12 + tls13 if any(w in c for w in WEAK)]
    assert weak == [], weak
    assert r["heartbleed"]["result"]["is_vulnerable_to_heartbleed"] is False
    assert r["tls_compression"]["result"]["supports_compression"] is False
    hsts = r["http_headers"]["result"]["strict_transport_security_header"]
    assert hsts is not None and hsts["max_age"] >= 180 * 86400, hsts
    print(f"\nTLS 1.2 suites: {tls12}\nTLS 1.3 suites: {tls13}\nHSTS max-age {hsts['max_age']}")


@pytest.mark.reliability
def test_a_spawn_failure_storm_gives_messages_releases_devices_and_the_hub_stays_up(stack):
    subprocess.run(["docker", "build", "-q", "-t", "gpuhub-test/broken:latest", "-f",
                    str(ROOT / "tests" / "fixtures" / "broken.Dockerfile"), str(ROOT / "tests" / "fixtures")],
                   capture_output=True, text=True, check=True)
    users = [f"storm-{i}" for i in range(6)]
    with recreated(stack, ("hub",), {"GPUHUB_PROFILES_FILE": "/srv/gpuhub/test-fixtures/profiles-broken.yaml"}):
        def spawn(user):
            stack.api("POST", f"users/{user}")
            started = time.monotonic()
            r = stack.api("POST", f"users/{user}/server", json={"profile": "broken", "gpus": 1})
            if r.status_code == 202:  # still starting after 10 s: follow it to its end
                wait_for(lambda: not stack.api("GET", f"users/{user}").json()["servers"], 150,
                         what=f"{user}'s failed spawn to end")
            return r.status_code, r.json().get("message", ""), time.monotonic() - started

        try:
            with ThreadPoolExecutor(len(users)) as pool:
                results = list(pool.map(spawn, users))
            for status, message, _ in results:
                assert status in (202, 500, 503), (status, message)
                if status != 202:
                    assert message, status  # a sentence, not a bare error
            slowest = max(t for _, _, t in results)
            print(f"\nstorm of {len(users)} broken spawns with 1 device each: statuses "
                  f"{sorted(s for s, _, _ in results)}, all ended within {slowest:.1f} s")
            assert all(not stack.api("GET", f"users/{u}").json()["servers"] for u in users)
            wait_for(lambda: allocations(stack) == [], 30, what="every device released")
            assert stack.api("GET", "/").status_code == 200
            assert not [c for c in stack.user_containers() if c.startswith(f"{PROJECT}-storm")]
        finally:
            for user in users:
                stack.api("DELETE", f"users/{user}")
                remove_home(user)


@pytest.mark.reliability
def test_restarting_the_monitor_during_a_burst_of_spawns_gives_no_device_twice_and_leaks_none(stack):
    users = [f"burst-{i}" for i in range(5)]
    results = {}

    def spawn(user):
        stack.api("POST", f"users/{user}")
        r = stack.api("POST", f"users/{user}/server", json={"profile": "opencl", "gpus": 1})
        results[user] = (r.status_code, r.json().get("message", "") if r.status_code >= 400 else "")

    threads = [threading.Thread(target=spawn, args=(u,)) for u in users]
    try:
        for t in threads:
            t.start()
            time.sleep(0.3)
            if t is threads[1]:
                stack.compose("restart", "gpu-monitor")  # in the middle of the burst
        for t in threads:
            t.join(240)
        for user in users:
            wait_for(lambda user=user: stack.api("GET", f"users/{user}").json()["servers"].get("", {}).get("pending")
                     is None, 180, what=f"{user}'s spawn to settle")
        wait_for(lambda: monitor(stack, "GET", "api/devices").status_code == 200, 60, what="the monitor")
        running = [u for u in users if stack.api("GET", f"users/{u}").json()["servers"].get("", {}).get("ready")]
        for status, message in results.values():
            assert status in (201, 202) or message, status  # a failure says why
        # no device twice: each running server's container holds a device of its own
        held = {}
        for user in running:
            # DockerSpawner escapes names ("burst-0" -> gpuhub-test-burst-2d0): find it by its label
            container = subprocess.run(["docker", "ps", "-q", "--filter", f"label=org.gpuhub.user={user}"],
                                       capture_output=True, text=True, check=True).stdout.split()
            assert len(container) == 1, (user, container)
            device = subprocess.run(["docker", "exec", container[0], "printenv", "GPUHUB_DEVICES"],
                                    capture_output=True, text=True, check=True).stdout.strip()
            held[user] = device
        assert len(set(held.values())) == len(held), held
        # none leaked: once reconciliation has had its grace, allocations are exactly the running servers'
        wait_for(lambda: sorted(a["user"] for a in allocations(stack)) == sorted(running), 30,
                 what="allocations matching the running servers")
        print(f"\nmonitor restarted during 5 spawns: {len(running)} running with distinct devices, "
              f"statuses {sorted(s for s, _ in results.values())}, no allocation left over")
    finally:
        for user in users:
            stack.remove_user(user)
    assert allocations(stack) == []


@pytest.mark.reliability
def test_a_spawn_waiting_for_its_turn_holds_no_device(stack):
    """Issue 12.4: a spawn allocated its device and then waited in the start queue, where the
    reconciler (grace 5 s here) saw an allocation without a container and could free it while
    the spawn went on to start on it. With one start at a time, two servers without a device
    are asked for first and two with one device each behind them: while the device servers
    wait their turn they hold nothing, and at most one allocation (the server in its turn,
    between allocating and `docker start`) ever lacks a running container."""
    users = {"turn0": {"profile": "minimal", "gpus": 0}, "turn1": {"profile": "minimal", "gpus": 0},
             "turn2": {"profile": "opencl", "gpus": 1}, "turn3": {"profile": "opencl", "gpus": 1}}
    gpu_users = {"turn2", "turn3"}
    with recreated(stack, ("hub",), {"GPUHUB_START_CONCURRENCY": "1"}):
        try:
            for user in users:
                stack.api("POST", f"users/{user}")
            threads = [threading.Thread(target=stack.api, args=("POST", f"users/{u}/server"), kwargs={"json": o})
                       for u, o in users.items()]
            for t in threads:
                t.start()
                time.sleep(0.2)  # in this order
            without_container, waited_empty = [], set()
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                servers = {u: stack.api("GET", f"users/{u}").json()["servers"].get("", {}) for u in users}
                running = set(subprocess.run(
                    ["docker", "ps", "--filter", f"label=org.gpuhub.deployment={PROJECT}", "--format",
                     '{{.Label "org.gpuhub.user"}}'], capture_output=True, text=True, check=True).stdout.split())
                held = {a["user"] for a in allocations(stack)}
                without_container.append(sorted(held - running))
                # a device server waiting in line: pending, no container, no allocation
                waited_empty |= {u for u in gpu_users if servers[u].get("pending") and u not in running
                                 and u not in held}
                if all(s.get("ready") for s in servers.values()):
                    break
                time.sleep(0.2)
            for t in threads:
                t.join(60)
            assert all(stack.api("GET", f"users/{u}").json()["servers"].get("", {}).get("ready") for u in users)
            assert waited_empty, "no device server was seen waiting its turn: the queue did not form"
            assert max(len(w) for w in without_container) <= 1, [w for w in without_container if len(w) > 1][:3]
            # and reconciliation took nothing: each device server holds its own device
            held = {a["user"]: [d["uuid"] for d in a["devices"]] for a in allocations(stack)}
            assert set(held) == gpu_users and held["turn2"] != held["turn3"], held
            print(f"\nstart queue of 1, 4 spawns: {sorted(waited_empty)} seen waiting without a device; "
                  f"at most {max(len(w) for w in without_container)} allocation without a running container "
                  f"over {len(without_container)} samples")
        finally:
            for user in users:
                stack.remove_user(user)


@pytest.mark.security
def test_lets_encrypt_path_obtains_a_certificate_from_a_local_acme_server(stack):
    """Traefik's ACME configuration (DOMAIN, ACME_EMAIL, ACME_CA_SERVER) for real: pebble, Let's
    Encrypt's test server, issues the certificate over an HTTP-01 challenge that Traefik
    answers on port 80, and Traefik serves it for the domain."""
    pebble = stack.workdir / "pebble"
    pebble.mkdir(exist_ok=True)
    write_pebble_config(pebble, "pebble")
    env = {"GPUHUB_TEST_PEBBLE_DIR": str(pebble)}
    stack.compose("--profile", "acme", "up", "-d", "--build", "pebble", env=env, timeout=600)

    def served(name: str) -> x509.Certificate:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", 443), timeout=5) as raw:
            with context.wrap_socket(raw, server_hostname=name) as tls:
                return x509.load_der_x509_certificate(tls.getpeercert(binary_form=True))

    acme = {**env, "DOMAIN": "gpuhub.test", "ACME_EMAIL": "ops@gpuhub.test",
            "ACME_CA_SERVER": "https://pebble:14000/dir", "LEGO_CA_CERTIFICATES": "/pebble/local-ca.crt"}
    empty_acme_store(stack)  # the DNS-01 test's wildcard would be served otherwise
    try:
        with recreated(stack, ("proxy",), acme):
            started = time.monotonic()
            cert = wait_for(lambda: (c := served("gpuhub.test")) and "Pebble" in c.issuer.rfc4514_string() and c,
                            90, interval=1, what="a certificate from pebble for gpuhub.test")
            print(f"\nACME: pebble's certificate served {time.monotonic() - started:.1f} s after the proxy started; "
                  f"issuer {cert.issuer.rfc4514_string()}")
            names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(x509.DNSName)
            assert names == ["gpuhub.test"]
            stored = stack.compose("exec", "-T", "proxy", "cat", "/letsencrypt/acme.json").stdout
            assert "gpuhub.test" in stored  # kept in the acme volume: renewed from there, not re-issued
            assert "Pebble" not in served("localhost").issuer.rfc4514_string()  # other names: the local cert
    finally:
        stack.compose("--profile", "acme", "rm", "-sf", "pebble", env=env)


@pytest.mark.reliability
def test_a_lost_crypt_key_is_detected_and_explained(stack):
    # the key file lost (a removed volume, a restore without the secrets): init makes a new one
    stack.compose("exec", "-T", "hub", "rm", "/srv/gpuhub/secrets/crypt_key")
    stack.compose("run", "--rm", "init")
    try:
        stack.compose("restart", "hub", check=False)
        message = "GPUHUB_SECRETS_DIR: crypt_key is not the key this database's login states were encrypted with"
        wait_for(lambda: message in stack.compose("logs", "--no-color", "hub").stdout, 60,
                 what="the hub refusing the new key")
        assert "restore secrets/crypt_key from your backup" in stack.compose("logs", "--no-color", "hub").stdout
    finally:
        # the deliberate way out: forget the unreadable login states; people log in again
        out = stack.compose("run", "--rm", "--no-deps", "hub-tools", "python3", "-m", "gpuhub.cryptcheck",
                            "--forget-login-state").stdout
        stack.compose("up", "-d", "--no-deps", "--wait", "hub")
        stack.wait_hub()
    assert out.startswith("gpuhub: forgot the stored login state of ")
    assert stack.api("GET", "users").status_code == 200
