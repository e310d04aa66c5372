/* feed.c - writer and reader of the change feed (dm-stream(5), "Change feeds"). */
#define _POSIX_C_SOURCE 200809L
#include "feed.h"
#include "stream.h"

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define DMF_READ_CHUNK (64 * 1024)
#define DMF_MAX_MESSAGE ((size_t)1 << 30)

/* Canonical encoding of a C string (NULL: nil) appended to out. */
static void
dmf_canon_cstr(dm_buf *out, const char *s)
{
	dm_value v = { s, s ? (uint32_t)strlen(s) : 0, (uint8_t)(s ? DM_TEXT : DM_NULL) };

	dms_canon_append(out, &v, 1);
}

static void
dmf_canon_u64(dm_buf *out, uint64_t n)
{
	char num[24];

	snprintf(num, sizeof num, "%" PRIu64, n);
	dmf_canon_cstr(out, num);
}

/* The header's fields, in the order the checksum takes them. */
static void
dmf_canon_header(dm_buf *out, const char *slot, const char *publication, const char *start_lsn)
{
	dmf_canon_cstr(out, "feed");
	dmf_canon_cstr(out, slot);
	dmf_canon_cstr(out, publication);
	dmf_canon_cstr(out, start_lsn);
}

/* --- writer --- */

static int
dmf_out_cb(void *data, const char *buf, size_t len)
{
	dmf_writer *w = data;

	if (w->err == 0 && fwrite(buf, 1, len, w->fp) != len)
		w->err = errno ? errno : EIO;
	return 0;
}

static void
dmf_pack_cstr(msgpack_packer *pk, const char *s)
{
	size_t n = strlen(s);

	msgpack_pack_str(pk, n);
	msgpack_pack_str_body(pk, s, n);
}

/* The message's canonical encoding, in w->canon, goes into the checksum. */
static void
dmf_digest(dmf_writer *w)
{
	XXH3_64bits_update(w->sum, w->canon.data, w->canon.len);
	w->canon.len = 0;
	w->messages++;
}

void
dmf_writer_open(dmf_writer *w, FILE *fp, const char *slot, const char *publication, const char *start_lsn)
{
	memset(w, 0, sizeof *w);
	w->fp = fp;
	w->sum = XXH3_createState();
	if (w->sum == NULL) {
		dm_err("out of memory");
		exit(DM_EXIT_FAIL);
	}
	XXH3_64bits_reset(w->sum);
	msgpack_packer_init(&w->pk, w, dmf_out_cb);
	msgpack_packer *pk = &w->pk;
	msgpack_pack_map(pk, 5);
	dmf_pack_cstr(pk, "dm");
	dmf_pack_cstr(pk, "feed");
	dmf_pack_cstr(pk, "version");
	msgpack_pack_int(pk, DMF_VERSION);
	dmf_pack_cstr(pk, "slot");
	dmf_pack_cstr(pk, slot);
	dmf_pack_cstr(pk, "publication");
	dmf_pack_cstr(pk, publication);
	dmf_pack_cstr(pk, "start_lsn");
	dmf_pack_cstr(pk, start_lsn);
	dmf_canon_header(&w->canon, slot, publication, start_lsn);
	XXH3_64bits_update(w->sum, w->canon.data, w->canon.len);
	w->canon.len = 0;
}

void
dmf_writer_relation(dmf_writer *w, uint32_t relid, const char *name, size_t ncols,
    const char *const *names, const char *const *types, size_t nkey, const size_t *key)
{
	msgpack_packer *pk = &w->pk;
	char op = DMF_RELATION;

	msgpack_pack_array(pk, 5);
	msgpack_pack_uint8(pk, DMF_RELATION);
	msgpack_pack_uint32(pk, relid);
	dmf_pack_cstr(pk, name);
	msgpack_pack_array(pk, ncols);
	for (size_t i = 0; i < ncols; i++) {
		msgpack_pack_array(pk, 2);
		dmf_pack_cstr(pk, names[i]);
		dmf_pack_cstr(pk, types[i]);
	}
	msgpack_pack_array(pk, nkey);
	for (size_t i = 0; i < nkey; i++)
		msgpack_pack_uint64(pk, key[i]);

	dm_buf_append(&w->canon, &op, 1);
	dmf_canon_u64(&w->canon, relid);
	dmf_canon_cstr(&w->canon, name);
	dmf_canon_u64(&w->canon, ncols);
	for (size_t i = 0; i < ncols; i++) {
		dmf_canon_cstr(&w->canon, names[i]);
		dmf_canon_cstr(&w->canon, types[i]);
	}
	dmf_canon_u64(&w->canon, nkey);
	for (size_t i = 0; i < nkey; i++)
		dmf_canon_u64(&w->canon, key[i]);
	dmf_digest(w);
}

