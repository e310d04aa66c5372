/* state.c - the dm schema in the destination. */
#include "state.h"

#include <stdlib.h>
#include <string.h>

static const char dmstate_ddl[] =
    "CREATE SCHEMA IF NOT EXISTS dm;"
    "CREATE TABLE IF NOT EXISTS dm.checkpoint ("
    " entity text PRIMARY KEY,"
    " watermark text,"
    " change_column text,"
    " run_id text,"
    " batches bigint NOT NULL DEFAULT 0,"
    " rows_applied bigint NOT NULL DEFAULT 0,"
    " last_key text,"
    " complete boolean NOT NULL DEFAULT false,"
    " updated_at timestamptz NOT NULL DEFAULT pg_catalog.now());"
    "CREATE TABLE IF NOT EXISTS dm.pending_delete ("
    " entity text NOT NULL,"
    " run_id text NOT NULL,"
    " key text[] NOT NULL,"
    " ready boolean NOT NULL DEFAULT false);"
    "CREATE INDEX IF NOT EXISTS pending_delete_entity ON dm.pending_delete (entity, run_id);"
    "ALTER TABLE dm.pending_delete ADD COLUMN IF NOT EXISTS via_ledger boolean NOT NULL DEFAULT false;"
    "CREATE TABLE IF NOT EXISTS dm.run ("
    " run_id text NOT NULL,"
    " entity text NOT NULL,"
    " started_at timestamptz NOT NULL,"
    " finished_at timestamptz,"
    " outcome text NOT NULL,"
    " inserted bigint NOT NULL DEFAULT 0,"
    " updated bigint NOT NULL DEFAULT 0,"
    " deleted bigint NOT NULL DEFAULT 0,"
    " unchanged bigint NOT NULL DEFAULT 0,"
    " PRIMARY KEY (run_id, entity));"
    "ALTER TABLE dm.run ADD COLUMN IF NOT EXISTS batches bigint NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS progress_at timestamptz,"
    " ADD COLUMN IF NOT EXISTS rejected bigint NOT NULL DEFAULT 0,"
    " ADD COLUMN IF NOT EXISTS error text;"
    "CREATE TABLE IF NOT EXISTS dm.ledger ("
    " entity text NOT NULL,"
    " legacy_key text[] NOT NULL,"
    " dest_key text NOT NULL,"
    " created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),"
    " PRIMARY KEY (entity, legacy_key));"
    "CREATE INDEX IF NOT EXISTS ledger_dest_key ON dm.ledger (entity, dest_key);"
    "CREATE TABLE IF NOT EXISTS dm.follow ("
    " slot text PRIMARY KEY,"
    " applied_lsn pg_lsn NOT NULL,"
    " commit_time timestamptz,"
    " applied_at timestamptz NOT NULL DEFAULT pg_catalog.now(),"
    " source_lsn pg_lsn,"
    " restart_lsn pg_lsn,"
    " synced_at timestamptz,"
    " full_entities text[]);"
    "CREATE TABLE IF NOT EXISTS dm.partition ("
    " entity text NOT NULL,"
    " part integer NOT NULL,"
    " parts integer NOT NULL,"
    " key_from text,"
    " key_before text,"
    " created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),"
    " PRIMARY KEY (entity, part));"
    "CREATE TABLE IF NOT EXISTS dm.lease ("
    " entity text PRIMARY KEY,"
    " owner text NOT NULL,"
    " pid integer,"
    " backend_start timestamptz,"
    " expires timestamptz NOT NULL);";

int
dmstate_ensure(PGconn *conn)
{
	PGresult *res;
	int present;

	if (dmpg_begin(conn, "", NULL) < 0)
		return -1;
	/* Checked first so a role without CREATE on the database can use a prepared dm schema. */
	res = dmpg_exec(conn,
	    "SELECT pg_catalog.to_regclass('dm.checkpoint') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.pending_delete') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.run') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.lease') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.ledger') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.follow') IS NOT NULL"
	    " AND pg_catalog.to_regclass('dm.partition') IS NOT NULL"
	    " AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass('dm.pending_delete')"
	    "   AND attname = 'via_ledger')"
	    " AND EXISTS (SELECT 1 FROM pg_catalog.pg_attribute WHERE attrelid = pg_catalog.to_regclass('dm.run')"
	    "   AND attname = 'error')");
	if (res == NULL)
		goto fail;
	present = strcmp(dmpg_value(res, 0, 0), "t") == 0;
	dmpg_clear(res);
	if (!present) {
		/* Two first runs at once must not race on CREATE ... IF NOT EXISTS. */
		if (dmpg_run(conn, "SELECT pg_catalog.pg_advisory_xact_lock(7132475)") < 0 ||
		    dmpg_run(conn, dmstate_ddl) < 0)
			goto fail;
	}
	return dmpg_commit(conn);
fail:
	dm_err("cannot set up the dm schema in the destination (the role needs CREATE on the database, or an existing dm schema)");
	dmpg_rollback(conn);
	return -1;
}

