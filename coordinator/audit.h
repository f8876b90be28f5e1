/*
 * audit.h - the coordinator's audit log: append-only, hash-chained JSON
 * lines in STATE/audit.log, one record per event an operator may have to
 * prove afterwards (who first connected with which certificate, what admins
 * did, which updates were accepted or refused and why, which model versions
 * were published from which parent).
 *
 * A record is one line:
 *   {"seq":N,"ts_ms":T,"kind":"...",<fields>,"prev":"<hex>","hash":"<hex>"}
 * hash = SHA-256 of the line's bytes before ',"hash":' (everything but the
 * hash), prev = the previous record's hash (64 zeros for the first), seq
 * counts from 1. jansson escapes every '"' inside a string, so ',"hash":"'
 * can only be the real key, and the last occurrence is it. Editing,
 * removing or reordering a record breaks the chain at that record; cutting
 * whole records off the end does not (anchor the head hash elsewhere:
 * `fedc audit verify` prints it).
 *
 * Written before the action it records takes effect (the coordinator calls
 * fc_audit_append first), flushed to the kernel at once (one write(2) per
 * record, O_APPEND) and synced to disk with fc_audit_sync once per round.
 * Thread-safe.
 */
#ifndef FEDC_COORD_AUDIT_H
#define FEDC_COORD_AUDIT_H

#include <jansson.h>
#include <stddef.h>
#include <stdint.h>

#define FC_AUDIT_FILE "audit.log"
#define FC_AUDIT_MAX_LINE 4096

typedef struct fc_audit fc_audit;

/* Open (create) STATE/audit.log and check the chain already there. An
 * incomplete last line (a crash mid-write: the action it described never
 * took effect) is cut off with a warning. A broken chain refuses to start,
 * naming the record: FEDC_ERR_INVALID with one line in why. */
int fc_audit_open(const char *state_dir, fc_audit **out, char *why, size_t whylen);
/* Coordinator replicas sharing a state directory (coord_ha.c): one writer,
 * the leader. The lock above would let a frozen old leader keep its
 * successor out, so a replica opens the log without it, and may_write(arg)
 * is asked before every record: 0 (we no longer lead, by our own clock)
 * writes nothing and the append returns FEDC_ERR_STOPPED. */
int fc_audit_open_replica(const char *state_dir, int (*may_write)(void *), void *arg, fc_audit **out, char *why,
                          size_t whylen);
void fc_audit_close(fc_audit *a);
/* Append a record of `kind` with the fields of `fields` (an object; its
 * reference is stolen; keys seq, ts_ms, kind, prev and hash are reserved).
 * FEDC_OK or FEDC_ERR_IO. */
int fc_audit_append(fc_audit *a, const char *kind, json_t *fields);
/* First contact of a certificate: appended only the first time this
 * fingerprint is seen (across restarts: the log is the memory). */
int fc_audit_contact(fc_audit *a, const char *name, const char *role, const uint8_t cert_sha256[32],
                     const char *addr);
/* fsync the log (once per round, and at shutdown). */
int fc_audit_sync(fc_audit *a);
/* Records so far and the head hash (hex). */
uint64_t fc_audit_head(fc_audit *a, char hex[65]);
/* The log's size on disk now (bytes; 0 for NULL). */
uint64_t fc_audit_bytes(fc_audit *a);
/* STATE/audit.log read whole, to its end as it is now (a live log grows);
 * a last line without its newline is read on, on the same open file and
 * only what was appended, for up to 5 x 50 ms. *buf is malloc'd (caller
 * frees; NULL on error). FEDC_ERR_NOT_FOUND, FEDC_ERR_IO or FEDC_ERR_NOMEM
 * with one line in err. */
int fc_audit_read_log(const char *state_dir, char **buf, size_t *len, char *err, size_t errlen);

/* ---- verification (I/O-free: over a buffer) ---- */
typedef struct fc_audit_report {
  uint64_t records;   /* valid records before the first problem */
  size_t valid_bytes; /* the bytes those records take (the chain's intact prefix) */
  char head[65];      /* hash of the last valid record ("" if none) */
  uint64_t bad_line;  /* 1-based line of the first problem, 0 = chain intact */
  char problem[256];  /* what is wrong there */
} fc_audit_report;
/* FEDC_OK if every line chains, else FEDC_ERR_INVALID with the first problem
 * (a line that is not a record, an edited record, a missing or reordered
 * one, an incomplete last line). */
int fc_audit_verify(const char *buf, size_t len, fc_audit_report *r);
/* fc_audit_verify that also hands each valid record, in order, to `each`
 * (its line of n bytes without the newline; rec is freed after the call). A
 * non-zero return from `each` stops the walk and is returned. */
typedef int (*fc_audit_each)(json_t *rec, const char *line, size_t n, void *ctx);
int fc_audit_walk(const char *buf, size_t len, fc_audit_report *r, fc_audit_each each, void *ctx);
/* Keys every record has, which fields given to fc_audit_append never set. */
int fc_audit_reserved_key(const char *key);
/* 1 if kind is one the coordinator writes; the list, comma-separated, in out. */
int fc_audit_kind_known(const char *kind);
char *fc_audit_kind_list(char *out, size_t cap);

#endif
