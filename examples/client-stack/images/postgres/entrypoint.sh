#!/bin/bash
# Entry point of client/postgres:15. Runs as root only long enough to fix the ownership of
# $PGDATA (a fresh volume or bind mount), then re-executes itself as `postgres`.
#   1. first start (no $PGDATA/PG_VERSION): initdb, superuser `postgres` with DB_PASSWORD,
#      scram-sha-256 over TCP from any address, peer on the local socket;
#   2. every start: a private server on a unix socket only (so the health check, which uses TCP,
#      stays red) creates $DB_USER and $DB_NAME if missing and sets both passwords to
#      DB_PASSWORD (changing the value and recreating the container changes the password);
#   3. exec postgres listening on all interfaces. Extra arguments go to postgres (-c name=value).
set -euo pipefail

: "${PGDATA:=/var/lib/postgresql/data}"
: "${DB_USER:=app}"
: "${DB_NAME:=app}"

if [ "$(id -u)" = 0 ]; then
  mkdir -p "$PGDATA" /run/postgresql
  chown postgres:postgres "$PGDATA" /run/postgresql
  chmod 0700 "$PGDATA"
  exec setpriv --reuid=postgres --regid=postgres --init-groups "$0" "$@"
fi

if [ -z "${DB_PASSWORD:-}" ]; then
  echo "db: DB_PASSWORD is empty; give the container a password" >&2
  exit 1
fi

if [ ! -s "$PGDATA/PG_VERSION" ]; then
  echo "db: first start, creating the cluster in $PGDATA"
  pwfile="$(mktemp)"
  printf '%s\n' "$DB_PASSWORD" >"$pwfile"
  initdb -D "$PGDATA" -U postgres --pwfile="$pwfile" -E UTF8 --locale=C.UTF-8 \
    --auth-local=peer --auth-host=scram-sha-256 >/dev/null
  rm -f "$pwfile"
  printf '%s\n' '# clientstack: password (scram-sha-256) logins from the container networks' \
    'host all all 0.0.0.0/0 scram-sha-256' 'host all all ::/0 scram-sha-256' >>"$PGDATA/pg_hba.conf"
fi

sock="$(mktemp -d)"
pg_ctl -D "$PGDATA" -s -w -t 120 -l "$sock/setup.log" \
  -o "-c listen_addresses='' -c unix_socket_directories='$sock'" start \
  || { cat "$sock/setup.log" >&2; exit 1; }
psql -h "$sock" -U postgres -d postgres -X -q -v ON_ERROR_STOP=1 \
  -v user="$DB_USER" -v db="$DB_NAME" -v pw="$DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I LOGIN', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'user') \gexec
ALTER ROLE postgres PASSWORD :'pw';
ALTER ROLE :"user" PASSWORD :'pw';
SELECT format('CREATE DATABASE %I OWNER %I', :'db', :'user')
 WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = :'db') \gexec
SQL
pg_ctl -D "$PGDATA" -s -w -m fast stop
rm -rf "$sock"

echo "db: ready to start (database $DB_NAME, user $DB_USER)"
exec postgres -D "$PGDATA" -c listen_addresses='*' "$@"
