# tests/faults/lib.sh - what every fault script shares (sourced, never run).
#
# Two throwaway clusters, so that one can crash while the other keeps running:
#   $FX_WORK/src   the source server (databases fx_src, and fx_base: an older fx_src)
#   $FX_WORK/dst   the destination server (templates fx_empty_tpl, fx_incr_tpl,
#                  fx_drift_tpl; each trial works on a fresh copy of one of them)
# Both also listen on 127.0.0.1 with scram-sha-256 (password $CLUSTER_PASSWORD), for
# the tests of secrets.
#
# The dataset (fx_build_data) has a few hundred thousand rows at FX_SCALE=1 over tables
# with foreign keys: fx.customer <- fx.orders <- fx.order_line, fx.blob (text key, bytea,
# no change column), fx.category (references itself), fx.dept <-> fx.employee (a
# foreign-key cycle, loaded by one dm-load). The destination's fx.orders has a trigger
# that sets updated_at = now(): if it ever fired on a copied row, the comparison would
# see it, and after every fault it must still be enabled.
#
# The comparison (fx_compare) is psql COPY on both servers, sorted with sort(1) in byte
# order and compared with cmp(1): no dm code. It also checks for duplicates: no repeated
# line in either dump, and count(*) = count(DISTINCT primary key) in the destination.
#
# Results: each script appends "FAULT<TAB>TRIALS<TAB>FAILURES<TAB>ROWS<TAB>NOTE" lines to
# $FX_RESULTS (fx_result); tests/faults/run prints the table at the end.

FX_HOME=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=tests/common.bash
source "$FX_HOME/../common.bash"
# common.bash names every connection dm-test; here the harness's own connections are
# fx-harness and dm's programs keep their own names (dm-extract, dm-load, ...), so that
# `application_name LIKE 'dm-%'` finds dm's connections and nothing else.
unset PGAPPNAME
# FX_BIN: test the programs of another build (a copy of bin/, a sanitizer build...).
if [[ -n "${FX_BIN:-}" ]]; then
    PATH=$(cd "$FX_BIN" && pwd):$PATH
    export PATH
fi

: "${FX_SCALE:=1}"
: "${FX_TRIALS:=20}"
: "${FX_RUN_TIMEOUT:=300}"     # seconds any one dm-migrate or program may take
FX_FAILS=0
FX_TRIALS_DONE=0
FX_ROWS=0
declare -A FX_NOTES=()
FX_NOTE_ORDER=()

# ---------------------------------------------------------------- messages

fx_say() { printf '# %s\n' "$*"; }
fx_log() { ((${FX_VERBOSE:-0})) && printf '#   %s\n' "$*"; return 0; }
fx_die() { printf 'faults: %s\n' "$*" >&2; exit 2; }

# fx_fail WHAT: a failed check. Counted; the script goes on with the next trial.
fx_fail() {
    FX_FAILS=$((FX_FAILS + 1))
    printf 'FAIL: %s\n' "$*"
}

# fx_note TEXT: something the summary should mention (not a failure); counted.
fx_note() {
    [[ -n "${FX_NOTES[$*]:-}" ]] || FX_NOTE_ORDER+=("$*")
    FX_NOTES[$*]=$((${FX_NOTES[$*]:-0} + 1))
}

# fx_result_line NAME TRIALS FAILURES ROWS [NOTE]: one line of the summary.
fx_result_line() {
    [[ -n "${FX_RESULTS:-}" ]] && printf "%s\t%s\t%s\t%s\t%s\n" "$1" "$2" "$3" "$4" "${5:-}" >>"$FX_RESULTS"
    printf "# %s: %d trials, %d failures, %d rows compared%s\n" "$1" "$2" "$3" "$4" "${5:+ ($5)}"
}

# fx_result FAULT: this script's counts, as one line of the summary.
fx_result() {
    local note="" k
    for k in "${FX_NOTE_ORDER[@]}"; do
        note+="${note:+; }$k"
        ((FX_NOTES[$k] > 1)) && note+=" (x${FX_NOTES[$k]})"
    done
    fx_result_line "$1" "$FX_TRIALS_DONE" "$FX_FAILS" "$FX_ROWS" "$note"
}

# fx_rand LO HI: a random integer in [LO, HI].
fx_rand() { echo $(($1 + (RANDOM * 32768 + RANDOM) % ($2 - $1 + 1))); }

# fx_sleep_ms MS
fx_sleep_ms() { sleep "$(awk -v ms="$1" 'BEGIN { printf "%.3f", ms / 1000 }')"; }

# fx_now_ms: milliseconds since the epoch.
fx_now_ms() { local t=${EPOCHREALTIME/[.,]/}; echo $((t / 1000)); }

# ---------------------------------------------------------------- clusters

# fx_ci SIDE [DB]: socket conninfo of database DB on the src or dst cluster.
fx_ci() {
    local side=$1 db=${2:-postgres} dir port
    case "$side" in
        src) dir=$FX_SRC_DIR ;;
        dst) dir=$FX_DST_DIR ;;
        *) fx_die "fx_ci: unknown side $side" ;;
    esac
    port=$(<"$dir/port")
    printf 'host=%s port=%s user=postgres dbname=%s\n' "$dir" "$port" "$db"
}

