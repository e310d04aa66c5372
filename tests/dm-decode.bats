#!/usr/bin/env bats
# dm-decode: follows the source by logical decoding into a change feed of keys, on a
# cluster started with wal_level = logical. Every expectation is read from the server
# (pg_replication_slots, psql) or written out by hand, never from dm's own counts.
# Each test has its own database, so its own slot and publication.

load common
bats_require_minimum_version 1.5.0

setup_file() {
    CLUSTER_WAL_LEVEL=logical dm_setup_cluster
    dm_psql postgres "CREATE ROLE norepl LOGIN"
}

teardown_file() {
    dm_teardown_cluster
}

# src_db NAME: a fresh source database NAME, with three keyed tables and one without a key.
src_db() {
    dm_createdb "$1"
    dm_psql "$1" <<'SQL'
CREATE TABLE public.a (id integer PRIMARY KEY, v text);
CREATE TABLE public.b (k1 text, k2 integer, v text, PRIMARY KEY (k1, k2));
CREATE TABLE public.c (id integer PRIMARY KEY, v text);
CREATE TABLE public.nokey (v text);
INSERT INTO public.a VALUES (1, 'one'), (2, 'two');
SQL
    SRC=$(dm_conninfo "$1")
    export SRC
}

# wait_for WHAT CMD...: poll CMD (5 times a second) until it succeeds; fail after 60 s
# saying WHAT did not happen and how to replay the test.
wait_for() {
    local what=$1 deadline=$((SECONDS + 60))
    shift
    until "$@" >/dev/null 2>&1; do
        if ((SECONDS >= deadline)); then
            echo "waited 60 s for $what; replay: bats tests/dm-decode.bats -f '$BATS_TEST_DESCRIPTION'" >&2
            return 1
        fi
        sleep 0.2
    done
}

# feed_py FILE CODE: run python3 CODE over the feed's messages as dm-cat prints them
# (a list m of JSON objects). python3 rather than jq: it is already a test dependency.
feed_py() {
    dm-cat "$1" 2>/dev/null | python3 -c 'import json, sys
m = [json.loads(l) for l in sys.stdin]
exec(sys.argv[1])' "$2"
}

# feed_ops FILE: the feed as lines "op schema.table key,..." and "commit", in feed order.
feed_ops() {
    feed_py "$1" 'rel = {}
for x in m:
    if "table" in x: rel[x["relation"]] = x["table"]
    elif "op" in x: print(x["op"], rel[x["relation"]], ",".join(x["key"]))
    elif "commit" in x: print("commit")'
}

# commits FILE: the commit messages' end LSNs, one a line.
commits() {
    feed_py "$1" 'print("\n".join(x["end"] for x in m if "commit" in x))' | grep .
}

# ncommits FILE N: does FILE hold at least N commits yet (a live feed, no trailer needed)?
ncommits() {
    (($(commits "$1" | wc -l) >= $2))
}

# slot_field DB SLOT COLUMN: a column of pg_replication_slots.
slot_field() {
    dm_psql "$1" "SELECT $3 FROM pg_replication_slots WHERE slot_name = '$2'"
}

confirmed_is() {
    [[ "$(slot_field "$1" "$2" confirmed_flush_lsn)" == "$3" ]]
}

slot_inactive() {
    [[ "$(slot_field "$1" "$2" active)" == f ]]
}

