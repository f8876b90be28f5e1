/*
 * fuzz_spiffe.c - the SPIFFE ID parser (crypto/pki.c), fed any string: it
 * decides every caller's role, so it must never read out of bounds or accept
 * a malformed ID.
 */
#include <stdlib.h>
#include <string.h>

#include "crypto/pki.h"
#include "fuzz.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) return 0;
  memcpy(s, data, size);
  s[size] = 0;
  char fed[64], role[32], name[65];
  if (fc_pki_identity_from_spiffe(s, fed, sizeof fed, role, sizeof role, name, sizeof name) == 0) {
    /* Accepted IDs must be exactly what they say. */
    if (strncmp(s, "spiffe://", 9) != 0 || !fc_pki_role_ok(role) || !fc_pki_name_ok(name)) abort();
  }
  free(s);
  return 0;
}

void fuzz_seed(uint8_t **data, size_t *size) {
  const char *s = "spiffe://fed.example/client/device-001";
  *size = strlen(s);
  *data = malloc(*size);
  memcpy(*data, s, *size);
}
