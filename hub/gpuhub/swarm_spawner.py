"""GPUSwarmSpawner: GPUDockerSpawner's servers as Docker Swarm services, each on its devices' node.

On a swarm (GPUHUB_SWARM=true) the GPU monitor decides the node with the devices (the allocation
names it: Swarm's node id, which each node's agent reports under); this spawner only has Swarm
run the server there. Everything GPUDockerSpawner does (profiles, validation, the monitor's
allocation and its release only once nothing runs, the start queue, progress) is unchanged; what
differs is the Docker object:

- one replicated service per server, one replica, never restarted by Swarm (a server that
  exits is stopped, as on one host), placed by a constraint `node.id==<the allocation's node>`;
- reached at its task's address on the users' overlay network, not by its service name: the
  hub's resolver (aiodns) keeps an answer for the TTL Docker's DNS gives (600 s), so a server
  started again under the same name was looked for at its old task's address for minutes
  (found 2026-12-02, docs/scale-out.md). The endpoint is DNS round robin (`dnsrr`), as no virtual
  IP is used (one needs IPVS in the node's kernel);
- GPUs and MIG instances: NVIDIA_VISIBLE_DEVICES / CUDA_VISIBLE_DEVICES with the allocated ids,
  read by the NVIDIA runtime, which a GPU node makes its default runtime (a service cannot choose
  one); and as many `NVIDIA-GPU` generic resources as devices, so that Swarm's own count of a
  node's GPUs agrees with the monitor's. Swarm picks *which* of the node's advertised GPUs it
  counts as taken (its DOCKER_RESOURCE_NVIDIA-GPU variable); the container gets the monitor's;
- CPU slices: a CPU limit of the slice's cores (Swarm has no cpuset for services, so the slice is
  a share of the node's CPU time, not its cores), PoCL told how many compute units it has;
- the hardening of a container where Swarm can express it: no capabilities, a read-only root
  filesystem, size-limited tmpfs for /tmp, /var/tmp and /dev/shm, the memory, CPU and process
  limits. Docker 20.10's service API has no no-new-privileges and mounts a service's tmpfs
  noexec; docs/scale-out.md says what that changes.
- homes: a person's home is a named volume, which Swarm creates on the node the server runs on
  and which stays there. The node is kept in the server's state (`home_node`) and the next start
  goes back to it: the monitor is asked for devices on that node only, a server without GPUs is
  constrained to it, and when it cannot take the server (down, paused or drained, or no free
  device) the person is told that their files are there. A node that has left the swarm is
  forgotten (the server then starts with a new home, and the log says so).
- stopping: the service is scaled to no replica, its task waited for until Swarm reports it
  ended (so no process can still use the devices), then removed; only then are the devices
  released, as on one host.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

import docker.errors
from docker.types import ContainerSpec, EndpointSpec, Mount, Placement, Resources, RestartPolicy, ServiceMode, TaskTemplate
from dockerspawner import SwarmSpawner
from tornado import web
from traitlets import Float, Unicode, default

from .spawner import GPU_KINDS, GPUDockerSpawner, size_in_bytes

# NVIDIA's name for GPUs advertised to Swarm (dockerd's node-generic-resources)
SWARM_GPU_RESOURCE = "NVIDIA-GPU"

# a task in one of these states has, or may still get, a running process
TASK_ALIVE = frozenset({"new", "pending", "assigned", "accepted", "preparing", "ready", "starting", "running"})
# ended, and never to run again
TASK_ENDED = frozenset({"complete", "shutdown", "failed", "rejected", "remove", "orphaned"})


@dataclass(frozen=True)
class ServiceDevices:
    """What a service needs to hold exactly the allocated devices on their node."""

    constraints: list[str]
    env: dict[str, str]
    generic_resources: dict[str, int] = field(default_factory=dict)
    nano_cpus: int | None = None


def allocation_service_settings(allocation: dict[str, Any], gpu_resource: str = SWARM_GPU_RESOURCE) -> ServiceDevices:
    """The placement, environment and resources of a server holding `allocation` on a swarm."""
    devices = allocation["devices"]
    node = allocation.get("node") or ""
    if not node or not re.fullmatch(r"[A-Za-z0-9_.-]+", node):
        # an allocation without a Swarm node id would let Swarm put the server anywhere
        raise ValueError(f"allocation {allocation.get('id')} names no Swarm node ({node!r})")
    env = {"GPUHUB_ALLOCATION": allocation["id"], "GPUHUB_DEVICES": ",".join(d["uuid"] for d in devices)}
    gpus = [d.get("docker_device_id") or d["uuid"] for d in devices if d.get("kind") in GPU_KINDS]
    slices = [d for d in devices if d.get("kind") == "cpu-slice"]
    generic: dict[str, int] = {}
    nano_cpus = None
    if gpus:
        env["NVIDIA_VISIBLE_DEVICES"] = env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
        if gpu_resource:
            generic[gpu_resource] = len(gpus)
    else:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
        env["CUDA_VISIBLE_DEVICES"] = ""
    if slices:
        cores = sum(int(d.get("cores") or 0) for d in slices)
        env["POCL_MAX_PTHREAD_COUNT"] = env["POCL_CPU_MAX_CU_COUNT"] = str(cores)
        nano_cpus = cores * 10**9 if cores else None
    return ServiceDevices([f"node.id=={node}"], env, generic, nano_cpus)


def home_placement(node: str) -> ServiceDevices | None:
    """A server without devices whose home is on `node` ("": none yet): placed there."""
    return ServiceDevices([f"node.id=={node}"], {}) if node else None


def tmpfs_mounts(host_config: dict[str, Any]) -> list[Mount]:
    """The container's tmpfs (GPUDockerSpawner's host config) as service mounts; /dev/shm too,
    which a service cannot size otherwise."""
    mounts = []
    for path, options in (host_config.get("tmpfs") or {}).items():
        size = next((o.split("=", 1)[1] for o in options.split(",") if o.startswith("size=")), None)
        mounts.append(Mount(path, None, type="tmpfs", tmpfs_size=int(size) if size else None, tmpfs_mode=0o1777))
    if host_config.get("shm_size"):
        mounts.append(Mount("/dev/shm", None, type="tmpfs", tmpfs_size=size_in_bytes(str(host_config["shm_size"])),
                            tmpfs_mode=0o1777))
    return mounts


def service_create_kwargs(*, name: str, image: str, env: dict[str, str], args: list[str], labels: dict[str, str],
                          mounts: list[Mount], host_config: dict[str, Any], devices: ServiceDevices | None,
                          network: str, mem_limit: int | None, cpu_limit: float | None,
                          stop_grace_period: float) -> dict[str, Any]:
    """The arguments of docker.APIClient.create_service for one server (pure; see the module)."""
    container = ContainerSpec(
        image=image, args=args, env={**env, **(devices.env if devices else {})}, labels=labels,
        mounts=[*mounts, *tmpfs_mounts(host_config)],
        read_only=bool(host_config.get("read_only")), cap_drop=host_config.get("cap_drop"),
        stop_grace_period=int(stop_grace_period * 1e9))
    nano = devices.nano_cpus if devices and devices.nano_cpus else None
    if cpu_limit:
        nano = min(nano, int(cpu_limit * 1e9)) if nano else int(cpu_limit * 1e9)
    resources = Resources(cpu_limit=nano, mem_limit=mem_limit,
                          generic_resources=(devices.generic_resources or None) if devices else None)
    if host_config.get("pids_limit"):
        # Limits.Pids (API 1.41, Docker 20.10); docker-py has no argument for it
        resources.setdefault("Limits", {})["Pids"] = int(host_config["pids_limit"])
    task = TaskTemplate(
        container_spec=container, resources=resources,
        # a server that exits stays stopped, as on one host: the hub sees it and releases its devices
        restart_policy=RestartPolicy(condition="none"),
        placement=Placement(constraints=devices.constraints if devices else None),
        networks=[network] if network else None)
    return {"name": name, "task_template": task, "labels": labels, "mode": ServiceMode("replicated", replicas=1),
            "endpoint_spec": EndpointSpec(mode="dnsrr")}


def task_address(task: dict[str, Any], network: str) -> str:
    """The task's IP address on `network` (by name), or "" when it has none there (yet)."""
    for attachment in task.get("NetworksAttachments") or ():
        if ((attachment.get("Network") or {}).get("Spec") or {}).get("Name") == network:
            for address in attachment.get("Addresses") or ():
                return address.split("/", 1)[0]
    return ""


