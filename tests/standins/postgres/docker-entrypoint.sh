#!/usr/bin/env bash
# Entrypoint of the postgres:15 test stand-in: a small re-implementation of the
# official image's docker-entrypoint.sh (same env interface, same behaviour on
# first start, same uid), on Debian's postgresql-15.
set -Eeuo pipefail

log() { echo "docker-entrypoint: $*" >&2; }

# file_env VAR [DEFAULT]: VAR from $VAR or from the file named by $VAR_FILE.
file_env() {
    local var=$1 fileVar="${1}_FILE" def=${2:-} val
    if [ -n "${!var:-}" ] && [ -n "${!fileVar:-}" ]; then
        log "error: both $var and $fileVar are set (but are exclusive)"
        exit 1
    fi
    val=$def
    if [ -n "${!var:-}" ]; then
        val=${!var}
    elif [ -n "${!fileVar:-}" ]; then
        val=$(<"${!fileVar}")
    fi
    export "$var"="$val"
    unset "$fileVar"
}

# `docker run postgres:15 -c foo=bar` means `postgres -c foo=bar`.
if [ $# -eq 0 ] || [ "${1:0:1}" = "-" ]; then
    set -- postgres "$@"
fi

if [ "$1" != postgres ]; then
    exec "$@"
fi

if [ "$(id -u)" = 0 ]; then
    # As root: make the data and socket directories usable by postgres, then
    # re-run this script as postgres (so secrets are read as postgres, as upstream).
    mkdir -p "$PGDATA" /var/run/postgresql
    chown postgres:postgres /var/run/postgresql
    chmod 3777 /var/run/postgresql
    find "$PGDATA" \! -user postgres -exec chown postgres:postgres '{}' +
    chmod 00700 "$PGDATA" || :
    export HOME=/var/lib/postgresql USER=postgres
    exec setpriv --reuid=postgres --regid=postgres --init-groups "${BASH_SOURCE[0]}" "$@"
fi

mkdir -p "$PGDATA"
chmod 00700 "$PGDATA" 2>/dev/null || :

if [ ! -s "$PGDATA/PG_VERSION" ]; then
    file_env POSTGRES_PASSWORD
    file_env POSTGRES_USER postgres
    file_env POSTGRES_DB "$POSTGRES_USER"
    file_env POSTGRES_INITDB_ARGS
    : "${POSTGRES_HOST_AUTH_METHOD:=scram-sha-256}"

    if [ -z "$POSTGRES_PASSWORD" ] && [ "$POSTGRES_HOST_AUTH_METHOD" != trust ]; then
        log "error: database is uninitialized and superuser password is not specified."
        log "       Set POSTGRES_PASSWORD (or POSTGRES_PASSWORD_FILE), or POSTGRES_HOST_AUTH_METHOD=trust."
        exit 1
    fi
    if [ -n "$(find "$PGDATA" -mindepth 1 -maxdepth 1 ! -name lost+found -print -quit)" ]; then
        log "error: $PGDATA has no PG_VERSION but is not empty; refusing to initdb over it"
        exit 1
    fi

    log "initializing database in $PGDATA"
    # shellcheck disable=SC2086
    initdb --username="$POSTGRES_USER" --pwfile=<(printf '%s\n' "$POSTGRES_PASSWORD") \
        $POSTGRES_INITDB_ARGS >/dev/null
    # Host connections from anywhere, with passwords (scram-sha-256 by default);
    # the conf sample already says listen_addresses = '*'.
    printf '\nhost all all all %s\n' "$POSTGRES_HOST_AUTH_METHOD" >>"$PGDATA/pg_hba.conf"

    # Temporary server on the unix socket only, for POSTGRES_DB and init scripts.
    PGUSER=$POSTGRES_USER PGPASSWORD=$POSTGRES_PASSWORD \
        pg_ctl -D "$PGDATA" -o "-c listen_addresses='' -p 5432" -w start >/dev/null
    psql_init=(psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --no-password --no-psqlrc)
    if [ "$POSTGRES_DB" != postgres ]; then
        exists=$("${psql_init[@]}" --dbname postgres -tAc \
            "SELECT 1 FROM pg_database WHERE datname = '${POSTGRES_DB//\'/\'\'}'")
        if [ -z "$exists" ]; then
            "${psql_init[@]}" --dbname postgres --set db="$POSTGRES_DB" >/dev/null <<<'CREATE DATABASE :"db";'
        fi
    fi
    for f in /docker-entrypoint-initdb.d/*; do
        [ -e "$f" ] || continue
        case "$f" in
            *.sh)
                log "running $f"
                if [ -x "$f" ]; then
                    "$f"
                else
                    # shellcheck disable=SC1090
                    . "$f"
                fi
                ;;
            *.sql)    log "running $f"; "${psql_init[@]}" --dbname "$POSTGRES_DB" -f "$f" ;;
            *.sql.gz) log "running $f"; gunzip -c "$f" | "${psql_init[@]}" --dbname "$POSTGRES_DB" ;;
            *)        log "ignoring $f" ;;
        esac
    done
    pg_ctl -D "$PGDATA" -m fast -w stop >/dev/null
    unset PGPASSWORD
    log "database initialized; starting postgres"
else
    log "database directory $PGDATA already initialized; skipping initdb"
fi

exec "$@"
