/* Offline use of routing traces: a synthetic routing generator (until the engine records
 * real traces), replay of a trace through the real expert cache, and Belady's clairvoyant
 * optimum on the same trace, the bound `moe bench cache` measures the policies against.
 *
 * Belady (MIN): on a miss with the tier full, evict the resident expert whose next use
 * lies furthest in the future. A replay pins all experts of a batch together, so the
 * batch's own experts are never victims; MIN respects this for free, because a resident
 * expert of the current batch b has its next use at b, while every other resident expert
 * is next used after b (victims are taken before the batch's next uses advance). Next uses
 * come from one backward pass; a max-heap of (next use, key) with lazy deletion (an entry
 * is stale when the key is no longer resident or has moved on) finds the victim, so the
 * whole run is O(n log n) in accesses. Time is counted in batches. */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "cache/expert_cache.h"
#include "cache/expert_trace.h"

/* ---- deterministic random numbers (splitmix64) ---- */

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s)
{
    return (double)(rng_next(s) >> 11) * 0x1p-53;
}

static uint32_t rng_below(uint64_t *s, uint32_t n)
{
    return (uint32_t)(rng_unit(s) * n);
}

/* ---- synthetic traces ---- */

/* Smallest rank r with cdf[r] > u (cdf increasing, cdf[n-1] == 1). */
static uint32_t zipf_rank(const double *cdf, uint32_t n, double u)
{
    uint32_t lo = 0, hi = n - 1;
    while (lo < hi) {
        uint32_t mid = lo + (hi - lo) / 2;
        if (cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    return lo;
}

int expert_trace_synth(const expert_trace_synth_params_t *p, expert_trace_t **ret)
{
    if (!p || !ret || p->top_k == 0 || p->top_k > p->n_expert || p->n_step == 0 ||
        !(p->skew >= 0 && p->skew <= 16) || !(p->reuse >= 0 && p->reuse <= 1) ||
        !(p->drift >= 0 && p->drift <= 1))
        return -EINVAL;
    expert_trace_t *t = NULL;
    int r = expert_trace_new(p->n_layer, p->n_expert, &t);
    if (r < 0)
        return r;
    uint32_t E = p->n_expert, K = p->top_k;
    double *cdf = calloc(E, sizeof(*cdf));
    uint16_t *perm = calloc((size_t)p->n_layer * E, sizeof(*perm)); /* [layer][rank] */
    uint16_t *prev = calloc((size_t)p->n_layer * K, sizeof(*prev)); /* [layer][k] */
    uint16_t *pick = calloc(K, sizeof(*pick));
    uint8_t *taken = calloc(E, 1);
    r = -ENOMEM;
    if (!cdf || !perm || !prev || !pick || !taken)
        goto fail;

    double sum = 0, acc = 0;
    for (uint32_t i = 0; i < E; i++)
        sum += pow(i + 1.0, -p->skew);
    for (uint32_t i = 0; i < E; i++)
        cdf[i] = (acc += pow(i + 1.0, -p->skew) / sum);
    cdf[E - 1] = 1.0;

    uint64_t rng = p->seed;
    for (uint32_t l = 0; l < p->n_layer; l++) {
        uint16_t *pl = perm + (size_t)l * E;
        for (uint32_t i = 0; i < E; i++)
            pl[i] = (uint16_t)i;
        for (uint32_t i = E - 1; i > 0; i--) { /* Fisher-Yates */
            uint32_t j = rng_below(&rng, i + 1);
            uint16_t x = pl[i];
            pl[i] = pl[j];
            pl[j] = x;
        }
    }
    for (uint32_t step = 0; step < p->n_step; step++) {
        for (uint32_t l = 0; l < p->n_layer; l++) {
            uint16_t *pl = perm + (size_t)l * E, *pv = prev + (size_t)l * K;
            if (p->drift > 0 && rng_unit(&rng) < p->drift) {
                uint32_t a = rng_below(&rng, E), b = rng_below(&rng, E);
                uint16_t x = pl[a];
                pl[a] = pl[b];
                pl[b] = x;
            }
            for (uint32_t k = 0; k < K; k++) {
                uint16_t e = 0;
                int tries = 0;
                do {
                    if (++tries > 64) { /* give up drawing: the most popular free one */
                        uint32_t rk = 0;
                        while (taken[pl[rk]])
                            rk++;
                        e = pl[rk];
                        break;
                    }
                    if (step > 0 && rng_unit(&rng) < p->reuse)
                        e = pv[rng_below(&rng, K)];
                    else
                        e = pl[zipf_rank(cdf, E, rng_unit(&rng))];
                } while (taken[e]);
                taken[e] = 1;
                pick[k] = e;
            }
            for (uint32_t k = 0; k < K; k++)
                taken[pick[k]] = 0;
            memcpy(pv, pick, K * sizeof(*pick));
            r = expert_trace_append(t, step, l, pick, K);
            if (r < 0)
                goto fail;
        }
    }
    free(cdf);
    free(perm);
    free(prev);
    free(pick);
    free(taken);
    *ret = t;
    return 0;

fail:
    free(cdf);
    free(perm);
    free(prev);
    free(pick);
    free(taken);
    expert_trace_free(t);
    return r;
}

/* ---- replay through the cache ---- */

int expert_trace_replay(const expert_trace_t *t, const expert_cache_params_t *p,
                        expert_cache_stats_t *ret)
{
    if (!t || !p || !ret)
        return -EINVAL;
    if (t->max_batch > p->gpu_slots)
        return -E2BIG;
    expert_cache_params_t cp = *p;
    cp.n_layer = t->n_layer;
    cp.n_expert = t->n_expert;
    expert_cache_t *c = NULL;
    expert_result_t *res = calloc(t->max_batch ? t->max_batch : 1, sizeof(*res));
    if (!res)
        return -ENOMEM;
    int r = expert_cache_new(&cp, &c);
    if (r < 0)
        goto out;
    for (size_t b = 0; b < t->n_batch; b++) {
        const uint16_t *ids = t->ids + t->start[b];
        size_t n = t->start[b + 1] - t->start[b];
        expert_cache_set_step(c, t->step[b]);
        r = expert_cache_acquire_batch(c, t->layer[b], ids, n, res);
        if (r < 0) /* cannot be -EBUSY: every batch fits and all is released */
            goto out;
        for (size_t i = 0; i < n; i++)
            if (res[i].status == EXPERT_MISS_LOAD || res[i].status == EXPERT_HOST_HIT)
                (void)expert_cache_load_done(c, t->layer[b], ids[i], 0);
        r = expert_cache_release(c, t->layer[b], ids, n);
        if (r < 0)
            goto out;
    }
    r = expert_cache_get_stats(c, EXPERT_LAYER_ALL, ret);
out:
    expert_cache_free(c);
    free(res);
    return r;
}

/* ---- Belady ---- */

#define NEVER SIZE_MAX

struct use {
    size_t next; /* batch index of the next use */
    uint32_t key;
};

static void use_push(struct use *h, size_t *n, struct use u)
{
    size_t i = (*n)++;
    while (i > 0 && h[(i - 1) / 2].next < u.next) {
        h[i] = h[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    h[i] = u;
}

static struct use use_pop(struct use *h, size_t *n)
{
    struct use top = h[0], last = h[--*n];
    size_t i = 0;
    for (;;) {
        size_t kid = 2 * i + 1;
        if (kid >= *n)
            break;
        if (kid + 1 < *n && h[kid + 1].next > h[kid].next)
            kid++;
        if (h[kid].next <= last.next)
            break;
        h[i] = h[kid];
        i = kid;
    }
    if (*n)
        h[i] = last;
    return top;
}

int expert_trace_belady(const expert_trace_t *t, uint32_t gpu_slots, uint64_t *ret_hits)
{
    if (!t || !ret_hits || gpu_slots == 0)
        return -EINVAL;
    if (t->max_batch > gpu_slots)
        return -E2BIG;
    size_t n_keys = (size_t)t->n_layer * t->n_expert, n_heap = 0, used = 0;
    uint64_t hits = 0;
    int r = -ENOMEM;
    size_t *next = malloc((t->n_access ? t->n_access : 1) * sizeof(*next)); /* per access */
    size_t *cur = malloc(n_keys * sizeof(*cur)); /* next use of the resident copy / scratch */
    uint8_t *resident = calloc(n_keys, 1);
    struct use *heap = malloc((t->n_access ? t->n_access : 1) * sizeof(*heap));
    if (!next || !cur || !resident || !heap)
        goto out;

    /* Backward pass: next[a] = batch of the next access to the same key. */
    for (size_t k = 0; k < n_keys; k++)
        cur[k] = NEVER;
    for (size_t b = t->n_batch; b-- > 0;) {
        uint32_t base = (uint32_t)t->layer[b] * t->n_expert;
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
            next[a] = cur[base + t->ids[a]];
            cur[base + t->ids[a]] = b;
        }
    }
    /* Forward pass. cur[key] of a resident key = its next use (== b inside batch b). */
    for (size_t b = 0; b < t->n_batch; b++) {
        uint32_t base = (uint32_t)t->layer[b] * t->n_expert;
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
            uint32_t key = base + t->ids[a];
            if (resident[key]) {
                hits++;
                continue;
            }
            if (used < gpu_slots) {
                used++;
                continue;
            }
            for (;;) { /* the valid entry furthest in the future; never one of batch b */
                if (n_heap == 0) { /* cannot happen while every batch fits */
                    r = -EUCLEAN;
                    goto out;
                }
                struct use u = use_pop(heap, &n_heap);
                if (resident[u.key] && cur[u.key] == u.next && u.next != b) {
                    resident[u.key] = 0;
                    break;
                }
            }
        }
        for (size_t a = t->start[b]; a < t->start[b + 1]; a++) {
            uint32_t key = base + t->ids[a];
            resident[key] = 1;
            cur[key] = next[a];
            use_push(heap, &n_heap, (struct use){.next = next[a], .key = key});
        }
    }
    *ret_hits = hits;
    r = 0;
out:
    free(next);
    free(cur);
    free(resident);
    free(heap);
    return r;
}
