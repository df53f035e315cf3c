"""The monitor's settings (gpu_monitor/gpu_monitor/settings.py) beyond those in test_monitor_service.py:
non-finite numbers and the deployment name."""

from __future__ import annotations

import pytest

from gpu_monitor.settings import ConfigError, load_settings

NUMERIC = ("GPUHUB_MONITOR_SAMPLE_SECONDS", "GPUHUB_MONITOR_RECONCILE_SECONDS",
           "GPUHUB_MONITOR_GRACE_SECONDS", "GPUHUB_MONITOR_FLUSH_SECONDS", "GPUHUB_CPU_SLICES")


@pytest.mark.parametrize("value", ["nan", "NaN", "inf", "-inf", "Infinity", "1e999"])
@pytest.mark.parametrize("variable", NUMERIC)
def test_every_numeric_setting_refuses_non_finite_values_naming_the_variable(variable, value):
    with pytest.raises(ConfigError) as info:
        load_settings({variable: value})
    assert str(info.value).startswith(f"{variable}: ")
    assert info.value.variable == variable


def test_the_deployment_defaults_to_gpuhub_and_is_read_from_the_environment():
    assert load_settings({}).deployment == "gpuhub"
    assert load_settings({"GPUHUB_DEPLOYMENT": "gpuhub-test"}).deployment == "gpuhub-test"


@pytest.mark.parametrize("value", ["a=b", "a,b", "with space", "x" * 64])
def test_a_deployment_name_a_label_filter_cannot_carry_is_refused(value):
    with pytest.raises(ConfigError, match="^GPUHUB_DEPLOYMENT: "):
        load_settings({"GPUHUB_DEPLOYMENT": value})
