/* The expert cache: residency, pinning and eviction of (layer, expert) over a GPU tier of
 * fixed-size slots and an optional host-RAM tier (see expert_cache.h for the calling
 * protocol). The engine thread calls it a few times per layer of every decode step, so
 * nothing here allocates after expert_cache_new, nothing scans all slots per access, and
 * every public function checks its arguments before it changes anything.
 *
 * Residency of one (layer, expert) in the GPU tier, and the function for each transition:
 *
 *            acquire_batch (MISS_LOAD/HOST_HIT, pinned)
 *            prefetch      (MISS_LOAD/HOST_HIT, unpinned, speculative)
 *   ABSENT ----------------------------------------------> LOADING
 *     ^  ^                                                 |   |
 *     |  | load_done(err) with no pins                     |   | load_done(0)
 *     |  +-------------------------------------------------+   v
 *     |                                                     RESIDENT, pinned (pins > 0)
 *     |                                      acquire_batch  ^   | release (last pin)
 *     |                                         (HIT)       |   v
 *     +--------------- acquire_batch/prefetch evict ----- RESIDENT, evictable (pins == 0)
 *                      (the policy's victim; demoted         (in the policy's list/heap)
 *                       to the host tier when enabled)
 *
 *   LOADING --load_done(0) with no pins (a prefetch nobody acquired yet)--> evictable
 *   LOADING --load_done(err) with pins--> FAILED --release (last pin)--> ABSENT
 *   FAILED  --acquire_batch (re-arms the same slot: MISS_LOAD/HOST_HIT)--> LOADING
 *   LOADING --acquire_batch--> LOADING with one more pin (PENDING: the read is shared)
 *
 * Host tier, per (layer, expert): ABSENT -> RESIDENT by a demotion (acquire_batch/prefetch
 * evicting its GPU copy) -> busy while a HOST_HIT copies from it (acquire_batch/prefetch
 * until load_done) -> RESIDENT -> ABSENT when host_take evicts it (host LRU).
 *
 * Invariants (expert_cache_check verifies them all):
 *  - entry.gpu == s  <=>  gslot[s].key == entry, and likewise for the host tier;
 *  - slots in use (LOADING, RESIDENT, FAILED) + free slots == tier size, so the tier is
 *    never over budget; a failed load returns its slot (at once, or at the last release);
 *  - a slot is in the policy structure (the LRU list; LFRU's window list or heap)  <=>
 *    RESIDENT and unpinned, so eviction can only pick an unpinned, fully loaded slot;
 *  - FAILED slots are pinned; speculative (prefetched, unused) slots are unpinned;
 *  - host busy counts sum to the number of GPU slots LOADING from the host tier, and busy
 *    host slots are not in the host LRU list (a copy source is never evicted). */
#include "cache/expert_cache.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/expert_cache_impl.h"
#include "cache/expert_trace.h"

/* ---- intrusive lists (sentinel-terminated, circular) ---- */

#define LIST_OPS(name, type)                                                                       \
    static void name##_unlink(type *a, uint32_t i)                                                 \
    {                                                                                              \
        a[a[i].prev].next = a[i].next;                                                             \
        a[a[i].next].prev = a[i].prev;                                                             \
        a[i].prev = a[i].next = NONE;                                                              \
    }                                                                                              \
    static void name##_push_back(type *a, uint32_t sentinel, uint32_t i)                           \
    {                                                                                              \
        uint32_t last = a[sentinel].prev;                                                          \
        a[i].prev = last;                                                                          \
        a[i].next = sentinel;                                                                      \
        a[last].next = i;                                                                          \
        a[sentinel].prev = i;                                                                      \
    }

LIST_OPS(glist, struct gslot)
LIST_OPS(hlist, struct hslot)

/* ---- LFRU heap (min on hkey, then older last_use, then slot index) ---- */

static void heap_set(expert_cache_t *c, uint32_t pos, uint32_t s)
{
    c->heap[pos] = s;
    c->g[s].heap_pos = pos;
}