def task_problem(task: dict[str, Any]) -> str:
    """What Swarm says about a task ("pending: no suitable node ..."), for messages."""
    status = task.get("Status") or {}
    text = status.get("Err") or status.get("Message") or ""
    return f"{status.get('State', '?')}: {text}" if text else str(status.get("State", "?"))


class GPUSwarmSpawner(GPUDockerSpawner, SwarmSpawner):
    swarm_gpu_resource = Unicode(
        SWARM_GPU_RESOURCE,
        config=True,
        help="""The generic resource a GPU node advertises its GPUs as (dockerd's
        node-generic-resources, NVIDIA's name NVIDIA-GPU); a GPU server asks Swarm for as many
        as it holds. Empty: ask for none (nodes that advertise nothing).""",
    )

    task_end_timeout = Float(
        60,
        config=True,
        help="""After a stop, how long to wait for Swarm to report the server's task ended. Not
        ended by then: the service is left in place and its devices stay allocated (the state
        remembers them; see release_retry_seconds).""",
    )

    release_retry_seconds = Float(
        15,
        config=True,
        help="""When a stop could not confirm that the server's task ended (its node down or cut
        off), how often the hub asks Swarm again; once Swarm reports it ended (the node is
        back), the devices are released, without waiting for the person's next start. The GPU
        monitor cannot do this for other nodes, as it does for its own: it would need Swarm's
        task list, which holds every server's token. After a hub restart, the next start or
        stop of the server does it.""",
    )

    home_node = Unicode(
        "",
        help="""The Swarm node id holding this server's home volume: where it last ran (state, not
        configuration; kept when the server stops).""",
    )
    _home_hostname = ""

    _check_command = "docker service ps "
    _remove_command = "docker service rm"
    _service_devices: ServiceDevices | None = None
    _release_retry: asyncio.Task | None = None

    @default("pull_policy")
    def _default_pull_policy(self):
        return "skip"  # each node pulls from the registry the image names

    @default("cmd")
    def _default_cmd(self):
        # DockerSpawner reads the image's CMD from the local engine, the manager's, which need not
        # have the image: gpuhub's single-user images all run this (images/singleuser.Dockerfile)
        return ["jupyterhub-singleuser"]

    def _apply_allocation(self, allocation: dict[str, Any]) -> None:
        try:
            self._service_devices = allocation_service_settings(allocation, self.swarm_gpu_resource)
        except ValueError as e:
            raise RuntimeError(f"cannot place {self._log_name}'s server: {e}") from None

    async def start(self):
        self._service_devices = None
        return await super().start()

    async def _check_placement(self) -> None:
        """Refuse at once, with a sentence, when the node holding this server's home cannot take
        it; forget a node that has left the swarm."""
        if not self.home_node:
            return
        try:
            node = await self.docker("inspect_node", self.home_node)
        except docker.errors.NotFound:
            self.log.warning("%s's home was on node %s, which has left the swarm: starting with a new home",
                             self._log_name, self.home_node)
            self._report(12, f"Your earlier home was on node {self.home_node}, which has left the cluster: "
                             "this server starts with a new, empty home")
            self.home_node = self._home_hostname = ""
            return
        self._home_hostname = (node.get("Description") or {}).get("Hostname") or self.home_node
        state = ((node.get("Status") or {}).get("State") or "").lower()
        availability = ((node.get("Spec") or {}).get("Availability") or "").lower()
        paused = {"pause": "paused", "drain": "drained"}.get(availability, availability)
        why = "down" if state != "ready" else "" if availability == "active" else f"{paused} by an administrator"
        if why:
            raise web.HTTPError(503, f"Your files are on node {self._home_hostname}, which is {why}: this server "
                                     "can start only there (the cluster has no storage shared by every node). "
                                     "Try again later, or ask an administrator.")

    def _required_node(self) -> str:
        return self.home_node

    def _refusal_note(self) -> str:
        if not self.home_node:
            return ""
        return (f". Your files are on node {self._home_hostname or self.home_node}, so this server can start only "
                "there (the cluster has no storage shared by every node)")

    async def create_object(self):
        self._report(30, "Creating the server's Swarm service")
        labels = self._render_templates(self.extra_create_kwargs.get("labels") or {})
        host_config = self._render_templates(self.extra_host_config)
        mounts = [
            Mount(vol["bind"], source, type="bind" if source.startswith("/") else "volume",
                  read_only=vol["mode"] == "ro")
            for source, vol in self.volume_binds.items()
        ]
        env = self.get_env()
        # A service's tmpfs is noexec (no mount options before API 1.46), and PoCL loads the
        # kernels it compiles from its cache: keep that cache in the home volume instead.
        env["POCL_CACHE_DIR"] = f"{self.notebook_dir or '/home/jovyan'}/.cache/pocl"
        kwargs = service_create_kwargs(
            name=self.object_name, image=self.image, env=env, args=await self.get_command(),
            labels=labels, mounts=mounts, host_config=host_config,
            devices=self._service_devices or home_placement(self.home_node),
            network=self.network_name, mem_limit=self.mem_limit, cpu_limit=self.cpu_limit,
            stop_grace_period=10)
        return await self.docker("create_service", **kwargs)

    async def start_object(self):
        """Wait until Swarm runs the server's task; a task that ended instead is an error with
        Swarm's reason. While it waits (pending for resources, pulling the image), the spawn
        page says what Swarm says."""
        said = ""
        while True:
            task = await self.get_task()
            if task is None:
                raise RuntimeError(f"Swarm has no task for service {self.object_name}")
            state = (task.get("Status") or {}).get("State", "")
            if state == "running":
                # the home volume now exists on that node: the next start goes back there
                self.home_node = task.get("NodeID") or self.home_node
                return
            if state in TASK_ENDED:
                raise RuntimeError(f"Swarm could not start the server ({task_problem(task)})")
            problem = task_problem(task)
            if problem != said:
                said = problem
                self._report(40, f"Swarm: {problem}")
            await asyncio.sleep(0.5)

    async def get_ip_and_port(self):
        """The running task's address on the users' network (see the module: not the name)."""
        task = await self.get_task()
        address = task_address(task or {}, self.network_name)
        if not address:
            raise RuntimeError(f"Swarm reports no address of {self.object_name}'s task on network {self.network_name}")
        return address, self.port

    async def poll(self):
        """None while the server's task runs on a node Swarm reports up; otherwise why not. A
        node that is down keeps its tasks `running` in the manager's view (it cannot say
        otherwise): its servers are unreachable, and the hub is told they stopped. Their
        devices stay allocated until Swarm confirms the task ended (_container_gone), which
        it can only once the node is back: a node that was cut off, not stopped, may still run
        them."""
        task = await self.get_task()
        if task is None:
            return 0  # no service, or no task: nothing runs
        if (task.get("Status") or {}).get("State") not in TASK_ALIVE:
            return task_problem(task)
        node_id = task.get("NodeID")
        if not node_id:
            return None  # pending: not placed yet
        try:
            node = await self.docker("inspect_node", node_id)
        except docker.errors.APIError as e:
            self.log.warning("cannot tell whether %s's node %s is up: %s", self._log_name, node_id, e)
            return None
        state = ((node.get("Status") or {}).get("State") or "").lower()
        if state == "down":
            hostname = (node.get("Description") or {}).get("Hostname") or node_id
            return f"its node {hostname} is down"
        return None

    def get_state(self):
        state = super().get_state()
        if self.home_node:
            state["home_node"] = self.home_node
        return state

    def load_state(self, state):
        super().load_state(state)
        self.home_node = state.get("home_node", "")

    # clear_state (after every stop) keeps home_node: the volume stays on its node

    async def _tasks(self) -> list[dict[str, Any]]:
        return await self.docker("tasks", filters={"service": self.object_name})

    async def _container_gone(self) -> bool:
        """Whether Swarm confirms that no task of this server's service may still run: the
        service does not exist, or every task has ended."""
        try:
            await self.docker("inspect_service", self.object_name)
            tasks = await self._tasks()
        except docker.errors.NotFound:
            return True
        except Exception as e:  # noqa: BLE001 - not knowing counts as "not gone"
            self.log.warning("cannot tell whether %s's service %s is gone: %s", self._log_name, self.object_name, e)
            return False
        return all((t.get("Status") or {}).get("State") in TASK_ENDED for t in tasks)

    def _keep(self, allocation_id: str, why: str) -> None:
        super()._keep(allocation_id, why)
        if self._release_retry is None or self._release_retry.done():
            self._release_retry = asyncio.get_running_loop().create_task(self._release_once_ended(allocation_id))

    async def _release_once_ended(self, allocation_id: str) -> None:
        """Every release_retry_seconds while `allocation_id` is kept for a task Swarm has not
        reported ended: once it has, the devices released and the server's state saved without
        them. A start or stop under way is left to do it. The service (no replica) stays until
        the next start replaces it: removing it here could race that start's new one."""
        while True:
            await asyncio.sleep(self.release_retry_seconds)
            if self.allocation_id != allocation_id or not self._allocation_outlives_server:
                return  # a start or stop released it
            if self.pending or not await self._container_gone():
                continue
            if self.allocation_id != allocation_id or self.pending:
                continue  # a start or stop began while Swarm was asked
            await self._release("its task ended once its node was back", allocation_id)
            db = getattr(self.user, "db", None)
            if self.orm_spawner is not None and db is not None:
                self.orm_spawner.state = self.get_state()
                db.commit()
            return

    async def stop_object(self):
        """Scale the service to no replica and wait for Swarm to report its task ended."""
        try:
            service = await self.docker("inspect_service", self.object_name)
            await self.docker("update_service", service["ID"], version=service["Version"]["Index"],
                              mode=ServiceMode("replicated", replicas=0), fetch_current_spec=True)
        except docker.errors.NotFound:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.task_end_timeout
        while not await self._container_gone():
            if loop.time() > deadline:
                raise RuntimeError(f"Swarm has not ended {self.object_name}'s task after {self.task_end_timeout:.0f}s")
            await asyncio.sleep(0.5)

    async def remove_object(self):
        if not await self._container_gone():
            # removing it would hide a process that may still use the devices
            self.log.warning("not removing %s's service %s: its task has not ended", self._log_name, self.object_name)
            return
        try:
            await self.docker("remove_service", self.object_name)
        except docker.errors.NotFound:
            pass

    async def _remove_container(self) -> None:
        # after a failed start: the task ended first (scaled to none), then the service removed
        try:
            await self.stop_object()
            await self.remove_object()
        except (RuntimeError, docker.errors.APIError) as e:
            # _container_gone() then keeps the devices
            self.log.warning("could not stop and remove %s's service %s after its failed start: %s",
                             self._log_name, self.object_name, e)
            return
        self.object_id = ""
