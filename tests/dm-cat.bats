#!/usr/bin/env bats
# dm-cat: streams as JSON lines; damaged streams are reported.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb k_src
    dm_psql k_src "CREATE TABLE public.t (id int PRIMARY KEY, s text, b bytea)" \
        "INSERT INTO public.t VALUES (1, NULL, '\\x00ff'), (2, '', NULL), (3, E'q\"\\\\\\n', NULL)"
    dm-extract --db "$(dm_conninfo k_src)" --table public.t >"$BATS_FILE_TMPDIR/t.rows"
}

teardown_file() {
    dm_teardown_cluster
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-cat --bogus
    assert_output "usage: dm-cat [-q] [-v] [FILE]"
    run -2 dm-cat a b
    assert_output "usage: dm-cat [-q] [-v] [FILE]"
    run -1 dm-cat /nonexistent
    assert_output "dm-cat: cannot open /nonexistent: No such file or directory"
}

@test "header, rows and trailer as JSON lines; NULL, empty, bytea and escapes kept apart" {
    run -0 dm-cat "$BATS_FILE_TMPDIR/t.rows"
    assert_line --index 0 --partial '"kind":"rows","entity":"public.t"'
    assert_line --index 1 '["1",null,{"bytea":"00ff"}]'
    assert_line --index 2 '["2","",null]'
    assert_line --index 3 '["3","q\"\\\n",null]'
    assert_line --index 4 '{"end":true,"rows":3,"watermark":null}'
    run -0 dm-cat < "$BATS_FILE_TMPDIR/t.rows"
}

@test "a truncated stream prints what it can, then exits 3" {
    head -c 120 "$BATS_FILE_TMPDIR/t.rows" >"$BATS_FILE_TMPDIR/cut"
    run -3 dm-cat "$BATS_FILE_TMPDIR/cut"
    assert_output --partial "invalid stream"
}
