/* test-merge.c - the key order dm-diff merges by, the pinned row hash, and when the merge vouches. */
#define _GNU_SOURCE	/* open_memstream, fmemopen */
#include "merge.h"
#include "fixture.h"
#include "tap.h"

#include <stdlib.h>
#include <string.h>

static dm_value
t(const char *s)
{
	return (dm_value){ s, (uint32_t)strlen(s), DM_TEXT };
}

/*
 * A stream of public.t (id integer, v text) in memory: rows with ids
 * first, first + step, ... (n of them), v "v<id>"; a hashes stream of the
 * same rows with hashes set.
 */
static char *
make_stream(size_t *len, int hashes, int first, int step, int n)
{
	char *buf = NULL;
	FILE *fp = open_memstream(&buf, len);
	dms_header h;
	dms_writer w;
	dm_buf scratch = { 0 };
	char id[16], v[16];
	unsigned char hash[DMS_HASH_LEN];

	static const char *const cols[] = { "id", "integer", "v", "text" };
	fixture_header(&h, hashes ? DMS_HASHES : DMS_ROWS, 2, cols);
	dms_writer_open(&w, fp, &h);
	for (int i = 0; i < n; i++) {
		snprintf(id, sizeof id, "%d", first + i * step);
		snprintf(v, sizeof v, "v%d", first + i * step);
		dm_value row[2] = { t(id), t(v) };
		if (hashes) {
			dms_row_hash(row, 2, &scratch, hash);
			row[1] = (dm_value){ (const char *)hash, DMS_HASH_LEN, DM_BIN };
		}
		dms_writer_row(&w, DMS_OP_NONE, row, 2);
	}
	dms_writer_finish(&w, NULL);
	dms_writer_free(&w);
	dms_header_free(&h);
	dm_buf_free(&scratch);
	fclose(fp);
	return buf;
}

/* What the merge reported: source rows seen at each DMM_VERIFIED, and any that came too early. */
struct seen {
	uint64_t at[8];
	int n, done_early, unverified, keys;
};

static int
record(void *arg, dmm_event ev, const dms_reader *src, const dms_reader *dst)
{
	struct seen *s = arg;

	(void)dst;
	if (ev != DMM_VERIFIED) {
		s->keys++;
		return 0;
	}
	/* Every source row reported before this event is covered by the source's checksum now. */
	if (src->verified != src->rows)
		s->unverified++;
	if (src->done && src->rows != 2500)
		s->done_early++;
	if (s->n < 8)
		s->at[s->n++] = src->rows;
	return 0;
}

int
main(void)
{
	dms_keyclass ints[1] = { DMS_KEY_INT }, bytes[1] = { DMS_KEY_BYTES };
	dms_keyclass mixed[2] = { DMS_KEY_INT, DMS_KEY_BYTES };
	static const char *const order[] = { "-9223372036854775808", "-100", "-11", "-2", "0", "3", "10", "99", "100",
		"9223372036854775807" };
	int sorted = 1;

	dm_prog = "test-merge";
	for (size_t i = 0; i + 1 < sizeof order / sizeof *order; i++) {
		dm_value a = t(order[i]), b = t(order[i + 1]);
		if (dms_key_cmp(ints, 1, &a, &b) >= 0 || dms_key_cmp(ints, 1, &b, &a) <= 0)
			sorted = 0;
	}
	ok(sorted, "integer keys order numerically, negatives included");
	dm_value a = t("B"), b = t("a"), c = t("\xc3\xa9"), d = t("_x"), e = t("a");
	ok(dms_key_cmp(bytes, 1, &a, &b) < 0 && dms_key_cmp(bytes, 1, &d, &b) < 0 &&
	    dms_key_cmp(bytes, 1, &b, &c) < 0, "text keys order by bytes (C collation), not by locale");
	ok(dms_key_cmp(bytes, 1, &b, &e) == 0, "equal keys compare equal");
	dm_value ab = t("ab");
	ok(dms_key_cmp(bytes, 1, &b, &ab) < 0, "a prefix sorts first");
	dm_value k1[2] = { t("2"), t("b") }, k2[2] = { t("10"), t("a") }, k3[2] = { t("2"), t("c") };
	ok(dms_key_cmp(mixed, 2, k1, k2) < 0 && dms_key_cmp(mixed, 2, k1, k3) < 0,
	    "composite keys order column by column");

	/* What the row hash must tell apart (its exact value is pinned, from dm-stream(5), in test-stream). */
	dm_value row[3] = { t("1"), { NULL, 0, DM_NULL }, { "\0\1", 2, DM_BIN } };
	dm_buf scratch = { 0 };
	unsigned char h[DMS_HASH_LEN], h2[DMS_HASH_LEN];
	dms_row_hash(row, 3, &scratch, h);
	row[1] = t("");
	dms_row_hash(row, 3, &scratch, h2);
	ok(memcmp(h, h2, sizeof h) != 0, "NULL and empty string hash differently");
	dm_value r1[2] = { t("ab"), t("c") }, r2[2] = { t("a"), t("bc") };
	dms_row_hash(r1, 2, &scratch, h);
	dms_row_hash(r2, 2, &scratch, h2);
	ok(memcmp(h, h2, sizeof h) != 0, "value boundaries are part of the hash");
	dm_buf_free(&scratch);
	/* The merge reports each verified sync point of the source, before any row after it. */
	{
		size_t la, lb;
		char *sa = make_stream(&la, 0, 1, 1, 2500), *sb = make_stream(&lb, 1, 2, 2, 1500);
		FILE *fa = fmemopen(sa, la, "rb"), *fb = fmemopen(sb, lb, "rb");
		dms_reader ra, rb;
		memset(&ra, 0, sizeof ra);
		memset(&rb, 0, sizeof rb);
		struct seen seen = { { 0 }, 0, 0, 0, 0 };
		int opened = dms_reader_open(&ra, fa, "a") == 0 && dms_reader_open(&rb, fb, "b") == 0;
		int m = opened ? dmm_merge(&ra, &rb, record, &seen) : -1;
		ok(m == 0 && seen.n == 3 && seen.at[0] == 1000 && seen.at[1] == 2000 && seen.at[2] == 2500 &&
		    seen.unverified == 0 && seen.done_early == 0,
		    "DMM_VERIFIED after source rows 1000, 2000 and at the trailer (%d events: %llu %llu %llu)",
		    seen.n, (unsigned long long)seen.at[0], (unsigned long long)seen.at[1],
		    (unsigned long long)seen.at[2]);
		ok(seen.keys == 2500 + 250, "every key reported once (%d)", seen.keys);
		dms_reader_free(&ra);
		dms_reader_free(&rb);
		fclose(fa);
		fclose(fb);
		free(sa);
		free(sb);
	}
	return done();
}
