#!/usr/bin/env bats
# tests/dashboard.bats - the dm-serve dashboard (serve/dashboard.html, served at GET /)
# in a real browser: headless Chromium driven by tests/dashboard.py (python3-selenium).
# Pagila is migrated into examples/pagila's schema as in the demo, then the legacy side
# changes (an actor inserted, a payment deleted); the page must show psql's row counts,
# run live from its Run button, confirm the deletes psql expects, end in sync, and
# cancel a run stalled on a locked table. Skipped, saying what is missing, without
# chromium, chromium-driver or python3-selenium.
#
# Screenshots: $DM_DASH_SHOTS if set (kept), else a temporary directory; on failure the
# replay command is printed.

load common
bats_require_minimum_version 1.5.0

SPEC=$DM_REPO/examples/pagila/pagila.conf
PY=${DM_PYTHON:-/usr/bin/python3}   # the Debian python that python3-selenium is for

# _dash_missing: what the browser test lacks (empty when nothing).
_dash_missing() {
    local m=()
    command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || m+=(chromium)
    [[ -x /usr/bin/chromedriver ]] || m+=(chromium-driver)
    { [[ -x $PY ]] && "$PY" -c 'import selenium' 2>/dev/null; } || m+=(python3-selenium)
    ((${#m[@]} == 0)) || echo "${m[*]}"
}

# _spec_counts: "ENTITY<TAB>SQL<TAB>TARGET" per entity of the spec, SQL counting the
# source rows the entity reads (its table or query, and its where filter).
_spec_counts() {
    awk -F ' *= *' -v OFS='\t' '
        function flush() { if (e != "") print e, "SELECT count(*) FROM " (q != "" ? "(" q ") AS q" : s) (w != "" ? " WHERE " w : ""), t }
        /^\[entity / { flush(); e = $0; sub(/^\[entity /, "", e); sub(/\]$/, "", e); s = q = w = t = "" }
        /^source *=/ { s = $2 } /^query *=/ { q = substr($0, index($0, "=") + 2) }
        /^where *=/ { w = substr($0, index($0, "=") + 2) } /^target *=/ { t = $2 }
        END { flush() }' "$SPEC"
}

setup_file() {
    DASH_MISSING=$(_dash_missing)
    export DASH_MISSING
    [[ -z "$DASH_MISSING" ]] || return 0
    dm_setup_cluster
    dm_pagila_db legacy
    dm_createdb modern
    "$DM_PSQL" -X -q -v ON_ERROR_STOP=1 -v app_owner_password=dm-dash-test -d "$(dm_conninfo modern)" \
        -f "$DM_REPO/examples/pagila/roles.sql" >/dev/null
    "$DM_PSQL" -X -q -v ON_ERROR_STOP=1 -d "$(dm_conninfo modern) user=app_owner" \
        -f "$DM_REPO/examples/pagila/modern.sql" >/dev/null
    DM_SOURCE=$(dm_conninfo legacy)
    DM_DEST="$(dm_conninfo modern) user=app_owner"
    export DM_SOURCE DM_DEST
    dm-migrate -q -c "$SPEC" run
    # What the dashboard must then show as gaps: one actor (and its two film_actor rows)
    # only in the source, one payment only in the destination.
    dm_psql legacy "INSERT INTO public.actor (actor_id, first_name, last_name) VALUES (201, 'ADA', 'LOVELACE')" \
        "INSERT INTO public.film_actor (actor_id, film_id) VALUES (201, 1), (201, 2)" \
        "DELETE FROM public.payment WHERE payment_id = (SELECT max(payment_id) FROM public.payment WHERE amount > 0)"
}

teardown_file() {
    [[ -z "${DASH_MISSING:-}" ]] || return 0
    dm_teardown_cluster
}

teardown() {
    if [[ -n "${SERVE_PID:-}" ]]; then
        kill "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null || true
    fi
}

# serve_start: dm-serve on a port of the kernel's choosing (its listening event says
# which); sets SERVE_URL. The default report cache: the page asks for fresh reports
# (Cache-Control: no-cache) and dm-serve forgets them when a run ends.
serve_start() {
    local log=$BATS_TEST_TMPDIR/dm-serve.log addr
    DM_API_TOKEN=$TOKEN dm-serve -c "$SPEC" --listen 127.0.0.1:0 --state-dir "$BATS_TEST_TMPDIR/state" \
        2>"$log" 3>&- &
    SERVE_PID=$!
    addr=$(dm_serve_address "$log" "$SERVE_PID") ||
        { cat "$log" >&2; echo "dm-serve did not start (log above)" >&2; return 1; }
    SERVE_URL=http://$addr
}

@test "dashboard: psql's counts and gaps, a live run, run with deletes confirmed, cancel" {
    [[ -z "$DASH_MISSING" ]] || skip "the browser test needs: $DASH_MISSING (apt-get install chromium chromium-driver python3-selenium)"
    TOKEN=dashboard-test-token-$$
    serve_start
    # The expectation, from psql only: rows of each source and target table.
    local expect=$BATS_TEST_TMPDIR/expect.json ent src dst ns nd sep=""
    {
        printf '{"entities": {'
        while IFS=$'\t' read -r ent src dst; do
            ns=$(dm_psql legacy "$src")
            nd=$(dm_row_count modern "$dst")
            printf '%s"%s": {"source": %d, "destination": %d}' "$sep" "$ent" "$ns" "$nd"
            sep=", "
        done < <(_spec_counts)
        printf '}, "inserts": {"actor": 1, "film_actor": 2}, "deletes": {"payment": 1}}\n'
    } >"$expect"
    local shots=${DM_DASH_SHOTS:-$BATS_TEST_TMPDIR/shots}
    run "$PY" "$DM_REPO/tests/dashboard.py" --url "$SERVE_URL" --token "$TOKEN" --expect "$expect" \
        --psql "$DM_PSQL" --lock-dsn "$(dm_conninfo legacy)" --lock-table public.payment "$shots"
    if ((status != 0)); then
        echo "replay (with this file's cluster and dm-serve up): $PY tests/dashboard.py --url $SERVE_URL" \
            "--token $TOKEN --expect $expect --psql $DM_PSQL --lock-dsn '$(dm_conninfo legacy)'" \
            "--lock-table public.payment $shots; or: DM_DASH_SHOTS=DIR bats tests/dashboard.bats" >&2
        fail "tests/dashboard.py failed (exit status $status): $output"
    fi
    assert_line "# counts ok for 15 entities"
    assert_line "# counts ok for 15 entities (in sync)"
    assert_line --regexp '^# run .*succeeded with 15 entities ok$'
    assert_line --partial "# cancel: run "
    assert_line "# dashboard: all checks passed"
    # dm's own view is not the judge: psql sees the actor and the payment caught up.
    [[ "$(dm_row_count modern public.actors)" == "$(dm_row_count legacy public.actor)" ]]
    [[ "$(dm_row_count modern public.payments)" == "$(dm_psql legacy "SELECT count(*) FROM public.payment WHERE amount > 0")" ]]
}
