"""What a client may send to create an allocation, parsed strictly: pure, no HTTP.

`parse_allocation_request()` turns the body of `POST api/allocations` into the allocator's
`AllocationRequest` or raises `BadRequest` with a sentence (and the status to answer with);
handlers/allocations.py turns that into the HTTP answer. The allocator, not the parser, judges
the numbers (a count of 0 or -1 reaches it and gets its own sentence).
"""

from __future__ import annotations

import json

from .allocator import AllocationRequest

MAX_BODY_BYTES = 4096  # an allocation request is a few dozen bytes
MAX_NAME_LENGTH = 255
REQUEST_FIELDS: dict[str, type] = {"user": str, "server": str, "profile": str, "count": int, "groups": list,
                                   "node_labels": dict, "node": str}
MAX_GROUPS = 256
MAX_NODE_LABELS = 32
# C0 controls and DEL: a NUL makes psycopg2 refuse the whole statement, the others have no
# place in a user, server, profile or group name (and forge log lines)
CONTROL_CHARACTERS = frozenset(map(chr, [*range(0x20), 0x7F]))


class BadRequest(Exception):
    """A request the API refuses with 400 (or `status`); `str()` is the message."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def parse_allocation_request(body: bytes) -> AllocationRequest:
    """The body of `POST api/allocations`, strictly: a JSON object with `user` and `count`,
    optionally `server` ("" = default server), `profile`, `groups`, `node_labels` (a kind of
    node: {label: value}) and `node` (that node only); nothing else."""
    if len(body) > MAX_BODY_BYTES:
        raise BadRequest(f"the body is {len(body)} bytes; at most {MAX_BODY_BYTES} are accepted", 413)
    try:
        data = json.loads(body or b"null")
    except (ValueError, UnicodeDecodeError) as e:
        raise BadRequest(f"the body is not JSON: {e}") from None
    if not isinstance(data, dict):
        raise BadRequest('the body must be a JSON object like {"user": "ada", "count": 1}')
    unknown = sorted(set(data) - set(REQUEST_FIELDS))
    if unknown:
        raise BadRequest(f"unknown field(s) {', '.join(map(repr, unknown))}; "
                         f"the fields are {', '.join(sorted(REQUEST_FIELDS))}")
    for name in ("user", "count"):
        if name not in data:
            raise BadRequest(f"field {name!r} is required")
    for name, kind in REQUEST_FIELDS.items():
        if name not in data:
            continue
        value = data[name]
        if not isinstance(value, kind) or isinstance(value, bool):
            what = {int: "whole number", str: "string", list: "list of strings",
                    dict: "JSON object of strings"}[kind]
            raise BadRequest(f"field {name!r} must be a {what}, not {type(value).__name__}")
        if isinstance(value, str) and len(value) > MAX_NAME_LENGTH:
            raise BadRequest(f"field {name!r} is longer than {MAX_NAME_LENGTH} characters")
        texts = [*value, *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else [value]
        for text in texts:
            if isinstance(text, str) and not CONTROL_CHARACTERS.isdisjoint(text):
                raise BadRequest(f"field {name!r} contains a control character (U+0000-U+001F or U+007F)")
    if not data["user"]:
        raise BadRequest("field 'user' must not be empty")
    groups = data.get("groups", [])
    if len(groups) > MAX_GROUPS or not all(isinstance(g, str) and 0 < len(g) <= MAX_NAME_LENGTH for g in groups):
        raise BadRequest(f"field 'groups' must list at most {MAX_GROUPS} non-empty names of at most "
                         f"{MAX_NAME_LENGTH} characters")
    labels = data.get("node_labels", {})
    if len(labels) > MAX_NODE_LABELS or not all(
            0 < len(k) <= MAX_NAME_LENGTH and isinstance(v, str) and len(v) <= MAX_NAME_LENGTH
            for k, v in labels.items()):
        raise BadRequest(f"field 'node_labels' must map at most {MAX_NODE_LABELS} non-empty label names to "
                         f"strings, each of at most {MAX_NAME_LENGTH} characters")
    return AllocationRequest(user=data["user"], server=data.get("server", ""),
                             profile=data.get("profile", ""), count=data["count"],
                             groups=tuple(sorted(set(groups))), node_labels=tuple(sorted(labels.items())),
                             node=data.get("node", ""))
