#!/usr/bin/env bash
# tests/faults/follow.sh - dm-migrate follow under faults. A workload changes the source
# (inserts, updates, deletes of parents with their children, a transaction over several
# tables, a row deleted and inserted again with its key) while a follower runs; at a
# random instant a fault comes; then `dm-migrate follow --until-caught-up` must make the
# destination equal the source.
#
#   tests/faults/follow.sh [--trials N] [--faults LIST] [--seed N] [-v]
#
# Faults (LIST is comma separated; default all):
#   kill-decode kill-keys kill-extract kill-diff kill-load
#                   SIGKILL of that program of the follower's batches (the first seen)
#   kill-driver     SIGKILL of the follower itself (dm-migrate)
#   dest-crash      the destination stopped with pg_ctl stop -m immediate, then started
#   src-restart     the source restarted (fast), with its walsender and the snapshot
#   terminate       pg_terminate_backend of the follower's replication connection
#
# Each trial: a fresh copy of fx_src as the source (it changes), an empty destination, a
# slot of its own; the first follow --until-caught-up copies at the slot's snapshot; the
# follower runs (dm-migrate follow, default retries) and the workload starts; after a
# random delay the fault; the workload ends; the follower is stopped (TERM) if it still
# runs; then follow --until-caught-up again must exit 0, and fx_compare (psql COPY, no
# dm code) finds the destination equal to the source, no duplicate; no lease left.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

FAULTS=(kill-decode kill-keys kill-extract kill-diff kill-load kill-driver dest-crash src-restart terminate)
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

declare -A PATTERN=(
    [kill-decode]='^dm-decode .*--until-lsn'
    [kill-keys]='^dm-keys '
    [kill-extract]='^dm-extract .*--keys'
    [kill-diff]='^dm-diff '
    [kill-load]='^dm-load .*--follow'
)
SLOT=fx_follow

# workload DB ROUNDS: the changes of a live application, one transaction per statement
# group, each idempotent: a group cut by a server restart is run again (up to 20 s).
# Keys above 10,000,000 are the workload's own.
workload() {
    local db=$1 n=$2 i k try
    for ((i = 1; i <= n; i++)); do
        k=$((10000000 + i))
        for ((try = 0; ; try++)); do
            fx_psql src "$db" \
                "BEGIN; INSERT INTO fx.customer VALUES ($k, 'new $i', NULL, NULL, now()) ON CONFLICT DO NOTHING;
                 INSERT INTO fx.orders VALUES ($k, $k, now(), 'new', $i, NULL, now()) ON CONFLICT DO NOTHING;
                 INSERT INTO fx.order_line VALUES ($k, 1, 'W', 1, 1, NULL, now()), ($k, 2, 'W', 2, 2, NULL, now())
                     ON CONFLICT DO NOTHING; COMMIT" \
                "UPDATE fx.orders SET note = 'w $i' WHERE id = $((i * 37 % 900 + 1))" \
                "UPDATE fx.customer SET email = NULL WHERE id = $((i * 13 % 150 + 1))" \
                "BEGIN; DELETE FROM fx.order_line WHERE order_id = $((i * 7 % 900 + 1)); DELETE FROM fx.orders WHERE id = $((i * 7 % 900 + 1)); COMMIT" \
                "BEGIN; DELETE FROM fx.blob WHERE name = md5('$((i % 150 + 1))');
                 INSERT INTO fx.blob VALUES (md5('$((i % 150 + 1))'), NULL, '\x00'::bytea, ARRAY['again']); COMMIT" \
                >/dev/null 2>&1 && break
            ((try < 40)) || return 1
            sleep 0.5
        done
    done
}

# stall DB: a session of the harness holds fx.orders of the destination DB in ACCESS
# EXCLUSIVE mode for a few seconds (STALL_PID): the follower's read of its hashes waits
# there, alive, and the dm-diff that reads them (the source, where the workload writes,
# is left alone).
stall() {
    PGAPPNAME=fx-lock "$DM_PSQL" -X -q -d "$(fx_ci dst "$1")" \
        -c "BEGIN" -c "LOCK TABLE fx.orders IN ACCESS EXCLUSIVE MODE" -c "SELECT pg_sleep(4)" >/dev/null 2>&1 &
    STALL_PID=$!
}

