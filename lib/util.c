/* util.c - messages, allocation, buffers: the small things every program needs. */
#define _POSIX_C_SOURCE 200809L
#include "dm.h"

#include <errno.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

const char *dm_prog = "dm";
const char *dm_subject = NULL;
int dm_verbosity = 1;

static void dm_vmessage(const char *fmt, va_list ap) __attribute__((format(printf, 1, 0)));

static void
dm_vmessage(const char *fmt, va_list ap)
{
	/* Build the whole line first so concurrent stages never interleave mid-line. */
	char line[4096];
	int n;

	if (dm_subject != NULL)
		n = snprintf(line, sizeof line, "%s: %s: ", dm_prog, dm_subject);
	else
		n = snprintf(line, sizeof line, "%s: ", dm_prog);
	if (n < 0 || (size_t)n >= sizeof line)
		n = 0;
	vsnprintf(line + n, sizeof line - (size_t)n, fmt, ap);
	size_t len = strlen(line);
	/* libpq messages end with a newline of their own; keep one line per message. */
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == ' '))
		line[--len] = '\0';
	for (size_t i = 0; i < len; i++)
		if (line[i] == '\n' || line[i] == '\t' || line[i] == '\r')
			line[i] = ' ';
	if (len + 1 < sizeof line) {
		line[len++] = '\n';
		line[len] = '\0';
	}
	(void)!write(STDERR_FILENO, line, len);
}

void
dm_err(const char *fmt, ...)
{
	va_list ap;

	if (dm_verbosity < 0)
		return;
	va_start(ap, fmt);
	dm_vmessage(fmt, ap);
	va_end(ap);
}

void
dm_info(const char *fmt, ...)
{
	va_list ap;

	if (dm_verbosity < 1)
		return;
	va_start(ap, fmt);
	dm_vmessage(fmt, ap);
	va_end(ap);
}

void
dm_debug(const char *fmt, ...)
{
	va_list ap;

	if (dm_verbosity < 2)
		return;
	va_start(ap, fmt);
	dm_vmessage(fmt, ap);
	va_end(ap);
}

static void
dm_oom(void)
{
	dm_err("out of memory");
	exit(DM_EXIT_FAIL);
}

void *
dm_xmalloc(size_t n)
{
	void *p = malloc(n ? n : 1);

	if (p == NULL)
		dm_oom();
	return p;
}

void *
dm_xcalloc(size_t count, size_t size)
{
	void *p = calloc(count ? count : 1, size ? size : 1);

	if (p == NULL)
		dm_oom();
	return p;
}

void *
dm_xrealloc(void *p, size_t n)
{
	void *q = realloc(p, n ? n : 1);

	if (q == NULL)
		dm_oom();
	return q;
}

char *
dm_xstrdup(const char *s)
{
	return dm_xstrndup(s, strlen(s));
}

char *
dm_xstrndup(const char *s, size_t n)
{
	char *p = dm_xmalloc(n + 1);

	memcpy(p, s, n);
	p[n] = '\0';
	return p;
}

