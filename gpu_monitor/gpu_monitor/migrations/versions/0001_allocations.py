"""allocations

The first schema step of the runner that came before Alembic (its step 1), unchanged: a
database that runner migrated is stamped with this revision, not migrated again (`store.py`).

Revision ID: 0001
Revises:
"""

from alembic import op

from gpu_monitor.store import SCHEMA

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE {SCHEMA}.allocations (
            id text PRIMARY KEY,
            user_name text NOT NULL,
            server_name text NOT NULL,  -- '' is the user's default server
            profile text NOT NULL,
            device_uuids text[] NOT NULL,  -- in the order the allocator chose them
            created_at double precision NOT NULL,  -- seconds since the epoch
            CONSTRAINT allocations_user_server_key UNIQUE (user_name, server_name)
        )
        """)
