/* spec.c - parse spec files; UUID version 5 for legacy keys. */
#define _POSIX_C_SOURCE 200809L
#include "spec.h"

#include <ctype.h>
#include <errno.h>
#include <stdarg.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

static char *
dmspec_trim(char *s)
{
	while (isspace((unsigned char)*s))
		s++;
	size_t n = strlen(s);
	while (n > 0 && isspace((unsigned char)s[n - 1]))
		s[--n] = '\0';
	return s;
}

static int dmspec_bad(const dmspec *sp, int line, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

static int
dmspec_bad(const dmspec *sp, int line, const char *fmt, ...)
{
	char msg[512];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof msg, fmt, ap);
	va_end(ap);
	dm_err("%s:%d: %s", sp->path, line, msg);
	return -1;
}

static int
dmspec_parse_uuid(const char *s, unsigned char out[16])
{
	int n = 0;

	for (const char *p = s; *p; p++) {
		if (*p == '-')
			continue;
		int hi = isxdigit((unsigned char)p[0]) ? 1 : 0;
		int lo = p[1] && isxdigit((unsigned char)p[1]) ? 1 : 0;
		if (!hi || !lo || n == 16)
			return -1;
		char two[3] = { p[0], p[1], 0 };
		out[n++] = (unsigned char)strtoul(two, NULL, 16);
		p++;
	}
	return n == 16 ? 0 : -1;
}

