#!/usr/bin/env bash
# tests/faults/concurrent.sh - two runs on the same destination entity at once: the
# second refuses (exit 6) or, with --wait, waits; they never interleave.
#
#   tests/faults/concurrent.sh [--trials N] [--seed N] [-v]
#
# "Never interleave" is checked at the level of batches: a trigger on dm.checkpoint
# (every batch transaction of dm-load updates its entity's row there, with its run id)
# logs (entity, run id, time) in commit order into public.ckpt_log of the destination;
# for each entity, a run id must occupy one contiguous stretch of that log, and no run
# may write an entity before dm.run says the previous run's load of it finished. Then
# the destination must equal the source (psql COPY, no dm code), without duplicates.
#
# Each trial does, on a fresh destination:
#   refuse   run A migrates everything; a SHARE lock that the harness holds on
#            fx.order_line for 0.5 to 2 s stalls A there, holding its lease, while run
#            B `dm-migrate run fx.order_line` starts: B must exit 6 with "another run" in
#            its message, and write nothing
#   wait     the same, but B is `dm-migrate --wait 300 --full --delete run`, started at a
#            random instant of A: both exit 0
#   load     two `dm-load` of one large stream into one table at once: the second (--wait 0) exits
#            6, or with --wait 60 waits and then finds nothing left to change
#   stress   three `dm-migrate --wait 300 run` (one of them -j 3, one --full --delete)
#            started 0 to 1 s apart: all exit 0 (not in the reduced form, FX_QUICK=1)
#   deferred R1 loads fx.blob with --defer-deletes, R2 loads it without, then R1 runs
#            --apply-deletes: R1's deletes (from a complete stream) must not be lost
#            silently: applied, or R2 says it voided them and R1's apply fails saying so
#   guard    a --full --delete run refused by the delete guard (20% to delete) leaves
#            deletes parked; the next `dm-migrate run` (and `--force run`), without
#            --delete, must succeed and delete nothing; --full --delete --force converges

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fx_parse_common "$@"
fx_script_init

BATCH=5000
((${FX_QUICK:-0})) && BATCH=1000
declare -A COUNT=() REFUSED=() WAITED=()

# instrument DB: log every write of dm.checkpoint, in commit order (dm-ckpt creates the
# dm schema first).
instrument() {
    DM_DEST=$(fx_ci dst "$1") dm-ckpt --db-env DM_DEST list >/dev/null || return 1
    fx_psql dst "$1" >/dev/null <<'SQL'
CREATE TABLE public.ckpt_log (id bigserial PRIMARY KEY, entity text, run_id text, batches bigint,
    at timestamptz DEFAULT clock_timestamp());
CREATE FUNCTION public.ckpt_log() RETURNS trigger LANGUAGE plpgsql AS
$$ BEGIN
    -- A lock held to the end of the transaction orders the log as the commits are.
    PERFORM pg_advisory_xact_lock(4242);
    INSERT INTO public.ckpt_log (entity, run_id, batches) VALUES (NEW.entity, NEW.run_id, NEW.batches);
    RETURN NEW;
END $$;
CREATE TRIGGER ckpt_log AFTER INSERT OR UPDATE ON dm.checkpoint
    FOR EACH ROW EXECUTE FUNCTION public.ckpt_log();
SQL
}

# interleaved DB: entities whose log shows a run id in two separate stretches.
interleaved() {
    fx_psql dst "$1" "WITH s AS (SELECT entity, run_id, lag(run_id) OVER (PARTITION BY entity ORDER BY id) AS prev
            FROM public.ckpt_log),
        seg AS (SELECT entity, run_id FROM s WHERE prev IS DISTINCT FROM run_id)
        SELECT string_agg(entity || ' (run ' || run_id || ': ' || n || ' stretches)', ', ')
        FROM (SELECT entity, run_id, count(*) AS n FROM seg GROUP BY 1, 2 HAVING count(*) > 1) x"
}

