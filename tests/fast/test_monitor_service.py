"""The monitor service's own logic without a hub, Docker or PostgreSQL: request parsing, its
settings, how an entry of Docker's container list becomes what the reconciler plans with, the
usage recorder and the allocation batcher. The application itself runs behind a fake hub in
test_monitor_api.py, and in the docker tier (tests/docker/test_monitor.py)."""

from __future__ import annotations

import json

import pytest

from gpu_monitor.allocator import AllocationRequest
from gpu_monitor.jobs.reconciler import container_view
from gpu_monitor.requests import MAX_BODY_BYTES, BadRequest, parse_allocation_request
from gpu_monitor.settings import ConfigError, load_settings

from ..aio import run_async

GOOD = {
    "full": ({"user": "ada", "server": "big", "profile": "cuda", "count": 2},
             AllocationRequest("ada", "big", "cuda", 2)),
    "defaults": ({"user": "ada", "count": 1}, AllocationRequest("ada", "", "", 1)),
    # the allocator, not the parser, judges the number (400 with its own sentence)
    "negative count passes to the allocator": ({"user": "ada", "count": -1}, AllocationRequest("ada", "", "", -1)),
    "a kind of node": ({"user": "ada", "count": 1, "node_labels": {"gpu": "a100", "large-memory": ""}},
                       AllocationRequest("ada", "", "", 1, node_labels=(("gpu", "a100"), ("large-memory", "")))),
    "one node": ({"user": "ada", "count": 1, "node": "k3x9"}, AllocationRequest("ada", "", "", 1, node="k3x9")),
}


@pytest.mark.parametrize("body, expected", GOOD.values(), ids=GOOD.keys())
def test_good_requests(body, expected):
    assert parse_allocation_request(json.dumps(body).encode()) == expected


BAD = {
    "empty body": (b"", "must be a JSON object"),
    "not json": (b"{user", "not JSON"),
    "not utf-8": (b"\xff\xfe", "not JSON"),
    "a list": (b"[]", "must be a JSON object"),
    "unknown field": (b'{"user": "a", "count": 1, "image": "x"}', "unknown field(s) 'image'"),
    "missing count": (b'{"user": "a"}', "'count' is required"),
    "count float": (b'{"user": "a", "count": 1.0}', "'count' must be a whole number, not float"),
    "count bool": (b'{"user": "a", "count": true}', "'count' must be a whole number, not bool"),
    "user number": (b'{"user": 7, "count": 1}', "'user' must be a string"),
    "empty user": (b'{"user": "", "count": 1}', "'user' must not be empty"),
    "server null": (b'{"user": "a", "server": null, "count": 1}', "'server' must be a string"),
    "long profile": (json.dumps({"user": "a", "count": 1, "profile": "p" * 256}).encode(), "longer than 255"),
    # psycopg2 refuses a NUL in a statement: one such request failed its whole batch
    "NUL in user": (b'{"user": "a\\u0000b", "count": 1}', "'user' contains a control character"),
    "newline in server": (b'{"user": "a", "server": "x\\ny", "count": 1}', "'server' contains a control"),
    "escape in profile": (b'{"user": "a", "profile": "\\u001b[31m", "count": 1}', "'profile' contains a control"),
    "DEL in a group": (b'{"user": "a", "count": 1, "groups": ["ok", "g\\u007f"]}', "'groups' contains a control"),
    "tab in user": (b'{"user": "a\\tb", "count": 1}', "'user' contains a control"),
    "node a number": (b'{"user": "a", "count": 1, "node": 3}', "'node' must be a string, not int"),
    "NUL in node": (b'{"user": "a", "count": 1, "node": "n\\u0000"}', "'node' contains a control character"),
    "node labels as a list": (b'{"user": "a", "count": 1, "node_labels": ["gpu"]}',
                              "'node_labels' must be a JSON object of strings, not list"),
    "a node label's value a number": (b'{"user": "a", "count": 1, "node_labels": {"gpu": 100}}',
                                      "field 'node_labels' must map at most 32 non-empty label names to strings"),
    "an empty node label name": (b'{"user": "a", "count": 1, "node_labels": {"": "x"}}', "non-empty label names"),
    "too many node labels": (json.dumps({"user": "a", "count": 1, "node_labels": {f"l{i}": "" for i in range(33)}}).encode(),
                             "at most 32"),
    "newline in a node label": (b'{"user": "a", "count": 1, "node_labels": {"gpu": "a\\nb"}}',
                                "'node_labels' contains a control"),
}


