"""Allocation latency of two monitor images, interleaved: A B A B ... on one running stack.

`bench/monitor_api.py` measures one build; two runs of it, minutes apart, differ by more than
most changes to the allocation path (this machine is shared, and its two CPUs also run the
client and PostgreSQL). This script starts the test stack once (tests/harness/stack.py, with the same
shareable CPU slices as monitor_api.py), then alternates the `gpu-monitor` container between
two images, `gpuhub/gpu-monitor:<A>` and `gpuhub/gpu-monitor:<B>`, `--pairs` times. Each turn
recreates the monitor, sends one unmeasured warm-up burst, then `--rounds` bursts of
`--concurrency` concurrent `POST api/allocations` from inside the hub container (each burst's
grants released before the next), and reads the server's own times from the monitor's access
log. Both images must exist: build A from the old code, e.g.

    git archive <old commit> gpu_monitor | tar -x -C /tmp/old
    docker build -t gpuhub/gpu-monitor:old -f images/monitor/Dockerfile /tmp/old

and let the stack build B from the work tree (GPUHUB_VERSION=B). `--py-spy PATH` records B's
turns with py-spy (non-blocking) into `--out`, and then the figures of those turns are not
comparable. Usage:

    GPUHUB_VERSION=new PYTHONPATH=hub:gpu_monitor .venv/bin/python -m bench.monitor_ab --a old --b new [--pairs 4]

from the repository's root (gpu_monitor importable, as for monitor_api.py).
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.monitor_api import ACTIONS, pct, run_in_hub, server_times, shareable_slices
from tests.harness.stack import TEST_ENV, Stack, start_stack

CLIENT = ACTIONS + r'''
burst(f"{cfg['turn']}-warm")
start = time.time()
times, walls = [], []
for r in range(cfg["rounds"]):
    t, w = burst(f"{cfg['turn']}-{r}")
    times.extend(t)
    walls.append(w)
print(json.dumps({"times": times, "wall": walls, "start": start}))
'''


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:5.1f} / {pct(values, 99) * 1000:5.1f}"


def monitor_container(stack: Stack) -> str:
    return stack.compose("ps", "-q", "gpu-monitor").stdout.strip()


def switch_monitor(stack: Stack, tag: str) -> str:
    """Recreate gpu-monitor from gpuhub/gpu-monitor:<tag>; returns its container id."""
    result = stack.compose("up", "-d", "--no-deps", "--no-build", "--wait", "gpu-monitor",
                           env={"GPUHUB_VERSION": tag}, check=False)
    if result.returncode:
        raise RuntimeError(f"could not start gpu-monitor:{tag}: {result.stderr[-2000:]}")
    container = monitor_container(stack)
    image = subprocess.run(["docker", "inspect", "-f", "{{.Config.Image}}", container],
                           capture_output=True, text=True).stdout.strip()
    assert image == f"gpuhub/gpu-monitor:{tag}", image
    return container


def turn(stack: Stack, tag: str, n: int, args: argparse.Namespace, profile: Path | None) -> dict:
    container = switch_monitor(stack, tag)
    spy = None
    if profile is not None:
        pid = subprocess.run(["docker", "inspect", "-f", "{{.State.Pid}}", container],
                             capture_output=True, text=True).stdout.strip()
        spy = subprocess.Popen([args.py_spy, "record", "--pid", pid, "--subprocesses", "--nonblocking",
                                "--rate", "500", "--format", "raw", "-o", str(profile)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(1)
    cfg = {"token": stack.token, "rounds": args.rounds, "concurrency": args.concurrency, "turn": f"{n}{tag}"}
    run = run_in_hub(stack, cfg, CLIENT, timeout=600)
    if spy is not None:
        spy.send_signal(2)
        spy.wait(timeout=30)
    if run.returncode:
        raise RuntimeError(f"client failed: {run.stdout[-2000:]} {run.stderr[-3000:]}")
    result = json.loads(run.stdout.strip().splitlines()[-1])
    logs = subprocess.run(["docker", "logs", "--timestamps", container], capture_output=True, text=True)
    (Path(args.out) / f"monitor-{tag}-{n}.log").write_text(logs.stdout + logs.stderr)
    result["server"] = server_times(logs.stdout + logs.stderr, "POST", "api/allocations", after=result["start"])
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--a", required=True, help="GPUHUB_VERSION tag of the first monitor image")
    parser.add_argument("--b", required=True, help="GPUHUB_VERSION tag of the second monitor image")
    parser.add_argument("--pairs", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=5, help="measured bursts per turn")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--py-spy", help="path of py-spy: record B's turns (then not comparable)")
    parser.add_argument("--out", default=tempfile.gettempdir(), help="folder for the monitor's logs and py-spy's output")
    args = parser.parse_args()

    print("monitor_ab: starting the stack", file=sys.stderr)
    stack = start_stack(Path(tempfile.mkdtemp(prefix="gpuhub-bench-")), env={**TEST_ENV, **shareable_slices()})
    results: dict[str, list[dict]] = {args.a: [], args.b: []}
    try:
        for n in range(args.pairs):
            order = (args.a, args.b) if n % 2 == 0 else (args.b, args.a)  # ABBA: no tag always first
            for tag in order:
                profile = Path(args.out) / f"monitor-{tag}-{n}.txt" if args.py_spy and tag == args.b else None
                r = turn(stack, tag, n, args, profile)
                results[tag].append(r)
                print(f"turn {n} {tag:>12}: server p50/p99 {ms(r['server'])} ms, "
                      f"client {ms(r['times'])} ms ({len(r['server'])} logged)", file=sys.stderr)
    finally:
        stack.down()
    print(f"\n{args.concurrency} concurrent POST api/allocations, {args.rounds} bursts x {args.pairs} turns "
          "each, interleaved; ms p50 / p99")
    print(f"{'image':>12} | {'server':>13} | {'client':>13} | per-turn server p99")
    for tag, turns in results.items():
        server = [t for r in turns for t in r["server"]]
        client = [t for r in turns for t in r["times"]]
        per_turn = " ".join(f"{pct(r['server'], 99) * 1000:.1f}" for r in turns)
        print(f"{tag:>12} | {ms(server)} | {ms(client)} | {per_turn}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
