#!/usr/bin/env bash
# tests/faults/diskfull.sh - a full disk, or a closed pipe, under any stage.
#
#   tests/faults/diskfull.sh [--trials N] [--seed N] [-v]
#
# The full disk is a tiny tmpfs (mount -t tmpfs, when this machine lets us: root, and
# not forbidden by the container), pre-filled so that only a random few KiB are free;
# and, always, `ulimit -f` (the writer gets SIGXFSZ). Each trial:
#   workdir     dm-migrate --workdir on the full disk (logs, and the streams of the
#               foreign-key cycle fx.dept <-> fx.employee are written there): it must
#               either succeed with the destination equal, or fail (non-zero) saying
#               why; then a run with a normal work directory converges (no half-applied
#               batch, no duplicate: psql COPY comparison).
#   files       dm-extract, dm-extract --hashes, dm-diff and dm-cat writing to a file on
#               the full disk: non-zero exit and one line naming the error (ENOSPC); the
#               partial stream, loaded, is refused (exit 3) at a batch boundary.
#   tee         dm-extract | tee FILE-on-full-disk | dm-load: what dm-load received
#               decides (complete: exit 0 and equal; cut: exit 3 at a batch boundary).
#   rejects     dm-load --rejects FILE on a full disk with a row the destination
#               refuses: non-zero exit (not 0, not 5), one line, the checkpoint stays
#               incomplete.
#   pipe        dm-extract, dm-extract --hashes, dm-diff and dm-cat into `head -c N`
#               (random N): non-zero exit and one line ("closed pipe"); and
#               dm-extract | head -c N | dm-load: exit 3, at a batch boundary, no delete.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fx_parse_common "$@"
fx_script_init

W=$FX_WORK/diskfull
mkdir -p "$W"
MNT=$W/mnt
TMPFS=0
declare -A KIND_N=()

