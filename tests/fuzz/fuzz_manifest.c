/*
 * fuzz_manifest.c - what a coordinator (or a file beside a downloaded model)
 * can hand a client's manifest check: the signed file form
 * (fc_signed_decode) and the manifest text (fc_manifest_parse). Properties:
 * no crash; a decoded file encodes and decodes to the same three strings; a
 * parsed manifest encodes to exactly its input (the canonical form).
 */
#include <stdlib.h>
#include <string.h>

#include "common/manifest.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[256];
  fc_signed s;
  if (fc_signed_decode((const char *)data, size, &s, err, sizeof err) == 0) {
    char *text = NULL;
    size_t len = 0;
    fc_signed back;
    if (fc_signed_encode(&s, &text, &len) != 0 || fc_signed_decode(text, len, &back, err, sizeof err) != 0) abort();
    if (back.msg_len != s.msg_len || memcmp(back.msg, s.msg, s.msg_len) != 0 || back.sig_len != s.sig_len ||
        memcmp(back.sig, s.sig, s.sig_len) != 0 || back.cert_len != s.cert_len || strcmp(back.cert, s.cert) != 0)
      abort();
    fc_signed_free(&back);
    free(text);
    fc_signed_free(&s);
  }
  fc_manifest m;
  if (fc_manifest_parse(data, size, &m, err, sizeof err) == 0) {
    char *text = NULL;
    size_t len = 0;
    if (fc_manifest_encode(&m, &text, &len) != 0 || len != size || memcmp(text, data, size) != 0) abort();
    free(text);
  }
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  /* Format 2 (with the audit line); format 1 is one byte and one line away. */
  static const char s[] = "fedc-model-manifest 2\nfederation fed\nversion 5\nround 5\nparent 4\n"
                          "parent-sha256 abababababababababababababababababababababababababababababababab\n"
                          "sha256 0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef\nbytes 24\n"
                          "optimizer-sha256 -\naudit 17 cdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcdcd\n"
                          "created-unix 1700000000\ntensors 1\ntensor fc1.weight f32 2,3\n";
  *size = sizeof s - 1;
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
