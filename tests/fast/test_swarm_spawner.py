"""GPUSwarmSpawner's translation of an allocation and a profile into a Swarm service spec (the
pure part; tests/swarm/test_swarm_stack.py runs it on a real swarm)."""

import docker.errors
import pytest

from gpuhub.spawner import tmpfs_options
from gpuhub.swarm_spawner import (
    SWARM_GPU_RESOURCE,
    TASK_ALIVE,
    TASK_ENDED,
    allocation_service_settings,
    home_placement,
    service_create_kwargs,
    task_address,
    task_problem,
)

NODE = "k3x9q1r2c8vd0s7nq4m5z6w1a"


def allocation(*devices, node=NODE):
    return {"id": "a1", "node": node, "devices": list(devices)}


GPU_A = {"uuid": "GPU-aaa", "kind": "gpu", "name": "H100"}
GPU_B = {"uuid": "GPU-bbb", "kind": "gpu", "name": "H100"}
MIG = {"uuid": "MIG-ccc", "kind": "mig", "docker_device_id": "MIG-ccc"}
SLICE = {"uuid": "CPU-1", "kind": "cpu-slice", "cpuset": "2-3", "cores": 2}


def test_gpus_go_to_their_node_by_uuid_and_count_as_swarms_generic_resources():
    got = allocation_service_settings(allocation(GPU_A, GPU_B))
    assert got.constraints == [f"node.id=={NODE}"]
    assert got.env["NVIDIA_VISIBLE_DEVICES"] == got.env["CUDA_VISIBLE_DEVICES"] == "GPU-aaa,GPU-bbb"
    assert got.env["GPUHUB_ALLOCATION"] == "a1" and got.env["GPUHUB_DEVICES"] == "GPU-aaa,GPU-bbb"
    assert got.generic_resources == {SWARM_GPU_RESOURCE: 2}
    assert got.nano_cpus is None


def test_a_mig_instance_is_named_by_its_own_id_and_no_generic_resource_when_turned_off():
    got = allocation_service_settings(allocation(MIG), gpu_resource="")
    assert got.env["NVIDIA_VISIBLE_DEVICES"] == "MIG-ccc"
    assert got.generic_resources == {}


def test_a_cpu_slice_is_a_cpu_limit_of_its_cores_and_no_gpu():
    got = allocation_service_settings(allocation(SLICE))
    assert got.nano_cpus == 2 * 10**9
    assert got.env["NVIDIA_VISIBLE_DEVICES"] == "void" and got.env["CUDA_VISIBLE_DEVICES"] == ""
    assert got.env["POCL_CPU_MAX_CU_COUNT"] == got.env["POCL_MAX_PTHREAD_COUNT"] == "2"
    assert got.generic_resources == {}


@pytest.mark.parametrize("node", ["", None, "a b", "x==y"])
def test_an_allocation_without_a_usable_node_is_refused_not_placed_anywhere(node):
    with pytest.raises(ValueError, match="names no Swarm node"):
        allocation_service_settings(allocation(GPU_A, node=node))


def spec(devices=None, **host):
    host_config = {"cap_drop": ["ALL"], "read_only": True, "pids_limit": 256,
                   "tmpfs": {"/tmp": tmpfs_options("1G"), "/var/tmp": tmpfs_options("64M")}, **host}
    return service_create_kwargs(
        name="gpuhub-ada", image="registry:5000/gpuhub/singleuser-opencl:latest", env={"A": "1"},
        args=["jupyterhub-singleuser"], labels={"org.gpuhub.user": "ada"}, mounts=[], host_config=host_config,
        devices=devices, network="gpuhub-users", mem_limit=2 * 1024**3, cpu_limit=4.0, stop_grace_period=10)