cleanup_mount() { mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"; return 0; }
trap 'cleanup_mount; [[ -n "${FX_OWN_CLUSTERS:-}" ]] && fx_teardown_clusters' EXIT

mkdir -p "$MNT"
if mount -t tmpfs -o size=1m,mode=0777 fx-full "$MNT" 2>"$W/mount.err"; then
    TMPFS=1
    fx_say "disk full: a 1 MiB tmpfs (and ulimit -f)"
else
    fx_say "disk full: mount -t tmpfs is not allowed here ($(head -n 1 "$W/mount.err")); ulimit -f only"
    fx_note "tmpfs not available: ulimit -f only"
fi

# fill FREE_KIB: empty the tmpfs, then leave only FREE_KIB free.
fill() {
    rm -rf -- "${MNT:?}"/*
    local avail
    avail=$(df -k --output=avail "$MNT" | tail -n 1 | tr -d ' ')
    if ((avail > $1)); then
        dd if=/dev/zero of="$MNT/filler" bs=1k count=$((avail - $1)) status=none 2>/dev/null
    fi
    mkdir -p "$MNT/d"
}

# one_line FILE PROG: FILE holds exactly one line, "PROG: ...".
one_line() {
    [[ "$(grep -c '' "$1")" == 1 ]] && grep -q "^$2: " "$1"
}


trial_workdir() {
    local n=$1 how d mode rc bad="" free log margs out
    mode=$( ((n % 2)) && echo initial || echo delete)
    read -ra margs <<<"$(fx_mode_args "$mode")"
    d=$(fx_trial_dir diskfull-workdir "$n")
    fx_fresh_dest "$mode" || return
    log=$d/run.log
    if ((TMPFS && n % 3 != 2)); then
        free=$((4 * $(fx_rand 0 40)))
        fill "$free"
        how="tmpfs with $free KiB free"
        fx_migrate "$log" --workdir "$MNT/d" "${margs[@]}"
        rc=$?
    else
        free=$((8 * $(fx_rand 1 40)))
        how="ulimit -f $free"
        fx_start "$log" bash -c 'ulimit -f "$1"; shift; exec "$@"' ulimit "$free" \
            dm-migrate -q --workdir "$d/wd" "${margs[@]}"
        { wait "$FX_SID"; } 2>/dev/null
        rc=$?
    fi
    KIND_N[workdir]=$((${KIND_N[workdir]:-0} + 1))
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    if ((rc == 0)); then
        fx_equal fx_src fx_k || bad+="exit 0 with the work directory on a full disk, but: $FX_DIFF; "
        fx_note "workdir: runs that had enough room (exit 0, equal)"
    else
        # Why: some line must say it (the driver's own message, at least).
        if ! grep -qiE 'no space left|file size limit|signal 25|cannot write|failed' "$log"; then
            bad+="exit $rc without saying why: $(tail -n 3 "$log" | tr '\n' ' '); "
        fi
        grep -qi 'no space left\|file size\|signal 25' "$log" && fx_note "workdir: the cause named (ENOSPC/SIGXFSZ)" ||
            fx_note "workdir: failed without naming the full disk: $(tail -n 1 "$log" | cut -c1-160)"
        out=$(fx_triggers_on fx_k) || bad+="$out; "
        fx_migrate "$d/rerun.log" "${margs[@]}" || bad+="the rerun with a normal work directory exited $?: $(fx_failed_msg "$d/rerun.log"); "
        fx_equal fx_src fx_k || bad+="after the rerun: $FX_DIFF; "
        out=$(fx_dest_sane fx_k) || bad+="$out; "
    fi
    fx_log "workdir #$n ($mode, $how): exit $rc"
    if [[ -n "$bad" ]]; then
        fx_fail "diskfull workdir #$n ($mode, $how, exit $rc): $bad(logs: $d)"
    else
        rm -rf -- "$d"
    fi
}

# write_full WHAT OUTFILE CMD...: CMD > OUTFILE where OUTFILE is on the full disk (tmpfs
# with little room, or ulimit -f). Sets RC, and ERRF (its stderr).
write_full() {
    local what=$1 out=$2
    shift 2
    ERRF=$W/err.$what
    if [[ "$out" == "$MNT"/* ]]; then
        "$@" >"$out" 2>"$ERRF"
    else
        # (the inner shell's own "File size limit exceeded" goes to /dev/null)
        bash -c 'ulimit -f 16; e=$1; shift; "$@" 2>"$e"' ulimit "$ERRF" "$@" >"$out" 2>/dev/null
    fi
    RC=$?
}

trial_files() {
    local n=$1 where bad="" what cmd
    fx_createdb dst fx_f fx_empty_tpl && fx_use fx_src fx_f || return
    if ((TMPFS && n % 2 == 0)); then
        fill "$((4 * $(fx_rand 1 16)))"
        where=$MNT/d
    else
        where=$W/ulimit
        mkdir -p "$where"
    fi
    for what in extract hashes diff cat; do
        case "$what" in
            extract) cmd=(dm-extract --db-env DM_SOURCE --table fx.order_line) ;;
            hashes) cmd=(dm-extract --db-env DM_SOURCE --table fx.order_line --hashes) ;;
            diff) cmd=(dm-diff "$W/ol.rows" "$W/empty.hashes") ;;
            cat) cmd=(dm-cat "$W/ol.rows") ;;
        esac
        rm -f -- "$where/$what.out"
        write_full "$what" "$where/$what.out" "${cmd[@]}"
        KIND_N[files]=$((${KIND_N[files]:-0} + 1))
        FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
        if ((RC == 0)); then
            bad+="$what to a full disk ($where) exited 0; "
        elif ((RC == 128 + 25)); then
            fx_note "files: killed by SIGXFSZ under ulimit -f (exit 153, no message of its own)"
        else
            one_line "$ERRF" "${cmd[0]}" || bad+="$what: not one line on stderr: $(head -c 300 "$ERRF" | tr '\n' '|'); "
            grep -qi 'no space left\|too large' "$ERRF" || bad+="$what: the error does not name the cause: $(head -c 200 "$ERRF"); "
        fi
        # The partial rows stream, loaded: refused, at a batch boundary.
        if [[ "$what" == extract && -s "$where/$what.out" ]]; then
            DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.customer -q "$W/c.rows" 2>/dev/null
            DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.orders -q "$W/o.rows" 2>/dev/null
            DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.order_line --batch-rows 1000 --no-bulk -q \
                "$where/$what.out" 2>"$W/err.load"
            local lrc=$?
            ((lrc == 3)) || bad+="the partial stream from a full disk loaded with exit $lrc, not 3: $(head -c 200 "$W/err.load"); "
            local out
            out=$(landed_prefix fx_f) || bad+="the partial stream from a full disk: $out; "
        fi
    done
    if [[ -n "$bad" ]]; then
        fx_fail "diskfull files #$n ($where): $bad"
    fi
    fx_log "files #$n ($where): done"
}

# landed_prefix DSTDB: the rows of fx.order_line in DSTDB are exactly the source's first
# N rows in key order (what a load cut short commits: whole batches of a stream ordered
# by key), N a multiple of 1000 (the batch size); N may be 0. The loads it judges use
# --no-bulk: a bulk load of the empty table is one transaction, and a cut one leaves no
# row at all. Compared through psql COPY, no dm code; every query's own success is
# checked first. On failure, says why; FX_PREFIX_LOG, if set, gets N.
landed_prefix() {
    local db=$1 n q
    n=$(fx_psql dst "$db" "SELECT count(*) FROM fx.order_line") || { echo "cannot count fx.order_line"; return 1; }
    [[ "$n" =~ ^[0-9]+$ ]] || { echo "fx.order_line's count is '$n'"; return 1; }
    ((n % 1000 == 0)) || { echo "$n rows landed: not a batch boundary"; return 1; }
    [[ -n "${FX_PREFIX_LOG:-}" ]] && echo "$n" >>"$FX_PREFIX_LOG"
    q="COPY (SELECT * FROM fx.order_line ORDER BY order_id, line_no LIMIT $n) TO STDOUT;"
    printf '%s\n%s\n' "$DM_FIXED_SETTINGS" "$q" | fx_psql src fx_src >"$W/prefix.src" ||
        { echo "cannot read the source's rows"; return 1; }
    printf '%s\n%s\n' "$DM_FIXED_SETTINGS" "$q" | fx_psql dst "$db" >"$W/prefix.dst" ||
        { echo "cannot read the landed rows"; return 1; }
    cmp -s "$W/prefix.src" "$W/prefix.dst" ||
        { echo "the $n rows that landed are not the source's first $n: $(diff "$W/prefix.src" "$W/prefix.dst" | head -n 3 | cut -c1-150 | tr '\n' '|')"; return 1; }
}

trial_tee() {
    local n=$1 where bad="" st rc_x rc_t rc_l c
    fx_createdb dst fx_f fx_empty_tpl && fx_use fx_src fx_f || return
    DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.customer -q "$W/c.rows" &&
        DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.orders -q "$W/o.rows" || { fx_fail "tee: parents"; return; }
    if ((TMPFS && n % 2 == 0)); then
        fill "$((4 * $(fx_rand 1 16)))"
        where="tmpfs"
        dm-extract --db-env DM_SOURCE --table fx.order_line 2>"$W/err.x" |
            tee "$MNT/d/tee.rows" 2>"$W/err.t" |
            dm-load --db-env DM_DEST --table fx.order_line --batch-rows 1000 --no-bulk -q 2>"$W/err.l"
        st=("${PIPESTATUS[@]}")
    else
        where="ulimit -f"
        dm-extract --db-env DM_SOURCE --table fx.order_line 2>"$W/err.x" |
            bash -c 'ulimit -f 16; tee "$1" 2>"$2"' ulimit "$W/tee.rows" "$W/err.t" 2>/dev/null |
            dm-load --db-env DM_DEST --table fx.order_line --batch-rows 1000 --no-bulk -q 2>"$W/err.l"
        st=("${PIPESTATUS[@]}")
    fi
    rc_x=${st[0]} rc_t=${st[1]} rc_l=${st[2]}
    KIND_N[tee]=$((${KIND_N[tee]:-0} + 1))
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    ((rc_t != 0)) || bad+="tee to a full disk exited 0; "
    if ((rc_l == 0)); then
        fx_equal fx_src fx_f '^fx\.order_line$' || bad+="dm-load exited 0 but: $FX_DIFF; "
        fx_note "tee: tee went on to dm-load after its file filled (GNU tee): load complete"
    else
        ((rc_l == 3)) || bad+="dm-load exited $rc_l, not 3: $(head -c 200 "$W/err.l"); "
        c=$(landed_prefix fx_f) || bad+="after the cut stream: $c; "
        ((rc_x != 0)) || bad+="dm-extract exited 0 although its reader died; "
        fx_note "tee: tee died (SIGXFSZ), dm-load saw a cut stream: exit 3 at a batch boundary"
    fi
    [[ -n "$bad" ]] && fx_fail "diskfull tee #$n ($where; exits ${st[*]}): $bad"
    fx_log "tee #$n ($where): exits ${st[*]}"
}

trial_rejects() {
    local n=$1 where rc bad="" ck
    fx_createdb dst fx_f fx_empty_tpl && fx_use fx_src fx_f || return
    # The destination refuses the categories whose label ends in 7 (and, row by row, the
    # children of refused ones).
    fx_psql dst fx_f "ALTER TABLE fx.category ADD CHECK (label NOT LIKE '%7')" >/dev/null
    if ((TMPFS && n % 2 == 0)); then
        fill 0
        where=$MNT/d/category.rejects
    else
        where=$W/category.rejects
        rm -f -- "$where"
    fi
    if [[ "$where" == "$MNT"/* ]]; then
        DM_DEST=$(fx_ci dst fx_f) timeout 120 dm-load --db-env DM_DEST --table fx.category --batch-rows 50 \
            --rejects "$where" -q "$W/cat.rows" 2>"$W/err.r"
    else
        DM_DEST=$(fx_ci dst fx_f) bash -c 'ulimit -f 0; e=$1; shift; "$@" 2>"$e"' ulimit "$W/err.r" \
            timeout 120 dm-load --db-env DM_DEST --table fx.category --batch-rows 50 --rejects "$where" -q "$W/cat.rows" \
            2>/dev/null
    fi
    rc=$?
    KIND_N[rejects]=$((${KIND_N[rejects]:-0} + 1))
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    ((rc != 0 && rc != 5)) || bad+="dm-load --rejects on a full disk exited $rc: the refused rows are lost; "
    if ((rc != 128 + 25)); then
        grep -qi 'no space left\|too large\|cannot write' "$W/err.r" || bad+="the error does not name the cause: $(tail -n 2 "$W/err.r" | tr '\n' '|'); "
    fi
    # The query's own success first: a failed query would print nothing, unlike "true".
    if ck=$(fx_psql dst fx_f "SELECT coalesce(bool_or(complete)::text, 'none') FROM dm.checkpoint WHERE entity = 'fx.category'" 2>&1); then
        [[ "$ck" == false || "$ck" == none ]] || bad+="the checkpoint is complete although refused rows were not saved ($ck); "
    else
        bad+="cannot read dm.checkpoint: $ck; "
    fi
    [[ -n "$bad" ]] && fx_fail "diskfull rejects #$n ($where, exit $rc): $bad stderr: $(head -n 3 "$W/err.r" | tr '\n' '|')"
    fx_log "rejects #$n ($where): exit $rc: $(tail -n 1 "$W/err.r")"
}

trial_pipe() {
    local n=$1 what bad="" cut st cmd c
    fx_use fx_src fx_f
    for what in extract hashes diff cat; do
        case "$what" in
            extract) cmd=(dm-extract --db-env DM_SOURCE --table fx.order_line) ;;
            hashes) cmd=(dm-extract --db-env DM_SOURCE --table fx.order_line --hashes) ;;
            diff) cmd=(dm-diff "$W/ol.rows" "$W/empty.hashes") ;;
            cat) cmd=(dm-cat "$W/ol.rows") ;;
        esac
        cut=$(fx_rand 0 100000)
        timeout 60 "${cmd[@]}" 2>"$W/err.p" | head -c "$cut" >/dev/null
        st=("${PIPESTATUS[@]}")
        KIND_N[pipe]=$((${KIND_N[pipe]:-0} + 1))
        FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
        if [[ "$what" == cat ]] && ((st[0] == 128 + 13)); then
            # A viewer killed by SIGPIPE, as cat(1) is: what `dm-cat FILE | head` expects.
            fx_note "pipe: dm-cat | head ends by SIGPIPE (exit 141), silently, like cat(1)"
        elif ((st[0] == 0)); then
            bad+="$what | head -c $cut: exit 0; "
        elif ((st[0] == 124)); then
            bad+="$what | head -c $cut: hung (killed after 60 s); "
        else
            one_line "$W/err.p" "${cmd[0]}" || bad+="$what | head -c $cut: not one line on stderr (exit ${st[0]}): $(head -c 300 "$W/err.p" | tr '\n' '|'); "
            grep -qi 'pipe' "$W/err.p" || bad+="$what | head -c $cut: the message does not say the pipe closed: $(head -c 200 "$W/err.p"); "
        fi
        fx_log "pipe #$n: $what | head -c $cut: exit ${st[0]}: $(head -n 1 "$W/err.p")"
    done
    # A load whose input pipe is cut.
    fx_createdb dst fx_f fx_empty_tpl && fx_use fx_src fx_f || return
    DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.customer -q "$W/c.rows" &&
        DM_DEST=$(fx_ci dst fx_f) dm-load --db-env DM_DEST --table fx.orders -q "$W/o.rows" || { fx_fail "pipe: parents"; return; }
    cut=$(fx_rand 0 "$(stat -c %s "$W/ol.rows")")
    dm-extract --db-env DM_SOURCE --table fx.order_line 2>"$W/err.x" | head -c "$cut" |
        dm-load --db-env DM_DEST --table fx.order_line --batch-rows 1000 --no-bulk -q 2>"$W/err.l"
    st=("${PIPESTATUS[@]}")
    KIND_N[pipe]=$((${KIND_N[pipe]:-0} + 1))
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    ((st[2] == 3)) || bad+="dm-extract | head -c $cut | dm-load: dm-load exited ${st[2]}, not 3; "
    one_line "$W/err.l" dm-load || bad+="dm-load: not one line: $(head -c 300 "$W/err.l" | tr '\n' '|'); "
    c=$(landed_prefix fx_f) || bad+="after dm-extract | head -c $cut | dm-load: $c; "
    [[ -n "$bad" ]] && fx_fail "diskfull pipe #$n: $bad"
}

fx_say "disk full and closed pipes: $FX_TRIALS trial(s) of each (seed $FX_SEED)"
fx_calibrate delete
fx_use fx_src fx_src
dm-extract --db-env DM_SOURCE --table fx.customer >"$W/c.rows" &&
    dm-extract --db-env DM_SOURCE --table fx.orders >"$W/o.rows" &&
    dm-extract --db-env DM_SOURCE --table fx.order_line >"$W/ol.rows" &&
    dm-extract --db-env DM_SOURCE --table fx.category >"$W/cat.rows" || fx_die "dm-extract failed"
fx_createdb dst fx_f fx_empty_tpl
DM_DEST=$(fx_ci dst fx_f) dm-extract --db-env DM_DEST --table fx.order_line --hashes >"$W/empty.hashes" ||
    fx_die "dm-extract --hashes failed"
for ((i = 0; i < FX_TRIALS; i++)); do
    trial_workdir "$i"
    trial_files "$i"
    trial_tee "$i"
    trial_rejects "$i"
    trial_pipe "$i"
done
note=""
for k in workdir files tee rejects pipe; do note+="$k ${KIND_N[$k]:-0}, "; done
fx_note "${note%, }"
cleanup_mount
fx_result "disk full, closed pipes"
((FX_FAILS == 0))
