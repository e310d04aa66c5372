/*
 * report.h - the reports read from the destination's dm schema, one
 * implementation for the command line (dm-ckpt status, which dm-migrate status
 * runs) and the service (dm-serve). Each builds a jansson object inside the
 * caller's transaction; the caller owns it (json_decref).
 */
#ifndef DM_REPORT_H
#define DM_REPORT_H

/* A slot keeping more WAL than this on the source is warned about (status, dm-migrate follow). */
#define DMREPORT_RETAINED_WARN ((long long)1 << 30)

#include "pg.h"

#include <stdio.h>

#include <jansson.h>

/*
 * The status report (dm-migrate(1), STATUS): per entity its checkpoint and last
 * run, and the loads in progress. entities (n of them) filters; n == 0 is all.
 * NULL after the error was printed.
 */
json_t *dmreport_status(PGconn *conn, char *const *entities, int n);
/* Prints a status report as the three tables people read. 0, or -1 on a write error. */
int dmreport_status_text(const json_t *status, FILE *out);

/*
 * Run history, newest first, one object per run id (dm.run holds a row per run
 * and entity): limit runs started before the run id `before` (NULL: the newest).
 */
json_t *dmreport_runs(PGconn *conn, int limit, const char *before);
/* One run with its entities; a JSON null when dm.run has no row of it. */
json_t *dmreport_run(PGconn *conn, const char *run_id);

/*
 * For /metrics, one row per followed slot (dm.follow), values as text, NULL
 * when unknown: slot; lag in seconds; lag in bytes; WAL the slot keeps on the
 * source; the applied position as a byte offset. NULL after the error was printed.
 */
PGresult *dmreport_follow_metrics(PGconn *conn);

/*
 * For dm-serve's /metrics, one row per entity, every value text (NULL when there
 * is none): entity; rows inserted, updated, deleted and rejected over all runs;
 * 1 or 0, the last finished (or live) run succeeded; when it ended or last made
 * progress (epoch); seconds since the last success; loads in progress; parked
 * deletes. "In progress" is the status report's: the same definition of a live
 * run. The result is the caller's (dmpg_clear); NULL after the error was printed.
 */
PGresult *dmreport_metrics(PGconn *conn);

/*
 * A timestamp of the reports ("YYYY-MM-DD HH:MM:SS...", in UTC as dm's sessions
 * print them; the fraction and the +00 ignored) in seconds since the epoch, or -1.
 */
double dmreport_epoch(const char *ts);

/*
 * Prints rows of tab-separated cells as aligned columns, two spaces apart;
 * right_cols is a 0-terminated list of 1-based columns aligned to the right
 * (numbers). Trailing blanks are dropped. The lines of text are the caller's.
 */
int dmreport_table(FILE *out, const char *prefix, char *const *lines, int nlines, const int *right_cols);

#endif
