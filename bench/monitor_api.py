"""How fast the GPU monitor answers: scrape, device list and allocation latency, sampling cost.

Starts the test stack (tests/harness/stack.py: project gpuhub-test, ports 443/80 on 127.0.0.1) with the
monitor's CPU slices made shareable (a policy file with cpu-slice: {shared: 128}), so that 200 allocations
can exist at once, then measures from inside the `hub` container, on the compose network, with
plain HTTP to http://gpu-monitor:8000 (what the hub's spawner and a Prometheus on that network
see; no TLS, no proxy):

  * GET metrics and GET api/devices with 200 allocations held: sequential requests, p50/p99;
  * POST api/allocations at 50 concurrent requests (distinct users), in rounds, each round's
    grants released before the next: p50/p99 per request and allocations per second;
  * the server's own time per request, from the monitor's access log (tornado request_time);
  * the sampling cost of the backend this host has (CPU slices from /proc/stat; NVML is
    measured on a GPU machine by tests/gpu, see docs/gpu-results.md).

Results print and, unless --no-docs, replace the "Benchmark" section of docs/monitor.md.
This machine has no GPU, so the comparison with `nvidia-smi` per sample the issue asks for is
not made here. Usage:

    PYTHONPATH=hub:gpu_monitor .venv/bin/python -m bench.monitor_api [--requests 300] [--rounds 5] [--no-docs]

from the repository's root, with gpuhub's packages importable (it measures the monitor's
sampling in this process; bin/bench sets PYTHONPATH so).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, git_commit, log
from bench.docs_section import record, write_section
from tests.harness.stack import TEST_ENV, Stack, start_stack

try:
    from gpu_monitor.backends.cpu_slices import CPUSliceBackend
except ModuleNotFoundError as e:  # from the root without it, ./gpu_monitor/ is an empty namespace
    raise SystemExit(f"bench: {e}: run with PYTHONPATH=hub:gpu_monitor from the repository's root "
                     "(bin/bench does)") from None

DOCS = REPO / "docs" / "monitor.md"
BEGIN, END = "<!-- bench/monitor_api.py: begin -->", "<!-- bench/monitor_api.py: end -->"

# Runs inside the hub container (python3 with only the standard library needed). The token is
# read from stdin with the script, never from a command line. CALL: what every client starts
# with (also bench/monitor_ab.py's): call(method, path, body) -> (status, body bytes, seconds).
CALL = r'''
import json, time, urllib.request
from concurrent.futures import ThreadPoolExecutor
BASE = "http://gpu-monitor:8000/services/gpu-monitor/"
HEAD = {"Authorization": "token " + cfg["token"], "Content-Type": "application/json"}

def call(method, path, body=None):
    req = urllib.request.Request(BASE + path, method=method, headers=HEAD,
                                 data=None if body is None else json.dumps(body).encode())
    t = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            status, data = r.status, r.read()
    except urllib.error.HTTPError as e:
        status, data = e.code, e.read()
    return status, data, time.perf_counter() - t
'''

# What the clients do with `call` (this script's, bench/monitor_ab.py's and
# bench/cluster_allocator.py's): hold allocations, time sequential GETs, and bursts of
# cfg["concurrency"] concurrent grants (distinct users), each burst's grants released after it.
ACTIONS = CALL + r'''
def hold(n):
    held = []
    for i in range(n):
        s, d, _ = call("POST", "api/allocations", {"user": f"bench-held-{i}", "count": 1, "profile": "opencl"})
        assert s == 201, (s, d)
        held.append(json.loads(d)["id"])
    return held

def release(ids):
    for a in ids:
        call("DELETE", f"api/allocations/{a}")

def get_times(path, n):
    call("GET", path)  # warm up
    times = []
    for _ in range(n):
        s, d, t = call("GET", path)
        assert s == 200, (s, d[:200])
        times.append(t)
    return {"times": times, "bytes": len(d)}

def burst(tag):
    def ask(i):
        return call("POST", "api/allocations", {"user": f"bench-{tag}-{i}", "count": 1, "profile": "opencl"})
    t = time.perf_counter()
    with ThreadPoolExecutor(cfg["concurrency"]) as pool:
        results = list(pool.map(ask, range(cfg["concurrency"])))
    wall = time.perf_counter() - t
    assert all(s == 201 for s, _, _ in results), [(s, d[:200]) for s, d, _ in results if s != 201][:3]
    release(json.loads(d)["id"] for _, d, _ in results)
    return [t for _, _, t in results], wall
'''

CLIENT = ACTIONS + r'''
held = hold(cfg["held"])  # held while reading
out = {path: get_times(path, cfg["requests"]) for path in ("metrics", "api/devices")}
release(held)
alloc, wall = [], []
alloc_start = time.time()
for r in range(cfg["rounds"]):
    times, w = burst(r)
    alloc.extend(times)
    wall.append(w)
out["allocate"] = {"times": alloc, "wall": wall, "start": alloc_start}
print(json.dumps(out))
'''


# the first stdin line is the settings (with the token), the rest the client
LAUNCHER = "import json, sys; first, code = sys.stdin.read().split(chr(10), 1); cfg = json.loads(first); exec(code)"


def policy_settings(policy: str) -> dict[str, str]:
    """Settings (over the test stack's) under which the monitor reads `policy` (YAML, written to a
    temporary policy file) and runs at slower timings than the tests': allocations held without a
    container stay held for a benchmark's length."""
    path = Path(tempfile.mkdtemp(prefix="gpuhub-bench-policy-")) / "gpu-policy.yaml"
    path.write_text(policy)
    path.chmod(0o644)
    return {"GPUHUB_POLICY": str(path), "GPUHUB_MONITOR_SAMPLE_SECONDS": "5",
            "GPUHUB_MONITOR_RECONCILE_SECONDS": "60", "GPUHUB_MONITOR_GRACE_SECONDS": "120"}


