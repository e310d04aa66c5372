/* test-stream.c - the stream codec: round trips, and every kind of damage is caught. */
#define _GNU_SOURCE	/* memmem, open_memstream, fmemopen */
#include "stream.h"
#include "tap.h"

#include <stdlib.h>
#include <unistd.h>
#include <string.h>

static void
make_header(dms_header *h, dms_kind kind)
{
	dms_header_init(h);
	h->kind = kind;
	h->entity = strdup("public.t");
	h->table = strdup("public.t");
	h->ncols = 3;
	h->cols = calloc(3, sizeof *h->cols);
	h->cols[0].name = strdup("id");
	h->cols[0].type = strdup("integer");
	h->cols[1].name = strdup("note");
	h->cols[1].type = strdup("text");
	h->cols[2].name = strdup("blob");
	h->cols[2].type = strdup("bytea");
	h->nkey = 1;
	h->key = calloc(1, sizeof *h->key);
	dms_header_classify(h);
}

/* Writes rows with keys 1..n (or the keys given) into a memory buffer. */
static char *
write_stream(size_t *len, const char *const *keys, int n, int with_trailer)
{
	char *buf = NULL;
	FILE *fp = open_memstream(&buf, len);
	dms_header h;
	dms_writer w;
	static const char blob[] = { 0, 1, 2, (char)255, '\n', '\t', '\\' };

	make_header(&h, DMS_ROWS);
	dms_writer_open(&w, fp, &h);
	for (int i = 0; i < n; i++) {
		dm_value v[3] = {
			{ keys[i], (uint32_t)strlen(keys[i]), DM_TEXT },
			{ i % 2 ? "" : NULL, 0, (uint8_t)(i % 2 ? DM_TEXT : DM_NULL) },
			{ blob, sizeof blob, DM_BIN },
		};
		dms_writer_row(&w, DMS_OP_NONE, v, 3);
	}
	if (with_trailer)
		dms_writer_finish(&w, "2024-01-01 00:00:00");
	dms_writer_free(&w);
	dms_header_free(&h);
	fclose(fp);
	return buf;
}

/* Reads a whole stream: rows read, and the final status (0 valid, -1 error, 3 bad header). */
static int
read_stream(const char *buf, size_t len, int *rows)
{
	FILE *fp = fmemopen((void *)buf, len ? len : 1, "rb");
	dms_reader r;
	int got;

	if (len == 0) {
		fclose(fp);
		fp = fopen("/dev/null", "rb");
	}
	*rows = 0;
	if (dms_reader_open(&r, fp, "test") != 0) {
		dms_reader_free(&r);
		fclose(fp);
		return 3;
	}
	while ((got = dms_reader_next(&r)) > 0)
		(*rows)++;
	dms_reader_free(&r);
	fclose(fp);
	return got;
}

