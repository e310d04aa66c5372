/*
 * dm-keys - split a change feed into the key streams of its tables, and say
 * up to where the batch is applied once those keys are read again at a
 * snapshot.
 *
 * A follower reads the changed keys again from the source at one snapshot.
 * Rows read there show every transaction the snapshot sees, so the keys
 * given are those of every transaction of the feed (a key read at a
 * snapshot that already or not yet sees a change is read consistently
 * either way); but the position recorded is only as far as every commit of
 * the feed, in commit order, is visible in the snapshot: a change the
 * snapshot does not see is read again by the next batch, never lost.
 */
#define _POSIX_C_SOURCE 200809L
#include "feed.h"
#include "pg.h"
#include "spec.h"
#include "stream.h"

#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char usage_text[] =
    "usage: dm-keys --out DIR [-c SPEC] [(--db CONNINFO | --db-env VAR) --snapshot ID] [-q] [-v] [FEED]\n"
    "\n"
    "Reads a change feed (dm-stream(5), from dm-decode) and writes, for each entity\n"
    "whose table it names, the keys that changed as a rows stream in DIR, sorted and\n"
    "unique. Prints a line per entity, ENTITY<TAB>KEYS<TAB>FILE, then\n"
    "position<TAB>LSN<TAB>COMMIT_TIME<TAB>COMMITS<TAB>OF: how far the batch reaches\n"
    "once its keys are read at the snapshot (- when no commit is covered).\n"
    "\n"
    "  --out DIR          where the key streams go (created if missing)\n"
    "  -c, --spec FILE    entities of the spec (dm.conf(5)) whose source is the table\n"
    "                     and whose legacy key is its key; without it the table is\n"
    "                     the entity\n"
    "  --db CONNINFO      the source, to see which commits the snapshot shows\n"
    "  --db-env VAR       read its connection string from environment variable VAR\n"
    "  --snapshot ID      the snapshot the keys will be read at (dm-extract\n"
    "                     --export-snapshot); without it every commit counts\n"
    "  -q, -v             quieter, more verbose\n"
    "  --help, --version\n";

static void
usage(void)
{
	fputs("usage: dm-keys --out DIR [-c SPEC] [(--db CONNINFO | --db-env VAR) --snapshot ID] [FEED]\n", stderr);
	exit(DM_EXIT_USAGE);
}

/* A table as the feed's relation message describes it: its columns and which of them are the key. */
typedef struct relation {
	uint32_t relid;
	char *table;		/* schema.table */
	size_t ncols;
	dms_column *cols;
	size_t nkey;
	size_t *key;		/* indexes into cols */
} relation;

static void
relation_free(relation *rel)
{
	for (size_t i = 0; i < rel->ncols; i++) {
		free(rel->cols[i].name);
		free(rel->cols[i].type);
	}
	free(rel->cols);
	free(rel->key);
	free(rel->table);
}

static char *
obj_str(const msgpack_object *o)
{
	if (o->type != MSGPACK_OBJECT_STR)
		return NULL;
	char *s = dm_xmalloc(o->via.str.size + 1);
	memcpy(s, o->via.str.ptr, o->via.str.size);
	s[o->via.str.size] = '\0';
	return s;
}

/*
 * A relation message [3, relid, "schema.table", [[name, type], ...], [key
 * index, ...]] (dmf_reader checked its shape and key indexes) into rel,
 * whose fields become the caller's. 0, or -1 after printing why.
 */
