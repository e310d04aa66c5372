/*
 * dm-diff - merge a source row stream with a destination row or hash stream,
 * both ordered by key, into a change stream. Bounded memory: one row of each
 * side is held at a time, and at most DMS_HOLD_MAX bytes of changes behind a
 * sync point that waits (below).
 *
 * Safety rules:
 *
 * A destination key is called deleted only once the source has shown a larger
 * key or a verified trailer. A truncated source can therefore never cause a
 * delete beyond what it covered, and a change stream gets its own trailer only
 * when both inputs were verified to the end.
 *
 * The change stream's sync points tell dm-load that it may commit every row
 * before them (dm-stream(5)), and dm-diff computes their checksums over what
 * it writes: a value damaged in the source would be vouched for anew. So each
 * sync point is held back, with everything after it, until the source has
 * verified a sync point of its own after every source row the changes so far
 * were made from (dms_writer_hold, DMM_VERIFIED); a damaged source row fails
 * that check first, and the sync point never goes out.
 *
 * The destination stream needs no such wait. Its rows only choose what
 * happens to a source row: insert and update both carry the source's whole
 * row (and dm-load applies both as the same upsert), so a damaged destination
 * row can at worst turn an update into an insert or the reverse, or skip an
 * update (the row keeps the value it had; it would take damage that happens
 * to match the source's row exactly), never commit a value that is not the
 * source's. Deletes carry destination keys, but dm-load only parks them and
 * applies them with the trailer, which needs the destination verified to its
 * end. A damaged destination key or order fails the merge before the trailer.
 */
#define _POSIX_C_SOURCE 200809L
#include "merge.h"
#include "stream.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#define SAMPLE_KEYS 5

static const char usage_text[] =
    "usage: dm-diff [--delete] [--check] [--entity NAME] [-q] [-v] SOURCE DEST\n"
    "\n"
    "Compares two key-ordered dm streams and writes a change stream of inserts,\n"
    "updates and (with --delete) deletes on standard output. SOURCE is a rows\n"
    "stream; DEST a rows or hashes stream. A file name, or - for standard input.\n"
    "\n"
    "  --delete       emit deletes for keys only in DEST\n"
    "  --check        write no stream; report differences, exit 4 if any\n"
    "  --entity NAME  name used in messages (default: SOURCE's entity)\n"
    "  -q, -v         quieter, more verbose\n"
    "  --help, --version\n";

static void
usage(void)
{
	fputs("usage: dm-diff [--delete] [--check] [-q] [-v] SOURCE DEST\n", stderr);
	exit(DM_EXIT_USAGE);
}

static FILE *
open_input(const char *path, const char **name)
{
	if (strcmp(path, "-") == 0) {
		*name = "standard input";
		return stdin;
	}
	*name = path;
	FILE *fp = fopen(path, "rb");
	if (fp == NULL)
		dm_err("cannot open %s: %s", path, strerror(errno));
	return fp;
}

/* Equal strings, or both NULL. */
static int
same_str(const char *a, const char *b)
{
	return a == NULL || b == NULL ? a == b : strcmp(a, b) == 0;
}

