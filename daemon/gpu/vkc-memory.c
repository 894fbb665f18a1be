/* vkc-memory.c: device memory in large blocks, buffers as ranges of a block.
 *
 * Each kind (device-local, host staging) has a list of blocks; a block is one VkDeviceMemory
 * with one VkBuffer over all of it, persistently mapped when host-visible, with its device
 * address when the device has buffer device address. A buffer is (block, offset, size); a
 * kernel binds the block's VkBuffer at the buffer's offset. Requests larger than the default
 * block get a block of their own (dedicated); imported host memory is always dedicated.
 * Invariants: a block never exceeds maxMemoryAllocationSize; the bytes of all blocks on a
 * heap never exceed that heap's budget (VK_EXT_memory_budget, else its size) nor, for
 * device-local memory, vkc_options_t.device_limit; a failed allocation returns -ENOMEM and
 * leaves everything as it was. Empty blocks are released at once, so freed memory goes back
 * to the budget. Called from the engine thread (weights, KV cache, expert slots). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "gpu/vkc-internal.h"

#define VKC_BLOCK_SIZE (256ull << 20)

static uint64_t align_up(uint64_t v, uint64_t a)
{
    return (v + a - 1) / a * a;
}

static uint64_t buffer_alignment(const vkc_ctx_t *ctx)
{
    uint64_t a = ctx->info.storage_offset_alignment;
    return a > 64 ? a : 64;
}

/* Memory type index with all of `need`, best score for `want` bits, or -1. */
static int pick_type(const vkc_ctx_t *ctx, uint32_t allowed, VkMemoryPropertyFlags need,
                     VkMemoryPropertyFlags want, VkMemoryPropertyFlags avoid)
{
    int best = -1, best_score = -1;
    for (uint32_t i = 0; i < ctx->mem_props.memoryTypeCount; i++) {
        VkMemoryPropertyFlags f = ctx->mem_props.memoryTypes[i].propertyFlags;
        if (!(allowed & (1u << i)) || (f & need) != need)
            continue;
        int score = __builtin_popcount(f & want) * 2 + !(f & avoid);
        if (score > best_score)
            best = (int)i, best_score = score;
    }
    return best;
}

static void update_heaps(vkc_ctx_t *ctx)
{
    VkPhysicalDeviceMemoryBudgetPropertiesEXT b = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_BUDGET_PROPERTIES_EXT};
    VkPhysicalDeviceMemoryProperties2 p2 = {
        .sType = VK_STRUCTURE_TYPE_PHYSICAL_DEVICE_MEMORY_PROPERTIES_2,
        .pNext = ctx->info.memory_budget ? &b : NULL};
    vkGetPhysicalDeviceMemoryProperties2(ctx->phys, &p2);
    ctx->mem_props = p2.memoryProperties;
    vkc_device_info_t *in = &ctx->info;
    in->n_heaps = ctx->mem_props.memoryHeapCount > 16 ? 16 : ctx->mem_props.memoryHeapCount;
    for (uint32_t i = 0; i < in->n_heaps; i++) {
        const VkMemoryHeap *h = &ctx->mem_props.memoryHeaps[i];
        in->heaps[i].size = h->size;
        in->heaps[i].device_local = h->flags & VK_MEMORY_HEAP_DEVICE_LOCAL_BIT;
        /* heapBudget counts other processes too and includes what we hold already; some
         * drivers report 0 or nonsense: then trust the heap size */
        uint64_t budget = b.heapBudget[i];
        in->heaps[i].budget =
            ctx->info.memory_budget && budget > 0 && budget <= h->size ? budget : h->size;
    }
}

