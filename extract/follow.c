/*
 * follow.c - dm-decode's follow mode: START_REPLICATION on the slot, pgoutput
 * messages turned into the change feed, standby status updates that confirm
 * the slot only up to what the destination applied (dm.follow).
 */
#define _POSIX_C_SOURCE 200809L
#include "decode.h"
#include "feed.h"
#include "pgoutput.h"
#include "state.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* A standby status update at least this often, so the server never thinks us gone. */
#define STATUS_INTERVAL_MS 10000
/* dm.follow is read this often. */
#define DEST_INTERVAL_MS 1000

typedef struct follower {
	const decode_opts *o;
	PGconn *repl, *src, *dest;
	dmf_writer w;
	dmpgo_relcache rels;
	dmpgo_msg m;
	dm_value *keys, *oldkeys;
	size_t keycap;
	uint64_t start;		/* the slot's confirmed_flush_lsn when we started */
	uint64_t received;	/* the furthest WAL position the server told us of */
	uint64_t last_end;	/* end LSN of the last commit written */
	uint64_t applied;	/* dm.follow's applied_lsn, 0 while none */
	uint64_t confirmed;	/* what the last status update confirmed */
	int in_txn, txn_changes;
	uint32_t txn_xid;	/* the open transaction's id, from its Begin */
	int64_t now_ms, last_status_ms, last_dest_ms, last_change_ms;
	int done;		/* --until-lsn or --until-idle reached */
} follower;

static int64_t
mono_ms(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int64_t
pg_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000 - DMPGO_EPOCH_OFFSET_US;
}

/*
 * What the slot may be confirmed to: the destination's applied_lsn, never
 * further, and never beyond what this feed has seen (a hand-written value
 * from the future waits). Nothing (0) while it is not past our start: the
 * slot is then already there, and confirming less would move it back
 * (PostgreSQL 15 takes a smaller flush position as it comes).
 */
static uint64_t
confirmable(const follower *f)
{
	uint64_t seen = f->received > f->last_end ? f->received : f->last_end;
	uint64_t lsn = f->applied < seen ? f->applied : seen;

	/* A destination restored to an older state cannot take the slot back: its WAL is gone. */
	if (lsn < f->confirmed)
		lsn = f->confirmed;
	return lsn > f->start ? lsn : 0;
}

static int
send_status(follower *f, int reply)
{
	char msg[34];
	uint64_t flush = confirmable(f);
	size_t n = dmpgo_status_update(msg, f->received, flush, flush, pg_now_us(), reply);

	if (dmpg_copy_both_send(f->repl, msg, n) < 0)
		return -1;
	if (flush != f->confirmed) {
		char t[18];
		dmpgo_lsn_text(flush, t);
		dm_debug("confirmed the slot up to %s", t);
	}
	f->confirmed = flush;
	f->last_status_ms = f->now_ms;
	return 0;
}

/* Reads dm.follow's applied_lsn for our slot. 0, or -1 error printed. */
static int
read_applied(follower *f)
{
	const char *p[1] = { f->o->slot };
	PGresult *res = dmpg_exec_params(f->dest,
	    "SELECT applied_lsn::pg_catalog.text FROM dm.follow WHERE slot = $1 AND applied_lsn IS NOT NULL", 1, p);

	f->last_dest_ms = f->now_ms;
	if (res == NULL)
		return -1;
	uint64_t lsn = 0;
	if (dmpg_nrows(res) == 1 && dmpgo_lsn_parse(dmpg_value(res, 0, 0), &lsn) < 0)
		lsn = 0;
	dmpg_clear(res);
	f->applied = lsn;
	return 0;
}

