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
 * and foreign keys, copies, and rebuilds them (dmload_load_bulk).
 */
#define _POSIX_C_SOURCE 200809L
#include "load.h"
#include "state.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: dm-load (--db CONNINFO | --db-env VAR) --table SCHEMA.TABLE [--entity NAME]\n"
    "               [--checkpoint NAME] [--batch-rows N] [--dry-run] [--defer-deletes] [--run-id ID] [-q] [-v] [FILE]\n"
    "       dm-load (--db CONNINFO | --db-env VAR) --table T1 --table T2 ... FILE1 FILE2 ...\n"
    "       dm-load (--db CONNINFO | --db-env VAR) --table T [--table T2 ...] --apply-deletes\n"
    "       dm-load (--db CONNINFO | --db-env VAR) --follow SLOT --lsn LSN [--commit-time TS]\n"
    "               --table T1 [--table T2 ...] FILE1 [FILE2 ...]\n"
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
    "  --checkpoint NAME  one --table only: the name of the checkpoint, lease, run\n"
    "                     record and parked deletes (default: the entity); a range\n"
    "                     of the entity's keys (dm-migrate --partition) has its own\n"
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
    "  --follow SLOT      load every stream in one transaction that also records in\n"
    "                     dm.follow that slot SLOT's changes are applied up to --lsn\n"
    "  --lsn LSN          the source position (X/X) the streams bring the tables to\n"
    "  --commit-time TS   the commit time of the last change at LSN (for the lag)\n"
    "  --from LSN         the position the batch starts at: refused (exit 6) if the\n"
    "                     destination is elsewhere (another follower moved it)\n"
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

struct dmload_settings dmload = { .max_delete_pct = 10, .lease_seconds = 120, .max_rejects = UINT64_MAX };

static void
now_text(char *buf, size_t n)
{
	time_t t = time(NULL);
	struct tm tm;

	gmtime_r(&t, &tm);
	strftime(buf, n, "%Y-%m-%d %H:%M:%S+00", &tm);
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
	snprintf(c[5], sizeof c[5], "%llu", (unsigned long long)dmload.rejected);
	/* a follower's counts are added once, by the batch's final record (not its progress) */
	if (dmload.follow_slot != NULL && (strcmp(outcome, "failed") == 0 || strcmp(outcome, "running") == 0))
		for (int i = 0; i < 5; i++)
			snprintf(c[i], sizeof c[i], "0");
	const char *q[12] = { dmload.run_id, tg->entity, dmload.started_at, outcome, c[0], c[1], c[2], c[3], c[4], c[5], error,
		dmload.follow_slot ? "t" : "f" };

	/*
	 * A follower's batches are one run, a dm-load each: their counts add up
	 * (a failed batch's were rolled back with it, and a batch's progress record
	 * comes before its final one: both add zeros).
	 */
	return dmpg_run_params(conn,
	    "INSERT INTO dm.run AS r (run_id, entity, started_at, finished_at, outcome, inserted, updated, deleted,"
	    " unchanged, batches, rejected, error, progress_at)"
	    " VALUES ($1, $2, $3::pg_catalog.timestamptz,"
	    " CASE WHEN $4 = 'running' THEN NULL ELSE pg_catalog.clock_timestamp() END, $4,"
	    " $5::pg_catalog.int8, $6::pg_catalog.int8, $7::pg_catalog.int8, $8::pg_catalog.int8, $9::pg_catalog.int8,"
	    " $10::pg_catalog.int8, $11, pg_catalog.clock_timestamp())"
	    " ON CONFLICT (run_id, entity) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = EXCLUDED.outcome,"
	    " inserted = CASE WHEN $12::pg_catalog.bool THEN r.inserted + EXCLUDED.inserted ELSE EXCLUDED.inserted END,"
	    " updated = CASE WHEN $12::pg_catalog.bool THEN r.updated + EXCLUDED.updated ELSE EXCLUDED.updated END,"
	    " deleted = CASE WHEN $12::pg_catalog.bool THEN r.deleted + EXCLUDED.deleted ELSE EXCLUDED.deleted END,"
	    " unchanged = CASE WHEN $12::pg_catalog.bool THEN r.unchanged + EXCLUDED.unchanged ELSE EXCLUDED.unchanged END,"
	    " batches = CASE WHEN $12::pg_catalog.bool THEN r.batches + EXCLUDED.batches ELSE EXCLUDED.batches END,"
	    " rejected = EXCLUDED.rejected, error = EXCLUDED.error, progress_at = EXCLUDED.progress_at",
	    12, q);
}