/* The holder's backend identifies it: gone from pg_stat_activity means the holder died. */
static const char dmstate_me[] =
    "pg_catalog.pg_backend_pid(), (SELECT a.backend_start FROM pg_catalog.pg_stat_activity a"
    " WHERE a.pid = pg_catalog.pg_backend_pid())";

/*
 * Takes the entity's lease, or says who holds it. A lease row locked by
 * another open transaction is held: only its holder writes it, at the start
 * of each of its load transactions (dmstate_lease_renew), so the lock means
 * that holder is in the middle of a transaction, whatever its expiry says
 * (a single-transaction load may outlast it). Looking with SKIP LOCKED
 * answers at once instead of queueing behind that transaction for as long
 * as it lasts; the caller decides whether to poll again (--wait).
 */
int
dmstate_lease_take(PGconn *conn, const char *entity, const char *owner, int ttl_seconds, char **holder)
{
	char ttl[32];
	snprintf(ttl, sizeof ttl, "%d seconds", ttl_seconds);
	const char *p[3] = { entity, owner, ttl };
	const char *q[1] = { entity };
	PGresult *res = dmpg_exec_params(conn,
	    "SELECT (SELECT pg_catalog.count(*) FROM dm.lease WHERE entity = $1),"
	    " (SELECT pg_catalog.count(*) FROM (SELECT 1 FROM dm.lease WHERE entity = $1 FOR UPDATE SKIP LOCKED) l)",
	    1, q);
	if (res == NULL)
		return -1;
	int busy = strcmp(dmpg_value(res, 0, 0), dmpg_value(res, 0, 1)) != 0;
	dmpg_clear(res);
	*holder = NULL;
	if (!busy) {
		char *sql = dm_xasprintf(
		    "INSERT INTO dm.lease AS l (entity, owner, pid, backend_start, expires)"
		    " VALUES ($1, $2, %s, pg_catalog.now() + $3::pg_catalog.interval)"
		    " ON CONFLICT (entity) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid,"
		    " backend_start = EXCLUDED.backend_start, expires = EXCLUDED.expires"
		    " WHERE l.owner = EXCLUDED.owner OR l.expires < pg_catalog.now()"
		    /* backend_start is hidden from roles without pg_read_all_stats: then the pid decides */
		    " OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = l.pid"
		    "   AND (a.backend_start IS NULL OR l.backend_start IS NULL OR a.backend_start = l.backend_start))"
		    " RETURNING owner", dmstate_me);
		res = dmpg_exec_params(conn, sql, 3, p);
		free(sql);
		if (res == NULL)
			return -1;
		int got = dmpg_nrows(res) == 1;
		dmpg_clear(res);
		if (got)
			return 1;
	}
	res = dmpg_exec_params(conn, "SELECT owner || ' (until ' || expires::pg_catalog.text || ')' FROM dm.lease WHERE entity = $1", 1, q);
	if (res != NULL && dmpg_nrows(res) == 1)
		*holder = dm_xstrdup(dmpg_value(res, 0, 0));
	dmpg_clear(res);
	return 0;
}

/*
 * dmstate_lease_take for many leases (prefix + each entity) in one round
 * of statements: the same look under SKIP LOCKED, then one INSERT ... ON
 * CONFLICT over all of them; 1 only if it returned every one.
 */
