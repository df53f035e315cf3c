"""The benchmarks' reference deployment (bench/reference/) compares like with like: the same
upstream package versions as gpuhub's hub and single-user image, installed with their defaults."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent.parent


def pins(path: Path) -> dict[str, str]:
    lines = (line.split("#")[0].strip() for line in path.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def test_reference_hub_pins_the_same_upstream_versions_as_gpuhub():
    reference = pins(ROOT / "bench" / "reference" / "requirements.txt")
    gpuhub = pins(ROOT / "hub" / "requirements.txt")
    assert set(reference) == {"jupyterhub", "dockerspawner", "oauthenticator"}
    assert {name: gpuhub[name] for name in reference} == reference


def test_reference_single_user_image_has_gpuhubs_server_versions():
    reference = pins(ROOT / "bench" / "reference" / "singleuser-requirements.txt")
    gpuhub = pins(ROOT / "images" / "base" / "requirements.txt")
    assert set(reference) == {"jupyterhub", "jupyterlab"}
    assert {name: gpuhub[name] for name in reference} == reference


def test_reference_spawns_its_own_image_on_its_own_ports_and_network():
    compose = yaml.safe_load((ROOT / "bench" / "reference" / "docker-compose.yml").read_text())
    image = compose["services"]["hub"]["environment"]["DOCKER_NOTEBOOK_IMAGE"]
    assert image == compose["services"]["singleuser"]["image"] == "gpuhub-ref/singleuser:latest"
    assert compose["name"] == "gpuhub-ref"
    assert compose["networks"]["users"]["name"] == "gpuhub-ref-users"
    assert compose["services"]["hub"]["ports"] == ["127.0.0.1:18000:8000"]
    assert compose["services"]["oidc"]["ports"] == ["127.0.0.1:19401:9400"]
