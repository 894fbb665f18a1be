/* Vulkan compute (vkc): one device, its memory, the embedded SPIR-V kernels and the calls
 * that record them. The engine (one thread) owns a vkc_ctx_t and records vkc_cmd_* calls
 * into command buffers it reuses; tests and `moe bench kernels` use the same calls.
 *
 * Conventions: functions that can fail return 0 or -errno (-ENOMEM: out of host or device
 * memory or over the budget, the caller may evict and retry; -EIO: device lost; -ENODEV: no
 * usable device; -E2BIG: an operand exceeds a device limit; -EINVAL: bad arguments).
 * Nothing here logs: vkc_ctx_new() fills an error string and vkc_device_info_format() a line
 * describing the chosen device, for the caller to log. Not thread-safe: one thread per
 * context. */
#pragma once
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct vkc_ctx vkc_ctx_t;
typedef struct vkc_cmd vkc_cmd_t;
typedef struct vkc_buffer vkc_buffer_t;

/* ---- context ---------------------------------------------------------------------------- */

typedef struct vkc_options {
    /* NULL or "": first discrete GPU, else integrated, else virtual, else CPU (lavapipe).
     * "N": device index N in enumeration order; 32 hex digits (dashes ignored): the device
     * UUID; anything else: a case-insensitive substring of the device name. */
    const char *device;
    /* Directory for the pipeline cache file; NULL or "": no persistence. */
    const char *cache_dir;
    /* < 0: on when the environment has MOE_VK_VALIDATION=1; 0: off; > 0: on (the validation
     * layer must then be installed). Messages are counted, never printed. */
    int validation;
    /* Device-local bytes this context may allocate; 0: the heap budget. */
    uint64_t device_limit;
} vkc_options_t;

enum vkc_device_type {
    VKC_DEVICE_OTHER = 0,
    VKC_DEVICE_INTEGRATED = 1,
    VKC_DEVICE_DISCRETE = 2,
    VKC_DEVICE_VIRTUAL = 3,
    VKC_DEVICE_CPU = 4,
};

typedef struct vkc_heap_info {
    uint64_t size;   /* bytes */
    uint64_t budget; /* VK_EXT_memory_budget's heapBudget, else size */
    bool device_local;
} vkc_heap_info_t;

/* What was chosen, for the caller to log (vkc_device_info_format) and for kernels to tune. */
typedef struct vkc_device_info {
    char name[256];
    char driver[256]; /* driverName and driverInfo */
    char uuid[33];    /* hex */
    uint32_t index;   /* in enumeration order */
    uint32_t vendor_id, device_id, api_version;
    enum vkc_device_type type;
    uint32_t subgroup_size;
    bool subgroup_arithmetic; /* subgroupAdd etc. in compute shaders */
    uint64_t max_allocation;  /* maxMemoryAllocationSize */
    uint64_t max_storage_range;
    uint64_t storage_offset_alignment;
    uint64_t import_alignment; /* minImportedHostPointerAlignment, 0 without the extension */
    uint32_t max_workgroup_count[3];
    uint32_t max_workgroup_invocations;
    uint32_t max_shared_memory;
    uint32_t n_heaps;
    vkc_heap_info_t heaps[16];
    bool memory_budget; /* VK_EXT_memory_budget enabled */
    bool host_import;   /* VK_EXT_external_memory_host enabled */
    bool buffer_device_address;
    bool unified_memory; /* device-local memory is host-visible (CPU, most iGPUs) */
    bool separate_transfer_queue;
    bool validation;            /* layer active */
    bool pipeline_cache_loaded; /* a cache file was read */
} vkc_device_info_t;

/* Create the instance, choose the device (see vkc_options_t), create the compute queue (and
 * a transfer queue where the device has a separate family), a timeline semaphore and the
 * pipeline cache (loaded from cache_dir). On failure returns -errno and writes a reason into
 * err (err_size bytes, may be 0). -ENODEV when no device matches or none exists. */
int vkc_ctx_new(const vkc_options_t *opt, vkc_ctx_t **ret, char *err, size_t err_size);
/* Waits for the device, saves the pipeline cache, destroys everything. Accepts NULL. Every
 * buffer and cmd of the context must be freed first. */
vkc_ctx_t *vkc_ctx_free(vkc_ctx_t *ctx);
const vkc_device_info_t *vkc_ctx_info(const vkc_ctx_t *ctx);
/* One line: name, type, driver, API, subgroup, heaps, limits, extensions. Returns the length
 * snprintf would have written. */
int vkc_device_info_format(const vkc_device_info_t *info, char *buf, size_t size);
/* Validation messages (warnings and errors) seen since creation; the text of the last one
 * is copied into last (may be NULL). */
