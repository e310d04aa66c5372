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

@test "unreachable server and unknown table: exit 1 with one clear line" {
    run -1 dm-load --db "host=$DM_TEST_HOST port=1 dbname=x user=postgres" --table public.big "$DIR/big.rows"
    assert_output --partial "cannot connect to destination"
    run -1 dm-load --db-env DST --table public.nope "$DIR/big.rows"
    assert_output --partial "no table public.nope"
}
