"""The GPU policy file and the accounting arithmetic, as tables of named cases."""

from __future__ import annotations

import pytest
import yaml

from gpu_monitor.accounting import account, to_csv
from gpu_monitor.allocator import Policy
from gpu_monitor.env import ConfigError
from gpu_monitor.policy import IdleReclaim, load_policy, parse_policy

from ..conftest import ROOT

POLICIES = {
    "empty file: exclusive, no limits": ("", Policy(), IdleReclaim()),
    "limits and sharing": (
        """
        max_gpus_per_user: 4
        profiles: {cuda: {max_gpus_per_user: 2}}
        groups: {students: {max_gpus_per_user: 1}, staff: {}}
        sharing: {gpu: {shared: 3}, mig: exclusive}
        idle_reclaim: {enabled: true, notice_after_minutes: 5, stop_after_minutes: 10}
        """,
        Policy(max_gpus_per_user=4, max_gpus_per_profile={"cuda": 2}, max_gpus_per_group={"students": 1},
               share={"gpu": 3}),
        IdleReclaim(enabled=True, notice_after_minutes=5, stop_after_minutes=10),
    ),
    "spread over nodes": ("placement: spread", Policy(placement="spread"), IdleReclaim()),
}


@pytest.mark.parametrize("text, policy, idle", POLICIES.values(), ids=POLICIES.keys())
def test_policy_files(text, policy, idle):
    parsed = parse_policy(yaml.safe_load(text))
    assert parsed.allocation == policy
    assert parsed.idle_reclaim == idle


BAD_POLICIES = {
    "a typo is a stop, not a silent default": ("max_gpu_per_user: 2", "Additional properties are not allowed ('max_gpu_per_user'"),  # noqa: E501
    "negative limit": ("groups: {students: {max_gpus_per_user: -1}}", "at groups/students/max_gpus_per_user"),
    "unknown device kind": ("sharing: {tpu: exclusive}", "at sharing"),
    "sharing as a number": ("sharing: {gpu: 2}", "at sharing/gpu"),
    "unknown placement": ("placement: random", "at placement: 'random' is not one of ['pack', 'spread']"),
    "shared zero": ("sharing: {gpu: {shared: 0}}", "at sharing/gpu"),
    "threshold over 1": ("idle_reclaim: {below_utilization: 5}", "at idle_reclaim/below_utilization"),
    "notice after stop": ("idle_reclaim: {notice_after_minutes: 20, stop_after_minutes: 10}",
                          "notice_after_minutes (20) must not exceed stop_after_minutes (10)"),
}


@pytest.mark.parametrize("text, words", BAD_POLICIES.values(), ids=BAD_POLICIES.keys())
def test_bad_policy_files_stop_startup_with_the_location(text, words):
    with pytest.raises(ConfigError) as info:
        parse_policy(yaml.safe_load(text), "gpu-policy.yaml")
    assert str(info.value).startswith("GPUHUB_POLICY_FILE: gpu-policy.yaml")
    assert words in str(info.value)


def test_the_shipped_policy_file_is_valid_and_changes_nothing():
    policy = load_policy(str(ROOT / "config" / "gpu-policy.yaml"))
    assert policy.allocation == Policy() and policy.idle_reclaim.enabled is False


def test_missing_policy_file_names_the_variable(tmp_path):
    with pytest.raises(ConfigError, match="GPUHUB_POLICY_FILE: .* does not exist"):
        load_policy(str(tmp_path / "nope.yaml"))


H = 3600.0
DAY0 = 1_800_000_000.0 - 1_800_000_000.0 % 86400  # a UTC midnight


def row(user, start, end, devices=1, groups=(), usage=()):
    return {"id": f"{user}-{start}", "user_name": user, "server_name": "", "profile": "cuda",
            "groups": list(groups), "device_uuids": [f"GPU-{i}" for i in range(devices)],
            "started_at": DAY0 + start, "ended_at": None if end is None else DAY0 + end,
            "usage": [(DAY0 + h, b, s) for h, b, s in usage]}


