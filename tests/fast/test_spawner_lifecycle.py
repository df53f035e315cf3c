"""GPUDockerSpawner's allocation lifecycle against fakes of Docker and of the GPU monitor: a
device is never given out while a container may still use it, and never kept by nothing.

DockerSpawner runs unchanged over a fake `docker.APIClient` (tests/fakes/docker_api.py), its
calls in its executor thread as in the hub; the monitor is a fake HTTP API on 127.0.0.1
(tests/fakes/monitor_api.py). Both write to one `events` list, whose order the tests check.
"""

from __future__ import annotations

import asyncio
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import docker.errors
import pytest
from jupyterhub.objects import Hub
from tornado import web

from gpuhub.profiles import parse_profiles
from gpuhub.spawner import GPUDockerSpawner

from ..aio import run_async
from ..fakes.docker_api import ImageNotPulledDocker, ObedientDocker, SlowStartDocker, StuckContainerDocker
from ..fakes.monitor_api import NVML_HOST, AllocationTimeoutMonitor, FakeMonitor

PROFILES = parse_profiles({
    "profiles": [
        {"name": "minimal", "display_name": "Minimal", "image": "gpuhub/min"},
        {"name": "cuda", "display_name": "CUDA", "image": "gpuhub/cuda", "gpus": [0, 1, 2]},
    ]
})
DEPLOYMENT = "gpuhub-lifecycle-test"


def spawner_on(docker_api, monitor_url: str = "", user: str = "alice", **traits) -> GPUDockerSpawner:
    """A GPUDockerSpawner whose Docker client is `docker_api`, with an executor of its own."""

    class SpawnerOnFakeDocker(GPUDockerSpawner):
        _client = docker_api
        _executor = ThreadPoolExecutor(1)

    return SpawnerOnFakeDocker(
        user=SimpleNamespace(name=user, id=1, url=f"/user/{user}/"), profiles=PROFILES, monitor_url=monitor_url,
        monitor_token="t" * 32, deployment=DEPLOYMENT, hub=Hub(), prefix="gpuhub", _deprecated_db_session=None,
        **traits)


async def spawn(spawner: GPUDockerSpawner, options: dict):
    """What the hub does for a spawn request: apply the options, then start."""
    await spawner._run_apply_user_options(options)
    return await spawner.start()


async def until(predicate, timeout: float = 5, what: str = "condition"):
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise TimeoutError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.01)


async def stays_false(predicate, seconds: float) -> bool:
    """True if `predicate` stayed false for `seconds` (polled): for what must not happen."""
    try:
        await until(predicate, seconds)
    except TimeoutError:
        return True
    return False


def test_a_stop_that_fails_keeps_the_devices_until_the_container_is_gone():
    events: list[str] = []
    docker_api = StuckContainerDocker(events)

    async def scenario():
        async with FakeMonitor(events=events) as monitor:
            spawner = spawner_on(docker_api, monitor.url)
            await spawn(spawner, {"profile": "cuda", "gpus": 1})
            held = spawner.allocation_id
            with pytest.raises(Exception, match="did not receive an exit event"):
                await spawner.stop()
            assert "gpuhub-alice" in docker_api.running()
            assert held in monitor.allocations, "released while the container still runs"
            # what the hub does next, whatever stop() did: the post-stop hook, then clear the
            # state and store it; the allocation stays in the stored state
            await spawner.run_post_stop_hook()
            spawner.clear_state()
            assert spawner.get_state()["allocation_id"] == held
            assert held in monitor.allocations

            # the process finally dies; the next stop (or start) releases the devices
            docker_api.let_it_die("gpuhub-alice")
            await spawner.stop()
            assert monitor.allocations == {}
            assert "allocation_id" not in spawner.get_state()

    run_async(scenario())
    assert "monitor DELETE" not in " ".join(events[:events.index("docker stop gpuhub-alice")])


def test_starting_again_while_the_old_container_still_runs_is_a_503_and_keeps_the_devices():
    docker_api = StuckContainerDocker()

    async def scenario():
        async with FakeMonitor() as monitor:
            spawner = spawner_on(docker_api, monitor.url)
            await spawn(spawner, {"profile": "cuda", "gpus": 1})
            held = spawner.allocation_id
            with pytest.raises(docker.errors.APIError, match="cannot stop container"):
                await spawner.stop()
            with pytest.raises(web.HTTPError) as info:
                await spawn(spawner, {"profile": "cuda", "gpus": 1})
            assert info.value.status_code == 503
            assert "docker rm -f gpuhub-alice" in info.value.log_message
            assert list(monitor.allocations) == [held] and spawner.allocation_id == held

    run_async(scenario())


