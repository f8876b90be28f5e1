/*
 * secagg_server_int.h - state shared by secagg_server.c and
 * secagg_server_unmask.c. Not an interface for other modules.
 */
#ifndef FEDC_COORD_SECAGG_SERVER_INT_H
#define FEDC_COORD_SECAGG_SERVER_INT_H

#include "coordinator/secagg_server.h"
#include "crypto/cert_cache.h"

typedef struct sa_member {
  int done;                        /* last stage completed (FC_SA_*), 0 = none */
  Fedc__V1__SecAggKeys keys;       /* as advertised (owned copies) */
  fc_cert *cert;                   /* keys.certificate, verified: its key checks the round-3 signature */
  uint8_t commitment[32];          /* to b_u, sent with the shares */
  ProtobufCBinaryData signature;   /* over the survivor list */
  Fedc__V1__SecAggShare **inbox;   /* shares addressed to this member */
  uint32_t ninbox;
  /* Unmask shares of this member's secret (b if it survived, s^SK if not). */
  uint16_t *rxs;
  uint8_t (*rshares)[32];
  uint32_t nr, capr;
  uint32_t bad_sent; /* secrets for which this member's unmask share was named wrong (fc_shamir_decode) */
  int withdrawn;     /* said Leave: no stage waits for it (fc_sa_server_withdraw) */
} sa_member;

struct fc_sa_server {
  fc_sa_params p;
  char **names;
  uint32_t *by_name; /* 0-based member indices in strcmp order of their names (fc_sa_server_index) */
  uint8_t session[FC_SA_SESSION_LEN];
  fc_sa_graph graph;
  int stage;   /* open stage, 0 when all closed */
  int aborted;
  char why[256];
  sa_member *m; /* n members, index i at m[i-1] */
  uint32_t *nbr; /* scratch: k neighbours */
  uint32_t *survivors; /* U3, sorted */
  size_t nsurvivors;
  uint32_t remaining[5];
  int tail_stage;         /* the stage whose tail a poll saw first (fc_sa_server_wait_hint), 0 = none */
  uint64_t tail_since_ms; /* when */
  uint32_t unattributed; /* secrets rebuilt past bad shares nobody could be named for */
  char *ca_pem;          /* trust for advertised certificates (fc_sa_server_set_trust) */
  fc_cert_cache *certs;     /* the caller's (fc_sa_server_use_cert_cache) or own_certs */
  fc_cert_cache *own_certs; /* made by set_trust */
  char federation[64];
};

int sa_server_received_share(const fc_sa_server *s, uint32_t from, uint32_t to);
int sa_server_is_survivor(const fc_sa_server *s, uint32_t v);

#endif
