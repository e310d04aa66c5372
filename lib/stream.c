/* stream.c - writer and reader of dm-stream(5). */
#define _POSIX_C_SOURCE 200809L
#include "stream.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#define DMS_READ_CHUNK (256 * 1024)
#define DMS_MAX_MESSAGE ((size_t)1 << 30)

void
dms_header_init(dms_header *h)
{
	memset(h, 0, sizeof *h);
	h->version = DMS_VERSION;
}

void
dms_header_free(dms_header *h)
{
	if (h == NULL)
		return;
	free(h->entity);
	free(h->table);
	for (size_t i = 0; i < h->ncols; i++) {
		free(h->cols[i].name);
		free(h->cols[i].type);
	}
	free(h->cols);
	free(h->key);
	free(h->keyclass);
	free(h->since);
	free(h->change_column);
	free(h->key_from);
	free(h->key_before);
	dms_header_init(h);
}

static char *
dms_dup_or_null(const char *s)
{
	return s ? dm_xstrdup(s) : NULL;
}

void
dms_header_copy(dms_header *dst, const dms_header *src)
{
	dms_header_init(dst);
	dst->version = src->version;
	dst->kind = src->kind;
	dst->entity = dms_dup_or_null(src->entity);
	dst->table = dms_dup_or_null(src->table);
	dst->ncols = src->ncols;
	dst->cols = dm_xcalloc(src->ncols, sizeof *dst->cols);
	for (size_t i = 0; i < src->ncols; i++) {
		dst->cols[i].name = dm_xstrdup(src->cols[i].name);
		dst->cols[i].type = dm_xstrdup(src->cols[i].type);
	}
	dst->nkey = src->nkey;
	dst->key = dm_xcalloc(src->nkey, sizeof *dst->key);
	memcpy(dst->key, src->key, src->nkey * sizeof *dst->key);
	dst->since = dms_dup_or_null(src->since);
	dst->change_column = dms_dup_or_null(src->change_column);
	dst->ranged = src->ranged;
	dst->key_from = dms_dup_or_null(src->key_from);
	dst->key_before = dms_dup_or_null(src->key_before);
	dms_header_classify(dst);
}

dms_keyclass
dms_type_keyclass(const char *type)
{
	if (strcmp(type, "smallint") == 0 || strcmp(type, "integer") == 0 ||
	    strcmp(type, "bigint") == 0)
		return DMS_KEY_INT;
	return DMS_KEY_BYTES;
}

void
dms_header_classify(dms_header *h)
{
	free(h->keyclass);
	h->keyclass = dm_xcalloc(h->nkey, sizeof *h->keyclass);
	for (size_t i = 0; i < h->nkey; i++)
		h->keyclass[i] = dms_type_keyclass(h->cols[h->key[i]].type);
}

const char *
dms_kind_name(dms_kind k)
{
	switch (k) {
	case DMS_ROWS: return "rows";
	case DMS_HASHES: return "hashes";
	case DMS_CHANGES: return "changes";
	}
	return "?";
}

static int
dms_bytes_cmp(const dm_value *a, const dm_value *b)
{
	size_t n = a->len < b->len ? a->len : b->len;
	int c = n ? memcmp(a->ptr, b->ptr, n) : 0;

	if (c != 0)
		return c < 0 ? -1 : 1;
	return a->len < b->len ? -1 : a->len > b->len;
}

/* Integer text as PostgreSQL prints it: optional '-', digits, no leading zeros. */
static int
dms_int_cmp(const dm_value *a, const dm_value *b)
{
	int na = a->len > 0 && a->ptr[0] == '-';
	int nb = b->len > 0 && b->ptr[0] == '-';

	if (na != nb)
		return na ? -1 : 1;
	dm_value ma = { a->ptr + na, a->len - (uint32_t)na, DM_TEXT };
	dm_value mb = { b->ptr + nb, b->len - (uint32_t)nb, DM_TEXT };
	int c;
	if (ma.len != mb.len)
		c = ma.len < mb.len ? -1 : 1;
	else
		c = dms_bytes_cmp(&ma, &mb);
	return na ? -c : c;
}

int
dms_key_cmp(const dms_keyclass *cls, size_t nkey, const dm_value *a, const dm_value *b)
{
	for (size_t i = 0; i < nkey; i++) {
		/* A primary key holds no NULL; order them first all the same so the merge stays total. */
		if (a[i].kind == DM_NULL || b[i].kind == DM_NULL) {
			if (a[i].kind != b[i].kind)
				return a[i].kind == DM_NULL ? -1 : 1;
			continue;
		}
		int c = cls[i] == DMS_KEY_INT ? dms_int_cmp(&a[i], &b[i]) : dms_bytes_cmp(&a[i], &b[i]);
		if (c != 0)
			return c;
	}
	return 0;
}

/* Bytes the canonical encoding of vals takes. */
static size_t
dms_canon_len(const dm_value *vals, size_t n)
{
	size_t len = 0;

	for (size_t i = 0; i < n; i++)
		len += vals[i].kind == DM_NULL ? 1 : 5 + (size_t)vals[i].len;
	return len;
}

/*
 * memcpy for the short values most columns hold: two overlapping fixed-size
 * copies instead of a call (a row is a dozen of them, and this is per row).
 */
static inline void
dms_copy(char *d, const char *s, size_t n)
{
	uint64_t a, b;
	uint32_t x, y;

	if (n > 16) {
		if (n > 32) {
			memcpy(d, s, n);
			return;
		}
		memcpy(&a, s, 8);
		memcpy(&b, s + 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + 8, &b, 8);
		memcpy(&a, s + n - 16, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d + n - 16, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 8) {
		memcpy(&a, s, 8);
		memcpy(&b, s + n - 8, 8);
		memcpy(d, &a, 8);
		memcpy(d + n - 8, &b, 8);
	} else if (n >= 4) {
		memcpy(&x, s, 4);
		memcpy(&y, s + n - 4, 4);
		memcpy(d, &x, 4);
		memcpy(d + n - 4, &y, 4);
	} else if (n > 0) {
		d[0] = s[0];
		d[n / 2] = s[n / 2];
		d[n - 1] = s[n - 1];
	}
}

/* Writes the canonical encoding of vals at q, which has room for it; returns its end. */
static char *
dms_canon_put(char *q, const dm_value *vals, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		const dm_value *v = &vals[i];
		if (v->kind == DM_NULL) {
			*q++ = 0;
			continue;
		}
		q[0] = (char)v->kind;
		q[1] = (char)(v->len >> 24);
		q[2] = (char)(v->len >> 16);
		q[3] = (char)(v->len >> 8);
		q[4] = (char)v->len;
		dms_copy(q + 5, v->ptr, v->len);
		q += 5 + (size_t)v->len;
	}
	return q;
}