static int
relation_parse(const msgpack_object *m, relation *rel)
{
	const msgpack_object *a = m->via.array.ptr;
	memset(rel, 0, sizeof *rel);
	if (m->via.array.size != 5 || a[3].type != MSGPACK_OBJECT_ARRAY || a[4].type != MSGPACK_OBJECT_ARRAY ||
	    (rel->table = obj_str(&a[2])) == NULL) {
		dm_err("feed: malformed relation message");
		return -1;
	}
	rel->relid = (uint32_t)a[1].via.u64;
	rel->ncols = a[3].via.array.size;
	rel->cols = dm_xcalloc(rel->ncols + 1, sizeof *rel->cols);
	for (size_t i = 0; i < rel->ncols; i++) {
		const msgpack_object *c = &a[3].via.array.ptr[i];
		if (c->type != MSGPACK_OBJECT_ARRAY || c->via.array.size != 2 ||
		    (rel->cols[i].name = obj_str(&c->via.array.ptr[0])) == NULL ||
		    (rel->cols[i].type = obj_str(&c->via.array.ptr[1])) == NULL) {
			dm_err("feed: malformed column in the relation message of %s", rel->table);
			return -1;
		}
	}
	rel->nkey = a[4].via.array.size;
	rel->key = dm_xcalloc(rel->nkey + 1, sizeof *rel->key);
	for (size_t i = 0; i < rel->nkey; i++) {
		const msgpack_object *k = &a[4].via.array.ptr[i];
		if (k->type != MSGPACK_OBJECT_POSITIVE_INTEGER || k->via.u64 >= rel->ncols) {
			dm_err("feed: key index out of range in the relation message of %s", rel->table);
			return -1;
		}
		rel->key[i] = (size_t)k->via.u64;
	}
	return 0;
}

/* One changed key: its values, copied out of the feed. */
typedef struct key_row {
	dm_value *vals;
} key_row;

/* The keys of one table, by the relid the feed gave it. */
typedef struct table_keys {
	uint64_t relid;
	dms_header h;		/* the key columns only; the stream's header */
	key_row *rows;
	size_t nrows, cap;
} table_keys;

typedef struct commit_rec {
	char end_lsn[32];
	char time[64];
	uint64_t xid;
} commit_rec;

static const dms_keyclass *sort_cls;
static size_t sort_nkey;

static int
key_row_cmp(const void *a, const void *b)
{
	return dms_key_cmp(sort_cls, sort_nkey, ((const key_row *)a)->vals, ((const key_row *)b)->vals);
}

/* The key columns of rel as a rows stream's header: columns are the key, in key order. */
static void
table_init(table_keys *t, const relation *rel)
{
	memset(t, 0, sizeof *t);
	t->relid = rel->relid;
	dms_header_init(&t->h);
	t->h.kind = DMS_ROWS;
	t->h.entity = dm_xstrdup(rel->table);
	t->h.table = dm_xstrdup(rel->table);
	t->h.ncols = rel->nkey;
	t->h.cols = dm_xcalloc(rel->nkey, sizeof *t->h.cols);
	t->h.nkey = rel->nkey;
	t->h.key = dm_xcalloc(rel->nkey, sizeof *t->h.key);
	for (size_t i = 0; i < rel->nkey; i++) {
		t->h.cols[i].name = dm_xstrdup(rel->cols[rel->key[i]].name);
		t->h.cols[i].type = dm_xstrdup(rel->cols[rel->key[i]].type);
		t->h.key[i] = i;
	}
	dms_header_classify(&t->h);
}

/* Whether rel still has the key t was started with: a DDL change in mid-batch is refused. */
static int
table_same_key(const table_keys *t, const relation *rel)
{
	if (rel->nkey != t->h.nkey || strcmp(rel->table, t->h.table) != 0)
		return 0;
	for (size_t i = 0; i < rel->nkey; i++)
		if (strcmp(rel->cols[rel->key[i]].name, t->h.cols[i].name) != 0 ||
		    strcmp(rel->cols[rel->key[i]].type, t->h.cols[i].type) != 0)
			return 0;
	return 1;
}

static void
table_add(table_keys *t, const dm_value *keys, size_t n)
{
	if (t->nrows == t->cap) {
		t->cap = t->cap ? 2 * t->cap : 64;
		t->rows = dm_xrealloc(t->rows, t->cap * sizeof *t->rows);
	}
	size_t bytes = 0;
	for (size_t i = 0; i < n; i++)
		bytes += keys[i].len;
	/* values and their bytes in one block: freed together */
	char *block = dm_xmalloc(n * sizeof(dm_value) + bytes + 1);
	dm_value *vals = (dm_value *)(void *)block;
	char *p = block + n * sizeof(dm_value);
	for (size_t i = 0; i < n; i++) {
		vals[i] = keys[i];
		memcpy(p, keys[i].ptr, keys[i].len);
		vals[i].ptr = p;
		p += keys[i].len;
	}
	t->rows[t->nrows++].vals = vals;
}

static void
table_free(table_keys *t)
{
	for (size_t i = 0; i < t->nrows; i++)
		free(t->rows[i].vals);
	free(t->rows);
	dms_header_free(&t->h);
}