/* Both sides must describe the same row, or their hashes mean different things. */
static int
same_shape(const dms_header *a, const dms_header *b)
{
	if (a->ncols != b->ncols) {
		dm_err("column mismatch: source has %zu columns, destination %zu (extract the destination with --columns)",
		    a->ncols, b->ncols);
		return 0;
	}
	for (size_t i = 0; i < a->ncols; i++) {
		if (strcmp(a->cols[i].name, b->cols[i].name) != 0) {
			dm_err("column mismatch: column %zu is \"%s\" in the source, \"%s\" in the destination",
			    i + 1, a->cols[i].name, b->cols[i].name);
			return 0;
		}
		if (strcmp(a->cols[i].type, b->cols[i].type) != 0)
			dm_debug("column \"%s\" is %s in the source, %s in the destination: compared as text",
			    a->cols[i].name, a->cols[i].type, b->cols[i].type);
	}
	if (a->nkey != b->nkey || memcmp(a->key, b->key, a->nkey * sizeof *a->key) != 0) {
		dm_err("column mismatch: the two streams have different keys");
		return 0;
	}
	/* a key outside one side's range is not missing from it: it was not read */
	if (a->ranged != b->ranged || (a->ranged && (!same_str(a->key_from, b->key_from) ||
	    !same_str(a->key_before, b->key_before)))) {
		dm_err("key range mismatch: the source stream holds %s, the destination %s: read both with the same"
		    " --key-from and --key-before", a->ranged ? "a range of the keys" : "every key",
		    b->ranged ? "a range of the keys" : "every key");
		return 0;
	}
	for (size_t i = 0; i < a->nkey; i++)
		if (a->keyclass[i] != b->keyclass[i]) {
			dm_err("column mismatch: key column \"%s\" sorts as %s in one stream and %s in the other",
			    a->cols[a->key[i]].name, a->cols[a->key[i]].type, b->cols[b->key[i]].type);
			return 0;
		}
	return 1;
}

typedef struct sample {
	dm_buf text;
	unsigned n;
} sample;

static void
sample_add(sample *s, const dm_value *keys, size_t nkey)
{
	if (s->n++ >= SAMPLE_KEYS)
		return;
	if (s->text.len)
		dm_buf_putc(&s->text, ' ');
	dms_key_text(&s->text, keys, nkey);
}

struct diff_ctx {
	int do_delete, check;
	dms_writer *w;
	sample *samples;
	uint64_t count[DMM_VERIFIED];	/* per key event; DMM_VERIFIED is not one */
};

static int
on_key(void *arg, dmm_event ev, const dms_reader *src, const dms_reader *dst)
{
	struct diff_ctx *ctx = arg;
	size_t nkey = src->hdr.nkey;

	if (ev == DMM_VERIFIED) {
		/* Every change so far comes from verified source rows: its sync points may go. */
		if (!ctx->check) {
			dms_writer_vouch(ctx->w);
			if (src->done)
				dms_writer_hold(ctx->w, 0);	/* the rest are deletes: see the top */
		}
		return 0;
	}
	ctx->count[ev]++;
	switch (ev) {
	case DMM_ONLY_SOURCE:
		if (ctx->check)
			sample_add(&ctx->samples[0], src->keys, nkey);
		else
			dms_writer_copy(ctx->w, DMS_OP_INSERT, src);
		break;
	case DMM_CHANGED:
		if (ctx->check)
			sample_add(&ctx->samples[1], src->keys, nkey);
		else
			dms_writer_copy(ctx->w, DMS_OP_UPDATE, src);
		break;
	case DMM_ONLY_DEST:
		if (ctx->check)
			sample_add(&ctx->samples[2], dst->keys, nkey);
		else if (ctx->do_delete)
			dms_writer_row(ctx->w, DMS_OP_DELETE, dst->keys, nkey);
		break;
	default:
		break;
	}
	if (!ctx->check && dms_writer_failed(ctx->w)) {
		dm_err("cannot write stream: %s", strerror(ctx->w->err ? ctx->w->err : errno ? errno : EIO));
		return -1;
	}
	return 0;
}

