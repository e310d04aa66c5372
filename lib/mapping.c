/* mapping.c - a spec entity against both catalogs. */
#define _POSIX_C_SOURCE 200809L
#include "mapping.h"

#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static int dmmap_bad(const dmmap *m, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
dmmap_bad(const dmmap *m, int line, const char *fmt, ...)
{
	char msg[768];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dm_err("%s:%d: %s", m->spec->path, line, msg);
	return -1;
}

char *
dmmap_col_sql(PGconn *conn, const char *alias, const char *col)
{
	char *q = dmpg_ident(conn, col);
	char *s = dm_xasprintf("%s.%s", alias, q);

	free(q);
	return s;
}

/*
 * The legacy key as the text dmspec_uuid_name hashes, over alias s:
 * "(a)::text" for one column; for several, NULL if any is NULL, else the
 * values with each backslash and comma preceded by a backslash, joined with
 * commas, so that no two keys share a name. The two must agree byte for
 * byte: test-spec pins the format, spec.bats this SQL. E'' literals mean the
 * same whatever standard_conforming_strings says. Returns a new string.
 */
static char *
dmmap_key_text(PGconn *conn, char **cols, size_t n)
{
	dm_buf b = { 0 };

	if (n == 1) {
		char *c = dmmap_col_sql(conn, "s", cols[0]);
		dm_buf_printf(&b, "(%s)::pg_catalog.text", c);
		free(c);
		return (char *)dm_buf_cstr(&b);
	}
	dm_buf_puts(&b, "CASE WHEN ");
	for (size_t i = 0; i < n; i++) {
		char *c = dmmap_col_sql(conn, "s", cols[i]);
		dm_buf_printf(&b, "%s%s IS NULL", i ? " OR " : "", c);
		free(c);
	}
	dm_buf_puts(&b, " THEN NULL ELSE ");
	for (size_t i = 0; i < n; i++) {
		char *c = dmmap_col_sql(conn, "s", cols[i]);
		dm_buf_printf(&b, "%spg_catalog.replace(pg_catalog.replace((%s)::pg_catalog.text,"
		    " E'\\\\', E'\\\\\\\\'), ',', E'\\\\,')", i ? " || ',' || " : "", c);
		free(c);
	}
	dm_buf_puts(&b, " END");
	return (char *)dm_buf_cstr(&b);
}

static int
dmmap_excluded(const dmspec_entity *e, const char *name)
{
	for (size_t i = 0; i < e->nexclude; i++)
		if (strcmp(e->exclude[i], name) == 0)
			return 1;
	return 0;
}

/* Can a value of source category sc land in a destination column of category dc? */
static int
dmmap_compatible(char sc, char dc)
{
	return sc == dc || dc == 'S' || (sc == 'S' && dc == 'E') || (sc == 'E' && dc == 'S');
}

/* Describes a probe query on the source; a failure leaves the transaction usable. */
static int
dmmap_probe(PGconn *src, const char *sql, dmpg_table *out)
{
	if (dmpg_run(src, "SAVEPOINT dm_probe") < 0)
		return -1;
	if (dmpg_query_load(src, sql, out) < 0) {
		dmpg_run(src, "ROLLBACK TO SAVEPOINT dm_probe");
		return -1;
	}
	return dmpg_run(src, "RELEASE SAVEPOINT dm_probe");
}

