# tests/lib/spec-expect.bash - what tests/fixtures/spec/small.conf must make of the
# legacy rows, written in SQL without dm, and the comparison of that with the destination
# (`load lib/spec-expect` after `load common`).
#
#   spec_expect_equal SRCDB DSTDB [ENTITY...]   (default: shop client visit)
#
# For each entity, the expected rows are computed in SRCDB (legacy.sql) by a query of
# their own: uuid-ossp's uuid_generate_v5 for the UUIDs (dm.conf(5), "Legacy keys and
# UUIDs"), AT TIME ZONE source_timezone, the renames, the expr and const columns, the
# where filters. The destination's rows are read from DSTDB's tables as they are. Both
# go through psql COPY under the comparator's fixed settings and must be equal, every
# column the spec fills, row for row. Rows made in the destination are left out of the
# comparison the way the tests make them: a shop without legacy_id, a client named
# 'native'. The extension is created in SRCDB's schema public (dm reads no functions).
#
# The UUID name of a legacy key is built in one place, uuid_of below: change it there
# if dm.conf(5)'s name format changes.

# _spec_setting NAME: a [dm] setting of the spec file.
_spec_setting() {
    awk -v k="$1" '$1 == k && $2 == "=" { print $3; exit }' "$DM_FIXTURES/spec/small.conf"
}

# _spec_expected ENTITY: the SQL of ENTITY's expected rows (in the source), in the
# column order of _spec_actual.
_spec_expected() {
    local tz
    tz=$(_spec_setting source_timezone)
    case "$1" in
        shop) printf '%s' "SELECT pg_temp.uuid_of('shop', shop_id::text) AS id, shop_id AS legacy_id,
            name AS title, opened AT TIME ZONE '$tz' AS opened_at FROM public.shop" ;;
        client) printf '%s' "SELECT pg_temp.uuid_of('client', client_id::text) AS id,
            CASE WHEN shop_id IS NOT NULL THEN pg_temp.uuid_of('shop', shop_id::text) END AS shop_id,
            first || ' ' || last AS full_name, 'active' AS status
            FROM public.client WHERE client_id <> 300" ;;
        visit) printf '%s' "SELECT pg_temp.uuid_of('visit', client_id::text, day::text) AS id,
            pg_temp.uuid_of('client', client_id::text) AS client_id, day AS visited_on, note
            FROM public.visit WHERE client_id <> 300" ;;
        *) echo "spec_expect_equal: no expected projection for entity $1" >&2; return 1 ;;
    esac
}

# _spec_actual ENTITY: the SQL of ENTITY's rows in the destination.
_spec_actual() {
    case "$1" in
        shop) printf '%s' "SELECT id, legacy_id, title, opened_at FROM public.shops WHERE legacy_id IS NOT NULL" ;;
        client) printf '%s' "SELECT id, shop_id, full_name, status FROM public.clients
            WHERE full_name IS DISTINCT FROM 'native'" ;;
        visit) printf '%s' "SELECT id, client_id, visited_on, note FROM public.visits" ;;
        *) echo "spec_expect_equal: no destination query for entity $1" >&2; return 1 ;;
    esac
}

# _spec_dump DB OUTFILE SQL [PRELUDE]: SQL's rows, sorted by their text in byte order, as
# COPY text, in OUTFILE.
_spec_dump() {
    local ci
    ci=$(dm_conninfo "$1") || return 1
    {
        echo "$DM_FIXED_SETTINGS"
        printf '%s\n' "${4:-}"
        _dm_copy_sql "($3) AS q" "*"
    } | "$DM_PSQL" -X -q -v ON_ERROR_STOP=1 -d "$ci" -f - >"$2"
}

spec_expect_equal() {
    local src=${1:-} dst=${2:-} ns e tmp rc=0 prelude
    [[ -n "$dst" ]] || { echo "usage: spec_expect_equal SRCDB DSTDB [ENTITY...]" >&2; return 2; }
    shift 2
    (($# > 0)) || set -- shop client visit
    ns=$(_spec_setting uuid_namespace)
    [[ -n "$ns" ]] || { echo "spec_expect_equal: no uuid_namespace in small.conf" >&2; return 2; }
    _dm_psql_quiet "$src" 'CREATE EXTENSION IF NOT EXISTS "uuid-ossp" WITH SCHEMA public' || return 2
    # The UUID of a legacy key: ENTITY:KEY, the values of a composite key joined with commas.
    prelude="CREATE FUNCTION pg_temp.uuid_of(entity text, VARIADIC key text[]) RETURNS uuid
        LANGUAGE sql AS \$\$ SELECT public.uuid_generate_v5('$ns'::uuid,
            entity || ':' || pg_catalog.array_to_string(key, ',')) \$\$;"
    tmp=$(_dm_scratch) || return 2
    for e in "$@"; do
        if ! _spec_dump "$src" "$tmp/$e.expected" "$(_spec_expected "$e")" "$prelude"; then
            echo "spec_expect_equal: cannot compute the expected rows of $e in $src" >&2; rc=2; break
        fi
        if ! _spec_dump "$dst" "$tmp/$e.actual" "$(_spec_actual "$e")"; then
            echo "spec_expect_equal: cannot read the rows of $e in $dst" >&2; rc=2; break
        fi
        if ! [[ -s "$tmp/$e.expected" ]]; then
            echo "spec_expect_equal: no expected row for $e: the comparison would prove nothing" >&2; rc=2; break
        fi
        if ! cmp -s "$tmp/$e.expected" "$tmp/$e.actual"; then
            _dm_report "entity $e" "expected (SQL over $src)" "$dst" "$tmp/$e.expected" "$tmp/$e.actual"
            printf 'replay: bats %q -f %q\n' "${BATS_TEST_FILENAME:-tests/spec.bats}" "${BATS_TEST_DESCRIPTION:-}" >&2
            rc=1
            break
        fi
    done
    rm -rf -- "$tmp"
    return "$rc"
}
