/*
 * fileutil.c - file I/O shared by config, model store, safetensors and CLI.
 * See fileutil.h for the contract.
 *
 * Invariants: a read never allocates more than cap+1 bytes, whatever the file
 * claims (the size is checked with fstat and again while reading, so a file
 * growing underneath us is caught); a write either completes, fsync'd, or
 * leaves no new file behind. Every file we create is created with
 * O_EXCL|O_NOFOLLOW, so a planted symlink cannot redirect a write.
 *
 * Replacing a file (fc_atomic_*) writes "<dir>/.<name>.<12 random hex>.tmp"
 * and renames it over the target. The name is random, not "<path>.tmp", so
 * another local user cannot plant something there in advance (with O_EXCL
 * that would only make the write fail, but it would fail every time), and two
 * writers of one path no longer collide on the temp file (the last rename
 * wins). The target is lstat'ed first and anything but a regular file is
 * refused: rename() would otherwise replace a symlink, FIFO or device node
 * that an operator (or `--force`) pointed us at. Between that check and the
 * rename the target can still change; rename() then replaces whatever
 * directory entry is there and never writes through it, so the race can
 * only lose the new file's name, never touch another file.
 */
#include "common/fileutil.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fedc/error.h"

int fc_read_fd_more(int fd, size_t cap, char **buf, size_t *len) {
  size_t had = *buf ? *len : 0, used = had;
  struct stat st;
  off_t pos = lseek(fd, 0, SEEK_CUR);
  if (pos < 0 || fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) return FEDC_ERR_IO;
  if (had > cap || cap == SIZE_MAX) return FEDC_ERR_TOO_LARGE; /* room + 1 below must not wrap */
  unsigned long long expect = st.st_size > pos ? (unsigned long long)(st.st_size - pos) : 0;
  if (expect > cap - had) return FEDC_ERR_TOO_LARGE;
  size_t room = had + (size_t)expect; /* <= cap; grows below only if the file grows */
  char *b = realloc(*buf, room + 1);
  if (!b) return FEDC_ERR_NOMEM;
  *buf = b;
  int rc = FEDC_ERR_IO;
  for (;;) {
    if (used == room) {
      /* The file may have grown since fstat: probe one byte past the end. */
      char probe;
      ssize_t n = read(fd, &probe, 1);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) goto fail;
      if (n == 0) break;
      if (used + 1 > cap) {
        rc = FEDC_ERR_TOO_LARGE;
        goto fail;
      }
      size_t newroom = room > (cap - 64) / 2 || cap < 64 ? cap : room * 2 + 64; /* no wrap */
      char *grown = realloc(b, newroom + 1);
      if (!grown) {
        rc = FEDC_ERR_NOMEM;
        goto fail;
      }
      *buf = b = grown;
      room = newroom;
      b[used++] = probe;
      continue;
    }
    ssize_t n = read(fd, b + used, room - used);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) goto fail;
    if (n == 0) break;
    used += (size_t)n;
  }
  b[used] = '\0';
  *len = used;
  return FEDC_OK;
fail:
  b[had] = '\0'; /* what the caller had, as it was */
  *len = had;
  return rc;
}

int fc_read_file(const char *path, size_t cap, char **out, size_t *len) {
  /* O_NONBLOCK: a FIFO planted at path is refused (not a regular file)
   * instead of blocking the open forever; regular files ignore it. */
  int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) return errno == ENOENT ? FEDC_ERR_NOT_FOUND : FEDC_ERR_IO;
  char *buf = NULL;
  size_t used = 0;
  int rc = fc_read_fd_more(fd, cap, &buf, &used);
  close(fd);
  if (rc != FEDC_OK) {
    free(buf);
    return rc;
  }
  *out = buf;
  *len = used;
  return FEDC_OK;
}

#define IO_STEP (1u << 30) /* largest single write; some kernels cap one call near 2 GiB */
#define TMP_ATTEMPTS 16    /* random names tried before giving up (a collision means someone is guessing) */