def test_the_service_runs_once_on_its_node_never_restarted_reached_by_dns_with_the_hardening():
    got = spec(allocation_service_settings(allocation(GPU_A)))
    task = got["task_template"]
    container = task["ContainerSpec"]
    assert got["name"] == "gpuhub-ada" and got["mode"] == {"replicated": {"Replicas": 1}}
    assert got["endpoint_spec"]["Mode"] == "dnsrr"
    assert task["RestartPolicy"]["Condition"] == "none"
    assert task["Placement"]["Constraints"] == [f"node.id=={NODE}"]
    assert task["Networks"] == [{"Target": "gpuhub-users"}]
    assert "NVIDIA_VISIBLE_DEVICES=GPU-aaa" in container["Env"] and "A=1" in container["Env"]
    assert container["ReadOnly"] is True and container["CapabilityDrop"] == ["ALL"]
    assert container["Labels"] == {"org.gpuhub.user": "ada"} == got["labels"]
    tmpfs = {m["Target"]: m["TmpfsOptions"] for m in container["Mounts"]}
    assert tmpfs == {"/tmp": {"SizeBytes": 1024**3, "Mode": 0o1777}, "/var/tmp": {"SizeBytes": 64 * 1024**2, "Mode": 0o1777}}
    limits = task["Resources"]["Limits"]
    assert limits == {"NanoCPUs": 4 * 10**9, "MemoryBytes": 2 * 1024**3, "Pids": 256}
    assert task["Resources"]["Reservations"]["GenericResources"] == [
        {"DiscreteResourceSpec": {"Kind": SWARM_GPU_RESOURCE, "Value": 1}}]


def test_a_slice_narrows_the_cpu_limit_and_shm_becomes_a_sized_tmpfs():
    got = spec(allocation_service_settings(allocation(SLICE)), shm_size="256M")
    container = got["task_template"]["ContainerSpec"]
    assert got["task_template"]["Resources"]["Limits"]["NanoCPUs"] == 2 * 10**9
    shm = next(m for m in container["Mounts"] if m["Target"] == "/dev/shm")
    assert shm["TmpfsOptions"]["SizeBytes"] == 256 * 1024**2
    assert "NVIDIA_VISIBLE_DEVICES=void" in container["Env"]


def test_a_server_without_devices_has_no_constraint_and_no_gpu():
    got = spec(None)
    assert "Constraints" not in (got["task_template"].get("Placement") or {})
    assert "Reservations" not in got["task_template"]["Resources"]


def test_a_server_without_devices_goes_back_to_the_node_of_its_home():
    got = spec(home_placement(NODE))
    assert got["task_template"]["Placement"]["Constraints"] == [f"node.id=={NODE}"]
    assert "NVIDIA_VISIBLE_DEVICES" not in str(got["task_template"]["ContainerSpec"].get("Env"))
    assert home_placement("") is None


def test_a_server_is_reached_at_its_tasks_address_on_the_users_network():
    task = {"NetworksAttachments": [
        {"Network": {"Spec": {"Name": "ingress"}}, "Addresses": ["10.0.0.7/24"]},
        {"Network": {"Spec": {"Name": "gpuhub-users"}}, "Addresses": ["10.98.3.12/24"]},
    ]}
    assert task_address(task, "gpuhub-users") == "10.98.3.12"
    assert task_address(task, "elsewhere") == ""
    assert task_address({"Status": {"State": "pending"}}, "gpuhub-users") == ""


def test_task_states_are_either_alive_or_ended_and_problems_name_swarms_reason():
    assert not TASK_ALIVE & TASK_ENDED
    assert task_problem({"Status": {"State": "pending", "Err": "no suitable node (insufficient resources on 2 nodes)"}}) \
        == "pending: no suitable node (insufficient resources on 2 nodes)"
    assert task_problem({"Status": {"State": "running"}}) == "running"


def swarm_spawner(task, node_state="ready", availability="active", node_exists=True):
    """A GPUSwarmSpawner whose Docker answers are `task` (the service's one task) and a node."""
    from types import SimpleNamespace

    from gpuhub.profiles import parse_profiles
    from gpuhub.swarm_spawner import GPUSwarmSpawner

    class Spawner(GPUSwarmSpawner):
        async def get_task(self):
            return task

        async def docker(self, method, *args, **kwargs):
            assert method == "inspect_node"
            if not node_exists:
                raise docker.errors.NotFound("node not found")
            return {"Status": {"State": node_state}, "Spec": {"Availability": availability},
                    "Description": {"Hostname": "gpu-node-2"}}

    profiles = parse_profiles({"profiles": [{"name": "m", "display_name": "M", "image": "gpuhub/min"}]})
    return Spawner(user=SimpleNamespace(name="ada", id=1, url="/user/ada/"), profiles=profiles,
                   _deprecated_db_session=None)


