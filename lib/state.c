/* state.c - the dm schema in the destination. */
#include "state.h"

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
    " PRIMARY KEY (run_id, entity));";

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
	    " AND pg_catalog.to_regclass('dm.run') IS NOT NULL");
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