@pytest.mark.parametrize("body, words", BAD.values(), ids=BAD.keys())
def test_bad_requests_say_what_is_wrong(body, words):
    with pytest.raises(BadRequest) as info:
        parse_allocation_request(body)
    assert words in str(info.value)
    assert info.value.status == 400


def test_a_huge_body_is_413_before_parsing():
    with pytest.raises(BadRequest) as info:
        parse_allocation_request(b"[" * (MAX_BODY_BYTES + 1))
    assert info.value.status == 413


def listed(state="running", labels=None, name="/gpuhub-ada", devices="CPU-b"):
    """One entry of GET /containers/json, as `docker.containers.list(sparse=True)` gives it."""
    if labels is None:
        labels = {"org.gpuhub.allocation": "a1", "org.gpuhub.user": "ada", "org.gpuhub.server": "",
                  "org.gpuhub.profile": "opencl", "org.gpuhub.deployment": "gpuhub"}
        if devices is not None:
            labels["org.gpuhub.devices"] = devices
    return {"Id": "f00d" * 16, "Names": [name], "State": state, "Status": "Up 2 minutes", "Labels": labels}


VIEWS = {
    "one device": (listed(devices="CPU-b"), ("CPU-b",)),
    "several, spaces ignored": (listed(devices="GPU-x, MIG-y"), ("GPU-x", "MIG-y")),
    "empty label: no devices": (listed(devices=""), ()),
    "no label (an older spawner): unknown": (listed(devices=None), None),
}


@pytest.mark.parametrize("attrs, ids", VIEWS.values(), ids=VIEWS.keys())
def test_container_view_reads_devices_from_the_label(attrs, ids):
    view = container_view(attrs)
    assert view.device_ids == ids
    assert (view.name, view.allocation_id, view.user, view.server, view.running, view.profile, view.id) == (
        "gpuhub-ada", "a1", "ada", "", True, "opencl", "f00d" * 16)


@pytest.mark.parametrize("state", ["exited", "created", "paused", "restarting", "dead"])
def test_only_the_running_state_counts_as_running(state):
    assert container_view(listed(state=state)).running is False


def test_container_without_allocation_label_holds_nothing():
    view = container_view(listed(labels={"org.gpuhub.user": "ada"}, state="exited"))
    assert view.allocation_id is None and view.running is False


class ListOnlyDocker:
    """docker-py's client as the monitor's API filter allows it: the container list (with its
    filters, applied here) and DELETE without force; `inspect` raises like the filter's 403."""

    def __init__(self, entries):
        self.entries = entries
        self.calls = []
        self.containers = self
        self.api = self

    def list(self, all=False, sparse=False, filters=None):
        import types

        self.calls.append(("list", all, sparse, filters))
        assert all and sparse, "docker-py inspects every container unless sparse=True"
        found = []
        for e in self.entries:
            labels = e["Labels"]
            ok = all_ok = True
            for f in filters.get("label", []):
                key, _, value = f.partition("=")
                all_ok &= key in labels and (not _ or labels[key] == value)
            if "id" in filters:
                ok = e["Id"] == filters["id"]
            if ok and all_ok:
                found.append(types.SimpleNamespace(attrs=e))
        return found

    def get(self, *a, **k):
        raise AssertionError("inspect (GET /containers/{id}/json) is refused by the API filter")

    def remove_container(self, container_id, force=False):
        assert not force
        self.calls.append(("remove", container_id))
        self.entries = [e for e in self.entries if e["Id"] != container_id]


def _reconciler(docker, deployment="gpuhub"):
    from gpu_monitor.jobs.reconciler import Reconciler

    return Reconciler(monitor=None, docker=docker, hub_api_url="http://hub.invalid", api_token="x",  # type: ignore[arg-type]
                      interval=60, grace_seconds=120, deployment=deployment)


