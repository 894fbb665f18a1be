/* The expert store (see expert_store.h for the two ways a slot is filled).
 *
 * Slot layout: [gate region][up region][down region], region p sized part_cap[p] = the
 * largest 4096-aligned window (moeio_span) any expert's part p needs, so any expert fits
 * any slot and every region starts 4096-aligned (O_DIRECT's destination alignment). A slot
 * index s lives in buffer s / per_buf at byte (s % per_buf) * slot_bytes; per_buf is chosen
 * so one buffer stays within maxStorageBufferRange and maxMemoryAllocationSize.
 *
 * acquire, in order: (0) settle the prefetches it depends on (pf_settle: wait for the
 * loads of its ids still in flight, and for prefetch demotions not yet copied); (1)
 * expert_cache_acquire_batch decides; (2) demotions (GPU slot -> host slot) are copied and
 * waited for, because the slot is about to be overwritten; (3) disk reads of every miss,
 * sorted by offset by libmoeio, into the slots (zero copy) or into free staging slots
 * followed by a transfer into the slots; host-tier hits are copied up in the same command
 * buffer; (4) load_done for each. No allocation per call: scratch arrays are sized for a
 * whole layer (or every guess in flight) at creation.
 *
 * A prefetch load (pf_load_t, one entry of st->pf) goes through, with the function for
 * each step:
 *
 *   FREE --expert_store_prefetch (reads submitted)--> READING
 *   READING --pf_collect (its last read reaped)--> zero copy, or a read failed: FREE
 *                                                   (expert_cache_load_done)
 *                                              --> staged: READY (bytes in staging)
 *   READY --pf_xfer_start (one transfer batch)--> XFER --pf_xfer_finish--> FREE (load_done)
 *
 * Invariants: pf_of[key] is the entry of (layer, expert) key while it is not FREE, else -1;
 * an entry's reads are in libmoeio's hands exactly while it is READING (so its
 * moeio_read_t are not reused before that); staged, every entry not FREE holds one staging
 * slot, and guesses never hold more than stage_slots - top-k of them, so demand always
 * finds a whole layer's worth free. A prefetch's demotion is copied before anything writes
 * the slot: zero copy with memcpy at once (both tiers are mapped host memory), staged in
 * the next transfer batch ahead of (behind a barrier) every staging copy; acquire flushes
 * pending demotions before it decides anything, so no host slot is read or reused before
 * its copy landed. */
#include "engine/expert_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STAGE_SLOTS_MAX 16

enum pf_state {
    PF_FREE = 0,
    PF_READING, /* its reads are in libmoeio */
    PF_READY,   /* staged: read into its staging slot, waiting for a transfer batch */
    PF_XFER,    /* staged: in the transfer batch in flight */
};

/* One speculative load; its reads are pf_rd[3 * index ..]. */
typedef struct pf_load {
    uint32_t layer;
    uint16_t e;
    uint8_t state;      /* enum pf_state */
    uint8_t parts_left; /* reads not reaped yet */
    uint32_t slot;      /* GPU slot reserved by expert_cache_prefetch */
    uint32_t stage;     /* staged: the staging slot the reads land in */
    int err;            /* first failed read's res */
} pf_load_t;

typedef struct pf_demotion {
    uint32_t gpu, host;
} pf_demotion_t;

typedef struct tier {
    vkc_buffer_t **bufs;
    uint32_t n_bufs;
    uint32_t per_buf;
} tier_t;

struct expert_store {
    expert_store_config_t cfg;
    const model_t *m;
    vkc_ctx_t *vkc;
    uint64_t part_cap[MODEL_EXPERT_PARTS], part_base[MODEL_EXPERT_PARTS];
    uint64_t slot_bytes;
    uint32_t gpu_slots, host_slots;
    bool zero_copy;
    tier_t gpu, host;
    moeio_pool_t *pool;       /* zero copy: the GPU slots; staged: the staging area */
    vkc_buffer_t *stage_buf;  /* staged: the staging area as a buffer */
    uint64_t stage_off;       /* where the pool's first byte is in stage_buf */
    uint32_t stage_slots;
    moeio_t *io;
    expert_cache_t *cache;
    vkc_cmd_t *cmd;
    /* scratch, [n_expert] */
    expert_result_t *res;
    uint16_t *ids16;
    moeio_read_t *reads;      /* [n_expert * 3] */
    uint32_t *miss;           /* indexes into ids of the misses */
    int *errs;                /* per id: the load's result */
    /* staging slots not held by a prefetch: a stack, [stage_slots] */
    uint32_t *stage_free;
    uint32_t n_stage_free;
    /* prefetch (see the state machine at the top) */
    uint32_t pf_cap;         /* guesses in flight at most */
    uint32_t pf_active;      /* entries not FREE */
    pf_load_t *pf;           /* [pf_cap] */
    moeio_read_t *pf_rd;     /* [pf_cap][3] */
    moeio_read_t **reaped;   /* [pf_cap * 3]: moeio_reap's answer */
    int32_t *pf_of;          /* [n_layer * n_expert]: entry of a key, or -1 */
    uint16_t *pf_ids;        /* [n_expert]: candidates of one prefetch */
    expert_result_t *pf_res; /* [n_expert] */
    uint32_t *pf_new;        /* [n_expert]: entries started by one prefetch, ascending */
    pf_demotion_t *pf_dem;   /* staged: prefetch demotions not yet submitted, [pf_cap] */
    uint32_t n_dem;
    vkc_cmd_t *xfer;   /* staged: the prefetch transfer batch */
    bool xfer_busy;    /* submitted, not yet seen complete */
    bool xfer_demotes; /* ... and it carries demotions */
    expert_store_stats_t stats;
    char notes[512];
};

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static uint64_t round_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static void slot_loc(const expert_store_t *st, const tier_t *t, uint32_t s, vkc_buffer_t **buf,
                     uint64_t *off)
{
    *buf = t->bufs[s / t->per_buf];
    *off = (uint64_t)(s % t->per_buf) * st->slot_bytes;
}