void
dms_canon_append(dm_buf *out, const dm_value *vals, size_t n)
{
	size_t len = dms_canon_len(vals, n);

	dm_buf_reserve(out, len);
	dms_canon_put(out->data + out->len, vals, n);
	out->len += len;
}

static void
dms_hash128(const char *p, size_t len, unsigned char hash[DMS_HASH_LEN])
{
	XXH128_canonical_t c;

	XXH128_canonicalFromHash(&c, XXH3_128bits(p, len));
	memcpy(hash, c.digest, DMS_HASH_LEN);
}

void
dms_row_hash(const dm_value *vals, size_t n, dm_buf *scratch, unsigned char hash[DMS_HASH_LEN])
{
	scratch->len = 0;
	dms_canon_append(scratch, vals, n);
	dms_hash128(scratch->data, scratch->len, hash);
}

void
dms_key_text(dm_buf *out, const dm_value *keys, size_t nkey)
{
	static const char hex[] = "0123456789abcdef";

	dm_buf_putc(out, '(');
	for (size_t i = 0; i < nkey; i++) {
		if (i)
			dm_buf_putc(out, ',');
		if (keys[i].kind == DM_NULL) {
			dm_buf_puts(out, "NULL");
			continue;
		}
		if (keys[i].kind == DM_BIN)
			dm_buf_puts(out, "\\x");
		for (uint32_t j = 0; j < keys[i].len; j++) {
			unsigned char ch = (unsigned char)keys[i].ptr[j];
			if (keys[i].kind == DM_BIN) {
				dm_buf_putc(out, hex[ch >> 4]);
				dm_buf_putc(out, hex[ch & 15]);
			} else if (ch < 0x20 || ch == 0x7f) {
				dm_buf_printf(out, "\\x%02x", ch);
			} else {
				dm_buf_putc(out, (char)ch);
			}
		}
	}
	dm_buf_putc(out, ')');
}

/*
 * Feeds the header's meaning into a checksum, so a damaged header (a column
 * renamed by a flipped bit) is caught like a damaged row.
 */
static void
dms_canon_cstr(dm_buf *out, const char *s)
{
	dm_value v = { s, s ? (uint32_t)strlen(s) : 0, (uint8_t)(s ? DM_TEXT : DM_NULL) };

	dms_canon_append(out, &v, 1);
}

static void
dms_digest_header(XXH3_state_t *st, const dms_header *h, dm_buf *scratch)
{
	char num[32];

	scratch->len = 0;
	dms_canon_cstr(scratch, dms_kind_name(h->kind));
	dms_canon_cstr(scratch, h->entity);
	dms_canon_cstr(scratch, h->table);
	for (size_t i = 0; i < h->ncols; i++) {
		dms_canon_cstr(scratch, h->cols[i].name);
		dms_canon_cstr(scratch, h->cols[i].type);
	}
	for (size_t i = 0; i < h->nkey; i++) {
		snprintf(num, sizeof num, "%zu", h->key[i]);
		dms_canon_cstr(scratch, num);
	}
	dms_canon_cstr(scratch, h->since);
	dms_canon_cstr(scratch, h->change_column);
	if (h->ranged) {
		dms_canon_cstr(scratch, "key_range");
		dms_canon_cstr(scratch, h->key_from);
		dms_canon_cstr(scratch, h->key_before);
	}
	XXH3_64bits_update(st, scratch->data, scratch->len);
	scratch->len = 0;
}

/* The trailer's watermark is covered too, as the checksum's last input. */
static uint64_t
dms_digest_final(XXH3_state_t *st, const char *watermark, dm_buf *scratch)
{
	scratch->len = 0;
	dms_canon_cstr(scratch, watermark);
	XXH3_64bits_update(st, scratch->data, scratch->len);
	scratch->len = 0;
	return XXH3_64bits_digest(st);
}

/*
 * Canonical encodings wait in a batch and reach the checksum this many bytes
 * at a time: XXH3 then hashes them in place, rather than copying each row
 * into its own buffer first, and is called once per batch, not per row.
 */
#define DMS_CANON_BATCH ((size_t)16 << 10)

/* Feeds the batch to the checksum: before every digest, and when it is full. */
static void
dms_canon_flush(XXH3_state_t *st, dm_buf *batch)
{
	if (batch->len)
		XXH3_64bits_update(st, batch->data, batch->len);
	batch->len = 0;
}

/* --- writer --- */

static void
dms_pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

static void
dms_pack_cstr_or_nil(msgpack_packer *pk, const char *s)
{
	if (s == NULL)
		msgpack_pack_nil(pk);
	else
		dms_pack_cstr(pk, s);
}

/* Encoded bytes are handed to the FILE in blocks of about this size. */
#define DMS_WRITE_CHUNK ((size_t)1 << 20)
#define DMS_NONE SIZE_MAX

/* The packer appends to out, like the rows: one buffer keeps the stream's order. */
static int
dms_out_cb(void *data, const char *buf, size_t len)
{
	dm_buf_append(&((dms_writer *)data)->out, buf, len);
	return 0;
}

/*
 * Hands the bytes of out that may go (all, or those before the first held
 * sync point) to fp: with all set, whatever their amount; otherwise only a
 * large block, so that fp sees few big writes. A failed write is remembered
 * and its bytes dropped; dms_writer_finish reports it.
 */
static void
dms_out_flush(dms_writer *w, int all)
{
	size_t n = w->held == DMS_NONE ? w->out.len : w->held;

	if (n == 0 || (!all && n < DMS_WRITE_CHUNK))
		return;
	if (w->err == 0 && fwrite(w->out.data, 1, n, w->fp) != n)
		w->err = errno ? errno : EIO;
	memmove(w->out.data, w->out.data + n, w->out.len - n);
	w->out.len -= n;
	if (w->held != DMS_NONE) {
		w->held -= n;
		for (size_t i = 0; i < w->nsyncs; i++)
			w->syncs[2 * i] -= n;
	}
}

/*
 * Too much waits behind held sync points: drop them (a reader then commits
 * later, never wrongly) and let the rows go, so that memory stays bounded.
 */
