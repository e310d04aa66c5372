/* pgoutput.c - replication and pgoutput messages (protocol version 1), from bytes. */
#define _POSIX_C_SOURCE 200809L
#include "pgoutput.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A read cursor over one message: every read checks what is left first. */
typedef struct cur {
	const unsigned char *p, *end;
	int bad;
} cur;

static uint64_t
cur_be(cur *c, size_t n)
{
	uint64_t v = 0;

	if (c->bad || (size_t)(c->end - c->p) < n) {
		c->bad = 1;
		return 0;
	}
	for (size_t i = 0; i < n; i++)
		v = v << 8 | c->p[i];
	c->p += n;
	return v;
}

#define cur_u8(c) ((uint8_t)cur_be((c), 1))
#define cur_u16(c) ((uint16_t)cur_be((c), 2))
#define cur_u32(c) ((uint32_t)cur_be((c), 4))
#define cur_u64(c) cur_be((c), 8)

/* A NUL-terminated string of the message, copied; NULL (and bad) when unterminated. */
static char *
cur_str(cur *c)
{
	if (c->bad)
		return NULL;
	const unsigned char *z = memchr(c->p, '\0', (size_t)(c->end - c->p));
	if (z == NULL) {
		c->bad = 1;
		return NULL;
	}
	char *s = dm_xstrndup((const char *)c->p, (size_t)(z - c->p));
	c->p = z + 1;
	return s;
}

int
dmpgo_copydata_parse(const char *buf, size_t len, dmpgo_copydata *cd, const char **why)
{
	cur c = { (const unsigned char *)buf, (const unsigned char *)buf + len, 0 };

	memset(cd, 0, sizeof *cd);
	cd->kind = (char)cur_u8(&c);
	switch (cd->kind) {
	case 'w':
		cd->wal_start = cur_u64(&c);
		cd->wal_end = cur_u64(&c);
		cd->send_time = (int64_t)cur_u64(&c);
		cd->data = (const char *)c.p;
		cd->len = c.bad ? 0 : (size_t)(c.end - c.p);
		break;
	case 'k':
		cd->wal_end = cur_u64(&c);
		cd->send_time = (int64_t)cur_u64(&c);
		cd->reply = cur_u8(&c) != 0;
		if (!c.bad && c.p != c.end)
			c.bad = 1;
		break;
	default:
		*why = "unknown replication message";
		return -1;
	}
	if (c.bad) {
		*why = cd->kind == 'w' ? "XLogData message cut short" : "keepalive message malformed";
		return -1;
	}
	return 0;
}

static void
put_be(char *q, uint64_t v, size_t n)
{
	for (size_t i = 0; i < n; i++)
		q[i] = (char)(v >> (8 * (n - 1 - i)));
}

size_t
dmpgo_status_update(char out[34], uint64_t write, uint64_t flush, uint64_t apply, int64_t now_pg_us, int reply)
{
	out[0] = 'r';
	put_be(out + 1, write, 8);
	put_be(out + 9, flush, 8);
	put_be(out + 17, apply, 8);
	put_be(out + 25, (uint64_t)now_pg_us, 8);
	out[33] = (char)(reply != 0);
	return 34;
}

void
dmpgo_relation_free(dmpgo_relation *r)
{
	if (r == NULL)
		return;
	for (size_t i = 0; i < r->ncols && r->cols != NULL; i++)
		free(r->cols[i].name);
	free(r->cols);
	free(r->nspname);
	free(r->relname);
	memset(r, 0, sizeof *r);
}

void
dmpgo_msg_init(dmpgo_msg *m)
{
	memset(m, 0, sizeof *m);
}

void
dmpgo_msg_free(dmpgo_msg *m)
{
	if (m == NULL)
		return;
	dmpgo_relation_free(&m->rel);
	free(m->oldt.kinds);
	free(m->oldt.vals);
	free(m->newt.kinds);
	free(m->newt.vals);
	free(m->trunc);
	dmpgo_msg_init(m);
}

