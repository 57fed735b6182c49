# Sourced by the benchmark scripts: a throwaway database on the shared PostgreSQL server.
# new_db <name> sets $db and $db_url; drop_db (call it from the script's cleanup) drops it.
db=""; db_url=""
new_db() {
  db="dataapi_$1_$$"
  psql -h 127.0.0.1 -U postgres -qc "create database $db" postgres
  db_url="postgres://postgres@127.0.0.1:5432/$db"
}
drop_db() {
  [[ -n "$db" ]] && psql -h 127.0.0.1 -U postgres -qc "drop database if exists $db with (force)" postgres
  db=""
}
