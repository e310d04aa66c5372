/*
 * dm-load: deletes, parked in dm.pending_delete by each batch and applied
 * in the transaction that saw the stream's trailer (or by --apply-deletes).
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"

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
 * Deletes the parked keys of all targets in one statement, then forgets them:
 * with only_ready (--apply-deletes) those marked ready by a stream that ended
 * with a verified trailer; otherwise only those this load parked itself.
 */
int
dmload_apply_deletes(PGconn *conn, target *tgs, int ntg, int only_ready)
{
	dm_buf sql = { 0 };
	const char *params[2 * MAX_TARGETS];
	int rc = -1;

	for (int i = 0; i < ntg && !dmload.force; i++) {
		const char *p[3] = { tgs[i].entity, dmload.run_id, only_ready ? "true" : "false" };
		PGresult *pr = dmpg_exec_params(conn, "SELECT pg_catalog.count(*) FROM dm.pending_delete"
		    " WHERE entity = $1 AND (CASE WHEN $3::pg_catalog.bool THEN ready ELSE run_id = $2 END)", 3, p);
		if (pr == NULL)
			goto out;
		uint64_t pending = dmload_u64(pr, 0, 0);
		dmpg_clear(pr);
		if (pending == 0)
			continue;
		char *count_sql = dm_xasprintf("SELECT pg_catalog.count(*) FROM %s", tgs[i].t.qualified);
		pr = dmpg_exec(conn, count_sql);
		free(count_sql);
		if (pr == NULL)
			goto out;
		uint64_t total = dmload_u64(pr, 0, 0);
		dmpg_clear(pr);
		if (pending * 100 > total * dmload.max_delete_pct) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_err("refusing to delete %llu of %llu rows (more than %llu%%): check the source, or rerun with --force",
			    (unsigned long long)pending, (unsigned long long)total, (unsigned long long)dmload.max_delete_pct);
			dm_subject = saved;
			goto out;
		}
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
	dm_buf_puts(&sql, "WITH ");
	for (int i = 0; i < ntg; i++) {
		dm_buf_printf(&sql, "%sd%d AS (DELETE FROM %s AS t USING dm.pending_delete p%s"
		    " WHERE p.entity = $%d AND (CASE WHEN %s THEN p.ready ELSE p.run_id = $%d END)%s RETURNING 1)",
		    i ? ", " : "", i, tgs[i].t.qualified, tgs[i].mapped ? ", dm.ledger l" : "",
		    2 * i + 1, only_ready ? "true" : "false", 2 * i + 2, tgs[i].key_join);
		params[2 * i] = tgs[i].entity;
		params[2 * i + 1] = dmload.run_id;
	}
	dm_buf_puts(&sql, " SELECT ");
	for (int i = 0; i < ntg; i++)
		dm_buf_printf(&sql, "%s(SELECT pg_catalog.count(*) FROM d%d)", i ? ", " : "", i);
	PGresult *res = dmpg_exec_params(conn, dm_buf_cstr(&sql), 2 * ntg, params);
	if (res == NULL)
		goto out;
	for (int i = 0; i < ntg; i++)
		tgs[i].del += dmload_u64(res, 0, i);
	dmpg_clear(res);
	for (int i = 0; i < ntg; i++) {
		const char *p[3] = { tgs[i].entity, dmload.run_id, only_ready ? "true" : "false" };
		if (tgs[i].mapped && dmpg_run_params(conn, "DELETE FROM dm.ledger l USING dm.pending_delete p"
		    " WHERE p.entity = $1 AND (CASE WHEN $3::pg_catalog.bool THEN p.ready ELSE p.run_id = $2 END) AND p.via_ledger"
		    " AND l.entity = p.entity AND l.legacy_key = p.key", 3, p) < 0)
			goto out;
		if (dmpg_run_params(conn, "DELETE FROM dm.pending_delete WHERE entity = $1"
		    " AND (CASE WHEN $3::pg_catalog.bool THEN ready ELSE run_id = $2 END)", 3, p) < 0)
			goto out;
	}
	rc = 0;
out:
	dm_buf_free(&sql);
	return rc;
}
