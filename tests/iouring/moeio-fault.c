/* moeio-fault.c: see moeio-fault.h. The wrapper forwards queue/submit/reap to the backend
 * moeio_new started and rewrites op->res on the way back in reap(), so the faults travel
 * the same completion path as real ones. Single-threaded like moeio_t itself. */
#include "moeio-fault.h"

static int fault_queue(void *state, moeio_op_t *op)
{
    fault_t *f = state;
    if (f->n_ops < 64)
        f->log_off[f->n_ops] = op->off;
    f->n_ops++;
    f->unsubmitted++;
    if (++f->outstanding > f->max_outstanding)
        f->max_outstanding = f->outstanding;
    for (unsigned i = 0; i < f->n_rules; i++)
        if (f->rules[i].nth == f->n_ops)
            f->rules[i].op = op;
    return f->base.inner.ops->queue(f->base.inner.state, op);
}

static int fault_submit(void *state, unsigned wait_nr)
{
    fault_t *f = state;
    if (f->unsubmitted)
        f->n_submits++;
    f->unsubmitted = 0;
    return f->base.inner.ops->submit(f->base.inner.state, wait_nr);
}

static bool rule_matches(fault_rule_t *r, const moeio_op_t *op)
{
    if (r->nth)
        return r->op == op;
    return r->at >= op->off && r->at - op->off < op->len;
}

static void rule_apply(fault_rule_t *r, moeio_op_t *op)
{
    if (r->kind == FAULT_ERRNO)
        op->res = -r->err;
    else if (op->res > (int)r->short_len)
        op->res = (int)r->short_len;
    r->fired++;
    r->op = NULL; /* an nth rule fires once */
}

static int fault_reap(void *state, moeio_op_t **ret)
{
    fault_t *f = state;
    int n = f->base.inner.ops->reap(f->base.inner.state, ret);
    if (n == 1)
        f->outstanding--;
    if (n == 1)
        for (unsigned i = 0; i < f->n_rules; i++)
            if (rule_matches(&f->rules[i], *ret))
                rule_apply(&f->rules[i], *ret);
    return n;
}

static const moeio_ops_t fault_ops = {
    .name = "fault",
    .queue = fault_queue,
    .submit = fault_submit,
    .reap = fault_reap,
};

void fault_init(fault_t *f)
{
    *f = (fault_t){.base.ops = &fault_ops};
}

void fault_add(fault_t *f, fault_rule_t rule)
{
    if (f->n_rules < FAULT_RULES_MAX)
        f->rules[f->n_rules++] = rule;
}

unsigned fault_fired(const fault_t *f)
{
    unsigned n = 0;
    for (unsigned i = 0; i < f->n_rules; i++)
        n += f->rules[i].fired;
    return n;
}
