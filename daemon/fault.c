/* Test-only fault injection (fault.h): the rules of MOED_TEST_FAULTS applied at the two
 * seams moed has. Expert reads: a moeio_wrapper_t (moeio-ops.h) forwards every op to the
 * backend libmoeio started and rewrites the result of the chosen ones in reap(), so an
 * injected EIO or short read travels the same completion path as a real one (libmoeio
 * continues short reads, fails the read on EIO, the engine fails the step with -EIO).
 * Engine steps: a pass-through engine_t whose step() fails the chosen calls with -ENOMEM,
 * as a host allocation in the forward pass would. The device memory limit (vkmem) is only
 * handed to the Vulkan engine (engine_vk_config_t.device_limit) by main.c.
 *
 * Invariants: nothing fires before moed_fault_arm(); counters are atomic because the
 * reads may complete on an I/O thread of the engine while /metrics or the log reads
 * moed_fault_fired(). One libmoeio instance per wrapper (moeio_new fills `inner`). */
#include "fault.h"

#include <errno.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iouring/moeio-ops.h"
#include "settings.h"

enum fault_rule { FAULT_EIO, FAULT_SHORT, FAULT_ENOMEM, FAULT_VKMEM, FAULT_N_RULES };

static const char *const rule_names[FAULT_N_RULES] = {"eio", "short", "enomem", "vkmem"};

struct moed_fault {
    moeio_wrapper_t io;            /* first: handed to libmoeio */
    uint64_t every[FAULT_N_RULES]; /* 0: rule off; FAULT_VKMEM: the byte limit */
    atomic_bool armed;
    atomic_uint_fast64_t reads; /* successful reads seen since armed */
    atomic_uint_fast64_t steps; /* engine steps since armed */
    atomic_uint_fast64_t fired;
};

typedef struct fault_engine {
    engine_t base; /* first: what the scheduler holds */
    engine_t *inner;
    moed_fault_t *f;
} fault_engine_t;

/* ---- the I/O seam ---- */

static int io_queue(void *state, moeio_op_t *op)
{
    moeio_wrapper_t *w = state;
    return w->inner.ops->queue(w->inner.state, op);
}

static int io_submit(void *state, unsigned wait_nr)
{
    moeio_wrapper_t *w = state;
    return w->inner.ops->submit(w->inner.state, wait_nr);
}

/* Only reads that would have succeeded are counted, so a rule's period is in real reads
 * and a retried or continued read is not hit twice for one count. */
static int io_reap(void *state, moeio_op_t **ret)
{
    moed_fault_t *f = state;
    int n = f->io.inner.ops->reap(f->io.inner.state, ret);
    if (n != 1 || !atomic_load(&f->armed) || (*ret)->res <= 0)
        return n;
    uint64_t k = atomic_fetch_add(&f->reads, 1) + 1;
    moeio_op_t *op = *ret;
    if (f->every[FAULT_EIO] && k % f->every[FAULT_EIO] == 0) {
        op->res = -EIO;
        atomic_fetch_add(&f->fired, 1);
    } else if (f->every[FAULT_SHORT] && k % f->every[FAULT_SHORT] == 0 && op->res > 1) {
        op->res /= 2;
        atomic_fetch_add(&f->fired, 1);
    }
    return n;
}

static const moeio_ops_t fault_io_ops = {
    .name = "fault",
    .queue = io_queue,
    .submit = io_submit,
    .reap = io_reap,
};

/* ---- the engine seam ---- */

static int fe_seq_new(engine_t *e, uint32_t *ret_seq)
{
    return engine_seq_new(((fault_engine_t *)e)->inner, ret_seq);
}

static void fe_seq_free(engine_t *e, uint32_t seq)
{
    engine_seq_free(((fault_engine_t *)e)->inner, seq);
}

static int fe_step(engine_t *e, const engine_entry_t *entries, size_t n, float *logits)
{
    fault_engine_t *fe = (fault_engine_t *)e;
    moed_fault_t *f = fe->f;
    if (atomic_load(&f->armed)) {
        uint64_t k = atomic_fetch_add(&f->steps, 1) + 1;
        if (k % f->every[FAULT_ENOMEM] == 0) {
            atomic_fetch_add(&f->fired, 1);
            return -ENOMEM;
        }
    }
    return engine_step(fe->inner, entries, n, logits);
}

