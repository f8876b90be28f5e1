/*
 * test_engine_elig.c - device eligibility in the round engine (engine_elig.c),
 * in-process with synthetic time: the policy check and its wording, old
 * clients (nothing reported) under the default and a strict policy,
 * selection taking only eligible devices, min_clients counting only them,
 * a member turning ineligible before and after fetching its task, DONE
 * winning over ineligibility, and the population counts status shows.
 */
#include <stdio.h>
#include <string.h>

#include "check.h"
#include "coordinator/engine.h"
#include "fedc/error.h"

static const uint8_t SHA0[FC_SHA256_LEN] = {7};

static fc_engine *make(const struct fc_elig_policy *p, uint32_t min_clients, uint64_t rounds) {
  fc_engine_cfg cfg;
  fc_engine_cfg_defaults(&cfg);
  cfg.min_clients = min_clients;
  cfg.min_updates = 1;
  cfg.cohort_size = 10;
  cfg.rounds = rounds;
  cfg.pickup_ms = 1000;
  cfg.round_ms = 5000;
  cfg.client_ttl_ms = 10000;
  if (p) cfg.elig = *p;
  fc_engine *e = NULL;
  CHECK_EQ_INT(fc_engine_create(&cfg, 1, 0, 0, SHA0, &e), FEDC_OK);
  return e;
}

static fc_device_state dev(int charging, int unmetered, int idle, uint32_t battery, uint64_t storage) {
  fc_device_state d = {1, charging, unmetered, idle, battery, storage};
  return d;
}

static int checkin(fc_engine *e, const char *who, const fc_device_state *d, uint64_t now, char *why, size_t n,
                   uint32_t *retry) {
  fc_task_info t;
  uint32_t r = 0;
  char w[400];
  int a = fc_engine_checkin_device(e, who, d, 0, 0, now, &t, NULL, &r, why ? why : w, why ? n : sizeof w);
  if (retry) *retry = r;
  return a;
}

static void test_policy_check(void) {
  struct fc_elig_policy none = {0}, p = {0};
  fc_device_state d = dev(0, 0, 0, 0, 0);
  CHECK_EQ_INT(fc_elig_check(&none, NULL), 0);
  CHECK_EQ_INT(fc_elig_check(&none, &d), 0);
  p.require_charging = 1;
  CHECK_EQ_INT(fc_elig_check(&p, NULL), FC_INELIG_UNREPORTED);
  fc_device_state unrep = {0};
  CHECK_EQ_INT(fc_elig_check(&p, &unrep), FC_INELIG_UNREPORTED);
  p.allow_unreported = 1;
  CHECK_EQ_INT(fc_elig_check(&p, NULL), 0);
  p.allow_unreported = 0;
  p.require_unmetered = p.require_idle = 1;
  p.min_battery_percent = 50;
  p.min_free_storage_bytes = 1000;
  fc_device_state ok = dev(1, 1, 1, 50, 1000);
  CHECK_EQ_INT(fc_elig_check(&p, &ok), 0);
  fc_device_state bad = dev(0, 1, 0, 20, 999);
  unsigned m = fc_elig_check(&p, &bad);
  CHECK_EQ_INT(m, FC_INELIG_NOT_CHARGING | FC_INELIG_NOT_IDLE | FC_INELIG_BATTERY | FC_INELIG_STORAGE);
  fc_device_state unknown = dev(1, 1, 1, 0, 0); /* 0 = unknown: fails both minimums */
  CHECK_EQ_INT(fc_elig_check(&p, &unknown), FC_INELIG_BATTERY | FC_INELIG_STORAGE);
  char why[300];
  fc_elig_explain(&p, &bad, m, why, sizeof why);
  CHECK(strstr(why, "not charging") != NULL);
  CHECK(strstr(why, "not idle") != NULL);
  CHECK(strstr(why, "battery 20% below the required 50%") != NULL);
  CHECK(strstr(why, "free storage 999 bytes below the required 1000") != NULL);
  CHECK(strstr(why, "metered") == NULL);
  fc_elig_explain(&p, NULL, FC_INELIG_UNREPORTED, why, sizeof why);
  CHECK(strstr(why, "did not report") != NULL && strstr(why, "charging") != NULL);
  char small[8];
  fc_elig_explain(&p, &bad, m, small, sizeof small); /* truncates, stays terminated */
  CHECK(strlen(small) < sizeof small);
  char pol[200];
  fc_elig_policy_text(&none, pol, sizeof pol);
  CHECK(strcmp(pol, "none") == 0);
  fc_elig_policy_text(&p, pol, sizeof pol);
  CHECK(strstr(pol, "charging") && strstr(pol, "battery >= 50%") && strstr(pol, "free storage >= 1000 bytes"));
  CHECK_EQ_INT(strcmp(fc_elig_reason_name(1), "not_charging"), 0);
}

/* Default policy: devices that report nothing (older clients) are selected as before. */
static void test_default_policy_admits_old_clients(void) {
  fc_engine *e = make(NULL, 2, 10);
  CHECK_EQ_INT(checkin(e, "old", NULL, 0, NULL, 0, NULL), FC_CHECKIN_WAIT);
  fc_device_state d = dev(0, 0, 0, 5, 1);
  CHECK_EQ_INT(checkin(e, "new", &d, 0, NULL, 0, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 10), FC_TICK_STARTED);
  CHECK_EQ_INT(checkin(e, "old", NULL, 20, NULL, 0, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "new", &d, 20, NULL, 0, NULL), FC_CHECKIN_TRAIN);
  fc_elig_counts k;
  fc_engine_elig_counts(e, 30, &k);
  CHECK_EQ_INT(k.seen, 2);
  CHECK_EQ_INT(k.eligible, 2);
  fc_engine_destroy(e);
}

