"""Allocations kept in PostgreSQL, so a restarted monitor knows who holds which device.

`AllocationStore` is the thin shell around `allocator.decide()`: every allocating transaction
takes one advisory lock, reads the allocations, decides and inserts, then commits (which drops
the lock), exactly as the allocator's docstring asks. A batch of requests can share one such
transaction (`allocate_many`), decided in order as if they had come one after another.

Everything lives in the schema `gpu_monitor`, so the store can share the hub's database or have
its own. `migrate()` creates and upgrades that schema with the Alembic revisions in
`migrations/versions/` (as JupyterHub does its own), under an advisory lock, with the version
table `gpu_monitor.alembic_version`; it first adopts a database that the numbered runner of
gpuhub 0.13 and older migrated (`_adopt_numbered_steps`). The table definitions below are what
the queries use, kept equal to what the revisions make (`alembic check`, docker tier).

The store is synchronous (SQLAlchemy Core over psycopg2): an asyncio service calls it in an
executor. It reads no environment: the caller gives the URL or engine.
"""

from __future__ import annotations

import builtins
import logging
import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError

from .allocator import Allocation, AllocationRequest, Decision, Granted, Ledger, Policy
from .devices import LOCAL_NODE, Device, Node
from .reconcile import adoption_refusal

log = logging.getLogger(__name__)

SCHEMA = "gpu_monitor"

# Advisory lock keys (bigint, one namespace per database). Fixed numbers, not hashes of names,
# so every version of the monitor, and later every node's agent, takes the same lock.
# 0x67707568 is "gpuh" in ASCII.
ALLOCATE_LOCK = 0x67707568_00000001
MIGRATE_LOCK = 0x67707568_00000002

# The schema is made and changed by Alembic revisions (migrations/versions, one file per step,
# forward only; env.py puts the version table in this schema). Never edit a revision that has
# shipped: add one that changes what it made.
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The runner that came before Alembic (gpuhub 0.13 and older) recorded numbered steps in
# gpu_monitor.schema_version; revision 0001 is its step 1, 0002 its step 2, the same SQL. A
# database it migrated is adopted: stamped with the revision of its last step (`migrate`).
NUMBERED_STEP_REVISIONS = {1: "0001", 2: "0002"}

# Every session the monitor opens carries these limits (`session_options`). Without them one
# stuck session holding the allocation lock (a psql left open in a transaction, a hung
# client) hangs every allocation forever while the health check stays green.
LOCK_TIMEOUT_SECONDS = 5.0  # an allocating transaction holds the lock for milliseconds
STATEMENT_TIMEOUT_SECONDS = 30.0  # the longest query is an accounting report over months
IDLE_IN_TRANSACTION_SECONDS = 60.0  # PostgreSQL ends a session idle that long in a transaction
# TCP keepalives: a peer that vanished (host down, network cut) is noticed in about a minute
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 30, "keepalives_interval": 10, "keepalives_count": 3}
HEALTH_TIMEOUT_SECONDS = 2.0
# PostgreSQL's SQLSTATEs for "gave up waiting": lock_not_available, query_canceled
BUSY_SQLSTATES = ("55P03", "57014")


def session_options(lock_timeout: float = LOCK_TIMEOUT_SECONDS,
                    statement_timeout: float = STATEMENT_TIMEOUT_SECONDS,
                    idle_in_transaction: float = IDLE_IN_TRANSACTION_SECONDS) -> dict[str, Any]:
    """psycopg2 connect arguments: the session's timeouts, keepalives, and a name that shows in
    pg_stat_activity."""
    settings = {"lock_timeout": lock_timeout, "statement_timeout": statement_timeout,
                "idle_in_transaction_session_timeout": idle_in_transaction}
    options = " ".join(f"-c {name}={round(seconds * 1000)}" for name, seconds in settings.items())
    return {"options": options, "application_name": "gpu-monitor", **KEEPALIVES}


def is_busy(error: BaseException) -> bool:
    """A statement that gave up waiting (lock or statement timeout): the database answers but is
    held up, as opposed to unreachable."""
    return getattr(getattr(error, "orig", None), "pgcode", None) in BUSY_SQLSTATES


@dataclass(frozen=True)
class DatabaseHealth:
    ok: bool
    message: str


