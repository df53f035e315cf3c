"""config/ checked together (gpuhub/siteconfig.py): the shipped files agree, and a policy that
limits a profile profiles.yaml does not have stops init with one line naming the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpu_monitor.env import ConfigError
from gpuhub.init import main as init_main
from gpuhub.settings import load_settings
from gpuhub.siteconfig import load_site_config

ROOT = Path(__file__).resolve().parents[2]


def test_the_shipped_profiles_and_policy_agree(environ):
    site = load_site_config(load_settings(environ))
    assert {p.name for p in site.profiles.profiles} >= {"minimal", "opencl", "cuda"}
    assert site.policy.idle_reclaim.enabled is False


def test_a_policy_limiting_an_unknown_profile_is_refused(environ, tmp_path):
    policy = tmp_path / "gpu-policy.yaml"
    policy.write_text("profiles:\n  cuda: {max_gpus_per_user: 1}\n  pytorch: {max_gpus_per_user: 2}\n")
    with pytest.raises(ConfigError) as info:
        load_site_config(load_settings({**environ, "GPUHUB_POLICY_FILE": str(policy)}))
    assert str(info.value).startswith(f"GPUHUB_POLICY_FILE: {policy}: profiles: 'pytorch' is not a profile")
    assert "minimal, opencl, cuda" in str(info.value)


def test_init_checks_the_policy_too(environ, tmp_path, capsys):
    policy = tmp_path / "gpu-policy.yaml"
    policy.write_text("max_gpus_per_user: -1\n")
    assert init_main({**environ, "GPUHUB_POLICY_FILE": str(policy),
                      "GPUHUB_CERTS_DIR": str(tmp_path / "certs")}) == 1
    err = capsys.readouterr().err
    assert err.startswith("gpuhub: configuration error: GPUHUB_POLICY_FILE: ") and err.count("\n") == 1