def test_a_cancelled_start_releases_only_once_the_container_is_gone():
    events: list[str] = []
    docker_api = SlowStartDocker(events)

    async def scenario():
        async with FakeMonitor(events=events) as monitor:
            spawner = spawner_on(docker_api, monitor.url)
            task = asyncio.ensure_future(spawn(spawner, {"profile": "cuda", "gpus": 1}))
            await until(docker_api.start_begun.is_set, what="docker start sent")
            task.cancel()  # the hub's start_timeout, while `docker start` is in flight
            assert await stays_false(lambda: task.done() or not monitor.allocations, 0.5), \
                "released while docker start was still in flight"
            docker_api.let_start_finish()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert monitor.allocations == {} and spawner.allocation_id == ""
            assert docker_api.containers == {}, "the cancelled start left its container"

    run_async(scenario())
    tail = events[events.index("docker start gpuhub-alice"):]
    assert tail.index("docker remove gpuhub-alice") < tail.index("monitor DELETE api/allocations/alloc-1")


def test_a_cancelled_start_whose_container_cannot_be_removed_keeps_the_devices():
    class SlowStartStuckDocker(SlowStartDocker, StuckContainerDocker):
        """docker start is slow, and the container it starts will not die."""

    docker_api = SlowStartStuckDocker()

    async def scenario():
        async with FakeMonitor() as monitor:
            spawner = spawner_on(docker_api, monitor.url)
            task = asyncio.ensure_future(spawn(spawner, {"profile": "cuda", "gpus": 1}))
            await until(docker_api.start_begun.is_set, what="docker start sent")
            task.cancel()
            docker_api.let_start_finish()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert docker_api.running() == ["gpuhub-alice"]
            assert list(monitor.allocations) == [spawner.allocation_id]
            assert spawner.get_state()["allocation_id"] == spawner.allocation_id

    run_async(scenario())


@pytest.mark.parametrize("old_container_running", [False, True], ids=["old container gone", "old container running"])
def test_a_leftover_allocation_of_another_size_is_released_only_if_no_container_runs(old_container_running):
    """The monitor answers 409 naming an allocation this server holds but the hub forgot (a
    crash lost the state): DELETE then POST again, unless this server's container still runs."""
    events: list[str] = []
    docker_api = StuckContainerDocker(events)

    async def scenario():
        async with FakeMonitor(events=events) as monitor:
            leftover = monitor.add("alice", "", monitor.device_uuids[:2])
            if old_container_running:
                docker_api.create_container(name="gpuhub-alice", environment={})
                docker_api.start("gpuhub-alice")
            spawner = spawner_on(docker_api, monitor.url)
            if old_container_running:
                with pytest.raises(web.HTTPError) as info:
                    await spawn(spawner, {"profile": "cuda", "gpus": 1})
                assert info.value.status_code == 503 and "still running" in info.value.log_message
                assert list(monitor.allocations) == [leftover["id"]]
            else:
                await spawn(spawner, {"profile": "cuda", "gpus": 1})
                assert list(monitor.allocations) == [spawner.allocation_id] != [leftover["id"]]

    run_async(scenario())
    asked = [e for e in events if e.startswith("monitor") and "allocations" in e]
    if old_container_running:
        assert asked == ["monitor POST api/allocations"]
    else:
        assert asked == ["monitor POST api/allocations", "monitor DELETE api/allocations/alloc-1",
                         "monitor POST api/allocations"]


def test_a_monitor_that_does_not_answer_is_a_clean_503_and_nothing_is_left():
    docker_api = ObedientDocker()

    async def scenario():
        async with AllocationTimeoutMonitor() as monitor:
            spawner = spawner_on(docker_api, monitor.url, monitor_timeout=0.3)
            with pytest.raises(web.HTTPError) as info:
                await spawn(spawner, {"profile": "cuda", "gpus": 1})
            return spawner, info.value

    spawner, error = run_async(scenario())
    assert error.status_code == 503
    assert "the GPU monitor did not answer" in error.log_message and "Try again" in error.log_message
    assert docker_api.created == [] and spawner.allocation_id == ""


def test_a_monitor_that_is_down_is_a_clean_503_and_nothing_is_left():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    docker_api = ObedientDocker()
    spawner = spawner_on(docker_api, f"http://127.0.0.1:{port}/services/gpu-monitor/")
    with pytest.raises(web.HTTPError) as info:
        run_async(spawn(spawner, {"profile": "cuda", "gpus": 1}))
    assert info.value.status_code == 503
    assert docker_api.created == [] and spawner.allocation_id == ""


def test_an_image_not_yet_present_is_pulled_before_its_labels_are_read():
    events: list[str] = []
    docker_api = ImageNotPulledDocker(events)

    async def scenario():
        async with FakeMonitor(host=NVML_HOST, events=events) as monitor:
            spawner = spawner_on(docker_api, monitor.url)
            await spawn(spawner, {"profile": "cuda", "gpus": 1})

    run_async(scenario())
    assert events.index("docker pull gpuhub/cuda:latest") < events.index("monitor POST api/allocations")
    assert "docker start gpuhub-alice" in events
    assert sum(e.startswith("docker pull") for e in events) == 1


CUDA_CHECKS = {
    "image newer than the driver": ("14", 400),
    "image the driver supports": ("13", None),
}


