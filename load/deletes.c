/*
 * dm-load: deletes, parked in dm.pending_delete by each batch and applied
 * in the transaction that saw the stream's trailer (or by --apply-deletes).
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "state.h"

#include <stdlib.h>

int
dmload_park_deletes(PGconn *conn, target *tg, uint64_t *parked)
{
	const char *params[2] = { tg->entity, dmload.run_id };
	PGresult *res = dmpg_exec_params(conn, tg->pending_sql, 2, params);

	if (res == NULL)
		return -1;
	uint64_t n = 0;
	dm_parse_u64(dmpg_cmd_tuples(res), &n);
	*parked = n;
	dmpg_clear(res);
	return 0;
}

/*
 * --apply-deletes deletes parents after their children (dm-migrate applies
 * them in reverse foreign-key order). A foreign key without an index on its
 * referencing columns makes PostgreSQL scan the child table once per
 * deleted parent row: 300 parents, 300 scans. Where the role owns both
 * tables (as for the bulk load) and the key has no ON DELETE action (a
 * cascade or SET NULL must still run), the key is dropped here for the
 * delete and fk_restore adds it back, checked by one scan of the child, in
 * the same transaction: nobody ever sees the table without it, and rows
 * still referencing a deleted parent fail the whole transaction. NOT VALID
 * keys and the others keep the row-by-row checks; so does a table with
 * fewer than 2 rows to delete, which has nothing to gain. Every table
 * involved is locked first, in oid order, so that two such deletes cannot
 * deadlock. Fills fks[i] (owned by the caller) with the keys dropped that
 * reference target i: name, definition, child's schema, child's name,
 * child's oid, target's oid. When a lock or a drop is refused, rolls back
 * to its savepoint, leaving the row-by-row path (fks[i] NULL). 0; -1 on a
 * database error (printed); -2 for a lost lease.
 */
static int
fk_drop(PGconn *conn, target *tgs, int ntg, const uint64_t *pending, PGresult **fks)
{
	dm_buf oids = { 0 }, lock = { 0 };
	int rc = -1, nfk = 0;

	for (int i = 0; i < ntg; i++) {
		if (pending[i] < 2)
			continue;
		const char *p[1] = { tgs[i].t.qualified };
		fks[i] = dmpg_exec_params(conn,
		    "SELECT f.conname, pg_catalog.pg_get_constraintdef(f.oid), n.nspname, c.relname,"
		    " f.conrelid::pg_catalog.text, f.confrelid::pg_catalog.text"
		    " FROM pg_catalog.pg_constraint f JOIN pg_catalog.pg_class c ON c.oid = f.conrelid"
		    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
		    " JOIN pg_catalog.pg_class r ON r.oid = f.confrelid"
		    " WHERE f.confrelid = $1::pg_catalog.regclass AND " DMLOAD_FK_DROPPABLE
		    " AND f.confdeltype IN ('a', 'r') AND r.relkind = 'r' AND pg_catalog.pg_has_role(r.relowner, 'USAGE')"
		    " AND c.relkind = 'r' AND pg_catalog.pg_has_role(c.relowner, 'USAGE') AND NOT " DMPG_FK_INDEXED
		    " ORDER BY f.conrelid, f.conname", 1, p);
		if (fks[i] == NULL)
			goto out;
		for (int j = 0; j < dmpg_nrows(fks[i]); j++)
			dm_buf_printf(&oids, "%s%s,%s", oids.len ? "," : "", dmpg_value(fks[i], j, 4),
			    dmpg_value(fks[i], j, 5));
		nfk += dmpg_nrows(fks[i]);
	}
	if (nfk == 0) {
		rc = 0;
		goto out;
	}
	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, dmload.lease_owner, dmload.lease_seconds) < 0) {
			rc = -2;
			goto out;
		}
	if (dmpg_run(conn, "SAVEPOINT dm_fk") < 0)
		goto out;
	dmpg_quiet_errors(1);
	char *arr = dm_xasprintf("{%s}", dm_buf_cstr(&oids));
	const char *p[1] = { arr };
	PGresult *res = dmpg_exec_params(conn, "SELECT n.nspname, c.relname FROM pg_catalog.pg_class c"
	    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	    " WHERE c.oid = ANY ($1::pg_catalog.oid[]) ORDER BY c.oid", 1, p);
	free(arr);
	int bad = res == NULL;
	for (int r = 0; !bad && r < dmpg_nrows(res); r++) {
		char *s = dmpg_ident(conn, dmpg_value(res, r, 0)), *t = dmpg_ident(conn, dmpg_value(res, r, 1));
		dm_buf_printf(&lock, "%sONLY %s.%s", r ? ", " : "LOCK TABLE ", s, t);
		free(s);
		free(t);
	}
	dmpg_clear(res);
	if (!bad) {
		dm_buf_puts(&lock, " IN ACCESS EXCLUSIVE MODE");
		bad = dmpg_run(conn, dm_buf_cstr(&lock)) < 0;
	}
	for (int i = 0; i < ntg && !bad; i++)
		for (int j = 0; fks[i] != NULL && j < dmpg_nrows(fks[i]) && !bad; j++) {
			char *s = dmpg_ident(conn, dmpg_value(fks[i], j, 2)), *t = dmpg_ident(conn, dmpg_value(fks[i], j, 3));
			char *k = dmpg_ident(conn, dmpg_value(fks[i], j, 0));
			char *sql = dm_xasprintf("ALTER TABLE %s.%s DROP CONSTRAINT %s", s, t, k);
			bad = dmpg_run(conn, sql) < 0;
			free(sql);
			free(s);
			free(t);
			free(k);
		}
	dmpg_quiet_errors(0);
	if (bad) {
		dm_debug("deleting with row-by-row foreign key checks: %s", dmpg_last_error());
		dmpg_forget_error();
		if (dmpg_run(conn, "ROLLBACK TO SAVEPOINT dm_fk") < 0)
			goto out;
		for (int i = 0; i < ntg; i++) {
			dmpg_clear(fks[i]);
			fks[i] = NULL;
		}
	} else if (dmpg_run(conn, "RELEASE SAVEPOINT dm_fk") < 0) {
		goto out;
	}
	rc = 0;
