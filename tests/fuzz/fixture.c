/*
 * fixture.c - see fixture.h. The pieces the fuzz targets share: frames,
 * scratch files, deterministic randomness and a recorded secure-aggregation
 * round.
 *
 * Why deterministic randomness: a SecAgg message is only meaningful under
 * the keys of the round it belongs to (a share is encrypted to a key pair,
 * keys are signed under a session). With RAND replaced by fixed streams,
 * client 1 draws the same keys every time it is created, so the recorded
 * poll answers decrypt and verify for every fresh client, and a fuzzed
 * answer reaches the same depth in every run. Each party draws from its
 * own stream (0 = the server, i = client i), so the interleaving of parties
 * in the recording does not matter. The recording is made until two runs
 * in a row agree byte for byte: OpenSSL may draw once on first use of an
 * algorithm, which the first run absorbs.
 */
#define _XOPEN_SOURCE 700 /* nftw */
#define OPENSSL_SUPPRESS_DEPRECATED /* RAND_set_rand_method: the test-only hook we want */

#include "fixture.h"

#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/rand.h>

#include "client/pipeline.h"
#include "client/runtime_int.h"
#include "crypto/sa_crypto.h"
#include "fedc/error.h"
#include "fixture_pki.h"
#include "crypto/pki.h"

/* ---- frames ---- */

int fix_next_frame(fix_reader *r, const uint8_t **frame, size_t *len) {
  if (r->left < 2) return 0;
  size_t n = (size_t)r->p[0] | (size_t)r->p[1] << 8;
  r->p += 2;
  r->left -= 2;
  if (n > r->left) n = r->left;
  *frame = r->p;
  *len = n;
  r->p += n;
  r->left -= n;
  return 1;
}

void fix_put_frame(uint8_t **buf, size_t *len, const void *frame, size_t n) {
  if (n > 0xffff) abort();
  uint8_t *b = realloc(*buf, *len + 2 + n);
  if (!b) abort();
  b[*len] = (uint8_t)n;
  b[*len + 1] = (uint8_t)(n >> 8);
  if (n) memcpy(b + *len + 2, frame, n);
  *buf = b;
  *len += 2 + n;
}

void fix_put_msg(uint8_t **buf, size_t *len, const ProtobufCMessage *m) {
  size_t n = protobuf_c_message_get_packed_size(m);
  uint8_t *tmp = malloc(n ? n : 1);
  if (!tmp) abort();
  protobuf_c_message_pack(m, tmp);
  fix_put_frame(buf, len, tmp, n);
  free(tmp);
}

/* ---- scratch files ---- */

static char scratch[64];

static int rm_one(const char *p, const struct stat *sb, int flag, struct FTW *f) {
  (void)sb, (void)flag, (void)f;
  return remove(p);
}

