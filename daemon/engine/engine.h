/* The engine seam: what the scheduler needs from a forward pass. A step takes a batch of
 * entries (sequence, token, position), runs them all, and returns logits for the entries
 * that ask for them. Prefill is many entries of one sequence in one step; decode is one
 * entry per active sequence; continuous batching mixes both. One thread (the scheduler's
 * engine thread) owns an engine: nothing here is thread-safe.
 *
 * Backends: the Vulkan engine (issue 5, daemon/engine/) and the CPU reference (engine_ref.c,
 * the oracle of tests/ref, slow: for tests and for checking a model without a GPU). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "model/model.h"

typedef struct engine_entry {
    uint32_t seq;   /* a sequence from engine_seq_new */
    int32_t token;
    uint32_t pos;   /* positions of a sequence are fed in order; going back cuts it */
    bool logits;    /* write this entry's logits */
} engine_entry_t;

typedef struct engine_stats {
    uint64_t steps;
    uint64_t tokens;        /* entries run */
    uint64_t expert_hits;
    uint64_t expert_misses;
    uint64_t bytes_streamed;
    double prefetch_accuracy; /* fraction of prefetched experts that were used; <0: n/a */
} engine_stats_t;

typedef struct engine engine_t;

typedef struct engine_vtable {
    const char *name;
    int (*seq_new)(engine_t *e, uint32_t *ret_seq);
    void (*seq_free)(engine_t *e, uint32_t seq);
    int (*step)(engine_t *e, const engine_entry_t *entries, size_t n, float *logits);
    void (*stats)(engine_t *e, engine_stats_t *ret);
    void (*free)(engine_t *e);
} engine_vtable_t;

struct engine {
    const engine_vtable_t *vt;
    const model_t *model;
    uint32_t n_vocab;
    uint32_t n_ctx;     /* positions per sequence */
    uint32_t n_seq_max; /* sequences at once */
    char device[128];   /* what runs it, for /health and logs */
};

/* Allocates a sequence (its KV cache). -EBUSY when n_seq_max are in use. */
static inline int engine_seq_new(engine_t *e, uint32_t *ret_seq)
{
    return e->vt->seq_new(e, ret_seq);
}
static inline void engine_seq_free(engine_t *e, uint32_t seq)
{
    e->vt->seq_free(e, seq);
}
/* Runs n entries; logits (n_vocab floats per entry with .logits set, in entry order).
 * -EINVAL (bad token, position or sequence), -EIO (a read or the device failed: the
 * sequences of this step are lost, the engine still works), -ENOMEM. */
static inline int engine_step(engine_t *e, const engine_entry_t *entries, size_t n,
                              float *logits)
{
    return e->vt->step(e, entries, n, logits);
}
static inline void engine_stats(engine_t *e, engine_stats_t *ret)
{
    e->vt->stats(e, ret);
}
static inline engine_t *engine_free(engine_t *e)
{
    if (e)
        e->vt->free(e);
    return NULL;
}

/* The CPU reference backend: loads every weight of m as float32 (small models only). */
int engine_ref_new(const model_t *m, const char *path, uint32_t n_ctx, uint32_t n_seq_max,
                   engine_t **ret, char *err, size_t errlen);
