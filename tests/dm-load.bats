#!/usr/bin/env bats
# dm-load: batches, idempotence, crashes, and what it refuses to apply.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb l_src
    dm_psql l_src "CREATE TABLE public.big (id bigint PRIMARY KEY, v text, n numeric)" \
        "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 200000) g" \
        "CREATE TABLE public.other (id int PRIMARY KEY, v text)"
    # For the bulk path: a constrained child (secondary indexes, a deferrable foreign key,
    # one NOT VALID, one to itself, unique constraints, one deferrable with options, a check
    # constraint), and a foreign-key cycle.
    dm_psql l_src "CREATE TABLE public.par (id int PRIMARY KEY, name text)" \
        "CREATE TABLE public.kid (id bigint PRIMARY KEY,
            par_id int REFERENCES public.par DEFERRABLE INITIALLY DEFERRED,
            par2 int, up bigint, code text CONSTRAINT kid_code_key UNIQUE, v text CHECK (v <> 'x'),
            CONSTRAINT kid_v_key UNIQUE NULLS NOT DISTINCT (v) INCLUDE (code) WITH (fillfactor = 70)
                DEFERRABLE INITIALLY DEFERRED)" \
        "ALTER TABLE public.kid ADD CONSTRAINT kid_par2_fkey FOREIGN KEY (par2) REFERENCES public.par NOT VALID" \
        "ALTER TABLE public.kid ADD CONSTRAINT kid_up_fkey FOREIGN KEY (up) REFERENCES public.kid ON DELETE CASCADE" \
        "CREATE INDEX kid_par ON public.kid (par_id)" \
        "CREATE INDEX kid_lower_v ON public.kid (lower(v)) WHERE id > 10" \
        "CREATE UNIQUE INDEX kid_par_id_u ON public.kid (par_id, id) INCLUDE (v)" \
        "INSERT INTO public.par SELECT g, 'p' || g FROM generate_series(1, 100) g" \
        "INSERT INTO public.kid SELECT g, 1 + g % 100, 1 + g % 50, CASE WHEN g > 1 THEN g / 2 END, 'c' || g,
            md5(g::text) FROM generate_series(1, 20000) g" \
        "CREATE TABLE public.ca (id int PRIMARY KEY, cb_id int)" \
        "CREATE TABLE public.cb (id int PRIMARY KEY, ca_id int REFERENCES public.ca)" \
        "ALTER TABLE public.ca ADD FOREIGN KEY (cb_id) REFERENCES public.cb" \
        "CREATE INDEX ca_cb ON public.ca (cb_id)" \
        "BEGIN; SET CONSTRAINTS ALL DEFERRED;
            INSERT INTO public.ca SELECT g, NULL FROM generate_series(1, 3000) g;
            INSERT INTO public.cb SELECT g, g FROM generate_series(1, 3000) g;
            UPDATE public.ca SET cb_id = id; COMMIT" \
        "CREATE TABLE public.slow (id int PRIMARY KEY, v text)" \
        "INSERT INTO public.slow SELECT g, md5(g::text) FROM generate_series(1, 1000) g"
    dm_createdb l_empty l_src
    dm_psql l_empty "TRUNCATE public.big, public.kid, public.ca, public.cb, public.slow"
    # A trigger that sleeps while public.nap has a row: a statement of dm-load as long as
    # the test wants. Each firing is logged in public.nap_log (as the function's owner, so
    # that a loading role needs no right on it); a rolled back load leaves no log row.
    dm_psql l_empty "CREATE TABLE public.nap (secs float8)" \
        "CREATE TABLE public.nap_log (tab text, id bigint)" \
        "CREATE FUNCTION public.nap() RETURNS trigger LANGUAGE plpgsql SECURITY DEFINER
            SET search_path = pg_catalog AS
            \$\$ BEGIN INSERT INTO public.nap_log VALUES (TG_TABLE_NAME, NEW.id);
            PERFORM pg_catalog.pg_sleep(secs) FROM public.nap; RETURN NEW; END \$\$" \
        "CREATE TRIGGER nap BEFORE INSERT OR UPDATE ON public.slow FOR EACH ROW WHEN (NEW.id = 500)
            EXECUTE FUNCTION public.nap()" \
        "CREATE TRIGGER nap BEFORE INSERT ON public.kid FOR EACH ROW WHEN (NEW.id = 15000)
            EXECUTE FUNCTION public.nap()"
    export DIR=$BATS_FILE_TMPDIR
    export SRC=$(dm_conninfo l_src)
    dm-extract --db-env SRC --table public.big >"$DIR/big.rows"
    for t in kid ca cb slow; do dm-extract --db-env SRC --table public.$t >"$DIR/$t.rows"; done
}

# kid_schema: public.kid's indexes and constraints in l_dst, with every flag that matters.
kid_schema() {
    dm_psql l_dst "SELECT indexname || ': ' || indexdef FROM pg_indexes
            WHERE schemaname = 'public' AND tablename = 'kid' ORDER BY 1" \
        "SELECT conname, contype, condeferrable, condeferred, convalidated, pg_get_constraintdef(oid)
            FROM pg_constraint WHERE conrelid = 'public.kid'::regclass ORDER BY 1" \
        "SELECT tgname, tgenabled FROM pg_trigger WHERE tgrelid = 'public.kid'::regclass AND NOT tgisinternal ORDER BY 1"
}

# wait_nap: until a backend of l_dst sleeps in the nap trigger (10 s at most).
wait_nap() {
    for _ in $(seq 1 200); do
        [ "$(dm_psql l_dst "SELECT count(*) FROM pg_stat_activity WHERE datname = 'l_dst'
            AND wait_event = 'PgSleep'")" = 1 ] && return 0
        sleep 0.05
    done
    echo "no dm-load backend ever slept in the nap trigger" >&2
    return 1
}

