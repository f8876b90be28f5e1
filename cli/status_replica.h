/*
 * status_replica.h - the replica part of `fedc status` for coordinators run
 * as replicas on etcd (StatusResponse.replica): this replica's role, the
 * leader's identity, etcd's health. Internal to the CLI.
 */
#ifndef FEDC_CLI_STATUS_REPLICA_H
#define FEDC_CLI_STATUS_REPLICA_H

#include <jansson.h>

#include "fedc/v1/fedc.pb-c.h"

/* Add "replica" to the status object o (nothing for a lone coordinator). */
void status_replica_json(json_t *o, const Fedc__V1__ReplicaStatus *r);
/* The text lines (replicas, aggregators and their load included); nothing
 * for a lone coordinator. */
void status_replica_print(const Fedc__V1__ReplicaStatus *r);

#endif