static void heap_sift_up(expert_cache_t *c, uint32_t pos)
{
    uint32_t s = c->heap[pos];
    while (pos > 0) {
        uint32_t parent = (pos - 1) / 2;
        if (!ec_heap_less(c, s, c->heap[parent]))
            break;
        heap_set(c, pos, c->heap[parent]);
        pos = parent;
    }
    heap_set(c, pos, s);
}

static void heap_sift_down(expert_cache_t *c, uint32_t pos)
{
    uint32_t s = c->heap[pos];
    for (;;) {
        uint32_t kid = 2 * pos + 1;
        if (kid >= c->heap_n)
            break;
        if (kid + 1 < c->heap_n && ec_heap_less(c, c->heap[kid + 1], c->heap[kid]))
            kid++;
        if (!ec_heap_less(c, c->heap[kid], s))
            break;
        heap_set(c, pos, c->heap[kid]);
        pos = kid;
    }
    heap_set(c, pos, s);
}

static void heap_remove(expert_cache_t *c, uint32_t s)
{
    uint32_t pos = c->g[s].heap_pos, last = c->heap[--c->heap_n];
    c->g[s].heap_pos = NONE;
    if (pos == c->heap_n)
        return;
    heap_set(c, pos, last);
    heap_sift_down(c, pos);
    heap_sift_up(c, c->g[last].heap_pos);
}

/* ---- the policy: the set of evictable (RESIDENT, unpinned) GPU slots ----
 *
 * LRU: one list, least recent first. LFRU: a window list (LRU order) of slots referenced
 * in the last `window` ticks, never victims while the heap has any, and a min-heap of the
 * others keyed by their decayed reference count. Slots leave the window for the heap as
 * they age (lfru_age, from policy_victim), each once per stay, so both are O(log n) per
 * access. The window keeps what the previous token used (the strongest short-term
 * signal); the heap ranks the rest by long-term heat, so a one-off expert goes before a
 * hot one once it has left the window. The list is in release order, which is reference
 * order up to the length of a step, so aging stops at the first slot still in the window.
 * When the window holds every evictable slot (a tier of about one step's experts) LFRU
 * is LRU; capping the window's share of the tier was measured and lost hits. */

static void policy_insert(expert_cache_t *c, uint32_t s)
{
    struct gslot *g = &c->g[s];
    glist_push_back(c->g, c->p.gpu_slots, s);
    g->where = IN_LIST;
}

static void heap_insert(expert_cache_t *c, uint32_t s)
{
    struct gslot *g = &c->g[s];
    /* An unused prefetch ranks as one reference at prefetch time, so the next prefetch
     * of the same round does not take its slot. */
    g->hkey = c->entries[g->key].score;
    if (g->spec && g->hkey < c->lambda * (double)g->last_use)
        g->hkey = c->lambda * (double)g->last_use;
    g->where = IN_HEAP;
    c->heap_n++;
    heap_set(c, c->heap_n - 1, s);
    heap_sift_up(c, c->heap_n - 1);
}

static void policy_remove(expert_cache_t *c, uint32_t s)
{
    if (c->g[s].where == IN_LIST)
        glist_unlink(c->g, s);
    else
        heap_remove(c, s);
    c->g[s].where = IN_NONE;
}

/* LFRU: slots whose last reference left the window move to the heap. */
static void lfru_age(expert_cache_t *c)
{
    uint32_t sentinel = c->p.gpu_slots;
    while (c->g[sentinel].next != sentinel) {
        uint32_t s = c->g[sentinel].next;
        if (c->g[s].last_use + c->p.window >= c->now)
            break;
        glist_unlink(c->g, s);
        heap_insert(c, s);
    }
}

