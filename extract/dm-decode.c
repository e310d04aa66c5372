/*
 * dm-decode - follow the source by logical decoding (pgoutput) and write its
 * changed keys as a change feed (dm-stream(5), "Change feeds"); create, drop
 * and describe the replication slot and publication it reads through.
 */
#define _POSIX_C_SOURCE 200809L
#include "decode.h"
#include "pgoutput.h"
#include "state.h"

#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const char usage_text[] =
    "usage: dm-decode (--db CONNINFO | --db-env VAR) --slot NAME --publication NAME --create [--tables S.T,...]\n"
    "                 [--dest-env VAR]\n"
    "       dm-decode (--db ...) --slot NAME --publication NAME [--dest-env VAR]\n"
    "                 [--until-lsn LSN | --until-idle SECONDS] [--wait SECONDS]\n"
    "       dm-decode (--db ...) --slot NAME --drop [--drop-publication --publication NAME] [--wait SECONDS]\n"
    "                 [--dest-env VAR]\n"
    "       dm-decode (--db ...) --slot NAME --status | --set-readonly\n"
    "\n"
    "Follows the source database by logical decoding (the pgoutput plugin) and\n"
    "writes the keys of the rows changed in its published tables, transaction by\n"
    "transaction, as a change feed (dm-stream(5)) on standard output.\n"
    "\n"
    "  --db CONNINFO        the source's libpq connection string\n"
    "  --db-env VAR         read it from environment variable VAR\n"
    "  --slot NAME          the logical replication slot (a-z, 0-9, _)\n"
    "  --publication NAME   the publication of the tables to follow\n"
    "  --create             create the publication (with --tables) and the slot; print\n"
    "                       SNAPSHOT_NAME CONSISTENT_LSN, hold the snapshot until\n"
    "                       standard input closes (for dm-extract --snapshot)\n"
    "  --tables LIST        with --create: the tables, SCHEMA.TABLE,... to publish\n"
    "  --dest CONNINFO, --dest-env VAR\n"
    "                       the destination: the slot is confirmed up to the\n"
    "                       applied_lsn of dm.follow there, never further; without\n"
    "                       it nothing is confirmed. With --create, the slot's row\n"
    "                       there starts at the consistent point; --drop deletes it\n"
    "  --until-lsn LSN      stop after the first commit at or past LSN\n"
    "  --until-idle SECONDS stop after SECONDS without a change\n"
    "  --wait SECONDS       wait that long for a slot another process holds (default 10)\n"
    "  --drop               drop the slot\n"
    "  --drop-publication   with --drop: drop the publication too\n"
    "  --status             print the slot's positions, one name=value a line\n"
    "  --set-readonly       cut-over: make the source database read only for new\n"
    "                       transactions and end its open sessions (the statements\n"
    "                       are printed first)\n"
    "  -q, -v               quieter, more verbose\n"
    "  --help, --version\n";

volatile sig_atomic_t decode_stop;

static void
usage(void)
{
	fputs("usage: dm-decode (--db CONNINFO | --db-env VAR) --slot NAME"
	    " [--publication NAME] [--create [--tables S.T,...] | --drop | --status | --until-lsn LSN | --until-idle S]\n",
	    stderr);
	exit(DM_EXIT_USAGE);
}

/* Slot names are what PostgreSQL allows: lower-case letters, digits, underscores. */
static int
valid_slot(const char *s)
{
	size_t n = strlen(s);

	return n > 0 && n < 64 && strspn(s, "abcdefghijklmnopqrstuvwxyz0123456789_") == n;
}

int
decode_preflight(PGconn *src)
{
	PGresult *res = dmpg_exec(src,
	    "SELECT pg_catalog.current_setting('wal_level'),"
	    " (SELECT r.rolreplication OR r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname = CURRENT_USER),"
	    " CURRENT_USER");
	int rc = -1;

	if (res == NULL)
		return -1;
	if (strcmp(dmpg_value(res, 0, 0), "logical") != 0) {
		dm_err("the source cannot decode: wal_level is %s; ask the administrator to set wal_level = logical"
		    " (restart needed)", dmpg_value(res, 0, 0));
		goto out;
	}
	if (dmpg_value(res, 0, 1)[0] != 't') {
		dm_err("the source cannot decode: role %s has no REPLICATION privilege; ask the administrator"
		    " for ALTER ROLE %s REPLICATION", dmpg_value(res, 0, 2), dmpg_value(res, 0, 2));
		goto out;
	}
	rc = 0;
out:
	dmpg_clear(res);
	return rc;
}

