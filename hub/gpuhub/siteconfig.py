"""The files under config/ read and checked together: the profiles, the GPU policy, and that
they agree (every profile the policy limits exists).

`init` calls `load_site_config` before anything starts, so a mistake in any file stops `up`
with one line; the hub calls it again when it starts (the files may have been edited since).
The policy is parsed by the monitor's own parser (gpu_monitor.policy), so the hub and the
monitor cannot read one file two ways.
"""

from __future__ import annotations

from dataclasses import dataclass

from gpu_monitor.env import ConfigError
from gpu_monitor.policy import VARIABLE as POLICY_VARIABLE
from gpu_monitor.policy import GPUPolicy, load_policy

from .profiles import Profiles, load_profiles
from .settings import Settings


@dataclass(frozen=True)
class SiteConfig:
    profiles: Profiles
    policy: GPUPolicy


def check_agreement(profiles: Profiles, policy: GPUPolicy, policy_file: str) -> None:
    known = [p.name for p in profiles.profiles]
    unknown = sorted(set(policy.allocation.max_gpus_per_profile) - set(known))
    if unknown:
        raise ConfigError(POLICY_VARIABLE, f"{policy_file}: profiles: {', '.join(map(repr, unknown))} "
                                           f"{'is' if len(unknown) == 1 else 'are'} not a profile of "
                                           f"profiles.yaml (its profiles: {', '.join(known)})")


def load_site_config(settings: Settings) -> SiteConfig:
    profiles = load_profiles(settings.profiles_file)
    policy = load_policy(settings.policy_file)
    check_agreement(profiles, policy, settings.policy_file)
    return SiteConfig(profiles, policy)
