#!/usr/bin/env bats
# dm-migrate follow and cutover: the source followed by logical decoding, through the
# spec's mapping (tests/fixtures/spec/small.conf: UUID keys, renames, a where filter,
# a query entity followed by full comparisons), while a workload changes it. The
# destination is judged without dm: spec_expect_equal computes the expected rows in
# SQL (tests/lib/spec-expect.bash).

load common
load lib/spec-expect
bats_require_minimum_version 1.5.0

setup_file() {
    CLUSTER_WAL_LEVEL=logical dm_setup_cluster
    dm_createdb f_legacy_tpl
    dm_load_sql f_legacy_tpl "$DM_FIXTURES/spec/legacy.sql"
    dm_createdb f_modern_tpl
    dm_load_sql f_modern_tpl "$DM_FIXTURES/spec/modern.sql"
    export SPEC=$DM_FIXTURES/spec/small.conf
}

teardown_file() {
    dm_teardown_cluster
}

# fresh NAME: a legacy source NAME_src and a modern destination NAME_dst, in use.
fresh() {
    dm_createdb "$1_src" f_legacy_tpl
    # shop keys referenced by clients can move (the workload's key updates)
    dm_psql "$1_src" "ALTER TABLE public.client DROP CONSTRAINT client_shop_id_fkey" \
        "ALTER TABLE public.client ADD FOREIGN KEY (shop_id) REFERENCES public.shop ON UPDATE CASCADE"
    dm_createdb "$1_dst" f_modern_tpl
    dm_use "$1_src" "$1_dst"
    SRC=$1_src DST=$1_dst SLOT=s_$1
}

# fm ARGS...: dm-migrate with the spec and this test's slot (slot names are the cluster's).
fm() {
    dm-migrate -c "$SPEC" --slot "$SLOT" "$@"
}

# slots: the replication slots of the cluster, "name confirmed_flush_lsn".
slots() {
    dm_psql postgres "SELECT slot_name || ' ' || coalesce(confirmed_flush_lsn::text, '-') FROM pg_replication_slots ORDER BY 1"
}

# workload DB N [FROM]: N rounds (numbered from FROM, default 1) of the changes a live legacy application makes, each its own
# transaction or a few statements in one: inserts, updates without the change column,
# deletes of parents with their children, a parent and its child in one transaction, a
# row deleted and inserted again with the same key, a key updated.
workload() {
    local db=$1 n=$2 from=${3:-1} i
    for ((i = from; i < from + n; i++)); do
        dm_psql "$db" "INSERT INTO public.client VALUES ($((1000 + i)), $((1 + i % 2)), 'New$i', 'One', 'pw')" \
            "UPDATE public.client SET last = 'u$i' WHERE client_id = $((i % 290 + 1))" \
            "BEGIN; INSERT INTO public.shop VALUES ($((100 + i)), 'shop $i', now()::timestamp);
             INSERT INTO public.client VALUES ($((2000 + i)), $((100 + i)), 'Kid$i', 'Of', 'pw');
             INSERT INTO public.visit VALUES ($((2000 + i)), date '2025-01-01' + $i, 'v$i'); COMMIT" \
            "BEGIN; DELETE FROM public.client WHERE client_id = $((1000 + i)); INSERT INTO public.client VALUES ($((1000 + i)), 2, 'Again$i', 'Two', 'pw'); COMMIT" \
            >/dev/null || return 1
        if ((i % 5 == 0)); then
            dm_psql "$db" "BEGIN; DELETE FROM public.visit WHERE client_id = $((i + 10));
                DELETE FROM public.client WHERE client_id = $((i + 10)); COMMIT" \
                "UPDATE public.shop SET name = 'renamed $i' WHERE shop_id = 1" >/dev/null || return 1
        fi
        if ((i % 7 == 0)); then
            # a key update: the shop nobody references moves to another key
            dm_psql "$db" "INSERT INTO public.shop VALUES ($((500 + i)), 'moving', NULL)" \
                "UPDATE public.shop SET shop_id = $((600 + i)) WHERE shop_id = $((500 + i))" >/dev/null || return 1
        fi
        if ((i % 3 == 0)); then
            # a key referenced by another entity updated: its clients follow (ON UPDATE CASCADE,
            # set up by fresh), so the clients' shop UUIDs change in the same transaction
            dm_psql "$db" "UPDATE public.shop SET shop_id = $((3000 + i)) WHERE shop_id = $((100 + i))" >/dev/null || return 1
        fi
    done
}

