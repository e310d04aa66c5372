/*
 * dm-ckpt - read and change the checkpoints dm keeps in the destination's
 * dm schema. Output is tab-separated, one record per line, "-" for none.
 */
#define _POSIX_C_SOURCE 200809L
#include "pg.h"
#include "report.h"
#include "state.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static const char usage_text[] =
    "usage: dm-ckpt (--db CONNINFO | --db-env VAR) [--json] [-q] [-v] COMMAND [ARG...]\n"
    "\n"
    "Commands:\n"
    "  list                 ENTITY WATERMARK UPDATED_AT RUN_ID COMPLETE, one line each\n"
    "  show ENTITY          every field of one checkpoint, as name=value lines\n"
    "  watermark ENTITY     the watermark alone (nothing when there is none)\n"
    "  set ENTITY VALUE     set the watermark: the next incremental run reads from VALUE\n"
    "  reset [ENTITY]       forget the checkpoint (all when no ENTITY): next run is full;\n"
    "                       also the entity's key ranges and their checkpoints\n"
    "  runs [ENTITY]        recent runs: RUN_ID ENTITY STARTED FINISHED OUTCOME\n"
    "                       INSERTED UPDATED DELETED UNCHANGED\n"
    "  status [ENTITY...]   per entity its checkpoint and last run, and the loads in\n"
    "                       progress, as tables (with --json: the JSON report that\n"
    "                       dm-migrate --json status and dm-serve print)\n"
    "  follow [SLOT]        the followed slots: SLOT APPLIED_LSN COMMIT_TIME APPLIED_AT\n"
    "                       (dm-migrate follow; nothing for a slot never followed)\n"
    "  follow-reset SLOT    forget how far SLOT was followed (dm-migrate follow --reset)\n"
    "  cutover RUN_ID SECONDS ENTITY...\n"
    "                       record a cut-over in dm.run (dm-migrate cutover)\n"
    "  follow-stats SLOT SOURCE_LSN RESTART_LSN SYNCED_AT [ENTITY...]\n"
    "                       what the follower saw of the source, for status (- unknown)\n"
    "  hold ENTITY...       hold the entities for one run: prints \"held\" once all\n"
    "                       are held (exit 6 if another run holds one), then holds\n"
    "                       them until signalled (TERM, INT, HUP) or its parent\n"
    "                       process ends; dm-migrate holds its entities this way\n"
    "\n"
    "  --db CONNINFO        destination connection string or URI\n"
    "  --db-env VAR         read it from environment variable VAR\n"
    "  --run-id ID          hold: the run that holds (default: hold/PID)\n"
    "  --wait SECONDS       hold: wait that long for another run to let go (default 0)\n"
    "  --parent PID         hold: the process whose end ends the hold (default: the\n"
    "                       parent); if it has ended already, nothing is held\n"
    "  --json               status: print JSON\n";

static void
usage(void)
{
	fputs("usage: dm-ckpt (--db CONNINFO | --db-env VAR) list | show ENTITY | watermark ENTITY |"
	    " set ENTITY VALUE | reset [ENTITY] | runs [ENTITY] | [--json] status [ENTITY...] |"
	    " [--run-id ID] [--wait SECONDS] [--parent PID] hold ENTITY...\n", stderr);
	exit(DM_EXIT_USAGE);
}

/* Prints a result as tab-separated lines; NULL as "-". */
static void
print_rows(PGresult *res, int ncols)
{
	for (int r = 0; r < dmpg_nrows(res); r++) {
		for (int c = 0; c < ncols; c++) {
			if (c)
				putchar('\t');
			fputs(dmpg_isnull(res, r, c) ? "-" : dmpg_value(res, r, c), stdout);
		}
		putchar('\n');
	}
}

/* A run's hold on an entity is a lease of its own name, apart from dm-load's. */
#define HOLD_PREFIX "run:"
#define HOLD_TTL 60

static volatile sig_atomic_t hold_stop;

static void
hold_on_signal(int sig)
{
	(void)sig;
	hold_stop = 1;
}

static double
hold_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/*
 * Takes or renews (renew != 0) every entity's run lease in one transaction:
 * all or none. 1 all held, 0 one is held by another live run (named on
 * stderr when say_holder), -1 error (logged). A take tries all the leases
 * in one round of statements first (a run may hold hundreds; a round trip
 * each was most of a run's start), and goes lease by lease only when that
 * failed, to learn which one is held and by whom.
 */
