/*
 * bench_transport.c - tensor stream throughput over loopback mutual TLS.
 *
 * Starts the test service (tests/support/testsvc.h) in-process and moves 1,
 * 16 and 128 MiB through Sink (client-streaming upload: the server checks
 * every chunk and the SHA-256; from 4 MiB, as the coordinator's upload
 * handler, it copies the chunks into a kept staging buffer and hashes them
 * beside the transfer) and Source
 * (server-streaming download into a fresh buffer, verified by SHA-256 on the
 * client), in 1 MiB chunks. Each result is the best of REPS runs; client and
 * server share the machine's cores, as a coordinator and a simulation would.
 *
 * What is timed: the call from start to the verified end. Not timed: building
 * the payload and its SHA-256 (both sides have them before a real transfer),
 * and the first Source call per size (it builds the server's cached payload).
 * Downloads land in a buffer kept between calls, as the client runtime's.
 *
 * Baseline in the same run: a bare gRPC C-core probe (bench/grpc_bare.c: the
 * same certificates and mutual TLS, 1 MiB messages, nothing of fedc in the
 * path), each of its runs right after one of fedc's so both see the same
 * load. Also the CPU seconds of the whole process (client and server
 * threads) per transfer: on a machine shared with other jobs the wall time
 * moves by 2x between runs, the CPU cost much less.
 *
 * One JSON line per result on stdout:
 *   {"bench":"transport","dir":"upload"|"download","mib":N,"seconds":S,
 *    "mb_per_s":R,"bare_grpc_mb_per_s":B,"ratio_vs_bare":R/B,
 *    "cpu_seconds":C,"bare_grpc_cpu_seconds":D,"cpu_ratio_vs_bare":C/D,
 *    "memcpy_mb_per_s":M,"ratio":R/M}
 * MB = 10^6 bytes. memcpy_mb_per_s is a memcpy of the same size measured in
 * the same run, so ratio says how far the transport is from memory speed.
 * Progress goes to stderr. BENCH_ONLY=fedc|bare runs one side (profiling);
 * BENCH_FRESH_BUFFER=1 gives each download a new buffer, as before the fix
 * (docs/design.md, "Downloads receive into a kept buffer").
 */
#define _XOPEN_SOURCE 700 /* nftw */
#include <ftw.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/log.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "bench/grpc_bare.h"
#include "crypto/pki.h"
#include "tests/support/testsvc.h"
#include "transport/tensor_stream.h"

#define MIB (1u << 20)
#define REPS 3

static double best_memcpy(uint64_t bytes) {
  char *a = malloc(bytes), *b = malloc(bytes);
  double best = 1e9;
  if (!a || !b) goto out;
  memset(a, 1, bytes);
  memset(b, 2, bytes); /* touch every page before timing */
  for (int r = 0; r < REPS; r++) {
    double t0 = ts_now();
    memcpy(b, a, bytes);
    double t = ts_now() - t0;
    if (t < best) best = t;
    a[r] = b[bytes - 1 - r]; /* keep the copy observable */
  }
out:
  free(a);
  free(b);
  return best;
}

/* One upload; seconds or < 0 on failure. */
static double upload_once(fc_channel *ch, const float *payload, uint64_t bytes, const uint8_t *sha) {
  char detail[128], want[FC_SHA256_HEX_LEN];
  fc_status st;
  double t0 = ts_now();
  int rc = ts_sink_upload(ch, payload, bytes, sha, MIB, -1, detail, sizeof detail, &st);
  double t = ts_now() - t0;
  if (rc != FEDC_OK || strcmp(detail, fc_hex(sha, FC_SHA256_LEN, want)) != 0) {
    fprintf(stderr, "upload failed: %s (%s)\n", fedc_strerror(rc), rc ? st.detail : "hash differs");
    return -1;
  }
  return t;
}

/* One download into *buf (kept between downloads, as the client runtime
 * keeps its model buffer: a fresh one would time the page faults of first
 * touch, not the transport). */
