"""A Docker Swarm of three engines on this one machine, for testing gpuhub across GPU nodes.

Each node is a `dockerd` of its own (data, exec root, socket and log under WORKDIR) in its own
network namespace, wired to a host bridge, and in its own UTS namespace so that Swarm sees three
hostnames. Node 1 is the manager, 2 and 3 are workers; node 3 plays a GPU node: it advertises two
fake NVIDIA-GPU generic resources and runs its containers through a stand-in for NVIDIA's
runtime that records what each container asked for (tests/standins/nvidia-runtime). A real
registry (Debian's docker-registry) serves images to the nodes, as a cluster's would: the host's
daemon pushes to it on loopback, the nodes pull from it over the bridge.

Measured with Docker 20.10 on this kernel, and relied on by the tests: a service's virtual IP
needs IPVS, which the kernel lacks, so services that others connect to use `--endpoint-mode
dnsrr`; a service spec cannot choose a runtime, so the GPU node makes the stand-in its default;
Swarm tells a container the generic resources it assigned in DOCKER_RESOURCE_NVIDIA-GPU and sets
no NVIDIA_VISIBLE_DEVICES (gpuhub must set that itself).

Everything it makes is named or commented `gpuhub-sw`, so that `cleanup_leftovers` (run by
`start`) removes what a killed earlier run left and `stop` leaves nothing behind. Needs root.
The recipe and its traps: /work/shared/ENVIRONMENT.md, "A multi-node Docker Swarm on one machine".
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

from .stack import wait_for

ROOT = Path(__file__).resolve().parents[2]
# short: the daemons' unix sockets live under it (a socket path holds at most 107 bytes)
WORKDIR = Path("/tmp/gpuhub-sw")
BRIDGE = "br-gpuhub-sw"
GATEWAY = "10.99.0.1"
PREFIX = 24
# iptables rules the harness adds carry this comment, which is how teardown finds them
RULE_COMMENT = "gpuhub-sw harness"
REGISTRY_PORT = 5099
# overlay networks' subnets, away from the bridge's 10.99.0.0/24 (Swarm's default pool is 10.0.0.0/8)
ADDRESS_POOL = "10.98.0.0/16"
GPU_RESOURCE = "NVIDIA-GPU"
FAKE_GPU_UUIDS = ("GPU-5a4f6c1e-0000-4000-8000-00000000a001", "GPU-5a4f6c1e-0000-4000-8000-00000000a002")
NVIDIA_STANDIN = ROOT / "tests" / "standins" / "nvidia-runtime" / "nvidia-container-runtime-standin"
STANDIN_RECORDS_ENV = "GPUHUB_NVIDIA_STANDIN_RECORDS"
# held from start() to stop(): a second run on this machine waits instead of tearing this one down
LOCK = Path("/tmp/gpuhub-sw.lock")
LOCK_DEADLINE = 900
DAEMON_DEADLINE = 60
JOIN_DEADLINE = 60
ARTIFACTS = ROOT / "test-artifacts"
# Each node's Docker network namespaces (its exec root's netns), as a Swarm mount source
# template: WORKDIR/<hostname> links to the node's directory (GPUHUB_DOCKER_NETNS_DIR)
NETNS_DIR_TEMPLATE = str(WORKDIR / "{{.Node.Hostname}}" / "exec" / "netns")


class SwarmError(RuntimeError):
    """The test swarm could not be started; the message says which step and shows the log."""


def run(*args: str, check: bool = True, timeout: float = 60, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, check=check, timeout=timeout, **kwargs)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.5):
    """`predicate()`'s first truthy value, polled until `timeout` seconds pass (then TimeoutError):
    the stack harness's `wait_for`, with `what` before `interval` as this module's calls give it."""
    return wait_for(predicate, timeout, interval=interval, what=what)


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError as e:
        return f"({path} unreadable: {e})"


@dataclass(frozen=True)
class Node:
    name: str  # sw1, sw2, sw3
    index: int
    workdir: Path
    gpu: bool = False

    @property
    def manager(self) -> bool:
        return self.index == 1

    @property
    def hostname(self) -> str:
        return f"gpuhub-{self.name}"

    @property
    def netns(self) -> str:
        return f"gpuhub-{self.name}"

    @property
    def veth(self) -> str:
        return f"vgpuhub-{self.name}"

    @property
    def address(self) -> str:
        return f"10.99.0.{10 + self.index}"

    @property
    def dir(self) -> Path:
        return self.workdir / self.name

    @property
    def sock(self) -> Path:
        return self.dir / "docker.sock"

    @property
    def pidfile(self) -> Path:
        return self.dir / "dockerd.pid"

    @property
    def log(self) -> Path:
        return self.dir / "dockerd.log"


class Swarm:
    """Three engines in a swarm: `nodes[0]` the manager, `nodes[1]` a worker, `nodes[2]` the
    GPU-simulating worker (also `gpu_node`). Use as a context manager, or start()/stop()."""

    def __init__(self, workdir: Path = WORKDIR, registry_port: int = REGISTRY_PORT):
        self.workdir = workdir
        self.registry_port = registry_port
        self.nodes = [Node(f"sw{i}", i, workdir, gpu=(i == 3)) for i in (1, 2, 3)]
        self.node_ids: dict[str, str] = {}
        self._lock: int | None = None

    # ---- the nodes ------------------------------------------------------------------------------
    @property
    def manager(self) -> Node:
        return self.nodes[0]

    @property
    def workers(self) -> list[Node]:
        return self.nodes[1:]

    @property
    def gpu_node(self) -> Node:
        return next(node for node in self.nodes if node.gpu)

    def node(self, name: str) -> Node:
        return next(node for node in self.nodes if node.name == name)

    def docker(self, node: Node | str, *args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        """The docker CLI against `node`'s engine (never the host's)."""
        node = self.node(node) if isinstance(node, str) else node
        result = run("docker", "-H", f"unix://{node.sock}", *args, check=False, timeout=timeout)
        if check and result.returncode != 0:
            raise subprocess.CalledProcessError(result.returncode, result.args, result.stdout, result.stderr)
        return result

    # ---- the registry ---------------------------------------------------------------------------
    @property
    def registry_pidfile(self) -> Path:
        return self.workdir / "registry.pid"

    @property
    def registry_log(self) -> Path:
        return self.workdir / "registry.log"

    @property
    def registry_for_nodes(self) -> str:
        return f"{GATEWAY}:{self.registry_port}"

    @property
    def registry_for_host(self) -> str:
        # the host's daemon treats registries on 127.0.0.0/8 as insecure (plain HTTP) by default
        return f"127.0.0.1:{self.registry_port}"

    def push(self, image: str, name: str | None = None) -> str:
        """`image` (on the host's daemon) pushed to the swarm's registry, as `name` (default: its
        last path part); the reference the nodes pull it by. The host keeps no extra tag."""
        name = name or image.split("/")[-1]
        if ":" not in name and "@" not in name:
            name += ":latest"
        pushed = f"{self.registry_for_host}/{name}"
        run("docker", "tag", image, pushed)
        try:
            result = run("docker", "push", pushed, check=False, timeout=600)
            if result.returncode != 0:
                raise SwarmError(f"docker push {pushed} failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}\n"
                                 f"registry log ({self.registry_log}):\n{tail(self.registry_log)}")
        finally:
            run("docker", "rmi", pushed, check=False)
        return f"{self.registry_for_nodes}/{name}"

    # ---- the GPU node's runtime ------------------------------------------------------------------
    @property
    def runtime_records_file(self) -> Path:
        return self.workdir / "nvidia-runtime.records"

    def runtime_records(self) -> list[dict]:
        """What the NVIDIA runtime stand-in saw, one dict per container created on the GPU node:
        {"container": ID, "NVIDIA_VISIBLE_DEVICES": VALUE or "<unset>"}."""
        try:
            lines = self.runtime_records_file.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in lines if line.strip()]

    # ---- lifecycle ------------------------------------------------------------------------------
    def __enter__(self) -> Swarm:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def start(self) -> Swarm:
        if os.geteuid() != 0:
            raise SwarmError("the test swarm needs root (network namespaces, a bridge, iptables, dockerd)")
        for tool in ("dockerd", "docker", "docker-registry", "runc", "nsenter", "unshare", "ip", "iptables"):
            if shutil.which(tool) is None:
                raise SwarmError(f"{tool} not found: run bin/setup-host with GPUHUB_SETUP_SWARM=1 (bin/test does)")
        self._take_lock()
        self.cleanup_leftovers()
        try:
            self.workdir.mkdir(parents=True)
            self._network()
            self._registry()
            for node in self.nodes:
                self._start_daemon(node)
            for node in self.nodes:
                self._wait_daemon(node)
            self._form_swarm()
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        """Everything `start` made removed: daemons and registry by pid file, then the
        namespaces, the bridge, the iptables rules and the work directory."""
        daemons = [pid for node in self.nodes for pid in pid_from(node.pidfile, "dockerd")]
        terminate(daemons + pid_from(self.registry_pidfile, "docker-registry"))
        self.cleanup_leftovers()
        if self._lock is not None:
            os.close(self._lock)  # releases the flock
            self._lock = None

    def _take_lock(self) -> None:
        """Whatever this harness left behind belongs to a dead run once the lock is free: a
        killed process's flock goes with it."""
        fd = os.open(LOCK, os.O_RDWR | os.O_CREAT, 0o644)

        def locked() -> bool:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return False
            return True

        try:
            wait_until(locked, LOCK_DEADLINE, f"{LOCK} free (another test swarm runs on this machine)", interval=2)
        except TimeoutError:
            os.close(fd)
            raise
        self._lock = fd

    def cleanup_leftovers(self) -> None:
        """Whatever an earlier run of this harness left (it may have been killed): its processes,
        mounts, namespaces, links, iptables rules and work directory. Touches nothing else."""
        marker = str(self.workdir) + "/"
        terminate(processes_mentioning(marker))
        unmount_under(self.workdir)
        for node in self.nodes:
            if Path(f"/run/netns/{node.netns}").exists():
                run("ip", "netns", "delete", node.netns, check=False)
            if Path(f"/sys/class/net/{node.veth}").exists():
                run("ip", "link", "delete", node.veth, check=False)
        if Path(f"/sys/class/net/{BRIDGE}").exists():
            run("ip", "link", "delete", BRIDGE, check=False)
        for chain in ("FORWARD", "INPUT"):
            for rule in iptables_rules(chain):
                run("iptables", "-D", *rule, check=False)
        shutil.rmtree(self.workdir, ignore_errors=True)

    # ---- steps of start() -----------------------------------------------------------------------------
    def _network(self) -> None:
        run("ip", "link", "add", BRIDGE, "type", "bridge")
        run("ip", "addr", "add", f"{GATEWAY}/{PREFIX}", "dev", BRIDGE)
        run("ip", "link", "set", BRIDGE, "up")
        for node in self.nodes:
            run("ip", "netns", "add", node.netns)
            run("ip", "link", "add", node.veth, "type", "veth", "peer", "name", "eth0", "netns", node.netns)
            run("ip", "link", "set", node.veth, "master", BRIDGE, "up")
            run("ip", "-n", node.netns, "addr", "add", f"{node.address}/{PREFIX}", "dev", "eth0")
            run("ip", "-n", node.netns, "link", "set", "eth0", "up")
            run("ip", "-n", node.netns, "link", "set", "lo", "up")
        comment = ["-m", "comment", "--comment", RULE_COMMENT]
        # The host's dockerd sets FORWARD's policy to DROP, and bridged frames go through iptables
        # (bridge-nf-call-iptables): without this the nodes cannot reach each other.
        run("iptables", "-I", "FORWARD", "-i", BRIDGE, "-o", BRIDGE, *comment, "-j", "ACCEPT")
        # The registry listens on every address (the host pushes on loopback, the nodes pull over
        # the bridge); nothing else may reach it.
        port = ["-p", "tcp", "--dport", str(self.registry_port)]
        run("iptables", "-I", "INPUT", *port, "!", "-i", "lo", *comment, "-j", "DROP")
        run("iptables", "-I", "INPUT", *port, "-i", BRIDGE, *comment, "-j", "ACCEPT")

    def _registry(self) -> None:
        if port_in_use(self.registry_port):
            raise SwarmError(f"port {self.registry_port} is taken: the test registry cannot listen there")
        storage = self.workdir / "registry"
        storage.mkdir()
        config = self.workdir / "registry.yml"
        config.write_text(json.dumps({  # YAML's superset of JSON: no YAML library needed
            "version": 0.1,
            "log": {"level": "warn"},
            "storage": {"filesystem": {"rootdirectory": str(storage)}, "delete": {"enabled": True}},
            "http": {"addr": f":{self.registry_port}"},
        }, indent=2))
        with open(self.registry_log, "wb") as log:
            proc = subprocess.Popen(["docker-registry", "serve", str(config)], stdout=log, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)
        self.registry_pidfile.write_text(f"{proc.pid}\n")

        def answers() -> bool:
            if proc.poll() is not None:
                raise SwarmError(f"docker-registry exited ({proc.returncode}):\n{tail(self.registry_log)}")
            with socket.create_connection(("127.0.0.1", self.registry_port), timeout=1):
                return True

        wait_until(answers, 20, "the test registry listening")

    def _daemon_command(self, node: Node) -> list[str]:
        config = node.dir / "daemon.json"
        config.write_text("{}\n")  # never the host's /etc/docker/daemon.json
        dockerd = [
            "dockerd", "--config-file", str(config),
            "--data-root", str(node.dir / "data"), "--exec-root", str(node.dir / "exec"),
            "--pidfile", str(node.pidfile), "-H", f"unix://{node.sock}",
            "--bip", f"172.30.{node.index}.1/24", "--insecure-registry", self.registry_for_nodes,
            "--shutdown-timeout", "3",
        ]
        if node.gpu:
            for gpu in FAKE_GPU_UUIDS:
                dockerd += ["--node-generic-resource", f"{GPU_RESOURCE}={gpu}"]
            # Swarm services cannot choose a runtime (no --runtime in a service spec): a GPU node
            # makes NVIDIA's the default, as NVIDIA documents for Swarm.
            dockerd += ["--add-runtime", f"nvidia={NVIDIA_STANDIN}", "--default-runtime", "nvidia"]
        # `nsenter --net`, not `ip netns exec`, which remounts /sys (dockerd then finds no devices
        # cgroup); `unshare --uts` gives the daemon a hostname of its own, which Swarm reports.
        return ["nsenter", f"--net=/run/netns/{node.netns}", "unshare", "--uts",
                "sh", "-c", 'hostname "$0" && exec "$@"', node.hostname, *dockerd]

    def stop_engine(self, node: Node) -> None:
        """Stop one node's dockerd, as when its host goes down: its containers stop with it, and
        the managers see the node down once its heartbeat runs out."""
        terminate(pid_from(node.pidfile, "dockerd"))

    def start_engine(self, node: Node) -> None:
        """Start a stopped node's dockerd again, on the same data: it is the same swarm node."""
        self._start_daemon(node)
        self._wait_daemon(node)

    def _start_daemon(self, node: Node) -> None:
        node.dir.mkdir(exist_ok=True)
        link = node.workdir / node.hostname  # NETNS_DIR_TEMPLATE's path to the node's directory
        if not link.is_symlink():
            link.symlink_to(node.dir)
        env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"}
        if node.gpu:
            env[STANDIN_RECORDS_ENV] = str(self.runtime_records_file)
        with open(node.log, "ab") as log:
            subprocess.Popen(self._daemon_command(node), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                             env=env, start_new_session=True)

    def _wait_daemon(self, node: Node) -> None:
        try:
            wait_until(lambda: self.docker(node, "version", "--format", "{{.Server.Version}}", timeout=10),
                       DAEMON_DEADLINE, f"dockerd of {node.name} answering on {node.sock}")
        except TimeoutError as e:
            raise SwarmError(f"{e}\ndockerd log ({node.log}):\n{tail(node.log)}") from None

    def _form_swarm(self) -> None:
        manager = self.manager
        self.docker(manager, "swarm", "init", "--advertise-addr", manager.address,
                    "--default-addr-pool", ADDRESS_POOL, timeout=60)
        token = self.docker(manager, "swarm", "join-token", "-q", "worker").stdout.strip()
        for node in self.workers:
            try:
                result = self.docker(node, "swarm", "join", "--advertise-addr", node.address, "--token", token,
                                     f"{manager.address}:2377",
                                     check=False, timeout=JOIN_DEADLINE)
                failure = result.stderr.strip() if result.returncode else ""
            except subprocess.TimeoutExpired:
                failure = f"no answer within {JOIN_DEADLINE}s"
            if failure:
                raise SwarmError(f"{node.name} could not join the swarm at {manager.address}:2377: {failure}\n"
                                 f"its dockerd log ({node.log}):\n{tail(node.log)}\n"
                                 f"the manager's ({manager.log}):\n{tail(manager.log, 10)}")
        for node in self.nodes:
            self.node_ids[node.name] = self.docker(node, "info", "--format", "{{.Swarm.NodeID}}").stdout.strip()

        def all_ready() -> bool:
            out = self.docker(manager, "node", "ls", "--format", "{{.ID}} {{.Status}}").stdout
            ready = {line.split()[0] for line in out.splitlines() if line.split()[1:] == ["Ready"]}
            return ready == set(self.node_ids.values())

        wait_until(all_ready, JOIN_DEADLINE, "all three nodes Ready")
        for node in self.nodes:
            self.docker(manager, "node", "update", "--label-add", f"gpuhub.node={node.name}", self.node_ids[node.name])

    # ---- services, for the tests ------------------------------------------------------------------
    def tasks(self, service: str) -> list[dict]:
        """`docker service ps` of `service` on the manager, one dict per task (newest first)."""
        out = self.docker(self.manager, "service", "ps", "--no-trunc", "--format", "{{json .}}", service).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def task(self, service: str) -> dict:
        """The swarm's record (`docker inspect` of the task) of `service`'s one current task."""
        ids = self.docker(self.manager, "service", "ps", "-q", "--no-trunc", "--filter", "desired-state=running",
                          service).stdout.split()
        if len(ids) != 1:
            raise AssertionError(f"service {service} has {len(ids)} tasks meant to run, not one")
        return json.loads(self.docker(self.manager, "inspect", "--format", "{{json .}}", ids[0]).stdout)

    def running(self, service: str, timeout: float = 120) -> tuple[Node, str]:
        """The node where `service`'s one task runs and its container's id there, once it runs."""

        def started():
            task = self.task(service)
            if task["Status"]["State"] in ("failed", "rejected", "shutdown", "complete"):
                raise SwarmError(f"service {service}'s task is {task['Status']['State']}: {task['Status'].get('Err')}")
            return task if task["Status"]["State"] == "running" else None

        try:
            task = wait_until(started, timeout, f"service {service} running")
        except TimeoutError as e:
            raise TimeoutError(f"{e}; its tasks: {self.tasks(service)}") from None
        node = next(n for n in self.nodes if self.node_ids[n.name] == task["NodeID"])
        return node, task["Status"]["ContainerStatus"]["ContainerID"]

    def dump_logs(self, name: str) -> Path:
        """The daemons' and the registry's logs and the swarm's services and tasks, copied to
        test-artifacts/<name>/ (for a failed test)."""
        target = ARTIFACTS / name.replace("/", "_")
        target.mkdir(parents=True, exist_ok=True)
        for node in self.nodes:
            if node.log.exists():
                shutil.copy(node.log, target / f"dockerd-{node.name}.log")
        if self.registry_log.exists():
            shutil.copy(self.registry_log, target / "registry.log")
        services = self.docker(self.manager, "service", "ls", "-q", check=False).stdout.split()
        if services:
            tasks = self.docker(self.manager, "service", "ps", "--no-trunc", *services, check=False)
            (target / "swarm-tasks.txt").write_text(tasks.stdout + tasks.stderr)
        return target


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


# ---- processes, mounts and rules ---------------------------------------------------------------
def process_alive(pid: int) -> bool:
    """Whether `pid` still runs; a child of ours that exited is reaped (a zombie counts as gone)."""
    try:
        if os.waitpid(pid, os.WNOHANG)[0] == pid:
            return False
    except ChildProcessError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def terminate(pids: list[int], grace: float = 30) -> None:
    """SIGTERM to each of `pids` at once, SIGKILL to those still there after `grace` seconds."""
    for pid in pids:
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + grace
    while any(process_alive(pid) for pid in pids) and time.monotonic() < deadline:
        time.sleep(0.1)
    for pid in pids:
        if process_alive(pid):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    wait_until(lambda: not any(process_alive(pid) for pid in pids), 10, f"processes {pids} gone after SIGKILL",
               interval=0.1)


def pid_from(pidfile: Path, program: str) -> list[int]:
    """The pid `pidfile` names, if that process is still `program` (a pid may have been reused)."""
    try:
        pid = int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return []
    return [pid] if program in cmdline(pid) else []


def processes_mentioning(text: str) -> list[int]:
    """Pids whose command line mentions `text` (the harness's work directory): daemons, their
    containerd and shims (which mostly stop with their daemon), the registry."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and int(entry.name) != os.getpid() and text in cmdline(int(entry.name)):
            found.append(int(entry.name))
    return sorted(found)


def unmount_under(directory: Path) -> None:
    """Lazily unmount everything mounted below `directory`, deepest first (a killed dockerd leaves
    its overlay and network-namespace mounts), so removing the directory never reaches through one."""
    prefix = str(directory) + "/"
    with open("/proc/self/mountinfo") as f:
        points = [line.split()[4] for line in f]
    for point in sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True):
        run("umount", "-l", point, check=False)


def iptables_rules(chain: str) -> list[list[str]]:
    """The harness's rules in `chain`, each as the arguments that delete it (after -D)."""
    out = run("iptables", "-S", chain, check=False).stdout
    return [shlex.split(line)[1:] for line in out.splitlines() if line.startswith("-A ") and RULE_COMMENT in line]


def port_in_use(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError:
            return True
    return False
