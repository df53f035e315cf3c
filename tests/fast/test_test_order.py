"""Tests marked `last` run after every other test of the session (tests/conftest.py): the Docker
daemon's restart stops every container, so nothing may run after it but what it leaves behind."""

from __future__ import annotations

import pytest

from ..conftest import last_at_the_end, pytest_collection_modifyitems


class Item:
    """What the hook reads of a collected test: its name and its markers."""

    def __init__(self, name: str, *markers: str):
        self.name, self.markers = name, markers

    def get_closest_marker(self, name: str):
        return getattr(pytest.mark, name).mark if name in self.markers else None

    def __repr__(self) -> str:
        return self.name


def names(items) -> list[str]:
    return [item.name for item in items]


CASES = {
    "nothing marked": ([Item("a"), Item("b", "docker")], ["a", "b"]),
    "the daemon test amid the docker tier, before the fast tier": (
        [Item("browser", "browser"), Item("daemon", "docker", "last"), Item("store", "docker"), Item("fast")],
        ["browser", "store", "fast", "daemon"]),
    "several, in their own order": (
        [Item("x", "last"), Item("a"), Item("y", "last"), Item("b")], ["a", "b", "x", "y"]),
    "already last": ([Item("a"), Item("x", "last")], ["a", "x"]),
}


@pytest.mark.parametrize("items, order", CASES.values(), ids=CASES.keys())
def test_tests_marked_last_move_to_the_end(items, order):
    assert names(last_at_the_end(items)) == order


def test_the_hook_reorders_the_sessions_list_in_place():
    items = [Item("daemon", "last"), Item("a"), Item("b")]
    session_list = items
    pytest_collection_modifyitems(items=items)
    assert session_list is items and names(items) == ["a", "b", "daemon"]


def test_the_docker_daemon_test_is_marked_last():
    from ..docker import test_docker_daemon

    assert "last" in [mark.name for mark in test_docker_daemon.pytestmark]