/* Writes the relation message for r, with its columns' types named by the source's catalog. */
static int
write_relation(follower *f, const dmpgo_relation *r)
{
	dm_buf oids = { 0 }, mods = { 0 };
	int rc = -1;

	if (r->nkey == 0) {
		dm_err("table %s.%s has no replica identity: its changes cannot be followed by key; add a primary key",
		    r->nspname, r->relname);
		return -1;
	}
	dm_buf_putc(&oids, '{');
	dm_buf_putc(&mods, '{');
	for (size_t i = 0; i < r->ncols; i++) {
		dm_buf_printf(&oids, "%s%u", i ? "," : "", r->cols[i].type);
		dm_buf_printf(&mods, "%s%d", i ? "," : "", r->cols[i].typmod);
	}
	dm_buf_putc(&oids, '}');
	dm_buf_putc(&mods, '}');
	const char *p[2] = { dm_buf_cstr(&oids), dm_buf_cstr(&mods) };
	PGresult *res = dmpg_exec_params(f->src,
	    "SELECT pg_catalog.format_type(u.t, u.m) FROM ROWS FROM (pg_catalog.unnest($1::pg_catalog.oid[]),"
	    " pg_catalog.unnest($2::pg_catalog.int4[])) WITH ORDINALITY AS u(t, m, o) ORDER BY u.o", 2, p);
	if (res == NULL || (size_t)dmpg_nrows(res) != r->ncols)
		goto out;
	const char **names = dm_xcalloc(r->ncols + 1, sizeof *names);
	const char **types = dm_xcalloc(r->ncols + 1, sizeof *types);
	size_t *key = dm_xcalloc(r->nkey + 1, sizeof *key), k = 0;
	for (size_t i = 0; i < r->ncols; i++) {
		names[i] = r->cols[i].name;
		types[i] = dmpg_value(res, (int)i, 0);
		if (r->cols[i].key)
			key[k++] = i;
	}
	char *name = dm_qualify(r->nspname[0] ? r->nspname : "pg_catalog", r->relname);
	dmf_writer_relation(&f->w, r->relid, name, r->ncols, names, types, r->nkey, key);
	free(name);
	free(names);
	free(types);
	free(key);
	rc = 0;
out:
	dmpg_clear(res);
	dm_buf_free(&oids);
	dm_buf_free(&mods);
	return rc;
}

/* The relation of a change, with room for its keys; NULL after printing why. */
static const dmpgo_relation *
change_relation(follower *f, uint32_t relid)
{
	const dmpgo_relation *r = dmpgo_relcache_get(&f->rels, relid);

	if (r == NULL) {
		dm_err("the server sent a change of relation %u before describing it (protocol error)", relid);
		return NULL;
	}
	if (f->keycap < r->nkey) {
		f->keycap = r->nkey;
		f->keys = dm_xrealloc(f->keys, f->keycap * sizeof *f->keys);
		f->oldkeys = dm_xrealloc(f->oldkeys, f->keycap * sizeof *f->oldkeys);
	}
	return r;
}

static int
key_of(const dmpgo_relation *r, const dmpgo_tuple *t, dm_value *keys)
{
	const char *why = NULL;

	if (dmpgo_tuple_key(r, t, keys, &why) < 0) {
		dm_err("%s.%s: %s: cannot follow this change by key", r->nspname, r->relname, why);
		return -1;
	}
	return 0;
}

static int
same_key(const dm_value *a, const dm_value *b, size_t n)
{
	for (size_t i = 0; i < n; i++)
		if (a[i].len != b[i].len || (a[i].len && memcmp(a[i].ptr, b[i].ptr, a[i].len) != 0))
			return 0;
	return 1;
}

/* A truncate cannot be followed by keys: the rows it removed are not in the WAL. */
static void
truncate_error(follower *f)
{
	dm_buf names = { 0 };

	for (size_t i = 0; i < f->m.ntrunc; i++) {
		const dmpgo_relation *r = dmpgo_relcache_get(&f->rels, f->m.trunc[i]);
		if (i)
			dm_buf_puts(&names, ", ");
		if (r != NULL)
			dm_buf_printf(&names, "%s.%s", r->nspname, r->relname);
		else
			dm_buf_printf(&names, "relation %u", f->m.trunc[i]);
	}
	dm_err("TRUNCATE of %s: a truncate cannot be followed by keys; catch the table up with a full"
	    " comparison (dm-migrate --full --delete run), then follow again", dm_buf_cstr(&names));
	dm_buf_free(&names);
}

