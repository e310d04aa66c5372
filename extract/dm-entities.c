/*
 * dm-entities - decide what to migrate and in which order, from both
 * catalogs: every source table that also exists in the destination is an
 * entity; the destination's foreign keys order them, parents first.
 */
#define _POSIX_C_SOURCE 200809L
#include "mapping.h"
#include "pg.h"
#include "split.h"

#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static const char usage_text[] =
    "usage: dm-entities (--source CONNINFO | --source-env VAR) (--dest CONNINFO | --dest-env VAR)\n"
    "                   [-c SPEC] [--follow | --estimates] [--split N | --split-rows ROWS [--split-max N]]\n"
    "                   [-q] [-v] [ENTITY...]\n"
    "\n"
    "Prints the entities to migrate in load order, one per line, tab-separated:\n"
    "LEVEL ENTITY TABLE KEYCOLS CHANGECOL GROUP COLUMNS PARENTS. Lines starting with #\n"
    "explain skipped tables and foreign-key cycles. With -c SPEC (dm.conf(5)) the\n"
    "entities are the spec's, checked against both catalogs first (the preflight);\n"
    "TABLE is then the destination table and COLUMNS is -. With --follow, one line\n"
    "per entity, ENTITY SOURCE HOW: its source table (- for a query) and how\n"
    "dm-migrate follow keeps it in step, keys (by logical decoding) or full: WHY.\n"
    "--estimates adds two fields to each entity line, the planner's row estimates\n"
    "(pg_class.reltuples) of its table in the source and in the destination; -1:\n"
    "never analyzed, or no table to ask (a spec query); and a first comment line,\n"
    "\"# connections free: source N, destination M\", the sessions each server\n"
    "still accepts.\n"
    "\n"
    "Key ranges, so that several pipelines or machines share one table: after the\n"
    "entities, a line \"range ENTITY I N FROM BEFORE\" for each range I of N of a split\n"
    "entity (a bound is - when open, else = and the value, COPY-escaped), read with\n"
    "dm-extract --key-from FROM --key-before BEFORE. Ranges are made once, from the\n"
    "source's statistics of the key's first column, and kept in the destination's\n"
    "dm.partition: every later call prints the same (dm-ckpt reset ENTITY forgets\n"
    "them). A table in a foreign-key cycle or that references itself is never split.\n"
    "  --split N          split the ENTITY... named into N ranges (1 to 1024), or\n"
    "                     print their ranges: another N is an error\n"
    "  --split-rows ROWS  print the ranges of every entity split before, and split\n"
    "                     each table of at least ROWS rows (the source's estimate)\n"
    "                     whose destination holds rows already, into one range per\n"
    "                     ROWS, at most --split-max (default 4); 0: split no more\n";

static void
usage(void)
{
	fputs("usage: dm-entities (--source CONNINFO | --source-env VAR) (--dest CONNINFO | --dest-env VAR) [-c SPEC] [--follow | --estimates] [--split N | --split-rows ROWS [--split-max N]] [ENTITY...]\n", stderr);
	exit(DM_EXIT_USAGE);
}

typedef struct entity {
	char *schema, *name, *qualified;
	dmpg_table src;
	size_t *parents;	/* entity indexes this one references */
	size_t nparents;
	int self_ref;
	/* Tarjan */
	int index, lowlink, on_stack;
	int scc;
	int level;
	/* what the output line says of it */
	char *out_table, *out_keys, *out_change, *out_cols;
	char *out_source, *out_follow;	/* --follow: the source table, and how it is followed */
	char *src_schema, *src_name;	/* the source table; NULL for a spec query */
	long long est_src, est_dst;	/* --estimates: pg_class.reltuples, -1 unknown */
	char *split_col, *split_type;	/* the first column of its key in the source, and its type */
} entity;

typedef struct graph {
	entity *e;
	size_t n;
	int next_index;
	size_t *stack;
	size_t sp;
	int nscc;
	int *scc_size;
	int *scc_level;
} graph;

static int
find_entity(const graph *g, const char *schema, const char *name)
{
	for (size_t i = 0; i < g->n; i++)
		if (strcmp(g->e[i].schema, schema) == 0 && strcmp(g->e[i].name, name) == 0)
			return (int)i;
	return -1;
}

