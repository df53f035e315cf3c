"""`python -m gpu_monitor`: the monitor service (compose service `gpu-monitor`).

Reads its settings, finds the devices (NVML, or CPU slices where there is no NVIDIA driver),
brings the allocation schema up to date, starts sampling and reconciliation, and serves the
API under /services/gpu-monitor/. A wrong setting or a missing driver (with backend `nvml`)
stops it with one line that says what to fix.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time

import sqlalchemy as sa

from .app import MAX_BUFFER_BYTES, MAX_READ_BYTES, make_app
from .backends.cpu_slices import CPUSliceBackend
from .backends.nvml import NVMLBackend
from .contract import ACCESS_SCOPE, SERVICE_NAME
from .devices import LOCAL_NODE, Backend, BackendUnavailable, Device, Node
from .env import ConfigError
from .hubauth import MonitorHubOAuth
from .idle import reclaim_scope_problem
from .jobs.idle_reclaimer import HubUnreachable, IdleReclaimer, token_scopes
from .jobs.usage_recorder import UsageRecorder
from .monitor import HostInfo, Monitor
from .policy import load_policy
from .sampler import Sampler
from .settings import Settings, load_settings
from .store import AllocationStore

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


def open_store(settings: Settings) -> AllocationStore:
    url = sa.URL.create("postgresql+psycopg2", username=settings.db_user,
                        password=settings.read_db_password(), host=settings.db_host, port=5432,
                        database=settings.db_name, query={"connect_timeout": "10"})
    store = AllocationStore.from_url(url, pool_size=10, max_overflow=10)
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
    monitor = Monitor(devices, host, sampler, store, policy.allocation,
                      nodes=[Node(LOCAL_NODE, labels=settings.node_labels)])
    usage = UsageRecorder(monitor, settings.flush_seconds)
    if settings.node_labels:
        log.info("node labels: %s", ", ".join(f"{k}={v}" for k, v in sorted(settings.node_labels.items())))
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
    log.info("serving %s on port %d (backend %s, %d device(s))", prefix, settings.port, host.backend, len(devices))
    reconciler = Reconciler(monitor, docker.DockerClient(base_url=settings.docker_url), settings.hub_api_url,
                            token, settings.reconcile_seconds, settings.grace_seconds, settings.deployment)
    idle = IdleReclaimer(monitor, policy.idle_reclaim, settings.hub_api_url, token,
                         interval=min(30.0, settings.reconcile_seconds))
    tasks = [asyncio.create_task(reconciler.run_forever()), asyncio.create_task(usage.run_forever()),
             asyncio.create_task(idle.run_forever())]
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
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


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = load_settings()
        asyncio.run(serve(settings))
    except ConfigError as e:
        print(f"gpu-monitor: configuration error: {e}", file=sys.stderr)
        return 1
    except BackendUnavailable as e:
        print(f"gpu-monitor: no devices: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
