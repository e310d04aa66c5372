/*
 * dm-load - apply a dm stream to one destination table (or, for a foreign-key
 * cycle, to several at once).
 *
 * Each batch is one transaction: COPY into a temporary staging table, one
 * set-based upsert that skips rows already equal, deletes parked in
 * dm.pending_delete, and the checkpoint's progress. A crash leaves the table
 * at a batch boundary; rerunning the same command converges without
 * duplicates because every write is keyed. Deletes and the checkpoint's
 * watermark are applied only in the transaction that saw a verified trailer.
 * An empty table skips the staging (COPY straight in) and, when the role
 * owns it, is bulk loaded: one transaction that drops its secondary indexes
 * and foreign keys, copies, and rebuilds them (load_bulk).
 */
#define _POSIX_C_SOURCE 200809L
#include "copytext.h"
#include "mapping.h"
#include "pg.h"
#include "state.h"
#include "stream.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define MAX_TARGETS 16
#define COPY_CHUNK (256 * 1024)

static const char usage_text[] =
    "usage: dm-load (--db CONNINFO | --db-env VAR) --table SCHEMA.TABLE [--entity NAME]\n"
    "               [--batch-rows N] [--dry-run] [--defer-deletes] [--run-id ID] [-q] [-v] [FILE]\n"
    "       dm-load (--db CONNINFO | --db-env VAR) --table T1 --table T2 ... FILE1 FILE2 ...\n"
    "       dm-load (--db CONNINFO | --db-env VAR) --table T [--table T2 ...] --apply-deletes\n"
    "\n"
    "Applies a dm rows or changes stream (dm-stream(5)) to a destination table in\n"
    "batches; each batch is one transaction that also records the checkpoint. An\n"
    "empty table the role owns is bulk loaded in one transaction instead: its\n"
    "secondary indexes and foreign keys dropped, rebuilt and checked after the rows.\n"
    "\n"
    "  --db CONNINFO      libpq connection string or URI\n"
    "  --db-env VAR       read the connection string from environment variable VAR\n"
    "  --table T          destination table; the stream must be for the same table\n"
    "  --entity NAME      entity name for the checkpoint (default: the stream's);\n"
    "                     one per --table when there are several\n"
    "  --batch-rows N     rows per transaction (default 50000; 0: all in one)\n"
    "  --dry-run          compute the counts, roll everything back\n"
    "  --defer-deletes    park deletes in dm.pending_delete for --apply-deletes\n"
    "  --apply-deletes    apply parked deletes of the named tables, then exit\n"
    "  --run-id ID        run id recorded in dm.checkpoint and dm.run\n"
    "  --rejects FILE     rows the destination refuses go to FILE (a changes stream)\n"
    "                     and the rest still lands; exit 5 if any was refused\n"
    "  --max-rejects N    stop once more than N rows were refused\n"
    "  --max-delete-share PCT  refuse to delete more than PCT% of a table (default 10)\n"
    "  --force            delete however many rows the stream says\n"
    "  --wait SECONDS     wait up to that long for another run's lease on the entity\n"
    "                     (default 10; 0: exit 6 at once)\n"
    "  --disable-triggers switch the table's enabled user triggers off inside each\n"
    "                     transaction, so they do not rewrite copied rows (needs ownership)\n"
    "  --no-bulk          load an empty table in batches too (resumable), not in the\n"
    "                     one all-or-nothing transaction of a bulk load\n"
    "  -q, -v             quieter, more verbose\n"
    "  --help, --version\n";

static void
usage(void)
{
	fputs("usage: dm-load (--db CONNINFO | --db-env VAR) --table SCHEMA.TABLE [--dry-run] [FILE]\n", stderr);
	exit(DM_EXIT_USAGE);
}

typedef struct target {
	const char *table_arg;
	char *entity;
	const char *path;
	FILE *fp;
	dms_reader r;
	int reader_open;
	dmpg_table t;
	char *stage;		/* pg_temp."dm_stage_N" */
	char *create_stage_sql;
	char *copy_sql;
	char *upsert_sql;	/* INSERT ... RETURNING, for a CTE */
	char *pending_sql;	/* park this batch's deletes */
	char *key_join;		/* " AND t.k = p.key[1]::type ..." for deletes */
	char *drop_stage_sql;
	uint64_t ins, upd, del, same, staged_rows, batches;
	dm_buf copybuf;
	dm_buf lastkey;
	int mapped;		/* keyed by a legacy key (spec entity): the ledger finds its rows */
	int direct;		/* the table was empty: COPY straight into it, no staging, no upsert */
	char *direct_copy_sql;
	char *ledger_sql;
	char *triggers_off;	/* ALTER TABLE ... DISABLE TRIGGER for its enabled user triggers, or NULL */
	char *triggers_on;
	FILE *spool;		/* with --rejects: the batch's COPY text, to replay row by row */
	int *is_bin;		/* per stream column: bytea, to read the spool back */
	int leased;
	int bulk_ok;		/* empty, a plain table, and the role owns it: may be bulk loaded */
	int freeze;		/* the bulk load truncated it first: COPY ... (FREEZE) */
	PGresult *bulk_fk;	/* foreign keys the bulk load drops: name, definition, oid, referenced table's oid */
	char *bulk_fk_late;	/* per bulk_fk row: only its checks are off during the COPY; dropped at the end */
	PGresult *bulk_key;	/* key constraints it dropped: name, CREATE INDEX, tablespace, kind, deferrability */
	PGresult *bulk_idx;	/* secondary indexes it dropped: name, CREATE INDEX, tablespace */
} target;

static int dry_run, defer_deletes, force, disable_triggers, no_bulk;
/* The bulk path's index builds get at least this much memory (kB): one sort each, in memory if it fits. */
#define BULK_MAINTENANCE_KB "262144"
static uint64_t max_delete_pct = 10;
static int lease_seconds = 120;
static char lease_owner[128];
static const char *rejects_path;
static uint64_t max_rejects = UINT64_MAX;
static FILE *rejects_fp;
static dms_writer rejects_w;
static int rejects_open;
static uint64_t rejected;
/* Dry runs share one transaction across every step, so whether one is open is global. */
static int in_txn;
static const char *run_id;
static char started_at[64];

static void
now_text(char *buf, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%d %H:%M:%S+00", &tm);
}

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