static uint32_t policy_victim(expert_cache_t *c)
{
    uint32_t first = c->g[c->p.gpu_slots].next;
    if (c->p.policy == EXPERT_POLICY_LFRU) {
        lfru_age(c);
        if (c->heap_n)
            return c->heap[0];
        first = c->g[c->p.gpu_slots].next;
    }
    return first == c->p.gpu_slots ? NONE : first;
}

/* Cold: weaker than a single reference made cold_ticks ago. */
static bool policy_is_cold(const expert_cache_t *c, uint32_t s)
{
    const struct gslot *g = &c->g[s];
    if (c->now < c->p.cold_ticks)
        return false;
    uint64_t horizon = c->now - c->p.cold_ticks;
    if (g->where == IN_LIST)
        return g->last_use < horizon;
    return g->hkey < c->lambda * (double)horizon;
}

/* One reference to entry `key` at the current tick (LFRU's decayed counter). */
static void policy_reference(expert_cache_t *c, uint32_t key)
{
    if (c->p.policy != EXPERT_POLICY_LFRU)
        return;
    struct entry *en = &c->entries[key];
    double t = c->lambda * (double)c->now;
    en->score = t + log2(1.0 + exp2(en->score - t));
}

/* ---- host tier ---- */

static void host_pin(expert_cache_t *c, uint32_t h)
{
    if (c->h[h].busy++ == 0)
        hlist_unlink(c->h, h);
}

static void host_unpin(expert_cache_t *c, uint32_t h)
{
    if (--c->h[h].busy == 0)
        hlist_push_back(c->h, c->p.host_slots, h);
}

/* A host slot for a demotion: a free one, else the host LRU victim (dropped). NONE when
 * every used host slot is busy. */
static uint32_t host_take(expert_cache_t *c)
{
    uint32_t h = c->h_free;
    if (h != NONE) {
        c->h_free = c->h[h].next;
        c->h_used++;
        return h;
    }
    h = c->h[c->p.host_slots].next;
    if (h == c->p.host_slots)
        return NONE;
    hlist_unlink(c->h, h);
    uint32_t key = c->h[h].key;
    c->entries[key].host = NONE;
    c->stats[key / c->p.n_expert].host_evictions++;
    return h;
}

/* ---- GPU slots ---- */

/* Evicts GPU slot s (evictable) and returns the host slot its expert is demoted to, or
 * NONE when it is dropped. */
static uint32_t gpu_evict(expert_cache_t *c, uint32_t s)
{
    struct gslot *g = &c->g[s];
    uint32_t key = g->key, demote = NONE;
    struct entry *en = &c->entries[key];
    expert_cache_stats_t *st = &c->stats[key / c->p.n_expert];

    policy_remove(c, s);
    st->evictions++;
    if (g->spec) {
        st->prefetch_wasted++; /* a wrong guess is not worth host RAM */
    } else if (c->p.host_slots && en->host == NONE) {
        demote = host_take(c);
        if (demote != NONE) {
            c->h[demote].key = key;
            hlist_push_back(c->h, c->p.host_slots, demote);
            en->host = demote;
            st->demotions++;
        }
    }
    en->gpu = NONE;
    g->key = NONE;
    g->state = GS_FREE;
    g->spec = 0;
    c->g_used--;
    return demote;
}

static void gpu_free(expert_cache_t *c, uint32_t s)
{
    struct gslot *g = &c->g[s];
    c->entries[g->key].gpu = NONE;
    g->key = NONE;
    g->state = GS_FREE;
    g->pins = 0;
    g->spec = 0;
    g->next = c->g_free;
    c->g_free = s;
    c->g_used--;
}

/* A slot to load into: a free one, else the policy's victim when `victim_ok` accepts it
 * (demand: any; prefetch: cold and not an unused prefetch). NONE when there is none. */
