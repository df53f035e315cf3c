"""the node of each allocation

One server's devices are on one node, and its allocation says which: a Swarm node's id, or
'local' on a single host. Allocations made before nodes were recorded were all on the single
host, so they, and rows an older monitor still inserts during an upgrade, get 'local'.

Revision ID: 0003
Revises: 0002
"""

from alembic import op

from gpu_monitor.store import SCHEMA

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(f"""
        ALTER TABLE {SCHEMA}.allocations ADD COLUMN node text NOT NULL DEFAULT 'local';
        ALTER TABLE {SCHEMA}.allocation_history ADD COLUMN node text NOT NULL DEFAULT 'local';
        """)
