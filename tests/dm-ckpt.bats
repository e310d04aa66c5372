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