static int
hold_all(PGconn *conn, char **entities, int n, const char *owner, int renew, int say_holder)
{
	int rc = -1;
	char *name = NULL, *holder = NULL;

	if (!renew) {
		if (dmpg_begin(conn, "", NULL) < 0)
			return -1;
		int got = dmstate_leases_take(conn, entities, n, HOLD_PREFIX, owner, HOLD_TTL);
		if (got > 0)
			return dmpg_commit(conn) < 0 ? -1 : 1;
		dmpg_rollback(conn);
		if (got < 0)
			return -1;
	}
	if (dmpg_begin(conn, "", NULL) < 0)
		return -1;
	for (int i = 0; i < n; i++) {
		free(name);
		name = dm_xasprintf("%s%s", HOLD_PREFIX, entities[i]);
		if (renew) {
			dm_subject = entities[i];
			if (dmstate_lease_renew(conn, name, owner, HOLD_TTL) < 0)
				goto out;
			continue;
		}
		int got = dmstate_lease_take(conn, name, owner, HOLD_TTL, &holder);
		if (got < 0)
			goto out;
		if (got == 0) {
			if (say_holder) {
				dm_subject = entities[i];
				dm_err("another run holds this entity: %s (dm-migrate --wait SECONDS waits for it)",
				    holder ? holder : "lease held");
			}
			rc = 0;
			goto out;
		}
	}
	if (dmpg_commit(conn) < 0)
		goto out;
	free(name);
	return 1;
out:
	dmpg_rollback(conn);
	free(name);
	free(holder);
	return rc;
}

/*
 * hold_reconnect: the hold's connection died (terminated, server restart).
 * Connects again and takes the leases back (they are still ours, or dead):
 * 1 held again, 0 another run took one meanwhile, -1 no connection within
 * half a lease's life. *connp is replaced; the caller still owns it.
 */
static int
hold_reconnect(PGconn **connp, const char *conninfo, char **entities, int n, const char *owner)
{
	double give_up = hold_now() + HOLD_TTL / 2.0;

	dm_info("the connection holding the entities was lost: connecting again");
	while (!hold_stop && hold_now() < give_up) {
		dmpg_finish(*connp);
		*connp = dmpg_connect(conninfo, "destination");
		if (*connp != NULL) {
			int got = hold_all(*connp, entities, n, owner, 0, 1);
			if (got >= 0)
				return got;
		}
		struct timespec second = { 1, 0 };
		nanosleep(&second, NULL);
	}
	return -1;
}

/*
 * hold: takes every entity's run lease (waiting up to wait_seconds), says
 * "held" on stdout, then renews them until a signal (TERM, INT, HUP) comes
 * or the process that started us ends, and releases them. A lost connection
 * is made again and the leases taken back; if another run got one meanwhile,
 * the hold ends with a failure (the driver checks before its deletes). The
 * lease dies with this process's backend too, so nothing is left held.
 */
/* The start time of process pid (/proc/PID/stat, field 22), or 0 when it cannot be read. */
static unsigned long long
hold_proc_start(pid_t pid)
{
	char path[64], buf[1024];
	unsigned long long start = 0;
	snprintf(path, sizeof path, "/proc/%ld/stat", (long)pid);
	FILE *fp = fopen(path, "r");
	if (fp == NULL)
		return 0;
	size_t n = fread(buf, 1, sizeof buf - 1, fp);
	fclose(fp);
	buf[n] = '\0';
	/* after the command name, in parentheses that may hold anything: state is field 3 */
	char *p = strrchr(buf, ')');
	for (int field = 2; p != NULL && field < 22; field++)
		p = strchr(p + 1, ' ');
	if (p != NULL)
		start = strtoull(p + 1, NULL, 10);
	return start;
}

/* Whether process pid still runs, and is the one that started at born (0: unknown). */
static int
hold_alive(pid_t pid, unsigned long long born)
{
	if (kill(pid, 0) < 0 && errno != EPERM)
		return 0;
	return born == 0 || hold_proc_start(pid) == born;
}