int
main(void)
{
	static const char *const keys[] = { "1", "2", "9", "10", "11", "100" };
	size_t len;
	int rows;

	dm_prog = "test-stream";
	/* Thousands of damaged streams are read on purpose: their messages are noise here. */
	if (getenv("DM_TEST_VERBOSE") == NULL)
		freopen("/dev/null", "w", stderr) ? (void)dup2(fileno(stderr), 2) : (void)0;
	char *good = write_stream(&len, keys, 6, 1);
	ok(read_stream(good, len, &rows) == 0 && rows == 6, "a written stream reads back whole (%d rows)", rows);

	/* NULL, empty string and binary survive. */
	{
		FILE *fp = fmemopen(good, len, "rb");
		dms_reader r;
		dms_reader_open(&r, fp, "test");
		dms_reader_next(&r);
		ok(r.vals[1].kind == DM_NULL, "NULL stays NULL");
		dms_reader_next(&r);
		ok(r.vals[1].kind == DM_TEXT && r.vals[1].len == 0, "empty string stays an empty string");
		ok(r.vals[2].kind == DM_BIN && r.vals[2].len == 7 && r.vals[2].ptr[0] == 0 &&
		    (unsigned char)r.vals[2].ptr[3] == 255, "bytea is binary-safe");
		while (dms_reader_next(&r) > 0)
			;
		ok(r.trailer.watermark && strcmp(r.trailer.watermark, "2024-01-01 00:00:00") == 0,
		    "the watermark travels in the trailer");
		dms_reader_free(&r);
		fclose(fp);
	}

	int truncation_missed = 0;
	for (size_t cut = 0; cut < len; cut++)
		if (read_stream(good, cut, &rows) == 0)
			truncation_missed++;
	ok(truncation_missed == 0, "every truncation of a %zu-byte stream is an error (%d missed)", len, truncation_missed);

	int flips_missed = 0;
	for (size_t at = 0; at < len; at++) {
		for (int bit = 0; bit < 8; bit++) {
			char *bad = malloc(len);
			memcpy(bad, good, len);
			bad[at] ^= (char)(1 << bit);
			if (read_stream(bad, len, &rows) == 0) {
				flips_missed++;
				if (getenv("DM_TEST_VERBOSE"))
					fprintf(stdout, "# flip at %zu bit %d (byte %02x) passed\n", at, bit, (unsigned char)good[at]);
			}
			free(bad);
		}
	}
	ok(flips_missed == 0, "every single-bit flip is caught (%d missed)", flips_missed);

	size_t l2;
	char *notrailer = write_stream(&l2, keys, 6, 0);
	ok(read_stream(notrailer, l2, &rows) < 0 && rows == 6, "a stream without trailer is an error after its rows");
	free(notrailer);

	static const char *const unordered[] = { "1", "10", "9" };
	char *s = write_stream(&l2, unordered, 3, 1);
	ok(read_stream(s, l2, &rows) < 0 && rows == 2, "out-of-order integer keys are an error");
	free(s);
	static const char *const dupes[] = { "1", "2", "2" };
	s = write_stream(&l2, dupes, 3, 1);
	ok(read_stream(s, l2, &rows) < 0 && rows == 2, "duplicate keys are an error");
	free(s);

	char *glued = malloc(2 * len);
	memcpy(glued, good, len);
	memcpy(glued + len, good, len);
	ok(read_stream(glued, 2 * len, &rows) < 0, "data after the trailer is an error");
	free(glued);

	/* The version byte sits right after the "version" key in the header. */
	char *v2 = malloc(len);
	memcpy(v2, good, len);
	char *ver = memmem(v2, len, "version", 7);
	ver[7] = 2;
	ok(read_stream(v2, len, &rows) == 3, "an unknown format version is refused");
	free(v2);
	ok(read_stream("hello world\n", 12, &rows) == 3, "text that is not a stream is refused");
	ok(read_stream("", 0, &rows) == 3, "an empty input is refused");
	free(good);

	/* Sync points: a reader can trust rows before the stream ends, and never trusts damaged ones. */
	{
		static char keybuf[2500][8];
		const char *many[2500];
		for (int i = 0; i < 2500; i++) {
			snprintf(keybuf[i], sizeof keybuf[i], "%d", i + 1);
			many[i] = keybuf[i];
		}
		size_t l3;
		char *big = write_stream(&l3, many, 2500, 1);
		ok(read_stream(big, l3, &rows) == 0 && rows == 2500, "a stream with sync points reads back whole");
		char *row1500 = memmem(big, l3, "\xa4" "1500", 5);
		ok(row1500 != NULL, "row 1500 found in the bytes");
		row1500[2] = '9';	/* "1500" becomes "1900": whichever check fires first, nothing past 1000 is vouched for */
		FILE *fp = fmemopen(big, l3, "rb");
		dms_reader r;
		dms_reader_open(&r, fp, "test");
		r.stop_at_sync = 1;
		int got, syncs = 0, n = 0;
		uint64_t verified_at_error = 0;
		while ((got = dms_reader_next(&r)) > 0) {
			if (got == 2)
				syncs++;
			else
				n++;
		}
		verified_at_error = r.verified;
		ok(got < 0 && syncs == 1 && verified_at_error == 1000,
		    "damage in row 1500 is caught at the latest by the next sync point; only the first 1000 rows were ever vouched for (%d syncs, %llu verified)",
		    syncs, (unsigned long long)verified_at_error);
		dms_reader_free(&r);
		fclose(fp);
		free(big);
	}
	return done();
}
