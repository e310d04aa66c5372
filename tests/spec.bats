#!/usr/bin/env bats
# Spec entities (dm.conf(5)) through the plumbing: legacy integer keys become
# UUIDs, names change, foreign keys are rewritten, and the destination's own
# rows are left alone. The driver's -c is covered in dm-migrate.bats.

load common
load lib/spec-expect
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb sp_src
    dm_load_sql sp_src "$DM_FIXTURES/spec/legacy.sql"
    dm_createdb sp_dst_tpl
    dm_load_sql sp_dst_tpl "$DM_FIXTURES/spec/modern.sql"
    export SPEC=$DM_FIXTURES/spec/small.conf
}

teardown_file() {
    dm_teardown_cluster
}

setup() {
    dm_createdb sp_dst sp_dst_tpl
    dm_use sp_src sp_dst
}

# migrate ENTITY [dm-diff options]: one entity through the three filters.
migrate() {
    local e=$1 table
    shift
    table=$(awk -v e="[entity $e]" '$0 == e {f=1; next} /^\[/ {f=0} f && $1 == "target" {print $3}' "$SPEC")
    dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_SOURCE --other-env DM_DEST |
        dm-diff -q "$@" - <(dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_DEST --other-env DM_SOURCE --side dest --hashes) |
        dm-load --db-env DM_DEST --table "$table" --entity "$e" --disable-triggers
}

# check ENTITY: dm's own comparison of source and destination (dm-diff --check), for
# tests of what dm sees; whether the migration is right is judged without dm, by
# spec_expect_equal (tests/lib/spec-expect.bash).
check() {
    dm-diff --check <(dm-extract -q -c "$SPEC" --entity "$1" --db-env DM_SOURCE --other-env DM_DEST --hashes) \
        <(dm-extract -q -c "$SPEC" --entity "$1" --db-env DM_DEST --other-env DM_SOURCE --side dest --hashes)
}

@test "spec errors: a typo is refused with its line, and nothing moves" {
    sed 's/^column title = name/colum title = name/' "$SPEC" >"$BATS_TEST_TMPDIR/typo.conf"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$BATS_TEST_TMPDIR/typo.conf"
    assert_output --partial "typo.conf:11: unknown setting \"colum\""
    sed 's/^column opened_at = opened$/column opened_at = opend/; s/^const status.*//' "$SPEC" >"$BATS_TEST_TMPDIR/cols.conf"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$BATS_TEST_TMPDIR/cols.conf"
    assert_output --partial "cols.conf:12: the source has no column \"opend\""
    assert_output --partial "cols.conf:14: entity client: public.clients.status is NOT NULL without a default"
    sed 's/^ref shop_id.*//' "$SPEC" >"$BATS_TEST_TMPDIR/fk.conf"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$BATS_TEST_TMPDIR/fk.conf"
    assert_output --partial 'foreign key public.clients.shop_id points at public.shops (entity shop)'
    sed 's/^expr full_name = first/expr full_name = frist/' "$SPEC" >"$BATS_TEST_TMPDIR/expr.conf"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$BATS_TEST_TMPDIR/expr.conf"
    assert_output --partial 'expr.conf:20: the expression for "full_name" fails on the source'
    sed 's/^where = client_id <> 300/where = clientid <> 300/' "$SPEC" >"$BATS_TEST_TMPDIR/where.conf"
    run -1 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$BATS_TEST_TMPDIR/where.conf"
    assert_output --partial 'where.conf:16: entity client: its where condition fails on the source'
    run -1 dm-extract -c "$BATS_TEST_TMPDIR/cols.conf" --entity shop --db-env DM_SOURCE --other-env DM_DEST
    [ "$(dm_row_count sp_dst public.shops)" = 1 ]
}

@test "preflight passes and orders the entities by the destination's foreign keys" {
    run -0 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$SPEC"
    assert_line --index 0 $'0\tshop\tpublic.shops\tshop_id\tlast_update\t-\t-\t-'
    assert_line --index 1 $'1\tclient\tpublic.clients\tclient_id\tlast_update\t-\t-\tshop'
    assert_line --index 2 $'2\tvisit\tpublic.visits\tclient_id,day\t-\t-\t-\tclient'
}

