"""gpuhub deployed on the test swarm (tests/harness/swarm.py) the way an operator deploys it:
`bin/swarm-deploy` on the manager, images from the swarm's registry, the workers labelled for the
test profiles. Used by the swarm tier (tests/swarm/test_swarm_stack.py) and by bench/swarm_spawn.py.

    with deployed_stack(swarm, workdir) as stack:   # answers through Traefik on the manager
        stack.start("ada", {"profile": "opencl", "gpus": 1})
"""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
from collections.abc import Iterator
from pathlib import Path

import requests

from .swarm import NETNS_DIR_TEMPLATE, ROOT, Swarm, wait_until

STACK = "gpuhub-swtest"
POOL = ("gpuhub.pool", "workers")  # the workers' label; the test profile asks for it
# the label tests/swarm/simulated-gpus.yml puts FakeNVML's agent on (the GPU-simulating node)
SIMULATED_GPUS = ("gpuhub.simulated-gpus", "true")
IMAGES = ("hub", "gpu-monitor", "docker-api-filter", "netpolicy", "demo-oidc", "singleuser-opencl")
PROFILES = f"""\
default_profile: opencl
profiles:
  - name: opencl
    display_name: OpenCL on a worker
    image: {{registry}}/gpuhub/singleuser-opencl:latest
    gpus: [0, 1]
    cpu_limit: 1.0
    mem_limit: 1G
    shm_size: 64M
    node_labels: {{{{{POOL[0]}: {POOL[1]}}}}}
  - name: simulated-gpu
    display_name: The simulated GPU node's GPUs
    image: {{registry}}/gpuhub/singleuser-opencl:latest
    gpus: [1, 2]
    cpu_limit: 1.0
    mem_limit: 1G
    shm_size: 64M
    node_labels: {{{{{SIMULATED_GPUS[0]}: "{SIMULATED_GPUS[1]}"}}}}
"""

