"""The GPU monitor's allocation latency with a cluster's inventory: 100 nodes, 500 allocations held.

Starts the test stack as bench/monitor_api.py does (tests/harness/stack.py: project gpuhub-test,
ports 443/80 on 127.0.0.1), with an exclusive policy (placement pack, the default) and the
monitor's default node timeout (30 s), then registers `--nodes` - 1 **simulated** nodes of
`--devices-per-node` devices of kind `gpu` each (random, distinct UUIDs) beside the monitor's own
node (its agent, 2 CPU slices). They are rows, not agents: one process in the gpu-monitor
container writes them with the agents' own `Inventory.register` and, every sampling interval,
reports each node's heartbeat and its devices' readings with `Inventory.report`, as each node's
agent would, so that the monitor (which re-reads the inventory every interval) keeps them up. No
device exists; nothing is ever started on them. Then, from inside the `hub` container, plain
HTTP to http://gpu-monitor:8000 (as bench/monitor_api.py, whose client this one extends):

  * `--held` allocations (distinct users, one device each: on distinct devices) are taken and
    held to the end;
  * GET api/devices with that inventory and those allocations, `--requests` sequential: p50/p99;
  * POST api/allocations at `--concurrency` concurrent requests (distinct users), `--rounds`
    rounds, each round's grants released before the next: p50/p99 per round, client and server
    (the monitor's access log); the goal (issue "scale-out") is p99 <= 20 ms at the monitor;
  * the cost of one inventory read (`Inventory.read()`, what the monitor does every interval),
    timed inside the gpu-monitor container against the stack's database (the `db` network is
    internal: the host cannot reach it);
  * the allocator's `decide()` for one request with that state, in this process (pure Python,
    no I/O), since a batch of concurrent requests is decided one after another.

At the end the held allocations are released and the simulated nodes deleted (their devices go
with them), before the stack is taken down. Results print and, unless --no-docs, replace the
"GPU monitor with 100 nodes" section of docs/BENCHMARKS.md. Usage, from the repository's root:

    PYTHONPATH=hub:gpu_monitor .venv/bin/python -m bench.cluster_allocator [--nodes 100] [--devices-per-node 8]
        [--held 500] [--concurrency 50] [--rounds 5] [--no-docs]
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, git_commit, log
from bench.docs_section import record, write_section
from bench.monitor_api import ACTIONS, ms, pct, policy_settings, run_in_hub, server_times
from bench.run_all import machine

# imported after bench.monitor_api, which stops with a sentence when gpu_monitor is not importable
from gpu_monitor.allocator import AllocationRequest, Granted, Policy, decide
from gpu_monitor.devices import LOCAL_NODE, Device, Node
from tests.harness.stack import TEST_ENV, Stack, start_stack

DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench/cluster_allocator.py: begin -->", "<!-- bench/cluster_allocator.py: end -->"
GOAL_MS = 20.0
# the simulated nodes' ids: what the benchmark inserts, and deletes at the end
PREFIX = "bench-node-"
SETTINGS = {
    "GPUHUB_MONITOR_SAMPLE_SECONDS": "5",  # gpuhub's default, as policy_settings has it
    "GPUHUB_NODE_TIMEOUT_SECONDS": "30",  # gpuhub's default (the test stack's 10 s is for its agent at 1 s)
    "GPUHUB_MONITOR_GRACE_SECONDS": "900",  # held allocations have no container: keep them to the end
}

# The client, in the hub container: wait until the monitor lists every node up, hold, read, burst.
CLIENT = ACTIONS + r'''
deadline = time.monotonic() + cfg["wait"]
while True:
    s, d, _ = call("GET", "api/devices")
    seen = json.loads(d) if s == 200 else {}
    up = sum(1 for n in seen.get("nodes", []) if n["state"] == "up")
    if up >= cfg["nodes"] and seen.get("total", 0) >= cfg["devices"]:
        break
    assert time.monotonic() < deadline, f"after {cfg['wait']} s the monitor lists {up} node(s) up, {seen.get('total')} device(s)"
    time.sleep(0.5)
out = {"nodes_up": up, "devices": seen["total"]}
held = hold(cfg["held"])
out["read_start"] = time.time()
out["api/devices"] = get_times("api/devices", cfg["requests"])
out["start"] = time.time()
out["rounds"] = []
for r in range(cfg["rounds"]):
    times, wall = burst(r)
    out["rounds"].append({"times": times, "wall": wall})
release(held)
print(json.dumps(out))
'''

# Runs in the gpu-monitor container (its image has gpu_monitor and its dependencies), with the
# settings JSON as argv[1]: the monitor's database, reached as the monitor reaches it (its
# settings and password file), and its `Inventory`.
IN_MONITOR = r'''
import json, sys, time
import sqlalchemy as sa
from gpu_monitor.__main__ import database_url
from gpu_monitor.inventory import Inventory
from gpu_monitor.settings import load_settings
from gpu_monitor.store import session_options
cfg = json.loads(sys.argv[1])
engine = sa.create_engine(database_url(load_settings()), pool_size=2, connect_args=session_options())
inventory = Inventory(engine)
'''

# The simulated nodes: registered, then each one's agent report every interval until stdin
# closes, then deleted (devices cascade). Prints one JSON line after each step.
SIMULATOR = IN_MONITOR + r'''
import threading, uuid
from gpu_monitor.devices import Device, Sample
from gpu_monitor.monitor import HostInfo
from gpu_monitor.sampler import DeviceState
from gpu_monitor.store import devices_table, nodes_table

host = HostInfo("nvml", "simulated", (12, 4))
nodes = {}
for n in range(1, cfg["nodes"] + 1):
    node = f"{cfg['prefix']}{n:03d}"
    uuids = [f"GPU-{uuid.uuid4()}" for _ in range(cfg["per_node"])]
    devices = [Device(u, i, "gpu", "simulated GPU (bench/cluster_allocator.py)", 80 * 2**30, docker_device_id=u,
                      node=node) for i, u in enumerate(uuids)]
    now = time.time()
    refused = inventory.register(node, node, {"bench": "simulated"}, host, devices, now, now)
    assert not refused, refused
    nodes[node] = uuids
print(json.dumps({"registered": len(nodes), "devices": sum(map(len, nodes.values()))}), flush=True)

def heartbeat():
    while not stop.wait(cfg["interval"]):
        now = time.time()
        for node, uuids in nodes.items():
            inventory.report(node, {u: DeviceState(Sample(u, now, 0.0, 0, 35.0, 70.0)) for u in uuids}, now)

stop = threading.Event()
beat = threading.Thread(target=heartbeat)
beat.start()
sys.stdin.read()  # until the benchmark closes it
stop.set()
beat.join()
with engine.begin() as conn:
    removed = conn.execute(sa.delete(nodes_table).where(nodes_table.c.id.in_(list(nodes)))).rowcount
    left = conn.execute(sa.select(sa.func.count()).select_from(devices_table)
                        .where(devices_table.c.node.in_(list(nodes)))).scalar()
print(json.dumps({"removed": removed, "devices_left": left}), flush=True)
'''

READ_COST = IN_MONITOR + r'''
records, devices, states = inventory.read()  # warm up: the connection, the first plan
times = []
for _ in range(cfg["reads"]):
    t = time.perf_counter()
    records, devices, states = inventory.read()
    times.append(time.perf_counter() - t)
print(json.dumps({"times": times, "nodes": len(records), "devices": len(devices), "states": len(states)}))
'''


def in_monitor(stack: Stack, code: str, cfg: dict) -> list[str]:
    """The command that runs `code` (IN_MONITOR + what it does) in the gpu-monitor container;
    `cfg` holds no secret (the code reads the database password from the container's file)."""
    return stack.compose_cmd("exec", "-T", "gpu-monitor", "python3", "-c", code, json.dumps(cfg))


def decide_cost(nodes: int, per_node: int, slices: int, held: int, calls: int = 200) -> float:
    """Seconds `decide()` takes for one request of one device, with the benchmark's inventory
    (the monitor's node with `slices` CPU slices, nodes - 1 others with `per_node` GPUs, all up)
    and `held` allocations on distinct devices, placement pack: pure, in this process."""
    devices = [Device(f"slice-{i}", i, "cpu-slice", "CPU slice") for i in range(slices)]
    devices += [Device(f"GPU-{n}-{i}", i, "gpu", "simulated GPU", node=f"{PREFIX}{n:03d}")
                for n in range(1, nodes) for i in range(per_node)]
    up = [Node(LOCAL_NODE)] + [Node(f"{PREFIX}{n:03d}") for n in range(1, nodes)]
    policy, allocations = Policy(), []
    for i in range(held):
        decision = decide(AllocationRequest(f"held-{i}", "", "opencl", 1), devices, allocations, policy,
                          now=0.0, new_id=f"held-{i}", nodes=up)
        assert isinstance(decision, Granted), decision
        allocations.append(decision.allocation)
    t = time.perf_counter()
    for i in range(calls):
        decide(AllocationRequest(f"new-{i}", "", "opencl", 1), devices, allocations, policy, now=0.0,
               new_id=f"new-{i}", nodes=up)
    return (time.perf_counter() - t) / calls


def measure(stack: Stack, args: argparse.Namespace, simulated: int) -> tuple[dict, dict, str, dict]:
    """The simulated nodes registered and kept up while the client and the inventory reads run,
    then removed: (client's result, inventory reads, the monitor's log, what the removal said)."""
    env = {**os.environ, **stack.env}
    since = time.time()
    sim_cfg = {"nodes": args.nodes - 1, "per_node": args.devices_per_node, "prefix": PREFIX,
               "interval": float(SETTINGS["GPUHUB_MONITOR_SAMPLE_SECONDS"])}
    simulator = subprocess.Popen(in_monitor(stack, SIMULATOR, sim_cfg), stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        registered = simulator.stdout.readline() if simulator.stdout else ""
        if not registered:
            raise RuntimeError("the simulated nodes could not be registered (the simulator's error is logged above)")
        log(f"registered {json.loads(registered)} (simulated nodes, not agents); measuring inside the hub container")
        cfg = {"token": stack.token, "requests": args.requests, "rounds": args.rounds, "concurrency": args.concurrency,
               "held": args.held, "nodes": args.nodes, "devices": simulated, "wait": 60}
        run = run_in_hub(stack, cfg, CLIENT, timeout=900)
        if run.returncode:
            raise RuntimeError(f"the client failed: {run.stdout[-2000:]} {run.stderr[-4000:]}")
        result = json.loads(run.stdout.strip().splitlines()[-1])
        log("timing Inventory.read() inside the gpu-monitor container")
        reads = subprocess.run(in_monitor(stack, READ_COST, {"reads": args.reads}), capture_output=True, text=True,
                               env=env, timeout=600)
        if reads.returncode:
            raise RuntimeError(f"the inventory reads failed: {reads.stderr[-3000:]}")
        inventory = json.loads(reads.stdout.strip().splitlines()[-1])
    finally:
        out, err = simulator.communicate(input="", timeout=300)  # stdin closed: the nodes are deleted
        if simulator.returncode:
            log(f"the simulator failed (exit {simulator.returncode}): {err[-3000:]}")
    removal = json.loads(out.strip().splitlines()[-1])
    log(f"simulated nodes removed: {removal}")
    logs = stack.compose("logs", "--no-color", "--timestamps", "--since", str(int(since)), "gpu-monitor").stdout
    return result, inventory, logs, removal


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--nodes", type=int, default=100,
                        help="nodes in the inventory: the monitor's own and nodes - 1 simulated ones")
    parser.add_argument("--devices-per-node", type=int, default=8, help="devices (kind gpu) per simulated node")
    parser.add_argument("--held", type=int, default=500, help="allocations held throughout, on distinct devices")
    parser.add_argument("--concurrency", type=int, default=50, help="concurrent POST api/allocations per round")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of concurrent allocations")
    parser.add_argument("--requests", type=int, default=100, help="sequential GET api/devices")
    parser.add_argument("--reads", type=int, default=50, help="Inventory.read() calls timed in the monitor's container")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()
    slices = int(TEST_ENV["GPUHUB_CPU_SLICES"])
    simulated = (args.nodes - 1) * args.devices_per_node
    if args.nodes < 2 or args.devices_per_node < 1:
        parser.error("--nodes must be 2 or more (the monitor's own and at least one simulated), --devices-per-node 1 or more")
    if args.held + args.concurrency > simulated + slices:
        parser.error(f"--held + --concurrency ({args.held + args.concurrency}) exceed the {simulated + slices} "
                     "devices, which are exclusive")

    started = datetime.datetime.now(datetime.UTC)
    load = os.getloadavg()[0]
    policy = policy_settings("sharing: {gpu: exclusive, cpu-slice: exclusive}\nplacement: pack\n")
    log("starting the stack")
    stack = start_stack(Path(tempfile.mkdtemp(prefix="gpuhub-bench-")), env={**TEST_ENV, **policy, **SETTINGS})
    try:
        result, inventory, logs, removal = measure(stack, args, simulated)
    finally:
        stack.down()
    per_decide = decide_cost(args.nodes, args.devices_per_node, slices, args.held)

    posts = server_times(logs, "POST", "api/allocations", after=result["start"])
    c = args.concurrency
    # the rounds follow one another (each one's grants released before the next), so the log's
    # POSTs after the first round's start are the rounds', in order
    server_rounds = [posts[i * c:(i + 1) * c] for i in range(args.rounds)] if len(posts) == c * args.rounds else None
    devices_server = server_times(logs, "GET", "api/devices", after=result["read_start"])
    rounds = result["rounds"]
    client_all = [t for r in rounds for t in r["times"]]
    server_all = posts if server_rounds else []

    def verdict(p99_ms: float) -> str:
        return "met" if p99_ms <= GOAL_MS else "**missed**"

    command = shlex.join(["python", "-m", "bench.cluster_allocator", *sys.argv[1:]])
    total = result["devices"]
    lines = [
        BEGIN,
        f"## GPU monitor with {args.nodes} nodes: allocation latency and inventory cost",
        "",
        f"`{command}`, {started:%Y-%m-%d %H:%M} UTC, commit {git_commit()}; machine: {machine()} "
        f"(`nproc` {os.cpu_count()}), 1-minute load average at start {load:.2f} (the machine is shared). "
        "Test stack (tests/harness/stack.py), PostgreSQL 15 in Docker, client inside the hub container, plain "
        "HTTP to http://gpu-monitor:8000.",
        "",
        f"Inventory: {args.nodes} nodes up, {total} devices: the monitor's own node (its agent, {slices} CPU slices) "
        f"and {args.nodes - 1} **simulated** nodes × {args.devices_per_node} devices of kind `gpu` (random UUIDs). "
        "The simulated nodes are rows, not agents: one process in the gpu-monitor container registered them with "
        "`Inventory.register` and reported every node's heartbeat and readings with `Inventory.report` every "
        f"{SETTINGS['GPUHUB_MONITOR_SAMPLE_SECONDS']} s (the sampling interval, at which the monitor re-reads the "
        f"inventory; node timeout {SETTINGS['GPUHUB_NODE_TIMEOUT_SECONDS']} s), and deleted them at the end "
        f"({removal.get('removed', '?')} removed, {removal.get('devices_left', '?')} devices left). Policy: "
        f"exclusive, placement pack. {args.held} allocations (distinct users, one device each) held throughout.",
        "",
        f"`POST api/allocations`, {c} concurrent requests (distinct users, one device each) per round, each "
        "round's grants released before the next. ms, p50 / p99 / max; *server* is the monitor's own request "
        f"time from its access log; goal: p99 ≤ {GOAL_MS:g} ms at the monitor (a round's p99 of {c} requests is its "
        "slowest).",
        "",
        "| round | client | server | round's wall time | goal (server p99) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for i, r in enumerate(rounds):
        server = ms(server_rounds[i]) if server_rounds else "–"
        met = verdict(pct(server_rounds[i], 99) * 1000) if server_rounds else "–"
        lines.append(f"| {i + 1} | {ms(r['times'])} | {server} | {r['wall'] * 1000:.0f} ms | {met} |")
    if server_rounds:
        lines.append(f"| all {args.rounds} | {ms(client_all)} | {ms(server_all)} | "
                     f"median {statistics.median(r['wall'] for r in rounds) * 1000:.0f} ms | "
                     f"{verdict(pct(server_all, 99) * 1000)} |")
    else:
        lines.append(f"| all {args.rounds} | {ms(client_all)} | – ({len(posts)} POSTs logged, "
                     f"{c * args.rounds} expected) | | – |")
    reads = inventory["times"]
    lines += [
        "",
        "| what | client | server |",
        "| --- | --- | --- |",
        f"| `GET api/devices`, {args.held} held, {args.requests} sequential "
        f"({result['api/devices']['bytes']} bytes) | {ms(result['api/devices']['times'])} | "
        f"{ms(devices_server) if devices_server else '–'} |",
        f"| `Inventory.read()` ({inventory['nodes']} nodes, {inventory['devices']} devices, {inventory['states']} "
        f"readings), {len(reads)} reads timed inside the gpu-monitor container against the stack's database | "
        f"{ms(reads)} | – |",
        f"| `decide()` for one request with this inventory and {args.held} allocations (pure, in the benchmark's "
        f"own process, Python {platform.python_version()}; a batch of concurrent requests is decided one after "
        f"another) | {per_decide * 1000:.2f} (mean) | – |",
        END,
    ]
    report = "\n".join(lines)
    print(report)
    # the headline figures, for the summary of docs/BENCHMARKS.md: (what, figure, goal, met)
    figures: list[tuple[str, str, str, bool | None]] = []
    if server_rounds:
        p99 = pct(server_all, 99) * 1000
        per_round = ", ".join(f"{pct(s, 99) * 1000:.1f}" for s in server_rounds)
        figures.append((f"`POST api/allocations` p99 (server), {c} concurrent × {args.rounds} rounds, {args.nodes} "
                        f"nodes ({args.nodes - 1} simulated) × {args.devices_per_node} devices, {args.held} held",
                        f"{p99:.1f} ms (rounds: {per_round})", f"≤ {GOAL_MS:g} ms", p99 <= GOAL_MS))
    if devices_server:
        figures.append((f"`GET api/devices` p99 (server), same inventory, {args.requests} sequential",
                        f"{pct(devices_server, 99) * 1000:.1f} ms", "–", None))
    figures.append((f"`Inventory.read()` p50, {inventory['nodes']} nodes, {inventory['devices']} devices",
                    f"{statistics.median(reads) * 1000:.1f} ms", "–", None))
    for what, figure, goal, met in figures:
        record("4. GPU monitor", what, figure, goal=goal, met=met)
    if not args.no_docs:
        write_section(DOCS, BEGIN, END, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
