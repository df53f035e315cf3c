"""GPUDockerSpawner's option handling and container settings, without Docker."""

import asyncio
import logging
import socket
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
from tornado import web

import gpuhub.spawner
from gpuhub.monitor_client import Host
from gpuhub.profiles import parse_profiles
from gpuhub.spawner import GPUDockerSpawner, allocation_container_settings, cuda_refusal

from ..aio import run_async
from ..fakes.docker_api import ObedientDocker

PROFILES = parse_profiles({
    "profiles": [
        {"name": "minimal", "display_name": "Minimal", "description": "CPU <only>", "image": "gpuhub/min",
         "cpu_limit": 1.5, "mem_limit": "2G", "shm_size": "256M", "pids_limit": 512},
        {"name": "cuda", "display_name": "CUDA", "image": "gpuhub/cuda", "gpus": [0, 1, 2]},
    ]
})


@pytest.fixture
def spawner():
    user = SimpleNamespace(name="al{ice}", id=1, url="/user/al{ice}/")
    return GPUDockerSpawner(user=user, profiles=PROFILES, _deprecated_db_session=None)


def test_form_lists_profiles_escaped_with_gpu_choices(spawner):
    form = run_async(spawner._render_options_form(spawner))
    # what the browser tests (tests/browser) select
    assert form.count('<p class="gpuhub-free ') == 1 and form.count('<div class="gpuhub-profile ') == 2
    assert 'type="radio" name="profile" value="minimal" checked' in form
    assert 'type="radio" name="profile" value="cuda">' in form
    assert "CPU &lt;only&gt;" in form and "<only>" not in form
    # no monitor, no GPU: only 0 is offered, even for a profile declaring more
    assert 'name="gpus-cuda"><option value="0">0</option></select>' in form
    assert "no GPU monitor" in form


def test_form_says_so_when_the_monitor_does_not_answer(spawner):
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    spawner.monitor_url = f"http://127.0.0.1:{port}/services/gpu-monitor/"
    form = run_async(spawner._render_options_form(spawner))
    assert "not answering right now" in form
    assert 'name="gpus-cuda"><option value="0">0</option></select>' in form


def test_a_sites_template_directory_is_searched_before_gpuhubs(spawner, tmp_path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "options_form.html").write_text(
        '<p class="site">{{ notice }}</p>\n'
        '{% for p in profiles %}<input type="radio" name="profile" value="{{ p.name }}">{{ p.description }}\n'
        '{% endfor %}')
    spawner.additional_options_form_template_paths = [str(tmp_path / "not-there"), str(site)]
    form = run_async(spawner._render_options_form(spawner))
    assert form == ('<p class="site">This hub has no GPU monitor: servers start without GPUs.</p>\n'
                    '<input type="radio" name="profile" value="minimal">CPU &lt;only&gt;\n'
                    '<input type="radio" name="profile" value="cuda">\n')


def test_a_sites_template_may_extend_gpuhubs_and_replace_a_block(spawner, tmp_path):
    (tmp_path / "options_form.html").write_text(
        '{% extends "gpuhub/options_form.html" %}'
        '{% block notice %}<p class="site">{{ devices is none }}: {{ "<b>" }}</p>{% endblock %}')
    spawner.additional_options_form_template_paths = [str(tmp_path)]
    form = run_async(spawner._render_options_form(spawner))
    assert '<p class="site">True: &lt;b&gt;</p>' in form and "gpuhub-free" not in form
    assert 'value="minimal" checked' in form and "CPU &lt;only&gt;" in form
    assert 'name="gpus-cuda"><option value="0">0</option></select>' in form


def test_form_data_become_user_options(spawner):
    assert spawner.options_from_form({"profile": ["cuda"], "gpus-cuda": ["1"], "gpus-minimal": ["0"]}) == {
        "profile": "cuda", "gpus": "1"}


def test_choice_configures_the_container(spawner):
    spawner._apply_choice({"profile": "minimal", "gpus": "0"})
    assert spawner.user_options == {"profile": "minimal", "gpus": 0}
    assert spawner.image == "gpuhub/min"
    assert spawner.cpu_limit == 1.5
    assert spawner.mem_limit == 2 * 1024**3
    tmpfs = "rw,exec,nosuid,nodev,size=1073741824,mode=1777"  # the default tmp_size, 1G
    assert spawner.extra_host_config == {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"],
                                         "pids_limit": 512, "shm_size": "256M", "read_only": True,
                                         "tmpfs": {"/tmp": tmpfs, "/var/tmp": tmpfs}}
    assert spawner.environment["NVIDIA_VISIBLE_DEVICES"] == "void"
    labels = spawner.extra_create_kwargs["labels"]
    assert labels["org.gpuhub.profile"] == "minimal"
    # braces survive DockerSpawner's str.format rendering of extra_create_kwargs
    assert spawner._render_templates(labels)["org.gpuhub.user"] == "al{ice}"


