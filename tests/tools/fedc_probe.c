/*
 * fedc_probe.c - a scriptable misbehaving client for integration tests.
 * Uploads go where the task says: the coordinator, or (1.14) the aggregator
 * it names, over a channel that expects that aggregator's identity.
 *
 * It speaks the real protocol over real mutual TLS (transport/), checks in
 * until selected, fetches the model, and then does what --mode says:
 *   good            upload a valid zero delta; expect OK. A refusal that says
 *                   when to come back (busy: no staging slot free; over a
 *                   rate) is retried when told, as the client runtime does,
 *                   for up to 120 s; each retry is a step "retry"
 *   hold-upload     a good upload that stops after half its chunks, prints a
 *                   step "holding", waits --hold-ms (default 3000), then sends
 *                   the rest (it holds a staging slot meanwhile)
 *   trickle-upload  a good upload that waits --hold-ms before every chunk
 *                   after the first (a slow link, or a slowloris): expects
 *                   DEADLINE_EXCEEDED (the minimum transfer rate), step "trickle"
 *   rejections      send every kind of bad upload, each in its own stream,
 *                   and check the coordinator's status for each (one names
 *                   a tensor "w\n<timestamp> INFO  admin: forged line\x1b[31m",
 *                   a forged log line and a raw ESC); then a valid upload
 *                   (OK) and a second one (ALREADY_EXISTS)
 *   die-mid-upload  send the header and half the chunks, then SIGKILL itself
 *   poison          against a coordinator on its default settings: updates
 *                   of 1e30 and 3e38, a negative train_loss (each refused),
 *                   then an update of half the clip norm claiming 2^64-1
 *                   examples (accepted: its weight is capped)
 *   overflow        against --clip-norm 0: an update of 3e38 x 2 examples
 *                   (refused: it would overflow the aggregate), then a good one
 *   secagg-bad     in a secure-aggregation round: submissions for another
 *                   round or stage, malformed, badly signed, under another
 *                   client's certificate, oversized; a plaintext upload and
 *                   a masked one before its stage (each refused); then it
 *                   vanishes (a dropout at the advertise stage)
 *   resume          (protocol 1.10) close its upload stream after half the
 *                   chunks (refused "ended early": the coordinator keeps the
 *                   prefix), wait for --resume-after FILE, ask UploadOffset
 *                   (half), then resume with another SHA-256, other meta, an
 *                   offset beyond and one below the bytes kept (each
 *                   refused), and at the right offset (accepted); and a
 *                   FetchModel from byte 1000 (not a chunk boundary: refused)
 *   resume-other    another identity of the same round sends the same header
 *                   (a zero delta of the same model: the same SHA-256) at the
 *                   first one's offset: refused, nothing is kept for it; its
 *                   UploadOffset says 0; then a whole upload (accepted)
 *   bad-device      a check-in reporting a battery of 150% (INVALID_ARGUMENT),
 *                   then one with a sane device state (OK)
 *   quant-bad       against --upload-bits 8 or 4 (protocol 1.9): a float32
 *                   update, quantized ones with a NaN scale, a scale past
 *                   the clip, the unused code -128, a block missing and
 *                   every block's scale at clip / L (each refused), then a
 *                   valid quantized update (OK): zero at 8 bits, at 4 bits
 *                   code 1 at clip / L in the first block (4.6x the clip
 *                   decoded: the coordinator folds it at the clip)
 *   call METHOD     one unary call to METHOD (e.g. /fedc.v1.Admin/Status)
 *                   and print its status (role checks)
 *   flood           never checks in; --count calls each of UploadUpdate (a
 *                   first message, then the chunk), SecAggPoll, SecAggSubmit,
 *                   FetchModel and ReportEval as fast as it can, and prints per method
 *                   the calls, those refused as over a rate
 *                   (RESOURCE_EXHAUSTED), those answered otherwise, and the
 *                   seconds it took (the test checks the answered against
 *                   burst + rate x seconds)
 *   eval-poison     a cohort member that trains zero updates and reports
 *                   each evaluation at the task's example cap, none correct,
 *                   all in one class (alternating): the coordinator weighs it
 *                   at most twice the median member (test_eval_poison.sh)
 * --upload-after FILE: wait (up to 120 s) for FILE to exist before the first
 * upload (tests order two probes' uploads with it).
 * One JSON line per step on stdout; exit 0 only if every step got the status
 * it expects.
 */
#include <getopt.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "common/chunk.h"
#include "common/clock.h"
#include "common/fileutil.h"
#include "common/quant.h"
#include "crypto/sha256.h"
#include "crypto/update_sig.h"
#include "fedc/error.h"
#include "fedc/v1/fedc.pb-c.h"
#include "transport/tensor_stream.h"
#include "transport/transport.h"
#include "tests/support/probe_report.h"

static fc_channel *g_ch;
/* 1.14: the channel to the aggregator a task names (uploads go there; NULL:
 * to the coordinator), made from g_co with the task's expected identity. */
static fc_channel *g_up;
static fc_channel_opts g_co;
static const uint8_t *g_model_sha; /* the task's model (Task.model_sha256): signed claims name it (1.17) */
static int g_failures;
static uint32_t g_chunk = 8192;
static int g_hold_ms = 3000;
static const char *g_upload_after, *g_resume_after;
static uint64_t g_start_offset; /* upload(): a resumed stream's first chunk */

static void report(const char *step, int want_code, const fc_status *st) {
  if (!probe_report(step, want_code, st)) g_failures++;
}

/* Check in until selected; returns the task (caller frees the response). */
static Fedc__V1__CheckInResponse *wait_task(int timeout_s) {
  for (int i = 0; i < timeout_s * 10; i++) {
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    fc_status st;
    if (fc_call_unary(g_ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                      5000, &st) == FEDC_OK) {
      Fedc__V1__CheckInResponse *r = (Fedc__V1__CheckInResponse *)m;
      if (r->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__TRAIN && r->task) return r;
      protobuf_c_message_free_unpacked(m, NULL);
    } else {
      fprintf(stderr, "fedc_probe: check-in: %s\n", st.detail);
    }
    usleep(100000);
  }
  return NULL;
}

