/*
 * test_keyfile.c - the one rule for private key files (crypto/keyfile.h;
 * security review, finding 8):
 *   - the rule as a function: every mode, owner and group case, including
 *     the Kubernetes Secret (root:fsGroup 0440) for a non-root process and a
 *     root one, and Debian's root:ssl-cert 0640;
 *   - real files: 0600 and 0400 read; 0644, 0604, 0660, 0640 (our own file)
 *     refused with the fix in the message; a symlink to a good file followed;
 *     a FIFO, a directory, a missing file and one over the cap refused;
 *   - the Kubernetes Secret layout for real (run as root): files reached
 *     through ..data/ symlinks, root:10001 0440, read by a child process of
 *     uid/gid 10001 and by a root one with 10001 as a supplementary group;
 *     another group's 0440 file and a group-writable one refused.
 */
#define _GNU_SOURCE
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "check.h"
#include "crypto/keyfile.h"
#include "fedc/error.h"

static char dir[64];

static const char *P(const char *name) {
  static char p[4][200];
  static int i;
  i = (i + 1) % 4;
  snprintf(p[i], sizeof p[i], "%s/%s", dir, name);
  return p[i];
}

static void put(const char *name, mode_t mode) {
  FILE *f = fopen(P(name), "w");
  fputs("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", f);
  fclose(f);
  chmod(P(name), mode);
}

static int rule(mode_t mode, uid_t owner, gid_t group, uid_t euid, int ours, const char *words) {
  char err[400] = "";
  int rc = fc_key_file_rule("k.key", mode, owner, group, euid, ours, err, sizeof err);
  if (words && !strstr(err, words)) fprintf(stderr, "  mode %04o: want '%s', got '%s'\n", (unsigned)mode, words, err);
  if (words) CHECK(strstr(err, words) != NULL);
  return rc;
}

static void test_rule(void) {
  const uid_t me = 10001, other = 10002;
  const gid_t fsgroup = 10001;
  /* Our own file. */
  CHECK_EQ_INT(rule(0600, me, fsgroup, me, 1, NULL), FEDC_OK);
  CHECK_EQ_INT(rule(0400, me, fsgroup, me, 1, NULL), FEDC_OK);
  CHECK_EQ_INT(rule(0700, me, fsgroup, me, 1, NULL), FEDC_OK); /* owner execute is harmless */
  CHECK_EQ_INT(rule(0644, me, fsgroup, me, 1, "mode 0644: other users may read it; chmod 600 k.key"),
               FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0604, me, fsgroup, me, 1, "other users may read it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0602, me, fsgroup, me, 1, "other users may write it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0601, me, fsgroup, me, 1, "other users may execute it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0660, me, fsgroup, me, 1, "mode 0660: its group (gid 10001) may write it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0610, me, fsgroup, me, 1, "its group (gid 10001) may execute it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0640, me, fsgroup, me, 1, "mode 0640: its group (gid 10001) may read it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0440, me, fsgroup, me, 1, "may read it"), FEDC_ERR_PERMISSION);
  /* Someone else's file, even 0600. */
  CHECK_EQ_INT(rule(0600, other, fsgroup, me, 1, "owned by uid 10002, not by this process's user (uid 10001) or root"),
               FEDC_ERR_PERMISSION);
  /* Root's file. */
  CHECK_EQ_INT(rule(0400, 0, 0, me, 0, NULL), FEDC_OK);
  /* The Kubernetes Secret with fsGroup: root:fsGroup 0440, we are in fsGroup. */
  CHECK_EQ_INT(rule(0440, 0, fsgroup, me, 1, NULL), FEDC_OK);
  CHECK_EQ_INT(rule(0440, 0, fsgroup, 0, 1, NULL), FEDC_OK); /* a root pod with fsGroup */
  CHECK_EQ_INT(rule(0640, 0, 115, me, 1, NULL), FEDC_OK);    /* root:ssl-cert 0640 */
  /* ... but not when the group is not ours, is root's, or may write. */
  CHECK_EQ_INT(rule(0440, 0, fsgroup, me, 0, "only for a file of root's whose group is this process's"),
               FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0440, 0, 0, me, 1, "its group (gid 0) may read it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0460, 0, fsgroup, me, 1, "may write it"), FEDC_ERR_PERMISSION);
  CHECK_EQ_INT(rule(0444, 0, fsgroup, me, 1, "other users may read it"), FEDC_ERR_PERMISSION);
}

static int read_rc(const char *name, char *err, size_t errlen) {
  char *buf = NULL;
  size_t len = 0;
  int rc = fc_key_file_read(P(name), 1 << 20, &buf, &len, err, errlen);
  if (rc == FEDC_OK) {
    if (!strstr(buf, "BEGIN PRIVATE KEY") || strlen(buf) != len) rc = -1;
    free(buf);
  } else if (buf) {
    rc = -2; /* nothing may be handed out on error */
  }
  return rc;
}

static void expect(const char *name, int want, const char *words) {
  char err[400] = "";
  int rc = read_rc(name, err, sizeof err);
  if (rc != want || (words && !strstr(err, words)))
    fprintf(stderr, "  %s: want %d '%s', got %d '%s'\n", name, want, words ? words : "", rc, err);
  CHECK_EQ_INT(rc, want);
  if (words) CHECK(strstr(err, words) != NULL);
}

