#!/usr/bin/env bats
# tests/dm-entities.bats - the entity list's key ranges (--split, --split-rows): ranges
# that tile the key, kept in the destination's dm.partition, the same at every call.
#
# Databases: ent_src_tpl (Pagila, as dm-migrate.bats has it) and ent_dst_tpl (its schema,
# no rows); each test copies them. public.big (id int, 20000 rows) and public.words (a
# text key) are added where a test needs them.

bats_require_minimum_version 1.5.0
load common

setup_file() {
    dm_setup_cluster
    dm_pagila_templates ent_src_tpl ent_dst_tpl
}

teardown_file() {
    dm_teardown_cluster
}

# pair NAME: fresh NAME_src and NAME_dst, and DM_SOURCE / DM_DEST for them.
pair() {
    dm_createdb "$1_src" ent_src_tpl
    dm_createdb "$1_dst" ent_dst_tpl
    dm_use "$1_src" "$1_dst"
}

# ranges ARGS...: dm-entities' range lines only, as "I N FROM BEFORE".
ranges() {
    dm-entities --source-env DM_SOURCE --dest-env DM_DEST "$@" | sed -n 's/^range\t[^\t]*\t//p'
}

# tiles LINES N: the lines are N ranges 0..N-1 of N, open below and above, each
# starting where the one before ended.
tiles() {
    local n=$2 k=0 i parts from before prev="-"
    while IFS=$'\t' read -r i parts from before; do
        [[ "$i" == "$k" && "$parts" == "$n" && "$from" == "$prev" ]] ||
            { echo "range $k: got '$i $parts $from $before' after '$prev'" >&2; return 1; }
        prev=$before k=$((k + 1))
    done <<<"$1"
    [[ "$k" == "$n" && "$prev" == - ]] || { echo "$k ranges, the last ending at '$prev'" >&2; return 1; }
}

@test "bad arguments: usage line and exit 2" {
    pair args
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split 0 public.rental
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split 2000 public.rental
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split x public.rental
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split-rows 5
    assert_output --partial "1000 or more"
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split 4
    assert_output --partial "name the entities to split"
    run -2 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --follow --split-rows 0
    run -0 dm-entities --help
    assert_output --partial "--split"
}

@test "--split N: N ranges that tile the key, stored, the same at every call; another N is refused until reset" {
    pair split
    run -0 --separate-stderr ranges --split 4 public.rental
    tiles "$output" 4
    first=$output
    # the bounds come from the statistics: the ranges hold about the same number of rows
    while IFS=$'\t' read -r i n from before; do
        where="true"
        [[ "$from" == =* ]] && where+=" AND rental_id >= ${from#=}"
        [[ "$before" == =* ]] && where+=" AND rental_id < ${before#=}"
        count=$(dm_psql split_src "SELECT count(*) FROM public.rental WHERE $where")
        ((count > 16044 / 4 - 400 && count < 16044 / 4 + 400)) || fail "range $i holds $count rows"
    done <<<"$first"
    assert_equal "$(dm_psql split_dst "SELECT count(*) FROM dm.partition WHERE entity = 'public.rental'")" 4
    # the same ranges again, whatever the statistics say now
    dm_psql split_src "DELETE FROM public.payment WHERE rental_id < 8000" "DELETE FROM public.rental WHERE rental_id < 8000" \
        "ANALYZE public.rental"
    run -0 ranges --split 4 public.rental
    assert_equal "$output" "$first"
    run -0 ranges --split-rows 0
    assert_equal "$output" "$first"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split 3 public.rental
    assert_output --partial "split into 4 ranges already, not 3"
    run -0 dm-ckpt --db-env DM_DEST reset public.rental
    run -0 ranges --split 3 public.rental
    tiles "$output" 3
}

