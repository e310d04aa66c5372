/*
 * dm-load: the bulk path for empty tables the role owns (one transaction
 * that drops secondary indexes and foreign keys, copies, and rebuilds them).
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

/* The bulk path's index builds get at least this much memory (kB): one sort each, in memory if it fits. */
#define BULK_MAINTENANCE_KB "262144"

/*
 * Decides, once and under this run's lease, how to load. An empty table (a
 * first load) needs no staging and no upsert: COPY goes straight in, about
 * twice as fast (tg->direct, for a single target only: a group always
 * stages unless it is bulk loaded). An empty plain table that the role owns
 * may also be bulk loaded (tg->bulk_ok; see dmload_load_bulk). A rerun after a
 * crash of the batched direct path finds rows and takes the upsert path.
 * 0, or -1 after printing why.
 */
int
dmload_use_direct(PGconn *conn, target *tgs, int ntg)
{
	int rc = -1;

	if (dmpg_begin(conn, "", NULL) < 0)
		return -1;
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		/* ownership through membership counts, as it does for ALTER TABLE */
		char *sql = dm_xasprintf("SELECT NOT EXISTS (SELECT 1 FROM %s%s),"
		    " (SELECT c.relkind = 'r' AND pg_catalog.pg_has_role(c.relowner, 'USAGE')"
		    "   FROM pg_catalog.pg_class c WHERE c.oid = $1::pg_catalog.regclass)",
		    tg->t.relkind == 'r' ? "ONLY " : "", tg->t.qualified);
		const char *p[1] = { tg->t.qualified };
		PGresult *res = dmpg_exec_params(conn, sql, 1, p);
		free(sql);
		if (res == NULL)
			goto out;
		int empty = dmpg_value(res, 0, 0)[0] == 't';
		tg->direct = ntg == 1 && empty;
		tg->bulk_ok = empty && dmpg_value(res, 0, 1)[0] == 't';
		dmpg_clear(res);
		const char *saved = dm_subject;
		dm_subject = tg->entity;
		if (tg->direct)
			dm_debug("empty destination table: loading with COPY straight into it");
		if (empty && !tg->bulk_ok)
			dm_debug("no bulk load: the table is %s", tg->t.relkind == 'r' ? "not the role's (it must own it)" :
			    "partitioned");
		dm_subject = saved;
	}
	rc = 0;
out:
	if (rc == 0 && dmpg_commit(conn) < 0)
		rc = -1;
	if (rc < 0)
		dmpg_rollback(conn);
	return rc;
}

/*
 * An index (alias c, its pg_class row; x, its pg_index row) that can be
 * built again exactly from pg_get_indexdef, and that nothing but the
 * foreign keys dropped with it depends on: valid, not clustered, not the
 * replica identity, not a partition of a partitioned index, without column
 * statistics targets or comment, in a schema (CREATE INDEX checks it) and a
 * tablespace the role may create in.
 */
#define BULK_INDEX_REBUILDABLE \
	"x.indisvalid AND x.indisready AND x.indislive AND NOT x.indisclustered AND NOT x.indisreplident" \
	" AND pg_catalog.has_schema_privilege(c.relnamespace, 'CREATE')" \
	" AND NOT c.relispartition AND pg_catalog.obj_description(c.oid, 'pg_class') IS NULL" \
	" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attstattarget >= 0)" \
	" AND (c.reltablespace = 0 OR pg_catalog.has_tablespace_privilege(c.reltablespace, 'CREATE'))" \
	" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass" \
	"   AND d.refobjid = c.oid AND d.deptype = 'n' AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint f" \
	"     WHERE d.classid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND f.oid = d.objid" \
	"     AND f.conrelid = x.indrelid AND " DMLOAD_FK_DROPPABLE "))"

