"""GPUDockerSpawner: DockerSpawner that starts a declared profile, and nothing else.

What it adds to DockerSpawner:
- a spawn form listing the profiles from `config/profiles.yaml` and a GPU-count choice, from a
  Jinja2 template (templates/options_form.html) that a site may replace or extend;
- validation of `user_options` (form or REST API) before any container exists: an unknown
  profile, a bad GPU count or an attempt to name an image is an HTTP 400 with a sentence;
- per-container settings from the profile (image, CPU/memory/shm/pids limits), hardening that
  does not depend on the profile (no capabilities, no-new-privileges), an explicit
  `NVIDIA_VISIBLE_DEVICES` so no daemon or image default can hand out GPUs, and labels that
  record user, server and profile so the stack can rebuild its view from Docker;
- devices from the GPU monitor (its API through gpuhub.monitor_client): when the server's turn
  to start comes (so that seconds, not minutes in a queue, pass between allocating and creating
  the container) the spawner asks the monitor for the GPUs (or, on a host without GPUs, CPU
  slices) the person chose, gives the container exactly those (Docker device requests by UUID,
  or a cpuset), records the allocation in its state and in labels, and releases it after every
  stop, failed start or cancelled start, but only once Docker confirms that the container is
  not running: a container that will not stop keeps its devices, and its allocation stays in
  the state for the monitor's reconciliation to settle;
- a read-only root filesystem, with size-limited tmpfs for /tmp and /var/tmp: what a person
  writes goes to their home volume or to memory, never to the host's disk;
- a CUDA image newer than the host's driver (as the monitor's api/host reports it) is refused
  with both versions named;
- a start queue (gpuhub.start_queue): at most `start_concurrency` servers start at once
  (container created until the server answers), the others wait their turn, so a burst of
  logins on a small host does not start every container at once and fail them all on the
  hub's http_timeout;
- progress messages for the spawn page, step by step.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import inspect
from pathlib import Path
from typing import Any

import docker.errors
import jinja2
from dockerspawner import DockerSpawner
from tornado import web
from tornado.httpclient import AsyncHTTPClient, HTTPClientError
from traitlets import Any as AnyTrait
from traitlets import Float, Integer, List, Unicode, default

from gpu_monitor.contract import (
    LABEL_ALLOCATION,
    LABEL_CUDA_MAJOR,
    LABEL_DEPLOYMENT,
    LABEL_DEVICES,
    LABEL_GPUS,
    LABEL_PROFILE,
    LABEL_SERVER,
    LABEL_USER,
)

from .monitor_client import AllocationRequest, Devices, Host, MonitorClient, MonitorUnavailable, Refusal
from .profiles import Choice, OptionsError, Profile, Profiles, resolve_options, size_in_bytes
from .start_queue import hub_start_queue

GPU_KINDS = ("gpu", "mig")

# Where a read-only container may still write (besides the home volume and /dev/shm): programs
# expect a writable /tmp (PoCL's kernel cache, Triton's and PyTorch's compile caches, pip) and
# some /var/tmp. Not noexec: those caches hold compiled code that is loaded from there.
TMPFS_PATHS = ("/tmp", "/var/tmp")

# The spawn form's template, shipped in the package; a site's own directories are searched first.
OPTIONS_FORM_TEMPLATE = "options_form.html"
TEMPLATES = Path(__file__).resolve().parent / "templates"


def cuda_refusal(profile: str, image: str, image_cuda_major: str | None, host: Host) -> str | None:
    """Why a profile's CUDA image cannot run on this host's driver, or None if it can.

    `host` is the monitor's host record: backend, driver_version, cuda_driver_version ("12.4").
    No NVIDIA driver (CPU slices) or an image without the label: nothing to refuse.
    """
    host_cuda = host.cuda_driver_version
    if not image_cuda_major or not host_cuda:
        return None
    try:
        needed = int(image_cuda_major)
        host_major = int(str(host_cuda).split(".")[0])
    except ValueError:
        return None
    if needed <= host_major:
        return None
    return (
        f"Profile {profile!r} uses {image}, built for CUDA {needed}, but this host's NVIDIA driver "
        f"{host.driver_version or '(version unknown)'} supports CUDA up to {host_cuda}. "
        f"Ask the operator to update the driver or to build the image with GPUHUB_CUDA_MAJOR={host_major}."
    )


def allocation_container_settings(allocation: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """What a container needs to hold exactly the allocated devices: (host config, environment).

    GPUs and MIG instances: a Docker device request naming their ids (never `count`, which
    always means GPUs 0..N-1) and NVIDIA_/CUDA_VISIBLE_DEVICES set to the same ids. CPU slices:
    the cores as a cpuset, PoCL told how many compute units it has, and no GPU.
    """
    devices = allocation["devices"]
    uuids = [d["uuid"] for d in devices]
    env = {"GPUHUB_ALLOCATION": allocation["id"], "GPUHUB_DEVICES": ",".join(uuids)}
    host: dict[str, Any] = {}
    gpus = [d.get("docker_device_id") or d["uuid"] for d in devices if d.get("kind") in GPU_KINDS]
    slices = [d for d in devices if d.get("kind") == "cpu-slice"]
    if gpus:
        host["device_requests"] = [{"driver": "nvidia", "device_ids": gpus, "capabilities": [["gpu"]]}]
        env["NVIDIA_VISIBLE_DEVICES"] = ",".join(gpus)
        env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    else:
        env["NVIDIA_VISIBLE_DEVICES"] = "void"
        env["CUDA_VISIBLE_DEVICES"] = ""
    if slices:
        host["cpuset_cpus"] = ",".join(d["cpuset"] for d in slices)
        cores = str(sum(int(d.get("cores") or 0) for d in slices))
        # PoCL 3 (Debian 12) reads POCL_MAX_PTHREAD_COUNT, PoCL 4+ POCL_CPU_MAX_CU_COUNT
        env["POCL_MAX_PTHREAD_COUNT"] = env["POCL_CPU_MAX_CU_COUNT"] = cores
    return host, env


async def wait_until_answering(url: str, timeout: float, interval: float) -> bool:
    """Poll `url` every `interval` seconds until it answers with a status below 500 (any page,
    even 404: the server is up) or `timeout` passes. True if it answered."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    client = AsyncHTTPClient()
    while True:
        try:
            response = await client.fetch(url, raise_error=False, follow_redirects=False,
                                          request_timeout=max(1.0, interval))
            if response.code < 500:
                return True
        except (OSError, HTTPClientError):  # not listening yet
            pass
        if loop.time() + interval > deadline:
            return False
        await asyncio.sleep(interval)


