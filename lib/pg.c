/* pg.c - the only file that calls libpq. */
#define _POSIX_C_SOURCE 200809L
#include "pg.h"

#include <errno.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

static char dmpg_sqlstate[6];
static char dmpg_error[1024];
static int dmpg_quiet;
static int dmpg_transient;
const char *dmpg_application_name;

static int
dmpg_state_transient(const char *state)
{
	static const char *const codes[] = { "57P01", "57P02", "57P03", "40001", "40P01", "53300", NULL };

	if (state == NULL || *state == '\0')
		return 0;
	if (strncmp(state, "08", 2) == 0)
		return 1;
	for (int i = 0; codes[i]; i++)
		if (strcmp(state, codes[i]) == 0)
			return 1;
	return 0;
}

int
dmpg_last_transient(void)
{
	return dmpg_transient;
}

int
dmpg_exit_code(int rc)
{
	/* A lease renewal that failed because the server went away is no lock conflict. */
	return (rc == DM_EXIT_FAIL || rc == DM_EXIT_LOCKED) && dmpg_transient ? DM_EXIT_TRANSIENT : rc;
}

static void
dmpg_report(PGconn *conn, const PGresult *res, const char *what)
{
	const char *msg = res ? PQresultErrorMessage(res) : "";
	const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;

	if (msg == NULL || *msg == '\0')
		msg = PQerrorMessage(conn);
	snprintf(dmpg_sqlstate, sizeof dmpg_sqlstate, "%s", state ? state : "");
	/*
	 * The server sends a SQLSTATE with every error; an error without one is
	 * libpq's own: the connection failed under us. It is not always marked
	 * bad yet: a write that failed (the server stopped while we were sending)
	 * is reported with the connection still "OK" when libpq could read what
	 * the dying server sent but not yet its end of file.
	 */
	dmpg_transient = dmpg_state_transient(state) || PQstatus(conn) == CONNECTION_BAD ||
	    state == NULL || *state == '\0';
	snprintf(dmpg_error, sizeof dmpg_error, "%s: %s", what, msg);
	size_t n = strlen(dmpg_error);
	while (n > 0 && (dmpg_error[n - 1] == '\n' || dmpg_error[n - 1] == ' '))
		dmpg_error[--n] = '\0';
	for (size_t i = 0; i < n; i++)
		if (dmpg_error[i] == '\n')
			dmpg_error[i] = ' ';
	if (!dmpg_quiet)
		dm_err("%s", dmpg_error);
}

void
dmpg_quiet_errors(int quiet)
{
	dmpg_quiet = quiet;
}

void
dmpg_forget_error(void)
{
	dmpg_error[0] = '\0';
	dmpg_sqlstate[0] = '\0';
	dmpg_transient = 0;
}

const char *
dmpg_last_error(void)
{
	return dmpg_error;
}

const char *
dmpg_last_sqlstate(void)
{
	return dmpg_sqlstate;
}

/* Server notices (e.g. "relation already exists, skipping") are for -v only. */
static void
dmpg_notice(void *arg, const char *message)
{
	(void)arg;
	dm_debug("server: %s", message);
}

/*
 * libpq echoes a connection string it cannot parse, password included.
 * Parse it first; on failure say what is wrong without repeating it.
 */
static int
dmpg_conninfo_ok(const char *conninfo, const char *role)
{
	char *err = NULL;
	PQconninfoOption *opts = PQconninfoParse(conninfo, &err);

	if (opts != NULL) {
		PQconninfoFree(opts);
		return 1;
	}
	dm_err("cannot connect to %s: the connection string is malformed (not shown: it may hold a password)", role);
	if (err != NULL)
		PQfreemem(err);
	dmpg_transient = 0;
	return 0;
}

/*
 * Opens a connection; with replication set, a logical replication one
 * whose refusal is kept for the caller rather than printed.
 */