int vkc_memory_init(vkc_ctx_t *ctx)
{
    update_heaps(ctx);
    const VkMemoryPropertyFlags vis =
        VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT | VK_MEMORY_PROPERTY_HOST_COHERENT_BIT;
    ctx->mem_type[VKC_MEM_DEVICE] =
        pick_type(ctx, ~0u, VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT, vis, 0);
    ctx->mem_type[VKC_MEM_HOST] = pick_type(ctx, ~0u, vis, VK_MEMORY_PROPERTY_HOST_CACHED_BIT,
                                            VK_MEMORY_PROPERTY_DEVICE_LOCAL_BIT);
    ctx->mem_type[VKC_MEM_IMPORTED] = -1; /* per import */
    if (ctx->mem_type[VKC_MEM_DEVICE] < 0)
        ctx->mem_type[VKC_MEM_DEVICE] = ctx->mem_type[VKC_MEM_HOST];
    if (ctx->mem_type[VKC_MEM_DEVICE] < 0 || ctx->mem_type[VKC_MEM_HOST] < 0)
        return -ENOTSUP;
    VkMemoryPropertyFlags df =
        ctx->mem_props.memoryTypes[ctx->mem_type[VKC_MEM_DEVICE]].propertyFlags;
    ctx->info.unified_memory = (df & vis) == vis;
    uint64_t bs = VKC_BLOCK_SIZE;
    if (bs > ctx->info.max_allocation)
        bs = ctx->info.max_allocation;
    ctx->block_size = bs;
    return 0;
}

static uint64_t heap_budget(vkc_ctx_t *ctx, uint32_t heap)
{
    if (ctx->info.memory_budget)
        update_heaps(ctx);
    return ctx->info.heaps[heap < 16 ? heap : 15].budget;
}

static void block_free(vkc_ctx_t *ctx, vkc_block_t *b)
{
    if (!b)
        return;
    if (b->buffer)
        vkDestroyBuffer(ctx->device, b->buffer, NULL);
    if (b->mem) {
        if (b->map && !b->dedicated_import)
            vkUnmapMemory(ctx->device, b->mem);
        vkFreeMemory(ctx->device, b->mem, NULL);
        ctx->heap_used[b->heap] -= b->size;
    }
    free(b->free);
    free(b);
}

/* A block of `size` bytes of memory type `type`; host_ptr non-NULL imports those pages. */
static int block_new(vkc_ctx_t *ctx, int type, uint64_t size, void *host_ptr, vkc_block_t **ret)
{
    uint32_t heap = ctx->mem_props.memoryTypes[type].heapIndex;
    if (size > ctx->info.max_allocation)
        return -ENOMEM;
    if (!host_ptr) {
        if (ctx->heap_used[heap] + size > heap_budget(ctx, heap))
            return -ENOMEM;
        if (type == ctx->mem_type[VKC_MEM_DEVICE] && ctx->device_limit &&
            ctx->heap_used[heap] + size > ctx->device_limit)
            return -ENOMEM;
    }
    vkc_block_t *b = calloc(1, sizeof(*b));
    if (!b)
        return -ENOMEM;
    b->size = size;
    b->heap = heap;
    bool bda = ctx->info.buffer_device_address;
    VkExternalMemoryBufferCreateInfo ext = {
        .sType = VK_STRUCTURE_TYPE_EXTERNAL_MEMORY_BUFFER_CREATE_INFO,
        .handleTypes = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT};
    VkBufferCreateInfo bci = {
        .sType = VK_STRUCTURE_TYPE_BUFFER_CREATE_INFO,
        .pNext = host_ptr ? &ext : NULL,
        .size = size,
        .usage = VK_BUFFER_USAGE_STORAGE_BUFFER_BIT | VK_BUFFER_USAGE_TRANSFER_SRC_BIT |
                 VK_BUFFER_USAGE_TRANSFER_DST_BIT |
                 (bda ? VK_BUFFER_USAGE_SHADER_DEVICE_ADDRESS_BIT : 0),
        .sharingMode = VK_SHARING_MODE_EXCLUSIVE,
    };
    int r = vkc_errno(vkCreateBuffer(ctx->device, &bci, NULL, &b->buffer));
    if (r < 0)
        goto fail;
    VkMemoryRequirements req;
    vkGetBufferMemoryRequirements(ctx->device, b->buffer, &req);
    if (!(req.memoryTypeBits & (1u << type)) || (host_ptr && req.size > size)) {
        r = -ENOTSUP;
        goto fail;
    }
    VkImportMemoryHostPointerInfoEXT imp = {
        .sType = VK_STRUCTURE_TYPE_IMPORT_MEMORY_HOST_POINTER_INFO_EXT,
        .handleType = VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT,
        .pHostPointer = host_ptr};
    VkMemoryAllocateFlagsInfo flags = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_FLAGS_INFO,
                                       .pNext = host_ptr ? &imp : NULL,
                                       .flags = VK_MEMORY_ALLOCATE_DEVICE_ADDRESS_BIT};
    VkMemoryAllocateInfo mai = {.sType = VK_STRUCTURE_TYPE_MEMORY_ALLOCATE_INFO,
                                .pNext = bda ? (void *)&flags : (host_ptr ? (void *)&imp : NULL),
                                .allocationSize = host_ptr ? size : req.size,
                                .memoryTypeIndex = (uint32_t)type};
    r = vkc_errno(vkAllocateMemory(ctx->device, &mai, NULL, &b->mem));
    if (r < 0) {
        b->mem = VK_NULL_HANDLE;
        goto fail;
    }
    ctx->heap_used[heap] += size;
    r = vkc_errno(vkBindBufferMemory(ctx->device, b->buffer, b->mem, 0));
    if (r < 0)
        goto fail;
    if (host_ptr) {
        b->map = host_ptr;
        b->dedicated_import = true;
    } else if (ctx->mem_props.memoryTypes[type].propertyFlags &
               VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT) {
        r = vkc_errno(vkMapMemory(ctx->device, b->mem, 0, VK_WHOLE_SIZE, 0, &b->map));
        if (r < 0) {
            b->map = NULL;
            goto fail;
        }
    }
    if (bda) {
        VkBufferDeviceAddressInfo ai = {.sType = VK_STRUCTURE_TYPE_BUFFER_DEVICE_ADDRESS_INFO,
                                        .buffer = b->buffer};
        b->address = vkGetBufferDeviceAddress(ctx->device, &ai);
    }
    b->free = malloc(sizeof(*b->free) * 4);
    if (!b->free) {
        r = -ENOMEM;
        goto fail;
    }
    b->cap_free = 4;
    b->free[0] = (vkc_range_t){0, size};
    b->n_free = 1;
    *ret = b;
    return 0;
