#!/usr/bin/env bats
# tests/dm-migrate.bats - the porcelain, end to end, on Pagila in a throwaway cluster.
#
# Databases (all in this file's cluster):
#   mig_src_tpl   Pagila, plus a primary key on the two payment partitions that lack one
#                 (dm-entities refuses tables without a primary key)
#   mig_dst_tpl   the same schema, no rows, Pagila's last_updated triggers still enabled
#                 (dm-load switches them off inside its transactions)
#   mig_done_tpl  mig_dst_tpl after one `dm-migrate run` from mig_src_tpl (made once, by
#                 the first test that needs a migrated destination)
# Each test works on its own copies, so the tests do not depend on one another.
# Equality is always checked with the harness's dm_all_tables_equal / dm_tables_equal,
# which use psql COPY output and none of dm's code.

bats_require_minimum_version 1.5.0
load common

setup_file() {
    dm_setup_cluster
    dm_pagila_templates mig_src_tpl mig_dst_tpl
}

teardown_file() {
    dm_teardown_cluster
}

# pair NAME: fresh databases NAME_src (Pagila) and NAME_dst (empty), and DM_SOURCE /
# DM_DEST pointing at them.
pair() {
    dm_createdb "$1_src" mig_src_tpl
    dm_createdb "$1_dst" mig_dst_tpl
    dm_use "$1_src" "$1_dst"
}

# migrated_pair NAME: like pair, but NAME_dst already holds a complete first run.
migrated_pair() {
    local ready
    ready=$(dm_psql postgres "SELECT 1 FROM pg_database WHERE datname = 'mig_done_tpl'")
    if [[ "$ready" != 1 ]]; then
        dm_createdb mig_done_build mig_dst_tpl
        dm_use mig_src_tpl mig_done_build
        dm-migrate -q -j 4 run
        dm_psql postgres "ALTER DATABASE mig_done_build RENAME TO mig_done_tpl"
    fi
    dm_createdb "$1_src" mig_src_tpl
    dm_createdb "$1_dst" mig_done_tpl
    dm_use "$1_src" "$1_dst"
}

# big_pair NAME ROWS: like pair, plus a table public.big of ROWS rows in NAME_src and
# empty in NAME_dst (with a change column, updated_at).
big_pair() {
    pair "$1"
    local db
    for db in "$1_src" "$1_dst"; do
        dm_psql "$db" "CREATE TABLE public.big (id int PRIMARY KEY, payload text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT '2026-01-01 00:00:00+00')"
    done
    dm_psql "$1_src" "INSERT INTO public.big (id, payload) SELECT g, md5(g::text) FROM generate_series(1, $2) g" \
        "ANALYZE public.big"
}