/* Splits "a, b,c" into a new array of trimmed names; returns the count. */
static size_t
dmspec_split(const char *list, char ***out)
{
	char *copy = dm_xstrdup(list), *save = NULL;
	size_t n = 0;

	*out = NULL;
	for (char *t = strtok_r(copy, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
		t = dmspec_trim(t);
		if (*t == '\0')
			continue;
		*out = dm_xrealloc(*out, (n + 1) * sizeof **out);
		(*out)[n++] = dm_xstrdup(t);
	}
	free(copy);
	return n;
}

static int
dmspec_valid_qualified(const char *s)
{
	const char *dot = strchr(s, '.');

	return dot != NULL && dot != s && dot[1] != '\0' && strchr(dot + 1, '.') == NULL;
}

static void
dmspec_entity_free(dmspec_entity *e)
{
	free(e->name);
	free(e->source);
	free(e->query);
	free(e->where);
	free(e->target);
	for (size_t i = 0; i < e->nkey; i++)
		free(e->key[i]);
	free(e->key);
	free(e->uuid_col);
	free(e->legacy_col);
	free(e->change_column);
	for (size_t i = 0; i < e->ncols; i++) {
		free(e->cols[i].dest);
		free(e->cols[i].value);
		free(e->cols[i].ref_entity);
	}
	free(e->cols);
	for (size_t i = 0; i < e->nexclude; i++)
		free(e->exclude[i]);
	free(e->exclude);
}

void
dmspec_free(dmspec *sp)
{
	if (sp == NULL)
		return;
	for (size_t i = 0; i < sp->nents; i++)
		dmspec_entity_free(&sp->ents[i]);
	free(sp->ents);
	free(sp->path);
	free(sp->source_timezone);
	memset(sp, 0, sizeof *sp);
}

const dmspec_entity *
dmspec_find(const dmspec *sp, const char *name)
{
	for (size_t i = 0; i < sp->nents; i++)
		if (strcmp(sp->ents[i].name, name) == 0)
			return &sp->ents[i];
	return NULL;
}

/* One "name = value" line of an [entity] section. */
static int
dmspec_entity_item(dmspec *sp, dmspec_entity *e, char *name, char *value, int line)
{
	char *word2 = strpbrk(name, " \t");
	char *dest = NULL;

	if (word2 != NULL) {
		*word2++ = '\0';
		dest = dmspec_trim(word2);
		if (*dest == '\0' || strpbrk(dest, " \t") != NULL)
			return dmspec_bad(sp, line, "expected \"%s DESTCOLUMN = ...\"", name);
	}
	if (strcmp(name, "where") == 0)
		e->where_line = line;
	if (strcmp(name, "query") == 0)
		e->query_line = line;
#define SCALAR(key, field) \
	if (strcmp(name, key) == 0 && dest == NULL) { \
		if (e->field != NULL) \
			return dmspec_bad(sp, line, "%s given twice in this entity", key); \
		e->field = dm_xstrdup(value); \
		return 0; \
	}
	SCALAR("source", source)
	SCALAR("query", query)
	SCALAR("where", where)
	SCALAR("target", target)
	SCALAR("uuid", uuid_col)
	SCALAR("legacy_key", legacy_col)
#undef SCALAR
	if (strcmp(name, "change_column") == 0 && dest == NULL) {
		if (e->change_column != NULL || e->no_change_column)
			return dmspec_bad(sp, line, "%s given twice in this entity", name);
		if (strcmp(value, "none") == 0)
			e->no_change_column = 1;
		else
			e->change_column = dm_xstrdup(value);
		return 0;
	}
	if (strcmp(name, "key") == 0 && dest == NULL) {
		if (e->nkey)
			return dmspec_bad(sp, line, "%s given twice in this entity", name);
		e->nkey = dmspec_split(value, &e->key);
		if (e->nkey == 0)
			return dmspec_bad(sp, line, "key needs at least one column");
		return 0;
	}
	if (strcmp(name, "exclude") == 0 && dest == NULL) {
		char **more;
		size_t n = dmspec_split(value, &more);
		e->exclude = dm_xrealloc(e->exclude, (e->nexclude + n + 1) * sizeof *e->exclude);
		memcpy(e->exclude + e->nexclude, more, n * sizeof *more);
		e->nexclude += n;
		free(more);
		return 0;
	}
	dmspec_kind kind;
	if (strcmp(name, "column") == 0)
		kind = DMSPEC_COLUMN;
	else if (strcmp(name, "expr") == 0 || strcmp(name, "const") == 0)
		kind = DMSPEC_EXPR;
	else if (strcmp(name, "ref") == 0)
		kind = DMSPEC_REF;
	else
		return dmspec_bad(sp, line, "unknown setting \"%s\" (see dm.conf(5))", name);
	if (dest == NULL)
		return dmspec_bad(sp, line, "expected \"%s DESTCOLUMN = ...\"", name);
	for (size_t i = 0; i < e->ncols; i++)
		if (strcmp(e->cols[i].dest, dest) == 0)
			return dmspec_bad(sp, line, "destination column \"%s\" mapped twice", dest);
	e->cols = dm_xrealloc(e->cols, (e->ncols + 1) * sizeof *e->cols);
	dmspec_col *c = &e->cols[e->ncols++];
	memset(c, 0, sizeof *c);
	c->dest = dm_xstrdup(dest);
	c->kind = kind;
	c->line = line;
	if (kind == DMSPEC_REF) {
		/* ref DEST = ENTITY(SOURCECOL[, SOURCECOL]) */
		char *open = strchr(value, '('), *close = strrchr(value, ')');
		if (open == NULL || close == NULL || close < open || close[1] != '\0' || open == value)
			return dmspec_bad(sp, line, "expected \"ref DESTCOLUMN = ENTITY(SOURCECOLUMN)\"");
		*open = '\0';
		*close = '\0';
		c->ref_entity = dm_xstrdup(dmspec_trim(value));
		c->value = dm_xstrdup(dmspec_trim(open + 1));
		if (*c->value == '\0')
			return dmspec_bad(sp, line, "ref needs the source column(s) holding the legacy key");
	} else {
		c->value = dm_xstrdup(value);
	}
	return 0;
}

/* Checks what a whole file must satisfy once read. */
static int
dmspec_check(dmspec *sp)
{
	int bad = 0;

	for (size_t i = 0; i < sp->nents; i++) {
		dmspec_entity *e = &sp->ents[i];
		if ((e->source == NULL) == (e->query == NULL))
			bad |= dmspec_bad(sp, e->line, "entity %s needs exactly one of source = SCHEMA.TABLE or query = SELECT ...",
			    e->name);
		if (e->source != NULL && !dmspec_valid_qualified(e->source))
			bad |= dmspec_bad(sp, e->line, "source %s: expected SCHEMA.TABLE", e->source);
		if (e->target == NULL || !dmspec_valid_qualified(e->target))
			bad |= dmspec_bad(sp, e->line, "entity %s needs target = SCHEMA.TABLE (the destination table)", e->name);
		if (e->query != NULL && e->nkey == 0)
			bad |= dmspec_bad(sp, e->line, "entity %s reads a query: name its legacy key (key = COLUMN)", e->name);
		if (e->uuid_col != NULL && !sp->have_ns)
			bad |= dmspec_bad(sp, e->line, "entity %s maps its key to a UUID: set uuid_namespace in [dm]", e->name);
		if (e->legacy_col != NULL && e->uuid_col == NULL)
			bad |= dmspec_bad(sp, e->line, "legacy_key needs uuid = DESTCOLUMN in entity %s", e->name);
		for (size_t c = 0; c < e->ncols; c++) {
			const dmspec_col *col = &e->cols[c];
			if (col->kind != DMSPEC_REF)
				continue;
			const dmspec_entity *r = dmspec_find(sp, col->ref_entity);
			if (r == NULL)
				bad |= dmspec_bad(sp, col->line, "ref: no entity \"%s\" in this file", col->ref_entity);
			else if (r->uuid_col == NULL)
				bad |= dmspec_bad(sp, col->line, "ref: entity %s has no uuid = column to point at", r->name);
			if (!sp->have_ns)
				bad |= dmspec_bad(sp, col->line, "ref needs uuid_namespace in [dm]");
		}
	}
	return bad ? -1 : 0;
}

int
dmspec_load(const char *path, dmspec *sp)
{
	FILE *fp = fopen(path, "r");
	char *line = NULL;
	size_t cap = 0;
	int lineno = 0, rc = -1;
	enum { NONE, DM, ENTITY } section = NONE;

	memset(sp, 0, sizeof *sp);
	sp->path = dm_xstrdup(path);
	if (fp == NULL) {
		dm_err("cannot open spec %s: %s", path, strerror(errno));
		return -1;
	}
	while (getline(&line, &cap, fp) > 0) {
		lineno++;
		char *s = dmspec_trim(line);
		if (*s == '\0' || *s == '#' || *s == ';')
			continue;
		if (*s == '[') {
			char *end = strchr(s, ']');
			if (end == NULL || dmspec_trim(end + 1)[0] != '\0') {
				dmspec_bad(sp, lineno, "malformed section header");
				goto out;
			}
			*end = '\0';
			char *name = dmspec_trim(s + 1);
			if (strcmp(name, "dm") == 0) {
				section = DM;
			} else if (strncmp(name, "entity", 6) == 0 && isspace((unsigned char)name[6])) {
				char *ename = dmspec_trim(name + 6);
				if (*ename == '\0' || dmspec_find(sp, ename) != NULL) {
					if (*ename)
						dmspec_bad(sp, lineno, "entity %s defined twice", ename);
					else
						dmspec_bad(sp, lineno, "entity needs a name");
					goto out;
				}
				sp->ents = dm_xrealloc(sp->ents, (sp->nents + 1) * sizeof *sp->ents);
				dmspec_entity *e = &sp->ents[sp->nents++];
				memset(e, 0, sizeof *e);
				e->name = dm_xstrdup(ename);
				e->line = lineno;
				section = ENTITY;
			} else {
				dmspec_bad(sp, lineno, "unknown section [%s]: expected [dm] or [entity NAME]", name);
				goto out;
			}
			continue;
		}
		char *eq = strchr(s, '=');
		if (eq == NULL) {
			dmspec_bad(sp, lineno, "expected NAME = VALUE");
			goto out;
		}
		*eq = '\0';
		char *name = dmspec_trim(s), *value = dmspec_trim(eq + 1);
		if (*value == '\0') {
			dmspec_bad(sp, lineno, "%s has no value", name);
			goto out;
		}
		if (section == DM) {
			if (strcmp(name, "uuid_namespace") == 0) {
				if (dmspec_parse_uuid(value, sp->ns) < 0) {
					dmspec_bad(sp, lineno, "uuid_namespace %s is not a UUID", value);
					goto out;
				}
				sp->have_ns = 1;
				sp->ns_line = lineno;
			} else if (strcmp(name, "source_timezone") == 0) {
				free(sp->source_timezone);
				sp->source_timezone = dm_xstrdup(value);
			} else {
				dmspec_bad(sp, lineno, "unknown setting \"%s\" in [dm] (see dm.conf(5))", name);
				goto out;
			}
		} else if (section == ENTITY) {
			if (dmspec_entity_item(sp, &sp->ents[sp->nents - 1], name, value, lineno) < 0)
				goto out;
		} else {
			dmspec_bad(sp, lineno, "setting outside a section: start with [dm] or [entity NAME]");
			goto out;
		}
	}
	if (ferror(fp)) {
		dm_err("cannot read spec %s: %s", path, strerror(errno));
		goto out;
	}
	if (sp->nents == 0) {
		dmspec_bad(sp, lineno, "no [entity NAME] section");
		goto out;
	}
	rc = dmspec_check(sp);
out:
	free(line);
	fclose(fp);
	if (rc < 0)
		dmspec_free(sp);
	return rc;
}

int
dmspec_uuid5(const unsigned char ns[16], const char *name, size_t len, char out[37])
{
	static const char hex[] = "0123456789abcdef";
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int mdlen = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	int ok = ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha1(), NULL) == 1 &&
	    EVP_DigestUpdate(ctx, ns, 16) == 1 && EVP_DigestUpdate(ctx, name, len) == 1 &&
	    EVP_DigestFinal_ex(ctx, md, &mdlen) == 1 && mdlen >= 16;

	EVP_MD_CTX_free(ctx);
	if (!ok) {
		dm_err("SHA-1 failed computing a UUID");
		return -1;
	}
	md[6] = (unsigned char)((md[6] & 0x0f) | 0x50);	/* version 5 */
	md[8] = (unsigned char)((md[8] & 0x3f) | 0x80);	/* RFC 4122 variant */
	char *p = out;
	for (int i = 0; i < 16; i++) {
		if (i == 4 || i == 6 || i == 8 || i == 10)
			*p++ = '-';
		*p++ = hex[md[i] >> 4];
		*p++ = hex[md[i] & 15];
	}
	*p = '\0';
	return 0;
}

void
dmspec_uuid_name(dm_buf *out, const char *entity, const dm_value *keys, size_t nkey)
{
	dm_buf_puts(out, entity);
	dm_buf_putc(out, ':');
	if (nkey == 1) {
		/* one value needs no separator: the name is the value, as it always was */
		dm_buf_append(out, keys[0].ptr, keys[0].len);
		return;
	}
	for (size_t i = 0; i < nkey; i++) {
		if (i)
			dm_buf_putc(out, ',');
		for (size_t j = 0; j < keys[i].len; j++) {
			if (keys[i].ptr[j] == ',' || keys[i].ptr[j] == '\\')
				dm_buf_putc(out, '\\');
			dm_buf_putc(out, keys[i].ptr[j]);
		}
	}
}
