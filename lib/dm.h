/*
 * dm.h - what every dm program shares: exit codes, error reporting,
 * allocation that never returns NULL, and the value type rows are made of.
 */
#ifndef DM_H
#define DM_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define DM_VERSION "0.1.0"

/* The one exit-code table, documented in dm(7). */
enum {
	DM_EXIT_OK = 0,
	DM_EXIT_FAIL = 1,	/* connection, SQL, I/O, catalog mismatch */
	DM_EXIT_USAGE = 2,	/* bad option or argument */
	DM_EXIT_STREAM = 3,	/* malformed, truncated or foreign stream */
	DM_EXIT_DIFF = 4,	/* verification found differences */
	DM_EXIT_REJECT = 5,	/* rows rejected by the destination */
	DM_EXIT_LOCKED = 6,	/* another run holds the entity */
	DM_EXIT_TRANSIENT = 7	/* lost or refused connection, server restarting: rerun later */
};

/* A column value as it travels: SQL NULL, PostgreSQL text output, or bytea bytes. */
typedef enum { DM_NULL = 0, DM_TEXT = 1, DM_BIN = 2 } dm_kind;

typedef struct dm_value {
	const char *ptr;	/* not owned: points into a reader's or parser's buffer */
	uint32_t len;
	uint8_t kind;
} dm_value;

/* Set once by main; used as the prefix of every message. */
extern const char *dm_prog;
/* The entity or table the program works on, or NULL: the second part of every message. */
extern const char *dm_subject;
/* -q lowers it to 0, -v raises it to 2; 1 is the default; -1 silences even errors (fuzzing). */
extern int dm_verbosity;

/* Prints "prog: subject: message" on stderr. */
void dm_err(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, only when dm_verbosity >= 2. */
void dm_debug(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
/* Same, only when dm_verbosity >= 1. */
void dm_info(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Allocation that exits with DM_EXIT_FAIL rather than return NULL. */
void *dm_xmalloc(size_t n);
void *dm_xcalloc(size_t count, size_t size);
void *dm_xrealloc(void *p, size_t n);
char *dm_xstrdup(const char *s);
char *dm_xstrndup(const char *s, size_t n);
/* Returns a newly allocated formatted string; caller frees. */
char *dm_xasprintf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/*
 * Parses a non-negative decimal integer that fits in *out; returns 0, or -1
 * when s is empty, has junk, or overflows. Replaces atoi, which cannot fail.
 */
int dm_parse_u64(const char *s, uint64_t *out);

/*
 * Checks that everything written to fp reached the kernel: flushes, then
 * closes. Returns 0, or -1 after printing why. A pipeline must never end
 * silently short.
 */
int dm_close_output(FILE *fp, const char *what);

/*
 * Splits "schema.table" into two new strings; a part with a dot or a quote is
 * written "quoted" (quotes doubled). Returns -1 when it is not two parts.
 */
int dm_split_table(const char *qualified, char **schema, char **table);
/* The inverse: "schema.table", quoting a part only when it needs it. Caller frees. */
char *dm_qualify(const char *schema, const char *table);
/* Do two qualified names (quoted or not) name the same table? */
int dm_same_table(const char *a, const char *b);

/* A growable byte buffer; dm_buf_free accepts NULL. */
typedef struct dm_buf {
	char *data;
	size_t len;
	size_t cap;
} dm_buf;

void dm_buf_reserve(dm_buf *b, size_t extra);
void dm_buf_append(dm_buf *b, const void *p, size_t n);
void dm_buf_putc(dm_buf *b, char c);
void dm_buf_puts(dm_buf *b, const char *s);
void dm_buf_printf(dm_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Appends a PostgreSQL text[] literal of n items, each after prefix (may be ""):
 * every element double-quoted, so commas, braces and quotes stay inside it. */
void dm_buf_text_array(dm_buf *b, char *const *items, int n, const char *prefix);
/* Makes data a NUL-terminated string (the NUL is not counted in len). */
const char *dm_buf_cstr(dm_buf *b);
void dm_buf_free(dm_buf *b);

/* Resolves a connection string from --db or --db-env; NULL after printing why. */
const char *dm_conninfo(const char *db, const char *db_env);

/* Standard handling of --help/--version. Returns 1 when argv[1] was one of them. */
int dm_std_option(const char *arg, const char *usage_text);

#endif
