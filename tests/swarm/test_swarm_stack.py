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

import time

import pytest

from ..harness.swarm import FAKE_GPU_UUIDS, GPU_RESOURCE, ROOT, wait_until
from ..harness.swarm_stack import SIMULATED_GPUS, STACK, SwarmStack, answers, deployed_stack

pytestmark = [
    pytest.mark.swarm,
    # the manager is reached by its address, the certificate names localhost: TLS itself is the docker tier's
    pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning"),
]

# reach(host, port): 'open', or why not (tests/fixtures/programs/reach.py)
REACH = (ROOT / "tests" / "fixtures" / "programs" / "reach.py").read_text()
# an OpenCL kernel compiled and run by PoCL in the server (the sum of 2 * 0..7)
DOUBLE_ON_POCL = (
    "import pyopencl as cl, numpy as np; ctx = cl.create_some_context(False); q = cl.CommandQueue(ctx); "
    "a = np.arange(8, dtype=np.float32); b = cl.Buffer(ctx, cl.mem_flags.COPY_HOST_PTR, hostbuf=a); "
    "p = cl.Program(ctx, '__kernel void d(__global float *x) { x[get_global_id(0)] *= 2; }').build(); "
    "p.d(q, a.shape, None, b); cl.enqueue_copy(q, a, b); print(int(a.sum()))")


@pytest.fixture(scope="module")
def stack(swarm, tmp_path_factory):
    with deployed_stack(swarm, tmp_path_factory.mktemp("swarm-stack")) as deployed:
        yield deployed


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


def start_on_both_workers(stack: SwarmStack, users: tuple[str, ...]) -> tuple[dict[str, str], dict]:
    """One server with one device per user (pack: two per worker, so three span both workers):
    {user: its running task}, {user: (allocation id, node)}."""
    for user in users:
        assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
    tasks = {u: running_task(stack, u) for u in users}
    held = {u: held_by(stack)[u] for u in users}
    assert len({node for _, node in held.values()}) == 2  # both workers
    return tasks, held


def stop_all(stack: SwarmStack, users) -> None:
    """Stop whichever of `users`' servers are still there (a test's clean-up)."""
    for user in users:
        if stack.api("GET", f"users/{user}").json().get("servers"):
            stack.stop(user)