static void
dms_drop_held_syncs(dms_writer *w)
{
	size_t to = w->syncs[0], from = to;

	for (size_t i = 0; i < w->nsyncs; i++) {
		size_t at = w->syncs[2 * i], len = w->syncs[2 * i + 1];
		memmove(w->out.data + to, w->out.data + from, at - from);
		to += at - from;
		from = at + len;
	}
	memmove(w->out.data + to, w->out.data + from, w->out.len - from);
	w->out.len = to + (w->out.len - from);
	w->held = DMS_NONE;
	w->nsyncs = 0;
}

/* After each row: a sync point after every DMS_SYNC_ROWS-th, then a block to fp if one is due. */
static void
dms_writer_row_done(dms_writer *w)
{
	w->rows++;
	if (w->rows % DMS_SYNC_ROWS == 0) {
		/* A reader can trust every row up to here before the stream ends (dm-stream(5)). */
		msgpack_packer *pk = &w->pk;
		XXH64_canonical_t c;
		size_t at = w->out.len;
		dms_canon_flush(w->checksum, &w->canon);
		XXH64_canonicalFromHash(&c, XXH3_64bits_digest(w->checksum));
		msgpack_pack_map(pk, 2);
		dms_pack_cstr(pk, "sync");
		msgpack_pack_uint64(pk, w->rows);
		dms_pack_cstr(pk, "checksum");
		msgpack_pack_bin(pk, sizeof c.digest);
		msgpack_pack_bin_body(pk, c.digest, sizeof c.digest);
		if (w->hold) {
			if (w->nsyncs == w->syncs_cap) {
				w->syncs_cap = w->syncs_cap ? 2 * w->syncs_cap : 16;
				w->syncs = dm_xrealloc(w->syncs, 2 * w->syncs_cap * sizeof *w->syncs);
			}
			w->syncs[2 * w->nsyncs] = at;
			w->syncs[2 * w->nsyncs + 1] = w->out.len - at;
			w->nsyncs++;
			if (w->held == DMS_NONE)
				w->held = at;
		}
	}
	if (w->held != DMS_NONE && w->out.len - w->held > w->hold_max)
		dms_drop_held_syncs(w);
	dms_out_flush(w, 0);
}

void
dms_writer_open(dms_writer *w, FILE *fp, const dms_header *h)
{
	memset(w, 0, sizeof *w);
	w->fp = fp;
	w->kind = h->kind;
	w->width = h->kind == DMS_HASHES ? h->nkey + 1 : h->ncols;
	w->held = DMS_NONE;
	w->hold_max = DMS_HOLD_MAX;
	w->checksum = XXH3_createState();
	if (w->checksum == NULL) {
		dm_err("out of memory");
		exit(DM_EXIT_FAIL);
	}
	XXH3_64bits_reset(w->checksum);
	msgpack_packer_init(&w->pk, w, dms_out_cb);

	msgpack_packer *pk = &w->pk;
	msgpack_pack_map(pk, h->ranged ? 10 : 9);
	dms_pack_cstr(pk, "dm");
	dms_pack_cstr(pk, "stream");
	dms_pack_cstr(pk, "version");
	msgpack_pack_int(pk, DMS_VERSION);
	dms_pack_cstr(pk, "kind");
	dms_pack_cstr(pk, dms_kind_name(h->kind));
	dms_pack_cstr(pk, "entity");
	dms_pack_cstr(pk, h->entity);
	dms_pack_cstr(pk, "table");
	dms_pack_cstr(pk, h->table);
	dms_pack_cstr(pk, "columns");
	msgpack_pack_array(pk, h->ncols);
	for (size_t i = 0; i < h->ncols; i++) {
		msgpack_pack_array(pk, 2);
		dms_pack_cstr(pk, h->cols[i].name);
		dms_pack_cstr(pk, h->cols[i].type);
	}
	dms_pack_cstr(pk, "key");
	msgpack_pack_array(pk, h->nkey);
	for (size_t i = 0; i < h->nkey; i++)
		msgpack_pack_uint64(pk, h->key[i]);
	dms_pack_cstr(pk, "since");
	dms_pack_cstr_or_nil(pk, h->since);
	dms_pack_cstr(pk, "change_column");
	dms_pack_cstr_or_nil(pk, h->change_column);
	if (h->ranged) {
		dms_pack_cstr(pk, "key_range");
		msgpack_pack_array(pk, 2);
		dms_pack_cstr_or_nil(pk, h->key_from);
		dms_pack_cstr_or_nil(pk, h->key_before);
	}
	dms_digest_header(w->checksum, h, &w->canon);
}

/* The shortest MessagePack array header for n elements, at q; returns its end. */
static unsigned char *
dms_put_array(unsigned char *q, size_t n)
{
	if (n < 16) {
		*q++ = (unsigned char)(0x90 | n);
	} else if (n < 65536) {
		*q++ = 0xdc;
		*q++ = (unsigned char)(n >> 8);
		*q++ = (unsigned char)n;
	} else {
		*q++ = 0xdd;
		*q++ = (unsigned char)(n >> 24);
		*q++ = (unsigned char)(n >> 16);
		*q++ = (unsigned char)(n >> 8);
		*q++ = (unsigned char)n;
	}
	return q;
}

void
dms_writer_row(dms_writer *w, int op, const dm_value *vals, size_t n)
{
	/* Room for the array header, the op, and each value with the longest header. */
	size_t clen = (op != DMS_OP_NONE) + dms_canon_len(vals, n);
	dm_buf_reserve(&w->out, 6 + clen);
	if (w->canon.len >= DMS_CANON_BATCH)
		dms_canon_flush(w->checksum, &w->canon);
	dm_buf_reserve(&w->canon, clen);
	/* One pass writes both: the MessagePack message at q, the canonical encoding at c. */
	unsigned char *q = (unsigned char *)w->out.data + w->out.len;
	char *c = w->canon.data + w->canon.len;
	if (op != DMS_OP_NONE) {
		q = dms_put_array(q, n + 1);
		*q++ = (unsigned char)op;
		*c++ = (char)op;
	} else {
		q = dms_put_array(q, n);
	}
	for (size_t i = 0; i < n; i++) {
		const dm_value *v = &vals[i];
		uint32_t len = v->len;
		if (v->kind == DM_NULL) {
			*q++ = 0xc0;
			*c++ = 0;
			continue;
		}
		if (v->kind == DM_TEXT && len < 32) {
			*q++ = (unsigned char)(0xa0 | len);
		} else if (len < 256) {
			*q++ = v->kind == DM_TEXT ? 0xd9 : 0xc4;
			*q++ = (unsigned char)len;
		} else if (len < 65536) {
			*q++ = v->kind == DM_TEXT ? 0xda : 0xc5;
			*q++ = (unsigned char)(len >> 8);
			*q++ = (unsigned char)len;
		} else {
			*q++ = v->kind == DM_TEXT ? 0xdb : 0xc6;
			*q++ = (unsigned char)(len >> 24);
			*q++ = (unsigned char)(len >> 16);
			*q++ = (unsigned char)(len >> 8);
			*q++ = (unsigned char)len;
		}
		dms_copy((char *)q, v->ptr, len);
		q += len;
		c[0] = (char)v->kind;
		c[1] = (char)(len >> 24);
		c[2] = (char)(len >> 16);
		c[3] = (char)(len >> 8);
		c[4] = (char)len;
		dms_copy(c + 5, v->ptr, len);
		c += 5 + (size_t)len;
	}
	w->out.len = (size_t)(q - (unsigned char *)w->out.data);
	w->canon.len += clen;
	dms_writer_row_done(w);
}

