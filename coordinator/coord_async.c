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
 *   - a log that holds this version's records is never truncated (a
 *     hostile review's finding: a failed write whose cut also failed, or a
 *     replay that could not reopen the log, left it closed, and the next
 *     update restarted it from its header): it is marked broken with the
 *     size of its last good record, repaired (cut there) before the next
 *     append, and while that fails, or the log could not be read at start,
 *     every update is refused with the reason, so a restart can still
 *     replay what clients were told is accepted.
 *   - fencing (replicas on etcd sharing the state directory): each record
 *     carries its writer's fencing token (the leader key's create revision;
 *     0 for a single coordinator), a leader that opens the log for writing
 *     (a fresh log, or the one it replayed) first appends a FENCE record
 *     with its token, and records are appended with O_APPEND. A replica
 *     deposed while frozen inside a write (after every check) lands its
 *     record at the end, after its successor's fence and with an older
 *     token: replay skips it as stale (it was never counted by the leader
 *     that owns the log), where before it could have followed, or
 *     overwritten, the successor's records. Every write also asks the
 *     commit guard first (fileutil.h), as rounds.jsonl's appends do.
 *   - format: FCBUF002 (token and kind in each record); FCBUF001 logs (no
 *     tokens) are still read.
 *
 * Owns: the log file and its handle (c->async_log, under c->mu); FedBuff's
 * scaling of a buffer (staleness ",fedbuff").
 * May call: engine.h, aggregate.h (staging slots, FedAvg's folded weight),
 * audit.h, common/fileutil.h, common/blas.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include "common/blas.h"
#include "common/fileutil.h"
#include "common/log.h"
#include "coordinator/agg_slots.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/leader.h"
#include "coordinator/upload_check.h"
#include "crypto/sha256.h"
#include "fedc/error.h"

#define MOD "coordinator"
#define LOG_NAME "async_buffer.log"
static const char LOG_MAGIC[8] = {'F', 'C', 'B', 'U', 'F', '0', '0', '2'};
static const char LOG_MAGIC_V1[8] = {'F', 'C', 'B', 'U', 'F', '0', '0', '1'};

struct coord_async_log {
  FILE *fp;      /* opened for appending (O_APPEND) */
  uint64_t base; /* the version the logged buffer builds on */
  uint64_t fence; /* the highest FENCE token read back (a single coordinator writes under it) */
  int replayed;  /* the first buffer after start has looked at the log */
  int fenced;    /* deposed (etcd): the log is the next leader's, never touched again */
  int broken;    /* holds records of `base` but is not open for appending: repair before the next */
  long good;     /* broken: the size of its last good record (-1: not known, it could not be read) */
  uint64_t repair_at;   /* broken: when a repair was last tried (at most one a second) ... */
  char repair_why[300]; /* ... and why it failed */
};

typedef struct log_hdr {
  char magic[8];
  uint64_t base, n;
} log_hdr;

#define REC_UPDATE 0u /* n float32 values follow the header */
#define REC_FENCE 1u  /* nothing follows: from here on, records of an older token are stale */

typedef struct rec_hdr {
  char client[72];
  uint64_t round, examples, staleness, bytes;
  double loss, weight;
  /* FCBUF002 on (an FCBUF001 record ends here: REC_HDR_V1 bytes, token 0, an update) */
  uint64_t token; /* the writer's fencing token: etcd leader key's create revision, 0 = single coordinator */
  uint32_t kind;  /* REC_UPDATE or REC_FENCE */
  uint32_t pad;
} rec_hdr;
#define REC_HDR_V1 offsetof(rec_hdr, token)

int coord_async_cfg_check(const fc_coord_cfg *cfg, char *err, size_t errlen) {
  const fc_engine_cfg *e = &cfg->engine;
  if (coord_calib_cfg_check(cfg, err, errlen) != FEDC_OK) return FEDC_ERR_INVALID;
  if (!e->async) {
    if (e->async_slot_ms || e->staleness.fedbuff) {
      snprintf(err, errlen, "%s is for async mode (mode: async)",
               e->async_slot_ms ? "async_slot_ms" : "staleness ,fedbuff");
      return FEDC_ERR_INVALID;
    }
    return FEDC_OK;
  }
  const char *bad = NULL;
  if (e->secagg)
    bad = "async mode cannot run secure aggregation: a SecAgg instance needs a cohort fixed before its first "
          "message, a buffer is filled by whoever finishes first";
  else if (cfg->dp_noise_multiplier > 0)
    bad = "async mode cannot run differential privacy: the accountant's Poisson-subsampling analysis does not "
          "cover updates chosen by arrival order and staleness";
  else if (e->async_concurrency < 1 || e->async_buffer < 1)
    bad = "async mode needs async_concurrency and async_buffer of at least 1";
  else if (e->async_slot_ms && e->async_slot_ms < 100)
    bad = "async_slot_ms under 100 ms would release every task almost at once: the concurrency cap would only pace "
          "how fast tasks are handed out (0 = tasks keep their slots)";
  else if (e->async_slot_ms && e->async_slot_ms >= e->round_ms)
    bad = "async_slot_ms must be shorter than round_ms (the task deadline): a task ends before it would be released";
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

/* Our fencing token: the leader key's create revision on etcd; a single
 * coordinator (the only writer, under the state directory's lock) writes
 * under the highest fence its log holds. */
static uint64_t our_token(const fc_coord *c, const struct coord_async_log *L) {
  if (!c->cfg.leader) return L->fence;
  fc_leader_info li;
  fc_leader_get_info(c->cfg.leader, &li);
  return li.rev > 0 ? (uint64_t)li.rev : 0;
}

/* The commit guard (replicas: we still lead by our lease clock), asked just
 * before every write to the shared log. */
static int may_write(char *why, size_t whylen) {
  if (fc_atomic_guard_allows()) return 1;
  snprintf(why, whylen, "this replica may no longer write the async buffer log (deposed)");
  return 0;
}

static FILE *open_append(const char *path, int flags) {
  int fd = open(path, O_WRONLY | O_APPEND | O_CLOEXEC | O_NOFOLLOW | flags, 0600);
  FILE *fp = fd >= 0 ? fdopen(fd, "ab") : NULL;
  if (fd >= 0 && !fp) close(fd);
  return fp;
}

/* iov[0..3) written whole; one writev unless the kernel writes it short
 * (a record past 2 GiB), then the rest after it. 0 or -1 with errno. */
static int write_record(int fd, struct iovec *iov) {
  int i = 0;
  while (i < 3) {
    if (iov[i].iov_len == 0) {
      i++;
      continue;
    }
    ssize_t w = writev(fd, iov + i, 3 - i);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) return -1;
    size_t left = (size_t)w;
    while (i < 3 && left >= iov[i].iov_len) left -= iov[i++].iov_len;
    if (left) {
      iov[i].iov_base = (uint8_t *)iov[i].iov_base + left;
      iov[i].iov_len -= left;
    }
  }
  return 0;
}

/* One record (header, then n values for an update, then the SHA-256 of both)
 * appended and fsync'd; on failure the partial record is cut off. */
static int append_record(struct coord_async_log *L, rec_hdr *h, const float *values, size_t n, char *why,
                         size_t whylen) {
  size_t nv = h->kind == REC_UPDATE ? n : 0;
  fc_sha256_ctx sc;
  uint8_t sha[FC_SHA256_LEN];
  fc_sha256_init(&sc);
  fc_sha256_update(&sc, h, sizeof *h);
  if (nv) fc_sha256_update(&sc, values, nv * sizeof(float));
  fc_sha256_final(&sc, sha);
  struct stat sb;
  off_t at = fflush(L->fp) == 0 && fstat(fileno(L->fp), &sb) == 0 ? sb.st_size : -1;
  if (!may_write(why, whylen)) return FEDC_ERR_STOPPED;
  /* One writev, not stdio's several writes (its buffer, then the values
   * past it, then the rest): with O_APPEND the whole record lands at the
   * end in one step, so a deposed replica's late record cannot be split
   * around its successor's fence and records (which left bytes the replay
   * stops at, cutting every record after them). */
  struct iovec iov[3] = {{h, sizeof *h}, {(void *)values, nv * sizeof(float)}, {sha, sizeof sha}};
  errno = 0;
  if (write_record(fileno(L->fp), iov) != 0 || fsync(fileno(L->fp)) != 0) {
    snprintf(why, whylen, "async buffer log: cannot write %s (%s)", h->kind == REC_UPDATE ? "the update" : "our fence",
             strerror(errno ? errno : EIO));
    /* Cut the partial record, so the next append does not follow garbage. */
    if (at < 0 || ftruncate(fileno(L->fp), at) != 0) {
      fclose(L->fp);
      L->fp = NULL;
      L->broken = 1;
      L->good = at < 0 ? -1 : (long)at;
    }
    return FEDC_ERR_IO;
  }
  return FEDC_OK;
}

/* A replica's first act on a log it writes to: its fence, so that a frozen
 * predecessor's late record is stale on replay. */
static int append_fence(fc_coord *c, struct coord_async_log *L, char *why, size_t whylen) {
  if (!c->cfg.leader) return FEDC_OK;
  rec_hdr h;
  memset(&h, 0, sizeof h);
  h.kind = REC_FENCE;
  h.token = our_token(c, L);
  int rc = append_record(L, &h, NULL, 0, why, whylen);
  if (rc == FEDC_OK && h.token > L->fence) L->fence = h.token;
  return rc;
}

/* (Re)start the log for a buffer on version `base`: truncated, header written, our fence. */
static int log_restart(fc_coord *c, struct coord_async_log *L, uint64_t base, uint64_t n, char *why, size_t whylen) {
  char path[600];
  log_path(c, path, sizeof path);
  if (L->fp) fclose(L->fp);
  L->fp = NULL;
  if (!may_write(why, whylen)) return FEDC_ERR_STOPPED;
  L->fp = open_append(path, O_CREAT | O_TRUNC);
  log_hdr h;
  memset(&h, 0, sizeof h);
  memcpy(h.magic, LOG_MAGIC, sizeof h.magic);
  h.base = base;
  h.n = n;
  /* The directory too: a log created (not only written) must survive a
   * power loss, or a restart would not find what clients were told is
   * accepted (a hostile review's point). */
  if (!L->fp || fwrite(&h, sizeof h, 1, L->fp) != 1 || fsync_fp(L->fp) != 0 || fc_fsync_parent(path) != 0) {
    snprintf(why, whylen, "async buffer log %s: %s", path, strerror(errno ? errno : EIO));
    if (L->fp) fclose(L->fp);
    L->fp = NULL;
    return FEDC_ERR_IO;
  }
  L->base = base;
  L->fence = 0;
  L->broken = 0;
  return append_fence(c, L, why, whylen);
}

static int log_repair(fc_coord *c, struct coord_async_log *L, char *why, size_t whylen);

int coord_async_log_ready(fc_coord *c, char *why, size_t whylen) {
  struct coord_async_log *L = c->async_log;
  if (!c->cfg.engine.async || !L || !L->broken || L->fenced) return FEDC_OK;
  fc_engine_status es;
  fc_engine_get_status(c->engine, 0, &es);
  if (L->base != es.version) return FEDC_OK;
  /* At most one repair a second, whoever asks how often (under mu, on a
   * disk that may be failing): the others get its reason. */
  uint64_t now = fc_now_ms();
  if (L->repair_at && L->repair_why[0] && now >= L->repair_at && now - L->repair_at < 1000) {
    snprintf(why, whylen, "%s", L->repair_why);
    return FEDC_ERR_IO;
  }
  L->repair_at = now;
  int rc = log_repair(c, L, why, whylen);
  snprintf(L->repair_why, sizeof L->repair_why, "%s", rc != FEDC_OK ? why : "");
  return rc;
}

/* 1 if the log at path has a header for `version` and n values, and records after it. */
static int log_holds_version(const char *path, uint64_t version, uint64_t n) {
  FILE *fp = fopen(path, "rb");
  if (!fp) return 0;
  log_hdr h;
  struct stat sb;
  int holds = fread(&h, sizeof h, 1, fp) == 1 &&
              (!memcmp(h.magic, LOG_MAGIC, sizeof h.magic) || !memcmp(h.magic, LOG_MAGIC_V1, sizeof h.magic)) &&
              h.base == version && h.n == n && fstat(fileno(fp), &sb) == 0 && sb.st_size > (off_t)sizeof h;
  fclose(fp);
  return holds;
}

/* A broken log of the open buffer's version: cut back to its last good
 * record and reopened for appending, or FEDC_ERR_IO with the reason (the
 * update is refused; nothing of the log is lost). */
static int log_repair(fc_coord *c, struct coord_async_log *L, char *why, size_t whylen) {
  char path[600];
  log_path(c, path, sizeof path);
  if (L->fp) { /* not expected (a broken log is closed), but never two handles */
    fclose(L->fp);
    L->fp = NULL;
  }
  if (L->good < 0) {
    snprintf(why, whylen, "async buffer log %s could not be read or cut: updates are refused so that it is not "
                          "overwritten; fix the file and restart the coordinator, which replays it", path);
    return FEDC_ERR_IO;
  }
  if (!may_write(why, whylen)) return FEDC_ERR_STOPPED;
  FILE *fp = open_append(path, 0);
  struct stat sb;
  if (fp && fstat(fileno(fp), &sb) == 0 && sb.st_size < (off_t)L->good) { /* shorter than its good records: lost */
    snprintf(why, whylen, "async buffer log %s is shorter (%lld bytes) than its last good record (%ld): updates "
                          "are refused; restart the coordinator to replay what is left", path,
             (long long)sb.st_size, L->good);
    fclose(fp);
    return FEDC_ERR_IO;
  }
  if (!fp || ftruncate(fileno(fp), (off_t)L->good) != 0) {
    snprintf(why, whylen, "async buffer log %s: cannot cut it back to its last good record (%s): updates are "
                          "refused so that it is not overwritten", path, strerror(errno ? errno : EIO));
    if (fp) fclose(fp);
    return FEDC_ERR_IO;
  }
  L->fp = fp;
  L->broken = 0;
  FC_WARN(MOD, "async buffer log %s repaired: cut back to its last good record at %ld bytes", path, L->good);
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
  if (L->broken && L->base == es.version && (rc = log_repair(c, L, why, whylen)) != FEDC_OK) return rc;
  char path[600];
  log_path(c, path, sizeof path);
  if (!L->fp && log_holds_version(path, es.version, n)) { /* not ours to restart: its records are this buffer's */
    L->broken = 1;
    L->good = -1;
    L->base = es.version;
    snprintf(why, whylen, "async buffer log %s holds records of this buffer but is not open: updates are refused "
                          "so that it is not overwritten; restart the coordinator to replay it", path);
    FC_ERROR(MOD, "%s", why);
    return FEDC_ERR_IO;
  }
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
  h.token = our_token(c, L);
  h.kind = REC_UPDATE;
  rc = append_record(L, &h, values, n, why, whylen);
  if (rc == FEDC_ERR_IO) {
    size_t l = strlen(why);
    snprintf(why + l, whylen - l, ": refused so that a restart cannot lose it");
  }
  return rc;
}

/* Replay one record into the aggregator and the engine: the engine's
 * refusal is asked first (nothing changes), then the aggregator commits,
 * and only a committed update is counted, so the two never disagree.
 * *scaled counts the records scaled onto the clip's bound (below). */
static int replay_one(fc_coord *c, const rec_hdr *h, float *values, size_t n, uint32_t *scaled) {
  int rc = fc_engine_async_replay_check(c->engine, h->client);
  if (rc != FEDC_OK) return rc;
  /* A record logged before quantized uploads were bounded may hold a forged
   * update far past the clip (code 1 at the largest scale in every block).
   * Every update accepted since is within FC_QUANT_RADIUS_MAX x the clip
   * (plain ones within the clip): one past that is scaled onto it, as the
   * upload path (fc_upload_quant_clip) would scale it now. NaN/Inf are left
   * for update_check to refuse. */
  fc_agg_check bound = {fc_l2_norm(values, n), 0, 0};
  double before = isfinite(bound.l2) ? fc_upload_quant_clip(values, n, c->clip, INFINITY, &bound) : -1;
  fc_agg_update *u = NULL;
  if ((rc = c->agg->ops->update_begin(c->agg, 0, &u)) != FEDC_OK) return rc;
  fc_agg_check chk;
  if ((rc = c->agg->ops->update_chunk(c->agg, u, 0, values, n * sizeof(float))) != FEDC_OK ||
      (rc = c->agg->ops->update_check(c->agg, u, &chk)) != FEDC_OK) {
    c->agg->ops->update_abort(c->agg, u);
    return rc;
  }
  /* The weight as an upload's is bounded (upload_check.c): finite, not
   * negative, and weight x max|value| within the accumulator's range. */
  if (!(isfinite(h->weight) && h->weight >= 0 && chk.amax * h->weight <= FC_AGG_MAX_WEIGHTED_ABS)) {
    c->agg->ops->update_abort(c->agg, u);
    return FEDC_ERR_INVALID;
  }
  /* --async-calibrate: checked raw as live, calibrated before the fold, and
   * cached (at the publish) only if it counts. */
  coord_calib_calibrate_locked(c, h->client, (float *)u->buf);
  if ((rc = c->agg->ops->update_commit(c->agg, u, h->weight)) != FEDC_OK) return rc; /* the slot went back */
  rc = fc_engine_async_replay(c->engine, h->client, h->examples, h->loss, h->staleness, h->bytes);
  if (rc == FEDC_OK) coord_calib_stage_locked(c, h->client, h->examples, values);
  if (rc == FEDC_OK && before >= 0) {
    FC_WARN(MOD, "async buffer log: update of %s has L2 norm %.6g, past %.3g x the clip norm %.6g: scaled onto it",
            h->client, before, FC_QUANT_RADIUS_MAX, c->clip);
    (*scaled)++;
  }
  return rc;
}

/* Rewrite the FCBUF001 log at path (its good records end at its current
 * size) as FCBUF002 under token 0 with our fence after them, through a
 * temporary file renamed over it; L->fp is then the new log. */
static int log_convert_v1(fc_coord *c, struct coord_async_log *L, const char *path, uint64_t base, size_t n,
                          char *why, size_t whylen) {
  char tmp[640];
  snprintf(tmp, sizeof tmp, "%s.v2", path);
  FILE *src = fopen(path, "rb");
  float *values = malloc(n ? n * sizeof(float) : 1);
  int rc = src && values && fseek(src, (long)sizeof(log_hdr), SEEK_SET) == 0 ? FEDC_OK : FEDC_ERR_IO;
  if (rc == FEDC_OK) {
    /* log_restart writes to the temporary file: header and our fence first. */
    L->fp = open_append(tmp, O_CREAT | O_TRUNC);
    log_hdr h;
    memset(&h, 0, sizeof h);
    memcpy(h.magic, LOG_MAGIC, sizeof h.magic);
    h.base = base;
    h.n = n;
    if (!L->fp || fwrite(&h, sizeof h, 1, L->fp) != 1) rc = FEDC_ERR_IO;
  }
  rec_hdr r;
  uint8_t sha[FC_SHA256_LEN];
  while (rc == FEDC_OK) {
    memset(&r, 0, sizeof r);
    if (fread(&r, REC_HDR_V1, 1, src) != 1 || fread(values, sizeof(float), n, src) != n ||
        fread(sha, 1, sizeof sha, src) != sizeof sha)
      break; /* the replay checked every record up to the end */
    r.kind = REC_UPDATE;
    rc = append_record(L, &r, values, n, why, whylen);
  }
  if (rc == FEDC_OK) rc = append_fence(c, L, why, whylen);
  if (rc == FEDC_OK && (fsync_fp(L->fp) != 0 || !may_write(why, whylen) || rename(tmp, path) != 0)) rc = FEDC_ERR_IO;
  if (src) fclose(src);
  free(values);
  if (rc != FEDC_OK) {
    if (!why[0]) snprintf(why, whylen, "rewriting it in format 2: %s", strerror(errno ? errno : EIO));
    if (L->fp) fclose(L->fp);
    L->fp = NULL;
    unlink(tmp);
    return rc;
  }
  L->base = base;
  return FEDC_OK;
}

void coord_async_started_locked(fc_coord *c) {
  struct coord_async_log *L = get_log(c);
  if (!L || L->replayed || L->fenced) return;
  L->replayed = 1;
  L->broken = 0; /* judged again below, from the file as it is now */
  if (L->fp) { /* a failed publish's log, replayed below from its start */
    fclose(L->fp);
    L->fp = NULL;
  }
  char path[600];
  log_path(c, path, sizeof path);
  FILE *fp = fopen(path, "r+b");
  fc_engine_status es;
  fc_engine_get_status(c->engine, 0, &es);
  if (!fp) {
    if (errno == ENOENT) return; /* none: nothing was pending */
    FC_ERROR(MOD, "async buffer log %s cannot be opened (%s): its updates are not replayed, and new ones are refused "
                  "until a restart can read it", path, strerror(errno));
    L->broken = 1;
    L->good = -1;
    L->base = es.version;
    return;
  }
  size_t n = fc_model_numel(&c->model->spec);
  log_hdr lh;
  uint32_t replayed = 0, skipped = 0, stale = 0, scaled = 0;
  long good = 0;
  float *values = malloc(n ? n * sizeof(float) : 1);
  if (!values) { /* not a sign the log is stale: keep it for a restart with memory to spare */
    FC_ERROR(MOD, "async buffer log %s: out of memory to replay it; new updates are refused until a restart", path);
    fclose(fp);
    L->broken = 1;
    L->good = -1;
    L->base = es.version;
    return;
  }
  int ok = fread(&lh, sizeof lh, 1, fp) == 1;
  if (!ok && ferror(fp)) { /* a read error is not a torn or foreign log: keep it */
    FC_ERROR(MOD, "async buffer log %s cannot be read (%s): new updates are refused until a restart", path,
             strerror(errno ? errno : EIO));
    fclose(fp);
    free(values);
    L->broken = 1;
    L->good = -1;
    L->base = es.version;
    return;
  }
  int v1 = ok && memcmp(lh.magic, LOG_MAGIC_V1, sizeof lh.magic) == 0;
  size_t hdr_size = v1 ? REC_HDR_V1 : sizeof(rec_hdr);
  if (!ok || (!v1 && memcmp(lh.magic, LOG_MAGIC, sizeof lh.magic) != 0) || lh.n != n || lh.base != es.version) {
    FC_INFO(MOD, "async buffer log %s is not for version %llu: dropped (its updates were published, or never "
                 "accepted)", path, (unsigned long long)es.version);
    fclose(fp);
    free(values);
    unlink(path);
    return;
  }
  good = ftell(fp);
  L->fence = 0;
  for (;;) {
    rec_hdr h;
    uint8_t sha[FC_SHA256_LEN], want[FC_SHA256_LEN];
    memset(&h, 0, sizeof h);
    if (fread(&h, hdr_size, 1, fp) != 1 || h.kind > REC_FENCE) break;
    size_t nv = h.kind == REC_UPDATE ? n : 0;
    if ((nv && fread(values, sizeof(float), nv, fp) != nv) || fread(sha, 1, sizeof sha, fp) != sizeof sha) break;
    h.client[sizeof h.client - 1] = '\0';
    fc_sha256_ctx sc;
    fc_sha256_init(&sc);
    fc_sha256_update(&sc, &h, hdr_size);
    if (nv) fc_sha256_update(&sc, values, nv * sizeof(float));
    fc_sha256_final(&sc, want);
    if (memcmp(sha, want, sizeof sha) != 0) break;
    good = ftell(fp);
    if (h.kind == REC_FENCE) {
      if (h.token > L->fence) L->fence = h.token;
      continue;
    }
    /* Written under an older token after a newer leader's fence: a deposed
     * replica's late write, never counted by the leader that owned the log. */
    if (h.token < L->fence) {
      FC_WARN(MOD, "async buffer log: update of %s skipped: written by a deposed replica (fencing token %llu, the "
                   "log's fence is %llu)", h.client, (unsigned long long)h.token, (unsigned long long)L->fence);
      stale++;
      continue;
    }
    /* A whole record that cannot count (a second one of a client, which
     * the log should never hold) is skipped, not a stop: cutting the log
     * here would lose every accepted update after it. */
    int rc = replay_one(c, &h, values, n, &scaled);
    if (rc != FEDC_OK) {
      FC_WARN(MOD, "async buffer log: update of %s skipped (%s)", h.client, fedc_strerror(rc));
      skipped++;
    } else {
      replayed++;
    }
  }
  free(values);
  /* Anything after the last good record is a torn write: its client never
   * heard OK. An FCBUF001 log (no tokens) is rewritten in the new format
   * before anything is appended to it. */
  char why[256] = "";
  int read_error = ferror(fp); /* the records after it were not read, not torn: nothing is cut */
  if (read_error) snprintf(why, sizeof why, "a read error stopped the replay: the rest of the log is kept");
  int kept = !read_error && good > 0 && may_write(why, sizeof why) && ftruncate(fileno(fp), good) == 0;
  fclose(fp);
  if (kept && v1) {
    kept = log_convert_v1(c, L, path, es.version, n, why, sizeof why) == FEDC_OK;
  } else if (kept) {
    L->fp = open_append(path, 0);
    if (!L->fp) snprintf(why, sizeof why, "cannot reopen it for appending (%s)", strerror(errno ? errno : EIO));
    L->base = es.version;
    kept = L->fp && append_fence(c, L, why, sizeof why) == FEDC_OK;
  }
  if (!kept && (good > 0 || read_error) && !L->fp) { /* its records stand, not open: repaired before the next append */
    L->broken = 1;
    L->good = v1 || read_error ? -1 : good; /* a v1 log is only ever rewritten whole, never appended to */
    L->base = es.version;
  }
  if (!kept && why[0]) FC_WARN(MOD, "async buffer log %s: %s", path, why);
  FC_INFO(MOD, "round %llu: %u updates of the buffer open before the restart replayed from %s (%u skipped, %u stale)",
          (unsigned long long)es.round, replayed, path, skipped, stale);
  if (c->audit)
    fc_audit_append(c->audit, "buffer_replayed",
                    json_pack("{s:I,s:I,s:I,s:I,s:I,s:I}", "round", (json_int_t)es.round, "version",
                              (json_int_t)es.version, "updates", (json_int_t)replayed, "skipped", (json_int_t)skipped,
                              "stale", (json_int_t)stale, "scaled", (json_int_t)scaled));
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
  if (L && L->broken && L->good < 0) {
    /* Not all of it could be read at start: what was not read may hold
     * accepted updates. Kept aside for the operator, not removed. */
    char aside[640];
    snprintf(aside, sizeof aside, "%s.unread-v%llu", path, (unsigned long long)L->base);
    if (rename(path, aside) == 0)
      FC_ERROR(MOD, "async buffer log %s could not be read whole at start: kept as %s (its unread records were not "
                    "counted)", path, aside);
    L->broken = 0;
  }
  if (unlink(path) != 0 && errno != ENOENT) {
    FC_WARN(MOD, "async buffer log %s: %s", path, strerror(errno));
    /* Emptied instead, so the next buffer's log does not take it for one of its own. */
    int fd = open(path, O_WRONLY | O_TRUNC | O_CLOEXEC | O_NOFOLLOW);
    if (fd >= 0) close(fd);
  }
  if (L) L->broken = 0;
}

void coord_async_free(fc_coord *c) {
  if (!c->async_log) return;
  if (c->async_log->fp) fclose(c->async_log->fp);
  free(c->async_log);
  c->async_log = NULL;
}

/* ---- FedBuff's scaling (coord_publish.c) ---- */

/* Staleness ",fedbuff" (FedBuff, Nguyen et al. 2022, Algorithm 1, server
 * lines: the buffer sums s(tau) delta and the server divides by K): the
 * aggregator's result is sum w n delta / sum w n, so scaling it by the
 * buffer's sum w n (the weights the aggregator folded, replayed ones from
 * the log as they were folded) / sum n (the engine's example weights)
 * gives sum w n delta / sum n: a buffer of stale updates moves the model
 * less than a fresh one. FedAvg only (coord_cfg.c refuses a robust rule). */
void coord_async_fedbuff_scale(fc_coord *c, float *delta, size_t n) {
  fc_async_info ai;
  pthread_mutex_lock(&c->mu);
  fc_engine_async_info(c->engine, &ai);
  pthread_mutex_unlock(&c->mu);
  double w = fc_agg_fedavg_weight(c->agg), f = ai.examples && w > 0 ? w / (double)ai.examples : 1.0;
  fc_sscal((int)n, (float)f, delta, 1);
  FC_DEBUG(MOD, "buffer scaled by %.4f (FedBuff: sum w(s) n %.6g / sum n %llu)", f, w,
           (unsigned long long)ai.examples);
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
  as->released = ai.released;
  as->released_total = ai.released_total;
  as->slot_ms = c->cfg.engine.async_slot_ms;
  as->overdue = ai.overdue;
  as->overdue_total = ai.overdue_total;
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
  coord_calib_status_pb(c, as);
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
