/*
 * events.c - the runs' events: a thread follows the log of every run this
 * server started (dm-migrate's logfmt lines), turns each line into a JSON
 * event, keeps the last events in a ring for the SSE clients (GET /v1/events)
 * and the latest progress of each entity for GET /v1/runs/{id}.
 */
#define _GNU_SOURCE
#include "serve.h"

#include <microhttpd.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RING 2048		/* events kept for clients that fall behind or reconnect */
#define TAILED 64		/* runs followed at once */
#define KEEPALIVE_SECONDS 15

struct tailed {
	char *id;		/* NULL: free */
	long offset;
	char *state;		/* the run's state last seen, to tell its changes */
	json_t *progress;	/* entity -> latest progress event */
	int done;		/* ended and its log read to the end */
};

static pthread_mutex_t ev_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ev_cond = PTHREAD_COND_INITIALIZER;
static char *ring[RING];	/* "id: N\nevent: E\ndata: {...}\n\n" */
static unsigned long long ring_next = 1;	/* the id of the next event */
static struct tailed tailed[TAILED];
static char *watch_queue[TAILED];	/* runs started here, not yet followed */
static int watch_queued;
static int sse_clients;
static volatile int ev_stop;
static pthread_t ev_thread;

/* Adds an event (takes data's reference). Under ev_mutex. */
static void
ev_push(const char *event, json_t *data)
{
	char *json = json_dumps(data, JSON_COMPACT | JSON_REAL_PRECISION(15));
	unsigned long long id = ring_next++;
	free(ring[id % RING]);
	ring[id % RING] = dm_xasprintf("id: %llu\nevent: %s\ndata: %s\n\n", id, event, json ? json : "null");
	free(json);
	json_decref(data);
	pthread_cond_broadcast(&ev_cond);
}

/* Reads what was added to a followed run's log since last time. */
static void
ev_follow(struct tailed *t)
{
	char *path = serve_run_path(t->id, "log");
	FILE *fp = fopen(path, "re");
	char *line = NULL;
	size_t cap = 0;
	ssize_t n;

	free(path);
	if (fp == NULL)
		return;
	if (fseek(fp, t->offset, SEEK_SET) == 0) {
		while ((n = getline(&line, &cap, fp)) > 0) {
			if (line[n - 1] != '\n')
				break;	/* a line still being written: next time */
			t->offset += n;
			line[n - 1] = '\0';
			json_t *ev = serve_logfmt_parse(line);
			if (json_object_get(ev, "run") == NULL)
				json_object_set_new(ev, "run", json_string(t->id));
			const char *kind = json_string_value(json_object_get(ev, "event"));
			const char *ent = json_string_value(json_object_get(ev, "entity"));
			pthread_mutex_lock(&ev_mutex);
			if (kind != NULL && ent != NULL && strcmp(kind, "progress") == 0)
				json_object_set(t->progress, ent, ev);
			ev_push("log", ev);
			pthread_mutex_unlock(&ev_mutex);
		}
	}
	free(line);
	fclose(fp);
}

/* The run's state changed since last seen: an event with the run object. */
static void
ev_check_state(struct tailed *t)
{
	json_t *run = serve_run_get(t->id);
	const char *st = json_string_value(json_object_get(run, "state"));
	if (st == NULL) {
		json_decref(run);
		return;
	}
	pthread_mutex_lock(&ev_mutex);
	if (t->state == NULL || strcmp(t->state, st) != 0) {
		free(t->state);
		t->state = dm_xstrdup(st);
		ev_push("run", json_incref(run));
	}
	if (strcmp(st, "running") != 0)
		t->done = 1;
	pthread_mutex_unlock(&ev_mutex);
	json_decref(run);
}

/* Follows run_id from now on (if not already), even one that ended. Under ev_mutex. */
static void
ev_track(const char *run_id)
{
	int freeslot = -1;

	for (int i = 0; i < TAILED; i++) {
		if (tailed[i].id != NULL && strcmp(tailed[i].id, run_id) == 0)
			return;
		if (tailed[i].id == NULL && freeslot < 0)
			freeslot = i;
	}
	if (freeslot < 0)
		return;
	tailed[freeslot].id = dm_xstrdup(run_id);
	tailed[freeslot].offset = 0;
	tailed[freeslot].progress = json_object();
	tailed[freeslot].done = 0;
}

/*
 * A run this server started is followed from its start: found only among the
 * active runs a tick later, a run that ended within the tick would have no
 * events at all. Copies run_id.
 */
void
serve_events_watch(const char *run_id)
{
	pthread_mutex_lock(&ev_mutex);
	if (watch_queued < TAILED)
		watch_queue[watch_queued++] = dm_xstrdup(run_id);
	pthread_mutex_unlock(&ev_mutex);
}

static void *
ev_main(void *arg)
{
	(void)arg;
	int tick = 0;
	while (!ev_stop) {
		serve_run_reap();
		/* New runs: started here, or by a server before this one. */
		pthread_mutex_lock(&ev_mutex);
		for (int q = 0; q < watch_queued; q++) {
			ev_track(watch_queue[q]);
			free(watch_queue[q]);
		}
		watch_queued = 0;
		pthread_mutex_unlock(&ev_mutex);
		char **active = serve_run_active();
		pthread_mutex_lock(&ev_mutex);
		for (char **a = active; *a != NULL; a++)
			ev_track(*a);
		pthread_mutex_unlock(&ev_mutex);
		serve_strv_free(active);
		for (int i = 0; i < TAILED; i++) {
			struct tailed *t = &tailed[i];
			if (t->id == NULL)
				continue;
			ev_follow(t);
			if (tick % 2 == 0 || t->state == NULL)
				ev_check_state(t);
			if (t->done) {
				ev_follow(t);	/* what it wrote before it ended */
				pthread_mutex_lock(&ev_mutex);
				free(t->id);
				free(t->state);
				json_decref(t->progress);
				memset(t, 0, sizeof *t);
				pthread_mutex_unlock(&ev_mutex);
			}
		}
		tick++;
		struct timespec ts = { 0, 250 * 1000 * 1000 };
		nanosleep(&ts, NULL);
	}
	return NULL;
}