static void fe_stats(engine_t *e, engine_stats_t *ret)
{
    engine_stats(((fault_engine_t *)e)->inner, ret);
}

static void fe_free(engine_t *e)
{
    fault_engine_t *fe = (fault_engine_t *)e;
    engine_free(fe->inner);
    free(fe);
}

static const engine_vtable_t fault_engine_vt = {
    .name = "fault",
    .seq_new = fe_seq_new,
    .seq_free = fe_seq_free,
    .step = fe_step,
    .stats = fe_stats,
    .free = fe_free,
};

/* ---- public ---- */

static int parse_rule(moed_fault_t *f, const char *rule, size_t len, char *err, size_t errlen)
{
    char buf[64];
    if (len >= sizeof(buf)) {
        snprintf(err, errlen, "%s: rule too long", MOED_FAULT_ENV);
        return -EINVAL;
    }
    memcpy(buf, rule, len);
    buf[len] = 0;
    char *colon = strchr(buf, ':');
    if (colon)
        *colon = 0;
    for (int i = 0; i < FAULT_N_RULES; i++) {
        if (strcmp(buf, rule_names[i]))
            continue;
        uint64_t v;
        if (!colon || settings_parse_u64(colon + 1, i == FAULT_VKMEM, &v) < 0 || v == 0) {
            snprintf(err, errlen, "%s: '%s' needs a count >= 1 ('%s:N')", MOED_FAULT_ENV, buf, buf);
            return -EINVAL;
        }
        f->every[i] = v;
        return 0;
    }
    snprintf(err, errlen, "%s: unknown rule '%s' (eio:N, short:N, enomem:N, vkmem:SIZE)",
             MOED_FAULT_ENV, buf);
    return -EINVAL;
}

int moed_fault_new(const char *spec, moed_fault_t **ret, char *err, size_t errlen)
{
    moed_fault_t *f = calloc(1, sizeof(*f));
    if (!f)
        return -ENOMEM;
    f->io.ops = &fault_io_ops;
    for (const char *p = spec; *p;) {
        size_t len = strcspn(p, ",");
        if (len) {
            int r = parse_rule(f, p, len, err, errlen);
            if (r < 0) {
                free(f);
                return r;
            }
        }
        p += len;
        if (*p == ',')
            p++;
    }
    *ret = f;
    return 0;
}

moed_fault_t *moed_fault_free(moed_fault_t *f)
{
    free(f);
    return NULL;
}

struct moeio_wrapper *moed_fault_io_wrapper(moed_fault_t *f)
{
    if (!f || (!f->every[FAULT_EIO] && !f->every[FAULT_SHORT]))
        return NULL;
    return &f->io;
}

int moed_fault_wrap_engine(moed_fault_t *f, engine_t **e)
{
    if (!f || !f->every[FAULT_ENOMEM])
        return 0;
    fault_engine_t *fe = calloc(1, sizeof(*fe));
    if (!fe)
        return -ENOMEM;
    fe->base = **e; /* model, sizes and the device line stay what the engine said */
    fe->base.vt = &fault_engine_vt;
    fe->inner = *e;
    fe->f = f;
    *e = &fe->base;
    return 0;
}

uint64_t moed_fault_device_limit(const moed_fault_t *f)
{
    return f ? f->every[FAULT_VKMEM] : 0;
}

void moed_fault_arm(moed_fault_t *f)
{
    if (f)
        atomic_store(&f->armed, true);
}

uint64_t moed_fault_fired(const moed_fault_t *f)
{
    return f ? atomic_load(&f->fired) : 0;
}

void moed_fault_describe(const moed_fault_t *f, char *buf, size_t len)
{
    static const char *const what[FAULT_N_RULES] = {
        "EIO on every Nth read", "a short read every Nth read", "ENOMEM on every Nth engine step",
        "device memory limited to N bytes"};
    size_t o = 0;
    buf[0] = 0;
    for (int i = 0; i < FAULT_N_RULES && o < len; i++)
        if (f->every[i])
            o += (size_t)snprintf(buf + o, len - o, "%s%s, N = %llu", o ? "; " : "", what[i],
                                  (unsigned long long)f->every[i]);
}