static PGconn *
dmpg_open(const char *conninfo, const char *role, int replication)
{
	/* dbname is expanded first so our client_encoding always wins over the user's. */
	const char *keys[] = { "dbname", "client_encoding", "fallback_application_name",
		replication ? "replication" : NULL, NULL };
	const char *vals[] = { conninfo, "UTF8", dmpg_application_name ? dmpg_application_name : dm_prog,
		"database", NULL };
	if (!dmpg_conninfo_ok(conninfo, role))
		return NULL;
	PGconn *conn = PQconnectdbParams(keys, vals, 1);

	if (conn == NULL) {
		dm_err("cannot connect to %s: out of memory", role);
		return NULL;
	}
	if (PQstatus(conn) != CONNECTION_OK) {
		dmpg_sqlstate[0] = '\0';
		/* Unreachable or restarting is worth a retry; refused credentials or names are not. */
		const char *m = PQerrorMessage(conn);
		dmpg_transient = strstr(m, "authentication") == NULL && strstr(m, "does not exist") == NULL &&
		    strstr(m, "permission denied") == NULL && strstr(m, "pg_hba.conf") == NULL &&
		    strstr(m, "password") == NULL && strstr(m, "invalid") == NULL &&
		    strstr(m, "replication role") == NULL && strstr(m, "max_wal_senders") == NULL;
		/* libpq never puts the password in its message; nor do we print the conninfo. */
		snprintf(dmpg_error, sizeof dmpg_error, "cannot connect to %s: %s", role, m);
		size_t n = strlen(dmpg_error);
		while (n > 0 && (dmpg_error[n - 1] == '\n' || dmpg_error[n - 1] == ' '))
			dmpg_error[--n] = '\0';
		for (size_t i = 0; i < n; i++)
			if (dmpg_error[i] == '\n')
				dmpg_error[i] = ' ';
		if (!replication)
			dm_err("cannot connect to %s: %s", role, m);
		PQfinish(conn);
		return NULL;
	}
	PQsetNoticeProcessor(conn, dmpg_notice, NULL);
	return conn;
}

PGconn *
dmpg_connect(const char *conninfo, const char *role)
{
	return dmpg_open(conninfo, role, 0);
}

PGconn *
dmpg_connect_replication(const char *conninfo, const char *role)
{
	return dmpg_open(conninfo, role, 1);
}

void
dmpg_finish(PGconn *conn)
{
	if (conn != NULL)
		PQfinish(conn);
}

static PGresult *
dmpg_check(PGconn *conn, PGresult *res, const char *sql)
{
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;

	if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
		return res;
	dm_debug("failed SQL: %s", sql);
	dmpg_report(conn, res, "query failed");
	PQclear(res);
	return NULL;
}

PGresult *
dmpg_exec(PGconn *conn, const char *sql)
{
	dm_debug("sql: %s", sql);
	return dmpg_check(conn, PQexec(conn, sql), sql);
}

PGresult *
dmpg_exec_params(PGconn *conn, const char *sql, int n, const char *const *values)
{
	dm_debug("sql: %s", sql);
	/* Unnamed statement: nothing prepared outlives the call (PgBouncer-safe). */
	return dmpg_check(conn, PQexecParams(conn, sql, n, NULL, values, NULL, NULL, 0), sql);
}

int
dmpg_run(PGconn *conn, const char *sql)
{
	PGresult *res = dmpg_exec(conn, sql);

	PQclear(res);
	return res ? 0 : -1;
}

int
dmpg_run_params(PGconn *conn, const char *sql, int n, const char *const *values)
{
	PGresult *res = dmpg_exec_params(conn, sql, n, values);

	PQclear(res);
	return res ? 0 : -1;
}

void
dmpg_clear(PGresult *res)
{
	if (res != NULL)
		PQclear(res);
}

