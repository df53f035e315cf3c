# The single-user images, one stage each, built by docker-compose.yml with `target:`:
#   base   -> gpuhub/singleuser-base    Python, JupyterLab, the JupyterHub single-user server,
#                                       resource usage and GPU views (files in images/base/)
#   opencl -> gpuhub/singleuser-opencl  PyOpenCL, the ICD loader, NVIDIA's ICD file, PoCL (images/opencl/)
#   cuda   -> gpuhub/singleuser-cuda    CuPy and PyTorch with CUDA from the wheels (images/cuda/)
# One file rather than FROM gpuhub/singleuser-base in each folder: Docker 20.10's builder cannot
# order builds across images (no named build contexts), and stages share the base's layers.
# Every stage runs as the unprivileged user jovyan (uid 1000) in /home/jovyan; none sets
# NVIDIA_VISIBLE_DEVICES (the spawner sets it per container).
ARG BASE_IMAGE=debian:bookworm-slim

# ------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS base

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash jovyan

ENV PATH=/opt/jupyter/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY base/requirements.txt /tmp/requirements.txt
# An extra CA bundle (BuildKit secret "ca") is used only where outbound TLS is re-signed by a
# local CA; with no secret the build uses the image's own trust store.
# rfc3987-syntax (and its parser library lark) come with jupyter-events' jsonschema[format-nongpl]
# only to check the "iri" string format; it builds a grammar when imported, ~0.7 s of every
# server start, and jsonschema skips that one format check without it.
# aiodns (and its pycares) come with jupyterhub only for aiohttp, which then resolves names with
# c-ares; c-ares keeps an answer for the TTL Docker's DNS gives, 600 s. On a swarm the hub's name
# is its task's address, so after the hub was restarted a server asked the old address whether a
# login was valid for up to ten minutes. Without aiodns, aiohttp asks getaddrinfo each time
# (found 2026-12-07; the hub and the monitor configure the same: gpu_monitor/gpu_monitor/dns.py).
RUN --mount=type=secret,id=ca \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m venv /opt/jupyter \
 && pip install -r /tmp/requirements.txt \
 && pip uninstall -y rfc3987-syntax lark aiodns pycares \
 && rm /tmp/requirements.txt \
 && find /opt/jupyter -name __pycache__ -prune -exec rm -rf {} +
# Site defaults for JupyterLab (no prompt about fetching news from the internet).
COPY base/overrides.json /opt/jupyter/share/jupyter/lab/settings/overrides.json
# Bytecode for the server's start-up imports only (see the script); every stage runs it again
# after its own clean-up of bytecode caches.
COPY base/precompile.py /opt/gpuhub/precompile.py
RUN python /opt/gpuhub/precompile.py

USER 1000
WORKDIR /home/jovyan
ENV HOME=/home/jovyan SHELL=/bin/bash
EXPOSE 8888
ENTRYPOINT ["tini", "-g", "--"]
CMD ["jupyterhub-singleuser"]

# ------------------------------------------------------------------------------------------
FROM base AS opencl
USER root
# The ICD loader and PoCL (OpenCL on the CPU) from Debian; PoCL's clang/LLVM are its kernel
# compiler and cannot go. NVIDIA's OpenCL library is mounted by the container toolkit with the
# `compute` capability, but its ICD file is not reliably created: ship it. Removed in the same
# layer (~31 MB, nothing PoCL loads): LLVM's static archives (Polly's, for linking LLVM tools)
# and GCC's sanitizer runtimes (asan, tsan, ubsan...), which only instrumented programs load.
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      ocl-icd-libopencl1 pocl-opencl-icd clinfo \
 && rm -rf /var/lib/apt/lists/* /usr/share/doc /usr/share/man \
 && rm -f /usr/lib/llvm-*/lib/*.a /usr/lib/*-linux-gnu/lib*san.so.*
COPY opencl/nvidia.icd /etc/OpenCL/vendors/nvidia.icd
COPY opencl/requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca; then export PIP_CERT=/run/secrets/ca; fi \
 && PYTHONDONTWRITEBYTECODE=1 pip install --no-compile -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt \
 && python /opt/gpuhub/precompile.py
COPY opencl/smoke/ /opt/gpuhub/smoke/
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    POCL_CACHE_DIR=/tmp/pocl-cache
USER 1000

# ------------------------------------------------------------------------------------------
FROM base AS cuda
# CuPy and PyTorch with CUDA's runtime libraries from PyPI's nvidia-* wheels, one copy shared
# by both (no CUDA toolkit in the image; the host driver comes in through the NVIDIA container
# toolkit). CUDA_MAJOR picks the pinned set: 13 (driver >= 580) or 12 (CUDA 12 drivers).
ARG CUDA_MAJOR=13
LABEL org.gpuhub.cuda-major=$CUDA_MAJOR
# The toolkit mounts the driver's compute (libcuda, PTX JIT) and utility (nvidia-smi, NVML)
# parts. NVIDIA_VISIBLE_DEVICES is deliberately not set: the spawner sets it per container.
ENV NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    GPUHUB_CUDA_MAJOR=$CUDA_MAJOR
USER root
COPY cuda/requirements-cuda12.txt cuda/requirements-cuda13.txt /tmp/cuda/
# One layer, so what is removed never reaches the image: no bytecode written at install
# (the base's start-up bytecode stays; deleting it here would store it twice) and the
# static libraries (*_static.a: CUPTI/nvperf copies in Triton's profiler, libcudart_static),
# which only a linker reads; nothing loads them at run time. Shared libraries, headers (CuPy's
# and Triton's JIT compile against them) and tests are kept.
RUN --mount=type=secret,id=ca \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca; then export PIP_CERT=/run/secrets/ca; fi \
 && req=/tmp/cuda/requirements-cuda${CUDA_MAJOR}.txt \
 && { test -f "$req" || { echo "CUDA_MAJOR must be 12 or 13, not '${CUDA_MAJOR}'" >&2; exit 1; }; } \
 && PYTHONDONTWRITEBYTECODE=1 pip install --no-compile -r "$req" \
 && rm -rf /tmp/cuda \
 && find /opt/jupyter/lib -name 'lib*_static.a' -delete \
 && python /opt/gpuhub/precompile.py
COPY cuda/smoke/ /opt/gpuhub/smoke/
USER 1000