HOST_12 = Host(backend="nvml", driver_version="535.104.05", cuda_driver_version="12.2")
CUDA_CASES = {
    "13 image on a 12.2 driver": ("13", HOST_12, "built for CUDA 13, but this host's NVIDIA driver 535.104.05 "
                                                 "supports CUDA up to 12.2"),
    "12 image on a 12.2 driver": ("12", HOST_12, None),
    "13 image on a 13.0 driver": ("13", Host(backend="nvml", driver_version="580.65.06", cuda_driver_version="13.0"),
                                  None),
    "no driver (CPU slices)": ("13", Host(backend="cpu-slices"), None),
    "image without the label": (None, HOST_12, None),
}


@pytest.mark.parametrize("image_major, host, words", CUDA_CASES.values(), ids=CUDA_CASES.keys())
def test_cuda_image_newer_than_the_driver_is_refused_naming_both(image_major, host, words):
    refusal = cuda_refusal("cuda", "gpuhub/singleuser-cuda:latest", image_major, host)
    if words is None:
        assert refusal is None
    else:
        assert words in refusal and "GPUHUB_CUDA_MAJOR=12" in refusal


def test_gpus_are_requested_by_id_never_by_count():
    allocation = {"id": "a1", "devices": [
        {"uuid": "GPU-1", "kind": "gpu", "docker_device_id": "GPU-1"},
        {"uuid": "MIG-2", "kind": "mig", "docker_device_id": "MIG-2"}]}
    host, env = allocation_container_settings(allocation)
    assert host == {"device_requests": [{"driver": "nvidia", "device_ids": ["GPU-1", "MIG-2"],
                                         "capabilities": [["gpu"]]}]}
    assert env["NVIDIA_VISIBLE_DEVICES"] == env["CUDA_VISIBLE_DEVICES"] == "GPU-1,MIG-2"
    assert env["GPUHUB_ALLOCATION"] == "a1"


def test_cpu_slices_become_a_cpuset_and_no_gpu():
    allocation = {"id": "a2", "devices": [
        {"uuid": "CPU-a", "kind": "cpu-slice", "cpuset": "0-1", "cores": 2},
        {"uuid": "CPU-b", "kind": "cpu-slice", "cpuset": "4-5", "cores": 2}]}
    host, env = allocation_container_settings(allocation)
    assert host == {"cpuset_cpus": "0-1,4-5"}
    assert env["NVIDIA_VISIBLE_DEVICES"] == "void" and env["CUDA_VISIBLE_DEVICES"] == ""
    assert env["POCL_CPU_MAX_CU_COUNT"] == "4"
    assert env["GPUHUB_DEVICES"] == "CPU-a,CPU-b"


def test_allocation_id_survives_a_hub_restart_in_the_state(spawner):
    spawner.allocation_id = "a3"
    state = spawner.get_state()
    assert state["allocation_id"] == "a3"
    spawner.clear_state()
    assert spawner.allocation_id == ""
    spawner.load_state(state)
    assert spawner.allocation_id == "a3"


def test_start_waits_for_the_server_with_a_short_fixed_poll():
    """wait_until_answering: False while nothing listens, True as soon as the server answers
    (any status below 500), well before JupyterHub's back-off would have looked again."""
    from tornado.httpserver import HTTPServer

    from gpuhub.spawner import wait_until_answering

    async def scenario():
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
        sock.close()
        url = f"http://127.0.0.1:{port}/user/x/api"
        assert await wait_until_answering(url, timeout=0.3, interval=0.05) is False
        app = web.Application([(r"/user/x/api", web.RequestHandler)])  # 405 for GET: up all the same
        loop = asyncio.get_running_loop()
        server = HTTPServer(app)
        loop.call_later(0.3, server.listen, port, "127.0.0.1")
        started = loop.time()
        assert await wait_until_answering(url, timeout=5, interval=0.05) is True
        waited = loop.time() - started
        server.stop()
        return waited

    waited = run_async(scenario())
    # Never before the server listens; after it, within a few 0.05 s polls. The upper bound leaves a
    # loaded machine a second of slack (it was 0.6 s and flaked) and is still below the 1.4 s by which
    # JupyterHub's own back-off (0.2 + 0.4 + 0.8 s) would have looked for the third time.
    assert 0.3 <= waited < 1.4