uint64_t vkc_ctx_validation_messages(const vkc_ctx_t *ctx, char *last, size_t size);
/* Write the pipeline cache to cache_dir now (also done by vkc_ctx_free). 0 when there is
 * no cache_dir. */
int vkc_ctx_save_pipeline_cache(vkc_ctx_t *ctx);
/* Bytes currently allocated from the device-local heap(s) (blocks, not buffers). */
uint64_t vkc_ctx_device_bytes(const vkc_ctx_t *ctx);

/* ---- memory ----------------------------------------------------------------------------- */

enum vkc_mem_kind {
    VKC_MEM_DEVICE = 0,   /* device-local; mapped too when the device has unified memory */
    VKC_MEM_HOST = 1,     /* host-visible, coherent, mapped: staging and readback */
    VKC_MEM_IMPORTED = 2, /* caller's host pages (VK_EXT_external_memory_host); vkc_buffer_import */
};

/* A buffer of size bytes (plus 16 bytes of slack for block decoders), sub-allocated from a large
 * block of the kind's memory. Blocks respect maxMemoryAllocationSize and the heap budget (or
 * device_limit): -ENOMEM when it does not fit, so the caller can evict and retry. Buffers larger
 * than maxStorageBufferRange can be created but a kernel binding more than that many bytes of one
 * returns -E2BIG. */
int vkc_buffer_new(vkc_ctx_t *ctx, enum vkc_mem_kind kind, uint64_t size, vkc_buffer_t **ret);
/* Wrap host memory the caller owns (ptr and size aligned to info.import_alignment) as a
 * buffer kernels can read and write directly: io_uring reads into it, the GPU reads it. The
 * memory must outlive the buffer. -ENOTSUP without VK_EXT_external_memory_host, -EINVAL on
 * misalignment. */
int vkc_buffer_import(vkc_ctx_t *ctx, void *ptr, uint64_t size, vkc_buffer_t **ret);
/* Return the range to its block (the block's memory when it empties). Accepts NULL. The
 * device must no longer use the buffer. */
vkc_buffer_t *vkc_buffer_free(vkc_buffer_t *buf);
uint64_t vkc_buffer_size(const vkc_buffer_t *buf);
enum vkc_mem_kind vkc_buffer_kind(const vkc_buffer_t *buf);
/* Host pointer of a mapped buffer (host, imported, unified device memory), else NULL. */
void *vkc_buffer_map(const vkc_buffer_t *buf);
/* Buffer device address (for slot tables), 0 when the device lacks the feature. */
uint64_t vkc_buffer_address(const vkc_buffer_t *buf);
/* Copy host bytes into / out of a buffer: memcpy when mapped, else through a temporary
 * staging buffer and a transfer on the compute queue (waits). */
int vkc_buffer_write(vkc_ctx_t *ctx, vkc_buffer_t *buf, uint64_t off, const void *src, size_t n);
int vkc_buffer_read(vkc_ctx_t *ctx, const vkc_buffer_t *buf, uint64_t off, void *dst, size_t n);

/* ---- command buffers -------------------------------------------------------------------- */

/* A reusable command buffer with its own descriptor pools. Record between begin and submit;
 * begin waits for the previous submission of the same cmd. Recording errors (-E2BIG,
 * -ENOMEM, -EINVAL) are returned by the recording call and again by submit. */
int vkc_cmd_new(vkc_ctx_t *ctx, vkc_cmd_t **ret);
vkc_cmd_t *vkc_cmd_free(vkc_cmd_t *cmd);
int vkc_cmd_begin(vkc_cmd_t *cmd);
/* End and submit; the submission signals the context's timeline semaphore at the value
 * stored in *ret_point (may be NULL). */
int vkc_cmd_submit(vkc_cmd_t *cmd, uint64_t *ret_point);
/* Wait for the cmd's last submission (timeout in ns, UINT64_MAX: forever). -ETIME on
 * timeout, -EIO when the device was lost. */
int vkc_cmd_wait(vkc_cmd_t *cmd, uint64_t timeout_ns);
int vkc_cmd_submit_wait(vkc_cmd_t *cmd);
/* A full compute+transfer memory barrier between what was recorded before and after. `why`
 * states the dependency (kept for readers and debuggers; it is attached as a debug label
 * when validation is on). */
void vkc_cmd_barrier(vkc_cmd_t *cmd, const char *why);
/* Transfer copy between buffers. */
int vkc_cmd_copy_buffer(vkc_cmd_t *cmd, const vkc_buffer_t *src, uint64_t src_off,
                        vkc_buffer_t *dst, uint64_t dst_off, uint64_t n);

#include "gpu/vkc-kernels.h"
#include "gpu/vkc-ops2.h"
