#!/usr/bin/env bash
# A throwaway PostgreSQL cluster for the postgres consistency tests: 127.0.0.1 only, a free port,
# trust auth, socket inside WORKDIR.   start WORKDIR -> prints "export" lines;   stop WORKDIR
set -euo pipefail
cmd=${1:?usage: pg-test-server.sh start|stop WORKDIR}
work=${2:?usage: pg-test-server.sh start|stop WORKDIR}
data="$work/pg/data"
sock="$work/pg/sock"

# The newest installed server (Debian keeps each major version in its own directory).
bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)
[ -n "$bin" ] && [ -x "$bin/postgres" ] ||
    { echo "pg-test-server: no PostgreSQL server in /usr/lib/postgresql/*/bin; apt-get install postgresql" >&2; exit 1; }

# PostgreSQL refuses to run as root: run it as the postgres OS user then.
if [ "$(id -u)" -eq 0 ]; then
    id postgres >/dev/null 2>&1 || { echo "pg-test-server: running as root needs a postgres OS user" >&2; exit 1; }
    as_pg() { runuser -u postgres -- "$@"; }
else
    as_pg() { "$@"; }
fi

case "$cmd" in
start)
    mkdir -p "$work"
    # The postgres user must reach its directories inside WORKDIR (mktemp makes it 0700).
    [ "$(id -u)" -eq 0 ] && chmod o+x "$work"
    mkdir -p "$work/pg"
    [ "$(id -u)" -eq 0 ] && chown postgres: "$work/pg"
    if [ -f "$data/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$data" status >/dev/null 2>&1; then
        echo "pg-test-server: a server already runs in $data; stop it first" >&2
        exit 1
    fi
    rm -rf "$data"
    as_pg mkdir -p "$data" "$sock"
    as_pg "$bin/initdb" -D "$data" -U postgres --auth=trust --encoding=UTF8 --no-sync >"$work/pg/initdb.log" 2>&1 ||
        { echo "pg-test-server: initdb failed:" >&2; tail -20 "$work/pg/initdb.log" >&2; exit 1; }
    started=
    for _ in $(seq 1 20); do
        # A port nothing listens on; another process may take it before the server does, so retry.
        port=$((20000 + RANDOM % 20000))
        (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && continue
        if as_pg "$bin/pg_ctl" -D "$data" -l "$work/pg/server.log" -w -t 60 \
            -o "-c listen_addresses=127.0.0.1 -p $port -k $sock -c fsync=off -c full_page_writes=off" \
            start >/dev/null 2>&1; then
            started=1
            break
        fi
    done
    [ -n "$started" ] || { echo "pg-test-server: the server did not start:" >&2; tail -20 "$work/pg/server.log" >&2; exit 1; }
    for _ in $(seq 1 100); do "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" && break; sleep 0.1; done
    "$bin/pg_isready" -q -h 127.0.0.1 -p "$port" ||
        { echo "pg-test-server: the server does not answer on 127.0.0.1:$port" >&2; exit 1; }
    echo "$port" >"$work/pg/port"
    echo "export RACKVAULT_TEST_PG_HOST=127.0.0.1 RACKVAULT_TEST_PG_PORT=$port RACKVAULT_TEST_PG_USER=postgres RACKVAULT_TEST_PG_BIN=$bin"
    ;;
stop)
    if [ -f "$data/postmaster.pid" ]; then
        # -w waits until the server is gone, so the directory can be removed afterwards.
        as_pg "$bin/pg_ctl" -D "$data" -w -t 60 -m fast stop >/dev/null 2>&1 || true
    fi
    rm -rf "$work/pg"
    ;;
*) echo "usage: pg-test-server.sh start|stop WORKDIR" >&2; exit 2 ;;
esac
