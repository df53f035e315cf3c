"""Noticing a lost or replaced crypt key before the hub runs with it.

The hub encrypts each person's login state (OAuth tokens, groups) with the key in
`secrets/crypt_key`. If that file is lost (a volume removed, a restore without the secrets) the
init step makes a new one, and the hub would quietly fail to read every stored login state.
So the hub keeps the key's fingerprint (SHA-256 of a fixed label under the key, never the key)
in its database, and refuses to start when the key differs, saying what to do:
restore the key from the backup, or deliberately forget the stored login states
(`python -m gpuhub.cryptcheck --forget-login-state`), after which people simply log in again.
"""

from __future__ import annotations

import hashlib
import hmac
import sys
from typing import Any

from gpu_monitor.env import ConfigError

TABLE = "gpuhub_meta"
KEY = "crypt_key_fingerprint"


def fingerprint(key: bytes) -> str:
    return hmac.new(key, b"gpuhub crypt key fingerprint", hashlib.sha256).hexdigest()


def check(conn: Any, key: bytes) -> str:
    """Record the fingerprint the first time; afterwards raise ConfigError if it changed.
    Returns "recorded" or "unchanged". `conn` is a DB-API connection (psycopg2)."""
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY, value text NOT NULL)")
        cur.execute(f"SELECT value FROM {TABLE} WHERE key = %s", (KEY,))
        row = cur.fetchone()
        current = fingerprint(key)
        if row is None:
            cur.execute(f"INSERT INTO {TABLE} (key, value) VALUES (%s, %s)", (KEY, current))
            conn.commit()
            return "recorded"
        conn.commit()
    if row[0] != current:
        raise ConfigError(
            "GPUHUB_SECRETS_DIR",
            "crypt_key is not the key this database's login states were encrypted with (was it "
            "lost, or a new volume?): restore secrets/crypt_key from your backup (README: Backup "
            "and restore), or forget every stored login state with `docker compose run --rm hub-tools "
            "python -m gpuhub.cryptcheck --forget-login-state` (people then log in again)",
        )
    return "unchanged"


def forget_login_state(conn: Any, key: bytes) -> int:
    """Drop every stored (now unreadable) login state and record the current key. Returns how
    many users had one."""
    with conn.cursor() as cur:
        cur.execute("UPDATE users SET encrypted_auth_state = NULL WHERE encrypted_auth_state IS NOT NULL")
        count = cur.rowcount
        cur.execute(f"CREATE TABLE IF NOT EXISTS {TABLE} (key text PRIMARY KEY, value text NOT NULL)")
        cur.execute(f"INSERT INTO {TABLE} (key, value) VALUES (%s, %s) "
                    f"ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value", (KEY, fingerprint(key)))
    conn.commit()
    return count


def connect(settings: Any) -> Any:
    import psycopg2

    return psycopg2.connect(host=settings.db_host, port=5432, dbname=settings.db_name, user=settings.db_user,
                            passfile=settings.pgpass_file, connect_timeout=10)


def main(argv: list[str] | None = None) -> int:
    from pathlib import Path

    from gpu_monitor.env import read_secret_file

    from .settings import load_settings

    args = sys.argv[1:] if argv is None else argv
    if args != ["--forget-login-state"]:
        print("usage: python -m gpuhub.cryptcheck --forget-login-state", file=sys.stderr)
        return 2
    settings = load_settings()
    key = bytes.fromhex(read_secret_file("GPUHUB_SECRETS_DIR", str(Path(settings.secrets_dir) / "crypt_key")))
    conn = connect(settings)
    try:
        count = forget_login_state(conn, key)
    finally:
        conn.close()
    print(f"gpuhub: forgot the stored login state of {count} user(s); the current crypt key is recorded")
    return 0


if __name__ == "__main__":
    sys.exit(main())