def test_the_reconciler_sees_only_its_own_deployments_containers():
    mine = listed(name="/gpuhub-ada")
    theirs = listed(name="/gpuhub-bob")
    theirs["Labels"] = {**theirs["Labels"], "org.gpuhub.deployment": "gpuhub-test"}
    unlabelled = listed(name="/gpuhub-carol")
    del unlabelled["Labels"]["org.gpuhub.deployment"]
    docker = ListOnlyDocker([mine, theirs, unlabelled])
    assert [c.name for c in _reconciler(docker)._containers()] == ["gpuhub-ada"]
    assert [c.name for c in _reconciler(docker, "gpuhub-test")._containers()] == ["gpuhub-bob"]
    assert docker.calls[0][3]["label"] == ["org.gpuhub.allocation", "org.gpuhub.deployment=gpuhub"]


def test_removing_a_stopped_container_uses_the_list_and_delete_only():
    stopped = listed(state="exited")
    docker = ListOnlyDocker([stopped])
    assert _reconciler(docker)._remove_if_stopped(stopped["Id"]) is True
    assert ("remove", stopped["Id"]) in docker.calls and docker.entries == []


def test_a_container_running_again_is_not_removed():
    again = listed(state="running")
    docker = ListOnlyDocker([again])
    assert _reconciler(docker)._remove_if_stopped(again["Id"]) is False
    assert docker.entries == [again]


def test_another_deployments_stopped_container_is_never_removed():
    theirs = listed(state="exited")
    theirs["Labels"]["org.gpuhub.deployment"] = "gpuhub-test"
    docker = ListOnlyDocker([theirs])
    assert _reconciler(docker)._remove_if_stopped(theirs["Id"]) is False
    assert docker.entries == [theirs]


def test_the_reconciler_plans_only_for_its_own_nodes_allocations():
    import types

    from gpu_monitor.allocator import Allocation
    from gpu_monitor.jobs.reconciler import Reconciler

    # no container anywhere, long past the grace: this engine's node's allocation goes; the
    # other node's containers run on an engine this reconciler cannot see, so its stays
    here = Allocation("a-here", "ada", "", "cuda", ("GPU-0",), 0.0, node="local")
    there = Allocation("a-there", "bob", "", "cuda", ("GPU-9",), 0.0, node="gpu-2")
    released = []

    async def run(fn, *args):
        return fn(*args)

    store = types.SimpleNamespace(list=lambda: [here, there], release=lambda id: released.append(id) or True)
    monitor = types.SimpleNamespace(run=run, store=store, seats=dict, unavailable=frozenset())
    reconciler = Reconciler(monitor, ListOnlyDocker([]), "http://hub.invalid", "x", interval=60,  # type: ignore[arg-type]
                            grace_seconds=0, deployment="gpuhub", node="local")

    async def no_opinion():
        return None

    reconciler.hub_servers = no_opinion  # type: ignore[method-assign]
    run_async(reconciler.once())
    assert released == ["a-here"]


def test_settings_defaults_and_values():
    s = load_settings({})
    assert (s.backend, s.cpu_slices, s.reconcile_seconds, s.grace_seconds) == ("auto", 2, 60.0, 120.0)
    s = load_settings({"GPUHUB_MONITOR_BACKEND": "cpu-slices", "GPUHUB_CPU_SLICES": "4",
                       "GPUHUB_POLICY_FILE": "/etc/p.yaml", "GPUHUB_MONITOR_FLUSH_SECONDS": "2.5"})
    assert (s.backend, s.cpu_slices, s.policy_file, s.flush_seconds) == ("cpu-slices", 4, "/etc/p.yaml", 2.5)
    # as the hub reads it (one declaration): on unless DOMAIN is set
    assert s.user_subdomains
    assert not load_settings({"DOMAIN": "hub.example.org"}).user_subdomains
    assert load_settings({"DOMAIN": "hub.example.org", "GPUHUB_USER_SUBDOMAINS": " Yes "}).user_subdomains
    assert not load_settings({"GPUHUB_USER_SUBDOMAINS": "off"}).user_subdomains


