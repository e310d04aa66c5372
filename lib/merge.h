/*
 * merge.h - the streaming merge at the heart of dm-diff: two key-ordered
 * streams, one row of each held at a time.
 */
#ifndef DM_MERGE_H
#define DM_MERGE_H

#include "stream.h"

typedef enum {
	DMM_ONLY_SOURCE,	/* key in the source only: an insert */
	DMM_ONLY_DEST,		/* key in the destination only: a delete, if asked for */
	DMM_CHANGED,		/* key in both, rows differ: an update */
	DMM_SAME,		/* key in both, rows equal */
	/*
	 * Not a key: the source has just verified a sync point or its trailer,
	 * so every source row reported so far is intact (src->done: the whole
	 * source). The destination's readers are not involved.
	 */
	DMM_VERIFIED
} dmm_event;

/* Called once per key with the readers positioned on it, and at DMM_VERIFIED. 0 goes on; -1 stops. */
typedef int (*dmm_fn)(void *ctx, dmm_event ev, const dms_reader *src, const dms_reader *dst);

/*
 * Merges src and dst (opened readers, same shape). A destination-only key
 * is reported only once the source has shown a larger key or a verified
 * trailer, so a truncated source never reports a key it did not cover.
 * Sets src->stop_at_sync, to report DMM_VERIFIED right after each sync
 * point of the source, before any later source row.
 * Returns 0 when both streams ended in verified trailers, DM_EXIT_STREAM
 * when one is invalid (message printed), DM_EXIT_FAIL when fn stopped.
 */
int dmm_merge(dms_reader *src, dms_reader *dst, dmm_fn fn, void *ctx);

#endif