/*
 * Writes t's keys, sorted and unique, to path, as entity's. Returns the
 * number written, or -1. Sorting is done once; a second call finds them sorted.
 */
static long long
table_write(table_keys *t, const char *entity, const char *path)
{
	FILE *fp = fopen(path, "wb");
	if (fp == NULL) {
		dm_err("cannot create %s: %s", path, strerror(errno));
		return -1;
	}
	sort_cls = t->h.keyclass;
	sort_nkey = t->h.nkey;
	qsort(t->rows, t->nrows, sizeof *t->rows, key_row_cmp);
	free(t->h.entity);
	t->h.entity = dm_xstrdup(entity);
	dms_writer w;
	dms_writer_open(&w, fp, &t->h);
	long long n = 0;
	for (size_t i = 0; i < t->nrows; i++) {
		if (i > 0 && key_row_cmp(&t->rows[i - 1], &t->rows[i]) == 0)
			continue;
		dms_writer_row(&w, DMS_OP_NONE, t->rows[i].vals, t->h.nkey);
		n++;
	}
	int bad = dms_writer_finish(&w, NULL) < 0;
	dms_writer_free(&w);
	if (fclose(fp) != 0 && !bad) {
		dm_err("cannot write %s: %s", path, strerror(errno));
		bad = 1;
	}
	return bad ? -1 : n;
}

/*
 * How many commits, from the first, the snapshot sees: each transaction id
 * (32 bits in the feed) is widened to 64 bits from the snapshot's xmax, the
 * way PostgreSQL compares them: modulo 2^32, as the nearest id before or
 * after xmax (the feed's transactions are recent; one at or after xmax
 * began after the snapshot and is not seen), then asked of
 * pg_visible_in_snapshot. Returns the count, or -1.
 */
static long long
visible_prefix(const char *conninfo, const char *snapshot, const commit_rec *commits, size_t n)
{
	PGconn *conn = dmpg_connect(conninfo, "source");
	PGresult *res = NULL;
	dm_buf arr = { 0 };
	long long seen = -1;

	if (conn == NULL)
		goto out;
	if (dmpg_begin(conn, "ISOLATION LEVEL REPEATABLE READ, READ ONLY", snapshot) < 0)
		goto out;
	dm_buf_putc(&arr, '{');
	for (size_t i = 0; i < n; i++) {
		if (commits[i].xid == 0) {
			dm_err("commit %zu of the feed has no transaction id: cannot tell what the snapshot sees", i + 1);
			goto out;
		}
		dm_buf_printf(&arr, "%s%llu", i ? "," : "", (unsigned long long)commits[i].xid);
	}
	dm_buf_putc(&arr, '}');
	const char *p[1] = { dm_buf_cstr(&arr) };
	res = dmpg_exec_params(conn,
	    "WITH s AS (SELECT pg_catalog.pg_current_snapshot() AS snap),"
	    " e AS (SELECT pg_catalog.pg_snapshot_xmax(snap)::pg_catalog.text::pg_catalog.numeric AS xmax FROM s)"
	    " SELECT pg_catalog.pg_visible_in_snapshot((e.xmax"
	    "   + ((t.x - e.xmax % 4294967296 + 6442450944) % 4294967296 - 2147483648))::pg_catalog.text::pg_catalog.xid8,"
	    "   (SELECT snap FROM s))"
	    " FROM pg_catalog.unnest($1::pg_catalog.int8[]) WITH ORDINALITY AS t(x, n), e ORDER BY t.n", 1, p);
	if (res == NULL)
		goto out;
	seen = 0;
	while ((size_t)seen < n && (size_t)seen < (size_t)dmpg_nrows(res) && dmpg_value(res, (int)seen, 0)[0] == 't')
		seen++;
	dmpg_commit(conn);
out:
	dmpg_clear(res);
	dmpg_finish(conn);
	dm_buf_free(&arr);
	return seen;
}

/*
 * Whether spec entity e follows the feed's table t: its source is the
 * table (not a query) and its legacy key is the table's replica identity,
 * column for column, so that a key of the feed is a legacy key. 1 yes, 0
 * no (with a warning for an entity of that table that cannot).
 */