void
dmf_writer_change(dmf_writer *w, int op, uint32_t relid, const dm_value *keys, size_t nkey)
{
	msgpack_packer *pk = &w->pk;
	char b = (char)op;

	msgpack_pack_array(pk, 2 + nkey);
	msgpack_pack_uint8(pk, (uint8_t)op);
	msgpack_pack_uint32(pk, relid);
	for (size_t i = 0; i < nkey; i++) {
		msgpack_pack_str(pk, keys[i].len);
		msgpack_pack_str_body(pk, keys[i].ptr, keys[i].len);
	}
	dm_buf_append(&w->canon, &b, 1);
	dmf_canon_u64(&w->canon, relid);
	dms_canon_append(&w->canon, keys, nkey);
	dmf_digest(w);
}

int
dmf_writer_commit(dmf_writer *w, const char *commit_lsn, const char *end_lsn, const char *time, uint32_t xid)
{
	msgpack_packer *pk = &w->pk;
	char b = DMF_COMMIT;
	XXH64_canonical_t c;

	msgpack_pack_array(pk, 5);
	msgpack_pack_uint8(pk, DMF_COMMIT);
	dmf_pack_cstr(pk, commit_lsn);
	dmf_pack_cstr(pk, end_lsn);
	dmf_pack_cstr(pk, time);
	msgpack_pack_uint32(pk, xid);
	dm_buf_append(&w->canon, &b, 1);
	dmf_canon_cstr(&w->canon, commit_lsn);
	dmf_canon_cstr(&w->canon, end_lsn);
	dmf_canon_cstr(&w->canon, time);
	dmf_canon_u64(&w->canon, xid);
	dmf_digest(w);
	snprintf(w->last_lsn, sizeof w->last_lsn, "%s", end_lsn);

	/* A reader can act on every message up to here before the feed ends. */
	XXH64_canonicalFromHash(&c, XXH3_64bits_digest(w->sum));
	msgpack_pack_map(pk, 2);
	dmf_pack_cstr(pk, "sync");
	msgpack_pack_uint64(pk, w->messages);
	dmf_pack_cstr(pk, "checksum");
	msgpack_pack_bin(pk, sizeof c.digest);
	msgpack_pack_bin_body(pk, c.digest, sizeof c.digest);
	if (w->err == 0 && (fflush(w->fp) != 0 || ferror(w->fp)))
		w->err = errno ? errno : EIO;
	return w->err ? -1 : 0;
}

int
dmf_writer_finish(dmf_writer *w)
{
	msgpack_packer *pk = &w->pk;
	XXH64_canonical_t c;
	const char *last = w->last_lsn[0] ? w->last_lsn : NULL;

	dmf_canon_cstr(&w->canon, last);
	XXH3_64bits_update(w->sum, w->canon.data, w->canon.len);
	w->canon.len = 0;
	XXH64_canonicalFromHash(&c, XXH3_64bits_digest(w->sum));
	msgpack_pack_map(pk, 4);
	dmf_pack_cstr(pk, "end");
	msgpack_pack_true(pk);
	dmf_pack_cstr(pk, "messages");
	msgpack_pack_uint64(pk, w->messages);
	dmf_pack_cstr(pk, "last_lsn");
	if (last)
		dmf_pack_cstr(pk, last);
	else
		msgpack_pack_nil(pk);
	dmf_pack_cstr(pk, "checksum");
	msgpack_pack_bin(pk, sizeof c.digest);
	msgpack_pack_bin_body(pk, c.digest, sizeof c.digest);
	if (w->err != 0 || fflush(w->fp) != 0 || ferror(w->fp)) {
		dm_err("cannot write the feed: %s", strerror(w->err ? w->err : errno ? errno : EIO));
		return -1;
	}
	return 0;
}