# fx_ci_tcp SIDE [DB]: conninfo over 127.0.0.1 with the password (for the secrets tests).
fx_ci_tcp() {
    local side=$1 db=${2:-postgres} dir port
    case "$side" in src) dir=$FX_SRC_DIR ;; dst) dir=$FX_DST_DIR ;; esac
    port=$(<"$dir/port")
    printf 'host=127.0.0.1 port=%s user=postgres dbname=%s password=%s\n' "$port" "$db" "$CLUSTER_PASSWORD"
}

# fx_psql SIDE DB [SQL...]: like dm_psql, on one of the two clusters.
fx_psql() {
    local side=$1 db=$2 ci sql args=()
    shift 2
    ci=$(fx_ci "$side" "$db") || return 1
    if (($# == 0)); then
        args=(-f -)
    else
        for sql in "$@"; do args+=(-c "$sql"); done
    fi
    PGAPPNAME=fx-harness PGTZ=UTC PGOPTIONS='-c client_min_messages=warning' \
        "$DM_PSQL" -X -v ON_ERROR_STOP=1 -qAt -d "$ci" "${args[@]}"
}

# fx_createdb SIDE NAME [TEMPLATE]
fx_createdb() {
    local side=$1 name=$2 tpl=${3:-} sql
    sql="CREATE DATABASE $(_dm_ident "$name")"
    [[ -n "$tpl" ]] && sql+=" TEMPLATE $(_dm_ident "$tpl")"
    fx_psql "$side" postgres "DROP DATABASE IF EXISTS $(_dm_ident "$name") WITH (FORCE)" "$sql"
}

# fx_dropdb SIDE NAME
fx_dropdb() { fx_psql "$1" postgres "DROP DATABASE IF EXISTS $(_dm_ident "$2") WITH (FORCE)"; }

# fx_use SRCDB DSTDB: DM_SOURCE on the source cluster, DM_DEST on the destination one.
fx_use() {
    DM_SOURCE=$(fx_ci src "$1") && DM_DEST=$(fx_ci dst "$2") || return 1
    export DM_SOURCE DM_DEST
}

# fx_wait_up SIDE: wait until the server accepts connections (after a restart).
fx_wait_up() {
    local i
    for ((i = 0; i < 300; i++)); do
        fx_psql "$1" postgres "SELECT 1" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# fx_setup_clusters: start both clusters under a new $FX_WORK (unless already running).
fx_setup_clusters() {
    if [[ -n "${FX_SRC_DIR:-}" && -e "$FX_SRC_DIR/.dm-cluster" ]]; then
        return 0
    fi
    FX_WORK=$(mktemp -d "${TMPDIR:-/tmp}/dm-fx.XXXXXX") || fx_die "mktemp failed"
    chmod 755 "$FX_WORK"
    FX_SRC_DIR=$FX_WORK/src
    FX_DST_DIR=$FX_WORK/dst
    # the source decodes (follow.sh); the rest of the trials do not mind
    CLUSTER_WAL_LEVEL=logical cluster_start "$FX_SRC_DIR" tcp || return 1
    cluster_start "$FX_DST_DIR" tcp || { cluster_stop "$FX_SRC_DIR"; return 1; }
    : "${FX_RESULTS:=$FX_WORK/results}"
    export FX_WORK FX_SRC_DIR FX_DST_DIR FX_RESULTS
}

# fx_teardown_clusters: stop both servers and remove $FX_WORK; with FX_KEEP=1 the
# servers are stopped but their data (the failed trials' databases) and the logs stay:
# tests/lib/cluster.sh restart $FX_WORK/dst starts one again.
fx_teardown_clusters() {
    local dir
    if [[ "${FX_KEEP:-0}" == 1 && -n "${FX_WORK:-}" ]]; then
        for dir in "${FX_SRC_DIR:-}" "${FX_DST_DIR:-}"; do
            [[ -n "$dir" ]] && _cl_postmaster_pid "$dir" >/dev/null && _cl_pg_ctl "$dir" -w -t 30 -m fast stop >/dev/null 2>&1
        done
        return 0
    fi
    [[ -n "${FX_SRC_DIR:-}" ]] && cluster_stop "$FX_SRC_DIR"
    [[ -n "${FX_DST_DIR:-}" ]] && cluster_stop "$FX_DST_DIR"
    if [[ -n "${FX_WORK:-}" && -d "$FX_WORK" ]]; then
        rm -rf -- "$FX_WORK"
    fi
    return 0
}

# ---------------------------------------------------------------- the dataset

fx_schema_sql() {
    cat <<'SQL'
CREATE SCHEMA fx;
CREATE TABLE fx.customer (
    id integer PRIMARY KEY,
    name text NOT NULL,
    email text,
    note text,
    updated_at timestamptz NOT NULL);
CREATE TABLE fx.orders (
    id bigint PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES fx.customer,
    placed_at timestamptz NOT NULL,
    status text NOT NULL,
    total numeric(12,2),
    note text,
    updated_at timestamptz NOT NULL);
CREATE TABLE fx.order_line (
    order_id bigint NOT NULL REFERENCES fx.orders,
    line_no integer NOT NULL,
    sku text NOT NULL,
    qty integer NOT NULL,
    price numeric(10,2) NOT NULL,
    attrs jsonb,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (order_id, line_no));
CREATE TABLE fx.blob (
    name text PRIMARY KEY,
    customer_id integer REFERENCES fx.customer,
    data bytea,
    tags text[]);
CREATE TABLE fx.category (
    id integer PRIMARY KEY,
    parent_id integer REFERENCES fx.category,
    label text NOT NULL);
CREATE TABLE fx.dept (
    id integer PRIMARY KEY,
    name text NOT NULL,
    manager_id integer);
CREATE TABLE fx.employee (
    id integer PRIMARY KEY,
    dept_id integer NOT NULL REFERENCES fx.dept,
    name text NOT NULL);
ALTER TABLE fx.dept ADD FOREIGN KEY (manager_id) REFERENCES fx.employee;
SQL
}

# The destination's trigger, as in Pagila: copied rows must not get a new updated_at.
fx_dest_trigger_sql() {
    cat <<'SQL'
CREATE FUNCTION fx.touch() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN NEW.updated_at := now(); RETURN NEW; END $$;
CREATE TRIGGER fx_touch BEFORE INSERT OR UPDATE ON fx.orders
    FOR EACH ROW EXECUTE FUNCTION fx.touch();
SQL
}

# fx_data_sql SCALE: the rows of fx_src. "Recent" rows (updated_at in 2024) are those
# fx_base holds in an older version, or lacks.
fx_data_sql() {
    local s=$1
    cat <<SQL
SELECT setseed(0.42);
CREATE TEMP TABLE n AS SELECT greatest(200, (20000 * $s)::int) AS nc,
    greatest(1000, (100000 * $s)::int) AS no, greatest(200, (20000 * $s)::int) AS nb,
    greatest(100, (2000 * $s)::int) AS ne;
INSERT INTO fx.customer
SELECT g, 'customer ' || g,
    CASE WHEN g % 10 = 0 THEN NULL ELSE 'c' || g || '@example.com' END,
    CASE g % 50 WHEN 0 THEN E'tab\there' WHEN 1 THEN E'new\nline' WHEN 2 THEN 'back\\slash'
        WHEN 3 THEN 'üñí©ødé ✓ 中文' WHEN 4 THEN '' WHEN 5 THEN '\N' WHEN 6 THEN ' trailing '
        ELSE NULL END,
    CASE WHEN g % 100 = 7 THEN timestamptz '2024-06-01' ELSE timestamptz '2020-01-01' END
        + g * interval '1 second'
FROM n, generate_series(1, n.nc) g;
INSERT INTO fx.orders
SELECT g, 1 + (g * 7919) % n.nc, timestamptz '2019-01-01' + g * interval '1 minute',
    (ARRAY['new', 'paid', 'shipped', 'cancelled'])[1 + g % 4],
    CASE WHEN g % 23 = 0 THEN NULL ELSE (g % 100000) / 100.0 END,
    CASE WHEN g % 97 = 0 THEN repeat('long note ', 300) WHEN g % 7 = 0 THEN 'order ' || g END,
    CASE WHEN g % 40 = 1 OR g > n.no * 0.98 THEN timestamptz '2024-06-01' ELSE timestamptz '2020-01-01' END
        + g * interval '1 second'
FROM n, generate_series(1, n.no) g;
INSERT INTO fx.order_line
SELECT o, l, 'SKU-' || ((o * 31 + l) % 5000), 1 + (o + l) % 9, ((o * l) % 10000) / 100.0,
    CASE WHEN o % 11 = 0 THEN jsonb_build_object('gift', true, 'wrap', o % 3) END,
    CASE WHEN o % 50 = 0 OR o > n.no * 0.98 THEN timestamptz '2024-06-01' ELSE timestamptz '2020-01-01' END
        + o * interval '1 second'
FROM n, generate_series(1, n.no) o, generate_series(1, 2) l;
INSERT INTO fx.blob
SELECT md5(g::text), CASE WHEN g % 5 = 0 THEN NULL ELSE 1 + g % n.nc END,
    CASE WHEN g % 9 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') || '\x00ff5c0a09'::bytea END,
    CASE WHEN g % 4 = 0 THEN ARRAY['a', 'b,c', NULL, 'd"e'] END
FROM n, generate_series(1, n.nb) g;
INSERT INTO fx.category SELECT g, NULL, 'root ' || g FROM generate_series(1, 10) g;
INSERT INTO fx.category SELECT g, 1 + g % 10, 'child ' || g FROM generate_series(11, 300) g;
UPDATE fx.category SET parent_id = 300 - id WHERE id BETWEEN 100 AND 150;
INSERT INTO fx.dept SELECT g, 'dept ' || g, NULL FROM generate_series(1, 50) g;
INSERT INTO fx.employee SELECT g, 1 + g % 50, 'employee ' || g FROM n, generate_series(1, n.ne) g;
UPDATE fx.dept SET manager_id = id * 2;
ANALYZE;
SQL
}

# fx_base_sql: turn a copy of fx_src into fx_base, the source as it was at the last
# run: recent inserts missing, recent updates with their old values and times.
fx_base_sql() {
    cat <<'SQL'
CREATE TEMP TABLE n AS SELECT (SELECT max(id) FROM fx.orders) AS no;
DELETE FROM fx.order_line USING n WHERE order_id % 50 = 0 OR order_id > n.no * 0.98;
DELETE FROM fx.orders USING n WHERE id > n.no * 0.98;
UPDATE fx.orders SET status = 'old', updated_at = timestamptz '2020-01-01' WHERE id % 40 = 1;
UPDATE fx.customer SET name = 'old name', updated_at = timestamptz '2020-01-01' WHERE id % 100 = 7;
UPDATE fx.blob SET data = 'old'::bytea WHERE name < '1';
UPDATE fx.employee SET name = 'old name' WHERE id % 10 = 0;
UPDATE fx.category SET label = 'old' WHERE id % 7 = 0;
ANALYZE;
SQL
}

# fx_drift_sql: turn a migrated destination into one that differs from fx_src in every
# way: rows missing, rows changed, rows only in the destination (2%, under the 10%
# delete guard), in parents and children alike.
fx_drift_sql() {
    cat <<'SQL'
CREATE TEMP TABLE n AS SELECT (SELECT max(id) FROM fx.customer) AS nc,
    (SELECT max(id) FROM fx.orders) AS no;
DELETE FROM fx.order_line WHERE order_id % 13 = 0 AND line_no = 2;
UPDATE fx.orders SET note = 'drift' WHERE id % 17 = 0;
UPDATE fx.customer SET email = NULL WHERE id % 19 = 0;
INSERT INTO fx.customer SELECT n.nc + g, 'extra', NULL, NULL, now()
    FROM n, generate_series(1, (n.nc * 0.02)::int) g;
INSERT INTO fx.orders SELECT n.no + g, n.nc + 1 + g % (n.nc * 0.02)::int, now(), 'extra', NULL, NULL, now()
    FROM n, generate_series(1, (n.no * 0.02)::int) g;
INSERT INTO fx.order_line SELECT n.no + g, 1, 'EXTRA', 1, 0, NULL, now()
    FROM n, generate_series(1, (n.no * 0.02)::int) g;
INSERT INTO fx.blob SELECT 'zz-extra-' || g, NULL, NULL, NULL FROM generate_series(1, 20) g;
DELETE FROM fx.blob WHERE name LIKE 'f%' AND name < 'f1';
UPDATE fx.employee SET name = 'drift' WHERE id % 31 = 0;
ANALYZE;
SQL
}

# The rows only the drift template has (the deletes a --delete run must make).
fx_extra_where() {
    case "$1" in
        fx.customer) echo "name = 'extra'" ;;
        fx.orders) echo "status = 'extra'" ;;
        fx.order_line) echo "sku = 'EXTRA'" ;;
        fx.blob) echo "name LIKE 'zz-extra-%'" ;;
    esac
}

