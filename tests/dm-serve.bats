#!/usr/bin/env bats
# tests/dm-serve.bats - the service, with curl, against Pagila in a throwaway cluster.
#
# Every response a test reads through `api` is checked against docs/openapi.json
# (tests/lib/openapi-check.py, python3-jsonschema): its path, method and status are
# documented and its JSON body validates against the schema.
#
# Databases: srv_src_tpl (Pagila with keys on the two payment partitions that lack
# one), srv_dst_tpl (the same schema, no rows). Each test that changes data works on
# its own pair and its own dm-serve.

bats_require_minimum_version 1.5.0
load common

OPENAPI=$BATS_TEST_DIRNAME/../docs/openapi.json
TOKEN=dm-test-token-0123456789abcdef

setup_file() {
    command -v curl >/dev/null || skip "curl is not installed"
    dm_setup_cluster
    dm_pagila_templates srv_src_tpl srv_dst_tpl
}

teardown_file() {
    dm_teardown_cluster
}

teardown() {
    serve_stop
    [[ -n "${STALL_PID:-}" ]] && { kill "$STALL_PID" 2>/dev/null; wait "$STALL_PID" 2>/dev/null; }
    local p
    for p in ${EXTRA_PIDS:-}; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
    true
}

# pair NAME: databases NAME_src (Pagila) and NAME_dst (empty); DM_SOURCE, DM_DEST.
pair() {
    dm_createdb "$1_src" srv_src_tpl
    dm_createdb "$1_dst" srv_dst_tpl
    dm_use "$1_src" "$1_dst"
}

# serve_start [ARGS...]: dm-serve on a port of the kernel's choosing, state in the
# test's directory; SERVE (http://ADDR), SERVE_PID, SERVE_LOG, SERVE_STATE.
serve_start() {
    SERVE_LOG=$BATS_TEST_TMPDIR/serve.$((++SERVE_N)).log
    SERVE_STATE=${SERVE_STATE:-$BATS_TEST_TMPDIR/state}
    DM_API_TOKEN=$TOKEN dm-serve --listen 127.0.0.1:0 --state-dir "$SERVE_STATE" --baseline-interval 0 "$@" \
        2>>"$SERVE_LOG" 3>&- &
    SERVE_PID=$!
    local addr
    addr=$(dm_serve_address "$SERVE_LOG" "$SERVE_PID") ||
        { cat "$SERVE_LOG" >&2; echo "dm-serve did not start" >&2; return 1; }
    SERVE=http://$addr
}

serve_stop() {
    if [[ -n "${SERVE_PID:-}" ]]; then
        kill "$SERVE_PID" 2>/dev/null
        wait "$SERVE_PID" 2>/dev/null
        SERVE_PID=""
    fi
}