/*
 * The bulk path's first step, inside its transaction: locks the tables,
 * checks that they are still empty, and drops what makes a load into a
 * constrained table slow, keeping the definitions to put back:
 *  - the tables' own foreign keys (DMLOAD_FK_DROPPABLE), each checked row by
 *    row otherwise;
 *  - their primary key and unique constraints that no other table's foreign
 *    key uses (nor anything else), each an index maintained row by row
 *    otherwise; the others stay, as other tables' keys need them;
 *  - their secondary indexes that no constraint uses.
 * Indexes are kept when they could not be built again exactly
 * (BULK_INDEX_REBUILDABLE); exclusion and CHECK constraints always stay.
 * For a superuser, the foreign keys to other tables only have their check
 * triggers switched off here (tg->bulk_fk_late): bulk_rebuild drops them.
 * Then it truncates the tables it can, so that COPY may freeze their rows
 * (tg->freeze).
 * Returns 1 when done; 0 when the bulk path does not apply: a table got rows
 * meanwhile, there is nothing to drop, a key between a group's tables must
 * stay, or a statement was refused (a lock not granted in time, say); then
 * everything is rolled back, quietly, for the batched path to run. -1 only
 * for a lost lease (message printed).
 */
static int
bulk_prepare(PGconn *conn, target *tgs, int ntg)
{
	int rc = 0, ndrop = 0, superuser = 0;
	const char *why = NULL;	/* NULL: the statement that failed says why */
	char oids[MAX_TARGETS][16];

	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, dmload.lease_owner, dmload.lease_seconds) < 0)
			return -1;
	dmpg_quiet_errors(1);
	for (int i = 0; i < ntg; i++) {
		char *sql = dm_xasprintf("LOCK TABLE ONLY %s IN ACCESS EXCLUSIVE MODE", tgs[i].t.qualified);
		int r = dmpg_run(conn, sql);
		free(sql);
		if (r < 0)
			goto out;
	}
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		const char *p[1] = { tg->t.qualified };
		char *sql = dm_xasprintf("SELECT EXISTS (SELECT 1 FROM ONLY %s), $1::pg_catalog.regclass::pg_catalog.oid::pg_catalog.text,"
		    " pg_catalog.current_setting('is_superuser')", tg->t.qualified);
		PGresult *res = dmpg_exec_params(conn, sql, 1, p);
		free(sql);
		if (res == NULL)
			goto out;
		int rows = dmpg_value(res, 0, 0)[0] == 't';
		snprintf(oids[i], sizeof oids[i], "%s", dmpg_value(res, 0, 1));
		superuser = strcmp(dmpg_value(res, 0, 2), "on") == 0;
		dmpg_clear(res);
		if (rows) {
			/* written by something other than dm-load since dmload_use_direct: upsert it */
			why = "the table got rows meanwhile";
			tg->direct = 0;
			goto out;
		}
		/* by referenced table, so that concurrent loads lock shared parents in one order */
		tg->bulk_fk = dmpg_exec_params(conn,
		    "SELECT f.conname, pg_catalog.pg_get_constraintdef(f.oid), f.oid::pg_catalog.text,"
		    " f.confrelid::pg_catalog.text FROM pg_catalog.pg_constraint f"
		    " WHERE f.conrelid = $1::pg_catalog.regclass AND " DMLOAD_FK_DROPPABLE
		    " ORDER BY f.confrelid, f.conname", 1, p);
		/* ADD CONSTRAINT ... USING INDEX over the very index pg_get_indexdef describes */
		tg->bulk_key = dmpg_exec_params(conn,
		    "SELECT k.conname, pg_catalog.pg_get_indexdef(c.oid), COALESCE(ts.spcname, ''),"
		    " CASE k.contype WHEN 'p' THEN 'PRIMARY KEY' ELSE 'UNIQUE' END,"
		    " CASE WHEN k.condeferrable THEN ' DEFERRABLE' ELSE '' END"
		    "  || CASE WHEN k.condeferred THEN ' INITIALLY DEFERRED' ELSE '' END"
		    " FROM pg_catalog.pg_constraint k JOIN pg_catalog.pg_class c ON c.oid = k.conindid"
		    " JOIN pg_catalog.pg_index x ON x.indexrelid = c.oid"
		    " LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace"
		    " WHERE k.conrelid = $1::pg_catalog.regclass AND k.contype IN ('p', 'u') AND k.conparentid = 0"
		    " AND pg_catalog.obj_description(k.oid, 'pg_constraint') IS NULL"
		    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d"
		    "   WHERE d.refclassid = 'pg_catalog.pg_constraint'::pg_catalog.regclass AND d.refobjid = k.oid"
		    "   AND d.deptype = 'n')"
		    " AND " BULK_INDEX_REBUILDABLE
		    " ORDER BY k.conname", 1, p);
		tg->bulk_idx = dmpg_exec_params(conn,
		    "SELECT c.relname, pg_catalog.pg_get_indexdef(c.oid), COALESCE(ts.spcname, '')"
		    " FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class c ON c.oid = x.indexrelid"
		    " LEFT JOIN pg_catalog.pg_tablespace ts ON ts.oid = c.reltablespace"
		    " WHERE x.indrelid = $1::pg_catalog.regclass"
		    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conindid = c.oid AND k.contype <> 'f')"
		    " AND " BULK_INDEX_REBUILDABLE
		    " ORDER BY c.relname", 1, p);
		if (tg->bulk_fk == NULL || tg->bulk_key == NULL || tg->bulk_idx == NULL)
			goto out;
		/*
		 * A primary key alone is no reason: its (mostly ascending) keys cost
		 * little to insert one by one, and loading in batches keeps the load
		 * resumable and its progress visible.
		 */
		ndrop += dmpg_nrows(tg->bulk_fk) + dmpg_nrows(tg->bulk_idx);
		for (int j = 0; j < dmpg_nrows(tg->bulk_key); j++)
			ndrop += strcmp(dmpg_value(tg->bulk_key, j, 3), "UNIQUE") == 0;
	}
	if (ndrop == 0) {
		/* the batched direct path is about as fast then, and resumable */
		why = "no foreign key, unique constraint or secondary index to drop";
		goto out;
	}
	/*
	 * Dropping a foreign key locks the table it references ACCESS EXCLUSIVE
	 * until the commit: other loads of tables that reference it too (its
	 * other children, with dm-migrate -j) wait for this whole load. A
	 * superuser may instead switch off the key's check triggers on this
	 * table for the COPY (they lock nothing else) and drop it only at the
	 * end, before adding it back, which holds that lock only while the key is
	 * checked. Keys to the group's own tables (or this one) go at once:
	 * those tables are locked anyway.
	 */
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		tg->bulk_fk_late = dm_xcalloc((size_t)dmpg_nrows(tg->bulk_fk) + 1, 1);
		for (int j = 0; j < dmpg_nrows(tg->bulk_fk) && superuser; j++) {
			int own = 0;
			for (int k = 0; k < ntg; k++)
				own |= strcmp(dmpg_value(tg->bulk_fk, j, 3), oids[k]) == 0;
			tg->bulk_fk_late[j] = !own;
		}
	}
	/* the foreign keys first: a key constraint they use cannot go before them */
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		char *schema = dmpg_ident(conn, tg->t.schema);
		int nfk = dmpg_nrows(tg->bulk_fk), nkey = dmpg_nrows(tg->bulk_key);
		for (int j = 0; j < nfk + nkey + dmpg_nrows(tg->bulk_idx); j++) {
			PGresult *res = j < nfk ? tg->bulk_fk : j < nfk + nkey ? tg->bulk_key : tg->bulk_idx;
			int row = j < nfk ? j : j < nfk + nkey ? j - nfk : j - nfk - nkey;
			char *sql = NULL;
			if (j < nfk && tg->bulk_fk_late[j]) {
				const char *p[2] = { dmpg_value(res, row, 2), tg->t.qualified };
				PGresult *trg = dmpg_exec_params(conn, "SELECT tgname FROM pg_catalog.pg_trigger"
				    " WHERE tgconstraint = $1::pg_catalog.oid AND tgrelid = $2::pg_catalog.regclass ORDER BY 1", 2, p);
				if (trg == NULL) {
					free(schema);
					goto out;
				}
				dm_buf off = { 0 };
				for (int t = 0; t < dmpg_nrows(trg); t++) {
					char *q = dmpg_ident(conn, dmpg_value(trg, t, 0));
					dm_buf_printf(&off, "%sDISABLE TRIGGER %s", t ? ", " : "", q);
					free(q);
				}
				if (dmpg_nrows(trg) > 0)
					sql = dm_xasprintf("ALTER TABLE %s %s", tg->t.qualified, dm_buf_cstr(&off));
				dmpg_clear(trg);
				dm_buf_free(&off);
			} else {
				char *name = dmpg_ident(conn, dmpg_value(res, row, 0));
				sql = res == tg->bulk_idx ? dm_xasprintf("DROP INDEX %s.%s", schema, name) :
				    dm_xasprintf("ALTER TABLE %s DROP CONSTRAINT %s", tg->t.qualified, name);
				free(name);
			}
			int r = sql ? dmpg_run(conn, sql) : 0;
			free(sql);
			if (r < 0) {
				free(schema);
				goto out;
			}
		}
		free(schema);
	}
	/*
	 * A group's tables are copied one after the other: a foreign key kept
	 * between two of them (NOT VALID, say) would check each row against a
	 * table not loaded yet, unless it waits for the commit.
	 */
	for (int i = 0; i < ntg; i++)
		for (int j = 0; j < ntg; j++) {
			if (i == j)
				continue;
			const char *p[2] = { tgs[i].t.qualified, tgs[j].t.qualified };
			PGresult *res = dmpg_exec_params(conn,
			    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.conrelid = $1::pg_catalog.regclass"
			    " AND k.confrelid = $2::pg_catalog.regclass AND k.contype = 'f' AND NOT k.condeferred)", 2, p);
			if (res == NULL)
				goto out;
			int kept = dmpg_value(res, 0, 0)[0] == 't';
			dmpg_clear(res);
			if (kept) {
				why = "a foreign key between the group's tables must stay";
				goto out;
			}
		}
	/*
	 * Emptied again in this transaction, a table gets new files: COPY may
	 * then write its rows already frozen and visible (no hint bits for the
	 * first reader to set, nothing for a vacuum to freeze later), and with
	 * wal_level minimal the server writes them, and the indexes built over
	 * them, without WAL. Not when another table's foreign key points at it
	 * (TRUNCATE refuses), nor when TRUNCATE would fire a trigger or reach
	 * the subscribers of a publication.
	 */
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		const char *p[3] = { tg->t.qualified, tg->t.schema, tg->t.name };
		PGresult *res = dmpg_exec_params(conn,
		    "SELECT pg_catalog.has_table_privilege($1::pg_catalog.regclass, 'TRUNCATE')"
		    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint k WHERE k.confrelid = $1::pg_catalog.regclass"
		    "   AND k.conrelid <> k.confrelid AND k.contype = 'f')"
		    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgrelid = $1::pg_catalog.regclass"
		    "   AND NOT t.tgisinternal AND (t.tgtype & 32) <> 0)"
		    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables pt WHERE pt.schemaname = $2"
		    "   AND pt.tablename = $3)", 3, p);
		if (res == NULL)
			goto out;
		tg->freeze = dmpg_value(res, 0, 0)[0] == 't';
		dmpg_clear(res);
		char *sql = dm_xasprintf("TRUNCATE ONLY %s", tg->t.qualified);
		int r = tg->freeze ? dmpg_run(conn, sql) : 0;
		free(sql);
		if (r < 0)
			goto out;
	}
	rc = 1;
