/*
 * dm-load --rejects: a refused batch applied again row by row, the refused
 * rows written to a changes stream.
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "copytext.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>

static FILE *rejects_fp;
static dms_writer rejects_w;
static int rejects_open;

int
dmload_is_data_error(void)
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
		rejects_fp = fopen(dmload.rejects_path, "wb");
		if (rejects_fp == NULL) {
			dm_err("cannot create %s: %s", dmload.rejects_path, strerror(errno));
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
	dmload.rejected++;
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
int
dmload_replay_rows(PGconn *conn, target *tg)
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
		    dmload_apply_upserts(conn, tg, 1) < 0 || dmload_park_deletes(conn, tg, &parked) < 0;
		dmpg_quiet_errors(0);
		if (bad) {
			if (!dmload_is_data_error()) {
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
			if (dmload.rejected > dmload.max_rejects) {
				dm_err("more than %llu rows rejected (--max-rejects): stopping", (unsigned long long)dmload.max_rejects);
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

int
dmload_rejects_close(void)
{
	int rc = 0;

	if (!rejects_open)
		return 0;
	if (dms_writer_finish(&rejects_w, NULL) < 0 || dm_close_output(rejects_fp, dmload.rejects_path) < 0)
		rc = -1;
	dms_writer_free(&rejects_w);
	rejects_open = 0;
	return rc;
}
