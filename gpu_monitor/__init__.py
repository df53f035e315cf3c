"""gpuhub's GPU monitor: discovers devices, allocates them to servers by UUID, samples their use.

This package is the monitor's core: shared types (`devices.py`), device backends (`backends/`),
the sampler (`sampler.py`), the allocation policy (`allocator.py`), its PostgreSQL store
(`store.py`), reconciliation planning (`reconcile.py`) and the Prometheus collector
(`metrics.py`). The service around them (HTTP API with
the hub's auth, reconciliation with Docker, the compose service) is still to be built.
"""
