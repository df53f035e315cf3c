"""The monitor's settings (gpu_monitor/gpu_monitor/settings.py) beyond those in test_monitor_service.py:
non-finite numbers, the deployment name, the node's labels, and the node as the API then shows it."""

from __future__ import annotations

import pytest

from gpu_monitor.settings import ConfigError, load_settings

NUMERIC = ("GPUHUB_MONITOR_SAMPLE_SECONDS", "GPUHUB_MONITOR_RECONCILE_SECONDS",
           "GPUHUB_MONITOR_GRACE_SECONDS", "GPUHUB_MONITOR_FLUSH_SECONDS", "GPUHUB_CPU_SLICES")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize("variable", NUMERIC)
def test_every_numeric_setting_refuses_non_finite_values_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert str(info.value).startswith(f"{variable}: ")
    assert info.value.variable == variable


def test_the_deployment_defaults_to_gpuhub_and_is_read_from_the_environment():
    assert load_settings({}).deployment == "gpuhub"
    assert load_settings({"GPUHUB_DEPLOYMENT": "gpuhub-test"}).deployment == "gpuhub-test"


@pytest.mark.parametrize("value", ["a=b", "a,b", "with space", "x" * 64])
def test_a_deployment_name_a_label_filter_cannot_carry_is_refused(value):
    with pytest.raises(ConfigError, match="^GPUHUB_DEPLOYMENT: "):
        load_settings({"GPUHUB_DEPLOYMENT": value})


LABELS = {
    "empty": ("", {}),
    "pairs and a bare label": ("gpu=a100, large-memory ,zone=b", {"gpu": "a100", "large-memory": "", "zone": "b"}),
    "Docker's dotted names": ("com.example.rack=r7", {"com.example.rack": "r7"}),
}


@pytest.mark.parametrize("value, expected", LABELS.values(), ids=LABELS.keys())
def test_node_labels(value, expected):
    assert load_settings({"GPUHUB_NODE_LABELS": value}).node_labels == expected


@pytest.mark.parametrize("value, words", [("gpu model=a100", "'gpu model' is not a label name"),
                                          ("=a100", "'' is not a label name"),
                                          ("gpu=a100,gpu=h100", "label 'gpu' is given twice")])
def test_bad_node_labels_name_the_variable(value, words):
    with pytest.raises(ConfigError) as info:
        load_settings({"GPUHUB_NODE_LABELS": value})
    assert str(info.value).startswith("GPUHUB_NODE_LABELS: ") and words in str(info.value)


def test_devices_and_allocations_carry_their_node_and_a_node_that_is_not_up_frees_nothing():
    from gpu_monitor.allocator import Allocation, Policy
    from gpu_monitor.devices import Device, Node
    from gpu_monitor.monitor import HostInfo, Monitor

    devices = [Device("GPU-a", 0, "gpu", "A", node="n1"), Device("GPU-b", 1, "gpu", "B", node="n1"),
               Device("GPU-c", 0, "gpu", "C", node="n2")]
    nodes = [Node("n1", "gpu-1", {"gpu": "a100"}), Node("n2", "gpu-2", state="lost", reason="its engine does not answer")]
    monitor = Monitor(devices, HostInfo("nvml"), None, Policy(), workers=1, nodes=nodes)  # type: ignore[arg-type]
    try:
        held = Allocation("a1", "ada", "", "cuda", ("GPU-a",), 1.0, node="n1")
        view = monitor.devices_json([held], viewer="ada")
        assert (view["total"], view["free"]) == (3, 1)
        assert [(r["uuid"], r["node"], r["free"], r["mine"]) for r in view["devices"]] == [
            ("GPU-a", "n1", False, True), ("GPU-c", "n2", False, False), ("GPU-b", "n1", True, False)]
        assert view["nodes"] == [
            {"id": "n1", "hostname": "gpu-1", "labels": {"gpu": "a100"}, "state": "up", "reason": "", "total": 2, "free": 1},
            {"id": "n2", "hostname": "gpu-2", "labels": {}, "state": "lost", "reason": "its engine does not answer",
             "total": 1, "free": 0}]
        assert monitor.allocation_json(held)["node"] == "n1"
    finally:
        monitor.close()


def test_the_dashboard_shows_each_node_and_a_device_on_a_node_that_is_away_as_such():
    from gpu_monitor.dashboard import device_state, render_dashboard

    nodes = [{"id": "n1", "hostname": "gpu-1", "labels": {"gpu": "<a100>", "big": ""}, "state": "up", "reason": "",
              "total": 1, "free": 1},
             {"id": "n2", "hostname": "", "labels": {}, "state": "lost", "reason": "no heartbeat for 40 s",
              "total": 1, "free": 0}]
    device = {"index": 0, "name": "G", "utilization_ratio": None, "allocatable": True, "mine": False, "holders": 0}
    devices = [{**device, "uuid": "GPU-a", "node": "n1", "free": True}, {**device, "uuid": "GPU-b", "node": "n2", "free": False}]
    page = render_dashboard({"devices": devices, "nodes": nodes, "free": 1, "total": 2, "host": {"backend": "nvml"}},
                            [], admin=False, prefix="/p/", viewer="ada", xsrf="x")
    assert '<tr data-node="n1" data-state="up"><td>n1 (gpu-1)</td><td class="state">up</td><td>big, gpu=&lt;a100&gt;</td>' \
           '<td>1 of 1</td></tr>' in page
    assert '<td class="state">lost: no heartbeat for 40 s</td>' in page
    assert 'data-uuid="GPU-b" data-state="node lost"' in page
    # a device held on a node that went away is still held by someone
    assert device_state({**devices[1], "holders": 1}, "lost") == "in use"