void
dms_writer_copy(dms_writer *w, int op, const dms_reader *r)
{
	/* Only bytes already in the shortest form may be copied: writers use the shortest. */
	if (r->raw == NULL || !r->raw_shortest || r->op == DMS_OP_DELETE) {
		dms_writer_row(w, op, r->vals, r->nvals);
		return;
	}
	dm_buf_reserve(&w->out, 6 + r->rawlen);
	unsigned char *q = (unsigned char *)w->out.data + w->out.len;
	if (op != DMS_OP_NONE) {
		q = dms_put_array(q, r->nvals + 1);
		*q++ = (unsigned char)op;
	} else {
		q = dms_put_array(q, r->nvals);
	}
	memcpy(q, r->raw, r->rawlen);
	w->out.len = (size_t)(q - (unsigned char *)w->out.data) + r->rawlen;

	/* The reader's canonical encoding of the values, after its own op if it has one. */
	size_t skip = r->canon_row + (r->op != DMS_OP_NONE), len = r->canon.len - skip;
	if (w->canon.len >= DMS_CANON_BATCH)
		dms_canon_flush(w->checksum, &w->canon);
	dm_buf_reserve(&w->canon, 1 + len);
	if (op != DMS_OP_NONE)
		w->canon.data[w->canon.len++] = (char)op;
	memcpy(w->canon.data + w->canon.len, r->canon.data + skip, len);
	w->canon.len += len;
	dms_writer_row_done(w);
}

void
dms_writer_hold(dms_writer *w, int on)
{
	w->hold = on;
}

void
dms_writer_vouch(dms_writer *w)
{
	w->held = DMS_NONE;
	w->nsyncs = 0;
	dms_out_flush(w, 0);
}

int
dms_writer_failed(const dms_writer *w)
{
	return w->err != 0 || ferror(w->fp);
}

int
dms_writer_finish(dms_writer *w, const char *watermark)
{
	msgpack_packer *pk = &w->pk;
	XXH64_canonical_t c;

	dms_writer_vouch(w);
	dms_canon_flush(w->checksum, &w->canon);
	XXH64_canonicalFromHash(&c, dms_digest_final(w->checksum, watermark, &w->canon));
	msgpack_pack_map(pk, 4);
	dms_pack_cstr(pk, "end");
	msgpack_pack_true(pk);
	dms_pack_cstr(pk, "rows");
	msgpack_pack_uint64(pk, w->rows);
	dms_pack_cstr(pk, "checksum");
	msgpack_pack_bin(pk, sizeof c.digest);
	msgpack_pack_bin_body(pk, c.digest, sizeof c.digest);
	dms_pack_cstr(pk, "watermark");
	dms_pack_cstr_or_nil(pk, watermark);
	dms_out_flush(w, 1);
	if (w->err != 0 || fflush(w->fp) != 0 || ferror(w->fp)) {
		dm_err("cannot write stream: %s", strerror(w->err ? w->err : errno ? errno : EIO));
		return -1;
	}
	return 0;
}

void
dms_writer_free(dms_writer *w)
{
	if (w == NULL)
		return;
	/* As stdio would at exit: what was written goes out, except what waits to be vouched for. */
	if (w->fp != NULL)
		dms_out_flush(w, 1);
	XXH3_freeState(w->checksum);
	w->checksum = NULL;
	dm_buf_free(&w->canon);
	dm_buf_free(&w->out);
	free(w->syncs);
	w->syncs = NULL;
	w->nsyncs = w->syncs_cap = 0;
	w->held = DMS_NONE;
}

/* --- reader --- */

static int
dms_bad(dms_reader *r, const char *what)
{
	dm_err("%s: invalid stream: %s", r->name, what);
	return -1;
}

/*
 * Length of the MessagePack object at p, given avail bytes: > 0 when it is
 * whole, 0 when more input is needed, -1 when it cannot be part of a dm
 * stream. Claimed lengths are never trusted for allocation: an object is
 * only as large as the bytes that actually arrived.
 */
static int64_t
dms_mp_skip(const unsigned char *p, size_t avail, int depth)
{
	uint64_t n = 0, head, count = 0;	/* count: nested objects that follow */

	if (avail < 1)
		return 0;
	unsigned char b = p[0];
	if (b <= 0x7f || b >= 0xe0 || b == 0xc0 || b == 0xc2 || b == 0xc3)
		return 1;
	if (depth > 4)
		return -1;
#define NEED(k) do { if (avail < (k)) return 0; } while (0)
#define BE16(q) ((uint64_t)(q)[0] << 8 | (q)[1])
#define BE32(q) ((uint64_t)(q)[0] << 24 | (uint64_t)(q)[1] << 16 | (uint64_t)(q)[2] << 8 | (q)[3])
	switch (b) {
	case 0xcc: case 0xd0: return avail >= 2 ? 2 : 0;
	case 0xcd: case 0xd1: return avail >= 3 ? 3 : 0;
	case 0xce: case 0xd2: return avail >= 5 ? 5 : 0;
	case 0xcf: case 0xd3: return avail >= 9 ? 9 : 0;
	case 0xc4: case 0xd9: NEED(2); head = 2; n = p[1]; break;
	case 0xc5: case 0xda: NEED(3); head = 3; n = BE16(p + 1); break;
	case 0xc6: case 0xdb: NEED(5); head = 5; n = BE32(p + 1); break;
	case 0xdc: NEED(3); head = 3; count = BE16(p + 1); break;
	case 0xdd: NEED(5); head = 5; count = BE32(p + 1); break;
	case 0xde: NEED(3); head = 3; count = 2 * BE16(p + 1); break;
	case 0xdf: NEED(5); head = 5; count = 2 * BE32(p + 1); break;
	default:
		if (b >= 0xa0 && b <= 0xbf) {
			head = 1;
			n = b & 0x1f;
		} else if (b >= 0x90 && b <= 0x9f) {
			head = 1;
			count = b & 0x0f;
		} else if (b >= 0x80 && b <= 0x8f) {
			head = 1;
			count = 2 * (uint64_t)(b & 0x0f);
		} else {
			return -1;	/* floats and extensions never appear in a dm stream */
		}
	}
#undef NEED
	if (count == 0)
		return avail - head >= n ? (int64_t)(head + n) : 0;
	uint64_t off = head;
	for (uint64_t i = 0; i < count; i++) {
		int64_t len = dms_mp_skip(p + off, avail - off, depth + 1);
		if (len <= 0)
			return len;
		off += (uint64_t)len;
	}
	return (int64_t)off;
}

