/* The CPU reference as an engine backend: each sequence is a ref_state_t, a step runs its
 * entries one by one through ref_forward. It exists so the scheduler, the API and the
 * clients can be tested end to end against the oracle itself, and so a model can be
 * checked on a machine without Vulkan. It keeps the whole model in float32 RAM. */
#include <errno.h>
#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "engine/engine.h"
#include "ref_forward.h"

typedef struct engine_ref {
    engine_t base;
    ref_model_t *rm;
    ref_state_t **seqs; /* [n_seq_max], NULL when free */
    engine_stats_t stats;
} engine_ref_t;

static int ref_seq_new(engine_t *e, uint32_t *ret_seq)
{
    engine_ref_t *r = (engine_ref_t *)e;
    for (uint32_t i = 0; i < e->n_seq_max; i++) {
        if (r->seqs[i])
            continue;
        int rc = ref_state_new(r->rm, e->n_ctx, &r->seqs[i]);
        if (rc < 0)
            return rc;
        *ret_seq = i;
        return 0;
    }
    return -EBUSY;
}

static void ref_seq_free(engine_t *e, uint32_t seq)
{
    engine_ref_t *r = (engine_ref_t *)e;
    if (seq < e->n_seq_max)
        r->seqs[seq] = ref_state_free(r->seqs[seq]);
}

static int ref_step(engine_t *e, const engine_entry_t *entries, size_t n, float *logits)
{
    engine_ref_t *r = (engine_ref_t *)e;
    float *scratch = NULL;
    size_t out = 0;
    int rc = 0;
    for (size_t i = 0; i < n; i++) {
        const engine_entry_t *en = &entries[i];
        if (en->seq >= e->n_seq_max || !r->seqs[en->seq] || en->pos >= e->n_ctx) {
            rc = -EINVAL;
            break;
        }
        float *dst = NULL;
        if (en->logits) {
            dst = logits + out * e->n_vocab;
            out++;
        } else {
            if (!scratch && !(scratch = malloc(sizeof(float) * e->n_vocab))) {
                rc = -ENOMEM;
                break;
            }
            dst = scratch;
        }
        rc = ref_forward(r->seqs[en->seq], en->token, (int32_t)en->pos, dst);
        if (rc < 0)
            break;
        r->stats.tokens++;
    }
    r->stats.steps++;
    free(scratch);
    return rc;
}

static void ref_stats(engine_t *e, engine_stats_t *ret)
{
    *ret = ((engine_ref_t *)e)->stats;
}

static void ref_free(engine_t *e)
{
    engine_ref_t *r = (engine_ref_t *)e;
    for (uint32_t i = 0; r->seqs && i < e->n_seq_max; i++)
        ref_state_free(r->seqs[i]);
    free(r->seqs);
    ref_model_free(r->rm);
    free(r);
}

static const engine_vtable_t ref_vtable = {
    .name = "reference",
    .seq_new = ref_seq_new,
    .seq_free = ref_seq_free,
    .step = ref_step,
    .stats = ref_stats,
    .free = ref_free,
};

int engine_ref_new(const model_t *m, const char *path, uint32_t n_ctx, uint32_t n_seq_max,
                   engine_t **ret, char *err, size_t errlen)
{
    if (!n_ctx || !n_seq_max)
        return -EINVAL;
    engine_ref_t *r = calloc(1, sizeof(*r));
    if (!r)
        return -ENOMEM;
    r->base.vt = &ref_vtable;
    r->base.model = m;
    r->base.n_vocab = m->hp.n_vocab;
    r->base.n_ctx = n_ctx;
    r->base.n_seq_max = n_seq_max;
    r->stats.prefetch_accuracy = -1;
    snprintf(r->base.device, sizeof(r->base.device), "CPU reference (float32)");
    r->seqs = calloc(n_seq_max, sizeof(*r->seqs));
    int rc = r->seqs ? ref_model_new(m, path, &r->rm, err, errlen) : -ENOMEM;
    if (rc < 0) {
        ref_free(&r->base);
        return rc;
    }
    *ret = &r->base;
    return 0;
}
