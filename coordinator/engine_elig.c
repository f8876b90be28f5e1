/*
 * engine_elig.c - device eligibility: the part of the round engine that
 * decides whether a device may be selected from what it said about itself
 * at check-in (CheckInRequest.device, protocol 1.8: charging, unmetered
 * network, idle, battery level, free storage) and the federation's policy
 * (fc_engine_cfg.elig). I/O-free like the rest of the engine; called by
 * engine.c (the check-in) and, for status, by the coordinator.
 *
 * Rule (Bonawitz et al. 2019, sec. 2.2: devices check in only when they may
 * train; here the coordinator also enforces it): a device is eligible when
 * its last check-in met every requirement of the policy. A requirement the
 * device did not report is not met (battery or free storage 0 = unknown). A
 * device that reported nothing at all (a client before 1.8, or an embedding
 * program without a device-state callback) meets no requirement, so it is
 * eligible only under the empty policy (the default) or with
 * allow_unreported (during a fleet upgrade). The verdict is kept per client
 * (client_rec.inelig) until its next check-in: selection (eng_selectable)
 * never takes a device whose last word was "ineligible".
 */
#include "coordinator/engine_int.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static const char *const reason_names[FC_INELIG_NREASONS] = {
    "not_reported", "not_charging", "metered", "not_idle", "low_battery", "low_storage",
};

const char *fc_elig_reason_name(int i) { return i >= 0 && i < FC_INELIG_NREASONS ? reason_names[i] : "?"; }

static int policy_empty(const struct fc_elig_policy *p) {
  return !p->require_charging && !p->require_unmetered && !p->require_idle && !p->min_battery_percent &&
         !p->min_free_storage_bytes;
}

unsigned fc_elig_check(const struct fc_elig_policy *p, const fc_device_state *d) {
  if (policy_empty(p)) return 0;
  if (!d || !d->reported) return p->allow_unreported ? 0 : FC_INELIG_UNREPORTED;
  unsigned m = 0;
  if (p->require_charging && !d->charging) m |= FC_INELIG_NOT_CHARGING;
  if (p->require_unmetered && !d->unmetered) m |= FC_INELIG_METERED;
  if (p->require_idle && !d->idle) m |= FC_INELIG_NOT_IDLE;
  if (p->min_battery_percent && d->battery_percent < p->min_battery_percent) m |= FC_INELIG_BATTERY;
  if (p->min_free_storage_bytes && d->free_storage_bytes < p->min_free_storage_bytes) m |= FC_INELIG_STORAGE;
  return m;
}

/* Append to buf (at its length), "; " before every clause but the first;
 * truncates safely. */
static void clause(char *buf, size_t n, const char *fmt, ...) {
  size_t at = strlen(buf);
  if (at + 1 >= n) return;
  if (at) {
    snprintf(buf + at, n - at, "; ");
    at = strlen(buf);
  }
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(buf + at, n - at, fmt, ap);
  va_end(ap);
}

void fc_elig_explain(const struct fc_elig_policy *p, const fc_device_state *d, unsigned reasons, char *buf,
                     size_t n) {
  if (!n) return;
  buf[0] = '\0';
  if (reasons & FC_INELIG_UNREPORTED) {
    char pol[160];
    fc_elig_policy_text(p, pol, sizeof pol);
    snprintf(buf, n, "the client did not report its device state (fedc protocol 1.8 with a device-state callback, "
                     "or fedc client's device flags) and this federation requires %s", pol);
    return;
  }
  if (reasons & FC_INELIG_NOT_CHARGING) clause(buf, n, "not charging");
  if (reasons & FC_INELIG_METERED) clause(buf, n, "on a metered network");
  if (reasons & FC_INELIG_NOT_IDLE) clause(buf, n, "not idle");
  if (reasons & FC_INELIG_BATTERY)
    clause(buf, n, "battery %u%% below the required %u%%", d ? d->battery_percent : 0u, p->min_battery_percent);
  if (reasons & FC_INELIG_STORAGE)
    clause(buf, n, "free storage %llu bytes below the required %llu", d ? (unsigned long long)d->free_storage_bytes : 0ull,
           (unsigned long long)p->min_free_storage_bytes);
}

void fc_elig_policy_text(const struct fc_elig_policy *p, char *buf, size_t n) {
  if (!n) return;
  buf[0] = '\0';
  if (policy_empty(p)) {
    snprintf(buf, n, "none");
    return;
  }
  /* clause() separates with "; ": the policy reads as a list */
  if (p->require_charging) clause(buf, n, "charging");
  if (p->require_unmetered) clause(buf, n, "unmetered network");
  if (p->require_idle) clause(buf, n, "idle");
  if (p->min_battery_percent) clause(buf, n, "battery >= %u%%", p->min_battery_percent);
  if (p->min_free_storage_bytes)
    clause(buf, n, "free storage >= %llu bytes", (unsigned long long)p->min_free_storage_bytes);
  if (p->allow_unreported) clause(buf, n, "devices that report nothing admitted");
}

void eng_elig_note(fc_engine *e, client_rec *r, const fc_device_state *dev, char *why, size_t whylen) {
  unsigned m = fc_elig_check(&e->cfg.elig, dev);
  r->inelig = (uint8_t)m;
  if (m && why && whylen) fc_elig_explain(&e->cfg.elig, dev, m, why, whylen);
}

void fc_engine_elig_counts(const fc_engine *e, uint64_t now_ms, fc_elig_counts *out) {
  memset(out, 0, sizeof *out);
  for (uint32_t i = 0; i < e->nrecs; i++) {
    const client_rec *r = &e->recs[i];
    if (!eng_is_live(e, r, now_ms)) continue;
    out->seen++;
    if (!r->inelig) out->eligible++;
    for (int b = 0; b < FC_INELIG_NREASONS; b++)
      if (r->inelig & (1u << b)) out->by_reason[b]++;
  }
}