# fx_build_data: the source databases and the destination templates (once per setup).
fx_build_data() {
    local mark
    mark=$(fx_psql dst postgres "SELECT 1 FROM pg_database WHERE datname = 'fx_drift_tpl'") || return 1
    [[ "$mark" == 1 ]] && return 0
    fx_say "building the dataset (scale $FX_SCALE)"
    fx_createdb src fx_src || return 1
    { fx_schema_sql; fx_data_sql "$FX_SCALE"; } | fx_psql src fx_src >/dev/null || return 1
    fx_createdb src fx_base fx_src || return 1
    fx_base_sql | fx_psql src fx_base >/dev/null || return 1
    fx_createdb dst fx_empty_tpl || return 1
    { fx_schema_sql; fx_dest_trigger_sql; } | fx_psql dst fx_empty_tpl >/dev/null || return 1

    # fx_incr_tpl: a complete run from fx_base, so the next run from fx_src is incremental.
    fx_createdb dst fx_incr_tpl fx_empty_tpl || return 1
    fx_use fx_base fx_incr_tpl
    dm-migrate -q run || { fx_say "building fx_incr_tpl: dm-migrate run failed"; return 1; }
    # fx_drift_tpl: a complete run from fx_src, then drifted.
    fx_createdb dst fx_drift_tpl fx_empty_tpl || return 1
    fx_use fx_src fx_drift_tpl
    dm-migrate -q run || { fx_say "building fx_drift_tpl: dm-migrate run failed"; return 1; }
    fx_drift_sql | fx_psql dst fx_drift_tpl >/dev/null || return 1
    local t
    for t in fx_empty_tpl fx_incr_tpl fx_drift_tpl; do
        fx_psql dst postgres "ALTER DATABASE $t WITH IS_TEMPLATE true" || return 1
    done
    fx_say "dataset: $(fx_rows fx_src) rows in fx_src"
}