def shareable_slices() -> dict[str, str]:
    """Settings under which the monitor's two CPU slices can be held by many allocations at once
    (a policy file with cpu-slice: {shared: 128}), at slower timings."""
    return policy_settings("sharing: {cpu-slice: {shared: 128}}\n")


def run_in_hub(stack: Stack, cfg: dict, client: str, timeout: float) -> subprocess.CompletedProcess:
    """`client` (CALL + what it does) run by python3 in the hub's container, `cfg` given on its
    stdin (the token with it, never on a command line)."""
    return subprocess.run(stack.compose_cmd("exec", "-T", "hub", "python3", "-c", LAUNCHER),
                          input=json.dumps(cfg) + "\n" + client, capture_output=True, text=True,
                          env={**os.environ, **stack.env}, timeout=timeout)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))]


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} / {pct(values, 99) * 1000:.1f} / {max(values) * 1000:.1f}"


def server_times(logs: str, method: str, path_re: str, after: float = 0.0) -> list[float]:
    """tornado's access log, with compose's timestamps:
    '<iso time> ... tornado.access: 200 GET /services/gpu-monitor/metrics (1.2.3.4) 3.21ms'."""
    pattern = re.compile(rf"(\d{{4}}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)Z .*tornado\.access: \d+ {method} "
                         rf"/services/gpu-monitor/{path_re} \(.*?\) ([\d.]+)ms")
    times = []
    for m in pattern.finditer(logs):
        stamp = datetime.datetime.fromisoformat(m.group(1)[:26]).replace(tzinfo=datetime.UTC)
        if stamp.timestamp() >= after:
            times.append(float(m.group(2)) / 1000)
    return times