/* Tarjan's strongly connected components: emitted parents first, which is load order. */
static void
strongconnect(graph *g, size_t v)
{
	entity *e = &g->e[v];

	e->index = e->lowlink = g->next_index++;
	g->stack[g->sp++] = v;
	e->on_stack = 1;
	for (size_t k = 0; k < e->nparents; k++) {
		size_t w = e->parents[k];
		if (g->e[w].index < 0) {
			strongconnect(g, w);
			if (g->e[w].lowlink < e->lowlink)
				e->lowlink = g->e[w].lowlink;
		} else if (g->e[w].on_stack && g->e[w].index < e->lowlink) {
			e->lowlink = g->e[w].index;
		}
	}
	if (e->lowlink != e->index)
		return;
	int id = g->nscc++;
	int level = 0, size = 0;
	size_t w;
	size_t first = g->sp;
	do {
		w = g->stack[--first];
		size++;
	} while (w != v);
	for (size_t s = first; s < g->sp; s++) {
		g->e[g->stack[s]].on_stack = 0;
		g->e[g->stack[s]].scc = id;
	}
	/* Every parent outside this component was emitted earlier and has its level. */
	for (size_t s = first; s < g->sp; s++) {
		entity *m = &g->e[g->stack[s]];
		for (size_t k = 0; k < m->nparents; k++) {
			int ps = g->e[m->parents[k]].scc;
			if (ps != id && g->scc_level[ps] + 1 > level)
				level = g->scc_level[ps] + 1;
		}
	}
	g->scc_size[id] = size;
	g->scc_level[id] = level;
	g->sp = first;
}

static int
cmp_load_order(const void *pa, const void *pb, void *ctx)
{
	const graph *g = ctx;
	const entity *a = &g->e[*(const size_t *)pa], *b = &g->e[*(const size_t *)pb];

	if (g->scc_level[a->scc] != g->scc_level[b->scc])
		return g->scc_level[a->scc] < g->scc_level[b->scc] ? -1 : 1;
	if (a->scc != b->scc) {
		/* keep a cycle's members together, ordered by their first member's name */
		return a->scc < b->scc ? -1 : 1;
	}
	return strcmp(a->qualified, b->qualified);
}

/* qsort has no context argument in C11; a small insertion sort keeps it portable. */
static void
sort_order(size_t *order, size_t n, graph *g)
{
	for (size_t i = 1; i < n; i++) {
		size_t v = order[i], j = i;
		while (j > 0 && cmp_load_order(&order[j - 1], &v, g) > 0) {
			order[j] = order[j - 1];
			j--;
		}
		order[j] = v;
	}
}

static int
has_bad_char(const char *s)
{
	return strpbrk(s, ",\t\n\r") != NULL;
}

/*
 * How a follower (dm-migrate follow) can follow table t of the source, whose
 * rows the entity knows by the columns keycols: "keys" when logical
 * decoding names its changed rows by those columns (replica identity: the
 * primary key, and they are it, in order), else "full: WHY" (caught up by
 * periodic full comparisons). Returns a new string, or NULL on a failed query.
 */
static char *
follow_how(PGconn *src, const dmpg_table *t, char **keycols, size_t nkey)
{
	const char *p[2] = { t->schema, t->name };
	PGresult *res = dmpg_exec_params(src, "SELECT c.relreplident FROM pg_catalog.pg_class c"
	    " JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2", 2, p);
	if (res == NULL)
		return NULL;
	char ident = dmpg_nrows(res) > 0 ? dmpg_value(res, 0, 0)[0] : '?';
	dmpg_clear(res);
	if (ident != 'd')
		return dm_xasprintf("full: its replica identity is %s, not the primary key",
		    ident == 'f' ? "FULL" : ident == 'n' ? "NOTHING" : ident == 'i' ? "an index" : "unknown");
	if (t->nkey == 0)
		return dm_xstrdup("full: no primary key in the source");
	int same = t->nkey == nkey;
	for (size_t k = 0; same && k < nkey; k++)
		same = strcmp(t->cols[t->key[k]].name, keycols[k]) == 0;
	if (!same)
		return dm_xstrdup("full: its legacy key is not the source's primary key, in order");
	return dm_xstrdup("keys");
}

/*
 * Zero-config: every source table that exists under the same name in the
 * destination is an entity. Returns the number of problems found, or -1.
 */