@pytest.mark.parametrize(("task", "node_state", "status"), [
    ({"NodeID": "n2", "Status": {"State": "running"}}, "ready", None),
    ({"NodeID": "", "Status": {"State": "pending", "Err": "no suitable node"}}, "ready", None),
    # a node that is down cannot report its tasks: the server is unreachable, and said so
    ({"NodeID": "n2", "Status": {"State": "running"}}, "down", "its node gpu-node-2 is down"),
    ({"NodeID": "n2", "Status": {"State": "failed", "Err": "task: non-zero exit (1)"}}, "ready",
     "failed: task: non-zero exit (1)"),
    (None, "ready", 0),
])
def test_poll_says_stopped_for_an_ended_task_and_for_a_task_on_a_node_that_is_down(task, node_state, status):
    from ..aio import run_async

    assert run_async(swarm_spawner(task, node_state).poll()) == status


@pytest.mark.parametrize(("node_state", "availability", "says"), [
    ("down", "active", "Your files are on node gpu-node-2, which is down"),
    ("ready", "pause", "Your files are on node gpu-node-2, which is paused by an administrator"),
    ("ready", "drain", "which is drained by an administrator"),
])
def test_a_start_whose_home_node_cannot_take_it_is_refused_with_where_the_files_are(node_state, availability, says):
    from tornado import web

    from ..aio import run_async

    spawner = swarm_spawner(None, node_state, availability)
    spawner.load_state({"home_node": "n2"})
    with pytest.raises(web.HTTPError) as refused:
        run_async(spawner._check_placement())
    assert refused.value.status_code == 503 and says in refused.value.log_message
    assert spawner._required_node() == "n2"


def test_the_home_node_is_kept_through_a_stop_and_forgotten_once_it_left_the_swarm():
    from ..aio import run_async

    spawner = swarm_spawner(None)
    spawner.load_state({"home_node": "n2"})
    spawner.clear_state()  # what the hub does after every stop
    assert spawner.get_state()["home_node"] == "n2"
    run_async(spawner._check_placement())  # up and active: nothing to refuse
    assert spawner._refusal_note() == (". Your files are on node gpu-node-2, so this server can start only there "
                                       "(the cluster has no storage shared by every node)")
    gone = swarm_spawner(None, node_exists=False)
    gone.load_state({"home_node": "n2"})
    gone._progress_events, gone._progress_changed = [], __import__("asyncio").Event()
    run_async(gone._check_placement())
    assert gone._required_node() == "" and "home_node" not in gone.get_state()
    assert "which has left the cluster" in gone._progress_events[-1]["message"]


def test_devices_kept_for_a_task_on_a_lost_node_are_released_once_swarm_reports_it_ended():
    """A stop while the node was down kept the allocation (Swarm could not say the task ended);
    the hub asks again every release_retry_seconds, and once Swarm says so, releases it and
    saves the server's state without it; nothing is released before."""
    import asyncio

    from ..aio import run_async

    answers = iter([False, False, True])  # Swarm: not ended, not ended (node away), ended (back)
    released, committed = [], []
    spawner = swarm_spawner(None)
    spawner.release_retry_seconds = 0.01
    spawner.orm_spawner = __import__("types").SimpleNamespace(state=None, server=None, name="")
    spawner.user.db = __import__("types").SimpleNamespace(commit=lambda: committed.append(True))

    async def container_gone():
        return next(answers)

    async def release(why, allocation_id=None):
        released.append((why, allocation_id))
        spawner.allocation_id, spawner._allocation_outlives_server = "", False

    spawner._container_gone, spawner._release = container_gone, release

    async def scenario():
        spawner._keep("al-1", "the server stopped, but the container is still running")
        assert spawner.get_state()["allocation_id"] == "al-1" and released == []
        await asyncio.wait_for(spawner._release_retry, 5)

    run_async(scenario())
    assert released == [("its task ended once its node was back", "al-1")]
    assert "allocation_id" not in spawner.orm_spawner.state and committed == [True]


def test_a_kept_allocation_a_start_released_meanwhile_is_left_to_it():
    import asyncio

    from ..aio import run_async

    spawner = swarm_spawner(None)
    spawner.release_retry_seconds = 0.01
    asked = []

    async def container_gone():
        asked.append(True)
        return True

    spawner._container_gone = container_gone

    async def scenario():
        spawner._keep("al-1", "the server stopped, but the container is still running")
        spawner.allocation_id = "al-2"  # a start released al-1 and holds a new allocation
        await asyncio.wait_for(spawner._release_retry, 5)

    run_async(scenario())
    assert spawner.allocation_id == "al-2" and asked == []
