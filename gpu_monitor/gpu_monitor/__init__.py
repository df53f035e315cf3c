"""gpuhub's GPU monitor: discovers devices, allocates them to servers by UUID, samples their use.

Decisions, pure (they decide from what they are given: no clock, database, Docker or HTTP):

- `allocator.py`: `decide()`, who gets which device; `Refused` says why not
- `reconcile.py`: `plan()`, which allocations no container holds any more
- `idle.py`: `idle_step()`, which idle servers get a notice or are stopped; `Notices`
- `accounting.py`: `account()`, GPU-hours and idle time per user or group
- `policy.py`: the operator's policy file, validated (reads only that file)

Shared types and state:

- `devices.py`: `Device`, `Sample`, the `Backend` protocol
- `contract.py`: what the hub and the monitor agree on (service name, scopes, labels)
- `env.py`: how a setting is declared and read (`Setting`, parsers, `ConfigError`), for both services
- `settings.py`: every setting from the environment, read once
- `monitor.py`: `Monitor`, what the handlers and the jobs share; `HostInfo`

I/O around them:

- `backends/`: devices and samples from NVML, CPU slices, OpenCL (discovery only)
- `sampler.py`: samples the backend in a thread; cumulative busy and sampled seconds
- `store.py`: allocations, usage and history in PostgreSQL; `migrations/`: its schema's Alembic revisions
- `batcher.py`: group commit of allocation requests into one transaction
- `metrics.py`: the Prometheus collector, read at scrape time
- `jobs/`: the background loops (reconciler, idle reclaimer, usage recorder)

The HTTP service:

- `app.py`: the tornado application and its routes (`make_app`)
- `handlers/`: one module per resource, and `base.py`
- `requests.py`: the body of `POST api/allocations`, parsed strictly
- `hubauth.py`: `MonitorHubOAuth`, the hub's authentication
- `openapi.yaml`: the API, described (fuzzed from it in the docker tier)
- `dashboard.py`, `static/`: the dashboard page
- `__main__.py`: `python -m gpu_monitor`, the wiring
"""
