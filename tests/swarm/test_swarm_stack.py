"""gpuhub deployed on a real Docker Swarm (three engines on this machine, tests/harness/swarm.py)
the way an operator deploys it: `bin/swarm-deploy` (docker-compose.yml merged with
docker-compose.swarm.yml, then `docker stack deploy`) on the manager, images from the swarm's
registry. The control plane runs on the manager; a monitor agent on each worker reports its CPU
slices; the hub (GPUHUB_SWARM=true, gpuhub.swarm_spawner) starts each server as a service on
the node of its devices. Tested through the hub's REST API behind Traefik: four servers with
one device each land on the two workers, each on a distinct (node, device), and compute there
on PoCL; a fifth is refused with the monitor's sentence; the GPU-simulating worker's runtime
(the NVIDIA stand-in) is told `void` for a CPU server; a stop gives the devices back. Servers
pack onto one node; a paused node (`docker node update --availability pause`) gets no new server
while its running ones keep their task and devices; the hub restarted (a new task), every server
on both workers runs on, on the same task, with the same allocation."""

from __future__ import annotations

import os
import secrets
import subprocess
from pathlib import Path

import pytest
import requests

from ..harness.swarm import ROOT, Swarm, wait_until

pytestmark = [
    pytest.mark.swarm,
    # the manager is reached by its address, the certificate names localhost: TLS itself is the docker tier's
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

STACK = "gpuhub-swtest"
POOL = ("gpuhub.pool", "workers")  # the workers' label; the test profile asks for it
IMAGES = ("hub", "gpu-monitor", "docker-api-filter", "demo-oidc", "singleuser-opencl")
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
"""

# an OpenCL kernel compiled and run by PoCL in the server (the sum of 2 * 0..7)
DOUBLE_ON_POCL = (
    "import pyopencl as cl, numpy as np; ctx = cl.create_some_context(False); q = cl.CommandQueue(ctx); "
    "a = np.arange(8, dtype=np.float32); b = cl.Buffer(ctx, cl.mem_flags.COPY_HOST_PTR, hostbuf=a); "
    "p = cl.Program(ctx, '__kernel void d(__global float *x) { x[get_global_id(0)] *= 2; }').build(); "
    "p.d(q, a.shape, None, b); cl.enqueue_copy(q, a, b); print(int(a.sum()))")


def _host(*args: str, **kwargs) -> subprocess.CompletedProcess:
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

    def monitor(self, path: str) -> requests.Response:
        s = requests.Session()
        s.trust_env = False
        return s.get(f"{self.base_url}/services/gpu-monitor/{path}", verify=False, timeout=60, headers=self.headers)

    def deploy(self, *extra: str, **env: str) -> None:
        """bin/swarm-deploy on the manager (again: an update of the stack), with `extra` arguments."""
        deployed = _host(str(ROOT / "bin" / "swarm-deploy"), *extra, cwd=self.workdir, env={**self.env, **env})
        print(deployed.stdout[-3000:], deployed.stderr[-3000:])
        assert deployed.returncode == 0, deployed.stderr

    def dump_logs(self, name: str) -> Path:
        """Every service's log (the stack's and the servers'), from the manager, in test-artifacts/."""
        target = ROOT / "test-artifacts" / name
        target.mkdir(parents=True, exist_ok=True)
        names = self.swarm.docker(self.swarm.manager, "service", "ls", "--format", "{{.Name}}", check=False).stdout
        for service in names.split():
            out = self.swarm.docker(self.swarm.manager, "service", "logs", "--timestamps", "--raw", service,
                                    check=False)
            (target / f"{service}.log").write_text(out.stdout + out.stderr)
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


@pytest.fixture(scope="module")
def stack(swarm, tmp_path_factory):
    for image in IMAGES:
        if _host("docker", "image", "inspect", f"gpuhub/{image}:latest").returncode != 0:
            _host("docker", "compose", "build", image if image != "docker-api-filter" else "monitor-docker",
                  cwd=ROOT, check=True)
    for image in IMAGES:
        swarm.push(f"gpuhub/{image}:latest", f"gpuhub/{image}:latest")
    for image in ("postgres:15", "traefik:v3.7"):
        swarm.push(image, f"library/{image}")
    registry = swarm.registry_for_nodes
    workdir = tmp_path_factory.mktemp("swarm-stack")
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
           "GPUHUB_DOCKER_SOCKET": str(swarm.manager.sock), "GPUHUB_OPERATOR_SECRETS": str(operator),
           "ACME_DNS_SECRETS": str(workdir / "acme-dns"), "GPUHUB_PROFILES_FILE": "/run/gpuhub/secrets/profiles.yaml",
           "GPUHUB_CPU_SLICES": "2", "GPUHUB_MONITOR_SAMPLE_SECONDS": "1", "GPUHUB_MONITOR_BACKEND": "cpu-slices",
           "COMPOSE_PROJECT_NAME": STACK}
    stack = SwarmStack(swarm, token, workdir, env)
    stack.deploy()
    try:
        wait_until(lambda: _answers(stack), 420, "the hub's API through Traefik on the manager", interval=3)
        yield stack
    finally:
        for line in swarm.docker(swarm.manager, "service", "ls", "--format", "{{.Name}}").stdout.split():
            if line.startswith(f"{STACK}-") and not line.startswith(f"{STACK}_"):
                swarm.docker(swarm.manager, "service", "rm", line, check=False)
        swarm.docker(swarm.manager, "stack", "rm", STACK, check=False)
        for worker in swarm.workers:
            swarm.docker(swarm.manager, "node", "update", "--label-rm", POOL[0], swarm.node_ids[worker.name],
                         check=False)


def _answers(stack: SwarmStack) -> bool:
    try:
        return stack.api("GET", "/").status_code == 200
    except requests.RequestException:
        return False


