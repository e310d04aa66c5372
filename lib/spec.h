/*
 * spec.h - the spec file (dm.conf(5)): how legacy tables map onto a
 * redesigned destination. Plain INI, one [entity NAME] section per entity,
 * every item remembered with its line so errors can say file:line.
 */
#ifndef DM_SPEC_H
#define DM_SPEC_H

#include "dm.h"

typedef enum {
	DMSPEC_COLUMN,		/* dest = a source column */
	DMSPEC_EXPR,		/* dest = an SQL expression over the source row (expr, const) */
	DMSPEC_REF		/* dest = the UUID of another entity's row, from a source column */
} dmspec_kind;

typedef struct dmspec_col {
	char *dest;
	dmspec_kind kind;
	char *value;		/* source column, SQL expression, or the referencing source column(s) */
	char *ref_entity;	/* DMSPEC_REF: the entity referenced */
	int line;
} dmspec_col;

typedef struct dmspec_entity {
	char *name;
	int line;
	char *source;		/* schema.table */
	char *query;		/* or a SELECT */
	char *where;
	char *target;		/* schema.table in the destination */
	char **key;		/* legacy key columns of the source */
	size_t nkey;
	char *uuid_col;		/* destination column that receives the entity's UUID */
	char *legacy_col;	/* destination column that keeps the legacy key, or NULL (ledger) */
	char *change_column;	/* NULL: the default (updated_at, last_update) */
	int no_change_column;	/* change_column = none */
	dmspec_col *cols;
	size_t ncols;
	char **exclude;
	size_t nexclude;
	int where_line;		/* lines of where and query, for messages */
	int query_line;
} dmspec_entity;

typedef struct dmspec {
	char *path;
	unsigned char ns[16];	/* UUID version 5 namespace */
	int have_ns;
	int ns_line;
	char *source_timezone;	/* legacy timestamp without time zone values were written in it */
	dmspec_entity *ents;
	size_t nents;
} dmspec;

/* Reads and checks a spec file. 0, or -1 after printing "file:line: what: fix". */
int dmspec_load(const char *path, dmspec *spec);
void dmspec_free(dmspec *spec);
const dmspec_entity *dmspec_find(const dmspec *spec, const char *name);

/*
 * UUID version 5 (RFC 4122, SHA-1) of name in namespace ns, as the 36
 * characters PostgreSQL prints, NUL-terminated in out[37].
 */
int dmspec_uuid5(const unsigned char ns[16], const char *name, size_t len, char out[37]);
/*
 * The name a legacy key gets hashed under, appended to out: "ENTITY:k1" for
 * one value, as is; for several, "ENTITY:k1,k2" with each backslash and comma
 * inside a value preceded by a backslash, so that ("a,b", "c") and
 * ("a", "b,c") differ. Keys without either character keep the plain join.
 * dmmap_key_text builds the same text in SQL.
 */
void dmspec_uuid_name(dm_buf *out, const char *entity, const dm_value *keys, size_t nkey);

#endif
