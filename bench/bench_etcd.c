/*
 * bench_etcd.c - what the leader's etcd traffic costs, measured against a
 * running etcd with fedc's own etcd client (coordinator/etcd.h), one
 * sequential caller as the leader is:
 *   fenced_write  a Txn "create_revision(P/leader) == ours ? put P/model" with
 *                 a pointer-sized value: the one raft write a round makes
 *                 (coord_ha_publish)
 *   fenced_check  the same compare with no ops (coord_ha_check, twice a
 *                 round; etcd serves a Txn without writes as a linearizable read)
 *   registry_read a Range over P/aggregators/ with A entries (the leader's
 *                 refresh, every 500 ms)
 * One JSON line per figure: calls per second, p50 and p99 latency in ms.
 * The keys live under /fedc-bench-etcd/<pid>/ and are deleted with the lease.
 *
 *   bench_etcd ENDPOINTS [calls=500] [aggregators=3]
 */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/clock.h"
#include "coordinator/etcd.h"
#include "fedc/error.h"
#include "transport/transport.h"

static uint64_t now_us(void) { return (uint64_t)(fc_mono_s() * 1e6); }

static int cmp_u64(const void *a, const void *b) {
  uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
  return x < y ? -1 : x > y;
}

static void report(const char *what, uint64_t *us, int n, uint64_t total_us) {
  qsort(us, (size_t)n, sizeof *us, cmp_u64);
  printf("{\"bench\":\"etcd\",\"op\":\"%s\",\"calls\":%d,\"per_second\":%.0f,\"p50_ms\":%.3f,\"p99_ms\":%.3f}\n", what,
         n, n / (total_us / 1e6), us[n / 2] / 1000.0, us[(n * 99) / 100] / 1000.0);
}

int main(int argc, char **argv) {
  if (argc < 2) {
    fprintf(stderr, "usage: bench_etcd ENDPOINTS [calls=500] [aggregators=3]\n");
    return 2;
  }
  int n = argc > 2 ? atoi(argv[2]) : 500, na = argc > 3 ? atoi(argv[3]) : 3, rc = 1;
  if (n < 1 || n > 1000000 || na < 0 || na > 256) {
    fprintf(stderr, "bench_etcd: calls 1..1000000, aggregators 0..256\n");
    return 2;
  }
  char err[512], prefix[128], lkey[160], mkey[160], akey[200], rkey[160];
  uint64_t *us = calloc((size_t)n, sizeof *us);
  fc_etcd *e = NULL;
  int64_t lease = 0, ttl = 0, rev = 0;
  fc_transport_init();
  fc_etcd_opts o;
  fc_etcd_opts_init(&o);
  o.endpoints = argv[1];
  snprintf(prefix, sizeof prefix, "/fedc-bench-etcd/%ld", (long)getpid());
  snprintf(lkey, sizeof lkey, "%s/leader", prefix);
  snprintf(mkey, sizeof mkey, "%s/model", prefix);
  snprintf(rkey, sizeof rkey, "%s/aggregators/", prefix);
  if (!us || fc_etcd_open(&o, &e, err, sizeof err) != FEDC_OK ||
      fc_etcd_lease_grant(e, 60, &lease, &ttl, err, sizeof err) != FEDC_OK ||
      fc_etcd_put(e, lkey, "bench", 5, lease, &rev, err, sizeof err) != FEDC_OK) {
    fprintf(stderr, "bench_etcd: %s\n", err);
    goto out;
  }
  for (int i = 0; i < na; i++) {
    char v[128];
    snprintf(akey, sizeof akey, "%sag%d", rkey, i);
    snprintf(v, sizeof v, "127.0.0.1:%d spiffe://bench/aggregator/ag%d", 7100 + i, i);
    if (fc_etcd_put(e, akey, v, strlen(v), lease, NULL, err, sizeof err) != FEDC_OK) {
      fprintf(stderr, "bench_etcd: %s\n", err);
      goto out;
    }
  }
  fc_etcd_cmp fence = {.key = lkey, .target = FC_ETCD_CMP_CREATE, .result = FC_ETCD_EQ, .num = rev};
  for (int mode = 0; mode < 3; mode++) {
    uint64_t t0 = now_us();
    for (int i = 0; i < n; i++) {
      char v[160];
      snprintf(v, sizeof v,
               "{\"version\":%d,\"sha256\":\"%064d\",\"round\":%d}", i + 1, i, i + 1);
      fc_etcd_op put = {.kind = FC_ETCD_PUT, .key = mkey, .value = v, .value_len = strlen(v)};
      fc_etcd_txn t = {&fence, 1, &put, NULL, mode == 0 ? 1 : 0, 0};
      fc_etcd_txn_result r;
      memset(&r, 0, sizeof r);
      uint64_t a = now_us();
      int k;
      if (mode < 2) {
        k = fc_etcd_txn_call(e, &t, &r, err, sizeof err);
        if (k == FEDC_OK && !r.succeeded) {
          k = FEDC_ERR_REJECTED;
          snprintf(err, sizeof err, "the fence did not hold");
        }
        fc_etcd_txn_result_clear(&r);
      } else {
        fc_etcd_entry ent[256];
        size_t got = 0;
        k = fc_etcd_get_prefix(e, rkey, ent, 256, &got, err, sizeof err);
        for (size_t j = 0; j < got; j++) fc_etcd_kv_clear(&ent[j].kv);
        if (k == FEDC_OK && got != (size_t)na) {
          k = FEDC_ERR_PROTOCOL;
          snprintf(err, sizeof err, "registry read %zu entries, not %d", got, na);
        }
      }
      if (k != FEDC_OK) {
        fprintf(stderr, "bench_etcd: call %d: %s\n", i, err);
        goto out;
      }
      us[i] = now_us() - a;
    }
    report(mode == 0 ? "fenced_write" : mode == 1 ? "fenced_check" : "registry_read", us, n, now_us() - t0);
  }
  rc = 0;
out:
  if (e && lease) fc_etcd_lease_revoke(e, lease, err, sizeof err);
  if (e) { /* the model key is not on the lease */
    fc_etcd_op del = {.kind = FC_ETCD_DEL, .key = mkey};
    fc_etcd_txn t = {NULL, 0, &del, NULL, 1, 0};
    fc_etcd_txn_result r;
    memset(&r, 0, sizeof r);
    fc_etcd_txn_call(e, &t, &r, err, sizeof err);
    fc_etcd_txn_result_clear(&r);
  }
  fc_etcd_close(e);
  fc_transport_shutdown();
  free(us);
  return rc;
}
