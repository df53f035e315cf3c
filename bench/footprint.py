"""Cold start and idle footprint of the stack (issue "Benchmarks", items 5 and 7; gpuhub only,
no reference configuration yet).

  * cold start: `docker compose up -d --wait` with every image already built, from nothing
    running to every service healthy (the hub's healthcheck goes through the proxy), repeated;
  * idle footprint: memory and CPU of proxy, hub, db and gpu-monitor (`docker stats`, a few
    samples a few seconds apart) with 0 servers and with N idle servers of the minimal profile.

Uses the test stack (tests/harness/stack.py: project gpuhub-test, ports 443/80/9401 on 127.0.0.1) so
that servers can be started through the API. Prints a Markdown table; with --docs writes it to
docs/BENCHMARKS.md (section between markers). Usage:

    .venv/bin/python -m bench.footprint [--reps 3] [--servers 10] [--docs]     # from the repository's root
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import REPO, git_commit, log, this_machine
from bench.docs_section import record, write_section
from tests.harness.stack import remove_home, start_stack

SERVICES = ("proxy", "hub", "db", "gpu-monitor")
DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench/footprint.py: begin -->", "<!-- bench/footprint.py: end -->"


def stats(project: str, samples: int = 3, gap: float = 3.0) -> dict[str, tuple[float, float]]:
    """{service: (median memory MiB, median CPU %)} over a few `docker stats` samples."""
    seen: dict[str, list[tuple[float, float]]] = {s: [] for s in SERVICES}
    for _ in range(samples):
        out = subprocess.run(["docker", "stats", "--no-stream", "--format", "{{json .}}"],
                             capture_output=True, text=True, check=True).stdout
        for line in out.splitlines():
            row = json.loads(line)
            for service in SERVICES:
                if row["Name"] == f"{project}-{service}-1":
                    used = row["MemUsage"].split("/")[0].strip()
                    number, unit = float(used[:-3]), used[-3:]
                    mib = number * {"KiB": 1 / 1024, "MiB": 1, "GiB": 1024}[unit]
                    seen[service].append((mib, float(row["CPUPerc"].rstrip("%"))))
        time.sleep(gap)
    return {s: (statistics.median(m for m, _ in v), statistics.median(c for _, c in v)) for s, v in seen.items() if v}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--servers", type=int, default=20)
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args()

    starts = []
    stack = None
    for rep in range(args.reps):
        if stack is None:
            t = time.monotonic()  # nothing of the project runs yet (start_stack removes leftovers first)
            stack = start_stack(Path(tempfile.mkdtemp(prefix="gpuhub-bench-")))
        else:
            stack.down()
            t = time.monotonic()
            stack.up()
            stack.wait_hub()
        starts.append(time.monotonic() - t)
        log(f"cold start {rep + 1}: {starts[-1]:.1f} s")
    assert stack is not None
    try:
        idle = stats(stack.project)
        users = [f"bench-{i}" for i in range(args.servers)]
        for user in users:
            r = stack.start_server(user, {"profile": "minimal", "gpus": 0})
            assert r.status_code in (201, 202), r.text
        time.sleep(10)
        busy = stats(stack.project)
        for user in users:
            stack.stop_server(user)
            stack.api("DELETE", f"users/{user}")
            remove_home(user)  # the volume's name as DockerSpawner escapes it: bench-0 -> ...-home-bench-2d0
    finally:
        stack.down()

    commit = git_commit()
    lines = [
        BEGIN,
        "## Cold start and idle footprint",
        "",
        f"`bench/footprint.py --reps {args.reps} --servers {args.servers}`, {datetime.date.today()}, commit {commit}, "
        f"{this_machine()}, "
        "images built beforehand, test stack (tests/harness/stack.py).",
        "",
        f"Cold start, `docker compose up -d --wait` to every service healthy: median {statistics.median(starts):.1f} s "
        f"(min {min(starts):.1f}, max {max(starts):.1f}, {len(starts)} runs); goal ≤ 30 s.",
        "",
        f"| service | memory, 0 servers (MiB) | CPU, 0 servers (%) | memory, {args.servers} idle servers (MiB) | CPU, {args.servers} idle servers (%) |",  # noqa: E501
        "| --- | --- | --- | --- | --- |",
    ]
    for service in SERVICES:
        m0, c0 = idle.get(service, (float("nan"), float("nan")))
        m1, c1 = busy.get(service, (float("nan"), float("nan")))
        lines.append(f"| {service} | {m0:.0f} | {c0:.1f} | {m1:.0f} | {c1:.1f} |")
    lines += ["", "Medians of 3 `docker stats` samples 3 s apart.", END]
    cold = statistics.median(starts)
    record("5. Cold start", "`docker compose up -d --wait`, images built, to every service healthy",
           f"{cold:.1f} s ({min(starts):.1f}–{max(starts):.1f}, {len(starts)} runs)", goal="≤ 30 s", met=cold <= 30)
    for label, seen in (("0 servers", idle), (f"{args.servers} idle servers", busy)):
        record("7. Idle footprint", f"memory / CPU of hub, proxy, db, gpu-monitor with {label}",
               ", ".join(f"{s} {seen[s][0]:.0f} MiB / {seen[s][1]:.1f} %" for s in SERVICES if s in seen))
    report = "\n".join(lines)
    print(report)
    if args.docs:
        write_section(DOCS, BEGIN, END, report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