@test "bad arguments: usage line and exit 2" {
    run -2 dm-decode
    assert_output --partial "usage: dm-decode"
    run -2 dm-decode --bogus
    run -2 dm-decode --db-env SRC --publication p
    run -2 dm-decode --db-env SRC --slot s --create
    run -2 dm-decode --db-env SRC --slot s --publication p --tables public.a
    run -2 dm-decode --db-env SRC --slot s --status --until-idle 3
    run -2 dm-decode --db-env SRC --slot s --status --dest-env SRC
    run -2 dm-decode --db-env SRC --slot s --publication p --until-lsn 0/1 --until-idle 3
    run -2 dm-decode --db-env SRC --slot s --drop --drop-publication
    run -2 dm-decode --db-env SRC --slot s --create --drop --publication p
    run -2 dm-decode --db-env SRC --slot s --publication p extra
    run -2 dm-decode --db-env SRC --slot Bad-Name --publication p
    assert_output --partial "lower-case letters, digits and underscores"
    run -2 dm-decode --db-env SRC --slot s --publication p --until-lsn nonsense
    assert_output --partial "expected an LSN"
    run -2 dm-decode --db-env SRC --slot s --publication p --until-idle 0
    run -2 dm-decode --db-env DM_NOT_SET_ANYWHERE --slot s --publication p
    assert_output --partial "DM_NOT_SET_ANYWHERE is not set"
    run -0 dm-decode --version
    assert_output "dm-decode (dm) 0.1.0"
    run -0 dm-decode --help
    assert_output --partial "--until-lsn"
}

@test "a source with wal_level replica: says so and what to ask for" {
    local dir
    dir=$(mktemp -d /tmp/dm-test.XXXXXX)
    CLUSTER_WAL_LEVEL='' cluster_start "$dir"
    export REPLICA
    REPLICA="host=$dir port=$(cat "$dir/port") user=postgres dbname=postgres"
    run -1 dm-decode --db-env REPLICA --slot s --publication p --create --tables public.x
    run -1 dm-decode --db-env REPLICA --slot s --publication p
    cluster_stop "$dir"
    assert_output "dm-decode: s: the source cannot decode: wal_level is replica; ask the administrator to set wal_level = logical (restart needed)"
}

@test "a role without REPLICATION, a table without key, slots exhausted: each named with its fix" {
    src_db d_pre
    dm_psql d_pre "GRANT SELECT ON ALL TABLES IN SCHEMA public TO norepl"
    export NOREPL="$SRC user=norepl"
    run -1 dm-decode --db-env NOREPL --slot s --publication p --create --tables public.a
    assert_output "dm-decode: s: the source cannot decode: role norepl has no REPLICATION privilege; ask the administrator for ALTER ROLE norepl REPLICATION"
    run -1 dm-decode --db-env NOREPL --slot s --publication p
    assert_output --partial "ALTER ROLE norepl REPLICATION"

    run -1 dm-decode --db-env SRC --slot s --publication p_nokey --create --tables public.a,public.nokey
    assert_output --partial "table public.nokey has no primary key or replica identity"
    run -1 dm-decode --db-env SRC --slot s --publication p --create --tables public.a,public.missing
    assert_output --partial "no table public.missing"
    run -1 dm-decode --db-env SRC --slot nosuch --publication p_nokey
    assert_output --partial "table public.nokey has no primary key"
    dm_psql d_pre "CREATE PUBLICATION p_a FOR TABLE public.a"
    run -1 dm-decode --db-env SRC --slot nosuch --publication p_a
    assert_output "dm-decode: nosuch: no replication slot nosuch: create it with dm-decode --create"
    run -1 dm-decode --db-env SRC --slot s --publication p_a --create --tables public.a,public.b
    assert_output --partial "publication p_a exists but does not cover public.b: ALTER PUBLICATION p_a ADD TABLE"

    # physical slots count against max_replication_slots (10) as well
    local used
    used=$(dm_psql d_pre "SELECT count(*) FROM pg_replication_slots")
    dm_psql d_pre "SELECT pg_create_physical_replication_slot('fill_' || i) FROM generate_series(1, 10 - $used) i" >/dev/null
    run -1 dm-decode --db-env SRC --slot s --publication p_a --create
    dm_psql d_pre "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name LIKE 'fill_%'" >/dev/null
    assert_output --partial "all 10 replication slots are in use (max_replication_slots = 10); ask the administrator to raise max_replication_slots"
}

