/* report.c - status and run reports from the dm schema (report.h). */
#define _DEFAULT_SOURCE /* timegm */
#include "report.h"

#include <time.h>
#include <stdlib.h>
#include <string.h>

/*
 * One dm.run row as a report object; the row is "l", with the columns live,
 * secs and nrows added by the RUNS CTE below. A run's seconds end at its last
 * batch while it runs (progress_at), at finished_at once it ended.
 */
#define RUN_JSON(l) RUN_JSON_WITH(l, "")
#define RUN_JSON_WITH(l, first)                                                                              \
	"json_build_object(" first "'run', " l ".run_id, 'started_at', " l ".started_at::text,"                        \
	" 'finished_at', " l ".finished_at::text, 'outcome', " l ".outcome,"                                  \
	" 'live', CASE WHEN " l ".outcome = 'running' THEN " l ".live END,"                                    \
	" 'inserted', " l ".inserted, 'updated', " l ".updated, 'deleted', " l ".deleted,"                     \
	" 'unchanged', " l ".unchanged, 'rejected', " l ".rejected, 'batches', " l ".batches,"                 \
	" 'progress_at', " l ".progress_at::text, 'seconds', round(" l ".secs, 1),"                           \
	" 'rows_per_second', CASE WHEN " l ".secs > 0 THEN round(" l ".nrows / " l ".secs)::bigint END,"       \
	" 'error', " l ".error)"

/*
 * dm.run rows ($1: the entities wanted, NULL for all; $2: the run, NULL for all) with: live, a 'running'
 * row whose dm-load still holds the entity's lease (owner RUN_ID/PID, not
 * expired; a 'running' row without one was interrupted); secs; nrows.
 */
#define RUNS_CTE                                                                                             \
	" lease AS (SELECT entity, owner, expires, expires > clock_timestamp() AS live FROM dm.lease"          \
	"   WHERE left(entity, 4) <> 'run:'),"                                                                  \
	" r0 AS (SELECT r.*, r.outcome = 'running' AND EXISTS (SELECT 1 FROM lease l WHERE l.entity = r.entity" \
	"     AND l.live AND left(l.owner, length(r.run_id) + 1) = r.run_id || '/') AS live,"                   \
	"   CASE WHEN r.outcome = 'running' THEN r.progress_at ELSE r.finished_at END AS ended"                 \
	"   FROM dm.run r WHERE ($1::text[] IS NULL OR r.entity = ANY ($1::text[])) AND ($2::text IS NULL OR r.run_id = $2::text)),"                                                                            \
	" runs AS (SELECT r0.*, CASE WHEN ended >= started_at THEN extract(epoch FROM ended - started_at) END AS secs," \
	"   inserted + updated + deleted + unchanged AS nrows FROM r0)"