typedef struct upload_plan {
  const fc_model_spec *spec;
  const float *payload;
  uint64_t total;
  const uint8_t *sha; /* header's claim */
  uint64_t round, version, examples;
  double loss;
  uint64_t send_bytes;   /* stop after this many payload bytes (then close or die) */
  int die;               /* raise SIGKILL instead of closing */
  size_t oversize;       /* send one chunk message of this many bytes instead */
  int masked;            /* claim a masked (secure-aggregation) input */
  int hold_ms;           /* pause this long after half the chunks */
  int trickle_ms;        /* pause this long before every chunk but the first */
  uint32_t bits, block;  /* UpdateMeta.upload_bits, upload_block (1.9) */
} upload_plan;

static int upload(const upload_plan *p, fc_status *st) {
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(g_up ? g_up : g_ch, "/fedc.v1.Coordinator/UploadUpdate", FC_RPC_CLIENT_STREAM, NULL, 60000,
                          &call, st);
  if (rc != FEDC_OK) return rc;
  fc_pb_header h;
  fc_pb_header_build(&h, p->spec, p->total, p->sha, g_chunk);
  h.h.start_offset = g_start_offset;
  Fedc__V1__UpdateMeta meta = FEDC__V1__UPDATE_META__INIT;
  meta.round = p->round;
  meta.model_version = p->version;
  meta.num_examples = p->examples;
  meta.train_loss = (float)p->loss;
  meta.masked = p->masked;
  meta.upload_bits = p->bits;
  meta.upload_block = p->block;
  /* Uploading to an aggregator, signed as the client runtime signs (1.17,
   * crypto/update_sig.h): a relaying aggregator needs it. */
  char *cert = NULL, *key = NULL;
  size_t clen = 0, klen = 0, siglen = FC_UPDATE_SIG_MAX;
  uint8_t sig[FC_UPDATE_SIG_MAX];
  if (g_up && !p->masked && g_model_sha && fc_read_file(g_co.tls.cert, 1u << 20, &cert, &clen) == FEDC_OK &&
      fc_read_file(g_co.tls.key, 1u << 20, &key, &klen) == FEDC_OK) {
    fc_update_claim cl = {NULL, NULL, meta.round, meta.model_version, meta.num_examples, meta.train_loss, 0, p->sha,
                          g_model_sha};
    if (fc_update_sign_pem(cert, clen, key, klen, cl, sig, &siglen) == FEDC_OK) {
      meta.signature.data = sig;
      meta.signature.len = siglen;
      meta.certificate = cert;
    }
  }
  free(key);
  Fedc__V1__UploadMsg first = FEDC__V1__UPLOAD_MSG__INIT;
  first.meta = &meta;
  first.header = &h.h;
  rc = fc_ccall_send(call, &first.base, st);
  free(cert);
  uint8_t *big = NULL;
  if (rc == FEDC_OK && p->oversize) {
    big = calloc(1, p->oversize);
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = 0;
    c.data.data = big;
    c.data.len = p->oversize;
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    rc = fc_ccall_send(call, &m.base, st);
  }
  uint64_t limit = p->send_bytes ? p->send_bytes : p->total;
  uint64_t nchunks = fc_chunk_count(p->total, g_chunk);
  for (uint64_t i = g_start_offset / g_chunk; rc == FEDC_OK && !p->oversize; i++) {
    uint64_t off;
    size_t len;
    if (fc_chunk_plan(p->total, g_chunk, i, &off, &len) != FEDC_OK || off >= limit) break;
    if (p->trickle_ms && off > 0) usleep((useconds_t)p->trickle_ms * 1000);
    if (p->hold_ms && i == nchunks / 2) {
      printf("{\"step\":\"holding\",\"ms\":%d}\n", p->hold_ms);
      fflush(stdout);
      usleep((useconds_t)p->hold_ms * 1000);
    }
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)p->payload + off;
    c.data.len = len;
    Fedc__V1__UploadMsg m = FEDC__V1__UPLOAD_MSG__INIT;
    m.chunk = &c;
    rc = fc_ccall_send(call, &m.base, st);
  }
  if (p->die) {
    fprintf(stderr, "fedc_probe: killing myself mid-upload\n");
    raise(SIGKILL);
  }
  ProtobufCMessage *resp = NULL;
  if (rc == FEDC_OK) rc = fc_ccall_close_and_recv(call, &fedc__v1__upload_response__descriptor, &resp, st);
  if (resp) protobuf_c_message_free_unpacked(resp, NULL);
  fc_ccall_destroy(call);
  free(big);
  return rc;
}

/* upload(), again each time the coordinator says when to come back (busy,
 * or over a rate), as the client runtime does; at most 120 s. */
