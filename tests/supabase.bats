#!/usr/bin/env bats
# A destination set up the way Supabase sets one up: tables owned by a role
# that is not a superuser, row level security, an updated_at trigger, and
# PgBouncer in transaction pooling mode in front. dm-load must need nothing more.

load common
load lib/spec-expect
bats_require_minimum_version 1.5.0

setup_file() {
    dm_setup_cluster
    dm_createdb sb_src
    dm_load_sql sb_src "$DM_FIXTURES/spec/legacy.sql"
    dm_psql postgres "CREATE ROLE app_owner LOGIN NOSUPERUSER NOCREATEROLE NOCREATEDB"
    dm_createdb sb_dst
    dm_psql sb_dst "GRANT CREATE ON DATABASE sb_dst TO app_owner" "GRANT CREATE, USAGE ON SCHEMA public TO app_owner"
    psql -X -q -v ON_ERROR_STOP=1 -d "host=$DM_TEST_HOST port=$DM_TEST_PORT user=app_owner dbname=sb_dst" \
        -f "$DM_FIXTURES/spec/modern.sql" >/dev/null

    # PgBouncer, transaction pooling, on a socket of its own, run as the cluster's user.
    export PGB_DIR=$DM_TEST_DIR/pgbouncer
    mkdir -p "$PGB_DIR"
    PGB_PORT=$((20000 + RANDOM % 30000))
    cat >"$PGB_DIR/pgbouncer.ini" <<INI
[databases]
sb_dst = host=$DM_TEST_HOST port=$DM_TEST_PORT dbname=sb_dst
[pgbouncer]
listen_addr =
listen_port = $PGB_PORT
unix_socket_dir = $PGB_DIR
auth_type = trust
auth_file = $PGB_DIR/users.txt
pool_mode = transaction
default_pool_size = 4
logfile = $PGB_DIR/pgbouncer.log
pidfile = $PGB_DIR/pgbouncer.pid
INI
    printf '"app_owner" ""\n' >"$PGB_DIR/users.txt"
    chown -R "$(stat -c %U "$DM_TEST_DIR/data")" "$PGB_DIR"
    cluster_run_as pgbouncer -d "$PGB_DIR/pgbouncer.ini"
    for _ in $(seq 1 50); do [ -S "$PGB_DIR/.s.PGSQL.$PGB_PORT" ] && break; sleep 0.1; done
    export PGB_PORT
    export DM_SOURCE=$(dm_conninfo sb_src)
    export DM_DEST="host=$PGB_DIR port=$PGB_PORT user=app_owner dbname=sb_dst"
    export SPEC=$DM_FIXTURES/spec/small.conf
}

teardown_file() {
    [ -f "$PGB_DIR/pgbouncer.pid" ] && kill "$(cat "$PGB_DIR/pgbouncer.pid")" 2>/dev/null
    dm_teardown_cluster
}

migrate() {
    local e=$1 table=$2
    shift 2
    dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_SOURCE --other-env DM_DEST |
        dm-diff -q "$@" - <(dm-extract -q -c "$SPEC" --entity "$e" --db-env DM_DEST --other-env DM_SOURCE --side dest --hashes) |
        dm-load --db-env DM_DEST --table "$table" --entity "$e" --disable-triggers --batch-rows 100
}

# client_open NAME: a psql session to the destination through PgBouncer (DM_DEST), fed
# through a fifo on file descriptor CLIENT_FD[NAME], its output in
# $BATS_TEST_TMPDIR/NAME.out.
declare -gA CLIENT_FD=() CLIENT_PID=()
client_open() {
    local fifo=$BATS_TEST_TMPDIR/$1.in fd
    mkfifo "$fifo"
    # Without the other clients' fifos: each must see its end of input when it is closed.
    # stdbuf: psql's answers reach the file as they come, not at its exit.
    (
        for fd in "${CLIENT_FD[@]}"; do exec {fd}>&-; done
        exec stdbuf -oL psql -X -qAt -v ON_ERROR_STOP=1 \
            -d "$DM_DEST" <"$fifo" >"$BATS_TEST_TMPDIR/$1.out" 2>&1 3>&-
    ) 3>&- &
    CLIENT_PID[$1]=$!
    exec {fd}>"$fifo"
    CLIENT_FD[$1]=$fd
}