/* TupleData: Int16 count, then per column a kind byte and, for 't' and 'b', Int32 length and bytes. */
static void
cur_tuple(cur *c, dmpgo_tuple *t)
{
	t->ncols = cur_u16(c);
	if (c->bad)
		return;
	/* Each column takes at least its kind byte: a count the message cannot hold is damage. */
	if (t->ncols > (size_t)(c->end - c->p)) {
		c->bad = 1;
		return;
	}
	t->kinds = dm_xcalloc(t->ncols + 1, 1);
	t->vals = dm_xcalloc(t->ncols + 1, sizeof *t->vals);
	for (size_t i = 0; i < t->ncols && !c->bad; i++) {
		char k = (char)cur_u8(c);
		t->kinds[i] = k;
		if (k == 'n' || k == 'u')
			continue;
		if (k != 't' && k != 'b') {
			c->bad = 1;
			return;
		}
		uint32_t n = cur_u32(c);
		if (c->bad || n > (size_t)(c->end - c->p)) {
			c->bad = 1;
			return;
		}
		t->vals[i].ptr = (const char *)c->p;
		t->vals[i].len = n;
		t->vals[i].kind = k == 't' ? DM_TEXT : DM_BIN;
		c->p += n;
	}
}

static void
cur_relation(cur *c, dmpgo_relation *r)
{
	r->relid = cur_u32(c);
	r->nspname = cur_str(c);
	r->relname = cur_str(c);
	r->ident = (char)cur_u8(c);
	r->ncols = cur_u16(c);
	if (c->bad)
		return;
	/* A column takes at least 10 bytes (flags, name's NUL, type, typmod). */
	if (r->ncols > (size_t)(c->end - c->p) / 10) {
		c->bad = 1;
		return;
	}
	r->cols = dm_xcalloc(r->ncols + 1, sizeof *r->cols);
	for (size_t i = 0; i < r->ncols && !c->bad; i++) {
		dmpgo_column *col = &r->cols[i];
		col->key = (cur_u8(c) & 1) != 0;
		col->name = cur_str(c);
		col->type = cur_u32(c);
		col->typmod = (int32_t)cur_u32(c);
		r->nkey += col->key;
	}
}

int
dmpgo_parse(const char *buf, size_t len, dmpgo_msg *m, const char **why)
{
	cur c = { (const unsigned char *)buf, (const unsigned char *)buf + len, 0 };

	dmpgo_msg_free(m);
	m->type = (char)cur_u8(&c);
	switch (m->type) {
	case 'B':
		m->final_lsn = cur_u64(&c);
		m->commit_time = (int64_t)cur_u64(&c);
		m->xid = cur_u32(&c);
		break;
	case 'C':
		(void)cur_u8(&c);	/* flags, unused */
		m->commit_lsn = cur_u64(&c);
		m->end_lsn = cur_u64(&c);
		m->commit_time = (int64_t)cur_u64(&c);
		break;
	case 'O':
		m->commit_lsn = cur_u64(&c);
		free(cur_str(&c));
		break;
	case 'R':
		cur_relation(&c, &m->rel);
		break;
	case 'Y':
		(void)cur_u32(&c);
		free(cur_str(&c));
		free(cur_str(&c));
		break;
	case 'I':
		m->relid = cur_u32(&c);
		if (cur_u8(&c) != 'N')
			c.bad = 1;
		cur_tuple(&c, &m->newt);
		break;
	case 'U':
		m->relid = cur_u32(&c);
		{
			char k = (char)cur_u8(&c);
			if (k == 'K' || k == 'O') {
				m->old_kind = k;
				cur_tuple(&c, &m->oldt);
				k = (char)cur_u8(&c);
			}
			if (k != 'N')
				c.bad = 1;
		}
		cur_tuple(&c, &m->newt);
		break;
	case 'D':
		m->relid = cur_u32(&c);
		m->old_kind = (char)cur_u8(&c);
		if (m->old_kind != 'K' && m->old_kind != 'O')
			c.bad = 1;
		cur_tuple(&c, &m->oldt);
		break;
	case 'T':
		m->ntrunc = cur_u32(&c);
		m->trunc_flags = cur_u8(&c);
		if (c.bad || m->ntrunc > (size_t)(c.end - c.p) / 4) {
			c.bad = 1;
			break;
		}
		m->trunc = dm_xcalloc(m->ntrunc + 1, sizeof *m->trunc);
		for (size_t i = 0; i < m->ntrunc; i++)
			m->trunc[i] = cur_u32(&c);
		break;
	case 'M':
		/* logical decoding messages: only with the messages option, which dm never asks for */
		(void)cur_u8(&c);
		(void)cur_u64(&c);
		free(cur_str(&c));
		{
			uint32_t n = cur_u32(&c);
			if (!c.bad && n <= (size_t)(c.end - c.p))
				c.p += n;
			else
				c.bad = 1;
		}
		break;
	default:
		*why = "unknown pgoutput message (protocol version 1 expected)";
		return -1;
	}
	if (c.bad) {
		*why = "pgoutput message cut short or malformed";
		return -1;
	}
	if (c.p != c.end) {
		*why = "pgoutput message longer than its fields";
		return -1;
	}
	return 0;
}

