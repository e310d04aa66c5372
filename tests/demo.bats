#!/usr/bin/env bats
# tests/demo.bats - `make demo` as CI runs it (DEMO_KEEP=0): the examples/pagila
# migration on its own throwaway cluster, end to end. The demo checks its own results
# (UUIDs against uuid-ossp, rentals per customer against the legacy database, the catch-up,
# the native row's version) and exits non-zero when one is off; this checks that it ran
# every step and said so.

load common
bats_require_minimum_version 1.5.0

@test "make demo: Pagila into the Supabase-like schema, caught up, verified, native row untouched" {
    run -0 env DEMO_KEEP=0 "$DM_REPO/scripts/demo"
    assert_line --partial "ok: modern.customers is owned by app_owner, not a superuser"
    assert_line --partial "ok: every customer's id is UUID v5 of 'customer:<legacy id>'"
    assert_line --partial "ok: rentals per customer agree with the legacy database"
    assert_line --partial "ok: customer 1 renamed in modern"
    assert_line --regexp "ok: customer [0-9]+ and its rentals gone from modern"
    assert_line --regexp '^payment +ok$'
    assert_line --partial "verify: all 15 entities hold the same rows"
    assert_line --partial "ok: Atlantis: same id, same row version (xmin, ctid)"
    assert_line --regexp '^== done in [0-9]+ s'
    # DEMO_KEEP=0: nothing left running.
    refute_line --partial "stays up until Ctrl-C"
}

@test "make demo-copy: the zero-config copy still runs" {
    run -0 "$DM_REPO/scripts/demo-copy"
    assert_line --partial "verify: all"
}
