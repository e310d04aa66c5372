/*
 * serve.h - dm-serve, the service face of dm: the pieces its files share.
 *
 * Threads: libmicrohttpd runs one thread per connection; every database access
 * of the server goes through serve_db_lock (one connection to the destination,
 * dm's libpq wrapper keeps per-process state); reports that take long run as
 * dm-migrate processes, outside the lock, and are cached (cache.c).
 */
#ifndef DM_SERVE_H
#define DM_SERVE_H

#include "pg.h"

#include <pthread.h>
#include <stddef.h>
#include <sys/types.h>

#include <jansson.h>

/* The server's settings, set once by main before the first request. */
struct serve_settings {
	const char *spec;	/* -c SPEC, absolute, or NULL */
	const char *state_dir;	/* runs/ID/{request.json,log,out,pid,exit,cancelled} */
	char token[129];
	double cache_seconds;	/* baseline, plan, entities */
	int max_sse;		/* SSE clients at once */
	const char *migrate;	/* the dm-migrate to run */
	double baseline_interval;	/* seconds between background baselines (metrics); 0: none */
};
extern struct serve_settings serve;

/* ---- parse.c: what comes from outside. */

/* Checks a POST /v1/runs body (its fields and their types): NULL, or what is wrong (malloc'd). */
char *serve_run_request_bad(json_t *req);
/* A run id this server or dm-migrate could have made: nothing that walks paths. */
int serve_run_id_ok(const char *id);

/* ---- db.c: the destination's connection, one at a time. */

/* Locks the server's connection to the destination, connecting (again) when needed. NULL: down, unlocked. */
PGconn *serve_db_lock(void);
void serve_db_unlock(PGconn *conn, int failed);
/* Can a connection to VAR's database be opened? 1, or 0 with why in err. */
int serve_db_probe(const char *env_var, char *err, size_t errlen, int *dm_schema);

/* ---- run.c: runs as dm-migrate processes under a state directory. */

/* Starts a run; 0 with *run_id (malloc'd) set, or an HTTP status and *msg (malloc'd). */
int serve_run_start(json_t *request, char **run_id, char **msg);
/*
 * The run object of the API (see docs/openapi.json): from the state directory
 * when the server started it, and from dm.run. NULL when neither knows it.
 */
json_t *serve_run_get(const char *run_id);
/* A page of runs, newest first. */
json_t *serve_run_list(int limit, const char *before);
/* 0 signalled; 404 unknown; 409 finished. */
int serve_run_cancel(const char *run_id);
/* The ids of the runs this server started that have not ended, malloc'd, NULL-terminated. */
char **serve_run_active(void);
void serve_strv_free(char **v);
/* Reaps ended keepers (children); called by the event thread. */
void serve_run_reap(void);
/* Path of a run's file, malloc'd. */
char *serve_run_path(const char *run_id, const char *file);

/* ---- events.c: the runs' log events, for SSE and for live progress. */

int serve_events_start(void);
void serve_events_stop(void);
void serve_events_watch(const char *run_id);
/* One logfmt line (key=value, "quoted value") as a JSON object: integers as numbers. New reference. */
json_t *serve_logfmt_parse(const char *line);
/* The latest progress event of each entity of a run, as {entity: {...}}; new reference. */
json_t *serve_events_progress(const char *run_id);
struct MHD_Response;
/* An SSE response, or NULL when too many clients are connected. */
struct MHD_Response *serve_events_response(const char *last_event_id);

/* ---- cache.c: reports computed once per parameters, kept a short time. */

typedef json_t *(*serve_compute_fn)(const char *key, void *arg, int *http_status);
/*
 * The value cached for key if younger than max_age seconds, else computes it
 * (one computation per key at a time: concurrent callers wait for it). Returns
 * a new reference and the HTTP status it was computed with.
 */
json_t *serve_cache_get(const char *key, double max_age, serve_compute_fn fn, void *arg, int *http_status);

/* The value cached for key, whatever its age, or NULL: nothing is computed. */
json_t *serve_cache_peek(const char *key, int *http_status);

/*
 * Expires the values whose key starts with prefix (a run ended: its reports are
 * stale): the next serve_cache_get computes them again, one being computed now is
 * kept expired; serve_cache_peek still sees the last value.
 */
void serve_cache_forget(const char *prefix);

/* ---- exec.c: programs run to completion. */

/*
 * Runs argv (a dm program found on PATH) with stdin /dev/null; its stdout (up to
 * 64 MiB) into *out, the last line it printed on stderr into *err (both malloc'd).
 * Returns its exit status, 128+signal, or -1 when it could not run.
 */
int serve_exec(char *const argv[], char **out, char **err);

/* ---- api.c */

struct MHD_Daemon;
/* Listens (ADDR:PORT, [V6]:PORT or a socket path; port 0: any) and serves; bound: where, for the log. */
struct MHD_Daemon *serve_http_start(const char *listen_addr, const char *cert, const char *key, char *bound, size_t boundlen);
/* A thread that computes the baseline every serve.baseline_interval seconds, for /metrics. */
int serve_baseline_start(void);
/* A JSON error object {"error": {"code", "message"}}. */
json_t *serve_error(const char *code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- log */
void serve_log(const char *level, const char *event, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif
