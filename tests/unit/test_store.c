/*
 * test_store.c - the coordinator's state directory: model versions round-trip
 * with their SHA-256, a tampered model file is refused, state.json and the
 * round history survive a reopen, a torn last history line is skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/store.h"
#include "fedc/error.h"

static void write_state(const char *dir, const char *json) {
  char p[600];
  snprintf(p, sizeof p, "%s/state.json", dir);
  FILE *f = fopen(p, "w");
  CHECK(f != NULL);
  fputs(json, f);
  fclose(f);
}

#define SHA64 "\"0000000000000000000000000000000000000000000000000000000000000000\""

/* Corrupt fields are refused naming the field (issue 6 item 8): they used to
 * be defaulted ("completed": "x" -> 0, "next_round": -2 -> 2^64-2). */
static void test_corrupt_state(const char *dir) {
  static const struct {
    const char *json, *field;
  } cases[] = {
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":\"x\",\"abandoned\":0,"
       "\"federation\":\"fed\"}", "completed"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":-2,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\"}", "next_round"},
      {"{\"version\":\"3\",\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\"}", "version"},
      {"{\"version\":3,\"sha256\":\"zz\",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\"}", "sha256"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0}",
       "federation"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\",\"paused\":1}", "paused"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\",\"budget\":-1}", "budget"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":0,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\"}", "next_round"},
      {"{\"version\":3,\"version\":4,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,"
       "\"abandoned\":0,\"federation\":\"fed\"}", "version"},
      {"{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
       "\"federation\":\"fed\",\"open_round\":9}", "open_round"},
  };
  for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
    write_state(dir, cases[i].json);
    fc_store_state st;
    char err[400] = "";
    int rc = fc_store_load_state(dir, "fed", &st, err, sizeof err);
    CHECK_EQ_INT(rc, FEDC_ERR_FORMAT);
    if (!strstr(err, cases[i].field)) fprintf(stderr, "case %zu: '%s' does not name %s\n", i, err, cases[i].field);
    CHECK(strstr(err, cases[i].field) != NULL);
  }
  /* A state file from before the admin fields: they default to "none". */
  write_state(dir, "{\"version\":3,\"sha256\":" SHA64 ",\"next_round\":9,\"completed\":3,\"abandoned\":0,"
                   "\"federation\":\"fed\"}");
  fc_store_state st;
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &st, (char[400]){0}, 400), FEDC_OK);
  CHECK_EQ_INT(st.has_budget, 0);
  CHECK_EQ_INT(st.paused, 0);
  CHECK_EQ_INT(st.open_round, 0);
}

/* A short write (here EFBIG past RLIMIT_FSIZE; ENOSPC behaves the same) must
 * not leave half a line that the next record is glued to (issue 6 item 5). */
static void test_short_append(const char *dir) {
  char p[600];
  snprintf(p, sizeof p, "%s/rounds.jsonl", dir);
  struct stat sb;
  CHECK_EQ_INT(stat(p, &sb), 0);
  off_t before = sb.st_size;
  struct rlimit old, lim;
  CHECK_EQ_INT(getrlimit(RLIMIT_FSIZE, &old), 0);
  signal(SIGXFSZ, SIG_IGN);
  lim = old;
  lim.rlim_cur = (rlim_t)before + 20; /* room for 20 bytes of a ~250-byte record */
  CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &lim), 0);
  fc_round_stats r;
  memset(&r, 0, sizeof r);
  r.round = 6;
  r.completed = 1;
  r.version = 6;
  char err[400] = "";
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_ERR_IO);
  CHECK(strstr(err, "too large") != NULL); /* strerror(EFBIG), not a generic "I/O error" */
  CHECK_EQ_INT(setrlimit(RLIMIT_FSIZE, &old), 0);
  CHECK_EQ_INT(stat(p, &sb), 0);
  CHECK_EQ_INT(sb.st_size, before); /* cut back */
  r.round = 7;
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  fc_round_stats *hist = NULL;
  size_t n = 0;
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 5);
  if (n == 5) CHECK_EQ_INT(hist[4].round, 7);
  free(hist);
}