static int
discover_tables(PGconn *src, PGconn *dst, graph *g, char **wanted, int nwanted, int *wanted_seen, dm_buf *notes,
    int follow)
{
	int errors = 0;

	static const char tables_sql[] =
	    "SELECT n.nspname, c.relname, c.relkind,"
	    " EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indisprimary),"
	    " c.relispartition AND EXISTS (SELECT 1 FROM pg_catalog.pg_partition_ancestors(c.oid) a"
	    "   JOIN pg_catalog.pg_index i ON i.indrelid = a.relid AND i.indisprimary WHERE a.relid <> c.oid)"
	    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	    " WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema', 'dm')"
	    " AND n.nspname NOT LIKE 'pg\\_%'"
	    " AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass"
	    "   AND d.objid = c.oid AND d.deptype = 'e')"
	    " ORDER BY 1, 2";
	PGresult *dtabs = dmpg_exec(dst, tables_sql);
	if (dtabs == NULL)
		return -1;
	PGresult *res = dmpg_exec(src, tables_sql);
	if (res == NULL) {
		dmpg_clear(dtabs);
		return -1;
	}
	g->e = dm_xcalloc((size_t)dmpg_nrows(res) + 1, sizeof *g->e);
	for (int r = 0; r < dmpg_nrows(res); r++) {
		const char *schema = dmpg_value(res, r, 0), *name = dmpg_value(res, r, 1);
		char relkind = dmpg_value(res, r, 2)[0];
		int has_pk = dmpg_value(res, r, 3)[0] == 't', covered = dmpg_value(res, r, 4)[0] == 't';
		char *q = dm_qualify(schema, name);
		int keep = nwanted == 0;
		for (int w = 0; w < nwanted; w++)
			if (strcmp(wanted[w], q) == 0)
				keep = wanted_seen[w] = 1;
		int in_dest = 0;
		for (int d = 0; d < dmpg_nrows(dtabs); d++)
			if (strcmp(dmpg_value(dtabs, d, 0), schema) == 0 && strcmp(dmpg_value(dtabs, d, 1), name) == 0)
				in_dest = 1;
		if (!keep) {
			free(q);
			continue;
		}
		if (covered) {
			dm_buf_printf(notes, "# %s: partition of a table with a primary key: migrated through its parent\n", q);
			free(q);
			continue;
		}
		if (relkind == 'p' && !has_pk) {
			dm_buf_printf(notes, "# %s: partitioned table without a primary key: its partitions are the entities\n", q);
			free(q);
			continue;
		}
		if (!in_dest) {
			dm_buf_printf(notes, "# %s: not in the destination: not migrated\n", q);
			if (nwanted) {
				dm_err("%s: no such table in the destination", q);
				errors++;
			}
			free(q);
			continue;
		}
		if (strpbrk(q, "\t\n\r") != NULL) {
			dm_err("%s: table names with tabs or newlines are not supported: rename it, or migrate it with a spec query", q);
			errors++;
			free(q);
			continue;
		}
		if (!has_pk) {
			dm_err("%s: no primary key in the source: dm cannot match its rows (add one, or leave the table out by naming the entities to migrate)", q);
			errors++;
			free(q);
			continue;
		}
		entity *e = &g->e[g->n++];
		e->schema = dm_xstrdup(schema);
		e->name = dm_xstrdup(name);
		e->qualified = q;
		e->index = -1;
		e->src_schema = dm_xstrdup(schema);
		e->src_name = dm_xstrdup(name);
	}
	dmpg_clear(res);
	dmpg_clear(dtabs);
	for (int w = 0; w < nwanted; w++)
		if (!wanted_seen[w]) {
			dm_err("%s: no such table in the source (expected SCHEMA.TABLE)", wanted[w]);
			errors++;
		}

	/* Both sides must agree on every column the source has, and on the key. */
	for (size_t i = 0; i < g->n; i++) {
		entity *e = &g->e[i];
		dmpg_table dt;
		const char *saved = dm_subject;
		dm_subject = e->qualified;
		if (dmpg_table_load(src, e->schema, e->name, 1, &e->src) < 0) {
			errors++;
			dm_subject = saved;
			continue;
		}
		if (dmpg_table_load(dst, e->schema, e->name, 1, &dt) < 0) {
			errors++;
			dm_subject = saved;
			continue;
		}
		for (size_t c = 0; c < e->src.ncols; c++) {
			const dmpg_column *sc = &e->src.cols[c];
			if (sc->generated)
				continue;
			if (has_bad_char(sc->name)) {
				dm_err("column \"%s\": names with commas, tabs or newlines are not supported", sc->name);
				errors++;
			}
			int d = dmpg_table_column(&dt, sc->name);
			if (d < 0 || dt.cols[d].generated) {
				dm_err("column mismatch: the destination has no %scolumn \"%s\" (add it to the destination)",
				    d < 0 ? "" : "writable ", sc->name);
				errors++;
			}
		}
		int same_key = dt.nkey == e->src.nkey;
		for (size_t k = 0; same_key && k < dt.nkey; k++)
			same_key = strcmp(dt.cols[dt.key[k]].name, e->src.cols[e->src.key[k]].name) == 0;
		if (!same_key) {
			dm_err("key mismatch: the source and destination primary keys differ");
			errors++;
		}
		e->out_table = dm_xstrdup(e->qualified);
		e->out_change = dm_xstrdup(e->src.change_col >= 0 ? e->src.cols[e->src.change_col].name : "-");
		dm_buf kb = { 0 }, cb = { 0 };
		for (size_t k = 0; k < e->src.nkey; k++)
			dm_buf_printf(&kb, "%s%s", k ? "," : "", e->src.cols[e->src.key[k]].name);
		for (size_t c = 0; c < e->src.ncols; c++)
			if (!e->src.cols[c].generated)
				dm_buf_printf(&cb, "%s%s", cb.len ? "," : "", e->src.cols[c].name);
		e->out_keys = dm_xstrdup(dm_buf_cstr(&kb));
		e->out_cols = dm_xstrdup(dm_buf_cstr(&cb));
		e->out_source = dm_xstrdup(e->qualified);
		/* a query per table: only for --follow, which prints it */
		if (follow) {
			char *keys[64];
			size_t nk = e->src.nkey < 64 ? e->src.nkey : 64;
			for (size_t k = 0; k < nk; k++)
				keys[k] = e->src.cols[e->src.key[k]].name;
			e->out_follow = follow_how(src, &e->src, keys, nk);
			if (e->out_follow == NULL)
				errors++;
		}
		dm_buf_free(&kb);
		dm_buf_free(&cb);
		dmpg_table_free(&dt);
		dm_subject = saved;
	}
	return errors;

}

