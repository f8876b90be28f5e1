/*
 * coord_drain.c - the end of a federation (issue 21): once the round budget
 * is spent and the coordinator is about to exit (`fedc coordinator
 * --exit-when-done`), it first keeps serving until every live client has
 * been answered DONE, so clients stop instead of retrying for ever a
 * coordinator that is gone (a client cannot tell "finished" from "restarting"
 * except by DONE: docs/operations.md). Bounded by a drain timeout.
 *
 * Owns: the drain loop and its log lines. May call: the engine under c->mu
 * (fc_engine_done_pending, fc_engine_max_retry_ms) and the caller's wait
 * function; the service keeps running untouched meanwhile.
 *
 * Who is waited for: clients that checked in within the liveness window and
 * did not say Leave (the engine's "live"), not yet answered DONE. Waiting
 * clients come back after the retry_after_ms they were told (plus up to a
 * quarter of jitter, client/runtime.c); clients that just uploaded check in
 * at once. So the automatic timeout is 1.25 x the longest retry_after handed
 * out + 5 s, at most 120 s: a client that crashed without leaving is not
 * waited for beyond that.
 */
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/coord_int.h"

#define MOD "coordinator"
#define DRAIN_MARGIN_MS 5000u
#define DRAIN_CAP_MS 120000u
#define DRAIN_NAMES 5

uint32_t fc_coord_drain_auto_ms(fc_coord *c) {
  pthread_mutex_lock(&c->mu);
  uint64_t r = fc_engine_max_retry_ms(c->engine);
  pthread_mutex_unlock(&c->mu);
  uint64_t ms = r + r / 4 + DRAIN_MARGIN_MS;
  return ms > DRAIN_CAP_MS ? DRAIN_CAP_MS : (uint32_t)ms;
}

/* Live clients not yet told DONE; the first names joined into `list`. */
static uint32_t pending(fc_coord *c, char *list, size_t len) {
  const char *names[DRAIN_NAMES];
  pthread_mutex_lock(&c->mu);
  uint32_t n = fc_engine_done_pending(c->engine, fc_now_ms(), names, DRAIN_NAMES);
  size_t at = 0;
  list[0] = 0;
  for (uint32_t i = 0; i < n && i < DRAIN_NAMES && at < len; i++)
    at += (size_t)snprintf(list + at, len - at, "%s%s", i ? ", " : "", names[i]);
  if (n > DRAIN_NAMES && at < len) snprintf(list + at, len - at, ", ...");
  pthread_mutex_unlock(&c->mu);
  return n;
}

int fc_coord_drain(fc_coord *c, uint32_t timeout_ms, int (*wait_stop)(int ms)) {
  if (!timeout_ms) timeout_ms = fc_coord_drain_auto_ms(c);
  char list[400];
  double t0 = fc_mono_s();
  uint32_t n = pending(c, list, sizeof list);
  if (!n) {
    FC_INFO(MOD, "drain complete: every live client heard DONE (0 ms)");
    return 0;
  }
  FC_INFO(MOD, "federation finished: draining until %u more live client%s heard DONE (at most %u ms)", n,
          n == 1 ? " has" : "s have", timeout_ms);
  for (;;) {
    int sig = 0;
    if (wait_stop)
      sig = wait_stop(100);
    else
      usleep(100000);
    if (sig > 0) {
      FC_INFO(MOD, "drain interrupted with %u client%s yet to hear DONE", n, n == 1 ? "" : "s");
      return sig;
    }
    n = pending(c, list, sizeof list);
    double waited_ms = (fc_mono_s() - t0) * 1000.0;
    if (!n) {
      FC_INFO(MOD, "drain complete: every live client heard DONE (%.0f ms)", waited_ms);
      return 0;
    }
    if (waited_ms >= timeout_ms) {
      FC_WARN(MOD, "drain timed out after %u ms: %u live client%s never checked in to hear DONE (%s); they keep "
                   "retrying until stopped",
              timeout_ms, n, n == 1 ? "" : "s", list);
      return 0;
    }
  }
}
