"""The reference JupyterHub deployment (bench/reference/) from Python, for benchmarks that
compare gpuhub with it: start it, talk to its REST API with the admin token, stop it.

    from bench.reference_stack import start_reference
    ref = start_reference()            # builds gpuhub-ref/hub if needed, up --wait
    ref.start_server("bench-0")        # POST /hub/api/users/bench-0/server
    ref.down()                         # also removes user containers and their volumes

Interface other benchmarks rely on: compose project `gpuhub-ref`, hub (through
configurable-http-proxy) at http://127.0.0.1:18000, OIDC mock at http://127.0.0.1:19401 (any
subject logs in), admin API token in TOKEN_FILE (mode 600; `ReferenceStack.token`). User
containers are `gpuhub-ref-<user>` on network `gpuhub-ref-users`, home volumes
`gpuhub-ref-home-<user>`.

Nothing here takes the shared Docker lock: run the calling script under
`flock /tmp/gpuhub-docker.lock ...` (a nested flock from the same run would deadlock).
"""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import requests

from bench.common import REPO
from tests.harness.stack import wait_for

COMPOSE_FILE = REPO / "bench" / "reference" / "docker-compose.yml"
PROJECT = "gpuhub-ref"
HUB_URL = "http://127.0.0.1:18000"
OIDC_URL = "http://127.0.0.1:19401"
USER_NETWORK = "gpuhub-ref-users"
CONTAINER_PREFIX = "gpuhub-ref-"
VOLUME_PREFIX = "gpuhub-ref-home-"
TOKEN_FILE = Path("/tmp/gpuhub-ref/api_token")


@dataclass
class ReferenceStack:
    token: str
    token_file: Path = TOKEN_FILE
    project: str = PROJECT
    base_url: str = HUB_URL
    env: dict = field(default_factory=dict)

    # ---- compose ------------------------------------------------------------------------------
    def compose(self, *args: str, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        env = {**os.environ, "GPUHUB_REF_API_TOKEN_FILE": str(self.token_file), **self.env}
        return subprocess.run(["docker", "compose", "-p", self.project, "-f", str(COMPOSE_FILE), *args],
                              env=env, capture_output=True, text=True, check=check, timeout=timeout)

    def up(self, build: bool = True) -> None:
        if build:
            # the reference's own images; the OIDC image is gpuhub's demo-oidc, built with gpuhub
            # (built here by `up` only if it is missing)
            self.compose("build", "hub", "singleuser")
        r = self.compose("up", "-d", "--wait", check=False)
        if r.returncode != 0:
            logs = self.compose("logs", "--no-color", "--tail", "80", check=False).stdout
            raise RuntimeError(f"reference stack did not start:\n{r.stderr[-2000:]}\n{logs[-4000:]}")

    def down(self) -> None:
        for name in self.user_containers():
            subprocess.run(["docker", "rm", "-f", name], capture_output=True)
        self.compose("down", "-v", "--remove-orphans", check=False)
        out = subprocess.run(["docker", "volume", "ls", "-q", "--filter", f"name=^{VOLUME_PREFIX}"],
                             capture_output=True, text=True).stdout.split()
        if out:
            subprocess.run(["docker", "volume", "rm", "-f", *out], capture_output=True)

    def user_containers(self) -> list[str]:
        out = subprocess.run(["docker", "ps", "-a", "--filter", f"network={USER_NETWORK}",
                              "--filter", f"name=^{CONTAINER_PREFIX}", "--format", "{{.Names}}"],
                             capture_output=True, text=True).stdout.split()
        hub_side = {f"{self.project}-hub-1", f"{self.project}-oidc-1"}
        return [name for name in out if name not in hub_side]

    def hub_container(self) -> str:
        return f"{self.project}-hub-1"

    # ---- REST API through configurable-http-proxy ------------------------------------------
    def session(self) -> requests.Session:
        s = requests.Session()
        s.trust_env = False  # no proxy environment variables for loopback
        s.headers["Authorization"] = f"token {self.token}"
        return s

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        return self.session().request(method, f"{self.base_url}/hub/api/{path.lstrip('/')}", timeout=120, **kwargs)

    def wait_hub(self, timeout: float = 120) -> None:
        wait_for(lambda: self.api("GET", "/").status_code == 200, timeout, interval=0.2,
                 what="reference hub API through CHP")

    def start_server(self, user: str, options: dict | None = None) -> requests.Response:
        self.api("POST", f"users/{user}")  # 201 created, or 409 if it exists: both fine
        return self.api("POST", f"users/{user}/server", json=options or {})

    def stop_server(self, user: str) -> None:
        r = self.api("DELETE", f"users/{user}/server")
        assert r.status_code in (202, 204), r.text
        wait_for(lambda: not self.api("GET", f"users/{user}").json()["servers"], 120, interval=0.2,
                 what=f"{user}'s server stopped")


def write_token(path: Path = TOKEN_FILE) -> str:
    """A fresh admin token in `path` (directory 700, file 600)."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    token = secrets.token_hex(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token)
    return token


def start_reference(build: bool = True, token_file: Path = TOKEN_FILE) -> ReferenceStack:
    """Start the reference stack from nothing (leftovers of an earlier run removed first)."""
    stack = ReferenceStack(token=write_token(token_file), token_file=token_file)
    stack.down()
    try:
        stack.up(build=build)
        stack.wait_hub()
    except BaseException:
        stack.down()
        raise
    return stack


def stop_reference(stack: ReferenceStack | None = None) -> None:
    """Stop and remove the reference stack, its user containers and volumes."""
    (stack or ReferenceStack(token="")).down()
