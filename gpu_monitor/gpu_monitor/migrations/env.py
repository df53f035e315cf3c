"""The Alembic environment of the monitor's schema, run by `AllocationStore.migrate()` only.

Online, on the connection that `migrate()` hands over in `config.attributes["connection"]`:
it is in a transaction that holds the migration lock, so the revisions run in that transaction
and commit together when `migrate()` ends (PostgreSQL's DDL is transactional: a crash leaves
no half step). The version table is `gpu_monitor.alembic_version`, apart from the hub's own
`alembic_version` when both share a database. Revisions go forward only (no downgrade): to go
back, restore a backup.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from gpu_monitor.store import SCHEMA, metadata

config = context.config
connection = config.attributes.get("connection")
if connection is None or context.is_offline_mode():
    raise RuntimeError("the gpu_monitor schema is migrated by AllocationStore.migrate(), which passes its connection")
applied: list[str] = config.attributes.get("applied", [])


def record(ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
    """Collect the revisions run now (not stamped) for `migrate()` to return."""
    if step.is_upgrade and not step.is_stamp:
        applied.append(step.up_revision_id)


context.configure(
    connection=connection,
    version_table_schema=SCHEMA,
    # for `alembic check` and autogenerate: the store's tables, compared in its schema only
    target_metadata=metadata,
    include_schemas=True,
    include_name=lambda name, kind, parent: kind != "schema" or name == SCHEMA,
    on_version_apply=record,
)
with context.begin_transaction():
    context.run_migrations()
