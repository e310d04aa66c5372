/* copytext.c - COPY text format codec. */
#include "copytext.h"

#include <string.h>

/* Each byte's value as a hex digit plus one; 0 for a byte that is not one. */
static const signed char dmcopy_hex[256] = {
	['0'] = 0 + 1, ['1'] = 1 + 1, ['2'] = 2 + 1, ['3'] = 3 + 1, ['4'] = 4 + 1,
	['5'] = 5 + 1, ['6'] = 6 + 1, ['7'] = 7 + 1, ['8'] = 8 + 1, ['9'] = 9 + 1,
	['a'] = 10 + 1, ['b'] = 11 + 1, ['c'] = 12 + 1, ['d'] = 13 + 1, ['e'] = 14 + 1, ['f'] = 15 + 1,
	['A'] = 10 + 1, ['B'] = 11 + 1, ['C'] = 12 + 1, ['D'] = 13 + 1, ['E'] = 14 + 1, ['F'] = 15 + 1,
};

/* A hex digit's value, or -1. */
static inline int
dmcopy_hexval(unsigned char c)
{
	return dmcopy_hex[c] - 1;
}

/*
 * Decodes bytea's hex form ("\x" then two hex digits per byte, the backslash
 * already unescaped) from p (n bytes) to out, which may be p itself.
 * Returns the number of bytes, or -1 after printing why.
 */
static long
dmcopy_unhex(const char *p, size_t n, char *out)
{
	if (n < 2 || p[0] != '\\' || p[1] != 'x' || (n - 2) % 2 != 0) {
		dm_err("bytea value not in hex format");
		return -1;
	}
	size_t o = 0;
	for (size_t k = 2; k < n; k += 2) {
		int hi = dmcopy_hexval((unsigned char)p[k]);
		int lo = dmcopy_hexval((unsigned char)p[k + 1]);
		if ((hi | lo) < 0) {
			dm_err("bad hex digit in bytea value");
			return -1;
		}
		out[o++] = (char)(hi << 4 | lo);
	}
	return (long)o;
}

/*
 * Index of the first tab or backslash in line[i, len), or len: where a field
 * or a run without escapes ends. Eight bytes at a time where the byte order
 * allows: a row is a dozen short fields, too short for a call to memchr each.
 */
static inline size_t
dmcopy_special(const char *line, size_t i, size_t len)
{
#if defined(__GNUC__) && defined(__BYTE_ORDER__) && __BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__
	const uint64_t ones = 0x0101010101010101u, highs = 0x8080808080808080u;
	while (len - i >= 8) {
		uint64_t w;
		memcpy(&w, line + i, 8);
		uint64_t t = w ^ (ones * '\t'), b = w ^ (ones * '\\');
		/* a byte's high bit is set where it is zero, or above such a byte: the lowest is exact */
		uint64_t m = (((t - ones) & ~t) | ((b - ones) & ~b)) & highs;
		if (m != 0)
			return i + (size_t)__builtin_ctzll(m) / 8;
		i += 8;
	}
#endif
	while (i < len && line[i] != '\t' && line[i] != '\\')
		i++;
	return i;
}

