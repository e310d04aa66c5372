#!/usr/bin/env bash
# tests/faults/server.sh - servers that crash or restart, and connections that are
# killed, in the middle of a run.
#
#   tests/faults/server.sh [--trials N] [--faults LIST] [--seed N] [-v]
#
# Faults (LIST is comma separated; default all), each at a random instant of a run:
#   dest-crash    the destination stopped with pg_ctl stop -m immediate (cluster_kill)
#                 while a dm-load runs, then started again (cluster_restart)
#   src-restart   the source restarted (pg_ctl restart -m fast, and on odd trials a
#                 crash: stop -m immediate, then start) while a dm-extract reads it
#   terminate     SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE
#                 application_name LIKE 'dm-%', on the destination, the source, or both
#                 in turn, once dm has a connection there
#   helper        the connection of one of the run's helpers, in turn: the entity
#                 planner (dm-entities) on the source and on the destination, the
#                 checkpoint read (dm-ckpt list), the run's hold (dm-ckpt hold), the
#                 snapshot holder (dm-extract snapshot, once it has exported its
#                 snapshot); terminated by a server-side loop that polls every
#                 millisecond, so that even a part that lives a few milliseconds is hit
# If `dm-migrate --help` offers --retries, the run is given --retries 5 and must recover
# by itself (exit 0; a crashed server is started again 0.5 to 3 s after the crash).
# Otherwise the run must exit 7 (transient) with a message naming the stage, and the
# same command, once the server is back, must exit 0. Either way the destination must
# then equal the source (fx_compare: psql COPY, no dm code), without duplicates, with
# its trigger enabled and no lease, parked delete or incomplete checkpoint left.
# Every run that exits non-zero must say which part failed and why: a line
# "PART failed: exit status N ..." naming a dm program (text or logfmt; the helper
# trials alternate both and check that the line names the part they hit).
# The terminate trials also check that every connection dm makes is named dm-*
# (application_name): every name seen that is not the harness's own is collected.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAULTS=(dest-crash src-restart terminate helper)
args=()
while (($# > 0)); do
    case "$1" in
        --faults) IFS=, read -ra FAULTS <<<"$2"; shift 2 ;;
        --faults=*) IFS=, read -ra FAULTS <<<"${1#*=}"; shift ;;
        *) args+=("$1"); shift ;;
    esac
done
fx_parse_common "${args[@]}"
fx_script_init

HAS_RETRIES=0
if fx_has_retries; then
    HAS_RETRIES=1
    fx_say "dm-migrate has --retries: runs with --retries 5 must recover by themselves, runs with --retries 0 must exit 7 and converge when run again"
else
    fx_say "dm-migrate has no --retries (yet): each run must exit 7, and a rerun must converge"
fi
MODES=(delete initial incr)
declare -A EXITS=()
APPNAMES_SEEN=""

# wait_for SID SIDE PATTERN: poll until a process of session SID matches PATTERN
# (SIDE=proc) or dm has a backend on SIDE (src|dst|both); fails if the run ended first.
wait_for() {
    local sid=$1 kind=$2 pattern=${3:-} q
    q="SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'dm-%'"
    while fx_alive "$sid"; do
        case "$kind" in
            proc) [[ -n "$(fx_session_pids "$sid" "$pattern")" ]] && return 0 ;;
            src | dst) [[ "$(fx_psql "$kind" postgres "$q" 2>/dev/null)" -gt 0 ]] && return 0 ;;
            both) [[ "$(fx_psql src postgres "$q" 2>/dev/null)" -gt 0 &&
                "$(fx_psql dst postgres "$q" 2>/dev/null)" -gt 0 ]] && return 0 ;;
        esac
        sleep 0.01
    done
    return 1
}

# stage_of SID PATTERN WORDS: "WORDS TABLE" for the process of SID matching PATTERN.
stage_of() {
    local p t
    p=$(fx_session_pids "$1" "$2" | head -n 1)
    t=$([[ -n "$p" ]] && fx_cmdline "$p" | sed -nE 's/.*--table ([^ ]+).*/\1/p')
    echo "$3 ${t:-a table}"
}