def test_start_queue_lets_only_start_concurrency_servers_start_at_once(monkeypatch):
    running, most = 0, 0

    async def slow_start(self):  # DockerSpawner.start: creating and starting the container
        nonlocal running, most
        running += 1
        most = max(most, running)
        await asyncio.sleep(0.05)
        running -= 1
        return (None, None)  # no address: nothing to wait for

    class SpawnerOnFakeDocker(GPUDockerSpawner):
        _client = ObedientDocker()  # start() pulls the image (if missing) before its turn
        _executor = ThreadPoolExecutor(1)

    monkeypatch.setattr("dockerspawner.DockerSpawner.start", slow_start)
    spawners = [SpawnerOnFakeDocker(user=SimpleNamespace(name=f"u{i}", id=i, url=f"/user/u{i}/"), profiles=PROFILES,
                                    start_concurrency=2, user_options={"profile": "minimal"},
                                    _deprecated_db_session=None)
                for i in range(5)]

    async def burst():
        return await asyncio.gather(*(s.start() for s in spawners))

    assert run_async(burst()) == [(None, None)] * 5
    assert most == 2
    waited = [e["message"] for s in spawners for e in s._progress_events if "Waiting for a turn" in e["message"]]
    assert len(waited) == 3 and "2 servers are starting" in waited[0]


@pytest.mark.parametrize("value, expected", [("", "gpuhub"), ("gpuhub-test", "gpuhub-test")], ids=["default", "set"])
def test_the_deployment_setting_reaches_the_spawner(environ, value, expected):
    from traitlets.config import Config

    from gpuhub.configure import configure
    from gpuhub.settings import load_settings

    c = Config()
    configure(c, load_settings({**environ, "GPUHUB_DEPLOYMENT": value}))
    assert c.GPUDockerSpawner.deployment == expected


def test_a_deployment_name_that_is_not_a_compose_project_name_stops_the_hub(environ):
    from gpuhub.settings import ConfigError, load_settings

    with pytest.raises(ConfigError, match="GPUHUB_DEPLOYMENT: expected a name of lowercase letters"):
        load_settings({**environ, "GPUHUB_DEPLOYMENT": "My Hub"})


def test_the_root_filesystem_is_read_only_with_tmpfs_of_the_profiles_size():
    profiles = parse_profiles({"profiles": [
        {"name": "big", "display_name": "Big", "image": "gpuhub/big", "tmp_size": "2.5G"}]})
    spawner = GPUDockerSpawner(user=SimpleNamespace(name="bob", id=2, url="/user/bob/"), profiles=profiles,
                               _deprecated_db_session=None)
    spawner._apply_choice({"profile": "big"})
    assert spawner.extra_host_config["read_only"] is True
    size = int(2.5 * 1024**3)
    assert spawner.extra_host_config["tmpfs"] == {
        "/tmp": f"rw,exec,nosuid,nodev,size={size},mode=1777", "/var/tmp": f"rw,exec,nosuid,nodev,size={size},mode=1777"}


def test_a_profile_whose_kind_of_node_no_node_is_is_offered_without_gpus_and_logged_once(spawner, monkeypatch, caplog):
    from gpuhub.monitor_client import Devices

    profiles = parse_profiles({"profiles": [
        {"name": "cuda", "display_name": "CUDA", "image": "gpuhub/cuda", "gpus": [0, 1]},
        {"name": "big", "display_name": "Big", "image": "gpuhub/cuda", "gpus": [0, 1], "node_labels": {"gpu": "h100"}},
        {"name": "a100", "display_name": "A100", "image": "gpuhub/cuda", "gpus": [0, 1], "node_labels": {"gpu": "a100"}},
    ]})
    devices = Devices(host=Host("nvml"), total=2, free=2,
                      rows=({"uuid": "GPU-a", "node": "n1", "free": True}, {"uuid": "GPU-b", "node": "n1", "free": True}),
                      nodes=({"id": "n1", "labels": {"gpu": "a100"}, "state": "up", "total": 2},))

    class Monitor:
        async def devices(self):
            return devices

    monkeypatch.setattr(GPUDockerSpawner, "monitor", property(lambda self: Monitor()))
    monkeypatch.setattr(gpuhub.spawner, "_warned_no_node", set())
    spawner.profiles, spawner.monitor_url = profiles, "http://monitor.invalid/services/gpu-monitor/"
    for _ in range(2):
        form = run_async(spawner._render_options_form(spawner))
    assert 'name="gpus-cuda"><option value="0">0</option><option value="1">1</option></select>' in form
    assert 'name="gpus-a100"><option value="0">0</option><option value="1">1</option></select>' in form
    assert 'name="gpus-big"><option value="0">0</option></select>' in form
    warnings = [r.getMessage() for r in caplog.records if "no node has" in r.getMessage()]
    assert warnings == ["profile 'big' asks for node label(s) gpu=h100, which no node has: it is offered without "
                        "GPUs (label a node, or set GPUHUB_NODE_LABELS on a single host)"]


