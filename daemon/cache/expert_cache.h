/* The expert cache: which (layer, expert) lives in which slot of the GPU tier and of the
 * optional host-RAM tier, who is using it, and which one to evict.
 *
 * The cache is storage-agnostic. It hands out slot indices and tracks residency; the engine
 * owns the memory behind the slots (GPU tier: fixed-size slots, each big enough for the
 * model's largest expert, spread over several Vulkan buffers; host tier: slots in a host RAM
 * pool) and performs every read and copy the cache asks for. One engine thread owns a cache;
 * nothing here locks.
 *
 * One decode step of one layer:
 *
 *     expert_cache_acquire_batch(c, layer, ids, n, res);   pins every id, says per id:
 *       EXPERT_HIT        resident in GPU slot res.slot: use it
 *       EXPERT_MISS_LOAD  GPU slot res.slot reserved: read the expert from disk into it,
 *                         then expert_cache_load_done(c, layer, id, 0 or -errno)
 *       EXPERT_HOST_HIT   GPU slot res.slot reserved: copy host slot res.host_slot into it
 *                         (no disk read), then expert_cache_load_done(...)
 *       EXPERT_PENDING    a load into res.slot is already in flight (an earlier acquire or
 *                         a prefetch): wait for that load's load_done; never read it twice
 *       EXPERT_BUSY       not pinned: every GPU slot is pinned or loading. acquire_batch
 *                         then returns -EBUSY; run the step in waves (release, acquire the
 *                         rest).
 *     ... expert FFN through the slot table ...
 *     expert_cache_release(c, layer, ids, n);              unpins (not the BUSY ones)
 *
 * Whenever a result (of acquire or prefetch) carries demote_host_slot != EXPERT_SLOT_NONE,
 * the slot's previous expert is being demoted to the host tier: copy GPU slot res.slot into
 * host slot demote_host_slot before anything is written into res.slot. The engine performs
 * the copies of one batch in result order (demotions before loads).
 *
 * Weights are immutable, so an expert may have a copy in both tiers at once: a HOST_HIT
 * keeps the host copy, and an expert evicted from the GPU tier is copied down only when the
 * host tier does not hold it yet. Loads from disk go straight to the GPU tier.
 *
 * Policies (GPU tier): EXPERT_POLICY_LRU (intrusive list, O(1) per access) and
 * EXPERT_POLICY_LFRU, frequency-aware: every reference adds 1 to a counter of the
 * (layer, expert) that halves every half_life ticks (LRFU); slots referenced within the
 * last `window` ticks (default: one decode step) are kept in LRU order and are not victims
 * while older slots exist; the older ones sit in a min-heap on their counter. O(log n) per
 * access. Counters belong to (layer, expert), not to slots, so a hot expert that was
 * evicted comes back with its history, and a merely recent expert, once out of the
 * window, goes before a hot one. The host tier is always LRU. A tick is one
 * acquire_batch call (one layer of one step).
 *
 * Prefetch (speculative loads) never pins, never evicts a pinned, loading or hot slot, and
 * never makes demand wait: it takes a free slot, or the policy's victim only if that victim
 * is cold (weaker than one reference made cold_ticks ago) and not itself an unused
 * prefetch, and at most prefetch_max guesses are in flight at once. A failed load (demand
 * or speculative) gives its slot back. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define EXPERT_SLOT_NONE UINT32_MAX
#define EXPERT_LAYER_ALL UINT32_MAX

typedef struct expert_cache expert_cache_t;
typedef struct expert_trace_writer expert_trace_writer_t;

typedef enum {
    EXPERT_POLICY_LRU = 0,
    EXPERT_POLICY_LFRU = 1,
    EXPERT_POLICY_COUNT_,
} expert_policy_t;

typedef struct {
    uint32_t n_layer;    /* layers with experts; 1..65535 */
    uint32_t n_expert;   /* experts per layer; 1..65535 */
    uint32_t gpu_slots;  /* >= 1; see expert_cache_slots_for_budget */
    uint32_t host_slots; /* 0 = no host tier */
    expert_policy_t policy;
    uint64_t expert_bytes; /* bytes one load moves, for the byte counters; may be 0 */
    uint32_t half_life;    /* LFRU: ticks for a reference to lose half its weight;
                            * 0 = default (64 * n_layer, 64 decode steps) */
    uint32_t window;       /* LFRU: slots referenced in the last `window` ticks are
                            * not victims while older ones exist; 0 = default
                            * (n_layer: what the previous token used) */
    uint32_t prefetch_max; /* speculative loads in flight at most; 0 = default
                            * (gpu_slots / 4, at least 1), so guesses can never tie
                            * up the slots demand needs */
    uint32_t cold_ticks;   /* prefetch may evict only victims weaker than one reference
                            * made cold_ticks ago; 0 = default (n_layer, one step) */
} expert_cache_params_t;

typedef enum {
    EXPERT_HIT = 0,
    EXPERT_MISS_LOAD,
    EXPERT_HOST_HIT,
    EXPERT_PENDING,
    EXPERT_BUSY,
} expert_status_t;

typedef struct {
    uint32_t status;           /* expert_status_t */
    uint32_t slot;             /* GPU slot; EXPERT_SLOT_NONE when BUSY */
    uint32_t host_slot;        /* HOST_HIT: copy from this host slot; else NONE */
    uint32_t demote_host_slot; /* != NONE: copy GPU slot `slot` (its old expert) into this
                                * host slot before filling `slot` */
} expert_result_t;

