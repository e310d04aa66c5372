/*
 * dm-extract - read one table as a dm row stream, ordered by primary key.
 *
 * One REPEATABLE READ, READ ONLY transaction and one COPY: memory stays flat
 * whatever the table's size, and every row comes from the same snapshot.
 */
#define _POSIX_C_SOURCE 200809L
#include "copytext.h"
#include "mapping.h"
#include "pg.h"
#include "stream.h"

#include <errno.h>
#include <stdio.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: dm-extract (--db CONNINFO | --db-env VAR) --table SCHEMA.TABLE [--entity NAME]\n"
    "       dm-extract (--db ... ) -c SPEC --entity NAME (--other C | --other-env VAR) [--side source|dest]\n"
    "                  [--columns COL,...] [--since VALUE [--overlap INTERVAL]]\n"
    "                  [--change-column COL] [--keys FILE] [--key-from VALUE] [--key-before VALUE]\n"
    "                  [--hashes] [--snapshot ID] [-q] [-v]\n"
    "\n"
    "Writes the table as a dm row stream (dm-stream(5)) on standard output,\n"
    "ordered by primary key, read in one snapshot.\n"
    "\n"
    "  --db CONNINFO        libpq connection string or URI\n"
    "  --db-env VAR         read the connection string from environment variable VAR\n"
    "  --table SCHEMA.TABLE the table to read\n"
    "  --entity NAME        entity name recorded in the stream (default SCHEMA.TABLE)\n"
    "  --columns LIST       comma-separated columns, in this order (default: all but generated)\n"
    "  --since VALUE        only rows whose change column is at or after VALUE\n"
    "  --overlap INTERVAL   with --since on a date/time column: go back INTERVAL further\n"
    "  --change-column COL  the change column (default: updated_at or last_update)\n"
    "  --keys FILE          only the rows whose key is a key of the dm stream FILE\n"
    "                       (- for standard input; any kind; with -c, legacy keys)\n"
    "  --key-from VALUE     only rows whose first key column is VALUE or after it\n"
    "  --key-before VALUE   only rows whose first key column is before VALUE (the two\n"
    "                       make a range of dm-entities --split; text keys compare\n"
    "                       under the C collation; with -c, the legacy key, in the\n"
    "                       source's type on both sides)\n"
    "  --hashes             key and row hash only, for the destination side of dm-diff\n"
    "  --snapshot ID        read in a snapshot exported by pg_export_snapshot()\n"
    "  -c, --spec FILE      read spec entity --entity NAME in the destination's shape\n"
    "                       (dm.conf(5)); needs --other or --other-env for the other\n"
    "                       side's catalog, and --side source|dest (default source)\n"
    "  --export-snapshot    print a snapshot id for --snapshot, keep it alive until\n"
    "                       standard input closes (no --table needed)\n"
    "  --with-lsn           with --export-snapshot: print the id, a space, and a WAL\n"
    "                       position past every commit the snapshot sees\n"
    "  -q, -v               quieter, more verbose\n"
    "  --help, --version\n";

static void
usage(void)
{
	fputs("usage: dm-extract (--db CONNINFO | --db-env VAR) (--table SCHEMA.TABLE [--since VALUE] [--hashes] ... | --export-snapshot)\n", stderr);
	exit(DM_EXIT_USAGE);
}

/* More keys than this are a batch to split, not one query's setting. */
#define KEYS_MAX 1000000

/* Appends s (n bytes) to json as a JSON string. */
static void
json_string(dm_buf *json, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	dm_buf_putc(json, '"');
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		if (c == '"' || c == '\\') {
			dm_buf_putc(json, '\\');
			dm_buf_putc(json, (char)c);
		} else if (c < 0x20) {
			dm_buf_printf(json, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
		} else {
			dm_buf_putc(json, (char)c);
		}
	}
	dm_buf_putc(json, '"');
}

/*
 * Reads the key of every row of the dm stream at path ("-": standard input)
 * into json, the caller's buffer: a JSON array with one array of key texts
 * per row, as the setting dm.keys carries it (bytea keys in the \x hex form
 * that casts back). *width is the stream's key width, for the caller to
 * check against the table's. Returns an exit code.
 */