def test_at_the_hubs_start_a_profile_whose_kind_of_node_no_node_is_is_named_once_the_monitor_knows_nodes(
        monkeypatch, caplog):
    """gpuhub.configure starts this in the hub's loop: the monitor not answering yet, then
    answering without nodes (agents not registered yet), then with them: one warning, for the
    profile no node fits, and the form does not repeat it."""
    from gpuhub.monitor_client import Devices, MonitorUnavailable
    from gpuhub.spawner import check_profiles_have_nodes

    profiles = parse_profiles({"profiles": [
        {"name": "cuda", "display_name": "CUDA", "image": "gpuhub/cuda", "gpus": [0, 1]},
        {"name": "big", "display_name": "Big", "image": "gpuhub/cuda", "gpus": [0, 1], "node_labels": {"gpu": "h100"}},
        {"name": "a100", "display_name": "A100", "image": "gpuhub/cuda", "gpus": [0, 1], "node_labels": {"gpu": "a100"}},
    ]})
    empty = Devices(host=Host("nvml"), total=0, free=0, rows=(), nodes=())
    known = Devices(host=Host("nvml"), total=2, free=2, rows=(),
                    nodes=({"id": "n1", "labels": {"gpu": "a100"}, "state": "up", "total": 2},))
    answers = iter([MonitorUnavailable("the GPU monitor is not answering"), empty, known])

    class Monitor:
        async def devices(self):
            answer = next(answers)
            if isinstance(answer, Exception):
                raise answer
            return answer

    monkeypatch.setattr(gpuhub.spawner, "_warned_no_node", set())
    log = logging.getLogger("JupyterHub")
    assert run_async(check_profiles_have_nodes(Monitor(), profiles, log, interval=0)) == ["big"]
    gpuhub.spawner.warn_no_node(log, profiles.profiles[1])  # what the form would log: nothing again
    warnings = [r.getMessage() for r in caplog.records if "no node has" in r.getMessage()]
    assert warnings == ["profile 'big' asks for node label(s) gpu=h100, which no node has: it is offered without "
                        "GPUs (label a node, or set GPUHUB_NODE_LABELS on a single host)"]


def test_at_the_hubs_start_a_monitor_that_never_knows_a_node_is_said_once_and_nothing_is_named(caplog):
    from gpuhub.monitor_client import MonitorUnavailable
    from gpuhub.spawner import check_profiles_have_nodes

    profiles = parse_profiles({"profiles": [
        {"name": "big", "display_name": "Big", "image": "gpuhub/cuda", "gpus": [0, 1], "node_labels": {"gpu": "h100"}},
    ]})

    class Monitor:
        async def devices(self):
            raise MonitorUnavailable("the GPU monitor is not answering")

    assert run_async(check_profiles_have_nodes(Monitor(), profiles, logging.getLogger("JupyterHub"),
                                               wait=0.05, interval=0.01)) == []
    assert [r.getMessage() for r in caplog.records if "node_labels" in r.getMessage()] == [
        "could not check profiles' node_labels against the nodes at start: the GPU monitor is not answering"]


def test_the_form_offers_no_more_gpus_than_one_node_of_the_profiles_kind_has(spawner, monkeypatch):
    """A server runs on one node: two nodes of 2 and 4 GPUs offer at most 4, not 6; a profile
    asking for the 2-GPU node's label at most 2."""
    from gpuhub.monitor_client import Devices

    profiles = parse_profiles({"profiles": [
        {"name": "any", "display_name": "Any", "image": "gpuhub/cuda", "gpus": [0, 1, 2, 4, 6]},
        {"name": "a100", "display_name": "A100", "image": "gpuhub/cuda", "gpus": [0, 1, 2, 4],
         "node_labels": {"gpu": "a100"}},
    ]})
    devices = Devices(host=Host("nvml"), total=6, free=6, nodes=(
        {"id": "n1", "labels": {"gpu": "a100"}, "state": "up", "total": 2},
        {"id": "n2", "labels": {"gpu": "h100"}, "state": "up", "total": 4}))

    class Monitor:
        async def devices(self):
            return devices

    monkeypatch.setattr(GPUDockerSpawner, "monitor", property(lambda self: Monitor()))
    spawner.profiles, spawner.monitor_url = profiles, "http://monitor.invalid/services/gpu-monitor/"
    form = run_async(spawner._render_options_form(spawner))
    options = "".join(f'<option value="{n}">{n}</option>' for n in (0, 1, 2, 4))
    assert f'name="gpus-any">{options}</select>' in form
    options = "".join(f'<option value="{n}">{n}</option>' for n in (0, 1, 2))
    assert f'name="gpus-a100">{options}</select>' in form
