# The reference's small JupyterLab image: what the upstream packages give with their defaults
# (as jupyter/docker-stacks' base-notebook, without conda): JupyterLab and the JupyterHub
# single-user server in a virtualenv, installed by pip as it installs by default (bytecode
# compiled at install), run as jovyan (uid 1000) with `jupyterhub-singleuser`. Built from the
# same local base image as gpuhub's images; same package versions as gpuhub's base image.
# What gpuhub's own image does beyond this (images/singleuser.Dockerfile: start-up bytecode
# only, rfc3987-syntax removed) is part of what the benchmark compares.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      python3 python3-venv ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 1000 --shell /bin/bash jovyan

ENV PATH=/opt/jupyter/bin:$PATH \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

COPY singleuser-requirements.txt /tmp/requirements.txt
RUN --mount=type=secret,id=ca \
    if grep -qs "BEGIN CERTIFICATE" /run/secrets/ca; then export PIP_CERT=/run/secrets/ca; fi \
 && python3 -m venv /opt/jupyter \
 && pip install -r /tmp/requirements.txt \
 && rm /tmp/requirements.txt

USER 1000
WORKDIR /home/jovyan
ENTRYPOINT ["tini", "-g", "--"]
CMD ["jupyterhub-singleuser"]