def tmpfs_options(size: str) -> str:
    """Mount options of a tmpfs anyone in the container may write to, at most `size` ("1G").
    `exec` is explicit: Docker mounts a tmpfs noexec unless told, and PoCL dlopen()s the kernels
    it compiles into its cache there ("failed to map segment from shared object")."""
    return f"rw,exec,nosuid,nodev,size={size_in_bytes(size)},mode=1777"


@functools.lru_cache(maxsize=8)
def form_templates(site_paths: tuple[str, ...]) -> jinja2.Environment:
    """Templates from `site_paths` (in order), then the package's own; the package's also as
    "gpuhub/<name>", so that a site's template can extend the one it replaces."""
    loader = jinja2.ChoiceLoader([
        jinja2.FileSystemLoader([*site_paths, str(TEMPLATES)]),
        jinja2.PrefixLoader({"gpuhub": jinja2.FileSystemLoader(str(TEMPLATES))}),
    ])
    return jinja2.Environment(loader=loader, autoescape=True, trim_blocks=True, lstrip_blocks=True)


def _label_value(text: str) -> str:
    # DockerSpawner renders extra_create_kwargs with str.format: keep braces literal.
    return text.replace("{", "{{").replace("}", "}}")


class GPUDockerSpawner(DockerSpawner):
    profiles = AnyTrait(
        config=True,
        help="""The gpuhub.profiles.Profiles a person may choose from (loaded from config/).""",
    )

    monitor_url = Unicode(
        "",
        config=True,
        help="""Base URL of the GPU monitor service's API, ending in /services/gpu-monitor/.
        Empty: no monitor, and any request for a GPU is refused with a message.""",
    )

    monitor_token = Unicode(
        "",
        config=True,
        help="""The hub's API token for the monitor (scope custom:gpu-monitor:allocate).""",
    )

    monitor_timeout = Float(
        20,
        config=True,
        help="""Seconds to wait for the GPU monitor's answer to one request. No answer in time: the
        spawn is refused with HTTP 503 (try again) before any container exists; a grant whose
        answer was lost is held by no container, and the monitor's reconciliation frees it.""",
    )

    deployment = Unicode(
        "gpuhub",
        config=True,
        help="""Name of this gpuhub deployment (GPUHUB_DEPLOYMENT, by default the Compose project's
        name), put on every user container as the label org.gpuhub.deployment so that the GPU
        monitor counts only its own deployment's containers when several share a Docker daemon.""",
    )

    docker_settle_timeout = Float(
        120,
        config=True,
        help="""After a failed or cancelled start, how long to wait for this server's Docker calls
        still running (a `docker start` already sent cannot be called back) before checking
        that its container is gone. If they have not finished by then, the container cannot be
        confirmed gone and its devices stay allocated; the GPU monitor's reconciliation frees
        them once no running container holds them.""",
    )

    allocation_id = Unicode("", help="The GPU monitor's allocation this server holds ('' if none).")

    additional_options_form_template_paths = List(
        Unicode(),
        config=True,
        help="""Directories searched, in this order, for the spawn form's template
        (options_form.html) before the one gpuhub ships in gpuhub/templates/. A site's own
        options_form.html replaces gpuhub's; it may also extend it ({% extends
        "gpuhub/options_form.html" %}) and replace a block. Either way the form must send a radio
        `profile` and a select `gpus-<profile name>`; the shipped template lists the variables.""",
    )

    start_concurrency = Integer(
        0,
        config=True,
        help="""How many servers of this hub may be starting at the same time, from creating the
        container until the server answers HTTP; the others wait their turn, in order, with a
        message on the spawn page. 0: no limit (DockerSpawner's behaviour).

        Starting a server is mostly CPU (Python imports JupyterServer and JupyterLab). When many
        people log in at once on a small host, starting every container at once makes them share
        the CPUs: they all answer late, and the hub's http_timeout fails many of them. In turn,
        each gets the CPUs nearly to itself and answers within seconds. The wait counts
        against start_timeout: raise it with the expected queue.""",
    )

    # Per server (replaced, never mutated, so these class-level defaults are never shared):
    _docker_calls: frozenset[concurrent.futures.Future] = frozenset()  # see docker()
    _image_present = ""  # the image this start has pulled or found present
    _container_touched = False  # this start has asked DockerSpawner for a container
    _allocation_outlives_server = False  # kept for a container not confirmed gone

    ready_poll_interval = Float(
        0.1,
        config=True,
        help="""Seconds between checks whether a new container's server answers, before start()
        returns. JupyterHub's own check after start() backs off exponentially with random
        jitter (waits of up to 0.2, 0.4, 0.8, 1.6, 3.2 s): a server ready after ~1 s was noticed
        up to a second or more later. With a short fixed interval here, the hub's first check
        succeeds. 0 turns this off (the hub's back-off alone).""",
    )

    # ---- the GPU monitor ------------------------------------------------------------------------

    @property
    def monitor(self) -> MonitorClient:
        """The monitor's API (made on each use: the traits may change, and it holds nothing)."""
        return MonitorClient(self.monitor_url, self.monitor_token, self.monitor_timeout)

    # ---- the spawn form -----------------------------------------------------------------------

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    async def _render_options_form(self, spawner: GPUDockerSpawner) -> str:
        profiles: Profiles = self.profiles
        total = 0
        devices: Devices | None = None
        if not self.monitor_url:
            notice = "This hub has no GPU monitor: servers start without GPUs."
        else:
            try:
                devices = await self.monitor.devices()
            except MonitorUnavailable as e:
                self.log.warning("spawn form for %s: %s", self.user.name, e)
                notice = "The GPU monitor is not answering right now: only servers without GPUs can start."
            else:
                total = devices.total
                cpu = devices.host.backend == "cpu-slices"
                what = "CPU slices (this host has no NVIDIA GPU; OpenCL runs on PoCL)" if cpu else "GPUs"
                notice = f"{devices.free} of {total} {what} free right now."
        template = form_templates(tuple(self.additional_options_form_template_paths)).get_template(
            OPTIONS_FORM_TEMPLATE)
        # no more GPUs than one node (of the profile's kind) has: a server runs on one node; none
        # for a profile whose kind of node no node is; 0 (no GPU) always
        limit = {p.name: devices.largest_node(dict(p.node_labels)) if devices else 0 for p in profiles.profiles}
        for p in profiles.profiles:
            if p.node_labels and devices is not None and not devices.has_node(dict(p.node_labels)):
                self._warn_no_node(p)
        return template.render(
            notice=notice,
            devices=devices,
            profiles=profiles.profiles,
            default_profile=profiles.default,
            gpu_choices={p.name: [n for n in p.gpus if n <= limit[p.name] or n == 0] for p in profiles.profiles},
        )

    def _warn_no_node(self, profile: Profile) -> None:
        warn_no_node(self.log, profile)

    def options_from_form(self, formdata: dict[str, list[str]]) -> dict[str, Any]:
        profile = (formdata.get("profile") or [""])[0]
        options: dict[str, Any] = {"profile": profile}
        gpus = formdata.get(f"gpus-{profile}")
        if gpus:
            options["gpus"] = gpus[0]
        return options

    @default("apply_user_options")
    def _default_apply_user_options(self):
        return GPUDockerSpawner._apply_choice

    def _apply_choice(self, user_options: dict[str, Any]) -> None:
        try:
            choice = resolve_options(self.profiles, user_options)
        except OptionsError as e:
            raise web.HTTPError(400, str(e)) from None
        if choice.gpus and not self.monitor_url:
            raise web.HTTPError(
                400, f"{choice.gpus} GPU(s) requested, but this hub has no GPU monitor to allocate them")
        # store the normalised choice so the hub's records say what actually started
        self.user_options = {"profile": choice.profile.name, "gpus": choice.gpus}
        self._configure_for(choice)

    def _configure_for(self, choice: Choice) -> None:
        profile = choice.profile
        self.image = profile.image
        if profile.cpu_limit is not None:
            self.cpu_limit = profile.cpu_limit
        if profile.mem_limit is not None:
            self.mem_limit = profile.mem_limit
        host_config: dict[str, Any] = {
            "cap_drop": ["ALL"],
            "security_opt": ["no-new-privileges:true"],
            "pids_limit": profile.pids_limit,
            # A writable root filesystem lives on the host's disk, with no limit: one person
            # could fill it for everyone. Writes go to the home volume or to these tmpfs, whose
            # pages count against the container's memory limit.
            "read_only": True,
            "tmpfs": {path: tmpfs_options(profile.tmp_size) for path in TMPFS_PATHS},
        }
        if profile.shm_size:
            host_config["shm_size"] = profile.shm_size
        self.extra_host_config = host_config
        self.environment = {
            **self.environment,
            # explicit, whatever the image or the daemon's default runtime says
            "NVIDIA_VISIBLE_DEVICES": "void",
            "CUDA_VISIBLE_DEVICES": "",
            "GPUHUB_PROFILE": profile.name,
        }
        self.extra_create_kwargs = {
            "labels": {
                # Compose labels its built images; a user container must not inherit them and
                # pass for a container of the service that built its image.
                "com.docker.compose.project": "",
                "com.docker.compose.service": "",
                LABEL_DEPLOYMENT: _label_value(self.deployment),
                LABEL_USER: _label_value(self.user.name),
                LABEL_SERVER: _label_value(self.name or ""),
                LABEL_PROFILE: profile.name,
                LABEL_GPUS: str(choice.gpus),
            }
        }

    # ---- progress for the spawn page -------------------------------------------------------

    def _report(self, progress: int, message: str) -> None:
        self._progress_events.append({"progress": progress, "message": message})
        self._progress_changed.set()

    async def start(self):
        self._progress_events: list[dict[str, Any]] = []
        self._progress_changed = asyncio.Event()
        self._image_present = ""
        self._container_touched = False
        profile = self.user_options.get("profile", "?")
        gpus = int(self.user_options.get("gpus", 0) or 0)
        self._report(10, f"Profile {profile}: checking image {self.image}")
        try:
            await self._check_placement()
            # A missing image is pulled before the queue (a pull takes no turn: it is network,
            # not the CPU the turns share) and before _allocate reads its labels.
            await self.pull_image(self.image)
            async with self._start_turn():
                # Allocating only now, seconds before the container exists: an allocation held
                # through minutes in the queue, with no container, is what the monitor's
                # reconciliation takes for a leak once its grace has passed.
                await self._release_leftover()
                if gpus:
                    await self._allocate(profile, gpus)
                self._container_touched = True
                result = await super().start()
                self._report(60, "Container started; waiting for JupyterLab to answer")
                await self._wait_for_server(result)
        except BaseException as e:  # also a cancelled start (the hub's start_timeout)
            # The container goes, then the devices, once Docker confirms it is gone. Shielded: a
            # second cancellation must not cut the clean-up short between the two.
            await asyncio.shield(self._clean_up_failed_start())
            if isinstance(e, Exception):
                self._report(100, "Starting the server failed; see the message below")
            raise
        return result

    async def pull_image(self, image):
        # start() pulls before allocating; DockerSpawner.start() would pull (or with
        # pull_policy "always", download) a second time
        if image == self._image_present:
            return
        await super().pull_image(image)
        self._image_present = image

    def _start_turn(self):
        """This server's turn in the hub's start queue (a no-op without a limit)."""
        if not self.start_concurrency:
            return contextlib.nullcontext()
        return hub_start_queue(self.start_concurrency).turn(self._report_waiting)

    def _report_waiting(self, ahead: int) -> None:
        self._report(15, f"Waiting for a turn to start: {self.start_concurrency} servers are starting, "
                         f"{ahead} waiting before this one")

    async def _wait_for_server(self, address: tuple[str, int]) -> None:
        # The same URL the hub checks next (Server.wait_up: base URL + "api"). Not answering in
        # time is not an error here: the hub's own check then decides, with its http_timeout.
        # With a start queue, this wait is also what holds the server's turn.
        interval = self.ready_poll_interval if self.ready_poll_interval > 0 else (0.5 if self.start_concurrency else 0)
        if interval <= 0 or self.server is None:
            return
        ip, port = address
        url = f"http://{ip}:{port}{self.server.base_url}api"
        if not await wait_until_answering(url, self.http_timeout, interval):
            self.log.warning("%s's server did not answer at %s within %ss", self._log_name, url, self.http_timeout)

    async def _allocate(self, profile: str, gpus: int) -> None:
        try:
            await self._request_allocation(profile, gpus)
        except MonitorUnavailable as e:
            # Nothing is recorded: should the monitor have granted a request whose answer never
            # came, no container will hold that allocation, and its reconciliation frees it.
            raise web.HTTPError(503, f"Cannot start a server with GPUs now: {e}. Try again in a minute.") from None

    async def _request_allocation(self, profile: str, gpus: int) -> None:
        host = await self.monitor.host()
        if host.cuda_driver_version:
            image = await self.docker("inspect_image", self.image)
            labels = (image.get("Config") or {}).get("Labels") or {}
            refusal = cuda_refusal(profile, self.image, labels.get(LABEL_CUDA_MAJOR), host)
            if refusal:
                raise web.HTTPError(400, refusal)
        self._report(20, f"Allocating {gpus} device(s) from the GPU monitor")
        groups = tuple(sorted(g.name for g in getattr(self.user, "groups", None) or []))
        chosen = self.profiles.get(profile)
        request = AllocationRequest(user=self.user.name, server=self.name or "", profile=profile, count=gpus,
                                    groups=groups, node_labels=chosen.node_labels if chosen else (),
                                    node=self._required_node())
        answer = await self.monitor.allocate(request)
        if isinstance(answer, Refusal) and answer.status == 409 and answer.allocation_id:
            # This very server still holds an allocation of another size (a crash lost it from
            # the state). Giving it back is safe only if no container of this server runs.
            leftover = answer.allocation_id
            if not await self._container_gone():
                raise web.HTTPError(503, self._still_running_message(leftover))
            self.log.warning("releasing %s's leftover allocation %s", self._log_name, leftover)
            await self.monitor.release(leftover)
            answer = await self.monitor.allocate(request)
        if isinstance(answer, Refusal):
            raise web.HTTPError(503 if answer.status >= 500 else 400,
                                f"No GPU for this server: {answer.message}{self._refusal_note()}")
        self.allocation_id = answer.id
        self._apply_allocation(answer.allocation)
        labels = self.extra_create_kwargs.setdefault("labels", {})
        labels[LABEL_ALLOCATION] = answer.id
        labels[LABEL_DEVICES] = ",".join(d["uuid"] for d in answer.devices)
        names = ", ".join(d.get("name") or d["uuid"] for d in answer.devices)
        self._report(25, f"Allocated: {names}")

    async def _check_placement(self) -> None:
        """Refuse, with a sentence, a start that cannot be placed (nothing to check on one host)."""

    def _required_node(self) -> str:
        """The one node this server must run on ("": any); one host has one node."""
        return ""

    def _refusal_note(self) -> str:
        """What to add to the monitor's refusal, for the person."""
        return ""

    def _apply_allocation(self, allocation: dict[str, Any]) -> None:
        """Give the container-to-be exactly the allocated devices."""
        host_config, env = allocation_container_settings(allocation)
        self.extra_host_config = {**self.extra_host_config, **host_config}
        self.environment = {**self.environment, **env}

    # how an administrator checks and removes this server's Docker object by hand
    _check_command = "docker ps -a -f name="
    _remove_command = "docker rm -f"

    def _still_running_message(self, allocation_id: str) -> str:
        return (
            f"This server's previous {self.object_type} {self.object_name} is still running (it did not stop), "
            f"holding the devices of allocation {allocation_id}, so the server cannot start again. "
            f"Ask an administrator to remove it ({self._remove_command} {self.object_name}); its devices are "
            "then released within a few minutes.")

    async def _release_leftover(self) -> None:
        # At start, an allocation in the state is one a stop could not release because its
        # container was still running (see _release_once_gone).
        if not self.allocation_id:
            return
        if not await self._release_once_gone("the server starts again"):
            raise web.HTTPError(503, self._still_running_message(self.allocation_id))

    async def _release(self, why: str, allocation_id: str | None = None) -> None:
        allocation_id = allocation_id or self.allocation_id
        if not allocation_id:
            return
        self.allocation_id = ""
        self._allocation_outlives_server = False
        try:
            refusal = await self.monitor.release(allocation_id)
        except MonitorUnavailable as e:
            # the monitor's reconciliation frees it once no container holds it
            self.log.warning("could not release %s's allocation %s (%s): %s", self._log_name, allocation_id, why, e)
            return
        if refusal is None:  # released, now or before (releasing twice is harmless)
            self.log.info("released %s's allocation %s (%s)", self._log_name, allocation_id, why)
        else:
            self.log.warning("releasing %s's allocation %s: monitor answered %s: %s", self._log_name,
                             allocation_id, refusal.status, refusal.message)

    async def _release_once_gone(self, why: str, allocation_id: str | None = None) -> bool:
        """Release the allocation if Docker confirms that this server's container is not
        running; otherwise keep it (in the state too) and say so. True if nothing is held."""
        allocation_id = allocation_id or self.allocation_id
        if not allocation_id:
            return True
        if await self._container_gone():
            await self._release(why, allocation_id)
            return True
        self._keep(allocation_id, f"{why}, but the container is still running")
        return False

    def _keep(self, allocation_id: str, why: str) -> None:
        # Releasing now would hand devices a running process may still use to someone else. The
        # monitor sees the container (its label names the allocation) and frees the devices
        # once it is gone; a later start or stop of this server retries.
        self.allocation_id = allocation_id
        self._allocation_outlives_server = True
        self.log.warning(
            "%s: keeping allocation %s (%s): its %s %s may still use the devices. The GPU "
            "monitor releases them once it is gone; check it with `%s%s` "
            "and remove it with `%s %s` if it does not stop.",
            self._log_name, allocation_id, why, self.object_type, self.object_name,
            self._check_command, self.object_name, self._remove_command, self.object_name)

    async def _container_gone(self) -> bool:
        """Whether Docker confirms that this server's container runs no process: it does not
        exist, or it exists stopped. False when Docker cannot tell (an error, a timeout)."""
        # By name, not by id: a start cancelled while `docker create` ran never learnt the id.
        try:
            info = await self.docker("inspect_container", self.object_name)
        except docker.errors.NotFound:
            return True
        except Exception as e:  # noqa: BLE001 - not knowing counts as "not gone"
            self.log.warning("cannot tell whether %s's container %s is gone: %s", self._log_name,
                             self.object_name, e)
            return False
        state = info.get("State") or {}
        # a paused container keeps its processes (and their GPU memory)
        return not (state.get("Running") or state.get("Restarting") or state.get("Paused"))

    async def _clean_up_failed_start(self) -> None:
        """After a failed or cancelled start: the container removed, then the devices released,
        in that order, and only if Docker confirms the container is gone."""
        if self._container_touched:
            # DockerSpawner's Docker calls run in executor threads and cannot be called back:
            # a `docker create` or `docker start` sent before the failure may finish after it
            # and leave a running container. Wait for them, then remove whatever exists.
            if not await self._docker_calls_done(self.docker_settle_timeout):
                # the executor is busy with them: asking Docker again would only queue behind
                if self.allocation_id:
                    self._keep(self.allocation_id, f"the start did not complete, and its Docker calls "
                                                   f"were still running after {self.docker_settle_timeout:.0f}s")
                return
            await self._remove_container()
        elif not self.allocation_id:
            return  # Docker was never asked for anything and nothing is held
        await self._release_once_gone("the start did not complete")

    async def _remove_container(self) -> None:
        try:
            await self.docker("remove_container", self.object_name, v=True, force=True)
        except docker.errors.NotFound:
            pass
        except docker.errors.APIError as e:  # e.g. it will not die; _container_gone() decides
            if e.status_code == 409:  # already being removed (auto-remove after it exited)
                self.log.debug("%s's container %s is already being removed", self._log_name, self.object_name)
            else:
                self.log.warning("could not remove %s's container %s after its failed start: %s",
                                 self._log_name, self.object_name, e)
        else:
            self.log.info("removed %s's container %s after its failed start", self._log_name, self.object_name)
        self.object_id = ""

    def docker(self, method, *args, **kwargs):
        # DockerSpawner.docker(), remembering the call: cancelling the coroutine awaiting it does
        # not stop the thread, so a failed start waits for these (_docker_calls_done).
        call = self.executor.submit(self._docker, method, *args, **kwargs)
        self._docker_calls = frozenset(c for c in self._docker_calls if not c.done()) | {call}
        return asyncio.wrap_future(call)

    async def _docker_calls_done(self, timeout: float) -> bool:
        pending = [c for c in self._docker_calls if not c.done()]
        if not pending:
            return True
        _, still = await asyncio.wait([asyncio.wrap_future(c) for c in pending], timeout=timeout)
        return not still

    async def stop(self, now: bool = False):
        held = self.allocation_id  # DockerSpawner.stop() clears the state, and with it this id
        try:
            await super().stop(now=now)
        finally:
            # also when stopping failed (a hung GPU process, a Docker timeout): then the
            # container may well still run, and its devices must stay its own
            await self._release_once_gone("the server stopped", held)

    async def run_post_stop_hook(self):
        # JupyterHub calls stop() only for a server it finds running; one that died on its own
        # (poll found the container gone) is cleaned up without it. This hook runs in both
        # cases, before the state is cleared: release here too (a second release is a no-op).
        await self._release_once_gone("the server is gone")
        result = super().run_post_stop_hook()
        if inspect.isawaitable(result):
            await result

    def get_state(self):
        state = super().get_state()
        if self.allocation_id:
            state["allocation_id"] = self.allocation_id
        return state

    def load_state(self, state):
        super().load_state(state)
        self.allocation_id = state.get("allocation_id", "")

    def clear_state(self):
        super().clear_state()
        # The hub clears the state of every stopped server; an allocation kept for a container
        # that did not stop stays in it, so that the next start or stop can release it.
        if not self._allocation_outlives_server:
            self.allocation_id = ""

    async def create_object(self):
        self._report(30, "Creating the container")
        return await super().create_object()

    async def progress(self):
        # Replays every event, then follows new ones until the hub stops asking.
        events = getattr(self, "_progress_events", None)
        if events is None:
            yield {"progress": 5, "message": "Preparing to start your server"}
            return
        sent = 0
        while True:
            while sent < len(events):
                yield events[sent]
                sent += 1
            self._progress_changed.clear()
            try:
                await asyncio.wait_for(self._progress_changed.wait(), timeout=1)
            except TimeoutError:
                pass