dmpgo_relation *
dmpgo_relcache_get(const dmpgo_relcache *c, uint32_t relid)
{
	for (size_t i = 0; i < c->n; i++)
		if (c->rels[i].relid == relid)
			return &c->rels[i];
	return NULL;
}

dmpgo_relation *
dmpgo_relcache_put(dmpgo_relcache *c, dmpgo_msg *m)
{
	dmpgo_relation *r = dmpgo_relcache_get(c, m->rel.relid);

	if (r == NULL) {
		if (c->n == c->cap) {
			c->cap = c->cap ? 2 * c->cap : 16;
			c->rels = dm_xrealloc(c->rels, c->cap * sizeof *c->rels);
		}
		r = &c->rels[c->n++];
	} else {
		dmpgo_relation_free(r);
	}
	*r = m->rel;
	memset(&m->rel, 0, sizeof m->rel);
	return r;
}

void
dmpgo_relcache_free(dmpgo_relcache *c)
{
	if (c == NULL)
		return;
	for (size_t i = 0; i < c->n; i++)
		dmpgo_relation_free(&c->rels[i]);
	free(c->rels);
	memset(c, 0, sizeof *c);
}

int
dmpgo_tuple_key(const dmpgo_relation *r, const dmpgo_tuple *t, dm_value *keys, const char **why)
{
	size_t k = 0;

	if (t->ncols != r->ncols) {
		*why = "a change's column count differs from its relation's";
		return -1;
	}
	for (size_t i = 0; i < r->ncols; i++) {
		if (!r->cols[i].key)
			continue;
		if (t->kinds[i] == 'n') {
			*why = "a key value is NULL";
			return -1;
		}
		if (t->kinds[i] == 'u') {
			*why = "a key value was not sent (unchanged TOAST)";
			return -1;
		}
		if (t->kinds[i] != 't') {
			*why = "a key value is in binary";
			return -1;
		}
		keys[k++] = t->vals[i];
	}
	return 0;
}

void
dmpgo_lsn_text(uint64_t lsn, char out[18])
{
	snprintf(out, 18, "%" PRIX32 "/%" PRIX32, (uint32_t)(lsn >> 32), (uint32_t)lsn);
}

static int
hex32(const char *s, size_t n, uint32_t *out)
{
	uint64_t v = 0;

	if (n == 0 || n > 8)
		return -1;
	for (size_t i = 0; i < n; i++) {
		char ch = s[i];
		int d = ch >= '0' && ch <= '9' ? ch - '0' : ch >= 'A' && ch <= 'F' ? ch - 'A' + 10 :
		    ch >= 'a' && ch <= 'f' ? ch - 'a' + 10 : -1;
		if (d < 0)
			return -1;
		v = v << 4 | (uint64_t)d;
	}
	*out = (uint32_t)v;
	return 0;
}

int
dmpgo_lsn_parse(const char *s, uint64_t *lsn)
{
	const char *slash = strchr(s, '/');
	uint32_t hi, lo;

	if (slash == NULL || hex32(s, (size_t)(slash - s), &hi) < 0 ||
	    hex32(slash + 1, strlen(slash + 1), &lo) < 0)
		return -1;
	*lsn = (uint64_t)hi << 32 | lo;
	return 0;
}

void
dmpgo_time_text(int64_t pg_us, char out[40])
{
	/* Years 1 to 9999 only: no overflow, no strftime output longer than out. */
	const int64_t lo = INT64_C(-63082281600000000), hi = INT64_C(252455615999999999);
	struct tm tm;

	if (pg_us < lo || pg_us > hi) {
		snprintf(out, 40, "invalid");
		return;
	}
	int64_t us = pg_us + DMPGO_EPOCH_OFFSET_US;
	int64_t secs = us / 1000000, frac = us % 1000000;

	if (frac < 0) {
		frac += 1000000;
		secs--;
	}
	time_t t = (time_t)secs;
	if (gmtime_r(&t, &tm) == NULL) {
		snprintf(out, 40, "invalid");
		return;
	}
	size_t n = strftime(out, 40, "%Y-%m-%d %H:%M:%S", &tm);
	if (frac != 0) {
		/* as timestamptz prints it: the fraction without trailing zeros */
		char f[8];
		snprintf(f, sizeof f, ".%06" PRId64, frac);
		size_t fl = strlen(f);
		while (f[fl - 1] == '0')
			f[--fl] = '\0';
		snprintf(out + n, 40 - n, "%s+00", f);
	} else {
		snprintf(out + n, 40 - n, "+00");
	}
}
