"""What the hub and the GPU monitor must agree on, named once.

The monitor owns its API and the labels it reads from Docker; the hub (gpuhub.configure,
gpuhub.spawner) is its client and imports these names from here. Nothing in this module
imports anything: the hub image carries the gpu_monitor package for it (and for the policy's
one parser, gpu_monitor.policy) without needing the monitor's dependencies.
"""

from __future__ import annotations

# The monitor is a JupyterHub service of this name, served under SERVICE_PREFIX.
SERVICE_NAME = "gpu-monitor"
SERVICE_PREFIX = f"/services/{SERVICE_NAME}/"
# Custom scopes the hub defines (gpuhub.configure) and the monitor checks.
SCOPE_ALLOCATE = f"custom:{SERVICE_NAME}:allocate"  # allocate and release devices
SCOPE_READ_ALL = f"custom:{SERVICE_NAME}:read-all"  # everyone's allocations, metrics, accounting
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"

# Labels on every user container (set by the spawner). The monitor rebuilds its view of the
# host from them: a container list carries labels, so it never needs to inspect a container.
LABEL_PREFIX = "org.gpuhub"
LABEL_DEPLOYMENT = f"{LABEL_PREFIX}.deployment"  # which gpuhub started it (several may share a daemon)
LABEL_USER = f"{LABEL_PREFIX}.user"
LABEL_SERVER = f"{LABEL_PREFIX}.server"
LABEL_PROFILE = f"{LABEL_PREFIX}.profile"
LABEL_GPUS = f"{LABEL_PREFIX}.gpus"
# only on containers holding devices: the allocation's id, and its device UUIDs in its order
LABEL_ALLOCATION = f"{LABEL_PREFIX}.allocation"
LABEL_DEVICES = f"{LABEL_PREFIX}.devices"
# on a single-user image: the CUDA major version it was built for
LABEL_CUDA_MAJOR = f"{LABEL_PREFIX}.cuda-major"