int64_t
dms_mp_frame(const unsigned char *p, size_t avail)
{
	return dms_mp_skip(p, avail, 0);
}

/* The window is about to move: the previous key, still in it, is copied out first. */
static void
dms_detach_prev(dms_reader *r)
{
	size_t nkey = r->hdr.nkey, len = 0, off = 0;

	for (size_t i = 0; i < nkey; i++)
		len += r->prev_keys[i].len;
	r->prev_data.len = 0;
	dm_buf_reserve(&r->prev_data, len);
	for (size_t i = 0; i < nkey; i++) {
		if (r->prev_keys[i].len)
			memcpy(r->prev_data.data + off, r->prev_keys[i].ptr, r->prev_keys[i].len);
		r->prev_keys[i].ptr = r->prev_data.data + off;
		off += r->prev_keys[i].len;
	}
	r->prev_data.len = len;
	r->prev_in_buf = 0;
}

/*
 * Reads more input behind what the window holds: slides the unread bytes to
 * the front, then grows the window geometrically when a message does not
 * fit, so that rescans stay linear. Sets eof at the end of the input.
 * 0, or -1 after printing why (a read error, a message over 1 GiB).
 */
static int
dms_fill(dms_reader *r)
{
	size_t avail = r->end - r->start;

	if (r->have_prev && r->prev_in_buf)
		dms_detach_prev(r);
	if (r->start > 0) {
		memmove(r->buf, r->buf + r->start, avail);
		r->start = 0;
		r->end = avail;
	}
	if (r->cap - r->end < DMS_READ_CHUNK || r->end > r->cap / 2) {
		size_t cap = r->cap ? r->cap * 2 : 4 * DMS_READ_CHUNK;
		if (cap > DMS_MAX_MESSAGE + 2 * DMS_READ_CHUNK)
			return dms_bad(r, "a message is larger than 1 GiB");
		r->buf = dm_xrealloc(r->buf, cap);
		r->cap = cap;
	}
	size_t got = fread(r->buf + r->end, 1, r->cap - r->end, r->fp);
	if (got == 0) {
		if (ferror(r->fp)) {
			dm_err("%s: cannot read stream: %s", r->name, strerror(errno ? errno : EIO));
			return -1;
		}
		r->eof = 1;
	}
	r->end += got;
	return 0;
}

/*
 * Frames the next message: afterwards buf + start holds frame whole bytes.
 * 1: framed, 0: clean end of input, -1: error printed.
 */
static int
dms_next_frame(dms_reader *r)
{
	r->start += r->frame;
	r->frame = 0;
	for (;;) {
		size_t avail = r->end - r->start;
		int64_t len = avail ? dms_mp_skip((const unsigned char *)r->buf + r->start, avail, 0) : 0;
		if (len < 0)
			return dms_bad(r, "not MessagePack of the dm kind (corrupted data)");
		if (len > 0) {
			r->frame = (size_t)len;
			return 1;
		}
		if (r->eof) {
			if (avail > 0)
				return dms_bad(r, "truncated in the middle of a message");
			return 0;
		}
		if (dms_fill(r) < 0)
			return -1;
	}
}

/* Unpacks the framed message as a msgpack object (header and trailer only). */
static int
dms_unpack_frame(dms_reader *r)
{
	size_t off = 0;

	msgpack_unpacked_destroy(&r->msg);
	msgpack_unpacked_init(&r->msg);
	if (msgpack_unpack_next(&r->msg, r->buf + r->start, r->frame, &off) != MSGPACK_UNPACK_SUCCESS)
		return dms_bad(r, "malformed message");
	return 0;
}

/* Gets the next map message. 1: got one, 0: clean end of input, -1: error printed. */
static int
dms_next_object(dms_reader *r)
{
	int got = dms_next_frame(r);

	if (got <= 0)
		return got;
	return dms_unpack_frame(r) < 0 ? -1 : 1;
}

static int
dms_key_is(const msgpack_object *k, const char *name)
{
	size_t n = strlen(name);

	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n &&
	    memcmp(k->via.str.ptr, name, n) == 0;
}

