/*
 * bench_audit.c - reading the audit log back: the coordinator's start
 * (fc_audit_open: the chain checked, first contacts remembered) and `fedc
 * audit verify` (every line parsed), on a log of N records written by the
 * real writer (fc_audit_append), and every line built by jansson (`fedc
 * audit show`; what the start and verify did before audit_shape.c), against
 * two baselines in the same run:
 *   read     the file read in the same 1 MiB pieces (the I/O floor)
 *   sha256   SHA-256 of every line, as the chain needs (the hashing floor)
 * One JSON line per figure: seconds, MB/s, ratio to each baseline, and the
 * process's peak RSS growth while the figure ran (the log is never held
 * whole: it should stay about a piece, not the log's size).
 *
 *   bench_audit [records=1000000] [runs=3]    (median of runs; ~350 B a record)
 */
#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "coordinator/audit.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static long peak_rss_kib(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return ru.ru_maxrss;
}

static int cmp_double(const void *a, const void *b) {
  double x = *(const double *)a, y = *(const double *)b;
  return x < y ? -1 : x > y;
}

static char dir[64], path[128];

/* The read floor: the file in 1 MiB pieces, touched (summed) so it is read. */
static int run_read(void) {
  int fd = open(path, O_RDONLY);
  static char buf[1 << 20];
  unsigned sum = 0;
  ssize_t got;
  off_t off = 0;
  while ((got = pread(fd, buf, sizeof buf, off)) > 0) {
    for (ssize_t i = 0; i < got; i += 4096) sum += (unsigned char)buf[i];
    off += got;
  }
  close(fd);
  return (int)(sum & 1);
}

/* The hashing floor: SHA-256 of each line (what the chain check must do). */
static int run_sha(void) {
  int fd = open(path, O_RDONLY);
  static char buf[(1 << 20) + FC_AUDIT_MAX_LINE];
  size_t have = 0;
  ssize_t got;
  off_t off = 0;
  uint8_t d[FC_SHA256_LEN];
  int x = 0;
  while ((got = pread(fd, buf + have, (1 << 20), off)) > 0) {
    off += got;
    have += (size_t)got;
    size_t at = 0;
    char *nl;
    while ((nl = memchr(buf + at, '\n', have - at)) != NULL) {
      fc_sha256(buf + at, (size_t)(nl - (buf + at)), d);
      x ^= d[0];
      at = (size_t)(nl - buf) + 1;
    }
    memmove(buf, buf + at, have - at);
    have -= at;
  }
  close(fd);
  return x & 1;
}

static int run_start(void) {
  fc_audit *a = NULL;
  char why[400];
  int rc = fc_audit_open(dir, &a, why, sizeof why);
  if (rc != FEDC_OK) fprintf(stderr, "bench_audit: open: %s\n", why);
  fc_audit_close(a);
  return rc;
}

static int walk(const char *const *build) {
  int fd;
  char err[300];
  fc_audit_report r;
  if (fc_audit_open_log(dir, &fd, err, sizeof err) != FEDC_OK) return 1;
  fc_audit_src s = FC_AUDIT_SRC_FD(fd);
  s.build = build;
  int rc = fc_audit_walk_src(&s, &r, NULL, NULL);
  close(fd);
  return rc;
}

/* `fedc audit verify` (no --pki): every line scanned, none built. */
static int run_verify(void) {
  static const char *const none[] = {NULL};
  return walk(none);
}

/* Every line built by jansson (what `fedc audit show` and the anchor check
 * do, and what verify and the start did before the scan). */
static int run_tree(void) { return walk(NULL); }

int main(int argc, char **argv) {
  long records = argc > 1 ? atol(argv[1]) : 1000000;
  int runs = argc > 2 ? atoi(argv[2]) : 3;
  if (records < 1 || runs < 1 || runs > 15) {
    fprintf(stderr, "usage: bench_audit [records>=1] [runs 1..15]\n");
    return 2;
  }
  snprintf(dir, sizeof dir, "/tmp/fedc-bench-audit-XXXXXX");
  if (!mkdtemp(dir)) return 1;
  snprintf(path, sizeof path, "%s/%s", dir, FC_AUDIT_FILE);

  /* The log, by the writer: a contact per 100 records, the rest accepted
   * updates as coord_upload.c writes them. */
  fc_audit *a = NULL;
  char why[400];
  if (fc_audit_open(dir, &a, why, sizeof why) != FEDC_OK) {
    fprintf(stderr, "bench_audit: %s\n", why);
    return 1;
  }
  double t0 = now_s();
  for (long i = 1; i <= records; i++) {
    char name[32], hex[65];
    uint8_t fp[32];
    snprintf(name, sizeof name, "client-%05ld", i / 100);
    if (i % 100 == 1) {
      memset(fp, 0, sizeof fp);
      memcpy(fp, &i, sizeof i);
      fp[31] = 1;
      fc_audit_contact(a, name, "client", fp, "ipv4:127.0.0.1:40000");
      continue;
    }
    fc_sha256(&i, sizeof i, fp);
    fc_hex(fp, 32, hex);
    fc_audit_append(a, "update", json_pack("{s:s,s:I,s:s,s:b,s:s,s:f}", "client", name, "round", (json_int_t)(i / 1000),
                                           "outcome", "accepted", "masked", 0, "sha256", hex, "norm", 3.25));
    if (i % 200000 == 0) fprintf(stderr, "bench_audit: %ld / %ld records written\n", i, records);
  }
  fc_audit_close(a);
  struct stat st;
  stat(path, &st);
  double mb = (double)st.st_size / 1e6;
  fprintf(stderr, "bench_audit: %ld records, %.1f MB, written in %.1f s\n", records, mb, now_s() - t0);

  enum { NF = 5 };
  static const char *const names[NF] = {"read", "sha256", "start", "verify", "tree"};
  int (*const fns[NF])(void) = {run_read, run_sha, run_start, run_verify, run_tree};
  double sec[NF][15], med[NF];
  long rss[NF] = {0, 0, 0, 0, 0};
  for (int r = 0; r < runs; r++)
    for (int k = 0; k < NF; k++) {
      long before = peak_rss_kib();
      double s = now_s();
      if (k >= 2 && fns[k]() != FEDC_OK) {
        fprintf(stderr, "bench_audit: %s failed\n", names[k]);
        return 1;
      }
      if (k < 2) fns[k]();
      sec[k][r] = now_s() - s;
      long grew = peak_rss_kib() - before;
      if (grew > rss[k]) rss[k] = grew;
    }
  for (int k = 0; k < NF; k++) {
    qsort(sec[k], (size_t)runs, sizeof sec[k][0], cmp_double);
    med[k] = sec[k][runs / 2];
  }
  for (int k = 0; k < NF; k++)
    printf("{\"bench\":\"audit_%s\",\"records\":%ld,\"mb\":%.1f,\"seconds\":%.3f,\"mb_per_s\":%.1f,"
           "\"vs_read\":%.3f,\"vs_sha256\":%.3f,\"peak_rss_growth_kib\":%ld,\"runs\":%d}\n",
           names[k], records, mb, med[k], mb / med[k], med[0] / med[k], med[1] / med[k], rss[k], runs);
  unlink(path);
  rmdir(dir);
  return 0;
}