static uint32_t gpu_take(expert_cache_t *c, bool speculative, uint32_t *ret_demote)
{
    uint32_t s = c->g_free;
    *ret_demote = NONE;
    if (s != NONE) {
        c->g_free = c->g[s].next;
        c->g_used++;
        return s;
    }
    s = policy_victim(c);
    if (s == NONE)
        return NONE;
    if (speculative && (c->g[s].spec || !policy_is_cold(c, s)))
        return NONE;
    *ret_demote = gpu_evict(c, s);
    c->g_used++;
    return s;
}

/* Starts a load into slot s (already holding key): from the host tier when it has a copy
 * (whose pin the caller already holds or that is pinned here), else from disk. */
static void gpu_begin_load(expert_cache_t *c, uint32_t s, bool host_pinned, expert_result_t *r)
{
    struct gslot *g = &c->g[s];
    struct entry *en = &c->entries[g->key];
    expert_cache_stats_t *st = &c->stats[g->key / c->p.n_expert];

    g->state = GS_LOADING;
    g->last_use = c->now;
    r->slot = s;
    if (en->host != NONE) {
        if (!host_pinned)
            host_pin(c, en->host);
        g->src = SRC_HOST;
        r->status = EXPERT_HOST_HIT;
        r->host_slot = en->host;
    } else {
        g->src = SRC_DISK;
        r->status = EXPERT_MISS_LOAD;
    }
    if (!g->spec) {
        if (r->status == EXPERT_HOST_HIT)
            st->host_hits++;
        else
            st->misses++;
    }
}

/* Acquire of an expert that has a GPU slot: one more pin, and HIT, PENDING, or (FAILED)
 * a new load in the same slot. */
static void pin_existing(expert_cache_t *c, uint32_t key, expert_result_t *r)
{
    uint32_t s = c->entries[key].gpu;
    struct gslot *g = &c->g[s];
    expert_cache_stats_t *st = &c->stats[key / c->p.n_expert];

    policy_reference(c, key);
    if (g->state == GS_RESIDENT && g->pins == 0)
        policy_remove(c, s);
    g->pins++;
    g->last_use = c->now;
    if (g->spec) {
        g->spec = 0;
        st->prefetch_used++;
        if (g->state == GS_LOADING)
            c->spec_loading--; /* demand's read now */
    }
    r->slot = s;
    if (g->state == GS_RESIDENT) {
        r->status = EXPERT_HIT;
        st->hits++;
    } else if (g->state == GS_LOADING) {
        r->status = EXPERT_PENDING;
        st->pending++;
    } else { /* GS_FAILED: this acquire re-arms the load in the same slot */
        gpu_begin_load(c, s, false, r);
    }
}

/* ---- argument checks ---- */

/* Marks ids as this call's batch; -EINVAL on an id out of range or repeated. */
static int check_batch(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n)
{
    if (layer >= c->p.n_layer || (n && !ids) || n > c->p.n_expert)
        return -EINVAL;
    if (++c->epoch == 0) { /* wrapped: forget every old mark */
        for (size_t i = 0; i < (size_t)c->p.n_layer * c->p.n_expert; i++)
            c->entries[i].mark = 0;
        c->epoch = 1;
    }
    for (size_t i = 0; i < n; i++) {
        if (ids[i] >= c->p.n_expert)
            return -EINVAL;
        struct entry *en = &c->entries[layer * c->p.n_expert + ids[i]];
        if (en->mark == c->epoch)
            return -EINVAL;
        en->mark = c->epoch;
    }
    return 0;
}

static void result_init(expert_result_t *r)
{
    r->status = EXPERT_BUSY;
    r->slot = r->host_slot = r->demote_host_slot = NONE;
}

/* ---- public API ---- */

int expert_cache_slots_for_budget(uint64_t budget_bytes, uint64_t slot_bytes, uint32_t *ret_slots)
{
    if (!slot_bytes || !ret_slots)
        return -EINVAL;
    uint64_t n = budget_bytes / slot_bytes;
    if (n >= NONE)
        return -ERANGE;
    *ret_slots = (uint32_t)n;
    return 0;
}

