/*
 * load.h - private to dm-load: the target of a load, the run's settings, and
 * the functions its files share (load/dm-load.c: options, leases and the
 * order of the steps; target.c: the SQL of a target; stage.c: staging and
 * upserts; deletes.c: parked and applied deletes; bulk.c: the bulk path;
 * rejects.c: row-by-row replay into --rejects).
 *
 * Ownership, for all of them: a target owns every pointer in it (SQL text,
 * results, files) and dmload_target_free releases them; functions taking a
 * connection never close it; the caller owns the transaction unless a
 * contract says otherwise, and rolls it back on any failure.
 */
#ifndef DM_LOAD_H
#define DM_LOAD_H

#include "pg.h"
#include "stream.h"

#include <stdint.h>
#include <stdio.h>

#define MAX_TARGETS 64

/*
 * A foreign key (alias f) that the bulk load (and --apply-deletes) may drop and add back
 * with pg_get_constraintdef: validated (adding back one NOT VALID would leave the
 * loaded rows unchecked), its own and not a partition's copy of its parent's,
 * uncommented, with its triggers enabled as ADD CONSTRAINT makes them, and
 * pointing at columns this role may reference (ADD CONSTRAINT checks it).
 */
#define DMLOAD_FK_DROPPABLE \
	"f.contype = 'f' AND f.convalidated AND f.conparentid = 0" \
	" AND pg_catalog.obj_description(f.oid, 'pg_constraint') IS NULL" \
	" AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_trigger t WHERE t.tgconstraint = f.oid AND t.tgenabled <> 'O')" \
	" AND (SELECT pg_catalog.bool_and(pg_catalog.has_column_privilege(f.confrelid, a.n, 'REFERENCES'))" \
	"   FROM pg_catalog.unnest(f.confkey) AS a(n))"

typedef struct target {
	const char *table_arg;
	char *entity;		/* the name of its checkpoint, lease, dm.run and parked deletes */
	char *ledger_entity;	/* the entity its dm.ledger rows belong to (--checkpoint: not the same) */
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
	int peeked;		/* dms_reader_next's answer for a message read ahead (its row still in r), or 0 */
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

/* The run's settings (from the options, fixed once main has parsed them) and its few shared counters. */
struct dmload_settings {
	int dry_run, defer_deletes, force, disable_triggers, no_bulk;
	uint64_t max_delete_pct;
	int lease_seconds;
	char lease_owner[128];
	const char *rejects_path;
	uint64_t max_rejects;
	uint64_t rejected;	/* rows written to --rejects so far */
	/* Dry runs share one transaction across every step, so whether one is open is global. */
	int in_txn;
	const char *run_id;
	char started_at[64];
	/* --follow: the slot, the source position and commit time this load brings the destination to */
	const char *follow_slot, *follow_lsn, *follow_commit_time;
	const char *follow_from;	/* --from: the position the batch starts at, or NULL */
};
extern struct dmload_settings dmload;

/* dm-load.c */

/* Opens the batch's transaction (a dry run's single one only once). 0 or -1. */
int dmload_begin(PGconn *conn);
/* Commits it (a dry run's stays open, rolled back at the end). 0 or -1. */
int dmload_end(PGconn *conn);
/* The checkpoint's progress and the dm.run row of one batch, in the caller's transaction. 0 or -1. */
int dmload_record_progress(PGconn *conn, target *tg, uint64_t rows);
/*
 * The work of the transaction that saw the trailer, in the caller's
 * transaction: deletes applied (or marked ready with --defer-deletes), the
 * checkpoint's watermark, the dm.run rows. 0 or -1.
 */
int dmload_finish_stream(PGconn *conn, target *tgs, int ntg);

/* target.c */

/*
 * Builds the target's SQL (into tg, which owns it) from its stream header
 * (need_stream) or its key alone (--apply-deletes) and tg->t; idx names its
 * staging table. 0; -1 after printing why; -2 when the stream is not for
 * this table (an unusable stream).
 */
int dmload_target_prepare(PGconn *conn, target *tg, int idx, int need_stream);
/* Frees everything tg owns and closes its files; not tg itself. */
void dmload_target_free(target *tg);
/* Deletes through dm.ledger (a spec entity's rows, keyed by legacy key): rewrites tg->key_join. */
void dmload_use_ledger_join(PGconn *conn, target *tg);
/* With --disable-triggers: the tables' user triggers off (off = 1) or back as they were. 0 or -1. */
int dmload_triggers_switch(PGconn *conn, target *tgs, int ntg, int off);

/* stage.c */

/*
 * Streams up to max_rows rows (0: all) of the target's stream into its
 * staging table (or the table itself, tg->direct), in the caller's
 * transaction; with --rejects also into tg->spool. Returns 1 when rows
 * remain, 0 at the verified trailer, -1 on a database error, -3 on an
 * invalid stream (COPY cancelled), and -2 (end reached) or -4 (rows remain)
 * when the server refused the data.
 */
int dmload_stage_rows(PGconn *conn, target *tg, uint64_t max_rows);
/* Upserts the staged rows of all targets in one statement, adding to their counts only on success. 0 or -1. */
int dmload_apply_upserts(PGconn *conn, target *tgs, int ntg);
/* A result's value as a number (0 if it is none). */
uint64_t dmload_u64(PGresult *res, int row, int col);

/* deletes.c */

/* Parks the staged batch's deletes in dm.pending_delete; *parked gets their number. 0 or -1. */
int dmload_park_deletes(PGconn *conn, target *tg, uint64_t *parked);
/*
 * Deletes the parked keys of all targets in one statement, then forgets
 * them: with only_ready (--apply-deletes) those marked ready by a stream
 * that ended with a verified trailer, foreign keys without an index on
 * their referencing columns dropped for the delete and added back checked
 * where the role owns the tables; otherwise only those this load parked
 * itself. Refuses more than --max-delete-share unless --force. In the
 * caller's transaction. 0; -1 after printing why; -2 for a lost lease.
 */
int dmload_apply_deletes(PGconn *conn, target *tgs, int ntg, int only_ready);

/* bulk.c */

/*
 * In its own transaction: decides whether each table is loaded with COPY
 * straight in (tg->direct) and may be bulk loaded (tg->bulk_ok). 0, or -1
 * after printing why.
 */
int dmload_use_direct(PGconn *conn, target *tgs, int ntg);
/*
 * The whole bulk load of empty tables, one transaction it begins and
 * commits. Sets *fallback, doing nothing, when the bulk path does not
 * apply. Returns an exit status; on failure the caller rolls back.
 */
int dmload_load_bulk(PGconn *conn, target *tgs, int ntg, int *fallback);
/*
 * Adds foreign key name to table (quoted and qualified) from its
 * pg_get_constraintdef text, checked over all rows by one query; with
 * drop_first drops the key of that name in the same statement. Quiet: 0, or
 * -1 with the error in dmpg_last_error for the caller to report.
 */
int dmload_fk_add(PGconn *conn, const char *table, const char *name, const char *def, int drop_first);

/* rejects.c */

/* The last error was the data's fault (SQLSTATE class 22 or 23): the row can be rejected. */
int dmload_is_data_error(void);
/*
 * A batch refused as a whole (rolled back to its savepoint by the caller),
 * applied again from tg->spool one row at a time under savepoints; refused
 * rows go to --rejects. Returns an exit status.
 */
int dmload_replay_rows(PGconn *conn, target *tg);
/* Finishes and closes the --rejects stream if one was opened. 0 or -1 (printed). */
int dmload_rejects_close(void);

#endif
