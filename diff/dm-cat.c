/*
 * dm-cat - print a dm stream as JSON lines, for people reading a teed stream.
 * The stream is checked as it is read: a damaged stream prints what could be
 * read, then fails.
 */
#define _POSIX_C_SOURCE 200809L
#include "feed.h"
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: dm-cat [-q] [-v] [FILE]\n"
    "\n"
    "Prints a dm stream or change feed (dm-stream(5)) as JSON lines: the header,\n"
    "one line per row (or message), the trailer. FILE defaults to standard input.\n";

static void
usage(void)
{
	fputs("usage: dm-cat [-q] [-v] [FILE]\n", stderr);
	exit(DM_EXIT_USAGE);
}

static void
json_string(FILE *out, const char *s, size_t n)
{
	static const char hex[] = "0123456789abcdef";

	putc('"', out);
	for (size_t i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];
		switch (c) {
		case '"': fputs("\\\"", out); break;
		case '\\': fputs("\\\\", out); break;
		case '\n': fputs("\\n", out); break;
		case '\r': fputs("\\r", out); break;
		case '\t': fputs("\\t", out); break;
		default:
			if (c < 0x20 || c == 0x7f)
				fprintf(out, "\\u00%c%c", hex[c >> 4], hex[c & 15]);
			else
				putc(c, out);
		}
	}
	putc('"', out);
}

static void
json_cstr_or_null(FILE *out, const char *s)
{
	if (s == NULL)
		fputs("null", out);
	else
		json_string(out, s, strlen(s));
}

static void
json_value(FILE *out, const dm_value *v)
{
	static const char hex[] = "0123456789abcdef";

	switch (v->kind) {
	case DM_NULL:
		fputs("null", out);
		break;
	case DM_TEXT:
		json_string(out, v->ptr, v->len);
		break;
	default:
		fputs("{\"bytea\":\"", out);
		for (uint32_t i = 0; i < v->len; i++) {
			unsigned char c = (unsigned char)v->ptr[i];
			putc(hex[c >> 4], out);
			putc(hex[c & 15], out);
		}
		fputs("\"}", out);
	}
}

static void
json_values(FILE *out, const dm_value *vals, size_t n)
{
	putc('[', out);
	for (size_t i = 0; i < n; i++) {
		if (i)
			putc(',', out);
		json_value(out, &vals[i]);
	}
	putc(']', out);
}

static void
print_header(FILE *out, const dms_header *h)
{
	fprintf(out, "{\"dm\":\"stream\",\"version\":%d,\"kind\":\"%s\",\"entity\":",
	    h->version, dms_kind_name(h->kind));
	json_cstr_or_null(out, h->entity);
	fputs(",\"table\":", out);
	json_cstr_or_null(out, h->table);
	fputs(",\"columns\":[", out);
	for (size_t i = 0; i < h->ncols; i++) {
		fputs(i ? ",{\"name\":" : "{\"name\":", out);
		json_cstr_or_null(out, h->cols[i].name);
		fputs(",\"type\":", out);
		json_cstr_or_null(out, h->cols[i].type);
		putc('}', out);
	}
	fputs("],\"key\":[", out);
	for (size_t i = 0; i < h->nkey; i++)
		fprintf(out, "%s%zu", i ? "," : "", h->key[i]);
	fputs("],\"since\":", out);
	json_cstr_or_null(out, h->since);
	fputs(",\"change_column\":", out);
	json_cstr_or_null(out, h->change_column);
	if (h->ranged) {
		fputs(",\"key_range\":[", out);
		json_cstr_or_null(out, h->key_from);
		putc(',', out);
		json_cstr_or_null(out, h->key_before);
		putc(']', out);
	}
	fputs("}\n", out);
}

/*
 * A change feed: one line per message, sync points only with -v. Returns
 * an exit code; what was read before damage is printed.
 */
