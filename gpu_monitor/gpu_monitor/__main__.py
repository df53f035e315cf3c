"""`python -m gpu_monitor`: the monitor service (compose service `gpu-monitor`);
`python -m gpu_monitor agent`: a node's agent alone (a Swarm's `gpu-monitor-agent`, one per node).

The service reads its settings, brings the schema up to date, runs the agent of its own node
(finds the devices: NVML, or CPU slices where there is no NVIDIA driver; samples them; reports
them to the inventory), reads every node's inventory back, reconciles, and serves the API under
/services/gpu-monitor/. The agent alone does the middle part for its node, and needs only the
database. A wrong setting or a missing driver (with backend `nvml`) stops either with one line
that says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import time
from functools import partial

import sqlalchemy as sa
from jupyterhub.httpclient import JupyterHubHTTPClient

from .app import MAX_BUFFER_BYTES, MAX_READ_BYTES, make_app
from .backends.cpu_slices import CPUSliceBackend
from .backends.nvml import NVMLBackend
from .contract import ACCESS_SCOPE, SERVICE_NAME
from .devices import Backend, BackendUnavailable, Device
from .dns import connector_options
from .env import ConfigError
from .hubauth import MonitorHubOAuth
from .idle import reclaim_scope_problem
from .inventory import Inventory
from .jobs.agent import Agent
from .jobs.idle_reclaimer import HubUnreachable, IdleReclaimer, token_scopes
from .jobs.inventory_refresher import InventoryRefresher, read_swarm_nodes
from .jobs.usage_recorder import UsageRecorder
from .monitor import HostInfo, Monitor
from .policy import load_policy
from .sampler import Sampler
from .settings import Settings, load_settings
from .store import AllocationStore, session_options

log = logging.getLogger("gpu_monitor")

DB_WAIT_SECONDS = 120


def choose_backend(settings: Settings) -> tuple[Backend, list[Device], HostInfo]:
    if settings.backend in ("auto", "nvml"):
        nvml = NVMLBackend()
        try:
            devices = nvml.discover()
        except BackendUnavailable as e:
            if settings.backend == "nvml":
                raise
            log.info("no NVIDIA GPU usable (%s); handing out %d CPU slice(s) instead", e, settings.cpu_slices)
        else:
            if devices or settings.backend == "nvml":
                return nvml, devices, HostInfo("nvml", nvml.driver_version, nvml.cuda_driver_version)
            nvml.close()
    slices = CPUSliceBackend(settings.cpu_slices)
    return slices, slices.discover(), HostInfo("cpu-slices")


def database_url(settings: Settings) -> sa.URL:
    return sa.URL.create("postgresql+psycopg2", username=settings.db_user,
                         password=settings.read_db_password(), host=settings.db_host, port=5432,
                         database=settings.db_name, query={"connect_timeout": "10"})


def open_store(settings: Settings) -> AllocationStore:
    store = AllocationStore.from_url(database_url(settings), pool_size=10, max_overflow=10)
    deadline = time.monotonic() + DB_WAIT_SECONDS
    while True:
        try:
            applied = store.migrate()
            log.info("database ready (schema steps applied now: %s)", applied or "none")
            return store
        except sa.exc.OperationalError as e:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for PostgreSQL at %s: %s", settings.db_host, str(e.orig).strip().splitlines()[0])
            time.sleep(2)


async def check_reclaim_scope(hub_api_url: str, token: str) -> None:
    """With idle reclaim on, refuse to start beside a hub that has not given this token the
    scope to stop servers (it read an older policy). A hub that does not answer yet (the first
    `up` starts the monitor before the hub) is asked again before any notice (jobs/idle_reclaimer.py)."""
    try:
        scopes = await token_scopes(hub_api_url, token, timeout=5)
    except HubUnreachable as e:
        log.info("idle reclaim: the hub does not answer yet (%s); its scopes are checked before any notice", e)
        return
    problem = reclaim_scope_problem(scopes)
    if problem:
        raise ConfigError("GPUHUB_POLICY", problem)


async def serve(settings: Settings) -> None:
    import docker

    from .jobs.reconciler import Reconciler

    # HubOAuth asks the hub through JupyterHub's HTTP client (its one instance's options, set
    # before its first request): names resolved afresh (gpu_monitor.dns)
    JupyterHubHTTPClient.instance().connector_options = connector_options()
    policy = load_policy(settings.policy_file)
    token = settings.read_api_token()
    if policy.idle_reclaim.enabled:
        await check_reclaim_scope(settings.hub_api_url, token)
    backend, devices, host = choose_backend(settings)
    for d in devices:
        log.info("device %d: %s %s (%s)", d.index, d.kind, d.uuid, d.name)
    store = open_store(settings)
    sampler = Sampler(backend, settings.sample_seconds)
    sampler.start()
    inventory = Inventory(store.engine)
    agent = make_agent(settings, inventory, host, devices, sampler)
    await agent.register()
    monitor = Monitor([], host, store, policy.allocation, nodes=[])
    docker_client = docker.DockerClient(base_url=settings.docker_url)
    refresher = InventoryRefresher(monitor, inventory, settings.sample_seconds, settings.node_timeout_seconds,
                                   partial(read_swarm_nodes, docker_client) if settings.swarm else None)
    await refresher.refresh()  # the API starts knowing the devices
    usage = UsageRecorder(monitor, settings.flush_seconds)
    log.info("policy from %s: %s; idle reclaim %s", settings.policy_file, policy.allocation,
             "on" if policy.idle_reclaim.enabled else "off")
    prefix = settings.service_prefix
    hub_auth = MonitorHubOAuth.instance(
        api_token=token,
        api_url=settings.hub_api_url,
        hub_prefix="/hub/",
        base_url=prefix,
        oauth_client_id=f"service-{SERVICE_NAME}",
        oauth_redirect_uri=f"{prefix}oauth_callback",
        access_scopes={ACCESS_SCOPE},
        cache_max_age=300,  # as JupyterHub's own default; refusals: MonitorHubOAuth
        cookie_host_prefix_enabled=settings.user_subdomains,
    )
    app = make_app(monitor, hub_auth, prefix, cookie_secret=os.urandom(32))
    server = app.listen(settings.port, xheaders=True, max_body_size=MAX_READ_BYTES,
                        max_buffer_size=MAX_BUFFER_BYTES)
    log.info("serving %s on port %d (this node: %s, backend %s, %d device(s))", prefix, settings.port,
             settings.node_name, host.backend, len(devices))
    reconciler = Reconciler(monitor, docker_client, settings.hub_api_url,
                            token, settings.reconcile_seconds, settings.grace_seconds, settings.deployment,
                            settings.node_name)
    idle = IdleReclaimer(monitor, policy.idle_reclaim, settings.hub_api_url, token,
                         interval=min(30.0, settings.reconcile_seconds))
    tasks = [asyncio.create_task(agent.run_forever()), asyncio.create_task(refresher.run_forever()),
             asyncio.create_task(reconciler.run_forever()), asyncio.create_task(usage.run_forever()),
             asyncio.create_task(idle.run_forever())]
    await until_stopped()
    for task in tasks:
        task.cancel()
    try:
        await usage.flush()  # what was measured since the last write
    except Exception:  # noqa: BLE001 - stopping anyway
        log.exception("could not write the last usage")
    server.stop()
    sampler.stop()
    backend.close()
    monitor.close()
    store.dispose()


async def until_stopped() -> None:
    """Return on SIGTERM (docker stop) or SIGINT."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")


