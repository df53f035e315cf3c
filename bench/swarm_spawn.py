"""Spawn latency on a Swarm worker against the single-host stack, in one run (issue "scale-out":
a spawn on a worker within 1.3x of one on a single host).

Both stacks run at once on this machine: the single-host test stack (tests/harness/stack.py,
project gpuhub-test, on the host's Docker) and gpuhub deployed with bin/swarm-deploy on the test
swarm of three engines (tests/harness/swarm.py, tests/harness/swarm_stack.py: control plane on
the manager, servers on the two workers). One spawn is timed from sending `POST
/hub/api/users/{u}/server` until `GET /user/{u}/api/status` (the operator's token) first
answers 200 through Traefik, polled every 10 ms; the profile is opencl with one device (a CPU
slice) on both. Each repetition spawns on both, in alternating order, then stops both, so that
they meet the same load on the machine. A first, unmeasured spawn on each makes the person's
home volume and, on the swarm, has the worker pull the image from the swarm's registry; on the
swarm every later start goes back to that node (the home's, docs/scale-out.md).

The figures are this machine's: three dockerd, a registry and two stacks on 2 cores, so both
sides share what the machine has; the ratio is what the issue's goal reads. Usage (needs root
and holds Docker for ~10 minutes: run it under the shared lock), from the repository's root:

    flock /tmp/gpuhub-docker.lock .venv/bin/python -m bench.swarm_spawn [--reps 10] [--docs]
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests
import urllib3

from bench.common import REPO, git_commit, log
from bench.docs_section import record, write_section
from bench.run_all import machine
from tests.harness.stack import Stack, remove_home, start_stack
from tests.harness.swarm import Swarm
from tests.harness.swarm_stack import STACK, SwarmStack, deployed_stack

DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench/swarm_spawn.py: begin -->", "<!-- bench/swarm_spawn.py: end -->"
GOAL = 1.3
OPTIONS = {"profile": "opencl", "gpus": 1}


@dataclass
class Side:
    label: str
    user: str
    api: Callable[..., requests.Response]
    status: Callable[[], int]  # GET /user/<user>/api/status through the proxy: its HTTP status
    stop: Callable[[str], None]  # the harness's own: until the hub says the server is gone
    totals: list[float] = field(default_factory=list)


def spawn(side: Side) -> float:
    side.api("POST", f"users/{side.user}")  # 409 once it exists: fine
    t0 = time.monotonic()
    r = side.api("POST", f"users/{side.user}/server", json=OPTIONS)
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{side.label}: spawn answered {r.status_code}: {r.text[:300]}")
    deadline = t0 + 180
    while side.status() != 200:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{side.label}: /user/{side.user}/api/status not 200 after 180 s")
        time.sleep(0.01)
    return time.monotonic() - t0


def single_host_side(stack: Stack) -> Side:
    session = stack.session()
    user = "sbsingle"  # its home volume is removed at the end (main)
    return Side("single host", user, stack.api,
                lambda: session.get(f"{stack.base_url}/user/{user}/api/status", timeout=10,
                                    allow_redirects=False).status_code, stack.stop_server)


def swarm_side(stack: SwarmStack) -> Side:
    user = "sbswarm"
    return Side("Swarm worker", user, stack.api,
                lambda: stack.get(f"user/{user}/api/status", host=f"{user}.user.localhost").status_code, stack.stop)


def report(sides: list[Side], node: str, args: argparse.Namespace, started: str) -> str:
    single, swarm = sides
    ratio = statistics.median(swarm.totals) / statistics.median(single.totals)
    met = ratio <= GOAL
    rows = "\n".join(
        f"| {s.label} | {statistics.median(s.totals):.2f} | {sorted(s.totals)[-1]:.2f} | "
        f"{', '.join(f'{t:.2f}' for t in s.totals)} |" for s in sides)
    how = (f"`python -m bench.swarm_spawn --reps {args.reps}`, {started}, commit {git_commit()}; machine: "
           f"{machine()}, 1-minute load average at start {args.load:.2f}. Both stacks at once on this machine: "
           "the single-host test stack and gpuhub on the test swarm of three Docker engines "
           f"(tests/harness/swarm.py; the servers on a worker: {node}), {args.reps} repetitions, each spawning "
           "on both in alternating order. One spawn: `POST /hub/api/users/<u>/server` until "
           "`GET /user/<u>/api/status` first answers 200 through Traefik; profile opencl, one device (a CPU "
           "slice). Seconds.")
    return f"""{BEGIN}
## Spawn latency on a Swarm worker against one host

{how}

| where | p50 | max | every spawn |
| --- | --- | --- | --- |
{rows}

Ratio of the medians, Swarm worker / single host: **{ratio:.2f}×** (goal ≤ {GOAL}×: **{"met" if met else "missed"}**).
{END}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--docs", action="store_true", help="replace this benchmark's section of docs/BENCHMARKS.md")
    args = parser.parse_args()
    args.load = __import__("os").getloadavg()[0]
    started = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    urllib3.disable_warnings(urllib3.exceptions.InsecureRequestWarning)
    workdir = Path(tempfile.mkdtemp(prefix="gpuhub-bench-swarm-"))
    (workdir / "single").mkdir()
    (workdir / "swarm").mkdir()
    log("starting the single-host test stack")
    single = start_stack(workdir / "single")
    try:
        log("starting the test swarm and deploying gpuhub on it")
        with Swarm() as swarm, deployed_stack(swarm, workdir / "swarm") as stack:
            sides = [single_host_side(single), swarm_side(stack)]
            for side in sides:  # warm-up: the user, the home volume, the image on the worker
                log(f"warm-up: {side.label}")
                spawn(side)
                side.stop(side.user)
            nodes: set[str] = set()
            for rep in range(args.reps):
                for side in sides if rep % 2 == 0 else reversed(sides):
                    side.totals.append(spawn(side))
                    log(f"{side.label}: {side.totals[-1]:.2f} s")
                nodes.update(swarm.docker(swarm.manager, "service", "ps", "--filter", "desired-state=running",
                                          "--format", "{{.Node}}", f"{STACK}-{sides[1].user}").stdout.split())
                for side in sides:
                    side.stop(side.user)
            node = ", ".join(sorted(nodes))
    finally:
        single.down()
        remove_home("sbsingle")  # the single host's home volume (the swarm's go with its engines)
    text = report(sides, node, args, started)
    print(text)
    ratio = statistics.median(sides[1].totals) / statistics.median(sides[0].totals)
    record("1. Spawn latency", "on a Swarm worker against one host, p50 of "
           f"{args.reps}, both in one run (bench/swarm_spawn.py)",
           f"{statistics.median(sides[1].totals):.2f} s against {statistics.median(sides[0].totals):.2f} s, "
           f"{ratio:.2f}×", goal=f"≤ {GOAL}×", met=ratio <= GOAL)
    if args.docs:
        write_section(DOCS, BEGIN, END, text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
