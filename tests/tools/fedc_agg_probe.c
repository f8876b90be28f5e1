/*
 * fedc_agg_probe - a misbehaving aggregator for the integration tests: it
 * holds a role-aggregator certificate and speaks the leader's Aggregator
 * service (AggregatorRound, SubmitPartial) directly.
 *
 *   fedc_agg_probe --coordinator ADDR --pki DIR --name AGG --mode M
 *                  [--chunk BYTES] [--hold-ms MS]
 *
 * Modes (one JSON line per step: {"step", "code", "want", "ok", "detail"};
 * exit 1 if a step's status is not the one wanted):
 *   partial-trickle  polls AggregatorRound until a client is assigned to it,
 *                    then opens a SubmitPartial naming that client (a zero
 *                    sum, the model's shape) and sends a chunk every --hold-ms
 *                    (under the leader's idle cut-off, so only its rate rule
 *                    can stop it). While it is open, a second SubmitPartial
 *                    is refused RESOURCE_EXHAUSTED (one stream per
 *                    aggregator: step "second"); the trickle itself ends
 *                    DEADLINE_EXCEEDED (step "trickle").
 *   relay-bad        against a leader that needs each update (1.17: a robust
 *                    rule, an anomaly policy): once a client is assigned to
 *                    it, whole partials, each refused for its one fault: a
 *                    plain sum (FAILED_PRECONDITION, "sum"), two updates in one
 *                    relayed partial ("two"), no client signature ("unsigned"),
 *                    another client's key and certificate ("impostor"), the
 *                    client's signature over 1 example relayed as 1000
 *                    ("tampered"), signed against another model ("model"),
 *                    signed bytes other than those relayed
 *                    ("digest"), a signed NaN ("nan"), signed past the clip
 *                    ("clip"), a client not assigned to it ("unassigned"); then
 *                    the client's signed zero update is accepted ("ok") and the
 *                    same again refused ("replay"). Signatures are made with
 *                    the keys in --pki (a test PKI holds every client's).
 */
#include <math.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "crypto/update_sig.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"
#include "tests/support/probe_report.h"

static int g_failures;

static void report(const char *step, int want_code, const fc_status *st) {
  if (!probe_report(step, want_code, st)) g_failures++;
}

typedef struct partial {
  Fedc__V1__PartialMeta meta;
  Fedc__V1__PartialUpdate up, *ups[1];
  uint8_t sha_up[FC_SHA256_LEN], sha[FC_SHA256_LEN];
  fc_model_spec spec;
  float *sum;
  uint64_t bytes;
  fc_pb_header h;
} partial;

/* Start a SubmitPartial and send its first message (meta + header). */
static int open_partial(fc_channel *ch, partial *p, uint32_t chunk, fc_ccall **call, fc_status *st) {
  int rc = fc_ccall_start(ch, "/fedc.v1.Aggregator/SubmitPartial", FC_RPC_CLIENT_STREAM, NULL, 120000, call, st);
  if (rc != FEDC_OK) return rc;
  fc_pb_header_build(&p->h, &p->spec, p->bytes, p->sha, chunk);
  Fedc__V1__PartialMsg m = FEDC__V1__PARTIAL_MSG__INIT;
  m.meta = &p->meta;
  m.header = &p->h.h;
  return fc_ccall_send(*call, &m.base, st);
}

static int send_chunk(fc_ccall *call, const partial *p, uint64_t off, size_t len, fc_status *st) {
  Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
  c.offset = off;
  c.data.data = (uint8_t *)p->sum + off;
  c.data.len = len;
  Fedc__V1__PartialMsg m = FEDC__V1__PARTIAL_MSG__INIT;
  m.chunk = &c;
  return fc_ccall_send(call, &m.base, st);
}

static int finish(fc_ccall *call, fc_status *st) {
  ProtobufCMessage *resp = NULL;
  int rc = fc_ccall_close_and_recv(call, &fedc__v1__partial_response__descriptor, &resp, st);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  return rc;
}

/* The open round, once a client is assigned to us (NULL after 60 s). */
static Fedc__V1__AggRoundResponse *wait_round(fc_channel *ch) {
  Fedc__V1__AggRoundResponse *r = NULL;
  fc_status st;
  for (uint64_t until = fc_now_ms() + 60000; fc_now_ms() < until; usleep(100000)) {
    Fedc__V1__AggRoundRequest req = FEDC__V1__AGG_ROUND_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    memset(&st, 0, sizeof st);
    if (fc_call_unary(ch, "/fedc.v1.Aggregator/AggregatorRound", &req.base, &fedc__v1__agg_round_response__descriptor,
                      &m, 5000, &st) != FEDC_OK)
      continue;
    r = (Fedc__V1__AggRoundResponse *)m;
    if (r->open && r->n_clients > 0) break;
    protobuf_c_message_free_unpacked(m, NULL);
    r = NULL;
  }
  if (!r) {
    printf("{\"step\":\"round\",\"ok\":false,\"detail\":\"no client assigned in 60 s\"}\n");
    return NULL;
  }
  printf("{\"step\":\"round\",\"ok\":true,\"round\":%llu,\"client\":\"%s\",\"relay\":%s}\n",
         (unsigned long long)r->round, r->clients[0], r->relay ? "true" : "false");
  return r;
}