@test "--create: prints a snapshot that psql can read in while dm-decode holds it; the slot starts there" {
    src_db d_create
    dm_createdb d_create_dst
    export DST
    DST=$(dm_conninfo d_create_dst)
    local tmp=$BATS_TEST_TMPDIR pid snap lsn
    mkfifo "$tmp/in"
    dm-decode --db-env SRC --slot s_create --publication p_create --create --tables public.a,public.b --dest-env DST \
        <"$tmp/in" >"$tmp/out" 2>"$tmp/err" 3>&- &
    pid=$!
    exec 7>"$tmp/in"
    wait_for "the snapshot line" grep -q . "$tmp/out"
    read -r snap lsn <"$tmp/out"
    [[ "$snap" =~ ^[0-9A-F]+-[0-9A-F]+-[0-9]+$ ]]
    [[ "$lsn" =~ ^[0-9A-F]+/[0-9A-F]+$ ]]
    [[ "$(slot_field d_create s_create confirmed_flush_lsn)" == "$lsn" ]]
    # with --dest, the slot's row in dm.follow starts at the consistent point
    run -0 dm_psql d_create_dst "SELECT applied_lsn FROM dm.follow WHERE slot = 's_create'"
    assert_output "$lsn"
    # a row inserted after the slot: the snapshot does not see it, the feed will
    dm_psql d_create "INSERT INTO public.a VALUES (3, 'three')"
    run -0 dm_psql d_create "BEGIN ISOLATION LEVEL REPEATABLE READ; SET TRANSACTION SNAPSHOT '$snap';
        SELECT string_agg(id::text, ',' ORDER BY id) FROM public.a; COMMIT"
    assert_output "1,2"
    run -0 dm-extract --db-env SRC --table public.a --snapshot "$snap"
    exec 7>&-
    local rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || { echo "dm-decode exited $rc"; cat "$tmp/err"; false; }
    [[ ! -s "$tmp/err" ]] || { cat "$tmp/err"; false; }
    # the publication covers exactly the tables asked for
    run -0 dm_psql d_create "SELECT string_agg(schemaname || '.' || tablename, ',' ORDER BY tablename) FROM pg_publication_tables WHERE pubname = 'p_create'"
    assert_output "public.a,public.b"
    # and the feed begins right after the snapshot: the insert of 3, nothing before
    local end
    end=$(dm_psql d_create "SELECT pg_current_wal_lsn()")
    dm-decode --db-env SRC --slot s_create --publication p_create --until-lsn "$end" >"$tmp/feed" 3>&-
    run -0 feed_ops "$tmp/feed"
    assert_output $'insert public.a 3\ncommit'
    # a second --create of the same slot says how to go on
    run -1 dm-decode --db-env SRC --slot s_create --publication p_create --create </dev/null
    assert_output "dm-decode: s_create: replication slot s_create already exists: follow it (dm-decode without --create), or drop it first (dm-decode --drop)"
}