char *
dm_xasprintf(const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		dm_oom();
	char *p = dm_xmalloc((size_t)n + 1);
	va_start(ap, fmt);
	vsnprintf(p, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return p;
}

int
dm_parse_u64(const char *s, uint64_t *out)
{
	uint64_t v = 0;

	if (s == NULL || *s == '\0')
		return -1;
	for (; *s; s++) {
		if (*s < '0' || *s > '9')
			return -1;
		unsigned d = (unsigned)(*s - '0');
		if (v > (UINT64_MAX - d) / 10)
			return -1;
		v = v * 10 + d;
	}
	*out = v;
	return 0;
}

int
dm_close_output(FILE *fp, const char *what)
{
	int failed = 0;

	if (fflush(fp) != 0 || ferror(fp))
		failed = 1;
	int saved = errno;
	if (fclose(fp) != 0 && !failed) {
		failed = 1;
		saved = errno;
	}
	if (failed) {
		dm_err("cannot write %s: %s", what, strerror(saved ? saved : EIO));
		return -1;
	}
	return 0;
}

/* One part of a qualified name: "quoted" (with "" for a quote) or bare up to the next dot. */
static const char *
dm_split_part(const char *p, dm_buf *out)
{
	out->len = 0;
	if (*p != '"') {
		const char *dot = strchr(p, '.');
		size_t n = dot ? (size_t)(dot - p) : strlen(p);
		dm_buf_append(out, p, n);
		return p + n;
	}
	for (p++; *p; p++) {
		if (*p == '"') {
			if (p[1] != '"')
				return p + 1;
			p++;
		}
		dm_buf_putc(out, *p);
	}
	return NULL;	/* unterminated quote */
}

int
dm_split_table(const char *qualified, char **schema, char **table)
{
	dm_buf a = { 0 }, b = { 0 };
	int rc = -1;

	const char *p = dm_split_part(qualified, &a);
	if (p == NULL || *p != '.' || a.len == 0)
		goto out;
	p = dm_split_part(p + 1, &b);
	if (p == NULL || *p != '\0' || b.len == 0)
		goto out;
	*schema = dm_xstrdup(dm_buf_cstr(&a));
	*table = dm_xstrdup(dm_buf_cstr(&b));
	rc = 0;
out:
	dm_buf_free(&a);
	dm_buf_free(&b);
	return rc;
}

static void
dm_qualify_part(dm_buf *out, const char *s)
{
	if (*s != '\0' && strpbrk(s, ".\"") == NULL) {
		dm_buf_puts(out, s);
		return;
	}
	dm_buf_putc(out, '"');
	for (; *s; s++) {
		if (*s == '"')
			dm_buf_putc(out, '"');
		dm_buf_putc(out, *s);
	}
	dm_buf_putc(out, '"');
}

char *
dm_qualify(const char *schema, const char *table)
{
	dm_buf b = { 0 };

	dm_qualify_part(&b, schema);
	dm_buf_putc(&b, '.');
	dm_qualify_part(&b, table);
	return (char *)dm_buf_cstr(&b);
}

int
dm_same_table(const char *a, const char *b)
{
	char *as = NULL, *at = NULL, *bs = NULL, *bt = NULL;
	int same = 0;

	if (dm_split_table(a, &as, &at) == 0 && dm_split_table(b, &bs, &bt) == 0)
		same = strcmp(as, bs) == 0 && strcmp(at, bt) == 0;
	free(as);
	free(at);
	free(bs);
	free(bt);
	return same;
}

void
dm_buf_reserve(dm_buf *b, size_t extra)
{
	if (b->len + extra + 1 <= b->cap)
		return;
	size_t cap = b->cap ? b->cap : 256;
	while (cap < b->len + extra + 1)
		cap *= 2;
	b->data = dm_xrealloc(b->data, cap);
	b->cap = cap;
}

void
dm_buf_append(dm_buf *b, const void *p, size_t n)
{
	dm_buf_reserve(b, n);
	if (n)
		memcpy(b->data + b->len, p, n);
	b->len += n;
}

void
dm_buf_putc(dm_buf *b, char c)
{
	dm_buf_reserve(b, 1);
	b->data[b->len++] = c;
}

void
dm_buf_puts(dm_buf *b, const char *s)
{
	dm_buf_append(b, s, strlen(s));
}

void
dm_buf_text_array(dm_buf *b, char *const *items, int n, const char *prefix)
{
	dm_buf_putc(b, '{');
	for (int i = 0; i < n; i++) {
		dm_buf_puts(b, i ? ",\"" : "\"");
		for (int part = 0; part < 2; part++)
			for (const char *q = part ? items[i] : prefix; *q; q++) {
				if (*q == '"' || *q == '\\')
					dm_buf_putc(b, '\\');
				dm_buf_putc(b, *q);
			}
		dm_buf_putc(b, '"');
	}
	dm_buf_putc(b, '}');
}

void
dm_buf_printf(dm_buf *b, const char *fmt, ...)
{
	va_list ap;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	if (n < 0)
		dm_oom();
	dm_buf_reserve(b, (size_t)n);
	va_start(ap, fmt);
	vsnprintf(b->data + b->len, (size_t)n + 1, fmt, ap);
	va_end(ap);
	b->len += (size_t)n;
}

const char *
dm_buf_cstr(dm_buf *b)
{
	dm_buf_reserve(b, 0);
	b->data[b->len] = '\0';
	return b->data;
}

void
dm_buf_free(dm_buf *b)
{
	if (b == NULL)
		return;
	free(b->data);
	b->data = NULL;
	b->len = b->cap = 0;
}

const char *
dm_conninfo(const char *db, const char *db_env)
{
	if (db != NULL && db_env != NULL) {
		dm_err("give --db or --db-env, not both");
		return NULL;
	}
	if (db != NULL)
		return db;
	if (db_env != NULL) {
		const char *v = getenv(db_env);
		if (v == NULL || *v == '\0') {
			dm_err("environment variable %s is not set: export the connection string there", db_env);
			return NULL;
		}
		return v;
	}
	dm_err("no database: give --db CONNINFO or --db-env VAR");
	return NULL;
}

int
dm_std_option(const char *arg, const char *usage_text)
{
	if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
		fputs(usage_text, stdout);
		exit(dm_close_output(stdout, "standard output") ? DM_EXIT_FAIL : DM_EXIT_OK);
	}
	if (strcmp(arg, "--version") == 0) {
		printf("%s (dm) %s\n", dm_prog, DM_VERSION);
		exit(dm_close_output(stdout, "standard output") ? DM_EXIT_FAIL : DM_EXIT_OK);
	}
	return 0;
}
