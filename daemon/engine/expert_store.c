/* The expert store (see expert_store.h for the two ways a slot is filled).
 *
 * Slot layout: [gate region][up region][down region], region p sized part_cap[p] = the
 * largest 4096-aligned window (moeio_span) any expert's part p needs, so any expert fits
 * any slot and every region starts 4096-aligned (O_DIRECT's destination alignment). A slot
 * index s lives in buffer s / per_buf at byte (s % per_buf) * slot_bytes; per_buf is chosen
 * so one buffer stays within maxStorageBufferRange and maxMemoryAllocationSize.
 *
 * acquire, in order: (1) expert_cache_acquire_batch decides; (2) demotions (GPU slot ->
 * host slot) are copied and waited for, because the slot is about to be overwritten; (3)
 * disk reads of every miss, sorted by offset by libmoeio, into the slots (zero copy) or into
 * staging chunks followed by a transfer into the slots; host-tier hits are copied up in the
 * same command buffer; (4) load_done for each. No allocation per call: scratch arrays are
 * sized for a whole layer at creation. */
#include "engine/expert_store.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STAGE_SLOTS_MAX 16

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
        st->stage_slots = m->hp.n_expert_used < STAGE_SLOTS_MAX ? STAGE_SLOTS_MAX
                                                                : m->hp.n_expert_used;
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
    size_t ne = m->hp.n_expert;
    st->res = calloc(ne, sizeof(*st->res));
    st->ids16 = calloc(ne, sizeof(*st->ids16));
    st->reads = calloc(ne * MODEL_EXPERT_PARTS, sizeof(*st->reads));
    st->miss = calloc(ne, sizeof(*st->miss));
    st->errs = calloc(ne, sizeof(*st->errs));
    if (r == 0 && (!st->res || !st->ids16 || !st->reads || !st->miss || !st->errs))
        r = -ENOMEM;
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
    free(st);
    return NULL;
}

/* Host pointer of region p of a slot's bytes in the read destination: the slot itself (zero
 * copy) or staging slot k. */
static uint8_t *read_dst(expert_store_t *st, uint32_t gpu_slot, uint32_t k, int p)
{
    uint8_t *base = moeio_pool_base(st->pool);
    uint64_t s = st->zero_copy ? gpu_slot : k;
    return base + s * st->slot_bytes + st->part_base[p];
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

/* Reads misses[0..nm) (indexes into ids) from disk; staged: k-th miss of this chunk goes
 * to staging slot k. Records each read's result in st->reads. */
static int read_misses(expert_store_t *st, uint32_t layer, const int32_t *ids,
                       const uint32_t *misses, size_t nm)
{
    size_t nr = 0;
    for (size_t k = 0; k < nm; k++) {
        uint32_t i = misses[k];
        model_range_t rg[MODEL_EXPERT_PARTS];
        model_expert_ranges(st->m, layer, (uint32_t)ids[i], rg);
        for (int p = 0; p < MODEL_EXPERT_PARTS; p++)
            st->reads[nr++] = (moeio_read_t){
                .offset = rg[p].offset,
                .len = rg[p].size,
                .dst = read_dst(st, st->res[i].slot, (uint32_t)k, p),
                .user = (void *)(uintptr_t)k,
            };
    }
    uint64_t t = now_ns();
    int r = moeio_read_batch(st->io, st->reads, nr);
    st->stats.read_ns += now_ns() - t;
    return r;
}

/* Staged: copies staging slot k (the whole slot: regions at the same offsets) into the
 * expert's GPU slot. */
static int stage_copy(expert_store_t *st, uint32_t k, uint32_t gpu_slot)
{
    vkc_buffer_t *gb;
    uint64_t go;
    slot_loc(st, &st->gpu, gpu_slot, &gb, &go);
    return vkc_cmd_copy_buffer(st->cmd, st->stage_buf, st->stage_off + (uint64_t)k * st->slot_bytes,
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
    int rc = expert_cache_acquire_batch(st->cache, layer, st->ids16, n, st->res);
    if (rc < 0 && rc != -EBUSY)
        return rc;
    for (size_t i = 0; i < n; i++)
        st->errs[i] = 0;
    /* Demotions happen whatever follows: the cache already counts the host copy. */
    int r = do_demotions(st, n);
    if (rc == -EBUSY || r < 0) {
        for (size_t i = 0; i < n; i++)
            st->errs[i] = -ECANCELED;
        finish_loads(st, layer, n, st->errs);
        unpin_all(st, layer, n);
        return rc == -EBUSY ? -EBUSY : r;
    }

    /* Step (3): misses from disk (all at once into their slots, or staged in chunks). */
    size_t nm = 0, nh = 0;
    for (size_t i = 0; i < n; i++) {
        if (st->res[i].status == EXPERT_MISS_LOAD)
            st->miss[nm++] = (uint32_t)i;
        nh += st->res[i].status == EXPERT_HOST_HIT;
    }
    size_t chunk = st->zero_copy ? (nm ? nm : 1) : st->stage_slots;
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
                r = stage_copy(st, (uint32_t)k, st->res[i].slot);
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

    /* Step (4): where each expert is. PENDING cannot happen here: loads finish inside
     * acquire (prefetch, which could leave one in flight, is not wired yet). */
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
    *ret = st->stats;
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