def node_state(stack: SwarmStack, node: str) -> str:
    """The monitor's state of `node` (up, lost, drained, ...; "" while its API does not answer)."""
    return next((n["state"] for n in stack.monitor_json("api/devices").get("nodes", ()) if n["id"] == node), "")


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
            wait_until(lambda: node_state(stack, node)
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
        stop_all(stack, (first, second, third))


def test_the_hub_restarted_every_server_on_every_worker_keeps_running_and_keeps_its_devices(stack):
    swarm = stack.swarm
    users = ("rs0", "rs1", "rs2")
    try:
        tasks, held = start_on_both_workers(stack, users)
        hub_task = swarm.docker(swarm.manager, "service", "ps", "-q", "--filter", "desired-state=running",
                                f"{STACK}_hub").stdout.split()
        # the hub's container killed: Swarm starts a new task (a new address). Not `docker service
        # update --force`: the next `docker stack deploy` resets the spec's force counter, and so
        # restarts the hub once more (seen: it killed a spawn in flight in a later test)
        [container] = swarm.docker(swarm.manager, "ps", "-q", "--filter",
                                   f"label=com.docker.swarm.service.name={STACK}_hub").stdout.split()
        swarm.docker(swarm.manager, "kill", container)
        wait_until(lambda: swarm.docker(swarm.manager, "service", "ps", "-q", "--filter", "desired-state=running",
                                        f"{STACK}_hub").stdout.split() not in ([], hub_task), 120, "a new hub task")
        wait_until(lambda: answers(stack), 180, "the restarted hub's API", interval=2)
        # JupyterHub checks each running server as it starts: through netpolicy's rules, which
        # take the new hub's address within GPUHUB_NETPOLICY_SECONDS of Swarm's DNS giving it
        wait_until(lambda: all(stack.api("GET", f"users/{u}").json()["servers"].get("", {}).get("ready")
                               for u in users), 60, "every server checked and ready again", interval=2)
        for user in users:
            assert running_task(stack, user) == tasks[user]
        assert {u: held_by(stack)[u] for u in users} == {u: held[u] for u in users}
        # A token the monitor has not seen is checked with the hub at its new task's address: the
        # monitor's HTTP client resolves the hub's name afresh (gpu_monitor.dns). Found 2026-12-07:
        # with aiodns's cached answer (600 s) it asked the old address and answered 503.
        fresh = {u: stack.api("POST", f"users/{u}/tokens", json={"note": "after the hub's restart"}).json()["token"]
                 for u in users}
        wait_until(lambda: stack.monitor("api/devices", token=fresh[users[0]]).status_code == 200, 30,
                   "the monitor checking a new token with the restarted hub", interval=2)
        # and each server, on both workers, checks its person's there too (its image has no aiodns)
        for user in users:
            wait_until(lambda u=user: stack.get(f"user/{u}/api/status", fresh[u], f"{u}.user.localhost").status_code
                       == 200, 30,
                       f"{user}'s server checking a new token with the restarted hub", interval=2)
    finally:
        stop_all(stack, users)
    assert not set(users) & set(held_by(stack))



def test_servers_cannot_connect_to_one_another_on_one_node_or_across_nodes(stack):
    """Server-to-server isolation on the users' overlay (service netpolicy, command `overlay`, on
    every node: rules in the overlay's own network namespace). Two servers on one worker and a
    third on the other: none reaches another's Jupyter port, on its node or across; each reaches
    the hub's API and the proxy's HTTPS port; the hub and the proxy reach them all."""
    swarm = stack.swarm
    a, b, c = users = ("is0", "is1", "is2")
    try:
        for user in users:
            assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
        assert stack.service_node(a) == stack.service_node(b) != stack.service_node(c)  # pack
        address = {u: task_address_of(stack, u) for u in users}
        probe = REACH + (f"print(reach({address[b]!r}, 8888), reach({address[c]!r}, 8888), "
                         "reach('hub', 8081), reach('proxy', 443))")
        same_node, other_node, hub_api, proxy_https = stack.exec_in(a, "python3", "-c", probe).split()
        assert same_node != "open", f"{a}'s server reached {b}'s on its node at {address[b]}:8888"
        assert other_node != "open", f"{a}'s server reached {c}'s on the other worker at {address[c]}:8888"
        assert (hub_api, proxy_https) == ("open", "open")
        back = stack.exec_in(c, "python3", "-c", REACH + f"print(reach({address[a]!r}, 8888))").strip()
        assert back != "open", f"{c}'s server reached {a}'s across nodes"
        # the proxy (and the hub, which saw each start) reach every one of them
        for user in users:
            r = stack.api("GET", f"users/{user}")
            assert r.json()["servers"][""]["ready"], user
        print(f"\nserver -> server on its node: {same_node}, across nodes: {other_node} and {back}; "
              f"-> hub:8081 {hub_api}, -> proxy:443 {proxy_https}")
        # every node's netpolicy task is running, and says where it put its rules
        tasks = swarm.docker(swarm.manager, "service", "ps", "--filter", "desired-state=running", "--format",
                             "{{.Node}} {{.CurrentState}}", f"{STACK}_netpolicy").stdout.splitlines()
        assert sorted(t.split()[0] for t in tasks) == sorted(n.hostname for n in swarm.nodes), tasks
    finally:
        stop_all(stack, users)


def task_address_of(stack: SwarmStack, user: str) -> str:
    """`user`'s server's address on the users' network, as Swarm gives it."""
    task = stack.swarm.docker(stack.swarm.manager, "inspect", "--format",
                              "{{range .NetworksAttachments}}{{if eq .Network.Spec.Name \"gpuhub-users\"}}"
                              "{{index .Addresses 0}}{{end}}{{end}}", running_task(stack, user)).stdout.strip()
    assert task, f"{user}'s task has no address on gpuhub-users"
    return task.split("/")[0]


def test_a_server_goes_back_to_the_node_holding_its_home_and_is_told_when_that_node_cannot_take_it(stack):
    """Without storage every node shares, a home is a volume on the node the server ran on: the
    next start goes there (with GPUs: the monitor is asked for that node's devices only; without:
    the service is constrained to it), and when that node is full or paused the person is told
    where their files are, though the other worker has free devices."""
    swarm = stack.swarm
    person, others, plain = "hm0", ("hf0", "hf1"), "hm1"
    note = "(written before the restart)"
    try:
        assert stack.start(person, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
        home = stack.service_node(person)
        stack.exec_in(person, "sh", "-c", f"echo '{note}' > /home/jovyan/note.txt")
        stack.stop(person)
        # the other worker alone is paused while two others start: they fill the home's node
        other = next(swarm.node_ids[w.name] for w in swarm.workers if swarm.node_ids[w.name] != home)
        swarm.docker(swarm.manager, "node", "update", "--availability", "pause", other)
        try:
            wait_until(lambda: node_state(stack, other) == "drained", 30, "the other worker drained for the monitor")
            for user in others:
                assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
                assert stack.service_node(user) == home
        finally:
            swarm.docker(swarm.manager, "node", "update", "--availability", "active", other)
        wait_until(lambda: node_state(stack, other) == "up", 30, "the other worker up again")
        hostname = next(n.hostname for n in swarm.nodes if swarm.node_ids[n.name] == home)
        r = stack.start(person, {"profile": "opencl", "gpus": 1})
        assert r.status_code == 503, r.text
        assert "0 free (2 of 2 in use)" in r.text and f"Your files are on node {hostname}" in r.text, r.text
        # its node paused: said before anything is asked of the monitor
        stack.stop(others[0])
        swarm.docker(swarm.manager, "node", "update", "--availability", "pause", home)
        try:
            r = stack.start(person, {"profile": "opencl", "gpus": 1})
            assert r.status_code == 503 and f"on node {hostname}, which is paused" in r.text, r.text
        finally:
            swarm.docker(swarm.manager, "node", "update", "--availability", "active", home)
        wait_until(lambda: node_state(stack, home) == "up", 30, "the home's node up again")
        # room again on the home's node: back there, with the file
        assert stack.start(person, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
        assert stack.service_node(person) == home
        assert stack.exec_in(person, "cat", "/home/jovyan/note.txt").strip() == note
        # a server without GPUs goes back to its home's node too
        assert stack.start(plain, {"profile": "opencl", "gpus": 0}).status_code in (201, 202)
        first = stack.service_node(plain)
        stack.exec_in(plain, "sh", "-c", f"echo '{note}' > /home/jovyan/note.txt")
        stack.stop(plain)
        assert stack.start(plain, {"profile": "opencl", "gpus": 0}).status_code in (201, 202)
        assert stack.service_node(plain) == first
        assert stack.exec_in(plain, "cat", "/home/jovyan/note.txt").strip() == note
    finally:
        stop_all(stack, (person, plain, *others))


def test_a_gpu_server_on_the_simulated_gpu_node_reaches_nvidias_runtime_with_exactly_its_gpus(stack):
    """The GPU path through Swarm: the GPU-simulating node's agent reads FakeNVML with the GPUs its
    engine advertises (tests/swarm/simulated-gpus.yml, deployed as a site's override); a server
    asking for both lands there, holds them as Swarm generic resources, and the node's runtime
    (NVIDIA's, a stand-in here) is given exactly their UUIDs; a second person is refused."""
    swarm = stack.swarm
    node = swarm.node_ids[swarm.gpu_node.name]
    user, second = "gp0", "gp1"
    swarm.docker(swarm.manager, "node", "update", "--label-add", "=".join(SIMULATED_GPUS), node)
    try:
        stack.deploy("-f", str(ROOT / "tests" / "swarm" / "simulated-gpus.yml"),
                     GPUHUB_FAKE_GPU_UUIDS=",".join(FAKE_GPU_UUIDS), GPUHUB_TESTS_DIR=str(ROOT / "tests"))
        wait_until(lambda: sorted((d["uuid"], d["kind"]) for d in stack.monitor_json("api/devices").get("devices", ())
                                  if d["node"] == node) == [(u, "gpu") for u in sorted(FAKE_GPU_UUIDS)],
                   180, f"{swarm.gpu_node.hostname}'s agent reporting its simulated GPUs")
        r = stack.start(user, {"profile": "simulated-gpu", "gpus": 2})
        assert r.status_code in (201, 202), r.text
        assert stack.service_node(user) == node
        [allocation] = [a for a in stack.monitor("api/allocations").json()["allocations"] if a["user"] == user]
        granted = [d["uuid"] for d in allocation["devices"]]
        assert allocation["node"] == node and sorted(granted) == sorted(FAKE_GPU_UUIDS)
        # Swarm counts them as taken, and the runtime was told exactly those, in the grant's order
        service = swarm.docker(swarm.manager, "service", "inspect", "--format",
                               "{{json .Spec.TaskTemplate.Resources.Reservations.GenericResources}}",
                               f"{STACK}-{user}").stdout
        assert f'"Kind":"{GPU_RESOURCE}","Value":2' in service, service
        container = swarm.docker(swarm.gpu_node, "ps", "-q", "--no-trunc", "--filter",
                                 f"label=com.docker.swarm.service.name={STACK}-{user}").stdout.strip()
        seen = [r["NVIDIA_VISIBLE_DEVICES"] for r in swarm.runtime_records() if r["container"] == container]
        assert seen == [",".join(granted)], seen
        # both held: the next person waits, told so by the monitor
        r = stack.start(second, {"profile": "simulated-gpu", "gpus": 1})
        assert r.status_code == 503 and "0 free (2 of 2 in use)" in r.text, r.text
        stack.stop(user)
    finally:
        stop_all(stack, (user, second))
        swarm.docker(swarm.manager, "node", "update", "--label-rm", SIMULATED_GPUS[0], node, check=False)
        # the stack as the other tests know it: that node's agent reports its CPU slices again
        stack.deploy()
        wait_until(lambda: sorted(d["kind"] for d in stack.monitor_json("api/devices").get("devices", ())
                                  if d["node"] == node) == ["cpu-slice", "cpu-slice"],
                   180, f"{swarm.gpu_node.hostname}'s agent reporting its CPU slices again")


def test_the_manager_restarted_every_server_on_the_workers_keeps_running_and_keeps_its_devices(stack):
    """The manager's engine stopped and started again, and with it the whole control plane (the
    hub, the proxy, PostgreSQL, the monitor: all on the manager): the servers on both workers
    keep their tasks and their allocations, and the hub finds them running when it is back."""
    swarm = stack.swarm
    users = ("mr0", "mr1", "mr2")
    try:
        tasks, held = start_on_both_workers(stack, users)
        stopped = time.monotonic()
        swarm.stop_engine(swarm.manager)
        swarm.start_engine(swarm.manager)
        wait_until(lambda: answers(stack), 300, "the hub's API through Traefik after the manager's restart", interval=3)
        answering = time.monotonic() - stopped
        wait_until(lambda: all(stack.api("GET", f"users/{u}").json()["servers"].get("", {}).get("ready")
                               for u in users), 120, "every server on the workers ready for the hub", interval=2)
        print(f"\nmanager restarted: the hub answering {answering:.1f} s and every server checked "
              f"{time.monotonic() - stopped:.1f} s after its engine stopped")
        assert {u: running_task(stack, u) for u in users} == tasks
        assert {u: held_by(stack)[u] for u in users} == held
    finally:
        stop_all(stack, users)


def test_a_worker_lost_with_servers_on_it_they_are_shown_stopped_hold_their_devices_until_it_is_back(stack):
    """The worker's engine stopped (its containers stop with it): Swarm reports the node down, the
    monitor the node lost, the hub its servers stopped (its poll, every 30 s); their devices stay
    allocated (Swarm cannot confirm their tasks ended while the node is away, and the node offers
    nothing meanwhile); a start meanwhile is told the person's files are on that node; the other
    worker's server is untouched. The engine back: each starts again there (its home), releasing
    its old allocation first (Swarm confirms the task ended), and answers; no device given twice."""
    swarm = stack.swarm
    a, b, c = "lost0", "lost1", "kept0"
    for user in (a, b, c):
        assert stack.start(user, {"profile": "opencl", "gpus": 1}).status_code in (201, 202)
    node = stack.service_node(a)
    assert stack.service_node(b) == node and stack.service_node(c) != node  # pack: two per worker
    worker = next(n for n in swarm.workers if swarm.node_ids[n.name] == node)
    kept_task, held = running_task(stack, c), held_by(stack)
    stopped = time.monotonic()
    swarm.stop_engine(worker)
    try:
        wait_until(lambda: node_state(stack, node)
                   == "lost", 120, f"{worker.hostname} lost for the monitor")
        lost_after = time.monotonic() - stopped
        wait_until(lambda: not any(stack.api("GET", f"users/{u}").json()["servers"] for u in (a, b)), 180,
                   f"the hub showing the servers on {worker.hostname} stopped", interval=2)
        print(f"\n{worker.hostname}: lost for the monitor {lost_after:.1f} s, servers shown stopped "
              f"{time.monotonic() - stopped:.1f} s after its engine stopped")
        # their devices stay theirs while the node is away; the other worker's server runs on
        assert {u: held_by(stack)[u] for u in (a, b, c)} == {u: held[u] for u in (a, b, c)}
        assert stack.api("GET", f"users/{c}").json()["servers"][""]["ready"]
        assert running_task(stack, c) == kept_task
        r = stack.api("POST", f"users/{a}/server", json={"profile": "opencl", "gpus": 1})
        assert r.status_code == 503 and f"on node {worker.hostname}, which is down" in r.text, r.text
    finally:
        swarm.start_engine(worker)
    wait_until(lambda: node_state(stack, node)
               == "up", 180, f"{worker.hostname} up again")
    back = time.monotonic()
    try:
        # their devices are released once Swarm reports the old tasks ended, without anyone
        # starting again (the stop that could not confirm it, or GPUSwarmSpawner's retry)
        wait_until(lambda: not {a, b} & set(held_by(stack)), 120, f"the allocations on {worker.hostname} released",
                   interval=1)
        print(f"{worker.hostname}: its servers' allocations released {time.monotonic() - back:.1f} s after it was up")
        for user in (a, b):
            # Its home is there, and the new server answers: the hub reaches it at its new task's
            # address, not at the one its name had (found 2026-12-02: a cached DNS answer)
            r = stack.start(user, {"profile": "opencl", "gpus": 1})
            assert r.status_code in (201, 202), r.text
            assert stack.service_node(user) == node
            assert held[user][0] not in {i for i, _ in held_by(stack).values()}
        devices = [d["uuid"] for al in stack.monitor("api/allocations").json()["allocations"] for d in al["devices"]]
        assert len(devices) == len(set(devices))  # nothing given twice
    finally:
        stop_all(stack, (a, b, c))