int
dmmap_build(PGconn *src, PGconn *dst, const dmspec *spec, const dmspec_entity *e, dmmap *m)
{
	char *schema = NULL, *name = NULL;
	int bad = 0;

	memset(m, 0, sizeof *m);
	m->spec = spec;
	m->e = e;
	m->change_src = m->legacy_dst = m->pk_dst = -1;

	/* the two sides' descriptions */
	if (e->source != NULL) {
		dm_split_table(e->source, &schema, &name);
		if (dmpg_table_load(src, schema, name, e->nkey == 0, &m->src) < 0)
			return dmmap_bad(m, e->line, "entity %s: source %s cannot be used (see above)", e->name, e->source);
		m->source_from = dm_xasprintf("%s%s s", m->src.relkind == 'r' ? "ONLY " : "", m->src.qualified);
		free(schema);
		free(name);
	} else {
		if (dmpg_query_load(src, e->query, &m->src) < 0)
			return dmmap_bad(m, e->query_line, "entity %s: its query fails on the source (see above)", e->name);
		m->source_from = dm_xasprintf("(%s) s", e->query);
	}
	dm_split_table(e->target, &schema, &name);
	int got = dmpg_table_load(dst, schema, name, 1, &m->dst);
	free(schema);
	free(name);
	if (got < 0)
		return dmmap_bad(m, e->line, "entity %s: target %s cannot be used (see above)", e->name, e->target);
	if (m->dst.nkey == 1)
		m->pk_dst = (int)m->dst.key[0];

	/* legacy key */
	char **keys = e->key;
	size_t nkey = e->nkey;
	char *pk_names[16];
	if (nkey == 0) {
		nkey = m->src.nkey < 16 ? m->src.nkey : 16;
		for (size_t i = 0; i < nkey; i++)
			pk_names[i] = m->src.cols[m->src.key[i]].name;
		keys = pk_names;
	}
	for (size_t i = 0; i < nkey; i++)
		if (dmpg_table_column(&m->src, keys[i]) < 0)
			bad |= dmmap_bad(m, e->line, "entity %s: key column \"%s\" is not in the source", e->name, keys[i]);
	m->nkey = nkey;
	m->key_names = dm_xcalloc(nkey + 1, sizeof *m->key_names);
	m->key_sql = dm_xcalloc(nkey + 1, sizeof *m->key_sql);
	for (size_t i = 0; i < nkey; i++) {
		m->key_names[i] = dm_xasprintf("%s%s", DMMAP_LEGACY_PREFIX, keys[i]);
		m->key_sql[i] = dmmap_key_text(src, &keys[i], 1);
	}

	if (e->where != NULL) {
		char *probe = dm_xasprintf("SELECT 1 FROM %s WHERE (%s)", m->source_from, e->where);
		dmpg_table wt;
		if (dmmap_probe(src, probe, &wt) < 0)
			bad |= dmmap_bad(m, e->where_line, "entity %s: its where condition fails on the source (see above)", e->name);
		else
			dmpg_table_free(&wt);
		free(probe);
	}

	/* the change column */
	if (!e->no_change_column) {
		if (e->change_column != NULL) {
			m->change_src = dmpg_table_column(&m->src, e->change_column);
			if (m->change_src < 0)
				bad |= dmmap_bad(m, e->line, "entity %s: change column \"%s\" is not in the source",
				    e->name, e->change_column);
		} else {
			m->change_src = m->src.change_col;
		}
	}
	for (size_t i = 0; i < e->nexclude; i++)
		if (dmpg_table_column(&m->src, e->exclude[i]) < 0)
			bad |= dmmap_bad(m, e->line, "entity %s: excluded column \"%s\" is not in the source", e->name, e->exclude[i]);

	/* explicit items first, then the defaults, placed in the destination's order */
	dmmap_col *by_dest = dm_xcalloc(m->dst.ncols + 1, sizeof *by_dest);
	int *mapped = dm_xcalloc(m->dst.ncols + 1, sizeof *mapped);
	for (size_t i = 0; i < e->ncols; i++) {
		const dmspec_col *sc = &e->cols[i];
		int d = dmpg_table_column(&m->dst, sc->dest);
		if (d < 0 || m->dst.cols[d].generated) {
			bad |= dmmap_bad(m, sc->line, "%s has no %scolumn \"%s\"", e->target, d < 0 ? "" : "writable ", sc->dest);
			continue;
		}
		dmmap_col *c = &by_dest[d];
		c->line = sc->line;
		if (sc->kind == DMSPEC_COLUMN) {
			int s = dmpg_table_column(&m->src, sc->value);
			if (s < 0) {
				bad |= dmmap_bad(m, sc->line, "the source has no column \"%s\" (entity %s)", sc->value, e->name);
				continue;
			}
			if (!dmmap_compatible(m->src.cols[s].category, m->dst.cols[d].category))
				bad |= dmmap_bad(m, sc->line, "column \"%s\" is %s in the source, \"%s\" is %s in %s: use expr to convert",
				    sc->value, m->src.cols[s].type, sc->dest, m->dst.cols[d].type, e->target);
			c->kind = DMMAP_EXPR;
			c->source_sql = dmmap_col_sql(src, "s", sc->value);
			if (spec->source_timezone && strcmp(m->src.cols[s].type, "timestamp without time zone") == 0 &&
			    strcmp(m->dst.cols[d].type, "timestamp with time zone") == 0) {
				char *t = dm_xasprintf("(%s AT TIME ZONE pg_catalog.current_setting('dm.source_tz'))", c->source_sql);
				free(c->source_sql);
				c->source_sql = t;
			}
		} else if (sc->kind == DMSPEC_EXPR) {
			c->kind = DMMAP_EXPR;
			c->source_sql = dm_xasprintf("(%s)", sc->value);
			/*
			 * Preflight the expression on the source now, not mid-run: it must
			 * parse, and its type decides time zone conversion and compatibility.
			 */
			char *probe = dm_xasprintf("SELECT %s FROM %s", c->source_sql, m->source_from);
			dmpg_table et;
			if (dmmap_probe(src, probe, &et) < 0 || et.ncols != 1) {
				bad |= dmmap_bad(m, sc->line, "the expression for \"%s\" fails on the source (see above)", sc->dest);
			} else {
				if (!dmmap_compatible(et.cols[0].category, m->dst.cols[d].category) && et.cols[0].category != 'X')
					bad |= dmmap_bad(m, sc->line, "the expression for \"%s\" is %s, the column is %s in %s",
					    sc->dest, et.cols[0].type, m->dst.cols[d].type, e->target);
				if (spec->source_timezone && strcmp(et.cols[0].type, "timestamp without time zone") == 0 &&
				    strcmp(m->dst.cols[d].type, "timestamp with time zone") == 0) {
					char *t = dm_xasprintf("(%s AT TIME ZONE pg_catalog.current_setting('dm.source_tz'))", c->source_sql);
					free(c->source_sql);
					c->source_sql = t;
				}
				dmpg_table_free(&et);
			}
			free(probe);
		} else {
			char **rcols;
			size_t nr = 0;
			char *copy = dm_xstrdup(sc->value), *save = NULL;
			rcols = dm_xcalloc(16, sizeof *rcols);
			for (char *t = strtok_r(copy, ",", &save); t && nr < 16; t = strtok_r(NULL, ",", &save)) {
				while (*t == ' ')
					t++;
				char *end = t + strlen(t);
				while (end > t && end[-1] == ' ')
					*--end = '\0';
				if (dmpg_table_column(&m->src, t) < 0)
					bad |= dmmap_bad(m, sc->line, "the source has no column \"%s\" (entity %s)", t, e->name);
				rcols[nr++] = t;
			}
			c->kind = DMMAP_REF;
			c->ref_entity = sc->ref_entity;
			c->source_sql = dmmap_key_text(src, rcols, nr);
			if (strcmp(m->dst.cols[d].type, "uuid") != 0)
				bad |= dmmap_bad(m, sc->line, "ref column \"%s\" is %s in %s, not uuid", sc->dest, m->dst.cols[d].type, e->target);
			free(rcols);
			free(copy);
		}
		mapped[d] = 1;
	}
	if (e->uuid_col != NULL) {
		int d = dmpg_table_column(&m->dst, e->uuid_col);
		if (d < 0 || strcmp(m->dst.cols[d].type, "uuid") != 0)
			bad |= dmmap_bad(m, e->line, "entity %s: uuid = %s: %s has no uuid column of that name", e->name,
			    e->uuid_col, e->target);
		else if (mapped[d])
			bad |= dmmap_bad(m, e->line, "entity %s: column \"%s\" is mapped twice", e->name, e->uuid_col);
		else {
			by_dest[d].kind = DMMAP_UUID;
			by_dest[d].source_sql = dmmap_key_text(src, keys, nkey);
			by_dest[d].line = e->line;
			mapped[d] = 1;
		}
	}
	if (e->legacy_col != NULL) {
		int d = dmpg_table_column(&m->dst, e->legacy_col);
		if (d < 0)
			bad |= dmmap_bad(m, e->line, "entity %s: legacy_key = %s: no such column in %s", e->name, e->legacy_col, e->target);
		else if (nkey != 1)
			bad |= dmmap_bad(m, e->line, "entity %s: legacy_key needs a single-column key (the ledger keeps composite ones)", e->name);
		else if (!mapped[d]) {
			by_dest[d].kind = DMMAP_EXPR;
			by_dest[d].source_sql = dmmap_col_sql(src, "s", keys[0]);
			by_dest[d].line = e->line;
			mapped[d] = 1;
			m->legacy_dst = d;
		}
	}
	for (size_t d = 0; d < m->dst.ncols; d++) {
		const dmpg_column *dc = &m->dst.cols[d];
		if (mapped[d] || dc->generated)
			continue;
		int s = dmpg_table_column(&m->src, dc->name);
		if (s >= 0 && !dmmap_excluded(e, dc->name)) {
			if (!dmmap_compatible(m->src.cols[s].category, dc->category)) {
				bad |= dmmap_bad(m, e->line, "entity %s: column \"%s\" is %s in the source and %s in %s: map it with expr, ref or exclude",
				    e->name, dc->name, m->src.cols[s].type, dc->type, e->target);
				continue;
			}
			by_dest[d].kind = DMMAP_EXPR;
			by_dest[d].source_sql = dmmap_col_sql(src, "s", dc->name);
			if (spec->source_timezone && strcmp(m->src.cols[s].type, "timestamp without time zone") == 0 &&
			    strcmp(dc->type, "timestamp with time zone") == 0) {
				char *t = dm_xasprintf("(%s AT TIME ZONE pg_catalog.current_setting('dm.source_tz'))", by_dest[d].source_sql);
				free(by_dest[d].source_sql);
				by_dest[d].source_sql = t;
			}
			by_dest[d].line = e->line;
			mapped[d] = 1;
		} else if (dc->not_null && !dc->has_default) {
			bad |= dmmap_bad(m, e->line, "entity %s: %s.%s is NOT NULL without a default: fill it (column, expr or const)",
			    e->name, e->target, dc->name);
		}
	}
	if (m->pk_dst < 0)
		bad |= dmmap_bad(m, e->line, "entity %s: %s needs a single-column primary key", e->name, e->target);
	else if (!mapped[m->pk_dst])
		bad |= dmmap_bad(m, e->line, "entity %s: the primary key %s of %s is not filled (uuid = %s?)", e->name,
		    m->dst.cols[m->pk_dst].name, e->target, m->dst.cols[m->pk_dst].name);

	/* Foreign keys to tables of mapped entities must be rewritten by ref. */
	const char *tp[1] = { m->dst.qualified };
	PGresult *fk = dmpg_exec_params(dst,
	    "SELECT a.attname, n.nspname || '.' || c.relname FROM pg_catalog.pg_constraint k"
	    " JOIN pg_catalog.pg_class c ON c.oid = k.confrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	    " JOIN pg_catalog.pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = k.conkey[1]"
	    " WHERE k.conrelid = $1::pg_catalog.regclass AND k.contype = 'f' AND pg_catalog.cardinality(k.conkey) = 1",
	    1, tp);
	if (fk == NULL)
		bad = 1;
	for (int r = 0; fk != NULL && r < dmpg_nrows(fk); r++) {
		const char *col = dmpg_value(fk, r, 0), *ref = dmpg_value(fk, r, 1);
		const dmspec_entity *target = NULL;
		for (size_t i = 0; i < spec->nents; i++)
			if (strcmp(spec->ents[i].target, ref) == 0 && spec->ents[i].uuid_col != NULL)
				target = &spec->ents[i];
		if (target == NULL)
			continue;
		int d = dmpg_table_column(&m->dst, col);
		if (d >= 0 && mapped[d] && by_dest[d].kind == DMMAP_REF && strcmp(by_dest[d].ref_entity, target->name) == 0)
			continue;
		if (d >= 0 && !mapped[d] && !m->dst.cols[d].not_null)
			bad |= dmmap_bad(m, e->line, "entity %s: foreign key %s.%s points at %s (entity %s): add \"ref %s = %s(SOURCECOLUMN)\"",
			    e->name, e->target, col, ref, target->name, col, target->name);
		else if (d >= 0 && (!mapped[d] || by_dest[d].kind != DMMAP_REF))
			bad |= dmmap_bad(m, mapped[d] ? by_dest[d].line : e->line,
			    "entity %s: foreign key %s.%s points at %s (entity %s): map it with \"ref %s = %s(SOURCECOLUMN)\"",
			    e->name, e->target, col, ref, target->name, col, target->name);
	}
	dmpg_clear(fk);

	for (size_t d = 0; d < m->dst.ncols; d++)
		if (mapped[d])
			m->ncols++;
	m->cols = dm_xcalloc(m->ncols + 1, sizeof *m->cols);
	size_t k = 0;
	for (size_t d = 0; d < m->dst.ncols; d++) {
		if (!mapped[d]) {
			free(by_dest[d].source_sql);
			continue;
		}
		m->cols[k] = by_dest[d];
		m->cols[k].dest = m->dst.cols[d].name;
		m->cols[k].dest_type = m->dst.cols[d].type;
		m->cols[k].dest_is_bytea = m->dst.cols[d].is_bytea;
		/* One text form on both sides: cast to the destination's type where the source knows it. */
		if (m->cols[k].kind == DMMAP_EXPR) {
			char *cast = dm_xasprintf("(%s)::%s", m->cols[k].source_sql,
			    m->dst.cols[d].builtin ? m->dst.cols[d].type : "pg_catalog.text");
			free(m->cols[k].source_sql);
			m->cols[k].source_sql = cast;
		}
		k++;
	}
	free(by_dest);
	free(mapped);
	return bad ? -1 : 0;
}

