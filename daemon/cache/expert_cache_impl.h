/* Internals of the expert cache shared by expert_cache.c (the cache) and
 * expert_cache_check.c (its invariant checker). Not for use outside daemon/cache/. */
#pragma once
#include <stdbool.h>
#include <stdint.h>

#include "cache/expert_cache.h"

#define NONE EXPERT_SLOT_NONE

enum gslot_state { GS_FREE = 0, GS_LOADING, GS_RESIDENT, GS_FAILED };
enum load_src { SRC_DISK = 0, SRC_HOST };
enum policy_where { IN_NONE = 0, IN_LIST, IN_HEAP };

struct gslot {
    uint32_t key;        /* layer * n_expert + expert, NONE when free */
    uint32_t prev, next; /* LRU list or LFRU window list links; free slots: free stack */
    uint32_t heap_pos;   /* LFRU: index in heap[], NONE when not in it */
    uint32_t pins;
    uint8_t where;     /* enum policy_where: which policy structure holds it */
    uint8_t state;     /* enum gslot_state */
    uint8_t src;       /* enum load_src of the load in flight */
    uint8_t spec;      /* loaded by prefetch and not acquired since */
    uint64_t last_use; /* tick of the last reference (or of the prefetch) */
    double hkey;       /* LFRU: heap key while evictable */
};

struct hslot {
    uint32_t key;        /* NONE when free */
    uint32_t prev, next; /* host LRU list (unbusy used slots); free slots: free stack */
    uint32_t busy;       /* HOST_HIT copies in flight from this slot */
};

struct entry {
    uint32_t gpu;  /* GPU slot or NONE */
    uint32_t host; /* host slot or NONE */
    uint32_t mark; /* == cache epoch while in the batch being validated */
    double score;  /* LFRU: log2(decayed reference count) + lambda * tick of last ref */
};

struct expert_cache {
    expert_cache_params_t p;
    double lambda; /* LFRU decay per tick: 1 / half_life */
    uint64_t now;  /* tick: acquire_batch calls so far */
    uint32_t epoch;
    uint32_t step;
    expert_trace_writer_t *trace;

    struct entry *entries;       /* [n_layer * n_expert] */
    expert_cache_stats_t *stats; /* [n_layer] */

    struct gslot *g; /* [gpu_slots + 1]; g[gpu_slots] is the LRU sentinel */
    uint32_t g_free; /* head of the free stack */
    uint32_t g_used;
    uint32_t spec_loading; /* speculative loads in flight (<= prefetch_max) */
    uint32_t *heap;        /* [gpu_slots] LFRU min-heap of evictable slots */
    uint32_t heap_n;

    struct hslot *h; /* [host_slots + 1]; h[host_slots] is the LRU sentinel */
    uint32_t h_free;
    uint32_t h_used;
};

/* LFRU heap order: smaller hkey, then older last_use, then lower slot index. */
static inline bool ec_heap_less(const expert_cache_t *c, uint32_t a, uint32_t b)
{
    const struct gslot *x = &c->g[a], *y = &c->g[b];
    if (x->hkey != y->hkey)
        return x->hkey < y->hkey;
    if (x->last_use != y->last_use)
        return x->last_use < y->last_use;
    return a < b;
}
