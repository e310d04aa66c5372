/*
 * api.c - dm-serve's HTTP face: routing, the token, request bodies, and the
 * handlers of /v1 (docs/openapi.json), /metrics and the dashboard.
 */
#define _GNU_SOURCE
#include "serve.h"
#include "report.h"
#include "spec.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_BODY (64 * 1024)

extern const unsigned char serve_asset_dashboard[];
extern const size_t serve_asset_dashboard_len;
extern const unsigned char serve_asset_openapi[];
extern const size_t serve_asset_openapi_len;

/* A request under way: its body as it arrives. */
struct req {
	dm_buf body;
	int too_large;
};

json_t *
serve_error(const char *code, const char *fmt, ...)
{
	char msg[2048];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	return json_pack("{s:{s:s,s:s}}", "error", "code", code, "message", msg);
}

static enum MHD_Result
reply_text(struct MHD_Connection *c, unsigned status, const char *type, char *text, size_t len, int must_free)
{
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text,
	    must_free ? MHD_RESPMEM_MUST_FREE : MHD_RESPMEM_PERSISTENT);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", type);
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Content-Type-Options", "nosniff");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

/* Replies with a JSON value (takes its reference); location, when not NULL, as Location. */
static enum MHD_Result
reply_json(struct MHD_Connection *c, unsigned status, json_t *v, const char *location)
{
	char *text = json_dumps(v, JSON_COMPACT | JSON_REAL_PRECISION(15) | JSON_ENCODE_ANY);
	json_decref(v);
	if (text == NULL)
		return MHD_NO;
	size_t len = strlen(text);
	text = dm_xrealloc(text, len + 2);
	text[len++] = '\n';
	text[len] = '\0';
	struct MHD_Response *r = MHD_create_response_from_buffer(len, text, MHD_RESPMEM_MUST_FREE);
	if (r == NULL)
		return MHD_NO;
	MHD_add_response_header(r, "Content-Type", "application/json");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	if (location != NULL)
		MHD_add_response_header(r, "Location", location);
	if (status == 401)
		MHD_add_response_header(r, "WWW-Authenticate", "Bearer realm=\"dm\"");
	enum MHD_Result ret = MHD_queue_response(c, status, r);
	MHD_destroy_response(r);
	return ret;
}

static enum MHD_Result
reply_error(struct MHD_Connection *c, unsigned status, const char *code, const char *msg)
{
	if (status >= 500)
		serve_log("error", "http", "%u %s", status, msg);
	return reply_json(c, status, serve_error(code, "%s", msg), NULL);
}

/* Constant time: the token's length is not secret, its bytes are. */
static int
token_ok(struct MHD_Connection *c)
{
	const char *h = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Authorization");
	size_t want = strlen(serve.token);
	if (h == NULL || strncasecmp(h, "Bearer ", 7) != 0)
		return 0;
	h += 7;
	while (*h == ' ')
		h++;
	size_t got = strlen(h);
	unsigned char diff = got != want;
	for (size_t i = 0; i < want; i++)
		diff |= (unsigned char)serve.token[i] ^ (unsigned char)(i < got ? h[i] : 0);
	return diff == 0;
}

/* A query parameter that is a boolean: 1, 0, or -1 (absent), -2 (not a boolean). */
static int
query_bool(struct MHD_Connection *c, const char *name)
{
	const char *v = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, name);
	if (v == NULL)
		return -1;
	if (strcmp(v, "true") == 0 || strcmp(v, "1") == 0)
		return 1;
	if (strcmp(v, "false") == 0 || strcmp(v, "0") == 0)
		return 0;
	return -2;
}

/*
 * Does the client ask for a fresh report (Cache-Control: no-cache, as a browser's
 * reload does)? Concurrent requests for the same report still share one computation.
 */
static int
want_fresh(struct MHD_Connection *c)
{
	const char *cc = MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Cache-Control");
	return cc != NULL && (strstr(cc, "no-cache") != NULL || strstr(cc, "max-age=0") != NULL);
}

/* ------------------------------------------------------------- entities */

static json_t *
strv_json(char *const *v, size_t n)
{
	json_t *a = json_array();
	for (size_t i = 0; i < n; i++)
		json_array_append_new(a, json_string(v[i]));
	return a;
}

/*
 * How an entity's rows are mapped: from the spec file (read again each time, so
 * that it says what the next run will do), or the identity for an entity that
 * is the same table on both sides.
 */
