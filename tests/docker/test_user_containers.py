"""What every user container is, whatever its profile: a read-only root filesystem with
size-limited tmpfs where programs need to write (so no one can fill the host's disk), a working
JupyterLab and kernel all the same, and the labels the GPU monitor reads from a `docker ps`
listing. Needs Docker (marker `docker`)."""

import json
import subprocess

import pytest

from ..harness.stack import PROJECT, remove_home
from .helpers import program

pytestmark = pytest.mark.docker

GiB = 1024**3
# config/profiles.yaml sets no tmp_size: the default, 1G, for each of /tmp and /var/tmp
TMPFS = {path: f"rw,exec,nosuid,nodev,size={GiB},mode=1777" for path in ("/tmp", "/var/tmp")}

# From the kernel: where writing works. EROFS (30) is the read-only root filesystem; the home
# volume and the tmpfs accept writes.
WRITES = program("writable_paths")

# What each profile's own libraries must still do with a read-only root: PoCL compiles kernels
# into its cache under /tmp and loads them from there; torch and CuPy import.
PROFILE_CODE = {
    "minimal": "print('ok')",
    "opencl": program("opencl_kernel"),
    "cuda": "import torch, cupy; print('ok')",
}


@pytest.mark.parametrize("profile", ["minimal", "opencl", "cuda"])
def test_root_filesystem_is_read_only_with_tmpfs_and_the_server_works(stack, profile):
    stack.api("POST", "users/carol")
    with stack.running_server("carol", {"profile": profile, "gpus": 0}):
        host = json.loads(subprocess.run(["docker", "inspect", f"{PROJECT}-carol", "--format", "{{json .HostConfig}}"],
                                         capture_output=True, text=True, check=True).stdout)
        assert host["ReadonlyRootfs"] is True
        assert host["Tmpfs"] == TMPFS

        seen = json.loads(stack.run_code("carol", WRITES))
        assert seen["writes"] == {
            "/home/jovyan/w": "ok", "/tmp/w": "ok", "/var/tmp/w": "ok", "/dev/shm/w": "ok",
            "/w": "EROFS", "/etc/w": "EROFS", "/opt/jupyter/w": "EROFS", "/var/w": "EROFS"}
        assert seen["tmp_bytes"] == GiB

        assert stack.run_code("carol", PROFILE_CODE[profile], timeout=180).strip() == "ok"
        # JupyterLab's page and a save through the contents API, as the browser does them
        s, server = stack.session(), f"{stack.base_url}/user/carol"
        assert s.get(f"{server}/lab", timeout=60).status_code == 200
        saved = s.put(f"{server}/api/contents/saved.txt", timeout=60,
                      json={"type": "file", "format": "text", "content": "kept in the home volume"})
        assert saved.status_code in (200, 201), saved.text
        s.delete(f"{server}/api/contents/saved.txt", timeout=60)


def test_containers_carry_their_deployment_and_devices_in_docker_ps(stack):
    stack.api("POST", "users/carol")
    with stack.running_server("carol", {"profile": "opencl", "gpus": 1}):
        # a listing filtered on this deployment, as the monitor reads it: no inspect needed
        listed = subprocess.run(
            ["docker", "ps", "--filter", f"label=org.gpuhub.deployment={PROJECT}", "--filter", f"name=^{PROJECT}-carol$",
             "--format", '{{.Label "org.gpuhub.allocation"}} {{.Label "org.gpuhub.devices"}}'],
            capture_output=True, text=True, check=True).stdout.split()
        r = stack.session().get(f"{stack.base_url}/services/gpu-monitor/api/allocations?user=carol", timeout=60)
        assert r.status_code == 200, r.text
        (allocation,) = r.json()["allocations"]
        assert listed == [allocation["id"], ",".join(d["uuid"] for d in allocation["devices"])]


def test_a_gpuhub_on_the_same_daemon_keeps_its_names_and_its_homes(stack):
    """Servers and homes are named after the deployment (the Compose project): the test stack's
    carol is gpuhub-test-carol with gpuhub-test-home-carol, never a production gpuhub's
    gpuhub-carol or gpuhub-home-carol, which the tests' clean-up must not remove either. The
    "production" home here is a stand-in made by the test, unless one exists (then left alone)."""
    production_home = "gpuhub-home-carol"
    existed = subprocess.run(["docker", "volume", "inspect", production_home], capture_output=True).returncode == 0
    if not existed:
        subprocess.run(["docker", "volume", "create", "--label", "org.gpuhub.test-standin=1", production_home],
                       capture_output=True, check=True)
    try:
        stack.api("POST", "users/carol")
        with stack.running_server("carol", {"profile": "minimal", "gpus": 0}):
            mounts = json.loads(subprocess.run(["docker", "inspect", f"{PROJECT}-carol", "--format",
                                                "{{json .Mounts}}"], capture_output=True, text=True,
                                               check=True).stdout)
            assert [m["Name"] for m in mounts if m["Destination"] == "/home/jovyan"] == [f"{PROJECT}-home-carol"]
        remove_home("carol")  # what the tests' clean-up does
        volumes = subprocess.run(["docker", "volume", "ls", "-q"], capture_output=True, text=True,
                                 check=True).stdout.split()
        assert production_home in volumes and f"{PROJECT}-home-carol" not in volumes
    finally:
        if not existed:
            subprocess.run(["docker", "volume", "rm", "-f", production_home], capture_output=True)