@test "follow: every changed key of the published tables, in commit order, commits with increasing LSNs" {
    src_db d_follow
    local tmp=$BATS_TEST_TMPDIR
    dm-decode --db-env SRC --slot s_follow --publication p_follow --create --tables public.a,public.b </dev/null >/dev/null
    dm_psql d_follow <<'SQL'
INSERT INTO public.a VALUES (3, 'three');
UPDATE public.a SET v = 'TWO' WHERE id = 2;
DELETE FROM public.a WHERE id = 1;
UPDATE public.a SET id = 30 WHERE id = 3;
BEGIN;
INSERT INTO public.b VALUES ('x y', 1, 'b'), ('é', 2, 'b');
UPDATE public.a SET v = 'both' WHERE id = 2;
COMMIT;
INSERT INTO public.c VALUES (1, 'not published');
BEGIN;
DELETE FROM public.a WHERE id = 2;
INSERT INTO public.a VALUES (2, 'back');
COMMIT;
UPDATE public.b SET k2 = 5, v = 'moved' WHERE k1 = 'x y';
UPDATE public.b SET v = 'same key' WHERE k1 = 'é';
SQL
    local end
    end=$(dm_psql d_follow "SELECT pg_current_wal_lsn()")
    dm-decode --db-env SRC --slot s_follow --publication p_follow --until-lsn "$end" >"$tmp/feed" 3>&-
    run -0 feed_ops "$tmp/feed"
    assert_output "$(cat <<'EOF'
insert public.a 3
commit
update public.a 2
commit
delete public.a 1
commit
delete public.a 3
insert public.a 30
commit
insert public.b x y,1
insert public.b é,2
update public.a 2
commit
delete public.a 2
insert public.a 2
commit
delete public.b x y,1
insert public.b x y,5
commit
update public.b é,2
commit
EOF
)"
    # commit LSNs strictly increase, each end past its commit, the last at or before $end
    run -0 dm_psql d_follow "SELECT bool_and(c < e) AND bool_and(e <= '$end'::pg_lsn)
        AND bool_and(prev IS NULL OR prev < c) FROM (SELECT c::pg_lsn, e::pg_lsn, lag(e::pg_lsn) OVER (ORDER BY n) AS prev
        FROM (VALUES $(feed_py "$tmp/feed" 'print(",".join("(%d, %r, %r)" % (i, x["commit"], x["end"]) for i, x in enumerate(m) if "commit" in x))')) v(n, c, e)) x"
    assert_output t
    # the relation messages name the columns, types and key; the trailer closes it
    run -0 bash -c "dm-cat '$tmp/feed' | grep -E '\"table\"|\"end\":true' | sed 's/\"relation\":[0-9]*/R/; s/\"last_lsn\":\"[^\"]*\"/L/'"
    assert_output "$(cat <<'EOF'
{R,"table":"public.a","columns":[{"name":"id","type":"integer"},{"name":"v","type":"text"}],"key":[0]}
{R,"table":"public.b","columns":[{"name":"k1","type":"text"},{"name":"k2","type":"integer"},{"name":"v","type":"text"}],"key":[0,1]}
{"end":true,"messages":23,L}
EOF
)"
    # a damaged key fails the checksum: dm-cat prints up to the damage, then exits 3
    python3 -c 'import sys
b = open(sys.argv[1], "rb").read()
i = b.index(b"\xa230")
open(sys.argv[2], "wb").write(b[:i] + b"\xa231" + b[i + 3:])' "$tmp/feed" "$tmp/damaged"
    run -3 dm-cat "$tmp/damaged"
    assert_output --partial "invalid feed: checksum mismatch (corrupted data)"
    assert_output --partial '"key":["31"]'
    refute_output --partial '"end":true'
    # nothing was confirmed without --dest: the next run sends it all again
    dm-decode --db-env SRC --slot s_follow --publication p_follow --until-lsn "$end" >"$tmp/feed2" 3>&-
    cmp "$tmp/feed" "$tmp/feed2"
}

