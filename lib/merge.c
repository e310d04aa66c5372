/* merge.c - streaming merge of two key-ordered dm streams. */
#include "merge.h"

#include <string.h>

int
dmm_merge(dms_reader *a, dms_reader *b, dmm_fn fn, void *ctx)
{
	const dms_keyclass *cls = a->hdr.keyclass;
	size_t nkey = a->hdr.nkey;
	unsigned char ha[DMS_HASH_LEN], hb[DMS_HASH_LEN];
	dm_buf scratch = { 0 };
	int rc = DM_EXIT_STREAM;

	int ga = dms_reader_next(a);
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
			const unsigned char *pa = a->hash, *pb = b->hash;
			if (pa == NULL) {
				dms_row_hash(a->vals, a->nvals, &scratch, ha);
				pa = ha;
			}
			if (pb == NULL) {
				dms_row_hash(b->vals, b->nvals, &scratch, hb);
				pb = hb;
			}
			ev = memcmp(pa, pb, DMS_HASH_LEN) != 0 ? DMM_CHANGED : DMM_SAME;
		}
		if (fn(ctx, ev, a, b) < 0) {
			rc = DM_EXIT_FAIL;
			goto out;
		}
		if (c <= 0)
			ga = dms_reader_next(a);
		if (c >= 0 && ga >= 0)
			gb = dms_reader_next(b);
	}
	if (ga >= 0 && gb >= 0)
		rc = 0;
out:
	dm_buf_free(&scratch);
	return rc;
}
