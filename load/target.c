/*
 * dm-load: a target's SQL, built once from its stream header and the
 * destination's catalog, and the switch of its triggers.
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "mapping.h"

#include <stdlib.h>
#include <string.h>

/*
 * The table's enabled user triggers (an updated_at trigger, say) would
 * rewrite the rows being copied. Only those are switched off, inside each
 * transaction: a crash rolls the switch back with everything else.
 */
static int
collect_triggers(PGconn *conn, target *tg)
{
	const char *p[1] = { tg->t.qualified };
	PGresult *res = dmpg_exec_params(conn,
	    "SELECT tgname, tgenabled FROM pg_catalog.pg_trigger WHERE tgrelid = $1::pg_catalog.regclass"
	    " AND NOT tgisinternal AND tgenabled <> 'D' ORDER BY tgname", 1, p);
	dm_buf off = { 0 }, on = { 0 };

	if (res == NULL)
		return -1;
	for (int i = 0; i < dmpg_nrows(res); i++) {
		char *q = dmpg_ident(conn, dmpg_value(res, i, 0));
		dm_buf_printf(&off, "%sDISABLE TRIGGER %s", i ? ", " : "", q);
		/* put each back in its own mode: 'O' origin, 'A' always, 'R' replica */
		char mode = dmpg_value(res, i, 1)[0];
		dm_buf_printf(&on, "%sENABLE %sTRIGGER %s", i ? ", " : "",
		    mode == 'A' ? "ALWAYS " : mode == 'R' ? "REPLICA " : "", q);
		free(q);
	}
	if (dmpg_nrows(res) > 0) {
		tg->triggers_off = dm_xasprintf("ALTER TABLE %s %s", tg->t.qualified, dm_buf_cstr(&off));
		tg->triggers_on = dm_xasprintf("ALTER TABLE %s %s", tg->t.qualified, dm_buf_cstr(&on));
	}
	dmpg_clear(res);
	dm_buf_free(&off);
	dm_buf_free(&on);
	return 0;
}

int
dmload_triggers_switch(PGconn *conn, target *tgs, int ntg, int off)
{
	/*
	 * ALTER TABLE refuses while deferred foreign-key checks are pending: run
	 * them now, as the commit would have.
	 */
	int any = 0;
	for (int i = 0; i < ntg; i++)
		any |= tgs[i].triggers_on != NULL;
	if (!off && any && dmpg_run(conn, "SET CONSTRAINTS ALL IMMEDIATE") < 0)
		return -1;
	for (int i = 0; i < ntg; i++) {
		const char *sql = off ? tgs[i].triggers_off : tgs[i].triggers_on;
		if (sql != NULL && dmpg_run(conn, sql) < 0) {
			dm_err("cannot switch the table's triggers %s (the role must own the table; or load without --disable-triggers)",
			    off ? "off" : "back on");
			return -1;
		}
	}
	return 0;
}

/* Deletes of a spec entity find their rows through the ledger: the legacy key is no column here. */
void
dmload_use_ledger_join(PGconn *conn, target *tg)
{
	char *pk = dmpg_ident(conn, tg->t.cols[tg->t.key[0]].name);

	tg->mapped = 1;
	free(tg->key_join);
	tg->key_join = dm_xasprintf(" AND p.via_ledger AND l.legacy_key = p.key"
	    " AND t.%s = (l.dest_key)::%s", pk, tg->t.cols[tg->t.key[0]].type);
	free(pk);
}