static const char status_sql[] =
    "WITH" RUNS_CTE ","
    " last AS (SELECT DISTINCT ON (entity) * FROM runs"
    "   ORDER BY entity, started_at DESC, progress_at DESC NULLS LAST, run_id DESC),"
    " ck AS (SELECT * FROM dm.checkpoint WHERE $1::text[] IS NULL OR entity = ANY ($1::text[])),"
    " ents AS (SELECT entity FROM ck UNION SELECT entity FROM runs),"
    " now AS (SELECT clock_timestamp() AS t),"
    " live AS (SELECT * FROM runs WHERE live),"
    /* A lease taken by a load that has not finished its first batch has no dm.run row yet. */
    " starting AS (SELECT * FROM lease l WHERE l.live AND ($1::text[] IS NULL OR l.entity = ANY ($1::text[]))"
    "   AND NOT EXISTS (SELECT 1 FROM live WHERE live.entity = l.entity))"
    " SELECT json_build_object('command', 'status',"
    "  'now', round(extract(epoch FROM (SELECT t FROM now)), 1),"
    "  'entities', coalesce((SELECT json_agg(json_build_object('entity', e.entity,"
    "     'checkpoint', (SELECT json_build_object('watermark', ck.watermark, 'updated_at', ck.updated_at::text,"
    "        'state', CASE WHEN ck.complete THEN 'complete' ELSE 'partial' END, 'run', ck.run_id)"
    "        FROM ck WHERE ck.entity = e.entity),"
    "     'last_run', (SELECT " RUN_JSON("l") " FROM last l WHERE l.entity = e.entity))"
    "     ORDER BY e.entity COLLATE \"C\") FROM ents e), '[]'),"
    "  'in_progress', coalesce((SELECT json_agg(p ORDER BY p.o, p.entity COLLATE \"C\") FROM ("
    "     SELECT 0 AS o, r.entity, r.run_id AS run, r.started_at::text AS started_at, r.batches, r.inserted, r.updated,"
    "       r.deleted, r.unchanged, r.rejected, r.progress_at::text AS progress_at,"
    "       round(extract(epoch FROM (SELECT t FROM now) - r.started_at), 1) AS seconds,"
    "       CASE WHEN r.secs > 0 THEN round(r.nrows / r.secs)::bigint END AS rows_per_second,"
    "       (SELECT l.expires::text FROM lease l WHERE l.entity = r.entity) AS lease_expires"
    "     FROM live r"
    "     UNION ALL"
    "     SELECT 1, s.entity, regexp_replace(s.owner, '/[0-9]+$', ''), NULL, 0, 0, 0, 0, 0, 0, NULL, NULL, NULL,"
    "       s.expires::text FROM starting s) p), '[]'),"
    /* followers (dm-migrate follow): how far behind the source, as the last batch saw it */
    "  'follow', coalesce((SELECT json_agg(json_build_object('slot', f.slot, 'applied_lsn', f.applied_lsn::text,"
    "     'commit_time', f.commit_time::text, 'applied_at', f.applied_at::text, 'source_lsn', f.source_lsn::text,"
    "     'synced_at', f.synced_at::text,"
    "     'lag_seconds', round(extract(epoch FROM (SELECT t FROM now) - coalesce(f.synced_at, f.applied_at)), 1),"
    "     'lag_bytes', greatest(pg_wal_lsn_diff(f.source_lsn, f.applied_lsn), 0)::bigint,"
    "     'retained_bytes', pg_wal_lsn_diff(f.source_lsn, f.restart_lsn)::bigint,"
    "     'full_entities', coalesce(to_json(f.full_entities), '[]'::json)) ORDER BY f.slot) FROM dm.follow f), '[]'))::text";

static const char runs_sql[] =
    "WITH" RUNS_CTE ","
    " grouped AS (SELECT run_id, min(started_at) AS started_at,"
    "   CASE WHEN bool_or(outcome = 'running') THEN NULL ELSE max(finished_at) END AS finished_at,"
    "   CASE WHEN bool_or(live) THEN 'running'"
    "     WHEN bool_and(outcome = 'ok') THEN 'succeeded'"
    "     WHEN bool_or(outcome = 'running') THEN 'interrupted' ELSE 'failed' END AS state,"
    "   count(*) AS entities, sum(inserted) AS inserted, sum(updated) AS updated, sum(deleted) AS deleted,"
    "   sum(unchanged) AS unchanged, sum(rejected) AS rejected, sum(nrows) AS nrows,"
    "   extract(epoch FROM coalesce(max(finished_at), max(progress_at)) - min(started_at)) AS secs"
    "   FROM runs GROUP BY run_id)"
    " SELECT coalesce(json_agg(json_build_object('run', g.run_id, 'started_at', g.started_at::text,"
    "   'finished_at', g.finished_at::text, 'state', g.state, 'entities', g.entities,"
    "   'inserted', g.inserted, 'updated', g.updated, 'deleted', g.deleted, 'unchanged', g.unchanged,"
    "   'rejected', g.rejected, 'seconds', round(g.secs, 1),"
    "   'rows_per_second', CASE WHEN g.secs > 0 THEN round(g.nrows / g.secs)::bigint END)"
    "   ORDER BY g.started_at DESC, g.run_id DESC), '[]')::text"
    " FROM (SELECT * FROM grouped WHERE $3::text IS NULL"
    "   OR (started_at, run_id) < (SELECT min(started_at), $3::text FROM dm.run WHERE run_id = $3::text)"
    "   ORDER BY started_at DESC, run_id DESC LIMIT $4::int) g";