int expert_cache_new(const expert_cache_params_t *p, expert_cache_t **ret)
{
    if (!p || !ret || p->n_layer == 0 || p->n_layer > UINT16_MAX || p->n_expert == 0 ||
        p->n_expert > UINT16_MAX || p->gpu_slots == 0 || p->gpu_slots >= NONE - 1 ||
        p->host_slots >= NONE - 1 || (unsigned)p->policy >= EXPERT_POLICY_COUNT_)
        return -EINVAL;

    expert_cache_t *c = calloc(1, sizeof(*c));
    if (!c)
        return -ENOMEM;
    c->p = *p;
    if (!c->p.half_life)
        c->p.half_life = 64 * p->n_layer;
    if (!c->p.window)
        c->p.window = p->n_layer;
    if (!c->p.prefetch_max)
        c->p.prefetch_max = p->gpu_slots / 4 ? p->gpu_slots / 4 : 1;
    if (!c->p.cold_ticks)
        c->p.cold_ticks = p->n_layer;
    c->lambda = 1.0 / c->p.half_life;

    size_t n_keys = (size_t)p->n_layer * p->n_expert;
    c->entries = calloc(n_keys, sizeof(*c->entries));
    c->stats = calloc(p->n_layer, sizeof(*c->stats));
    c->g = calloc((size_t)p->gpu_slots + 1, sizeof(*c->g));
    c->heap = calloc(p->gpu_slots, sizeof(*c->heap));
    c->h = calloc((size_t)p->host_slots + 1, sizeof(*c->h));
    if (!c->entries || !c->stats || !c->g || !c->heap || !c->h)
        goto fail;

    for (size_t i = 0; i < n_keys; i++) {
        c->entries[i].gpu = c->entries[i].host = NONE;
        c->entries[i].score = -INFINITY;
    }
    for (uint32_t s = 0; s <= p->gpu_slots; s++) {
        c->g[s].key = NONE;
        c->g[s].heap_pos = NONE;
        c->g[s].prev = NONE;
        c->g[s].next = s + 1 < p->gpu_slots ? s + 1 : NONE; /* free stack 0, 1, ... */
    }
    c->g[p->gpu_slots].prev = c->g[p->gpu_slots].next = p->gpu_slots;
    c->g_free = 0;
    for (uint32_t h = 0; h <= p->host_slots; h++) {
        c->h[h].key = NONE;
        c->h[h].prev = NONE;
        c->h[h].next = h + 1 < p->host_slots ? h + 1 : NONE;
    }
    c->h[p->host_slots].prev = c->h[p->host_slots].next = p->host_slots;
    c->h_free = p->host_slots ? 0 : NONE;
    *ret = c;
    return 0;

fail:
    expert_cache_free(c);
    return -ENOMEM;
}

expert_cache_t *expert_cache_free(expert_cache_t *c)
{
    if (!c)
        return NULL;
    free(c->h);
    free(c->heap);
    free(c->g);
    free(c->stats);
    free(c->entries);
    free(c);
    return NULL;
}

int expert_cache_acquire_batch(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n,
                               expert_result_t *res)
{
    if (!c || (n && !res))
        return -EINVAL;
    int r = check_batch(c, layer, ids, n);
    if (r < 0)
        return r;
    c->now++;
    if (c->trace && n)
        (void)expert_trace_writer_append(c->trace, c->step, layer, ids, n);

    /* Pass 1: pin everything that already has a GPU slot, so that the misses of this
     * batch cannot evict its hits; hold the host copies the misses will copy from. */
    for (size_t i = 0; i < n; i++) {
        uint32_t key = layer * c->p.n_expert + ids[i];
        struct entry *en = &c->entries[key];
        result_init(&res[i]);
        if (en->gpu != NONE)
            pin_existing(c, key, &res[i]);
        else if (en->host != NONE) /* stays EXPERT_BUSY until pass 2 finds it a slot */
            host_pin(c, en->host);
    }

    /* Pass 2: a slot for each miss, evicting the policy's victims. */
    expert_cache_stats_t *st = &c->stats[layer];
    bool busy = false;
    for (size_t i = 0; i < n; i++) {
        if (res[i].status != EXPERT_BUSY)
            continue;
        uint32_t key = layer * c->p.n_expert + ids[i];
        struct entry *en = &c->entries[key];
        uint32_t demote, s = gpu_take(c, false, &demote);
        if (s == NONE) {
            if (en->host != NONE)
                host_unpin(c, en->host);
            st->busy++;
            busy = true;
            continue;
        }
        struct gslot *g = &c->g[s];
        g->key = key;
        g->pins = 1;
        g->spec = 0;
        en->gpu = s;
        res[i].demote_host_slot = demote;
        policy_reference(c, key);
        gpu_begin_load(c, s, true, &res[i]);
    }
    return busy ? -EBUSY : 0;
}