@test "bad arguments: usage errors" {
    run -2 dm-migrate --slot Bad follow
    assert_output --partial "--slot Bad: expected a lower-case name"
    run -2 dm-migrate --idle x follow
    run -2 dm-migrate --full-every soon follow
    run -2 dm-migrate --snapshot "x'y" run
}

@test "follow: the first start copies at the slot's snapshot; a workload while following; cutover: equal through the mapping, native rows untouched, slot gone" {
    fresh w
    local native
    native=$(dm_psql "$DST" "SELECT id, xmin, ctid FROM public.shops WHERE title = 'native shop'")
    run -0 fm --log-format logfmt --until-caught-up follow
    assert_output --partial "slot $SLOT created at"
    spec_expect_equal "$SRC" "$DST" shop client visit
    # followed: the mapped tables by keys, the query entity by full comparisons
    run -0 dm_psql "$SRC" "SELECT string_agg(tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = '$SLOT'"
    assert_output "client,shop"
    local log=$BATS_TEST_TMPDIR/follow.log
    # (dm-migrate itself in the background, not a function: its pid is the follower's)
    dm-migrate -c "$SPEC" --slot "$SLOT" --log-format logfmt --idle 0.2 follow >"$log" 2>&1 &
    local follower=$!
    workload "$SRC" 40
    # a batch applied while the workload ran
    local i
    for ((i = 0; i < 600; i++)); do
        grep -q 'event=batch' "$log" && break
        kill -0 "$follower" 2>/dev/null || break
        sleep 0.1
    done
    grep -q 'event=batch' "$log" || { cat "$log" >&3; false; }
    kill -TERM "$follower" || { echo "the follower ended by itself:" >&3; cat "$log" >&3; false; }
    wait "$follower" || true
    workload "$SRC" 5 100
    run -0 fm --log-format logfmt cutover
    assert_output --regexp 'downtime: [0-9]+\.[0-9]+ s'
    spec_expect_equal "$SRC" "$DST" shop client visit
    [ "$(dm_psql "$DST" "SELECT id, xmin, ctid FROM public.shops WHERE title = 'native shop'")" = "$native" ]
    run -0 slots
    refute_output --partial "$SLOT "
    run -0 dm_psql "$DST" "SELECT count(*) FROM dm.run WHERE run_id LIKE 'cutover-%' AND run_id NOT LIKE '%-full-%' AND outcome = 'ok'"
    assert_output 3
}

@test "follow: the slot is confirmed only up to what the destination applied; status shows the lag" {
    fresh c
    run -0 fm --until-caught-up follow
    workload "$SRC" 3
    run -0 fm --until-caught-up follow
    local applied confirmed
    applied=$(dm_psql "$DST" "SELECT applied_lsn FROM dm.follow WHERE slot = '$SLOT'")
    confirmed=$(dm_psql "$SRC" "SELECT confirmed_flush_lsn FROM pg_replication_slots WHERE slot_name = '$SLOT'")
    run -0 dm_psql "$SRC" "SELECT '$confirmed'::pg_lsn <= '$applied'::pg_lsn"
    assert_output t
    run -0 dm-migrate status
    assert_output --partial "Following the source"
    assert_line --regexp "^  $SLOT +[0-9A-F]+/[0-9A-F]+ "
    run -0 dm-migrate --json status
    assert_output --partial "\"slot\":\"$SLOT\""
    # changes made while nobody follows are applied by the next follow, once
    dm_psql "$SRC" "UPDATE public.client SET first = 'late' WHERE client_id = 3"
    run -0 fm --until-caught-up follow
    spec_expect_equal "$SRC" "$DST" shop client visit
    run -0 fm --drop-slot follow
    run -0 slots
    refute_output --partial "$SLOT "
}