@test "a migration in the destination's shape: UUIDs, renames, rewritten foreign keys, timezones" {
    migrate shop
    migrate client
    migrate visit
    spec_expect_equal sp_src sp_dst shop client visit
    # every UUID is the deterministic one, computed here without dm: uuid-ossp's v5
    dm_psql sp_dst "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\""
    run -0 dm_psql sp_dst "SELECT count(*) FROM public.clients c JOIN public.shops s ON s.id = c.shop_id
        WHERE c.id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:' || substr(c.full_name, 2, strpos(c.full_name, ' ') - 2))
          AND s.id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'shop:' || s.legacy_id)"
    assert_output 299
    run -0 dm_psql sp_dst "SELECT full_name, status FROM public.clients WHERE id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:7')"
    assert_output "F7 L7|active"
    # legacy timestamps were New York time
    run -0 dm_psql sp_dst "SELECT opened_at FROM public.shops WHERE legacy_id = 1"
    assert_output "2001-02-03 09:05:06+00"
    # the password stayed behind; the where filter kept client 300 out
    run -0 dm_psql sp_dst "SELECT count(*) FROM public.clients"
    assert_output 299
    # the ledger records every pair, composite keys included
    run -0 dm_psql sp_dst "SELECT count(*) FROM dm.ledger WHERE entity = 'visit' AND cardinality(legacy_key) = 2"
    assert_output "$(dm_psql sp_src "SELECT count(*) FROM public.visit WHERE client_id <> 300")"
}

@test "changes, deletes and hand edits converge; rows made in the destination are untouched" {
    migrate shop; migrate client; migrate visit
    dm_psql sp_dst "INSERT INTO public.clients (full_name, status) VALUES ('native', 'active')"
    native=$(dm_psql sp_dst "SELECT id, full_name, updated_at FROM public.clients WHERE full_name = 'native'")
    dm_psql sp_src "UPDATE public.client SET last = 'Changed' WHERE client_id = 5" \
        "DELETE FROM public.visit WHERE client_id = 6" "DELETE FROM public.client WHERE client_id = 6" \
        "INSERT INTO public.client VALUES (301, 10, 'New', 'One', 'x')"
    dm_psql sp_dst "UPDATE public.clients SET full_name = 'hand edit' WHERE id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:8')" 2>/dev/null ||
        dm_psql sp_dst "CREATE EXTENSION \"uuid-ossp\"" "UPDATE public.clients SET full_name = 'hand edit' WHERE id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:8')"
    run -4 check client
    run -0 migrate client
    assert_output "dm-load: client: insert=1 update=2 delete=0 unchanged=0"
    run -0 migrate visit --delete
    run -0 migrate client --delete
    assert_output "dm-load: client: insert=0 update=0 delete=1 unchanged=0"
    spec_expect_equal sp_src sp_dst shop client visit
    for e in shop client visit; do check "$e"; done
    [ "$(dm_psql sp_dst "SELECT id, full_name, updated_at FROM public.clients WHERE full_name = 'native'")" = "$native" ]
    [ "$(dm_psql sp_dst "SELECT count(*) FROM public.shops WHERE title = 'native shop'")" = 1 ]
    run -0 dm_psql sp_dst "SELECT count(*) FROM dm.ledger WHERE entity = 'client'"
    assert_output 299
}

@test "dm-migrate -c: run, change, run --delete, verify; a spec with a typo moves nothing" {
    sed 's/^column title = name/colum title = name/' "$SPEC" >"$BATS_TEST_TMPDIR/typo.conf"
    run -1 dm-migrate -q -c "$BATS_TEST_TMPDIR/typo.conf" run
    assert_output --partial 'typo.conf:11: unknown setting \"colum\"'
    [ "$(dm_row_count sp_dst public.clients)" = 0 ]
    run -0 dm-migrate -q -c "$SPEC" run
    run -0 dm-migrate -q -c "$SPEC" verify
    dm_psql sp_src "UPDATE public.client SET first = 'Again' WHERE client_id = 11" \
        "DELETE FROM public.visit WHERE client_id = 12" "DELETE FROM public.client WHERE client_id = 12"
    run -4 dm-migrate -q -c "$SPEC" verify
    # The reports read through the spec too (baseline once refused: dm-extract usage).
    run -0 dm-migrate -q -c "$SPEC" --json baseline client
    assert_output --regexp '"entity":"client".*"changed":1,'
    run -0 dm-migrate -q -c "$SPEC" --json --full plan client
    assert_output --regexp '"entity":"client","mode":"full","insert":0,"update":1,'
    run -0 dm-migrate -q -c "$SPEC" --delete run
    run -0 dm-migrate -q -c "$SPEC" verify
    run -0 dm_psql sp_dst "SELECT count(*) FROM public.clients WHERE full_name = 'Again L11'"
    assert_output 1
    [ "$(dm_psql sp_dst "SELECT count(*) FROM public.shops WHERE title = 'native shop'")" = 1 ]
}