int main(void) {
  char dir[] = "/tmp/fedc-test-store.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char err[400];
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  fc_store_state st;
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &st, err, sizeof err), FEDC_ERR_NOT_FOUND);

  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t s1[2] = {3, 4}, s2[1] = {3};
  fc_model_spec_add(&spec, "fc1.weight", 2, s1);
  fc_model_spec_add(&spec, "fc1.bias", 1, s2);
  float w[15];
  for (int i = 0; i < 15; i++) w[i] = (float)i * 0.25f - 1;
  uint8_t sha[FC_SHA256_LEN], parent[FC_SHA256_LEN] = {7};
  fc_sha256(w, sizeof w, sha);
  CHECK_EQ_INT(fc_store_write_model(dir, NULL, 3, 3, &spec, w, sha, parent, err, sizeof err), FEDC_OK);
  fc_model_spec got;
  float *data = NULL;
  uint8_t gsha[FC_SHA256_LEN];
  CHECK_EQ_INT(fc_store_read_model(dir, NULL, 3, &got, &data, gsha, NULL, err, sizeof err), FEDC_OK);
  CHECK(fc_model_spec_equal(&spec, &got));
  CHECK(data && memcmp(data, w, sizeof w) == 0);
  CHECK(memcmp(gsha, sha, FC_SHA256_LEN) == 0);
  free(data);
  CHECK_EQ_INT(fc_store_read_model(dir, NULL, 4, &got, &data, gsha, NULL, err, sizeof err), FEDC_ERR_NOT_FOUND);

  /* Flip one payload byte: the recorded hash no longer matches. */
  char path[600];
  fc_store_model_path(dir, 3, path, sizeof path);
  FILE *f = fopen(path, "r+b");
  CHECK(f != NULL);
  fseek(f, -3, SEEK_END);
  int c = fgetc(f);
  fseek(f, -3, SEEK_END);
  fputc(c ^ 0x40, f);
  fclose(f);
  data = NULL;
  CHECK_EQ_INT(fc_store_read_model(dir, NULL, 3, &got, &data, gsha, NULL, err, sizeof err), FEDC_ERR_HASH);
  CHECK(data == NULL);

  memset(&st, 0, sizeof st);
  st.version = 3;
  memcpy(st.sha, sha, FC_SHA256_LEN);
  st.next_round = 9;
  st.completed = 3;
  st.abandoned = 5;
  st.paused = 1;
  st.budget = 12;
  st.config_rounds = 7;
  st.open_round = 8;
  CHECK_EQ_INT(fc_store_save_state(dir, "fed", &st, err, sizeof err), FEDC_OK);
  fc_store_state back;
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &back, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(back.version, 3);
  CHECK_EQ_INT(back.next_round, 9);
  CHECK_EQ_INT(back.completed, 3);
  CHECK_EQ_INT(back.abandoned, 5);
  CHECK(memcmp(back.sha, sha, FC_SHA256_LEN) == 0);
  /* Admin state survives (issue 6 item 6). */
  CHECK_EQ_INT(back.paused, 1);
  CHECK_EQ_INT(back.has_budget, 1);
  CHECK_EQ_INT(back.budget, 12);
  CHECK_EQ_INT(back.config_rounds, 7);
  CHECK_EQ_INT(back.open_round, 8);
  /* Another federation's state directory is refused. */
  CHECK_EQ_INT(fc_store_load_state(dir, "other", &back, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK(strstr(err, "federation 'fed'") != NULL);
  test_corrupt_state(dir);
  CHECK_EQ_INT(fc_store_save_state(dir, "fed", &st, err, sizeof err), FEDC_OK);

  fc_round_stats r;
  memset(&r, 0, sizeof r);
  for (int i = 1; i <= 3; i++) {
    r.round = (uint64_t)i;
    r.completed = i != 2;
    r.version = (uint64_t)i;
    r.participants = 10;
    r.mean_loss = 0.5 / i;
    if (i == 2) snprintf(r.reason, sizeof r.reason, "deadline passed");
    if (i == 3) { /* a secure-aggregation round: 10 > 10 > 9 > 9 > 8 */
      uint32_t left[5] = {10, 10, 9, 9, 8};
      memcpy(r.sa_remaining, left, sizeof left);
      /* ... with 6 clients named for bad unmask shares: the first 4 names and the count kept */
      for (int b = 0; b < FC_ROUND_BLAMED_MAX; b++) snprintf(r.sa_blamed[b], sizeof r.sa_blamed[b], "bad-%d", b);
      r.sa_nblamed = 6;
    }
    CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  }
  snprintf(path, sizeof path, "%s/rounds.jsonl", dir);
  f = fopen(path, "a");
  fputs("{\"round\": 4, \"outc", f); /* a crash mid-line */
  fclose(f);
  fc_round_stats *hist = NULL;
  size_t n = 0;
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 3);
  if (n == 3) {
    CHECK(hist[0].completed && !hist[1].completed && hist[2].completed);
    CHECK(strcmp(hist[1].reason, "deadline passed") == 0);
    CHECK(hist[2].mean_loss > 0.16 && hist[2].mean_loss < 0.17);
    CHECK_EQ_INT(hist[0].sa_remaining[0], 0); /* plaintext rounds carry none */
    CHECK_EQ_INT(hist[2].sa_remaining[0], 10);
    CHECK_EQ_INT(hist[2].sa_remaining[2], 9);
    CHECK_EQ_INT(hist[2].sa_remaining[4], 8);
    CHECK_EQ_INT(hist[0].sa_nblamed, 0);
    CHECK_EQ_INT(hist[2].sa_nblamed, 6);
    CHECK(strcmp(hist[2].sa_blamed[0], "bad-0") == 0 && strcmp(hist[2].sa_blamed[3], "bad-3") == 0);
  }
  free(hist);
  /* The torn tail was cut: a new record lands on its own line. */
  r.round = 5;
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 4);
  if (n == 4) CHECK_EQ_INT(hist[3].round, 5);
  free(hist);
  test_short_append(dir);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
  return CHECK_DONE();
}