static int
entity_follows(const dmspec_entity *e, const table_keys *t)
{
	if (e->source == NULL || !dm_same_table(e->source, t->h.table))
		return 0;
	if (e->nkey == 0)
		return 1;	/* the default legacy key is the primary key, which pgoutput sends */
	int same = e->nkey == t->h.nkey;
	for (size_t i = 0; same && i < e->nkey; i++)
		same = strcmp(e->key[i], t->h.cols[i].name) == 0;
	if (!same) {
		const char *saved = dm_subject;
		dm_subject = e->name;
		dm_info("warning: its legacy key is not the replica identity of %s: not followed by keys (a full comparison catches it up)",
		    t->h.table);
		dm_subject = saved;
	}
	return same;
}

int
main(int argc, char **argv)
{
	const char *db = NULL, *db_env = NULL, *snapshot = NULL, *out_dir = NULL, *spec_path = NULL;
	dmspec spec = { 0 };
	dmf_reader r = { 0 };
	relation *rels = NULL;
	size_t nrels = 0;
	table_keys *tables = NULL;
	size_t ntables = 0, tables_cap = 0;
	commit_rec *commits = NULL;
	size_t ncommits = 0, commits_cap = 0;
	FILE *fp = NULL;
	int rc = DM_EXIT_FAIL, got;

	dm_prog = "dm-keys";
	if (argc > 1)
		dm_std_option(argv[1], usage_text);
	enum { O_DB = 256, O_DBENV, O_SNAP, O_OUT };
	static const struct option opts[] = {
		{ "db", required_argument, NULL, O_DB },
		{ "db-env", required_argument, NULL, O_DBENV },
		{ "snapshot", required_argument, NULL, O_SNAP },
		{ "out", required_argument, NULL, O_OUT },
		{ "spec", required_argument, NULL, 'c' },
		{ "help", no_argument, NULL, 'h' },
		{ "version", no_argument, NULL, 'V' },
		{ NULL, 0, NULL, 0 }
	};
	int ch;
	while ((ch = getopt_long(argc, argv, "c:qv", opts, NULL)) != -1) {
		switch (ch) {
		case O_DB: db = optarg; break;
		case O_DBENV: db_env = optarg; break;
		case O_SNAP: snapshot = optarg; break;
		case O_OUT: out_dir = optarg; break;
		case 'c': spec_path = optarg; break;
		case 'h': dm_std_option("--help", usage_text); break;
		case 'V': dm_std_option("--version", usage_text); break;
		case 'q': dm_verbosity = 0; break;
		case 'v': dm_verbosity = 2; break;
		default: usage();
		}
	}
	if (out_dir == NULL || argc - optind > 1 || (snapshot != NULL) != (db != NULL || db_env != NULL))
		usage();
	const char *conninfo = NULL;
	if (snapshot != NULL && (conninfo = dm_conninfo(db, db_env)) == NULL)
		return DM_EXIT_USAGE;
	if (spec_path != NULL && dmspec_load(spec_path, &spec) < 0)
		return DM_EXIT_FAIL;
	if (mkdir(out_dir, 0777) < 0 && errno != EEXIST) {
		dm_err("cannot create %s: %s", out_dir, strerror(errno));
		return DM_EXIT_FAIL;
	}
	signal(SIGPIPE, SIG_IGN);
	const char *path = argc > optind ? argv[optind] : "-";
	fp = strcmp(path, "-") == 0 ? stdin : fopen(path, "rb");
	if (fp == NULL) {
		dm_err("cannot open %s: %s", path, strerror(errno));
		return DM_EXIT_FAIL;
	}
	rc = DM_EXIT_STREAM;
	int opened = dmf_reader_open(&r, fp, fp == stdin ? "standard input" : path);
	if (opened == 1)
		dm_err("%s: not a change feed (a row stream? dm-cat shows what it is)", fp == stdin ? "standard input" : path);
	if (opened != 0)
		goto out;
	while ((got = dmf_reader_next(&r)) > 0) {
		if (got == 2)
			continue;	/* a sync point */
		const msgpack_object *a = r.obj->via.array.ptr;
		if (r.type == DMF_COMMIT) {
			if (ncommits == commits_cap) {
				commits_cap = commits_cap ? 2 * commits_cap : 64;
				commits = dm_xrealloc(commits, commits_cap * sizeof *commits);
			}
			commit_rec *c = &commits[ncommits++];
			memset(c, 0, sizeof *c);
			if (r.obj->via.array.size < 4 || a[2].via.str.size >= sizeof c->end_lsn ||
			    a[3].via.str.size >= sizeof c->time) {
				dm_err("feed: malformed commit message");
				goto out;
			}
			memcpy(c->end_lsn, a[2].via.str.ptr, a[2].via.str.size);
			memcpy(c->time, a[3].via.str.ptr, a[3].via.str.size);
			if (r.obj->via.array.size > 4 && a[4].type == MSGPACK_OBJECT_POSITIVE_INTEGER)
				c->xid = a[4].via.u64;
			continue;
		}
		if (r.type == DMF_RELATION) {
			relation rel;
			if (relation_parse(r.obj, &rel) < 0) {
				relation_free(&rel);
				goto out;
			}
			relation *old = NULL;
			for (size_t i = 0; i < nrels && old == NULL; i++)
				if (rels[i].relid == rel.relid)
					old = &rels[i];
			if (old == NULL) {
				rels = dm_xrealloc(rels, (nrels + 1) * sizeof *rels);
				old = &rels[nrels++];
			} else {
				relation_free(old);
			}
			*old = rel;
			/* a table already changed in this feed must keep its key */
			for (size_t i = 0; i < ntables; i++)
				if (tables[i].relid == rel.relid && !table_same_key(&tables[i], &rel)) {
					dm_subject = rel.table;
					dm_err("its key changed within the batch (%s): a DDL change on a followed table;"
					    " follow again once the mapping is updated", tables[i].h.table);
					rc = DM_EXIT_FAIL;
					goto out;
				}
			continue;
		}
		const relation *rel = NULL;
		for (size_t i = 0; i < nrels && rel == NULL; i++)
			if (rels[i].relid == r.relid)
				rel = &rels[i];
		if (rel == NULL || rel->nkey != r.nkey) {
			dm_err("feed: a change of relation %u that no relation message described", (unsigned)r.relid);
			goto out;
		}
		table_keys *t = NULL;
		for (size_t i = 0; i < ntables && t == NULL; i++)
			if (tables[i].relid == r.relid)
				t = &tables[i];
		if (t == NULL) {
			if (ntables == tables_cap) {
				tables_cap = tables_cap ? 2 * tables_cap : 16;
				tables = dm_xrealloc(tables, tables_cap * sizeof *tables);
			}
			t = &tables[ntables++];
			table_init(t, rel);
		}
		table_add(t, r.keys, r.nkey);
	}
	if (got < 0)
		goto out;

	rc = DM_EXIT_FAIL;
	long long covered = (long long)ncommits;
	if (snapshot != NULL && ncommits > 0 && (covered = visible_prefix(conninfo, snapshot, commits, ncommits)) < 0)
		goto out;
	size_t nfiles = 0;
	for (size_t i = 0; i < ntables; i++) {
		for (size_t j = 0; j < (spec_path ? spec.nents : 1); j++) {
			if (spec_path != NULL && !entity_follows(&spec.ents[j], &tables[i]))
				continue;
			const char *entity = spec_path ? spec.ents[j].name : tables[i].h.table;
			char *file = dm_xasprintf("%s/%zu.keys", out_dir, ++nfiles);
			long long n = table_write(&tables[i], entity, file);
			if (n >= 0)
				printf("%s\t%lld\t%s\n", entity, n, file);
			free(file);
			if (n < 0)
				goto out;
		}
	}
	if (covered > 0)
		printf("position\t%s\t%s\t%lld\t%zu\n", commits[covered - 1].end_lsn, commits[covered - 1].time, covered,
		    ncommits);
	else
		printf("position\t-\t-\t0\t%zu\n", ncommits);
	dm_debug("%zu tables, %zu commits in the feed, %lld covered", ntables, ncommits, covered);
	if (dm_close_output(stdout, "list") < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	for (size_t i = 0; i < ntables; i++)
		table_free(&tables[i]);
	free(tables);
	free(commits);
	dmf_reader_free(&r);
	for (size_t i = 0; i < nrels; i++)
		relation_free(&rels[i]);
	free(rels);
	dmspec_free(&spec);
	if (fp != NULL && fp != stdin)
		fclose(fp);
	return dmpg_exit_code(rc);
}