# wait_for WHAT SQL: until SQL, run in l_dst, prints t (60 s at most; an error, such as
# a table dm-load has not made yet, counts as not yet).
wait_for() {
    local deadline=$((SECONDS + 60))
    while ((SECONDS < deadline)); do
        [ "$(dm_psql l_dst "$2" 2>/dev/null)" = t ] && return 0
        sleep 0.05
    done
    echo "waited 60 s for $1 in vain ($2); replay: bats tests/dm-load.bats -f '$BATS_TEST_DESCRIPTION'" >&2
    return 1
}

# stall_start MODE TABLE: another session takes a MODE lock on TABLE in l_dst and keeps
# it until stall_end, whatever the machine's speed; returns once the lock is granted.
stall_start() {
    PGAPPNAME=dm-test-stall "$DM_PSQL" -X -q -d "$(dm_conninfo l_dst)" \
        -c "BEGIN; LOCK TABLE $2 IN $1 MODE; SELECT pg_sleep(600); COMMIT" >/dev/null 2>&1 3>&- &
    STALL_PID=$!
    wait_for "the $1 lock on $2" "SELECT count(*) = 1 FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
        WHERE a.application_name = 'dm-test-stall' AND l.relation = '$2'::regclass AND l.granted"
}

# stall_end: the stalling session goes, and its lock with it.
stall_end() {
    dm_psql l_dst "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
        WHERE application_name = 'dm-test-stall'" >/dev/null
    wait "$STALL_PID" || true
}

teardown_file() {
    dm_teardown_cluster
}

setup() {
    dm_createdb l_dst l_empty
    export DST=$(dm_conninfo l_dst)
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-load
    assert_output --partial "usage: dm-load"
    run -2 dm-load --db-env DST
    run -2 dm-load --db-env DST --table public.big --batch-rows x
    run -2 dm-load --db-env DST --table public.big a b
    # one checkpoint name, for one table
    run -2 dm-load --db-env DST --table public.big --table public.other --checkpoint 'public.big#0/2' a b
    run -2 dm-load --db-env DST --table public.big --checkpoint ''
}

@test "a full load, then the same stream again rewrites no row" {
    run -0 dm-load --db-env DST --table public.big --batch-rows 30000 "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=200000 update=0 delete=0 unchanged=0"
    dm_tables_equal l_src l_dst public.big
    before=$(dm_psql l_dst "SELECT sum(xmin::text::bigint) FROM public.big")
    run -0 dm-load --db-env DST --table public.big "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=0 update=0 delete=0 unchanged=200000"
    [ "$(dm_psql l_dst "SELECT sum(xmin::text::bigint) FROM public.big")" = "$before" ]
    run -0 dm-ckpt --db-env DST show public.big
    assert_line "complete=true"
}

@test "kill -9 in the middle of a load, then a rerun: equal, no duplicates" {
    dm-load -q --db-env DST --table public.big --batch-rows 5000 --no-bulk "$DIR/big.rows" &
    pid=$!
    # wait until some batches landed, then kill without warning
    for _ in $(seq 1 200); do
        n=$(dm_psql l_dst "SELECT count(*) FROM public.big")
        [ "$n" -gt 20000 ] && break
        sleep 0.05
    done
    kill -9 "$pid"
    wait "$pid" || true
    n=$(dm_psql l_dst "SELECT count(*) FROM public.big")
    # one test per line: under set -e, a false first test of `a && b` would not fail the test
    [ "$n" -gt 0 ]
    [ "$n" -lt 200000 ]
    [ $((n % 5000)) -eq 0 ]   # a batch boundary
    run -0 dm-ckpt --db-env DST show public.big
    assert_line "complete=false"
    dm-load -q --db-env DST --table public.big --batch-rows 5000 "$DIR/big.rows"
    dm_tables_equal l_src l_dst public.big
    [ "$(dm_psql l_dst "SELECT count(*) - count(DISTINCT id) FROM public.big")" = 0 ]
}

@test "a stream without a row records its checkpoint and run, and takes no lock on the table" {
    run -0 dm-load -q --db-env DST --table public.slow --disable-triggers "$DIR/slow.rows"
    # nothing changed: dm-diff sends a changes stream without a row
    dm-diff -q "$DIR/slow.rows" "$DIR/slow.rows" >"$BATS_TEST_TMPDIR/none.changes"
    # a long transaction holds the table against writers and DDL (ALTER TABLE ... DISABLE
    # TRIGGER would wait for it); an empty load must not need it
    local held=$BATS_TEST_TMPDIR/held holder
    dm_psql l_dst "SELECT 1" >/dev/null
    { echo "BEGIN; LOCK TABLE public.slow IN EXCLUSIVE MODE; SELECT 'locked';"; sleep 30; echo "COMMIT;"; } |
        "$DM_PSQL" -X -qAt -d "$DST" >"$held" 2>&1 &
    holder=$!
    for _ in $(seq 100); do [[ -s "$held" ]] && break; sleep 0.1; done
    run -0 cat "$held"
    assert_output locked
    run -0 timeout 10 dm-load --db-env DST --table public.slow --disable-triggers --run-id empty-run \
        "$BATS_TEST_TMPDIR/none.changes"
    assert_output "dm-load: public.slow: insert=0 update=0 delete=0 unchanged=0"
    kill "$holder" 2>/dev/null; wait "$holder" 2>/dev/null || true
    run -0 dm-ckpt --db-env DST show public.slow
    assert_line "complete=true"
    assert_line "run_id=empty-run"
    assert_equal "$(dm_psql l_dst "SELECT outcome FROM dm.run WHERE run_id = 'empty-run'")" ok
    # and nothing of the table changed
    dm_tables_equal l_src l_dst public.slow
}

