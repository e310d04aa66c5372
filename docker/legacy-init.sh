#!/bin/sh
# docker/legacy-init.sh - loads Pagila into a new database: compose's `legacy` service
# runs it from /docker-entrypoint-initdb.d on its first start; scripts/image-test runs
# it against a throwaway cluster (PGHOST/PGPORT set).
#
# Environment: POSTGRES_USER, POSTGRES_DB (as the postgres image sets them), PAGILA_DIR
# (default /pagila: pagila-schema.sql and pagila-data.sql).
#
# Two of Pagila's payment partitions have no primary key, and dm matches rows by key:
# they get the key the other partitions have (as `make demo` does).
set -eu
dir=${PAGILA_DIR:-/pagila}
sql() {
	psql -X -q -v ON_ERROR_STOP=1 --username "${POSTGRES_USER:-postgres}" \
		--dbname "${POSTGRES_DB:-postgres}" "$@" >/dev/null
}
for f in pagila-schema.sql pagila-data.sql; do
	[ -r "$dir/$f" ] || { echo "legacy-init: cannot read $dir/$f (mount the Pagila dataset there)" >&2; exit 1; }
done
sql -f "$dir/pagila-schema.sql"
sql -f "$dir/pagila-data.sql"
sql -c 'ALTER TABLE public.payment_p0000_default ADD PRIMARY KEY (payment_id)' \
	-c 'ALTER TABLE public.payment_p2007_07_max ADD PRIMARY KEY (payment_id)'
echo "legacy-init: Pagila loaded into ${POSTGRES_DB:-postgres}"