@test "composite text keys with commas and backslashes get distinct UUIDs, and refs find them" {
    # ('a,b','c') and ('a','b,c') were both named "pair:a,b,c"; the last two
    # would collide if only commas were escaped. Replay: bats tests/spec.bats -f 'composite text keys'
    dm_createdb sp_pair_src
    dm_createdb sp_pair_dst
    dm_psql sp_pair_src <<'SQL'
CREATE TABLE public.pair (a text, b text, PRIMARY KEY (a, b));
INSERT INTO public.pair VALUES ('a,b', 'c'), ('a', 'b,c'), ('a\', 'b,c'), ('a,b\', 'c'), ('plain', 'row');
CREATE TABLE public.pair_note (id integer PRIMARY KEY, pa text, pb text, note text);
INSERT INTO public.pair_note VALUES (1, 'a,b', 'c', 'n1'), (2, 'a', 'b,c', 'n2'), (3, 'a\', 'b,c', 'n3'),
    (4, 'a,b\', 'c', 'n4'), (5, 'plain', 'row', 'n5'), (6, 'a', NULL, 'orphan');
CREATE TABLE public.visit (client_id integer, day date, PRIMARY KEY (client_id, day));
INSERT INTO public.visit VALUES (7, '2001-02-03');
SQL
    dm_psql sp_pair_dst <<'SQL'
CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
CREATE TABLE public.pairs (id uuid PRIMARY KEY, a text NOT NULL, b text NOT NULL);
CREATE TABLE public.pair_notes (id uuid PRIMARY KEY, pair_id uuid REFERENCES public.pairs (id),
    pa text, pb text, note text);
CREATE TABLE public.visits (id uuid PRIMARY KEY, client_id integer, day date);
SQL
    cat >"$BATS_TEST_TMPDIR/pair.conf" <<'EOF_CONF'
[dm]
uuid_namespace = 0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21

[entity pair]
source = public.pair
target = public.pairs
uuid = id

[entity pair_note]
source = public.pair_note
target = public.pair_notes
uuid = id
ref pair_id = pair(pa, pb)

[entity visit]
source = public.visit
target = public.visits
uuid = id
EOF_CONF
    dm_use sp_pair_src sp_pair_dst
    run -0 dm-migrate -q -c "$BATS_TEST_TMPDIR/pair.conf" run
    # each row under the name dm.conf(5) documents, hashed by uuid-ossp, not by dm
    run -0 dm_psql sp_pair_dst <<'SQL'
SELECT count(*), count(DISTINCT p.id) FROM public.pairs p JOIN (VALUES
    ('a,b', 'c', 'pair:a\,b,c'), ('a', 'b,c', 'pair:a,b\,c'), ('a\', 'b,c', 'pair:a\\,b\,c'),
    ('a,b\', 'c', 'pair:a\,b\\,c'), ('plain', 'row', 'pair:plain,row')) v (a, b, name)
    ON p.a = v.a AND p.b = v.b AND p.id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', v.name)
SQL
    assert_output "5|5"
    [ "$(dm_row_count sp_pair_dst public.pairs)" = 5 ]
    # the children point at their parents; a NULL in the foreign key points nowhere
    run -0 dm_psql sp_pair_dst "SELECT count(*) FROM public.pair_notes n JOIN public.pairs p
        ON p.id = n.pair_id AND p.a = n.pa AND p.b = n.pb"
    assert_output 5
    run -0 dm_psql sp_pair_dst "SELECT note, pair_id IS NULL,
        id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'pair_note:' || CASE note WHEN 'orphan' THEN '6' ELSE substr(note, 2) END)
        FROM public.pair_notes WHERE pb IS NULL OR note = 'n1' ORDER BY note"
    assert_output $'n1|f|t\norphan|t|t'
    # keys without commas or backslashes keep the names they always had (pinned in test-spec too)
    run -0 dm_psql sp_pair_dst "SELECT id, id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'visit:7,2001-02-03')
        FROM public.visits"
    assert_output 'e23f1296-6b16-5ea6-b5d1-2d9e83a031ce|t'
    # a second run keeps every UUID and reference
    before=$(dm_psql sp_pair_dst "SELECT id, pair_id, note FROM public.pair_notes ORDER BY note")
    run -0 dm-migrate -q -c "$BATS_TEST_TMPDIR/pair.conf" run
    [ "$(dm_psql sp_pair_dst "SELECT id, pair_id, note FROM public.pair_notes ORDER BY note")" = "$before" ]
}

@test "preflight names the destination's foreign keys without an index on their columns" {
    run -0 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$SPEC"
    assert_line --partial "# public.clients(shop_id) -> public.shops: no index, a delete of a parent row scans public.clients ("
    assert_line --partial "# public.visits(client_id) -> public.clients: no index, a delete of a parent row scans public.visits ("
    # the entity lines come first, as before
    assert_line --index 0 $'0\tshop\tpublic.shops\tshop_id\tlast_update\t-\t-\t-'
    dm_psql sp_dst "CREATE INDEX visits_client ON public.visits (client_id, visited_on)"
    run -0 dm-entities --source-env DM_SOURCE --dest-env DM_DEST -c "$SPEC"
    assert_line --partial "# public.clients(shop_id) -> public.shops: no index"
    refute_line --partial "# public.visits(client_id)"
}

# migrate_keys ENTITY KEYS: ENTITY's rows of the legacy keys in the dm stream KEYS
# only, as a follower applies a batch of changed keys; deletes are parked, for
# apply_deletes to run children first.
migrate_keys() {
    local e=$1 keys=$2 table
    table=$(awk -v e="[entity $e]" '$0 == e {f=1; next} /^\[/ {f=0} f && $1 == "target" {print $3}' "$SPEC")
    dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_SOURCE --other-env DM_DEST --keys "$keys" |
        dm-diff -q --delete - <(dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_DEST --other-env DM_SOURCE \
            --side dest --hashes --keys "$keys") |
        dm-load --db-env DM_DEST --table "$table" --entity "$e" --disable-triggers --force --defer-deletes
}

@test "--keys through the mapping: the changed legacy keys only, by legacy column, ledger and composite key" {
    # a source of its own: the other tests change sp_src
    dm_createdb sp_src_k
    dm_load_sql sp_src_k "$DM_FIXTURES/spec/legacy.sql"
    dm_use sp_src_k sp_dst
    migrate shop; migrate client; migrate visit
    dm_psql sp_dst "CREATE EXTENSION IF NOT EXISTS \"uuid-ossp\"" \
        "UPDATE public.clients SET full_name = 'hand edit' WHERE id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:8')"
    # the key sets, as a follower would have them, made by hand in tables of their own
    dm_createdb sp_keys
    dm_psql sp_keys "CREATE TABLE public.shop (shop_id integer PRIMARY KEY)" \
        "CREATE TABLE public.client (client_id integer PRIMARY KEY)" \
        "CREATE TABLE public.visit (client_id integer, day date, PRIMARY KEY (client_id, day))" \
        "INSERT INTO public.shop VALUES (1)" "INSERT INTO public.client VALUES (5), (6), (7), (300), (301)"
    local visits
    visits=$(dm_psql sp_src_k "SELECT string_agg(format('(%s, %L)', client_id, day), ', ') FROM public.visit WHERE client_id IN (6, 7)")
    dm_psql sp_keys "INSERT INTO public.visit VALUES $visits"
    # the source changes: shops 1 and 2, clients 5, 6 (gone, with its visits), 7, 300 (filtered out), 301 (new)
    dm_psql sp_src_k "UPDATE public.shop SET name = 'changed' WHERE shop_id IN (1, 2)" \
        "UPDATE public.client SET last = 'Changed' WHERE client_id IN (5, 7, 300)" \
        "DELETE FROM public.visit WHERE client_id = 6" "DELETE FROM public.client WHERE client_id = 6" \
        "UPDATE public.visit SET note = 'changed' WHERE client_id = 7" \
        "INSERT INTO public.client VALUES (301, 10, 'New', 'One', 'x')"
    local e
    for e in shop client visit; do
        dm-extract --db "$(dm_conninfo sp_keys)" --table "public.$e" --hashes >"$BATS_TEST_TMPDIR/$e.keys"
    done
    migrate_keys shop "$BATS_TEST_TMPDIR/shop.keys"
    migrate_keys client "$BATS_TEST_TMPDIR/client.keys"
    migrate_keys visit "$BATS_TEST_TMPDIR/visit.keys"
    dm-load --db-env DM_DEST --table public.visits --entity visit --apply-deletes
    dm-load --db-env DM_DEST --table public.clients --entity client --apply-deletes
    # outside the key sets nothing moved: shop 2's change and client 8's hand edit are still there
    run -0 dm_psql sp_dst "SELECT title FROM public.shops WHERE legacy_id = 2"
    refute_output "changed"
    run -0 dm_psql sp_dst "SELECT full_name FROM public.clients WHERE id = uuid_generate_v5('0e6a8a46-8e7f-4d0c-9a0e-0f3e4b8f9b21', 'client:8')"
    assert_output "hand edit"
    run -0 dm_psql sp_dst "SELECT count(*) FROM public.clients WHERE full_name = 'F300 Changed'"
    assert_output 0
    # the two keys left out, sent now: then everything equals the source through the spec, without dm
    dm_psql sp_keys "DELETE FROM public.shop" "DELETE FROM public.client" "INSERT INTO public.shop VALUES (2)" \
        "INSERT INTO public.client VALUES (8)"
    for e in shop client; do
        dm-extract --db "$(dm_conninfo sp_keys)" --table "public.$e" --hashes >"$BATS_TEST_TMPDIR/$e.keys"
        migrate_keys "$e" "$BATS_TEST_TMPDIR/$e.keys"
    done
    spec_expect_equal sp_src_k sp_dst shop client visit
}

@test "key ranges through the mapping: by legacy column and by ledger, each range's updates and deletes its own" {
    # a source of its own: the other tests change sp_src
    dm_createdb sp_src_r
    dm_load_sql sp_src_r "$DM_FIXTURES/spec/legacy.sql"
    dm_psql sp_src_r "ANALYZE"
    dm_use sp_src_r sp_dst
    run -0 dm-migrate -q -c "$SPEC" run
    run -0 --separate-stderr dm-entities -c "$SPEC" --source-env DM_SOURCE --dest-env DM_DEST --split 3 client
    assert_equal "$(grep -c '^range	client	' <<<"$output")" 3
    run -0 --separate-stderr dm-entities -c "$SPEC" --source-env DM_SOURCE --dest-env DM_DEST --split 2 shop
    run -1 dm-entities -c "$SPEC" --source-env DM_SOURCE --dest-env DM_DEST --split 2 visit
    assert_output --partial "its source is a query"
    # client: legacy keys in the ledger; shop: in a column. A change in each range.
    dm_psql sp_src_r "UPDATE public.client SET first = 'Again' WHERE client_id IN (5, 150, 290)" \
        "DELETE FROM public.visit WHERE client_id IN (12, 140, 280)" \
        "DELETE FROM public.client WHERE client_id IN (12, 140, 280)" \
        "UPDATE public.shop SET name = 'Second' WHERE shop_id = 2" "DELETE FROM public.shop WHERE shop_id = 10"
    run -0 dm-migrate --log-format text -c "$SPEC" --delete --force run
    for k in 0 1 2; do
        assert_output --partial "client#$k/3: full: insert=0 update=1 delete=1 (deferred)"
    done
    assert_output --regexp 'shop#[01]/2: full: insert=0 update=1 '
    assert_output --regexp 'shop#[01]/2: full: insert=0 update=[01] delete=1 '
    spec_expect_equal sp_src_r sp_dst shop client visit
    run -0 dm-migrate -q -c "$SPEC" verify
    # the ledger lost exactly the deleted clients' entries; the native rows are untouched
    assert_equal "$(dm_psql sp_dst "SELECT count(*) FROM dm.ledger WHERE entity = 'client'")" 296
    assert_equal "$(dm_psql sp_dst "SELECT count(*) FROM public.shops WHERE title = 'native shop'")" 1
}
