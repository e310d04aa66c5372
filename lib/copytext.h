/* copytext.h - PostgreSQL's COPY text format, both directions. */
#ifndef DM_COPYTEXT_H
#define DM_COPYTEXT_H

#include "dm.h"

/*
 * Splits one COPY text line (trailing newline optional) into ncols values,
 * unescaping into store. Columns flagged in is_bin (may be NULL) hold bytea's
 * hex form and are decoded to bytes. vals point into store, or into line
 * itself for a value without escapes: they stay valid while both line and
 * store are unchanged. Returns 0, or -1 after printing why.
 */
int dmcopy_parse(const char *line, size_t len, size_t ncols, const int *is_bin,
    dm_buf *store, dm_value *vals);

/* Appends one row in COPY text form (with newline) to out. */
void dmcopy_append_row(dm_buf *out, const dm_value *vals, size_t n);
/* Appends one field, escaped; no separator. */
void dmcopy_append_field(dm_buf *out, const dm_value *v);

#endif