/* Copies a str or nil object into *out; -1 when it is neither. */
static int
dms_get_str(const msgpack_object *o, char **out, int nil_ok)
{
	free(*out);
	*out = NULL;
	if (o->type == MSGPACK_OBJECT_NIL && nil_ok)
		return 0;
	if (o->type != MSGPACK_OBJECT_STR)
		return -1;
	if (memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
		return -1;
	*out = dm_xstrndup(o->via.str.ptr, o->via.str.size);
	return 0;
}

static int
dms_parse_header(dms_reader *r, const msgpack_object *o)
{
	dms_header *h = &r->hdr;
	int magic = 0, have_kind = 0, have_version = 0, have_cols = 0, have_key = 0, have_since = 0, have_change = 0;
	char *kind = NULL;
	int rc = -1;

	if (o->type != MSGPACK_OBJECT_MAP)
		return dms_bad(r, "no header (is this a dm stream?)");
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		const msgpack_object *v = &o->via.map.ptr[i].val;
		if (dms_key_is(k, "dm")) {
			magic = v->type == MSGPACK_OBJECT_STR && v->via.str.size == 6 &&
			    memcmp(v->via.str.ptr, "stream", 6) == 0;
		} else if (dms_key_is(k, "version")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				goto bad;
			if (v->via.u64 != DMS_VERSION) {
				dm_err("%s: invalid stream: format version %llu, this dm reads version %d",
				    r->name, (unsigned long long)v->via.u64, DMS_VERSION);
				goto out;
			}
			have_version = 1;
		} else if (dms_key_is(k, "kind")) {
			if (dms_get_str(v, &kind, 0))
				goto bad;
			have_kind = 1;
		} else if (dms_key_is(k, "entity")) {
			if (dms_get_str(v, &h->entity, 0))
				goto bad;
		} else if (dms_key_is(k, "table")) {
			if (dms_get_str(v, &h->table, 0))
				goto bad;
		} else if (dms_key_is(k, "since")) {
			if (dms_get_str(v, &h->since, 1))
				goto bad;
			have_since = 1;
		} else if (dms_key_is(k, "change_column")) {
			if (dms_get_str(v, &h->change_column, 1))
				goto bad;
			have_change = 1;
		} else if (dms_key_is(k, "columns")) {
			if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0 || have_cols)
				goto bad;
			h->ncols = v->via.array.size;
			h->cols = dm_xcalloc(h->ncols, sizeof *h->cols);
			for (size_t c = 0; c < h->ncols; c++) {
				const msgpack_object *col = &v->via.array.ptr[c];
				if (col->type != MSGPACK_OBJECT_ARRAY || col->via.array.size != 2 ||
				    dms_get_str(&col->via.array.ptr[0], &h->cols[c].name, 0) ||
				    dms_get_str(&col->via.array.ptr[1], &h->cols[c].type, 0))
					goto bad;
			}
			have_cols = 1;
		} else if (dms_key_is(k, "key")) {
			if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size == 0 || have_key)
				goto bad;
			h->nkey = v->via.array.size;
			h->key = dm_xcalloc(h->nkey, sizeof *h->key);
			for (size_t c = 0; c < h->nkey; c++) {
				const msgpack_object *kv = &v->via.array.ptr[c];
				if (kv->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
					goto bad;
				h->key[c] = (size_t)kv->via.u64;
			}
			have_key = 1;
		} else if (dms_key_is(k, "key_range")) {
			if (v->type != MSGPACK_OBJECT_ARRAY || v->via.array.size != 2 || h->ranged ||
			    dms_get_str(&v->via.array.ptr[0], &h->key_from, 1) ||
			    dms_get_str(&v->via.array.ptr[1], &h->key_before, 1))
				goto bad;
			h->ranged = 1;
		}
		/* Unknown keys are allowed: later minor additions must not break old readers. */
	}
	if (!magic) {
		rc = dms_bad(r, "no header (is this a dm stream?)");
		goto out;
	}
	/* Every key is required, nil or not: a damaged key name must not pass as "absent". */
	if (!have_version || !have_kind || !have_cols || !have_key || !have_since || !have_change ||
	    !h->entity || !h->table)
		goto bad;
	for (size_t c = 0; c < h->nkey; c++)
		if (h->key[c] >= h->ncols)
			goto bad;
	if (strcmp(kind, "rows") == 0)
		h->kind = DMS_ROWS;
	else if (strcmp(kind, "hashes") == 0)
		h->kind = DMS_HASHES;
	else if (strcmp(kind, "changes") == 0)
		h->kind = DMS_CHANGES;
	else
		goto bad;
	dms_header_classify(h);
	rc = 0;
	goto out;
bad:
	rc = dms_bad(r, "malformed header");
out:
	free(kind);
	return rc;
}

int
dms_reader_open(dms_reader *r, FILE *fp, const char *name)
{
	return dms_reader_open_pre(r, fp, name, NULL, 0);
}

int
dms_reader_open_pre(dms_reader *r, FILE *fp, const char *name, const char *pre, size_t prelen)
{
	memset(r, 0, sizeof *r);
	r->fp = fp;
	r->name = dm_xstrdup(name);
	if (prelen > 0) {
		r->cap = prelen > 4 * DMS_READ_CHUNK ? prelen : 4 * DMS_READ_CHUNK;
		r->buf = dm_xmalloc(r->cap);
		memcpy(r->buf, pre, prelen);
		r->end = prelen;
	}
	dms_header_init(&r->hdr);
	msgpack_unpacked_init(&r->msg);
	r->checksum = XXH3_createState();
	if (r->checksum == NULL) {
		dm_err("out of memory");
		exit(DM_EXIT_FAIL);
	}
	XXH3_64bits_reset(r->checksum);

	int got = dms_next_object(r);
	if (got == 0) {
		dms_bad(r, "empty: no header");
		return DM_EXIT_STREAM;
	}
	if (got < 0 || dms_parse_header(r, &r->msg.data) < 0)
		return DM_EXIT_STREAM;
	dms_digest_header(r->checksum, &r->hdr, &r->canon);
	size_t width = r->hdr.ncols > r->hdr.nkey + 1 ? r->hdr.ncols : r->hdr.nkey + 1;
	r->vals = dm_xcalloc(width + 1, sizeof *r->vals);
	r->keys = dm_xcalloc(r->hdr.nkey, sizeof *r->keys);
	r->prev_keys = dm_xcalloc(r->hdr.nkey, sizeof *r->prev_keys);
	return 0;
}

static int
dms_parse_trailer(dms_reader *r, const msgpack_object *o)
{
	int end = 0, have_rows = 0, have_sum = 0;
	uint64_t rows = 0;
	XXH64_canonical_t want;

	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		const msgpack_object *v = &o->via.map.ptr[i].val;
		if (dms_key_is(k, "end")) {
			end = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
		} else if (dms_key_is(k, "rows")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				return dms_bad(r, "malformed trailer");
			rows = v->via.u64;
			have_rows = 1;
		} else if (dms_key_is(k, "checksum")) {
			if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != sizeof want.digest)
				return dms_bad(r, "malformed trailer");
			memcpy(want.digest, v->via.bin.ptr, sizeof want.digest);
			have_sum = 1;
		} else if (dms_key_is(k, "watermark")) {
			if (dms_get_str(v, &r->trailer.watermark, 1))
				return dms_bad(r, "malformed trailer");
		}
	}
	if (!end || !have_rows || !have_sum)
		return dms_bad(r, "malformed trailer");
	if (rows != r->rows) {
		dm_err("%s: invalid stream: trailer counts %llu rows, stream has %llu",
		    r->name, (unsigned long long)rows, (unsigned long long)r->rows);
		return -1;
	}
	XXH64_canonical_t got;
	dms_canon_flush(r->checksum, &r->canon);
	XXH64_canonicalFromHash(&got, dms_digest_final(r->checksum, r->trailer.watermark, &r->canon));
	if (memcmp(got.digest, want.digest, sizeof got.digest) != 0)
		return dms_bad(r, "checksum mismatch (corrupted data)");
	r->trailer.rows = rows;
	return 0;
}

