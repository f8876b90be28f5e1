/*
 * test_coord_ha.c - fc_coord_ha_reconcile (coordinator/coord_ha.c), what a
 * replica does on winning before it starts, against a real etcd on
 * 127.0.0.1 (skipped with a message without one): no pointer yet -> the
 * state directory stands; the pointer one version ahead of state.json (the
 * last leader died between the two) -> state.json rolled forward to it, once
 * the file's SHA-256 matches; the pointer naming a SHA-256 the file does not
 * have, two versions ahead, or behind -> refused with both versions named,
 * state.json untouched; a pointer that is not ours -> refused.
 */
#include <signal.h>
#include <string.h>
#include <sys/wait.h>

#include "check.h"
#include "common/log.h"
#include "coordinator/coordinator.h"
#include "coordinator/leader.h"
#include "coordinator/store.h"
#include "crypto/sha256.h"
#include "etcd_harness.h"
#include "fedc/error.h"

static int put_pointer(fc_leader *l, const char *json) {
  char err[512];
  fc_etcd_op op = {.kind = FC_ETCD_PUT, .key = "/fedc-test/ha/model", .value = json, .value_len = strlen(json)};
  int rc = fc_leader_fenced(l, &op, 1, NULL, err, sizeof err);
  if (rc != FEDC_OK) fprintf(stderr, "%s\n", err);
  return rc;
}

static void test_reconcile(const char *eps, const char *dir) {
  char err[512], hex[FC_SHA256_HEX_LEN], json[256];
  fc_leader_opts o;
  memset(&o, 0, sizeof o);
  fc_etcd_opts_init(&o.etcd);
  o.etcd.endpoints = eps;
  o.prefix = "/fedc-test/ha";
  o.ttl_s = 5;
  o.id = "replica-test";
  o.poll_ms = 50;
  fc_leader *l = NULL;
  CHECK_EQ_INT(fc_leader_start(&o, &l, err, sizeof err), FEDC_OK);
  if (!l) return;
  int lead = 0;
  for (int i = 0; i < 400 && !lead; i++) lead = fc_leader_wait(l, 50); /* etcd's start-up included */
  CHECK(lead);
  if (!lead) goto out;

  fc_coord_cfg cfg;
  fc_coord_cfg_defaults(&cfg);
  snprintf(cfg.federation, sizeof cfg.federation, "fed");
  snprintf(cfg.state_dir, sizeof cfg.state_dir, "%s", dir);
  cfg.leader = l;
  /* the store at v1, v2's file written, state.json not yet moved */
  CHECK_EQ_INT(fc_store_open(dir, err, sizeof err), FEDC_OK);
  fc_model_spec spec;
  memset(&spec, 0, sizeof spec);
  uint64_t shape[1] = {4};
  fc_model_spec_add(&spec, "w", 1, shape);
  float w1[4] = {1, 2, 3, 4}, w2[4] = {1.5f, 2, 3, 4};
  uint8_t sha1[FC_SHA256_LEN], sha2[FC_SHA256_LEN];
  fc_sha256(w1, sizeof w1, sha1);
  fc_sha256(w2, sizeof w2, sha2);
  CHECK_EQ_INT(fc_store_write_model(dir, NULL, 1, 1, &spec, w1, sha1, NULL, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_write_model(dir, NULL, 2, 2, &spec, w2, sha2, sha1, err, sizeof err), FEDC_OK);
  fc_store_state st;
  memset(&st, 0, sizeof st);
  st.version = 1;
  memcpy(st.sha, sha1, FC_SHA256_LEN);
  st.next_round = 3; /* round 2 running: it is the one that published v2 */
  st.completed = 1;
  st.open_round = 2;
  CHECK_EQ_INT(fc_store_save_state(dir, "fed", &st, err, sizeof err), FEDC_OK);

  /* no pointer yet: the state directory stands */
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_OK);
  /* a pointer that is not ours */
  CHECK_EQ_INT(put_pointer(l, "v2"), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK(strstr(err, "not {") != NULL);
  /* two versions ahead, and behind */
  snprintf(json, sizeof json, "{\"version\":3,\"sha256\":\"%s\",\"round\":3}", fc_hex(sha2, FC_SHA256_LEN, hex));
  CHECK_EQ_INT(put_pointer(l, json), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_ERR_FORMAT);
  CHECK(strstr(err, "state.json is at v1 but etcd's model pointer at v3") != NULL);
  snprintf(json, sizeof json, "{\"version\":0,\"sha256\":\"%s\",\"round\":0}", hex);
  CHECK_EQ_INT(put_pointer(l, json), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_ERR_FORMAT);
  /* one ahead, but not the bytes in the store */
  snprintf(json, sizeof json, "{\"version\":2,\"sha256\":\"%s\",\"round\":2}", fc_hex(sha1, FC_SHA256_LEN, hex));
  CHECK_EQ_INT(put_pointer(l, json), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_ERR_HASH);
  CHECK(strstr(err, "another SHA-256") != NULL);
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &st, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(st.version, 1); /* untouched by every refusal */
  /* the same version with another hash */
  snprintf(json, sizeof json, "{\"version\":1,\"sha256\":\"%s\",\"round\":1}", fc_hex(sha2, FC_SHA256_LEN, hex));
  CHECK_EQ_INT(put_pointer(l, json), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_ERR_HASH);
  /* one ahead, the right bytes: rolled forward */
  snprintf(json, sizeof json, "{\"version\":2,\"sha256\":\"%s\",\"round\":2}", hex);
  CHECK_EQ_INT(put_pointer(l, json), FEDC_OK);
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &st, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(st.version, 2);
  CHECK(memcmp(st.sha, sha2, FC_SHA256_LEN) == 0);
  CHECK_EQ_INT(st.next_round, 3);
  CHECK_EQ_INT(st.completed, 2);
  CHECK_EQ_INT(st.open_round, 0);
  /* and then they agree */
  CHECK_EQ_INT(fc_coord_ha_reconcile(&cfg, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(fc_store_load_state(dir, "fed", &st, err, sizeof err), FEDC_OK);
  CHECK_EQ_INT(st.version, 2);
out:
  fc_leader_stop(l);
}

int main(void) {
  fc_log_set_level(FC_LOG_ERROR);
  if (!etcd_installed()) {
    printf("SKIP: no etcd binary (apt-get install etcd-server)\n");
    return CHECK_DONE();
  }
  fc_transport_init();
  char dir[] = "/tmp/fedc-test-coordha-XXXXXX", data[600], state[600], eps[64];
  if (!mkdtemp(dir)) return 1;
  snprintf(data, sizeof data, "%s/etcd", dir);
  snprintf(state, sizeof state, "%s/state", dir);
  int cport = free_port(), pport = free_port();
  pid_t pid = start_etcd(data, cport, pport);
  snprintf(eps, sizeof eps, "127.0.0.1:%d", cport);
  test_reconcile(eps, state);
  kill(pid, SIGKILL);
  waitpid(pid, NULL, 0);
  char cmd[700];
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
  if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", dir);
  fc_transport_shutdown();
  return CHECK_DONE();
}
