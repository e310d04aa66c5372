#!/usr/bin/env bats
# dm-extract: reads a table as a stream; the awkward fixture survives a round trip
# through dm-extract | dm-load, and hashes do not depend on the server's settings.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb awk_src
    dm_load_fixture awk_src awkward
    dm_createdb awk_dst awk_src
    dm_psql awk_dst "TRUNCATE awk.texts, awk.bytes, awk.ints, awk.numerics, awk.floats, awk.jsons,
        awk.arrays, awk.times, awk.misc, awk.composite, awk.text_key, awk.numeric_key, awk.changes, awk.tree"
}

teardown_file() {
    dm_teardown_cluster
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-extract
    assert_output --partial "usage: dm-extract"
    run -2 dm-extract --bogus
    run -2 dm-extract --db "$(dm_conninfo awk_src)" --table notqualified
    run -2 dm-extract --db-env DM_NOT_SET_ANYWHERE --table awk.ints
    assert_output --partial "DM_NOT_SET_ANYWHERE is not set"
    run -0 dm-extract --version
    assert_output "dm-extract (dm) 0.1.0"
    run -0 dm-extract --help
    assert_output --partial "--hashes"
}

@test "unknown table, missing primary key (exit 1), unreachable server (exit 7): one clear line" {
    run -1 dm-extract --db "$(dm_conninfo awk_src)" --table awk.nope
    assert_output "dm-extract: awk.nope: no table awk.nope: check the name (schema.table, case-sensitive)"
    run -1 dm-extract --db "$(dm_conninfo awk_src)" --table awk.no_pk
    assert_output --partial "has no primary key"
    # unreachable is worth retrying later: exit 7, not 1
    run -7 dm-extract --db "host=$DM_TEST_HOST port=1 user=postgres dbname=x" --table awk.ints
    assert_output --partial "cannot connect to database"
    [ "${#lines[@]}" -eq 1 ]
}

@test "every awkward value survives dm-extract | dm-load exactly" {
    export SRC=$(dm_conninfo awk_src) DST=$(dm_conninfo awk_dst)
    for t in texts bytes ints numerics floats jsons arrays times misc composite text_key numeric_key changes tree; do
        dm-extract --db-env SRC --table "awk.$t" | dm-load -q --db-env DST --table "awk.$t" --batch-rows 0
        dm_tables_equal awk_src awk_dst "awk.$t"
    done
}

@test "keys come out in byte order and integer order, whatever the collation" {
    run -0 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.text_key | dm-cat | sed -n '2,6p' | cut -d, -f1"
    assert_output $'[""\n[" "\n["-1"\n["1"\n["10"'
    run -0 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.composite | dm-cat | sed -n '2,3p'"
    assert_line --index 0 --partial '"-2147483648",""'
}

@test "hashes agree across servers with different TimeZone, DateStyle, float digits, money locale" {
    dm_createdb awk_other awk_src
    dm_psql postgres "ALTER DATABASE awk_other SET TimeZone = 'Pacific/Chatham'" \
        "ALTER DATABASE awk_other SET DateStyle = 'SQL, DMY'" \
        "ALTER DATABASE awk_other SET IntervalStyle = 'sql_standard'" \
        "ALTER DATABASE awk_other SET extra_float_digits = '-3'" \
        "ALTER DATABASE awk_other SET bytea_output = 'escape'"
    for t in texts bytes ints numerics floats jsons arrays times misc composite text_key numeric_key changes; do
        run -0 dm-diff --check <(dm-extract --db "$(dm_conninfo awk_src)" --table "awk.$t" --hashes) \
            <(dm-extract --db "$(dm_conninfo awk_other)" --table "awk.$t" --hashes)
    done
}

@test "--since keeps rows at or after the value; the watermark is the largest change" {
    run -0 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.changes --since '2024-01-02 00:00:00+00' | dm-cat"
    # ties at the value are kept, older rows are not
    assert_line --partial '["2","tie a"'
    assert_line --partial '["6","other zone"'
    refute_line --partial '"first"'
    refute_line --partial '"old"'
    assert_line --partial '"watermark":"2100-01-01 00:00:00+00"'
    run -0 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.changes --since '2024-01-02 00:00:00+00' --overlap '1 day' | dm-cat"
    assert_line --partial '"first"'
    run -1 dm-extract --db "$(dm_conninfo awk_src)" --table awk.composite --since 2024-01-01
    assert_output --partial "needs a change column"
}

@test "a closed pipe is an error, not a silent short stream" {
    run -1 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.bytes | head -c 10 >/dev/null; exit \${PIPESTATUS[0]}"
}

@test "a role that does not exist is not worth retrying: exit 1" {
    run -1 dm-extract --db "host=$DM_TEST_HOST port=$DM_TEST_PORT user=nobody_here dbname=x" --table awk.ints
    assert_output --partial 'role "nobody_here" does not exist'
}

@test "--keys: bad key streams are refused with a reason" {
    run -2 dm-extract --db "$(dm_conninfo awk_src)" --table awk.ints --keys "$BATS_TEST_TMPDIR/none"
    assert_output --partial "awk.ints: --keys $BATS_TEST_TMPDIR/none: No such file or directory"
    dm-extract --db "$(dm_conninfo awk_src)" --table awk.composite --hashes >"$BATS_TEST_TMPDIR/two"
    run -2 dm-extract --db "$(dm_conninfo awk_src)" --table awk.text_key --keys "$BATS_TEST_TMPDIR/two"
    assert_output --partial "the stream's keys have 2 column(s), the table's key 1"
    head -c 100 "$BATS_TEST_TMPDIR/two" >"$BATS_TEST_TMPDIR/cut"
    run -3 dm-extract --db "$(dm_conninfo awk_src)" --table awk.composite --keys "$BATS_TEST_TMPDIR/cut"
    run -2 dm-extract --db "$(dm_conninfo awk_src)" --export-snapshot --keys "$BATS_TEST_TMPDIR/two"
}

