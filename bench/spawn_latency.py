"""Spawn latency, gpuhub against the reference deployment (issue "Benchmarks", item 1).

One spawn is timed from sending `POST /hub/api/users/{u}/server` until `GET
/user/{u}/api/status` (the admin token) answers 200 through the proxy: Traefik over HTTPS for
gpuhub (test stack, tests/harness/stack.py), configurable-http-proxy for the reference
(bench/reference/). The single-user images are present and the user's home volume exists (a
first, unmeasured spawn per configuration made it). Configurations: gpuhub's profiles minimal
(0 GPUs), opencl (1 device: a CPU slice from the GPU monitor on a host without GPUs) and cuda
(0 GPUs: it starts on a CPU host, torch is not imported by the server), and the reference.
Every repetition runs each configuration once, in a rotating order, so that gpuhub and the
reference are measured side by side through the same load on the machine.

Each spawn is also cut into steps, from timestamps on one clock (the host's; Docker stamps
log lines and events on arrival):

  hub→create     request sent → container created (docker events). gpuhub: includes asking
                 the monitor for devices (the monitor's own time is shown apart)
  create→start   container created → started (docker events)
  start→log      started → the single-user server's first log line (Python start, imports)
  log→listen     first log line → "is running at" (server initialised, listening)
  listen→noticed "is running at" → the hub logs "User u took ... to start" (the hub's wait_up
                 polling, with its exponential back-off)
  noticed→201    → the API answers 201 (route added: CHP at once; Traefik when its file
                 provider reloaded and jupyterhub-traefik-proxy saw the route)
  201→200        → the first 200 through the proxy (polled every 10 ms)

Cold case: the page cache is dropped (`echo 3 > /proc/sys/vm/drop_caches`: image files,
Python modules and the hub's own pages must come from disk again) right before one spawn of
each configuration, repeated --cold-reps times. On this registry-less host "image not
present" would mean `docker load` of a tarball, which measures the disk and the tarball, not
the hub; and removing the image would remove layers other people's images share. If
drop_caches is not permitted (a container without privileges) the cold case is skipped and
the report says so.

Usage (holds Docker for ~6-8 minutes: run it under the shared lock):

    flock /tmp/gpuhub-docker.lock .venv/bin/python -m bench.spawn_latency [--reps 10] [--docs]   # from the root

Options: --gpuhub-version TAG (images gpuhub/*:TAG, the hub built from this tree; profiles
point at the TAG images), --configs, --cold-reps, --no-reference.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests
import yaml

from bench.common import REPO, git_commit, log, this_machine
from bench.docs_section import record, write_section
from bench.reference_stack import ReferenceStack, start_reference
from tests.harness.stack import Stack, remove_home, start_stack

DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench/spawn_latency.py: begin -->", "<!-- bench/spawn_latency.py: end -->"
STEPS = ("hub→create", "create→start", "start→log", "log→listen", "listen→noticed", "noticed→201", "201→200")
GOAL_P50, GOAL_RATIO = 2.0, 0.7
LOG_DIR: Path | None = None


def docker_ts(stamp: str) -> float:
    """Epoch seconds of Docker's RFC 3339 nano timestamp (2026-01-02T03:04:05.123456789Z)."""
    whole, _, frac = stamp.rstrip("Z").partition(".")
    t = datetime.datetime.strptime(whole, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=datetime.UTC)
    return t.timestamp() + float("0." + (frac or "0"))


def timestamped_logs(container: str, since: float | None = None) -> list[tuple[float, str]]:
    cmd = ["docker", "logs", "--timestamps"] + (["--since", f"{since:.3f}"] if since else []) + [container]
    out = subprocess.run(cmd, capture_output=True, text=True)
    lines = []
    for line in (out.stdout + out.stderr).splitlines():
        stamp, _, text = line.partition(" ")
        try:
            lines.append((docker_ts(stamp), text))
        except ValueError:
            continue
    lines.sort(key=lambda x: x[0])
    return lines


def first(lines: list[tuple[float, str]], pattern: str) -> float | None:
    rx = re.compile(pattern)
    return next((t for t, text in lines if rx.search(text)), None)


