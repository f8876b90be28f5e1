/*
 * coord_calib.c - the coordinator's glue for cached update calibration
 * (--async-calibrate; calib.h has the I/O-free rule, CA2FL, Wang et al.,
 * ICLR 2024, Algorithm 1): what it refuses at start, the cache's size, and
 * the four hooks: a buffer starts (coord_driver.c), an accepted update is
 * calibrated before it is folded (coord_upload.c, and the buffer log's
 * replay in coord_async.c, so a replayed update is calibrated as it was
 * live), the buffer's step (coord_finalize), its publish.
 *
 * The cache lives in memory only: after a restart it fills again from the
 * clients' next updates (until then a buffer steps as FedBuff's would). The
 * published versions and every counted update are kept as without it.
 *
 * Owns: c->calib (under c->mu).
 * May call: calib.h, engine.h (the buffer's rows), aggregate.h (the rule).
 */
#include <stdio.h>

#include "common/log.h"
#include "coordinator/aggregate.h"
#include "coordinator/calib.h"
#include "coordinator/coord_int.h"
#include "fedc/error.h"

#define MOD "coordinator"

int coord_calib_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  if (!cfg->async_calibrate) return FEDC_OK;
  const char *bad = NULL;
  if (!cfg->engine.async)
    bad = "async_calibrate is for async mode (mode: async): a synchronous round hears from its whole cohort";
  else if (fc_robust_parse(cfg->aggregator) > FC_AGG_FEDAVG)
    bad = "async_calibrate needs the fedavg aggregator: a robust rule would judge differences from cached "
          "updates, not updates, and the cached mean it adds back is no robust statistic";
  else if (cfg->reproducible_sum)
    bad = "async_calibrate cannot run with reproducible_sum: a difference from a cached update may be twice the "
          "clip norm, past the fixed-point sum's bound";
  else if (cfg->agg_tier)
    bad = "async_calibrate cannot run with an aggregator tier: the tier folds updates the coordinator never sees";
  else if (cfg->engine.staleness.fedbuff)
    bad = "async_calibrate cannot run with staleness ,fedbuff: FedBuff's division would scale the cached mean too";
  else if (!(cfg->clip_norm > 0))
    bad = "async_calibrate needs clip_norm > 0: a cached update counts in every step until its client sends "
          "another, so its size must be bounded";
  else if (cfg->async_cache_mib < 1 || cfg->async_cache_mib > (1u << 24))
    bad = "async_cache_mib must be in [1, 16777216]";
  if (bad) {
    snprintf(err, errlen, "%s", bad);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK;
}

int coord_calib_start(fc_coord *c, char *err, size_t errlen) {
  if (!c->cfg.async_calibrate) return FEDC_OK;
  size_t n = fc_model_numel(&c->model->spec);
  uint32_t rows = fc_async_buffer_rows(&c->cfg.engine);
  uint64_t per = (uint64_t)n * sizeof(float), room = fc_calib_capacity(n, rows, c->cfg.async_cache_mib << 20);
  if (room < 1) {
    snprintf(err, errlen,
             "async_cache_mib %llu holds not one client's update of this model (%.1f MiB each, beside the buffer's "
             "%u staged updates and the running sum)",
             (unsigned long long)c->cfg.async_cache_mib, (double)per / 1048576.0, rows);
    return FEDC_ERR_INVALID;
  }
  uint32_t max = room > 1000000 ? 1000000 : (uint32_t)room;
  int rc = fc_calib_create(n, max, rows, &c->calib);
  if (rc != FEDC_OK) {
    snprintf(err, errlen, "out of memory for the calibration cache");
    return rc;
  }
  FC_INFO(MOD, "async calibration (CA2FL): caching the latest update of up to %u clients (%.1f MiB each, "
               "--async-cache-mib %llu)",
          max, (double)per / 1048576.0, (unsigned long long)c->cfg.async_cache_mib);
  return FEDC_OK;
}

void coord_calib_stop(fc_coord *c) {
  fc_calib_free(c->calib);
  c->calib = NULL;
}

void coord_calib_begin_locked(fc_coord *c) {
  if (c->calib) fc_calib_begin(c->calib);
}

void coord_calib_apply_locked(fc_coord *c, const char *client, uint64_t examples, float *x) {
  if (c->calib) fc_calib_apply(c->calib, client, examples, x);
}

void coord_calib_stage_locked(fc_coord *c, const char *client, uint64_t examples, const float *x) {
  if (c->calib) fc_calib_stage(c->calib, client, examples, x);
}

void coord_calib_calibrate_locked(fc_coord *c, const char *client, float *x) {
  if (c->calib) fc_calib_calibrate(c->calib, client, x);
}

void coord_calib_forget_locked(fc_coord *c, const char *client) {
  if (c->calib) fc_calib_forget(c->calib, client);
}

void coord_calib_finish(fc_coord *c, float *delta) {
  if (!c->calib) return;
  pthread_mutex_lock(&c->mu);
  fc_calib_finish(c->calib, delta);
  pthread_mutex_unlock(&c->mu);
}

void coord_calib_status_pb(fc_coord *c, Fedc__V1__AsyncStatus *as) {
  pthread_mutex_lock(&c->mu);
  if (c->calib) {
    fc_calib_info ci;
    fc_calib_get_info(c->calib, &ci);
    as->calib_cached = ci.cached;
    as->calib_max_clients = ci.max_clients;
    as->calib_evicted = ci.evicted;
  }
  pthread_mutex_unlock(&c->mu);
}

void coord_calib_published(fc_coord *c) {
  if (!c->calib) return;
  pthread_mutex_lock(&c->mu);
  fc_calib_published(c->calib);
  fc_calib_info ci;
  fc_calib_get_info(c->calib, &ci);
  pthread_mutex_unlock(&c->mu);
  FC_DEBUG(MOD, "async calibration: %u of %u clients cached (%llu evicted), %llu examples", ci.cached,
           ci.max_clients, (unsigned long long)ci.evicted, (unsigned long long)ci.weight);
}