int
dmpg_begin(PGconn *conn, const char *isolation, const char *snapshot)
{
	char sql[256];

	snprintf(sql, sizeof sql, "BEGIN %s", isolation ? isolation : "");
	if (dmpg_run(conn, sql) < 0)
		return -1;
	if (snapshot != NULL) {
		/* SET TRANSACTION takes no parameters; the id's alphabet is checked instead. */
		if (*snapshot == '\0' || strspn(snapshot, "0123456789ABCDEFabcdef-") != strlen(snapshot)) {
			dm_err("invalid snapshot id: expected what pg_export_snapshot() returns");
			return -1;
		}
		snprintf(sql, sizeof sql, "SET TRANSACTION SNAPSHOT '%s'", snapshot);
		if (dmpg_run(conn, sql) < 0) {
			/* the snapshot dies with the session that exported it: a new one is worth a retry */
			dmpg_transient = 1;
			return -1;
		}
	}
	return dmpg_run(conn,
	    "SELECT pg_catalog.set_config('TimeZone', 'UTC', true),"
	    " pg_catalog.set_config('DateStyle', 'ISO, YMD', true),"
	    " pg_catalog.set_config('IntervalStyle', 'postgres', true),"
	    " pg_catalog.set_config('extra_float_digits', '3', true),"
	    " pg_catalog.set_config('bytea_output', 'hex', true),"
	    " pg_catalog.set_config('lc_monetary', 'C', true),"
	    " pg_catalog.set_config('xmloption', 'content', true),"
	    " pg_catalog.set_config('idle_in_transaction_session_timeout', '0', true),"
	    " pg_catalog.set_config('search_path', 'pg_catalog', true),"
	    /*
	     * A client killed during a long statement (kill -9, a lost machine)
	     * would leave its backend running, and holding its locks and the
	     * liveness of its dm.lease, until the statement ends. PostgreSQL 14+
	     * polls the socket every second while a statement runs and aborts it
	     * once the client is gone. Decided by the server, not by the version
	     * a pooler reports; older servers do not know the setting.
	     */
	    " CASE WHEN pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 140000"
	    "  THEN pg_catalog.set_config('client_connection_check_interval', '1s', true) END");
}

int
dmpg_commit(PGconn *conn)
{
	return dmpg_run(conn, "COMMIT");
}

void
dmpg_rollback(PGconn *conn)
{
	if (conn == NULL || PQstatus(conn) != CONNECTION_OK)
		return;
	PGresult *res = PQexec(conn, "ROLLBACK");
	PQclear(res);
}

char *
dmpg_ident(PGconn *conn, const char *name)
{
	char *q = PQescapeIdentifier(conn, name, strlen(name));

	if (q == NULL) {
		dm_err("cannot quote identifier: %s", PQerrorMessage(conn));
		exit(DM_EXIT_FAIL);
	}
	char *copy = dm_xstrdup(q);
	PQfreemem(q);
	return copy;
}

int
dmpg_table_column(const dmpg_table *t, const char *name)
{
	for (size_t i = 0; i < t->ncols; i++)
		if (strcmp(t->cols[i].name, name) == 0)
			return (int)i;
	return -1;
}