# fx_rows SRCDB: the exact number of rows of the fx tables of SRCDB.
fx_rows() {
    fx_psql src "$1" "SELECT (SELECT count(*) FROM fx.customer) + (SELECT count(*) FROM fx.orders)
        + (SELECT count(*) FROM fx.order_line) + (SELECT count(*) FROM fx.blob)
        + (SELECT count(*) FROM fx.category) + (SELECT count(*) FROM fx.dept) + (SELECT count(*) FROM fx.employee)"
}

# fx_selftest: the comparator must be able to say "different" (a drifted destination,
# a duplicated row) before anything relies on its "equal".
fx_selftest() {
    local out rc=0
    out=$(fx_compare fx_src fx_drift_tpl) || rc=$?
    ((rc == 1)) && grep -q '^fx\.blob differs' <<<"$out" ||
        { echo "comparator self-test: fx_src and fx_drift_tpl compare with status $rc: $out" >&2; return 1; }
    # A table without a primary key holding one row twice.
    fx_psql src postgres "DROP DATABASE IF EXISTS fx_selftest" "CREATE DATABASE fx_selftest" >/dev/null &&
        fx_psql dst postgres "DROP DATABASE IF EXISTS fx_selftest" "CREATE DATABASE fx_selftest" >/dev/null &&
        fx_psql src fx_selftest "CREATE SCHEMA fx; CREATE TABLE fx.d (a int); INSERT INTO fx.d VALUES (1), (2)" &&
        fx_psql dst fx_selftest "CREATE SCHEMA fx; CREATE TABLE fx.d (a int); INSERT INTO fx.d VALUES (1), (1), (2)" || return 1
    rc=0
    out=$(fx_compare fx_selftest fx_selftest) || rc=$?
    fx_psql dst postgres "DROP DATABASE fx_selftest" >/dev/null; fx_psql src postgres "DROP DATABASE fx_selftest" >/dev/null
    ((rc == 1)) && grep -q 'duplicated row' <<<"$out" ||
        { echo "comparator self-test: a duplicated row not reported (status $rc): $out" >&2; return 1; }
    FX_ROWS=0
    return 0
}

