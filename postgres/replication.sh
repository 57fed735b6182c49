#!/usr/bin/env bash
# The `postgres` service's one-time set-up for its streaming standby: the postgres image runs
# this from /docker-entrypoint-initdb.d when it first initialises the data directory. It adds a
# role that may only replicate, and the pg_hba.conf line that lets it connect for replication
# (the image's own line, `host all all all scram-sha-256`, does not cover replication).
# REPLICATION_PASSWORD: the role's password (default `replicator`; set it in production).
set -e
psql -v ON_ERROR_STOP=1 -U "${POSTGRES_USER:-postgres}" -d "${POSTGRES_DB:-postgres}" \
    -v pw="${REPLICATION_PASSWORD:-replicator}" <<'SQL'
CREATE ROLE replicator WITH REPLICATION LOGIN PASSWORD :'pw';
SQL
echo "host replication replicator all scram-sha-256" >>"$PGDATA/pg_hba.conf"
