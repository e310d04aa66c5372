#!/usr/bin/env bats
# dm-load: batches, idempotence, crashes, and what it refuses to apply.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb l_src
    dm_psql l_src "CREATE TABLE public.big (id bigint PRIMARY KEY, v text, n numeric)" \
        "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 200000) g" \
        "CREATE TABLE public.other (id int PRIMARY KEY, v text)"
    dm_createdb l_empty l_src
    dm_psql l_empty "TRUNCATE public.big"
    export DIR=$BATS_FILE_TMPDIR
    export SRC=$(dm_conninfo l_src)
    dm-extract --db-env SRC --table public.big >"$DIR/big.rows"
}

teardown_file() {
    dm_teardown_cluster
}

setup() {
    dm_createdb l_dst l_empty
    export DST=$(dm_conninfo l_dst)
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-load
    assert_output --partial "usage: dm-load"
    run -2 dm-load --db-env DST
    run -2 dm-load --db-env DST --table public.big --batch-rows x
    run -2 dm-load --db-env DST --table public.big a b
}

@test "a full load, then the same stream again rewrites no row" {
    run -0 dm-load --db-env DST --table public.big --batch-rows 30000 "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=200000 update=0 delete=0 unchanged=0"
    dm_tables_equal l_src l_dst public.big
    before=$(dm_psql l_dst "SELECT sum(xmin::text::bigint) FROM public.big")
    run -0 dm-load --db-env DST --table public.big "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=0 update=0 delete=0 unchanged=200000"
    [ "$(dm_psql l_dst "SELECT sum(xmin::text::bigint) FROM public.big")" = "$before" ]
    run -0 dm-ckpt --db-env DST show public.big
    assert_line "complete=true"
}

@test "kill -9 in the middle of a load, then a rerun: equal, no duplicates" {
    dm-load -q --db-env DST --table public.big --batch-rows 5000 "$DIR/big.rows" &
    pid=$!
    # wait until some batches landed, then kill without warning
    for _ in $(seq 1 200); do
        n=$(dm_psql l_dst "SELECT count(*) FROM public.big")
        [ "$n" -gt 20000 ] && break
        sleep 0.05
    done
    kill -9 "$pid"
    wait "$pid" || true
    n=$(dm_psql l_dst "SELECT count(*) FROM public.big")
    [ "$n" -gt 0 ] && [ "$n" -lt 200000 ]
    [ $((n % 5000)) -eq 0 ]   # a batch boundary
    run -0 dm-ckpt --db-env DST show public.big
    assert_line "complete=false"
    dm-load -q --db-env DST --table public.big --batch-rows 5000 "$DIR/big.rows"
    dm_tables_equal l_src l_dst public.big
    [ "$(dm_psql l_dst "SELECT count(*) - count(DISTINCT id) FROM public.big")" = 0 ]
}

@test "a truncated change stream exits 3 and deletes nothing" {
    dm-load -q --db-env DST --table public.big "$DIR/big.rows"
    dm_psql l_src "DELETE FROM public.big WHERE id > 199000"
    dm-diff -q --delete <(dm-extract --db-env SRC --table public.big) \
        <(dm-extract --db-env DST --table public.big --hashes) >"$DIR/del.changes"
    dm_psql l_src "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(199001, 200000) g"
    size=$(stat -c %s "$DIR/del.changes")
    head -c $((size - 30)) "$DIR/del.changes" >"$DIR/cut.changes"
    run -3 dm-load --db-env DST --table public.big "$DIR/cut.changes"
    assert_output --partial "invalid stream"
    [ "$(dm_row_count l_dst public.big)" = 200000 ]
    run -0 dm-load --db-env DST --table public.big "$DIR/del.changes"
    assert_output "dm-load: public.big: insert=0 update=0 delete=1000 unchanged=0"
}

@test "a stream for another table is refused before anything is applied" {
    run -3 dm-load --db-env DST --table public.other "$DIR/big.rows"
    assert_output --partial "stream is for table public.big, not public.other"
    [ "$(dm_row_count l_dst public.other)" = 0 ]
}

@test "--dry-run counts and applies nothing" {
    run -0 dm-load --dry-run --db-env DST --table public.big --batch-rows 50000 "$DIR/big.rows"
    assert_output "dm-load: public.big: dry run: insert=200000 update=0 delete=0 unchanged=0"
    [ "$(dm_row_count l_dst public.big)" = 0 ]
}

