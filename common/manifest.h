/*
 * manifest.h - the signed manifest of a model version.
 *
 * The coordinator writes one manifest per model version, signs it with its
 * model-signing key (role signer, crypto/signed.h) before the version is
 * published, and keeps it beside the model in the state directory. Clients
 * check it before they train; `fedc model verify` checks a downloaded file.
 * The manifest is text, one field per line, in exactly this order:
 *
 *   fedc-model-manifest 2          (or 1: written before the audit line)
 *   federation <name>
 *   version <n>
 *   round <n>                      round that produced it (0: initial model)
 *   parent <n>|-                   version it was computed from
 *   parent-sha256 <64 hex>|-
 *   sha256 <64 hex>                SHA-256 of the float32 payload
 *   bytes <n>                      payload size
 *   optimizer-sha256 <64 hex>|-    the server optimizer state saved with the
 *                                  version (the coordinator checks it at start)
 *   audit <seq> <64 hex>|-         format 2 only: the coordinator's audit log
 *                                  when it signed: record count and the last
 *                                  record's hash (- : no audit log)
 *   created-unix <n>
 *   tensors <n>
 *   tensor <name> f32 <d0>[,<d1>...]   n lines, in payload order
 *
 * Parsing is strict (decimal without sign or leading zeros, lower-case hex, one
 * space, LF endings, nothing after the last line), so one manifest has one
 * text. What a model must match (fc_manifest_check_model): federation,
 * version, SHA-256, size and tensor specs.
 *
 * Format 2 adds the audit line (security review, finding 7): each signed
 * version anchors the hash-chained audit log up to that record, so a log
 * rewritten before the last signature no longer verifies against the
 * manifests (`fedc audit verify --pki`). The format is versioned, not an
 * optional line in format 1: a manifest signed in format 1 keeps its exact
 * text and still verifies (old versions, old state directories, a manifest
 * signed again because its signer expired), within one format every line
 * is mandatory (the canonical text stays one per manifest), and a verifier
 * that knows only format 1 (protocol 1.4) fails at line 1 naming the format
 * instead of somewhere in the middle. The parser reads both; new manifests
 * are written in format 2.
 */
#ifndef FEDC_COMMON_MANIFEST_H
#define FEDC_COMMON_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "common/tensor.h"
#include "crypto/pki.h"
#include "crypto/sha256.h"
#include "crypto/signed.h"

typedef struct fc_manifest {
  char federation[FC_PKI_FEDERATION_MAX];
  uint64_t version, round;
  int has_parent;
  uint64_t parent;
  uint8_t parent_sha[FC_SHA256_LEN];
  uint8_t sha[FC_SHA256_LEN];
  uint64_t bytes;
  int has_opt;
  uint8_t opt_sha[FC_SHA256_LEN];
  uint64_t created_unix;
  fc_model_spec spec;
  int format; /* 1 or 2 (0 when filled by hand: encoded as 2, the current one) */
  int has_audit; /* format 2: the audit line names a record (else "audit -") */
  uint64_t audit_seq; /* records in the audit log when signed (0: none yet) */
  uint8_t audit_head[FC_SHA256_LEN]; /* hash of record audit_seq (zeros if 0) */
} fc_manifest;

#define FC_MANIFEST_FORMAT 2 /* what fc_manifest_encode writes for format 0 */

/* Text of m in a malloc'd NUL-terminated buffer (*len excludes the NUL). */
int fc_manifest_encode(const fc_manifest *m, char **out, size_t *len);
/* Strict parse; FEDC_ERR_FORMAT naming the line. */
int fc_manifest_parse(const void *text, size_t len, fc_manifest *out, char *err, size_t errlen);

/*
 * Everything a client checks about a signed manifest before it trains:
 * the signature by a signer certificate of the federation CA in ca_pem
 * (fc_signed_verify), the manifest parses, its federation is the signer's
 * and, if federation is non-NULL, that one too (ignore_time: the signer's
 * validity dates are not checked). *out gets the manifest.
 * FEDC_ERR_SIGNATURE (or CERT_EXPIRED) with the reason in err.
 */
int fc_manifest_verify(const char *ca_pem, size_t ca_len, const fc_signed *s, const char *federation,
                       int ignore_time, fc_manifest *out, char *err, size_t errlen);

/* The model in hand is the one the manifest describes: version (if
 * check_version), SHA-256, size and specs. FEDC_ERR_SIGNATURE naming the
 * first difference. */
int fc_manifest_check_model(const fc_manifest *m, int check_version, uint64_t version,
                            const uint8_t sha[FC_SHA256_LEN], const fc_model_spec *spec, uint64_t bytes, char *err,
                            size_t errlen);

/* The signed file form (crypto/signed.h) on disk, one piece for the
 * coordinator's models/vN.manifest and the CLI's FILE.manifest: written
 * atomically (mode 0644); read under the file form's size limit, errors
 * naming the file ("cannot read manifest PATH: ..." with the fedc_err of
 * fc_read_file, e.g. NOT_FOUND, or "PATH: ..." for a malformed one). */
int fc_signed_file_write(const char *path, const fc_signed *s, char *err, size_t errlen);
int fc_signed_file_read(const char *path, fc_signed *s, char *err, size_t errlen);

/*
 * A client's whole decision about a model it received (client.h,
 * allow_unsigned_models): s absent (NULL msg) is refused unless
 * allow_unsigned; otherwise fc_manifest_verify, fc_manifest_check_model for
 * `version`, and no version below the newest accepted before, nor another
 * model under that same version (kept in t across models; have_newest 0 at
 * first) - a replayed old manifest or a second one for a version. On
 * success the newest is updated. The memory is the process's: a restarted
 * client starts over (client.h). FEDC_ERR_SIGNATURE with a
 * sentence in err otherwise.
 */
typedef struct fc_manifest_trust {
  const char *ca_pem; /* NULL: nothing to verify with (refused unless allow_unsigned) */
  size_t ca_len;
  const char *federation; /* ours; NULL or "" = the signer's */
  int allow_unsigned;
  /* Optional (borrowed): signer certificates verified against ca_pem before
   * (crypto/cert_cache.h), so the same signer is not parsed and chain-checked
   * again for every model. NULL, or a cache of another CA: not used. */
  struct fc_cert_cache *certs;
  int have_newest;
  uint64_t newest;
  uint8_t newest_sha[FC_SHA256_LEN];
} fc_manifest_trust;
int fc_manifest_accept(fc_manifest_trust *t, const fc_signed *s, uint64_t version, const uint8_t sha[FC_SHA256_LEN],
                       const fc_model_spec *spec, uint64_t bytes, char *err, size_t errlen);

#endif
