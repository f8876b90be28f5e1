/*
 * agg_slots.c - staging slots for the aggregators (agg_slots.h).
 */
#include "coordinator/agg_slots.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "common/clock.h"
#include "fedc/error.h"

int fc_agg_slots_for_budget(uint64_t budget_bytes, uint64_t slot_bytes) {
  uint64_t n = slot_bytes ? budget_bytes / slot_bytes : FC_AGG_SLOTS_MAX;
  return n < 1 ? 1 : n > FC_AGG_SLOTS_MAX ? FC_AGG_SLOTS_MAX : (int)n;
}

int fc_agg_slots_init(fc_agg_slots *s, int nslots, size_t bytes) {
  pthread_mutex_init(&s->mu, NULL);
  pthread_cond_init(&s->cv, NULL);
  s->nslots = nslots;
  s->bytes = bytes;
  s->closing = 0;
  s->slots = calloc((size_t)nslots, sizeof *s->slots);
  return s->slots ? FEDC_OK : FEDC_ERR_NOMEM;
}

int fc_agg_slots_acquire(fc_agg_slots *s, int timeout_ms, fc_agg_update **out) {
  struct timespec until;
  fc_deadline_after_ms(&until, timeout_ms > 0 ? (uint64_t)timeout_ms : 0);
  int rc = FEDC_ERR_TIMEOUT;
  pthread_mutex_lock(&s->mu);
  while (rc == FEDC_ERR_TIMEOUT) {
    if (s->closing) {
      rc = FEDC_ERR_STOPPED;
      break;
    }
    for (int i = 0; i < s->nslots && rc == FEDC_ERR_TIMEOUT; i++) {
      fc_agg_update *u = &s->slots[i];
      if (u->busy) continue;
      if (!u->buf && !(u->buf = malloc(s->bytes))) {
        rc = FEDC_ERR_NOMEM;
        break;
      }
      u->busy = 1;
      u->next = 0;
      u->checked = 0;
      u->sumsq = 0;
      u->amax = 0;
      u->nonfinite = u->out_of_order = 0;
      u->bad_index = 0;
      *out = u;
      rc = FEDC_OK;
    }
    if (rc == FEDC_ERR_TIMEOUT && pthread_cond_timedwait(&s->cv, &s->mu, &until) == ETIMEDOUT) break;
  }
  pthread_mutex_unlock(&s->mu);
  return rc;
}

int fc_agg_slot_chunk(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len) {
  uint64_t size = (uint64_t)a->n * 4;
  if (offset > size || len > size - offset) return FEDC_ERR_TOO_LARGE;
  memcpy((uint8_t *)u->buf + offset, bytes, len);
  return FEDC_OK;
}

/* Copy n floats from src (any alignment) to dst and check them in the same
 * pass; index is dst's first float in the update. Squares sum in double per
 * block of 4096 (as fc_agg_check_f32), so the result does not depend on
 * where chunks were cut except for the order of additions.
 * Compiled three times, for AVX-512, AVX2 and the base ISA, and chosen by
 * the CPU at run time (FEDC_KERNEL_ISA=avx2|base caps the choice, as in
 * kernels/robust.c, so tests run every path): the double-precision squares
 * are the pass's arithmetic, and at SSE2's width they, not memory, set its
 * speed. clang 14 keeps the max reduction scalar (see fc_agg_check_f32) and
 * reports it where the loop is inlined, so the pragma spans the rest of the
 * file. */
#if defined(__clang__)
#pragma clang diagnostic push
#pragma clang diagnostic ignored "-Wpass-failed"
#endif
static inline __attribute__((always_inline)) void copy_check_body(float *dst, const uint8_t *src, size_t n,
                                                                   size_t index, fc_agg_update *u) {
  for (size_t base = 0; base < n; base += 4096) {
    size_t end = base + 4096 < n ? base + 4096 : n;
    double s = 0;
    float m = 0;
    /* No finite test per value: a NaN or an infinity makes the block's sum of
     * squares NaN or +Inf (squares are >= 0, so never Inf - Inf), and 4096
     * squares of finite floats stay below 5e80 in double. One reduction
     * fewer: 36 GB/s instead of 29 per core here. */
#pragma omp simd reduction(+ : s) reduction(max : m)
    for (size_t i = base; i < end; i++) {
      float v;
      memcpy(&v, src + 4 * i, sizeof v);
      dst[i] = v;
      s += (double)v * v;
      float av = fabsf(v);
      m = av > m ? av : m;
    }
    if (!isfinite(s) && !u->nonfinite) {
      for (size_t i = base; i < end; i++)
        if (!isfinite(dst[i])) {
          u->nonfinite = 1;
          u->bad_index = index + i;
          break;
        }
    }
    u->sumsq += s;
    u->amax = m > u->amax ? m : u->amax;
  }
}

#if defined(__x86_64__) && defined(__GNUC__)
#define HAVE_X86_PATHS 1
__attribute__((target("avx512f,avx512dq,avx512vl"))) static void copy_check_avx512(float *dst, const uint8_t *src,
                                                                                    size_t n, size_t index,
                                                                                    fc_agg_update *u) {
  copy_check_body(dst, src, n, index, u);
}

__attribute__((target("avx2,fma"))) static void copy_check_avx2(float *dst, const uint8_t *src, size_t n, size_t index,
                                                                fc_agg_update *u) {
  copy_check_body(dst, src, n, index, u);
}
#endif