out:
	dm_buf_free(&oids);
	dm_buf_free(&lock);
	return rc;
}

/*
 * After the delete: adds back each key fk_drop dropped, from its own
 * definition, checked by one query over the child table. Deferred checks
 * still pending run first (ALTER TABLE refuses a table with pending trigger
 * events). 0, or -1 after naming the key that the remaining rows break.
 */
static int
fk_restore(PGconn *conn, target *tgs, int ntg, PGresult **fks)
{
	int any = 0;

	for (int i = 0; i < ntg; i++)
		any |= fks[i] != NULL && dmpg_nrows(fks[i]) > 0;
	if (!any)
		return 0;
	if (dmpg_run(conn, "SET CONSTRAINTS ALL IMMEDIATE") < 0)
		return -1;
	for (int i = 0; i < ntg; i++) {
		for (int j = 0; fks[i] != NULL && j < dmpg_nrows(fks[i]); j++) {
			char *s = dmpg_ident(conn, dmpg_value(fks[i], j, 2)), *t = dmpg_ident(conn, dmpg_value(fks[i], j, 3));
			char *table = dm_xasprintf("%s.%s", s, t);
			int r = dmload_fk_add(conn, table, dmpg_value(fks[i], j, 0), dmpg_value(fks[i], j, 1), 0);
			free(table);
			free(s);
			free(t);
			if (r < 0) {
				const char *saved = dm_subject;
				dm_subject = tgs[i].entity;
				dm_err("rows of %s.%s still reference rows to delete, through foreign key %s; nothing was deleted"
				    " (delete them first): %s", dmpg_value(fks[i], j, 2), dmpg_value(fks[i], j, 3),
				    dmpg_value(fks[i], j, 0), dmpg_last_error());
				dm_subject = saved;
				return -1;
			}
		}
		if (fks[i] != NULL && dmpg_nrows(fks[i]) > 0) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_debug("deleted with %d unindexed foreign key(s) dropped and checked again once each", dmpg_nrows(fks[i]));
			dm_subject = saved;
		}
	}
	return 0;
}

/*
 * Deletes the parked keys of all targets in one statement, then forgets them:
 * with only_ready (--apply-deletes) those marked ready by a stream that ended
 * with a verified trailer, unindexed foreign keys set aside (fk_drop);
 * otherwise only those this load parked itself. -2: the lease was lost.
 */