/*
 * With a spec: its entities, each resolved against both catalogs (the
 * preflight: every problem is reported as file:line). Returns the number of
 * problems found.
 */
static int
discover_spec(PGconn *src, PGconn *dst, const dmspec *sp, graph *g, char **wanted, int nwanted, int *wanted_seen,
    int follow)
{
	int errors = 0;

	g->e = dm_xcalloc(sp->nents + 1, sizeof *g->e);
	for (size_t i = 0; i < sp->nents; i++) {
		const dmspec_entity *se = &sp->ents[i];
		int keep = nwanted == 0;
		for (int w = 0; w < nwanted; w++)
			if (strcmp(wanted[w], se->name) == 0)
				keep = wanted_seen[w] = 1;
		if (!keep)
			continue;
		dmmap m;
		const char *saved = dm_subject;
		dm_subject = se->name;
		int bad = dmmap_build(src, dst, sp, se, &m) < 0;
		dm_subject = saved;
		if (bad) {
			errors++;
			dmmap_free(&m);
			continue;
		}
		entity *e = &g->e[g->n++];
		dm_split_table(se->target, &e->schema, &e->name);
		e->qualified = dm_xstrdup(se->name);
		e->index = -1;
		e->out_table = dm_xstrdup(se->target);
		dm_buf kb = { 0 };
		for (size_t k = 0; k < m.nkey; k++)
			dm_buf_printf(&kb, "%s%s", k ? "," : "", m.key_names[k] + strlen(DMMAP_LEGACY_PREFIX));
		e->out_keys = dm_xstrdup(dm_buf_cstr(&kb));
		dm_buf_free(&kb);
		e->out_change = dm_xstrdup(m.change_src >= 0 ? m.src.cols[m.change_src].name : "-");
		e->out_cols = dm_xstrdup("-");
		{
			const char *kn = m.key_names[0] + strlen(DMMAP_LEGACY_PREFIX);
			int at = dmpg_table_column(&m.src, kn);
			e->split_col = dm_xstrdup(kn);
			e->split_type = dm_xstrdup(at >= 0 ? m.src.cols[at].type : "pg_catalog.text");
		}
		if (se->query != NULL) {
			e->out_source = dm_xstrdup("-");
			e->out_follow = dm_xstrdup("full: its source is a query");
		} else {
			e->src_schema = dm_xstrdup(m.src.schema);
			e->src_name = dm_xstrdup(m.src.name);
			e->out_source = dm_qualify(m.src.schema, m.src.name);
			if (follow) {
				char *keys[64];
				size_t nk = m.nkey < 64 ? m.nkey : 64;
				for (size_t k = 0; k < nk; k++)
					keys[k] = m.key_names[k] + strlen(DMMAP_LEGACY_PREFIX);
				e->out_follow = follow_how(src, &m.src, keys, nk);
				if (e->out_follow == NULL)
					errors++;
			}
		}
		dmmap_free(&m);
	}
	for (int w = 0; w < nwanted; w++)
		if (!wanted_seen[w]) {
			dm_err("%s: no [entity %s] in %s", wanted[w], wanted[w], sp->path);
			errors++;
		}
	return errors;
}

