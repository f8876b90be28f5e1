/*
 * test_store.c - the coordinator's state directory: model versions round-trip
 * with their SHA-256, a tampered model file is refused, state.json and the
 * round history survive a reopen, a torn last history line is skipped.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"
#include "coordinator/store.h"
#include "fedc/error.h"

int main(void) {
  char dir[] = "/tmp/fedc-test-store.XXXXXX";
  CHECK(mkdtemp(dir) != NULL);
  char err[400];
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  fc_store_state st;
  CHECK_EQ_INT(fc_store_load_state(dir, &st, err, sizeof err), FEDC_ERR_NOT_FOUND);

  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t s1[2] = {3, 4}, s2[1] = {3};
  fc_model_spec_add(&spec, "fc1.weight", 2, s1);
  fc_model_spec_add(&spec, "fc1.bias", 1, s2);
  float w[15];
  for (int i = 0; i < 15; i++) w[i] = (float)i * 0.25f - 1;
  uint8_t sha[FC_SHA256_LEN], parent[FC_SHA256_LEN] = {7};
  fc_sha256(w, sizeof w, sha);
  CHECK_EQ_INT(fc_store_write_model(dir, 3, 3, &spec, w, sha, parent, err, sizeof err), FEDC_OK);
  fc_model_spec got;
  float *data = NULL;
  uint8_t gsha[FC_SHA256_LEN];
  CHECK_EQ_INT(fc_store_read_model(dir, 3, &got, &data, gsha, err, sizeof err), FEDC_OK);
  CHECK(fc_model_spec_equal(&spec, &got));
  CHECK(data && memcmp(data, w, sizeof w) == 0);
  CHECK(memcmp(gsha, sha, FC_SHA256_LEN) == 0);
  free(data);
  CHECK_EQ_INT(fc_store_read_model(dir, 4, &got, &data, gsha, err, sizeof err), FEDC_ERR_NOT_FOUND);

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
  CHECK_EQ_INT(fc_store_read_model(dir, 3, &got, &data, gsha, err, sizeof err), FEDC_ERR_HASH);
  CHECK(data == NULL);

  memset(&st, 0, sizeof st);
  st.version = 3;
  memcpy(st.sha, sha, FC_SHA256_LEN);
  st.next_round = 9;
  st.completed = 3;
  st.abandoned = 5;
  CHECK_EQ_INT(fc_store_save_state(dir, "fed", &st, err, sizeof err), FEDC_OK);
  fc_store_state back;
  CHECK_EQ_INT(fc_store_load_state(dir, &back, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(back.version, 3);
  CHECK_EQ_INT(back.next_round, 9);
  CHECK_EQ_INT(back.completed, 3);
  CHECK_EQ_INT(back.abandoned, 5);
  CHECK(memcmp(back.sha, sha, FC_SHA256_LEN) == 0);

  fc_round_stats r;
  memset(&r, 0, sizeof r);
  for (int i = 1; i <= 3; i++) {
    r.round = (uint64_t)i;
    r.completed = i != 2;
    r.version = (uint64_t)i;
    r.participants = 10;
    r.mean_loss = 0.5 / i;
    if (i == 2) snprintf(r.reason, sizeof r.reason, "deadline passed");
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
  }
  free(hist);
  /* The torn tail was cut: a new record lands on its own line. */
  r.round = 5;
  CHECK_EQ_INT(fc_store_append_round(dir, &r, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_read_rounds(dir, &hist, &n, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(n, 4);
  if (n == 4) CHECK_EQ_INT(hist[3].round, 5);
  free(hist);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  CHECK_EQ_INT(system(cmd), 0);
  return CHECK_DONE();
}