out:
	dmpg_quiet_errors(0);
	if (rc == 0) {
		dm_debug("no bulk load (%s): loading %s", why ? why : dmpg_last_error(),
		    ntg == 1 ? "in batches" : "the group through staging");
		dmpg_rollback(conn);
		dmpg_forget_error();
		dmload.in_txn = 0;
		for (int i = 0; i < ntg; i++) {
			dmpg_clear(tgs[i].bulk_fk);
			dmpg_clear(tgs[i].bulk_key);
			dmpg_clear(tgs[i].bulk_idx);
			tgs[i].bulk_fk = tgs[i].bulk_key = tgs[i].bulk_idx = NULL;
			free(tgs[i].bulk_fk_late);
			tgs[i].bulk_fk_late = NULL;
			tgs[i].freeze = 0;
		}
	}
	return rc;
}

/*
 * Builds one dropped index again, from row `row` of res (name, CREATE
 * INDEX, tablespace), in its tablespace (CREATE INDEX puts it in
 * default_tablespace; '': the database's). 0, or -1 after naming it.
 */
static int
bulk_build_index(PGconn *conn, PGresult *res, int row)
{
	const char *p[1] = { dmpg_value(res, row, 2) };

	if (dmpg_run_params(conn, "SELECT pg_catalog.set_config('default_tablespace', $1, true)", 1, p) < 0)
		return -1;
	dmpg_quiet_errors(1);
	int r = dmpg_run(conn, dmpg_value(res, row, 1));
	dmpg_quiet_errors(0);
	if (r < 0)
		dm_err("cannot build index %s again over the loaded rows; nothing was loaded, the table is left empty"
		    " with its indexes and constraints: %s", dmpg_value(res, row, 0), dmpg_last_error());
	return r;
}

