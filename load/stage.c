/*
 * dm-load: streaming a batch of rows into the staging table (or straight
 * into an empty table) and the set-based upsert from it.
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "copytext.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define COPY_CHUNK (256 * 1024)

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
int
dmload_stage_rows(PGconn *conn, target *tg, uint64_t max_rows)
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
	if (dmload.rejects_path != NULL) {
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
		if (tg->peeked != 0) {
			got = tg->peeked;
			tg->peeked = 0;
		} else {
			got = dms_reader_next(&tg->r);
		}
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

uint64_t
dmload_u64(PGresult *res, int row, int col)
{
	uint64_t v = 0;

	if (dm_parse_u64(dmpg_value(res, row, col), &v) < 0)
		v = 0;
	return v;
}

/* Upserts the staged rows of all targets in one statement (one for a cycle group). */
int
dmload_apply_upserts(PGconn *conn, target *tgs, int ntg)
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
		ins[i] = dmload_u64(res, 0, 2 * i);
		upd[i] = dmload_u64(res, 0, 2 * i + 1);
	}
	dmpg_clear(res);
	for (int i = 0; i < ntg; i++) {
		const char *p[1] = { tgs[i].ledger_entity };
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