static int
keys_load(const char *path, dm_buf *json, size_t *width)
{
	static const char hex[] = "0123456789abcdef";
	FILE *fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	dms_reader r = { 0 };
	int rc = DM_EXIT_STREAM, got;
	size_t n = 0;
	dm_buf bytes = { 0 };

	if (fp == NULL) {
		dm_err("--keys %s: %s", path, strerror(errno));
		return DM_EXIT_USAGE;
	}
	if (dms_reader_open(&r, fp, strcmp(path, "-") == 0 ? "standard input" : path) != 0)
		goto out;
	*width = r.hdr.nkey;
	dm_buf_putc(json, '[');
	while ((got = dms_reader_next(&r)) == 1) {
		if (++n > KEYS_MAX) {
			dm_err("--keys %s: more than %d keys; split the set", path, KEYS_MAX);
			rc = DM_EXIT_USAGE;
			goto out;
		}
		dm_buf_puts(json, n > 1 ? ",[" : "[");
		for (size_t k = 0; k < r.hdr.nkey; k++) {
			const dm_value *v = &r.keys[k];
			if (k > 0)
				dm_buf_putc(json, ',');
			if (v->kind == DM_BIN) {
				bytes.len = 0;
				dm_buf_puts(&bytes, "\\x");
				for (uint32_t i = 0; i < v->len; i++) {
					dm_buf_putc(&bytes, hex[(unsigned char)v->ptr[i] >> 4]);
					dm_buf_putc(&bytes, hex[(unsigned char)v->ptr[i] & 15]);
				}
				json_string(json, bytes.data, bytes.len);
			} else {
				json_string(json, v->ptr, v->len);
			}
		}
		dm_buf_putc(json, ']');
	}
	if (got < 0)
		goto out;
	dm_buf_putc(json, ']');
	dm_debug("%zu keys from %s", n, path);
	rc = DM_EXIT_OK;
out:
	dms_reader_free(&r);
	dm_buf_free(&bytes);
	if (fp != stdin)
		fclose(fp);
	return rc;
}

/* Puts the key set in the transaction's setting dm.keys (a parameter, never SQL text). */
static int
keys_set(PGconn *conn, dm_buf *json)
{
	const char *p[1] = { dm_buf_cstr(json) };
	return dmpg_run_params(conn, "SELECT pg_catalog.set_config('dm.keys', $1, true)", 1, p);
}

/* Picks the columns to read: a comma list, or every stored column. Returns count or -1. */
static int
choose_columns(const dmpg_table *t, const char *list, size_t **out)
{
	size_t *idx = dm_xcalloc(t->ncols, sizeof *idx);
	size_t n = 0;

	if (list == NULL) {
		for (size_t i = 0; i < t->ncols; i++)
			if (!t->cols[i].generated)
				idx[n++] = i;
		*out = idx;
		return (int)n;
	}
	char *copy = dm_xstrdup(list), *save = NULL;
	for (char *name = strtok_r(copy, ",", &save); name; name = strtok_r(NULL, ",", &save)) {
		int c = dmpg_table_column(t, name);
		if (c < 0) {
			dm_err("column mismatch: table %s.%s has no column \"%s\"", t->schema, t->name, name);
			goto fail;
		}
		for (size_t k = 0; k < n; k++)
			if (idx[k] == (size_t)c) {
				dm_err("column \"%s\" named twice in --columns", name);
				goto fail;
			}
		if (n == t->ncols)
			goto fail;
		idx[n++] = (size_t)c;
	}
	free(copy);
	*out = idx;
	return (int)n;
fail:
	free(copy);
	free(idx);
	return -1;
}

/*
 * --key-from/--key-before: a condition (a new string, or NULL, logged) that
 * keeps the rows whose first key column, the SQL expression expr, lies in
 * [from, before); either end may be NULL (open). The values travel in the
 * settings dm.key_from and dm.key_before, never in the SQL text, and are
 * compared in the key's own type `type` (format_type's spelling, safe to
 * splice) so that its index serves; a collatable type compares under the
 * "C" collation, as dm-entities --split sorted the bounds: the ranges then
 * tile the keys the same way on both servers, whatever their collations.
 */
static char *
range_cond(PGconn *conn, const char *expr, const char *type, const char *from, const char *before)
{
	const char *p[3] = { from ? from : "", before ? before : "", type };
	PGresult *res = dmpg_exec_params(conn, "SELECT pg_catalog.set_config('dm.key_from', $1, true),"
	    " pg_catalog.set_config('dm.key_before', $2, true),"
	    " (SELECT t.typcollation <> 0 FROM pg_catalog.pg_type t WHERE t.oid = $3::pg_catalog.regtype)::pg_catalog.text", 3, p);
	if (res == NULL)
		return NULL;
	const char *coll = strcmp(dmpg_value(res, 0, 2), "true") == 0 ? " COLLATE pg_catalog.\"C\"" : "";
	dmpg_clear(res);
	dm_buf b = { 0 };
	if (from != NULL)
		dm_buf_printf(&b, "%s >= pg_catalog.current_setting('dm.key_from')::%s%s", expr, type, coll);
	if (before != NULL)
		dm_buf_printf(&b, "%s%s < pg_catalog.current_setting('dm.key_before')::%s%s", from ? " AND " : "",
		    expr, type, coll);
	return (char *)dm_buf_cstr(&b);
}

