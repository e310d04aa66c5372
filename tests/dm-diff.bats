#!/usr/bin/env bats
# dm-diff: the merge of two key-ordered streams, and what it refuses.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb d_src
    dm_psql d_src "CREATE TABLE public.t (id int PRIMARY KEY, v text)" \
        "INSERT INTO public.t SELECT g, 'v' || g FROM generate_series(1, 1000) g"
    dm_createdb d_dst d_src
    dm_psql d_dst "DELETE FROM public.t WHERE id IN (5, 500)" \
        "UPDATE public.t SET v = 'changed' WHERE id IN (7, 8)" \
        "INSERT INTO public.t VALUES (1001, 'only here'), (2000, 'only here too')"
    dm_createdb d_other
    dm_psql d_other "CREATE TABLE public.t (id int PRIMARY KEY, w text)"
    export DIR=$BATS_FILE_TMPDIR
    dm-extract --db "$(dm_conninfo d_src)" --table public.t >"$DIR/src.rows"
    dm-extract --db "$(dm_conninfo d_dst)" --table public.t --hashes >"$DIR/dst.hashes"
    dm-extract --db "$(dm_conninfo d_dst)" --table public.t >"$DIR/dst.rows"
    dm-extract --db "$(dm_conninfo d_other)" --table public.t --hashes >"$DIR/other.hashes"
}

teardown_file() {
    dm_teardown_cluster
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-diff
    assert_output --partial "usage: dm-diff"
    run -2 dm-diff --bogus a b
    run -2 dm-diff "$DIR/src.rows"
    run -2 dm-diff - -
    run -1 dm-diff /nonexistent "$DIR/dst.hashes"
    assert_output --partial "cannot open /nonexistent"
}

@test "inserts and updates by default; deletes only with --delete" {
    run -0 --separate-stderr dm-diff "$DIR/src.rows" "$DIR/dst.hashes"
    [[ "$stderr" == *"insert=2 update=2 delete=0 unchanged=996 extra=2"* ]]
    run -0 --separate-stderr dm-diff --delete "$DIR/src.rows" "$DIR/dst.hashes"
    [[ "$stderr" == *"insert=2 update=2 delete=2 unchanged=996"* ]]
    run -0 bash -c "dm-diff -q --delete '$DIR/src.rows' '$DIR/dst.hashes' | dm-cat"
    assert_line '{"op":"insert","row":["5","v5"]}'
    assert_line '{"op":"update","row":["7","v7"]}'
    assert_line '{"op":"delete","key":["1001"]}'
    assert_line '{"op":"delete","key":["2000"]}'
}

@test "rows on both sides and hashes on one side give the same answer; stdin works" {
    run -0 --separate-stderr bash -c "dm-diff --delete - '$DIR/dst.rows' < '$DIR/src.rows' >/dev/null"
    [[ "$stderr" == *"insert=2 update=2 delete=2 unchanged=996"* ]]
}

@test "--check writes nothing, names sample keys, exits 4 when different and 0 when equal" {
    run -4 dm-diff --check "$DIR/src.rows" "$DIR/dst.hashes"
    assert_output --partial "2 only in source, e.g. (5) (500)"
    assert_output --partial "2 different, e.g. (7) (8)"
    assert_output --partial "2 only in destination, e.g. (1001) (2000)"
    run -0 dm-diff --check "$DIR/src.rows" "$DIR/src.rows"
}

@test "a truncated source exits 3, writes no trailer and no delete beyond what it covered" {
    size=$(stat -c %s "$DIR/src.rows")
    head -c $((size / 2)) "$DIR/src.rows" >"$DIR/half.rows"
    run -3 bash -c "dm-diff -q --delete '$DIR/half.rows' '$DIR/dst.hashes' >'$DIR/out.changes'"
    assert_output --partial "invalid stream"
    run -3 dm-cat "$DIR/out.changes"
    refute_output --partial '"op":"delete"'
    refute_output --partial '"end":true'
}

@test "a truncated destination exits 3 too" {
    head -c 3000 "$DIR/dst.hashes" >"$DIR/half.hashes"
    run -3 bash -c "dm-diff -q --delete '$DIR/src.rows' '$DIR/half.hashes' >/dev/null"
}

@test "streams of different shape are refused: column mismatch, exit 1" {
    run -1 bash -c "dm-diff '$DIR/src.rows' '$DIR/other.hashes' >/dev/null"
    assert_output --partial 'column mismatch: column 2 is "v" in the source, "w" in the destination'
}

@test "a corrupted byte anywhere is caught" {
    cp "$DIR/src.rows" "$DIR/bad.rows"
    printf '\x58' | dd of="$DIR/bad.rows" bs=1 seek=4000 conv=notrunc 2>/dev/null
    run -3 bash -c "dm-diff '$DIR/bad.rows' '$DIR/dst.hashes' >/dev/null"
}
