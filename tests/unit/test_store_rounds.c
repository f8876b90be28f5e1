/*
 * test_store_rounds.c - reading the round history (rounds.jsonl,
 * fc_store_read_rounds) whatever the length of its lines:
 *   - a record on a line far longer than any fixed buffer (here 200 KB: an
 *     unknown field, as a newer version or another tool may add) is one
 *     record, and the records around it are intact; it used to be read in
 *     4,096-byte pieces, none of them JSON, and dropped;
 *   - a line over the cap (FC_STORE_ROUND_LINE_MAX) is refused with a
 *     one-line error naming the file and the line, and the file is left as
 *     it was;
 *   - a long torn last line (a crash mid-append) is skipped and cut off, so
 *     the next record lands on its own line; so is one torn just before its
 *     newline (whole JSON: it used to be counted, then cut from the file);
 *   - with the commit guard refusing (a deposed coordinator replica, set by
 *     cli/cmd_coordinator_ha.c), neither a round line nor an eval line is
 *     appended: FEDC_ERR_STOPPED and the file as it was (they used to be
 *     appended without asking).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "check.h"
#include "common/fileutil.h"
#include "coordinator/store.h"
#include "fedc/error.h"

static int deposed(void) { return 0; }

static void append_record(const char *dir, uint64_t round) {
  fc_round_stats r;
  memset(&r, 0, sizeof r);
  r.round = round;
  r.completed = 1;
  r.version = round;
  char err[400] = "";
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
}

/* A record line for `round` with a field of `pad` bytes; torn: cut off
 * before its end (no closing brace, no newline). */
static void append_long(const char *path, uint64_t round, size_t pad, int torn) {
  FILE *f = fopen(path, "a");
  CHECK(f != NULL);
  if (!f) return;
  fprintf(f, "{\"round\":%llu,\"outcome\":\"abandoned\",\"reason\":\"deadline passed\",\"note\":\"",
          (unsigned long long)round);
  for (size_t i = 0; i < pad; i++) fputc('x', f);
  if (!torn) fprintf(f, "\"}\n");
  fclose(f);
}

static long file_size(const char *path) {
  struct stat sb;
  return stat(path, &sb) == 0 ? (long)sb.st_size : -1;
}

int main(void) {
  char dir[] = "/tmp/fedc-test-store-rounds.XXXXXX", path[600], err[400];
  CHECK(mkdtemp(dir) != NULL);
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  snprintf(path, sizeof path, "%s/rounds.jsonl", dir);
  fc_round_stats *hist = NULL;
  size_t n = 0;

  /* A 200 KB line between two ordinary ones. */
  append_record(dir, 1);
  append_long(path, 2, 200000, 0);
  append_record(dir, 3);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  if (n == 3) {
    CHECK_EQ_INT(hist[0].round, 1);
    CHECK_EQ_INT(hist[1].round, 2);
    CHECK(!hist[1].completed && strcmp(hist[1].reason, "deadline passed") == 0);
    CHECK_EQ_INT(hist[2].round, 3);
    CHECK(hist[2].completed);
  }
  free(hist);
  hist = NULL;

  /* A long torn last line: skipped, cut, and the next record is whole. */
  long whole = file_size(path);
  append_long(path, 4, 50000, 1);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  free(hist);
  hist = NULL;
  CHECK_EQ_INT(file_size(path), whole);
  /* Torn just before its newline: whole JSON, but it is cut off all the
   * same, so it is not counted either (it would be gone after the restart). */
  FILE *f = fopen(path, "a");
  CHECK(f != NULL);
  if (f) fputs("{\"round\":4,\"outcome\":\"completed\"}", f), fclose(f);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  free(hist);
  hist = NULL;
  CHECK_EQ_INT(file_size(path), whole);
  append_record(dir, 5);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 4);
  if (n == 4) CHECK_EQ_INT(hist[3].round, 5);
  free(hist);
  hist = NULL;

  /* Over the cap: refused, naming the file and the line; nothing lost. */
  append_long(path, 6, FC_STORE_ROUND_LINE_MAX, 0);
  append_record(dir, 7);
  long before = file_size(path);
  n = 99;
  err[0] = 0;
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_ERR_TOO_LARGE);
  printf("  over the cap: %s\n", err);
  CHECK(strstr(err, "rounds.jsonl") != NULL && strstr(err, "line 5") != NULL);
  CHECK(strchr(err, '\n') == NULL);
  CHECK(hist == NULL && n == 0);
  CHECK_EQ_INT(file_size(path), before);

  /* A deposed replica: the guard refuses, nothing is appended. */
  fc_atomic_set_commit_guard(deposed);
  before = file_size(path);
  fc_round_stats r;
  memset(&r, 0, sizeof r);
  r.round = 8;
  err[0] = 0;
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_ERR_STOPPED);
  CHECK(strstr(err, "round 8 not appended") != NULL && strchr(err, '\n') == NULL);
  fc_round_eval ev;
  memset(&ev, 0, sizeof ev);
  CHECK_EQ_INT(fc_store_append_eval(dir, 7, &ev, err, sizeof err), FEDC_ERR_STOPPED);
  CHECK_EQ_INT(file_size(path), before);
  fc_atomic_set_commit_guard(NULL);
  append_record(dir, 8);
  CHECK(file_size(path) > before);

  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
  return CHECK_DONE();
}
