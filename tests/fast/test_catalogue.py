"""The catalogue of variables (hub/gpuhub/catalogue.py) against everything that names them:
the generated example file and README table, the settings modules' declarations, and the
compose file. Regenerate with `python -m gpuhub.catalogue env-example|readme-table`."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
import yaml

from gpu_monitor import settings as monitor_settings
from gpuhub import catalogue
from gpuhub import settings as hub_settings

ROOT = Path(__file__).resolve().parents[2]
COMPOSE_TEXT = (ROOT / "docker-compose.yml").read_text()
# the GPU and Swarm override files read variables too
COMPOSE_FILES_TEXT = COMPOSE_TEXT + (ROOT / "docker-compose.gpu.yml").read_text() + (
    ROOT / "docker-compose.swarm.yml").read_text()
COMPOSE = yaml.safe_load(COMPOSE_TEXT)
# the services whose variables gpuhub defines (db's are PostgreSQL's image's own)
OURS = ("init", "hub", "hub-tools", "gpu-monitor", "proxy", "netpolicy", "demo-oidc")
PARSED_BY = {"init": hub_settings.SETTINGS, "hub": hub_settings.SETTINGS, "hub-tools": hub_settings.SETTINGS,
             "gpu-monitor": monitor_settings.SETTINGS}


def environment(service: str) -> dict[str, str]:
    return {k: str(v) for k, v in (COMPOSE["services"][service].get("environment") or {}).items()}


def test_the_example_file_is_generated_from_the_catalogue():
    assert (ROOT / "config" / "gpuhub.env.example").read_text() == catalogue.env_example(), \
        "run: python -m gpuhub.catalogue env-example > config/gpuhub.env.example"


def test_the_readme_table_is_generated_from_the_catalogue():
    assert catalogue.readme_table() in (ROOT / "README.md").read_text(), \
        "replace README.md's configuration table with: python -m gpuhub.catalogue readme-table"
    assert set().union(*(r.variables for r in catalogue.README_TABLE)) <= catalogue.documented()


def test_every_declared_setting_is_documented_and_nothing_else_is():
    declared, documented = set(catalogue.declared()), catalogue.documented()
    assert declared - documented == set(), "declared in a settings module but not in the catalogue"
    read_by_compose = set(re.findall(r"\$\{([A-Z_0-9]+)", COMPOSE_FILES_TEXT))
    set_by_compose = set().union(*(environment(s) for s in OURS))
    assert documented - declared - read_by_compose - set_by_compose == set(), "documented, but nothing reads it"


def test_every_variable_the_compose_file_reads_or_sets_is_documented():
    read_by_compose = set(re.findall(r"\$\{([A-Z_0-9]+)", COMPOSE_FILES_TEXT))
    assert read_by_compose - catalogue.documented() == set()
    for service in OURS:
        assert set(environment(service)) - catalogue.documented() == set(), service


@pytest.mark.parametrize("service", PARSED_BY)
def test_compose_passes_a_python_service_only_what_it_parses(service):
    parsed = {s.name for s in PARSED_BY[service]}
    assert set(environment(service)) - parsed == set()


@pytest.mark.parametrize("service", ["hub", "init", "gpu-monitor"])
def test_compose_passes_every_operator_setting_a_python_service_parses(service):
    fixed = {f.setting.name for f in catalogue.FIXED}
    operator = {s.name for s in PARSED_BY[service] if s.name not in fixed and service in s.readers}
    assert operator - set(environment(service)) == set()


def test_the_values_compose_fixes_are_the_ones_documented():
    for f in catalogue.FIXED:
        for service in PARSED_BY:
            env = environment(service)
            if f.setting.name in env:
                assert env[f.setting.name] == f.value, (service, f.setting.name)


class Recording(Mapping[str, str]):
    """An environment that remembers which variables were asked for."""

    def __init__(self, values: Mapping[str, str]):
        self.values, self.asked = dict(values), set()

    def __getitem__(self, key: str) -> str:
        self.asked.add(key)
        return self.values[key]

    def get(self, key, default=None):  # type: ignore[override]
        self.asked.add(key)
        return self.values.get(key, default)

    def __iter__(self) -> Iterator[str]:
        raise AssertionError("settings must ask for variables by name, not list the environment")

    def __len__(self) -> int:
        return len(self.values)


@pytest.mark.parametrize("authenticator", ["generic", "azuread", "gitlab", "demo"])
def test_the_hub_reads_only_declared_variables(environ, authenticator):
    env = Recording({**environ, "GPUHUB_AUTHENTICATOR": authenticator, "AZUREAD_TENANT_ID": "t"})
    hub_settings.load_settings(env)
    assert env.asked - {s.name for s in hub_settings.SETTINGS} == set()


def test_the_monitor_reads_only_declared_variables():
    env = Recording({})
    monitor_settings.load_settings(env)
    assert env.asked == {s.name for s in monitor_settings.SETTINGS}