@pytest.mark.parametrize("image_major, refused", CUDA_CHECKS.values(), ids=CUDA_CHECKS.keys())
def test_the_cuda_check_reads_the_monitors_host_facts_not_its_device_list(image_major, refused):
    """api/host answers the driver's CUDA version without the monitor reading every allocation,
    as api/devices would; an image too new for it is a 400 before any device is allocated."""
    events: list[str] = []
    docker_api = ObedientDocker(images={"gpuhub/cuda": {"org.gpuhub.cuda-major": image_major}}, events=events)

    async def scenario():
        async with FakeMonitor(host=NVML_HOST, events=events) as monitor:  # CUDA 13.0
            spawner = spawner_on(docker_api, monitor.url)
            if refused:
                with pytest.raises(web.HTTPError) as info:
                    await spawn(spawner, {"profile": "cuda", "gpus": 1})
                assert info.value.status_code == refused
                assert "built for CUDA 14, but this host's NVIDIA driver 580.65.06 supports CUDA up to 13.0" \
                    in info.value.log_message
                assert monitor.allocations == {} and docker_api.created == []
            else:
                await spawn(spawner, {"profile": "cuda", "gpus": 1})
                assert list(monitor.allocations) == [spawner.allocation_id]

    run_async(scenario())
    asked = [e for e in events if e.startswith("monitor")]
    assert asked == ["monitor GET api/host"] + ([] if refused else ["monitor POST api/allocations"])


def test_the_container_is_labelled_with_the_deployment_and_its_devices_in_order():
    docker_api = ObedientDocker()

    async def scenario():
        async with FakeMonitor(devices=3) as monitor:
            gpu = spawner_on(docker_api, monitor.url, user="alice")
            await spawn(gpu, {"profile": "cuda", "gpus": 2})
            await spawn(spawner_on(docker_api, monitor.url, user="bob"), {"profile": "minimal"})
            return monitor.allocations[gpu.allocation_id]

    allocation = run_async(scenario())
    with_gpus, without = (kwargs["labels"] for kwargs in docker_api.created)
    assert with_gpus["org.gpuhub.deployment"] == without["org.gpuhub.deployment"] == DEPLOYMENT
    assert with_gpus["org.gpuhub.devices"] == ",".join(allocation["device_uuids"])
    assert with_gpus["org.gpuhub.allocation"] == allocation["id"]
    assert "org.gpuhub.devices" not in without and "org.gpuhub.allocation" not in without


REFUSED = {
    "image option": ({"image": "evil/miner"}, "unknown spawn option(s): image"),
    "unknown profile": ({"profile": "nope"}, "unknown profile 'nope'"),
    "gpu without allocator": ({"profile": "cuda", "gpus": 1}, "this hub has no GPU monitor"),
    "negative": ({"profile": "cuda", "gpus": -2}, "cannot be negative"),
    "too many": ({"profile": "cuda", "gpus": 4}, "allows 0, 1, 2 GPU(s), not 4"),
}


@pytest.mark.parametrize("options, words", REFUSED.values(), ids=REFUSED.keys())
def test_bad_options_are_http_400_before_any_container(options, words):
    docker_api = ObedientDocker()
    spawner = spawner_on(docker_api)
    with pytest.raises(web.HTTPError) as info:
        run_async(spawn(spawner, options))
    assert info.value.status_code == 400
    assert words in info.value.log_message
    assert docker_api.events == [] and docker_api.created == []


def test_good_options_do_create_a_container():
    """The other side of the test above: the same path, with options it accepts, does reach
    Docker, so "no Docker call" there means something."""
    docker_api = ObedientDocker()
    run_async(spawn(spawner_on(docker_api), {"profile": "minimal"}))
    assert [kwargs["image"] for kwargs in docker_api.created] == ["gpuhub/min"]


def test_devices_are_allocated_only_when_the_servers_turn_to_start_comes():
    """With a start queue, a spawn waiting for its turn holds no allocation: minutes in the
    queue would otherwise look like a leak to the monitor's reconciliation (an allocation
    without a container, older than its grace), which would free the devices for someone
    else before this server starts on them."""
    events: list[str] = []
    docker_api = SlowStartDocker(events)

    async def scenario():
        async with FakeMonitor(events=events) as monitor:
            alice, bob = (spawner_on(docker_api, monitor.url, user=name, start_concurrency=1)
                          for name in ("alice", "bob"))
            first = asyncio.ensure_future(spawn(alice, {"profile": "cuda", "gpus": 1}))
            await until(docker_api.start_begun.is_set, what="alice's docker start sent")
            second = asyncio.ensure_future(spawn(bob, {"profile": "cuda", "gpus": 1}))
            await until(lambda: any("Waiting for a turn" in e["message"] for e in getattr(bob, "_progress_events", [])),
                        what="bob waiting for his turn")
            assert bob.allocation_id == "" and [a["user"] for a in monitor.allocations.values()] == ["alice"]
            docker_api.let_start_finish()
            await asyncio.gather(first, second)
            assert sorted(a["user"] for a in monitor.allocations.values()) == ["alice", "bob"]

    run_async(scenario())
    posts = [i for i, e in enumerate(events) if e == "monitor POST api/allocations"]
    assert len(posts) == 2 and posts[1] > events.index("docker start gpuhub-alice")