/* One pgoutput message. 0, or -1 after printing why. */
static int
on_message(follower *f, const char *data, size_t len)
{
	const char *why = NULL;
	const dmpgo_relation *r;

	if (dmpgo_parse(data, len, &f->m, &why) < 0) {
		dm_err("cannot decode the server's message: %s", why);
		return -1;
	}
	switch (f->m.type) {
	case 'B':
		f->in_txn = 1;
		f->txn_changes = 0;
		f->txn_xid = f->m.xid;
		break;
	case 'C': {
		f->in_txn = 0;
		if (f->txn_changes > 0) {
			char c[18], e[18], t[40];
			dmpgo_lsn_text(f->m.commit_lsn, c);
			dmpgo_lsn_text(f->m.end_lsn, e);
			dmpgo_time_text(f->m.commit_time, t);
			if (dmf_writer_commit(&f->w, c, e, t, f->txn_xid) < 0) {
				dm_err("cannot write the feed: %s", strerror(f->w.err));
				return -1;
			}
			f->last_end = f->m.end_lsn;
			f->last_change_ms = f->now_ms;
		}
		if (f->o->until_lsn && f->m.end_lsn >= f->o->until_lsn)
			f->done = 1;
		break;
	}
	case 'R':
		r = dmpgo_relcache_put(&f->rels, &f->m);
		if (write_relation(f, r) < 0)
			return -1;
		break;
	case 'I':
		if ((r = change_relation(f, f->m.relid)) == NULL || key_of(r, &f->m.newt, f->keys) < 0)
			return -1;
		dmf_writer_change(&f->w, DMF_INSERT, r->relid, f->keys, r->nkey);
		f->txn_changes++;
		break;
	case 'U':
		if ((r = change_relation(f, f->m.relid)) == NULL || key_of(r, &f->m.newt, f->keys) < 0)
			return -1;
		if (f->m.old_kind != 0) {
			if (key_of(r, &f->m.oldt, f->oldkeys) < 0)
				return -1;
			if (!same_key(f->keys, f->oldkeys, r->nkey)) {
				/* the row moved to another key: the old one is gone, the new one came */
				dmf_writer_change(&f->w, DMF_DELETE, r->relid, f->oldkeys, r->nkey);
				dmf_writer_change(&f->w, DMF_INSERT, r->relid, f->keys, r->nkey);
				f->txn_changes += 2;
				break;
			}
		}
		dmf_writer_change(&f->w, DMF_UPDATE, r->relid, f->keys, r->nkey);
		f->txn_changes++;
		break;
	case 'D':
		if ((r = change_relation(f, f->m.relid)) == NULL || key_of(r, &f->m.oldt, f->keys) < 0)
			return -1;
		dmf_writer_change(&f->w, DMF_DELETE, r->relid, f->keys, r->nkey);
		f->txn_changes++;
		break;
	case 'T':
		truncate_error(f);
		return -1;
	default:
		break;	/* types, origins, messages: nothing to follow */
	}
	if (f->w.err != 0) {
		dm_err("cannot write the feed: %s", strerror(f->w.err));
		return -1;
	}
	return 0;
}

/* One CopyData message of the replication stream. 0, or -1 after printing why. */
static int
on_copydata(follower *f, const char *buf, size_t len)
{
	dmpgo_copydata cd;
	const char *why = NULL;

	if (dmpgo_copydata_parse(buf, len, &cd, &why) < 0) {
		dm_err("cannot read the replication stream: %s", why);
		return -1;
	}
	if (cd.kind == 'k') {
		if (cd.wal_end > f->received)
			f->received = cd.wal_end;
		/* Every commit before the server's position has reached us: --until-lsn may be met without one of ours. */
		if (f->o->until_lsn && !f->in_txn && cd.wal_end >= f->o->until_lsn)
			f->done = 1;
		return cd.reply ? send_status(f, 0) : 0;
	}
	if (cd.wal_start > f->received)
		f->received = cd.wal_start;
	return on_message(f, cd.data, cd.len);
}

/* Opens what follow needs and starts streaming; 0, or an exit code. */
static int
follow_start(follower *f, char **start_text)
{
	const decode_opts *o = f->o;

	f->src = dmpg_connect(o->conninfo, "source");
	if (f->src == NULL)
		return DM_EXIT_FAIL;
	if (decode_preflight(f->src) < 0)
		return DM_EXIT_FAIL;
	const char *p[1] = { o->publication };
	PGresult *res = dmpg_exec_params(f->src, "SELECT 1 FROM pg_catalog.pg_publication WHERE pubname = $1", 1, p);
	if (res == NULL)
		return DM_EXIT_FAIL;
	int have_pub = dmpg_nrows(res) == 1;
	dmpg_clear(res);
	if (!have_pub) {
		dm_err("no publication %s: create it with dm-decode --create --tables ...", o->publication);
		return DM_EXIT_FAIL;
	}
	if (decode_check_identity(f->src, o->publication) < 0)
		return DM_EXIT_FAIL;
	int busy = decode_slot_free(f->src, o, start_text);
	if (busy != 0)
		return busy > 0 ? DM_EXIT_LOCKED : DM_EXIT_FAIL;
	if (dmpgo_lsn_parse(*start_text, &f->start) < 0) {
		dm_err("the slot's confirmed_flush_lsn %s is not an LSN", *start_text);
		return DM_EXIT_FAIL;
	}
	if (o->dest_conninfo != NULL) {
		f->dest = dmpg_connect(o->dest_conninfo, "destination");
		if (f->dest == NULL || dmstate_ensure(f->dest) < 0)
			return DM_EXIT_FAIL;
		f->now_ms = mono_ms();
		if (read_applied(f) < 0)
			return DM_EXIT_FAIL;
	}
	f->repl = dmpg_connect_replication(o->conninfo, "source");
	if (f->repl == NULL) {
		decode_explain_refusal(f->src);
		return DM_EXIT_FAIL;
	}
	/* The publication's name travels as a quoted identifier inside a string literal. */
	char *qp = dmpg_ident(f->repl, o->publication);
	dm_buf lit = { 0 };
	for (const char *c = qp; *c; c++) {
		if (*c == '\'')
			dm_buf_putc(&lit, '\'');
		dm_buf_putc(&lit, *c);
	}
	/*
	 * From what the destination holds when it is past the slot's confirmed
	 * position (the slot is confirmed only while we stream): a transaction
	 * already applied is not decoded again.
	 */
	char from[18];
	dmpgo_lsn_text(f->applied > f->start ? f->applied : f->start, from);
	char *cmd = dm_xasprintf("START_REPLICATION SLOT %s LOGICAL %s (proto_version '1', publication_names '%s')",
	    o->slot, from, dm_buf_cstr(&lit));
	int rc = dmpg_copy_both_start(f->repl, cmd);
	free(cmd);
	free(qp);
	dm_buf_free(&lit);
	if (rc < 0) {
		if (strstr(dmpg_last_error(), "is active for PID") != NULL)
			return DM_EXIT_LOCKED;
		return DM_EXIT_FAIL;
	}
	return 0;
}