static int
is_time_type(const char *type)
{
	return strncmp(type, "timestamp", 9) == 0 || strcmp(type, "date") == 0;
}

/* One COPY turned into a stream: what both plain and mapped extraction share. */
typedef int (*row_fix_fn)(void *ctx, dm_value *vals);

struct copy_job {
	PGconn *conn;
	const char *sql;	/* the SELECT */
	const dms_header *h;
	size_t nfields;		/* fields per COPY row: h->ncols, plus a trailing change column maybe */
	const int *is_bin;
	int change_pos;		/* field holding the change column, or -1 */
	dms_keyclass change_class;
	int hashes;
	row_fix_fn fix;		/* rewrites values before they are written (UUIDs), or NULL */
	void *fix_ctx;
};

/*
 * Streams the job's rows to stdout as a dm stream, header included, trailer
 * not: the caller commits first, then finishes w. Tracks the watermark.
 * Returns 0, or -1 after printing why (w is then open and must be freed).
 */
static int
copy_rows(const struct copy_job *job, dms_writer *w, dm_buf *watermark, int *have_watermark)
{
	const dms_header *h = job->h;
	dm_value *vals = dm_xcalloc(job->nfields + 1, sizeof *vals);
	dm_value *outvals = dm_xcalloc(h->nkey + 1, sizeof *outvals);
	dm_buf store = { 0 }, scratch = { 0 };
	unsigned char hash[DMS_HASH_LEN];
	int rc = -1;
	char *line = NULL;	/* the COPY row: values without escapes point into it */

	char *copy = dm_xasprintf("COPY (%s) TO STDOUT", job->sql);
	int started = dmpg_copy_out_start(job->conn, copy);
	free(copy);
	/* The writer hands stdout blocks of 1 MiB: a stdio buffer would only copy them once more. */
	setvbuf(stdout, NULL, _IONBF, 0);
	dms_writer_open(w, stdout, h);
	if (started < 0)
		goto out;
	for (;;) {
		dmpg_freemem(line);
		line = NULL;
		int n = dmpg_copy_out_row(job->conn, &line);
		if (n == -1)
			break;
		if (n < 0)
			goto out;
		int bad = dmcopy_parse(line, (size_t)n, job->nfields, job->is_bin, &store, vals);
		if (bad || (job->fix != NULL && job->fix(job->fix_ctx, vals) < 0))
			goto out;
		const dm_value *cv = job->change_pos >= 0 ? &vals[job->change_pos] : NULL;
		if (cv != NULL && cv->kind != DM_NULL) {
			dm_value cur = { watermark->data, (uint32_t)watermark->len, DM_TEXT };
			if (!*have_watermark || dms_key_cmp(&job->change_class, 1, &cur, cv) < 0) {
				watermark->len = 0;
				dm_buf_append(watermark, cv->ptr, cv->len);
				*have_watermark = 1;
			}
		}
		if (job->hashes) {
			for (size_t k = 0; k < h->nkey; k++)
				outvals[k] = vals[h->key[k]];
			dms_row_hash(vals, h->ncols, &scratch, hash);
			outvals[h->nkey].kind = DM_BIN;
			outvals[h->nkey].ptr = (const char *)hash;
			outvals[h->nkey].len = DMS_HASH_LEN;
			dms_writer_row(w, DMS_OP_NONE, outvals, h->nkey + 1);
		} else {
			dms_writer_row(w, DMS_OP_NONE, vals, h->ncols);
		}
		if (w->err != 0 || ferror(stdout)) {
			/* The cause, as the reader of a log needs it: no space left, broken pipe... */
			dm_err("cannot write stream: %s", strerror(w->err != 0 ? w->err : EIO));
			goto out;
		}
	}
	rc = 0;
out:
	dmpg_freemem(line);
	free(vals);
	free(outvals);
	dm_buf_free(&store);
	dm_buf_free(&scratch);
	return rc;
}

/* Mapped extraction: UUIDs computed from legacy keys as rows stream by. */
struct uuid_fix {
	const dmmap *m;
	size_t first;		/* index of the first mapped column among the values */
	char (*text)[37];	/* one UUID text per mapped column */
	dm_buf name;
};