@test "the slot is confirmed up to dm.follow's applied_lsn, never beyond; SIGTERM ends the feed; a restart resends from there" {
    src_db d_confirm
    dm_createdb d_confirm_dst
    export DST
    DST=$(dm_conninfo d_confirm_dst)
    local tmp=$BATS_TEST_TMPDIR pid start
    dm-decode --db-env SRC --slot s_conf --publication p_conf --create --tables public.a </dev/null >/dev/null
    start=$(slot_field d_confirm s_conf confirmed_flush_lsn)
    dm-decode --db-env SRC --slot s_conf --publication p_conf --dest-env DST >"$tmp/feed" 2>"$tmp/err" 3>&- &
    pid=$!
    dm_psql d_confirm "INSERT INTO public.a VALUES (10, 'x')" "INSERT INTO public.a VALUES (11, 'x')" \
        "INSERT INTO public.a VALUES (12, 'x')"
    wait_for "three commits in the feed" ncommits "$tmp/feed" 3
    mapfile -t ends < <(commits "$tmp/feed")
    # dm.follow exists (dm-decode made it) but says nothing yet: nothing is confirmed
    run -0 dm_psql d_confirm_dst "SELECT count(*) FROM dm.follow"
    assert_output 0
    [[ "$(slot_field d_confirm s_conf confirmed_flush_lsn)" == "$start" ]]
    # a second follower of the same slot is turned away: another run holds it (exit 6)
    run -6 dm-decode --db-env SRC --slot s_conf --publication p_conf --wait 0 3>&-
    assert_output --partial "dm-decode: s_conf: replication slot s_conf is in use by process "
    run -0 dm-decode --db-env SRC --slot s_conf --status
    assert_line "active=true"
    dm_psql d_confirm_dst "INSERT INTO dm.follow VALUES ('s_conf', '${ends[1]}', now(), now())"
    wait_for "confirmed_flush_lsn = ${ends[1]}" confirmed_is d_confirm s_conf "${ends[1]}"
    kill -TERM "$pid"
    local rc=0
    wait "$pid" || rc=$?
    ((rc == 0)) || { echo "dm-decode exited $rc"; cat "$tmp/err"; false; }
    [[ ! -s "$tmp/err" ]] || { cat "$tmp/err"; false; }
    run -0 dm-cat "$tmp/feed"
    assert_line --index 0 --partial "\"start_lsn\":\"$start\""
    assert_line --partial '"end":true,"messages":'
    [[ "$(slot_field d_confirm s_conf confirmed_flush_lsn)" == "${ends[1]}" ]]
    # the restart, without a destination, resends what the slot holds past its confirmed position
    wait_for "the slot to be released" slot_inactive d_confirm s_conf
    dm_psql d_confirm "INSERT INTO public.a VALUES (13, 'x')"
    local end
    end=$(dm_psql d_confirm "SELECT pg_current_wal_lsn()")
    dm-decode --db-env SRC --slot s_conf --publication p_conf --until-lsn "$end" >"$tmp/feed2" 3>&-
    run -0 feed_ops "$tmp/feed2"
    assert_output $'insert public.a 12\ncommit\ninsert public.a 13\ncommit'
    run -0 dm-cat "$tmp/feed2"
    assert_line --index 0 --partial "\"start_lsn\":\"${ends[1]}\""
}

@test "kill -9 of dm-decode, then a rerun: every change after the confirmed position comes again" {
    src_db d_kill
    dm_createdb d_kill_dst
    export DST
    DST=$(dm_conninfo d_kill_dst)
    local tmp=$BATS_TEST_TMPDIR pid
    dm-decode --db-env SRC --slot s_kill --publication p_kill --create --tables public.a </dev/null >/dev/null
    dm-decode --db-env SRC --slot s_kill --publication p_kill --dest-env DST >"$tmp/feed" 2>"$tmp/err" 3>&- &
    pid=$!
    dm_psql d_kill "INSERT INTO public.a VALUES (20, 'x')" "INSERT INTO public.a VALUES (21, 'x')"
    wait_for "two commits in the feed" ncommits "$tmp/feed" 2
    mapfile -t ends < <(commits "$tmp/feed")
    dm_psql d_kill_dst "INSERT INTO dm.follow VALUES ('s_kill', '${ends[0]}', now(), now())"
    wait_for "confirmed_flush_lsn = ${ends[0]}" confirmed_is d_kill s_kill "${ends[0]}"
    dm_psql d_kill "INSERT INTO public.a VALUES (22, 'x')"
    wait_for "three commits in the feed" ncommits "$tmp/feed" 3
    kill -KILL "$pid"
    wait "$pid" || true
    # a killed decoder leaves a feed without a trailer: readers know it was cut short
    run -3 dm-cat "$tmp/feed"
    assert_output --partial "truncated: no trailer"
    local end
    end=$(dm_psql d_kill "SELECT pg_current_wal_lsn()")
    dm-decode --db-env SRC --slot s_kill --publication p_kill --until-lsn "$end" >"$tmp/feed2" 3>&-
    run -0 feed_ops "$tmp/feed2"
    assert_output $'insert public.a 21\ncommit\ninsert public.a 22\ncommit'
}