/*
 * --estimates: the planner's row estimate of every entity's table on one
 * side (dst: the destination's table, else the source's) from one catalog
 * query, not one per entity. Unknown is -1. Returns 0, or -1 (logged).
 */
static int
read_estimates(PGconn *conn, graph *g, int dst)
{
	PGresult *res = dmpg_exec(conn,
	    "SELECT n.nspname, c.relname,"
	    " CASE WHEN c.reltuples < 0 THEN -1 ELSE pg_catalog.round(c.reltuples)::pg_catalog.int8 END::pg_catalog.text"
	    " FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace"
	    " WHERE c.relkind IN ('r', 'p', 'm', 'f') AND n.nspname NOT IN ('pg_catalog', 'information_schema')");
	if (res == NULL)
		return -1;
	for (size_t i = 0; i < g->n; i++) {
		entity *e = &g->e[i];
		const char *schema = dst ? e->schema : e->src_schema, *name = dst ? e->name : e->src_name;
		long long *est = dst ? &e->est_dst : &e->est_src;
		*est = -1;
		for (int r = 0; schema != NULL && name != NULL && r < dmpg_nrows(res); r++) {
			if (strcmp(dmpg_value(res, r, 0), schema) != 0 || strcmp(dmpg_value(res, r, 1), name) != 0)
				continue;
			char *end;
			long long v = strtoll(dmpg_value(res, r, 2), &end, 10);
			*est = *end == '\0' && v >= 0 ? v : -1;
			break;
		}
	}
	dmpg_clear(res);
	return 0;
}

/*
 * --estimates: how many more connections the server accepts, for a caller
 * choosing how many pipelines to run at once: max_connections less the
 * reserved slots and the client sessions open now (ours included). -1 when
 * the query fails (logged); a caller then assumes nothing.
 */
static long long
free_connections(PGconn *conn)
{
	PGresult *res = dmpg_exec(conn,
	    "SELECT (pg_catalog.current_setting('max_connections')::pg_catalog.int4"
	    " - pg_catalog.current_setting('superuser_reserved_connections')::pg_catalog.int4"
	    " - COALESCE(pg_catalog.current_setting('reserved_connections', true)::pg_catalog.int4, 0)"
	    " - (SELECT pg_catalog.count(*) FROM pg_catalog.pg_stat_activity WHERE backend_type = 'client backend'))::pg_catalog.text");
	if (res == NULL)
		return -1;
	char *end;
	long long v = strtoll(dmpg_value(res, 0, 0), &end, 10);
	int whole = *end == '\0';	/* end points into res: read before the clear */
	dmpg_clear(res);
	return whole ? v : -1;
}

