"""The single-user images themselves: their smoke notebooks compute and check real results in
the built image (PoCL here; the GPU path is tests/gpu's), and nothing in them hands out GPUs.
Needs Docker (marker `docker`); the images are built by the `stack` fixture's compose up."""

import json
import subprocess

import pytest

from ..harness.stack import ROOT
from ..smoke import run_smoke_in_image

pytestmark = pytest.mark.docker

OPENCL = "gpuhub/singleuser-opencl:latest"
CUDA = "gpuhub/singleuser-cuda:latest"


def image_config(image: str) -> dict:
    out = subprocess.run(["docker", "image", "inspect", image, "--format", "{{json .Config}}"],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


@pytest.mark.parametrize("image", ["gpuhub/singleuser-base:latest", OPENCL, CUDA])
def test_images_run_unprivileged_and_never_bake_in_gpus(stack, image):
    config = image_config(image)
    assert config["User"] == "1000"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert "NVIDIA_VISIBLE_DEVICES" not in env


def test_opencl_notebook_computes_on_pocl_and_matches_numpy(stack):
    result = run_smoke_in_image(OPENCL, "opencl.ipynb")
    assert result["platform"] == "Portable Computing Language"
    assert result["path"] == "cpu"
    assert set(result["checks"]) == {"saxpy", "sum"}
    assert all(check["ok"] for check in result["checks"].values()), result
    assert result["ok"] is True


def test_opencl_sees_two_pocl_devices_when_asked(stack):
    """PoCL exposes as many devices as POCL_DEVICES lists: what CPU-slice allocation builds on."""
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", "-e", "POCL_DEVICES=pthread pthread",
                          OPENCL, "clinfo", "-l"], capture_output=True, text=True, check=True).stdout
    assert out.count("Device #") == 2, out


def test_opencl_image_ships_the_nvidia_icd(stack):
    out = subprocess.run(["docker", "run", "--rm", "--network", "none", OPENCL, "cat",
                          "/etc/OpenCL/vendors/nvidia.icd"], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "libnvidia-opencl.so.1"


def test_cuda_image_records_its_cuda_major_and_asks_only_for_compute(stack):
    config = image_config(CUDA)
    assert config["Labels"]["org.gpuhub.cuda-major"] == "13"
    env = dict(item.split("=", 1) for item in config["Env"])
    assert env["NVIDIA_DRIVER_CAPABILITIES"] == "compute,utility"


def test_cuda_notebook_without_gpu_says_so_and_its_cpu_path_matches_numpy(stack):
    r = subprocess.run(["docker", "run", "--rm", "--network", "none", CUDA, "sh", "-c",
                        "jupyter execute --output=/tmp/x /opt/gpuhub/smoke/cuda.ipynb >/dev/null 2>&1 && cat /tmp/x.ipynb"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    notebook = json.loads(r.stdout)
    printed = "".join("".join(o.get("text", "")) for c in notebook["cells"] for o in c.get("outputs", []))
    assert "No GPU is visible in this container: running the CPU path" in printed
    from ..smoke import result_from_notebook

    result = result_from_notebook(notebook)
    assert result["path"] == "cpu" and result["ok"] is True, result
    assert result["checks"] and all(check["ok"] for check in result["checks"].values()), result


def discover_in_opencl_image(*env: str) -> subprocess.CompletedProcess:
    """The monitor's OpenCL backend, run on its own inside the OpenCL image (which has pyopencl,
    the ICD loader and PoCL; the monitor's image has none of them)."""
    code = ("import json; from gpu_monitor.backends.opencl import OpenCLBackend\n"
            "from gpu_monitor.devices import BackendUnavailable\n"
            "try:\n"
            "    b = OpenCLBackend(); ds = b.discover()\n"
            "    print(json.dumps([[d.uuid, d.kind, d.name, d.attributes, s.errors] for d, s in zip(ds, b.sample())]))\n"
            "except BackendUnavailable as e:\n"
            "    print('unavailable:', e)\n")
    env_args = [arg for item in env for arg in ("-e", item)]
    return subprocess.run(["docker", "run", "--rm", "--network", "none", *env_args,
                           "-v", f"{ROOT / 'gpu_monitor' / 'gpu_monitor'}:/opt/monitor-src/gpu_monitor:ro",
                           "-e", "PYTHONPATH=/opt/monitor-src", OPENCL, "python", "-c", code],
                          capture_output=True, text=True, check=True)


def test_opencl_discovery_lists_pocl_devices_with_stable_ids(stack):
    first = json.loads(discover_in_opencl_image("POCL_DEVICES=pthread pthread").stdout)
    again = json.loads(discover_in_opencl_image("POCL_DEVICES=pthread pthread").stdout)
    assert len(first) == 2
    assert [d[0] for d in first] == [d[0] for d in again]  # same host, same ids
    assert len({d[0] for d in first}) == 2 and all(d[0].startswith("OCL-") for d in first)
    for _uuid, kind, name, attributes, errors in first:
        assert kind == "opencl" and name.startswith("pthread")
        assert attributes["platform"] == "Portable Computing Language" and attributes["type"] == "cpu"
        assert int(attributes["compute_units"]) >= 1
        # no utilisation query in OpenCL: said, not faked as 0
        assert errors == ["utilization: OpenCL has no utilisation query"]


def test_opencl_discovery_without_any_icd_says_what_to_install(stack):
    out = discover_in_opencl_image("OCL_ICD_VENDORS=/nonexistent").stdout
    assert out.startswith("unavailable: no OpenCL platform") and "pocl-opencl-icd" in out, out