# overlapping DB: by dm.run, a run that wrote an entity's checkpoint before another run's
# load of that entity had finished (progress_at is set by each of the load's batches, the
# last one included; finished_at moves on when --apply-deletes runs at the end).
overlapping() {
    fx_psql dst "$1" "WITH w AS (SELECT entity, run_id, min(at) AS first_at FROM public.ckpt_log GROUP BY 1, 2)
        SELECT string_agg(b.entity || ': run ' || b.run_id || ' wrote at ' || b.first_at || ' while run '
            || a.run_id || ' (' || r.started_at || ' to ' || coalesce(r.progress_at::text, 'unfinished') || ') loaded it', '; ')
        FROM w a JOIN w b ON a.entity = b.entity AND a.run_id <> b.run_id AND a.first_at < b.first_at
        JOIN dm.run r ON r.run_id = a.run_id AND r.entity = a.entity
        WHERE r.progress_at IS NULL OR b.first_at < r.progress_at"
}

# runs_of DB ENTITY: how many runs wrote ENTITY's checkpoint.
runs_of() { fx_psql dst "$1" "SELECT count(DISTINCT run_id) FROM public.ckpt_log WHERE entity = '$2'"; }

# wait_lease_on DB ENTITY SID: until a run of session SID holds ENTITY's lease.
wait_lease_on() {
    while fx_alive "$3"; do
        [[ "$(fx_psql dst "$1" "SELECT count(*) FROM dm.lease WHERE entity = '$2'" 2>/dev/null)" == 1 ]] && return 0
        sleep 0.02
    done
    return 1
}

finish() { # finish KIND N DIR BAD
    local kind=$1 n=$2 d=$3 bad=$4 out
    out=$(interleaved fx_c) || bad+="cannot read the log; "
    [[ -z "$out" ]] || bad+="runs interleaved on: $out; "
    out=$(overlapping fx_c) || bad+="cannot read dm.run; "
    [[ -z "$out" ]] || bad+="by dm.run, loads overlapped: $out; "
    fx_equal fx_src fx_c || bad+="in the end: $FX_DIFF; "
    out=$(fx_dest_sane fx_c) || bad+="in the end: $out; "
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    COUNT[$kind]=$((${COUNT[$kind]:-0} + 1))
    if [[ -n "$bad" ]]; then
        fx_fail "concurrent $kind #$n: $bad(logs: $d) $(fx_keep_failed fx_c "fx_fail_conc_${kind}_$n")"
    else
        rm -rf -- "$d"
    fi
}