fail:
    block_free(ctx, b);
    return r;
}

/* First fit; sizes are multiples of the alignment, so every range start stays aligned. */
static bool block_take(vkc_block_t *b, uint64_t size, uint64_t *ret_off)
{
    for (size_t i = 0; i < b->n_free; i++) {
        if (b->free[i].size < size)
            continue;
        *ret_off = b->free[i].off;
        b->free[i].off += size;
        b->free[i].size -= size;
        if (b->free[i].size == 0) {
            memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof(*b->free));
            b->n_free--;
        }
        b->n_used++;
        return true;
    }
    return false;
}

/* Return [off, off + size) to the block, merging with its neighbours. -ENOMEM only when the
 * free list cannot grow (the range is then lost until the block is freed, never reused). */
static int block_give(vkc_block_t *b, uint64_t off, uint64_t size)
{
    size_t i = 0;
    while (i < b->n_free && b->free[i].off < off)
        i++;
    b->n_used--;
    bool left = i > 0 && b->free[i - 1].off + b->free[i - 1].size == off;
    bool right = i < b->n_free && off + size == b->free[i].off;
    if (left && right) {
        b->free[i - 1].size += size + b->free[i].size;
        memmove(&b->free[i], &b->free[i + 1], (b->n_free - i - 1) * sizeof(*b->free));
        b->n_free--;
    } else if (left) {
        b->free[i - 1].size += size;
    } else if (right) {
        b->free[i].off = off;
        b->free[i].size += size;
    } else {
        if (b->n_free == b->cap_free) {
            vkc_range_t *n = realloc(b->free, sizeof(*n) * b->cap_free * 2);
            if (!n)
                return -ENOMEM;
            b->free = n;
            b->cap_free *= 2;
        }
        memmove(&b->free[i + 1], &b->free[i], (b->n_free - i) * sizeof(*b->free));
        b->free[i] = (vkc_range_t){off, size};
        b->n_free++;
    }
    return 0;
}