/* A zero partial of one update for r's first client, the model's shape
 * (p->sum and p->spec set; 0 on failure). */
static int partial_init(partial *p, const Fedc__V1__AggRoundResponse *r) {
  memset(p, 0, sizeof *p);
  Fedc__V1__TensorHeader th = FEDC__V1__TENSOR_HEADER__INIT;
  th.n_tensors = r->n_tensors;
  th.tensors = r->tensors;
  char err[300];
  if (fc_pb_header_parse(&th, &p->spec, err, sizeof err) != FEDC_OK) {
    printf("{\"step\":\"shape\",\"ok\":false,\"detail\":\"%s\"}\n", err);
    return 0;
  }
  p->bytes = fc_model_bytes(&p->spec);
  p->sum = calloc(1, p->bytes);
  if (!p->sum) return 0;
  fc_sha256(p->sum, p->bytes, p->sha);
  Fedc__V1__PartialUpdate up = FEDC__V1__PARTIAL_UPDATE__INIT;
  p->up = up;
  p->up.client = r->clients[0];
  p->up.num_examples = 1;
  p->up.weight = 1;
  p->up.train_loss = 0.5f;
  p->up.sha256.data = p->sha_up;
  p->up.sha256.len = FC_SHA256_LEN;
  p->up.bytes = p->bytes;
  p->ups[0] = &p->up;
  Fedc__V1__PartialMeta meta = FEDC__V1__PARTIAL_META__INIT;
  p->meta = meta;
  p->meta.round = r->round;
  p->meta.model_version = r->model_version;
  p->meta.total_weight = 1;
  p->meta.n_updates = 1;
  p->meta.updates = p->ups;
  p->meta.fixed_frac_bits = r->fixed_frac_bits;
  return 1;
}

static int run_trickle(fc_channel *ch, uint32_t chunk, int hold_ms) {
  Fedc__V1__AggRoundResponse *r = wait_round(ch);
  fc_status st;
  partial p;
  if (!r) return 1;
  if (!partial_init(&p, r)) return 1;
  /* The trickle: the first chunk now, then one every hold_ms. */
  fc_ccall *a = NULL;
  memset(&st, 0, sizeof st);
  int rc = open_partial(ch, &p, chunk, &a, &st);
  uint64_t nchunks = fc_chunk_count(p.bytes, chunk), i = 0, off;
  size_t len;
  if (rc == FEDC_OK && fc_chunk_plan(p.bytes, chunk, i++, &off, &len) == FEDC_OK)
    rc = send_chunk(a, &p, off, len, &st);
  /* A second stream while the first is open: refused at once. Opened
   * 200 ms after the first chunk went out, so the leader has taken the
   * first stream's opening message by then (both arrive on one channel but
   * may be handled by different event threads: opened at once, the second
   * was sometimes taken first on a loaded machine). */
  usleep(200 * 1000);
  fc_ccall *b = NULL;
  fc_status st2;
  memset(&st2, 0, sizeof st2);
  if (open_partial(ch, &p, chunk, &b, &st2) == FEDC_OK) finish(b, &st2);
  fc_ccall_destroy(b);
  report("second", GRPC_STATUS_RESOURCE_EXHAUSTED, &st2);
  for (; rc == FEDC_OK && i < nchunks; i++) {
    usleep((useconds_t)hold_ms * 1000);
    if (fc_chunk_plan(p.bytes, chunk, i, &off, &len) != FEDC_OK) break;
    rc = send_chunk(a, &p, off, len, &st);
  }
  finish(a, &st); /* the status the leader finished the call with */
  fc_ccall_destroy(a);
  report("trickle", GRPC_STATUS_DEADLINE_EXCEEDED, &st);
  free(p.sum);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return g_failures ? 1 : 0;
}

