/*
 * coord_async.c - the coordinator's glue for asynchronous buffered
 * aggregation (engine_async.c has the I/O-free rules): what async mode
 * refuses at start, and the open buffer's log, so a restart mid-buffer
 * loses no accepted update and counts none twice.
 *
 * The buffer log (STATE/async_buffer.log): a header (magic, the version the
 * buffer builds on, parameters n), then one record per accepted update:
 * client, examples, loss, staleness, fold weight, bytes, its n float32
 * values, and a SHA-256 over the record. A record is written and fsync'd
 * under c->mu BEFORE the engine counts the update and before the client
 * hears OK (coord_upload.c), so:
 *   - every update a client was told is accepted is in the log;
 *   - an update in the log that the client never heard accepted (a crash in
 *     between) is counted once after the restart; the client's retry is
 *     refused there (its task is unknown to the new engine) and it trains
 *     again for the next buffer;
 *   - at the first buffer after a start (tick STARTED) the log is replayed
 *     into the aggregator and the engine (fc_engine_async_replay) if it
 *     builds on the current version; a torn last record (crash mid-write:
 *     its client never heard OK) is cut off; a log of another version was
 *     published already (state.json moved on) and is dropped.
 *   - once a version is published and state.json says so, the log is
 *     removed (coord_async_buffer_done); a log of an older base is never
 *     appended to (it is rewritten from its header).
 *   - a failed publish never removes it (coord_async_publish_failed): the
 *     next buffer on the same version replays it and publishes again; a
 *     replica deposed on etcd leaves it alone for good (the next leader,
 *     sharing the state directory, replays it).
 *   - a whole record that the engine or aggregator refuses on replay is
 *     skipped, not a stop: later records are still counted.
 *
 * Owns: the log file and its handle (c->async_log, under c->mu).
 * May call: engine.h, aggregate.h (staging slots), audit.h, common/fileutil.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/log.h"
#include "coordinator/agg_slots.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MOD "coordinator"
#define LOG_NAME "async_buffer.log"
static const char LOG_MAGIC[8] = {'F', 'C', 'B', 'U', 'F', '0', '0', '1'};

struct coord_async_log {
  FILE *fp;
  uint64_t base; /* the version the logged buffer builds on */
  int replayed;  /* the first buffer after start has looked at the log */
  int fenced;    /* deposed (etcd): the log is the next leader's, never touched again */
};

typedef struct log_hdr {
  char magic[8];
  uint64_t base, n;
} log_hdr;

typedef struct rec_hdr {
  char client[72];
  uint64_t round, examples, staleness, bytes;
  double loss, weight;
} rec_hdr;

int coord_async_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  const fc_engine_cfg *e = &cfg->engine;
  if (!e->async) return FEDC_OK;
  const char *bad = NULL;
  if (e->secagg)
    bad = "async mode cannot run secure aggregation: a SecAgg instance needs a cohort fixed before its first "
          "message, a buffer is filled by whoever finishes first";
  else if (cfg->dp_noise_multiplier > 0)
    bad = "async mode cannot run differential privacy: the accountant's Poisson-subsampling analysis does not "
          "cover updates chosen by arrival order and staleness";
  else if (e->async_concurrency < 1 || e->async_buffer < 1)
    bad = "async mode needs async_concurrency and async_buffer of at least 1";
  if (bad) {
    snprintf(err, errlen, "%s", bad);
    return FEDC_ERR_INVALID;
  }
  return FEDC_OK; /* a robust rule's precondition over the buffer: coord_cfg.c */
}

static void log_path(const fc_coord *c, char *buf, size_t n) { snprintf(buf, n, "%s/%s", c->cfg.state_dir, LOG_NAME); }

static int fsync_fp(FILE *fp) { return fflush(fp) == 0 && fsync(fileno(fp)) == 0 ? 0 : -1; }

static struct coord_async_log *get_log(fc_coord *c) {
  if (!c->async_log) c->async_log = calloc(1, sizeof *c->async_log);
  return c->async_log;
}

/* (Re)start the log for a buffer on version `base`: truncated, header written. */
static int log_restart(fc_coord *c, struct coord_async_log *L, uint64_t base, uint64_t n, char *why, size_t whylen) {
  char path[600];
  log_path(c, path, sizeof path);
  if (L->fp) fclose(L->fp);
  L->fp = fopen(path, "wb");
  log_hdr h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, LOG_MAGIC, sizeof h.magic);
  h.base = base;
  h.n = n;
  if (!L->fp || fwrite(&h, sizeof h, 1, L->fp) != 1 || fsync_fp(L->fp) != 0) {
    snprintf(why, whylen, "async buffer log %s: %s", path, strerror(errno ? errno : EIO));
    if (L->fp) fclose(L->fp);
    L->fp = NULL;
    return FEDC_ERR_IO;
  }
  L->base = base;
  return FEDC_OK;
}

