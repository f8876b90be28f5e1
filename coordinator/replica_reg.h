/*
 * replica_reg.h - the replica registry of coordinator replicas on etcd
 * (issue 23): each replica (`fedc coordinator --etcd ...`) keeps a key
 *   P/replicas/<id, key-safe> = {"id":"<host> pid <pid> <listen>","address":"<listen>","role":"standby"|"leader"}
 * on its own election lease (leader.h), so a replica that dies drops out
 * when its lease expires and one that stops drops out at once (its lease is
 * revoked); the leader lists them for `fedc status`.
 *
 * Owns: one thread and one etcd handle per registration. May call:
 * leader.h, etcd.h, common/log.h. Called by: the CLI (lifecycle, next to
 * each election), coord_status_ha.c (the list).
 */
#ifndef FEDC_COORD_REPLICA_REG_H
#define FEDC_COORD_REPLICA_REG_H

#include <stddef.h>
#include <stdint.h>

#include "coordinator/etcd.h"
#include "coordinator/leader.h"

#define FC_REPLICA_KEY "replicas/" /* under the prefix */
#define FC_REPLICA_MAX 64          /* entries listed */

typedef struct fc_replica_entry {
  char id[128];
  char address[256];
  char role[16];
  int64_t lease;
} fc_replica_entry;

/* The registry key's last part for a replica id: every byte outside
 * [A-Za-z0-9._:-] becomes '_' (ids hold spaces). */
void fc_replica_key_name(const char *id, char *out, size_t outlen);
/* The value a replica registers (JSON); FEDC_ERR_INVALID if it does not fit. */
int fc_replica_value(const char *id, const char *address, const char *role, char *out, size_t outlen);
/* One registry value back: FEDC_ERR_FORMAT with one line if it is not ours. */
int fc_replica_parse(const char *value, size_t len, fc_replica_entry *out, char *why, size_t whylen);
/* The registry as etcd holds it now (a linearizable read through l), at
 * most cap entries in key order; entries that do not parse are skipped. */
int fc_replica_list(fc_leader *l, fc_replica_entry *out, size_t cap, size_t *n, char *err, size_t errlen);

typedef struct fc_replica_reg fc_replica_reg;
/* Starts keeping P/replicas/<id> on l's current lease with l's role (put
 * again when the lease or the role changes; checked every 200 ms). */
int fc_replica_reg_start(const fc_etcd_opts *eo, fc_leader *l, const char *id, const char *address,
                         fc_replica_reg **out, char *err, size_t errlen);
/* Stops the thread (call before fc_leader_stop, whose lease revoke removes
 * the key). Accepts NULL. */
void fc_replica_reg_stop(fc_replica_reg *r);

#endif