def host_run(*args: str, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(list(args), capture_output=True, text=True, timeout=900, **kwargs)


class SwarmStack:
    def __init__(self, swarm: Swarm, token: str, workdir: Path, env: dict[str, str]):
        self.swarm, self.token = swarm, token
        self.workdir, self.env = workdir, env  # where and how bin/swarm-deploy ran
        self.base_url = f"https://{swarm.manager.address}"
        # the routes are the public host's (localhost in the demo settings), the address the manager's
        self.headers = {"Authorization": f"token {token}", "Host": "localhost"}

    def api(self, method: str, path: str, **kwargs) -> requests.Response:
        s = requests.Session()
        s.trust_env = False
        return s.request(method, f"{self.base_url}/hub/api/{path.lstrip('/')}", verify=False, timeout=120,
                         headers=self.headers, **kwargs)

    def get(self, path: str, token: str = "", host: str = "localhost") -> requests.Response:
        """GET `path` through Traefik for `host` (a server's is <user>.user.localhost: the demo
        settings give each server a subdomain), with the operator's token or `token`."""
        s = requests.Session()
        s.trust_env = False
        headers = {**self.headers, "Host": host}
        if token:
            headers["Authorization"] = f"token {token}"
        return s.get(f"{self.base_url}/{path}", verify=False, timeout=60, headers=headers, allow_redirects=False)

    def monitor(self, path: str, token: str = "") -> requests.Response:
        return self.get(f"services/gpu-monitor/{path}", token)

    def monitor_json(self, path: str) -> dict:
        """The monitor's answer, or {} while it (or Traefik's route to it) does not answer 200."""
        try:
            r = self.monitor(path)
        except requests.RequestException:
            return {}
        return r.json() if r.status_code == 200 else {}

    def deploy(self, *extra: str, **env: str) -> None:
        """bin/swarm-deploy on the manager (again: an update of the stack), with `extra` arguments."""
        deployed = host_run(str(ROOT / "bin" / "swarm-deploy"), *extra, cwd=self.workdir, env={**self.env, **env})
        print(deployed.stdout[-3000:], deployed.stderr[-3000:])
        assert deployed.returncode == 0, deployed.stderr

    def dump_logs(self, name: str) -> Path:
        """Every service's log (the stack's and the servers'), from the manager, in test-artifacts/."""
        target = ROOT / "test-artifacts" / name
        target.mkdir(parents=True, exist_ok=True)
        names = self.swarm.docker(self.swarm.manager, "service", "ls", "--format", "{{.Name}}", check=False).stdout
        for service in names.split():
            try:
                out = self.swarm.docker(self.swarm.manager, "service", "logs", "--timestamps", "--raw", service,
                                        check=False)
                text = out.stdout + out.stderr
            except subprocess.TimeoutExpired as e:  # what came before the timeout
                text = "".join(x.decode(errors="replace") if isinstance(x, bytes) else (x or "")
                               for x in (e.stdout, e.stderr)) + "\n(docker service logs timed out)"
            (target / f"{service}.log").write_text(text)
        tasks = self.swarm.docker(self.swarm.manager, "stack", "ps", "--no-trunc", STACK, check=False)
        (target / "stack-ps.txt").write_text(tasks.stdout + tasks.stderr)
        return target

    def start(self, user: str, options: dict) -> requests.Response:
        self.api("POST", f"users/{user}")
        r = self.api("POST", f"users/{user}/server", json=options)
        if r.status_code == 202:
            wait_until(lambda: self.api("GET", f"users/{user}").json()["servers"].get("", {}).get("ready"), 300,
                       f"{user}'s server ready")
        return r

    def stop(self, user: str) -> None:
        r = self.api("DELETE", f"users/{user}/server")
        assert r.status_code in (202, 204), r.text
        wait_until(lambda: not self.api("GET", f"users/{user}").json()["servers"], 120, f"{user}'s server stopped")

    def service_node(self, user: str) -> str:
        """The node id Swarm runs `user`'s server on."""
        out = self.swarm.docker(self.swarm.manager, "service", "ps", "--filter", "desired-state=running",
                                "--format", "{{.Node}}", f"{STACK}-{user}").stdout.split()
        assert len(out) == 1, out
        return self.swarm.node_ids[next(n.name for n in self.swarm.nodes if n.hostname == out[0])]

    def exec_in(self, user: str, *command: str) -> str:
        """Run `command` in `user`'s server container, on whichever node it is."""
        for node in self.swarm.nodes:
            ids = self.swarm.docker(node, "ps", "-q", "--filter", f"label=com.docker.swarm.service.name={STACK}-{user}"
                                    ).stdout.split()
            if ids:
                return self.swarm.docker(node, "exec", ids[0], *command, timeout=180).stdout
        raise AssertionError(f"no container of {user}'s server on any node")



@contextlib.contextmanager
def deployed_stack(swarm: Swarm, workdir: Path) -> Iterator[SwarmStack]:
    """gpuhub deployed on `swarm` (bin/swarm-deploy run in `workdir`), answering through Traefik;
    removed afterwards (servers, stack, labels)."""
    for image in IMAGES:
        if host_run("docker", "image", "inspect", f"gpuhub/{image}:latest").returncode != 0:
            host_run("docker", "compose", "build", image if image != "docker-api-filter" else "monitor-docker",
                     cwd=ROOT, check=True)
    for image in IMAGES:
        swarm.push(f"gpuhub/{image}:latest", f"gpuhub/{image}:latest")
    for image in ("postgres:15", "traefik:v3.7"):
        swarm.push(image, f"library/{image}")
    registry = swarm.registry_for_nodes
    operator = workdir / "secrets"
    operator.mkdir(mode=0o700)
    token = secrets.token_hex(32)
    (operator / "api_token").write_text(token)
    (operator / "api_token").chmod(0o600)
    # the test's profiles (registry images, the workers' label) where the hub reads operator files
    (operator / "profiles.yaml").write_text(PROFILES.format(registry=registry))
    for worker in swarm.workers:
        swarm.docker(swarm.manager, "node", "update", "--label-add", "=".join(POOL), swarm.node_ids[worker.name])
    env = {**{k: v for k, v in os.environ.items() if not k.startswith(("GPUHUB_", "DOCKER_"))},
           "DOCKER_HOST": f"unix://{swarm.manager.sock}", "GPUHUB_REGISTRY": registry,
           "GPUHUB_PUBLIC_REGISTRY": f"{registry}/library", "GPUHUB_DEPLOYMENT": STACK,
           "GPUHUB_DOCKER_SOCKET": str(swarm.manager.sock), "GPUHUB_DOCKER_NETNS_DIR": NETNS_DIR_TEMPLATE,
           "GPUHUB_OPERATOR_SECRETS": str(operator),
           "ACME_DNS_SECRETS": str(workdir / "acme-dns"), "GPUHUB_PROFILES_FILE": "/run/gpuhub/secrets/profiles.yaml",
           "GPUHUB_CPU_SLICES": "2", "GPUHUB_MONITOR_SAMPLE_SECONDS": "1", "GPUHUB_MONITOR_BACKEND": "cpu-slices",
           "COMPOSE_PROJECT_NAME": STACK}
    stack = SwarmStack(swarm, token, workdir, env)
    stack.deploy()
    try:
        wait_until(lambda: answers(stack), 420, "the hub's API through Traefik on the manager", interval=3)
        yield stack
    finally:
        for line in swarm.docker(swarm.manager, "service", "ls", "--format", "{{.Name}}").stdout.split():
            if line.startswith(f"{STACK}-") and not line.startswith(f"{STACK}_"):
                swarm.docker(swarm.manager, "service", "rm", line, check=False)
        swarm.docker(swarm.manager, "stack", "rm", STACK, check=False)
        for worker in swarm.workers:
            swarm.docker(swarm.manager, "node", "update", "--label-rm", POOL[0], swarm.node_ids[worker.name],
                         check=False)


def answers(stack: SwarmStack) -> bool:
    try:
        return stack.api("GET", "/").status_code == 200
    except requests.RequestException:
        return False