CASES = {
    "one device for two hours, half busy": (
        [row("ada", 0, 2 * H, usage=[(0, 1800, H), (H, 1800, H)])], (0, 24 * H), "user",
        {"ada": dict(gpu_hours=2, busy_hours=1, idle_hours=1, unsampled_hours=0)}),
    "two devices count twice": (
        [row("ada", 0, H, devices=2, usage=[(0, 0, 2 * H)])], (0, 24 * H), "user",
        {"ada": dict(gpu_hours=2, busy_hours=0, idle_hours=2, unsampled_hours=0)}),
    "only the part inside the period": (
        [row("ada", 0, 4 * H, usage=[(h * H, H, H) for h in range(4)])], (H, 3 * H), "user",
        {"ada": dict(gpu_hours=2, busy_hours=2, idle_hours=0, unsampled_hours=0)}),
    "a still-held allocation counts up to now": (
        [row("ada", 0, None, usage=[(0, 0, H)])], (0, 24 * H), "user",
        {"ada": dict(gpu_hours=3, busy_hours=0, idle_hours=1, unsampled_hours=2)}),
    "by group: each group of the user, and (no group)": (
        [row("ada", 0, H, groups=["ml", "staff"]), row("bob", 0, H)], (0, 24 * H), "group",
        {"ml": dict(gpu_hours=1), "staff": dict(gpu_hours=1), "(no group)": dict(gpu_hours=1)}),
    "outside the period: nothing": (
        [row("ada", 0, H)], (2 * H, 3 * H), "user", {}),
}


@pytest.mark.parametrize("rows, period, by, expected", CASES.values(), ids=CASES.keys())
def test_accounting(rows, period, by, expected):
    table = account(rows, DAY0 + period[0], DAY0 + period[1], now=DAY0 + 3 * H, by=by)
    assert {r["name"] for r in table} == set(expected)
    for r in table:
        for field, value in expected[r["name"]].items():
            assert r[field] == pytest.approx(value), (r["name"], field, r)


def test_accounting_csv_neutralises_formulas():
    table = account([row("=HYPERLINK(1)", 0, H)], DAY0, DAY0 + H, now=DAY0 + H)
    text = to_csv(table)
    assert text.splitlines()[0] == "name,allocations,gpu_hours,sampled_hours,busy_hours,idle_hours,unsampled_hours"
    assert text.splitlines()[1].startswith("'=HYPERLINK(1),1,1.0000")


from gpu_monitor.allocator import Allocation  # noqa: E402
from gpu_monitor.idle import Notice, idle_step  # noqa: E402

ON = IdleReclaim(enabled=True, below_utilization=0.05, notice_after_minutes=10, stop_after_minutes=30)
T0 = 1_000_000.0


def alloc(id_, *uuids, created=T0):
    return Allocation(id_, "ada", "", "cuda", uuids, created)


IDLE_CASES = {
    "busy device: active now, no notice": (
        ON, [alloc("a", "G0")], {"G0": 0.5}, {"a": T0}, T0 + 3600, ({"a": T0 + 3600}, {}, [])),
    "idle since granted, before the notice": (
        ON, [alloc("a", "G0")], {"G0": 0.0}, {}, T0 + 5 * 60, ({"a": T0}, {}, [])),
    "idle past the notice: notice with the stop time": (
        ON, [alloc("a", "G0")], {"G0": 0.01}, {"a": T0}, T0 + 11 * 60,
        ({"a": T0}, {"a": Notice(T0, T0 + 30 * 60)}, [])),
    "idle past the stop: stop": (
        ON, [alloc("a", "G0")], {"G0": 0.0}, {"a": T0}, T0 + 30 * 60,
        ({"a": T0}, {"a": Notice(T0, T0 + 30 * 60)}, ["a"])),
    "one busy device of two keeps the server": (
        ON, [alloc("a", "G0", "G1")], {"G0": 0.0, "G1": 0.9}, {"a": T0}, T0 + 31 * 60,
        ({"a": T0 + 31 * 60}, {}, [])),
    "not measured is not idle": (
        ON, [alloc("a", "G0")], {"G0": None}, {"a": T0}, T0 + 31 * 60, ({"a": T0 + 31 * 60}, {}, [])),
    "a restarted monitor counts from its start, not from the grant": (
        ON, [alloc("a", "G0", created=T0 - 86400)], {"G0": 0.0}, {}, T0 + 31 * 60,
        ({"a": T0}, {"a": Notice(T0, T0 + 30 * 60)}, ["a"])),
    "off: tracked, never noticed or stopped": (
        IdleReclaim(), [alloc("a", "G0")], {"G0": 0.0}, {"a": T0}, T0 + 86400, ({"a": T0}, {}, [])),
}


@pytest.mark.parametrize("policy, allocations, activity, last, now, expected", IDLE_CASES.values(),
                         ids=IDLE_CASES.keys())
def test_idle_reclaim(policy, allocations, activity, last, now, expected):
    active_at, notices, stop = idle_step(allocations, activity, last, now, started=T0, policy=policy)
    assert (active_at, notices, [a.id for a in stop]) == expected
