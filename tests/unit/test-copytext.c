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
	dm_buf_free(&line);
	dm_buf_free(&store);
	return done();
}