@test "a TRUNCATE of a published table: a clear error, no trailer" {
    src_db d_trunc
    local tmp=$BATS_TEST_TMPDIR end
    dm-decode --db-env SRC --slot s_trunc --publication p_trunc --create --tables public.a </dev/null >/dev/null
    dm_psql d_trunc "INSERT INTO public.a VALUES (5, 'x')" "TRUNCATE public.a"
    end=$(dm_psql d_trunc "SELECT pg_current_wal_lsn()")
    run -1 bash -c "dm-decode --db-env SRC --slot s_trunc --publication p_trunc --until-lsn '$end' >'$tmp/feed' 3>&-"
    [[ "$output" == "dm-decode: s_trunc: TRUNCATE of public.a: a truncate cannot be followed by keys;"* ]]
    run -3 dm-cat "$tmp/feed"
    assert_output --partial '"key":["5"]'
    assert_output --partial "truncated: no trailer"
}

@test "--until-idle stops after that long without a change; --status; --drop, with dm.follow's row" {
    src_db d_admin
    local tmp=$BATS_TEST_TMPDIR
    dm-decode --db-env SRC --slot s_admin --publication p_admin --create --tables public.a,public.b </dev/null >/dev/null
    dm_psql d_admin "INSERT INTO public.b VALUES ('k', 1, 'x')"
    dm-decode --db-env SRC --slot s_admin --publication p_admin --until-idle 1 >"$tmp/feed" 3>&-
    run -0 feed_ops "$tmp/feed"
    assert_output $'insert public.b k,1\ncommit'

    run -0 dm-decode --db-env SRC --slot s_admin --status
    local want
    want=$(dm_psql d_admin "SELECT format(E'slot=%s\nplugin=%s\ndatabase=%s\nactive=false\nactive_pid=\nconfirmed_flush_lsn=%s\nrestart_lsn=%s',
        slot_name, plugin, database, confirmed_flush_lsn, restart_lsn) FROM pg_replication_slots WHERE slot_name = 's_admin'")
    [[ "$(printf '%s\n' "${lines[@]:0:7}")" == "$want" ]]
    # current_lsn, retained_bytes and pending_bytes agree with the server's own arithmetic
    local cur retained
    cur=$(printf '%s\n' "${lines[@]}" | sed -n 's/^current_lsn=//p')
    retained=$(printf '%s\n' "${lines[@]}" | sed -n 's/^retained_bytes=//p')
    run -0 dm_psql d_admin "SELECT pg_wal_lsn_diff('$cur', restart_lsn) = $retained AND '$cur'::pg_lsn <= pg_current_wal_lsn()
        FROM pg_replication_slots WHERE slot_name = 's_admin'"
    assert_output t

    dm_createdb d_admin_dst
    export DST
    DST=$(dm_conninfo d_admin_dst)
    dm-decode --db-env SRC --slot s_other --publication p_admin --create --dest-env DST </dev/null >/dev/null
    run -0 dm_psql d_admin_dst "SELECT count(*) FROM dm.follow WHERE slot = 's_other'"
    assert_output 1
    run -0 dm-decode --db-env SRC --slot s_other --drop --dest-env DST
    run -0 dm_psql d_admin_dst "SELECT count(*) FROM dm.follow"
    assert_output 0
    run -0 dm-decode --db-env SRC --slot s_admin --drop --drop-publication --publication p_admin
    run -0 dm_psql d_admin "SELECT (SELECT count(*) FROM pg_replication_slots WHERE slot_name = 's_admin'),
        (SELECT count(*) FROM pg_publication WHERE pubname = 'p_admin')"
    assert_output "0|0"
    run -1 dm-decode --db-env SRC --slot s_admin --drop
    assert_output "dm-decode: s_admin: no replication slot s_admin: create it with dm-decode --create"
    run -1 dm-decode --db-env SRC --slot s_admin --status
    assert_output --partial "no replication slot s_admin"
}