class DockerEvents:
    """`docker events` for containers, collected in the background: {(name, action): [epoch]}."""

    def __init__(self) -> None:
        self.seen: dict[tuple[str, str], list[float]] = {}
        self.proc = subprocess.Popen(["docker", "events", "--filter", "type=container", "--format", "{{json .}}"],
                                     stdout=subprocess.PIPE, text=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout
        for line in self.proc.stdout:
            try:
                e = json.loads(line)
            except ValueError:
                continue
            name = e.get("Actor", {}).get("Attributes", {}).get("name", "")
            self.seen.setdefault((name, e.get("Action") or e.get("status")), []).append(int(e["timeNano"]) / 1e9)

    def at(self, name: str, action: str, after: float) -> float | None:
        return next((t for t in self.seen.get((name, action), []) if t >= after), None)

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@dataclass
class Target:
    """One configuration: how to start, reach and stop a server, and where its logs are."""
    label: str
    kind: str  # "gpuhub" or "reference"
    user: str
    options: dict
    session: requests.Session
    base_url: str
    api: object
    hub_container: str
    user_container: str
    monitor_container: str | None = None
    results: list[dict] = field(default_factory=list)
    cold: list[dict] = field(default_factory=list)


def spawn_once(t: Target, events: DockerEvents) -> dict:
    t.api("POST", f"users/{t.user}")  # exists after the warm-up: 409, fine
    t0 = time.time()
    r = t.api("POST", f"users/{t.user}/server", json=t.options)
    t_resp = time.time()
    if r.status_code not in (201, 202):
        raise RuntimeError(f"{t.label}: spawn answered {r.status_code}: {r.text[:300]}")
    deadline = time.monotonic() + 120
    while True:
        g = t.session.get(f"{t.base_url}/user/{t.user}/api/status", timeout=10, allow_redirects=False)
        if g.status_code == 200:
            break
        if time.monotonic() > deadline:
            raise TimeoutError(f"{t.label}: /user/{t.user}/api/status still {g.status_code} after 120 s")
        time.sleep(0.01)
    t_ready = time.time()
    time.sleep(0.3)  # let the last log lines arrive
    hub = timestamped_logs(t.hub_container, since=t0 - 1)
    user = timestamped_logs(t.user_container)
    if LOG_DIR and not (LOG_DIR / f"{t.user}.log").exists():  # one sample of each, to check the patterns
        (LOG_DIR / f"{t.user}.log").write_text("\n".join(f"{a:.3f} {b}" for a, b in user))
        (LOG_DIR / f"{t.user}-hub.log").write_text("\n".join(f"{a:.3f} {b}" for a, b in hub))
    name = re.escape(t.user)
    marks = {
        "create": events.at(t.user_container, "create", t0 - 0.5),
        "start": events.at(t.user_container, "start", t0 - 0.5),
        "log": user[0][0] if user else None,
        "listen": first(user, r"is running at|Jupyter Server .* is running"),
        "noticed": first(hub, rf"User {name} (server )?took [0-9.]+ seconds to start"),
    }
    row = {"total": t_ready - t0, "status": r.status_code, "api": t_resp - t0}
    chain = [("hub→create", t0, marks["create"]), ("create→start", marks["create"], marks["start"]),
             ("start→log", marks["start"], marks["log"]), ("log→listen", marks["log"], marks["listen"]),
             ("listen→noticed", marks["listen"], marks["noticed"]), ("noticed→201", marks["noticed"], t_resp),
             ("201→200", t_resp, t_ready)]
    for step, a, b in chain:
        row[step] = (b - a) if a is not None and b is not None else None
    if t.monitor_container and t.options.get("gpus"):
        mon = timestamped_logs(t.monitor_container, since=t0 - 1)
        m = next((re.search(r"granted .* to " + name + r"/.*, ([0-9.]+) ms\)", text) for _, text in mon
                  if "granted" in text and f" to {t.user}/" in text), None)
        row["monitor grant"] = float(m.group(1)) / 1000 if m else None
    return row


def stop(t: Target) -> None:
    r = t.api("DELETE", f"users/{t.user}/server")
    if r.status_code not in (202, 204):
        raise RuntimeError(f"{t.label}: stop answered {r.status_code}: {r.text[:200]}")
    deadline = time.monotonic() + 120
    while t.api("GET", f"users/{t.user}").json().get("servers"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"{t.label}: server of {t.user} not stopped after 120 s")
        time.sleep(0.1)
    # DockerSpawner (remove=True) removes the container before the stop completes; wait anyway
    while subprocess.run(["docker", "inspect", t.user_container], capture_output=True).returncode == 0:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{t.label}: container {t.user_container} still there")
        time.sleep(0.1)


def drop_caches() -> bool:
    subprocess.run(["sync"])
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


class BenchStack(Stack):
    """The test stack, with images of another tag and the profiles pointing at them."""
    override: Path | None = None

    def compose_cmd(self, *args: str) -> list[str]:
        cmd = super().compose_cmd()
        if self.override:
            cmd += ["-f", str(self.override)]
        return cmd + list(args)

    def up(self) -> None:
        # no --build: the images are built beforehand (an unchanged `latest`, or --gpuhub-version)
        result = self.compose("up", "-d", "--wait", check=False)
        if result.returncode != 0:
            self.dump_logs("spawn-latency-up")
            raise RuntimeError(f"docker compose up failed:\n{result.stderr[-3000:]}")
        self.cafile = str(self.workdir / "local-ca.crt")
        Path(self.cafile).write_text(self.compose("exec", "-T", "proxy", "cat", "/certs/local-ca.crt").stdout)


def start_gpuhub(workdir: Path, version: str) -> Stack:
    os.environ["GPUHUB_VERSION"] = version  # compose reads it for every gpuhub/* image
    if version != "latest":
        profiles = yaml.safe_load((REPO / "config" / "profiles.yaml").read_text())
        for p in profiles["profiles"]:
            p["image"] = p["image"].rsplit(":", 1)[0] + f":{version}"
        path = workdir / "profiles.yaml"
        path.write_text(yaml.safe_dump(profiles, sort_keys=False))
        path.chmod(0o644)
        override = workdir / "compose.bench.yml"
        override.write_text(yaml.safe_dump({"services": {"hub": {
            "environment": {"GPUHUB_PROFILES_FILE": "/srv/gpuhub/bench-profiles.yaml"},
            "volumes": [f"{path}:/srv/gpuhub/bench-profiles.yaml:ro"]}}}))
        BenchStack.override = override
    return start_stack(workdir, stack_class=BenchStack)


def summary(values: list[float]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "–"
    return f"{statistics.median(values):.2f} (p95 {p95(values):.2f}; {min(values):.2f}–{max(values):.2f})"


def p95(values: list[float]) -> float:
    return statistics.quantiles(values, n=20, method="inclusive")[18] if len(values) > 1 else values[0]


def med(values: list) -> str:
    values = [v for v in values if v is not None]
    return f"{statistics.median(values):.2f}" if values else "–"


def report(targets: list[Target], args, cold_done: bool, images: dict[str, str]) -> str:
    commit = git_commit()
    ref = next((t for t in targets if t.kind == "reference"), None)
    ref_p50 = statistics.median(r["total"] for r in ref.results) if ref and ref.results else None
    lines = [
        BEGIN,
        "## Spawn latency (gpuhub against the reference deployment)",
        "",
        f"`bench/spawn_latency.py --reps {args.reps} --cold-reps {args.cold_reps}"
        f"{' --gpuhub-version ' + args.gpuhub_version if args.gpuhub_version != 'latest' else ''}`, "
        f"{datetime.datetime.now().strftime('%Y-%m-%d %H:%M')}, commit {commit}, {this_machine()}, "
        f"load average at start {args.load:.2f}. "
        "From `POST /hub/api/users/{u}/server` until `GET /user/{u}/api/status` answers 200 through the proxy "
        "(gpuhub: Traefik, HTTPS; reference: configurable-http-proxy, HTTP), image present, home volume existing; "
        "configurations interleaved, order rotating each repetition. Seconds: median (p95; min–max).",
        "",
        "| configuration | spawns | spawn → 200 through the proxy, s | API answer (201), s | × reference p50 |",
        "| --- | --- | --- | --- | --- |",
    ]
    for t in targets:
        totals = [r["total"] for r in t.results]
        ratio = f"{statistics.median(totals) / ref_p50:.2f}" if ref_p50 and totals else "–"
        lines.append(f"| {t.label} | {len(totals)} | {summary(totals)} | {summary([r['api'] for r in t.results])} | {ratio} |")
    lines += ["", "Where the time goes (medians, s; steps as defined in the script's docstring):", "",
              "| configuration | " + " | ".join(STEPS) + " | monitor grant |",
              "| --- |" + " --- |" * (len(STEPS) + 1)]
    for t in targets:
        grant = med([r.get("monitor grant") for r in t.results]) if t.options.get("gpus") else "n/a"
        lines.append(f"| {t.label} | " + " | ".join(med([r[s] for r in t.results]) for s in STEPS) + f" | {grant} |")
    lines.append("")
    if cold_done:
        lines += [f"Cold case: page cache dropped (`echo 3 > /proc/sys/vm/drop_caches`) right before each of "
                  f"{args.cold_reps} spawn(s) per configuration (interleaved):", "",
                  "| configuration | cold spawn → 200, s | start→log | log→listen |", "| --- | --- | --- | --- |"]
        for t in targets:
            lines.append(f"| {t.label} | {summary([r['total'] for r in t.cold])} | {med([r['start→log'] for r in t.cold])} "
                         f"| {med([r['log→listen'] for r in t.cold])} |")
        lines.append("")
    elif args.cold_reps:
        lines += ["Cold case: not measured (writing /proc/sys/vm/drop_caches was not permitted).", ""]
    gh = [t for t in targets if t.kind == "gpuhub" and t.results]
    if ref_p50 and gh:
        lines.append(f"Goal: gpuhub p50 ≤ {GOAL_P50} s and ≤ {GOAL_RATIO}× the reference's p50 ({ref_p50:.2f} s in this run, "
                     f"so ≤ {min(GOAL_P50, GOAL_RATIO * ref_p50):.2f} s):")
        for t in gh:
            p50 = statistics.median(r["total"] for r in t.results)
            ok = p50 <= GOAL_P50 and p50 <= GOAL_RATIO * ref_p50
            lines.append(f"{t.label} {p50:.2f} s, {'met' if ok else 'missed'}.")
        lines.append("")
    lines.append("Images: " + ", ".join(f"`{k}` {v}" for k, v in images.items()) + ".")
    lines.append(END)
    return "\n".join(lines)


def image_id(ref: str) -> str:
    out = subprocess.run(["docker", "image", "inspect", "--format", "{{.Id}}", ref], capture_output=True, text=True).stdout
    return out.strip().split(":")[-1][:12] or "missing"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--cold-reps", type=int, default=2)
    parser.add_argument("--configs", default="minimal,opencl,cuda", help="gpuhub profiles to measure")
    parser.add_argument("--gpuhub-version", default="latest")
    parser.add_argument("--no-reference", action="store_true")
    parser.add_argument("--docs", action="store_true")
    args = parser.parse_args()
    args.load = os.getloadavg()[0]

    workdir = Path(tempfile.mkdtemp(prefix="gpuhub-bench-spawn-"))
    global LOG_DIR
    LOG_DIR = workdir
    events = DockerEvents()
    stack: Stack | None = None
    ref: ReferenceStack | None = None
    targets: list[Target] = []
    try:
        log(f"starting gpuhub (images :{args.gpuhub_version})")
        stack = start_gpuhub(workdir, args.gpuhub_version)
        gh_session = stack.session()
        profiles = {"minimal": {"profile": "minimal", "gpus": 0}, "opencl": {"profile": "opencl", "gpus": 1},
                    "cuda": {"profile": "cuda", "gpus": 0}}
        for name in args.configs.split(","):
            user = f"sb{name}"  # letters only: DockerSpawner escapes "-" in container names
            targets.append(Target(f"gpuhub {name} ({profiles[name]['gpus']} GPU)", "gpuhub", user, profiles[name],
                                  gh_session, stack.base_url, stack.api, f"{stack.project}-hub-1", f"{stack.project}-{user}",
                                  f"{stack.project}-gpu-monitor-1"))
        if not args.no_reference:
            log("starting the reference")
            ref = start_reference()
            targets.append(Target("reference (DockerSpawner + CHP)", "reference", "sbref", {}, ref.session(),
                                  ref.base_url, ref.api, ref.hub_container(), "gpuhub-ref-sbref"))
        for t in targets:  # warm-up: creates the user and the home volume, loads the image once
            spawn_once(t, events)
            stop(t)
        for rep in range(args.reps):
            order = targets[rep % len(targets):] + targets[:rep % len(targets)]
            for t in order:
                row = spawn_once(t, events)
                t.results.append(row)
                stop(t)
                log(f"rep {rep + 1}: {t.label}: {row['total']:.2f} s")
        cold_done = False
        for rep in range(args.cold_reps):
            for t in targets:
                if not drop_caches():
                    break
                cold_done = True
                time.sleep(1)
                row = spawn_once(t, events)
                t.cold.append(row)
                stop(t)
                log(f"cold {rep + 1}: {t.label}: {row['total']:.2f} s")
    finally:
        events.close()
        if stack is not None:
            for t in targets:
                if t.kind == "gpuhub":
                    remove_home(t.user)
            stack.down()
            for t in targets:
                if t.kind == "gpuhub":
                    remove_home(t.user)
        if ref is not None:
            ref.down()
    images = {img: image_id(img) for img in [f"gpuhub/hub:{args.gpuhub_version}"]
              + sorted({p["image"].rsplit(":", 1)[0] + f":{args.gpuhub_version}"
                        for p in yaml.safe_load((REPO / "config" / "profiles.yaml").read_text())["profiles"]})
              + ([] if args.no_reference else ["gpuhub-ref/hub:latest", "gpuhub-ref/singleuser:latest"])}
    text = report(targets, args, cold_done, images)
    print(text)
    (workdir / "raw.json").write_text(json.dumps({t.label: {"warm": t.results, "cold": t.cold} for t in targets}, indent=1))
    log(f"raw figures: {workdir / 'raw.json'}")
    if args.docs:
        write_section(DOCS, BEGIN, END, text)
    record_figures(targets)
    return 0


def record_figures(targets: list[Target]) -> None:
    """The harness's summary rows (bench/run_all.py): p50 per gpuhub profile against the reference,
    the slowest step of the minimal profile, and the cold case."""
    ref = next((t for t in targets if t.kind == "reference" and t.results), None)
    ref_p50 = statistics.median(r["total"] for r in ref.results) if ref else None
    for t in targets:
        if t.kind != "gpuhub" or not t.results:
            continue
        totals = [r["total"] for r in t.results]
        p50 = statistics.median(totals)
        ratio = p50 / ref_p50 if ref_p50 else None
        record("1. Spawn latency", f"{t.label}: POST to 200 through the proxy, p50 (p95) of {len(totals)}",
               f"{p50:.2f} s ({p95(totals):.2f})" + (f", {ratio:.2f}×" if ratio else ""),
               reference=f"{ref_p50:.2f} s ({p95([r['total'] for r in ref.results]):.2f})" if ref else "–",
               goal=f"≤ {GOAL_P50} s and ≤ {GOAL_RATIO}× reference",
               met=p50 <= GOAL_P50 and (ratio is not None and ratio <= GOAL_RATIO))
        if t.cold:
            cold = statistics.median(r["total"] for r in t.cold)
            record("1. Spawn latency", f"{t.label}: cold (page cache dropped), median of {len(t.cold)}",
                   f"{cold:.2f} s", reference=f"{statistics.median(r['total'] for r in ref.cold):.2f} s"
                   if ref and ref.cold else "–")


if __name__ == "__main__":
    sys.exit(main())