# terminate SIDE: pg_terminate_backend on dm's connections there. Prints how many,
# then the application names of every client but the harness's own (spaces as _): a
# connection dm left unnamed, or named otherwise, must show up there, not be filtered
# out. One statement, so that the names are those of the backends it saw: a short-lived
# connection cannot be terminated unseen, nor seen and gone before the terminate.
terminate() {
    fx_psql "$1" postgres "SELECT count(pg_terminate_backend(pid)) FILTER (WHERE application_name LIKE 'dm-%')
            || coalesce(' ' || string_agg(DISTINCT replace(coalesce(nullif(application_name, ''), '(none)'), ' ', '_'), ' '), '')
        FROM pg_stat_activity WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()
        AND application_name NOT IN ('fx-harness', 'fx-lock', 'fx-poll')"
}

# The helpers of a run, in the order the helper trials take them: "SIDE APPNAME STATE
# PATTERN" (_ for a space), STATE the backend state to wait for (- any), PATTERN what
# the failure message must name when the run exits non-zero.
HELPERS=(
    "src dm-entities - dm-entities_failed:_"
    "dst dm-entities - dm-entities_failed:_"
    "dst dm-ckpt - dm-ckpt_list_failed:_"
    "dst dm-ckpt_hold - dm-ckpt_hold_failed:_"
    "src dm-extract_snapshot idle_in_transaction dm-extract.*_failed:_"
)

# poll_start SIDE APPNAME STATE: in the background, a server-side loop on SIDE that
# terminates the first backend named APPNAME (in STATE, unless -) as soon as it
# appears, polling every millisecond for up to 60 s; it writes how many it
# terminated to $POLL_OUT. Returns once the loop runs.
POLL_PID="" POLL_OUT=""
poll_start() {
    local side=$1 app=$2 state=$3 cond="" i
    [[ "$state" != - ]] && cond=" AND state = '$state'"
    POLL_OUT=$FX_WORK/poll.out
    : >"$POLL_OUT"
    PGAPPNAME=fx-poll PGOPTIONS='-c client_min_messages=warning' "$DM_PSQL" -X -qAt -v ON_ERROR_STOP=1 \
        -d "$(fx_ci "$side" postgres)" >"$POLL_OUT" 2>&1 <<SQL &
CREATE FUNCTION pg_temp.fx_poll() RETURNS int LANGUAGE plpgsql AS \$\$
DECLARE n int := 0; deadline timestamptz := clock_timestamp() + interval '60 s';
BEGIN
    WHILE n = 0 AND clock_timestamp() < deadline LOOP
        PERFORM pg_catalog.pg_stat_clear_snapshot();
        SELECT count(pg_catalog.pg_terminate_backend(pid)) INTO n FROM pg_catalog.pg_stat_activity
            WHERE application_name = '$app'$cond;
        IF n = 0 THEN PERFORM pg_catalog.pg_sleep(0.001); END IF;
    END LOOP;
    RETURN n;
END \$\$;
SELECT pg_temp.fx_poll();
SQL
    POLL_PID=$!
    for ((i = 0; i < 200; i++)); do
        [[ "$(fx_psql "$side" postgres "SELECT count(*) FROM pg_stat_activity
            WHERE application_name = 'fx-poll' AND state = 'active'")" -gt 0 ]] && return 0
        sleep 0.05
    done
    return 1
}

# poll_end: stop the loop if it still runs; how many backends it terminated.
poll_end() {
    local side
    for side in src dst; do
        fx_psql "$side" postgres "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
            WHERE application_name = 'fx-poll'" >/dev/null
    done
    wait "$POLL_PID" 2>/dev/null
    POLL_PID=""
    grep -E '^[0-9]+$' "$POLL_OUT" | tail -n 1
}