void
dmf_writer_free(dmf_writer *w)
{
	if (w == NULL)
		return;
	XXH3_freeState(w->sum);
	w->sum = NULL;
	dm_buf_free(&w->canon);
}

/* --- reader --- */

static int
dmf_bad(dmf_reader *r, const char *what)
{
	if (!r->probing)
		dm_err("%s: invalid feed: %s", r->name, what);
	return -1;
}

/* Frames the next message at buf + start: 1 framed, 0 clean end of input, -1 error printed. */
static int
dmf_next_frame(dmf_reader *r)
{
	r->start += r->frame;
	r->frame = 0;
	for (;;) {
		size_t avail = r->end - r->start;
		int64_t len = avail ? dms_mp_frame((const unsigned char *)r->buf + r->start, avail) : 0;
		if (len < 0)
			return dmf_bad(r, "not MessagePack of the dm kind (corrupted data)");
		if (len > 0) {
			r->frame = (size_t)len;
			break;
		}
		if (r->eof) {
			if (avail > 0)
				return dmf_bad(r, "truncated in the middle of a message");
			return 0;
		}
		/* The header stays at 0 until it was read: dmf_reader_taken hands those bytes on. */
		if (r->start > 0) {
			memmove(r->buf, r->buf + r->start, avail);
			r->start = 0;
			r->end = avail;
		}
		if (r->cap - r->end < DMF_READ_CHUNK) {
			size_t cap = r->cap ? r->cap * 2 : 4 * DMF_READ_CHUNK;
			if (cap > DMF_MAX_MESSAGE + 2 * DMF_READ_CHUNK)
				return dmf_bad(r, "a message is larger than 1 GiB");
			r->buf = dm_xrealloc(r->buf, cap);
			r->cap = cap;
		}
		/*
		 * A feed arrives as it is decoded: take what the pipe holds
		 * (read(2)) rather than wait for a full buffer (fread). A FILE
		 * without a descriptor (fmemopen, for the fuzzer) is read whole.
		 */
		int fd = fileno(r->fp);
		ssize_t got;
		if (fd >= 0) {
			do
				got = read(fd, r->buf + r->end, r->cap - r->end);
			while (got < 0 && errno == EINTR);
		} else {
			got = (ssize_t)fread(r->buf + r->end, 1, r->cap - r->end, r->fp);
			if (got == 0 && ferror(r->fp))
				got = -1;
		}
		if (got < 0) {
			dm_err("%s: cannot read the feed: %s", r->name, strerror(errno ? errno : EIO));
			return -1;
		}
		if (got == 0)
			r->eof = 1;
		r->end += (size_t)got;
	}
	/* The message is decoded into its own zone: the window may move under it later. */
	size_t off = 0;
	msgpack_unpacked_destroy(&r->msg);
	msgpack_unpacked_init(&r->msg);
	if (msgpack_unpack_next(&r->msg, r->buf + r->start, r->frame, &off) != MSGPACK_UNPACK_SUCCESS)
		return dmf_bad(r, "malformed message");
	return 1;
}

static int
dmf_key_is(const msgpack_object *k, const char *name)
{
	size_t n = strlen(name);

	return k->type == MSGPACK_OBJECT_STR && k->via.str.size == n && memcmp(k->via.str.ptr, name, n) == 0;
}

/* A str object without NUL as a new C string; NULL when it is not one. */
static char *
dmf_str(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_STR || memchr(o->via.str.ptr, '\0', o->via.str.size) != NULL)
		return NULL;
	return dm_xstrndup(o->via.str.ptr, o->via.str.size);
}

