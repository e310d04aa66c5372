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
    # Every query it shows ran: psql prints nothing like this when it does.
    refute_output --partial "ERROR:"
    # DEMO_KEEP=0: nothing left running.
    refute_line --partial "stays up until Ctrl-C"
}

@test "make demo-copy: the zero-config copy still runs" {
    run -0 "$DM_REPO/scripts/demo-copy"
    assert_line --partial "verify: all"
}

@test "make serve (DEMO_KEEP=1): the cluster stays up with dm-serve on it, its dashboard and API answer; TERM ends both" {
    local out=$BATS_TEST_TMPDIR/demo.out
    DEMO_KEEP=1 DM_SERVE_LISTEN=127.0.0.1:0 "$DM_REPO/scripts/demo" >"$out" 2>&1 3>&- </dev/null &
    local demo=$! url="" i
    for ((i = 0; i < 1200; i++)); do
        url=$(grep -o 'http://127\.0\.0\.1:[0-9]*/#token=[0-9a-f]*' "$out") && break
        kill -0 "$demo" 2>/dev/null || break
        sleep 0.1
    done
    [[ -n "$url" ]] || { cat "$out" >&2; kill "$demo"; false; }
    local base=${url%/#token=*} token=${url#*#token=}
    run -0 curl -sf "$base/"
    assert_output --partial "<html"
    run -0 curl -sf -H "Authorization: Bearer $token" "$base/v1/status"
    assert_output --partial '"entity":"customer"'
    run -0 curl -sf -H "Authorization: Bearer $token" "$base/v1/entities"
    assert_output --partial '"target":"public.customers"'
    local dir
    dir=$(sed -n 's/^   in \(\/.*\), socket only$/\1/p' "$out")
    [[ -d "$dir" ]]
    kill -TERM "$demo"
    wait "$demo" || true
    # Both gone: the server answers no more, the cluster's directory is removed.
    run ! curl -s -m 2 "$base/v1/health"
    [[ ! -d "$dir" ]]
}
