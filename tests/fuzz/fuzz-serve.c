/*
 * fuzz-serve.c - libFuzzer target for what dm-serve parses from outside: the
 * body of POST /v1/runs (JSON, then its fields), the run id of a URL, and the
 * runs' logfmt lines. The first byte picks the parser. Nothing may crash, leak
 * or read out of bounds; a run id accepted must be a plain file name.
 */
#define _GNU_SOURCE
#include "serve.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size < 1)
		return 0;
	const char *text = (const char *)data + 1;
	size_t len = size - 1;
	char *copy = dm_xstrndup(text, len);

	switch (data[0] % 3) {
	case 0: {
		json_error_t err;
		json_t *req = json_loadb(text, len, 0, &err);
		if (req != NULL) {
			char *why = serve_run_request_bad(req);
			free(why);
			json_decref(req);
		}
		break;
	}
	case 1: {
		json_t *ev = serve_logfmt_parse(copy);
		char *out = json_dumps(ev, JSON_COMPACT);
		assert(out != NULL);
		free(out);
		json_decref(ev);
		break;
	}
	default:
		if (serve_run_id_ok(copy))
			assert(strchr(copy, '/') == NULL && copy[0] != '.' && strlen(copy) <= 64);
		break;
	}
	free(copy);
	return 0;
}
