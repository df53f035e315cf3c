"""A burst of logins and spawns (issue "Benchmarks", item 2): N people log in at the same
moment through the OpenID Connect provider and each starts a server of the small profile at
once, as a browser would; gpuhub and the reference configuration in the same run.

Per person, one HTTP client with its own cookies (aiohttp), all N concurrently:

  login   GET /hub/oauth_login -> the provider's authorize page -> submit its form with the
          user name (oidc-provider-mock accepts any subject) -> /hub/oauth_callback, which
          sets the hub's cookie;
  spawn   what the page after login leads to: gpuhub shows the spawn form, which is submitted
          with the default profile (`minimal`, no GPU); the reference starts the server on
          GET /hub/spawn. Then the spawn-pending page's event stream (as its JavaScript reads
          it) until "ready", then /user/NAME/ through the proxy, following the single-user
          server's own OAuth redirects, until JupyterLab's page answers 200.

Measured: login, spawn (first request after login -> JupyterLab answers) and total per person;
failures and where they happened; every HTTP status seen; the hub container's CPU and memory
(cgroup counters sampled every second in a thread; `docker stats` reads the same counters);
the whole machine's CPU; and the hub's own jupyterhub_server_spawn_duration_seconds and
jupyterhub_proxy_add_duration_seconds histograms (/hub/metrics, before and after, with the
admin token). Between bursts every server is stopped and every bench user deleted.

gpuhub runs as the test stack (tests/harness/stack.py: project gpuhub-test, 127.0.0.1:443/80/9401)
with the bench users admitted (GPUHUB_ALLOW_ALL), the monitor at its production timings and the
profiles' images of GPUHUB_VERSION (bench/compose.burst.yml; the reference uses the same tag);
the reference (JupyterHub + configurable-http-proxy + DockerSpawner + SQLite, project
gpuhub-ref, bench/reference/) is started by bench/reference_stack.py. While one
is measured the other's containers are paused (`docker compose pause`), so that neither pays
for the other's idle work. Both stacks are started once; bursts alternate between them.

    .venv/bin/python -m bench.login_burst [--users 50] [--rounds 1] [--only gpuhub] [--docs]

from the repository's root. Hold the shared Docker lock around it: `flock /tmp/gpuhub-docker.lock
.venv/bin/python -m ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import datetime
import html
import json
import os
import re
import shlex
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from urllib.parse import urljoin, urlsplit

import aiohttp

from bench.common import REPO, git_commit, log, this_machine
from bench.docs_section import record, write_section

DOCS = REPO / "docs" / "BENCHMARKS.md"
BEGIN, END = "<!-- bench/login_burst.py: begin -->", "<!-- bench/login_burst.py: end -->"
USER_TIMEOUT = 600.0  # one person's login + spawn gives up after this long
# TEST_ENV's short monitor timings make the monitor sample every second: production defaults here
TEST_ONLY_SETTINGS = ("GPUHUB_MONITOR_SAMPLE_SECONDS", "GPUHUB_MONITOR_RECONCILE_SECONDS",
                      "GPUHUB_MONITOR_GRACE_SECONDS", "GPUHUB_MONITOR_FLUSH_SECONDS")


# ---- the systems under test ----------------------------------------------------------------

@dataclasses.dataclass
class Target:
    name: str
    base_url: str                 # the hub as browsers reach it, e.g. https://localhost
    admin_token: str              # reads /hub/metrics, stops servers, deletes users
    ssl: ssl.SSLContext | bool    # what the clients verify the hub's certificate with
    project: str                  # compose project (pause/unpause, docker stats)
    hub_container: str
    volume_of: Callable[[str], str] | None  # a user's home volume, removed after each burst
    compose: Callable[..., subprocess.CompletedProcess]
    logs: Callable[[], str]
    down: Callable[[], None]


def gpuhub_target(workdir: Path) -> Target:
    from tests.harness.stack import TEST_ENV, Stack, start_stack

    version = os.environ.get("GPUHUB_VERSION") or "latest"
    bench_dir = workdir / "bench"
    bench_dir.mkdir()
    profiles = (REPO / "config" / "profiles.yaml").read_text()
    (bench_dir / "profiles.yaml").write_text(re.sub(r"(image: gpuhub/[\w-]+):latest", rf"\1:{version}", profiles))

    class BenchStack(Stack):
        def compose_cmd(self, *args: str) -> list[str]:
            return [*super().compose_cmd(), "-f", str(REPO / "bench" / "compose.burst.yml"), *args]

    env = {k: v for k, v in TEST_ENV.items() if k not in TEST_ONLY_SETTINGS}
    env.update(GPUHUB_ALLOWED_USERS="", GPUHUB_ALLOW_ALL="true", GPUHUB_BENCH_DIR=str(bench_dir))
    stack = start_stack(workdir, env=env, stack_class=BenchStack)
    ctx = ssl.create_default_context(cafile=stack.cafile)
    return Target(
        name="gpuhub", base_url=stack.base_url, admin_token=stack.token, ssl=ctx, project=stack.project,
        hub_container=f"{stack.project}-hub-1", volume_of=lambda u: f"{stack.project}-home-{u}",
        compose=lambda *a, **kw: stack.compose(*a, check=False, **kw),
        logs=lambda: stack.compose("logs", "--no-color", "hub", check=False).stdout,
        down=stack.down,
    )


def reference_target() -> Target:
    """The reference configuration (bench/reference/, started by bench/reference_stack.py)."""
    from bench.reference_stack import VOLUME_PREFIX, start_reference

    ref = start_reference()  # its own single-user image, gpuhub-ref/singleuser
    return Target(
        name="reference", base_url=ref.base_url, admin_token=ref.token, ssl=False, project=ref.project,
        hub_container=ref.hub_container(), volume_of=lambda u: f"{VOLUME_PREFIX}{u}",
        compose=lambda *a, **kw: ref.compose(*a, check=False, **kw),
        logs=lambda: ref.compose("logs", "--no-color", "hub", check=False).stdout,
        down=ref.down,
    )


# ---- one person ------------------------------------------------------------------------------

@dataclasses.dataclass
class Result:
    user: str
    login_s: float | None = None
    spawn_s: float | None = None
    total_s: float | None = None
    error: str = ""
    not_running_pages: int = 0  # "Server not running" answers while the spawn was accepted


FORM_RE = re.compile(r'<form[^>]*id="spawn_form"[^>]*action="([^"]*)"', re.S)
FORM_RE2 = re.compile(r'<form[^>]*action="([^"]*)"[^>]*id="spawn_form"', re.S)
EVENTSOURCE_RE = re.compile(r'new EventSource\("([^"]+)"\)')
RADIO_RE = re.compile(r'type="radio" name="profile" value="([^"]+)"( checked)?')


class Person:
    """One browser: its own cookies, every response's status counted."""

    def __init__(self, target: Target, user: str, statuses: Counter):
        self.target, self.user, self.statuses = target, user, statuses
        self.session = aiohttp.ClientSession(
            cookie_jar=aiohttp.CookieJar(unsafe=True),
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=30, sock_read=300),
            trust_env=False)
        self.step = "start"
        self.not_running_pages = 0

    async def request(self, method: str, url: str, **kw) -> tuple[aiohttp.ClientResponse, str]:
        """Follows redirects itself, so that every status is counted."""
        for _ in range(20):
            async with self.session.request(method, url, allow_redirects=False, ssl=self.ssl_for(url), **kw) as r:
                self.statuses[r.status] += 1
                text = await r.text(errors="replace")
                if r.status in (301, 302, 303, 307) and "Location" in r.headers:
                    url = urljoin(str(r.url), r.headers["Location"])
                    if r.status != 307:
                        method, kw = "GET", {}
                    continue
                return r, text
        raise RuntimeError(f"too many redirects at {self.step}")

    def ssl_for(self, url: str):
        return self.target.ssl if url.startswith("https:") else None

    async def login(self) -> str:
        """The provider's authorize page, its form, the hub's callback; returns the landing URL."""
        self.step = "login: /hub/oauth_login"
        url = f"{self.target.base_url}/hub/oauth_login"
        for _ in range(5):  # to the provider's page
            async with self.session.get(url, allow_redirects=False, ssl=self.ssl_for(url)) as r:
                self.statuses[r.status] += 1
                await r.read()
                if r.status not in (302, 303):
                    raise RuntimeError(f"{self.step}: HTTP {r.status} at {urlsplit(url).path}")
                url = urljoin(str(r.url), r.headers["Location"])
            if "/authorize" in urlsplit(url).path:
                break
        self.step = "login: provider's authorize page"
        r, text = await self.request("GET", url)
        if r.status != 200 or 'name="sub"' not in text:
            raise RuntimeError(f"{self.step}: HTTP {r.status}")
        self.step = "login: provider's form"
        async with self.session.post(url, data={"sub": self.user}, allow_redirects=False) as r:
            self.statuses[r.status] += 1
            await r.read()
            if r.status not in (302, 303):
                raise RuntimeError(f"{self.step}: HTTP {r.status}")
            callback = urljoin(str(r.url), r.headers["Location"])
        self.step = "login: /hub/oauth_callback"
        async with self.session.get(callback, allow_redirects=False, ssl=self.ssl_for(callback)) as r:
            self.statuses[r.status] += 1
            await r.read()
            if r.status not in (302, 303):
                raise RuntimeError(f"{self.step}: HTTP {r.status}")
            return urljoin(str(r.url), r.headers["Location"])

    async def spawn(self, landing: str) -> None:
        """From the page after login to JupyterLab answering through the proxy."""
        self.step = "spawn: page after login"
        r, text = await self.request("GET", landing)
        form = FORM_RE.search(text) or FORM_RE2.search(text)
        if form:  # gpuhub: the spawn form, submitted with its default profile
            self.step = "spawn: form"
            radios = RADIO_RE.findall(text)
            profile = next((v for v, checked in radios if checked), radios[0][0] if radios else "")
            data = {"profile": profile, f"gpus-{profile}": "0"}
            r, text = await self.request("POST", urljoin(str(r.url), html.unescape(form.group(1))), data=data)
        if r.status != 200:
            raise RuntimeError(f"{self.step}: HTTP {r.status} at {urlsplit(str(r.url)).path}: {text[:200]!r}")
        pending = str(r.url)
        while urlsplit(pending).path.startswith("/hub/spawn-pending/"):
            stream = EVENTSOURCE_RE.search(text)
            if stream:  # the spawn-pending page: follow the progress events as its script does
                self.step = "spawn: progress events"
                url = urljoin(pending, html.unescape(stream.group(1)))
                async with self.session.get(url, ssl=self.ssl_for(url), headers={"Accept": "text/event-stream"}) as ev:
                    self.statuses[ev.status] += 1
                    if ev.status != 200:
                        raise RuntimeError(f"{self.step}: HTTP {ev.status}")
                    async for line in ev.content:
                        if line.startswith(b"data:"):
                            event = json.loads(line[5:])
                            if event.get("failed"):
                                raise RuntimeError(f"spawn failed: {event.get('message', '')[:200]}")
                            if event.get("ready"):
                                break
            else:
                # "Server not running": the hub answered the page before the spawn it had just
                # accepted was marked pending (seen under load). A person reloads; so do we.
                self.not_running_pages += 1
                if self.not_running_pages > 120:
                    raise RuntimeError(f"{self.step}: the spawn never showed as pending (2 min of reloads)")
                await asyncio.sleep(1)
            # the page's script reloads it when the server is ready: a redirect to the server
            self.step = "spawn: spawn-pending page"
            r, text = await self.request("GET", pending)
            if r.status != 200:
                raise RuntimeError(f"{self.step}: HTTP {r.status} at {urlsplit(str(r.url)).path}")
            pending = str(r.url)
        self.step = "spawn: JupyterLab through the proxy"
        if f"/user/{self.user}/" not in urlsplit(pending).path:
            r, text = await self.request("GET", f"{self.target.base_url}/user/{self.user}/")
        if r.status != 200 or f"/user/{self.user}/" not in urlsplit(str(r.url)).path:
            raise RuntimeError(f"{self.step}: HTTP {r.status} at {urlsplit(str(r.url)).path}")

    async def run(self, start: asyncio.Event) -> Result:
        result = Result(self.user)
        await start.wait()
        t0 = time.monotonic()
        try:
            async with asyncio.timeout(USER_TIMEOUT):
                landing = await self.login()
                t1 = time.monotonic()
                result.login_s = t1 - t0
                await self.spawn(landing)
                t2 = time.monotonic()
                result.spawn_s, result.total_s = t2 - t1, t2 - t0
        except Exception as e:  # noqa: BLE001 - recorded per person
            result.error = f"{self.step}: {type(e).__name__}: {e}"[:300]
        finally:
            result.not_running_pages = self.not_running_pages
            await self.session.close()
        return result