static int write_all(int fd, const void *data, size_t len) {
  const char *p = data;
  while (len > 0) {
    ssize_t n = write(fd, p, len < IO_STEP ? len : IO_STEP);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) {
      if (n == 0) errno = EIO;
      return -1;
    }
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

/* ---- atomic replacement ---------------------------------------------------------- */

static void set_err(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_err(char *err, size_t errlen, const char *fmt, ...) {
  if (!err || errlen == 0) return;
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
}

static const char *kind_of(mode_t m) {
  if (S_ISLNK(m)) return "a symbolic link";
  if (S_ISDIR(m)) return "a directory";
  if (S_ISFIFO(m)) return "a FIFO";
  if (S_ISCHR(m)) return "a character device";
  if (S_ISBLK(m)) return "a block device";
  if (S_ISSOCK(m)) return "a socket";
  return "a special file";
}

/* 12 hex digits nobody can predict; getrandom falls back to a mix of clock,
 * pid and address only where it is unavailable (O_EXCL keeps that safe). */
static void random_hex(char out[13]) {
  uint8_t b[6];
  if (getrandom(b, sizeof b, GRND_NONBLOCK) != (ssize_t)sizeof b) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    uint64_t x = (uint64_t)ts.tv_nsec ^ ((uint64_t)ts.tv_sec << 20) ^ ((uint64_t)getpid() << 40) ^
                 (uint64_t)(uintptr_t)out;
    for (int i = 0; i < 6; i++) b[i] = (uint8_t)(x >> (8 * i));
  }
  static const char hex[] = "0123456789abcdef";
  for (int i = 0; i < 6; i++) {
    out[2 * i] = hex[b[i] >> 4];
    out[2 * i + 1] = hex[b[i] & 15];
  }
  out[12] = '\0';
}

/* The directory part of path ("." or "/" as needed) into a fresh string. */
static char *dir_of(const char *path) {
  const char *slash = strrchr(path, '/');
  if (!slash) return strdup(".");
  if (slash == path) return strdup("/");
  return strndup(path, (size_t)(slash - path));
}

/* fsync the directory holding path so a rename into it is durable. */
int fc_fsync_parent(const char *path) {
  char *dir = dir_of(path);
  if (!dir) {
    errno = ENOMEM;
    return -1;
  }
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  free(dir);
  if (fd < 0) return -1;
  int rc = fsync(fd);
  int saved = errno;
  close(fd);
  errno = saved;
  return rc;
}

static void atomic_end(fc_atomic_file *f, int remove_tmp) {
  if (f->fd >= 0) close(f->fd);
  if (remove_tmp && f->tmp) unlink(f->tmp);
  free(f->tmp);
  free(f->path);
  f->fd = -1;
  f->tmp = NULL;
  f->path = NULL;
}

void fc_atomic_abort(fc_atomic_file *f) {
  if (f) atomic_end(f, 1);
}

int fc_atomic_begin(fc_atomic_file *f, const char *path, int mode, char *err, size_t errlen) {
  f->fd = -1;
  f->tmp = f->path = NULL;
  if (!path || !*path || path[strlen(path) - 1] == '/') {
    set_err(err, errlen, "no file name given");
    return FEDC_ERR_INVALID;
  }
  struct stat st;
  if (lstat(path, &st) == 0) {
    if (!S_ISREG(st.st_mode)) {
      set_err(err, errlen, "refusing to replace %s: it is %s, not a regular file", path, kind_of(st.st_mode));
      return FEDC_ERR_INVALID;
    }
  } else if (errno != ENOENT) {
    set_err(err, errlen, "cannot check %s: %s", path, strerror(errno));
    return FEDC_ERR_IO;
  }
  const char *slash = strrchr(path, '/');
  size_t dir_len = slash ? (size_t)(slash - path) + 1 : 0; /* with the '/' */
  const char *base = path + dir_len;
  size_t cap = strlen(path) + sizeof "..0123456789ab.tmp"; /* "." base "." 12 hex ".tmp" NUL */
  f->path = strdup(path);
  f->tmp = malloc(cap);
  if (!f->path || !f->tmp) {
    atomic_end(f, 0);
    set_err(err, errlen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  int saved = 0;
  for (int attempt = 0; attempt < TMP_ATTEMPTS && f->fd < 0; attempt++) {
    char rnd[13];
    random_hex(rnd);
    snprintf(f->tmp, cap, "%.*s.%s.%s.tmp", (int)dir_len, path, base, rnd);
    f->fd = open(f->tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    saved = errno;
    if (f->fd < 0 && saved != EEXIST) break;
  }
  if (f->fd < 0) {
    set_err(err, errlen, "cannot create a temporary file next to %s: %s", path, strerror(saved));
    free(f->tmp);
    f->tmp = NULL; /* not ours: nothing to unlink */
    atomic_end(f, 0);
    return FEDC_ERR_IO;
  }
  /* Exactly `mode`, whatever the umask (see write_new). */
  if (fchmod(f->fd, (mode_t)(mode & 07777)) != 0) {
    set_err(err, errlen, "cannot set the mode of %s: %s", f->tmp, strerror(errno));
    atomic_end(f, 1);
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

int fc_atomic_write(fc_atomic_file *f, const void *data, size_t len, char *err, size_t errlen) {
  if (f->fd < 0) {
    set_err(err, errlen, "write to a file that is not open");
    return FEDC_ERR_INVALID;
  }
  if (write_all(f->fd, data, len) != 0) {
    set_err(err, errlen, "cannot write %s: %s", f->tmp, strerror(errno));
    atomic_end(f, 1);
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

/* fc_atomic_set_commit_guard: set once by the program before its threads. */
static int (*commit_guard)(void);

void fc_atomic_set_commit_guard(int (*guard)(void)) { commit_guard = guard; }

int fc_atomic_guard_allows(void) { return !commit_guard || commit_guard(); }

int fc_atomic_commit(fc_atomic_file *f, char *err, size_t errlen) {
  if (f->fd < 0) {
    set_err(err, errlen, "commit of a file that is not open");
    return FEDC_ERR_INVALID;
  }
  if (fsync(f->fd) != 0) {
    set_err(err, errlen, "cannot write %s: %s", f->tmp, strerror(errno));
    atomic_end(f, 1);
    return FEDC_ERR_IO;
  }
  int closed = close(f->fd);
  f->fd = -1;
  if (closed != 0) {
    set_err(err, errlen, "cannot write %s: %s", f->tmp, strerror(errno));
    atomic_end(f, 1);
    return FEDC_ERR_IO;
  }
  /* Last moment before the file replaces what is there (see the guard's header). */
  if (!fc_atomic_guard_allows()) {
    set_err(err, errlen, "%s not written: this process may no longer write (a deposed coordinator replica)", f->path);
    atomic_end(f, 1);
    return FEDC_ERR_STOPPED;
  }
  if (rename(f->tmp, f->path) != 0) {
    set_err(err, errlen, "cannot rename %s to %s: %s", f->tmp, f->path, strerror(errno));
    atomic_end(f, 1);
    return FEDC_ERR_IO;
  }
  int rc = FEDC_OK;
  if (fc_fsync_parent(f->path) != 0) {
    /* The file is complete and in place; only its durability across a crash is unknown. */
    set_err(err, errlen, "cannot fsync the directory of %s: %s", f->path, strerror(errno));
    rc = FEDC_ERR_IO;
  }
  atomic_end(f, 0);
  return rc;
}

int fc_write_file_atomic(const char *path, const void *data, size_t len, int mode, int exclusive) {
  if (!path || (!data && len)) return FEDC_ERR_INVALID;
  if (exclusive) return write_new(path, data, len, mode);
  fc_atomic_file f;
  int rc = fc_atomic_begin(&f, path, mode, NULL, 0);
  if (rc == FEDC_OK) rc = fc_atomic_write(&f, data, len, NULL, 0);
  if (rc == FEDC_OK) rc = fc_atomic_commit(&f, NULL, 0);
  return rc;
}