static const char run_sql[] =
    "WITH" RUNS_CTE
    " SELECT coalesce((SELECT json_agg(" RUN_JSON_WITH("l", "'entity', l.entity, ") 
    "   ORDER BY l.started_at, l.entity) FROM runs l), 'null')::text";

/* Per entity, the figures of dm-serve's /metrics (see dmreport_metrics), over the runs of RUNS_CTE. */
static const char metrics_sql[] =
    "WITH" RUNS_CTE ","
    " last AS (SELECT DISTINCT ON (entity) * FROM runs WHERE outcome <> 'running' OR live"
    "   ORDER BY entity, started_at DESC, run_id DESC),"
    " ents AS (SELECT entity FROM runs UNION SELECT entity FROM dm.checkpoint)"
    " SELECT e.entity,"
    "  (SELECT sum(inserted) FROM runs r WHERE r.entity = e.entity)::text,"
    "  (SELECT sum(updated) FROM runs r WHERE r.entity = e.entity)::text,"
    "  (SELECT sum(deleted) FROM runs r WHERE r.entity = e.entity)::text,"
    "  (SELECT sum(rejected) FROM runs r WHERE r.entity = e.entity)::text,"
    "  (SELECT CASE WHEN outcome = 'ok' THEN 1 ELSE 0 END FROM last WHERE last.entity = e.entity)::text,"
    "  (SELECT extract(epoch FROM coalesce(finished_at, progress_at, started_at)) FROM last WHERE last.entity = e.entity)::text,"
    "  extract(epoch FROM clock_timestamp() - (SELECT max(finished_at) FROM runs r WHERE r.entity = e.entity AND outcome = 'ok'))::text,"
    "  (SELECT count(*) FROM runs r WHERE r.entity = e.entity AND live)::text,"
    "  (SELECT count(*) FROM dm.pending_delete p WHERE p.entity = e.entity)::text"
    " FROM ents e ORDER BY e.entity COLLATE \"C\"";

PGresult *
dmreport_follow_metrics(PGconn *conn)
{
	return dmpg_exec(conn, "SELECT slot,"
	    " round(extract(epoch FROM clock_timestamp() - coalesce(synced_at, applied_at)), 1)::text,"
	    " greatest(pg_wal_lsn_diff(source_lsn, applied_lsn), 0)::bigint::text,"
	    " pg_wal_lsn_diff(source_lsn, restart_lsn)::bigint::text,"
	    " pg_wal_lsn_diff(applied_lsn, '0/0')::bigint::text"
	    " FROM dm.follow ORDER BY slot COLLATE \"C\"");
}

PGresult *
dmreport_metrics(PGconn *conn)
{
	const char *params[2] = { NULL, NULL };

	return dmpg_exec_params(conn, metrics_sql, 2, params);
}

/* Runs a report query whose one value is JSON text; the parsed value, or NULL after saying why. */
static json_t *
report_query(PGconn *conn, const char *sql, int n, const char *const *params)
{
	PGresult *res = dmpg_exec_params(conn, sql, n, params);
	json_t *out = NULL;
	json_error_t jerr;

	if (res == NULL)
		return NULL;
	if (dmpg_nrows(res) != 1 || dmpg_isnull(res, 0, 0)) {
		dm_err("report: the query returned no value");
		goto out;
	}
	out = json_loads(dmpg_value(res, 0, 0), JSON_DECODE_ANY, &jerr);
	if (out == NULL)
		dm_err("report: the server's JSON does not parse: %s", jerr.text);
out:
	dmpg_clear(res);
	return out;
}

/* A text[] literal of the entities, malloc'd; NULL when n == 0 (all). */
static char *
report_array(char *const *entities, int n)
{
	dm_buf b = { 0 };

	if (n == 0)
		return NULL;
	dm_buf_text_array(&b, entities, n, "");
	dm_buf_putc(&b, '\0');
	return b.data;
}

json_t *
dmreport_status(PGconn *conn, char *const *entities, int n)
{
	char *arr = report_array(entities, n);
	const char *params[2] = { arr, NULL };
	json_t *out = report_query(conn, status_sql, 2, params);

	free(arr);
	return out;
}