# failure_named LOG PATTERN: the run's failure line (fx_failed_msg) names a dm program
# and why ("... dm-X ... failed: exit status N" or "killed by signal N"), and matches
# PATTERN (an extended regex; empty: any part). Sets WHY to the message.
WHY=""
failure_named() {
    WHY=$(fx_failed_msg "$1")
    [[ "$WHY" =~ dm-[a-z]+[^\"]*\ failed:\ (exit\ status\ [0-9]+|killed\ by\ signal) ]] || return 1
    [[ -z "$2" || "$WHY" =~ $2 ]]
}

trial() {
    local fault=$1 n=$2 mode d margs sid t0 delay rc1 rc2 inj_ms what="" bad="" out why side
    local restart_pid=""
    # With --retries, half the trials use it, half --retries 0 (staggered per fault, so
    # that one trial of each fault still covers both).
    RETRY=()
    if ((HAS_RETRIES)); then
        if (((n + FAULT_INDEX) % 2 == 0)); then RETRY=(--retries 5); else RETRY=(--retries 0); fi
    fi
    case "$fault" in
        dest-crash) mode=$( ((n % 2)) && echo initial || echo delete) ;;
        *) mode=${MODES[$((n % 3))]} ;;
    esac
    read -ra margs <<<"$(fx_mode_args "$mode")"
    d=$(fx_trial_dir "server-$fault" "$n")
    fx_fresh_dest "$mode" || { fx_fail "$fault: createdb failed"; return; }

    local logfmt=() hside="" happ="" hstate="" hpat="" hfmt=""
    if [[ "$fault" == helper ]]; then
        # One helper per trial, in turn; text and logfmt messages alternate.
        read -r hside happ hstate hpat <<<"${HELPERS[$((n % ${#HELPERS[@]}))]}"
        happ=${happ//_/ } hstate=${hstate//_/ } hpat=${hpat//_/ }
        if (((n / ${#HELPERS[@]}) % 2)); then hfmt=text; else hfmt=logfmt; fi
        logfmt=(--log-format "$hfmt")
        # The dm schema exists before the run, as it does after a first run.
        dm-ckpt --db-env DM_DEST list >/dev/null || { fx_fail "$fault: dm-ckpt list failed before the trial"; return; }
        poll_start "$hside" "$happ" "$hstate" || { fx_fail "$fault: the polling loop did not start: $(cat "$POLL_OUT")"; return; }
    fi
    # After two misses in a row (a loaded machine polls slower than a small table's
    # extract or load lives), the largest table is locked on the side of the fault, so
    # that its pipeline waits there, alive, for the fault; the fault itself (a stop or
    # restart of that server) ends the lock.
    local stalled=0
    if ((MISS_STREAK >= 2)) && [[ "$fault" == dest-crash || "$fault" == src-restart ]]; then
        fx_stall fx_k "$([[ "$fault" == dest-crash ]] && echo dst || echo src)" && stalled=1 ||
            { fx_stall_end; fx_fail "$fault: the harness's lock was not granted"; return; }
    fi
    fx_start "$d/run1.log" dm-migrate -q "${logfmt[@]}" "${RETRY[@]}" "${margs[@]}"
    sid=$FX_SID
    t0=$(fx_now_ms)
    delay=$(fx_rand 0 "${FX_CALIB[$mode]}")
    # The clean run was timed once; on a machine whose load changed since, the delay
    # can outlast the run: each miss in a row halves it, so that the moment comes.
    delay=$((delay >> (MISS_STREAK < 10 ? MISS_STREAK : 10)))
    [[ "$fault" == helper ]] || fx_sleep_ms "$delay"
    case "$fault" in
        dest-crash)
            if wait_for "$sid" proc '^dm-load '; then
                what="destination crashed during $(stage_of "$sid" '^dm-load ' "dm-load of")"
                cluster_kill "$FX_DST_DIR" || bad+="cluster_kill failed; "
                if [[ "${RETRY[1]:-0}" != 0 ]]; then
                    (fx_sleep_ms "$(fx_rand 500 3000)"; cluster_restart "$FX_DST_DIR" >/dev/null) &
                    restart_pid=$!
                fi
            fi
            ;;
        src-restart)
            if wait_for "$sid" proc '^dm-extract --db-env DM_SOURCE --table '; then
                what="source $( (((n / 2) % 2)) && echo crashed || echo restarted) during $(stage_of "$sid" '^dm-extract --db-env DM_SOURCE --table ' "the extract of")"
                if (((n / 2) % 2)); then
                    cluster_kill "$FX_SRC_DIR" || bad+="cluster_kill failed; "
                    if [[ "${RETRY[1]:-0}" != 0 ]]; then
                        (fx_sleep_ms "$(fx_rand 500 3000)"; cluster_restart "$FX_SRC_DIR" >/dev/null) &
                        restart_pid=$!
                    else
                        cluster_restart "$FX_SRC_DIR" || bad+="cluster_restart failed; "
                    fi
                else
                    cluster_restart "$FX_SRC_DIR" || bad+="cluster_restart failed; "
                fi
            fi
            ;;
        terminate)
            side=$(case $((n % 3)) in 0) echo dst ;; 1) echo src ;; 2) echo both ;; esac)
            if wait_for "$sid" "$side"; then
                local k=0 s a out count names
                for s in dst src; do
                    [[ "$side" == both || "$side" == "$s" ]] || continue
                    out=$(terminate "$s") || { bad+="cannot terminate on $s; "; continue; }
                    read -r count names <<<"$out"
                    k=$((k + count))
                    for a in $names; do
                        [[ " $APPNAMES_SEEN " == *" $a "* ]] || APPNAMES_SEEN+="$a "
                    done
                done
                ((k > 0)) && what="$k connection(s) of dm terminated on the $side side"
            fi
            ;;
        helper)
            # The loop ends once it has terminated the helper's backend; it is ended
            # when the run is over first (the helper never came: not a trial).
            while fx_alive "$sid" && kill -0 "$POLL_PID" 2>/dev/null; do sleep 0.01; done
            local k
            k=$(poll_end)
            ((${k:-0} > 0)) && what="the connection of $happ terminated on the $hside side ($hfmt messages)"
            ;;
    esac
    inj_ms=$(($(fx_now_ms) - t0))
    ((stalled)) && fx_stall_end
    if [[ -z "$what" ]]; then
        # The run ended before the moment came: not a trial.
        { wait "$sid"; } 2>/dev/null
        TRIAL_MISSED=1
        rm -rf -- "$d"
        return
    fi
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    # A run must not hang on a lost server: it ends within 60 s of the fault (or, with
    # retries, of the restart).
    fx_wait_pid "$sid" $((60 + ${RETRY[1]:-0} * 60))
    rc1=$?
    [[ -n "$restart_pid" ]] && wait "$restart_pid"
    ((rc1 == 255)) && bad+="the run did not end within 60 s of the fault; "
    EXITS[$fault]+="$rc1${RETRY:+(r${RETRY[1]})} "
    printf '%s #%d, mode %s: %s at %d ms\nexit status %d\n' "$fault" "$n" "$mode" "$what" "$inj_ms" "$rc1" >"$d/trial.txt"
    fx_log "$fault #$n ($mode): $what at $inj_ms ms; exit $rc1"
    # The servers are up again for what follows.
    _cl_postmaster_pid "$FX_DST_DIR" >/dev/null || cluster_restart "$FX_DST_DIR" || bad+="cannot restart the destination; "
    _cl_postmaster_pid "$FX_SRC_DIR" >/dev/null || cluster_restart "$FX_SRC_DIR" || bad+="cannot restart the source; "
    fx_wait_up dst && fx_wait_up src || bad+="a server does not come back; "

    # Any exit but 0 names the part that failed and why; a helper trial's, the helper.
    if ((rc1 != 0)) && ! failure_named "$d/run1.log" "$hpat"; then
        bad+="exit $rc1 without a 'PART failed: why' message${hpat:+ naming /$hpat/} (got: ${WHY:-nothing}; last lines: $(tail -n 3 "$d/run1.log" | tr '\n' ' ')); "
    fi
    echo "message: $WHY" >>"$d/trial.txt"
    if [[ "${RETRY[1]:-0}" != 0 ]]; then
        ((rc1 == 0)) || bad+="with --retries the run exited $rc1: $(tail -n 3 "$d/run1.log" | tr '\n' ' '); "
    elif ((rc1 == 0)); then
        fx_note "$fault: the run completed despite the fault"
    elif ((rc1 != 7)); then
        bad+="the run exited $rc1, not 7 (transient): $(grep -v '^/.*Killed' "$d/run1.log" | tail -n 3 | tr '\n' ' '); "
    fi
    out=$(fx_triggers_on fx_k) || bad+="after the fault: $out; "

    if ((rc1 != 0)); then
        fx_migrate "$d/run2.log" "${margs[@]}"
        rc2=$?
        if ((rc2 == 6)); then
            bad+="the rerun was refused (exit 6): $(fx_lease_state fx_k); "
            fx_wait_lease fx_k 120
            fx_migrate "$d/run3.log" "${margs[@]}"
            rc2=$?
        fi
        ((rc2 == 0)) || bad+="the rerun exited $rc2: $(tail -q -n 2 "$d"/run[23].log | tr '\n' ' '); "
    fi
    fx_equal fx_src fx_k || bad+="in the end: $FX_DIFF; "
    out=$(fx_dest_sane fx_k) || bad+="in the end: $out; "
    if [[ -n "$bad" ]]; then
        fx_fail "$fault #$n ($mode; $what at $inj_ms ms; exit $rc1): $bad(logs: $d) $(fx_keep_failed fx_k "fx_fail_${fault//-/_}_$n")"
    else
        rm -rf -- "$d"
    fi
}

