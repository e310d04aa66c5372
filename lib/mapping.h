/*
 * mapping.h - one spec entity resolved against both catalogs: which
 * destination columns it fills, from what SQL over the source row, in an
 * order both sides agree on. dm-extract builds both sides' streams from it,
 * dm-entities runs it as the preflight.
 */
#ifndef DM_MAPPING_H
#define DM_MAPPING_H

#include "pg.h"
#include "spec.h"

/* Legacy key columns travel first in a mapped stream, under these names. */
#define DMMAP_LEGACY_PREFIX "dm:legacy:"

typedef enum {
	DMMAP_EXPR,		/* SQL over the source row */
	DMMAP_UUID,		/* the entity's own UUID, from its legacy key */
	DMMAP_REF		/* another entity's UUID, from the legacy key in some source columns */
} dmmap_kind;

typedef struct dmmap_col {
	const char *dest;	/* points into the destination catalog */
	const char *dest_type;
	int dest_is_bytea;
	dmmap_kind kind;
	char *source_sql;	/* over alias s; for UUID and REF: the legacy key as text */
	const char *ref_entity;
	int line;
} dmmap_col;

typedef struct dmmap {
	const dmspec *spec;
	const dmspec_entity *e;
	dmpg_table src;		/* the source table or query */
	dmpg_table dst;		/* the target table */
	char *source_from;	/* "schema"."table" s, or (query) s */
	size_t nkey;
	char **key_names;	/* "dm:legacy:COL" */
	char **key_sql;		/* (s."COL")::text */
	dmmap_col *cols;	/* in the destination's column order */
	size_t ncols;
	int change_src;		/* index into src.cols, or -1 */
	int legacy_dst;		/* index into dst.cols of legacy_key, or -1 */
	int pk_dst;		/* index into dst.cols of the single-column primary key */
} dmmap;

/*
 * Resolves entity e of spec against the source (src) and destination (dst)
 * catalogs, inside transactions the caller opened. Reports every problem it
 * finds as "file:line: ..." and returns -1 if there was any.
 */
int dmmap_build(PGconn *src, PGconn *dst, const dmspec *spec, const dmspec_entity *e, dmmap *m);
void dmmap_free(dmmap *m);

/* "alias"."col", the column quoted by libpq. Returns a new string. */
char *dmmap_col_sql(PGconn *conn, const char *alias, const char *col);

/*
 * The key set of dm-extract --keys travels in the transaction's setting
 * dm.keys as a JSON array of arrays of key texts, never in the SQL text;
 * this FROM item turns it into rows of k, one jsonb array per key.
 */
#define DMMAP_KEYS_FROM \
	" FROM pg_catalog.jsonb_array_elements(pg_catalog.current_setting('dm.keys')::pg_catalog.jsonb) dm_keys(k)"
/*
 * The SQL that reads the source side: key text, then every column; ordered
 * by key. since_cond (or NULL) is a further condition on alias s; keyed
 * keeps only the legacy keys in dm.keys, compared in the source columns'
 * own types so that their index serves. Returns a new string.
 */
char *dmmap_source_sql(PGconn *src, const dmmap *m, const char *since_cond, int keyed);
/*
 * The SQL that reads the destination side, in the same shape; keyed as above;
 * cond (or NULL) a further condition, on alias t and, when the legacy key is
 * no column of the table, on the ledger's alias l.
 */
char *dmmap_dest_sql(PGconn *dst, const dmmap *m, int keyed, const char *cond);

#endif
