/* db.c - dm-serve's connection to the destination, shared under one lock (serve.h). */
#define _POSIX_C_SOURCE 200809L
#include "serve.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

static pthread_mutex_t db_mutex = PTHREAD_MUTEX_INITIALIZER;
static PGconn *db_conn;

PGconn *
serve_db_lock(void)
{
	pthread_mutex_lock(&db_mutex);
	if (db_conn == NULL) {
		const char *ci = getenv("DM_DEST");
		if (ci == NULL || *ci == '\0') {
			pthread_mutex_unlock(&db_mutex);
			return NULL;
		}
		db_conn = dmpg_connect(ci, "destination");
		if (db_conn == NULL || dmstate_ensure(db_conn) < 0) {
			dmpg_finish(db_conn);
			db_conn = NULL;
			pthread_mutex_unlock(&db_mutex);
			return NULL;
		}
	}
	return db_conn;
}

/* failed: the caller's statement failed; the connection is dropped, the next lock reconnects. */
void
serve_db_unlock(PGconn *conn, int failed)
{
	if (conn != NULL && failed) {
		dmpg_rollback(conn);
		dmpg_finish(db_conn);
		db_conn = NULL;
	}
	if (conn != NULL)
		pthread_mutex_unlock(&db_mutex);
}

int
serve_db_probe(const char *env_var, char *err, size_t errlen, int *dm_schema)
{
	const char *ci = getenv(env_var);
	PGconn *conn = NULL;
	PGresult *res = NULL;
	int ok = 0;

	*err = '\0';
	if (ci == NULL || *ci == '\0') {
		snprintf(err, errlen, "%s is not set", env_var);
		return 0;
	}
	pthread_mutex_lock(&db_mutex);
	dmpg_quiet_errors(1);
	conn = dmpg_connect(ci, strcmp(env_var, "DM_SOURCE") == 0 ? "source" : "destination");
	if (conn == NULL)
		goto out;
	res = dmpg_exec(conn, "SELECT pg_catalog.to_regclass('dm.run') IS NOT NULL");
	if (res == NULL)
		goto out;
	if (dm_schema != NULL)
		*dm_schema = strcmp(dmpg_value(res, 0, 0), "t") == 0;
	ok = 1;
out:
	if (!ok)
		snprintf(err, errlen, "%s", *dmpg_last_error() ? dmpg_last_error() : "cannot connect (see dm-serve's log)");
	dmpg_forget_error();
	dmpg_quiet_errors(0);
	dmpg_clear(res);
	dmpg_finish(conn);
	pthread_mutex_unlock(&db_mutex);
	return ok;
}