static void scratch_cleanup(void) {
  if (scratch[0]) nftw(scratch, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

const char *fix_path(const char *name) {
  static char path[4][600];
  static int next;
  if (!scratch[0]) {
    /* tmpfs where there is one: the store's writers fsync, which costs
     * milliseconds per input on a disk and nothing in memory. */
    snprintf(scratch, sizeof scratch, "/dev/shm/fedc-fuzz-XXXXXX");
    if (!mkdtemp(scratch)) {
      snprintf(scratch, sizeof scratch, "/tmp/fedc-fuzz-XXXXXX");
      if (!mkdtemp(scratch)) abort();
    }
    atexit(scratch_cleanup);
  }
  char *p = path[next++ % 4]; /* a few at once stay valid */
  snprintf(p, sizeof path[0], "%s/%s", scratch, name);
  return p;
}

const char *fix_write(const char *name, const void *data, size_t size) {
  const char *p = fix_path(name);
  FILE *f = fopen(p, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0) abort();
  return p;
}

/* ---- deterministic randomness (splitmix64 streams; test only) ---- */

static uint64_t stream_state[8];
static int cur_stream;

static int det_bytes(unsigned char *buf, int num) {
  uint64_t *s = &stream_state[cur_stream];
  for (int i = 0; i < num; i += 8) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    for (int k = 0; k < 8 && i + k < num; k++) buf[i + k] = (unsigned char)(z >> (8 * k));
  }
  return 1;
}

static int det_status(void) { return 1; }

static RAND_METHOD det_method = {NULL, det_bytes, NULL, NULL, det_bytes, det_status};

void fix_rand_stream(int id, int reset) {
  static int installed;
  if (!installed) {
    if (RAND_set_rand_method(&det_method) != 1) abort();
    installed = 1;
  }
  cur_stream = id & 7;
  if (reset) stream_state[cur_stream] = 0x5eed0000ull + (uint64_t)cur_stream * 0x1000193ull;
}

/* ---- the recorded secure-aggregation round ---- */

static void blob_of(fix_blob *b, const ProtobufCMessage *m) {
  b->n = protobuf_c_message_get_packed_size(m);
  b->p = malloc(b->n ? b->n : 1);
  if (!b->p) abort();
  protobuf_c_message_pack(m, b->p);
}

static ProtobufCMessage *unblob(const ProtobufCMessageDescriptor *d, const fix_blob *b) {
  ProtobufCMessage *m = protobuf_c_message_unpack(d, NULL, b->n, b->p);
  if (!m) abort();
  return m;
}

int fix_sa_masked_input(fc_sa_client *c, const fc_sa_params *p) {
  uint64_t entries = fc_sa_entries(p);
  float *zero = calloc(p->dim ? p->dim : 1, sizeof *zero);
  uint32_t *q = calloc(entries, sizeof *q);
  int rc = FEDC_ERR_NOMEM;
  if (zero && q && (rc = fc_stage_quantize(zero, 1, 0, p, NULL, q)) == FEDC_OK && (rc = fc_stage_dp_noise(q, p)) == FEDC_OK)
    rc = fc_sa_client_mask(c, q);
  free(zero);
  free(q);
  return rc;
}

static void fail(const char *what, const char *why) {
  fprintf(stderr, "fuzz fixture: recorded SecAgg round: %s: %s\n", what, why);
  abort();
}

static void record(fix_sa *r) {
  memset(r, 0, sizeof *r);
  fc_sa_params *p = &r->params;
  p->round = 3;
  p->model_version = 2;
  for (int i = 0; i < 32; i++) p->model_sha[i] = (uint8_t)(0xa0 + i), p->graph_seed[i] = (uint8_t)(7 * i + 1);
  p->n = FIX_SA_N;
  p->k = 2; /* below n - 1: the ring graph of Bell et al., not the complete one */
  p->t = 2;
  p->max_weight = 10;
  p->clip = 1.0f;
  p->dim = FIX_SA_DIM;
  static const char *const names[FIX_SA_N] = {"c00001", "c00002", "c00003", "c00004"};
  static const char *const certs[FIX_SA_N + 1] = {NULL, FIX_C1_CERT_PEM, FIX_C2_CERT_PEM, FIX_C3_CERT_PEM,
                                                  FIX_C4_CERT_PEM};
  static const char *const keys[FIX_SA_N + 1] = {NULL, FIX_C1_KEY_PEM, FIX_C2_KEY_PEM, FIX_C3_KEY_PEM,
                                                 FIX_C4_KEY_PEM};
  memcpy(r->names, names, sizeof names);
  memcpy(r->cert, certs, sizeof certs);
  memcpy(r->key, keys, sizeof keys);
  char why[300];
  fc_sa_server *srv = NULL;
  fc_sa_client *cl[FIX_SA_N + 1] = {NULL};
  for (uint32_t i = 1; i <= FIX_SA_N; i++)
    if (fc_pki_cert_sha256_pem(certs[i], strlen(certs[i]), r->cert_sha256[i]) != FEDC_OK) fail("certificate", "hash");
  fix_rand_stream(0, 1);
  if (fc_sa_server_create(p, names, &srv, why, sizeof why) != FEDC_OK) fail("server", why);
  if (fc_sa_server_set_trust(srv, FIX_CA_PEM, "fuzz") != FEDC_OK) fail("server", "trust");
  for (uint32_t i = 1; i <= FIX_SA_N; i++) {
    /* The task as the coordinator sends it; the client reads it as the runtime does. */
    Fedc__V1__SecAggParams sp = FEDC__V1__SEC_AGG_PARAMS__INIT;
    sp.index = i;
    sp.n_cohort = FIX_SA_N;
    sp.cohort = (char **)names;
    sp.neighbors = p->k;
    sp.threshold = p->t;
    sp.graph_seed.data = p->graph_seed;
    sp.graph_seed.len = sizeof p->graph_seed;
    sp.max_weight = p->max_weight;
    sp.stage_deadline_ms = 1000;
    Fedc__V1__Task t = FEDC__V1__TASK__INIT;
    t.round = p->round;
    t.model_version = p->model_version;
    t.model_sha256.data = p->model_sha;
    t.model_sha256.len = sizeof p->model_sha;
    t.clip_norm = p->clip;
    t.secagg = &sp;
    blob_of(&r->task[i], &t.base);
    Fedc__V1__Task *got = (Fedc__V1__Task *)unblob(&fedc__v1__task__descriptor, &r->task[i]);
    fc_sa_client_cfg cfg;
    if (rt_secagg_cfg(got, FIX_SA_DIM, &cfg) != FEDC_OK) fail("task", "malformed");
    cfg.ca_pem = FIX_CA_PEM;
    cfg.cert_pem = certs[i];
    cfg.key_pem = keys[i];
    fix_rand_stream((int)i, 1);
    if (fc_sa_client_create(&cfg, &cl[i], why, sizeof why) != FEDC_OK) fail("client", why);
    protobuf_c_message_free_unpacked(&got->base, NULL);
  }
  for (int stage = FC_SA_ADVERTISE; stage <= FC_SA_UNMASK; stage++) {
    for (uint32_t i = 1; i <= FIX_SA_N; i++) {
      Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
      int rc;
      if (stage == FC_SA_ADVERTISE) {
        fix_rand_stream((int)i, 0);
        rc = fc_sa_client_advertise(cl[i], &req);
      } else {
        Fedc__V1__SecAggPollResponse resp;
        fix_rand_stream(0, 0);
        fc_sa_server_poll(srv, i, stage, &resp);
        blob_of(&r->poll[stage][i], &resp.base);
        fc_sa_poll_clear(&resp);
        Fedc__V1__SecAggPollResponse *in =
            (Fedc__V1__SecAggPollResponse *)unblob(&fedc__v1__sec_agg_poll_response__descriptor, &r->poll[stage][i]);
        fix_rand_stream((int)i, 0);
        switch (stage) {
        case FC_SA_SHARE_KEYS: rc = fc_sa_client_share_keys(cl[i], in, &req); break;
        case FC_SA_MASKED: rc = fc_sa_client_receive_shares(cl[i], in); break;
        case FC_SA_CONSISTENCY: rc = fc_sa_client_consistency(cl[i], in, &req); break;
        default: rc = fc_sa_client_unmask(cl[i], in, &req); break;
        }
        protobuf_c_message_free_unpacked(&in->base, NULL);
      }
      if (rc != FEDC_OK) fail(fc_sa_stage_name(stage), fc_sa_client_error(cl[i]));
      fix_rand_stream(0, 0);
      if (stage == FC_SA_MASKED) {
        fix_rand_stream((int)i, 0);
        if (fix_sa_masked_input(cl[i], p) != FEDC_OK) fail("mask", fc_sa_client_error(cl[i]));
        fix_rand_stream(0, 0);
        if (!fc_sa_server_masked_allowed(srv, i)) fail("mask", "not allowed");
        fc_sa_server_masked_done(srv, i);
        continue;
      }
      blob_of(&r->submit[stage][i], &req.base);
      fc_sa_submit_clear(&req);
      Fedc__V1__SecAggSubmitRequest *got =
          (Fedc__V1__SecAggSubmitRequest *)unblob(&fedc__v1__sec_agg_submit_request__descriptor, &r->submit[stage][i]);
      if (fc_sa_server_submit(srv, i, r->cert_sha256[i], got, why, sizeof why) != FEDC_OK) fail("submit", why);
      protobuf_c_message_free_unpacked(&got->base, NULL);
    }
    if (fc_sa_server_close_stage(srv, why, sizeof why) != FEDC_OK) fail("close stage", why);
  }
  fc_sa_mask_term *terms = NULL;
  size_t nterms = 0;
  if (fc_sa_server_unmask_terms(srv, &terms, &nterms, why, sizeof why) != FEDC_OK) fail("unmask", why);
  free(terms);
  for (uint32_t i = 1; i <= FIX_SA_N; i++) {
    if (fc_sa_client_state(cl[i]) != FC_SAC_DONE) fail("client", "not done");
    fc_sa_client_destroy(cl[i]);
  }
  fc_sa_server_destroy(srv);
}

static int blob_eq(const fix_blob *a, const fix_blob *b) {
  return a->n == b->n && (a->n == 0 || memcmp(a->p, b->p, a->n) == 0);
}

static int same(const fix_sa *a, const fix_sa *b) {
  for (int s = 0; s <= FC_SA_UNMASK; s++)
    for (int i = 0; i <= FIX_SA_N; i++)
      if (!blob_eq(&a->poll[s][i], &b->poll[s][i]) || !blob_eq(&a->submit[s][i], &b->submit[s][i])) return 0;
  return 1;
}

static void drop(fix_sa *r) {
  for (int s = 0; s <= FC_SA_UNMASK; s++)
    for (int i = 0; i <= FIX_SA_N; i++) free(r->poll[s][i].p), free(r->submit[s][i].p);
  for (int i = 0; i <= FIX_SA_N; i++) free(r->task[i].p);
}

const fix_sa *fix_sa_get(void) {
  static fix_sa kept;
  static int ready;
  if (ready) return &kept;
  fix_sa prev;
  record(&prev);
  for (int attempt = 0; attempt < 3; attempt++) {
    record(&kept);
    if (same(&prev, &kept)) {
      drop(&prev);
      ready = 1;
      return &kept;
    }
    drop(&prev);
    prev = kept;
  }
  fail("determinism", "two recordings in a row differ (randomness not from the fixture's streams?)");
  return NULL;
}

fc_sa_server *fix_sa_server(const fix_sa *sa) {
  fc_sa_server *srv = NULL;
  char why[300];
  if (fc_sa_server_create(&sa->params, sa->names, &srv, why, sizeof why) != FEDC_OK) fail("server", why);
  if (fc_sa_server_set_trust(srv, FIX_CA_PEM, "fuzz") != FEDC_OK) fail("server", "trust");
  return srv;
}
