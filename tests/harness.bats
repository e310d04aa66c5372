#!/usr/bin/env bats
# tests/harness.bats - proves the test harness itself (tests/common.bash,
# tests/lib/cluster.sh, tests/fixtures/awkward.sql) before any dm test relies on it:
# the cluster, the datasets, and above all that the comparator can say "different".

load common

setup_file() {
    dm_setup_cluster
    dm_pagila_template
}

teardown_file() {
    dm_teardown_cluster
}

# Extra clusters started by single tests are stopped even when the test fails.
teardown() {
    if [[ -n "${EXTRA_CLUSTER:-}" ]]; then
        cluster_stop "$EXTRA_CLUSTER"
    fi
}

@test "cluster: socket only, durability off, connects as role postgres" {
    run dm_psql postgres "SELECT current_user, current_setting('listen_addresses'),
        current_setting('fsync'), current_setting('server_encoding')"
    assert_success
    assert_output "postgres||off|UTF8"
    [ -S "$DM_TEST_HOST/.s.PGSQL.$DM_TEST_PORT" ]
    # Plain psql reaches the test cluster too (PGHOST/PGPORT/PGUSER are exported).
    run psql -X -qAt -d postgres -c "SELECT current_setting('port')"
    assert_output "$DM_TEST_PORT"
}

@test "helpers: conninfo, dm_use, bin/ first on PATH, dm_psql reads stdin" {
    assert_equal "$(dm_conninfo db1)" "host=$DM_TEST_HOST port=$DM_TEST_PORT user=postgres dbname=db1"
    dm_use src1 dst1
    assert_equal "$DM_SOURCE" "$(dm_conninfo src1)"
    assert_equal "$DM_DEST" "$(dm_conninfo dst1)"
    [[ "$PATH" == "$DM_REPO/bin:"* ]]
    run dm_psql postgres <<<"SELECT 1 + 1; SELECT 'two lines';"
    assert_success
    assert_output $'2\ntwo lines'
    run dm_psql postgres "SELECT 1/0"
    assert_failure
    assert_output --partial "division by zero"
}

@test "pagila: 15 tables with the published row counts" {
    run dm_psql pagila_tpl "SELECT count(*) FROM pg_class c
        JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition"
    assert_output 15
    local t counts=""
    for t in actor address category city country customer film film_actor \
        film_category inventory language payment rental staff store; do
        counts+="$t $(dm_row_count pagila_tpl "public.$t")"$'\n'
    done
    assert_equal "$counts" "actor 200
address 603
category 16
city 600
country 109
customer 599
film 1000
film_actor 5462
film_category 1000
inventory 4581
language 6
payment 16044
rental 16044
staff 2
store 2
"
}

@test "comparator: two template copies of pagila are equal; one UPDATE makes them differ" {
    dm_pagila_db h_a
    dm_pagila_db h_b
    dm_tables_equal h_a h_b public.rental
    dm_all_tables_equal h_a h_b

    dm_psql h_b "UPDATE public.rental SET staff_id = 3 - staff_id WHERE rental_id = 100"
    run dm_tables_equal h_a h_b public.rental
    assert_failure 1
    assert_output --partial "public.rental differs"
    run dm_all_tables_equal h_a h_b
    assert_failure 1
    assert_output --partial "first differing table: public.rental"
    # Unchanged tables still compare equal.
    dm_tables_equal h_a h_b public.film
}

@test "comparator: a deleted row in one payment partition is found in that leaf" {
    dm_pagila_db h_c
    dm_psql h_c "DELETE FROM public.payment WHERE payment_id =
        (SELECT min(payment_id) FROM public.payment_p2007_03)"
    run dm_all_tables_equal pagila_tpl h_c
    assert_failure 1
    assert_output --partial "first differing table: public.payment_p2007_03"
}

@test "comparator: missing table is an error (2), column order does not matter" {
    run dm_tables_equal pagila_tpl h_a public.no_such_table
    assert_failure 2
    dm_createdb h_d
    dm_psql h_d "CREATE TABLE public.language (name character(20), last_update timestamp,
                                              language_id integer)"
    dm_psql pagila_tpl "COPY public.language (name, last_update, language_id) TO STDOUT" |
        dm_psql h_d "COPY public.language (name, last_update, language_id) FROM STDIN"
    dm_tables_equal pagila_tpl h_d public.language
    # Tables missing in the destination are skipped, but something must be compared.
    dm_all_tables_equal pagila_tpl h_d
    run dm_all_tables_equal h_d postgres
    assert_failure 2
    assert_output --partial "no common table"
    # A destination table that lacks a column cannot be compared: error, named.
    dm_psql h_d "CREATE TABLE public.category (category_id integer, name text)"
    run dm_all_tables_equal pagila_tpl h_d
    assert_failure 2
    assert_output --partial "first differing table: public.category"
}

