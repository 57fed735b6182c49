#!/usr/bin/env bash
# The `postgres-standby` service: a streaming hot standby of the `postgres` service. The first
# time (an empty $PGDATA) it copies the primary with pg_basebackup, whose -R writes
# standby.signal and the primary's connection settings; every time, it then runs the server.
# Runs as the postgres user. PRIMARY_HOST: the primary (default `postgres`); PGPASSWORD: the
# replication role's password; extra arguments go to the server.
set -euo pipefail
: "${PGDATA:?the data directory}"
if [[ ! -s $PGDATA/PG_VERSION ]]; then
    until pg_basebackup -h "${PRIMARY_HOST:-postgres}" -U replicator -D "$PGDATA" \
        -R -X stream --checkpoint=fast; do
        echo "standby: the primary cannot be copied yet; trying again" >&2
        find "$PGDATA" -mindepth 1 -delete
        sleep 2
    done
fi
# The image's data directory is world-writable; the server wants it private.
chmod 700 "$PGDATA"
# max_standby_streaming_delay: a long list may hold replay back this long before it is canceled
# (and retried on the primary by data-api).
exec postgres -c hot_standby=on -c max_standby_streaming_delay=30s "$@"