static json_t *
entity_mapping(const dmspec *spec, const char *entity)
{
	const dmspec_entity *e = spec != NULL ? dmspec_find(spec, entity) : NULL;
	if (e == NULL)
		return json_pack("{s:s,s:s}", "kind", "same", "source", entity);
	json_t *cols = json_array();
	static const char *const kinds[] = { "column", "expr", "ref" };
	for (size_t i = 0; i < e->ncols; i++) {
		const dmspec_col *c = &e->cols[i];
		json_t *o = json_pack("{s:s,s:s,s:s}", "dest", c->dest, "kind", kinds[c->kind], "value", c->value);
		if (c->ref_entity != NULL)
			json_object_set_new(o, "entity", json_string(c->ref_entity));
		json_array_append_new(cols, o);
	}
	/* (The legacy key is the entity's "key".) */
	return json_pack("{s:s,s:o,s:b,s:o,s:o,s:o,s:o,s:o}", "kind", "spec",
	    "source", e->source ? json_string(e->source) : json_null(), "query", e->query != NULL,
	    "where", e->where ? json_string(e->where) : json_null(),
	    "uuid_column", e->uuid_col ? json_string(e->uuid_col) : json_null(),
	    "legacy_column", e->legacy_col ? json_string(e->legacy_col) : json_null(), "columns", cols,
	    "excluded", strv_json(e->exclude, e->nexclude));
}

/* dm-entities' lines as the API's entity objects. */
static json_t *
compute_entities(const char *key, void *arg, int *status)
{
	(void)key;
	(void)arg;
	char *argv[8];
	int n = 0;
	char *out = NULL, *err = NULL;
	argv[n++] = "dm-entities";
	argv[n++] = "--source-env=DM_SOURCE";
	argv[n++] = "--dest-env=DM_DEST";
	if (serve.spec != NULL) {
		argv[n++] = "-c";
		argv[n++] = (char *)serve.spec;
	}
	argv[n] = NULL;
	int rc = serve_exec(argv, &out, &err);
	json_t *v;
	if (rc != 0) {
		*status = rc == 7 || rc == 1 ? 503 : 500;
		v = serve_error(*status == 503 ? "unavailable" : "internal", "dm-entities failed (exit status %d): %s", rc,
		    err ? err : "no message");
		goto out;
	}
	json_t *ents = json_array(), *notes = json_array();
	char *save = NULL;
	dmspec spec = { 0 };
	int have_spec = serve.spec != NULL && dmspec_load(serve.spec, &spec) == 0;
	for (char *line = strtok_r(out, "\n", &save); line != NULL; line = strtok_r(NULL, "\n", &save)) {
		if (line[0] == '#') {
			json_array_append_new(notes, json_string(line));
			continue;
		}
		char *f[8] = { 0 };
		int nf = 0;
		for (char *p = line; nf < 8;) {
			f[nf++] = p;
			char *tab = strchr(p, '\t');
			if (tab == NULL)
				break;
			*tab = '\0';
			p = tab + 1;
		}
		if (nf < 8)
			continue;
		json_t *keys = json_array(), *parents = json_array();
		char *s2 = NULL;
		for (char *k = strtok_r(f[3], ",", &s2); k != NULL; k = strtok_r(NULL, ",", &s2))
			json_array_append_new(keys, json_string(k));
		if (strcmp(f[7], "-") != 0)
			for (char *k = strtok_r(f[7], ",", &s2); k != NULL; k = strtok_r(NULL, ",", &s2))
				json_array_append_new(parents, json_string(k));
		json_array_append_new(ents, json_pack("{s:s,s:I,s:s,s:o,s:o,s:o,s:o,s:o}", "entity", f[1], "level",
		    (json_int_t)strtol(f[0], NULL, 10), "target", f[2], "key", keys, "change_column",
		    strcmp(f[4], "-") ? json_string(f[4]) : json_null(), "group",
		    strcmp(f[5], "-") ? json_string(f[5]) : json_null(), "parents", parents, "mapping",
		    entity_mapping(have_spec ? &spec : NULL, f[1])));
	}
	if (have_spec)
		dmspec_free(&spec);
	v = json_pack("{s:o,s:o}", "entities", ents, "notes", notes);
out:
	free(out);
	free(err);
	return v;
}

/* Are these (a JSON array of strings) entities dm-entities knows? NULL, or what is wrong (malloc'd). */
static char *
unknown_entities(json_t *names)
{
	int st;
	json_t *known = serve_cache_get("entities", serve.cache_seconds, compute_entities, NULL, &st);
	char *bad = NULL;
	size_t i, j;
	json_t *n, *e;

	if (st != 200) {
		bad = dm_xasprintf("cannot list the entities: %s",
		    json_string_value(json_object_get(json_object_get(known, "error"), "message")));
		json_decref(known);
		return bad;
	}
	json_array_foreach(names, i, n) {
		int found = 0;
		json_array_foreach(json_object_get(known, "entities"), j, e) found |=
		    json_equal(json_object_get(e, "entity"), n);
		if (!found) {
			bad = dm_xasprintf("unknown entity \"%s\" (GET /v1/entities lists them)", json_string_value(n));
			break;
		}
	}
	json_decref(known);
	return bad;
}

/* ------------------------------------------------------------- reports */

