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
    uint64_t expert_host_hits;  /* misses of the GPU tier served from the host tier */
    uint64_t prefetch_issued;   /* experts read ahead on a guess */
    uint64_t prefetch_used;     /* ... that the layer then used */
    uint64_t guesses;           /* experts guessed for the next layer (prefetch_accuracy =
                                 * guesses_right / guesses) */
    uint64_t guesses_right;     /* ... that the layer then routed to */
    uint64_t waves;             /* extra passes when a batch needed more experts than fit */
    uint64_t io_errors;
    uint64_t read_wait_ns;      /* time the step waited for expert reads */
    uint64_t gpu_wait_ns;       /* time the step waited for the device */
    uint64_t device_bytes;      /* device memory allocated (weights, KV, expert tier) */
    uint64_t gpu_cache_bytes;   /* the GPU expert tier's budget in use */
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

/* The Vulkan engine (engine_vk.c): the resident part of the model in device memory, the
 * experts streamed through expert_store on demand. */
typedef struct engine_vk_config {
    const model_t *model;
    const char *path;           /* the model file */
    const char *device;         /* vkc_options_t.device: NULL/"" default choice */
    const char *cache_dir;      /* pipeline cache directory; NULL/"": none */
    int validation;             /* vkc_options_t.validation: <0 env, 0 off, >0 on */
    uint64_t device_limit;      /* vkc_options_t.device_limit: device bytes allowed; 0 budget */
    uint32_t n_ctx;             /* positions per sequence */
    uint32_t n_seq_max;         /* sequences at once */
    uint32_t n_batch;           /* entries per step at most; 0: 256 (steps may not exceed it) */
    uint64_t gpu_cache_bytes;   /* expert GPU tier; 0: every expert if it fits the device
                                 * budget left after the resident part, else what fits */
    uint64_t host_cache_bytes;  /* expert host tier; 0: none */
    int policy;                 /* expert_policy_t */
    uint32_t io_depth;          /* 0: 64 */
    int io_backend;             /* enum moeio_backend; 0 auto */
    bool io_buffered;           /* no O_DIRECT */
    bool no_prefetch;           /* do not read layer L+1's guessed experts during layer L */
    bool force_staged;          /* tests: staged expert path even on unified memory */
    int expert_kernel;          /* enum engine_expert_kernel: how the expert FFN runs */
    /* Load progress: called with bytes of the resident part read so far and in all. */
    void (*progress)(void *userdata, uint64_t done, uint64_t total);
    void *progress_userdata;
    struct moeio_wrapper *io_wrapper; /* tests: fault injection into expert reads; NULL */
} engine_vk_config_t;

enum engine_expert_kernel {
    ENGINE_EXPERTS_AUTO = 0,   /* the faster one for the device type */
    ENGINE_EXPERTS_SLOTS = 1,  /* one slot-table kernel per phase (vkc_cmd_moe_experts) */
    ENGINE_EXPERTS_MATVEC = 2, /* gate/up/down per expert through vkc_cmd_matvec */
};

/* -ENODEV (no Vulkan device), -ENOMEM (the resident part or the minimum expert cache does not
 * fit), -EINVAL, -EIO; a one-line reason in err. e->device names the device. */
int engine_vk_new(const engine_vk_config_t *cfg, engine_t **ret, char *err, size_t errlen);
/* The device line (vkc_device_info_format) and the expert store's layout, for logs. */
int engine_vk_describe(engine_t *e, char *buf, size_t size);
/* Validation-layer messages seen so far (tests run with validation on). */
uint64_t engine_vk_validation_messages(engine_t *e, char *last, size_t size);

/* The CPU reference backend: loads every weight of m as float32 (small models only). */
int engine_ref_new(const model_t *m, const char *path, uint32_t n_ctx, uint32_t n_seq_max,
                   engine_t **ret, char *err, size_t errlen);
