/*
 * fuzz-pgoutput.c - libFuzzer target for what dm-decode reads from the
 * server and what readers read of its output. The first byte chooses:
 * odd, the rest is a sequence of replication CopyData messages, each a
 * 2-byte big-endian length then its bytes, parsed as dm-decode does
 * (XLogData and keepalives, pgoutput messages, relations kept, keys
 * taken); even, the rest is a change feed given to the feed reader.
 * Nothing may crash, leak or read out of bounds, and a key taken from a
 * tuple must lie inside the message it came from.
 */
#define _GNU_SOURCE
#include "feed.h"
#include "pgoutput.h"

#include <stdlib.h>
#include <string.h>

static void
replication(const uint8_t *data, size_t size)
{
	dmpgo_relcache rels = { 0 };
	dmpgo_msg m;
	dm_value keys[64];

	dmpgo_msg_init(&m);
	while (size >= 2) {
		size_t len = (size_t)data[0] << 8 | data[1];
		data += 2;
		size -= 2;
		if (len > size)
			len = size;
		/* A copy of exactly len bytes: reading past it is a bug ASan sees. */
		char *msg = malloc(len ? len : 1);
		memcpy(msg, data, len);
		data += len;
		size -= len;
		dmpgo_copydata cd;
		const char *why = NULL;
		if (dmpgo_copydata_parse(msg, len, &cd, &why) == 0 && cd.kind == 'w' &&
		    dmpgo_parse(cd.data, cd.len, &m, &why) == 0) {
			const dmpgo_relation *r = NULL;
			if (m.type == 'R')
				dmpgo_relcache_put(&rels, &m);
			else if (m.type == 'I' || m.type == 'U' || m.type == 'D')
				r = dmpgo_relcache_get(&rels, m.relid);
			if (r != NULL && r->nkey <= 64) {
				const dmpgo_tuple *t = m.type == 'D' ? &m.oldt : &m.newt;
				if (dmpgo_tuple_key(r, t, keys, &why) == 0)
					for (size_t i = 0; i < r->nkey; i++)
						if (keys[i].ptr < msg || keys[i].ptr + keys[i].len > msg + len)
							abort();
			}
			char text[40];
			dmpgo_time_text(m.commit_time, text);
			dmpgo_lsn_text(m.end_lsn, text);
		}
		free(msg);
	}
	dmpgo_msg_free(&m);
	dmpgo_relcache_free(&rels);
}

static void
feed(const uint8_t *data, size_t size)
{
	FILE *fp = fmemopen((void *)data, size, "rb");
	dmf_reader r;

	if (fp == NULL)
		return;
	if (dmf_reader_open(&r, fp, "fuzz") == 0)
		while (dmf_reader_next(&r) > 0)
			;
	dmf_reader_free(&r);
	fclose(fp);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	dm_verbosity = -1;
	if (size < 1)
		return 0;
	if (data[0] & 1)
		replication(data + 1, size - 1);
	else if (size > 1)
		feed(data + 1, size - 1);
	return 0;
}
