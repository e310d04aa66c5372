#!/bin/sh
# docker/supabase-init.sh - prepares a Supabase database as examples/pagila's destination:
# compose's `supabase` service runs it from /docker-entrypoint-initdb.d on its first
# start (named zz-... so that it runs after the image's own migrate.sh); scripts/image-test
# runs it against a throwaway cluster (PGHOST/PGPORT set).
#
# roles.sql as an administrator (supabase_admin where it exists, else POSTGRES_USER),
# then modern.sql as app_owner, which so owns the tables dm writes.
#
# Environment: APP_OWNER_PASSWORD (required), POSTGRES_DB (default postgres),
# POSTGRES_USER, DM_EXAMPLE_DIR (default /dm: roles.sql and modern.sql).
# The password goes to psql through \getenv, never on a command line.
set -eu
: "${APP_OWNER_PASSWORD:?supabase-init: set APP_OWNER_PASSWORD}"
dir=${DM_EXAMPLE_DIR:-/dm}
db=${POSTGRES_DB:-postgres}
admin=supabase_admin
psql -X -q -U "$admin" -d "$db" -c 'SELECT 1' >/dev/null 2>&1 || admin=${POSTGRES_USER:-postgres}
sql() { psql -X -q -v ON_ERROR_STOP=1 -U "$admin" -d "$db" "$@" >/dev/null; }
sql -c '\getenv app_owner_password APP_OWNER_PASSWORD' -f "$dir/roles.sql"
sql -c 'SET ROLE app_owner' -f "$dir/modern.sql"
echo "supabase-init: roles.sql and modern.sql loaded into $db (as $admin, then app_owner)"
