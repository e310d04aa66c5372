/*
 * pg.h - every libpq call dm makes lives behind this interface. Errors are
 * printed once, here, where they happen; callers only see failure and return.
 */
#ifndef DM_PG_H
#define DM_PG_H

#include "dm.h"

#include <libpq-fe.h>

/* One column of a table as the catalog describes it. */
typedef struct dmpg_column {
	char *name;
	char *type;		/* format_type(), schema-qualified where needed */
	int is_bytea;		/* bytea or a domain over it: travels as binary */
	int generated;		/* GENERATED ALWAYS AS (...) STORED: never written */
	int identity_always;	/* needs OVERRIDING SYSTEM VALUE */
	int not_null;
	int has_default;
	char category;		/* pg_type.typcategory of the base type: N numeric, S string, D date/time ... */
	int builtin;		/* the type lives in pg_catalog, so another server knows it too */
} dmpg_column;

/* A table: its columns in attnum order and its primary key. Owned; dmpg_table_free. */
typedef struct dmpg_table {
	char *schema;
	char *name;
	char *qualified;	/* "schema"."table", quoted */
	char relkind;		/* 'r' or 'p' */
	size_t ncols;
	dmpg_column *cols;
	size_t nkey;
	size_t *key;		/* indexes into cols */
	int change_col;		/* index of updated_at or last_update, or -1 */
} dmpg_table;

/*
 * SQL: a foreign key (alias f, its pg_constraint row) whose referencing
 * columns lead a valid, whole btree or hash index of its table, in any
 * order: PostgreSQL finds a deleted parent row's children through it
 * instead of scanning the child table.
 */
#define DMPG_FK_LEADING_KEYS \
	"(pg_catalog.string_to_array(x.indkey::pg_catalog.text, ' ')::pg_catalog.int2[])" \
	"[1:pg_catalog.cardinality(f.conkey)]"
#define DMPG_FK_INDEXED \
	"EXISTS (SELECT 1 FROM pg_catalog.pg_index x JOIN pg_catalog.pg_class i ON i.oid = x.indexrelid" \
	" JOIN pg_catalog.pg_am am ON am.oid = i.relam WHERE x.indrelid = f.conrelid AND x.indisvalid" \
	" AND x.indpred IS NULL AND am.amname IN ('btree', 'hash')" \
	" AND x.indnkeyatts >= pg_catalog.cardinality(f.conkey)" \
	" AND " DMPG_FK_LEADING_KEYS " OPERATOR(pg_catalog.@>) f.conkey" \
	" AND " DMPG_FK_LEADING_KEYS " OPERATOR(pg_catalog.<@) f.conkey)"

/*
 * The application_name a connection shows in pg_stat_activity when the user's
 * connection string sets none: the program's name by default; a long-lived helper
 * names its part ("dm-ckpt hold") so that an administrator, and the fault scripts,
 * can tell it from the program's other uses. Static storage, not copied.
 */
extern const char *dmpg_application_name;

/* Connects; role names the side ("source", "destination") for the error message. */
PGconn *dmpg_connect(const char *conninfo, const char *role);
/* Accepts NULL. */
void dmpg_finish(PGconn *conn);

/* Runs SQL that returns no rows or some rows; NULL after printing the server's error. */
PGresult *dmpg_exec(PGconn *conn, const char *sql);
/* Same with text parameters $1..$n (values never spliced into SQL). */
PGresult *dmpg_exec_params(PGconn *conn, const char *sql, int n, const char *const *values);
/* dmpg_exec + PQclear; 0 or -1. */
int dmpg_run(PGconn *conn, const char *sql);
int dmpg_run_params(PGconn *conn, const char *sql, int n, const char *const *values);
/* Accepts NULL. */
void dmpg_clear(PGresult *res);

/* The SQLSTATE of the last error dmpg saw on this process, or "" . */
const char *dmpg_last_sqlstate(void);
/*
 * Was the last failure transient (connection lost or refused, server shutting
 * down or starting, serialization failure)? Rerunning the same command later
 * then converges; callers turn DM_EXIT_FAIL (and DM_EXIT_LOCKED, when a
 * lease could not be renewed because the server went away) into
 * DM_EXIT_TRANSIENT with dmpg_exit_code.
 */