# row_versions DB: for each table of public (partitions, not their parents), its name,
# row count and a digest of every row's (ctid, xmin): any write to a row (an UPDATE to
# the same values included) changes them. Read with SQL, not with dm.
row_versions() {
    local tables t sql="" sep=""
    tables=$(dm_psql "$1" "SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'public' AND c.relkind = 'r'
        ORDER BY 1") || return 1
    [[ -n "$tables" ]] || { echo "row_versions: no table in $1" >&2; return 1; }
    while IFS= read -r t; do
        sql+="$sep SELECT '$t', count(*), md5(string_agg(ctid::text || ' ' || xmin::text, ',' ORDER BY ctid)) FROM $t"
        sep=" UNION ALL"
    done <<<"$tables"
    dm_psql "$1" "$sql ORDER BY 1"
}

# json_sql JSON EXPR: EXPR, SQL over the jsonb value j, evaluated by the test cluster
# (PostgreSQL parses the JSON; a syntax error fails the test).
json_sql() {
    dm_psql postgres "SELECT $2 FROM (SELECT \$dmj\$$1\$dmj\$::jsonb AS j) AS s"
}

# A logfmt event: time, level, then key=value pairs, values bare or double-quoted.
LOGFMT_RE='^ts=[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z level=(debug|info|warn|error)( [a-z_]+=([^ "=]+|"([^"\\]|\\.)*"))+$'

# all_logfmt TEXT: is every line of TEXT one logfmt event with an event key?
all_logfmt() {
    local line n=0
    while IFS= read -r line; do
        n=$((n + 1))
        if [[ ! "$line" =~ $LOGFMT_RE || "$line" != *" event="* ]]; then
            echo "not a logfmt event: $line" >&2
            return 1
        fi
    done <<<"$1"
    ((n > 0))
}

# ---------------------------------------------------------------- arguments

@test "usage: a bad option is a one-line usage message and exit 2" {
    run -2 dm-migrate --bogus run
    assert_equal "${#lines[@]}" 1
    assert_output --regexp '^usage: dm-migrate .*--bogus'
    run -2 dm-migrate
    assert_output --regexp '^usage: '
    run -2 dm-migrate frobnicate
    assert_output --partial "unknown command frobnicate"
    run -2 dm-migrate -j zero run
    run -2 dm-migrate run --overlap
    run -0 dm-migrate --version
    assert_output "dm-migrate (dm) 0.1.0"
    run -0 dm-migrate --help
    assert_line --regexp '^usage: dm-migrate '
}

@test "usage: a missing DM_SOURCE or DM_DEST says what to export" {
    run -2 env -u DM_SOURCE -u DM_DEST dm-migrate run
    assert_equal "${#lines[@]}" 1
    assert_output --partial "export DM_SOURCE="
    run -2 env -u DM_DEST DM_SOURCE="$(dm_conninfo postgres)" dm-migrate plan
    assert_output --partial "export DM_DEST="
    # status only needs the destination.
    run -2 env -u DM_DEST dm-migrate status
    assert_output --partial "export DM_DEST="
}

# ---------------------------------------------------------------- run

@test "run: the initial run makes every table equal; nothing on stdout" {
    pair init
    run --separate-stderr dm-migrate run
    assert_success
    assert_output ""
    # Not on a terminal: one logfmt event per line on stderr.
    # shellcheck disable=SC2154 # $stderr is set by run --separate-stderr
    [[ "$stderr" =~ entity=public\.rental\ event=entity_done\ mode=full\ inserted=16044\  ]]
    [[ "$stderr" =~ event=run_done\ status=0\ entities=22\ done=22\  ]]
    dm_all_tables_equal init_src init_dst
    # The foreign-key cycle staff <-> store was loaded too.
    assert_equal "$(dm_row_count init_dst public.store)" 2
    # Every entity has a complete checkpoint; a change column gives a watermark.
    assert_equal "$(dm_psql init_dst "SELECT count(*) FILTER (WHERE complete), count(*) FROM dm.checkpoint")" "22|22"
    assert_equal "$(dm_psql init_dst "SELECT watermark IS NOT NULL FROM dm.checkpoint WHERE entity = 'public.actor'")" t
}

@test "run: a second run with nothing changed writes nothing" {
    migrated_pair again
    local before
    before=$(row_versions again_dst)
    run -0 dm-migrate run
    # No row of any table was written: the same row versions, compared without dm.
    assert_equal "$(row_versions again_dst)" "$before"
    local rid
    rid=$(dm_psql again_dst "SELECT run_id FROM dm.run ORDER BY started_at DESC LIMIT 1")
    # dm-load's own counts, recorded per entity under the run id.
    assert_equal "$(dm_psql again_dst "SELECT count(*), sum(inserted + updated + deleted) FROM dm.run WHERE run_id = '$rid'")" "22|0"
    assert_output --regexp 'event=run_done status=0 entities=22 done=22 inserted=0 updated=0 deleted=0 unchanged=[0-9]+ '
    assert_output --regexp 'entity=public\.actor event=entity_done mode=incremental '
    # The summary: one event per entity.
    assert_equal "$(grep -c ' event=summary outcome=ok ' <<<"$output")" 22
    dm_all_tables_equal again_src again_dst
}

@test "run: -j 3 runs independent entities in parallel and gets the same result" {
    pair par
    run -0 dm-migrate -q -j 3 run
    assert_output ""
    dm_all_tables_equal par_src par_dst
}

@test "run -j: an entity starts once its parents are done, the largest ready one first; the default -j is the processors" {
    pair sched
    # Row estimates for the planner, so that the sizes are known.
    dm_psql sched_src "ANALYZE"
    run -0 --separate-stderr dm-migrate --log-format logfmt -j 3 run
    local log=$stderr e group parents p start fin largest n
    local -A first=()
    # (from dm-entities: ENTITY, GROUP, PARENTS and the source's row estimate; the
    # members of a foreign-key cycle start together, under the first one's name)
    local plan
    plan=$(dm-entities --source-env DM_SOURCE --dest-env DM_DEST --estimates | grep -v '^#' | cut -f 2,6,8,9)
    while IFS=$'\t' read -r e group parents _; do
        [[ "$group" == cycle* && -z "${first[$group]:-}" ]] && first[$group]=$e
        [[ "$group" == cycle* ]] && e=${first[$group]}
        start=$(grep -n " entity=$e event=entity_start " <<<"$log" | cut -d: -f1)
        [[ -n "$start" ]] || { echo "no entity_start for $e; replay: bats tests/dm-migrate.bats -f 'largest ready'" >&2; return 1; }
        [[ "$parents" == - ]] && continue
        for p in ${parents//,/ }; do
            fin=$(grep -n " entity=$p event=entity_done " <<<"$log" | cut -d: -f1)
            if [[ -z "$fin" ]] || ((fin > start)); then
                echo "$e (line $start) started before its parent $p was done (line ${fin:-none}); replay: bats tests/dm-migrate.bats -f 'largest ready'" >&2
                return 1
            fi
        done
    done <<<"$plan"
    # The first three started (-j 3: a fourth waits for one of them to end) include the
    # largest of the entities without parents.
    largest=$(awk -F'\t' '$2 == "-" && $3 == "-" && $4 > n { n = $4; e = $1 } END { print e }' <<<"$plan")
    [[ -n "$largest" ]]
    grep ' event=entity_start ' <<<"$log" | head -n 3 | grep -q " entity=$largest " ||
        { echo "the largest entity without parents, $largest, was not among the first three started:" >&2
          grep ' event=entity_start ' <<<"$log" | head -n 3 >&2; return 1; }
    dm_all_tables_equal sched_src sched_dst
    # Without -j: as many at once as processors (no more than the 22 entities; the test
    # cluster's 50 connections bound it to about 14).
    run -0 --separate-stderr dm-migrate --log-format logfmt run
    n=$(grep -o ' event=run_start .*' <<<"$stderr" | grep -o 'jobs=[0-9]*')
    n=${n#jobs=}
    if (($(nproc) <= 8)); then
        assert_equal "$n" "$(nproc)"
    else
        ((n >= 8 && n <= $(nproc)))
    fi
}

@test "run --delete: updates, inserts and deletes in the source reach the destination" {
    migrated_pair chg
    dm_psql chg_src <<'SQL'
UPDATE public.actor SET last_name = initcap(last_name) WHERE actor_id IN (1, 2, 3);
INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (201, 'ADA', 'LOVELACE');
INSERT INTO public.film_actor (actor_id, film_id) VALUES (201, 1), (201, 2);
UPDATE public.customer SET email = 'seven@example.org' WHERE customer_id = 7;
DELETE FROM public.payment WHERE rental_id IN (1185, 1476);
DELETE FROM public.rental WHERE rental_id IN (1185, 1476);
SQL
    # plan changes nothing and counts what run will do.
    run -0 dm-migrate --delete plan
    assert_line --regexp '^public\.actor +full +1 +3 +0$'
    assert_line --regexp '^public\.film_actor +full +2 +0 +0$'
    assert_line --regexp '^public\.rental +full +0 +0 +2$'
    assert_equal "$(dm_row_count chg_dst public.actor)" 200
    run -0 dm-migrate --delete run
    assert_output --regexp 'entity=public\.rental event=deleted deleted=2 '
    dm_all_tables_equal chg_src chg_dst
    assert_equal "$(dm_psql chg_dst "SELECT count(*) FROM dm.pending_delete")" 0
    # Without --delete, rows only in the destination are reported as extra, not deleted.
    dm_psql chg_dst "INSERT INTO public.category (category_id, name) VALUES (99, 'Extra')"
    run -0 dm-migrate --full plan public.category
    assert_line --regexp '^public\.category +full +0 +0 +1$'
    run -0 dm-migrate --full run public.category
    assert_equal "$(dm_psql chg_dst "SELECT count(*) FROM public.category WHERE category_id = 99")" 1
}

@test "run: a row changed without touching last_update needs --full" {
    migrated_pair quiet
    # Pagila's actors all share one last_update, the watermark: an incremental run
    # rereads them all. Move the watermark on with an ordinary update first.
    dm_psql quiet_src "UPDATE public.actor SET first_name = 'LOUD' WHERE actor_id = 1"
    run -0 dm-migrate run public.actor
    assert_output --regexp 'entity=public\.actor event=entity_done mode=incremental inserted=0 updated=1 '
    # Then a change that does not touch last_update (the source's trigger bypassed,
    # as a bulk fix by hand would do): the incremental run does not see it.
    dm_psql quiet_src "SET session_replication_role = replica; UPDATE public.actor SET first_name = 'QUIET' WHERE actor_id = 10"
    run -0 dm-migrate run public.actor
    assert_output --regexp 'entity=public\.actor event=entity_done mode=incremental inserted=0 updated=0 deleted=0 unchanged=1 '
    run -1 dm_tables_equal quiet_src quiet_dst public.actor
    run -4 dm-migrate verify public.actor
    run -0 dm-migrate --full run public.actor
    assert_output --regexp 'entity=public\.actor event=entity_done mode=full inserted=0 updated=1 '
    dm_tables_equal quiet_src quiet_dst public.actor
}

@test "run: a failing stage is named, the run stops, and its exit status is kept" {
    migrated_pair fail
    dm_psql fail_src "INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (300, 'NO', 'PARENT')" \
        "INSERT INTO public.film_actor (actor_id, film_id) VALUES (300, 1)"
    # film_actor alone: its new row references an actor the destination lacks.
    run -1 dm-migrate run public.film_actor
    assert_line --partial "violates foreign key constraint"
    assert_line --regexp ' entity=public\.film_actor stage=load event=failed status=1 msg="public\.film_actor: dm-load failed: exit status 1"$'
    # The same, for a person: --log-format text.
    run -1 dm-migrate --log-format text run public.film_actor
    assert_line --regexp '^dm-migrate: public\.film_actor: dm-load failed: exit status 1$'
    # With its parent, it works.
    run -0 dm-migrate run public.actor public.film_actor
    dm_tables_equal fail_src fail_dst public.film_actor
}

@test "concurrent runs: a held entity makes a second run refuse (6) or wait; a killed holder lets go" {
    pair conc
    local held=$BATS_TEST_TMPDIR/held holder waiter i
    # Another run holds public.language, as a dm-migrate run holds its entities from
    # its first load to its last delete.
    dm-ckpt --db-env DM_DEST --run-id other-run hold public.language >"$held" 2>&3 </dev/null &
    holder=$!
    for i in $(seq 100); do [[ -s "$held" ]] && break; sleep 0.1; done
    run -0 cat "$held"
    assert_output held
    run -6 dm-migrate --log-format text run
    assert_line --partial "public.language: another run holds this entity: other-run/"
    assert_line --partial "another run holds some of these entities"
    # Refused before anything moved.
    [[ "$(dm_row_count conc_dst public.actor)" == 0 ]]
    # A hold is not a load in progress.
    run -0 dm-migrate status --json
    refute_output --partial '"entity":"run:'
    # --wait: the run starts once the holder lets go.
    dm-migrate -q --wait 60 run 2>"$BATS_TEST_TMPDIR/waited.err" &
    waiter=$!
    sleep 1.5
    kill -0 "$waiter"   # still waiting
    [[ "$(dm_row_count conc_dst public.actor)" == 0 ]]
    kill -TERM "$holder"
    wait "$holder"
    wait "$waiter" || { cat "$BATS_TEST_TMPDIR/waited.err" >&2; false; }
    dm_all_tables_equal conc_src conc_dst
    # A holder killed with -9 leaves no hold behind (its lease dies with its session),
    # and the run's own holder lets go when the run ends.
    : >"$held"
    dm-ckpt --db-env DM_DEST --run-id killed-run hold public.language >"$held" 2>&3 </dev/null &
    holder=$!
    for i in $(seq 100); do [[ -s "$held" ]] && break; sleep 0.1; done
    kill -9 "$holder"
    wait "$holder" || true
    run -0 dm-migrate -q run
    run -0 dm-migrate -q run
    [[ "$(dm_psql conc_dst "SELECT count(*) FROM dm.lease")" == 0 ]]
}

# ---------------------------------------------------------------- key ranges

@test "usage: --partition I/N names one entity, for run only" {
    run -2 dm-migrate --partition 1/4 run
    assert_output --partial "name the one entity to split"
    run -2 dm-migrate --partition 4/4 run public.rental
    run -2 dm-migrate --partition 0/0 run public.rental
    run -2 dm-migrate --partition x run public.rental
    run -2 dm-migrate --partition 0/2 plan public.rental
    assert_output --partial "--partition is for run"
    run -2 dm-migrate --split-rows 10 run
}

@test "run --partition I/N: each range by a run of its own, at once (pods of an Indexed Job); a delete lands with its range only" {
    big_pair part 30000
    local k pids=()
    # three runs at once, as three pods given JOB_COMPLETION_INDEX 0, 1, 2 would
    for k in 0 1 2; do
        dm-migrate -q --partition "$k/3" run public.big 2>"$BATS_TEST_TMPDIR/part$k.err" &
        pids+=($!)
    done
    for k in 0 1 2; do
        wait "${pids[k]}" || { cat "$BATS_TEST_TMPDIR/part$k.err" >&2; fail "range $k/3 failed"; }
    done
    dm_tables_equal part_src part_dst public.big
    run -0 dm-ckpt --db-env DM_DEST list
    assert_line --regexp '^public\.big#0/3	'
    assert_line --regexp '^public\.big#2/3	'
    refute_line --regexp '^public\.big	'
    # the ranges, from dm.partition: one row of each
    bounds=$(dm_psql part_dst "SELECT key_before FROM dm.partition WHERE entity = 'public.big' ORDER BY part")
    b0=$(sed -n 1p <<<"$bounds") b1=$(sed -n 2p <<<"$bounds")
    ((b0 > 1000 && b1 > b0 && b1 < 30000)) || fail "bounds $b0 $b1"
    dm_psql part_src "DELETE FROM public.big WHERE id IN (1, $b0, 30000)" \
        "UPDATE public.big SET payload = 'changed', updated_at = now() WHERE id IN (2, $((b0 + 1)), 29999)"
    run -0 dm-migrate --log-format text --partition 1/3 --delete --force run public.big
    assert_output --partial "public.big#1/3: full: insert=0 update=1 delete=1 (deferred)"
    assert_equal "$(dm_psql part_dst "SELECT count(*) FROM public.big WHERE id IN (1, $b0, 30000)")" 2
    assert_equal "$(dm_psql part_dst "SELECT string_agg(id::text, ',' ORDER BY id) FROM public.big WHERE payload = 'changed'")" "$((b0 + 1))"
    # a run without --partition runs every range of it, each from its own checkpoint
    run -0 dm-migrate --log-format text run public.big
    assert_output --partial "public.big#0/3: incremental: insert=0 update=1"
    assert_output --partial "public.big#2/3: incremental: insert=0 update=1"
    run -0 dm-migrate --delete --force run public.big
    dm_tables_equal part_src part_dst public.big
    run -1 dm-migrate --partition 0/2 run public.big
    assert_output --partial "split into 3 ranges already, not 2"
}

@test "run --split-rows: a big table is split once its destination holds rows; its ranges start from the whole table's checkpoint" {
    (($(nproc) >= 2)) || skip "one processor: dm-migrate splits nothing"
    big_pair auto 20000
    run -0 dm-migrate --log-format text --split-rows 18000 run
    assert_output --partial "public.big: full: insert=20000"
    dm_psql auto_dst "ANALYZE public.big"
    dm_psql auto_src "UPDATE public.big SET payload = 'changed', updated_at = now() WHERE id IN (7, 19999)"
    run -0 dm-migrate --log-format text --split-rows 18000 run
    assert_output --partial 'public.big#0/2: incremental: insert=0 update=1 '
    dm_all_tables_equal auto_src auto_dst
    parts=$(dm_psql auto_dst "SELECT max(parts) FROM dm.partition WHERE entity = 'public.big'")
    # 20000 rows by 18000: 2 ranges (at most one per processor: this test needs 2)
    assert_equal "$parts" 2
    # the other tables are too small to split (rental has 16044 rows)
    assert_equal "$(dm_psql auto_dst "SELECT count(DISTINCT entity) FROM dm.partition")" 1
    # later runs keep the ranges whatever --split-rows says
    run -0 dm-migrate --log-format text --delete run
    assert_output --partial "public.big#1/$parts: full:"
    dm_all_tables_equal auto_src auto_dst
}

# ---------------------------------------------------------------- verify

@test "verify: exit 0 when equal, 4 after an edit in the destination, naming the entity" {
    migrated_pair ver
    run -0 dm-migrate verify
    assert_line --regexp '^public\.rental +ok$'
    refute_output --partial DIFFERENT
    dm_psql ver_dst "UPDATE public.city SET city = 'Atlantis' WHERE city_id = 5" \
        "DELETE FROM public.film_category WHERE film_id = 7"
    run -4 dm-migrate verify
    assert_line --regexp '^public\.city +DIFFERENT +1 different, e\.g\. \(5\)$'
    assert_line --regexp '^public\.film_category +DIFFERENT +1 only in source'
    assert_line --regexp '^public\.actor +ok$'
}

# ---------------------------------------------------------------- crashes and bad streams

@test "crash: kill -9 of dm-load in the middle of a large load, then a rerun: equal, no duplicates" {
    migrated_pair crash
    local db
    for db in crash_src crash_dst; do
        dm_psql "$db" "CREATE TABLE public.big (id int PRIMARY KEY, payload text NOT NULL,
            updated_at timestamptz NOT NULL DEFAULT now())"
    done
    dm_psql crash_src "INSERT INTO public.big (id, payload)
        SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, 200000) g"
    local pidfile=$BATS_TEST_TMPDIR/dm-load.pid n=0 i
    # The pipeline dm-migrate runs, by hand, with small batches so there are many
    # commits to land between.
    {
        dm-extract --db-env DM_SOURCE --table public.big |
            sh -c 'echo $$ > "$1"; exec dm-load --db-env DM_DEST --table public.big --batch-rows 1000 -q' \
                sh "$pidfile"
    } 3>&- &
    local pipe=$!
    for ((i = 0; i < 200; i++)); do
        [[ -s "$pidfile" ]] && n=$(dm_psql crash_dst "SELECT count(*) FROM public.big")
        ((n >= 5000)) && break
        sleep 0.05
    done
    kill -9 "$(cat "$pidfile")"
    wait "$pipe" || true
    n=$(dm_psql crash_dst "SELECT count(*) FROM public.big")
    echo "rows committed before the kill: $n"
    ((n >= 5000 && n < 200000))
    # Killed mid-stream: the checkpoint is not complete, so no incremental shortcut.
    assert_equal "$(dm_psql crash_dst "SELECT complete FROM dm.checkpoint WHERE entity = 'public.big'")" f
    run -0 dm-migrate run public.big
    assert_output --regexp "entity=public\\.big event=entity_done mode=full inserted=$((200000 - n)) updated=0 "
    assert_equal "$(dm_row_count crash_dst public.big)" 200000
    assert_equal "$(dm_psql crash_dst "SELECT count(DISTINCT id) FROM public.big")" 200000
    dm_tables_equal crash_src crash_dst public.big
}

@test "bad stream: a truncated changes stream makes dm-load exit 3 and delete nothing" {
    migrated_pair trunc
    dm_psql trunc_dst "INSERT INTO public.actor (actor_id, first_name, last_name)
        VALUES (301, 'ONLY', 'DEST'), (302, 'ONLY', 'DEST')"
    dm_psql trunc_src "UPDATE public.actor SET first_name = 'CHANGED' WHERE actor_id = 5"
    local f=$BATS_TEST_TMPDIR/actor.changes size
    dm-diff --delete -q \
        <(dm-extract --db-env DM_SOURCE --table public.actor) \
        <(dm-extract --db-env DM_DEST --table public.actor --hashes) >"$f"
    size=$(stat -c %s "$f")
    run -0 dm-cat "$f"
    assert_output --partial '{"op":"delete","key":["302"]}'
    head -c $((size - 5)) "$f" >"$f.cut"
    run -3 dm-load --db-env DM_DEST --table public.actor --disable-triggers "$f.cut"
    assert_equal "$(dm_psql trunc_dst "SELECT count(*) FROM public.actor WHERE actor_id > 300")" 2
    # The whole stream, though, is applied.
    run -0 dm-load --db-env DM_DEST --table public.actor --disable-triggers "$f"
    assert_equal "$(dm_psql trunc_dst "SELECT count(*) FROM public.actor WHERE actor_id > 300")" 0
    dm_tables_equal trunc_src trunc_dst public.actor
}

# ---------------------------------------------------------------- makefile, status

@test "makefile: make -j2 -f migrates everything, parents before children" {
    pair mk
    local mk=$BATS_TEST_TMPDIR/dm.mk
    dm-migrate makefile >"$mk"
    # exact foreign-key parents: rental references staff, inventory and customer
    run grep '^public\.rental:' "$mk"
    assert_output --regexp '^public\.rental:( public\.(staff|inventory|customer)){3}$'
    run grep -c '^public\.actor:$' "$mk"
    assert_output 1
    grep -q '^public\.store: public\.staff$' "$mk"
    run make -j2 -f "$mk" DM_FLAGS=-q
    assert_success
    dm_all_tables_equal mk_src mk_dst
    # Without the connections in the environment, the Makefile says what to export.
    run env -u DM_SOURCE make -f "$mk" public.actor
    assert_failure
    assert_output --partial "export DM_SOURCE"
}

@test "status: checkpoints and the last run of each entity" {
    migrated_pair st
    run -0 dm-migrate status public.actor public.rental
    assert_line --regexp '^  public\.actor +2006-02-15 09:34:33 +[-0-9: +]+ complete '
    # RUN, STARTED, FINISHED, OUTCOME, INSERTED, UPDATED, DELETED, UNCHANGED, REJECTED,
    # SECONDS, ROWS/S
    assert_line --regexp '^  public\.rental +[0-9TZ-]+ +[-0-9: +]+ +[-0-9: +]+ ok +16044 +0 +0 +0 +0 +[0-9.]+ +[0-9]+$'
    assert_output --partial "In progress:"
    refute_output --partial public.city
}

# ---------------------------------------------------------------- baseline, plan

@test "baseline: counts per entity, and the gap closes to zero after a run" {
    migrated_pair base
    dm_psql base_src <<'SQL'
UPDATE public.actor SET last_name = 'CHANGED' WHERE actor_id IN (1, 2, 3);
INSERT INTO public.actor (actor_id, first_name, last_name, last_update)
    VALUES (201, 'ADA', 'LOVELACE', '2030-01-01 00:00:00');
DELETE FROM public.film_category WHERE film_id IN (3, 4);
SQL
    dm_psql base_dst "INSERT INTO public.category (category_id, name) VALUES (99, 'Extra')"
    run -0 --separate-stderr dm-migrate --json baseline
    local j=$output
    assert_equal "$(json_sql "$j" "jsonb_array_length(j->'entities')")" 22
    # actor: 201 rows in the source, 200 in the destination, 3 changed; its newest
    # change is the new row's.
    assert_equal "$(json_sql "$j" "(SELECT concat_ws(' ', e->>'source_rows', e->>'destination_rows', e->>'in_both',
        e->>'only_in_source', e->>'only_in_destination', e->>'changed', e->>'newest_change', e#>>'{checkpoint,state}')
        FROM jsonb_array_elements(j->'entities') e WHERE e->>'entity' = 'public.actor')")" \
        "201 200 200 1 0 3 2030-01-01 00:00:00 complete"
    assert_equal "$(json_sql "$j" "(SELECT e->>'only_in_destination' FROM jsonb_array_elements(j->'entities') e
        WHERE e->>'entity' = 'public.film_category')")" 2
    # A table without a change column has no newest change.
    assert_equal "$(json_sql "$j" "(SELECT e->>'newest_change' IS NULL FROM jsonb_array_elements(j->'entities') e
        WHERE e->>'entity' = 'public.payment_p2007_01')")" t
    # 1 row only in the source; 2 film categories and a category only in the
    # destination; 3 changed.
    assert_equal "$(json_sql "$j" "concat_ws(' ', j#>>'{totals,only_in_source}', j#>>'{totals,only_in_destination}',
        j#>>'{totals,changed}', j#>>'{totals,differing}')")" "1 3 3 7"
    # The same as a table.
    run -0 --separate-stderr dm-migrate baseline public.actor public.category
    assert_line --regexp '^public\.actor +201 +200 +200 +1 +0 +3 +2030-01-01 00:00:00 +2006-02-15 09:34:33$'
    assert_line --regexp '^total +217 +217 +216 +1 +1 +3$'
    assert_line "5 rows differ: 1 only in the source, 1 only in the destination, 3 changed."

    run -0 dm-migrate --delete run public.actor public.category public.film_category
    run -0 --separate-stderr dm-migrate --json baseline public.actor public.category public.film_category
    assert_equal "$(json_sql "$output" "concat_ws(' ', j#>>'{totals,differing}',
        (j#>>'{totals,source_rows}') = (j#>>'{totals,destination_rows}'),
        (j#>>'{totals,source_rows}') = (j#>>'{totals,in_both}'))")" "0 t t"
    run -0 --separate-stderr dm-migrate baseline public.actor
    assert_line "The destination holds the same rows as the source."
    assert_line --regexp '^public\.actor +201 +201 +201 +0 +0 +0 +2030-01-01 00:00:00 +2030-01-01 00:00:00$'
}

# plan_vs_run PLAN_JSON RUN_STDERR: every entity's insert, update and delete in the
# plan are the inserted, updated and deleted of its summary event in the run's log.
plan_vs_run() {
    local planned reported
    planned=$(json_sql "$1" "(SELECT string_agg(concat_ws(' ', e->>'entity', e->>'insert', e->>'update', e->>'delete'),
        E'\n' ORDER BY e->>'entity' COLLATE \"C\") FROM jsonb_array_elements(j->'entities') e)") || return 1
    reported=$(awk '/ event=summary / { e = i = u = d = ""
            for (k = 1; k <= NF; k++) { split($k, kv, "=")
                if (kv[1] == "entity") e = kv[2]; if (kv[1] == "inserted") i = kv[2]
                if (kv[1] == "updated") u = kv[2]; if (kv[1] == "deleted") d = kv[2] }
            print e, i, u, d }' <<<"$2" | LC_ALL=C sort)
    printf 'planned:\n%s\nreported:\n%s\n' "$planned" "$reported"
    [[ -n "$planned" && "$planned" == "$reported" ]]
}

@test "plan: predicts exactly the counts the run then reports, with the first keys of each kind" {
    migrated_pair pred
    dm_psql pred_src <<'SQL'
UPDATE public.actor SET last_name = initcap(last_name) WHERE actor_id IN (4, 5, 6, 7);
INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (202, 'GRACE', 'HOPPER');
INSERT INTO public.film_actor (actor_id, film_id) VALUES (202, 1), (202, 2), (202, 3);
UPDATE public.customer SET email = 'x@example.org' WHERE customer_id IN (8, 9);
SQL
    # Incremental where there is a change column and a checkpoint (the payments have
    # none: a full comparison).
    local ents=(public.actor public.category public.customer public.film_actor public.payment_p2007_01)
    run -0 --separate-stderr dm-migrate --json plan "${ents[@]}"
    local plan=$output
    assert_equal "$(json_sql "$plan" "(SELECT concat_ws(' ', e->>'mode', e->>'insert', e->>'update', e#>>'{examples,update}',
        e#>>'{examples,insert}') FROM jsonb_array_elements(j->'entities') e WHERE e->>'entity' = 'public.actor')")" \
        'incremental 1 4 ["(4)", "(5)", "(6)", "(7)"] ["(202)"]'
    assert_equal "$(json_sql "$plan" "(SELECT e->>'mode' FROM jsonb_array_elements(j->'entities') e
        WHERE e->>'entity' = 'public.payment_p2007_01')")" full
    run -0 --separate-stderr dm-migrate run "${ents[@]}"
    plan_vs_run "$plan" "$stderr"
    # A full comparison with deletes, after more changes.
    dm_psql pred_src "UPDATE public.film SET rental_rate = 0.49 WHERE film_id <= 12" \
        "DELETE FROM public.film_category WHERE film_id = 3" "DELETE FROM public.film_actor WHERE film_id = 3"
    ents=(public.film public.film_actor public.film_category)
    run -0 --separate-stderr dm-migrate --delete --json plan "${ents[@]}"
    plan=$output
    assert_equal "$(json_sql "$plan" "(SELECT concat_ws(' ', e->>'update', e#>>'{examples,update}')
        FROM jsonb_array_elements(j->'entities') e WHERE e->>'entity' = 'public.film')")" \
        '12 ["(1)", "(2)", "(3)", "(4)", "(5)"]'
    assert_equal "$(json_sql "$plan" "j#>>'{totals,delete}'")" 7
    run -0 --separate-stderr dm-migrate --delete run "${ents[@]}"
    plan_vs_run "$plan" "$stderr"
    # Nothing left to do.
    run -0 --separate-stderr dm-migrate --delete --json plan "${ents[@]}"
    assert_equal "$(json_sql "$output" "concat_ws(' ', j#>>'{totals,insert}', j#>>'{totals,update}', j#>>'{totals,delete}')")" "0 0 0"
    local t
    for t in public.actor public.customer public.film public.film_actor public.film_category; do
        dm_tables_equal pred_src pred_dst "$t"
    done
}

@test "plan: the keys of each kind, and a run that would trip the delete guard" {
    migrated_pair guard
    dm_psql guard_dst "INSERT INTO public.language (language_id, name) VALUES (50, 'Klingon'), (51, 'Quenya')"
    dm_psql guard_src "UPDATE public.language SET name = 'Deutsch' WHERE language_id = 6"
    run -0 --separate-stderr dm-migrate --delete plan public.language
    # 2 of 8 rows: 25% > 10%.
    assert_line --regexp '^public\.language +full +0 +1 +2 +trips the delete guard \(25\.0% > 10%\): the run would fail; --force$'
    assert_line "  public.language: update (6); delete (50) (51)"
    run -0 --separate-stderr dm-migrate --delete --max-delete-share 30 --json plan public.language
    assert_equal "$(json_sql "$output" "j#>>'{entities,0,delete_guard}'")" '{"trips": false, "limit_pct": 30, "share_pct": 25.0}'
    # Without --delete: the rows are extra, and --delete would trip the guard.
    run -0 --separate-stderr dm-migrate --full plan public.language
    assert_line --regexp '^public\.language +full +0 +1 +2 +--delete would trip the delete guard \(25\.0% > 10%\)$'
    assert_line "  public.language: update (6); extra (50) (51)"
    # And the run does.
    run -1 --separate-stderr dm-migrate --delete run public.language
    [[ "$stderr" == *"refusing to delete 2 of 8 rows"* ]]
}

# ---------------------------------------------------------------- status, progress, logs

@test "status --json: a run in progress seen from another shell, then the finished run; progress in the log" {
    big_pair prog 300000
    local log=$BATS_TEST_TMPDIR/run.log i out="" n=""
    dm-migrate --batch-rows 500 --progress-interval 1 run public.big 2>"$log" 3>&- &
    local mig=$!
    for ((i = 0; i < 150; i++)); do
        out=$(dm-migrate --json status public.big)
        n=$(json_sql "$out" "(SELECT (e->>'batches')::int FROM jsonb_array_elements(j->'in_progress') e
            WHERE e->>'entity' = 'public.big')")
        [[ -n "$n" ]] && ((n >= 2)) && break
        sleep 0.1
    done
    echo "$out"
    [[ -n "$n" ]] && ((n >= 2))
    local rid
    rid=$(json_sql "$out" "j#>>'{in_progress,0,run}'")
    [[ "$rid" =~ ^[0-9]{8}T[0-9]{6}Z-[0-9]+$ ]]
    # In progress: its row in dm.run, the load's lease alive, counts so far.
    assert_equal "$(json_sql "$out" "concat_ws(' ', j#>>'{entities,0,last_run,outcome}', j#>>'{entities,0,last_run,live}',
        (j#>>'{in_progress,0,inserted}')::int > 0)")" "running true t"
    # The text form too.
    run -0 dm-migrate status public.big
    assert_output --regexp "In progress:"$'\n'"  ENTITY +RUN .*"$'\n'"  public\.big +$rid +[-0-9: +]+ +[0-9]+ +[0-9]+ "
    wait "$mig"
    # Finished: the same run, ok, every row inserted; nothing in progress.
    run -0 dm-migrate --json status public.big
    assert_equal "$(json_sql "$output" "concat_ws(' ', j#>>'{entities,0,last_run,run}', j#>>'{entities,0,last_run,outcome}',
        j#>>'{entities,0,last_run,inserted}', (j#>>'{entities,0,last_run,seconds}')::numeric > 0,
        jsonb_array_length(j->'in_progress'), j#>>'{entities,0,checkpoint,state}')")" "$rid ok 300000 t 0 complete"
    # The run's log: logfmt only, with progress events (rows so far, rate, an ETA from
    # the planner's estimate) and the summary.
    cat "$log"
    all_logfmt "$(cat "$log")"
    grep -E " run=$rid entity=public\.big stage=compare event=progress mode=full rows=[0-9]+ rows_per_s=[0-9]+ .*total=300000 eta_s=[0-9]+ " "$log"
    grep -E " event=summary outcome=ok mode=full inserted=300000 .* rows_per_s=[0-9]+ " "$log"
    grep -E " event=run_done status=0 .* rows_per_s=[0-9]+$" "$log"
    dm_tables_equal prog_src prog_dst public.big
}

@test "logs: every stderr line of a piped run is one logfmt event, -v and failures included" {
    migrated_pair logs
    dm_psql logs_src "UPDATE public.actor SET first_name = 'LOG' WHERE actor_id = 9" \
        "INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (300, 'NEW', 'ACTOR')" \
        "INSERT INTO public.category (category_id, name) VALUES (99, 'No parent yet')" \
        "INSERT INTO public.film_category (film_id, category_id) VALUES (1, 99)"
    run -0 --separate-stderr dm-migrate -v run public.actor public.language public.staff public.store
    assert_output ""
    all_logfmt "$stderr"
    # Commands (-v), the start, each entity, the summary and the end, all with the run id.
    local rid
    rid=$(sed -n 's/.* run=\([^ ]*\) event=run_start .*/\1/p' <<<"$stderr")
    [[ -n "$rid" ]]
    [[ "$stderr" == *" level=debug run=$rid event=debug msg=\"public.actor: dm-extract --db-env DM_SOURCE "* ]]
    [[ "$stderr" == *" run=$rid entity=public.actor event=entity_done mode=incremental inserted=1 updated=1 "* ]]
    [[ "$stderr" == *" run=$rid entity=public.staff event=entity_start mode=incremental group=public.staff,public.store"* ]]
    [[ "$stderr" == *" run=$rid entity=public.store event=summary outcome=ok "* ]]
    [[ "$stderr" == *" run=$rid event=run_done status=0 entities=4 done=4 "* ]]
    # A failure: the program's message and dm-migrate's, as events.
    run -1 --separate-stderr dm-migrate run public.film_category
    all_logfmt "$stderr"
    [[ "$stderr" =~ level=error\ run=[^\ ]+\ entity=public\.film_category\ stage=load\ event=error\ msg=\"dm-load:\ .*violates\ foreign\ key ]]
    [[ "$stderr" == *" event=summary outcome=failed "* ]]
    [[ "$stderr" == *" event=run_done status=1 "* ]]
    # -q: errors only.
    run -1 --separate-stderr dm-migrate -q run public.film_category
    all_logfmt "$stderr"
    [[ "$stderr" != *"level=info"* ]]
}

@test "progress: a live line per running entity on a terminal (tmux), cleared at the end" {
    command -v tmux >/dev/null || skip "tmux is not installed"
    big_pair tty 300000
    local sock=$BATS_TEST_TMPDIR/tmux.sock screen="" i cmd
    cmd="$(printf '%q ' env "PATH=$PATH" "DM_SOURCE=$DM_SOURCE" "DM_DEST=$DM_DEST" \
        dm-migrate --batch-rows 500 run public.big public.actor)"
    tmux -S "$sock" new-session -d -x 160 -y 24 "$cmd; echo \"exit status \$?\"; sleep 60" 3>&-
    # Both waits end on what the screen shows; their bounds (5 min) are only against a
    # hang, far beyond what the run takes on a loaded machine.
    for ((i = 0; i < 3000; i++)); do
        screen=$(tmux -S "$sock" capture-pane -p)
        [[ "$screen" =~ public\.big\ +full\ +compare\ +[0-9,]+\ of\ ~300,000\ rows\ \([0-9]+%\)\ +[0-9,]+\ rows/s\ +ETA\ [0-9]+:[0-9]{2} ]] && break
        [[ "$screen" == *"exit status "* ]] && break
        sleep 0.1
    done
    echo "$screen"
    [[ "$screen" =~ ETA\ [0-9]+:[0-9]{2} ]]
    for ((i = 0; i < 3000; i++)); do
        screen=$(tmux -S "$sock" capture-pane -p)
        [[ "$screen" == *"exit status "* ]] && break
        sleep 0.1
    done
    tmux -S "$sock" kill-server 2>/dev/null || true
    echo "$screen"
    [[ "$screen" == *"exit status 0"* ]]
    # Readable lines and the summary, and no progress line left behind.
    [[ "$screen" =~ dm-migrate:\ public\.big:\ full:\ insert=300000\ update=0\ unchanged=0 ]]
    [[ "$screen" =~ total\ +2\ entities\ +300200\  ]]
    [[ "$screen" != *"rows/s  ETA"* && "$screen" != *" compare "* && "$screen" != *"ts="* ]]
}

# ---------------------------------------------------------------- retries

@test "retries: a stage that fails transiently (exit 7) runs again after 1 s" {
    pair retry
    # A dm-load of public.actor that fails once with exit status 7, as on a lost
    # connection (the entities run at once by default: the other one loads unharmed);
    # beside a copy of dm-migrate, which puts its own directory first on PATH.
    local fake=$BATS_TEST_TMPDIR/fake p
    mkdir "$fake"
    for p in dm-extract dm-diff dm-ckpt dm-cat dm-entities; do ln -s "$DM_REPO/bin/$p" "$fake/$p"; done
    cp "$(command -v dm-migrate)" "$fake/dm-migrate"
    printf '%s\n' '#!/bin/sh' \
        "victim=\$(cat '$fake/victim')" \
        'case "$*" in *"$victim"*) ;; *) exec '"'$DM_REPO/bin/dm-load'"' "$@" ;; esac' \
        "if mkdir '$fake/failed' 2>/dev/null; then" \
        '    echo "dm-load: server closed the connection unexpectedly" >&2' \
        '    exit 7' \
        'fi' \
        "exec '$DM_REPO/bin/dm-load' \"\$@\"" >"$fake/dm-load"
    chmod +x "$fake/dm-load"
    echo public.actor >"$fake/victim"
    run -0 --separate-stderr "$fake/dm-migrate" run public.actor public.language
    echo "$stderr"
    all_logfmt "$stderr"
    [[ "$stderr" =~ entity=public\.actor\ stage=load\ event=retry\ status=7\ attempt=1\ retries=3\ delay_s=1\ error=\"dm-load:\ server\ closed ]]
    [[ "$stderr" == *"entity=public.actor event=entity_done mode=full inserted=200 updated=0 deleted=0 unchanged=0 "*" retries=1"* ]]
    dm_tables_equal retry_src retry_dst public.actor
    # As text; and without retries, the status 7 is the run's.
    rmdir "$fake/failed"
    echo public.language >"$fake/victim"
    dm_psql retry_dst "DELETE FROM public.language WHERE language_id > 1"
    run -7 "$fake/dm-migrate" --log-format text --retries 0 --full run public.language
    assert_line --regexp '^dm-migrate: public\.language: dm-load failed: exit status 7$'
    rmdir "$fake/failed"
    run -0 "$fake/dm-migrate" --log-format text --full run public.language
    assert_line --regexp '^dm-migrate: public\.language: dm-load failed with a transient error \(exit status 7: dm-load: server closed the connection unexpectedly\): retry 1 of 3 in 1 s$'
    dm_tables_equal retry_src retry_dst public.language
}

@test "retries: the server down when a run starts and back after its first failed attempt" {
    pair down
    local err=$BATS_TEST_TMPDIR/down.err mig i rc=0
    # Little to replay after the crash, so that the server is back quickly.
    dm_psql postgres "CHECKPOINT"
    cluster_kill "$DM_TEST_DIR"
    # The server comes back once the run has failed once and waits to retry (not after a
    # fixed delay); --retries 5 leaves it 1+2+4+8+16 s to be back, crash recovery included.
    dm-migrate --retries 5 run public.actor public.category 2>"$err" 3>&- &
    mig=$!
    for ((i = 0; i < 1200; i++)); do
        grep -q ' event=retry ' "$err" && break
        kill -0 "$mig" 2>/dev/null || break
        sleep 0.05
    done
    cluster_restart "$DM_TEST_DIR"
    wait "$mig" || rc=$?
    cat "$err"
    ((rc == 0)) || { echo "dm-migrate exited $rc; replay: bats tests/dm-migrate.bats -f 'server down when a run starts'" >&2; false; }
    grep -Eq 'event=retry status=7 attempt=1 retries=5 delay_s=1( |$)' "$err"
    dm_tables_equal down_src down_dst public.actor
    dm_tables_equal down_src down_dst public.category
}

# ---------------------------------------------------------------- secrets

@test "passwords never appear in output, messages, Makefiles or children's argv" {
    pair pw
    local secret=s3cr3t-Pa55 src dst
    src="$DM_SOURCE password=$secret"
    dst="$DM_DEST password=$secret"
    unset DM_SOURCE DM_DEST
    run -0 dm-migrate -v --source "$src" --dest "$dst" run public.actor public.language
    refute_output --partial "$secret"
    assert_output --partial "--db-env DM_SOURCE"
    run -0 dm-migrate -v --source "$src" --dest "$dst" --delete plan public.actor
    refute_output --partial "$secret"
    run -0 dm-migrate -v --source "$src" --dest "$dst" verify public.actor
    refute_output --partial "$secret"
    run -0 dm-migrate --source "$src" --dest "$dst" status
    refute_output --partial "$secret"
    run -0 dm-migrate --source "$src" --dest "$dst" makefile
    refute_output --partial "$secret"
    # Failures too: an unknown database, an unknown table.
    run -1 dm-migrate -v --source "$src" --dest "${dst/dbname=pw_dst/dbname=nosuchdb}" run
    refute_output --partial "$secret"
    assert_output --partial nosuchdb
    run -1 dm-migrate -v --source "$src" --dest "$dst" run public.nosuchtable
    refute_output --partial "$secret"
    # While a run is going on, no process has the password in its command line
    # (dm-migrate itself neither, given the connections in the environment). Every
    # process's command line, as "/proc/PID/cmdline:ARGV", sampled until the run exits;
    # only lines that name a dm program or hold the secret's tail are kept (not the whole
    # secret: the filter's own argv is sampled too). Bats's own argv names
    # tests/dm-migrate.bats: the checks below match on the run's pid and on arguments
    # only dm's programs have.
    local sniff=$BATS_TEST_TMPDIR/cmdlines samples=0 tail=${secret: -4}
    : >"$sniff"
    DM_SOURCE=$src DM_DEST=$dst dm-migrate -q --full run 3>&- &
    local mig=$! deadline=$((SECONDS + 300))
    while kill -0 "$mig" 2>/dev/null; do
        grep -a '' /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' |
            grep -a -e 'dm-' -e "$tail" >>"$sniff" || true
        samples=$((samples + 1))
        ((SECONDS < deadline)) || { echo "the run did not end in 300 s; replay: bats tests/dm-migrate.bats -f 'passwords never appear'" >&2; false; }
        sleep 0.01
    done
    wait "$mig"
    echo "# $samples samples of every process's command line" >&3
    # The sampling did see the run itself, and its children with their --db-env.
    grep -q "^/proc/$mig/cmdline:.*dm-migrate -q --full run" "$sniff"
    grep -q -- 'dm-extract --db-env DM_SOURCE' "$sniff"
    grep -q -- 'dm-load --db-env DM_DEST' "$sniff"
    run grep -c -- "$secret" "$sniff"
    assert_output 0
}
