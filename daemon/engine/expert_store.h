/* The expert store: the memory and the reads behind the expert cache. It owns the GPU tier's
 * slots (fixed-size, spread over Vulkan buffers each within maxStorageBufferRange), the
 * optional host-RAM tier, the staging memory and the libmoeio reader of the model file,
 * and drives expert_cache's decisions: reads the misses from disk (all three ranges of every
 * missing expert of a layer in one batch), copies host-tier hits up and demoted experts
 * down, and tells the engine where each expert's gate/up/down bytes are.
 *
 * Two ways to fill a GPU slot:
 *  - zero copy (unified memory devices with VK_EXT_external_memory_host: lavapipe, most
 *    integrated GPUs): the slots ARE the libmoeio pool, imported into Vulkan, so io_uring
 *    reads the expert straight into the memory the shader reads;
 *  - staged (discrete GPUs, or no host import): reads land in a mapped staging area and a
 *    transfer copies each expert into its device-local slot.
 * Either way a slot holds the three parts at fixed regions; each part starts at the
 * 4096-aligned window O_DIRECT needs, and the expert's bytes begin `inner` bytes in, so the
 * offsets differ per expert and are returned with it.
 *
 * Prefetch overlaps disk and compute: while the GPU computes layer L, the engine guesses
 * layer L+1's experts and expert_store_prefetch starts their reads without waiting; they
 * complete in the background (expert_store_poll, or the next prefetch/acquire, reaps them;
 * staged, the transfers into the device slots go out in one batch per reap). An acquire
 * that needs an expert still on its way waits for that load only, and a guess whose read
 * failed is read again by the acquire: a prefetch never changes what acquire returns.
 *
 * One thread (the engine's) owns a store. Placement never changes the bytes: an expert read
 * from disk, copied from the host tier, prefetched or already resident is the same bytes
 * (tested). */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "cache/expert_cache.h"
#include "gpu/vkc.h"
#include "iouring/moeio.h"
#include "model/model.h"

typedef struct expert_store_config {
    const model_t *model;
    const char *path;          /* the model file */
    vkc_ctx_t *vkc;
    uint64_t gpu_bytes;        /* GPU tier budget; at least one layer's top-k must fit */
    uint64_t host_bytes;       /* host tier budget; 0 = none */
    expert_policy_t policy;
    moeio_config_t io;         /* backend, depth, buffered... */
    bool force_staged;         /* tests: use the staged path even where zero copy works */
} expert_store_config_t;

/* Where one expert's matrices are, for the slot table of the expert FFN kernel. */
typedef struct expert_ref {
    vkc_buffer_t *buf;          /* the buffer holding the slot */
    uint64_t off[MODEL_EXPERT_PARTS]; /* byte offset of gate, up, down in buf */
    uint32_t slot;
} expert_ref_t;

typedef struct expert_store_stats {
    expert_cache_stats_t cache;  /* summed over layers */
    uint64_t read_ns;            /* time acquire spent waiting for disk reads: its own misses
                                  * and prefetched reads still in flight */
    uint64_t prefetch_wait_ns;   /* of read_ns, the wait for prefetched reads */
    uint64_t copy_ns;            /* time spent in tier copies and staging transfers */
    uint64_t io_errors;          /* expert loads (demand or prefetch) whose read failed */
    uint64_t reads;              /* reads the reader finished: three per expert load */
} expert_store_stats_t;

typedef struct expert_store expert_store_t;

/* -EINVAL (budget below one layer's top-k, bad config), -ENOMEM, or the reader's or
 * Vulkan's error, with a one-line reason in err. */
int expert_store_new(const expert_store_config_t *cfg, expert_store_t **ret, char *err,
                     size_t errlen);
/* Waits for the reads and transfers in flight (they write into the store's memory), then
 * frees everything. NULL ok. */
expert_store_t *expert_store_free(expert_store_t *st);

/* Makes experts ids[0..n) (distinct) of layer resident in the GPU tier, pinned, and fills
 * refs[0..n). Blocks until their loads are done; an id being prefetched is waited for, not
 * read again (unless that read failed). -EBUSY: they do not all fit at once, even after
 * the guesses in flight landed (nothing stays pinned; acquire fewer at a time), -EIO: a read failed (nothing stays
 * pinned, the failed expert's slot is free again, the store still works), -EINVAL. */
int expert_store_acquire(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n,
                         expert_ref_t *refs);
/* Unpins what the last successful acquire of these ids pinned. Release only what the GPU
 * no longer reads: an unpinned slot may be refilled by the next acquire or prefetch. */
void expert_store_release(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n);

/* A guess: starts disk loads of ids[0..n) (distinct) of layer into the GPU tier and returns
 * without waiting. Slots come from expert_cache_prefetch (unpinned; never a pinned, loading
 * or hot expert's; at most prefetch_max guesses in flight). Skipped: ids resident or
 * already loading, ids with a host-tier copy (acquire copies those up at memory speed, not
 * worth a GPU copy competing with compute), and ids past the room left (slots, guesses in
 * flight, staging). Returns the number of loads started (>= 0); a load that cannot start
 * or whose read fails is dropped silently (counted in io_errors and prefetch_wasted): a
 * prefetch is a hint. -EINVAL: bad layer, id or n. Reaps finished reads first. */
int expert_store_prefetch(expert_store_t *st, uint32_t layer, const int32_t *ids, size_t n);
/* Reaps finished prefetch reads without blocking; staged, sends the transfers of those
 * read into their device slots (one batch) and retires the batch that completed. For the
 * engine between GPU submissions. 0, or -errno when the reader or the device failed (the
 * loads it concerned are dropped; the store goes on). */
int expert_store_poll(expert_store_t *st);

void expert_store_stats(const expert_store_t *st, expert_store_stats_t *ret);
/* Slot capacity of the tiers and whether the zero-copy path is in use, for logs. */
uint32_t expert_store_gpu_slots(const expert_store_t *st);
uint32_t expert_store_host_slots(const expert_store_t *st);
uint64_t expert_store_slot_bytes(const expert_store_t *st);
bool expert_store_zero_copy(const expert_store_t *st);
const expert_cache_t *expert_store_cache(const expert_store_t *st);
/* The reader's notes (fallbacks taken) as one line, "" when none. */
const char *expert_store_io_notes(const expert_store_t *st);