json_t *
dmreport_runs(PGconn *conn, int limit, const char *before)
{
	char lim[24];
	const char *params[4] = { NULL, NULL, before, lim };

	snprintf(lim, sizeof lim, "%d", limit);
	return report_query(conn, runs_sql, 4, params);
}

json_t *
dmreport_run(PGconn *conn, const char *run_id)
{
	const char *params[2] = { NULL, run_id };

	return report_query(conn, run_sql, 2, params);
}

/* ------------------------------------------------------------------ text */

int
dmreport_table(FILE *out, const char *prefix, char *const *lines, int nlines, const int *right_cols)
{
	size_t width[64] = { 0 };

	for (int r = 0; r < nlines; r++) {
		int c = 0;
		for (const char *p = lines[r]; c < 64; c++) {
			size_t len = strcspn(p, "\t");
			if (len > width[c])
				width[c] = len;
			if (p[len] == '\0')
				break;
			p += len + 1;
		}
	}
	for (int r = 0; r < nlines; r++) {
		dm_buf line = { 0 };
		int c = 0;
		dm_buf_append(&line, prefix, strlen(prefix));
		for (const char *p = lines[r]; c < 64; c++) {
			size_t len = strcspn(p, "\t");
			int right = 0;
			for (const int *rc = right_cols; rc != NULL && *rc; rc++)
				right |= *rc == c + 1;
			if (c)
				dm_buf_append(&line, "  ", 2);
			for (size_t k = len; right && k < width[c]; k++)
				dm_buf_putc(&line, ' ');
			dm_buf_append(&line, p, len);
			for (size_t k = len; !right && k < width[c]; k++)
				dm_buf_putc(&line, ' ');
			if (p[len] == '\0')
				break;
			p += len + 1;
		}
		while (line.len > 0 && line.data[line.len - 1] == ' ')
			line.len--;
		dm_buf_putc(&line, '\n');
		fwrite(line.data, 1, line.len, out);
		dm_buf_free(&line);
	}
	return ferror(out) ? -1 : 0;
}

double
dmreport_epoch(const char *ts)
{
	struct tm tm = { 0 };

	if (ts == NULL || sscanf(ts, "%d-%d-%d %d:%d:%d", &tm.tm_year, &tm.tm_mon, &tm.tm_mday, &tm.tm_hour, &tm.tm_min,
	    &tm.tm_sec) != 6)
		return -1;
	tm.tm_year -= 1900;
	tm.tm_mon -= 1;
	return (double)timegm(&tm);
}

/* A timestamp as text without its fraction of a second: "2026-01-02 03:04:05+00". */
static char *
report_ts(const json_t *v)
{
	const char *s = json_string_value(v);
	const char *dot;

	if (s == NULL)
		return dm_xstrdup("-");
	dot = strchr(s, '.');
	if (dot == NULL)
		return dm_xstrdup(s);
	return dm_xasprintf("%.*s%s", (int)(dot - s), s, dot + strspn(dot + 1, "0123456789") + 1);
}

/* A string member, "-" when null or missing; static or the object's. */
static const char *
report_str(const json_t *o, const char *key)
{
	const char *s = json_string_value(json_object_get(o, key));
	return s != NULL ? s : "-";
}

static long long
report_int(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	return json_is_integer(v) ? json_integer_value(v) : json_is_real(v) ? (long long)json_real_value(v) : 0;
}

/* A number member as text with one decimal, "-" when null. Malloc'd. */
static char *
report_num1(const json_t *o, const char *key)
{
	const json_t *v = json_object_get(o, key);
	if (!json_is_number(v))
		return dm_xstrdup("-");
	return dm_xasprintf("%.1f", json_number_value(v));
}

/* Lines of a text table, grown one at a time. */
typedef struct report_lines {
	char **line;
	int n;
} report_lines;

static void
report_add(report_lines *t, char *line)
{
	t->line = dm_xrealloc(t->line, (size_t)(t->n + 1) * sizeof *t->line);
	t->line[t->n++] = line;
}

static void
report_lines_free(report_lines *t)
{
	for (int i = 0; t != NULL && i < t->n; i++)
		free(t->line[i]);
	free(t != NULL ? t->line : NULL);
}

