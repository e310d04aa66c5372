# tests/common.bash - the helper every tests/*.bats file loads (`load common`).
#
# One throwaway PostgreSQL cluster per .bats file:
#
#   load common
#   setup_file()    { dm_setup_cluster; dm_pagila_template; }
#   teardown_file() { dm_teardown_cluster; }
#
# Exported after dm_setup_cluster (visible to every test of the file):
#   DM_TEST_DIR    the cluster's directory (data, socket, postgres.log)
#   DM_TEST_HOST   socket directory (= DM_TEST_DIR), DM_TEST_PORT its port
#   PGHOST/PGPORT/PGUSER  so a bare `psql -d DB` reaches the test cluster, never a real one
# Always:
#   DM_REPO        the repository top; $DM_REPO/bin is first on PATH
#   DM_DATASETS    $DM_REPO/../shared/datasets (CI clones shared/ beside the repo)
#   DM_FIXTURES    $DM_REPO/tests/fixtures
#
# Functions: dm_createdb, dm_dropdb, dm_psql, dm_conninfo, dm_use, dm_load_pagila,
# dm_pagila_template, dm_pagila_db, dm_load_fixture, dm_row_count, dm_tables_equal,
# dm_all_tables_equal (each documented below), plus cluster_* from tests/lib/cluster.sh.
#
# The functions check every step and return non-zero with a message on stderr, so they
# work both called directly in a test (bats' set -e fails the test) and under `run`.

DM_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DM_DATASETS=${DM_DATASETS:-$DM_REPO/../shared/datasets}
DM_FIXTURES=$DM_REPO/tests/fixtures
export DM_REPO DM_DATASETS DM_FIXTURES

