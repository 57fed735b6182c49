#!/usr/bin/env bash
# The compose file's standby, without Docker: postgres/replication.sh and postgres/standby.sh run
# against throwaway clusters set up as the postgres image sets up its own. The primary's
# pg_hba.conf is what another container meets (the image's `host all all all scram-sha-256`,
# which does not cover replication) until replication.sh adds its line; the standby starts from
# an empty, world-writable data directory, as a fresh volume is. Passes when the standby is in
# recovery and a row written on the primary afterwards can be read on it.
# Usage: tests/sre/compose_standby.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
pg=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
if [[ -z $pg || ! -x $pg/initdb ]]; then
    echo "SKIPPED compose standby check: no PostgreSQL server binaries (initdb)"
    exit 0
fi
work=$(mktemp -d); chmod 755 "$work"; standby_pid=
as_pg() { if [[ $(id -u) == 0 ]]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
    [[ -n $standby_pid ]] && kill "$standby_pid" 2>/dev/null
    as_pg "$pg/pg_ctl" -D "$work/primary" -m immediate stop >/dev/null 2>&1 || true
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
pport=$(free_port); sport=$(free_port)
cp postgres/replication.sh postgres/standby.sh "$work/"
mkdir -m 1777 "$work/standby"
[[ $(id -u) == 0 ]] && chown postgres "$work" "$work/standby"

# The primary, as the image initialises it: a password for postgres, remote logins by password.
echo postgres >"$work/pw"
as_pg "$pg/initdb" -D "$work/primary" -U postgres --pwfile="$work/pw" -E UTF8 --no-sync >/dev/null
printf 'local all all trust\nhost all all all scram-sha-256\n' >"$work/primary/pg_hba.conf"
as_pg "$pg/pg_ctl" -D "$work/primary" -l "$work/primary.log" -w start \
    -o "-p $pport -k $work -c listen_addresses=127.0.0.1" >/dev/null
as_pg env PGDATA="$work/primary" PGHOST="$work" PGPORT="$pport" POSTGRES_USER=postgres \
    POSTGRES_DB=postgres bash "$work/replication.sh"
# The image restarts the server after its init scripts; a reload reads pg_hba.conf the same way.
as_pg "$pg/pg_ctl" -D "$work/primary" reload >/dev/null

as_pg env PATH="$pg:$PATH" PGDATA="$work/standby" PRIMARY_HOST=127.0.0.1 PGPORT="$pport" \
    PGPASSWORD=replicator bash "$work/standby.sh" -p "$sport" -k "$work" \
    -c listen_addresses=127.0.0.1 >"$work/standby.log" 2>&1 &
standby_pid=$!
on() { psql -h "$work" -p "$1" -U postgres -d postgres -Atc "$2" 2>/dev/null; }
for _ in $(seq 1 150); do
    [[ $(on "$sport" "select pg_is_in_recovery()") == t ]] && break
    kill -0 "$standby_pid" 2>/dev/null || { cat "$work/standby.log"; echo "the standby exited" >&2; exit 1; }
    sleep 0.2
done
[[ $(on "$sport" "select pg_is_in_recovery()") == t ]] || { cat "$work/standby.log"; echo "no standby in recovery" >&2; exit 1; }
on "$pport" "create table streamed (v text); insert into streamed values ('after the copy')" >/dev/null
for _ in $(seq 1 150); do
    [[ $(on "$sport" "select v from streamed") == "after the copy" ]] && break
    sleep 0.2
done
[[ $(on "$sport" "select v from streamed") == "after the copy" ]] || { cat "$work/standby.log"; echo "the row never reached the standby" >&2; exit 1; }
echo "compose standby: postgres/replication.sh and postgres/standby.sh stream a hot standby"