@test "--split-rows: tables that big whose destination holds rows, into at most --split-max ranges; never a cycle or a self reference" {
    pair auto
    for db in auto_src auto_dst; do
        dm_psql "$db" "CREATE TABLE public.big (id int PRIMARY KEY, v text)" \
            "CREATE TABLE public.tree (id int PRIMARY KEY, parent int REFERENCES public.tree)"
    done
    dm_psql auto_src "INSERT INTO public.big SELECT g, md5(g::text) FROM generate_series(1, 20000) g" \
        "INSERT INTO public.tree SELECT g, NULL FROM generate_series(1, 20000) g" "ANALYZE"
    # a first load (nothing in the destination) is one bulk load: no ranges
    run -0 --separate-stderr ranges --split-rows 5000 --split-max 3
    assert_output ""
    dm_psql auto_dst "INSERT INTO public.big VALUES (1, 'x')" "INSERT INTO public.tree VALUES (1, NULL)" "ANALYZE"
    run -0 --separate-stderr ranges --split-rows 5000 --split-max 3
    tiles "$output" 3
    run -0 --separate-stderr ranges --split-rows 1000 --split-max 16 public.big
    tiles "$output" 3
    # 20000 rows by 8000: 3 ranges
    run -0 dm-ckpt --db-env DM_DEST reset public.big
    run -0 --separate-stderr ranges --split-rows 8000 --split-max 16 public.big
    tiles "$output" 3
    run -0 --separate-stderr ranges --split-rows 0
    tiles "$output" 3
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST --split 2 public.tree
    assert_output --partial "references itself"
}

# covers LINES: the ranges, read by dm-extract with their bounds, hold every row of
# public.words once.
covers() {
    local i n from before args keys="" all
    while IFS=$'\t' read -r i n from before; do
        args=()
        [[ "$from" == =* ]] && args+=(--key-from "${from#=}")
        [[ "$before" == =* ]] && args+=(--key-before "${before#=}")
        keys+=$(dm-extract --db-env DM_SOURCE --table public.words "${args[@]}" | dm-cat | sed -n 's/^\["\([^"]*\)".*/\1/p')
        keys+=$'\n'
    done <<<"$1"
    all=$(dm-extract --db-env DM_SOURCE --table public.words | dm-cat | sed -n 's/^\["\([^"]*\)".*/\1/p')
    assert_equal "$(grep -v '^$' <<<"$keys" | LC_ALL=C sort)" "$(LC_ALL=C sort <<<"$all")"
    assert_equal "$(wc -l <<<"$all")" 3000
}

@test "a key never analyzed is read once to split it; text keys' bounds ascend in the C collation, whatever the column's" {
    pair words
    # a linguistic collation where the server has ICU: its order is not the C order
    coll=$(dm_psql words_src "SELECT CASE WHEN EXISTS (SELECT 1 FROM pg_collation WHERE collname = 'und-x-icu')
        THEN 'COLLATE \"und-x-icu\"' ELSE '' END")
    for db in words_src words_dst; do
        dm_psql "$db" "CREATE TABLE public.words (w text $coll PRIMARY KEY, n int) WITH (autovacuum_enabled = false)"
    done
    dm_psql words_src "INSERT INTO public.words SELECT (ARRAY['a', 'B', '_', 'é', 'Z'])[g % 5 + 1] || g, g
        FROM generate_series(1, 3000) g"
    run -0 --separate-stderr ranges --split 5 public.words
    tiles "$output" 5
    [[ "$stderr" == *"no statistics"* ]] || fail "no note on reading the column: $stderr"
    bounds=$(sed -n 's/^[0-9]*\t5\t[^\t]*\t=//p' <<<"$output")
    assert_equal "$(LC_ALL=C sort <<<"$bounds")" "$bounds"
    covers "$output"
    # from the histogram, which is in the column's collation
    run -0 dm-ckpt --db-env DM_DEST reset public.words
    dm_psql words_src "ANALYZE public.words"
    run -0 --separate-stderr ranges --split 4 public.words
    tiles "$output" 4
    [[ "$stderr" != *"no statistics"* ]] || fail "the histogram was not used: $stderr"
    bounds=$(sed -n 's/^[0-9]*\t4\t[^\t]*\t=//p' <<<"$output")
    assert_equal "$(LC_ALL=C sort <<<"$bounds")" "$bounds"
    covers "$output"
}
