/*
 * bench_secagg.c - secure aggregation costs, one JSON line per result, each
 * next to a baseline measured in the same run:
 *
 *   prg      keystream GB/s of AES-128-CTR and ChaCha20 (OpenSSL EVP) on
 *            64 KiB blocks: the ceiling of any mask expansion, and the
 *            measurement behind choosing AES-CTR as the mask PRG.
 *   mask     client masking of P parameters (P + 1 entries: the weight is
 *            masked too) with k pairwise masks + 1 self mask through
 *            fc_sa_mask_apply, for k = 16, 32, 99; baseline: the AES-CTR
 *            keystream of the same bytes. ratio = mask / keystream (goal <= 1.5).
 *   clients  the clients' CPU per stage of a round in the same harness, the
 *            complete graph against the coordinator's default one (k, t from
 *            fc_sa_params_default), a first round and a second one whose
 *            neighbours' certificates were verified in the first.
 *   unmask   a whole round in the in-process harness (real client and
 *            coordinator cores, real X25519/HKDF/GCM/Shamir/signatures) for
 *            n = 100 and 1,000 at 0%, 10%, 30% dropout after sharing keys
 *            (the dropped clients' pairwise masks must then be rebuilt and
 *            removed: the coordinator's worst case), k and t from
 *            fc_sa_params_find (5% corrupt, lying coordinator). Reports the
 *            coordinator's unmasking seconds (Shamir reconstruction + key
 *            agreement + mask removal on `threads` threads; goal: n = 1,000 at
 *            10% < 5 s), with the baseline "keystream_s": the same number of
 *            mask expansions at the measured keystream rate on the same
 *            threads; whether the sum was exact; and the bytes one client
 *            sent against the plaintext update's.
 *
 *   bench_secagg [params=1000000] [threads=2] [what=prg,mask,unmask|clients] [ns=100,1000] [drops=0,0.1,0.3]
 */
#include <math.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "common/fileutil.h"
#include "common/rng.h"
#include "crypto/cert_cache.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "secagg/params.h"
#include "secagg/secagg.h"
#include "tests/support/sa_harness.h"

#define BLOCK (64 * 1024)

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Seconds to produce `keys` keystreams of `bytes` each, 64 KiB at a time. */
static double keystream_s(const EVP_CIPHER *cipher, int keys, size_t bytes) {
  static uint8_t buf[BLOCK], zero[BLOCK];
  uint8_t key[32] = {1}, iv[16] = {0};
  double best = 1e9;
  for (int rep = 0; rep < 9; rep++) { /* best of 9, as the masking it is compared with */
    double t0 = now_s();
    for (int k = 0; k < keys; k++) {
      key[0] = (uint8_t)k;
      EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
      EVP_EncryptInit_ex(ctx, cipher, NULL, key, iv);
      for (size_t done = 0; done < bytes; done += BLOCK) {
        int len = (int)(bytes - done < BLOCK ? bytes - done : BLOCK), out = 0;
        EVP_EncryptUpdate(ctx, buf, &out, zero, len);
      }
      EVP_CIPHER_CTX_free(ctx);
    }
    double s = now_s() - t0;
    if (s < best) best = s;
  }
  return best;
}

static double g_aes_gbps; /* measured AES-CTR keystream rate, one thread */

static void bench_prg(size_t params) {
  size_t bytes = (params + 1) * 4;
  int keys = 64; /* ~256 MB: long enough for the clock to settle */
  double aes = keystream_s(EVP_aes_128_ctr(), keys, bytes), cha = keystream_s(EVP_chacha20(), keys, bytes);
  g_aes_gbps = (double)keys * bytes / aes / 1e9;
  printf("{\"bench\":\"secagg_prg\",\"cipher\":\"aes-128-ctr\",\"gbps\":%.2f}\n", g_aes_gbps);
  printf("{\"bench\":\"secagg_prg\",\"cipher\":\"chacha20\",\"gbps\":%.2f,\"ratio_to_aes\":%.2f}\n",
         (double)keys * bytes / cha / 1e9, aes / cha);
  fflush(stdout);
}