/* One whole partial (p->sha over p->sum recomputed first); the status in st. */
static void send_whole(fc_channel *ch, partial *p, uint32_t chunk, fc_status *st) {
  fc_ccall *call = NULL;
  memset(st, 0, sizeof *st);
  fc_sha256(p->sum, p->bytes, p->sha); /* the header's digest: the bytes' */
  int rc = open_partial(ch, p, chunk, &call, st);
  uint64_t off;
  size_t len;
  for (uint64_t i = 0; rc == FEDC_OK && fc_chunk_plan(p->bytes, chunk, i, &off, &len) == FEDC_OK; i++)
    rc = send_chunk(call, p, off, len, st);
  if (call) finish(call, st); /* after a failed send too: the status the leader finished with */
  fc_ccall_destroy(call);
}

/* Signs p's update as client `signer` would (its key and certificate from
 * the PKI directory, crypto/update_sig.h) over a claim for client `named`
 * with the update's digest `sha` and `examples`; sets p->up.signature and
 * p->up.certificate (owned by p: cert, sig). 0 on failure. */
static const char *g_pki;
static const uint8_t *g_model_sha; /* the round's model (AggRoundResponse.model_sha256) */
static int sign_as(partial *p, const char *signer, const char *named, const uint8_t *sha, uint64_t examples,
                   char **cert, uint8_t *sig, size_t *siglen) {
  char kp[1024], cp[1024];
  char *key = NULL;
  size_t klen = 0, clen = 0;
  free(*cert);
  *cert = NULL;
  if (fc_pki_leaf_paths(g_pki, "client", signer, kp, sizeof kp, cp, sizeof cp) != FEDC_OK ||
      fc_read_file(cp, 1u << 20, cert, &clen) != FEDC_OK || fc_read_file(kp, 1u << 20, &key, &klen) != FEDC_OK) {
    free(key);
    return 0;
  }
  fc_update_claim cl = {NULL, named, p->meta.round, p->meta.model_version, examples, p->up.train_loss, 0, sha,
                        g_model_sha}; /* the federation: the signer's certificate's */
  *siglen = FC_UPDATE_SIG_MAX;
  int rc = fc_update_sign_pem(*cert, clen, key, klen, cl, sig, siglen);
  free(key);
  p->up.signature.data = sig;
  p->up.signature.len = *siglen;
  p->up.certificate = *cert;
  return rc == FEDC_OK;
}

