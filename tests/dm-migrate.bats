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
    dm_pagila_template
    dm_createdb mig_src_tpl pagila_tpl
    dm_psql mig_src_tpl \
        "ALTER TABLE public.payment_p0000_default ADD PRIMARY KEY (payment_id)" \
        "ALTER TABLE public.payment_p2007_07_max ADD PRIMARY KEY (payment_id)"
    dm_createdb mig_dst_tpl mig_src_tpl
    dm_psql mig_dst_tpl <<'SQL'
DO $$
BEGIN
    EXECUTE (SELECT 'TRUNCATE ' || string_agg(format('%I.%I', schemaname, tablename), ', ')
             FROM pg_tables WHERE schemaname = 'public');
END
$$;
SQL
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
    # shellcheck disable=SC2154 # $stderr is set by run --separate-stderr
    [[ "$stderr" == *"public.rental "*"16044"* ]]
    [[ "$stderr" == *"total "*"22 entities"* ]]
    dm_all_tables_equal init_src init_dst
    # The foreign-key cycle staff <-> store was loaded too.
    assert_equal "$(dm_row_count init_dst public.store)" 2
    # Every entity has a complete checkpoint; a change column gives a watermark.
    assert_equal "$(dm_psql init_dst "SELECT count(*) FILTER (WHERE complete), count(*) FROM dm.checkpoint")" "22|22"
    assert_equal "$(dm_psql init_dst "SELECT watermark IS NOT NULL FROM dm.checkpoint WHERE entity = 'public.actor'")" t
}

@test "run: a second run with nothing changed writes nothing" {
    migrated_pair again
    run -0 dm-migrate run
    local rid
    rid=$(dm_psql again_dst "SELECT run_id FROM dm.run ORDER BY started_at DESC LIMIT 1")
    # dm-load's own counts, recorded per entity under the run id.
    assert_equal "$(dm_psql again_dst "SELECT count(*), sum(inserted + updated + deleted) FROM dm.run WHERE run_id = '$rid'")" "22|0"
    assert_output --regexp 'total +22 entities +0 +0 +0 +[0-9]+'
    assert_output --partial "public.actor: incremental:"
    dm_all_tables_equal again_src again_dst
}

@test "run: -j 3 runs independent entities in parallel and gets the same result" {
    pair par
    run -0 dm-migrate -q -j 3 run
    assert_output ""
    dm_all_tables_equal par_src par_dst
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
    assert_output --partial "public.rental: deleted 2 row(s)"
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
    assert_output --regexp 'public\.actor: incremental: insert=0 update=1 '
    # Then a change that does not touch last_update (the source's trigger bypassed,
    # as a bulk fix by hand would do): the incremental run does not see it.
    dm_psql quiet_src "SET session_replication_role = replica; UPDATE public.actor SET first_name = 'QUIET' WHERE actor_id = 10"
    run -0 dm-migrate run public.actor
    assert_output --regexp 'public\.actor: incremental: insert=0 update=0 unchanged=1 '
    run -1 dm_tables_equal quiet_src quiet_dst public.actor
    run -4 dm-migrate verify public.actor
    run -0 dm-migrate --full run public.actor
    assert_output --regexp 'public\.actor: full: insert=0 update=1 '
    dm_tables_equal quiet_src quiet_dst public.actor
}

@test "run: a failing stage is named, the run stops, and its exit status is kept" {
    migrated_pair fail
    dm_psql fail_src "INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (300, 'NO', 'PARENT')" \
        "INSERT INTO public.film_actor (actor_id, film_id) VALUES (300, 1)"
    # film_actor alone: its new row references an actor the destination lacks.
    run -1 dm-migrate run public.film_actor
    assert_line --partial "violates foreign key constraint"
    assert_line --regexp '^dm-migrate: public\.film_actor: dm-load failed: exit status 1$'
    # With its parent, it works.
    run -0 dm-migrate run public.actor public.film_actor
    dm_tables_equal fail_src fail_dst public.film_actor
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
    assert_output --partial "public.big: full: insert=$((200000 - n)) update=0 "
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
    assert_line --regexp '^  public\.rental +[0-9TZ-]+ +[-0-9: +]+ ok +16044 +0 +0 +0$'
    refute_output --partial public.city
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
    # (dm-migrate itself neither, given the connections in the environment).
    local sniff=$BATS_TEST_TMPDIR/cmdlines
    DM_SOURCE=$src DM_DEST=$dst dm-migrate -q --full run 3>&- &
    local mig=$! i
    for ((i = 0; i < 40; i++)); do
        cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' >>"$sniff"
        echo >>"$sniff"
        kill -0 "$mig" 2>/dev/null || break
        sleep 0.05
    done
    wait "$mig"
    # The sampling did see the run and its children.
    grep -q 'dm-migrate' "$sniff"
    grep -q -- '--db-env DM_SOURCE' "$sniff"
    run grep -c -- "$secret" "$sniff"
    assert_output 0
}