void
decode_explain_refusal(PGconn *src)
{
	const char *m = dmpg_last_error();

	if (strstr(m, "replication role") != NULL || strstr(m, "REPLICATION") != NULL) {
		dm_err("the source cannot decode: the role has no REPLICATION privilege; ask the administrator"
		    " for ALTER ROLE ... REPLICATION (%s)", m);
	} else if (strstr(m, "pg_hba.conf") != NULL) {
		PGresult *res = src ? dmpg_exec(src, "SELECT CURRENT_USER, pg_catalog.current_database()") : NULL;
		dm_err("the source refuses replication connections: ask the administrator for a pg_hba.conf line"
		    " for user %s and database %s (a logical replication connection matches the database's"
		    " name, not the keyword replication), then a reload (%s)",
		    res ? dmpg_value(res, 0, 0) : "?", res ? dmpg_value(res, 0, 1) : "?", m);
		dmpg_clear(res);
	} else if (strstr(m, "max_wal_senders") != NULL) {
		dm_err("the source cannot decode: every WAL sender is busy; ask the administrator to raise"
		    " max_wal_senders (restart needed) (%s)", m);
	} else {
		dm_err("%s", m);
	}
}

/* Does the slot exist? 1 yes (a pgoutput slot of this database), 0 no, -1 error printed. */
static int
slot_exists(PGconn *src, const char *slot)
{
	const char *p[1] = { slot };
	PGresult *res = dmpg_exec_params(src,
	    "SELECT s.slot_type, s.plugin, s.database = pg_catalog.current_database()"
	    " FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1", 1, p);
	int rc = -1;

	if (res == NULL)
		return -1;
	if (dmpg_nrows(res) == 0) {
		rc = 0;
	} else if (strcmp(dmpg_value(res, 0, 0), "logical") != 0 || strcmp(dmpg_value(res, 0, 1), "pgoutput") != 0 ||
	    dmpg_value(res, 0, 2)[0] != 't') {
		dm_err("replication slot %s is not a pgoutput slot of this database (%s, %s): name another --slot",
		    slot, dmpg_value(res, 0, 0), dmpg_isnull(res, 0, 1) ? "no plugin" : dmpg_value(res, 0, 1));
	} else {
		rc = 1;
	}
	dmpg_clear(res);
	return rc;
}

int
decode_slot_free(PGconn *src, const decode_opts *o, char **confirmed)
{
	const char *p[1] = { o->slot };
	struct timespec start, now;

	*confirmed = NULL;
	clock_gettime(CLOCK_MONOTONIC, &start);
	for (;;) {
		int e = slot_exists(src, o->slot);
		if (e < 0)
			return -1;
		if (e == 0) {
			dm_err("no replication slot %s: create it with dm-decode --create", o->slot);
			return -1;
		}
		PGresult *res = dmpg_exec_params(src,
		    "SELECT s.active_pid, s.confirmed_flush_lsn::pg_catalog.text"
		    " FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1", 1, p);
		if (res == NULL)
			return -1;
		if (dmpg_nrows(res) == 1 && dmpg_isnull(res, 0, 0)) {
			*confirmed = dm_xstrdup(dmpg_isnull(res, 0, 1) ? "0/0" : dmpg_value(res, 0, 1));
			dmpg_clear(res);
			return 0;
		}
		char *pid = dm_xstrdup(dmpg_nrows(res) == 1 ? dmpg_value(res, 0, 0) : "?");
		dmpg_clear(res);
		clock_gettime(CLOCK_MONOTONIC, &now);
		if ((uint64_t)(now.tv_sec - start.tv_sec) >= o->wait_s) {
			dm_err("replication slot %s is in use by process %s: another dm-decode follows it", o->slot, pid);
			free(pid);
			return 1;
		}
		free(pid);
		struct timespec pause = { 0, 200 * 1000 * 1000 };
		nanosleep(&pause, NULL);
	}
}