# Who holds the allocation lock, and for how long (one advisory lock on a bigint key shows in
# pg_locks as classid = its high 32 bits, objid = its low 32 bits, objsubid = 1).
_LOCK_HOLDER_SQL = """SELECT l.pid, extract(epoch FROM now() - a.xact_start), a.state, a.application_name
FROM pg_locks l LEFT JOIN pg_stat_activity a ON a.pid = l.pid
WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 1"""

# Device history is kept one day (the dashboard's longest chart) and a little more.
DEVICE_HISTORY_SECONDS = 25 * 3600

metadata = sa.MetaData(schema=SCHEMA)
allocations_table = sa.Table(
    "allocations",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("server_name", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("device_uuids", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("created_at", sa.Double, nullable=False),
    sa.Column("node", sa.Text, nullable=False, server_default=sa.text(f"'{LOCAL_NODE}'")),
    sa.UniqueConstraint("user_name", "server_name", name="allocations_user_server_key"),
)
history_table = sa.Table(
    "allocation_history",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("user_name", sa.Text, nullable=False),
    sa.Column("server_name", sa.Text, nullable=False),
    sa.Column("profile", sa.Text, nullable=False),
    sa.Column("groups", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("device_uuids", postgresql.ARRAY(sa.Text), nullable=False),
    sa.Column("started_at", sa.Double, nullable=False),
    sa.Column("ended_at", sa.Double),
    sa.Column("node", sa.Text, nullable=False, server_default=sa.text(f"'{LOCAL_NODE}'")),
    sa.Index("allocation_history_period", "started_at", "ended_at"),
)
usage_table = sa.Table(
    "allocation_usage",
    metadata,
    sa.Column("allocation_id", sa.Text, sa.ForeignKey(history_table.c.id, ondelete="CASCADE"), primary_key=True),
    sa.Column("hour", sa.Double, primary_key=True),
    sa.Column("busy_seconds", sa.Double, nullable=False),
    sa.Column("sampled_seconds", sa.Double, nullable=False),
)
device_history_table = sa.Table(
    "device_history",
    metadata,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("minute", sa.Double, primary_key=True),
    sa.Column("utilization_ratio", sa.Double),
    sa.Column("memory_used_bytes", sa.Double),
)
# What each node's agent reports (revision 0004; gpu_monitor/inventory.py reads and writes them).
nodes_table = sa.Table(
    "nodes",
    metadata,
    sa.Column("id", sa.Text, primary_key=True),
    sa.Column("hostname", sa.Text, nullable=False),
    sa.Column("labels", postgresql.JSONB, nullable=False),
    sa.Column("backend", sa.Text, nullable=False),
    sa.Column("driver_version", sa.Text),
    sa.Column("cuda_driver_version", sa.Text),
    sa.Column("agent_started_at", sa.Double, nullable=False),
    sa.Column("seen_at", sa.Double, nullable=False),
)
devices_table = sa.Table(
    "devices",
    metadata,
    sa.Column("uuid", sa.Text, primary_key=True),
    sa.Column("node", sa.Text, sa.ForeignKey(nodes_table.c.id, ondelete="CASCADE"), nullable=False),
    sa.Column("index", sa.Integer, nullable=False),
    sa.Column("kind", sa.Text, nullable=False),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("memory_total_bytes", sa.BigInteger),
    sa.Column("parent_uuid", sa.Text),
    sa.Column("docker_device_id", sa.Text),
    sa.Column("cpuset", sa.Text),
    sa.Column("attributes", postgresql.JSONB, nullable=False),
    sa.Column("sampled_at", sa.Double),
    sa.Column("utilization_ratio", sa.Double),
    sa.Column("memory_used_bytes", sa.BigInteger),
    sa.Column("temperature_celsius", sa.Double),
    sa.Column("power_watts", sa.Double),
    sa.Column("sample_errors", postgresql.ARRAY(sa.Text), nullable=False, server_default=sa.text("'{}'")),
    sa.Column("busy_seconds", sa.Double, nullable=False, server_default=sa.text("0")),
    sa.Column("sampled_seconds", sa.Double, nullable=False, server_default=sa.text("0")),
    sa.Index("devices_node", "node"),
)
_columns = (
    allocations_table.c.id,
    allocations_table.c.user_name,
    allocations_table.c.server_name,
    allocations_table.c.profile,
    allocations_table.c.device_uuids,
    allocations_table.c.created_at,
    allocations_table.c.node,
)

_COLUMN_NAMES = ", ".join(c.name for c in _columns)
# a new history row: every column but ended_at, in the table's order
_HISTORY_COLUMNS = ", ".join(c.name for c in history_table.c if c.name != "ended_at")


def _insert_and_commit(grants: Sequence[tuple[Allocation, AllocationRequest]]) -> tuple[str, tuple[Any, ...]]:
    """The statement string (and its parameters) that stores new grants in both tables and
    commits: one round trip. psycopg2 fills in the parameters (lists become arrays)."""
    if not grants:
        return "COMMIT", ()
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s)"] * len(grants))
    history_values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(grants))
    current = tuple(v for a, _ in grants
                    for v in (a.id, a.user, a.server, a.profile, list(a.device_uuids), a.created_at, a.node))
    history = tuple(v for a, r in grants
                    for v in (a.id, a.user, a.server, a.profile, sorted(r.groups), list(a.device_uuids),
                              a.created_at, a.node))
    sql = (f"INSERT INTO {SCHEMA}.allocations ({_COLUMN_NAMES}) VALUES {values}; "
           f"INSERT INTO {SCHEMA}.allocation_history ({_HISTORY_COLUMNS}) VALUES {history_values}; COMMIT")
    return sql, current + history


def _abandon(conn: Connection) -> None:
    """Close a connection whose explicit transaction failed. The transaction is still open on
    the server: end it, or drop the connection if even that fails, so that the pool never
    hands out a session that holds the lock or sits in a failed transaction."""
    try:
        if not conn.invalidated:
            conn.exec_driver_sql("ROLLBACK")
    except Exception:  # noqa: BLE001 - the caller raises the original error
        conn.invalidate()
    finally:
        conn.close()


def alembic_config(conn: Connection, applied: builtins.list[str] | None = None) -> Config:
    """Alembic's configuration for the monitor's schema, without an alembic.ini: the revisions
    run on `conn`, in its transaction (migrations/env.py), and those run are appended to
    `applied`."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = conn
    config.attributes["applied"] = applied if applied is not None else []
    return config


def schema_revisions(config: Config) -> builtins.list[str]:
    """Every revision, oldest first."""
    return [script.revision for script in reversed(list(ScriptDirectory.from_config(config).walk_revisions()))]


def _current_revision(conn: Connection) -> str | None:
    return MigrationContext.configure(conn, opts={"version_table_schema": SCHEMA}).get_current_revision()


def _adopt_numbered_steps(conn: Connection, config: Config) -> str | None:
    """A database that the numbered runner (gpuhub 0.13 and older) migrated: stamp the revision
    of its last step, running no DDL, and drop its schema_version table, in the migration's
    transaction. Returns the revision stamped, None for a database that runner never saw.

    The table goes because Alembic's version table is the one record from now on: one kept
    would stay at the last numbered step while revisions move on. An older monitor started
    against the adopted database then fails at its first step (the table exists) and changes
    nothing, its transaction rolled back."""
    old = f"{SCHEMA}.schema_version"
    if conn.execute(sa.text("SELECT to_regclass(:name)"), {"name": old}).scalar() is None:
        return None
    last: int | None = conn.execute(sa.text(f"SELECT max(version) FROM {old}")).scalar()
    revision = None if last is None else NUMBERED_STEP_REVISIONS.get(last)
    if revision is None:
        raise RuntimeError(
            f"the database's {SCHEMA} schema is at numbered step {last}, which this monitor does not "
            f"know (it adopts steps {min(NUMBERED_STEP_REVISIONS)}..{max(NUMBERED_STEP_REVISIONS)} of "
            f"{old}); run the newer monitor or restore a backup"
        )
    command.stamp(config, revision)
    conn.execute(sa.text(f"DROP TABLE {old}"))
    log.info("gpu_monitor schema: adopted the numbered steps up to %s as revision %s", last, revision)
    return revision


# A unique violation can only happen if a writer skipped the lock (an older monitor, a manual
# INSERT); deciding again then sees the winner's row. More than this many means something is
# badly wrong, and the error is raised.
_ATTEMPTS = 3
_UNIQUE_VIOLATION = "23505"


class AllocationStore:
    """Allocations of devices to (user, server), kept in PostgreSQL. Blocking: call from a thread."""

    def __init__(self, engine: Engine, allocation_engine: Engine | None = None) -> None:
        """`allocation_engine` serves allocating transactions only; it must reach the same
        database. Without one, a pool of its own is made from `engine`'s URL."""
        if engine.dialect.name != "postgresql":
            raise ValueError(
                f"the allocation store needs PostgreSQL, not {engine.dialect.name!r}; "
                "give it a postgresql+psycopg2:// URL"
            )
        self.engine = engine
        # Autocommit at the driver, so that the allocating transaction can send its own BEGIN
        # with the lock and the read; no pre-ping: `_begin_locked` retries a dropped connection.
        self.allocation_engine = allocation_engine or sa.create_engine(engine.url)
        self.allocation_engine = self.allocation_engine.execution_options(isolation_level="AUTOCOMMIT")
        # the health check's own connection: a pool that allocations exhausted must not make
        # the check wait (it has its own short timeouts; `health`)
        self.health_engine = sa.create_engine(
            engine.url, pool_size=1, max_overflow=1, pool_timeout=HEALTH_TIMEOUT_SECONDS, pool_pre_ping=True,
            connect_args={"connect_timeout": max(1, round(HEALTH_TIMEOUT_SECONDS)),
                          **session_options(HEALTH_TIMEOUT_SECONDS, HEALTH_TIMEOUT_SECONDS)})
        self.lock_timeout = LOCK_TIMEOUT_SECONDS

    @classmethod
    def from_url(cls, url: str | sa.URL, lock_timeout: float = LOCK_TIMEOUT_SECONDS,
                 statement_timeout: float = STATEMENT_TIMEOUT_SECONDS, **engine_options: Any) -> AllocationStore:
        """A store with its own engines, every session limited by `session_options`. Name the
        driver (`postgresql+psycopg2://`): SQLAlchemy 2.1 reads a bare `postgresql://` as
        psycopg 3, which the monitor does not install."""
        connect_args = {**session_options(lock_timeout, statement_timeout), **engine_options.pop("connect_args", {})}
        options: dict[str, Any] = {"pool_pre_ping": True, **engine_options, "connect_args": connect_args}
        store = cls(sa.create_engine(url, **options),
                    sa.create_engine(url, **{**options, "pool_pre_ping": False}))
        store.lock_timeout = lock_timeout
        return store

    def dispose(self) -> None:
        self.engine.dispose()
        self.allocation_engine.dispose()
        self.health_engine.dispose()

    def health(self) -> DatabaseHealth:
        """Does PostgreSQL answer (within HEALTH_TIMEOUT_SECONDS), and is the allocation lock
        free or held only briefly? A lock held longer than the lock timeout means allocations
        fail: say by whom, so that the operator can end that session."""
        high, low = ALLOCATE_LOCK >> 32, ALLOCATE_LOCK & 0xFFFFFFFF
        try:
            with self.health_engine.connect() as conn:
                rows = conn.exec_driver_sql(_LOCK_HOLDER_SQL, (high, low)).all()
        except Exception as e:  # noqa: BLE001 - the answer is the health
            first = str(getattr(e, "orig", None) or e).strip().splitlines()
            return DatabaseHealth(False, f"the database does not answer: {first[0] if first else type(e).__name__}")
        for pid, held_for, state, application in rows:
            if held_for is not None and held_for > self.lock_timeout:
                return DatabaseHealth(False, (
                    f"database busy: PostgreSQL session {pid} ({application or 'unknown client'}, "
                    f"{state or 'state unknown'}) has held the allocation lock for {held_for:.0f} s, so "
                    f"allocations fail after {self.lock_timeout:g} s; if it is stuck, end it: "
                    f"SELECT pg_terminate_backend({pid})"))
        return DatabaseHealth(True, "ok")

    # ---- schema ---------------------------------------------------------------------------------
    def migrate(self) -> builtins.list[str]:
        """Create or upgrade the schema; returns the revisions applied now (none if up to date).

        Monitors starting at once wait on an advisory lock, so each revision runs exactly once;
        they all run in that one transaction, so a crash leaves no half step. A database of the
        numbered runner that came before is adopted first (`_adopt_numbered_steps`).
        """
        applied: builtins.list[str] = []
        with self.engine.begin() as conn:
            # monitors starting together wait for each other's migration, however long it takes
            conn.execute(sa.text("SET LOCAL lock_timeout = 0; SET LOCAL statement_timeout = 0"))
            conn.execute(sa.select(sa.func.pg_advisory_xact_lock(MIGRATE_LOCK)))
            conn.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}"))
            config = alembic_config(conn, applied)
            known = schema_revisions(config)
            current = _current_revision(conn)
            if current is None:
                current = _adopt_numbered_steps(conn, config)
            if current is not None and current not in known:
                raise RuntimeError(
                    f"the database's {SCHEMA} schema is at revision {current}, newer than this "
                    f"monitor knows ({known[-1]}); run the newer monitor or restore a backup"
                )
            command.upgrade(config, "head")
        if applied:
            log.info("gpu_monitor schema: applied revisions %s", applied)
        return applied

    def schema_revision(self) -> str | None:
        """The revision the schema is at, None for a database that `migrate()` has not seen."""
        with self.engine.connect() as conn:
            return _current_revision(conn)

    # ---- allocations ------------------------------------------------------------------------------
    def allocate(
        self,
        request: AllocationRequest,
        devices: Sequence[Device],
        policy: Policy,
        now: float | None = None,
        nodes: Sequence[Node] | None = None,
    ) -> Decision:
        """Grant or refuse `request` against the allocations stored now, storing a new grant.

        Serialised by one advisory lock across all monitors on this database, so concurrent
        requests never both get the last free device. Asking again for what (user, server)
        holds returns it (`existing=True`) without writing.
        """
        return self.allocate_many([request], devices, policy, now, nodes=nodes)[0]

    def allocate_many(
        self,
        requests: Sequence[AllocationRequest],
        devices: Sequence[Device],
        policy: Policy,
        now: float | None = None,
        unavailable: frozenset[str] = frozenset(),
        nodes: Sequence[Node] | None = None,
    ) -> builtins.list[Decision]:
        """Decide a batch of requests in one transaction, in order, each seeing the grants of
        the ones before it: exactly as if they had come one after another, for the cost of one
        lock and one commit. The service batches requests that arrive together (group commit).
        `unavailable`: devices never to grant (used by containers that hold no allocation).
        `nodes`: the hosts of the devices and their states (None: every device's node is up).
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                return self._allocate_once(requests, devices, policy, now, unavailable, nodes)
            except IntegrityError as e:
                if getattr(e.orig, "pgcode", None) != _UNIQUE_VIOLATION or attempt == _ATTEMPTS:
                    raise
                # Someone inserted (user, server) without taking the lock; deciding again
                # returns their row as existing, or a conflict.
                log.warning("an allocation raced a writer that skipped the lock; deciding again")
        raise AssertionError("unreachable")  # the loop returns or raises

    def _allocate_once(
        self,
        requests: Sequence[AllocationRequest],
        devices: Sequence[Device],
        policy: Policy,
        now: float | None,
        unavailable: frozenset[str] = frozenset(),
        nodes: Sequence[Node] | None = None,
    ) -> builtins.list[Decision]:
        # Two round trips to PostgreSQL, not seven: BEGIN, the lock and the read go in one
        # message, the inserts and COMMIT in another (psycopg2 sends a statement string with
        # several statements as one simple query). A round trip costs little on its own, but
        # the worker thread takes the GIL back after each one, and under a burst the event loop
        # is busy parsing requests: each handover can wait. The explicit BEGIN needs the
        # driver in autocommit mode (`allocation_engine`).
        conn, held = self._begin_locked()
        try:
            decisions: builtins.list[Decision] = []
            new_rows: builtins.list[tuple[Allocation, AllocationRequest]] = []
            # counted once for the batch; each grant recorded for the requests after it
            ledger = Ledger(devices, held, policy, unavailable, nodes)
            for request in requests:
                decision = ledger.decide(request, now=time.time() if now is None else now, new_id=str(uuid.uuid4()))
                if isinstance(decision, Granted) and not decision.existing:
                    ledger.record(decision.allocation)
                    new_rows.append((decision.allocation, request))
                decisions.append(decision)
            conn.exec_driver_sql(*_insert_and_commit(new_rows))
        except BaseException:
            _abandon(conn)
            raise
        conn.close()
        return decisions

    def _begin_locked(self) -> tuple[Connection, builtins.list[Allocation]]:
        """A connection in a transaction that holds the allocation lock, and every allocation,
        in one round trip. A pooled connection that PostgreSQL dropped (it restarted) fails
        here, before anything is written: then once more on a fresh one. That is what the
        pre-ping of the other queries does, without its round trip on every transaction."""
        sql = f"BEGIN; {self._lock_sql()} SELECT {_COLUMN_NAMES} FROM {SCHEMA}.allocations"
        for attempt in (1, 2):
            conn = self.allocation_engine.connect()
            try:
                rows = conn.exec_driver_sql(sql).all()
            except DBAPIError as e:
                _abandon(conn)
                if e.connection_invalidated and attempt == 1:
                    continue
                raise
            except BaseException:
                _abandon(conn)
                raise
            return conn, [Allocation(id=r[0], user=r[1], server=r[2], profile=r[3],
                                     device_uuids=tuple(r[4]), created_at=r[5], node=r[6]) for r in rows]
        raise AssertionError("unreachable")  # the loop returns or raises

    def _lock_sql(self) -> str:
        """Wait for the allocation lock; the transaction's commit or rollback drops it.
        (READ COMMITTED takes a new snapshot per statement: the read after it sees every
        allocation committed by earlier lock holders.)"""
        return f"SELECT pg_advisory_xact_lock({ALLOCATE_LOCK});"

    def adopt(self, allocation: Allocation, seats: Mapping[str, int]) -> str | None:
        """Hold `allocation` again (same id) for the running container that uses its devices;
        None when done, else why not. Under the allocation lock, checked again against what is
        held now (`reconcile.adoption_refusal`), so it never takes a seat a grant just took. Its
        history row, if it was released, is open again (usage counts on from now)."""
        conn, held = self._begin_locked()
        try:
            refusal = adoption_refusal(allocation, held, seats)
            if refusal is not None:
                conn.exec_driver_sql("ROLLBACK")
                conn.close()
                return refusal
            a = allocation
            conn.exec_driver_sql(
                f"INSERT INTO {SCHEMA}.allocations ({_COLUMN_NAMES}) VALUES (%s, %s, %s, %s, %s, %s, %s); "
                f"INSERT INTO {SCHEMA}.allocation_history ({_HISTORY_COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO UPDATE SET ended_at = NULL; COMMIT",
                (a.id, a.user, a.server, a.profile, list(a.device_uuids), a.created_at, a.node,
                 a.id, a.user, a.server, a.profile, [], list(a.device_uuids), a.created_at, a.node))
        except BaseException:
            _abandon(conn)
            raise
        conn.close()
        return None

    def release(self, allocation_id: str, now: float | None = None) -> Allocation | None:
        """Remove an allocation; returns it, or None if it was not there (releasing twice is
        fine: the stop hook may run more than once). Its history row records the end."""
        with self.engine.begin() as conn:
            rows = self._select(
                conn,
                sa.delete(allocations_table)
                .where(allocations_table.c.id == allocation_id)
                .returning(*_columns),
            )
            if rows:
                conn.execute(
                    sa.update(history_table)
                    .where(history_table.c.id == allocation_id, history_table.c.ended_at.is_(None))
                    .values(ended_at=time.time() if now is None else now)
                )
        return rows[0] if rows else None

    # ---- usage, history, accounting -------------------------------------------------------------
    def record_usage(
        self,
        usage: Sequence[tuple[str, float, float, float]],
        device_points: Sequence[tuple[str, float, float | None, float | None]],
        now: float | None = None,
    ) -> None:
        """Add (allocation id, hour, busy s, sampled s) to the hourly usage, store
        (uuid, minute, utilisation, memory) device points, and drop device history older than
        DEVICE_HISTORY_SECONDS, in one transaction. Usage of an allocation released meanwhile
        still counts (its history row stays)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            if usage:
                known = set(conn.execute(
                    sa.select(history_table.c.id).where(history_table.c.id.in_({u[0] for u in usage}))
                ).scalars())
                rows = [{"allocation_id": a, "hour": h, "busy_seconds": b, "sampled_seconds": s}
                        for a, h, b, s in usage if a in known]
                if rows:
                    insert = postgresql.insert(usage_table).values(rows)
                    conn.execute(insert.on_conflict_do_update(
                        index_elements=[usage_table.c.allocation_id, usage_table.c.hour],
                        set_={
                            "busy_seconds": usage_table.c.busy_seconds + insert.excluded.busy_seconds,
                            "sampled_seconds": usage_table.c.sampled_seconds + insert.excluded.sampled_seconds,
                        },
                    ))
            if device_points:
                insert = postgresql.insert(device_history_table).values([
                    {"uuid": u, "minute": m, "utilization_ratio": util, "memory_used_bytes": mem}
                    for u, m, util, mem in device_points])
                conn.execute(insert.on_conflict_do_update(
                    index_elements=[device_history_table.c.uuid, device_history_table.c.minute],
                    set_={"utilization_ratio": insert.excluded.utilization_ratio,
                          "memory_used_bytes": insert.excluded.memory_used_bytes},
                ))
            conn.execute(sa.delete(device_history_table).where(
                device_history_table.c.minute < now - DEVICE_HISTORY_SECONDS))

    def usage_totals(self, ids: Sequence[str]) -> dict[str, tuple[float, float]]:
        """{allocation id: (busy seconds, sampled seconds)} over its whole life so far."""
        if not ids:
            return {}
        u = usage_table
        with self.engine.connect() as conn:
            return {r[0]: (float(r[1]), float(r[2])) for r in conn.execute(
                sa.select(u.c.allocation_id, sa.func.sum(u.c.busy_seconds), sa.func.sum(u.c.sampled_seconds))
                .where(u.c.allocation_id.in_(list(ids))).group_by(u.c.allocation_id))}

    def device_history(self, since: float) -> builtins.list[tuple[str, float, float | None, float | None]]:
        """(uuid, minute, utilisation, memory) since `since`, oldest first."""
        t = device_history_table
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(  # type: ignore[misc]
                sa.select(t.c.uuid, t.c.minute, t.c.utilization_ratio, t.c.memory_used_bytes)
                .where(t.c.minute >= since).order_by(t.c.uuid, t.c.minute))]

    def history(self, start: float, end: float) -> builtins.list[dict[str, Any]]:
        """Allocations that overlap [start, end), with their usage per hour in that window."""
        h, u = history_table, usage_table
        with self.engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(
                sa.select(h).where(h.c.started_at < end,
                                   sa.or_(h.c.ended_at.is_(None), h.c.ended_at > start))
                .order_by(h.c.started_at, h.c.id))]
            usage: dict[str, builtins.list[tuple[float, float, float]]] = {}
            if rows:
                for r in conn.execute(
                    sa.select(u.c.allocation_id, u.c.hour, u.c.busy_seconds, u.c.sampled_seconds)
                    .where(u.c.allocation_id.in_([row["id"] for row in rows]),
                           u.c.hour < end, u.c.hour + 3600 > start)
                ):
                    usage.setdefault(r.allocation_id, []).append((r.hour, r.busy_seconds, r.sampled_seconds))
        for row in rows:
            row["usage"] = sorted(usage.get(row["id"], []))
        return rows

    def get(self, allocation_id: str) -> Allocation | None:
        with self.engine.connect() as conn:
            rows = self._select(
                conn, sa.select(*_columns).where(allocations_table.c.id == allocation_id)
            )
        return rows[0] if rows else None

    def list(self, user: str | None = None) -> builtins.list[Allocation]:
        """Every allocation, or one user's, oldest first."""
        query = sa.select(*_columns).order_by(
            allocations_table.c.created_at, allocations_table.c.id
        )
        if user is not None:
            query = query.where(allocations_table.c.user_name == user)
        with self.engine.connect() as conn:
            return self._select(conn, query)

    @staticmethod
    def _select(conn: Connection, statement: sa.Executable) -> builtins.list[Allocation]:
        return [
            Allocation(
                id=row.id,
                user=row.user_name,
                server=row.server_name,
                profile=row.profile,
                device_uuids=tuple(row.device_uuids),
                created_at=row.created_at,
                node=row.node,
            )
            for row in conn.execute(statement)
        ]
