#!/usr/bin/env bash
# tests/faults/streams.sh - bad streams into dm-load (and dm-diff): truncated, corrupted,
# wrong version, another table's header, rows of the wrong width, keys out of order or
# repeated, glued or empty streams.
#
#   tests/faults/streams.sh [--trials N] [--seed N] [-v]
#
# The streams are made without any generator of our own: dm-extract and dm-diff write
# valid ones from crafted tables, then dd/printf/head cut, patch and splice their bytes
# (a table of 3-digit ids and 8-character values has rows of exactly 14 bytes, so rows
# can be moved by offset).
#
# Every bad stream must give exit status 3 (1 when the server refuses a damaged value),
# exactly one line on standard error (dm-load -q prints nothing else), and leave the
# table at a batch boundary. A stream carries a sync point (a checksum of everything so
# far) after every 1000th row (dm-stream(5)), and dm-load ends a transaction only at a
# verified sync point or at the trailer, never before --batch-rows rows: with
# --batch-rows 25, the rows committed are those up to a multiple of 1000. The table bs.t
# starts from a known state (a drifted copy of the source), the stream is dm-diff
# --delete's changes (inserts, updates, deletes in key order; over 2000 of them);
# afterwards each key is in its initial or its final state (a damaged value is never
# committed), the changes applied are exactly the non-delete changes of the first k*1000
# messages, no delete is ever applied, and the checkpoint is neither complete nor given
# a watermark. Then a fresh comparison (dm-diff --delete | dm-load) must bring bs.t to
# the source's content (psql COPY comparison). bs.victim, a table of the same shape,
# must never change.
#
# A damaged source stream is also fed through dm-diff --delete into dm-load: the same
# checks, except that the changes applied need only be a prefix without gap (dm-diff's
# output, hence its sync points, differ from the good changes stream's).
#
# Trials: N*10 truncations, N*15 corruptions (1 to 3 random bytes flipped at random
# offsets), N*2 truncated or corrupted inputs of dm-diff, N deferred-delete cases, and
# each crafted case once (FX_QUICK=1: N*4, N*6, N and 1).

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fx_parse_common "$@"
fx_script_init

B=25          # --batch-rows of every load
SYNC=1000     # a sync point after every 1000th row (dm-stream(5))
G=$(( (B + SYNC - 1) / SYNC * SYNC ))   # what a batch commits: a multiple of this
W=$FX_WORK/streams
mkdir -p "$W"
declare -A KIND_N=() KIND_EXIT=() COMMITS=()
LANDED=0

# ---------------------------------------------------------------- the tables