def make_agent(settings: Settings, inventory: Inventory, host: HostInfo, devices: list[Device],
               sampler: Sampler) -> Agent:
    if settings.node_labels:
        log.info("node %s labels: %s", settings.node_name,
                 ", ".join(f"{k}={v}" for k, v in sorted(settings.node_labels.items())))
    return Agent(inventory, settings.node_name, socket.gethostname(), settings.node_labels, host, devices,
                 sampler.states, settings.sample_seconds)


async def run_agent(settings: Settings) -> None:
    """A node's agent alone: its devices into the inventory the monitor's API reads, and their
    readings every sampling interval. Waits for the database and for the monitor to have made
    the schema."""
    backend, devices, host = choose_backend(settings)
    for d in devices:
        log.info("device %d: %s %s (%s)", d.index, d.kind, d.uuid, d.name)
    engine = sa.create_engine(database_url(settings), pool_size=2, pool_pre_ping=True,
                              connect_args=session_options())
    sampler = Sampler(backend, settings.sample_seconds)
    sampler.start()
    agent = make_agent(settings, Inventory(engine), host, devices, sampler)
    deadline = time.monotonic() + DB_WAIT_SECONDS
    while True:
        try:
            await agent.register()
            break
        except (sa.exc.OperationalError, sa.exc.ProgrammingError) as e:
            if time.monotonic() > deadline:
                raise
            log.info("waiting for PostgreSQL at %s and the monitor's schema: %s", settings.db_host,
                     str(e.orig).strip().splitlines()[0])
            await asyncio.sleep(2)
    task = asyncio.create_task(agent.run_forever())
    await until_stopped()
    task.cancel()
    sampler.stop()
    backend.close()
    engine.dispose()


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args = sys.argv[1:] if argv is None else argv
    if args not in ([], ["agent"]):
        print("usage: python -m gpu_monitor [agent]", file=sys.stderr)
        return 2
    try:
        settings = load_settings()
        asyncio.run(run_agent(settings) if args == ["agent"] else serve(settings))
    except ConfigError as e:
        print(f"gpu-monitor: configuration error: {e}", file=sys.stderr)
        return 1
    except BackendUnavailable as e:
        print(f"gpu-monitor: no devices: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