static double download_once(fc_channel *ch, uint64_t bytes, uint8_t **buf, uint64_t *cap) {
  Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
  req.version = bytes;
  fc_status st;
  fc_ccall *call = NULL;
  uint64_t total = 0;
  fc_model_spec spec;
  if (getenv("BENCH_FRESH_BUFFER")) { /* as before the fix: a new buffer per download */
    free(*buf);
    *buf = NULL;
    *cap = 0;
  }
  double t0 = ts_now();
  int rc = fc_ccall_start(ch, TS_SOURCE, FC_RPC_SERVER_STREAM, &req.base, 120000, &call, &st);
  if (rc == FEDC_OK) rc = fc_tensor_stream_recv_into(call, 1ull << 30, NULL, &spec, buf, cap, &total, NULL, NULL, &st);
  double t = ts_now() - t0;
  fc_ccall_destroy(call);
  if (rc == FEDC_OK && total == bytes) {
    /* Spot-check the content (the stream's SHA-256 was already verified). */
    size_t last = bytes / 4 - 1;
    float v;
    memcpy(&v, *buf + last * 4, sizeof v);
    if (v != (float)last * 0.5f) rc = FEDC_ERR_HASH;
  }
  if (rc != FEDC_OK) {
    fprintf(stderr, "download failed: %s (%s)\n", fedc_strerror(rc), st.detail);
    return -1;
  }
  return t;
}

typedef struct xfer_best {
  double wall, cpu;           /* fedc: best wall seconds, least CPU seconds */
  double bare_wall, bare_cpu; /* the bare probe's */
} xfer_best;

static void report(const char *dir, unsigned mib, const xfer_best *b, double memcpy_s) {
  double bytes = (double)mib * MIB;
  double rate = bytes / b->wall / 1e6, mrate = bytes / memcpy_s / 1e6, brate = bytes / b->bare_wall / 1e6;
  printf("{\"bench\":\"transport\",\"dir\":\"%s\",\"mib\":%u,\"seconds\":%.6f,\"mb_per_s\":%.1f,"
         "\"bare_grpc_mb_per_s\":%.1f,\"ratio_vs_bare\":%.3f,\"cpu_seconds\":%.4f,\"bare_grpc_cpu_seconds\":%.4f,"
         "\"cpu_ratio_vs_bare\":%.3f,\"memcpy_mb_per_s\":%.1f,\"ratio\":%.4f}\n",
         dir, mib, b->wall, rate, brate, rate / brate, b->cpu, b->bare_cpu, b->cpu / b->bare_cpu, mrate, rate / mrate);
  fflush(stdout);
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
  (void)sb;
  (void)flag;
  (void)ftw;
  return remove(path);
}

/* Best of REPS of fedc and of the bare probe, alternated so both see the
 * same load; 0 and the two best times, or 1 on a failure. */
/* CPU seconds of the whole process (client and server threads alike). */
static double cpu_now(void) {
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  return (double)ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + (double)ru.ru_stime.tv_sec +
         ru.ru_stime.tv_usec * 1e-6;
}