setup() {
    fx_createdb src bs_src && fx_createdb src bs_src3 && fx_createdb dst bs_dst || return 1
    fx_psql src bs_src >/dev/null <<'SQL' || return 1
CREATE SCHEMA bs;
CREATE TABLE bs.t (id integer PRIMARY KEY, v text, b bytea, updated_at timestamptz NOT NULL);
INSERT INTO bs.t SELECT g, 'value ' || g || repeat('x', g % 40),
    CASE WHEN g % 6 = 0 THEN NULL ELSE decode(md5(g::text), 'hex') END,
    timestamptz '2021-01-01' + g * interval '1 minute'
FROM generate_series(1, 6000) g WHERE g % 22 <> 3;
CREATE TABLE bs.victim (id integer PRIMARY KEY, v text, b bytea, updated_at timestamptz NOT NULL);
INSERT INTO bs.victim SELECT * FROM bs.t WHERE id < 300;
-- rows of exactly 14 bytes: fixarray(2), fixstr(3) id, fixstr(8) value
CREATE TABLE bs.f (id integer PRIMARY KEY, v text);
INSERT INTO bs.f SELECT g, 'abcdefgh' FROM generate_series(100, 399) g;
-- text keys of 2 bytes, rows of 7 bytes: C order puts 'Bb' before 'aa'
CREATE TABLE bs.k (k text PRIMARY KEY, v text);
INSERT INTO bs.k VALUES ('Aa', 'x'), ('Bb', 'x'), ('aa', 'x'), ('bb', 'x');
SQL
    # the same table with a third column: rows of exactly 16 bytes
    fx_psql src bs_src3 >/dev/null <<'SQL' || return 1
CREATE SCHEMA bs;
CREATE TABLE bs.f (id integer PRIMARY KEY, v text, w text);
INSERT INTO bs.f SELECT g, 'abcdefgh', 'w' FROM generate_series(100, 399) g;
SQL
    fx_psql dst bs_dst >/dev/null <<'SQL' || return 1
CREATE SCHEMA bs;
CREATE TABLE bs.t (id integer PRIMARY KEY, v text, b bytea, updated_at timestamptz NOT NULL);
CREATE TABLE bs.victim (id integer PRIMARY KEY, v text, b bytea, updated_at timestamptz NOT NULL);
CREATE TABLE bs.f (id integer PRIMARY KEY, v text, w text);
CREATE TABLE bs.k (k text PRIMARY KEY, v text);
CREATE TABLE bs.t_init (LIKE bs.t);
CREATE TABLE bs.victim_init (LIKE bs.victim);
SQL
    # bs.t starts drifted: 1/7 of the rows missing (inserts), 1/5 changed (updates), and
    # the ids the source lacks present (deletes, about 5% of the table).
    dm_dump_src "COPY bs.t TO STDOUT" | fx_psql dst bs_dst "COPY bs.t_init FROM STDIN" || return 1
    dm_dump_src "COPY bs.victim TO STDOUT" | fx_psql dst bs_dst "COPY bs.victim_init FROM STDIN" || return 1
    fx_psql dst bs_dst >/dev/null <<'SQL' || return 1
DELETE FROM bs.t_init WHERE id % 7 = 0;
UPDATE bs.t_init SET v = 'old ' || id, updated_at = updated_at - interval '1 day' WHERE id % 5 = 1;
INSERT INTO bs.t_init SELECT g, 'only in the destination', NULL, now() FROM generate_series(1, 6000) g WHERE g % 22 = 3;
UPDATE bs.victim_init SET v = 'victim ' || v;
SQL
    reset_dest || return 1
    fx_use bs_src bs_dst
    # The good streams.
    dm-diff --delete -q <(dm-extract --db-env DM_SOURCE --table bs.t) \
        <(dm-extract --db-env DM_DEST --table bs.t --hashes) >"$W/t.changes" || return 1
    dm-extract --db-env DM_SOURCE --table bs.t >"$W/t.rows" || return 1
    dm-extract --db-env DM_SOURCE --table bs.victim >"$W/victim.rows" || return 1
    dm-extract --db-env DM_SOURCE --table bs.f >"$W/f2.rows" || return 1
    DM_SOURCE=$(fx_ci src bs_src3) dm-extract --db-env DM_SOURCE --table bs.f >"$W/f3.rows" || return 1
    dm-extract --db-env DM_SOURCE --table bs.k >"$W/k.rows" || return 1
    # What the good changes stream holds, in order (for the batch-boundary check):
    # "id op", op i(nsert) u(pdate) d(elete); the comparison of the two sides decides
    # it, not dm's code.
    dump t_init >"$W/init.tsv" && dm_dump_src "COPY (SELECT id, v, b, updated_at FROM bs.t) TO STDOUT" |
        LC_ALL=C sort -t $'\t' -k1,1n >"$W/src.tsv" || return 1
    awk -F'\t' 'FILENAME == ARGV[1] { I[$1] = $0; next } { S[$1] = $0 }
        END { for (k in I) if (!(k in S)) print k, "d"; else if (I[k] != S[k]) print k, "u"
              for (k in S) if (!(k in I)) print k, "i" }' "$W/init.tsv" "$W/src.tsv" | sort -k1,1n >"$W/messages"
    local n
    n=$(wc -l <"$W/messages")
    fx_say "changes stream: $(stat -c %s "$W/t.changes") bytes, $n messages ($(grep -c ' i$' "$W/messages") inserts, $(grep -c ' u$' "$W/messages") updates, $(grep -c ' d$' "$W/messages") deletes), --batch-rows $B: commits every $G"
    [[ "$(dm-cat "$W/t.changes" | grep -c '^{"op"')" == "$n" ]] || { echo "the changes stream does not hold $n messages"; return 1; }
}

dm_dump_src() { fx_psql src bs_src "$1"; }

# dump TABLE: bs.TABLE of the destination as "id<TAB>v<TAB>b<TAB>updated_at", by id.
dump() {
    fx_psql dst bs_dst "COPY (SELECT id, v, b, updated_at FROM bs.$1) TO STDOUT" | LC_ALL=C sort -t $'\t' -k1,1n
}

