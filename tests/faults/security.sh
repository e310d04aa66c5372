#!/usr/bin/env bash
# tests/faults/security.sh - secrets stay secret; hostile names are only names; a stream
# writes only where its command line says.
#
#   tests/faults/security.sh [--trials N] [--seed N] [-v]
#
# secrets     Both servers get a fresh random password and the connection strings use
#             TCP with it (scram-sha-256). During `dm-migrate -v run` (and plan, verify,
#             status, makefile) every process's /proc/PID/cmdline is sampled every 10 ms;
#             then the password must appear in none of: the samples, the driver's output,
#             the work directory (logs, streams of the foreign-key cycle), the dm schema
#             (checkpoint, run, lease, pending_delete, ledger), a teed stream, and the
#             error messages of every program for: a wrong password, an unknown
#             database, a closed port, and malformed connection strings and URIs.
# injection   Tables and columns named to inject SQL (x"; DROP TABLE victim; --, a"b, a
#             schema s'; DROP TABLE victim; --, ...), unicode, mixed case, reserved words
#             and spaces migrate (run, then --full --delete run after changes) with
#             verify exit 0, the comparison equal, public.victim intact on both sides,
#             and the list of tables unchanged.
# dots        A schema "p.q" with a table t, beside a schema p with a table "q.t": each
#             must get its own rows (a name split at the wrong dot writes elsewhere).
# separators  A column named "a,b" and tables named with a tab and a newline: the same.
# one-table   A stream loaded with --table naming another table is refused (exit 3) and
#             changes nothing; a stream whose header names another entity (dm-extract
#             --entity) must not change that entity's checkpoint.

source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
fx_parse_common "$@"
fx_script_init

W=$FX_WORK/security
rm -rf -- "$W"
mkdir -p "$W"
SECRET="S3cr3t-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')"
declare -A SUB_N=() SUB_F=()

sub_begin() { CUR=$1; SUB_N[$1]=$((${SUB_N[$1]:-0} + 1)); FX_TRIALS_DONE=$((FX_TRIALS_DONE + 1)); }
bad() { fx_fail "security $CUR: $*"; SUB_F[$CUR]=$((${SUB_F[$CUR]:-0} + 1)); }

# tcp_ci SIDE DB [PASSWORD]: TCP conninfo with the secret password.
tcp_ci() {
    local dir
    case "$1" in src) dir=$FX_SRC_DIR ;; dst) dir=$FX_DST_DIR ;; esac
    printf 'host=127.0.0.1 port=%s user=postgres dbname=%s password=%s\n' "$(<"$dir/port")" "$2" "${3:-$SECRET}"
}

# leaks WHERE FILE...: fail if the secret is in any FILE.
leaks() {
    local where=$1 f
    shift
    for f in "$@"; do
        [[ -e "$f" ]] || continue
        if grep -rqaF -- "$SECRET" "$f"; then
            bad "the password appears in $where: $(grep -rlaF -- "$SECRET" "$f" | head -n 3 | tr '\n' ' ')"
            return 1
        fi
    done
    return 0
}

# ---------------------------------------------------------------- secrets

