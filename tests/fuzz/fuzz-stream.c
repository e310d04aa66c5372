/*
 * fuzz-stream.c - libFuzzer target for the stream reader and the merge.
 * The input is read as one stream, then split at its middle byte into two
 * streams that are merged like dm-diff would. Nothing may crash, leak or
 * read out of bounds, and a destination-only key must never be reported
 * past the last source key that was read.
 */
#define _GNU_SOURCE
#include "merge.h"

#include <stdlib.h>
#include <string.h>

static void
drain(const uint8_t *data, size_t size)
{
	FILE *fp = fmemopen((void *)data, size, "rb");
	dms_reader r;

	if (fp == NULL)
		return;
	if (dms_reader_open(&r, fp, "fuzz") == 0)
		while (dms_reader_next(&r) > 0)
			;
	dms_reader_free(&r);
	fclose(fp);
}

struct check {
	int bad;
};

static int
on_key(void *arg, dmm_event ev, const dms_reader *src, const dms_reader *dst)
{
	struct check *c = arg;

	/* An only-in-destination key while the source is unfinished must lie below the source key. */
	if (ev == DMM_ONLY_DEST && !src->done &&
	    dms_key_cmp(src->hdr.keyclass, src->hdr.nkey, dst->keys, src->keys) >= 0)
		c->bad = 1;
	return 0;
}

static int
same_shape(const dms_header *a, const dms_header *b)
{
	if (a->ncols != b->ncols || a->nkey != b->nkey)
		return 0;
	for (size_t i = 0; i < a->nkey; i++)
		if (a->key[i] != b->key[i] || a->keyclass[i] != b->keyclass[i])
			return 0;
	return 1;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;

	if (!quiet) {
		dm_prog = "fuzz-stream";
		/* Invalid streams are the point: their messages are noise. */
		dm_verbosity = -1;
		quiet = 1;
	}
	drain(data, size);
	if (size < 4)
		return 0;
	size_t half = size / 2;
	FILE *fa = fmemopen((void *)data, half, "rb");
	FILE *fb = fmemopen((void *)(data + half), size - half, "rb");
	dms_reader a, b;
	memset(&a, 0, sizeof a);
	memset(&b, 0, sizeof b);
	if (fa && fb && dms_reader_open(&a, fa, "a") == 0 && dms_reader_open(&b, fb, "b") == 0 &&
	    same_shape(&a.hdr, &b.hdr)) {
		struct check c = { 0 };
		dmm_merge(&a, &b, on_key, &c);
		if (c.bad)
			abort();
	}
	dms_reader_free(&a);
	dms_reader_free(&b);
	if (fa)
		fclose(fa);
	if (fb)
		fclose(fb);
	return 0;
}