# reset_dest: bs.t back to its initial state, the other tables empty, no dm state.
reset_dest() {
    fx_psql dst bs_dst "BEGIN; TRUNCATE bs.t, bs.victim, bs.f, bs.k;
        INSERT INTO bs.t SELECT * FROM bs.t_init; INSERT INTO bs.victim SELECT * FROM bs.victim_init;
        DO \$\$ BEGIN IF to_regclass('dm.checkpoint') IS NOT NULL THEN
            DELETE FROM dm.checkpoint; DELETE FROM dm.pending_delete; DELETE FROM dm.lease; END IF; END \$\$;
        COMMIT" >/dev/null
}

# ---------------------------------------------------------------- checks

# load FILE [TABLE] [OPTIONS...]: dm-load -q FILE into bs_dst; sets RC and ERR (stderr).
load() {
    local f=$1 t=${2:-bs.t}
    shift 2 2>/dev/null || shift $#
    DM_DEST=$(fx_ci dst bs_dst) timeout -k 5 120 dm-load --db-env DM_DEST --table "$t" --batch-rows "$B" -q "$@" "$f" \
        >/dev/null 2>"$W/err"
    RC=$?
    ERR=$(<"$W/err")
}

# one_line PROG: the error output is one line, "PROG: ...".
one_line() {
    local n
    n=$(grep -c '' <<<"$ERR")
    [[ -n "$ERR" && "$n" == 1 && "$ERR" == "$1: "* ]]
}

# boundary: check bs.t after a failed load of (part of) the changes stream. Echoes
# what is wrong; sets APPLIED (messages committed) and OTHER (rows in neither state).
boundary() {
    dump t >"$W/now.tsv"
    awk -F'\t' -v B="$G" -v msgs="$W/messages" -v init="$W/init.tsv" -v src="$W/src.tsv" '
        FILENAME == init { I[$1] = $0; next }
        FILENAME == src { S[$1] = $0; next }
        { N[$1] = $0 }
        END {
            n = 0
            while ((getline line < msgs) > 0) { split(line, a, " "); n++; id[n] = a[1]; op[n] = a[2] }
            for (k in N) if (!(k in I) && !(k in S)) other++
            for (k in I) if (!(k in N) && (k in S)) { } # a missing row that should exist: judged below
            first_no = n + 1; last_yes = 0
            for (i = 1; i <= n; i++) {
                k = id[i]
                now = (k in N) ? N[k] : "MISSING"
                was = (k in I) ? I[k] : "MISSING"
                will = (k in S) ? S[k] : "MISSING"
                if (now == was) st = "init"; else if (now == will) st = "final"; else { st = "other"; other++ }
                if (op[i] == "d") { if (st != "init") deleted++; continue }
                if (st == "final") { last_yes = i; applied++ }
                else if (st == "init" && i < first_no) first_no = i
            }
            # rows outside the stream must not have changed either
            for (k in N) if ((k in I) && (k in S) && I[k] == S[k] && N[k] != I[k]) other++
            for (k in I) if ((k in S) && I[k] == S[k] && !(k in N)) other++
            ok = 0; c = -1
            if (last_yes < first_no) {
                # committed = a multiple of B in [last_yes, first_no - 1]
                lo = last_yes; hi = first_no - 1
                c = int((lo + B - 1) / B) * B
                if (c <= hi) ok = 1
                if (hi >= n) { ok = 1; if (c > n) c = n }   # all but the trailer
            }
            printf "%d %d %d %d %d %d %d\n", ok, applied + 0, deleted + 0, other + 0, last_yes, first_no, c
        }' "$W/init.tsv" "$W/src.tsv" "$W/now.tsv"
}

