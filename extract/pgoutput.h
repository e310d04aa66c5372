/*
 * pgoutput.h - the messages of PostgreSQL's streaming replication (XLogData,
 * keepalive, standby status) and of the pgoutput plugin, protocol version 1,
 * parsed from bytes. No libpq here: dm-decode hands it what PQgetCopyData
 * returned, a fuzzer hands it anything.
 */
#ifndef DM_PGOUTPUT_H
#define DM_PGOUTPUT_H

#include "dm.h"

#include <stdint.h>

/* Microseconds between the Unix epoch and PostgreSQL's (2000-01-01 UTC). */
#define DMPGO_EPOCH_OFFSET_US INT64_C(946684800000000)

/* A CopyData message of the replication stream. */
typedef struct dmpgo_copydata {
	char kind;		/* 'w' XLogData, 'k' primary keepalive */
	uint64_t wal_start;	/* 'w': where the data starts */
	uint64_t wal_end;	/* the server's WAL end (its sent position) */
	int64_t send_time;	/* microseconds since 2000-01-01 */
	int reply;		/* 'k': the server asks for a status update now */
	const char *data;	/* 'w': the pgoutput message, inside the CopyData */
	size_t len;
} dmpgo_copydata;

/* Splits a CopyData message; 0, or -1 with *why set (malformed or unknown). */
int dmpgo_copydata_parse(const char *buf, size_t len, dmpgo_copydata *cd, const char **why);

/* Writes a standby status update ('r') into out[34]; returns its length. */
size_t dmpgo_status_update(char out[34], uint64_t write, uint64_t flush, uint64_t apply,
    int64_t now_pg_us, int reply);

/* One column of a Relation message. */
typedef struct dmpgo_column {
	char *name;
	uint32_t type;		/* pg_type oid */
	int32_t typmod;
	int key;		/* part of the replica identity */
} dmpgo_column;

/* A relation as pgoutput describes it. Owned; dmpgo_relation_free. */
typedef struct dmpgo_relation {
	uint32_t relid;
	char *nspname;		/* "" for pg_catalog, as pgoutput sends it */
	char *relname;
	char ident;		/* relreplident: d default, n nothing, f full, i index */
	size_t ncols;
	dmpgo_column *cols;
	size_t nkey;		/* columns with key set */
} dmpgo_relation;

void dmpgo_relation_free(dmpgo_relation *r);

/* TupleData: one value per column, pointing into the message. */
typedef struct dmpgo_tuple {
	size_t ncols;
	char *kinds;		/* 'n' null, 'u' unchanged TOAST, 't' text, 'b' binary */
	dm_value *vals;		/* text and binary values; DM_NULL otherwise */
} dmpgo_tuple;

/* A parsed pgoutput message. Values point into the buffer it was parsed from. */
typedef struct dmpgo_msg {
	char type;		/* B C R I U D T Y O M */
	/* B: final_lsn, commit_time, xid; C: commit_lsn, end_lsn, commit_time */
	uint64_t final_lsn, commit_lsn, end_lsn;
	int64_t commit_time;	/* microseconds since 2000-01-01 */
	uint32_t xid;
	uint32_t relid;		/* I U D */
	dmpgo_relation rel;	/* R: owned by the message until dmpgo_relcache_put takes it */
	char old_kind;		/* U D: 'K' key, 'O' old row, 0 none */
	dmpgo_tuple oldt, newt;
	size_t ntrunc;		/* T */
	uint32_t *trunc;
	uint8_t trunc_flags;
} dmpgo_msg;

void dmpgo_msg_init(dmpgo_msg *m);
/* Releases what the last parse allocated; accepts NULL. The message can be parsed into again. */
void dmpgo_msg_free(dmpgo_msg *m);
/*
 * Parses one pgoutput message (protocol version 1) into m, freeing what m
 * held. 0, or -1 with *why set: a message of unknown type, one that ends
 * early, or one with bytes left over.
 */
int dmpgo_parse(const char *buf, size_t len, dmpgo_msg *m, const char **why);

/* The relations seen so far, by relid. */
typedef struct dmpgo_relcache {
	size_t n, cap;
	dmpgo_relation *rels;
} dmpgo_relcache;

/* Takes m->rel (a Relation message's), replacing an older one of that relid; returns it. */
dmpgo_relation *dmpgo_relcache_put(dmpgo_relcache *c, dmpgo_msg *m);
dmpgo_relation *dmpgo_relcache_get(const dmpgo_relcache *c, uint32_t relid);
void dmpgo_relcache_free(dmpgo_relcache *c);

/*
 * The key values of tuple t of relation r into keys[r->nkey], in column
 * order. 0, or -1 with *why set when t does not fit r or a key value is
 * NULL or unchanged TOAST (not sent).
 */
int dmpgo_tuple_key(const dmpgo_relation *r, const dmpgo_tuple *t, dm_value *keys, const char **why);

/* The LSN as PostgreSQL prints it ("16/B374D848"); out needs 18 bytes. */
void dmpgo_lsn_text(uint64_t lsn, char out[18]);
/* Parses "X/X"; 0, or -1 when it is not an LSN. */
int dmpgo_lsn_parse(const char *s, uint64_t *lsn);
/* A pgoutput timestamp as timestamptz's text under TimeZone UTC, DateStyle ISO; out needs 40 bytes. */
void dmpgo_time_text(int64_t pg_us, char out[40]);

#endif
