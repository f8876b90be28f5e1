/*
 * test_refusals.c - refusal counts for the audit log (coordinator/refusals.c)
 * with synthetic time: an identity's first few refusals per interval are
 * recorded in full and the rest counted into one record at the interval's
 * end (500 refusals cost 4 + 1 records, not 500); identities past the table
 * share "*"; with detail off an interval is one record for everyone; call
 * refusals are only counted; nothing is written for an interval with
 * nothing counted; a forced flush (shutdown) writes the interval so far.
 */
#include <jansson.h>
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/refusals.h"
#include "fedc/error.h"

typedef struct sink {
  json_t *recs[64];
  size_t n;
} sink;

static void emit(json_t *f, void *ctx) {
  sink *s = ctx;
  if (s->n < 64) s->recs[s->n++] = f;
  else json_decref(f);
}

static void clear(sink *s) {
  for (size_t i = 0; i < s->n; i++) json_decref(s->recs[i]);
  s->n = 0;
}

static json_t *find(sink *s, const char *client) {
  for (size_t i = 0; i < s->n; i++)
    if (!strcmp(json_string_value(json_object_get(s->recs[i], "client")), client)) return s->recs[i];
  return NULL;
}

static long long num(json_t *o, const char *k) { return (long long)json_integer_value(json_object_get(o, k)); }
static long long by(json_t *o, const char *k) { return num(json_object_get(o, "by_reason"), k); }

int main(void) {
  fc_refusals_cfg cfg = {60000, 4, 3};
  fc_refusals *r = NULL;
  sink s = {{0}, 0};
  CHECK_EQ_INT(fc_refusals_create(&cfg, 1000, &r), FEDC_OK);

  /* One identity refused 500 times in an interval: 4 in full, 496 counted. */
  int full = 0;
  for (int i = 0; i < 500; i++) full += fc_refusals_note(r, "mallory", i < 10 ? FC_RF_PRECONDITION : FC_RF_LIMIT, 1500);
  CHECK_EQ_INT(full, 4);
  /* A client refused once, and calls over their rate (never in full). */
  CHECK_EQ_INT(fc_refusals_note(r, "alice", FC_RF_INVALID, 2000), 1);
  CHECK_EQ_INT(fc_refusals_note(r, "bob", FC_RF_CALLS, 2000), 0);
  CHECK_EQ_INT(fc_refusals_counted(r), 497);
  /* Not before the interval ends. */
  CHECK_EQ_INT(fc_refusals_flush(r, 60999, 0, emit, &s), 0);
  CHECK_EQ_INT(fc_refusals_flush(r, 61000, 0, emit, &s), 2); /* alice's one is on record whole */
  json_t *m = find(&s, "mallory");
  CHECK(m != NULL);
  if (m) {
    CHECK_EQ_INT(num(m, "refused"), 500);
    CHECK_EQ_INT(num(m, "recorded"), 4);
    CHECK_EQ_INT(num(m, "from_ms"), 1000);
    CHECK_EQ_INT(num(m, "to_ms"), 61000);
    CHECK_EQ_INT(by(m, "precondition"), 10);
    CHECK_EQ_INT(by(m, "limit"), 490);
    CHECK(json_object_get(json_object_get(m, "by_reason"), "invalid") == NULL);
  }
  json_t *b = find(&s, "bob");
  CHECK(b && num(b, "refused") == 1 && num(b, "recorded") == 0 && by(b, "calls") == 1);
  CHECK(find(&s, "alice") == NULL);
  clear(&s);

  /* The next interval starts afresh: mallory gets 4 in full again. */
  full = 0;
  for (int i = 0; i < 6; i++) full += fc_refusals_note(r, "mallory", FC_RF_LIMIT, 62000);
  CHECK_EQ_INT(full, 4);
  /* Past 3 identities: the rest share "*" (counted, never in full). */
  CHECK_EQ_INT(fc_refusals_note(r, "b", FC_RF_LATE, 62000), 1);
  CHECK_EQ_INT(fc_refusals_note(r, "c", FC_RF_LATE, 62000), 1);
  CHECK_EQ_INT(fc_refusals_note(r, "d", FC_RF_LATE, 62000), 0);
  CHECK_EQ_INT(fc_refusals_note(r, "e", FC_RF_OTHER, 62000), 0);
  /* Shutdown: forced, mid-interval. */
  CHECK_EQ_INT(fc_refusals_flush(r, 63000, 1, emit, &s), 2);
  json_t *o = find(&s, "*");
  CHECK(o && num(o, "refused") == 2 && by(o, "late") == 1 && by(o, "other") == 1 && num(o, "to_ms") == 63000);
  CHECK(find(&s, "mallory") && num(find(&s, "mallory"), "refused") == 6);
  clear(&s);
  /* Nothing refused: nothing written. */
  CHECK_EQ_INT(fc_refusals_flush(r, 200000, 0, emit, &s), 0);

  /* Detail off (the audit budget is spent): nothing in full, one record. */
  fc_refusals_set_detail(r, 0);
  full = 0;
  for (int i = 0; i < 100; i++) full += fc_refusals_note(r, i % 2 ? "x" : "y", FC_RF_PRECONDITION, 201000);
  CHECK_EQ_INT(full, 0);
  CHECK_EQ_INT(fc_refusals_flush(r, 300000, 0, emit, &s), 1);
  o = find(&s, "*");
  CHECK(o && num(o, "refused") == 100 && num(o, "identities") == 2 && num(o, "recorded") == 0);
  clear(&s);
  fc_refusals_set_detail(r, 1);
  CHECK_EQ_INT(fc_refusals_note(r, "x", FC_RF_PRECONDITION, 301000), 1);
  fc_refusals_destroy(r);
  fc_refusals_destroy(NULL);

  fc_refusals_cfg bad = {0, 4, 3};
  CHECK_EQ_INT(fc_refusals_create(&bad, 0, &r), FEDC_ERR_INVALID);
  return CHECK_DONE();
}