/* Slots of slot_bytes per buffer within the device's binding and allocation limits. */
static uint32_t slots_per_buffer(const expert_store_t *st, uint64_t limit)
{
    const vkc_device_info_t *di = vkc_ctx_info(st->vkc);
    uint64_t cap = di->max_storage_range;
    if (di->max_allocation && di->max_allocation < cap)
        cap = di->max_allocation;
    if (limit && limit < cap)
        cap = limit;
    uint64_t n = cap / st->slot_bytes;
    return n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
}

static void tier_free(tier_t *t)
{
    for (uint32_t i = 0; t->bufs && i < t->n_bufs; i++)
        vkc_buffer_free(t->bufs[i]);
    free(t->bufs);
    memset(t, 0, sizeof(*t));
}

/* Buffers for n slots of the given memory kind (not imported). */
static int tier_alloc(expert_store_t *st, tier_t *t, uint32_t n, enum vkc_mem_kind kind)
{
    t->per_buf = slots_per_buffer(st, 0);
    if (!t->per_buf)
        return -E2BIG;
    t->n_bufs = (n + t->per_buf - 1) / t->per_buf;
    t->bufs = calloc(t->n_bufs, sizeof(*t->bufs));
    if (!t->bufs)
        return -ENOMEM;
    for (uint32_t i = 0; i < t->n_bufs; i++) {
        uint32_t k = i + 1 < t->n_bufs ? t->per_buf : n - i * t->per_buf;
        int r = vkc_buffer_new(st->vkc, kind, (uint64_t)k * st->slot_bytes, &t->bufs[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

/* Zero copy: the libmoeio pool holds the GPU slots and is imported chunk by chunk. */
static int tier_import(expert_store_t *st, tier_t *t, uint32_t n)
{
    t->per_buf = slots_per_buffer(st, 0);
    if (!t->per_buf)
        return -E2BIG;
    t->n_bufs = (n + t->per_buf - 1) / t->per_buf;
    t->bufs = calloc(t->n_bufs, sizeof(*t->bufs));
    if (!t->bufs)
        return -ENOMEM;
    uint8_t *base = moeio_pool_base(st->pool);
    for (uint32_t i = 0; i < t->n_bufs; i++) {
        uint32_t k = i + 1 < t->n_bufs ? t->per_buf : n - i * t->per_buf;
        int r = vkc_buffer_import(st->vkc, base + (uint64_t)i * t->per_buf * st->slot_bytes,
                                  (uint64_t)k * st->slot_bytes, &t->bufs[i]);
        if (r < 0)
            return r;
    }
    return 0;
}

static int layout(expert_store_t *st, char *err, size_t errlen)
{
    const model_t *m = st->m;
    for (uint32_t il = 0; il < m->hp.n_layer; il++)
        for (uint32_t e = 0; e < m->hp.n_expert; e++) {
            model_range_t r[MODEL_EXPERT_PARTS];
            if (model_expert_ranges(m, il, e, r) < 0) {
                snprintf(err, errlen, "layer %u expert %u has no byte ranges", il, e);
                return -EINVAL;
            }
            for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
                uint64_t span = moeio_span(r[p].offset, r[p].size, NULL);
                if (span > st->part_cap[p])
                    st->part_cap[p] = span;
            }
        }
    uint64_t align = MOEIO_ALIGN;
    const vkc_device_info_t *di = vkc_ctx_info(st->vkc);
    if (di->import_alignment > align)
        align = di->import_alignment;
    uint64_t o = 0;
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
        st->part_base[p] = o;
        o += round_up(st->part_cap[p], MOEIO_ALIGN);
    }
    st->slot_bytes = round_up(o, align);
    return 0;
}

/* Prefetch's tables. Guesses in flight at most: the cache's prefetch_max, and staged, the
 * staging slots beyond one layer's top-k. */
static int prefetch_init(expert_store_t *st)
{
    const model_t *m = st->m;
    uint32_t cap = expert_cache_params(st->cache)->prefetch_max;
    uint32_t demand = m->hp.n_expert_used ? m->hp.n_expert_used : 1;
    if (!st->zero_copy && cap > st->stage_slots - demand)
        cap = st->stage_slots - demand;
    st->pf_cap = cap;
    size_t n = cap ? cap : 1, keys = (size_t)m->hp.n_layer * m->hp.n_expert;
    st->pf = calloc(n, sizeof(*st->pf));
    st->pf_rd = calloc(n * MODEL_EXPERT_PARTS, sizeof(*st->pf_rd));
    st->reaped = calloc(n * MODEL_EXPERT_PARTS, sizeof(*st->reaped));
    st->pf_of = malloc(keys * sizeof(*st->pf_of));
    st->pf_ids = calloc(m->hp.n_expert, sizeof(*st->pf_ids));
    st->pf_res = calloc(m->hp.n_expert, sizeof(*st->pf_res));
    st->pf_new = calloc(m->hp.n_expert, sizeof(*st->pf_new));
    st->pf_dem = calloc(n, sizeof(*st->pf_dem));
    st->stage_free = calloc(st->stage_slots ? st->stage_slots : 1, sizeof(*st->stage_free));
    if (!st->pf || !st->pf_rd || !st->reaped || !st->pf_of || !st->pf_ids || !st->pf_res ||
        !st->pf_new || !st->pf_dem || !st->stage_free)
        return -ENOMEM;
    for (size_t k = 0; k < keys; k++)
        st->pf_of[k] = -1;
    /* Popped from the end: demand's chunks use the lowest free staging slots first. */
    for (uint32_t k = 0; k < st->stage_slots; k++)
        st->stage_free[k] = st->stage_slots - 1 - k;
    st->n_stage_free = st->stage_slots;
    return 0;
}

int expert_store_new(const expert_store_config_t *cfg, expert_store_t **ret, char *err,
                     size_t errlen)
{
    const model_t *m = cfg->model;
    if (!m || !cfg->vkc || !cfg->path || !m->hp.n_expert)
        return -EINVAL;
    expert_store_t *st = calloc(1, sizeof(*st));
    if (!st)
        return -ENOMEM;
    st->cfg = *cfg;
    st->m = m;
    st->vkc = cfg->vkc;
    int r = layout(st, err, errlen);
    if (r < 0)
        goto fail;

    r = expert_cache_slots_for_budget(cfg->gpu_bytes, st->slot_bytes, &st->gpu_slots);
    if (r == 0 && st->gpu_slots < m->hp.n_expert_used) {
        snprintf(err, errlen,
                 "GPU expert cache of %llu bytes holds %u experts of %llu bytes; one layer "
                 "needs %u",
                 (unsigned long long)cfg->gpu_bytes, st->gpu_slots,
                 (unsigned long long)st->slot_bytes, m->hp.n_expert_used);
        r = -EINVAL;
        goto fail;
    }
    if (r == 0 && st->gpu_slots > m->hp.n_layer * m->hp.n_expert)
        st->gpu_slots = m->hp.n_layer * m->hp.n_expert; /* everything fits: no more needed */
    if (r == 0 && cfg->host_bytes)
        r = expert_cache_slots_for_budget(cfg->host_bytes, st->slot_bytes, &st->host_slots);
    if (r < 0) {
        snprintf(err, errlen, "cache budgets out of range");
        goto fail;
    }
    if (st->host_slots > m->hp.n_layer * m->hp.n_expert)
        st->host_slots = m->hp.n_layer * m->hp.n_expert;

    const vkc_device_info_t *di = vkc_ctx_info(st->vkc);
    st->zero_copy = !cfg->force_staged && di->unified_memory && di->host_import;
    size_t pool_bytes;
    if (st->zero_copy) {
        pool_bytes = (size_t)st->gpu_slots * st->slot_bytes;
    } else {
        /* Room for a whole layer's misses plus as many guesses in flight. */
        st->stage_slots =
            2 * m->hp.n_expert_used < STAGE_SLOTS_MAX ? STAGE_SLOTS_MAX : 2 * m->hp.n_expert_used;
        pool_bytes = (size_t)st->stage_slots * st->slot_bytes;
    }
    if (st->zero_copy || di->host_import) {
        r = moeio_pool_new(pool_bytes, 0, &st->pool);
    } else {
        /* No host import: read into a mapped host-visible Vulkan buffer, 4096-aligned. */
        r = vkc_buffer_new(st->vkc, VKC_MEM_HOST, pool_bytes + MOEIO_ALIGN, &st->stage_buf);
        if (r == 0) {
            uintptr_t p = (uintptr_t)vkc_buffer_map(st->stage_buf);
            st->stage_off = round_up(p, MOEIO_ALIGN) - p;
            r = moeio_pool_wrap((void *)(p + st->stage_off), pool_bytes, &st->pool);
        }
    }
    if (r < 0) {
        snprintf(err, errlen, "expert memory (%zu bytes): %s", pool_bytes, strerror(-r));
        goto fail;
    }
    if (st->zero_copy)
        r = tier_import(st, &st->gpu, st->gpu_slots);
    else
        r = tier_alloc(st, &st->gpu, st->gpu_slots, VKC_MEM_DEVICE);
    if (r == 0 && !st->zero_copy && !st->stage_buf)
        r = vkc_buffer_import(st->vkc, moeio_pool_base(st->pool), pool_bytes, &st->stage_buf);
    if (r == 0 && st->host_slots)
        r = tier_alloc(st, &st->host, st->host_slots, VKC_MEM_HOST);
    if (r < 0) {
        snprintf(err, errlen, "expert slots (%u GPU, %u host, %llu bytes each): %s",
                 st->gpu_slots, st->host_slots, (unsigned long long)st->slot_bytes,
                 strerror(-r));
        goto fail;
    }

    r = moeio_new(cfg->path, &cfg->io, st->pool, &st->io);
    if (r < 0) {
        snprintf(err, errlen, "%s: %s", cfg->path, strerror(-r));
        goto fail;
    }
    moeio_info_t info;
    moeio_get_info(st->io, &info);
    snprintf(st->notes, sizeof(st->notes), "%s", info.text);

    expert_cache_params_t cp = {
        .n_layer = m->hp.n_layer,
        .n_expert = m->hp.n_expert,
        .gpu_slots = st->gpu_slots,
        .host_slots = st->host_slots,
        .policy = cfg->policy,
        .expert_bytes = m->expert_bytes,
    };
    r = expert_cache_new(&cp, &st->cache);
    if (r == 0)
        r = vkc_cmd_new(st->vkc, &st->cmd);
    if (r == 0 && !st->zero_copy)
        r = vkc_cmd_new(st->vkc, &st->xfer);
    size_t ne = m->hp.n_expert;
    st->res = calloc(ne, sizeof(*st->res));
    st->ids16 = calloc(ne, sizeof(*st->ids16));
    st->reads = calloc(ne * MODEL_EXPERT_PARTS, sizeof(*st->reads));
    st->miss = calloc(ne, sizeof(*st->miss));
    st->errs = calloc(ne, sizeof(*st->errs));
    if (r == 0 && (!st->res || !st->ids16 || !st->reads || !st->miss || !st->errs))
        r = -ENOMEM;
    if (r == 0)
        r = prefetch_init(st);
    if (r < 0) {
        snprintf(err, errlen, "expert cache: %s", strerror(-r));
        goto fail;
    }
    *ret = st;
    return 0;
fail:
    expert_store_free(st);
    return r;
}

expert_store_t *expert_store_free(expert_store_t *st)
{
    if (!st)
        return NULL;
    /* Transfers and reads in flight write into the slots: both frees wait for them, and
     * the reads' moeio_read_t (pf_rd) must outlive the reader. */
    vkc_cmd_free(st->xfer);
    vkc_cmd_free(st->cmd);
    expert_cache_free(st->cache);
    moeio_free(st->io);
    tier_free(&st->host);
    tier_free(&st->gpu);
    /* An imported staging area must go before the pool memory it wraps. */
    vkc_buffer_free(st->stage_buf);
    moeio_pool_free(st->pool);
    free(st->res);
    free(st->ids16);
    free(st->reads);
    free(st->miss);
    free(st->errs);
    free(st->stage_free);
    free(st->pf);
    free(st->pf_rd);
    free(st->reaped);
    free(st->pf_of);
    free(st->pf_ids);
    free(st->pf_res);
    free(st->pf_new);
    free(st->pf_dem);
    free(st);
    return NULL;
}

/* Host pointer of region p of a slot's bytes in the read destination: the slot itself (zero
 * copy) or staging slot `stage`. */
static uint8_t *read_dst(expert_store_t *st, uint32_t gpu_slot, uint32_t stage, int p)
{
    uint8_t *base = moeio_pool_base(st->pool);
    uint64_t s = st->zero_copy ? gpu_slot : stage;
    return base + s * st->slot_bytes + st->part_base[p];
}

/* The three reads of expert e of layer into the slot (or staging slot) behind dst. */
static void fill_reads(expert_store_t *st, uint32_t layer, uint32_t e, uint32_t gpu_slot,
                       uint32_t stage, void *user, moeio_read_t *rd)
{
    model_range_t rg[MODEL_EXPERT_PARTS];
    model_expert_ranges(st->m, layer, e, rg);
    for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
        rd[p] = (moeio_read_t){
            .offset = rg[p].offset,
            .len = rg[p].size,
            .dst = read_dst(st, gpu_slot, stage, p),
            .user = user,
        };
}

/* Step (2): copies the old expert of every slot that is being demoted to the host tier. */
static int do_demotions(expert_store_t *st, size_t n)
{
    bool any = false;
    int r = 0;
    for (size_t i = 0; i < n && r == 0; i++) {
        const expert_result_t *x = &st->res[i];
        if (x->status == EXPERT_BUSY || x->demote_host_slot == EXPERT_SLOT_NONE)
            continue;
        if (!any && (r = vkc_cmd_begin(st->cmd)) < 0)
            break;
        any = true;
        vkc_buffer_t *gb, *hb;
        uint64_t go, ho;
        slot_loc(st, &st->gpu, x->slot, &gb, &go);
        slot_loc(st, &st->host, x->demote_host_slot, &hb, &ho);
        r = vkc_cmd_copy_buffer(st->cmd, gb, go, hb, ho, st->slot_bytes);
    }
    if (any) {
        uint64_t t = now_ns();
        int r2 = vkc_cmd_submit_wait(st->cmd);
        st->stats.copy_ns += now_ns() - t;
        if (r == 0)
            r = r2;
    }
    return r;
}

/* Reads misses[0..nm) (indexes into ids) from disk; staged: the k-th miss of this chunk
 * goes to the k-th free staging slot. Records each read's result in st->reads. */
static int read_misses(expert_store_t *st, uint32_t layer, const int32_t *ids,
                       const uint32_t *misses, size_t nm)
{
    for (size_t k = 0; k < nm; k++) {
        uint32_t i = misses[k];
        uint32_t stage = st->zero_copy ? 0 : st->stage_free[k];
        fill_reads(st, layer, (uint32_t)ids[i], st->res[i].slot, stage, (void *)(uintptr_t)k,
                   &st->reads[k * MODEL_EXPERT_PARTS]);
    }
    uint64_t t = now_ns();
    int r = moeio_read_batch(st->io, st->reads, nm * MODEL_EXPERT_PARTS);
    st->stats.read_ns += now_ns() - t;
    return r;
}

/* Staged: records the copy of staging slot `stage` (the whole slot: regions at the same
 * offsets) into GPU slot gpu_slot. */
static int stage_copy(expert_store_t *st, vkc_cmd_t *cmd, uint32_t stage, uint32_t gpu_slot)
{
    vkc_buffer_t *gb;
    uint64_t go;
    slot_loc(st, &st->gpu, gpu_slot, &gb, &go);
    return vkc_cmd_copy_buffer(cmd, st->stage_buf, st->stage_off + (uint64_t)stage * st->slot_bytes,
                               gb, go, st->slot_bytes);
}

/* Ends the loads of this acquire: load_done for every MISS_LOAD/HOST_HIT with its result
 * (a success on a load whose neighbour failed still makes it resident: the bytes are
 * good). */
static void finish_loads(expert_store_t *st, uint32_t layer, size_t n, const int *errs)
{
    for (size_t i = 0; i < n; i++) {
        uint32_t s = st->res[i].status;
        if (s == EXPERT_MISS_LOAD || s == EXPERT_HOST_HIT)
            expert_cache_load_done(st->cache, layer, st->ids16[i], errs[i]);
    }
}

static void unpin_all(expert_store_t *st, uint32_t layer, size_t n)
{
    /* Release the pinned ones (not BUSY), compacting ids16 in place. */
    size_t k = 0;
    for (size_t i = 0; i < n; i++)
        if (st->res[i].status != EXPERT_BUSY)
            st->ids16[k++] = st->ids16[i];
    if (k)
        expert_cache_release(st->cache, layer, st->ids16, k);
}

/* ---- prefetch ------------------------------------------------------------------------ */

/* Ends load l (FREE again): load_done with err (0: resident, unpinned and marked a guess;
 * < 0: the cache frees the slot and counts a wasted guess), staging slot back. */
static void pf_complete(expert_store_t *st, uint32_t l, int err)
{
    pf_load_t *ld = &st->pf[l];
    expert_cache_load_done(st->cache, ld->layer, ld->e, err);
    if (!st->zero_copy)
        st->stage_free[st->n_stage_free++] = ld->stage;
    st->pf_of[ld->layer * st->m->hp.n_expert + ld->e] = -1;
    ld->state = PF_FREE;
    st->pf_active--;
}

/* READING -> FREE (failed, or zero copy: the bytes are in the slot) or READY (staged). */
static void pf_read_done(expert_store_t *st, uint32_t l)
{
    pf_load_t *ld = &st->pf[l];
    if (ld->err) {
        st->stats.io_errors++;
        pf_complete(st, l, ld->err);
    } else if (st->zero_copy) {
        pf_complete(st, l, 0);
    } else {
        ld->state = PF_READY;
    }
}

static uint32_t pf_count(const expert_store_t *st, enum pf_state state)
{
    uint32_t k = 0;
    for (uint32_t l = 0; l < st->pf_cap; l++)
        k += st->pf[l].state == state;
    return k;
}

/* The reader failed for good: nothing in it will come back, drop every read in flight. */
static void pf_drop_reading(expert_store_t *st, int err)
{
    for (uint32_t l = 0; l < st->pf_cap; l++)
        if (st->pf[l].state == PF_READING) {
            st->pf[l].err = err;
            pf_read_done(st, l);
        }
}

/* Takes the finished prefetch reads (demand's reads never come back here: moeio_read_batch
 * keeps its own), waiting for at least min_complete of them. 0 or the reader's error. */
static int pf_collect(expert_store_t *st, size_t min_complete)
{
    if (!st->pf_active)
        return 0;
    int k = moeio_reap(st->io, min_complete, st->reaped, (size_t)st->pf_cap * MODEL_EXPERT_PARTS);
    if (k == 0 && min_complete)
        k = -EIO; /* a READING load whose reads the reader no longer has: cannot happen */
    if (k < 0) {
        pf_drop_reading(st, k);
        return k;
    }
    for (int j = 0; j < k; j++) {
        const moeio_read_t *rd = st->reaped[j];
        uint32_t l = (uint32_t)(uintptr_t)rd->user;
        pf_load_t *ld = &st->pf[l];
        if (rd->res < 0 && !ld->err)
            ld->err = rd->res;
        if (--ld->parts_left == 0)
            pf_read_done(st, l);
    }
    return 0;
}

/* Staged: retires the transfer batch in flight once it completed (wait: blocks until
 * then). 0, or the device's error (its loads are dropped). */
static int pf_xfer_finish(expert_store_t *st, bool wait)
{
    if (!st->xfer_busy)
        return 0;
    uint64_t t = now_ns();
    int r = vkc_cmd_wait(st->xfer, wait ? UINT64_MAX : 0);
    if (wait)
        st->stats.copy_ns += now_ns() - t;
    if (r == -ETIME && !wait)
        return 0;
    st->xfer_busy = st->xfer_demotes = false;
    for (uint32_t l = 0; l < st->pf_cap; l++)
        if (st->pf[l].state == PF_XFER)
            pf_complete(st, l, r);
    return r;
}

/* Staged: sends, in one batch, the pending demotions and then every READY load's copy
 * from staging into its slot (nothing while a batch is in flight: begin would wait). */
static int pf_xfer_start(expert_store_t *st)
{
    if (st->xfer_busy)
        return 0;
    uint32_t ready = pf_count(st, PF_READY);
    if (!ready && !st->n_dem)
        return 0;
    int r = vkc_cmd_begin(st->xfer);
    if (r == 0) {
        for (uint32_t d = 0; d < st->n_dem && r == 0; d++) {
            vkc_buffer_t *gb, *hb;
            uint64_t go, ho;
            slot_loc(st, &st->gpu, st->pf_dem[d].gpu, &gb, &go);
            slot_loc(st, &st->host, st->pf_dem[d].host, &hb, &ho);
            r = vkc_cmd_copy_buffer(st->xfer, gb, go, hb, ho, st->slot_bytes);
        }
        if (st->n_dem && ready)
            vkc_cmd_barrier(st->xfer, "a demoted expert leaves its GPU slot before the guess "
                                      "loaded into that slot overwrites it");
        for (uint32_t l = 0; l < st->pf_cap && r == 0; l++)
            if (st->pf[l].state == PF_READY) {
                r = stage_copy(st, st->xfer, st->pf[l].stage, st->pf[l].slot);
                st->pf[l].state = PF_XFER;
            }
        int r2 = vkc_cmd_submit(st->xfer, NULL);
        r = r ? r : r2;
    }
    st->xfer_demotes = st->n_dem > 0;
    st->n_dem = 0;
    if (r == 0) {
        st->xfer_busy = true;
        return 0;
    }
    /* Nothing was sent: the loads are dropped, and the demoted experts' host copies are
     * garbage the cache does not know about; only a lost device gets here. */
    for (uint32_t l = 0; l < st->pf_cap; l++)
        if (st->pf[l].state == PF_XFER || st->pf[l].state == PF_READY)
            pf_complete(st, l, r);
    st->xfer_demotes = false;
    return r;
}

/* What can be done without blocking: reap, retire a finished batch, send the next. */
static int pf_service(expert_store_t *st)
{
    int r = pf_collect(st, 0);
    if (!st->zero_copy) {
        int r2 = pf_xfer_finish(st, false);
        r = r ? r : r2;
        r2 = pf_xfer_start(st);
        r = r ? r : r2;
    }
    return r;
}

/* Staged: every READY load and pending demotion through a batch, and waits for it. */
static void pf_xfer_flush(expert_store_t *st)
{
    pf_xfer_finish(st, true);
    pf_xfer_start(st);
    pf_xfer_finish(st, true);
}

/* Step (0) of acquire: no id of the batch left loading by a guess (waits for those loads
 * only), and staged, no prefetch demotion left uncopied (acquire may read or reuse any host
 * slot). A failure drops the guesses it concerns; demand then reads them. */
static void pf_settle(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n)
{
    if (!st->pf_active && !st->n_dem && !st->xfer_busy)
        return;
    pf_collect(st, 0);
    bool flush = st->n_dem || st->xfer_demotes, waited = false;
    uint64_t t = now_ns();
    for (size_t i = 0; i < n; i++) {
        uint32_t key = layer * st->m->hp.n_expert + (uint32_t)ids[i];
        int32_t l;
        while ((l = st->pf_of[key]) >= 0 && st->pf[l].state == PF_READING) {
            waited = true;
            if (pf_collect(st, 1) < 0)
                break;
        }
        flush |= st->pf_of[key] >= 0; /* staged: READY or XFER */
    }
    if (waited) {
        uint64_t dt = now_ns() - t;
        st->stats.read_ns += dt;
        st->stats.prefetch_wait_ns += dt;
    }
    if (flush && !st->zero_copy)
        pf_xfer_flush(st);
}

/* Lets every guess land or fail. */
static void pf_drain(expert_store_t *st)
{
    uint64_t t = now_ns();
    bool waited = false;
    while (pf_count(st, PF_READING)) {
        waited = true;
        if (pf_collect(st, 1) < 0)
            break;
    }
    if (waited) {
        uint64_t dt = now_ns() - t;
        st->stats.read_ns += dt;
        st->stats.prefetch_wait_ns += dt;
    }
    if (!st->zero_copy)
        pf_xfer_flush(st);
}

/* A prefetch evicted the expert in GPU slot g to host slot h: copies it before the slot is
 * written. Zero copy: the read about to start targets the slot itself, so copy now, from
 * the slot's host memory into the (mapped) host tier: a memcpy, no wait behind the GPU's
 * queue. Staged: the read lands in staging, so the copy goes at the head of the next
 * transfer batch. */
static void pf_demote(expert_store_t *st, uint32_t g, uint32_t h)
{
    if (st->zero_copy) {
        vkc_buffer_t *hb;
        uint64_t ho, t = now_ns();
        slot_loc(st, &st->host, h, &hb, &ho);
        vkc_buffer_write(st->vkc, hb, ho,
                         (uint8_t *)moeio_pool_base(st->pool) + (uint64_t)g * st->slot_bytes,
                         st->slot_bytes);
        st->stats.copy_ns += now_ns() - t;
        return;
    }
    st->pf_dem[st->n_dem++] = (pf_demotion_t){.gpu = g, .host = h};
}

/* Guesses that may start now: free entries; staged, also room for their demotions (the
 * staging bound is pf_cap itself). */
static size_t pf_room(const expert_store_t *st)
{
    size_t room = st->pf_cap - st->pf_active;
    if (!st->zero_copy && st->pf_cap - st->n_dem < room)
        room = st->pf_cap - st->n_dem;
    return room;
}

/* Submits the reads of the entries started by one prefetch, one call per run of adjacent
 * entries (their reads are contiguous in pf_rd). Returns the loads the reader took. */
static int pf_submit(expert_store_t *st, size_t n_new)
{
    int started = 0;
    for (size_t a = 0, b; a < n_new; a = b) {
        for (b = a + 1; b < n_new && st->pf_new[b] == st->pf_new[b - 1] + 1; b++)
            ;
        uint32_t l0 = st->pf_new[a];
        int r = moeio_submit(st->io, &st->pf_rd[(size_t)l0 * MODEL_EXPERT_PARTS],
                             (b - a) * MODEL_EXPERT_PARTS);
        for (size_t j = a; j < b; j++) {
            if (r == 0) {
                started++;
                continue;
            }
            st->stats.io_errors++; /* the reader refused them: a hint dropped */
            pf_complete(st, st->pf_new[j], r);
        }
    }
    return started;
}

int expert_store_prefetch(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n)
{
    const model_t *m = st->m;
    if (layer >= m->hp.n_layer || n > m->hp.n_expert || (n && !ids))
        return -EINVAL;
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || (uint32_t)ids[i] >= m->hp.n_expert)
            return -EINVAL;
    pf_service(st); /* a failure only dropped guesses */

    /* Candidates: no GPU slot and no host copy, as many as there is room for. */
    size_t room = pf_room(st), nc = 0;
    for (size_t i = 0; i < n && nc < room; i++) {
        expert_info_t info;
        expert_cache_lookup(st->cache, layer, (uint16_t)ids[i], &info);
        if (info.slot == EXPERT_SLOT_NONE && info.host_slot == EXPERT_SLOT_NONE)
            st->pf_ids[nc++] = (uint16_t)ids[i];
    }
    if (!nc)
        return 0;
    int r = expert_cache_prefetch(st->cache, layer, st->pf_ids, nc, st->pf_res);
    if (r <= 0)
        return r; /* -EINVAL: an id repeated */

    size_t n_new = 0;
    uint32_t l = 0;
    for (size_t i = 0; i < nc; i++) {
        const expert_result_t *x = &st->pf_res[i];
        if (x->status != EXPERT_MISS_LOAD && x->status != EXPERT_HOST_HIT)
            continue; /* BUSY: no room in the cache */
        if (x->demote_host_slot != EXPERT_SLOT_NONE)
            pf_demote(st, x->slot, x->demote_host_slot);
        if (x->status == EXPERT_HOST_HIT) { /* the candidates have no host copy */
            expert_cache_load_done(st->cache, layer, st->pf_ids[i], -ECANCELED);
            continue;
        }
        while (st->pf[l].state != PF_FREE) /* room was checked: one is free */
            l++;
        pf_load_t *ld = &st->pf[l];
        *ld = (pf_load_t){.layer = layer,
                          .e = st->pf_ids[i],
                          .state = PF_READING,
                          .parts_left = MODEL_EXPERT_PARTS,
                          .slot = x->slot};
        if (!st->zero_copy)
            ld->stage = st->stage_free[--st->n_stage_free];
        fill_reads(st, layer, ld->e, ld->slot, ld->stage, (void *)(uintptr_t)l,
                   &st->pf_rd[(size_t)l * MODEL_EXPERT_PARTS]);
        st->pf_of[layer * m->hp.n_expert + ld->e] = (int32_t)l;
        st->pf_active++;
        st->pf_new[n_new++] = l++;
    }
    return pf_submit(st, n_new);
}

int expert_store_poll(expert_store_t *st)
{
    return pf_service(st);
}

/* Gives back what an acquire_batch that cannot go on reserved (after its demotions were
 * copied: the cache already moved those experts): loads ended as cancelled, pins dropped. */
static void abandon(expert_store_t *st, uint32_t layer, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st->errs[i] = -ECANCELED;
    finish_loads(st, layer, n, st->errs);
    unpin_all(st, layer, n);
}

/* Guesses in flight hold slots the BUSY ids of this batch need: let them land (loaded,
 * they are evictable) and ask again for those ids only, keeping the others' pins and
 * reservations (nothing cancelled, so no load counts as failed). The first answer's
 * demotions are copied first: the second may reuse their host slots. Returns the second
 * acquire_batch's result (-EBUSY: still BUSY ones). */
static int acquire_busy_retry(expert_store_t *st, uint32_t layer, size_t n)
{
    int r = do_demotions(st, n);
    size_t nb = 0;
    for (size_t i = 0; i < n; i++) {
        st->res[i].demote_host_slot = EXPERT_SLOT_NONE; /* copied */
        if (st->res[i].status == EXPERT_BUSY) {
            st->miss[nb] = (uint32_t)i;
            st->pf_ids[nb++] = st->ids16[i];
        }
    }
    if (r < 0)
        return r;
    pf_drain(st);
    int rc = expert_cache_acquire_batch(st->cache, layer, st->pf_ids, nb, st->pf_res);
    if (rc < 0 && rc != -EBUSY)
        return rc; /* cannot happen: the ids were valid a moment ago */
    for (size_t j = 0; j < nb; j++)
        st->res[st->miss[j]] = st->pf_res[j];
    return rc;
}

int expert_store_acquire(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n,
                         expert_ref_t *refs)
{
    const model_t *m = st->m;
    if (layer >= m->hp.n_layer || n > m->hp.n_expert)
        return -EINVAL;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || (uint32_t)ids[i] >= m->hp.n_expert)
            return -EINVAL;
        st->ids16[i] = (uint16_t)ids[i];
    }
    /* Step (0): a failure here drops guesses only; demand below reads them again. */
    pf_settle(st, layer, ids, n);
    int rc = expert_cache_acquire_batch(st->cache, layer, st->ids16, n, st->res);
    if (rc == -EBUSY && st->pf_active) {
        rc = acquire_busy_retry(st, layer, n);
        if (rc < 0 && rc != -EBUSY) { /* the device failed: nothing of this batch stays */
            abandon(st, layer, n);
            return rc;
        }
    }
    if (rc < 0 && rc != -EBUSY)
        return rc;
    for (size_t i = 0; i < n; i++)
        st->errs[i] = 0;
    /* Demotions happen whatever follows: the cache already counts the host copy. */
    int r = do_demotions(st, n);
    if (rc == -EBUSY || r < 0) {
        abandon(st, layer, n);
        return rc == -EBUSY ? -EBUSY : r;
    }

    /* Step (3): misses from disk (all at once into their slots, or staged in chunks). */
    size_t nm = 0, nh = 0;
    for (size_t i = 0; i < n; i++) {
        if (st->res[i].status == EXPERT_MISS_LOAD)
            st->miss[nm++] = (uint32_t)i;
        nh += st->res[i].status == EXPERT_HOST_HIT;
    }
    /* Staged: guesses hold at most stage_slots - top-k staging slots, so n_stage_free >= 1. */
    size_t chunk = st->zero_copy ? (nm ? nm : 1) : st->n_stage_free;
    bool failed = false;
    for (size_t c0 = 0; c0 < nm && r == 0; c0 += chunk) {
        size_t cn = nm - c0 < chunk ? nm - c0 : chunk;
        read_misses(st, layer, ids, st->miss + c0, cn);
        for (size_t k = 0; k < cn; k++)
            for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
                const moeio_read_t *rd = &st->reads[k * MODEL_EXPERT_PARTS + p];
                uint32_t i = st->miss[c0 + k];
                if (rd->res < 0 && !st->errs[i]) {
                    st->errs[i] = rd->res;
                    failed = true;
                    st->stats.io_errors++;
                }
            }
        if (st->zero_copy)
            continue;
        if ((r = vkc_cmd_begin(st->cmd)) < 0)
            break;
        for (size_t k = 0; k < cn && r == 0; k++) {
            uint32_t i = st->miss[c0 + k];
            if (!st->errs[i])
                r = stage_copy(st, st->cmd, st->stage_free[k], st->res[i].slot);
        }
        uint64_t t = now_ns();
        int r2 = vkc_cmd_submit_wait(st->cmd);
        st->stats.copy_ns += now_ns() - t;
        r = r ? r : r2;
    }
    /* Host-tier hits: copied up, no disk read. */
    if (nh && r == 0 && (r = vkc_cmd_begin(st->cmd)) == 0) {
        for (size_t i = 0; i < n && r == 0; i++) {
            if (st->res[i].status != EXPERT_HOST_HIT)
                continue;
            vkc_buffer_t *gb, *hb;
            uint64_t go, ho;
            slot_loc(st, &st->gpu, st->res[i].slot, &gb, &go);
            slot_loc(st, &st->host, st->res[i].host_slot, &hb, &ho);
            r = vkc_cmd_copy_buffer(st->cmd, hb, ho, gb, go, st->slot_bytes);
        }
        uint64_t t = now_ns();
        int r2 = vkc_cmd_submit_wait(st->cmd);
        st->stats.copy_ns += now_ns() - t;
        r = r ? r : r2;
    }
    if (r < 0)
        for (size_t i = 0; i < n; i++)
            if (!st->errs[i])
                st->errs[i] = r;
    finish_loads(st, layer, n, st->errs);
    if (failed || r < 0) {
        unpin_all(st, layer, n);
        return r < 0 ? r : -EIO;
    }

    /* Step (4): where each expert is. PENDING cannot happen here: demand loads finish
     * inside acquire, and step (0) let every guess for these ids land or fail. */
    for (size_t i = 0; i < n; i++) {
        model_range_t rg[MODEL_EXPERT_PARTS];
        model_expert_ranges(m, layer, (uint32_t)ids[i], rg);
        vkc_buffer_t *gb;
        uint64_t go;
        slot_loc(st, &st->gpu, st->res[i].slot, &gb, &go);
        refs[i].buf = gb;
        refs[i].slot = st->res[i].slot;
        for (int p = 0; p < MODEL_EXPERT_PARTS; p++) {
            uint32_t inner = 0;
            moeio_span(rg[p].offset, rg[p].size, &inner);
            refs[i].off[p] = go + st->part_base[p] + inner;
        }
    }
    return 0;
}

void expert_store_release(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        st->ids16[i] = (uint16_t)ids[i];
    expert_cache_release(st->cache, layer, st->ids16, n);
}

void expert_store_stats(const expert_store_t *st, expert_store_stats_t *ret)
{
    moeio_stats_t io;
    moeio_get_stats(st->io, &io);
    *ret = st->stats;
    ret->reads = io.reads;
    expert_cache_get_stats(st->cache, EXPERT_LAYER_ALL, &ret->cache);
}

uint32_t expert_store_gpu_slots(const expert_store_t *st)
{
    return st->gpu_slots;
}

uint32_t expert_store_host_slots(const expert_store_t *st)
{
    return st->host_slots;
}

uint64_t expert_store_slot_bytes(const expert_store_t *st)
{
    return st->slot_bytes;
}

bool expert_store_zero_copy(const expert_store_t *st)
{
    return st->zero_copy;
}

const expert_cache_t *expert_store_cache(const expert_store_t *st)
{
    return st->cache;
}

const char *expert_store_io_notes(const expert_store_t *st)
{
    return st->notes;
}