@test "garbage on stdin: exit 3, nothing applied, no connection needed" {
    run -3 dm-load --db "host=/nonexistent dbname=x" --table public.big < /etc/hostname
    assert_output --partial "invalid stream"
}

@test "unreachable server (exit 7) and unknown table (exit 1): one clear line" {
    run -7 dm-load --db "host=$DM_TEST_HOST port=1 dbname=x user=postgres" --table public.big "$DIR/big.rows"
    assert_output --partial "cannot connect to destination"
    run -1 dm-load --db-env DST --table public.nope "$DIR/big.rows"
    assert_output --partial "no table public.nope"
}

@test "rows the destination refuses go to --rejects, the rest lands, exit 5; the file replays" {
    dm_psql l_dst "ALTER TABLE public.big ADD CONSTRAINT no_seven CHECK (id % 70000 <> 7)"
    run -5 dm-load --db-env DST --table public.big --batch-rows 2000 --rejects "$DIR/rej" "$DIR/big.rows"
    assert_line --partial "rejected (7): query failed: ERROR:  new row for relation \"big\" violates check constraint \"no_seven\""
    assert_line --partial "rejected (140007)"
    assert_line "dm-load: public.big: insert=199997 update=0 delete=0 unchanged=0"
    assert_line --partial "3 row(s) rejected"
    [ "$(dm_row_count l_dst public.big)" = 199997 ]
    run -0 bash -c "dm-cat '$DIR/rej' | grep -c '\"op\":\"insert\"'"
    assert_output 3
    # once fixed, the reject file is a stream like any other
    dm_psql l_dst "ALTER TABLE public.big DROP CONSTRAINT no_seven"
    run -0 dm-load --db-env DST --table public.big "$DIR/rej"
    assert_output "dm-load: public.big: insert=3 update=0 delete=0 unchanged=0"
    dm_tables_equal l_src l_dst public.big
    run -1 dm-load --db-env DST --table public.big --max-rejects 0 --rejects "$DIR/rej2" < <(
        dm_psql l_src "UPDATE public.big SET v = NULL WHERE id = 9"
        dm_psql l_dst "ALTER TABLE public.big ALTER v SET NOT NULL"
        dm-extract --db-env SRC --table public.big)
    assert_line --partial "more than 0 rows rejected"
    dm_psql l_src "UPDATE public.big SET v = md5('9') WHERE id = 9"
}

@test "deleting more than 10% of a table is refused unless --force" {
    dm-load -q --db-env DST --table public.big "$DIR/big.rows"
    dm_createdb l_small l_empty
    export SMALL=$(dm_conninfo l_small)
    dm_psql l_small "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 150000) g"
    dm-diff -q --delete <(dm-extract --db-env SMALL --table public.big) "$DIR/big.rows" >"$DIR/many.deletes"
    run -1 dm-load --db-env DST --table public.big "$DIR/many.deletes"
    assert_output --partial "refusing to delete 50000 of 200000 rows (more than 10%)"
    [ "$(dm_row_count l_dst public.big)" = 200000 ]
    run -0 dm-load --db-env DST --table public.big --force "$DIR/many.deletes"
    assert_output "dm-load: public.big: insert=0 update=0 delete=50000 unchanged=0"
}

@test "two loads of one entity at once: the second refuses (exit 6) or waits" {
    dm-load -q --db-env DST --table public.big --batch-rows 2000 "$DIR/big.rows" &
    pid=$!
    for _ in $(seq 1 100); do
        [ "$(dm_psql l_dst "SELECT count(*) FROM dm.lease" 2>/dev/null)" = 1 ] && break
        sleep 0.05
    done
    run -6 dm-load --db-env DST --table public.big "$DIR/big.rows"
    assert_output --partial "another run is loading this entity"
    run -0 dm-load --db-env DST --table public.big --wait 60 "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=0 update=0 delete=0 unchanged=200000"
    wait "$pid"
}

@test "a killed load's lease does not block the rerun" {
    dm-load -q --db-env DST --table public.big --batch-rows 2000 "$DIR/big.rows" &
    pid=$!
    for _ in $(seq 1 100); do
        [ "$(dm_psql l_dst "SELECT count(*) FROM public.big")" -gt 10000 ] && break
        sleep 0.05
    done
    kill -9 "$pid"; wait "$pid" || true
    run -0 dm-load --db-env DST --table public.big "$DIR/big.rows"
    dm_tables_equal l_src l_dst public.big
}
