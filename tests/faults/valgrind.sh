#!/usr/bin/env bash
# tests/faults/valgrind.sh - a small end-to-end run, and the error paths, under valgrind.
#
#   tests/faults/valgrind.sh [--trials N] [--seed N] [-v]
#
# Every program is run as
#   valgrind --leak-check=full --errors-for-leak-kinds=definite,indirect
#            --error-exitcode=99 --track-fds=no
# so that an invalid access, a use of an uninitialised value, or a definite or indirect
# leak makes it exit 99 (libpq's and OpenSSL's "still reachable" blocks do not count).
# The run: for each table of a small set (the awkward fixture's types, a self-referencing
# table, a text key with bytea, the dept/employee cycle), dm-extract (source rows),
# dm-extract --hashes (destination), dm-diff --delete, dm-load --batch-rows 7 (then the
# cycle with two --table), dm-cat of each stream; dm-entities, dm-ckpt, dm-extract
# --export-snapshot. The error paths: truncated, corrupted and empty streams into
# dm-load, dm-diff and dm-cat; a hashes stream and another table's stream into dm-load;
# a closed pipe; an unreachable server; dm-load --rejects; --defer-deletes and
# --apply-deletes. Each program must also exit with its expected status, and the
# destination must end equal to the source (psql COPY comparison).
# Without valgrind installed, the script says so and counts one failure.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fx_parse_common "$@"
fx_script_init

W=$FX_WORK/valgrind
rm -rf -- "$W"
mkdir -p "$W/logs"
if ! command -v valgrind >/dev/null 2>&1; then
    FX_TRIALS_DONE=1
    fx_fail "valgrind is not installed (apt-get install valgrind): nothing checked"
    fx_result "valgrind"
    exit 1
fi
# The programs' standard output is often a stream file: our messages go to fd 5.
exec 5>&1
VG=(valgrind -q --leak-check=full --show-leak-kinds=definite,indirect
    --errors-for-leak-kinds=definite,indirect --error-exitcode=99 --num-callers=30)
NRUN=0

# vg EXPECTED NAME PROG ARGS...: run PROG under valgrind (stdin/stdout as given); fail if
# valgrind found something (exit 99 or a report in its log) or PROG did not exit with
# EXPECTED (a |-separated list).
vg() {
    local want=$1 name=$2 rc log
    shift 2
    NRUN=$((NRUN + 1))
    log=$W/logs/$NRUN.$name.log
    "${VG[@]}" --log-file="$log" "$@"
    rc=$?
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    if ((rc == 99)) || grep -q 'definitely lost\|indirectly lost\|Invalid \|uninitialised\|Mismatched free' "$log"; then
        fx_fail "valgrind: $name ($*): $(grep -m 8 -E 'lost|Invalid|uninit|at 0x|by 0x' "$log" | sed 's/^==[0-9]*== *//' | tr '\n' '|')" >&5
        return 0
    fi
    if [[ "|$want|" != *"|$rc|"* ]]; then
        fx_fail "valgrind: $name: exit $rc, expected $want ($*)" >&5
    fi
    fx_log "$name: exit $rc" >&5
    return 0
}

setup() {
    fx_createdb src vg_src && fx_createdb dst vg_dst || return 1
    local ddl="CREATE SCHEMA fx;
        CREATE TABLE fx.category (id integer PRIMARY KEY, parent_id integer REFERENCES fx.category, label text NOT NULL);
        CREATE TABLE fx.blob (name text PRIMARY KEY, customer_id integer, data bytea, tags text[]);
        CREATE TABLE fx.dept (id integer PRIMARY KEY, name text NOT NULL, manager_id integer);
        CREATE TABLE fx.employee (id integer PRIMARY KEY, dept_id integer NOT NULL REFERENCES fx.dept, name text NOT NULL);
        ALTER TABLE fx.dept ADD FOREIGN KEY (manager_id) REFERENCES fx.employee;"
    fx_psql src vg_src "$ddl" >/dev/null && fx_psql dst vg_dst "$ddl" >/dev/null || return 1
    local t
    for t in fx.category fx.blob fx.dept fx.employee; do
        fx_psql src fx_src "COPY (SELECT * FROM $t ORDER BY 1 LIMIT 400) TO STDOUT" >"$W/$t.copy" || return 1
    done
    for t in fx.category fx.blob fx.dept fx.employee; do
        fx_psql src vg_src "SET session_replication_role = replica; COPY $t FROM STDIN" <"$W/$t.copy" >/dev/null || return 1
    done
    fx_psql src vg_src "DELETE FROM fx.employee WHERE dept_id NOT IN (SELECT id FROM fx.dept)" \
        "UPDATE fx.dept SET manager_id = NULL WHERE manager_id NOT IN (SELECT id FROM fx.employee)" >/dev/null
    # The destination: some rows, some of them different, some extra.
    fx_psql src vg_src "COPY (SELECT * FROM fx.category WHERE id % 3 <> 0 ORDER BY id) TO STDOUT" |
        fx_psql dst vg_dst "SET session_replication_role = replica; COPY fx.category FROM STDIN" >/dev/null
    fx_psql dst vg_dst "SET session_replication_role = replica; UPDATE fx.category SET label = 'changed' WHERE id % 5 = 0;
        INSERT INTO fx.category VALUES (9001, NULL, 'extra'), (9002, 9001, 'extra child')" >/dev/null
    dm_load_sql_side src vg_src && dm_load_sql_side dst vg_dst || return 1
    fx_psql dst vg_dst "SET session_replication_role = replica; DO \$\$ DECLARE t text; BEGIN
        FOR t IN SELECT format('%I.%I', schemaname, tablename) FROM pg_tables WHERE schemaname = 'awk' LOOP
            EXECUTE 'DELETE FROM ' || t || ' WHERE (ctid::text::point)[1]::int % 3 = 1';
        END LOOP; END \$\$" >/dev/null
}