/* A sync point: 1 verified, 0 not a sync point (the trailer), -1 invalid (printed). */
static int
dms_parse_sync(dms_reader *r, const msgpack_object *o)
{
	int is_sync = 0, have_sum = 0;
	uint64_t rows = UINT64_MAX;
	XXH64_canonical_t want, got;

	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key;
		const msgpack_object *v = &o->via.map.ptr[i].val;
		if (dms_key_is(k, "sync")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				return dms_bad(r, "malformed sync point");
			rows = v->via.u64;
			is_sync = 1;
		} else if (dms_key_is(k, "checksum")) {
			if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != sizeof want.digest)
				return dms_bad(r, "malformed sync point");
			memcpy(want.digest, v->via.bin.ptr, sizeof want.digest);
			have_sum = 1;
		}
	}
	if (!is_sync)
		return 0;
	if (!have_sum || rows != r->rows || rows % DMS_SYNC_ROWS != 0)
		return dms_bad(r, "sync point out of place (corrupted data)");
	dms_canon_flush(r->checksum, &r->canon);
	XXH64_canonicalFromHash(&got, XXH3_64bits_digest(r->checksum));
	if (memcmp(got.digest, want.digest, sizeof got.digest) != 0)
		return dms_bad(r, "checksum mismatch (corrupted data)");
	r->verified = rows;
	return 1;
}

/*
 * Decodes the row message at buf + start, of which avail bytes arrived, in
 * one pass: framing, arity and values (nil, str or bin). 1: a whole row,
 * decoded, frame set; 0: more input needed; -1: not a plain, well-formed
 * row of this stream (a map, damage, an unexpected type), which the careful
 * path frames and judges, so that every error reads the same whichever path
 * met it. Every length is checked against avail before it is used.
 */
static int
dms_row_fast(dms_reader *r, size_t avail)
{
	const dms_header *h = &r->hdr;
	const unsigned char *p0 = (const unsigned char *)r->buf + r->start, *p = p0, *end = p0 + avail;
	size_t n, want, first = 0;
	int op = DMS_OP_NONE, shortest = 1;

	if ((*p & 0xf0) == 0x90) {
		n = *p & 0x0f;
		p++;
	} else if (*p == 0xdc) {
		if (avail < 3)
			return 0;
		n = (size_t)p[1] << 8 | p[2];
		p += 3;
	} else if (*p == 0xdd) {
		if (avail < 5)
			return 0;
		n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
		p += 5;
	} else {
		return -1;
	}
	if (h->kind == DMS_CHANGES) {
		if (n == 0)
			return -1;
		if (p == end)
			return 0;
		if (*p > 2)
			return -1;
		op = *p++;
		first = 1;
	}
	if (h->kind == DMS_HASHES)
		want = h->nkey + 1;
	else if (op == DMS_OP_DELETE)
		want = h->nkey;
	else
		want = h->ncols;
	if (n - first != want)
		return -1;
	const unsigned char *raw = p;
	for (size_t i = 0; i < want; i++) {
		dm_value *v = &r->vals[i];
		size_t len, head;
		if (p == end)
			return 0;
		unsigned char b = *p;
		if (b == 0xc0) {
			v->kind = DM_NULL;
			v->ptr = NULL;
			v->len = 0;
			p++;
			continue;
		}
		v->kind = DM_TEXT;
		if ((b & 0xe0) == 0xa0) {
			head = 1;
			len = b & 0x1f;
		} else {
			switch (b) {
			case 0xc4: case 0xd9:
				if (end - p < 2)
					return 0;
				head = 2;
				len = p[1];
				shortest &= b == 0xc4 || len >= 32;
				break;
			case 0xc5: case 0xda:
				if (end - p < 3)
					return 0;
				head = 3;
				len = (size_t)p[1] << 8 | p[2];
				shortest &= len > 0xff;
				break;
			case 0xc6: case 0xdb:
				if (end - p < 5)
					return 0;
				head = 5;
				len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
				shortest &= len > 0xffff;
				break;
			default:
				return -1;
			}
			if (b == 0xc4 || b == 0xc5 || b == 0xc6)
				v->kind = DM_BIN;
		}
		if ((size_t)(end - p) - head < len)
			return 0;
		v->ptr = (const char *)p + head;
		v->len = (uint32_t)len;
		p += head + len;
	}
	r->frame = (size_t)(p - p0);
	r->op = op;
	r->nvals = want;
	r->hash = NULL;
	r->raw = (const char *)raw;
	r->rawlen = (size_t)(p - raw);
	r->raw_shortest = shortest;
	return 1;
}

/*
 * The checks every row passes once its values are decoded, whichever path
 * decoded it: the row hash's width, no NULL in the key, keys strictly
 * increasing; then its canonical encoding feeds the checksum (and stays in
 * canon for the row hash and for a writer copying the row).
 * 1, or -1 after printing why.
 */
