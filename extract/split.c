/*
 * split.c - dm-entities: key ranges of the largest entities (split.h).
 *
 * The ranges are computed once, from the source's statistics, and kept in the
 * destination's dm.partition: every later run, on any machine, reads the same
 * ranges, so that a range's checkpoint always covers the same keys.
 */
#include "split.h"

#include "copytext.h"
#include "state.h"

#include <stdlib.h>
#include <string.h>

/* Advisory lock class of dm.partition (dmstate_ensure's DDL lock is the single key 7132475). */
#define SPLIT_LOCK_CLASS "7132476"

/* A number the catalog printed (a part, a count): -1 if it is none. */
static int
split_int(const char *s)
{
	uint64_t v;

	return dm_parse_u64(s, &v) == 0 && v < 1000000 ? (int)v : -1;
}

/*
 * Prints one range line; each bound "-" when open, else "=" and the value in
 * COPY text form (no field is ever empty: a shell's read keeps them apart).
 */
static void
split_print(FILE *out, const char *entity, int part, int parts, const char *from, const char *before)
{
	dm_buf b = { 0 };
	const char *bound[2] = { from, before };

	dm_buf_printf(&b, "range\t%s\t%d\t%d", entity, part, parts);
	for (int i = 0; i < 2; i++) {
		dm_value v = { bound[i], bound[i] ? (uint32_t)strlen(bound[i]) : 0, DM_TEXT };
		dm_buf_puts(&b, bound[i] ? "\t=" : "\t-");
		if (bound[i])
			dmcopy_append_field(&b, &v);
	}
	dm_buf_puts(&b, "\n");
	fwrite(b.data, 1, b.len, out);
	dm_buf_free(&b);
}

/*
 * The n - 1 inner bounds of r's key, ascending under dm-extract's ordering,
 * read from the source (in a transaction of its own). Returns the result
 * (one text column, n - 1 rows; the caller clears it), or NULL (logged).
 */
static PGresult *
split_bounds(PGconn *src, const dmsplit_req *r, int n)
{
	PGresult *res = NULL, *out = NULL;
	char *sql = NULL, *col = NULL, *tab = NULL;
	char nbuf[16];
	const char *coll;

	snprintf(nbuf, sizeof nbuf, "%d", n);
	if (dmpg_begin(src, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL) < 0)
		return NULL;
	const char *tp[1] = { r->type };
	res = dmpg_exec_params(src, "SELECT (SELECT t.typcollation <> 0 FROM pg_catalog.pg_type t"
	    " WHERE t.oid = $1::pg_catalog.regtype)::pg_catalog.text", 1, tp);
	if (res == NULL)
		goto out;
	coll = strcmp(dmpg_value(res, 0, 0), "true") == 0 ? " COLLATE pg_catalog.\"C\"" : "";
	dmpg_clear(res);
	/*
	 * The histogram's bounds cut the rows into equal shares: n - 1 of them,
	 * evenly spaced, cut the table into n. (type: format_type's spelling.)
	 */
	sql = dm_xasprintf("WITH h AS (SELECT u.b, u.i, pg_catalog.count(*) OVER () AS n"
	    " FROM pg_catalog.unnest((SELECT s.histogram_bounds FROM pg_catalog.pg_stats s"
	    "   WHERE s.schemaname = $1 AND s.tablename = $2 AND s.attname = $3"
	    "   ORDER BY s.inherited DESC LIMIT 1)::pg_catalog.text::%s[]) WITH ORDINALITY AS u(b, i))"
	    " SELECT h.b::pg_catalog.text FROM h JOIN pg_catalog.generate_series(1, $4::pg_catalog.int4 - 1) k"
	    " ON h.i = 1 + pg_catalog.round((h.n - 1) * k::pg_catalog.numeric / $4::pg_catalog.int4)"
	    " ORDER BY h.b%s, k", r->type, coll);
	const char *hp[4] = { r->schema, r->table, r->col, nbuf };
	res = dmpg_exec_params(src, sql, 4, hp);
	if (res == NULL)
		goto out;
	if (dmpg_nrows(res) != n - 1) {
		/* No statistics (never analyzed): the key column read once, in order. */
		dmpg_clear(res);
		res = NULL;
		free(sql);
		col = dmpg_ident(src, r->col);
		char *qs = dmpg_ident(src, r->schema), *qt = dmpg_ident(src, r->table);
		tab = dm_xasprintf("%s.%s", qs, qt);
		free(qs);
		free(qt);
		dm_info("%s has no statistics of column %s (ANALYZE it): reading the column once to split it", tab, col);
		sql = dm_xasprintf("SELECT x.b::pg_catalog.text FROM pg_catalog.unnest((SELECT pg_catalog.percentile_disc("
		    "ARRAY(SELECT k::pg_catalog.float8 / $1::pg_catalog.int4 FROM pg_catalog.generate_series(1, $1::pg_catalog.int4 - 1) k))"
		    " WITHIN GROUP (ORDER BY s.%s%s) FROM %s s)) AS x(b) ORDER BY x.b%s", col, coll, tab, coll);
		const char *pp[1] = { nbuf };
		res = dmpg_exec_params(src, sql, 1, pp);
		if (res == NULL)
			goto out;
		if (dmpg_nrows(res) != n - 1) {
			dm_err("cannot split %s: it has no rows to split", tab);
			goto out;
		}
	}
	if (dmpg_commit(src) < 0)
		goto out;
	out = res;
	res = NULL;
out:
	if (out == NULL)
		dmpg_rollback(src);
	dmpg_clear(res);
	free(sql);
	free(col);
	free(tab);
	return out;
}