/*
 * Adds foreign key `name` to table (quoted, qualified) from its
 * pg_get_constraintdef text `def`: actions, match type, deferrability as
 * they were, all the rows checked by one query. With drop_first the key of
 * that name (its checks switched off) is dropped in the same statement.
 * Quiet: 0, or -1 with the server's error in dmpg_last_error for the caller
 * to report.
 */
int
dmload_fk_add(PGconn *conn, const char *table, const char *name, const char *def, int drop_first)
{
	char *q = dmpg_ident(conn, name);
	char *sql = dm_xasprintf("ALTER TABLE %s %s%s%sADD CONSTRAINT %s %s", table,
	    drop_first ? "DROP CONSTRAINT " : "", drop_first ? q : "", drop_first ? ", " : "", q, def);

	dmpg_quiet_errors(1);
	int r = dmpg_run(conn, sql);
	dmpg_quiet_errors(0);
	free(sql);
	free(q);
	return r;
}

/*
 * The bulk path's last step, before the checkpoint: puts back what
 * bulk_prepare dropped, each over all the loaded rows at once, with more
 * maintenance_work_mem for the sorts: the key constraints (their unique
 * index built as it was, then ADD CONSTRAINT ... USING INDEX with their
 * deferrability), the secondary indexes, then the foreign keys with their
 * own definitions (actions, match type, deferrability), each checked by one
 * query; one only switched off is dropped in the same statement. Deferred checks still pending are run first: ALTER TABLE refuses
 * a table with pending trigger events. 0, or -1 after naming the index or
 * constraint that failed.
 */
