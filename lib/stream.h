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
/* A writer holding sync points back (dms_writer_hold) holds at most this many bytes. */
#define DMS_HOLD_MAX ((size_t)64 << 20)

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
	/*
	 * dm-extract --key-from/--key-before: the stream holds only the keys in
	 * [key_from, key_before) of its first key column (NULL: open end). Written
	 * as "key_range" only when ranged, so that other streams are unchanged.
	 */
	int ranged;
	char *key_from, *key_before;
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

typedef struct dms_reader dms_reader;

typedef struct dms_writer {
	FILE *fp;
	msgpack_packer pk;	/* header, sync points and trailer, packed into out */
	dms_kind kind;
	size_t width;		/* values per row message, the op excluded */
	uint64_t rows;
	XXH3_state_t *checksum;
	dm_buf canon;		/* canonical encodings of the last rows, not yet in checksum */
	/* encoded bytes not yet handed to fp: rows are encoded here, written in large blocks */
	dm_buf out;
	/*
	 * With hold set (dms_writer_hold), a sync point waits in out, with
	 * everything after it, until dms_writer_vouch: held is the offset of the
	 * first one waiting (SIZE_MAX: none), syncs the offset and length of each.
	 */
	int hold;
	size_t hold_max;	/* DMS_HOLD_MAX, unless a test lowers it */
	size_t held;
	size_t *syncs;
	size_t nsyncs, syncs_cap;
	int err;		/* errno of the first failed write; 0 while none failed */
} dms_writer;

/* Starts a stream on fp (not owned) and writes the header. */
void dms_writer_open(dms_writer *w, FILE *fp, const dms_header *h);
/* Writes one row message. op is DMS_OP_NONE except for changes streams. */
void dms_writer_row(dms_writer *w, int op, const dm_value *vals, size_t n);
/*
 * Writes the row r has just read (its whole row, not a delete's key) as one
 * row message with op: the same as dms_writer_row with r->vals, but copies
 * r's encoded bytes and reuses its canonical encoding instead of redoing both.
 */
void dms_writer_copy(dms_writer *w, int op, const dms_reader *r);
/*
 * For a stream derived from other streams (dm-diff): with on set, each sync
 * point written from now on is held back, with everything after it, until
 * dms_writer_vouch says every row before it derives from verified input. A
 * reader commits at a sync point, so it must never vouch for a row built
 * from input whose own checksum has not been seen yet. When more than
 * DMS_HOLD_MAX bytes wait, the waiting sync points are dropped (the rows
 * go out without them): memory stays bounded, a reader just commits later.
 */
void dms_writer_hold(dms_writer *w, int on);
/* Every row written so far derives from verified input: held sync points may go out. */
void dms_writer_vouch(dms_writer *w);
/*
 * Nonzero once a write to fp has failed (reported by dms_writer_finish).
 * Rows reach fp in blocks of about 1 MiB, and at finish: ferror(fp) and
 * this tell of a failure only once a block was handed over.
 */
int dms_writer_failed(const dms_writer *w);
/*
 * Writes the trailer and flushes. Returns 0, or -1 after printing a write
 * error. The trailer vouches for every row: call it only when all input is
 * verified.
 */
int dms_writer_finish(dms_writer *w, const char *watermark);
/*
 * Releases the writer's memory; does not close fp. Hands fp what was
 * written and vouched for (an unfinished stream stays as far as it got,
 * without anything held back). Accepts NULL and a zeroed writer.
 */
void dms_writer_free(dms_writer *w);

/* --- reader --- */

struct dms_reader {
	FILE *fp;
	char *name;		/* for messages: file name or "standard input" */
	/* a sliding window over the input; one whole message is framed at a time */
	char *buf;
	size_t cap, start, end;
	size_t frame;		/* length of the framed message at buf + start */
	int eof;
	msgpack_unpacked msg;	/* header, sync points and trailer only: rows are decoded in place */
	dms_header hdr;
	dms_trailer trailer;
	int done;		/* trailer read and verified */
	uint64_t rows;
	uint64_t verified;	/* rows covered by the last verified sync point or trailer */
	int stop_at_sync;	/* return 2 at each verified sync point (dm-load commits there) */
	XXH3_state_t *checksum;
	/* the current row */
	int op;
	size_t nvals;
	dm_value *vals;		/* points into buf; valid until the next call */
	dm_value *keys;		/* the key values of the current row */
	const unsigned char *hash;	/* hashes streams: the row's hash */
	/*
	 * Canonical encodings of the last rows, not yet in checksum; the current
	 * row's is the last, from canon_row on (op byte first in a changes stream).
	 */
	dm_buf canon;
	size_t canon_row;
	/* its values as they arrived (NULL if unknown), and whether each used the shortest encoding */
	const char *raw;
	size_t rawlen;
	int raw_shortest;
	/* the previous key, to prove the stream is strictly ordered: in buf, or copied out before buf moves */
	dm_buf prev_data;
	dm_value *prev_keys;
	int have_prev, prev_in_buf;
};

/*
 * Opens a reader on fp (not owned) and reads the header.
 * Returns 0, or DM_EXIT_STREAM after printing why.
 */
int dms_reader_open(dms_reader *r, FILE *fp, const char *name);
/* The same, the first prelen bytes of the input being pre (read by someone else first). */
int dms_reader_open_pre(dms_reader *r, FILE *fp, const char *name, const char *pre, size_t prelen);
/*
 * Length of the MessagePack object at p of which avail bytes arrived, as a
 * dm reader frames it: > 0 whole, 0 more input needed, -1 not of the dm
 * kind (a float, an extension, nesting deeper than 4).
 */
int64_t dms_mp_frame(const unsigned char *p, size_t avail);
/*
 * Reads the next row. Returns 1 with the row in r->vals/keys/op, 0 at a
 * verified trailer, or -1 after printing why the stream is invalid. With
 * stop_at_sync set, also returns 2 at each verified sync point: every row
 * read so far is then known to be intact.
 */
int dms_reader_next(dms_reader *r);
/*
 * The row hash (dm-stream(5)) of the row just read: a hashes stream's own,
 * or computed from the row's canonical encoding.
 */
void dms_reader_row_hash(const dms_reader *r, unsigned char hash[DMS_HASH_LEN]);
/* Accepts NULL and a zeroed, never opened reader. Does not close fp. */
void dms_reader_free(dms_reader *r);

#endif
