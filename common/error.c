/*
 * error.c - fedc_strerror(): the one table of error descriptions.
 */
#include "fedc/error.h"

FEDC_API const char *fedc_strerror(int err) {
  switch ((fedc_err)err) {
  case FEDC_OK: return "ok";
  case FEDC_ERR_INVALID: return "invalid argument";
  case FEDC_ERR_NOMEM: return "out of memory";
  case FEDC_ERR_IO: return "I/O error";
  case FEDC_ERR_TLS: return "TLS failure";
  case FEDC_ERR_UNAVAILABLE: return "coordinator unavailable";
  case FEDC_ERR_PERMISSION: return "permission denied";
  case FEDC_ERR_PROTOCOL: return "protocol error";
  case FEDC_ERR_VERSION: return "incompatible protocol version";
  case FEDC_ERR_TOO_LARGE: return "too large";
  case FEDC_ERR_HASH: return "SHA-256 mismatch";
  case FEDC_ERR_TIMEOUT: return "deadline exceeded";
  case FEDC_ERR_REJECTED: return "rejected by peer";
  case FEDC_ERR_STOPPED: return "stopped";
  case FEDC_ERR_NOT_FOUND: return "not found";
  case FEDC_ERR_EXISTS: return "already exists";
  case FEDC_ERR_CRYPTO: return "cryptographic library error";
  case FEDC_ERR_TRAINER: return "trainer failed";
  case FEDC_ERR_INTERNAL: return "internal error";
  case FEDC_ERR_CERT_EXPIRED: return "certificate expired or not yet valid";
  case FEDC_ERR_SHAPE: return "shape or dtype mismatch";
  case FEDC_ERR_NONFINITE: return "NaN or Inf value";
  case FEDC_ERR_NORM: return "L2 norm above clip norm";
  case FEDC_ERR_FORMAT: return "bad format";
  case FEDC_ERR_SIGNATURE: return "model signature missing or invalid";
  }
  return "unknown error";
}