static int
print_feed(dmf_reader *f)
{
	static const char *const ops[] = { "insert", "update", "delete" };
	int got;

	fputs("{\"dm\":\"feed\",\"version\":1,\"slot\":", stdout);
	json_cstr_or_null(stdout, f->slot);
	fputs(",\"publication\":", stdout);
	json_cstr_or_null(stdout, f->publication);
	fputs(",\"start_lsn\":", stdout);
	json_cstr_or_null(stdout, f->start_lsn);
	fputs("}\n", stdout);
	while ((got = dmf_reader_next(f)) > 0) {
		const msgpack_object *a = f->obj->via.array.ptr;
		if (got == 2) {
			if (dm_verbosity >= 2)
				printf("{\"sync\":%llu}\n", (unsigned long long)f->messages);
		} else if (f->type == DMF_RELATION) {
			printf("{\"relation\":%u,\"table\":", f->relid);
			json_string(stdout, a[2].via.str.ptr, a[2].via.str.size);
			fputs(",\"columns\":[", stdout);
			for (uint32_t i = 0; i < a[3].via.array.size; i++) {
				const msgpack_object *c = a[3].via.array.ptr[i].via.array.ptr;
				fputs(i ? ",{\"name\":" : "{\"name\":", stdout);
				json_string(stdout, c[0].via.str.ptr, c[0].via.str.size);
				fputs(",\"type\":", stdout);
				json_string(stdout, c[1].via.str.ptr, c[1].via.str.size);
				putc('}', stdout);
			}
			fputs("],\"key\":[", stdout);
			for (uint32_t i = 0; i < a[4].via.array.size; i++)
				printf("%s%llu", i ? "," : "", (unsigned long long)a[4].via.array.ptr[i].via.u64);
			fputs("]}\n", stdout);
		} else if (f->type == DMF_COMMIT) {
			fputs("{\"commit\":", stdout);
			json_string(stdout, a[1].via.str.ptr, a[1].via.str.size);
			fputs(",\"end\":", stdout);
			json_string(stdout, a[2].via.str.ptr, a[2].via.str.size);
			fputs(",\"time\":", stdout);
			json_string(stdout, a[3].via.str.ptr, a[3].via.str.size);
			printf(",\"xid\":%llu}\n", (unsigned long long)a[4].via.u64);
			fflush(stdout);	/* a followed feed is read live: each transaction as it comes */
		} else {
			printf("{\"op\":\"%s\",\"relation\":%u,\"key\":", ops[f->type], f->relid);
			json_values(stdout, f->keys, f->nkey);
			fputs("}\n", stdout);
		}
		if (ferror(stdout))
			return DM_EXIT_FAIL;
	}
	if (got < 0)
		return DM_EXIT_STREAM;
	printf("{\"end\":true,\"messages\":%llu,\"last_lsn\":", (unsigned long long)f->messages);
	json_cstr_or_null(stdout, f->last_lsn);
	fputs("}\n", stdout);
	return DM_EXIT_OK;
}

int
main(int argc, char **argv)
{
	static const char *const ops[] = { "insert", "update", "delete" };
	const char *path = NULL;
	FILE *in = stdin;
	dms_reader r;
	dmf_reader f;
	int opened = 0, rc = DM_EXIT_STREAM;

	dm_prog = "dm-cat";
	for (int i = 1; i < argc; i++) {
		const char *a = argv[i];
		dm_std_option(a, usage_text);
		if (strcmp(a, "-q") == 0)
			dm_verbosity = 0;
		else if (strcmp(a, "-v") == 0)
			dm_verbosity = 2;
		else if (strcmp(a, "--") == 0 && i + 2 == argc)
			path = argv[++i];
		else if (a[0] == '-' && a[1] != '\0')
			usage();
		else if (path == NULL)
			path = a;
		else
			usage();
	}
	/* Like cat(1): `dm-cat stream | head` ends quietly by SIGPIPE. */
	if (path != NULL && strcmp(path, "-") != 0) {
		in = fopen(path, "rb");
		if (in == NULL) {
			dm_err("cannot open %s: %s", path, strerror(errno));
			return DM_EXIT_FAIL;
		}
	} else {
		path = "standard input";
	}
	opened = 1;	/* a failed open still holds memory to free */
	memset(&r, 0, sizeof r);
	/* A feed or a row stream: the header says, and the row reader gets the bytes already read. */
	int kind = dmf_reader_open(&f, in, path);
	if (kind == 0) {
		rc = print_feed(&f);
		goto out;
	}
	if (kind < 0)
		goto out;
	size_t taken;
	const char *pre = dmf_reader_taken(&f, &taken);
	if (dms_reader_open_pre(&r, in, path, pre, taken) != 0)
		goto out;
	print_header(stdout, &r.hdr);
	int got;
	while ((got = dms_reader_next(&r)) > 0) {
		if (r.hdr.kind == DMS_CHANGES) {
			fprintf(stdout, "{\"op\":\"%s\",\"%s\":", ops[r.op], r.op == DMS_OP_DELETE ? "key" : "row");
			json_values(stdout, r.vals, r.nvals);
			fputs("}\n", stdout);
		} else if (r.hdr.kind == DMS_HASHES) {
			putc('[', stdout);
			for (size_t i = 0; i < r.hdr.nkey; i++) {
				json_value(stdout, &r.vals[i]);
				putc(',', stdout);
			}
			fputs("{\"hash\":\"", stdout);
			for (size_t i = 0; i < DMS_HASH_LEN; i++)
				fprintf(stdout, "%02x", r.hash[i]);
			fputs("\"}]\n", stdout);
		} else {
			json_values(stdout, r.vals, r.nvals);
			putc('\n', stdout);
		}
		if (ferror(stdout)) {
			got = -2;
			break;
		}
	}
	if (got == 0) {
		fprintf(stdout, "{\"end\":true,\"rows\":%llu,\"watermark\":", (unsigned long long)r.trailer.rows);
		json_cstr_or_null(stdout, r.trailer.watermark);
		fputs("}\n", stdout);
		rc = DM_EXIT_OK;
	}
	else if (got == -2)
		rc = DM_EXIT_FAIL;	/* our output failed, not the stream */
out:
	if (dm_close_output(stdout, "standard output") < 0 && (rc == DM_EXIT_OK || rc == DM_EXIT_STREAM))
		rc = DM_EXIT_FAIL;
	if (opened) {
		dms_reader_free(&r);
		dmf_reader_free(&f);
	}
	if (in != stdin)
		fclose(in);
	return rc;
}