BAD_SETTINGS = {
    "backend": ({"GPUHUB_MONITOR_BACKEND": "rocm"}, "GPUHUB_MONITOR_BACKEND: unknown value 'rocm'; choose one of auto, nvml, cpu-slices"),  # noqa: E501
    "slices": ({"GPUHUB_CPU_SLICES": "0"}, "GPUHUB_CPU_SLICES: must be at least 1"),
    "slices text": ({"GPUHUB_CPU_SLICES": "two"}, "GPUHUB_CPU_SLICES: expected a whole number"),
    "interval": ({"GPUHUB_MONITOR_RECONCILE_SECONDS": "0"}, "GPUHUB_MONITOR_RECONCILE_SECONDS: must be at least 1"),
    "flush": ({"GPUHUB_MONITOR_FLUSH_SECONDS": "0.5"}, "GPUHUB_MONITOR_FLUSH_SECONDS: must be at least 1"),
    "subdomains": ({"GPUHUB_USER_SUBDOMAINS": "maybe"}, "GPUHUB_USER_SUBDOMAINS: expected true or false, got 'maybe'"),
}


@pytest.mark.parametrize("environ, message", BAD_SETTINGS.values(), ids=BAD_SETTINGS.keys())
def test_bad_settings_name_the_variable(environ, message):
    with pytest.raises(ConfigError) as info:
        load_settings(environ)
    assert str(info.value).startswith(message)