static int
fix_uuids(void *arg, dm_value *vals)
{
	struct uuid_fix *f = arg;

	for (size_t i = 0; i < f->m->ncols; i++) {
		const dmmap_col *c = &f->m->cols[i];
		dm_value *v = &vals[f->first + i];
		if (c->kind == DMMAP_EXPR || v->kind == DM_NULL)
			continue;
		f->name.len = 0;
		/* one value: the source already joined and escaped a composite key (dmmap_key_text) */
		dmspec_uuid_name(&f->name, c->kind == DMMAP_UUID ? f->m->e->name : c->ref_entity, v, 1);
		if (dmspec_uuid5(f->m->spec->ns, f->name.data, f->name.len, f->text[i]) < 0)
			return -1;
		v->ptr = f->text[i];
		v->len = 36;
	}
	return 0;
}

/*
 * Extracts spec entity `name`, on the side `side` ("source" or "dest"), in
 * the destination's shape: the legacy key first, then the mapped columns.
 * conn reads; other only lends its catalog. Returns an exit code.
 */
static int
extract_mapped(PGconn *conn, PGconn *other, const dmspec *sp, const char *name, int dest_side,
    const char *since, const char *overlap, const char *snapshot, int hashes, dm_buf *keys, size_t keys_width,
    const char *key_from, const char *key_before)
{
	const dmspec_entity *e = dmspec_find(sp, name);
	PGconn *src = dest_side ? other : conn, *dst = dest_side ? conn : other;
	dmmap m;
	dms_header h;
	dms_writer w;
	int built = 0, wopen = 0, rc = DM_EXIT_FAIL, have_wm = 0;
	dm_buf wm = { 0 };
	char *sql = NULL, *cond = NULL, *range = NULL;
	int *is_bin = NULL;
	struct uuid_fix fix = { 0 };
	const char *range_col = NULL, *range_type = NULL;	/* --key-from/--key-before: the legacy key's first column */

	dms_header_init(&h);
	if (e == NULL) {
		dm_err("%s: no [entity %s] in the spec", sp->path, name);
		return DM_EXIT_USAGE;
	}
	if (dmpg_begin(conn, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", snapshot) < 0 ||
	    dmpg_begin(other, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL) < 0)
		goto out;
	built = 1;
	if (dmmap_build(src, dst, sp, e, &m) < 0)
		goto out;
	if (dest_side && since != NULL) {
		dm_err("--since reads the source side only");
		rc = DM_EXIT_USAGE;
		goto out;
	}
	if (keys != NULL && keys_width != m.nkey) {
		dm_err("--keys: the stream's keys have %zu column(s), entity %s's legacy key %zu", keys_width, e->name, m.nkey);
		rc = DM_EXIT_USAGE;
		goto out;
	}
	if (keys != NULL && keys_set(conn, keys) < 0)
		goto out;
	if (key_from != NULL || key_before != NULL) {
		/* compared in the source's type on both sides */
		range_col = m.key_names[0] + strlen(DMMAP_LEGACY_PREFIX);
		range_type = m.src.cols[dmpg_table_column(&m.src, range_col)].type;
	}
	h.kind = hashes ? DMS_HASHES : DMS_ROWS;
	h.entity = dm_xstrdup(e->name);
	h.table = dm_xstrdup(e->target);
	h.ncols = m.nkey + m.ncols;
	h.cols = dm_xcalloc(h.ncols, sizeof *h.cols);
	is_bin = dm_xcalloc(h.ncols + 1, sizeof *is_bin);
	for (size_t i = 0; i < m.nkey; i++) {
		h.cols[i].name = dm_xstrdup(m.key_names[i]);
		h.cols[i].type = dm_xstrdup("text");
	}
	for (size_t i = 0; i < m.ncols; i++) {
		h.cols[m.nkey + i].name = dm_xstrdup(m.cols[i].dest);
		h.cols[m.nkey + i].type = dm_xstrdup(m.cols[i].dest_type);
		is_bin[m.nkey + i] = m.cols[i].dest_is_bytea;
	}
	h.nkey = m.nkey;
	h.key = dm_xcalloc(h.nkey, sizeof *h.key);
	for (size_t i = 0; i < h.nkey; i++)
		h.key[i] = i;
	dms_header_classify(&h);
	h.since = since ? dm_xstrdup(since) : NULL;
	h.ranged = key_from != NULL || key_before != NULL;
	h.key_from = key_from ? dm_xstrdup(key_from) : NULL;
	h.key_before = key_before ? dm_xstrdup(key_before) : NULL;
	if (!dest_side && m.change_src >= 0)
		h.change_column = dm_xstrdup(m.src.cols[m.change_src].name);
	if (since != NULL && m.change_src < 0) {
		dm_err("--since needs a change column: name one with change_column in the spec");
		goto out;
	}

	struct copy_job job = { conn, NULL, &h, h.ncols, is_bin, -1, DMS_KEY_BYTES, hashes, NULL, NULL };
	if (!dest_side) {
		const char *tz = sp->source_timezone ? sp->source_timezone : "UTC";
		const char *p[3] = { tz, since ? since : "", overlap ? overlap : "0" };
		if (dmpg_run_params(conn, "SELECT pg_catalog.set_config('dm.source_tz', $1, true),"
		    " pg_catalog.set_config('dm.since', $2, true), pg_catalog.set_config('dm.overlap', $3, true)", 3, p) < 0)
			goto out;
		if (since != NULL) {
			const dmpg_column *cc = &m.src.cols[m.change_src];
			char *q = dmpg_ident(conn, cc->name);
			cond = is_time_type(cc->type) && overlap ?
			    dm_xasprintf("s.%s >= pg_catalog.current_setting('dm.since')::%s"
				" - pg_catalog.current_setting('dm.overlap')::pg_catalog.interval", q, cc->type) :
			    dm_xasprintf("s.%s >= pg_catalog.current_setting('dm.since')::%s", q, cc->type);
			free(q);
		}
		if (range_col != NULL) {
			char *kq = dmmap_col_sql(conn, "s", range_col);
			range = range_cond(conn, kq, range_type, key_from, key_before);
			free(kq);
			if (range == NULL)
				goto out;
			if (cond != NULL) {
				char *both = dm_xasprintf("%s AND %s", cond, range);
				free(cond);
				cond = both;
			} else {
				cond = dm_xstrdup(range);
			}
		}
		sql = dmmap_source_sql(conn, &m, cond, keys != NULL);
		if (m.change_src >= 0) {
			job.nfields = h.ncols + 1;
			job.change_pos = (int)h.ncols;
			job.change_class = dms_type_keyclass(m.src.cols[m.change_src].type);
		}
		fix.m = &m;
		fix.first = m.nkey;
		fix.text = dm_xcalloc(m.ncols + 1, sizeof *fix.text);
		job.fix = fix_uuids;
		job.fix_ctx = &fix;
	} else {
		const char *p[1] = { e->name };
		if (dmpg_run_params(conn, "SELECT pg_catalog.set_config('dm.entity', $1, true)", 1, p) < 0)
			goto out;
		PGresult *res = dmpg_exec(conn, "SELECT pg_catalog.to_regclass('dm.ledger') IS NOT NULL");
		int ledger = res != NULL && dmpg_value(res, 0, 0)[0] == 't';
		dmpg_clear(res);
		if (res == NULL)
			goto out;
		if (range_col != NULL) {
			/* the legacy key column, or the ledger's, cast to the source's type */
			char *expr;
			if (m.legacy_dst >= 0) {
				char *l = dmmap_col_sql(conn, "t", m.dst.cols[m.legacy_dst].name);
				expr = dm_xasprintf("(%s)::%s", l, range_type);
				free(l);
			} else {
				expr = dm_xasprintf("(l.legacy_key[1])::%s", range_type);
			}
			range = range_cond(conn, expr, range_type, key_from, key_before);
			free(expr);
			if (range == NULL)
				goto out;
		}
		sql = dmmap_dest_sql(conn, &m, keys != NULL, range);
		if (!ledger && m.legacy_dst < 0) {
			/* nothing loaded yet: no ledger, so no row of ours in the destination */
			free(sql);
			sql = dm_xstrdup("SELECT 1 WHERE false");
		}
	}
	job.sql = sql;
	wopen = 1;
	if (copy_rows(&job, &w, &wm, &have_wm) < 0)
		goto out;
	if (dmpg_commit(conn) < 0 || dms_writer_finish(&w, have_wm ? dm_buf_cstr(&wm) : NULL) < 0 ||
	    dm_close_output(stdout, "stream") < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	if (wopen)
		dms_writer_free(&w);
	if (built)
		dmmap_free(&m);
	dms_header_free(&h);
	dm_buf_free(&wm);
	dm_buf_free(&fix.name);
	free(fix.text);
	free(sql);
	free(cond);
	free(range);
	free(is_bin);
	return rc;
}

/*
 * Exports a snapshot and holds it: every entity of a run can then read the
 * same instant, so foreign keys read at different times still agree.
 */
static int
hold_snapshot(const char *conninfo, int with_lsn)
{
	PGconn *conn = dmpg_connect(conninfo, "source");
	PGresult *res = NULL;
	int rc = DM_EXIT_FAIL;
	char buf[256];

	if (conn == NULL || dmpg_begin(conn, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL) < 0)
		goto out;
	/*
	 * The position is read after the snapshot was taken (at the start of
	 * this statement): every commit the snapshot sees lies before it.
	 */
	res = dmpg_exec(conn, with_lsn ? "SELECT pg_catalog.pg_export_snapshot(), pg_catalog.pg_current_wal_insert_lsn()"
	    : "SELECT pg_catalog.pg_export_snapshot()");	/* (a standby has no insert position) */
	if (res == NULL)
		goto out;
	if (with_lsn)
		printf("%s %s\n", dmpg_value(res, 0, 0), dmpg_value(res, 0, 1));
	else
		printf("%s\n", dmpg_value(res, 0, 0));
	if (fflush(stdout) != 0) {
		dm_err("cannot write the snapshot id: standard output failed");
		goto out;
	}
	while (fgets(buf, sizeof buf, stdin) != NULL)
		;
	rc = dmpg_commit(conn) < 0 ? DM_EXIT_FAIL : DM_EXIT_OK;
out:
	dmpg_clear(res);
	dmpg_finish(conn);
	return rc;
}

int
main(int argc, char **argv)
{
	const char *db = NULL, *db_env = NULL, *table_arg = NULL, *entity = NULL;
	const char *since = NULL, *overlap = NULL, *change_opt = NULL, *snapshot = NULL;
	const char *columns_opt = NULL, *keys_path = NULL, *key_from = NULL, *key_before = NULL;
	dm_buf keys = { 0 };
	size_t keys_width = 0;
	int hashes = 0;
	int rc = DM_EXIT_FAIL;
	PGconn *conn = NULL;
	dmpg_table t = { 0 };
	dms_header h;
	dms_writer w;
	int writer_open = 0;
	size_t *colidx = NULL;
	int *is_bin = NULL;
	dm_buf sql = { 0 }, watermark = { 0 };
	PGconn *other = NULL;
	dmspec spec = { 0 };
	char *schema = NULL, *name = NULL;
	int have_watermark = 0;

	dm_prog = "dm-extract";
	dms_header_init(&h);
	if (argc > 1)
		dm_std_option(argv[1], usage_text);

	enum { O_DB = 256, O_DBENV, O_TABLE, O_ENTITY, O_SINCE, O_OVERLAP, O_CHANGE, O_HASHES, O_SNAP, O_COLS, O_EXPORT,
		O_OTHER, O_OTHERENV, O_SIDE, O_KEYS, O_WITHLSN, O_KEYFROM, O_KEYBEFORE };
	const char *spec_path = NULL, *other_ci = NULL, *other_env = NULL, *side = "source";
	int export_snapshot = 0, with_lsn = 0;
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "table", required_argument, NULL, O_TABLE },
		{ "entity", required_argument, NULL, O_ENTITY },
		{ "since", required_argument, NULL, O_SINCE },
		{ "overlap", required_argument, NULL, O_OVERLAP },
		{ "change-column", required_argument, NULL, O_CHANGE },
		{ "hashes", no_argument, NULL, O_HASHES },
		{ "snapshot", required_argument, NULL, O_SNAP },
		{ "columns", required_argument, NULL, O_COLS },
		{ "export-snapshot", no_argument, NULL, O_EXPORT },
		{ "spec", required_argument, NULL, 'c' },
		{ "other", required_argument, NULL, O_OTHER },
		{ "other-env", required_argument, NULL, O_OTHERENV },
		{ "side", required_argument, NULL, O_SIDE },
		{ "keys", required_argument, NULL, O_KEYS },
		{ "with-lsn", no_argument, NULL, O_WITHLSN },
		{ "key-from", required_argument, NULL, O_KEYFROM },
		{ "key-before", required_argument, NULL, O_KEYBEFORE },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "c:qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
		case O_TABLE: table_arg = optarg; break;
		case O_ENTITY: entity = optarg; break;
		case O_SINCE: since = optarg; break;
		case O_OVERLAP: overlap = optarg; break;
		case O_CHANGE: change_opt = optarg; break;
		case O_HASHES: hashes = 1; break;
		case O_SNAP: snapshot = optarg; break;
		case O_COLS: columns_opt = optarg; break;
		case O_EXPORT: export_snapshot = 1; break;
		case 'c': spec_path = optarg; break;
		case O_OTHER: other_ci = optarg; break;
		case O_OTHERENV: other_env = optarg; break;
		case O_SIDE: side = optarg; break;
		case O_KEYS: keys_path = optarg; break;
		case O_WITHLSN: with_lsn = 1; break;
		case O_KEYFROM: key_from = optarg; break;
		case O_KEYBEFORE: key_before = optarg; break;
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	if (with_lsn && !export_snapshot)
		usage();
	if (export_snapshot) {
		if (optind != argc || table_arg != NULL || keys_path != NULL || key_from != NULL || key_before != NULL)
			usage();
		const char *ci = dm_conninfo(db, db_env);
		dmpg_application_name = "dm-extract snapshot";
		/* A holder whose connection was lost fails transiently, like every other part. */
		return ci == NULL ? DM_EXIT_USAGE : dmpg_exit_code(hold_snapshot(ci, with_lsn));
	}
	if (spec_path != NULL) {
		/* A spec entity: read in the destination's shape, both catalogs needed. */
		if (optind != argc || entity == NULL || table_arg != NULL || columns_opt != NULL || change_opt != NULL ||
		    (strcmp(side, "source") != 0 && strcmp(side, "dest") != 0))
			usage();
		dm_subject = entity;
		const char *ci = dm_conninfo(db, db_env);
		if (ci == NULL)
			return DM_EXIT_USAGE;
		const char *oci = dm_conninfo(other_ci, other_env);
		if (oci == NULL)
			return DM_EXIT_USAGE;
		if (dmspec_load(spec_path, &spec) < 0)
			return DM_EXIT_FAIL;
		if (keys_path != NULL && (rc = keys_load(keys_path, &keys, &keys_width)) != DM_EXIT_OK)
			goto out;
		signal(SIGPIPE, SIG_IGN);
		int dest_side = strcmp(side, "dest") == 0;
		conn = dmpg_connect(ci, dest_side ? "destination" : "source");
		if (conn != NULL)
			other = dmpg_connect(oci, dest_side ? "source" : "destination");
		rc = conn && other ? extract_mapped(conn, other, &spec, entity, dest_side, since, overlap, snapshot, hashes,
		    keys_path ? &keys : NULL, keys_width, key_from, key_before) : DM_EXIT_FAIL;
		goto out;
	}
	if (optind != argc || table_arg == NULL)
		usage();
	if (overlap != NULL && since == NULL)
		usage();
	dm_subject = entity ? entity : table_arg;
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	if (dm_split_table(table_arg, &schema, &name) < 0) {
		dm_err("--table %s: expected SCHEMA.TABLE", table_arg);
		return DM_EXIT_USAGE;
	}
	if (keys_path != NULL && (rc = keys_load(keys_path, &keys, &keys_width)) != DM_EXIT_OK)
		goto out;
	rc = DM_EXIT_FAIL;
	/* A closed pipe must be an error we report, not a silent death. */
	signal(SIGPIPE, SIG_IGN);

	conn = dmpg_connect(conninfo, "database");
	if (conn == NULL)
		goto out;
	if (dmpg_begin(conn, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", snapshot) < 0)
		goto out;
	if (dmpg_table_load(conn, schema, name, 1, &t) < 0)
		goto out;

	int ncols = choose_columns(&t, columns_opt, &colidx);
	if (ncols == 0)
		dm_err("no column to read: --columns is empty, or every column is generated");
	if (ncols <= 0)
		goto out;
	int change = -1;
	if (change_opt != NULL) {
		change = dmpg_table_column(&t, change_opt);
		if (change < 0) {
			dm_err("column mismatch: no change column \"%s\"", change_opt);
			goto out;
		}
	} else {
		change = t.change_col;
	}
	if (since != NULL && change < 0) {
		dm_err("--since needs a change column: the table has no updated_at or last_update (use --change-column)");
		goto out;
	}

	h.kind = hashes ? DMS_HASHES : DMS_ROWS;
	h.entity = dm_xstrdup(dm_subject);
	h.table = dm_qualify(schema, name);
	h.ncols = (size_t)ncols;
	h.cols = dm_xcalloc(h.ncols, sizeof *h.cols);
	is_bin = dm_xcalloc(h.ncols, sizeof *is_bin);
	int change_pos = -1;
	for (size_t i = 0; i < h.ncols; i++) {
		const dmpg_column *c = &t.cols[colidx[i]];
		h.cols[i].name = dm_xstrdup(c->name);
		h.cols[i].type = dm_xstrdup(c->type);
		is_bin[i] = c->is_bytea;
		if ((int)colidx[i] == change)
			change_pos = (int)i;
	}
	h.nkey = t.nkey;
	h.key = dm_xcalloc(h.nkey, sizeof *h.key);
	for (size_t k = 0; k < t.nkey; k++) {
		size_t pos = h.ncols;
		for (size_t i = 0; i < h.ncols; i++)
			if (colidx[i] == t.key[k])
				pos = i;
		if (pos == h.ncols) {
			dm_err("--columns must include the key column \"%s\"", t.cols[t.key[k]].name);
			goto out;
		}
		h.key[k] = pos;
	}
	dms_header_classify(&h);
	h.since = since ? dm_xstrdup(since) : NULL;
	h.change_column = change >= 0 ? dm_xstrdup(t.cols[change].name) : NULL;
	h.ranged = key_from != NULL || key_before != NULL;
	h.key_from = key_from ? dm_xstrdup(key_from) : NULL;
	h.key_before = key_before ? dm_xstrdup(key_before) : NULL;

	/* Build the query; identifiers are quoted by libpq, the --since value travels as a parameter. */
	dm_buf_puts(&sql, "SELECT ");
	for (size_t i = 0; i < h.ncols; i++) {
		char *q = dmpg_ident(conn, h.cols[i].name);
		dm_buf_printf(&sql, "%s%s", i ? ", " : "", q);
		free(q);
	}
	dm_buf_printf(&sql, " FROM %s%s", t.relkind == 'r' ? "ONLY " : "", t.qualified);
	if (since != NULL) {
		const char *params[2] = { since, overlap ? overlap : "0" };
		if (dmpg_run_params(conn, "SELECT pg_catalog.set_config('dm.since', $1, true),"
		    " pg_catalog.set_config('dm.overlap', $2, true)", 2, params) < 0)
			goto out;
		char *q = dmpg_ident(conn, t.cols[change].name);
		const char *type = t.cols[change].type;
		if (overlap != NULL && is_time_type(type))
			dm_buf_printf(&sql, " WHERE %s >= pg_catalog.current_setting('dm.since')::%s"
			    " - pg_catalog.current_setting('dm.overlap')::pg_catalog.interval", q, type);
		else
			dm_buf_printf(&sql, " WHERE %s >= pg_catalog.current_setting('dm.since')::%s", q, type);
		free(q);
	}
	int where = since != NULL;
	if (key_from != NULL || key_before != NULL) {
		char *q = dmpg_ident(conn, t.cols[t.key[0]].name);
		char *range = range_cond(conn, q, t.cols[t.key[0]].type, key_from, key_before);
		free(q);
		if (range == NULL)
			goto out;
		dm_buf_printf(&sql, " %s %s", where ? "AND" : "WHERE", range);
		free(range);
		where = 1;
	}
	if (keys_path != NULL) {
		if (keys_width != t.nkey) {
			dm_err("--keys: the stream's keys have %zu column(s), the table's key %zu", keys_width, t.nkey);
			rc = DM_EXIT_USAGE;
			goto out;
		}
		if (keys_set(conn, &keys) < 0)
			goto out;
		dm_buf_printf(&sql, " %s (", where ? "AND" : "WHERE");
		for (size_t k = 0; k < t.nkey; k++) {
			char *q = dmpg_ident(conn, t.cols[t.key[k]].name);
			dm_buf_printf(&sql, "%s%s", k ? ", " : "", q);
			free(q);
		}
		dm_buf_puts(&sql, ") IN (SELECT ");
		for (size_t k = 0; k < t.nkey; k++)
			dm_buf_printf(&sql, "%s(dm_keys.k->>%zu)::%s", k ? ", " : "", k, t.cols[t.key[k]].type);
		dm_buf_puts(&sql, DMMAP_KEYS_FROM ")");
	}
	dm_buf_puts(&sql, " ORDER BY ");
	for (size_t k = 0; k < h.nkey; k++) {
		char *q = dmpg_ident(conn, h.cols[h.key[k]].name);
		if (h.keyclass[k] == DMS_KEY_INT)
			dm_buf_printf(&sql, "%s%s", k ? ", " : "", q);
		else
			dm_buf_printf(&sql, "%s(%s)::pg_catalog.text COLLATE pg_catalog.\"C\"", k ? ", " : "", q);
		free(q);
	}
	dms_keyclass change_class = change >= 0 ? dms_type_keyclass(t.cols[change].type) : DMS_KEY_BYTES;
	struct copy_job job = { conn, dm_buf_cstr(&sql), &h, h.ncols, is_bin, change_pos, change_class, hashes, NULL, NULL };
	/* copy_rows opens the writer whatever happens: freed (and flushed) on every path. */
	writer_open = 1;
	if (copy_rows(&job, &w, &watermark, &have_watermark) < 0)
		goto out;
	if (dmpg_commit(conn) < 0)
		goto out;
	/* The trailer goes out only once the whole snapshot was read: readers trust nothing less. */
	if (dms_writer_finish(&w, have_watermark ? dm_buf_cstr(&watermark) : NULL) < 0)
		goto out;
	if (dm_close_output(stdout, "stream") < 0)
		goto out;
	dm_debug("%llu rows", (unsigned long long)w.rows);
	rc = DM_EXIT_OK;
out:
	if (writer_open)
		dms_writer_free(&w);
	dmpg_finish(conn);
	dmpg_finish(other);
	dmspec_free(&spec);
	dmpg_table_free(&t);
	dms_header_free(&h);
	free(colidx);
	free(is_bin);
	free(schema);
	free(name);
	dm_buf_free(&sql);
	dm_buf_free(&watermark);
	dm_buf_free(&keys);
	return dmpg_exit_code(rc);
}