@test "awkward fixture: loads, keeps its awkward values, copies compare equal" {
    dm_createdb awk_a
    dm_load_fixture awk_a awkward
    run dm_psql awk_a "SELECT count(*) FROM pg_tables WHERE schemaname = 'awk'"
    assert_output 15
    run dm_psql awk_a "SELECT length(b), encode(substr(b, 1, 3), 'hex'),
        encode(substr(b, 254), 'hex') FROM awk.bytes WHERE id = 4"
    assert_output "256|000102|fdfeff"
    run dm_psql awk_a "SET extra_float_digits = 3;
        SELECT f8::text FROM awk.floats WHERE id IN (4, 6) ORDER BY id"
    assert_output $'-0\n1e-310'
    run dm_psql awk_a "SELECT n::text FROM awk.numerics WHERE id IN (1, 8, 9) ORDER BY id"
    assert_output $'1.500\nNaN\nInfinity'
    run dm_psql awk_a "SELECT t IS NULL, t = '' FROM awk.texts WHERE id IN (0, 1) ORDER BY id"
    assert_output $'t|\nf|t'
    # The C (byte) order dm must produce differs from the table's own collation order.
    run dm_psql awk_a "SELECT string_agg(k, ' ' ORDER BY k COLLATE \"C\")
        FROM awk.text_key WHERE k IN ('a', 'B', '_x', 'é', 'Z')"
    assert_output "B Z _x a é"

    dm_createdb awk_b awk_a
    dm_all_tables_equal awk_a awk_b
}

@test "comparator: subtle value changes in the awkward fixture are differences" {
    local change changes
    mapfile -t changes <<'EOF'
UPDATE awk.texts SET t = NULL WHERE id = 1
UPDATE awk.texts SET t = NULL WHERE id = 8
UPDATE awk.texts SET t = rtrim(t) WHERE id = 3
UPDATE awk.floats SET f8 = 0 WHERE id = 4
UPDATE awk.floats SET f8 = 1e-309 WHERE id = 6
UPDATE awk.numerics SET n = 1.5 WHERE id = 1
UPDATE awk.jsons SET j = '{"b": 1, "a": [1, 2, {"c": null}]}' WHERE id = 5
UPDATE awk.bytes SET b = set_byte(b, 100, 0) WHERE id = 4
UPDATE awk.times SET tstz = tstz + interval '1 microsecond' WHERE id = 6
INSERT INTO awk.no_pk VALUES (1, 'one')
EOF
    # One fresh copy per change, so each change alone must be detected.
    for change in "${changes[@]}"; do
        dm_createdb awk_c awk_a
        dm_psql awk_c "$change"
        run dm_all_tables_equal awk_a awk_c
        if [[ "$status" -ne 1 ]]; then
            echo "not detected (status $status): $change"
            return 1
        fi
    done
}

@test "cluster.sh: runnable; tcp with scram; survives a crash and restarts" {
    EXTRA_CLUSTER=$(mktemp -d /tmp/dm-extra.XXXXXX)
    run "$DM_REPO/tests/lib/cluster.sh" start "$EXTRA_CLUSTER" tcp
    assert_success
    assert_output --regexp "^host=$EXTRA_CLUSTER port=[0-9]+ user=postgres$"
    local port ci
    port=$(<"$EXTRA_CLUSTER/port")
    ci="host=127.0.0.1 port=$port user=postgres dbname=postgres"
    assert_equal "$(cluster_conninfo_tcp postgres "$EXTRA_CLUSTER")" "$ci"

    # TCP needs the password (scram-sha-256); the socket does not (trust).
    run env -u PGPASSWORD psql -X -w -qAt -d "$ci" -c "SELECT 1"
    assert_failure
    run env PGPASSWORD="$CLUSTER_PASSWORD" psql -X -qAt -d "$ci" -c "SELECT 1"
    assert_output 1

    # A crash (immediate stop) loses nothing committed; restart recovers it.
    ci=$(cluster_conninfo postgres "$EXTRA_CLUSTER")
    psql -X -q -v ON_ERROR_STOP=1 -d "$ci" -c "CREATE TABLE t AS SELECT 42 AS x"
    cluster_kill "$EXTRA_CLUSTER"
    run psql -X -qAt -d "$ci" -c "SELECT 1"
    assert_failure
    cluster_restart "$EXTRA_CLUSTER"
    run psql -X -qAt -d "$ci" -c "SELECT x FROM t"
    assert_output 42

    run "$DM_REPO/tests/lib/cluster.sh" stop "$EXTRA_CLUSTER"
    assert_success
    [ ! -e "$EXTRA_CLUSTER" ]
}

@test "cluster.sh: refuses bad directories with one clear line, leaves nothing behind" {
    run cluster_start "/tmp/$(printf 'x%.0s' {1..100})"
    assert_failure
    assert_output --partial "too long for a unix socket path"
    EXTRA_CLUSTER=$(mktemp -d /tmp/dm-extra.XXXXXX)
    touch "$EXTRA_CLUSTER/precious"
    run cluster_start "$EXTRA_CLUSTER"
    assert_failure
    assert_output --partial "not empty"
    [ -e "$EXTRA_CLUSTER/precious" ]
    rm -rf "$EXTRA_CLUSTER"
    PG_BINDIR=/nonexistent run cluster_start "$EXTRA_CLUSTER"
    assert_failure
    assert_output --partial "has no initdb"
    [ ! -e "$EXTRA_CLUSTER" ]
}