secrets() {
    sub_begin secrets
    local side wd=$W/workdir sniff=$W/cmdlines sid i
    for side in src dst; do
        fx_psql "$side" postgres "ALTER ROLE postgres PASSWORD '$SECRET'" || { bad "cannot set the password"; return; }
    done
    fx_createdb dst fx_sec fx_empty_tpl || return
    DM_SOURCE=$(tcp_ci src fx_src) DM_DEST=$(tcp_ci dst fx_sec)
    export DM_SOURCE DM_DEST
    # The connection strings work (the password is needed: scram over TCP).
    dm-ckpt --db-env DM_DEST list >/dev/null 2>"$W/ckpt.err" || { bad "dm-ckpt over TCP failed: $(<"$W/ckpt.err")"; return; }
    DM_DEST=${DM_DEST/$SECRET/wrong} dm-ckpt --db-env DM_DEST list >/dev/null 2>&1 &&
        { bad "a wrong password was accepted: the test would prove nothing"; return; }

    : >"$sniff"
    fx_start "$W/run.log" dm-migrate -v --workdir "$wd" run
    sid=$FX_SID
    for ((i = 0; i < 100000; i++)); do
        cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\0' ' ' >>"$sniff"
        echo >>"$sniff"
        fx_alive "$sid" || break
        sleep 0.01
    done
    { wait "$sid"; } 2>/dev/null || bad "dm-migrate -v run over TCP failed: $(tail -n 3 "$W/run.log")"
    grep -q 'dm-load --db-env DM_DEST' "$sniff" || bad "the sampling never saw a dm-load (it proves nothing)"
    fx_note "secrets: $i samples of every process's command line during the run"
    leaks "a process's command line" "$sniff"
    leaks "dm-migrate -v run's output" "$W/run.log"
    leaks "the work directory" "$wd"
    for cmd in plan verify status makefile; do
        dm-migrate -v --workdir "$wd" "$cmd" >"$W/$cmd.out" 2>&1
        leaks "dm-migrate -v $cmd" "$W/$cmd.out"
    done
    dm-ckpt --db-env DM_DEST runs >"$W/runs.out" 2>&1
    dm-ckpt --db-env DM_DEST list >>"$W/runs.out" 2>&1
    leaks "dm-ckpt's output" "$W/runs.out"
    fx_psql dst fx_sec "SELECT format('COPY %I.%I TO STDOUT;', n.nspname, c.relname) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'dm' AND c.relkind = 'r'" |
        fx_psql dst fx_sec >"$W/dm-schema.txt" 2>&1
    [[ -s "$W/dm-schema.txt" ]] || bad "the dm schema is empty: nothing was checked"
    leaks "the dm schema's tables" "$W/dm-schema.txt"
    dm-extract --db-env DM_SOURCE --table fx.customer | tee "$W/customer.rows" |
        dm-diff - <(dm-extract --db-env DM_DEST --table fx.customer --hashes) >"$W/customer.changes" 2>/dev/null
    dm-cat "$W/customer.rows" >"$W/customer.json" 2>&1
    leaks "a stream" "$W/customer.rows" "$W/customer.changes" "$W/customer.json"

    # Failures: each program, each way of failing to connect.
    local port_closed=1 dport
    dport=$(<"$FX_DST_DIR/port")
    local -a bads=(
        "$(tcp_ci dst fx_sec "${SECRET}x")"
        "$(tcp_ci dst no_such_db)"
        "host=127.0.0.1 port=$port_closed user=postgres dbname=fx_sec password=$SECRET connect_timeout=3"
        "host=127.0.0.1 port=$dport user=postgres dbname=fx_sec password=$SECRET bogus"
        "host=127.0.0.1 port=$dport user=postgres dbname=fx_sec password='$SECRET"
        "host=127.0.0.1 port=$dport user=postgres dbname=fx_sec password=$SECRET sslmode=bogus"
        "host=127.0.0.1 port=$dport user=postgres dbname=fx_sec password=$SECRET no_such_option=1"
        "postgresql://postgres:${SECRET}@127.0.0.1:$dport/no_such_db"
        "postgresql://postgres:${SECRET}@127.0.0.1:notaport/fx_sec"
        "postgresql://postgres:${SECRET}@[127.0.0.1:$dport/fx_sec"
        "postgresql://postgres:${SECRET}@127.0.0.1:$dport/fx_sec?sslmode=bogus"
        "postgresql://postgres:${SECRET}@127.0.0.1:$dport/fx_sec?bogus=1"
        "postgresql://postgres:${SECRET}@127.0.0.1:$dport/fx_sec?password=${SECRET}&port=x"
    )
    local ci n=0 out r=()
    fx_has_retries && r=(--retries 0)
    for ci in "${bads[@]}"; do
        n=$((n + 1))
        out=$W/fail.$n
        if ((${FX_QUICK:-0})); then
            {
                DM_X=$ci timeout 30 dm-extract --db-env DM_X --table fx.customer
                DM_X=$ci timeout 30 dm-load --db-env DM_X --table fx.customer "$W/customer.changes"
                DM_DEST=$ci timeout 60 dm-migrate "${r[@]}" run fx.category
            } >"$out" 2>&1 </dev/null
        else
        {
            DM_X=$ci timeout 30 dm-extract --db-env DM_X --table fx.customer
            DM_X=$ci timeout 30 dm-extract --db-env DM_X --export-snapshot </dev/null
            DM_X=$ci timeout 30 dm-load --db-env DM_X --table fx.customer "$W/customer.changes"
            DM_X=$ci timeout 30 dm-ckpt --db-env DM_X list
            DM_X=$ci timeout 30 dm-entities --source-env DM_X --dest-env DM_DEST
            DM_X=$ci timeout 30 dm-entities --source-env DM_SOURCE --dest-env DM_X
            DM_DEST=$ci timeout 60 dm-migrate "${r[@]}" run fx.category
            DM_DEST=$ci timeout 60 dm-migrate status
            DM_SOURCE=$ci timeout 60 dm-migrate "${r[@]}" -v plan fx.category
        } >"$out" 2>&1 </dev/null
        fi
        grep -q . "$out" || bad "connection string #$n: no error message at all"
        if grep -qaF -- "$SECRET" "$out"; then
            bad "the password appears in an error message for connection string #$n ($(sed "s/$SECRET/<SECRET>/g" <<<"$ci")): $(grep -aF -- "$SECRET" "$out" | head -n 2 | sed "s/$SECRET/<SECRET>/g" | tr '\n' '|')"
        fi
    done
    fx_note "secrets: ${#bads[@]} bad connection strings x $( ((${FX_QUICK:-0})) && echo 3 || echo 9) commands"
    for side in src dst; do
        fx_psql "$side" postgres "ALTER ROLE postgres PASSWORD '$CLUSTER_PASSWORD'" >/dev/null
    done
    unset DM_SOURCE DM_DEST
}