static int
hold_entities(PGconn **connp, const char *conninfo, char **entities, int n, const char *owner,
    double wait_seconds, pid_t parent)
{
	double deadline = hold_now() + wait_seconds;
	int got;

	/*
	 * A parent killed between its fork and our first getppid() would leave us
	 * watching our new parent, held forever: the caller names itself, and it
	 * is watched by pid and start time (a wrapper such as time(1) in between
	 * is no parent of ours to watch, and a pid can be reused).
	 */
	unsigned long long born = hold_proc_start(parent);
	if (!hold_alive(parent, born)) {
		dm_err("hold: process %ld, which the hold was for, is gone: nothing held", (long)parent);
		return DM_EXIT_FAIL;
	}

	signal(SIGTERM, hold_on_signal);
	signal(SIGINT, hold_on_signal);
	signal(SIGHUP, hold_on_signal);
	while ((got = hold_all(*connp, entities, n, owner, 0, hold_now() >= deadline)) == 0) {
		if (hold_now() >= deadline)
			return DM_EXIT_LOCKED;
		if (hold_stop)
			return DM_EXIT_FAIL;
		struct timespec half = { 0, 500000000L };
		nanosleep(&half, NULL);
	}
	if (got < 0)
		return DM_EXIT_FAIL;
	if (puts("held") == EOF || fflush(stdout) == EOF) {
		dm_err("cannot write to standard output: %s", strerror(errno));
		got = -1;
	}
	double renew_at = hold_now() + HOLD_TTL / 4.0;
	while (got > 0 && !hold_stop && hold_alive(parent, born)) {
		/* A second at most between looks at the parent; a signal cuts it short. */
		struct timespec second = { 1, 0 };
		nanosleep(&second, NULL);
		if (!hold_stop && hold_now() >= renew_at) {
			got = hold_all(*connp, entities, n, owner, 1, 1);
			/* Whatever failed (a crash's SQLSTATE is not always a transient one), a new session decides. */
			if (got < 0)
				got = hold_reconnect(connp, conninfo, entities, n, owner);
			renew_at = hold_now() + HOLD_TTL / 4.0;
		}
	}
	/*
	 * Released over a new connection when the old one is gone, for up to ten
	 * seconds (a server back from a crash refuses connections while it
	 * recovers): a lease left behind would only be taken over, but says
	 * nothing true.
	 */
	double give_up = hold_now() + 10;
	for (int attempt = 0;; attempt++) {
		/* A connection lost while we idled is no news: it is made again below. */
		dmpg_quiet_errors(hold_now() < give_up);
		if (*connp != NULL && dmpg_begin(*connp, "", NULL) == 0) {
			int r = dmstate_leases_release(*connp, entities, n, HOLD_PREFIX, owner);
			if (r == 0 && dmpg_commit(*connp) == 0) {
				dmpg_quiet_errors(0);
				return got > 0 ? DM_EXIT_OK : DM_EXIT_FAIL;
			}
			dmpg_rollback(*connp);
		}
		if (hold_now() >= give_up)
			break;
		if (attempt > 0) {
			struct timespec half = { 0, 500000000L };
			nanosleep(&half, NULL);
		}
		dmpg_finish(*connp);
		*connp = dmpg_connect(conninfo, "destination");
	}
	dmpg_quiet_errors(0);
	return DM_EXIT_FAIL;
}

