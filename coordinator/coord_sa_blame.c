/*
 * coord_sa_blame.c - what follows when a cohort member sent bad secure-
 * aggregation unmask shares. The SecAgg core rebuilds each secret from all
 * its shares, correcting wrong ones where they can be told apart, and names
 * the members whose shares were off the polynomial the others agree on
 * (fc_sa_server_blamed; crypto/shamir_decode.c says when that is decided).
 * Here, once per round, right after the secrets are rebuilt:
 *   - the offence is counted against the identity in the engine
 *     (fc_engine_offence: at secagg_offence_limit offences it is left out
 *     of selection for secagg_offence_exclude_s);
 *   - an audit record "secagg_blame" and a warning name it;
 *   - the round's record lists it (secagg_blamed in rounds.jsonl, `fedc
 *     rounds`), filled by record_round_locked from the live sessions.
 * Only a share's sender is ever named, never the owner of the secret: the
 * share point is the sender's cohort index.
 *
 * May call: the engine, the SecAgg core and the audit log, under c->mu as
 * coord_int.h says (the audit log is thread-safe; the record is written
 * before the exclusion can take effect, at the next round's selection).
 */
#include <stdio.h>

#include "common/clock.h"
#include "common/log.h"
#include "coordinator/audit.h"
#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"

#define MOD "secagg"

void coord_sa_blame_locked(fc_coord *c) {
  uint64_t now = fc_now_ms();
  for (uint32_t b = 0; b < c->nsa; b++) {
    const fc_sa_server *s = c->sa[b];
    const fc_sa_params *p = fc_sa_server_params(s);
    const char *const *names = fc_sa_server_names(s);
    uint32_t left = fc_sa_server_unattributed(s);
    if (left)
      FC_WARN(MOD, "round %llu: %u secret%s rebuilt past bad unmask shares whose senders could not be told apart",
              (unsigned long long)p->round, left, left == 1 ? "" : "s");
    for (uint32_t i = 1; i <= p->n; i++) {
      uint32_t secrets = fc_sa_server_bad_sent(s, i);
      if (!secrets) continue;
      uint64_t until = 0;
      uint32_t offences = fc_engine_offence(c->engine, names[i - 1], now, &until);
      uint64_t excluded_s = until > now ? (until - now + 999) / 1000 : 0;
      FC_WARN(MOD, "round %llu: %s sent bad unmask shares for %u secret%s (offence %u)%s", (unsigned long long)p->round,
              names[i - 1], secrets, secrets == 1 ? "" : "s", offences,
              excluded_s ? ": excluded from selection" : "");
      if (c->audit)
        fc_audit_append(c->audit, "secagg_blame",
                        json_pack("{s:I,s:s,s:i,s:i,s:I}", "round", (json_int_t)p->round, "client", names[i - 1],
                                  "secrets", (int)secrets, "offences", (int)offences, "excluded_s",
                                  (json_int_t)excluded_s));
    }
  }
}

void coord_sa_blamed_record(const fc_coord *c, fc_round_stats *r) {
  r->sa_nblamed = 0;
  for (uint32_t b = 0; b < c->nsa; b++) {
    const fc_sa_server *s = c->sa[b];
    const char *const *names = fc_sa_server_names(s);
    for (uint32_t i = 1; i <= fc_sa_server_params(s)->n; i++) {
      if (!fc_sa_server_bad_sent(s, i)) continue;
      if (r->sa_nblamed < FC_ROUND_BLAMED_MAX)
        snprintf(r->sa_blamed[r->sa_nblamed], sizeof r->sa_blamed[0], "%s", names[i - 1]);
      r->sa_nblamed++;
    }
  }
}