# ---------------------------------------------------------------- hostile names

# names_sql: the tables of the injection test (both sides get the schema, the source the
# rows). Every name is quoted here by hand; dm must quote them itself.
names_sql() {
    cat <<'SQL'
CREATE TABLE public.victim (id integer PRIMARY KEY, v text);
CREATE TABLE public."x""; DROP TABLE victim; --" (id integer PRIMARY KEY, "a""b" text,
    """; DELETE FROM victim; --" text, "Select" integer, "a b" text);
CREATE SCHEMA "s'; DROP TABLE victim; --";
CREATE TABLE "s'; DROP TABLE victim; --"."t'); DELETE FROM victim; --" (
    "id'" integer PRIMARY KEY, "v$1" text, updated_at timestamptz NOT NULL);
CREATE TABLE public."Mixed Case ünï" ("ID" bigint PRIMARY KEY,
    "x""; DROP TABLE victim; --" integer REFERENCES public."x""; DROP TABLE victim; --", "%s%n" text);
CREATE TABLE public."--" (k text PRIMARY KEY, "$$" text);
CREATE TABLE public."1; SELECT pg_sleep(10)" ("E'\\x41'" text PRIMARY KEY);
SQL
}
names_rows() {
    cat <<'SQL'
INSERT INTO public.victim SELECT g, 'keep ' || g FROM generate_series(1, 50) g;
INSERT INTO public."x""; DROP TABLE victim; --"
    SELECT g, 'a"b ' || g, '"; DELETE FROM victim; -- ' || g, g, E'tab\t' || g FROM generate_series(1, 300) g;
INSERT INTO "s'; DROP TABLE victim; --"."t'); DELETE FROM victim; --"
    SELECT g, $$'); DROP TABLE victim; --$$ || g, timestamptz '2022-01-01' + g * interval '1 hour'
    FROM generate_series(1, 300) g;
INSERT INTO public."Mixed Case ünï" SELECT g, 1 + g % 300, '%s%n%x' FROM generate_series(1, 200) g;
INSERT INTO public."--" VALUES ('a', '$$'), ('B', NULL), ('"', '\'), ('''', E'\\');
INSERT INTO public."1; SELECT pg_sleep(10)" VALUES ('x'), ('E''\x41''');
SQL
}

# tables SIDE DB: every table's name, quoted, sorted (to see that nothing was dropped).
tables_of() {
    # (ORDER BY the name itself: "ORDER BY 1" in an aggregate sorts by the constant 1,
    # i.e. not at all, and a bulk load's TRUNCATE moves the table's pg_class row.)
    fx_psql "$1" "$2" "SELECT string_agg(format('%I.%I', n.nspname, c.relname), ' '
            ORDER BY format('%I.%I', n.nspname, c.relname) COLLATE \"C\")
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dm')
          AND n.nspname !~ '^pg_'"
}

# migrate_check NAME SRCDB DSTDB: run, change, --full --delete run, verify; compare.
migrate_check() {
    local name=$1 s=$2 d=$3 before_s before_d rc
    before_s=$(tables_of src "$s")
    before_d=$(tables_of dst "$d")
    fx_use "$s" "$d"
    fx_migrate "$W/$name.run1.log" run
    rc=$?
    ((rc == 0)) || bad "$name: dm-migrate run exited $rc: $(tail -n 3 "$W/$name.run1.log" | tr '\n' ' ')"
    fx_equal "$s" "$d" '.' || bad "$name: after run: $FX_DIFF"
    # changes on the source, including deletes, then a --full --delete run
    [[ -n "${CHANGE_SQL:-}" ]] && fx_psql src "$s" "$CHANGE_SQL" >/dev/null
    fx_migrate "$W/$name.run2.log" --full --delete run
    rc=$?
    ((rc == 0)) || bad "$name: dm-migrate --full --delete run exited $rc: $(tail -n 3 "$W/$name.run2.log" | tr '\n' ' ')"
    fx_equal "$s" "$d" '.' || bad "$name: after --full --delete run: $FX_DIFF"
    fx_migrate "$W/$name.verify.log" verify
    rc=$?
    ((rc == 0)) || bad "$name: dm-migrate verify exited $rc: $(tail -n 3 "$W/$name.verify.log" | tr '\n' ' ')"
    [[ "$(tables_of src "$s")" == "$before_s" ]] || bad "$name: the source's tables changed: $(tables_of src "$s")"
    [[ "$(tables_of dst "$d")" == "$before_d" ]] || bad "$name: the destination's tables changed: $(tables_of dst "$d")"
}

injection() {
    sub_begin injection
    fx_createdb src inj_src && fx_createdb dst inj_dst || return
    names_sql | fx_psql src inj_src >/dev/null && names_sql | fx_psql dst inj_dst >/dev/null &&
        names_rows | fx_psql src inj_src >/dev/null || { bad "cannot create the tables"; return; }
    # the destination's victim has its own rows: they must survive
    fx_psql dst inj_dst "INSERT INTO public.victim SELECT g, 'keep ' || g FROM generate_series(1, 50) g" >/dev/null
    CHANGE_SQL="DELETE FROM public.\"Mixed Case ünï\" WHERE \"ID\" % 50 = 0;
        UPDATE public.\"x\"\"; DROP TABLE victim; --\" SET \"a\"\"b\" = 'changed \"; --' WHERE id % 7 = 0;
        UPDATE public.\"--\" SET \"\$\$\" = '\$\$ changed' WHERE k = '\"'"
    migrate_check injection inj_src inj_dst
    local v
    for side in src dst; do
        v=$(fx_psql "$side" "inj_$side" "SELECT count(*) FROM public.victim")
        [[ "$v" == 50 ]] || bad "public.victim on the $side side has $v rows, not 50"
    done
}

dots() {
    sub_begin dots
    fx_createdb src dot_src && fx_createdb dst dot_dst || return
    local ddl='CREATE SCHEMA "p.q"; CREATE SCHEMA p;
        CREATE TABLE "p.q".t (id integer PRIMARY KEY, v text);
        CREATE TABLE p."q.t" (id integer PRIMARY KEY, v text);
        CREATE TABLE public."a.b" (id integer PRIMARY KEY, v text);
        CREATE SCHEMA a; CREATE TABLE a.b (id integer PRIMARY KEY, v text);'
    fx_psql src dot_src "$ddl" >/dev/null && fx_psql dst dot_dst "$ddl" >/dev/null || { bad "cannot create the tables"; return; }
    fx_psql src dot_src "INSERT INTO \"p.q\".t SELECT g, 'schema p.q, table t' FROM generate_series(1, 100) g" \
        "INSERT INTO p.\"q.t\" SELECT g, 'schema p, table q.t' FROM generate_series(1, 30) g" \
        "INSERT INTO public.\"a.b\" SELECT g, 'public.\"a.b\"' FROM generate_series(1, 20) g" \
        "INSERT INTO a.b SELECT g, 'a.b' FROM generate_series(1, 10) g" >/dev/null
    CHANGE_SQL="DELETE FROM \"p.q\".t WHERE id > 95"
    migrate_check dots dot_src dot_dst
}

separators() {
    sub_begin separators
    local rc
    # A column named "a,b": dm-entities(1) says it is an error. It must be a clear one,
    # and nothing may be migrated.
    fx_createdb src sep_src && fx_createdb dst sep_dst || return
    local ddl='CREATE TABLE public.c (id integer PRIMARY KEY, "a,b" text, "c" text);'
    fx_psql src sep_src "$ddl" >/dev/null && fx_psql dst sep_dst "$ddl" >/dev/null || { bad "cannot create the tables"; return; }
    fx_psql src sep_src "INSERT INTO public.c SELECT g, 'a,b ' || g, 'c ' || g FROM generate_series(1, 100) g" >/dev/null
    fx_use sep_src sep_dst
    fx_migrate "$W/comma.log" run
    rc=$?
    if ((rc == 0)); then
        fx_equal sep_src sep_dst '.' || bad "a column named \"a,b\": run exited 0 but: $FX_DIFF"
    else
        grep -q 'a,b.*not supported\|not supported.*a,b' "$W/comma.log" ||
            bad "a column named \"a,b\": exit $rc without saying why: $(tail -n 2 "$W/comma.log" | tr '\n' ' ')"
        [[ "$(fx_psql dst sep_dst "SELECT count(*) FROM public.c")" == 0 ]] || bad "a column named \"a,b\": rows were loaded"
        fx_note "separators: a column named \"a,b\" is refused (documented in dm-entities(1))"
    fi
    # Tables named with a tab and with a newline: migrated right, or refused clearly.
    fx_createdb src sep2_src && fx_createdb dst sep2_dst || return
    ddl=$'CREATE TABLE public."tab\there" (id integer PRIMARY KEY, v text);
        CREATE TABLE public."new\nline" (id integer PRIMARY KEY, v text);'
    fx_psql src sep2_src "$ddl" >/dev/null && fx_psql dst sep2_dst "$ddl" >/dev/null || { bad "cannot create the tables"; return; }
    fx_psql src sep2_src $'INSERT INTO public."tab\there" SELECT g, \'tab\' FROM generate_series(1, 10) g' \
        $'INSERT INTO public."new\nline" SELECT g, \'newline\' FROM generate_series(1, 10) g' >/dev/null
    fx_use sep2_src sep2_dst
    fx_migrate "$W/tabnl.log" run
    rc=$?
    if ((rc == 0)); then
        fx_equal sep2_src sep2_dst '.' || bad "tables named with a tab and a newline: run exited 0 but: $FX_DIFF"
    else
        grep -q 'not supported' "$W/tabnl.log" ||
            bad "tables named with a tab and a newline: exit $rc without saying why: $(tail -n 2 "$W/tabnl.log" | tr '\n' ' ')"
        fx_note "separators: tables named with a tab or a newline are refused"
    fi
}

# ---------------------------------------------------------------- one table only

one_table() {
    sub_begin one-table
    local before after rc
    fx_use inj_src inj_dst
    # The hostile table's stream, loaded with --table public.victim: refused.
    dm-extract --db-env DM_SOURCE --table 'public.x"; DROP TABLE victim; --' >"$W/x.rows" 2>"$W/err" ||
        { bad "dm-extract of the hostile table failed: $(<"$W/err")"; return; }
    before=$(fx_psql dst inj_dst "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM public.victim")
    dm-load --db-env DM_DEST --table public.victim -q "$W/x.rows" 2>"$W/err"
    rc=$?
    ((rc == 3)) || bad "a stream of another table loaded with --table public.victim: exit $rc, not 3: $(<"$W/err")"
    after=$(fx_psql dst inj_dst "SELECT md5(string_agg(v, ',' ORDER BY id)) FROM public.victim")
    [[ "$before" == "$after" ]] || bad "public.victim changed"

    # A stream whose header names another entity (dm-extract --entity) loaded into the
    # table it really holds: that entity's checkpoint must not move. fx_incr_tpl has
    # complete checkpoints; fx.customer's watermark is later than fx.orders'.
    local ck0 ck1
    fx_fresh_dest incr fx_sec_one || return
    ck0=$(fx_psql dst fx_sec_one "SELECT watermark || ' ' || complete || ' ' || run_id FROM dm.checkpoint WHERE entity = 'fx.orders'")
    dm-extract --db-env DM_SOURCE --table fx.customer --entity fx.orders >"$W/customer-as-orders.rows" 2>"$W/err" ||
        { bad "dm-extract --entity failed: $(<"$W/err")"; return; }
    dm-load --db-env DM_DEST --table fx.customer -q "$W/customer-as-orders.rows" 2>"$W/err"
    rc=$?
    ck1=$(fx_psql dst fx_sec_one "SELECT watermark || ' ' || complete || ' ' || run_id FROM dm.checkpoint WHERE entity = 'fx.orders'")
    if [[ "$ck0" != "$ck1" ]]; then
        # What it costs: the next (incremental) run of fx.orders starts from there.
        fx_migrate "$W/after-entity.log" run
        local then="the next dm-migrate run exited $?"
        fx_equal fx_src fx_sec_one '^fx\.orders$' && then+=" and fx.orders is still equal" ||
            then+=" and leaves fx.orders different: ${FX_DIFF%%$'\n'*}"
        bad "a stream of fx.customer whose header says entity fx.orders, loaded with dm-load --table fx.customer (exit $rc), moved fx.orders' checkpoint from '$ck0' to '$ck1'; $then"
    fi
    fx_dropdb dst fx_sec_one
}

fx_say "security (seed $FX_SEED)"
secrets
injection
dots
separators
one_table
note=""
for k in secrets injection dots separators one-table; do note+="$k ${SUB_F[$k]:-0} failed; "; done
fx_note "${note%; }"
fx_result "security"
((FX_FAILS == 0))