@test "a truncated change stream exits 3 and deletes nothing" {
    dm-load -q --db-env DST --table public.big "$DIR/big.rows"
    dm_psql l_src "DELETE FROM public.big WHERE id > 199000"
    dm-diff -q --delete <(dm-extract --db-env SRC --table public.big) \
        <(dm-extract --db-env DST --table public.big --hashes) >"$DIR/del.changes"
    dm_psql l_src "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(199001, 200000) g"
    size=$(stat -c %s "$DIR/del.changes")
    head -c $((size - 30)) "$DIR/del.changes" >"$DIR/cut.changes"
    run -3 dm-load --db-env DST --table public.big "$DIR/cut.changes"
    assert_output --partial "invalid stream"
    [ "$(dm_row_count l_dst public.big)" = 200000 ]
    run -0 dm-load --db-env DST --table public.big "$DIR/del.changes"
    assert_output "dm-load: public.big: insert=0 update=0 delete=1000 unchanged=0"
}

@test "a stream for another table is refused before anything is applied" {
    run -3 dm-load --db-env DST --table public.other "$DIR/big.rows"
    assert_output --partial "stream is for table public.big, not public.other"
    [ "$(dm_row_count l_dst public.other)" = 0 ]
}

@test "--dry-run counts and applies nothing" {
    run -0 dm-load --dry-run --db-env DST --table public.big --batch-rows 50000 "$DIR/big.rows"
    assert_output "dm-load: public.big: dry run: insert=200000 update=0 delete=0 unchanged=0"
    [ "$(dm_row_count l_dst public.big)" = 0 ]
}

@test "garbage on stdin: exit 3, nothing applied, no connection needed" {
    run -3 dm-load --db "host=/nonexistent dbname=x" --table public.big < /etc/hostname
    assert_output --partial "invalid stream"
}

@test "unreachable server (exit 7) and unknown table (exit 1): one clear line" {
    run -7 dm-load --db "host=$DM_TEST_HOST port=1 dbname=x user=postgres" --table public.big "$DIR/big.rows"
    assert_output --partial "cannot connect to destination"
    run -1 dm-load --db-env DST --table public.nope "$DIR/big.rows"
    assert_output --partial "no table public.nope"
}

@test "rows the destination refuses go to --rejects, the rest lands, exit 5; the file replays" {
    dm_psql l_dst "ALTER TABLE public.big ADD CONSTRAINT no_seven CHECK (id % 70000 <> 7)"
    run -5 dm-load --db-env DST --table public.big --batch-rows 2000 --rejects "$DIR/rej" "$DIR/big.rows"
    assert_line --partial "rejected (7): query failed: ERROR:  new row for relation \"big\" violates check constraint \"no_seven\""
    assert_line --partial "rejected (140007)"
    assert_line "dm-load: public.big: insert=199997 update=0 delete=0 unchanged=0"
    assert_line --partial "3 row(s) rejected"
    [ "$(dm_row_count l_dst public.big)" = 199997 ]
    run -0 bash -c "dm-cat '$DIR/rej' | grep -c '\"op\":\"insert\"'"
    assert_output 3
    # once fixed, the reject file is a stream like any other
    dm_psql l_dst "ALTER TABLE public.big DROP CONSTRAINT no_seven"
    run -0 dm-load --db-env DST --table public.big "$DIR/rej"
    assert_output "dm-load: public.big: insert=3 update=0 delete=0 unchanged=0"
    dm_tables_equal l_src l_dst public.big
    run -1 dm-load --db-env DST --table public.big --max-rejects 0 --rejects "$DIR/rej2" < <(
        dm_psql l_src "UPDATE public.big SET v = NULL WHERE id = 9"
        dm_psql l_dst "ALTER TABLE public.big ALTER v SET NOT NULL"
        dm-extract --db-env SRC --table public.big)
    assert_line --partial "more than 0 rows rejected"
    dm_psql l_src "UPDATE public.big SET v = md5('9') WHERE id = 9"
}

@test "deleting more than 10% of a table is refused unless --force" {
    dm-load -q --db-env DST --table public.big "$DIR/big.rows"
    dm_createdb l_small l_empty
    export SMALL=$(dm_conninfo l_small)
    dm_psql l_small "INSERT INTO public.big SELECT g, md5(g::text), g / 7.0 FROM generate_series(1, 150000) g"
    dm-diff -q --delete <(dm-extract --db-env SMALL --table public.big) "$DIR/big.rows" >"$DIR/many.deletes"
    run -1 dm-load --db-env DST --table public.big "$DIR/many.deletes"
    assert_output --partial "refusing to delete 50000 of 200000 rows (more than 10%)"
    [ "$(dm_row_count l_dst public.big)" = 200000 ]
    run -0 dm-load --db-env DST --table public.big --force "$DIR/many.deletes"
    assert_output "dm-load: public.big: insert=0 update=0 delete=50000 unchanged=0"
}

@test "parked deletes voided by another run's load: that load says so, and the parking run's --apply-deletes fails" {
    dm-load -q --db-env DST --table public.big "$DIR/big.rows"
    dm_psql l_dst "INSERT INTO public.big VALUES (900001, 'extra', 1), (900002, 'extra', 2)"
    dm-diff -q --delete "$DIR/big.rows" <(dm-extract --db-env DST --table public.big --hashes) >"$DIR/two.deletes"
    run -0 dm-load --db-env DST --table public.big --defer-deletes --run-id R1 "$DIR/two.deletes"
    [ "$(dm_psql l_dst "SELECT count(*) FROM dm.pending_delete WHERE run_id = 'R1' AND ready")" = 2 ]
    # Another run loads the entity before R1 applies its deletes: they are void now.
    run -0 dm-load --db-env DST --table public.big --run-id R2 "$DIR/big.rows"
    assert_line "dm-load: public.big: voided 2 deletes parked by run R1 (computed before this load: a run with --delete computes them again)"
    run -1 dm-load --db-env DST --table public.big --apply-deletes --run-id R1
    assert_output "dm-load: public.big: nothing deleted: 2 parked deletes voided by run R2, which loaded the entity before they were applied; run again with --delete"
    [ "$(dm_row_count l_dst public.big)" = 200002 ]
    [ "$(dm_psql l_dst "SELECT outcome FROM dm.run WHERE run_id = 'R1'")" = voided ]
    # Without another load in between, the parked deletes are applied.
    run -0 dm-load --db-env DST --table public.big --defer-deletes --run-id R3 "$DIR/two.deletes"
    run -0 dm-load --db-env DST --table public.big --apply-deletes --run-id R3
    assert_output "dm-load: public.big: insert=0 update=0 delete=2 unchanged=0"
    [ "$(dm_row_count l_dst public.big)" = 200000 ]
}