# drop_slot: the trial's slot gone from the source, whoever held it.
drop_slot() {
    fx_psql src postgres "SELECT pg_terminate_backend(active_pid) FROM pg_replication_slots WHERE slot_name = '$SLOT' AND active_pid IS NOT NULL" >/dev/null 2>&1
    local i
    for ((i = 0; i < 50; i++)); do
        fx_psql src postgres "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = '$SLOT'" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# fault F SID: bring fault F on the follower of session SID; 0 once it came, 1 if what
# it aims at was never seen (then the trial does not count).
fault() {
    local f=$1 sid=$2 i pid
    case "$f" in
        kill-driver)
            pid=$(pgrep -o -s "$sid" -f "^bash [^ ]*/dm-migrate " 2>/dev/null)
            [[ -n "$pid" ]] && kill -9 "$pid" 2>/dev/null ;;
        dest-crash)
            cluster_kill "$FX_DST_DIR" >/dev/null 2>&1
            fx_sleep_ms "$(fx_rand 200 1500)"
            cluster_restart "$FX_DST_DIR" >/dev/null || return 2
            fx_wait_up dst ;;
        src-restart)
            cluster_restart "$FX_SRC_DIR" >/dev/null || return 2
            fx_wait_up src ;;
        terminate)
            for ((i = 0; i < 100; i++)); do
                [[ "$(fx_psql src postgres "SELECT count(pg_terminate_backend(active_pid)) FROM pg_replication_slots
                    WHERE slot_name = '$SLOT' AND active_pid IS NOT NULL")" -gt 0 ]] && return 0
                sleep 0.05
            done
            return 1 ;;
        *)
            # a read held by a lock keeps the extract and its dm-diff alive
            [[ "$f" == kill-extract || "$f" == kill-diff ]] && stall fx_fd
            for ((i = 0; i < 300; i++)); do
                pid=$(fx_session_pids "$sid" "${PATTERN[$f]}" | head -n 1)
                [[ -n "$pid" ]] && { kill -9 "$pid" 2>/dev/null; return 0; }
                sleep 0.02
            done
            return 1 ;;
    esac
}

# trial F N: one trial of fault F; FX_FAILURES counts the failed ones.
trial() {
    local f=$1 n=$2 d rc wpid sid why=""
    d=$(fx_trial_dir follow "$f.$n")
    drop_slot
    fx_createdb src fx_fs fx_src >/dev/null && fx_createdb dst fx_fd fx_empty_tpl >/dev/null || {
        fx_fail "$f #$n: cannot create the trial's databases"; return; }
    fx_use fx_fs fx_fd
    fx_migrate "$d/start.log" --slot "$SLOT" --until-caught-up follow
    rc=$?
    if ((rc != 0)); then
        fx_fail "$f #$n: the first follow --until-caught-up exited $rc: $(tail -n 2 "$d/start.log")"
        return
    fi
    fx_start "$d/follow.log" dm-migrate --slot "$SLOT" --idle 0.1 follow
    sid=$FX_SID
    workload fx_fs 25 &
    wpid=$!
    fx_sleep_ms "$(fx_rand 100 1500)"
    STALL_PID=""
    fault "$f" "$sid"
    rc=$?
    [[ -n "$STALL_PID" ]] && wait "$STALL_PID"
    wait "$wpid" || why+="the workload failed; "
    ((rc == 2)) && why+="the fault could not be brought (a server did not come back); "
    # the follower stops (a killed driver's programs end by themselves)
    kill -TERM "$sid" 2>/dev/null
    pkill -TERM -s "$sid" -f '^bash [^ ]*/dm-migrate ' 2>/dev/null
    fx_wait_pid "$sid" 60 >/dev/null
    fx_wait_session "$sid" 30 || { fx_kill_session "$sid"; }
    fx_migrate "$d/catchup.log" --slot "$SLOT" --until-caught-up follow
    local rc2=$?
    if ((rc2 == 7 || rc2 == 6)); then
        # a server back from a crash, a lease of a killed load: the same command once more
        sleep 2
        fx_migrate "$d/catchup2.log" --slot "$SLOT" --until-caught-up follow
        rc2=$?
    fi
    ((rc2 == 0)) || why+="follow --until-caught-up exited $rc2: $(tail -n 2 "$d/catchup.log" | tr '\n' ' '); "
    if ((rc2 == 0)) && ! fx_equal fx_fs fx_fd; then
        why+="not equal after the catch-up: $FX_DIFF; "
    fi
    if [[ -n "$why" ]]; then
        fx_fail "$f #$n (fault at $( ((rc == 1)) && echo 'no matching process seen' || echo 'a random instant')): $why(logs: $d)"
    else
        FX_N[$f]=$((${FX_N[$f]:-0} + 1))
        ((rc == 1)) && FX_MISS[$f]=$((${FX_MISS[$f]:-0} + 1))
    fi
    fx_migrate "$d/drop.log" --slot "$SLOT" --drop-slot follow >/dev/null 2>&1 || drop_slot
}

declare -A FX_N=() FX_MISS=()
FX_FAILS=0
fx_say "follow under faults: ${FAULTS[*]}; $FX_TRIALS trial(s) each (seed $FX_SEED)"
for f in "${FAULTS[@]}"; do
    [[ "$f" == kill-driver || "$f" == dest-crash || "$f" == src-restart || "$f" == terminate || -n "${PATTERN[$f]:-}" ]] ||
        fx_die "unknown fault $f"
    fails0=$FX_FAILS
    FX_ROWS=0
    for ((n = 0; n < FX_TRIALS; n++)); do
        trial "$f" "$n"
    done
    fx_result_line "follow $f" "$FX_TRIALS" "$((FX_FAILS - fails0))" "$FX_ROWS" \
        "${FX_MISS[$f]:+${FX_MISS[$f]} without the fault (nothing of it seen)}"
done
fx_psql src postgres "DROP DATABASE IF EXISTS fx_fs WITH (FORCE)" >/dev/null 2>&1
fx_psql dst postgres "DROP DATABASE IF EXISTS fx_fd WITH (FORCE)" >/dev/null 2>&1
((FX_FAILS == 0))