/* Protocol 1.9: malformed quantized updates against --upload-bits 8. */
static int run_quant_bad(const Fedc__V1__Task *t, const upload_plan *base) {
  fc_status st;
  upload(base, &st); /* float32 where a quantized update is required */
  report("float32-to-8bit", GRPC_STATUS_INVALID_ARGUMENT, &st);
  uint32_t bits = t->upload_bits, block = t->upload_block;
  uint64_t n = base->total / sizeof(float), bytes = fc_q_payload_bytes(n, bits, block);
  size_t b1 = 4 + (size_t)block * bits / 8; /* block 1's scale */
  uint8_t *q = calloc(1, bytes ? bytes : 1), sha[FC_SHA256_LEN];
  fc_model_spec qs;
  memset(&qs, 0, sizeof qs);
  char qname[16];
  snprintf(qname, sizeof qname, "update.q%u", bits);
  fc_model_spec_add(&qs, qname, 1, &bytes);
  qs.t[0].dtype = FC_DTYPE_U8;
  upload_plan p = *base;
  p.spec = &qs;
  p.payload = (const float *)q;
  p.total = bytes;
  p.sha = sha;
  p.bits = bits;
  p.block = block;
  float scale = NAN;
  memcpy(q + b1, &scale, 4); /* little-endian host */
  fc_sha256(q, bytes, sha);
  upload(&p, &st);
  report("nan-scale", GRPC_STATUS_INVALID_ARGUMENT, &st);
  scale = t->clip_norm; /* x L is far past the clip */
  memcpy(q + b1, &scale, 4);
  fc_sha256(q, bytes, sha);
  upload(&p, &st);
  report("scale-past-clip", GRPC_STATUS_INVALID_ARGUMENT, &st);
  memset(q, 0, bytes);
  q[4 + 10] = 0x80; /* code -128 (8 bits), -8 in the high nibble (4 bits) */
  fc_sha256(q, bytes, sha);
  upload(&p, &st);
  report("code-out-of-range", GRPC_STATUS_INVALID_ARGUMENT, &st);
  q[4 + 10] = 0;
  p.total = bytes - b1; /* a block short: the header's spec is not the coordinator's */
  qs.t[0].shape[0] = p.total;
  fc_sha256(q, p.total, sha);
  upload(&p, &st);
  report("block-missing", GRPC_STATUS_INVALID_ARGUMENT, &st);
  qs.t[0].shape[0] = bytes;
  p.total = bytes;
  /* Code +1 at the largest scale each block may have (clip / L): every
   * scale passes, yet decoded the update is clip x sqrt(n) / L long and the
   * rounding slack computed from those scales let it through (review,
   * 2026-12-06). Refused: the scales claim more than the clip. With
   * one_block, only the first block so (the scales pass; the codes still
   * make it 4.6x the clip at 4 bits): accepted, folded at the clip. */
  for (int one_block = 0; one_block <= 1; one_block++) {
    if (one_block && bits == 8) continue; /* sqrt(1024) / 127: never past the clip */
    memset(q, 0, bytes);
    float big = (float)(t->clip_norm / fc_q_levels(bits));
    uint8_t *o = q;
    for (uint64_t first = 0; first < n; first += block) {
      uint64_t m = n - first < block ? n - first : block;
      memcpy(o, &big, 4);
      o += 4;
      for (uint64_t i = 0; i < m; i++) {
        if (bits == 8)
          o[i] = 1;
        else
          o[i / 2] |= (uint8_t)(1u << (4 * (i % 2)));
      }
      o += (m * bits + 7) / 8;
      if (one_block) break;
    }
    fc_sha256(q, bytes, sha);
    upload(&p, &st);
    if (!one_block) report("scales-past-norm", GRPC_STATUS_INVALID_ARGUMENT, &st);
  }
  if (bits != 4) { /* 4 bits: the one-block update above is the good one */
    memset(q, 0, bytes);
    fc_sha256(q, bytes, sha);
    upload(&p, &st);
  }
  report("good-quantized", GRPC_STATUS_OK, &st);
  free(q);
  return g_failures ? 1 : 0;
}

static int upload_retrying(const upload_plan *p, fc_status *st) {
  uint64_t until = fc_now_ms() + 120000;
  for (;;) {
    uint64_t t0 = fc_now_ms();
    int rc = upload(p, st);
    printf("{\"step\":\"attempt\",\"code\":%d,\"ms\":%llu}\n", st->code, (unsigned long long)(fc_now_ms() - t0));
    fflush(stdout);
    int told = (st->code == GRPC_STATUS_UNAVAILABLE || st->code == GRPC_STATUS_RESOURCE_EXHAUSTED) &&
               st->retry_after_ms > 0;
    if (rc == FEDC_OK || !told || fc_now_ms() + st->retry_after_ms > until) return rc;
    printf("{\"step\":\"retry\",\"code\":%d,\"retry_after_ms\":%u,\"detail\":\"", st->code, st->retry_after_ms);
    for (const char *c = st->detail; *c; c++) putchar(*c == '"' || *c == '\\' || *c < 32 ? '?' : *c);
    printf("\"}\n");
    fflush(stdout);
    usleep((useconds_t)st->retry_after_ms * 1000);
  }
}