int
dmcopy_parse(const char *line, size_t len, size_t ncols, const int *is_bin,
    dm_buf *store, dm_value *vals)
{
	size_t col = 0;
	size_t i = 0;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	/*
	 * Unescaping never lengthens a field: with room for the line, store never
	 * moves, and bytes are written through q without a check each.
	 */
	store->len = 0;
	dm_buf_reserve(store, len);
	char *const base = store->data;
	char *q = base;
	for (;;) {
		/* One field: from i to the next unescaped tab or the end. */
		if (col >= ncols) {
			dm_err("COPY row has more than %zu fields", ncols);
			return -1;
		}
		int bin = is_bin != NULL && is_bin[col];
		size_t s = dmcopy_special(line, i, len), t;
		int esc = s < len && line[s] == '\\';	/* else the field ends at s */
		if (!esc && !bin) {
			/* No escape before the field ends: the value is the line's own bytes. */
			vals[col].kind = DM_TEXT;
			vals[col].ptr = line + i;
			vals[col].len = (uint32_t)(s - i);
			i = s;
		} else if (esc && s == i && len - i >= 2 && line[i + 1] == 'N' &&
		    (i + 2 == len || line[i + 2] == '\t')) {
			vals[col].kind = DM_NULL;
			vals[col].len = 0;
			vals[col].ptr = NULL;
			i += 2;
		} else if (bin && esc && s == i && len - i >= 2 && line[i + 1] == '\\' &&
		    ((t = dmcopy_special(line, i + 2, len)) == len || line[t] == '\t')) {
			/*
			 * bytea_output=hex, the common case: "\\\\x" then hex digits, no other
			 * escape. Unescaped, the field is line[i + 1, t): decoded from there.
			 */
			long got = dmcopy_unhex(line + i + 1, t - i - 1, q);
			if (got < 0)
				return -1;
			vals[col].kind = DM_BIN;
			vals[col].ptr = q;
			vals[col].len = (uint32_t)got;
			q += got;
			i = t;
		} else {
			char *start = q;
			for (;;) {
				memcpy(q, line + i, s - i);
				q += s - i;
				i = s;
				if (s == len || line[s] == '\t')
					break;	/* the end of the field, or of the line */
				i++;	/* the backslash */
				if (i >= len) {
					dm_err("COPY row ends in a backslash");
					return -1;
				}
				char c = line[i++];
				switch (c) {
				case 'b': *q++ = '\b'; break;
				case 'f': *q++ = '\f'; break;
				case 'n': *q++ = '\n'; break;
				case 'r': *q++ = '\r'; break;
				case 't': *q++ = '\t'; break;
				case 'v': *q++ = '\v'; break;
				case 'x': {
					int v = 0, digits = 0, h;
					while (digits < 2 && i < len && (h = dmcopy_hexval((unsigned char)line[i])) >= 0) {
						v = v * 16 + h;
						i++;
						digits++;
					}
					*q++ = digits == 0 ? 'x' : (char)v;
					break;
				}
				default:
					if (c >= '0' && c <= '7') {
						int v = c - '0', digits = 1;
						while (digits < 3 && i < len && line[i] >= '0' && line[i] <= '7') {
							v = v * 8 + (line[i++] - '0');
							digits++;
						}
						*q++ = (char)v;
					} else {
						*q++ = c;	/* a tab too: escaped, it belongs to the field */
					}
				}
				s = dmcopy_special(line, i, len);
			}
			if (bin) {
				/* bytea_output=hex, escaped otherwise: decoded in place. */
				long got = dmcopy_unhex(start, (size_t)(q - start), start);
				if (got < 0)
					return -1;
				q = start + got;
				vals[col].kind = DM_BIN;
			} else {
				vals[col].kind = DM_TEXT;
			}
			vals[col].ptr = start;
			vals[col].len = (uint32_t)(q - start);
		}
		col++;
		if (i >= len)
			break;
		i++;	/* the tab */
	}
	store->len = (size_t)(q - base);
	if (col != ncols) {
		dm_err("COPY row has %zu fields, expected %zu", col, ncols);
		return -1;
	}
	return 0;
}

void
dmcopy_append_field(dm_buf *out, const dm_value *v)
{
	static const char hex[] = "0123456789abcdef";

	if (v->kind == DM_NULL) {
		dm_buf_append(out, "\\N", 2);
		return;
	}
	if (v->kind == DM_BIN) {
		dm_buf_reserve(out, 3 + (size_t)v->len * 2);
		char *p = out->data + out->len;
		*p++ = '\\';
		*p++ = '\\';
		*p++ = 'x';
		for (uint32_t i = 0; i < v->len; i++) {
			unsigned char c = (unsigned char)v->ptr[i];
			*p++ = hex[c >> 4];
			*p++ = hex[c & 15];
		}
		out->len += 3 + (size_t)v->len * 2;
		return;
	}
	dm_buf_reserve(out, (size_t)v->len * 2);
	char *p = out->data + out->len;
	for (uint32_t i = 0; i < v->len; i++) {
		char c = v->ptr[i];
		switch (c) {
		case '\\': *p++ = '\\'; *p++ = '\\'; break;
		case '\n': *p++ = '\\'; *p++ = 'n'; break;
		case '\r': *p++ = '\\'; *p++ = 'r'; break;
		case '\t': *p++ = '\\'; *p++ = 't'; break;
		default: *p++ = c;
		}
	}
	out->len = (size_t)(p - out->data);
}

void
dmcopy_append_row(dm_buf *out, const dm_value *vals, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		if (i)
			dm_buf_putc(out, '\t');
		dmcopy_append_field(out, &vals[i]);
	}
	dm_buf_putc(out, '\n');
}