@test "two loads of one entity at once: the second refuses (exit 6) or waits" {
    # The first load holds the lease and waits for a lock on its first batch, for as long
    # as the test needs, whatever the machine's speed.
    stall_start SHARE public.big
    dm-load -q --db-env DST --table public.big --batch-rows 2000 --no-bulk "$DIR/big.rows" 3>&- &
    pid=$!
    wait_for "the first load's lease" "SELECT count(*) = 1 FROM dm.lease"
    wait_for "the first load to wait for the lock" "SELECT count(*) = 1 FROM pg_locks l
        WHERE l.relation = 'public.big'::regclass AND NOT l.granted"
    start=${EPOCHREALTIME/./}
    run -6 timeout 60 dm-load --db-env DST --table public.big --wait 0 "$DIR/big.rows"
    assert_output --partial "another run is loading this entity"
    ms=$(((${EPOCHREALTIME/./} - start) / 1000))
    ((ms < 15000)) || { echo "--wait 0 took $ms ms to refuse" >&2; false; }
    [ "$(dm_row_count l_dst public.big)" = 0 ]
    stall_end
    run -0 dm-load --db-env DST --table public.big --wait 120 "$DIR/big.rows"
    assert_output "dm-load: public.big: insert=0 update=0 delete=0 unchanged=200000"
    wait "$pid"
    dm_tables_equal l_src l_dst public.big
}

@test "a killed load's lease does not block the rerun" {
    dm-load -q --db-env DST --table public.big --batch-rows 2000 --no-bulk "$DIR/big.rows" &
    pid=$!
    for _ in $(seq 1 100); do
        [ "$(dm_psql l_dst "SELECT count(*) FROM public.big")" -gt 10000 ] && break
        sleep 0.05
    done
    kill -9 "$pid"; wait "$pid" || true
    run -0 dm-load --db-env DST --table public.big "$DIR/big.rows"
    dm_tables_equal l_src l_dst public.big
}

@test "kill -9 during a long statement: the rerun is not refused (the backend stops within a second)" {
    # A table with rows takes the upsert path; its statement sleeps 60 s on row 500.
    dm_psql l_dst "INSERT INTO public.slow VALUES (1, md5('1'))" "INSERT INTO public.nap VALUES (60)"
    dm-load -q --db-env DST --table public.slow "$DIR/slow.rows" &
    pid=$!
    wait_nap
    dm_psql l_dst "DELETE FROM public.nap"
    kill -9 "$pid"; wait "$pid" || true
    # Right away: the killed load's backend still runs, and holds the lease, for a moment.
    start=$SECONDS
    run -0 dm-load --db-env DST --table public.slow "$DIR/slow.rows"
    assert_output "dm-load: public.slow: insert=999 update=0 delete=0 unchanged=1"
    ((SECONDS - start < 10))
    dm_tables_equal l_src l_dst public.slow
}

@test "a live load holding the lease: --wait 0 refuses at once (exit 6), --wait waits for it" {
    # The live load waits for a lock held until stall_end: a --wait 0 that waited for it
    # would never end (timeout makes that a failure, exit 124, instead of a hang).
    dm_psql l_dst "INSERT INTO public.slow VALUES (1, md5('1'))"
    stall_start SHARE public.slow
    dm-load -q --db-env DST --table public.slow "$DIR/slow.rows" 3>&- &
    pid=$!
    wait_for "the live load's lease" "SELECT count(*) = 1 FROM dm.lease"
    start=${EPOCHREALTIME/./}
    run -6 timeout 60 dm-load --db-env DST --table public.slow --wait 0 "$DIR/slow.rows"
    assert_output --partial "another run is loading this entity"
    # at once: well under the lease's 120 s, generous for a loaded machine
    ms=$(((${EPOCHREALTIME/./} - start) / 1000))
    ((ms < 15000)) || { echo "--wait 0 took $ms ms to refuse" >&2; false; }
    stall_end
    run -0 dm-load --db-env DST --table public.slow --wait 120 "$DIR/slow.rows"
    assert_output "dm-load: public.slow: insert=0 update=0 delete=0 unchanged=1000"
    wait "$pid"
    dm_tables_equal l_src l_dst public.slow
}

@test "bulk load of an empty table: indexes and foreign keys dropped, rebuilt exactly, data equal" {
    before=$(kid_schema)
    run -0 dm-load -v --db-env DST --table public.kid "$DIR/kid.rows"
    # kid_pkey (only its own kid_up_fkey uses it), kid_code_key, kid_v_key; kid_par_id_u,
    # kid_lower_v, kid_par; kid_par_id_fkey, kid_up_fkey (the NOT VALID one stays)
    assert_output --partial "bulk load: rebuilt 3 key(s), 3 index(es) and 2 foreign key(s)"
    assert_output --partial "FROM STDIN (FREEZE)"   # only itself references it: truncated first
    # as a superuser: the key to public.par is only switched off during the COPY
    assert_output --regexp "ALTER TABLE \"public\".\"kid\" DISABLE TRIGGER \"RI_ConstraintTrigger_c_[0-9]+\""
    assert_output --partial 'ALTER TABLE "public"."kid" DROP CONSTRAINT "kid_par_id_fkey", ADD CONSTRAINT "kid_par_id_fkey"'
    assert_line "dm-load: public.kid: insert=20000 update=0 delete=0 unchanged=0"
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
    run -0 dm-ckpt --db-env DST show public.kid
    assert_line "complete=true"
    # the keys work again: an orphan is refused, a cascade cascades
    run ! dm_psql l_dst "INSERT INTO public.kid (id, par_id) VALUES (99999, 12345)"
    dm_psql l_dst "DELETE FROM public.kid WHERE id = 9000"
    [ "$(dm_psql l_dst "SELECT count(*) FROM public.kid WHERE up = 9000")" = 0 ]
    # a second load finds rows: the upsert path, nothing dropped
    run -0 dm-load -v --db-env DST --table public.kid "$DIR/kid.rows"
    refute_output --partial "bulk load"
}

