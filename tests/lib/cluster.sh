#!/usr/bin/env bash
# tests/lib/cluster.sh - throwaway PostgreSQL clusters for dm's tests.
#
# Source it (bats helpers, tests/run-all) or run it:
#
#   tests/lib/cluster.sh start DIR [tcp]   # prints "host=DIR port=N user=postgres"
#   tests/lib/cluster.sh stop DIR          # fast shutdown, then removes DIR
#   tests/lib/cluster.sh kill DIR          # immediate shutdown (crash), keeps DIR
#   tests/lib/cluster.sh restart DIR
#   tests/lib/cluster.sh conninfo DIR [DBNAME]
#
# Functions (when sourced):
#
#   cluster_start DIR [tcp]      initdb + start; sets and exports PGHOST_DIR, PGPORT_NUM
#   cluster_stop DIR             pg_ctl stop -m fast (escalating if needed), rm -rf DIR
#   cluster_kill DIR             pg_ctl stop -m immediate: a crash, for fault tests
#   cluster_restart DIR          (re)start; also works after cluster_kill
#   cluster_conninfo DB [DIR]    "host=DIR port=N user=postgres dbname=DB"
#   cluster_conninfo_tcp DB [DIR]  "host=127.0.0.1 port=N user=postgres dbname=DB"
#                                (needs PGPASSWORD=$CLUSTER_PASSWORD or password=...)
#   cluster_run_as CMD...        runs CMD as the cluster's OS user (for pgbouncer, which
#                                refuses to run as root)
#
# The cluster listens on a unix socket in DIR only (trust auth, role "postgres"); with
# "tcp" it also listens on 127.0.0.1:N with scram-sha-256 and password $CLUSTER_PASSWORD.
# fsync and full_page_writes are off: the data is throwaway and only an OS crash would
# lose it. synchronous_commit stays on, so a commit has reached the kernel before it
# returns: cluster_kill (an immediate stop, i.e. a server crash) loses nothing committed,
# which the fault tests rely on.
#
# Layout of DIR: data/ (PGDATA), .s.PGSQL.N (socket), postgres.log, port, .dm-cluster
# (marker: we only ever rm -rf a DIR that carries it).
#
# With CLUSTER_WAL_LEVEL=logical in the environment, the cluster can decode: wal_level =
# logical, max_replication_slots = max_wal_senders = 10 (dm-decode's tests); otherwise
# the default wal_level, replica.
#
# If DM_CLUSTER_REGISTRY names a file, every started DIR is appended to it so that
# tests/run-all can stop clusters a crashed or killed test file left behind.
#
# Everything here is written to be safe under bats' `set -e` and under plain bash:
# every command that may fail is checked, and failures return non-zero with a message.

# Password of the "postgres" role; only matters for the tcp (scram-sha-256) lines.
: "${CLUSTER_PASSWORD:=dm-test-password}"

# _cl_err MSG: one clear line on stderr, then fail.
_cl_err() { printf 'cluster.sh: %s\n' "$*" >&2; return 1; }

