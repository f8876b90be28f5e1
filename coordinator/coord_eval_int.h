/*
 * coord_eval_int.h - the running coordinator's federated evaluation state,
 * shared by coord_eval.c (configuration, the driver, tasks, the history) and
 * coord_eval_report.c (ReportEval and the evaluation's SecAgg messages).
 * Everything in it is under the coordinator's mu. Not an interface.
 */
#ifndef FEDC_COORD_EVAL_INT_H
#define FEDC_COORD_EVAL_INT_H

#include "coordinator/coord_int.h"
#include "coordinator/secagg_server.h"
#include "secagg/eval_stats.h"

#define OWED_MAX 64

typedef struct owed_line {
  uint64_t round;
  fc_round_eval ev;
} owed_line;

/* The federated drift check's baseline: the last evaluated version's
 * predicted-class proportions (coord_drift_fed.c). */
typedef struct fed_drift {
  int have_base;
  uint64_t base_version;
  double base[FC_EVAL_CLASSES_MAX];
  int said_uncounted; /* "no trainer reports the counts" was logged */
} fed_drift;

struct coord_eval {
  uint32_t nmetrics;
  uint32_t nclasses; /* predicted-class counts asked for (EvalParams.classes; 0: none) */
  fed_drift fd;
  char names[FC_EVAL_METRICS_MAX][FC_EVAL_NAME_MAX];
  uint64_t max_examples;
  double value_max;
  /* the running evaluation (model != NULL) */
  model_ref *model;
  uint64_t round;
  fc_eval_stats sum;      /* plain: the names and sizes of the totals */
  fc_eval_stats *reps;    /* plain: the accepted reports, one per cohort member, */
  uint32_t nreps, capreps; /* combined at the end (fc_eval_stats_combine) */
  fc_sa_server *sa;       /* secure aggregation */
  uint32_t *msum;         /* ... the masked vectors' sum, fc_eval_dim + 1 entries */
  uint32_t nmasked;
  double scale;
  uint64_t stage_ms;
  /* records owed to rounds.jsonl, oldest first */
  owed_line owed[OWED_MAX];
  size_t nowed;
  /* /metrics */
  uint64_t completed, abandoned;
  int have_last;
  uint64_t last_round;
  fc_round_eval last;
};

#endif
