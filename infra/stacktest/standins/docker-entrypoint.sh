#!/bin/sh
# The official postgres image's entrypoint, as far as the stack uses it: the first start
# makes the cluster in PGDATA (UTF8, as the official image: psycopg returns bytes from
# an SQL_ASCII database) with POSTGRES_USER (superuser), POSTGRES_PASSWORD and
# POSTGRES_DB; every start runs `postgres` as the postgres user, listening on every
# address, password (SCRAM) required over TCP. Arguments after "postgres" pass through.
set -eu
PGDATA=${PGDATA:-/var/lib/postgresql/data}
: "${POSTGRES_USER:?set POSTGRES_USER}" "${POSTGRES_PASSWORD:?set POSTGRES_PASSWORD}"
POSTGRES_DB=${POSTGRES_DB:-$POSTGRES_USER}
if [ "${1:-}" = postgres ]; then shift; fi
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres -m 2775 /var/run/postgresql
as_postgres() { setpriv --reuid=postgres --regid=postgres --init-groups "$@"; }
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" > "$pwfile"
    chown postgres "$pwfile"
    as_postgres initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
        --auth-local=trust --auth-host=scram-sha-256 > /dev/null
    rm -f "$pwfile"
    echo "host all all all scram-sha-256" >> "$PGDATA/pg_hba.conf"
    # the first start listens on a private socket only: pg_isready (the healthcheck) and
    # clients see no server until the database exists
    install -d -o postgres -g postgres /tmp/initdb
    as_postgres pg_ctl -D "$PGDATA" -w start \
        -o "-c listen_addresses='' -c unix_socket_directories=/tmp/initdb" > /dev/null
    if [ "$POSTGRES_DB" != postgres ]; then
        as_postgres createdb -h /tmp/initdb -U "$POSTGRES_USER" "$POSTGRES_DB"
    fi
    as_postgres pg_ctl -D "$PGDATA" -m fast -w stop > /dev/null
    echo "docker-entrypoint (stand-in): cluster made, database $POSTGRES_DB"
fi
exec setpriv --reuid=postgres --regid=postgres --init-groups \
    postgres -D "$PGDATA" -c listen_addresses='*' "$@"