# ---------------------------------------------------------------- comparison

# _fx_tables SIDE DB NAME_REGEX: "QUALIFIED<TAB>COLS<TAB>KEYCOLS" for each ordinary table
# of DB whose quoted name (schema.table, each part as %I quotes it) matches NAME_REGEX.
# Names holding a tab, a newline or a backslash are written U&"..." with escapes, so that
# each table stays on one line and its fields are separated by the only tabs.
_fx_tables() {
    local q="CASE WHEN \$1 ~ '[[:cntrl:]\\\\]' THEN 'U&\"' || replace(replace(replace(replace(replace(\$1,
        '\\', '\\\\'), '\"', '\"\"'), E'\\n', '\\000a'), E'\\t', '\\0009'), E'\\r', '\\000d') || '\"'
        ELSE quote_ident(\$1) END"
    fx_psql "$1" "$2" "CREATE FUNCTION pg_temp.fx_q(text) RETURNS text LANGUAGE sql AS \$\$ SELECT $q \$\$" \
        "SELECT pg_temp.fx_q(n.nspname) || '.' || pg_temp.fx_q(c.relname) || E'\t' ||
            (SELECT string_agg(pg_temp.fx_q(a.attname), ', ' ORDER BY a.attnum) FROM pg_attribute a
             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped) || E'\t' ||
            coalesce((SELECT string_agg(pg_temp.fx_q(a.attname), ', ' ORDER BY k.i)
             FROM pg_index x, unnest(x.indkey) WITH ORDINALITY AS k(attnum, i), pg_attribute a
             WHERE x.indrelid = c.oid AND x.indisprimary AND a.attrelid = c.oid AND a.attnum = k.attnum), '')
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND format('%I.%I', n.nspname, c.relname) ~ '$3'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dm')
          AND n.nspname !~ '^pg_(toast|temp_)'
        ORDER BY 1"
}