/* A report of dm-migrate --json (baseline, plan), with the parameters in key: "CMD\tENTITY\tFULL\tDELETE". */
static json_t *
compute_report(const char *key, void *arg, int *status)
{
	(void)arg;
	char *k = dm_xstrdup(key), *f[4] = { 0 };
	int nf = 0;
	for (char *p = k; nf < 4;) {
		f[nf++] = p;
		char *tab = strchr(p, '\t');
		if (tab == NULL)
			break;
		*tab = '\0';
		p = tab + 1;
	}
	char *argv[16];
	int n = 0;
	serve_log("debug", "report", "computing %s (dm-migrate --json)", f[0]);
	argv[n++] = (char *)serve.migrate;
	argv[n++] = "--json";
	argv[n++] = "-q";
	argv[n++] = "--log-format=text";
	if (serve.spec != NULL) {
		argv[n++] = "-c";
		argv[n++] = (char *)serve.spec;
	}
	if (nf == 4 && strcmp(f[2], "1") == 0)
		argv[n++] = "--full";
	if (nf == 4 && strcmp(f[3], "1") == 0)
		argv[n++] = "--delete";
	argv[n++] = f[0];
	if (nf > 1 && *f[1]) {
		argv[n++] = "--";
		argv[n++] = f[1];
	}
	argv[n] = NULL;
	char *out = NULL, *err = NULL;
	int rc = serve_exec(argv, &out, &err);
	json_t *v = NULL;
	if (rc == 0) {
		json_error_t jerr;
		v = json_loads(out, 0, &jerr);
		if (v == NULL) {
			*status = 500;
			v = serve_error("internal", "dm-migrate %s printed no JSON: %s", f[0], jerr.text);
		}
	} else {
		*status = rc == 7 ? 503 : rc == 6 ? 409 : 500;
		v = serve_error(rc == 7 ? "unavailable" : rc == 6 ? "conflict" : "internal",
		    "dm-migrate %s failed (exit status %d): %s", f[0], rc, err ? err : "no message");
	}
	free(out);
	free(err);
	free(k);
	return v;
}

static enum MHD_Result
handle_report(struct MHD_Connection *c, const char *cmd)
{
	const char *entity = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "entity");
	int full = 0, del = 0, st;
	if (strcmp(cmd, "plan") == 0) {
		full = query_bool(c, "full");
		del = query_bool(c, "delete");
		if (full == -2 || del == -2)
			return reply_error(c, 400, "bad_request", "full and delete take true or false");
		full = full == 1;
		del = del == 1;
	}
	if (entity != NULL) {
		json_t *names = json_pack("[s]", entity);
		char *bad = unknown_entities(names);
		json_decref(names);
		if (bad != NULL) {
			enum MHD_Result r = reply_error(c, strncmp(bad, "unknown", 7) == 0 ? 400 : 503,
			    strncmp(bad, "unknown", 7) == 0 ? "bad_request" : "unavailable", bad);
			free(bad);
			return r;
		}
	}
	char *key = dm_xasprintf("%s\t%s\t%d\t%d", cmd, entity ? entity : "", full, del);
	json_t *v = serve_cache_get(key, want_fresh(c) ? 0 : serve.cache_seconds, compute_report, NULL, &st);
	free(key);
	return reply_json(c, (unsigned)st, v, NULL);
}

/* ------------------------------------------------------------- runs */

static json_t *
compute_run(const char *key, void *arg, int *status)
{
	(void)arg;
	json_t *r = serve_run_get(key + 4);
	if (r == NULL) {
		*status = 404;
		return serve_error("not_found", "no run %s", key + 4);
	}
	return r;
}

static enum MHD_Result
handle_post_run(struct MHD_Connection *c, struct req *rq)
{
	json_error_t jerr;
	json_t *req = rq->body.len ? json_loadb(rq->body.data, rq->body.len, 0, &jerr) : json_object();
	if (req == NULL) {
		char msg[300];
		snprintf(msg, sizeof msg, "the body is not JSON: %s (line %d, column %d)", jerr.text, jerr.line, jerr.column);
		return reply_error(c, 400, "bad_request", msg);
	}
	char *bad = serve_run_request_bad(req);
	if (bad == NULL && json_object_get(req, "entities") != NULL)
		bad = unknown_entities(json_object_get(req, "entities"));
	if (bad != NULL) {
		int unavailable = strncmp(bad, "cannot list", 11) == 0;
		enum MHD_Result r = reply_error(c, unavailable ? 503 : 400, unavailable ? "unavailable" : "bad_request", bad);
		free(bad);
		json_decref(req);
		return r;
	}
	char *id = NULL, *msg = NULL;
	int st = serve_run_start(req, &id, &msg);
	json_decref(req);
	if (st != 0) {
		enum MHD_Result r = reply_error(c, (unsigned)st, st == 409 ? "conflict" : "internal", msg ? msg : "cannot start");
		free(msg);
		return r;
	}
	serve_events_watch(id);
	json_t *run = serve_run_get(id);
	char *loc = dm_xasprintf("/v1/runs/%s", id);
	enum MHD_Result r = reply_json(c, 202, run ? run : json_pack("{s:s,s:s}", "id", id, "state", "running"), loc);
	free(loc);
	free(id);
	return r;
}

/* ------------------------------------------------------------- checkpoints */