static void bench_mask(size_t params) {
  size_t entries = params + 1, bytes = entries * 4;
  uint32_t *vec = malloc(bytes);
  fc_rng r;
  fc_rng_seed(&r, 7);
  for (size_t i = 0; i < entries; i++) vec[i] = (uint32_t)fc_rng_u64(&r);
  const int ks[] = {16, 32, 99};
  for (size_t i = 0; i < sizeof ks / sizeof ks[0]; i++) {
    int k = ks[i], nt = k + 1;
    fc_sa_mask_term *terms = calloc((size_t)nt, sizeof *terms);
    for (int j = 0; j < nt; j++) {
      for (int b = 0; b < FC_SA_KEY_LEN; b++) terms[j].key[b] = (uint8_t)fc_rng_u64(&r);
      terms[j].sign = j % 2 ? -1 : 1;
    }
    double best = 1e9;
    for (int rep = 0; rep < 9; rep++) {
      double t0 = now_s();
      fc_sa_mask_apply(&fc_prg_aes_ctr, vec, 0, entries, terms, (size_t)nt, NULL);
      double s = now_s() - t0;
      if (s < best) best = s;
    }
    double ks_s = keystream_s(EVP_aes_128_ctr(), nt, bytes);
    printf("{\"bench\":\"secagg_mask\",\"params\":%zu,\"k\":%d,\"expansions\":%d,\"seconds\":%.4f,"
           "\"keystream_seconds\":%.4f,\"ratio\":%.3f,\"gbps\":%.2f}\n",
           params, k, nt, best, ks_s, best / ks_s, (double)nt * bytes / best / 1e9);
    fflush(stdout);
    free(terms);
  }
  free(vec);
}

static void bench_unmask(size_t params, int threads, const char *ns, const char *droplist) {
  char pki[] = "/tmp/fedc-bench-secagg-pki";
  mkdir(pki, 0700);
  double drops[8];
  size_t ndrops = 0;
  for (const char *p = droplist; p && *p && ndrops < 8; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    drops[ndrops++] = atof(p);
  char list[256];
  snprintf(list, sizeof list, "%s", ns);
  for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
    uint32_t n = (uint32_t)atoi(tok);
    fprintf(stderr, "bench_secagg: certificates for %u clients...\n", n);
    if (sa_harness_pki(pki, n) != FEDC_OK) return;
    for (size_t d = 0; d < ndrops; d++) {
      fc_sa_choice ch;
      char why[300];
      if (fc_sa_params_find(n, 0.05, drops[d], FC_SA_THREAT_MALICIOUS, &ch, why, sizeof why) != FEDC_OK) {
        fprintf(stderr, "bench_secagg: n=%u: %s\n", n, why);
        continue;
      }
      sa_harness_cfg c;
      memset(&c, 0, sizeof c);
      c.n = n;
      c.k = ch.k;
      c.t = ch.t;
      c.dim = params;
      c.max_weight = 1000;
      c.clip = 1.0f;
      c.seed = 1000 + n + (uint64_t)d;
      c.drop[FC_SA_MASKED] = drops[d];
      c.pki_dir = pki;
      c.threads = threads;
      fprintf(stderr, "bench_secagg: n=%u k=%u t=%u dropout %.0f%%...\n", n, ch.k, ch.t, drops[d] * 100);
      double t0 = now_s();
      sa_harness_result res;
      if (sa_harness_run(&c, &res) != FEDC_OK || !res.completed) {
        fprintf(stderr, "bench_secagg: n=%u: round failed: %s\n", n, res.why);
        continue;
      }
      double bytes = (double)(params + 1) * 4;
      double ks = (double)res.unmask_terms * bytes / (g_aes_gbps * 1e9) / threads;
      printf("{\"bench\":\"secagg_unmask\",\"n\":%u,\"k\":%u,\"t\":%u,\"params\":%zu,\"dropout\":%.2f,"
             "\"survivors\":%u,\"threads\":%d,\"unmask_seconds\":%.3f,\"mask_expansions\":%zu,"
             "\"keystream_seconds\":%.3f,\"ratio\":%.2f,\"exact\":%s,\"client_mask_seconds\":%.4f,"
             "\"bytes_up_per_client\":%llu,\"bytes_down_per_client\":%llu,\"plaintext_bytes\":%.0f,"
             "\"bytes_up_ratio\":%.4f,\"harness_seconds\":%.1f}\n",
             n, ch.k, ch.t, params, drops[d], res.remaining[FC_SA_MASKED - 1], threads, res.unmask_s,
             res.unmask_terms, ks, res.unmask_s / ks, res.exact ? "true" : "false", res.client_mask_s,
             (unsigned long long)res.bytes_up_per_client, (unsigned long long)res.bytes_down_per_client,
             (double)params * 4,
             (double)res.bytes_up_per_client / ((double)params * 4), now_s() - t0);
      fflush(stdout);
    }
  }
}

/* The clients' side of a round in the in-process harness: CPU seconds all n
 * clients spend in the core per stage (certificate and signature checks, key
 * agreements, share encryption, masking), complete graph against the
 * coordinator's default graph for n (fc_sa_params_default, min_updates n), at
 * `params` parameters. Two rounds per graph with one verified-certificate
 * cache for everyone, as the runtimes keep it: round 1 verifies each
 * certificate, round 2 finds them all. */