/* A byte count for people: 1536 -> "1.5 KiB"; NULL or not a number -> "-". */
static char *
report_bytes(const json_t *v)
{
	static const char *const unit[] = { "B", "KiB", "MiB", "GiB", "TiB" };
	if (!json_is_integer(v))
		return dm_xstrdup("-");
	double n = (double)json_integer_value(v);
	int u = 0;
	while (n >= 1024 && u < 4) {
		n /= 1024;
		u++;
	}
	return u == 0 ? dm_xasprintf("%.0f B", n) : dm_xasprintf("%.1f %s", n, unit[u]);
}

/* The followers of the status report (its "follow" array), as a table, with a warning per slot holding much WAL. */
static void
report_follow_text(const json_t *fol, FILE *out)
{
	report_lines t = { 0 }, warn = { 0 };
	static const int right[] = { 3, 4, 5, 0 };
	size_t i;
	const json_t *f;

	report_add(&t, dm_xstrdup("SLOT\tAPPLIED\tLAST COMMIT APPLIED\tLAG S\tLAG\tWAL RETAINED\tBY FULL COMPARISONS"));
	json_array_foreach(fol, i, f) {
		char *commit = report_ts(json_object_get(f, "commit_time"));
		char *lag = report_num1(f, "lag_seconds");
		char *behind = report_bytes(json_object_get(f, "lag_bytes"));
		char *kept = report_bytes(json_object_get(f, "retained_bytes"));
		dm_buf full = { 0 };
		size_t k;
		const json_t *name;
		json_array_foreach(json_object_get(f, "full_entities"), k, name)
			dm_buf_printf(&full, "%s%s", k ? "," : "", json_string_value(name) ? json_string_value(name) : "?");
		report_add(&t, dm_xasprintf("%s\t%s\t%s\t%s\t%s\t%s\t%s", report_str(f, "slot"), report_str(f, "applied_lsn"),
		    commit, lag, behind, kept, full.len ? dm_buf_cstr(&full) : "-"));
		const json_t *r = json_object_get(f, "retained_bytes");
		if (json_is_integer(r) && json_integer_value(r) > DMREPORT_RETAINED_WARN)
			report_add(&warn, dm_xasprintf("  warning: slot %s keeps %s of WAL on the source, which grows until it is"
			    " followed again or dropped (dm-migrate follow --drop-slot)\n", report_str(f, "slot"), kept));
		free(commit);
		free(lag);
		free(behind);
		free(kept);
		dm_buf_free(&full);
	}
	fputs("\nFollowing the source (dm-migrate follow; LAG as of the last batch):\n", out);
	dmreport_table(out, "  ", t.line, t.n, right);
	for (int k = 0; k < warn.n; k++)
		fputs(warn.line[k], out);
	report_lines_free(&t);
	report_lines_free(&warn);
}

