#!/usr/bin/env bash
# tests/faults/kill.sh - kill -9 of each stage, and of the driver, at random instants of
# a large run; then the same command again must make the destination equal the source.
#
#   tests/faults/kill.sh [--trials N] [--stages LIST] [--seed N] [-v]
#
# Stages (LIST is comma separated; default all):
#   extract-src   dm-extract --db-env DM_SOURCE --table ...   (the source's rows)
#   extract-dst   dm-extract --db-env DM_DEST ... --hashes     (the destination's hashes)
#   diff          dm-diff
#   load          dm-load (also dm-load --apply-deletes)
#   driver        dm-migrate itself (its pipeline's stages live on as orphans)
#   snapshot      dm-extract --export-snapshot (holds the run's snapshot of the source)
#   load-stmt     dm-load while its server backend runs one long statement (the upsert
#                 of a 150,000-row batch): the backend outlives its client for as long as
#                 the statement runs, and the same dm-load again must not be refused
#                 (exit 6) by the dead process's lease; then equal, no duplicate
#
# Trial n of a stage starts, in a new session, on a fresh copy of a destination template
# (modes delete, initial, incr in turn: see lib.sh), odd trials with -j 3. After a random
# delay in [0, T] (T: the mode's clean run time) the first process of that session that
# matches the stage gets SIGKILL (a run that ends before one is seen is not a trial).
# Then:
#   - the run failed (or, if it succeeded, the destination is already equal), and its
#     last message names a failed stage (not checked for a killed driver);
#   - no process of the run is left behind (a killed driver's orphans must finish);
#   - the destination's trigger is enabled (dm-load's switch was rolled back);
#   - with --delete: no row was deleted unless every entity's load was complete;
#   - the same command again exits 0 (it may first refuse with 6 while a killed driver's
#     orphans still hold a lease; then it runs once they are gone);
#   - fx_compare (psql COPY, no dm code): equal, no duplicate; no lease, parked delete
#     or incomplete checkpoint left.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STAGES=(extract-src extract-dst diff load driver snapshot load-stmt)
args=()
while (($# > 0)); do
    case "$1" in
        --stages) IFS=, read -ra STAGES <<<"$2"; shift 2 ;;
        --stages=*) IFS=, read -ra STAGES <<<"${1#*=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
fx_parse_common "${args[@]}"
fx_script_init

declare -A PATTERN=(
    [extract-src]='^dm-extract --db-env DM_SOURCE --table '
    [extract-dst]='^dm-extract --db-env DM_DEST .*--hashes'
    [diff]='^dm-diff '
    [load]='^dm-load '
    [snapshot]='^dm-extract --db-env DM_SOURCE --export-snapshot'
)
# The modes each stage is tried in: the destination's extract and dm-diff live long only
# when there is something to compare.
MODES=(delete initial incr)
declare -A STAGE_MODES=([extract-dst]="delete" [diff]="delete initial")
declare -A KILLED_IN=() RC1=() RC2=()

# find_victim STAGE SID: the pid to kill now, if any.
find_victim() {
    if [[ "$1" == driver ]]; then
        pgrep -o -s "$2" -f "^bash [^ ]*/dm-migrate " 2>/dev/null   # the oldest: not a subshell
    else
        fx_session_pids "$2" "${PATTERN[$1]}" | head -n 1
    fi
}

# wait_orphans SID SECONDS: wait until no process of SID is left; give up early (fail)
# when all that is left has been blocked opening a FIFO (wait_for_partner) for 3 s:
# nothing will ever open its other end.
wait_orphans() {
    local sid=$1 i p stuck=0 all
    for ((i = 0; i < $2 * 10; i++)); do
        [[ -z "$(fx_session_pids "$sid")" ]] && return 0
        all=1
        for p in $(fx_session_pids "$sid"); do
            [[ "$(cat "/proc/$p/wchan" 2>/dev/null)" == wait_for_partner ]] || all=0
        done
        if ((all)); then
            stuck=$((stuck + 1))
            ((stuck >= 30)) && return 1
        else
            stuck=0
        fi
        sleep 0.1
    done
    return 1
}

# entity_of CMDLINE: the entity a stage works on (from --entity, --table or its FIFO).
entity_of() {
    sed -nE 's/.*--entity ([^ ]+).*/\1/p; t; s/.*--table ([^ ]+).*/\1/p; t
             s/.*\/[0-9]+\.([^ /]+)\.dest\.fifo.*/\1/p' <<<"$1"
}

