"""gpuhub's GPU monitor: discovers devices, allocates them to servers by UUID, samples their use.

The core: shared types (`devices.py`), device backends (`backends/`: NVML, CPU slices, OpenCL
discovery), the sampler (`sampler.py`), the allocation policy (`allocator.py`), its PostgreSQL
store (`store.py`), reconciliation planning (`reconcile.py`) and the Prometheus collector
(`metrics.py`). The service: settings (`settings.py`), the HTTP API with the hub's auth
(`app.py`), reconciliation with Docker and the hub (`reconciler.py`), `python -m gpu_monitor`.
"""
