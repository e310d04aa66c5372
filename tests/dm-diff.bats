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

# flip_byte FILE OFFSET OUT: a copy of FILE with the byte at OFFSET changed (its low bit
# flipped, so it always differs from the original).
flip_byte() {
    local b
    b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
    [[ -n "$b" ]] || { echo "flip_byte: no byte at offset $2 of $1" >&2; return 1; }
    cp "$1" "$3"
    printf "\\x$(printf %02x $((b ^ 1)))" | dd of="$3" bs=1 seek="$2" conv=notrunc 2>/dev/null
    ! cmp -s "$1" "$3"
}

@test "a corrupted byte anywhere is caught" {
    local size hdr trailer off offsets=()
    size=$(stat -c %s "$DIR/src.rows")
    # Where the first row ["1","v1"] and the trailer {"end": true, ...} begin.
    hdr=$(LC_ALL=C grep -obUa -- $'\x92\xa11\xa2v1' "$DIR/src.rows" | head -n 1 | cut -d: -f1)
    trailer=$(LC_ALL=C grep -obUa -- $'\xa3end\xc3' "$DIR/src.rows" | tail -n 1 | cut -d: -f1)
    [[ -n "$hdr" && -n "$trailer" ]]
    trailer=$((trailer - 1))
    ((trailer + 44 == size))   # the layout the offsets below assume
    # The header (magic, version, entity, columns, key), the first rows, the middle, every
    # sync point (its key, row count and checksum), the last row, and the trailer: its
    # "end", its row count, its checksum and its (nil) watermark. Not the name of the
    # trailer's "watermark" key: a reader that does not know a key skips it, and a
    # skipped nil watermark means what a nil one means (see the report of issue 16).
    offsets=(0 2 5 12 20 30 40 60 70 75 80 85 90 $((hdr - 1)) "$hdr" $((hdr + 3)) 200 4000
        $((size / 2)) $((trailer - 3)))
    for off in 0 2 5 6 8 13 18 23 26 30 32 33 43; do offsets+=($((trailer + off))); done
    for off in $(sync_offsets "$DIR/src.rows"); do
        offsets+=($((off - 1)) "$off" $((off + 3)) $((off + 6)) $((off + 8)) $((off + 18)) $((off + 22)))
    done
    for off in "${offsets[@]}"; do
        flip_byte "$DIR/src.rows" "$off" "$DIR/bad.rows"
        run bash -c "dm-diff '$DIR/bad.rows' '$DIR/dst.hashes' >/dev/null"
        # A damaged header may instead be refused as not matching the other side's.
        ((status == 3)) || { ((off < hdr && status == 1)) && [[ "$output" == *"column mismatch"* ]]; } || {
            echo "a flipped byte at offset $off of $size (rows from $hdr, trailer from $trailer)" \
                "went through with exit $status: replay: bats tests/dm-diff.bats -f 'corrupted byte anywhere'" >&2
            echo "$output" >&2
            return 1
        }
    done
}

# sync_offsets FILE: byte offsets of the sync points of a stream ({"sync": N, "checksum": ..},
# a fixmap of 2 whose first key is the fixstr "sync"), one a line.
sync_offsets() {
    LC_ALL=C grep -obUa -- $'\x82\xa4sync' "$1" | cut -d: -f1
}

# keys_before FILE OFFSET: the keys of the change messages in the first OFFSET bytes of
# FILE (dm-cat prints them, then fails on the cut), one a line.
keys_before() {
    head -c "$2" "$1" | dm-cat 2>/dev/null | sed -n 's/^{"op":"[a-z]*","row":\["\([0-9]*\)".*/\1/p'
}

@test "a damaged source row is never vouched for by a sync point of the changes stream" {
    # 3000 source rows, sync points after rows 1000, 2000, 3000; the destination holds
    # rows 1 to 500, so change k is source row 500 + k, and the changes stream's sync
    # point after change 2000 falls after source row 2500, before the source's own at
    # 3000 can vouch for row 2100.
    dm_createdb d_sync_src
    dm_createdb d_sync_dst
    dm_psql d_sync_src "CREATE TABLE public.s (id int PRIMARY KEY, v text)" \
        "INSERT INTO public.s SELECT g, 'value ' || g FROM generate_series(1, 3000) g"
    dm_psql d_sync_dst "CREATE TABLE public.s (id int PRIMARY KEY, v text)" \
        "INSERT INTO public.s SELECT g, 'value ' || g FROM generate_series(1, 500) g"
    dm-extract --db "$(dm_conninfo d_sync_src)" --table public.s >"$DIR/s.rows"
    dm-extract --db "$(dm_conninfo d_sync_dst)" --table public.s --hashes >"$DIR/s.hashes"

    # Undamaged: a sync point after every 1000th change, as in any stream.
    dm-diff -q "$DIR/s.rows" "$DIR/s.hashes" >"$DIR/s.changes"
    [[ "$(sync_offsets "$DIR/s.changes" | wc -l)" == 2 ]]
    run -0 dm-cat "$DIR/s.changes"
    assert_line --partial '"end":true,"rows":2500'

    # Row 2100 damaged ('value 2100' -> 'Value 2100'): a value the server would accept.
    cp "$DIR/s.rows" "$DIR/s.bad"
    local off
    off=$(LC_ALL=C grep -obUa -m 1 -- 'value 2100' "$DIR/s.bad" | cut -d: -f1)
    printf 'V' | dd of="$DIR/s.bad" bs=1 seek="$off" conv=notrunc status=none
    run -3 --separate-stderr bash -c "dm-diff -q '$DIR/s.bad' '$DIR/s.hashes' >'$DIR/s.out'"
    [[ "$(grep -c '' <<<"$stderr")" == 1 ]]
    [[ "$stderr" == "dm-diff: public.s: $DIR/s.bad: invalid stream: checksum mismatch (corrupted data)" ]]
    # Every change before the last sync point written derives from source rows the
    # source's sync point after row 2000 verified.
    local last
    last=$(sync_offsets "$DIR/s.out" | tail -n 1)
    [[ -n "$last" ]]
    keys_before "$DIR/s.out" "$last" >"$DIR/s.vouched"
    [[ "$(sort -n "$DIR/s.vouched" | tail -n 1)" -le 2000 ]]
    [[ "$(wc -l <"$DIR/s.vouched")" == 1000 ]]
    # (the damaged row itself was written, after it: with no sync point behind it)
    off=$(LC_ALL=C grep -obUa -m 1 -- 'Value 2100' "$DIR/s.out" | cut -d: -f1)
    [[ -z "$off" || "$off" -gt "$last" ]]

    # And so dm-load, committing at every sync point, never commits the damaged value.
    run -3 dm-load --db "$(dm_conninfo d_sync_dst)" --table public.s --batch-rows 1 -q "$DIR/s.out"
    run -0 dm_psql d_sync_dst "SELECT count(*), max(id), count(*) FILTER (WHERE v <> 'value ' || id) FROM public.s"
    [[ "$output" == "1500|1500|0" ]]
}