int expert_cache_release(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n)
{
    if (!c)
        return -EINVAL;
    int r = check_batch(c, layer, ids, n);
    if (r < 0)
        return r;
    for (size_t i = 0; i < n; i++) {
        uint32_t s = c->entries[layer * c->p.n_expert + ids[i]].gpu;
        if (s == NONE || c->g[s].pins == 0)
            return -EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t s = c->entries[layer * c->p.n_expert + ids[i]].gpu;
        struct gslot *g = &c->g[s];
        if (--g->pins)
            continue;
        if (g->state == GS_RESIDENT)
            policy_insert(c, s);
        else if (g->state == GS_FAILED)
            gpu_free(c, s);
        /* GS_LOADING: stays reserved until load_done */
    }
    return 0;
}

int expert_cache_load_done(expert_cache_t *c, uint32_t layer, uint16_t e, int err)
{
    if (!c || layer >= c->p.n_layer || e >= c->p.n_expert || err > 0)
        return -EINVAL;
    uint32_t key = layer * c->p.n_expert + e;
    struct entry *en = &c->entries[key];
    if (en->gpu == NONE || c->g[en->gpu].state != GS_LOADING)
        return -EINVAL;
    uint32_t s = en->gpu;
    struct gslot *g = &c->g[s];
    expert_cache_stats_t *st = &c->stats[layer];

    if (g->src == SRC_HOST)
        host_unpin(c, en->host);
    if (g->spec)
        c->spec_loading--;
    if (err < 0) {
        st->load_failures++;
        if (g->spec)
            st->prefetch_wasted++;
        if (g->pins == 0)
            gpu_free(c, s); /* nobody waits: the reservation goes back at once */
        else
            g->state = GS_FAILED;
        return 0;
    }
    if (g->src == SRC_HOST)
        st->bytes_host += c->p.expert_bytes;
    else
        st->bytes_read += c->p.expert_bytes;
    g->state = GS_RESIDENT;
    if (g->pins == 0)
        policy_insert(c, s);
    return 0;
}

int expert_cache_prefetch(expert_cache_t *c, uint32_t layer, const uint16_t *ids, size_t n,
                          expert_result_t *res)
{
    if (!c || (n && !res))
        return -EINVAL;
    int r = check_batch(c, layer, ids, n);
    if (r < 0)
        return r;
    int issued = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t key = layer * c->p.n_expert + ids[i];
        struct entry *en = &c->entries[key];
        expert_result_t *ri = &res[i];
        result_init(ri);
        if (en->gpu != NONE) {
            uint8_t state = c->g[en->gpu].state;
            if (state != GS_FAILED) {
                ri->slot = en->gpu;
                ri->status = state == GS_RESIDENT ? EXPERT_HIT : EXPERT_PENDING;
            }
            continue;
        }
        if (c->spec_loading >= c->p.prefetch_max)
            continue; /* enough guesses in flight: leave the rest of the tier to demand */
        if (en->host != NONE)
            host_pin(c, en->host); /* keep the copy source while taking a GPU slot */
        uint32_t demote, s = gpu_take(c, true, &demote);
        if (s == NONE) {
            if (en->host != NONE)
                host_unpin(c, en->host);
            continue;
        }
        struct gslot *g = &c->g[s];
        g->key = key;
        g->pins = 0;
        g->spec = 1;
        en->gpu = s;
        ri->demote_host_slot = demote;
        gpu_begin_load(c, s, true, ri);
        c->spec_loading++;
        c->stats[layer].prefetch_issued++;
        issued++;
    }
    return issued;
}

