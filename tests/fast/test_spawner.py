"""GPUDockerSpawner's option handling and container settings, without Docker."""

from types import SimpleNamespace

import pytest
from tornado import web

from gpuhub.profiles import parse_profiles
from gpuhub.spawner import GPUDockerSpawner

PROFILES = parse_profiles({
    "profiles": [
        {"name": "minimal", "display_name": "Minimal", "description": "CPU <only>", "image": "gpuhub/min",
         "cpu_limit": 1.5, "mem_limit": "2G", "shm_size": "256M", "pids_limit": 512},
        {"name": "cuda", "display_name": "CUDA", "image": "gpuhub/cuda", "gpus": [0, 1, 2]},
    ]
})


@pytest.fixture
def spawner():
    user = SimpleNamespace(name="al{ice}", id=1, url="/user/al{ice}/")
    return GPUDockerSpawner(user=user, profiles=PROFILES, _deprecated_db_session=None)


def test_form_lists_profiles_escaped_with_gpu_choices(spawner):
    form = spawner._render_options_form(spawner)
    assert 'value="minimal" checked' in form
    assert "CPU &lt;only&gt;" in form and "<only>" not in form
    # no GPU can be given yet: only 0 is offered, even for a profile declaring more
    assert 'name="gpus-cuda"><option value="0">0</option></select>' in form


def test_form_data_become_user_options(spawner):
    assert spawner.options_from_form({"profile": ["cuda"], "gpus-cuda": ["1"], "gpus-minimal": ["0"]}) == {
        "profile": "cuda", "gpus": "1"}


def test_choice_configures_the_container(spawner):
    spawner._apply_choice({"profile": "minimal", "gpus": "0"})
    assert spawner.user_options == {"profile": "minimal", "gpus": 0}
    assert spawner.image == "gpuhub/min"
    assert spawner.cpu_limit == 1.5
    assert spawner.mem_limit == 2 * 1024**3
    assert spawner.extra_host_config == {"cap_drop": ["ALL"], "security_opt": ["no-new-privileges:true"],
                                         "pids_limit": 512, "shm_size": "256M"}
    assert spawner.environment["NVIDIA_VISIBLE_DEVICES"] == "void"
    labels = spawner.extra_create_kwargs["labels"]
    assert labels["org.gpuhub.profile"] == "minimal"
    # braces survive DockerSpawner's str.format rendering of extra_create_kwargs
    assert spawner._render_templates(labels)["org.gpuhub.user"] == "al{ice}"


REFUSED = {
    "image option": ({"image": "evil/miner"}, "unknown spawn option(s): image"),
    "unknown profile": ({"profile": "nope"}, "unknown profile 'nope'"),
    "gpu without allocator": ({"profile": "cuda", "gpus": 1}, "this hub has 0 to give"),
    "negative": ({"profile": "cuda", "gpus": -2}, "cannot be negative"),
}


@pytest.mark.parametrize("options, words", REFUSED.values(), ids=REFUSED.keys())
def test_bad_options_are_http_400_before_any_container(spawner, options, words):
    with pytest.raises(web.HTTPError) as info:
        spawner._apply_choice(options)
    assert info.value.status_code == 400
    assert words in info.value.log_message
    assert spawner.image != "evil/miner"
