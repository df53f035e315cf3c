"""GPUDockerSpawner: DockerSpawner that starts a declared profile, and nothing else.

What it adds to DockerSpawner:
- a spawn form listing the profiles from `config/profiles.yaml` and a GPU-count choice;
- validation of `user_options` (form or REST API) before any container exists: an unknown
  profile, a bad GPU count or an attempt to name an image is an HTTP 400 with a sentence;
- per-container settings from the profile (image, CPU/memory/shm/pids limits), hardening that
  does not depend on the profile (no capabilities, no-new-privileges), an explicit
  `NVIDIA_VISIBLE_DEVICES` so no daemon or image default can hand out GPUs, and labels that
  record user, server and profile so the stack can rebuild its view from Docker;
- progress messages for the spawn page, step by step.
"""

from __future__ import annotations

import asyncio
import html
from typing import Any

from dockerspawner import DockerSpawner
from tornado import web
from traitlets import Any as AnyTrait
from traitlets import Int, default

from .profiles import Choice, OptionsError, Profiles, resolve_options

LABEL_PREFIX = "org.gpuhub"


def _label_value(text: str) -> str:
    # DockerSpawner renders extra_create_kwargs with str.format: keep braces literal.
    return text.replace("{", "{{").replace("}", "}}")


class GPUDockerSpawner(DockerSpawner):
    profiles = AnyTrait(
        config=True,
        help="""The gpuhub.profiles.Profiles a person may choose from (loaded from config/).""",
    )

    gpus_available = Int(
        0,
        config=True,
        help="""How many GPUs this hub can hand out. Until the GPU monitor allocates devices by
        UUID, it is 0 and any request for a GPU is refused with a message instead of being
        silently ignored.""",
    )

    @default("options_form")
    def _default_options_form(self):
        return self._render_options_form

    def _render_options_form(self, spawner: "GPUDockerSpawner") -> str:
        profiles: Profiles = self.profiles
        rows = []
        for p in profiles.profiles:
            checked = " checked" if p.name == profiles.default else ""
            gpu_choices = "".join(
                f'<option value="{n}">{n}</option>' for n in p.gpus if n <= self.gpus_available or n == 0
            )
            rows.append(
                f"""
<div class="gpuhub-profile card mb-2"><div class="card-body">
  <label class="form-check-label">
    <input class="form-check-input" type="radio" name="profile" value="{html.escape(p.name)}"{checked}>
    <strong>{html.escape(p.display_name)}</strong>
  </label>
  <p class="text-muted mb-1">{html.escape(p.description)}</p>
  <label>GPUs <select class="form-select form-select-sm d-inline w-auto" name="gpus-{html.escape(p.name)}">{gpu_choices}</select></label>
</div></div>"""
            )
        return "\n".join(rows)

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
        if choice.gpus > self.gpus_available:
            raise web.HTTPError(
                400,
                f"{choice.gpus} GPU(s) requested, but this hub has {self.gpus_available} to give "
                "(no GPU allocator is configured yet)",
            )
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
                f"{LABEL_PREFIX}.user": _label_value(self.user.name),
                f"{LABEL_PREFIX}.server": _label_value(self.name or ""),
                f"{LABEL_PREFIX}.profile": profile.name,
                f"{LABEL_PREFIX}.gpus": str(choice.gpus),
            }
        }

    # ---- progress for the spawn page -------------------------------------------------------

    def _report(self, progress: int, message: str) -> None:
        self._progress_events.append({"progress": progress, "message": message})
        self._progress_changed.set()

    async def start(self):
        self._progress_events: list[dict[str, Any]] = []
        self._progress_changed = asyncio.Event()
        profile = self.user_options.get("profile", "?")
        self._report(10, f"Profile {profile}: checking image {self.image}")
        try:
            result = await super().start()
        except Exception:
            self._report(100, "Starting the container failed; see the message below")
            raise
        self._report(60, "Container started; waiting for JupyterLab to answer")
        return result

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
            except asyncio.TimeoutError:
                pass