int
dmf_reader_open(dmf_reader *r, FILE *fp, const char *name)
{
	memset(r, 0, sizeof *r);
	r->fp = fp;
	r->name = dm_xstrdup(name);
	msgpack_unpacked_init(&r->msg);
	r->sum = XXH3_createState();
	if (r->sum == NULL) {
		dm_err("out of memory");
		exit(DM_EXIT_FAIL);
	}
	XXH3_64bits_reset(r->sum);
	/* Until the header says "feed", the input may be a row stream: its reader judges it. */
	r->probing = 1;
	int got = dmf_next_frame(r);
	const msgpack_object *o = &r->msg.data;
	if (got <= 0 || o->type != MSGPACK_OBJECT_MAP)
		return 1;
	int version = 0, feed = 0;
	for (uint32_t i = 0; i < o->via.map.size; i++)
		if (dmf_key_is(&o->via.map.ptr[i].key, "dm"))
			feed = dmf_key_is(&o->via.map.ptr[i].val, "feed");
	if (!feed)
		return 1;
	r->probing = 0;
	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (dmf_key_is(k, "dm")) {
			continue;
		} else if (dmf_key_is(k, "version")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				return dmf_bad(r, "malformed header");
			if (v->via.u64 != DMF_VERSION) {
				dm_err("%s: invalid feed: format version %" PRIu64 ", this dm reads version %d",
				    r->name, v->via.u64, DMF_VERSION);
				return -1;
			}
			version = 1;
		} else if (dmf_key_is(k, "slot")) {
			free(r->slot);
			r->slot = dmf_str(v);
		} else if (dmf_key_is(k, "publication")) {
			free(r->publication);
			r->publication = dmf_str(v);
		} else if (dmf_key_is(k, "start_lsn")) {
			free(r->start_lsn);
			r->start_lsn = dmf_str(v);
		}
	}
	if (!version || r->slot == NULL || r->publication == NULL || r->start_lsn == NULL)
		return dmf_bad(r, "malformed header");
	dmf_canon_header(&r->canon, r->slot, r->publication, r->start_lsn);
	XXH3_64bits_update(r->sum, r->canon.data, r->canon.len);
	r->canon.len = 0;
	return 0;
}

const char *
dmf_reader_taken(const dmf_reader *r, size_t *len)
{
	*len = r->end;
	return r->buf;
}

static dmf_relation *
dmf_find(dmf_reader *r, uint32_t relid)
{
	for (size_t i = 0; i < r->nrels; i++)
		if (r->rels[i].relid == relid)
			return &r->rels[i];
	return NULL;
}

static int
dmf_is_uint(const msgpack_object *o, uint64_t max)
{
	return o->type == MSGPACK_OBJECT_POSITIVE_INTEGER && o->via.u64 <= max;
}

static int
dmf_is_str(const msgpack_object *o)
{
	return o->type == MSGPACK_OBJECT_STR;
}

static void
dmf_canon_obj(dm_buf *out, const msgpack_object *o)
{
	dm_value v = { o->via.str.ptr, o->via.str.size, DM_TEXT };

	dms_canon_append(out, &v, 1);
}

/* A relation message: [3, relid, name, [[col, type], ...], [key index, ...]]. */
static int
dmf_read_relation(dmf_reader *r, const msgpack_object *a, size_t n)
{
	if (n != 5 || !dmf_is_uint(&a[1], UINT32_MAX) || !dmf_is_str(&a[2]) ||
	    a[3].type != MSGPACK_OBJECT_ARRAY || a[4].type != MSGPACK_OBJECT_ARRAY ||
	    a[3].via.array.size == 0 || a[4].via.array.size == 0)
		return dmf_bad(r, "malformed relation message");
	const msgpack_object_array *cols = &a[3].via.array, *key = &a[4].via.array;
	char op = DMF_RELATION;
	dm_buf_append(&r->canon, &op, 1);
	dmf_canon_u64(&r->canon, a[1].via.u64);
	dmf_canon_obj(&r->canon, &a[2]);
	dmf_canon_u64(&r->canon, cols->size);
	for (uint32_t i = 0; i < cols->size; i++) {
		const msgpack_object *c = &cols->ptr[i];
		if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 2 ||
		    !dmf_is_str(&c->via.array.ptr[0]) || !dmf_is_str(&c->via.array.ptr[1]))
			return dmf_bad(r, "malformed relation message");
		dmf_canon_obj(&r->canon, &c->via.array.ptr[0]);
		dmf_canon_obj(&r->canon, &c->via.array.ptr[1]);
	}
	dmf_canon_u64(&r->canon, key->size);
	for (uint32_t i = 0; i < key->size; i++) {
		if (!dmf_is_uint(&key->ptr[i], cols->size - 1))
			return dmf_bad(r, "malformed relation message: a key index out of range");
		dmf_canon_u64(&r->canon, key->ptr[i].via.u64);
	}
	r->relid = (uint32_t)a[1].via.u64;
	dmf_relation *rel = dmf_find(r, r->relid);
	if (rel == NULL) {
		if (r->nrels == r->relcap) {
			r->relcap = r->relcap ? 2 * r->relcap : 16;
			r->rels = dm_xrealloc(r->rels, r->relcap * sizeof *r->rels);
		}
		rel = &r->rels[r->nrels++];
		rel->relid = r->relid;
	}
	rel->nkey = key->size;
	return 0;
}