static void bench_clients(size_t params, int threads, const char *ns) {
  char pki[] = "/tmp/fedc-bench-secagg-pki";
  mkdir(pki, 0700);
  char list[256];
  snprintf(list, sizeof list, "%s", ns);
  for (char *tok = strtok(list, ","); tok; tok = strtok(NULL, ",")) {
    uint32_t n = (uint32_t)atoi(tok);
    if (n < FC_SA_MIN_COHORT || sa_harness_pki(pki, n) != FEDC_OK) return;
    fc_sa_choice ch;
    fc_sa_params_default(n, FC_SA_DEFAULT_CORRUPT, FC_SA_DEFAULT_DROPOUT, n, &ch);
    uint32_t ks[2] = {n - 1, ch.k}, ts[2] = {fc_sa_min_threshold(n - 1, 0), ch.t};
    char capath[300], *ca = NULL;
    size_t calen = 0;
    snprintf(capath, sizeof capath, "%s/ca.crt", pki);
    if (fc_read_file(capath, 1 << 20, &ca, &calen) != FEDC_OK) return;
    for (int g = 0; g < (ch.complete ? 1 : 2); g++) {
      fc_cert_cache *cache = NULL;
      char why[300];
      if (fc_cert_cache_create(ca, calen, 2 * n, &cache, why, sizeof why) != FEDC_OK) break;
      for (uint64_t round = 1; round <= 2; round++) {
        sa_harness_cfg c;
        memset(&c, 0, sizeof c);
        c.n = n;
        c.k = ks[g];
        c.t = ts[g];
        c.dim = params;
        c.max_weight = 1000;
        c.clip = 1.0f;
        c.round = round;
        c.seed = 77 + n + round;
        c.pki_dir = pki;
        c.threads = threads;
        c.cert_cache = cache;
        c.premask = 1; /* the runtime's order */
        sa_harness_result res;
        uint64_t v0 = fc_cert_cache_verifications(cache);
        double t0 = now_s();
        if (sa_harness_run(&c, &res) != FEDC_OK || !res.completed) {
          fprintf(stderr, "bench_secagg: n=%u k=%u: round failed: %s\n", n, c.k, res.why);
          break;
        }
        const double *s = res.client_stage_s;
        printf("{\"bench\":\"secagg_clients\",\"n\":%u,\"k\":%u,\"t\":%u,\"params\":%zu,\"round\":%llu,"
               "\"certificates_verified\":%llu,\"per_client_cpu_s\":{\"advertise\":%.5f,\"shares\":%.5f,"
               "\"masked\":%.5f,\"consistency\":%.5f,\"unmask\":%.5f},\"all_clients_cpu_s\":%.3f,"
               "\"coordinator_unmask_s\":%.3f,\"harness_s\":%.2f}\n",
               n, c.k, c.t, params, (unsigned long long)round,
               (unsigned long long)(fc_cert_cache_verifications(cache) - v0), s[FC_SA_ADVERTISE] / n,
               s[FC_SA_SHARE_KEYS] / n, s[FC_SA_MASKED] / n, s[FC_SA_CONSISTENCY] / n, s[FC_SA_UNMASK] / n,
               s[FC_SA_ADVERTISE] + s[FC_SA_SHARE_KEYS] + s[FC_SA_MASKED] + s[FC_SA_CONSISTENCY] + s[FC_SA_UNMASK],
               res.unmask_s, now_s() - t0);
        fflush(stdout);
      }
      fc_cert_cache_destroy(cache);
    }
    free(ca);
  }
}

/* Is `word` one of the comma-separated items of list? */
static int has(const char *list, const char *word) {
  size_t n = strlen(word);
  for (const char *p = list; p && *p; p = strchr(p, ',') ? strchr(p, ',') + 1 : NULL)
    if (strncmp(p, word, n) == 0 && (p[n] == ',' || !p[n])) return 1;
  return 0;
}

int main(int argc, char **argv) {
  size_t params = argc > 1 ? (size_t)atol(argv[1]) : 1000000;
  int threads = argc > 2 ? atoi(argv[2]) : 2;
  const char *what = argc > 3 ? argv[3] : "prg,mask,unmask";
  const char *ns = argc > 4 ? argv[4] : "100,1000";
  const char *drops = argc > 5 ? argv[5] : "0,0.1,0.3";
  if (has(what, "prg") || has(what, "mask") || has(what, "unmask")) bench_prg(params);
  if (has(what, "mask")) bench_mask(params);
  if (has(what, "clients")) bench_clients(params, threads, ns);
  if (has(what, "unmask")) bench_unmask(params, threads, ns, drops);
  return 0;
}