int
main(int argc, char **argv)
{
	const char *src_ci = NULL, *src_env = NULL, *dst_ci = NULL, *dst_env = NULL;
	PGconn *src = NULL, *dst = NULL;
	PGresult *res = NULL;
	graph g = { 0 };
	int rc = DM_EXIT_FAIL, errors = 0;
	size_t *order = NULL;
	int *group_no = NULL;
	dm_buf notes = { 0 };	/* the # lines, printed only with a list that can be used */
	dm_buf fknotes = { 0 };	/* # lines on unindexed foreign keys, after the list */

	dm_prog = "dm-entities";
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	enum { O_SRC = 256, O_SRCENV, O_DST, O_DSTENV, O_FOLLOW, O_EST, O_SPLIT, O_SPLITROWS, O_SPLITMAX };
	int follow = 0, estimates = 0;
	uint64_t split_n = 0, split_rows = 0, split_max = 4;
	int splitting = 0;
	const char *spec_path = NULL;
	dmspec spec = { 0 };
	static const struct option opts[] = {
		{ "source", required_argument, NULL, O_SRC },
		{ "source-env", required_argument, NULL, O_SRCENV },
		{ "dest", required_argument, NULL, O_DST },
		{ "dest-env", required_argument, NULL, O_DSTENV },
		{ "spec", required_argument, NULL, 'c' },
		{ "follow", no_argument, NULL, O_FOLLOW },
		{ "estimates", no_argument, NULL, O_EST },
		{ "split", required_argument, NULL, O_SPLIT },
		{ "split-rows", required_argument, NULL, O_SPLITROWS },
		{ "split-max", required_argument, NULL, O_SPLITMAX },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "c:qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_SRC: src_ci = optarg; break;
		case O_SRCENV: src_env = optarg; break;
		case O_DST: dst_ci = optarg; break;
		case O_DSTENV: dst_env = optarg; break;
		case 'c': spec_path = optarg; break;
		case O_FOLLOW: follow = 1; break;
		case O_EST: estimates = 1; break;
		case O_SPLIT:
		case O_SPLITROWS:
		case O_SPLITMAX: {
			uint64_t v;
			if (dm_parse_u64(optarg, &v) < 0 || (ch != O_SPLITROWS && (v < 1 || v > 1024)) ||
			    (ch == O_SPLITROWS && v > 0 && v < 1000)) {
				dm_err("%s: expected %s", optarg, ch == O_SPLITROWS ? "a number of rows: 0, or 1000 or more" :
				    "a number of ranges from 1 to 1024");
				return DM_EXIT_USAGE;
			}
			*(ch == O_SPLIT ? &split_n : ch == O_SPLITROWS ? &split_rows : &split_max) = v;
			splitting = 1;
			break;
		}
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	if (follow && (estimates || splitting))
		usage();
	if (split_n != 0 && optind == argc) {
		dm_err("--split N: name the entities to split");
		return DM_EXIT_USAGE;
	}
	const char *sci = dm_conninfo(src_ci, src_env);
	if (sci == NULL)
		return DM_EXIT_USAGE;
	const char *dci = dm_conninfo(dst_ci, dst_env);
	if (dci == NULL)
		return DM_EXIT_USAGE;
	if (spec_path != NULL && dmspec_load(spec_path, &spec) < 0)
		return DM_EXIT_FAIL;
	signal(SIGPIPE, SIG_IGN);
	int nwanted = argc - optind;
	char **wanted = argv + optind;
	int *wanted_seen = dm_xcalloc((size_t)(nwanted ? nwanted : 1), sizeof *wanted_seen);

	src = dmpg_connect(sci, "source");
	if (src == NULL)
		goto out;
	dst = dmpg_connect(dci, "destination");
	if (dst == NULL)
		goto out;
	if (dmpg_begin(src, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL) < 0 ||
	    dmpg_begin(dst, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", NULL) < 0)
		goto out;

	if (spec_path != NULL)
		errors = discover_spec(src, dst, &spec, &g, wanted, nwanted, wanted_seen, follow);
	else
		errors = discover_tables(src, dst, &g, wanted, nwanted, wanted_seen, &notes, follow);
	if (errors < 0)
		goto out;

	/* Foreign keys of the destination, expanded to the leaf partitions they reach. */
	res = dmpg_exec(dst,
	    "SELECT cn.nspname, cr.relname, pn.nspname, pr.relname"
	    " FROM pg_catalog.pg_constraint k"
	    " JOIN pg_catalog.pg_class cr ON cr.oid = k.conrelid"
	    " JOIN pg_catalog.pg_namespace cn ON cn.oid = cr.relnamespace"
	    " CROSS JOIN LATERAL (SELECT k.confrelid AS relid UNION"
	    "   SELECT t.relid FROM pg_catalog.pg_partition_tree(k.confrelid) t) ref"
	    " JOIN pg_catalog.pg_class pr ON pr.oid = ref.relid"
	    " JOIN pg_catalog.pg_namespace pn ON pn.oid = pr.relnamespace"
	    " WHERE k.contype = 'f'");
	if (res == NULL)
		goto out;
	for (int r = 0; r < dmpg_nrows(res); r++) {
		int child = find_entity(&g, dmpg_value(res, r, 0), dmpg_value(res, r, 1));
		int parent = find_entity(&g, dmpg_value(res, r, 2), dmpg_value(res, r, 3));
		if (child < 0 || parent < 0)
			continue;
		entity *e = &g.e[child];
		if (child == parent) {
			e->self_ref = 1;
			continue;
		}
		int dup = 0;
		for (size_t k = 0; k < e->nparents; k++)
			dup |= e->parents[k] == (size_t)parent;
		if (dup)
			continue;
		e->parents = dm_xrealloc(e->parents, (e->nparents + 1) * sizeof *e->parents);
		e->parents[e->nparents++] = (size_t)parent;
	}
	dmpg_clear(res);
	/*
	 * Foreign keys into an entity's table without an index on their
	 * referencing columns: each row deleted from the entity costs a scan of
	 * the child table (dm-load --apply-deletes avoids it where it may).
	 */
	res = dmpg_exec(dst,
	    "SELECT cn.nspname, cr.relname, pn.nspname, pr.relname,"
	    " (SELECT pg_catalog.string_agg(pg_catalog.quote_ident(a.attname), ', ' ORDER BY u.ord)"
	    "   FROM pg_catalog.unnest(f.conkey) WITH ORDINALITY AS u(n, ord)"
	    "   JOIN pg_catalog.pg_attribute a ON a.attrelid = f.conrelid AND a.attnum = u.n),"
	    " CASE WHEN cr.reltuples < 0 THEN 'not estimated yet'"
	    "   ELSE cr.reltuples::pg_catalog.int8::pg_catalog.text || ' rows estimated' END"
	    " FROM pg_catalog.pg_constraint f"
	    " JOIN pg_catalog.pg_class cr ON cr.oid = f.conrelid"
	    " JOIN pg_catalog.pg_namespace cn ON cn.oid = cr.relnamespace"
	    " JOIN pg_catalog.pg_class pr ON pr.oid = f.confrelid"
	    " JOIN pg_catalog.pg_namespace pn ON pn.oid = pr.relnamespace"
	    " WHERE f.contype = 'f' AND f.conparentid = 0 AND NOT " DMPG_FK_INDEXED
	    " ORDER BY 3, 4, 1, 2, f.conname");
	if (res == NULL)
		goto out;
	for (int r = 0; r < dmpg_nrows(res); r++) {
		if (find_entity(&g, dmpg_value(res, r, 2), dmpg_value(res, r, 3)) < 0)
			continue;
		char *child = dm_qualify(dmpg_value(res, r, 0), dmpg_value(res, r, 1));
		char *parent = dm_qualify(dmpg_value(res, r, 2), dmpg_value(res, r, 3));
		dm_buf_printf(&fknotes, "# %s(%s) -> %s: no index, a delete of a parent row scans %s (%s)\n",
		    child, dmpg_value(res, r, 4), parent, child, dmpg_value(res, r, 5));
		free(child);
		free(parent);
	}
	dmpg_clear(res);
	res = NULL;
	if (errors) {
		dm_err("%d problem(s) found: nothing to migrate until they are fixed", errors);
		goto out;
	}

	if ((estimates || splitting) && (read_estimates(src, &g, 0) < 0 || read_estimates(dst, &g, 1) < 0))
		goto out;
	long long src_free = estimates ? free_connections(src) : -1;
	long long dst_free = estimates ? free_connections(dst) : -1;
	if (estimates && (src_free == -1 || dst_free == -1))
		goto out;

	g.stack = dm_xcalloc(g.n + 1, sizeof *g.stack);
	g.scc_size = dm_xcalloc(g.n + 1, sizeof *g.scc_size);
	g.scc_level = dm_xcalloc(g.n + 1, sizeof *g.scc_level);
	for (size_t i = 0; i < g.n; i++)
		if (g.e[i].index < 0)
			strongconnect(&g, i);
	order = dm_xcalloc(g.n + 1, sizeof *order);
	for (size_t i = 0; i < g.n; i++)
		order[i] = i;
	sort_order(order, g.n, &g);

	if (estimates)
		printf("# connections free: source %lld, destination %lld\n", src_free, dst_free);
	fputs(notes.len ? dm_buf_cstr(&notes) : "", stdout);
	group_no = dm_xcalloc((size_t)g.nscc + 1, sizeof *group_no);
	int ngroups = 0;
	for (size_t i = 0; i < g.n; i++) {
		entity *e = &g.e[order[i]];
		if (g.scc_size[e->scc] > 1 && group_no[e->scc] == 0) {
			group_no[e->scc] = ++ngroups;
			printf("# cycle%d: foreign keys form a cycle between", ngroups);
			for (size_t j = 0; j < g.n; j++)
				if (g.e[order[j]].scc == e->scc)
					printf(" %s", g.e[order[j]].qualified);
			printf(": loaded together, in one transaction and one statement\n");
		}
		if (e->self_ref && g.scc_size[e->scc] == 1)
			printf("# %s: references itself: loaded in one transaction so parents and children land together\n",
			    e->qualified);
	}
	for (size_t i = 0; i < g.n && follow; i++) {
		entity *e = &g.e[order[i]];
		printf("%s\t%s\t%s\n", e->qualified, e->out_source, e->out_follow);
	}
	for (size_t i = 0; i < g.n && !follow; i++) {
		entity *e = &g.e[order[i]];
		printf("%d\t%s\t%s\t%s\t%s\t", g.scc_level[e->scc], e->qualified, e->out_table, e->out_keys, e->out_change);
		if (g.scc_size[e->scc] > 1)
			printf("cycle%d\t", group_no[e->scc]);
		else
			printf("%s\t", e->self_ref ? "self" : "-");
		fputs(e->out_cols, stdout);
		int first = 1;
		/* parents outside the entity's own cycle: what a Makefile target depends on */
		first = 1;
		putchar('\t');
		for (size_t k = 0; k < e->nparents; k++) {
			const entity *pe = &g.e[e->parents[k]];
			if (pe->scc == e->scc)
				continue;
			printf("%s%s", first ? "" : ",", pe->qualified);
			first = 0;
		}
		if (first)
			putchar('-');
		if (estimates)
			printf("\t%lld\t%lld", e->est_src, e->est_dst);
		putchar('\n');
	}
	if (!follow)
		fputs(fknotes.len ? dm_buf_cstr(&fknotes) : "", stdout);
	/* which entities were split before: the others cost no round trip unless they must be split now */
	if (splitting) {
		dmpg_clear(res);
		res = dmpg_exec(dst, "SELECT pg_catalog.to_regclass('dm.partition') IS NOT NULL");
		if (res == NULL)
			goto out;
		int have = dmpg_value(res, 0, 0)[0] == 't';
		dmpg_clear(res);
		res = have ? dmpg_exec(dst, "SELECT DISTINCT entity FROM dm.partition") : NULL;
		if (have && res == NULL)
			goto out;
	}
	dmpg_commit(src);
	dmpg_commit(dst);
	for (size_t i = 0; i < g.n && splitting; i++) {
		entity *e = &g.e[order[i]];
		int stored = 0;
		for (int k = 0; res != NULL && k < dmpg_nrows(res); k++)
			stored |= strcmp(dmpg_value(res, k, 0), e->qualified) == 0;
		if (!stored && split_n == 0 && (split_rows == 0 || e->est_src < (long long)split_rows || e->est_dst <= 0))
			continue;
		dmsplit_req r = { 0 };
		r.entity = e->qualified;
		r.schema = e->src_schema;
		r.table = e->src_name;
		if (e->split_col != NULL) {
			r.col = e->split_col;
			r.type = e->split_type;
		} else {
			r.col = e->src.cols[e->src.key[0]].name;
			r.type = e->src.cols[e->src.key[0]].type;
		}
		if (g.scc_size[e->scc] > 1)
			r.why_not = "it is in a foreign-key cycle, whose tables load together in one transaction";
		else if (e->self_ref)
			r.why_not = "it references itself, and loads in one transaction";
		r.est_src = e->est_src;
		r.est_dst = e->est_dst;
		r.parts = (int)split_n;
		if (dmsplit_entity(src, dst, &r, (long long)split_rows, (int)split_max, stdout) < 0)
			goto out;
	}
	if (dm_close_output(stdout, "standard output") < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	dmpg_clear(res);
	dmpg_finish(src);
	dmpg_finish(dst);
	for (size_t i = 0; i < g.n; i++) {
		free(g.e[i].schema);
		free(g.e[i].name);
		free(g.e[i].qualified);
		free(g.e[i].parents);
		free(g.e[i].out_table);
		free(g.e[i].out_keys);
		free(g.e[i].out_change);
		free(g.e[i].out_cols);
		free(g.e[i].out_source);
		free(g.e[i].out_follow);
		free(g.e[i].src_schema);
		free(g.e[i].src_name);
		free(g.e[i].split_col);
		free(g.e[i].split_type);
		dmpg_table_free(&g.e[i].src);
	}
	free(g.e);
	free(g.stack);
	free(g.scc_size);
	free(g.scc_level);
	free(order);
	free(group_no);
	free(wanted_seen);
	dm_buf_free(&notes);
	dm_buf_free(&fknotes);
	dmspec_free(&spec);
	return dmpg_exit_code(rc);
}