# client_query NAME SQL: send SQL (one line of output expected) and print that line.
client_query() {
    local out=$BATS_TEST_TMPDIR/$1.out n i
    n=$(wc -l <"$out")
    printf '%s\n' "$2" >&"${CLIENT_FD[$1]}"
    for ((i = 0; i < 600; i++)); do
        (($(wc -l <"$out") > n)) && { sed -n "$((n + 1))p" "$out"; return 0; }
        kill -0 "${CLIENT_PID[$1]}" 2>/dev/null || break
        sleep 0.05
    done
    echo "client $1 gave no answer to: $2 (output: $(cat "$out"))" >&2
    return 1
}

# client_close NAME: end the session (an open transaction is rolled back).
client_close() {
    local fd=${CLIENT_FD[$1]}
    exec {fd}>&-
    unset "CLIENT_FD[$1]"
    wait "${CLIENT_PID[$1]}" || true
}

# A test that failed half-way leaves no session behind.
teardown() {
    local name
    for name in "${!CLIENT_FD[@]}"; do client_close "$name"; done
}

@test "the destination is reached through PgBouncer, as a role that is not a superuser" {
    run -0 psql -X -qAt -d "$DM_DEST" -c "SELECT current_user, rolsuper FROM pg_roles WHERE rolname = current_user"
    assert_output "app_owner|f"
    run -0 psql -X -qAt -d "$DM_DEST" -c "SHOW transaction_isolation"
    # Transaction pooling, seen from PgBouncer's behaviour: client A's first transaction
    # leaves its server connection free; client B's open transaction takes that one (idle
    # server connections are reused last in, first out); A's next transaction then runs
    # on another backend. In session mode, A would keep its backend and B get another.
    local a1 b a2
    client_open A
    client_open B
    a1=$(client_query A "SELECT pg_backend_pid();")
    b=$(client_query B "BEGIN; SELECT pg_backend_pid();")
    a2=$(client_query A "SELECT pg_backend_pid();")
    client_close A
    client_close B
    echo "client A: backend $a1, then $a2; client B's open transaction: $b"
    [[ "$a1" =~ ^[0-9]+$ && "$a2" =~ ^[0-9]+$ ]]
    assert_equal "$b" "$a1"
    [[ "$a2" != "$a1" ]]
}

@test "a spec migration through PgBouncer in transaction mode, as the tables' owner" {
    run -0 migrate shop public.shops
    run -0 migrate client public.clients
    assert_output "dm-load: client: insert=299 update=0 delete=0 unchanged=0"
    run -0 migrate visit public.visits
    dm_psql sb_src "UPDATE public.client SET first = 'Zed' WHERE client_id = 9" "DELETE FROM public.visit WHERE client_id = 9"
    run -0 migrate visit public.visits --delete
    run -0 migrate client public.clients --delete
    assert_output "dm-load: client: insert=0 update=1 delete=0 unchanged=0"
    # the destination holds what the spec makes of the source, computed without dm
    spec_expect_equal sb_src sb_dst shop client visit
    # the trigger that maintains updated_at was switched off in dm's transactions only
    run -0 dm_psql sb_dst "SELECT tgenabled FROM pg_trigger WHERE tgname = 'clients_touch'"
    assert_output O
    # no session state was left behind on the pooled server connections
    run -0 dm_psql sb_dst "SELECT count(*) FROM pg_stat_activity WHERE usename = 'app_owner' AND state = 'idle in transaction'"
    assert_output 0
    # row level security stayed on
    run -0 dm_psql sb_dst "SELECT bool_and(relrowsecurity) FROM pg_class WHERE relname IN ('shops', 'clients', 'visits')"
    assert_output t
}