trial() {
    local stage=$1 n=$2 modes mode d margs jopt=() sid t0 delay pid="" victim="" ent
    local rc1 rc2 kill_ms ex0="" ex1 t out why bad="" lease
    read -ra modes <<<"${STAGE_MODES[$stage]:-${MODES[*]}}"
    mode=${modes[$((n % ${#modes[@]}))]}
    read -ra margs <<<"$(fx_mode_args "$mode")"
    ((n % 2 == 1)) && jopt=(-j 3)
    d=$(fx_trial_dir "kill-$stage" "$n")
    fx_fresh_dest "$mode" || { fx_fail "kill $stage: createdb failed"; return; }
    local wd0
    wd0=$(find "$TMPDIR" -maxdepth 1 -name 'dm-migrate.*' 2>/dev/null | wc -l)
    [[ "$mode" == delete ]] && ex0=$(fx_extras fx_k)

    # After two misses in a row (a loaded machine polls slower than a small table's
    # pipeline lives), the largest table is locked on both sides while the run starts:
    # its pipeline's stages wait there, alive, until the kill.
    local stalled=0
    if ((MISS_STREAK >= 2)) && [[ "$stage" != driver && "$stage" != snapshot ]]; then
        fx_stall fx_k src dst && stalled=1 || { fx_stall_end; fx_fail "kill $stage: the harness's locks were not granted"; return; }
    fi
    fx_start "$d/run1.log" dm-migrate -q "${jopt[@]}" "${margs[@]}"
    sid=$FX_SID
    t0=$(fx_now_ms)
    # Stages: within the first 3/4 of the run (its end has few processes left to match).
    delay=$(fx_rand 0 "${FX_CALIB[$mode]}")
    [[ "$stage" != driver ]] && delay=$((delay * 3 / 4))
    # The clean run was timed once; on a machine whose load changed since, the delay
    # can outlast the run: each miss in a row halves it, so that the moment comes.
    delay=$((delay >> (MISS_STREAK < 10 ? MISS_STREAK : 10)))
    fx_sleep_ms "$delay"
    while fx_alive "$sid"; do
        pid=$(find_victim "$stage" "$sid")
        if [[ -n "$pid" ]]; then
            victim=$(fx_cmdline "$pid")
            kill -9 "$pid" 2>/dev/null && break
            pid=""
        fi
        sleep 0.01
    done
    kill_ms=$(($(fx_now_ms) - t0))
    ((stalled)) && fx_stall_end
    { wait "$sid"; } 2>/dev/null
    rc1=$?
    if [[ -z "$pid" ]]; then
        TRIAL_MISSED=1   # the run ended before a matching process was seen: not a trial
        fx_wait_session "$sid" 10
        rm -rf -- "$d"
        return
    fi
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    ent=$(entity_of "$victim")
    [[ "$stage" == driver || "$stage" == snapshot ]] && ent=-
    KILLED_IN[$stage]+="${ent:-?}@${kill_ms}ms "
    RC1[$stage]+="$rc1 "
    printf 'kill %s #%d, mode %s %s: pid %s at %d ms: %s\nexit status %d\n' "$stage" "$n" "$mode" \
        "${jopt[*]}" "$pid" "$kill_ms" "$victim" "$rc1" >"$d/trial.txt"
    fx_log "$stage #$n ($mode${jopt:+ -j 3}): killed ${ent:-?} at ${kill_ms} ms, exit $rc1"

    # Nothing of the run may be left behind; a killed driver's orphans go on (for now).
    local orphans=0
    if [[ "$stage" == driver ]]; then
        for t in $(fx_session_pids "$sid"); do
            echo "orphan: $(fx_cmdline "$t")"
            orphans=$((orphans + 1))
        done >>"$d/trial.txt"
        orphans=$(grep -c '^orphan: ' "$d/trial.txt")
    elif ! fx_wait_session "$sid" 10; then
        bad+="processes left after the run ended: $(for t in $(fx_session_pids "$sid"); do fx_cmdline "$t"; echo -n '; '; done) "
        fx_kill_session "$sid"
    fi
    if ((rc1 == 0)); then
        if fx_equal fx_src fx_k; then
            fx_note "run completed despite the kill, destination equal"
        else
            bad+="the killed run exited 0 but the destination differs: $FX_DIFF "
        fi
    elif [[ "$stage" != driver ]]; then
        why=$(fx_failed_msg "$d/run1.log")
        [[ -n "$why" ]] || bad+="no 'ENTITY: STAGE failed' message (exit $rc1): $(tail -n 2 "$d/run1.log") "
        echo "message: $why" >>"$d/trial.txt"
    fi
    out=$(fx_triggers_on fx_k) || bad+="after the kill: $out "
    if [[ "$mode" == delete ]]; then
        ex1=$(fx_extras fx_k)
        if [[ "$ex1" != "$ex0" ]]; then
            # A failed query prints nothing, like no incomplete load: check it first.
            if ! t=$(fx_psql dst fx_k "SELECT coalesce(string_agg(entity, ' '), '<none>') FROM dm.checkpoint WHERE NOT complete"); then
                bad+="cannot read dm.checkpoint after the kill "
            elif [[ "$t" != "<none>" ]]; then
                bad+="rows deleted ($ex0-> $ex1) while the loads of $t were incomplete "
            fi
        fi
    fi

    # The same command again.
    fx_migrate "$d/run2.log" "${jopt[@]}" "${margs[@]}"
    rc2=$?
    if ((rc2 == 6)); then
        # Refused: a lease is held. Right while a killed driver's orphans still load (they
        # may be gone by now); a failure if its holder was killed.
        lease=$(fx_lease_state fx_k)
        echo "rerun refused: $lease" >>"$d/trial.txt"
        if [[ "$stage" == driver ]] && ((orphans > 0)); then
            fx_note "rerun refused (6) while the killed driver's orphans ran"
        else
            bad+="the rerun was refused (exit 6) although the run holding the lease was killed: $lease; "
        fi
        wait_orphans "$sid" 120 || bad+="the killed driver's orphans did not finish; "
        fx_wait_lease fx_k 120 || bad+="a lease still held after 120 s: $(fx_lease_state fx_k); "
        fx_migrate "$d/run3.log" "${jopt[@]}" "${margs[@]}"
        rc2=$?
    fi
    if ! wait_orphans "$sid" 120; then
        bad+="orphans still running after the kill: $(for t in $(fx_session_pids "$sid"); do
            echo -n "$t $(fx_cmdline "$t")(in $(cat "/proc/$t/wchan" 2>/dev/null)) "; done)"
        bad+="(wait_for_partner: blocked opening a FIFO that nobody will open); "
        fx_kill_session "$sid"
    fi
    t=$(find "$TMPDIR" -maxdepth 1 -name 'dm-migrate.*' 2>/dev/null | wc -l)
    ((t > wd0)) && fx_note "the killed run's work directory was left behind in \$TMPDIR"
    RC2[$stage]+="$rc2 "
    if ((rc2 != 0)); then
        bad+="the rerun exited $rc2: $(for f in "$d"/run[23].log; do [[ -e "$f" ]] && fx_failed_msg "$f"; done) "
    fi
    fx_equal fx_src fx_k || bad+="after the rerun: $FX_DIFF "
    out=$(fx_dest_sane fx_k) || bad+="after the rerun: $out "
    if [[ -n "$bad" ]]; then
        fx_fail "kill $stage #$n ($mode${jopt:+ -j 3}; killed ${ent:-?} at $kill_ms ms; exit $rc1): $bad(logs: $d) $(fx_keep_failed fx_k "fx_fail_kill_${stage//-/_}_$n")"
    else
        rm -rf -- "$d"
    fi
}

# load-stmt: one table, one stream, one statement, on databases of its own.
stmt_setup() {
    [[ -s "$FX_WORK/stmt.rows" ]] && return 0
    fx_createdb src fx_stmt && fx_createdb dst fx_stmt || return 1
    fx_psql src fx_stmt "CREATE TABLE public.big (id integer PRIMARY KEY, v text NOT NULL)" \
        "INSERT INTO public.big SELECT g, md5(g::text) FROM generate_series(1, 150000) g" >/dev/null &&
        fx_psql dst fx_stmt "CREATE TABLE public.big (id integer PRIMARY KEY, v text NOT NULL)" >/dev/null &&
        DM_SOURCE=$(fx_ci src fx_stmt) dm-extract --db-env DM_SOURCE --table public.big >"$FX_WORK/stmt.rows"
}

trial_stmt() {
    local n=$1 d pid sid rc1 rc2 q bad="" delay t0 ms
    d=$(fx_trial_dir kill-load-stmt "$n")
    # Not empty, so that dm-load stages the batch and upserts it in one statement.
    fx_psql dst fx_stmt "TRUNCATE public.big" "INSERT INTO public.big VALUES (0, 'not in the source')" \
        "DO \$\$ BEGIN IF to_regclass('dm.lease') IS NOT NULL THEN
            DELETE FROM dm.lease; DELETE FROM dm.checkpoint; DELETE FROM dm.pending_delete; END IF; END \$\$" >/dev/null
    export DM_DEST
    DM_DEST=$(fx_ci dst fx_stmt)
    fx_start "$d/load1.log" dm-load --db-env DM_DEST --table public.big --batch-rows 0 "$FX_WORK/stmt.rows"
    sid=$FX_SID
    delay=$(fx_rand 0 300)
    delay=$((delay >> (MISS_STREAK < 10 ? MISS_STREAK : 10)))   # as in trial
    t0=$(fx_now_ms)
    pid=""
    while fx_alive "$sid"; do
        q=$(fx_psql dst postgres "SELECT (clock_timestamp() - query_start) > interval '$delay milliseconds'
            FROM pg_stat_activity WHERE application_name = 'dm-load' AND state = 'active'
              AND query LIKE 'WITH u0 AS (INSERT%'")
        if [[ "$q" == t ]]; then
            pid=$(fx_session_pids "$sid" '^dm-load ' | head -n 1)
            [[ -n "$pid" ]] && kill -9 "$pid" && break
        fi
        sleep 0.02
    done
    ms=$(($(fx_now_ms) - t0))
    { wait "$sid"; } 2>/dev/null
    rc1=$?
    if [[ -z "$pid" ]]; then
        TRIAL_MISSED=1
        rm -rf -- "$d"
        return
    fi
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    RC1[load-stmt]+="$rc1 "
    # The same command, right away.
    fx_start "$d/load2.log" dm-load --db-env DM_DEST --table public.big --batch-rows 0 "$FX_WORK/stmt.rows"
    { wait "$FX_SID"; } 2>/dev/null
    rc2=$?
    RC2[load-stmt]+="$rc2 "
    if ((rc2 != 0)); then
        bad+="the same dm-load, run right after the kill, exited $rc2: $(head -c 300 "$d/load2.log" | tr '\n' ' ')"
        bad+="(the killed load's backend: $(fx_psql dst postgres "SELECT coalesce(string_agg(state || ' for ' ||
            (clock_timestamp() - query_start)::text, ', '), 'gone') FROM pg_stat_activity WHERE application_name = 'dm-load'")); "
        fx_wait_lease fx_stmt 120
        fx_start "$d/load3.log" dm-load --db-env DM_DEST --table public.big --batch-rows 0 "$FX_WORK/stmt.rows"
        { wait "$FX_SID"; } 2>/dev/null || bad+="and again, once the lease was free: exit $?; "
    fi
    fx_psql dst fx_stmt "DELETE FROM public.big WHERE id = 0" >/dev/null
    fx_equal fx_stmt fx_stmt '^public\.big$' || bad+="in the end: $FX_DIFF; "
    fx_log "load-stmt #$n: killed after the statement ran ${delay}+ ms; the rerun exited $rc2"
    if [[ -n "$bad" ]]; then
        fx_fail "kill load-stmt #$n (killed during the upsert statement, $ms ms after it started): $bad(logs: $d)"
    else
        rm -rf -- "$d"
    fi
}

fx_say "kill -9 of ${STAGES[*]}: $FX_TRIALS trial(s) each (seed $FX_SEED)"
for m in "${MODES[@]}"; do fx_calibrate "$m"; done
for stage in "${STAGES[@]}"; do
    [[ "$stage" == driver || "$stage" == load-stmt || -n "${PATTERN[$stage]:-}" ]] || fx_die "unknown stage $stage"
    [[ "$stage" == load-stmt ]] && { stmt_setup || fx_die "cannot set up the load-stmt tables"; }
    FX_TRIALS_DONE=0 FX_FAILS_0=$FX_FAILS FX_ROWS=0 FX_NOTES=() FX_NOTE_ORDER=()
    done_n=0 missed=0 n=0 MISS_STREAK=0
    while ((done_n < FX_TRIALS)); do
        TRIAL_MISSED=0
        if [[ "$stage" == load-stmt ]]; then trial_stmt "$n"; else trial "$stage" "$n"; fi
        n=$((n + 1))
        if ((TRIAL_MISSED)); then
            missed=$((missed + 1)) MISS_STREAK=$((MISS_STREAK + 1))
            if ((missed > 3 * FX_TRIALS + 5)); then
                fx_fail "kill $stage: no matching process seen in $missed runs"
                break
            fi
            continue
        fi
        MISS_STREAK=0
        done_n=$((done_n + 1))
    done
    fx_log "kill $stage: killed in ${KILLED_IN[$stage]:-}; the runs exited ${RC1[$stage]:-}; the reruns ${RC2[$stage]:-}"
    ((missed > 0)) && fx_note "$missed run(s) ended before a matching process was seen"
    FX_FAILS_STAGE=$((FX_FAILS - FX_FAILS_0))
    note=""
    for k in "${FX_NOTE_ORDER[@]}"; do
        note+="${note:+; }$k"
        ((FX_NOTES[$k] > 1)) && note+=" (x${FX_NOTES[$k]})"
    done
    fx_result_line "kill -9 $stage" "$FX_TRIALS_DONE" "$FX_FAILS_STAGE" "$FX_ROWS" \
        "exits ${RC1[$stage]:-}${note:+; $note}"
done
((FX_FAILS == 0))