static int
bulk_rebuild(PGconn *conn, target *tgs, int ntg)
{
	const char *saved = dm_subject;
	int rc = -1;

	if (dmpg_run(conn, "SET CONSTRAINTS ALL IMMEDIATE") < 0 ||
	    dmpg_run(conn, "SELECT pg_catalog.set_config('maintenance_work_mem',"
	    " GREATEST(s.setting::pg_catalog.int8, " BULK_MAINTENANCE_KB ")::pg_catalog.text, true)"
	    " FROM pg_catalog.pg_settings s WHERE s.name = 'maintenance_work_mem'") < 0)
		goto out;
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		dm_subject = tg->entity;
		for (int j = 0; j < dmpg_nrows(tg->bulk_key); j++) {
			if (bulk_build_index(conn, tg->bulk_key, j) < 0)
				goto out;
			char *name = dmpg_ident(conn, dmpg_value(tg->bulk_key, j, 0));
			char *sql = dm_xasprintf("ALTER TABLE %s ADD CONSTRAINT %s %s USING INDEX %s%s", tg->t.qualified,
			    name, dmpg_value(tg->bulk_key, j, 3), name, dmpg_value(tg->bulk_key, j, 4));
			int r = dmpg_run(conn, sql);
			free(sql);
			free(name);
			if (r < 0)
				goto out;
		}
		for (int j = 0; j < dmpg_nrows(tg->bulk_idx); j++)
			if (bulk_build_index(conn, tg->bulk_idx, j) < 0)
				goto out;
	}
	/* every table's keys first: a group's foreign keys may point at them */
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		dm_subject = tg->entity;
		for (int j = 0; j < dmpg_nrows(tg->bulk_fk); j++) {
			/* one that was only switched off goes now, its checks disabled, and comes back checked */
			if (dmload_fk_add(conn, tg->t.qualified, dmpg_value(tg->bulk_fk, j, 0), dmpg_value(tg->bulk_fk, j, 1),
			    tg->bulk_fk_late[j]) < 0) {
				dm_err("the loaded rows break foreign key %s; nothing was loaded, the table is left empty"
				    " with its indexes and constraints: %s", dmpg_value(tg->bulk_fk, j, 0), dmpg_last_error());
				goto out;
			}
		}
		dm_debug("bulk load: rebuilt %d key(s), %d index(es) and %d foreign key(s)", dmpg_nrows(tg->bulk_key),
		    dmpg_nrows(tg->bulk_idx), dmpg_nrows(tg->bulk_fk));
	}
	rc = 0;