int vkc_buffer_new(vkc_ctx_t *ctx, enum vkc_mem_kind kind, uint64_t size, vkc_buffer_t **ret)
{
    if ((kind != VKC_MEM_DEVICE && kind != VKC_MEM_HOST) || size == 0)
        return -EINVAL;
    /* 16 bytes of slack: kernels read whole words past a 2-aligned block end (dequant.glsl) */
    uint64_t alloc = align_up(size + 16, buffer_alignment(ctx));
    if (alloc < size)
        return -ENOMEM;
    vkc_buffer_t *buf = calloc(1, sizeof(*buf));
    if (!buf)
        return -ENOMEM;
    vkc_block_t *b;
    for (b = ctx->blocks[kind]; b; b = b->next)
        if (!b->dedicated && block_take(b, alloc, &buf->off))
            break;
    if (!b) {
        bool dedicated = alloc > ctx->block_size / 2;
        int r = block_new(ctx, ctx->mem_type[kind], dedicated ? alloc : ctx->block_size, NULL, &b);
        if (r == -ENOMEM && !dedicated && alloc < ctx->block_size) {
            /* near the budget: a block just big enough may still fit */
            dedicated = true;
            r = block_new(ctx, ctx->mem_type[kind], alloc, NULL, &b);
        }
        if (r < 0) {
            free(buf);
            return r;
        }
        b->dedicated = dedicated;
        block_take(b, alloc, &buf->off);
        b->next = ctx->blocks[kind];
        ctx->blocks[kind] = b;
    }
    buf->ctx = ctx;
    buf->block = b;
    buf->kind = kind;
    buf->size = size;
    buf->alloc_size = alloc;
    *ret = buf;
    return 0;
}

int vkc_buffer_import(vkc_ctx_t *ctx, void *ptr, uint64_t size, vkc_buffer_t **ret)
{
    if (!ctx->info.host_import || !ctx->host_pointer_props)
        return -ENOTSUP;
    uint64_t a = ctx->info.import_alignment;
    if (!ptr || size == 0 || (uintptr_t)ptr % a || size % a)
        return -EINVAL;
    VkMemoryHostPointerPropertiesEXT hp = {
        .sType = VK_STRUCTURE_TYPE_MEMORY_HOST_POINTER_PROPERTIES_EXT};
    int r = vkc_errno(ctx->host_pointer_props(
        ctx->device, VK_EXTERNAL_MEMORY_HANDLE_TYPE_HOST_ALLOCATION_BIT_EXT, ptr, &hp));
    if (r < 0)
        return r;
    int type = pick_type(ctx, hp.memoryTypeBits, VK_MEMORY_PROPERTY_HOST_VISIBLE_BIT,
                         VK_MEMORY_PROPERTY_HOST_COHERENT_BIT, 0);
    if (type < 0)
        return -ENOTSUP;
    vkc_buffer_t *buf = calloc(1, sizeof(*buf));
    if (!buf)
        return -ENOMEM;
    vkc_block_t *b;
    r = block_new(ctx, type, size, ptr, &b);
    if (r < 0) {
        free(buf);
        return r;
    }
    b->dedicated = true;
    block_take(b, size, &buf->off);
    b->next = ctx->blocks[VKC_MEM_IMPORTED];
    ctx->blocks[VKC_MEM_IMPORTED] = b;
    *buf = (vkc_buffer_t){.ctx = ctx,
                          .block = b,
                          .kind = VKC_MEM_IMPORTED,
                          .off = 0,
                          .size = size,
                          .alloc_size = size};
    *ret = buf;
    return 0;
}

vkc_buffer_t *vkc_buffer_free(vkc_buffer_t *buf)
{
    if (!buf)
        return NULL;
    vkc_ctx_t *ctx = buf->ctx;
    vkc_block_t *b = buf->block;
    block_give(b, buf->off, buf->alloc_size);
    if (b->n_used == 0) {
        /* an empty block goes back to the driver, and its bytes to the budget */
        vkc_block_t **p = &ctx->blocks[buf->kind];
        while (*p != b)
            p = &(*p)->next;
        *p = b->next;
        block_free(ctx, b);
    }
    free(buf);
    return NULL;
}

void vkc_memory_fini(vkc_ctx_t *ctx)
{
    /* buffers should all be freed; release whatever blocks remain regardless */
    for (int k = 0; k < VKC_MAX_KINDS; k++) {
        for (vkc_block_t *b = ctx->blocks[k], *next; b; b = next) {
            next = b->next;
            block_free(ctx, b);
        }
        ctx->blocks[k] = NULL;
    }
}

