"""The test swarm itself (tests/harness/swarm.py) does what gpuhub across nodes will rely on:
nodes that pull from a registry, an overlay network between workers, and a GPU node whose
containers reach NVIDIA's runtime (a stand-in here) with the devices they were given."""

import json

import pytest

from ..harness.swarm import FAKE_GPU_UUIDS, GPU_RESOURCE, RULE_COMMENT, Swarm, run, wait_until

pytestmark = pytest.mark.swarm

SINGLEUSER_IMAGE = "gpuhub/singleuser-base:latest"
# perl-base is part of every Debian system, so debian:bookworm-slim can serve and connect
SERVER = ("perl -MIO::Socket::INET -e '$s = IO::Socket::INET->new(LocalPort => 8080, Listen => 5, ReuseAddr => 1)"
          " or die \"listen: $!\"; while ($c = $s->accept) { print $c \"hello from \", `hostname`; close $c }'")


def on(node: str) -> list[str]:
    return ["--constraint", f"node.labels.gpuhub.node=={node}"]


def container_env(swarm: Swarm, node, container: str) -> dict[str, str]:
    env = json.loads(swarm.docker(node, "inspect", "--format", "{{json .Config.Env}}", container).stdout)
    return dict(entry.split("=", 1) for entry in env)


def records_of(swarm: Swarm, container: str) -> list[str]:
    return [r["NVIDIA_VISIBLE_DEVICES"] for r in swarm.runtime_records() if r["container"] == container]


def test_three_nodes_one_manager_two_workers_with_their_own_hostnames(swarm):
    rows = [json.loads(line) for line in
            swarm.docker(swarm.manager, "node", "ls", "--format", "{{json .}}").stdout.splitlines()]
    assert sorted(row["ID"] for row in rows) == sorted(swarm.node_ids.values())
    assert all(row["Status"] == "Ready" for row in rows), rows
    assert sorted(row["ManagerStatus"] for row in rows) == ["", "", "Leader"], rows
    assert sorted(row["Hostname"] for row in rows) == ["gpuhub-sw1", "gpuhub-sw2", "gpuhub-sw3"]
    labels = {name: swarm.docker(swarm.manager, "node", "inspect", "--format",
                                 '{{index .Spec.Labels "gpuhub.node"}}', node_id).stdout.strip()
              for name, node_id in swarm.node_ids.items()}
    assert labels == {"sw1": "sw1", "sw2": "sw2", "sw3": "sw3"}
    # the harness's own pieces are where they should be
    assert RULE_COMMENT in run("iptables", "-S", "FORWARD").stdout


@pytest.mark.parametrize("image", ["debian:bookworm-slim", SINGLEUSER_IMAGE])
def test_each_worker_pulls_a_pushed_image_from_the_registry(swarm, services, image):
    if run("docker", "image", "inspect", image, check=False).returncode != 0:
        pytest.skip(f"{image} is not built on this host (the docker tier builds it)")
    pushed = swarm.push(image)
    assert pushed.startswith(swarm.registry_for_nodes + "/")
    names = {node.name: services(f"pull-{node.name}", *on(node.name), pushed, "sleep", "infinity")
             for node in swarm.workers}
    for node in swarm.workers:
        ran_on, container = swarm.running(names[node.name], timeout=300)
        assert ran_on == node
        # pulled by digest from the registry (the manager resolved it there), not loaded by hand
        ref = swarm.docker(node, "inspect", "--format", "{{.Config.Image}}", container).stdout.strip()
        assert ref.startswith(pushed + "@sha256:"), ref
        digests = json.loads(swarm.docker(node, "image", "inspect", "--format", "{{json .RepoDigests}}", ref).stdout)
        repository = pushed.rsplit(":", 1)[0]
        assert f"{repository}@{ref.split('@')[1]}" in digests, digests