static void copy_check_base(float *dst, const uint8_t *src, size_t n, size_t index, fc_agg_update *u) {
  copy_check_body(dst, src, n, index, u);
}

/* Read at each call (once per chunk, against a pass over up to 4 MiB), so a
 * test can switch paths within one process. */
static void copy_check(float *dst, const uint8_t *src, size_t n, size_t index, fc_agg_update *u) {
#ifdef HAVE_X86_PATHS
  const char *cap = getenv("FEDC_KERNEL_ISA");
  int base = cap && strcmp(cap, "base") == 0, no512 = base || (cap && strcmp(cap, "avx2") == 0);
  if (!no512 && __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
      __builtin_cpu_supports("avx512vl")) {
    copy_check_avx512(dst, src, n, index, u);
    return;
  }
  if (!base && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) {
    copy_check_avx2(dst, src, n, index, u);
    return;
  }
#endif
  copy_check_base(dst, src, n, index, u);
}

int fc_agg_slot_chunk_f32(fc_agg *a, fc_agg_update *u, uint64_t offset, const void *bytes, size_t len) {
  uint64_t size = (uint64_t)a->n * 4;
  if (offset > size || len > size - offset) return FEDC_ERR_TOO_LARGE;
  uint8_t *slot = u->buf;
  const uint8_t *src = bytes;
  if (offset != u->next || u->out_of_order) { /* not in order: copy only, update_check passes over the slot */
    u->out_of_order = 1;
    memcpy(slot + offset, src, len);
    return FEDC_OK;
  }
  u->next = offset + len;
  /* Bytes finishing a float an earlier chunk began: copy, then check that one float. */
  size_t head = (size_t)((4 - offset % 4) % 4);
  if (head > len) head = len;
  memcpy(slot + offset, src, head);
  size_t done = (size_t)((offset + head) / 4); /* floats complete so far */
  if (done > u->checked) {
    float v;
    memcpy(&v, slot + 4 * u->checked, sizeof v);
    copy_check((float *)slot + u->checked, (const uint8_t *)&v, 1, u->checked, u);
    u->checked = done;
  }
  /* The whole floats of this chunk: copied and checked in one pass. */
  size_t whole = (len - head) / 4;
  copy_check((float *)slot + u->checked, src + head, whole, u->checked, u);
  u->checked += whole;
  /* A float this chunk only begins: copied now, checked by the next chunk. */
  size_t tail = len - head - 4 * whole;
  memcpy(slot + offset + head + 4 * whole, src + head + 4 * whole, tail);
  return FEDC_OK;
}

int fc_agg_slot_check_f32(fc_agg *a, fc_agg_update *u, fc_agg_check *out) {
  if (u->out_of_order || u->checked != a->n) return fc_agg_check_f32(u->buf, a->n, out);
  if (u->nonfinite) {
    out->bad_index = u->bad_index;
    return FEDC_ERR_NONFINITE;
  }
  out->l2 = sqrt(u->sumsq);
  out->amax = u->amax;
  return FEDC_OK;
}

void fc_agg_slots_release_locked(fc_agg_slots *s, fc_agg_update *u) {
  u->busy = 0;
  pthread_cond_signal(&s->cv);
}

void fc_agg_slots_release(fc_agg_slots *s, fc_agg_update *u) {
  pthread_mutex_lock(&s->mu);
  fc_agg_slots_release_locked(s, u);
  pthread_mutex_unlock(&s->mu);
}

void fc_agg_slots_close(fc_agg_slots *s) {
  pthread_mutex_lock(&s->mu);
  s->closing = 1;
  pthread_cond_broadcast(&s->cv);
  pthread_mutex_unlock(&s->mu);
}

void fc_agg_slots_destroy(fc_agg_slots *s) {
  for (int i = 0; s->slots && i < s->nslots; i++) free(s->slots[i].buf);
  free(s->slots);
  s->slots = NULL;
  pthread_mutex_destroy(&s->mu);
  pthread_cond_destroy(&s->cv);
}

/* One pass: NaN/Inf, the L2 norm and the largest magnitude. Squares sum in
 * double (4 lanes, vectorized via `omp simd`, no OpenMP runtime): a float
 * sum would overflow for values above 1.8e19 and report an infinite norm.
 * The pass is memory-bound either way. clang 14 cannot vectorise the float
 * max reduction without -ffinite-math-only and says so (-Wpass-failed); its
 * builds run the loop scalar (same result), GCC's vectorised. */
int fc_agg_check_f32(const float *x, size_t n, fc_agg_check *out) {
  double ss = 0;
  float amax = 0;
  for (size_t base = 0; base < n; base += 4096) {
    size_t end = base + 4096 < n ? base + 4096 : n;
    double s = 0;
    float m = 0;
    int bad = 0;
#pragma omp simd reduction(+ : s) reduction(| : bad) reduction(max : m)
    for (size_t i = base; i < end; i++) {
      float v = x[i];
      s += (double)v * v;
      float av = fabsf(v);
      m = av > m ? av : m;
      bad |= !(v - v == 0.0f); /* false only for NaN and +-Inf */
    }
    if (bad) {
      for (size_t i = base; i < end; i++)
        if (!isfinite(x[i])) {
          out->bad_index = i;
          return FEDC_ERR_NONFINITE;
        }
    }
    ss += s;
    amax = m > amax ? m : amax;
  }
  out->l2 = sqrt(ss);
  out->amax = amax;
  return FEDC_OK;
}
#if defined(__clang__)
#pragma clang diagnostic pop
#endif