static enum MHD_Result
handle_checkpoints(struct MHD_Connection *c, const char *entity)
{
	PGconn *conn = serve_db_lock();
	if (conn == NULL)
		return reply_error(c, 503, "unavailable", "cannot connect to the destination");
	json_t *out = NULL;
	int failed = dmpg_begin(conn, "", NULL) < 0, status = 200;
	PGresult *res = NULL;
	if (!failed && entity == NULL) {
		/* The checkpoints of the status report (not its cached copy: a DELETE shows at once). */
		json_t *st = dmreport_status(conn, NULL, 0);
		failed = st == NULL;
		if (!failed) {
			json_t *a = json_array(), *e;
			size_t i;
			json_array_foreach(json_object_get(st, "entities"), i, e) {
				json_t *ck = json_object_get(e, "checkpoint");
				if (!json_is_object(ck))
					continue;
				json_t *o = json_pack("{s:O}", "entity", json_object_get(e, "entity"));
				json_object_update(o, ck);
				json_array_append_new(a, o);
			}
			out = json_pack("{s:o}", "checkpoints", a);
		}
		json_decref(st);
	} else if (!failed) {
		const char *p[1] = { entity };
		res = dmpg_exec_params(conn, "DELETE FROM dm.checkpoint WHERE entity = $1", 1, p);
		failed = res == NULL;
		if (!failed && strcmp(dmpg_cmd_tuples(res), "0") == 0) {
			status = 404;
			out = serve_error("not_found", "no checkpoint for entity \"%s\"", entity);
		} else if (!failed) {
			out = json_pack("{s:s,s:b}", "entity", entity, "deleted", 1);
			serve_log("info", "checkpoint_deleted", "checkpoint of %s deleted: its next run compares in full", entity);
		}
	}
	dmpg_clear(res);
	failed = failed || dmpg_commit(conn) < 0;
	serve_db_unlock(conn, failed);
	if (failed) {
		json_decref(out);
		return reply_error(c, 503, "unavailable", "the destination failed the request (see dm-serve's log)");
	}
	return reply_json(c, (unsigned)status, out, NULL);
}

/* ------------------------------------------------------------- status, health */

static json_t *
compute_status(const char *key, void *arg, int *status)
{
	(void)key;
	(void)arg;
	PGconn *conn = serve_db_lock();
	if (conn == NULL) {
		*status = 503;
		return serve_error("unavailable", "cannot connect to the destination");
	}
	json_t *st = NULL;
	int failed = dmpg_begin(conn, "", NULL) < 0;
	if (!failed)
		st = dmreport_status(conn, NULL, 0);
	failed = failed || st == NULL || dmpg_commit(conn) < 0;
	serve_db_unlock(conn, failed);
	if (failed) {
		json_decref(st);
		*status = 503;
		return serve_error("unavailable", "the destination failed the request (see dm-serve's log)");
	}
	return st;
}

static json_t *
compute_health(const char *key, void *arg, int *status)
{
	(void)key;
	(void)arg;
	char serr[512], derr[512];
	int schema = 0;
	int s_ok = serve_db_probe("DM_SOURCE", serr, sizeof serr, NULL);
	int d_ok = serve_db_probe("DM_DEST", derr, sizeof derr, &schema);
	json_t *src = json_pack("{s:b}", "ok", s_ok), *dst = json_pack("{s:b}", "ok", d_ok);
	if (!s_ok)
		json_object_set_new(src, "error", json_string(serr));
	if (!d_ok)
		json_object_set_new(dst, "error", json_string(derr));
	else
		json_object_set_new(dst, "dm_schema", json_string(schema ? "present" : "absent"));
	*status = s_ok && d_ok ? 200 : 503;
	return json_pack("{s:b,s:b,s:o,s:o,s:s}", "live", 1, "ready", s_ok && d_ok, "source", src, "destination", dst,
	    "version", DM_VERSION);
}

/* ------------------------------------------------------------- metrics */

/* The cache key of the baseline of every entity (compute_report's parameters). */
#define BASELINE_ALL "baseline\t\t0\t0"