# check_failed KIND WHAT: the common checks after a bad stream was loaded into bs.t
# (RC/ERR set by load). Returns the problems in BAD.
check_failed() {
    local kind=$1 what=$2 res ok applied deleted other ck commit
    BAD=""
    KIND_N[$kind]=$((${KIND_N[$kind]:-0} + 1))
    KIND_EXIT[$kind]+="$RC "
    if ((RC == 0)) && [[ "$kind" == corrupted ]]; then
        # A damage that changed nothing the stream means (a byte of a map key the
        # reader ignores, say) may load: then it must have loaded everything.
        fx_equal bs_src bs_dst '^bs\.t$' || BAD+="exit 0 but bs.t differs from the source: $FX_DIFF; "
        fx_note "$kind: a damaged stream loaded whole and right (harmless damage)"
        return
    fi
    ((RC == 3 || RC == 1)) || BAD+="exit $RC (expected 3, or 1); "
    one_line dm-load || BAD+="not one line on stderr: $(head -c 400 <<<"$ERR" | tr '\n' '|'); "
    local last_yes first_no
    read -r ok applied deleted other last_yes first_no commit <<<"$(boundary)"
    # Through dm-diff, a damaged source changes which messages dm-diff writes (a damaged
    # key turns the destination's next keys into deletes, say): its commits are at its own
    # sync points, not ours. There the changes applied must only be a prefix, no gap.
    if [[ "$kind" == diff ]] && ((last_yes < first_no)); then ok=1; fi
    ((ok == 1 && other == 0)) && COMMITS[$commit]=$((${COMMITS[$commit]:-0} + 1))
    ((deleted == 0)) || BAD+="$deleted delete(s) applied from an incomplete stream; "
    if ((other > 0)); then
        LANDED=$((LANDED + 1))
        BAD+="$other row(s) in neither their initial nor their final state: a damaged value was committed; "
        echo "$what: $other row(s) in neither state; $ERR" >>"$W/landed.txt"
    elif ((ok != 1)); then
        BAD+="not at a commit boundary (last change applied, first not applied: $(boundary | cut -d' ' -f5,6)); "
    fi
    ck=$(fx_psql dst bs_dst "SELECT coalesce(bool_or(complete)::text, 'none') || '/' || coalesce(max(watermark), '-')
        FROM dm.checkpoint WHERE entity = 'bs.t'" 2>/dev/null)
    [[ -z "$ck" || "$ck" == none/- || "$ck" == false/- ]] || BAD+="checkpoint after a failed load: $ck; "
    [[ "$(dump victim | md5sum)" == "$VICTIM_SUM" ]] || BAD+="bs.victim changed; "
}

# converge KIND: the same load from fresh streams (a full comparison, as dm-migrate
# --full --delete runs it) brings bs.t to the source's rows.
converge() {
    fx_use bs_src bs_dst
    dm-diff --delete -q <(dm-extract --db-env DM_SOURCE --table bs.t) \
        <(dm-extract --db-env DM_DEST --table bs.t --hashes) >"$W/fresh.changes" 2>"$W/err" ||
        BAD+="dm-diff of fresh streams failed: $(<"$W/err"); "
    local rc0=$RC err0=$ERR
    load "$W/fresh.changes" bs.t
    ((RC == 0)) || BAD+="loading a fresh comparison then failed (exit $RC): $ERR; "
    fx_equal bs_src bs_dst '^bs\.t$' || BAD+="after a fresh comparison: $FX_DIFF; "
    RC=$rc0 ERR=$err0
}

verdict() { # verdict KIND WHAT
    FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1))
    if [[ -n "$BAD" ]]; then
        fx_fail "streams $1 ($2): ${BAD}stderr: $(head -n 3 <<<"$ERR" | tr '\n' '|')"
    fi
    fx_log "$1 ($2): exit $RC: $ERR"
}

# ---------------------------------------------------------------- byte surgery

size() { stat -c %s "$1"; }

# flip FILE OFFSET XOR: xor the byte at OFFSET with XOR (1..255), in place.
flip() {
    local old new
    old=$(od -An -v -tu1 -j "$2" -N 1 "$1" | tr -d ' ')
    new=$((old ^ $3))
    printf "\\$(printf '%03o' "$new")" | dd of="$1" bs=1 seek="$2" count=1 conv=notrunc status=none
}

# offset_of FILE STRING: byte offset of the first STRING in FILE.
offset_of() { LC_ALL=C grep -obUa -m 1 -- "$2" "$1" | head -n 1 | cut -d: -f1; }

