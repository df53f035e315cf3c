"""gpuhub's GPU monitor: discovers devices, allocates them to servers by UUID, samples their use.

This package is the monitor's core: device backends (`backends/`), the allocation policy
(`allocator.py`) and the shared types (`devices.py`). The service around it (store in
PostgreSQL, HTTP API, reconciliation with Docker, metrics) is built on these.
"""
