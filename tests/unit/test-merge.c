/* test-merge.c - the key order dm-diff merges by, and the pinned row hash. */
#include "stream.h"
#include "tap.h"

#include <string.h>

static dm_value
t(const char *s)
{
	return (dm_value){ s, (uint32_t)strlen(s), DM_TEXT };
}

int
main(void)
{
	dms_keyclass ints[1] = { DMS_KEY_INT }, bytes[1] = { DMS_KEY_BYTES };
	dms_keyclass mixed[2] = { DMS_KEY_INT, DMS_KEY_BYTES };
	static const char *const order[] = { "-9223372036854775808", "-100", "-11", "-2", "0", "3", "10", "99", "100",
		"9223372036854775807" };
	int sorted = 1;

	dm_prog = "test-merge";
	for (size_t i = 0; i + 1 < sizeof order / sizeof *order; i++) {
		dm_value a = t(order[i]), b = t(order[i + 1]);
		if (dms_key_cmp(ints, 1, &a, &b) >= 0 || dms_key_cmp(ints, 1, &b, &a) <= 0)
			sorted = 0;
	}
	ok(sorted, "integer keys order numerically, negatives included");
	dm_value a = t("B"), b = t("a"), c = t("\xc3\xa9"), d = t("_x"), e = t("a");
	ok(dms_key_cmp(bytes, 1, &a, &b) < 0 && dms_key_cmp(bytes, 1, &d, &b) < 0 &&
	    dms_key_cmp(bytes, 1, &b, &c) < 0, "text keys order by bytes (C collation), not by locale");
	ok(dms_key_cmp(bytes, 1, &b, &e) == 0, "equal keys compare equal");
	dm_value ab = t("ab");
	ok(dms_key_cmp(bytes, 1, &b, &ab) < 0, "a prefix sorts first");
	dm_value k1[2] = { t("2"), t("b") }, k2[2] = { t("10"), t("a") }, k3[2] = { t("2"), t("c") };
	ok(dms_key_cmp(mixed, 2, k1, k2) < 0 && dms_key_cmp(mixed, 2, k1, k3) < 0,
	    "composite keys order column by column");

	/* Pinned: changing the canonical encoding or hash breaks every saved stream. */
	dm_value row[3] = { t("1"), { NULL, 0, DM_NULL }, { "\0\1", 2, DM_BIN } };
	dm_buf scratch = { 0 };
	unsigned char h[DMS_HASH_LEN], h2[DMS_HASH_LEN];
	dms_row_hash(row, 3, &scratch, h);
	row[1] = t("");
	dms_row_hash(row, 3, &scratch, h2);
	ok(memcmp(h, h2, sizeof h) != 0, "NULL and empty string hash differently");
	dm_value r1[2] = { t("ab"), t("c") }, r2[2] = { t("a"), t("bc") };
	dms_row_hash(r1, 2, &scratch, h);
	dms_row_hash(r2, 2, &scratch, h2);
	ok(memcmp(h, h2, sizeof h) != 0, "value boundaries are part of the hash");
	dm_buf_free(&scratch);
	return done();
}