void
dmmap_free(dmmap *m)
{
	if (m == NULL)
		return;
	dmpg_table_free(&m->src);
	dmpg_table_free(&m->dst);
	free(m->source_from);
	for (size_t i = 0; i < m->nkey; i++) {
		free(m->key_names[i]);
		free(m->key_sql[i]);
	}
	free(m->key_names);
	free(m->key_sql);
	for (size_t i = 0; i < m->ncols; i++)
		free(m->cols[i].source_sql);
	free(m->cols);
	memset(m, 0, sizeof *m);
}

char *
dmmap_source_sql(PGconn *src, const dmmap *m, const char *since_cond, int keyed)
{
	dm_buf b = { 0 };

	dm_buf_puts(&b, "SELECT ");
	for (size_t i = 0; i < m->nkey; i++)
		dm_buf_printf(&b, "%s%s", i ? ", " : "", m->key_sql[i]);
	for (size_t i = 0; i < m->ncols; i++)
		dm_buf_printf(&b, ", %s", m->cols[i].source_sql);
	if (m->change_src >= 0) {
		char *c = dmmap_col_sql(src, "s", m->src.cols[m->change_src].name);
		dm_buf_printf(&b, ", %s", c);
		free(c);
	}
	dm_buf_printf(&b, " FROM %s", m->source_from);
	int where = 0;
	if (m->e->where != NULL) {
		dm_buf_printf(&b, " WHERE (%s)", m->e->where);
		where = 1;
	}
	if (since_cond != NULL) {
		dm_buf_printf(&b, " %s %s", where ? "AND" : "WHERE", since_cond);
		where = 1;
	}
	if (keyed) {
		dm_buf_printf(&b, " %s (", where ? "AND" : "WHERE");
		for (size_t i = 0; i < m->nkey; i++) {
			char *c = dmmap_col_sql(src, "s", m->key_names[i] + strlen(DMMAP_LEGACY_PREFIX));
			dm_buf_printf(&b, "%s%s", i ? ", " : "", c);
			free(c);
		}
		dm_buf_puts(&b, ") IN (SELECT ");
		for (size_t i = 0; i < m->nkey; i++) {
			int at = dmpg_table_column(&m->src, m->key_names[i] + strlen(DMMAP_LEGACY_PREFIX));
			/* format_type's output: a type name as SQL spells it, safe to splice */
			dm_buf_printf(&b, "%s(dm_keys.k->>%zu)::%s", i ? ", " : "", i, m->src.cols[at].type);
		}
		dm_buf_puts(&b, DMMAP_KEYS_FROM ")");
	}
	dm_buf_puts(&b, " ORDER BY ");
	for (size_t i = 0; i < m->nkey; i++)
		dm_buf_printf(&b, "%s%s COLLATE pg_catalog.\"C\"", i ? ", " : "", m->key_sql[i]);
	return (char *)dm_buf_cstr(&b);
}