out:
	dm_subject = saved;
	return rc;
}

/*
 * The bulk path for empty tables (a first load), all of it ONE transaction:
 * bulk_prepare drops the secondary indexes and foreign keys, every stream is
 * copied straight into its table (its sync points verified by the reader as
 * ever; an invalid stream cancels the COPY and with it the transaction),
 * bulk_rebuild puts the indexes and keys back, checked over all the rows at
 * once, and the checkpoint, the deletes and dm.run are written as by the
 * other paths before the commit. A crash or an error at any point rolls back
 * to the empty table with every index and constraint as it was: the load is
 * all or nothing, and a rerun starts the table again. For a group (a
 * foreign-key cycle) the keys between its tables are checked only once all
 * of them are loaded, so no order is needed.
 * Sets *fallback, and does nothing, when bulk_prepare says the path does not
 * apply. Returns an exit status; on failure the caller rolls back.
 */
int
dmload_load_bulk(PGconn *conn, target *tgs, int ntg, int *fallback)
{
	*fallback = 0;
	if (dmload_begin(conn) < 0)
		return DM_EXIT_FAIL;
	int prep = bulk_prepare(conn, tgs, ntg);
	if (prep < 0)
		return DM_EXIT_LOCKED;
	if (prep == 0) {
		*fallback = 1;
		return DM_EXIT_OK;
	}
	if (dmload_triggers_switch(conn, tgs, ntg, 1) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		tgs[i].direct = 1;
		if (tgs[i].freeze) {
			char *sql = dm_xasprintf("%s (FREEZE)", tgs[i].direct_copy_sql);
			free(tgs[i].direct_copy_sql);
			tgs[i].direct_copy_sql = sql;
		}
		int got = dmload_stage_rows(conn, &tgs[i], 0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got != 0)
			return DM_EXIT_FAIL;
		tgs[i].ins += tgs[i].staged_rows;
	}
	if (bulk_rebuild(conn, tgs, ntg) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (dmload_record_progress(conn, &tgs[i], tgs[i].staged_rows) < 0)
			return DM_EXIT_FAIL;
	if (dmload_finish_stream(conn, tgs, ntg) < 0 || dmload_triggers_switch(conn, tgs, ntg, 0) < 0 || dmload_end(conn) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		const char *saved = dm_subject;
		dm_subject = tgs[i].entity;
		tgs[i].batches++;
		/* the line dm-migrate's progress display counts */
		dm_debug("batch %llu: %llu rows", (unsigned long long)tgs[i].batches, (unsigned long long)tgs[i].staged_rows);
		dm_subject = saved;
	}
	return DM_EXIT_OK;
}