int
dmload_record_progress(PGconn *conn, target *tg, uint64_t rows)
{
	char nrows[32];
	snprintf(nrows, sizeof nrows, "%llu", (unsigned long long)rows);
	const char *params[4] = { tg->entity, dmload.run_id, nrows, tg->lastkey.len ? dm_buf_cstr(&tg->lastkey) : NULL };

	if (!dmload.dry_run && record_run(conn, tg, "running", NULL) < 0)
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
int
dmload_finish_stream(PGconn *conn, target *tgs, int ntg)
{
	if (!dmload.defer_deletes) {
		if (dmload_apply_deletes(conn, tgs, ntg, 0) < 0)
			return -1;
	} else {
		for (int i = 0; i < ntg; i++) {
			const char *p[2] = { tgs[i].entity, dmload.run_id };
			if (dmpg_run_params(conn, "UPDATE dm.pending_delete SET ready = true WHERE entity = $1 AND run_id = $2", 2, p) < 0)
				return -1;
		}
	}
	for (int i = 0; i < ntg; i++) {
		target *tg = &tgs[i];
		/* a follower's keyed batch says nothing of the change column's watermark */
		const char *p[4] = { tg->entity, dmload.follow_slot ? NULL : tg->r.trailer.watermark, tg->r.hdr.change_column,
			dmload.run_id };
		/*
		 * With rows rejected the checkpoint stays incomplete: the next run must
		 * read them again rather than move past them.
		 */
		if (dmload.rejected == 0 && dmpg_run_params(conn,
		    "UPDATE dm.checkpoint SET watermark = COALESCE($2, watermark),"
		    " change_column = COALESCE($3, change_column), run_id = $4,"
		    " complete = true, updated_at = pg_catalog.now() WHERE entity = $1", 4, p) < 0)
			return -1;
		tg->batches++;	/* this transaction's batch, counted before it commits */
		int r = record_run(conn, tg, dmload.rejected ? "rejected" : dmload.defer_deletes ? "loaded" : "ok", NULL);
		tg->batches--;
		if (r < 0)
			return -1;
	}
	return 0;
}

int
dmload_end(PGconn *conn)
{
	if (dmload.dry_run)
		return 0;	/* the single dry-run transaction is rolled back at the end */
	dmload.in_txn = 0;
	return dmpg_commit(conn);
}

int
dmload_begin(PGconn *conn)
{
	if (dmload.dry_run && dmload.in_txn)
		return 0;
	if (dmpg_begin(conn, "", NULL) < 0)
		return -1;
	dmload.in_txn = 1;
	return 0;
}

/* Forgets deletes parked by earlier runs that never saw their trailer. */
static int
drop_stale_pending(PGconn *conn, target *tgs, int ntg)
{
	if (dmload_begin(conn) < 0)
		return -1;
	for (int i = 0; i < ntg; i++) {
		const char *p[2] = { tgs[i].entity, dmload.run_id };
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
	return dmload_end(conn);
}

/* One table, many transactions of batch_rows rows. */
static int
load_batched(PGconn *conn, target *tg, uint64_t batch_rows)
{
	/*
	 * A stream without a row (an incremental read with nothing new, a
	 * comparison without a difference) needs one short transaction, for the
	 * checkpoint and the run's record: no staging table, no trigger switched
	 * off and on, so no lock on the table. Otherwise the first message read
	 * here is the first the staging takes.
	 */
	int first = dms_reader_next(&tg->r);
	if (first < 0)
		return DM_EXIT_STREAM;
	if (first == 0) {
		if (dmload_begin(conn) < 0)
			return DM_EXIT_FAIL;
		if (dmstate_lease_renew(conn, tg->entity, dmload.lease_owner, dmload.lease_seconds) < 0)
			return DM_EXIT_LOCKED;
		tg->staged_rows = 0;
		if (dmload_record_progress(conn, tg, 0) < 0 || dmload_finish_stream(conn, tg, 1) < 0 || dmload_end(conn) < 0)
			return DM_EXIT_FAIL;
		tg->batches++;
		return DM_EXIT_OK;
	}
	tg->peeked = first;
	for (;;) {
		if (dmload_begin(conn) < 0)
			return DM_EXIT_FAIL;
		if (dmstate_lease_renew(conn, tg->entity, dmload.lease_owner, dmload.lease_seconds) < 0)
			return DM_EXIT_LOCKED;
		if (dmload_triggers_switch(conn, tg, 1, 1) < 0 || dmpg_run(conn, "SAVEPOINT dm_batch") < 0)
			return DM_EXIT_FAIL;
		uint64_t before = tg->ins + tg->upd, parked = 0;
		if (dmload.rejects_path != NULL)
			dmpg_quiet_errors(1);
		int got = dmload_stage_rows(conn, tg, batch_rows);
		int refused = got == -2 || got == -4;
		if (tg->direct) {
			if (got == -3)
				return DM_EXIT_STREAM;
			if (got < 0)
				return DM_EXIT_FAIL;
			tg->ins += tg->staged_rows;
			if (dmload_record_progress(conn, tg, tg->staged_rows) < 0 || (got == 0 && dmload_finish_stream(conn, tg, 1) < 0) ||
			    dmload_triggers_switch(conn, tg, 1, 0) < 0 || dmload_end(conn) < 0)
				return DM_EXIT_FAIL;
			tg->batches++;
			if (got == 0)
				return DM_EXIT_OK;
			continue;
		}
		if (!refused && got >= 0 && dmload_apply_upserts(conn, tg, 1) < 0)
			refused = 1;
		dmpg_quiet_errors(0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got == -1)
			return DM_EXIT_FAIL;
		if (refused) {
			if (dmload.rejects_path == NULL || !dmload_is_data_error()) {
				if (dmload.rejects_path != NULL)
					dm_err("%s", dmpg_last_error());
				return DM_EXIT_FAIL;
			}
			got = got == -4 || got == 1 ? 1 : 0;
			if (dmpg_run(conn, "ROLLBACK TO SAVEPOINT dm_batch") < 0)
				return DM_EXIT_FAIL;
			int rc = dmload_replay_rows(conn, tg);
			if (rc != DM_EXIT_OK)
				return rc;
		} else {
			if (dmload_park_deletes(conn, tg, &parked) < 0)
				return DM_EXIT_FAIL;
			tg->same += tg->staged_rows - parked - (tg->ins + tg->upd - before);
		}
		if (dmpg_run(conn, tg->drop_stage_sql) < 0)
			return DM_EXIT_FAIL;
		if (dmload_record_progress(conn, tg, tg->staged_rows) < 0)
			return DM_EXIT_FAIL;
		if (got == 0 && dmload_finish_stream(conn, tg, 1) < 0)
			return DM_EXIT_FAIL;
		if (dmload_triggers_switch(conn, tg, 1, 0) < 0 || dmload_end(conn) < 0)
			return DM_EXIT_FAIL;
		tg->batches++;
		dm_debug("batch %llu: %llu rows", (unsigned long long)tg->batches, (unsigned long long)tg->staged_rows);
		if (got == 0)
			return DM_EXIT_OK;
	}
}

/* A position as pg_lsn's input takes it: hex digits, a slash, hex digits. */
static int
lsn_valid(const char *s)
{
	size_t hi = strspn(s, "0123456789abcdefABCDEF");
	if (hi == 0 || hi > 8 || s[hi] != '/')
		return 0;
	size_t lo = strspn(s + hi + 1, "0123456789abcdefABCDEF");
	return lo > 0 && lo <= 8 && s[hi + 1 + lo] == '\0';
}

/*
 * --follow: in the transaction that applies the rows, the slot's applied
 * position; it only moves forward, so a batch applied again after a crash
 * (its commit lost on the way back) never takes it back.
 */
static int
record_follow(PGconn *conn)
{
	if (dmload.follow_slot == NULL)
		return 0;
	const char *p[3] = { dmload.follow_slot, dmload.follow_lsn,
		dmload.follow_commit_time ? dmload.follow_commit_time : "" };
	return dmpg_run_params(conn,
	    "INSERT INTO dm.follow AS f (slot, applied_lsn, commit_time, applied_at)"
	    " VALUES ($1, $2::pg_catalog.pg_lsn, NULLIF($3::pg_catalog.text, '')::pg_catalog.timestamptz, pg_catalog.now())"
	    " ON CONFLICT (slot) DO UPDATE SET applied_at = EXCLUDED.applied_at,"
	    " commit_time = CASE WHEN EXCLUDED.applied_lsn >= f.applied_lsn THEN EXCLUDED.commit_time ELSE f.commit_time END,"
	    " applied_lsn = GREATEST(f.applied_lsn, EXCLUDED.applied_lsn)", 3, p);
}

/*
 * --follow --from: the batch starts where the destination is, or it is stale
 * (a follower killed mid-batch leaves programs that run on; a newer batch
 * may have landed meanwhile) and must not apply: the slot's row stays
 * locked until the batch commits, so two batches cannot both pass. 0, -1
 * (printed), or -2: stale.
 */
static int
check_follow_from(PGconn *conn)
{
	if (dmload.follow_slot == NULL || dmload.follow_from == NULL)
		return 0;
	const char *p[2] = { dmload.follow_slot, dmload.follow_from };
	PGresult *res = dmpg_exec_params(conn, "SELECT applied_lsn::pg_catalog.text, applied_lsn = $2::pg_catalog.pg_lsn"
	    " FROM dm.follow WHERE slot = $1 FOR UPDATE", 2, p);
	if (res == NULL)
		return -1;
	int ok = dmpg_nrows(res) == 1 && dmpg_value(res, 0, 1)[0] == 't';
	if (!ok)
		dm_err("slot %s: the destination is at %s, not at %s where this batch starts (another follower moved"
		    " it): the batch is stale and is not applied", dmload.follow_slot,
		    dmpg_nrows(res) == 1 ? dmpg_value(res, 0, 0) : "no position", dmload.follow_from);
	dmpg_clear(res);
	return ok ? 0 : -2;
}

/*
 * --follow without --table: a batch that changed no row of ours (or the
 * start of following, after the copy) still moves the position.
 */
static int
record_position_only(const char *db, const char *db_env)
{
	if (dmload.follow_lsn == NULL || dmload.dry_run || dmload.defer_deletes)
		usage();
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	if (!lsn_valid(dmload.follow_lsn)) {
		dm_err("--lsn %s: expected a position as PostgreSQL prints it, such as 0/16B3748", dmload.follow_lsn);
		return DM_EXIT_USAGE;
	}
	int rc = DM_EXIT_FAIL;
	PGconn *conn = dmpg_connect(conninfo, "destination");
	int stale = 0;
	if (conn != NULL && dmstate_ensure(conn) == 0 && dmpg_begin(conn, "", NULL) == 0 &&
	    (stale = check_follow_from(conn)) == 0 && record_follow(conn) == 0 && dmpg_commit(conn) == 0)
		rc = DM_EXIT_OK;
	if (stale == -2)
		rc = DM_EXIT_LOCKED;
	dmpg_finish(conn);
	return dmpg_exit_code(rc);
}

/*
 * Several streams in one transaction and one statement: a foreign-key
 * cycle, or a follower's batch (--follow), whose position is recorded in
 * the same transaction.
 */
static int
load_group(PGconn *conn, target *tgs, int ntg)
{
	if (dmload_begin(conn) < 0)
		return DM_EXIT_FAIL;
	int stale = check_follow_from(conn);
	if (stale < 0)
		return stale == -2 ? DM_EXIT_LOCKED : DM_EXIT_FAIL;
	if (dmload_triggers_switch(conn, tgs, ntg, 1) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, dmload.lease_owner, dmload.lease_seconds) < 0)
			return DM_EXIT_LOCKED;
	for (int i = 0; i < ntg; i++) {
		int got = dmload_stage_rows(conn, &tgs[i], 0);
		if (got == -3)
			return DM_EXIT_STREAM;
		if (got < 0)
			return DM_EXIT_FAIL;
	}
	uint64_t before[MAX_TARGETS];
	for (int i = 0; i < ntg; i++)
		before[i] = tgs[i].ins + tgs[i].upd;
	if (dmload_apply_upserts(conn, tgs, ntg) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		uint64_t parked = 0;
		if (dmload_park_deletes(conn, &tgs[i], &parked) < 0 || dmload_record_progress(conn, &tgs[i], tgs[i].staged_rows) < 0)
			return DM_EXIT_FAIL;
		tgs[i].same += tgs[i].staged_rows - parked - (tgs[i].ins + tgs[i].upd - before[i]);
	}
	if (dmload_finish_stream(conn, tgs, ntg) < 0 || dmload_triggers_switch(conn, tgs, ntg, 0) < 0 ||
	    record_follow(conn) < 0 || dmload_end(conn) < 0)
		return DM_EXIT_FAIL;
	return DM_EXIT_OK;
}

/* --apply-deletes: the parked deletes of a finished run, children before parents. */
static int
apply_parked(PGconn *conn, target *tgs, int ntg)
{
	if (dmload_begin(conn) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++)
		if (dmstate_lease_renew(conn, tgs[i].entity, dmload.lease_owner, dmload.lease_seconds) < 0)
			return DM_EXIT_LOCKED;
	for (int i = 0; i < ntg; i++) {
		/* Deleting nothing and saying ok would hide that the source's deletes never arrived. */
		const char *p[2] = { dmload.run_id, tgs[i].entity };
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
	if (dmload_triggers_switch(conn, tgs, ntg, 1) < 0)
		return DM_EXIT_FAIL;
	int del = dmload_apply_deletes(conn, tgs, ntg, 1);
	if (del < 0)
		return del == -2 ? DM_EXIT_LOCKED : DM_EXIT_FAIL;
	if (dmload_triggers_switch(conn, tgs, ntg, 0) < 0)
		return DM_EXIT_FAIL;
	for (int i = 0; i < ntg; i++) {
		char n[32];
		snprintf(n, sizeof n, "%llu", (unsigned long long)tgs[i].del);
		const char *p[4] = { dmload.run_id, tgs[i].entity, dmload.started_at, n };
		if (dmpg_run_params(conn,
		    "INSERT INTO dm.run AS r (run_id, entity, started_at, finished_at, outcome, deleted)"
		    " VALUES ($1, $2, $3::pg_catalog.timestamptz, pg_catalog.clock_timestamp(), 'ok', $4::pg_catalog.int8)"
		    " ON CONFLICT (run_id, entity) DO UPDATE SET finished_at = EXCLUDED.finished_at, outcome = 'ok',"
		    " deleted = r.deleted + EXCLUDED.deleted", 4, p) < 0)
			return DM_EXIT_FAIL;
	}
	return dmload_end(conn) < 0 ? DM_EXIT_FAIL : DM_EXIT_OK;
}

int
main(int argc, char **argv)
{
	const char *db = NULL, *db_env = NULL, *entity_opt = NULL, *checkpoint_opt = NULL;
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
		O_FORCE, O_MAXDEL, O_REJECTS, O_MAXREJ, O_WAIT, O_NOTRIG, O_NOBULK, O_FOLLOW, O_LSN, O_CTIME, O_FROM, O_CKPT };
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
		{ "follow", required_argument, NULL, O_FOLLOW },
		{ "lsn", required_argument, NULL, O_LSN },
		{ "commit-time", required_argument, NULL, O_CTIME },
		{ "from", required_argument, NULL, O_FROM },
		{ "checkpoint", required_argument, NULL, O_CKPT },
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
		case O_DRY: dmload.dry_run = 1; break;
		case O_DEFER: dmload.defer_deletes = 1; break;
		case O_APPLY: apply_only = 1; break;
		case O_RUNID: dmload.run_id = optarg; break;
		case O_FORCE: dmload.force = 1; break;
		case O_NOTRIG: dmload.disable_triggers = 1; break;
		case O_NOBULK: dmload.no_bulk = 1; break;
		case O_FOLLOW: dmload.follow_slot = optarg; break;
		case O_LSN: dmload.follow_lsn = optarg; break;
		case O_CTIME: dmload.follow_commit_time = optarg; break;
		case O_FROM: dmload.follow_from = optarg; break;
		case O_CKPT: checkpoint_opt = optarg; break;
		case O_REJECTS: dmload.rejects_path = optarg; break;
		case O_MAXDEL:
		case O_MAXREJ:
		case O_WAIT: {
			uint64_t v;
			if (dm_parse_u64(optarg, &v) < 0 || (ch == O_MAXDEL && v > 100)) {
				dm_err("%s: expected a whole number%s", optarg, ch == O_MAXDEL ? " from 0 to 100" : "");
				return DM_EXIT_USAGE;
			}
			if (ch == O_MAXDEL)
				dmload.max_delete_pct = v;
			else if (ch == O_MAXREJ)
				dmload.max_rejects = v;
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
	if (ntg == 0 && dmload.follow_slot != NULL && nfiles == 0 && nentity == 0)
		return record_position_only(db, db_env);
	if (ntg == 0)
		usage();
	if (apply_only ? nfiles != 0 : (ntg == 1 ? nfiles > 1 : nfiles != ntg))
		usage();
	if ((dmload.follow_slot == NULL) != (dmload.follow_lsn == NULL) ||
	    ((dmload.follow_commit_time != NULL || dmload.follow_from != NULL) && dmload.follow_slot == NULL))
		usage();
	if (dmload.follow_from != NULL && !lsn_valid(dmload.follow_from)) {
		dm_err("--from %s: expected a position as PostgreSQL prints it, such as 0/16B3748", dmload.follow_from);
		return DM_EXIT_USAGE;
	}
	if (dmload.follow_slot != NULL) {
		if (apply_only || dmload.defer_deletes || dmload.dry_run || dmload.rejects_path != NULL || nfiles != ntg)
			usage();
		/* its deletes are keys the source lost, read again at one snapshot: no share to guard */
		dmload.force = 1;
		if (!lsn_valid(dmload.follow_lsn)) {
			dm_err("--lsn %s: expected a position as PostgreSQL prints it, such as 0/16B3748", dmload.follow_lsn);
			return DM_EXIT_USAGE;
		}
	}
	if (checkpoint_opt != NULL && (ntg != 1 || dmload.follow_slot != NULL || *checkpoint_opt == '\0'))
		usage();
	if (nentity != 0 && nentity != ntg) {
		dm_err("give one --entity per --table, in the same order");
		return DM_EXIT_USAGE;
	}
	entity_opt = nentity ? entity_opts[0] : NULL;
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	if (dmload.run_id == NULL) {
		snprintf(run_id_buf, sizeof run_id_buf, "%lld-%ld", (long long)time(NULL), (long)getpid());
		dmload.run_id = run_id_buf;
	}
	now_text(dmload.started_at, sizeof dmload.started_at);
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
		tg->ledger_entity = dm_xstrdup(tg->entity);
		if (checkpoint_opt != NULL) {
			free(tg->entity);
			tg->entity = dm_xstrdup(checkpoint_opt);
		}
		int p = dmload_target_prepare(conn, tg, i, !apply_only);
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
	snprintf(dmload.lease_owner, sizeof dmload.lease_owner, "%s/%ld", dmload.run_id, (long)getpid());
	for (int i = 0; i < ntg; i++) {
		struct timespec start;
		clock_gettime(CLOCK_MONOTONIC, &start);
		for (int polls = 0;; polls++) {
			char *holder = NULL;
			if (dmpg_begin(conn, "", NULL) < 0)
				goto out;
			int got = dmstate_lease_take(conn, tgs[i].entity, dmload.lease_owner, dmload.lease_seconds, &holder);
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
		int direct_ok = !dmload.dry_run && dmload.rejects_path == NULL && dmload.follow_slot == NULL;
		int bulk = !dmload.no_bulk, fallback = 1;
		for (int i = 0; i < ntg; i++)
			direct_ok &= !tgs[i].mapped;
		if (direct_ok && dmload_use_direct(conn, tgs, ntg) < 0)
			goto out;
		for (int i = 0; i < ntg; i++)
			bulk &= direct_ok && tgs[i].bulk_ok;
		if (bulk)
			rc = dmload_load_bulk(conn, tgs, ntg, &fallback);
		if (fallback)
			rc = ntg == 1 && dmload.follow_slot == NULL ? load_batched(conn, &tgs[0], batch_rows)
			    : load_group(conn, tgs, ntg);
	}
	if (dmload.dry_run)
		dmpg_rollback(conn);
	if (rc == DM_EXIT_OK) {
		for (int i = 0; i < ntg; i++) {
			const char *saved = dm_subject;
			dm_subject = tgs[i].entity;
			dm_info("%sinsert=%llu update=%llu delete=%llu unchanged=%llu", dmload.dry_run ? "dry run: " : "",
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
		for (int i = 0; i < ntg && !dmload.dry_run && !apply_only; i++)
			if (dmpg_begin(conn, "", NULL) == 0) {
				if (record_run(conn, &tgs[i], "failed", err) == 0)
					dmpg_commit(conn);
				else
					dmpg_rollback(conn);
			}
	}
	if (dmload_rejects_close() < 0)
		rc = DM_EXIT_FAIL;
	if (rc == DM_EXIT_OK && dmload.rejected > 0) {
		dm_err("%llu row(s) rejected: see %s (fix them, then replay it with dm-load)",
		    (unsigned long long)dmload.rejected, dmload.rejects_path);
		rc = DM_EXIT_REJECT;
	}
out:
	/* Released on the way out whatever happened; a dead process's lease is taken over anyway. */
	for (int i = 0; i < ntg && conn != NULL; i++)
		if (tgs[i].leased && dmpg_begin(conn, "", NULL) == 0) {
			if (dmstate_lease_release(conn, tgs[i].entity, dmload.lease_owner) == 0)
				dmpg_commit(conn);
			else
				dmpg_rollback(conn);
		}
	dmpg_finish(conn);
	for (int i = 0; i < ntg; i++)
		dmload_target_free(&tgs[i]);
	return dmpg_exit_code(rc);
}