# The key set of each table, as SQL over the table: awkward texts, extremes, NUL-free escapes.
keyset() {
    case $1 in
        composite) echo "a IN (-2147483648, 3) OR b = 'é'" ;;
        text_key) echo "v % 3 = 0" ;;
        numeric_key) echo "k <= 1" ;;
    esac
}

@test "--keys: only the rows of the keys given are read, a key the source lost becomes a delete, other rows stay as they are" {
    local t keys=$BATS_TEST_TMPDIR/keys
    # the key sets, made in SQL; one key of composite the source never had
    dm_createdb awk_keys awk_src
    for t in composite text_key numeric_key; do
        dm_psql awk_keys "DELETE FROM awk.$t WHERE NOT ($(keyset $t))"
    done
    dm_psql awk_keys "INSERT INTO awk.composite VALUES (99, 'gone', 'x')"
    # a destination that differs everywhere, and has that extra row
    dm_createdb awk_kdst awk_src
    dm_psql awk_kdst "UPDATE awk.composite SET v = 'stale'" "INSERT INTO awk.composite VALUES (99, 'gone', 'x')" \
        "UPDATE awk.text_key SET v = -v" "UPDATE awk.numeric_key SET v = 'stale'"
    # expected, without dm: the source's rows inside each key set, the stale ones outside
    dm_createdb awk_kexp awk_src
    dm_psql awk_kexp "UPDATE awk.composite SET v = 'stale' WHERE NOT ($(keyset composite))" \
        "UPDATE awk.text_key SET v = -v WHERE NOT ($(keyset text_key))" \
        "UPDATE awk.numeric_key SET v = 'stale' WHERE NOT ($(keyset numeric_key))"
    for t in composite text_key numeric_key; do
        dm-extract --db "$(dm_conninfo awk_keys)" --table "awk.$t" --hashes >"$keys.$t"
        # the source reads only the key set
        run -0 bash -c "dm-extract --db '$(dm_conninfo awk_src)' --table awk.$t --keys '$keys.$t' | dm-cat | sed '1d;\$d' | wc -l"
        local want
        want=$(dm_psql awk_src "SELECT count(*) FROM awk.$t WHERE $(keyset "$t")")
        [[ "$output" == "$want" ]] || { echo "awk.$t: $output rows read, $want in the key set" >&2; false; }
        dm-diff --delete <(dm-extract --db "$(dm_conninfo awk_src)" --table "awk.$t" --keys "$keys.$t") \
            <(dm-extract --db "$(dm_conninfo awk_kdst)" --table "awk.$t" --keys "$keys.$t" --hashes) |
            dm-load -q --db "$(dm_conninfo awk_kdst)" --table "awk.$t" --force
        dm_tables_equal awk_kexp awk_kdst "awk.$t"
    done
}

@test "--key-from/--key-before: ranges of the key tile the table, say so in the header, and dm-diff compares only equal ranges" {
    local src=$(dm_conninfo awk_src) k0 k1
    run -0 bash -c "dm-extract --db '$src' --table awk.ints | dm-cat | sed '1d;\$d' | wc -l"
    local all=$output
    k0=$(dm_psql awk_src "SELECT id FROM awk.ints ORDER BY id OFFSET 2 LIMIT 1")
    k1=$(dm_psql awk_src "SELECT id FROM awk.ints ORDER BY id OFFSET 5 LIMIT 1")
    run -0 bash -c "dm-extract --db '$src' --table awk.ints --key-before '$k0' | dm-cat | sed '1d;\$d' | wc -l"
    assert_output 2
    run -0 bash -c "dm-extract --db '$src' --table awk.ints --key-from '$k0' --key-before '$k1' | dm-cat | sed '1d;\$d' | wc -l"
    assert_output 3
    run -0 bash -c "dm-extract --db '$src' --table awk.ints --key-from '$k1' | dm-cat | sed '1d;\$d' | wc -l"
    assert_output "$((all - 5))"
    run -0 bash -c "dm-extract --db '$src' --table awk.ints --key-from '$k0' --key-before '$k1' | dm-cat | head -n 1"
    assert_output --partial "\"key_range\":[\"$k0\",\"$k1\"]"
    run -0 bash -c "dm-extract --db '$src' --table awk.ints | dm-cat | head -n 1"
    refute_output --partial key_range
    # a value that is not of the key's type fails in the server, with its message
    run -1 dm-extract --db "$src" --table awk.ints --key-from abc
    assert_output --partial "invalid input syntax"
    # one side ranged, the other whole: a key missing from one is not a delete
    run -1 dm-diff --delete <(dm-extract --db "$src" --table awk.ints --key-before "$k1") \
        <(dm-extract --db "$src" --table awk.ints --hashes)
    assert_output --partial "key range mismatch"
    run -1 dm-diff --delete <(dm-extract --db "$src" --table awk.ints --key-before "$k1") \
        <(dm-extract --db "$src" --table awk.ints --key-before "$k0" --hashes)
    run -0 dm-diff --check <(dm-extract --db "$src" --table awk.ints --key-from "$k0" --key-before "$k1") \
        <(dm-extract --db "$src" --table awk.ints --key-from "$k0" --key-before "$k1" --hashes)
    run -2 dm-extract --db "$src" --export-snapshot --key-from 1
}