# api METHOD PATH [BODY]: the request with the token. CODE, BODY (a file), HEADERS (a
# file); the response is checked against the OpenAPI document (fails the test if not).
api() {
    local method=$1 path=$2 ctype
    BODY=$BATS_TEST_TMPDIR/body.$((++API_N))
    HEADERS=$BODY.h
    local args=(-s -X "$method" -o "$BODY" -D "$HEADERS" -w '%{http_code} %{content_type}\n' -H "Authorization: Bearer ${API_TOKEN:-$TOKEN}")
    (($# > 2)) && args+=(-H 'Content-Type: application/json' --data-binary "$3")
    read -r CODE ctype < <(curl "${args[@]}" "$SERVE$path")
    local why
    why=$(python3 "$BATS_TEST_DIRNAME/lib/openapi-check.py" "$OPENAPI" "$method" "$path" "$CODE" "$BODY" "$ctype") || {
        echo "response not as documented: $why" >&2
        cat "$BODY" >&2
        return 1
    }
}

# jq_ FILE EXPR: a Python expression over the JSON value j of FILE, printed.
jq_() {
    python3 -c 'import json, sys
j = json.load(open(sys.argv[1]))
v = eval(sys.argv[2])
print(json.dumps(v) if isinstance(v, (dict, list)) or v is None or isinstance(v, bool) else v)' "$1" "$2"
}

# wait_state ID STATE [SECONDS]: poll GET /v1/runs/ID until its state is STATE.
wait_state() {
    local i st=""
    for ((i = 0; i < ${3:-60} * 5; i++)); do
        api GET "/v1/runs/$1"
        st=$(jq_ "$BODY" 'j["state"]')
        [[ "$st" == "$2" ]] && return 0
        sleep 0.2
    done
    echo "run $1: state $st, not $2, after ${3:-60} s" >&2
    cat "$BODY" >&2
    return 1
}

# stall DB TABLE: a session holds TABLE in ACCESS EXCLUSIVE mode (STALL_PID) until
# unstall: a run reading or writing it waits there, alive.
stall() {
    PGAPPNAME=stall "$DM_PSQL" -X -q -d "$(dm_conninfo "$1")" \
        -c "BEGIN" -c "LOCK TABLE $2 IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(600)" >/dev/null 2>&1 3>&- &
    STALL_PID=$!
    local i
    for ((i = 0; i < 100; i++)); do
        [[ "$(dm_psql "$1" "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a USING (pid)
            WHERE a.application_name = 'stall' AND l.mode = 'AccessExclusiveLock' AND l.granted")" -gt 0 ]] && return 0
        sleep 0.1
    done
    echo "the stall's lock was not granted" >&2
    return 1
}

unstall() {
    dm_psql "$1" "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'stall'" >/dev/null
    wait "$STALL_PID" 2>/dev/null || true
    STALL_PID=""
}

# A run waits behind the stall: its dm-load or destination extract of TABLE waits for the lock.
waiting_on() {
    local i
    for ((i = 0; i < 300; i++)); do
        [[ "$(dm_psql "$1" "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'
            AND application_name LIKE 'dm-%'")" -gt 0 ]] && return 0
        sleep 0.1
    done
    echo "no dm process waits for the stall's lock" >&2
    return 1
}

@test "bad arguments and environment: a usage line and exit 2" {
    run -2 dm-serve --bogus
    assert_output --partial "usage: dm-serve "
    run -2 dm-serve extra-argument
    run -2 dm-serve --cache-seconds never
    run -2 dm-serve --tls-cert /dev/null
    run -2 env -u DM_SOURCE -u DM_DEST dm-serve --listen 127.0.0.1:0
    assert_output --partial "DM_SOURCE and DM_DEST"
    pair args
    run -2 env DM_API_TOKEN=short dm-serve --listen 127.0.0.1:0 --state-dir "$BATS_TEST_TMPDIR/s"
    assert_output --partial "DM_API_TOKEN must be 16 to 128 characters"
    run -1 env DM_API_TOKEN=$TOKEN dm-serve --listen 256.1.1.1:80 --state-dir "$BATS_TEST_TMPDIR/s"
    assert_output --partial "bad IPv4 address"
    run -2 dm-serve -c "$BATS_TEST_TMPDIR/no-such.conf"
    printf '[entity x]\nsource = public.x\ncolum = y\n' >"$BATS_TEST_TMPDIR/typo.conf"
    run -2 dm-serve -c "$BATS_TEST_TMPDIR/typo.conf" --listen 127.0.0.1:0
    assert_output --partial 'typo.conf:3: '
    refute_output --partial 'event=listening'
    run -0 dm-serve --help
    assert_output --partial "--listen ADDR:PORT"
}

@test "the token: required everywhere but health and the page, compared whole; a made one is printed as the dashboard's address" {
    pair tok
    serve_start
    local p code
    for p in /v1/entities /v1/baseline /v1/plan /v1/status /v1/runs /v1/runs/x /v1/checkpoints /v1/events /metrics /v1/openapi.json; do
        code=$(curl -s -o /dev/null -w '%{http_code}' "$SERVE$p")
        [[ "$code" == 401 ]] || { echo "$p without a token: $code" >&2; false; }
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN}x" "$SERVE$p")
        [[ "$code" == 401 ]] || { echo "$p with a longer token: $code" >&2; false; }
        code=$(curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer ${TOKEN%?}" "$SERVE$p")
        [[ "$code" == 401 ]] || { echo "$p with a shorter token: $code" >&2; false; }
    done
    API_TOKEN=wrong api GET /v1/status
    [[ "$CODE" == 401 ]]
    grep -qi '^WWW-Authenticate: Bearer' "$HEADERS"
    [[ "$(jq_ "$BODY" 'j["error"]["code"]')" == unauthorized ]]
    run -0 curl -s -f "$SERVE/v1/health"
    run -0 curl -s -f "$SERVE/"
    assert_output --partial "<html"
    # Not on the command line (the cancel test checks the environment of the runs).
    ! grep -q "$TOKEN" "/proc/$SERVE_PID/cmdline"
    serve_stop
    # Without DM_API_TOKEN: a random one, printed with the dashboard's address.
    : >"$BATS_TEST_TMPDIR/serve.log"
    env -u DM_API_TOKEN dm-serve --listen 127.0.0.1:0 --state-dir "$BATS_TEST_TMPDIR/s2" --baseline-interval 0 \
        2>"$BATS_TEST_TMPDIR/serve.log" 3>&- &
    SERVE_PID=$!
    local url="" i
    for ((i = 0; i < 100; i++)); do
        url=$(grep -o 'http://[^ ]*/#token=[0-9a-f]*' "$BATS_TEST_TMPDIR/serve.log") && break
        sleep 0.1
    done
    [[ -n "$url" ]]
    local made=${url#*#token=}
    [[ ${#made} == 48 ]]
    SERVE=${url%/#token=*}
    API_TOKEN=$made api GET /v1/checkpoints
    [[ "$CODE" == 200 ]]
    API_TOKEN=$TOKEN api GET /v1/checkpoints
    [[ "$CODE" == 401 ]]
}

@test "health: ready with both sides and the dm schema; 503 naming the side that is down" {
    pair hl
    serve_start
    api GET /v1/health
    [[ "$CODE" == 200 ]]
    assert_equal "$(jq_ "$BODY" '[j["live"], j["ready"], j["source"]["ok"], j["destination"]["ok"], j["destination"]["dm_schema"]]')" \
        '[true, true, true, true, "absent"]'
    serve_stop
    DM_SOURCE="host=$DM_TEST_HOST port=1 dbname=nothing" serve_start
    api GET /v1/health
    [[ "$CODE" == 503 ]]
    assert_equal "$(jq_ "$BODY" '[j["live"], j["ready"], j["source"]["ok"], j["destination"]["ok"]]')" '[true, false, false, true]'
    [[ "$(jq_ "$BODY" 'j["source"]["error"]')" == *"connect"* ]]
}

@test "entities, baseline, plan and status: what dm-entities and dm-migrate --json print; bad parameters 400" {
    pair rep
    dm-migrate -q run public.language public.actor
    dm_psql rep_src "UPDATE public.actor SET first_name = 'CHANGED' WHERE actor_id = 3"
    serve_start -v
    api GET /v1/entities
    [[ "$CODE" == 200 ]]
    assert_equal "$(jq_ "$BODY" 'len(j["entities"])')" "$(dm-entities --source-env DM_SOURCE --dest-env DM_DEST | grep -vc '^#')"
    assert_equal "$(jq_ "$BODY" '[e for e in j["entities"] if e["entity"] == "public.film_actor"][0]')" \
        '{"entity": "public.film_actor", "level": 2, "target": "public.film_actor", "key": ["actor_id", "film_id"], "change_column": "last_update", "group": null, "parents": ["public.film", "public.actor"], "mapping": {"kind": "same", "source": "public.film_actor"}}'
    api GET /v1/baseline
    [[ "$CODE" == 200 ]]
    dm-migrate --json baseline >"$BATS_TEST_TMPDIR/cli.json"
    assert_equal "$(jq_ "$BODY" 'j')" "$(jq_ "$BATS_TEST_TMPDIR/cli.json" 'j')"
    api GET '/v1/baseline?entity=public.actor'
    assert_equal "$(jq_ "$BODY" '[(e["entity"], e["source_rows"], e["destination_rows"], e["changed"]) for e in j["entities"]]')" \
        '[["public.actor", 200, 200, 1]]'
    api GET '/v1/plan?entity=public.actor&full=true'
    [[ "$CODE" == 200 ]]
    dm-migrate --json --full plan public.actor >"$BATS_TEST_TMPDIR/cli.json"
    assert_equal "$(jq_ "$BODY" 'j')" "$(jq_ "$BATS_TEST_TMPDIR/cli.json" 'j')"
    api GET '/v1/plan?full=true&delete=true'
    assert_equal "$(jq_ "$BODY" '[j["delete"], j["totals"]["update"]]')" '[true, 1]'
    api GET /v1/status
    dm-migrate --json status >"$BATS_TEST_TMPDIR/cli.json"
    assert_equal "$(jq_ "$BODY" '[(e["entity"], e["checkpoint"]["state"], e["last_run"]["outcome"]) for e in j["entities"]]')" \
        "$(jq_ "$BATS_TEST_TMPDIR/cli.json" '[(e["entity"], e["checkpoint"]["state"], e["last_run"]["outcome"]) for e in j["entities"]]')"
    api GET '/v1/baseline?entity=public.nothing'
    [[ "$CODE" == 400 ]]
    [[ "$(jq_ "$BODY" 'j["error"]["message"]')" == *'unknown entity "public.nothing"'* ]]
    api GET '/v1/plan?full=maybe'
    [[ "$CODE" == 400 ]]
    run -0 curl -s -w ' %{http_code}' -H "Authorization: Bearer $TOKEN" "$SERVE/v1/nothing"
    assert_output --partial '{"error":{"code":"not_found","message":"no such endpoint'
    assert_output --regexp ' 404$'
    # The document served is the one in the tree.
    api GET /v1/openapi.json
    cmp "$BODY" "$OPENAPI"
    # Computed once per parameters for a while: the second call does not run
    # dm-migrate; a client's no-cache, or a run's end, makes it compute again.
    local n
    n=$(grep -c 'event=report msg="computing baseline' "$SERVE_LOG")
    api GET /v1/baseline
    assert_equal "$(grep -c 'event=report msg="computing baseline' "$SERVE_LOG")" "$n"
    curl -sf -o /dev/null -H "Authorization: Bearer $TOKEN" -H 'Cache-Control: no-cache' "$SERVE/v1/baseline"
    assert_equal "$(grep -c 'event=report msg="computing baseline' "$SERVE_LOG")" $((n + 1))
    api POST /v1/runs '{"entities": ["public.actor"]}'
    wait_state "$(jq_ "$BODY" 'j["id"]')" succeeded
    api GET /v1/baseline
    assert_equal "$(grep -c 'event=report msg="computing baseline' "$SERVE_LOG")" $((n + 2))
    assert_equal "$(jq_ "$BODY" '[e["changed"] for e in j["entities"] if e["entity"] == "public.actor"]')" '[0]'
}

@test "a run over HTTP is a dm-migrate run: 202 and Location, the same rows and dm.run records; history paged" {
    pair run
    serve_start
    api POST /v1/runs '{"jobs": 2}'
    [[ "$CODE" == 202 ]]
    local id loc
    id=$(jq_ "$BODY" 'j["id"]')
    loc=$(sed -n 's/^Location: *\([^[:space:]]*\).*/\1/ip' "$HEADERS")
    assert_equal "$loc" "/v1/runs/$id"
    wait_state "$id" succeeded 120
    dm_all_tables_equal run_src run_dst
    assert_equal "$(jq_ "$BODY" '[j["origin"], j["exit_status"], j["error"], len(j["entities"]), all(e["state"] == "ok" for e in j["entities"])]')" \
        "[\"api\", 0, null, $(dm_psql run_dst "SELECT count(*) FROM dm.run WHERE run_id = '$id'"), true]"
    assert_equal "$(jq_ "$BODY" 'sum(e["inserted"] for e in j["entities"]) == j["inserted"]')" true
    # The same records as a run of dm-migrate on a shell, on a twin pair: per entity
    # its outcome and counts in dm.run, its checkpoint; and a second run (from the
    # shell) finds nothing to do.
    dm_createdb run2_src srv_src_tpl
    dm_createdb run2_dst srv_dst_tpl
    DM_SOURCE=$(dm_conninfo run2_src) DM_DEST=$(dm_conninfo run2_dst) dm-migrate -q -j 2 run
    local q="SELECT string_agg(concat_ws(' ', entity, outcome, inserted, updated, deleted, rejected, batches, error IS NULL),
        ', ' ORDER BY entity) FROM dm.run"
    assert_equal "$(dm_psql run_dst "$q WHERE run_id = '$id'")" "$(dm_psql run2_dst "$q")"
    q="SELECT string_agg(concat_ws(' ', entity, watermark, complete), ', ' ORDER BY entity) FROM dm.checkpoint"
    assert_equal "$(dm_psql run_dst "$q")" "$(dm_psql run2_dst "$q")"
    run -0 dm-migrate --json plan
    [[ "$(jq_ <(echo "$output") '[j["totals"]["insert"], j["totals"]["update"]]')" == "[0, 0]" ]]
    dm-migrate -q run public.actor
    # History: newest first, paged with next/before; the shell's run is there too.
    api GET '/v1/runs?limit=1'
    assert_equal "$(jq_ "$BODY" '[len(j["runs"]), j["runs"][0]["origin"], j["runs"][0]["state"]]')" '[1, "cli", "succeeded"]'
    local next
    next=$(jq_ "$BODY" 'j["next"]')
    api GET "/v1/runs?limit=5&before=$next"
    assert_equal "$(jq_ "$BODY" '[r["id"] for r in j["runs"]]')" "[\"$id\"]"
    assert_equal "$(jq_ "$BODY" 'j["next"]')" null
    api GET '/v1/runs?limit=0'
    [[ "$CODE" == 400 ]]
    api GET /v1/runs/20990101T000000Z-1
    [[ "$CODE" == 404 ]]
    api GET /v1/runs/..%2F..%2Fetc
    [[ "$CODE" == 404 ]]
}

@test "bad run requests: 400 saying what was wrong, 413 past 64 KiB, nothing started" {
    pair bad
    serve_start
    local body
    for body in '{' '[]' '{"entities": "public.actor"}' '{"entities": [1]}' '{"full": "yes"}' '{"jobs": 0}' \
        '{"jobs": 1.5}' '{"verify": null}' '{"entities": ["public.nothing"]}' '{"force": true}'; do
        api POST /v1/runs "$body"
        [[ "$CODE" == 400 ]] || { echo "$body: $CODE" >&2; false; }
        echo "# $body: $(jq_ "$BODY" 'j["error"]["message"]')" >&3
    done
    api POST /v1/runs '{"force": true}'
    [[ "$(jq_ "$BODY" 'j["error"]["message"]')" == 'unknown field "force"'* ]]
    api POST /v1/runs '{"entities": ["public.nothing"]}'
    [[ "$(jq_ "$BODY" 'j["error"]["message"]')" == *'unknown entity "public.nothing"'* ]]
    head -c 70000 /dev/zero | tr '\0' ' ' >"$BATS_TEST_TMPDIR/big"
    api POST /v1/runs "@$BATS_TEST_TMPDIR/big"
    [[ "$CODE" == 413 ]]
    # Nothing started: no run directory, nothing in dm.run, no row copied.
    [[ ! -d "$SERVE_STATE/runs" || -z "$(ls "$SERVE_STATE/runs")" ]]
    [[ "$(dm_row_count bad_dst public.actor)" == 0 ]]
}

@test "409 while another run holds the entities (its hold decides), nothing started; 202 once it lets go" {
    pair hold
    serve_start
    local held=$BATS_TEST_TMPDIR/held holder
    dm-ckpt --db-env DM_DEST --run-id other-run hold public.language >"$held" 2>/dev/null 3>&- </dev/null &
    holder=$!
    EXTRA_PIDS=$holder
    local i
    for ((i = 0; i < 100; i++)); do [[ -s "$held" ]] && break; sleep 0.1; done
    api POST /v1/runs '{"entities": ["public.language"]}'
    [[ "$CODE" == 409 ]]
    [[ "$(jq_ "$BODY" 'j["error"]["code"]')" == conflict ]]
    [[ "$(jq_ "$BODY" 'j["error"]["message"]')" == *"other-run"* ]]
    [[ -z "$(ls "$SERVE_STATE/runs")" ]]
    [[ "$(dm_row_count hold_dst public.language)" == 0 ]]
    kill "$holder"
    wait "$holder" || true
    api POST /v1/runs '{"entities": ["public.language"]}'
    [[ "$CODE" == 202 ]]
    wait_state "$(jq_ "$BODY" 'j["id"]')" succeeded
    dm_tables_equal hold_src hold_dst public.language
}

@test "cancel mid-run: cancelled, what it committed stays, the next run converges; 404 unknown, 409 finished" {
    pair can
    serve_start
    stall can_dst public.rental
    api POST /v1/runs '{}'
    [[ "$CODE" == 202 ]]
    local id
    id=$(jq_ "$BODY" 'j["id"]')
    waiting_on can_dst
    api GET "/v1/runs/$id"
    [[ "$(jq_ "$BODY" 'j["state"]')" == running ]]
    # Entities loaded before rental are in; some are still pending or running.
    [[ "$(dm_row_count can_dst public.actor)" == 200 ]]
    # The token stays with dm-serve: not in the environment of the run's processes.
    local p n=0
    for p in $(pgrep -f -- "--run-id $id"); do
        n=$((n + 1))
        ! tr '\0' '\n' <"/proc/$p/environ" | grep -q '^DM_API_TOKEN='
    done
    ((n > 0))
    api POST "/v1/runs/$id/cancel"
    [[ "$CODE" == 202 ]]
    wait_state "$id" cancelled 30
    unstall can_dst
    [[ "$(dm_row_count can_dst public.actor)" == 200 ]]
    # No process of the run is left.
    ! pgrep -f -- "--run-id $id" >/dev/null
    api POST "/v1/runs/$id/cancel"
    [[ "$CODE" == 409 ]]
    api POST /v1/runs/20990101T000000Z-1/cancel
    [[ "$CODE" == 404 ]]
    api POST /v1/runs '{}'
    [[ "$CODE" == 202 ]]
    wait_state "$(jq_ "$BODY" 'j["id"]')" succeeded 120
    dm_all_tables_equal can_src can_dst
    [[ "$(dm_psql can_dst "SELECT count(*) FROM dm.lease")" == 0 ]]
}

@test "kill -9 of dm-serve mid-run: the run finishes, and a restarted dm-serve shows it" {
    pair k9
    serve_start
    stall k9_dst public.rental
    api POST /v1/runs '{"verify": true}'
    local id
    id=$(jq_ "$BODY" 'j["id"]')
    waiting_on k9_dst
    kill -9 "$SERVE_PID"
    wait "$SERVE_PID" 2>/dev/null || true
    SERVE_PID=""
    # The run goes on without its server.
    pgrep -f -- "--run-id $id" >/dev/null
    serve_start
    api GET "/v1/runs/$id"
    [[ "$(jq_ "$BODY" '[j["state"], j["origin"]]')" == '["running", "api"]' ]]
    unstall k9_dst
    wait_state "$id" succeeded 120
    dm_all_tables_equal k9_src k9_dst
    # verify ran after the run, in the same log.
    grep -q 'event=verified\|verify: all' "$SERVE_STATE/runs/$id/log"
}

@test "checkpoints: listed; DELETE makes the next run of the entity compare in full; 404 when none" {
    pair ck
    dm-migrate -q run public.language public.actor
    serve_start
    api GET /v1/checkpoints
    assert_equal "$(jq_ "$BODY" '[(c["entity"], c["state"]) for c in j["checkpoints"]]')" \
        '[["public.actor", "complete"], ["public.language", "complete"]]'
    api GET '/v1/plan?entity=public.actor'
    [[ "$(jq_ "$BODY" 'j["entities"][0]["mode"]')" == incremental ]]
    api DELETE /v1/checkpoints/public.actor
    [[ "$CODE" == 200 ]]
    assert_equal "$(jq_ "$BODY" 'j')" '{"entity": "public.actor", "deleted": true}'
    api DELETE /v1/checkpoints/public.actor
    [[ "$CODE" == 404 ]]
    run -0 dm-migrate --json plan public.actor
    [[ "$(jq_ <(echo "$output") 'j["entities"][0]["mode"]')" == full ]]
}

@test "events: the current state first, then the run's log events and state changes as JSON; Last-Event-ID resumes" {
    pair ev
    serve_start
    local sse=$BATS_TEST_TMPDIR/sse
    curl -s -N -H "Authorization: Bearer $TOKEN" "$SERVE/v1/events" >"$sse" 3>&- &
    EXTRA_PIDS=$!
    local i
    for ((i = 0; i < 50; i++)); do [[ -s "$sse" ]] && break; sleep 0.1; done
    head -n 3 "$sse" | grep -q '^event: state$'
    api POST /v1/runs '{"entities": ["public.language", "public.actor"]}'
    local id
    id=$(jq_ "$BODY" 'j["id"]')
    wait_state "$id" succeeded
    for ((i = 0; i < 50; i++)); do grep -q '"state":"succeeded"' "$sse" && break; sleep 0.1; done
    # Each data line is JSON; the log events are the run's, in order.
    python3 - "$sse" "$id" <<'PY'
import json, sys
lines = open(sys.argv[1]).read().split("\n")
events, kind = [], None
for l in lines:
    if l.startswith("event: "): kind = l[7:]
    if l.startswith("data: "): events.append((kind, json.loads(l[6:])))
logs = [e["event"] for k, e in events if k == "log" and e.get("run") == sys.argv[2]]
if not logs: print("no log event of run %s; the stream:\n%s" % (sys.argv[2], open(sys.argv[1]).read()[-3000:]))
assert logs[0] == "run_start" and logs[-1] == "run_done", logs
assert logs.count("entity_done") == 2, logs
states = [e["state"] for k, e in events if k == "run" and e.get("id") == sys.argv[2]]
assert states[-1] == "succeeded", states
PY
    # A client that reconnects with the id of an event it saw gets what followed.
    local first
    first=$(grep -m1 '^id: ' "$sse" | cut -d' ' -f2)
    run -28 curl -s -N -m 2 -H "Authorization: Bearer $TOKEN" -H "Last-Event-ID: $first" "$SERVE/v1/events"
    [[ "$output" != *"event: state"* ]]
    [[ "$output" == *"\"event\":\"run_done\""* ]]
    # Bounded: past --max-event-clients, 503.
    serve_stop
    serve_start --max-event-clients 1
    curl -s -N -H "Authorization: Bearer $TOKEN" "$SERVE/v1/events" >/dev/null 3>&- &
    EXTRA_PIDS+=" $!"
    sleep 0.5
    run curl -s -m 2 -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $TOKEN" "$SERVE/v1/events"
    assert_output 503
}

@test "metrics: promtool accepts them; a real Prometheus scrapes them with the token" {
    command -v promtool >/dev/null && command -v prometheus >/dev/null || skip "prometheus is not installed"
    pair met
    dm-migrate -q run
    # a follower's position and what its last batch saw of the source (dm-migrate follow writes these)
    dm-load --db-env DM_DEST --follow s9 --lsn 0/5000 --commit-time '2026-12-05 00:00:00+00'
    dm-ckpt --db-env DM_DEST follow-stats s9 0/7000 0/1000 '2026-12-05 00:00:01+00' public.film
    serve_start --baseline-interval 3600
    local i
    for ((i = 0; i < 100; i++)); do
        curl -s -H "Authorization: Bearer $TOKEN" "$SERVE/metrics" | grep -q '^dm_source_rows' && break
        sleep 0.2
    done
    api GET /metrics
    [[ "$CODE" == 200 ]]
    promtool check metrics <"$BODY"
    grep -qx 'dm_rows_inserted_total{entity="public.actor"} 200' "$BODY"
    grep -qx 'dm_last_run_success{entity="public.actor"} 1' "$BODY"
    grep -qx 'dm_source_rows{entity="public.actor"} 200' "$BODY"
    grep -qx 'dm_differing_rows{entity="public.actor"} 0' "$BODY"
    grep -qx 'dm_run_in_progress{entity="public.actor"} 0' "$BODY"
    grep -qx 'dm_follow_lag_bytes{slot="s9"} 8192' "$BODY"
    grep -qx 'dm_follow_retained_wal_bytes{slot="s9"} 24576' "$BODY"
    grep -qx 'dm_follow_applied_lsn_bytes{slot="s9"} 20480' "$BODY"
    grep -qE '^dm_follow_lag_seconds\{slot="s9"\} [0-9]+(\.[0-9])?$' "$BODY"
    # the status names the slot, the entities followed by full comparisons (validated against the document)
    api GET /v1/status
    [[ "$CODE" == 200 ]]
    [[ "$(jq_ "$BODY" '[j["follow"][0][k] for k in ("slot", "applied_lsn", "lag_bytes", "retained_bytes", "full_entities")]')" == \
        '["s9", "0/5000", 8192, 24576, ["public.film"]]' ]]
    # No secret in the metrics.
    ! grep -q "$TOKEN" "$BODY"
    # A real scrape.
    local pdir=$BATS_TEST_TMPDIR/prom
    mkdir -p "$pdir"
    printf '%s' "$TOKEN" >"$pdir/token"
    cat >"$pdir/prometheus.yml" <<EOF
global:
  scrape_interval: 1s
scrape_configs:
  - job_name: dm
    authorization:
      credentials_file: $pdir/token
    static_configs:
      - targets: ['${SERVE#http://}']
EOF
    promtool check config "$pdir/prometheus.yml"
    prometheus --config.file="$pdir/prometheus.yml" --storage.tsdb.path="$pdir/data" \
        --web.listen-address=127.0.0.1:0 >"$pdir/log" 2>&1 3>&- &
    EXTRA_PIDS=$!
    local paddr="" up=""
    for ((i = 0; i < 100; i++)); do
        paddr=$(sed -n 's/.*msg="Listening on" address=\([0-9.:]*\).*/\1/p' "$pdir/log" | head -n 1)
        [[ -n "$paddr" && "$paddr" != *":0" ]] && break
        sleep 0.2
    done
    [[ -n "$paddr" ]] || { cat "$pdir/log" >&2; false; }
    for ((i = 0; i < 100; i++)); do
        up=$(curl -s "http://$paddr/api/v1/query?query=dm_rows_inserted_total%7Bentity%3D%22public.actor%22%7D")
        [[ "$up" == *'"value":['*'"200"]'* ]] && break
        sleep 0.3
    done
    echo "$up"
    [[ "$up" == *'"value":['*'"200"]'* ]]
    run curl -s "http://$paddr/api/v1/query?query=up%7Bjob%3D%22dm%22%7D"
    assert_output --partial '"1"]'
}

@test "TLS: HTTPS with --tls-cert and --tls-key; a warning when the token would cross a network in clear" {
    command -v openssl >/dev/null || skip "openssl is not installed"
    pair tls
    openssl req -x509 -newkey rsa:2048 -nodes -subj /CN=127.0.0.1 -days 1 \
        -keyout "$BATS_TEST_TMPDIR/key.pem" -out "$BATS_TEST_TMPDIR/cert.pem" 2>/dev/null
    serve_start --tls-cert "$BATS_TEST_TMPDIR/cert.pem" --tls-key "$BATS_TEST_TMPDIR/key.pem"
    grep -q 'dashboard: https://' "$SERVE_LOG"
    SERVE=https://${SERVE#http://}
    run -0 curl -s --cacert "$BATS_TEST_TMPDIR/cert.pem" "$SERVE/v1/health"
    assert_output --partial '"ready":true'
    run -0 curl -s --cacert "$BATS_TEST_TMPDIR/cert.pem" -H "Authorization: Bearer $TOKEN" "$SERVE/v1/checkpoints"
    assert_output --partial '"checkpoints"'
    # Plain HTTP to it fails.
    run curl -s -m 3 "http://${SERVE#https://}/v1/health"
    refute_output --partial '"ready"'
    serve_stop
    serve_start --listen 0.0.0.0:0
    grep -q 'level=warn event=insecure .*in clear' "$SERVE_LOG"
}