static void test_files(void) {
  put("k600", 0600);
  put("k400", 0400);
  put("k644", 0644);
  put("k604", 0604);
  put("k660", 0660);
  put("k640", 0640);
  expect("k600", FEDC_OK, NULL);
  expect("k400", FEDC_OK, NULL);
  expect("k644", FEDC_ERR_PERMISSION, "k644 has mode 0644: other users may read it; chmod 600");
  expect("k604", FEDC_ERR_PERMISSION, "mode 0604: other users may read it");
  expect("k660", FEDC_ERR_PERMISSION, "mode 0660: its group");
  /* Our own file readable by our group: refused whoever we are (a root-run
   * test owns it as root, group 0: refused too). */
  expect("k640", FEDC_ERR_PERMISSION, "mode 0640: its group");
  /* A symlink is followed; the file it leads to is judged. */
  CHECK(symlink("k600", P("link-good")) == 0);
  CHECK(symlink("k644", P("link-loose")) == 0);
  expect("link-good", FEDC_OK, NULL);
  expect("link-loose", FEDC_ERR_PERMISSION, "other users may read it");
  /* Not a key file at all: refused, not hung on (a FIFO) or read. */
  CHECK(mkfifo(P("fifo"), 0600) == 0);
  expect("fifo", FEDC_ERR_PERMISSION, "is not a regular file");
  CHECK(mkdir(P("adir"), 0700) == 0);
  expect("adir", FEDC_ERR_PERMISSION, "is not a regular file");
  expect("missing", FEDC_ERR_NOT_FOUND, "cannot open private key");
  char *buf = NULL, err[300];
  size_t len = 0;
  CHECK_EQ_INT(fc_key_file_read(P("k600"), 16, &buf, &len, err, sizeof err), FEDC_ERR_TOO_LARGE);
  CHECK(buf == NULL && strstr(err, "larger than 16 bytes") != NULL);
}

/* The Kubernetes Secret volume: DIR/s/tls.key -> ..data/tls.key,
 * ..data -> ..2026_01_01_00_00_00.1/, the files root:GID mode 0440 and the
 * symlinks root's (what the kubelet makes for defaultMode 0440 + fsGroup).
 * Each check runs in a child with the given identity; its exit status is the
 * fedc_err. */
static int as(uid_t uid, gid_t gid, const gid_t *groups, int ngroups, const char *name) {
  pid_t pid = fork();
  if (pid == 0) {
    if (setgroups((size_t)ngroups, groups) != 0 || setegid(gid) != 0 || seteuid(uid) != 0) _exit(100);
    char err[400] = "";
    int rc = read_rc(name, err, sizeof err);
    if (rc != FEDC_OK) fprintf(stderr, "  as uid %u: %s: %s\n", (unsigned)uid, name, err);
    _exit(rc < 0 ? 101 : rc);
  }
  int status = 0;
  waitpid(pid, &status, 0);
  return WIFEXITED(status) ? WEXITSTATUS(status) : 102;
}

static void test_kubernetes_secret(void) {
  if (geteuid() != 0) {
    printf("not root: the Kubernetes Secret layout is checked through the rule only (test_rule)\n");
    return;
  }
  const gid_t fsgroup = 10001;
  CHECK(chmod(dir, 0755) == 0); /* the children must reach it */
  CHECK(mkdir(P("s"), 0755) == 0);
  CHECK(mkdir(P("s/..2026_01_01_00_00_00.1"), 0755) == 0);
  put("s/..2026_01_01_00_00_00.1/tls.key", 0440);
  put("s/..2026_01_01_00_00_00.1/other.key", 0440);
  put("s/..2026_01_01_00_00_00.1/writable.key", 0460);
  CHECK(chown(P("s/..2026_01_01_00_00_00.1/tls.key"), 0, fsgroup) == 0);
  CHECK(chown(P("s/..2026_01_01_00_00_00.1/other.key"), 0, fsgroup + 1) == 0);
  CHECK(chown(P("s/..2026_01_01_00_00_00.1/writable.key"), 0, fsgroup) == 0);
  CHECK(symlink("..2026_01_01_00_00_00.1", P("s/..data")) == 0);
  CHECK(symlink("..data/tls.key", P("s/tls.key")) == 0);
  CHECK(symlink("..data/other.key", P("s/other.key")) == 0);
  CHECK(symlink("..data/writable.key", P("s/writable.key")) == 0);
  /* runAsUser/runAsGroup 10001, fsGroup 10001 (deploy/k8s/statefulset.yaml). */
  CHECK_EQ_INT(as(10001, 10001, &fsgroup, 1, "s/tls.key"), FEDC_OK);
  /* runAsUser 10001 in another primary group, fsGroup supplementary. */
  gid_t two[2] = {20000, fsgroup};
  CHECK_EQ_INT(as(10001, 20000, two, 2, "s/tls.key"), FEDC_OK);
  /* A root container with fsGroup. */
  CHECK_EQ_INT(as(0, 0, &fsgroup, 1, "s/tls.key"), FEDC_OK);
  /* Another group's file: not readable at all; group-writable: refused. */
  CHECK_EQ_INT(as(10001, 10001, &fsgroup, 1, "s/other.key"), FEDC_ERR_IO);
  CHECK_EQ_INT(as(10001, 10001, &fsgroup, 1, "s/writable.key"), FEDC_ERR_PERMISSION);
  /* Root without the group: the group's read is not ours to accept. */
  gid_t none = 0;
  CHECK_EQ_INT(as(0, 0, &none, 1, "s/tls.key"), FEDC_ERR_PERMISSION);
}

int main(void) {
  snprintf(dir, sizeof dir, "/tmp/fedc-keyfile-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  test_rule();
  test_files();
  test_kubernetes_secret();
  char cmd[128];
  snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
  if (system(cmd) != 0) fprintf(stderr, "cannot remove %s\n", dir);
  return CHECK_DONE();
}
