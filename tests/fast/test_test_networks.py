"""The stacks the docker and browser tiers start take a users' subnet no Docker network on the
host overlaps: a gpuhub running there, or stopped with `docker compose down` (its users' network
stays while servers are on it), must not make them fail with "Pool overlaps"."""

import ipaddress

import pytest

from ..harness.stack import users_network

N = ipaddress.IPv4Network
CASES = {
    "preferred is free": ([N("172.17.0.0/16")], "10.213.224.0/20"),
    "a gpuhub with the defaults": ([N("10.213.240.0/20")], "10.213.224.0/20"),
    "the preferred one is taken": ([N("10.213.224.0/20")], "10.213.0.0/20"),
    "a wide network over the first ones": ([N("10.213.0.0/17"), N("10.213.224.0/24")], "10.213.128.0/20"),
    "all of 10.213/16 taken": ([N("10.213.0.0/16")], "10.214.0.0/20"),
}


@pytest.mark.parametrize("taken, subnet", CASES.values(), ids=CASES.keys())
def test_the_users_network_takes_a_free_subnet(taken, subnet):
    env = users_network("gpuhub-test-users", "10.213.224.0/20", taken=taken)
    chosen = N(env["GPUHUB_USERS_SUBNET"])
    assert str(chosen) == subnet
    assert not any(chosen.overlaps(t) for t in taken)
    # what the hub's settings require of the addresses (gpuhub.settings._check_users_network)
    from gpuhub.settings import load_settings
    load_settings({"GPUHUB_AUTHENTICATOR": "demo", **env})
    assert env["GPUHUB_USER_NETWORK"] == "gpuhub-test-users"
    assert ipaddress.ip_address(env["GPUHUB_USERS_HUB_IP"]) in chosen


def test_no_free_subnet_is_said_plainly():
    with pytest.raises(RuntimeError, match="no free /20"):
        users_network("x", "10.213.224.0/20", taken=[N("10.212.0.0/15"), N("10.214.0.0/16")])
