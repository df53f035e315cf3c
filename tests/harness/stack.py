"""The real gpuhub stack under test: Docker Compose, the repository's compose file, a test OIDC
provider beside it, and clients that talk to it over verified HTTPS through the proxy.

One `Stack` per test session (project `gpuhub-test`), started by the `stack` fixture in
tests/conftest.py; the benchmarks (bench/) start the same stack with `start_stack`, some with
settings or a `Stack` subclass of their own. Everything it creates is named after the project or
carries gpuhub's labels, so teardown (and a rerun after a crash) removes exactly what the tests
made.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import os
import secrets
import shutil
import string
import subprocess
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import escapism  # DockerSpawner's own dependency
import requests

ROOT = Path(__file__).resolve().parents[2]
PROJECT = "gpuhub-test"
USER_NETWORK = "gpuhub-test-users"
# the users' subnet the test stack prefers (gpuhub's default is 10.213.240.0/20); taken, another
USERS_SUBNET = "10.213.224.0/20"
# The provider knows alice, bob and mallory; only alice and bob may log in. carol is made
# through the API only.
TEST_USERS = ("alice", "bob", "mallory", "carol", "dave")
ARTIFACTS = ROOT / "test-artifacts"

TEST_ENV = {
    "GPUHUB_AUTHENTICATOR": "generic",
    "OAUTH_CLIENT_ID": "gpuhub-test",
    "OIDC_AUTHORIZE_URL": "http://localhost:9401/oauth2/authorize",
    "OIDC_TOKEN_URL": "http://test-oidc:9400/oauth2/token",
    "OIDC_USERINFO_URL": "http://test-oidc:9400/userinfo",
    "OIDC_USERNAME_CLAIM": "sub",
    "GPUHUB_ALLOWED_USERS": "alice,bob",
    "GPUHUB_ADMIN_USERS": "alice",
    "GPUHUB_USER_NETWORK": USER_NETWORK,
    # not the defaults, which a gpuhub on this host may hold (its users' network outlives
    # `docker compose down`); start_stack moves to a free /20 if this one is taken
    # short monitor timings, so that leaked devices come back within a test's patience
    "GPUHUB_MONITOR_SAMPLE_SECONDS": "1",
    "GPUHUB_MONITOR_RECONCILE_SECONDS": "3",
    "GPUHUB_MONITOR_GRACE_SECONDS": "5",
    "GPUHUB_CPU_SLICES": "2",
    # what kind of node the test host is, for profiles' and requests' node_labels
    "GPUHUB_NODE_LABELS": "cpu=pocl",
    # a node whose agent stops is lost after this (its agent reports every second)
    "GPUHUB_NODE_TIMEOUT_SECONDS": "10",
    "GPUHUB_MONITOR_FLUSH_SECONDS": "2",
    # one origin, as the tests' URLs are written; per-user subdomains (the default without
    # DOMAIN) are tested by turning them on: tests/docker/test_subdomains.py
    "GPUHUB_USER_SUBDOMAINS": "false",
}



def docker_subnets() -> list[ipaddress.IPv4Network]:
    """The IPv4 subnets of every Docker network on this host."""
    ids = subprocess.run(["docker", "network", "ls", "-q"], capture_output=True, text=True, check=True).stdout.split()
    if not ids:
        return []
    out = subprocess.run(["docker", "network", "inspect", "--format",
                          "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids],
                         capture_output=True, text=True, check=True).stdout
    return [net for net in (ipaddress.ip_network(word, strict=False) for word in out.split()) if net.version == 4]


def users_network(name: str, preferred: str, taken: list[ipaddress.IPv4Network] | None = None) -> dict[str, str]:
    """Settings for a users' network named `name` on a /20 no Docker network on this host
    overlaps: `preferred` if free, else the first free one of 10.213.0.0/16, then 10.214.0.0/16.
    A gpuhub running here (default 10.213.240.0/20), or one stopped with `docker compose down`,
    whose users' network stays, must not make the tests fail ("Pool overlaps")."""
    taken = docker_subnets() if taken is None else taken
    candidates = [ipaddress.IPv4Network(preferred)]
    for block in ("10.213.0.0/16", "10.214.0.0/16"):
        candidates += ipaddress.IPv4Network(block).subnets(new_prefix=20)
    for subnet in candidates:
        if not any(subnet.overlaps(net) for net in taken):
            hosts = subnet.network_address
            return {"GPUHUB_USER_NETWORK": name, "GPUHUB_USERS_SUBNET": str(subnet),
                    "GPUHUB_USERS_IP_RANGE": str(list(subnet.subnets(new_prefix=21))[1]),
                    "GPUHUB_USERS_HUB_IP": str(hosts + 2), "GPUHUB_USERS_PROXY_IP": str(hosts + 3)}
    raise RuntimeError(f"no free /20 for the users' network {name} in 10.213.0.0/15; Docker networks hold {taken}")