int expert_cache_lookup(const expert_cache_t *c, uint32_t layer, uint16_t e, expert_info_t *ret)
{
    if (!c || !ret || layer >= c->p.n_layer || e >= c->p.n_expert)
        return -EINVAL;
    const struct entry *en = &c->entries[layer * c->p.n_expert + e];
    expert_info_t info = {.state = EXPERT_STATE_ABSENT, .slot = en->gpu, .host_slot = en->host};
    if (en->gpu != NONE) {
        const struct gslot *g = &c->g[en->gpu];
        info.pins = g->pins;
        info.speculative = g->spec;
        info.state = g->state == GS_LOADING    ? EXPERT_STATE_LOADING
                     : g->state == GS_RESIDENT ? EXPERT_STATE_RESIDENT
                                               : EXPERT_STATE_FAILED;
    }
    *ret = info;
    return 0;
}

int expert_cache_get_stats(const expert_cache_t *c, uint32_t layer, expert_cache_stats_t *ret)
{
    if (!c || !ret || (layer >= c->p.n_layer && layer != EXPERT_LAYER_ALL))
        return -EINVAL;
    if (layer != EXPERT_LAYER_ALL) {
        *ret = c->stats[layer];
        return 0;
    }
    expert_cache_stats_t sum = {0};
    for (uint32_t l = 0; l < c->p.n_layer; l++) {
        const expert_cache_stats_t *s = &c->stats[l];
        sum.hits += s->hits;
        sum.misses += s->misses;
        sum.host_hits += s->host_hits;
        sum.pending += s->pending;
        sum.busy += s->busy;
        sum.evictions += s->evictions;
        sum.demotions += s->demotions;
        sum.host_evictions += s->host_evictions;
        sum.bytes_read += s->bytes_read;
        sum.bytes_host += s->bytes_host;
        sum.load_failures += s->load_failures;
        sum.prefetch_issued += s->prefetch_issued;
        sum.prefetch_used += s->prefetch_used;
        sum.prefetch_wasted += s->prefetch_wasted;
    }
    *ret = sum;
    return 0;
}

void expert_cache_reset_stats(expert_cache_t *c)
{
    memset(c->stats, 0, sizeof(*c->stats) * c->p.n_layer);
}

uint32_t expert_cache_gpu_used(const expert_cache_t *c)
{
    return c->g_used;
}
uint32_t expert_cache_host_used(const expert_cache_t *c)
{
    return c->h_used;
}
const expert_cache_params_t *expert_cache_params(const expert_cache_t *c)
{
    return &c->p;
}

void expert_cache_set_trace(expert_cache_t *c, expert_trace_writer_t *w)
{
    c->trace = w;
}
void expert_cache_set_step(expert_cache_t *c, uint32_t step)
{
    c->step = step;
}

const char *expert_policy_name(expert_policy_t p)
{
    switch (p) {
    case EXPERT_POLICY_LRU:
        return "lru";
    case EXPERT_POLICY_LFRU:
        return "lfru";
    default:
        return "?";
    }
}

int expert_policy_from_name(const char *name, expert_policy_t *ret)
{
    for (int p = 0; p < EXPERT_POLICY_COUNT_; p++)
        if (name && !strcmp(name, expert_policy_name((expert_policy_t)p))) {
            *ret = (expert_policy_t)p;
            return 0;
        }
    return -EINVAL;
}