/* Builds the SQL of one target once its stream header and catalog are known. */
int
dmload_target_prepare(PGconn *conn, target *tg, int idx, int need_stream)
{
	dm_buf cols = { 0 }, sel = { 0 }, set = { 0 }, lhs = { 0 }, rhs = { 0 }, keys = { 0 }, kjoin = { 0 }, karr = { 0 };
	const dms_header *h = need_stream ? &tg->r.hdr : NULL;
	int rc = -1, overriding = 0;
	size_t ncols = h ? h->ncols : tg->t.nkey;
	int *map = dm_xcalloc(ncols ? ncols : 1, sizeof *map);

	if (h != NULL) {
		if (!dm_same_table(h->table, tg->table_arg)) {
			dm_err("%s: stream is for table %s, not %s: refusing to load it here",
			    tg->r.name, h->table, tg->table_arg);
			rc = -2;
			goto out;
		}
		if (h->kind == DMS_HASHES) {
			dm_err("%s: a hashes stream carries no rows to load (use dm-diff first)", tg->r.name);
			rc = -2;
			goto out;
		}
		/* A spec entity's stream is keyed by its legacy key, which is not a column here. */
		tg->mapped = h->nkey > 0;
		for (size_t k = 0; k < h->nkey; k++)
			if (strncmp(h->cols[h->key[k]].name, DMMAP_LEGACY_PREFIX, strlen(DMMAP_LEGACY_PREFIX)) != 0)
				tg->mapped = 0;
		if (tg->is_bin == NULL)
			tg->is_bin = dm_xcalloc(h->ncols + 1, sizeof *tg->is_bin);
		for (size_t i = 0; i < h->ncols; i++) {
			if (tg->mapped && strncmp(h->cols[i].name, DMMAP_LEGACY_PREFIX, strlen(DMMAP_LEGACY_PREFIX)) == 0) {
				map[i] = -1;
				continue;
			}
			map[i] = dmpg_table_column(&tg->t, h->cols[i].name);
			if (map[i] < 0 || tg->t.cols[map[i]].generated) {
				dm_err("column mismatch: destination %s has no %scolumn \"%s\" for the stream's column",
				    tg->t.qualified, map[i] < 0 ? "" : "writable ", h->cols[i].name);
				goto out;
			}
			if (tg->t.cols[map[i]].identity_always)
				overriding = 1;
			/* the spool line starts with the op: column i is field i + 1 */
			tg->is_bin[i + 1] = tg->t.cols[map[i]].is_bytea;
		}
		if (tg->mapped) {
			for (size_t k = 0; k < tg->t.nkey; k++) {
				int found = 0;
				for (size_t i = 0; i < h->ncols; i++)
					found |= map[i] == (int)tg->t.key[k];
				if (!found) {
					dm_err("key mismatch: the stream does not fill the destination's primary key \"%s\"",
					    tg->t.cols[tg->t.key[k]].name);
					goto out;
				}
			}
			if (tg->t.nkey != 1) {
				dm_err("a spec entity's destination needs a single-column primary key");
				goto out;
			}
		} else if (h->nkey != tg->t.nkey) {
			dm_err("key mismatch: the stream's key has %zu columns, the destination's primary key %zu",
			    h->nkey, tg->t.nkey);
			goto out;
		}
		for (size_t k = 0; k < h->nkey && !tg->mapped; k++)
			if ((size_t)map[h->key[k]] != tg->t.key[k]) {
				dm_err("key mismatch: key column %zu is \"%s\" in the stream, \"%s\" in the destination",
				    k + 1, h->cols[h->key[k]].name, tg->t.cols[tg->t.key[k]].name);
				goto out;
			}
	} else {
		for (size_t k = 0; k < tg->t.nkey; k++)
			map[k] = (int)tg->t.key[k];
	}

	tg->stage = dm_xasprintf("pg_temp.dm_stage_%d", idx);
	dm_buf stagecols = { 0 }, copycols = { 0 }, larr = { 0 };
	for (size_t i = 0; i < ncols; i++) {
		if (map[i] < 0) {
			char *v = dmpg_ident(conn, h->cols[i].name);
			dm_buf_printf(&stagecols, ", NULL::pg_catalog.text AS %s", v);
			dm_buf_printf(&copycols, ", %s", v);
			dm_buf_printf(&larr, "%s%s", larr.len ? ", " : "", v);
			free(v);
			continue;
		}
		char *q = dmpg_ident(conn, tg->t.cols[map[i]].name);
		dm_buf_printf(&stagecols, ", t.%s", q);
		dm_buf_printf(&copycols, ", %s", q);
		dm_buf_printf(&cols, "%s%s", cols.len ? ", " : "", q);
		int is_key = 0;
		for (size_t k = 0; k < tg->t.nkey; k++)
			if (tg->t.key[k] == (size_t)map[i])
				is_key = 1;
		if (!is_key) {
			dm_buf_printf(&set, "%s%s = EXCLUDED.%s", set.len ? ", " : "", q, q);
			dm_buf_printf(&lhs, "%st.%s::pg_catalog.text", lhs.len ? ", " : "", q);
			dm_buf_printf(&rhs, "%sEXCLUDED.%s::pg_catalog.text", rhs.len ? ", " : "", q);
		}
		free(q);
	}
	for (size_t k = 0; k < tg->t.nkey; k++) {
		const dmpg_column *c = &tg->t.cols[tg->t.key[k]];
		char *q = dmpg_ident(conn, c->name);
		dm_buf_printf(&keys, "%s%s", k ? ", " : "", q);
		dm_buf_printf(&kjoin, " AND t.%s = p.key[%zu]::%s", q, k + 1, c->type);
		dm_buf_printf(&karr, "%s%s::pg_catalog.text", k ? ", " : "", q);
		free(q);
	}
	tg->create_stage_sql = dm_xasprintf(
	    "CREATE TEMPORARY TABLE %s ON COMMIT DROP AS SELECT NULL::pg_catalog.int2 AS \"dm.op\"%s FROM %s%s t WITH NO DATA",
	    tg->stage, dm_buf_cstr(&stagecols), tg->t.relkind == 'r' ? "ONLY " : "", tg->t.qualified);
	tg->copy_sql = dm_xasprintf("COPY %s (\"dm.op\"%s) FROM STDIN", tg->stage, dm_buf_cstr(&copycols));
	tg->direct_copy_sql = dm_xasprintf("COPY %s (%s) FROM STDIN", tg->t.qualified, dm_buf_cstr(&cols));
	if (tg->mapped) {
		char *pk = dmpg_ident(conn, tg->t.cols[tg->t.key[0]].name);
		/* the pair (legacy key, destination key), for deletes, the destination side, and people */
		tg->ledger_sql = dm_xasprintf(
		    "INSERT INTO dm.ledger (entity, legacy_key, dest_key) SELECT $1, ARRAY[%s], (%s)::pg_catalog.text"
		    " FROM %s WHERE \"dm.op\" <> 2 ON CONFLICT (entity, legacy_key) DO UPDATE SET dest_key = EXCLUDED.dest_key"
		    " WHERE dm.ledger.dest_key <> EXCLUDED.dest_key", dm_buf_cstr(&larr), pk, tg->stage);
		karr.len = 0;
		dm_buf_puts(&karr, dm_buf_cstr(&larr));
		free(pk);
	}
	dm_buf_free(&stagecols);
	dm_buf_free(&copycols);
	dm_buf_free(&larr);
	if (set.len)
		dm_buf_printf(&sel, "DO UPDATE SET %s WHERE (%s, NULL) IS DISTINCT FROM (%s, NULL)",
		    dm_buf_cstr(&set), dm_buf_cstr(&lhs), dm_buf_cstr(&rhs));
	else
		dm_buf_puts(&sel, "DO NOTHING");
	tg->upsert_sql = dm_xasprintf(
	    "INSERT INTO %s AS t (%s)%s SELECT %s FROM %s WHERE \"dm.op\" <> 2"
	    " ON CONFLICT (%s) %s RETURNING (t.xmax = 0) AS inserted",
	    tg->t.qualified, dm_buf_cstr(&cols), overriding ? " OVERRIDING SYSTEM VALUE" : "",
	    dm_buf_cstr(&cols), tg->stage, dm_buf_cstr(&keys), dm_buf_cstr(&sel));
	tg->pending_sql = dm_xasprintf(
	    "INSERT INTO dm.pending_delete (entity, run_id, key, via_ledger) SELECT $1, $2, ARRAY[%s], %s FROM %s WHERE \"dm.op\" = 2",
	    dm_buf_cstr(&karr), tg->mapped ? "true" : "false", tg->stage);
	tg->key_join = dm_xstrdup(dm_buf_cstr(&kjoin));
	if (tg->mapped)
		dmload_use_ledger_join(conn, tg);
	if (dmload.disable_triggers && collect_triggers(conn, tg) < 0)
		goto out;
	tg->drop_stage_sql = dm_xasprintf("DROP TABLE %s", tg->stage);
	rc = 0;
out:
	free(map);
	dm_buf_free(&cols);
	dm_buf_free(&sel);
	dm_buf_free(&set);
	dm_buf_free(&lhs);
	dm_buf_free(&rhs);
	dm_buf_free(&keys);
	dm_buf_free(&kjoin);
	dm_buf_free(&karr);
	return rc;
}

void
dmload_target_free(target *tg)
{
	if (tg->reader_open)
		dms_reader_free(&tg->r);
	if (tg->fp != NULL && tg->fp != stdin)
		fclose(tg->fp);
	dmpg_table_free(&tg->t);
	free(tg->entity);
	free(tg->ledger_entity);
	free(tg->stage);
	free(tg->create_stage_sql);
	free(tg->copy_sql);
	free(tg->upsert_sql);
	free(tg->pending_sql);
	free(tg->key_join);
	free(tg->drop_stage_sql);
	dm_buf_free(&tg->copybuf);
	dm_buf_free(&tg->lastkey);
	if (tg->spool != NULL)
		fclose(tg->spool);
	free(tg->triggers_off);
	free(tg->triggers_on);
	free(tg->ledger_sql);
	free(tg->direct_copy_sql);
	free(tg->is_bin);
	dmpg_clear(tg->bulk_fk);
	dmpg_clear(tg->bulk_key);
	dmpg_clear(tg->bulk_idx);
	free(tg->bulk_fk_late);
}
