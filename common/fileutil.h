/*
 * fileutil.h - whole-file read with a size cap, and file writes that never
 * leave a half-written file behind (atomic rename through an unpredictable
 * temp name), never clobber one (exclusive create), and never write through
 * or replace anything but a regular file.
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
 * Read from fd's offset to its end (a regular file; one that grows while we
 * read is read to its new end) onto *buf, which holds *len bytes already
 * (*buf NULL: none), reallocating it; NUL-terminated, *len updated. At most
 * cap bytes in all (FEDC_ERR_TOO_LARGE; cap < SIZE_MAX). On error *buf
 * still holds (and is NUL-terminated after) the bytes it held, *len says
 * how many, and *buf stays the caller's to free, even if the call moved it
 * or allocated it from NULL.
 */
int fc_read_fd_more(int fd, size_t cap, char **buf, size_t *len);

/* fsync the directory holding path, so that a file just created (or renamed)
 * there survives a power loss. 0, or -1 with errno. */
int fc_fsync_parent(const char *path);

/*
 * Write len bytes to path with permission bits exactly `mode`, fsync'd.
 * exclusive != 0: create path with O_EXCL (FEDC_ERR_EXISTS if it exists); on
 *   failure the partial file is removed.
 * exclusive == 0: replace path atomically through fc_atomic_begin/commit
 *   below, so readers see the old or the new content, never a mix; refused
 *   with FEDC_ERR_INVALID if something other than a regular file is at path.
 */
int fc_write_file_atomic(const char *path, const void *data, size_t len, int mode, int exclusive);

/*
 * Atomic replacement of one file written in pieces (the one temp-file path
 * for every file fedc replaces: state, model files):
 *
 *   fc_atomic_file f;
 *   rc = fc_atomic_begin(&f, path, 0644, err, errlen);
 *   while (rc == FEDC_OK && more) rc = fc_atomic_write(&f, buf, n, err, errlen);
 *   rc = rc == FEDC_OK ? fc_atomic_commit(&f, err, errlen) : (fc_atomic_abort(&f), rc);
 *
 * begin refuses (FEDC_ERR_INVALID, naming the path and what is there) if
 * anything but a regular file is at path - a symlink, FIFO, device, socket or
 * directory is never replaced - then creates a temp file with an
 * unpredictable name in path's directory with O_CREAT|O_EXCL|O_NOFOLLOW, so a
 * planted file or symlink can neither be followed nor pre-empt the name.
 * commit fsyncs and closes it, renames it over path and fsyncs the directory;
 * if only that last fsync fails the new file is in place and FEDC_ERR_IO says
 * so. Every function ends f on failure (temp file removed, nothing left
 * behind); fc_atomic_abort ends it explicitly and is a no-op on an ended f.
 * Errors: INVALID, NOMEM, IO; err/errlen (may be NULL/0) get one line.
 */
typedef struct fc_atomic_file {
  int fd;    /* -1 once ended */
  char *tmp; /* owned */
  char *path; /* owned */
} fc_atomic_file;

int fc_atomic_begin(fc_atomic_file *f, const char *path, int mode, char *err, size_t errlen);
int fc_atomic_write(fc_atomic_file *f, const void *data, size_t len, char *err, size_t errlen);
int fc_atomic_commit(fc_atomic_file *f, char *err, size_t errlen);
void fc_atomic_abort(fc_atomic_file *f);
/* A process-wide check run by fc_atomic_commit (and so by every non-exclusive
 * fc_write_file_atomic) just before the rename that replaces the file: 0
 * refuses (temp file removed, FEDC_ERR_STOPPED). Coordinator replicas sharing
 * a state directory set it (cli/cmd_coordinator_ha.c) so that a leader frozen
 * mid-write and deposed meanwhile cannot replace its successor's files when
 * it resumes; it leaves only the instant between the check and rename(2).
 * Set once, before other threads start; NULL (the default) = no check. */
void fc_atomic_set_commit_guard(int (*guard)(void));
/* 1 if the commit guard allows writing now (or none is set). For other
 * writes to the shared store that must not land from a deposed replica
 * (coordinator/store.c's rounds.jsonl appends): ask it just before writing. */
int fc_atomic_guard_allows(void);

#endif