int
main(int argc, char **argv)
{
	const char *db = NULL, *db_env = NULL;
	PGconn *conn = NULL;
	PGresult *res = NULL;
	int rc = DM_EXIT_FAIL;

	dm_prog = "dm-ckpt";
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	const char *run_id = NULL;
	double wait_seconds = 0;
	pid_t parent = getppid();
	char owner[160];
	int json = 0;
	enum { O_DB = 256, O_DBENV, O_RUNID, O_WAIT, O_JSON, O_PARENT };
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "run-id", required_argument, NULL, O_RUNID },
		{ "wait", required_argument, NULL, O_WAIT },
		{ "json", no_argument, NULL, O_JSON },
		{ "parent", required_argument, NULL, O_PARENT },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "+qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
		case O_RUNID: run_id = optarg; break;
		case O_JSON: json = 1; break;
		case O_PARENT: {
			uint64_t v;
			if (dm_parse_u64(optarg, &v) < 0 || v < 1 || v > INT32_MAX)
				usage();
			parent = (pid_t)v;
			break;
		}
		case O_WAIT: {
			char *end;
			errno = 0;
			wait_seconds = strtod(optarg, &end);
			if (errno != 0 || end == optarg || *end != '\0' || !(wait_seconds >= 0) || wait_seconds > 86400)
				usage();
			break;
		}
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	int nargs = argc - optind;
	if (nargs < 1)
		usage();
	const char *cmd = argv[optind];
	const char *arg1 = nargs > 1 ? argv[optind + 1] : NULL;
	const char *arg2 = nargs > 2 ? argv[optind + 2] : NULL;
	if (strcmp(cmd, "list") == 0) {
		if (nargs != 1)
			usage();
	} else if (strcmp(cmd, "show") == 0 || strcmp(cmd, "watermark") == 0) {
		if (nargs != 2)
			usage();
	} else if (strcmp(cmd, "set") == 0) {
		if (nargs != 3)
			usage();
	} else if (strcmp(cmd, "reset") == 0 || strcmp(cmd, "runs") == 0 || strcmp(cmd, "follow") == 0) {
		if (nargs > 2)
			usage();
	} else if (strcmp(cmd, "follow-reset") == 0) {
		if (nargs != 2)
			usage();
	} else if (strcmp(cmd, "follow-stats") == 0) {
		if (nargs < 5)
			usage();
	} else if (strcmp(cmd, "cutover") == 0) {
		if (nargs < 4)
			usage();
	} else if (strcmp(cmd, "hold") == 0) {
		if (nargs < 2)
			usage();
	} else if (strcmp(cmd, "status") == 0) {
		/* any number of entities */
	} else {
		usage();
	}
	dm_subject = arg1;
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);
	if (strcmp(cmd, "hold") == 0)
		dmpg_application_name = "dm-ckpt hold";

	conn = dmpg_connect(conninfo, "destination");
	if (conn == NULL || dmstate_ensure(conn) < 0)
		goto out;
	if (strcmp(cmd, "hold") == 0) {
		dm_subject = NULL;
		if (run_id != NULL)
			snprintf(owner, sizeof owner, "%s/%ld", run_id, (long)getpid());
		else
			snprintf(owner, sizeof owner, "hold/%ld", (long)getpid());
		rc = hold_entities(&conn, conninfo, argv + optind + 1, nargs - 1, owner, wait_seconds, parent);
		goto out;
	}
	if (dmpg_begin(conn, "", NULL) < 0)
		goto out;
	const char *p1[1] = { arg1 };
	if (strcmp(cmd, "list") == 0) {
		res = dmpg_exec(conn, "SELECT entity, watermark, updated_at::pg_catalog.text, run_id,"
		    " CASE WHEN complete THEN 'complete' ELSE 'partial' END FROM dm.checkpoint ORDER BY entity");
		if (res == NULL)
			goto out;
		print_rows(res, 5);
	} else if (strcmp(cmd, "show") == 0) {
		res = dmpg_exec_params(conn, "SELECT entity, watermark, change_column, run_id, batches::pg_catalog.text,"
		    " rows_applied::pg_catalog.text, last_key, complete::pg_catalog.text, updated_at::pg_catalog.text"
		    " FROM dm.checkpoint WHERE entity = $1", 1, p1);
		if (res == NULL)
			goto out;
		if (dmpg_nrows(res) == 0) {
			dm_err("no checkpoint: the entity has not been loaded yet (see dm-ckpt list)");
			goto out;
		}
		static const char *const names[] = { "entity", "watermark", "change_column", "run_id", "batches",
			"rows_applied", "last_key", "complete", "updated_at" };
		for (int c = 0; c < 9; c++)
			printf("%s=%s\n", names[c], dmpg_isnull(res, 0, c) ? "" : dmpg_value(res, 0, c));
	} else if (strcmp(cmd, "watermark") == 0) {
		res = dmpg_exec_params(conn, "SELECT watermark FROM dm.checkpoint WHERE entity = $1 AND complete", 1, p1);
		if (res == NULL)
			goto out;
		if (dmpg_nrows(res) == 1 && !dmpg_isnull(res, 0, 0))
			printf("%s\n", dmpg_value(res, 0, 0));
	} else if (strcmp(cmd, "set") == 0) {
		const char *p2[2] = { arg1, arg2 };
		if (dmpg_run_params(conn, "INSERT INTO dm.checkpoint AS c (entity, watermark, complete, run_id)"
		    " VALUES ($1, $2, true, 'dm-ckpt set') ON CONFLICT (entity) DO UPDATE SET watermark = EXCLUDED.watermark,"
		    " complete = true, run_id = EXCLUDED.run_id, updated_at = pg_catalog.now()", 2, p2) < 0)
			goto out;
	} else if (strcmp(cmd, "reset") == 0) {
		/* the checkpoints of its key ranges (ENTITY#I/N) and the ranges themselves go too */
		if (arg1 != NULL)
			res = dmpg_exec_params(conn, "WITH p AS (DELETE FROM dm.partition WHERE entity = $1)"
			    " DELETE FROM dm.checkpoint WHERE entity = $1"
			    " OR pg_catalog.left(entity, pg_catalog.length($1) + 1) = $1 || '#'", 1, p1);
		else
			res = dmpg_exec(conn, "WITH p AS (DELETE FROM dm.partition) DELETE FROM dm.checkpoint");
		if (res == NULL)
			goto out;
		dm_info("%s checkpoint(s) reset", dmpg_cmd_tuples(res));
	} else if (strcmp(cmd, "follow") == 0) {
		res = dmpg_exec_params(conn, "SELECT slot, applied_lsn::pg_catalog.text, commit_time::pg_catalog.text,"
		    " applied_at::pg_catalog.text FROM dm.follow WHERE $1::pg_catalog.text IS NULL OR slot = $1 ORDER BY slot",
		    1, p1);
		if (res == NULL)
			goto out;
		print_rows(res, 4);
	} else if (strcmp(cmd, "follow-stats") == 0) {
		dm_buf ents = { 0 };
		dm_buf_text_array(&ents, argv + optind + 5, nargs > 5 ? nargs - 5 : 0, "");
		const char *p5[5] = { arg1, arg2, argv[optind + 3], argv[optind + 4], dm_buf_cstr(&ents) };
		res = dmpg_exec_params(conn, "UPDATE dm.follow SET"
		    " source_lsn = CASE WHEN $2 = '-' THEN source_lsn ELSE $2::pg_catalog.pg_lsn END,"
		    " restart_lsn = CASE WHEN $3 = '-' THEN restart_lsn ELSE $3::pg_catalog.pg_lsn END,"
		    " synced_at = CASE WHEN $4 = '-' THEN synced_at ELSE $4::pg_catalog.timestamptz END,"
		    " full_entities = $5::pg_catalog.text[] WHERE slot = $1", 5, p5);
		dm_buf_free(&ents);
		if (res == NULL)
			goto out;
	} else if (strcmp(cmd, "cutover") == 0) {
		/* one row per entity: the cut-over's window, ended now; "ok", as the verify that ended it said */
		for (int i = 3; i < nargs; i++) {
			const char *p3[3] = { arg1, argv[optind + i], arg2 };
			if (dmpg_run_params(conn, "INSERT INTO dm.run (run_id, entity, started_at, finished_at, outcome)"
			    " VALUES ($1, $2, pg_catalog.now() - pg_catalog.make_interval(secs => $3::pg_catalog.float8),"
			    " pg_catalog.now(), 'ok') ON CONFLICT (run_id, entity) DO UPDATE SET outcome = 'ok', error = NULL,"
			    " finished_at = EXCLUDED.finished_at", 3, p3) < 0)
				goto out;
		}
	} else if (strcmp(cmd, "follow-reset") == 0) {
		res = dmpg_exec_params(conn, "DELETE FROM dm.follow WHERE slot = $1", 1, p1);
		if (res == NULL)
			goto out;
		dm_info("%s followed slot(s) forgotten", dmpg_cmd_tuples(res));
	} else if (strcmp(cmd, "status") == 0) {
		json_t *st = dmreport_status(conn, argv + optind + 1, nargs - 1);
		if (st == NULL)
			goto out;
		int w = json ? json_dumpf(st, stdout, JSON_COMPACT | JSON_REAL_PRECISION(15)) | (putchar('\n') == EOF) : dmreport_status_text(st, stdout);
		json_decref(st);
		if (w != 0) {
			dm_err("cannot write the report: %s", strerror(errno));
			goto out;
		}
	} else {
		const char *sql =
		    "SELECT run_id, entity, started_at::pg_catalog.text, finished_at::pg_catalog.text, outcome,"
		    " inserted::pg_catalog.text, updated::pg_catalog.text, deleted::pg_catalog.text, unchanged::pg_catalog.text"
		    " FROM dm.run WHERE $1::pg_catalog.text IS NULL OR entity = $1 ORDER BY started_at DESC, entity LIMIT 200";
		res = dmpg_exec_params(conn, sql, 1, p1);
		if (res == NULL)
			goto out;
		print_rows(res, 9);
	}
	if (dmpg_commit(conn) < 0)
		goto out;
	if (dm_close_output(stdout, "standard output") < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	dmpg_clear(res);
	dmpg_finish(conn);
	return dmpg_exit_code(rc);
}