def test_four_servers_land_on_the_two_workers_each_on_its_own_device_and_a_fifth_is_refused(stack):
    swarm = stack.swarm
    workers = {swarm.node_ids[w.name] for w in swarm.workers}
    wait_until(lambda: sum(1 for d in stack.monitor("api/devices").json()["devices"]
                           if d["node"] in workers) == 4, 180, "two CPU slices on each worker")
    users = [f"sw{i}" for i in range(5)]
    placed = {}
    for user in users[:4]:
        r = stack.start(user, {"profile": "opencl", "gpus": 1})
        assert r.status_code in (201, 202), r.text
        placed[user] = stack.service_node(user)
    allocations = stack.monitor("api/allocations").json()["allocations"]
    held = {(a["node"], d["uuid"]) for a in allocations for d in a["devices"]}
    assert len(held) == 4 and {node for node, _ in held} == workers
    # each server runs on the node its allocation names
    by_user = {a["user"]: a["node"] for a in allocations}
    assert placed == {u: by_user[u] for u in placed}
    # the fifth: no free device on a worker, said by the monitor (503: try again); nothing was created for it
    r = stack.start(users[4], {"profile": "opencl", "gpus": 1})
    assert r.status_code == 503 and "0 free (4 of 4 in use)" in r.text, r.text
    assert swarm.docker(swarm.manager, "service", "ls", "-q", "--filter", f"name={STACK}-{users[4]}").stdout == ""
    # computing on PoCL, on the worker's slice
    out = stack.exec_in(users[0], "python3", "-c", DOUBLE_ON_POCL)
    assert out.strip() == "56"
    # the GPU-simulating worker's runtime was told: no GPU for a CPU server
    on_gpu_node = [u for u, n in placed.items() if n == swarm.node_ids[swarm.gpu_node.name]]
    assert on_gpu_node and {r["NVIDIA_VISIBLE_DEVICES"] for r in swarm.runtime_records()} >= {"void"}
    # stopped: the service goes, then its devices
    stack.stop(users[0])
    assert swarm.docker(swarm.manager, "service", "ls", "-q", "--filter", f"name={STACK}-{users[0]}").stdout == ""
    wait_until(lambda: users[0] not in {a["user"] for a in stack.monitor("api/allocations").json()["allocations"]},
               60, f"{users[0]}'s devices released")
    r = stack.start(users[4], {"profile": "opencl", "gpus": 1})
    assert r.status_code in (201, 202), r.text
    for user in users[1:]:
        stack.stop(user)


def running_task(stack: SwarmStack, user: str) -> str:
    out = stack.swarm.docker(stack.swarm.manager, "service", "ps", "-q", "--filter", "desired-state=running",
                             f"{STACK}-{user}").stdout.split()
    assert len(out) == 1, out
    return out[0]


def held_by(stack: SwarmStack) -> dict[str, tuple[str, str]]:
    """{user: (allocation id, node)} as the monitor holds them."""
    return {a["user"]: (a["id"], a["node"]) for a in stack.monitor("api/allocations").json()["allocations"]}


def test_servers_pack_and_a_paused_node_gets_no_new_server_while_its_running_ones_keep_their_devices(stack):
    swarm = stack.swarm
    first, second, third = "pk0", "pk1", "pk2"
    try:
        for user in (first, second):
            assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
        # pack (the policy's default): the second server joins the first one's node
        node = stack.service_node(first)
        assert stack.service_node(second) == node
        task = running_task(stack, first)
        swarm.docker(swarm.manager, "node", "update", "--availability", "pause", node)
        try:
            wait_until(lambda: next(n for n in stack.monitor("api/devices").json()["nodes"] if n["id"] == node)["state"]
                       == "drained", 30, "the paused node drained for the monitor")
            r = stack.start(third, {"profile": "opencl", "gpus": 1})
            assert r.status_code in (201, 202), r.text
            assert stack.service_node(third) != node
            # the paused node's servers run on, on the same task, with their devices
            assert running_task(stack, first) == task
            assert {held_by(stack)[u][1] for u in (first, second)} == {node}
        finally:
            swarm.docker(swarm.manager, "node", "update", "--availability", "active", node)
    finally:
        for user in (first, second, third):
            if stack.api("GET", f"users/{user}").json().get("servers"):
                stack.stop(user)


def test_the_hub_restarted_every_server_on_every_worker_keeps_running_and_keeps_its_devices(stack):
    swarm = stack.swarm
    users = ("rs0", "rs1", "rs2")
    try:
        for user in users:
            assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
        tasks = {u: running_task(stack, u) for u in users}
        held = held_by(stack)
        assert len({held[u][1] for u in users}) == 2  # both workers
        hub_task = swarm.docker(swarm.manager, "service", "ps", "-q", "--filter", "desired-state=running",
                                f"{STACK}_hub").stdout.split()
        swarm.docker(swarm.manager, "service", "update", "--detach", "--quiet", "--force", f"{STACK}_hub")
        wait_until(lambda: swarm.docker(swarm.manager, "service", "ps", "-q", "--filter", "desired-state=running",
                                        f"{STACK}_hub").stdout.split() not in ([], hub_task), 120, "a new hub task")
        wait_until(lambda: _answers(stack), 180, "the restarted hub's API", interval=2)
        for user in users:
            assert stack.api("GET", f"users/{user}").json()["servers"][""]["ready"], user
            assert running_task(stack, user) == tasks[user]
        assert {u: held_by(stack)[u] for u in users} == {u: held[u] for u in users}
    finally:
        for user in users:
            if stack.api("GET", f"users/{user}").json().get("servers"):
                stack.stop(user)
    assert not set(users) & set(held_by(stack))