/* A change: [op, relid, k1, ..., kK], K the key count of the relation message before it. */
static int
dmf_read_change(dmf_reader *r, const msgpack_object *a, size_t n)
{
	if (n < 3 || !dmf_is_uint(&a[1], UINT32_MAX))
		return dmf_bad(r, "malformed change message");
	r->relid = (uint32_t)a[1].via.u64;
	const dmf_relation *rel = dmf_find(r, r->relid);
	if (rel == NULL)
		return dmf_bad(r, "a change of a relation no relation message described");
	if (n - 2 != rel->nkey)
		return dmf_bad(r, "a change's key count differs from its relation's");
	if (r->keycap < rel->nkey) {
		r->keycap = rel->nkey;
		r->keys = dm_xrealloc(r->keys, r->keycap * sizeof *r->keys);
	}
	r->nkey = rel->nkey;
	char op = (char)r->type;
	dm_buf_append(&r->canon, &op, 1);
	dmf_canon_u64(&r->canon, r->relid);
	for (size_t i = 0; i < r->nkey; i++) {
		if (!dmf_is_str(&a[2 + i]))
			return dmf_bad(r, "a key value is not a str (nil is never a key)");
		r->keys[i].ptr = a[2 + i].via.str.ptr;
		r->keys[i].len = a[2 + i].via.str.size;
		r->keys[i].kind = DM_TEXT;
	}
	dms_canon_append(&r->canon, r->keys, r->nkey);
	return 0;
}

static int
dmf_read_commit(dmf_reader *r, const msgpack_object *a, size_t n)
{
	if (n != 5 || !dmf_is_str(&a[1]) || !dmf_is_str(&a[2]) || !dmf_is_str(&a[3]) || !dmf_is_uint(&a[4], UINT32_MAX))
		return dmf_bad(r, "malformed commit message");
	char op = DMF_COMMIT;
	dm_buf_append(&r->canon, &op, 1);
	for (int i = 1; i <= 3; i++)
		dmf_canon_obj(&r->canon, &a[i]);
	dmf_canon_u64(&r->canon, a[4].via.u64);
	free(r->last_lsn);
	r->last_lsn = dmf_str(&a[2]);
	if (r->last_lsn == NULL)
		return dmf_bad(r, "malformed commit message");
	return 0;
}

