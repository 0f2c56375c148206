#!/usr/bin/env bash
# Start a throwaway PostgreSQL server for the registry tests (installing Debian's package if
# needed) and print its URL; `scripts/test_postgres.sh stop URL_DIR` stops it. Needs root (to
# install and to run the server as the postgres user); fails, printing why, where it can't.
set -euo pipefail

if [ "${1:-}" = "stop" ]; then
    bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
    runuser -u postgres -- "$bin/pg_ctl" -D "$2/data" -m fast -w stop >/dev/null 2>&1 || true
    rm -rf "$2"
    exit 0
fi
[ "$(id -u)" = 0 ] || { echo "not root: cannot install or start PostgreSQL" >&2; exit 1; }
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
    apt-get update -qq >&2
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >&2
fi
bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
dir=$(mktemp -d /tmp/tunesmith-pg.XXXXXX)
chown postgres "$dir"  # initdb refuses to run as root
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
runuser -u postgres -- "$bin/initdb" -D "$dir/data" -A trust -U tunesmith >/dev/null
runuser -u postgres -- "$bin/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off" start >/dev/null
runuser -u postgres -- "$bin/createdb" -h 127.0.0.1 -p "$port" -U tunesmith tunesmith_test
echo "$dir postgresql+psycopg://tunesmith@127.0.0.1:$port/tunesmith_test"
