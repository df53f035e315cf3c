"""The schema runner the monitor used before Alembic (gpuhub 0.13.0, `gpu_monitor/store.py` at
commit 79946e5), verbatim but for `self` and `steps` (the steps a monitor knew: one from
before step 2 knew only step 1). It builds the databases every deployed gpuhub has, for
the test that `AllocationStore.migrate()` adopts them (tests/docker/test_store.py). Frozen: never
add a step here; new schema changes are Alembic revisions (gpu_monitor/migrations/versions).
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

SCHEMA = "gpu_monitor"
MIGRATE_LOCK = 0x67707568_00000002

# Numbered schema steps, applied in order, each once, recorded in schema_version.
MIGRATIONS: tuple[tuple[int, str, str], ...] = (
    (
        1,
        "allocations",
        f"""
        CREATE TABLE {SCHEMA}.allocations (
            id text PRIMARY KEY,
            user_name text NOT NULL,
            server_name text NOT NULL,  -- '' is the user's default server
            profile text NOT NULL,
            device_uuids text[] NOT NULL,  -- in the order the allocator chose them
            created_at double precision NOT NULL,  -- seconds since the epoch
            CONSTRAINT allocations_user_server_key UNIQUE (user_name, server_name)
        )
        """,
    ),
    (
        2,
        "allocation history, hourly usage, device history",
        f"""
        -- every allocation ever granted; ended_at is set when it is released
        CREATE TABLE {SCHEMA}.allocation_history (
            id text PRIMARY KEY,
            user_name text NOT NULL,
            server_name text NOT NULL,
            profile text NOT NULL,
            groups text[] NOT NULL,  -- the user's hub groups when it was granted
            device_uuids text[] NOT NULL,
            started_at double precision NOT NULL,
            ended_at double precision
        );
        CREATE INDEX allocation_history_period ON {SCHEMA}.allocation_history (started_at, ended_at);
        -- per allocation and hour: device-seconds sampled while held, and how busy they were
        CREATE TABLE {SCHEMA}.allocation_usage (
            allocation_id text NOT NULL REFERENCES {SCHEMA}.allocation_history (id) ON DELETE CASCADE,
            hour double precision NOT NULL,  -- start of the hour, seconds since the epoch
            busy_seconds double precision NOT NULL,
            sampled_seconds double precision NOT NULL,
            PRIMARY KEY (allocation_id, hour)
        );
        -- per device and minute, kept DEVICE_HISTORY_SECONDS: what the dashboard charts
        CREATE TABLE {SCHEMA}.device_history (
            uuid text NOT NULL,
            minute double precision NOT NULL,
            utilization_ratio double precision,
            memory_used_bytes double precision,
            PRIMARY KEY (uuid, minute)
        );
        -- allocations granted before this step have their history row too
        INSERT INTO {SCHEMA}.allocation_history
            (id, user_name, server_name, profile, groups, device_uuids, started_at)
            SELECT id, user_name, server_name, profile, '{{}}', device_uuids, created_at
            FROM {SCHEMA}.allocations
        """,
    ),
)


def migrate(engine: Engine, steps: tuple[tuple[int, str, str], ...] = MIGRATIONS) -> list[int]:
    """Create or upgrade the schema; returns the steps applied now (none if up to date).

    Monitors starting at once wait on an advisory lock, so each step runs exactly once; a
    step and its schema_version row commit together, so a crash leaves no half step.
    """
    applied: list[int] = []
    with engine.begin() as conn:
        # monitors starting together wait for each other's migration, however long it takes
        conn.execute(sa.text("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0"))
        conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATE_LOCK)))
        conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
        conn.execute(
            sa.text(
                f"CREATE TABLE IF NOT EXISTS {SCHEMA}.schema_version ("
                " version integer PRIMARY KEY,"
                " description text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
        )
        done = set(
            conn.execute(sa.text(f"SELECT version FROM {SCHEMA}.schema_version")).scalars()
        )
        known = {version for version, _, _ in steps}
        if done - known:
            raise RuntimeError(
                f"the database's {SCHEMA} schema is at version {max(done)}, newer than this "
                f"monitor knows ({max(known)}); run the newer monitor or restore a backup"
            )
        for version, description, statement in sorted(steps):
            if version in done:
                continue
            conn.execute(sa.text(statement))
            conn.execute(
                sa.text(
                    f"INSERT INTO {SCHEMA}.schema_version (version, description)"
                    " VALUES (:version, :description)"
                ),
                {"version": version, "description": description},
            )
            applied.append(version)
    if applied:
        log.info("gpu_monitor schema: applied steps %s", applied)
    return applied