int
decode_check_identity(PGconn *src, const char *publication)
{
	const char *p[1] = { publication };
	PGresult *res = dmpg_exec_params(src,
	    "SELECT pg_catalog.format('%I.%I', t.schemaname, t.tablename), c.relreplident,"
	    " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),"
	    " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisreplident)"
	    " FROM pg_catalog.pg_publication_tables t"
	    " JOIN pg_catalog.pg_namespace n ON n.nspname = t.schemaname"
	    " JOIN pg_catalog.pg_class c ON c.relnamespace = n.oid AND c.relname = t.tablename"
	    " WHERE t.pubname = $1 ORDER BY 1", 1, p);
	int rc = 0;

	if (res == NULL)
		return -1;
	for (int i = 0; i < dmpg_nrows(res) && rc == 0; i++) {
		const char *t = dmpg_value(res, i, 0);
		char ident = dmpg_value(res, i, 1)[0];
		int pk = dmpg_value(res, i, 2)[0] == 't', idx = dmpg_value(res, i, 3)[0] == 't';
		if ((ident == 'd' && pk) || (ident == 'i' && idx))
			continue;
		rc = -1;
		if (ident == 'f')
			dm_err("table %s has REPLICA IDENTITY FULL: dm follows keys; ALTER TABLE %s REPLICA IDENTITY"
			    " DEFAULT (with a primary key) or USING INDEX (a unique index on NOT NULL columns)", t, t);
		else
			dm_err("table %s has no primary key or replica identity: its updates and deletes cannot"
			    " be followed; add a primary key, or ALTER TABLE %s REPLICA IDENTITY USING INDEX ...", t, t);
	}
	dmpg_clear(res);
	return rc;
}

/* Does the publication exist? 1, 0, or -1 error printed. */
static int
publication_exists(PGconn *src, const char *publication)
{
	const char *p[1] = { publication };
	PGresult *res = dmpg_exec_params(src, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", 1, p);

	if (res == NULL)
		return -1;
	int n = dmpg_nrows(res);
	dmpg_clear(res);
	return n > 0;
}

/*
 * Creates the publication over the --tables, or checks an existing one
 * covers them. 0, or -1 after printing why.
 */
static int
ensure_publication(PGconn *src, const decode_opts *o)
{
	int exists = publication_exists(src, o->publication), rc = -1;
	dm_buf sql = { 0 };
	char *copy = NULL, *save = NULL;

	if (exists < 0)
		return -1;
	if (o->tables == NULL) {
		if (!exists)
			dm_err("no publication %s: name the tables to publish with --tables", o->publication);
		return exists ? 0 : -1;
	}
	char *qp = dmpg_ident(src, o->publication);
	dm_buf_printf(&sql, "CREATE PUBLICATION %s FOR TABLE ", qp);
	free(qp);
	copy = dm_xstrdup(o->tables);
	int n = 0;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save), n++) {
		char *schema = NULL, *name = NULL;
		if (dm_split_table(t, &schema, &name) < 0) {
			dm_err("--tables: %s is not SCHEMA.TABLE", t);
			goto out;
		}
		const char *p[3] = { schema, name, o->publication };
		PGresult *res = dmpg_exec_params(src,
		    "SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n"
		    "   ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2 AND c.relkind IN ('r', 'p')),"
		    " EXISTS (SELECT 1 FROM pg_catalog.pg_publication_tables t"
		    "   WHERE t.pubname = $3 AND t.schemaname = $1 AND t.tablename = $2)", 3, p);
		int found = res && dmpg_value(res, 0, 0)[0] == 't', covered = res && dmpg_value(res, 0, 1)[0] == 't';
		char *qs = dmpg_ident(src, schema), *qn = dmpg_ident(src, name);
		dm_buf_printf(&sql, "%s%s.%s", n ? ", " : "", qs, qn);
		if (res != NULL && !found)
			dm_err("--tables: no table %s: check the name (schema.table, case-sensitive)", t);
		else if (res != NULL && exists && !covered)
			dm_err("publication %s exists but does not cover %s: ALTER PUBLICATION %s ADD TABLE %s.%s,"
			    " or name another --publication", o->publication, t, o->publication, qs, qn);
		free(qs);
		free(qn);
		free(schema);
		free(name);
		dmpg_clear(res);
		if (res == NULL || !found || (exists && !covered))
			goto out;
	}
	if (n == 0) {
		dm_err("--tables is empty");
		goto out;
	}
	if (!exists && dmpg_run(src, dm_buf_cstr(&sql)) < 0)
		goto out;
	rc = 0;