@test "bulk load by an owner that is not a superuser: the foreign keys are dropped first, rebuilt exactly" {
    dm_psql postgres "DO \$\$ BEGIN CREATE ROLE dm_owner LOGIN NOSUPERUSER; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
    dm_psql l_dst "GRANT CREATE ON DATABASE l_dst TO dm_owner" "GRANT USAGE ON SCHEMA public TO dm_owner" \
        "GRANT SELECT, REFERENCES ON public.par TO dm_owner" "GRANT SELECT ON public.nap TO dm_owner" \
        "ALTER TABLE public.kid OWNER TO dm_owner"
    export OWNER="$(dm_conninfo l_dst) user=dm_owner"
    before=$(kid_schema)
    # without CREATE on the schema it may not build an index: only the foreign keys go
    run -0 dm-load -v --db-env OWNER --table public.kid "$DIR/kid.rows"
    assert_output --partial "bulk load: rebuilt 0 key(s), 0 index(es) and 2 foreign key(s)"
    assert_output --partial 'ALTER TABLE "public"."kid" DROP CONSTRAINT "kid_par_id_fkey"'
    refute_output --partial "DISABLE TRIGGER"
    assert_line "dm-load: public.kid: insert=20000 update=0 delete=0 unchanged=0"
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
    dm_psql l_dst "TRUNCATE public.kid" "DELETE FROM dm.checkpoint" "GRANT CREATE ON SCHEMA public TO dm_owner"
    run -0 dm-load -v --db-env OWNER --table public.kid "$DIR/kid.rows"
    assert_output --partial "bulk load: rebuilt 3 key(s), 3 index(es) and 2 foreign key(s)"
    refute_output --partial "DISABLE TRIGGER"
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
}

@test "bulk load: rows breaking a foreign key or a unique key fail it whole, the table stays empty, constraints intact" {
    dm_psql l_dst "DELETE FROM public.par WHERE id = 77"
    before=$(kid_schema)
    run -1 dm-load --db-env DST --table public.kid "$DIR/kid.rows"
    assert_output --partial "dm-load: public.kid: the loaded rows break foreign key kid_par_id_fkey; nothing was loaded"
    assert_output --partial "Key (par_id)=(77) is not present"
    [ "$(dm_row_count l_dst public.kid)" = 0 ]
    [ "$(kid_schema)" = "$before" ]
    [ "$(dm_psql l_dst "SELECT outcome FROM dm.run WHERE entity = 'public.kid'")" = failed ]
    # a unique key broken by the rows (the destination has one the source has not)
    dm_psql l_dst "INSERT INTO public.par VALUES (77, 'p77')" \
        "ALTER TABLE public.kid ADD CONSTRAINT kid_one_per_par UNIQUE (par_id)"
    before=$(kid_schema)
    run -1 dm-load --db-env DST --table public.kid "$DIR/kid.rows"
    assert_output --partial "dm-load: public.kid: cannot build index kid_one_per_par again over the loaded rows; nothing was loaded"
    assert_output --partial "is duplicated"
    [ "$(dm_row_count l_dst public.kid)" = 0 ]
    [ "$(kid_schema)" = "$before" ]
    dm_psql l_dst "ALTER TABLE public.kid DROP CONSTRAINT kid_one_per_par"
    before=$(kid_schema)
    # an invalid stream too: exit 3, nothing loaded, nothing dropped
    head -c 400000 "$DIR/kid.rows" >"$DIR/kid.cut"
    run -3 dm-load --db-env DST --table public.kid "$DIR/kid.cut"
    [ "$(dm_row_count l_dst public.kid)" = 0 ]
    [ "$(kid_schema)" = "$before" ]
}

@test "bulk load killed (kill -9) in the middle: empty table, constraints intact, the rerun loads it" {
    before=$(kid_schema)
    dm_psql l_dst "INSERT INTO public.nap VALUES (60)"
    dm-load -q --db-env DST --table public.kid "$DIR/kid.rows" &
    pid=$!
    wait_nap
    dm_psql l_dst "DELETE FROM public.nap"
    kill -9 "$pid"; wait "$pid" || true
    start=$SECONDS
    run -0 dm-load --db-env DST --table public.kid "$DIR/kid.rows"
    assert_output "dm-load: public.kid: insert=20000 update=0 delete=0 unchanged=0"
    ((SECONDS - start < 10))
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
}

@test "bulk load with --disable-triggers: the trigger does not fire and is back on, in its mode" {
    # ALWAYS: session_replication_role = replica would not stop it, only disabling it does.
    dm_psql l_dst "ALTER TABLE public.kid ENABLE ALWAYS TRIGGER nap"
    before=$(kid_schema)
    run -0 dm-load -v --disable-triggers --db-env DST --table public.kid "$DIR/kid.rows"
    assert_output --partial "bulk load: rebuilt"
    assert_equal "$(dm_psql l_dst "SELECT count(*) FROM public.nap_log")" 0
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
    # Back on: the same row inserted again by hand fires it, and it logs.
    dm_psql l_dst "BEGIN; DELETE FROM public.kid WHERE id = 15000;
        INSERT INTO public.kid VALUES (15000, 1, 1, 7500, 'c15000', md5('15000')); COMMIT"
    assert_equal "$(dm_psql l_dst "SELECT tab || ':' || id FROM public.nap_log")" kid:15000
    dm_tables_equal l_src l_dst public.kid
}