int coord_async_log_update(fc_coord *c, const char *client, uint64_t round, uint64_t examples, double loss,
                           uint64_t staleness, double weight, uint64_t bytes, const float *values, size_t n,
                           char *why, size_t whylen) {
  struct coord_async_log *L = get_log(c);
  if (!L) {
    snprintf(why, whylen, "out of memory");
    return FEDC_ERR_NOMEM;
  }
  if (L->fenced) {
    snprintf(why, whylen, "this replica no longer leads: the update is not kept here");
    return FEDC_ERR_STOPPED;
  }
  fc_engine_status es;
  fc_engine_get_status(c->engine, 0, &es);
  int rc;
  if ((!L->fp || L->base != es.version) && (rc = log_restart(c, L, es.version, n, why, whylen)) != FEDC_OK) return rc;
  rec_hdr h;
  memset(&h, 0, sizeof h);
  snprintf(h.client, sizeof h.client, "%s", client);
  h.round = round;
  h.examples = examples;
  h.staleness = staleness;
  h.bytes = bytes;
  h.loss = loss;
  h.weight = weight;
  fc_sha256_ctx sc;
  uint8_t sha[FC_SHA256_LEN];
  fc_sha256_init(&sc);
  fc_sha256_update(&sc, &h, sizeof h);
  fc_sha256_update(&sc, values, n * sizeof(float));
  fc_sha256_final(&sc, sha);
  long at = ftell(L->fp);
  if (fwrite(&h, sizeof h, 1, L->fp) != 1 || fwrite(values, sizeof(float), n, L->fp) != n ||
      fwrite(sha, 1, sizeof sha, L->fp) != sizeof sha || fsync_fp(L->fp) != 0) {
    snprintf(why, whylen, "async buffer log: cannot write the update (%s): refused so that a restart cannot lose it",
             strerror(errno ? errno : EIO));
    /* Cut the partial record, so the next append does not follow garbage. */
    if (at >= 0 && ftruncate(fileno(L->fp), at) == 0) fseek(L->fp, at, SEEK_SET);
    else {
      fclose(L->fp);
      L->fp = NULL;
    }
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

/* Replay one record into the aggregator and the engine: the engine's
 * refusal is asked first (nothing changes), then the aggregator commits,
 * and only a committed update is counted, so the two never disagree. */
static int replay_one(fc_coord *c, const rec_hdr *h, const float *values, size_t n) {
  int rc = fc_engine_async_replay_check(c->engine, h->client);
  if (rc != FEDC_OK) return rc;
  fc_agg_update *u = NULL;
  if ((rc = c->agg->ops->update_begin(c->agg, 0, &u)) != FEDC_OK) return rc;
  fc_agg_check chk;
  if ((rc = c->agg->ops->update_chunk(c->agg, u, 0, values, n * sizeof(float))) != FEDC_OK ||
      (rc = c->agg->ops->update_check(c->agg, u, &chk)) != FEDC_OK) {
    c->agg->ops->update_abort(c->agg, u);
    return rc;
  }
  if ((rc = c->agg->ops->update_commit(c->agg, u, h->weight)) != FEDC_OK) return rc; /* the slot went back */
  return fc_engine_async_replay(c->engine, h->client, h->examples, h->loss, h->staleness, h->bytes);
}

void coord_async_started_locked(fc_coord *c) {
  struct coord_async_log *L = get_log(c);
  if (!L || L->replayed || L->fenced) return;
  L->replayed = 1;
  if (L->fp) { /* a failed publish's log, replayed below from its start */
    fclose(L->fp);
    L->fp = NULL;
  }
  char path[600];
  log_path(c, path, sizeof path);
  FILE *fp = fopen(path, "r+b");
  if (!fp) return; /* none: nothing was pending */
  fc_engine_status es;
  fc_engine_get_status(c->engine, 0, &es);
  size_t n = fc_model_numel(&c->model->spec);
  log_hdr lh;
  uint32_t replayed = 0, skipped = 0;
  long good = 0;
  float *values = malloc(n ? n * sizeof(float) : 1);
  if (!values || fread(&lh, sizeof lh, 1, fp) != 1 || memcmp(lh.magic, LOG_MAGIC, sizeof lh.magic) != 0 ||
      lh.n != n || lh.base != es.version) {
    FC_INFO(MOD, "async buffer log %s is not for version %llu: dropped (its updates were published, or never "
                 "accepted)", path, (unsigned long long)es.version);
    fclose(fp);
    free(values);
    unlink(path);
    return;
  }
  good = ftell(fp);
  for (;;) {
    rec_hdr h;
    uint8_t sha[FC_SHA256_LEN], want[FC_SHA256_LEN];
    if (fread(&h, sizeof h, 1, fp) != 1 || fread(values, sizeof(float), n, fp) != n ||
        fread(sha, 1, sizeof sha, fp) != sizeof sha)
      break;
    h.client[sizeof h.client - 1] = '\0';
    fc_sha256_ctx sc;
    fc_sha256_init(&sc);
    fc_sha256_update(&sc, &h, sizeof h);
    fc_sha256_update(&sc, values, n * sizeof(float));
    fc_sha256_final(&sc, want);
    if (memcmp(sha, want, sizeof sha) != 0) break;
    /* A whole record that cannot count (a second one of a client, which
     * the log should never hold) is skipped, not a stop: cutting the log
     * here would lose every accepted update after it. */
    int rc = replay_one(c, &h, values, n);
    if (rc != FEDC_OK) {
      FC_WARN(MOD, "async buffer log: update of %s skipped (%s)", h.client, fedc_strerror(rc));
      skipped++;
    } else {
      replayed++;
    }
    good = ftell(fp);
  }
  free(values);
  /* Anything after the last good record is a torn write: its client never heard OK. */
  if (good > 0 && ftruncate(fileno(fp), good) == 0 && fseek(fp, good, SEEK_SET) == 0) {
    L->fp = fp;
    L->base = es.version;
  } else {
    fclose(fp);
  }
  FC_INFO(MOD, "round %llu: %u updates of the buffer open before the restart replayed from %s (%u skipped)",
          (unsigned long long)es.round, replayed, path, skipped);
  if (c->audit)
    fc_audit_append(c->audit, "buffer_replayed",
                    json_pack("{s:I,s:I,s:I,s:I}", "round", (json_int_t)es.round, "version", (json_int_t)es.version,
                              "updates", (json_int_t)replayed, "skipped", (json_int_t)skipped));
}

int coord_async_publish_failed(fc_coord *c, int rc) {
  struct coord_async_log *L = get_log(c);
  if (!c->cfg.engine.async || !L) return 0;
  int deposed = c->cfg.leader && (rc == FEDC_ERR_REJECTED || rc == FEDC_ERR_STOPPED);
  int transient = rc == FEDC_ERR_IO || rc == FEDC_ERR_TIMEOUT || rc == FEDC_ERR_UNAVAILABLE;
  if (!deposed && !transient) {
    /* The same updates would fail the same way (NaN/Inf aggregate, a
     * robust rule's refusal): the buffer is dropped, as a synchronous
     * round's updates are. */
    coord_async_buffer_done(c);
    return 0;
  }
  if (L->fp) {
    fclose(L->fp);
    L->fp = NULL;
  }
  char path[600];
  log_path(c, path, sizeof path);
  if (deposed) {
    /* In the shared state directory, the next leader replays it: not a
     * byte more from this replica, nor an unlink. */
    L->fenced = 1;
    FC_WARN(MOD, "async buffer log %s left for the next leader (this replica was deposed)", path);
    return 0;
  }
  /* The accepted updates stay: the next buffer (same version) replays the
   * log, is full at once and publishes again. */
  L->replayed = 0;
  FC_WARN(MOD, "async buffer log %s kept: the buffer's updates are replayed into the next buffer and published "
               "again", path);
  return 1;
}

void coord_async_buffer_done(fc_coord *c) {
  struct coord_async_log *L = c->async_log;
  if (!c->cfg.engine.async || (L && L->fenced)) return;
  if (L && L->fp) {
    fclose(L->fp);
    L->fp = NULL;
  }
  char path[600];
  log_path(c, path, sizeof path);
  if (unlink(path) != 0 && errno != ENOENT) FC_WARN(MOD, "async buffer log %s: %s", path, strerror(errno));
}

void coord_async_free(fc_coord *c) {
  if (!c->async_log) return;
  if (c->async_log->fp) fclose(c->async_log->fp);
  free(c->async_log);
  c->async_log = NULL;
}

/* ---- what status and rounds show (coord_admin.c) ---- */

void coord_async_status_pb(fc_coord *c, Fedc__V1__AsyncStatus *as, uint32_t hist[FC_STALE_BUCKETS], char *fn,
                           size_t fnlen) {
  fedc__v1__async_status__init(as);
  fc_async_info ai;
  pthread_mutex_lock(&c->mu);
  fc_engine_async_info(c->engine, &ai);
  pthread_mutex_unlock(&c->mu);
  memcpy(hist, ai.hist, FC_STALE_BUCKETS * sizeof *hist);
  as->concurrency = c->cfg.engine.async_concurrency;
  as->training = ai.training;
  as->buffer_size = c->cfg.engine.async_buffer;
  as->buffered = ai.buffered;
  as->uploading = ai.uploading;
  as->n_staleness_histogram = FC_STALE_BUCKETS;
  as->staleness_histogram = hist;
  as->stale_refused = ai.stale_refused;
  as->expired = ai.expired;
  fc_staleness_text(&c->cfg.engine.staleness, fn, fnlen);
  as->staleness = fn;
  as->max_staleness = c->cfg.engine.max_staleness;
}

int coord_async_round_pb(const fc_round_stats *s, Fedc__V1__RoundAsync *ra) {
  if (!s->async) return 0;
  fedc__v1__round_async__init(ra);
  ra->concurrency = s->concurrency;
  ra->training = s->training;
  ra->n_staleness_histogram = FC_STALE_BUCKETS;
  ra->staleness_histogram = (uint32_t *)s->stale_hist;
  return 1;
}