# ---- measurements around the burst --------------------------------------------------------------

def container_id(name: str) -> str:
    return subprocess.run(["docker", "inspect", "-f", "{{.Id}}", name], capture_output=True, text=True).stdout.strip()


class Sampler(threading.Thread):
    """The hub container's CPU (% of one core) and memory (MiB, without page cache, as
    `docker stats` shows it), and the machine's CPU, every `interval` seconds."""

    def __init__(self, container: str, interval: float = 1.0):
        super().__init__(daemon=True)
        self.cid, self.interval = container_id(container), interval
        self.stop_event = threading.Event()
        self.cpu: list[float] = []
        self.mem: list[float] = []
        self.machine: list[float] = []

    def _cgroup(self) -> tuple[float, float] | None:
        base = "/sys/fs/cgroup"
        try:
            if os.path.exists(f"{base}/cpuacct/docker/{self.cid}"):  # cgroup v1, cgroupfs driver
                cpu_ns = int(Path(f"{base}/cpuacct/docker/{self.cid}/cpuacct.usage").read_text())
                mem = int(Path(f"{base}/memory/docker/{self.cid}/memory.usage_in_bytes").read_text())
                stat_file = Path(f"{base}/memory/docker/{self.cid}/memory.stat")
                stat = dict(line.split() for line in stat_file.read_text().splitlines())
                mem -= int(stat.get("total_inactive_file", 0))
                return cpu_ns / 1e9, mem / 2**20
            for d in (f"{base}/system.slice/docker-{self.cid}.scope", f"{base}/docker/{self.cid}"):  # v2
                if os.path.exists(d):
                    usec = int(next(line.split()[1] for line in Path(f"{d}/cpu.stat").read_text().splitlines()
                                    if line.startswith("usage_usec")))
                    mem = int(Path(f"{d}/memory.current").read_text())
                    stat = dict(line.split() for line in Path(f"{d}/memory.stat").read_text().splitlines())
                    return usec / 1e6, (mem - int(stat.get("inactive_file", 0))) / 2**20
        except (OSError, ValueError, StopIteration):
            pass
        return None

    @staticmethod
    def _machine() -> tuple[float, float]:
        fields = [float(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        idle = fields[3] + fields[4]
        return sum(fields), idle

    def run(self) -> None:
        last, last_t, last_m = self._cgroup(), time.monotonic(), self._machine()
        while not self.stop_event.wait(self.interval):
            now, now_t, now_m = self._cgroup(), time.monotonic(), self._machine()
            if now and last:
                self.cpu.append(100 * (now[0] - last[0]) / (now_t - last_t))
                self.mem.append(now[1])
            total, idle = now_m[0] - last_m[0], now_m[1] - last_m[1]
            if total:
                self.machine.append(100 * (1 - idle / total))
            last, last_t, last_m = now, now_t, now_m

    def stop(self) -> None:
        self.stop_event.set()
        self.join()


METRIC_RE = re.compile(r'^(jupyterhub_(?:server_spawn|proxy_add)_duration_seconds)_(bucket|count|sum)\{([^}]*)\} (\S+)$')


async def hub_metrics(target: Target) -> dict[tuple, float]:
    """{(metric, kind, labels): value} for the spawn and proxy-add histograms."""
    async with aiohttp.ClientSession(trust_env=False) as s:
        async with s.get(f"{target.base_url}/hub/metrics", ssl=target.ssl,
                         headers={"Authorization": f"token {target.admin_token}"}) as r:
            text = await r.text()
    out = {}
    for line in text.splitlines():
        m = METRIC_RE.match(line)
        if m:
            labels = tuple(sorted(re.findall(r'(\w+)="([^"]*)"', m.group(3))))
            out[(m.group(1), m.group(2), labels)] = float(m.group(4))
    return out


def histogram_summary(before: dict, after: dict, metric: str, status: str | None = None) -> str:
    """'count N, mean X s, buckets ≤a: n, ≤b: m …' of what the burst added."""
    def delta(key):
        return after.get(key, 0.0) - before.get(key, 0.0)
    keys = [k for k in after if k[0] == metric and (status is None or ("status", status) in k[2])]
    count = sum(delta(k) for k in keys if k[1] == "count")
    total = sum(delta(k) for k in keys if k[1] == "sum")
    if not count:
        return "none"
    buckets: Counter = Counter()
    for k in keys:
        if k[1] == "bucket":
            buckets[dict(k[2])["le"]] += delta(k)
    cumulative = sorted(((float(le), n) for le, n in buckets.items()), key=lambda x: x[0])
    parts, prev = [], 0.0
    for le, n in cumulative:
        if n - prev:
            parts.append(f"≤{le:g} s: {n - prev:.0f}")
        prev = n
    return f"{count:.0f} spawns, mean {total / count:.1f} s ({', '.join(parts)})"


# ---- one burst ---------------------------------------------------------------------------------

@dataclasses.dataclass
class Burst:
    target: str
    users: int
    round: int
    results: list[Result]
    statuses: Counter
    wall_s: float
    hub_cpu_mean: float
    hub_cpu_max: float
    hub_mem_max: float
    machine_cpu_mean: float
    spawn_hist: str
    proxy_hist: str
    log_findings: dict[str, int]


LOG_PATTERNS = {
    "429 / spawn limit": re.compile(r"\] 429 |concurrent spawn limit|Too many users|Active user limit"),
    "5xx": re.compile(r"\] 5\d\d (?:GET|POST|DELETE|PUT|PATCH) "),
    "server timeout": re.compile(r"didn't respond in|never showed up|TimeoutError|timed out"),
    "slow to start (informational)": re.compile(r"is slow to (?:start|become responsive)"),
    "traceback": re.compile(r"Traceback"),
    "failed": re.compile(r"[Ff]ailed to start|Unhandled error starting|spawn failed", re.I),
    "event loop unresponsive": re.compile(r"Event loop was unresponsive"),
}


async def burst(target: Target, users: list[str], rnd: int) -> Burst:
    before = await hub_metrics(target)
    log_lines_before = len(target.logs().splitlines())
    statuses: Counter = Counter()
    start = asyncio.Event()
    people = [Person(target, u, statuses) for u in users]
    tasks = [asyncio.create_task(p.run(start)) for p in people]
    sampler = Sampler(target.hub_container)
    sampler.start()
    await asyncio.sleep(1.5)  # a baseline sample before the burst
    t0 = time.monotonic()
    start.set()
    results = await asyncio.gather(*tasks)
    wall = time.monotonic() - t0
    sampler.stop()
    await asyncio.sleep(2)  # the hub records a spawn's duration just after it answers ready
    after = await hub_metrics(target)
    new_logs = target.logs().splitlines()[log_lines_before:]
    findings = {name: sum(1 for line in new_logs if rx.search(line)) for name, rx in LOG_PATTERNS.items()}
    return Burst(
        target=target.name, users=len(users), round=rnd, results=results, statuses=statuses, wall_s=wall,
        hub_cpu_mean=statistics.mean(sampler.cpu) if sampler.cpu else float("nan"),
        hub_cpu_max=max(sampler.cpu, default=float("nan")),
        hub_mem_max=max(sampler.mem, default=float("nan")),
        machine_cpu_mean=statistics.mean(sampler.machine) if sampler.machine else float("nan"),
        spawn_hist=histogram_summary(before, after, "jupyterhub_server_spawn_duration_seconds"),
        proxy_hist=histogram_summary(before, after, "jupyterhub_proxy_add_duration_seconds"),
        log_findings=findings,
    )


async def cleanup(target: Target, users: list[str]) -> None:
    """Stop every bench user's server and delete the users (and their home volumes)."""
    headers = {"Authorization": f"token {target.admin_token}"}
    api = f"{target.base_url}/hub/api"
    async with aiohttp.ClientSession(trust_env=False, headers=headers) as s:
        sem = asyncio.Semaphore(10)

        async def stop(user: str) -> None:
            async with sem:
                async with s.delete(f"{api}/users/{user}/server", ssl=target.ssl) as r:
                    await r.read()
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                async with s.get(f"{api}/users/{user}", ssl=target.ssl) as r:
                    if r.status == 404:
                        return
                    model = await r.json()
                if not model.get("servers"):
                    break
                await asyncio.sleep(1)
            async with sem:
                async with s.delete(f"{api}/users/{user}", ssl=target.ssl) as r:
                    await r.read()

        await asyncio.gather(*(stop(u) for u in users))
    if target.volume_of:
        subprocess.run(["docker", "volume", "rm", "-f", *(target.volume_of(u) for u in users)], capture_output=True)


def pause(target: Target, paused: bool) -> None:
    target.compose("pause" if paused else "unpause")


# ---- the report ----------------------------------------------------------------------------------

def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    k = (len(values) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (k - lo)


def trio(values: list[float]) -> str:
    if not values:
        return "–"
    return f"{pct(values, 0.5):.1f} / {pct(values, 0.95):.1f} / {max(values):.1f}"


def report(bursts: list[Burst], command: str, commit: str, started: str, load: float) -> str:
    lines = [
        BEGIN,
        "## Login and spawn burst (gpuhub and the reference configuration)",
        "",
        f"`{command}`, {started}, commit {commit}, {this_machine()}; 1-minute load average before the run "
        f"{load:.2f} (other engineers share the machine).",
        "",
        "Every person logs in through the OIDC provider's form and starts a server at once (spawn form, "
        "default profile `minimal`; the reference has no form), all at the same moment; spawn is the first "
        "request after login until JupyterLab answers through the proxy. Times in seconds, p50 / p95 / max.",
        "",
        "| system | users | round | succeeded | login | spawn | total | wall | HTTP statuses | “not running” pages | hub CPU mean / max (% of a core) | hub memory max (MiB) | machine CPU mean |",  # noqa: E501
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for b in bursts:
        ok = [r for r in b.results if not r.error]
        statuses = ", ".join(f"{k}: {v}" for k, v in sorted(b.statuses.items()))
        lines.append(
            f"| {b.target} | {b.users} | {b.round} | {len(ok)}/{b.users} | {trio([r.login_s for r in ok])} "
            f"| {trio([r.spawn_s for r in ok])} | {trio([r.total_s for r in ok])} | {b.wall_s:.0f} | {statuses} "
            f"| {sum(r.not_running_pages for r in b.results)} in {sum(1 for r in b.results if r.not_running_pages)} "
            f"| {b.hub_cpu_mean:.0f} / {b.hub_cpu_max:.0f} | {b.hub_mem_max:.0f} | {b.machine_cpu_mean:.0f} % |")
    lines += ["", "“not running” pages: the spawn-pending page answered “Server not running” although the spawn had "
              "been accepted (the hub had not marked it pending yet); the client reloads each second, as a person would.",
              "", "The hub's own histograms over each burst (/hub/metrics):", ""]
    for b in bursts:
        lines.append(f"- {b.target}, {b.users} users, round {b.round}: spawn duration {b.spawn_hist}; "
                     f"proxy add {b.proxy_hist}.")
    failures = [(b, r) for b in bursts for r in b.results if r.error]
    findings = [(b, {k: v for k, v in b.log_findings.items() if v}) for b in bursts]
    lines += ["", "Hub log lines during each burst that match: "
              + "; ".join(f"{b.target} {b.users}/{b.round}: "
                          + (", ".join(f"{k} {v}" for k, v in f.items()) or "nothing") for b, f in findings) + "."]
    if failures:
        lines += ["", "Failures (first 3 per burst, and how many per step):", ""]
        for b in bursts:
            errs = [r for r in b.results if r.error]
            if errs:
                steps = Counter(r.error.split(":")[0] + ":" + r.error.split(":")[1] for r in errs)
                lines.append(f"- {b.target} {b.users}/{b.round}: " + ", ".join(f"{k} ×{v}" for k, v in steps.items()))
                for r in errs[:3]:
                    lines.append(f"  - {r.user}: {r.error}")
    pairs = {}
    for b in bursts:
        ok = [r.total_s for r in b.results if not r.error]
        pairs.setdefault(b.users, {}).setdefault(b.target, []).append(pct(ok, 0.95) if len(ok) == b.users else float("inf"))
    verdicts = []
    for n, by in sorted(pairs.items()):
        if "gpuhub" in by and "reference" in by:
            g, ref = statistics.median(by["gpuhub"]), statistics.median(by["reference"])
            if g == float("inf"):
                verdicts.append(f"{n} users: missed, not every gpuhub login got a server "
                                f"(reference: {'neither' if ref == float('inf') else f'p95 {ref:.1f} s'})")
            elif ref == float("inf"):
                served = [[r.total_s for r in b.results if not r.error] for b in bursts
                          if b.users == n and b.target == "reference"]
                over = statistics.median(pct(o, 0.95) for o in served if o) if any(served) else None
                verdicts.append(f"{n} users: gpuhub p95 total {g:.1f} s, all succeeded; the reference did not "
                                "get every login a server" + (
                                    f": over those it served its p95 is {over:.1f} s, ratio at most {g / over:.2f} "
                                    "(its failures would only raise its p95) "
                                    f"(goal ≤ 0.70: {'met' if g <= 0.7 * over else 'missed'})" if over else " (no ratio)"))
            else:
                verdicts.append(f"{n} users: gpuhub p95 total {g:.1f} s vs reference {ref:.1f} s, ratio {g / ref:.2f} "
                                f"(goal ≤ 0.70: {'met' if g <= 0.7 * ref else 'missed'})")
    if verdicts:
        lines += ["", "Goal (all succeed, no 5xx, gpuhub p95 ≤ 0.7 × the reference's, same run; median over rounds): "
                  + "; ".join(verdicts) + "."]
    lines.append(END)
    return "\n".join(lines)


# ---- main ----------------------------------------------------------------------------------------

async def run(args: argparse.Namespace) -> list[Burst]:
    workdir = Path(tempfile.mkdtemp(prefix="gpuhub-burst-"))
    targets: list[Target] = []
    bursts: list[Burst] = []
    used: list[str] = []
    try:
        if args.only in (None, "gpuhub"):
            log("starting gpuhub (test stack)")
            (workdir / "gpuhub").mkdir()
            targets.append(gpuhub_target(workdir / "gpuhub"))
        if args.only in (None, "reference"):
            log("starting the reference configuration")
            targets.append(reference_target())
        for t in targets[1:]:
            pause(t, True)
        for size, rnd in [(n, r) for n in args.users for r in range(1, args.rounds + 1)]:
            order = targets if rnd % 2 else targets[::-1]
            for t in order:
                if len(targets) > 1:
                    for other in targets:
                        pause(other, other is not t)
                users = [f"b{size}r{rnd}u{i:03d}" for i in range(size)]
                used += users
                log(f"{t.name}, round {rnd}: {size} users")
                b = await burst(t, users, rnd)
                ok = [r for r in b.results if not r.error]
                log(f"{t.name} round {rnd}: {len(ok)}/{b.users} ok, total p50/p95/max {trio([r.total_s for r in ok])}, "
                    f"statuses {dict(b.statuses)}")
                bursts.append(b)
                if args.keep_logs:
                    Path(args.keep_logs).mkdir(parents=True, exist_ok=True)
                    (Path(args.keep_logs) / f"{t.name}-{size}-r{rnd}.log").write_text(t.logs())
                    (Path(args.keep_logs) / f"{t.name}-{size}-r{rnd}.json").write_text(
                        json.dumps([dataclasses.asdict(r) for r in b.results], indent=1))
                await cleanup(t, users)
    finally:
        for t in targets:
            try:
                pause(t, False)
            finally:
                t.down()
                if t.volume_of:  # an interrupted burst skipped its cleanup
                    subprocess.run(["docker", "volume", "rm", "-f", *{t.volume_of(u) for u in used}], capture_output=True)
    return bursts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=lambda text: [int(n) for n in text.split(",")], default=[50],
                        help="people per burst; a comma-separated list runs each size in turn (e.g. 50,100)")
    parser.add_argument("--rounds", type=int, default=1, help="bursts per system, alternating which goes first")
    parser.add_argument("--only", choices=("gpuhub", "reference"))
    parser.add_argument("--keep-logs", metavar="DIR", help="write each burst's hub log and per-person results here")
    parser.add_argument("--docs", action="store_true", help=f"write the report into {DOCS.relative_to(REPO)}")
    args = parser.parse_args()
    started = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
    load = os.getloadavg()[0]
    commit = git_commit()
    command = "bench/login_burst.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    bursts = asyncio.run(run(args))
    text = report(bursts, command.strip(), commit, started, load)
    print(text)
    if args.docs:
        write_section(DOCS, BEGIN, END, text)
    record_figures(bursts)
    return 0


def record_figures(bursts: list[Burst]) -> None:
    """The harness's summary rows (bench/run_all.py): per burst size, how many got a server and the
    p95 of login-to-JupyterLab, gpuhub against the reference (median over rounds)."""
    by: dict[int, dict[str, list[Burst]]] = {}
    for b in bursts:
        by.setdefault(b.users, {}).setdefault(b.target, []).append(b)

    def cell(runs: list[Burst]) -> tuple[str, float, bool]:
        ok = [[r.total_s for r in b.results if not r.error] for b in runs]
        fine = all(len(o) == b.users for o, b in zip(ok, runs, strict=True))
        fives = sum(v for b in runs for k, v in b.statuses.items() if str(k).startswith("5"))
        p95 = statistics.median(pct(o, 0.95) for o in ok if o) if any(ok) else float("inf")
        text = (f"{sum(map(len, ok))}/{sum(b.users for b in runs)} served, p95 {p95:.1f} s, "
                f"p50 {statistics.median(statistics.median(o) for o in ok if o):.1f} s" if any(ok) else "none served")
        return text + (f", {fives} 5xx" if fives else ""), p95, fine and not fives

    for n, targets in sorted(by.items()):
        g = cell(targets["gpuhub"]) if "gpuhub" in targets else None
        r = cell(targets["reference"]) if "reference" in targets else None
        if g is None:
            continue
        ratio = g[1] / r[1] if r and r[1] not in (0, float("inf")) else None
        record("2. Login and spawn burst", f"{n} people log in through OIDC and start a server at once "
               f"(login to JupyterLab answering), {len(targets['gpuhub'])} round(s)",
               g[0] + (f" ({ratio:.2f}×)" if ratio else ""), reference=r[0] if r else "–",
               goal="all served, no 5xx, p95 ≤ 0.7× reference",
               met=g[2] and ratio is not None and ratio <= 0.7)


if __name__ == "__main__":
    sys.exit(main())