/* Residency of one (layer, expert), for callers and tests. */
typedef enum {
    EXPERT_STATE_ABSENT = 0, /* no GPU slot */
    EXPERT_STATE_LOADING,    /* GPU slot reserved, one read or copy in flight */
    EXPERT_STATE_RESIDENT,   /* in its GPU slot (pinned when pins > 0) */
    EXPERT_STATE_FAILED,     /* its load failed while pinned; slot freed at last release,
                              * or re-armed (MISS_LOAD) by the next acquire */
} expert_state_t;

typedef struct {
    expert_state_t state;
    uint32_t slot; /* GPU slot or NONE */
    uint32_t pins;
    uint32_t host_slot; /* host tier copy or NONE */
    bool speculative;   /* loaded by prefetch, not used yet */
} expert_info_t;

typedef struct {
    uint64_t hits;           /* acquire found it resident */
    uint64_t misses;         /* acquire reserved a slot for a disk read */
    uint64_t host_hits;      /* acquire reserved a slot for a copy from the host tier */
    uint64_t pending;        /* acquire joined a load already in flight */
    uint64_t busy;           /* acquire could not pin (every slot pinned) */
    uint64_t evictions;      /* GPU tier evictions of this layer's experts */
    uint64_t demotions;      /* of those, copied down to the host tier */
    uint64_t host_evictions; /* host tier evictions of this layer's experts */
    uint64_t bytes_read;     /* expert_bytes per successful disk load (demand + prefetch) */
    uint64_t bytes_host;     /* expert_bytes per successful host -> GPU copy */
    uint64_t load_failures;
    uint64_t prefetch_issued; /* speculative loads reserved */
    uint64_t prefetch_used;   /* ... later acquired before eviction */
    uint64_t prefetch_wasted; /* ... evicted unused or failed */
} expert_cache_stats_t;

/* Number of slots of slot_bytes that fit in budget_bytes. -EINVAL when slot_bytes is 0,
 * -ERANGE when the count does not fit in a slot index. 0 slots is a valid answer. */
int expert_cache_slots_for_budget(uint64_t budget_bytes, uint64_t slot_bytes, uint32_t *ret_slots);

/* Creates an empty cache (all slots free). -EINVAL for out-of-range params, -ENOMEM. */
int expert_cache_new(const expert_cache_params_t *p, expert_cache_t **ret);
expert_cache_t *expert_cache_free(expert_cache_t *c);

/* Pins ids[0..n) of layer (distinct, < n_expert) and fills res[0..n) as described at the
 * top. Returns 0, -EBUSY when some ids are BUSY (res is filled for every id then; the
 * others are pinned and must be released), or -EINVAL (bad layer/id, duplicate id; nothing
 * changed). O(n) for LRU, O(n log slots) for LFRU; no allocation. */
int expert_cache_acquire_batch(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n,
                               expert_result_t *res);

/* Unpins ids[0..n) of layer, one pin each. -EINVAL (nothing changed) when one is not
 * pinned or repeated. A FAILED expert's slot is freed at its last release. */
int expert_cache_release(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n);

/* Ends the load (disk read or host copy) of (layer, e): err 0 makes it RESIDENT; err < 0
 * frees its slot when nobody pins it (a failed prefetch), else marks it FAILED. -EINVAL
 * when (layer, e) is not LOADING. */
int expert_cache_load_done(expert_cache_t *c, uint32_t layer, uint16_t e, int err);

/* Reserves slots for speculative loads of ids (distinct) of layer without pinning them.
 * Per id: MISS_LOAD or HOST_HIT (a load reserved: do it and call load_done), HIT or PENDING
 * (already there or on its way: nothing to do), BUSY (skipped: no free slot, no cold
 * victim, prefetch_max guesses already in flight, or FAILED). Returns the number of loads
 * reserved, or -EINVAL. */
int expert_cache_prefetch(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n,
                          expert_result_t *res);

/* Residency of (layer, e). -EINVAL when out of range. */
int expert_cache_lookup(const expert_cache_t *c, uint32_t layer, uint16_t e, expert_info_t *ret);

/* Counters of one layer, or the sum over layers with EXPERT_LAYER_ALL. -EINVAL. */
int expert_cache_get_stats(const expert_cache_t *c, uint32_t layer, expert_cache_stats_t *ret);
void expert_cache_reset_stats(expert_cache_t *c);

/* Slots in use (reserved, loading, resident, failed-but-pinned) per tier. */
uint32_t expert_cache_gpu_used(const expert_cache_t *c);
uint32_t expert_cache_host_used(const expert_cache_t *c);
const expert_cache_params_t *expert_cache_params(const expert_cache_t *c);

/* Records every acquire_batch as (step, layer, ids) into w (NULL stops recording); the
 * step is the last one given to expert_cache_set_step. The cache does not own w. */
void expert_cache_set_trace(expert_cache_t *c, expert_trace_writer_t *w);
void expert_cache_set_step(expert_cache_t *c, uint32_t step);

/* Walks every structure (O(slots + experts)) and checks the invariants listed in
 * expert_cache.c. 0, or -EUCLEAN with a reason in err. For tests and debug builds. */
int expert_cache_check(const expert_cache_t *c, char *err, size_t errlen);

const char *expert_policy_name(expert_policy_t p);
/* "lru" / "lfru" -> policy. -EINVAL for other names. */
int expert_policy_from_name(const char *name, expert_policy_t *ret);