int
main(int argc, char **argv)
{
	int do_delete = 0, check = 0;
	const char *entity = NULL;
	int rc = DM_EXIT_FAIL;
	FILE *fa = NULL, *fb = NULL;
	dms_reader a, b;
	int a_open = 0, b_open = 0, w_open = 0;
	dms_writer w;
	dms_header out;
	sample samples[3] = { { { 0 }, 0 }, { { 0 }, 0 }, { { 0 }, 0 } };

	dm_prog = "dm-diff";
	dms_header_init(&out);
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	enum { O_DELETE = 256, O_CHECK, O_ENTITY };
	static const struct option opts[] = {
		{ "delete", no_argument, NULL, O_DELETE },
		{ "check", no_argument, NULL, O_CHECK },
		{ "entity", required_argument, NULL, O_ENTITY },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DELETE: do_delete = 1; break;
		case O_CHECK: check = 1; break;
		case O_ENTITY: entity = optarg; break;
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	if (argc - optind != 2)
		usage();
	if (strcmp(argv[optind], "-") == 0 && strcmp(argv[optind + 1], "-") == 0) {
		dm_err("only one of SOURCE and DEST can be standard input");
		return DM_EXIT_USAGE;
	}
	signal(SIGPIPE, SIG_IGN);
	dm_subject = entity;

	const char *na, *nb;
	if ((fa = open_input(argv[optind], &na)) == NULL || (fb = open_input(argv[optind + 1], &nb)) == NULL)
		goto out;
	rc = DM_EXIT_STREAM;
	a_open = 1;	/* a failed open still holds memory to free */
	if (dms_reader_open(&a, fa, na) != 0)
		goto out;
	if (dm_subject == NULL)
		dm_subject = a.hdr.entity;
	b_open = 1;
	if (dms_reader_open(&b, fb, nb) != 0)
		goto out;
	if (a.hdr.kind != DMS_ROWS && !(check && a.hdr.kind == DMS_HASHES)) {
		dm_err("%s: SOURCE must be a rows stream (from dm-extract without --hashes), not %s",
		    na, dms_kind_name(a.hdr.kind));
		goto out;
	}
	if (b.hdr.kind == DMS_CHANGES) {
		dm_err("%s: DEST must be a rows or hashes stream, not changes", nb);
		goto out;
	}
	rc = DM_EXIT_FAIL;
	if (!same_shape(&a.hdr, &b.hdr))
		goto out;
	rc = DM_EXIT_STREAM;

	if (!check) {
		/* The writer hands stdout large blocks itself. */
		dms_header_copy(&out, &a.hdr);
		out.kind = DMS_CHANGES;
		dms_writer_open(&w, stdout, &out);
		dms_writer_hold(&w, 1);
		w_open = 1;
	}

	struct diff_ctx ctx = { do_delete, check, &w, samples, { 0 } };
	int m = dmm_merge(&a, &b, on_key, &ctx);
	uint64_t n_ins = ctx.count[DMM_ONLY_SOURCE], n_upd = ctx.count[DMM_CHANGED];
	uint64_t n_del = do_delete || check ? ctx.count[DMM_ONLY_DEST] : 0;
	uint64_t n_extra = do_delete || check ? 0 : ctx.count[DMM_ONLY_DEST];
	uint64_t n_same = ctx.count[DMM_SAME];
	if (m != 0) {
		rc = m;	/* no trailer: whatever was written cannot be trusted downstream */
		goto out;
	}
	if (!check) {
		if (dms_writer_finish(&w, a.trailer.watermark) < 0 || dm_close_output(stdout, "stream") < 0) {
			rc = DM_EXIT_FAIL;
			goto out;
		}
	}
	char extra[48] = "";
	if (n_extra)
		snprintf(extra, sizeof extra, " extra=%llu", (unsigned long long)n_extra);
	dm_info("insert=%llu update=%llu delete=%llu unchanged=%llu%s",
	    (unsigned long long)n_ins, (unsigned long long)n_upd, (unsigned long long)n_del,
	    (unsigned long long)n_same, extra);
	if (check) {
		static const char *const what[] = { "only in source", "different", "only in destination" };
		for (int i = 0; i < 3; i++)
			if (samples[i].n)
				dm_err("%u %s, e.g. %s", samples[i].n, what[i], dm_buf_cstr(&samples[i].text));
		rc = n_ins || n_upd || n_del ? DM_EXIT_DIFF : DM_EXIT_OK;
		goto out;
	}
	rc = DM_EXIT_OK;
out:
	if (w_open)
		dms_writer_free(&w);
	if (a_open)
		dms_reader_free(&a);
	if (b_open)
		dms_reader_free(&b);
	if (fa && fa != stdin)
		fclose(fa);
	if (fb && fb != stdin)
		fclose(fb);
	dms_header_free(&out);
	for (int i = 0; i < 3; i++)
		dm_buf_free(&samples[i].text);
	return rc;
}