def sampling_cost(calls: int = 2000) -> tuple[float, int]:
    backend = CPUSliceBackend(min(2, os.cpu_count() or 1))
    devices = backend.discover()
    backend.sample()
    t = time.perf_counter()
    for _ in range(calls):
        backend.sample()
    return (time.perf_counter() - t) / calls, len(devices)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=300, help="sequential GETs per endpoint")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of concurrent allocations")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--held", type=int, default=200, help="allocations held while reading (at most 256)")
    parser.add_argument("--no-docs", action="store_true")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="gpuhub-bench-"))
    log("starting the stack")
    stack: Stack = start_stack(workdir, env={**TEST_ENV, **shareable_slices()})
    try:
        since = time.time()
        cfg = {"token": stack.token, "requests": args.requests, "rounds": args.rounds,
               "concurrency": args.concurrency, "held": args.held}
        log("measuring inside the hub container")
        run = run_in_hub(stack, cfg, CLIENT, timeout=1800)
        if run.returncode:
            print(run.stdout[-2000:], run.stderr[-4000:], file=sys.stderr)
            return 1
        result = json.loads(run.stdout.strip().splitlines()[-1])
        logs = stack.compose("logs", "--no-color", "--timestamps", "--since", str(int(since)),
                             "gpu-monitor").stdout
    finally:
        stack.down()

    per_call, devices = sampling_cost()
    server = {
        "metrics": server_times(logs, "GET", "metrics"),
        "api/devices": server_times(logs, "GET", "api/devices"),
        "allocate": server_times(logs, "POST", "api/allocations", after=result["allocate"]["start"]),
    }
    alloc = result["allocate"]
    rate = args.concurrency / statistics.median(alloc["wall"])
    cpu = platform.processor() or platform.machine()
    commit = git_commit()
    lines = [
        BEGIN,
        "## Benchmark",
        "",
        f"`bench/monitor_api.py` (defaults), {datetime.date.today()}, commit {commit}, on this "
        f"{os.cpu_count()}-CPU machine ({cpu}, {platform.system()} {platform.release()}); monitor on "
        "CPU slices (2 devices, shared so that 200 allocations can be held), PostgreSQL 15 in Docker. "
        "Client inside the hub container, plain HTTP on the compose network. Latency in ms as "
        "p50 / p99 / max; *server* is the monitor's own request time from its access log.",
        "",
        "| what | client | server | goal |",
        "| --- | --- | --- | --- |",
        f"| `GET metrics`, 200 allocations held, {args.requests} sequential ({result['metrics']['bytes']} bytes) "
        f"| {ms(result['metrics']['times'])} | {ms(server['metrics'])} | < 5 ms p99 |",
        f"| `GET api/devices`, same | {ms(result['api/devices']['times'])} | {ms(server['api/devices'])} | – |",
        f"| `POST api/allocations`, {args.concurrency} concurrent × {args.rounds} rounds "
        f"| {ms(alloc['times'])} | {ms(server['allocate'])} | < 20 ms p99 |",
        "",
        f"Allocation throughput: {rate:.0f} grants/s (median round: {args.concurrency} requests in "
        f"{statistics.median(alloc['wall']) * 1000:.0f} ms). Sampling {devices} CPU slices from "
        f"/proc/stat: {per_call * 1e3:.3f} ms per poll ({per_call / devices * 1e3:.3f} ms per device). "
        "NVML on an H200: 0.053 ms per device (docs/gpu-results.md); `nvidia-smi` per sample "
        "could not be compared on this GPU-less machine.",
        END,
    ]
    report = "\n".join(lines)
    print(report)
    scrape, grant = pct(server["metrics"], 99) * 1000, pct(server["allocate"], 99) * 1000
    record("4. GPU monitor", f"`GET metrics` p99 (server), {args.requests} sequential, 200 allocations held",
           f"{scrape:.1f} ms", goal="< 5 ms", met=scrape < 5)
    record("4. GPU monitor", f"`POST api/allocations` p99 (server), {args.concurrency} concurrent",
           f"{grant:.1f} ms", goal="< 20 ms", met=grant < 20)
    record("4. GPU monitor", "sampling cost per device (CPU slices, /proc/stat)",
           f"{per_call / devices * 1e3:.3f} ms")
    if not args.no_docs:
        write_section(DOCS, BEGIN, END, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
