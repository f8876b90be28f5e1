/*
 * audit_shape.h - an audit record's chain fields read without building it
 * (I/O-free; no allocation). The coordinator's start checks the chain of
 * every record but needs only first contacts parsed (audit.c); jansson's
 * tree for the rest cost 8x the time of the whole check.
 *
 * fc_audit_shape says 1 only when it is sure: the line is one JSON object
 * that jansson (JSON_REJECT_DUPLICATES) would also accept, and its first
 * members are "seq" (an integer >= 0), "ts_ms" (an integer), "kind" (a
 * string of [a-z_]), its last two "prev" and "hash" (strings of 64 bytes
 * without an escape; that they are the right hex is the chain's check), as
 * the writer lays them out (audit.c, append_locked). It is deliberately
 * narrower than JSON: no whitespace, no \u escape, no nested object, no
 * number it cannot bound, no key twice; on anything else it says 0 and the
 * caller parses the line with jansson, which then accepts or names what is
 * wrong. So it can only be faster than jansson, never more permissive (a
 * hostile review found the first, position-only version started on lines
 * jansson refuses; tests/unit/test_audit_shape.c checks it against jansson
 * on mutated records).
 *
 * Owns: nothing. May call: nothing. Called by: audit.c.
 */
#ifndef FEDC_COORD_AUDIT_SHAPE_H
#define FEDC_COORD_AUDIT_SHAPE_H

#include <stddef.h>

#define FC_AUDIT_SHAPE_KIND_MAX 32

/* The line is n bytes without its newline, all printable ASCII (the
 * caller has checked: fc_audit_printable, as audit.c does for every line
 * before it reads one; no raw control or non-ASCII byte is in a string
 * then, as jansson requires of the first and the writer of the second). 1
 * and seq, kind, prev (64 bytes, NUL-terminated) if it has the writer's
 * shape as above; 0 if not sure. */
int fc_audit_shape(const char *line, size_t n, long long *seq, char kind[FC_AUDIT_SHAPE_KIND_MAX + 1],
                   char prev[65]);

/* 1 if the n bytes are all printable ASCII (0x20..0x7e), eight at a time. */
int fc_audit_printable(const char *p, size_t n);

#endif