def wait_for(predicate, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll `predicate` until it returns a truthy value or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        try:
            result = predicate()
            if result:
                return result
        except Exception as e:  # noqa: BLE001 - reported if the deadline passes
            last_error = e
        time.sleep(interval)
    raise TimeoutError(f"{what} not reached within {timeout:.0f}s (last error: {last_error!r})")


def remove_home(user: str) -> None:
    """Removes the home volume the test stack's spawner made for `user`: `<project>-home-<name>`,
    the name as DockerSpawner's default `escape` makes it: lower-case letters and digits kept,
    all else as -XX ("burst-0" -> gpuhub-test-home-burst-2d0). A gpuhub on the same daemon
    (project `gpuhub`) has its own names, which no test touches."""
    safe = escapism.escape(user, set(string.ascii_lowercase + string.digits), escape_char="-").lower()
    subprocess.run(["docker", "volume", "rm", "-f", f"{PROJECT}-home-{safe}"], capture_output=True)


@dataclass
class Stack:
    workdir: Path
    project: str = PROJECT
    env: dict = field(default_factory=dict)
    token: str = ""
    base_url: str = "https://localhost"
    cafile: str = ""

    # ---- compose ------------------------------------------------------------------------------
    def compose_cmd(self, *args: str) -> list[str]:
        return ["docker", "compose", "-p", self.project, "--project-directory", str(ROOT),
                "-f", str(ROOT / "docker-compose.yml"), "-f", str(ROOT / "tests" / "compose.test.yml"), *args]

    def compose(self, *args: str, check: bool = True, env: dict | None = None, timeout: float = 900):
        return subprocess.run(self.compose_cmd(*args), cwd=ROOT, env={**os.environ, **self.env, **(env or {})},
                              capture_output=True, text=True, check=check, timeout=timeout)

    def up(self) -> None:
        result = self.compose("up", "-d", "--build", "--wait", check=False)
        if result.returncode != 0:
            self.dump_logs("stack-up")
            raise RuntimeError(f"docker compose up failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
        self.cafile = str(self.workdir / "local-ca.crt")
        cert = self.compose("exec", "-T", "proxy", "cat", "/certs/local-ca.crt").stdout
        Path(self.cafile).write_text(cert)

    def down(self) -> None:
        for container in self.user_containers():
            subprocess.run(["docker", "rm", "-f", container], capture_output=True)
        self.compose("down", "-v", "--remove-orphans", check=False)
        for user in TEST_USERS:
            remove_home(user)

    def user_containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", "label=org.gpuhub.user",
                              "--filter", f"network={USER_NETWORK}", "--format", "{{.Names}}"],
                             capture_output=True, text=True).stdout
        return out.split()

    def dump_logs(self, name: str) -> Path:
        target = ARTIFACTS / name
        target.mkdir(parents=True, exist_ok=True)
        logs = self.compose("logs", "--no-color", "--timestamps", check=False).stdout
        (target / "compose.log").write_text(logs)
        for container in self.user_containers():
            out = subprocess.run(["docker", "logs", "--timestamps", container], capture_output=True, text=True)
            (target / f"{container}.log").write_text(out.stdout + out.stderr)
        return target

    # ---- HTTP through the proxy ------------------------------------------------------------
    def session(self) -> requests.Session:
        s = requests.Session()
        # requests lets REQUESTS_CA_BUNDLE (set on many CI machines) override Session.verify
        s.trust_env = False
        s.verify = self.cafile
        s.headers["Authorization"] = f"token {self.token}"
        return s

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session().request(method, f"{self.base_url}/hub/api/{path.lstrip('/')}", timeout=120, **kwargs)

    def wait_hub(self, timeout: float = 120) -> None:
        wait_for(lambda: self.api("GET", "/").status_code == 200, timeout, what="hub API through the proxy")

    def start_server(self, user: str, options: dict | None = None) -> requests.Response:
        self.api("POST", f"users/{user}")  # 201 created, or 409 if it exists: both fine
        r = self.api("POST", f"users/{user}/server", json=options if options is not None else {})
        if r.status_code == 202:  # still starting after the hub's slow_spawn_timeout
            wait_for(lambda: self.api("GET", f"users/{user}").json()["servers"].get("", {}).get("ready"),
                     180, what=f"{user}'s server ready")
        return r

    @contextlib.contextmanager
    def running_server(self, user: str, options: dict):
        """`user`'s server started with `options` (asserted), stopped afterwards whatever happens."""
        r = self.start_server(user, options)
        assert r.status_code in (201, 202), r.text
        try:
            yield r
        finally:
            if self.api("GET", f"users/{user}").json().get("servers"):
                self.stop_server(user)

    def remove_user(self, user: str) -> None:
        """`user`'s server stopped (if any), the user deleted and their home volume removed."""
        if self.api("GET", f"users/{user}").json().get("servers"):
            self.stop_server(user)
        self.api("DELETE", f"users/{user}")
        remove_home(user)

    def stop_server(self, user: str) -> None:
        r = self.api("DELETE", f"users/{user}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: not self.api("GET", f"users/{user}").json()["servers"], 120, what=f"{user}'s server stopped")

    # ---- running code in a user's server ---------------------------------------------------------
    def run_code(self, user: str, code: str, timeout: float = 60) -> str:
        """Start a kernel in `user`'s server through the proxy, run `code`, return its stdout."""
        import websocket  # websocket-client (tests/requirements.txt): not needed to collect the fast tier

        s = self.session()
        server = f"{self.base_url}/user/{user}"
        r = s.post(f"{server}/api/kernels", json={"name": "python3"}, timeout=60)
        r.raise_for_status()
        kernel = r.json()["id"]
        try:
            ws = websocket.create_connection(
                f"wss://localhost/user/{user}/api/kernels/{kernel}/channels",
                header=[f"Authorization: token {self.token}"],
                sslopt={"ca_certs": self.cafile}, timeout=timeout)
            msg_id = uuid.uuid4().hex
            ws.send(json.dumps({
                "header": {"msg_id": msg_id, "msg_type": "execute_request", "username": user,
                           "session": uuid.uuid4().hex, "version": "5.3"},
                "parent_header": {}, "metadata": {}, "channel": "shell", "buffers": [],
                "content": {"code": code, "silent": False, "store_history": False,
                            "user_expressions": {}, "allow_stdin": False},
            }))
            output = []
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                msg = json.loads(ws.recv())
                if msg.get("parent_header", {}).get("msg_id") != msg_id:
                    continue
                kind = msg["header"]["msg_type"]
                if kind == "stream":
                    output.append(msg["content"]["text"])
                elif kind == "error":
                    raise RuntimeError(f"code failed in {user}'s kernel: {msg['content']['evalue']}")
                elif kind == "status" and msg["content"]["execution_state"] == "idle":
                    return "".join(output)
            raise TimeoutError(f"no result from {user}'s kernel within {timeout}s")
        finally:
            s.delete(f"{server}/api/kernels/{kernel}", timeout=30)


def start_stack(workdir: Path, env: dict | None = None, stack_class: type[Stack] = Stack) -> Stack:
    """The stack started in `workdir` (its secrets go there), with the settings `env` (default
    TEST_ENV) as a `stack_class`; leftovers of an earlier run are removed first."""
    if shutil.which("docker") is None or subprocess.run(["docker", "info"], capture_output=True).returncode:
        raise RuntimeError("Docker is not available: run bin/setup-host first (bin/test does)")
    secrets_dir = workdir / "secrets"
    secrets_dir.mkdir(mode=0o700)
    token = secrets.token_hex(32)
    for name, value in (("api_token", token), ("oauth_client_secret", "test-oidc-accepts-any-secret")):
        path = secrets_dir / name
        path.write_text(value)
        path.chmod(0o600)
    settings = TEST_ENV if env is None else env
    stack = stack_class(workdir=workdir, env={**settings, "GPUHUB_OPERATOR_SECRETS": str(secrets_dir)}, token=token)
    stack.down()  # leftovers of an interrupted earlier run
    stack.env.update(users_network(USER_NETWORK, USERS_SUBNET))
    try:
        stack.up()
        stack.wait_hub()
    except BaseException:
        stack.dump_logs("stack-start")
        stack.down()
        raise
    return stack
