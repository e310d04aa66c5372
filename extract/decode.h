/*
 * decode.h - what dm-decode's files share: its options, the preflight
 * checks of the source, and the follow loop (follow.c).
 */
#ifndef DM_DECODE_H
#define DM_DECODE_H

#include "pg.h"

#include <signal.h>

typedef struct decode_opts {
	const char *conninfo;		/* the source */
	const char *dest_conninfo;	/* the destination (dm.follow), or NULL */
	const char *slot;
	const char *publication;
	const char *tables;		/* --create: comma list of SCHEMA.TABLE, or NULL */
	uint64_t until_lsn;		/* 0: none */
	uint64_t until_idle_ms;		/* 0: none */
	uint64_t wait_s;		/* how long a busy slot is waited for */
	int drop_publication;
} decode_opts;

/* Set by SIGTERM and SIGINT: finish the message at hand, write the trailer, exit 0. */
extern volatile sig_atomic_t decode_stop;

/*
 * What every mode but --status needs of the source: wal_level logical, a
 * role with REPLICATION. 0, or -1 after saying what to ask the
 * administrator for.
 */
int decode_preflight(PGconn *src);
/*
 * Waits up to wait_s seconds for no process to hold the slot (a follower
 * just stopped lets go a moment later). 0 free, 1 still held (message
 * printed, exit 6), -1 error printed (no such slot: how to create it).
 * On success *confirmed gets the slot's confirmed_flush_lsn (malloc'd).
 */
int decode_slot_free(PGconn *src, const decode_opts *o, char **confirmed);
/*
 * Checks every table of the publication has a key dm can follow: a primary
 * key or a replica identity index. 0, or -1 after naming the table and the fix.
 */
int decode_check_identity(PGconn *src, const char *publication);
/* Turns a refused replication connection into what to ask the administrator for. */
void decode_explain_refusal(PGconn *src);

/* The follow mode: writes the change feed on stdout. Returns an exit code. */
int decode_follow(const decode_opts *o);

#endif