int dmpg_last_transient(void);
int dmpg_exit_code(int rc);
/* The last error, as one line. */
const char *dmpg_last_error(void);
/* While on, errors are only kept for dmpg_last_error, not printed (the caller decides). */
void dmpg_quiet_errors(int quiet);
/* Forgets the last error: after a quiet failure the caller recovered from, it explains nothing later. */
void dmpg_forget_error(void);

/*
 * Starts a transaction and pins the session settings that make text output
 * canonical (dm-stream(5)). Settings are transaction-local so nothing
 * outlives the transaction: PgBouncer in transaction mode stays safe.
 * On PostgreSQL 14+ it also sets client_connection_check_interval to 1 s,
 * so that the backend of a killed client stops within a second instead of
 * running its statement to the end.
 * isolation is e.g. "ISOLATION LEVEL REPEATABLE READ, READ ONLY" or "";
 * snapshot, when not NULL, is an id from pg_export_snapshot() to read in.
 */
int dmpg_begin(PGconn *conn, const char *isolation, const char *snapshot);
int dmpg_commit(PGconn *conn);
/* Rolls back, ignoring errors: used on the way out of a failure. */
void dmpg_rollback(PGconn *conn);

/* Quotes an identifier; returns a malloc'd string owned by the caller. */
char *dmpg_ident(PGconn *conn, const char *name);

/* Reads a table's description; 0, or -1 after printing why (unknown table, no key). */
int dmpg_table_load(PGconn *conn, const char *schema, const char *name, int need_key, dmpg_table *t);
void dmpg_table_free(dmpg_table *t);
/*
 * Describes what a SELECT returns (columns, types) without running it, as a
 * table with no key: for spec entities whose source is a query.
 */
int dmpg_query_load(PGconn *conn, const char *query, dmpg_table *t);
/* Index of the column called name, or -1. */
int dmpg_table_column(const dmpg_table *t, const char *name);

/* COPY ... TO STDOUT. */
int dmpg_copy_out_start(PGconn *conn, const char *sql);
/*
 * Next COPY row into *row (free with dmpg_freemem). Returns its length,
 * -1 at the end (the COPY's result checked), -2 after printing an error.
 */
int dmpg_copy_out_row(PGconn *conn, char **row);
void dmpg_freemem(void *p);

/* COPY ... FROM STDIN. */
int dmpg_copy_in_start(PGconn *conn, const char *sql);
int dmpg_copy_in_put(PGconn *conn, const char *data, size_t len);
/* Ends the COPY; with abort_reason it is cancelled. 0 or -1. */
int dmpg_copy_in_end(PGconn *conn, const char *abort_reason);

/* --- replication connections (dm-decode) --- */

/*
 * Connects for logical replication (replication=database added to the
 * conninfo): such a connection runs replication commands and plain SQL.
 * Unlike dmpg_connect, a refusal is only kept (dmpg_last_error), not
 * printed: the caller knows what to ask the administrator for.
 */
PGconn *dmpg_connect_replication(const char *conninfo, const char *role);
/* Sends a replication command that enters COPY BOTH (START_REPLICATION); 0 or -1. */
int dmpg_copy_both_start(PGconn *conn, const char *cmd);
/*
 * Waits up to timeout_ms for the next CopyData message of a COPY BOTH,
 * into *buf (free with dmpg_freemem). Returns its length (> 0), 0 when
 * none came in time (or a signal interrupted the wait), -1 when the server
 * ended the COPY cleanly, -2 after recording an error (printed unless quiet).
 */
int dmpg_copy_both_read(PGconn *conn, int timeout_ms, char **buf);
/* Sends one CopyData message and flushes it; 0 or -1. */
int dmpg_copy_both_send(PGconn *conn, const char *data, size_t len);

/* Result accessors, so that programs never call libpq themselves. */
int dmpg_nrows(const PGresult *res);
const char *dmpg_value(const PGresult *res, int row, int col);
int dmpg_isnull(const PGresult *res, int row, int col);
const char *dmpg_cmd_tuples(PGresult *res);

#endif
