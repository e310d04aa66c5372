/* merge.c - streaming merge of two key-ordered dm streams. */
#include "merge.h"

#include <string.h>

#define DMM_STOPPED (-2)

/*
 * The source's next row: 1, 0 at its verified trailer, -1 when it is invalid
 * (printed), DMM_STOPPED when fn stopped. Each sync point the source verifies
 * on the way, and its trailer, is reported to fn as DMM_VERIFIED first.
 */
static int
dmm_source_next(dms_reader *a, const dms_reader *b, dmm_fn fn, void *ctx)
{
	for (;;) {
		int got = dms_reader_next(a);
		if (got != 2 && got != 0)
			return got;
		if (fn(ctx, DMM_VERIFIED, a, b) < 0)
			return DMM_STOPPED;
		if (got == 0)
			return 0;
	}
}

int
dmm_merge(dms_reader *a, dms_reader *b, dmm_fn fn, void *ctx)
{
	const dms_keyclass *cls = a->hdr.keyclass;
	size_t nkey = a->hdr.nkey;
	unsigned char ha[DMS_HASH_LEN], hb[DMS_HASH_LEN];

	a->stop_at_sync = 1;
	int ga = dmm_source_next(a, b, fn, ctx);
	int gb = ga < 0 ? 0 : dms_reader_next(b);
	while (ga >= 0 && gb >= 0 && (ga > 0 || gb > 0)) {
		int c;
		dmm_event ev;
		if (ga > 0 && gb > 0)
			c = dms_key_cmp(cls, nkey, a->keys, b->keys);
		else
			c = ga > 0 ? -1 : 1;	/* the other side ended with a verified trailer */
		if (c < 0) {
			ev = DMM_ONLY_SOURCE;
		} else if (c > 0) {
			ev = DMM_ONLY_DEST;
		} else {
			/* The row hashes: a hashes stream carries them, a rows stream's are computed once. */
			dms_reader_row_hash(a, ha);
			dms_reader_row_hash(b, hb);
			ev = memcmp(ha, hb, DMS_HASH_LEN) != 0 ? DMM_CHANGED : DMM_SAME;
		}
		if (fn(ctx, ev, a, b) < 0)
			return DM_EXIT_FAIL;
		if (c <= 0)
			ga = dmm_source_next(a, b, fn, ctx);
		if (c >= 0 && ga >= 0)
			gb = dms_reader_next(b);
	}
	if (ga == DMM_STOPPED)
		return DM_EXIT_FAIL;
	return ga >= 0 && gb >= 0 ? 0 : DM_EXIT_STREAM;
}
