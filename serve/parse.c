/*
 * parse.c - what dm-serve reads from outside: run requests (POST /v1/runs), run
 * ids in URLs, and the runs' logfmt lines. No I/O here, so that the fuzzer
 * (tests/fuzz/fuzz-serve.c) can drive it.
 */
#define _GNU_SOURCE
#include "serve.h"

#include <stdlib.h>
#include <string.h>

/* Checks a POST /v1/runs body: NULL, or what is wrong (malloc'd). */
char *
serve_run_request_bad(json_t *req)
{
	const char *k;
	json_t *v;
	if (!json_is_object(req))
		return dm_xstrdup("the body must be a JSON object");
	json_object_foreach(req, k, v) {
		if (strcmp(k, "entities") == 0) {
			size_t i;
			json_t *e;
			if (!json_is_array(v))
				return dm_xstrdup("entities must be an array of entity names");
			json_array_foreach(v, i, e) if (!json_is_string(e) || *json_string_value(e) == '\0')
				return dm_xstrdup("entities must be an array of entity names");
			if (json_array_size(v) > 10000)
				return dm_xstrdup("entities: too many");
		} else if (strcmp(k, "full") == 0 || strcmp(k, "delete") == 0 || strcmp(k, "verify") == 0) {
			if (!json_is_boolean(v))
				return dm_xasprintf("%s must be true or false", k);
		} else if (strcmp(k, "jobs") == 0) {
			if (!json_is_integer(v) || json_integer_value(v) < 1 || json_integer_value(v) > 64)
				return dm_xstrdup("jobs must be an integer from 1 to 64");
		} else {
			return dm_xasprintf("unknown field \"%s\" (known: entities, full, delete, jobs, verify)", k);
		}
	}
	return NULL;
}

/* A run id this server could have made, or dm-migrate: nothing that walks paths. */
int
serve_run_id_ok(const char *id)
{
	size_t n = strlen(id);
	return n > 0 && n <= 64 && strspn(id, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._-") == n &&
	    id[0] != '.';
}

json_t *
serve_logfmt_parse(const char *line)
{
	json_t *o = json_object();
	const char *p = line;

	while (*p) {
		while (*p == ' ')
			p++;
		const char *k = p;
		while (*p && *p != '=' && *p != ' ')
			p++;
		if (*p != '=' || p == k) {
			while (*p && *p != ' ')
				p++;
			continue;
		}
		char *key = dm_xstrndup(k, (size_t)(p - k));
		p++;
		dm_buf v = { 0 };
		int quoted = *p == '"';
		if (quoted) {
			for (p++; *p && *p != '"'; p++) {
				if (*p == '\\' && p[1]) {
					p++;
					dm_buf_putc(&v, *p == 'n' ? '\n' : *p);
				} else {
					dm_buf_putc(&v, *p);
				}
			}
			if (*p == '"')
				p++;
		} else {
			while (*p && *p != ' ')
				dm_buf_putc(&v, *p++);
		}
		dm_buf_putc(&v, '\0');
		char *end;
		long long n = strtoll(v.data, &end, 10);
		if (!quoted && *v.data && *end == '\0' && strlen(v.data) < 18)
			json_object_set_new(o, key, json_integer(n));
		else
			json_object_set_new(o, key, json_string(v.data));
		free(key);
		dm_buf_free(&v);
	}
	return o;
}