# stall_start DB: a SHARE lock on fx.order_line in DB, held until stall_end, stalls
# any load of it (its COPY waits) while the loader holds the entity's lease. Returns
# once the lock is granted (fails if it is not within 60 s): a run started before that
# could load the table first.
STALL_PID=""
stall_start() {
    local i n
    PGAPPNAME=fx-lock "$DM_PSQL" -X -q -d "$(fx_ci dst "$1")" \
        -c "BEGIN; LOCK TABLE fx.order_line IN SHARE MODE; SELECT pg_sleep(120); COMMIT" >/dev/null 2>&1 &
    STALL_PID=$!
    for ((i = 0; i < 1200; i++)); do
        n=$(fx_psql dst "$1" "SELECT count(*) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
            WHERE a.application_name = 'fx-lock' AND l.granted AND l.mode = 'ShareLock'
            AND l.relation = 'fx.order_line'::regclass") || return 1
        [[ "$n" == 1 ]] && return 0
        kill -0 "$STALL_PID" 2>/dev/null || return 1
        sleep 0.05
    done
    return 1
}

# holds_of DB: how many 'dm-ckpt hold' connections (one per run holding or waiting
# for its entities) DB has.
holds_of() {
    fx_psql dst postgres "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'dm-ckpt hold'
        AND datname = '$1'"
}

stall_end() {
    fx_psql dst postgres "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'fx-lock'" >/dev/null
    wait "$STALL_PID" 2>/dev/null
    STALL_PID=""
}

trial_refuse() {
    local n=$1 d a b rca rcb bad="" t0 ms
    d=$(fx_trial_dir concurrent-refuse "$n")
    fx_createdb dst fx_c fx_empty_tpl && instrument fx_c && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    # A SHARE lock on fx.order_line, held for a while, stalls A's first batch there while
    # A holds the entity's lease: B then comes while A is certainly loading it.
    stall_start fx_c || bad+="the harness's lock on fx.order_line was not granted within 60 s; "
    fx_start "$d/a.log" dm-migrate -q --batch-rows "$BATCH" run
    a=$FX_SID
    if ! wait_lease_on fx_c fx.order_line "$a"; then
        bad+="run A ended before it held the lease of fx.order_line; "
    fi
    t0=$(fx_now_ms)
    fx_start "$d/b.log" dm-migrate -q --batch-rows "$BATCH" run fx.order_line
    b=$FX_SID
    fx_sleep_ms "$(fx_rand 500 2000)"
    stall_end
    fx_wait_pid "$b" 120
    rcb=$?
    ms=$(($(fx_now_ms) - t0))
    fx_wait_pid "$a" 300
    rca=$?
    ((rca == 0)) || bad+="run A exited $rca: $(fx_failed_msg "$d/a.log" | cut -c1-200); "
    if ((rcb == 6)); then
        REFUSED[refuse]=$((${REFUSED[refuse]:-0} + 1))
        grep -q "another run" "$d/b.log" || bad+="run B exited 6 without saying why: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
        [[ "$(runs_of fx_c fx.order_line)" == 1 ]] || bad+="the refused run wrote fx.order_line's checkpoint; "
        fx_log "refuse #$n: B refused after $ms ms"
    else
        bad+="run B exited $rcb, not 6, while A held the lease: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
    fi
    finish refuse "$n" "$d" "$bad"
}

trial_wait() {
    local n=$1 d a b rca rcb bad="" i h runs
    d=$(fx_trial_dir concurrent-wait "$n")
    fx_createdb dst fx_c fx_empty_tpl && instrument fx_c && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    # A is stalled on fx.order_line (the harness's lock) while it holds its entities, so
    # B certainly comes while A runs, and must wait for A's hold instead of loading.
    stall_start fx_c || bad+="the harness's lock on fx.order_line was not granted within 60 s; "
    fx_start "$d/a.log" dm-migrate -q --batch-rows "$BATCH" run
    a=$FX_SID
    wait_lease_on fx_c fx.order_line "$a" || bad+="run A ended before it held the lease of fx.order_line; "
    fx_start "$d/b.log" dm-migrate -q --batch-rows "$BATCH" --wait 300 --full --delete run
    b=$FX_SID
    # B waiting: its hold's connection is up beside A's (within 60 s), and for a while
    # after, B is still there and has written nothing.
    for ((i = 0; i < 1200; i++)); do
        h=$(holds_of fx_c) || { bad+="cannot count the holds; "; break; }
        ((h >= 2)) && break
        fx_alive "$b" || break
        sleep 0.05
    done
    ((${h:-0} >= 2)) || bad+="run B's hold never connected beside A's (holds: ${h:-?}); B: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
    fx_sleep_ms "$(fx_rand 200 1000)"
    fx_alive "$b" || bad+="run B ended while A still held the entities (it did not wait): $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
    runs=$(fx_psql dst fx_c "SELECT count(DISTINCT run_id) FROM public.ckpt_log") || runs="?"
    ((runs <= 1)) 2>/dev/null || bad+="while A was stalled, $runs runs wrote checkpoints (B did not wait); "
    stall_end
    fx_wait_pid "$a" 300
    rca=$?
    fx_wait_pid "$b" 600
    rcb=$?
    ((rca == 0)) || bad+="run A exited $rca: $(tail -n 2 "$d/a.log" | tr '\n' ' '); "
    ((rcb == 0)) || bad+="run B (--wait 300) exited $rcb: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
    runs=$(runs_of fx_c fx.order_line) || runs="?"
    if [[ "$runs" == 2 ]]; then
        WAITED[wait]=$((${WAITED[wait]:-0} + 1))
    else
        bad+="fx.order_line was written by $runs run(s), not 2 (A, then B after waiting); "
    fi
    finish wait "$n" "$d" "$bad"
}

trial_load() {
    local n=$1 d a b rca rcb bad="" f wait_opt=()
    d=$(fx_trial_dir concurrent-load "$n")
    fx_createdb dst fx_c fx_empty_tpl && instrument fx_c && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    f=$d/order_line.rows
    dm-extract --db-env DM_SOURCE --table fx.order_line >"$f" || { fx_fail "dm-extract"; return; }
    # The parents first, so that the lines can land.
    fx_migrate "$d/parents.log" run fx.customer fx.orders || bad+="loading the parents failed; "
    # dm-load waits 10 s by default for a lease: --wait 0 refuses at once.
    wait_opt=(--wait 0)
    ((n % 2)) && wait_opt=(--wait 60)
    # A SHARE lock held for a while stalls A's first batch while A holds the lease, so
    # that B certainly comes while A loads (a small table loads in a blink otherwise).
    # --no-bulk: batches (a bulk load of the empty table would be one transaction).
    stall_start fx_c || bad+="the harness's lock on fx.order_line was not granted within 60 s; "
    fx_start "$d/a.log" dm-load --db-env DM_DEST --table fx.order_line --batch-rows "$BATCH" --no-bulk "$f"
    a=$FX_SID
    wait_lease_on fx_c fx.order_line "$a" || bad+="load A ended before it held the lease; "
    fx_start "$d/b.log" dm-load --db-env DM_DEST --table fx.order_line --batch-rows "$BATCH" "${wait_opt[@]}" "$f"
    b=$FX_SID
    fx_sleep_ms "$(fx_rand 500 2000)"
    stall_end
    fx_wait_pid "$a" 300
    rca=$?
    fx_wait_pid "$b" 300
    rcb=$?
    ((rca == 0)) || bad+="load A exited $rca: $(tail -n 2 "$d/a.log" | tr '\n' ' '); "
    if [[ "${wait_opt[1]}" != 0 ]]; then
        ((rcb == 0)) || bad+="load B (--wait 60) exited $rcb: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
        grep -q "insert=0 update=0 delete=0" "$d/b.log" || bad+="load B, after waiting, changed rows: $(tail -n 1 "$d/b.log"); "
        WAITED[load]=$((${WAITED[load]:-0} + 1))
    else
        ((rcb == 6)) || bad+="load B (--wait 0) exited $rcb, not 6: $(tail -n 2 "$d/b.log" | tr '\n' ' '); "
        ((rcb == 6)) && REFUSED[load]=$((${REFUSED[load]:-0} + 1))
        grep -q "another run" "$d/b.log" || bad+="load B did not say why it stopped; "
    fi
    # Everything else, then compare the whole destination.
    fx_migrate "$d/rest.log" run || bad+="the final run failed; "
    finish load "$n" "$d" "$bad"
}

trial_stress() {
    local n=$1 d p1 p2 p3 r1 r2 r3 bad=""
    d=$(fx_trial_dir concurrent-stress "$n")
    fx_createdb dst fx_c fx_drift_tpl && instrument fx_c && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    fx_start "$d/1.log" dm-migrate -q --batch-rows "$BATCH" --wait 300 run
    p1=$FX_SID
    fx_sleep_ms "$(fx_rand 0 1000)"
    fx_start "$d/2.log" dm-migrate -q --batch-rows "$BATCH" --wait 300 -j 3 run
    p2=$FX_SID
    fx_sleep_ms "$(fx_rand 0 1000)"
    fx_start "$d/3.log" dm-migrate -q --batch-rows "$BATCH" --wait 300 --full --delete run
    p3=$FX_SID
    fx_wait_pid "$p1" 600; r1=$?
    fx_wait_pid "$p2" 600; r2=$?
    fx_wait_pid "$p3" 600; r3=$?
    ((r1 == 0 && r2 == 0 && r3 == 0)) ||
        bad+="exits $r1 $r2 $r3: $(for f in "$d"/[123].log; do fx_failed_msg "$f"; done); "
    finish stress "$n" "$d" "$bad"
}

# Deferred deletes and another load in between: run R1 (as dm-migrate --delete does)
# loads fx.blob with --defer-deletes, another run R2 (without --delete) loads fx.blob
# before R1 reaches its --apply-deletes, then R1 applies its deletes. R1's deletes come
# from a complete stream: they must be applied (by R1, or by R2), not lost while R1
# reports success.
trial_deferred() {
    local n=$1 d bad="" ex0 ex1 arc
    d=$(fx_trial_dir concurrent-deferred "$n")
    fx_createdb dst fx_c fx_drift_tpl && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    ex0=$(fx_psql dst fx_c "SELECT count(*) FROM fx.blob WHERE name LIKE 'zz-extra-%'") || ex0="?"
    # The trial means something only if there are rows to delete.
    [[ "$ex0" =~ ^[1-9][0-9]*$ ]] || bad+="the drift template has no row only in the destination to delete (count: $ex0); "
    dm-diff --delete <(dm-extract --db-env DM_SOURCE --table fx.blob) \
        <(dm-extract --db-env DM_DEST --table fx.blob --hashes) 2>"$d/diff1.err" |
        dm-load --db-env DM_DEST --table fx.blob --defer-deletes --run-id "R1-$n" 2>"$d/load1.err" ||
        bad+="R1's load failed: $(cat "$d/load1.err"); "
    dm-diff <(dm-extract --db-env DM_SOURCE --table fx.blob) \
        <(dm-extract --db-env DM_DEST --table fx.blob --hashes) 2>"$d/diff2.err" |
        dm-load --db-env DM_DEST --table fx.blob --run-id "R2-$n" 2>"$d/load2.err" ||
        bad+="R2's load failed: $(cat "$d/load2.err"); "
    dm-load --db-env DM_DEST --table fx.blob --apply-deletes --run-id "R1-$n" 2>"$d/apply.err"
    arc=$?
    ex1=$(fx_psql dst fx_c "SELECT count(*) FROM fx.blob WHERE name LIKE 'zz-extra-%'") || ex1="?"
    [[ "$ex1" =~ ^[0-9]+$ ]] || bad+="cannot count the rows left to delete (got: $ex1); "
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    COUNT[deferred]=$((${COUNT[deferred]:-0} + 1))
    # R2's load voids R1's parked deletes (they were computed before it): R1's
    # --apply-deletes must then fail, saying so, rather than report success with the
    # deletes lost. (dm-migrate itself holds its entities from load to deletes, so no
    # other run's load can come between.)
    if [[ ! "$ex1" =~ ^[0-9]+$ ]]; then
        :   # said above
    elif ((ex1 != 0)); then
        if ((arc != 0)) && grep -q "voided by run R2-$n" "$d/apply.err" && grep -q "voided .* deletes parked by run R1-$n" "$d/load2.err"; then
            REFUSED[deferred]=$((${REFUSED[deferred]:-0} + 1))
        else
            bad+="$ex1 of the $ex0 rows only in the destination are still there after R1's --apply-deletes (exit $arc: $(tail -n 1 "$d/apply.err")): R1's deferred deletes were lost when R2 loaded the entity, and nothing said so; "
        fi
    elif ((arc == 0)); then
        # Applied: fx.blob now holds exactly the source's rows.
        fx_equal fx_src fx_c '^fx\.blob$' || bad+="after R1's deletes were applied: $FX_DIFF; "
    fi
    if [[ -n "$bad" ]]; then
        fx_fail "concurrent deferred #$n: $bad(logs: $d)"
    else
        rm -rf -- "$d"
    fi
}

# A --delete run refused by the delete guard leaves its deletes parked: the runs after
# it, without --delete, must neither fail because of them nor apply them (even with
# --force, which only matters with --delete).
trial_guard() {
    local n=$1 d rc bad="" ex0 ex1 force=()
    d=$(fx_trial_dir concurrent-guard "$n")
    fx_createdb dst fx_c fx_drift_tpl && fx_use fx_src fx_c || { fx_fail "setup"; return; }
    fx_psql dst fx_c "INSERT INTO fx.blob SELECT 'zz-more-' || g, NULL, NULL, NULL
        FROM generate_series(1, (SELECT count(*) / 5 FROM fx.blob)) g" >/dev/null
    ex0=$(fx_psql dst fx_c "SELECT count(*) FROM fx.blob WHERE name LIKE 'zz-%'") || ex0="?"
    [[ "$ex0" =~ ^[1-9][0-9]*$ ]] || bad+="no row only in the destination to guard (count: $ex0); "
    fx_migrate "$d/delete.log" --full --delete run
    rc=$?
    ((rc == 1)) && grep -q "refusing to delete" "$d/delete.log" ||
        bad+="the --delete run with 20% to delete exited $rc without the guard's message; "
    ((n % 2)) && force=(--force)
    fx_migrate "$d/plain.log" "${force[@]}" run
    rc=$?
    ((rc == 0)) || bad+="dm-migrate ${force[*]} run (no --delete) after the refused --delete run exited $rc: $(fx_failed_msg "$d/plain.log" | cut -c1-200); "
    ex1=$(fx_psql dst fx_c "SELECT count(*) FROM fx.blob WHERE name LIKE 'zz-%'") || ex1="?"
    [[ "$ex1" =~ ^[0-9]+$ && "$ex1" == "$ex0" ]] || bad+="dm-migrate ${force[*]} run (no --delete) changed the rows only in the destination of fx.blob ($ex0 before, $ex1 after); "
    fx_migrate "$d/force.log" --full --delete --force run || bad+="--full --delete --force run exited $?; "
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    COUNT[guard]=$((${COUNT[guard]:-0} + 1))
    fx_equal fx_src fx_c || bad+="in the end: $FX_DIFF; "
    if [[ -n "$bad" ]]; then
        fx_fail "concurrent guard #$n: $bad(logs: $d) $(fx_keep_failed fx_c "fx_fail_conc_guard_$n")"
    else
        rm -rf -- "$d"
    fi
}

fx_say "concurrent runs: $FX_TRIALS trial(s) of each kind (seed $FX_SEED)"
# The checks must be able to say no: a log where run B wrote between two batches of A.
fx_createdb dst fx_c fx_empty_tpl && instrument fx_c || fx_die "cannot instrument a destination"
fx_psql dst fx_c "ALTER TABLE public.ckpt_log DISABLE TRIGGER ALL" \
    "INSERT INTO public.ckpt_log (entity, run_id, batches, at) VALUES ('e', 'A', 1, '2026-01-01 00:00:01'),
        ('e', 'B', 1, '2026-01-01 00:00:02'), ('e', 'A', 2, '2026-01-01 00:00:03')" \
    "INSERT INTO dm.run (run_id, entity, started_at, finished_at, outcome, progress_at)
        VALUES ('A', 'e', '2026-01-01', '2026-01-01 00:00:03', 'ok', '2026-01-01 00:00:03')" >/dev/null ||
    fx_die "cannot write the self-test's log"
[[ -n "$(interleaved fx_c)" && -n "$(overlapping fx_c)" ]] ||
    fx_die "the interleaving checks do not see run B writing between two batches of run A"
fx_calibrate initial
for ((i = 0; i < FX_TRIALS; i++)); do
    trial_refuse "$i"
    trial_wait "$i"
    trial_load "$i"
    ((${FX_QUICK:-0})) || trial_stress "$i"
    trial_guard "$i"
    trial_deferred "$i"
    fx_log "concurrent #$i done: refused ${REFUSED[refuse]:-0}, waited ${WAITED[wait]:-0}"
done
fx_note "refuse: B refused ${REFUSED[refuse]:-0} of ${COUNT[refuse]:-0} times"
fx_note "wait: both runs loaded fx.order_line, one after the other, ${WAITED[wait]:-0} of ${COUNT[wait]:-0} times"
fx_note "load: second dm-load refused ${REFUSED[load]:-0}, waited ${WAITED[load]:-0}"
fx_note "deferred: R1's --apply-deletes refused (voided by R2's load, both said so) ${REFUSED[deferred]:-0} of ${COUNT[deferred]:-0}"
fx_result "concurrent runs"
((FX_FAILS == 0))
