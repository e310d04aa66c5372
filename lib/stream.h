/*
 * stream.h - the dm row stream (dm-stream(5)): header, rows, trailer, as
 * MessagePack. One writer and one reader serve every program, so the format
 * is defined in exactly one place.
 */
#ifndef DM_STREAM_H
#define DM_STREAM_H

#include "dm.h"

#include <msgpack.h>
#include <xxhash.h>

#define DMS_VERSION 1
#define DMS_HASH_LEN 16
/* A sync point (running row count and checksum) follows every this many rows. */
#define DMS_SYNC_ROWS 1000

typedef enum { DMS_ROWS = 0, DMS_HASHES = 1, DMS_CHANGES = 2 } dms_kind;
typedef enum { DMS_OP_INSERT = 0, DMS_OP_UPDATE = 1, DMS_OP_DELETE = 2, DMS_OP_NONE = -1 } dms_op;

/* How keys are ordered: integers numerically, everything else by bytes of the text form. */
typedef enum { DMS_KEY_BYTES = 0, DMS_KEY_INT = 1 } dms_keyclass;

typedef struct dms_column {
	char *name;
	char *type;		/* format_type() of the column in the stream's table */
} dms_column;

/* A stream header. Everything in it is owned by it; dms_header_free releases it. */
typedef struct dms_header {
	int version;
	dms_kind kind;
	char *entity;
	char *table;
	size_t ncols;
	dms_column *cols;
	size_t nkey;
	size_t *key;		/* indexes into cols, in key order */
	dms_keyclass *keyclass;	/* one per key column, derived from the type */
	char *since;		/* --since used to read it, or NULL */
	char *change_column;	/* or NULL */
} dms_header;

/* The end of a stream: what a reader verified, what a writer will write. */
typedef struct dms_trailer {
	uint64_t rows;
	char *watermark;	/* largest change-column value seen, or NULL; owned */
} dms_trailer;

void dms_header_init(dms_header *h);
void dms_header_free(dms_header *h);
/* Deep copy of src into dst (dst is overwritten, not freed). */
void dms_header_copy(dms_header *dst, const dms_header *src);
/* Fills keyclass from the key columns' types. Call after setting cols and key. */
void dms_header_classify(dms_header *h);
const char *dms_kind_name(dms_kind k);
dms_keyclass dms_type_keyclass(const char *type);

/*
 * Compares two keys of nkey values each, in stream order. The one order that
 * extraction asks of the server and that dm-diff merges by.
 */
int dms_key_cmp(const dms_keyclass *cls, size_t nkey, const dm_value *a, const dm_value *b);

/*
 * Canonical encoding of values (dm-stream(5)): appended to out. The row hash
 * and the trailer checksum are both computed over it.
 */
void dms_canon_append(dm_buf *out, const dm_value *vals, size_t n);
/* XXH3-128 of the canonical encoding, big-endian into hash[16]. */
void dms_row_hash(const dm_value *vals, size_t n, dm_buf *scratch, unsigned char hash[DMS_HASH_LEN]);

/* Renders a key as text for messages, e.g. "(42)" or "(7,abc)"; appended to out. */
void dms_key_text(dm_buf *out, const dm_value *keys, size_t nkey);

/* --- writer --- */

typedef struct dms_writer {
	FILE *fp;
	msgpack_packer pk;
	dms_kind kind;
	size_t width;		/* values per row message, the op excluded */
	uint64_t rows;
	XXH3_state_t *checksum;
	dm_buf canon;
} dms_writer;

/* Starts a stream on fp (not owned) and writes the header. */
void dms_writer_open(dms_writer *w, FILE *fp, const dms_header *h);
/* Writes one row message. op is DMS_OP_NONE except for changes streams. */
void dms_writer_row(dms_writer *w, int op, const dm_value *vals, size_t n);
/* Writes the trailer and flushes. Returns 0, or -1 after printing a write error. */
int dms_writer_finish(dms_writer *w, const char *watermark);
/* Releases the writer's memory; does not close fp. Accepts NULL. */
void dms_writer_free(dms_writer *w);

/* --- reader --- */

typedef struct dms_reader {
	FILE *fp;
	char *name;		/* for messages: file name or "standard input" */
	/* a sliding window over the input; one whole message is framed at a time */
	char *buf;
	size_t cap, start, end;
	size_t frame;		/* length of the framed message at buf + start */
	int eof;
	msgpack_unpacked msg;	/* header and trailer only: rows are decoded in place */
	dms_header hdr;
	dms_trailer trailer;
	int done;		/* trailer read and verified */
	uint64_t rows;
	uint64_t verified;	/* rows covered by the last verified sync point or trailer */
	int stop_at_sync;	/* return 2 at each verified sync point (dm-load commits there) */
	XXH3_state_t *checksum;
	dm_buf canon;
	/* the current row */
	int op;
	size_t nvals;
	dm_value *vals;		/* points into msg; valid until the next call */
	dm_value *keys;		/* the key values of the current row */
	const unsigned char *hash;	/* hashes streams: the row's hash */
	/* the previous key, copied, to prove the stream is strictly ordered */
	dm_buf prev_data;
	dm_value *prev_keys;
	int have_prev;
} dms_reader;

/*
 * Opens a reader on fp (not owned) and reads the header.
 * Returns 0, or DM_EXIT_STREAM after printing why.
 */
int dms_reader_open(dms_reader *r, FILE *fp, const char *name);
/*
 * Reads the next row. Returns 1 with the row in r->vals/keys/op, 0 at a
 * verified trailer, or -1 after printing why the stream is invalid. With
 * stop_at_sync set, also returns 2 at each verified sync point: every row
 * read so far is then known to be intact.
 */
int dms_reader_next(dms_reader *r);
/* Accepts NULL and a zeroed, never opened reader. Does not close fp. */
void dms_reader_free(dms_reader *r);

#endif