static int
triggers_switch(PGconn *conn, target *tgs, int ntg, int off)
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
static void
use_ledger_join(PGconn *conn, target *tg)
{
	char *pk = dmpg_ident(conn, tg->t.cols[tg->t.key[0]].name);

	tg->mapped = 1;
	free(tg->key_join);
	tg->key_join = dm_xasprintf(" AND p.via_ledger AND l.entity = p.entity AND l.legacy_key = p.key"
	    " AND t.%s = (l.dest_key)::%s", pk, tg->t.cols[tg->t.key[0]].type);
	free(pk);
}

/* Builds the SQL of one target once its stream header and catalog are known. */
static int
target_prepare(PGconn *conn, target *tg, int idx, int need_stream)
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
		use_ledger_join(conn, tg);
	if (disable_triggers && collect_triggers(conn, tg) < 0)
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

static void
target_free(target *tg)
{
	if (tg->reader_open)
		dms_reader_free(&tg->r);
	if (tg->fp != NULL && tg->fp != stdin)
		fclose(tg->fp);
	dmpg_table_free(&tg->t);
	free(tg->entity);
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

static int
spool_write(target *tg)
{
	if (tg->spool == NULL)
		return 0;
	if (fwrite(tg->copybuf.data, 1, tg->copybuf.len, tg->spool) != tg->copybuf.len) {
		dm_err("cannot write the spool file: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/*
 * Streams up to max_rows rows (0: all) of the target's stream into its
 * staging table. Returns 1 when rows remain, 0 at the verified trailer,
 * -1 on a database error, -3 on an invalid stream (COPY cancelled), and
 * -2 (end reached) or -4 (rows remain) when the server refused the data.
 */
static int
stage_rows(PGconn *conn, target *tg, uint64_t max_rows)
{
	dm_value opval;
	char opch[2] = { 0, 0 };
	uint64_t n = 0;
	int got = 1;

	if (tg->direct) {
		if (dmpg_copy_in_start(conn, tg->direct_copy_sql) < 0)
			return -1;
	} else if (dmpg_run(conn, tg->create_stage_sql) < 0 || dmpg_copy_in_start(conn, tg->copy_sql) < 0) {
		return -1;
	}
	tg->copybuf.len = 0;
	tg->staged_rows = 0;
	if (rejects_path != NULL) {
		if (tg->spool == NULL && (tg->spool = tmpfile()) == NULL) {
			dm_err("cannot create a spool file for --rejects: %s", strerror(errno));
			return -1;
		}
		rewind(tg->spool);
		if (ftruncate(fileno(tg->spool), 0) < 0) {
			dm_err("cannot truncate the spool file: %s", strerror(errno));
			return -1;
		}
	}
	/*
	 * A batch ends at a verified sync point at or after max_rows rows, never
	 * in between: nothing is committed that the stream's checksum has not
	 * vouched for.
	 */
	for (;;) {
		got = dms_reader_next(&tg->r);
		if (got == 2) {
			if (max_rows != 0 && n >= max_rows) {
				got = 1;
				break;
			}
			continue;
		}
		if (got <= 0)
			break;
		int op = tg->r.op == DMS_OP_NONE ? DMS_OP_INSERT : tg->r.op;
		if (tg->direct) {
			/* an empty table: every row is new, and there is nothing to delete */
			if (op != DMS_OP_DELETE) {
				dmcopy_append_row(&tg->copybuf, tg->r.vals, tg->r.nvals);
				n++;
			}
			if (tg->copybuf.len >= COPY_CHUNK) {
				if (dmpg_copy_in_put(conn, tg->copybuf.data, tg->copybuf.len) < 0)
					return -1;
				tg->copybuf.len = 0;
			}
			continue;
		}
		opch[0] = (char)('0' + op);
		opval.kind = DM_TEXT;
		opval.ptr = opch;
		opval.len = 1;
		dmcopy_append_field(&tg->copybuf, &opval);
		if (op == DMS_OP_DELETE) {
			/* Deletes carry only the key; the other staged columns stay NULL. */
			const dms_header *h = &tg->r.hdr;
			for (size_t i = 0; i < h->ncols; i++) {
				dm_buf_putc(&tg->copybuf, '\t');
				size_t k;
				for (k = 0; k < h->nkey && h->key[k] != i; k++)
					;
				if (k < h->nkey)
					dmcopy_append_field(&tg->copybuf, &tg->r.keys[k]);
				else
					dm_buf_append(&tg->copybuf, "\\N", 2);
			}
			dm_buf_putc(&tg->copybuf, '\n');
		} else {
			dm_buf_putc(&tg->copybuf, '\t');
			dmcopy_append_row(&tg->copybuf, tg->r.vals, tg->r.nvals);
		}
		n++;
		if (tg->copybuf.len >= COPY_CHUNK) {
			if (spool_write(tg) < 0 || dmpg_copy_in_put(conn, tg->copybuf.data, tg->copybuf.len) < 0)
				return -1;
			tg->copybuf.len = 0;
		}
	}
	if (got < 0) {
		dmpg_copy_in_end(conn, "dm-load: invalid input stream");
		return -3;
	}
	if (tg->copybuf.len && (spool_write(tg) < 0 || dmpg_copy_in_put(conn, tg->copybuf.data, tg->copybuf.len) < 0))
		return -1;
	if (dmpg_copy_in_end(conn, NULL) < 0)
		got = got == 0 ? -2 : -4;	/* the data was refused: the caller may replay it row by row */
	tg->staged_rows = n;
	if (got <= -2)
		return got;
	if (n > 0) {
		tg->lastkey.len = 0;
		dms_key_text(&tg->lastkey, tg->r.keys, tg->r.hdr.nkey);
	}
	return got;
}

static uint64_t
get_u64(PGresult *res, int row, int col)
{
	uint64_t v = 0;

	if (dm_parse_u64(dmpg_value(res, row, col), &v) < 0)
		v = 0;
	return v;
}

/* Upserts the staged rows of all targets in one statement (one for a cycle group). */
static int
apply_upserts(PGconn *conn, target *tgs, int ntg)
{
	dm_buf sql = { 0 };
	int rc = -1;

	dm_buf_puts(&sql, "WITH ");
	for (int i = 0; i < ntg; i++)
		dm_buf_printf(&sql, "%su%d AS (%s)", i ? ", " : "", i, tgs[i].upsert_sql);
	dm_buf_puts(&sql, " SELECT ");
	for (int i = 0; i < ntg; i++)
		dm_buf_printf(&sql, "%s(SELECT pg_catalog.count(*) FILTER (WHERE inserted) FROM u%d),"
		    " (SELECT pg_catalog.count(*) FILTER (WHERE NOT inserted) FROM u%d)", i ? ", " : "", i, i);
	PGresult *res = dmpg_exec(conn, dm_buf_cstr(&sql));
	if (res == NULL)
		goto out;
	uint64_t ins[MAX_TARGETS], upd[MAX_TARGETS];
	for (int i = 0; i < ntg; i++) {
		ins[i] = get_u64(res, 0, 2 * i);
		upd[i] = get_u64(res, 0, 2 * i + 1);
	}
	dmpg_clear(res);
	for (int i = 0; i < ntg; i++) {
		const char *p[1] = { tgs[i].entity };
		if (tgs[i].ledger_sql != NULL && dmpg_run_params(conn, tgs[i].ledger_sql, 1, p) < 0)
			goto out;
	}
	/* counted only once the whole step succeeded */
	for (int i = 0; i < ntg; i++) {
		tgs[i].ins += ins[i];
		tgs[i].upd += upd[i];
	}
	rc = 0;
out:
	dm_buf_free(&sql);
	return rc;
}

static int
park_deletes(PGconn *conn, target *tg, uint64_t *parked)
{
	const char *params[2] = { tg->entity, run_id };
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
static int
apply_deletes(PGconn *conn, target *tgs, int ntg, int only_ready)
{
	dm_buf sql = { 0 };
	const char *params[2 * MAX_TARGETS];
	int rc = -1;

	for (int i = 0; i < ntg && !force; i++) {
		const char *p[3] = { tgs[i].entity, run_id, only_ready ? "true" : "false" };
		PGresult *pr = dmpg_exec_params(conn, "SELECT pg_catalog.count(*) FROM dm.pending_delete"
		    " WHERE entity = $1 AND (CASE WHEN $3::pg_catalog.bool THEN ready ELSE run_id = $2 END)", 3, p);
		if (pr == NULL)
			goto out;
		uint64_t pending = get_u64(pr, 0, 0);
		dmpg_clear(pr);
		if (pending == 0)
			continue;
		char *count_sql = dm_xasprintf("SELECT pg_catalog.count(*) FROM %s", tgs[i].t.qualified);
		pr = dmpg_exec(conn, count_sql);
		free(count_sql);
		if (pr == NULL)
			goto out;
		uint64_t total = get_u64(pr, 0, 0);
		dmpg_clear(pr);
		if (pending * 100 > total * max_delete_pct) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_err("refusing to delete %llu of %llu rows (more than %llu%%): check the source, or rerun with --force",
			    (unsigned long long)pending, (unsigned long long)total, (unsigned long long)max_delete_pct);
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
			use_ledger_join(conn, &tgs[i]);
		dmpg_clear(pr);
	}
	dm_buf_puts(&sql, "WITH ");
	for (int i = 0; i < ntg; i++) {
		dm_buf_printf(&sql, "%sd%d AS (DELETE FROM %s AS t USING dm.pending_delete p%s"
		    " WHERE p.entity = $%d AND (CASE WHEN %s THEN p.ready ELSE p.run_id = $%d END)%s RETURNING 1)",
		    i ? ", " : "", i, tgs[i].t.qualified, tgs[i].mapped ? ", dm.ledger l" : "",
		    2 * i + 1, only_ready ? "true" : "false", 2 * i + 2, tgs[i].key_join);
		params[2 * i] = tgs[i].entity;
		params[2 * i + 1] = run_id;
	}
	dm_buf_puts(&sql, " SELECT ");
	for (int i = 0; i < ntg; i++)
		dm_buf_printf(&sql, "%s(SELECT pg_catalog.count(*) FROM d%d)", i ? ", " : "", i);
	PGresult *res = dmpg_exec_params(conn, dm_buf_cstr(&sql), 2 * ntg, params);
	if (res == NULL)
		goto out;
	for (int i = 0; i < ntg; i++)
		tgs[i].del += get_u64(res, 0, i);
	dmpg_clear(res);
	for (int i = 0; i < ntg; i++) {
		const char *p[3] = { tgs[i].entity, run_id, only_ready ? "true" : "false" };
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

/*
 * The run's row in dm.run, with the counts so far: status on another machine
 * shows a load in progress. Written in the batch's own transaction.
 */
static int
record_run(PGconn *conn, target *tg, const char *outcome, const char *error)
{
	char c[6][32];
	snprintf(c[0], sizeof c[0], "%llu", (unsigned long long)tg->ins);
	snprintf(c[1], sizeof c[1], "%llu", (unsigned long long)tg->upd);
	snprintf(c[2], sizeof c[2], "%llu", (unsigned long long)tg->del);
	snprintf(c[3], sizeof c[3], "%llu", (unsigned long long)tg->same);
	snprintf(c[4], sizeof c[4], "%llu", (unsigned long long)tg->batches);
	snprintf(c[5], sizeof c[5], "%llu", (unsigned long long)rejected);
	const char *q[11] = { run_id, tg->entity, started_at, outcome, c[0], c[1], c[2], c[3], c[4], c[5], error };

	return dmpg_run_params(conn,
	    "INSERT INTO dm.run AS r (run_id, entity, started_at, finished_at, outcome, inserted, updated, deleted,"
	    " unchanged, batches, rejected, error, progress_at)"
	    " VALUES ($1, $2, $3::pg_catalog.timestamptz,"
	    " CASE WHEN $4 = 'running' THEN NULL ELSE pg_catalog.clock_timestamp() END, $4,"
	    " $5::pg_catalog.int8, $6::pg_catalog.int8, $7::pg_catalog.int8, $8::pg_catalog.int8, $9::pg_catalog.int8,"
	    " $10::pg_catalog.int8, $11, pg_catalog.clock_timestamp())"
	    " ON CONFLICT (run_id, entity) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,"
	    " inserted = EXCLUDED.inserted, updated = EXCLUDED.updated, deleted = EXCLUDED.deleted,"
	    " unchanged = EXCLUDED.unchanged, batches = EXCLUDED.batches, rejected = EXCLUDED.rejected,"
	    " error = EXCLUDED.error, progress_at = EXCLUDED.progress_at",
	    11, q);
}

static int
record_progress(PGconn *conn, target *tg, uint64_t rows)
{
	char nrows[32];
	snprintf(nrows, sizeof nrows, "%llu", (unsigned long long)rows);
	const char *params[4] = { tg->entity, run_id, nrows, tg->lastkey.len ? dm_buf_cstr(&tg->lastkey) : NULL };

	if (!dry_run && record_run(conn, tg, "running", NULL) < 0)
		return -1;
	return dmpg_run_params(conn,
	    "INSERT INTO dm.checkpoint AS c (entity, run_id, batches, rows_applied, last_key, complete, updated_at)"
	    " VALUES ($1, $2, 1, $3::pg_catalog.int8, $4, false, pg_catalog.now())"
	    " ON CONFLICT (entity) DO UPDATE SET run_id = EXCLUDED.run_id,"
	    " batches = CASE WHEN c.run_id = EXCLUDED.run_id THEN c.batches + 1 ELSE 1 END,"
	    " rows_applied = CASE WHEN c.run_id = EXCLUDED.run_id THEN c.rows_applied ELSE 0 END + EXCLUDED.rows_applied,"
	    " last_key = COALESCE(EXCLUDED.last_key, c.last_key), complete = false, updated_at = pg_catalog.now()",
	    4, params);
}

/* The work of the transaction that saw the trailer: watermark, deletes, run record. */
static int
finish_stream(PGconn *conn, target *tgs, int ntg)
{
	if (!defer_deletes) {
		if (apply_deletes(conn, tgs, ntg, 0) < 0)
			return -1;
	} else {
		for (int i = 0; i < ntg; i++) {
			const char *p[2] = { tgs[i].entity, run_id };
			if (dmpg_run_params(conn, "UPDATE dm.pending_delete SET ready = true WHERE entity = $1 AND run_id = $2", 2, p) < 0)
				return -1;
		}
	}
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		const char *p[4] = { tg->entity, tg->r.trailer.watermark, tg->r.hdr.change_column, run_id };
		/*
		 * With rows rejected the checkpoint stays incomplete: the next run must
		 * read them again rather than move past them.
		 */
		if (rejected == 0 && dmpg_run_params(conn,
		    "UPDATE dm.checkpoint SET watermark = COALESCE($2, watermark),"
		    " change_column = COALESCE($3, change_column), run_id = $4,"
		    " complete = true, updated_at = pg_catalog.now() WHERE entity = $1", 4, p) < 0)
			return -1;
		tg->batches++;	/* this transaction's batch, counted before it commits */
		int r = record_run(conn, tg, rejected ? "rejected" : defer_deletes ? "loaded" : "ok", NULL);
		tg->batches--;
		if (r < 0)
			return -1;
	}
	return 0;
}

static int
end_transaction(PGconn *conn)
{
	if (dry_run)
		return 0;	/* the single dry-run transaction is rolled back at the end */
	in_txn = 0;
	return dmpg_commit(conn);
}

static int
begin_transaction(PGconn *conn)
{
	if (dry_run && in_txn)
		return 0;
	if (dmpg_begin(conn, "", NULL) < 0)
		return -1;
	in_txn = 1;
	return 0;
}

/* Forgets deletes parked by earlier runs that never saw their trailer. */
static int
drop_stale_pending(PGconn *conn, target *tgs, int ntg)
{
	if (begin_transaction(conn) < 0)
		return -1;
	for (int i = 0; i < ntg; i++) {
		const char *p[2] = { tgs[i].entity, run_id };
		/*
		 * This stream recomputes every delete. Older parked ones are void: a
		 * key deleted then may exist again in the source now. A finished run
		 * still waiting to apply its own is told, through its dm.run row, so
		 * that its --apply-deletes fails rather than quietly deletes nothing.
		 */
		PGresult *res = dmpg_exec_params(conn,
		    "UPDATE dm.run AS r SET outcome = 'voided', error = v.n::pg_catalog.text"
		    " || ' parked deletes voided by run ' || $2 || ', which loaded the entity before they were applied'"
		    " FROM (SELECT run_id, pg_catalog.count(*) AS n FROM dm.pending_delete"
		    "   WHERE entity = $1 AND ready AND run_id <> $2 GROUP BY run_id) AS v"
		    " WHERE r.run_id = v.run_id AND r.entity = $1 AND r.outcome = 'loaded'"
		    " RETURNING r.run_id, v.n::pg_catalog.text", 2, p);
		if (res == NULL)
			return -1;
		for (int r = 0; r < dmpg_nrows(res); r++) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_info("voided %s deletes parked by run %s (computed before this load: a run with --delete computes them again)",
			    dmpg_value(res, r, 1), dmpg_value(res, r, 0));
			dm_subject = saved;
		}
		dmpg_clear(res);
		if (dmpg_run_params(conn, "DELETE FROM dm.pending_delete WHERE entity = $1", 1, p) < 0)
			return -1;
	}
	return end_transaction(conn);
}

static int
is_data_error(void)
{
	const char *st = dmpg_last_sqlstate();

	/* class 22: data exception; class 23: integrity constraint violation */
	return st[0] == '2' && (st[1] == '2' || st[1] == '3');
}

/* Writes one refused row to the reject stream (a changes stream dm-load can replay). */
static int
reject_row(target *tg, const char *line, size_t len, const char *why)
{
	dm_buf store = { 0 }, key = { 0 };
	size_t ncols = tg->r.hdr.ncols;
	dm_value *vals = dm_xcalloc(ncols + 1, sizeof *vals);
	int rc = -1;

	if (dmcopy_parse(line, len, ncols + 1, tg->is_bin, &store, vals) < 0)
		goto out;
	if (!rejects_open) {
		dms_header h;
		dms_header_copy(&h, &tg->r.hdr);
		h.kind = DMS_CHANGES;
		rejects_fp = fopen(rejects_path, "wb");
		if (rejects_fp == NULL) {
			dm_err("cannot create %s: %s", rejects_path, strerror(errno));
			dms_header_free(&h);
			goto out;
		}
		dms_writer_open(&rejects_w, rejects_fp, &h);
		dms_header_free(&h);
		rejects_open = 1;
	}
	int op = vals[0].len == 1 ? vals[0].ptr[0] - '0' : DMS_OP_INSERT;
	dm_value *keys = dm_xcalloc(tg->r.hdr.nkey + 1, sizeof *keys);
	for (size_t k = 0; k < tg->r.hdr.nkey; k++)
		keys[k] = vals[1 + tg->r.hdr.key[k]];
	/* a delete carries its key only, as in any changes stream */
	if (op == DMS_OP_DELETE)
		dms_writer_row(&rejects_w, op, keys, tg->r.hdr.nkey);
	else
		dms_writer_row(&rejects_w, op, vals + 1, ncols);
	memcpy(vals, keys, tg->r.hdr.nkey * sizeof *keys);
	free(keys);
	dms_key_text(&key, vals, tg->r.hdr.nkey);
	dm_err("rejected %s: %s", dm_buf_cstr(&key), why);
	rejected++;
	rc = 0;
out:
	free(vals);
	dm_buf_free(&store);
	dm_buf_free(&key);
	return rc;
}

/*
 * The batch was refused as a whole: apply it again one row at a time, each
 * under a savepoint, so good rows land and refused ones go to --rejects.
 */
static int
replay_rows(PGconn *conn, target *tg)
{
	char *line = NULL;
	size_t cap = 0;
	ssize_t len;
	int rc = DM_EXIT_FAIL;

	dm_info("the destination refused a row of this batch: applying it row by row");
	if (fflush(tg->spool) != 0 || fseek(tg->spool, 0, SEEK_SET) != 0) {
		dm_err("cannot read back the spool file: %s", strerror(errno));
		return DM_EXIT_FAIL;
	}
	if (dmpg_run(conn, tg->create_stage_sql) < 0)
		return DM_EXIT_FAIL;
	while ((len = getline(&line, &cap, tg->spool)) > 0) {
		uint64_t before = tg->ins + tg->upd, parked = 0, ins0 = tg->ins, upd0 = tg->upd;
		if (dmpg_run(conn, "SAVEPOINT dm_row") < 0)
			goto out;
		dmpg_quiet_errors(1);
		int bad = dmpg_copy_in_start(conn, tg->copy_sql) < 0 ||
		    dmpg_copy_in_put(conn, line, (size_t)len) < 0 || dmpg_copy_in_end(conn, NULL) < 0 ||
		    apply_upserts(conn, tg, 1) < 0 || park_deletes(conn, tg, &parked) < 0;
		dmpg_quiet_errors(0);
		if (bad) {
			if (!is_data_error()) {
				dm_err("%s", dmpg_last_error());
				goto out;
			}
			char *why = dm_xasprintf("%s (SQLSTATE %s)", dmpg_last_error(), dmpg_last_sqlstate());
			tg->ins = ins0;
			tg->upd = upd0;
			int r = dmpg_run(conn, "ROLLBACK TO SAVEPOINT dm_row");
			int w = r < 0 ? -1 : reject_row(tg, line, (size_t)len, why);
			free(why);
			if (r < 0 || w < 0)
				goto out;
			if (rejected > max_rejects) {
				dm_err("more than %llu rows rejected (--max-rejects): stopping", (unsigned long long)max_rejects);
				goto out;
			}
		} else {
			if (dmpg_run(conn, "RELEASE SAVEPOINT dm_row") < 0)
				goto out;
			tg->same += 1 - parked - (tg->ins + tg->upd - before);
		}
		char *clear = dm_xasprintf("TRUNCATE %s", tg->stage);
		int c = dmpg_run(conn, clear);
		free(clear);
		if (c < 0)
			goto out;
	}
	rc = DM_EXIT_OK;
out:
	free(line);
	return rc;
}

/*
 * Decides, once and under this run's lease, how to load. An empty table (a
 * first load) needs no staging and no upsert: COPY goes straight in, about
 * twice as fast (tg->direct, for a single target only: a group always
 * stages unless it is bulk loaded). An empty plain table that the role owns
 * may also be bulk loaded (tg->bulk_ok; see load_bulk). A rerun after a
 * crash of the batched direct path finds rows and takes the upsert path.
 * 0, or -1 after printing why.
 */
static int
use_direct(PGconn *conn, target *tgs, int ntg)
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
 * A foreign key (alias f) that the bulk load drops and adds back with
 * pg_get_constraintdef: validated (adding back one NOT VALID would leave the
 * loaded rows unchecked), its own and not a partition's copy of its parent's,
 * uncommented, with its triggers enabled as ADD CONSTRAINT makes them, and
 * pointing at columns this role may reference (ADD CONSTRAINT checks it).
 */
#define BULK_FK_DROPPABLE \
	"f.contype = 'f' AND f.convalidated AND f.conparentid = 0" \
	" AND pg_catalog.obj_description(f.oid, 'pg_constraint') IS NULL" \
	" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgconstraint = f.oid AND t.tgenabled <> 'O')" \
	" AND (SELECT pg_catalog.bool_and(pg_catalog.has_column_privilege(f.confrelid, a.n, 'REFERENCES'))" \
	"   FROM pg_catalog.unnest(f.confkey) AS a(n))"

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
	"     AND f.conrelid = x.indrelid AND " BULK_FK_DROPPABLE "))"

/*
 * The bulk path's first step, inside its transaction: locks the tables,
 * checks that they are still empty, and drops what makes a load into a
 * constrained table slow, keeping the definitions to put back:
 *  - the tables' own foreign keys (BULK_FK_DROPPABLE), each checked row by
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
		if (dmstate_lease_renew(conn, tgs[i].entity, lease_owner, lease_seconds) < 0)
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
			/* written by something other than dm-load since use_direct: upsert it */
			why = "the table got rows meanwhile";
			tg->direct = 0;
			goto out;
		}
		/* by referenced table, so that concurrent loads lock shared parents in one order */
		tg->bulk_fk = dmpg_exec_params(conn,
		    "SELECT f.conname, pg_catalog.pg_get_constraintdef(f.oid), f.oid::pg_catalog.text,"
		    " f.confrelid::pg_catalog.text FROM pg_catalog.pg_constraint f"
		    " WHERE f.conrelid = $1::pg_catalog.regclass AND " BULK_FK_DROPPABLE
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
		in_txn = 0;
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
			char *name = dmpg_ident(conn, dmpg_value(tg->bulk_fk, j, 0));
			/* one that was only switched off goes now, its checks disabled, and comes back checked */
			char *sql = dm_xasprintf("ALTER TABLE %s %s%s%sADD CONSTRAINT %s %s", tg->t.qualified,
			    tg->bulk_fk_late[j] ? "DROP CONSTRAINT " : "", tg->bulk_fk_late[j] ? name : "",
			    tg->bulk_fk_late[j] ? ", " : "", name, dmpg_value(tg->bulk_fk, j, 1));
			dmpg_quiet_errors(1);
			int r = dmpg_run(conn, sql);
			dmpg_quiet_errors(0);
			free(sql);
			free(name);
			if (r < 0) {
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
static int
load_bulk(PGconn *conn, target *tgs, int ntg, int *fallback)
{
	*fallback = 0;
	if (begin_transaction(conn) < 0)
		return DM_EXIT_FAIL;
	int prep = bulk_prepare(conn, tgs, ntg);
	if (prep < 0)
		return DM_EXIT_LOCKED;
	if (prep == 0) {
		*fallback = 1;
		return DM_EXIT_OK;
	}
	if (triggers_switch(conn, tgs, ntg, 1) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		tgs[i].direct = 1;
		if (tgs[i].freeze) {
			char *sql = dm_xasprintf("%s (FREEZE)", tgs[i].direct_copy_sql);
			free(tgs[i].direct_copy_sql);
			tgs[i].direct_copy_sql = sql;
		}
		int got = stage_rows(conn, &tgs[i], 0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got != 0)
			return DM_EXIT_FAIL;
		tgs[i].ins += tgs[i].staged_rows;
	}
	if (bulk_rebuild(conn, tgs, ntg) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (record_progress(conn, &tgs[i], tgs[i].staged_rows) < 0)
			return DM_EXIT_FAIL;
	if (finish_stream(conn, tgs, ntg) < 0 || triggers_switch(conn, tgs, ntg, 0) < 0 || end_transaction(conn) < 0)
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

/* One table, many transactions of batch_rows rows. */
static int
load_batched(PGconn *conn, target *tg, uint64_t batch_rows)
{
	for (;;) {
		if (begin_transaction(conn) < 0)
			return DM_EXIT_FAIL;
		if (dmstate_lease_renew(conn, tg->entity, lease_owner, lease_seconds) < 0)
			return DM_EXIT_LOCKED;
		if (triggers_switch(conn, tg, 1, 1) < 0 || dmpg_run(conn, "SAVEPOINT dm_batch") < 0)
			return DM_EXIT_FAIL;
		uint64_t before = tg->ins + tg->upd, parked = 0;
		if (rejects_path != NULL)
			dmpg_quiet_errors(1);
		int got = stage_rows(conn, tg, batch_rows);
		int refused = got == -2 || got == -4;
		if (tg->direct) {
			if (got == -3)
				return DM_EXIT_STREAM;
			if (got < 0)
				return DM_EXIT_FAIL;
			tg->ins += tg->staged_rows;
			if (record_progress(conn, tg, tg->staged_rows) < 0 || (got == 0 && finish_stream(conn, tg, 1) < 0) ||
			    triggers_switch(conn, tg, 1, 0) < 0 || end_transaction(conn) < 0)
				return DM_EXIT_FAIL;
			tg->batches++;
			if (got == 0)
				return DM_EXIT_OK;
			continue;
		}
		if (!refused && got >= 0 && apply_upserts(conn, tg, 1) < 0)
			refused = 1;
		dmpg_quiet_errors(0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got == -1)
			return DM_EXIT_FAIL;
		if (refused) {
			if (rejects_path == NULL || !is_data_error()) {
				if (rejects_path != NULL)
					dm_err("%s", dmpg_last_error());
				return DM_EXIT_FAIL;
			}
			got = got == -4 || got == 1 ? 1 : 0;
			if (dmpg_run(conn, "ROLLBACK TO SAVEPOINT dm_batch") < 0)
				return DM_EXIT_FAIL;
			int rc = replay_rows(conn, tg);
			if (rc != DM_EXIT_OK)
				return rc;
		} else {
			if (park_deletes(conn, tg, &parked) < 0)
				return DM_EXIT_FAIL;
			tg->same += tg->staged_rows - parked - (tg->ins + tg->upd - before);
		}
		if (dmpg_run(conn, tg->drop_stage_sql) < 0)
			return DM_EXIT_FAIL;
		if (record_progress(conn, tg, tg->staged_rows) < 0)
			return DM_EXIT_FAIL;
		if (got == 0 && finish_stream(conn, tg, 1) < 0)
			return DM_EXIT_FAIL;
		if (triggers_switch(conn, tg, 1, 0) < 0 || end_transaction(conn) < 0)
			return DM_EXIT_FAIL;
		tg->batches++;
		dm_debug("batch %llu: %llu rows", (unsigned long long)tg->batches, (unsigned long long)tg->staged_rows);
		if (got == 0)
			return DM_EXIT_OK;
	}
}

/* A foreign-key cycle: every stream staged, then one statement, one transaction. */
static int
load_group(PGconn *conn, target *tgs, int ntg)
{
	if (begin_transaction(conn) < 0 || triggers_switch(conn, tgs, ntg, 1) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, lease_owner, lease_seconds) < 0)
			return DM_EXIT_LOCKED;
	for (int i = 0; i < ntg; i++) {
		int got = stage_rows(conn, &tgs[i], 0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got < 0)
			return DM_EXIT_FAIL;
	}
	uint64_t before[MAX_TARGETS];
	for (int i = 0; i < ntg; i++)
		before[i] = tgs[i].ins + tgs[i].upd;
	if (apply_upserts(conn, tgs, ntg) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		uint64_t parked = 0;
		if (park_deletes(conn, &tgs[i], &parked) < 0 || record_progress(conn, &tgs[i], tgs[i].staged_rows) < 0)
			return DM_EXIT_FAIL;
		tgs[i].same += tgs[i].staged_rows - parked - (tgs[i].ins + tgs[i].upd - before[i]);
	}
	if (finish_stream(conn, tgs, ntg) < 0 || triggers_switch(conn, tgs, ntg, 0) < 0 || end_transaction(conn) < 0)
		return DM_EXIT_FAIL;
	return DM_EXIT_OK;
}

/* --apply-deletes: the parked deletes of a finished run, children before parents. */
static int
apply_parked(PGconn *conn, target *tgs, int ntg)
{
	if (begin_transaction(conn) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, lease_owner, lease_seconds) < 0)
			return DM_EXIT_LOCKED;
	for (int i = 0; i < ntg; i++) {
		/* Deleting nothing and saying ok would hide that the source's deletes never arrived. */
		const char *p[2] = { run_id, tgs[i].entity };
		PGresult *res = dmpg_exec_params(conn, "SELECT error FROM dm.run WHERE run_id = $1 AND entity = $2"
		    " AND outcome = 'voided'", 2, p);
		if (res == NULL)
			return DM_EXIT_FAIL;
		if (dmpg_nrows(res) > 0) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_err("nothing deleted: %s; run again with --delete", dmpg_value(res, 0, 0));
			dm_subject = saved;
			dmpg_clear(res);
			return DM_EXIT_FAIL;
		}
		dmpg_clear(res);
	}
	if (triggers_switch(conn, tgs, ntg, 1) < 0 || apply_deletes(conn, tgs, ntg, 1) < 0 ||
	    triggers_switch(conn, tgs, ntg, 0) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		char n[32];
		snprintf(n, sizeof n, "%llu", (unsigned long long)tgs[i].del);
		const char *p[4] = { run_id, tgs[i].entity, started_at, n };
		if (dmpg_run_params(conn,
		    "INSERT INTO dm.run AS r (run_id, entity, started_at, finished_at, outcome, deleted)"
		    " VALUES ($1, $2, $3::pg_catalog.timestamptz, pg_catalog.clock_timestamp(), 'ok', $4::pg_catalog.int8)"
		    " ON CONFLICT (run_id, entity) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = 'ok',"
		    " deleted = r.deleted + EXCLUDED.deleted", 4, p) < 0)
			return DM_EXIT_FAIL;
	}
	return end_transaction(conn) < 0 ? DM_EXIT_FAIL : DM_EXIT_OK;
}

int
main(int argc, char **argv)
{
	const char *db = NULL, *db_env = NULL, *entity_opt = NULL;
	const char *entity_opts[MAX_TARGETS];
	int nentity = 0;
	uint64_t batch_rows = 50000;
	int apply_only = 0;
	target tgs[MAX_TARGETS];
	int ntg = 0, rc = DM_EXIT_FAIL;
	PGconn *conn = NULL;
	char run_id_buf[64];

	dm_prog = "dm-load";
	memset(tgs, 0, sizeof tgs);
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	enum { O_DB = 256, O_DBENV, O_TABLE, O_ENTITY, O_BATCH, O_DRY, O_DEFER, O_APPLY, O_RUNID,
		O_FORCE, O_MAXDEL, O_REJECTS, O_MAXREJ, O_WAIT, O_NOTRIG, O_NOBULK };
	uint64_t wait_seconds = 10;
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "table", required_argument, NULL, O_TABLE },
		{ "entity", required_argument, NULL, O_ENTITY },
		{ "batch-rows", required_argument, NULL, O_BATCH },
		{ "dry-run", no_argument, NULL, O_DRY },
		{ "defer-deletes", no_argument, NULL, O_DEFER },
		{ "apply-deletes", no_argument, NULL, O_APPLY },
		{ "run-id", required_argument, NULL, O_RUNID },
		{ "force", no_argument, NULL, O_FORCE },
		{ "max-delete-share", required_argument, NULL, O_MAXDEL },
		{ "rejects", required_argument, NULL, O_REJECTS },
		{ "max-rejects", required_argument, NULL, O_MAXREJ },
		{ "wait", required_argument, NULL, O_WAIT },
		{ "disable-triggers", no_argument, NULL, O_NOTRIG },
		{ "no-bulk", no_argument, NULL, O_NOBULK },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
		case O_TABLE:
			if (ntg == MAX_TARGETS) {
				dm_err("at most %d --table options", MAX_TARGETS);
				return DM_EXIT_USAGE;
			}
			tgs[ntg++].table_arg = optarg;
			break;
		case O_ENTITY:
			if (nentity == MAX_TARGETS) {
				dm_err("at most %d --entity options", MAX_TARGETS);
				return DM_EXIT_USAGE;
			}
			entity_opts[nentity++] = optarg;
			break;
		case O_BATCH:
			if (dm_parse_u64(optarg, &batch_rows) < 0) {
				dm_err("--batch-rows %s: expected a number (0: one transaction)", optarg);
				return DM_EXIT_USAGE;
			}
			break;
		case O_DRY: dry_run = 1; break;
		case O_DEFER: defer_deletes = 1; break;
		case O_APPLY: apply_only = 1; break;
		case O_RUNID: run_id = optarg; break;
		case O_FORCE: force = 1; break;
		case O_NOTRIG: disable_triggers = 1; break;
		case O_NOBULK: no_bulk = 1; break;
		case O_REJECTS: rejects_path = optarg; break;
		case O_MAXDEL:
		case O_MAXREJ:
		case O_WAIT: {
			uint64_t v;
			if (dm_parse_u64(optarg, &v) < 0 || (ch == O_MAXDEL && v > 100)) {
				dm_err("%s: expected a whole number%s", optarg, ch == O_MAXDEL ? " from 0 to 100" : "");
				return DM_EXIT_USAGE;
			}
			if (ch == O_MAXDEL)
				max_delete_pct = v;
			else if (ch == O_MAXREJ)
				max_rejects = v;
			else
				wait_seconds = v;
			break;
		}
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	int nfiles = argc - optind;
	if (ntg == 0)
		usage();
	if (apply_only ? nfiles != 0 : (ntg == 1 ? nfiles > 1 : nfiles != ntg))
		usage();
	if (nentity != 0 && nentity != ntg) {
		dm_err("give one --entity per --table, in the same order");
		return DM_EXIT_USAGE;
	}
	entity_opt = nentity ? entity_opts[0] : NULL;
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	if (run_id == NULL) {
		snprintf(run_id_buf, sizeof run_id_buf, "%lld-%ld", (long long)time(NULL), (long)getpid());
		run_id = run_id_buf;
	}
	now_text(started_at, sizeof started_at);
	signal(SIGPIPE, SIG_IGN);
	dm_subject = entity_opt ? entity_opt : tgs[0].table_arg;

	/* Streams are opened before connecting: a bad stream must not cost a connection. */
	rc = DM_EXIT_STREAM;
	for (int i = 0; i < ntg && !apply_only; i++) {
		target *tg = &tgs[i];
		tg->path = nfiles ? argv[optind + i] : "-";
		const char *name = "standard input";
		if (strcmp(tg->path, "-") == 0) {
			tg->fp = stdin;
		} else {
			name = tg->path;
			tg->fp = fopen(tg->path, "rb");
			if (tg->fp == NULL) {
				dm_err("cannot open %s: %s", tg->path, strerror(errno));
				rc = DM_EXIT_FAIL;
				goto out;
			}
		}
		tg->reader_open = 1;	/* a failed open still holds memory to free */
		if (dms_reader_open(&tg->r, tg->fp, name) != 0)
			goto out;
		tg->r.stop_at_sync = 1;
		/*
		 * The checkpoint written is the one named here, never one a stream file
		 * names on its own: a stream for another entity is refused.
		 */
		tg->entity = dm_xstrdup(nentity ? entity_opts[i] : tg->table_arg);
		/* (a stream for another table is refused further on, naming the table) */
		if (dm_same_table(tg->r.hdr.table, tg->table_arg) && strcmp(tg->r.hdr.entity, tg->entity) != 0 &&
		    !(nentity == 0 && dm_same_table(tg->r.hdr.entity, tg->table_arg))) {
			const char *saved = dm_subject;
			dm_subject = tg->entity;
			dm_err("%s: stream is for entity %s, not %s: refusing it (give --entity %s if that is right)",
			    tg->r.name, tg->r.hdr.entity, tg->entity, tg->r.hdr.entity);
			dm_subject = saved;
			goto out;
		}
	}
	if (!apply_only && entity_opt == NULL)
		dm_subject = tgs[0].entity;

	rc = DM_EXIT_FAIL;
	conn = dmpg_connect(conninfo, "destination");
	if (conn == NULL)
		goto out;
	if (dmstate_ensure(conn) < 0)
		goto out;
	/* Catalog reads happen in a transaction so the session settings apply. */
	if (dmpg_begin(conn, "", NULL) < 0)
		goto out;
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		char *schema = NULL, *name = NULL;
		if (dm_split_table(tg->table_arg, &schema, &name) < 0) {
			dm_err("--table %s: expected SCHEMA.TABLE", tg->table_arg);
			rc = DM_EXIT_USAGE;
			goto out;
		}
		int bad = dmpg_table_load(conn, schema, name, 1, &tg->t);
		free(schema);
		free(name);
		if (bad)
			goto out;
		if (apply_only)
			tg->entity = dm_xstrdup(nentity ? entity_opts[i] : tg->table_arg);
		int p = target_prepare(conn, tg, i, !apply_only);
		if (p == -2)
			rc = DM_EXIT_STREAM;
		if (p < 0)
			goto out;
	}
	if (dmpg_commit(conn) < 0)
		goto out;

	/*
	 * One run per entity at a time: the lease is held until this process ends.
	 * A holder that is alive is waited for, up to --wait seconds, polling
	 * twice a second: mostly it is a killed load whose server backend is
	 * still finishing its statement, which takes about a second since
	 * dmpg_begin set client_connection_check_interval. --wait 0 refuses at once.
	 */
	snprintf(lease_owner, sizeof lease_owner, "%s/%ld", run_id, (long)getpid());
	for (int i = 0; i < ntg; i++) {
		struct timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		for (int polls = 0;; polls++) {
			char *holder = NULL;
			if (dmpg_begin(conn, "", NULL) < 0)
				goto out;
			int got = dmstate_lease_take(conn, tgs[i].entity, lease_owner, lease_seconds, &holder);
			if (got < 0 || dmpg_commit(conn) < 0) {
				free(holder);
				goto out;
			}
			if (got == 1) {
				tgs[i].leased = 1;
				free(holder);
				break;
			}
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			struct timespec now;
			clock_gettime(CLOCK_MONOTONIC, &now);
			double waited = (double)(now.tv_sec - start.tv_sec) + (now.tv_nsec - start.tv_nsec) / 1e9;
			if (waited >= (double)wait_seconds) {
				char after[64] = "";
				if (polls > 0)
					snprintf(after, sizeof after, ", still after %.0f s", waited);
				dm_err("another run is loading this entity (%s)%s: wait for it, or use --wait SECONDS",
				    holder ? holder : "lease held", after);
				dm_subject = saved;
				free(holder);
				rc = DM_EXIT_LOCKED;
				goto out;
			}
			if (polls == 0)
				dm_debug("lease held by %s: waiting up to %llu s for it", holder ? holder : "another run",
				    (unsigned long long)wait_seconds);
			dm_subject = saved;
			free(holder);
			struct timespec half = { 0, 500000000L };
			nanosleep(&half, NULL);
		}
	}

	if (apply_only) {
		rc = apply_parked(conn, tgs, ntg);
	} else {
		if (drop_stale_pending(conn, tgs, ntg) < 0)
			goto out;
		/* COPY straight in needs every row to be new, and the stream's columns to be the table's */
		int direct_ok = !dry_run && rejects_path == NULL, bulk = !no_bulk, fallback = 1;
		for (int i = 0; i < ntg; i++)
			direct_ok &= !tgs[i].mapped;
		if (direct_ok && use_direct(conn, tgs, ntg) < 0)
			goto out;
		for (int i = 0; i < ntg; i++)
			bulk &= direct_ok && tgs[i].bulk_ok;
		if (bulk)
			rc = load_bulk(conn, tgs, ntg, &fallback);
		if (fallback)
			rc = ntg == 1 ? load_batched(conn, &tgs[0], batch_rows) : load_group(conn, tgs, ntg);
	}
	if (dry_run)
		dmpg_rollback(conn);
	if (rc == DM_EXIT_OK) {
		for (int i = 0; i < ntg; i++) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_info("%sinsert=%llu update=%llu delete=%llu unchanged=%llu", dry_run ? "dry run: " : "",
			    (unsigned long long)tgs[i].ins, (unsigned long long)tgs[i].upd,
			    (unsigned long long)tgs[i].del, (unsigned long long)tgs[i].same);
			dm_subject = saved;
		}
	} else {
		dmpg_rollback(conn);
		/* Say so in dm.run, for status on any machine (a killed process cannot; its lease tells). */
		char why[64];
		snprintf(why, sizeof why, "dm-load exit status %d", rc);
		const char *err = *dmpg_last_error() ? dmpg_last_error() : why;
		for (int i = 0; i < ntg && !dry_run && !apply_only; i++)
			if (dmpg_begin(conn, "", NULL) == 0) {
				if (record_run(conn, &tgs[i], "failed", err) == 0)
					dmpg_commit(conn);
				else
					dmpg_rollback(conn);
			}
	}
	if (rejects_open) {
		if (dms_writer_finish(&rejects_w, NULL) < 0 || dm_close_output(rejects_fp, rejects_path) < 0)
			rc = DM_EXIT_FAIL;
		dms_writer_free(&rejects_w);
		rejects_open = 0;
	}
	if (rc == DM_EXIT_OK && rejected > 0) {
		dm_err("%llu row(s) rejected: see %s (fix them, then replay it with dm-load)",
		    (unsigned long long)rejected, rejects_path);
		rc = DM_EXIT_REJECT;
	}
out:
	/* Released on the way out whatever happened; a dead process's lease is taken over anyway. */
	for (int i = 0; i < ntg && conn != NULL; i++)
		if (tgs[i].leased && dmpg_begin(conn, "", NULL) == 0) {
			if (dmstate_lease_release(conn, tgs[i].entity, lease_owner) == 0)
				dmpg_commit(conn);
			else
				dmpg_rollback(conn);
		}
	dmpg_finish(conn);
	for (int i = 0; i < ntg; i++)
		target_free(&tgs[i]);
	return dmpg_exit_code(rc);
}
