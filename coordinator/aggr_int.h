/*
 * aggr_int.h - an aggregator's state, shared by aggr_node.c (lifecycle,
 * registration, the leader's round, submitting) and aggr_upload.c (clients'
 * uploads). Not an interface for other modules.
 */
#ifndef FEDC_COORD_AGGR_INT_H
#define FEDC_COORD_AGGR_INT_H

#include <pthread.h>
#include <stdatomic.h>

#include "common/tensor.h"
#include "coordinator/aggr.h"
#include "coordinator/aggregate.h"
#include "coordinator/etcd.h"
#include "coordinator/upload_check.h"
#include "crypto/cert_cache.h"
#include "crypto/sha256.h"
#include "crypto/update_sig.h"
#include "transport/transport.h"

/* An update taken and folded, not yet handed to the leader. */
typedef struct aggr_contrib {
  char client[65];
  uint64_t examples, bytes;
  double weight;
  float loss;
  uint8_t sha[FC_SHA256_LEN];
  uint32_t bucket; /* secure aggregation: its SecAgg instance */
  int unclipped;   /* UpdateMeta.unclipped: the client's clip left it as it was */
  void *relay;     /* relaying (1.17): the update's bytes as the client sent them, to hand over whole */
  char *cert;      /* ... the client's certificate and its signature over the update (crypto/update_sig.h) */
  uint8_t sig[FC_UPDATE_SIG_MAX];
  size_t siglen;
} aggr_contrib;

struct fc_aggr {
  fc_aggr_cfg cfg;
  char name[65], federation[64], identity[300], key[600], value[600];
  fc_server *server;
  fc_method methods[1];
  fc_channel *leader; /* used by the poll thread only */
  fc_etcd *etcd;      /* used by the registration thread only */
  int64_t lease;
  pthread_t reg_thread, poll_thread;
  int reg_started, poll_started;
  pthread_mutex_t stop_mu;
  pthread_cond_t stop_cv;
  int stopping;
  int kick; /* under stop_mu: an update waits to be relayed: poll (and submit) now */
  fc_cert_cache *certs; /* under mu: clients' certificates verified once (relayed updates' signatures) */
  /* The round, as the leader said last; under mu. */
  pthread_mutex_t mu;
  int open;
  uint64_t round, version, submit_by;
  fc_model_spec spec;
  uint64_t bytes;
  fc_upload_rules rules;
  char (*assigned)[65]; /* clients assigned to us and not counted yet */
  size_t nassigned, capassigned;
  uint32_t *assigned_bucket; /* secure aggregation: assigned[i]'s SecAgg instance (capbucket entries) */
  size_t capbucket;
  /* FedAvg over the model's parameters, or under secure aggregation
   * (masked, 1.16) the sums mod 2^32 of masked inputs, one per instance
   * (sums made per instance at its first input); created at the first
   * round, rebuilt when the leader's shape or grid changes. */
  fc_agg *agg;
  int masked;           /* the leader's round is secure aggregation's masked stage */
  int relay;            /* the leader needs each update whole (1.17): checked, kept, relayed, not folded */
  uint8_t model_sha[FC_SHA256_LEN]; /* relaying: the round's model, as the clients' signed claims name it */
  uint32_t agg_buckets; /* masked: the leader's instance count this round */
  aggr_contrib *pending; /* folded into agg, not submitted */
  size_t nrelaying;      /* relayed updates taken from pending and being handed over (their bytes held) */
  size_t npending, cappending;
  char (*taken)[65]; /* every client whose update we took this round (one per round) */
  size_t ntaken, captaken;
  char (*busy)[65]; /* clients with an upload streaming now */
  size_t nbusy, capbusy;
  /* /metrics (aggr_metrics.c): counters since start, and two states. */
  struct fc_text_http *http;
  int guard_started; /* the accept guard counts and caps our connections */
  int rebuild_logged; /* under mu: the leader's model or grid changed and that was logged (aggr_node.c) */
  _Atomic uint64_t m_taken, m_refused_slow, m_refused_other, m_partials_ok, m_partials_lost, m_counted;
  atomic_int m_registered, m_leader_ok;
};

/* aggr_upload.c: the UploadUpdate handler (role client, blocking). */
void aggr_h_upload(fc_scall *call, void *ctx);
/* aggr_metrics.c: the listener of --metrics-listen (nothing without it). */
int aggr_metrics_start(fc_aggr *a, char *err, size_t errlen);
void aggr_metrics_stop(fc_aggr *a); /* idempotent */
/* Under mu: name in list[0..n)? */
int aggr_listed(char (*list)[65], size_t n, const char *name);
/* Under mu: append name (FEDC_ERR_NOMEM). */
int aggr_list_add(char (**list)[65], size_t *n, size_t *cap, const char *name);
void aggr_list_del(char (*list)[65], size_t *n, const char *name);
/* Under mu: forget the pending contributions (their relayed bytes freed). */
void aggr_pending_drop(fc_aggr *a);
/* An update waits to be relayed: wake the poll thread (its nap, aggr_node.c). */
void aggr_kick(fc_aggr *a);

#endif
