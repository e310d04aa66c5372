/* copytext.c - COPY text format codec. */
#include "copytext.h"

#include <string.h>

static int
dmcopy_hexval(int c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

int
dmcopy_parse(const char *line, size_t len, size_t ncols, const int *is_bin,
    dm_buf *store, dm_value *vals)
{
	size_t col = 0;
	size_t i = 0;

	if (len > 0 && line[len - 1] == '\n')
		len--;
	/* Unescaping never lengthens a field: with room for the line, store never moves. */
	store->len = 0;
	dm_buf_reserve(store, len);
	for (;;) {
		/* One field: from i to the next unescaped tab or the end. */
		if (col >= ncols) {
			dm_err("COPY row has more than %zu fields", ncols);
			return -1;
		}
		if (len - i >= 2 && line[i] == '\\' && line[i + 1] == 'N' &&
		    (i + 2 == len || line[i + 2] == '\t')) {
			vals[col].kind = DM_NULL;
			vals[col].len = 0;
			vals[col].ptr = NULL;
			i += 2;
		} else {
			size_t start = store->len;
			while (i < len && line[i] != '\t') {
				char c = line[i++];
				if (c != '\\') {
					dm_buf_putc(store, c);
					continue;
				}
				if (i >= len) {
					dm_err("COPY row ends in a backslash");
					return -1;
				}
				c = line[i++];
				switch (c) {
				case 'b': dm_buf_putc(store, '\b'); break;
				case 'f': dm_buf_putc(store, '\f'); break;
				case 'n': dm_buf_putc(store, '\n'); break;
				case 'r': dm_buf_putc(store, '\r'); break;
				case 't': dm_buf_putc(store, '\t'); break;
				case 'v': dm_buf_putc(store, '\v'); break;
				case 'x': {
					int v = 0, digits = 0, h;
					while (digits < 2 && i < len && (h = dmcopy_hexval((unsigned char)line[i])) >= 0) {
						v = v * 16 + h;
						i++;
						digits++;
					}
					if (digits == 0)
						dm_buf_putc(store, 'x');
					else
						dm_buf_putc(store, (char)v);
					break;
				}
				default:
					if (c >= '0' && c <= '7') {
						int v = c - '0', digits = 1;
						while (digits < 3 && i < len && line[i] >= '0' && line[i] <= '7') {
							v = v * 8 + (line[i++] - '0');
							digits++;
						}
						dm_buf_putc(store, (char)v);
					} else {
						dm_buf_putc(store, c);
					}
				}
			}
			if (is_bin != NULL && is_bin[col]) {
				/* bytea_output=hex: "\x" then two hex digits per byte; decode in place. */
				size_t n = store->len - start;
				char *p = store->data + start;
				if (n < 2 || p[0] != '\\' || p[1] != 'x' || (n - 2) % 2 != 0) {
					dm_err("bytea value not in hex format");
					return -1;
				}
				size_t out = 0;
				for (size_t k = 2; k < n; k += 2) {
					int hi = dmcopy_hexval((unsigned char)p[k]);
					int lo = dmcopy_hexval((unsigned char)p[k + 1]);
					if (hi < 0 || lo < 0) {
						dm_err("bad hex digit in bytea value");
						return -1;
					}
					p[out++] = (char)(hi * 16 + lo);
				}
				store->len = start + out;
				vals[col].kind = DM_BIN;
			} else {
				vals[col].kind = DM_TEXT;
			}
			vals[col].ptr = store->data + start;
			vals[col].len = (uint32_t)(store->len - start);
		}
		col++;
		if (i >= len)
			break;
		i++;	/* the tab */
	}
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