# _cl_bindir: the server's bin directory. Debian keeps initdb/pg_ctl out of PATH (in
# /usr/lib/postgresql/VERSION/bin), so PATH alone is not enough; PG_BINDIR overrides.
_cl_bindir() {
    local d
    if [[ -n "${PG_BINDIR:-}" ]]; then
        [[ -x "$PG_BINDIR/initdb" ]] && { echo "$PG_BINDIR"; return 0; }
        _cl_err "PG_BINDIR=$PG_BINDIR has no initdb"; return 1
    fi
    if command -v pg_config >/dev/null 2>&1; then
        d=$(pg_config --bindir 2>/dev/null)
        [[ -n "$d" && -x "$d/initdb" ]] && { echo "$d"; return 0; }
    fi
    # Newest installed server version first.
    for d in $(printf '%s\n' /usr/lib/postgresql/*/bin | sort -t/ -k5,5nr); do
        [[ -x "$d/initdb" ]] && { echo "$d"; return 0; }
    done
    d=$(command -v initdb 2>/dev/null) && [[ -n "$d" ]] && { dirname "$d"; return 0; }
    _cl_err "initdb not found: install postgresql (apt-get install postgresql) or set PG_BINDIR"
}

# _cl_user: the OS user that owns clusters. initdb and postgres refuse to run as root,
# so as root we borrow the "postgres" system user (or create "dmtest" if there is none).
_cl_user() {
    if [[ $EUID -ne 0 ]]; then id -un; return 0; fi
    if id postgres >/dev/null 2>&1; then echo postgres; return 0; fi
    if ! id dmtest >/dev/null 2>&1; then
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin dmtest >/dev/null 2>&1 ||
            { _cl_err "cannot create user dmtest (useradd failed)"; return 1; }
    fi
    echo dmtest
}

# cluster_run_as CMD...: run CMD as the cluster user. setpriv is preferred over runuser
# because it opens no PAM session (no syslog noise, nothing to clean up).
cluster_run_as() {
    local user
    user=$(_cl_user) || return 1
    if [[ $EUID -ne 0 ]]; then
        "$@"
    elif command -v setpriv >/dev/null 2>&1; then
        setpriv --reuid="$user" --regid="$user" --init-groups -- "$@"
    else
        runuser -u "$user" -- "$@"
    fi
}

# _cl_port_in_use PORT: is anything bound to PORT on TCP (v4 or v6)? Read /proc rather
# than run ss/netstat, which a minimal CI image may lack. Column 2 is ADDR:PORT in hex.
_cl_port_in_use() {
    local hex
    hex=$(printf '%04X' "$1")
    cat /proc/net/tcp /proc/net/tcp6 2>/dev/null |
        awk -v p="$hex" 'NR > 1 { split($2, a, ":"); if (a[2] == p) f = 1 } END { exit !f }'
}

# _cl_pick_port: a random free port. Random (not "first free from 5432") so that clusters
# started in parallel by different test files rarely pick the same one; cluster_start
# still retries with a new port if the server cannot bind.
_cl_pick_port() {
    local i port
    for ((i = 0; i < 200; i++)); do
        port=$((20000 + (RANDOM * 32768 + RANDOM) % 40000))
        _cl_port_in_use "$port" && continue
        [[ -e "/tmp/.s.PGSQL.$port" ]] && continue   # a system cluster's socket
        echo "$port"; return 0
    done
    _cl_err "no free TCP port found"
}

# _cl_abs DIR: absolute path without requiring DIR to exist yet.
_cl_abs() {
    case "$1" in
        /*) printf '%s\n' "$1" ;;
        *) printf '%s/%s\n' "$PWD" "$1" ;;
    esac
}

# _cl_pg_ctl DIR ARGS...: pg_ctl as the cluster user. Run from DIR because the caller's
# cwd (e.g. /root) may be unreadable by that user. File descriptors 3-9 are closed so
# the postmaster does not inherit bats' output pipe (fd 3): bats waits for every holder
# of that pipe, so an inherited fd would hang the test run until the server stops.
_cl_pg_ctl() {
    local dir=$1 bindir
    shift
    bindir=$(_cl_bindir) || return 1
    (cd "$dir" && cluster_run_as "$bindir/pg_ctl" -D "$dir/data" "$@") \
        </dev/null 3>&- 4>&- 5>&- 6>&- 7>&- 8>&- 9>&-
}

# _cl_postmaster_pid DIR: pid of the running postmaster of DIR, if it is ours and alive.
# Checking /proc/PID/cmdline guards against a stale pid file whose pid was reused.
_cl_postmaster_pid() {
    local pid
    [[ -r "$1/data/postmaster.pid" ]] || return 1
    read -r pid <"$1/data/postmaster.pid" || return 1
    [[ "$pid" =~ ^[0-9]+$ ]] || return 1
    [[ -r "/proc/$pid/cmdline" ]] || return 1
    tr '\0' ' ' <"/proc/$pid/cmdline" | grep -qF -- "$1/data" || return 1
    echo "$pid"
}

# _cl_show_log DIR: the tail of the server log, to explain a failed start.
_cl_show_log() {
    [[ -r "$1/postgres.log" ]] || return 0
    echo "cluster.sh: last lines of $1/postgres.log:" >&2
    tail -n 20 "$1/postgres.log" | sed 's/^/  | /' >&2
}

# _cl_remove DIR: rm -rf DIR, but only a directory we created a cluster in.
_cl_remove() {
    local dir=$1
    [[ -n "$dir" && "$dir" != / && -e "$dir/.dm-cluster" ]] || return 0
    rm -rf -- "$dir"
}

# cluster_start DIR [tcp]
cluster_start() {
    local dir=${1:-} mode=${2:-} bindir user
    if [[ -z "$dir" ]]; then _cl_err "usage: cluster_start DIR [tcp]"; return 2; fi
    case "$mode" in
        "" | tcp) ;;
        *) _cl_err "cluster_start: unknown mode '$mode' (expected: tcp)"; return 2 ;;
    esac
    dir=$(_cl_abs "$dir")
    bindir=$(_cl_bindir) || return 1
    user=$(_cl_user) || return 1

    # The socket path (DIR/.s.PGSQL.NNNNN) must fit in sun_path (107 bytes + NUL).
    if ((${#dir} + 15 > 107)); then
        _cl_err "DIR too long for a unix socket path (${#dir} chars, max 92): $dir"
        return 1
    fi
    # Never clobber: DIR must be new, empty, or a leftover of ours that is not running.
    if [[ -e "$dir/.dm-cluster" ]]; then
        if _cl_postmaster_pid "$dir" >/dev/null; then
            _cl_err "a cluster is already running in $dir"; return 1
        fi
        rm -rf -- "$dir" || return 1
    elif [[ -d "$dir" && -n "$(ls -A "$dir" 2>/dev/null)" ]]; then
        _cl_err "$dir is not empty; refusing to create a cluster there"; return 1
    fi
    mkdir -p -- "$dir" || { _cl_err "cannot create $dir"; return 1; }
    : >"$dir/.dm-cluster" || return 1

    # From here on, any failure removes DIR again (and stops a half-started server).
    if ! _cl_start_in "$dir" "$mode" "$bindir" "$user"; then
        local pid
        if pid=$(_cl_postmaster_pid "$dir"); then kill -KILL "$pid" 2>/dev/null; fi
        _cl_remove "$dir"
        return 1
    fi
    return 0
}

# _cl_start_in DIR MODE BINDIR USER: the body of cluster_start, run on a fresh DIR.
_cl_start_in() {
    local dir=$1 mode=$2 bindir=$3 user=$4 port attempt listen out

    # The server user must own DIR (it writes the socket and log there) and be able to
    # reach it; the common failure is a DIR below a root-only directory such as /root.
    if [[ $EUID -eq 0 ]]; then
        chown "$user:" "$dir" || return 1
    fi
    chmod 0755 "$dir" || return 1
    if ! cluster_run_as test -w "$dir" -a -x "$dir"; then
        _cl_err "user $user cannot write $dir (is a parent directory private?); use a dir under /tmp"
        return 1
    fi

    # initdb: C.UTF-8 exists on every current glibc, so results do not depend on which
    # locales the machine generated; UTF8 so the fixtures' unicode loads. The password is
    # for scram over tcp only; it goes through a file so it is not in ps output.
    printf '%s\n' "$CLUSTER_PASSWORD" >"$dir/pwfile" || return 1
    [[ $EUID -eq 0 ]] && chown "$user:" "$dir/pwfile"
    chmod 0600 "$dir/pwfile"
    if ! out=$(cd "$dir" && cluster_run_as "$bindir/initdb" -D "$dir/data" -U postgres \
        --pwfile="$dir/pwfile" -E UTF8 --locale=C.UTF-8 --auth-local=trust \
        --auth-host=scram-sha-256 --no-sync --no-instructions 2>&1 </dev/null); then
        printf '%s\n' "$out" | tail -n 20 >&2
        rm -f "$dir/pwfile"
        _cl_err "initdb failed in $dir"
        return 1
    fi
    rm -f "$dir/pwfile"

    listen="''"
    [[ "$mode" == tcp ]] && listen="'127.0.0.1'"
    for attempt in 1 2 3 4 5; do
        port=$(_cl_pick_port) || return 1
        # Appended settings win over the defaults above them in postgresql.conf, and
        # they survive restarts (unlike pg_ctl -o).
        cluster_run_as tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF || return 1

# --- dm test cluster (tests/lib/cluster.sh), attempt $attempt ---
listen_addresses = $listen
port = $port
unix_socket_directories = '$dir'
unix_socket_permissions = 0777
max_connections = 50
shared_buffers = 16MB
fsync = off
full_page_writes = off
jit = off
log_min_messages = warning
log_line_prefix = '%m [%p] %q%u@%d '
EOF
        if [[ "${CLUSTER_WAL_LEVEL:-}" == logical ]]; then
            cluster_run_as tee -a "$dir/data/postgresql.conf" >/dev/null <<EOF || return 1
wal_level = logical
max_replication_slots = 10
max_wal_senders = 10
EOF
        fi
        if _cl_pg_ctl "$dir" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1; then
            echo "$port" >"$dir/port"
            echo "$mode" >"$dir/mode"
            PGHOST_DIR=$dir
            PGPORT_NUM=$port
            export PGHOST_DIR PGPORT_NUM
            if [[ -n "${DM_CLUSTER_REGISTRY:-}" ]]; then
                echo "$dir" >>"$DM_CLUSTER_REGISTRY"
            fi
            return 0
        fi
        # A lost race for the port is worth another try; anything else is not.
        if ! grep -q "could not bind\|could not create lock file\|Address already in use" \
            "$dir/postgres.log" 2>/dev/null; then
            break
        fi
    done
    _cl_show_log "$dir"
    _cl_err "server in $dir did not start"
    return 1
}

# cluster_stop DIR: fast shutdown, escalating to immediate and then SIGKILL of this
# cluster's postmaster only, then remove DIR. Never fails for an already-stopped cluster.
cluster_stop() {
    local dir=${1:-} pid
    if [[ -z "$dir" ]]; then _cl_err "usage: cluster_stop DIR"; return 2; fi
    dir=$(_cl_abs "$dir")
    [[ -e "$dir/.dm-cluster" ]] || return 0   # nothing of ours there (already removed)
    if _cl_postmaster_pid "$dir" >/dev/null; then
        _cl_pg_ctl "$dir" -w -t 30 -m fast stop >/dev/null 2>&1 ||
            _cl_pg_ctl "$dir" -w -t 10 -m immediate stop >/dev/null 2>&1
        if pid=$(_cl_postmaster_pid "$dir"); then
            kill -KILL "$pid" 2>/dev/null
            sleep 0.2
        fi
    fi
    _cl_remove "$dir"
    if [[ "${PGHOST_DIR:-}" == "$dir" ]]; then unset PGHOST_DIR PGPORT_NUM; fi
    return 0
}

# cluster_kill DIR: simulate a crash (no shutdown checkpoint); DIR stays for a restart.
cluster_kill() {
    local dir=${1:-}
    if [[ -z "$dir" ]]; then _cl_err "usage: cluster_kill DIR"; return 2; fi
    dir=$(_cl_abs "$dir")
    _cl_pg_ctl "$dir" -w -t 30 -m immediate stop >/dev/null 2>&1 ||
        { _cl_err "cannot stop the server in $dir"; return 1; }
}

# cluster_restart DIR: pg_ctl restart, which also starts a stopped or killed server
# (then with crash recovery). Re-exports PGHOST_DIR/PGPORT_NUM for that cluster.
cluster_restart() {
    local dir=${1:-}
    if [[ -z "$dir" ]]; then _cl_err "usage: cluster_restart DIR"; return 2; fi
    dir=$(_cl_abs "$dir")
    [[ -e "$dir/.dm-cluster" ]] || { _cl_err "no cluster in $dir"; return 1; }
    if _cl_postmaster_pid "$dir" >/dev/null; then
        _cl_pg_ctl "$dir" -l "$dir/postgres.log" -w -t 60 -m fast restart >/dev/null 2>&1
    else
        _cl_pg_ctl "$dir" -l "$dir/postgres.log" -w -t 60 start >/dev/null 2>&1
    fi || { _cl_show_log "$dir"; _cl_err "cannot restart the server in $dir"; return 1; }
    PGHOST_DIR=$dir
    PGPORT_NUM=$(<"$dir/port")
    export PGHOST_DIR PGPORT_NUM
}

# _cl_port_of DIR: the port of a cluster (DIR defaults to the last one started).
_cl_port_of() {
    local dir=$1
    if [[ -r "$dir/port" ]]; then cat "$dir/port"; return 0; fi
    _cl_err "no cluster in '$dir'"
}

# _cl_quote VALUE: a libpq conninfo value, quoted only when it needs to be.
_cl_quote() {
    local v=$1
    if [[ -n "$v" && "$v" != *[[:space:]\'\\]* ]]; then printf '%s' "$v"; return; fi
    v=${v//\\/\\\\}
    v=${v//\'/\\\'}
    printf "'%s'" "$v"
}

# cluster_conninfo [DBNAME [DIR]]: socket conninfo; without DBNAME, just the prefix.
cluster_conninfo() {
    local db=${1:-} dir=${2:-${PGHOST_DIR:-}} port
    port=$(_cl_port_of "$dir") || return 1
    printf 'host=%s port=%s user=postgres' "$(_cl_quote "$dir")" "$port"
    [[ -n "$db" ]] && printf ' dbname=%s' "$(_cl_quote "$db")"
    printf '\n'
}

# cluster_conninfo_tcp [DBNAME [DIR]]: conninfo over 127.0.0.1 (cluster started "tcp").
cluster_conninfo_tcp() {
    local db=${1:-} dir=${2:-${PGHOST_DIR:-}} port
    port=$(_cl_port_of "$dir") || return 1
    [[ "$(cat "$dir/mode" 2>/dev/null)" == tcp ]] ||
        { _cl_err "cluster in $dir was not started with tcp"; return 1; }
    printf 'host=127.0.0.1 port=%s user=postgres' "$port"
    [[ -n "$db" ]] && printf ' dbname=%s' "$(_cl_quote "$db")"
    printf '\n'
}

# Command-line entry point (only when executed, not when sourced).
_cl_main() {
    local cmd=${1:-} dir=${2:-}
    case "$cmd" in
        start)
            [[ -n "$dir" ]] || { _cl_err "usage: $0 start DIR [tcp]"; exit 2; }
            # cluster_start cleans up after its own failures; this trap covers being
            # interrupted half way (Ctrl-C during initdb).
            trap 'cluster_stop "$dir"; exit 130' INT TERM
            cluster_start "$dir" "${3:-}" || exit $?
            trap - INT TERM
            cluster_conninfo "" "$(_cl_abs "$dir")"
            ;;
        stop) [[ -n "$dir" ]] || { _cl_err "usage: $0 stop DIR"; exit 2; }; cluster_stop "$dir" ;;
        kill) [[ -n "$dir" ]] || { _cl_err "usage: $0 kill DIR"; exit 2; }; cluster_kill "$dir" ;;
        restart)
            [[ -n "$dir" ]] || { _cl_err "usage: $0 restart DIR"; exit 2; }
            cluster_restart "$dir" && cluster_conninfo "" "$(_cl_abs "$dir")"
            ;;
        conninfo)
            [[ -n "$dir" ]] || { _cl_err "usage: $0 conninfo DIR [DBNAME]"; exit 2; }
            cluster_conninfo "${3:-}" "$(_cl_abs "$dir")"
            ;;
        *)
            echo "usage: $0 start DIR [tcp] | stop DIR | kill DIR | restart DIR | conninfo DIR [DBNAME]" >&2
            exit 2
            ;;
    esac
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
    _cl_main "$@"
fi