int
dmsplit_entity(PGconn *src, PGconn *dst, const dmsplit_req *r, long long split_rows, int split_max, FILE *out)
{
	PGresult *res = NULL, *bounds = NULL;
	int rc = -1, n = r->parts;
	const char *saved = dm_subject;

	dm_subject = r->entity;
	if (dmstate_ensure(dst) < 0 || dmpg_begin(dst, "", NULL) < 0)
		goto out;
	/* two runs deciding at once agree: the second waits, then reads the first one's ranges */
	const char *ep[1] = { r->entity };
	if (dmpg_run_params(dst, "SELECT pg_catalog.pg_advisory_xact_lock(" SPLIT_LOCK_CLASS ", pg_catalog.hashtext($1))",
	    1, ep) < 0)
		goto out;
	res = dmpg_exec_params(dst, "SELECT part::pg_catalog.text, parts::pg_catalog.text, key_from, key_before"
	    " FROM dm.partition WHERE entity = $1 ORDER BY part", 1, ep);
	if (res == NULL)
		goto out;
	if (dmpg_nrows(res) > 0) {
		int stored = split_int(dmpg_value(res, 0, 1));
		for (int i = 0; i < dmpg_nrows(res); i++)
			if (split_int(dmpg_value(res, i, 0)) != i || split_int(dmpg_value(res, i, 1)) != stored ||
			    dmpg_nrows(res) != stored) {
				dm_err("dm.partition holds damaged ranges for it: forget them with dm-ckpt reset %s", r->entity);
				goto out;
			}
		if (n != 0 && n != stored) {
			dm_err("split into %d ranges already, not %d: use I/%d, or forget them with dm-ckpt reset %s",
			    stored, n, stored, r->entity);
			goto out;
		}
		for (int i = 0; i < dmpg_nrows(res); i++)
			split_print(out, r->entity, split_int(dmpg_value(res, i, 0)), stored,
			    dmpg_isnull(res, i, 2) ? NULL : dmpg_value(res, i, 2),
			    dmpg_isnull(res, i, 3) ? NULL : dmpg_value(res, i, 3));
		rc = dmpg_commit(dst);
		goto out;
	}
	if (n == 0) {
		if (split_rows <= 0 || r->est_src < split_rows || r->est_dst <= 0 || r->why_not != NULL ||
		    r->table == NULL) {
			rc = dmpg_commit(dst);
			goto out;
		}
		long long want = (r->est_src + split_rows - 1) / split_rows;
		n = want < split_max ? (int)want : split_max;
		if (n < 2) {
			rc = dmpg_commit(dst);
			goto out;
		}
		dm_info("%lld rows estimated: split into %d ranges of its key", r->est_src, n);
	}
	if (r->why_not != NULL || r->table == NULL) {
		dm_err("cannot be split into ranges: %s", r->why_not ? r->why_not : "its source is a query");
		goto out;
	}
	bounds = split_bounds(src, r, n);
	if (bounds == NULL)
		goto out;
	/* checkpoints of earlier ranges by the same names covered other keys: never trust them */
	if (dmpg_run_params(dst, "DELETE FROM dm.checkpoint WHERE pg_catalog.left(entity, pg_catalog.length($1) + 1) = $1 || '#'",
	    1, ep) < 0)
		goto out;
	char part[16], parts[16];
	snprintf(parts, sizeof parts, "%d", n);
	for (int i = 0; i < n; i++) {
		snprintf(part, sizeof part, "%d", i);
		const char *p[5] = { r->entity, part, parts, i > 0 ? dmpg_value(bounds, i - 1, 0) : NULL,
			i < n - 1 ? dmpg_value(bounds, i, 0) : NULL };
		if (dmpg_run_params(dst, "INSERT INTO dm.partition (entity, part, parts, key_from, key_before)"
		    " VALUES ($1, $2::pg_catalog.int4, $3::pg_catalog.int4, $4, $5)", 5, p) < 0)
			goto out;
	}
	if (dmpg_commit(dst) < 0)
		goto out;
	for (int i = 0; i < n; i++)
		split_print(out, r->entity, i, n, i > 0 ? dmpg_value(bounds, i - 1, 0) : NULL,
		    i < n - 1 ? dmpg_value(bounds, i, 0) : NULL);
	rc = 0;
out:
	if (rc < 0)
		dmpg_rollback(dst);
	dmpg_clear(res);
	dmpg_clear(bounds);
	dm_subject = saved;
	return rc;
}