static void test_selection_and_counts(void) {
  struct fc_elig_policy p = {0};
  p.require_charging = 1;
  p.min_battery_percent = 30;
  fc_engine *e = make(&p, 2, 10);
  fc_device_state yes = dev(1, 0, 0, 80, 0), unplugged = dev(0, 0, 0, 80, 0), flat = dev(1, 0, 0, 10, 0);
  char why[400];
  uint32_t retry = 0;
  CHECK_EQ_INT(checkin(e, "a", &yes, 0, why, sizeof why, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "u", &unplugged, 0, why, sizeof why, &retry), FC_CHECKIN_INELIGIBLE);
  CHECK(strstr(why, "not charging") != NULL);
  CHECK_EQ_INT(retry, 1000); /* told when to come back (the poll interval for a small fleet) */
  CHECK_EQ_INT(checkin(e, "f", &flat, 0, why, sizeof why, NULL), FC_CHECKIN_INELIGIBLE);
  CHECK(strstr(why, "battery 10% below the required 30%") != NULL);
  CHECK_EQ_INT(checkin(e, "old", NULL, 0, why, sizeof why, NULL), FC_CHECKIN_INELIGIBLE);
  CHECK(strstr(why, "did not report") != NULL);
  /* One eligible device of four: min_clients 2 counts only eligible ones. */
  CHECK_EQ_INT(fc_engine_tick(e, 10), FC_TICK_NONE);
  fc_elig_counts k;
  fc_engine_elig_counts(e, 20, &k);
  CHECK_EQ_INT(k.seen, 4);
  CHECK_EQ_INT(k.eligible, 1);
  CHECK_EQ_INT(k.by_reason[1], 1); /* not_charging */
  CHECK_EQ_INT(k.by_reason[4], 1); /* low_battery */
  CHECK_EQ_INT(k.by_reason[0], 1); /* not_reported */
  /* "u" is plugged in: now two eligible, a round starts with exactly them. */
  CHECK_EQ_INT(checkin(e, "u", &yes, 600, why, sizeof why, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(fc_engine_tick(e, 700), FC_TICK_STARTED);
  const char *names[8];
  CHECK_EQ_INT(fc_engine_cohort(e, names, 8), 2);
  CHECK(strcmp(names[0], "a") == 0 && strcmp(names[1], "u") == 0);
  CHECK_EQ_INT(checkin(e, "f", &flat, 710, why, sizeof why, NULL), FC_CHECKIN_INELIGIBLE);
  /* "a" fetches its task, then reconnects unplugged: it finishes its round. */
  CHECK_EQ_INT(checkin(e, "a", &yes, 720, why, sizeof why, NULL), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(checkin(e, "a", &unplugged, 730, why, sizeof why, NULL), FC_CHECKIN_TRAIN);
  /* "u" is unplugged before fetching its task: no task; it misses pick-up. */
  CHECK_EQ_INT(checkin(e, "u", &unplugged, 740, why, sizeof why, NULL), FC_CHECKIN_INELIGIBLE);
  CHECK_EQ_INT(fc_engine_tick(e, 1800), FC_TICK_NONE); /* past pick-up: u dropped, a remains (min_updates 1) */
  fc_engine_status st;
  fc_engine_get_status(e, 1800, &st);
  CHECK_EQ_INT(st.selected, 1);
  fc_engine_destroy(e);
}

/* allow_unreported admits old clients; an ineligible device hears DONE when the federation is done. */
static void test_unreported_allowed_and_done(void) {
  struct fc_elig_policy p = {0};
  p.require_unmetered = 1;
  p.allow_unreported = 1;
  fc_engine *e = make(&p, 1, 1);
  fc_device_state metered = dev(1, 0, 1, 100, 1 << 20);
  CHECK_EQ_INT(checkin(e, "old", NULL, 0, NULL, 0, NULL), FC_CHECKIN_WAIT);
  CHECK_EQ_INT(checkin(e, "m", &metered, 0, NULL, 0, NULL), FC_CHECKIN_INELIGIBLE);
  CHECK_EQ_INT(fc_engine_tick(e, 10), FC_TICK_STARTED);
  fc_task_info t;
  uint32_t retry;
  CHECK_EQ_INT(fc_engine_checkin_device(e, "old", NULL, 0, 0, 20, &t, NULL, &retry, NULL, 0), FC_CHECKIN_TRAIN);
  CHECK_EQ_INT(fc_engine_upload_begin(e, "old", t.round, t.version, 30), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_upload_commit(e, "old", t.round, 5, 0.5, 10, 40), FC_UP_OK);
  CHECK_EQ_INT(fc_engine_tick(e, 50), FC_TICK_AGGREGATE);
  fc_engine_published(e, 1, SHA0, 60);
  CHECK_EQ_INT(checkin(e, "m", &metered, 70, NULL, 0, NULL), FC_CHECKIN_DONE);
  fc_engine_destroy(e);
}

int main(void) {
  test_policy_check();
  test_default_policy_admits_old_clients();
  test_selection_and_counts();
  test_unreported_allowed_and_done();
  return CHECK_DONE();
}
