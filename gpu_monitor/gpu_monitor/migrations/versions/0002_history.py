"""allocation history, hourly usage, device history

The second schema step of the runner that came before Alembic (its step 2), unchanged.

Revision ID: 0002
Revises: 0001
"""

from alembic import op

from gpu_monitor.store import SCHEMA

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(f"""
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
        """)