/* The next deadline of the loop, from now, in milliseconds. */
static int
next_wait(const follower *f)
{
	int64_t wait = f->last_status_ms + STATUS_INTERVAL_MS - f->now_ms;

	if (f->dest != NULL && f->last_dest_ms + DEST_INTERVAL_MS - f->now_ms < wait)
		wait = f->last_dest_ms + DEST_INTERVAL_MS - f->now_ms;
	if (f->o->until_idle_ms && f->last_change_ms + (int64_t)f->o->until_idle_ms - f->now_ms < wait)
		wait = f->last_change_ms + (int64_t)f->o->until_idle_ms - f->now_ms;
	return wait < 0 ? 0 : wait > 1000 ? 1000 : (int)wait;
}

int
decode_follow(const decode_opts *o)
{
	follower f;
	char *start_text = NULL, *buf = NULL;
	int rc, open = 0;

	memset(&f, 0, sizeof f);
	f.o = o;
	dmpgo_msg_init(&f.m);
	rc = follow_start(&f, &start_text);
	if (rc != 0)
		goto out;
	rc = DM_EXIT_FAIL;
	dmf_writer_open(&f.w, stdout, o->slot, o->publication, start_text);
	open = 1;
	if (fflush(stdout) != 0) {
		dm_err("cannot write the feed: %s", strerror(errno));
		goto out;
	}
	f.now_ms = f.last_change_ms = f.last_dest_ms = mono_ms();
	if (send_status(&f, 0) < 0)
		goto out;
	while (!decode_stop && !f.done) {
		int n = dmpg_copy_both_read(f.repl, next_wait(&f), &buf);
		f.now_ms = mono_ms();
		if (n == -1) {
			dm_err("the server ended replication");
			goto out;
		}
		if (n == -2)
			goto out;
		if (n > 0) {
			int bad = on_copydata(&f, buf, (size_t)n);
			dmpg_freemem(buf);
			buf = NULL;
			if (bad)
				goto out;
		}
		if (f.dest != NULL && f.now_ms - f.last_dest_ms >= DEST_INTERVAL_MS) {
			uint64_t before = confirmable(&f);
			if (read_applied(&f) < 0)
				goto out;
			if (confirmable(&f) != before && send_status(&f, 0) < 0)
				goto out;
		}
		if (f.now_ms - f.last_status_ms >= STATUS_INTERVAL_MS && send_status(&f, 0) < 0)
			goto out;
		if (o->until_idle_ms && !f.in_txn && f.now_ms - f.last_change_ms >= (int64_t)o->until_idle_ms)
			f.done = 1;
	}
	/*
	 * Stopped at a message boundary. A transaction cut off by a signal
	 * has no commit in the feed: its changes come again on the next run.
	 */
	if (f.dest != NULL && read_applied(&f) < 0)
		goto out;
	if (send_status(&f, 0) < 0)
		goto out;
	if (dmf_writer_finish(&f.w) < 0 || dm_close_output(stdout, "the feed") < 0)
		goto out;
	rc = DM_EXIT_OK;
out:
	dmpg_freemem(buf);
	if (open)
		dmf_writer_free(&f.w);
	dmpgo_msg_free(&f.m);
	dmpgo_relcache_free(&f.rels);
	free(f.keys);
	free(f.oldkeys);
	free(start_text);
	dmpg_finish(f.repl);
	dmpg_finish(f.src);
	dmpg_finish(f.dest);
	return rc;
}
