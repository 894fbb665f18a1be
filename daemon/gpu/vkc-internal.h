/* Private state shared by the vkc-*.c files: the context, memory blocks, buffers, command
 * buffers and pipelines. Nothing outside daemon/gpu/ includes this. */
#pragma once
#include <vulkan/vulkan.h>

#include "gpu/vkc.h"

#define VKC_MAX_KINDS     3
#define VKC_MAX_PIPELINES 256
#define VKC_MAX_SPEC      8
#define VKC_MAX_BINDINGS  8

/* A free range of a block. */
typedef struct vkc_range {
    uint64_t off, size;
} vkc_range_t;

/* One VkDeviceMemory and one VkBuffer over all of it; buffers are ranges of it. */
typedef struct vkc_block {
    struct vkc_block *next;
    VkDeviceMemory mem;
    VkBuffer buffer;
    uint64_t size;
    uint32_t heap;
    void *map;         /* persistently mapped, or NULL */
    uint64_t address;  /* device address of byte 0, or 0 */
    vkc_range_t *free; /* sorted by offset, coalesced */
    size_t n_free, cap_free;
    size_t n_used;         /* live buffers */
    bool dedicated;        /* holds one buffer only (imported, oversized) */
    bool dedicated_import; /* memory is the caller's host pages: never unmapped */
} vkc_block_t;

struct vkc_buffer {
    vkc_ctx_t *ctx;
    vkc_block_t *block;
    enum vkc_mem_kind kind;
    uint64_t off;        /* in the block */
    uint64_t size;       /* usable bytes */
    uint64_t alloc_size; /* bytes taken from the block */
};

typedef struct vkc_pipeline {
    const char *module;
    uint32_t spec[VKC_MAX_SPEC];
    uint32_t n_spec, n_bindings, pc_size;
    VkDescriptorSetLayout dsl;
    VkPipelineLayout layout;
    VkPipeline pipeline;
} vkc_pipeline_t;

struct vkc_ctx {
    VkInstance instance;
    VkDebugUtilsMessengerEXT messenger;
    PFN_vkDestroyDebugUtilsMessengerEXT destroy_messenger;
    PFN_vkCmdInsertDebugUtilsLabelEXT cmd_label;
    VkPhysicalDevice phys;
    VkDevice device;
    VkQueue queue, transfer_queue;
    uint32_t queue_family, transfer_family;
    VkCommandPool pool;
    VkSemaphore timeline;
    uint64_t timeline_value; /* last value a submission will signal */
    VkPipelineCache pipeline_cache;
    char *cache_path; /* NULL: not persisted */
    bool lost;

    vkc_device_info_t info;
    VkPhysicalDeviceMemoryProperties mem_props;
    PFN_vkGetMemoryHostPointerPropertiesEXT host_pointer_props;
    uint64_t device_limit; /* bytes of device-local blocks allowed */
    uint64_t heap_used[VK_MAX_MEMORY_HEAPS];
    uint64_t block_size;         /* default block size */
    int mem_type[VKC_MAX_KINDS]; /* memory type index per kind, -1 if none */
    vkc_block_t *blocks[VKC_MAX_KINDS];

    vkc_pipeline_t pipelines[VKC_MAX_PIPELINES];
    size_t n_pipelines;

    vkc_matvec_tuning_t mv; /* zero until the first matvec picks defaults */

    /* MOE_VK_PROFILE=1 (vkc-profile.c): device time per pipeline */
    bool profile;
    double prof_period_ns;
    uint64_t prof_submits;
    struct {
        uint64_t ns, calls;
    } prof[VKC_MAX_PIPELINES];

    uint64_t n_messages;
    char last_message[512];
};

typedef struct vkc_dpool {
    struct vkc_dpool *next;
    VkDescriptorPool pool;
} vkc_dpool_t;

struct vkc_cmd {
    vkc_ctx_t *ctx;
    VkCommandBuffer cb;
    vkc_dpool_t *dpools; /* head is the one in use */
    uint64_t point;      /* timeline value of the last submission, 0 if none */
    bool recording;
    int error; /* first recording error, returned by submit */
    VkQueryPool q_pool; /* MOE_VK_PROFILE only: a timestamp after each dispatch */
    uint16_t *q_label;  /* pipeline index of each timestamp */
    uint32_t n_q;
};

/* A binding of a dispatch: bytes [off, off + need) of buf must be reachable. */
typedef struct vkc_bind {
    const vkc_buffer_t *buf;
    uint64_t off, need;
} vkc_bind_t;

/* VkResult -> -errno, the one place where this translation happens. */
int vkc_errno(VkResult r);
/* Copy a formatted reason into err (vkc-context.c). */
void vkc_set_error(char *err, size_t size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* vkc-profile.c */
void vkc_profile_init(vkc_ctx_t *ctx);
int vkc_profile_cmd_new(vkc_cmd_t *cmd);
void vkc_profile_cmd_free(vkc_cmd_t *cmd);
void vkc_profile_begin(vkc_cmd_t *cmd);
void vkc_profile_dispatch(vkc_cmd_t *cmd, const vkc_pipeline_t *p);
void vkc_profile_collect(vkc_cmd_t *cmd);
void vkc_profile_report(vkc_ctx_t *ctx);

/* vkc-memory.c */
int vkc_memory_init(vkc_ctx_t *ctx);
void vkc_memory_fini(vkc_ctx_t *ctx);
VkBuffer vkc_buffer_vk(const vkc_buffer_t *buf, uint64_t *ret_offset);

/* vkc-pipeline.c */
int vkc_pipeline_get(vkc_ctx_t *ctx, const char *module, const uint32_t *spec, uint32_t n_spec,
                     uint32_t n_bindings, uint32_t pc_size, vkc_pipeline_t **ret);
void vkc_pipelines_fini(vkc_ctx_t *ctx);
/* Record a dispatch of p with the given bindings and push constants; groups are the
 * workgroup counts (x may exceed maxComputeWorkGroupCount[0]: it is folded into y, shaders
 * use wg_linear()). Sets cmd->error on failure. */
int vkc_cmd_dispatch(vkc_cmd_t *cmd, vkc_pipeline_t *p, const vkc_bind_t *binds, uint32_t n_binds,
                     const void *pc, uint32_t gx, uint32_t gz);
int vkc_cmd_fail(vkc_cmd_t *cmd, int r);

/* Byte distance from the aligned offset a binding is made at to `off` within buf (buffers
 * start at multiples of the storage offset alignment, so this depends on off only). */
static inline uint64_t vkc_bind_skew(const vkc_ctx_t *ctx, uint64_t off)
{
    uint64_t a = ctx->info.storage_offset_alignment ? ctx->info.storage_offset_alignment : 1;
    return off % a;
}