int
dmstate_leases_take(PGconn *conn, char *const *entities, int n, const char *prefix, const char *owner,
    int ttl_seconds)
{
	char ttl[32];
	char *sql = NULL;
	dm_buf names = { 0 };
	PGresult *res = NULL;
	int rc = -1;

	snprintf(ttl, sizeof ttl, "%d seconds", ttl_seconds);
	dm_buf_text_array(&names, entities, n, prefix);
	const char *q[1] = { dm_buf_cstr(&names) };
	res = dmpg_exec_params(conn,
	    "SELECT (SELECT pg_catalog.count(*) FROM dm.lease WHERE entity = ANY ($1::pg_catalog.text[])),"
	    " (SELECT pg_catalog.count(*) FROM (SELECT 1 FROM dm.lease WHERE entity = ANY ($1::pg_catalog.text[])"
	    " FOR UPDATE SKIP LOCKED) l)",
	    1, q);
	if (res == NULL)
		goto out;
	rc = 0;
	if (strcmp(dmpg_value(res, 0, 0), dmpg_value(res, 0, 1)) != 0)
		goto out;
	dmpg_clear(res);
	const char *p[3] = { dm_buf_cstr(&names), owner, ttl };
	sql = dm_xasprintf(
	    "INSERT INTO dm.lease AS l (entity, owner, pid, backend_start, expires)"
	    " SELECT e.name, $2, %s, pg_catalog.now() + $3::pg_catalog.interval"
	    " FROM (SELECT DISTINCT pg_catalog.unnest($1::pg_catalog.text[]) AS name) e"
	    " ON CONFLICT (entity) DO UPDATE SET owner = EXCLUDED.owner, pid = EXCLUDED.pid,"
	    " backend_start = EXCLUDED.backend_start, expires = EXCLUDED.expires"
	    " WHERE l.owner = EXCLUDED.owner OR l.expires < pg_catalog.now()"
	    " OR NOT EXISTS (SELECT 1 FROM pg_catalog.pg_stat_activity a WHERE a.pid = l.pid"
	    "   AND (a.backend_start IS NULL OR l.backend_start IS NULL OR a.backend_start = l.backend_start))"
	    " RETURNING entity", dmstate_me);
	res = dmpg_exec_params(conn, sql, 3, p);
	if (res == NULL) {
		rc = -1;
		goto out;
	}
	/* every distinct name came back: all taken */
	int got = 1;
	for (int i = 0; i < n && got; i++) {
		int found = 0;
		size_t plen = strlen(prefix);
		for (int r = 0; r < dmpg_nrows(res) && !found; r++) {
			const char *v = dmpg_value(res, r, 0);
			found = strncmp(v, prefix, plen) == 0 && strcmp(v + plen, entities[i]) == 0;
		}
		got = found;
	}
	rc = got;
out:
	dmpg_clear(res);
	free(sql);
	dm_buf_free(&names);
	return rc;
}

int
dmstate_leases_release(PGconn *conn, char *const *entities, int n, const char *prefix, const char *owner)
{
	dm_buf names = { 0 };

	dm_buf_text_array(&names, entities, n, prefix);
	const char *p[2] = { dm_buf_cstr(&names), owner };
	int rc = dmpg_run_params(conn, "DELETE FROM dm.lease WHERE entity = ANY ($1::pg_catalog.text[]) AND owner = $2", 2, p);
	dm_buf_free(&names);
	return rc;
}

int
dmstate_lease_renew(PGconn *conn, const char *entity, const char *owner, int ttl_seconds)
{
	char ttl[32];
	snprintf(ttl, sizeof ttl, "%d seconds", ttl_seconds);
	const char *p[3] = { entity, owner, ttl };
	char *sql = dm_xasprintf(
	    "UPDATE dm.lease SET expires = pg_catalog.now() + $3::pg_catalog.interval,"
	    " (pid, backend_start) = (SELECT %s) WHERE entity = $1 AND owner = $2", dmstate_me);
	PGresult *res = dmpg_exec_params(conn, sql, 3, p);
	free(sql);
	if (res == NULL)
		return -1;
	int ok = strcmp(dmpg_cmd_tuples(res), "1") == 0;
	dmpg_clear(res);
	if (!ok)
		dm_err("lost the entity's lease to another run: stopping (nothing of this batch was applied)");
	return ok ? 0 : -1;
}

int
dmstate_lease_release(PGconn *conn, const char *entity, const char *owner)
{
	const char *p[2] = { entity, owner };

	return dmpg_run_params(conn, "DELETE FROM dm.lease WHERE entity = $1 AND owner = $2", 2, p);
}