static void *
baseline_main(void *arg)
{
	(void)arg;
	for (;;) {
		int st;
		json_t *v = serve_cache_get(BASELINE_ALL, serve.baseline_interval / 2, compute_report, NULL, &st);
		if (st != 200)
			serve_log("warn", "baseline", "the background baseline failed: %s",
			    json_string_value(json_object_get(json_object_get(v, "error"), "message")));
		json_decref(v);
		struct timespec ts = { (time_t)serve.baseline_interval, 0 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int
serve_baseline_start(void)
{
	pthread_t t;
	if (serve.baseline_interval <= 0)
		return 0;
	int rc = pthread_create(&t, NULL, baseline_main, NULL);
	if (rc != 0) {
		dm_err("cannot start the baseline thread: %s", strerror(rc));
		return -1;
	}
	pthread_detach(t);
	return 0;
}

static void
metric_escape(dm_buf *b, const char *s)
{
	for (; *s; s++) {
		if (*s == '\\' || *s == '"')
			dm_buf_putc(b, '\\');
		if (*s == '\n') {
			dm_buf_append(b, "\\n", 2);
			continue;
		}
		dm_buf_putc(b, *s);
	}
}

static void
metric_family(dm_buf *b, const char *name, const char *type, const char *help)
{
	char *h = dm_xasprintf("# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
	dm_buf_append(b, h, strlen(h));
	free(h);
}

static void
metric_sample_label(dm_buf *b, const char *name, const char *label, const char *lvalue, const char *value)
{
	dm_buf_append(b, name, strlen(name));
	if (lvalue != NULL) {
		dm_buf_putc(b, '{');
		dm_buf_append(b, label, strlen(label));
		dm_buf_append(b, "=\"", 2);
		metric_escape(b, lvalue);
		dm_buf_append(b, "\"}", 2);
	}
	dm_buf_putc(b, ' ');
	dm_buf_append(b, value, strlen(value));
	dm_buf_putc(b, '\n');
}

static void
metric_sample(dm_buf *b, const char *name, const char *entity, const char *value)
{
	metric_sample_label(b, name, "entity", entity, value);
}


/* The metrics text, as a JSON string for the cache: a scrape storm reads the dm schema once a second at most. */
static json_t *
compute_metrics(const char *key, void *arg, int *status)
{
	(void)key;
	(void)arg;
	(void)status;
	static const struct {
		const char *name, *type, *help;
	} fam[] = {
		{ "dm_rows_inserted_total", "counter", "Rows inserted into the destination by all runs recorded in dm.run." },
		{ "dm_rows_updated_total", "counter", "Rows updated in the destination by all runs recorded in dm.run." },
		{ "dm_rows_deleted_total", "counter", "Rows deleted from the destination by all runs recorded in dm.run." },
		{ "dm_rows_rejected_total", "counter", "Rows the destination refused, over all runs." },
		{ "dm_last_run_success", "gauge", "1 if the entity's last finished run succeeded, else 0." },
		{ "dm_last_run_timestamp_seconds", "gauge", "When the entity's last run ended (or last made progress)." },
		{ "dm_seconds_since_last_success", "gauge", "Seconds since the entity's last successful run ended." },
		{ "dm_run_in_progress", "gauge", "1 while a load of the entity is in progress." },
		{ "dm_pending_deletes", "gauge", "Deletes parked for the entity, waiting for their run to apply them." },
	};
	enum { NFAM = sizeof fam / sizeof fam[0] };
	dm_buf b = { 0 };
	PGconn *conn = serve_db_lock();
	int up = conn != NULL, failed = 0;
	PGresult *res = NULL, *fres = NULL;
	if (conn != NULL) {
		failed = dmpg_begin(conn, "", NULL) < 0;
		if (!failed)
			res = dmreport_metrics(conn);
		if (!failed && res != NULL)
			fres = dmreport_follow_metrics(conn);
		failed = failed || res == NULL || fres == NULL || dmpg_commit(conn) < 0;
		serve_db_unlock(conn, failed);
		up = !failed;
	}
	metric_family(&b, "dm_destination_up", "gauge", "1 if dm-serve could read the dm schema of the destination.");
	metric_sample(&b, "dm_destination_up", NULL, up ? "1" : "0");
	for (int f = 0; f < NFAM && res != NULL && !failed; f++) {
		metric_family(&b, fam[f].name, fam[f].type, fam[f].help);
		for (int r = 0; r < dmpg_nrows(res); r++)
			if (!dmpg_isnull(res, r, f + 1))
				metric_sample(&b, fam[f].name, dmpg_value(res, r, 0), dmpg_value(res, r, f + 1));
	}
	dmpg_clear(res);
	static const struct {
		const char *name, *help;
	} ff[] = {
		{ "dm_follow_lag_seconds", "Seconds the destination may be behind the source, as of the follower's last batch (dm-migrate follow)." },
		{ "dm_follow_lag_bytes", "WAL bytes between the source's position at the follower's last batch and the applied position." },
		{ "dm_follow_retained_wal_bytes", "WAL the slot keeps on the source (it grows while nobody follows: drop an abandoned slot)." },
		{ "dm_follow_applied_lsn_bytes", "The applied position of the slot, as a byte offset in the source's WAL." },
	};
	for (size_t f = 0; f < sizeof ff / sizeof ff[0] && fres != NULL && !failed && dmpg_nrows(fres) > 0; f++) {
		metric_family(&b, ff[f].name, "gauge", ff[f].help);
		for (int r = 0; r < dmpg_nrows(fres); r++)
			if (!dmpg_isnull(fres, r, (int)f + 1))
				metric_sample_label(&b, ff[f].name, "slot", dmpg_value(fres, r, 0), dmpg_value(fres, r, (int)f + 1));
	}
	dmpg_clear(fres);
	/* The counts of the last baseline computed (GET /v1/baseline, cached): a scan of both sides is not done per scrape. */
	int st = 0;
	json_t *base = serve_cache_peek(BASELINE_ALL, &st);
	static const struct {
		const char *name, *key, *help;
	} bf[] = {
		{ "dm_source_rows", "source_rows", "Rows of the entity in the source, at the last baseline." },
		{ "dm_destination_rows", "destination_rows", "Rows of the entity in the destination, at the last baseline." },
		{ "dm_differing_rows", "differing", "Rows only in one side or changed, at the last baseline." },
	};
	if (st == 200) {
		for (size_t f = 0; f < sizeof bf / sizeof bf[0]; f++) {
			size_t i;
			json_t *e;
			metric_family(&b, bf[f].name, "gauge", bf[f].help);
			json_array_foreach(json_object_get(base, "entities"), i, e) {
				char v[32];
				snprintf(v, sizeof v, "%lld", (long long)json_integer_value(json_object_get(e, bf[f].key)));
				metric_sample(&b, bf[f].name, json_string_value(json_object_get(e, "entity")), v);
			}
		}
	}
	json_decref(base);
	dm_buf_putc(&b, '\0');
	json_t *text = json_string(b.data);
	dm_buf_free(&b);
	return text;
}

static enum MHD_Result
handle_metrics(struct MHD_Connection *c)
{
	int st;
	json_t *m = serve_cache_get("metrics", 1.0, compute_metrics, NULL, &st);
	char *text = dm_xstrdup(json_string_value(m) ? json_string_value(m) : "");
	json_decref(m);
	return reply_text(c, 200, "text/plain; version=0.0.4; charset=utf-8", text, strlen(text), 1);
}

/* ------------------------------------------------------------- routing */

static enum MHD_Result
route(struct MHD_Connection *c, const char *method, const char *url, struct req *rq)
{
	int get = strcmp(method, "GET") == 0 || strcmp(method, "HEAD") == 0;
	int post = strcmp(method, "POST") == 0;
	int del = strcmp(method, "DELETE") == 0;
	int st;

	if (strcmp(url, "/v1/health") == 0) {
		if (!get)
			return reply_error(c, 405, "method_not_allowed", "GET only");
		json_t *h = serve_cache_get("health", 1.0, compute_health, NULL, &st);
		return reply_json(c, (unsigned)st, h, NULL);
	}
	if (strcmp(url, "/") == 0 || strcmp(url, "/index.html") == 0) {
		if (!get)
			return reply_error(c, 405, "method_not_allowed", "GET only");
		return reply_text(c, 200, "text/html; charset=utf-8", (char *)serve_asset_dashboard, serve_asset_dashboard_len, 0);
	}
	if (!token_ok(c))
		return reply_error(c, 401, "unauthorized",
		    "a bearer token is required (Authorization: Bearer TOKEN; the token is DM_API_TOKEN, or the one dm-serve printed at start)");
	if (strcmp(url, "/metrics") == 0 && get)
		return handle_metrics(c);
	if (strcmp(url, "/v1/openapi.json") == 0 && get)
		return reply_text(c, 200, "application/json", (char *)serve_asset_openapi, serve_asset_openapi_len, 0);
	if (strcmp(url, "/v1/entities") == 0 && get) {
		json_t *v = serve_cache_get("entities", want_fresh(c) ? 0 : serve.cache_seconds, compute_entities, NULL, &st);
		return reply_json(c, (unsigned)st, v, NULL);
	}
	if (strcmp(url, "/v1/baseline") == 0 && get)
		return handle_report(c, "baseline");
	if (strcmp(url, "/v1/plan") == 0 && get)
		return handle_report(c, "plan");
	if (strcmp(url, "/v1/status") == 0 && get) {
		json_t *s = serve_cache_get("status", 0.5, compute_status, NULL, &st);
		return reply_json(c, (unsigned)st, s, NULL);
	}
	if (strcmp(url, "/v1/checkpoints") == 0 && get)
		return handle_checkpoints(c, NULL);
	if (strncmp(url, "/v1/checkpoints/", 16) == 0 && del && url[16] != '\0')
		return handle_checkpoints(c, url + 16);
	if (strcmp(url, "/v1/runs") == 0 && post) {
		if (rq->too_large)
			return reply_error(c, 413, "too_large", "the body is larger than 64 KiB");
		return handle_post_run(c, rq);
	}
	if (strcmp(url, "/v1/runs") == 0 && get) {
		const char *l = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "limit");
		const char *before = MHD_lookup_connection_value(c, MHD_GET_ARGUMENT_KIND, "before");
		long limit = 20;
		if (l != NULL) {
			char *end;
			limit = strtol(l, &end, 10);
			if (end == l || *end != '\0' || limit < 1 || limit > 200)
				return reply_error(c, 400, "bad_request", "limit must be an integer from 1 to 200");
		}
		return reply_json(c, 200, serve_run_list((int)limit, before), NULL);
	}
	if (strncmp(url, "/v1/runs/", 9) == 0 && url[9] != '\0') {
		const char *id = url + 9;
		const char *slash = strchr(id, '/');
		if (slash == NULL && get) {
			char *key = dm_xasprintf("run\t%s", id);
			json_t *r = serve_cache_get(key, 0.5, compute_run, NULL, &st);
			free(key);
			return reply_json(c, (unsigned)st, r, NULL);
		}
		if (slash != NULL && strcmp(slash, "/cancel") == 0 && post) {
			char *rid = dm_xstrndup(id, (size_t)(slash - id));
			int rc = serve_run_cancel(rid);
			enum MHD_Result r;
			if (rc == 404)
				r = reply_error(c, 404, "not_found", "no such run");
			else if (rc == 409)
				r = reply_error(c, 409, "conflict", "the run is not running (or was not started by this server)");
			else {
				json_t *run = serve_run_get(rid);
				r = reply_json(c, 202, run ? run : json_null(), NULL);
			}
			free(rid);
			return r;
		}
	}
	if (strcmp(url, "/v1/events") == 0 && get) {
		struct MHD_Response *r = serve_events_response(
		    MHD_lookup_connection_value(c, MHD_HEADER_KIND, "Last-Event-ID"));
		if (r == NULL)
			return reply_error(c, 503, "unavailable", "too many event clients");
		enum MHD_Result ret = MHD_queue_response(c, 200, r);
		MHD_destroy_response(r);
		return ret;
	}
	return reply_error(c, 404, "not_found", "no such endpoint (GET /v1/openapi.json lists them)");
}

static enum MHD_Result
on_request(void *cls, struct MHD_Connection *c, const char *url, const char *method, const char *version,
    const char *upload, size_t *upload_size, void **con_cls)
{
	(void)cls;
	(void)version;
	struct req *rq = *con_cls;
	if (rq == NULL) {
		rq = dm_xcalloc(1, sizeof *rq);
		*con_cls = rq;
		return MHD_YES;
	}
	if (*upload_size > 0) {
		if (rq->body.len + *upload_size > MAX_BODY)
			rq->too_large = 1;
		else
			dm_buf_append(&rq->body, upload, *upload_size);
		*upload_size = 0;
		return MHD_YES;
	}
	if (rq->too_large)
		return reply_error(c, 413, "too_large", "the body is larger than 64 KiB");
	return route(c, method, url, rq);
}

static void
on_done(void *cls, struct MHD_Connection *c, void **con_cls, enum MHD_RequestTerminationCode toe)
{
	(void)cls;
	(void)c;
	(void)toe;
	struct req *rq = *con_cls;
	if (rq != NULL) {
		dm_buf_free(&rq->body);
		free(rq);
	}
	*con_cls = NULL;
}

static char *
read_file(const char *path)
{
	FILE *fp = fopen(path, "re");
	char *out = NULL;
	size_t cap = 0;
	if (fp == NULL) {
		dm_err("cannot read %s: %s", path, strerror(errno));
		return NULL;
	}
	if (getdelim(&out, &cap, '\0', fp) < 0) {
		dm_err("cannot read %s: %s", path, ferror(fp) ? strerror(errno) : "empty file");
		free(out);
		out = NULL;
	}
	fclose(fp);
	return out;
}

/* A TCP socket listening on sa (addr, as given, for the message); -1 after saying why. */
static int
listen_inet(const struct sockaddr *sa, socklen_t len, const char *addr)
{
	int one = 1;
	int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);

	if (fd < 0 || setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) < 0 || bind(fd, sa, len) < 0 ||
	    listen(fd, 128) < 0) {
		dm_err("cannot listen on %s: %s", addr, strerror(errno));
		if (fd >= 0)
			close(fd);
		return -1;
	}
	return fd;
}

/* A listening socket on ADDR:PORT ([v6]:PORT too) or a unix socket path; -1 after saying why. */
static int
listen_on(const char *addr, int *loopback)
{
	int fd = -1;
	*loopback = 0;
	if (addr[0] == '/' || addr[0] == '.') {
		struct sockaddr_un sun = { .sun_family = AF_UNIX };
		if (strlen(addr) >= sizeof sun.sun_path) {
			dm_err("--listen %s: the socket path is too long", addr);
			return -1;
		}
		memcpy(sun.sun_path, addr, strlen(addr) + 1);
		unlink(addr);
		fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
		if (fd < 0 || bind(fd, (struct sockaddr *)&sun, sizeof sun) < 0 || chmod(addr, 0600) < 0 || listen(fd, 64) < 0) {
			dm_err("cannot listen on %s: %s", addr, strerror(errno));
			goto fail;
		}
		*loopback = 1;
		return fd;
	}
	const char *colon = strrchr(addr, ':');
	if (colon == NULL) {
		dm_err("--listen %s: expected ADDR:PORT or a socket path", addr);
		return -1;
	}
	char host[128];
	size_t hl = (size_t)(colon - addr);
	if (hl >= sizeof host)
		hl = sizeof host - 1;
	memcpy(host, addr, hl);
	host[hl] = '\0';
	char *end;
	long port = strtol(colon + 1, &end, 10);
	if (*end != '\0' || end == colon + 1 || port < 0 || port > 65535) {
		dm_err("--listen %s: bad port", addr);
		return -1;
	}
	if (host[0] == '[') {
		struct sockaddr_in6 s6 = { .sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port) };
		size_t l = strlen(host);
		if (l < 2 || host[l - 1] != ']') {
			dm_err("--listen %s: bad address", addr);
			return -1;
		}
		host[l - 1] = '\0';
		if (inet_pton(AF_INET6, host + 1, &s6.sin6_addr) != 1) {
			dm_err("--listen %s: bad IPv6 address", addr);
			return -1;
		}
		*loopback = IN6_IS_ADDR_LOOPBACK(&s6.sin6_addr);
		return listen_inet((struct sockaddr *)&s6, sizeof s6, addr);
	}
	struct sockaddr_in s4 = { .sin_family = AF_INET, .sin_port = htons((uint16_t)port) };
	if (strcmp(host, "localhost") == 0)
		snprintf(host, sizeof host, "127.0.0.1");
	if (inet_pton(AF_INET, host, &s4.sin_addr) != 1) {
		dm_err("--listen %s: bad IPv4 address (give numbers, or [v6]:PORT)", addr);
		return -1;
	}
	*loopback = (ntohl(s4.sin_addr.s_addr) >> 24) == 127;
	return listen_inet((struct sockaddr *)&s4, sizeof s4, addr);
fail:
	if (fd >= 0)
		close(fd);
	return -1;
}