static int run_relay_bad(fc_channel *ch, uint32_t chunk) {
  Fedc__V1__AggRoundResponse *r = wait_round(ch);
  partial p;
  fc_status st;
  char *cert = NULL;
  uint8_t sig[FC_UPDATE_SIG_MAX];
  size_t siglen = 0;
  if (!r) return 1;
  if (!r->relay || r->model_sha256.len != FC_SHA256_LEN || !partial_init(&p, r)) {
    printf("{\"step\":\"relay\",\"ok\":false,\"detail\":\"the leader's round does not ask for relayed updates\"}\n");
    return 1;
  }
  const char *me = r->clients[0];
  g_model_sha = r->model_sha256.data;
  float *f = p.sum;
  size_t n = p.bytes / 4;
  /* A plain sum to a leader that wants each update. */
  send_whole(ch, &p, chunk, &st);
  report("sum", GRPC_STATUS_FAILED_PRECONDITION, &st);
  p.meta.relay = 1;
  /* Two updates in one relayed partial. */
  Fedc__V1__PartialUpdate *two[2] = {&p.up, &p.up};
  p.meta.updates = two;
  p.meta.n_updates = 2;
  p.meta.total_weight = 2;
  send_whole(ch, &p, chunk, &st);
  report("two", GRPC_STATUS_INVALID_ARGUMENT, &st);
  p.meta.updates = p.ups;
  p.meta.n_updates = 1;
  p.meta.total_weight = 1;
  /* From here the named digest is the bytes' (send_whole hashes them into p.sha). */
  p.up.sha256.data = p.sha;
  fc_sha256(p.sum, p.bytes, p.sha);
  send_whole(ch, &p, chunk, &st);
  report("unsigned", GRPC_STATUS_PERMISSION_DENIED, &st);
  /* Another client's key under our client's name: its certificate names it, not ours. */
  int ok = sign_as(&p, "a", me, p.sha, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("impostor", GRPC_STATUS_PERMISSION_DENIED, &st);
  /* Signed by the client for 1 example; the aggregator says 1000 (a heavier weight). */
  ok &= sign_as(&p, me, me, p.sha, 1, &cert, sig, &siglen);
  p.up.num_examples = 1000;
  p.up.weight = 1000;
  p.meta.total_weight = 1000;
  send_whole(ch, &p, chunk, &st);
  report("tampered", GRPC_STATUS_PERMISSION_DENIED, &st);
  p.up.num_examples = 1;
  p.up.weight = 1;
  p.meta.total_weight = 1;
  /* Signed against another model (an old signed update replayed into a
   * restored federation that reuses the round and version numbers). */
  uint8_t other_model[FC_SHA256_LEN];
  memcpy(other_model, g_model_sha, sizeof other_model);
  other_model[0] ^= 1;
  g_model_sha = other_model;
  ok &= sign_as(&p, me, me, p.sha, 1, &cert, sig, &siglen);
  g_model_sha = r->model_sha256.data;
  send_whole(ch, &p, chunk, &st);
  report("model", GRPC_STATUS_PERMISSION_DENIED, &st);
  /* The client signed other bytes than the ones relayed: the header's digest differs. */
  uint8_t other[FC_SHA256_LEN];
  memset(other, 7, sizeof other);
  p.up.sha256.data = other;
  ok &= sign_as(&p, me, me, other, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("digest", GRPC_STATUS_INVALID_ARGUMENT, &st);
  p.up.sha256.data = p.sha;
  /* Signed bad values (a client may sign anything): the leader's own checks. */
  f[n / 2] = NAN;
  fc_sha256(p.sum, p.bytes, p.sha);
  ok &= sign_as(&p, me, me, p.sha, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("nan", GRPC_STATUS_INVALID_ARGUMENT, &st);
  f[n / 2] = r->clip_norm > 0 ? r->clip_norm * 4 : 1e30f;
  fc_sha256(p.sum, p.bytes, p.sha);
  ok &= sign_as(&p, me, me, p.sha, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("clip", GRPC_STATUS_INVALID_ARGUMENT, &st);
  f[n / 2] = 0;
  fc_sha256(p.sum, p.bytes, p.sha);
  /* Client a's own signed update, but a is not assigned to us. */
  p.up.client = "a";
  ok &= sign_as(&p, "a", "a", p.sha, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("unassigned", GRPC_STATUS_INVALID_ARGUMENT, &st);
  p.up.client = (char *)me;
  ok &= sign_as(&p, me, me, p.sha, 1, &cert, sig, &siglen);
  send_whole(ch, &p, chunk, &st);
  report("ok", GRPC_STATUS_OK, &st);
  send_whole(ch, &p, chunk, &st);
  report("replay", GRPC_STATUS_INVALID_ARGUMENT, &st);
  if (!ok) {
    printf("{\"step\":\"sign\",\"ok\":false,\"detail\":\"could not sign with the PKI directory's client keys\"}\n");
    g_failures++;
  }
  free(cert);
  free(p.sum);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return g_failures ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *addr = NULL, *pki = NULL, *name = NULL, *mode = "partial-trickle";
  uint32_t chunk = 16384;
  int hold_ms = 300, opt;
  static const struct option lo[] = {{"coordinator", 1, 0, 'a'}, {"pki", 1, 0, 'p'},  {"name", 1, 0, 'n'},
                                     {"mode", 1, 0, 'm'},        {"chunk", 1, 0, 'b'}, {"hold-ms", 1, 0, 'H'},
                                     {0, 0, 0, 0}};
  while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (opt) {
    case 'a': addr = optarg; break;
    case 'p': pki = optarg; break;
    case 'n': name = optarg; break;
    case 'm': mode = optarg; break;
    case 'b': chunk = (uint32_t)atoi(optarg); break;
    case 'H': hold_ms = atoi(optarg); break;
    default: return 2;
    }
  }
  if (!addr || !pki || !name || (strcmp(mode, "partial-trickle") != 0 && strcmp(mode, "relay-bad") != 0)) {
    fprintf(stderr, "usage: fedc_agg_probe --coordinator ADDR --pki DIR --name AGG [--mode partial-trickle|relay-bad]\n");
    return 2;
  }
  char cap[1024], certp[1024], keyp[1024], err[400];
  snprintf(cap, sizeof cap, "%s/ca.crt", pki);
  snprintf(certp, sizeof certp, "%s/aggregator-%s.crt", pki, name);
  snprintf(keyp, sizeof keyp, "%s/aggregator-%s.key", pki, name);
  fc_transport_init();
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = addr;
  co.tls.ca = cap;
  co.tls.cert = certp;
  co.tls.key = keyp;
  co.expect_role = "coordinator";
  fc_channel *ch = NULL;
  if (fc_channel_create(&co, &ch, err, sizeof err) != FEDC_OK) {
    printf("{\"step\":\"channel\",\"ok\":false,\"detail\":\"%s\"}\n", err);
    fc_transport_shutdown();
    return 3;
  }
  g_pki = pki;
  int rc = strcmp(mode, "relay-bad") == 0 ? run_relay_bad(ch, chunk) : run_trickle(ch, chunk, hold_ms);
  fc_channel_destroy(ch);
  fc_transport_shutdown();
  return rc;
}