static int measure(fc_channel *ch, bare_client *bc, int upload, unsigned mib, const float *payload,
                   const uint8_t *sha, uint8_t **buf, uint64_t *cap, void *dst, xfer_best *out) {
  uint64_t bytes = (uint64_t)mib * MIB;
  out->wall = out->cpu = out->bare_wall = out->bare_cpu = 1e9;
  /* BENCH_ONLY=fedc|bare runs one side (for a profiler); the other reports 1 s. */
  const char *only = getenv("BENCH_ONLY");
  int run_fedc = !only || strcmp(only, "bare") != 0, run_bare = !only || strcmp(only, "fedc") != 0;
  for (int r = 0; r < REPS; r++) {
    double c0 = cpu_now();
    double t = !run_fedc ? 1 : upload ? upload_once(ch, payload, bytes, sha) : download_once(ch, bytes, buf, cap);
    double c1 = cpu_now();
    double b = !run_bare ? 1 : upload ? bare_upload(bc, payload, bytes, MIB + 16) : bare_download(bc, dst, bytes, MIB + 16);
    double c2 = cpu_now();
    if (t < 0 || b < 0) {
      if (b < 0) fprintf(stderr, "bare gRPC %s failed\n", upload ? "upload" : "download");
      return 1;
    }
    fprintf(stderr, "%-8s %4u MiB run %d: fedc %.3f s (CPU %.3f s), bare gRPC %.3f s (CPU %.3f s)\n",
            upload ? "upload" : "download", mib, r + 1, t, c1 - c0, b, c2 - c1);
    if (t < out->wall) out->wall = t;
    if (b < out->bare_wall) out->bare_wall = b;
    if (c1 - c0 < out->cpu) out->cpu = c1 - c0;
    if (c2 - c1 < out->bare_cpu) out->bare_cpu = c2 - c1;
  }
  return 0;
}

int main(void) {
  static const unsigned sizes[] = {1, 16, 128};
  char root[] = "/tmp/fedc-bench-transport-XXXXXX";
  int status = 1;
  fc_server *s = NULL;
  fc_channel *ch = NULL;
  bare_server *bs = NULL;
  bare_client *bc = NULL;
  if (!mkdtemp(root)) {
    perror("mkdtemp");
    return 1;
  }
  fc_log_set_level(FC_LOG_WARN);
  if (ts_pki(root) != FEDC_OK) goto out;
  fc_transport_init();
  if (!(s = ts_start(root, 4))) goto out_grpc;
  if (!(ch = ts_channel(root, fc_server_port(s), "client", "alice"))) goto out_grpc;
  {
    char ca[600], crt[600], key[600], ccrt[600], ckey[600];
    snprintf(ca, sizeof ca, "%s/%s", root, FC_PKI_CA_CERT);
    snprintf(crt, sizeof crt, "%s/%s", root, FC_PKI_COORD_CERT);
    snprintf(key, sizeof key, "%s/%s", root, FC_PKI_COORD_KEY);
    ts_leaf(root, "client", "alice", ccrt, sizeof ccrt, ckey, sizeof ckey);
    if (!(bs = bare_server_start(ca, crt, key))) goto out_grpc;
    if (!(bc = bare_client_new(ca, ccrt, ckey, bare_server_port(bs)))) goto out_grpc;
  }

  status = 0;
  for (size_t i = 0; i < sizeof sizes / sizeof sizes[0] && status == 0; i++) {
    unsigned mib = sizes[i];
    uint64_t bytes = (uint64_t)mib * MIB;
    double mc = best_memcpy(bytes);
    float *payload = malloc(bytes);
    void *dst = malloc(bytes);
    uint8_t sha[FC_SHA256_LEN];
    xfer_best b;
    if (!payload || !dst) {
      free(payload);
      free(dst);
      status = 1;
      break;
    }
    ts_pattern(payload, bytes / 4);
    memset(dst, 0, bytes);
    fc_payload_sha256(payload, bytes, sha);
    uint8_t *buf = NULL;
    uint64_t cap = 0;
    /* warm-up: builds the Source's cached payload and the bare server's,
     * and touches the receive buffers */
    if (download_once(ch, bytes, &buf, &cap) < 0 || bare_download(bc, dst, bytes, MIB + 16) < 0) status = 1;
    if (!status && !(status = measure(ch, bc, 1, mib, payload, sha, &buf, &cap, dst, &b))) report("upload", mib, &b, mc);
    if (!status && !(status = measure(ch, bc, 0, mib, payload, sha, &buf, &cap, dst, &b)))
      report("download", mib, &b, mc);
    free(payload);
    free(dst);
    free(buf);
  }

out_grpc:
  bare_client_free(bc);
  bare_server_stop(bs);
  fc_channel_destroy(ch);
  ts_stop(s, 1000);
  fc_transport_shutdown();
out:
  nftw(root, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
  return status;
}