int
dmpg_table_load(PGconn *conn, const char *schema, const char *name, int need_key, dmpg_table *t)
{
	const char *params[2] = { schema, name };
	PGresult *res = NULL;
	int rc = -1;

	memset(t, 0, sizeof *t);
	t->change_col = -1;
	res = dmpg_exec_params(conn,
	    "SELECT c.oid::text, c.relkind FROM pg_catalog.pg_class c"
	    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	    " WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')",
	    2, params);
	if (res == NULL)
		goto out;
	if (PQntuples(res) != 1) {
		dm_err("no table %s.%s: check the name (schema.table, case-sensitive)", schema, name);
		goto out;
	}
	char *oid = dm_xstrdup(PQgetvalue(res, 0, 0));
	t->relkind = PQgetvalue(res, 0, 1)[0];
	PQclear(res);
	t->schema = dm_xstrdup(schema);
	t->name = dm_xstrdup(name);
	char *qs = dmpg_ident(conn, schema), *qn = dmpg_ident(conn, name);
	t->qualified = dm_xasprintf("%s.%s", qs, qn);
	free(qs);
	free(qn);

	const char *oidp[1] = { oid };
	res = dmpg_exec_params(conn,
	    "SELECT a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod),"
	    " (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) = 'pg_catalog.bytea'::pg_catalog.regtype,"
	    " a.attgenerated <> '', a.attidentity = 'a', a.attnotnull, a.atthasdef,"
	    " (SELECT b.typcategory FROM pg_catalog.pg_type b"
	    "   WHERE b.oid = CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END),"
	    " t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace"
	    " FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid"
	    " WHERE a.attrelid = $1::pg_catalog.oid AND a.attnum > 0 AND NOT a.attisdropped"
	    " ORDER BY a.attnum", 1, oidp);
	if (res == NULL) {
		free(oid);
		goto out;
	}
	t->ncols = (size_t)PQntuples(res);
	t->cols = dm_xcalloc(t->ncols, sizeof *t->cols);
	for (size_t i = 0; i < t->ncols; i++) {
		dmpg_column *c = &t->cols[i];
		c->name = dm_xstrdup(PQgetvalue(res, (int)i, 0));
		c->type = dm_xstrdup(PQgetvalue(res, (int)i, 1));
		c->is_bytea = PQgetvalue(res, (int)i, 2)[0] == 't';
		c->generated = PQgetvalue(res, (int)i, 3)[0] == 't';
		c->identity_always = PQgetvalue(res, (int)i, 4)[0] == 't';
		c->not_null = PQgetvalue(res, (int)i, 5)[0] == 't';
		c->has_default = PQgetvalue(res, (int)i, 6)[0] == 't';
		c->category = PQgetvalue(res, (int)i, 7)[0];
		c->builtin = PQgetvalue(res, (int)i, 8)[0] == 't';
		if (t->change_col < 0 && !c->generated &&
		    (strcmp(c->name, "updated_at") == 0 || strcmp(c->name, "last_update") == 0))
			t->change_col = (int)i;
	}
	PQclear(res);

	res = dmpg_exec_params(conn,
	    "SELECT a.attname FROM pg_catalog.pg_index i,"
	    " LATERAL pg_catalog.unnest((i.indkey::pg_catalog.int2[])[0:i.indnkeyatts - 1])"
	    "   WITH ORDINALITY AS k(attnum, ord)"
	    " JOIN pg_catalog.pg_attribute a ON a.attnum = k.attnum"
	    " WHERE i.indrelid = $1::pg_catalog.oid AND i.indisprimary AND a.attrelid = i.indrelid"
	    " ORDER BY k.ord", 1, oidp);
	free(oid);
	if (res == NULL)
		goto out;
	t->nkey = (size_t)PQntuples(res);
	t->key = dm_xcalloc(t->nkey, sizeof *t->key);
	for (size_t i = 0; i < t->nkey; i++) {
		int idx = dmpg_table_column(t, PQgetvalue(res, (int)i, 0));
		if (idx < 0) {
			dm_err("primary key column %s not found", PQgetvalue(res, (int)i, 0));
			goto out;
		}
		t->key[i] = (size_t)idx;
	}
	if (need_key && t->nkey == 0) {
		dm_err("table %s.%s has no primary key: dm needs one to match rows: add one",
		    schema, name);
		goto out;
	}
	rc = 0;
out:
	PQclear(res);
	if (rc < 0)
		dmpg_table_free(t);
	return rc;
}