# The programs under test come from this checkout, never from an installed copy, so
# bin/ goes first even if it is already on PATH (bats puts its own directory in front).
# scripts/ is a fallback for dm-migrate in case the build does not copy it into bin/.
_dm_path=":$PATH:"
_dm_path=${_dm_path//":$DM_REPO/bin:"/:}
_dm_path=${_dm_path//":$DM_REPO/scripts:"/:}
_dm_path=${_dm_path#:}
PATH=$DM_REPO/bin:$DM_REPO/scripts:${_dm_path%:}
unset _dm_path
export PATH

# shellcheck source=tests/lib/cluster.sh
source "$DM_REPO/tests/lib/cluster.sh"

# bats-support/bats-assert (Debian: bats-support, bats-assert). Only when running under
# bats, so that this file can also be sourced from a plain shell for debugging.
DM_BATS_LIB=${DM_BATS_LIB:-/usr/lib/bats}
if declare -F load >/dev/null 2>&1 && [[ -n "${BATS_TEST_FILENAME:-}" ]]; then
    load "$DM_BATS_LIB/bats-support/load"
    load "$DM_BATS_LIB/bats-assert/load"
fi

# Clients see only the test cluster: drop settings that could point them elsewhere or
# change what they print, and pin the client encoding (fixtures are UTF-8 whatever the
# caller's locale is).
unset PGDATABASE PGSERVICE PGSERVICEFILE PGOPTIONS PGPASSFILE PGSSLMODE PGHOSTADDR \
    PGTZ PGDATESTYLE PGCLIENTENCODING
export PGCLIENTENCODING=UTF8 PGCONNECT_TIMEOUT=10 PGAPPNAME=dm-test

# Which psql: the server's own (Debian's /usr/bin/psql wrapper also works, but picks a
# version by guessing); falls back to PATH.
DM_PSQL=$(_cl_bindir 2>/dev/null)/psql || true
[[ -x "$DM_PSQL" ]] || DM_PSQL=psql

# The fixed session settings of design.md, used by the comparator so that its text
# output does not depend on server or client defaults.
DM_FIXED_SETTINGS="SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; \
SET IntervalStyle = 'postgres'; SET extra_float_digits = 3; SET bytea_output = 'hex'; \
SET lc_monetary = 'C'; SET search_path = pg_catalog;"

_dm_err() { printf '%s\n' "$*" >&2; return 1; }

# dm_setup_cluster [tcp]: start this file's cluster; call from setup_file.
# The directory is a fresh mktemp dir under /tmp rather than $BATS_FILE_TMPDIR: bats
# makes its tmpdirs private to root (the server runs as user postgres and must reach
# its directory) and their paths can exceed the 107-byte unix socket path limit.
dm_setup_cluster() {
    local dir
    dir=$(mktemp -d "${DM_TEST_TMP:-/tmp}/dm-test.XXXXXX") ||
        { _dm_err "dm_setup_cluster: mktemp failed"; return 1; }
    cluster_start "$dir" "${1:-}" || { rmdir "$dir" 2>/dev/null; return 1; }
    DM_TEST_DIR=$dir
    DM_TEST_HOST=$PGHOST_DIR
    DM_TEST_PORT=$PGPORT_NUM
    PGHOST=$DM_TEST_HOST
    PGPORT=$DM_TEST_PORT
    PGUSER=postgres
    export DM_TEST_DIR DM_TEST_HOST DM_TEST_PORT PGHOST PGPORT PGUSER
}

# dm_teardown_cluster: stop and remove this file's cluster; call from teardown_file.
# On failure of the file, the server log is kept next to bats' output for a post mortem
# if DM_KEEP_LOGS names a directory.
dm_teardown_cluster() {
    [[ -n "${DM_TEST_DIR:-}" ]] || return 0
    if [[ -n "${DM_KEEP_LOGS:-}" && -r "$DM_TEST_DIR/postgres.log" ]]; then
        mkdir -p "$DM_KEEP_LOGS" &&
            cp "$DM_TEST_DIR/postgres.log" \
                "$DM_KEEP_LOGS/$(basename "${BATS_TEST_FILENAME:-test}" .bats).postgres.log"
    fi
    cluster_stop "$DM_TEST_DIR"
    unset DM_TEST_DIR
}

# dm_conninfo DB: libpq conninfo of database DB on the test cluster.
dm_conninfo() {
    [[ -n "${DM_TEST_HOST:-}" ]] || { _dm_err "dm_conninfo: no test cluster (dm_setup_cluster)"; return 1; }
    printf 'host=%s port=%s user=postgres dbname=%s\n' \
        "$(_cl_quote "$DM_TEST_HOST")" "$DM_TEST_PORT" "$(_cl_quote "$1")"
}

# dm_use SRCDB DSTDB: export DM_SOURCE and DM_DEST (what dm-migrate and --db-env read).
dm_use() {
    DM_SOURCE=$(dm_conninfo "$1") || return 1
    DM_DEST=$(dm_conninfo "$2") || return 1
    export DM_SOURCE DM_DEST
}

# dm_psql DB [SQL...]: run each SQL argument (each -c is its own transaction), or stdin
# if there is none, stopping at the first error. Unaligned, tuples only, no psqlrc:
# `dm_psql db "select 1"` prints "1".
dm_psql() {
    local db=${1:-} ci sql args=()
    [[ -n "$db" ]] || { _dm_err "usage: dm_psql DB [SQL...]"; return 2; }
    shift
    ci=$(dm_conninfo "$db") || return 1
    if (($# == 0)); then
        args=(-f -)
    else
        for sql in "$@"; do args+=(-c "$sql"); done
    fi
    "$DM_PSQL" -X -v ON_ERROR_STOP=1 -qAt -d "$ci" "${args[@]}"
}

# _dm_psql_quiet: dm_psql without NOTICEs ("database does not exist, skipping").
_dm_psql_quiet() {
    PGOPTIONS='-c client_min_messages=warning' dm_psql "$@"
}

# _dm_ident NAME: NAME as a quoted SQL identifier.
_dm_ident() { local s=${1//\"/\"\"}; printf '"%s"' "$s"; }

# dm_createdb NAME [TEMPLATE]: (re)create database NAME, optionally as a copy of
# TEMPLATE. Dropping first makes tests re-runnable within one cluster.
dm_createdb() {
    local name=${1:-} tpl=${2:-} sql
    [[ -n "$name" ]] || { _dm_err "usage: dm_createdb NAME [TEMPLATE]"; return 2; }
    sql="CREATE DATABASE $(_dm_ident "$name")"
    [[ -n "$tpl" ]] && sql+=" TEMPLATE $(_dm_ident "$tpl")"
    _dm_psql_quiet postgres "DROP DATABASE IF EXISTS $(_dm_ident "$name") WITH (FORCE)" "$sql"
}

# dm_dropdb NAME
dm_dropdb() {
    _dm_psql_quiet postgres "DROP DATABASE IF EXISTS $(_dm_ident "$1") WITH (FORCE)"
}

# dm_load_sql DB FILE: load a psql script quietly (query results are discarded, errors
# stop the load and are shown).
dm_load_sql() {
    local db=$1 file=$2 ci
    [[ -r "$file" ]] || { _dm_err "dm_load_sql: cannot read $file"; return 1; }
    ci=$(dm_conninfo "$db") || return 1
    "$DM_PSQL" -X -q -v ON_ERROR_STOP=1 -d "$ci" -f "$file" >/dev/null ||
        { _dm_err "dm_load_sql: loading $file into $db failed"; return 1; }
}

# dm_load_fixture DB NAME: load tests/fixtures/NAME.sql into DB (e.g. "awkward").
dm_load_fixture() {
    dm_load_sql "$1" "$DM_FIXTURES/$2.sql"
}

# dm_load_pagila DB: load the Pagila sample database into the existing, empty DB.
dm_load_pagila() {
    local db=${1:-} dir=$DM_DATASETS/pagila
    [[ -n "$db" ]] || { _dm_err "usage: dm_load_pagila DB"; return 2; }
    [[ -r "$dir/pagila-schema.sql" && -r "$dir/pagila-data.sql" ]] ||
        { _dm_err "dm_load_pagila: dataset not found in $dir (clone shared/ beside the repo or set DM_DATASETS)"; return 1; }
    dm_load_sql "$db" "$dir/pagila-schema.sql" &&
        dm_load_sql "$db" "$dir/pagila-data.sql"
}

# dm_pagila_template: load Pagila once per cluster into the template database
# pagila_tpl, so that each test gets its own copy in well under a second with
# `dm_pagila_db NAME` (CREATE DATABASE NAME TEMPLATE pagila_tpl). Idempotent: a
# completed template is marked with a database comment; a half-loaded one is redone.
dm_pagila_template() {
    local mark
    mark=$(dm_psql postgres "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = 'pagila_tpl'") || return 1
    [[ "$mark" == "dm pagila template" ]] && return 0
    _dm_psql_quiet postgres "DROP DATABASE IF EXISTS pagila_tpl WITH (FORCE)" &&
        dm_psql postgres "CREATE DATABASE pagila_tpl" &&
        dm_load_pagila pagila_tpl &&
        dm_psql pagila_tpl "VACUUM ANALYZE" &&
        dm_psql postgres "ALTER DATABASE pagila_tpl WITH IS_TEMPLATE true" \
            "COMMENT ON DATABASE pagila_tpl IS 'dm pagila template'"
}

# dm_pagila_templates SRC DST: SRC, Pagila with a primary key on the two payment
# partitions that lack one (dm-entities refuses tables without), and DST, the same
# schema with no rows (Pagila's triggers still enabled): the pair of templates the
# porcelain suites copy for each test.
dm_pagila_templates() {
    dm_pagila_template &&
        dm_createdb "$1" pagila_tpl &&
        dm_psql "$1" \
            "ALTER TABLE public.payment_p0000_default ADD PRIMARY KEY (payment_id)" \
            "ALTER TABLE public.payment_p2007_07_max ADD PRIMARY KEY (payment_id)" &&
        dm_createdb "$2" "$1" &&
        dm_psql "$2" <<'SQL'
DO $$
BEGIN
    EXECUTE (SELECT 'TRUNCATE ' || string_agg(format('%I.%I', schemaname, tablename), ', ')
             FROM pg_tables WHERE schemaname = 'public');
END
$$;
SQL
}

# dm_serve_address LOG PID: the ADDR:PORT dm-serve (process PID, stderr in LOG) says
# it listens on, once it says so (port 0: the port the kernel chose); fails after
# 10 s, or when PID ended first.
dm_serve_address() {
    local i addr
    for ((i = 0; i < 100; i++)); do
        addr=$(sed -n 's/.* event=listening msg="dm-serve [^ ]* on \([^;]*\);.*/\1/p' "$1" | head -n 1)
        [[ -n "$addr" ]] && { printf '%s\n' "$addr"; return 0; }
        kill -0 "$2" 2>/dev/null || break
        sleep 0.1
    done
    return 1
}

# dm_pagila_db NAME: a fresh copy of Pagila named NAME.
dm_pagila_db() {
    dm_pagila_template && dm_createdb "$1" pagila_tpl
}

# dm_row_count DB TABLE: number of rows of TABLE (SQL name, e.g. public.rental).
dm_row_count() {
    dm_psql "$1" "SELECT count(*) FROM $2"
}

# The comparator. It uses psql's COPY text output, not dm's code, so a bug in dm cannot
# hide itself. COPY text distinguishes what matters: NULL (\N) from '' and from the
# string \N, -0 from 0, 1.50 from 1.5; tabs, newlines and backslashes are escaped.
# Rows are sorted by their whole text in byte order (COLLATE "C"), so neither the server
# collation nor the physical order matters. Columns are the source's, by name and in the
# source's order: a different column order in the destination is not a difference,
# extra destination columns are ignored, a missing one is an error.

# _dm_copy_sql TABLE COLS: the COPY statement that dumps TABLE's columns COLS.
_dm_copy_sql() {
    printf 'COPY (SELECT * FROM (SELECT %s FROM %s) AS r ORDER BY r::text COLLATE "C") TO STDOUT;\n' \
        "$2" "$1"
}

# _dm_sql_lit TEXT: TEXT as a SQL string literal.
_dm_sql_lit() { printf "'%s'" "${1//\'/\'\'}"; }

# _dm_dump DB OUTDIR TABLE<TAB>COLS...: dump each table into OUTDIR/1, OUTDIR/2, ... in
# one psql session (one connection per side, not one per table: this is what makes
# dm_all_tables_equal fast enough to call after every step of a test).
_dm_dump() {
    local db=$1 outdir=$2 ci i=0 line
    shift 2
    ci=$(dm_conninfo "$db") || return 1
    {
        echo "$DM_FIXED_SETTINGS"
        for line in "$@"; do
            i=$((i + 1))
            printf "\\o '%s/%d'\n" "$outdir" "$i"
            _dm_copy_sql "${line%%$'\t'*}" "${line#*$'\t'}"
        done
        printf '\\o\n'
    } | "$DM_PSQL" -X -q -v ON_ERROR_STOP=1 -d "$ci" -f - >/dev/null
}

# _dm_columns DB TABLE...: "TABLE<TAB>COLS" for each TABLE (SQL names), from DB's
# catalog; fails (naming the table) if one does not exist there.
_dm_columns() {
    local db=$1 t sql="" sep=""
    shift
    for t in "$@"; do
        sql+="$sep($(_dm_sql_lit "$t"), $(_dm_sql_lit "$t")::regclass)"
        sep=", "
    done
    dm_psql "$db" "SELECT v.name || E'\t' || string_agg(quote_ident(a.attname), ', ' ORDER BY a.attnum)
        FROM (VALUES $sql) AS v(name, rel)
        JOIN pg_attribute a ON a.attrelid = v.rel AND a.attnum > 0 AND NOT a.attisdropped
        GROUP BY v.name"
}

# _dm_report TABLE SRC DST SRCFILE DSTFILE: say how the two dumps differ (on stderr).
_dm_report() {
    local ns nd
    ns=$(wc -l <"$4")
    nd=$(wc -l <"$5")
    printf 'dm_tables_equal: %s differs: %s has %d rows, %s has %d rows; first differences:\n' \
        "$1" "$2" "$ns" "$3" "$nd" >&2
    diff -U0 --label "$2" --label "$3" "$4" "$5" | head -n 20 | cut -c1-300 >&2
}

# _dm_scratch: a scratch directory under bats' per-test tmpdir (the caller removes it).
_dm_scratch() {
    mktemp -d "${BATS_TEST_TMPDIR:-${BATS_FILE_TMPDIR:-${TMPDIR:-/tmp}}}/dmcmp.XXXXXX"
}

# dm_tables_equal SRCDB DSTDB TABLE: do SRCDB's and DSTDB's TABLE (SQL name as given,
# e.g. public.rental or 'awk."Odd Name"') hold the same rows?
# Returns 0 if equal, 1 if different (a short diff on stderr), 2 if a side is unreadable.
dm_tables_equal() {
    local src=${1:-} dst=${2:-} table=${3:-} meta tmp rc=0
    [[ -n "$table" ]] || { _dm_err "usage: dm_tables_equal SRCDB DSTDB SCHEMA.TABLE"; return 2; }
    # shellcheck disable=SC2015  # either failing is the same error
    meta=$(_dm_columns "$src" "$table") && [[ -n "$meta" ]] ||
        { _dm_err "dm_tables_equal: cannot read the columns of $table in $src"; return 2; }
    tmp=$(_dm_scratch) || return 2
    mkdir "$tmp/src" "$tmp/dst"
    if ! _dm_dump "$src" "$tmp/src" "$meta"; then
        _dm_err "dm_tables_equal: cannot read $table in $src"; rc=2
    elif ! _dm_dump "$dst" "$tmp/dst" "$meta"; then
        _dm_err "dm_tables_equal: cannot read $table (columns ${meta#*$'\t'}) in $dst"; rc=2
    elif ! cmp -s "$tmp/src/1" "$tmp/dst/1"; then
        _dm_report "$table" "$src" "$dst" "$tmp/src/1" "$tmp/dst/1"
        rc=1
    fi
    rm -rf -- "$tmp"
    return "$rc"
}

# dm_all_tables_equal SRCDB DSTDB: compare every ordinary table of SRCDB (leaf
# partitions, not partitioned parents; no system or temporary schemas) that also exists
# in DSTDB, in name order. Names the first differing table on stderr. Fails (2) if no
# table could be compared, since that is almost certainly a mistake in the test.
dm_all_tables_equal() {
    local src=${1:-} dst=${2:-} tables common meta tmp i rc t
    local -a names metas
    [[ -n "$dst" ]] || { _dm_err "usage: dm_all_tables_equal SRCDB DSTDB"; return 2; }
    tables=$(dm_psql "$src" "SELECT format('%I.%I', n.nspname, c.relname)
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND c.relpersistence <> 't'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname !~ '^pg_(toast|temp_)'
        ORDER BY 1") || return 2
    mapfile -t names <<<"$tables"
    # Which of them the destination has (to_regclass gives NULL rather than an error).
    local lits="" sep=""
    for t in "${names[@]}"; do
        [[ -n "$t" ]] || continue
        lits+="$sep$(_dm_sql_lit "$t")"
        sep=", "
    done
    [[ -n "$lits" ]] || { _dm_err "dm_all_tables_equal: $src has no tables"; return 2; }
    common=$(dm_psql "$dst" "SELECT t FROM unnest(ARRAY[$lits]::text[]) WITH ORDINALITY AS u(t, i)
        WHERE to_regclass(t) IS NOT NULL ORDER BY i") || return 2
    mapfile -t names <<<"$common"
    if [[ -z "${names[0]:-}" ]]; then
        _dm_err "dm_all_tables_equal: no common table between $src and $dst"; return 2
    fi
    meta=$(_dm_columns "$src" "${names[@]}") || return 2
    # _dm_columns groups, which loses the order: put each table's line back in place.
    local -A colmap
    local cols
    while IFS=$'\t' read -r t cols; do colmap[$t]=$cols; done <<<"$meta"
    metas=()
    for t in "${names[@]}"; do metas+=("$t"$'\t'"${colmap[$t]}"); done

    tmp=$(_dm_scratch) || return 2
    mkdir "$tmp/src" "$tmp/dst"
    rc=0
    if ! _dm_dump "$src" "$tmp/src" "${metas[@]}" || ! _dm_dump "$dst" "$tmp/dst" "${metas[@]}"; then
        # A table failed to dump (e.g. a column missing in the destination): redo it
        # table by table, which names the culprit.
        rc=0
        for t in "${names[@]}"; do
            dm_tables_equal "$src" "$dst" "$t" || { rc=$?; break; }
        done
        ((rc != 0)) || rc=2
    else
        for ((i = 0; i < ${#names[@]}; i++)); do
            if ! cmp -s "$tmp/src/$((i + 1))" "$tmp/dst/$((i + 1))"; then
                t=${names[i]}
                _dm_report "$t" "$src" "$dst" "$tmp/src/$((i + 1))" "$tmp/dst/$((i + 1))"
                rc=1
                break
            fi
        done
    fi
    rm -rf -- "$tmp"
    if ((rc != 0)); then
        echo "dm_all_tables_equal: first differing table: ${t:-?}" >&2
    fi
    return "$rc"
}
