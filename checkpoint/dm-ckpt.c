/*
 * dm-ckpt - read and change the checkpoints dm keeps in the destination's
 * dm schema. Output is tab-separated, one record per line, "-" for none.
 */
#define _POSIX_C_SOURCE 200809L
#include "pg.h"
#include "state.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: dm-ckpt (--db CONNINFO | --db-env VAR) [-q] [-v] COMMAND [ARG...]\n"
    "\n"
    "Commands:\n"
    "  list                 ENTITY WATERMARK UPDATED_AT RUN_ID COMPLETE, one line each\n"
    "  show ENTITY          every field of one checkpoint, as name=value lines\n"
    "  watermark ENTITY     the watermark alone (nothing when there is none)\n"
    "  set ENTITY VALUE     set the watermark: the next incremental run reads from VALUE\n"
    "  reset [ENTITY]       forget the checkpoint (all when no ENTITY): next run is full\n"
    "  runs [ENTITY]        recent runs: RUN_ID ENTITY STARTED FINISHED OUTCOME\n"
    "                       INSERTED UPDATED DELETED UNCHANGED\n"
    "\n"
    "  --db CONNINFO        destination connection string or URI\n"
    "  --db-env VAR         read it from environment variable VAR\n";

static void
usage(void)
{
	fputs("usage: dm-ckpt (--db CONNINFO | --db-env VAR) list | show ENTITY | watermark ENTITY |"
	    " set ENTITY VALUE | reset [ENTITY] | runs [ENTITY]\n", stderr);
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
	enum { O_DB = 256, O_DBENV };
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "+qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
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
	} else if (strcmp(cmd, "reset") == 0 || strcmp(cmd, "runs") == 0) {
		if (nargs > 2)
			usage();
	} else {
		usage();
	}
	dm_subject = arg1;
	const char *conninfo = dm_conninfo(db, db_env);
	if (conninfo == NULL)
		return DM_EXIT_USAGE;
	signal(SIGPIPE, SIG_IGN);

	conn = dmpg_connect(conninfo, "destination");
	if (conn == NULL || dmstate_ensure(conn) < 0 || dmpg_begin(conn, "", NULL) < 0)
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
		if (arg1 != NULL)
			res = dmpg_exec_params(conn, "DELETE FROM dm.checkpoint WHERE entity = $1", 1, p1);
		else
			res = dmpg_exec(conn, "DELETE FROM dm.checkpoint");
		if (res == NULL)
			goto out;
		dm_info("%s checkpoint(s) reset", dmpg_cmd_tuples(res));
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
