"""nodes and their devices, as each node's agent reports them

Every node runs a monitor agent (on a single host, the monitor itself): it writes its node's
row and its devices, and then, every sampling interval, the devices' last readings and their
cumulative busy and sampled seconds, and the node's `seen_at`. The monitor's API reads both
tables to know what exists, what is free and what each device does, on every node.

A device is known by its UUID across the whole cluster: the primary key refuses a second node
reporting a device another one has (a cloned disk image, a node renamed while its old name's
row lingers), and the agent says so instead of taking it over.

Revision ID: 0004
Revises: 0003
"""

from alembic import op

from gpu_monitor.store import SCHEMA

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(f"""
        CREATE TABLE {SCHEMA}.nodes (
            id text PRIMARY KEY,  -- Swarm's node id, or 'local' on a single host
            hostname text NOT NULL,
            labels jsonb NOT NULL,  -- {{"gpu": "a100", ...}}
            backend text NOT NULL,  -- nvml or cpu-slices
            driver_version text,
            cuda_driver_version text,  -- "12.2"
            agent_started_at double precision NOT NULL,  -- when the reporting agent started
            seen_at double precision NOT NULL  -- the agent's last report
        );
        CREATE TABLE {SCHEMA}.devices (
            uuid text PRIMARY KEY,
            node text NOT NULL REFERENCES {SCHEMA}.nodes (id) ON DELETE CASCADE,
            index integer NOT NULL,
            kind text NOT NULL,
            name text NOT NULL,
            memory_total_bytes bigint,
            parent_uuid text,
            docker_device_id text,
            cpuset text,
            attributes jsonb NOT NULL,
            -- the last reading (NULL: not sampled yet, or that field could not be read)
            sampled_at double precision,
            utilization_ratio double precision,
            memory_used_bytes bigint,
            temperature_celsius double precision,
            power_watts double precision,
            sample_errors text[] NOT NULL DEFAULT '{{}}',
            -- cumulative since the agent started (agent_started_at): they restart from 0 with it
            busy_seconds double precision NOT NULL DEFAULT 0,
            sampled_seconds double precision NOT NULL DEFAULT 0
        );
        CREATE INDEX devices_node ON {SCHEMA}.devices (node);
        """)