@test "bulk load refused by the server (a lock it cannot get): rolled back quietly, loaded in batches" {
    # another session reads the table until stall_end; with lock_timeout, LOCK TABLE fails
    stall_start "ACCESS SHARE" public.kid
    before=$(kid_schema)
    PGOPTIONS="-c lock_timeout=200" run -0 dm-load -v --db-env DST --table public.kid "$DIR/kid.rows"
    assert_output --partial "no bulk load (query failed: ERROR:  canceling statement due to lock timeout): loading in batches"
    refute_line --regexp "^dm-load: public.kid: query failed"   # the refusal was not reported as an error
    assert_line "dm-load: public.kid: insert=20000 update=0 delete=0 unchanged=0"
    stall_end
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
}

@test "no bulk load: a role that does not own the table, or --no-bulk, loads in batches" {
    dm_psql postgres "DO \$\$ BEGIN CREATE ROLE dm_loader LOGIN; EXCEPTION WHEN duplicate_object THEN NULL; END \$\$"
    dm_psql l_dst "GRANT CREATE, TEMPORARY ON DATABASE l_dst TO dm_loader" "GRANT USAGE ON SCHEMA public TO dm_loader" \
        "GRANT SELECT, INSERT, UPDATE, DELETE ON public.kid TO dm_loader" "GRANT SELECT ON public.par, public.nap TO dm_loader"
    export LOADER="$(dm_conninfo l_dst) user=dm_loader"
    before=$(kid_schema)
    run -0 dm-load -v --db-env LOADER --table public.kid --batch-rows 5000 "$DIR/kid.rows"
    assert_output --partial "no bulk load: the table is not the role's"
    assert_line "dm-load: public.kid: insert=20000 update=0 delete=0 unchanged=0"
    refute_output --partial "bulk load: rebuilt"
    [ "$(kid_schema)" = "$before" ]
    dm_tables_equal l_src l_dst public.kid
    dm_createdb l_dst l_empty
    run -0 dm-load -v --db-env DST --table public.kid --no-bulk --batch-rows 5000 "$DIR/kid.rows"
    refute_output --partial "bulk load"
    run -0 dm-ckpt --db-env DST show public.kid
    assert_line --regexp "^batches=[2-9]$"
    dm_tables_equal l_src l_dst public.kid
}

@test "bulk load of a foreign-key cycle: both tables in one transaction, keys checked at the end" {
    before=$(dm_psql l_dst "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid IN ('public.ca'::regclass, 'public.cb'::regclass) ORDER BY 1")
    run -0 dm-load -v --db-env DST --table public.ca --table public.cb "$DIR/ca.rows" "$DIR/cb.rows"
    # their primary keys stay: the other table's foreign key uses each
    assert_output --partial "dm-load: public.ca: bulk load: rebuilt 0 key(s), 1 index(es) and 1 foreign key(s)"
    assert_output --partial "dm-load: public.cb: bulk load: rebuilt 0 key(s), 0 index(es) and 1 foreign key(s)"
    assert_line "dm-load: public.ca: insert=3000 update=0 delete=0 unchanged=0"
    assert_line "dm-load: public.cb: insert=3000 update=0 delete=0 unchanged=0"
    [ "$(dm_psql l_dst "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint
        WHERE conrelid IN ('public.ca'::regclass, 'public.cb'::regclass) ORDER BY 1")" = "$before" ]
    dm_tables_equal l_src l_dst public.ca
    dm_tables_equal l_src l_dst public.cb
    # a key between them that must stay as it is (NOT VALID): the group goes through staging
    dm_createdb l_dst l_empty
    dm_psql l_dst "ALTER TABLE public.cb DROP CONSTRAINT cb_ca_id_fkey" \
        "ALTER TABLE public.cb ADD CONSTRAINT cb_ca_id_fkey FOREIGN KEY (ca_id) REFERENCES public.ca NOT VALID"
    run -0 dm-load -v --db-env DST --table public.ca --table public.cb "$DIR/ca.rows" "$DIR/cb.rows"
    assert_output --partial "no bulk load (a foreign key between the group's tables must stay)"
    assert_line "dm-load: public.cb: insert=3000 update=0 delete=0 unchanged=0"
    dm_tables_equal l_src l_dst public.ca
    dm_tables_equal l_src l_dst public.cb
}

# fk_fixture DB: public.fp (100 parents) and children through foreign keys of every kind:
# fc by two keys without an index (one deferred, one ON DELETE RESTRICT), fi by an indexed
# one, fs by one ON DELETE SET NULL, fn by one NOT VALID (with an orphan row); none indexed
# but fi's.
fk_fixture() {
    dm_psql "$1" "CREATE TABLE public.fp (id int PRIMARY KEY, v text)" \
        "CREATE TABLE public.fc (id int PRIMARY KEY, fp_id int, fp2 int)" \
        "ALTER TABLE public.fc ADD CONSTRAINT fc_fp_fkey FOREIGN KEY (fp_id) REFERENCES public.fp
            DEFERRABLE INITIALLY DEFERRED" \
        "ALTER TABLE public.fc ADD CONSTRAINT fc_fp2_fkey FOREIGN KEY (fp2) REFERENCES public.fp ON DELETE RESTRICT" \
        "CREATE TABLE public.fi (id int PRIMARY KEY, fp_id int REFERENCES public.fp)" \
        "CREATE INDEX fi_fp ON public.fi (fp_id)" \
        "CREATE TABLE public.fs (id int PRIMARY KEY, fp_id int REFERENCES public.fp ON DELETE SET NULL)" \
        "CREATE TABLE public.fn (id int PRIMARY KEY, fp_id int)" \
        "INSERT INTO public.fp SELECT g, 'p' || g FROM generate_series(1, 100) g" \
        "INSERT INTO public.fc SELECT g, 1 + g % 100, 50 + g % 50 FROM generate_series(1, 2000) g" \
        "INSERT INTO public.fi SELECT g, 50 + g % 50 FROM generate_series(1, 100) g" \
        "INSERT INTO public.fs SELECT g, 1 + g % 100 FROM generate_series(1, 100) g" \
        "INSERT INTO public.fn VALUES (1, 60), (2, 999)" \
        "ALTER TABLE public.fn ADD CONSTRAINT fn_fp_fkey FOREIGN KEY (fp_id) REFERENCES public.fp NOT VALID"
}

