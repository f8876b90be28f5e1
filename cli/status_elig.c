/*
 * status_elig.c - `fedc status` (text and --json): the eligible population
 * (live devices seen, how many are eligible under the federation's policy,
 * and how many fail each requirement) and pace steering (the target
 * check-in rate and the wait devices are told). Kept apart from
 * cmd_admin.c, which is past its size; the coordinator fills the message in
 * coordinator/coord_checkin.c from the engine (engine_elig.c, engine_pace.c).
 */
#include "cli/status_elig.h"

#include <stdio.h>

#include "cli/cli_common.h"

static const char *const names[] = {"not_reported", "not_charging", "metered", "not_idle", "low_battery", "low_storage"};

static void counts(const Fedc__V1__EligibilityStatus *e, uint32_t out[6]) {
  out[0] = e->not_reported;
  out[1] = e->not_charging;
  out[2] = e->metered;
  out[3] = e->not_idle;
  out[4] = e->low_battery;
  out[5] = e->low_storage;
}

void status_elig_json(json_t *o, const Fedc__V1__EligibilityStatus *e) {
  if (!e) return;
  uint32_t k[6];
  counts(e, k);
  json_t *by = json_object();
  for (int i = 0; i < 6; i++) json_object_set_new(by, names[i], json_integer(k[i]));
  json_t *pace = json_object();
  json_object_set_new(pace, "steering", json_boolean(e->pace_steering));
  json_object_set_new(pace, "target_rate", json_real(e->pace_target_rate));
  json_object_set_new(pace, "window_ms", json_integer((json_int_t)e->pace_window_ms));
  json_t *el = json_object();
  json_object_set_new(el, "policy", json_string(e->policy ? e->policy : ""));
  json_object_set_new(el, "seen", json_integer(e->seen));
  json_object_set_new(el, "eligible", json_integer(e->eligible));
  json_object_set_new(el, "by_reason", by);
  json_object_set_new(el, "pace", pace);
  json_object_set_new(o, "eligibility", el);
}

void status_elig_print(const Fedc__V1__EligibilityStatus *e) {
  if (!e) return;
  char b[512];
  printf("eligible:        %u of %u active (policy: %s)", e->eligible, e->seen, CLI_SHOWN(b, e->policy));
  uint32_t k[6];
  counts(e, k);
  const char *sep = "; not eligible: ";
  for (int i = 0; i < 6; i++)
    if (k[i]) {
      printf("%s%u %s", sep, k[i], names[i]);
      sep = ", ";
    }
  printf("\n");
  if (e->pace_steering)
    printf("pace steering:   on, %.4g check-ins/s wanted, devices told to come back in about %.0f s\n",
           e->pace_target_rate, (double)e->pace_window_ms / 1000.0);
  else if (e->pace_target_rate > 0)
    printf("pace steering:   not needed (devices poll every %.0f ms; it starts above %.4g check-ins/s)\n",
           (double)e->pace_window_ms, e->pace_target_rate);
  else
    printf("pace steering:   off (devices poll every %.0f ms)\n", (double)e->pace_window_ms);
}