def test_token_file_problems_name_the_variable(tmp_path):
    s = load_settings({"GPUHUB_MONITOR_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(ConfigError, match="GPUHUB_MONITOR_TOKEN_FILE: file .* does not exist; the init service writes it"):
        s.read_api_token()
    (tmp_path / "short").write_text("abc")
    s = load_settings({"GPUHUB_MONITOR_TOKEN_FILE": str(tmp_path / "short")})
    with pytest.raises(ConfigError, match="fewer than 32"):
        s.read_api_token()


def test_usage_goes_to_the_holders_of_each_device_per_hour_and_minute():
    from gpu_monitor.allocator import Allocation
    from gpu_monitor.devices import Sample
    from gpu_monitor.jobs.usage_recorder import UsageRecorder
    from gpu_monitor.sampler import DeviceState

    recorder = UsageRecorder(monitor=None, interval=60)  # type: ignore[arg-type]
    now = 1_800_003_725.0  # 1 h 2 min 5 s past a whole hour of the epoch
    def states(busy, sampled):
        return {"GPU-0": DeviceState(Sample("GPU-0", now, utilization_ratio=0.5, memory_used_bytes=100), busy, sampled),
                "GPU-1": DeviceState(Sample("GPU-1", now, utilization_ratio=None), 0.0, sampled)}
    held = [Allocation("a1", "ada", "", "cuda", ("GPU-0", "GPU-1"), now - 500),
            Allocation("a2", "bob", "", "cuda", ("GPU-0",), now - 500)]  # GPU-0 shared by two
    # the first call only sets the starting point
    assert recorder.deltas(states(10.0, 20.0), held, now) == ([], [])
    usage, points = recorder.deltas(states(40.0, 80.0), held, now + 60)
    hour = now - now % 3600
    assert sorted(usage) == [("a1", hour, 30.0, 120.0), ("a2", hour, 30.0, 60.0)]
    minute = (now + 60) - (now + 60) % 60
    assert sorted(points) == [("GPU-0", minute, 0.5, 100.0), ("GPU-1", minute, None, None)]


def test_non_ascii_names_are_not_control_characters():
    body = json.dumps({"user": "ünïcödé", "server": "été", "count": 1}).encode()
    assert parse_allocation_request(body).user == "ünïcödé"


class StoreThatRefusesNUL:
    """Like psycopg2: a batch with a NUL anywhere fails as a whole (ValueError)."""

    def __init__(self):
        self.batches = []

    def allocate_many(self, requests, devices, policy, now=None, unavailable=frozenset(), nodes=None):
        self.batches.append([r.user for r in requests])
        if any("\x00" in r.user for r in requests):
            raise ValueError("A string literal cannot contain NUL (0x00) characters.")
        from gpu_monitor.allocator import Allocation, Granted
        return [Granted(Allocation(r.user, r.user, r.server, r.profile, ("GPU-0",), 0.0), False) for r in requests]


class StoreThatIsDown:
    def __init__(self):
        self.calls = 0

    def allocate_many(self, requests, devices, policy, now=None, unavailable=frozenset(), nodes=None):
        from sqlalchemy.exc import OperationalError
        self.calls += 1
        raise OperationalError("SELECT", {}, Exception("could not connect"))


def _batcher(store, soonest_reclaim=None):
    import types

    from gpu_monitor.batcher import AllocationBatcher

    async def run(fn, *args):
        return fn(*args)

    return AllocationBatcher(types.SimpleNamespace(store=store, devices=[], policy=None, run=run, unavailable=frozenset(),
                                                   nodes=None, soonest_reclaim=lambda: soonest_reclaim))


def test_one_failing_request_does_not_fail_the_others_of_its_batch():
    import asyncio

    from gpu_monitor.allocator import Granted

    store = StoreThatRefusesNUL()
    batcher = _batcher(store)

    async def burst():
        return await asyncio.gather(*(batcher.submit(AllocationRequest(u, "", "", 1)) for u in ("a", "b\x00", "c")),
                                    return_exceptions=True)

    a, bad, c = run_async(burst())
    assert isinstance(a, Granted) and isinstance(c, Granted)
    assert isinstance(bad, ValueError)
    assert store.batches[0] == ["a", "b\x00", "c"]  # one batch first, then each alone


def test_a_database_outage_fails_the_batch_at_once_without_retrying_each():
    import asyncio

    from sqlalchemy.exc import OperationalError

    store = StoreThatIsDown()
    batcher = _batcher(store)

    async def burst():
        return await asyncio.gather(*(batcher.submit(AllocationRequest(u, "", "", 1)) for u in "abc"),
                                    return_exceptions=True)

    assert all(isinstance(r, OperationalError) for r in run_async(burst()))
    assert store.calls == 1


class StoreThatDecides:
    """The store's decisions without PostgreSQL: `decide()` over the allocations it holds."""

    def __init__(self, devices, held=()):
        self.devices, self.held = devices, list(held)

    def allocate_many(self, requests, devices, policy, now=None, unavailable=frozenset(), nodes=None):
        from gpu_monitor.allocator import Granted, Policy, decide

        decisions = []
        for i, r in enumerate(requests):
            d = decide(r, self.devices, self.held, Policy(), now=0.0, new_id=f"new-{i}")
            if isinstance(d, Granted) and not d.existing:
                self.held.append(d.allocation)
            decisions.append(d)
        return decisions


def test_a_none_free_refusal_says_when_an_idle_servers_device_is_due_back():
    from gpu_monitor.allocator import Allocation, Refused
    from gpu_monitor.devices import Device

    gpu = Device("GPU-0", 0, "gpu", "Test GPU")
    held = Allocation("a1", "ada", "", "cuda", ("GPU-0",), 0.0)
    at = 1_700_003_640.0
    refused = run_async(_batcher(StoreThatDecides([gpu], [held]), soonest_reclaim=at).submit(
        AllocationRequest("bob", "", "cuda", 1)))
    assert isinstance(refused, Refused) and refused.code == "none_free"
    assert refused.free_at == at and refused.reason.endswith(
        "; the soonest device is likely to be free at 23:14 UTC (an idle server is due to stop)")
    # no idle server due: the allocator's sentence alone
    plain = run_async(_batcher(StoreThatDecides([gpu], [held])).submit(AllocationRequest("bob", "", "cuda", 1)))
    assert isinstance(plain, Refused) and plain.free_at is None and plain.reason.endswith("when one is released")
    # a conflict is not "none free": it names the allocation held, never a time
    conflict = run_async(_batcher(StoreThatDecides([gpu], [held]), soonest_reclaim=at).submit(
        AllocationRequest("ada", "", "cuda", 2)))
    assert isinstance(conflict, Refused) and (conflict.code, conflict.allocation_id, conflict.free_at) == (
        "conflict", "a1", None)
