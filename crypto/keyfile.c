/*
 * keyfile.c - reading a private key file under one rule (keyfile.h).
 *
 * Invariants: the file is opened once (O_NONBLOCK, so a FIFO planted at the
 * path cannot hang the open) and everything is judged on that descriptor;
 * the buffer never grows past cap + 1 bytes; a partial read is wiped before
 * it is freed. The rule itself is a pure function of (mode, owner, group,
 * euid, membership) so its every case is testable without root.
 */
#include "crypto/keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "crypto/sa_crypto.h"
#include "fedc/error.h"

static int say(char *err, size_t errlen, int rc, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int say(char *err, size_t errlen, int rc, const char *fmt, ...) {
  if (err && errlen) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
  }
  return rc;
}

int fc_key_file_rule(const char *path, mode_t mode, uid_t owner, gid_t group, uid_t euid, int group_is_ours,
                     char *err, size_t errlen) {
  unsigned m = (unsigned)(mode & 07777);
  if (owner != euid && owner != 0)
    return say(err, errlen, FEDC_ERR_PERMISSION,
               "private key %s is owned by uid %u, not by this process's user (uid %u) or root: its owner could "
               "replace it; chown it",
               path, (unsigned)owner, (unsigned)euid);
  if (m & 007)
    return say(err, errlen, FEDC_ERR_PERMISSION, "private key %s has mode %04o: other users may %s it; chmod 600 %s",
               path, m, m & 002 ? "write" : m & 004 ? "read" : "execute", path);
  if (m & 030)
    return say(err, errlen, FEDC_ERR_PERMISSION, "private key %s has mode %04o: its group (gid %u) may %s it; chmod 600 %s",
               path, m, (unsigned)group, m & 020 ? "write" : "execute", path);
  if ((m & 040) && !(owner == 0 && group != 0 && group_is_ours))
    return say(err, errlen, FEDC_ERR_PERMISSION,
               "private key %s has mode %04o: its group (gid %u) may read it; chmod 600 %s (group read is accepted "
               "only for a file of root's whose group is this process's, e.g. a Kubernetes Secret with fsGroup)",
               path, m, (unsigned)group, path);
  return FEDC_OK;
}

/* The process is in group g (effective or supplementary). */
static int in_group(gid_t g) {
  if (getegid() == g) return 1;
  int n = getgroups(0, NULL), found = 0;
  if (n <= 0) return 0;
  gid_t *gs = malloc((size_t)n * sizeof *gs);
  if (!gs) return 0;
  n = getgroups(n, gs);
  for (int i = 0; i < n && !found; i++) found = gs[i] == g;
  free(gs);
  return found;
}

int fc_key_file_read(const char *path, size_t cap, char **out, size_t *len, char *err, size_t errlen) {
  int rc = FEDC_OK;
  char *buf = NULL;
  size_t used = 0;
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
  if (fd < 0) {
    int e = errno;
    return say(err, errlen, e == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO, "cannot open private key %s: %s", path,
               strerror(e));
  }
  struct stat st;
  if (fstat(fd, &st) != 0) {
    rc = say(err, errlen, FEDC_ERR_IO, "cannot stat private key %s: %s", path, strerror(errno));
    goto out;
  }
  if (!S_ISREG(st.st_mode)) {
    rc = say(err, errlen, FEDC_ERR_PERMISSION, "private key %s is not a regular file", path);
    goto out;
  }
  if ((rc = fc_key_file_rule(path, st.st_mode, st.st_uid, st.st_gid, geteuid(), in_group(st.st_gid), err,
                             errlen)) != FEDC_OK)
    goto out;
  if ((unsigned long long)st.st_size > cap) {
    rc = say(err, errlen, FEDC_ERR_TOO_LARGE, "private key %s is larger than %zu bytes", path, cap);
    goto out;
  }
  if (!(buf = malloc(cap + 1))) {
    rc = say(err, errlen, FEDC_ERR_NOMEM, "out of memory reading private key %s", path);
    goto out;
  }
  for (;;) {
    ssize_t n = read(fd, buf + used, cap + 1 - used); /* one byte past cap tells a file that grew */
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      rc = say(err, errlen, FEDC_ERR_IO, "cannot read private key %s: %s", path, strerror(errno));
      goto out;
    }
    if (n == 0) break;
    used += (size_t)n;
    if (used > cap) {
      rc = say(err, errlen, FEDC_ERR_TOO_LARGE, "private key %s is larger than %zu bytes", path, cap);
      goto out;
    }
  }
  buf[used] = 0;
  *out = buf;
  *len = used;
  buf = NULL;
out:
  if (buf) {
    fc_wipe(buf, cap + 1);
    free(buf);
  }
  close(fd);
  return rc;
}