# _fx_dump SIDE DB OUTDIR LINES...: each table's rows (COPY text), sorted in byte order,
# into OUTDIR/1, OUTDIR/2, ...; one psql session.
_fx_dump() {
    local side=$1 db=$2 out=$3 i=0 line t cols
    shift 3
    {
        echo "$DM_FIXED_SETTINGS"
        for line in "$@"; do
            i=$((i + 1))
            IFS=$'\t' read -r t cols _ <<<"$line"
            printf "\\o '%s/%d.raw'\n" "$out" "$i"
            printf 'COPY (SELECT %s FROM ONLY %s) TO STDOUT;\n' "$cols" "$t"
        done
        printf '\\o\n'
    } | fx_psql "$side" "$db" >/dev/null || return 1
    for ((i = 1; i <= $#; i++)); do
        LC_ALL=C sort "$out/$i.raw" >"$out/$i" && rm -f "$out/$i.raw" || return 1
    done
}

# fx_compare SRCDB DSTDB [NAME_REGEX]: the destination's tables hold exactly the
# source's rows, and no duplicates. Adds the rows compared to FX_ROWS. Returns 0 equal,
# 1 different (what differs on stdout), 2 if a side could not be read.
fx_compare() {
    local src=$1 dst=$2 re=${3:-^fx\.} tables lines tmp i rc=0 line t cols keys n dups
    tables=$(_fx_tables src "$src" "$re") || { echo "cannot list the tables of $src"; return 2; }
    [[ -n "$tables" ]] || { echo "no table in $src matches $re"; return 2; }
    mapfile -t lines <<<"$tables"
    tmp=$(mktemp -d "$FX_WORK/cmp.XXXXXX") || return 2
    mkdir "$tmp/s" "$tmp/d"
    if ! _fx_dump src "$src" "$tmp/s" "${lines[@]}" 2>"$tmp/err" ||
        ! _fx_dump dst "$dst" "$tmp/d" "${lines[@]}" 2>>"$tmp/err"; then
        echo "cannot dump the tables: $(head -c 300 "$tmp/err")"
        rm -rf -- "$tmp"
        return 2
    fi
    for ((i = 0; i < ${#lines[@]}; i++)); do
        IFS=$'\t' read -r t cols keys <<<"${lines[i]}"
        n=$(wc -l <"$tmp/s/$((i + 1))")
        FX_ROWS=$((FX_ROWS + n))
        if ! cmp -s "$tmp/s/$((i + 1))" "$tmp/d/$((i + 1))"; then
            echo "$t differs: source $n rows, destination $(wc -l <"$tmp/d/$((i + 1))") rows; first differences:"
            diff "$tmp/s/$((i + 1))" "$tmp/d/$((i + 1))" | head -n 6 | cut -c1-200 | sed 's/^/    /'
            rc=1
        fi
        dups=$(uniq -d "$tmp/d/$((i + 1))" | wc -l)
        if ((dups > 0)); then
            echo "$t: $dups duplicated row(s) in the destination"
            rc=1
        fi
        if [[ -n "$keys" ]]; then
            dups=$(fx_psql dst "$dst" "SELECT count(*) - count(DISTINCT ($keys)) FROM ONLY $t") || dups='?'
            if [[ "$dups" != 0 ]]; then
                echo "$t: $dups duplicated key(s) in the destination"
                rc=1
            fi
        fi
    done
    rm -rf -- "$tmp"
    return "$rc"
}

# fx_equal SRCDB DSTDB [NAME_REGEX]: fx_compare, run in this shell (so that FX_ROWS
# counts), its report in FX_DIFF.
fx_equal() {
    local rc f=$FX_WORK/cmp.$BASHPID
    fx_compare "$@" >"$f"
    rc=$?
    FX_DIFF=$(<"$f")
    rm -f -- "$f"
    return "$rc"
}

# fx_dest_sane DSTDB: what must hold in any destination after a completed run: the
# trigger is enabled, no parked delete left, no lease left, every checkpoint complete.
fx_dest_sane() {
    local db=$1 out
    out=$(fx_psql dst "$db" "SELECT string_agg(tgname || '=' || tgenabled::text, ',') FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid = 'fx.orders'::regclass") || { echo "cannot read the trigger state"; return 1; }
    [[ "$out" == "fx_touch=O" ]] || { echo "trigger state after the run: $out (expected fx_touch=O)"; return 1; }
    out=$(fx_psql dst "$db" "SELECT count(*) FROM dm.pending_delete") || { echo "cannot count dm.pending_delete"; return 1; }
    [[ "$out" == 0 ]] || { echo "$out parked delete(s) left in dm.pending_delete"; return 1; }
    out=$(fx_psql dst "$db" "SELECT count(*) FROM dm.lease") || { echo "cannot count dm.lease"; return 1; }
    [[ "$out" == 0 ]] || { echo "$out lease(s) left in dm.lease"; return 1; }
    # The query's own success first: a failed query prints nothing, like no incomplete row.
    out=$(fx_psql dst "$db" "SELECT coalesce(string_agg(entity, ' '), '<none>') FROM dm.checkpoint WHERE NOT complete") ||
        { echo "cannot read dm.checkpoint"; return 1; }
    [[ "$out" == "<none>" ]] || { echo "incomplete checkpoint(s) after a successful run: $out"; return 1; }
    return 0
}

# fx_triggers_on DSTDB: the trigger is enabled (checked after every fault, even when the
# run failed: a crash must roll the switch back).
fx_triggers_on() {
    local out
    out=$(fx_psql dst "$1" "SELECT string_agg(tgname || '=' || tgenabled::text, ',') FROM pg_trigger
        WHERE NOT tgisinternal AND tgrelid = 'fx.orders'::regclass") || return 1
    [[ "$out" == "fx_touch=O" ]] || { echo "trigger state: $out (expected fx_touch=O)"; return 1; }
}

# ---------------------------------------------------------------- processes

# fx_session_pids SID [PATTERN]: the live processes of session SID (whose command line
# matches the extended regex PATTERN). Only processes this harness started are in SID.
# Zombies do not count: an orphan's zombie waits for pid 1, which in some containers
# takes its time.
fx_session_pids() {
    local p st
    for p in $(if (($# > 1)); then pgrep -s "$1" -f -- "$2"; else pgrep -s "$1"; fi 2>/dev/null); do
        read -r _ _ st _ 2>/dev/null <"/proc/$p/stat" || continue
        [[ "$st" != Z ]] && echo "$p"
    done
    return 0
}

# fx_cmdline PID: the command line of PID, NULs as spaces.
fx_cmdline() { tr "\\0" " " 2>/dev/null <"/proc/$1/cmdline"; }

# fx_wait_session SID SECONDS: wait until no process of session SID is left.
fx_wait_session() {
    local sid=$1 i
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -z "$(fx_session_pids "$sid")" ]] && return 0
        sleep 0.1
    done
    return 1
}

# fx_kill_session SID: SIGKILL every process left in session SID (harness cleanup
# after a failed trial; by pid, only ours).
fx_kill_session() {
    local p
    for p in $(fx_session_pids "$1"); do kill -9 "$p" 2>/dev/null; done
    return 0
}

# fx_start LOG CMD...: start CMD in a new session (so that its processes can be told
# from anyone else's), stdout and stderr to LOG. Sets FX_SID (= its pid).
fx_start() {
    local log=$1
    shift
    # The session leader is a shell that exits normally even when the command dies of a
    # signal, so that bash does not report "Killed" jobs on the harness's stderr.
    setsid bash -c 'timeout -k 10 "$0" "$@"; exit $?' "$FX_RUN_TIMEOUT" "$@" \
        </dev/null >"$log" 2>&1 3>&- &
    FX_SID=$!
}

# fx_stall DSTDB SIDE...: ACCESS EXCLUSIVE locks on fx.order_line, the largest table, on
# each SIDE (src: in fx_src; dst: in DSTDB), held by the harness (application_name
# fx-lock) until fx_stall_end or a server stop; returns once all are granted (fails
# after 60 s). A run's pipeline of that table then waits there, its processes alive:
# what a trial that aims at a short-lived stage falls back on when a loaded machine
# keeps missing it.
FX_STALL_PIDS=()
fx_stall() {
    local dst=$1 side db i n ok
    shift
    for side in "$@"; do
        db=$dst
        [[ "$side" == src ]] && db=fx_src
        PGAPPNAME=fx-lock "$DM_PSQL" -X -q -d "$(fx_ci "$side" "$db")" \
            -c "BEGIN; LOCK TABLE fx.order_line IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(300); COMMIT" >/dev/null 2>&1 &
        FX_STALL_PIDS+=($!)
    done
    for ((i = 0; i < 1200; i++)); do
        ok=0
        for side in "$@"; do
            n=$(fx_psql "$side" postgres "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE a.application_name = 'fx-lock' AND l.granted AND l.mode = 'AccessExclusiveLock'
                AND l.locktype = 'relation'") || return 1
            ((n >= 1)) && ok=$((ok + 1))
        done
        ((ok == $#)) && return 0
        sleep 0.05
    done
    return 1
}

# fx_stall_end: release fx_stall's locks (a server that is down has released them).
fx_stall_end() {
    local side
    for side in src dst; do
        fx_psql "$side" postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE application_name = 'fx-lock'" >/dev/null 2>&1
    done
    ((${#FX_STALL_PIDS[@]})) && wait "${FX_STALL_PIDS[@]}" 2>/dev/null
    FX_STALL_PIDS=()
    return 0
}

# fx_trial_dir FAULT N: a fresh directory for a trial's logs.
fx_trial_dir() {
    local d=$FX_WORK/logs/$1/$2
    rm -rf -- "$d"
    mkdir -p -- "$d" && echo "$d"
}

# fx_parse_common ARGS...: --trials N, --seed N, -v; sets FX_TRIALS, seeds RANDOM.
fx_parse_common() {
    while (($# > 0)); do
        case "$1" in
            --trials) FX_TRIALS=$2; shift ;;
            --trials=*) FX_TRIALS=${1#*=} ;;
            --seed) FX_SEED=$2; shift ;;
            --seed=*) FX_SEED=${1#*=} ;;
            -v) FX_VERBOSE=1 ;;
            *) fx_die "unknown option $1" ;;
        esac
        shift
    done
    [[ "$FX_TRIALS" =~ ^[0-9]+$ ]] || fx_die "--trials: expected a number"
    : "${FX_SEED:=$$}"
    RANDOM=$FX_SEED
}

# fx_script_init: what each script does first: clusters and dataset (normally already
# set up by tests/faults/run or tests/faults.bats, which export FX_WORK and friends).
fx_script_init() {
    set -u -o pipefail
    if [[ -z "${FX_SRC_DIR:-}" ]]; then
        fx_setup_clusters || fx_die "cannot start the clusters"
        FX_OWN_CLUSTERS=1
        trap 'fx_teardown_clusters' EXIT
    fi
    fx_build_data || fx_die "cannot build the dataset"
    # dm-migrate's default work directories (mktemp in $TMPDIR) under ours: a killed
    # driver cannot remove its own, and they go with $FX_WORK.
    mkdir -p "$FX_WORK/tmp" && TMPDIR=$FX_WORK/tmp && export TMPDIR
}

# fx_alive PID: running (not a zombie).
fx_alive() {
    local st
    read -r _ _ st _ 2>/dev/null <"/proc/$1/stat" || return 1
    [[ "$st" != Z ]]
}

# fx_wait_pid PID SECONDS: wait for PID (a child started with fx_start) to end, at most
# SECONDS; its exit status, or 255 if it did not end (then it is killed).
fx_wait_pid() {
    local pid=$1 i
    for ((i = 0; i < $2 * 20; i++)); do
        fx_alive "$pid" || break
        sleep 0.05
    done
    if fx_alive "$pid"; then
        fx_kill_session "$pid"
        { wait "$pid"; } 2>/dev/null
        return 255
    fi
    { wait "$pid"; } 2>/dev/null
}

# ---------------------------------------------------------------- runs

# The three starting points of a trial's destination, and the command for each:
#   delete    fx_drift_tpl  dm-migrate --full --delete run   (inserts, updates, deletes)
#   initial   fx_empty_tpl  dm-migrate run                   (everything inserted)
#   incr      fx_incr_tpl   dm-migrate run                   (incremental where it can)
declare -A FX_TPL=([delete]=fx_drift_tpl [initial]=fx_empty_tpl [incr]=fx_incr_tpl)
declare -A FX_CALIB=()
FX_EXTRA_TABLES=(fx.customer fx.orders fx.order_line fx.blob)

fx_mode_args() {
    case "$1" in
        delete) echo "--full --delete run" ;;
        *) echo "run" ;;
    esac
}

# fx_fresh_dest MODE [DB]: DB (default fx_k) as a fresh copy of MODE's template, and
# DM_SOURCE/DM_DEST set to fx_src and it.
fx_fresh_dest() {
    local db=${2:-fx_k}
    fx_createdb dst "$db" "${FX_TPL[$1]}" && fx_use fx_src "$db"
}

# fx_extras DB: "table=count ..." of the rows only the drift template has.
fx_extras() {
    local t q="" sep=""
    for t in "${FX_EXTRA_TABLES[@]}"; do
        q+="${sep}SELECT '$t=' || count(*) FROM $t WHERE $(fx_extra_where "$t")"
        sep=" UNION ALL "
    done
    fx_psql dst "$1" "$q" | tr '\n' ' '
}

# fx_migrate LOG ARGS...: dm-migrate -q ARGS in a new session, to the end; its status.
fx_migrate() {
    local log=$1
    shift
    fx_start "$log" dm-migrate -q "$@"
    { wait "$FX_SID"; } 2>/dev/null
}

# fx_wait_lease DB SECONDS: until no lease of DB is held by a live backend.
fx_wait_lease() {
    local i
    for ((i = 0; i < $2 * 5; i++)); do
        [[ "$(fx_psql dst "$1" "SELECT count(*) FROM dm.lease l JOIN pg_stat_activity a ON a.pid = l.pid")" == 0 ]] && return 0
        sleep 0.2
    done
    return 1
}

# fx_calibrate MODE: one clean run of MODE, timed (faults are spread over that time);
# it must itself end equal. Cached in $FX_WORK for the other scripts.
fx_calibrate() {
    local mode=$1 d t0 rc
    if [[ -r "$FX_WORK/calib.$mode" ]]; then
        FX_CALIB[$mode]=$(<"$FX_WORK/calib.$mode")
        return 0
    fi
    d=$(fx_trial_dir calibrate "$mode")
    fx_fresh_dest "$mode" || fx_die "createdb failed"
    t0=$(fx_now_ms)
    # shellcheck disable=SC2046 # the mode's words
    fx_migrate "$d/run.log" $(fx_mode_args "$mode")
    rc=$?
    FX_CALIB[$mode]=$(($(fx_now_ms) - t0))
    if ((rc != 0)); then
        fx_die "the clean $mode run failed (exit status $rc): $(tail -n 3 "$d/run.log")"
    elif ! fx_equal fx_src fx_k; then
        fx_die "the clean $mode run did not make the destination equal: $FX_DIFF"
    fi
    echo "${FX_CALIB[$mode]}" >"$FX_WORK/calib.$mode"
    fx_say "clean $mode run: ${FX_CALIB[$mode]} ms"
}

# fx_keep_failed DB NAME: keep a failed trial's destination for a post mortem.
fx_keep_failed() {
    fx_psql dst postgres "DROP DATABASE IF EXISTS $2 WITH (FORCE)" \
        "ALTER DATABASE $1 RENAME TO $2" >/dev/null 2>&1
    echo "(destination kept as database $2 on $FX_DST_DIR)"
}

# fx_lease_state DB: who holds the leases of DB, and what their backends do.
fx_lease_state() {
    fx_psql dst "$1" "SELECT string_agg(l.entity || ' held by ' || l.owner || ' (backend ' ||
        coalesce(a.state || ': ' || left(a.query, 60), 'gone') || ')', '; ')
        FROM dm.lease l LEFT JOIN pg_stat_activity a ON a.pid = l.pid" 2>/dev/null
}

# fx_has_retries: does this dm-migrate retry transient failures by itself?
fx_has_retries() { dm-migrate --help 2>&1 | grep -q -- '--retries'; }

# fx_failed_msg LOG: the driver's last "ENTITY: STAGE failed: why" message in LOG (text
# or logfmt), if any, after the program's own error line before it.
fx_failed_msg() {
    local last
    last=$(grep -nE '^dm-migrate: .* failed: |event=failed .*msg=".* failed: ' -- "$1" 2>/dev/null | tail -n 1)
    [[ -n "$last" ]] || return 0
    head -n "${last%%:*}" -- "$1" | grep -v '^/.* Killed ' | tail -n 2 |
        sed -E 's/^ts=[^ ]* level=[a-z]* (run=[^ ]* )?//' | tr '\n' ' '
}
