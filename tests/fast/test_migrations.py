"""The monitor's Alembic revisions (gpu_monitor/migrations), read without a database: one line
of numbered revisions, the numbered runner's steps mapped onto its first ones, and every file
shipped with the package. The docker tier runs them (tests/docker/test_store.py)."""

import fnmatch
import tomllib
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory

from gpu_monitor.store import MIGRATIONS_DIR, NUMBERED_STEP_REVISIONS, schema_revisions

from ..conftest import ROOT


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return config


def test_the_revisions_are_one_numbered_line():
    scripts = ScriptDirectory.from_config(_config())
    revisions = schema_revisions(_config())
    assert revisions == [f"{n:04d}" for n in range(1, len(revisions) + 1)]
    assert scripts.get_heads() == [revisions[-1]]
    for previous, revision in zip([None, *revisions], revisions, strict=False):
        script = scripts.get_revision(revision)
        assert script is not None and script.down_revision == previous
        assert Path(script.path).name.startswith(f"{revision}_")


def test_the_numbered_steps_map_onto_the_first_revisions_in_order():
    revisions = schema_revisions(_config())
    assert list(NUMBERED_STEP_REVISIONS) == list(range(1, len(NUMBERED_STEP_REVISIONS) + 1))
    assert list(NUMBERED_STEP_REVISIONS.values()) == revisions[:len(NUMBERED_STEP_REVISIONS)]


def test_the_package_ships_every_migration_file():
    patterns = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["gpu_monitor"]
    files = [p.relative_to(MIGRATIONS_DIR.parent).as_posix() for p in MIGRATIONS_DIR.rglob("*.py")]
    assert "migrations/env.py" in files
    assert [f for f in files if not any(fnmatch.fnmatch(f, p) for p in patterns)] == []