int
dmload_apply_deletes(PGconn *conn, target *tgs, int ntg, int only_ready)
{
	dm_buf sql = { 0 };
	const char *params[3 * MAX_TARGETS];
	uint64_t pending[MAX_TARGETS] = { 0 };
	PGresult *fks[MAX_TARGETS] = { 0 };
	int rc = -1;

	uint64_t any = 0;
	for (int i = 0; i < ntg; i++) {
		const char *p[4] = { tgs[i].entity, dmload.run_id, only_ready ? "true" : "false", tgs[i].ledger_entity };
		/*
		 * The guard weighs the deletes of every key range of the entity (checkpoints
		 * ENTITY#I/N), not this range's alone: a share of the table deleted range by
		 * range is refused as it would be at once.
		 */
		PGresult *pr = dmpg_exec_params(conn, "SELECT pg_catalog.count(*) FILTER (WHERE entity = $1), pg_catalog.count(*)"
		    " FROM dm.pending_delete"
		    " WHERE (entity = $1 OR ($1 <> $4 AND pg_catalog.left(entity, pg_catalog.length($4) + 1) = $4 || '#'))"
		    " AND (CASE WHEN $3::pg_catalog.bool THEN ready ELSE run_id = $2 END)", 4, p);
		if (pr == NULL)
			goto out;
		pending[i] = dmload_u64(pr, 0, 0);
		uint64_t weighed = dmload_u64(pr, 0, 1);
		dmpg_clear(pr);
		any += pending[i];
		if (pending[i] == 0 || dmload.force)
			continue;
		char *count_sql = dm_xasprintf("SELECT pg_catalog.count(*) FROM %s", tgs[i].t.qualified);
		pr = dmpg_exec(conn, count_sql);
		free(count_sql);
		if (pr == NULL)
			goto out;
		uint64_t total = dmload_u64(pr, 0, 0);
		dmpg_clear(pr);
		if (weighed * 100 > total * dmload.max_delete_pct) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_err("refusing to delete %llu of %llu rows (more than %llu%%): check the source, or rerun with --force",
			    (unsigned long long)weighed, (unsigned long long)total, (unsigned long long)dmload.max_delete_pct);
			dm_subject = saved;
			goto out;
		}
	}
	/* nothing parked: no statement on the tables, so not even a lock on them */
	if (any == 0) {
		rc = 0;
		goto out;
	}
	for (int i = 0; i < ntg; i++) {
		if (tgs[i].mapped || tgs[i].reader_open)
			continue;
		/* --apply-deletes has no stream to say how the parked keys find their rows */
		const char *p[1] = { tgs[i].entity };
		PGresult *pr = dmpg_exec_params(conn, "SELECT COALESCE(pg_catalog.bool_or(via_ledger), false)"
		    " FROM dm.pending_delete WHERE entity = $1", 1, p);
		if (pr == NULL)
			goto out;
		if (dmpg_value(pr, 0, 0)[0] == 't')
			dmload_use_ledger_join(conn, &tgs[i]);
		dmpg_clear(pr);
	}
	if (only_ready) {
		int r = fk_drop(conn, tgs, ntg, pending, fks);
		if (r < 0) {
			rc = r;
			goto out;
		}
	}
	dm_buf_puts(&sql, "WITH ");
	for (int i = 0; i < ntg; i++) {
		/* (a mapped target's ledger rows are its entity's, whatever its checkpoint is called) */
		dm_buf_printf(&sql, "%sd%d AS (DELETE FROM %s AS t USING dm.pending_delete p%s"
		    " WHERE p.entity = $%d AND (CASE WHEN %s THEN p.ready ELSE p.run_id = $%d END)%s",
		    i ? ", " : "", i, tgs[i].t.qualified, tgs[i].mapped ? ", dm.ledger l" : "",
		    3 * i + 1, only_ready ? "true" : "false", 3 * i + 2, tgs[i].key_join);
		if (tgs[i].mapped)
			dm_buf_printf(&sql, " AND l.entity = $%d RETURNING 1)", 3 * i + 3);
		else
			dm_buf_printf(&sql, " AND $%d::pg_catalog.text IS NULL RETURNING 1)", 3 * i + 3);
		params[3 * i] = tgs[i].entity;
		params[3 * i + 1] = dmload.run_id;
		params[3 * i + 2] = tgs[i].mapped ? tgs[i].ledger_entity : NULL;
	}
	dm_buf_puts(&sql, " SELECT ");
	for (int i = 0; i < ntg; i++)
		dm_buf_printf(&sql, "%s(SELECT pg_catalog.count(*) FROM d%d)", i ? ", " : "", i);
	PGresult *res = dmpg_exec_params(conn, dm_buf_cstr(&sql), 3 * ntg, params);
	if (res == NULL)
		goto out;
	for (int i = 0; i < ntg; i++)
		tgs[i].del += dmload_u64(res, 0, i);
	dmpg_clear(res);
	if (fk_restore(conn, tgs, ntg, fks) < 0)
		goto out;
	for (int i = 0; i < ntg; i++) {
		const char *p[4] = { tgs[i].entity, dmload.run_id, only_ready ? "true" : "false", tgs[i].ledger_entity };
		if (tgs[i].mapped && dmpg_run_params(conn, "DELETE FROM dm.ledger l USING dm.pending_delete p"
		    " WHERE p.entity = $1 AND (CASE WHEN $3::pg_catalog.bool THEN p.ready ELSE p.run_id = $2 END) AND p.via_ledger"
		    " AND l.entity = $4 AND l.legacy_key = p.key", 4, p) < 0)
			goto out;
		if (dmpg_run_params(conn, "DELETE FROM dm.pending_delete WHERE entity = $1"
		    " AND (CASE WHEN $3::pg_catalog.bool THEN ready ELSE run_id = $2 END)", 3, p) < 0)
			goto out;
	}
	rc = 0;
out:
	for (int i = 0; i < ntg; i++)
		dmpg_clear(fks[i]);
	dm_buf_free(&sql);
	return rc;
}