int
dmreport_status_text(const json_t *status, FILE *out)
{
	report_lines ck = { 0 }, last = { 0 }, cur = { 0 }, errs = { 0 };
	const json_t *ents = json_object_get(status, "entities");
	const json_t *prog = json_object_get(status, "in_progress");
	double now = json_number_value(json_object_get(status, "now"));
	size_t i;
	const json_t *e;
	static const int last_right[] = { 6, 7, 8, 9, 10, 11, 12, 0 };
	static const int cur_right[] = { 4, 5, 6, 7, 8, 9, 10, 11, 0 };

	report_add(&ck, dm_xstrdup("ENTITY\tWATERMARK\tUPDATED\tSTATE\tRUN"));
	report_add(&last, dm_xstrdup("ENTITY\tRUN\tSTARTED\tFINISHED\tOUTCOME\tINSERTED\tUPDATED\tDELETED\tUNCHANGED\tREJECTED\tSECONDS\tROWS/S"));
	report_add(&cur, dm_xstrdup("ENTITY\tRUN\tSTARTED\tBATCHES\tINSERTED\tUPDATED\tDELETED\tUNCHANGED\tREJECTED\tSECONDS\tROWS/S\tLAST BATCH"));
	json_array_foreach(ents, i, e) {
		const char *name = report_str(e, "entity");
		const json_t *c = json_object_get(e, "checkpoint");
		const json_t *r = json_object_get(e, "last_run");
		if (json_is_object(c)) {
			char *upd = report_ts(json_object_get(c, "updated_at"));
			report_add(&ck, dm_xasprintf("%s\t%s\t%s\t%s\t%s", name, report_str(c, "watermark"), upd,
			    report_str(c, "state"), report_str(c, "run")));
			free(upd);
		}
		if (!json_is_object(r))
			continue;
		const char *outcome = report_str(r, "outcome");
		if (strcmp(outcome, "running") == 0 && !json_is_true(json_object_get(r, "live")))
			outcome = "interrupted";
		char *st = report_ts(json_object_get(r, "started_at"));
		char *fin = report_ts(json_object_get(r, "finished_at"));
		char *secs = report_num1(r, "seconds");
		const json_t *rps = json_object_get(r, "rows_per_second");
		char *rate = json_is_integer(rps) ? dm_xasprintf("%lld", (long long)json_integer_value(rps)) : dm_xstrdup("-");
		report_add(&last, dm_xasprintf("%s\t%s\t%s\t%s\t%s\t%lld\t%lld\t%lld\t%lld\t%lld\t%s\t%s", name,
		    report_str(r, "run"), st, fin, outcome, report_int(r, "inserted"), report_int(r, "updated"),
		    report_int(r, "deleted"), report_int(r, "unchanged"), report_int(r, "rejected"), secs, rate));
		if (json_is_string(json_object_get(r, "error")) && strcmp(outcome, "ok") != 0)
			report_add(&errs, dm_xasprintf("  %s: %s\n", name, report_str(r, "error")));
		free(st);
		free(fin);
		free(secs);
		free(rate);
	}
	json_array_foreach(prog, i, e) {
		if (!json_is_string(json_object_get(e, "started_at"))) {
			report_add(&cur, dm_xasprintf("%s\t%s\t-\t0\t0\t0\t0\t0\t0\t-\t-\tnone yet", report_str(e, "entity"),
			    report_str(e, "run")));
			continue;
		}
		char *st = report_ts(json_object_get(e, "started_at"));
		char *secs = report_num1(e, "seconds");
		const json_t *rps = json_object_get(e, "rows_per_second");
		char *rate = json_is_integer(rps) ? dm_xasprintf("%lld", (long long)json_integer_value(rps)) : dm_xstrdup("-");
		/* How long ago its last batch committed: a load stuck behind a lock shows here. */
		double t = dmreport_epoch(json_string_value(json_object_get(e, "progress_at")));
		long ago = t >= 0 && now > t ? (long)(now - t) : 0;
		report_add(&cur, dm_xasprintf("%s\t%s\t%s\t%lld\t%lld\t%lld\t%lld\t%lld\t%lld\t%s\t%s\t%ld s ago",
		    report_str(e, "entity"), report_str(e, "run"), st, report_int(e, "batches"), report_int(e, "inserted"),
		    report_int(e, "updated"), report_int(e, "deleted"), report_int(e, "unchanged"),
		    report_int(e, "rejected"), secs, rate, ago));
		free(st);
		free(secs);
		free(rate);
	}

	fputs("Checkpoints (the next run reads from WATERMARK less the overlap):\n", out);
	if (ck.n > 1)
		dmreport_table(out, "  ", ck.line, ck.n, NULL);
	else
		fputs("  (none: nothing has been loaded into this destination yet)\n", out);
	fputs("\nLast run of each entity:\n", out);
	if (last.n > 1) {
		dmreport_table(out, "  ", last.line, last.n, last_right);
		for (int k = 0; k < errs.n; k++)
			fputs(errs.line[k], out);
	} else {
		fputs("  (none)\n", out);
	}
	fputs("\nIn progress:\n", out);
	if (cur.n > 1)
		dmreport_table(out, "  ", cur.line, cur.n, cur_right);
	else
		fputs("  (none)\n", out);
	if (json_array_size(json_object_get(status, "follow")) > 0)
		report_follow_text(json_object_get(status, "follow"), out);
	report_lines_free(&ck);
	report_lines_free(&last);
	report_lines_free(&cur);
	report_lines_free(&errs);
	return ferror(out) ? -1 : 0;
}
