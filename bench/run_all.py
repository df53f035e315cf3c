"""Every benchmark of gpuhub in one run, and docs/BENCHMARKS.md written from it.

    bin/bench                      # installs what is missing, then runs this
    PYTHONPATH=hub:gpu_monitor .venv/bin/python -m bench.run_all [--only NAME,...] [--quick]

Runs, one after the other (never two at once: they share the machine), each script of bench/
against the real stack, and the reference configuration (bench/reference/: JupyterHub +
configurable-http-proxy + DockerSpawner + SQLite) where the issue compares with it; each script
interleaves gpuhub and reference runs itself. Each script writes its detailed section (into
docs/BENCHMARKS.md, or docs/proxy.md and docs/monitor.md) and its headline figures as JSON lines
(bench/docs_section.record); this script writes the summary table at the top of
docs/BENCHMARKS.md: every figure next to its goal and its reference figure, with the machine, the
date, the commit and the command. A step that fails is reported as failed in the summary (with
its log under bench-logs/), the others still run, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, cpu_model, git_commit, output
from bench.docs_section import write_section

DOCS = REPO / "docs" / "BENCHMARKS.md"
LOGS = REPO / "bench-logs"
BEGIN, END = "<!-- bench/run_all.py: begin -->", "<!-- bench/run_all.py: end -->"
PY = sys.executable

# name, command, what it measures (issue items), the document its details go to
STEPS: list[tuple[str, list[str], str, str]] = [
    ("images", [PY, "-m", "bench.image_sizes", "--no-compressed", "--layers", "0", "--tag", "latest", "--build-times"],
     "6. image sizes against their targets, build time from a warm cache", "the summary (layers: images/README.md)"),
    ("footprint", [PY, "-m", "bench.footprint", "--reps", "3", "--servers", "20", "--docs"],
     "5. cold start; 7. idle footprint with 0 and 20 servers", "below"),
    ("monitor", [PY, "-m", "bench.monitor_api"],
     "4. the GPU monitor's scrape and allocation latency, sampling cost", "docs/monitor.md"),
    ("cluster", [PY, "-m", "bench.cluster_allocator"],
     "4. the GPU monitor's allocation latency with 100 nodes (99 simulated) × 8 devices and 500 allocations held; "
     "inventory read cost", "below"),
    ("spawn", [PY, "-m", "bench.spawn_latency", "--docs"],
     "1. spawn latency per step, gpuhub per profile and the reference, interleaved", "below"),
    ("burst", [PY, "-m", "bench.login_burst", "--users", "50,100", "--docs"],
     "2. login and spawn burst through the OIDC provider, gpuhub and the reference", "below"),
    ("swarm", [PY, "-m", "bench.swarm_spawn", "--docs"],
     "1. spawn latency on a Swarm worker against one host, both in one run (scale-out)", "below"),
    ("proxy", [PY, "-m", "bench.proxy_compare", "--duration", "4", "--ws-duration", "3"],
     "3. proxy throughput, latency and route adds: Traefik vs configurable-http-proxy", "docs/proxy.md"),
]
QUICK = {  # smoke-test arguments: seconds instead of the better part of an hour; writes no docs
    "images": [PY, "-m", "bench.image_sizes", "--no-compressed", "--layers", "0", "--tag", "latest"],
    "footprint": [PY, "-m", "bench.footprint", "--reps", "1", "--servers", "2"],
    "monitor": [PY, "-m", "bench.monitor_api", "--requests", "30", "--rounds", "1", "--no-docs"],
    "cluster": [PY, "-m", "bench.cluster_allocator", "--nodes", "10", "--held", "20", "--rounds", "1", "--requests", "10",
                "--reads", "5", "--no-docs"],
    "spawn": [PY, "-m", "bench.spawn_latency", "--reps", "1"],
    "burst": [PY, "-m", "bench.login_burst", "--users", "5"],
    "swarm": [PY, "-m", "bench.swarm_spawn", "--reps", "1"],
    "proxy": [PY, "-m", "bench.proxy_compare", "--quick"],
}


def machine() -> str:
    cpu = cpu_model(platform.processor() or platform.machine())
    mem = next((line.split()[1] for line in output("free", "-g").splitlines() if line.startswith("Mem:")), "?")
    return (f"{cpu}, {os.cpu_count()} CPUs, {mem} GiB memory, {platform.system()} {platform.release()}, "
            f"Docker {output('docker', 'version', '--format', '{{.Server.Version}}')}")


def summary(rows: list[dict], outcomes: list[tuple[str, str, int, float]], started: datetime.datetime,
            command: str, commit: str, total: float) -> str:
    def verdict(met) -> str:
        return {True: "met", False: "**missed**", None: "–"}[met]

    lines = [
        BEGIN,
        "## Summary",
        "",
        f"One run of `{command}` on a clean clone, {started:%Y-%m-%d %H:%M} UTC, commit {commit}, "
        f"{total / 60:.0f} min; machine: {machine()}. The reference configuration is "
        "JupyterHub + configurable-http-proxy + plain DockerSpawner + SQLite from the same upstream "
        "packages (bench/reference/), measured in the same run, interleaved with gpuhub.",
        "",
        "| item | what | gpuhub | reference | goal | |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in sorted(rows, key=lambda r: r["item"].split(".")[0].zfill(3)):
        lines.append(f"| {r['item']} | {r['what']} | {r['gpuhub']} | {r['reference']} | {r['goal']} | "
                     f"{verdict(r['met'])} |")
    lines += ["", "| step | measures | details | status | minutes |", "| --- | --- | --- | --- | --- |"]
    for name, what, rc, seconds in outcomes:
        where = next(d for n, _, _, d in STEPS if n == name)
        status = "ok" if rc == 0 else f"**failed** (exit {rc}; log bench-logs/{name}.log)"
        lines.append(f"| {name} | {what} | {where} | {status} | {seconds / 60:.1f} |")
    lines.append(END)
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="comma-separated steps: " + ", ".join(n for n, *_ in STEPS))
    ap.add_argument("--quick", action="store_true", help="smoke test of every step; docs untouched")
    args = ap.parse_args()
    chosen = [s for s in STEPS if not args.only or s[0] in args.only.split(",")]
    if not chosen:
        ap.error(f"--only: none of {args.only!r} is a step")

    started, t0 = datetime.datetime.now(datetime.UTC), time.monotonic()
    commit = git_commit()
    if output("git", "status", "--porcelain", "--untracked-files=no"):
        commit += " (with uncommitted changes)"
    command = shlex.join(["bin/bench", *sys.argv[1:]])
    LOGS.mkdir(exist_ok=True)
    results = Path(tempfile.mkdtemp(prefix="gpuhub-bench-")) / "figures.jsonl"
    results.touch()
    env = {**os.environ, "GPUHUB_BENCH_RESULTS": str(results), "PYTHONUNBUFFERED": "1"}
    outcomes = []
    for name, argv, what, _ in chosen:
        argv = QUICK[name] if args.quick else argv
        print(f"bench: {name}: {shlex.join(argv)} (log bench-logs/{name}.log)", flush=True)
        t = time.monotonic()
        with open(LOGS / f"{name}.log", "w") as log:
            rc = subprocess.run(argv, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
        outcomes.append((name, what, rc, time.monotonic() - t))
        print(f"bench: {name}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} in {(time.monotonic() - t) / 60:.1f} min",
              flush=True)

    rows = [json.loads(line) for line in results.read_text().splitlines() if line.strip()]
    text = summary(rows, outcomes, started, command, commit, time.monotonic() - t0)
    print(text)
    if not args.quick:
        write_section(DOCS, BEGIN, END, text)
        print(f"bench: wrote the summary into {DOCS.relative_to(REPO)}")
    return 0 if all(rc == 0 for _, _, rc, _ in outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