# dm_load_sql_side SIDE DB: the awkward fixture into DB.
dm_load_sql_side() {
    fx_psql "$1" "$2" <"$DM_FIXTURES/awkward.sql" >/dev/null
}

end_to_end() {
    local t f
    fx_use vg_src vg_dst
    vg 0 entities dm-entities --source-env DM_SOURCE --dest-env DM_DEST fx.category fx.blob fx.dept fx.employee \
        >"$W/entities.out" 2>"$W/entities.err"
    local tables=(fx.category fx.blob)
    local only=""
    ((${FX_QUICK:-0})) && only="AND tablename IN ('texts', 'tree')"
    for t in $(fx_psql src vg_src "SELECT format('%s.%s', schemaname, tablename) FROM pg_tables
            WHERE schemaname = 'awk' AND tablename <> 'no_pk' $only ORDER BY 1"); do
        tables+=("$t")
    done
    for t in "${tables[@]}"; do
        f=$W/${t//[^a-z_.]/_}
        vg 0 extract dm-extract --db-env DM_SOURCE --table "$t" >"$f.rows" 2>/dev/null
        vg 0 extract-hashes dm-extract --db-env DM_DEST --table "$t" --hashes >"$f.hashes" 2>/dev/null
        vg 0 diff dm-diff --delete "$f.rows" "$f.hashes" >"$f.changes" 2>/dev/null
        # fx.category references itself: one transaction, as dm-migrate loads it
        local batch=7
        [[ "$t" == fx.category || "$t" == awk.tree ]] && batch=0
        vg 0 load dm-load --db-env DM_DEST --table "$t" --batch-rows "$batch" --force "$f.changes" 2>"$f.load.err"
        vg 0 cat dm-cat "$f.changes" >/dev/null 2>&1
    done
    vg 0 cat-rows dm-cat "$W/fx.blob.rows" >/dev/null
    vg 0 cat-hashes dm-cat "$W/fx.blob.hashes" >/dev/null
    # The cycle: two streams, one dm-load.
    for t in fx.dept fx.employee; do
        vg 0 extract dm-extract --db-env DM_SOURCE --table "$t" >"$W/$t.rows" 2>/dev/null
        vg 0 extract-hashes dm-extract --db-env DM_DEST --table "$t" --hashes >"$W/$t.hashes" 2>/dev/null
        vg 0 diff dm-diff --delete "$W/$t.rows" "$W/$t.hashes" >"$W/$t.changes" 2>/dev/null
    done
    vg 0 load-group dm-load --db-env DM_DEST --table fx.dept --table fx.employee \
        "$W/fx.dept.changes" "$W/fx.employee.changes" 2>/dev/null
    # Deferred deletes, then applied; a second diff finds nothing.
    fx_psql dst vg_dst "INSERT INTO fx.category VALUES (9003, NULL, 'extra again')" >/dev/null
    vg 0 extract dm-extract --db-env DM_SOURCE --table fx.category >"$W/c2.rows" 2>/dev/null
    vg 0 extract-hashes dm-extract --db-env DM_DEST --table fx.category --hashes >"$W/c2.hashes" 2>/dev/null
    vg 0 diff dm-diff --delete "$W/c2.rows" "$W/c2.hashes" >"$W/c2.changes" 2>/dev/null
    vg 0 load-defer dm-load --db-env DM_DEST --table fx.category --defer-deletes --run-id vg1 "$W/c2.changes" 2>/dev/null
    vg 0 apply-deletes dm-load --db-env DM_DEST --table fx.category --apply-deletes --run-id vg1 --force 2>/dev/null
    vg 0 check dm-diff --check <(dm-extract --db-env DM_SOURCE --table fx.category --hashes) \
        <(dm-extract --db-env DM_DEST --table fx.category --hashes) 2>/dev/null
    vg 0 ckpt-list dm-ckpt --db-env DM_DEST list >/dev/null
    vg 0 ckpt-runs dm-ckpt --db-env DM_DEST runs >/dev/null
    vg 0 ckpt-show dm-ckpt --db-env DM_DEST show fx.category >/dev/null
    echo | vg 0 export-snapshot dm-extract --db-env DM_SOURCE --export-snapshot >/dev/null 2>&1
    # Since a watermark (awk.changes has a change column).
    vg 0 extract-since dm-extract --db-env DM_SOURCE --table awk.changes --since '2000-01-01' --overlap '1 hour' \
        >/dev/null 2>&1
    local re='^(fx\.|awk\.(?!no_pk))'
    ((${FX_QUICK:-0})) && re='^(fx\.|awk\.(texts|tree)$)'
    fx_equal vg_src vg_dst "$re" || fx_fail "valgrind: the destination is not equal after the run: $FX_DIFF"
}

error_paths() {
    local f=$W/fx.blob.changes s
    s=$(stat -c %s "$W/fx.blob.rows")
    head -c $((s / 2)) "$W/fx.blob.rows" >"$W/cut.rows"
    cp "$W/fx.blob.rows" "$W/flip.rows"
    printf '\x7f' | dd of="$W/flip.rows" bs=1 seek=$((s / 3)) conv=notrunc status=none
    : >"$W/empty"
    local bads=(cut.rows flip.rows empty)
    ((${FX_QUICK:-0})) && bads=(flip.rows)
    for s in "${bads[@]}"; do
        vg 3 cat-bad dm-cat "$W/$s" >/dev/null 2>&1
        vg 3 diff-bad dm-diff --delete "$W/$s" "$W/fx.blob.hashes" >/dev/null 2>&1
        vg 3 diff-bad-dest dm-diff "$W/fx.blob.rows" "$W/$s" >/dev/null 2>&1
        vg '1|3' load-bad dm-load --db-env DM_DEST --table fx.blob --batch-rows 7 "$W/$s" 2>/dev/null
    done
    vg 3 load-hashes dm-load --db-env DM_DEST --table fx.blob "$W/fx.blob.hashes" 2>/dev/null
    vg 3 load-other dm-load --db-env DM_DEST --table fx.category "$W/fx.blob.rows" 2>/dev/null
    vg '1|3' load-no-table dm-load --db-env DM_DEST --table fx.nosuch "$W/fx.blob.rows" 2>/dev/null
    vg 2 load-usage dm-load --db-env DM_DEST 2>/dev/null
    vg 2 extract-usage dm-extract --table 2>/dev/null
    # A closed pipe, an unreachable server.
    # (a reader that is gone before the first write; vg runs in this shell, not in a
    # pipeline's subshell, so that its verdict counts)
    vg 1 extract-pipe dm-extract --db-env DM_SOURCE --table fx.blob 2>/dev/null > >(exec true)
    DM_X="host=127.0.0.1 port=1 dbname=x connect_timeout=2" vg 7 extract-noserver dm-extract --db-env DM_X --table fx.blob 2>/dev/null
    DM_X="host=127.0.0.1 port=1 dbname=x connect_timeout=2" vg 7 load-noserver dm-load --db-env DM_X --table fx.blob "$W/fx.blob.rows" 2>/dev/null
    vg 2 ckpt-bad dm-ckpt --db-env DM_DEST nosuchcommand 2>/dev/null
    # Rejected rows: the destination refuses categories whose label says so.
    fx_psql dst vg_dst "ALTER TABLE fx.category ADD CHECK (label <> 'refuse me')" >/dev/null
    fx_psql src vg_src "UPDATE fx.category SET label = 'refuse me' WHERE id IN (5, 6, 7)" >/dev/null
    dm-diff <(dm-extract --db-env DM_SOURCE --table fx.category) \
        <(dm-extract --db-env DM_DEST --table fx.category --hashes) >"$W/rej.changes" 2>/dev/null
    vg 5 load-rejects dm-load --db-env DM_DEST --table fx.category --batch-rows 2 --rejects "$W/rej.rejects" \
        "$W/rej.changes" 2>/dev/null
    vg 0 cat-rejects dm-cat "$W/rej.rejects" >/dev/null
    vg 1 load-max-rejects dm-load --db-env DM_DEST --table fx.category --rejects "$W/rej2.rejects" --max-rejects 1 \
        "$W/rej.changes" 2>/dev/null
}

fx_say "valgrind (seed $FX_SEED): $(valgrind --version)"
setup || fx_die "cannot set up the valgrind databases"
end_to_end
error_paths
fx_note "$NRUN program runs under valgrind"
fx_result "valgrind"
((FX_FAILS == 0))