int
serve_events_start(void)
{
	int rc = pthread_create(&ev_thread, NULL, ev_main, NULL);
	if (rc != 0) {
		dm_err("cannot start the events thread: %s", strerror(rc));
		return -1;
	}
	return 0;
}

void
serve_events_stop(void)
{
	ev_stop = 1;
	pthread_mutex_lock(&ev_mutex);
	pthread_cond_broadcast(&ev_cond);
	pthread_mutex_unlock(&ev_mutex);
	pthread_join(ev_thread, NULL);
	for (int q = 0; q < watch_queued; q++)
		free(watch_queue[q]);
	watch_queued = 0;
}

json_t *
serve_events_progress(const char *run_id)
{
	json_t *out = NULL;
	pthread_mutex_lock(&ev_mutex);
	for (int i = 0; i < TAILED && out == NULL; i++)
		if (tailed[i].id != NULL && strcmp(tailed[i].id, run_id) == 0)
			out = json_deep_copy(tailed[i].progress);
	pthread_mutex_unlock(&ev_mutex);
	return out != NULL ? out : json_object();
}

/* One SSE client: where it is in the ring, and what is left to send of the current chunk. */
struct sse {
	unsigned long long next;	/* the id of the next event to send */
	char *pending;
	size_t off;
	int first;
};

static ssize_t
sse_read(void *cls, uint64_t pos, char *buf, size_t max)
{
	struct sse *s = cls;
	(void)pos;

	if (s->pending == NULL && s->first) {
		/* A client that connects late first gets the current state: the runs in progress. */
		s->first = 0;
		json_t *runs = json_array();
		char **active = serve_run_active();
		for (char **a = active; *a != NULL; a++) {
			json_t *r = serve_run_get(*a);
			if (r != NULL)
				json_array_append_new(runs, r);
		}
		serve_strv_free(active);
		json_t *st = json_object();
		json_object_set_new(st, "runs", runs);
		char *json = json_dumps(st, JSON_COMPACT | JSON_REAL_PRECISION(15));
		json_decref(st);
		s->pending = dm_xasprintf("retry: 2000\nevent: state\ndata: %s\n\n", json ? json : "{}");
		free(json);
		s->off = 0;
	}
	if (s->pending == NULL) {
		pthread_mutex_lock(&ev_mutex);
		if (s->next == 0 || s->next + RING <= ring_next)
			s->next = s->next == 0 ? ring_next : ring_next - RING + 1;
		if (s->next >= ring_next && !ev_stop) {
			struct timespec until;
			clock_gettime(CLOCK_REALTIME, &until);
			until.tv_sec += KEEPALIVE_SECONDS;
			pthread_cond_timedwait(&ev_cond, &ev_mutex, &until);
		}
		if (ev_stop) {
			pthread_mutex_unlock(&ev_mutex);
			return MHD_CONTENT_READER_END_OF_STREAM;
		}
		if (s->next < ring_next) {
			dm_buf b = { 0 };
			while (s->next < ring_next && b.len < 256 * 1024) {
				const char *e = ring[s->next % RING];
				dm_buf_append(&b, e, strlen(e));
				s->next++;
			}
			dm_buf_putc(&b, '\0');
			s->pending = b.data;
		} else {
			s->pending = dm_xstrdup(": keepalive\n\n");
		}
		s->off = 0;
		pthread_mutex_unlock(&ev_mutex);
	}
	size_t left = strlen(s->pending + s->off);
	size_t n = left < max ? left : max;
	memcpy(buf, s->pending + s->off, n);
	s->off += n;
	if (s->pending[s->off] == '\0') {
		free(s->pending);
		s->pending = NULL;
	}
	return (ssize_t)n;
}

static void
sse_free(void *cls)
{
	struct sse *s = cls;
	free(s->pending);
	free(s);
	pthread_mutex_lock(&ev_mutex);
	sse_clients--;
	pthread_mutex_unlock(&ev_mutex);
}

struct MHD_Response *
serve_events_response(const char *last_event_id)
{
	struct sse *s;
	struct MHD_Response *r;

	pthread_mutex_lock(&ev_mutex);
	if (sse_clients >= serve.max_sse) {
		pthread_mutex_unlock(&ev_mutex);
		return NULL;
	}
	sse_clients++;
	pthread_mutex_unlock(&ev_mutex);
	s = dm_xcalloc(1, sizeof *s);
	s->first = 1;
	if (last_event_id != NULL) {
		/* A reconnecting client resumes after the last event it saw, if the ring still has what follows. */
		char *end;
		unsigned long long id = strtoull(last_event_id, &end, 10);
		if (end != last_event_id && *end == '\0') {
			s->next = id + 1;
			s->first = 0;
		}
	}
	r = MHD_create_response_from_callback(MHD_SIZE_UNKNOWN, 32 * 1024, sse_read, s, sse_free);
	if (r == NULL) {
		sse_free(s);
		return NULL;
	}
	MHD_add_response_header(r, "Content-Type", "text/event-stream");
	MHD_add_response_header(r, "Cache-Control", "no-store");
	MHD_add_response_header(r, "X-Accel-Buffering", "no");
	return r;
}