out:
	free(copy);
	dm_buf_free(&sql);
	return rc;
}

/*
 * The slot's row in the destination's dm.follow: set to lsn (a new slot
 * starts there, whatever an older slot of that name had applied), or
 * deleted when lsn is NULL. 0, or -1 after printing why.
 */
static int
set_follow_row(PGconn *dest, const char *slot, const char *lsn)
{
	const char *p[2] = { slot, lsn };

	if (lsn == NULL)
		return dmpg_run_params(dest, "DELETE FROM dm.follow WHERE slot = $1", 1, p);
	return dmpg_run_params(dest,
	    "INSERT INTO dm.follow AS f (slot, applied_lsn, applied_at, commit_time)"
	    " VALUES ($1, $2::pg_catalog.pg_lsn, pg_catalog.now(), NULL)"
	    " ON CONFLICT (slot) DO UPDATE SET applied_lsn = EXCLUDED.applied_lsn,"
	    " applied_at = EXCLUDED.applied_at, commit_time = NULL", 2, p);
}

/* Connects to the destination of --dest and makes sure dm.follow is there; NULL after printing why. */
static PGconn *
connect_dest(const decode_opts *o)
{
	PGconn *dest = dmpg_connect(o->dest_conninfo, "destination");

	if (dest != NULL && dmstate_ensure(dest) < 0) {
		dmpg_finish(dest);
		return NULL;
	}
	return dest;
}

/*
 * --create: the publication, then the slot with an exported snapshot, whose
 * name and consistent point go to stdout; the snapshot is held (the
 * replication connection stays idle) until stdin closes, so that the first
 * full read and the feed meet without a gap.
 */
static int
do_create(const decode_opts *o)
{
	PGconn *src = dmpg_connect(o->conninfo, "source"), *repl = NULL, *dest = NULL;
	PGresult *res = NULL, *ver = NULL;
	int rc = DM_EXIT_FAIL;
	char buf[256];

	if (src == NULL || decode_preflight(src) < 0)
		goto out;
	if (o->dest_conninfo != NULL && (dest = connect_dest(o)) == NULL)
		goto out;
	int e = slot_exists(src, o->slot);
	if (e < 0)
		goto out;
	if (e > 0) {
		dm_err("replication slot %s already exists: follow it (dm-decode without --create),"
		    " or drop it first (dm-decode --drop)", o->slot);
		goto out;
	}
	res = dmpg_exec(src,
	    "SELECT (SELECT pg_catalog.count(*) FROM pg_catalog.pg_replication_slots),"
	    " pg_catalog.current_setting('max_replication_slots')::pg_catalog.int4");
	if (res == NULL)
		goto out;
	if (strtol(dmpg_value(res, 0, 0), NULL, 10) >= strtol(dmpg_value(res, 0, 1), NULL, 10)) {
		dm_err("the source cannot decode: all %s replication slots are in use (max_replication_slots = %s);"
		    " ask the administrator to raise max_replication_slots (restart needed), or drop a slot no"
		    " longer used (dm-decode --drop)", dmpg_value(res, 0, 1), dmpg_value(res, 0, 1));
		goto out;
	}
	dmpg_clear(res);
	res = NULL;
	if (ensure_publication(src, o) < 0 || decode_check_identity(src, o->publication) < 0)
		goto out;
	ver = dmpg_exec(src, "SELECT pg_catalog.current_setting('server_version_num')::pg_catalog.int4 >= 150000");
	if (ver == NULL)
		goto out;
	repl = dmpg_connect_replication(o->conninfo, "source");
	if (repl == NULL) {
		decode_explain_refusal(src);
		goto out;
	}
	/* Nothing of ours may be open: creating the slot waits for every running transaction. */
	dmpg_finish(src);
	src = NULL;
	char *cmd = dm_xasprintf("CREATE_REPLICATION_SLOT %s LOGICAL pgoutput %s", o->slot,
	    dmpg_value(ver, 0, 0)[0] == 't' ? "(SNAPSHOT 'export')" : "EXPORT_SNAPSHOT");
	res = dmpg_exec(repl, cmd);
	free(cmd);
	if (res == NULL)
		goto out;
	if (dest != NULL && set_follow_row(dest, o->slot, dmpg_value(res, 0, 1)) < 0) {
		dm_err("the slot was created, but its row in dm.follow could not be set: drop the slot"
		    " (dm-decode --drop) and create it again");
		goto out;
	}
	printf("%s %s\n", dmpg_value(res, 0, 2), dmpg_value(res, 0, 1));
	if (fflush(stdout) != 0 || ferror(stdout)) {
		dm_err("cannot write the snapshot name: standard output failed");
		goto out;
	}
	while (fgets(buf, sizeof buf, stdin) != NULL)
		;
	rc = DM_EXIT_OK;
out:
	dmpg_clear(res);
	dmpg_clear(ver);
	dmpg_finish(src);
	dmpg_finish(repl);
	dmpg_finish(dest);
	return rc;
}