char *
dmmap_dest_sql(PGconn *dst, const dmmap *m, int keyed, const char *cond)
{
	dm_buf b = { 0 };
	char *pk = dmmap_col_sql(dst, "t", m->dst.cols[m->pk_dst].name);

	dm_buf_puts(&b, "SELECT ");
	if (m->legacy_dst >= 0) {
		char *l = dmmap_col_sql(dst, "t", m->dst.cols[m->legacy_dst].name);
		dm_buf_printf(&b, "(%s)::pg_catalog.text", l);
		for (size_t i = 0; i < m->ncols; i++) {
			char *c = dmmap_col_sql(dst, "t", m->cols[i].dest);
			dm_buf_printf(&b, ", %s", c);
			free(c);
		}
		dm_buf_printf(&b, " FROM %s t WHERE %s IS NOT NULL", m->dst.qualified, l);
		if (cond != NULL)
			dm_buf_printf(&b, " AND %s", cond);
		if (keyed)
			dm_buf_printf(&b, " AND %s IN (SELECT (dm_keys.k->>0)::%s" DMMAP_KEYS_FROM ")",
			    l, m->dst.cols[m->legacy_dst].type);
		dm_buf_printf(&b, " ORDER BY (%s)::pg_catalog.text COLLATE pg_catalog.\"C\"", l);
		free(l);
	} else {
		for (size_t i = 0; i < m->nkey; i++)
			dm_buf_printf(&b, "%sl.legacy_key[%zu]", i ? ", " : "", i + 1);
		for (size_t i = 0; i < m->ncols; i++) {
			char *c = dmmap_col_sql(dst, "t", m->cols[i].dest);
			dm_buf_printf(&b, ", %s", c);
			free(c);
		}
		/* rows without a ledger entry were made in the new system: never ours to touch */
		dm_buf_printf(&b, " FROM %s t JOIN dm.ledger l ON l.entity = pg_catalog.current_setting('dm.entity')"
		    " AND l.dest_key = (%s)::pg_catalog.text", m->dst.qualified, pk);
		if (cond != NULL)
			dm_buf_printf(&b, " WHERE %s", cond);
		if (keyed)
			dm_buf_printf(&b, " %s l.legacy_key IN (SELECT ARRAY("
			    "SELECT pg_catalog.jsonb_array_elements_text(dm_keys.k))" DMMAP_KEYS_FROM ")",
			    cond != NULL ? "AND" : "WHERE");
		dm_buf_puts(&b, " ORDER BY ");
		for (size_t i = 0; i < m->nkey; i++)
			dm_buf_printf(&b, "%sl.legacy_key[%zu] COLLATE pg_catalog.\"C\"", i ? ", " : "", i + 1);
	}
	free(pk);
	return (char *)dm_buf_cstr(&b);
}
