#!/usr/bin/env bats
# dm-keys: a change feed (from dm-decode, on a cluster that decodes) split into each
# entity's changed keys, and how far a batch reaches at a snapshot.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    CLUSTER_WAL_LEVEL=logical dm_setup_cluster
    dm_createdb k_tpl
    dm_load_sql k_tpl "$DM_FIXTURES/spec/legacy.sql"
    export SPEC=$DM_FIXTURES/spec/small.conf
}

teardown_file() {
    dm_teardown_cluster
}

# fresh NAME: database NAME from the legacy template, a slot and publication NAME over
# its tables; DB and SLOT name them, SRC is its connection string.
fresh() {
    dm_createdb "$1" k_tpl
    DB=$1 SLOT=$1
    export SRC=$(dm_conninfo "$1")
    dm-decode --db-env SRC --slot "$SLOT" --publication "$SLOT" --create \
        --tables public.shop,public.client,public.visit </dev/null >/dev/null
}

# feed FILE: decode the slot up to the source's current position into FILE.
feed() {
    local upto
    upto=$(dm_psql "$DB" "SELECT pg_current_wal_insert_lsn()")
    dm-decode --db-env SRC --slot "$SLOT" --publication "$SLOT" --until-lsn "$upto" >"$1"
}

# keys FILE: a key stream's keys, one per line, values joined by commas.
keys() {
    dm-cat "$1" | sed '1d;$d' | tr -d '[]"'
}

@test "bad arguments and inputs: usage lines, a stream that is not a feed" {
    run -2 dm-keys
    assert_output --partial "usage: dm-keys"
    run -2 dm-keys --out "$BATS_TEST_TMPDIR/k" --snapshot 00000003-1
    run -2 dm-keys --out "$BATS_TEST_TMPDIR/k" --db-env SRC
    run -2 dm-keys --out "$BATS_TEST_TMPDIR/k" a b
    dm-extract --db "$(dm_conninfo k_tpl)" --table public.shop >"$BATS_TEST_TMPDIR/rows"
    run -3 dm-keys --out "$BATS_TEST_TMPDIR/k" "$BATS_TEST_TMPDIR/rows"
    assert_output --partial "not a change feed"
    printf 'garbage' >"$BATS_TEST_TMPDIR/garbage"
    run -3 dm-keys --out "$BATS_TEST_TMPDIR/k" "$BATS_TEST_TMPDIR/garbage"
}

@test "each table's changed keys, sorted and once each, old and new keys of a key update; the spec's entities" {
    fresh k1
    dm_psql "$DB" "INSERT INTO public.client VALUES (301, 1, 'a', 'b', 'x'), (1000, 2, 'c', 'd', 'x')" \
        "UPDATE public.client SET last = 'z' WHERE client_id IN (2, 1000)" \
        "BEGIN; DELETE FROM public.visit WHERE client_id = 5; DELETE FROM public.client WHERE client_id = 5; COMMIT" \
        "INSERT INTO public.shop VALUES (500, 'moving', NULL)" "UPDATE public.shop SET shop_id = 600 WHERE shop_id = 500"
    feed "$BATS_TEST_TMPDIR/feed"
    run -0 dm-keys --out "$BATS_TEST_TMPDIR/k" "$BATS_TEST_TMPDIR/feed"
    assert_line --regexp $'^public\\.client\t4\t'
    assert_line --regexp $'^public\\.visit\t3\t'
    assert_line --regexp $'^public\\.shop\t2\t'
    assert_line --regexp $'^position\t[0-9A-F]+/[0-9A-F]+\t2026-[^\t]+\t5\t5$'
    local file
    file=$(awk -F'\t' '$1 == "public.client" {print $3}' <<<"$output")
    run -0 keys "$file"
    # integer keys in integer order, each once (1000 was inserted and updated)
    assert_output $'2\n5\n301\n1000'
    # with the spec: entities, not tables; the query entity visit is followed by full
    # comparisons and gets no keys
    run -0 dm-keys -c "$SPEC" --out "$BATS_TEST_TMPDIR/k2" "$BATS_TEST_TMPDIR/feed"
    assert_line --regexp $'^client\t4\t'
    assert_line --regexp $'^shop\t2\t'
    refute_line --regexp '^visit'
    file=$(awk -F'\t' '$1 == "shop" {print $3}' <<<"$output")
    run -0 keys "$file"
    assert_output $'500\n600'
    # the key file is what dm-extract --keys reads
    run -0 bash -c "dm-extract --db-env SRC --table public.shop --keys '$file' | dm-cat | sed '1d;\$d'"
    assert_output --regexp '^\["600","moving",null,"[0-9 :.-]+"\]$'
}

@test "at a snapshot: the keys of every commit, the position only as far as the snapshot sees every commit" {
    fresh k2
    dm_psql "$DB" "UPDATE public.client SET last = 'seen' WHERE client_id = 2"
    # a snapshot taken now, held, then a commit it cannot see
    coproc SNAP { exec dm-extract --db-env SRC --export-snapshot --with-lsn; }
    local snap upto
    read -r snap upto <&"${SNAP[0]}"
    [[ "$upto" =~ ^[0-9A-F]+/[0-9A-F]+$ ]]
    # after it, two commits it cannot see: ids at and past its xmax
    dm_psql "$DB" "UPDATE public.client SET last = 'unseen' WHERE client_id = 3" \
        "SELECT pg_current_xact_id()" "UPDATE public.client SET last = 'unseen too' WHERE client_id = 4"
    feed "$BATS_TEST_TMPDIR/feed"
    run -0 dm-keys --db-env SRC --snapshot "$snap" --out "$BATS_TEST_TMPDIR/k" "$BATS_TEST_TMPDIR/feed"
    exec {SNAP[1]}>&-
    wait "$SNAP_PID"
    assert_line --regexp $'^public\\.client\t3\t'
    assert_line --regexp $'^position\t[0-9A-F]+/[0-9A-F]+\t[^\t]+\t1\t3$'
    # the position covered is the first commit's end: the one before the snapshot's own position
    local pos
    pos=$(awk -F'\t' '$1 == "position" {print $2}' <<<"$output")
    run -0 dm_psql "$DB" "SELECT '$pos'::pg_lsn <= '$upto'::pg_lsn"
    assert_output t
    # without the snapshot every commit counts
    run -0 dm-keys --out "$BATS_TEST_TMPDIR/k3" "$BATS_TEST_TMPDIR/feed"
    assert_line --regexp $'^position\t[0-9A-F]+/[0-9A-F]+\t[^\t]+\t3\t3$'
}

@test "a table whose key changes within the feed (DDL while following) is refused, naming it" {
    fresh k3
    dm_psql "$DB" "UPDATE public.client SET last = 'before' WHERE client_id = 2" \
        "ALTER TABLE public.visit DROP CONSTRAINT visit_client_id_fkey" \
        "ALTER TABLE public.client DROP CONSTRAINT client_pkey" \
        "ALTER TABLE public.client ADD PRIMARY KEY (client_id, shop_id)" \
        "UPDATE public.client SET last = 'after' WHERE client_id = 3"
    feed "$BATS_TEST_TMPDIR/feed"
    run -1 dm-keys --out "$BATS_TEST_TMPDIR/k" "$BATS_TEST_TMPDIR/feed"
    assert_output --partial "dm-keys: public.client: its key changed within the batch"
    assert_output --partial "a DDL change on a followed table"
}