/* ADDR:PORT of a listening TCP socket (the port the kernel chose for :0), into buf. */
static void
bound_address(int fd, const char *given, char *buf, size_t len)
{
	struct sockaddr_storage ss;
	socklen_t sl = sizeof ss;
	char host[INET6_ADDRSTRLEN];

	snprintf(buf, len, "%s", given);
	if (getsockname(fd, (struct sockaddr *)&ss, &sl) < 0)
		return;
	if (ss.ss_family == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;
		inet_ntop(AF_INET, &s4->sin_addr, host, sizeof host);
		snprintf(buf, len, "%s:%u", host, ntohs(s4->sin_port));
	} else if (ss.ss_family == AF_INET6) {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;
		inet_ntop(AF_INET6, &s6->sin6_addr, host, sizeof host);
		snprintf(buf, len, "[%s]:%u", host, ntohs(s6->sin6_port));
	}
}

/* libmicrohttpd's own messages (a client that went away...) as debug events. */
static void
mhd_log(void *cls, const char *fmt, va_list ap)
{
	char msg[1024];
	(void)cls;
	vsnprintf(msg, sizeof msg, fmt, ap);
	if (dm_verbosity >= 2)
		serve_log("debug", "http", "%s", msg);
}

struct MHD_Daemon *
serve_http_start(const char *listen_addr, const char *cert, const char *key, char *bound, size_t boundlen)
{
	int loopback;
	int fd = listen_on(listen_addr, &loopback);
	/* MHD copies neither: they stay for the daemon's life, reachable from here. */
	static char *cert_pem, *key_pem;
	unsigned flags = MHD_USE_INTERNAL_POLLING_THREAD | MHD_USE_THREAD_PER_CONNECTION | MHD_USE_ERROR_LOG;

	if (fd < 0)
		return NULL;
	bound_address(fd, listen_addr, bound, boundlen);
	if (cert != NULL) {
		cert_pem = read_file(cert);
		key_pem = read_file(key);
		if (cert_pem == NULL || key_pem == NULL) {
			close(fd);
			free(cert_pem);
			free(key_pem);
			cert_pem = key_pem = NULL;
			return NULL;
		}
		flags |= MHD_USE_TLS;
	} else if (!loopback) {
		serve_log("warn", "insecure", "listening on %s without TLS: the token crosses the network in clear (--tls-cert, --tls-key)",
		    listen_addr);
	}
	struct MHD_OptionItem tls[] = {
		{ MHD_OPTION_HTTPS_MEM_CERT, 0, cert_pem },
		{ MHD_OPTION_HTTPS_MEM_KEY, 0, key_pem },
		{ MHD_OPTION_END, 0, NULL },
	};
	struct MHD_Daemon *d = MHD_start_daemon(flags, 0, NULL, NULL, on_request, NULL,
	    MHD_OPTION_LISTEN_SOCKET, fd,
	    MHD_OPTION_CONNECTION_LIMIT, (unsigned)256,
	    MHD_OPTION_CONNECTION_TIMEOUT, (unsigned)120,
	    MHD_OPTION_CONNECTION_MEMORY_LIMIT, (size_t)(128 * 1024),
	    MHD_OPTION_THREAD_STACK_SIZE, (size_t)(256 * 1024),
	    MHD_OPTION_NOTIFY_COMPLETED, on_done, NULL,
	    MHD_OPTION_EXTERNAL_LOGGER, mhd_log, NULL,
	    MHD_OPTION_ARRAY, cert != NULL ? tls : tls + 2,
	    MHD_OPTION_END);
	if (d == NULL) {
		dm_err("cannot start the HTTP server on %s%s", listen_addr, cert != NULL ? " (is the certificate or key invalid?)" : "");
		close(fd);
	}
	return d;
}