# fk_keys DB: every foreign key to public.fp, as the catalog has it.
fk_keys() {
    dm_psql "$1" "SELECT conrelid::regclass, conname, convalidated, condeferrable, condeferred,
        pg_get_constraintdef(oid) FROM pg_constraint WHERE confrelid = 'public.fp'::regclass ORDER BY 1, 2"
}

# fk_park TABLE RUN: parks in l_dst, under run RUN, the deletes that make TABLE as in l_fsrc.
fk_park() {
    dm-diff -q --delete <(dm-extract --db-env FSRC --table "$1") <(dm-extract --db-env DST --table "$1" --hashes) \
        >"$DIR/fk.deletes"
    dm-load -q --db-env DST --table "$1" --defer-deletes --run-id "$2" "$DIR/fk.deletes"
}

@test "--apply-deletes of parents whose children are gone: unindexed keys dropped, re-added identical and checked" {
    fk_fixture l_dst
    dm_createdb l_fsrc l_dst
    export FSRC=$(dm_conninfo l_fsrc)
    # the source deleted parents 1 to 8 with their children (fc's by either key)
    dm_psql l_fsrc "DELETE FROM public.fc WHERE fp_id <= 8" "DELETE FROM public.fp WHERE id <= 8"
    before=$(fk_keys l_dst)
    fk_park public.fc R1
    fk_park public.fp R1
    run -0 dm-load --db-env DST --table public.fc --apply-deletes --run-id R1 --force
    assert_output "dm-load: public.fc: insert=0 update=0 delete=160 unchanged=0"
    run -0 dm-load -v --db-env DST --table public.fp --apply-deletes --run-id R1
    assert_line "dm-load: public.fp: deleted with 2 unindexed foreign key(s) dropped and checked again once each"
    assert_line "dm-load: public.fp: insert=0 update=0 delete=8 unchanged=0"
    [ "$(fk_keys l_dst)" = "$before" ]
    dm_tables_equal l_fsrc l_dst public.fp
    dm_tables_equal l_fsrc l_dst public.fc
    # the SET NULL key stayed and did its work; nothing is left parked
    [ "$(dm_psql l_dst "SELECT count(*) FROM public.fs WHERE fp_id IS NULL")" = 8 ]
    [ "$(dm_psql l_dst "SELECT count(*) FROM dm.pending_delete")" = 0 ]
}

@test "--apply-deletes of parents a child still references: rolled back whole, the key named and intact" {
    fk_fixture l_dst
    dm_createdb l_fsrc l_dst
    export FSRC=$(dm_conninfo l_fsrc)
    dm_psql l_fsrc "DELETE FROM public.fc WHERE fp_id <= 8" "DELETE FROM public.fp WHERE id <= 8"
    fk_park public.fc R1
    fk_park public.fp R1
    # the children's deletes not applied, but one: fc row 3 still references parent 3
    dm_psql l_dst "DELETE FROM public.fc WHERE fp_id <= 8 AND id <> 3"
    before=$(fk_keys l_dst)
    run -1 dm-load --db-env DST --table public.fp --apply-deletes --run-id R1
    assert_output --partial "dm-load: public.fp: rows of public.fc still reference rows to delete, through foreign key fc_fp_fkey; nothing was deleted"
    [ "$(dm_row_count l_dst public.fp)" = 100 ]
    [ "$(fk_keys l_dst)" = "$before" ]
    [ "$(dm_psql l_dst "SELECT count(*) FROM dm.pending_delete WHERE entity = 'public.fp'")" = 8 ]
    # a NOT VALID key, one with an action, an indexed one, or a single row: the row-by-row checks
    run -0 dm-load -v --db-env DST --table public.fc --apply-deletes --run-id R1 --force
    dm_psql l_dst "ALTER TABLE public.fc DROP CONSTRAINT fc_fp_fkey, DROP CONSTRAINT fc_fp2_fkey"
    run -0 dm-load -v --db-env DST --table public.fp --apply-deletes --run-id R1
    refute_output --partial "unindexed foreign key"
    assert_line "dm-load: public.fp: insert=0 update=0 delete=8 unchanged=0"
}

# follow_pair: f_src and f_dst, a parent and a child table, equal to begin with.
follow_pair() {
    local db
    for db in f_src f_dst; do
        dm_createdb "$db"
        dm_psql "$db" "CREATE TABLE public.fp (id int PRIMARY KEY, v text)" \
            "CREATE TABLE public.fc (id int PRIMARY KEY, fp_id int NOT NULL REFERENCES public.fp, v text)"
    done
    dm_psql f_src "INSERT INTO public.fp SELECT g, 'p' || g FROM generate_series(1, 10) g" \
        "INSERT INTO public.fc SELECT g, 1 + g % 10, 'c' || g FROM generate_series(1, 30) g"
    dm_psql f_dst "INSERT INTO public.fp SELECT g, 'p' || g FROM generate_series(1, 10) g" \
        "INSERT INTO public.fc SELECT g, 1 + g % 10, 'c' || g FROM generate_series(1, 30) g"
    export FSRC=$(dm_conninfo f_src) FDST=$(dm_conninfo f_dst)
}

# follow_changes: the changes stream of fp and fc, source against destination, in $DIR/fp.ch and $DIR/fc.ch.
follow_changes() {
    local t
    for t in fp fc; do
        dm-diff --delete <(dm-extract --db-env FSRC --table "public.$t") \
            <(dm-extract --db-env FDST --table "public.$t" --hashes) >"$BATS_TEST_TMPDIR/$t.ch"
    done
}