/* A sync point or the trailer: 2 verified sync point, 0 verified trailer, -1 invalid. */
static int
dmf_read_map(dmf_reader *r, const msgpack_object *o)
{
	int end = 0, have_sum = 0, have_count = 0, is_sync = 0, have_last = 0;
	uint64_t count = 0;
	XXH64_canonical_t want, got;
	char *last = NULL;

	for (uint32_t i = 0; i < o->via.map.size; i++) {
		const msgpack_object *k = &o->via.map.ptr[i].key, *v = &o->via.map.ptr[i].val;
		if (dmf_key_is(k, "end")) {
			end = v->type == MSGPACK_OBJECT_BOOLEAN && v->via.boolean;
		} else if (dmf_key_is(k, "sync") || dmf_key_is(k, "messages")) {
			if (v->type != MSGPACK_OBJECT_POSITIVE_INTEGER)
				goto bad;
			is_sync |= dmf_key_is(k, "sync");
			count = v->via.u64;
			have_count = 1;
		} else if (dmf_key_is(k, "checksum")) {
			if (v->type != MSGPACK_OBJECT_BIN || v->via.bin.size != sizeof want.digest)
				goto bad;
			memcpy(want.digest, v->via.bin.ptr, sizeof want.digest);
			have_sum = 1;
		} else if (dmf_key_is(k, "last_lsn")) {
			free(last);
			last = NULL;
			if (v->type != MSGPACK_OBJECT_NIL && (last = dmf_str(v)) == NULL)
				goto bad;
			have_last = 1;
		}
	}
	if (!have_sum || !have_count || is_sync == end || (end && !have_last))
		goto bad;
	if (count != r->messages) {
		dm_err("%s: invalid feed: %s counts %" PRIu64 " messages, the feed has %" PRIu64, r->name,
		    is_sync ? "a sync point" : "the trailer", count, r->messages);
		free(last);
		return -1;
	}
	if (end) {
		const char *mine = r->last_lsn;
		if ((last == NULL) != (mine == NULL) || (last && strcmp(last, mine) != 0)) {
			free(last);
			return dmf_bad(r, "the trailer's last_lsn is not the last commit's");
		}
		dmf_canon_cstr(&r->canon, last);
		XXH3_64bits_update(r->sum, r->canon.data, r->canon.len);
		r->canon.len = 0;
	}
	free(last);
	XXH64_canonicalFromHash(&got, XXH3_64bits_digest(r->sum));
	if (memcmp(got.digest, want.digest, sizeof got.digest) != 0)
		return dmf_bad(r, "checksum mismatch (corrupted data)");
	if (end) {
		r->done = 1;
		return 0;
	}
	return 2;
bad:
	free(last);
	return dmf_bad(r, is_sync ? "malformed sync point" : "malformed trailer");
}

int
dmf_reader_next(dmf_reader *r)
{
	if (r->done)
		return 0;
	int got = dmf_next_frame(r);
	if (got == 0)
		return dmf_bad(r, "truncated: no trailer (the decoder stopped before the end)");
	if (got < 0)
		return -1;
	const msgpack_object *o = &r->msg.data;
	r->obj = o;
	if (o->type == MSGPACK_OBJECT_MAP) {
		int rc = dmf_read_map(r, o);
		if (rc == 0) {
			/* Nothing may follow the trailer. */
			r->start += r->frame;
			r->frame = 0;
			int more = dmf_next_frame(r);
			if (more != 0)
				return more < 0 ? -1 : dmf_bad(r, "data after the trailer");
		}
		return rc;
	}
	if (o->type != MSGPACK_OBJECT_ARRAY || o->via.array.size < 1 || !dmf_is_uint(&o->via.array.ptr[0], 255))
		return dmf_bad(r, "a message is neither an array of a known type nor a map");
	const msgpack_object *a = o->via.array.ptr;
	size_t n = o->via.array.size;
	r->type = (int)a[0].via.u64;
	r->canon.len = 0;
	int rc;
	switch (r->type) {
	case DMF_INSERT: case DMF_UPDATE: case DMF_DELETE: rc = dmf_read_change(r, a, n); break;
	case DMF_RELATION: rc = dmf_read_relation(r, a, n); break;
	case DMF_COMMIT: rc = dmf_read_commit(r, a, n); break;
	default: return dmf_bad(r, "a message of unknown type");
	}
	if (rc < 0)
		return -1;
	XXH3_64bits_update(r->sum, r->canon.data, r->canon.len);
	r->canon.len = 0;
	r->messages++;
	return 1;
}

void
dmf_reader_free(dmf_reader *r)
{
	if (r == NULL)
		return;
	msgpack_unpacked_destroy(&r->msg);
	XXH3_freeState(r->sum);
	free(r->name);
	free(r->buf);
	free(r->slot);
	free(r->publication);
	free(r->start_lsn);
	free(r->rels);
	free(r->last_lsn);
	free(r->keys);
	dm_buf_free(&r->canon);
	memset(r, 0, sizeof *r);
}