int
dmpg_query_load(PGconn *conn, const char *query, dmpg_table *t)
{
	memset(t, 0, sizeof *t);
	t->change_col = -1;
	char *sql = dm_xasprintf("SELECT * FROM (%s) AS dm_query LIMIT 0", query);
	PGresult *res = dmpg_exec(conn, sql);
	free(sql);
	if (res == NULL)
		return -1;
	t->ncols = (size_t)PQnfields(res);
	t->cols = dm_xcalloc(t->ncols + 1, sizeof *t->cols);
	t->relkind = 'q';
	int rc = 0;
	for (size_t i = 0; i < t->ncols && rc == 0; i++) {
		dmpg_column *c = &t->cols[i];
		char oid[16], mod[16];
		snprintf(oid, sizeof oid, "%u", PQftype(res, (int)i));
		snprintf(mod, sizeof mod, "%d", PQfmod(res, (int)i));
		const char *p[2] = { oid, mod };
		PGresult *tr = dmpg_exec_params(conn,
		    "SELECT pg_catalog.format_type($1::pg_catalog.oid, $2::pg_catalog.int4),"
		    " (SELECT b.typcategory FROM pg_catalog.pg_type b WHERE b.oid = CASE WHEN t.typtype = 'd'"
		    "   THEN t.typbasetype ELSE t.oid END),"
		    " t.typnamespace = 'pg_catalog'::pg_catalog.regnamespace,"
		    " (CASE WHEN t.typtype = 'd' THEN t.typbasetype ELSE t.oid END) = 'pg_catalog.bytea'::pg_catalog.regtype"
		    " FROM pg_catalog.pg_type t WHERE t.oid = $1::pg_catalog.oid", 2, p);
		if (tr == NULL || PQntuples(tr) != 1) {
			rc = -1;
		} else {
			c->name = dm_xstrdup(PQfname(res, (int)i));
			c->type = dm_xstrdup(PQgetvalue(tr, 0, 0));
			c->category = PQgetvalue(tr, 0, 1)[0];
			c->builtin = PQgetvalue(tr, 0, 2)[0] == 't';
			c->is_bytea = PQgetvalue(tr, 0, 3)[0] == 't';
			if (t->change_col < 0 && (strcmp(c->name, "updated_at") == 0 || strcmp(c->name, "last_update") == 0))
				t->change_col = (int)i;
		}
		PQclear(tr);
	}
	PQclear(res);
	if (rc < 0)
		dmpg_table_free(t);
	return rc;
}

void
dmpg_table_free(dmpg_table *t)
{
	if (t == NULL)
		return;
	for (size_t i = 0; i < t->ncols && t->cols != NULL; i++) {
		free(t->cols[i].name);
		free(t->cols[i].type);
	}
	free(t->cols);
	free(t->key);
	free(t->schema);
	free(t->name);
	free(t->qualified);
	memset(t, 0, sizeof *t);
	t->change_col = -1;
}

/*
 * Sends cmd, which must put the connection in COPY mode want; on anything
 * else reports "failure" (once, here). 0 or -1. label names it in -v output.
 */