static int fetch(const Fedc__V1__Task *t, fc_model_spec *spec, float **w, uint64_t *total, fc_status *st) {
  Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
  req.version = t->model_version;
  fc_ccall *call = NULL;
  int rc = fc_ccall_start(g_ch, "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &req.base, 120000, &call, st);
  if (rc != FEDC_OK) return rc;
  rc = fc_tensor_stream_recv(call, 1ull << 32, t->model_sha256.data, spec, w, total, NULL, st);
  fc_ccall_destroy(call);
  return rc;
}

static void sa_submit(const char *step, int want, Fedc__V1__SecAggSubmitRequest *req) {
  ProtobufCMessage *m = NULL;
  fc_status st;
  memset(&st, 0, sizeof st);
  fc_call_unary(g_ch, "/fedc.v1.Coordinator/SecAggSubmit", &req->base, &fedc__v1__sec_agg_submit_response__descriptor,
                &m, 10000, &st);
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  report(step, want, &st);
}

/* A cohort member that sends every kind of bad secure-aggregation message
 * during the advertise stage, then vanishes. */
static int run_secagg_bad(const Fedc__V1__Task *t, const char *pki, const char *other, const fc_model_spec *spec,
                          const float *zero, uint64_t total, const uint8_t *sha_zero) {
  if (!t->secagg) {
    fprintf(stderr, "fedc_probe: the task is not a secure-aggregation round\n");
    return 1;
  }
  char path[1024], *pem = NULL;
  size_t pem_len = 0;
  snprintf(path, sizeof path, "%s/client-%s.crt", pki, other);
  if (fc_read_file(path, 1 << 20, &pem, &pem_len) != FEDC_OK) {
    fprintf(stderr, "fedc_probe: cannot read %s\n", path);
    return 1;
  }
  uint8_t key32[32] = {1}, sig[64] = {2};
  Fedc__V1__SecAggKeys keys = FEDC__V1__SEC_AGG_KEYS__INIT;
  keys.index = t->secagg->index;
  keys.enc_pk.data = key32;
  keys.enc_pk.len = 32;
  keys.mask_pk.data = key32;
  keys.mask_pk.len = 32;
  keys.signature.data = sig;
  keys.signature.len = sizeof sig;
  keys.certificate = pem;
  Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
  req.round = t->round + 1;
  req.stage = FEDC__V1__SEC_AGG_STAGE__SA_ADVERTISE;
  req.keys = &keys;
  sa_submit("sa-wrong-round", GRPC_STATUS_FAILED_PRECONDITION, &req);
  req.round = t->round;
  req.stage = FEDC__V1__SEC_AGG_STAGE__SA_UNMASK;
  sa_submit("sa-wrong-stage", GRPC_STATUS_FAILED_PRECONDITION, &req);
  req.stage = FEDC__V1__SEC_AGG_STAGE__SA_ADVERTISE;
  keys.enc_pk.len = 5;
  sa_submit("sa-malformed-keys", GRPC_STATUS_INVALID_ARGUMENT, &req);
  keys.enc_pk.len = 32;
  sa_submit("sa-other-certificate", GRPC_STATUS_INVALID_ARGUMENT, &req);
  free(pem);
  snprintf(path, sizeof path, "%s/client-%s.crt", pki, t->secagg->cohort[t->secagg->index - 1]);
  if (fc_read_file(path, 1 << 20, &pem, &pem_len) != FEDC_OK) return 1;
  keys.certificate = pem;
  sa_submit("sa-bad-signature", GRPC_STATUS_INVALID_ARGUMENT, &req);
  size_t big = 4u << 20;
  char *huge = malloc(big + 1);
  memset(huge, 'A', big);
  huge[big] = 0;
  keys.certificate = huge;
  sa_submit("sa-oversized", GRPC_STATUS_RESOURCE_EXHAUSTED, &req);
  free(huge);
  free(pem);
  fc_status st;
  memset(&st, 0, sizeof st);
  upload_plan p = {spec, zero, total, sha_zero, t->round, t->model_version, 100, 0.5, 0, 0, 0, 0, 0, 0, 0, 0};
  upload(&p, &st);
  report("sa-plaintext-upload", GRPC_STATUS_FAILED_PRECONDITION, &st);
  p.masked = 1;
  upload(&p, &st);
  report("sa-masked-too-early", GRPC_STATUS_FAILED_PRECONDITION, &st);
  return g_failures ? 1 : 0;
}

static int wait_file(const char *path) {
  for (int i = 0; path && access(path, F_OK) != 0; i++) {
    if (i == 1200) {
      fprintf(stderr, "fedc_probe: %s never appeared\n", path);
      return 1;
    }
    usleep(100000);
  }
  return 0;
}

/* UploadOffset for p's update: the bytes the coordinator kept. */
static uint64_t upload_offset(const upload_plan *p, fc_status *st) {
  Fedc__V1__UploadOffsetRequest req = FEDC__V1__UPLOAD_OFFSET_REQUEST__INIT;
  req.round = p->round;
  req.total_bytes = p->total;
  req.sha256.data = (uint8_t *)p->sha;
  req.sha256.len = FC_SHA256_LEN;
  req.chunk_bytes = g_chunk;
  ProtobufCMessage *m = NULL;
  uint64_t off = UINT64_MAX;
  if (fc_call_unary(g_ch, "/fedc.v1.Coordinator/UploadOffset", &req.base, &fedc__v1__upload_offset_response__descriptor,
                    &m, 10000, st) == FEDC_OK)
    off = ((Fedc__V1__UploadOffsetResponse *)m)->offset;
  if (m) protobuf_c_message_free_unpacked(m, NULL);
  printf("{\"step\":\"upload-offset\",\"offset\":%llu}\n", (unsigned long long)off);
  fflush(stdout);
  return off;
}

/* Modes resume and resume-other (see the top). */
static void run_resume(const char *mode, upload_plan p, fc_status *st) {
  uint64_t half = fc_chunk_count(p.total, g_chunk) / 2 * g_chunk;
  fc_status q;
  if (strcmp(mode, "resume-other") == 0) {
    g_start_offset = half;
    upload(&p, st);
    report("resume-other-identity", GRPC_STATUS_FAILED_PRECONDITION, st);
    g_start_offset = 0;
    if (upload_offset(&p, &q) != 0) g_failures++;
    upload(&p, st);
    report("whole-upload", GRPC_STATUS_OK, st);
    return;
  }
  p.send_bytes = half;
  upload(&p, st);
  report("cut", GRPC_STATUS_INVALID_ARGUMENT, st);
  /* A download cannot start off a chunk boundary (nor past the model). */
  Fedc__V1__FetchModelRequest fr = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
  fr.version = p.version;
  fr.start_offset = 1000;
  fc_ccall *call = NULL;
  if (fc_ccall_start(g_ch, "/fedc.v1.Coordinator/FetchModel", FC_RPC_SERVER_STREAM, &fr.base, 10000, &call, &q) ==
      FEDC_OK) {
    ProtobufCMessage *m = NULL;
    while (fc_ccall_recv(call, &fedc__v1__tensor_stream_msg__descriptor, &m, &q) == 1) {
      protobuf_c_message_free_unpacked(m, NULL);
      m = NULL;
    }
  }
  fc_ccall_destroy(call);
  report("fetch-off-chunk-boundary", GRPC_STATUS_OUT_OF_RANGE, &q);
  p.send_bytes = 0;
  if (wait_file(g_resume_after)) g_failures++;
  if (upload_offset(&p, &q) != half) g_failures++;
  uint8_t other_sha[FC_SHA256_LEN];
  memcpy(other_sha, p.sha, sizeof other_sha);
  other_sha[0] ^= 1;
  upload_plan o = p;
  o.sha = other_sha;
  g_start_offset = half;
  upload(&o, st);
  report("resume-other-sha256", GRPC_STATUS_FAILED_PRECONDITION, st);
  o = p;
  o.examples = p.examples + 1;
  upload(&o, st);
  report("resume-other-meta", GRPC_STATUS_FAILED_PRECONDITION, st);
  g_start_offset = half + g_chunk;
  upload(&p, st);
  report("resume-beyond", GRPC_STATUS_OUT_OF_RANGE, st);
  g_start_offset = half - g_chunk;
  upload(&p, st);
  report("resume-below", GRPC_STATUS_INVALID_ARGUMENT, st);
  g_start_offset = half;
  upload(&p, st);
  report("resume", GRPC_STATUS_OK, st);
}

/* eval-poison: a federation member that trains (zero deltas) and, when
 * drawn for an evaluation, reports the task's example cap, none correct,
 * the largest loss, and every example predicted as one class (alternating
 * between evaluations), within every bound the coordinator checks (a
 * hostile review's attack, 2026-12-06; test_eval_poison.sh). */
static int run_eval_poison(void) {
  int evals = 0;
  for (int i = 0; i < 3000; i++) {
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    req.can_evaluate = 1;
    ProtobufCMessage *m = NULL;
    fc_status st;
    memset(&st, 0, sizeof st);
    if (fc_call_unary(g_ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                      5000, &st) != FEDC_OK) {
      usleep(100000);
      continue;
    }
    Fedc__V1__CheckInResponse *r = (Fedc__V1__CheckInResponse *)m;
    if (r->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__DONE) {
      protobuf_c_message_free_unpacked(m, NULL);
      break;
    }
    if (r->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__TRAIN && r->task) {
      const Fedc__V1__Task *t = r->task;
      fc_model_spec spec;
      float *w = NULL;
      uint64_t total = 0;
      if (fetch(t, &spec, &w, &total, &st) == FEDC_OK) {
        float *zero = calloc(total / 4, sizeof *zero);
        uint8_t sha[FC_SHA256_LEN];
        fc_sha256(zero, total, sha);
        upload_plan p = {&spec, zero, total, sha, t->round, t->model_version, 100, 0.5, 0, 0, 0, 0, 0, 0, 0, 0};
        upload(&p, &st);
        report("train", GRPC_STATUS_OK, &st);
        free(zero);
      }
      free(w);
    } else if (r->action == FEDC__V1__CHECK_IN_RESPONSE__ACTION__EVALUATE && r->task && r->task->eval) {
      const Fedc__V1__Task *t = r->task;
      const Fedc__V1__EvalParams *ep = t->eval;
      Fedc__V1__EvalReport er = FEDC__V1__EVAL_REPORT__INIT;
      uint64_t cc[64] = {0};
      er.round = t->round;
      er.model_version = t->model_version;
      er.examples = ep->max_examples;
      er.correct = 0;
      er.loss_sum = (double)ep->max_examples * ep->value_max;
      if (ep->classes && ep->classes <= 64) {
        cc[evals % 2 ? ep->classes - 1 : 0] = ep->max_examples;
        er.n_class_counts = ep->classes;
        er.class_counts = cc;
      }
      ProtobufCMessage *rm = NULL;
      fc_call_unary(g_ch, "/fedc.v1.Coordinator/ReportEval", &er.base, &fedc__v1__eval_report_response__descriptor,
                    &rm, 10000, &st);
      if (rm) protobuf_c_message_free_unpacked(rm, NULL);
      printf("{\"step\":\"eval-poison-plan\",\"examples\":%llu,\"class\":%u}\n",
             (unsigned long long)er.examples, evals % 2 ? ep->classes - 1 : 0);
      report("eval-poison", GRPC_STATUS_OK, &st);
      evals++;
    }
    uint32_t wait = r->retry_after_ms ? r->retry_after_ms : 100;
    protobuf_c_message_free_unpacked(m, NULL);
    usleep((useconds_t)(wait > 1000 ? 1000 : wait) * 1000);
  }
  return g_failures ? 1 : 0;
}

static int run_upload_modes(const char *mode, const char *pki, const char *other) {
  Fedc__V1__CheckInResponse *r = wait_task(60);
  if (!r) {
    fprintf(stderr, "fedc_probe: never selected\n");
    return 1;
  }
  const Fedc__V1__Task *t = r->task;
  fc_model_spec spec;
  float *w = NULL;
  uint64_t total = 0;
  fc_status st;
  memset(&st, 0, sizeof st);
  if (t->aggregator_address && t->aggregator_address[0] && !g_up) { /* the aggregator tier (1.14) */
    fc_channel_opts ao = g_co;
    char err[400];
    ao.target = t->aggregator_address;
    ao.expect_peer = t->aggregator_identity;
    if (fc_channel_create(&ao, &g_up, err, sizeof err) != FEDC_OK) {
      printf("{\"step\":\"aggregator-channel\",\"detail\":\"%s\"}\n", err);
      return 1;
    }
    printf("{\"step\":\"aggregator\",\"address\":\"%s\"}\n", t->aggregator_address);
  }
  uint64_t t0 = fc_now_ms();
  int rc = fetch(t, &spec, &w, &total, &st);
  printf("{\"step\":\"fetch-time\",\"ms\":%llu}\n", (unsigned long long)(fc_now_ms() - t0));
  report("fetch", GRPC_STATUS_OK, &st);
  if (rc != FEDC_OK) return 1;
  size_t n = total / sizeof(float);
  float *zero = calloc(n, sizeof *zero), *bad = malloc(total);
  uint8_t sha_zero[FC_SHA256_LEN], sha_bad[FC_SHA256_LEN];
  fc_sha256(zero, total, sha_zero);
  upload_plan p = {&spec, zero, total, sha_zero, t->round, t->model_version, 100, 0.5, 0, 0, 0, 0, 0, 0, 0, 0};
  g_model_sha = t->model_sha256.len == 32 ? t->model_sha256.data : NULL;
  if (strcmp(mode, "secagg-bad") == 0) {
    rc = run_secagg_bad(t, pki, other, &spec, zero, total, sha_zero);
    free(zero);
    free(bad);
    free(w);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
  }

  if (strcmp(mode, "poison") == 0 || strcmp(mode, "overflow") == 0) {
    upload_plan q = p;
    q.payload = bad;
    q.sha = sha_bad;
    if (strcmp(mode, "poison") == 0) {
      for (size_t i = 0; i < n; i++) bad[i] = 1e30f;
      fc_sha256(bad, total, sha_bad);
      q.examples = 1;
      upload(&q, &st);
      report("values-1e30", GRPC_STATUS_INVALID_ARGUMENT, &st);
      for (size_t i = 0; i < n; i++) bad[i] = 3e38f;
      fc_sha256(bad, total, sha_bad);
      upload(&q, &st);
      report("values-3e38", GRPC_STATUS_INVALID_ARGUMENT, &st);
      q = p;
      q.loss = -3e38;
      upload(&q, &st);
      report("negative-loss", GRPC_STATUS_INVALID_ARGUMENT, &st);
      /* Every coordinate equal, L2 norm half the announced clip norm. */
      for (size_t i = 0; i < n; i++) bad[i] = (float)(t->clip_norm * 0.5 / sqrt((double)n));
      fc_sha256(bad, total, sha_bad);
      q = p;
      q.payload = bad;
      q.sha = sha_bad;
      q.examples = UINT64_MAX;
      upload(&q, &st);
      report("max-examples", GRPC_STATUS_OK, &st);
    } else {
      for (size_t i = 0; i < n; i++) bad[i] = 3e38f;
      fc_sha256(bad, total, sha_bad);
      q.examples = 2;
      upload(&q, &st);
      report("overflow-3e38", GRPC_STATUS_INVALID_ARGUMENT, &st);
      upload(&p, &st);
      report("good-upload", GRPC_STATUS_OK, &st);
    }
    free(zero);
    free(bad);
    free(w);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return g_failures ? 1 : 0;
  }

  if (strcmp(mode, "quant-bad") == 0) {
    rc = run_quant_bad(t, &p);
    free(zero);
    free(bad);
    free(w);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return rc;
  }

  if (strcmp(mode, "die-mid-upload") == 0) {
    p.send_bytes = total / 2;
    p.die = 1;
    upload(&p, &st); /* does not return */
  }
  if (strcmp(mode, "hold-upload") == 0) p.hold_ms = g_hold_ms;
  if (strcmp(mode, "trickle-upload") == 0) {
    p.trickle_ms = g_hold_ms;
    upload_retrying(&p, &st); /* retried while told to (an aggregator that has not seen the round yet) */
    report("trickle", GRPC_STATUS_DEADLINE_EXCEEDED, &st);
    free(zero);
    free(bad);
    free(w);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return g_failures ? 1 : 0;
  }
  if (wait_file(g_upload_after)) return 1;
  if (strncmp(mode, "resume", 6) == 0) {
    run_resume(mode, p, &st);
    free(zero);
    free(bad);
    free(w);
    protobuf_c_message_free_unpacked(&r->base, NULL);
    return g_failures ? 1 : 0;
  }
  if (strcmp(mode, "rejections") == 0) {
    upload_plan q = p;
    q.round = t->round + 1000;
    upload(&q, &st);
    report("wrong-round", GRPC_STATUS_FAILED_PRECONDITION, &st);

    q = p;
    q.version = t->model_version + 7;
    upload(&q, &st);
    report("wrong-version", GRPC_STATUS_FAILED_PRECONDITION, &st);

    fc_model_spec wrong = spec;
    wrong.t[0].shape[0] += 1;
    q = p;
    q.spec = &wrong;
    upload(&q, &st);
    report("wrong-shape", GRPC_STATUS_INVALID_ARGUMENT, &st);

    memcpy(bad, zero, total);
    bad[n / 2] = NAN;
    fc_sha256(bad, total, sha_bad);
    q = p;
    q.payload = bad;
    q.sha = sha_bad;
    upload(&q, &st);
    report("nan", GRPC_STATUS_INVALID_ARGUMENT, &st);

    bad[n / 2] = INFINITY;
    fc_sha256(bad, total, sha_bad);
    upload(&q, &st);
    report("inf", GRPC_STATUS_INVALID_ARGUMENT, &st);

    if (t->clip_norm > 0) {
      for (size_t i = 0; i < n; i++) bad[i] = 0;
      bad[0] = t->clip_norm * 10.0f;
      fc_sha256(bad, total, sha_bad);
      upload(&q, &st);
      report("over-clip-norm", GRPC_STATUS_INVALID_ARGUMENT, &st);
    }

    q = p;
    uint8_t wrong_sha[FC_SHA256_LEN];
    memcpy(wrong_sha, sha_zero, sizeof wrong_sha);
    wrong_sha[0] ^= 0xff;
    q.sha = wrong_sha;
    upload(&q, &st);
    report("hash-mismatch", GRPC_STATUS_DATA_LOSS, &st);

    q = p;
    q.send_bytes = g_chunk; /* one chunk, then close */
    upload(&q, &st);
    report("ends-early", GRPC_STATUS_INVALID_ARGUMENT, &st);

    q = p;
    uint32_t saved = g_chunk;
    g_chunk = 16; /* a flood of 16-byte chunks */
    upload(&q, &st);
    g_chunk = saved;
    report("tiny-chunks", GRPC_STATUS_INVALID_ARGUMENT, &st);

    q = p;
    q.oversize = (5u << 20);
    upload(&q, &st);
    report("oversize-message", GRPC_STATUS_RESOURCE_EXHAUSTED, &st);

    q = p;
    q.examples = 0;
    upload(&q, &st);
    report("zero-examples", GRPC_STATUS_INVALID_ARGUMENT, &st);

    /* A name that would forge a log line and colour the operator's terminal,
     * with 0 dims (the check that quoted the name before checking it). */
    fc_model_spec hostile = spec;
    snprintf(hostile.t[0].name, sizeof hostile.t[0].name, "%s",
             "w\n2026-01-01T00:00:00.000Z INFO  admin: forged line\x1b[31m");
    hostile.t[0].ndim = 0;
    q = p;
    q.spec = &hostile;
    upload(&q, &st);
    report("hostile-name", GRPC_STATUS_INVALID_ARGUMENT, &st);
  }
  t0 = fc_now_ms();
  upload_retrying(&p, &st);
  printf("{\"step\":\"upload-time\",\"ms\":%llu}\n", (unsigned long long)(fc_now_ms() - t0));
  report("good-upload", GRPC_STATUS_OK, &st);
  if (strcmp(mode, "rejections") == 0) {
    upload(&p, &st);
    report("duplicate", GRPC_STATUS_ALREADY_EXISTS, &st);
  }
  free(zero);
  free(bad);
  free(w);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return g_failures ? 1 : 0;
}

/* One flood call of `method`; its status in st. */
static void flood_call(const char *method, fc_status *st) {
  static const float payload[10];
  static const uint8_t sha[FC_SHA256_LEN];
  static const fc_model_spec spec = {1, {{"w", FC_DTYPE_F32, 1, {10}}}};
  ProtobufCMessage *m = NULL;
  memset(st, 0, sizeof *st);
  if (strstr(method, "UploadUpdate")) {
    upload_plan p = {&spec, payload, sizeof payload, sha, 1, 0, 1, 0.5, 0, 0, 0, 0, 0, 0, 0, 0};
    upload(&p, st);
  } else if (strstr(method, "SecAggPoll")) {
    Fedc__V1__SecAggPollRequest req = FEDC__V1__SEC_AGG_POLL_REQUEST__INIT;
    req.round = 1;
    fc_call_unary(g_ch, method, &req.base, &fedc__v1__sec_agg_poll_response__descriptor, &m, 10000, st);
  } else if (strstr(method, "ReportEval")) {
    Fedc__V1__EvalReport req = FEDC__V1__EVAL_REPORT__INIT;
    req.round = (1ull << 63) | 1; /* an evaluation id (FC_EVAL_ID_BIT) */
    req.examples = 10;
    fc_call_unary(g_ch, method, &req.base, &fedc__v1__eval_report_response__descriptor, &m, 10000, st);
  } else if (strstr(method, "SecAggSubmit")) {
    Fedc__V1__SecAggSubmitRequest req = FEDC__V1__SEC_AGG_SUBMIT_REQUEST__INIT;
    req.round = 1;
    fc_call_unary(g_ch, method, &req.base, &fedc__v1__sec_agg_submit_response__descriptor, &m, 10000, st);
  } else {
    Fedc__V1__FetchModelRequest req = FEDC__V1__FETCH_MODEL_REQUEST__INIT;
    fc_ccall *call = NULL;
    if (fc_ccall_start(g_ch, method, FC_RPC_SERVER_STREAM, &req.base, 10000, &call, st) == FEDC_OK) {
      while (fc_ccall_recv(call, &fedc__v1__tensor_stream_msg__descriptor, &m, st) == 1) {
        protobuf_c_message_free_unpacked(m, NULL);
        m = NULL;
      }
    }
    fc_ccall_destroy(call);
  }
  if (m) protobuf_c_message_free_unpacked(m, NULL);
}

static int run_flood(int count) {
  static const char *const methods[] = {"/fedc.v1.Coordinator/UploadUpdate", "/fedc.v1.Coordinator/SecAggPoll",
                                        "/fedc.v1.Coordinator/SecAggSubmit", "/fedc.v1.Coordinator/FetchModel",
                                        "/fedc.v1.Coordinator/ReportEval"};
  for (size_t k = 0; k < sizeof methods / sizeof *methods; k++) {
    int limited = 0, answered = 0, failed = 0;
    uint64_t t0 = fc_now_ms();
    for (int i = 0; i < count; i++) {
      fc_status st;
      flood_call(methods[k], &st);
      if (st.code == GRPC_STATUS_RESOURCE_EXHAUSTED && st.retry_after_ms > 0) limited++;
      else if (st.code == GRPC_STATUS_UNAVAILABLE || st.code == GRPC_STATUS_DEADLINE_EXCEEDED) failed++;
      else answered++;
    }
    printf("{\"step\":\"flood\",\"method\":\"%s\",\"calls\":%d,\"limited\":%d,\"answered\":%d,\"failed\":%d,"
           "\"seconds\":%.3f}\n",
           methods[k], count, limited, answered, failed, (double)(fc_now_ms() - t0) / 1000.0);
    fflush(stdout);
    if (failed) g_failures++;
  }
  return g_failures ? 1 : 0;
}

int main(int argc, char **argv) {
  const char *addr = NULL, *pki = NULL, *name = NULL, *role = "client", *mode = "good", *method = NULL;
  const char *ca = NULL, *cert = NULL, *key = NULL, *proto = NULL, *other = "a"; /* secagg-bad: someone else's certificate */
  int want = 0, count = 500, opt;
  static const struct option lo[] = {{"coordinator", 1, 0, 'a'}, {"pki", 1, 0, 'p'},    {"name", 1, 0, 'n'},
                                     {"role", 1, 0, 'r'},        {"mode", 1, 0, 'm'},   {"method", 1, 0, 'M'},
                                     {"want", 1, 0, 'w'},        {"ca", 1, 0, 'C'},     {"cert", 1, 0, 'c'},
                                     {"key", 1, 0, 'k'},         {"chunk", 1, 0, 'b'},  {"protocol", 1, 0, 'P'},
                                     {"other", 1, 0, 'O'},       {"count", 1, 0, 'N'},  {"hold-ms", 1, 0, 'H'},
                                     {"upload-after", 1, 0, 'U'}, {"resume-after", 1, 0, 'R'}, {0, 0, 0, 0}};
  while ((opt = getopt_long(argc, argv, "", lo, NULL)) != -1) {
    switch (opt) {
    case 'a': addr = optarg; break;
    case 'p': pki = optarg; break;
    case 'n': name = optarg; break;
    case 'r': role = optarg; break;
    case 'm': mode = optarg; break;
    case 'M': method = optarg; break;
    case 'w': want = atoi(optarg); break;
    case 'C': ca = optarg; break;
    case 'c': cert = optarg; break;
    case 'k': key = optarg; break;
    case 'b': g_chunk = (uint32_t)atoi(optarg); break;
    case 'P': proto = optarg; break;
    case 'O': other = optarg; break;
    case 'N': count = atoi(optarg); break;
    case 'H': g_hold_ms = atoi(optarg); break;
    case 'U': g_upload_after = optarg; break;
    case 'R': g_resume_after = optarg; break;
    default: return 2;
    }
  }
  if (!addr || !pki || !name) {
    fprintf(stderr, "usage: fedc_probe --coordinator ADDR --pki DIR --name N [--role R] [--mode M]\n");
    return 2;
  }
  char cap[1024], certp[1024], keyp[1024], err[400];
  snprintf(cap, sizeof cap, "%s/ca.crt", pki);
  snprintf(certp, sizeof certp, "%s/%s-%s.crt", pki, role, name);
  snprintf(keyp, sizeof keyp, "%s/%s-%s.key", pki, role, name);
  fc_transport_init();
  fc_channel_opts co;
  fc_channel_opts_init(&co);
  co.target = addr;
  co.tls.ca = ca ? ca : cap;
  co.tls.cert = cert ? cert : certp;
  co.tls.key = key ? key : keyp;
  co.protocol_version = proto;
  g_co = co;
  int rc = fc_channel_create(&co, &g_ch, err, sizeof err);
  if (rc != FEDC_OK) {
    printf("{\"step\":\"channel\",\"err\":%d,\"detail\":\"%s\"}\n", rc, err);
    fc_transport_shutdown();
    return 3;
  }
  if (strcmp(mode, "call") == 0 && method) {
    /* All small requests are empty messages of some type: an empty
     * StatusRequest encodes to zero bytes and decodes as any of them. */
    Fedc__V1__StatusRequest req = FEDC__V1__STATUS_REQUEST__INIT;
    ProtobufCMessage *m = NULL;
    fc_status st;
    const ProtobufCMessageDescriptor *rd = strstr(method, "/CheckIn") ? &fedc__v1__check_in_response__descriptor
                                                                        : &fedc__v1__status_response__descriptor;
    uint64_t t0 = fc_now_ms();
    rc = fc_call_unary(g_ch, method, &req.base, rd, &m, 10000, &st);
    if (m && rd == &fedc__v1__check_in_response__descriptor) { /* what a (held) check-in was answered */
      const Fedc__V1__CheckInResponse *ci = (const Fedc__V1__CheckInResponse *)m;
      printf("{\"step\":\"checkin\",\"action\":%d,\"retry_after_ms\":%u,\"ms\":%llu}\n", (int)ci->action,
             ci->retry_after_ms, (unsigned long long)(fc_now_ms() - t0));
    }
    if (m) protobuf_c_message_free_unpacked(m, NULL);
    report(method, want, &st);
    rc = g_failures ? 1 : 0;
  } else if (strcmp(mode, "bad-device") == 0) {
    /* Eligibility (1.8): a device state no client of ours sends (a battery
     * of 150%) is refused INVALID_ARGUMENT; then a sane one is answered (OK:
     * WAIT, or not eligible). */
    Fedc__V1__CheckInRequest req = FEDC__V1__CHECK_IN_REQUEST__INIT;
    Fedc__V1__DeviceState dev = FEDC__V1__DEVICE_STATE__INIT;
    dev.battery_percent = 150;
    req.device = &dev;
    fc_status st;
    for (int i = 0; i < 2; i++) {
      ProtobufCMessage *m = NULL;
      memset(&st, 0, sizeof st);
      fc_call_unary(g_ch, "/fedc.v1.Coordinator/CheckIn", &req.base, &fedc__v1__check_in_response__descriptor, &m,
                    10000, &st);
      if (m) protobuf_c_message_free_unpacked(m, NULL);
      report(i ? "checkin" : "bad-battery", i ? GRPC_STATUS_OK : GRPC_STATUS_INVALID_ARGUMENT, &st);
      dev.battery_percent = 80; /* not charging: never selected, whatever the policy asks */
    }
    rc = g_failures ? 1 : 0;
  } else if (strcmp(mode, "eval-poison") == 0) {
    rc = run_eval_poison();
  } else if (strcmp(mode, "flood") == 0) {
    rc = run_flood(count);
  } else {
    rc = run_upload_modes(mode, pki, other);
  }
  fc_channel_destroy(g_up);
  fc_channel_destroy(g_ch);
  fc_transport_shutdown();
  return rc;
}
