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
/* ---- verification (I/O-free: over a buffer) ---- */
typedef struct fc_audit_report {
  uint64_t records;     /* valid records before the first problem */
  uint64_t valid_bytes; /* the bytes those records take (the chain's intact prefix) */
  char head[65];        /* hash of the last valid record ("" if none) */
  uint64_t bad_line;    /* 1-based line of the first problem, 0 = chain intact */
  int torn;             /* the problem is a last line without its newline (a cut or torn write) */
  char problem[256];    /* what is wrong there */
} fc_audit_report;
/* FEDC_OK if every line chains, else FEDC_ERR_INVALID with the first problem
 * (a line that is not a record, an edited record, a missing or reordered
 * one, an incomplete last line). */
int fc_audit_verify(const char *buf, size_t len, fc_audit_report *r);
/* fc_audit_verify that also hands each valid record, in order, to `each`
 * (its line of n bytes without the newline; rec is freed after the call). A
 * non-zero return from `each` stops the walk and is returned. (Walking a
 * file, fc_audit_src.build may leave rec NULL.) */
typedef int (*fc_audit_each)(json_t *rec, const char *line, size_t n, void *ctx);
int fc_audit_walk(const char *buf, size_t len, fc_audit_report *r, fc_audit_each each, void *ctx);

/* ---- verification of the log on disk, streamed ---- */
/* Where a walk reads: a buffer (buf, len), or an open file (buf NULL: fd,
 * read with pread from offset 0 in pieces of 1 MiB, so memory does not grow
 * with the log: a long-lived coordinator's log reaches gigabytes). */
typedef struct fc_audit_src {
  const char *buf;
  size_t len;
  int fd;
  int from_fd;     /* set by FC_AUDIT_SRC_FD: read fd (one that is not open is an error, not an empty log) */
  uint64_t limit;  /* fd: stop at this byte (UINT64_MAX: read to the end as it is now; a live log grows) */
  int wait_torn;   /* fd, no limit: a last line without its newline is read again up to 5 times, 50 ms apart,
                      from where it starts, on the same file (a live writer's record, or a restarting
                      coordinator that cut a torn line off and writes over it: read as the log is now); the
                      walk then ends with that line (it does not chase the records appended meanwhile) */
  uint64_t extent; /* out: the bytes read, records and any torn tail (a second walk with it as its limit
                      reads what the first did) */
  char err[300];   /* out: why the file could not be read (the walk returns FEDC_ERR_IO) */
  const char *const *build; /* fd: NULL-terminated kinds whose records are built (jansson) and handed to `each`;
                               the others are checked by fc_audit_shape, which reads the chain's fields and
                               checks the line is JSON jansson accepts, or defers to jansson (audit_shape.h).
                               NULL: every record built */
  int each_unbuilt;       /* with build: `each` also gets the others, with rec NULL (seq and hash: the
                             report's records + 1 and the line's last 64 hex) */
} fc_audit_src;
#define FC_AUDIT_SRC_BUF(b, l) ((fc_audit_src){.buf = (b), .len = (l), .fd = -1})
#define FC_AUDIT_SRC_FD_LIMIT(f, lim) ((fc_audit_src){.fd = (f), .limit = (lim), .from_fd = 1})
#define FC_AUDIT_SRC_FD(f) FC_AUDIT_SRC_FD_LIMIT(f, UINT64_MAX)
/* fc_audit_walk over src: its result, or FEDC_ERR_IO (src->err) or
 * FEDC_ERR_NOMEM. A line longer than FC_AUDIT_MAX_LINE is not a record, nor
 * is a last line without its newline longer than that (a torn write is never
 * longer than the record it tore). */
int fc_audit_walk_src(fc_audit_src *src, fc_audit_report *r, fc_audit_each each, void *ctx);
/* Open STATE/audit.log to read: O_NOFOLLOW and O_NONBLOCK (a symlink or a
 * FIFO planted there is refused, not followed or waited on: the coordinator
 * writes it with O_NOFOLLOW), a regular file only. FEDC_ERR_NOT_FOUND or
 * FEDC_ERR_IO with one line in err. */
int fc_audit_open_log(const char *state_dir, int *fd, char *err, size_t errlen);

/* Keys every record has, which fields given to fc_audit_append never set. */
int fc_audit_reserved_key(const char *key);
/* 1 if kind is one the coordinator writes; the list, comma-separated, in out. */
int fc_audit_kind_known(const char *kind);
char *fc_audit_kind_list(char *out, size_t cap);

#endif
