/*
 * cache.c - reports computed once per parameters and kept a short time, so
 * that twenty people refreshing a page do not scan the databases twenty times.
 */
#define _POSIX_C_SOURCE 200809L
#include "serve.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

#define CACHE_SLOTS 64

struct cache_entry {
	char *key;		/* NULL: a free slot */
	json_t *value;		/* owned */
	int status;
	double at;		/* when computed (monotonic seconds) */
	int computing;
	int stale;		/* forgotten while computing: what comes is kept expired */
	double used;
};

static struct cache_entry cache[CACHE_SLOTS];
static pthread_mutex_t cache_mutex = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cache_done = PTHREAD_COND_INITIALIZER;

static double
cache_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* The entry of key, or a slot for it (free, else the least recently used not computing). */
static struct cache_entry *
cache_slot(const char *key)
{
	struct cache_entry *victim = NULL;

	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].key != NULL && strcmp(cache[i].key, key) == 0)
			return &cache[i];
	for (int i = 0; i < CACHE_SLOTS; i++) {
		struct cache_entry *e = &cache[i];
		if (e->key == NULL) {
			victim = e;
			break;
		}
		if (!e->computing && (victim == NULL || e->used < victim->used))
			victim = e;
	}
	if (victim == NULL)
		return NULL;
	free(victim->key);
	json_decref(victim->value);
	memset(victim, 0, sizeof *victim);
	victim->key = dm_xstrdup(key);
	return victim;
}

json_t *
serve_cache_get(const char *key, double max_age, serve_compute_fn fn, void *arg, int *http_status)
{
	struct cache_entry *e;
	json_t *v;
	int st;

	pthread_mutex_lock(&cache_mutex);
	for (;;) {
		e = cache_slot(key);
		if (e == NULL || !e->computing)
			break;
		pthread_cond_wait(&cache_done, &cache_mutex);
	}
	if (e != NULL && e->value != NULL && cache_now() - e->at <= max_age) {
		e->used = cache_now();
		*http_status = e->status;
		v = json_incref(e->value);
		pthread_mutex_unlock(&cache_mutex);
		return v;
	}
	if (e != NULL) {
		e->computing = 1;
		e->stale = 0;
	}
	pthread_mutex_unlock(&cache_mutex);

	st = 200;
	v = fn(key, arg, &st);

	pthread_mutex_lock(&cache_mutex);
	if (e != NULL) {
		e->computing = 0;
		json_decref(e->value);
		/* Failures are not kept: the next caller tries again. */
		e->value = st < 500 && v != NULL ? json_incref(v) : NULL;
		e->status = st;
		e->at = e->used = cache_now();
		/* Begun before it was forgotten: the next caller computes again. */
		if (e->stale)
			e->at = -1e18;
		pthread_cond_broadcast(&cache_done);
	}
	pthread_mutex_unlock(&cache_mutex);
	*http_status = st;
	return v;
}

json_t *
serve_cache_peek(const char *key, int *http_status)
{
	json_t *v = NULL;

	pthread_mutex_lock(&cache_mutex);
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].key != NULL && strcmp(cache[i].key, key) == 0 && cache[i].value != NULL) {
			v = json_incref(cache[i].value);
			*http_status = cache[i].status;
			break;
		}
	pthread_mutex_unlock(&cache_mutex);
	return v;
}

void
serve_cache_forget(const char *prefix)
{
	size_t n = strlen(prefix);

	pthread_mutex_lock(&cache_mutex);
	for (int i = 0; i < CACHE_SLOTS; i++)
		if (cache[i].key != NULL && strncmp(cache[i].key, prefix, n) == 0) {
			/* Expired, not dropped: serve_cache_peek (the metrics) keeps the last value known. */
			cache[i].at = -1e18;
			cache[i].stale = cache[i].computing;
		}
	pthread_mutex_unlock(&cache_mutex);
}