static int
dmpg_copy_start(PGconn *conn, const char *cmd, ExecStatusType want, const char *label, const char *failure)
{
	dm_debug("%s: %s", label, cmd);
	PGresult *res = PQexec(conn, cmd);

	if (res == NULL || PQresultStatus(res) != want) {
		dmpg_report(conn, res, failure);
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
}

int
dmpg_copy_out_start(PGconn *conn, const char *sql)
{
	return dmpg_copy_start(conn, sql, PGRES_COPY_OUT, "sql", "COPY failed");
}

int
dmpg_copy_out_row(PGconn *conn, char **row)
{
	int n = PQgetCopyData(conn, row, 0);

	if (n >= 0)
		return n;
	if (n == -2) {
		dmpg_report(conn, NULL, "COPY failed");
		return -2;
	}
	/* End of data: the COPY's own result says whether it really succeeded. */
	PGresult *res;
	int rc = -1;
	while ((res = PQgetResult(conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			dmpg_report(conn, res, "COPY failed");
			rc = -2;
		}
		PQclear(res);
	}
	return rc;
}

void
dmpg_freemem(void *p)
{
	if (p != NULL)
		PQfreemem(p);
}

int
dmpg_copy_in_start(PGconn *conn, const char *sql)
{
	dm_debug("sql: %s", sql);
	PGresult *res = PQexec(conn, sql);

	if (res == NULL || PQresultStatus(res) != PGRES_COPY_IN) {
		dmpg_report(conn, res, "COPY failed");
		PQclear(res);
		return -1;
	}
	PQclear(res);
	return 0;
}

int
dmpg_copy_in_put(PGconn *conn, const char *data, size_t len)
{
	if (len > INT32_MAX || PQputCopyData(conn, data, (int)len) != 1) {
		dmpg_report(conn, NULL, "COPY failed");
		return -1;
	}
	return 0;
}

int
dmpg_copy_in_end(PGconn *conn, const char *abort_reason)
{
	int rc = 0;

	if (PQputCopyEnd(conn, abort_reason) != 1) {
		dmpg_report(conn, NULL, "COPY failed");
		rc = -1;
	}
	PGresult *res;
	while ((res = PQgetResult(conn)) != NULL) {
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			if (abort_reason == NULL)
				dmpg_report(conn, res, "COPY failed");
			rc = -1;
		}
		PQclear(res);
	}
	return rc;
}

int
dmpg_nrows(const PGresult *res)
{
	return PQntuples(res);
}

const char *
dmpg_value(const PGresult *res, int row, int col)
{
	return PQgetvalue(res, row, col);
}

int
dmpg_isnull(const PGresult *res, int row, int col)
{
	return PQgetisnull(res, row, col);
}

const char *
dmpg_cmd_tuples(PGresult *res)
{
	return PQcmdTuples(res);
}

int
dmpg_copy_both_start(PGconn *conn, const char *cmd)
{
	return dmpg_copy_start(conn, cmd, PGRES_COPY_BOTH, "replication", "cannot start replication");
}

/* The COPY ended: its result says whether the server ended it on an error. */
static int
dmpg_copy_both_result(PGconn *conn)
{
	PGresult *res;
	int rc = -1;

	while ((res = PQgetResult(conn)) != NULL) {
		ExecStatusType st = PQresultStatus(res);
		if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK && st != PGRES_COPY_OUT &&
		    st != PGRES_COPY_BOTH) {
			dmpg_report(conn, res, "replication failed");
			rc = -2;
		}
		PQclear(res);
		if (st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH)
			break;	/* still copying: never loop on a result that does not end */
	}
	return rc;
}

int
dmpg_copy_both_read(PGconn *conn, int timeout_ms, char **buf)
{
	*buf = NULL;
	for (int waited = 0;; waited = 1) {
		int n = PQgetCopyData(conn, buf, 1);
		if (n > 0)
			return n;
		if (n == -1)
			return dmpg_copy_both_result(conn);
		if (n == -2) {
			dmpg_report(conn, NULL, "replication connection lost");
			dmpg_transient = 1;
			return -2;
		}
		if (waited)
			return 0;
		struct pollfd pfd = { PQsocket(conn), POLLIN, 0 };
		if (pfd.fd < 0) {
			dmpg_report(conn, NULL, "replication connection lost");
			dmpg_transient = 1;
			return -2;
		}
		int got = poll(&pfd, 1, timeout_ms);
		if (got < 0 && errno == EINTR)
			return 0;
		if (got == 0)
			return 0;
		if (PQconsumeInput(conn) != 1) {
			dmpg_report(conn, NULL, "replication connection lost");
			dmpg_transient = 1;
			return -2;
		}
	}
}

int
dmpg_copy_both_send(PGconn *conn, const char *data, size_t len)
{
	if (len > INT32_MAX || PQputCopyData(conn, data, (int)len) != 1 || PQflush(conn) != 0) {
		dmpg_report(conn, NULL, "replication connection lost");
		dmpg_transient = 1;
		return -1;
	}
	return 0;
}