# split FILE ROWLEN NROWS: FILE.head, FILE.body (NROWS rows of ROWLEN bytes), FILE.tail.
# The header ends after its last key, change_column, and its value (nil here).
split() {
    local f=$1 r=$2 n=$3 h
    h=$(($(offset_of "$f" change_column) + 13))
    [[ "$(od -An -tx1 -j "$h" -N 1 "$f" | tr -d ' ')" == c0 ]] || { echo "split: unexpected header in $f" >&2; return 1; }
    h=$((h + 1))
    head -c "$h" "$f" >"$f.head"
    tail -c +$((h + 1)) "$f" | head -c $((r * n)) >"$f.body"
    tail -c +$((h + r * n + 1)) "$f" >"$f.tail"
    [[ "$(od -An -tx1 -N 1 "$f.tail" | tr -d ' ')" == 84 ]] || { echo "split: no trailer after $n rows in $f" >&2; return 1; }
}

# row FILE.body ROWLEN I: the I-th row (from 0).
row() { dd if="$1" bs="$2" skip="$3" count=1 status=none; }
rows() { dd if="$1" bs="$2" skip="$3" count="$4" status=none; }   # FILE ROWLEN FROM COUNT

# ---------------------------------------------------------------- trials

trial_truncate() {
    local n=$1 f=$W/cut cut
    cut=$(fx_rand 0 $(($(size "$W/t.changes") - 1)))
    head -c "$cut" "$W/t.changes" >"$f"
    reset_dest
    load "$f" bs.t
    check_failed truncated "cut at byte $cut"
    ((RC == 3)) || BAD+="a truncated stream must give exit 3, not $RC; "
    [[ "$ERR" == *"truncated"* || "$ERR" == *"invalid stream"* ]] || BAD+="the message does not say the stream is invalid; "
    converge truncated
    verdict truncated "cut at byte $cut of $(size "$W/t.changes")"
}

trial_corrupt() {
    local n=$1 f=$W/bad k nflip off x where=""
    cp "$W/t.changes" "$f"
    nflip=$(fx_rand 1 3)
    for ((k = 0; k < nflip; k++)); do
        off=$(fx_rand 0 $(($(size "$f") - 1)))
        x=$(fx_rand 1 255)
        flip "$f" "$off" "$x"
        where+="$off^$x "
    done
    cmp -s "$f" "$W/t.changes" && return   # flipped back: nothing to test
    reset_dest
    load "$f" bs.t
    check_failed corrupted "bytes ${where% }"
    converge corrupted
    verdict corrupted "bytes ${where% }"
}

# dm-diff fed a damaged source stream: no trailer out, so dm-load applies no delete.
trial_diff() {
    local n=$1 f=$W/src-bad cut out
    if ((n % 2)); then
        cp "$W/t.rows" "$f"
        cut="flip at $(fx_rand 0 $(($(size "$f") - 1)))"
        flip "$f" "${cut#flip at }" "$(fx_rand 1 255)"
    else
        cut="cut at $(fx_rand 0 $(($(size "$W/t.rows") - 1)))"
        head -c "${cut#cut at }" "$W/t.rows" >"$f"
    fi
    reset_dest
    fx_use bs_src bs_dst
    dm-diff --delete -q "$f" <(dm-extract --db-env DM_DEST --table bs.t --hashes) >"$W/diff.out" 2>"$W/diff.err"
    local drc=$?
    load "$W/diff.out" bs.t
    check_failed diff "source stream $cut; dm-diff exit $drc"
    ((drc == 3 || drc == 1)) || BAD+="dm-diff exited $drc on a damaged source stream; "
    ERR2=$(<"$W/diff.err")
    [[ "$(grep -c '' <<<"$ERR2")" == 1 ]] || BAD+="dm-diff printed not one line: $(tr '\n' '|' <<<"$ERR2"); "
    converge diff
    verdict diff "source stream $cut, dm-diff exit $drc"
}