static int
dms_accept_row(dms_reader *r)
{
	const dms_header *h = &r->hdr;
	size_t nkey = h->nkey;

	if (h->kind == DMS_HASHES) {
		const dm_value *hv = &r->vals[nkey];
		if (hv->kind != DM_BIN || hv->len != DMS_HASH_LEN)
			return dms_bad(r, "malformed row hash");
		r->hash = (const unsigned char *)hv->ptr;
		memcpy(r->keys, r->vals, nkey * sizeof *r->keys);
	} else if (r->op == DMS_OP_DELETE) {
		memcpy(r->keys, r->vals, nkey * sizeof *r->keys);
	} else {
		for (size_t i = 0; i < nkey; i++)
			r->keys[i] = r->vals[h->key[i]];
	}
	for (size_t i = 0; i < nkey; i++)
		if (r->keys[i].kind == DM_NULL)
			return dms_bad(r, "NULL in a key column");

	if (r->have_prev) {
		int c = dms_key_cmp(h->keyclass, nkey, r->prev_keys, r->keys);
		if (c >= 0) {
			dm_buf k = { 0 };
			dms_key_text(&k, r->keys, nkey);
			dm_err("%s: invalid stream: %s key %s at row %llu", r->name,
			    c == 0 ? "duplicate" : "out-of-order", dm_buf_cstr(&k),
			    (unsigned long long)r->rows + 1);
			dm_buf_free(&k);
			return -1;
		}
	}
	/* The key stays where it is, in the window, until the window moves (dms_fill). */
	memcpy(r->prev_keys, r->keys, nkey * sizeof *r->keys);
	r->have_prev = 1;
	r->prev_in_buf = 1;

	size_t len = (r->op != DMS_OP_NONE) + dms_canon_len(r->vals, r->nvals);
	if (r->canon.len >= DMS_CANON_BATCH)
		dms_canon_flush(r->checksum, &r->canon);
	dm_buf_reserve(&r->canon, len);
	r->canon_row = r->canon.len;
	char *q = r->canon.data + r->canon.len;
	if (r->op != DMS_OP_NONE)
		*q++ = (char)r->op;
	dms_canon_put(q, r->vals, r->nvals);
	r->canon.len += len;
	r->rows++;
	return 1;
}

/* A row the fast path would not take: framed first, then decoded value by value. */
static int
dms_decode_row(dms_reader *r)
{
	const dms_header *h = &r->hdr;
	const unsigned char *p = (const unsigned char *)r->buf + r->start;
	const unsigned char *endp = p + r->frame;
	size_t n;

	if (*p >= 0x90 && *p <= 0x9f) {
		n = *p & 0x0f;
		p += 1;
	} else if (*p == 0xdc) {
		n = (size_t)p[1] << 8 | p[2];
		p += 3;
	} else if (*p == 0xdd) {
		n = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
		p += 5;
	} else {
		return dms_bad(r, "row is not an array");
	}
	size_t first = 0;
	r->op = DMS_OP_NONE;
	r->hash = NULL;
	r->raw = NULL;
	if (h->kind == DMS_CHANGES) {
		if (n == 0 || *p > 2)
			return dms_bad(r, "change without a valid operation");
		r->op = *p++;
		first = 1;
	}
	size_t want;
	if (h->kind == DMS_HASHES)
		want = h->nkey + 1;
	else if (r->op == DMS_OP_DELETE)
		want = h->nkey;
	else
		want = h->ncols;
	if (n - first != want) {
		char msg[128];
		snprintf(msg, sizeof msg, "row %llu has %zu values, header says %zu",
		    (unsigned long long)r->rows + 1, n - first, want);
		return dms_bad(r, msg);
	}
	r->nvals = want;
	for (size_t i = 0; i < want; i++) {
		dm_value *v = &r->vals[i];
		unsigned char b = *p;
		size_t len, head;
		if (b == 0xc0) {
			v->kind = DM_NULL;
			v->ptr = NULL;
			v->len = 0;
			p++;
			continue;
		}
		if (b >= 0xa0 && b <= 0xbf) {
			head = 1;
			len = b & 0x1f;
		} else if (b == 0xd9 || b == 0xc4) {
			head = 2;
			len = p[1];
		} else if (b == 0xda || b == 0xc5) {
			head = 3;
			len = (size_t)p[1] << 8 | p[2];
		} else if (b == 0xdb || b == 0xc6) {
			head = 5;
			len = (size_t)p[1] << 24 | (size_t)p[2] << 16 | (size_t)p[3] << 8 | p[4];
		} else {
			return dms_bad(r, "value of an unknown type");
		}
		v->kind = (b == 0xc4 || b == 0xc5 || b == 0xc6) ? DM_BIN : DM_TEXT;
		v->ptr = (const char *)p + head;
		v->len = (uint32_t)len;
		p += head + len;
	}
	if (p != endp)
		return dms_bad(r, "malformed row");
	return dms_accept_row(r);
}

int
dms_reader_next(dms_reader *r)
{
	for (;;) {
		if (r->done)
			return 0;
		r->start += r->frame;
		r->frame = 0;
		/* Rows, nearly every message, take the fast path; the rest the careful one. */
		int got;
		for (;;) {
			size_t avail = r->end - r->start;
			got = avail ? dms_row_fast(r, avail) : 0;
			if (got != 0 || r->eof)
				break;
			if (dms_fill(r) < 0)
				return -1;
		}
		if (got > 0)
			return dms_accept_row(r);

		got = dms_next_frame(r);
		if (got < 0)
			return -1;
		if (got == 0) {
			dm_err("%s: invalid stream: truncated after %llu rows (no trailer)",
			    r->name, (unsigned long long)r->rows);
			return -1;
		}
		const unsigned char *p = (const unsigned char *)r->buf + r->start;
		if (!((*p >= 0x80 && *p <= 0x8f) || *p == 0xde || *p == 0xdf))
			return dms_decode_row(r);
		if (dms_unpack_frame(r) < 0)
			return -1;
		int sync = dms_parse_sync(r, &r->msg.data);
		if (sync < 0)
			return -1;
		if (sync > 0) {
			if (r->stop_at_sync)
				return 2;
			continue;
		}
		if (dms_parse_trailer(r, &r->msg.data) < 0)
			return -1;
		r->verified = r->rows;
		/* Anything after the trailer means two streams were glued or the file is damaged. */
		got = dms_next_object(r);
		if (got < 0)
			return -1;
		if (got > 0)
			return dms_bad(r, "data after the trailer");
		r->done = 1;
		return 0;
	}
}

void
dms_reader_row_hash(const dms_reader *r, unsigned char hash[DMS_HASH_LEN])
{
	size_t skip = r->canon_row + (r->op != DMS_OP_NONE);

	if (r->hash != NULL)
		memcpy(hash, r->hash, DMS_HASH_LEN);
	else
		dms_hash128(r->canon.data + skip, r->canon.len - skip, hash);
}

void
dms_reader_free(dms_reader *r)
{
	/* A zeroed reader was never opened: nothing to release. */
	if (r == NULL || r->name == NULL)
		return;
	msgpack_unpacked_destroy(&r->msg);
	free(r->buf);
	XXH3_freeState(r->checksum);
	dms_header_free(&r->hdr);
	free(r->trailer.watermark);
	free(r->name);
	free(r->vals);
	free(r->keys);
	free(r->prev_keys);
	dm_buf_free(&r->canon);
	dm_buf_free(&r->prev_data);
	memset(r, 0, sizeof *r);
}