fx_say "server faults: ${FAULTS[*]}; $FX_TRIALS trial(s) each (seed $FX_SEED)"
for m in "${MODES[@]}"; do fx_calibrate "$m"; done
FAULT_INDEX=0
for fault in "${FAULTS[@]}"; do
    case "$fault" in dest-crash | src-restart | terminate | helper) ;; *) fx_die "unknown fault $fault" ;; esac
    # Every helper once at least, whatever --trials says.
    want=$FX_TRIALS
    [[ "$fault" == helper ]] && ((want < ${#HELPERS[@]})) && want=${#HELPERS[@]}
    FAULT_INDEX=$((FAULT_INDEX + 1))
    FX_TRIALS_DONE=0 fails0=$FX_FAILS FX_ROWS=0 FX_NOTES=() FX_NOTE_ORDER=()
    done_n=0 missed=0 n=0 MISS_STREAK=0
    while ((done_n < want)); do
        TRIAL_MISSED=0
        trial "$fault" "$n"
        n=$((n + 1))
        if ((TRIAL_MISSED)); then
            missed=$((missed + 1)) MISS_STREAK=$((MISS_STREAK + 1))
            ((missed > 3 * want + 5)) && { fx_fail "$fault: the moment never came in $missed runs"; break; }
            continue
        fi
        MISS_STREAK=0
        done_n=$((done_n + 1))
    done
    note="exits ${EXITS[$fault]:-}"
    [[ "$fault" == terminate ]] && note+="; application names seen: ${APPNAMES_SEEN:-none}"
    for k in "${FX_NOTE_ORDER[@]}"; do note+="; $k"; ((FX_NOTES[$k] > 1)) && note+=" (x${FX_NOTES[$k]})"; done
    fx_result_line "server $fault" "$FX_TRIALS_DONE" $((FX_FAILS - fails0)) "$FX_ROWS" "$note"
done
if [[ " ${FAULTS[*]} " == *" terminate "* ]]; then
    unnamed=""
    for a in $APPNAMES_SEEN; do [[ "$a" == dm-* ]] || unnamed+="$a "; done
    [[ -n "$APPNAMES_SEEN" ]] || fx_fail "the terminate trials saw no connection of dm at all"
    [[ -z "$unnamed" ]] || fx_fail "connections not named dm-* during a run: $unnamed(all seen: $APPNAMES_SEEN)"
fi
((FX_FAILS == 0))
