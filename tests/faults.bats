#!/usr/bin/env bats
# tests/faults.bats - the fault-injection scripts of tests/faults/ in reduced form, for
# make check: a small dataset (scale 0.05), 2 trials per killed stage, 1 per server fault
# and per kind of concurrent runs, fewer random streams, a smaller valgrind run (about
# 2 minutes in all; the valgrind test is skipped where valgrind is not installed). `make faults` runs them in full (tests/faults/run, which
# prints the counts), `make faults FAULT_ARGS='--only kill --trials 5'` some of them.
#
# Each script starts from the same two throwaway clusters (source and destination, set up
# here once), ends each trial with a comparison that uses psql COPY and none of dm's code,
# plus a duplicate check, and prints FAIL: lines for what went wrong (bats shows them).

load common

# The seed of the random instants and bytes: FX_SEED if set, else derived from the
# commit under test, so that CI run again on the same commit replays the same trials
# (`make faults` keeps a random seed, for exploring). Printed before any trial.
fault_seed() {
    local commit
    if [[ -n "${FX_SEED:-}" ]]; then
        echo "$FX_SEED (from FX_SEED)"
    elif commit=$(git -C "$DM_REPO" rev-parse HEAD 2>/dev/null) && [[ "$commit" =~ ^[0-9a-f]{7} ]]; then
        echo "$((16#${commit:0:7})) (from commit ${commit:0:12})"
    else
        echo "$$ (no git commit to derive it from: random)"
    fi
}

setup_file() {
    local seed
    seed=$(fault_seed)
    export FX_SCALE=0.05 FX_TRIALS=2 FX_QUICK=1 FX_SEED=${seed%% *}
    echo "# fault seed $seed; replay: FX_SEED=$FX_SEED bats tests/faults.bats" >&3
    # shellcheck source=tests/faults/lib.sh
    source "$BATS_TEST_DIRNAME/faults/lib.sh"
    fx_setup_clusters
    fx_build_data >/dev/null
    fx_selftest
    export FX_WORK FX_SRC_DIR FX_DST_DIR FX_RESULTS
}

teardown_file() {
    source "$BATS_TEST_DIRNAME/faults/lib.sh"
    # The logs of failed trials (kept under $FX_WORK/logs), for a post mortem.
    if [[ -n "${DM_KEEP_LOGS:-}" && -d "$FX_WORK/logs" ]] && [[ -n "$(ls -A "$FX_WORK/logs" 2>/dev/null)" ]]; then
        mkdir -p "$DM_KEEP_LOGS/faults" && cp -r "$FX_WORK/logs/." "$DM_KEEP_LOGS/faults/"
    fi
    fx_teardown_clusters
}

# fault SCRIPT ARGS...: run one script; its FAIL: lines are the failure's explanation.
fault() {
    local script=$1
    shift
    local t0=$SECONDS
    run timeout -k 10 600 "$BATS_TEST_DIRNAME/faults/$script.sh" --seed "$FX_SEED" "$@"
    if ((status != 0)); then
        echo "$output" | grep -v '^#   ' >&2
        echo "(seed $FX_SEED; rerun with: FX_SEED=$FX_SEED bats tests/faults.bats, or make faults FAULT_ARGS='--only $script --seed $FX_SEED')" >&2
        return 1
    fi
    { echo "$output" | grep '^# ' | tail -n 8; echo "# ($script: $((SECONDS - t0)) s)"; } >&3 || true
}

@test "kill -9 of each stage and of the driver at random instants; the rerun converges, no duplicates" {
    fault kill --trials 2
}

@test "destination crash, source restart, terminated connections: exit 7 or retried; rerun converges" {
    fault server --trials 1 --faults dest-crash,src-restart,terminate
}

@test "follow under faults: kill -9 of each stage and of the follower, destination crash, source restart, replication connection cut; the catch-up converges" {
    fault follow --trials 1
}

@test "each helper of a run (entity planner, checkpoints, hold, snapshot) cut off: 'PART failed: why' or retried" {
    fault server --trials 1 --faults helper
}

@test "two runs on one entity: the second refuses (6) or waits, never interleaved" {
    fault concurrent --trials 1
}

@test "disk full and closed pipes: non-zero exit, a clear error, nothing half-applied" {
    fault diskfull --trials 1
}

@test "bad streams: one-line error, non-zero exit, batch boundary, no delete from an incomplete stream" {
    fault streams --trials 2
}

@test "secrets stay out of argv, logs, state, streams and errors; hostile names; one table per stream" {
    fault security
}

@test "valgrind: a small end-to-end run and the error paths leak nothing, touch nothing invalid" {
    command -v valgrind >/dev/null || skip "valgrind is not installed (apt-get install valgrind)"
    if ldd "$(command -v dm-diff)" 2>/dev/null | grep -qE 'libasan|libubsan'; then
        skip "a sanitizer build (make SANITIZE=1): valgrind cannot run it; the normal build's check runs this"
    fi
    fault valgrind
}
