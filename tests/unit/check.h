/*
 * check.h - minimal test harness for tests/unit: CHECK() never depends on
 * NDEBUG, counts failures, and CHECK_DONE() prints "N passed, N failed" and
 * returns the exit status.
 */
#ifndef FEDC_TESTS_CHECK_H
#define FEDC_TESTS_CHECK_H
#include <stdio.h>
#include <string.h>

static int check_passed, check_failed;

#define CHECK(cond)                                                          \
  do {                                                                       \
    if (cond) {                                                              \
      check_passed++;                                                        \
    } else {                                                                 \
      check_failed++;                                                        \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
    }                                                                        \
  } while (0)

#define CHECK_EQ_INT(a, b)                                                                  \
  do {                                                                                      \
    long long va_ = (long long)(a), vb_ = (long long)(b);                                   \
    if (va_ == vb_) {                                                                       \
      check_passed++;                                                                       \
    } else {                                                                                \
      check_failed++;                                                                       \
      fprintf(stderr, "%s:%d: CHECK failed: %s == %s (%lld vs %lld)\n", __FILE__, __LINE__, \
              #a, #b, va_, vb_);                                                            \
    }                                                                                       \
  } while (0)

#define CHECK_DONE()                                                    \
  (printf("%d passed, %d failed\n", check_passed, check_failed), \
   check_failed ? 1 : 0)

#endif