follow_position() {
    dm_psql f_dst "SELECT applied_lsn || ' ' || coalesce(commit_time::text, '-') FROM dm.follow WHERE slot = 's1'"
}

@test "--follow: bad arguments are usage errors" {
    : >"$BATS_TEST_TMPDIR/x"
    run -2 dm-load --db-env DST --follow s1 --table public.par "$BATS_TEST_TMPDIR/x"
    run -2 dm-load --db-env DST --lsn 0/1 --table public.par "$BATS_TEST_TMPDIR/x"
    run -2 dm-load --db-env DST --follow s1 --lsn 0/1 --defer-deletes --table public.par "$BATS_TEST_TMPDIR/x"
    run -2 dm-load --db-env DST --follow s1 --lsn 0/1 --table public.par
    run -2 dm-load --db-env DST --follow s1 --lsn 0/1 --apply-deletes --table public.par
    run -2 dm-load --db-env DST --follow s1 --lsn 0x1 --table public.par "$BATS_TEST_TMPDIR/x"
    assert_output --partial "--lsn 0x1: expected a position as PostgreSQL prints it"
    run -2 dm-load --db-env DST --follow s1 --lsn 0/1 --from x --table public.par "$BATS_TEST_TMPDIR/x"
    run -2 dm-load --db-env DST --from 0/1 --table public.par "$BATS_TEST_TMPDIR/x"
}

@test "--follow: a batch of several tables and its position land in one transaction; the position never goes back" {
    follow_pair
    # the start: a position without rows (dm-ckpt follow shows it)
    run -0 dm-load --db-env FDST --follow s1 --lsn 0/100
    run -0 dm-ckpt --db-env FDST follow s1
    assert_output --regexp $'^s1\t0/100\t-\t'
    # parents deleted with their children, a new parent with a new child, an update: one batch
    dm_psql f_src "DELETE FROM public.fc WHERE fp_id = 3" "DELETE FROM public.fp WHERE id = 3" \
        "INSERT INTO public.fp VALUES (11, 'new')" "INSERT INTO public.fc VALUES (31, 11, 'new')" \
        "UPDATE public.fc SET v = 'changed' WHERE id = 5"
    follow_changes
    run -0 dm-load --db-env FDST --follow s1 --lsn 0/2000 --commit-time '2026-12-05 01:02:03+00' \
        --table public.fp --table public.fc "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.ch"
    assert_line "dm-load: public.fp: insert=1 update=0 delete=1 unchanged=0"
    assert_line "dm-load: public.fc: insert=1 update=1 delete=3 unchanged=0"
    dm_tables_equal f_src f_dst public.fp
    dm_tables_equal f_src f_dst public.fc
    run -0 follow_position
    assert_output "0/2000 2026-12-05 01:02:03+00"
    # dm.run counts the batch once (its progress record and its final one are one batch)
    run -0 dm_psql f_dst "SELECT inserted || ' ' || updated || ' ' || deleted || ' ' || batches FROM dm.run WHERE entity = 'public.fc'"
    assert_output "1 1 3 1"
    # an older position (a batch applied again) leaves the recorded one where it is
    follow_changes
    run -0 dm-load --db-env FDST --follow s1 --lsn 0/1000 --table public.fp --table public.fc \
        "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.ch"
    run -0 follow_position
    assert_output "0/2000 2026-12-05 01:02:03+00"
    # a batch with one stream cut short: nothing of it lands, the position stays
    dm_psql f_src "UPDATE public.fp SET v = 'again' WHERE id = 1" \
        "INSERT INTO public.fc SELECT g, 1, 'more' FROM generate_series(100, 3000) g"
    follow_changes
    head -c 20000 "$BATS_TEST_TMPDIR/fc.ch" >"$BATS_TEST_TMPDIR/fc.cut"
    run -3 dm-load --db-env FDST --follow s1 --lsn 0/3000 --table public.fp --table public.fc \
        "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.cut"
    run -0 dm_psql f_dst "SELECT v FROM public.fp WHERE id = 1"
    assert_output "p1"
    run -0 dm_psql f_dst "SELECT count(*) FROM public.fc WHERE id >= 100"
    assert_output 0
    run -0 follow_position
    assert_output "0/2000 2026-12-05 01:02:03+00"
    # whole again: it lands, and the position moves
    run -0 dm-load --db-env FDST --follow s1 --lsn 0/3000 --table public.fp --table public.fc \
        "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.ch"
    dm_tables_equal f_src f_dst public.fp
    dm_tables_equal f_src f_dst public.fc
    run -0 follow_position
    assert_output "0/3000 -"
    # a stale batch (it started at 0/2000; a killed follower's dm-load running on): refused, nothing lands
    dm_psql f_src "UPDATE public.fp SET v = 'stale' WHERE id = 2"
    follow_changes
    run -6 dm-load --db-env FDST --follow s1 --lsn 0/2800 --from 0/2000 --table public.fp --table public.fc \
        "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.ch"
    assert_output --partial "slot s1: the destination is at 0/3000, not at 0/2000 where this batch starts"
    run -0 dm_psql f_dst "SELECT v FROM public.fp WHERE id = 2"
    assert_output "p2"
    run -0 follow_position
    assert_output "0/3000 -"
    # from where the destination is: applied
    run -0 dm-load --db-env FDST --follow s1 --lsn 0/4000 --from 0/3000 --table public.fp --table public.fc \
        "$BATS_TEST_TMPDIR/fp.ch" "$BATS_TEST_TMPDIR/fc.ch"
    dm_tables_equal f_src f_dst public.fp
    # counted once each: fc got 1 insert in the first batch, 2,901 in the last (ids 100 to 3000)
    run -0 dm_psql f_dst "SELECT sum(inserted) FROM dm.run WHERE entity = 'public.fc'"
    assert_output 2902
}
