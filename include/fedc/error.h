/*
 * fedc/error.h - error codes shared by every fedc API.
 *
 * 0 is success. Numbers are never reused or renumbered: a code that stops
 * being produced stays reserved. fedc_strerror() never returns NULL.
 */
#ifndef FEDC_ERROR_H
#define FEDC_ERROR_H

#ifdef __cplusplus
extern "C" {
#endif

#if defined(_WIN32)
#define FEDC_API
#else
#define FEDC_API __attribute__((visibility("default")))
#endif

typedef enum fedc_err {
  FEDC_OK = 0,
  FEDC_ERR_INVALID = 1,       /* invalid argument or option */
  FEDC_ERR_NOMEM = 2,         /* out of memory */
  FEDC_ERR_IO = 3,            /* file or socket I/O failed */
  FEDC_ERR_TLS = 4,           /* TLS handshake or certificate problem */
  FEDC_ERR_UNAVAILABLE = 5,   /* coordinator unreachable */
  FEDC_ERR_PERMISSION = 6,    /* wrong role or not allowed */
  FEDC_ERR_PROTOCOL = 7,      /* malformed or unexpected message */
  FEDC_ERR_VERSION = 8,       /* incompatible protocol version */
  FEDC_ERR_TOO_LARGE = 9,     /* message or payload over a limit */
  FEDC_ERR_HASH = 10,         /* SHA-256 mismatch */
  FEDC_ERR_TIMEOUT = 11,      /* deadline exceeded */
  FEDC_ERR_REJECTED = 12,     /* the peer refused the request */
  FEDC_ERR_STOPPED = 13,      /* stopped on request */
  FEDC_ERR_NOT_FOUND = 14,    /* no such file, version, client... */
  FEDC_ERR_EXISTS = 15,       /* refusing to overwrite */
  FEDC_ERR_CRYPTO = 16,       /* OpenSSL failure */
  FEDC_ERR_TRAINER = 17,      /* the trainer callback reported failure */
  FEDC_ERR_INTERNAL = 18,     /* a bug: please report */
  FEDC_ERR_CERT_EXPIRED = 19, /* certificate expired or not yet valid */
  FEDC_ERR_SHAPE = 20,        /* tensor shape or dtype mismatch */
  FEDC_ERR_NONFINITE = 21,    /* NaN or Inf in a tensor */
  FEDC_ERR_NORM = 22,         /* update L2 norm above the clip norm */
  FEDC_ERR_FORMAT = 23,       /* bad file format (IDX, CSV, safetensors, config) */
  FEDC_ERR_SIGNATURE = 24,    /* model manifest unsigned, badly signed or not matching the model */
} fedc_err;

/* Static English description of an error code; never NULL. */
FEDC_API const char *fedc_strerror(int err);

#ifdef __cplusplus
}
#endif
#endif
