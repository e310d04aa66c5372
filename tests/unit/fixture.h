/* fixture.h - stream headers for the unit tests. */
#ifndef DM_FIXTURE_H
#define DM_FIXTURE_H

#include "stream.h"

#include <stdlib.h>
#include <string.h>

/*
 * A header of KIND for "public.t" with ncols columns, names and types given in pairs
 * (cols[2*i], cols[2*i+1]), keyed by the first column. h owns copies of everything:
 * dms_header_free releases them.
 */
static void
fixture_header(dms_header *h, dms_kind kind, size_t ncols, const char *const *cols)
{
	dms_header_init(h);
	h->kind = kind;
	h->entity = strdup("public.t");
	h->table = strdup("public.t");
	h->ncols = ncols;
	h->cols = calloc(ncols, sizeof *h->cols);
	for (size_t i = 0; i < ncols; i++) {
		h->cols[i].name = strdup(cols[2 * i]);
		h->cols[i].type = strdup(cols[2 * i + 1]);
	}
	h->nkey = 1;
	h->key = calloc(1, sizeof *h->key);
	dms_header_classify(h);
}

#endif