static int
do_drop(const decode_opts *o)
{
	PGconn *src = dmpg_connect(o->conninfo, "source"), *dest = NULL;
	char *confirmed = NULL;
	int rc = DM_EXIT_FAIL;

	if (src == NULL || decode_preflight(src) < 0)
		goto out;
	if (o->dest_conninfo != NULL && (dest = connect_dest(o)) == NULL)
		goto out;
	int busy = decode_slot_free(src, o, &confirmed);
	if (busy != 0) {
		rc = busy > 0 ? DM_EXIT_LOCKED : DM_EXIT_FAIL;
		goto out;
	}
	const char *p[1] = { o->slot };
	if (dmpg_run_params(src, "SELECT pg_catalog.pg_drop_replication_slot($1)", 1, p) < 0)
		goto out;
	if (o->drop_publication) {
		char *qp = dmpg_ident(src, o->publication);
		char *sql = dm_xasprintf("DROP PUBLICATION IF EXISTS %s", qp);
		int r = dmpg_run(src, sql);
		free(sql);
		free(qp);
		if (r < 0)
			goto out;
	}
	if (dest != NULL && set_follow_row(dest, o->slot, NULL) < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	free(confirmed);
	dmpg_finish(src);
	dmpg_finish(dest);
	return rc;
}

static int
do_status(const decode_opts *o)
{
	static const char *const names[] = { "slot", "plugin", "database", "active", "active_pid",
		"confirmed_flush_lsn", "restart_lsn", "current_lsn", "retained_bytes", "pending_bytes",
		"wal_status", NULL };
	PGconn *src = dmpg_connect(o->conninfo, "source");
	PGresult *res = NULL;
	int rc = DM_EXIT_FAIL;
	const char *p[1] = { o->slot };

	if (src == NULL)
		goto out;
	res = dmpg_exec_params(src,
	    "SELECT s.slot_name, s.plugin, s.database, s.active, s.active_pid,"
	    " s.confirmed_flush_lsn, s.restart_lsn, pg_catalog.pg_current_wal_lsn(),"
	    " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.restart_lsn)::pg_catalog.int8,"
	    " pg_catalog.pg_wal_lsn_diff(pg_catalog.pg_current_wal_lsn(), s.confirmed_flush_lsn)::pg_catalog.int8,"
	    " s.wal_status"
	    " FROM pg_catalog.pg_replication_slots s WHERE s.slot_name = $1", 1, p);
	if (res == NULL)
		goto out;
	if (dmpg_nrows(res) == 0) {
		dm_err("no replication slot %s: create it with dm-decode --create", o->slot);
		goto out;
	}
	for (int i = 0; names[i]; i++) {
		const char *v = dmpg_isnull(res, 0, i) ? "" : dmpg_value(res, 0, i);
		if (i == 3)
			v = v[0] == 't' ? "true" : "false";
		printf("%s=%s\n", names[i], v);
	}
	rc = dm_close_output(stdout, "standard output") < 0 ? DM_EXIT_FAIL : DM_EXIT_OK;
out:
	dmpg_clear(res);
	dmpg_finish(src);
	return rc;
}

/*
 * --set-readonly, for a cut-over: new transactions of the source database
 * are read only, and the sessions open in it (but ours; replication is not
 * a client session) are ended, so that none goes on writing in a
 * transaction it began before. Each statement is printed before it runs.
 */
static int
do_set_readonly(const decode_opts *o)
{
	PGconn *src = dmpg_connect(o->conninfo, "source");
	PGresult *res = NULL;
	char *q = NULL, *alter = NULL;
	int rc = DM_EXIT_FAIL;
	static const char terminate[] =
	    "SELECT pg_catalog.count(pg_catalog.pg_terminate_backend(a.pid)) FROM pg_catalog.pg_stat_activity a"
	    " WHERE a.datname = pg_catalog.current_database() AND a.pid <> pg_catalog.pg_backend_pid()"
	    " AND a.backend_type = 'client backend'";

	if (src == NULL)
		goto out;
	res = dmpg_exec(src, "SELECT pg_catalog.current_database()");
	if (res == NULL)
		goto out;
	q = dmpg_ident(src, dmpg_value(res, 0, 0));
	alter = dm_xasprintf("ALTER DATABASE %s SET default_transaction_read_only = on", q);
	dmpg_clear(res);
	res = NULL;
	printf("%s;\n", alter);
	fflush(stdout);
	if (dmpg_run(src, alter) < 0) {
		dm_err("cannot make the source read only: the role needs to own the database (or be a superuser)");
		goto out;
	}
	printf("%s;\n", terminate);
	fflush(stdout);
	res = dmpg_exec(src, terminate);
	if (res == NULL) {
		dm_err("the source is read only for new sessions, but the open ones could not be ended"
		    " (the role needs pg_signal_backend): end them by hand");
		goto out;
	}
	dm_info("the source takes no more writes: %s session(s) ended; undo with SET default_transaction_read_only"
	    " = off; ALTER DATABASE %s RESET default_transaction_read_only", dmpg_value(res, 0, 0), q);
	rc = dm_close_output(stdout, "standard output") < 0 ? DM_EXIT_FAIL : DM_EXIT_OK;
out:
	dmpg_clear(res);
	free(q);
	free(alter);
	dmpg_finish(src);
	return rc;
}

static void
on_stop(int sig)
{
	(void)sig;
	decode_stop = 1;
}

int
main(int argc, char **argv)
{
	enum { O_DB = 256, O_DBENV, O_DEST, O_DESTENV, O_SLOT, O_PUB, O_CREATE, O_TABLES, O_DROP, O_DROPPUB,
		O_STATUS, O_UNTIL_LSN, O_UNTIL_IDLE, O_WAIT, O_READONLY };
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "dest", required_argument, NULL, O_DEST },
		{ "dest-env", required_argument, NULL, O_DESTENV },
		{ "slot", required_argument, NULL, O_SLOT },
		{ "publication", required_argument, NULL, O_PUB },
		{ "create", no_argument, NULL, O_CREATE },
		{ "tables", required_argument, NULL, O_TABLES },
		{ "drop", no_argument, NULL, O_DROP },
		{ "drop-publication", no_argument, NULL, O_DROPPUB },
		{ "status", no_argument, NULL, O_STATUS },
		{ "set-readonly", no_argument, NULL, O_READONLY },
		{ "until-lsn", required_argument, NULL, O_UNTIL_LSN },
		{ "until-idle", required_argument, NULL, O_UNTIL_IDLE },
		{ "wait", required_argument, NULL, O_WAIT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	const char *db = NULL, *db_env = NULL, *dest = NULL, *dest_env = NULL;
	const char *until_lsn = NULL, *until_idle = NULL, *wait = NULL;
	int create = 0, drop = 0, status = 0, readonly = 0, ch;
	decode_opts o = { 0 };

	dm_prog = "dm-decode";
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	while ((ch = getopt_long(argc, argv, "qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
		case O_DEST: dest = optarg; break;
		case O_DESTENV: dest_env = optarg; break;
		case O_SLOT: o.slot = optarg; break;
		case O_PUB: o.publication = optarg; break;
		case O_CREATE: create = 1; break;
		case O_TABLES: o.tables = optarg; break;
		case O_DROP: drop = 1; break;
		case O_DROPPUB: o.drop_publication = 1; break;
		case O_STATUS: status = 1; break;
		case O_READONLY: readonly = 1; break;
		case O_UNTIL_LSN: until_lsn = optarg; break;
		case O_UNTIL_IDLE: until_idle = optarg; break;
		case O_WAIT: wait = optarg; break;
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	int follow = !create && !drop && !status && !readonly;
	if (optind != argc || o.slot == NULL || create + drop + status + readonly > 1 ||
	    (readonly && (dest || dest_env || wait)))
		usage();
	if ((o.tables && !create) || (o.drop_publication && (!drop || o.publication == NULL)) ||
	    ((create || follow) && o.publication == NULL) ||
	    (status && (dest || dest_env)) || (!follow && (until_lsn || until_idle)) || (until_lsn && until_idle) ||
	    (wait && (create || status)))
		usage();
	if (!valid_slot(o.slot)) {
		dm_err("--slot %s: a slot name is 1 to 63 lower-case letters, digits and underscores", o.slot);
		return DM_EXIT_USAGE;
	}
	if (until_lsn && (dmpgo_lsn_parse(until_lsn, &o.until_lsn) < 0 || o.until_lsn == 0)) {
		dm_err("--until-lsn %s: expected an LSN such as 0/16B3748", until_lsn);
		return DM_EXIT_USAGE;
	}
	uint64_t n;
	if (until_idle) {
		if (dm_parse_u64(until_idle, &n) < 0 || n == 0 || n > 86400 * 365) {
			dm_err("--until-idle %s: expected a number of seconds, at least 1", until_idle);
			return DM_EXIT_USAGE;
		}
		o.until_idle_ms = n * 1000;
	}
	o.wait_s = 10;
	if (wait) {
		if (dm_parse_u64(wait, &n) < 0 || n > 86400) {
			dm_err("--wait %s: expected a number of seconds", wait);
			return DM_EXIT_USAGE;
		}
		o.wait_s = n;
	}
	dm_subject = o.slot;
	o.conninfo = dm_conninfo(db, db_env);
	if (o.conninfo == NULL)
		return DM_EXIT_USAGE;
	if (dest || dest_env) {
		o.dest_conninfo = dm_conninfo(dest, dest_env);
		if (o.dest_conninfo == NULL)
			return DM_EXIT_USAGE;
	}
	/* A closed pipe is an error we report, not a silent death. */
	signal(SIGPIPE, SIG_IGN);
	dmpg_application_name = create ? "dm-decode create" : follow ? "dm-decode" : "dm-decode admin";
	int rc;
	if (create)
		rc = do_create(&o);
	else if (drop)
		rc = do_drop(&o);
	else if (status)
		rc = do_status(&o);
	else if (readonly)
		rc = do_set_readonly(&o);
	else {
		struct sigaction sa;
		memset(&sa, 0, sizeof sa);
		sa.sa_handler = on_stop;
		sigemptyset(&sa.sa_mask);
		/* Writes resume after the signal; the wait for the server (poll) ends at once, never resumed. */
		sa.sa_flags = SA_RESTART;
		sigaction(SIGTERM, &sa, NULL);
		sigaction(SIGINT, &sa, NULL);
		rc = decode_follow(&o);
	}
	return dmpg_exit_code(rc);
}
