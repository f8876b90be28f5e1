/*
 * fileutil.c - small-file I/O shared by config, model store and CLI. See
 * fileutil.h for the contract.
 *
 * Invariants: a read never allocates more than cap+1 bytes, whatever the file
 * claims (the size is checked with fstat and again while reading, so a file
 * growing underneath us is caught); a write either completes, fsync'd, or
 * leaves no new file behind. O_NOFOLLOW on the final component means a
 * planted symlink cannot redirect a write.
 */
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "fedc/error.h"

int fc_read_file(const char *path, size_t cap, char **out, size_t *len) {
  int rc = FEDC_ERR_IO;
  char *buf = NULL;
  size_t used = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return errno == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  struct stat st;
  if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) goto out;
  if ((unsigned long long)st.st_size > cap) {
    rc = FEDC_ERR_TOO_LARGE;
    goto out;
  }
  size_t room = (size_t)st.st_size; /* <= cap; grows below only if the file grows */
  buf = malloc(room + 1);
  if (!buf) {
    rc = FEDC_ERR_NOMEM;
    goto out;
  }
  for (;;) {
    if (used == room) {
      /* The file may have grown since fstat: probe one byte past the end. */
      char probe;
      ssize_t n = read(fd, &probe, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) goto out;
      if (n == 0) break;
      if (used + 1 > cap) {
        rc = FEDC_ERR_TOO_LARGE;
        goto out;
      }
      size_t newroom = room * 2 + 64 > cap ? cap : room * 2 + 64;
      char *grown = realloc(buf, newroom + 1);
      if (!grown) {
        rc = FEDC_ERR_NOMEM;
        goto out;
      }
      buf = grown;
      room = newroom;
      buf[used++] = probe;
      continue;
    }
    ssize_t n = read(fd, buf + used, room - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) goto out;
    if (n == 0) break;
    used += (size_t)n;
  }
  buf[used] = '\0';
  *out = buf;
  *len = used;
  buf = NULL;
  rc = FEDC_OK;
out:
  free(buf);
  close(fd);
  return rc;
}

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return -1;
    p += n;
    len -= (size_t)n;
  }
  return 0;
}

/* Create `path` exclusively and fill it; on failure nothing is left behind. */
static int write_new(const char *path, const void *data, size_t len, int mode) {
  int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode & 07777);
  if (fd < 0) return errno == EEXIST ? FEDC_ERR_EXISTS : FEDC_ERR_IO;
  /* fchmod so the bits are exactly `mode`, whatever the umask (it can only
   * have removed bits, but a caller asking for 0644 means 0644). */
  if (fchmod(fd, (mode_t)(mode & 07777)) != 0 || write_all(fd, data, len) != 0 || fsync(fd) != 0) {
    close(fd);
    unlink(path);
    return FEDC_ERR_IO;
  }
  if (close(fd) != 0) {
    unlink(path);
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

int fc_write_file_atomic(const char *path, const void *data, size_t len, int mode, int exclusive) {
  if (!path || (!data && len)) return FEDC_ERR_INVALID;
  if (exclusive) return write_new(path, data, len, mode);

  size_t plen = strlen(path);
  char *tmp = malloc(plen + 5);
  if (!tmp) return FEDC_ERR_NOMEM;
  memcpy(tmp, path, plen);
  memcpy(tmp + plen, ".tmp", 5);
  unlink(tmp); /* a leftover from a crashed writer */
  int rc = write_new(tmp, data, len, mode);
  if (rc == FEDC_OK && rename(tmp, path) != 0) {
    unlink(tmp);
    rc = FEDC_ERR_IO;
  }
  free(tmp);
  return rc;
}
