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
# If `dm-migrate --help` offers --retries, the run is given --retries 5 and must recover
# by itself (exit 0; a crashed server is started again 0.5 to 3 s after the crash).
# Otherwise the run must exit 7 (transient) with a message naming the stage, and the
# same command, once the server is back, must exit 0. Either way the destination must
# then equal the source (fx_compare: psql COPY, no dm code), without duplicates, with
# its trigger enabled and no lease, parked delete or incomplete checkpoint left.
# The first trial also checks that dm's connections are named dm-* (application_name).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAULTS=(dest-crash src-restart terminate)
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

# terminate SIDE: pg_terminate_backend on dm's connections there; how many.
terminate() {
    fx_psql "$1" postgres "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE application_name LIKE 'dm-%'"
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

    fx_start "$d/run1.log" dm-migrate -q "${RETRY[@]}" "${margs[@]}"
    sid=$FX_SID
    t0=$(fx_now_ms)
    delay=$(fx_rand 0 "${FX_CALIB[$mode]}")
    fx_sleep_ms "$delay"
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
                local k=0 s a
                for s in src dst; do
                    for a in $(fx_psql "$s" postgres "SELECT DISTINCT application_name FROM pg_stat_activity
                        WHERE application_name LIKE 'dm-%'"); do
                        [[ " $APPNAMES_SEEN " == *" $a "* ]] || APPNAMES_SEEN+="$a "
                    done
                done
                [[ "$side" != src ]] && k=$((k + $(terminate dst)))
                [[ "$side" != dst ]] && k=$((k + $(terminate src)))
                ((k > 0)) && what="$k connection(s) of dm terminated on the $side side"
            fi
            ;;
    esac
    inj_ms=$(($(fx_now_ms) - t0))
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

    why=$(fx_failed_msg "$d/run1.log")
    echo "message: $why" >>"$d/trial.txt"
    if [[ "${RETRY[1]:-0}" != 0 ]]; then
        ((rc1 == 0)) || bad+="with --retries the run exited $rc1: $(tail -n 3 "$d/run1.log" | tr '\n' ' '); "
    elif ((rc1 == 0)); then
        fx_note "$fault: the run completed despite the fault"
    elif ((rc1 != 7)); then
        bad+="the run exited $rc1, not 7 (transient): $(grep -v '^/.*Killed' "$d/run1.log" | tail -n 3 | tr '\n' ' '); "
    elif [[ -z "$why" ]]; then
        bad+="exit 7 without an 'ENTITY: STAGE failed' message; "
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
    case "$fault" in dest-crash | src-restart | terminate) ;; *) fx_die "unknown fault $fault" ;; esac
    FAULT_INDEX=$((FAULT_INDEX + 1))
    FX_TRIALS_DONE=0 fails0=$FX_FAILS FX_ROWS=0 FX_NOTES=() FX_NOTE_ORDER=()
    done_n=0 missed=0 n=0
    while ((done_n < FX_TRIALS)); do
        TRIAL_MISSED=0
        trial "$fault" "$n"
        n=$((n + 1))
        if ((TRIAL_MISSED)); then
            missed=$((missed + 1))
            ((missed > 3 * FX_TRIALS + 5)) && { fx_fail "$fault: the moment never came in $missed runs"; break; }
            continue
        fi
        done_n=$((done_n + 1))
    done
    note="exits ${EXITS[$fault]:-}"
    [[ "$fault" == terminate && -n "$APPNAMES_SEEN" ]] && note+="; application names seen: $APPNAMES_SEEN"
    for k in "${FX_NOTE_ORDER[@]}"; do note+="; $k"; ((FX_NOTES[$k] > 1)) && note+=" (x${FX_NOTES[$k]})"; done
    fx_result_line "server $fault" "$FX_TRIALS_DONE" $((FX_FAILS - fails0)) "$FX_ROWS" "$note"
done
if [[ " ${FAULTS[*]} " == *" terminate "* && -n "$APPNAMES_SEEN" && "$APPNAMES_SEEN" != *dm-* ]]; then
    fx_fail "dm's connections are not named dm-*: $APPNAMES_SEEN"
fi
((FX_FAILS == 0))
