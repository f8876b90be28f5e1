/*
 * audit_anchor.h - the audit log checked against the signed manifests
 * (security review, finding 7: the chain alone is unkeyed, so whoever can
 * write the state directory could drop 510 records, re-chain the other 5 and
 * get "chain intact").
 *
 * Each model version's signed manifest (common/manifest.h, format 2) names
 * the audit log's record count S and head hash H when it was signed, and the
 * `model` record written right after names the manifest's SHA-256 (so does a
 * `manifest` record when a version is signed again at start). Checked
 * against those, without the signing key:
 *   - every manifest's anchor: the log has record S and its hash is H;
 *   - every manifest digest the log names for version N: models/vN.manifest
 *     is there and is one of them.
 * A rewrite of any record up to the newest anchor fails the first check.
 * What stays unprotected: the records after the newest anchor (the newest
 * version's own `model` record, what happened since, `stop`): no signature
 * covers them yet. Anyone with the signing key can sign anything.
 */
#ifndef FEDC_COORD_AUDIT_ANCHOR_H
#define FEDC_COORD_AUDIT_ANCHOR_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/audit.h"

/* One signed manifest of the state directory. */
typedef struct fc_audit_anchor {
  uint64_t version;
  int has_anchor;        /* format 2 with "audit <seq> <hash>" (format 1, "audit -": 0) */
  uint64_t seq;          /* records 1..seq are anchored (0: the log was empty) */
  char head[65];         /* hash of record seq (hex) */
  char manifest_sha[65]; /* SHA-256 of the manifest text (hex) */
  int recorded, matched; /* set by the check: the log names digests for the version; one is this one */
} fc_audit_anchor;

typedef struct fc_anchor_report {
  fc_audit_report chain; /* the chain itself (fc_audit_walk) */
  uint64_t anchored;     /* records 1..anchored are covered by a signed manifest */
  uint64_t anchored_by;  /* ... the manifest of this version (if anchored) */
  size_t anchors;        /* manifests with an anchor */
  char problem[400];     /* the first disagreement with a manifest, "" if none */
} fc_anchor_report;

/* I/O-free: walk the log in buf and check the n manifests in a (reordered
 * by version; the recorded/matched flags are set). FEDC_OK if the chain is
 * intact and agrees with every manifest; else FEDC_ERR_INVALID with
 * r->chain.problem (broken chain) or r->problem (a rewrite the manifests
 * show), FEDC_ERR_NOMEM. */
int fc_audit_check_anchors(const char *buf, size_t len, fc_audit_anchor *a, size_t n, fc_anchor_report *r);
/* The same over a buffer or the log on disk (fc_audit_src; FEDC_ERR_IO with
 * log->err if it cannot be read). */
int fc_audit_check_anchors_src(fc_audit_src *log, fc_audit_anchor *a, size_t n, fc_anchor_report *r);

/* The signed manifests of state_dir (models/vN.manifest), each verified
 * against the CA in ca_pem (signer of the CA's federation; signer dates are
 * not checked: a manifest is history). *out is malloc'd (caller frees; NULL
 * if none). FEDC_ERR_SIGNATURE naming the file if one does not verify or
 * names another version, FEDC_ERR_IO if models/ cannot be read. */
int fc_audit_load_anchors(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_anchor **out, size_t *n,
                          char *err, size_t errlen);

/* The manifests the log in buf names (model and manifest records) that the
 * n in *anchors lack, loaded by name (verified as fc_audit_load_anchors
 * does) and added to *anchors (realloc'd; *n grows); one named but missing
 * is left for fc_audit_check_anchors to report. Reorders *anchors. Errors
 * as fc_audit_load_anchors; what was added stays in *anchors. */
int fc_audit_add_named_anchors(const char *state_dir, const char *ca_pem, size_t ca_len, const char *log, size_t len,
                               fc_audit_anchor **anchors, size_t *n, char *err, size_t errlen);
int fc_audit_add_named_anchors_src(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_src *log,
                                   fc_audit_anchor **anchors, size_t *n, char *err, size_t errlen);

/* What `fedc audit verify --pki` checks, read so that the check holds on a
 * live coordinator's state too (one that goes on appending records and
 * signing versions while we read). The writer's order is: records appended
 * (one write(2) each), then a manifest signed naming them and written, then
 * the record naming the manifest's digest. So the manifests are listed
 * first and the log read after: every listed manifest's anchored records
 * are in what we read (the log read first, a version signed in between
 * anchored records past its end: "REWRITTEN" on an intact log). Then the
 * manifests the log names that the listing missed (signed meanwhile, and
 * announced before we read the log) are loaded by name
 * (fc_audit_add_named_anchors): they were written before their record, and
 * anchor records before it. Manifests signed after the log was read are not
 * checked: they anchor nothing we read.
 * The log is streamed (fc_audit_src), never held whole. On FEDC_OK:
 * *anchors as fc_audit_load_anchors (malloc'd), and *log the open log
 * limited to what was read, for fc_audit_check_anchors_src (the caller
 * closes log->fd); errors as fc_audit_load_anchors and fc_audit_open_log. */
int fc_audit_read_anchored(const char *state_dir, const char *ca_pem, size_t ca_len, fc_audit_anchor **anchors,
                           size_t *n, fc_audit_src *log, char *err, size_t errlen);

#endif
