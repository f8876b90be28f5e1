/*
 * fuzz_store_rounds.c - the coordinator's round history reader
 * (fc_store_read_rounds, coordinator/store.c) on any rounds.jsonl: a crash
 * mid-append leaves a torn line, and the file is read at every start and
 * served to admins. Properties: no crash; at most one record per line; the
 * torn tail (bytes after the last newline) is cut off; records written back
 * (fc_store_append_round) read back as the same records. A federated
 * evaluation's line ({"round", "eval"}) merges into its round's record and
 * is not written back (fc_store_append_round never writes one).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "coordinator/store.h"
#include "fixture.h"
#include "fuzz.h"

static int same(const fc_round_stats *a, const fc_round_stats *b) {
  return a->round == b->round && a->completed == b->completed && a->version == b->version &&
         a->participants == b->participants && a->selected == b->selected && a->examples == b->examples &&
         memcmp(&a->mean_loss, &b->mean_loss, sizeof a->mean_loss) == 0 && a->bytes_in == b->bytes_in &&
         a->bytes_out == b->bytes_out && a->started_ms == b->started_ms && a->ended_ms == b->ended_ms &&
         (!a->completed || memcmp(a->sha, b->sha, sizeof a->sha) == 0) && strcmp(a->reason, b->reason) == 0 &&
         strcmp(a->server_opt, b->server_opt) == 0 && memcmp(a->sa_remaining, b->sa_remaining, sizeof a->sa_remaining) == 0 &&
         memcmp(&a->dp_epsilon, &b->dp_epsilon, sizeof a->dp_epsilon) == 0 &&
         memcmp(&a->dp_clip, &b->dp_clip, sizeof a->dp_clip) == 0 && memcmp(&a->dp_noise, &b->dp_noise, sizeof a->dp_noise) == 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  const char *path = fix_write("rounds.jsonl", data, size);
  const char *dir = fix_path("");
  fc_round_stats *v = NULL, *w = NULL;
  size_t n = 0, m = 0, lines = 0, keep = 0;
  char err[512];
  for (size_t i = 0; i < size; i++)
    if (data[i] == '\n') lines++, keep = i + 1;
  if (fc_store_read_rounds(dir, &v, &n, err, sizeof err) != 0) abort(); /* the file is ours and writable */
  struct stat sb;
  if (n > lines + 1 || stat(path, &sb) != 0 || (size_t)sb.st_size != keep) abort();
  /* Write them back; what is read again must be the same records. */
  remove(path);
  size_t written = 0;
  for (size_t i = 0; i < n; i++) {
    /* The writer's rules: the DP fields only when epsilon > 0, the SecAgg
     * counts only when SecAgg ran (clients left after advertising > 0). */
    if (!(v[i].dp_epsilon > 0)) v[i].dp_epsilon = v[i].dp_clip = v[i].dp_noise = 0;
    if (!v[i].sa_remaining[0]) memset(v[i].sa_remaining, 0, sizeof v[i].sa_remaining);
    /* The writer refuses text that is not UTF-8 (a reason cut mid-character
     * by the reader's 160-byte field): such a record is not compared. */
    if (fc_store_append_round(dir, &v[i], err, sizeof err) == 0) v[written++] = v[i];
  }
  if (fc_store_read_rounds(dir, &w, &m, err, sizeof err) != 0 || m != written) abort();
  for (size_t i = 0; i < written; i++)
    if (!same(&v[i], &w[i])) abort();
  free(v);
  free(w);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  static const char s[] =
      "{\"round\":1,\"outcome\":\"completed\",\"version\":1,\"participants\":2,\"selected\":2,\"examples\":120,"
      "\"mean_train_loss\":0.25,\"bytes_in\":800,\"bytes_out\":900,\"started_unix_ms\":1700000000000,"
      "\"ended_unix_ms\":1700000001000,\"sha256\":\"0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\","
      "\"reason\":\"\",\"server_optimizer\":\"sgd lr=1\",\"dp_epsilon\":0.5,\"dp_clip\":1,\"dp_noise\":1.1}\n"
      "{\"round\":1,\"eval\":{\"outcome\":\"completed\",\"version\":1,\"selected\":3,\"clients\":3,\"examples\":150.0,"
      "\"correct\":120.0,\"loss_sum\":61.5,\"metrics\":{\"top2\":{\"sum\":140,\"examples\":150}},"
      "\"secagg_remaining\":[3,3,3,3,3]}}\n"
      "{\"round\":2,\"outcome\":\"abandoned\",\"version\":1,\"participants\":1,\"selected\":3,\"examples\":0,"
      "\"mean_train_loss\":0,\"bytes_in\":0,\"bytes_out\":0,\"started_unix_ms\":1700000002000,"
      "\"ended_unix_ms\":1700000003000,\"sha256\":\"\",\"reason\":\"deadline: 1 of 2 updates\","
      "\"secagg_remaining\":[3,3,2,2,2]}\n"
      "{\"round\":3,\"outc";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
