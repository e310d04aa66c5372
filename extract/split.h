/*
 * split.h - dm-entities --split and --split-rows: ranges of an entity's key,
 * so that several pipelines, or several machines, copy and compare one table
 * at once, each range with its own checkpoint and lease.
 */
#ifndef DM_SPLIT_H
#define DM_SPLIT_H

#include <stdio.h>

#include "pg.h"

/* One entity to split, as dm-entities found it. Nothing owned. */
typedef struct dmsplit_req {
	const char *entity;
	const char *schema, *table;	/* its source table; NULL for a spec query */
	const char *col, *type;		/* the first column of its (legacy) key, its source type */
	const char *why_not;		/* NULL, or why it is loaded whole (a cycle, a self reference) */
	long long est_src, est_dst;	/* the planner's row estimates, -1 unknown */
	int parts;			/* --split N for it, or 0: only what --split-rows decides */
} dmsplit_req;

/*
 * The ranges of one entity: those stored in the destination's dm.partition
 * when it was split before (the same every run, on every machine); else,
 * with r->parts, or when split_rows > 0 and its source holds at least that
 * many rows while its destination already holds some (a first load is one
 * bulk load), new ones: min(split_max, rows / split_rows, rounded up) of
 * them, at least 2, from the source's statistics of the key column (its
 * histogram, or one ordered read of the column when it has none), stored
 * first. Prints each as "range ENTITY I N FROM BEFORE" (tab separated; a
 * bound is "-" when open, else "=" and its value in COPY text form) on out; nothing when the
 * entity stays whole. The ranges tile the keys: FROM is the BEFORE of the
 * range before it, the first is open below, the last open above, and the
 * bounds ascend under dm-extract --key-from's ordering (the "C" collation for
 * collatable types). Runs its own transactions. 0, or -1 (logged).
 */
int dmsplit_entity(PGconn *src, PGconn *dst, const dmsplit_req *r, long long split_rows, int split_max, FILE *out);

#endif