# ---- profiles whose kind of node no node is -------------------------------------------------

_warned_no_node: set[tuple[str, tuple[tuple[str, str], ...]]] = set()  # once per hub and profile


def warn_no_node(log: Any, profile: Profile) -> None:
    """Log, once per hub, that `profile` asks for node labels no node has."""
    key = (profile.name, profile.node_labels)
    if key not in _warned_no_node:
        _warned_no_node.add(key)
        labels = ", ".join(f"{k}={v}" for k, v in profile.node_labels)
        log.warning("profile %r asks for node label(s) %s, which no node has: it is offered without GPUs "
                    "(label a node, or set GPUHUB_NODE_LABELS on a single host)", profile.name, labels)


async def check_profiles_have_nodes(client: MonitorClient, profiles: Profiles, log: Any,
                                    wait: float = 600.0, interval: float = 5.0) -> list[str]:
    """At the hub's start: name in the log each profile whose `node_labels` no node has (the spawn
    form offers it without GPUs; a spawn asking for GPUs gets a 400 saying so). The monitor may
    answer after the hub starts (on a swarm nothing orders them) and its agents register their
    nodes after it: asked every `interval` seconds until it knows at least one node, for at most
    `wait` seconds. Returns the names warned about."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    while True:
        try:
            devices = await client.devices()
        except MonitorUnavailable as e:
            devices, why = None, str(e)
        else:
            why = "it knows no node yet"
        if devices is not None and devices.nodes:
            missing = [p for p in profiles.profiles if p.node_labels and not devices.has_node(dict(p.node_labels))]
            for profile in missing:
                warn_no_node(log, profile)
            return [p.name for p in missing]
        if loop.time() >= deadline:
            log.warning("could not check profiles' node_labels against the nodes at start: %s", why)
            return []
        await asyncio.sleep(interval)