@test "follow: kill -9 of the follower in the middle of the workload, then a restart: nothing lost, nothing twice" {
    fresh k
    run -0 fm --until-caught-up follow
    local log=$BATS_TEST_TMPDIR/k.log round
    for round in 1 2 3; do
        dm-migrate -c "$SPEC" --slot "$SLOT" --log-format logfmt --idle 0.1 follow >"$log" 2>&1 &
        local follower=$!
        workload "$SRC" 8 $((round * 10))
        # at a random instant of its batches
        sleep "0.$((RANDOM % 9))"
        kill -KILL "$follower" || { echo "the follower ended by itself:" >&3; cat "$log" >&3; false; }
        wait "$follower" || true
        # its programs end with it, or by themselves: nothing holds the slot for long
        pkill -KILL -f "dm-decode .*--slot $SLOT " || true
    done
    run -0 fm --until-caught-up follow
    spec_expect_equal "$SRC" "$DST" shop client visit
    run -0 fm --drop-slot follow
}

@test "follow: a slot dropped by an administrator is a clear error, and --reset the way back" {
    fresh d
    run -0 fm --until-caught-up follow
    dm_psql "$SRC" "SELECT pg_drop_replication_slot('$SLOT')"
    dm_psql "$SRC" "UPDATE public.client SET first = 'lost' WHERE client_id = 4"
    run -1 fm --until-caught-up follow
    assert_output --partial "slot $SLOT is gone from the source"
    assert_output --partial "dm-migrate follow --reset"
    run -0 fm --reset --until-caught-up follow
    spec_expect_equal "$SRC" "$DST" shop client visit
    run -0 fm --drop-slot follow
}

@test "cutover --set-readonly: the statements printed first, open sessions ended, the source refuses writes, the destination verified" {
    fresh r
    run -0 fm --until-caught-up follow
    workload "$SRC" 3 300
    # an application's session, open in the source
    "$DM_PSQL" -X -q -d "$(dm_conninfo "$SRC")" -c "SELECT pg_sleep(120)" >/dev/null 2>&1 &
    local app=$! i
    for ((i = 0; i < 300; i++)); do
        [ "$(dm_psql "$SRC" "SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(120)%' AND pid <> pg_backend_pid()")" = 1 ] && break
        sleep 0.1
    done
    run -0 --separate-stderr fm --log-format logfmt --set-readonly cutover
    # on standard output, the statements first, then the window
    assert_line --index 0 --regexp '^ALTER DATABASE "?r_src"? SET default_transaction_read_only = on;$'
    assert_line --index 1 --partial "pg_terminate_backend"
    assert_line --regexp '^payment|^visit +ok$'
    [[ "${lines[${#lines[@]} - 1]}" =~ ^downtime:\ [0-9]+\.[0-9]+\ s ]]
    echo "$stderr" | grep -q "the source takes no more writes: 1 session(s) ended" || { echo "$stderr" >&3; false; }
    run ! wait "$app"
    run ! dm_psql "$SRC" "INSERT INTO public.shop VALUES (999, 'late', NULL)"
    assert_output --partial "read-only transaction"
    # (the comparison creates uuid-ossp in the source: writable again first, as dm-decode says how)
    dm_psql "$SRC" "SET default_transaction_read_only = off" "ALTER DATABASE $SRC RESET default_transaction_read_only"
    spec_expect_equal "$SRC" "$DST" shop client visit
}

@test "follow --poll: where the source cannot decode, incremental runs and full comparisons" {
    fresh p
    run -2 fm --poll soon follow
    run -0 fm --poll 1s --until-caught-up follow
    spec_expect_equal "$SRC" "$DST" shop client visit
    # deletes and changes without the change column come with the full comparison
    dm_psql "$SRC" "BEGIN; DELETE FROM public.visit WHERE client_id = 9; DELETE FROM public.client WHERE client_id = 9; COMMIT" \
        "UPDATE public.client SET first = 'quiet' WHERE client_id = 8"
    run -0 fm --poll 1s --until-caught-up follow
    spec_expect_equal "$SRC" "$DST" shop client visit
    run -0 slots
    refute_output --partial "$SLOT "
}
