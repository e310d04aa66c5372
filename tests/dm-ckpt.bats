#!/usr/bin/env bats
# dm-ckpt: the checkpoints in the destination's dm schema.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb c_dst
    export DST=$(dm_conninfo c_dst)
}

teardown_file() {
    dm_teardown_cluster
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-ckpt
    run -2 dm-ckpt --db-env DST
    run -2 dm-ckpt --db-env DST bogus
    run -2 dm-ckpt --db-env DST set only-one-arg
    assert_output --partial "usage: dm-ckpt"
}

@test "set, show, watermark, list, reset; the schema is created on first use" {
    run -0 dm-ckpt --db-env DST list
    assert_output ""
    dm-ckpt --db-env DST set public.a '2024-01-01 00:00:00'
    run -0 dm-ckpt --db-env DST watermark public.a
    assert_output "2024-01-01 00:00:00"
    run -0 dm-ckpt --db-env DST show public.a
    assert_line "watermark=2024-01-01 00:00:00"
    run -0 dm-ckpt --db-env DST list
    assert_output --regexp "^public.a	2024-01-01 00:00:00	.*	complete$"
    run -0 dm-ckpt -q --db-env DST reset public.a
    run -0 dm-ckpt --db-env DST watermark public.a
    assert_output ""
    run -1 dm-ckpt --db-env DST show public.a
    assert_output --partial "no checkpoint"
}

# held_leases: the run leases in c_dst, "entity owner" lines.
held_leases() {
    dm_psql c_dst "SELECT entity || ' ' || owner FROM dm.lease WHERE entity LIKE 'run:%' ORDER BY 1"
}

# wait_said_held FILE: until a hold wrote "held" to FILE (30 s at most).
wait_said_held() {
    local i
    for ((i = 0; i < 300; i++)); do
        grep -q held "$1" 2>/dev/null && return 0
        sleep 0.1
    done
}

# wait_released: until no run lease is left (30 s at most; the caller then checks).
wait_released() {
    local i
    for ((i = 0; i < 300; i++)); do
        [[ -z "$(held_leases)" ]] && return 0
        sleep 0.1
    done
}

@test "hold: for its parent only; one whose parent died before it looked holds nothing" {
    run -2 dm-ckpt --db-env DST --parent x hold a
    run -2 dm-ckpt --db-env DST --parent 0 hold a
    # a parent already gone: nothing is taken, exit 1, the pid named
    sleep 0 &
    local dead=$!
    wait "$dead"
    run -1 timeout 20 dm-ckpt --db-env DST --run-id gone --parent "$dead" hold h.one h.two
    assert_output --partial "process $dead, which the hold was for, is gone: nothing held"
    run -0 held_leases
    refute_output --partial "gone/"
    # a parent that is the parent: held until it ends, then released
    local out=$BATS_TEST_TMPDIR/held
    bash -c 'dm-ckpt --db-env DST --run-id mine --parent $$ hold h.one h.two >"$1" 2>&1 </dev/null & sleep 30' _ "$out" &
    local parent=$!
    wait_said_held "$out"
    run -0 held_leases
    assert_line --regexp '^run:h.one mine/[0-9]+$'
    assert_line --regexp '^run:h.two mine/[0-9]+$'
    kill -KILL "$parent"
    wait "$parent" || true
    # it looks at its parent every second: released within seconds of the parent's end
    wait_released
    run -0 held_leases
    assert_output ""
    # a wrapper in between (a shell that forks it, as time(1) does): still held for the named process
    bash -c 'sh -c "dm-ckpt --db-env DST --run-id wrapped --parent $$ hold h.three >\"$1\" 2>&1 </dev/null; :" _ "$1" & sleep 30' _ "$out.2" &
    parent=$!
    wait_said_held "$out.2"
    run -0 held_leases
    assert_line --regexp '^run:h.three wrapped/[0-9]+$'
    kill -KILL "$parent"
    wait "$parent" || true
    wait_released
    run -0 held_leases
    assert_output ""
}
