/*
 * fileutil.h - whole-file read with a size cap, and file writes that never
 * leave a half-written file behind (atomic rename) or never clobber one
 * (exclusive create).
 */
#ifndef FEDC_COMMON_FILEUTIL_H
#define FEDC_COMMON_FILEUTIL_H

#include <stddef.h>

/*
 * Read the regular file at path into a fresh buffer, NUL-terminated (the NUL
 * is not counted in *len). Ownership of *out passes to the caller (free()).
 * FEDC_ERR_NOT_FOUND if it does not exist, FEDC_ERR_TOO_LARGE if it holds
 * more than cap bytes, FEDC_ERR_IO otherwise. Outputs untouched on error.
 */
int fc_read_file(const char *path, size_t cap, char **out, size_t *len);

/*
 * Write len bytes to path with permission bits `mode`, fsync'd.
 * exclusive != 0: create path with O_EXCL (FEDC_ERR_EXISTS if it exists); on
 *   failure the partial file is removed.
 * exclusive == 0: write "<path>.tmp" and rename() it over path, so readers see
 *   the old or the new content, never a mix. Concurrent writers of the same
 *   path must be serialised by the caller (they share the .tmp name).
 */
int fc_write_file_atomic(const char *path, const void *data, size_t len, int mode, int exclusive);

#endif
