/*
 * feed.h - the change feed (dm-stream(5), "Change feeds"): what dm-decode
 * writes while it follows the source by logical decoding. A header, then
 * relation, change and commit messages, a sync point after every commit,
 * and a trailer; MessagePack, checksummed like the row streams.
 */
#ifndef DM_FEED_H
#define DM_FEED_H

#include "dm.h"

#include <msgpack.h>
#include <xxhash.h>

#define DMF_VERSION 1

/* Message types: the first element of every message array. */
enum { DMF_INSERT = 0, DMF_UPDATE = 1, DMF_DELETE = 2, DMF_RELATION = 3, DMF_COMMIT = 9 };

/* --- writer --- */

typedef struct dmf_writer {
	FILE *fp;
	msgpack_packer pk;	/* writes through fp's buffer */
	XXH3_state_t *sum;
	dm_buf canon;		/* scratch for one message's canonical encoding */
	uint64_t messages;
	char last_lsn[18];	/* end LSN of the last commit written, "" before one */
	int err;		/* errno of the first failed write */
} dmf_writer;

/* Starts a feed on fp (not owned) and writes the header. */
void dmf_writer_open(dmf_writer *w, FILE *fp, const char *slot, const char *publication, const char *start_lsn);
/* A relation: its name ("schema.table"), columns (names, types) and key column indexes. */
void dmf_writer_relation(dmf_writer *w, uint32_t relid, const char *name, size_t ncols,
    const char *const *names, const char *const *types, size_t nkey, const size_t *key);
/* An insert, update or delete of the row with these key values (text, never NULL). */
void dmf_writer_change(dmf_writer *w, int op, uint32_t relid, const dm_value *keys, size_t nkey);
/*
 * The commit of the changes written since the last one, then a sync point
 * vouching for everything so far, then a flush: a reader may act on the
 * transaction as soon as it has it. 0, or -1 when a write failed (errno in err).
 */
int dmf_writer_commit(dmf_writer *w, const char *commit_lsn, const char *end_lsn, const char *time, uint32_t xid);
/* Writes the trailer and flushes; 0, or -1 after printing the write error. */
int dmf_writer_finish(dmf_writer *w);
/* Accepts NULL and a zeroed writer; does not close fp. */
void dmf_writer_free(dmf_writer *w);

/* --- reader --- */

typedef struct dmf_relation {
	uint32_t relid;
	size_t nkey;
} dmf_relation;

typedef struct dmf_reader {
	FILE *fp;
	char *name;		/* for messages */
	char *buf;		/* a window over the input: one framed message at a time */
	size_t cap, start, end, frame;
	int eof;
	msgpack_unpacked msg;
	XXH3_state_t *sum;
	dm_buf canon;
	/* the header */
	char *slot, *publication, *start_lsn;
	/* the relations seen, to check each change against */
	dmf_relation *rels;
	size_t nrels, relcap;
	uint64_t messages;
	char *last_lsn;		/* end LSN of the last commit read, or NULL */
	int done;		/* the trailer was read and verified */
	int probing;		/* opening: not known to be a feed yet, so errors are not ours to print */
	/* the current message, pointing into msg (valid until the next call) */
	int type;
	uint32_t relid;
	const msgpack_object *obj;	/* the whole message array */
	size_t nkey;
	dm_value *keys;		/* a change's key values */
	size_t keycap;
} dmf_reader;

/*
 * Opens a reader on fp (not owned), the first prelen bytes of the input
 * being pre (already read by someone else; may be NULL), and reads the
 * header. 0: a feed; 1: not a feed (nothing printed: the caller may read
 * it as a row stream, with dms_reader_open_pre and dmf_reader_taken, whose
 * reader says what is wrong with it); -1 after printing why a feed's
 * header is invalid.
 */
int dmf_reader_open(dmf_reader *r, FILE *fp, const char *name);
/* The bytes read so far, for a caller that found a row stream: *len bytes at the result. */
const char *dmf_reader_taken(const dmf_reader *r, size_t *len);
/*
 * Reads the next message: 1 with it in type (and relid, keys...), 2 at a
 * verified sync point, 0 at the verified trailer, -1 after printing why the
 * feed is invalid or truncated.
 */
int dmf_reader_next(dmf_reader *r);
/* Accepts NULL and a zeroed reader. Does not close fp. */
void dmf_reader_free(dmf_reader *r);

#endif