crafted() {
    local f n h
    # wrong version
    f=$W/version
    cp "$W/t.changes" "$f"
    h=$(($(offset_of "$f" version) + 7))
    flip "$f" "$h" 3   # 1 -> 2
    reset_dest; load "$f" bs.t; check_failed version "version 2"
    [[ "$ERR" == *"version"* ]] || BAD+="the message does not name the version; "
    [[ "$(dump t | md5sum)" == "$INIT_SUM" ]] || BAD+="rows were applied; "
    converge version; verdict crafted "format version 2"

    # not a dm stream: dm = "strean"
    f=$W/magic
    cp "$W/t.changes" "$f"
    flip "$f" $(($(offset_of "$f" stream) + 5)) 3
    reset_dest; load "$f" bs.t; check_failed magic "dm=strean"
    [[ "$(dump t | md5sum)" == "$INIT_SUM" ]] || BAD+="rows were applied; "
    converge magic; verdict crafted "dm = strean"

    # a stream of another table (same columns): refused, whichever way round
    reset_dest; load "$W/victim.rows" bs.t; check_failed other-table "victim's rows into bs.t"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    [[ "$ERR" == *"bs.victim"* ]] || BAD+="the message does not name the stream's table; "
    [[ "$(dump t | md5sum)" == "$INIT_SUM" ]] || BAD+="rows were applied to bs.t; "
    converge other-table; verdict crafted "bs.victim's stream loaded with --table bs.t"
    reset_dest; load "$W/t.changes" bs.victim; check_failed other-table "t's changes into bs.victim"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    converge other-table; verdict crafted "bs.t's changes loaded with --table bs.victim"

    # a hashes stream cannot be loaded
    fx_use bs_src bs_dst
    dm-extract --db-env DM_SOURCE --table bs.t --hashes >"$W/t.hashes"
    reset_dest; load "$W/t.hashes" bs.t; check_failed hashes "hashes stream"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    converge hashes; verdict crafted "a hashes stream"

    # empty input; a stream with garbage after its trailer; two streams glued
    : >"$W/empty"
    reset_dest; load "$W/empty" bs.t; check_failed empty "empty"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    converge empty; verdict crafted "empty input"
    { cat "$W/t.changes"; printf 'x'; } >"$W/tailgarbage"
    reset_dest; load "$W/tailgarbage" bs.t; check_failed glued "one byte after the trailer"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    converge glued; verdict crafted "a byte after the trailer"
    cat "$W/t.changes" "$W/t.changes" >"$W/glued"
    reset_dest; load "$W/glued" bs.t; check_failed glued "two streams glued"
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    converge glued; verdict crafted "two streams glued together"

    # A value damaged upstream of dm-diff, in the source's rows stream: dm-diff
    # re-encodes it into its changes stream, which has sync points of its own; it must
    # not vouch for rows it has not verified, so dm-load must not commit the value. Row
    # 2500 is unchanged in the destination (so it becomes an update), comes after the
    # source's sync point at its 2000th row and before dm-diff's first (1000th change).
    local off victim=2500
    cp "$W/t.rows" "$W/src-damaged"
    off=$(offset_of "$W/src-damaged" "value ${victim}x")
    flip "$W/src-damaged" $((off + 2)) 32   # 'l' -> 'L'
    reset_dest
    fx_use bs_src bs_dst
    dm-diff --delete -q "$W/src-damaged" <(dm-extract --db-env DM_DEST --table bs.t --hashes) \
        >"$W/diff.out" 2>"$W/diff.err"
    local drc=$?
    load "$W/diff.out" bs.t
    check_failed diff "the source's row $victim damaged, through dm-diff"
    ((drc == 3)) || BAD+="dm-diff exited $drc on a damaged source stream; "
    converge diff
    verdict crafted "a value of the source's rows stream damaged, through dm-diff --delete into dm-load"

    # Rows of fixed width, moved by offset: 300 rows of 14 bytes (bs.f: id, v) and of 16
    # bytes (bs_src3's bs.f: id, v, w).
    split "$W/f2.rows" 14 300 && split "$W/f3.rows" 16 300 || { fx_fail "streams: cannot split the fixed-width streams"; return; }
    local p
    for p in 0 57 150 299; do
        # row p has three values where the header says two
        { cat "$W/f2.rows.head"; rows "$W/f2.rows.body" 14 0 "$p"; row "$W/f3.rows.body" 16 "$p"
          rows "$W/f2.rows.body" 14 $((p + 1)) 300; cat "$W/f2.rows.tail"; } >"$W/width"
        fixed_case width "$W/width" "$p" "row $p of 3 values, header of 2" plain
    done
    # the header of 3 columns, rows of 2
    { cat "$W/f3.rows.head" "$W/f2.rows.body" "$W/f3.rows.tail"; } >"$W/width2"
    fixed_case width "$W/width2" 0 "header of 3 columns, rows of 2" plain
    for p in 1 60 150 299; do
        # rows p-1 and p swapped
        { cat "$W/f2.rows.head"; rows "$W/f2.rows.body" 14 0 $((p - 1)); row "$W/f2.rows.body" 14 "$p"
          row "$W/f2.rows.body" 14 $((p - 1)); rows "$W/f2.rows.body" 14 $((p + 1)) 300; cat "$W/f2.rows.tail"; } >"$W/order"
        fixed_case order "$W/order" "$p" "rows $((p - 1)) and $p swapped" "swap $p"
        # row p-1 repeated in place of row p
        { cat "$W/f2.rows.head"; rows "$W/f2.rows.body" 14 0 "$p"; row "$W/f2.rows.body" 14 $((p - 1))
          rows "$W/f2.rows.body" 14 $((p + 1)) 300; cat "$W/f2.rows.tail"; } >"$W/dup"
        fixed_case duplicate "$W/dup" "$p" "row $((p - 1)) repeated as row $p" "dup $p"
    done
    # a row dropped (the trailer's count no longer matches): everything before the last
    # complete batch may land, nothing more
    { cat "$W/f2.rows.head"; rows "$W/f2.rows.body" 14 0 150; rows "$W/f2.rows.body" 14 151 300
      cat "$W/f2.rows.tail"; } >"$W/drop"
    fixed_case count "$W/drop" 299 "row 150 dropped" "drop 150"
    # text keys in C order: 'Aa' 'Bb' 'aa' 'bb' (rows of 6 bytes); 'aa' before 'Bb' is out of order there
    # (though not in an English collation)
    split "$W/k.rows" 6 4 || { fx_fail "streams: cannot split the text-key stream"; return; }
    { cat "$W/k.rows.head"; row "$W/k.rows.body" 6 0; row "$W/k.rows.body" 6 2; row "$W/k.rows.body" 6 1
      row "$W/k.rows.body" 6 3; cat "$W/k.rows.tail"; } >"$W/korder"
    reset_dest
    load "$W/korder" bs.k --batch-rows 1
    KIND_N[order]=$((${KIND_N[order]:-0} + 1))
    KIND_EXIT[order]+="$RC "
    BAD=""
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    one_line dm-load || BAD+="not one line on stderr; "
    [[ "$ERR" == *"out-of-order"* ]] || BAD+="the message does not say out of order; "
    n=$(fx_psql dst bs_dst "SELECT string_agg(k, ' ' ORDER BY k COLLATE \"C\") FROM bs.k")
    [[ -z "$n" ]] || BAD+="bs.k holds '$n': rows were committed before any sync point; "
    verdict crafted "text keys out of byte order ('aa' before 'Bb')"
}

