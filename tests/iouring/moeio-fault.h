/* A fault-injecting wrapper around a libmoeio backend (the I/O seam, moeio-ops.h), for
 * tests only: makes chosen operations fail with an errno or come back short, as a bad drive,
 * a signal or an odd filesystem would. It also records what the core does with the backend
 * (ops outstanding, submit calls, queue order) so tests can check depth and batching. Rules pick an operation by its 1-based sequence number
 * among ops queued (`nth`), or every op covering a file offset (`at`, nth == 0). */
#pragma once
#include "iouring/moeio-ops.h"

enum fault_kind {
    FAULT_ERRNO, /* op->res = -err */
    FAULT_SHORT, /* op->res = min(res, short_len) */
};

typedef struct fault_rule {
    uint64_t nth;        /* op number to hit (1-based), or 0: use `at` */
    uint64_t at;         /* with nth == 0: every op whose range contains this offset */
    enum fault_kind kind;
    int err;             /* FAULT_ERRNO: positive errno */
    uint32_t short_len;  /* FAULT_SHORT */
    moeio_op_t *op;      /* private: the op marked for `nth` */
    unsigned fired;      /* times applied */
} fault_rule_t;

#define FAULT_RULES_MAX 8
typedef struct fault {
    moeio_wrapper_t base; /* first: moeio_config_t.wrapper = &f.base */
    fault_rule_t rules[FAULT_RULES_MAX];
    unsigned n_rules;
    uint64_t n_ops;       /* ops queued so far */
    unsigned outstanding; /* queued and not yet reaped */
    unsigned max_outstanding;
    unsigned n_submits;   /* submit() calls that had ops to pass on */
    unsigned unsubmitted; /* ops queued since the last submit() */
    uint64_t log_off[64]; /* file offsets of the first 64 ops, in queue order */
} fault_t;

void fault_init(fault_t *f);
void fault_add(fault_t *f, fault_rule_t rule);
unsigned fault_fired(const fault_t *f);
