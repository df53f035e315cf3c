"""Profiles: the schema rejects typos; spawn options are checked before anything starts."""

import pytest
import yaml

from gpuhub.profiles import OptionsError, load_profiles, parse_profiles, resolve_options
from gpuhub.settings import ConfigError

from ..conftest import ROOT

PROFILES = parse_profiles(
    {
        "default_profile": "small",
        "profiles": [
            {"name": "small", "display_name": "Small", "image": "img/small"},
            {"name": "gpu", "display_name": "GPU", "image": "img/gpu", "gpus": [1, 0, 2]},
        ],
    }
)


def test_shipped_profiles_file_is_valid():
    profiles = load_profiles(str(ROOT / "config" / "profiles.yaml"))
    assert profiles.get(profiles.default) is not None


def test_defaults_without_options():
    choice = resolve_options(PROFILES, {})
    assert (choice.profile.name, choice.gpus) == ("small", 0)
    assert resolve_options(PROFILES, None).profile.name == "small"


GOOD = {
    "int gpus": ({"profile": "gpu", "gpus": 2}, ("gpu", 2)),
    "form string gpus": ({"profile": "gpu", "gpus": "1"}, ("gpu", 1)),
    "profile's first count when gpus omitted": ({"profile": "gpu"}, ("gpu", 0)),
}


@pytest.mark.parametrize("options, expected", GOOD.values(), ids=GOOD.keys())
def test_good_options(options, expected):
    choice = resolve_options(PROFILES, options)
    assert (choice.profile.name, choice.gpus) == expected


BAD = {
    "unknown profile": ({"profile": "huge"}, "unknown profile 'huge'; choose one of: small, gpu"),
    "image named directly": ({"image": "evil/image"}, "unknown spawn option(s): image"),
    "negative gpus": ({"profile": "gpu", "gpus": -1}, "cannot be negative"),
    "negative gpus as text": ({"profile": "gpu", "gpus": "-1"}, "cannot be negative"),
    "too many gpus": ({"profile": "gpu", "gpus": 3}, "allows 0, 1, 2 GPU(s), not 3"),
    "gpus on cpu profile": ({"profile": "small", "gpus": 1}, "allows 0 GPU(s), not 1"),
    "float gpus": ({"profile": "gpu", "gpus": 1.5}, "whole number"),
    "bool gpus": ({"profile": "gpu", "gpus": True}, "whole number"),
    "text gpus": ({"profile": "gpu", "gpus": "two"}, "whole number"),
    "huge gpus": ({"profile": "gpu", "gpus": "9" * 5000}, "whole number"),
    "profile not a string": ({"profile": ["small"]}, "profile must be a profile name"),
}


@pytest.mark.parametrize("options, message", BAD.values(), ids=BAD.keys())
def test_bad_options_are_refused_with_a_message(options, message):
    with pytest.raises(OptionsError) as info:
        resolve_options(PROFILES, options)
    assert message in str(info.value)
    assert len(str(info.value)) < 400


def test_non_mapping_options_are_refused():
    with pytest.raises(OptionsError, match="JSON object"):
        resolve_options(PROFILES, ["profile", "small"])


SCHEMA_ERRORS = {
    "typo in a key": ({"profiles": [{"name": "a", "display_name": "A", "image": "i", "gpu": [1]}]}, "'gpu' was unexpected"),
    "missing image": ({"profiles": [{"name": "a", "display_name": "A"}]}, "'image' is a required property"),
    "bad name": ({"profiles": [{"name": "A B", "display_name": "A", "image": "i"}]}, "profiles/0/name"),
    "unknown top-level key": ({"profile": []}, "(top level)"),
    "duplicate names": ({"profiles": [{"name": "a", "display_name": "A", "image": "i"}] * 2}, "must be unique: a"),
    "default not declared": ({"default_profile": "b", "profiles": [{"name": "a", "display_name": "A", "image": "i"}]}, "default_profile 'b'"),  # noqa: E501
    "a node label's name with a space": ({"profiles": [{"name": "a", "display_name": "A", "image": "i",
                                                         "node_labels": {"gpu model": "a100"}}]}, "profiles/0/node_labels"),
    "a node label's value a number": ({"profiles": [{"name": "a", "display_name": "A", "image": "i",
                                                     "node_labels": {"gpu": 100}}]}, "profiles/0/node_labels/gpu"),
    "negative gpu count": ({"profiles": [{"name": "a", "display_name": "A", "image": "i", "gpus": [-1]}]}, "profiles/0/gpus/0"),
}


@pytest.mark.parametrize("data, words", SCHEMA_ERRORS.values(), ids=SCHEMA_ERRORS.keys())
def test_profile_file_errors_stop_startup(data, words):
    with pytest.raises(ConfigError) as info:
        parse_profiles(data, "profiles.yaml")
    assert info.value.variable == "GPUHUB_PROFILES_FILE"
    assert words in str(info.value)


def test_unreadable_profile_files(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_profiles(str(tmp_path / "missing.yaml"))
    (tmp_path / "bad.yaml").write_text("profiles: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_profiles(str(tmp_path / "bad.yaml"))
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump({"profiles": [{"name": "a", "display_name": "A", "image": "i"}]}))
    assert load_profiles(str(tmp_path / "ok.yaml")).default == "a"


def test_a_profiles_node_labels_are_read_sorted():
    profiles = parse_profiles({"profiles": [{"name": "a", "display_name": "A", "image": "i", "gpus": [0, 1],
                                             "node_labels": {"large-memory": "", "gpu": "a100"}}]})
    assert profiles.profiles[0].node_labels == (("gpu", "a100"), ("large-memory", ""))
    assert parse_profiles({"profiles": [{"name": "a", "display_name": "A", "image": "i"}]}).profiles[0].node_labels == ()