# fixed_case KIND FILE P WHAT ORDER: FILE, a bs.f rows stream damaged at row P, into the
# empty bs.f with batches of 25: exit 3, one line, and exactly the first floor(P/G)*G
# rows of the stream landed (none: these streams are shorter than a sync interval). ORDER says which ids the stream carries, in order: plain
# (100..399), "swap P" (rows P-1 and P swapped), "dup P" (row P-1 again at P), "drop P".
fixed_case() {
    local kind=$1 f=$2 p=$3 what=$4 order=$5 want got exp
    reset_dest
    load "$f" bs.f
    KIND_N[$kind]=$((${KIND_N[$kind]:-0} + 1))
    KIND_EXIT[$kind]+="$RC "
    BAD=""
    ((RC == 3)) || BAD+="exit $RC, not 3; "
    one_line dm-load || BAD+="not one line on stderr: $(tr '\n' '|' <<<"$ERR"); "
    want=$((p / G * G))
    exp=$(seq 100 399 | awk -v o="${order%% *}" -v q="${order#* }" '
        { id[NR - 1] = $1; n = NR }
        END {
            for (i = 0; i < n; i++) {
                v = id[i]
                if (o == "swap" && i == q - 1) v = id[q]
                if (o == "swap" && i == q) v = id[q - 1]
                if (o == "dup" && i == q) v = id[q - 1]
                if (o == "drop" && i >= q) v = id[i + 1]
                if (o == "drop" && i == n - 1) break
                print v
            }
        }' | head -n "$want" | sort -u | tr '\n' ' ')
    got=$(fx_psql dst bs_dst "SELECT id FROM bs.f" | sort -u | tr '\n' ' ')
    if [[ "$got" != "$exp" ]]; then
        BAD+="$(wc -w <<<"$got") rows landed, expected the $want rows before the last sync point before row $p; "
    fi
    [[ "$(dump victim | md5sum)" == "$VICTIM_SUM" ]] || BAD+="bs.victim changed; "
    verdict "$kind" "$what"
}

# Deferred deletes: a truncated stream's parked deletes must not be applied by
# dm-load --apply-deletes of the same run id (dm-migrate never asks for it, but a
# pipeline by hand, as in dm-load(1)'s example, does).
trial_deferred() {
    local n=$1 cut before after
    # cut after the first deletes have been parked in committed batches
    cut=$(( $(size "$W/t.changes") * (50 + n % 40) / 100 ))
    head -c "$cut" "$W/t.changes" >"$W/cut"
    reset_dest
    load "$W/cut" bs.t --defer-deletes --run-id "fx-run-$n"
    check_failed deferred "cut at $cut, --defer-deletes"
    before=$(dump t | md5sum)
    DM_DEST=$(fx_ci dst bs_dst) dm-load --db-env DM_DEST --table bs.t --apply-deletes --run-id "fx-run-$n" -q \
        >/dev/null 2>"$W/err2"
    local arc=$?
    after=$(dump t | md5sum)
    if [[ "$before" != "$after" ]]; then
        BAD+="dm-load --apply-deletes --run-id of the failed load (exit $arc) deleted $(($(wc -l <"$W/now.tsv") - $(dump t | wc -l))) row(s) parked by a truncated stream; "
    fi
    converge deferred
    verdict deferred "cut at $cut, then --apply-deletes of the same run"
}

# ---------------------------------------------------------------- main

fx_say "bad streams (seed $FX_SEED)"
setup || fx_die "cannot set up the bad-stream tables"
: >"$W/landed.txt"
INIT_SUM=$(dump t_init | md5sum)
# The boundary check must be able to say no: apply the non-delete changes of the first
# 500 messages by hand (half a commit interval), then of the first 1000.
selftest() {
    local upto=$1 last
    last=$(sed -n "${upto}p" "$W/messages" | cut -d' ' -f1)
    reset_dest
    fx_psql src bs_src "COPY (SELECT * FROM bs.t WHERE id <= $last) TO STDOUT" |
        fx_psql dst bs_dst "CREATE TEMP TABLE x (LIKE bs.t); COPY x FROM STDIN;
            INSERT INTO bs.t SELECT * FROM x ON CONFLICT (id) DO UPDATE SET v = EXCLUDED.v, b = EXCLUDED.b,
            updated_at = EXCLUDED.updated_at" >/dev/null
    boundary | cut -d' ' -f1
}
[[ "$(selftest 500)" == 0 && "$(selftest "$G")" == 1 ]] ||
    fx_die "the batch-boundary check cannot tell a half-applied batch from a whole one"
VICTIM_SUM=$(dump victim_init | md5sum)
crafted
# The reduced form (--quick) does fewer of the random ones.
NT=$((FX_TRIALS * 10)) NC=$((FX_TRIALS * 15)) ND=$((FX_TRIALS * 2)) NF=$FX_TRIALS
((${FX_QUICK:-0})) && NT=$((FX_TRIALS * 4)) NC=$((FX_TRIALS * 6)) ND=$FX_TRIALS NF=1
for ((i = 0; i < NF; i++)); do trial_deferred "$i"; done
for ((i = 0; i < NT; i++)); do trial_truncate "$i"; done
for ((i = 0; i < NC; i++)); do trial_corrupt "$i"; done
for ((i = 0; i < ND; i++)); do trial_diff "$i"; done
commits=""
for k in $(printf '%s\n' "${!COMMITS[@]}" | sort -n); do commits+="${commits:+, }$k x${COMMITS[$k]}"; done
fx_note "messages committed before the failure: $commits"
note=""
for k in truncated corrupted diff deferred version magic other-table hashes empty glued width order duplicate count; do
    [[ -n "${KIND_N[$k]:-}" ]] || continue
    note+="$k ${KIND_N[$k]}"
    ex=$(tr ' ' '\n' <<<"${KIND_EXIT[$k]:-}" | grep . | sort -n | uniq -c | awk '{ printf "%s%dx%d", (NR > 1 ? "," : ""), $1, $2 }')
    [[ -n "$ex" ]] && note+=" (exits $ex)"
    note+="; "
done
fx_note "${note%; }"
fx_result "bad streams"
((FX_FAILS == 0))
