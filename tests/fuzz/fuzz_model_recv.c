/*
 * fuzz_model_recv.c - what a coordinator sends a client that fetches the
 * model (client/runtime.c fetch_model): a FetchModel stream of
 * TensorStreamMsg frames decoded by protobuf-c, received by fc_stream_rx
 * (transport/tensor_stream.c: header, manifest, chunk framing, SHA-256),
 * then the signed manifest checked by fc_manifest_accept against the
 * federation CA (fixture_pki.h), the task's version and SHA-256 and the
 * newest version accepted before. Input: frames as [u16 length][bytes]
 * (fixture.h). The cap on the model is 1 MiB here (the client's default is
 * 1 GiB: the same code, with less to allocate per input).
 * Properties: no crash; an accepted stream's payload hashes to what the task
 * announced; an accepted model is the manifest's version and not older than
 * the one accepted before; the decision is the same with the runtime's cache
 * of verified signer certificates (kept across inputs, as the runtime keeps
 * it across models) as without.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common/manifest.h"
#include "crypto/cert_cache.h"
#include "crypto/sha256.h"
#include "fedc/error.h"
#include "fixture.h"
#include "fixture_pki.h"
#include "fuzz.h"
#include "transport/tensor_stream.h"

#define VERSION 5
#define NEWEST 4 /* accepted before this fetch */
#define CAP (1u << 20)

static const float payload[6] = {0.5f, -1, 2, 0.25f, 8, -3};
static uint8_t want_sha[FC_SHA256_LEN];
static int have_want, accepted; /* accepted: the last input's model was */
static fc_cert_cache *certs;     /* across inputs, as the client runtime's across models */

static fc_model_spec model_spec(void) {
  fc_model_spec s;
  memset(&s, 0, sizeof s);
  uint64_t w[2] = {2, 2}, b[1] = {2};
  fc_model_spec_add(&s, "fc1.weight", 2, w);
  fc_model_spec_add(&s, "fc1.bias", 1, b);
  return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!have_want) fc_sha256(payload, sizeof payload, want_sha), have_want = 1;
  accepted = 0;
  fc_stream_rx s;
  fc_stream_rx_init(&s, CAP, want_sha, 1);
  char err[400];
  fix_reader r = {data, size};
  const uint8_t *f;
  size_t n;
  int rc = FEDC_OK;
  while (rc == FEDC_OK && fix_next_frame(&r, &f, &n)) {
    Fedc__V1__TensorStreamMsg *m = fedc__v1__tensor_stream_msg__unpack(NULL, n, f);
    if (!m) {
      rc = FEDC_ERR_PROTOCOL; /* the transport refuses what does not decode */
      break;
    }
    rc = fc_stream_rx_msg(&s, m, err, sizeof err);
    fedc__v1__tensor_stream_msg__free_unpacked(m, NULL);
  }
  fc_model_spec spec;
  float *got = NULL;
  uint64_t total = 0;
  uint8_t sha[FC_SHA256_LEN], check[FC_SHA256_LEN];
  fc_signed man;
  memset(&man, 0, sizeof man);
  if (rc == FEDC_OK && fc_stream_rx_end(&s, &spec, &got, &total, sha, &man, err, sizeof err) == FEDC_OK) {
    fc_sha256(got, total, check);
    if (memcmp(check, sha, sizeof sha) != 0 || memcmp(sha, want_sha, sizeof sha) != 0 || total != 4 * fc_model_numel(&spec))
      abort();
    fc_manifest_trust t;
    memset(&t, 0, sizeof t);
    t.ca_pem = FIX_CA_PEM;
    t.ca_len = sizeof FIX_CA_PEM - 1;
    t.federation = "fuzz";
    t.have_newest = 1;
    t.newest = NEWEST;
    fc_manifest_trust tc = t;
    if (!certs && fc_cert_cache_create(t.ca_pem, t.ca_len, 4, &certs, err, sizeof err) != FEDC_OK) abort();
    tc.certs = certs;
    int plain = fc_manifest_accept(&t, &man, VERSION, sha, &spec, total, err, sizeof err);
    if (fc_manifest_accept(&tc, &man, VERSION, sha, &spec, total, err, sizeof err) != plain) abort();
    if (plain == FEDC_OK) {
      fc_manifest mf;
      if (fc_manifest_parse(man.msg, man.msg_len, &mf, err, sizeof err) != FEDC_OK || mf.version != VERSION ||
          t.newest != VERSION || memcmp(mf.sha, sha, sizeof sha) != 0)
        abort();
      accepted = 1;
    }
    fc_signed_free(&man);
    free(got);
  }
  fc_stream_rx_free(&s);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  fc_model_spec spec = model_spec();
  uint8_t sha[FC_SHA256_LEN];
  fc_sha256(payload, sizeof payload, sha);
  fc_manifest mf;
  memset(&mf, 0, sizeof mf);
  snprintf(mf.federation, sizeof mf.federation, "fuzz");
  mf.version = VERSION;
  mf.round = VERSION;
  mf.has_parent = 1;
  mf.parent = NEWEST;
  memset(mf.parent_sha, 0xab, sizeof mf.parent_sha);
  memcpy(mf.sha, sha, sizeof sha);
  mf.bytes = sizeof payload;
  mf.created_unix = 1700000000;
  mf.spec = spec;
  char *text = NULL, err[300];
  size_t len = 0;
  fc_signed sg;
  fix_rand_stream(1, 1); /* the same ECDSA signature every time */
  if (fc_manifest_encode(&mf, &text, &len) != FEDC_OK ||
      fc_signed_make(FIX_SIGNER_KEY_PEM, sizeof FIX_SIGNER_KEY_PEM - 1, FIX_SIGNER_CERT_PEM,
                     sizeof FIX_SIGNER_CERT_PEM - 1, text, len, &sg, err, sizeof err) != FEDC_OK)
    abort();
  free(text);
  fc_pb_header h;
  fc_pb_header_build(&h, &spec, sizeof payload, sha, 16);
  Fedc__V1__SignedManifest sm = FEDC__V1__SIGNED_MANIFEST__INIT;
  sm.manifest.data = sg.msg;
  sm.manifest.len = sg.msg_len;
  sm.signature.data = sg.sig;
  sm.signature.len = sg.sig_len;
  sm.signer_certificate = sg.cert;
  Fedc__V1__TensorStreamMsg first = FEDC__V1__TENSOR_STREAM_MSG__INIT;
  first.header = &h.h;
  first.manifest = &sm;
  *data = NULL;
  *size = 0;
  fix_put_msg(data, size, &first.base);
  for (size_t off = 0; off < sizeof payload; off += 16) {
    Fedc__V1__TensorChunk c = FEDC__V1__TENSOR_CHUNK__INIT;
    c.offset = off;
    c.data.data = (uint8_t *)payload + off;
    c.data.len = off + 16 <= sizeof payload ? 16 : sizeof payload - off;
    Fedc__V1__TensorStreamMsg m = FEDC__V1__TENSOR_STREAM_MSG__INIT;
    m.chunk = &c;
    fix_put_msg(data, size, &m.base);
  }
  fc_signed_free(&sg);
  /* The seed must be accepted, or the fuzzer would not start deep. */
  LLVMFuzzerTestOneInput(*data, *size);
  if (!accepted) abort();
}
