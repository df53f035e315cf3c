"""Fakes of the Docker API calls DockerSpawner makes (`docker.APIClient` methods), over containers
and images kept in dicts, named for how they behave.

Only the client is faked: GPUDockerSpawner and DockerSpawner run unchanged, and their calls
still go through DockerSpawner's executor thread, so a call "in flight" is in flight for real
(cancelling the coroutine that awaits it does not stop it). Errors are docker-py's own classes
with the status codes the daemon answers. Every call is appended to `events` ("docker start
gpuhub-alice"), a list a test may share with a fake monitor to check the order of things.

- `ObedientDocker`: does what it is asked.
- `ImageNotPulledDocker`: no image is present until it is pulled.
- `SlowStartDocker`: `docker start` blocks until the test calls `let_start_finish()`, then the
  container runs, whatever happened meanwhile to the coroutine that sent it.
- `StuckContainerDocker`: a running container will not stop (a hung GPU process): stop and a
  forced remove fail, until the test calls `let_it_die(name)`.
"""

from __future__ import annotations

import itertools
import threading
from typing import Any

import docker.errors
import requests

CMD = ["jupyterhub-singleuser"]


def api_error(status: int, message: str) -> docker.errors.APIError:
    """The error docker-py raises for a daemon's answer with this status."""
    response = requests.Response()
    response.status_code = status
    cls = docker.errors.NotFound if status == 404 else docker.errors.APIError
    return cls(message, response=response, explanation=message)


def _tagged(image: str) -> str:
    return image if ":" in image.split("/")[-1] else f"{image}:latest"


class ObedientDocker:
    def __init__(self, images: dict[str, dict[str, str]] | None = None, events: list[str] | None = None):
        # image name -> its labels; by default every image asked for is present, unlabelled
        self.images = None if images is None else {_tagged(k): v for k, v in images.items()}
        self.containers: dict[str, dict[str, Any]] = {}  # name -> {"Id", "Running", "kwargs"}
        self.created: list[dict[str, Any]] = []  # create_container's keyword arguments, in order
        self.events = events if events is not None else []
        self._ids = itertools.count(1)

    def _find(self, name_or_id: str) -> dict[str, Any]:
        for name, c in self.containers.items():
            if name_or_id in (name, c["Id"]):
                return c
        raise api_error(404, f"No such container: {name_or_id}")

    # ---- images --------------------------------------------------------------------------------
    def inspect_image(self, image: str) -> dict[str, Any]:
        self.events.append(f"docker inspect_image {image}")
        if self.images is not None and _tagged(image) not in self.images:
            raise api_error(404, f"No such image: {image}")
        labels = (self.images or {}).get(_tagged(image), {})
        return {"Id": "sha256:" + "0" * 64, "Config": {"Cmd": CMD, "Labels": labels}}

    def pull(self, repository: str, tag: str | None = None, **kwargs: Any) -> str:
        self.events.append(f"docker pull {repository}:{tag}")
        if self.images is not None:
            self.images.setdefault(f"{repository}:{tag}", {})
        return ""

    # ---- containers ----------------------------------------------------------------------------
    def create_host_config(self, **kwargs: Any) -> dict[str, Any]:
        return dict(kwargs)  # docker-py builds the API's HostConfig from these; kept as given

    def create_container(self, **kwargs: Any) -> dict[str, str]:
        name = kwargs["name"]
        self.events.append(f"docker create {name}")
        if name in self.containers:
            raise api_error(409, f'Conflict. The container name "/{name}" is already in use')
        container = {"Id": f"c{next(self._ids):063d}", "Running": False, "kwargs": kwargs}
        self.containers[name] = container
        self.created.append(kwargs)
        return {"Id": container["Id"]}

    def start(self, container: str) -> None:
        c = self._find(container)
        self.events.append(f"docker start {self.name_of(c)}")
        c["Running"] = True

    def stop(self, container: str, **kwargs: Any) -> None:
        c = self._find(container)
        self.events.append(f"docker stop {self.name_of(c)}")
        c["Running"] = False

    def remove_container(self, container: str, v: bool = False, force: bool = False) -> None:
        c = self._find(container)
        name = self.name_of(c)
        if c["Running"] and not force:
            raise api_error(409, f"cannot remove container {name}: container is running: stop the container "
                                 "before removing or force remove")
        self.events.append(f"docker remove {name}")
        del self.containers[name]

    def inspect_container(self, container: str) -> dict[str, Any]:
        c = self._find(container)
        self.events.append(f"docker inspect {self.name_of(c)}")
        return {"Id": c["Id"], "Name": "/" + self.name_of(c),
                "State": {"Running": c["Running"], "Paused": False, "Restarting": False,
                          "Status": "running" if c["Running"] else "exited", "ExitCode": 0, "Error": "",
                          "FinishedAt": ""},
                "Config": {"Env": [f"{k}={v}" for k, v in c["kwargs"].get("environment", {}).items()]}}

    def port(self, container: str, port: int) -> list[dict[str, str]]:
        return [{"HostIp": "127.0.0.1", "HostPort": "40000"}]

    # ---- for tests -----------------------------------------------------------------------------
    def name_of(self, container: dict[str, Any]) -> str:
        return next(n for n, c in self.containers.items() if c is container)

    def running(self) -> list[str]:
        return [name for name, c in self.containers.items() if c["Running"]]


class ImageNotPulledDocker(ObedientDocker):
    def __init__(self, events: list[str] | None = None):
        super().__init__(images={}, events=events)


class SlowStartDocker(ObedientDocker):
    def __init__(self, events: list[str] | None = None):
        super().__init__(events=events)
        self.start_begun = threading.Event()
        self._may_finish = threading.Event()

    def start(self, container: str) -> None:
        self.start_begun.set()
        if not self._may_finish.wait(timeout=30):
            raise api_error(500, "SlowStartDocker: the test never let the start finish")
        super().start(container)

    def let_start_finish(self) -> None:
        self._may_finish.set()


class StuckContainerDocker(ObedientDocker):
    def __init__(self, events: list[str] | None = None):
        super().__init__(events=events)
        self.dead: set[str] = set()

    def stop(self, container: str, **kwargs: Any) -> None:
        c = self._find(container)
        name = self.name_of(c)
        if c["Running"] and name not in self.dead:
            self.events.append(f"docker stop {name} failed")
            raise api_error(500, f"cannot stop container: {name}: tried to kill container, but did not "
                                 "receive an exit event")
        super().stop(container, **kwargs)

    def remove_container(self, container: str, v: bool = False, force: bool = False) -> None:
        c = self._find(container)
        name = self.name_of(c)
        if c["Running"] and name not in self.dead:
            self.events.append(f"docker remove {name} failed")
            raise api_error(500, f"could not kill running container {name}, cannot remove")
        super().remove_container(container, v=v, force=force)

    def let_it_die(self, name: str) -> None:
        self.dead.add(name)
        self.containers[name]["Running"] = False