def test_services_on_two_workers_talk_over_an_overlay_network(swarm, services, debian):
    network = services.network("net", "--attachable")
    # dnsrr: the service name resolves to its task's address. The default (a virtual IP) needs
    # IPVS, which this machine's kernel lacks: connections to a VIP find no route here.
    server = services("server", *on("sw2"), "--network", network, "--endpoint-mode", "dnsrr", debian, "sh", "-c", SERVER)
    client = services("client", *on("sw3"), "--network", network, debian, "perl", "-MIO::Socket::INET", "-e",
                      f'$| = 1; until ($c = IO::Socket::INET->new("{server}:8080")) {{ sleep 1 }} print <$c>; sleep')
    server_node, server_container = swarm.running(server)
    client_node, client_container = swarm.running(client)
    assert (server_node.name, client_node.name) == ("sw2", "sw3")
    server_hostname = swarm.docker(server_node, "inspect", "--format", "{{.Config.Hostname}}",
                                   server_container).stdout.strip()
    logs = wait_until(lambda: swarm.docker(client_node, "logs", client_container).stdout, 60, "the client's answer")
    assert logs.strip() == f"hello from {server_hostname}"
    inspected = json.loads(swarm.docker(swarm.manager, "network", "inspect", network).stdout)[0]
    assert inspected["Driver"] == "overlay" and "encrypted" not in inspected["Options"]


def test_a_generic_gpu_resource_places_a_service_on_the_gpu_node(swarm, services, debian):
    service = services("gpu", "--generic-resource", f"{GPU_RESOURCE}=1", debian, "sleep", "infinity")
    node, container = swarm.running(service)
    assert node == swarm.gpu_node
    # Swarm names the device it assigned in DOCKER_RESOURCE_<KIND>; it sets no NVIDIA_VISIBLE_DEVICES
    env = container_env(swarm, node, container)
    assert env[f"DOCKER_RESOURCE_{GPU_RESOURCE}"] in FAKE_GPU_UUIDS
    assert "NVIDIA_VISIBLE_DEVICES" not in env
    assert records_of(swarm, container) == ["<unset>"]


@pytest.mark.parametrize("visible, recorded", [
    (FAKE_GPU_UUIDS[1], FAKE_GPU_UUIDS[1]),
    ("void", "void"),  # what gpuhub gives CPU-only servers
    (None, "<unset>"),
], ids=["a-gpu-uuid", "void", "unset"])
def test_the_gpu_node_runs_containers_through_nvidias_runtime_with_their_devices(swarm, services, debian,
                                                                                  visible, recorded):
    env = [] if visible is None else ["--env", f"NVIDIA_VISIBLE_DEVICES={visible}"]
    service = services("visible", *on("sw3"), *env, debian, "sleep", "infinity")
    node, container = swarm.running(service)
    runtime = swarm.docker(node, "inspect", "--format", "{{.HostConfig.Runtime}}", container).stdout.strip()
    assert runtime == "nvidia"
    assert records_of(swarm, container) == [recorded]


def test_a_worker_without_gpus_never_uses_the_nvidia_runtime(swarm, services, debian):
    service = services("cpu", *on("sw2"), "--env", f"NVIDIA_VISIBLE_DEVICES={FAKE_GPU_UUIDS[0]}", debian,
                       "sleep", "infinity")
    node, container = swarm.running(service)
    runtime = swarm.docker(node, "inspect", "--format", "{{.HostConfig.Runtime}}", container).stdout.strip()
    assert runtime == "runc"
    assert records_of(swarm, container) == []


def test_a_service_asking_for_a_gpu_when_none_is_free_stays_pending_until_one_is(swarm, services, debian):
    holder = services("all-gpus", "--generic-resource", f"{GPU_RESOURCE}={len(FAKE_GPU_UUIDS)}", debian,
                      "sleep", "infinity")
    node, container = swarm.running(holder)
    assert node == swarm.gpu_node
    assigned = container_env(swarm, node, container)[f"DOCKER_RESOURCE_{GPU_RESOURCE}"]
    assert sorted(assigned.split(",")) == sorted(FAKE_GPU_UUIDS)

    waiting = services("waiting", "--generic-resource", f"{GPU_RESOURCE}=1", debian, "sleep", "infinity")
    status = wait_until(lambda: (s := swarm.task(waiting)["Status"]).get("Err") and s, 30, "the scheduler's verdict")
    assert status["State"] == "pending"
    assert "insufficient resources" in status["Err"], status

    services.remove(holder)
    node, _ = swarm.running(waiting)
    assert node == swarm.gpu_node