uint64_t vkc_ctx_device_bytes(const vkc_ctx_t *ctx)
{
    uint64_t n = 0;
    for (vkc_block_t *b = ctx->blocks[VKC_MEM_DEVICE]; b; b = b->next)
        n += b->size;
    return n;
}

uint64_t vkc_buffer_size(const vkc_buffer_t *buf)
{
    return buf->size;
}

enum vkc_mem_kind vkc_buffer_kind(const vkc_buffer_t *buf)
{
    return buf->kind;
}

void *vkc_buffer_map(const vkc_buffer_t *buf)
{
    return buf->block->map ? (char *)buf->block->map + buf->off : NULL;
}

uint64_t vkc_buffer_address(const vkc_buffer_t *buf)
{
    return buf->block->address ? buf->block->address + buf->off : 0;
}

VkBuffer vkc_buffer_vk(const vkc_buffer_t *buf, uint64_t *ret_offset)
{
    *ret_offset = buf->off;
    return buf->block->buffer;
}

/* Copy n bytes between a buffer and a temporary staging buffer on the queue, and wait. */
static int staged_copy(vkc_ctx_t *ctx, const vkc_buffer_t *buf, uint64_t off, vkc_buffer_t *stage,
                       bool to_buf)
{
    vkc_cmd_t *cmd;
    int r = vkc_cmd_new(ctx, &cmd);
    if (r < 0)
        return r;
    r = vkc_cmd_begin(cmd);
    if (r == 0)
        r = to_buf ? vkc_cmd_copy_buffer(cmd, stage, 0, (vkc_buffer_t *)buf, off, stage->size)
                   : vkc_cmd_copy_buffer(cmd, buf, off, stage, 0, stage->size);
    if (r == 0)
        r = vkc_cmd_submit_wait(cmd);
    vkc_cmd_free(cmd);
    return r;
}

int vkc_buffer_write(vkc_ctx_t *ctx, vkc_buffer_t *buf, uint64_t off, const void *src, size_t n)
{
    if (off > buf->size || n > buf->size - off)
        return -EINVAL;
    if (n == 0)
        return 0;
    void *map = vkc_buffer_map(buf);
    if (map) {
        memcpy((char *)map + off, src, n);
        return 0;
    }
    vkc_buffer_t *stage;
    int r = vkc_buffer_new(ctx, VKC_MEM_HOST, n, &stage);
    if (r < 0)
        return r;
    memcpy(vkc_buffer_map(stage), src, n);
    r = staged_copy(ctx, buf, off, stage, true);
    vkc_buffer_free(stage);
    return r;
}

int vkc_buffer_read(vkc_ctx_t *ctx, const vkc_buffer_t *buf, uint64_t off, void *dst, size_t n)
{
    if (off > buf->size || n > buf->size - off)
        return -EINVAL;
    if (n == 0)
        return 0;
    void *map = vkc_buffer_map(buf);
    if (map) {
        memcpy(dst, (char *)map + off, n);
        return 0;
    }
    vkc_buffer_t *stage;
    int r = vkc_buffer_new(ctx, VKC_MEM_HOST, n, &stage);
    if (r < 0)
        return r;
    r = staged_copy(ctx, buf, off, stage, false);
    if (r == 0)
        memcpy(dst, vkc_buffer_map(stage), n);
    vkc_buffer_free(stage);
    return r;
}

int vkc_cmd_copy_buffer(vkc_cmd_t *cmd, const vkc_buffer_t *src, uint64_t src_off,
                        vkc_buffer_t *dst, uint64_t dst_off, uint64_t n)
{
    if (src_off > src->size || n > src->size - src_off || dst_off > dst->size ||
        n > dst->size - dst_off)
        return vkc_cmd_fail(cmd, -EINVAL);
    uint64_t so, d_o;
    VkBuffer s = vkc_buffer_vk(src, &so), d = vkc_buffer_vk(dst, &d_o);
    VkBufferCopy region = {.srcOffset = so + src_off, .dstOffset = d_o + dst_off, .size = n};
    vkCmdCopyBuffer(cmd->cb, s, d, 1, &region);
    return 0;
}
