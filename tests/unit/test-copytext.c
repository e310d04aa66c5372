/* test-copytext.c - COPY text format: every byte survives escape and parse. */
#include "copytext.h"
#include "tap.h"

#include <string.h>

int
main(void)
{
	char all[256];
	dm_buf line = { 0 }, store = { 0 };
	dm_value in[4], out[4];
	int is_bin[4] = { 0, 1, 0, 0 };

	dm_prog = "test-copytext";
	dm_verbosity = 0;
	for (int i = 0; i < 256; i++)
		all[i] = (char)i;
	/* text cannot hold NUL in PostgreSQL; bytea can. */
	in[0] = (dm_value){ all + 1, 255, DM_TEXT };
	in[1] = (dm_value){ all, 256, DM_BIN };
	in[2] = (dm_value){ NULL, 0, DM_NULL };
	in[3] = (dm_value){ "", 0, DM_TEXT };
	dmcopy_append_row(&line, in, 4);
	ok(line.data[line.len - 1] == '\n' && memchr(line.data, '\n', line.len) == line.data + line.len - 1,
	    "one row is one line");
	/* What COPY FROM would read is what COPY TO writes for bytea: the \\x form, escaped. */
	ok(dmcopy_parse(line.data, line.len, 4, is_bin, &store, out) == 0, "the row parses");
	ok(out[0].kind == DM_TEXT && out[0].len == 255 && memcmp(out[0].ptr, all + 1, 255) == 0,
	    "every non-NUL byte of text survives");
	ok(out[1].kind == DM_BIN && out[1].len == 256 && memcmp(out[1].ptr, all, 256) == 0,
	    "every byte of bytea survives");
	ok(out[2].kind == DM_NULL, "NULL is \\N");
	ok(out[3].kind == DM_TEXT && out[3].len == 0, "empty string is not NULL");
	ok(dmcopy_parse("a\tb", 3, 3, NULL, &store, out) < 0, "too few fields is an error");
	ok(dmcopy_parse("a\tb\tc", 5, 2, NULL, &store, out) < 0, "too many fields is an error");
	ok(dmcopy_parse("\\x41\\101\\\\N", 11, 1, NULL, &store, out) == 0 && out[0].len == 4 &&
	    memcmp(out[0].ptr, "AA\\N", 4) == 0, "hex and octal escapes decode; \\\\N is text");
	/* What PostgreSQL reads too: an escaped tab is the field's, a bytea's escapes are undone first. */
	ok(dmcopy_parse("a\\\tb\tc", 6, 2, NULL, &store, out) == 0 && out[0].len == 3 &&
	    memcmp(out[0].ptr, "a\tb", 3) == 0 && out[1].len == 1, "a backslash before a tab keeps the tab in the field");
	int bin1[1] = { 1 };
	ok(dmcopy_parse("\\\\x4\\141", 8, 1, bin1, &store, out) == 0 && out[0].kind == DM_BIN && out[0].len == 1 &&
	    out[0].ptr[0] == 0x4a, "bytea with an escape inside decodes");
	ok(dmcopy_parse("\\N", 2, 1, bin1, &store, out) == 0 && out[0].kind == DM_NULL, "bytea NULL is \\N");
	ok(dmcopy_parse("4a", 2, 1, bin1, &store, out) < 0 && dmcopy_parse("\\\\x4", 4, 1, bin1, &store, out) < 0 &&
	    dmcopy_parse("\\\\x4g", 5, 1, bin1, &store, out) < 0, "bytea not in hex form is an error");
	ok(dmcopy_parse("abc\\", 4, 1, NULL, &store, out) < 0, "a row ending in a backslash is an error");

	/* Every length around the 8-byte scan, an escape or a tab at every offset: all survive. */
	{
		static const char pick[] = "a\t\n\\\r\\xe9N\tb\\";
		dm_value vin[6], vout[6];
		char text[6][48];
		int bins[6] = { 0, 0, 1, 0, 0, 1 }, bad = 0;
		unsigned seed = 7;
		for (int iter = 0; iter < 20000; iter++) {
			for (int c = 0; c < 6; c++) {
				size_t n = (seed = seed * 1103515245u + 12345u) >> 16 & 31;
				n += c == 3 ? 16 : 0;
				for (size_t k = 0; k < n; k++) {
					seed = seed * 1103515245u + 12345u;
					text[c][k] = pick[(seed >> 16) % (sizeof pick - 1)];
				}
				vin[c] = (dm_value){ text[c], (uint32_t)n, (uint8_t)(bins[c] ? DM_BIN : DM_TEXT) };
				if (((seed >> 20) & 7) == 0)
					vin[c] = (dm_value){ NULL, 0, DM_NULL };
			}
			line.len = 0;
			dmcopy_append_row(&line, vin, 6);
			if (dmcopy_parse(line.data, line.len, 6, bins, &store, vout) < 0) {
				bad++;
				continue;
			}
			for (int c = 0; c < 6; c++)
				if (vout[c].kind != vin[c].kind || vout[c].len != vin[c].len ||
				    (vin[c].len && memcmp(vout[c].ptr, vin[c].ptr, vin[c].len) != 0))
					bad++;
		}
		ok(bad == 0, "20000 random rows of tabs, newlines, backslashes survive escape and parse (%d bad)", bad);
	}
	dm_buf_free(&line);
	dm_buf_free(&store);
	return done();
}
